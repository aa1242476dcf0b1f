//! `elementwise.wgsl`: per-element float ops on NHWC tensors (affine, PReLU, ReLU, add).

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("elementwise.wgsl");

/// Field for field the `Params` of `elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub count: u32,
    pub channels: u32,
    pub shared_param: u32,
    pub zero: u32,
}
