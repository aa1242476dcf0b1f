//! The real teacher computes the same embeddings in libtorch, on the shared CPU backend and in
//! onnxruntime; its quantized student computes the same function in libtorch (fake
//! quantization) and in the CPU backend's integer path (which equals the oracle's:
//! engine_agreement.rs).

use std::process::Command;

use efq_shared::format::Preprocessing;
use efq_shared::preprocess::load_face;
use efq_shared::quant::{QuantConfig, quantize_graph};
use efq_shared::{cpu, onnx, reference};
use efq_tests::{cosine, lfw, python, teacher};
use efq_trainer::embed::FaceFolder;
use efq_trainer::net::TchNet;

const N: usize = 6;

fn first_images() -> (Vec<String>, Vec<f32>) {
    let root = lfw().join("insightface112");
    let folder = FaceFolder::scan(&root).unwrap();
    let names: Vec<String> = folder.images[..N]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let pixels = names
        .iter()
        .flat_map(|n| load_face(root.join(n), &Preprocessing::default()).unwrap())
        .collect();
    (names, pixels)
}

/// onnxruntime's raw outputs of `model` on our own decoded pixels (`n` NCHW images), through
/// `bench/ort_lfw.py --dump`: compares networks, not JPEG decoders.
fn onnxruntime_raw(model: &std::path::Path, x: &[f32], n: usize, what: &str) -> Vec<Vec<f32>> {
    serde_json::from_value(onnxruntime_dump(model, x, n, what)["raw"].clone()).unwrap()
}

