//! A convolution's front: the shape and geometry shared by every form, then the form that
//! fits the layer's weights — integer ([`conv_int`](super::conv_int), which picks depthwise
//! or Gemm when they apply) or float ([`conv_f32`](super::conv_f32)). A PReLU fused by the
//! graph walk runs in the convolution's epilogue.

use efq_shared::graph::{ConvAttrs, Weights};
use efq_shared::quant::ActQuant;

use crate::error::EngineError;
use crate::kernels::ConvParams;
use crate::model::plan::{Planner, Res, Val};

/// What every form of a convolution needs, gathered once by [`Planner::conv`].
pub(super) struct ConvLayer<'a> {
    pub(super) name: &'a str,
    pub(super) x: Val,
    pub(super) out_c: usize,
    /// Input and output channels per group.
    pub(super) in_per_group: usize,
    pub(super) out_per_group: usize,
    pub(super) groups: usize,
    pub(super) out_hw: (usize, usize),
    /// The geometry block with `c` and `group` left at zero: their meaning is the kernel's.
    pub(super) geometry: ConvParams,
    /// The fused PReLU's slopes (a dummy binding without one) and whether one slope serves
    /// every channel.
    pub(super) slopes: Res,
    pub(super) shared_slope: u32,
    /// The `PRELU` override constant.
    pub(super) prelu: (&'static str, u32),
    /// The `RELU` override constant of the float kernels (a fused ReLU).
    pub(super) relu: (&'static str, u32),
    /// A Gemm: the images of the batch are the pixels of one unbounded row.
    pub(super) images_as_pixels: bool,
}

impl ConvLayer<'_> {
    pub(super) fn out_pixels(&self) -> usize {
        self.out_hw.0 * self.out_hw.1
    }
}

impl Planner<'_> {
    /// A convolution (or, with `images_as_pixels`, a Gemm over a flattened input) with an
    /// optional fused PReLU or (float weights only) ReLU; `out_hw` is the output's spatial size from shape inference.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::model) fn conv(
        &mut self,
        name: &str,
        x: Val,
        weights: &Weights,
        bias: &[f32],
        attrs: &ConvAttrs,
        input_quant: Option<&ActQuant>,
        out_hw: (usize, usize),
        prelu: Option<&[f32]>,
        relu: bool,
        images_as_pixels: bool,
    ) -> Result<Val, EngineError> {
        let shape = weights.shape();
        let (o, cg, kh, kw) = match *shape {
            [o, i, kh, kw] => (o, i, kh, kw),
            [o, i] => (o, i, 1, 1),
            _ => unreachable!("checked by infer_shapes"),
        };
        let (oh, ow) = out_hw;
        let groups = attrs.group;
        let og = o / groups;
        let slopes = match prelu {
            Some(s) => self.param(&format!("{name}: slopes"), s)?,
            None => Res::Dummy,
        };
        let shared_slope = prelu.is_some_and(|s| s.len() == 1) as u32;
        let geometry = ConvParams {
            in_h: x.h as u32,
            in_w: x.w as u32,
            c: 0,
            group: 0,
            out_h: oh as u32,
            out_w: ow as u32,
            out_c: o as u32,
            out_per_group: og as u32,
            k_h: kh as u32,
            k_w: kw as u32,
            stride_y: attrs.stride[0] as u32,
            stride_x: attrs.stride[1] as u32,
            pad_top: attrs.pads[0] as u32,
            pad_left: attrs.pads[1] as u32,
            dil_y: attrs.dilation[0] as u32,
            dil_x: attrs.dilation[1] as u32,
            shared_slope,
            zero: 0,
            planar: 0,
            _pad: 0,
        };
        // With images as pixels, each image is one pixel of an unbounded row.
        const ROW: u32 = 1 << 30;
        let geometry = if images_as_pixels {
            ConvParams {
                in_h: 1,
                in_w: ROW,
                out_h: 1,
                out_w: ROW,
                ..geometry
            }
        } else {
            geometry
        };
        let layer = ConvLayer {
            name,
            x,
            out_c: o,
            in_per_group: cg,
            out_per_group: og,
            groups,
            out_hw,
            geometry,
            slopes,
            shared_slope,
            prelu: ("PRELU", prelu.is_some() as u32),
            relu: ("RELU", relu as u32),
            images_as_pixels,
        };
        let out = match (weights, input_quant) {
            (Weights::Quant(q), Some(aq)) => {
                debug_assert!(!relu, "a ReLU is fused only into float convolutions");
                self.conv_int(&layer, q, aq, bias)?
            }
            (Weights::Float(w), None) => self.conv_f32(&layer, w, bias)?,
            (Weights::Quant(_), None) => {
                return Err(EngineError::Unsupported(format!(
                    "layer '{name}' has quantized weights but no input quantization"
                )));
            }
            (Weights::Float(_), Some(_)) => {
                return Err(EngineError::Unsupported(format!(
                    "layer '{name}' quantizes its input but keeps float weights (fake-quantized \
                     float layers are a training-time state; export the student first)"
                )));
            }
        };
        Ok(Val {
            buf: out,
            c: o,
            h: oh,
            w: ow,
        })
    }
}

/// Output channels per invocation: the largest of 8, 4, 1 that divides a group's outputs (a
/// tile never straddles two groups, which read different input channels).
pub(super) fn channel_tile(out_per_group: usize) -> usize {
    [8, 4]
        .into_iter()
        .find(|t| out_per_group.is_multiple_of(*t))
        .unwrap_or(1)
}
