//! `quantize.wgsl`: f32 NHWC activations → packed 4×i8 words for one quantized consumer.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("quantize.wgsl");

/// Field for field the `Params` of `quantize.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QuantizeParams {
    pub pixels: u32,
    pub channels: u32,
    pub group_channels: u32,
    pub words_per_group: u32,
    pub words_per_pixel: u32,
    /// The integer grid `[lo, hi]` (`ActQuant::levels`).
    pub lo: f32,
    pub hi: f32,
    pub inv_scale: f32,
}