/// The whole `--dump` report: the images' names (`images`) and raw outputs (`raw`).
fn onnxruntime_dump(model: &std::path::Path, x: &[f32], n: usize, what: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("input.f32");
    std::fs::write(
        &raw,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let dump = dir.path().join("ort.json");
    let status = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/ort_lfw.py"))
        .arg("--model")
        .arg(model)
        .arg("--lfw")
        .arg(lfw())
        .args(["--dump", &n.to_string(), "--dump-out"])
        .arg(&dump)
        .arg("--input-raw")
        .arg(&raw)
        .status()
        .unwrap();
    assert!(status.success(), "onnxruntime rejected {what}");
    serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap()
}

fn tch_forward(graph: &efq_shared::graph::Graph, x: &[f32]) -> Vec<f32> {
    let net = TchNet::new(graph, tch::Device::Cpu).unwrap();
    let t = tch::Tensor::from_slice(x).reshape([N as i64, 3, 112, 112]);
    let y = tch::no_grad(|| net.forward(&t).unwrap());
    Vec::<f32>::try_from(y.flatten(0, -1)).unwrap()
}

#[test]
fn teacher_embeddings_agree_across_tch_the_cpu_backend_and_onnxruntime() {
    let graph = onnx::import_file(teacher()).unwrap();
    assert_eq!(graph.embedding_dim().unwrap(), 512);
    let (names, x) = first_images();

    let ort = onnxruntime_dump(&teacher(), &x, N, "the teacher");
    let ort_names: Vec<String> = serde_json::from_value(ort["images"].clone()).unwrap();
    assert_eq!(ort_names, names, "both sides must embed the same images");
    let ort_raw: Vec<Vec<f32>> = serde_json::from_value(ort["raw"].clone()).unwrap();

    let t = tch_forward(&graph, &x);
    let r = cpu::forward(&graph, &x, N).unwrap();
    for i in 0..N {
        let (ti, ri, oi) = (&t[i * 512..][..512], &r[i * 512..][..512], &ort_raw[i][..]);
        let (tr, to, ro) = (cosine(ti, ri), cosine(ti, oi), cosine(ri, oi));
        eprintln!(
            "{}: tch~cpu {tr:.12}, tch~ort {to:.12}, cpu~ort {ro:.12}",
            names[i]
        );
        assert!(
            tr >= 0.99999 && to >= 0.99999 && ro >= 0.99999,
            "{}: tch~cpu {tr}, tch~ort {to}, cpu~ort {ro}",
            names[i]
        );
    }
    // Different people must not look alike: guards against a degenerate (constant) network.
    assert!(cosine(&t[..512], &t[5 * 512..][..512]) < 0.9);
}

#[test]
fn quantized_student_in_tch_equals_the_cpu_backends_integer_path_bit_for_bit() {
    let graph = onnx::import_file(teacher()).unwrap();
    let (_, x) = first_images();
    let ranges = cpu::input_absmax(&graph, &x, N).unwrap();
    let teacher_out = cpu::forward(&graph, &x, N).unwrap();
    for cfg in ["w8a8", "w6a6", "w4a4", "w4a4-split", "w4a4-dw8"] {
        let bits = QuantConfig::parse(cfg.trim_end_matches("-split")).unwrap();
        let student = quantize_graph(&graph, &bits, &ranges).unwrap();
        let student = if cfg.ends_with("-split") {
            efq_shared::builders::split_activation_grids(student)
        } else {
            student
        };
        let t = tch_forward(&student, &x);
        let r = cpu::forward(&student, &x, N).unwrap();
        // Bit for bit: a one-ulp difference would cascade through the rounding of 50 layers.
        assert_eq!(
            t, r,
            "{cfg}: libtorch and the CPU backend's integer path differ"
        );
        // The student really is quantized (it moved away from the teacher), and at 8 bits
        // plain post-training quantization already stays close. (At 4 bits absmax calibration
        // on six images is destructive: that is what the fine-tuning is for.)
        let c = cosine(&r[..512], &teacher_out[..512]);
        assert!(c < 0.99999, "{cfg}: student~teacher cosine {c}");
        if cfg == "w8a8" {
            assert!(c > 0.95, "w8a8 student~teacher cosine {c}");
        }
    }
}

#[test]
fn generated_iresnet18_onnx_runs_in_onnxruntime_like_the_cpu_backend() {
    // The generated file must be ONNX that onnxruntime accepts, in InsightFace's export layout,
    // and mean what our importer thinks it means.
    let g = efq_shared::builders::iresnet(18, 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("r18.onnx");
    std::fs::write(&model, onnx::export_bytes(&g).unwrap()).unwrap();
    let imported = onnx::import_file(&model).unwrap();
    let (_, x) = first_images();
    let x = &x[..2 * 3 * 112 * 112];
    let ort_raw = onnxruntime_raw(&model, x, 2, "the generated iresnet18");
    let r = cpu::forward(&imported, x, 2).unwrap();
    for i in 0..2 {
        let c = cosine(&r[i * 512..][..512], &ort_raw[i]);
        assert!(c >= 0.99999, "image {i}: cpu~onnxruntime cosine {c}");
    }
}

/// `trainer prune`'s default on the real teacher (Taylor scores from one batch of the clean
/// set, 20 % of each group removed), written as ONNX: onnxruntime, libtorch and the CPU
/// backend compute the same embeddings, and the pruned network still tells people apart.
#[test]
fn pruned_teacher_onnx_runs_in_onnxruntime_like_tch_and_the_cpu_backend() {
    use efq_shared::prune::{self, Scope};
    let imported = onnx::import_file_with_conventions(teacher()).unwrap();
    let g = &imported.graph;
    let pre = efq_trainer::conventions::for_onnx(&imported, &teacher()).unwrap();
    let sp = prune::spaces(g).unwrap();
    let products = efq_trainer::taylor::products(g, &pre, &lfw(), 1, 32, 0).unwrap();
    let kept = prune::select(
        &sp,
        &prune::taylor_scores(&products, &sp),
        0.2,
        Scope::PerSpace,
    )
    .unwrap();
    let pruned = prune::apply(g, &sp, &kept).unwrap();
    assert!(pruned.parameters() * 10 < g.parameters() * 8);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("sp02.onnx");
    std::fs::write(&model, onnx::export_bytes(&pruned).unwrap()).unwrap();
    let reread = onnx::import_file(&model).unwrap();
    let (_, x) = first_images();
    let ort = onnxruntime_raw(&model, &x, N, "the pruned teacher");
    let r = cpu::forward(&reread, &x, N).unwrap();
    let t = tch_forward(&reread, &x);
    for i in 0..N {
        let ri = &r[i * 512..][..512];
        let (ro, rt) = (cosine(ri, &ort[i]), cosine(ri, &t[i * 512..][..512]));
        assert!(
            ro >= 0.99999 && rt >= 0.99999,
            "image {i}: cpu~onnxruntime {ro}, cpu~tch {rt}"
        );
    }
    assert!(cosine(&r[..512], &r[5 * 512..][..512]) < 0.9);
}

/// Deterministic values in [-1, 1) (a 64-bit LCG): weights for a generated graph.
fn lcg_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn upsampling_exports_as_an_onnx_resize_that_onnxruntime_runs_like_the_oracle() {
    // conv s4 → nearest ×2 → conv s4 → Gemm: every upsampled pixel reaches the output, so a
    // Resize that onnxruntime read differently (scales, which source pixel) changes it. Our
    // importer must read the export back as the same upsampling. (A small graph: the oracle
    // runs it.)
    use efq_shared::graph::{ConvAttrs, GraphBuilder, Op, Tensor, Weights};
    let conv = |c_in: usize, c_out: usize, seed: u64| Op::Conv {
        weights: Weights::Float(
            Tensor::new(vec![c_out, c_in, 4, 4], lcg_values(c_out * c_in * 16, seed)).unwrap(),
        ),
        bias: lcg_values(c_out, seed + 1),
        attrs: ConvAttrs {
            stride: [4, 4],
            ..Default::default()
        },
        input_quant: None,
    };
    let mut b = GraphBuilder::new("upsample-check", [3, 112, 112]);
    let down = b.push("down", conv(3, 4, 1), &[GraphBuilder::INPUT]);
    let up = b.push("up", Op::Upsample { factor: 2 }, &[down]);
    let act = b.push(
        "act",
        Op::PRelu {
            slope: vec![0.25; 4],
        },
        &[up],
    );
    let down2 = b.push("down2", conv(4, 4, 3), &[act]);
    let flat = b.push("flat", Op::Flatten, &[down2]);
    let fc = b.push(
        "fc",
        Op::Gemm {
            weights: Weights::Float(Tensor::new(vec![64, 784], lcg_values(64 * 784, 5)).unwrap()),
            bias: lcg_values(64, 6),
            input_quant: None,
        },
        &[flat],
    );
    let g = b.finish(fc).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("upsample.onnx");
    std::fs::write(&model, onnx::export_bytes(&g).unwrap()).unwrap();
    let imported = onnx::import_file(&model).unwrap();
    assert!(
        imported
            .nodes
            .iter()
            .any(|n| matches!(n.op, Op::Upsample { factor: 2 })),
        "the re-imported graph lost its upsampling"
    );
    let (_, x) = first_images();
    let x = &x[..2 * 3 * 112 * 112];
    let ort_raw = onnxruntime_raw(&model, x, 2, "the exported Resize");
    let r = reference::forward(&g, x, 2).unwrap();
    for i in 0..2 {
        let (ours, theirs) = (&r[i * 64..][..64], &ort_raw[i]);
        let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours
            .iter()
            .zip(theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "image {i}: oracle vs onnxruntime differ by {worst} (scale {scale})"
        );
    }
}
