//! ONNX → [`Graph`]: one image input, the ops of InsightFace's recognizers, BatchNorm folded,
//! the input's and output's conventions recognised and removed ([`conventions`](super::conventions)).

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use super::conventions::{
    BakedPreprocessing, Wiring, default_domain, node_error, node_label, strip_input, strip_l2_tail,
};
use super::ops::{Opset, constant_value, conv_attrs};
use super::proto::{Attrs, Constant, ModelProto, NodeProto, ValueInfoProto, decode_tensor};
use crate::Error;
use crate::graph::{Graph, Node, Op, SampleShape, Tensor, ValueId, Weights};

/// An imported recognizer and what the importer learned about its conventions.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The network alone, BatchNorm folded where exact.
    pub graph: Graph,
    /// Layout and normalisation nodes found at the input and removed: the graph takes what
    /// they computed.
    pub baked: BakedPreprocessing,
    /// A trailing L2 normalisation of the embedding was found and removed (the pipeline
    /// normalises embeddings itself).
    pub removed_l2_norm: bool,
    /// The model's `ai.onnx` opset.
    pub opset: i64,
}

/// Reads an ONNX file into a [`Graph`] with BatchNorm folded where it is exact. Baked-in input
/// normalisation and layout are removed as [`import_file_with_conventions`] says; use that to
/// learn what they were.
///
/// A model that normalises its input in its own graph (Sub/Mul/Div at the input) is refused
/// here: the graph alone would silently take a different input. Such models are imported with
/// [`import_file_with_conventions`], whose caller applies the normalisation.
pub fn import_file(path: impl AsRef<Path>) -> Result<Graph, Error> {
    let path = path.as_ref();
    without_baked_normalisation(import_file_with_conventions(path)?)
        .map_err(|e| Error::Onnx(format!("{}: {e}", path.display())))
}

/// Parses ONNX bytes into a [`Graph`] with BatchNorm folded where it is exact (see
/// [`import_bytes_with_conventions`]).
///
/// Refuses a model that normalises its input in its own graph, as [`import_file`] does.
pub fn import_bytes(bytes: &[u8], name: &str) -> Result<Graph, Error> {
    without_baked_normalisation(import_bytes_with_conventions(bytes, name)?)
}

fn without_baked_normalisation(i: Imported) -> Result<Graph, Error> {
    let b = &i.baked;
    if b.mean.iter().any(|&m| m != 0.0) || b.std.iter().any(|&s| s != 1.0) {
        return Err(Error::Onnx(format!(
            "the model normalises its input itself ((x − {:?}) / {:?} at the input); import it \
             with its conventions (import_*_with_conventions), which the caller must apply",
            b.mean, b.std
        )));
    }
    Ok(i.graph)
}

