//! `trainer finetune`: one epoch (by default) of distillation from the float teacher into the
//! quantized student, on a few thousand aligned faces, with no classification head.
//!
//! Where the positive pairs come from is [`Positives`]: with identity folders, one view per
//! image, images of one person batched together ([`identity_grouped_order`]) and paired by
//! their labels; without, two views of each image (the image itself and an augmented copy:
//! random flip, shift of up to 6 px, brightness/contrast jitter), which need no labels but
//! cost two passes per image. Everything random is drawn from `seed` and the step number, so a
//! resumed run sees exactly the batches an uninterrupted one would.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use efq_shared::eval::read_lfw_pairs;
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::preprocess::load_face;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::embed::FaceFolder;
use crate::loss::{EkdState, LossParts, ekd_loss, margin_ce_loss, quantface_loss};
use crate::net::TchNet;
use crate::student::{ActRanges, Student};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Evaluation-oriented KD without classification (the paper's Eq. 4).
    Ekd,
    /// QuantFace's loss: MSE between normalised student and teacher embeddings.
    Quantface,
    /// EKD plus a margin classification loss over the identity folders (margin `ce_margin`,
    /// scale `ce_scale`): the paper's Table-3 ablation. The class centres are a training-only
    /// head, each initialised from the teacher's embedding of the first image of its class
    /// seen in training; the exported student has no head.
    EkdCe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Train on every training image (the paper's protocol: train and test on LFW).
    Paper,
    /// Train only on people who do not appear in pairs.txt.
    Clean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// SGD with momentum 0.9.
    Sgd,
    /// Adam (β = 0.9, 0.999).
    Adam,
}

/// Where a step's positive pairs come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Positives {
    /// `labels` where some identity folder holds two or more training images, else `views`.
    #[default]
    Auto,
    /// One view per image; images of one identity folder arrive together (runs of 2 to 4,
    /// `IDENTITY_GROUP`) and are each other's positives. Half the passes of `views`.
    Labels,
    /// Two views per image (the image and an augmented copy), a positive pair without labels.
    Views,
    /// Two views per image; images of one identity folder are positives too.
    Both,
}

impl Positives {
    /// Samples per image in a step.
    pub fn views(self) -> usize {
        if self == Positives::Labels { 1 } else { 2 }
    }

    fn uses_labels(self) -> bool {
        matches!(self, Positives::Labels | Positives::Both)
    }

    /// `Auto` decided for a training set; an error where `Labels` would find no pair.
    pub fn resolve(self, items: &[(PathBuf, u32)]) -> Result<Positives> {
        let mut seen = HashSet::new();
        let paired = items.iter().any(|(_, l)| !seen.insert(*l));
        Ok(match self {
            Positives::Auto if paired => Positives::Labels,
            Positives::Auto => Positives::Views,
            Positives::Labels if !paired => bail!(
                "--positives labels: no identity folder holds two training images, so there \
                 is no positive pair; use --positives views (two augmented views per image)"
            ),
            p => p,
        })
    }
}

/// The effective configuration, saved beside every output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub student_init: PathBuf,
    pub teacher: PathBuf,
    pub train_crops: PathBuf,
    pub pairs: PathBuf,
    pub protocol: Protocol,
    /// Where the positive pairs come from; `Auto` is resolved (and saved) when the run starts.
    #[serde(default)]
    pub positives: Positives,
    pub fraction: f64,
    pub seed: u64,
    /// Samples per step: batch images with one view each, or two views of batch/2 images.
    pub batch: usize,
    pub lr: f64,
    pub optimizer: Optimizer,
    pub loss: LossKind,
    pub hard_negatives: i64,
    pub epochs: usize,
    pub checkpoint_every: usize,
    /// Weight of the margin classification term (`--loss ekd-ce`).
    #[serde(default = "default_ce_weight")]
    pub ce_weight: f64,
    #[serde(default = "default_ce_margin")]
    pub ce_margin: f64,
    #[serde(default = "default_ce_scale")]
    pub ce_scale: f64,
    /// Views per student forward/backward pass (gradient caching); None: the whole batch.
    /// Changes speed and memory, not the gradient.
    #[serde(default)]
    pub student_chunk: Option<usize>,
    /// Frozen calibrated activation scales, or scales learned with LSQ's gradient.
    #[serde(default)]
    pub act_ranges: ActRanges,
}

