//! The recognizer: aligned crops → flip-test embeddings, on the engine or the CPU backend.

use efq_shared::align::CROP_SIZE;
use efq_shared::format::{Preprocessing, Threshold};
use efq_shared::graph::Graph;
use efq_shared::model_file;
use efq_shared::preprocess::{flip_horizontal, pixels_to_chw};
use image::RgbImage;

use super::{FaceError, Runtime};
use crate::{EngineError, GpuModel, Images};

/// Crops per GPU submission the recognizer is planned for (each crop is two images, itself and
/// its mirror; larger batches are split).
const GPU_MAX_BATCH: usize = 32;

enum Runner {
    Gpu(Box<GpuModel>),
    Cpu(Graph),
}

/// A face recognizer — a packed `.efq` student, an ONNX model or an arcface_torch `.pth`,
/// told apart by its bytes — taking 112×112 ArcFace crops.
pub struct Recognizer {
    runner: Runner,
    name: String,
    preprocessing: Preprocessing,
    threshold: Option<Threshold>,
    dim: usize,
}

impl Recognizer {
    /// Loads a recognizer file's bytes for `runtime`. Refused with
    /// [`FaceError::NotARecognizer`] unless it reads and takes 3×112×112 crops to one
    /// embedding.
    pub fn from_bytes(
        bytes: &[u8],
        name: &str,
        runtime: &Runtime,
    ) -> Result<Recognizer, FaceError> {
        let not = |why: String| FaceError::NotARecognizer {
            name: name.into(),
            why,
        };
        let m = model_file::load_bytes(bytes, name).map_err(|e| not(e.to_string()))?;
        let dim = m.graph.check_recognizer().map_err(|e| not(e.to_string()))?;
        let want = [3, CROP_SIZE, CROP_SIZE];
        if m.graph.input_shape != want {
            return Err(not(format!(
                "it takes {:?} inputs; the pipeline's aligned crops are {want:?}",
                m.graph.input_shape
            )));
        }
        let runner = match runtime {
            Runtime::Gpu(g) => Runner::Gpu(Box::new(GpuModel::from_graph(
                g,
                &m.graph,
                2 * GPU_MAX_BATCH,
            )?)),
            Runtime::Cpu => Runner::Cpu(m.graph),
        };
        Ok(Recognizer {
            runner,
            name: name.into(),
            preprocessing: m.preprocessing,
            threshold: m.threshold,
            dim,
        })
    }

    /// Reads the recognizer file at `path` ([`FaceError::ModelMissing`] when it is not there).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(
        path: impl AsRef<std::path::Path>,
        runtime: &Runtime,
    ) -> Result<Recognizer, FaceError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| FaceError::ModelMissing {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        Recognizer::from_bytes(&bytes, &path.display().to_string(), runtime)
    }

    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Values per embedding.
    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    /// The verification threshold the file stores (packed students; ONNX and `.pth` store
    /// none), with the FAR it was set at.
    pub fn threshold(&self) -> Option<&Threshold> {
        self.threshold.as_ref()
    }

    /// Decides at this cosine instead (a model without a stored one, or an app's own policy).
    pub fn set_threshold(&mut self, threshold: Threshold) {
        self.threshold = Some(threshold);
    }

    /// L2-normalised flip-test embeddings (each crop plus its mirror image) of 112×112 crops,
    /// in one pass.
    pub async fn embed_crops(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>, FaceError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let n = crops.len();
        let mut x = Vec::with_capacity(n * 3 * CROP_SIZE * CROP_SIZE);
        for (i, c) in crops.iter().enumerate() {
            if (c.width() as usize, c.height() as usize) != (CROP_SIZE, CROP_SIZE) {
                return Err(FaceError::BadImage {
                    photo: format!("crop {i}"),
                    why: format!(
                        "a crop is {CROP_SIZE}×{CROP_SIZE}, not {}×{}",
                        c.width(),
                        c.height()
                    ),
                });
            }
            x.extend(pixels_to_chw(
                c.as_raw(),
                CROP_SIZE,
                CROP_SIZE,
                &self.preprocessing,
            ));
        }
        let x = with_mirrors(x, CROP_SIZE);
        let y = match &self.runner {
            Runner::Gpu(m) => m.forward(Images::Nchw(&x), 2 * n).await?,
            Runner::Cpu(g) => efq_shared::cpu::forward(g, &x, 2 * n).map_err(EngineError::Model)?,
        };
        Ok(flip_test_embeddings(&y, n, self.dim))
    }

    /// [`Recognizer::embed_crops`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embed_crops_blocking(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>, FaceError> {
        pollster::block_on(self.embed_crops(crops))
    }
}

/// The flip test's input: `n` CHW images of width `w`, then their mirror images (`2n` in all).
pub fn with_mirrors(mut chw: Vec<f32>, w: usize) -> Vec<f32> {
    let mirrored = flip_horizontal(&chw, w);
    chw.extend(mirrored);
    chw
}

/// The flip test's embeddings from the network's raw output on [`with_mirrors`]' input: each
/// image's output plus its mirror image's, L2-normalised (as the thresholds stored in models
/// are measured).
pub fn flip_test_embeddings(raw: &[f32], n: usize, dim: usize) -> Vec<Vec<f32>> {
    let (plain, mirror) = raw.split_at(n * dim);
    plain
        .chunks(dim)
        .zip(mirror.chunks(dim))
        .map(|(a, b)| {
            let mut e: Vec<f32> = a.iter().zip(b).map(|(a, b)| a + b).collect();
            efq_shared::cpu::l2_normalize_rows(&mut e, dim);
            e
        })
        .collect()
}
