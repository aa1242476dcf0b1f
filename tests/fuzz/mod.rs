//! Mutation fuzzing of every entry point a stranger's model file reaches: the packed `.efq`
//! loader (then one forward pass on the CPU backend), the ONNX recognizer importer (then a
//! forward pass) and the SCRFD detector importer (then a detection pass at a small canvas).
//!
//! Inputs are mutants of seed files — generated networks, and the real teacher and detector
//! when set-up has installed them — made by structure-aware mutations (a manifest's integer
//! fields, an ONNX node's attributes, dims, inputs and op type) and by raw byte edits. Input
//! `i` of seed `s` is a pure function of `(seed, i)`, so any finding is re-run by its index.
//! Shared by the time-bounded test (`tests/fuzz_models.rs`) and the campaign runner
//! (`examples/fuzz_models.rs`), which also counts aborts, hangs and large allocations.

#![allow(dead_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use efq_shared::builders::{random_images, tiny_mobilefacenet};
use efq_shared::cpu;
use efq_shared::detect::Scrfd;
use efq_shared::format::{MANIFEST_KEY, PackedModel};
use efq_shared::graph::Graph;
use efq_shared::onnx::{self, ModelProto};
use efq_shared::quant::{QuantConfig, quantize_graph};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// The entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Efq,
    Onnx,
    Detector,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Efq, Target::Onnx, Target::Detector];
    pub fn name(self) -> &'static str {
        match self {
            Target::Efq => "efq",
            Target::Onnx => "onnx",
            Target::Detector => "detector",
        }
    }
}

/// A seed file and where it came from.
pub struct Seed {
    pub target: Target,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// How one input ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Refused at load with an error.
    Refused,
    /// Loaded and ran.
    Ran,
    /// A panic, with its message.
    Panic(String),
}

/// The category of the mutation that made an input (for the report).
pub type Category = &'static str;

fn packed(g: &Graph, bits: Option<&str>) -> Vec<u8> {
    let Some(bits) = bits else {
        return PackedModel::new(g.clone(), None)
            .unwrap()
            .to_bytes()
            .unwrap();
    };
    let cfg = QuantConfig::parse(bits).unwrap();
    let ranges = cpu::input_absmax(g, &random_images(2, g.input_shape, 5), 2).unwrap();
    let s = quantize_graph(g, &cfg, &ranges).unwrap();
    PackedModel::new(s, Some(cfg)).unwrap().to_bytes().unwrap()
}

