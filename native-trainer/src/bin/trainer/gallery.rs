//! `trainer enroll` and `trainer identify`: 1:N search over a gallery file
//! (`efq_shared::gallery`), faces embedded with the flip test as `verify` does.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use efq_shared::gallery::Gallery;
use efq_trainer::engine_cli::{self, BackendArgs};
use efq_trainer::paths;
use efq_trainer::photos::{FaceSource, PhotoArgs};

#[derive(Args)]
pub struct EnrollCmd {
    /// Model that embeds the faces: a packed .efq (whose threshold decides "unknown"), or an
    /// ONNX / .pth teacher [default: the teacher scripts/setup.sh installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Gallery file (safetensors); created, or added to when it exists.
    #[arg(long)]
    gallery: PathBuf,
    /// Photos or aligned crops, or folders of them, each face named after the folder it is in
    /// (`person/photo.jpg` enrolls "person"); `NAME=PATH` names it explicitly. A photo's face
    /// is found and aligned first (see --detect).
    #[arg(required = true)]
    faces: Vec<String>,
    #[command(flatten)]
    photos: PhotoArgs,
}

#[derive(Args)]
pub struct IdentifyCmd {
    /// The model the gallery was enrolled with [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Gallery file written by `trainer enroll`.
    #[arg(long)]
    gallery: PathBuf,
    /// Matches to list per probe.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Photos or aligned crops to identify, or folders of them (a photo's face is found and
    /// aligned first: see --detect).
    #[arg(required = true)]
    probes: Vec<PathBuf>,
    #[command(flatten)]
    photos: PhotoArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Expands folders (recursively, in path order) into image files.
fn expand(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_dir() {
        let before = out.len();
        crate::embed::images_under(p, out, 0)?;
        out[before..].sort();
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

fn model_name(model: &Path) -> String {
    paths::file_stem(model)
}

impl EnrollCmd {
    pub fn run(self) -> Result<()> {
        let model = paths::teacher(self.model, "--model")?;
        let backend = self.backend.open(&model)?;
        let mut named: Vec<(String, PathBuf)> = Vec::new();
        for f in &self.faces {
            let (name, path) = match f.split_once('=') {
                Some((n, p)) if !Path::new(f).exists() => (Some(n.to_string()), PathBuf::from(p)),
                _ => (None, PathBuf::from(f)),
            };
            let mut files = Vec::new();
            expand(&path, &mut files)?;
            for file in files {
                let n = name.clone().unwrap_or_else(|| {
                    file.parent()
                        .and_then(|d| d.file_name())
                        .map(|d| d.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                named.push((n, file));
            }
        }
        let threshold = engine_cli::threshold_of(&model).map(|t| t.cosine);
        let mut gallery = if self.gallery.exists() {
            let g = Gallery::load(&self.gallery)?;
            if g.model != model_name(&model) {
                bail!(
                    "{} was enrolled with {}, not {}: embeddings of different models do not compare",
                    self.gallery.display(),
                    g.model,
                    model_name(&model)
                );
            }
            g
        } else {
            Gallery::new(0, model_name(&model), threshold)
        };
        let files: Vec<PathBuf> = named.iter().map(|(_, f)| f.clone()).collect();
        let mut k = 0;
        engine_cli::embed_files(
            &backend,
            &model,
            &files,
            &FaceSource::new(&self.photos, &backend),
            backend.default_batch(),
            true,
            &mut |row| {
                if gallery.is_empty() && gallery.dim == 0 {
                    gallery = Gallery::new(row.embedding.len(), gallery.model.clone(), threshold);
                }
                gallery.enroll(&named[k].0, &row.embedding)?;
                k += 1;
                Ok(())
            },
        )?;
        gallery.save(&self.gallery)?;
        println!(
            "{}: {} faces of {} people ({} added), {}",
            self.gallery.display(),
            gallery.len(),
            gallery.people().len(),
            k,
            match gallery.threshold {
                Some(t) => format!("unknown below cosine {t:.4} (the model's FAR 1e-3 threshold)"),
                None =>
                    "no threshold: the model stores none, so every probe gets its best match".into(),
            }
        );
        Ok(())
    }
}

impl IdentifyCmd {
    pub fn run(self) -> Result<()> {
        let model = paths::teacher(self.model, "--model")?;
        let gallery = Gallery::load(&self.gallery)?;
        if gallery.model != model_name(&model) {
            bail!(
                "{} was enrolled with {}; pass that model with --model",
                self.gallery.display(),
                gallery.model
            );
        }
        let backend = self.backend.open(&model)?;
        let mut files = Vec::new();
        for p in &self.probes {
            expand(p, &mut files)?;
        }
        let mut rows = Vec::new();
        engine_cli::embed_files(
            &backend,
            &model,
            &files,
            &FaceSource::new(&self.photos, &backend),
            backend.default_batch(),
            true,
            &mut |row| {
                let id = gallery.identify(&row.embedding, self.top)?;
                rows.push(serde_json::json!({"probe": row.image, "face": row.face,
                    "identity": id.identity, "decided": id.decided, "matches": id.matches}));
                if !self.json {
                    let best = id.best().map(|m| format!("{} ({:.4})", m.name, m.cosine));
                    let verdict = match (&id.identity, id.decided) {
                        (Some(n), _) => n.clone(),
                        (None, true) => "unknown".into(),
                        (None, false) => "no decision (no threshold)".into(),
                    };
                    println!(
                        "{} → {verdict}   best {}",
                        row.image.display(),
                        best.unwrap_or_default()
                    );
                }
                Ok(())
            },
        )?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Ok(())
    }
}
