//! `l2norm.wgsl`: row-wise L2 normalisation of the embeddings.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("l2norm.wgsl");

/// Field for field the `Params` of `l2norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct L2NormParams {
    pub dim: u32,
    pub _pad: [u32; 3],
}
