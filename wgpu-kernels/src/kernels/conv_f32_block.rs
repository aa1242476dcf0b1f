//! `conv_f32_block.wgsl`: the float convolution of one group whose input and output channels
//! come in fours, 16 (or 8) pixels × 16 (or 8) output channels per invocation, weights in
//! HWIO. Its parameters are [`ConvParams`](super::ConvParams), read as in `conv_f32.wgsl`.
//! Pasted after `conv_f32_params.wgsl` (the parameters) and `conv_f32_block_common.wgsl`
//! (bindings, epilogue), which the two block kernels share.

pub(super) const SOURCE: &str = concat!(
    include_str!("conv_f32_params.wgsl"),
    include_str!("conv_f32_block_common.wgsl"),
    include_str!("conv_f32_block.wgsl")
);
