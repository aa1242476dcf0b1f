//! The low-FAR all-pairs protocol over a face folder, and student/teacher
//! embedding fidelity.
//!
//! Every unordered pair of faces is scored. Genuine scores are few and all
//! kept; impostor scores number tens of millions (29.6 M for 7,701 faces),
//! but TAR at FAR only needs the largest `floor(max_far · N) + 1` of them,
//! so only those are retained.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::EvalError;
use super::metrics::{
    TarAtFar, assemble_tar, check_fars, check_finite, cosine_similarity, descending, far_index,
    select_descending,
};

/// Rows of the score matrix computed per matrix product: large enough for
/// `sgemm` to run at full speed, small enough that a worker's block of
/// scores (`BLOCK_ROWS × n` floats, 7.9 MB for n = 7,701) stays modest.
const BLOCK_ROWS: usize = 256;

/// Largest tolerated deviation of a row's squared norm from 1.
const UNIT_NORM_TOLERANCE: f64 = 1e-3;

/// Result of the all-pairs protocol.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AllPairs {
    /// Number of same-identity pairs `i < j`.
    pub n_genuine: usize,
    /// Number of different-identity pairs `i < j`.
    pub n_impostor: usize,
    /// TAR at each requested FAR, in request order, with the same definition
    /// as [`super::metrics::tar_at_far`] applied to all impostor scores.
    pub tar: Vec<TarAtFar>,
    /// Cosine score of every genuine pair, ordered by `(i, j)`.
    pub genuine_scores: Vec<f32>,
}

/// TAR at each of `fars` over every pair of `labels.len()` faces.
///
/// `emb` is a row-major `n × dim` matrix of L2-normalised embeddings (a row
/// whose squared norm is off 1 by more than 1e-3 is an error), so that a
/// pair's cosine score is the dot product of its rows. Pairs `i < j` with
/// equal labels are genuine, all others impostors.
///
/// Scores come from blocked `sgemm`; only the impostor scores that can be a
/// threshold are kept, and the result is identical to storing and fully
/// sorting every impostor score. Work is split over the available cores.
pub fn all_pairs(
    emb: &[f32],
    dim: usize,
    labels: &[u32],
    fars: &[f64],
) -> Result<AllPairs, EvalError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    all_pairs_with(emb, dim, labels, fars, threads, BLOCK_ROWS)
}

