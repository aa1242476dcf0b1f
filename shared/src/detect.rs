//! Face detection with InsightFace's SCRFD (`scrfd_500m_bnkps.onnx`): ONNX import, the forward
//! pass on the CPU backend, letterbox preprocessing, anchor decoding, NMS and the rule that picks
//! one face per photo. [`crate::align`] turns the picked face's five keypoints into a 112×112
//! ArcFace crop.
//!
//! # The detector is a [`Graph`] with several outputs
//!
//! The importer builds an ordinary float [`Graph`] (Conv / Relu / Add / Upsample) **cut at the
//! nine head convolutions**, plus one [`Head`] record per head (kind, stride, value). Everything
//! after the head convolutions in the ONNX file is layout plumbing (`Transpose(0,2,3,1)` +
//! `Reshape` to `[N, H·W·A, k]`, and a `Sigmoid` on the score heads) that
//! [`Scrfd::heads_from_nchw`] applies; the `Shape/Gather/Unsqueeze/Concat/Slice/Cast` chains that
//! feed `Resize` its target size are traced symbolically at import and become an
//! [`Op::Upsample`] by the whole factor between the two tensors. Because it is a `Graph`, the
//! CPU backend (`cpu::forward_values`) and the wgpu engine
//! (`GpuModel::from_graph_with_outputs`) both run it, reading the nine head values back.
//!
//! The input size is fixed at import (default 640×640, InsightFace's `det_size`): it fixes the
//! head strides and the anchor grid, and must be a multiple of 32.
//!
//! # Decoding, exactly as InsightFace's `model_zoo/scrfd.py`
//!
//! - letterbox: resize keeping the aspect ratio into the top-left of a `size × size` canvas,
//!   zero padding, input `(p − 127.5) / 128`, RGB;
//! - anchors: `A` per location (2 here), centre `(x·s, y·s)` for stride `s`;
//! - box `(cx − l·s, cy − t·s, cx + r·s, cy + b·s)`, keypoint `i` `(cx + dx_i·s, cy + dy_i·s)`,
//!   divided by the letterbox scale;
//! - keep scores `≥ threshold` (0.5), sort by score, greedy NMS at IoU 0.4 with InsightFace's
//!   `+1` pixel areas.
//!
//! # One face per photo
//!
//! [`pick_central`] keeps the detection whose box centre is nearest the image centre. Photos
//! of a person (LFW and most identity collections) are framed on the subject; the largest or
//! most confident face is often a bystander in front of the camera. It is also the rule that
//! produced `aligned112` (see the data README), so re-aligned crops are comparable to it.

use std::collections::HashMap;
use std::path::Path;

use image::RgbImage;
use prost::Message;
use rayon::prelude::*;

use crate::Error;
use crate::graph::{Graph, GraphBuilder, Op, SampleShape, ValueId, Weights};
use crate::onnx::{Attrs, Constant, ModelProto, check_nearest_resize, conv_attrs, decode_tensor};

/// What a head predicts per anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// One face probability (after the sigmoid).
    Score,
    /// Distances `(l, t, r, b)` from the anchor centre, in strides.
    BBox,
    /// Five keypoint offsets `(dx, dy)` from the anchor centre, in strides.
    Keypoints,
}

impl HeadKind {
    /// Values per anchor.
    pub fn width(self) -> usize {
        match self {
            HeadKind::Score => 1,
            HeadKind::BBox => 4,
            HeadKind::Keypoints => 10,
        }
    }
}

/// One of the detector's outputs: the head convolution that computes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub kind: HeadKind,
    pub stride: usize,
    /// The ONNX output name (`score_8`, `bbox_16`, …).
    pub name: String,
    /// The head convolution's value.
    pub value: usize,
}

