//! The packed model file: a safetensors file whose metadata key `efquantface` holds a JSON
//! manifest (format version, graph, bit-widths, activation scales, preprocessing, threshold),
//! and whose tensors hold the parameters — quantized weights packed densely at their bit-width
//! in OHWI order. safetensors was chosen because Python, Rust and JavaScript read it without
//! our code, and its header is bounds-checked before anything is allocated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::graph::{ConvAttrs, Graph, Node, Op, Tensor, Weights};
use crate::quant::{ActQuant, QuantConfig, QuantWeights, pack, packed_len, unpack};

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_KEY: &str = "efquantface";

/// How pixels become the network input: the channels put in `color` order, then
/// `x[c] = (pixel[c] − mean[c]) · (1 / std[c])`, `c` counting the network's input channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Channel order of the input tensor: `"RGB"` or `"BGR"`.
    pub color: String,
    /// Per input channel; written as one number when the three agree (as every file before
    /// per-channel values did), and read from either form.
    #[serde(with = "per_channel")]
    pub mean: [f32; 3],
    /// Per input channel, as `mean`.
    #[serde(with = "per_channel")]
    pub std: [f32; 3],
    pub size: [usize; 2],
}

impl Default for Preprocessing {
    fn default() -> Self {
        Preprocessing {
            color: "RGB".into(),
            mean: [127.5; 3],
            std: [127.5; 3],
            size: [112, 112],
        }
    }
}

/// `mean`/`std` in a manifest: a number (all channels) or an array of three.
mod per_channel {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(f32),
        Three([f32; 3]),
    }

    pub fn serialize<S: Serializer>(v: &[f32; 3], s: S) -> Result<S::Ok, S::Error> {
        if v[1..].iter().all(|x| x.to_bits() == v[0].to_bits()) {
            Form::One(v[0]).serialize(s)
        } else {
            Form::Three(*v).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f32; 3], D::Error> {
        Ok(match Form::deserialize(d)? {
            Form::One(x) => [x; 3],
            Form::Three(v) => v,
        })
    }
}

/// A decision threshold stored with the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// False-accept rate the threshold was chosen for.
    pub far: f64,
    /// Cosine similarity above which two faces are declared the same person.
    pub cosine: f32,
    /// Where it was measured (e.g. "LFW all pairs, insightface112").
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum OpSpec {
    Conv {
        out_channels: usize,
        in_channels_per_group: usize,
        kernel: [usize; 2],
        #[serde(flatten)]
        attrs: ConvAttrs,
        /// `None`: float32 weights.
        weight_bits: Option<u8>,
        input_quant: Option<ActQuant>,
    },
    Gemm {
        out_features: usize,
        in_features: usize,
        weight_bits: Option<u8>,
        input_quant: Option<ActQuant>,
    },
    Affine {
        channels: usize,
    },
    Prelu {
        slopes: usize,
    },
    Relu,
    Add,
    Flatten,
    Upsample {
        factor: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub inputs: Vec<usize>,
    pub output: usize,
    #[serde(flatten)]
    pub op: OpSpec,
}

/// Everything about a model except its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub input_shape: [usize; 3],
    pub embedding_dim: usize,
    pub preprocessing: Preprocessing,
    /// Nominal widths of a quantized model; per-layer widths are in `nodes`.
    pub quant: Option<QuantConfig>,
    pub threshold: Option<Threshold>,
    pub nodes: Vec<NodeSpec>,
    pub output: usize,
    /// Free-form provenance: training configuration, metrics, tool versions.
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// The preprocessing and threshold a file declares are ones every backend can apply: a
    /// known channel order, a finite mean, a positive std, the graph's own input size, a
    /// threshold that is a cosine at a false-accept rate.
    pub fn check_conventions(&self) -> Result<(), Error> {
        let p = &self.preprocessing;
        if !["RGB", "BGR"]
            .iter()
            .any(|c| p.color.eq_ignore_ascii_case(c))
        {
            return Err(bad(format!(
                "preprocessing.color '{}' is neither RGB nor BGR",
                p.color
            )));
        }
        if !p.mean.iter().all(|m| m.is_finite()) {
            return Err(bad(format!(
                "preprocessing.mean {:?} is not finite",
                p.mean
            )));
        }
        if !p
            .std
            .iter()
            .all(|s| s.is_normal() && *s > 0.0 && (1.0 / s).is_finite())
        {
            return Err(bad(format!(
                "preprocessing.std {:?} must be positive normal floats",
                p.std
            )));
        }
        let [_, h, w] = self.input_shape;
        if p.size != [h, w] {
            return Err(bad(format!(
                "preprocessing.size {:?} differs from the graph's input {}×{}",
                p.size, h, w
            )));
        }
        if let Some(t) = &self.threshold {
            if !(t.far > 0.0 && t.far <= 1.0) {
                return Err(bad(format!("threshold.far {} is not in (0, 1]", t.far)));
            }
            if !(t.cosine.is_finite() && (-1.0..=1.0).contains(&t.cosine)) {
                return Err(bad(format!(
                    "threshold.cosine {} is not a cosine in [-1, 1]",
                    t.cosine
                )));
            }
        }
        Ok(())
    }
}