/// [`import_bytes_with_conventions`] on a file; errors name the file.
pub fn import_file_with_conventions(path: impl AsRef<Path>) -> Result<Imported, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_bytes_with_conventions(&bytes, &name).map_err(|e| match e {
        Error::Onnx(m) => Error::Onnx(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// How a `Reshape` or `Squeeze` translated as a flatten must find its input, checked once
/// shapes are known.
enum FlattenCheck {
    Features(usize),
    UnitSpatial,
}

/// Integer values computed from a shape: a flatten's target written as
/// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))`.
#[derive(Clone)]
enum ShapeValue {
    /// The output of `Shape`.
    Shape,
    /// Dimensions; `None` is the batch size.
    Dims(Vec<Option<i64>>),
}

/// Parses ONNX bytes into a recognizer [`Graph`] and reports the conventions found in it.
///
/// Accepted: opsets 9–21; a batch dimension fixed, symbolic or undeclared; an NHWC input
/// followed by a `Transpose` to NCHW; `Sub`/`Add`/`Mul`/`Div` by constant scalars or
/// per-channel values on the way from the input to the first other node (folded into
/// [`BakedPreprocessing`], not into the weights); Flatten, or Reshape / Squeeze that flatten;
/// BatchNorm before or after the flatten; a trailing L2 normalisation (removed). Anything else
/// is an error naming the op and the node.
pub fn import_bytes_with_conventions(bytes: &[u8], name: &str) -> Result<Imported, Error> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::Onnx(format!("not a valid ONNX protobuf: {e}")))?;
    let opset = Opset::of(&model)?;
    let g = model
        .graph
        .ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let mut consts: HashMap<String, Constant> = HashMap::new();
    for t in &g.initializer {
        consts.insert(t.name.clone(), decode_tensor(t)?);
    }
    let data_inputs: Vec<&ValueInfoProto> = g
        .input
        .iter()
        .filter(|i| !consts.contains_key(&i.name))
        .collect();
    let input = match data_inputs.as_slice() {
        [one] => *one,
        [] => return Err(Error::Onnx("graph has no data input".into())),
        many => {
            return Err(Error::Onnx(format!(
                "graph has {} data inputs; a face model has one image input",
                many.len()
            )));
        }
    };
    for (idx, n) in g.node.iter().enumerate() {
        if n.op_type == "Constant" && default_domain(n) {
            let err = node_error(n, idx);
            let out = n
                .output
                .first()
                .ok_or_else(|| err("node has no output".into()))?;
            consts.insert(out.clone(), constant_value(n, &err)?);
        }
    }
    let out_name = &g
        .output
        .first()
        .ok_or_else(|| Error::Onnx("graph has no output".into()))?
        .name;
    let wiring = Wiring::new(&g);
    let prefix = strip_input(&g, &input.name, &consts, &wiring)?;
    let tail = strip_l2_tail(&g, out_name, &consts, &wiring, opset)?;
    let mut skip = vec![false; g.node.len()];
    for &k in prefix
        .removed
        .iter()
        .chain(tail.iter().flat_map(|t| &t.removed))
    {
        skip[k] = true;
    }
    let (input_shape, batch) = declared_input(input, prefix.nhwc)?;

    let mut values: HashMap<String, ValueId> = HashMap::new();
    values.insert(prefix.output.clone(), 0);
    let mut shape_values: HashMap<String, ShapeValue> = HashMap::new();
    let mut checks: Vec<(String, &str, ValueId, FlattenCheck)> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut num_values = 1usize;

    for (idx, n) in g.node.iter().enumerate() {
        if skip[idx] || (n.op_type == "Constant" && default_domain(n)) {
            continue;
        }
        let node_name = node_label(n, idx);
        if !default_domain(n) {
            return Err(Error::UnsupportedOp {
                op: format!("{}.{}", n.domain, n.op_type),
                node: node_name,
            });
        }
        let a = Attrs(n);
        let err = node_error(n, idx);
        let input_name = |i: usize| n.input.get(i).map(String::as_str).unwrap_or("");
        let value = |i: usize| -> Result<ValueId, Error> {
            let nm = n
                .input
                .get(i)
                .ok_or_else(|| err(format!("missing input {i}")))?;
            values
                .get(nm)
                .copied()
                .ok_or_else(|| err(format!("input '{nm}' is not a computed value")))
        };
        let float_const = |i: usize| -> Result<Tensor, Error> {
            let nm = n
                .input
                .get(i)
                .ok_or_else(|| err(format!("missing input {i}")))?;
            match consts.get(nm) {
                Some(Constant::F32(t)) => Ok(t.clone()),
                Some(Constant::I64(_)) => {
                    Err(err(format!("input '{nm}' must be a float constant")))
                }
                None => Err(err(format!(
                    "input '{nm}' must be a constant (initializer)"
                ))),
            }
        };
        let out_name = n
            .output
            .first()
            .cloned()
            .ok_or_else(|| err("node has no output".into()))?;

        let op = match n.op_type.as_str() {
            "Conv" => {
                let w = float_const(1)?;
                if w.shape.len() != 4 {
                    return Err(err(format!(
                        "only 2-D convolution is supported, weight shape {:?}",
                        w.shape
                    )));
                }
                let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                    Some(_) => float_const(2)?.data,
                    None => vec![0.0; w.shape[0]],
                };
                let attrs = conv_attrs(&a, &err)?;
                Op::Conv {
                    weights: Weights::Float(w),
                    bias,
                    attrs,
                    input_quant: None,
                }
            }
            "BatchNormalization" => {
                opset.check_batchnorm(n, &err)?;
                let (gamma, beta, mean, var) = (
                    float_const(1)?,
                    float_const(2)?,
                    float_const(3)?,
                    float_const(4)?,
                );
                let c = gamma.numel();
                if beta.numel() != c || mean.numel() != c || var.numel() != c {
                    return Err(err("scale, bias, mean and var differ in length".into()));
                }
                let eps = a.float("epsilon", 1e-5);
                let scale: Vec<f32> = (0..c)
                    .map(|i| gamma.data[i] / (var.data[i] + eps).sqrt())
                    .collect();
                let shift = (0..c)
                    .map(|i| beta.data[i] - mean.data[i] * scale[i])
                    .collect();
                Op::Affine { scale, shift }
            }
            "PRelu" => Op::PRelu {
                slope: float_const(1)?.data,
            },
            "Relu" => Op::Relu,
            // Nearest upsampling by a whole factor, as each opset writes it.
            "Resize" | "Upsample" => Op::Upsample {
                factor: opset.upsample_factor(n, &consts, &err)?,
            },
            "Add" if n.input.iter().any(|i| consts.contains_key(i)) => {
                return Err(err(CONSTANT_ARITHMETIC.into()));
            }
            "Add" => Op::Add,
            "Sub" | "Mul" | "Div" => {
                if n.input.iter().any(|i| consts.contains_key(i)) {
                    return Err(err(CONSTANT_ARITHMETIC.into()));
                }
                return Err(err(format!(
                    "{} of two computed values is not supported",
                    n.op_type
                )));
            }
            "Flatten" => {
                let axis = a.int("axis", 1);
                if axis != 1 {
                    return Err(err(format!(
                        "Flatten axis {axis} is not supported (only 1)"
                    )));
                }
                Op::Flatten
            }
            "Reshape" => {
                let nm = input_name(1);
                let target: Vec<Option<i64>> = match (consts.get(nm), shape_values.get(nm)) {
                    (Some(Constant::I64(s)), _) => s.iter().map(|&d| Some(d)).collect(),
                    (_, Some(ShapeValue::Dims(d))) => d.clone(),
                    _ => {
                        return Err(err(format!(
                            "the target shape '{nm}' is neither a constant nor computed from \
                             the batch size"
                        )));
                    }
                };
                // From opset 14 `allowzero=1` makes a 0 a zero, not "keep this dimension".
                let allowzero = opset.0 >= 14 && a.int("allowzero", 0) == 1;
                let batch_like = |d: Option<i64>| match d {
                    None | Some(1) => true,
                    Some(0) => !allowzero,
                    b => b == batch,
                };
                let features = match target.as_slice() {
                    [b, Some(-1)] if batch_like(*b) => None,
                    [b, Some(k)] if *k > 0 && (batch_like(*b) || *b == Some(-1)) => {
                        Some(*k as usize)
                    }
                    _ => {
                        let shown: Vec<String> = target
                            .iter()
                            .map(|d| d.map_or("N".into(), |d| d.to_string()))
                            .collect();
                        return Err(err(format!(
                            "Reshape to [{}] is not a flatten to [batch, features]",
                            shown.join(", ")
                        )));
                    }
                };
                if let Some(f) = features {
                    checks.push((
                        node_name.clone(),
                        "Reshape",
                        value(0)?,
                        FlattenCheck::Features(f),
                    ));
                }
                Op::Flatten
            }
            "Squeeze" => {
                let axes = opset.axes(n, &consts, 13, &err)?;
                let mut ax: Vec<i64> = axes
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .map(|&x| if x < 0 { x.saturating_add(4) } else { x })
                    .collect();
                ax.sort_unstable();
                if ax != [2, 3] {
                    return Err(err(format!(
                        "Squeeze axes {axes:?}: only squeezing the spatial axes [2, 3] of a \
                         [N, C, 1, 1] value is supported"
                    )));
                }
                checks.push((
                    node_name.clone(),
                    "Squeeze",
                    value(0)?,
                    FlattenCheck::UnitSpatial,
                ));
                Op::Flatten
            }
            "Shape" => {
                value(0)?;
                if opset.0 >= 15 && a.int("start", 0) != 0 {
                    return Err(err("Shape with a start other than 0".into()));
                }
                shape_values.insert(out_name, ShapeValue::Shape);
                continue;
            }
            "Gather" => {
                let index = consts.get(input_name(1));
                match shape_values.get(input_name(0)) {
                    Some(ShapeValue::Shape)
                        if a.int("axis", 0) == 0
                            && matches!(index, Some(Constant::I64(i)) if i == &[0]) =>
                    {
                        shape_values.insert(out_name, ShapeValue::Dims(vec![None]));
                        continue;
                    }
                    _ => {
                        return Err(err(
                            "Gather is supported only taking the batch size from a Shape".into(),
                        ));
                    }
                }
            }
            "Unsqueeze" => {
                let axes = opset.axes(n, &consts, 13, &err)?;
                let x = input_name(0);
                let (sv, cv) = (shape_values.get(x).cloned(), consts.get(x).cloned());
                match (sv, cv, axes.as_deref()) {
                    (Some(ShapeValue::Dims(d)), _, Some([0])) if d.len() == 1 => {
                        shape_values.insert(out_name, ShapeValue::Dims(d));
                    }
                    (_, Some(Constant::I64(v)), Some([0])) if v.len() == 1 => {
                        consts.insert(out_name, Constant::I64(v));
                    }
                    _ => {
                        return Err(err(
                            "Unsqueeze is supported only in computing a flatten's target shape"
                                .into(),
                        ));
                    }
                }
                continue;
            }
            "Concat" => {
                if !matches!(a.int("axis", 0), 0 | -1) {
                    return Err(err("Concat is supported only of shape vectors".into()));
                }
                let mut dims = Vec::new();
                for nm in &n.input {
                    match (consts.get(nm), shape_values.get(nm)) {
                        (Some(Constant::I64(v)), _) => dims.extend(v.iter().map(|&d| Some(d))),
                        (_, Some(ShapeValue::Dims(d))) => dims.extend(d),
                        _ => {
                            return Err(err(
                                "Concat is supported only in computing a flatten's target shape"
                                    .into(),
                            ));
                        }
                    }
                }
                shape_values.insert(out_name, ShapeValue::Dims(dims));
                continue;
            }
            "Gemm" => gemm(n, &a, &float_const, &err)?,
            "Dropout" | "Identity" => {
                if n.op_type == "Dropout" {
                    opset.check_dropout(n, &consts, &err)?;
                }
                let v = value(0)?;
                values.insert(out_name, v);
                continue;
            }
            other => {
                return Err(Error::UnsupportedOp {
                    op: other.to_string(),
                    node: node_name,
                });
            }
        };
        let mut inputs = vec![value(0)?];
        if matches!(op, Op::Add) {
            inputs.push(value(1)?);
        }
        let output = num_values;
        num_values += 1;
        values.insert(out_name, output);
        nodes.push(Node {
            name: node_name,
            op,
            inputs,
            output,
        });
    }
    let final_name = tail.as_ref().map_or(out_name.as_str(), |t| &t.output);
    let output = *values
        .get(final_name)
        .ok_or_else(|| Error::Onnx(format!("graph output '{final_name}' is never computed")))?;
    let mut graph = Graph {
        name: name.to_string(),
        input_shape,
        num_values,
        nodes,
        output,
    };
    // Validated (limits, no zero-sized layer) before folding divides by channel counts.
    let shapes = graph.infer_shapes()?;
    for (node, op, v, check) in checks {
        check_flatten(&shapes[v], check)
            .map_err(|m| Error::Onnx(format!("node '{node}' ({op}): {m}")))?;
    }
    graph.fold_batchnorm();
    graph.check_recognizer()?;
    let c = input_shape[0];
    let per_channel = |v: Vec<f32>| -> Result<Vec<f32>, Error> {
        match v.len() {
            1 => Ok(vec![v[0]; c]),
            k if k == c => Ok(v),
            k => Err(Error::Onnx(format!(
                "the input normalisation has {k} channels; the input has {c}"
            ))),
        }
    };
    let baked = BakedPreprocessing {
        mean: per_channel(prefix.mean)?,
        std: per_channel(prefix.std)?,
        nhwc: prefix.nhwc,
    };
    Ok(Imported {
        graph,
        baked,
        removed_l2_norm: tail.is_some(),
        opset: opset.0,
    })
}

