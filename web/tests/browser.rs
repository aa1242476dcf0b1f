//! The bindings in a real browser (headless Chromium through `wasm-bindgen-test`; WebGPU is
//! SwiftShader there). The fixture is written natively by `web-tool fixture` before this test
//! is compiled (`scripts/test.sh` does it; `web/test.sh` runs just this): a packed model, a few
//! LFW crops as RGB bytes, and the embeddings the native CPU backend computed for them. The
//! browser's WebGPU engine and the CPU backend compiled to wasm must both reproduce them.
#![cfg(target_arch = "wasm32")]

use efq_web::{DEFAULT_FLOAT_DOT, FaceDetector, Verifier, align_native};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const MODEL: &[u8] = include_bytes!("../../out/web/fixture/model.efq");
const IMAGES: &[u8] = include_bytes!("../../out/web/fixture/images.rgb");
const RAW: &[u8] = include_bytes!("../../out/web/fixture/raw.f32");
const EMBEDDINGS: &[u8] = include_bytes!("../../out/web/fixture/embeddings.f32");
const DIM: usize = 512;
const DETECTOR: &[u8] = include_bytes!("../../out/web/fixture/detector.onnx");
const PHOTO: &[u8] = include_bytes!("../../out/web/fixture/photo.rgb");
const FACES: &str = include_str!("../../out/web/fixture/faces.json");
const CROP: &[u8] = include_bytes!("../../out/web/fixture/crop.rgba");

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Width and height of the fixture's raw photo (`PHOTO`).
fn photo_size() -> [u32; 2] {
    let faces: serde_json::Value = serde_json::from_str(FACES).unwrap();
    ["width", "height"].map(|k| faces[k].as_u64().unwrap() as u32)
}

fn n() -> usize {
    IMAGES.len() / (112 * 112 * 3)
}

fn rgba() -> Vec<u8> {
    IMAGES
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

/// Smallest per-row cosine of two `n × DIM` matrices.
fn min_cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.chunks(DIM)
        .zip(b.chunks(DIM))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .fold(f64::INFINITY, f64::min)
}

fn log(s: &str) {
    web_sys_log(s);
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn web_sys_log(s: &str);
}

#[wasm_bindgen_test]
async fn cpu_path_in_wasm_equals_the_native_cpu_backend() {
    let v = Verifier::load_native(MODEL, "cpu", false).await.unwrap();
    assert_eq!(v.backend(), "cpu");
    let want = floats(EMBEDDINGS);
    let got = v.embed_native(&rgba(), n(), 4).await.unwrap();
    let c = min_cosine(&got, &want);
    log(&format!(
        "cpu-wasm vs native: min cosine {c}, bit-exact {}",
        got == want
    ));
    assert!(c >= 0.99999, "cpu path in wasm: cosine {c} to native");
    // Same code, exact integer arithmetic: the raw outputs agree bit for bit.
    assert_eq!(
        v.forward(IMAGES.to_vec(), n(), 3).await.ok().unwrap(),
        floats(RAW)
    );
}

