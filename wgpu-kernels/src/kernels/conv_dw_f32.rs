//! `conv_dw_f32.wgsl`: the float depthwise 3×3 convolution (stride 1 or 2, dilation 1) over
//! channels in words of four.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("conv_dw_f32.wgsl");

/// Field for field the shader's `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DepthwiseF32Params {
    pub in_h: u32,
    pub in_w: u32,
    /// Channels / 4.
    pub words: u32,
    /// Strips of four output pixels per output row.
    pub strips: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub shared_slope: u32,
    pub _pad: [u32; 3],
}
