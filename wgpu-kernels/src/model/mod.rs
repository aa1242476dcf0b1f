//! A packed model on the GPU: the graph compiled once into a list of dispatches over
//! preallocated buffers, run for a batch in one submission.
//!
//! Activations live in NHWC f32 between layers; each quantized layer's input is packed to
//! 4×i8 words just before it (the scale belongs to the consumer). Buffers are pooled by
//! liveness, so a 50-layer network needs a handful of activation buffers; a PReLU that is the
//! only reader of a convolution runs in that convolution's epilogue.
//!
//! This file holds the model and its constructors; the work is split by concern:
//! - `plan`: dispatches and buffers as planned, before the batch is known;
//! - `lower/`: the lowering of each op family to dispatches;
//! - `compile`: the walk over the graph that drives the lowering;
//! - `materialize`: the plan made real (buffers at the batch size, bind groups);
//! - `run`: submission and read-back, the public ways to run a model;
//! - `profile`: per-dispatch timing.

mod compile;
mod lower;
mod materialize;
mod plan;
mod profile;
mod run;
mod siblings;

use efq_shared::format::{PackedModel, Preprocessing, Threshold};
use efq_shared::graph::{Graph, ValueId};

use crate::error::EngineError;
use crate::gpu::Gpu;
use plan::Step;
pub use profile::ProfileRow;

/// Largest batch a model is planned for unless the caller asks otherwise.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// What a loaded model is.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The name stored in the model file.
    pub name: String,
    /// `[channels, height, width]` of one input image.
    pub input_shape: [usize; 3],
    /// Values per embedding.
    pub embedding_dim: usize,
    /// Channel order, mean and std the model expects (applied on the GPU to RGB bytes).
    pub preprocessing: Preprocessing,
    /// The verification threshold stored with the model, if any.
    pub threshold: Option<Threshold>,
    /// `"w6a6"` and so on; `None` for a float model.
    pub quant: Option<String>,
    /// Bytes of parameters in GPU memory (packed weights, scales, biases).
    pub gpu_parameter_bytes: u64,
    /// Bytes of activation buffers at `max_batch`.
    pub gpu_activation_bytes: u64,
    /// Images per submission; larger batches are split.
    pub max_batch: usize,
    /// Compute dispatches in one forward pass.
    pub dispatches: usize,
}

/// Two images compared.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// Cosine similarity of the two L2-normalised embeddings.
    pub similarity: f32,
    /// The model's threshold and the decision at it, when the model carries one.
    pub threshold: Option<f32>,
    /// Whether the two faces are the same person at that threshold (`None` without one).
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

/// A model compiled for one device.
pub struct GpuModel {
    gpu: Gpu,
    info: ModelInfo,
    entry_rgb8: Step,
    /// `None` where the first layer reads NCHW floats as uploaded.
    entry_nchw: Option<Step>,
    body: Vec<Step>,
    normalize: Step,
    upload: wgpu::Buffer,
    /// Where NCHW floats are written: `upload`, which `entry_nchw` lays out, or (without it)
    /// the input activation itself.
    nchw_target: wgpu::Buffer,
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
    /// Loads a packed model file's bytes (validated before anything is allocated), planned for
    /// batches of up to [`DEFAULT_MAX_BATCH`] images.
    ///
    /// ```no_run
    /// # fn run(gpu: &efq_engine::Gpu) -> Result<(), Box<dyn std::error::Error>> {
    /// let model = efq_engine::GpuModel::from_bytes(gpu, &std::fs::read("student.efq")?)?;
    /// println!("{}: {}-d embeddings", model.info().name, model.info().embedding_dim);
    /// # Ok(()) }
    /// ```
    pub fn from_bytes(gpu: &Gpu, bytes: &[u8]) -> Result<GpuModel, EngineError> {
        let model = PackedModel::from_bytes(bytes)?;
        GpuModel::new(gpu, &model, DEFAULT_MAX_BATCH)
    }

    /// Compiles a model for `gpu`, planning buffers for batches of up to `max_batch` images
    /// (fewer when the device's buffer limits demand it).
    pub fn new(gpu: &Gpu, model: &PackedModel, max_batch: usize) -> Result<GpuModel, EngineError> {
        let m = &model.manifest;
        let info = ModelInfo {
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
        GpuModel::compile(gpu, &model.graph, info, max_batch, &[])
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
        let info = ModelInfo {
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
        GpuModel::compile(gpu, graph, info, max_batch, outputs)
    }

    /// What the model is: its input, embedding, preprocessing, threshold and GPU memory.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The device the model was compiled for.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}
