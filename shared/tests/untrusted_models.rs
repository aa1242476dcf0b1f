//! Model files from strangers: each reproducer of a file that once crashed, hung, allocated
//! gigabytes or computed a different answer on one backend is now refused at load, with an
//! error naming the node, the field and the limit. (These tests run with overflow checks on,
//! as every `cargo test` build does, so an arithmetic wrap is a failure here, not a silent
//! wrong size.)

use efq_shared::builders::{random_images, tiny_mobilefacenet};
use efq_shared::detect::Scrfd;
use efq_shared::format::{MANIFEST_KEY, PackedModel};
use efq_shared::graph::{ConvAttrs, Graph, GraphBuilder, Op, Tensor, Weights};
use efq_shared::onnx::{self, ModelProto};
use efq_shared::quant::{QuantConfig, quantize_graph};
use efq_shared::{cpu, limits, reference};
use prost::Message;
use safetensors::SafeTensors;
use serde_json::{Value, json};

fn float_bytes() -> Vec<u8> {
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    PackedModel::new(g, None).unwrap().to_bytes().unwrap()
}

fn student_bytes() -> Vec<u8> {
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    let ranges = cpu::input_absmax(&g, &random_images(2, g.input_shape, 5), 2).unwrap();
    let cfg = QuantConfig::parse("w6a6").unwrap();
    let s = quantize_graph(&g, &cfg, &ranges).unwrap();
    PackedModel::new(s, Some(cfg)).unwrap().to_bytes().unwrap()
}

/// A recognizer with an upsampling layer: conv ↓4, upsample ×2, conv ↓2, fc.
fn upsampling_bytes() -> Vec<u8> {
    let g = efq_shared::builders::tiny_upsampling().unwrap();
    PackedModel::new(g, None).unwrap().to_bytes().unwrap()
}

/// Rewrites the manifest JSON of a valid file and keeps the tensors.
fn with_manifest(bytes: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let mut manifest: Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[MANIFEST_KEY]).unwrap();
    edit(&mut manifest);
    let st = SafeTensors::deserialize(bytes).unwrap();
    let meta = std::collections::HashMap::from([(MANIFEST_KEY.to_string(), manifest.to_string())]);
    safetensors::serialize(st.tensors(), Some(meta)).unwrap()
}

/// The manifest node called `name`.
fn node<'a>(m: &'a mut Value, name: &str) -> &'a mut Value {
    m["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn refused(bytes: &[u8], needles: &[&str]) {
    let e = match PackedModel::from_bytes(bytes) {
        Ok(m) => panic!(
            "accepted a file that should be refused ({needles:?}): {:?}",
            m.graph.infer_shapes()
        ),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(e.contains(n), "expected '{n}' in: {e}");
    }
}

#[test]
fn padding_that_wraps_around_is_refused_naming_node_field_and_limit() {
    // pads = [2^63; 4] summed to 0 in release builds: the graph validated, then the CPU
    // executor panicked, libtorch panicked and the engine answered with a different cosine.
    let b = with_manifest(&float_bytes(), |m| {
        node(m, "dw1")["pads"] = json!([1u64 << 63, 1u64 << 63, 1u64 << 63, 1u64 << 63]);
    });
    refused(&b, &["'dw1'", "padding", "limit of 64"]);
    let b = with_manifest(&student_bytes(), |m| {
        node(m, "pw1")["pads"] = json!([1u64 << 62, 0, 1u64 << 62, 0]);
    });
    refused(&b, &["'pw1'", "padding"]);
}

#[test]
fn huge_stride_and_dilation_are_refused_before_allocating() {
    // stride 2^40 on a grouped convolution aborted the process allocating 16 TiB.
    let b = with_manifest(&student_bytes(), |m| {
        node(m, "gconv")["stride"] = json!([1u64 << 40, 1]);
    });
    refused(&b, &["'gconv'", "stride", "limit of 16"]);
    let b = with_manifest(&float_bytes(), |m| {
        node(m, "dw1")["dilation"] = json!([1, 1u64 << 33]);
    });
    refused(&b, &["'dw1'", "dilation"]);
    let b = with_manifest(&float_bytes(), |m| node(m, "dw1")["stride"] = json!([0, 1]));
    refused(&b, &["'dw1'", "stride is 0"]);
}

#[test]
fn upsampling_factors_beyond_the_limit_are_refused() {
    let ok = upsampling_bytes();
    assert!(PackedModel::from_bytes(&ok).is_ok());
    // 2^64 − 1 panicked the CPU executor and libtorch while the engine answered cosine 1.0; ×1000
    // took 1.9 GB for one image.
    for f in [u64::MAX, 1 << 32, 1000, 17] {
        let b = with_manifest(&ok, |m| node(m, "up")["factor"] = json!(f));
        refused(&b, &["'up'", "upsample factor", "limit of 16"]);
    }
    let b = with_manifest(&ok, |m| node(m, "up")["factor"] = json!(0));
    refused(&b, &["'up'", "upsample factor is 0"]);
}

