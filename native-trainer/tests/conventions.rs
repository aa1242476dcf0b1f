//! An ONNX teacher's input conventions: the flags' defaults, per-channel values, and a model
//! that normalises its input in its own graph, whose normalisation becomes the convention.

use efq_shared::builders;
use efq_shared::onnx::{
    ModelProto, NodeProto, TensorProto, export_bytes, import_bytes_with_conventions,
};
use efq_trainer::conventions::{Color, ConventionArgs, preprocessing};
use prost::Message;

/// A tiny recognizer as ONNX, with `(raw − mean) / std` computed by Sub and Div nodes at its
/// input when `baked` is given.
fn onnx(baked: Option<([f32; 3], f32)>) -> Vec<u8> {
    let g = builders::tiny_mobilefacenet(16, 64, 3).unwrap();
    let bytes = export_bytes(&g).unwrap();
    let Some((mean, std)) = baked else {
        return bytes;
    };
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = m.graph.as_mut().unwrap();
    let input = graph.input[0].name.clone();
    graph.input[0].name = "raw".into();
    graph
        .initializer
        .push(TensorProto::float("mean", &[1, 3, 1, 1], &mean));
    graph
        .initializer
        .push(TensorProto::float("std", &[], &[std]));
    graph.node.insert(
        0,
        NodeProto::new("Div", "div", &["centred", "std"], &[&input]),
    );
    graph.node.insert(
        0,
        NodeProto::new("Sub", "sub", &["raw", "mean"], &["centred"]),
    );
    m.encode_to_vec()
}

#[test]
fn a_plain_teacher_takes_the_insightface_default_unless_flags_say_otherwise() {
    let imported = import_bytes_with_conventions(&onnx(None), "plain").unwrap();
    let path = std::path::Path::new("plain.onnx");
    let pre = preprocessing(&ConventionArgs::default(), &imported, path).unwrap();
    assert_eq!(
        (pre.color.as_str(), pre.mean, pre.std),
        ("RGB", [127.5; 3], [127.5; 3])
    );
    assert_eq!(pre.size, [16, 16]);
    let flags = ConventionArgs {
        color: Some(Color::Bgr),
        mean: Some(vec![123.675, 116.28, 103.53]),
        std: Some(vec![58.0]),
    };
    let pre = preprocessing(&flags, &imported, path).unwrap();
    assert_eq!(
        (pre.color.as_str(), pre.mean, pre.std),
        ("BGR", [123.675, 116.28, 103.53], [58.0; 3])
    );
    let two = ConventionArgs {
        mean: Some(vec![1.0, 2.0]),
        ..Default::default()
    };
    let err = preprocessing(&two, &imported, path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--mean takes one number or three"), "{err}");
}

#[test]
fn normalisation_baked_into_the_graph_becomes_the_convention_and_the_graph_is_the_network() {
    let plain = import_bytes_with_conventions(&onnx(None), "m").unwrap();
    let baked =
        import_bytes_with_conventions(&onnx(Some(([120.0, 127.5, 130.0], 64.0))), "m").unwrap();
    assert_eq!(
        baked.graph.nodes, plain.graph.nodes,
        "the Sub and Div are gone, nothing else"
    );
    let path = std::path::Path::new("baked.onnx");
    // By default such a model takes raw pixel values: its own normalisation is the convention.
    let pre = preprocessing(&ConventionArgs::default(), &baked, path).unwrap();
    assert_eq!((pre.mean, pre.std), ([120.0, 127.5, 130.0], [64.0; 3]));
    // A model fed pixels / 255 (flags: mean 0, std 255) then normalised by its graph.
    let flags = ConventionArgs {
        mean: Some(vec![0.0]),
        std: Some(vec![255.0]),
        ..Default::default()
    };
    let pre = preprocessing(&flags, &baked, path).unwrap();
    assert_eq!(pre.mean, [120.0 * 255.0, 127.5 * 255.0, 130.0 * 255.0]);
    assert_eq!(pre.std, [64.0 * 255.0; 3]);
    // The plain importer refuses such a model rather than run it on the wrong input.
    let err = efq_shared::onnx::import_bytes(&onnx(Some(([120.0, 127.5, 130.0], 64.0))), "m")
        .unwrap_err();
    assert!(
        err.to_string().contains("normalises its input itself"),
        "{err}"
    );
}
