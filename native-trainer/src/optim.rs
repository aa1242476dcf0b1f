//! Adam's update, shared by fine-tuning (one step size for every parameter) and
//! reconstruction (a step size per element, in units of its quantization step).

use tch::Tensor;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Updates Adam's moments `m` and `v` in place with the gradient `g` of step `t` (1-based)
/// and returns the bias-corrected direction m̂ / (√v̂ + ε); the caller scales it by its step
/// size and subtracts it from the parameter.
pub fn adam_direction(m: &mut Tensor, v: &mut Tensor, g: &Tensor, t: i64) -> Tensor {
    tch::no_grad(|| {
        let _ = m.g_mul_scalar_(BETA1).g_add_(&(g * (1.0 - BETA1)));
        let _ = v.g_mul_scalar_(BETA2).g_add_(&(g.square() * (1.0 - BETA2)));
        let mh = &*m / (1.0 - BETA1.powi(t as i32));
        let vh = &*v / (1.0 - BETA2.powi(t as i32));
        mh / (vh.sqrt() + EPS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Against Adam written out by hand in f64 for one scalar over three steps (the first
    /// step of Adam moves every element by about its step size, whatever the gradient's scale).
    #[test]
    fn adam_direction_follows_the_paper_step_by_step() {
        let (mut m, mut v) = (
            Tensor::zeros([1], (Kind::Double, Device::Cpu)),
            Tensor::zeros([1], (Kind::Double, Device::Cpu)),
        );
        let (mut mm, mut vv) = (0.0f64, 0.0f64);
        for (t, g) in [(1, 3e-4), (2, -1e-4), (3, 2e-4)] {
            let d = adam_direction(&mut m, &mut v, &Tensor::from_slice(&[g]), t).double_value(&[0]);
            mm = 0.9 * mm + 0.1 * g;
            vv = 0.999 * vv + 0.001 * g * g;
            let want = (mm / (1.0 - 0.9f64.powi(t as i32)))
                / ((vv / (1.0 - 0.999f64.powi(t as i32))).sqrt() + 1e-8);
            assert!(
                (d - want).abs() <= 1e-12 * want.abs(),
                "step {t}: {d} vs {want}"
            );
            if t == 1 {
                assert!((d - 1.0).abs() < 1e-3, "{d}");
            }
        }
    }
}
