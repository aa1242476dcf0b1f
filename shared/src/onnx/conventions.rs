//! What model zoos bake into a recognizer's graph besides the network: a layout change and a
//! normalisation of the image at the input, an L2 normalisation of the embedding at the output.
//! Both ends are recognised here, removed from the graph and reported, so that the imported
//! [`Graph`](crate::graph::Graph) is the network alone and takes the pipeline's own input.

use std::collections::{HashMap, HashSet};

use super::ops::{Constants, NodeErr, Opset, scalar_const};
use super::proto::{Attrs, Constant, GraphProto, NodeProto};
use crate::Error;
use crate::graph::Tensor;

/// Input-side preprocessing that an ONNX model carried as nodes at its input, removed on import.
///
/// The ONNX model computed `(raw[c] − mean[c]) / std[c]` from its own input `raw` before its
/// first convolution; the imported graph starts after those nodes, so it takes that value: the
/// convention of [`Preprocessing`](crate::format::Preprocessing), per channel. One entry per
/// input channel, in the graph's channel order; nothing baked in is mean 0, std 1. (A `std` may
/// be negative, for a model that computed `k − raw`.)
#[derive(Clone, Debug, PartialEq)]
pub struct BakedPreprocessing {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The model took NHWC images (`[N, H, W, C]`) and transposed them to NCHW with a leading
    /// `Transpose` (perm `[0, 3, 1, 2]`), which was removed: the imported graph takes NCHW.
    pub nhwc: bool,
}

impl BakedPreprocessing {
    /// Nothing baked in.
    pub fn identity(channels: usize) -> Self {
        BakedPreprocessing {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
            nhwc: false,
        }
    }

    pub fn is_identity(&self) -> bool {
        !self.nhwc && self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
    }

    /// The `(mean, std)` shared by every channel, when they share one: the
    /// [`Preprocessing`](crate::format::Preprocessing) mean and std of the imported graph, for
    /// a model whose raw input is pixel values (as those that bake their normalisation in
    /// take).
    pub fn uniform_mean_std(&self) -> Option<(f32, f32)> {
        let first = (*self.mean.first()?, *self.std.first()?);
        let same = self
            .mean
            .iter()
            .zip(&self.std)
            .all(|(&m, &s)| (m, s) == first);
        same.then_some(first)
    }

    /// The same transform as `offset[c] + scale[c] · raw`, `(scale, offset)` per channel.
    pub fn scale_offset(&self) -> Vec<(f32, f32)> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| (1.0 / s, -m / s))
            .collect()
    }

    /// Applies the removed nodes to a batch of raw NCHW images in place, giving what the
    /// imported graph takes, as the pipeline applies its preprocessing: `(x − mean) · (1 / std)`.
    /// (An NHWC model's images are transposed by the pipeline, which produces NCHW anyway.)
    pub fn apply(&self, images: &mut [f32], input_shape: [usize; 3]) -> Result<(), Error> {
        let [c, h, w] = input_shape;
        let per = c * h * w;
        let channels = self.mean.len();
        if per == 0 || c != channels || c != self.std.len() || !images.len().is_multiple_of(per) {
            return Err(Error::Input(format!(
                "{} values are not whole images of shape {input_shape:?} for {} channels",
                images.len(),
                channels
            )));
        }
        for (k, plane) in images.chunks_mut(h * w).enumerate() {
            let (m, inv) = (self.mean[k % c], 1.0 / self.std[k % c]);
            plane.iter_mut().for_each(|x| *x = (*x - m) * inv);
        }
        Ok(())
    }
}

/// Who produces and who reads each value of an ONNX graph.
pub(super) struct Wiring<'a> {
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    outputs: HashSet<&'a str>,
}

impl<'a> Wiring<'a> {
    pub(super) fn new(g: &'a GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (k, n) in g.node.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                producer.entry(o.as_str()).or_insert(k);
            }
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                let readers = consumers.entry(i.as_str()).or_default();
                if readers.last() != Some(&k) {
                    readers.push(k);
                }
            }
        }
        let outputs = g.output.iter().map(|o| o.name.as_str()).collect();
        Wiring {
            producer,
            consumers,
            outputs,
        }
    }

    /// The one node that reads `v`, when exactly one does and `v` is not a graph output.
    fn only_reader(&self, v: &str) -> Option<usize> {
        match self.consumers.get(v).map(Vec::as_slice) {
            Some([k]) if !self.outputs.contains(v) => Some(*k),
            _ => None,
        }
    }

    fn producer(&self, v: &str) -> Option<usize> {
        self.producer.get(v).copied()
    }
}