fn all_pairs_with(
    emb: &[f32],
    dim: usize,
    labels: &[u32],
    fars: &[f64],
    threads: usize,
    block_rows: usize,
) -> Result<AllPairs, EvalError> {
    let n = labels.len();
    check_matrix(emb, dim, n)?;
    check_finite(emb, "embedding value")?;
    for (i, row) in emb.chunks_exact(dim).enumerate() {
        let sq: f64 = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        if (sq - 1.0).abs() > UNIT_NORM_TOLERANCE {
            return Err(EvalError::InvalidInput(format!(
                "embedding row {i} has squared norm {sq}, expected 1 (rows must be L2-normalised)"
            )));
        }
    }
    check_fars(fars)?;

    let mut per_label: HashMap<u32, usize> = HashMap::new();
    for &l in labels {
        *per_label.entry(l).or_default() += 1;
    }
    let n_genuine: usize = per_label.values().map(|&c| c * (c - 1) / 2).sum();
    let n_impostor = n * n.saturating_sub(1) / 2 - n_genuine;
    if n_impostor == 0 {
        return Err(EvalError::InvalidInput(
            "no impostor pairs: every face has the same label".into(),
        ));
    }
    if n_genuine == 0 {
        return Err(EvalError::InvalidInput(
            "no genuine pairs: every label has a single face".into(),
        ));
    }

    let ks: Vec<usize> = fars.iter().map(|&f| far_index(f, n_impostor)).collect();
    // The deepest index any FAR needs, plus one: scores below the K-th
    // largest can never be a threshold.
    let keep = ks.iter().max().map_or(1, |&k| k + 1);

    let n_blocks = n.div_ceil(block_rows);
    let next_block = AtomicUsize::new(0);
    let genuine_blocks = Mutex::new(vec![Vec::new(); n_blocks]);
    let mut kept = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, n_blocks))
            .map(|_| {
                scope.spawn(|| {
                    let mut top = TopScores::new(keep);
                    let mut scores = Vec::new();
                    loop {
                        // Blocks are handed out in order: early blocks hold
                        // the longest rows, so dynamic hand-out balances the
                        // triangle across workers.
                        let b = next_block.fetch_add(1, Ordering::Relaxed);
                        if b >= n_blocks {
                            break;
                        }
                        let genuine = score_block(
                            emb,
                            dim,
                            labels,
                            b * block_rows,
                            block_rows,
                            &mut scores,
                            &mut top,
                        );
                        genuine_blocks.lock().expect("no worker panics")[b] = genuine;
                    }
                    top.into_kept()
                })
            })
            .collect();
        for w in workers {
            kept.extend(w.join().expect("all-pairs worker panicked"));
        }
    });
    debug_assert!(kept.len() >= keep.min(n_impostor));

    let genuine_scores: Vec<f32> = genuine_blocks
        .into_inner()
        .expect("no worker panics")
        .concat();
    debug_assert_eq!(genuine_scores.len(), n_genuine);
    let thresholds = select_descending(&mut kept, &ks);
    Ok(AllPairs {
        n_genuine,
        n_impostor,
        tar: assemble_tar(&genuine_scores, fars, &thresholds),
        genuine_scores,
    })
}

/// Scores rows `r0 .. r0 + block_rows` against every row from `r0` on,
/// feeding impostor scores of the upper triangle to `top` and returning the
/// genuine ones in `(i, j)` order.
fn score_block(
    emb: &[f32],
    dim: usize,
    labels: &[u32],
    r0: usize,
    block_rows: usize,
    scores: &mut Vec<f32>,
    top: &mut TopScores,
) -> Vec<f32> {
    let n = labels.len();
    let rows = block_rows.min(n - r0);
    let cols = n - r0;
    scores.clear();
    scores.resize(rows * cols, 0.0);
    let base = &emb[r0 * dim..];
    // SAFETY: A is `rows × dim` and B is the `dim × cols` transpose of
    // `cols` rows, both read inside `base` (which holds `cols` rows of `dim`
    // values); C is the `rows × cols` buffer just sized. Strides are
    // non-zero and C's elements do not alias.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            dim,
            cols,
            1.0,
            base.as_ptr(),
            dim as isize,
            1,
            base.as_ptr(),
            1,
            dim as isize,
            0.0,
            scores.as_mut_ptr(),
            cols as isize,
            1,
        );
    }
    let mut genuine = Vec::new();
    for r in 0..rows {
        let i = r0 + r;
        let label = labels[i];
        let row = &scores[r * cols..(r + 1) * cols];
        // Column c of this block is face r0 + c; j > i starts at c = r + 1.
        for (&s, &l) in row[r + 1..].iter().zip(&labels[i + 1..]) {
            if l == label {
                genuine.push(s);
            } else {
                top.push(s);
            }
        }
    }
    genuine
}

/// A multiset that always contains the `k` largest values pushed so far
/// (ties broken by `total_cmp`), in amortised O(1) per push.
struct TopScores {
    k: usize,
    buf: Vec<f32>,
    /// The k-th largest value at the last trim: a later value not above it
    /// can never enter the top k, and equal values are interchangeable.
    /// Starts at -∞, below every (finite) score.
    bound: f32,
}

impl TopScores {
    fn new(k: usize) -> Self {
        Self {
            k,
            buf: Vec::with_capacity(2 * k + 1),
            bound: f32::NEG_INFINITY,
        }
    }

