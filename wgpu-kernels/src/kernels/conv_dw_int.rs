//! `conv_dw_int.wgsl`: depthwise and narrow grouped integer convolution.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("conv_dw_int.wgsl");

/// Field for field the `Params` of `conv_dw_int.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct DepthwiseParams {
    pub in_h: u32,
    pub in_w: u32,
    pub channels: u32,
    pub words: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub k_h: u32,
    pub k_w: u32,
    pub stride_y: u32,
    pub stride_x: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub dil_y: u32,
    pub dil_x: u32,
    pub shared_slope: u32,
    pub zero: u32,
}
