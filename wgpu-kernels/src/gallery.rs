//! 1:N search on the GPU: a [`Gallery`]'s normalised rows uploaded once, each batch of probes
//! scored against all of them by one matrix product (`gallery_scores.wgsl`), the scores read
//! back and ranked on the CPU by the gallery's own top-k selection, so the GPU and CPU answers
//! differ only where float rounding reorders two near-equal scores.

use std::sync::Arc;

use efq_shared::gallery::{Gallery, Identification};
use wgpu::util::DeviceExt;

use crate::error::EngineError;
use crate::gpu::Gpu;
use crate::kernels::{
    GALLERY_MAX_PROBES, GALLERY_ROWS_PER_GROUP, GalleryScoresParams, Kernel, PipelineKey, pipeline,
};

/// Scores read back per submission at most. One probe against 2M faces is 8 MB; the cap keeps
/// the score and read-back buffers (and the CPU copy) of a large batch bounded, at the cost of
/// one more submission per 64 MiB of scores.
const MAX_SCORE_BYTES: u64 = 64 << 20;

/// Rows of the gallery in one storage buffer.
struct Part {
    buffer: wgpu::Buffer,
    rows: usize,
    first_row: usize,
}

/// A [`Gallery`] on the GPU: its rows uploaded once, probes scored by the `gallery_scores`
/// kernel, top k and the decision taken on the CPU exactly as [`Gallery::identify_batch`]
/// takes them.
///
/// A gallery larger than one storage binding allows is split over several buffers, one dispatch
/// each; a batch of probes whose scores would not fit one buffer is scored in chunks.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use efq_engine::{GpuGallery, GpuOptions, request_blocking};
/// use efq_shared::gallery::Gallery;
/// let gpu = request_blocking(&GpuOptions::default())?;
/// let mut gallery = Gallery::new(3, "demo", Some(0.3));
/// gallery.enroll("ada", &[1.0, 0.0, 0.0])?;
/// gallery.enroll("bob", &[0.0, 1.0, 0.0])?;
/// let on_gpu = GpuGallery::new(&gpu, &gallery)?;
/// // Two probes, the best two matches of each.
/// let ids = on_gpu.identify_blocking(&[0.9, 0.1, 0.0, 0.1, 0.9, 0.0], 2, 2)?;
/// assert_eq!(ids[0].identity.as_deref(), Some("ada"));
/// assert_eq!(ids[1].identity.as_deref(), Some("bob"));
/// # Ok(()) }
/// ```
pub struct GpuGallery {
    gpu: Gpu,
    /// Names, threshold and the CPU rows: the ranking and decision need the first two, and
    /// an app may fall back to the CPU search with it.
    gallery: Arc<Gallery>,
    parts: Vec<Part>,
    /// The largest buffer this gallery allocates (the device's binding limit unless lowered).
    max_buffer: u64,
}

impl GpuGallery {
    /// Uploads `gallery`'s rows (and keeps a copy of the gallery for the ranking; see
    /// [`GpuGallery::from_shared`] to share one instead).
    pub fn new(gpu: &Gpu, gallery: &Gallery) -> Result<GpuGallery, EngineError> {
        Self::from_shared(gpu, Arc::new(gallery.clone()))
    }

    /// Uploads the rows of a gallery the app keeps as well, without copying it on the CPU.
    pub fn from_shared(gpu: &Gpu, gallery: Arc<Gallery>) -> Result<GpuGallery, EngineError> {
        let limits = gpu.limits();
        let cap = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Self::with_max_buffer(gpu, gallery, cap)
    }

