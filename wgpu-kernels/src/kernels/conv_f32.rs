//! `conv_f32.wgsl`: the float convolution of unquantized models. Its parameters are
//! [`ConvParams`](super::ConvParams), the block it shares with `conv_int.wgsl` (defined beside
//! that shader), read as input channels and channels per group.

pub(super) const SOURCE: &str = include_str!("conv_f32.wgsl");
