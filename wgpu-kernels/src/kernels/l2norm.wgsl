// Row-wise L2 normalisation of the embeddings: one workgroup per image, a tree reduction of
// the squared norm in workgroup memory.

struct Params {
    dim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.z * p.dim;
    var s = 0.0;
    for (var i = lid; i < p.dim; i += 64u) {
        let v = x[row + i];
        s += v * v;
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let norm = sqrt(partial[0]);
    let inv = select(0.0, 1.0 / norm, norm > 0.0);
    for (var i = lid; i < p.dim; i += 64u) {
        y[row + i] = x[row + i] * inv;
    }
}
