//! Layer-wise reconstruction of a post-training student: each quantized layer, in graph order,
//! is fitted to reproduce the float teacher's output of that layer **from the student's own
//! (already quantized, already reconstructed) input** on the calibration images, so that every
//! layer also absorbs the error its predecessors left (AdaQuant, Hubara et al. 2021; the
//! layer-wise form of BRECQ, Li et al. 2021).
//!
//! Two parts per layer:
//! - the float master weights take `steps` Adam steps on the output's squared error through
//!   the straight-through weight quantizer (the same per-channel `max|w| / qmax` grid that
//!   fine-tuning and the exporter use), each element's step measured in its channel's
//!   quantization step, so one learning rate fits every layer;
//! - with `ranges: learned`, the layer's input activation scale takes the same Adam steps with
//!   LSQ's gradient (the student's own, [`crate::student`]), each step a fixed fraction of the
//!   calibrated scale: the activation half of the 4-bit error is as large as the weight half
//!   (docs/EXPERIMENTS.md, 2026-11-30, 7075678), and the MSE calibration chose the range for
//!   the teacher's input, not for what minimises the layer's output error;
//! - the bias is then set in closed form to cancel the mean output error of every channel
//!   (bias correction, Nagel et al. 2019): the least-squares optimum for a bias.
//!
//! A layer sees too few samples to fit its weights when its outputs per channel over the
//! calibration set are fewer than [`SAMPLES_PER_WEIGHT`] times its fan-in (the 512×512 FC on
//! 512 images): it gets the bias correction alone.
//! The weights-or-activations diagnosis (docs/EXPERIMENTS.md, 2026-11-30) is what this
//! targets: choosing weights by their own error (`--weight-clip mse`) made the student worse,
//! so the objective here is each layer's output, measured on data.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{Result, bail};
use efq_shared::quant::qmax;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::net::{TchNet, channels_last};
use crate::student::{ActRanges, Student};

/// How much layer-wise reconstruction `quantize` runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    /// Adam steps on each layer's weights; 0: bias correction only.
    pub steps: usize,
    /// Calibration images per Adam step.
    pub batch: usize,
    /// Adam's step size in units of each output channel's weight quantization step.
    pub lr: f64,
    /// Whether each layer's input activation scale is fitted with its weights (`learned` by
    /// default; files written before this option existed fitted the weights alone, which is
    /// what a missing field reads as).
    #[serde(default)]
    pub ranges: ActRanges,
    /// Adam steps of block-wise reconstruction after the layer-wise pass ([`run_blocks`]); 0:
    /// off (and what files written before it existed read as).
    #[serde(default)]
    pub block_steps: usize,
    /// Probability with which the block-wise fit leaves each element of a quantized layer's
    /// input unquantized ([`Student::apply_dropping`]); 0: every input quantized, as files
    /// written before it existed did.
    #[serde(default)]
    pub block_drop: f64,
    /// How far, in its channel's weight quantization steps, the block-wise fit may move each
    /// weight from where the block's fit started (AdaRound's constraint, loosened: 0.5 lets
    /// each weight choose only between the two grid points around it); 0: unbounded, as
    /// files written before it existed were.
    #[serde(default)]
    pub block_box: f64,
    /// What the block fit minimises on the last block, whose output is the embedding (with
    /// `cosine`, trailing blocks with nothing to fit join the one before them, so that the
    /// last fitted block ends on the embedding); every other block fits its output's squared
    /// error. Missing in older files: `mse`.
    #[serde(default)]
    pub head_objective: Objective,
    /// How the activations over the whole calibration set are held between passes (every
    /// computation still runs in f32). Missing in older files: `f32`.
    #[serde(default)]
    pub storage: Storage,
}

/// The element type of the whole-set activations reconstruction keeps: a layer's input and
/// the teacher's output over every calibration image, for the student and the teacher. They
/// are what limits `--calib-images` (w600k_mbf at 1,024 crops: a 20.3 GB peak in f32 before
/// the whole-set errors were chunked, 5.6 GB in f16 after; docs/EXPERIMENTS.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Full precision.
    #[default]
    F32,
    /// Half the memory. Each stored value is rounded to 11 significant bits (relative error
    /// ≤ 2⁻¹¹): at most a sixteenth of an 8-bit grid's step, far less of a 6- or 4-bit one's.
    F16,
}

impl Storage {
    fn kind(self) -> Kind {
        match self {
            Storage::F32 => Kind::Float,
            Storage::F16 => Kind::Half,
        }
    }
}

/// Rows `s..s + l` of a stored whole-set tensor, in f32 for computing on (no copy when stored
/// in f32).
fn rows(t: &Tensor, s: i64, l: i64) -> Tensor {
    t.narrow(0, s, l).to_kind(Kind::Float)
}

/// The error a block fit minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Mean squared error of the output, element by element.
    #[default]
    Mse,
    /// Mean over images of 1 − cosine between the student's and the teacher's output (each
    /// image's output flattened): only the direction counts, as in verification, where an
    /// embedding is L2-normalised before its cosine is taken; squared error also spends the
    /// fit on each face's norm, and most on the faces with the largest.
    Cosine,
}

