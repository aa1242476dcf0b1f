//! The trainable student: the teacher's graph with quantization-aware training. Its forward is
//! the integer layer of docs/quantization.md with straight-through rounding, so that what is
//! trained is exactly what `export` writes and the engine runs:
//!
//! - weights: per-output-channel scales recomputed from the float master weights at every step
//!   (`s_w = max|w| / qmax`, the exporter's formula), rounded with a straight-through estimator;
//! - activations: per-tensor scales calibrated once, then either **frozen** (the default) or
//!   **learned** ([`ActRanges::Learned`]): each scale becomes a trainable parameter with LSQ's
//!   gradient (Esser et al. 2020), `∂q̂/∂s = round(x/s) − x/s` inside the grid's range and `±qmax`
//!   outside, scaled by `1/√(N·qmax)` for a tensor of `N` values per image. Either way the
//!   exported file carries the scale the last step trained with, so the grid the engine runs is
//!   the one the student learned on.

use anyhow::{Result, bail};
use efq_shared::graph::{ConvAttrs, Graph, Op, Tensor as GTensor, Weights};
use efq_shared::quant::{ActQuant, QuantWeights, qmax};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::net::channels_last;

/// What fine-tuning does with the calibrated activation scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ActRanges {
    /// Keep the calibrated scales.
    #[default]
    Frozen,
    /// Train them with LSQ's gradient, from the calibrated values.
    Learned,
}

enum Layer {
    Conv {
        w: Tensor,
        b: Tensor,
        attrs: ConvAttrs,
        /// Weight width and input quantizer; `None`: a float layer (a float student, such as a
        /// pruned teacher or a smaller network distilled from one).
        quant: Option<(u8, ActQuant)>,
        /// The trainable scale (`[1]`) with learned ranges.
        act: Option<Tensor>,
    },
    Gemm {
        w: Tensor,
        b: Tensor,
        quant: Option<(u8, ActQuant)>,
        act: Option<Tensor>,
    },
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    PRelu {
        slope: Tensor,
    },
    Relu,
    Add,
    Flatten,
}

struct Step {
    name: String,
    layer: Layer,
    inputs: Vec<usize>,
    output: usize,
}

pub struct Student {
    graph: Graph,
    steps: Vec<Step>,
    /// Every trainable tensor, by name (`<node>.weight`, `.bias`, `.scale`, `.shift`, `.slope`).
    pub params: Vec<(String, Tensor)>,
    pub device: Device,
}

fn param(data: &[f32], shape: &[usize], device: Device) -> Tensor {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(data)
        .reshape(&shape)
        .to_device(device)
        .set_requires_grad(true)
}

/// Fake-quantized input (`q · s_a`) with a clipped straight-through gradient (1 inside the
/// grid's range `|x| ≤ qmax·s_a`, 0 outside): `clamp(x) + δ` with `δ = fq(x) − clamp(x)`
/// computed without a graph.
///
/// Written as vectorised element-wise ops rather than libtorch's fused
/// `fake_quantize_per_tensor_affine`, which rounds one scalar at a time: ~27 vs ~70 ms on a
/// 64×64×56×56 activation (`cargo run --release -p efq-trainer --example fq_bench`), 7.0 vs
/// 5.8 images/s for the whole fine-tuning step at batch 64. A hand-written Rust pass for `δ` measured
/// slower still (6.3–6.8 images/s). Without a graph (the first half of gradient caching) the
/// fake-quantized value is computed in place on one buffer.
fn quant_input(x: &Tensor, aq: &ActQuant, learned: Option<&Tensor>) -> Tensor {
    let [lo, hi] = aq.levels().map(f64::from);
    if let Some(s) = learned {
        let per_image = x.size()[1..].iter().product::<i64>().max(1) as f64;
        let g = 1.0 / (per_image * aq.max_level() as f64).sqrt();
        // Value `s`, gradient `g · ∂/∂s`; kept positive so that the grid stays a grid.
        let s = s.clamp_min(MIN_SCALE);
        let se = &s * g + (&s - &s * g).detach();
        if se.requires_grad() {
            // The reciprocal in f32, as every implementation multiplies by it.
            let v = x * se.reciprocal();
            let vc = v.clamp(lo, hi);
            let r = tch::no_grad(|| {
                let mut d = vc.round();
                let _ = d.g_sub_(&vc);
                d
            });
            return (vc + r) * se;
        }
        let frozen = ActQuant {
            scale: s.double_value(&[0]) as f32,
            ..*aq
        };
        return quant_input(x, &frozen, None);
    }
    let s = aq.scale as f64;
    let inv = aq.inv_scale() as f64;
    if !x.requires_grad() {
        let mut y = x * inv;
        let _ = y.round_();
        let _ = y.clamp_(lo, hi);
        let _ = y.g_mul_scalar_(s);
        return y;
    }
    let c = x.clamp(lo * s, hi * s);
    let delta = tch::no_grad(|| {
        let mut d = &c * inv;
        let _ = d.round_();
        let _ = d.clamp_(lo, hi);
        let _ = d.g_mul_scalar_(s);
        let _ = d.g_sub_(&c);
        d
    });
    c + delta
}

