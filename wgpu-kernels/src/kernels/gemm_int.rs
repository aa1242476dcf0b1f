//! `gemm_int.wgsl`: the integer fully-connected layer over packed 4×i8 activations.

use bytemuck::{Pod, Zeroable};

pub(super) const SOURCE: &str = include_str!("gemm_int.wgsl");

/// Field for field the `Params` of `gemm_int.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GemmParams {
    pub in_words: u32,
    pub out_c: u32,
    pub shared_slope: u32,
    pub zero: u32,
}
