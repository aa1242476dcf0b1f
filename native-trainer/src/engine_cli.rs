//! The engine's command-line face: `embed`, `verify` and `bench` over any backend (by default
//! the fastest one present: the wgpu engine on a hardware GPU, else a CPU path), sharing model
//! loading and image decoding with `eval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use efq_shared::cpu::l2_normalize_rows;
use efq_shared::format::{PackedModel, Preprocessing, Threshold};
use serde::Serialize;

use crate::embed::Backend;
use crate::eval::load_model;
use crate::photos::{FaceSource, FaceUsed};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The fastest one present, said on stderr: the wgpu engine on a hardware GPU adapter;
    /// without one libtorch on CUDA; on the CPU the CPU backend for a quantized model,
    /// libtorch for a float one.
    Auto,
    /// The WGSL engine through wgpu (Vulkan/Metal/DX12/GL; lavapipe, a software GPU on the
    /// CPU, where there is no GPU).
    Wgpu,
    /// libtorch, CUDA when present (quantized layers as fake quantization: the same integers).
    Tch,
    /// The shared CPU backend (`efq_shared::cpu`), on all cores: a quantized model's exact
    /// integer arithmetic (bit for bit the oracle's, which every backend is tested against,
    /// and the fastest CPU path for a quantized model); a float model through im2col and
    /// sgemm. `reference`, its former name, is still accepted.
    #[value(alias = "reference")]
    Cpu,
}

#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where to run the network. `auto` takes the wgpu engine only on a hardware GPU adapter
    /// (never a software one such as lavapipe), else libtorch on CUDA, else the fastest CPU
    /// path for the model, and says which on stderr; --polyfill and --arith (wgpu options) make
    /// it the wgpu engine, --cpu keeps it on the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// libtorch: use the CPU even when CUDA is available (auto: stay on the CPU).
    #[arg(long)]
    pub cpu: bool,
    /// wgpu: use the dot4 polyfill even where `dot4I8Packed` exists.
    #[arg(long)]
    pub polyfill: bool,
    /// wgpu: how integer convolutions multiply: packed dot4 (auto: the engine's default) or
    /// exact f32 multiply-adds. Results are identical; only the speed differs.
    #[arg(long, value_enum, default_value = "auto")]
    pub arith: Arith,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arith {
    Auto,
    Dot4,
    Float,
}

impl BackendArgs {
    /// Opens the backend for `model`; `--backend auto` decides here (from the adapters present
    /// and whether the model is quantized) and says on stderr what it chose and why.
    pub fn open(&self, model: &Path) -> Result<Backend> {
        Ok(match self.backend {
            BackendKind::Tch => Backend::Tch(crate::net::pick_device(self.cpu)),
            BackendKind::Cpu => Backend::Cpu,
            BackendKind::Wgpu => self.wgpu()?,
            BackendKind::Auto => {
                let (backend, why) = self.auto(model)?;
                eprintln!(
                    "backend: {} (auto: {why}; --backend wgpu|tch|cpu picks one)",
                    backend.describe()
                );
                backend
            }
        })
    }

    fn wgpu(&self) -> Result<Backend> {
        Ok(Backend::Wgpu(efq_engine::request_blocking(
            &efq_engine::GpuOptions {
                force_polyfill: self.polyfill,
                float_dot: self.arith == Arith::Float,
                ..Default::default()
            },
        )?))
    }

    /// `--backend auto`: the backend and the reason for it.
    fn auto(&self, model: &Path) -> Result<(Backend, String)> {
        if self.polyfill || self.arith != Arith::Auto {
            return Ok((
                self.wgpu()?,
                "--polyfill and --arith are wgpu options".into(),
            ));
        }
        let no_gpu = if self.cpu {
            "--cpu".to_string()
        } else {
            let seen = match self.wgpu() {
                Ok(Backend::Wgpu(g)) if !g.adapter().software => {
                    let why = format!("hardware GPU adapter {}", g.adapter());
                    return Ok((Backend::Wgpu(g), why));
                }
                Ok(Backend::Wgpu(g)) => {
                    format!("no hardware GPU, wgpu offers only {}", g.adapter())
                }
                Ok(_) => unreachable!("wgpu() opens the engine"),
                Err(e) => format!("no GPU adapter ({e})"),
            };
            if tch::Cuda::is_available() {
                return Ok((
                    Backend::Tch(crate::net::pick_device(false)),
                    format!("{seen}, CUDA present"),
                ));
            }
            format!("{seen}, no CUDA")
        };
        Ok(if is_quantized(model)? {
            (
                Backend::Cpu,
                format!(
                    "{no_gpu}; a quantized model runs fastest on the CPU backend's integer path"
                ),
            )
        } else {
            (
                Backend::Tch(tch::Device::Cpu),
                format!("{no_gpu}; a float model runs fastest in libtorch on the CPU"),
            )
        })
    }
}

