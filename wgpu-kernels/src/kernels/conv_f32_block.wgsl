// Float32 convolution with one group whose input and output channels both come in fours
// (SCRFD's full 1×1 and 3×3 layers): each invocation owns a block of 16 output pixels × 8 or
// 16 output channels (TILE_P 16, TILE_O 8 or 16), or of 8 pixels × 32 channels (TILE_P 8,
// TILE_O 32), in 64 named vec4 accumulators of four output channels per pixel ("slots": for
// 32 channels, slots 8–15 hold pixels 0–7 of output words q0+4…q0+7).
//
// On CPU rasterisers (lavapipe) every load from a storage buffer runs as a loop over the
// SIMD lanes, whether or not the lanes share the address, so the cost of a convolution there
// is its loads more than its multiply-adds. conv_f32_vec4.wgsl loads 4 input words and 8
// weight words for 4 × 8 × 4 multiply-adds; this block loads TILE_P input words (four input
// channels of each pixel) and TILE_O weight words (four output channels at one input channel,
// weights in HWIO) for 1,024 multiply-adds: 16 + 16 loads for 16 × 16, 3× the work per load.
// All lanes of a workgroup share their channel block (block_at, conv_f32_block_common.wgsl)
// and so their weight words: with subgroup operations, lanes 0–7 read them and broadcast them
// (conv_f32_block_weights_subgroup.wgsl), 2 reads per 16 words instead of 16. That leaves the
// input reads as most of the time on llvmpipe, which the 32-channel block halves per
// multiply-add (8 input reads and 4 weight reads per step). The accumulators spill from the
// 16 vector registers, but a spill is one vector load and store, a storage load a loop over
// the lanes. (Staging the weight words in workgroup memory measured slower on lavapipe: a
// workgroup load is a loop over the lanes too, and the barriers switch coroutines. Writing
// the accumulators as a struct updated through a pointer, to give 16 pixels × 32 channels
// 128 of them, made the 16-channel blocks 1.2–1.3× slower.)
//
// Each output sums over taps, then input channels in order, from zero, then adds the bias: the
// order of conv_f32_vec4.wgsl, whose results it reproduces bit for bit.

// A 1×1 convolution at stride 1 without padding: no tap or padding arithmetic.
override POINTWISE: bool = false;

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>; // NHWC, C in words of four

// One pixel's input word (four input channels) against the four weight words of those input
// channels (each four output channels), summed input channel by input channel in order.
fn mac(a: vec4<f32>, xv: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
    var s = a + w0 * xv.x;
    s = s + w1 * xv.y;
    s = s + w2 * xv.z;
    return s + w3 * xv.w;
}

// A step's weight words: wI_K is output word q0 + I at input channel 4j + K (block_weights,
// in conv_f32_block_weights.wgsl or its subgroup form).
struct BlockWeights {
    w0_0: vec4<f32>, w0_1: vec4<f32>, w0_2: vec4<f32>, w0_3: vec4<f32>,
    w1_0: vec4<f32>, w1_1: vec4<f32>, w1_2: vec4<f32>, w1_3: vec4<f32>,
    w2_0: vec4<f32>, w2_1: vec4<f32>, w2_2: vec4<f32>, w2_3: vec4<f32>,
    w3_0: vec4<f32>, w3_1: vec4<f32>, w3_2: vec4<f32>, w3_3: vec4<f32>,
}

