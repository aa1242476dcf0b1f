//! Layer- and block-wise reconstruction options, shared by `quantize` and `finetune`.

use clap::Args;

use crate::common::EXPERIMENTS;

/// Layer-wise reconstruction options, shared by `quantize` and `finetune`'s own quantization.
#[derive(Args)]
pub struct ReconstructArgs {
    /// After calibrating, fit each quantized layer in turn to the teacher's output of that
    /// layer, from the student's own quantized input on the calibration images: this many Adam
    /// steps on its weights, then its bias set to cancel the mean error per channel (0: the
    /// bias correction alone). Off unless given. See docs/quantization.md.
    #[arg(long, value_name = "STEPS")]
    pub reconstruct: Option<usize>,
    /// --reconstruct: Adam's step in units of each channel's weight quantization step.
    #[arg(long, default_value_t = 0.02)]
    reconstruct_lr: f64,
    /// --reconstruct: calibration images per Adam step.
    #[arg(long, default_value_t = 32)]
    reconstruct_batch: usize,
    /// --reconstruct: `learned` also fits each layer's input activation scale (LSQ's gradient)
    /// with its weights (on w600k_mbf at w4a4: teacher fidelity 0.773 against 0.765 frozen);
    /// `frozen` keeps the calibrated ranges.
    #[arg(
        long,
        value_enum,
        default_value = "learned",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    reconstruct_ranges: efq_trainer::student::ActRanges,
    /// --reconstruct: then fit each block (a residual unit, a bottleneck: the steps between two
    /// points where one pre-activation value is live) as a whole to the teacher's output of
    /// that block, this many Adam steps on all its layers at once (BRECQ). 0: off.
    #[arg(
        long,
        value_name = "STEPS",
        default_value_t = 0,
        requires = "reconstruct"
    )]
    reconstruct_blocks: usize,
    /// --reconstruct-blocks: during the block fit, leave each element of a quantized layer's
    /// input unquantized with this probability (QDrop; w600k_mbf w4a4 at 0.5: +0.4 point of
    /// TAR @ 1e-5 on LFW). 0: every input quantized. The file always quantizes all.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        requires = "reconstruct_blocks"
    )]
    reconstruct_drop: f64,
    /// --reconstruct-blocks: keep each weight within this many of its channel's quantization
    /// steps of where the block fit started (AdaRound's constraint; 0.5: only the two grid
    /// points around it). 0: unbounded, the default: at 0.5 the real teacher's w4a4 start
    /// came out worse (docs/EXPERIMENTS.md, "a box around each weight").
    #[arg(
        long,
        value_name = "STEPS",
        default_value_t = 0.0,
        requires = "reconstruct_blocks",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    reconstruct_box: f64,
    /// --reconstruct-blocks: what the last block's fit minimises. Its output is the embedding,
    /// which verification compares by cosine: `cosine` fits its direction alone (mean 1 −
    /// cosine to the teacher's; a trailing block with nothing to fit joins the one before),
    /// `mse` also its norm, as every other block does. On w600k_mbf w4a4 `cosine` halved the
    /// head's calibration error but left unseen faces where they were (docs/EXPERIMENTS.md, "A cosine objective for the last block").
    #[arg(
        long,
        value_enum,
        default_value = "mse",
        requires = "reconstruct_blocks",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    reconstruct_head: efq_trainer::reconstruct::Objective,
    /// --reconstruct: hold the activations over all calibration images (a layer's or block's
    /// input and the teacher's output, for each image) as `f16` to halve the memory that
    /// bounds --calib-images (computing stays f32), or `f32`, the default.
    #[arg(long, value_enum, default_value = "f32", requires = "reconstruct")]
    reconstruct_storage: efq_trainer::reconstruct::Storage,
}

impl ReconstructArgs {
    pub fn settings(&self) -> Option<efq_trainer::reconstruct::Reconstruction> {
        self.reconstruct
            .map(|steps| efq_trainer::reconstruct::Reconstruction {
                steps,
                batch: self.reconstruct_batch,
                lr: self.reconstruct_lr,
                ranges: self.reconstruct_ranges,
                block_steps: self.reconstruct_blocks,
                block_drop: self.reconstruct_drop,
                block_box: self.reconstruct_box,
                head_objective: self.reconstruct_head,
                storage: self.reconstruct_storage,
            })
    }
}
