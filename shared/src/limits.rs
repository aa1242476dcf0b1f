//! What a model may declare. Model files come from strangers, so every size a file states —
//! channels, kernels, strides, padding, upsampling, the activations they imply — is checked
//! against these limits by [`Graph::infer_shapes`](crate::graph::Graph::infer_shapes) before
//! anything is allocated. Every loader (the packed format, both ONNX importers) ends in that
//! check, so the CPU backend and the oracle, libtorch, the engine and the browser refuse the
//! same files.
//!
//! The limits are generous for face models: the largest InsightFace recognizer (iresnet200 at
//! 112×112, ~24 GMAC) and SCRFD at 1,280×1,280 fit with room to spare, while a file that would
//! take gigabytes or hours for one image is refused with the node, the field and the limit.

use crate::Error;

/// Longest side of the input image (a detector's canvas; a recognizer's is far smaller).
pub const MAX_INPUT_SIDE: usize = 4096;
/// Channels of any activation, and output channels of any layer.
pub const MAX_CHANNELS: usize = 16_384;
/// Features of a fully-connected layer's input or output.
pub const MAX_FEATURES: usize = 1 << 24;
/// Kernel height and width of a convolution. Large because a global depthwise convolution
/// (MobileFaceNet's head) spans the whole last feature map: 7×7 at 112×112, 28×28 in the
/// test suite's toy network.
pub const MAX_KERNEL: usize = 64;
/// Convolution stride, per axis.
pub const MAX_STRIDE: usize = 16;
/// Convolution dilation, per axis.
pub const MAX_DILATION: usize = 16;
/// Zero padding on one side of a convolution.
pub const MAX_PAD: usize = 64;
/// Nearest-neighbour upsampling factor.
pub const MAX_UPSAMPLE: usize = 16;
/// Height or width of any activation.
pub const MAX_SIDE: usize = 8192;
/// Values in one activation of one image (512 MiB as f32).
pub const MAX_VALUE_ELEMENTS: usize = 1 << 27;
/// Bytes of all activations of one image together, as f32 (what a backend that kept every
/// value would hold).
pub const MAX_ACTIVATION_BYTES: u64 = 2 << 30;
/// Multiply-accumulates of one forward pass of one image.
pub const MAX_MACS: u64 = 200_000_000_000;
/// Nodes in a graph.
pub const MAX_NODES: usize = 10_000;
/// Values in one parameter tensor (weights of one layer).
pub const MAX_PARAMETER_ELEMENTS: usize = 1 << 28;

/// What a face recognizer looks like: one `[3, H, W]` image in, one vector of
/// [`MIN_EMBEDDING`]..=[`MAX_EMBEDDING`] values out.
pub const MIN_EMBEDDING: usize = 64;
pub const MAX_EMBEDDING: usize = 4096;
/// Smallest and largest side of a recognizer's input (InsightFace's is 112).
pub const MIN_RECOGNIZER_SIDE: usize = 16;
pub const MAX_RECOGNIZER_SIDE: usize = 1024;

/// `value <= limit`, or an error naming the field, its value and the limit.
pub fn at_most(field: &str, value: usize, limit: usize) -> Result<(), String> {
    if value > limit {
        return Err(format!("{field} {value} exceeds the limit of {limit}"));
    }
    Ok(())
}

/// `1 <= value <= limit`.
pub fn in_range(field: &str, value: usize, limit: usize) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{field} is 0; it must be at least 1"));
    }
    at_most(field, value, limit)
}

/// The product of `dims`, or `None` when it overflows `usize`.
pub fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Checks that a graph's input and output are those of a face recognizer: an image of
/// 3 channels and a plausible size in, a 1-D embedding of a plausible width out. Returns the
/// embedding width.
pub fn check_recognizer(input_shape: [usize; 3], output_shape: &[usize]) -> Result<usize, Error> {
    let [c, h, w] = input_shape;
    let bad = |m: String| Error::Graph(format!("not a face recognizer: {m}"));
    if c != 3 {
        return Err(bad(format!(
            "its input has {c} channels; a recognizer takes a 3-channel image"
        )));
    }
    for (side, v) in [("height", h), ("width", w)] {
        if !(MIN_RECOGNIZER_SIDE..=MAX_RECOGNIZER_SIDE).contains(&v) {
            return Err(bad(format!(
                "input {side} {v} is outside {MIN_RECOGNIZER_SIDE}..={MAX_RECOGNIZER_SIDE}"
            )));
        }
    }
    match output_shape {
        [d] if (MIN_EMBEDDING..=MAX_EMBEDDING).contains(d) => Ok(*d),
        [d] => Err(bad(format!(
            "its output has {d} values; an embedding has {MIN_EMBEDDING}..={MAX_EMBEDDING}"
        ))),
        s => Err(bad(format!(
            "its output has shape {s:?}; an embedding is one vector per image"
        ))),
    }
}