/// A model in memory: its graph (parameters included) and its manifest.
#[derive(Clone, Debug)]
pub struct PackedModel {
    pub graph: Graph,
    pub manifest: Manifest,
}

fn weight_bits(w: &Weights) -> Option<u8> {
    match w {
        Weights::Float(_) => None,
        Weights::Quant(q) => Some(q.bits),
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::Format(m.into())
}

impl PackedModel {
    /// Wraps a validated face-recognition graph with a fresh manifest.
    pub fn new(graph: Graph, quant: Option<QuantConfig>) -> Result<Self, Error> {
        let embedding_dim = graph.check_recognizer()?;
        let nodes = graph
            .nodes
            .iter()
            .map(|n| NodeSpec {
                name: n.name.clone(),
                inputs: n.inputs.clone(),
                output: n.output,
                op: match &n.op {
                    Op::Conv {
                        weights,
                        attrs,
                        input_quant,
                        ..
                    } => {
                        let s = weights.shape();
                        OpSpec::Conv {
                            out_channels: s[0],
                            in_channels_per_group: s[1],
                            kernel: [s[2], s[3]],
                            attrs: *attrs,
                            weight_bits: weight_bits(weights),
                            input_quant: *input_quant,
                        }
                    }
                    Op::Gemm {
                        weights,
                        input_quant,
                        ..
                    } => {
                        let s = weights.shape();
                        OpSpec::Gemm {
                            out_features: s[0],
                            in_features: s[1],
                            weight_bits: weight_bits(weights),
                            input_quant: *input_quant,
                        }
                    }
                    Op::Affine { scale, .. } => OpSpec::Affine {
                        channels: scale.len(),
                    },
                    Op::PRelu { slope } => OpSpec::Prelu {
                        slopes: slope.len(),
                    },
                    Op::Relu => OpSpec::Relu,
                    Op::Add => OpSpec::Add,
                    Op::Flatten => OpSpec::Flatten,
                    Op::Upsample { factor } => OpSpec::Upsample { factor: *factor },
                },
            })
            .collect();
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            name: graph.name.clone(),
            input_shape: graph.input_shape,
            embedding_dim,
            preprocessing: Preprocessing {
                size: [graph.input_shape[1], graph.input_shape[2]],
                ..Default::default()
            },
            quant,
            threshold: None,
            nodes,
            output: graph.output,
            extra: BTreeMap::new(),
        };
        Ok(PackedModel { graph, manifest })
    }

    /// Bytes the parameters occupy: weights at their bit-width, everything else (scales, biases,
    /// BatchNorm, PReLU) as f32.
    pub fn parameter_bytes(&self) -> usize {
        let mut total = 0;
        for n in &self.graph.nodes {
            total += match &n.op {
                Op::Conv { weights, bias, .. } | Op::Gemm { weights, bias, .. } => {
                    4 * bias.len()
                        + match weights {
                            Weights::Float(t) => 4 * t.numel(),
                            Weights::Quant(q) => {
                                packed_len(q.values.len(), q.bits) + 4 * q.scales.len() + 4
                            }
                        }
                }
                Op::Affine { scale, shift } => 4 * (scale.len() + shift.len()),
                Op::PRelu { slope } => 4 * slope.len(),
                _ => 0,
            };
        }
        total
    }

    /// Serialises the model. The manifest's conventions are checked first, so that no file is
    /// written that [`PackedModel::from_bytes`] would refuse.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        self.manifest.check_conventions()?;
        let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for n in &self.graph.nodes {
            let nm = &n.name;
            match &n.op {
                Op::Conv { weights, bias, .. } | Op::Gemm { weights, bias, .. } => {
                    match weights {
                        Weights::Float(t) => blobs.push((
                            format!("{nm}.weight"),
                            Dtype::F32,
                            t.shape.clone(),
                            f32s(&t.data),
                        )),
                        Weights::Quant(q) => {
                            let packed = pack(&q.values_ohwi(), q.bits);
                            blobs.push((
                                format!("{nm}.weight_q"),
                                Dtype::U8,
                                vec![packed.len()],
                                packed,
                            ));
                            blobs.push((
                                format!("{nm}.weight_scale"),
                                Dtype::F32,
                                vec![q.scales.len()],
                                f32s(&q.scales),
                            ));
                        }
                    }
                    blobs.push((
                        format!("{nm}.bias"),
                        Dtype::F32,
                        vec![bias.len()],
                        f32s(bias),
                    ));
                }
                Op::Affine { scale, shift } => {
                    blobs.push((
                        format!("{nm}.scale"),
                        Dtype::F32,
                        vec![scale.len()],
                        f32s(scale),
                    ));
                    blobs.push((
                        format!("{nm}.shift"),
                        Dtype::F32,
                        vec![shift.len()],
                        f32s(shift),
                    ));
                }
                Op::PRelu { slope } => blobs.push((
                    format!("{nm}.slope"),
                    Dtype::F32,
                    vec![slope.len()],
                    f32s(slope),
                )),
                _ => {}
            }
        }
        let views: Vec<(String, TensorView)> = blobs
            .iter()
            .map(|(n, d, s, b)| {
                Ok((
                    n.clone(),
                    TensorView::new(*d, s.clone(), b).map_err(|e| bad(format!("{n}: {e}")))?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        let manifest = serde_json::to_string(&self.manifest).map_err(|e| bad(e.to_string()))?;
        let meta = HashMap::from([(MANIFEST_KEY.to_string(), manifest)]);
        safetensors::serialize(views, Some(meta)).map_err(|e| bad(format!("cannot serialise: {e}")))
    }

    /// Parses and validates a model file; every inconsistency is an error naming the part.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file (truncated or corrupt header): {e}"
            ))
        })?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file (truncated or corrupt): {e}"
            ))
        })?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(MANIFEST_KEY))
            .ok_or_else(|| bad(format!("no '{MANIFEST_KEY}' manifest in the safetensors metadata: not an EfQuantFace model")))?;
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
        match version.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(bad(format!(
                    "format version {v}; this build reads version {FORMAT_VERSION}"
                )));
            }
            None => return Err(bad("manifest has no format_version")),
        }
        let manifest: Manifest =
            serde_json::from_value(version).map_err(|e| bad(format!("manifest: {e}")))?;
        manifest.check_conventions()?;
        let graph = graph_from_manifest(&manifest, &st)?;
        let dim = graph
            .check_recognizer()
            .map_err(|e| bad(format!("'{}' {e}", manifest.name)))?;
        if dim != manifest.embedding_dim {
            return Err(bad(format!(
                "graph produces {dim}-d output but the manifest says {}",
                manifest.embedding_dim
            )));
        }
        Ok(PackedModel { graph, manifest })
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Writes atomically: a temporary file in the same folder, then a rename, so an interrupted
    /// save never leaves a truncated model behind.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

