//! Reading an SCRFD ONNX file into a [`Scrfd`]: a float graph cut at the nine head
//! convolutions, the `Resize` size chains traced symbolically (see the module above).

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use super::{Head, HeadKind, Scrfd};
use crate::Error;
use crate::graph::{GraphBuilder, Op, Weights};
use crate::onnx::{Attrs, Constant, ModelProto, check_nearest_resize, conv_attrs, decode_tensor};

/// What a name in the ONNX file stands for while importing.
#[derive(Clone, Debug)]
enum Sym {
    /// A computed NCHW tensor.
    Value(usize),
    /// `Transpose(0,2,3,1)` of a value.
    Nhwc(usize),
    /// A `Reshape` of an NHWC value (the layout does not change).
    Flat(usize),
    /// A sigmoid of a flattened value.
    Sigmoid(usize),
    /// Shape data computed from tensors' shapes.
    Shape(Vec<Dim>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dim {
    Of(usize, usize),
    Const(i64),
}

impl Scrfd {
    /// Reads an SCRFD ONNX file for a fixed `input_size` (`[H, W]`, multiples of 32).
    pub fn import_file(path: impl AsRef<Path>, input_size: [usize; 2]) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::import_bytes(&bytes, &name, input_size).map_err(|e| match e {
            Error::Onnx(m) => Error::Onnx(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses SCRFD ONNX bytes; see the module documentation for what is kept.
    pub fn import_bytes(bytes: &[u8], name: &str, input_size: [usize; 2]) -> Result<Self, Error> {
        if input_size.iter().any(|&s| s == 0 || !s.is_multiple_of(32)) {
            return Err(Error::Input(format!(
                "detector input size {input_size:?} must be positive multiples of 32"
            )));
        }
        let model = ModelProto::decode(bytes)
            .map_err(|e| Error::Onnx(format!("not a valid ONNX protobuf: {e}")))?;
        let g = model
            .graph
            .ok_or_else(|| Error::Onnx("model has no graph".into()))?;
        let mut consts: HashMap<String, Constant> = HashMap::new();
        for t in &g.initializer {
            consts.insert(t.name.clone(), decode_tensor(t)?);
        }
        let data_inputs: Vec<_> = g
            .input
            .iter()
            .filter(|i| !consts.contains_key(&i.name))
            .collect();
        let [input] = data_inputs.as_slice() else {
            return Err(Error::Onnx(format!(
                "a detector has one image input, this graph has {}",
                data_inputs.len()
            )));
        };
        let mut syms: HashMap<String, Sym> = HashMap::new();
        syms.insert(input.name.clone(), Sym::Value(0));
        let mut b = GraphBuilder::new(name, [3, input_size[0], input_size[1]]);
        for (idx, n) in g.node.iter().enumerate() {
            let node_name = if n.name.is_empty() {
                format!("{}_{idx}", n.op_type)
            } else {
                n.name.clone()
            };
            let err = |m: String| Error::Onnx(format!("node '{node_name}' ({}): {m}", n.op_type));
            let a = Attrs(n);
            let out_name = n
                .output
                .first()
                .cloned()
                .ok_or_else(|| err("node has no output".into()))?;
            let sym = |i: usize| -> Result<Sym, Error> {
                let nm = n
                    .input
                    .get(i)
                    .ok_or_else(|| err(format!("missing input {i}")))?;
                if let Some(s) = syms.get(nm) {
                    return Ok(s.clone());
                }
                match consts.get(nm) {
                    Some(Constant::I64(v)) => {
                        Ok(Sym::Shape(v.iter().map(|&d| Dim::Const(d)).collect()))
                    }
                    Some(Constant::F32(_)) => Err(err(format!("input '{nm}' is a float constant"))),
                    None => Err(err(format!("input '{nm}' is never computed"))),
                }
            };
            let value = |i: usize| -> Result<usize, Error> {
                match sym(i)? {
                    Sym::Value(v) => Ok(v),
                    other => Err(err(format!(
                        "input {i} must be an NCHW tensor, is {other:?}"
                    ))),
                }
            };
            let shape = |i: usize| -> Result<Vec<Dim>, Error> {
                match sym(i)? {
                    Sym::Shape(d) => Ok(d),
                    other => Err(err(format!("input {i} must be shape data, is {other:?}"))),
                }
            };
            let consts_i64 = |i: usize| -> Result<Vec<i64>, Error> {
                shape(i)?
                    .into_iter()
                    .map(|d| match d {
                        Dim::Const(c) => Ok(c),
                        Dim::Of(..) => Err(err(format!("input {i} must be constant"))),
                    })
                    .collect()
            };
            let push = |b: &mut GraphBuilder, op: Op, inputs: Vec<usize>| {
                Sym::Value(b.push(node_name.clone(), op, &inputs))
            };
            let result = match n.op_type.as_str() {
                "Conv" => {
                    let x = value(0)?;
                    let w = match n.input.get(1).and_then(|i| consts.get(i)) {
                        Some(Constant::F32(t)) if t.shape.len() == 4 => t.clone(),
                        _ => return Err(err("weights must be a 4-D float initializer".into())),
                    };
                    let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                        Some(b) => match consts.get(b) {
                            Some(Constant::F32(t)) if t.numel() == w.shape[0] => t.data.clone(),
                            _ => return Err(err("bias must be a float initializer".into())),
                        },
                        None => vec![0.0; w.shape[0]],
                    };
                    let attrs = conv_attrs(&a, &err)?;
                    push(
                        &mut b,
                        Op::Conv {
                            weights: Weights::Float(w),
                            bias,
                            attrs,
                            input_quant: None,
                        },
                        vec![x],
                    )
                }
                "Relu" => {
                    let x = value(0)?;
                    push(&mut b, Op::Relu, vec![x])
                }
                "Add" => {
                    let (x, y) = (value(0)?, value(1)?);
                    push(&mut b, Op::Add, vec![x, y])
                }
                "Resize" => {
                    check_nearest_resize(&a, &err)?;
                    let x = value(0)?;
                    let sizes = if n.input.get(3).is_some_and(|s| !s.is_empty()) {
                        shape(3)?
                    } else {
                        return Err(err(
                            "only Resize to the size of another tensor (a `sizes` input) is \
                             supported"
                                .into(),
                        ));
                    };
                    match sizes.as_slice() {
                        [
                            Dim::Of(a0, 0),
                            Dim::Of(a1, 1),
                            Dim::Of(t, 2),
                            Dim::Of(t2, 3),
                        ] if *a0 == x && *a1 == x && t == t2 => {
                            let shapes = b.shapes()?;
                            let (xs, ts) = (&shapes[x], &shapes[*t]);
                            let factor = ts[1] / xs[1].max(1);
                            if factor == 0 || ts[1] != xs[1] * factor || ts[2] != xs[2] * factor {
                                return Err(err(format!(
                                    "Resize from {xs:?} to the size of {ts:?} is not a whole \
                                     upsampling factor"
                                )));
                            }
                            push(&mut b, Op::Upsample { factor }, vec![x])
                        }
                        other => {
                            return Err(err(format!(
                                "Resize sizes {other:?} are not (N, C of the input, H, W of \
                                 one tensor)"
                            )));
                        }
                    }
                }
                "Shape" => {
                    let v = value(0)?;
                    Sym::Shape((0..4).map(|k| Dim::Of(v, k)).collect())
                }
                "Gather" => {
                    let d = shape(0)?;
                    let idx = consts_i64(1)?;
                    if a.int("axis", 0) != 0 || idx.len() != 1 {
                        return Err(err("only a scalar Gather on axis 0 is supported".into()));
                    }
                    let k = idx[0];
                    let k = if k < 0 { k + d.len() as i64 } else { k };
                    let dim = usize::try_from(k)
                        .ok()
                        .and_then(|k| d.get(k).copied())
                        .ok_or_else(|| err(format!("index {} out of range", idx[0])))?;
                    Sym::Shape(vec![dim])
                }
                "Unsqueeze" | "Cast" => Sym::Shape(shape(0)?),
                "Concat" => {
                    let mut all = Vec::new();
                    for i in 0..n.input.len() {
                        all.extend(shape(i)?);
                    }
                    Sym::Shape(all)
                }
                "Slice" => {
                    let d = shape(0)?;
                    let (starts, ends) = (consts_i64(1)?, consts_i64(2)?);
                    if starts.len() != 1 || ends.len() != 1 {
                        return Err(err("only 1-D Slice of shape data is supported".into()));
                    }
                    if n.input.len() > 4 && consts_i64(4)? != [1] {
                        return Err(err("only step 1 is supported".into()));
                    }
                    let len = d.len() as i64;
                    let clamp = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len) as usize;
                    let (s, e) = (clamp(starts[0]), clamp(ends[0]));
                    Sym::Shape(d[s..e.max(s)].to_vec())
                }
                "Constant" => {
                    let t = a
                        .get("value")
                        .and_then(|v| v.t.as_ref())
                        .ok_or_else(|| err("Constant without a tensor value".into()))?;
                    consts.insert(out_name, decode_tensor(t)?);
                    continue;
                }
                "Transpose" => {
                    let v = value(0)?;
                    if a.ints("perm") != Some(&[0, 2, 3, 1][..]) {
                        return Err(err("only Transpose(0,2,3,1) (to NHWC) is supported".into()));
                    }
                    Sym::Nhwc(v)
                }
                "Reshape" => match sym(0)? {
                    Sym::Nhwc(v) => Sym::Flat(v),
                    other => {
                        return Err(err(format!(
                            "only a Reshape of an NHWC head output is supported, not {other:?}"
                        )));
                    }
                },
                "Sigmoid" => match sym(0)? {
                    Sym::Flat(v) => Sym::Sigmoid(v),
                    other => {
                        return Err(err(format!(
                            "only a Sigmoid of a head output is supported, not {other:?}"
                        )));
                    }
                },
                other => {
                    return Err(Error::UnsupportedOp {
                        op: other.to_string(),
                        node: node_name,
                    });
                }
            };
            syms.insert(out_name, result);
        }

        let mut outs = Vec::new();
        for o in &g.output {
            match syms.get(&o.name) {
                Some(Sym::Flat(v)) => outs.push((o.name.clone(), *v, false)),
                Some(Sym::Sigmoid(v)) => outs.push((o.name.clone(), *v, true)),
                other => {
                    return Err(Error::Onnx(format!(
                        "output '{}' is not a head (NHWC reshape of a convolution): {other:?}",
                        o.name
                    )));
                }
            }
        }
        let last = outs
            .last()
            .map(|o| o.1)
            .ok_or_else(|| Error::Onnx("the detector has no outputs".into()))?;
        let graph = b.finish(last)?;
        let shapes = graph.infer_shapes()?;
        let mut det = Scrfd {
            name: name.to_string(),
            input_size,
            num_anchors: 0,
            heads: Vec::new(),
            graph,
            shapes,
        };
        // The score head of a stride has A channels, its box head 4·A, its keypoint head 10·A.
        let mut by_stride: Vec<(usize, Vec<usize>)> = Vec::new();
        for (k, (oname, v, _)) in outs.iter().enumerate() {
            let &[_, h, w] = det.shapes[*v].as_slice() else {
                return Err(Error::Onnx(format!("output '{oname}' is not [C, H, W]")));
            };
            let stride = input_size[0] / h;
            if h * stride != input_size[0] || w * stride != input_size[1] {
                return Err(Error::Onnx(format!(
                    "output '{oname}' of {h}×{w} is not a whole stride of the input {input_size:?}"
                )));
            }
            match by_stride.iter_mut().find(|(s, _)| *s == stride) {
                Some((_, ks)) => ks.push(k),
                None => by_stride.push((stride, vec![k])),
            }
        }
        let mut heads: Vec<Option<Head>> = vec![None; outs.len()];
        for (stride, ks) in &by_stride {
            let a = ks
                .iter()
                .map(|&k| det.shapes[outs[k].1][0])
                .min()
                .unwrap_or(0);
            let mut seen = [false; 3];
            for &k in ks {
                let (oname, v, sigmoid) = &outs[k];
                let c = det.shapes[*v][0];
                let kind = [HeadKind::Score, HeadKind::BBox, HeadKind::Keypoints]
                    .into_iter()
                    .find(|kd| c == kd.width() * a)
                    .ok_or_else(|| {
                        Error::Onnx(format!(
                            "output '{oname}' has {c} channels, not 1, 4 or 10 per anchor ({a})"
                        ))
                    })?;
                if *sigmoid != (kind == HeadKind::Score) {
                    return Err(Error::Onnx(format!(
                        "output '{oname}': only score heads end in a sigmoid"
                    )));
                }
                let slot = kind as usize;
                if seen[slot] {
                    return Err(Error::Onnx(format!(
                        "stride {stride} has two {kind:?} heads"
                    )));
                }
                seen[slot] = true;
                heads[k] = Some(Head {
                    kind,
                    stride: *stride,
                    name: oname.clone(),
                    value: *v,
                });
            }
            if seen != [true; 3] {
                return Err(Error::Onnx(format!(
                    "stride {stride} lacks a score, box or keypoint head"
                )));
            }
            if det.num_anchors != 0 && det.num_anchors != a {
                return Err(Error::Onnx("strides differ in anchors per location".into()));
            }
            det.num_anchors = a;
        }
        det.heads = heads
            .into_iter()
            .map(|h| h.expect("every output classified"))
            .collect();
        if det.heads.is_empty() {
            return Err(Error::Onnx("the detector has no outputs".into()));
        }
        Ok(det)
    }
}
