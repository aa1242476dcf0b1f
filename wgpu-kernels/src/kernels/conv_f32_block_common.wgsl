// What conv_f32_block.wgsl and conv_f32_block_narrow.wgsl share, pasted before each (see
// their .rs modules): the override constants, every binding but the input's (`x`: words of
// four channels in one, single channels in the other) and the parameters' (bindings 0 and 6:
// conv_f32_params.wgsl, pasted before this), which block a workgroup owns (`block_at`), and the
// epilogue (`finish`; `store_block` comes from conv_f32_block_store_values.wgsl or
// conv_f32_block_store_loop.wgsl).

// Invocations per workgroup: 64, or a multiple of 8 below it that wastes fewer lanes past the
// last pixel block of a small layer (chosen by the lowering).
override LANES: u32 = 64u;
override TILE_O: u32 = 8u; // 8 or 16 (and 32 with TILE_P 8 in conv_f32_block.wgsl)
override TILE_P: u32 = 16u; // 16 (what the lowering uses), or 8: fewer spills, less reuse
override PRELU: bool = false;
// A fused ReLU: max(v, 0) with NaN to 0, as the CPU backend's f32::max.
override RELU: bool = false;

@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>; // HWIO, O in words of four
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>; // NHWC, C in words of four

// What one invocation owns: output pixels p0 … p0 + TILE_P − 1 and output words (four
// channels each) q0 … of image n; `live` is false for lanes past the last pixel block, which
// compute on the last one and skip their stores (no early return: the subgroup form's lanes
// 0–7 read weights for all).
struct Block {
    p0: u32,
    q0: u32,
    n: u32,
    live: bool,
}

// The block of lane `li` of workgroup `wid` (of `nwg`; two dimensions when one would exceed
// the device's limit). A workgroup owns LANES consecutive pixel blocks at one channel block, so
// every lane of it needs the same weight words (which the subgroup form shares), and
// consecutive workgroups take the channel blocks of the same pixel blocks in turn: their
// input stays in the CPU's cache between them. (With pixel blocks fastest over the whole
// image, every channel block read the whole input from memory again: the 1×1 and 3×3 layers
// 1.2–1.3× slower on lavapipe.)
fn block_at(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> Block {
    let pixel_blocks = (p.out_h * p.out_w + TILE_P - 1u) / TILE_P;
    let out_words = p.out_c / 4u;
    let channel_blocks = (out_words + TILE_O / 4u - 1u) / (TILE_O / 4u);
    let groups = ((pixel_blocks + LANES - 1u) / LANES) * channel_blocks;
    let flat = wid.y * nwg.x + wid.x;
    let g = min(flat, groups - 1u);
    let pb = (g / channel_blocks) * LANES + li;
    var b: Block;
    b.live = flat < groups && pb < pixel_blocks;
    b.p0 = min(pb, pixel_blocks - 1u) * TILE_P;
    b.q0 = (g % channel_blocks) * (TILE_O / 4u);
    b.n = wid.z;
    return b;
}

// The epilogue of one pixel's word of four output channels: bias, then PReLU or ReLU.
fn finish(a: vec4<f32>, b: vec4<f32>, q: u32) -> vec4<f32> {
    let o = 4u * q;
    var v = a + b;
    if PRELU {
        let shared_slope = p.shared_slope != 0u;
        let s = vec4<f32>(
            slope[select(o, 0u, shared_slope)],
            slope[select(o + 1u, 0u, shared_slope)],
            slope[select(o + 2u, 0u, shared_slope)],
            slope[select(o + 3u, 0u, shared_slope)],
        );
        v = select(v * s, v, v > vec4<f32>());
    }
    if RELU {
        v = select(vec4<f32>(), v, v > vec4<f32>());
    }
    return v;
}
