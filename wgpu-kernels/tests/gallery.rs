//! 1:N search on the GPU against the CPU `Gallery` on random galleries: the same faces in the
//! same order with the same decisions, except where two faces' scores tie within 1e-6 (float
//! rounding may then order them either way), and scores within 1e-5; the edge cases (no faces,
//! k beyond the gallery, a gallery split over several buffers, bad probes, a gallery too large
//! for the buffers) answered as the CPU answers or refused with an error.

mod common;

use std::sync::Arc;

use common::gpu;
use efq_engine::{EngineError, GpuGallery};
use efq_shared::gallery::{Gallery, Identification};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const THRESHOLD: f32 = 0.1;

fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n * dim).map(|_| r.random_range(-1.0..1.0)).collect()
}

/// `n` random faces of `dim` values; every seventh repeats the face before it, so exact ties
/// (broken by the earlier face on both paths) occur too.
fn gallery(n: usize, dim: usize, seed: u64) -> Gallery {
    let mut g = Gallery::new(dim, "m", Some(THRESHOLD));
    let faces = random(n, dim, seed);
    for i in 0..n {
        let row = if i % 7 == 6 { i - 1 } else { i };
        g.enroll(&format!("p{}", i % 13), &faces[row * dim..][..dim])
            .unwrap();
    }
    g
}

/// The GPU's answer is the CPU's: same length, decision made, matches within 1e-5, and where a
/// match differs, the face the GPU chose scores (on the CPU) within 1e-6 of the CPU's choice.
fn assert_same_answer(g: &Gallery, probes: &[f32], n: usize, k: usize, got: &[Identification]) {
    let want = g.identify_batch(probes, n, k).unwrap();
    let every = g.identify_batch(probes, n, g.len()).unwrap();
    assert_eq!(got.len(), want.len());
    for (p, ((got, want), every)) in got.iter().zip(&want).zip(&every).enumerate() {
        let mut cpu = vec![0f32; g.len()];
        for m in &every.matches {
            cpu[m.index] = m.cosine;
        }
        assert_eq!(got.matches.len(), want.matches.len(), "probe {p}");
        assert_eq!(got.decided, want.decided, "probe {p}");
        for (i, (a, b)) in got.matches.iter().zip(&want.matches).enumerate() {
            assert!(
                (a.cosine - b.cosine).abs() < 1e-5,
                "probe {p} rank {i}: GPU {} vs CPU {}",
                a.cosine,
                b.cosine
            );
            assert_eq!(a.name, g.names()[a.index], "probe {p} rank {i}");
            if a.index != b.index {
                assert!(
                    (cpu[a.index] - b.cosine).abs() <= 1e-6,
                    "probe {p} rank {i}: GPU chose face {} ({}), CPU face {} ({}): not a tie",
                    a.index,
                    cpu[a.index],
                    b.index,
                    b.cosine
                );
            }
        }
        if got.identity != want.identity {
            let best = want.best().unwrap().cosine;
            assert!(
                (best - THRESHOLD).abs() <= 1e-6,
                "probe {p}: {:?} vs {:?}",
                got.identity,
                want.identity
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn gpu_top_k_equals_the_cpu_gallery_up_to_ties_on_random_galleries(
        n in prop_oneof![1usize..70, 1usize..3000],
        dim in prop_oneof![3usize..40, 3usize..=600, Just(512)],
        probes in 1usize..=9,
        k in 1usize..=7,
        seed: u64,
    ) {
        let g = gallery(n, dim, seed);
        let q = random(probes, dim, seed ^ 1);
        let got = GpuGallery::new(gpu(), &g).unwrap().identify_blocking(&q, probes, k).unwrap();
        assert_same_answer(&g, &q, probes, k, &got);
    }
}

#[test]
fn a_gallery_split_over_several_buffers_and_probes_over_several_submissions_rank_as_one() {
    let (n, dim, probes) = (500, 16, 37);
    let g = Arc::new(gallery(n, dim, 5));
    // 4 × 5 × n bytes: 156 faces a buffer (4 buffers), the scores of 5 probes a submission.
    let small = GpuGallery::with_max_buffer(gpu(), g.clone(), (n * 4 * 5) as u64).unwrap();
    assert_eq!(small.buffers(), 4);
    let whole = GpuGallery::from_shared(gpu(), g.clone()).unwrap();
    assert_eq!(whole.buffers(), 1);
    let q = random(probes, dim, 6);
    let split = small.identify_blocking(&q, probes, 6).unwrap();
    assert_same_answer(&g, &q, probes, 6, &split);
    assert_eq!(split, whole.identify_blocking(&q, probes, 6).unwrap());
}

#[test]
fn no_faces_no_probes_and_k_beyond_the_gallery_answer_as_the_cpu_does() {
    let q = random(3, 8, 1);
    for g in [Gallery::new(8, "m", Some(THRESHOLD)), gallery(5, 8, 2)] {
        let on_gpu = GpuGallery::new(gpu(), &g).unwrap();
        for (n, k) in [(3, 1), (3, 7), (3, 0), (0, 3), (1, 100)] {
            let probes = &q[..n * 8];
            let got = on_gpu.identify_blocking(probes, n, k).unwrap();
            assert_eq!(got.len(), n);
            assert_eq!(
                got,
                g.identify_batch(probes, n, k).unwrap(),
                "{n} probes, k {k}"
            );
        }
    }
}

#[test]
fn probes_of_the_wrong_length_or_no_direction_are_errors_not_panics() {
    let on_gpu = GpuGallery::new(gpu(), &gallery(20, 8, 3)).unwrap();
    for (probes, n) in [(vec![0.5; 7], 1), (vec![0.5; 9], 1), (vec![0.5; 8], 2)] {
        match on_gpu.identify_blocking(&probes, n, 3) {
            Err(EngineError::Input(m)) => assert!(m.contains("8 dimensions"), "{m}"),
            other => panic!("{} values for {n} probes: {other:?}", probes.len()),
        }
    }
    match on_gpu.identify_blocking(&[0.0; 8], 1, 3) {
        Err(EngineError::Input(m)) => assert!(m.contains("norm"), "{m}"),
        other => panic!("a zero probe: {other:?}"),
    }
}

#[test]
fn a_gallery_beyond_the_buffer_limit_is_refused_naming_its_size_and_the_limit() {
    let g = Arc::new(gallery(300, 8, 4));
    // One probe's scores (1,200 bytes) cannot fit 1,000.
    match GpuGallery::with_max_buffer(gpu(), g, 1000) {
        Err(e @ EngineError::TooLarge { needed, limit, .. }) => {
            assert_eq!((needed, limit), (1200, 1000));
            let m = e.to_string();
            assert!(m.contains("300 faces of 8 dimensions"), "{m}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a gallery beyond the limit was accepted"),
    }
}
