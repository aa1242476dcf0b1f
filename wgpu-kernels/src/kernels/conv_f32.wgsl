// Float32 convolution (NHWC activations, OHWI weights), for unquantized teachers: the same
// TILE_O × TILE_P register tiling as conv_int.wgsl over float multiply-adds. Grouped and
// depthwise convolutions are the cases group_channels < channels. PReLU can be fused.

override TILE_O: u32 = 8u; // as in conv_int.wgsl: the channel tile is uniform per workgroup
override PRELU: bool = false;
// A fused ReLU: max(v, 0) with NaN to 0, as the CPU backend's f32::max.
override RELU: bool = false;
// A Gemm (1×1 input, 1×1 output) tiles over images instead of pixels: the batch becomes the
// pixel axis, so a tile of TILE_P images shares each weight.
override IMAGES_AS_PIXELS: bool = false;
const TILE_P: u32 = 4u;

// bindings 0 (p: Params) and 6 (run): conv_f32_params.wgsl, pasted before this.
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let out_pixels = select(p.out_h * p.out_w, run.images, IMAGES_AS_PIXELS);
    let p0 = gid.x * TILE_P;
    let o0 = wid.y * TILE_O;
    if p0 >= out_pixels || o0 >= p.out_c {
        return;
    }
    let n = select(gid.z, 0u, IMAGES_AS_PIXELS);
    let cg = p.group_channels;
    let in_base = (o0 / p.out_per_group) * cg;
    let image = n * p.in_h * p.in_w;
    var top: array<i32, TILE_P>;
    var left: array<i32, TILE_P>;
    for (var pi = 0u; pi < TILE_P; pi++) {
        let pp = min(p0 + pi, out_pixels - 1u);
        top[pi] = i32((pp / p.out_w) * p.stride_y) - i32(p.pad_top);
        left[pi] = i32((pp % p.out_w) * p.stride_x) - i32(p.pad_left);
    }
    var oc: array<u32, 8>;
    for (var oi = 0u; oi < TILE_O; oi++) {
        oc[oi] = min(o0 + oi, p.out_c - 1u);
    }
    // Named accumulators, one vec4 of the four pixels per channel (see conv_int.wgsl: software
    // rasterisers keep loop-indexed arrays in memory).
    let per_channel = p.k_h * p.k_w * cg;
    let w0 = oc[0] * per_channel;
    let w1 = oc[1] * per_channel;
    let w2 = oc[2] * per_channel;
    let w3 = oc[3] * per_channel;
    let w4 = oc[4] * per_channel;
    let w5 = oc[5] * per_channel;
    let w6 = oc[6] * per_channel;
    let w7 = oc[7] * per_channel;
    var a0 = vec4<f32>();
    var a1 = vec4<f32>();
    var a2 = vec4<f32>();
    var a3 = vec4<f32>();
    var a4 = vec4<f32>();
    var a5 = vec4<f32>();
    var a6 = vec4<f32>();
    var a7 = vec4<f32>();
    for (var ky = 0u; ky < p.k_h; ky++) {
        for (var kx = 0u; kx < p.k_w; kx++) {
            var base: array<u32, TILE_P>;
            var inside: array<bool, TILE_P>;
            for (var pi = 0u; pi < TILE_P; pi++) {
                let iy = top[pi] + i32(ky * p.dil_y);
                let ix = left[pi] + i32(kx * p.dil_x);
                inside[pi] = iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
                base[pi] = select(0u, (image + u32(iy) * p.in_w + u32(ix)) * p.in_c + in_base, inside[pi]);
            }
            let tap = ky * p.k_w + kx;
            let t = tap * cg;
            for (var ci = 0u; ci < cg; ci++) {
                let xv = vec4<f32>(
                    select(0.0, x[base[0] + ci], inside[0]),
                    select(0.0, x[base[1] + ci], inside[1]),
                    select(0.0, x[base[2] + ci], inside[2]),
                    select(0.0, x[base[3] + ci], inside[3]),
                );
                let tc = t + ci;
                a0 += xv * w[w0 + tc];
                if TILE_O > 1u {
                    a1 += xv * w[w1 + tc];
                    a2 += xv * w[w2 + tc];
                    a3 += xv * w[w3 + tc];
                }
                if TILE_O > 4u {
                    a4 += xv * w[w4 + tc];
                    a5 += xv * w[w5 + tc];
                    a6 += xv * w[w6 + tc];
                    a7 += xv * w[w7 + tc];
                }
            }
        }
    }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    for (var oi = 0u; oi < TILE_O; oi++) {
        let o = o0 + oi;
        if o >= p.out_c {
            break;
        }
        let b = bias[o];
        let s = slope[select(o, 0u, p.shared_slope != 0u)];
        for (var pi = 0u; pi < TILE_P; pi++) {
            let pp = p0 + pi;
            if pp < out_pixels {
                var v = acc[oi][pi] + b;
                if PRELU && !(v > 0.0) {
                    v = v * s;
                }
                if RELU {
                    v = select(0.0, v, v > 0.0);
                }
                y[(n * out_pixels + pp) * p.out_c + o] = v;
            }
        }
    }
}