const CONSTANT_ARITHMETIC: &str = "arithmetic with a constant is accepted only as the input's \
    normalisation: on the image's own path from the graph input to the first other node";

/// `[C, H, W]` of the image input and its batch size if fixed. Undeclared or symbolic sizes
/// default to InsightFace's `[3, 112, 112]`; an NHWC model declares `[N, H, W, C]`.
fn declared_input(input: &ValueInfoProto, nhwc: bool) -> Result<([usize; 3], Option<i64>), Error> {
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().map(|d| d.dim_value).collect())
        .unwrap_or_default();
    let (batch, chw) = match dims.as_slice() {
        [] => return Ok(([3, 112, 112], None)),
        [n, h, w, c] if nhwc => (*n, [*c, *h, *w]),
        [n, c, h, w] => (*n, [*c, *h, *w]),
        other => {
            return Err(Error::Onnx(format!(
                "input '{}' has shape {other:?}, expected NCHW (or NHWC and a Transpose)",
                input.name
            )));
        }
    };
    let batch = batch.filter(|&b| b > 0);
    match chw {
        [Some(c), Some(h), Some(w)] if c > 0 && h > 0 && w > 0 => {
            Ok(([c as usize, h as usize, w as usize], batch))
        }
        _ => Ok(([3, 112, 112], batch)),
    }
}

