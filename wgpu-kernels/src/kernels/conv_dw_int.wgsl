// Depthwise and narrow grouped integer convolution: groups of CG input and CG output channels
// (CG = 1, 2 or 4; MobileFaceNet's first "depthwise" layer has two channels per group). Four
// channels share a packed word and a word never straddles a group, so each invocation works on
// one output word (4 channels) × TILE_P pixels with vec4<i32> arithmetic, reading only the
// same input word. Memory-bound; dot4's reduction over channels has nothing to reduce here.
// Weights: [k_h][k_w][CG][words] groups of four. Epilogue as in conv_int.wgsl.

override PRELU: bool = false;
override CG: u32 = 1u;
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

// The channel word comes from workgroup_id: weights are uniform across the workgroup.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let out_pixels = p.out_h * p.out_w;
    let p0 = gid.x * TILE_P;
    let j = wid.y;
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
            var w: array<vec4<i32>, 4>;
            for (var ci = 0u; ci < CG; ci++) {
                w[ci] = weight_vec4(((ky * p.k_w + kx) * CG + ci) * p.words + j);
            }
            for (var pi = 0u; pi < TILE_P; pi++) {
                let iy = top[pi] + i32(ky * p.dil_y);
                let ix = left[pi] + i32(kx * p.dil_x);
                if iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w) {
                    let xv = unpack4(x[(image + u32(iy) * p.in_w + u32(ix)) * p.words + j]);
                    for (var ci = 0u; ci < CG; ci++) {
                        // output lane b reads input lane (b / CG)·CG + ci of the same word
                        let xs = vec4<i32>(
                            xv[ci],
                            xv[(1u / CG) * CG + ci],
                            xv[(2u / CG) * CG + ci],
                            xv[(3u / CG) * CG + ci],
                        );
                        acc[pi] += xs * w[ci];
                    }
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
