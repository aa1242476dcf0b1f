//! Face folders and batched embedding through libtorch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use efq_shared::format::Preprocessing;
use efq_shared::preprocess::load_face;
use efq_shared::reference::l2_normalize_rows;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use tch::Tensor;

use crate::net::TchNet;

/// Images of a folder with one sub-folder per identity, in sorted order.
pub struct FaceFolder {
    pub root: PathBuf,
    /// Paths relative to `root`, e.g. `Aaron_Eckhart/Aaron_Eckhart_0001.jpg`.
    pub images: Vec<PathBuf>,
    /// Identity index (into `identities`) of each image.
    pub labels: Vec<u32>,
    pub identities: Vec<String>,
}

impl FaceFolder {
    pub fn scan(root: &Path) -> Result<Self> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .with_context(|| format!("cannot read face folder {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let mut folder = FaceFolder {
            root: root.to_path_buf(),
            images: vec![],
            labels: vec![],
            identities: vec![],
        };
        for dir in dirs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")
                    })
                })
                .collect();
            if files.is_empty() {
                continue;
            }
            files.sort();
            let label = folder.identities.len() as u32;
            folder
                .identities
                .push(dir.file_name().unwrap().to_string_lossy().into_owned());
            for f in files {
                folder
                    .images
                    .push(f.strip_prefix(root).unwrap().to_path_buf());
                folder.labels.push(label);
            }
        }
        if folder.images.is_empty() {
            bail!(
                "{} holds no face images (expected <identity>/<image>.jpg)",
                root.display()
            );
        }
        Ok(folder)
    }

    pub fn index(&self) -> HashMap<&Path, usize> {
        self.images
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_path(), i))
            .collect()
    }
}

/// Row-major, L2-normalised embeddings of a list of images: without and with the flip test.
pub struct Embeddings {
    pub dim: usize,
    /// emb(x), normalised.
    pub plain: Vec<f32>,
    /// emb(x) + emb(flip(x)), normalised.
    pub flip: Vec<f32>,
    /// Images per second (each image run twice: plain and flipped).
    pub images_per_second: f64,
}

pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40.cyan/blue}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}, {{per_sec}}]"
        ))
        .expect("valid template"),
    );
    pb
}

/// Embeds `paths` (relative to `root`) in batches.
pub fn embed_images(
    net: &TchNet,
    root: &Path,
    paths: &[PathBuf],
    pre: &Preprocessing,
    batch: usize,
    label: &str,
) -> Result<Embeddings> {
    let dim = net.embedding_dim;
    let mut plain = Vec::with_capacity(paths.len() * dim);
    let mut flip = Vec::with_capacity(paths.len() * dim);
    let pb = progress(paths.len() as u64, label);
    let start = Instant::now();
    for chunk in paths.chunks(batch.max(1)) {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| load_face(root.join(p), pre).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        let [c, h, w] = net.input_shape.map(|d| d as i64);
        let flat: Vec<f32> = pixels.concat();
        let x = Tensor::from_slice(&flat).reshape([chunk.len() as i64, c, h, w]);
        let (a, b) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let a = net.forward(&x)?;
            let b = net.forward(&x.flip([3]))?;
            Ok((a, b))
        })?;
        let sum = &a + &b;
        plain.extend(Vec::<f32>::try_from(
            a.to_device(tch::Device::Cpu).flatten(0, -1),
        )?);
        flip.extend(Vec::<f32>::try_from(
            sum.to_device(tch::Device::Cpu).flatten(0, -1),
        )?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let images_per_second = paths.len() as f64 / start.elapsed().as_secs_f64();
    l2_normalize_rows(&mut plain, dim);
    l2_normalize_rows(&mut flip, dim);
    if let Some(bad) = plain.iter().position(|v| !v.is_finite()) {
        bail!(
            "{label}: non-finite embedding for image {}",
            paths[bad / dim].display()
        );
    }
    Ok(Embeddings {
        dim,
        plain,
        flip,
        images_per_second,
    })
}
