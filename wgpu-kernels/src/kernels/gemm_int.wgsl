// Integer fully-connected layer (Gemm) over packed 4×i8 activations: y[n][o] = epilogue(Σ_j
// dot4(x[n][j], w[j][o])), the epilogue of conv_int.wgsl (f32(acc)·m[o] + bias[o], PReLU if
// fused).
//
// A face model's Gemm runs once per image on a few hundred outputs, so the batch is small and
// the pixel tiling of conv_int.wgsl would leave most lanes idle (at batch 1, 255 of every 256
// computed outputs were thrown away). Here each invocation owns one output channel, the lanes
// of a workgroup run along consecutive channels, and the images are a loop: the weights are
// stored word-major ([K words][O], see `pack_gemm` in weights.rs), so the lanes read
// consecutive weight words, and every lane reads the same activation word (a broadcast).
// Accumulation is exact in i32, bit-identical to the CPU reference. It always multiplies with
// dot4 (native or the polyfill prelude): the opt-in f32 path of conv_int.wgsl is for the
// convolutions, where the time goes.

const TILE_N: u32 = 4u; // images per invocation

struct Params {
    in_words: u32, // packed words per image
    out_c: u32,
    shared_slope: u32,
    zero: u32, // always 0; see no_contract
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1: wq, declared in packed_weights.wgsl
// bindings 2–6 (x, mult, bias, slope, y) and the epilogue: int_epilogue.wgsl

struct Run {
    images: u32, // images in this submission
}
@group(0) @binding(7) var<uniform> run: Run;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = wid.y * TILE_N;
    // Uniform across the workgroup (loop bounds, not divergent returns): lanes past the last
    // channel compute on a clamped channel and skip their stores.
    let images = min(TILE_N, run.images - n0);
    let o = min(gid.x, p.out_c - 1u);
    var acc: array<i32, TILE_N>;
    for (var j = 0u; j < p.in_words; j++) {
        let w = weight_i8x4(j * p.out_c + o);
        for (var ni = 0u; ni < images; ni++) {
            acc[ni] += dot4(x[(n0 + ni) * p.in_words + j], w);
        }
    }
    if gid.x >= p.out_c {
        return;
    }
    for (var ni = 0u; ni < images; ni++) {
        y[(n0 + ni) * p.out_c + o] = epilogue(acc[ni], o);
    }
}
