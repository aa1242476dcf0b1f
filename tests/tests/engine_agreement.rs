//! The wgpu engine computes the same function as the shared CPU reference on whole networks:
//! the real `w600k_mbf` teacher (float path) and its quantized students (integer path, bit for
//! bit), generated iresnets, and a model that went through the packed file format.

use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::builders;
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::graph::Graph;
use efq_shared::preprocess::load_face;
use efq_shared::quant::{QuantConfig, quantize_graph};
use efq_shared::{onnx, reference};
use efq_tests::{cosine, lfw, teacher};

const N: usize = 4;

/// The first N LFW test crops: RGB bytes and the normalised NCHW tensor the reference eats.
fn lfw_images() -> (Vec<u8>, Vec<f32>) {
    let root = lfw().join("insightface112");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut rgb = Vec::new();
    let mut x = Vec::new();
    for f in &files[..N] {
        rgb.extend(image::open(f).unwrap().to_rgb8().into_raw());
        x.extend(load_face(f, &Preprocessing::default()).unwrap());
    }
    (rgb, x)
}

fn gpu() -> efq_engine::Gpu {
    request_blocking(&GpuOptions::default()).expect("a GPU adapter (lavapipe in CI)")
}

fn min_cosine(a: &[f32], b: &[f32], dim: usize) -> f64 {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| cosine(x, y))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn real_teacher_float_path_matches_reference() {
    let gpu = gpu();
    let graph = onnx::import_file(teacher()).unwrap();
    let (_, x) = lfw_images();
    let model = GpuModel::from_graph(&gpu, &graph, N).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), N).unwrap();
    let want = reference::forward(&graph, &x, N).unwrap();
    let c = min_cosine(&got, &want, 512);
    assert!(c >= 0.99999, "float teacher: engine~reference cosine {c}");
}

#[test]
fn real_quantized_students_match_reference_bit_for_bit_through_the_packed_file() {
    let gpu = gpu();
    let graph = onnx::import_file(teacher()).unwrap();
    let (rgb, x) = lfw_images();
    let ranges = reference::input_absmax(&graph, &x, N).unwrap();
    for cfg in ["w8a8", "w6a6", "w4a4", "w4a4-split", "w4a4-dw8"] {
        let q = QuantConfig::parse(cfg.trim_end_matches("-split")).unwrap();
        let student = quantize_graph(&graph, &q, &ranges).unwrap();
        let student = if cfg.ends_with("-split") {
            builders::split_activation_grids(student)
        } else {
            student
        };
        let bytes = PackedModel::new(student.clone(), Some(q))
            .unwrap()
            .to_bytes()
            .unwrap();
        let model = GpuModel::from_bytes(&gpu, &bytes).unwrap();
        assert_eq!(
            model.info().quant.as_deref(),
            Some(cfg.trim_end_matches("-split"))
        );
        let got = model.forward_blocking(Images::Nchw(&x), N).unwrap();
        let want = reference::forward(&student, &x, N).unwrap();
        assert_eq!(got, want, "{cfg}: engine and integer reference differ");
        // Normalisation on the GPU from raw RGB bytes: same embeddings.
        let from_rgb = model.embed_blocking(Images::Rgb8(&rgb), N).unwrap();
        let c = min_cosine(&from_rgb, &want, 512);
        assert!(c >= 0.99999, "{cfg}: RGB path cosine {c}");
    }
}

fn iresnet_student(depth: usize, cfg: &str) -> (Graph, Vec<f32>) {
    let graph = builders::iresnet(depth, 5).unwrap();
    let x = builders::random_images(2, [3, 112, 112], 9);
    let ranges = reference::input_absmax(&graph, &x, 2).unwrap();
    let student = quantize_graph(&graph, &QuantConfig::parse(cfg).unwrap(), &ranges).unwrap();
    (student, x)
}

#[test]
fn generated_iresnet18_student_matches_reference_bit_for_bit() {
    let gpu = gpu();
    let (student, x) = iresnet_student(18, "w4a8");
    let model = GpuModel::from_graph(&gpu, &student, 2).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), 2).unwrap();
    let want = reference::forward(&student, &x, 2).unwrap();
    assert!(want.iter().any(|v| *v != 0.0));
    assert_eq!(got, want);
}

#[test]
fn generated_iresnet50_student_matches_reference_bit_for_bit() {
    let gpu = gpu();
    let (student, x) = iresnet_student(50, "w6a6");
    let model = GpuModel::from_graph(&gpu, &student, 2).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), 2).unwrap();
    let want = reference::forward(&student, &x, 2).unwrap();
    assert_eq!(got, want);
}
