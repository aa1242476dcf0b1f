//! Generators of the ONNX layouts model zoos ship: a plain InsightFace-layout export
//! ([`onnx::export_bytes`], opset 11) rewritten the way other exporters write the same network,
//! at any opset from 9 to 21. Each layout keeps the network; what it adds at the input
//! (layout, normalisation) and output (L2 normalisation) is what the importer must recognise.

#![allow(dead_code)]

use efq_shared::graph::{ConvAttrs, Graph, GraphBuilder, Op, Tensor, Weights};
use efq_shared::onnx::{
    self, AttributeProto as A, Dimension, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The networks the layouts wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// iresnet's head at 112×112: convolutions down to `[16, 7, 7]`, BN2d, Flatten, FC, BN1d.
    Head,
    /// The same with the BatchNorm after the Flatten: Flatten, BN1d on 784 features, FC, BN1d.
    FlattenBn,
    /// `tiny_mobilefacenet` at 112×112: its global depthwise convolution ends at `[32, 1, 1]`.
    Mobile,
    /// `tiny_upsampling` (32×32): a nearest upsampling ×2.
    Upsampling,
}

impl Net {
    pub fn graph(self) -> Graph {
        match self {
            Net::Head => head_net(false, 3),
            Net::FlattenBn => head_net(true, 4),
            Net::Mobile => efq_shared::builders::tiny_mobilefacenet(112, 64, 5).unwrap(),
            Net::Upsampling => efq_shared::builders::tiny_upsampling().unwrap(),
        }
    }
}

fn head_net(bn_after_flatten: bool, seed: u64) -> Graph {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mut b = GraphBuilder::new("head", [3, 112, 112]);
    let mut conv = |b: &mut GraphBuilder, name: &str, x, i: usize, o: usize| {
        let bound = (6.0 / (i * 9) as f32).sqrt();
        let w = Tensor::new(vec![o, i, 3, 3], uniform(o * i * 9, -bound, bound)).unwrap();
        let op = Op::Conv {
            weights: Weights::Float(w),
            bias: uniform(o, -0.1, 0.1),
            attrs: ConvAttrs {
                stride: [4, 4],
                pads: [1; 4],
                ..ConvAttrs::default()
            },
            input_quant: None,
        };
        let y = b.push(name, op, &[x]);
        let slope = uniform(o, 0.1, 0.3);
        b.push(format!("{name}.prelu"), Op::PRelu { slope }, &[y])
    };
    let x = conv(&mut b, "conv1", GraphBuilder::INPUT, 3, 8);
    let x = conv(&mut b, "conv2", x, 8, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mut affine = |c: usize| Op::Affine {
        scale: uniform(c, 0.8, 1.2),
        shift: uniform(c, -0.1, 0.1),
    };
    let x = if bn_after_flatten {
        let x = b.push("flatten", Op::Flatten, &[x]);
        b.push("bn_flat", affine(784), &[x])
    } else {
        let x = b.push("bn2", affine(16), &[x]);
        b.push("flatten", Op::Flatten, &[x])
    };
    let features = affine(64);
    let bound = (3.0f32 / 784.0).sqrt();
    let fc = Op::Gemm {
        weights: Weights::Float(
            Tensor::new(vec![64, 784], uniform(64 * 784, -bound, bound)).unwrap(),
        ),
        bias: uniform(64, -0.1, 0.1),
        input_quant: None,
    };
    let x = b.push("fc", fc, &[x]);
    let x = b.push("features", features, &[x]);
    b.finish(x).unwrap()
}

/// The batch dimension as the input declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    Fixed(i64),
    /// `dim_param: "N"`.
    Named,
    /// A dimension with neither value nor name.
    Unnamed,
    /// Every dimension named (`N`, `C`, `H`, `W`), none with a size.
    AllNamed,
    /// A tensor type without a shape (not valid ONNX, which requires one, but written by some
    /// tools).
    NoShape,
    /// No type at all (likewise).
    NoType,
}

impl Batch {
    /// Whether a file with this input passes `onnx.checker`.
    pub fn valid_onnx(self) -> bool {
        !matches!(self, Batch::NoShape | Batch::NoType)
    }
}

/// Elementwise arithmetic on the image with a constant: `x op k`, or `k op x` when
/// `const_first`.
#[derive(Clone, Debug)]
pub struct Arith {
    pub op: &'static str,
    pub values: Vec<f32>,
    /// The constant's shape as written (a scalar `[]`, `[1]`, or per channel).
    pub shape: Vec<usize>,
    pub const_first: bool,
    /// The constant comes from a `Constant` node rather than an initializer.
    pub constant_node: bool,
}