impl Objective {
    /// The error of `y` against `t` (both `[N, …]`), as a scalar tensor of `kind`.
    fn error(self, y: &Tensor, t: &Tensor, kind: Kind) -> Tensor {
        match self {
            Objective::Mse => (y - t).square().mean(kind),
            Objective::Cosine => {
                let (y, t) = (y.flatten(1, -1), t.flatten(1, -1));
                let cos = Tensor::cosine_similarity(&y, &t, 1, 1e-8);
                (cos.neg() + 1.0).mean(kind)
            }
        }
    }
}

impl Default for Reconstruction {
    fn default() -> Self {
        Reconstruction {
            steps: 200,
            batch: 32,
            lr: 0.02,
            ranges: ActRanges::Learned,
            block_steps: 0,
            block_drop: 0.0,
            block_box: 0.0,
            head_objective: Objective::Mse,
            storage: Storage::F32,
        }
    }
}

impl Reconstruction {
    /// Rejects settings that cannot fit anything, before any image is read.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.block_drop) {
            bail!(
                "--reconstruct-drop is a probability in [0, 1) (got {})",
                self.block_drop
            );
        }
        if !(self.block_box.is_finite() && self.block_box >= 0.0) {
            bail!(
                "--reconstruct-box is a distance in weight quantization steps, 0 or more (got {})",
                self.block_box
            );
        }
        if (self.steps > 0 || self.block_steps > 0)
            && (self.batch == 0 || !(self.lr.is_finite() && self.lr > 0.0))
        {
            bail!(
                "--reconstruct needs --reconstruct-batch > 0 and a positive --reconstruct-lr (got {} and {})",
                self.batch,
                self.lr
            );
        }
        Ok(())
    }
}

/// Outputs per channel, relative to the fan-in, below which a layer's weights are left alone.
pub const SAMPLES_PER_WEIGHT: i64 = 4;

/// What reconstruction did to one quantized layer: mean squared error of its output against
/// the teacher's (same layer, float input) over the calibration images, before and after.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerFit {
    pub name: String,
    pub mse_before: f64,
    pub mse_after: f64,
    /// Whether the weights were fitted (otherwise the bias alone).
    pub weights: bool,
    /// The input activation scale before and after, when it was fitted (learned ranges, weights
    /// fitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_scale: Option<(f32, f32)>,
    /// Whether the fit was undone because it ended with a larger error than the bias
    /// correction alone.
    #[serde(default)]
    pub reverted: bool,
}

/// Adam's step on a learned activation scale, as a fraction of its calibrated value per unit of
/// `lr` (0.5 % per step at the default lr 0.02: over 200 steps enough to move the range by
/// tens of percent, not enough to jump over the optimum of a 4-bit grid).
const ACT_LR_FRACTION: f64 = 0.25;

/// Images per no-grad pass over the calibration set (bounds the temporaries of one layer).
const CHUNK: i64 = 64;

/// `f(start, len)` over the calibration set a chunk at a time, into one tensor of `kind`.
fn chunked(n: i64, kind: Kind, f: impl Fn(i64, i64) -> Tensor) -> Tensor {
    tch::no_grad(|| {
        let first = f(0, CHUNK.min(n));
        if first.size()[0] == n {
            return first.to_kind(kind);
        }
        // Written into one buffer rather than concatenated: a layer's output over the whole
        // calibration set is the largest tensor held (822 MB for mbf's 128×56×56 at 512
        // images), and `cat` would hold it twice. Channels-last stays channels-last, so that
        // the next convolution reads it without a reorder.
        let mut shape = first.size();
        shape[0] = n;
        let opts = (kind, first.device());
        let channels_last = first.dim() == 4 && first.stride()[1] == 1 && shape[1] > 1;
        let out = if channels_last {
            Tensor::empty([shape[0], shape[2], shape[3], shape[1]], opts).permute([0, 3, 1, 2])
        } else {
            Tensor::empty(shape.as_slice(), opts)
        };
        out.narrow(0, 0, first.size()[0]).copy_(&first);
        drop(first);
        for s in (CHUNK..n).step_by(CHUNK as usize) {
            let l = CHUNK.min(n - s);
            out.narrow(0, s, l).copy_(&f(s, l));
        }
        out
    })
}

/// Per-channel sum over everything but dimension 1, in f64, a chunk of images at a time: a
/// reduction into f64 first converts its whole input to f64 (libtorch on the CPU), which for a
/// whole-set tensor is twice its size again.
fn channel_sum(t: &Tensor) -> Tensor {
    let dims: Vec<i64> = (0..t.dim() as i64).filter(|&d| d != 1).collect();
    tch::no_grad(|| {
        let n = t.size()[0];
        let mut sum = Tensor::zeros([t.size()[1]], (Kind::Double, t.device()));
        for s in (0..n).step_by(CHUNK as usize) {
            let part = t.narrow(0, s, CHUNK.min(n - s));
            sum += part.sum_dim_intlist(dims.as_slice(), false, Kind::Double);
        }
        sum
    })
}

