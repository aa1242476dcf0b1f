//! A packed model on the GPU: the graph compiled once into a list of dispatches over
//! preallocated buffers, run for a batch in one submission.
//!
//! Activations live in NHWC f32 between layers; each quantized layer's input is packed to
//! 4×i8 words just before it (the scale belongs to the consumer). Buffers are pooled by
//! liveness, so a 50-layer network needs a handful of activation buffers; a PReLU that is the
//! only reader of a convolution runs in that convolution's epilogue.

use efq_shared::format::{PackedModel, Preprocessing, Threshold};
use efq_shared::graph::{ConvAttrs, Graph, Op, ValueId, Weights};
use efq_shared::quant::ActQuant;
use wgpu::util::DeviceExt;

use crate::error::EngineError;
use crate::gpu::Gpu;
use crate::kernels::{
    ConvParams, DepthwiseParams, ElementwiseParams, GemmParams, Kernel, L2NormParams, LayoutParams,
    PipelineKey, QuantizeParams, UpsampleParams, grid_1d, pipeline,
};
use crate::weights::{float_ohwi, pack_conv, pack_depthwise, pack_gemm, words_for};

/// Largest batch a model is planned for unless the caller asks otherwise.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// What a loaded model is.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub input_shape: [usize; 3],
    pub embedding_dim: usize,
    pub preprocessing: Preprocessing,
    pub threshold: Option<Threshold>,
    /// `"w6a6"` and so on; `None` for a float model.
    pub quant: Option<String>,
    /// Bytes of parameters in GPU memory (packed weights, scales, biases).
    pub gpu_parameter_bytes: u64,
    /// Bytes of activation buffers at `max_batch`.
    pub gpu_activation_bytes: u64,
    /// Images per submission; larger batches are split.
    pub max_batch: usize,
    pub dispatches: usize,
}

/// Two images compared.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// Cosine similarity of the two L2-normalised embeddings.
    pub similarity: f32,
    /// The model's threshold and the decision at it, when the model carries one.
    pub threshold: Option<f32>,
    pub same: Option<bool>,
}

/// How the network input is handed over.
#[derive(Clone, Copy, Debug)]
pub enum Images<'a> {
    /// Interleaved RGB bytes, `n × H × W × 3`; normalised on the GPU.
    Rgb8(&'a [u8]),
    /// Already normalised NCHW floats, `n × C × H × W`.
    Nchw(&'a [f32]),
}

/// What one pass reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Embeddings,
    Raw,
    Values,
}

#[derive(Clone, Copy, Debug)]
enum Res {
    Uniform(u64, u64),
    Pool(usize),
    Param(usize),
    Upload,
    Embeddings,
    Dummy,
    /// The per-submission uniform holding the number of images.
    Run,
}

struct StepDesc {
    label: String,
    key: PipelineKey,
    resources: Vec<Res>,
    grid: [u32; 2],
    batch: BatchAxis,
}

/// Where a dispatch puts the images of a batch (the grid's other axes are fixed at compile time).
#[derive(Clone, Copy, Debug)]
enum BatchAxis {
    /// One image per z slice.
    Z,
    /// The batch is the pixel axis (a float Gemm in conv_f32.wgsl): `tile` images per
    /// invocation, 64 invocations per workgroup along x; z is 1.
    X { tile: usize },
    /// `tile` images per workgroup along y (gemm_int.wgsl); z is 1.
    Y { tile: usize },
}

struct Step {
    /// For the per-dispatch profile.
    label: String,
    kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 2],
    batch: BatchAxis,
}

