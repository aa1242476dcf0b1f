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
//!
//! The parts: `layer_wise` (the layer-wise pass, [`run`]), `block_wise` (the block-wise pass,
//! [`run_blocks`]), `adam` (the optimiser and its step sizes), `whole_set` (tensors over the
//! whole calibration set, computed and reduced a chunk of images at a time); the settings here.

mod adam;
mod block_wise;
mod layer_wise;
mod whole_set;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::net::TchNet;
use crate::student::{ActRanges, Student};

pub use block_wise::{Block, BlockFit, blocks, run_blocks};
pub use layer_wise::{LayerFit, run};

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

/// What both passes do first: check that `teacher` is the float graph `student` came from and
/// that the settings are usable, seed libtorch's generator, and return `images` as the passes
/// store them (the student's device, `r.storage`'s kind, channels-last).
fn prepare(
    teacher: &TchNet,
    student: &Student,
    images: &Tensor,
    r: &Reconstruction,
    seed: u64,
) -> Result<Tensor> {
    if teacher.num_steps() != student.num_steps() {
        bail!(
            "reconstruction needs the float graph the student came from ({} vs {} nodes)",
            teacher.num_steps(),
            student.num_steps()
        );
    }
    r.validate()?;
    tch::manual_seed(seed as i64);
    let stored = images.to_device(student.device).to_kind(r.storage.kind());
    Ok(crate::net::channels_last(stored))
}

/// Whether a layer with weights `w` (output channels first) has enough outputs per channel over
/// the calibration set to fit them: [`SAMPLES_PER_WEIGHT`] times its fan-in or more.
fn enough_samples(w: &Tensor, outputs_per_channel: i64) -> bool {
    let fan_in = w.numel() as i64 / w.size()[0];
    outputs_per_channel >= SAMPLES_PER_WEIGHT * fan_in
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
