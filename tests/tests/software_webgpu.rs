//! The engine's pipelines compile and compute the CPU backend's answers on SwiftShader, the
//! Vulkan driver Chromium runs WebGPU on where there is no GPU (the page's WebGPU path in CI
//! and on many users' machines). SwiftShader compiles shaders with Subzero, which has cliffs
//! llvmpipe does not: a depthwise kernel with strips of 8 pixels grew it past 17 GB without
//! finishing, and the browser test only saw the page lose its device minutes later. Here the
//! same shaders run natively through wgpu on Chromium's own SwiftShader, in a child process with
//! a time limit, so such a kernel fails in seconds with its cause named.
//!
//! Skipped (with a message) where Chromium's SwiftShader is not installed; `EFQ_SWIFTSHADER_ICD`
//! names another `vk_swiftshader_icd.json`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::detect::{Scrfd, letterbox, normalize};
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::preprocess::load_face;
use efq_shared::quant::{QuantConfig, quantize_graph};
use efq_shared::{cpu, onnx};
use efq_tests::{cosine, detector, lfw, raw_sample, teacher};

/// Where the child must have finished: its work takes seconds on SwiftShader; a pipeline that
/// Subzero cannot compile never finishes, growing by gigabytes a minute.
const LIMIT: Duration = Duration::from_secs(120);
const CHILD: &str = "EFQ_SWIFTSHADER_CHILD";

fn swiftshader_icd() -> Option<PathBuf> {
    let path = std::env::var_os("EFQ_SWIFTSHADER_ICD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/vk_swiftshader_icd.json"));
    path.exists().then_some(path)
}

#[test]
fn the_engine_compiles_and_agrees_on_swiftshader_as_browsers_without_a_gpu_run_it() {
    let Some(icd) = swiftshader_icd() else {
        eprintln!("skipped: Chromium's SwiftShader (vk_swiftshader_icd.json) is not installed");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "swiftshader_child", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env("VK_ICD_FILENAMES", &icd)
        .env("WGPU_BACKEND", "vulkan")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "the engine did not finish on SwiftShader within {} s: a kernel its Subzero \
                 compiler cannot compile (docs/ARCHITECTURE.md, decision 50); browsers without a \
                 GPU would lose the page's device",
                LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "the run on SwiftShader failed: {status}");
}

/// The child: the detector (float path), the teacher (float path) and a w8a8 student (integer
/// path) on SwiftShader, against the CPU backend. Run by the test above, which sets its
/// environment; alone it does nothing.
#[test]
#[ignore = "run by the_engine_compiles_and_agrees_on_swiftshader_… in a child process"]
fn swiftshader_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // As in the browser: no subgroup operations.
    let gpu = request_blocking(&GpuOptions {
        no_subgroups: true,
        ..GpuOptions::default()
    })
    .expect("SwiftShader's Vulkan adapter");
    let name = gpu.adapter().name.clone();
    assert!(
        name.contains("SwiftShader"),
        "the adapter is {name}, not SwiftShader"
    );

    let t = Instant::now();
    let det = Scrfd::import_file(detector(), [640, 640]).unwrap();
    let model = GpuModel::from_graph_with_outputs(&gpu, &det.graph, &det.head_values(), 1)
        .expect("the engine compiles the detector");
    let img = image::open(lfw().join("raw250-sample").join(&raw_sample(1)[0]))
        .unwrap()
        .to_rgb8();
    let chw = normalize(&letterbox(&img, 640).0);
    let got = model
        .forward_values_blocking(Images::Nchw(&chw), 1)
        .unwrap();
    let want = cpu::forward_values(&det.graph, &chw, 1, &det.head_values()).unwrap();
    for (g, w) in got.iter().zip(&want) {
        let range = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * range,
            "detector head differs by {diff} (range {range})"
        );
    }
    eprintln!(
        "SwiftShader: the detector at 640×640 compiled and ran in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let graph = onnx::import_file(teacher()).unwrap();
    let crop = lfw().join("insightface112/Aaron_Peirsol/Aaron_Peirsol_0001.jpg");
    let x = load_face(&crop, &Preprocessing::default()).unwrap();
    let model = GpuModel::from_graph(&gpu, &graph, 1).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), 1).unwrap();
    let c = cosine(&got, &cpu::forward(&graph, &x, 1).unwrap());
    assert!(c >= 0.99999, "float teacher: SwiftShader~cpu cosine {c}");

    let q = QuantConfig::parse("w8a8").unwrap();
    let student = quantize_graph(&graph, &q, &cpu::input_absmax(&graph, &x, 1).unwrap()).unwrap();
    let bytes = PackedModel::new(student.clone(), Some(q))
        .unwrap()
        .to_bytes()
        .unwrap();
    let model = GpuModel::from_bytes(&gpu, &bytes).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), 1).unwrap();
    let c = cosine(&got, &cpu::forward(&student, &x, 1).unwrap());
    assert!(c >= 0.99999, "w8a8 student: SwiftShader~cpu cosine {c}");
    eprintln!(
        "SwiftShader: the teacher and its w8a8 student compiled and ran in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