fn check_flatten(shape: &SampleShape, check: FlattenCheck) -> Result<(), String> {
    let features: usize = shape.iter().product();
    match check {
        FlattenCheck::Features(k) if features != k => Err(format!(
            "its input {shape:?} has {features} features, not the {k} of its target shape"
        )),
        FlattenCheck::UnitSpatial if !matches!(shape.as_slice(), [_, 1, 1]) => Err(format!(
            "its input {shape:?} is not [C, 1, 1]; squeezing it is not a flatten"
        )),
        _ => Ok(()),
    }
}

/// `Gemm` as a fully-connected layer: `transB` and `alpha`/`beta` folded into the weights.
fn gemm(
    n: &NodeProto,
    a: &Attrs,
    float_const: &dyn Fn(usize) -> Result<Tensor, Error>,
    err: &dyn Fn(String) -> Error,
) -> Result<Op, Error> {
    if a.int("transA", 0) != 0 {
        return Err(err("transA=1 is not supported".into()));
    }
    let (alpha, beta) = (a.float("alpha", 1.0), a.float("beta", 1.0));
    let mut w = float_const(1)?;
    if w.shape.len() != 2 {
        return Err(err(format!("weight shape {:?} is not 2-D", w.shape)));
    }
    if a.int("transB", 0) == 0 {
        let (k, m) = (w.shape[0], w.shape[1]);
        let mut t = vec![0.0; k * m];
        for i in 0..k {
            for j in 0..m {
                t[j * k + i] = w.data[i * m + j];
            }
        }
        w = Tensor {
            shape: vec![m, k],
            data: t,
        };
    }
    w.data.iter_mut().for_each(|v| *v *= alpha);
    let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
        Some(_) => float_const(2)?.data.iter().map(|v| v * beta).collect(),
        None => vec![0.0; w.shape[0]],
    };
    if bias.len() != w.shape[0] {
        return Err(err(format!(
            "bias of {} values for {} outputs",
            bias.len(),
            w.shape[0]
        )));
    }
    Ok(Op::Gemm {
        weights: Weights::Float(w),
        bias,
        input_quant: None,
    })
}