struct Reader<'a> {
    st: &'a SafeTensors<'a>,
    used: HashSet<String>,
}

impl Reader<'_> {
    fn get(&mut self, name: &str, dtype: Dtype, len: usize) -> Result<&[u8], Error> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| bad(format!("tensor '{name}' is missing")))?;
        if t.dtype() != dtype {
            return Err(bad(format!(
                "tensor '{name}' is {:?}, expected {dtype:?}",
                t.dtype()
            )));
        }
        let n: usize = t.shape().iter().product();
        if n != len {
            return Err(bad(format!(
                "tensor '{name}' has {n} elements, the manifest implies {len}"
            )));
        }
        self.used.insert(name.to_string());
        Ok(t.data())
    }
    fn f32s(&mut self, name: &str, len: usize) -> Result<Vec<f32>, Error> {
        let v: Vec<f32> = self
            .get(name, Dtype::F32, len)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(bad(format!("tensor '{name}' contains {x}")));
        }
        Ok(v)
    }
    fn weights(
        &mut self,
        node: &str,
        shape: Vec<usize>,
        bits: Option<u8>,
    ) -> Result<Weights, Error> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n > 0 && n <= crate::limits::MAX_PARAMETER_ELEMENTS);
        let n = n.ok_or_else(|| {
            bad(format!(
                "node '{node}': weight shape {shape:?} is empty or too large"
            ))
        })?;
        match bits {
            None => Ok(Weights::Float(Tensor {
                data: self.f32s(&format!("{node}.weight"), n)?,
                shape,
            })),
            Some(b) => {
                crate::quant::check_bits(b).map_err(|e| bad(format!("node '{node}': {e}")))?;
                let packed = self.get(&format!("{node}.weight_q"), Dtype::U8, packed_len(n, b))?;
                let ohwi = unpack(packed, b, n)?;
                let scales = self.f32s(&format!("{node}.weight_scale"), shape[0])?;
                let q = QuantWeights::from_ohwi(b, shape, &ohwi, scales);
                q.validate()
                    .map_err(|e| bad(format!("node '{node}': {e}")))?;
                Ok(Weights::Quant(q))
            }
        }
    }
}

