//! Running a compiled model: the public ways in (embeddings, raw output, requested values,
//! verification, and their blocking forms for native code), the split of a large batch into
//! submissions, and one submission with its read-back.

use super::plan::Step;
use super::{GpuModel, Images, Verification};
use crate::error::EngineError;

/// What one pass reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Embeddings,
    Raw,
    Values,
}

impl GpuModel {
    /// L2-normalised embeddings (`n × dim`) of `n` images.
    pub async fn embed(&self, images: Images<'_>, n: usize) -> Result<Vec<f32>, EngineError> {
        Ok(self.run(images, n, Read::Embeddings).await?.remove(0))
    }

    /// The network's raw output (`n × dim`), before normalisation: what the CPU backend's
    /// `forward` returns, for bit-exact comparisons.
    pub async fn forward(&self, images: Images<'_>, n: usize) -> Result<Vec<f32>, EngineError> {
        Ok(self.run(images, n, Read::Raw).await?.remove(0))
    }

    /// The values named at compile time ([`GpuModel::from_graph_with_outputs`]), each
    /// `n ×` its shape in NCHW order, as the CPU backend's `forward_values` returns them.
    pub async fn forward_values(
        &self,
        images: Images<'_>,
        n: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if self.outputs.is_empty() {
            return Err(EngineError::Input(
                "this model was compiled without extra outputs to read".into(),
            ));
        }
        self.run(images, n, Read::Values).await
    }

    /// Compares two RGB8 images (`H × W × 3` each).
    pub async fn verify(&self, a: &[u8], b: &[u8]) -> Result<Verification, EngineError> {
        let mut both = Vec::with_capacity(a.len() * 2);
        both.extend_from_slice(a);
        both.extend_from_slice(b);
        let e = self.embed(Images::Rgb8(&both), 2).await?;
        let dim = self.info.embedding_dim;
        let similarity: f32 = e[..dim].iter().zip(&e[dim..]).map(|(x, y)| x * y).sum();
        let threshold = self.info.threshold.as_ref().map(|t| t.cosine);
        Ok(Verification {
            similarity,
            threshold,
            same: threshold.map(|t| similarity >= t),
        })
    }

    async fn run(
        &self,
        images: Images<'_>,
        n: usize,
        read: Read,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.gpu.check_alive()?;
        let [c, h, w] = self.info.input_shape;
        let per_image = c * h * w;
        let got = match images {
            Images::Rgb8(b) => b.len(),
            Images::Nchw(f) => f.len(),
        };
        if let Images::Rgb8(_) = images
            && c != 3
        {
            return Err(EngineError::Input(format!(
                "RGB images given to a model with {c} input channels"
            )));
        }
        if n == 0 || got != n * per_image {
            return Err(EngineError::Input(format!(
                "expected {n} image(s) of {h}×{w}×{c} ({} values), got {got} values",
                n * per_image
            )));
        }
        let sizes: Vec<usize> = match read {
            Read::Values => self.outputs.iter().map(|(_, k)| *k).collect(),
            _ => vec![self.info.embedding_dim],
        };
        let mut out: Vec<Vec<f32>> = sizes.iter().map(|k| Vec::with_capacity(n * k)).collect();
        let _turn = self.busy.lock().await;
        for start in (0..n).step_by(self.info.max_batch) {
            let b = self.info.max_batch.min(n - start);
            let chunk = match images {
                Images::Rgb8(bytes) => {
                    let mut v = bytes[start * per_image..(start + b) * per_image].to_vec();
                    v.resize(v.len().next_multiple_of(4), 0);
                    v
                }
                Images::Nchw(f) => {
                    bytemuck::cast_slice(&f[start * per_image..(start + b) * per_image]).to_vec()
                }
            };
            let (entry, target) = match images {
                Images::Rgb8(_) => (Some(&self.entry_rgb8), &self.upload),
                Images::Nchw(_) => (self.entry_nchw.as_ref(), &self.nchw_target),
            };
            let flat = self.submit(&chunk, target, entry, b, read).await?;
            let mut at = 0;
            for (o, k) in out.iter_mut().zip(&sizes) {
                o.extend_from_slice(&flat[at..at + b * k]);
                at += b * k;
            }
        }
        Ok(out)
    }

    /// One batch, one submission: upload (into `target`), the entry, every layer,
    /// normalisation, read-back.
    async fn submit(
        &self,
        upload: &[u8],
        target: &wgpu::Buffer,
        entry: Option<&Step>,
        b: usize,
        read: Read,
    ) -> Result<Vec<f32>, EngineError> {
        let device = &self.gpu.device;
        let scopes = self.gpu.error_scopes();
        self.gpu.queue.write_buffer(target, 0, upload);
        self.gpu.queue.write_buffer(
            &self.run_uniform,
            0,
            bytemuck::bytes_of(&[b as u32, 0, 0, 0]),
        );
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("embed"),
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&self.info.name),
                timestamp_writes: None,
            });
            let tail: &[Step] = match read {
                Read::Embeddings => std::slice::from_ref(&self.normalize),
                Read::Raw => &[],
                Read::Values => &self.output_steps,
            };
            for s in entry.into_iter().chain(&self.body).chain(tail) {
                s.dispatch(&mut pass, b);
            }
        }
        let dim = self.info.embedding_dim;
        let sources: Vec<(&wgpu::Buffer, usize)> = match read {
            Read::Embeddings => vec![(&self.embeddings, dim)],
            Read::Raw => vec![(&self.raw_output, dim)],
            Read::Values => self.outputs.iter().map(|(buf, k)| (buf, *k)).collect(),
        };
        let mut bytes = 0u64;
        for (buf, k) in sources {
            let size = (b * k * 4) as u64;
            encoder.copy_buffer_to_buffer(buf, 0, &self.readback, bytes, size);
            bytes += size;
        }
        let during = format!("at batch {b}");
        self.gpu
            .submit_and_read(encoder, scopes, &self.readback, bytes, "results", &during)
            .await
    }

    /// Blocking [`GpuModel::embed`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embed_blocking(&self, images: Images<'_>, n: usize) -> Result<Vec<f32>, EngineError> {
        pollster::block_on(self.embed(images, n))
    }

    /// Blocking [`GpuModel::forward`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&self, images: Images<'_>, n: usize) -> Result<Vec<f32>, EngineError> {
        pollster::block_on(self.forward(images, n))
    }

    /// Blocking [`GpuModel::forward_values`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_values_blocking(
        &self,
        images: Images<'_>,
        n: usize,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        pollster::block_on(self.forward_values(images, n))
    }

    /// Blocking [`GpuModel::verify`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify_blocking(&self, a: &[u8], b: &[u8]) -> Result<Verification, EngineError> {
        pollster::block_on(self.verify(a, b))
    }
}