/// An SCRFD detector imported from ONNX, cut at its head convolutions.
#[derive(Clone, Debug)]
pub struct Scrfd {
    pub name: String,
    /// `[H, W]` of the network input.
    pub input_size: [usize; 2],
    /// Anchors per location.
    pub num_anchors: usize,
    /// Heads in the ONNX output order (InsightFace's: scores, boxes, keypoints, each by stride).
    pub heads: Vec<Head>,
    /// The network up to the head convolutions, at `input_size`.
    pub graph: Graph,
    /// `[C, H, W]` of every value of `graph`.
    shapes: Vec<SampleShape>,
}

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

    /// The graph values of the heads, in head order.
    pub fn head_values(&self) -> Vec<ValueId> {
        self.heads.iter().map(|h| h.value).collect()
    }

    /// Runs the network on one normalised CHW image of `input_size` on the CPU backend;
    /// returns every head's output as [`Scrfd::heads_from_nchw`] lays it out.
    pub fn forward(&self, chw: &[f32]) -> Result<Vec<Vec<f32>>, Error> {
        let [h, w] = self.input_size;
        if chw.len() != 3 * h * w {
            return Err(Error::Input(format!(
                "the detector expects a 3×{h}×{w} image ({} values), got {}",
                3 * h * w,
                chw.len()
            )));
        }
        let values = crate::cpu::forward_values(&self.graph, chw, 1, &self.head_values())?;
        Ok(self.heads_from_nchw(&values))
    }

    /// Runs the network on `n` normalised NCHW images of `input_size` at once on the CPU
    /// backend; returns each image's head values (NCHW, as [`Scrfd::detect_from_heads`]
    /// takes them).
    pub fn forward_batch(&self, nchw: &[f32], n: usize) -> Result<Vec<Vec<Vec<f32>>>, Error> {
        let [h, w] = self.input_size;
        if n == 0 || nchw.len() != n * 3 * h * w {
            return Err(Error::Input(format!(
                "the detector expects {n} 3×{h}×{w} images ({} values), got {}",
                n * 3 * h * w,
                nchw.len()
            )));
        }
        let values = crate::cpu::forward_values(&self.graph, nchw, n, &self.head_values())?;
        Ok(split_batch(&values, n))
    }

    /// The heads' NCHW values of one image (as `cpu::forward_values` or the engine return
    /// them) in ONNX output layout: `[H·W·A, k]` row-major (NHWC order), sigmoid on the scores.
    pub fn heads_from_nchw(&self, values: &[Vec<f32>]) -> Vec<Vec<f32>> {
        self.heads
            .iter()
            .zip(values)
            .map(|(hd, x)| {
                let s = &self.shapes[hd.value];
                let (c, p) = (s[0], s[1] * s[2]);
                let mut out = vec![0f32; c * p];
                for ch in 0..c {
                    for i in 0..p {
                        out[i * c + ch] = x[ch * p + i];
                    }
                }
                if hd.kind == HeadKind::Score {
                    out.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
                }
                out
            })
            .collect()
    }

    /// Decodes head outputs (as [`Scrfd::forward`] returns them) into detections in network
    /// input pixels divided by `det_scale` (original image pixels for a letterboxed input),
    /// before NMS, in head order.
    pub fn decode(
        &self,
        outs: &[Vec<f32>],
        det_scale: f32,
        score_threshold: f32,
    ) -> Vec<Detection> {
        let a = self.num_anchors;
        let mut dets = Vec::new();
        let find = |kind: HeadKind, stride: usize| {
            self.heads
                .iter()
                .position(|h| h.kind == kind && h.stride == stride)
                .expect("every stride has all three heads (checked at import)")
        };
        for (si, hd) in self.heads.iter().enumerate() {
            if hd.kind != HeadKind::Score {
                continue;
            }
            let s = hd.stride;
            let (scores, boxes, kps) = (
                &outs[si],
                &outs[find(HeadKind::BBox, s)],
                &outs[find(HeadKind::Keypoints, s)],
            );
            let width = self.input_size[1] / s;
            let sf = s as f32;
            for (i, &score) in scores.iter().enumerate() {
                if score < score_threshold {
                    continue;
                }
                let loc = i / a;
                let (cx, cy) = (((loc % width) * s) as f32, ((loc / width) * s) as f32);
                let d = &boxes[i * 4..][..4];
                let bbox = [
                    (cx - d[0] * sf) / det_scale,
                    (cy - d[1] * sf) / det_scale,
                    (cx + d[2] * sf) / det_scale,
                    (cy + d[3] * sf) / det_scale,
                ];
                let k = &kps[i * 10..][..10];
                let kps = std::array::from_fn(|j| {
                    [
                        (cx + k[2 * j] * sf) / det_scale,
                        (cy + k[2 * j + 1] * sf) / det_scale,
                    ]
                });
                dets.push(Detection { bbox, score, kps });
            }
        }
        dets
    }

    /// Detects faces in a letterboxed `input_size` image (see [`letterbox`]): forward, decode,
    /// sort by score, NMS. Coordinates are in the original photo (`/ det_scale`).
    pub fn detect_letterboxed(
        &self,
        canvas: &RgbImage,
        det_scale: f32,
        cfg: &DetectConfig,
    ) -> Result<Vec<Detection>, Error> {
        let outs = self.forward(&normalize(canvas))?;
        let dets = self.decode(&outs, det_scale, cfg.score_threshold);
        Ok(nms(dets, cfg.nms_iou))
    }

    /// Detections from the heads' NCHW values of one letterboxed image, computed elsewhere
    /// (the wgpu engine): layout, decode, NMS, as [`Scrfd::detect_letterboxed`].
    pub fn detect_from_heads(
        &self,
        values: &[Vec<f32>],
        det_scale: f32,
        cfg: &DetectConfig,
    ) -> Result<Vec<Detection>, Error> {
        let expected: Vec<usize> = self
            .heads
            .iter()
            .map(|h| self.shapes[h.value].iter().product())
            .collect();
        let got: Vec<usize> = values.iter().map(Vec::len).collect();
        if got != expected {
            return Err(Error::Input(format!(
                "head values of sizes {got:?}, the detector's heads have {expected:?}"
            )));
        }
        let outs = self.heads_from_nchw(values);
        Ok(nms(
            self.decode(&outs, det_scale, cfg.score_threshold),
            cfg.nms_iou,
        ))
    }

    /// Detects faces in a photo: letterbox to the input size, then [`Scrfd::detect_letterboxed`].
    pub fn detect(&self, img: &RgbImage, cfg: &DetectConfig) -> Result<Vec<Detection>, Error> {
        if self.input_size[0] != self.input_size[1] {
            return Err(Error::Input(
                "letterboxing needs a square detector input".into(),
            ));
        }
        let (canvas, scale) = letterbox(img, self.input_size[0]);
        self.detect_letterboxed(&canvas, scale, cfg)
    }
}

