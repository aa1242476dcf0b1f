//! Post-training quantization of a tiny generated network on a few LFW crops: channel
//! equalization earns its place.

use efq_shared::builders::tiny_mobilefacenet;
use efq_shared::graph::Graph;
use efq_shared::quant::QuantConfig;
use efq_shared::{equalize, reference};
use efq_tests::{cosine, lfw};
use efq_trainer::quantize::{self, Calibration, QuantizeArgs};
use rand::{Rng, SeedableRng};

/// The tiny network with the channels in front of its first depthwise layer spread over three
/// decades (an exact float rescaling: the teacher's function does not change).
fn unequal_teacher() -> Graph {
    let mut g = tiny_mobilefacenet(112, 32, 5).unwrap();
    let site = equalize::sites(&g)[0];
    assert!(
        site.depthwise,
        "the tiny net's first site is its depthwise layer"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let f: Vec<f32> = (0..8)
        .map(|_| 10f32.powf(rng.random_range(-2.0..1.0)))
        .collect();
    equalize::rescale(&mut g, &site, &f).unwrap();
    g
}

fn ptq_fidelity(teacher: &Graph, equalize: bool, dir: &std::path::Path) -> f64 {
    let path = dir.join(format!("teacher-{equalize}.onnx"));
    std::fs::write(&path, efq_shared::onnx::export_bytes(teacher).unwrap()).unwrap();
    let crops = lfw().join("insightface112");
    let student = quantize::run(&QuantizeArgs {
        teacher: &path,
        crops: &crops,
        config: QuantConfig::parse("w8a8").unwrap(),
        calibration: Calibration {
            images: 16,
            batch: 8,
            equalize,
            ..Calibration::default_with_seed(1)
        },
        device: tch::Device::Cpu,
    })
    .unwrap();
    let equalized = student.manifest.extra["equalized_layers"].as_u64().unwrap();
    assert_eq!(equalized > 0, equalize);
    let x = efq_shared::builders::random_images(8, [3, 112, 112], 4);
    let want = reference::forward(teacher, &x, 8).unwrap();
    let got = reference::forward(&student.graph, &x, 8).unwrap();
    let n = want.len() / 8;
    want.chunks(n)
        .zip(got.chunks(n))
        .map(|(a, b)| cosine(a, b))
        .sum::<f64>()
        / 8.0
}

#[test]
fn channel_equalization_keeps_quiet_channels_that_a_per_tensor_scale_rounds_away() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = unequal_teacher();
    let plain = ptq_fidelity(&teacher, false, dir.path());
    let equalized = ptq_fidelity(&teacher, true, dir.path());
    eprintln!("w8a8 fidelity: {plain:.5} without equalization, {equalized:.5} with");
    assert!(
        equalized > plain && 1.0 - equalized < 0.5 * (1.0 - plain),
        "w8a8 fidelity: {plain:.5} without equalization, {equalized:.5} with"
    );
}
