//! Image files as recognizer input: aligned crops as they are, raw photos through the engine's
//! face pipeline (`efq_engine::face`: detect, choose the central face, align) — the code apps
//! and the browser page run, so `embed`, `verify`, `enroll` and `identify` decide as they do.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Result;
use clap::{Args, ValueEnum};
use efq_engine::face::{Choice, DETECT_SIZES, FaceDetector, Photo, Runtime};
use efq_shared::format::Preprocessing;
use efq_shared::preprocess::pixels_to_chw;
use serde::Serialize;

use crate::embed::Backend;

/// Which images go through face detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectMode {
    /// Every image that is not already an aligned crop of the model's input size.
    Auto,
    /// Every image, crops included.
    Always,
    /// None: every image must be an aligned crop.
    Never,
}

/// The options of commands that read faces from image files.
#[derive(Args, Clone, Debug)]
pub struct PhotoArgs {
    /// Raw photos: `auto` finds the face in any image that is not an aligned crop of the
    /// model's input size (112×112) — SCRFD at 640, then 320; several faces: the one nearest
    /// the centre — and aligns it; `always` does so in crops too; `never` takes crops only.
    #[arg(long, value_enum, default_value = "auto")]
    pub detect: DetectMode,
    /// The SCRFD detector for raw photos [default: the one scripts/setup.sh installed].
    #[arg(long, env = "EFQ_DETECTOR")]
    pub detector: Option<PathBuf>,
}

/// The face a raw photo gave (absent for an aligned crop).
#[derive(Clone, Debug, Serialize)]
pub struct FaceUsed {
    /// Faces found in the photo.
    pub faces: usize,
    /// Which one was used (numbered best score first).
    pub chosen: usize,
    /// Its box `x1, y1, x2, y2` in photo pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    /// The detector input size that found it.
    pub detector_size: usize,
}

/// Reads image files into network input, detecting faces where [`PhotoArgs`] says.
pub struct FaceSource {
    args: PhotoArgs,
    runtime: Runtime,
    /// Opened at the first raw photo: a folder of crops never needs the detector.
    detector: OnceLock<FaceDetector>,
}

impl FaceSource {
    /// Detection runs on the recognizer's backend when that is the engine, else on the CPU
    /// backend.
    pub fn new(args: &PhotoArgs, backend: &Backend) -> FaceSource {
        let runtime = match backend {
            Backend::Wgpu(g) => Runtime::Gpu(g.clone()),
            _ => Runtime::Cpu,
        };
        FaceSource {
            args: args.clone(),
            runtime,
            detector: OnceLock::new(),
        }
    }

    fn detector(&self) -> Result<&FaceDetector> {
        if let Some(d) = self.detector.get() {
            return Ok(d);
        }
        let path = crate::paths::detector(self.args.detector.clone())?;
        let d = FaceDetector::open(&path, &DETECT_SIZES, &self.runtime)?;
        Ok(self.detector.get_or_init(|| d))
    }

    /// One image file as normalised CHW input of `pre.size`, and the face used when it was a
    /// raw photo.
    pub fn load(&self, path: &Path, pre: &Preprocessing) -> Result<(Vec<f32>, Option<FaceUsed>)> {
        let photo = Photo::open(path)?;
        let [h, w] = pre.size;
        let is_crop = (photo.width(), photo.height()) == (w, h);
        let detect = match self.args.detect {
            DetectMode::Auto => !is_crop,
            DetectMode::Always => true,
            DetectMode::Never => false,
        };
        if !detect {
            anyhow::ensure!(
                is_crop,
                "{}: {}×{} is not an aligned {w}×{h} face crop (--detect auto aligns raw photos)",
                path.display(),
                photo.width(),
                photo.height()
            );
            return Ok((pixels_to_chw(photo.image().as_raw(), w, h, pre), None));
        }
        let l = self.detector()?.locate_blocking(&photo, Choice::Central)?;
        anyhow::ensure!(
            (w, h) == (l.crop.width() as usize, l.crop.height() as usize),
            "the model takes {w}×{h} inputs; faces are aligned to 112×112 ArcFace crops"
        );
        let d = l.detection();
        let used = FaceUsed {
            faces: l.faces.faces.len(),
            chosen: l.chosen,
            bbox: d.bbox,
            score: d.score,
            detector_size: l.faces.size,
        };
        Ok((pixels_to_chw(l.crop.as_raw(), w, h, pre), Some(used)))
    }
}
