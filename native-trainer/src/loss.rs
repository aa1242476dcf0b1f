//! Distillation losses between a student's and a teacher's embeddings of the same batch.
//!
//! EKD (evaluation-oriented knowledge distillation, the paper's Eq. 4, without classification):
//! face verification accepts a pair when its cosine clears a threshold chosen for a target FPR,
//! so the student should rank pairs against those thresholds as the teacher does.
//! - Thresholds at FPR 1e-1 … 1e-6 come from each model's negative-pair cosines in the batch,
//!   sorted descending: the threshold for FPR `f` is the score at index `floor(f · N_neg)`.
//!   A batch of 64 has ~2,000 negative pairs, too few for FPR ≤ 1e-4: the index then clamps to
//!   0, the batch's hardest negative. The exponential moving average across steps (momentum
//!   0.9) turns these per-batch maxima into a stable estimate of the extreme tail.
//! - A pair's soft rank is `Σ_k sigmoid((s − t_k) / 0.01)`: how many thresholds it clears.
//! - Loss = 0.02 · MSE(rank_s, rank_t) over positive pairs + 0.01 · MSE over the hardest
//!   negatives (top-k by student cosine). With no positive pair the positive term is 0.

use tch::{Kind, Tensor};

pub const EKD_FPRS: [f64; 6] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6];
pub const EKD_TEMPERATURE: f64 = 0.01;
pub const EKD_POS_WEIGHT: f64 = 0.02;
pub const EKD_NEG_WEIGHT: f64 = 0.01;

/// Thresholds smoothed across steps, one set per model; saved in checkpoints.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EkdState {
    pub teacher: Option<Vec<f64>>,
    pub student: Option<Vec<f64>>,
    pub momentum: f64,
}

impl EkdState {
    pub fn new() -> Self {
        EkdState {
            teacher: None,
            student: None,
            momentum: 0.9,
        }
    }
}

/// Per-batch thresholds: descending order statistics of `neg` at `floor(f · n)`.
pub fn batch_thresholds(neg: &Tensor) -> Vec<f64> {
    let n = neg.size()[0];
    let (sorted, _) = neg.detach().sort(0, true);
    EKD_FPRS
        .iter()
        .map(|f| {
            let k = ((f * n as f64).floor() as i64).min(n - 1).max(0);
            sorted.double_value(&[k])
        })
        .collect()
}

fn smooth(prev: &mut Option<Vec<f64>>, batch: Vec<f64>, m: f64) -> Vec<f64> {
    let next = match prev.take() {
        None => batch,
        Some(p) => p
            .iter()
            .zip(&batch)
            .map(|(a, b)| m * a + (1.0 - m) * b)
            .collect(),
    };
    *prev = Some(next.clone());
    next
}

/// `Σ_k sigmoid((s − t_k) / T)` for every score in `s`.
pub fn soft_rank(s: &Tensor, thresholds: &[f64]) -> Tensor {
    let t = Tensor::from_slice(thresholds)
        .to_kind(Kind::Float)
        .to_device(s.device());
    ((s.unsqueeze(-1) - t) / EKD_TEMPERATURE)
        .sigmoid()
        .sum_dim_intlist(-1, false, Kind::Float)
}

/// Loss terms of one step, for logging.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossParts {
    pub positive: f64,
    pub negative: f64,
    pub n_pos: i64,
    pub n_neg: i64,
}

