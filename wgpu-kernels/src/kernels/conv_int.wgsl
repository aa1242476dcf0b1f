// Integer convolution as an implicit GEMM over packed 4×i8 activations (NHWC, channels packed
// per group, see quantize.wgsl) and packed W_BITS weights (packed_weights.wgsl), followed by the
// float epilogue of docs/quantization.md: y = f32(acc)·m[o] + bias[o], then PReLU if fused.
//
// Each invocation owns a register tile of TILE_O output channels × TILE_P output pixels, so one
// weight word serves TILE_P pixels and one activation word serves TILE_O channels. The channel
// tile comes from workgroup_id, so it is uniform across the workgroup: every weight read is a
// broadcast (a scalar load on software rasterisers, a constant-cache hit on GPUs) and only the
// activations are gathered. Accumulation is exact in i32, so the result is bit-identical to the
// CPU reference whatever the order. (A Gemm has its own kernel, gemm_int.wgsl: at a face
// model's batch sizes, pixel tiles over its one pixel per image would leave lanes idle.)

override TILE_O: u32 = 8u; // 8 or 4 when a group's output channels come in such multiples, else 1
// An alternative to dot4 for implementations without a dot-product instruction: operands
// unpacked once per tile into f32 and accumulated with fused multiply-adds (opt-in: on lavapipe
// it measured ~10 % slower than dot4, docs/RESULTS.md). It is still exact: every product and partial sum is an integer below 2^24
// as long as at most FLOAT_CHUNK words (4·127·127 each) are summed before moving to the i32
// accumulator. GPUs keep the packed dot4 (one DP4a instruction).
override FLOAT_DOT: bool = false;
const FLOAT_CHUNK: u32 = 256u;
// Output pixels per invocation, at most 4. CPU rasterisers hold every per-invocation array
// in SIMD registers (16 on AVX2): a small tile there avoids spilling; GPUs have registers to
// spare and reuse each weight word across four pixels.
override TILE_P: u32 = 4u;

