// What conv_f32_block.wgsl and conv_f32_block_narrow.wgsl share, pasted before each (see
// their .rs modules): the override constants, every binding but the input's (`x`: words of
// four channels in one, single channels in the other) and the parameters' (bindings 0 and 6:
// conv_f32_params.wgsl, pasted before this), and the epilogue.

override TILE_O: u32 = 8u; // 8 or 16 (and 32 with TILE_P 8 in conv_f32_block.wgsl)
override TILE_P: u32 = 16u; // 16 (what the lowering uses), or 8: fewer spills, less reuse
override PRELU: bool = false;
// A fused ReLU: max(v, 0) with NaN to 0, as the CPU backend's f32::max.
override RELU: bool = false;

@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>; // HWIO, O in words of four
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>; // NHWC, C in words of four

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
