//! Gemm (a fully-connected layer): a 1×1 convolution whose pixels are the images of the batch.
//! Its input, in Flatten's order (see `layout`), is read as one vector per image; an integer
//! Gemm runs `gemm_int.wgsl`, a float one `conv_f32.wgsl` with images as pixels.

use efq_shared::graph::{ConvAttrs, Weights};
use efq_shared::quant::ActQuant;

use super::conv::ConvLayer;
use super::conv_int::IntParams;
use crate::error::EngineError;
use crate::kernels::{GemmParams, Kernel, PipelineKey};
use crate::model::plan::{BatchAxis, Planner, Res, Val};
use crate::weights::words_for;

impl Planner<'_> {
    /// A Gemm node over `x`, read as one vector per image, with an optional fused PReLU.
    pub(in crate::model) fn gemm(
        &mut self,
        name: &str,
        x: Val,
        weights: &Weights,
        bias: &[f32],
        input_quant: Option<&ActQuant>,
        prelu: Option<&[f32]>,
    ) -> Result<Val, EngineError> {
        let flat = Val {
            c: x.per_image(),
            h: 1,
            w: 1,
            ..x
        };
        self.conv(
            name,
            flat,
            weights,
            bias,
            &ConvAttrs::default(),
            input_quant,
            (1, 1),
            prelu,
            false,
            true,
        )
    }

    /// The integer Gemm (groups = 1): one output channel per lane, images in a loop, four
    /// images per workgroup along y.
    pub(super) fn gemm_int(
        &mut self,
        layer: &ConvLayer,
        params: &IntParams,
        xq: usize,
        out: usize,
    ) -> Result<(), EngineError> {
        let o = layer.out_c;
        let u = self.uniform(&GemmParams {
            in_words: words_for(layer.in_per_group) as u32,
            out_c: o as u32,
            shared_slope: layer.shared_slope,
            zero: 0,
        });
        let grid = self.check_grid(layer.name, [o.div_ceil(64) as u32, 1])?;
        self.push(
            PipelineKey {
                kernel: Kernel::GemmInt,
                constants: vec![params.bits, layer.prelu],
            },
            vec![
                u,
                params.weights,
                Res::Pool(xq),
                params.mult,
                params.bias,
                layer.slopes,
                Res::Pool(out),
                Res::Run,
            ],
            grid,
        );
        self.steps.last_mut().expect("pushed").batch = BatchAxis::Y { tile: 4 };
        Ok(())
    }
}
