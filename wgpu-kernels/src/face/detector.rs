//! SCRFD on the engine or the CPU backend, and the rules that turn its detections into the one
//! aligned crop a photo gives.

use efq_shared::align::align_face;
use efq_shared::detect::{
    DetectConfig, Detection, Scrfd, letterbox_input, pick_central, split_batch,
};
use image::RgbImage;

use super::{FaceError, Photo, Runtime};
use crate::{EngineError, GpuModel, Images};

/// Detector input sizes tried in turn: InsightFace's 640×640, then 320×320 for close-ups
/// (faces larger than the 640 anchors cover; 16 of LFW's 13,233 photos).
pub const DETECT_SIZES: [usize; 2] = [640, 320];

/// Which face of a photo to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// The face whose box centre is nearest the photo's centre (portraits and identity photos
    /// are framed on their subject).
    #[default]
    Central,
    /// This face of [`Faces::faces`] (numbered best score first).
    Index(usize),
    /// The photo must hold exactly one face; several are an error.
    Only,
}

/// Every face of one photo.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Faces {
    /// In photo pixels, best score first.
    pub faces: Vec<Detection>,
    /// The detector input size that found them (the first of the sizes that found any; 0:
    /// none found).
    pub size: usize,
}

/// The face chosen in a photo and its aligned crop.
#[derive(Clone, Debug)]
pub struct Located {
    /// Every face found.
    pub faces: Faces,
    /// Index of the chosen one in `faces.faces`.
    pub chosen: usize,
    /// The 112×112 ArcFace-aligned crop of it.
    pub crop: RgbImage,
}

impl Located {
    /// The chosen face's detection.
    pub fn detection(&self) -> &Detection {
        &self.faces.faces[self.chosen]
    }
}