// Word `q0 + I` (clamped to `last`) of rows r + K·out_words, K = 0…3: four input channels'
// weights for output words q0…q0+3 (q0…q0+1 when TILE_O is 8; the rest stay zero), each read
// by this invocation.
fn own_weights(r: u32, out_words: u32, q0: u32, last: u32) -> BlockWeights {
    let r1 = r + out_words;
    let r2 = r1 + out_words;
    let r3 = r2 + out_words;
    let q1 = min(q0 + 1u, last);
    var b: BlockWeights;
    b.w0_0 = w[r + q0]; b.w0_1 = w[r1 + q0]; b.w0_2 = w[r2 + q0]; b.w0_3 = w[r3 + q0];
    b.w1_0 = w[r + q1]; b.w1_1 = w[r1 + q1]; b.w1_2 = w[r2 + q1]; b.w1_3 = w[r3 + q1];
    if TILE_O > 8u {
        let q2 = min(q0 + 2u, last);
        let q3 = min(q0 + 3u, last);
        b.w2_0 = w[r + q2]; b.w2_1 = w[r1 + q2]; b.w2_2 = w[r2 + q2]; b.w2_3 = w[r3 + q2];
        b.w3_0 = w[r + q3]; b.w3_1 = w[r1 + q3]; b.w3_2 = w[r2 + q3]; b.w3_3 = w[r3 + q3];
    }

    return b;
}

