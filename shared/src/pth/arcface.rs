//! arcface_torch's backbones, rebuilt from their state-dict keys as the ONNX graph
//! `torch.onnx.export` writes for them without constant folding: each `Conv2d` (no bias) then
//! its `BatchNormalization`, `PRelu` slopes as `[C,1,1]`, `Add`, `Flatten`, `Gemm` with
//! `transB=1`. The ONNX importer then folds and checks it as it does any teacher, so a `.pth`
//! and the ONNX export of the same weights give the same graph.
//!
//! A state dict holds weights, not the forward pass: strides and paddings below are those of
//! arcface_torch's `backbones/iresnet.py` and `backbones/mobilefacenet.py` (the first block of
//! each iresnet stage and each top-level MobileFaceNet `DepthWise` downsample by 2; every
//! convolution pads by half its kernel except the 7×7 global depthwise one). Every float
//! tensor of the file must be used, so a different network is refused rather than misread.

use std::collections::HashSet;

use super::archive::StateDict;
use crate::Error;
use crate::graph::Tensor;
use crate::onnx::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};

/// BatchNorm epsilon of every arcface_torch backbone (`eps=1e-05`).
const BN_EPS: f32 = 1e-5;

/// The backbone families read from a state dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `iresnet18` … `iresnet200` (`layer1.0.conv1.weight`, `fc.weight`, `features.*`).
    IResNet,
    /// arcface_torch's `MobileFaceNet` (`layers.0.layers.0.weight`, `conv_sep.*`, `features.*`).
    MobileFaceNet,
}

impl Arch {
    /// Recognises the family from its keys.
    pub fn detect(sd: &StateDict) -> Result<Arch, Error> {
        let has = |k: &str| sd.get(k).is_some();
        if has("conv1.weight") && has("layer1.0.conv1.weight") && has("fc.weight") {
            Ok(Arch::IResNet)
        } else if has("layers.0.layers.0.weight") && has("conv_sep.layers.0.weight") {
            Ok(Arch::MobileFaceNet)
        } else {
            let first: Vec<&str> = sd.tensors.iter().take(4).map(|(k, _)| k.as_str()).collect();
            Err(Error::Pth(format!(
                "not an arcface_torch backbone (first keys {first:?}); read are iresnet18–200 \
                 (conv1, layer1.0.…, fc, features) and MobileFaceNet (layers.N.…, conv_sep, \
                 features)"
            )))
        }
    }
}

/// Builds the ONNX model of an arcface_torch backbone from its state dict.
pub fn to_onnx(sd: &StateDict, name: &str) -> Result<ModelProto, Error> {
    let arch = Arch::detect(sd)?;
    let mut b = Builder {
        sd,
        used: HashSet::new(),
        nodes: Vec::new(),
        inits: Vec::new(),
        values: 0,
        channels: 3,
        grouped: arch == Arch::MobileFaceNet,
    };
    let (out, side, dim) = match arch {
        Arch::IResNet => iresnet(&mut b)?,
        Arch::MobileFaceNet => mobilefacenet(&mut b)?,
    };
    let unused: Vec<&str> = sd
        .tensors
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !b.used.contains(*k))
        .collect();
    if !unused.is_empty() {
        return Err(Error::Pth(format!(
            "{} tensors are not part of arcface_torch's {arch:?} (first: {:?}): a different \
             network, refused rather than misread",
            unused.len(),
            &unused[..unused.len().min(4)]
        )));
    }
    let batch = Dimension::param("None");
    let fixed = |d: usize| Dimension::value(d as i64);
    Ok(ModelProto {
        ir_version: 6,
        producer_name: "efquantface pth".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 11,
        }],
        graph: Some(GraphProto {
            node: b.nodes,
            name: name.into(),
            initializer: b.inits,
            input: vec![ValueInfoProto::float(
                "input.1",
                Some(vec![batch.clone(), fixed(3), fixed(side), fixed(side)]),
            )],
            output: vec![ValueInfoProto::float(&out, Some(vec![batch, fixed(dim)]))],
        }),
    })
}

struct Builder<'a> {
    sd: &'a StateDict,
    used: HashSet<String>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    values: usize,
    /// Channels of the value last produced by a convolution (for the group count).
    channels: usize,
    /// Whether the family has grouped convolutions (MobileFaceNet) or none (iresnet).
    grouped: bool,
}

