//! `conv_f32_block_narrow.wgsl`: `conv_f32_block.wgsl`'s pixel × channel blocks over an input
//! whose channels do not come in fours, read one channel at a time. Its parameters are
//! [`ConvParams`](super::ConvParams), read as in `conv_f32.wgsl`.

pub(super) const SOURCE: &str = include_str!("conv_f32_block_narrow.wgsl");