fn default_ce_weight() -> f64 {
    1.0
}
fn default_ce_margin() -> f64 {
    0.4
}
fn default_ce_scale() -> f64 {
    64.0
}

/// Images per teacher forward pass on the CPU.
const TEACHER_CHUNK: i64 = 4;

/// Gradient caching, first half: the student's embeddings of the whole batch, computed without
/// a graph in chunks of `chunk` images, as a leaf that will collect the loss's gradient. The
/// loss then sees the full batch (every pair of the EKD similarity matrix); the second half,
/// [`backward_through`], replays each chunk with a graph. The student has no batch-dependent
/// state (BatchNorm is folded, activation scales are frozen), so the result is the full-batch
/// gradient, computed at small-batch speed (tested against a direct full-batch backward).
pub fn embed_detached(student: &Student, x: &Tensor, chunk: i64) -> Tensor {
    tch::no_grad(|| {
        Tensor::cat(
            &x.split(chunk, 0)
                .iter()
                .map(|c| student.forward(c))
                .collect::<Vec<_>>(),
            0,
        )
    })
    .detach()
    .set_requires_grad(true)
}

/// Gradient caching, second half: pushes `leaf.grad()` (after `loss.backward()`) through the
/// student, chunk by chunk, accumulating into the parameters' gradients.
pub fn backward_through(student: &Student, x: &Tensor, leaf: &Tensor, chunk: i64) {
    let g = leaf.grad();
    for (xc, gc) in x.split(chunk, 0).iter().zip(g.split(chunk, 0)) {
        (student.forward(xc) * gc).sum(Kind::Float).backward();
    }
}

/// Views per student forward/backward chunk: `cfg.student_chunk`, else the whole batch. A
/// chunk that holds the batch means no gradient caching. Caching cuts the student's memory
/// (0.97 vs 4.9 GB peak at batch 64 with chunks of 8) but replays every forward pass: on this
/// machine's CPU it costs 25 % of the step (docs/EXPERIMENTS.md, Part 2, "Fine-tuning speed on the CPU").
fn chunk_student(cfg: &FinetuneConfig, views: usize) -> i64 {
    cfg.student_chunk.map_or(views as i64, |c| c.max(1) as i64)
}
/// Checkpoint names of the margin loss's class centres and of their initialised flags.
const HEAD: &str = "ce.head";
const HEAD_READY: &str = "ce.head_ready";

struct Opt {
    kind: Optimizer,
    lr: f64,
    /// SGD: momentum buffers; Adam: first moments.
    m: Vec<Tensor>,
    /// Adam: second moments.
    v: Vec<Tensor>,
    t: i64,
}

impl Opt {
    fn new(kind: Optimizer, lr: f64, params: &[(String, Tensor)]) -> Self {
        let zeros = || {
            params
                .iter()
                .map(|(_, p)| p.zeros_like().detach())
                .collect()
        };
        Opt {
            kind,
            lr,
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }

    fn step(&mut self, params: &[(String, Tensor)]) {
        self.t += 1;
        tch::no_grad(|| {
            for (k, (_, p)) in params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.kind {
                    Optimizer::Sgd => {
                        let _ = self.m[k].g_mul_scalar_(0.9).g_add_(&g);
                        let mut p = p.shallow_clone();
                        let _ = p.g_sub_(&(&self.m[k] * self.lr));
                    }
                    Optimizer::Adam => {
                        let d = crate::optim::adam_direction(
                            &mut self.m[k],
                            &mut self.v[k],
                            &g,
                            self.t,
                        );
                        let mut p = p.shallow_clone();
                        let _ = p.g_sub_(&(d * self.lr));
                    }
                }
                let mut g = g;
                let _ = g.zero_();
            }
        });
    }
}

