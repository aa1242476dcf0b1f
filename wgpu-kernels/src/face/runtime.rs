//! Where the pipeline's networks run.

use crate::Gpu;

/// The engine on a GPU, or the CPU backend (`efq_shared::cpu`) where no adapter exists or a
/// software one would be slower.
#[derive(Clone)]
pub enum Runtime {
    /// The engine's kernels on this device (the engine's own, or an app's through
    /// [`Gpu::from_device`]).
    Gpu(Gpu),
    /// The CPU backend: the integer path bit-exact with the oracle, the float path through
    /// im2col and a tuned GEMM.
    Cpu,
}

impl Runtime {
    /// `"wgpu on <adapter>"` or `"cpu"`.
    pub fn describe(&self) -> String {
        match self {
            Runtime::Gpu(g) => format!("wgpu on {}", g.adapter()),
            Runtime::Cpu => "cpu".into(),
        }
    }

    /// The device, on the GPU.
    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Runtime::Gpu(g) => Some(g),
            Runtime::Cpu => None,
        }
    }
}
