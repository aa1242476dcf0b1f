//! Verification metrics over plain slices: the InsightFace 10-fold accuracy
//! protocol, ROC/AUC, and TAR at a fixed FAR.
//!
//! Scores are similarities (higher = more alike); distances are squared L2
//! between unit vectors (lower = more alike). Sums run in `f64` so that
//! results do not depend on the length of the inputs' rounding error.

use std::cmp::Ordering;

use super::EvalError;

/// Number of candidate thresholds in the 10-fold protocol: 0.00 to 4.00.
pub const TEN_FOLD_THRESHOLDS: usize = 401;

/// Scales `v` to unit L2 norm in place.
///
/// A zero vector is left as it is (as `sklearn.preprocessing.normalize`
/// does), so callers that need a direction must check for it themselves.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// Squared Euclidean distance between two embeddings, the quantity the
/// 10-fold protocol thresholds (in [0, 4] for unit vectors).
///
/// # Panics
/// If the slices differ in length.
pub fn squared_l2_distance(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum::<f64>() as f32
}

/// Cosine of the angle between `a` and `b`, or `None` when either is the
/// zero vector (the angle is then undefined).
///
/// # Panics
/// If the slices differ in length.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        None
    } else {
        Some(dot / (na.sqrt() * nb.sqrt()))
    }
}

/// Result of the InsightFace 10-fold verification protocol.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TenFold {
    /// Mean of the held-out fold accuracies.
    pub mean_accuracy: f64,
    /// Population standard deviation (ddof = 0, as `np.std`) of the fold
    /// accuracies.
    pub std_accuracy: f64,
    /// Accuracy on each held-out fold, in fold order.
    pub fold_accuracies: Vec<f64>,
    /// Distance threshold chosen on the other nine folds for each fold.
    pub best_thresholds: Vec<f64>,
}

/// The `i`-th candidate distance threshold of the 10-fold protocol.
///
/// Computed as `i as f32 * 0.01` in `f32`, and compared against `f32`
/// distances, so the candidate set is reproducible bit for bit; InsightFace's
/// `np.arange(0, 4, 0.01)` differs only in the last bits and stops at 3.99.
pub fn ten_fold_threshold(i: usize) -> f32 {
    i as f32 * 0.01
}

