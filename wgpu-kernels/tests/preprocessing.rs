//! The engine normalises RGB bytes on the GPU exactly as the CPU does, for every convention a
//! model file can declare: channel order and a mean and std per channel; into NHWC for an
//! integer first layer, into NCHW for a float one that reads the input as uploaded.

mod common;

use common::*;
use efq_engine::{GpuModel, Images};
use efq_shared::builders;
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::preprocess::pixels_to_chw;
use efq_shared::quant::{QuantConfig, quantize_graph};

#[test]
fn rgb_bytes_normalised_on_the_gpu_equal_the_cpu_normalisation_for_every_convention() {
    let hw = 16;
    let graph = builders::tiny_mobilefacenet(hw, 64, 3).unwrap();
    let x = builders::random_images(2, [3, hw, hw], 4);
    let ranges = efq_shared::cpu::input_absmax(&graph, &x, 2).unwrap();
    let q = QuantConfig::parse("w8a8").unwrap();
    let student = quantize_graph(&graph, &q, &ranges).unwrap();
    normalised_on_the_gpu_as_on_the_cpu(&student, Some(q), hw);
    // The float network's first layer (3 → 64 channels) reads its input NCHW, as uploaded.
    normalised_on_the_gpu_as_on_the_cpu(&graph, None, hw);
}

fn normalised_on_the_gpu_as_on_the_cpu(
    graph: &efq_shared::graph::Graph,
    q: Option<QuantConfig>,
    hw: usize,
) {
    let rgb: Vec<u8> = (0..2 * hw * hw * 3).map(|i| (i * 97 % 256) as u8).collect();
    for (color, mean, std) in [
        ("RGB", [127.5; 3], [127.5; 3]),
        ("BGR", [127.5; 3], [128.0; 3]),
        ("RGB", [0.0; 3], [255.0; 3]),
        ("RGB", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
        ("BGR", [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]),
    ] {
        let mut model = PackedModel::new(graph.clone(), q).unwrap();
        model.manifest.preprocessing = Preprocessing {
            color: color.into(),
            mean,
            std,
            size: [hw, hw],
        };
        let bytes = model.to_bytes().unwrap();
        // The file keeps what was declared.
        let back = PackedModel::from_bytes(&bytes).unwrap();
        assert_eq!(back.manifest.preprocessing, model.manifest.preprocessing);
        let engine = GpuModel::from_bytes(gpu(), &bytes).unwrap();
        let on_gpu = engine.forward_blocking(Images::Rgb8(&rgb), 2).unwrap();
        let pre = &model.manifest.preprocessing;
        let per = hw * hw * 3;
        let nchw: Vec<f32> = rgb
            .chunks(per)
            .flat_map(|im| pixels_to_chw(im, hw, hw, pre))
            .collect();
        let on_cpu = engine.forward_blocking(Images::Nchw(&nchw), 2).unwrap();
        assert_eq!(on_gpu, on_cpu, "{color} {mean:?} {std:?}");
        if q.is_some() {
            // The integer path is bit-exact with the reference (the float one within
            // rounding: tests/engine_agreement.rs).
            let reference = efq_shared::reference::forward(graph, &nchw, 2).unwrap();
            assert_eq!(on_gpu, reference, "{color} {mean:?} {std:?}");
        }
    }
}
