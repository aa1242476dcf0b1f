//! A complete plan made real on the device: the batch it can hold, activation buffers sized
//! for that batch, the uniform block, and a pipeline and bind group per planned dispatch.
//!
//! The batch is chosen last because every per-image buffer times the batch must fit one
//! binding, and the buffers' sizes are known only once the whole graph is planned.

use wgpu::util::DeviceExt;

use super::compile::Plan;
use super::plan::{Res, Step, StepDesc};
use super::{GpuModel, ModelInfo};
use crate::error::EngineError;
use crate::gpu::Gpu;
use crate::kernels::pipeline;

impl GpuModel {
    /// Allocates `plan`'s buffers for batches of up to `max_batch` images (fewer when the
    /// device's binding limit demands it) and binds every dispatch to them.
    pub(super) fn materialize(
        gpu: &Gpu,
        plan: Plan,
        mut info: ModelInfo,
        max_batch: usize,
    ) -> Result<GpuModel, EngineError> {
        let Plan {
            planner: mut pl,
            input,
            entry_rgb8,
            entry_nchw,
            body_len,
            output: out,
            normalize,
            output_slots,
        } = plan;
        let dim = out.per_image();

        // Batch size: every per-image buffer times the batch must fit one binding.
        let binding_limit = pl.binding_limit;
        let upload_per_image = (input.per_image() * 4) as u64;
        let largest = pl
            .pool
            .iter()
            .copied()
            .chain([upload_per_image, (dim * 4) as u64])
            .max()
            .unwrap_or(4);
        let fit = (binding_limit / largest) as usize;
        if fit == 0 {
            return Err(EngineError::TooLarge {
                what: "one image's largest activation buffer".into(),
                needed: largest,
                limit: binding_limit,
            });
        }
        let max_batch = max_batch.clamp(1, fit);
        let storage = |label: &str, bytes: u64, usage: wgpu::BufferUsages| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.next_multiple_of(4),
                usage,
                mapped_at_creation: false,
            })
        };
        // COPY_DST: NCHW floats are written straight into the input where the first layer
        // reads them as uploaded.
        let rw = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let pool: Vec<wgpu::Buffer> = pl
            .pool
            .iter()
            .map(|&b| storage("activations", b * max_batch as u64, rw))
            .collect();
        let upload = storage(
            "upload",
            upload_per_image * max_batch as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let embeddings = storage("embeddings", (dim * 4 * max_batch) as u64, rw);
        let values_per_image: usize = output_slots.iter().map(|(_, n)| n).sum();
        let readback = storage(
            "readback",
            (dim.max(values_per_image) * 4 * max_batch) as u64,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let dummy = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("unused binding"),
                contents: &[0u8; 16],
                usage: wgpu::BufferUsages::STORAGE,
            });
        if pl.uniforms.is_empty() {
            pl.uniforms.resize(16, 0);
        }
        let uniforms = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("parameters"),
                contents: &pl.uniforms,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let run_uniform = storage(
            "images per submission",
            16,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );

        let materialize = |d: &StepDesc| -> Step {
            let p = pipeline(gpu, &d.key);
            let entries: Vec<wgpu::BindGroupEntry> = d
                .resources
                .iter()
                .enumerate()
                .map(|(i, r)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: match *r {
                        Res::Uniform(offset, size) => {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &uniforms,
                                offset,
                                size: wgpu::BufferSize::new(size),
                            })
                        }
                        Res::Pool(b) => pool[b].as_entire_binding(),
                        Res::Param(b) => pl.params[b].as_entire_binding(),
                        Res::Upload => upload.as_entire_binding(),
                        Res::Embeddings => embeddings.as_entire_binding(),
                        Res::Dummy => dummy.as_entire_binding(),
                        Res::Run => run_uniform.as_entire_binding(),
                    },
                })
                .collect();
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.key.kernel.entry_point()),
                layout: &p.layout,
                entries: &entries,
            });
            Step {
                label: d.label.clone(),
                kernel: d.key.kernel,
                pipeline: p.pipeline,
                bind_group,
                grid: d.grid,
                batch: d.batch,
            }
        };
        let mut body: Vec<Step> = pl.steps.iter().map(materialize).collect();
        let output_steps = body.split_off(body_len);
        let entry_rgb8 = materialize(&entry_rgb8);
        let entry_nchw = entry_nchw.as_ref().map(materialize);
        let nchw_target = match entry_nchw {
            Some(_) => upload.clone(),
            None => pool[input.buf].clone(),
        };
        let normalize = materialize(&normalize);

        info.gpu_parameter_bytes = pl.param_bytes + pl.uniforms.len() as u64;
        info.gpu_activation_bytes =
            (pl.pool.iter().sum::<u64>() + upload_per_image + 2 * (dim * 4) as u64)
                * max_batch as u64;
        info.max_batch = max_batch;
        info.dispatches = body.len() + 2;
        let raw_output = pool[out.buf].clone();
        let outputs = output_slots
            .iter()
            .map(|&(b, n)| (pool[b].clone(), n))
            .collect();
        // Held for the model's lifetime: the bind groups refer to them.
        let mut keep = pl.params;
        keep.extend(pool);
        keep.extend([dummy, uniforms]);
        Ok(GpuModel {
            gpu: gpu.clone(),
            info,
            entry_rgb8,
            entry_nchw,
            body,
            normalize,
            upload,
            nchw_target,
            run_uniform,
            raw_output,
            output_steps,
            outputs,
            embeddings,
            readback,
            busy: futures_util::lock::Mutex::new(()),
            _keep: keep,
        })
    }
}
