//! 1:N search against a naive oracle: every probe's top k by cosine, computed one dot product
//! at a time, on random galleries; files that round-trip and files that are refused.

use efq_shared::gallery::Gallery;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n * dim).map(|_| r.random_range(-1.0..1.0)).collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|x| (*x as f64 / n) as f32).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn top_k_is_the_naive_ranking(
        n in 1usize..300, probes in 1usize..9, dim in 1usize..40, k in 1usize..12, seed: u64
    ) {
        let mut g = Gallery::new(dim, "m", Some(0.5));
        let faces = random(n, dim, seed);
        for (i, e) in faces.chunks(dim).enumerate() {
            g.enroll(&format!("p{}", i % 7), e).unwrap();
        }
        let q = random(probes, dim, seed ^ 1);
        let got = g.identify_batch(&q, probes, k).unwrap();
        for (p, id) in q.chunks(dim).zip(&got) {
            let p = unit(p);
            let mut want: Vec<(f64, usize)> = faces
                .chunks(dim)
                .enumerate()
                .map(|(i, f)| (unit(f).iter().zip(&p).map(|(a, b)| *a as f64 * *b as f64).sum(), i))
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            prop_assert_eq!(id.matches.len(), k.min(n));
            for (m, w) in id.matches.iter().zip(&want) {
                // Equal up to float rounding; a near-tie may swap two faces, never their scores.
                prop_assert!((m.cosine as f64 - w.0).abs() < 1e-5, "{} vs {}", m.cosine, w.0);
            }
            let best = id.best().unwrap();
            prop_assert_eq!(id.identity.is_some(), best.cosine >= 0.5);
        }
    }
}

#[test]
fn many_probes_over_many_blocks_of_faces_rank_as_one_probe_at_a_time() {
    // 5,000 faces span three blocks of the batched path; 9 probes take it.
    let mut g = Gallery::new(8, "m", None);
    for (i, e) in random(5000, 8, 7).chunks(8).enumerate() {
        g.enroll(&i.to_string(), e).unwrap();
    }
    let q = random(9, 8, 8);
    let batch = g.identify_batch(&q, 9, 3).unwrap();
    for (p, b) in q.chunks(8).zip(&batch) {
        let one = g.identify(p, 3).unwrap();
        let (x, y): (Vec<f32>, Vec<f32>) = one
            .matches
            .iter()
            .zip(&b.matches)
            .map(|(a, b)| (a.cosine, b.cosine))
            .unzip();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5, "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn a_saved_gallery_loads_as_it_was_and_damaged_files_are_refused() {
    let mut g = Gallery::new(16, "w600k_mbf-w8a8", Some(0.2275));
    for (i, e) in random(50, 16, 3).chunks(16).enumerate() {
        g.enroll(&format!("person {i}"), e).unwrap();
    }
    let bytes = g.to_bytes().unwrap();
    assert_eq!(Gallery::from_bytes(&bytes).unwrap(), g);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for _ in 0..300 {
        let mut b = bytes.clone();
        if rng.random_bool(0.5) {
            b.truncate(rng.random_range(0..bytes.len()));
        } else {
            let at = rng.random_range(0..bytes.len());
            b[at] ^= 1 << rng.random_range(0..8);
        }
        let _ = Gallery::from_bytes(&b);
    }
    let model = efq_shared::format::PackedModel::new(
        efq_shared::builders::tiny_mobilefacenet(16, 64, 1).unwrap(),
        None,
    )
    .unwrap();
    let e = Gallery::from_bytes(&model.to_bytes().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a gallery"), "{e}");
}

#[test]
fn wrong_sizes_and_empty_embeddings_are_errors() {
    let mut g = Gallery::new(4, "m", None);
    assert!(
        g.enroll("a", &[1.0, 2.0])
            .unwrap_err()
            .to_string()
            .contains("4-d")
    );
    assert!(
        g.enroll("a", &[0.0; 4])
            .unwrap_err()
            .to_string()
            .contains("norm")
    );
    g.enroll("a", &[1.0, 0.0, 0.0, 0.0]).unwrap();
    let id = g.identify(&[1.0, 0.0, 0.0, 0.0], 3).unwrap();
    assert_eq!(id.matches.len(), 1);
    assert!(!id.decided && id.identity.is_none());
}
