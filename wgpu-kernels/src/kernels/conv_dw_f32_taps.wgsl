// How conv_dw_f32.wgsl reads a channel word's nine weight words: each invocation its own. The
// form for devices without subgroup operations; conv_dw_f32_taps_subgroup.wgsl is the other,
// with the same values. Pasted before conv_dw_f32.wgsl.

struct Inputs {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
}

fn taps(cw: u32, inp: Inputs) -> Taps {
    let r = cw * 9u;
    return Taps(w[r], w[r + 1u], w[r + 2u], w[r + 3u], w[r + 4u], w[r + 5u], w[r + 6u], w[r + 7u], w[r + 8u]);
}
