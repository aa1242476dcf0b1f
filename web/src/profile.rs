//! Where the page's CPU path spends its time: one photo through the detector's letterbox,
//! normalisation, SCRFD's layers (grouped by kind) and the decoding with NMS; one crop through
//! the recognizer's layers (grouped by kind). Timed with the caller's clock (`performance.now`
//! in wasm, where `std::time::Instant` does not exist).
//!
//! `node bench/profile_wasm.mjs [RUNS]` runs both on the browser fixture with the
//! single-threaded build in node's V8, the engine Chromium runs the page's worker with.

use efq_shared::cpu;
use efq_shared::detect::{DetectConfig, Scrfd, letterbox_input, nms};
use efq_shared::graph::Op;
use serde_json::json;
use wasm_bindgen::prelude::*;

use crate::{DETECT_SIZES, parse_model, rgb_image};

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Milliseconds from an arbitrary origin: `performance.now()` in wasm (declared once here: a
/// second declaration of the same import elsewhere in the module fails to link).
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        performance_now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
            * 1e3
    }
}

/// What kind of layer node `i` is, for the profile's rows.
fn kind(det: &Scrfd, i: usize) -> &'static str {
    let node = &det.graph.nodes[i];
    match &node.op {
        Op::Conv { .. } if det.head_values().contains(&node.output) => "heads",
        Op::Conv { attrs, .. } if attrs.group > 1 => "depthwise convolutions",
        Op::Conv { weights, .. } if weights.shape()[2..] == [1, 1] => "1×1 convolutions",
        Op::Conv { .. } => "dense convolutions",
        Op::Add | Op::Upsample { .. } => "neck: add and upsample",
        _ => "ReLU, BatchNorm and the rest",
    }
}

/// Profiles the CPU detector (`detector`: SCRFD ONNX bytes) on one RGB/RGBA photo, `runs`
/// times: JSON `{runs, stages: {name: median ms}, layers: {kind: median ms}}`.
#[wasm_bindgen(js_name = profileDetector)]
pub fn profile_detector(
    detector: &[u8],
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    runs: usize,
) -> Result<String, JsError> {
    let size = DETECT_SIZES[0];
    let det = Scrfd::import_bytes(detector, "detector", [size, size])
        .map_err(|e| JsError::new(&e.to_string()))?;
    let img = rgb_image(pixels, width, height, channels).map_err(|e| JsError::new(&e))?;
    let cfg = DetectConfig::default();
    let heads = det.head_values();
    let mut stages: Vec<(&str, Vec<f64>)> =
        ["letterbox and normalise", "network", "decode and NMS"]
            .into_iter()
            .map(|s| (s, Vec::new()))
            .collect();
    let mut layers = Layers::new();
    for _ in 0..runs.max(1) {
        let t0 = now_ms();
        let (x, scale) = letterbox_input(&img, size);
        let t1 = now_ms();
        let mut marks = Vec::with_capacity(det.graph.nodes.len());
        let values =
            cpu::forward_values_traced(&det.graph, &x, &heads, &mut |i| marks.push((i, now_ms())))
                .map_err(|e| JsError::new(&e.to_string()))?;
        let t3 = now_ms();
        let outs = det.heads_from_nchw(&values);
        let faces = nms(det.decode(&outs, scale, cfg.score_threshold), cfg.nms_iou);
        let t4 = now_ms();
        std::hint::black_box(faces);
        for (k, ms) in [t1 - t0, t3 - t1, t4 - t3].into_iter().enumerate() {
            stages[k].1.push(ms);
        }
        add_by_kind(&marks, t1, |i| kind(&det, i), &mut layers);
    }
    let stages = medians(stages);
    Ok(json!({"runs": runs.max(1), "stages": stages, "layers": medians(layers)}).to_string())
}

/// What kind of recognizer layer node `i` is, for the profile's rows.
fn recognizer_kind(graph: &efq_shared::graph::Graph, i: usize) -> &'static str {
    let Op::Conv {
        weights,
        attrs,
        input_quant,
        ..
    } = &graph.nodes[i].op
    else {
        return match &graph.nodes[i].op {
            Op::Gemm { .. } => "fully connected",
            Op::Add => "residual adds",
            _ => "PReLU, BatchNorm and the rest",
        };
    };
    let one_by_one = weights.shape()[2..] == [1, 1];
    match (attrs.group > 1, one_by_one, input_quant.is_some()) {
        (true, _, true) => "depthwise convolutions, integer",
        (true, _, false) => "depthwise convolutions, float",
        (false, true, true) => "1×1 convolutions, integer",
        (false, true, false) => "1×1 convolutions, float",
        (false, false, true) => "dense convolutions, integer",
        (false, false, false) => "dense convolutions, float",
    }
}

/// Profiles the CPU recognizer (`model`: a packed `.efq` file) on one 112×112 RGB crop, `runs`
/// times: JSON `{runs, network: median ms, layers: {kind: median ms}}`.
#[wasm_bindgen(js_name = profileRecognizer)]
pub fn profile_recognizer(model: &[u8], rgb: &[u8], runs: usize) -> Result<String, JsError> {
    let packed = parse_model(model).map_err(|e| JsError::new(&e))?;
    let manifest = packed.manifest.clone();
    let cpu = crate::CpuModel {
        graph: packed.graph,
        manifest,
    };
    let x = cpu.input(rgb, 1).map_err(|e| JsError::new(&e))?;
    let graph = &cpu.graph;
    let mut network = Vec::new();
    let mut layers = Layers::new();
    for _ in 0..runs.max(1) {
        let mut marks = Vec::with_capacity(graph.nodes.len());
        let t0 = now_ms();
        let out = cpu::forward_values_traced(graph, &x, &[graph.output], &mut |i| {
            marks.push((i, now_ms()))
        })
        .map_err(|e| JsError::new(&e.to_string()))?;
        network.push(now_ms() - t0);
        std::hint::black_box(out);
        add_by_kind(&marks, t0, |i| recognizer_kind(graph, i), &mut layers);
    }
    let network = median(&mut network);
    Ok(json!({"runs": runs.max(1), "network": network, "layers": medians(layers)}).to_string())
}

/// One pass's layer times summed by kind (`marks`: node and the time it finished, the pass
/// started at `start`), each kind's sum added to its list in `layers`.
fn add_by_kind(
    marks: &[(usize, f64)],
    start: f64,
    kind: impl Fn(usize) -> &'static str,
    layers: &mut Layers,
) {
    let mut per_kind: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut last = start;
    for &(i, t) in marks {
        *per_kind.entry(kind(i)).or_default() += t - last;
        last = t;
    }
    for (k, ms) in per_kind {
        layers.entry(k).or_default().push(ms);
    }
}

/// Each kind's times, by kind.
type Layers = std::collections::BTreeMap<&'static str, Vec<f64>>;

/// `{name: median ms}` of each list.
fn medians<'a>(
    lists: impl IntoIterator<Item = (&'a str, Vec<f64>)>,
) -> serde_json::Map<String, serde_json::Value> {
    lists
        .into_iter()
        .map(|(k, mut v)| (k.to_string(), json!(median(&mut v))))
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