/// `objective`'s error of `y` against `t` over the whole calibration set, in f64, a chunk of
/// images at a time: the same value as `objective.error(y, t, Kind::Double)` without its
/// whole-set temporaries (the difference, its square and their f64 copy: four times the
/// tensor, the peak of the quantize command before this was chunked).
fn whole_set_error(objective: Objective, y: &Tensor, t: &Tensor) -> f64 {
    tch::no_grad(|| {
        let n = y.size()[0];
        let mut sum = 0.0;
        for s in (0..n).step_by(CHUNK as usize) {
            let l = CHUNK.min(n - s);
            let (yc, tc) = (rows(y, s, l), rows(t, s, l));
            // Each chunk's mean, weighted by its share of the images: the chunks' means of
            // equal-size rows average to the whole set's.
            sum += objective.error(&yc, &tc, Kind::Double).double_value(&[]) * l as f64;
        }
        sum / n as f64
    })
}

fn same_graph(teacher: &TchNet, student: &Student) -> Result<()> {
    if teacher.num_steps() != student.num_steps() {
        bail!(
            "reconstruction needs the float graph the student came from ({} vs {} nodes)",
            teacher.num_steps(),
            student.num_steps()
        );
    }
    Ok(())
}

/// `steps` Adam steps on `params`, each on `batch` random rows of the whole-set input `sx`
/// against the same rows of `ty`, the loss `objective`'s error of `forward`.
fn adam_fit(
    params: &mut [AdamState],
    steps: usize,
    batch: usize,
    sx: &Tensor,
    ty: &Tensor,
    objective: Objective,
    forward: impl Fn(&Tensor) -> Tensor,
) {
    let n = sx.size()[0];
    let batch = (batch as i64).min(n);
    for k in 1..=steps {
        let idx = Tensor::randint(n, [batch], (Kind::Int64, sx.device()));
        let xb = sx.index_select(0, &idx).to_kind(Kind::Float);
        let xb = if xb.dim() == 4 { channels_last(xb) } else { xb };
        let tb = ty.index_select(0, &idx).to_kind(Kind::Float);
        let loss = objective.error(&forward(&xb), &tb, Kind::Float);
        for p in params.iter_mut() {
            p.param.zero_grad();
        }
        loss.backward();
        for p in params.iter_mut() {
            p.step(k, steps);
        }
    }
}

/// Fits every quantized layer of `student` in place (weights, then bias) to `teacher`'s layer
/// outputs on `images` (`[N, C, H, W]`). `teacher` is the float graph the student was quantized
/// from: the two must have the same steps, node for node.
pub fn run(
    teacher: &TchNet,
    student: &Student,
    images: &Tensor,
    r: &Reconstruction,
    seed: u64,
    pb: &ProgressBar,
) -> Result<Vec<LayerFit>> {
    same_graph(teacher, student)?;
    r.validate()?;
    tch::manual_seed(seed as i64);
    let device = student.device;
    let n = images.size()[0];
    let num_values = (0..student.num_steps())
        .map(|i| student.step_io(i).1 + 1)
        .max()
        .unwrap_or(1);
    let mut last_use = vec![usize::MAX; num_values];
    for i in 0..student.num_steps() {
        for &v in student.step_io(i).0 {
            last_use[v] = i;
        }
    }
    let store = r.storage.kind();
    let input = channels_last(images.to_device(device).to_kind(store));
    let mut t_vals: Vec<Option<Tensor>> = (0..num_values).map(|_| None).collect();
    let mut s_vals: Vec<Option<Tensor>> = (0..num_values).map(|_| None).collect();
    t_vals[0] = Some(input.shallow_clone());
    s_vals[0] = Some(input);
    let mut fits = Vec::new();
    pb.set_length(student.num_steps() as u64);
    for i in 0..student.num_steps() {
        let (ins, out) = student.step_io(i);
        let (ins, out) = (ins.to_vec(), out);
        let get = |vals: &[Option<Tensor>], k: usize| -> Option<Tensor> {
            ins.get(k)
                .map(|&v| vals[v].as_ref().expect("topological order").shallow_clone())
        };
        let (tx, tx2) = (get(&t_vals, 0).unwrap(), get(&t_vals, 1));
        let (sx, sx2) = (get(&s_vals, 0).unwrap(), get(&s_vals, 1));
        let ty = chunked(n, store, |s, l| {
            teacher.apply(
                i,
                &rows(&tx, s, l),
                tx2.as_ref().map(|t| rows(t, s, l)).as_ref(),
            )
        });
        let student_out = || {
            chunked(n, store, |s, l| {
                student.apply(
                    i,
                    &rows(&sx, s, l),
                    sx2.as_ref().map(|t| rows(t, s, l)).as_ref(),
                )
            })
        };
        if let Some((w, b, wbits)) = student.linear(i) {
            let mse = |y: &Tensor| whole_set_error(Objective::Mse, y, &ty);
            let channels = ty.size()[1];
            let per_channel = ty.numel() as i64 / channels;
            let fan_in = w.numel() as i64 / w.size()[0];
            let fit_weights = r.steps > 0 && per_channel >= SAMPLES_PER_WEIGHT * fan_in;
            let act = student
                .act_scale(i)
                .filter(|_| fit_weights && r.ranges == ActRanges::Learned);
            let scale_now = || act.map(|a| a.double_value(&[0]) as f32);
            let scale_before = scale_now();
            let y0 = student_out();
            let mse_before = mse(&y0);
            correct_bias(b, &ty, &y0);
            drop(y0);
            let mut reverted = false;
            let y = if fit_weights {
                // The error after the bias correction alone, without keeping that output: one
                // fewer whole-set tensor alive during the fit.
                let corrected = mse(&student_out());
                let saved: Vec<(Tensor, Tensor)> = [Some(w), Some(b), act]
                    .into_iter()
                    .flatten()
                    .map(|t| (t.shallow_clone(), t.detach().copy()))
                    .collect();
                fit(student, i, w, act, wbits, &sx, &ty, r)?;
                correct_bias(b, &ty, &student_out());
                let fitted = student_out();
                // Adam on 32-image batches can end above where it started (an 8-bit layer is
                // already near its optimum): keep the fit only when the whole calibration set
                // says it helped.
                if mse(&fitted) <= corrected {
                    fitted
                } else {
                    drop(fitted);
                    tch::no_grad(|| {
                        for (t, v) in &saved {
                            t.shallow_clone().copy_(v);
                        }
                    });
                    reverted = true;
                    student_out()
                }
            } else {
                student_out()
            };
            let mse_after = mse(&y);
            if !mse_after.is_finite() {
                bail!(
                    "reconstruction of layer '{}' diverged",
                    student.step_name(i)
                );
            }
            pb.set_message(format!(
                "{} mse {mse_before:.3e} → {mse_after:.3e}",
                student.step_name(i)
            ));
            fits.push(LayerFit {
                name: student.step_name(i).to_string(),
                mse_before,
                mse_after,
                weights: fit_weights,
                act_scale: scale_before.zip(scale_now()),
                reverted,
            });
            s_vals[out] = Some(y);
        } else {
            s_vals[out] = Some(student_out());
        }
        t_vals[out] = Some(ty);
        for &v in &ins {
            if last_use[v] == i {
                t_vals[v] = None;
                s_vals[v] = None;
            }
        }
        crate::memory::release_free_memory();
        pb.inc(1);
    }
    Ok(fits)
}

