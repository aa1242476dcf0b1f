//! `conv_int.wgsl`: the integer convolution (an implicit GEMM over packed 4×i8 activations),
//! and the geometry block it shares with `conv_f32.wgsl`.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("conv_int.wgsl");

/// Shared by `conv_int.wgsl` (where `c` is words per input pixel and `group` words per group)
/// and `conv_f32.wgsl` (input channels and channels per group).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub in_h: u32,
    pub in_w: u32,
    pub c: u32,
    pub group: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub out_c: u32,
    pub out_per_group: u32,
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
    /// The narrow float block convolution: 1 reads the input NCHW (the network's upload, as
    /// written) rather than NHWC.
    pub planar: u32,
    pub _pad: u32,
}
