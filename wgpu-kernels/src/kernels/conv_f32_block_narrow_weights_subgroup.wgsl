// How conv_f32_block_narrow.wgsl reads one step's weight words where the device has subgroup
// operations of at least 8 lanes: every lane of a workgroup works on the same channel block
// (block_at), so lane l of 0–3 loads word q0 + l and the others take the four by broadcast,
// one read per lane instead of four (see conv_f32_block_weights_subgroup.wgsl). Same values
// as conv_f32_block_narrow_weights.wgsl. Pasted before conv_f32_block_narrow.wgsl.

struct Inputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

// A step's NarrowWeights (conv_f32_block_narrow.wgsl): word q0 + I of row r, clamped to `last`.
fn narrow_weights(r: u32, q0: u32, last: u32, inp: Inputs) -> NarrowWeights {
    let a = w[r + min(q0 + (inp.lane & 3u), last)];
    var b: NarrowWeights;
    b.w0 = subgroupBroadcast(a, 0u);
    b.w1 = subgroupBroadcast(a, 1u);
    if TILE_O > 8u {
        b.w2 = subgroupBroadcast(a, 2u);
        b.w3 = subgroupBroadcast(a, 3u);
    }
    return b;
}