/// The name errors give a node: its own, or `{op}_{index}` when it has none.
pub(super) fn node_label(n: &NodeProto, idx: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{idx}", n.op_type)
    } else {
        n.name.clone()
    }
}

pub(super) fn node_error(n: &NodeProto, idx: usize) -> impl Fn(String) -> Error {
    let head = format!("node '{}' ({})", node_label(n, idx), n.op_type);
    move |m| Error::Onnx(format!("{head}: {m}"))
}

pub(super) fn default_domain(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

/// The nodes between the graph input and the network proper.
pub(super) struct InputPrefix {
    /// Indices of the removed nodes.
    pub removed: Vec<usize>,
    /// The value the rest of the graph reads in place of the input.
    pub output: String,
    /// `(raw − mean) / std`, one entry (all channels) or one per channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub nhwc: bool,
}

/// Follows the image from the graph input through a `Transpose` from NHWC and elementwise
/// `Sub`/`Add`/`Mul`/`Div` with a constant scalar or per-channel operand, in any order, while
/// each value has one reader. The chain stops at the first other node (normally the first
/// Conv); such arithmetic anywhere else is refused by the importer.
pub(super) fn strip_input(
    g: &GraphProto,
    input: &str,
    consts: &Constants,
    wiring: &Wiring,
) -> Result<InputPrefix, Error> {
    // Each node of the chain, and for arithmetic its constant and whether it comes first.
    let mut chain: Vec<(usize, Option<(&Tensor, bool)>)> = Vec::new();
    let mut cur = input.to_string();
    while let Some(k) = wiring.only_reader(&cur) {
        let n = &g.node[k];
        let operand = match n.input.as_slice() {
            [a, b] if matches!(n.op_type.as_str(), "Sub" | "Add" | "Mul" | "Div") => {
                let (other, const_first) = match (a == &cur, b == &cur) {
                    (true, false) => (b, false),
                    (false, true) => (a, true),
                    _ => break,
                };
                match consts.get(other) {
                    Some(Constant::F32(t)) => Some((t, const_first)),
                    _ => break,
                }
            }
            _ if n.op_type == "Transpose" => None,
            _ => break,
        };
        let Some(out) = n.output.first().filter(|_| default_domain(n)) else {
            break;
        };
        chain.push((k, operand));
        cur = out.clone();
    }
    let transposes: Vec<usize> = (0..chain.len()).filter(|&i| chain[i].1.is_none()).collect();
    for (j, &i) in transposes.iter().enumerate() {
        let k = chain[i].0;
        let n = &g.node[k];
        let err = node_error(n, k);
        let perm = Attrs(n).ints("perm").unwrap_or(&[]);
        if perm != [0, 3, 1, 2] {
            return Err(err(format!(
                "a Transpose of the input with perm {perm:?}: only NHWC to NCHW ([0, 3, 1, 2]) \
                 is accepted"
            )));
        }
        if j > 0 {
            return Err(err("a second Transpose of the input".into()));
        }
    }
    let nhwc_until = transposes.first().copied().unwrap_or(0);
    // The image so far is (raw − mean) / std.
    let (mut mean, mut std) = (vec![0f32], vec![1f32]);
    for (i, &(k, operand)) in chain.iter().enumerate() {
        let Some((t, const_first)) = operand else {
            continue;
        };
        let n = &g.node[k];
        let err = node_error(n, k);
        let channel_axis = if i < nhwc_until { 3 } else { 1 };
        let v = per_channel(t, channel_axis, &err)?;
        if v.len() > 1 && mean.len() > 1 && v.len() != mean.len() {
            return Err(err(format!(
                "{} channels after {} channels earlier in the preprocessing",
                v.len(),
                mean.len()
            )));
        }
        let at = |x: &[f32], c: usize| if x.len() == 1 { x[0] } else { x[c] };
        let (mut m2, mut s2) = (Vec::new(), Vec::new());
        for c in 0..v.len().max(mean.len()) {
            let (m, d, k) = (at(&mean, c), at(&std, c), at(&v, c));
            let (m, d) = match (n.op_type.as_str(), const_first) {
                ("Add", _) => (m - k * d, d),
                ("Sub", false) => (m + k * d, d),
                ("Sub", true) => (m + k * d, -d),
                ("Mul", _) => (m, d / k),
                ("Div", false) => (m, d * k),
                _ => {
                    return Err(err(
                        "divides a constant by the image, which is not a normalisation".into(),
                    ));
                }
            };
            if !(m.is_finite() && d.is_finite()) || d == 0.0 {
                return Err(err(format!(
                    "the input normalisation becomes mean {m}, std {d}"
                )));
            }
            m2.push(m);
            s2.push(d);
        }
        (mean, std) = (m2, s2);
    }
    Ok(InputPrefix {
        removed: chain.iter().map(|&(k, _)| k).collect(),
        output: cur,
        mean,
        std,
        nhwc: !transposes.is_empty(),
    })
}

/// A constant operand of an elementwise op on a rank-4 image with channels at `channel_axis`
/// (3 before the NHWC transpose, 1 after): a scalar, or one value per channel (`[3]` in NHWC,
/// `[1,3,1,1]` or `[3,1,1]` in NCHW). Anything else does not broadcast per channel.
fn per_channel(t: &Tensor, channel_axis: usize, err: NodeErr) -> Result<Vec<f32>, Error> {
    let bad = || {
        err(format!(
            "constant of shape {:?} is not a scalar or one value per channel",
            t.shape
        ))
    };
    let pad = 4usize.checked_sub(t.shape.len()).ok_or_else(bad)?;
    for (i, &d) in t.shape.iter().enumerate() {
        if pad + i != channel_axis && d != 1 {
            return Err(bad());
        }
    }
    if t.data.is_empty() || t.data.iter().any(|v| !v.is_finite()) {
        return Err(err(format!("constant {:?} is empty or not finite", t.data)));
    }
    Ok(t.data.clone())
}

/// The nodes of a trailing L2 normalisation.
pub(super) struct Tail {
    pub removed: Vec<usize>,
    /// The embedding before normalisation: the graph's output after the removal.
    pub output: String,
}

/// Epsilons larger than this are not an L2 normalisation's guard against zero.
const MAX_EPSILON: f32 = 1e-3;

/// Finds an L2 normalisation of the embedding at the graph output, as exporters write it:
/// `LpNormalization(p=2, axis=1)`, or `x / d` where the norm `d` is `ReduceL2(x)` or
/// `Sqrt(ReduceSum(x·x))` / `Sqrt(ReduceSumSquare(x))` over axis 1 (keepdims), optionally
/// guarded by a small epsilon (`Clip(min=ε)`, `Max(·, ε)`, `Add(·, ε)`) and expanded to the
/// shape of `x` (PyTorch's `F.normalize`). `None`: the output is not produced by an
/// `LpNormalization` or `Div`; a `Div` or `LpNormalization` that is not such a normalisation
/// is an error naming its node.
pub(super) fn strip_l2_tail(
    g: &GraphProto,
    output: &str,
    consts: &Constants,
    wiring: &Wiring,
    opset: Opset,
) -> Result<Option<Tail>, Error> {
    let Some(k) = wiring.producer(output) else {
        return Ok(None);
    };
    let n = &g.node[k];
    let err = node_error(n, k);
    if !default_domain(n) || n.input.is_empty() {
        return Ok(None);
    }
    match n.op_type.as_str() {
        "LpNormalization" => {
            let a = Attrs(n);
            let (p, axis) = (a.int("p", 2), a.int("axis", -1));
            if p != 2 || !matches!(axis, 1 | -1) {
                return Err(err(format!(
                    "LpNormalization p={p} axis={axis} is not the embedding's L2 norm \
                     (p=2, axis=1)"
                )));
            }
            Ok(Some(Tail {
                removed: vec![k],
                output: n.input[0].clone(),
            }))
        }
        "Div" if n.input.len() == 2 => {
            let x = n.input[0].as_str();
            let mut removed = vec![k];
            norm_of(g, x, &n.input[1], consts, wiring, opset, &mut removed, &err)?;
            Ok(Some(Tail {
                removed,
                output: x.to_string(),
            }))
        }
        _ => Ok(None),
    }
}

/// Checks that `d` is the L2 norm of `x` over axis 1 and adds the nodes computing it to
/// `removed`.
#[allow(clippy::too_many_arguments)]
fn norm_of(
    g: &GraphProto,
    x: &str,
    d: &str,
    consts: &Constants,
    wiring: &Wiring,
    opset: Opset,
    removed: &mut Vec<usize>,
    div_err: NodeErr,
) -> Result<(), Error> {
    let not_norm = |m: String| {
        div_err(format!(
            "the trailing division is not an L2 normalisation: {m}"
        ))
    };
    let mut d = d.to_string();
    let mut sqrt_seen = false;
    // A norm is at most: Expand, three epsilon guards, Sqrt, the reduction, the square.
    for _ in 0..8 {
        let Some(k) = wiring
            .producer(&d)
            .filter(|_| wiring.only_reader(&d).is_some())
        else {
            return Err(not_norm(format!(
                "its divisor '{d}' is not computed from the embedding for this division alone"
            )));
        };
        let n = &g.node[k];
        let err = node_error(n, k);
        let input = |i: usize| n.input.get(i).map(String::as_str).unwrap_or("");
        let other_is_epsilon = || -> Result<(), Error> {
            match scalar_const(consts, input(1)).or_else(|| scalar_const(consts, input(0))) {
                Some(e) if (0.0..=MAX_EPSILON).contains(&e) => Ok(()),
                _ => Err(err(format!(
                    "guards the norm with something other than a constant epsilon up to \
                     {MAX_EPSILON}"
                ))),
            }
        };
        let axes_are_embedding = |since: i64| -> Result<(), Error> {
            let axes = opset.axes(n, consts, since, &err)?;
            if !matches!(axes.as_deref(), Some([1] | [-1])) {
                return Err(err(format!(
                    "reduces axes {axes:?}, not the embedding's axis 1"
                )));
            }
            if Attrs(n).int("keepdims", 1) != 1 {
                return Err(err(
                    "keepdims=0 does not divide each embedding by its norm".into()
                ));
            }
            Ok(())
        };
        removed.push(k);
        match n.op_type.as_str() {
            "Expand" if !sqrt_seen => {
                let shape = input(1);
                match wiring.producer(shape).map(|s| &g.node[s]) {
                    Some(s) if s.op_type == "Shape" && s.input.first().is_some_and(|i| i == x) => {
                        if wiring.only_reader(shape).is_some() {
                            removed.push(wiring.producer(shape).unwrap());
                        }
                    }
                    _ => return Err(err("expands to a shape other than the embedding's".into())),
                }
                d = input(0).to_string();
            }
            "Clip" => {
                let (lo, hi) = opset.clip_bounds(n, consts, &err)?;
                if !lo.is_some_and(|e| (0.0..=MAX_EPSILON).contains(&e)) || hi.is_some() {
                    return Err(err(format!(
                        "clips the norm to [{lo:?}, {hi:?}], not to a minimum epsilon up to \
                         {MAX_EPSILON}"
                    )));
                }
                d = input(0).to_string();
            }
            "Max" | "Add" if n.input.len() == 2 => {
                other_is_epsilon()?;
                d = if consts.contains_key(input(1)) {
                    input(0)
                } else {
                    input(1)
                }
                .to_string();
            }
            "Sqrt" if !sqrt_seen => {
                sqrt_seen = true;
                d = input(0).to_string();
            }
            "ReduceL2" if !sqrt_seen && input(0) == x => return axes_are_embedding(18),
            "ReduceSumSquare" if sqrt_seen && input(0) == x => return axes_are_embedding(18),
            "ReduceSum" if sqrt_seen => {
                axes_are_embedding(13)?;
                let sq = input(0);
                let square = wiring
                    .producer(sq)
                    .filter(|_| wiring.only_reader(sq).is_some())
                    .filter(|&s| {
                        let s = &g.node[s];
                        match s.op_type.as_str() {
                            "Mul" => s.input.len() == 2 && s.input.iter().all(|i| i == x),
                            "Pow" => {
                                s.input.first().is_some_and(|i| i == x)
                                    && s.input.get(1).and_then(|e| scalar_const(consts, e))
                                        == Some(2.0)
                            }
                            _ => false,
                        }
                    });
                let Some(s) = square else {
                    return Err(err("sums something other than the embedding squared".into()));
                };
                removed.push(s);
                return Ok(());
            }
            other => {
                return Err(not_norm(format!(
                    "its divisor comes from node '{}' ({other}), not an L2 norm of the \
                     embedding '{x}'",
                    node_label(n, k)
                )));
            }
        }
    }
    Err(not_norm(
        "its divisor is too long a chain for a norm".into(),
    ))
}
