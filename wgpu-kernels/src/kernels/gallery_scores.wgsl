// 1:N search scores: scores[p][n] = Σ_d probes[p][d] · gallery[n][d], every row already
// L2-normalised, so each score is a cosine.
//
// A workgroup takes 64 gallery rows (one per invocation) and PROBES probes. The probes are
// what every invocation reads, so they are staged in workgroup memory a CHUNK of dimensions
// at a time; each invocation streams its own gallery row once and keeps PROBES running sums
// in registers. A gallery is therefore read ceil(probes / PROBES) times in all, not once per
// probe. PROBES is an override so a single probe does not pay for sixteen accumulators (the
// host picks 1, 2, 4, 8 or 16).

struct Params {
    // Gallery rows in this buffer.
    rows: u32,
    dim: u32,
    // Probes in this dispatch.
    probes: u32,
    // Scores of one probe (the whole gallery's rows): the stride of `scores`.
    stride: u32,
    // Column of this buffer's first row in `scores` (a gallery split over several buffers).
    first_row: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gallery: array<f32>;
@group(0) @binding(2) var<storage, read> probes: array<f32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;

override PROBES: u32 = 16u;
const MAX_PROBES: u32 = 16u;
const CHUNK: u32 = 128u;
const ROWS: u32 = 64u;

// 16 × 128 floats: 8 KiB, half the smallest workgroup memory WebGPU guarantees.
var<workgroup> q: array<f32, 2048>;

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let row = wid.x * ROWS + lid;
    let p0 = wid.y * PROBES;
    let live = row < p.rows;
    // Rows past the end read row 0 (never written back) so every invocation reaches the
    // barriers without a branch around them.
    let base = select(0u, row * p.dim, live);
    var acc: array<f32, MAX_PROBES>;
    for (var j = 0u; j < MAX_PROBES; j++) {
        acc[j] = 0.0;
    }
    for (var d0 = 0u; d0 < p.dim; d0 += CHUNK) {
        let len = min(CHUNK, p.dim - d0);
        workgroupBarrier();
        for (var i = lid; i < PROBES * CHUNK; i += ROWS) {
            let j = i / CHUNK;
            let c = i % CHUNK;
            var v = 0.0;
            if p0 + j < p.probes && c < len {
                v = probes[(p0 + j) * p.dim + d0 + c];
            }
            q[i] = v;
        }
        workgroupBarrier();
        for (var c = 0u; c < len; c++) {
            let g = gallery[base + d0 + c];
            for (var j = 0u; j < PROBES; j++) {
                acc[j] += g * q[j * CHUNK + c];
            }
        }
    }
    if live {
        for (var j = 0u; j < PROBES; j++) {
            if p0 + j < p.probes {
                scores[(p0 + j) * p.stride + p.first_row + row] = acc[j];
            }
        }
    }
}
