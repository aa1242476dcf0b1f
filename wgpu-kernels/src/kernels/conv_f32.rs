//! `conv_f32.wgsl`: the float convolution of unquantized models. Its parameters are
//! [`ConvParams`](super::ConvParams), the block it shares with `conv_int.wgsl` (defined beside
//! that shader), read as input channels and channels per group; their WGSL declaration,
//! `conv_f32_params.wgsl`, is pasted before it, as before every float convolution kernel.

pub(super) const SOURCE: &str = concat!(
    include_str!("conv_f32_params.wgsl"),
    include_str!("conv_f32.wgsl")
);
