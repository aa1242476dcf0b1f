// How conv_dw_f32.wgsl reads a channel word's nine weight words where the device has subgroup
// operations of at least 8 lanes: the channel word comes from workgroup_id, so every lane of a
// subgroup needs the same nine; lanes 0–7 read taps 0–7 and broadcast them, and tap 8 is read
// by all (2 reads instead of 9; on llvmpipe a read is a loop over the lanes, a broadcast a
// register extract). Same values as conv_dw_f32_taps.wgsl. Pasted before conv_dw_f32.wgsl.

struct Inputs {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

fn taps(cw: u32, inp: Inputs) -> Taps {
    let r = cw * 9u;
    let a = w[r + (inp.lane & 7u)];
    return Taps(
        subgroupBroadcast(a, 0u), subgroupBroadcast(a, 1u), subgroupBroadcast(a, 2u),
        subgroupBroadcast(a, 3u), subgroupBroadcast(a, 4u), subgroupBroadcast(a, 5u),
        subgroupBroadcast(a, 6u), subgroupBroadcast(a, 7u), w[r + 8u],
    );
}
