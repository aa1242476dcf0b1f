//! The shared contract on generated networks: ONNX import/export, BatchNorm folding, the packed
//! file format, the agreement of the float and integer paths (on the oracle), and the CPU
//! backend's independence of batching, threads and fusion.

use efq_shared::builders::{iresnet, random_images, tiny_mobilefacenet};
use efq_shared::format::PackedModel;
use efq_shared::graph::{Op, Weights};
use efq_shared::quant::{QuantConfig, quantize_graph};
use efq_shared::{Error, cpu, onnx, reference};

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn iresnet18_in_insightface_onnx_layout_imports_and_matches_the_generated_graph() {
    let g = iresnet(18, 7).unwrap();
    let bytes = onnx::export_bytes(&g).unwrap();
    let imported = onnx::import_bytes(&bytes, "r18").unwrap();
    // The head's BN2d and BN1d fold into the FC; the block-input BatchNorms must stay.
    let affines = |g: &efq_shared::graph::Graph| {
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Affine { .. }))
            .count()
    };
    assert_eq!(affines(&g), 8 + 2);
    assert_eq!(affines(&imported), 8);
    assert_eq!(imported.embedding_dim().unwrap(), 512);
    let x = random_images(2, [3, 112, 112], 1);
    let a = cpu::forward(&g, &x, 2).unwrap();
    let b = cpu::forward(&imported, &x, 2).unwrap();
    assert!(
        max_rel_err(&a, &b) < 1e-4,
        "rel err {}",
        max_rel_err(&a, &b)
    );
}

#[test]
fn every_iresnet_depth_builds_with_the_published_stage_sizes() {
    for (depth, convs) in [
        (18, 1 + 8 * 2 + 4),
        (34, 1 + 16 * 2 + 4),
        (50, 1 + 24 * 2 + 4),
        (100, 1 + 49 * 2 + 4),
    ] {
        let g = iresnet(depth, 1).unwrap();
        let n = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Conv { .. }))
            .count();
        assert_eq!(n, convs, "iresnet{depth}");
        assert_eq!(g.embedding_dim().unwrap(), 512);
    }
    // R50 costs about 6.3 GMAC per 112×112 image.
    let macs = iresnet(50, 1).unwrap().macs().unwrap() as f64 / 1e9;
    assert!((6.0..6.6).contains(&macs), "R50 GMAC {macs}");
    assert!(iresnet(19, 1).is_err());
}

#[test]
fn unsupported_onnx_op_is_an_error_naming_op_and_node() {
    let g = tiny_mobilefacenet(16, 64, 3).unwrap();
    let bytes = onnx::export_bytes(&g).unwrap();
    let mut model = <onnx::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.node[1].op_type = "Softsign".into();
    let name = graph.node[1].name.clone();
    let err = onnx::import_bytes(&prost::Message::encode_to_vec(&model), "x").unwrap_err();
    match err {
        Error::UnsupportedOp { op, node } => {
            assert_eq!(op, "Softsign");
            assert_eq!(node, name);
        }
        other => panic!("wrong error: {other}"),
    }
    assert!(onnx::import_bytes(b"\x08\x07garbage\xff\xff", "x").is_err());
}

fn tiny_student(cfg: &str) -> efq_shared::graph::Graph {
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    let calib = random_images(4, g.input_shape, 5);
    let ranges = cpu::input_absmax(&g, &calib, 4).unwrap();
    quantize_graph(&g, &QuantConfig::parse(cfg).unwrap(), &ranges).unwrap()
}

#[test]
fn packed_file_roundtrips_float_and_every_bit_width() {
    let float = tiny_mobilefacenet(20, 64, 11).unwrap();
    let m = PackedModel::new(float.clone(), None).unwrap();
    let back = PackedModel::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back.graph, float);
    for (cfg, split) in [
        ("w8a8", false),
        ("w6a6", false),
        ("w4a4", false),
        ("w3a8", false),
        ("w2a2", false),
        ("w5a7", false),
        ("w4a4", true),
        ("w6a6", true),
    ] {
        let s = tiny_student(cfg);
        let s = if split {
            efq_shared::builders::split_activation_grids(s)
        } else {
            s
        };
        let m = PackedModel::new(s.clone(), Some(QuantConfig::parse(cfg).unwrap())).unwrap();
        let bytes = m.to_bytes().unwrap();
        let back = PackedModel::from_bytes(&bytes).unwrap();
        assert_eq!(back.graph, s, "{cfg} split {split}");
        assert_eq!(back.manifest, m.manifest);
        let x = random_images(2, s.input_shape, 9);
        assert_eq!(
            cpu::forward(&s, &x, 2).unwrap(),
            cpu::forward(&back.graph, &x, 2).unwrap()
        );
    }
}