/// Fold boundaries of scikit-learn's `KFold(n_splits, shuffle=False)`: the
/// first `n % k` folds hold one extra item.
fn fold_ranges(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|f| {
            let len = base + usize::from(f < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// InsightFace's 10-fold verification accuracy (LFW, CALFW, CPLFW, ...).
///
/// `dist[i]` is the squared L2 distance between the L2-normalised
/// embeddings of pair `i`, `same[i]` whether it is a matched pair. A pair is
/// predicted "same" iff `dist < threshold`. The pairs are cut into ten
/// consecutive folds (unshuffled `KFold`; 600 pairs each on LFW). For each
/// fold, the threshold among [`TEN_FOLD_THRESHOLDS`] candidates
/// ([`ten_fold_threshold`]) with the best accuracy on the other nine folds is
/// applied to it; ties go to the smallest threshold, as `np.argmax` does.
pub fn ten_fold(dist: &[f32], same: &[bool]) -> Result<TenFold, EvalError> {
    const FOLDS: usize = 10;
    if dist.len() != same.len() {
        return Err(EvalError::InvalidInput(format!(
            "{} distances but {} labels",
            dist.len(),
            same.len()
        )));
    }
    if dist.len() < FOLDS {
        return Err(EvalError::InvalidInput(format!(
            "10-fold protocol needs at least 10 pairs, got {}",
            dist.len()
        )));
    }
    check_finite(dist, "distance")?;

    let thresholds: Vec<f32> = (0..TEN_FOLD_THRESHOLDS).map(ten_fold_threshold).collect();
    let folds = fold_ranges(dist.len(), FOLDS);
    // Counting correct predictions per fold and threshold lets each training
    // set's accuracy be a subtraction, and integer counts make argmax ties
    // exact rather than subject to float division.
    let mut correct = vec![[0u32; TEN_FOLD_THRESHOLDS]; FOLDS];
    for (f, range) in folds.iter().enumerate() {
        for i in range.clone() {
            for (t, &thr) in thresholds.iter().enumerate() {
                if (dist[i] < thr) == same[i] {
                    correct[f][t] += 1;
                }
            }
        }
    }
    let mut total = [0u32; TEN_FOLD_THRESHOLDS];
    for row in &correct {
        for (acc, &c) in total.iter_mut().zip(row) {
            *acc += c;
        }
    }

    let mut fold_accuracies = Vec::with_capacity(FOLDS);
    let mut best_thresholds = Vec::with_capacity(FOLDS);
    for (f, range) in folds.iter().enumerate() {
        let mut best = 0;
        for t in 1..TEN_FOLD_THRESHOLDS {
            if total[t] - correct[f][t] > total[best] - correct[f][best] {
                best = t;
            }
        }
        fold_accuracies.push(f64::from(correct[f][best]) / range.len() as f64);
        best_thresholds.push(f64::from(thresholds[best]));
    }
    let mean_accuracy = fold_accuracies.iter().sum::<f64>() / FOLDS as f64;
    let std_accuracy = (fold_accuracies
        .iter()
        .map(|a| (a - mean_accuracy).powi(2))
        .sum::<f64>()
        / FOLDS as f64)
        .sqrt();
    Ok(TenFold {
        mean_accuracy,
        std_accuracy,
        fold_accuracies,
        best_thresholds,
    })
}

/// A receiver operating characteristic curve.
///
/// Point `i` is the (FPR, TPR) obtained by accepting every score
/// `>= thresholds[i]`. The first point is (0, 0) at threshold +∞; FPR and TPR
/// never decrease and the last point is (1, 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Roc {
    /// False positive rate at each threshold.
    pub fpr: Vec<f64>,
    /// True positive rate at each threshold.
    pub tpr: Vec<f64>,
    /// Decreasing score thresholds; the first is `f32::INFINITY`.
    pub thresholds: Vec<f32>,
}

/// ROC curve of similarity `scores` (higher = more alike) against
/// `genuine` labels.
///
/// Equal scores collapse into a single point, as in
/// `sklearn.metrics.roc_curve(..., drop_intermediate=False)`; collinear
/// points are kept, which changes no area.
pub fn roc(scores: &[f32], genuine: &[bool]) -> Result<Roc, EvalError> {
    if scores.len() != genuine.len() {
        return Err(EvalError::InvalidInput(format!(
            "{} scores but {} labels",
            scores.len(),
            genuine.len()
        )));
    }
    check_finite(scores, "score")?;
    let n_pos = genuine.iter().filter(|&&g| g).count();
    let n_neg = genuine.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(EvalError::InvalidInput(format!(
            "ROC needs both classes, got {n_pos} genuine and {n_neg} impostor"
        )));
    }

    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| descending(&scores[a], &scores[b]));

    let mut roc = Roc {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f32::INFINITY],
    };
    let (mut tp, mut fp) = (0usize, 0usize);
    for (rank, &i) in order.iter().enumerate() {
        if genuine[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        // A point is emitted only after the last of a run of equal scores:
        // no threshold can separate tied pairs.
        let run_ends = order
            .get(rank + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if run_ends {
            roc.fpr.push(fp as f64 / n_neg as f64);
            roc.tpr.push(tp as f64 / n_pos as f64);
            roc.thresholds.push(scores[i]);
        }
    }
    Ok(roc)
}

/// Area under a ROC curve by the trapezoidal rule.
pub fn auc(roc: &Roc) -> f64 {
    roc.fpr
        .windows(2)
        .zip(roc.tpr.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .sum()
}

/// True accept rate at one false accept rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TarAtFar {
    /// The requested false accept rate.
    pub far: f64,
    /// Score threshold derived from the impostor scores (see
    /// [`threshold_for_far`]).
    pub threshold: f32,
    /// Fraction of genuine scores strictly above `threshold`.
    pub tar: f64,
}

/// Index, in the impostor scores sorted in descending order, of the score
/// that is the threshold for `far`: `floor(far * n_impostor)` computed in
/// `f64`, clamped to `n_impostor - 1`.
///
/// `n_impostor` must be positive.
pub fn far_index(far: f64, n_impostor: usize) -> usize {
    debug_assert!(n_impostor > 0);
    ((far * n_impostor as f64).floor() as usize).min(n_impostor - 1)
}

/// The score threshold for false accept rate `far`: the impostor score at
/// [`far_index`] when the impostor scores are sorted in descending order.
pub fn threshold_for_far(impostor: &[f32], far: f64) -> Result<f32, EvalError> {
    check_impostors_and_fars(impostor, &[far])?;
    let mut scratch = impostor.to_vec();
    Ok(select_descending(&mut scratch, &[far_index(far, impostor.len())])[0])
}

/// TAR at each of `fars`: the threshold is [`threshold_for_far`] and TAR is
/// the fraction of `genuine` scores strictly greater than it.
///
/// Runs in linear time: the impostor scores are copied and partially
/// selected, never fully sorted.
pub fn tar_at_far(
    genuine: &[f32],
    impostor: &[f32],
    fars: &[f64],
) -> Result<Vec<TarAtFar>, EvalError> {
    check_impostors_and_fars(impostor, fars)?;
    check_genuine(genuine)?;
    let ks: Vec<usize> = fars.iter().map(|&f| far_index(f, impostor.len())).collect();
    let mut scratch = impostor.to_vec();
    let thresholds = select_descending(&mut scratch, &ks);
    Ok(assemble_tar(genuine, fars, &thresholds))
}

/// Pairs each FAR with its threshold and the TAR of `genuine` above it.
pub(crate) fn assemble_tar(genuine: &[f32], fars: &[f64], thresholds: &[f32]) -> Vec<TarAtFar> {
    fars.iter()
        .zip(thresholds)
        .map(|(&far, &threshold)| {
            let accepted = genuine.iter().filter(|&&g| g > threshold).count();
            TarAtFar {
                far,
                threshold,
                tar: accepted as f64 / genuine.len() as f64,
            }
        })
        .collect()
}

/// Descending order on finite floats; `total_cmp` so that the order is total
/// and the selected element is the same bit pattern however it is reached.
pub(crate) fn descending(a: &f32, b: &f32) -> Ordering {
    b.total_cmp(a)
}

/// For each `k` in `ks`, the element at index `k` of `scores` sorted in
/// descending order, found by partial selection (`scores` is reordered).
///
/// Every `k` must be `< scores.len()`.
pub(crate) fn select_descending(scores: &mut [f32], ks: &[usize]) -> Vec<f32> {
    let mut by_k: Vec<(usize, usize)> = ks.iter().copied().enumerate().collect();
    by_k.sort_unstable_by_key(|&(_, k)| std::cmp::Reverse(k));
    let mut out = vec![0.0; ks.len()];
    let mut len = scores.len();
    // After selecting index k, the top k + 1 scores occupy [0, k], so each
    // smaller k only has to search that prefix.
    for (slot, k) in by_k {
        let prefix = &mut scores[..len];
        let (_, &mut value, _) = prefix.select_nth_unstable_by(k, descending);
        out[slot] = value;
        len = k + 1;
    }
    out
}

pub(crate) fn check_finite(values: &[f32], what: &str) -> Result<(), EvalError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(EvalError::InvalidInput(format!(
            "{what} {i} is not finite ({})",
            values[i]
        ))),
        None => Ok(()),
    }
}

