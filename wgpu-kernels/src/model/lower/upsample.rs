//! Nearest-neighbour upsampling by a whole factor (`upsample.wgsl`): the FPN top-down path of
//! a detector; and, where an Add is its only reader, the two in one pass (`upsample_add.wgsl`).

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

    /// `a + upsample(x)` (`a` the full-resolution operand, channels in fours) in one pass.
    pub(in crate::model) fn upsample_add(
        &mut self,
        x: Val,
        factor: usize,
        a: Val,
    ) -> Result<Val, EngineError> {
        let y = Val {
            buf: self.alloc(a.per_image()),
            ..a
        };
        let u = self.uniform(&UpsampleParams {
            out_w: y.w as u32,
            out_h: y.h as u32,
            channels: y.c as u32,
            factor: factor as u32,
        });
        let words = (y.c / 4) as u32;
        let grid = self.check_grid("upsample + add", [words, (x.h * x.w).div_ceil(64) as u32])?;
        self.push(
            PipelineKey {
                kernel: Kernel::UpsampleAdd,
                constants: vec![],
            },
            vec![u, Res::Pool(x.buf), Res::Pool(y.buf), Res::Pool(a.buf)],
            grid,
        );
        Ok(y)
    }
}