/// Per-output values of a batch of `n` images (each output's images one after the other, as
/// `cpu::forward_values` and the engine return them) regrouped per image.
pub fn split_batch(values: &[Vec<f32>], n: usize) -> Vec<Vec<Vec<f32>>> {
    (0..n)
        .map(|i| {
            values
                .iter()
                .map(|v| {
                    let per = v.len() / n;
                    v[i * per..][..per].to_vec()
                })
                .collect()
        })
        .collect()
}

/// One detected face, in original image pixels.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// `x1, y1, x2, y2`.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Left eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image).
    pub kps: [[f32; 2]; 5],
}

/// Thresholds and size of a detection run; the defaults are InsightFace's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectConfig {
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            score_threshold: 0.5,
            nms_iou: 0.4,
        }
    }
}

/// Resizes `img` keeping its aspect ratio into the top-left of a black `size × size` canvas
/// (bilinear with pixel-centre alignment, like OpenCV's `INTER_LINEAR`); returns the canvas and
/// the scale factor `new / old`. InsightFace's sizes: the longer side becomes `size`, the other
/// `int(size · ratio)`.
pub fn letterbox(img: &RgbImage, size: usize) -> (RgbImage, f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let im_ratio = h as f64 / w as f64;
    let (nw, nh) = if im_ratio > 1.0 {
        (((size as f64) / im_ratio) as usize, size)
    } else {
        (size, ((size as f64) * im_ratio) as usize)
    };
    let (nw, nh) = (nw.max(1), nh.max(1));
    let scale = nh as f32 / h as f32;
    // The resized photo is written straight into the canvas's rows.
    let mut canvas = vec![0u8; size * size * 3];
    resize_into(img, nw, nh, &mut canvas[..nh * size * 3], size * 3);
    let canvas = RgbImage::from_raw(size as u32, size as u32, canvas).expect("sized buffer");
    (canvas, scale)
}

/// Bilinear resize with OpenCV's `INTER_LINEAR` sampling (`src = (dst + ½)·in/out − ½`, clamped
/// to the image), rounded to the nearest grey level.
pub fn resize_bilinear(img: &RgbImage, nw: usize, nh: usize) -> RgbImage {
    let mut out = vec![0u8; nw * nh * 3];
    resize_into(img, nw, nh, &mut out, nw * 3);
    RgbImage::from_raw(nw as u32, nh as u32, out).expect("sized buffer")
}

/// [`resize_bilinear`] into the first `nw · 3` bytes of each `stride`-byte row of `out`.
///
/// Half-pixel-centre bilinear taps of each of `n_out` outputs over `n_in` inputs: the two
/// source indices and the weight of the second, clamped at the borders.
fn bilinear_taps(n_out: usize, n_in: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let i = f.floor();
            let t = (f - i) as f32;
            let i = i as i64;
            if i < 0 {
                (0, 0, 0.0)
            } else if i as usize >= n_in - 1 {
                (n_in - 1, n_in - 1, 0.0)
            } else {
                (i as usize, i as usize + 1, t)
            }
        })
        .collect()
}

