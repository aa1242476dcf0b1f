//! The layer-wise pass: each quantized layer in graph order fitted to the teacher's output of
//! that layer from the student's own input, then its bias corrected.

use anyhow::{Result, bail};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::adam::{adam_fit, scale_adam, weight_adam};
use super::whole_set::{chunked, correct_bias, rows, whole_set_error};
use super::{Objective, Reconstruction, enough_samples, prepare};
use crate::net::TchNet;
use crate::student::{ActRanges, Student};

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
    let input = prepare(teacher, student, images, r, seed)?;
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
            let per_channel = ty.numel() as i64 / ty.size()[1];
            let fit_weights = r.steps > 0 && enough_samples(w, per_channel);
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
