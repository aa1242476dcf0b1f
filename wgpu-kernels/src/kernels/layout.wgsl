// Moves between the engine's NHWC activations and the outside world: normalised network input
// from RGB bytes or from an NCHW float tensor, and Flatten's NCHW order for a Gemm.

struct Params {
    pixels: u32,   // H·W
    channels: u32, // C
    bgr: u32,      // 1: the network wants BGR
    first: u32,    // to_nchw: the first of the C channels copied from the source's
    mean: vec4<f32>,    // per network input channel (from_rgb8 only)
    inv_std: vec4<f32>,
    src_channels: u32, // to_nchw: channels per source pixel (C, or more for a slice)
    planar: u32,       // from_rgb8: 1 writes NCHW, for a first layer that reads it so
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>; // bytes or f32 bits
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Interleaved RGB bytes (HWC, packed four to a word) → normalised NHWC (or NCHW where
// `planar`), (x − mean)·(1/std).
@compute @workgroup_size(256)
fn from_rgb8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let count = p.pixels * 3u;
    let i = element(gid, nwg);
    if i >= count {
        return;
    }
    let c = i % 3u;
    let src_c = select(c, 2u - c, p.bgr != 0u);
    let byte_index = gid.z * count + i - c + src_c;
    let byte = (src[byte_index / 4u] >> (8u * (byte_index % 4u))) & 0xffu;
    let at = select(i, c * p.pixels + (i - c) / 3u, p.planar != 0u);
    dst[gid.z * count + at] = (f32(byte) - p.mean[c]) * p.inv_std[c];
}

// NCHW float tensor → NHWC, one pixel's channels per invocation (no division by the channel
// count, which CPU rasterisers run as scalar divisions lane by lane: SCRFD's 640×640 input
// took 17 ms on lavapipe one element per invocation, 14 ms so).
@compute @workgroup_size(256)
fn from_nchw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let pixel = element(gid, nwg);
    if pixel >= p.pixels {
        return;
    }
    let count = p.pixels * p.channels;
    for (var c = 0u; c < p.channels; c++) {
        dst[gid.z * count + pixel * p.channels + c] = bitcast<f32>(src[gid.z * count + c * p.pixels + pixel]);
    }
}

// NHWC → NCHW, the order in which ONNX's Flatten hands features to a Gemm; of channels
// first…first+C of a source with src_channels per pixel (several outputs computed as one).
@compute @workgroup_size(256)
fn to_nchw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let count = p.pixels * p.channels;
    let i = element(gid, nwg);
    if i >= count {
        return;
    }
    let c = i / p.pixels;
    let pixel = i % p.pixels;
    let image = gid.z * p.pixels * p.src_channels;
    dst[gid.z * count + i] = bitcast<f32>(src[image + pixel * p.src_channels + p.first + c]);
}
