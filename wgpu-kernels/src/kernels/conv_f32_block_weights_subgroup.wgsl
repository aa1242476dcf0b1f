// How conv_f32_block.wgsl reads one step's weight words where the device has subgroup
// operations of at least 8 lanes (native Vulkan, Metal, DX12 with the feature). Every lane of
// a workgroup works on the same channel block (block_at), so the 16 (or 8) words are the same
// for all of them: lanes 0–7 load two words (one) each and the others take them by broadcast.
// On llvmpipe a storage read is a loop over the lanes even when they share the address, and a
// broadcast is a register extract: 2 reads instead of 16. Same values as
// conv_f32_block_weights.wgsl. Pasted before conv_f32_block.wgsl.

struct Inputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

fn block_weights(r: u32, out_words: u32, q0: u32, last: u32, inp: Inputs) -> BlockWeights {
    let l = inp.lane & 7u;
    var b: BlockWeights;
    if TILE_O > 8u {
        // Lane l: output word q0 + l % 4 of rows l / 4 (a) and 2 + l / 4 (b).
        let q = min(q0 + l % 4u, last);
        let a = w[r + (l / 4u) * out_words + q];
        let c = w[r + (2u + l / 4u) * out_words + q];
        b.w0_0 = subgroupBroadcast(a, 0u); b.w1_0 = subgroupBroadcast(a, 1u);
        b.w2_0 = subgroupBroadcast(a, 2u); b.w3_0 = subgroupBroadcast(a, 3u);
        b.w0_1 = subgroupBroadcast(a, 4u); b.w1_1 = subgroupBroadcast(a, 5u);
        b.w2_1 = subgroupBroadcast(a, 6u); b.w3_1 = subgroupBroadcast(a, 7u);
        b.w0_2 = subgroupBroadcast(c, 0u); b.w1_2 = subgroupBroadcast(c, 1u);
        b.w2_2 = subgroupBroadcast(c, 2u); b.w3_2 = subgroupBroadcast(c, 3u);
        b.w0_3 = subgroupBroadcast(c, 4u); b.w1_3 = subgroupBroadcast(c, 5u);
        b.w2_3 = subgroupBroadcast(c, 6u); b.w3_3 = subgroupBroadcast(c, 7u);
    } else {
        // Lane l: output word q0 + l % 2 of row l / 2.
        let a = w[r + (l / 2u) * out_words + min(q0 + l % 2u, last)];
        b.w0_0 = subgroupBroadcast(a, 0u); b.w1_0 = subgroupBroadcast(a, 1u);
        b.w0_1 = subgroupBroadcast(a, 2u); b.w1_1 = subgroupBroadcast(a, 3u);
        b.w0_2 = subgroupBroadcast(a, 4u); b.w1_2 = subgroupBroadcast(a, 5u);
        b.w0_3 = subgroupBroadcast(a, 6u); b.w1_3 = subgroupBroadcast(a, 7u);
    }
    return b;
}
