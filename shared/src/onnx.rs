//! ONNX import into the shared [`Graph`] (and export, so tests can generate InsightFace-layout
//! files). The protobuf messages are declared with `prost` for the subset of `onnx.proto` that
//! face-recognition CNNs use; field numbers follow onnx.proto3 exactly.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::Error;
use crate::graph::{ConvAttrs, Graph, Node, Op, Tensor, ValueId, Weights};

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const DOUBLE: i32 = 11;
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_STRING: i32 = 3;
const ATTR_INTS: i32 = 7;

/// A constant: float parameters or integer shape data.
#[derive(Clone, Debug)]
pub(crate) enum Constant {
    F32(Tensor),
    I64(Vec<i64>),
}

pub(crate) fn decode_tensor(t: &TensorProto) -> Result<Constant, Error> {
    let name = &t.name;
    if t.data_location == 1 {
        return Err(Error::Onnx(format!(
            "tensor '{name}' uses external data, which is not supported"
        )));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| Error::Onnx(format!("tensor '{name}' has dimension {d}")))
        })
        .collect::<Result<_, _>>()?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = n.ok_or_else(|| Error::Onnx(format!("tensor '{name}' shape {shape:?} overflows")))?;
    let raw_len = |width: usize| -> Result<(), Error> {
        if n.checked_mul(width) != Some(t.raw_data.len()) {
            return Err(Error::Onnx(format!(
                "tensor '{name}' of shape {shape:?} has {} raw bytes, expected {n} values of \
                 {width} bytes",
                t.raw_data.len(),
            )));
        }
        Ok(())
    };
    match t.data_type {
        FLOAT => {
            let data = if !t.raw_data.is_empty() {
                raw_len(4)?;
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                t.float_data.clone()
            };
            Ok(Constant::F32(Tensor::new(shape, data).map_err(|e| {
                Error::Onnx(format!("tensor '{name}': {e}"))
            })?))
        }
        DOUBLE => {
            let data: Vec<f32> = if !t.raw_data.is_empty() {
                raw_len(8)?;
                t.raw_data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect()
            } else {
                t.double_data.iter().map(|&v| v as f32).collect()
            };
            Ok(Constant::F32(Tensor::new(shape, data).map_err(|e| {
                Error::Onnx(format!("tensor '{name}': {e}"))
            })?))
        }
        INT64 => {
            if !t.raw_data.is_empty() {
                raw_len(8)?;
                Ok(Constant::I64(
                    t.raw_data
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ))
            } else {
                Ok(Constant::I64(t.int64_data.clone()))
            }
        }
        INT32 => {
            if !t.raw_data.is_empty() {
                raw_len(4)?;
                Ok(Constant::I64(
                    t.raw_data
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                ))
            } else {
                Ok(Constant::I64(
                    t.int32_data.iter().map(|&v| v as i64).collect(),
                ))
            }
        }
        other => Err(Error::Onnx(format!(
            "tensor '{name}' has unsupported data type {other}"
        ))),
    }
}

pub(crate) struct Attrs<'a>(pub(crate) &'a NodeProto);

