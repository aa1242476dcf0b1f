//! A small typed graph of face-recognition CNNs: enough ops for InsightFace's iresnet family
//! and MobileFaceNet, in topological order, with BatchNorm already reduced to a per-channel
//! affine so that every consumer (tch, the CPU backend and its oracle, the WGSL engine) sees
//! one form.

use serde::{Deserialize, Serialize};

use crate::quant::{ActQuant, QuantWeights};
use crate::{Error, limits};

/// Index of a value (an activation tensor) of a [`Graph`]: 0 is the input, and each node
/// defines the next.
pub type ValueId = usize;

/// A dense float tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, Error> {
        let n = limits::checked_product(&shape)
            .ok_or_else(|| Error::Graph(format!("tensor shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(Error::Graph(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Weights of a convolution or fully-connected layer: float (teacher) or quantized (student).
#[derive(Clone, Debug, PartialEq)]
pub enum Weights {
    /// OIHW for convolutions, `[out, in]` for Gemm.
    Float(Tensor),
    Quant(QuantWeights),
}

impl Weights {
    /// The weights as floats (dequantized for a quantized layer), OIHW / `[out, in]`.
    pub fn to_float(&self) -> Tensor {
        match self {
            Weights::Float(t) => t.clone(),
            Weights::Quant(q) => q.dequantize(),
        }
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            Weights::Float(t) => &t.shape,
            Weights::Quant(q) => &q.shape,
        }
    }
}

/// 2-D convolution attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvAttrs {
    pub stride: [usize; 2],
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilation: [usize; 2],
    pub group: usize,
}

impl Default for ConvAttrs {
    fn default() -> Self {
        ConvAttrs {
            stride: [1, 1],
            pads: [0; 4],
            dilation: [1, 1],
            group: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Convolution; `input_quant` set means the input is quantized (integer path).
    Conv {
        weights: Weights,
        bias: Vec<f32>,
        attrs: ConvAttrs,
        input_quant: Option<ActQuant>,
    },
    /// Fully connected `y = x · Wᵀ + b` on a flattened input.
    Gemm {
        weights: Weights,
        bias: Vec<f32>,
        input_quant: Option<ActQuant>,
    },
    /// Inference-time BatchNorm as `y = x · scale[c] + shift[c]` (rank 2 or 4, channel axis 1).
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// PReLU with one slope per channel (or one shared slope).
    PRelu {
        slope: Vec<f32>,
    },
    Relu,
    Add,
    /// Flatten all but the batch axis.
    Flatten,
    /// Nearest-neighbour upsampling by a whole factor: `y[c, i, j] = x[c, i / f, j / f]` (ONNX
    /// `Resize` nearest/asymmetric/floor at an integer scale, the FPN top-down path of SCRFD).
    Upsample {
        factor: usize,
    },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::Gemm { .. } => "gemm",
            Op::Affine { .. } => "affine",
            Op::PRelu { .. } => "prelu",
            Op::Relu => "relu",
            Op::Add => "add",
            Op::Flatten => "flatten",
            Op::Upsample { .. } => "upsample",
        }
    }
    pub fn arity(&self) -> usize {
        if matches!(self, Op::Add) { 2 } else { 1 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

/// Shape of one sample (no batch axis): `[C, H, W]` or `[F]`.
pub type SampleShape = Vec<usize>;

/// A feed-forward graph with one image input (value 0) and one embedding output.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub name: String,
    /// `[C, H, W]` of the input image, normally `[3, 112, 112]`.
    pub input_shape: [usize; 3],
    /// Number of values; value 0 is the input, every node defines exactly one new value.
    pub num_values: usize,
    pub nodes: Vec<Node>,
    pub output: ValueId,
}

impl Graph {
    /// Checks topological order, arities, parameter sizes and shapes against the
    /// [`crate::limits`] on what a model may declare; returns every value's shape.
    /// All arithmetic is checked: a file cannot make a size wrap around.
    pub fn infer_shapes(&self) -> Result<Vec<SampleShape>, Error> {
        if self.num_values == 0 {
            return Err(Error::Graph("graph has no values".into()));
        }
        if self.nodes.len() > limits::MAX_NODES {
            return Err(Error::Graph(format!(
                "{} nodes exceed the limit of {}",
                self.nodes.len(),
                limits::MAX_NODES
            )));
        }
        if self.num_values != self.nodes.len() + 1 {
            return Err(Error::Graph(format!(
                "{} values for {} nodes; every node defines one value after the input",
                self.num_values,
                self.nodes.len()
            )));
        }
        let [c, h, w] = self.input_shape;
        let input_err = |m: String| Error::Graph(format!("input: {m}"));
        limits::in_range("channels", c, limits::MAX_CHANNELS).map_err(input_err)?;
        limits::in_range("height", h, limits::MAX_INPUT_SIDE).map_err(input_err)?;
        limits::in_range("width", w, limits::MAX_INPUT_SIDE).map_err(input_err)?;
        let mut shapes: Vec<Option<SampleShape>> = vec![None; self.num_values];
        shapes[0] = Some(self.input_shape.to_vec());
        let mut activation_bytes = 4 * (c * h * w) as u64;
        let mut macs = 0u64;
        for node in &self.nodes {
            let err =
                |m: String| Error::Graph(format!("node '{}' ({}): {m}", node.name, node.op.kind()));
            if node.inputs.len() != node.op.arity() {
                return Err(err(format!(
                    "expects {} inputs, has {}",
                    node.op.arity(),
                    node.inputs.len()
                )));
            }
            let mut ins = Vec::new();
            for &v in &node.inputs {
                match shapes.get(v) {
                    Some(Some(s)) => ins.push(s.clone()),
                    Some(None) => {
                        return Err(err(format!("input value {v} is used before it is defined")));
                    }
                    None => return Err(err(format!("input value {v} out of range"))),
                }
            }
            if node.output >= self.num_values || shapes[node.output].is_some() {
                return Err(err(format!(
                    "output value {} is out of range or defined twice",
                    node.output
                )));
            }
            let (out, node_macs) = node_shape(&node.op, &ins).map_err(err)?;
            check_value(&out).map_err(err)?;
            let elements = out.iter().product::<usize>() as u64;
            activation_bytes += 4 * elements;
            if activation_bytes > limits::MAX_ACTIVATION_BYTES {
                return Err(err(format!(
                    "the activations of one image reach {activation_bytes} bytes, over the \
                     limit of {}",
                    limits::MAX_ACTIVATION_BYTES
                )));
            }
            macs = macs.saturating_add(node_macs);
            if macs > limits::MAX_MACS {
                return Err(err(format!(
                    "one image takes over {} multiply-accumulates by this node, the limit",
                    limits::MAX_MACS
                )));
            }
            shapes[node.output] = Some(out);
        }
        let shapes: Vec<SampleShape> = shapes
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.ok_or_else(|| Error::Graph(format!("value {i} is never defined"))))
            .collect::<Result<_, _>>()?;
        if self.output >= shapes.len() {
            return Err(Error::Graph(format!(
                "output value {} out of range",
                self.output
            )));
        }
        Ok(shapes)
    }

    /// Checks that this graph is a face recognizer (one 3-channel image in, one embedding of a
    /// plausible width out; see [`limits::check_recognizer`]) and returns the embedding width.
    pub fn check_recognizer(&self) -> Result<usize, Error> {
        let shapes = self.infer_shapes()?;
        limits::check_recognizer(self.input_shape, &shapes[self.output])
    }

    /// Length of the output embedding.
    pub fn embedding_dim(&self) -> Result<usize, Error> {
        let shapes = self.infer_shapes()?;
        Ok(shapes[self.output].iter().product())
    }

    /// Parameters of the network: weights and biases of every Conv/Gemm (quantized or not),
    /// BatchNorm scales and shifts, PReLU slopes.
    pub fn parameters(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv { weights, bias, .. } | Op::Gemm { weights, bias, .. } => {
                    weights.shape().iter().product::<usize>() + bias.len()
                }
                Op::Affine { scale, shift } => scale.len() + shift.len(),
                Op::PRelu { slope } => slope.len(),
                _ => 0,
            } as u64)
            .sum()
    }

    /// Multiply-accumulates of one forward pass (convolutions and Gemm only).
    pub fn macs(&self) -> Result<u64, Error> {
        let shapes = self.infer_shapes()?;
        let mut macs = 0u64;
        for node in &self.nodes {
            let out: u64 = shapes[node.output].iter().product::<usize>() as u64;
            match &node.op {
                Op::Conv { weights, .. } => {
                    let w = weights.shape();
                    macs += out * (w[1] * w[2] * w[3]) as u64;
                }
                Op::Gemm { weights, .. } => macs += out * weights.shape()[1] as u64,
                _ => {}
            }
        }
        Ok(macs)
    }

    /// Number of nodes that read each value (the output counts as one reader).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.num_values];
        for n in &self.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        if self.output < uses.len() {
            uses[self.output] += 1;
        }
        uses
    }

    /// True when any Conv/Gemm carries quantized weights.
    pub fn is_quantized(&self) -> bool {
        self.nodes.iter().any(|n| {
            matches!(
                &n.op,
                Op::Conv {
                    weights: Weights::Quant(_),
                    ..
                } | Op::Gemm {
                    weights: Weights::Quant(_),
                    ..
                }
            )
        })
    }
}

