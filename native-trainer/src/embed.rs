//! Face folders and batched embedding through libtorch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use efq_shared::cpu::l2_normalize_rows;
use efq_shared::format::Preprocessing;
use efq_shared::preprocess::load_face;
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
/// Where embeddings are computed: libtorch (CPU or CUDA), the wgpu engine, or the shared CPU
/// backend. All three run the same graph; `eval --backend` picks one.
pub enum Backend {
    Tch(tch::Device),
    Wgpu(efq_engine::Gpu),
    Cpu,
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Tch(d) => format!("libtorch {d:?}"),
            Backend::Wgpu(g) => {
                let arith = if g.float_dot() {
                    "exact f32 multiply-adds".to_string()
                } else {
                    format!("dot4 {:?}", g.dot4()).to_lowercase()
                };
                format!("wgpu engine on {} ({arith})", g.adapter())
            }
            Backend::Cpu => "CPU backend".into(),
        }
    }

    /// Images per forward pass that run fastest on this backend on this machine's 2 cores
    /// (see docs/RESULTS.md), or on a CUDA GPU.
    pub fn default_batch(&self) -> usize {
        match self {
            Backend::Tch(d) if d.is_cuda() => 128,
            Backend::Tch(_) => 4,
            Backend::Wgpu(_) => 32,
            Backend::Cpu => 4,
        }
    }

    /// Compiles `graph` for this backend.
    pub fn load(&self, graph: &efq_shared::graph::Graph, batch: usize) -> Result<Net> {
        Ok(match self {
            Backend::Tch(d) => Net::Tch(TchNet::new(graph, *d)?),
            // Plain and flipped views go through the engine together: 2·batch images.
            Backend::Wgpu(g) => Net::Wgpu(Box::new(efq_engine::GpuModel::from_graph(
                g,
                graph,
                2 * batch,
            )?)),
            Backend::Cpu => Net::Cpu(graph.clone()),
        })
    }
}

/// A graph compiled for one [`Backend`].
pub enum Net {
    Tch(TchNet),
    Wgpu(Box<efq_engine::GpuModel>),
    Cpu(efq_shared::graph::Graph),
}

impl Net {
    pub fn embedding_dim(&self) -> usize {
        match self {
            Net::Tch(n) => n.embedding_dim,
            Net::Wgpu(m) => m.info().embedding_dim,
            Net::Cpu(g) => g.embedding_dim().unwrap_or(0),
        }
    }

    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Net::Tch(n) => n.input_shape,
            Net::Wgpu(m) => m.info().input_shape,
            Net::Cpu(g) => g.input_shape,
        }
    }

    /// Raw embeddings of `n` NCHW images.
    pub fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        Ok(match self {
            Net::Tch(net) => {
                let [c, h, w] = self.input_shape().map(|d| d as i64);
                let t = Tensor::from_slice(x).reshape([n as i64, c, h, w]);
                let y = tch::no_grad(|| net.forward(&t))?;
                Vec::<f32>::try_from(y.to_device(tch::Device::Cpu).flatten(0, -1))?
            }
            Net::Wgpu(m) => m.forward_blocking(efq_engine::Images::Nchw(x), n)?,
            Net::Cpu(g) => efq_shared::cpu::forward(g, x, n)?,
        })
    }

    /// Raw embeddings of `n` NCHW images and of their mirror images.
    pub fn forward_with_flip(&self, x: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let dim = self.embedding_dim();
        match self {
            Net::Tch(net) => {
                let [c, h, w] = self.input_shape().map(|d| d as i64);
                let t = Tensor::from_slice(x).reshape([n as i64, c, h, w]);
                let (a, b) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
                    Ok((net.forward(&t)?, net.forward(&t.flip([3]))?))
                })?;
                let v =
                    |t: Tensor| Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).flatten(0, -1));
                Ok((v(a)?, v(b)?))
            }
            Net::Wgpu(_) | Net::Cpu(_) => {
                let mut both = x.to_vec();
                both.extend(efq_shared::preprocess::flip_horizontal(
                    x,
                    self.input_shape()[2],
                ));
                let y = match self {
                    Net::Wgpu(m) => m.forward_blocking(efq_engine::Images::Nchw(&both), 2 * n)?,
                    Net::Cpu(g) => efq_shared::cpu::forward(g, &both, 2 * n)?,
                    Net::Tch(_) => unreachable!(),
                };
                let (a, b) = y.split_at(n * dim);
                Ok((a.to_vec(), b.to_vec()))
            }
        }
    }
}

pub fn embed_images(
    net: &Net,
    root: &Path,
    paths: &[PathBuf],
    pre: &Preprocessing,
    batch: usize,
    label: &str,
) -> Result<Embeddings> {
    let dim = net.embedding_dim();
    let mut plain = Vec::with_capacity(paths.len() * dim);
    let mut flip = Vec::with_capacity(paths.len() * dim);
    let pb = progress(paths.len() as u64, label);
    let start = Instant::now();
    for chunk in paths.chunks(batch.max(1)) {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| load_face(root.join(p), pre).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        let flat: Vec<f32> = pixels.concat();
        let (a, b) = net.forward_with_flip(&flat, chunk.len())?;
        flip.extend(a.iter().zip(&b).map(|(x, y)| x + y));
        plain.extend(a);
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