#[test]
fn lower_bit_widths_make_smaller_files() {
    let size = |cfg: &str| {
        let mut c = QuantConfig::parse(cfg).unwrap();
        c.first_last_8bit = false;
        let g = tiny_mobilefacenet(20, 64, 11).unwrap();
        let ranges = cpu::input_absmax(&g, &random_images(2, g.input_shape, 5), 2).unwrap();
        let s = quantize_graph(&g, &c, &ranges).unwrap();
        PackedModel::new(s, Some(c)).unwrap().parameter_bytes()
    };
    assert!(size("w2a8") < size("w4a8") && size("w4a8") < size("w8a8"));
}

#[test]
fn integer_path_equals_fake_quant_float_path() {
    for (cfg, split) in [
        ("w8a8", false),
        ("w4a4", false),
        ("w2a8", false),
        ("w4a4", true),
    ] {
        let s = tiny_student(cfg);
        let s = if split {
            efq_shared::builders::split_activation_grids(s)
        } else {
            s
        };
        // The same function computed in float: dequantized weights, fake-quantized inputs.
        let mut fq = s.clone();
        for n in &mut fq.nodes {
            if let Op::Conv { weights, .. } | Op::Gemm { weights, .. } = &mut n.op {
                *weights = Weights::Float(weights.to_float());
            }
        }
        let x = random_images(3, s.input_shape, 21);
        let a = reference::forward(&s, &x, 3).unwrap();
        let b = reference::forward(&fq, &x, 3).unwrap();
        assert!(
            max_rel_err(&a, &b) < 1e-4,
            "{cfg} split {split}: rel err {}",
            max_rel_err(&a, &b)
        );
    }
}

#[test]
fn w8a8_student_stays_close_to_its_float_teacher() {
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    let s = tiny_student("w8a8");
    let x = random_images(4, g.input_shape, 33);
    let a = reference::forward(&g, &x, 4).unwrap();
    let b = reference::forward(&s, &x, 4).unwrap();
    for (ra, rb) in a.chunks(16).zip(b.chunks(16)) {
        assert!(cosine(ra, rb) > 0.99, "cosine {}", cosine(ra, rb));
    }
}

#[test]
fn wrong_input_size_is_rejected() {
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    for err in [
        cpu::forward(&g, &[0.5; 10], 1).unwrap_err(),
        reference::forward(&g, &[0.5; 10], 1).unwrap_err(),
    ] {
        let err = err.to_string();
        assert!(err.contains("expected 1 images"), "{err}");
    }
}

/// The CPU backend runs a batch image by image across threads, fuses each integer convolution
/// with the PReLU that reads it, and lets element-wise layers overwrite their input: the
/// whole-batch layer loop (the path calibration takes), any thread count, and a run that keeps
/// every value (so nothing is fused or overwritten) must give the same bits.
#[test]
fn forward_is_bit_identical_across_batching_threads_and_fusion() {
    for cfg in ["w8a8", "w4a4", "float"] {
        let g = if cfg == "float" {
            tiny_mobilefacenet(20, 64, 11).unwrap()
        } else {
            tiny_student(cfg)
        };
        let x = random_images(5, g.input_shape, 21);
        let per: usize = g.input_shape.iter().product();
        let whole_batch = cpu::forward_observed(&g, &x, 5, &mut |_, _| {}).unwrap();
        let one_by_one: Vec<f32> = x
            .chunks(per)
            .flat_map(|xi| cpu::forward(&g, xi, 1).unwrap())
            .collect();
        assert_eq!(whole_batch, one_by_one, "{cfg}");
        let every_value: Vec<usize> = (0..g.num_values).collect();
        let unfused = cpu::forward_values(&g, &x, 5, &every_value).unwrap();
        assert_eq!(unfused[g.output], whole_batch, "{cfg}: unfused");
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let batched = pool.install(|| cpu::forward(&g, &x, 5).unwrap());
            assert_eq!(batched, whole_batch, "{cfg}, {threads} threads");
        }
    }
}
