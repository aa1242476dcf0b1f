//! The shared graph as a libtorch network. A quantized layer runs the integer layer of
//! docs/quantization.md in float arithmetic on integer-valued operands, which reproduces the CPU
//! reference's i32 path exactly (see `Arith::Integer`).

use anyhow::{Result, bail};
use efq_shared::graph::{Graph, Op, Weights};
use efq_shared::quant::ActQuant;
use tch::{Device, Kind, Tensor};

/// How a Conv/Gemm computes.
enum Arith {
    /// Float weights and float input.
    Float,
    /// Float weights, fake-quantized input.
    FakeQuantInput(ActQuant),
    /// The integer layer in float arithmetic: the weights are the integers themselves, the input
    /// is rounded to integers, and the product is rescaled by `mult[o] = f32(s_a · s_w[o])` before
    /// the bias is added. Integer-valued operands make every product and (below 2^24) every
    /// partial sum exact, so this equals the reference's i32 accumulator bit for bit. That
    /// matters: in a deep quantized network a one-ulp difference that moves a single activation
    /// across a rounding boundary cascades into visibly different embeddings.
    Integer { aq: ActQuant, mult: Tensor },
}

impl Arith {
    fn input(&self, x: &Tensor) -> Tensor {
        match self {
            Arith::Float => x.shallow_clone(),
            Arith::FakeQuantInput(aq) => fake_quant(x, aq),
            Arith::Integer { aq, .. } => quantize_to_grid(x, aq),
        }
    }
}

