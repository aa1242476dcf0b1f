//! Which input conventions a face model was trained with, measured: the same pairs of LFW
//! faces verified under each common channel order and normalisation, ranked by accuracy.
//! A model fed the wrong convention still runs, only worse (a BGR-trained MobileFaceNet fed
//! RGB lost four points of TAR at FAR 1e-5), so the right one is the one that verifies best.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use efq_shared::eval::read_lfw_pairs;
use efq_shared::format::Preprocessing;
use efq_shared::preprocess::pixels_to_chw;
use serde::Serialize;

use crate::conventions::{Color, ConventionArgs};
use crate::embed::Backend;

/// The normalisations tried, as (name, mean, std) of pixel values 0–255 in RGB order.
const NORMALISATIONS: [(&str, [f32; 3], [f32; 3]); 5] = [
    ("(x − 127.5) / 127.5", [127.5; 3], [127.5; 3]),
    ("(x − 127.5) / 128", [127.5; 3], [128.0; 3]),
    ("x / 255", [0.0; 3], [255.0; 3]),
    (
        "ImageNet mean/std",
        [123.675, 116.28, 103.53],
        [58.395, 57.12, 57.375],
    ),
    ("x (raw 0–255)", [0.0; 3], [1.0; 3]),
];

/// One convention tried.
#[derive(Serialize, Clone, Debug)]
pub struct Candidate {
    pub color: &'static str,
    pub normalisation: &'static str,
    /// The flags that select it.
    pub flags: String,
    /// Best accuracy over thresholds on the probe pairs.
    pub accuracy: f64,
    /// How far apart genuine and impostor cosines lie: the difference of their means over
    /// their pooled standard deviation (d′). Accuracy saturates on easy pairs; d′ does not.
    pub separation: f64,
}

#[derive(Serialize, Debug)]
pub struct Probe {
    pub model: PathBuf,
    pub pairs: usize,
    pub genuine: usize,
    /// Best first.
    pub candidates: Vec<Candidate>,
    /// The conventions whose separation is within 1 % of the best one's: indistinguishable on
    /// these pairs (e.g. dividing by 127.5 or by 128 scales the input by 0.4 %).
    pub equivalent: Vec<String>,
    /// The pick: of the equivalent ones, the first in the order tried (the more common).
    pub best: Candidate,
}