/// The engine models of `nets` for batches of up to `batch` photos (none on the CPU).
fn compile(
    nets: &[Scrfd],
    runtime: &Runtime,
    batch: usize,
) -> Result<Option<Vec<GpuModel>>, FaceError> {
    Ok(match runtime {
        Runtime::Gpu(g) => Some(
            nets.iter()
                .map(|d| GpuModel::from_graph_with_outputs(g, &d.graph, &d.head_values(), batch))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Runtime::Cpu => None,
    })
}

/// SCRFD (e.g. `scrfd_500m_bnkps.onnx`) at each of its input sizes, on one [`Runtime`].
pub struct FaceDetector {
    /// One imported network per size.
    nets: Vec<Scrfd>,
    /// Their engine models, on the GPU.
    gpu: Option<Vec<GpuModel>>,
    config: DetectConfig,
    runtime: Runtime,
    /// Photos per network pass (see [`FaceDetector::with_batch`]).
    batch: usize,
}

impl FaceDetector {
    /// Imports an SCRFD ONNX file's bytes at `sizes` (square, multiples of 32; normally
    /// [`DETECT_SIZES`]) and compiles it for `runtime`.
    pub fn from_bytes(
        bytes: &[u8],
        name: &str,
        sizes: &[usize],
        runtime: &Runtime,
    ) -> Result<FaceDetector, FaceError> {
        let not = |why: String| FaceError::NotADetector {
            name: name.into(),
            why,
        };
        if sizes.is_empty() || sizes.iter().any(|&s| s == 0 || s % 32 != 0) {
            return Err(EngineError::Input(format!(
                "detector sizes {sizes:?}: each must be a positive multiple of 32"
            ))
            .into());
        }
        let nets = sizes
            .iter()
            .map(|&s| Scrfd::import_bytes(bytes, name, [s, s]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| not(e.to_string()))?;
        let gpu = compile(&nets, runtime, 1)?;
        Ok(FaceDetector {
            nets,
            gpu,
            config: DetectConfig::default(),
            runtime: runtime.clone(),
            batch: 1,
        })
    }

    /// Detects in up to `batch` photos per network pass (default 1) in
    /// [`FaceDetector::detect_batch`]: on a GPU a pass over several photos costs little more
    /// than one; the engine's buffers grow with `batch` (about 40 MB per photo at 640×640).
    pub fn with_batch(mut self, batch: usize) -> Result<FaceDetector, FaceError> {
        if batch == 0 {
            return Err(EngineError::Input("a detector batch of 0 photos".into()).into());
        }
        self.gpu = compile(&self.nets, &self.runtime, batch)?;
        self.batch = batch;
        Ok(self)
    }

    /// Reads the detector file at `path` ([`FaceError::DetectorMissing`] when it is not there).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(
        path: impl AsRef<std::path::Path>,
        sizes: &[usize],
        runtime: &Runtime,
    ) -> Result<FaceDetector, FaceError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| FaceError::DetectorMissing {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        FaceDetector::from_bytes(&bytes, &path.display().to_string(), sizes, runtime)
    }

    /// Uses these score and NMS thresholds (default InsightFace's: 0.5 and 0.4).
    pub fn with_config(mut self, config: DetectConfig) -> FaceDetector {
        self.config = config;
        self
    }

    /// Where it runs.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The input sizes tried in turn.
    pub fn sizes(&self) -> Vec<usize> {
        self.nets.iter().map(|n| n.input_size[0]).collect()
    }

    /// Every face in `photo`: at the first size, and at the next ones only while none is found.
    pub async fn detect(&self, photo: &Photo) -> Result<Faces, FaceError> {
        Ok(self.detect_batch(&[photo]).await?.remove(0))
    }

    /// Every face in each photo, as [`FaceDetector::detect`] finds them, the photos going
    /// through the network [`FaceDetector::with_batch`] at a time (and the photos with no
    /// face at one size through the next size together).
    pub async fn detect_batch(&self, photos: &[&Photo]) -> Result<Vec<Faces>, FaceError> {
        let mut found = vec![
            Faces {
                faces: Vec::new(),
                size: 0,
            };
            photos.len()
        ];
        let mut pending: Vec<usize> = (0..photos.len()).collect();
        for (k, net) in self.nets.iter().enumerate() {
            let size = net.input_size[0];
            let mut still = Vec::new();
            for chunk in pending.chunks(self.batch) {
                let (mut inputs, scales): (Vec<Vec<f32>>, Vec<f32>) = chunk
                    .iter()
                    .map(|&i| letterbox_input(photos[i].image(), size))
                    .unzip();
                // (One photo's input is used as it is: no copy of its 4.9 MB at 640.)
                let x = match inputs.len() {
                    1 => inputs.pop().expect("one input"),
                    _ => inputs.concat(),
                };
                let n = chunk.len();
                let heads = match &self.gpu {
                    Some(models) => {
                        split_batch(&models[k].forward_values(Images::Nchw(&x), n).await?, n)
                    }
                    None => net.forward_batch(&x, n).map_err(EngineError::Model)?,
                };
                for ((&i, &scale), heads) in chunk.iter().zip(&scales).zip(heads) {
                    let faces = net
                        .detect_from_heads(&heads, scale, &self.config)
                        .map_err(EngineError::Model)?;
                    if faces.is_empty() {
                        still.push(i);
                    } else {
                        found[i] = Faces { faces, size };
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
        }
        Ok(found)
    }

    /// Detects, chooses by `choice` and aligns: the face the rest of the pipeline uses.
    pub async fn locate(&self, photo: &Photo, choice: Choice) -> Result<Located, FaceError> {
        let faces = self.detect(photo).await?;
        let chosen = faces.choose(photo, choice)?;
        let crop = align(photo, &faces.faces[chosen])?;
        Ok(Located {
            faces,
            chosen,
            crop,
        })
    }

    /// [`FaceDetector::detect_batch`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn detect_batch_blocking(&self, photos: &[&Photo]) -> Result<Vec<Faces>, FaceError> {
        pollster::block_on(self.detect_batch(photos))
    }

    /// [`FaceDetector::detect`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn detect_blocking(&self, photo: &Photo) -> Result<Faces, FaceError> {
        pollster::block_on(self.detect(photo))
    }

    /// [`FaceDetector::locate`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn locate_blocking(&self, photo: &Photo, choice: Choice) -> Result<Located, FaceError> {
        pollster::block_on(self.locate(photo, choice))
    }
}

impl Faces {
    /// The index of the face `choice` picks in `photo` (where these faces were found), or why
    /// there is none.
    pub fn choose(&self, photo: &Photo, choice: Choice) -> Result<usize, FaceError> {
        let list = &self.faces;
        let label = || photo.label().to_string();
        if list.is_empty() {
            return Err(FaceError::NoFace { photo: label() });
        }
        match choice {
            Choice::Central => {
                let c = pick_central(list, photo.width(), photo.height()).expect("faces exist");
                Ok(list
                    .iter()
                    .position(|f| std::ptr::eq(f, c))
                    .expect("from the list"))
            }
            Choice::Index(i) if i < list.len() => Ok(i),
            Choice::Index(index) => Err(FaceError::NoSuchFace {
                photo: label(),
                index,
                count: list.len(),
            }),
            Choice::Only if list.len() == 1 => Ok(0),
            Choice::Only => Err(FaceError::SeveralFaces {
                photo: label(),
                count: list.len(),
            }),
        }
    }
}

/// The 112×112 ArcFace crop of `face`.
pub(super) fn align(photo: &Photo, face: &Detection) -> Result<RgbImage, FaceError> {
    align_face(photo.image(), &face.kps).ok_or_else(|| FaceError::BadImage {
        photo: photo.label().into(),
        why: "the face's five keypoints coincide: nothing to align".into(),
    })
}
