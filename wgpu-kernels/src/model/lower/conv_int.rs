//! The integer convolution (`conv_int.wgsl`) and the choice among the integer forms: every one
//! quantizes its input to packed 4×i8 words, uploads its packed weights, multipliers and bias,
//! then dispatches the depthwise kernel, the Gemm kernel or the general implicit GEMM.

use efq_shared::quant::{ActQuant, QuantWeights};

use super::conv::{ConvLayer, channel_tile};
use crate::error::EngineError;
use crate::kernels::{ConvParams, Kernel, PipelineKey};
use crate::model::plan::{Planner, Res};
use crate::weights::{pack_conv, pack_depthwise, pack_gemm, words_for};

/// The packed weights, multipliers and bias of an integer layer, as bound by every integer
/// kernel (bindings 1, 3 and 4; the packed input is binding 2).
pub(super) struct IntParams {
    pub(super) weights: Res,
    pub(super) mult: Res,
    pub(super) bias: Res,
    /// `W_BITS`: the weights' bit-width.
    pub(super) bits: (&'static str, u32),
}

impl Planner<'_> {
    /// A layer with quantized weights and input; returns the output buffer.
    pub(super) fn conv_int(
        &mut self,
        layer: &ConvLayer,
        q: &QuantWeights,
        aq: &ActQuant,
        bias: &[f32],
    ) -> Result<usize, EngineError> {
        let (x, name) = (layer.x, layer.name);
        let (cg, og, groups) = (layer.in_per_group, layer.out_per_group, layer.groups);
        // The epilogue's multiplier folds the input's scale into each channel's weight scale.
        let mult: Vec<f32> = q.scales.iter().map(|s| aq.scale * s).collect();
        // Depthwise, or narrow groups whose four-channel words never straddle a group.
        let depthwise = cg == og && matches!(cg, 1 | 2 | 4) && groups > 1;
        let (xq, wq) = if depthwise {
            (self.quantize(x, aq, x.c, 1)?, pack_depthwise(q))
        } else if layer.images_as_pixels {
            (self.quantize(x, aq, cg, groups)?, pack_gemm(q))
        } else {
            (self.quantize(x, aq, cg, groups)?, pack_conv(q))
        };
        let params = IntParams {
            weights: self.param(&format!("{name}: packed weights"), &wq)?,
            mult: self.param(&format!("{name}: multipliers"), &mult)?,
            bias: self.param(&format!("{name}: bias"), bias)?,
            bits: ("W_BITS", q.bits as u32),
        };
        let out = self.alloc(layer.out_c * layer.out_pixels());
        if depthwise {
            self.conv_depthwise(layer, &params, xq, out)?;
        } else if layer.images_as_pixels {
            self.gemm_int(layer, &params, xq, out)?;
        } else {
            self.conv_int_general(layer, &params, xq, out)?;
        }
        self.release(xq);
        Ok(out)
    }

    /// The implicit GEMM: a tile of output channels × four output pixels per invocation.
    fn conv_int_general(
        &mut self,
        layer: &ConvLayer,
        params: &IntParams,
        xq: usize,
        out: usize,
    ) -> Result<(), EngineError> {
        let words_per_group = words_for(layer.in_per_group);
        let tile_o = channel_tile(layer.out_per_group);
        let tile_p = 4usize;
        let u = self.uniform(&ConvParams {
            c: (layer.groups * words_per_group) as u32,
            group: words_per_group as u32,
            ..layer.geometry
        });
        let grid = self.check_grid(
            layer.name,
            [
                layer.out_pixels().div_ceil(tile_p).div_ceil(64) as u32,
                layer.out_c.div_ceil(tile_o) as u32,
            ],
        )?;
        self.push(
            PipelineKey {
                kernel: Kernel::ConvInt,
                constants: vec![
                    params.bits,
                    ("TILE_O", tile_o as u32),
                    layer.prelu,
                    ("FLOAT_DOT", self.gpu.float_dot() as u32),
                    ("TILE_P", tile_p as u32),
                ],
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