impl Imported {
    /// The preprocessing this model needs: the given conventions (`None`: the defaults, RGB and
    /// `(pixel − 127.5) / 127.5`, or raw pixels when the graph normalised its input itself)
    /// combined with any normalisation the graph carried, `(pixel − m − m_baked·s) / (s ·
    /// s_baked)`. An error when the model does not take three channels or the combination
    /// cannot be applied.
    pub fn preprocessing(
        &self,
        bgr: bool,
        mean: Option<[f32; 3]>,
        std: Option<[f32; 3]>,
    ) -> Result<crate::format::Preprocessing, Error> {
        let g = &self.graph;
        if g.input_shape[0] != 3 {
            return Err(Error::Input(format!(
                "the model takes {} input channels; a face model takes 3 (RGB or BGR)",
                g.input_shape[0]
            )));
        }
        let baked = &self.baked;
        let has_baked = baked.mean.iter().any(|&m| m != 0.0) || baked.std.iter().any(|&s| s != 1.0);
        let (default_mean, default_std) = if has_baked {
            (0.0, 1.0)
        } else {
            (127.5, 127.5)
        };
        let mean = mean.unwrap_or([default_mean; 3]);
        let std = std.unwrap_or([default_std; 3]);
        let channel =
            |v: &[f32], c: usize, neutral: f32| v.get(c).or(v.first()).copied().unwrap_or(neutral);
        let mut pre = crate::format::Preprocessing {
            color: if bgr { "BGR" } else { "RGB" }.into(),
            mean,
            std,
            size: [g.input_shape[1], g.input_shape[2]],
        };
        for c in 0..3 {
            let (bm, bs) = (channel(&baked.mean, c, 0.0), channel(&baked.std, c, 1.0));
            pre.mean[c] = mean[c] + bm * std[c];
            pre.std[c] = std[c] * bs;
        }
        if !pre.std.iter().all(|s| s.is_normal() && *s > 0.0)
            || !pre.mean.iter().all(|m| m.is_finite())
        {
            return Err(Error::Input(format!(
                "the input conventions come to mean {:?}, std {:?}, which no image pipeline can \
                 apply (std must be positive)",
                pre.mean, pre.std
            )));
        }
        Ok(pre)
    }
}