/// Output side of a convolution; `None` when the (dilated) kernel does not fit the padded input.
/// The operands are within [`limits`], so nothing here can overflow.
fn conv_out(size: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    let eff = dil * (k - 1) + 1;
    (size + pad).checked_sub(eff).map(|d| d / stride + 1)
}

/// Every dimension of an activation positive and within the limits.
fn check_value(shape: &[usize]) -> Result<(), String> {
    match shape {
        [c, h, w] => {
            limits::in_range("output channels", *c, limits::MAX_CHANNELS)?;
            limits::in_range("output height", *h, limits::MAX_SIDE)?;
            limits::in_range("output width", *w, limits::MAX_SIDE)?;
        }
        [f] => limits::in_range("output features", *f, limits::MAX_FEATURES)?,
        other => return Err(format!("output shape {other:?} is neither [C,H,W] nor [F]")),
    }
    let n = limits::checked_product(shape).unwrap_or(usize::MAX);
    limits::at_most("output size", n, limits::MAX_VALUE_ELEMENTS)
}

/// A parameter tensor's shape: every dimension positive, the whole within the limit.
fn check_parameter(what: &str, shape: &[usize]) -> Result<(), String> {
    if shape.contains(&0) {
        return Err(format!("{what} shape {shape:?} has a zero dimension"));
    }
    let n = limits::checked_product(shape).unwrap_or(usize::MAX);
    limits::at_most(&format!("{what} size"), n, limits::MAX_PARAMETER_ELEMENTS)
}

