//! The trainable student: the teacher's graph with quantization-aware training. Its forward is
//! the integer layer of docs/quantization.md with straight-through rounding, so that what is
//! trained is exactly what `export` writes and the engine runs:
//!
//! - weights: per-output-channel scales recomputed from the float master weights at every step
//!   (`s_w = max|w| / qmax`, the exporter's formula), rounded with a straight-through estimator;
//! - activations: per-tensor scales calibrated once and then **frozen**. With one epoch of a few
//!   hundred steps, learned ranges (LSQ) have too little data to settle, and a frozen scale
//!   keeps the grid the exported model uses identical to the one the student was trained on.

use anyhow::{Result, bail};
use efq_shared::graph::{ConvAttrs, Graph, Op, Tensor as GTensor, Weights};
use efq_shared::quant::{ActQuant, QuantWeights, qmax};
use tch::{Device, Kind, Tensor};

use crate::net::channels_last;

enum Layer {
    Conv {
        w: Tensor,
        b: Tensor,
        attrs: ConvAttrs,
        wbits: u8,
        aq: ActQuant,
    },
    Gemm {
        w: Tensor,
        b: Tensor,
        wbits: u8,
        aq: ActQuant,
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
fn quant_input(x: &Tensor, aq: &ActQuant) -> Tensor {
    let q = qmax(aq.bits) as f64;
    let s = aq.scale as f64;
    let inv = aq.inv_scale() as f64;
    if !x.requires_grad() {
        let mut y = x * inv;
        let _ = y.round_();
        let _ = y.clamp_(-q, q);
        let _ = y.g_mul_scalar_(s);
        return y;
    }
    let c = x.clamp(-q * s, q * s);
    let delta = tch::no_grad(|| {
        let mut d = &c * inv;
        let _ = d.round_();
        let _ = d.clamp_(-q, q);
        let _ = d.g_mul_scalar_(s);
        let _ = d.g_sub_(&c);
        d
    });
    c + delta
}

/// Fake-quantized weights with the per-channel scales `QuantWeights::from_float` computes
/// (`max|w| / qmax`, 1 for an all-zero channel), straight-through gradient.
fn quant_weights(w: &Tensor, bits: u8) -> Tensor {
    let q = qmax(bits) as i64;
    let dims: Vec<i64> = (1..w.dim() as i64).collect();
    let absmax = w.abs().amax(dims.as_slice(), false).detach();
    let scale = (&absmax / q as f64).where_self(&absmax.gt(0.0), &absmax.ones_like());
    let zero = Tensor::zeros([scale.size()[0]], (Kind::Int, w.device()));
    w.fake_quantize_per_channel_affine(&scale, &zero, 0, -q, q)
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
    /// From a quantized graph (a calibrated post-training student).
    pub fn new(graph: &Graph, device: Device) -> Result<Self> {
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
                    weights: Weights::Quant(q),
                    bias,
                    attrs,
                    input_quant: Some(aq),
                } => {
                    let (w, b) = linear_params(q, bias, device);
                    reg("weight", &w);
                    reg("bias", &b);
                    Layer::Conv {
                        w,
                        b,
                        attrs: *attrs,
                        wbits: q.bits,
                        aq: *aq,
                    }
                }
                Op::Gemm {
                    weights: Weights::Quant(q),
                    bias,
                    input_quant: Some(aq),
                } => {
                    let (w, b) = linear_params(q, bias, device);
                    reg("weight", &w);
                    reg("bias", &b);
                    Layer::Gemm {
                        w,
                        b,
                        wbits: q.bits,
                        aq: *aq,
                    }
                }
                Op::Conv { .. } | Op::Gemm { .. } => {
                    bail!(
                        "layer '{nm}' is not quantized: fine-tuning starts from a quantized student"
                    )
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

    /// Training forward: `[N, C, H, W]` → `[N, dim]` raw embeddings, differentiable.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut values: Vec<Option<Tensor>> = (0..self.graph.num_values).map(|_| None).collect();
        values[0] = Some(channels_last(x.to_device(self.device).to_kind(Kind::Float)));
        for s in &self.steps {
            let x = values[s.inputs[0]].as_ref().expect("topological order");
            let y = match &s.layer {
                Layer::Conv {
                    w,
                    b,
                    attrs,
                    wbits,
                    aq,
                } => {
                    let xq = quant_input(x, aq);
                    let [t, l, bo, r] = attrs.pads.map(|p| p as i64);
                    let (xq, padding) = if t == bo && l == r {
                        (xq, [t, l])
                    } else {
                        (xq.constant_pad_nd([l, r, t, bo]), [0, 0])
                    };
                    let stride = attrs.stride.map(|v| v as i64);
                    let dilation = attrs.dilation.map(|v| v as i64);
                    // Channels-last routes forward and backward (depthwise included) to oneDNN.
                    let wq = channels_last(quant_weights(w, *wbits));
                    xq.conv2d(&wq, Some(b), stride, padding, dilation, attrs.group as i64)
                }
                Layer::Gemm { w, b, wbits, aq } => {
                    quant_input(x, aq).linear(&quant_weights(w, *wbits), Some(b))
                }
                Layer::Affine { scale, shift } => {
                    let rank = x.dim() as i64;
                    let mut shape = vec![-1i64];
                    shape.extend(std::iter::repeat_n(1, rank as usize - 2));
                    x * scale.view(shape.as_slice()) + shift.view(shape.as_slice())
                }
                Layer::PRelu { slope } => x.prelu(slope),
                Layer::Relu => x.relu(),
                Layer::Add => x + values[s.inputs[1]].as_ref().expect("topological order"),
                Layer::Flatten => x.flatten(1, -1),
            };
            values[s.output] = Some(y);
        }
        values[self.graph.output].take().expect("output computed")
    }

    /// The student as a quantized graph: weights re-quantized from the masters with the same
    /// formula the training forward used, frozen activation scales, trained float parameters.
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
                (Op::Conv { weights, bias, .. }, Layer::Conv { w, b, wbits, .. })
                | (Op::Gemm { weights, bias, .. }, Layer::Gemm { w, b, wbits, .. }) => {
                    let shape: Vec<usize> = w.size().iter().map(|&d| d as usize).collect();
                    let t = GTensor::new(shape, fetch(w)?)?;
                    *weights = Weights::Quant(QuantWeights::from_float(&t, *wbits)?);
                    *bias = fetch(b)?;
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
