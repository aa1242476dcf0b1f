// Add(a, Upsample(src)) in one pass: the FPN top-down sum of SCRFD's neck,
// y[i, j, c] = a[i, j, c] + src[i / f, j / f, c], NHWC with channels in words of four. Each
// invocation takes one word of one source pixel, reads it once and writes the f × f output
// pixels it covers; the word is the workgroup's x index, as in conv_dw_f32.wgsl, so the source
// pixel needs one division per lane. Apart, the upsampling wrote the f²-times larger tensor
// that the add then read back, and divided five times per element (on CPU rasterisers a
// division is a loop over the lanes): 1.1 ms of SCRFD's 80 on lavapipe. Addition commutes bit
// for bit, so either order of the Add's operands gives the reference's result.

struct Params {
    out_w: u32,
    out_h: u32,
    channels: u32,
    factor: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>; // the low-resolution operand
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> a: array<vec4<f32>>; // the full-resolution operand

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let words = p.channels / 4u;
    let in_w = p.out_w / p.factor;
    let in_pixels = in_w * (p.out_h / p.factor);
    let sp = wid.y * 64u + li;
    let q = wid.x;
    if sp >= in_pixels || q >= words {
        return;
    }
    let n = wid.z;
    let sy = sp / in_w;
    let sx = sp - sy * in_w;
    let b = src[(n * in_pixels + sp) * words + q];
    let out_image = n * p.out_w * p.out_h;
    for (var dy = 0u; dy < p.factor; dy++) {
        let row = out_image + (sy * p.factor + dy) * p.out_w + sx * p.factor;
        for (var dx = 0u; dx < p.factor; dx++) {
            let k = (row + dx) * words + q;
            y[k] = a[k] + b;
        }
    }
}
