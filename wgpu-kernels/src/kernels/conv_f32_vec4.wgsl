// Float32 convolution whose input channels per group are a multiple of four: conv_f32.wgsl's
// TILE_O × TILE_P register tiling (channel tile uniform per workgroup, weights broadcast), but
// each pixel's input read as vec4 words of four channels. On CPU rasterisers (lavapipe) a
// load whose address differs between lanes runs as a loop over the lanes, one iteration per
// load whatever its width, so reading four channels at once cuts that loop four-fold; on GPUs
// it is one 16-byte load. The sum runs over taps, then channels in order, as in conv_f32.wgsl.

override TILE_O: u32 = 8u; // 8, 4 or 1, as in conv_f32.wgsl
override PRELU: bool = false;
// A fused ReLU: max(v, 0) with NaN to 0, as the CPU backend's f32::max.
override RELU: bool = false;
const TILE_P: u32 = 4u;

// bindings 0 (p: Params) and 6 (run): conv_f32_params.wgsl, pasted before this.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>; // OHWI, I in words of four
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>; // NHWC, C in words of four
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// One weight word (four input channels of one output channel) against the four pixels'
// input words, summed channel by channel in order.
fn mac(a: vec4<f32>, wv: vec4<f32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> vec4<f32> {
    var s = a + vec4<f32>(x0.x, x1.x, x2.x, x3.x) * wv.x;
    s = s + vec4<f32>(x0.y, x1.y, x2.y, x3.y) * wv.y;
    s = s + vec4<f32>(x0.z, x1.z, x2.z, x3.z) * wv.z;
    return s + vec4<f32>(x0.w, x1.w, x2.w, x3.w) * wv.w;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let out_pixels = p.out_h * p.out_w;
    let p0 = gid.x * TILE_P;
    let o0 = wid.y * TILE_O;
    // Only a workgroup-uniform early return (see conv_int.wgsl): lanes past the last pixel
    // compute on clamped pixels and skip their stores.
    if o0 >= p.out_c {
        return;
    }
    let n = gid.z;
    let cw = p.group_channels / 4u; // words per group
    let in_words = p.in_c / 4u;
    let in_base = (o0 / p.out_per_group) * cw;
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
    let per_channel = p.k_h * p.k_w * cw;
    let w0 = oc[0] * per_channel;
    let w1 = oc[1] * per_channel;
    let w2 = oc[2] * per_channel;
    let w3 = oc[3] * per_channel;
    let w4 = oc[4] * per_channel;
    let w5 = oc[5] * per_channel;
    let w6 = oc[6] * per_channel;
    let w7 = oc[7] * per_channel;
    // Named accumulators, one vec4 of the four pixels per channel (see conv_int.wgsl).
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
                base[pi] = select(0u, (image + u32(iy) * p.in_w + u32(ix)) * in_words + in_base, inside[pi]);
            }
            let t = (ky * p.k_w + kx) * cw;
            for (var j = 0u; j < cw; j++) {
                let x0 = select(vec4<f32>(), x[base[0] + j], inside[0]);
                let x1 = select(vec4<f32>(), x[base[1] + j], inside[1]);
                let x2 = select(vec4<f32>(), x[base[2] + j], inside[2]);
                let x3 = select(vec4<f32>(), x[base[3] + j], inside[3]);
                let tj = t + j;
                a0 = mac(a0, w[w0 + tj], x0, x1, x2, x3);
                if TILE_O > 1u {
                    a1 = mac(a1, w[w1 + tj], x0, x1, x2, x3);
                    a2 = mac(a2, w[w2 + tj], x0, x1, x2, x3);
                    a3 = mac(a3, w[w3 + tj], x0, x1, x2, x3);
                }
                if TILE_O > 4u {
                    a4 = mac(a4, w[w4 + tj], x0, x1, x2, x3);
                    a5 = mac(a5, w[w5 + tj], x0, x1, x2, x3);
                    a6 = mac(a6, w[w6 + tj], x0, x1, x2, x3);
                    a7 = mac(a7, w[w7 + tj], x0, x1, x2, x3);
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