/// EKD on L2-normalised embeddings `es` (student, differentiable) and `et` (teacher).
/// `pos` and `neg` are boolean `[B, B]` masks of the pairs to use (upper triangle only).
pub fn ekd_loss(
    es: &Tensor,
    et: &Tensor,
    pos: &Tensor,
    neg: &Tensor,
    hard_k: i64,
    state: &mut EkdState,
) -> (Tensor, LossParts) {
    let ss = es.mm(&es.tr());
    let st = et.mm(&et.tr()).detach();
    let (s_neg, t_neg) = (ss.masked_select(neg), st.masked_select(neg));
    let n_neg = s_neg.size()[0];
    let zero = || Tensor::zeros([], (Kind::Float, es.device()));
    if n_neg == 0 {
        return (zero(), LossParts::default());
    }
    let m = state.momentum;
    let thr_t = smooth(&mut state.teacher, batch_thresholds(&t_neg), m);
    let thr_s = smooth(&mut state.student, batch_thresholds(&s_neg), m);
    let (s_pos, t_pos) = (ss.masked_select(pos), st.masked_select(pos));
    let n_pos = s_pos.size()[0];
    let pos_term = if n_pos > 0 {
        (soft_rank(&s_pos, &thr_s) - soft_rank(&t_pos, &thr_t))
            .square()
            .mean(Kind::Float)
    } else {
        zero()
    };
    let k = hard_k.clamp(1, n_neg);
    let (_, idx) = s_neg.detach().topk(k, 0, true, false);
    let (s_hn, t_hn) = (s_neg.index_select(0, &idx), t_neg.index_select(0, &idx));
    let neg_term = (soft_rank(&s_hn, &thr_s) - soft_rank(&t_hn, &thr_t))
        .square()
        .mean(Kind::Float);
    let parts = LossParts {
        positive: pos_term.double_value(&[]),
        negative: neg_term.double_value(&[]),
        n_pos,
        n_neg,
    };
    (pos_term * EKD_POS_WEIGHT + neg_term * EKD_NEG_WEIGHT, parts)
}

/// QuantFace's distillation loss: MSE between the L2-normalised embeddings (mean over elements).
pub fn quantface_loss(es: &Tensor, et: &Tensor) -> Tensor {
    es.mse_loss(&et.detach(), tch::Reduction::Mean)
}