impl Arith {
    pub fn scalar(op: &'static str, v: f32) -> Self {
        Arith {
            op,
            values: vec![v],
            shape: vec![],
            const_first: false,
            constant_node: false,
        }
    }
    /// Per channel with the given shape (`[1,3,1,1]`, `[3,1,1]` in NCHW; `[3]`, `[1,1,1,3]` in
    /// NHWC).
    pub fn channels(op: &'static str, v: [f32; 3], shape: &[usize]) -> Self {
        Arith {
            op,
            values: v.to_vec(),
            shape: shape.to_vec(),
            const_first: false,
            constant_node: false,
        }
    }
    pub fn const_first(mut self) -> Self {
        self.const_first = true;
        self
    }
    pub fn in_constant_node(mut self) -> Self {
        self.constant_node = true;
        self
    }
    /// What the node computes from `x` in channel `c`.
    pub fn eval(&self, x: f32, c: usize) -> f32 {
        let k = self.values[if self.values.len() == 1 { 0 } else { c }];
        let (a, b) = if self.const_first { (k, x) } else { (x, k) };
        match self.op {
            "Add" => a + b,
            "Sub" => a - b,
            "Mul" => a * b,
            "Div" => a / b,
            other => panic!("no arithmetic {other}"),
        }
    }
}

/// How the features are flattened before the FC.
#[derive(Clone, Debug, PartialEq)]
pub enum Head {
    Flatten,
    /// `Reshape` to a constant shape, from an initializer or a `Constant` node.
    Reshape {
        shape: Vec<i64>,
        constant_node: bool,
    },
    /// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`: PyTorch's
    /// `x.view(x.size(0), -1)`.
    ReshapeFromShape,
    /// `Squeeze` of axes 2 and 3 (a `[N, C, 1, 1]` value).
    Squeeze,
}

/// A guard against dividing by a zero norm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Guard {
    None,
    Clip(f32),
    Max(f32),
    Add(f32),
}

/// A trailing L2 normalisation as exporters write it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tail {
    None,
    LpNorm,
    /// `x / Expand?(guard(ReduceL2(x)))`.
    ReduceL2 {
        guard: Guard,
        expand: bool,
    },
    /// `x / Sqrt(guard(ReduceSum(x·x or x^2)))`.
    SqrtReduceSum {
        guard: Guard,
        pow: bool,
    },
    /// `x / Sqrt(ReduceSumSquare(x))`.
    SqrtReduceSumSquare,
}

#[derive(Clone, Debug)]
pub struct Layout {
    pub net: Net,
    pub opset: i64,
    pub batch: Batch,
    pub nhwc: bool,
    /// Arithmetic on the NHWC image, before its transpose (with `nhwc` only).
    pub before_transpose: Vec<Arith>,
    /// Arithmetic on the NCHW image (after the transpose, if any).
    pub preprocess: Vec<Arith>,
    pub head: Head,
    /// A `Dropout` between the flatten and the FC.
    pub dropout: bool,
    pub tail: Tail,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            net: Net::Head,
            opset: 11,
            batch: Batch::Named,
            nhwc: false,
            before_transpose: vec![],
            preprocess: vec![],
            head: Head::Flatten,
            dropout: false,
            tail: Tail::None,
        }
    }
}

impl Layout {
    /// Every arithmetic node in the order it applies.
    pub fn arithmetic(&self) -> impl Iterator<Item = &Arith> {
        self.before_transpose.iter().chain(&self.preprocess)
    }
    /// What the plain network takes, from raw NCHW images.
    pub fn preprocessed(&self, raw: &[f32], shape: [usize; 3]) -> Vec<f32> {
        let plane = shape[1] * shape[2];
        raw.iter()
            .enumerate()
            .map(|(i, &x)| {
                let c = (i / plane) % shape[0];
                self.arithmetic().fold(x, |x, a| a.eval(x, c))
            })
            .collect()
    }
}