/// Training images after the protocol and the fraction: (relative path, identity).
pub fn training_set(
    folder: &FaceFolder,
    pairs: &Path,
    protocol: Protocol,
    fraction: f64,
    seed: u64,
) -> Result<Vec<(PathBuf, u32)>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        bail!("--fraction {fraction} must be in (0, 1]");
    }
    let excluded: HashSet<String> = match protocol {
        Protocol::Paper => HashSet::new(),
        Protocol::Clean => read_lfw_pairs(pairs)?
            .iter()
            .flat_map(|p| [&p.a, &p.b])
            .filter_map(|p| p.iter().next().map(|s| s.to_string_lossy().into_owned()))
            .collect(),
    };
    let mut items: Vec<(PathBuf, u32)> = folder
        .images
        .iter()
        .zip(&folder.labels)
        .filter(|(_, l)| !excluded.contains(&folder.identities[**l as usize]))
        .map(|(p, l)| (p.clone(), *l))
        .collect();
    if items.is_empty() {
        bail!(
            "no training images left in {} under the {protocol:?} protocol (every identity there appears in {})",
            folder.root.display(),
            pairs.display()
        );
    }
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    items.truncate(((items.len() as f64) * fraction).round().max(1.0) as usize);
    Ok(items)
}

/// Largest run of one identity's images that [`identity_grouped_order`] puts side by side.
pub const IDENTITY_GROUP: usize = 4;

/// An epoch's order of `items` (indices) for [`Positives::Labels`]: each identity's images,
/// shuffled, split into near-equal runs of at most [`IDENTITY_GROUP`] (so every run of a
/// person with two or more images holds at least two: each batch has positive pairs), the runs
/// shuffled and concatenated. Every image appears exactly once.
pub fn identity_grouped_order(items: &[(PathBuf, u32)], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut by_id: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, (_, l)) in items.iter().enumerate() {
        by_id.entry(*l).or_default().push(i);
    }
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (_, mut imgs) in by_id {
        imgs.shuffle(rng);
        let parts = imgs.len().div_ceil(IDENTITY_GROUP);
        let (base, extra) = (imgs.len() / parts, imgs.len() % parts);
        let mut rest = imgs.as_slice();
        for p in 0..parts {
            let (run, tail) = rest.split_at(base + usize::from(p < extra));
            runs.push(run.to_vec());
            rest = tail;
        }
    }
    runs.shuffle(rng);
    runs.concat()
}

/// The second view: random flip, shift up to 6 px (zero = mid-grey fill), colour jitter.
fn augment(chw: &[f32], hw: [usize; 2], rng: &mut ChaCha8Rng) -> Vec<f32> {
    let [h, w] = hw;
    let flip = rng.random_bool(0.5);
    let (dy, dx) = (rng.random_range(-6i64..=6), rng.random_range(-6i64..=6));
    let contrast = rng.random_range(0.8f32..1.2);
    let brightness = rng.random_range(-0.1f32..0.1);
    let mut out = vec![0f32; chw.len()];
    for c in 0..chw.len() / (h * w) {
        for y in 0..h {
            for x in 0..w {
                let sy = y as i64 - dy;
                let sx0 = if flip { (w - 1 - x) as i64 } else { x as i64 };
                let sx = sx0 - dx;
                if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                    let v = chw[(c * h + sy as usize) * w + sx as usize];
                    out[(c * h + y) * w + x] = (v * contrast + brightness).clamp(-1.0, 1.0);
                }
            }
        }
    }
    out
}

pub struct FinetuneOutcome {
    pub graph: efq_shared::graph::Graph,
    /// `cfg.positives` as resolved for the training set.
    pub positives: Positives,
    pub steps: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// Images/s after this process's first step, which on CUDA also holds cuDNN's
    /// algorithm search and the allocator's warm-up; None after a single step. (`images`,
    /// `seconds` and `images_per_second` cover the whole run, resumes included.)
    pub steady_images_per_second: Option<f64>,
    pub final_loss: f64,
    /// With learned ranges: min, median and max over layers of learned / calibrated scale.
    pub act_scale_ratio: Option<[f64; 3]>,
}

