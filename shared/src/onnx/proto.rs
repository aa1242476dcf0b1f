//! The subset of `onnx.proto` that face-recognition CNNs use, declared with `prost` (field
//! numbers follow onnx.proto3 exactly), and the decoding of constant tensors.

use crate::Error;
use crate::graph::Tensor;
use prost::Message;

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

pub(crate) const FLOAT: i32 = 1;
pub(crate) const INT32: i32 = 6;
pub(crate) const INT64: i32 = 7;
pub(crate) const BOOL: i32 = 9;
pub(crate) const DOUBLE: i32 = 11;
pub(crate) const ATTR_FLOAT: i32 = 1;
pub(crate) const ATTR_INT: i32 = 2;
pub(crate) const ATTR_STRING: i32 = 3;
pub(crate) const ATTR_TENSOR: i32 = 4;
pub(crate) const ATTR_FLOATS: i32 = 6;
pub(crate) const ATTR_INTS: i32 = 7;

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
        BOOL => {
            if !t.raw_data.is_empty() {
                raw_len(1)?;
                Ok(Constant::I64(
                    t.raw_data.iter().map(|&b| b as i64).collect(),
                ))
            } else {
                Ok(Constant::I64(
                    t.int32_data.iter().map(|&v| v as i64).collect(),
                ))
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

impl<'a> Attrs<'a> {
    pub(crate) fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    pub(crate) fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

// Builders, for the exporter and for tests that write the layouts other exporters produce.

impl AttributeProto {
    pub fn int(name: &str, v: i64) -> Self {
        AttributeProto {
            name: name.into(),
            i: v,
            r#type: ATTR_INT,
            ..Default::default()
        }
    }
    pub fn float(name: &str, v: f32) -> Self {
        AttributeProto {
            name: name.into(),
            f: v,
            r#type: ATTR_FLOAT,
            ..Default::default()
        }
    }
    pub fn ints(name: &str, v: &[i64]) -> Self {
        AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            r#type: ATTR_INTS,
            ..Default::default()
        }
    }
    pub fn floats(name: &str, v: &[f32]) -> Self {
        AttributeProto {
            name: name.into(),
            floats: v.to_vec(),
            r#type: ATTR_FLOATS,
            ..Default::default()
        }
    }
    pub fn string(name: &str, v: &str) -> Self {
        AttributeProto {
            name: name.into(),
            s: v.as_bytes().to_vec(),
            r#type: ATTR_STRING,
            ..Default::default()
        }
    }
    pub fn tensor(name: &str, t: TensorProto) -> Self {
        AttributeProto {
            name: name.into(),
            t: Some(t),
            r#type: ATTR_TENSOR,
            ..Default::default()
        }
    }
}

impl TensorProto {
    /// A float tensor stored as little-endian `raw_data`, as PyTorch writes initializers.
    pub fn float(name: &str, shape: &[usize], data: &[f32]) -> Self {
        TensorProto {
            name: name.into(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }
    pub fn int64(name: &str, shape: &[usize], data: &[i64]) -> Self {
        TensorProto {
            name: name.into(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: INT64,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }
    pub fn bool(name: &str, shape: &[usize], data: &[bool]) -> Self {
        TensorProto {
            name: name.into(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: BOOL,
            raw_data: data.iter().map(|&b| b as u8).collect(),
            ..Default::default()
        }
    }
}

impl NodeProto {
    /// A node of the default (`ai.onnx`) domain; an empty input name is an omitted optional one.
    pub fn new(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: name.into(),
            op_type: op_type.into(),
            attribute: Vec::new(),
            domain: String::new(),
        }
    }
    pub fn with(mut self, attribute: AttributeProto) -> Self {
        self.attribute.push(attribute);
        self
    }
}

impl Dimension {
    pub fn value(d: i64) -> Self {
        Dimension {
            dim_value: Some(d),
            dim_param: None,
        }
    }
    pub fn param(name: &str) -> Self {
        Dimension {
            dim_value: None,
            dim_param: Some(name.into()),
        }
    }
}

impl ValueInfoProto {
    /// A float tensor value; `dims` `None` declares no shape at all.
    pub fn float(name: &str, dims: Option<Vec<Dimension>>) -> Self {
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: FLOAT,
                    shape: dims.map(|dim| TensorShapeProto { dim }),
                }),
            }),
        }
    }
}
