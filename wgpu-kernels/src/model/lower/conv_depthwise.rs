//! Depthwise and narrow grouped integer convolution (`conv_dw_int.wgsl`): groups of 1, 2 or 4
//! channels, so that a packed word never straddles a group and each invocation works on one
//! output word of four channels.

use super::conv::ConvLayer;
use super::conv_int::IntParams;
use crate::error::EngineError;
use crate::kernels::{DepthwiseParams, Kernel, PipelineKey};
use crate::model::plan::{Planner, Res};
use crate::weights::words_for;

impl Planner<'_> {
    /// Dispatches the depthwise kernel on the packed input `xq`, writing `out`.
    pub(super) fn conv_depthwise(
        &mut self,
        layer: &ConvLayer,
        params: &IntParams,
        xq: usize,
        out: usize,
    ) -> Result<(), EngineError> {
        let (x, g, o) = (layer.x, &layer.geometry, layer.out_c);
        let (oh, ow) = layer.out_hw;
        let words = words_for(o);
        let u = self.uniform(&DepthwiseParams {
            in_h: x.h as u32,
            in_w: x.w as u32,
            channels: o as u32,
            words: words as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            k_h: g.k_h,
            k_w: g.k_w,
            stride_y: g.stride_y,
            stride_x: g.stride_x,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            dil_y: g.dil_y,
            dil_x: g.dil_x,
            shared_slope: layer.shared_slope,
            zero: 0,
        });
        let grid = self.check_grid(
            layer.name,
            [
                layer.out_pixels().div_ceil(4).div_ceil(64) as u32,
                words as u32,
            ],
        )?;
        self.push(
            PipelineKey {
                kernel: Kernel::ConvDepthwiseInt,
                constants: vec![params.bits, layer.prelu, ("CG", layer.in_per_group as u32)],
            },
            vec![
                u,
                params.weights,
                Res::Pool(xq),
                params.mult,
                params.bias,
                layer.slopes,
                Res::Pool(out),
            ],
            grid,
        );
        Ok(())
    }
}