/// Runs (or resumes) the fine-tuning in `out_dir`; returns the trained student graph.
pub fn run(
    cfg: &FinetuneConfig,
    out_dir: &Path,
    resume: bool,
    device: Device,
    stop_after: Option<usize>,
) -> Result<FinetuneOutcome> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let init = load_student_init(&cfg.student_init)?;
    let pre: Preprocessing = init.manifest.preprocessing.clone();
    let (tgraph, _) = crate::eval::load_model(&cfg.teacher)?;
    let teacher = TchNet::new(&tgraph, device)?;
    let student = Student::new(&init.graph, device, cfg.act_ranges)?;
    let folder = FaceFolder::scan(&cfg.train_crops)?;
    let items = training_set(&folder, &cfg.pairs, cfg.protocol, cfg.fraction, cfg.seed)?;
    let positives = cfg.positives.resolve(&items)?;
    let cfg = &FinetuneConfig {
        positives,
        ..cfg.clone()
    };
    let views = positives.views();
    let per_step = (cfg.batch / views).max(1);
    let steps_per_epoch = items.len().div_ceil(per_step);
    let total = steps_per_epoch * cfg.epochs.max(1);

    // Trainable tensors: the student's, plus the class centres of the margin loss.
    let mut params: Vec<(String, Tensor)> = student
        .params
        .iter()
        .map(|(n, p)| (n.clone(), p.shallow_clone()))
        .collect();
    let head = (cfg.loss == LossKind::EkdCe).then(|| {
        let dim = init.manifest.embedding_dim as i64;
        let classes = folder.identities.len() as i64;
        let h = Tensor::zeros([classes, dim], (Kind::Float, device)).set_requires_grad(true);
        params.push((HEAD.into(), h.shallow_clone()));
        h
    });
    // Which class centres hold a teacher embedding yet (1.0) — a tensor so that it is
    // checkpointed with the rest.
    let head_ready = Tensor::zeros([folder.identities.len() as i64], (Kind::Float, Device::Cpu));
    let mut opt = Opt::new(cfg.optimizer, cfg.lr, &params);
    let mut ekd = EkdState::new();
    let mut start_step = 0;
    // Training already done by earlier processes of this run (resumed from a checkpoint).
    let (mut prior_seconds, mut prior_images, mut prior_loss) = (0.0, 0usize, None);
    // A kill while a file was written leaves its temporary behind; the last complete
    // checkpoint is never one of them.
    for stale in crate::checkpoint::remove_stale_temporaries(out_dir)? {
        eprintln!("removed {}, left by an interrupted write", stale.display());
    }
    let saved = if resume {
        crate::checkpoint::load(out_dir)?
    } else {
        None
    };
    if let Some(saved) = saved {
        if saved.record.step > total {
            bail!(
                "checkpoint {} is at step {}, past this run's {total} steps (other options?)",
                saved.path.display(),
                saved.record.step
            );
        }
        tch::no_grad(|| -> Result<()> {
            if head.is_some() {
                let r = saved.tensor(HEAD_READY, &head_ready)?;
                head_ready.shallow_clone().f_copy_(r)?;
            }
            for (k, (name, p)) in params.iter().enumerate() {
                p.shallow_clone().f_copy_(saved.tensor(name, p)?)?;
                opt.m[k].f_copy_(saved.tensor(&format!("opt.m.{name}"), p)?)?;
                opt.v[k].f_copy_(saved.tensor(&format!("opt.v.{name}"), p)?)?;
            }
            Ok(())
        })?;
        opt.t = saved.record.step as i64;
        ekd = saved.record.ekd;
        start_step = saved.record.step;
        prior_seconds = saved.record.trained_seconds;
        prior_images = saved.record.trained_images;
        prior_loss = saved.record.loss;
        eprintln!(
            "resuming {} at step {start_step}/{total}",
            out_dir.display()
        );
    }
    // Written once the checkpoint (if any) has loaded: a resume that fails, e.g. with options
    // that do not match the checkpoint, leaves the run's record as it was.
    efq_shared::format::write_atomic(
        &out_dir.join("config.json"),
        &serde_json::to_vec_pretty(cfg)?,
    )?;

    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "finetune {bar:30.cyan/blue} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    pb.set_position(start_step as u64);
    let t0 = Instant::now();
    let mut last_loss = f64::NAN;
    let [_, h, w] = init.graph.input_shape;
    let mut step = start_step;
    // Images trained on in this process (the last batch of an epoch may be short).
    let mut images = 0usize;
    // Seconds and images at the end of this process's first step.
    let mut after_first: Option<(f64, usize)> = None;
    // The epoch's image order, drawn from the seed and the epoch number once per epoch.
    let mut order: Option<(usize, Vec<usize>)> = None;
    while step < total {
        let epoch = step / steps_per_epoch;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng =
                ChaCha8Rng::seed_from_u64(cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
            let o = if positives == Positives::Labels {
                identity_grouped_order(&items, &mut rng)
            } else {
                let mut o: Vec<usize> = (0..items.len()).collect();
                o.shuffle(&mut rng);
                o
            };
            order = Some((epoch, o));
        }
        let order = &order.as_ref().expect("drawn above").1;
        let within = step % steps_per_epoch;
        let chosen: Vec<&(PathBuf, u32)> = order
            [within * per_step..((within + 1) * per_step).min(items.len())]
            .iter()
            .map(|&i| &items[i])
            .collect();
        let pixels: Vec<Vec<f32>> = chosen
            .par_iter()
            .map(|(p, _)| load_face(folder.root.join(p), &pre).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1 + step as u64));
        let second: Vec<Vec<f32>> = if views == 2 {
            pixels
                .iter()
                .map(|p| augment(p, [h, w], &mut rng))
                .collect()
        } else {
            Vec::new()
        };
        let n = chosen.len();
        // Samples: the n images, then (with two views) their n augmented copies.
        let b = (views * n) as i64;
        let flat: Vec<f32> = pixels.into_iter().chain(second).flatten().collect();
        let x = Tensor::from_slice(&flat)
            .reshape([b, 3, h as i64, w as i64])
            .to_device(device);
        let labels: Vec<i64> = (0..views)
            .flat_map(|_| chosen.iter().map(|(_, l)| *l as i64))
            .collect();

        // The teacher needs no gradient, so it can run in small chunks: on the CPU, batches of
        // 4 stay in cache and run 1.8× faster than 64 (docs/RESULTS.md, "The teacher against
        // onnxruntime", images/s by batch).
        let chunk = if device.is_cuda() { b } else { TEACHER_CHUNK };
        let et = tch::no_grad(|| -> Result<Tensor> {
            let parts = x
                .split(chunk, 0)
                .iter()
                .map(|c| teacher.forward(c))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 0))
        })?;
        let et = &et / et.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        let schunk = chunk_student(cfg, b as usize);
        let cached = schunk < b;
        let es_raw = if cached {
            embed_detached(&student, &x, schunk)
        } else {
            student.forward(&x)
        };
        let es = &es_raw / es_raw.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        let idx = Tensor::arange(b, (Kind::Int64, Device::Cpu));
        let image = &idx.remainder(n as i64);
        let same_image = image.unsqueeze(1).eq_tensor(&image.unsqueeze(0));
        let lab = Tensor::from_slice(&labels);
        let same_label = lab.unsqueeze(1).eq_tensor(&lab.unsqueeze(0));
        let upper = Tensor::ones([b, b], (Kind::Bool, Device::Cpu)).triu(1);
        let positive = if positives.uses_labels() {
            same_image.logical_or(&same_label)
        } else {
            same_image
        };
        let pos = positive.logical_and(&upper).to_device(device);
        let neg = positive.logical_not().logical_and(&upper).to_device(device);
        let mut ce_value = None;
        let (loss, parts) = match cfg.loss {
            LossKind::Ekd => ekd_loss(&es, &et, &pos, &neg, cfg.hard_negatives, &mut ekd),
            LossKind::Quantface => (quantface_loss(&es, &et), LossParts::default()),
            LossKind::EkdCe => {
                let head = head.as_ref().expect("created for ekd-ce");
                tch::no_grad(|| {
                    for (i, (_, l)) in chosen.iter().enumerate() {
                        let c = *l as i64;
                        if head_ready.double_value(&[c]) == 0.0 {
                            head.get(c).copy_(&et.get(i as i64));
                            let _ = head_ready.get(c).fill_(1.0);
                        }
                    }
                });
                let (ekd_l, parts) = ekd_loss(&es, &et, &pos, &neg, cfg.hard_negatives, &mut ekd);
                let ce = margin_ce_loss(
                    &es,
                    head,
                    &lab.to_device(device),
                    cfg.ce_margin,
                    cfg.ce_scale,
                );
                ce_value = Some(ce.double_value(&[]));
                (ekd_l + ce * cfg.ce_weight, parts)
            }
        };
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            bail!("loss became {lv} at step {step}; lower --lr");
        }
        last_loss = lv;
        loss.backward();
        if cached {
            backward_through(&student, &x, &es_raw, schunk);
        }
        opt.step(&params);
        step += 1;
        crate::fault::point("finetune:step")?;
        pb.set_position(step as u64);
        images += n;
        if after_first.is_none() {
            after_first = Some((t0.elapsed().as_secs_f64(), images));
        }
        pb.set_message(format!(
            "loss {lv:.5} (pos {:.4}, neg {:.4}, {} pos pairs{})  {:.1} img/s",
            parts.positive,
            parts.negative,
            parts.n_pos,
            ce_value.map(|c| format!(", ce {c:.3}")).unwrap_or_default(),
            images as f64 / t0.elapsed().as_secs_f64()
        ));
        if step % cfg.checkpoint_every.max(1) == 0 || step == total {
            let extra = head.as_ref().map(|_| (HEAD_READY, &head_ready));
            let record = crate::checkpoint::Record {
                step,
                ekd: ekd.clone(),
                trained_seconds: prior_seconds + t0.elapsed().as_secs_f64(),
                trained_images: prior_images + images,
                loss: Some(lv),
            };
            save_checkpoint(out_dir, &params, &opt, &record, extra)?;
        }
        if stop_after.is_some_and(|s| step >= s) {
            break;
        }
    }
    pb.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let act_scale_ratio = (cfg.act_ranges == ActRanges::Learned).then(|| {
        let mut r: Vec<f64> = student
            .act_scales()
            .iter()
            .map(|(calibrated, now)| f64::from(*now) / f64::from(*calibrated))
            .collect();
        r.sort_by(f64::total_cmp);
        [r[0], r[r.len() / 2], r[r.len() - 1]]
    });
    // A resumed run reports the whole run: its earlier processes' time and images too (a
    // finished run resumed again adds nothing and keeps its figures).
    let (total_seconds, total_images) = (prior_seconds + seconds, prior_images + images);
    Ok(FinetuneOutcome {
        positives,
        act_scale_ratio,
        graph: student.to_graph()?,
        steps: step,
        images: total_images,
        seconds: total_seconds,
        images_per_second: total_images as f64 / total_seconds,
        steady_images_per_second: after_first
            .filter(|&(_, first)| images > first)
            .map(|(t, first)| (images - first) as f64 / (seconds - t)),
        final_loss: if last_loss.is_nan() {
            prior_loss.unwrap_or(f64::NAN)
        } else {
            last_loss
        },
    })
}

