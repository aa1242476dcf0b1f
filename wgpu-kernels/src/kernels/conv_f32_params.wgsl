// The float convolutions' parameters and run block, pasted before conv_f32.wgsl,
// conv_f32_vec4.wgsl and the block kernels (see their .rs modules): `ConvParams` on the Rust
// side, the layout conv_int.wgsl reads under its own names.

struct Params {
    in_h: u32,
    in_w: u32,
    in_c: u32, // a multiple of 4 in the block kernels
    group_channels: u32, // input channels per group: a multiple of 4 in conv_f32_vec4.wgsl, = in_c in the block kernels
    out_h: u32,
    out_w: u32,
    out_c: u32, // a multiple of 4 in the block kernels
    out_per_group: u32,
    k_h: u32,
    k_w: u32,
    stride_y: u32,
    stride_x: u32,
    pad_top: u32,
    pad_left: u32,
    dil_y: u32,
    dil_x: u32,
    shared_slope: u32,
    _pad0: u32,
    planar: u32, // conv_f32_block_narrow.wgsl: 1 reads the input NCHW (the upload as written)
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

struct Run {
    images: u32,
}
@group(0) @binding(6) var<uniform> run: Run;

