// Depthwise integer convolution (one filter per channel): four channels per packed word, so
// each invocation works on one word (4 channels) × TILE_P output pixels with vec4<i32>
// arithmetic. Memory-bound; there is no reduction over channels for dot4 to speed up.
// Epilogue as in conv_int.wgsl.

override PRELU: bool = false;
const TILE_P: u32 = 4u;

struct Params {
    in_h: u32,
    in_w: u32,
    channels: u32,
    words: u32, // ceil(channels / 4): packed words per pixel
    out_h: u32,
    out_w: u32,
    k_h: u32,
    k_w: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    dil_y: u32,
    dil_x: u32,
    shared_slope: u32,
    zero: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1: wq, declared in packed_weights.wgsl; layout [k_h][k_w][words] groups of 4 channels
@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read> mult: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> slope: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn no_contract(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

@compute @workgroup_size(16, 4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let out_pixels = p.out_h * p.out_w;
    let p0 = gid.x * TILE_P;
    let j = gid.y;
    if p0 >= out_pixels || j >= p.words {
        return;
    }
    let n = gid.z;
    let image = n * p.in_h * p.in_w;
    var top: array<i32, TILE_P>;
    var left: array<i32, TILE_P>;
    for (var pi = 0u; pi < TILE_P; pi++) {
        let pp = min(p0 + pi, out_pixels - 1u);
        top[pi] = i32((pp / p.out_w) * p.stride_y) - i32(p.pad_top);
        left[pi] = i32((pp % p.out_w) * p.stride_x) - i32(p.pad_left);
    }
    var acc: array<vec4<i32>, TILE_P>;
    for (var ky = 0u; ky < p.k_h; ky++) {
        for (var kx = 0u; kx < p.k_w; kx++) {
            let w = weight_vec4((ky * p.k_w + kx) * p.words + j);
            for (var pi = 0u; pi < TILE_P; pi++) {
                let iy = top[pi] + i32(ky * p.dil_y);
                let ix = left[pi] + i32(kx * p.dil_x);
                if iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w) {
                    let xw = x[(image + u32(iy) * p.in_w + u32(ix)) * p.words + j];
                    acc[pi] += unpack4(xw) * w;
                }
            }
        }
    }
    for (var b = 0u; b < 4u; b++) {
        let c = j * 4u + b;
        if c >= p.channels {
            break;
        }
        let m = mult[c];
        let bb = bias[c];
        let s = slope[select(c, 0u, p.shared_slope != 0u)];
        for (var pi = 0u; pi < TILE_P; pi++) {
            let pp = p0 + pi;
            if pp < out_pixels {
                var v = no_contract(f32(acc[pi][b]) * m) + bb;
                if PRELU && !(v > 0.0) {
                    v = v * s;
                }
                y[(n * out_pixels + pp) * p.channels + c] = v;
            }
        }
    }
}