#[test]
fn layers_and_activations_too_large_for_one_image_are_refused() {
    // An input that is not an image size, and one that would need gigabytes per image.
    let b = with_manifest(&float_bytes(), |m| {
        m["input_shape"] = json!([3, 1u64 << 40, 20]);
        m["preprocessing"]["size"] = json!([1u64 << 40, 20]);
    });
    refused(&b, &["input", "height", "limit of 4096"]);
    let b = with_manifest(&float_bytes(), |m| m["input_shape"] = json!([0, 20, 20]));
    refused(&b, &["input", "channels is 0"]);
    let mut g = tiny_mobilefacenet(20, 64, 11).unwrap();
    g.input_shape = [3, 4000, 4000];
    let err = g.infer_shapes().unwrap_err().to_string();
    assert!(err.contains("bytes, over the limit"), "{err}");
    // Kernel sizes are bounded too.
    let mut b = GraphBuilder::new("k", [3, 96, 96]);
    let w = Tensor::new(vec![4, 3, 65, 65], vec![0.0; 4 * 3 * 65 * 65]).unwrap();
    let x = b.push(
        "wide",
        Op::Conv {
            weights: Weights::Float(w),
            bias: vec![0.0; 4],
            attrs: ConvAttrs::default(),
            input_quant: None,
        },
        &[0],
    );
    let err = b.finish(x).unwrap_err().to_string();
    assert!(
        err.contains("'wide'") && err.contains("kernel height 65"),
        "{err}"
    );
}

#[test]
fn activation_grids_anywhere_in_i32_are_refused_without_overflow() {
    // `hi - lo` of a file's levels overflowed with overflow checks on.
    let b = with_manifest(&student_bytes(), |m| {
        node(m, "pw1")["input_quant"]["levels"] = json!([i32::MIN, i32::MAX]);
    });
    refused(&b, &["'pw1'", "activation grid"]);
    // A subnormal scale has no finite reciprocal: refused, not quantized by infinity.
    let b = with_manifest(&student_bytes(), |m| {
        node(m, "pw1")["input_quant"]["scale"] = json!(1e-40);
    });
    refused(&b, &["'pw1'", "normal float"]);
}

#[test]
fn preprocessing_and_threshold_must_be_ones_every_backend_can_apply() {
    // size [10, 10] for a 20×20 graph panicked libtorch's reshape.
    for (edit, needle) in [
        (
            json!({"color": "RGB", "mean": 127.5, "std": 127.5, "size": [10, 10]}),
            "preprocessing.size",
        ),
        (
            json!({"color": "YUV", "mean": 127.5, "std": 127.5, "size": [20, 20]}),
            "preprocessing.color",
        ),
        (
            json!({"color": "RGB", "mean": 127.5, "std": 0.0, "size": [20, 20]}),
            "preprocessing.std",
        ),
    ] {
        let b = with_manifest(&float_bytes(), |m| m["preprocessing"] = edit.clone());
        refused(&b, &[needle]);
    }
    let b = with_manifest(&float_bytes(), |m| {
        m["threshold"] = json!({"far": 1e-3, "cosine": 7.5, "source": "x"});
    });
    refused(&b, &["threshold.cosine"]);
}

#[test]
fn a_file_that_is_not_a_face_recognizer_is_refused_with_the_reason() {
    // An ONNX Add(X, X) loaded as a recognizer with a 37,632-value "embedding".
    let g = tiny_mobilefacenet(16, 64, 3).unwrap();
    let mut model = ModelProto::decode(onnx::export_bytes(&g).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let input = graph.input[0].name.clone();
    let mut add = graph
        .node
        .iter()
        .find(|n| n.op_type == "Add")
        .unwrap()
        .clone();
    add.input = vec![input.clone(), input];
    add.output = vec!["sum".into()];
    graph.node = vec![add];
    graph.output[0].name = "sum".into();
    graph.initializer.clear();
    let err = onnx::import_bytes(&model.encode_to_vec(), "add").unwrap_err();
    assert!(err.to_string().contains("not a face recognizer"), "{err}");
    // Too narrow an embedding, a 1-channel input.
    let g = tiny_mobilefacenet(16, 8, 3).unwrap();
    let err = PackedModel::new(g, None).unwrap_err().to_string();
    assert!(err.contains("8 values"), "{err}");
    let mut b = GraphBuilder::new("grey", [1, 20, 20]);
    let x = b.push("flat", Op::Flatten, &[GraphBuilder::INPUT]);
    let fc = Op::Gemm {
        weights: Weights::Float(Tensor::new(vec![64, 400], vec![0.01; 64 * 400]).unwrap()),
        bias: vec![0.0; 64],
        input_quant: None,
    };
    let x = b.push("fc", fc, &[x]);
    let err = PackedModel::new(b.finish(x).unwrap(), None).unwrap_err();
    assert!(err.to_string().contains("3-channel image"), "{err}");
}

/// The exported tiny network with one initializer's first dimension set to zero.
fn zero_outputs(layer: &str, followers: &[&str]) -> Vec<u8> {
    let g = tiny_mobilefacenet(16, 64, 3).unwrap();
    let mut model = ModelProto::decode(onnx::export_bytes(&g).unwrap().as_slice()).unwrap();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        let zeroed = t.name.starts_with(&format!("{layer}."))
            || followers
                .iter()
                .any(|f| t.name.starts_with(&format!("{f}.")));
        if zeroed {
            t.dims[0] = 0;
            t.raw_data.clear();
        }
    }
    model.encode_to_vec()
}