struct Params {
    in_h: u32,
    in_w: u32,
    in_words: u32,        // packed words per input pixel
    words_per_group: u32, // packed words per group per kernel tap
    out_h: u32,
    out_w: u32,
    out_c: u32,
    out_per_group: u32,
    k_h: u32,
    k_w: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    dil_y: u32,
    dil_x: u32,
    shared_slope: u32,
    zero: u32, // always 0; see no_contract
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1: wq, declared in packed_weights.wgsl
// bindings 2–6 (x, mult, bias, slope, y) and the epilogue: int_epilogue.wgsl

// One weight word against the four pixels' activation words.
fn dot4x4(x0: u32, x1: u32, x2: u32, x3: u32, w: u32) -> vec4<i32> {
    return vec4<i32>(dot4(x0, w), dot4(x1, w), dot4(x2, w), dot4(x3, w));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let out_pixels = p.out_h * p.out_w;
    let p0 = gid.x * TILE_P;
    let o0 = wid.y * TILE_O;
    // Only a workgroup-uniform early return: lanes past the last pixel compute on clamped
    // pixels and skip their stores. A divergent return would put every later load and loop
    // under an execution mask, which CPU rasterisers pay for on every access.
    if o0 >= p.out_c {
        return;
    }
    let n = gid.z;
    let g = o0 / p.out_per_group;
    let in_base = g * p.words_per_group;
    let image = n * p.in_h * p.in_w;

    var top: array<i32, 4>;
    var left: array<i32, 4>;
    for (var pi = 0u; pi < TILE_P; pi++) {
        let pp = min(p0 + pi, out_pixels - 1u);
        top[pi] = i32((pp / p.out_w) * p.stride_y) - i32(p.pad_top);
        left[pi] = i32((pp % p.out_w) * p.stride_x) - i32(p.pad_left);
    }
    var oc: array<u32, 8>;
    for (var oi = 0u; oi < TILE_O; oi++) {
        oc[oi] = min(o0 + oi, p.out_c - 1u);
    }

    // Weight words of each output channel of the tile (`TILE_O` of them are used).
    let per_channel = p.k_h * p.k_w * p.words_per_group;
    let w0 = oc[0] * per_channel;
    let w1 = oc[1] * per_channel;
    let w2 = oc[2] * per_channel;
    let w3 = oc[3] * per_channel;
    let w4 = oc[4] * per_channel;
    let w5 = oc[5] * per_channel;
    let w6 = oc[6] * per_channel;
    let w7 = oc[7] * per_channel;
    var a0 = vec4<i32>();
    var a1 = vec4<i32>();
    var a2 = vec4<i32>();
    var a3 = vec4<i32>();
    var a4 = vec4<i32>();
    var a5 = vec4<i32>();
    var a6 = vec4<i32>();
    var a7 = vec4<i32>();
    var acc: array<vec4<i32>, 8>;
    for (var ky = 0u; ky < p.k_h; ky++) {
        for (var kx = 0u; kx < p.k_w; kx++) {
            var base: array<u32, 4>;
            var inside: array<bool, 4>;
            for (var pi = 0u; pi < TILE_P; pi++) {
                let iy = top[pi] + i32(ky * p.dil_y);
                let ix = left[pi] + i32(kx * p.dil_x);
                inside[pi] = iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
                base[pi] = select(0u, (image + u32(iy) * p.in_w + u32(ix)) * p.in_words + in_base, inside[pi]);
            }
            let tap = ky * p.k_w + kx;
            if FLOAT_DOT {
                for (var j0 = 0u; j0 < p.words_per_group; j0 += FLOAT_CHUNK) {
                    let j1 = min(j0 + FLOAT_CHUNK, p.words_per_group);
                    // Zeroed explicitly: SwiftShader (Chromium's software WebGPU) was seen
                    // not to re-zero a loop-scoped array at each iteration.
                    var facc: array<array<f32, 4>, 8>;
                    for (var oi = 0u; oi < TILE_O; oi++) {
                        for (var pi = 0u; pi < TILE_P; pi++) {
                            facc[oi][pi] = 0.0;
                        }
                    }
                    for (var j = j0; j < j1; j++) {
                        var xf: array<vec4<f32>, 4>;
                        for (var pi = 0u; pi < TILE_P; pi++) {
                            xf[pi] = vec4<f32>(unpack4(select(0u, x[base[pi] + j], inside[pi])));
                        }
                        for (var oi = 0u; oi < TILE_O; oi++) {
                            let wf = vec4<f32>(weight_vec4((oc[oi] * p.k_h * p.k_w + tap) * p.words_per_group + j));
                            for (var pi = 0u; pi < TILE_P; pi++) {
                                var a = facc[oi][pi];
                                a = fma(xf[pi].x, wf.x, a);
                                a = fma(xf[pi].y, wf.y, a);
                                a = fma(xf[pi].z, wf.z, a);
                                facc[oi][pi] = fma(xf[pi].w, wf.w, a);
                            }
                        }
                    }
                    for (var oi = 0u; oi < TILE_O; oi++) {
                        for (var pi = 0u; pi < TILE_P; pi++) {
                            acc[oi][pi] += i32(facc[oi][pi]);
                        }
                    }
                }
            } else {
                // Written out, not looped: SwiftShader keeps a dynamically indexed array in
                // memory, named values in registers (measured: the channel loop over an array
                // of accumulators cost a third of the kernel's time in Chromium).
                let t = tap * p.words_per_group;
                for (var j = 0u; j < p.words_per_group; j++) {
                    // padding is exactly 0: the zero point is 0
                    let x0 = select(0u, x[base[0] + j], inside[0]);
                    let x1 = select(0u, x[base[1] + j], inside[1]);
                    let x2 = select(0u, x[base[2] + j], inside[2]);
                    let x3 = select(0u, x[base[3] + j], inside[3]);
                    let tj = t + j;
                    a0 += dot4x4(x0, x1, x2, x3, weight_i8x4(w0 + tj));
                    if TILE_O > 1u {
                        a1 += dot4x4(x0, x1, x2, x3, weight_i8x4(w1 + tj));
                        a2 += dot4x4(x0, x1, x2, x3, weight_i8x4(w2 + tj));
                        a3 += dot4x4(x0, x1, x2, x3, weight_i8x4(w3 + tj));
                    }
                    if TILE_O > 4u {
                        a4 += dot4x4(x0, x1, x2, x3, weight_i8x4(w4 + tj));
                        a5 += dot4x4(x0, x1, x2, x3, weight_i8x4(w5 + tj));
                        a6 += dot4x4(x0, x1, x2, x3, weight_i8x4(w6 + tj));
                        a7 += dot4x4(x0, x1, x2, x3, weight_i8x4(w7 + tj));
                    }
                }
            }
        }
    }

    acc[0] += a0;
    acc[1] += a1;
    acc[2] += a2;
    acc[3] += a3;
    acc[4] += a4;
    acc[5] += a5;
    acc[6] += a6;
    acc[7] += a7;
    for (var oi = 0u; oi < TILE_O; oi++) {
        let o = o0 + oi;
        if o >= p.out_c {
            break;
        }
        for (var pi = 0u; pi < TILE_P; pi++) {
            let pp = p0 + pi;
            if pp < out_pixels {
                y[(n * out_pixels + pp) * p.out_c + o] = epilogue(acc[oi][pi], o);
            }
        }
    }
}
