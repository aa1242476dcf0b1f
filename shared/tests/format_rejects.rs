//! Bad model files are rejected with a reason, never a panic or a huge allocation.

use efq_shared::builders::{random_images, tiny_mobilefacenet};
use efq_shared::cpu;
use efq_shared::format::{MANIFEST_KEY, PackedModel};
use efq_shared::quant::{QuantConfig, quantize_graph};
use proptest::prelude::*;
use safetensors::SafeTensors;

fn student_bytes() -> Vec<u8> {
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    let ranges = cpu::input_absmax(&g, &random_images(2, g.input_shape, 5), 2).unwrap();
    let cfg = QuantConfig::parse("w4a8").unwrap();
    let s = quantize_graph(&g, &cfg, &ranges).unwrap();
    PackedModel::new(s, Some(cfg)).unwrap().to_bytes().unwrap()
}

/// Rewrites the manifest JSON of a valid file and keeps the tensors.
fn with_manifest(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[MANIFEST_KEY]).unwrap();
    edit(&mut manifest);
    let st = SafeTensors::deserialize(bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    let meta = std::collections::HashMap::from([(MANIFEST_KEY.to_string(), manifest.to_string())]);
    safetensors::serialize(tensors, Some(meta)).unwrap()
}

fn err(bytes: &[u8]) -> String {
    PackedModel::from_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn truncated_file_is_rejected() {
    let b = student_bytes();
    for cut in [0, 4, 8, 100, b.len() / 2, b.len() - 1] {
        let e = err(&b[..cut]);
        assert!(e.contains("truncated or corrupt"), "cut {cut}: {e}");
    }
}

#[test]
fn corrupt_header_is_rejected() {
    let mut b = student_bytes();
    b[10] = b'}';
    b[11] = 0xff;
    assert!(err(&b).contains("corrupt"));
}

#[test]
fn wrong_version_is_rejected_with_both_versions() {
    let b = with_manifest(&student_bytes(), |m| m["format_version"] = 99.into());
    let e = err(&b);
    assert!(
        e.contains("format version 99") && e.contains("version 1"),
        "{e}"
    );
}

#[test]
fn plain_safetensors_without_manifest_is_not_a_model() {
    let t = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 0, 0])
        .unwrap();
    let b = safetensors::serialize(vec![("x", t)], None).unwrap();
    assert!(err(&b).contains("not an EfQuantFace model"));
}

#[test]
fn inconsistent_manifests_are_rejected_naming_the_node() {
    let b = student_bytes();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|m| m["nodes"][0]["out_channels"] = 9.into()),
            "conv1",
        ),
        (Box::new(|m| m["nodes"][2]["weight_bits"] = 9.into()), "dw1"),
        (
            Box::new(|m| m["nodes"][2]["input_quant"] = serde_json::Value::Null),
            "no input quantization",
        ),
        (
            Box::new(|m| m["nodes"][1]["inputs"] = serde_json::json!([5])),
            "prelu1",
        ),
        (
            Box::new(|m| m["nodes"][0]["output"] = 1_000_000_000_000u64.into()),
            "defines value",
        ),
        (Box::new(|m| m["embedding_dim"] = 3.into()), "64-d"),
        (
            Box::new(|m| {
                m["nodes"]
                    .as_array_mut()
                    .unwrap()
                    .pop()
                    .map(|_| ())
                    .unwrap()
            }),
            "not used by any node",
        ),
        (
            Box::new(|m| m["nodes"][0]["input_quant"]["scale"] = (-1.0).into()),
            "scale",
        ),
        (
            Box::new(|m| m["nodes"][2]["input_quant"]["levels"] = serde_json::json!([1, 255])),
            "activation grid [1, 255] must hold zero",
        ),
    ];
    for (edit, needle) in cases {
        let e = err(&with_manifest(&b, edit));
        assert!(e.contains(needle), "expected '{needle}' in: {e}");
    }
}

#[test]
fn out_of_range_packed_values_are_rejected() {
    // A 2-bit weight may only be -1, 0 or 1; the bit pattern 10 (−2) is invalid.
    let g = tiny_mobilefacenet(20, 64, 11).unwrap();
    let ranges = cpu::input_absmax(&g, &random_images(2, g.input_shape, 5), 2).unwrap();
    let mut cfg = QuantConfig::parse("w2a8").unwrap();
    cfg.first_last_8bit = false;
    let s = quantize_graph(&g, &cfg, &ranges).unwrap();
    let bytes = PackedModel::new(s, Some(cfg)).unwrap().to_bytes().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let off =
        st.tensor("conv1.weight_q").unwrap().data().as_ptr() as usize - bytes.as_ptr() as usize;
    let mut bad = bytes.clone();
    bad[off] = 0b1010_1010;
    assert!(err(&bad).contains("exceeds the 2-bit range"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PackedModel::from_bytes(&bytes);
    }

    #[test]
    fn mutated_valid_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut b = student_bytes();
        for (i, v) in flips {
            let k = i.index(b.len());
            b[k] = v;
        }
        let _ = PackedModel::from_bytes(&b);
    }

    #[test]
    fn huge_declared_header_does_not_allocate(n in 1u64 << 40..u64::MAX) {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        prop_assert!(PackedModel::from_bytes(&b).is_err());
    }
}

#[test]
fn a_mean_and_std_shared_by_all_channels_is_written_as_one_number_and_per_channel_as_three() {
    let g = efq_shared::builders::tiny_mobilefacenet(16, 64, 3).unwrap();
    let mut m = efq_shared::format::PackedModel::new(g, None).unwrap();
    m.manifest.preprocessing.size = [16, 16];
    let json = serde_json::to_value(&m.manifest.preprocessing).unwrap();
    assert_eq!(
        json["mean"], 127.5,
        "files with one mean keep the old form: {json}"
    );
    m.manifest.preprocessing.mean = [123.675, 116.28, 103.53];
    let json = serde_json::to_value(&m.manifest.preprocessing).unwrap();
    assert_eq!(json["mean"].as_array().map(Vec::len), Some(3), "{json}");
    let back = efq_shared::format::PackedModel::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(back.manifest.preprocessing.mean, [123.675, 116.28, 103.53]);
    // A zero std in any one channel is refused (on writing as on reading), naming the field.
    m.manifest.preprocessing.std = [58.0, 0.0, 57.0];
    let err = m.to_bytes().unwrap_err();
    assert!(err.to_string().contains("preprocessing.std"), "{err}");
}
