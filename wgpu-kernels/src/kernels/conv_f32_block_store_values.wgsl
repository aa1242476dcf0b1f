// How the block kernels store their 64 accumulators where the device has subgroups (lavapipe,
// native GPUs): as straight-line code over the values. On llvmpipe an array indexed at run
// time lives in memory, written lane by lane, so conv_f32_block_store_loop.wgsl's array made
// the 1×1 layers 1.1–1.2× slower (SCRFD's 37 → 33 ms); on SwiftShader's Subzero, which runs
// the plain form in browsers without a GPU, the 64 straight-line stores took the detector's
// compile-and-run from 7 to 11 s, so the plain form keeps the loop. Pasted after
// conv_f32_block_common.wgsl (`finish`, the bindings).

// Stores an invocation's block, accumulator aP_Q (pixel p0 + P, output word q0 + Q) through
// `finish`, skipping pixels and words past the image's. The 32-channel block (TILE_P 8,
// conv_f32_block.wgsl) keeps pixels 0–7 of output words q0 + 4 + Q in aP_Q for P = 8…15.
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
    let last = out_words - 1u;
    let b0 = bias[q0];
    let b1 = bias[min(q0 + 1u, last)];
    var b2 = vec4<f32>();
    var b3 = vec4<f32>();
    if TILE_O > 8u {
        b2 = bias[min(q0 + 2u, last)];
        b3 = bias[min(q0 + 3u, last)];
    }
    put(a0_0, n, p0 + 0u, q0 + 0u, b0, out_pixels, out_words);
    put(a1_0, n, p0 + 1u, q0 + 0u, b0, out_pixels, out_words);
    put(a2_0, n, p0 + 2u, q0 + 0u, b0, out_pixels, out_words);
    put(a3_0, n, p0 + 3u, q0 + 0u, b0, out_pixels, out_words);
    put(a4_0, n, p0 + 4u, q0 + 0u, b0, out_pixels, out_words);
    put(a5_0, n, p0 + 5u, q0 + 0u, b0, out_pixels, out_words);
    put(a6_0, n, p0 + 6u, q0 + 0u, b0, out_pixels, out_words);
    put(a7_0, n, p0 + 7u, q0 + 0u, b0, out_pixels, out_words);
    put(a0_1, n, p0 + 0u, q0 + 1u, b1, out_pixels, out_words);
    put(a1_1, n, p0 + 1u, q0 + 1u, b1, out_pixels, out_words);
    put(a2_1, n, p0 + 2u, q0 + 1u, b1, out_pixels, out_words);
    put(a3_1, n, p0 + 3u, q0 + 1u, b1, out_pixels, out_words);
    put(a4_1, n, p0 + 4u, q0 + 1u, b1, out_pixels, out_words);
    put(a5_1, n, p0 + 5u, q0 + 1u, b1, out_pixels, out_words);
    put(a6_1, n, p0 + 6u, q0 + 1u, b1, out_pixels, out_words);
    put(a7_1, n, p0 + 7u, q0 + 1u, b1, out_pixels, out_words);
    if TILE_O > 8u {
        put(a0_2, n, p0 + 0u, q0 + 2u, b2, out_pixels, out_words);
        put(a1_2, n, p0 + 1u, q0 + 2u, b2, out_pixels, out_words);
        put(a2_2, n, p0 + 2u, q0 + 2u, b2, out_pixels, out_words);
        put(a3_2, n, p0 + 3u, q0 + 2u, b2, out_pixels, out_words);
        put(a4_2, n, p0 + 4u, q0 + 2u, b2, out_pixels, out_words);
        put(a5_2, n, p0 + 5u, q0 + 2u, b2, out_pixels, out_words);
        put(a6_2, n, p0 + 6u, q0 + 2u, b2, out_pixels, out_words);
        put(a7_2, n, p0 + 7u, q0 + 2u, b2, out_pixels, out_words);
        put(a0_3, n, p0 + 0u, q0 + 3u, b3, out_pixels, out_words);
        put(a1_3, n, p0 + 1u, q0 + 3u, b3, out_pixels, out_words);
        put(a2_3, n, p0 + 2u, q0 + 3u, b3, out_pixels, out_words);
        put(a3_3, n, p0 + 3u, q0 + 3u, b3, out_pixels, out_words);
        put(a4_3, n, p0 + 4u, q0 + 3u, b3, out_pixels, out_words);
        put(a5_3, n, p0 + 5u, q0 + 3u, b3, out_pixels, out_words);
        put(a6_3, n, p0 + 6u, q0 + 3u, b3, out_pixels, out_words);
        put(a7_3, n, p0 + 7u, q0 + 3u, b3, out_pixels, out_words);
    }
    if TILE_O > 16u {
        let c0 = bias[min(q0 + 4u, last)];
        let c1 = bias[min(q0 + 5u, last)];
        let c2 = bias[min(q0 + 6u, last)];
        let c3 = bias[min(q0 + 7u, last)];
        put(a8_0, n, p0 + 0u, q0 + 4u, c0, out_pixels, out_words);
        put(a9_0, n, p0 + 1u, q0 + 4u, c0, out_pixels, out_words);
        put(a10_0, n, p0 + 2u, q0 + 4u, c0, out_pixels, out_words);
        put(a11_0, n, p0 + 3u, q0 + 4u, c0, out_pixels, out_words);
        put(a12_0, n, p0 + 4u, q0 + 4u, c0, out_pixels, out_words);
        put(a13_0, n, p0 + 5u, q0 + 4u, c0, out_pixels, out_words);
        put(a14_0, n, p0 + 6u, q0 + 4u, c0, out_pixels, out_words);
        put(a15_0, n, p0 + 7u, q0 + 4u, c0, out_pixels, out_words);
        put(a8_1, n, p0 + 0u, q0 + 5u, c1, out_pixels, out_words);
        put(a9_1, n, p0 + 1u, q0 + 5u, c1, out_pixels, out_words);
        put(a10_1, n, p0 + 2u, q0 + 5u, c1, out_pixels, out_words);
        put(a11_1, n, p0 + 3u, q0 + 5u, c1, out_pixels, out_words);
        put(a12_1, n, p0 + 4u, q0 + 5u, c1, out_pixels, out_words);
        put(a13_1, n, p0 + 5u, q0 + 5u, c1, out_pixels, out_words);
        put(a14_1, n, p0 + 6u, q0 + 5u, c1, out_pixels, out_words);
        put(a15_1, n, p0 + 7u, q0 + 5u, c1, out_pixels, out_words);
        if TILE_O > 8u {
            put(a8_2, n, p0 + 0u, q0 + 6u, c2, out_pixels, out_words);
            put(a9_2, n, p0 + 1u, q0 + 6u, c2, out_pixels, out_words);
            put(a10_2, n, p0 + 2u, q0 + 6u, c2, out_pixels, out_words);
            put(a11_2, n, p0 + 3u, q0 + 6u, c2, out_pixels, out_words);
            put(a12_2, n, p0 + 4u, q0 + 6u, c2, out_pixels, out_words);
            put(a13_2, n, p0 + 5u, q0 + 6u, c2, out_pixels, out_words);
            put(a14_2, n, p0 + 6u, q0 + 6u, c2, out_pixels, out_words);
            put(a15_2, n, p0 + 7u, q0 + 6u, c2, out_pixels, out_words);
            put(a8_3, n, p0 + 0u, q0 + 7u, c3, out_pixels, out_words);
            put(a9_3, n, p0 + 1u, q0 + 7u, c3, out_pixels, out_words);
            put(a10_3, n, p0 + 2u, q0 + 7u, c3, out_pixels, out_words);
            put(a11_3, n, p0 + 3u, q0 + 7u, c3, out_pixels, out_words);
            put(a12_3, n, p0 + 4u, q0 + 7u, c3, out_pixels, out_words);
            put(a13_3, n, p0 + 5u, q0 + 7u, c3, out_pixels, out_words);
            put(a14_3, n, p0 + 6u, q0 + 7u, c3, out_pixels, out_words);
            put(a15_3, n, p0 + 7u, q0 + 7u, c3, out_pixels, out_words);
        }
    } else if TILE_P > 8u {
        put(a8_0, n, p0 + 8u, q0 + 0u, b0, out_pixels, out_words);
        put(a9_0, n, p0 + 9u, q0 + 0u, b0, out_pixels, out_words);
        put(a10_0, n, p0 + 10u, q0 + 0u, b0, out_pixels, out_words);
        put(a11_0, n, p0 + 11u, q0 + 0u, b0, out_pixels, out_words);
        put(a12_0, n, p0 + 12u, q0 + 0u, b0, out_pixels, out_words);
        put(a13_0, n, p0 + 13u, q0 + 0u, b0, out_pixels, out_words);
        put(a14_0, n, p0 + 14u, q0 + 0u, b0, out_pixels, out_words);
        put(a15_0, n, p0 + 15u, q0 + 0u, b0, out_pixels, out_words);
        put(a8_1, n, p0 + 8u, q0 + 1u, b1, out_pixels, out_words);
        put(a9_1, n, p0 + 9u, q0 + 1u, b1, out_pixels, out_words);
        put(a10_1, n, p0 + 10u, q0 + 1u, b1, out_pixels, out_words);
        put(a11_1, n, p0 + 11u, q0 + 1u, b1, out_pixels, out_words);
        put(a12_1, n, p0 + 12u, q0 + 1u, b1, out_pixels, out_words);
        put(a13_1, n, p0 + 13u, q0 + 1u, b1, out_pixels, out_words);
        put(a14_1, n, p0 + 14u, q0 + 1u, b1, out_pixels, out_words);
        put(a15_1, n, p0 + 15u, q0 + 1u, b1, out_pixels, out_words);
        if TILE_O > 8u {
            put(a8_2, n, p0 + 8u, q0 + 2u, b2, out_pixels, out_words);
            put(a9_2, n, p0 + 9u, q0 + 2u, b2, out_pixels, out_words);
            put(a10_2, n, p0 + 10u, q0 + 2u, b2, out_pixels, out_words);
            put(a11_2, n, p0 + 11u, q0 + 2u, b2, out_pixels, out_words);
            put(a12_2, n, p0 + 12u, q0 + 2u, b2, out_pixels, out_words);
            put(a13_2, n, p0 + 13u, q0 + 2u, b2, out_pixels, out_words);
            put(a14_2, n, p0 + 14u, q0 + 2u, b2, out_pixels, out_words);
            put(a15_2, n, p0 + 15u, q0 + 2u, b2, out_pixels, out_words);
            put(a8_3, n, p0 + 8u, q0 + 3u, b3, out_pixels, out_words);
            put(a9_3, n, p0 + 9u, q0 + 3u, b3, out_pixels, out_words);
            put(a10_3, n, p0 + 10u, q0 + 3u, b3, out_pixels, out_words);
            put(a11_3, n, p0 + 11u, q0 + 3u, b3, out_pixels, out_words);
            put(a12_3, n, p0 + 12u, q0 + 3u, b3, out_pixels, out_words);
            put(a13_3, n, p0 + 13u, q0 + 3u, b3, out_pixels, out_words);
            put(a14_3, n, p0 + 14u, q0 + 3u, b3, out_pixels, out_words);
            put(a15_3, n, p0 + 15u, q0 + 3u, b3, out_pixels, out_words);
        }
    }
}

// One accumulator's word: pixel pp, output word q, bias b; skipped past the image.
fn put(v: vec4<f32>, n: u32, pp: u32, q: u32, b: vec4<f32>, out_pixels: u32, out_words: u32) {
    if pp < out_pixels && q < out_words {
        y[(n * out_pixels + pp) * out_words + q] = finish(v, b, q);
    }
}
