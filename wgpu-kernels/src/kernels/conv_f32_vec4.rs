//! `conv_f32_vec4.wgsl`: the float convolution for input channels per group in multiples of
//! four, reading the input in words of four channels. Its parameters are
//! [`ConvParams`](super::ConvParams), read as in `conv_f32.wgsl`.

pub(super) const SOURCE: &str = concat!(
    include_str!("conv_f32_params.wgsl"),
    include_str!("conv_f32_vec4.wgsl")
);
