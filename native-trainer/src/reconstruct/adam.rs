//! Adam for reconstruction: each element's step measured in its own unit (a weight's output
//! channel's quantization step, a fixed fraction of an activation scale), optionally
//! cosine-decayed or kept in a box around its start.

use efq_shared::quant::qmax;
use tch::{Kind, Tensor};

use super::Objective;
use crate::net::channels_last;

/// Adam's step on a learned activation scale, as a fraction of its calibrated value per unit of
/// `lr` (0.5 % per step at the default lr 0.02: over 200 steps enough to move the range by
/// tens of percent, not enough to jump over the optimum of a 4-bit grid).
const ACT_LR_FRACTION: f64 = 0.25;
/// `steps` Adam steps on `params`, each on `batch` random rows of the whole-set input `sx`
/// against the same rows of `ty`, the loss `objective`'s error of `forward`.
pub(super) fn adam_fit(
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
/// Adam on a layer's float master weights, each element's step `lr` times its output
/// channel's quantization step (taken from the starting weights).
pub(super) fn weight_adam(w: &Tensor, wbits: u8, lr: f64) -> AdamState {
    let dims: Vec<i64> = (1..w.dim() as i64).collect();
    let unit = tch::no_grad(|| {
        let a = w.abs().amax(dims.as_slice(), true) / qmax(wbits) as f64;
        a.clamp_min(1e-12) * lr
    });
    AdamState::new(w, unit)
}

/// Adam on a learned activation scale, its step a fixed fraction of the starting scale,
/// cosine-decayed.
pub(super) fn scale_adam(a: &Tensor, lr: f64) -> AdamState {
    let unit = tch::no_grad(|| a.abs() * (lr * ACT_LR_FRACTION));
    AdamState::new(a, unit).decaying()
}

/// One tensor under Adam, with an element-wise step size `unit`.
pub(super) struct AdamState {
    pub(super) param: Tensor,
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
    pub(super) fn bounded(self, radius: f64) -> Self {
        let bounds = tch::no_grad(|| {
            let r = &self.unit * radius;
            (&self.param - &r, &self.param + &r)
        });
        AdamState {
            bounds: Some(bounds),
            ..self
        }
    }

    pub(super) fn decaying(self) -> Self {
        AdamState {
            decay: true,
            ..self
        }
    }

    /// Step `k` of `steps` (1-based).
    pub(super) fn step(&mut self, k: usize, steps: usize) {
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
}