#[wasm_bindgen_test]
async fn webgpu_engine_in_browser_equals_the_native_cpu_backend() {
    let v = Verifier::load_native(MODEL, "webgpu", DEFAULT_FLOAT_DOT)
        .await
        .unwrap();
    assert_eq!(v.backend(), "webgpu");
    log(&format!("webgpu: {}", v.describe()));
    let want = floats(EMBEDDINGS);
    // RGBA from a canvas, normalised on the GPU.
    let got = v.embed_native(&rgba(), n(), 4).await.unwrap();
    let c = min_cosine(&got, &want);
    // Normalised NCHW input: the raw outputs of the integer path.
    let raw = v.forward(IMAGES.to_vec(), n(), 3).await.ok().unwrap();
    let raw_want = floats(RAW);
    let max_diff = raw
        .iter()
        .zip(&raw_want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    log(&format!(
        "webgpu vs native: embeddings min cosine {c}; raw outputs bit-exact {}, max |diff| {max_diff}",
        raw == raw_want
    ));
    assert!(
        c >= 0.99999,
        "webgpu engine in the browser: cosine {c} to native"
    );
    let rc = min_cosine(&raw, &raw_want);
    assert!(rc >= 0.99999, "webgpu raw outputs: cosine {rc} to native");
}

#[wasm_bindgen_test]
async fn verdicts_and_errors() {
    let v = Verifier::load_native(MODEL, "cpu", false).await.unwrap();
    let img = |i: usize| rgba()[i * 112 * 112 * 4..(i + 1) * 112 * 112 * 4].to_vec();
    let same: serde_json::Value =
        serde_json::from_str(&v.verify(img(0), img(0), 4).await.ok().unwrap()).unwrap();
    assert!((same["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(same["same"], serde_json::Value::Bool(true));
    // Wrong sizes and bad files are errors that say what is wrong.
    let e = v.embed_native(&img(0)[..100], 1, 4).await.unwrap_err();
    assert!(e.contains("expected 1 image(s) of 112×112"), "{e}");
    let e = Verifier::load_native(b"not a model at all", "cpu", false)
        .await
        .err()
        .unwrap();
    assert!(e.starts_with("not a usable EfQuantFace model"), "{e}");
    let e = Verifier::load_native(MODEL, "vulkan", false)
        .await
        .err()
        .unwrap();
    assert!(e.contains("unknown backend"), "{e}");
}

#[wasm_bindgen_test]
async fn verify_agrees_between_paths() {
    let cpu = Verifier::load_native(MODEL, "cpu", false).await.unwrap();
    let gpu = Verifier::load_native(MODEL, "webgpu", DEFAULT_FLOAT_DOT)
        .await
        .unwrap();
    let px = rgba();
    let img = |i: usize| px[i * 112 * 112 * 4..(i + 1) * 112 * 112 * 4].to_vec();
    for (a, b) in [(0, 1), (2, 3), (1, 3)] {
        let c: serde_json::Value =
            serde_json::from_str(&cpu.verify(img(a), img(b), 4).await.ok().unwrap()).unwrap();
        let g: serde_json::Value =
            serde_json::from_str(&gpu.verify(img(a), img(b), 4).await.ok().unwrap()).unwrap();
        log(&format!("verify {a}-{b}: cpu {c} webgpu {g}"));
        let (sc, sg) = (
            c["similarity"].as_f64().unwrap(),
            g["similarity"].as_f64().unwrap(),
        );
        assert!((sc - sg).abs() < 1e-4, "pair {a}-{b}: cpu {sc} webgpu {sg}");
        assert_eq!(c["same"], g["same"]);
    }
}

#[wasm_bindgen_test]
async fn concurrent_requests_are_refused_not_garbled() {
    let v = Verifier::load_native(MODEL, "webgpu", DEFAULT_FLOAT_DOT)
        .await
        .unwrap();
    let px = rgba();
    let one = &px[..112 * 112 * 4];
    let (a, b) = futures_join(v.embed_native(one, 1, 4), v.embed_native(one, 1, 4)).await;
    let want = &floats(EMBEDDINGS)[..DIM];
    assert!(min_cosine(&a.unwrap(), want) >= 0.99999);
    let e = b.unwrap_err();
    assert!(e.contains("busy"), "{e}");
}

/// Polls both futures to completion (the second starts while the first is in flight).
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        use std::task::Poll;
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// The engine's f32 multiply-add convolution path (its default on software adapters) in the
/// browser: bit-exact too. (At engine f2101c6 SwiftShader did not re-zero a loop-scoped
/// accumulator array and this gave cosine 0.51; the kernel now zeroes it explicitly.)
#[wasm_bindgen_test]
async fn engine_float_dot_path_in_browser() {
    let v = Verifier::load_native(MODEL, "webgpu", true).await.unwrap();
    let got = v.embed_native(&rgba(), n(), 4).await.unwrap();
    let c = min_cosine(&got, &floats(EMBEDDINGS));
    assert!(c >= 0.99999, "float_dot path: cosine {c} to native");
}

/// SCRFD in the browser, on WebGPU (engine float path) and on the CPU backend in wasm, finds
/// the face the native CPU backend found in a raw LFW photo: IoU ≥ 0.99, keypoints within 0.5 px;
/// the aligned crops differ by at most a few grey levels.
#[wasm_bindgen_test]
async fn face_detection_in_browser_equals_the_native_cpu_backend() {
    let want: serde_json::Value = serde_json::from_str(FACES).unwrap();
    let [w, h] = photo_size().map(|v| v as usize);
    let faces = want["report"]["faces"].as_array().unwrap();
    let chosen = want["report"]["chosen"].as_u64().unwrap() as usize;
    let f = |v: &serde_json::Value| -> Vec<f32> {
        let flat: Vec<f32> = match v.as_array() {
            Some(a) if a.iter().all(|x| x.is_array()) => a
                .iter()
                .flat_map(|p| {
                    p.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                })
                .collect(),
            Some(a) => a.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            None => panic!("not an array: {v}"),
        };
        flat
    };
    for backend in ["cpu", "webgpu"] {
        let d = FaceDetector::load_native(DETECTOR, backend).await.unwrap();
        let t = efq_web::now_ms();
        let got = d.detect_native(PHOTO, w, h, 3).await.unwrap();
        let ms = efq_web::now_ms() - t;
        assert_eq!(
            got.faces.len(),
            faces.len(),
            "{backend}: faces {:?}",
            got.faces
        );
        assert_eq!(got.chosen, Some(chosen), "{backend}");
        let g = &got.faces[chosen];
        let bw = f(&faces[chosen]["bbox"]);
        let kw = f(&faces[chosen]["kps"]);
        let iou = efq_shared::detect::iou(&g.bbox, &[bw[0], bw[1], bw[2], bw[3]]);
        let kp = g
            .kps
            .iter()
            .enumerate()
            .map(|(i, p)| ((p[0] - kw[2 * i]).powi(2) + (p[1] - kw[2 * i + 1]).powi(2)).sqrt())
            .fold(0f32, f32::max);
        let kps: Vec<f32> = g.kps.iter().flatten().copied().collect();
        let crop = align_native(PHOTO, w, h, 3, &kps).unwrap();
        let grey = crop
            .iter()
            .zip(CROP)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        log(&format!(
            "detector on {backend}: {} faces, IoU {iou:.5}, keypoints {kp:.4} px, crop max |Δ| {grey}, {ms:.0} ms",
            got.faces.len()
        ));
        assert!(iou >= 0.99, "{backend}: IoU {iou}");
        assert!(kp <= 0.5, "{backend}: keypoints {kp} px off");
        assert!(
            grey <= 8,
            "{backend}: aligned crops differ by {grey} grey levels"
        );
    }
    let e = FaceDetector::load_native(b"not onnx", "cpu")
        .await
        .err()
        .unwrap();
    assert!(e.contains("not a usable SCRFD detector"), "{e}");
}

/// Several photos in one call (`detectBatch`, one photo per thread in the threaded build) give,
/// photo by photo, exactly what one call per photo gives — a face-less grey photo among them
/// included — and a pixel buffer that does not match the sizes given is refused with a message
/// naming what is wrong.
#[wasm_bindgen_test]
async fn detect_batch_equals_one_photo_at_a_time_and_refuses_bad_layouts() {
    let [w, h] = photo_size();
    let grey = vec![128u8; 96 * 80 * 3];
    let d = FaceDetector::load_native(DETECTOR, "cpu").await.unwrap();
    let pixels = [PHOTO, &grey[..], PHOTO].concat();
    let (widths, heights) = ([w, 96, w], [h, 80, h]);
    let batch = d
        .detect_batch_native(&pixels, &widths, &heights, 3)
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    for (i, (got, px)) in batch.iter().zip([PHOTO, &grey[..], PHOTO]).enumerate() {
        let one = d
            .detect_native(px, widths[i] as usize, heights[i] as usize, 3)
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_string(got).unwrap(),
            serde_json::to_string(&one).unwrap(),
            "photo {i}"
        );
    }
    assert!(!batch[0].faces.is_empty() && batch[1].faces.is_empty() && batch[1].chosen.is_none());
    for (widths, heights, bytes, wanted) in [
        (vec![w, 96], vec![h], pixels.len(), "1 heights"),
        (
            vec![w, 96, w],
            vec![h, 80, h],
            pixels.len() - 1,
            "do not fit",
        ),
        (vec![w, 96], vec![h, 80], pixels.len(), "bytes are left"),
        (
            vec![u32::MAX, 2],
            vec![u32::MAX, 2],
            pixels.len(),
            "do not fit",
        ),
    ] {
        let e = d
            .detect_batch_native(&pixels[..bytes], &widths, &heights, 3)
            .await
            .err()
            .unwrap();
        assert!(e.contains(wanted), "{widths:?} × {heights:?}: {e}");
    }
}
