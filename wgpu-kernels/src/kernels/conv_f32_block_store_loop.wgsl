// How the block kernels store their 64 accumulators where the device has no subgroups
// (browsers, SwiftShader): gathered into an array, stored by loops. Compact code for
// SwiftShader's Subzero, which compiles straight-line stores slowly (see
// conv_f32_block_store_values.wgsl, the form for lavapipe and native GPUs, same results).
// Pasted after conv_f32_block_common.wgsl (`finish`, the bindings).

// Stores an invocation's block, accumulator aP_Q (pixel p0 + P, output word q0 + Q) through
// `finish`, skipping pixels and words past the image's; slot 16 · Q + P of `acc`. The
// 32-channel block (TILE_P 8, conv_f32_block.wgsl) keeps pixels 0–7 of output words
// q0 + 4 + Q in slots 16 · Q + 8 + P: its second half.
fn store_block(
    n: u32, p0: u32, q0: u32, out_pixels: u32, out_words: u32,
    a0_0: vec4<f32>, a1_0: vec4<f32>, a2_0: vec4<f32>, a3_0: vec4<f32>,
    a4_0: vec4<f32>, a5_0: vec4<f32>, a6_0: vec4<f32>, a7_0: vec4<f32>,
    a8_0: vec4<f32>, a9_0: vec4<f32>, a10_0: vec4<f32>, a11_0: vec4<f32>,
    a12_0: vec4<f32>, a13_0: vec4<f32>, a14_0: vec4<f32>, a15_0: vec4<f32>,
    a0_1: vec4<f32>, a1_1: vec4<f32>, a2_1: vec4<f32>, a3_1: vec4<f32>,
    a4_1: vec4<f32>, a5_1: vec4<f32>, a6_1: vec4<f32>, a7_1: vec4<f32>,
    a8_1: vec4<f32>, a9_1: vec4<f32>, a10_1: vec4<f32>, a11_1: vec4<f32>,
    a12_1: vec4<f32>, a13_1: vec4<f32>, a14_1: vec4<f32>, a15_1: vec4<f32>,
    a0_2: vec4<f32>, a1_2: vec4<f32>, a2_2: vec4<f32>, a3_2: vec4<f32>,
    a4_2: vec4<f32>, a5_2: vec4<f32>, a6_2: vec4<f32>, a7_2: vec4<f32>,
    a8_2: vec4<f32>, a9_2: vec4<f32>, a10_2: vec4<f32>, a11_2: vec4<f32>,
    a12_2: vec4<f32>, a13_2: vec4<f32>, a14_2: vec4<f32>, a15_2: vec4<f32>,
    a0_3: vec4<f32>, a1_3: vec4<f32>, a2_3: vec4<f32>, a3_3: vec4<f32>,
    a4_3: vec4<f32>, a5_3: vec4<f32>, a6_3: vec4<f32>, a7_3: vec4<f32>,
    a8_3: vec4<f32>, a9_3: vec4<f32>, a10_3: vec4<f32>, a11_3: vec4<f32>,
    a12_3: vec4<f32>, a13_3: vec4<f32>, a14_3: vec4<f32>, a15_3: vec4<f32>,
) {
    var acc = array<vec4<f32>, 64>(
        a0_0, a1_0, a2_0, a3_0, a4_0, a5_0, a6_0, a7_0,
        a8_0, a9_0, a10_0, a11_0, a12_0, a13_0, a14_0, a15_0,
        a0_1, a1_1, a2_1, a3_1, a4_1, a5_1, a6_1, a7_1,
        a8_1, a9_1, a10_1, a11_1, a12_1, a13_1, a14_1, a15_1,
        a0_2, a1_2, a2_2, a3_2, a4_2, a5_2, a6_2, a7_2,
        a8_2, a9_2, a10_2, a11_2, a12_2, a13_2, a14_2, a15_2,
        a0_3, a1_3, a2_3, a3_3, a4_3, a5_3, a6_3, a7_3,
        a8_3, a9_3, a10_3, a11_3, a12_3, a13_3, a14_3, a15_3,
    );
    let halves = select(1u, 2u, TILE_O > 16u);
    for (var half = 0u; half < halves; half++) {
        for (var qi = 0u; qi < min(TILE_O / 4u, 4u); qi++) {
            let q = q0 + 4u * half + qi;
            if q >= out_words {
                break;
            }
            let b = bias[q];
            for (var pi = 0u; pi < TILE_P; pi++) {
                let pp = p0 + pi;
                if pp < out_pixels {
                    y[(n * out_pixels + pp) * out_words + q] = finish(acc[qi * 16u + 8u * half + pi], b, q);
                }
            }
        }
    }
}
