//! Nearest-neighbour upsampling by a whole factor (`upsample.wgsl`): the FPN top-down path of
//! a detector.

use crate::error::EngineError;
use crate::kernels::{Kernel, PipelineKey, UpsampleParams, grid_1d};
use crate::model::plan::{Planner, Res, Val};

impl Planner<'_> {
    /// `x` repeated `factor` times along both spatial axes.
    pub(in crate::model) fn upsample(&mut self, x: Val, factor: usize) -> Result<Val, EngineError> {
        let f = factor;
        let y = Val {
            buf: self.alloc(x.per_image() * f * f),
            c: x.c,
            h: x.h * f,
            w: x.w * f,
        };
        let u = self.uniform(&UpsampleParams {
            out_w: y.w as u32,
            out_h: y.h as u32,
            channels: y.c as u32,
            factor: f as u32,
        });
        let grid = self.check_grid("upsample", grid_1d(y.per_image() as u64, self.max_dim))?;
        self.push(
            PipelineKey {
                kernel: Kernel::Upsample,
                constants: vec![],
            },
            vec![u, Res::Pool(x.buf), Res::Pool(y.buf)],
            grid,
        );
        Ok(y)
    }
}
