//! Layout conversions (`layout.wgsl`) between the engine's NHWC activations and the outside
//! world: the network input, normalised from RGB bytes or NCHW floats; Flatten, whose ONNX
//! order is NCHW; and NCHW copies of the values read back.

use efq_shared::format::Preprocessing;

use crate::error::EngineError;
use crate::kernels::{Kernel, LayoutParams, PipelineKey, grid_1d};
use crate::model::plan::{BatchAxis, Planner, Res, StepDesc, Val};

impl Planner<'_> {
    /// The first dispatch of a pass: the uploaded images (`Kernel::FromRgb8` or
    /// `Kernel::FromNchw`) normalised into `input`, NHWC or, where the first layer reads it so
    /// (`planar`, RGB bytes only), NCHW. Kept out of the body, which either entry precedes.
    pub(in crate::model) fn entry(
        &mut self,
        kernel: Kernel,
        input: Val,
        pre: &Preprocessing,
        planar: bool,
    ) -> Result<StepDesc, EngineError> {
        let u = self.uniform(&LayoutParams {
            pixels: (input.h * input.w) as u32,
            channels: input.c as u32,
            bgr: pre.color.eq_ignore_ascii_case("BGR") as u32,
            first: 0,
            mean: [pre.mean[0], pre.mean[1], pre.mean[2], 0.0],
            inv_std: [1.0 / pre.std[0], 1.0 / pre.std[1], 1.0 / pre.std[2], 1.0],
            src_channels: input.c as u32,
            planar: planar as u32,
            _pad: [0; 2],
        });
        // `from_nchw` moves one pixel's channels per invocation, `from_rgb8` one value.
        let invocations = match kernel {
            Kernel::FromNchw => input.h * input.w,
            _ => input.per_image(),
        };
        Ok(StepDesc {
            label: "input".into(),
            key: PipelineKey {
                kernel,
                constants: vec![],
            },
            resources: vec![u, Res::Upload, Res::Pool(input.buf)],
            grid: self.check_grid("input", grid_1d(invocations as u64, self.max_dim))?,
            batch: BatchAxis::Z,
        })
    }

    /// ONNX's Flatten: NCHW order, one vector per image.
    pub(in crate::model) fn flatten(&mut self, x: Val) -> Result<Val, EngineError> {
        if x.h * x.w == 1 {
            // NHWC and NCHW agree without a spatial extent: the output shares the input's
            // buffer, which then has one more reader to wait for.
            self.pool_refs[x.buf] += 1;
            Ok(x)
        } else {
            let out = self.nchw_copy("flatten", x)?;
            Ok(Val {
                buf: out,
                c: x.per_image(),
                h: 1,
                w: 1,
            })
        }
    }

    /// NHWC `x` → a new NCHW buffer (ONNX's Flatten order, or a value read back as NCHW).
    pub(in crate::model) fn nchw_copy(&mut self, what: &str, x: Val) -> Result<usize, EngineError> {
        self.nchw_slice_copy(what, x, 0, x.c)
    }

    /// An NCHW copy of channels `first`…`first + x.c` of `x.buf`, whose pixels hold
    /// `src_channels` (outputs computed as one convolution, see `plan`).
    pub(in crate::model) fn nchw_slice_copy(
        &mut self,
        what: &str,
        x: Val,
        first: usize,
        src_channels: usize,
    ) -> Result<usize, EngineError> {
        let u = self.uniform(&LayoutParams {
            pixels: (x.h * x.w) as u32,
            channels: x.c as u32,
            bgr: 0,
            first: first as u32,
            mean: [0.0; 4],
            inv_std: [1.0; 4],
            src_channels: src_channels as u32,
            planar: 0,
            _pad: [0; 2],
        });
        let out = self.alloc(x.per_image());
        let grid = self.check_grid(what, grid_1d(x.per_image() as u64, self.max_dim))?;
        self.push(
            PipelineKey {
                kernel: Kernel::ToNchw,
                constants: vec![],
            },
            vec![u, Res::Pool(x.buf), Res::Pool(out)],
            grid,
        );
        Ok(out)
    }
}
