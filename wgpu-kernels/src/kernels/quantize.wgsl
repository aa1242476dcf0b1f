// f32 NHWC activations → packed 4×i8 words for one quantized convolution:
// q = clamp(round_half_even(x · inv_scale), lo, hi)   (docs/quantization.md: [lo, hi] is the
// symmetric [−qmax, qmax] or a split of the same levels; zero stays 0, so padding needs nothing)
//
// Channels are packed per group: group g's channel j goes to word g·words_per_group + j/4,
// byte j%4, with each group zero-padded to a multiple of four so that a dot4 never mixes
// groups. A dense depthwise layout is the special case of one group holding every channel.

struct Params {
    pixels: u32,          // H·W of one image
    channels: u32,        // C of the f32 tensor
    group_channels: u32,  // channels per packed group
    words_per_group: u32, // ceil(group_channels / 4)
    words_per_pixel: u32, // groups · words_per_group
    lo: f32,
    hi: f32,
    inv_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xq: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let per_image = p.pixels * p.words_per_pixel;
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= per_image {
        return;
    }
    let n = gid.z;
    let pixel = i / p.words_per_pixel;
    let wi = i % p.words_per_pixel;
    let g = wi / p.words_per_group;
    let j0 = (wi % p.words_per_group) * 4u;
    let base = (n * p.pixels + pixel) * p.channels + g * p.group_channels;
    var word = 0u;
    for (var b = 0u; b < 4u; b++) {
        let j = j0 + b;
        if j < p.group_channels {
            let q = clamp(round(x[base + j] * p.inv_scale), p.lo, p.hi);
            word |= (bitcast<u32>(i32(q)) & 0xffu) << (8u * b);
        }
    }
    xq[(n * p.pixels) * p.words_per_pixel + i] = word;
}