pub(crate) fn check_fars(fars: &[f64]) -> Result<(), EvalError> {
    match fars.iter().find(|f| !(0.0..=1.0).contains(*f)) {
        Some(f) => Err(EvalError::InvalidInput(format!(
            "FAR {f} is outside [0, 1]"
        ))),
        None => Ok(()),
    }
}

fn check_impostors_and_fars(impostor: &[f32], fars: &[f64]) -> Result<(), EvalError> {
    if impostor.is_empty() {
        return Err(EvalError::InvalidInput(
            "no impostor scores: FAR thresholds are undefined".into(),
        ));
    }
    check_finite(impostor, "impostor score")?;
    check_fars(fars)
}

pub(crate) fn check_genuine(genuine: &[f32]) -> Result<(), EvalError> {
    if genuine.is_empty() {
        return Err(EvalError::InvalidInput(
            "no genuine scores: TAR is undefined".into(),
        ));
    }
    check_finite(genuine, "genuine score")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_normalize_gives_unit_norm_and_keeps_direction() {
        let mut v = [3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
    }

    #[test]
    fn l2_normalize_leaves_zero_vector_unchanged() {
        let mut v = [0.0f32; 3];
        l2_normalize(&mut v);
        assert_eq!(v, [0.0; 3]);
    }

    #[test]
    fn squared_l2_distance_of_orthogonal_unit_vectors_is_two() {
        assert_eq!(squared_l2_distance(&[1.0, 0.0], &[0.0, 1.0]), 2.0);
        assert_eq!(squared_l2_distance(&[1.0, 0.0], &[-1.0, 0.0]), 4.0);
    }

    #[test]
    fn cosine_similarity_ignores_scale_and_rejects_zero_vectors() {
        let c = cosine_similarity(&[3.0, 4.0], &[6.0, 8.0]).unwrap();
        assert!((c - 1.0).abs() < 1e-12);
        let c = cosine_similarity(&[1.0, 0.0], &[1.0, 1.0]).unwrap();
        assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), None);
    }

    #[test]
    fn ten_fold_thresholds_run_from_zero_to_four_in_hundredths() {
        assert_eq!(ten_fold_threshold(0), 0.0);
        assert_eq!(ten_fold_threshold(TEN_FOLD_THRESHOLDS - 1), 4.0);
        assert_eq!(ten_fold_threshold(50), 0.5);
    }

    #[test]
    fn fold_ranges_match_unshuffled_kfold_sizes() {
        let sizes: Vec<usize> = fold_ranges(23, 10).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(fold_ranges(6000, 10)[3], 1800..2400);
    }

    /// Ten pairs, one per fold. Matched pairs sit at distance 0.5, mismatched
    /// ones at 1.5, except pair 0 (matched, 1.6) and pair 9 (mismatched,
    /// 0.4), which no threshold classifies correctly.
    ///
    /// Holding out fold 0: the other nine are 4 matched at 0.5, 4 mismatched
    /// at 1.5 and the mismatched 0.4. Any threshold in (0.5, 1.5] gets 8/9
    /// right; the first such candidate is index 51 (0.51). Applied to pair 0 (1.6 is not
    /// < 0.51, so "different"): wrong, accuracy 0. Fold 9 alike: 0.51, and
    /// pair 9 (0.4 < 0.51, "same") is wrong. Folds 1..=8: the training set
    /// holds both hard pairs, any threshold in (0.5, 1.5] gets 7/9, the first
    /// is 0.51 and the held-out easy pair is right. Mean 0.8, population std
    /// sqrt((2 * 0.64 + 8 * 0.04) / 10) = 0.4.
    #[test]
    fn ten_fold_on_hand_computed_pairs_picks_first_best_threshold() {
        let dist = [1.6f32, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.5, 1.5, 0.4];
        let same = [
            true, true, false, true, false, true, false, true, false, false,
        ];
        let r = ten_fold(&dist, &same).unwrap();
        let expected: Vec<f64> = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0].to_vec();
        assert_eq!(r.fold_accuracies, expected);
        assert!(
            r.best_thresholds
                .iter()
                .all(|&t| t == f64::from(ten_fold_threshold(51)))
        );
        assert!((r.mean_accuracy - 0.8).abs() < 1e-12);
        assert!((r.std_accuracy - 0.4).abs() < 1e-12);
    }

    /// Twenty pairs, two per fold, perfectly separable: matched at 0.1,
    /// mismatched at 3.0. The first threshold that separates them is index
    /// 11 (0.11; index 10 rounds to 0.1 or just below, and 0.1 < 0.1 is
    /// false), and every fold scores 100 %.
    #[test]
    fn ten_fold_separable_pairs_score_perfectly_with_smallest_separating_threshold() {
        let mut dist = Vec::new();
        let mut same = Vec::new();
        for _ in 0..10 {
            dist.extend([0.1f32, 3.0]);
            same.extend([true, false]);
        }
        let r = ten_fold(&dist, &same).unwrap();
        assert_eq!(r.mean_accuracy, 1.0);
        assert_eq!(r.std_accuracy, 0.0);
        assert_eq!(
            r.best_thresholds,
            vec![f64::from(ten_fold_threshold(11)); 10]
        );
    }

    #[test]
    fn ten_fold_rejects_too_few_pairs_and_length_mismatch() {
        assert!(ten_fold(&[0.1; 9], &[true; 9]).is_err());
        assert!(ten_fold(&[0.1; 10], &[true; 11]).is_err());
        assert!(ten_fold(&[f32::NAN; 10], &[true; 10]).is_err());
    }

    /// Scores 0.9 (g), 0.8 (i), 0.7 (g), 0.1 (i): points (0,0), (0,.5),
    /// (.5,.5), (.5,1), (1,1); AUC = 0.5 * 0.5 + 0.5 * 1 = 0.75, the fraction
    /// of (genuine, impostor) pairs ranked correctly (3 of 4).
    #[test]
    fn roc_of_four_scores_has_known_points_and_auc() {
        let r = roc(&[0.7, 0.1, 0.9, 0.8], &[true, false, true, false]).unwrap();
        assert_eq!(r.fpr, [0.0, 0.0, 0.5, 0.5, 1.0]);
        assert_eq!(r.tpr, [0.0, 0.5, 0.5, 1.0, 1.0]);
        assert_eq!(r.thresholds, [f32::INFINITY, 0.9, 0.8, 0.7, 0.1]);
        assert_eq!(auc(&r), 0.75);
    }

    /// A genuine and an impostor tied at 0.5 collapse into one diagonal step,
    /// which the trapezoid counts as half a correct ranking: the pairs are
    /// (0.9 g, 0.5 i) right, (0.5 g, 0.5 i) half, so AUC = 1.5 / 2.
    #[test]
    fn roc_collapses_tied_scores_into_one_point() {
        let r = roc(&[0.9, 0.5, 0.5], &[true, true, false]).unwrap();
        assert_eq!(r.thresholds, [f32::INFINITY, 0.9, 0.5]);
        assert_eq!(r.fpr, [0.0, 0.0, 1.0]);
        assert_eq!(r.tpr, [0.0, 0.5, 1.0]);
        assert_eq!(auc(&r), 0.75);
    }

    #[test]
    fn roc_requires_both_classes() {
        assert!(roc(&[0.1, 0.2], &[true, true]).is_err());
        assert!(roc(&[0.1], &[true, false]).is_err());
    }

    /// Impostors sorted descending: 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 0.1 0.0
    /// (N = 10). FAR 0.1 → index floor(1.0) = 1 → 0.8; genuine above 0.8:
    /// 0.95, 0.85 → TAR 2/4. FAR 0.25 → index 2 → 0.7; 0.95, 0.85, 0.75 →
    /// 3/4. FAR 0 → index 0 → 0.9; only 0.95 → 1/4. FAR 1 → index 10,
    /// clamped to 9 → 0.0; all four → 1. Genuine 0.7 equals the FAR-0.25
    /// threshold and is not counted (strictly greater).
    #[test]
    fn tar_at_far_matches_hand_computed_thresholds() {
        let impostor = [0.3f32, 0.9, 0.0, 0.5, 0.8, 0.1, 0.7, 0.2, 0.6, 0.4];
        let genuine = [0.95f32, 0.85, 0.75, 0.7];
        let r = tar_at_far(&genuine, &impostor, &[0.1, 0.25, 0.0, 1.0]).unwrap();
        let got: Vec<(f32, f64)> = r.iter().map(|t| (t.threshold, t.tar)).collect();
        assert_eq!(got, [(0.8, 0.5), (0.7, 0.75), (0.9, 0.25), (0.0, 1.0)]);
        assert_eq!(r[1].far, 0.25);
    }

    #[test]
    fn threshold_for_far_counts_duplicates_as_separate_impostors() {
        // Descending: 0.9 0.9 0.9 0.1; index 2 is still 0.9, index 3 is 0.1.
        let impostor = [0.9f32, 0.1, 0.9, 0.9];
        assert_eq!(threshold_for_far(&impostor, 0.5).unwrap(), 0.9);
        assert_eq!(threshold_for_far(&impostor, 0.75).unwrap(), 0.1);
    }

    #[test]
    fn tar_at_far_rejects_empty_classes_and_bad_fars() {
        assert!(tar_at_far(&[0.5], &[], &[0.1]).is_err());
        assert!(tar_at_far(&[], &[0.5], &[0.1]).is_err());
        assert!(tar_at_far(&[0.5], &[0.5], &[1.5]).is_err());
        assert!(tar_at_far(&[0.5], &[0.5], &[f64::NAN]).is_err());
        assert!(tar_at_far(&[0.5], &[f32::NAN], &[0.1]).is_err());
    }

    #[test]
    fn select_descending_agrees_with_full_sort_for_every_index() {
        let scores: Vec<f32> = (0..50).map(|i| ((i * 37) % 23) as f32 * 0.5).collect();
        let mut sorted = scores.clone();
        sorted.sort_unstable_by(descending);
        let ks: Vec<usize> = (0..50).rev().chain([7, 0, 49]).collect();
        let mut scratch = scores.clone();
        let got = select_descending(&mut scratch, &ks);
        let want: Vec<f32> = ks.iter().map(|&k| sorted[k]).collect();
        assert_eq!(got, want);
    }
}
