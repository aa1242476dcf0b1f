//! Quantization of activations (`quantize.wgsl`): a quantized layer's f32 NHWC input packed to
//! 4×i8 words just before it, at the scale the layer carries (the scale belongs to the
//! consumer, so a value read by two layers is packed once for each).

use efq_shared::quant::ActQuant;

use crate::error::EngineError;
use crate::kernels::{Kernel, PipelineKey, QuantizeParams, grid_1d};
use crate::model::plan::{Planner, Res, Val};
use crate::weights::words_for;

impl Planner<'_> {
    /// Packs `x` into 4×i8 words for a quantized consumer, `groups` groups of
    /// `group_channels` channels each starting a new word; returns the buffer.
    pub(super) fn quantize(
        &mut self,
        x: Val,
        aq: &ActQuant,
        group_channels: usize,
        groups: usize,
    ) -> Result<usize, EngineError> {
        let words_per_group = words_for(group_channels);
        let words_per_pixel = groups * words_per_group;
        let pixels = x.h * x.w;
        let u = self.uniform(&QuantizeParams {
            pixels: pixels as u32,
            channels: x.c as u32,
            group_channels: group_channels as u32,
            words_per_group: words_per_group as u32,
            words_per_pixel: words_per_pixel as u32,
            lo: aq.levels()[0] as f32,
            hi: aq.levels()[1] as f32,
            inv_scale: aq.inv_scale(),
        });
        let out = self.alloc(pixels * words_per_pixel);
        let grid = self.check_grid(
            "quantize",
            grid_1d((pixels * words_per_pixel) as u64, self.max_dim),
        )?;
        self.push(
            PipelineKey {
                kernel: Kernel::Quantize,
                constants: vec![],
            },
            vec![u, Res::Pool(x.buf), Res::Pool(out)],
            grid,
        );
        Ok(out)
    }
}
