//! `trainer align SRC DST`: raw photos → 112×112 ArcFace crops, with the engine's face pipeline
//! (`efq_engine::face`: SCRFD, the central face, five-point alignment) on the CPU backend.
//!
//! Rules, in order:
//! - every `.jpg`/`.jpeg`/`.png` under SRC (recursively) gives at most one crop at the same
//!   relative path under DST, in the same format (JPEG at quality 95, like `aligned112`);
//! - detection at `--det-size` (640) with InsightFace's thresholds (score 0.5, NMS IoU 0.4);
//!   photos without a face there are retried at `--retry-size` (320; 0 disables): close-ups
//!   whose face fills the frame are too large for the 640 anchors (16 of LFW's 13,233);
//! - several faces: the one whose box centre is nearest the photo's centre (portraits and
//!   identity collections are framed on the subject; see `efq_shared::detect::pick_central`);
//! - photos with no face, or that cannot be read, get no crop and are listed in the report
//!   (`DST/align-report.json`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use efq_engine::face::{Choice, DetectConfig, FaceDetector, FaceError, Photo, Runtime};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

/// Options of `trainer align`.
#[derive(clap::Args, Clone, Debug)]
pub struct AlignCmd {
    /// Folder of photos, searched recursively (.jpg, .jpeg, .png).
    pub src: PathBuf,
    /// Output folder: one 112×112 crop per photo with a face, at the same relative path.
    pub dst: PathBuf,
    /// The SCRFD detector [default: scrfd_500m_bnkps.onnx where scripts/setup.sh installs it,
    /// $EFQ_CACHE/models, EFQ_CACHE defaulting to ~/.cache/efquantface].
    #[arg(long, env = "EFQ_DETECTOR")]
    pub detector: Option<PathBuf>,
    /// Detector input size (square, a multiple of 32).
    #[arg(long, default_value_t = 640)]
    pub det_size: usize,
    /// Retry photos without a face at this size (0: no retry).
    #[arg(long, default_value_t = 320)]
    pub retry_size: usize,
    /// Minimum face score.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.4)]
    pub nms: f32,
    /// JPEG quality of the crops.
    #[arg(long, default_value_t = 95)]
    pub quality: u8,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// What `trainer align` did; written to `DST/align-report.json`.
#[derive(Serialize, Debug, Default)]
pub struct AlignReport {
    pub src: String,
    pub dst: String,
    pub detector: String,
    pub det_size: usize,
    pub retry_size: usize,
    pub threshold: f32,
    pub nms: f32,
    pub rule: &'static str,
    pub images: usize,
    pub aligned: usize,
    /// Photos with more than one face (the central one was kept).
    pub multiple_faces: usize,
    /// Photos whose face was found only at `retry_size`.
    pub retried: Vec<String>,
    /// Photos without a face (relative to SRC).
    pub no_face: Vec<String>,
    /// Photos that could not be read or written, with the reason.
    pub failed: Vec<Failure>,
    pub seconds: f64,
    /// Mean detection time per photo (CPU backend, this machine's threads shared).
    pub detect_ms_mean: f64,
}

#[derive(Serialize, Debug)]
pub struct Failure {
    pub image: String,
    pub error: String,
}

const RULE: &str = "the face whose box centre is nearest the image centre";

/// Photos under `root`, recursively, as sorted paths relative to it.
pub fn scan_photos(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    walk(root, &mut all)?;
    let mut rel: Vec<PathBuf> = all
        .into_iter()
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect();
    rel.sort();
    Ok(rel)
}

enum Outcome {
    Aligned { faces: usize, retried: bool },
    NoFace,
}

fn save(crop: &RgbImage, path: &Path, quality: u8) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        crop.save(path)?;
    } else {
        let file = std::fs::File::create(path)?;
        let mut w = std::io::BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, quality).encode_image(crop)?;
    }
    Ok(())
}

