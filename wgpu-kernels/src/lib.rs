//! The wgpu engine (issue #4). Until its kernels land it exposes the shared CPU reference
//! executor, which is also its fallback when no GPU adapter exists.
pub use efq_shared::reference;
