//! [`Graph`] → ONNX in InsightFace's `torch2onnx.py` layout, so that tests can generate files.

use prost::Message;

use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use crate::Error;
use crate::graph::{Graph, Op, ValueId};

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    AttributeProto::ints(name, &v)
}

/// Writes a float graph as ONNX (opset 11) in the layout InsightFace's `torch2onnx.py` produces:
/// Conv with weight/bias initializers, BatchNormalization with running statistics, PRelu with
/// `[C,1,1]` slopes, Add, Flatten, and Gemm with `transB=1`. Quantized layers are written
/// dequantized. The input is `input.1`, `[None, C, H, W]` with a symbolic batch.
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
        let mut param = |suffix: &str, shape: &[usize], data: &[f32]| {
            let name = format!("{nm}.{suffix}");
            inits.push(TensorProto::float(&name, shape, data));
            inputs.push(name);
        };
        let op_type = match &n.op {
            Op::Conv {
                weights,
                bias,
                attrs,
                ..
            } => {
                let w = weights.to_float();
                param("weight", &w.shape, &w.data);
                param("bias", &[bias.len()], bias);
                attribute.extend([
                    attr_ints("dilations", &attrs.dilation),
                    AttributeProto::int("group", attrs.group as i64),
                    attr_ints("kernel_shape", &w.shape[2..]),
                    attr_ints("pads", &attrs.pads),
                    attr_ints("strides", &attrs.stride),
                ]);
                "Conv"
            }
            Op::Gemm { weights, bias, .. } => {
                let w = weights.to_float();
                param("weight", &w.shape, &w.data);
                param("bias", &[bias.len()], bias);
                attribute.push(AttributeProto::int("transB", 1));
                "Gemm"
            }
            Op::Affine { scale, shift } => {
                // Running statistics chosen so that BN reproduces the affine exactly: mean 0, var 1, eps 0.
                let c = scale.len();
                param("weight", &[c], scale);
                param("bias", &[c], shift);
                param("running_mean", &[c], &vec![0.0; c]);
                param("running_var", &[c], &vec![1.0; c]);
                attribute.push(AttributeProto::float("epsilon", 0.0));
                "BatchNormalization"
            }
            Op::PRelu { slope } => {
                let shape = if slope.len() == 1 {
                    vec![1]
                } else {
                    vec![slope.len(), 1, 1]
                };
                param("slope", &shape, slope);
                "PRelu"
            }
            Op::Relu => "Relu",
            Op::Add => "Add",
            Op::Flatten => {
                attribute.push(AttributeProto::int("axis", 1));
                "Flatten"
            }
            Op::Upsample { factor } => {
                // Opset 11 Resize: X, roi (unused, empty), scales.
                let f = *factor as f32;
                param("roi", &[0], &[]);
                param("scales", &[4], &[1.0, 1.0, f, f]);
                for (name, value) in [
                    ("mode", "nearest"),
                    ("coordinate_transformation_mode", "asymmetric"),
                    ("nearest_mode", "floor"),
                ] {
                    attribute.push(AttributeProto::string(name, value));
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
    let batch = Dimension::param("None");
    let fixed = |d: usize| Dimension::value(d as i64);
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
            input: vec![ValueInfoProto::float(&vname(0), Some(in_dims))],
            output: vec![ValueInfoProto::float(&vname(graph.output), Some(out_dims))],
        }),
    };
    Ok(model.encode_to_vec())
}
