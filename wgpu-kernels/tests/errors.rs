//! Bad input and missing or lost GPUs give errors that name the problem, never panics.

mod common;

use common::*;
use efq_engine::{EngineError, GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::builders;
use efq_shared::format::PackedModel;
use efq_shared::graph::{ConvAttrs, GraphBuilder, Op, Tensor, Weights};

fn tiny_model_bytes() -> Vec<u8> {
    let g = builders::tiny_mobilefacenet(16, 64, 3).unwrap();
    PackedModel::new(g, None).unwrap().to_bytes().unwrap()
}

#[test]
fn no_adapter_is_an_error_that_says_what_to_install() {
    let err = request_blocking(&GpuOptions {
        backends: Some(wgpu::Backends::empty()),
        ..Default::default()
    })
    .err()
    .expect("no backends means no adapter");
    assert!(matches!(err, EngineError::NoAdapter(_)), "{err:?}");
    assert!(err.to_string().contains("mesa-vulkan-drivers"), "{err}");
}

#[test]
fn corrupt_and_truncated_model_files_are_rejected_with_a_reason() {
    let bytes = tiny_model_bytes();
    for (what, bad) in [
        ("empty", Vec::new()),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("not a model", b"GIF89a this is not a model".to_vec()),
    ] {
        let err = GpuModel::from_bytes(gpu(), &bad)
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert!(matches!(err, EngineError::Model(_)), "{what}: {err:?}");
        assert!(err.to_string().contains("model file"), "{what}: {err}");
    }
    assert!(GpuModel::from_bytes(gpu(), &bytes).is_ok());
}

#[test]
fn wrong_input_sizes_are_rejected_before_anything_runs() {
    let model = GpuModel::from_bytes(gpu(), &tiny_model_bytes()).unwrap();
    let per = 3 * 16 * 16;
    let err = model
        .embed_blocking(Images::Rgb8(&vec![0u8; per * 2 - 1]), 2)
        .unwrap_err();
    assert!(matches!(err, EngineError::Input(_)), "{err:?}");
    assert!(
        err.to_string().contains("expected 2 image(s) of 16×16×3"),
        "{err}"
    );
    let err = model.forward_blocking(Images::Nchw(&[]), 0).unwrap_err();
    assert!(matches!(err, EngineError::Input(_)), "{err:?}");
    // And the model still works afterwards.
    let e = model
        .embed_blocking(Images::Rgb8(&vec![7u8; per]), 1)
        .unwrap();
    assert_eq!(e.len(), 64);
}

#[test]
fn a_layer_larger_than_the_device_allows_is_reported_not_allocated() {
    // 8 channels of 4096×4096 floats: 512 MiB for one image, within what a model file may
    // declare (efq_shared::limits) but beyond a device with WebGPU's default limits (128 MiB
    // per storage binding), as an app may hand the engine.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let small =
        efq_engine::Gpu::from_device(device, queue, &adapter.get_info(), efq_engine::Dot4::Native);
    let mut b = GraphBuilder::new("huge", [1, 4096, 4096]);
    let y = b.push(
        "conv",
        Op::Conv {
            weights: Weights::Float(Tensor::new(vec![8, 1, 1, 1], vec![0.5; 8]).unwrap()),
            bias: vec![0.0; 8],
            attrs: ConvAttrs::default(),
            input_quant: None,
        },
        &[GraphBuilder::INPUT],
    );
    let g = b.finish(y).unwrap();
    let err = GpuModel::from_graph(&small, &g, 1)
        .err()
        .expect("too large");
    assert!(matches!(err, EngineError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("model too large for this device"),
        "{err}"
    );
}

#[test]
fn a_lost_device_fails_later_calls_cleanly() {
    let gpu = request_blocking(&GpuOptions::default()).unwrap();
    let model = GpuModel::from_bytes(&gpu, &tiny_model_bytes()).unwrap();
    let img = vec![9u8; 3 * 16 * 16];
    model.embed_blocking(Images::Rgb8(&img), 1).unwrap();
    gpu.device().destroy();
    let _ = gpu.device().poll(wgpu::PollType::wait_indefinitely());
    let err = model.embed_blocking(Images::Rgb8(&img), 1).unwrap_err();
    assert!(
        matches!(err, EngineError::DeviceLost(_) | EngineError::Gpu(_)),
        "{err:?}"
    );
}

#[test]
fn an_app_can_hand_the_engine_its_own_device_and_get_decisions_at_the_stored_threshold() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let gpu =
        efq_engine::Gpu::from_device(device, queue, &adapter.get_info(), efq_engine::Dot4::Native);
    let g = builders::tiny_mobilefacenet(16, 64, 3).unwrap();
    let mut packed = PackedModel::new(g, None).unwrap();
    packed.manifest.threshold = Some(efq_shared::format::Threshold {
        far: 1e-3,
        cosine: 0.5,
        source: "test".into(),
    });
    let model = GpuModel::new(&gpu, &packed, 4).unwrap();
    let a: Vec<u8> = (0..3 * 16 * 16).map(|i| (i * 7 % 251) as u8).collect();
    let b: Vec<u8> = a.iter().rev().copied().collect();
    let same = model.verify_blocking(&a, &a).unwrap();
    assert!((same.similarity - 1.0).abs() < 1e-5, "{same:?}");
    assert_eq!(same.same, Some(true));
    let other = model.verify_blocking(&a, &b).unwrap();
    assert_eq!(other.threshold, Some(0.5));
    assert_eq!(other.same, Some(other.similarity >= 0.5));
    assert!(other.similarity < 0.9999, "{other:?}");
}

#[test]
fn concurrent_calls_from_several_threads_each_get_their_own_results() {
    let model = GpuModel::from_bytes(gpu(), &tiny_model_bytes()).unwrap();
    let images: Vec<Vec<u8>> = (0..4u8)
        .map(|k| {
            (0..3 * 16 * 16)
                .map(|i| (i as u8).wrapping_mul(k + 3))
                .collect()
        })
        .collect();
    let alone: Vec<Vec<f32>> = images
        .iter()
        .map(|im| model.embed_blocking(Images::Rgb8(im), 1).unwrap())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|im| {
                let model = &model;
                s.spawn(move || {
                    (0..5)
                        .map(|_| model.embed_blocking(Images::Rgb8(im), 1).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&alone) {
            for got in h.join().unwrap() {
                assert_eq!(&got, want);
            }
        }
    });
}

#[test]
fn profile_rejects_a_wrong_batch_and_times_every_dispatch_of_a_pass() {
    let model = GpuModel::from_bytes(gpu(), &tiny_model_bytes()).unwrap();
    let rgb: Vec<u8> = (0..3 * 16 * 16).map(|i| (i * 13 % 256) as u8).collect();
    let before = model.embed_blocking(Images::Rgb8(&rgb), 1).unwrap();
    let nchw: Vec<f32> = (0..3 * 16 * 16).map(|i| (i % 17) as f32 / 17.0).collect();
    assert!(matches!(
        model.profile(&nchw[1..], 1),
        Err(EngineError::Input(_))
    ));
    assert!(matches!(model.profile(&[], 0), Err(EngineError::Input(_))));
    let steps = model.profile(&nchw, 1).unwrap();
    // One entry per dispatch, in execution order, named by its graph node; the float first
    // layer reads the NCHW upload in place, so no layout pass ("input") comes before it.
    let names: Vec<&str> = steps.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(names.first(), Some(&"conv1"), "{steps:?}");
    for node in ["conv1", "dw1", "add", "fc"] {
        assert!(names.contains(&node), "{node} missing: {steps:?}");
    }
    for r in &steps {
        assert!(
            !r.node.is_empty() && !r.kernel.is_empty() && r.seconds.is_finite() && r.seconds >= 0.0,
            "{steps:?}"
        );
    }
    // Profiling shares the model's buffers: the next pass must be unaffected.
    assert_eq!(model.embed_blocking(Images::Rgb8(&rgb), 1).unwrap(), before);
}
