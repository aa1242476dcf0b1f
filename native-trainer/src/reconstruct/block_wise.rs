//! The block-wise pass: runs of steps with one value in and one out, fitted as a whole.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{Result, bail};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::adam::{adam_fit, scale_adam, weight_adam};
use super::whole_set::{chunked, rows, whole_set_error};
use super::{Objective, Reconstruction, enough_samples, prepare};
use crate::net::TchNet;
use crate::student::{ActRanges, Student};

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
    // A different stream from the layer-wise pass's: its batches are not the same draws again.
    let mut tx = prepare(teacher, student, images, r, seed.wrapping_add(1))?;
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
        student
            .linear(i)
            .is_some_and(|(w, _, _)| enough_samples(w, n * per_image[&i]))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_graph_without_a_single_live_value_is_one_block() {
        // The input stays live to the last step (a skip over everything).
        let io: Vec<(Vec<usize>, usize)> =
            vec![(vec![0], 1), (vec![1], 2), (vec![2], 3), (vec![0, 3], 4)];
        let b = blocks(&io, &[false; 4], &[true, true, true, false]);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].steps.clone(), b[0].input, b[0].output), (0..4, 0, 4));
    }
}
