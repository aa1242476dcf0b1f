// How conv_f32_block_narrow.wgsl reads one step's weight words (output words q0 … q0 + 3 of
// one input channel): each invocation loads the four (two for TILE_O 8) it needs. The form for
// devices without subgroup operations; conv_f32_block_narrow_weights_subgroup.wgsl is the
// other, with the same values. Pasted before conv_f32_block_narrow.wgsl.

struct Inputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
}

// A step's NarrowWeights (conv_f32_block_narrow.wgsl): word q0 + I of row r, clamped to `last`.
fn narrow_weights(r: u32, q0: u32, last: u32, inp: Inputs) -> NarrowWeights {
    var b: NarrowWeights;
    b.w0 = w[r + q0];
    b.w1 = w[r + min(q0 + 1u, last)];
    if TILE_O > 8u {
        b.w2 = w[r + min(q0 + 2u, last)];
        b.w3 = w[r + min(q0 + 3u, last)];
    }
    return b;
}