    /// As [`GpuGallery::from_shared`], but no buffer larger than `max_bytes` (at most the
    /// device's limit): to leave memory for other work on the device, or to test the split of a
    /// gallery over several buffers with a small one.
    pub fn with_max_buffer(
        gpu: &Gpu,
        gallery: Arc<Gallery>,
        max_bytes: u64,
    ) -> Result<GpuGallery, EngineError> {
        gpu.check_alive()?;
        let limits = gpu.limits();
        // The shader indexes in u32: 4 GiB per buffer keeps every element index in range.
        let max_buffer = max_bytes
            .min(limits.max_storage_buffer_binding_size)
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        let (n, dim) = (gallery.len(), gallery.dim);
        let what = format!("a gallery of {n} faces of {dim} dimensions");
        let row_bytes = (dim.max(1) * 4) as u64;
        // One probe's scores against every face must fit one buffer: the search cannot split
        // a probe's row of scores (it could, but 2M faces need only 8 MB).
        for (part, needed) in [
            ("one face", row_bytes),
            ("one probe's scores", n as u64 * 4),
        ] {
            if needed > max_buffer {
                return Err(EngineError::TooLarge {
                    what: format!("{what}: {part}"),
                    needed,
                    limit: max_buffer,
                });
            }
        }
        // Rows per buffer: what a binding holds and what one dispatch's grid reaches.
        let per_part = ((max_buffer / row_bytes) as usize).min(
            limits.max_compute_workgroups_per_dimension as usize * GALLERY_ROWS_PER_GROUP as usize,
        );
        let rows = gallery.embeddings();
        let parts = (0..n)
            .step_by(per_part.max(1))
            .map(|first_row| {
                let count = per_part.min(n - first_row);
                Part {
                    buffer: gpu
                        .device
                        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some("gallery rows"),
                            contents: bytemuck::cast_slice(
                                &rows[first_row * dim..(first_row + count) * dim],
                            ),
                            usage: wgpu::BufferUsages::STORAGE,
                        }),
                    rows: count,
                    first_row,
                }
            })
            .collect();
        Ok(GpuGallery {
            gpu: gpu.clone(),
            gallery,
            parts,
            max_buffer,
        })
    }

    /// The gallery searched (for its names, threshold, or the CPU search as a fallback).
    pub fn gallery(&self) -> &Gallery {
        &self.gallery
    }

    /// Storage buffers the rows were split over (1 unless the gallery exceeds one binding).
    pub fn buffers(&self) -> usize {
        self.parts.len()
    }

    /// The `k` best matches and the decision for each of `n_probes` probes (`probes`:
    /// `n_probes × dim`, normalised here as the CPU search normalises them). The answer is
    /// [`Gallery::identify_batch`]'s up to the order of scores that tie within float rounding.
    pub async fn identify(
        &self,
        probes: &[f32],
        n_probes: usize,
        k: usize,
    ) -> Result<Vec<Identification>, EngineError> {
        let g = &*self.gallery;
        let input = |e: efq_shared::Error| match e {
            efq_shared::Error::Input(m) => EngineError::Input(m),
            other => EngineError::Model(other),
        };
        let q = g.normalised_probes(probes, n_probes).map_err(input)?;
        let (n, dim) = (g.len(), g.dim);
        if n == 0 || n_probes == 0 {
            // Nothing to multiply: the CPU path's answer for no faces or no probes.
            return g
                .identify_from_scores(&[], n_probes, k)
                .map_err(EngineError::Model);
        }
        self.gpu.check_alive()?;
        // Probes per submission: their scores within one buffer (and MAX_SCORE_BYTES), the
        // probes themselves too.
        let per_chunk = ((self.max_buffer.min(MAX_SCORE_BYTES) / (n as u64 * 4)) as usize)
            .min((self.max_buffer / (dim as u64 * 4)) as usize)
            .max(1);
        let mut out = Vec::with_capacity(n_probes);
        for start in (0..n_probes).step_by(per_chunk) {
            let count = per_chunk.min(n_probes - start);
            let scores = self
                .scores(&q[start * dim..(start + count) * dim], count)
                .await?;
            out.extend(
                g.identify_from_scores(&scores, count, k)
                    .map_err(EngineError::Model)?,
            );
        }
        Ok(out)
    }

    /// Blocking [`GpuGallery::identify`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn identify_blocking(
        &self,
        probes: &[f32],
        n_probes: usize,
        k: usize,
    ) -> Result<Vec<Identification>, EngineError> {
        pollster::block_on(self.identify(probes, n_probes, k))
    }

    /// `count × len` cosines of normalised probes: one submission (a dispatch per part of the
    /// gallery, all writing into one score buffer) and its read-back.
    async fn scores(&self, q: &[f32], count: usize) -> Result<Vec<f32>, EngineError> {
        let (gpu, n, dim) = (&self.gpu, self.gallery.len(), self.gallery.dim);
        let device = &gpu.device;
        let bytes = (count * n * 4) as u64;
        let scopes = gpu.error_scopes();
        let probes = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("gallery probes"),
            contents: bytemuck::cast_slice(q),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let scores = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gallery scores"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gallery scores read-back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // Accumulators per workgroup: the fewest powers of two that cover the probes, so one
        // probe does not pay for sixteen (each choice is compiled once per device).
        let per_group = (count.min(GALLERY_MAX_PROBES as usize)).next_power_of_two() as u32;
        let p = pipeline(
            gpu,
            &PipelineKey {
                kernel: Kernel::GalleryScores,
                constants: vec![("PROBES", per_group)],
            },
        );
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gallery search"),
        });
        let groups: Vec<(wgpu::BindGroup, [u32; 2])> = self
            .parts
            .iter()
            .map(|part| {
                let params = GalleryScoresParams {
                    rows: part.rows as u32,
                    dim: dim as u32,
                    probes: count as u32,
                    stride: n as u32,
                    first_row: part.first_row as u32,
                    _pad: [0; 3],
                };
                let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("gallery params"),
                    contents: bytemuck::bytes_of(&params),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("gallery search"),
                    layout: &p.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: uniform.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: part.buffer.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: probes.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: scores.as_entire_binding(),
                        },
                    ],
                });
                let grid = [
                    (part.rows as u32).div_ceil(GALLERY_ROWS_PER_GROUP),
                    (count as u32).div_ceil(per_group),
                ];
                (bind, grid)
            })
            .collect();
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("gallery scores"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&p.pipeline);
            for (bind, [x, y]) in &groups {
                pass.set_bind_group(0, bind, &[]);
                pass.dispatch_workgroups(*x, *y, 1);
            }
        }
        encoder.copy_buffer_to_buffer(&scores, 0, &readback, 0, bytes);
        let during = format!("scoring {count} probes against {n} faces");
        gpu.submit_and_read(encoder, scopes, &readback, bytes, "scores", &during)
            .await
    }
}