/// Verifies `n_pairs` pairs of `pairs.txt` (spread over its folds, half genuine) under every
/// convention and ranks them. ONNX models only: a packed file records its conventions.
pub fn run(model: &Path, lfw: &Path, n_pairs: usize) -> Result<Probe> {
    if !crate::eval::is_float_teacher(model) {
        bail!(
            "{} is a packed model, which records its conventions (`trainer inspect` shows \
             them); the probe is for ONNX and .pth teachers",
            model.display()
        );
    }
    if n_pairs < 20 {
        bail!("--probe-pairs {n_pairs}: at least 20 pairs are needed to rank conventions");
    }
    let crops = lfw.join("insightface112");
    let all = read_lfw_pairs(&lfw.join("pairs.txt"))?;
    let (same, diff): (Vec<_>, Vec<_>) = all.iter().partition(|p| p.same);
    let take = |v: &[&efq_shared::eval::Pair], k: usize| -> Vec<efq_shared::eval::Pair> {
        let step = (v.len() / k.max(1)).max(1);
        v.iter()
            .step_by(step)
            .take(k)
            .map(|p| (*p).clone())
            .collect()
    };
    let mut pairs = take(&same, n_pairs / 2);
    pairs.extend(take(&diff, n_pairs - n_pairs / 2));
    // Each image decoded once, as RGB bytes.
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut rgb: Vec<Vec<u8>> = Vec::new();
    let imported = crate::eval::import_teacher(model)?;
    let [_, h, w] = imported.graph.input_shape;
    for p in &pairs {
        for f in [&p.a, &p.b] {
            if index.contains_key(f) {
                continue;
            }
            let path = crops.join(f);
            let img = image::open(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .to_rgb8();
            if (img.width() as usize, img.height() as usize) != (w, h) {
                bail!(
                    "{} is {}×{}, the model takes {w}×{h}",
                    path.display(),
                    img.width(),
                    img.height()
                );
            }
            index.insert(f.clone(), rgb.len());
            rgb.push(img.into_raw());
        }
    }
    let backend = Backend::Tch(tch::Device::Cpu);
    let batch = 16;
    let net = backend.load(&imported.graph, batch)?;
    let dim = net.embedding_dim();
    let pb = crate::embed::progress((2 * NORMALISATIONS.len() * rgb.len()) as u64, "probe");
    let mut candidates = Vec::new();
    for color in [Color::Rgb, Color::Bgr] {
        for (name, mean, std) in NORMALISATIONS {
            // Values per channel of the network input, in its channel order.
            let order = |v: [f32; 3]| match color {
                Color::Rgb => v,
                Color::Bgr => [v[2], v[1], v[0]],
            };
            let flags = ConventionArgs {
                color: Some(color),
                mean: Some(order(mean).to_vec()),
                std: Some(order(std).to_vec()),
            };
            let pre: Preprocessing = crate::conventions::preprocessing(&flags, &imported, model)?;
            let mut emb = Vec::with_capacity(rgb.len() * dim);
            for chunk in rgb.chunks(batch) {
                let x: Vec<f32> = chunk
                    .iter()
                    .flat_map(|im| pixels_to_chw(im, w, h, &pre))
                    .collect();
                emb.extend(net.forward(&x, chunk.len())?);
                pb.inc(chunk.len() as u64);
            }
            efq_shared::cpu::l2_normalize_rows(&mut emb, dim);
            let cos = |i: usize, j: usize| -> f64 {
                emb[i * dim..][..dim]
                    .iter()
                    .zip(&emb[j * dim..][..dim])
                    .map(|(a, b)| (a * b) as f64)
                    .sum()
            };
            let scored: Vec<(f64, bool)> = pairs
                .iter()
                .map(|p| (cos(index[&p.a], index[&p.b]), p.same))
                .collect();
            let color_name = match color {
                Color::Rgb => "RGB",
                Color::Bgr => "BGR",
            };
            let fmt = |v: [f32; 3]| {
                if v[1..].iter().all(|x| *x == v[0]) {
                    format!("{}", v[0])
                } else {
                    format!("{},{},{}", v[0], v[1], v[2])
                }
            };
            candidates.push(Candidate {
                color: color_name,
                normalisation: name,
                flags: format!(
                    "--color {} --mean {} --std {}",
                    color_name.to_lowercase(),
                    fmt(order(mean)),
                    fmt(order(std))
                ),
                accuracy: best_accuracy(&scored),
                separation: separation(&scored),
            });
        }
    }
    pb.finish_and_clear();
    let top = candidates
        .iter()
        .map(|c| c.separation)
        .fold(f64::NEG_INFINITY, f64::max);
    let close = |c: &Candidate| c.separation >= top - 0.01 * top.abs();
    let best = candidates
        .iter()
        .find(|c| close(c))
        .cloned()
        .context("no convention could be measured")?;
    let equivalent = candidates
        .iter()
        .filter(|c| close(c))
        .map(|c| format!("{} {}", c.color, c.normalisation))
        .collect();
    candidates.sort_by(|a, b| b.separation.total_cmp(&a.separation));
    Ok(Probe {
        model: model.to_path_buf(),
        pairs: pairs.len(),
        genuine: pairs.iter().filter(|p| p.same).count(),
        candidates,
        equivalent,
        best,
    })
}

/// The best share of pairs a single threshold classifies correctly.
fn best_accuracy(scored: &[(f64, bool)]) -> f64 {
    let mut s = scored.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let genuine = s.iter().filter(|p| p.1).count();
    let mut best = genuine;
    let mut correct = genuine; // every pair called "same": the genuine ones are right
    for p in &s {
        // Move the threshold above p: p is now called "different".
        if p.1 {
            correct -= 1;
        } else {
            correct += 1;
        }
        best = best.max(correct);
    }
    best as f64 / s.len() as f64
}

/// d′ of the genuine and impostor cosines.
fn separation(scored: &[(f64, bool)]) -> f64 {
    let stats = |same: bool| {
        let v: Vec<f64> = scored.iter().filter(|p| p.1 == same).map(|p| p.0).collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    };
    let ((mg, vg), (mi, vi)) = (stats(true), stats(false));
    (mg - mi) / ((vg + vi) / 2.0).sqrt().max(1e-12)
}

/// The ranking as a table.
pub fn print(p: &Probe) {
    println!(
        "{}: {} LFW pairs ({} genuine) verified under each convention",
        p.model.display(),
        p.pairs,
        p.genuine
    );
    println!("| color | normalisation | accuracy | separation (d′) | flags |");
    println!("|---|---|---:|---:|---|");
    for c in &p.candidates {
        println!(
            "| {} | {} | {:.2} % | {:.3} | `{}` |",
            c.color,
            c.normalisation,
            100.0 * c.accuracy,
            c.separation,
            c.flags
        );
    }
    println!(
        "\nbest: {} {} — pass `{}` with this model",
        p.best.color, p.best.normalisation, p.best.flags
    );
    if p.equivalent.len() > 1 {
        println!(
            "indistinguishable on these pairs (d′ within 1 %): {}",
            p.equivalent.join("; ")
        );
    }
}
