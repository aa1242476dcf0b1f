//! The float convolution of unquantized models (`conv_f32.wgsl`): weights in OHWI, the same
//! channel × pixel register tiling as the integer kernel. A float Gemm runs here too, its
//! images as the pixel axis.

use efq_shared::graph::Tensor;

use super::conv::{ConvLayer, channel_tile};
use crate::error::EngineError;
use crate::kernels::{ConvParams, Kernel, PipelineKey};
use crate::model::plan::{BatchAxis, Planner, Res};
use crate::weights::float_ohwi;

impl Planner<'_> {
    /// A layer with float weights and input; returns the output buffer.
    pub(super) fn conv_f32(
        &mut self,
        layer: &ConvLayer,
        w: &Tensor,
        bias: &[f32],
    ) -> Result<usize, EngineError> {
        let name = layer.name;
        let wf = self.param(&format!("{name}: weights"), &float_ohwi(w))?;
        let bias = self.param(&format!("{name}: bias"), bias)?;
        let out = self.alloc(layer.out_c * layer.out_pixels());
        let tile_o = channel_tile(layer.out_per_group);
        let u = self.uniform(&ConvParams {
            c: layer.x.c as u32,
            group: layer.in_per_group as u32,
            ..layer.geometry
        });
        let grid = self.check_grid(
            name,
            [
                layer.out_pixels().div_ceil(4).div_ceil(64) as u32,
                layer.out_c.div_ceil(tile_o) as u32,
            ],
        )?;
        let images_as_pixels = ("IMAGES_AS_PIXELS", layer.images_as_pixels as u32);
        self.push(
            PipelineKey {
                kernel: Kernel::ConvF32,
                constants: vec![("TILE_O", tile_o as u32), layer.prelu, images_as_pixels],
            },
            vec![
                u,
                wf,
                Res::Pool(layer.x.buf),
                bias,
                layer.slopes,
                Res::Pool(out),
                Res::Run,
            ],
            grid,
        );
        if layer.images_as_pixels {
            self.steps.last_mut().expect("pushed").batch = BatchAxis::X { tile: 4 };
        }
        Ok(out)
    }
}
