// Nearest-neighbour upsampling by a whole factor, NHWC: y[i, j, c] = x[i / f, j / f, c]
// (ONNX Resize nearest/asymmetric/floor at an integer scale: the FPN top-down path of SCRFD).

struct Params {
    out_w: u32,
    out_h: u32,
    channels: u32,
    factor: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let count = p.out_w * p.out_h * p.channels;
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= count {
        return;
    }
    let c = i % p.channels;
    let pixel = i / p.channels;
    let in_w = p.out_w / p.factor;
    let in_count = count / (p.factor * p.factor);
    let src_pixel = (pixel / p.out_w / p.factor) * in_w + (pixel % p.out_w) / p.factor;
    dst[gid.z * count + i] = src[gid.z * in_count + src_pixel * p.channels + c];
}