/// A run of consecutive steps that reads one value from before it and leaves one value for the
/// steps after it: block-wise reconstruction fits such a run as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub steps: Range<usize>,
    /// The one value it reads from before it (0: the graph's input).
    pub input: usize,
    /// The one value the steps after it read.
    pub output: usize,
}

/// Splits a graph's steps (topological order; each step's input values and output value;
/// value 0 the graph's input) into [`Block`]s. A block ends where exactly one value is live
/// (written before, read after), was not written by an element-wise nonlinearity
/// (`activation[i]`) and is not read by one: so a block ends on a residual unit's sum or on a
/// linear projection, never next to a PReLU; and a block holds at least one quantized layer
/// (`quantized[i]`; the steps after the last one join the last block). On MobileFaceNet that gives its bottleneck units (three
/// convolutions each), the stem (five) and the head (two convolutions and the embedding Gemm);
/// on an iresnet, its residual units.
pub fn blocks(io: &[(Vec<usize>, usize)], activation: &[bool], quantized: &[bool]) -> Vec<Block> {
    let n = io.len();
    let num_values = io
        .iter()
        .flat_map(|(ins, out)| ins.iter().chain(std::iter::once(out)))
        .max()
        .map_or(1, |&v| v + 1);
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); num_values];
    for (i, (ins, _)) in io.iter().enumerate() {
        for &v in ins {
            readers[v].push(i);
        }
    }
    let mut out = Vec::new();
    let (mut start, mut input) = (0, 0);
    for p in 1..n {
        let live: Vec<usize> = std::iter::once(0)
            .chain(io[..p].iter().map(|(_, o)| *o))
            .filter(|&v| readers[v].iter().any(|&r| r >= p))
            .collect();
        let after_activation = |v: usize| {
            io[..p]
                .iter()
                .rposition(|(_, o)| *o == v)
                .is_some_and(|i| activation[i])
        };
        if let [v] = live[..]
            && quantized[start..p].contains(&true)
            && !after_activation(v)
            && !readers[v].iter().any(|&r| activation[r])
        {
            out.push(Block {
                steps: start..p,
                input,
                output: v,
            });
            (start, input) = (p, v);
        }
    }
    if let Some((_, last)) = io.last() {
        match out.last_mut() {
            Some(prev) if !quantized[start..n].contains(&true) => {
                prev.steps.end = n;
                prev.output = *last;
            }
            _ => out.push(Block {
                steps: start..n,
                input,
                output: *last,
            }),
        }
    }
    out
}

