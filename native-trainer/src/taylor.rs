//! First-order Taylor scores for `trainer prune --score taylor`: the gradient of a verification
//! loss on a few identity-grouped batches of LFW's clean set, times each parameter, summed over
//! every channel group (`efq_shared::prune::taylor_scores`).
//!
//! A face network has no classification head here, so the loss is the one the evaluation
//! cares about: the mean cosine of impostor pairs minus that of genuine pairs in the batch.
//! A channel whose removal would move that loss little scores low.

use std::path::Path;

use anyhow::{Result, bail};
use efq_shared::format::Preprocessing;
use efq_shared::graph::{Graph, Op, Weights};
use efq_shared::preprocess::load_face;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::embed::FaceFolder;
use crate::finetune::{Protocol, identity_grouped_order, training_set};
use crate::student::{ActRanges, Student};

/// `graph` with every parameter replaced by |Σ_batches w · ∂L/∂w|'s summand form: w · g, g
/// summed over `batches` batches of `batch` crops of the clean set under `lfw`.
pub fn products(
    graph: &Graph,
    pre: &Preprocessing,
    lfw: &Path,
    batches: usize,
    batch: usize,
    seed: u64,
) -> Result<Graph> {
    let folder = FaceFolder::scan(&lfw.join("aligned112"))?;
    let items = training_set(&folder, &lfw.join("pairs.txt"), Protocol::Clean, 1.0, seed)?;
    // Only people with two crops or more make genuine pairs (most of the clean set has one).
    let mut count = std::collections::HashMap::new();
    for (_, l) in &items {
        *count.entry(*l).or_insert(0usize) += 1;
    }
    let items: Vec<_> = items.into_iter().filter(|(_, l)| count[l] >= 2).collect();
    let order = identity_grouped_order(&items, &mut ChaCha8Rng::seed_from_u64(seed));
    let student = Student::new(graph, Device::Cpu, ActRanges::Frozen)?;
    let [c, h, w] = graph.input_shape.map(|d| d as i64);
    let mut used = 0;
    for chunk in order.chunks(batch.max(2)).take(batches) {
        let pixels: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|&i| load_face(folder.root.join(&items[i].0), pre).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        let x = Tensor::from_slice(&pixels.concat()).reshape([chunk.len() as i64, c, h, w]);
        let labels: Vec<i64> = chunk.iter().map(|&i| items[i].1 as i64).collect();
        let lab = Tensor::from_slice(&labels);
        let same = lab.unsqueeze(0).eq_tensor(&lab.unsqueeze(1));
        let n = chunk.len() as i64;
        let off_diag = Tensor::eye(n, (Kind::Bool, Device::Cpu)).logical_not();
        let genuine = same.logical_and(&off_diag);
        let impostor = same.logical_not();
        if genuine.sum(Kind::Int64).int64_value(&[]) == 0 {
            continue;
        }
        let e = student.forward(&x);
        let e = &e
            / e.norm_scalaropt_dim(2, [1i64].as_slice(), true)
                .clamp_min(1e-12);
        let cos = e.matmul(&e.tr());
        let mean = |m: &Tensor| {
            (&cos * m.to_kind(Kind::Float)).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
        };
        let loss = mean(&impostor) - mean(&genuine);
        loss.backward();
        used += 1;
    }
    if used == 0 {
        bail!("no batch of the clean set held a genuine pair to score channels with");
    }
    let fetch = |name: &str| -> Result<Vec<f32>> {
        let p = student
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| anyhow::anyhow!("no parameter {name}"))?;
        let prod = tch::no_grad(|| p * p.grad());
        Ok(Vec::<f32>::try_from(prod.flatten(0, -1))?)
    };
    let mut g = graph.clone();
    for node in &mut g.nodes {
        let nm = node.name.clone();
        match &mut node.op {
            Op::Conv {
                weights: Weights::Float(w),
                bias,
                ..
            }
            | Op::Gemm {
                weights: Weights::Float(w),
                bias,
                ..
            } => {
                w.data = fetch(&format!("{nm}.weight"))?;
                *bias = fetch(&format!("{nm}.bias"))?;
            }
            Op::Affine { scale, shift } => {
                *scale = fetch(&format!("{nm}.scale"))?;
                *shift = fetch(&format!("{nm}.shift"))?;
            }
            Op::PRelu { slope } => *slope = fetch(&format!("{nm}.slope"))?,
            _ => {}
        }
    }
    Ok(g)
}
