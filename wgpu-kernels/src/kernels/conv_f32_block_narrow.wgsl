// Float32 convolution with one group whose input channels do not come in fours (SCRFD's first
// layer: 3 → 16, 3×3 at stride 2) and whose output channels do: conv_f32_block.wgsl's blocks of
// TILE_P output pixels × TILE_O output channels over an input read one channel at a time.
// Per input channel of a tap it loads TILE_P input values and TILE_O / 4 weight words (HWIO)
// for TILE_P × TILE_O multiply-adds: 16 × 16 for 20 loads, where conv_f32.wgsl loads 12 for
// 4 × 8 (on lavapipe a storage load is a loop over the lanes; see conv_f32_block.wgsl); 17
// where subgroups share the weight words (narrow_weights: SCRFD's RGB layer 1.1× faster).
//
// Each output sums over taps, then input channels in order, from zero, then adds the bias: the
// order of conv_f32.wgsl.

@group(0) @binding(2) var<storage, read> x: array<f32>; // NHWC, or NCHW where p.planar

// One step's weight words (narrow_weights, in conv_f32_block_narrow_weights.wgsl or its
// subgroup form): wI is output word q0 + I at one input channel of one tap; words past TILE_O
// stay zero.
struct NarrowWeights {
    w0: vec4<f32>,
    w1: vec4<f32>,
    w2: vec4<f32>,
    w3: vec4<f32>,
}

@compute @workgroup_size(LANES)
fn main(inp: Inputs) {
    let out_pixels = p.out_h * p.out_w;
    let out_words = p.out_c / 4u;
    let block = block_at(inp.wid, inp.nwg, inp.li);
    let p0 = block.p0;
    let q0 = block.q0;
    let n = block.n;
    // NHWC: a pixel's channels side by side; NCHW (the network's input, read as uploaded,
    // which saves a layout pass of 3 ms on SCRFD's 640 × 640 on lavapipe): channel planes.
    let planar = p.planar != 0u;
    let image = n * p.in_h * p.in_w * p.in_c;
    let pixel_stride = select(p.in_c, 1u, planar);
    let channel_stride = select(1u, p.in_h * p.in_w, planar);
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
                let iy = top[pi] + i32(ky * p.dil_y);
                let ix = left[pi] + i32(kx * p.dil_x);
                inside[pi] = iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
                base[pi] = select(0u, image + (u32(iy) * p.in_w + u32(ix)) * pixel_stride, inside[pi]);
            }
            // The tap's weights: row (tap · in_c + input channel), words of output channels.
            let tap_row = (ky * p.k_w + kx) * p.in_c;
            for (var c = 0u; c < p.in_c; c++) {
                let at = c * channel_stride;
                let x0 = select(0.0, x[base[0] + at], inside[0]);
                let x1 = select(0.0, x[base[1] + at], inside[1]);
                let x2 = select(0.0, x[base[2] + at], inside[2]);
                let x3 = select(0.0, x[base[3] + at], inside[3]);
                let x4 = select(0.0, x[base[4] + at], inside[4]);
                let x5 = select(0.0, x[base[5] + at], inside[5]);
                let x6 = select(0.0, x[base[6] + at], inside[6]);
                let x7 = select(0.0, x[base[7] + at], inside[7]);
                var x8 = 0.0; var x9 = 0.0; var x10 = 0.0; var x11 = 0.0;
                var x12 = 0.0; var x13 = 0.0; var x14 = 0.0; var x15 = 0.0;
                if TILE_P > 8u {
                    x8 = select(0.0, x[base[8] + at], inside[8]);
                    x9 = select(0.0, x[base[9] + at], inside[9]);
                    x10 = select(0.0, x[base[10] + at], inside[10]);
                    x11 = select(0.0, x[base[11] + at], inside[11]);
                    x12 = select(0.0, x[base[12] + at], inside[12]);
                    x13 = select(0.0, x[base[13] + at], inside[13]);
                    x14 = select(0.0, x[base[14] + at], inside[14]);
                    x15 = select(0.0, x[base[15] + at], inside[15]);
                }
                let r = (tap_row + c) * out_words;
                let ws = narrow_weights(r, q0, last, inp);
                {
                    let wq = ws.w0;
                    a0_0 += wq * x0;
                    a1_0 += wq * x1;
                    a2_0 += wq * x2;
                    a3_0 += wq * x3;
                    a4_0 += wq * x4;
                    a5_0 += wq * x5;
                    a6_0 += wq * x6;
                    a7_0 += wq * x7;
                    if TILE_P > 8u {
                        a8_0 += wq * x8;
                        a9_0 += wq * x9;
                        a10_0 += wq * x10;
                        a11_0 += wq * x11;
                        a12_0 += wq * x12;
                        a13_0 += wq * x13;
                        a14_0 += wq * x14;
                        a15_0 += wq * x15;
                    }
                }
                {
                    let wq = ws.w1;
                    a0_1 += wq * x0;
                    a1_1 += wq * x1;
                    a2_1 += wq * x2;
                    a3_1 += wq * x3;
                    a4_1 += wq * x4;
                    a5_1 += wq * x5;
                    a6_1 += wq * x6;
                    a7_1 += wq * x7;
                    if TILE_P > 8u {
                        a8_1 += wq * x8;
                        a9_1 += wq * x9;
                        a10_1 += wq * x10;
                        a11_1 += wq * x11;
                        a12_1 += wq * x12;
                        a13_1 += wq * x13;
                        a14_1 += wq * x14;
                        a15_1 += wq * x15;
                    }
                }
                if TILE_O > 8u {
                    {
                        let wq = ws.w2;
                        a0_2 += wq * x0;
                        a1_2 += wq * x1;
                        a2_2 += wq * x2;
                        a3_2 += wq * x3;
                        a4_2 += wq * x4;
                        a5_2 += wq * x5;
                        a6_2 += wq * x6;
                        a7_2 += wq * x7;
                        if TILE_P > 8u {
                            a8_2 += wq * x8;
                            a9_2 += wq * x9;
                            a10_2 += wq * x10;
                            a11_2 += wq * x11;
                            a12_2 += wq * x12;
                            a13_2 += wq * x13;
                            a14_2 += wq * x14;
                            a15_2 += wq * x15;
                        }
                    }
                    {
                        let wq = ws.w3;
                        a0_3 += wq * x0;
                        a1_3 += wq * x1;
                        a2_3 += wq * x2;
                        a3_3 += wq * x3;
                        a4_3 += wq * x4;
                        a5_3 += wq * x5;
                        a6_3 += wq * x6;
                        a7_3 += wq * x7;
                        if TILE_P > 8u {
                            a8_3 += wq * x8;
                            a9_3 += wq * x9;
                            a10_3 += wq * x10;
                            a11_3 += wq * x11;
                            a12_3 += wq * x12;
                            a13_3 += wq * x13;
                            a14_3 += wq * x14;
                            a15_3 += wq * x15;
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