/// Runs the steps of `b` on `x` (its input value) through `apply`, calling `observe(i, y)`
/// with each step's output.
fn forward_block(
    apply: &dyn Fn(usize, &Tensor, Option<&Tensor>) -> Tensor,
    io: &[(Vec<usize>, usize)],
    b: &Block,
    x: &Tensor,
    observe: &mut dyn FnMut(usize, &Tensor),
) -> Tensor {
    let mut vals: HashMap<usize, Tensor> = HashMap::from([(b.input, x.shallow_clone())]);
    for i in b.steps.clone() {
        let (ins, out) = &io[i];
        let y = apply(i, &vals[&ins[0]], ins.get(1).map(|v| &vals[v]));
        observe(i, &y);
        vals.insert(*out, y);
    }
    vals.remove(&b.output).expect("a block computes its output")
}

/// What block-wise reconstruction did to one block: mean squared error of its output against
/// the teacher's (same block, float input) over the calibration images, before and after.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockFit {
    /// The block's first and last node.
    pub first: String,
    pub last: String,
    /// Quantized layers whose weights were fitted (the others have too few samples).
    pub layers: usize,
    /// The block's error before and after, under `objective` (squared error unless the
    /// head's was chosen).
    pub mse_before: f64,
    pub mse_after: f64,
    /// Whether the fit was undone because it ended with a larger error than it started.
    pub reverted: bool,
    /// The error the fit minimised and `mse_before`/`mse_after` measure (older files: `mse`).
    #[serde(default)]
    pub objective: Objective,
}

/// Block-wise reconstruction (BRECQ, Li et al. 2021), run after [`run`]: each [`Block`] in
/// turn, from the student's own input to it, takes `r.block_steps` Adam steps on the weights
/// (and, with learned ranges, the input activation scales) of all its quantized layers at
/// once, against the teacher's output of the whole block. A layer-wise fit can only match each
/// layer's output; a block's layers together can trade one layer's error against the next
/// (a convolution's error that its PReLU would clip, a projection that absorbs the depthwise
/// layer's rounding). Layers with too few samples for their fan-in stay as they are, as in
/// [`run`]; a block whose fit ends with a larger whole-set error than it started with is
/// restored.
pub fn run_blocks(
    teacher: &TchNet,
    student: &Student,
    images: &Tensor,
    r: &Reconstruction,
    seed: u64,
    pb: &ProgressBar,
) -> Result<Vec<BlockFit>> {
    same_graph(teacher, student)?;
    r.validate()?;
    // A different stream from the layer-wise pass's: its batches are not the same draws again.
    tch::manual_seed(seed.wrapping_add(1) as i64);
    let io: Vec<(Vec<usize>, usize)> = (0..student.num_steps())
        .map(|i| {
            let (ins, out) = student.step_io(i);
            (ins.to_vec(), out)
        })
        .collect();
    let activation: Vec<bool> = (0..student.num_steps())
        .map(|i| student.is_activation(i))
        .collect();
    let quantized: Vec<bool> = (0..student.num_steps())
        .map(|i| student.linear(i).is_some())
        .collect();
    let mut blocks = blocks(&io, &activation, &quantized);
    let t_apply = |i: usize, x: &Tensor, o: Option<&Tensor>| teacher.apply(i, x, o);
    let s_apply = |i: usize, x: &Tensor, o: Option<&Tensor>| student.apply(i, x, o);
    let n = images.size()[0];
    let store = r.storage.kind();
    let mut tx = channels_last(images.to_device(student.device).to_kind(store));
    let mut sx = tx.shallow_clone();
    let mut per_image = HashMap::new();
    tch::no_grad(|| {
        let mut x = rows(&sx, 0, 1);
        for b in &blocks {
            x = forward_block(&s_apply, &io, b, &x, &mut |i, y| {
                per_image.insert(i, y.numel() as i64 / y.size()[1]);
            });
        }
    });
    let fits_weights = |i: usize| {
        student.linear(i).is_some_and(|(w, _, _)| {
            let fan_in = w.numel() as i64 / w.size()[0];
            n * per_image[&i] >= SAMPLES_PER_WEIGHT * fan_in
        })
    };
    if r.head_objective != Objective::Mse {
        // The head objective is about the embedding, so the last block must end on it: trailing
        // blocks with nothing to fit (w600k_mbf's embedding Gemm, 512 × 512 weights on 512
        // crops) join the block before them, whose fit then runs through them.
        while blocks.len() >= 2 && !blocks[blocks.len() - 1].steps.clone().any(fits_weights) {
            let last = blocks.pop().expect("two blocks");
            let prev = blocks.last_mut().expect("one block");
            (prev.steps.end, prev.output) = (last.steps.end, last.output);
        }
    }
    pb.set_position(0);
    pb.set_length(blocks.len() as u64);
    let mut fits = Vec::new();
    for b in &blocks {
        let ty = chunked(n, store, |s, l| {
            forward_block(&t_apply, &io, b, &rows(&tx, s, l), &mut |_, _| {})
        });
        let student_out = || {
            chunked(n, store, |s, l| {
                forward_block(&s_apply, &io, b, &rows(&sx, s, l), &mut |_, _| {})
            })
        };
        let objective = if b.steps.end == student.num_steps() {
            r.head_objective
        } else {
            Objective::Mse
        };
        let mse = |y: &Tensor| whole_set_error(objective, y, &ty);
        let mut params = Vec::new();
        let mut layers = 0;
        for i in b.steps.clone() {
            let Some((w, _, wbits)) = student.linear(i).filter(|_| fits_weights(i)) else {
                continue;
            };
            layers += 1;
            // Decayed, unlike the layer-wise fit's: at constant steps a 600-step block fit ended
            // noisier than it started in 9 of 16 blocks; decayed, in none (docs/EXPERIMENTS.md).
            let adam = weight_adam(w, wbits, r.lr).decaying();
            params.push(if r.block_box > 0.0 {
                adam.bounded(r.block_box / r.lr)
            } else {
                adam
            });
            if r.ranges == ActRanges::Learned {
                params.extend(student.act_scale(i).map(|a| scale_adam(a, r.lr)));
            }
        }
        let y0 = student_out();
        let mse_before = mse(&y0);
        let (mut mse_after, mut reverted) = (mse_before, false);
        let y = if layers > 0 && r.block_steps > 0 {
            // One fewer whole-set tensor alive during the fit; recomputed if the fit is undone.
            drop(y0);
            let saved: Vec<Tensor> = params.iter().map(|p| p.param.detach().copy()).collect();
            let s_fit = |i: usize, x: &Tensor, o: Option<&Tensor>| {
                student.apply_dropping(i, x, o, r.block_drop)
            };
            adam_fit(
                &mut params,
                r.block_steps,
                r.batch,
                &sx,
                &ty,
                objective,
                |xb| forward_block(&s_fit, &io, b, xb, &mut |_, _| {}),
            );
            // The backward also reached the biases and PReLU slopes: leave no gradient behind.
            for (_, p) in &student.params {
                let mut p = p.shallow_clone();
                p.zero_grad();
            }
            let fitted = student_out();
            let after = mse(&fitted);
            if after <= mse_before {
                mse_after = after;
                fitted
            } else {
                drop(fitted);
                tch::no_grad(|| {
                    for (p, v) in params.iter().zip(&saved) {
                        p.param.shallow_clone().copy_(v);
                    }
                });
                reverted = true;
                student_out()
            }
        } else {
            y0
        };
        let (first, last) = (
            student.step_name(b.steps.start).to_string(),
            student.step_name(b.steps.end - 1).to_string(),
        );
        if !mse_after.is_finite() {
            bail!("block reconstruction of '{first}' … '{last}' diverged");
        }
        pb.set_message(format!(
            "{first}…{last} mse {mse_before:.3e} → {mse_after:.3e}"
        ));
        fits.push(BlockFit {
            first,
            last,
            layers,
            mse_before,
            mse_after,
            reverted,
            objective,
        });
        (tx, sx) = (ty, y);
        crate::memory::release_free_memory();
        pb.inc(1);
    }
    Ok(fits)
}