/// Separable, in parallel: each source row that an output row reads is first interpolated
/// along x (`p(y, x0)·(1 − fx) + p(y, x1)·fx`, once per source row instead of once per output
/// row that reads it), then each output row blends its two (`top·(1 − fy) + bot·fy`). Those are
/// the very f32 expressions of the per-pixel definition (`tests::resize_matches_the_per_pixel_definition`),
/// so the result is the same to the bit.
fn resize_into(img: &RgbImage, nw: usize, nh: usize, out: &mut [u8], stride: usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (tx, ty) = (bilinear_taps(nw, w), bilinear_taps(nh, h));
    let src = img.as_raw();
    // Source rows read, and each one's slot among them.
    let mut slot = vec![usize::MAX; h];
    let mut rows = Vec::new();
    for &(y0, y1, _) in &ty {
        for y in [y0, y1] {
            if slot[y] == usize::MAX {
                slot[y] = rows.len();
                rows.push(y);
            }
        }
    }
    let mut across = vec![0f32; rows.len() * nw * 3];
    across
        .par_chunks_mut(nw * 3)
        .zip(&rows)
        .for_each(|(dst, &y)| {
            let row = &src[y * w * 3..][..w * 3];
            for (px, &(x0, x1, fx)) in dst.chunks_exact_mut(3).zip(&tx) {
                for c in 0..3 {
                    let p = |x: usize| row[x * 3 + c] as f32;
                    px[c] = p(x0) * (1.0 - fx) + p(x1) * fx;
                }
            }
        });
    out.par_chunks_mut(stride)
        .zip(&ty)
        .for_each(|(dst, &(y0, y1, fy))| {
            let top = &across[slot[y0] * nw * 3..][..nw * 3];
            let bot = &across[slot[y1] * nw * 3..][..nw * 3];
            for ((d, &t), &b) in dst[..nw * 3].iter_mut().zip(top).zip(bot) {
                *d = round_to_u8(t * (1.0 - fy) + b * fy);
            }
        });
}

/// `v.round().clamp(0.0, 255.0) as u8` (halves away from zero) without a call to `roundf`,
/// which the baseline x86-64 target has no instruction for: `v − trunc(v)` is exact in f32.
#[inline]
fn round_to_u8(v: f32) -> u8 {
    let t = (v as i32) as f32;
    let r = if v - t >= 0.5 { t + 1.0 } else { t };
    r.clamp(0.0, 255.0) as u8
}

/// RGB image → CHW floats `(p − 127.5) / 128`, SCRFD's input normalisation.
pub fn normalize(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    let raw = img.as_raw();
    out.par_chunks_mut(w * h)
        .enumerate()
        .for_each(|(c, plane)| {
            for (v, px) in plane.iter_mut().zip(raw.chunks_exact(3)) {
                *v = (px[c] as f32 - 127.5) / 128.0;
            }
        });
    out
}

/// Intersection over union with InsightFace's `+1` pixel convention (areas `(x2−x1+1)(y2−y1+1)`).
pub fn iou_plus1(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// Plain intersection over union of two `x1, y1, x2, y2` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy non-maximum suppression: sorts by descending score (ties keep their order), keeps a
/// box and drops every later box whose [`iou_plus1`] with it exceeds `iou_threshold`.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::new();
    let mut dropped = vec![false; dets.len()];
    for i in 0..dets.len() {
        if dropped[i] {
            continue;
        }
        keep.push(dets[i]);
        for j in i + 1..dets.len() {
            if !dropped[j] && iou_plus1(&dets[i].bbox, &dets[j].bbox) > iou_threshold {
                dropped[j] = true;
            }
        }
    }
    keep
}

