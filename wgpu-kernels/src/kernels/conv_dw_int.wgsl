// Depthwise and narrow grouped integer convolution: groups of CG input and CG output channels
// (CG = 1, 2 or 4; MobileFaceNet's first "depthwise" layer has two channels per group). Four
// channels share a packed word and a word never straddles a group, so each invocation works on
// one output word (4 channels) × TILE_P pixels with vec4<i32> arithmetic, reading only the
// same input word. Memory-bound; dot4's reduction over channels has nothing to reduce here.
// Weights: [k_h][k_w][CG][words] groups of four. Epilogue as in conv_int.wgsl.

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
// bindings 2–6 (x, mult, bias, slope, y) and the epilogue: int_epilogue.wgsl

// The input word j of pixel (iy, ix), or 0 in the padding (the zero point is 0).
fn input_word(image: u32, iy: i32, ix: i32, j: u32) -> u32 {
    let inside = iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
    let at = select(0u, (image + u32(iy) * p.in_w + u32(ix)) * p.words + j, inside);
    return select(0u, x[at], inside);
}

// One kernel tap for the word's four output channels: output lane b reads input lane
// (b / CG)·CG + ci of the same word, times weight row ci.
fn tap(word: u32, w0: vec4<i32>, w1: vec4<i32>, w2: vec4<i32>, w3: vec4<i32>) -> vec4<i32> {
    let xv = unpack4(word);
    if CG == 1u {
        return xv * w0;
    }
    if CG == 2u {
        return vec4<i32>(xv.x, xv.x, xv.z, xv.z) * w0 + vec4<i32>(xv.y, xv.y, xv.w, xv.w) * w1;
    }
    return vec4<i32>(xv.x) * w0 + vec4<i32>(xv.y) * w1 + vec4<i32>(xv.z) * w2 + vec4<i32>(xv.w) * w3;
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
    // Named accumulators and weights, not arrays indexed in loops: SwiftShader keeps those in
    // memory (see conv_int.wgsl).
    var a0 = vec4<i32>();
    var a1 = vec4<i32>();
    var a2 = vec4<i32>();
    var a3 = vec4<i32>();
    for (var ky = 0u; ky < p.k_h; ky++) {
        for (var kx = 0u; kx < p.k_w; kx++) {
            let wb = (ky * p.k_w + kx) * CG * p.words + j;
            let w0 = weight_vec4(wb);
            var w1 = vec4<i32>();
            var w2 = vec4<i32>();
            var w3 = vec4<i32>();
            if CG > 1u {
                w1 = weight_vec4(wb + p.words);
            }
            if CG > 2u {
                w2 = weight_vec4(wb + 2u * p.words);
                w3 = weight_vec4(wb + 3u * p.words);
            }
            let dy = i32(ky * p.dil_y);
            let dx = i32(kx * p.dil_x);
            a0 += tap(input_word(image, top[0] + dy, left[0] + dx, j), w0, w1, w2, w3);
            a1 += tap(input_word(image, top[1] + dy, left[1] + dx, j), w0, w1, w2, w3);
            a2 += tap(input_word(image, top[2] + dy, left[2] + dx, j), w0, w1, w2, w3);
            a3 += tap(input_word(image, top[3] + dy, left[3] + dx, j), w0, w1, w2, w3);
        }
    }
    var acc = array<vec4<i32>, TILE_P>(a0, a1, a2, a3);
    for (var b = 0u; b < 4u; b++) {
        let c = j * 4u + b;
        if c >= p.channels {
            break;
        }
        for (var pi = 0u; pi < TILE_P; pi++) {
            let pp = p0 + pi;
            if pp < out_pixels {
                y[(n * out_pixels + pp) * p.channels + c] = epilogue(acc[pi][b], c);
            }
        }
    }
}
