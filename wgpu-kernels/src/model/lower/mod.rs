//! The lowering of each op family to dispatches, one file each: the layout conversions (the
//! network input, Flatten, NCHW read-back), the quantization of activations, the convolution
//! in its forms (the front shared by all in `conv`, then integer, depthwise, Gemm and float),
//! the elementwise ops, upsampling, and the embeddings' L2 norm. Each file adds `impl Planner`
//! methods for the shader it drives, named after the op they lower.

mod conv;
mod conv_depthwise;
mod conv_f32;
mod conv_int;
mod elementwise;
mod gemm;
mod l2norm;
mod layout;
mod quantize;
mod upsample;