/// The output shape of one node and its multiply-accumulates for one image, from its inputs'
/// shapes (already within the limits), or what is wrong with it.
fn node_shape(op: &Op, ins: &[SampleShape]) -> Result<(SampleShape, u64), String> {
    let x = &ins[0];
    let channels = x[0];
    let out = match op {
        Op::Conv {
            weights,
            bias,
            attrs,
            ..
        } => {
            let w = weights.shape();
            if x.len() != 3 || w.len() != 4 {
                return Err(format!(
                    "needs a [C,H,W] input and OIHW weights, got {x:?} and {w:?}"
                ));
            }
            check_parameter("weight", w)?;
            limits::at_most("output channels", w[0], limits::MAX_CHANNELS)?;
            limits::at_most("kernel height", w[2], limits::MAX_KERNEL)?;
            limits::at_most("kernel width", w[3], limits::MAX_KERNEL)?;
            let g = attrs.group;
            if g == 0
                || !channels.is_multiple_of(g)
                || !w[0].is_multiple_of(g)
                || w[1] != channels / g
            {
                return Err(format!(
                    "weights {w:?} with group {g} do not fit {channels} input channels"
                ));
            }
            if bias.len() != w[0] {
                return Err(format!(
                    "bias has {} values for {} channels",
                    bias.len(),
                    w[0]
                ));
            }
            for s in attrs.stride {
                limits::in_range("stride", s, limits::MAX_STRIDE)?;
            }
            for d in attrs.dilation {
                limits::in_range("dilation", d, limits::MAX_DILATION)?;
            }
            for p in attrs.pads {
                limits::at_most("padding", p, limits::MAX_PAD)?;
            }
            let oh = conv_out(
                x[1],
                w[2],
                attrs.stride[0],
                attrs.pads[0] + attrs.pads[2],
                attrs.dilation[0],
            );
            let ow = conv_out(
                x[2],
                w[3],
                attrs.stride[1],
                attrs.pads[1] + attrs.pads[3],
                attrs.dilation[1],
            );
            let (Some(oh), Some(ow)) = (oh, ow) else {
                return Err(format!("kernel {w:?} does not fit input {x:?}"));
            };
            let out = vec![w[0], oh, ow];
            let per_output = (w[1] * w[2] * w[3]) as u64;
            let macs = (w[0] as u64 * oh as u64 * ow as u64).saturating_mul(per_output);
            return Ok((out, macs));
        }
        Op::Gemm { weights, bias, .. } => {
            let w = weights.shape();
            if x.len() != 1 || w.len() != 2 || w[1] != x[0] || bias.len() != w[0] {
                return Err(format!(
                    "input {x:?}, weights {w:?}, bias {} do not fit a flattened Gemm",
                    bias.len()
                ));
            }
            check_parameter("weight", w)?;
            return Ok((vec![w[0]], w[0] as u64 * w[1] as u64));
        }
        Op::Affine { scale, shift } => {
            if scale.len() != channels || shift.len() != channels {
                return Err(format!(
                    "{} channels but {} scales / {} shifts",
                    channels,
                    scale.len(),
                    shift.len()
                ));
            }
            x.clone()
        }
        Op::PRelu { slope } => {
            if slope.len() != channels && slope.len() != 1 {
                return Err(format!("{} channels but {} slopes", channels, slope.len()));
            }
            x.clone()
        }
        Op::Relu => x.clone(),
        Op::Add => {
            if ins[0] != ins[1] {
                return Err(format!("adds shapes {:?} and {:?}", ins[0], ins[1]));
            }
            x.clone()
        }
        // The input is within MAX_VALUE_ELEMENTS, so its product cannot overflow.
        Op::Flatten => vec![x.iter().product()],
        Op::Upsample { factor } => {
            if x.len() != 3 {
                return Err(format!("needs a [C,H,W] input, got {x:?}"));
            }
            limits::in_range("upsample factor", *factor, limits::MAX_UPSAMPLE)?;
            vec![x[0], x[1] * factor, x[2] * factor]
        }
    };
    Ok((out, 0))
}

