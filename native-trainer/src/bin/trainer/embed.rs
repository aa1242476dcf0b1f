//! `trainer embed`: the L2-normalised embeddings of photos or aligned crops, as JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use efq_trainer::engine_cli::{self, BackendArgs};
use efq_trainer::paths;
use efq_trainer::photos::{FaceSource, PhotoArgs};

#[derive(Args)]
pub struct EmbedCmd {
    /// Model: an ONNX or arcface_torch .pth teacher, or a packed .efq student [default: the
    /// teacher scripts/setup.sh installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Photos or aligned 112×112 crops, or folders of them (every .jpg/.jpeg/.png below, in
    /// path order). A raw photo's face is found and aligned first (see --detect); its JSON row
    /// says which face was used.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    photos: PhotoArgs,
    /// Images per forward pass [default: the backend's, as in `eval`]. Memory follows the
    /// batch, not the number of images.
    #[arg(long)]
    batch: Option<usize>,
    /// Output JSON file [default: stdout]. Written beside and renamed into place when complete.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl EmbedCmd {
    pub fn run(self) -> Result<()> {
        let model = paths::teacher(self.model, "--model")?;
        let backend = self.backend.open(&model)?;
        let batch = self.batch.unwrap_or(backend.default_batch());
        let mut images = Vec::new();
        for p in &self.images {
            if p.is_dir() {
                let before = images.len();
                images_under(p, &mut images, 0)?;
                images[before..].sort();
            } else {
                images.push(p.clone());
            }
        }
        // A JSON array written row by row: `[{"image": …, "embedding": […]}, …]`.
        let write = |w: &mut dyn Write| -> Result<()> {
            let mut first = true;
            w.write_all(b"[")?;
            let faces = FaceSource::new(&self.photos, &backend);
            engine_cli::embed_files(
                &backend,
                &model,
                &images,
                &faces,
                batch,
                false,
                &mut |row| {
                    w.write_all(if first { b"\n" } else { b",\n" })?;
                    first = false;
                    serde_json::to_writer(&mut *w, &row)?;
                    Ok(())
                },
            )?;
            w.write_all(b"\n]\n")?;
            w.flush()?;
            Ok(())
        };
        match &self.out {
            Some(path) => {
                let tmp = path.with_extension("json.tmp");
                let file = std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                let mut w = std::io::BufWriter::new(file);
                let written = write(&mut w).and_then(|_| {
                    w.into_inner()
                        .map_err(|e| e.into_error())?
                        .sync_all()
                        .map_err(Into::into)
                });
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            None => write(&mut std::io::BufWriter::new(std::io::stdout().lock()))?,
        }
        Ok(())
    }
}

/// Appends the image files below `dir`. Symbolic links to folders are not followed (a link
/// back up the tree would never end), nor is anything deeper than 16 levels.
pub(crate) fn images_under(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > 16 {
        bail!("{} is more than 16 folders deep", dir.display());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            images_under(&path, out, depth + 1)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        {
            out.push(path);
        }
    }
    Ok(())
}
