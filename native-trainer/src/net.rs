//! The shared graph as a libtorch network. A quantized graph runs as fake quantization —
//! dequantized weights and inputs rounded to the activation grid — which is the same function
//! the CPU reference and the engine compute with integers (docs/quantization.md).

use anyhow::{Result, bail};
use efq_shared::graph::{Graph, Op};
use efq_shared::quant::{ActQuant, qmax};
use tch::{Device, Kind, Tensor};

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
        aq: Option<ActQuant>,
    },
    Gemm {
        w: Tensor,
        b: Tensor,
        aq: Option<ActQuant>,
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

/// `round_half_even(x · (1/s))` clamped to the symmetric grid, times `s`: the reference's
/// `quantize` in tensor form (torch.round rounds half to even, like `round_ties_even`).
pub fn fake_quant(x: &Tensor, aq: &ActQuant) -> Tensor {
    let q = qmax(aq.bits) as f64;
    (x * aq.inv_scale() as f64).round().clamp(-q, q) * aq.scale as f64
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
                    let w = weights.to_float();
                    let [t, l, b, r] = attrs.pads.map(|p| p as i64);
                    let (padding, pre_pad) = if t == b && l == r {
                        ([t, l], None)
                    } else {
                        ([0, 0], Some([l, r, t, b]))
                    };
                    Layer::Conv {
                        w: channels_last(tensor(&w.data, &w.shape, device)),
                        b: tensor(bias, &[bias.len()], device),
                        stride: attrs.stride.map(|s| s as i64),
                        padding,
                        pre_pad,
                        dilation: attrs.dilation.map(|d| d as i64),
                        groups: attrs.group as i64,
                        aq: *input_quant,
                    }
                }
                Op::Gemm {
                    weights,
                    bias,
                    input_quant,
                } => {
                    let w = weights.to_float();
                    Layer::Gemm {
                        w: tensor(&w.data, &w.shape, device),
                        b: tensor(bias, &[bias.len()], device),
                        aq: *input_quant,
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

    /// `x`: `[N, C, H, W]` float on any device; returns `[N, dim]` raw embeddings.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
        for (i, s) in self.steps.iter().enumerate() {
            let x = values[s.inputs[0]].as_ref().expect("topological order");
            let y = match &s.layer {
                Layer::Conv {
                    w,
                    b,
                    stride,
                    padding,
                    pre_pad,
                    dilation,
                    groups,
                    aq,
                } => {
                    let mut x = match aq {
                        Some(aq) => fake_quant(x, aq),
                        None => x.shallow_clone(),
                    };
                    if let Some(p) = pre_pad {
                        x = x.constant_pad_nd(p.as_slice());
                    }
                    x.conv2d(
                        w,
                        Some(b),
                        stride.as_slice(),
                        padding.as_slice(),
                        dilation.as_slice(),
                        *groups,
                    )
                }
                Layer::Gemm { w, b, aq } => {
                    let x = match aq {
                        Some(aq) => fake_quant(x, aq),
                        None => x.shallow_clone(),
                    };
                    x.linear(w, Some(b))
                }
                Layer::Affine { scale, shift } => x * scale + shift,
                Layer::PRelu { slope } => x.prelu(slope),
                Layer::Relu => x.relu(),
                Layer::Add => x + values[s.inputs[1]].as_ref().expect("topological order"),
                Layer::Flatten => x.flatten(1, -1),
            };
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

/// NHWC strides on an NCHW-shaped tensor: libtorch's oneDNN convolutions (and cuDNN) run
/// fastest in this layout and keep it from layer to layer.
fn channels_last(t: Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// CUDA when present, otherwise the CPU with every core.
pub fn pick_device(cpu: bool) -> Device {
    if !cpu && tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}
