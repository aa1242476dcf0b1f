//! `upsample.wgsl`: nearest-neighbour upsampling by a whole factor.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("upsample.wgsl");

/// Field for field the `Params` of `upsample.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct UpsampleParams {
    pub out_w: u32,
    pub out_h: u32,
    pub channels: u32,
    pub factor: u32,
}