/// Whether `model` holds quantized layers (ONNX and `.pth` teachers are float; packed files say).
fn is_quantized(model: &Path) -> Result<bool> {
    Ok(!crate::eval::is_float_teacher(model) && PackedModel::load(model)?.graph.is_quantized())
}

/// The model's stored threshold (packed files only).
pub fn threshold_of(path: &Path) -> Option<Threshold> {
    PackedModel::load(path).ok()?.manifest.threshold
}

/// The images' network input, one after the other, and the face each raw photo gave.
fn load_images(
    faces: &FaceSource,
    pre: &Preprocessing,
    images: &[PathBuf],
) -> Result<(Vec<f32>, Vec<Option<FaceUsed>>)> {
    let mut x = Vec::new();
    let mut used = Vec::new();
    for p in images {
        let (chw, face) = faces.load(p, pre)?;
        x.extend(chw);
        used.push(face);
    }
    Ok((x, used))
}

#[derive(Serialize)]
pub struct EmbeddingRow {
    pub image: PathBuf,
    /// The face used, when the image was a raw photo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<FaceUsed>,
    pub embedding: Vec<f32>,
}

/// L2-normalised embeddings of image files (aligned crops, or raw photos as `faces` says), handed to `row` one at a time in
/// the order given. Images are read and embedded `batch` at a time, so memory stays that of
/// one batch however many images there are (the rows are the caller's to keep or write out).
/// With `flip`, each embedding is that of the image plus its mirror image (the flip test,
/// as `verify` and the stored thresholds use).
pub fn embed_files(
    backend: &Backend,
    model: &Path,
    images: &[PathBuf],
    faces: &FaceSource,
    batch: usize,
    flip: bool,
    row: &mut dyn FnMut(EmbeddingRow) -> Result<()>,
) -> Result<()> {
    if images.is_empty() {
        bail!("no images given");
    }
    let batch = batch.clamp(1, images.len());
    let (graph, pre) = load_model(model)?;
    let net = backend.load(&graph, batch)?;
    let dim = net.embedding_dim();
    let pb = crate::embed::progress(images.len() as u64, "embed");
    for chunk in images.chunks(batch) {
        let (x, used) = load_images(faces, &pre, chunk)?;
        let mut plain = if flip {
            let (p, f) = net.forward_with_flip(&x, chunk.len())?;
            p.iter().zip(&f).map(|(a, b)| a + b).collect()
        } else {
            net.forward(&x, chunk.len())?
        };
        l2_normalize_rows(&mut plain, dim);
        for ((p, e), face) in chunk.iter().zip(plain.chunks(dim)).zip(used) {
            row(EmbeddingRow {
                image: p.clone(),
                face,
                embedding: e.to_vec(),
            })?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(())
}

#[derive(Serialize)]
pub struct VerifyReport {
    pub a: PathBuf,
    pub b: PathBuf,
    /// The face used in `a`, when it was a raw photo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_face: Option<FaceUsed>,
    /// The face used in `b`, when it was a raw photo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_face: Option<FaceUsed>,
    pub model: PathBuf,
    pub backend: String,
    /// Cosine similarity of the flip-test embeddings.
    pub similarity: f32,
    pub threshold: Option<Threshold>,
    /// `None` when the model has no stored threshold (ONNX teachers).
    pub same: Option<bool>,
    /// Wall time of the forward passes (both images, plain and flipped), milliseconds.
    pub latency_ms: f64,
}

pub fn verify(
    backend: &Backend,
    model: &Path,
    faces: &FaceSource,
    a: &Path,
    b: &Path,
) -> Result<VerifyReport> {
    let (graph, pre) = load_model(model)?;
    let (x, mut used) = load_images(faces, &pre, &[a.to_path_buf(), b.to_path_buf()])?;
    let b_face = used.pop().flatten();
    let a_face = used.pop().flatten();
    let net = backend.load(&graph, 2)?;
    net.forward_with_flip(&x, 2)?; // warm-up: first dispatches compile lazily on some drivers
    let start = Instant::now();
    let (p, f) = net.forward_with_flip(&x, 2)?;
    let latency_ms = start.elapsed().as_secs_f64() * 1e3;
    let dim = net.embedding_dim();
    let mut e: Vec<f32> = p.iter().zip(&f).map(|(x, y)| x + y).collect();
    l2_normalize_rows(&mut e, dim);
    let similarity: f32 = e[..dim].iter().zip(&e[dim..]).map(|(x, y)| x * y).sum();
    let threshold = threshold_of(model);
    Ok(VerifyReport {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        a_face,
        b_face,
        model: model.to_path_buf(),
        backend: backend.describe(),
        similarity,
        same: threshold.as_ref().map(|t| similarity >= t.cosine),
        threshold,
        latency_ms,
    })
}

#[derive(Serialize)]
pub struct BenchRow {
    pub model: String,
    pub backend: String,
    pub batch: usize,
    pub iterations: usize,
    pub images_per_second: f64,
    /// Median wall time of one batch, milliseconds.
    pub latency_ms: f64,
    pub peak_rss_mb: f64,
}

/// Throughput and latency of plain forward passes (no flip) on random images.
pub fn bench(
    backend: &Backend,
    model: &Path,
    batches: &[usize],
    min_seconds: f64,
) -> Result<Vec<BenchRow>> {
    let (graph, _) = load_model(model)?;
    let name = crate::paths::file_stem(model);
    let mut rows = Vec::new();
    for &batch in batches {
        let net = backend.load(&graph, batch.div_ceil(2).max(1))?;
        let x = efq_shared::builders::random_images(batch, graph.input_shape, 1);
        let run = || -> Result<()> {
            match &net {
                crate::embed::Net::Tch(n) => {
                    let [c, h, w] = n.input_shape.map(|d| d as i64);
                    let t = tch::Tensor::from_slice(&x).reshape([batch as i64, c, h, w]);
                    let y = tch::no_grad(|| n.forward(&t))?;
                    let _ = Vec::<f32>::try_from(y.to_device(tch::Device::Cpu).flatten(0, -1))?;
                }
                crate::embed::Net::Wgpu(m) => {
                    m.forward_blocking(efq_engine::Images::Nchw(&x), batch)?;
                }
                crate::embed::Net::Cpu(g) => {
                    efq_shared::cpu::forward(g, &x, batch)?;
                }
            }
            Ok(())
        };
        run().context("warm-up")?;
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 3 || start.elapsed().as_secs_f64() < min_seconds {
            let t = Instant::now();
            run()?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        rows.push(BenchRow {
            model: name.clone(),
            backend: backend.describe(),
            batch,
            iterations: times.len(),
            images_per_second: batch as f64 / median,
            latency_ms: median * 1e3,
            peak_rss_mb: crate::memory::peak_rss_mb(),
        });
    }
    Ok(rows)
}

/// Per-kernel time of one forward pass of `batch` random images through the wgpu engine, each
/// dispatch timed on its own; printed as totals per kernel and the ten slowest layers.
pub fn profile(backend: &Backend, model: &Path, batch: usize) -> Result<()> {
    let (graph, _) = load_model(model)?;
    let net = backend.load(&graph, batch.div_ceil(2).max(1))?;
    let crate::embed::Net::Wgpu(m) = &net else {
        bail!("--profile needs --backend wgpu");
    };
    let x = efq_shared::builders::random_images(batch, graph.input_shape, 1);
    m.profile(&x, batch)?; // warm-up
    let steps = m.profile(&x, batch)?;
    let total: f64 = steps.iter().map(|s| s.seconds).sum();
    let mut by_kernel: Vec<(&str, f64, usize)> = Vec::new();
    for r in &steps {
        match by_kernel.iter_mut().find(|e| e.0 == r.kernel) {
            Some(e) => {
                e.1 += r.seconds;
                e.2 += 1
            }
            None => by_kernel.push((r.kernel, r.seconds, 1)),
        }
    }
    by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "profile of one forward pass, batch {batch}: {:.1} ms in {} dispatches",
        total * 1e3,
        steps.len()
    );
    println!("| kernel | dispatches | ms | share |\n|---|---:|---:|---:|");
    for (k, t, n) in &by_kernel {
        println!(
            "| {k} | {n} | {:.1} | {:.1} % |",
            t * 1e3,
            100.0 * t / total
        );
    }
    let mut slow = steps.clone();
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    println!("\nslowest dispatches:");
    for r in slow.iter().take(10) {
        println!("  {:>8.2} ms  {}  {}", r.seconds * 1e3, r.kernel, r.node);
    }
    Ok(())
}

pub fn print_bench(rows: &[BenchRow]) {
    println!("| model | backend | batch | images/s | latency ms (median) | runs | peak RSS MB |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {} | {:.0} |",
            r.model,
            r.backend,
            r.batch,
            r.images_per_second,
            r.latency_ms,
            r.iterations,
            r.peak_rss_mb
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--backend cpu`, and `reference`, the CPU backend's name before the oracle took it, so
    /// that older commands and scripts still run.
    #[test]
    fn the_cpu_backend_answers_to_its_former_name_too() {
        for name in ["cpu", "reference"] {
            assert_eq!(
                BackendKind::from_str(name, false),
                Ok(BackendKind::Cpu),
                "{name}"
            );
        }
    }
}
