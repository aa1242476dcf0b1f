//! The SCRFD detector on the CPU backend finds the same faces as onnxruntime decoded by
//! InsightFace's own algorithm (`tests/ort_scrfd.py`), and faces aligned from raw LFW photos
//! embed like the `aligned112` crops made from the same photos.
//!
//! Both run on a few images by default (CI); set `EFQ_DETECT_SAMPLE=all` (or a number) to run
//! them on the whole `raw250-sample` folder and print the summary figures.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use efq_shared::align::align_face;
use efq_shared::detect::{DetectConfig, Detection, Scrfd, iou, letterbox, pick_central};
use efq_shared::format::Preprocessing;
use efq_shared::preprocess::{load_face, pixels_to_chw};
use efq_shared::{cpu, onnx};
use efq_tests::{cosine, detector, lfw, python, raw_sample, teacher};

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every face one side finds at ≥ 0.5 has a partner on the other side (found at ≥ 0.3, so that a
/// score of 0.5 ± ε does not decide the test): box IoU ≥ 0.99, keypoints within 0.5 px, score
/// within 1e-3. Returns the worst IoU, keypoint distance and score difference.
fn matched(name: &str, ours: &[Detection], theirs: &[Detection], who: &str) -> (f32, f32, f32) {
    let (mut worst_iou, mut worst_kp, mut worst_score) = (1f32, 0f32, 0f32);
    for t in theirs.iter().filter(|d| d.score >= 0.5) {
        let best = ours
            .iter()
            .max_by(|a, b| iou(&a.bbox, &t.bbox).total_cmp(&iou(&b.bbox, &t.bbox)))
            .unwrap_or_else(|| panic!("{name}: {who} face {t:?} has no partner at all"));
        let i = iou(&best.bbox, &t.bbox);
        let kp = best
            .kps
            .iter()
            .zip(&t.kps)
            .map(|(a, b)| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt())
            .fold(0f32, f32::max);
        let ds = (best.score - t.score).abs();
        assert!(
            i >= 0.99 && kp <= 0.5 && ds <= 1e-3,
            "{name}: {who} face {t:?} vs {best:?}: IoU {i}, keypoints {kp} px, score Δ {ds}"
        );
        worst_iou = worst_iou.min(i);
        worst_kp = worst_kp.max(kp);
        worst_score = worst_score.max(ds);
    }
    (worst_iou, worst_kp, worst_score)
}

#[test]
fn scrfd_on_the_cpu_backend_finds_the_faces_onnxruntime_finds() {
    let images = raw_sample(8);
    let det = Scrfd::import_file(detector(), [640, 640]).unwrap();
    assert_eq!(det.heads.len(), 9);
    assert_eq!(det.num_anchors, 2);
    let cfg = DetectConfig {
        score_threshold: 0.3,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = Vec::new();
    let mut ours = Vec::new();
    let mut times = Vec::new();
    for (k, rel) in images.iter().enumerate() {
        let img = rgb(&lfw().join("raw250-sample").join(rel));
        let t0 = Instant::now();
        let (canvas, scale) = letterbox(&img, 640);
        let dets = det.detect_letterboxed(&canvas, scale, &cfg).unwrap();
        times.push(t0.elapsed().as_secs_f64());
        let png = dir.path().join(format!("{k}.png"));
        canvas.save(&png).unwrap();
        manifest.push(serde_json::json!({"png": png, "det_scale": scale}));
        ours.push(dets);
    }
    let mpath = dir.path().join("manifest.json");
    std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = dir.path().join("ort.json");
    let status = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ort_scrfd.py"))
        .arg("--model")
        .arg(detector())
        .arg("--manifest")
        .arg(&mpath)
        .arg("--out")
        .arg(&out)
        .args(["--threshold", "0.3"])
        .status()
        .unwrap();
    assert!(status.success(), "onnxruntime script failed");
    let ort: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let theirs: Vec<Vec<Detection>> = serde_json::from_value(ort["faces"].clone()).unwrap();
    assert_eq!(theirs.len(), images.len());

    let (mut worst_iou, mut worst_kp, mut worst_score) = (1f32, 0f32, 0f32);
    let mut faces = 0;
    for ((rel, o), t) in images.iter().zip(&ours).zip(&theirs) {
        let name = rel.display().to_string();
        let (i1, k1, s1) = matched(&name, o, t, "onnxruntime");
        let (i2, k2, s2) = matched(&name, t, o, "cpu");
        worst_iou = worst_iou.min(i1.min(i2));
        worst_kp = worst_kp.max(k1.max(k2));
        worst_score = worst_score.max(s1.max(s2));
        faces += t.iter().filter(|d| d.score >= 0.5).count();
    }
    let photos_with_face = theirs
        .iter()
        .filter(|t| t.iter().any(|d| d.score >= 0.5))
        .count();
    eprintln!(
        "{} images, {faces} faces ≥ 0.5 ({photos_with_face} images with one): worst IoU {worst_iou:.5}, \
         worst keypoint {worst_kp:.4} px, worst score Δ {worst_score:.2e}; latency at 640×640, \
         1 thread: cpu {:.1} ms (median, incl. letterbox, decode, NMS), onnxruntime {:.1} ms \
         (median session.run)",
        images.len(),
        median(times) * 1e3,
        ort["latency_ms"]["median"].as_f64().unwrap()
    );
    // Not vacuous: LFW photos are framed on a face.
    assert!(
        photos_with_face * 10 >= images.len() * 9,
        "only {photos_with_face} of {} images have a face",
        images.len()
    );
}

#[test]
fn crops_aligned_from_raw_photos_embed_like_aligned112() {
    let images = raw_sample(4);
    let det = Scrfd::import_file(detector(), [640, 640]).unwrap();
    let retry = Scrfd::import_file(detector(), [320, 320]).unwrap();
    // aligned112's rule (data README): the detection nearest the centre with score > 0.3, at
    // 640×640, or at 320×320 for the close-ups where 640 finds none.
    let cfg = DetectConfig {
        score_threshold: 0.3,
        ..Default::default()
    };
    let pre = Preprocessing::default();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for rel in &images {
        let img = rgb(&lfw().join("raw250-sample").join(rel));
        let mut dets = det.detect(&img, &cfg).unwrap();
        if dets.is_empty() {
            dets = retry.detect(&img, &cfg).unwrap();
        }
        let face = pick_central(&dets, img.width() as usize, img.height() as usize)
            .unwrap_or_else(|| panic!("{}: no face", rel.display()));
        let crop = align_face(&img, &face.kps).unwrap();
        ours.extend(pixels_to_chw(crop.as_raw(), 112, 112, &pre));
        theirs.extend(load_face(lfw().join("aligned112").join(rel), &pre).unwrap());
    }
    let graph = onnx::import_file(teacher()).unwrap();
    let n = images.len();
    let (mut sum, mut worst) = (0f64, 1f64);
    // In batches of 16: the CPU backend keeps a batch's activations alive at once.
    for start in (0..n).step_by(16) {
        let b = (n - start).min(16);
        let per = 3 * 112 * 112;
        let a = cpu::forward(&graph, &ours[start * per..][..b * per], b).unwrap();
        let t = cpu::forward(&graph, &theirs[start * per..][..b * per], b).unwrap();
        for i in 0..b {
            let c = cosine(&a[i * 512..][..512], &t[i * 512..][..512]);
            if c < 0.97 {
                eprintln!("{}: cosine {c:.4}", images[start + i].display());
            }
            sum += c;
            worst = worst.min(c);
        }
    }
    let mean = sum / n as f64;
    eprintln!("{n} images: mean cosine to aligned112 {mean:.5}, worst {worst:.5}");
    assert!(mean >= 0.99, "mean cosine {mean}");
}

#[test]
fn the_detector_rejects_what_it_cannot_run() {
    let e = Scrfd::import_file(detector(), [600, 600])
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 32"), "{e}");
    // A recognition network is not a detector: its PReLU is named, not silently skipped.
    let e = Scrfd::import_file(teacher(), [640, 640])
        .unwrap_err()
        .to_string();
    assert!(e.contains("PRelu"), "{e}");
    let e = Scrfd::import_bytes(b"garbage", "x", [640, 640])
        .unwrap_err()
        .to_string();
    assert!(e.contains("ONNX"), "{e}");
    // A photo without pixels is refused, not letterboxed (a division by its zero side).
    let det = Scrfd::import_file(detector(), [320, 320]).unwrap();
    for (w, h) in [(0, 0), (0, 40), (40, 0)] {
        let e = det
            .detect(&image::RgbImage::new(w, h), &DetectConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing to detect"), "{w}×{h}: {e}");
    }
}

/// The detector as a multi-output graph on the wgpu engine (float path) finds the faces the CPU
/// backend finds, with the same tolerances as against onnxruntime; head values agree to
/// 1e-4 of their range. With `--nocapture` it prints both latencies.
#[test]
fn scrfd_on_the_engine_finds_the_faces_the_cpu_backend_finds() {
    use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
    let images = raw_sample(3);
    let det = Scrfd::import_file(detector(), [640, 640]).unwrap();
    let gpu = request_blocking(&GpuOptions::default()).expect("a GPU adapter (lavapipe in CI)");
    let model = GpuModel::from_graph_with_outputs(&gpu, &det.graph, &det.head_values(), 1)
        .expect("the engine compiles the detector");
    let cfg = DetectConfig {
        score_threshold: 0.3,
        ..Default::default()
    };
    let (mut t_engine, mut t_ref) = (Vec::new(), Vec::new());
    let (mut worst_iou, mut worst_kp, mut worst_head) = (1f32, 0f32, 0f32);
    let mut faces = 0;
    for rel in &images {
        let name = rel.display().to_string();
        let img = rgb(&lfw().join("raw250-sample").join(rel));
        let (canvas, scale) = letterbox(&img, 640);
        let chw = efq_shared::detect::normalize(&canvas);
        let t = Instant::now();
        let want = cpu::forward_values(&det.graph, &chw, 1, &det.head_values()).unwrap();
        t_ref.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got = model
            .forward_values_blocking(Images::Nchw(&chw), 1)
            .unwrap();
        t_engine.push(t.elapsed().as_secs_f64());
        for (g, w) in got.iter().zip(&want) {
            let range = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst_head = worst_head.max(diff / range);
        }
        let ours = det.detect_from_heads(&got, scale, &cfg).unwrap();
        let theirs = det.detect_from_heads(&want, scale, &cfg).unwrap();
        let (i1, k1, _) = matched(&name, &ours, &theirs, "cpu");
        let (i2, k2, _) = matched(&name, &theirs, &ours, "engine");
        worst_iou = worst_iou.min(i1.min(i2));
        worst_kp = worst_kp.max(k1.max(k2));
        faces += theirs.iter().filter(|d| d.score >= 0.5).count();
    }
    eprintln!(
        "{} images, {faces} faces ≥ 0.5: worst IoU {worst_iou:.5}, worst keypoint {worst_kp:.4} px, \
         worst head difference {worst_head:.2e} of range; network at 640×640: engine ({}) {:.1} ms, \
         cpu {:.1} ms (median)",
        images.len(),
        gpu.adapter().name,
        median(t_engine) * 1e3,
        median(t_ref) * 1e3,
    );
    assert!(faces >= images.len(), "found only {faces} faces");
    assert!(
        worst_head <= 1e-4,
        "head values differ by {worst_head} of their range"
    );
}
