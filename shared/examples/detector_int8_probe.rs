//! SCRFD on the integer path, measured against the float detector it came from: the project's
//! w8a8 PTQ (per-channel weights, activation ranges = the largest |x| over the calibration
//! photos) applied to the detector graph, with the nine head convolutions kept in float and,
//! as asked, the first convolution and the depthwise convolutions too.
//!
//! The photos of `$EFQ_LFW/raw250-sample`, sorted by path: every fourth calibrates, the others
//! are compared. For each compared photo: the faces each side finds, the worst box IoU and
//! keypoint distance (pixels of the 640×640 input) of float faces scoring ≥ 0.6, whether
//! `pick_central` chooses the same face, and the time of a CPU-backend detection each way.
//! docs/EXPERIMENTS.md ("SCRFD on the integer path") records what it measured and why the
//! integer detector is not offered.
//!
//! Usage: cargo run --release -p efq-shared --example detector_int8_probe -- [float LAYERS]
//! where LAYERS is any of `first`, `depthwise` (comma-separated; the heads are always float).

use std::time::Instant;

use efq_shared::cpu;
use efq_shared::detect::{DetectConfig, Detection, Scrfd, iou, letterbox, normalize, pick_central};
use efq_shared::graph::Op;
use efq_shared::quant::{QuantConfig, WeightClip, quantize_graph_clipped};

fn kp_distance(a: &Detection, b: &Detection, scale: f32) -> f32 {
    a.kps
        .iter()
        .zip(&b.kps)
        .map(|(p, q)| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt() * scale)
        .fold(0f32, f32::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().nth(1).unwrap_or_default();
    let (keep_first, keep_dw) = (keep.contains("first"), keep.contains("depthwise"));
    let det = Scrfd::import_file(std::env::var("EFQ_DETECTOR")?, [640, 640])?;
    let root = std::path::PathBuf::from(std::env::var("EFQ_LFW")?).join("raw250-sample");
    let mut paths = Vec::new();
    for d in std::fs::read_dir(&root)? {
        for f in std::fs::read_dir(d?.path())? {
            paths.push(f?.path());
        }
    }
    paths.sort();
    let mut photos = Vec::new();
    for p in &paths {
        photos.push(image::open(p)?.to_rgb8());
    }

    let mut ranges: Vec<f32> = Vec::new();
    for img in photos.iter().step_by(4) {
        let (canvas, _) = letterbox(img, 640);
        let r = cpu::input_absmax(&det.graph, &normalize(&canvas), 1)?;
        if ranges.is_empty() {
            ranges = r;
        } else {
            ranges.iter_mut().zip(r).for_each(|(a, b)| *a = a.max(b));
        }
    }
    let mut int = det.clone();
    int.graph = quantize_graph_clipped(
        &det.graph,
        &QuantConfig::new(8, 8)?,
        &ranges,
        WeightClip::Max,
    )?;
    let heads = det.head_values();
    let convs = det
        .graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            Op::Conv { attrs, .. } => Some((i, n.output, attrs.group > 1)),
            _ => None,
        });
    for (k, (i, output, grouped)) in convs.enumerate() {
        if heads.contains(&output) || (keep_first && k == 0) || (keep_dw && grouped) {
            int.graph.nodes[i].op = det.graph.nodes[i].op.clone();
        }
    }

    let cfg = DetectConfig::default();
    let (mut worst_iou, mut worst_kp, mut other_pick, mut other_count) = (1f32, 0f32, 0, 0);
    let (mut float_s, mut int_s, mut picked_kp) = (0f64, 0f64, Vec::new());
    let compared: Vec<usize> = (0..photos.len()).filter(|i| i % 4 != 0).collect();
    for &i in &compared {
        let (canvas, scale) = letterbox(&photos[i], 640);
        let t = Instant::now();
        let a = det.detect_letterboxed(&canvas, scale, &cfg)?;
        float_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let b = int.detect_letterboxed(&canvas, scale, &cfg)?;
        int_s += t.elapsed().as_secs_f64();
        if a.len() != b.len() {
            other_count += 1;
            let scores = |d: &[Detection]| d.iter().map(|d| d.score).collect::<Vec<_>>();
            println!(
                "{}: float scores {:?}, integer {:?}",
                paths[i].display(),
                scores(&a),
                scores(&b)
            );
        }
        for fa in a.iter().filter(|d| d.score >= 0.6) {
            let partner = b
                .iter()
                .max_by(|x, y| iou(&x.bbox, &fa.bbox).total_cmp(&iou(&y.bbox, &fa.bbox)));
            match partner {
                Some(fb) => {
                    worst_iou = worst_iou.min(iou(&fa.bbox, &fb.bbox));
                    worst_kp = worst_kp.max(kp_distance(fa, fb, scale));
                }
                None => worst_iou = 0.0,
            }
        }
        let (w, h) = (photos[i].width() as usize, photos[i].height() as usize);
        match (pick_central(&a, w, h), pick_central(&b, w, h)) {
            (Some(x), Some(y)) if iou(&x.bbox, &y.bbox) >= 0.95 => {
                picked_kp.push(kp_distance(x, y, scale))
            }
            (None, None) => {}
            _ => other_pick += 1,
        }
    }
    picked_kp.sort_by(f32::total_cmp);
    let n = compared.len();
    println!(
        "float: heads{}{}; {n} photos compared, {} calibrated",
        if keep_first { ", first conv" } else { "" },
        if keep_dw { ", depthwise convs" } else { "" },
        photos.len() - n
    );
    println!(
        "faces scoring >= 0.6: worst IoU {worst_iou:.4}, worst keypoint {worst_kp:.2} px; \
         photos with another face count {other_count}, another chosen face {other_pick}"
    );
    if !picked_kp.is_empty() {
        println!(
            "chosen face keypoints (px at 640): median {:.2}, 95th percentile {:.2}, max {:.2}; \
             {} of {} over 1 px",
            picked_kp[picked_kp.len() / 2],
            picked_kp[picked_kp.len() * 95 / 100],
            picked_kp[picked_kp.len() - 1],
            picked_kp.iter().filter(|&&k| k > 1.0).count(),
            picked_kp.len()
        );
    }
    println!(
        "CPU backend, one detection: float {:.1} ms, integer {:.1} ms",
        float_s * 1e3 / n as f64,
        int_s * 1e3 / n as f64
    );
    Ok(())
}