impl Step {
    fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, images: usize) {
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
struct Val {
    buf: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl Val {
    fn per_image(&self) -> usize {
        self.c * self.h * self.w
    }
}

struct Planner<'g> {
    gpu: &'g Gpu,
    steps: Vec<StepDesc>,
    uniforms: Vec<u8>,
    uniform_align: usize,
    /// Per-image bytes of each pooled buffer, whether it is free, and its readers.
    pool: Vec<u64>,
    pool_refs: Vec<usize>,
    params: Vec<wgpu::Buffer>,
    param_bytes: u64,
    max_dim: u32,
    binding_limit: u64,
    /// Name of the graph node being planned (for profiles and GPU error messages).
    label: String,
}

impl Planner<'_> {
    fn uniform<T: bytemuck::Pod>(&mut self, p: &T) -> Res {
        let offset = self.uniforms.len().next_multiple_of(self.uniform_align);
        self.uniforms.resize(offset, 0);
        self.uniforms.extend_from_slice(bytemuck::bytes_of(p));
        Res::Uniform(offset as u64, std::mem::size_of::<T>() as u64)
    }

    fn param<T: bytemuck::Pod>(&mut self, what: &str, data: &[T]) -> Result<Res, EngineError> {
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
    fn alloc(&mut self, per_image: usize) -> usize {
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

    fn release(&mut self, buf: usize) {
        self.pool_refs[buf] -= 1;
    }

    fn check_grid(&self, what: &str, grid: [u32; 2]) -> Result<[u32; 2], EngineError> {
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

    fn push(&mut self, key: PipelineKey, resources: Vec<Res>, grid: [u32; 2]) {
        self.steps.push(StepDesc {
            label: self.label.clone(),
            key,
            resources,
            grid,
            batch: BatchAxis::Z,
        });
    }

    /// NHWC `x` → a new NCHW buffer (ONNX's Flatten order, or a value read back as NCHW).
    fn nchw_copy(&mut self, what: &str, x: Val) -> Result<usize, EngineError> {
        let u = self.uniform(&LayoutParams {
            pixels: (x.h * x.w) as u32,
            channels: x.c as u32,
            mean: 0.0,
            inv_std: 1.0,
            bgr: 0,
            _pad: [0; 3],
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

    /// Packs `x` into 4×i8 words for a quantized consumer; returns the buffer.
    fn quantize(
        &mut self,
        x: Val,
        aq: &ActQuant,
        group_channels: usize,
        groups: usize,
    ) -> Result<usize, EngineError> {
        let words_per_group = words_for(group_channels);
        let words_per_pixel = groups * words_per_group;
        let pixels = x.h * x.w;
        let u = self.uniform(&QuantizeParams {
            pixels: pixels as u32,
            channels: x.c as u32,
            group_channels: group_channels as u32,
            words_per_group: words_per_group as u32,
            words_per_pixel: words_per_pixel as u32,
            lo: aq.levels()[0] as f32,
            hi: aq.levels()[1] as f32,
            inv_scale: aq.inv_scale(),
        });
        let out = self.alloc(pixels * words_per_pixel);
        let grid = self.check_grid(
            "quantize",
            grid_1d((pixels * words_per_pixel) as u64, self.max_dim),
        )?;
        self.push(
            PipelineKey {
                kernel: Kernel::Quantize,
                constants: vec![],
            },
            vec![u, Res::Pool(x.buf), Res::Pool(out)],
            grid,
        );
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: Val,
        weights: &Weights,
        bias: &[f32],
        attrs: &ConvAttrs,
        input_quant: Option<&ActQuant>,
        out_hw: (usize, usize),
        prelu: Option<&[f32]>,
        images_as_pixels: bool,
    ) -> Result<Val, EngineError> {
        let shape = weights.shape();
        let (o, cg, kh, kw) = match *shape {
            [o, i, kh, kw] => (o, i, kh, kw),
            [o, i] => (o, i, 1, 1),
            _ => unreachable!("checked by infer_shapes"),
        };
        let (oh, ow) = out_hw;
        let groups = attrs.group;
        let og = o / groups;
        let slope_res = match prelu {
            Some(s) => self.param(&format!("{name}: slopes"), s)?,
            None => Res::Dummy,
        };
        let shared_slope = prelu.is_some_and(|s| s.len() == 1) as u32;
        let out_pixels = oh * ow;
        let geometry = ConvParams {
            in_h: x.h as u32,
            in_w: x.w as u32,
            c: 0,
            group: 0,
            out_h: oh as u32,
            out_w: ow as u32,
            out_c: o as u32,
            out_per_group: og as u32,
            k_h: kh as u32,
            k_w: kw as u32,
            stride_y: attrs.stride[0] as u32,
            stride_x: attrs.stride[1] as u32,
            pad_top: attrs.pads[0] as u32,
            pad_left: attrs.pads[1] as u32,
            dil_y: attrs.dilation[0] as u32,
            dil_x: attrs.dilation[1] as u32,
            shared_slope,
            zero: 0,
            _pad: [0; 2],
        };
        let prelu_const = ("PRELU", prelu.is_some() as u32);
        let images_const = ("IMAGES_AS_PIXELS", images_as_pixels as u32);
        // With images as pixels, each image is one pixel of an unbounded row.
        const ROW: u32 = 1 << 30;
        let geometry = if images_as_pixels {
            ConvParams {
                in_h: 1,
                in_w: ROW,
                out_h: 1,
                out_w: ROW,
                ..geometry
            }
        } else {
            geometry
        };
        let out = match (weights, input_quant) {
            (Weights::Quant(q), Some(aq)) => {
                let mult: Vec<f32> = q.scales.iter().map(|s| aq.scale * s).collect();
                // Depthwise, or narrow groups whose four-channel words never straddle a group.
                let depthwise = cg == og && matches!(cg, 1 | 2 | 4) && groups > 1;
                let (xq, wq) = if depthwise {
                    (self.quantize(x, aq, x.c, 1)?, pack_depthwise(q))
                } else if images_as_pixels {
                    (self.quantize(x, aq, cg, groups)?, pack_gemm(q))
                } else {
                    (self.quantize(x, aq, cg, groups)?, pack_conv(q))
                };
                let wq = self.param(&format!("{name}: packed weights"), &wq)?;
                let mult = self.param(&format!("{name}: multipliers"), &mult)?;
                let bias = self.param(&format!("{name}: bias"), bias)?;
                let out = self.alloc(o * out_pixels);
                let bits = ("W_BITS", q.bits as u32);
                if depthwise {
                    let words = words_for(o);
                    let u = self.uniform(&DepthwiseParams {
                        in_h: x.h as u32,
                        in_w: x.w as u32,
                        channels: o as u32,
                        words: words as u32,
                        out_h: oh as u32,
                        out_w: ow as u32,
                        k_h: kh as u32,
                        k_w: kw as u32,
                        stride_y: geometry.stride_y,
                        stride_x: geometry.stride_x,
                        pad_top: geometry.pad_top,
                        pad_left: geometry.pad_left,
                        dil_y: geometry.dil_y,
                        dil_x: geometry.dil_x,
                        shared_slope,
                        zero: 0,
                    });
                    let grid = self.check_grid(
                        name,
                        [out_pixels.div_ceil(4).div_ceil(64) as u32, words as u32],
                    )?;
                    self.push(
                        PipelineKey {
                            kernel: Kernel::ConvDepthwiseInt,
                            constants: vec![bits, prelu_const, ("CG", cg as u32)],
                        },
                        vec![u, wq, Res::Pool(xq), mult, bias, slope_res, Res::Pool(out)],
                        grid,
                    );
                } else if images_as_pixels {
                    // A Gemm (groups = 1): one output channel per lane, images in a loop.
                    let u = self.uniform(&GemmParams {
                        in_words: words_for(cg) as u32,
                        out_c: o as u32,
                        shared_slope,
                        zero: 0,
                    });
                    let grid = self.check_grid(name, [o.div_ceil(64) as u32, 1])?;
                    self.push(
                        PipelineKey {
                            kernel: Kernel::GemmInt,
                            constants: vec![bits, prelu_const],
                        },
                        vec![
                            u,
                            wq,
                            Res::Pool(xq),
                            mult,
                            bias,
                            slope_res,
                            Res::Pool(out),
                            Res::Run,
                        ],
                        grid,
                    );
                    self.steps.last_mut().expect("pushed").batch = BatchAxis::Y { tile: 4 };
                } else {
                    let words_per_group = words_for(cg);
                    let tile_o = channel_tile(og);
                    let tile_p = 4usize;
                    let u = self.uniform(&ConvParams {
                        c: (groups * words_per_group) as u32,
                        group: words_per_group as u32,
                        ..geometry
                    });
                    let grid = self.check_grid(
                        name,
                        [
                            out_pixels.div_ceil(tile_p).div_ceil(64) as u32,
                            o.div_ceil(tile_o) as u32,
                        ],
                    )?;
                    self.push(
                        PipelineKey {
                            kernel: Kernel::ConvInt,
                            constants: vec![
                                bits,
                                ("TILE_O", tile_o as u32),
                                prelu_const,
                                ("FLOAT_DOT", self.gpu.float_dot() as u32),
                                ("TILE_P", tile_p as u32),
                            ],
                        },
                        vec![u, wq, Res::Pool(xq), mult, bias, slope_res, Res::Pool(out)],
                        grid,
                    );
                }
                self.release(xq);
                out
            }
            (Weights::Float(w), None) => {
                let wf = self.param(&format!("{name}: weights"), &float_ohwi(w))?;
                let bias = self.param(&format!("{name}: bias"), bias)?;
                let out = self.alloc(o * out_pixels);
                let tile_o = channel_tile(og);
                let u = self.uniform(&ConvParams {
                    c: x.c as u32,
                    group: cg as u32,
                    ..geometry
                });
                let grid = self.check_grid(
                    name,
                    [
                        out_pixels.div_ceil(4).div_ceil(64) as u32,
                        o.div_ceil(tile_o) as u32,
                    ],
                )?;
                self.push(
                    PipelineKey {
                        kernel: Kernel::ConvF32,
                        constants: vec![("TILE_O", tile_o as u32), prelu_const, images_const],
                    },
                    vec![
                        u,
                        wf,
                        Res::Pool(x.buf),
                        bias,
                        slope_res,
                        Res::Pool(out),
                        Res::Run,
                    ],
                    grid,
                );
                if images_as_pixels {
                    self.steps.last_mut().expect("pushed").batch = BatchAxis::X { tile: 4 };
                }
                out
            }
            (Weights::Quant(_), None) => {
                return Err(EngineError::Unsupported(format!(
                    "layer '{name}' has quantized weights but no input quantization"
                )));
            }
            (Weights::Float(_), Some(_)) => {
                return Err(EngineError::Unsupported(format!(
                    "layer '{name}' quantizes its input but keeps float weights (fake-quantized \
                     float layers are a training-time state; export the student first)"
                )));
            }
        };
        Ok(Val {
            buf: out,
            c: o,
            h: oh,
            w: ow,
        })
    }
}

/// Output channels per invocation: the largest of 8, 4, 1 that divides a group's outputs (a
/// tile never straddles two groups, which read different input channels).
fn channel_tile(out_per_group: usize) -> usize {
    [8, 4]
        .into_iter()
        .find(|t| out_per_group.is_multiple_of(*t))
        .unwrap_or(1)
}

/// A model compiled for one device.
pub struct GpuModel {
    gpu: Gpu,
    info: ModelInfo,
    entry_rgb8: Step,
    entry_nchw: Step,
    body: Vec<Step>,
    normalize: Step,
    upload: wgpu::Buffer,
    run_uniform: wgpu::Buffer,
    raw_output: wgpu::Buffer,
    /// NHWC → NCHW conversions of the values asked for at compile time, and where they land
    /// (buffer, values per image).
    output_steps: Vec<Step>,
    outputs: Vec<(wgpu::Buffer, usize)>,
    embeddings: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// One batch at a time: every call shares the model's buffers. An async lock, so that
    /// callers on other threads (or other tasks in a browser) wait instead of garbling them.
    busy: futures_util::lock::Mutex<()>,
    _keep: Vec<wgpu::Buffer>,
}

impl GpuModel {
    /// Loads a packed model file's bytes.
    pub fn from_bytes(gpu: &Gpu, bytes: &[u8]) -> Result<GpuModel, EngineError> {
        let model = PackedModel::from_bytes(bytes)?;
        GpuModel::new(gpu, &model, DEFAULT_MAX_BATCH)
    }

    /// Compiles a model for `gpu`, planning buffers for batches of up to `max_batch` images
    /// (fewer when the device's buffer limits demand it).
    pub fn new(gpu: &Gpu, model: &PackedModel, max_batch: usize) -> Result<GpuModel, EngineError> {
        let m = &model.manifest;
        let mut info = ModelInfo {
            name: m.name.clone(),
            input_shape: m.input_shape,
            embedding_dim: m.embedding_dim,
            preprocessing: m.preprocessing.clone(),
            threshold: m.threshold.clone(),
            quant: m.quant.map(|q| q.label()),
            gpu_parameter_bytes: 0,
            gpu_activation_bytes: 0,
            max_batch: 0,
            dispatches: 0,
        };
        GpuModel::compile(gpu, &model.graph, &mut info, max_batch, &[])
    }

    /// Compiles a bare graph (tests, tools); preprocessing is InsightFace's default.
    pub fn from_graph(gpu: &Gpu, graph: &Graph, max_batch: usize) -> Result<GpuModel, EngineError> {
        GpuModel::from_graph_with_outputs(gpu, graph, &[], max_batch)
    }

    /// Compiles a graph whose values `outputs` [`GpuModel::forward_values`] reads back (a
    /// detector's heads); they stay alive through the whole pass.
    pub fn from_graph_with_outputs(
        gpu: &Gpu,
        graph: &Graph,
        outputs: &[ValueId],
        max_batch: usize,
    ) -> Result<GpuModel, EngineError> {
        let mut info = ModelInfo {
            name: graph.name.clone(),
            input_shape: graph.input_shape,
            embedding_dim: graph.embedding_dim()?,
            preprocessing: Preprocessing::default(),
            threshold: None,
            quant: None,
            gpu_parameter_bytes: 0,
            gpu_activation_bytes: 0,
            max_batch: 0,
            dispatches: 0,
        };
        GpuModel::compile(gpu, graph, &mut info, max_batch, outputs)
    }

    fn compile(
        gpu: &Gpu,
        graph: &Graph,
        info: &mut ModelInfo,
        max_batch: usize,
        outputs: &[ValueId],
    ) -> Result<GpuModel, EngineError> {
        gpu.check_alive()?;
        let shapes = graph.infer_shapes()?;
        let limits = gpu.limits();
        let binding_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let mut pl = Planner {
            gpu,
            steps: Vec::new(),
            uniforms: Vec::new(),
            uniform_align: limits.min_uniform_buffer_offset_alignment as usize,
            pool: Vec::new(),
            pool_refs: Vec::new(),
            params: Vec::new(),
            param_bytes: 0,
            max_dim: limits.max_compute_workgroups_per_dimension,
            binding_limit,
            label: "input".into(),
        };
        let error_scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);

        let [c0, h0, w0] = graph.input_shape;
        let input = Val {
            buf: pl.alloc(c0 * h0 * w0),
            c: c0,
            h: h0,
            w: w0,
        };
        let pre = &info.preprocessing;
        let entry = |pl: &mut Planner, kernel: Kernel| -> Result<StepDesc, EngineError> {
            let u = pl.uniform(&LayoutParams {
                pixels: (h0 * w0) as u32,
                channels: c0 as u32,
                mean: pre.mean,
                inv_std: 1.0 / pre.std,
                bgr: pre.color.eq_ignore_ascii_case("BGR") as u32,
                _pad: [0; 3],
            });
            Ok(StepDesc {
                label: "input".into(),
                key: PipelineKey {
                    kernel,
                    constants: vec![],
                },
                resources: vec![u, Res::Upload, Res::Pool(input.buf)],
                grid: pl.check_grid("input", grid_1d((c0 * h0 * w0) as u64, pl.max_dim))?,
                batch: BatchAxis::Z,
            })
        };
        let entry_rgb8 = entry(&mut pl, Kernel::FromRgb8)?;
        let entry_nchw = entry(&mut pl, Kernel::FromNchw)?;

        let mut remaining = graph.use_counts();
        for &v in outputs {
            if v >= graph.num_values {
                return Err(EngineError::Input(format!("output value {v} out of range")));
            }
            remaining[v] += 1;
        }
        let mut vals: Vec<Option<Val>> = vec![None; graph.num_values];
        vals[0] = Some(input);
        let mut fused_into_previous = vec![false; graph.nodes.len()];
        for (k, node) in graph.nodes.iter().enumerate() {
            if fused_into_previous[k] {
                continue;
            }
            pl.label = node.name.clone();
            let x = vals[node.inputs[0]].expect("topological order checked by infer_shapes");
            let out_shape = &shapes[node.output];
            // A PReLU that is the only reader of this convolution runs in its epilogue.
            let fusable_prelu = || -> Option<(usize, &[f32])> {
                let next = graph.nodes.get(k + 1)?;
                match &next.op {
                    Op::PRelu { slope }
                        if next.inputs == [node.output]
                            && remaining[node.output] == 1
                            && graph.output != node.output
                            && !outputs.contains(&node.output) =>
                    {
                        Some((k + 1, slope.as_slice()))
                    }
                    _ => None,
                }
            };
            let (y, output) = match &node.op {
                Op::Conv {
                    weights,
                    bias,
                    attrs,
                    input_quant,
                } => {
                    let fused = fusable_prelu();
                    let y = pl.conv(
                        &node.name,
                        x,
                        weights,
                        bias,
                        attrs,
                        input_quant.as_ref(),
                        (out_shape[1], out_shape[2]),
                        fused.map(|f| f.1),
                        false,
                    )?;
                    match fused {
                        Some((j, _)) => {
                            fused_into_previous[j] = true;
                            (y, graph.nodes[j].output)
                        }
                        None => (y, node.output),
                    }
                }
                Op::Gemm {
                    weights,
                    bias,
                    input_quant,
                } => {
                    let fused = fusable_prelu();
                    let flat = Val {
                        c: x.per_image(),
                        h: 1,
                        w: 1,
                        ..x
                    };
                    let y = pl.conv(
                        &node.name,
                        flat,
                        weights,
                        bias,
                        &ConvAttrs::default(),
                        input_quant.as_ref(),
                        (1, 1),
                        fused.map(|f| f.1),
                        true,
                    )?;
                    match fused {
                        Some((j, _)) => {
                            fused_into_previous[j] = true;
                            (y, graph.nodes[j].output)
                        }
                        None => (y, node.output),
                    }
                }
                Op::Affine { scale, shift } => {
                    let s = pl.param(&format!("{}: scale", node.name), scale)?;
                    let t = pl.param(&format!("{}: shift", node.name), shift)?;
                    (
                        pl.elementwise(Kernel::Affine, x, [s, t], false)?,
                        node.output,
                    )
                }
                Op::PRelu { slope } => {
                    let s = pl.param(&format!("{}: slopes", node.name), slope)?;
                    (
                        pl.elementwise(Kernel::Prelu, x, [s, Res::Dummy], slope.len() == 1)?,
                        node.output,
                    )
                }
                Op::Relu => (
                    pl.elementwise(Kernel::Relu, x, [Res::Dummy, Res::Dummy], false)?,
                    node.output,
                ),
                Op::Add => {
                    let b = vals[node.inputs[1]].expect("checked");
                    (
                        pl.elementwise(Kernel::Add, x, [Res::Pool(b.buf), Res::Dummy], false)?,
                        node.output,
                    )
                }
                Op::Upsample { factor } => {
                    let f = *factor;
                    let y = Val {
                        buf: pl.alloc(x.per_image() * f * f),
                        c: x.c,
                        h: x.h * f,
                        w: x.w * f,
                    };
                    let u = pl.uniform(&UpsampleParams {
                        out_w: y.w as u32,
                        out_h: y.h as u32,
                        channels: y.c as u32,
                        factor: f as u32,
                    });
                    let grid =
                        pl.check_grid("upsample", grid_1d(y.per_image() as u64, pl.max_dim))?;
                    pl.push(
                        PipelineKey {
                            kernel: Kernel::Upsample,
                            constants: vec![],
                        },
                        vec![u, Res::Pool(x.buf), Res::Pool(y.buf)],
                        grid,
                    );
                    (y, node.output)
                }
                Op::Flatten => {
                    if x.h * x.w == 1 {
                        pl.pool_refs[x.buf] += 1;
                        (x, node.output)
                    } else {
                        let out = pl.nchw_copy("flatten", x)?;
                        (
                            Val {
                                buf: out,
                                c: x.per_image(),
                                h: 1,
                                w: 1,
                            },
                            node.output,
                        )
                    }
                }
            };
            for &i in &node.inputs {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    pl.release(vals[i].expect("defined").buf);
                }
            }
            vals[output] = Some(y);
        }
        // Requested outputs, converted to NCHW where they have a spatial extent.
        let mut output_slots: Vec<(usize, usize)> = Vec::new();
        let body_len = pl.steps.len();
        for &v in outputs {
            let x = vals[v].expect("every value is computed");
            if x.h * x.w == 1 {
                output_slots.push((x.buf, x.per_image()));
                continue;
            }
            pl.label = format!("output {v}");
            let out = pl.nchw_copy("output", x)?;
            output_slots.push((out, x.per_image()));
        }
        let out = vals[graph.output].expect("output computed");
        let dim = out.per_image();
        let u = pl.uniform(&L2NormParams {
            dim: dim as u32,
            _pad: [0; 3],
        });
        let normalize = StepDesc {
            label: "l2norm".into(),
            key: PipelineKey {
                kernel: Kernel::L2Norm,
                constants: vec![],
            },
            resources: vec![u, Res::Pool(out.buf), Res::Embeddings],
            grid: [1, 1],
            batch: BatchAxis::Z,
        };

        // Batch size: every per-image buffer times the batch must fit one binding.
        let upload_per_image = (c0 * h0 * w0 * 4) as u64;
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
        let rw = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
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
        let entry_nchw = materialize(&entry_nchw);
        let normalize = materialize(&normalize);
        if let Some(e) = pollster_free_pop(error_scope) {
            return Err(EngineError::Gpu(format!("compiling '{}': {e}", info.name)));
        }
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
        let mut keep = pl.params;
        keep.extend(pool);
        keep.extend([dummy, uniforms]);
        Ok(GpuModel {
            gpu: gpu.clone(),
            info: info.clone(),
            entry_rgb8,
            entry_nchw,
            body,
            normalize,
            upload,
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

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// L2-normalised embeddings (`n × dim`) of `n` images.
    pub async fn embed(&self, images: Images<'_>, n: usize) -> Result<Vec<f32>, EngineError> {
        Ok(self.run(images, n, Read::Embeddings).await?.remove(0))
    }

    /// The network's raw output (`n × dim`), before normalisation: what the CPU reference's
    /// `forward` returns, for bit-exact comparisons.
    pub async fn forward(&self, images: Images<'_>, n: usize) -> Result<Vec<f32>, EngineError> {
        Ok(self.run(images, n, Read::Raw).await?.remove(0))
    }

    /// The values named at compile time ([`GpuModel::from_graph_with_outputs`]), each
    /// `n ×` its shape in NCHW order, as the CPU reference's `forward_values` returns them.
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
            let entry = match images {
                Images::Rgb8(_) => &self.entry_rgb8,
                Images::Nchw(_) => &self.entry_nchw,
            };
            let flat = self.submit(&chunk, entry, b, read).await?;
            let mut at = 0;
            for (o, k) in out.iter_mut().zip(&sizes) {
                o.extend_from_slice(&flat[at..at + b * k]);
                at += b * k;
            }
        }
        Ok(out)
    }

    /// One batch, one submission: upload, every layer, normalisation, read-back.
    async fn submit(
        &self,
        upload: &[u8],
        entry: &Step,
        b: usize,
        read: Read,
    ) -> Result<Vec<f32>, EngineError> {
        let device = &self.gpu.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.gpu.queue.write_buffer(&self.upload, 0, upload);
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
            for s in std::iter::once(entry).chain(&self.body).chain(tail) {
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
        self.gpu.queue.submit([encoder.finish()]);
        let validation = validation.pop();
        let oom = oom.pop();

        let (tx, rx) = futures_channel::oneshot::channel();
        self.readback
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Gpu(e.to_string()))?;
        if let Some(e) = validation.await {
            return Err(EngineError::Gpu(e.to_string()));
        }
        if let Some(e) = oom.await {
            return Err(EngineError::Gpu(format!(
                "out of GPU memory at batch {b}: {e}"
            )));
        }
        let mapped = rx
            .await
            .map_err(|_| EngineError::DeviceLost("read-back was cancelled".into()))?;
        self.gpu.check_alive()?;
        mapped.map_err(|e| EngineError::Gpu(format!("reading results back: {e}")))?;
        let values = {
            let view = self
                .readback
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| EngineError::Gpu(format!("reading results back: {e:?}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        self.readback.unmap();
        Ok(values)
    }

    /// Times every dispatch on its own (one submission each, waiting for each): where the
    /// time of a forward pass goes. Returns (node name, kernel, seconds) in execution order.
    /// `now` is the caller's clock in seconds (`Instant` natively, `performance.now()` in a
    /// browser, where the engine has no clock of its own). Each time includes one submission's
    /// round trip, so it is for comparing layers, not for summing into a latency.
    pub async fn profile_with(
        &self,
        nchw: &[f32],
        n: usize,
        now: &dyn Fn() -> f64,
    ) -> Result<Vec<(String, Kernel, f64)>, EngineError> {
        if n == 0
            || n > self.info.max_batch
            || nchw.len() != n * self.info.input_shape.iter().product::<usize>()
        {
            return Err(EngineError::Input(format!(
                "profile takes 1..={} NCHW images",
                self.info.max_batch
            )));
        }
        let _guard = self.busy.lock().await;
        self.gpu
            .queue
            .write_buffer(&self.upload, 0, bytemuck::cast_slice(nchw));
        self.gpu.queue.write_buffer(
            &self.run_uniform,
            0,
            bytemuck::bytes_of(&[n as u32, 0, 0, 0]),
        );
        let mut out = Vec::new();
        for s in std::iter::once(&self.entry_nchw).chain(&self.body) {
            let mut encoder = self
                .gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                s.dispatch(&mut pass, n);
            }
            let (tx, rx) = futures_channel::oneshot::channel();
            let start = now();
            self.gpu.queue.submit([encoder.finish()]);
            self.gpu.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            #[cfg(not(target_arch = "wasm32"))]
            self.gpu
                .device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| EngineError::Gpu(e.to_string()))?;
            rx.await
                .map_err(|_| EngineError::DeviceLost("the profiled dispatch was dropped".into()))?;
            out.push((s.label.clone(), s.kernel, now() - start));
        }
        self.gpu.check_alive()?;
        Ok(out)
    }

    /// [`GpuModel::profile_with`] on the native clock.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(
        &self,
        nchw: &[f32],
        n: usize,
    ) -> Result<Vec<(String, Kernel, f64)>, EngineError> {
        let t0 = std::time::Instant::now();
        pollster::block_on(self.profile_with(nchw, n, &|| t0.elapsed().as_secs_f64()))
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

/// Pops a validation scope after pipeline creation. wgpu-core reports these errors
/// synchronously, so the future is ready at once; on the web it resolves later and the error
/// surfaces at the first submission instead.
fn pollster_free_pop(scope: wgpu::ErrorScopeGuard) -> Option<wgpu::Error> {
    let fut = scope.pop();
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(e) => e,
        std::task::Poll::Pending => None,
    }
}