/// The starting student as a packed model: a `.efq` file as it is (quantized, or float), or a
/// float network given as ONNX or `.pth` — a pruned teacher, or a smaller architecture to
/// distil into — packed as a float model with its input conventions.
pub fn load_student_init(path: &Path) -> Result<PackedModel> {
    if crate::eval::is_float_teacher(path) {
        let (graph, pre) = crate::eval::load_model(path)?;
        let mut m = PackedModel::new(graph, None)?;
        m.manifest.preprocessing = pre;
        m.manifest.name = crate::paths::file_stem(path);
        Ok(m)
    } else {
        Ok(PackedModel::load(path)?)
    }
}

fn save_checkpoint(
    dir: &Path,
    params: &[(String, Tensor)],
    opt: &Opt,
    record: &crate::checkpoint::Record,
    extra: Option<(&str, &Tensor)>,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = Vec::new();
    if let Some((name, t)) = extra {
        named.push((name.to_string(), t.shallow_clone()));
    }
    for (k, (name, p)) in params.iter().enumerate() {
        named.push((name.clone(), p.detach().to_device(Device::Cpu)));
        named.push((format!("opt.m.{name}"), opt.m[k].to_device(Device::Cpu)));
        named.push((format!("opt.v.{name}"), opt.v[k].to_device(Device::Cpu)));
    }
    crate::checkpoint::save(dir, &named, record)
}