impl Attrs<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    pub(crate) fn ints(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// A `Resize` the graph's `Upsample` means: nearest neighbour, asymmetric coordinates, floor
/// (what PyTorch's `interpolate(mode="nearest")` exports). Anything else is refused by name.
pub(crate) fn check_nearest_resize(a: &Attrs, err: &dyn Fn(String) -> Error) -> Result<(), Error> {
    let mode = a.string("mode").unwrap_or_else(|| "nearest".into());
    let ctm = a
        .string("coordinate_transformation_mode")
        .unwrap_or_else(|| "half_pixel".into());
    let nearest = a
        .string("nearest_mode")
        .unwrap_or_else(|| "round_prefer_floor".into());
    if (mode.as_str(), ctm.as_str(), nearest.as_str()) != ("nearest", "asymmetric", "floor") {
        return Err(err(format!(
            "only nearest/asymmetric/floor resizing is supported, got {mode}/{ctm}/{nearest}"
        )));
    }
    Ok(())
}

/// Conv attributes (explicit pads only), shared by the recognition and detector importers.
pub(crate) fn conv_attrs(a: &Attrs, err: &dyn Fn(String) -> Error) -> Result<ConvAttrs, Error> {
    if let Some(p) = a.string("auto_pad").filter(|p| p != "NOTSET") {
        return Err(err(format!("auto_pad={p} is not supported")));
    }
    let pair = |name: &str, default: [usize; 2]| -> Result<[usize; 2], Error> {
        match a.ints(name) {
            None => Ok(default),
            Some([x, y]) if *x >= 0 && *y >= 0 => Ok([*x as usize, *y as usize]),
            Some(v) => Err(err(format!("{name} {v:?} is not two non-negative values"))),
        }
    };
    let pads = match a.ints("pads") {
        None => [0; 4],
        Some(p) if p.len() == 4 && p.iter().all(|&v| v >= 0) => {
            [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
        }
        Some(p) => return Err(err(format!("pads {p:?} are not four non-negative values"))),
    };
    let group = a.int("group", 1);
    if group < 1 {
        return Err(err(format!("group {group} must be positive")));
    }
    Ok(ConvAttrs {
        stride: pair("strides", [1, 1])?,
        dilation: pair("dilations", [1, 1])?,
        pads,
        group: group as usize,
    })
}

/// Reads an ONNX file into a [`Graph`] with BatchNorm folded where it is exact.
pub fn import_file(path: impl AsRef<Path>) -> Result<Graph, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_bytes(&bytes, &name).map_err(|e| match e {
        Error::Onnx(m) => Error::Onnx(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Parses ONNX bytes into a [`Graph`] with BatchNorm folded where it is exact.
pub fn import_bytes(bytes: &[u8], name: &str) -> Result<Graph, Error> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::Onnx(format!("not a valid ONNX protobuf: {e}")))?;
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
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().map(|d| d.dim_value).collect())
        .unwrap_or_default();
    let input_shape = match dims.as_slice() {
        [_, Some(c), Some(h), Some(w)] if *c > 0 && *h > 0 && *w > 0 => {
            [*c as usize, *h as usize, *w as usize]
        }
        [] | [_, _, _, _] => [3, 112, 112],
        other => {
            return Err(Error::Onnx(format!(
                "input '{}' has shape {other:?}, expected NCHW",
                input.name
            )));
        }
    };

    let mut values: HashMap<String, ValueId> = HashMap::new();
    values.insert(input.name.clone(), 0);
    let mut nodes: Vec<Node> = Vec::new();
    let mut num_values = 1usize;

    for (idx, n) in g.node.iter().enumerate() {
        let node_name = if n.name.is_empty() {
            format!("{}_{idx}", n.op_type)
        } else {
            n.name.clone()
        };
        let a = Attrs(n);
        let err = |m: String| Error::Onnx(format!("node '{node_name}' ({}): {m}", n.op_type));
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
            // Nearest upsampling by a whole factor, as `export_bytes` writes it (constant scales).
            "Resize" => {
                check_nearest_resize(&a, &err)?;
                let scales = float_const(2)?.data;
                match scales.as_slice() {
                    [1.0, 1.0, fy, fx] if fy == fx && *fy >= 1.0 && fy.fract() == 0.0 => {
                        Op::Upsample {
                            factor: *fy as usize,
                        }
                    }
                    other => {
                        return Err(err(format!(
                            "Resize scales {other:?} are not (1, 1, f, f) with a whole f"
                        )));
                    }
                }
            }
            "Add" => {
                if n.input.iter().any(|i| consts.contains_key(i)) {
                    return Err(err("Add with a constant operand is not supported".into()));
                }
                Op::Add
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
            "Reshape" => match n.input.get(1).and_then(|s| consts.get(s)) {
                Some(Constant::I64(s))
                    if s.len() == 2 && (s[1] == -1 || s[0] == -1 || s[0] == 0) =>
                {
                    Op::Flatten
                }
                _ => {
                    return Err(err(
                        "only Reshape to [batch, -1] (a flatten) is supported".into()
                    ));
                }
            },
            "Gemm" => {
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
                Op::Gemm {
                    weights: Weights::Float(w),
                    bias,
                    input_quant: None,
                }
            }
            "Dropout" | "Identity" => {
                let v = value(0)?;
                values.insert(out_name, v);
                continue;
            }
            "Constant" => {
                let t = a
                    .get("value")
                    .and_then(|v| v.t.as_ref())
                    .ok_or_else(|| err("Constant without a tensor value".into()))?;
                consts.insert(out_name, decode_tensor(t)?);
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
    let out_name = &g
        .output
        .first()
        .ok_or_else(|| Error::Onnx("graph has no output".into()))?
        .name;
    let output = *values
        .get(out_name)
        .ok_or_else(|| Error::Onnx(format!("graph output '{out_name}' is never computed")))?;
    let mut graph = Graph {
        name: name.to_string(),
        input_shape,
        num_values,
        nodes,
        output,
    };
    // Validated (limits, no zero-sized layer) before folding divides by channel counts.
    graph.infer_shapes()?;
    graph.fold_batchnorm();
    graph.check_recognizer()?;
    Ok(graph)
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.iter().map(|&x| x as i64).collect(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn float_tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Writes a float graph as ONNX (opset 11) in the layout InsightFace's `torch2onnx.py` produces:
/// Conv with weight/bias initializers, BatchNormalization with running statistics, PRelu with
/// `[C,1,1]` slopes, Add, Flatten, and Gemm with `transB=1`. Quantized layers are written
/// dequantized.
pub fn export_bytes(graph: &Graph) -> Result<Vec<u8>, Error> {
    let shapes = graph.infer_shapes()?;
    let vname = |v: ValueId| {
        if v == 0 {
            "input.1".to_string()
        } else {
            format!("v{v}")
        }
    };
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for n in &graph.nodes {
        let nm = &n.name;
        let mut inputs: Vec<String> = n.inputs.iter().map(|&v| vname(v)).collect();
        let mut attribute = Vec::new();
        let op_type = match &n.op {
            Op::Conv {
                weights,
                bias,
                attrs,
                ..
            } => {
                let w = weights.to_float();
                inits.push(float_tensor(&format!("{nm}.weight"), &w.shape, &w.data));
                inits.push(float_tensor(&format!("{nm}.bias"), &[bias.len()], bias));
                inputs.extend([format!("{nm}.weight"), format!("{nm}.bias")]);
                attribute.extend([
                    attr_ints("dilations", &attrs.dilation),
                    AttributeProto {
                        name: "group".into(),
                        i: attrs.group as i64,
                        r#type: ATTR_INT,
                        ..Default::default()
                    },
                    attr_ints("kernel_shape", &w.shape[2..]),
                    attr_ints("pads", &attrs.pads),
                    attr_ints("strides", &attrs.stride),
                ]);
                "Conv"
            }
            Op::Gemm { weights, bias, .. } => {
                let w = weights.to_float();
                inits.push(float_tensor(&format!("{nm}.weight"), &w.shape, &w.data));
                inits.push(float_tensor(&format!("{nm}.bias"), &[bias.len()], bias));
                inputs.extend([format!("{nm}.weight"), format!("{nm}.bias")]);
                attribute.push(AttributeProto {
                    name: "transB".into(),
                    i: 1,
                    r#type: ATTR_INT,
                    ..Default::default()
                });
                "Gemm"
            }
            Op::Affine { scale, shift } => {
                // Running statistics chosen so that BN reproduces the affine exactly: mean 0, var 1, eps 0.
                let c = scale.len();
                for (suffix, data) in [
                    ("weight", scale.clone()),
                    ("bias", shift.clone()),
                    ("running_mean", vec![0.0; c]),
                    ("running_var", vec![1.0; c]),
                ] {
                    inits.push(float_tensor(&format!("{nm}.{suffix}"), &[c], &data));
                    inputs.push(format!("{nm}.{suffix}"));
                }
                attribute.push(AttributeProto {
                    name: "epsilon".into(),
                    f: 0.0,
                    r#type: ATTR_FLOAT,
                    ..Default::default()
                });
                "BatchNormalization"
            }
            Op::PRelu { slope } => {
                let shape = if slope.len() == 1 {
                    vec![1]
                } else {
                    vec![slope.len(), 1, 1]
                };
                inits.push(float_tensor(&format!("{nm}.slope"), &shape, slope));
                inputs.push(format!("{nm}.slope"));
                "PRelu"
            }
            Op::Relu => "Relu",
            Op::Add => "Add",
            Op::Flatten => {
                attribute.push(AttributeProto {
                    name: "axis".into(),
                    i: 1,
                    r#type: ATTR_INT,
                    ..Default::default()
                });
                "Flatten"
            }
            Op::Upsample { factor } => {
                // Opset 11 Resize: X, roi (unused, empty), scales.
                let f = *factor as f32;
                inits.push(float_tensor(&format!("{nm}.roi"), &[0], &[]));
                inits.push(float_tensor(
                    &format!("{nm}.scales"),
                    &[4],
                    &[1.0, 1.0, f, f],
                ));
                inputs.push(format!("{nm}.roi"));
                inputs.push(format!("{nm}.scales"));
                for (name, value) in [
                    ("mode", "nearest"),
                    ("coordinate_transformation_mode", "asymmetric"),
                    ("nearest_mode", "floor"),
                ] {
                    attribute.push(AttributeProto {
                        name: name.into(),
                        s: value.as_bytes().to_vec(),
                        r#type: ATTR_STRING,
                        ..Default::default()
                    });
                }
                "Resize"
            }
        };
        nodes.push(NodeProto {
            input: inputs,
            output: vec![vname(n.output)],
            name: nm.clone(),
            op_type: op_type.into(),
            attribute,
            domain: String::new(),
        });
    }
    let value_info = |name: String, dims: Vec<Dimension>| ValueInfoProto {
        name,
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    };
    let batch = Dimension {
        dim_value: None,
        dim_param: Some("None".into()),
    };
    let fixed = |d: usize| Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    };
    let mut in_dims = vec![batch.clone()];
    in_dims.extend(graph.input_shape.iter().map(|&d| fixed(d)));
    let mut out_dims = vec![batch];
    out_dims.extend(shapes[graph.output].iter().map(|&d| fixed(d)));
    let model = ModelProto {
        ir_version: 6,
        producer_name: "efquantface".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 11,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: graph.name.clone(),
            initializer: inits,
            input: vec![value_info(vname(0), in_dims)],
            output: vec![value_info(vname(graph.output), out_dims)],
        }),
    };
    Ok(model.encode_to_vec())
}