fn graph_from_manifest(m: &Manifest, st: &SafeTensors) -> Result<Graph, Error> {
    let mut r = Reader {
        st,
        used: HashSet::new(),
    };
    let mut nodes = Vec::with_capacity(m.nodes.len().min(1 << 16));
    for (k, spec) in m.nodes.iter().enumerate() {
        let nm = &spec.name;
        // Values are dense and in definition order; this also bounds every allocation by the
        // number of nodes actually present.
        if spec.output != k + 1 {
            return Err(bad(format!(
                "node '{nm}' defines value {}, expected {}",
                spec.output,
                k + 1
            )));
        }
        let check_act = |aq: &Option<ActQuant>, bits: Option<u8>| -> Result<(), Error> {
            if let Some(a) = aq {
                a.validate().map_err(|e| bad(format!("node '{nm}': {e}")))?;
            } else if bits.is_some() {
                return Err(bad(format!(
                    "node '{nm}' has quantized weights but no input quantization"
                )));
            }
            Ok(())
        };
        let op = match &spec.op {
            OpSpec::Conv {
                out_channels,
                in_channels_per_group,
                kernel,
                attrs,
                weight_bits,
                input_quant,
            } => {
                check_act(input_quant, *weight_bits)?;
                let shape = vec![*out_channels, *in_channels_per_group, kernel[0], kernel[1]];
                Op::Conv {
                    weights: r.weights(nm, shape, *weight_bits)?,
                    bias: r.f32s(&format!("{nm}.bias"), *out_channels)?,
                    attrs: *attrs,
                    input_quant: *input_quant,
                }
            }
            OpSpec::Gemm {
                out_features,
                in_features,
                weight_bits,
                input_quant,
            } => {
                check_act(input_quant, *weight_bits)?;
                Op::Gemm {
                    weights: r.weights(nm, vec![*out_features, *in_features], *weight_bits)?,
                    bias: r.f32s(&format!("{nm}.bias"), *out_features)?,
                    input_quant: *input_quant,
                }
            }
            OpSpec::Affine { channels } => Op::Affine {
                scale: r.f32s(&format!("{nm}.scale"), *channels)?,
                shift: r.f32s(&format!("{nm}.shift"), *channels)?,
            },
            OpSpec::Prelu { slopes } => Op::PRelu {
                slope: r.f32s(&format!("{nm}.slope"), *slopes)?,
            },
            OpSpec::Relu => Op::Relu,
            OpSpec::Add => Op::Add,
            OpSpec::Flatten => Op::Flatten,
            OpSpec::Upsample { factor } => Op::Upsample { factor: *factor },
        };
        nodes.push(Node {
            name: nm.clone(),
            op,
            inputs: spec.inputs.clone(),
            output: spec.output,
        });
    }
    if let Some(extra) = st.names().into_iter().find(|n| !r.used.contains(*n)) {
        return Err(bad(format!(
            "tensor '{extra}' is not used by any node in the manifest"
        )));
    }
    let graph = Graph {
        name: m.name.clone(),
        input_shape: m.input_shape,
        num_values: nodes.len() + 1,
        nodes,
        output: m.output,
    };
    graph
        .infer_shapes()
        .map_err(|e| bad(format!("inconsistent graph: {e}")))?;
    Ok(graph)
}