/// Aligns every photo of `c.src` into `c.dst`; `progress` draws a progress bar on stderr.
pub fn align_folder(c: &AlignCmd, progress: bool) -> Result<AlignReport> {
    let detector = crate::paths::detector(c.detector.clone())?;
    if !detector.exists() {
        bail!(
            "detector {} not found (run `bash scripts/setup.sh`, or pass --detector)",
            detector.display()
        );
    }
    // The engine's face pipeline on the CPU backend: the detector, the choice and the
    // alignment apps and the browser page use.
    let sizes: Vec<usize> = std::iter::once(c.det_size)
        .chain((c.retry_size != 0).then_some(c.retry_size))
        .collect();
    let finder = FaceDetector::open(&detector, &sizes, &Runtime::Cpu)?.with_config(DetectConfig {
        score_threshold: c.threshold,
        nms_iou: c.nms,
    });
    let photos = scan_photos(&c.src)?;
    if photos.is_empty() {
        bail!("{} holds no .jpg, .jpeg or .png photos", c.src.display());
    }
    let bar = if progress {
        ProgressBar::new(photos.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("aligning {bar:40} {pos}/{len} [{elapsed} < {eta}] {msg}")
            .unwrap(),
    );
    let started = Instant::now();
    let detect_time = Mutex::new(0f64);
    let results: Vec<(PathBuf, Result<Outcome>)> = photos
        .par_iter()
        .map(|rel| {
            let run = || -> Result<Outcome> {
                let src = c.src.join(rel);
                let photo = Photo::open(&src)?;
                let t0 = Instant::now();
                let found = finder.locate_blocking(&photo, Choice::Central);
                *detect_time.lock().unwrap() += t0.elapsed().as_secs_f64();
                let located = match found {
                    Ok(l) => l,
                    Err(FaceError::NoFace { .. }) => return Ok(Outcome::NoFace),
                    Err(e) => return Err(e.into()),
                };
                let crop = &located.crop;
                let dst = c.dst.join(rel);
                save(crop, &dst, c.quality)
                    .with_context(|| format!("cannot write {}", dst.display()))?;
                Ok(Outcome::Aligned {
                    faces: located.faces.faces.len(),
                    retried: located.faces.size != c.det_size,
                })
            };
            let r = run();
            bar.inc(1);
            (rel.clone(), r)
        })
        .collect();
    bar.finish_and_clear();
    let mut report = AlignReport {
        src: c.src.display().to_string(),
        dst: c.dst.display().to_string(),
        detector: detector.display().to_string(),
        det_size: c.det_size,
        retry_size: c.retry_size,
        threshold: c.threshold,
        nms: c.nms,
        rule: RULE,
        images: photos.len(),
        ..Default::default()
    };
    for (rel, r) in results {
        let name = rel.display().to_string();
        match r {
            Ok(Outcome::Aligned { faces, retried }) => {
                report.aligned += 1;
                report.multiple_faces += usize::from(faces > 1);
                if retried {
                    report.retried.push(name);
                }
            }
            Ok(Outcome::NoFace) => report.no_face.push(name),
            Err(e) => report.failed.push(Failure {
                image: name,
                error: format!("{e:#}"),
            }),
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.detect_ms_mean = *detect_time.lock().unwrap() / photos.len() as f64 * 1e3;
    std::fs::create_dir_all(&c.dst)
        .with_context(|| format!("cannot create {}", c.dst.display()))?;
    efq_shared::format::write_atomic(
        &c.dst.join("align-report.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(report)
}

/// `trainer align`: align, then print the summary (or the JSON report with `--json`).
pub fn run(c: &AlignCmd) -> Result<()> {
    let r = align_folder(c, !c.json)?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "| photos | aligned | several faces | found at {} only | no face | failed | seconds |",
        r.retry_size
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.1} |",
        r.images,
        r.aligned,
        r.multiple_faces,
        r.retried.len(),
        r.no_face.len(),
        r.failed.len(),
        r.seconds
    );
    println!("several faces: kept {RULE}");
    for n in &r.no_face {
        println!("no face: {n}");
    }
    for f in &r.failed {
        println!("failed: {}: {}", f.image, f.error);
    }
    println!(
        "detection {:.0} ms per photo (CPU backend); report: {}",
        r.detect_ms_mean,
        c.dst.join("align-report.json").display()
    );
    Ok(())
}
