//! The wgpu engine computes the same function as the shared CPU backend on whole networks:
//! the real `w600k_mbf` teacher (float path) and its quantized students (integer path, bit for
//! bit), generated iresnets, and a model that went through the packed file format. On the real
//! students the CPU backend in turn equals the oracle bit for bit, so the engine does too (the
//! oracle takes seconds per 112×112 image, too slow for every case here; the engine's kernels
//! are checked against it directly on small layers, wgpu-kernels/tests/kernels.rs).

use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::builders;
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::graph::Graph;
use efq_shared::preprocess::load_face;
use efq_shared::quant::{QuantConfig, quantize_graph};
use efq_shared::{cpu, onnx, reference};
use efq_tests::{cosine, lfw, teacher};

const N: usize = 4;

/// The first N LFW test crops: RGB bytes and the normalised NCHW tensor the CPU backend eats.
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
fn real_teacher_float_path_matches_the_cpu_backend() {
    let gpu = gpu();
    let graph = onnx::import_file(teacher()).unwrap();
    let (_, x) = lfw_images();
    let model = GpuModel::from_graph(&gpu, &graph, N).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), N).unwrap();
    let want = cpu::forward(&graph, &x, N).unwrap();
    let c = min_cosine(&got, &want, 512);
    assert!(c >= 0.99999, "float teacher: engine~cpu cosine {c}");
}

#[test]
fn real_quantized_students_match_the_cpu_backend_bit_for_bit_through_the_packed_file() {
    let gpu = gpu();
    let graph = onnx::import_file(teacher()).unwrap();
    let (rgb, x) = lfw_images();
    let ranges = cpu::input_absmax(&graph, &x, N).unwrap();
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
        let want = cpu::forward(&student, &x, N).unwrap();
        assert_eq!(
            got, want,
            "{cfg}: engine and the CPU backend's integer path differ"
        );
        // Normalisation on the GPU from raw RGB bytes: same embeddings.
        let from_rgb = model.embed_blocking(Images::Rgb8(&rgb), N).unwrap();
        let c = min_cosine(&from_rgb, &want, 512);
        assert!(c >= 0.99999, "{cfg}: RGB path cosine {c}");
    }
}

/// The chain's other link on a real network: the CPU backend's fused, threaded integer path
/// equals the oracle's plain loops bit for bit on one LFW crop through the real students at 8
/// bits and at 4 bits with split grids (about 3 s per image on the oracle on a 2-core machine).
#[test]
fn real_quantized_students_on_the_cpu_backend_equal_the_oracle_bit_for_bit() {
    let graph = onnx::import_file(teacher()).unwrap();
    let (_, x) = lfw_images();
    let ranges = cpu::input_absmax(&graph, &x, N).unwrap();
    let one = &x[..3 * 112 * 112];
    for cfg in ["w8a8", "w4a4-split"] {
        let q = QuantConfig::parse(cfg.trim_end_matches("-split")).unwrap();
        let student = quantize_graph(&graph, &q, &ranges).unwrap();
        let student = if cfg.ends_with("-split") {
            builders::split_activation_grids(student)
        } else {
            student
        };
        let want = reference::forward(&student, one, 1).unwrap();
        assert!(want.iter().any(|v| *v != 0.0));
        assert_eq!(cpu::forward(&student, one, 1).unwrap(), want, "{cfg}");
    }
}

/// A pruned teacher (20 % of each channel group removed: channel counts that are no longer
/// multiples of the kernels' tiles) quantized to w8a8 runs on the engine exactly as on the CPU
/// backend, which equals the oracle.
#[test]
fn pruned_quantized_student_matches_the_cpu_backend_and_the_oracle_bit_for_bit() {
    use efq_shared::prune::{self, Scope};
    let gpu = gpu();
    let graph = prune::prune(&onnx::import_file(teacher()).unwrap(), 0.2, Scope::PerSpace).unwrap();
    let (_, x) = lfw_images();
    let ranges = cpu::input_absmax(&graph, &x, N).unwrap();
    let q = QuantConfig::parse("w8a8").unwrap();
    let student = quantize_graph(&graph, &q, &ranges).unwrap();
    let bytes = PackedModel::new(student.clone(), Some(q))
        .unwrap()
        .to_bytes()
        .unwrap();
    let model = GpuModel::from_bytes(&gpu, &bytes).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), N).unwrap();
    let want = cpu::forward(&student, &x, N).unwrap();
    assert!(want.iter().any(|v| *v != 0.0));
    assert_eq!(got, want, "pruned w8a8: engine and the CPU backend differ");
    let one = &x[..3 * 112 * 112];
    assert_eq!(reference::forward(&student, one, 1).unwrap(), want[..512]);
}

fn iresnet_student(depth: usize, cfg: &str) -> (Graph, Vec<f32>) {
    let graph = builders::iresnet(depth, 5).unwrap();
    let x = builders::random_images(2, [3, 112, 112], 9);
    let ranges = cpu::input_absmax(&graph, &x, 2).unwrap();
    let student = quantize_graph(&graph, &QuantConfig::parse(cfg).unwrap(), &ranges).unwrap();
    (student, x)
}

#[test]
fn generated_iresnet18_student_matches_the_cpu_backend_bit_for_bit() {
    let gpu = gpu();
    let (student, x) = iresnet_student(18, "w4a8");
    let model = GpuModel::from_graph(&gpu, &student, 2).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), 2).unwrap();
    let want = cpu::forward(&student, &x, 2).unwrap();
    assert!(want.iter().any(|v| *v != 0.0));
    assert_eq!(got, want);
}

#[test]
fn generated_iresnet50_student_matches_the_cpu_backend_bit_for_bit() {
    let gpu = gpu();
    let (student, x) = iresnet_student(50, "w6a6");
    let model = GpuModel::from_graph(&gpu, &student, 2).unwrap();
    let got = model.forward_blocking(Images::Nchw(&x), 2).unwrap();
    let want = cpu::forward(&student, &x, 2).unwrap();
    assert_eq!(got, want);
}