/// Each element of `xq` (the fake-quantized `x`) replaced by `x`'s with probability `drop`.
fn dropping_quant(x: &Tensor, xq: Tensor, drop: f64) -> Tensor {
    if drop > 0.0 {
        let keep_float = x.rand_like().lt(drop);
        x.where_self(&keep_float, &xq)
    } else {
        xq
    }
}

/// Fake-quantized weights with the per-channel scales `QuantWeights::from_float` computes
/// (`max|w| / qmax`; 1 for an all-zero channel or one whose scale would be below
/// `MIN_WEIGHT_SCALE`), straight-through gradient.
pub fn quant_weights(w: &Tensor, bits: u8) -> Tensor {
    let q = qmax(bits) as i64;
    let dims: Vec<i64> = (1..w.dim() as i64).collect();
    let absmax = w.abs().amax(dims.as_slice(), false).detach();
    let scale = &absmax / q as f64;
    let usable = scale.ge(efq_shared::quant::MIN_WEIGHT_SCALE as f64);
    let scale = scale.where_self(&usable, &scale.ones_like());
    let zero = Tensor::zeros([scale.size()[0]], (Kind::Int, w.device()));
    w.fake_quantize_per_channel_affine(&scale, &zero, 0, -q, q)
}

/// Floor of a learned activation scale (a step that overshoots zero must not flip the grid).
const MIN_SCALE: f64 = 1e-12;

/// The trainable activation scale of a layer when ranges are learned.
fn act_param(aq: &ActQuant, ranges: ActRanges, device: Device) -> Option<Tensor> {
    (ranges == ActRanges::Learned).then(|| param(&[aq.scale], &[1], device))
}

/// Trainable float masters (the dequantized weights) and bias of a quantized Conv/Gemm.
fn linear_params(q: &QuantWeights, bias: &[f32], device: Device) -> (Tensor, Tensor) {
    let wf = q.dequantize();
    (
        param(&wf.data, &wf.shape, device),
        param(bias, &[bias.len()], device),
    )
}

impl Student {
    /// From a quantized graph (a calibrated post-training student) or a float one (trained
    /// in float: fake quantization only where a layer is quantized).
    pub fn new(graph: &Graph, device: Device, ranges: ActRanges) -> Result<Self> {
        graph.infer_shapes()?;
        let mut steps = Vec::new();
        let mut params = Vec::new();
        for node in &graph.nodes {
            let nm = &node.name;
            let mut reg = |suffix: &str, t: &Tensor| {
                params.push((format!("{nm}.{suffix}"), t.shallow_clone()))
            };
            let layer = match &node.op {
                Op::Conv {
                    weights,
                    bias,
                    input_quant,
                    ..
                }
                | Op::Gemm {
                    weights,
                    bias,
                    input_quant,
                } => {
                    let (w, b, quant, act) = match (weights, input_quant) {
                        (Weights::Quant(q), Some(aq)) => {
                            let (w, b) = linear_params(q, bias, device);
                            (w, b, Some((q.bits, *aq)), act_param(aq, ranges, device))
                        }
                        (Weights::Float(t), None) => (
                            param(&t.data, &t.shape, device),
                            param(bias, &[bias.len()], device),
                            None,
                            None,
                        ),
                        _ => bail!(
                            "layer '{nm}' mixes float and quantized parts: fine-tuning takes a \
                             quantized student or a float one"
                        ),
                    };
                    reg("weight", &w);
                    reg("bias", &b);
                    if let Some(a) = &act {
                        reg("act_scale", a);
                    }
                    match &node.op {
                        Op::Conv { attrs, .. } => Layer::Conv {
                            w,
                            b,
                            attrs: *attrs,
                            quant,
                            act,
                        },
                        _ => Layer::Gemm { w, b, quant, act },
                    }
                }
                Op::Affine { scale, shift } => {
                    let (s, t) = (
                        param(scale, &[scale.len()], device),
                        param(shift, &[shift.len()], device),
                    );
                    reg("scale", &s);
                    reg("shift", &t);
                    Layer::Affine { scale: s, shift: t }
                }
                Op::PRelu { slope } => {
                    let s = param(slope, &[slope.len()], device);
                    reg("slope", &s);
                    Layer::PRelu { slope: s }
                }
                Op::Relu => Layer::Relu,
                Op::Add => Layer::Add,
                Op::Flatten => Layer::Flatten,
                Op::Upsample { .. } => {
                    bail!("layer '{nm}': upsampling is not part of a face-recognition student")
                }
            };
            steps.push(Step {
                name: nm.clone(),
                layer,
                inputs: node.inputs.clone(),
                output: node.output,
            });
        }
        Ok(Student {
            graph: graph.clone(),
            steps,
            params,
            device,
        })
    }

