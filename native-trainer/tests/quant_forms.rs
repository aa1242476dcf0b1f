//! The trainer's libtorch forms of the quantization arithmetic equal `shared::quant`, the
//! contract every backend follows, value for value: activations on any grid (symmetric or
//! split, ties included) and per-channel weights (zero, subnormal and ordinary channels).

use efq_shared::graph::Tensor as Weights;
use efq_shared::quant::{ActQuant, QuantWeights, qmax};
use efq_trainer::{net, student};
use proptest::prelude::*;
use tch::Tensor;

fn act_quant() -> impl Strategy<Value = ActQuant> {
    (2u8..=8, -20i32..8, 0.5f32..2.0, any::<bool>(), 0i32..4).prop_map(
        |(bits, exp, mantissa, split, shift)| {
            let scale = mantissa * 2f32.powi(exp);
            let levels = (split && bits < 8).then(|| {
                let q = qmax(bits);
                let lo = -q + shift.min(q);
                [lo, lo + 2 * q]
            });
            ActQuant {
                bits,
                scale,
                levels,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn libtorch_fake_quantization_equals_the_contract_value_for_value(
        aq in act_quant(),
        raw in prop::collection::vec(-300.0f32..300.0, 1..64),
        ties in prop::collection::vec(-200i32..200, 0..16),
    ) {
        // Values on the grid's half steps (ties), and others spread over and beyond its range.
        let mut x: Vec<f32> = raw.iter().map(|v| v * aq.scale).collect();
        x.extend(ties.iter().map(|k| (*k as f32 + 0.5) * aq.scale));
        let got = Vec::<f32>::try_from(net::fake_quant(&Tensor::from_slice(&x), &aq)).unwrap();
        for (v, g) in x.iter().zip(&got) {
            let want = aq.fake_quantize(*v);
            // Equal as numbers: torch.round(-0.5) is -0.0 where the contract gives +0.0, a
            // sign of zero no product or sum after it can tell apart.
            prop_assert!(*g == want, "x {} on {:?}: {} vs {}", v, aq, g, want);
        }
    }

    #[test]
    fn libtorch_weight_quantization_equals_the_contract_value_for_value(
        bits in 2u8..=8,
        channels in prop::collection::vec((any::<u8>(), prop::collection::vec(-1.0f32..1.0, 9)), 1..6),
    ) {
        // Each channel scaled by 0 (all zero), 1e-42 (subnormal), or an ordinary factor.
        let mut data = Vec::new();
        for (kind, w) in &channels {
            let f = match kind % 3 { 0 => 0.0, 1 => 1e-42, _ => 0.01 + *kind as f32 / 64.0 };
            data.extend(w.iter().map(|v| v * f));
        }
        let shape = vec![channels.len(), 1, 3, 3];
        let w = Weights::new(shape.clone(), data.clone()).unwrap();
        let want = QuantWeights::from_float(&w, bits).unwrap().dequantize();
        let t = Tensor::from_slice(&data).reshape([channels.len() as i64, 1, 3, 3]);
        let got = Vec::<f32>::try_from(student::quant_weights(&t, bits).flatten(0, -1)).unwrap();
        for (k, (g, e)) in got.iter().zip(&want.data).enumerate() {
            prop_assert!(g == e, "weight {}: {} vs {}", k, g, e);
            prop_assert!(g.is_finite());
        }
    }
}
