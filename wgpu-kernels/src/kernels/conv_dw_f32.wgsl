// Float32 depthwise 3×3 convolution (one filter per channel, dilation 1, stride STRIDE of 1 or
// 2), channels a multiple of four: NHWC activations read and written as vec4 words of four
// channels. Each invocation computes a strip of eight horizontally adjacent output pixels ×
// four channels. The channel word comes from workgroup_id, so every weight read is uniform
// (a broadcast); each input word of a kernel row is loaded once and serves every output of
// the strip that covers it (10 loads per row for 24 multiply-adds at stride 1, 17 at stride
// 2), because on CPU rasterisers a load is a loop over the lanes. Each output sums its nine taps in row-major order from zero, then adds the bias: the
// order of the CPU backend's direct loops (out-of-image taps add a zero product).

override PRELU: bool = false;
// A fused ReLU: max(v, 0) with NaN to 0, as the CPU backend's f32::max.
override RELU: bool = false;
override STRIDE: u32 = 1u;
const TILE_P: u32 = 8u;

struct Params {
    in_h: u32,
    in_w: u32,
    words: u32, // channels / 4
    strips: u32, // strips of TILE_P output pixels per output row
    out_h: u32,
    out_w: u32,
    pad_top: u32,
    pad_left: u32,
    shared_slope: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>; // [channel word][tap]
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>;

struct Run {
    images: u32,
}
@group(0) @binding(6) var<uniform> run: Run;

// The input word at column `ix` of the row starting at word `row`, zero outside the image.
fn col(row: u32, row_inside: bool, ix: i32) -> vec4<f32> {
    let inside = row_inside && ix >= 0 && ix < i32(p.in_w);
    return select(vec4<f32>(), x[select(0u, row + u32(ix) * p.words, inside)], inside);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let cw = wid.y; // the channel word, uniform per workgroup
    if cw >= p.words {
        return;
    }
    let n = gid.z;
    // Lanes past the last strip compute on the last one and skip their stores.
    let strip = min(gid.x, p.out_h * p.strips - 1u);
    let oy = strip / p.strips;
    let ox0 = (strip % p.strips) * TILE_P;
    let top = i32(oy * STRIDE) - i32(p.pad_top);
    let left = i32(ox0 * STRIDE) - i32(p.pad_left);
    let image = n * p.in_h * p.in_w;
    var a0 = vec4<f32>();
    var a1 = vec4<f32>();
    var a2 = vec4<f32>();
    var a3 = vec4<f32>();
    var a4 = vec4<f32>();
    var a5 = vec4<f32>();
    var a6 = vec4<f32>();
    var a7 = vec4<f32>();
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = top + i32(ky);
        let row_inside = iy >= 0 && iy < i32(p.in_h);
        let row = select(0u, (image + u32(iy) * p.in_w) * p.words + cw, row_inside);
        let k0 = w[cw * 9u + ky * 3u];
        let k1 = w[cw * 9u + ky * 3u + 1u];
        let k2 = w[cw * 9u + ky * 3u + 2u];
        let c0 = col(row, row_inside, left + 0);
        let c1 = col(row, row_inside, left + 1);
        let c2 = col(row, row_inside, left + 2);
        let c3 = col(row, row_inside, left + 3);
        let c4 = col(row, row_inside, left + 4);
        let c5 = col(row, row_inside, left + 5);
        let c6 = col(row, row_inside, left + 6);
        let c7 = col(row, row_inside, left + 7);
        let c8 = col(row, row_inside, left + 8);
        let c9 = col(row, row_inside, left + 9);
        if STRIDE == 1u {
            a0 = a0 + c0 * k0;
            a0 = a0 + c1 * k1;
            a0 = a0 + c2 * k2;
            a1 = a1 + c1 * k0;
            a1 = a1 + c2 * k1;
            a1 = a1 + c3 * k2;
            a2 = a2 + c2 * k0;
            a2 = a2 + c3 * k1;
            a2 = a2 + c4 * k2;
            a3 = a3 + c3 * k0;
            a3 = a3 + c4 * k1;
            a3 = a3 + c5 * k2;
            a4 = a4 + c4 * k0;
            a4 = a4 + c5 * k1;
            a4 = a4 + c6 * k2;
            a5 = a5 + c5 * k0;
            a5 = a5 + c6 * k1;
            a5 = a5 + c7 * k2;
            a6 = a6 + c6 * k0;
            a6 = a6 + c7 * k1;
            a6 = a6 + c8 * k2;
            a7 = a7 + c7 * k0;
            a7 = a7 + c8 * k1;
            a7 = a7 + c9 * k2;
        } else {
            let c10 = col(row, row_inside, left + 10);
            let c11 = col(row, row_inside, left + 11);
            let c12 = col(row, row_inside, left + 12);
            let c13 = col(row, row_inside, left + 13);
            let c14 = col(row, row_inside, left + 14);
            let c15 = col(row, row_inside, left + 15);
            let c16 = col(row, row_inside, left + 16);
            a0 = a0 + c0 * k0;
            a0 = a0 + c1 * k1;
            a0 = a0 + c2 * k2;
            a1 = a1 + c2 * k0;
            a1 = a1 + c3 * k1;
            a1 = a1 + c4 * k2;
            a2 = a2 + c4 * k0;
            a2 = a2 + c5 * k1;
            a2 = a2 + c6 * k2;
            a3 = a3 + c6 * k0;
            a3 = a3 + c7 * k1;
            a3 = a3 + c8 * k2;
            a4 = a4 + c8 * k0;
            a4 = a4 + c9 * k1;
            a4 = a4 + c10 * k2;
            a5 = a5 + c10 * k0;
            a5 = a5 + c11 * k1;
            a5 = a5 + c12 * k2;
            a6 = a6 + c12 * k0;
            a6 = a6 + c13 * k1;
            a6 = a6 + c14 * k2;
            a7 = a7 + c14 * k0;
            a7 = a7 + c15 * k1;
            a7 = a7 + c16 * k2;
        }
    }
    let b = bias[cw];
    var s = vec4<f32>();
    if PRELU {
        s = vec4<f32>(slope[0]);
        if p.shared_slope == 0u {
            s = vec4<f32>(slope[cw * 4u], slope[cw * 4u + 1u], slope[cw * 4u + 2u], slope[cw * 4u + 3u]);
        }
    }
    let out_base = (n * p.out_h + oy) * p.out_w;
    var acc = array<vec4<f32>, TILE_P>(a0, a1, a2, a3, a4, a5, a6, a7);
    if gid.x < p.out_h * p.strips {
        for (var pi = 0u; pi < TILE_P; pi++) {
            let ox = ox0 + pi;
            if ox < p.out_w {
                var v = acc[pi] + b;
                if PRELU {
                    v = select(v * s, v, v > vec4<f32>());
                }
                if RELU {
                    v = select(vec4<f32>(), v, v > vec4<f32>());
                }
                y[(out_base + ox) * p.words + cw] = v;
            }
        }
    }
}