@compute @workgroup_size(LANES)
fn main(inp: Inputs) {
    let out_pixels = p.out_h * p.out_w;
    let out_words = p.out_c / 4u;
    let block = block_at(inp.wid, inp.nwg, inp.li);
    let p0 = block.p0;
    let q0 = block.q0;
    let n = block.n;
    let in_words = p.in_c / 4u;
    let image = n * p.in_h * p.in_w;
    // Each pixel's first input row and column: one division for the block's first pixel,
    // then steps along the row (a division per lane is a loop over the lanes on CPUs).
    var top: array<i32, 16>;
    var left: array<i32, 16>;
    var row = p0 / p.out_w;
    var col = p0 - row * p.out_w;
    for (var pi = 0u; pi < TILE_P; pi++) {
        // Pixels past the last repeat it.
        let past = p0 + pi >= out_pixels;
        top[pi] = select(i32(row * p.stride_y) - i32(p.pad_top), top[max(pi, 1u) - 1u], past);
        left[pi] = select(i32(col * p.stride_x) - i32(p.pad_left), left[max(pi, 1u) - 1u], past);
        col += 1u;
        if col == p.out_w {
            col = 0u;
            row += 1u;
        }
    }
    let last = out_words - 1u;
    // Named accumulators: aP_Q for pixel P and output word Q (see conv_int.wgsl: software
    // rasterisers keep loop-indexed arrays in memory).
    var a0_0 = vec4<f32>(); var a1_0 = vec4<f32>(); var a2_0 = vec4<f32>(); var a3_0 = vec4<f32>();
    var a4_0 = vec4<f32>(); var a5_0 = vec4<f32>(); var a6_0 = vec4<f32>(); var a7_0 = vec4<f32>();
    var a8_0 = vec4<f32>(); var a9_0 = vec4<f32>(); var a10_0 = vec4<f32>(); var a11_0 = vec4<f32>();
    var a12_0 = vec4<f32>(); var a13_0 = vec4<f32>(); var a14_0 = vec4<f32>(); var a15_0 = vec4<f32>();
    var a0_1 = vec4<f32>(); var a1_1 = vec4<f32>(); var a2_1 = vec4<f32>(); var a3_1 = vec4<f32>();
    var a4_1 = vec4<f32>(); var a5_1 = vec4<f32>(); var a6_1 = vec4<f32>(); var a7_1 = vec4<f32>();
    var a8_1 = vec4<f32>(); var a9_1 = vec4<f32>(); var a10_1 = vec4<f32>(); var a11_1 = vec4<f32>();
    var a12_1 = vec4<f32>(); var a13_1 = vec4<f32>(); var a14_1 = vec4<f32>(); var a15_1 = vec4<f32>();
    var a0_2 = vec4<f32>(); var a1_2 = vec4<f32>(); var a2_2 = vec4<f32>(); var a3_2 = vec4<f32>();
    var a4_2 = vec4<f32>(); var a5_2 = vec4<f32>(); var a6_2 = vec4<f32>(); var a7_2 = vec4<f32>();
    var a8_2 = vec4<f32>(); var a9_2 = vec4<f32>(); var a10_2 = vec4<f32>(); var a11_2 = vec4<f32>();
    var a12_2 = vec4<f32>(); var a13_2 = vec4<f32>(); var a14_2 = vec4<f32>(); var a15_2 = vec4<f32>();
    var a0_3 = vec4<f32>(); var a1_3 = vec4<f32>(); var a2_3 = vec4<f32>(); var a3_3 = vec4<f32>();
    var a4_3 = vec4<f32>(); var a5_3 = vec4<f32>(); var a6_3 = vec4<f32>(); var a7_3 = vec4<f32>();
    var a8_3 = vec4<f32>(); var a9_3 = vec4<f32>(); var a10_3 = vec4<f32>(); var a11_3 = vec4<f32>();
    var a12_3 = vec4<f32>(); var a13_3 = vec4<f32>(); var a14_3 = vec4<f32>(); var a15_3 = vec4<f32>();
    for (var ky = 0u; ky < p.k_h; ky++) {
        for (var kx = 0u; kx < p.k_w; kx++) {
            var base: array<u32, 16>;
            var inside: array<bool, 16>;
            for (var pi = 0u; pi < TILE_P; pi++) {
                if POINTWISE {
                    // 1×1, stride 1, no padding: the output pixel is the input pixel.
                    inside[pi] = true;
                    base[pi] = (image + min(p0 + pi, out_pixels - 1u)) * in_words;
                } else {
                    let iy = top[pi] + i32(ky * p.dil_y);
                    let ix = left[pi] + i32(kx * p.dil_x);
                    inside[pi] = iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
                    base[pi] = select(0u, (image + u32(iy) * p.in_w + u32(ix)) * in_words, inside[pi]);
                }
            }
            // The tap's weights: row (tap · in_c + input channel), words of output channels.
            let tap_row = (ky * p.k_w + kx) * p.in_c;
            for (var j = 0u; j < in_words; j++) {
                let x0 = select(vec4<f32>(), x[base[0] + j], inside[0]);
                let x1 = select(vec4<f32>(), x[base[1] + j], inside[1]);
                let x2 = select(vec4<f32>(), x[base[2] + j], inside[2]);
                let x3 = select(vec4<f32>(), x[base[3] + j], inside[3]);
                let x4 = select(vec4<f32>(), x[base[4] + j], inside[4]);
                let x5 = select(vec4<f32>(), x[base[5] + j], inside[5]);
                let x6 = select(vec4<f32>(), x[base[6] + j], inside[6]);
                let x7 = select(vec4<f32>(), x[base[7] + j], inside[7]);
                let r = (tap_row + 4u * j) * out_words;
                let b = block_weights(r, out_words, q0, last, inp);
                // Slots 8–15: the same words, or q0+4…q0+7 for the 32-channel block.
                var c = b;
                if TILE_O > 16u {
                    c = block_weights(r, out_words, q0 + 4u, last, inp);
                }
                // Pixels 8–15 of a 16-pixel block.
                var x8 = vec4<f32>(); var x9 = vec4<f32>(); var x10 = vec4<f32>(); var x11 = vec4<f32>();
                var x12 = vec4<f32>(); var x13 = vec4<f32>(); var x14 = vec4<f32>(); var x15 = vec4<f32>();
                if TILE_P > 8u {
                    x8 = select(vec4<f32>(), x[base[8] + j], inside[8]);
                    x9 = select(vec4<f32>(), x[base[9] + j], inside[9]);
                    x10 = select(vec4<f32>(), x[base[10] + j], inside[10]);
                    x11 = select(vec4<f32>(), x[base[11] + j], inside[11]);
                    x12 = select(vec4<f32>(), x[base[12] + j], inside[12]);
                    x13 = select(vec4<f32>(), x[base[13] + j], inside[13]);
                    x14 = select(vec4<f32>(), x[base[14] + j], inside[14]);
                    x15 = select(vec4<f32>(), x[base[15] + j], inside[15]);
                } else if TILE_O > 16u {
                    // Slots 8–15 hold pixels 0–7 again, for output words q0+4…q0+7.
                    x8 = x0; x9 = x1; x10 = x2; x11 = x3; x12 = x4; x13 = x5; x14 = x6; x15 = x7;
                }
                {
                    let w0 = b.w0_0;
                    let w1 = b.w0_1;
                    let w2 = b.w0_2;
                    let w3 = b.w0_3;
                    let v0 = c.w0_0;
                    let v1 = c.w0_1;
                    let v2 = c.w0_2;
                    let v3 = c.w0_3;
                    a0_0 = mac(a0_0, x0, w0, w1, w2, w3);
                    a1_0 = mac(a1_0, x1, w0, w1, w2, w3);
                    a2_0 = mac(a2_0, x2, w0, w1, w2, w3);
                    a3_0 = mac(a3_0, x3, w0, w1, w2, w3);
                    a4_0 = mac(a4_0, x4, w0, w1, w2, w3);
                    a5_0 = mac(a5_0, x5, w0, w1, w2, w3);
                    a6_0 = mac(a6_0, x6, w0, w1, w2, w3);
                    a7_0 = mac(a7_0, x7, w0, w1, w2, w3);
                    if TILE_P > 8u || TILE_O > 16u {
                        a8_0 = mac(a8_0, x8, v0, v1, v2, v3);
                        a9_0 = mac(a9_0, x9, v0, v1, v2, v3);
                        a10_0 = mac(a10_0, x10, v0, v1, v2, v3);
                        a11_0 = mac(a11_0, x11, v0, v1, v2, v3);
                        a12_0 = mac(a12_0, x12, v0, v1, v2, v3);
                        a13_0 = mac(a13_0, x13, v0, v1, v2, v3);
                        a14_0 = mac(a14_0, x14, v0, v1, v2, v3);
                        a15_0 = mac(a15_0, x15, v0, v1, v2, v3);
                    }
                }
                {
                    let w0 = b.w1_0;
                    let w1 = b.w1_1;
                    let w2 = b.w1_2;
                    let w3 = b.w1_3;
                    let v0 = c.w1_0;
                    let v1 = c.w1_1;
                    let v2 = c.w1_2;
                    let v3 = c.w1_3;
                    a0_1 = mac(a0_1, x0, w0, w1, w2, w3);
                    a1_1 = mac(a1_1, x1, w0, w1, w2, w3);
                    a2_1 = mac(a2_1, x2, w0, w1, w2, w3);
                    a3_1 = mac(a3_1, x3, w0, w1, w2, w3);
                    a4_1 = mac(a4_1, x4, w0, w1, w2, w3);
                    a5_1 = mac(a5_1, x5, w0, w1, w2, w3);
                    a6_1 = mac(a6_1, x6, w0, w1, w2, w3);
                    a7_1 = mac(a7_1, x7, w0, w1, w2, w3);
                    if TILE_P > 8u || TILE_O > 16u {
                        a8_1 = mac(a8_1, x8, v0, v1, v2, v3);
                        a9_1 = mac(a9_1, x9, v0, v1, v2, v3);
                        a10_1 = mac(a10_1, x10, v0, v1, v2, v3);
                        a11_1 = mac(a11_1, x11, v0, v1, v2, v3);
                        a12_1 = mac(a12_1, x12, v0, v1, v2, v3);
                        a13_1 = mac(a13_1, x13, v0, v1, v2, v3);
                        a14_1 = mac(a14_1, x14, v0, v1, v2, v3);
                        a15_1 = mac(a15_1, x15, v0, v1, v2, v3);
                    }
                }
                if TILE_O > 8u {
                    {
                        let w0 = b.w2_0;
                        let w1 = b.w2_1;
                        let w2 = b.w2_2;
                        let w3 = b.w2_3;
                        let v0 = c.w2_0;
                        let v1 = c.w2_1;
                        let v2 = c.w2_2;
                        let v3 = c.w2_3;
                        a0_2 = mac(a0_2, x0, w0, w1, w2, w3);
                        a1_2 = mac(a1_2, x1, w0, w1, w2, w3);
                        a2_2 = mac(a2_2, x2, w0, w1, w2, w3);
                        a3_2 = mac(a3_2, x3, w0, w1, w2, w3);
                        a4_2 = mac(a4_2, x4, w0, w1, w2, w3);
                        a5_2 = mac(a5_2, x5, w0, w1, w2, w3);
                        a6_2 = mac(a6_2, x6, w0, w1, w2, w3);
                        a7_2 = mac(a7_2, x7, w0, w1, w2, w3);
                        if TILE_P > 8u || TILE_O > 16u {
                            a8_2 = mac(a8_2, x8, v0, v1, v2, v3);
                            a9_2 = mac(a9_2, x9, v0, v1, v2, v3);
                            a10_2 = mac(a10_2, x10, v0, v1, v2, v3);
                            a11_2 = mac(a11_2, x11, v0, v1, v2, v3);
                            a12_2 = mac(a12_2, x12, v0, v1, v2, v3);
                            a13_2 = mac(a13_2, x13, v0, v1, v2, v3);
                            a14_2 = mac(a14_2, x14, v0, v1, v2, v3);
                            a15_2 = mac(a15_2, x15, v0, v1, v2, v3);
                        }
                    }
                    {
                        let w0 = b.w3_0;
                        let w1 = b.w3_1;
                        let w2 = b.w3_2;
                        let w3 = b.w3_3;
                        let v0 = c.w3_0;
                        let v1 = c.w3_1;
                        let v2 = c.w3_2;
                        let v3 = c.w3_3;
                        a0_3 = mac(a0_3, x0, w0, w1, w2, w3);
                        a1_3 = mac(a1_3, x1, w0, w1, w2, w3);
                        a2_3 = mac(a2_3, x2, w0, w1, w2, w3);
                        a3_3 = mac(a3_3, x3, w0, w1, w2, w3);
                        a4_3 = mac(a4_3, x4, w0, w1, w2, w3);
                        a5_3 = mac(a5_3, x5, w0, w1, w2, w3);
                        a6_3 = mac(a6_3, x6, w0, w1, w2, w3);
                        a7_3 = mac(a7_3, x7, w0, w1, w2, w3);
                        if TILE_P > 8u || TILE_O > 16u {
                            a8_3 = mac(a8_3, x8, v0, v1, v2, v3);
                            a9_3 = mac(a9_3, x9, v0, v1, v2, v3);
                            a10_3 = mac(a10_3, x10, v0, v1, v2, v3);
                            a11_3 = mac(a11_3, x11, v0, v1, v2, v3);
                            a12_3 = mac(a12_3, x12, v0, v1, v2, v3);
                            a13_3 = mac(a13_3, x13, v0, v1, v2, v3);
                            a14_3 = mac(a14_3, x14, v0, v1, v2, v3);
                            a15_3 = mac(a15_3, x15, v0, v1, v2, v3);
                        }
                    }
                }
            }
        }
    }
    if !block.live {
        return;
    }
    store_block(
        n, p0, q0, out_pixels, out_words,
        a0_0, a1_0, a2_0, a3_0,
        a4_0, a5_0, a6_0, a7_0,
        a8_0, a9_0, a10_0, a11_0,
        a12_0, a13_0, a14_0, a15_0,
        a0_1, a1_1, a2_1, a3_1,
        a4_1, a5_1, a6_1, a7_1,
        a8_1, a9_1, a10_1, a11_1,
        a12_1, a13_1, a14_1, a15_1,
        a0_2, a1_2, a2_2, a3_2,
        a4_2, a5_2, a6_2, a7_2,
        a8_2, a9_2, a10_2, a11_2,
        a12_2, a13_2, a14_2, a15_2,
        a0_3, a1_3, a2_3, a3_3,
        a4_3, a5_3, a6_3, a7_3,
        a8_3, a9_3, a10_3, a11_3,
        a12_3, a13_3, a14_3, a15_3,
    );
}
