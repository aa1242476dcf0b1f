//! `trainer verify`: two photos (or aligned crops) compared, same person or not at the model's
//! threshold.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use efq_trainer::engine_cli::{self, BackendArgs};
use efq_trainer::paths;
use efq_trainer::photos::{FaceSource, PhotoArgs};

#[derive(Args)]
pub struct VerifyCmd {
    /// Model: an ONNX or arcface_torch .pth teacher, or a packed .efq student [default: the
    /// teacher scripts/setup.sh installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// First photo or aligned crop (a photo's face is found and aligned first: see --detect).
    a: PathBuf,
    /// Second photo or aligned crop.
    b: PathBuf,
    #[command(flatten)]
    photos: PhotoArgs,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

impl VerifyCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
        let model = paths::teacher(c.model, "--model")?;
        let backend = c.backend.open(&model)?;
        let faces = FaceSource::new(&c.photos, &backend);
        let r = engine_cli::verify(&backend, &model, &faces, &c.a, &c.b)?;
        if c.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            let verdict = match r.same {
                Some(true) => "same person".to_string(),
                Some(false) => "different people".to_string(),
                None => "no same/different decision".into(),
            };
            for (path, face) in [(&r.a, &r.a_face), (&r.b, &r.b_face)] {
                if let Some(f) = face {
                    println!(
                        "{}: {} face(s), using #{} at ({:.0}, {:.0})–({:.0}, {:.0}), score {:.2}",
                        path.display(),
                        f.faces,
                        f.chosen,
                        f.bbox[0],
                        f.bbox[1],
                        f.bbox[2],
                        f.bbox[3],
                        f.score
                    );
                }
            }
            println!(
                "cosine {:.4}{} → {verdict}  ({:.1} ms on {})",
                r.similarity,
                r.threshold
                    .as_ref()
                    .map(|t| format!(" vs threshold {:.4} (FAR {:e})", t.cosine, t.far))
                    .unwrap_or_default(),
                r.latency_ms,
                r.backend
            );
            if r.same.is_none() {
                println!(
                    "{} stores no threshold to decide at (ONNX teachers never do). Files written by \
                     `trainer quantize` or `trainer finetune` carry one; `trainer quantize --bits \
                     w8a8 --model {}` makes such a file from this teacher.",
                    model.display(),
                    model.display()
                );
            }
        }

        Ok(())
    }
}
