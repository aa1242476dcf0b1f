//! `conv_f32_block.wgsl`: the float convolution of one group whose input and output channels
//! come in fours, 16 (or 8) pixels × 16 (or 8) output channels per invocation, weights in
//! HWIO. Its parameters are [`ConvParams`](super::ConvParams), read as in `conv_f32.wgsl`.
//! Pasted after `conv_f32_params.wgsl` (the parameters), `conv_f32_block_common.wgsl`
//! (bindings, epilogue), which the two block kernels share, and how it reads its weights:
//! each invocation its own (`conv_f32_block_weights.wgsl`, [`SOURCE`]) or one read per lane
//! shared by subgroup broadcasts (`conv_f32_block_weights_subgroup.wgsl`,
//! [`SOURCE_SUBGROUP`]), which needs [`wgpu::Features::SUBGROUP`]; each form with its store of
//! the accumulators (`conv_f32_block_store_loop.wgsl`, compact for SwiftShader, or
//! `conv_f32_block_store_values.wgsl`, straight-line for llvmpipe and GPUs).

pub(super) const SOURCE: &str = concat!(
    include_str!("conv_f32_params.wgsl"),
    include_str!("conv_f32_block_common.wgsl"),
    include_str!("conv_f32_block_weights.wgsl"),
    include_str!("conv_f32_block_store_loop.wgsl"),
    include_str!("conv_f32_block.wgsl")
);

pub(super) const SOURCE_SUBGROUP: &str = concat!(
    include_str!("conv_f32_params.wgsl"),
    include_str!("conv_f32_block_common.wgsl"),
    include_str!("conv_f32_block_weights_subgroup.wgsl"),
    include_str!("conv_f32_block_store_values.wgsl"),
    include_str!("conv_f32_block.wgsl")
);