impl Builder<'_> {
    fn tensor(&mut self, key: &str) -> Result<&Tensor, Error> {
        let t = self
            .sd
            .get(key)
            .ok_or_else(|| Error::Pth(format!("missing tensor '{key}'")))?;
        self.used.insert(key.to_string());
        Ok(t)
    }

    /// Adds `key` as an initializer (reshaped to `shape` when given) and returns its name.
    fn init(&mut self, key: &str, shape: Option<&[usize]>) -> Result<String, Error> {
        let t = self.tensor(key)?.clone();
        let shape = shape.map(<[usize]>::to_vec).unwrap_or(t.shape.clone());
        if shape.iter().product::<usize>() != t.data.len() {
            return Err(Error::Pth(format!(
                "tensor '{key}' has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        self.inits.push(TensorProto::float(key, &shape, &t.data));
        Ok(key.to_string())
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.values += 1;
        let out = format!("{name}:{}", self.values);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: name.into(),
            op_type: op.into(),
            attribute,
            domain: String::new(),
        });
        out
    }

    /// `Conv2d(bias=False)` at `p` (`p.weight`), groups from the input channels.
    fn conv(
        &mut self,
        x: &str,
        p: &str,
        stride: usize,
        pad: Option<usize>,
    ) -> Result<String, Error> {
        let key = format!("{p}.weight");
        let shape = self.tensor(&key)?.shape.clone();
        let [o, i, kh, kw] = shape[..] else {
            return Err(Error::Pth(format!(
                "'{key}' has shape {shape:?}, not a 2-D convolution"
            )));
        };
        if i == 0 || !self.channels.is_multiple_of(i) || (!self.grouped && i != self.channels) {
            return Err(Error::Pth(format!(
                "'{key}' takes {i} channels per group, its input has {}",
                self.channels
            )));
        }
        let group = self.channels / i;
        let w = self.init(&key, None)?;
        let mut inputs = vec![x.to_string(), w];
        let bias = format!("{p}.bias");
        if self.sd.get(&bias).is_some() {
            inputs.push(self.init(&bias, None)?);
        }
        let pads = pad.unwrap_or(kh / 2) as i64;
        let ints = |n: &str, v: &[i64]| AttributeProto::ints(n, v);
        let attrs = vec![
            ints("dilations", &[1, 1]),
            AttributeProto::int("group", group as i64),
            ints("kernel_shape", &[kh as i64, kw as i64]),
            ints("pads", &[pads; 4]),
            ints("strides", &[stride as i64; 2]),
        ];
        self.channels = o;
        Ok(self.node("Conv", p, inputs, attrs))
    }

    fn batchnorm(&mut self, x: &str, p: &str) -> Result<String, Error> {
        let mut inputs = vec![x.to_string()];
        for s in ["weight", "bias", "running_mean", "running_var"] {
            inputs.push(self.init(&format!("{p}.{s}"), None)?);
        }
        Ok(self.node(
            "BatchNormalization",
            p,
            inputs,
            vec![AttributeProto::float("epsilon", BN_EPS)],
        ))
    }

    fn prelu(&mut self, x: &str, p: &str) -> Result<String, Error> {
        let key = format!("{p}.weight");
        let c = self.tensor(&key)?.data.len();
        let slope = self.init(&key, Some(&[c, 1, 1]))?;
        Ok(self.node("PRelu", p, vec![x.to_string(), slope], vec![]))
    }

    fn add(&mut self, a: &str, b: &str, name: &str) -> String {
        self.node("Add", name, vec![a.into(), b.into()], vec![])
    }

    fn flatten(&mut self, x: &str, name: &str) -> String {
        self.node(
            "Flatten",
            name,
            vec![x.into()],
            vec![AttributeProto::int("axis", 1)],
        )
    }

    /// `nn.Linear` at `p` as `Gemm(transB=1)`.
    fn linear(&mut self, x: &str, p: &str) -> Result<String, Error> {
        let mut inputs = vec![x.to_string(), self.init(&format!("{p}.weight"), None)?];
        let bias = format!("{p}.bias");
        if self.sd.get(&bias).is_some() {
            inputs.push(self.init(&bias, None)?);
        }
        Ok(self.node("Gemm", p, inputs, vec![AttributeProto::int("transB", 1)]))
    }

    fn has(&self, key: &str) -> bool {
        self.sd.get(key).is_some()
    }
}

/// Returns (output value, input side, embedding size).
fn iresnet(b: &mut Builder) -> Result<(String, usize, usize), Error> {
    let mut x = b.conv("input.1", "conv1", 1, None)?;
    x = b.batchnorm(&x, "bn1")?;
    x = b.prelu(&x, "prelu")?;
    for stage in 1..=4 {
        let mut blk = 0;
        while b.has(&format!("layer{stage}.{blk}.conv1.weight")) {
            let p = format!("layer{stage}.{blk}");
            // The first block of a stage halves the resolution in conv2 and its shortcut.
            let stride = if blk == 0 { 2 } else { 1 };
            let shortcut = if b.has(&format!("{p}.downsample.0.weight")) {
                let inplanes = b.channels;
                let s = b.conv(&x, &format!("{p}.downsample.0"), stride, Some(0))?;
                let s = b.batchnorm(&s, &format!("{p}.downsample.1"))?;
                b.channels = inplanes;
                s
            } else {
                x.clone()
            };
            let mut y = b.batchnorm(&x, &format!("{p}.bn1"))?;
            y = b.conv(&y, &format!("{p}.conv1"), 1, None)?;
            y = b.batchnorm(&y, &format!("{p}.bn2"))?;
            y = b.prelu(&y, &format!("{p}.prelu"))?;
            y = b.conv(&y, &format!("{p}.conv2"), stride, None)?;
            y = b.batchnorm(&y, &format!("{p}.bn3"))?;
            x = b.add(&y, &shortcut, &format!("{p}.add"));
            blk += 1;
        }
        if blk == 0 {
            return Err(Error::Pth(format!("iresnet without layer{stage}")));
        }
    }
    x = b.batchnorm(&x, "bn2")?;
    x = b.flatten(&x, "flatten");
    let fin = b.tensor("fc.weight")?.shape.get(1).copied().unwrap_or(0);
    let c = b.channels;
    let side = (1..=64).find(|s| c * s * s == fin).ok_or_else(|| {
        Error::Pth(format!(
            "fc takes {fin} features, not {c}·s² for a square map"
        ))
    })?;
    let dim = b.tensor("fc.weight")?.shape.first().copied().unwrap_or(0);
    x = b.linear(&x, "fc")?;
    x = b.batchnorm(&x, "features")?;
    // Four stride-2 stages: the input is 16× the last feature map.
    Ok((x, side * 16, dim))
}

/// `ConvBlock` (conv, BN, PReLU) or, without PReLU, `LinearBlock` at `p.layers.{0,1,2}`.
fn conv_block(
    b: &mut Builder,
    x: &str,
    p: &str,
    stride: usize,
    prelu: bool,
) -> Result<String, Error> {
    let mut y = b.conv(x, &format!("{p}.layers.0"), stride, None)?;
    y = b.batchnorm(&y, &format!("{p}.layers.1"))?;
    if prelu {
        y = b.prelu(&y, &format!("{p}.layers.2"))?;
    }
    Ok(y)
}

/// `DepthWise`: 1×1 expand, grouped 3×3 (stride), 1×1 project, plus the input when residual.
fn depthwise(
    b: &mut Builder,
    x: &str,
    p: &str,
    stride: usize,
    residual: bool,
) -> Result<String, Error> {
    let mut y = conv_block(b, x, &format!("{p}.layers.0"), 1, true)?;
    y = conv_block(b, &y, &format!("{p}.layers.1"), stride, true)?;
    y = conv_block(b, &y, &format!("{p}.layers.2"), 1, false)?;
    Ok(if residual {
        b.add(&y, x, &format!("{p}.add"))
    } else {
        y
    })
}

fn mobilefacenet(b: &mut Builder) -> Result<(String, usize, usize), Error> {
    let mut x = "input.1".to_string();
    let mut i = 0;
    while b.has(&format!("layers.{i}.layers.0.weight"))
        || b.has(&format!("layers.{i}.layers.0.layers.0.weight"))
        || b.has(&format!("layers.{i}.layers.0.layers.0.layers.0.weight"))
    {
        let p = format!("layers.{i}");
        x = if b.has(&format!("{p}.layers.0.weight")) {
            // ConvBlock: the stem (stride 2) or the grouped 3×3 after it.
            conv_block(b, &x, &p, if i == 0 { 2 } else { 1 }, true)?
        } else if b.has(&format!("{p}.layers.0.layers.0.weight")) {
            depthwise(b, &x, &p, 2, false)?
        } else {
            let mut j = 0;
            while b.has(&format!("{p}.layers.{j}.layers.0.layers.0.weight")) {
                x = depthwise(b, &x, &format!("{p}.layers.{j}"), 1, true)?;
                j += 1;
            }
            x
        };
        i += 1;
    }
    x = conv_block(b, &x, "conv_sep", 1, true)?;
    let side = b
        .tensor("features.layers.0.layers.0.weight")?
        .shape
        .get(2)
        .copied()
        .unwrap_or(0);
    x = b.conv(&x, "features.layers.0.layers.0", 1, Some(0))?;
    x = b.batchnorm(&x, "features.layers.0.layers.1")?;
    x = b.flatten(&x, "features.layers.1");
    let dim = b
        .tensor("features.layers.2.weight")?
        .shape
        .first()
        .copied()
        .unwrap_or(0);
    x = b.linear(&x, "features.layers.2")?;
    x = b.batchnorm(&x, "features.layers.3")?;
    // The stem and three DepthWise blocks halve the resolution: the input is 16× the GDC kernel.
    Ok((x, side * 16, dim))
}
