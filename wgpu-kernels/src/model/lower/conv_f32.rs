//! The float convolution of unquantized models: weights in OHWI, a channel × pixel register
//! tiling with the channel tile uniform per workgroup. Three forms: a depthwise 3×3 over
//! channels in words of four (`conv_dw_f32.wgsl`), the tiled convolution reading the input in
//! words of four channels when each group's channels come in fours (`conv_f32_vec4.wgsl`), and
//! the general one (`conv_f32.wgsl`), where a float Gemm runs too, its images as the pixel
//! axis.

use efq_shared::graph::Tensor;

use super::conv::{ConvLayer, channel_tile};
use crate::error::EngineError;
use crate::kernels::{ConvParams, DepthwiseF32Params, Kernel, PipelineKey};
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
        let g = &layer.geometry;
        let depthwise_3x3 = layer.in_per_group == 1
            && layer.out_per_group == 1
            && layer.out_c.is_multiple_of(4)
            && !layer.images_as_pixels
            && (g.k_h, g.k_w, g.dil_y, g.dil_x) == (3, 3, 1, 1)
            && g.stride_y == g.stride_x
            && matches!(g.stride_y, 1 | 2);
        if depthwise_3x3 {
            return self.conv_dw_f32(layer, w, bias);
        }
        let name = layer.name;
        let wf = self.param(&format!("{name}: weights"), &float_ohwi(w))?;
        let bias = self.param(&format!("{name}: bias"), bias)?;
        let out = self.alloc(layer.out_c * layer.out_pixels());
        let tile_o = channel_tile(layer.out_per_group);
        // Words of four channels never straddle a group when a group's channels come in fours.
        let vec4 = layer.in_per_group.is_multiple_of(4) && !layer.images_as_pixels;
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
        let key = if vec4 {
            PipelineKey {
                kernel: Kernel::ConvF32Vec4,
                constants: vec![("TILE_O", tile_o as u32), layer.prelu, layer.relu],
            }
        } else {
            PipelineKey {
                kernel: Kernel::ConvF32,
                constants: vec![
                    ("TILE_O", tile_o as u32),
                    layer.prelu,
                    layer.relu,
                    ("IMAGES_AS_PIXELS", layer.images_as_pixels as u32),
                ],
            }
        };
        self.push(
            key,
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

    /// The depthwise 3×3 layer: a strip of four output pixels × four channels per invocation.
    fn conv_dw_f32(
        &mut self,
        layer: &ConvLayer,
        w: &Tensor,
        bias: &[f32],
    ) -> Result<usize, EngineError> {
        let (name, g) = (layer.name, &layer.geometry);
        let (oh, ow) = layer.out_hw;
        let words = layer.out_c / 4;
        // [channel word][tap][channel in the word]: the word's nine taps as vec4s.
        let mut wd = vec![0f32; w.data.len()];
        for c in 0..layer.out_c {
            for tap in 0..9 {
                wd[((c / 4) * 9 + tap) * 4 + c % 4] = w.data[c * 9 + tap];
            }
        }
        let wf = self.param(&format!("{name}: weights"), &wd)?;
        let bias = self.param(&format!("{name}: bias"), bias)?;
        let out = self.alloc(layer.out_c * layer.out_pixels());
        let strips = ow.div_ceil(4);
        let u = self.uniform(&DepthwiseF32Params {
            in_h: layer.x.h as u32,
            in_w: layer.x.w as u32,
            words: words as u32,
            strips: strips as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            shared_slope: layer.shared_slope,
            _pad: [0; 3],
        });
        let grid = self.check_grid(name, [(oh * strips).div_ceil(64) as u32, words as u32])?;
        self.push(
            PipelineKey {
                kernel: Kernel::ConvDepthwiseF32,
                constants: vec![layer.prelu, layer.relu, ("STRIDE", g.stride_y)],
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
        Ok(out)
    }
}
