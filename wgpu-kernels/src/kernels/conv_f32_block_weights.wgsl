// How conv_f32_block.wgsl reads one step's weight words: each invocation loads the 16 (or 8)
// it needs. The form for devices without subgroup operations (browsers, apps' own devices
// without the feature); conv_f32_block_weights_subgroup.wgsl is the other, with the same
// values. Pasted before conv_f32_block.wgsl.

struct Inputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
}

fn block_weights(r: u32, out_words: u32, q0: u32, last: u32, inp: Inputs) -> BlockWeights {
    return own_weights(r, out_words, q0, last);
}