/// The IR version that goes with an opset (onnx/helper.py's table).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Builds nodes with unique names and their constants (initializers, or `Constant` nodes).
struct Writer {
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Writer {
    fn node(&mut self, n: NodeProto) -> String {
        let out = n.output[0].clone();
        self.nodes.push(n);
        out
    }
    fn float(&mut self, name: &str, shape: &[usize], data: &[f32], as_node: bool) -> String {
        let t = TensorProto::float(name, shape, data);
        self.constant(name, t, as_node)
    }
    fn int64(&mut self, name: &str, shape: &[usize], data: &[i64], as_node: bool) -> String {
        let t = TensorProto::int64(name, shape, data);
        self.constant(name, t, as_node)
    }
    fn constant(&mut self, name: &str, t: TensorProto, as_node: bool) -> String {
        if as_node {
            let n = NodeProto::new("Constant", &format!("{name}.const"), &[], &[name])
                .with(A::tensor("value", t));
            self.node(n)
        } else {
            self.inits.push(t);
            name.to_string()
        }
    }
    /// A node with `axes` as an attribute before opset `input_since`, as an input from it.
    fn with_axes(&mut self, mut n: NodeProto, axes: &[i64], input_since: i64) -> String {
        if self.opset >= input_since {
            let name = format!("{}.axes", n.name);
            let a = self.int64(&name, &[axes.len()], axes, false);
            n.input.push(a);
        } else {
            n = n.with(A::ints("axes", axes));
        }
        self.node(n)
    }
    /// `x` guarded by `guard` (Clip's minimum an attribute before opset 11, an input from it).
    fn guard(&mut self, x: &str, guard: Guard) -> String {
        let eps = |w: &mut Writer, e: f32| w.float("tail.eps", &[], &[e], false);
        match guard {
            Guard::None => x.to_string(),
            Guard::Clip(e) if self.opset < 11 => self.node(
                NodeProto::new("Clip", "tail.clip", &[x], &["tail.g"]).with(A::float("min", e)),
            ),
            Guard::Clip(e) => {
                let k = eps(self, e);
                self.node(NodeProto::new("Clip", "tail.clip", &[x, &k], &["tail.g"]))
            }
            Guard::Max(e) => {
                let k = eps(self, e);
                self.node(NodeProto::new("Max", "tail.max", &[x, &k], &["tail.g"]))
            }
            Guard::Add(e) => {
                let k = eps(self, e);
                self.node(NodeProto::new("Add", "tail.add", &[x, &k], &["tail.g"]))
            }
        }
    }
}

/// The plain export of `layout.net` rewritten in `layout`.
pub fn model(layout: &Layout) -> ModelProto {
    let g = layout.net.graph();
    let mut m = ModelProto::decode(onnx::export_bytes(&g).unwrap().as_slice()).unwrap();
    let opset = layout.opset;
    m.opset_import[0].version = opset;
    m.ir_version = ir_version(opset);
    let mut graph = m.graph.take().unwrap();
    let mut w = Writer {
        opset,
        nodes: vec![],
        inits: std::mem::take(&mut graph.initializer),
    };

    // The input: layout and normalisation, ending in the plain export's `input.1`.
    let steps = layout.before_transpose.len() + layout.preprocess.len() + usize::from(layout.nhwc);
    let input_name = if steps == 0 { "input.1" } else { "raw" };
    let mut cur = input_name.to_string();
    let mut k = 0;
    if layout.nhwc {
        for a in &layout.before_transpose {
            cur = arith(&mut w, &cur, &mut k, steps, a);
        }
        let out = step_name(&mut k, steps);
        cur = w.node(
            NodeProto::new("Transpose", "pre.transpose", &[&cur], &[&out])
                .with(A::ints("perm", &[0, 3, 1, 2])),
        );
    }
    for a in &layout.preprocess {
        cur = arith(&mut w, &cur, &mut k, steps, a);
    }
    assert_eq!(cur, "input.1");
    let [c, h, hw] = g.input_shape.map(|d| d as i64);
    let batch = match layout.batch {
        Batch::Fixed(b) => Dimension::value(b),
        Batch::Unnamed => Dimension::default(),
        _ => Dimension::param("N"),
    };
    let dims = if layout.nhwc { [h, hw, c] } else { [c, h, hw] };
    let mut in_dims = vec![batch.clone()];
    in_dims.extend(dims.map(Dimension::value));
    if layout.batch == Batch::AllNamed {
        let names = if layout.nhwc {
            ["N", "H", "W", "C"]
        } else {
            ["N", "C", "H", "W"]
        };
        in_dims = names.map(Dimension::param).to_vec();
    }
    graph.input = vec![match layout.batch {
        Batch::NoShape => ValueInfoProto::float(input_name, None),
        Batch::NoType => ValueInfoProto {
            name: input_name.into(),
            r#type: None,
        },
        _ => ValueInfoProto::float(input_name, Some(in_dims)),
    }];

    // The network, with each op written as this opset has it.
    for mut n in std::mem::take(&mut graph.node) {
        match n.op_type.as_str() {
            "BatchNormalization" if opset >= 14 => n = n.with(A::int("training_mode", 0)),
            "Resize" => n = resize(&mut w, n),
            "Flatten" => {
                flatten(&mut w, n, layout);
                continue;
            }
            _ => {}
        }
        w.node(n);
    }

    // The output.
    let out = graph.output[0].name.clone();
    if let Batch::Fixed(b) = layout.batch {
        let shape = graph.output[0]
            .r#type
            .as_mut()
            .unwrap()
            .tensor_type
            .as_mut()
            .unwrap();
        shape.shape.as_mut().unwrap().dim[0] = Dimension::value(b);
    }
    let end = "embedding";
    let div = |w: &mut Writer, d: &str| {
        w.node(NodeProto::new("Div", "tail.div", &[&out, d], &[end]));
    };
    match layout.tail {
        Tail::None => {}
        Tail::LpNorm => {
            w.node(
                NodeProto::new("LpNormalization", "tail.lpnorm", &[&out], &[end])
                    .with(A::int("axis", 1))
                    .with(A::int("p", 2)),
            );
        }
        Tail::ReduceL2 { guard, expand } => {
            let n = NodeProto::new("ReduceL2", "tail.reducel2", &[&out], &["tail.norm"])
                .with(A::int("keepdims", 1));
            let norm = w.with_axes(n, &[1], 18);
            let mut d = w.guard(&norm, guard);
            if expand {
                let s = w.node(NodeProto::new(
                    "Shape",
                    "tail.shape",
                    &[&out],
                    &["tail.shape"],
                ));
                d = w.node(NodeProto::new(
                    "Expand",
                    "tail.expand",
                    &[&d, &s],
                    &["tail.e"],
                ));
            }
            div(&mut w, &d);
        }
        Tail::SqrtReduceSum { guard, pow } => {
            let sq = if pow {
                let two = w.float("tail.two", &[], &[2.0], false);
                w.node(NodeProto::new(
                    "Pow",
                    "tail.pow",
                    &[&out, &two],
                    &["tail.sq"],
                ))
            } else {
                w.node(NodeProto::new(
                    "Mul",
                    "tail.mul",
                    &[&out, &out],
                    &["tail.sq"],
                ))
            };
            let n = NodeProto::new("ReduceSum", "tail.reducesum", &[&sq], &["tail.sum"])
                .with(A::int("keepdims", 1));
            let sum = w.with_axes(n, &[1], 13);
            let g = w.guard(&sum, guard);
            let d = w.node(NodeProto::new("Sqrt", "tail.sqrt", &[&g], &["tail.norm"]));
            div(&mut w, &d);
        }
        Tail::SqrtReduceSumSquare => {
            let n = NodeProto::new("ReduceSumSquare", "tail.rss", &[&out], &["tail.sum"])
                .with(A::int("keepdims", 1));
            let sum = w.with_axes(n, &[1], 18);
            let d = w.node(NodeProto::new("Sqrt", "tail.sqrt", &[&sum], &["tail.norm"]));
            div(&mut w, &d);
        }
    }
    if layout.tail != Tail::None {
        graph.output[0].name = end.into();
    }
    let used: std::collections::HashSet<&String> = w.nodes.iter().flat_map(|n| &n.input).collect();
    w.inits.retain(|t| used.contains(&t.name));
    graph.node = w.nodes;
    graph.initializer = w.inits;
    m.graph = Some(graph);
    m
}

pub fn write(layout: &Layout) -> Vec<u8> {
    model(layout).encode_to_vec()
}

/// The output of the k-th of `steps` input nodes; the last is the plain export's input.
fn step_name(k: &mut usize, steps: usize) -> String {
    *k += 1;
    if *k == steps {
        "input.1".to_string()
    } else {
        format!("pre{k}")
    }
}

fn arith(w: &mut Writer, cur: &str, k: &mut usize, steps: usize, a: &Arith) -> String {
    let name = format!("pre.{}{}", a.op.to_lowercase(), *k + 1);
    let c = w.float(&format!("{name}.k"), &a.shape, &a.values, a.constant_node);
    let inputs = if a.const_first {
        [c.as_str(), cur]
    } else {
        [cur, c.as_str()]
    };
    let out = step_name(k, steps);
    w.node(NodeProto::new(a.op, &name, &inputs, &[&out]))
}

/// The exporter's opset-11 `Resize(X, roi, scales)` as `layout.opset` writes a nearest ×f.
fn resize(w: &mut Writer, n: NodeProto) -> NodeProto {
    let (x, scales) = (n.input[0].clone(), n.input[2].clone());
    let f = {
        let t = w.inits.iter().find(|t| t.name == scales).unwrap();
        f32::from_le_bytes(t.raw_data[8..12].try_into().unwrap())
    };
    let out: Vec<&str> = n.output.iter().map(String::as_str).collect();
    let nearest = |n: NodeProto| {
        n.with(A::string("mode", "nearest"))
            .with(A::string("coordinate_transformation_mode", "asymmetric"))
            .with(A::string("nearest_mode", "floor"))
    };
    match w.opset {
        9 => NodeProto::new("Upsample", &n.name, &[&x, &scales], &out)
            .with(A::string("mode", "nearest")),
        10 => NodeProto::new("Resize", &n.name, &[&x, &scales], &out)
            .with(A::string("mode", "nearest")),
        11 | 12 => n,
        13..=17 => nearest(NodeProto::new("Resize", &n.name, &[&x, "", &scales], &out)),
        _ => {
            let s2 = w.float(&format!("{}.scales2", n.name), &[2], &[f, f], false);
            nearest(NodeProto::new("Resize", &n.name, &[&x, "", &s2], &out))
                .with(A::ints("axes", &[2, 3]))
        }
    }
}

/// The exporter's `Flatten` as `layout.head`, followed by a `Dropout` if asked.
fn flatten(w: &mut Writer, n: NodeProto, layout: &Layout) {
    let x = n.input[0].clone();
    let y = n.output[0].clone();
    let flat = if layout.dropout {
        "head.flat".to_string()
    } else {
        y.clone()
    };
    match &layout.head {
        Head::Flatten => {
            w.node(NodeProto::new("Flatten", &n.name, &[&x], &[&flat]).with(A::int("axis", 1)));
        }
        Head::Reshape {
            shape,
            constant_node,
        } => {
            let s = w.int64("head.shape", &[shape.len()], shape, *constant_node);
            w.node(NodeProto::new(
                "Reshape",
                "head.reshape",
                &[&x, &s],
                &[&flat],
            ));
        }
        Head::ReshapeFromShape => {
            let s = w.node(NodeProto::new("Shape", "head.shape_of", &[&x], &["head.s"]));
            let i = w.int64("head.zero", &[], &[0], true);
            let b = w.node(
                NodeProto::new("Gather", "head.gather", &[&s, &i], &["head.n"])
                    .with(A::int("axis", 0)),
            );
            let u = NodeProto::new("Unsqueeze", "head.unsqueeze", &[&b], &["head.n1"]);
            let b1 = w.with_axes(u, &[0], 13);
            let m1 = w.int64("head.minus1", &[1], &[-1], true);
            let target = w.node(
                NodeProto::new("Concat", "head.concat", &[&b1, &m1], &["head.target"])
                    .with(A::int("axis", 0)),
            );
            w.node(NodeProto::new(
                "Reshape",
                "head.reshape",
                &[&x, &target],
                &[&flat],
            ));
        }
        Head::Squeeze => {
            let sq = NodeProto::new("Squeeze", "head.squeeze", &[&x], &[&flat]);
            w.with_axes(sq, &[2, 3], 13);
        }
    }
    if layout.dropout {
        let d = if w.opset >= 12 {
            let ratio = w.float("head.ratio", &[], &[0.3], false);
            let t = TensorProto::bool("head.training", &[], &[false]);
            let training = w.constant("head.training", t, false);
            NodeProto::new(
                "Dropout",
                "head.dropout",
                &[&flat, &ratio, &training],
                &[&y],
            )
        } else {
            NodeProto::new("Dropout", "head.dropout", &[&flat], &[&y]).with(A::float("ratio", 0.3))
        };
        w.node(d);
    }
}

/// Pixel-like raw images in 0..255, NCHW.
pub fn raw_images(n: usize, shape: [usize; 3], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * shape.iter().product::<usize>())
        .map(|_| rng.random_range(0.0f32..255.0))
        .collect()
}