enum Layer {
    Conv {
        w: Tensor,
        b: Tensor,
        stride: [i64; 2],
        /// Symmetric padding for conv2d; asymmetric pads go through `pre_pad`.
        padding: [i64; 2],
        pre_pad: Option<[i64; 4]>,
        dilation: [i64; 2],
        groups: i64,
        arith: Arith,
    },
    Gemm {
        w: Tensor,
        b: Tensor,
        arith: Arith,
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
    Upsample(i64),
}

struct Step {
    layer: Layer,
    inputs: Vec<usize>,
    output: usize,
}

/// A graph compiled to libtorch tensors on one device.
pub struct TchNet {
    steps: Vec<Step>,
    num_values: usize,
    output: usize,
    last_use: Vec<usize>,
    pub device: Device,
    pub input_shape: [usize; 3],
    pub embedding_dim: usize,
}

fn tensor(data: &[f32], shape: &[usize], device: Device) -> Tensor {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(data).reshape(&shape).to_device(device)
}

/// `clamp(round_half_even(x · (1/s)), lo, hi)` as float integers: the reference's quantizer in
/// tensor form (torch.round rounds half to even, like `round_ties_even`).
pub fn quantize_to_grid(x: &Tensor, aq: &ActQuant) -> Tensor {
    let [lo, hi] = aq.levels().map(f64::from);
    (x * aq.inv_scale() as f64).round().clamp(lo, hi)
}

/// Quantize-dequantize: the activation as the integer path sees it, in float.
pub fn fake_quant(x: &Tensor, aq: &ActQuant) -> Tensor {
    quantize_to_grid(x, aq) * aq.scale as f64
}

/// Weights as libtorch sees them, and how the layer computes: quantized weights stay integers.
fn arith(
    weights: &Weights,
    aq: &Option<ActQuant>,
    rank: usize,
    device: Device,
) -> Result<(Tensor, Arith)> {
    Ok(match (weights, aq) {
        (Weights::Float(t), None) => (tensor(&t.data, &t.shape, device), Arith::Float),
        (Weights::Float(t), Some(aq)) => (
            tensor(&t.data, &t.shape, device),
            Arith::FakeQuantInput(*aq),
        ),
        (Weights::Quant(q), Some(aq)) => {
            let ints: Vec<f32> = q.values.iter().map(|&v| v as f32).collect();
            // Rounded to f32 once, exactly as the reference's epilogue does.
            let mult: Vec<f32> = q.scales.iter().map(|s| aq.scale * s).collect();
            let mut shape = vec![mult.len()];
            shape.extend(std::iter::repeat_n(1, rank - 2));
            (
                tensor(&ints, &q.shape, device),
                Arith::Integer {
                    aq: *aq,
                    mult: tensor(&mult, &shape, device),
                },
            )
        }
        (Weights::Quant(_), None) => bail!("quantized weights without input quantization"),
    })
}

/// NHWC strides on an NCHW-shaped tensor: libtorch's oneDNN convolutions (and cuDNN) run
/// fastest in this layout and keep it from layer to layer.
pub fn channels_last(t: Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

impl TchNet {
    pub fn new(graph: &Graph, device: Device) -> Result<Self> {
        let shapes = graph.infer_shapes()?;
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let layer = match &node.op {
                Op::Conv {
                    weights,
                    bias,
                    attrs,
                    input_quant,
                } => {
                    let (w, arith) = arith(weights, input_quant, 4, device)?;
                    let [t, l, b, r] = attrs.pads.map(|p| p as i64);
                    let (padding, pre_pad) = if t == b && l == r {
                        ([t, l], None)
                    } else {
                        ([0, 0], Some([l, r, t, b]))
                    };
                    Layer::Conv {
                        w: channels_last(w),
                        b: tensor(bias, &[bias.len()], device),
                        stride: attrs.stride.map(|s| s as i64),
                        padding,
                        pre_pad,
                        dilation: attrs.dilation.map(|d| d as i64),
                        groups: attrs.group as i64,
                        arith,
                    }
                }
                Op::Gemm {
                    weights,
                    bias,
                    input_quant,
                } => {
                    let (w, arith) = arith(weights, input_quant, 2, device)?;
                    Layer::Gemm {
                        w,
                        b: tensor(bias, &[bias.len()], device),
                        arith,
                    }
                }
                Op::Affine { scale, shift } => {
                    let rank = shapes[node.inputs[0]].len();
                    let mut shape = vec![scale.len()];
                    shape.extend(std::iter::repeat_n(1, rank - 1));
                    Layer::Affine {
                        scale: tensor(scale, &shape, device),
                        shift: tensor(shift, &shape, device),
                    }
                }
                Op::PRelu { slope } => Layer::PRelu {
                    slope: tensor(slope, &[slope.len()], device),
                },
                Op::Relu => Layer::Relu,
                Op::Add => Layer::Add,
                Op::Flatten => Layer::Flatten,
                Op::Upsample { factor } => Layer::Upsample(*factor as i64),
            };
            steps.push(Step {
                layer,
                inputs: node.inputs.clone(),
                output: node.output,
            });
        }
        let mut last_use = vec![0; graph.num_values];
        for (i, s) in steps.iter().enumerate() {
            for &v in &s.inputs {
                last_use[v] = i;
            }
        }
        last_use[graph.output] = usize::MAX;
        Ok(TchNet {
            steps,
            num_values: graph.num_values,
            output: graph.output,
            last_use,
            device,
            input_shape: graph.input_shape,
            embedding_dim: graph.embedding_dim()?,
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

    /// Step `i` on its first input `x` (and `other`, an Add's second).
    pub fn apply(&self, i: usize, x: &Tensor, other: Option<&Tensor>) -> Tensor {
        let s = &self.steps[i];
        match &s.layer {
            Layer::Conv {
                w,
                b,
                stride,
                padding,
                pre_pad,
                dilation,
                groups,
                arith,
            } => {
                let mut x = arith.input(x);
                if let Some(p) = pre_pad {
                    x = x.constant_pad_nd(p.as_slice());
                }
                let conv = |bias: Option<&Tensor>| {
                    x.conv2d(
                        w,
                        bias,
                        stride.as_slice(),
                        padding.as_slice(),
                        dilation.as_slice(),
                        *groups,
                    )
                };
                match arith {
                    // Two roundings (multiply, then add), as the reference's epilogue.
                    Arith::Integer { mult, .. } => conv(None) * mult + b.view([1, -1, 1, 1]),
                    _ => conv(Some(b)),
                }
            }
            Layer::Gemm { w, b, arith } => {
                let x = arith.input(x);
                match arith {
                    Arith::Integer { mult, .. } => {
                        x.linear::<&Tensor>(w, None) * mult.view([1, -1]) + b
                    }
                    _ => x.linear(w, Some(b)),
                }
            }
            Layer::Affine { scale, shift } => x * scale + shift,
            Layer::PRelu { slope } => x.prelu(slope),
            Layer::Relu => x.relu(),
            Layer::Add => x + other.expect("an Add has two inputs"),
            Layer::Flatten => x.flatten(1, -1),
            Layer::Upsample(f) => {
                let [h, w] = [x.size()[2] * f, x.size()[3] * f];
                x.upsample_nearest2d([h, w], *f as f64, *f as f64)
            }
        }
    }

    /// `x`: `[N, C, H, W]` float on any device; returns `[N, dim]` raw embeddings.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_observed(x, &mut |_, _| {})
    }

    /// Like [`forward`](Self::forward), calling `observe(k, x)` with the input of the k-th
    /// Conv/Gemm (node order) before it runs: calibration reads activation ranges through this.
    pub fn forward_observed(
        &self,
        x: &Tensor,
        observe: &mut dyn FnMut(usize, &Tensor),
    ) -> Result<Tensor> {
        let size = x.size();
        let want: Vec<i64> = self.input_shape.iter().map(|&d| d as i64).collect();
        if size.len() != 4 || size[1..] != want[..] {
            bail!(
                "network expects [N, {:?}] input, got {size:?}",
                self.input_shape
            );
        }
        let mut values: Vec<Option<Tensor>> = (0..self.num_values).map(|_| None).collect();
        values[0] = Some(channels_last(x.to_device(self.device).to_kind(Kind::Float)));
        let mut layer = 0;
        for (i, s) in self.steps.iter().enumerate() {
            let x = values[s.inputs[0]].as_ref().expect("topological order");
            if matches!(s.layer, Layer::Conv { .. } | Layer::Gemm { .. }) {
                observe(layer, x);
                layer += 1;
            }
            let y = self.apply(i, x, s.inputs.get(1).and_then(|&v| values[v].as_ref()));
            for &v in &s.inputs {
                if self.last_use[v] == i {
                    values[v] = None;
                }
            }
            values[s.output] = Some(y);
        }
        Ok(values[self.output].take().expect("output computed"))
    }
}

/// CUDA when present (unless `cpu`), otherwise the CPU.
pub fn pick_device(cpu: bool) -> Device {
    if !cpu && tch::Cuda::is_available() {
        // Fixed input shapes every step: let cuDNN pick its fastest convolution once.
        tch::Cuda::cudnn_set_benchmark(true);
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}
