//! EfQuantFace's engine: runs packed low-bit face-recognition models with WGSL integer kernels
//! through wgpu — natively (Vulkan, Metal, DX12, GL) and in the browser (WebGPU).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
//! let gpu = request_blocking(&GpuOptions::default())?;
//! let model = GpuModel::from_bytes(&gpu, &std::fs::read("student.efq")?)?;
//! let (a, b) = (vec![128u8; 112 * 112 * 3], vec![64u8; 112 * 112 * 3]);
//! let v = model.verify_blocking(&a, &b)?;
//! println!("cosine {:.3}, same person: {:?}", v.similarity, v.same);
//! # Ok(()) }
//! ```
//!
//! The integer path is bit-exact with the oracle, `efq_shared::reference` (see
//! `docs/quantization.md`; `tests/kernels.rs` checks every kernel against it). The fast CPU
//! backend, `efq_shared::cpu`, equal to the oracle as well, is re-exported as the CPU fallback.
//!
//! 1:N search runs here too: [`GpuGallery`] uploads an `efq_shared::gallery::Gallery` once and
//! scores batches of probes against every enrolled face in one dispatch, ranking them as the
//! CPU gallery does.

#![warn(missing_docs)]

mod error;
pub mod face;
mod gallery;
mod gpu;
mod kernels;
mod model;
mod weights;

pub use efq_shared::cpu;
pub use error::EngineError;
pub use gallery::GpuGallery;
#[cfg(not(target_arch = "wasm32"))]
pub use gpu::request_blocking;
pub use gpu::{AdapterSummary, Dot4, Gpu, GpuOptions};
pub use model::{DEFAULT_MAX_BATCH, GpuModel, Images, ModelInfo, ProfileRow, Verification};