#[test]
fn zero_output_channels_are_an_error_not_a_division_by_zero() {
    // Gemm with 0 outputs followed by BatchNormalization divided by zero in fold_batchnorm (all
    // 615 ONNX import panics of the fuzzing campaign).
    let err = onnx::import_bytes(&zero_outputs("fc", &["features"]), "z").unwrap_err();
    let e = err.to_string();
    assert!(e.contains("'fc'") && e.contains("zero dimension"), "{e}");
    let err = onnx::import_bytes(&zero_outputs("conv1", &[]), "z").unwrap_err();
    assert!(err.to_string().contains("'conv1'"), "{err}");
}

#[test]
fn a_detector_convolution_without_weights_is_an_error() {
    // The SCRFD importer indexed `input[1]` of a Conv with one input.
    let g = tiny_mobilefacenet(16, 64, 3).unwrap();
    let mut model = ModelProto::decode(onnx::export_bytes(&g).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.node[0].input.truncate(1);
    let err = Scrfd::import_bytes(&model.encode_to_vec(), "d", [64, 64]).unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
}

#[test]
fn tensor_shapes_that_overflow_are_errors() {
    let err = Tensor::new(vec![1 << 32, 1 << 32, 1 << 32], vec![]).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    assert_eq!(limits::checked_product(&[usize::MAX, 2]), None);
}

/// Every graph that loads runs on the CPU backend and on the oracle without a panic (the shared
/// validation is the only guard either has).
fn loads_then_runs(bytes: &[u8]) {
    if let Ok(m) = PackedModel::from_bytes(bytes) {
        let g: &Graph = &m.graph;
        let x = random_images(1, g.input_shape, 1);
        let y = cpu::forward(g, &x, 1).expect("a loaded model runs");
        assert_eq!(y.len(), m.manifest.embedding_dim);
        let y = reference::forward(g, &x, 1).expect("a loaded model runs on the oracle");
        assert_eq!(y.len(), m.manifest.embedding_dim);
    }
}

/// Integers a fuzzer tries: edges of every width, and the limits' neighbours.
const NASTY: [u64; 14] = [
    0,
    1,
    2,
    3,
    15,
    16,
    17,
    65,
    1000,
    1 << 31,
    1 << 32,
    1 << 62,
    1 << 63,
    u64::MAX,
];

#[test]
fn every_integer_field_of_every_node_set_to_edge_values_loads_safely_or_is_refused() {
    for base in [float_bytes(), student_bytes(), upsampling_bytes()] {
        let (_, meta) = SafeTensors::read_metadata(&base).unwrap();
        let manifest: Value =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()[MANIFEST_KEY]).unwrap();
        let n = manifest["nodes"].as_array().unwrap().len();
        let mut tried = 0;
        for k in 0..n {
            let fields: Vec<(String, Option<usize>)> = manifest["nodes"][k]
                .as_object()
                .unwrap()
                .iter()
                .flat_map(|(f, v)| match v {
                    Value::Number(_) => vec![(f.clone(), None)],
                    Value::Array(a) => (0..a.len()).map(|i| (f.clone(), Some(i))).collect(),
                    _ => vec![],
                })
                .collect();
            for (field, index) in fields {
                for v in NASTY {
                    let b = with_manifest(&base, |m| {
                        let slot = &mut m["nodes"][k][&field];
                        match index {
                            Some(i) => slot[i] = json!(v),
                            None => *slot = json!(v),
                        }
                    });
                    loads_then_runs(&b);
                    tried += 1;
                }
            }
        }
        assert!(tried > 100, "only {tried} mutants");
    }
}