    /// Number of steps (graph nodes), in topological order.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// The value ids step `i` reads and the one it writes.
    pub fn step_io(&self, i: usize) -> (&[usize], usize) {
        (&self.steps[i].inputs, self.steps[i].output)
    }

    /// The node name of step `i`.
    pub fn step_name(&self, i: usize) -> &str {
        &self.steps[i].name
    }

    /// The float master weights, bias and weight width of step `i` if it is a quantized
    /// Conv/Gemm.
    pub fn linear(&self, i: usize) -> Option<(&Tensor, &Tensor, u8)> {
        match &self.steps[i].layer {
            Layer::Conv {
                w,
                b,
                quant: Some((wbits, _)),
                ..
            }
            | Layer::Gemm {
                w,
                b,
                quant: Some((wbits, _)),
                ..
            } => Some((w, b, *wbits)),
            _ => None,
        }
    }

    /// Whether step `i` is an element-wise nonlinearity (PReLU, ReLU): block-wise
    /// reconstruction does not end a block on the input of one.
    pub fn is_activation(&self, i: usize) -> bool {
        matches!(self.steps[i].layer, Layer::PRelu { .. } | Layer::Relu)
    }

    /// The trainable input activation scale (`[1]`) of step `i`, when ranges are learned.
    pub fn act_scale(&self, i: usize) -> Option<&Tensor> {
        match &self.steps[i].layer {
            Layer::Conv { act, .. } | Layer::Gemm { act, .. } => act.as_ref(),
            _ => None,
        }
    }

    /// Step `i` on its first input `x` (and `other`, an Add's second), differentiable.
    pub fn apply(&self, i: usize, x: &Tensor, other: Option<&Tensor>) -> Tensor {
        self.apply_dropping(i, x, other, 0.0)
    }

    /// [`Student::apply`] with each element of a quantized layer's input left unquantized
    /// (float) with probability `drop` (QDrop, Wei et al. 2022): a fit that sees its layers
    /// both with and without the activations' rounding is meant to settle in a flatter
    /// minimum, one the calibration images' own rounding noise does not pin (on w600k_mbf at
    /// w4a4 it added 0.4 point of TAR @ 1e-5; docs/EXPERIMENTS.md, 2026-12-01, e638965). Only
    /// reconstruction uses it; `drop = 0` is the quantized forward.
    pub fn apply_dropping(
        &self,
        i: usize,
        x: &Tensor,
        other: Option<&Tensor>,
        drop: f64,
    ) -> Tensor {
        let quant_x = |x: &Tensor, quant: &Option<(u8, ActQuant)>, act: Option<&Tensor>| match quant
        {
            Some((_, aq)) => dropping_quant(x, quant_input(x, aq, act), drop),
            None => x.shallow_clone(),
        };
        let quant_w = |w: &Tensor, quant: &Option<(u8, ActQuant)>| match quant {
            Some((wbits, _)) => quant_weights(w, *wbits),
            None => w.shallow_clone(),
        };
        let s = &self.steps[i];
        match &s.layer {
            Layer::Conv {
                w,
                b,
                attrs,
                quant,
                act,
            } => {
                let xq = quant_x(x, quant, act.as_ref());
                let [t, l, bo, r] = attrs.pads.map(|p| p as i64);
                let (xq, padding) = if t == bo && l == r {
                    (xq, [t, l])
                } else {
                    (xq.constant_pad_nd([l, r, t, bo]), [0, 0])
                };
                let stride = attrs.stride.map(|v| v as i64);
                let dilation = attrs.dilation.map(|v| v as i64);
                // Channels-last routes forward and backward (depthwise included) to oneDNN.
                let wq = channels_last(quant_w(w, quant));
                xq.conv2d(&wq, Some(b), stride, padding, dilation, attrs.group as i64)
            }
            Layer::Gemm { w, b, quant, act } => {
                quant_x(x, quant, act.as_ref()).linear(&quant_w(w, quant), Some(b))
            }
            Layer::Affine { scale, shift } => {
                let rank = x.dim() as i64;
                let mut shape = vec![-1i64];
                shape.extend(std::iter::repeat_n(1, rank as usize - 2));
                x * scale.view(shape.as_slice()) + shift.view(shape.as_slice())
            }
            Layer::PRelu { slope } => x.prelu(slope),
            Layer::Relu => x.relu(),
            Layer::Add => x + other.expect("an Add has two inputs"),
            Layer::Flatten => x.flatten(1, -1),
        }
    }