/// `b += mean(teacher − student)` per output channel.
fn correct_bias(b: &Tensor, ty: &Tensor, sy: &Tensor) {
    tch::no_grad(|| {
        let per_channel = (ty.numel() as i64 / ty.size()[1]) as f64;
        let shift = ((channel_sum(ty) - channel_sum(sy)) / per_channel).to_kind(Kind::Float);
        let mut b = b.shallow_clone();
        let _ = b.g_add_(&shift.to_device(b.device()));
    })
}

/// Adam on the weights of step `i` (and on its activation scale `act`, when given) against the
/// teacher's output `ty`, step sizes in units of each output channel's quantization step (taken
/// once, from the starting weights) and of the starting activation scale.
#[allow(clippy::too_many_arguments)]
fn fit(
    student: &Student,
    i: usize,
    w: &Tensor,
    act: Option<&Tensor>,
    wbits: u8,
    sx: &Tensor,
    ty: &Tensor,
    r: &Reconstruction,
) -> Result<()> {
    let mut params = vec![weight_adam(w, wbits, r.lr)];
    params.extend(act.map(|a| scale_adam(a, r.lr)));
    adam_fit(
        &mut params,
        r.steps,
        r.batch,
        sx,
        ty,
        Objective::Mse,
        |xb| student.apply(i, xb, None),
    );
    for p in &mut params {
        p.param.zero_grad();
    }
    if let Some((_, b, _)) = student.linear(i) {
        let mut b = b.shallow_clone();
        b.zero_grad();
    }
    Ok(())
}

/// Adam on a layer's float master weights, each element's step `lr` times its output
/// channel's quantization step (taken from the starting weights).
fn weight_adam(w: &Tensor, wbits: u8, lr: f64) -> AdamState {
    let dims: Vec<i64> = (1..w.dim() as i64).collect();
    let unit = tch::no_grad(|| {
        let a = w.abs().amax(dims.as_slice(), true) / qmax(wbits) as f64;
        a.clamp_min(1e-12) * lr
    });
    AdamState::new(w, unit)
}

