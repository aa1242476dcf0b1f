//! Buffer planning: what a compiled model is before it touches the device's memory for
//! activations. Lowering an op appends [`StepDesc`]s that name their bindings as [`Res`]
//! (a slot in the uniform block, a pooled activation buffer, a parameter buffer…), so the
//! activation buffers can be sized for the batch only once the whole graph is planned.
//!
//! Activation buffers are pooled by liveness: a value's buffer returns to the pool when its
//! last reader has been planned, and the next allocation takes the smallest free buffer that
//! fits, so a 50-layer network needs a handful of them.

use wgpu::util::DeviceExt;

use crate::error::EngineError;
use crate::gpu::Gpu;
use crate::kernels::{Kernel, PipelineKey};

/// A binding of a planned dispatch, resolved to a buffer when the plan is materialised.
#[derive(Clone, Copy, Debug)]
pub(super) enum Res {
    /// A slice (offset, size) of the one uniform buffer holding every dispatch's parameters.
    Uniform(u64, u64),
    Pool(usize),
    Param(usize),
    Upload,
    Embeddings,
    Dummy,
    /// The per-submission uniform holding the number of images.
    Run,
}

/// A planned dispatch.
pub(super) struct StepDesc {
    pub(super) label: String,
    pub(super) key: PipelineKey,
    pub(super) resources: Vec<Res>,
    pub(super) grid: [u32; 2],
    pub(super) batch: BatchAxis,
}

/// Where a dispatch puts the images of a batch (the grid's other axes are fixed at compile time).
#[derive(Clone, Copy, Debug)]
pub(super) enum BatchAxis {
    /// One image per z slice.
    Z,
    /// The batch is the pixel axis (a float Gemm in conv_f32.wgsl): `tile` images per
    /// invocation, 64 invocations per workgroup along x; z is 1.
    X { tile: usize },
    /// `tile` images per workgroup along y (gemm_int.wgsl); z is 1.
    Y { tile: usize },
}

/// A dispatch made real: its pipeline and bind group.
pub(super) struct Step {
    /// For the per-dispatch profile.
    pub(super) label: String,
    pub(super) kernel: Kernel,
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) bind_group: wgpu::BindGroup,
    pub(super) grid: [u32; 2],
    pub(super) batch: BatchAxis,
}

impl Step {
    pub(super) fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, images: usize) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        match self.batch {
            BatchAxis::Z => pass.dispatch_workgroups(self.grid[0], self.grid[1], images as u32),
            BatchAxis::X { tile } => {
                let x = images.div_ceil(tile).div_ceil(64) as u32;
                pass.dispatch_workgroups(x, self.grid[1], 1);
            }
            BatchAxis::Y { tile } => {
                pass.dispatch_workgroups(self.grid[0], images.div_ceil(tile) as u32, 1)
            }
        }
    }
}

/// Where a value lives: a pooled buffer holding it as NHWC f32.
#[derive(Clone, Copy, Debug)]
pub(super) struct Val {
    pub(super) buf: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
}

impl Val {
    pub(super) fn per_image(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// The plan under construction; the lowering of each op family (`lower/`) adds to it.
pub(super) struct Planner<'g> {
    pub(super) gpu: &'g Gpu,
    pub(super) steps: Vec<StepDesc>,
    pub(super) uniforms: Vec<u8>,
    uniform_align: usize,
    /// Per-image bytes of each pooled buffer, whether it is free, and its readers.
    pub(super) pool: Vec<u64>,
    pub(super) pool_refs: Vec<usize>,
    pub(super) params: Vec<wgpu::Buffer>,
    pub(super) param_bytes: u64,
    pub(super) max_dim: u32,
    /// The largest buffer one binding may hold: it caps each parameter buffer and, once the
    /// plan is complete, the batch.
    pub(super) binding_limit: u64,
    /// Name of the graph node being planned (for profiles and GPU error messages).
    pub(super) label: String,
    /// The input's buffer while its only reader is being planned: a reader that takes its
    /// channels one at a time (the narrow block convolution) may read it as uploaded, NCHW,
    /// and says so in `input_read_planar`; the entries then skip the NHWC layout.
    pub(super) planar_input: Option<usize>,
    pub(super) input_read_planar: bool,
}

impl<'g> Planner<'g> {
    /// An empty plan within `gpu`'s limits.
    pub(super) fn new(gpu: &'g Gpu) -> Self {
        let limits = gpu.limits();
        Planner {
            gpu,
            steps: Vec::new(),
            uniforms: Vec::new(),
            uniform_align: limits.min_uniform_buffer_offset_alignment as usize,
            pool: Vec::new(),
            pool_refs: Vec::new(),
            params: Vec::new(),
            param_bytes: 0,
            max_dim: limits.max_compute_workgroups_per_dimension,
            binding_limit: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            label: "input".into(),
            planar_input: None,
            input_read_planar: false,
        }
    }

