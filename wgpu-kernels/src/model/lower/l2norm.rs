//! The embeddings' L2 normalisation (`l2norm.wgsl`), one workgroup per image. It runs only
//! when embeddings are asked for, so it is kept out of the body like the entry dispatches.

use crate::kernels::{Kernel, L2NormParams, PipelineKey};
use crate::model::plan::{BatchAxis, Planner, Res, StepDesc, Val};

impl Planner<'_> {
    /// Normalises the network's output `out` into the embeddings buffer.
    pub(in crate::model) fn l2norm(&mut self, out: Val) -> StepDesc {
        let u = self.uniform(&L2NormParams {
            dim: out.per_image() as u32,
            _pad: [0; 3],
        });
        StepDesc {
            label: "l2norm".into(),
            key: PipelineKey {
                kernel: Kernel::L2Norm,
                constants: vec![],
            },
            resources: vec![u, Res::Pool(out.buf), Res::Embeddings],
            grid: [1, 1],
            batch: BatchAxis::Z,
        }
    }
}
