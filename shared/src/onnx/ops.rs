//! Attributes of the ops the importers translate, read the way the model's opset defines them.

use std::collections::HashMap;

use super::proto::{Attrs, Constant, ModelProto, NodeProto, decode_tensor};
use crate::Error;
use crate::graph::{ConvAttrs, Tensor};

/// The oldest and newest `ai.onnx` opsets the recognizer importer reads. Between them, several
/// attributes of the ops it accepts became inputs; the importer reads each where its version has it.
pub const MIN_OPSET: i64 = 9;
pub const MAX_OPSET: i64 = 21;

/// Constants of the graph by value name: initializers and `Constant` nodes' outputs.
pub(crate) type Constants = HashMap<String, Constant>;

/// An error about one node, naming it and its op type.
pub(crate) type NodeErr<'a> = &'a dyn Fn(String) -> Error;

/// The version of the default (`ai.onnx`) operator set a model imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opset(pub i64);

impl Opset {
    /// The model's `ai.onnx` opset, refused outside [`MIN_OPSET`]..=[`MAX_OPSET`].
    pub(crate) fn of(model: &ModelProto) -> Result<Opset, Error> {
        let v = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .ok_or_else(|| Error::Onnx("the model imports no ai.onnx opset".into()))?;
        if !(MIN_OPSET..=MAX_OPSET).contains(&v) {
            return Err(Error::Onnx(format!(
                "the model uses ai.onnx opset {v}; opsets {MIN_OPSET} to {MAX_OPSET} are supported"
            )));
        }
        Ok(Opset(v))
    }

    /// `axes` of a reduction or (un)squeeze: the attribute before opset `input_since`, the
    /// second input from it (ReduceSum and (Un)Squeeze 13, ReduceL2 and ReduceSumSquare 18).
    /// The other form is refused, not guessed at. `None`: no axes given.
    pub(crate) fn axes(
        self,
        n: &NodeProto,
        consts: &Constants,
        input_since: i64,
        err: NodeErr,
    ) -> Result<Option<Vec<i64>>, Error> {
        let v = self.0;
        let input = n.input.get(1).filter(|s| !s.is_empty());
        let attr = Attrs(n).ints("axes").map(<[i64]>::to_vec);
        if v >= input_since {
            if attr.is_some() {
                return Err(err(format!(
                    "at opset {v} axes are an input (since opset {input_since}), not an attribute"
                )));
            }
            input.map(|nm| int_const(consts, nm, err)).transpose()
        } else {
            if input.is_some() {
                return Err(err(format!(
                    "at opset {v} axes are an attribute (an input from opset {input_since})"
                )));
            }
            Ok(attr)
        }
    }