/// CosFace-style margin classification (the "CE" of the paper's Table 3): logits
/// `scale · (cos(e, w_c) − margin · [c = label])` over L2-normalised class centres `head`
/// (`classes × dim`), then softmax cross-entropy. `es` must be L2-normalised.
pub fn margin_ce_loss(
    es: &Tensor,
    head: &Tensor,
    labels: &Tensor,
    margin: f64,
    scale: f64,
) -> Tensor {
    let w = head / head.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let cos = es.matmul(&w.transpose(0, 1));
    let onehot = cos.zeros_like().scatter_value(1, &labels.unsqueeze(1), 1.0);
    let logits = (cos - onehot * margin) * scale;
    logits.cross_entropy_for_logits(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_ce_matches_a_hand_computed_case() {
        // Two unit embeddings, three class centres in 2-D (not normalised: the loss does it).
        let es = t(&[1.0, 0.0, 0.0, 1.0], [2, 2]);
        let head = t(&[2.0, 0.0, 0.0, 3.0, -1.0, 0.0], [3, 2]);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let got = margin_ce_loss(&es, &head, &labels, 0.4, 64.0).double_value(&[]);
        // Sample 0: cosines (1, 0, -1), label 0 → logits 64·(0.6, 0, -1).
        // Sample 1: cosines (0, 1, 0), label 2 → logits 64·(0, 1, -0.4).
        let ce = |l: [f64; 3], y: usize| {
            let m = l.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = l.iter().map(|v| (v - m).exp()).sum();
            -(l[y] - m - z.ln())
        };
        let want = (ce([38.4, 0.0, -64.0], 0) + ce([0.0, 64.0, -25.6], 2)) / 2.0;
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn t(v: &[f32], shape: [i64; 2]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    #[test]
    fn ekd_matches_a_hand_computed_case() {
        // Four unit embeddings in 2-D; pairs (0,1) positive, the other five negative.
        let (c, s) = (0.6f32, 0.8f32);
        let es = t(&[1.0, 0.0, c, s, 0.0, 1.0, -1.0, 0.0], [4, 2]);
        let et = t(&[1.0, 0.0, 0.8, 0.6, 0.0, 1.0, -0.6, 0.8], [4, 2]);
        let mut pos = [false; 16];
        pos[1] = true;
        let mut neg = [false; 16];
        for (i, j) in [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] {
            neg[i * 4 + j] = true;
        }
        let pos = Tensor::from_slice(&pos).reshape([4, 4]);
        let neg = Tensor::from_slice(&neg).reshape([4, 4]);
        let mut state = EkdState::new();
        let (loss, parts) = ekd_loss(&es, &et, &pos, &neg, 2, &mut state);

        // Student cosines: pos (0,1)=0.6; neg (0,2)=0, (0,3)=-1, (1,2)=0.8, (1,3)=-0.6, (2,3)=0.
        // Teacher cosines: pos 0.8;        neg (0,2)=0, (0,3)=-0.6, (1,2)=0.6, (1,3)=-0.48, (2,3)=0.8.
        // 5 negatives: FPR 1e-1 → index floor(0.5)=0, every FPR → index 0: the maximum.
        let (ts, tt) = (0.8f64, 0.8f64);
        let rank = |x: f64, thr: f64| 6.0 * sigmoid((x - thr) / 0.01);
        let pos_term = (rank(0.6, ts) - rank(0.8, tt)).powi(2);
        // Hardest two negatives by student cosine: (1,2)=0.8 and then a tie at 0 between (0,2)
        // and (2,3); whichever topk picks, take both candidates and check one matches.
        let hn_a = ((rank(0.8, ts) - rank(0.6, tt)).powi(2)
            + (rank(0.0, ts) - rank(0.0, tt)).powi(2))
            / 2.0;
        let hn_b = ((rank(0.8, ts) - rank(0.6, tt)).powi(2)
            + (rank(0.0, ts) - rank(0.8, tt)).powi(2))
            / 2.0;
        assert_eq!((parts.n_pos, parts.n_neg), (1, 5));
        assert!(
            (parts.positive - pos_term).abs() < 1e-4,
            "{} vs {pos_term}",
            parts.positive
        );
        let got = loss.double_value(&[]);
        let ok = [hn_a, hn_b]
            .iter()
            .any(|hn| (got - (0.02 * pos_term + 0.01 * hn)).abs() < 1e-4);
        assert!(
            ok,
            "loss {got}, expected {} or {}",
            0.02 * pos_term + 0.01 * hn_a,
            0.02 * pos_term + 0.01 * hn_b
        );
        assert_eq!(state.student.as_ref().unwrap()[0], 0.8f32 as f64);
    }

    #[test]
    fn ekd_is_finite_without_positives_and_has_gradient() {
        let es = Tensor::randn([8, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let esn = &es / es.norm_scalaropt_dim(2, [1], true);
        let et = Tensor::randn([8, 16], (Kind::Float, tch::Device::Cpu));
        let etn = &et / et.norm_scalaropt_dim(2, [1], true);
        let pos = Tensor::zeros([8, 8], (Kind::Bool, tch::Device::Cpu));
        let neg = Tensor::ones([8, 8], (Kind::Bool, tch::Device::Cpu)).triu(1);
        let mut state = EkdState::new();
        let (loss, parts) = ekd_loss(&esn, &etn, &pos, &neg, 4, &mut state);
        assert_eq!(parts.n_pos, 0);
        assert!(loss.double_value(&[]).is_finite());
        loss.backward();
        let g = es.grad();
        assert!(g.isfinite().all().int64_value(&[]) == 1);
    }

    #[test]
    fn thresholds_are_smoothed_across_steps() {
        let mut state = EkdState::new();
        let a = smooth(&mut state.teacher, vec![1.0; 6], 0.9);
        let b = smooth(&mut state.teacher, vec![0.0; 6], 0.9);
        assert_eq!(a[0], 1.0);
        assert!((b[0] - 0.9).abs() < 1e-12);
    }
}
