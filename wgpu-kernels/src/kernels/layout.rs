//! `layout.wgsl`: moves between the engine's NHWC activations and the outside world (network
//! input from RGB bytes or NCHW floats, NCHW copies for Flatten and read-back).

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("layout.wgsl");

/// Field for field the `Params` of `layout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayoutParams {
    pub pixels: u32,
    pub channels: u32,
    pub bgr: u32,
    /// `to_nchw`: the first channel copied.
    pub first: u32,
    /// Per input channel (the fourth unused); `vec4<f32>`, 16-byte aligned.
    pub mean: [f32; 4],
    pub inv_std: [f32; 4],
    /// `to_nchw`: channels per source pixel.
    pub src_channels: u32,
    /// `from_rgb8`: 1 writes NCHW (for a first layer that reads channels one at a time).
    pub planar: u32,
    pub _pad: [u32; 2],
}