    /// Appends a dispatch's parameter block to the uniform buffer, at the device's alignment.
    pub(super) fn uniform<T: bytemuck::Pod>(&mut self, p: &T) -> Res {
        let offset = self.uniforms.len().next_multiple_of(self.uniform_align);
        self.uniforms.resize(offset, 0);
        self.uniforms.extend_from_slice(bytemuck::bytes_of(p));
        Res::Uniform(offset as u64, std::mem::size_of::<T>() as u64)
    }

    /// Uploads a layer's parameters (weights, scales, biases) to a buffer of their own.
    pub(super) fn param<T: bytemuck::Pod>(
        &mut self,
        what: &str,
        data: &[T],
    ) -> Result<Res, EngineError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let bytes = if bytes.is_empty() {
            &[0u8; 4][..]
        } else {
            bytes
        };
        if bytes.len() as u64 > self.binding_limit {
            return Err(EngineError::TooLarge {
                what: what.to_string(),
                needed: bytes.len() as u64,
                limit: self.binding_limit,
            });
        }
        self.param_bytes += bytes.len() as u64;
        self.params.push(
            self.gpu
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(what),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                }),
        );
        Ok(Res::Param(self.params.len() - 1))
    }

    /// A pooled buffer of `per_image` f32 (or u32) elements: the smallest free one that fits,
    /// grown if needed, or a new one.
    pub(super) fn alloc(&mut self, per_image: usize) -> usize {
        let bytes = (per_image.max(1) * 4) as u64;
        let free = (0..self.pool.len()).filter(|&i| self.pool_refs[i] == 0);
        let best = free
            .clone()
            .filter(|&i| self.pool[i] >= bytes)
            .min_by_key(|&i| self.pool[i])
            .or_else(|| free.max_by_key(|&i| self.pool[i]));
        let i = match best {
            Some(i) => {
                self.pool[i] = self.pool[i].max(bytes);
                i
            }
            None => {
                self.pool.push(bytes);
                self.pool_refs.push(0);
                self.pool.len() - 1
            }
        };
        self.pool_refs[i] = 1;
        i
    }

    /// One reader of `buf` is done with it; with none left it returns to the pool.
    pub(super) fn release(&mut self, buf: usize) {
        self.pool_refs[buf] -= 1;
    }

    /// Refuses a grid the device cannot dispatch (rather than a validation error at run time).
    pub(super) fn check_grid(&self, what: &str, grid: [u32; 2]) -> Result<[u32; 2], EngineError> {
        for g in grid {
            if g > self.max_dim {
                return Err(EngineError::TooLarge {
                    what: format!("{what}: workgroups per dimension"),
                    needed: g as u64,
                    limit: self.max_dim as u64,
                });
            }
        }
        Ok(grid)
    }

    /// Appends a dispatch with one image per z slice, labelled with the node being planned.
    pub(super) fn push(&mut self, key: PipelineKey, resources: Vec<Res>, grid: [u32; 2]) {
        self.steps.push(StepDesc {
            label: self.label.clone(),
            key,
            resources,
            grid,
            batch: BatchAxis::Z,
        });
    }
}
