//! `upsample.wgsl`: nearest-neighbour upsampling by a whole factor; `upsample_add.wgsl`: the
//! same upsampling added to a full-resolution tensor in one pass (channels in fours).

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("upsample.wgsl");
pub(super) const SOURCE_ADD: &str = include_str!("upsample_add.wgsl");

/// Field for field the `Params` of `upsample.wgsl` and `upsample_add.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct UpsampleParams {
    pub out_w: u32,
    pub out_h: u32,
    pub channels: u32,
    pub factor: u32,
}
