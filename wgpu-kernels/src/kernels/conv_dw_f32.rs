//! `conv_dw_f32.wgsl`: the float depthwise 3×3 convolution (stride 1 or 2, dilation 1) over
//! channels in words of four, after how it reads its nine weight words: each invocation its
//! own (`conv_dw_f32_taps.wgsl`, [`SOURCE`]) or through subgroup broadcasts
//! (`conv_dw_f32_taps_subgroup.wgsl`, [`SOURCE_SUBGROUP`]).

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = concat!(
    include_str!("conv_dw_f32_taps.wgsl"),
    include_str!("conv_dw_f32.wgsl")
);

pub(super) const SOURCE_SUBGROUP: &str = concat!(
    include_str!("conv_dw_f32_taps_subgroup.wgsl"),
    include_str!("conv_dw_f32.wgsl")
);

/// Field for field the shader's `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DepthwiseF32Params {
    pub in_h: u32,
    pub in_w: u32,
    /// Channels / 4.
    pub words: u32,
    /// Strips of `TILE_P` (4) output pixels per output row.
    pub strips: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub shared_slope: u32,
    pub _pad: [u32; 3],
}
