//! The elementwise float ops (`elementwise.wgsl`): BatchNorm kept as an affine, PReLU (where
//! the graph walk could not fuse it into a convolution), ReLU and the residual add. Each writes
//! a new buffer, one invocation per element.

use crate::error::EngineError;
use crate::kernels::{ElementwiseParams, Kernel, PipelineKey, grid_1d};
use crate::model::plan::{Planner, Res, Val};

impl Planner<'_> {
    /// `x · scale + shift`, per channel.
    pub(in crate::model) fn affine(
        &mut self,
        name: &str,
        x: Val,
        scale: &[f32],
        shift: &[f32],
    ) -> Result<Val, EngineError> {
        let s = self.param(&format!("{name}: scale"), scale)?;
        let t = self.param(&format!("{name}: shift"), shift)?;
        self.elementwise(Kernel::Affine, x, [s, t], false)
    }

    /// PReLU with one slope per channel, or a single slope for all.
    pub(in crate::model) fn prelu(
        &mut self,
        name: &str,
        x: Val,
        slope: &[f32],
    ) -> Result<Val, EngineError> {
        let s = self.param(&format!("{name}: slopes"), slope)?;
        self.elementwise(Kernel::Prelu, x, [s, Res::Dummy], slope.len() == 1)
    }

    pub(in crate::model) fn relu(&mut self, x: Val) -> Result<Val, EngineError> {
        self.elementwise(Kernel::Relu, x, [Res::Dummy, Res::Dummy], false)
    }

    /// The residual add `x + b` (same shape).
    pub(in crate::model) fn add(&mut self, x: Val, b: Val) -> Result<Val, EngineError> {
        self.elementwise(Kernel::Add, x, [Res::Pool(b.buf), Res::Dummy], false)
    }

    /// One elementwise dispatch: `x` and two operand bindings (dummies where unused).
    fn elementwise(
        &mut self,
        kernel: Kernel,
        x: Val,
        operands: [Res; 2],
        shared: bool,
    ) -> Result<Val, EngineError> {
        let count = x.per_image();
        let u = self.uniform(&ElementwiseParams {
            count: count as u32,
            channels: x.c as u32,
            shared_param: shared as u32,
            zero: 0,
        });
        let out = self.alloc(count);
        let grid = self.check_grid(kernel.entry_point(), grid_1d(count as u64, self.max_dim))?;
        self.push(
            PipelineKey {
                kernel,
                constants: vec![],
            },
            vec![
                u,
                Res::Pool(x.buf),
                operands[0],
                operands[1],
                Res::Pool(out),
            ],
            grid,
        );
        Ok(Val { buf: out, ..x })
    }
}
