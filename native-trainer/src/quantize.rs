//! `trainer quantize`: post-training quantization of a float teacher into a packed student,
//! with activation ranges calibrated on training images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use efq_shared::format::PackedModel;
use efq_shared::preprocess::load_face;
use efq_shared::quant::{QuantConfig, quantize_graph};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;
use tch::Tensor;

use crate::embed::{FaceFolder, progress};
use crate::eval::load_model;
use crate::net::TchNet;

/// How activation ranges are read off the calibration images.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Calibration {
    /// Number of calibration images (drawn with `seed` from the training folder).
    pub images: usize,
    pub batch: usize,
    /// Per batch, the range is this percentile of |x|; ranges are averaged over batches.
    /// Below 100 it ignores rare outliers, which at 4 bits would otherwise stretch the grid
    /// until most activations round to zero.
    pub percentile: f64,
    pub seed: u64,
}

pub struct QuantizeArgs<'a> {
    pub teacher: &'a Path,
    pub crops: &'a Path,
    pub config: QuantConfig,
    pub calibration: Calibration,
    pub device: tch::Device,
}

/// Calibrated activation range of every Conv/Gemm input of `net`, in node order.
pub fn calibrate(
    net: &TchNet,
    folder: &FaceFolder,
    cal: &Calibration,
    pre: &efq_shared::format::Preprocessing,
) -> Result<Vec<f32>> {
    let mut order: Vec<PathBuf> = folder.images.clone();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(cal.seed));
    order.truncate(cal.images.max(1));
    let mut sums: Vec<f64> = Vec::new();
    let mut batches = 0usize;
    let pb = progress(order.len() as u64, "calibrate");
    for chunk in order.chunks(cal.batch.max(1)) {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| load_face(folder.root.join(p), pre).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        let [c, h, w] = net.input_shape.map(|d| d as i64);
        let x = Tensor::from_slice(&pixels.concat()).reshape([chunk.len() as i64, c, h, w]);
        let mut ranges: Vec<f64> = Vec::new();
        let _ = tch::no_grad(|| {
            net.forward_observed(&x, &mut |_, t| {
                let a = t.abs().flatten(0, -1);
                let n = a.size()[0];
                let k = ((cal.percentile / 100.0 * n as f64).ceil() as i64).clamp(1, n);
                let (v, _) = a.kthvalue(k, 0, false);
                ranges.push(v.double_value(&[]));
            })
        })?;
        if sums.is_empty() {
            sums = vec![0.0; ranges.len()];
        }
        sums.iter_mut().zip(&ranges).for_each(|(s, r)| *s += r);
        batches += 1;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let ranges: Vec<f32> = sums.iter().map(|s| (s / batches as f64) as f32).collect();
    if let Some(k) = ranges.iter().position(|r| !(r.is_finite() && *r > 0.0)) {
        bail!(
            "calibration found no signal at the input of quantized layer {k} (range {})",
            ranges[k]
        );
    }
    Ok(ranges)
}

/// Teacher → calibrated, quantized student (not yet fine-tuned).
pub fn run(args: &QuantizeArgs) -> Result<PackedModel> {
    let (graph, pre) = load_model(args.teacher)?;
    if graph.is_quantized() {
        bail!(
            "{} is already quantized; quantize a float teacher",
            args.teacher.display()
        );
    }
    let folder = FaceFolder::scan(args.crops)?;
    let net = TchNet::new(&graph, args.device)?;
    let ranges = calibrate(&net, &folder, &args.calibration, &pre)?;
    let student = quantize_graph(&graph, &args.config, &ranges)?;
    let mut model = PackedModel::new(student, Some(args.config))?;
    model.manifest.preprocessing = pre;
    model.manifest.name = format!("{}-{}", graph.name, args.config.label());
    model
        .manifest
        .extra
        .insert("teacher".into(), args.teacher.display().to_string().into());
    model.manifest.extra.insert(
        "calibration".into(),
        serde_json::to_value(args.calibration)?,
    );
    model.manifest.extra.insert(
        "calibration_crops".into(),
        args.crops.display().to_string().into(),
    );
    Ok(model)
}

/// Model size in MB (10^6 bytes): weights at their bit-width plus scales, biases and the
/// float parameters of BatchNorm and PReLU.
pub fn size_mb(model: &PackedModel) -> f64 {
    model.parameter_bytes() as f64 / 1e6
}

pub fn describe(model: &PackedModel, path: &Path) -> String {
    format!(
        "wrote {} ({}, {:.2} MB of parameters)",
        path.display(),
        model
            .manifest
            .quant
            .map(|q| q.label())
            .unwrap_or_else(|| "float".into()),
        size_mb(model)
    )
}

pub fn save(model: &PackedModel, path: &Path) -> Result<()> {
    model
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