/// Adam on a learned activation scale, its step a fixed fraction of the starting scale,
/// cosine-decayed.
fn scale_adam(a: &Tensor, lr: f64) -> AdamState {
    let unit = tch::no_grad(|| a.abs() * (lr * ACT_LR_FRACTION));
    AdamState::new(a, unit).decaying()
}

/// One tensor under Adam, with an element-wise step size `unit`.
struct AdamState {
    param: Tensor,
    unit: Tensor,
    m: Tensor,
    v: Tensor,
    /// Whether the step follows a cosine from `unit` down to 0 over the run (a single scale
    /// fed by a whole tensor otherwise keeps jittering around its optimum to the last step).
    decay: bool,
    /// Element-wise limits the parameter is clamped into after every step.
    bounds: Option<(Tensor, Tensor)>,
}

impl AdamState {
    fn new(param: &Tensor, unit: Tensor) -> Self {
        AdamState {
            param: param.shallow_clone(),
            unit,
            m: param.zeros_like(),
            v: param.zeros_like(),
            decay: false,
            bounds: None,
        }
    }

    /// Keeps every element within `radius` of its starting value, `radius` in units of the
    /// element's step size `unit` (for weights `unit = lr × Δ`, so `radius = box / lr` is `box`
    /// quantization steps).
    fn bounded(self, radius: f64) -> Self {
        let bounds = tch::no_grad(|| {
            let r = &self.unit * radius;
            (&self.param - &r, &self.param + &r)
        });
        AdamState {
            bounds: Some(bounds),
            ..self
        }
    }

    fn decaying(self) -> Self {
        AdamState {
            decay: true,
            ..self
        }
    }

    /// Step `k` of `steps` (1-based).
    fn step(&mut self, k: usize, steps: usize) {
        let factor = if self.decay {
            0.5 * (1.0 + (std::f64::consts::PI * k as f64 / steps as f64).cos())
        } else {
            1.0
        };
        tch::no_grad(|| {
            let g = self.param.grad();
            if !g.defined() {
                return;
            }
            let d = crate::optim::adam_direction(&mut self.m, &mut self.v, &g, k as i64);
            let _ = self.param.g_sub_(&(d * &self.unit * factor));
            if let Some((lo, hi)) = &self.bounds {
                let clamped = self.param.maximum(lo).minimum(hi);
                self.param.copy_(&clamped);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_set_errors_and_channel_sums_by_chunks_equal_the_unchunked_ones() {
        // 150 images: two full chunks and a short one, random values with a nonzero mean.
        tch::manual_seed(7);
        let t = Tensor::randn([150, 5, 3, 2], (Kind::Float, tch::Device::Cpu)) + 0.3;
        let y = &t + Tensor::randn([150, 5, 3, 2], (Kind::Float, tch::Device::Cpu)) * 0.2;
        for objective in [Objective::Mse, Objective::Cosine] {
            let whole = objective.error(&y, &t, Kind::Double).double_value(&[]);
            let chunked = whole_set_error(objective, &y, &t);
            assert!(whole > 0.0);
            assert!(
                (chunked - whole).abs() <= 1e-12 * whole,
                "{objective:?}: {chunked} vs {whole}"
            );
        }
        let whole = t.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
        let chunked = channel_sum(&t);
        assert_eq!(chunked.size(), [5]);
        let gap = (&chunked - &whole).abs().max().double_value(&[]);
        assert!(gap < 1e-9, "channel sums differ by {gap}");
    }

    #[test]
    fn the_cosine_objective_is_one_minus_each_images_cosine_and_ignores_the_norm() {
        // Image 0: (1, 0) against (1, 1): cos = 1/√2. Image 1: (0, 2) against (0, 3): cos = 1.
        let t = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 3.0]).view([2, 2]);
        let y = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0]).view([2, 2]);
        let hand = (1.0 - 0.5f64.sqrt()) / 2.0;
        let cos = Objective::Cosine
            .error(&y, &t, Kind::Double)
            .double_value(&[]);
        assert!((cos - hand).abs() < 1e-7, "{cos} vs {hand}");
        // Squared error: ((0)² + (1)² + 0 + 1²) / 4.
        let mse = Objective::Mse.error(&y, &t, Kind::Double).double_value(&[]);
        assert!((mse - 0.5).abs() < 1e-7, "{mse}");
        // Scaling one image's output changes its squared error, not its cosine.
        let scaled = &y * Tensor::from_slice(&[3.0f32, 0.5]).view([2, 1]);
        let again = Objective::Cosine
            .error(&scaled, &t, Kind::Double)
            .double_value(&[]);
        assert!((again - cos).abs() < 1e-7, "{again} vs {cos}");
        assert!(
            Objective::Mse
                .error(&scaled, &t, Kind::Double)
                .double_value(&[])
                > 1.0
        );
    }