/// The seed corpus: generated networks always; with `real`, also the installed teacher (as
/// ONNX and as a packed w8a8 student) and detector, where set-up has put them.
pub fn seeds(real: bool) -> Vec<Seed> {
    let tiny = tiny_mobilefacenet(20, 64, 11).unwrap();
    let up = efq_shared::builders::tiny_upsampling().unwrap();
    let mut v = vec![
        Seed {
            target: Target::Efq,
            name: "tiny-mbf-float".into(),
            bytes: packed(&tiny, None),
        },
        Seed {
            target: Target::Efq,
            name: "tiny-mbf-w8a8".into(),
            bytes: packed(&tiny, Some("w8a8")),
        },
        Seed {
            target: Target::Efq,
            name: "tiny-mbf-w4a4".into(),
            bytes: packed(&tiny, Some("w4a4")),
        },
        Seed {
            target: Target::Efq,
            name: "tiny-upsample-w6a6".into(),
            bytes: packed(&up, Some("w6a6")),
        },
        Seed {
            target: Target::Onnx,
            name: "tiny-mbf.onnx".into(),
            bytes: onnx::export_bytes(&tiny).unwrap(),
        },
        Seed {
            target: Target::Onnx,
            name: "tiny-upsample.onnx".into(),
            bytes: onnx::export_bytes(&up).unwrap(),
        },
    ];
    if real {
        let models = std::env::var_os("HOME")
            .map(|h| std::path::PathBuf::from(h).join(".cache/efquantface/models"))
            .unwrap_or_default();
        let teacher = std::env::var_os("EFQ_TEACHER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| models.join("w600k_mbf.onnx"));
        if let Ok(bytes) = std::fs::read(&teacher) {
            let g = onnx::import_bytes(&bytes, "w600k_mbf").unwrap();
            v.push(Seed {
                target: Target::Efq,
                name: "w600k_mbf-w8a8".into(),
                bytes: packed(&g, Some("w8a8")),
            });
            v.push(Seed {
                target: Target::Onnx,
                name: "w600k_mbf.onnx".into(),
                bytes,
            });
        }
        let detector = std::env::var_os("EFQ_DETECTOR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| models.join("scrfd_500m_bnkps.onnx"));
        if let Ok(bytes) = std::fs::read(&detector) {
            v.push(Seed {
                target: Target::Detector,
                name: "scrfd_500m_bnkps.onnx".into(),
                bytes,
            });
        }
    }
    v
}

/// Integers a fuzzer tries: edges of every width and the limits' neighbours.
const NASTY: [i64; 20] = [
    0,
    1,
    -1,
    2,
    3,
    7,
    15,
    16,
    17,
    64,
    65,
    1000,
    4097,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
    -(1 << 31),
];

fn nasty(rng: &mut ChaCha8Rng) -> i64 {
    match rng.random_range(0..4) {
        0 => rng.random_range(0..8),
        1 => rng.random(),
        _ => NASTY[rng.random_range(0..NASTY.len())],
    }
}

fn flip_bytes(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..rng.random_range(1..=8) {
        let k = rng.random_range(0..bytes.len());
        match rng.random_range(0..3) {
            0 => bytes[k] = rng.random(),
            1 => bytes[k] ^= 1 << rng.random_range(0..8),
            _ => bytes.truncate(k.max(1)),
        }
    }
}

/// A numeric slot of a JSON value: the path to it.
fn numeric_paths(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Number(_) => out.push(path.clone()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                numeric_paths(x, path, out);
                path.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                path.push(k.clone());
                numeric_paths(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, p| match v {
        Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
        other => &mut other[p.as_str()],
    })
}

fn mutate_efq(seed: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, Category) {
    if rng.random_range(0..5) == 0 {
        let mut b = seed.to_vec();
        flip_bytes(&mut b, rng);
        return (b, "bytes");
    }
    let st = safetensors::SafeTensors::deserialize(seed).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(seed).unwrap();
    let mut m: Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[MANIFEST_KEY]).unwrap();
    let category = match rng.random_range(0..6) {
        0 => {
            // An integer field anywhere in the manifest (shapes, attributes, grids, wiring).
            let mut paths = Vec::new();
            numeric_paths(&m, &mut Vec::new(), &mut paths);
            for _ in 0..rng.random_range(1..=3) {
                let p = &paths[rng.random_range(0..paths.len())];
                let x = nasty(rng);
                *at(&mut m, p) = if x < 0 && rng.random() {
                    Value::from(x as f64 * 1.5)
                } else {
                    Value::from(x)
                };
            }
            "manifest-integer"
        }
        1 => {
            // A float field: scales, means, thresholds to edge floats.
            let mut paths = Vec::new();
            numeric_paths(&m, &mut Vec::new(), &mut paths);
            let p = &paths[rng.random_range(0..paths.len())];
            let f = [0.0, -1.0, 1e-40, 1e-30, 1e30, 3.4e38, 0.5, 7.0][rng.random_range(0..8)];
            *at(&mut m, p) = Value::from(f);
            "manifest-float"
        }
        2 => {
            // Rewire: a node reads another value, or defines another.
            let nodes = m["nodes"].as_array_mut().unwrap();
            let k = rng.random_range(0..nodes.len());
            let n = nodes.len() as i64 + 2;
            if rng.random() {
                nodes[k]["inputs"] = serde_json::json!([rng.random_range(0..n)]);
            } else {
                nodes[k]["output"] = Value::from(rng.random_range(0..n));
            }
            "manifest-wiring"
        }
        3 => {
            // Remove or duplicate a node.
            let nodes = m["nodes"].as_array_mut().unwrap();
            let k = rng.random_range(0..nodes.len());
            if rng.random() {
                nodes.remove(k);
            } else {
                let n = nodes[k].clone();
                nodes.insert(k, n);
            }
            "manifest-nodes"
        }
        4 => {
            // Change a node's op (keeping its fields).
            let nodes = m["nodes"].as_array_mut().unwrap();
            let k = rng.random_range(0..nodes.len());
            let ops = [
                "conv", "gemm", "affine", "prelu", "relu", "add", "flatten", "upsample",
            ];
            nodes[k]["op"] = Value::from(ops[rng.random_range(0..ops.len())]);
            if rng.random() {
                nodes[k]["factor"] = Value::from(nasty(rng));
            }
            "manifest-op"
        }
        _ => {
            // The top-level shape and conventions.
            match rng.random_range(0..3) {
                0 => m["input_shape"][rng.random_range(0..3)] = Value::from(nasty(rng)),
                1 => m["preprocessing"]["size"][rng.random_range(0..2)] = Value::from(nasty(rng)),
                _ => m["embedding_dim"] = Value::from(nasty(rng)),
            }
            "manifest-shape"
        }
    };
    let meta = std::collections::HashMap::from([(MANIFEST_KEY.to_string(), m.to_string())]);
    let b = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    (b, category)
}

fn mutate_onnx(seed: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, Category) {
    if rng.random_range(0..5) == 0 {
        let mut b = seed.to_vec();
        flip_bytes(&mut b, rng);
        return (b, "bytes");
    }
    let mut model = ModelProto::decode(seed).unwrap();
    let g = model.graph.as_mut().unwrap();
    let category = match rng.random_range(0..6) {
        0 => {
            // An integer attribute (pads, strides, dilations, group, kernel_shape, axis, trans).
            let withints: Vec<usize> = (0..g.node.len())
                .filter(|&k| !g.node[k].attribute.is_empty())
                .collect();
            if let Some(&k) = withints.get(rng.random_range(0..withints.len().max(1))) {
                let n = &mut g.node[k];
                let a = rng.random_range(0..n.attribute.len());
                let attr = &mut n.attribute[a];
                if attr.ints.is_empty() {
                    attr.i = nasty(rng);
                } else {
                    let j = rng.random_range(0..attr.ints.len());
                    attr.ints[j] = nasty(rng);
                }
            }
            "onnx-attribute"
        }
        1 => {
            // A tensor's dims (its data unchanged or dropped).
            if !g.initializer.is_empty() {
                let t = rng.random_range(0..g.initializer.len());
                let t = &mut g.initializer[t];
                if !t.dims.is_empty() {
                    let j = rng.random_range(0..t.dims.len());
                    t.dims[j] = nasty(rng);
                }
                if rng.random() {
                    t.raw_data.clear();
                }
            }
            "onnx-tensor"
        }
        2 => {
            // A node loses, gains or renames an input.
            let k = rng.random_range(0..g.node.len());
            let n = &mut g.node[k];
            match rng.random_range(0..3) {
                0 => {
                    n.input.pop();
                }
                1 => n.input.push(n.input.first().cloned().unwrap_or_default()),
                _ => {
                    if !n.input.is_empty() {
                        n.input[0] = "nowhere".into();
                    }
                }
            }
            "onnx-wiring"
        }
        3 => {
            let k = rng.random_range(0..g.node.len());
            let ops = [
                "Conv",
                "BatchNormalization",
                "PRelu",
                "Relu",
                "Add",
                "Flatten",
                "Reshape",
                "Gemm",
                "Resize",
                "Identity",
                "Sigmoid",
                "Transpose",
                "Concat",
            ];
            g.node[k].op_type = ops[rng.random_range(0..ops.len())].into();
            "onnx-op"
        }
        4 => {
            // The input's declared shape.
            if let Some(d) = g
                .input
                .first_mut()
                .and_then(|i| i.r#type.as_mut())
                .and_then(|t| t.tensor_type.as_mut())
                .and_then(|t| t.shape.as_mut())
                && !d.dim.is_empty()
            {
                let j = rng.random_range(0..d.dim.len());
                d.dim[j].dim_value = Some(nasty(rng));
            }
            "onnx-input-shape"
        }
        _ => {
            // Remove a node or an initializer.
            if rng.random() && g.node.len() > 1 {
                let k = rng.random_range(0..g.node.len());
                g.node.remove(k);
            } else if !g.initializer.is_empty() {
                let k = rng.random_range(0..g.initializer.len());
                g.initializer.remove(k);
            }
            "onnx-remove"
        }
    };
    (model.encode_to_vec(), category)
}

/// Input `index` of `seed`: the mutant's bytes and its mutation category.
pub fn mutant(seed: &Seed, run_seed: u64, index: u64) -> (Vec<u8>, Category) {
    let mut rng = ChaCha8Rng::seed_from_u64(run_seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match seed.target {
        Target::Efq => mutate_efq(&seed.bytes, &mut rng),
        Target::Onnx | Target::Detector => mutate_onnx(&seed.bytes, &mut rng),
    }
}

/// Loads `bytes` through `target`'s entry point and, when it loads, runs one forward pass on
/// the CPU backend. Returns the outcome and, when it ran, the graph (for backend checks).
pub fn run(target: Target, bytes: &[u8]) -> (Outcome, Option<Graph>) {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Graph>, String> {
        match target {
            Target::Efq => {
                let m = PackedModel::from_bytes(bytes).map_err(|e| e.to_string())?;
                let x = random_images(1, m.graph.input_shape, 1);
                let y = cpu::forward(&m.graph, &x, 1).map_err(|e| e.to_string())?;
                assert_eq!(y.len(), m.manifest.embedding_dim, "output size");
                Ok(Some(m.graph))
            }
            Target::Onnx => {
                let g = onnx::import_bytes(bytes, "fuzz").map_err(|e| e.to_string())?;
                let x = random_images(1, g.input_shape, 1);
                cpu::forward(&g, &x, 1).map_err(|e| e.to_string())?;
                Ok(Some(g))
            }
            Target::Detector => {
                // A small canvas keeps one pass short; the importer's checks do not depend on it.
                let d = Scrfd::import_bytes(bytes, "fuzz", [64, 64]).map_err(|e| e.to_string())?;
                let x = random_images(1, [3, 64, 64], 1);
                d.forward(&x).map_err(|e| e.to_string())?;
                Ok(None)
            }
        }
    }));
    match result {
        Ok(Ok(g)) => (Outcome::Ran, g),
        Ok(Err(_)) => (Outcome::Refused, None),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            (Outcome::Panic(msg), None)
        }
    }
}
