//! `trainer inspect --probe-conventions` finds the convention a model was trained with: the
//! real teacher's, and that of the same teacher rewritten to expect BGR or pixels / 255.

use std::path::{Path, PathBuf};

use efq_shared::onnx::{ModelProto, NodeProto, TensorProto};
use efq_trainer::probe;
use prost::Message;

fn teacher() -> PathBuf {
    efq_trainer::paths::teacher(None, "--model").expect("run scripts/setup.sh first")
}

fn lfw() -> PathBuf {
    efq_trainer::paths::lfw(None).unwrap()
}

fn read(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// The teacher with its first convolution's input channels reversed: it now expects BGR.
fn bgr_teacher(dir: &Path) -> PathBuf {
    let mut m = read(&teacher());
    let g = m.graph.as_mut().unwrap();
    let conv = g.node.iter().find(|n| n.op_type == "Conv").unwrap();
    let wname = conv.input[1].clone();
    let w = g.initializer.iter_mut().find(|t| t.name == wname).unwrap();
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    assert_eq!(dims[1], 3, "the first convolution reads the image");
    let plane = dims[2] * dims[3] * 4;
    let raw = &mut w.raw_data;
    assert_eq!(
        raw.len(),
        dims.iter().product::<usize>() * 4,
        "raw f32 weights"
    );
    for o in 0..dims[0] {
        let base = o * 3 * plane;
        let (r, rest) = raw[base..base + 3 * plane].split_at_mut(plane);
        r.swap_with_slice(&mut rest[plane..]);
    }
    let path = dir.join("bgr.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

/// The teacher behind `Mul 255, Sub 127.5, Div 127.5` nodes: it now expects pixels / 255.
fn unit_range_teacher(dir: &Path) -> PathBuf {
    let mut m = read(&teacher());
    let g = m.graph.as_mut().unwrap();
    let input = g.input[0].name.clone();
    g.input[0].name = "raw".into();
    for (name, v) in [("k255", 255.0), ("k127", 127.5)] {
        g.initializer.push(TensorProto::float(name, &[], &[v]));
    }
    let nodes = [
        NodeProto::new("Mul", "to_pixels", &["raw", "k255"], &["pixels"]),
        NodeProto::new("Sub", "centre", &["pixels", "k127"], &["centred"]),
        NodeProto::new("Div", "scale", &["centred", "k127"], &[&input]),
    ];
    for (k, n) in nodes.into_iter().enumerate() {
        g.node.insert(k, n);
    }
    let path = dir.join("unit.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

const PAIRS: usize = 40;
const INSIGHTFACE: [&str; 2] = ["(x − 127.5) / 127.5", "(x − 127.5) / 128"];

#[test]
fn the_probe_finds_the_teachers_convention_and_that_of_each_rewritten_copy() {
    let dir = tempfile::tempdir().unwrap();
    let p = probe::run(&teacher(), &lfw(), PAIRS).unwrap();
    assert_eq!(p.pairs, PAIRS);
    assert_eq!(p.best.color, "RGB", "w600k_mbf is trained on RGB");
    assert!(
        INSIGHTFACE.contains(&p.best.normalisation),
        "{}",
        p.best.normalisation
    );
    let p = probe::run(&bgr_teacher(dir.path()), &lfw(), PAIRS).unwrap();
    assert_eq!(p.best.color, "BGR");
    assert!(
        INSIGHTFACE.contains(&p.best.normalisation),
        "{}",
        p.best.normalisation
    );
    let p = probe::run(&unit_range_teacher(dir.path()), &lfw(), PAIRS).unwrap();
    assert_eq!((p.best.color, p.best.normalisation), ("RGB", "x / 255"));
    // The pick carries the flags that select it.
    assert_eq!(p.best.flags, "--color rgb --mean 0 --std 255");
}

#[test]
fn a_packed_model_or_too_few_pairs_are_refused_with_the_reason() {
    let err = probe::run(Path::new("student.efq"), &lfw(), PAIRS).unwrap_err();
    assert!(err.to_string().contains("records its conventions"), "{err}");
    let err = probe::run(&teacher(), &lfw(), 4).unwrap_err();
    assert!(err.to_string().contains("at least 20 pairs"), "{err}");
}
