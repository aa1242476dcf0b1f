//! `trainer inspect`: what a model file is, without running it — its graph (ops, parameters,
//! multiply-accumulates), input and output, input conventions, bit-widths, stored threshold
//! and size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use efq_shared::format::{PackedModel, Preprocessing, Threshold};
use efq_shared::graph::{Op, Weights};
use serde::Serialize;

/// A model file, summarised.
#[derive(Serialize)]
pub struct Summary {
    pub path: PathBuf,
    /// `"onnx"` or `"pth"` (a float teacher) or `"efq"` (a packed model).
    pub format: &'static str,
    pub name: String,
    /// `[channels, height, width]` of one input image.
    pub input: [usize; 3],
    /// Values per embedding.
    pub embedding_dim: usize,
    /// Channel order, mean and std the model expects: `x = (pixel − mean) / std`.
    pub conventions: Preprocessing,
    pub nodes: usize,
    /// Nodes per op (`conv`, `gemm`, `prelu`, …).
    pub ops: BTreeMap<&'static str, usize>,
    /// Weights and biases of every layer.
    pub parameters: u64,
    /// Multiply-accumulates per image, in billions.
    pub gmac: f64,
    /// The file's nominal bit-widths (`"w6a6"`); `None` for a float model.
    pub quant: Option<String>,
    /// Conv/Gemm layers per (weight, activation) width: `{"w6a6": 50, "w8a8": 2}`, or
    /// `{"float": 53}`.
    pub layer_widths: BTreeMap<String, usize>,
    /// The verification threshold stored with the model, if any.
    pub threshold: Option<Threshold>,
    pub file_bytes: u64,
    /// How the model was made, as recorded in it (quantization or training settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
}

/// Reads and summarises `path` (an ONNX or `.pth` teacher, or a packed `.efq` file).
pub fn summarize(path: &Path) -> Result<Summary> {
    let file_bytes = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let onnx = crate::eval::is_float_teacher(path);
    let (graph, conventions, quant, threshold, provenance) = if onnx {
        let (g, pre) = crate::eval::load_model(path)?;
        (g, pre, None, None, None)
    } else {
        let m = PackedModel::load(path)?;
        crate::conventions::check_packed(&m.manifest.preprocessing, path)?;
        let extra = &m.manifest.extra;
        let provenance = ["teacher", "calibration", "calibration_crops", "training"]
            .iter()
            .filter_map(|k| extra.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect::<serde_json::Map<_, _>>();
        (
            m.graph,
            m.manifest.preprocessing,
            m.manifest.quant.map(|q| q.label()),
            m.manifest.threshold,
            (!provenance.is_empty()).then_some(serde_json::Value::Object(provenance)),
        )
    };
    let mut ops = BTreeMap::new();
    let mut layer_widths = BTreeMap::new();
    for node in &graph.nodes {
        *ops.entry(node.op.kind()).or_default() += 1;
        let (weights, input_quant) = match &node.op {
            Op::Conv {
                weights,
                input_quant,
                ..
            }
            | Op::Gemm {
                weights,
                input_quant,
                ..
            } => (weights, input_quant),
            _ => continue,
        };
        let width = match (weights, input_quant) {
            (Weights::Quant(q), Some(a)) => format!("w{}a{}", q.bits, a.bits),
            (Weights::Quant(q), None) => format!("w{}a32", q.bits),
            (Weights::Float(_), _) => "float".to_string(),
        };
        *layer_widths.entry(width).or_default() += 1;
    }
    Ok(Summary {
        path: path.to_path_buf(),
        format: if efq_shared::pth::is_checkpoint(path) {
            "pth"
        } else if onnx {
            "onnx"
        } else {
            "efq"
        },
        name: graph.name.clone(),
        input: graph.input_shape,
        embedding_dim: graph.embedding_dim()?,
        conventions,
        nodes: graph.nodes.len(),
        ops,
        parameters: graph.parameters(),
        gmac: graph.macs()? as f64 / 1e9,
        quant,
        layer_widths,
        threshold,
        file_bytes,
        provenance,
    })
}

/// The summary as a short page for a person.
pub fn print(s: &Summary) {
    let join = |m: &BTreeMap<_, usize>| {
        m.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let [c, h, w] = s.input;
    let p = &s.conventions;
    println!(
        "{} ({} file, {:.2} MB)",
        s.path.display(),
        s.format,
        s.file_bytes as f64 / 1e6
    );
    println!("  name         {}", s.name);
    let channels = |v: &[f32; 3]| {
        if v[1..].iter().all(|x| x == &v[0]) {
            format!("{}", v[0])
        } else {
            format!("{v:?}")
        }
    };
    println!(
        "  input        {c}×{h}×{w}, {} → (pixel − {}) / {}",
        p.color,
        channels(&p.mean),
        channels(&p.std)
    );
    println!("  output       {}-d embedding", s.embedding_dim);
    println!(
        "  graph        {} nodes: {}",
        s.nodes,
        join(&s.ops.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    );
    println!(
        "  size         {:.2} M parameters, {:.3} GMAC per image",
        s.parameters as f64 / 1e6,
        s.gmac
    );
    println!(
        "  bit-widths   {} (layers: {})",
        s.quant.as_deref().unwrap_or("float"),
        join(&s.layer_widths)
    );
    match &s.threshold {
        Some(t) => println!(
            "  threshold    cosine {:.4} at FAR {:e} ({})",
            t.cosine, t.far, t.source
        ),
        None => println!(
            "  threshold    none stored: `verify` gives the similarity but no same/different decision"
        ),
    }
}