    fn push(&mut self, s: f32) {
        if s.total_cmp(&self.bound).is_gt() {
            self.buf.push(s);
            if self.buf.len() > 2 * self.k {
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        let k = self.k;
        self.buf.select_nth_unstable_by(k - 1, descending);
        self.buf.truncate(k);
        self.bound = self.buf[k - 1];
    }

    fn into_kept(self) -> Vec<f32> {
        self.buf
    }
}

/// How closely student embeddings follow the teacher's, face by face.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fidelity {
    /// Mean cosine between a face's student and teacher embeddings.
    pub mean_cosine: f64,
    /// First percentile: with the `n` cosines sorted ascending, the one at
    /// index `floor((n - 1) / 100)` (no interpolation), so a single bad face
    /// in a hundred shows.
    pub p1_cosine: f64,
    /// Smallest cosine.
    pub min_cosine: f64,
}

/// Cosine agreement between `student` and `teacher`, two row-major
/// `n × dim` matrices of embeddings for the same faces in the same order.
///
/// Rows need not be normalised; the true cosine is computed in `f64`. A zero
/// row (undefined angle) is an error.
pub fn teacher_fidelity(
    student: &[f32],
    teacher: &[f32],
    dim: usize,
) -> Result<Fidelity, EvalError> {
    if student.len() != teacher.len() {
        return Err(EvalError::InvalidInput(format!(
            "student has {} values, teacher {}",
            student.len(),
            teacher.len()
        )));
    }
    if dim == 0 || student.is_empty() || !student.len().is_multiple_of(dim) {
        return Err(EvalError::InvalidInput(format!(
            "{} values do not form a non-empty matrix of dimension {dim}",
            student.len()
        )));
    }
    let mut cos = student
        .chunks_exact(dim)
        .zip(teacher.chunks_exact(dim))
        .enumerate()
        .map(|(i, (s, t))| {
            cosine_similarity(s, t)
                .filter(|c| c.is_finite())
                .ok_or_else(|| {
                    EvalError::InvalidInput(format!(
                        "row {i}: cosine undefined (zero or non-finite embedding)"
                    ))
                })
        })
        .collect::<Result<Vec<f64>, _>>()?;
    let mean_cosine = cos.iter().sum::<f64>() / cos.len() as f64;
    cos.sort_unstable_by(f64::total_cmp);
    Ok(Fidelity {
        mean_cosine,
        p1_cosine: cos[(cos.len() - 1) / 100],
        min_cosine: cos[0],
    })
}

fn check_matrix(emb: &[f32], dim: usize, n: usize) -> Result<(), EvalError> {
    if dim == 0 || emb.len() != n * dim {
        return Err(EvalError::InvalidInput(format!(
            "{} embedding values do not form {n} rows of dimension {dim}",
            emb.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::{l2_normalize, tar_at_far};
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Below 1 so that only a fraction of the impostors is kept and the
    /// trimming path runs; FAR 1 (keep everything) is left to the proptest.
    const FARS: [f64; 6] = crate::eval::IJBC_FARS;

    /// Unit rows clustered by identity so that genuine scores are high and
    /// impostor scores spread around 0.
    fn random_faces(seed: u64, n: usize, dim: usize, identities: u32) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..identities)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut emb = Vec::with_capacity(n * dim);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let l = rng.random_range(0..identities);
            let mut row: Vec<f32> = centres[l as usize]
                .iter()
                .map(|c| c + rng.random_range(-0.7..0.7))
                .collect();
            l2_normalize(&mut row);
            emb.extend(row);
            labels.push(l);
        }
        (emb, labels)
    }

    /// The definition, literally: one full `n × n` product, every impostor
    /// score stored and fully sorted in descending order.
    fn naive(emb: &[f32], dim: usize, labels: &[u32], fars: &[f64]) -> AllPairs {
        let n = labels.len();
        let mut c = vec![0.0f32; n * n];
        // SAFETY: A is n × dim, B its transpose, C the n × n buffer above.
        unsafe {
            matrixmultiply::sgemm(
                n,
                dim,
                n,
                1.0,
                emb.as_ptr(),
                dim as isize,
                1,
                emb.as_ptr(),
                1,
                dim as isize,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for i in 0..n {
            for j in i + 1..n {
                if labels[i] == labels[j] {
                    genuine.push(c[i * n + j]);
                } else {
                    impostor.push(c[i * n + j]);
                }
            }
        }
        impostor.sort_by(descending);
        if genuine.is_empty() || impostor.is_empty() {
            return AllPairs {
                n_genuine: genuine.len(),
                n_impostor: impostor.len(),
                tar: Vec::new(),
                genuine_scores: genuine,
            };
        }
        let tar = fars
            .iter()
            .map(|&far| {
                let idx = ((far * impostor.len() as f64).floor() as usize).min(impostor.len() - 1);
                let threshold = impostor[idx];
                let above = genuine.iter().filter(|&&g| g > threshold).count();
                TarAtFar {
                    far,
                    threshold,
                    tar: above as f64 / genuine.len() as f64,
                }
            })
            .collect();
        AllPairs {
            n_genuine: genuine.len(),
            n_impostor: impostor.len(),
            tar,
            genuine_scores: genuine,
        }
    }

    #[test]
    fn all_pairs_equals_full_sort_on_300_random_faces() {
        let (emb, labels) = random_faces(7, 300, 32, 12);
        let want = naive(&emb, 32, &labels, &FARS);
        let got = all_pairs(&emb, 32, &labels, &FARS).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.n_genuine + got.n_impostor, 300 * 299 / 2);
        // The data must exercise the thresholds: not all TARs equal.
        assert!(got.tar[0].tar < got.tar[5].tar, "{:?}", got.tar);
    }

    #[test]
    fn all_pairs_is_independent_of_block_size_and_thread_count() {
        let (emb, labels) = random_faces(11, 300, 16, 8);
        let fars = [1e-3, 1e-2, 1e-1];
        let want = naive(&emb, 16, &labels, &fars);
        for (threads, block) in [(1, 300), (1, 7), (3, 7), (2, 64), (4, 1)] {
            let got = all_pairs_with(&emb, 16, &labels, &fars, threads, block).unwrap();
            assert_eq!(got, want, "threads {threads}, block {block}");
        }
    }

    #[test]
    fn all_pairs_thresholds_match_tar_at_far_on_the_same_scores() {
        let (emb, labels) = random_faces(3, 120, 8, 5);
        let reference = naive(&emb, 8, &labels, &[]);
        // Rebuild the impostor list to check the two public entry points
        // agree on the definition.
        let mut impostor = Vec::new();
        let n = labels.len();
        for i in 0..n {
            for j in i + 1..n {
                if labels[i] != labels[j] {
                    let dot: f32 = emb[i * 8..i * 8 + 8]
                        .iter()
                        .zip(&emb[j * 8..j * 8 + 8])
                        .map(|(a, b)| a * b)
                        .sum();
                    impostor.push(dot);
                }
            }
        }
        let fars = [1e-2, 1e-1, 0.3];
        let via_metrics = tar_at_far(&reference.genuine_scores, &impostor, &fars).unwrap();
        let got = all_pairs(&emb, 8, &labels, &fars).unwrap();
        for (a, b) in got.tar.iter().zip(&via_metrics) {
            // Different summation order: thresholds agree to rounding.
            assert!((a.threshold - b.threshold).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        assert_eq!(got.n_impostor, impostor.len());
    }

    #[test]
    fn top_scores_keeps_the_k_largest_through_many_trims() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let values: Vec<f32> = (0..10_000)
            .map(|_| (rng.random_range(0..500) as f32) / 100.0)
            .collect();
        let mut top = TopScores::new(37);
        for &v in &values {
            top.push(v);
        }
        let mut kept = top.into_kept();
        assert!(kept.len() >= 37 && kept.len() <= 74);
        kept.sort_by(descending);
        let mut all = values.clone();
        all.sort_by(descending);
        assert_eq!(kept[..37], all[..37]);
    }

    #[test]
    fn all_pairs_rejects_unnormalised_rows_and_single_class_inputs() {
        let emb = [1.0f32, 0.0, 0.0, 2.0];
        let err = all_pairs(&emb, 2, &[0, 1], &[0.1]).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
        let emb = [1.0f32, 0.0, 0.0, 1.0];
        assert!(all_pairs(&emb, 2, &[0, 0], &[0.1]).is_err());
        assert!(all_pairs(&emb, 2, &[0, 1], &[0.1]).is_err());
        assert!(all_pairs(&emb, 2, &[0, 1, 2], &[0.1]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn all_pairs_equals_full_sort_on_random_small_inputs(
            seed in any::<u64>(),
            n in 2usize..60,
            dim in 1usize..9,
            identities in 1u32..6,
            fars in proptest::collection::vec(0.0f64..=1.0, 1..5),
            threads in 1usize..4,
            block in 1usize..20,
        ) {
            let (emb, labels) = random_faces(seed, n, dim, identities);
            let want = naive(&emb, dim, &labels, &fars);
            let got = all_pairs_with(&emb, dim, &labels, &fars, threads, block);
            if want.n_genuine == 0 || want.n_impostor == 0 {
                prop_assert!(got.is_err());
            } else {
                prop_assert_eq!(got.unwrap(), want);
            }
        }
    }

    /// Cosines 1, 0, 0.6 (from (3,4)·(1,0)/5) and 1 again for a scaled copy:
    /// mean 0.65, min 0, and with n = 4 the 1st percentile is index
    /// floor(3 / 100) = 0, the minimum.
    #[test]
    fn teacher_fidelity_uses_true_cosine_of_unnormalised_rows() {
        let student = [1.0f32, 0.0, 0.0, 1.0, 3.0, 4.0, 2.0, 2.0];
        let teacher = [2.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 5.0, 5.0];
        let f = teacher_fidelity(&student, &teacher, 2).unwrap();
        assert!((f.mean_cosine - 0.65).abs() < 1e-12, "{f:?}");
        assert_eq!(f.min_cosine, 0.0);
        assert_eq!(f.p1_cosine, 0.0);
    }

    /// 201 faces with cosines k / 200 for k = 0..=200: the 1st percentile
    /// is index floor(200 / 100) = 2, i.e. 0.01.
    #[test]
    fn teacher_fidelity_first_percentile_skips_the_worst_one_percent() {
        let mut student = Vec::new();
        let mut teacher = Vec::new();
        for k in 0..=200 {
            let c = f64::from(k) / 200.0;
            student.extend([1.0f32, 0.0]);
            teacher.extend([c as f32, (1.0 - c * c).sqrt() as f32]);
        }
        let f = teacher_fidelity(&student, &teacher, 2).unwrap();
        assert!((f.p1_cosine - 0.01).abs() < 1e-6, "{f:?}");
        assert!(f.min_cosine.abs() < 1e-6);
        assert!((f.mean_cosine - 0.5).abs() < 1e-6);
    }

    #[test]
    fn teacher_fidelity_rejects_zero_rows_and_shape_mismatch() {
        assert!(teacher_fidelity(&[0.0, 0.0], &[1.0, 0.0], 2).is_err());
        assert!(teacher_fidelity(&[1.0, 0.0], &[1.0, 0.0, 0.0], 2).is_err());
        assert!(teacher_fidelity(&[1.0, 0.0, 1.0], &[1.0, 0.0, 1.0], 2).is_err());
        assert!(teacher_fidelity(&[], &[], 2).is_err());
    }
}