    /// conv → PReLU → conv (a stem), then a residual unit x + conv(PReLU(conv(x))), then a Gemm.
    #[test]
    fn blocks_end_on_residual_sums_and_projections_never_before_an_activation() {
        let io: Vec<(Vec<usize>, usize)> = vec![
            (vec![0], 1),    // 0 conv
            (vec![1], 2),    // 1 prelu
            (vec![2], 3),    // 2 conv (projection)
            (vec![3], 4),    // 3 conv
            (vec![4], 5),    // 4 prelu
            (vec![5], 6),    // 5 conv
            (vec![3, 6], 7), // 6 add
            (vec![7], 8),    // 7 gemm
            (vec![8], 9),    // 8 prelu
        ];
        let activation = [false, true, false, false, true, false, false, false, true];
        let quantized = [true, false, true, true, false, true, false, true, false];
        let b = blocks(&io, &activation, &quantized);
        let ranges: Vec<_> = b.iter().map(|b| b.steps.clone()).collect();
        assert_eq!(ranges, vec![0..3, 3..7, 7..9]);
        assert_eq!((b[0].input, b[0].output), (0, 3));
        assert_eq!((b[1].input, b[1].output), (3, 7));
        assert_eq!((b[2].input, b[2].output), (7, 9));
    }

    #[test]
    fn steps_without_a_quantized_layer_join_a_block_that_has_one() {
        // conv, add-free tail: flatten, then a gemm; then a trailing flatten.
        let io: Vec<(Vec<usize>, usize)> =
            vec![(vec![0], 1), (vec![1], 2), (vec![2], 3), (vec![3], 4)];
        let b = blocks(&io, &[false; 4], &[true, false, true, false]);
        let ranges: Vec<_> = b.iter().map(|b| b.steps.clone()).collect();
        assert_eq!(ranges, vec![0..1, 1..4]);
    }

    #[test]
    fn an_iresnets_blocks_are_its_residual_units_with_the_stem_in_the_first() {
        use efq_shared::graph::Op;
        let g = efq_shared::builders::iresnet(18, 0).unwrap();
        let io: Vec<(Vec<usize>, usize)> = g
            .nodes
            .iter()
            .map(|n| (n.inputs.clone(), n.output))
            .collect();
        let activation: Vec<bool> = g
            .nodes
            .iter()
            .map(|n| matches!(n.op, Op::PRelu { .. } | Op::Relu))
            .collect();
        let linear: Vec<bool> = g
            .nodes
            .iter()
            .map(|n| matches!(n.op, Op::Conv { .. } | Op::Gemm { .. }))
            .collect();
        let b = blocks(&io, &activation, &linear);
        // R18: 2 + 2 + 2 + 2 residual units, then the head (BN, Flatten, FC, BN).
        assert_eq!(b.len(), 9);
        let adds = |b: &Block| {
            b.steps
                .clone()
                .filter(|&i| matches!(g.nodes[i].op, Op::Add))
                .count()
        };
        assert!(b[..8].iter().all(|b| adds(b) == 1));
        assert_eq!(g.nodes[b[0].steps.start].name, "conv1");
        assert_eq!(adds(&b[8]), 0);
        assert_eq!(g.nodes[b[8].steps.end - 1].name, "features");
    }

    #[test]
    fn a_bounded_fit_keeps_each_weight_within_its_box_while_an_unbounded_one_leaves_it() {
        tch::manual_seed(3);
        let w0 = Tensor::randn([6, 4, 3, 3], (Kind::Float, tch::Device::Cpu));
        let run = |radius: Option<f64>| {
            let w = w0.copy().set_requires_grad(true);
            let adam = weight_adam(&w, 4, 0.02);
            let mut adam = match radius {
                Some(r) => adam.bounded(r / 0.02),
                None => adam,
            };
            // A gradient that keeps pushing every element the same way, with random weights
            // per element, for more steps than the box allows.
            let push = Tensor::rand([6, 4, 3, 3], (Kind::Float, tch::Device::Cpu)) + 0.1;
            for k in 1..=200 {
                let mut p = adam.param.shallow_clone();
                p.zero_grad();
                (&adam.param * &push).sum(Kind::Float).backward();
                adam.step(k, 200);
            }
            // Distance moved, in each output channel's quantization step.
            let step = w0.abs().amax([1, 2, 3], true) / qmax(4) as f64;
            tch::no_grad(|| ((adam.param.detach() - &w0) / step).abs())
        };
        let bounded = run(Some(0.5));
        let free = run(None);
        let most = |t: &Tensor| t.max().double_value(&[]);
        assert!(most(&bounded) <= 0.5 + 1e-5, "moved {}", most(&bounded));
        // The same steps unbounded carry every element well past it: 200 × 0.02 steps.
        let least_free = free.min().double_value(&[]);
        assert!(least_free > 2.0, "unbounded moved only {least_free}");
        // And the box is filled, not a fit that never tried to move.
        assert!(bounded.min().double_value(&[]) > 0.49);
    }

    #[test]
    fn a_graph_without_a_single_live_value_is_one_block() {
        // The input stays live to the last step (a skip over everything).
        let io: Vec<(Vec<usize>, usize)> =
            vec![(vec![0], 1), (vec![1], 2), (vec![2], 3), (vec![0, 3], 4)];
        let b = blocks(&io, &[false; 4], &[true, true, true, false]);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].steps.clone(), b[0].input, b[0].output), (0..4, 0, 4));
    }
}