    /// `Clip`'s bounds: attributes `min`/`max` before opset 11, optional inputs from it.
    pub(crate) fn clip_bounds(
        self,
        n: &NodeProto,
        consts: &Constants,
        err: NodeErr,
    ) -> Result<(Option<f32>, Option<f32>), Error> {
        let a = Attrs(n);
        if self.0 < 11 {
            if n.input.len() > 1 {
                return Err(err(format!(
                    "at opset {} Clip's bounds are attributes, not inputs",
                    self.0
                )));
            }
            return Ok((a.get("min").map(|x| x.f), a.get("max").map(|x| x.f)));
        }
        if a.get("min").is_some() || a.get("max").is_some() {
            return Err(err(format!(
                "at opset {} Clip's bounds are inputs (since opset 11), not attributes",
                self.0
            )));
        }
        let bound = |i: usize| -> Result<Option<f32>, Error> {
            match n.input.get(i).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(nm) => scalar_const(consts, nm)
                    .map(Some)
                    .ok_or_else(|| err(format!("bound '{nm}' is not a constant scalar"))),
            }
        };
        Ok((bound(1)?, bound(2)?))
    }

    /// A `Dropout` is the identity at inference, unless a constant `training_mode` input
    /// (opset 12 on; before it the ratio was an attribute and there was no such input) says
    /// true.
    pub(crate) fn check_dropout(
        self,
        n: &NodeProto,
        consts: &Constants,
        err: NodeErr,
    ) -> Result<(), Error> {
        if self.0 < 12 {
            if n.input.len() > 1 {
                return Err(err(format!(
                    "at opset {} Dropout has one input (ratio and training_mode are inputs                      from opset 12)",
                    self.0
                )));
            }
            return Ok(());
        }
        match n.input.get(2).filter(|s| !s.is_empty()) {
            None => Ok(()),
            Some(nm) => match consts.get(nm) {
                Some(Constant::I64(v)) if v.iter().all(|&x| x == 0) => Ok(()),
                Some(Constant::I64(_)) => Err(err(
                    "training_mode is true: the node drops activations at inference".into(),
                )),
                _ => Err(err(format!("training_mode '{nm}' is not a constant"))),
            },
        }
    }

    /// An inference `BatchNormalization`: not in training mode (`training_mode`, from opset 14,
    /// is 0), no running-statistics outputs. Opset 9 removed `spatial`; a file that still says
    /// `spatial=0` (statistics per element) is refused rather than read per channel.
    pub(crate) fn check_batchnorm(self, n: &NodeProto, err: NodeErr) -> Result<(), Error> {
        let a = Attrs(n);
        if a.int("spatial", 1) != 1 {
            return Err(err(
                "spatial=0 (statistics per element, not per channel) is not supported".into(),
            ));
        }
        if self.0 >= 14 && a.int("training_mode", 0) != 0 {
            return Err(err("training_mode=1 is not an inference BatchNorm".into()));
        }
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(err(
                "running-statistics outputs are those of a training-mode BatchNorm".into(),
            ));
        }
        Ok(())
    }

    /// The whole factor of a nearest-neighbour upsampling, as each opset writes it: `Upsample`
    /// (opset 9: X, scales; removed in 10), `Resize` at opset 10 (X, scales; nearest is
    /// asymmetric/floor), at 11 on (X, roi, scales, sizes; coordinate and rounding modes as
    /// attributes; roi may be omitted from 13), and at 18 on (an `axes` attribute may restrict
    /// the scales to some axes).
    pub(crate) fn upsample_factor(
        self,
        n: &NodeProto,
        consts: &Constants,
        err: NodeErr,
    ) -> Result<usize, Error> {
        let v = self.0;
        let a = Attrs(n);
        let scales_at = match n.op_type.as_str() {
            "Upsample" if v >= 10 => {
                return Err(err(format!(
                    "Upsample was removed in opset 10 (Resize replaced it); the model uses {v}"
                )));
            }
            "Resize" if v < 10 => {
                return Err(err(format!(
                    "Resize needs opset 10 or later; the model uses {v}"
                )));
            }
            "Upsample" | "Resize" if v <= 10 => {
                let mode = a.string("mode").unwrap_or_else(|| "nearest".into());
                if mode != "nearest" {
                    return Err(err(format!(
                        "only nearest upsampling is supported, got {mode}"
                    )));
                }
                1
            }
            _ => {
                check_nearest_resize(&a, err)?;
                if n.input.get(3).is_some_and(|s| !s.is_empty()) {
                    return Err(err(
                        "Resize to given sizes is not supported, only scales".into()
                    ));
                }
                2
            }
        };
        let scales = match n.input.get(scales_at).filter(|s| !s.is_empty()) {
            Some(nm) => match consts.get(nm) {
                Some(Constant::F32(t)) => t.data.clone(),
                _ => return Err(err(format!("scales '{nm}' are not a float constant"))),
            },
            None => return Err(err("no scales given".into())),
        };
        let full = match (v >= 18).then(|| a.ints("axes")).flatten() {
            None => scales,
            Some([2, 3] | [-2, -1]) if scales.len() == 2 => vec![1.0, 1.0, scales[0], scales[1]],
            Some(axes) => {
                return Err(err(format!(
                    "axes {axes:?} with {} scales do not scale height and width",
                    scales.len()
                )));
            }
        };
        match full.as_slice() {
            [1.0, 1.0, fy, fx] if fy == fx && *fy >= 1.0 && fy.fract() == 0.0 => Ok(*fy as usize),
            other => Err(err(format!(
                "scales {other:?} are not (1, 1, f, f) with a whole f"
            ))),
        }
    }
}

/// The value of a `Constant` node: `value` (a tensor), or from opset 12 `value_float(s)` and
/// `value_int(s)`.
pub(crate) fn constant_value(n: &NodeProto, err: NodeErr) -> Result<Constant, Error> {
    let a = Attrs(n);
    if let Some(t) = a.get("value").and_then(|v| v.t.as_ref()) {
        return decode_tensor(t);
    }
    let float = |shape: Vec<usize>, data: Vec<f32>| Constant::F32(Tensor { shape, data });
    if let Some(x) = a.get("value_float") {
        Ok(float(vec![], vec![x.f]))
    } else if let Some(x) = a.get("value_floats") {
        Ok(float(vec![x.floats.len()], x.floats.clone()))
    } else if let Some(x) = a.get("value_int") {
        Ok(Constant::I64(vec![x.i]))
    } else if let Some(x) = a.get("value_ints") {
        Ok(Constant::I64(x.ints.clone()))
    } else {
        Err(err(
            "Constant without a value (value, value_float(s) or value_int(s))".into(),
        ))
    }
}

/// An integer constant (axes, shapes), or an error naming the value.
pub(crate) fn int_const(consts: &Constants, nm: &str, err: NodeErr) -> Result<Vec<i64>, Error> {
    match consts.get(nm) {
        Some(Constant::I64(v)) => Ok(v.clone()),
        _ => Err(err(format!("'{nm}' is not an integer constant"))),
    }
}

/// The value of a one-element float constant.
pub(crate) fn scalar_const(consts: &Constants, nm: &str) -> Option<f32> {
    match consts.get(nm) {
        Some(Constant::F32(t)) if t.numel() == 1 => Some(t.data[0]),
        _ => None,
    }
}

/// A `Resize` the graph's `Upsample` means: nearest neighbour, asymmetric coordinates, floor
/// (what PyTorch's `interpolate(mode="nearest")` exports). Anything else is refused by name.
pub(crate) fn check_nearest_resize(a: &Attrs, err: NodeErr) -> Result<(), Error> {
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
pub(crate) fn conv_attrs(a: &Attrs, err: NodeErr) -> Result<ConvAttrs, Error> {
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