    /// Training forward: `[N, C, H, W]` → `[N, dim]` raw embeddings, differentiable.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut values: Vec<Option<Tensor>> = (0..self.graph.num_values).map(|_| None).collect();
        values[0] = Some(channels_last(x.to_device(self.device).to_kind(Kind::Float)));
        for (i, s) in self.steps.iter().enumerate() {
            let x = values[s.inputs[0]].as_ref().expect("topological order");
            let y = self.apply(i, x, s.inputs.get(1).and_then(|&v| values[v].as_ref()));
            values[s.output] = Some(y);
        }
        values[self.graph.output].take().expect("output computed")
    }

    /// Each quantized layer's activation scale as calibrated and as the forward uses it now
    /// (equal unless the ranges are learned).
    pub fn act_scales(&self) -> Vec<(f32, f32)> {
        self.steps
            .iter()
            .filter_map(|s| match &s.layer {
                Layer::Conv {
                    quant: Some((_, aq)),
                    act,
                    ..
                }
                | Layer::Gemm {
                    quant: Some((_, aq)),
                    act,
                    ..
                } => {
                    let now = act
                        .as_ref()
                        .map_or(aq.scale, |a| a.double_value(&[0]) as f32);
                    Some((aq.scale, now))
                }
                _ => None,
            })
            .collect()
    }

    /// The student as a quantized graph: weights re-quantized from the masters with the same
    /// formula the training forward used, the activation scales it trained with, trained
    /// float parameters.
    pub fn to_graph(&self) -> Result<Graph> {
        let fetch = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(Vec::<f32>::try_from(
                t.detach().to_device(Device::Cpu).flatten(0, -1),
            )?)
        };
        let mut g = self.graph.clone();
        for (node, s) in g.nodes.iter_mut().zip(&self.steps) {
            debug_assert_eq!(node.name, s.name);
            match (&mut node.op, &s.layer) {
                (
                    Op::Conv {
                        weights,
                        bias,
                        input_quant,
                        ..
                    },
                    Layer::Conv {
                        w, b, quant, act, ..
                    },
                )
                | (
                    Op::Gemm {
                        weights,
                        bias,
                        input_quant,
                    },
                    Layer::Gemm {
                        w, b, quant, act, ..
                    },
                ) => {
                    let shape: Vec<usize> = w.size().iter().map(|&d| d as usize).collect();
                    let t = GTensor::new(shape, fetch(w)?)?;
                    *weights = match quant {
                        Some((wbits, _)) => Weights::Quant(QuantWeights::from_float(&t, *wbits)?),
                        None => Weights::Float(t),
                    };
                    *bias = fetch(b)?;
                    if let (Some(a), Some(aq)) = (act, input_quant.as_mut()) {
                        // What the forward used: the clamped value, rounded to f32.
                        aq.scale = a.clamp_min(MIN_SCALE).double_value(&[0]) as f32;
                        aq.validate()?;
                    }
                }
                (
                    Op::Affine { scale, shift },
                    Layer::Affine {
                        scale: s2,
                        shift: t2,
                    },
                ) => {
                    *scale = fetch(s2)?;
                    *shift = fetch(t2)?;
                }
                (Op::PRelu { slope }, Layer::PRelu { slope: s2 }) => *slope = fetch(s2)?,
                _ => {}
            }
        }
        g.infer_shapes()?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QDrop leaves the stated share of elements float and the rest exactly as quantized, and
    /// the learned scale still gets its gradient through the quantized ones.
    #[test]
    fn dropped_elements_are_float_in_the_stated_share_and_the_rest_quantized() {
        tch::manual_seed(3);
        let x = Tensor::randn([4, 8, 32, 32], (Kind::Float, Device::Cpu)) * 1.5;
        let aq = ActQuant {
            bits: 4,
            scale: 0.2,
            levels: None,
        };
        let xq = quant_input(&x, &aq, None);
        // Elements the grid itself leaves unchanged cannot tell the two apart.
        let moved = xq.ne_tensor(&x);
        let n_moved = moved.sum(Kind::Int64).int64_value(&[]);
        assert!(n_moved > 30_000, "the case must round most elements");
        for drop in [0.0, 0.25, 0.5] {
            let y = dropping_quant(&x, xq.shallow_clone(), drop);
            let is_float = y.eq_tensor(&x).logical_and(&moved);
            let is_quant = y.eq_tensor(&xq);
            assert!(
                bool::try_from(is_float.logical_or(&is_quant).all()).unwrap(),
                "drop {drop}: an element neither float nor quantized"
            );
            let share = is_float.sum(Kind::Int64).int64_value(&[]) as f64 / n_moved as f64;
            // ~32k Bernoulli draws: the standard error is below 0.003.
            assert!(
                (share - drop).abs() < 0.015,
                "drop {drop}: {share:.4} of the rounded elements left float"
            );
        }
        let s = Tensor::from_slice(&[0.2f32]).set_requires_grad(true);
        let y = dropping_quant(&x, quant_input(&x, &aq, Some(&s)), 0.5);
        y.sum(Kind::Float).backward();
        let g = s.grad().double_value(&[0]);
        assert!(g.is_finite() && g != 0.0, "scale gradient {g}");
    }

    /// LSQ's gradients, written out element by element, against what autograd computes through
    /// `quant_input` with a learned scale.
    #[test]
    fn learned_scale_gets_lsq_gradient_and_the_input_a_clipped_straight_through_one() {
        tch::manual_seed(7);
        let x = Tensor::randn([2, 3, 5, 4], (Kind::Float, Device::Cpu)) * 2.0;
        let x = x.set_requires_grad(true);
        let upstream = Tensor::randn([2, 3, 5, 4], (Kind::Float, Device::Cpu));
        let aq = ActQuant {
            bits: 4,
            scale: 0.2,
            levels: None,
        };
        let s = Tensor::from_slice(&[0.23f32]).set_requires_grad(true);
        let y = quant_input(&x, &aq, Some(&s));
        (&y * &upstream).sum(Kind::Float).backward();

        let xs = Vec::<f32>::try_from(x.detach().flatten(0, -1)).unwrap();
        let ys = Vec::<f32>::try_from(y.detach().flatten(0, -1)).unwrap();
        let gs = Vec::<f32>::try_from(upstream.flatten(0, -1)).unwrap();
        let gx = Vec::<f32>::try_from(x.grad().flatten(0, -1)).unwrap();
        let q = qmax(4) as f64;
        let scale = 0.23f32;
        let inv = 1.0 / scale;
        let g = 1.0 / ((3.0 * 5.0 * 4.0) * q).sqrt();
        let (mut want_gs, mut clipped) = (0.0f64, 0);
        for i in 0..xs.len() {
            let v = xs[i] * inv;
            let level = v.round().clamp(-q as f32, q as f32);
            assert!((ys[i] - level * scale).abs() <= 1e-6, "value {i}");
            let inside = v.abs() <= q as f32;
            clipped += usize::from(!inside);
            let want_gx = if inside { gs[i] } else { 0.0 };
            assert!((gx[i] - want_gx).abs() <= 1e-6, "input gradient {i}");
            let d = if inside {
                f64::from(level - v)
            } else {
                q * f64::from(v.signum())
            };
            want_gs += f64::from(gs[i]) * d;
        }
        assert!(
            clipped > 0 && clipped < xs.len(),
            "the case must clip some values"
        );
        let got = s.grad().double_value(&[0]);
        let want = want_gs * g;
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1e-3),
            "scale gradient {got}, LSQ's {want}"
        );
    }
}