/// The one face to keep in a `width × height` photo: the detection whose box centre is nearest
/// the image centre (ties: the higher score, which comes first after NMS). See the module
/// documentation for why.
pub fn pick_central(dets: &[Detection], width: usize, height: usize) -> Option<&Detection> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let dist = |d: &Detection| {
        let (bx, by) = ((d.bbox[0] + d.bbox[2]) / 2.0, (d.bbox[1] + d.bbox[3]) / 2.0);
        (bx - cx).powi(2) + (by - cy).powi(2)
    };
    dets.iter()
        .enumerate()
        .min_by(|(i, a), (j, b)| dist(a).total_cmp(&dist(b)).then(i.cmp(j)))
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], score: f32) -> Detection {
        Detection {
            bbox,
            score,
            kps: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let dets = vec![
            det([0., 0., 9., 9.], 0.8),
            det([1., 1., 10., 10.], 0.9), // IoU with the first (+1 areas): 81/119 = 0.68
            det([20., 20., 29., 29.], 0.7),
            det([0., 0., 9., 19.], 0.6),
            det([100., 100., 109., 109.], 0.95),
        ];
        let kept = nms(dets, 0.4);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        // 0.95 alone; 0.9 suppresses 0.8 (0.68) and 0.6 (IoU 90/210 = 0.43); 0.7 alone.
        assert_eq!(scores, vec![0.95, 0.9, 0.7]);
        // Just below the threshold survives.
        let kept = nms(
            vec![det([0., 0., 9., 9.], 0.9), det([0., 0., 9., 19.], 0.8)],
            0.5,
        );
        assert_eq!(kept.len(), 2, "IoU exactly 0.5 is not above 0.5");
        let kept = nms(
            vec![det([0., 0., 9., 9.], 0.9), det([0., 0., 9., 19.], 0.8)],
            0.49,
        );
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0., 0., 10., 10.], &[5., 0., 15., 10.]), 50.0 / 150.0);
        assert_eq!(iou(&[0., 0., 1., 1.], &[2., 2., 3., 3.]), 0.0);
        assert_eq!(iou_plus1(&[0., 0., 9., 9.], &[0., 0., 9., 9.]), 1.0);
    }

    #[test]
    fn central_face_wins_over_larger_and_more_confident() {
        let dets = vec![
            det([0., 0., 60., 60.], 0.99),
            det([40., 40., 60., 60.], 0.6),
        ];
        let d = pick_central(&dets, 100, 100).unwrap();
        assert_eq!(d.score, 0.6);
        assert!(pick_central(&[], 100, 100).is_none());
    }

    #[test]
    fn letterbox_keeps_aspect_in_the_top_left() {
        let mut img = RgbImage::new(100, 50);
        img.pixels_mut()
            .for_each(|p| *p = image::Rgb([200, 100, 50]));
        let (canvas, scale) = letterbox(&img, 64);
        assert_eq!(scale, 32.0 / 50.0);
        assert_eq!(canvas.get_pixel(63, 31).0, [200, 100, 50]);
        assert_eq!(canvas.get_pixel(0, 32).0, [0, 0, 0]);
        let x = normalize(&canvas);
        assert_eq!(x[0], (200.0 - 127.5) / 128.0);
        assert_eq!(x[64 * 64 * 3 - 1], -127.5 / 128.0);
    }

    /// The per-pixel definition the separable resize must equal to the bit.
    fn resize_per_pixel(img: &RgbImage, nw: usize, nh: usize) -> Vec<u8> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (tx, ty) = (bilinear_taps(nw, w), bilinear_taps(nh, h));
        let src = img.as_raw();
        let mut out = vec![0u8; nw * nh * 3];
        for (oy, &(y0, y1, fy)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, fx)) in tx.iter().enumerate() {
                for c in 0..3 {
                    let p = |y: usize, x: usize| src[(y * w + x) * 3 + c] as f32;
                    let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                    let bot = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                    let v = top * (1.0 - fy) + bot * fy;
                    out[(oy * nw + ox) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn resize_matches_the_per_pixel_definition() {
        let mut seed = 1u32;
        for (w, h, nw, nh) in [
            (250, 250, 640, 640),
            (37, 91, 251, 640),
            (640, 480, 123, 77),
            (5, 3, 5, 3),
            (1, 1, 7, 4),
        ] {
            let data = (0..w * h * 3)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            let img = RgbImage::from_raw(w as u32, h as u32, data).unwrap();
            assert_eq!(
                resize_bilinear(&img, nw, nh).into_raw(),
                resize_per_pixel(&img, nw, nh),
                "{w}×{h} → {nw}×{nh}"
            );
        }
        for v in [
            -0.7f32, -0.5, -0.2, 0.0, 0.49999997, 0.5, 1.5, 2.5, 254.5, 254.49998, 255.4, 300.0,
        ] {
            assert_eq!(round_to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    #[test]
    fn bilinear_resize_matches_opencv_sampling() {
        // 2×1 → 4×1: OpenCV gives src x = (d + ½)/2 − ½ = −¼, ¼, ¾, 1¼ → clamp, ¼, ¾, clamp.
        let img = RgbImage::from_raw(2, 1, vec![0, 0, 0, 100, 100, 100]).unwrap();
        let r = resize_bilinear(&img, 4, 1);
        let row: Vec<u8> = r.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row, vec![0, 25, 75, 100]);
    }
}
