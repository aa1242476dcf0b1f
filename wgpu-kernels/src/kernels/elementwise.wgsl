// Per-element float ops on NHWC tensors (channel = index mod C): BatchNorm kept as an affine,
// PReLU, ReLU and the residual add. Each computes exactly what the CPU reference computes,
// with the affine's multiply kept apart from its add (see no_contract in conv_int.wgsl).

struct Params {
    count: u32,    // elements per image
    channels: u32,
    shared_param: u32, // 1: a single slope for every channel
    zero: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;     // add: second operand; prelu: slopes; affine: scales
@group(0) @binding(3) var<storage, read> shift: array<f32>; // affine only (bound to a dummy otherwise)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if i >= p.count {
        return;
    }
    let k = gid.z * p.count + i;
    y[k] = a[k] + b[k];
}

@compute @workgroup_size(256)
fn prelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if i >= p.count {
        return;
    }
    let k = gid.z * p.count + i;
    let v = a[k];
    let s = b[select(i % p.channels, 0u, p.shared_param != 0u)];
    y[k] = select(v * s, v, v > 0.0);
}

@compute @workgroup_size(256)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if i >= p.count {
        return;
    }
    let k = gid.z * p.count + i;
    y[k] = max(a[k], 0.0);
}

@compute @workgroup_size(256)
fn affine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = element(gid, nwg);
    if i >= p.count {
        return;
    }
    let k = gid.z * p.count + i;
    let c = i % p.channels;
    y[k] = bitcast<f32>(bitcast<u32>(a[k] * b[c]) ^ p.zero) + shift[c];
}