/// Incremental construction of a [`Graph`] in topological order.
pub struct GraphBuilder {
    graph: Graph,
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>, input_shape: [usize; 3]) -> Self {
        GraphBuilder {
            graph: Graph {
                name: name.into(),
                input_shape,
                num_values: 1,
                nodes: Vec::new(),
                output: 0,
            },
        }
    }
    pub const INPUT: ValueId = 0;

    pub fn push(&mut self, name: impl Into<String>, op: Op, inputs: &[ValueId]) -> ValueId {
        let output = self.graph.num_values;
        self.graph.num_values += 1;
        self.graph.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.to_vec(),
            output,
        });
        output
    }

    /// Shapes of every value defined so far (for importers that need them while building).
    pub fn shapes(&self) -> Result<Vec<SampleShape>, Error> {
        let mut g = self.graph.clone();
        g.output = 0;
        g.infer_shapes()
    }

    pub fn finish(mut self, output: ValueId) -> Result<Graph, Error> {
        self.graph.output = output;
        self.graph.infer_shapes()?;
        Ok(self.graph)
    }
}

impl Graph {
    /// Folds inference BatchNorm (an [`Op::Affine`]) into the neighbouring linear layer where that
    /// is exact: into a preceding Conv/Gemm (`conv → BN`, `fc → BN1d`), and into a following Gemm,
    /// directly or through a Flatten (`flatten → BN1d → fc`, `BN2d → flatten → fc`, the iresnet
    /// head). An affine in front of a padded
    /// convolution (iresnet's block-input BN) is kept: folding it would change the border pixels,
    /// where the convolution sees zero padding rather than the affine's shift.
    pub fn fold_batchnorm(&mut self) {
        let mut removed = vec![false; self.nodes.len()];
        let mut alias: Vec<ValueId> = (0..self.num_values).collect();
        let producer = |nodes: &[Node], v: ValueId| nodes.iter().position(|n| n.output == v);
        let uses = self.use_counts();
        for i in 0..self.nodes.len() {
            let Op::Affine { scale, shift } = self.nodes[i].op.clone() else {
                continue;
            };
            let x = self.nodes[i].inputs[0];
            // conv → BN / fc → BN1d
            if let Some(p) = producer(&self.nodes, x).filter(|_| uses[x] == 1) {
                let folded = match &mut self.nodes[p].op {
                    Op::Conv {
                        weights: Weights::Float(w),
                        bias,
                        input_quant: None,
                        ..
                    }
                    | Op::Gemm {
                        weights: Weights::Float(w),
                        bias,
                        input_quant: None,
                    } => {
                        let per = w.numel() / w.shape[0];
                        for (o, row) in w.data.chunks_mut(per).enumerate() {
                            row.iter_mut().for_each(|v| *v *= scale[o]);
                            bias[o] = bias[o] * scale[o] + shift[o];
                        }
                        true
                    }
                    _ => false,
                };
                if folded {
                    removed[i] = true;
                    alias[self.nodes[i].output] = x;
                    continue;
                }
            }
            // BN2d → flatten → fc, and flatten → BN1d → fc
            let y = self.nodes[i].output;
            if uses[y] != 1 {
                continue;
            }
            let fy = match self
                .nodes
                .iter()
                .position(|n| n.inputs == [y] && matches!(n.op, Op::Flatten))
            {
                Some(f) => self.nodes[f].output,
                None => y,
            };
            if uses[fy] != 1 {
                continue;
            }
            let Some(g) = self.nodes.iter().position(|n| n.inputs == [fy]) else {
                continue;
            };
            if let Op::Gemm {
                weights: Weights::Float(w),
                bias,
                input_quant: None,
            } = &mut self.nodes[g].op
                && w.shape[1].is_multiple_of(scale.len())
            {
                let fin = w.shape[1];
                let spatial = fin / scale.len();
                for (o, row) in w.data.chunks_mut(fin).enumerate() {
                    let mut extra = 0f64;
                    for (k, v) in row.iter_mut().enumerate() {
                        let c = k / spatial;
                        extra += *v as f64 * shift[c] as f64;
                        *v *= scale[c];
                    }
                    bias[o] += extra as f32;
                }
                removed[i] = true;
                alias[y] = x;
            }
        }
        self.remove_nodes(&removed, &alias);
    }

    /// Drops the marked nodes, redirects every use through `alias`, and renumbers the values so
    /// that they are dense and in definition order again.
    fn remove_nodes(&mut self, removed: &[bool], alias: &[ValueId]) {
        let resolve = |mut v: ValueId| {
            while alias[v] != v {
                v = alias[v];
            }
            v
        };
        let mut nodes: Vec<Node> = std::mem::take(&mut self.nodes)
            .into_iter()
            .zip(removed)
            .filter(|(_, r)| !**r)
            .map(|(n, _)| n)
            .collect();
        let mut renumber = vec![usize::MAX; self.num_values];
        renumber[0] = 0;
        for (k, n) in nodes.iter_mut().enumerate() {
            n.inputs = n.inputs.iter().map(|&v| renumber[resolve(v)]).collect();
            renumber[n.output] = k + 1;
            n.output = k + 1;
        }
        self.output = renumber[resolve(self.output)];
        self.num_values = nodes.len() + 1;
        self.nodes = nodes;
    }
}
