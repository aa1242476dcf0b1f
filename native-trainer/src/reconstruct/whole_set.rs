//! Tensors over the whole calibration set — a layer's input, the teacher's and the student's
//! outputs — computed, stored and reduced a chunk of images at a time: they are the largest
//! tensors reconstruction holds, and one whole-set temporary more is what limited
//! `--calib-images` (docs/EXPERIMENTS.md).

use tch::{Kind, Tensor};

use super::Objective;

/// Rows `s..s + l` of a stored whole-set tensor, in f32 for computing on (no copy when stored
/// in f32).
pub(super) fn rows(t: &Tensor, s: i64, l: i64) -> Tensor {
    t.narrow(0, s, l).to_kind(Kind::Float)
}
/// Images per no-grad pass over the calibration set (bounds the temporaries of one layer).
const CHUNK: i64 = 64;

/// `f(start, len)` over the calibration set a chunk at a time, into one tensor of `kind`.
pub(super) fn chunked(n: i64, kind: Kind, f: impl Fn(i64, i64) -> Tensor) -> Tensor {
    tch::no_grad(|| {
        let first = f(0, CHUNK.min(n));
        if first.size()[0] == n {
            return first.to_kind(kind);
        }
        // Written into one buffer rather than concatenated: a layer's output over the whole
        // calibration set is the largest tensor held (822 MB for mbf's 128×56×56 at 512
        // images), and `cat` would hold it twice. Channels-last stays channels-last, so that
        // the next convolution reads it without a reorder.
        let mut shape = first.size();
        shape[0] = n;
        let opts = (kind, first.device());
        let channels_last = first.dim() == 4 && first.stride()[1] == 1 && shape[1] > 1;
        let out = if channels_last {
            Tensor::empty([shape[0], shape[2], shape[3], shape[1]], opts).permute([0, 3, 1, 2])
        } else {
            Tensor::empty(shape.as_slice(), opts)
        };
        out.narrow(0, 0, first.size()[0]).copy_(&first);
        drop(first);
        for s in (CHUNK..n).step_by(CHUNK as usize) {
            let l = CHUNK.min(n - s);
            out.narrow(0, s, l).copy_(&f(s, l));
        }
        out
    })
}

/// Per-channel sum over everything but dimension 1, in f64, a chunk of images at a time: a
/// reduction into f64 first converts its whole input to f64 (libtorch on the CPU), which for a
/// whole-set tensor is twice its size again.
fn channel_sum(t: &Tensor) -> Tensor {
    let dims: Vec<i64> = (0..t.dim() as i64).filter(|&d| d != 1).collect();
    tch::no_grad(|| {
        let n = t.size()[0];
        let mut sum = Tensor::zeros([t.size()[1]], (Kind::Double, t.device()));
        for s in (0..n).step_by(CHUNK as usize) {
            let part = t.narrow(0, s, CHUNK.min(n - s));
            sum += part.sum_dim_intlist(dims.as_slice(), false, Kind::Double);
        }
        sum
    })
}

/// `objective`'s error of `y` against `t` over the whole calibration set, in f64, a chunk of
/// images at a time: the same value as `objective.error(y, t, Kind::Double)` without its
/// whole-set temporaries (the difference, its square and their f64 copy: four times the
/// tensor, the peak of the quantize command before this was chunked).
pub(super) fn whole_set_error(objective: Objective, y: &Tensor, t: &Tensor) -> f64 {
    tch::no_grad(|| {
        let n = y.size()[0];
        let mut sum = 0.0;
        for s in (0..n).step_by(CHUNK as usize) {
            let l = CHUNK.min(n - s);
            let (yc, tc) = (rows(y, s, l), rows(t, s, l));
            // Each chunk's mean, weighted by its share of the images: the chunks' means of
            // equal-size rows average to the whole set's.
            sum += objective.error(&yc, &tc, Kind::Double).double_value(&[]) * l as f64;
        }
        sum / n as f64
    })
}
/// `b += mean(teacher − student)` per output channel.
pub(super) fn correct_bias(b: &Tensor, ty: &Tensor, sy: &Tensor) {
    tch::no_grad(|| {
        let per_channel = (ty.numel() as i64 / ty.size()[1]) as f64;
        let shift = ((channel_sum(ty) - channel_sum(sy)) / per_channel).to_kind(Kind::Float);
        let mut b = b.shallow_clone();
        let _ = b.g_add_(&shift.to_device(b.device()));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_set_errors_and_channel_sums_by_chunks_equal_the_unchunked_ones() {
        // 150 images: two full chunks and a short one, random values with a nonzero mean.
        tch::manual_seed(7);
        let t = Tensor::randn([150, 5, 3, 2], (Kind::Float, tch::Device::Cpu)) + 0.3;
        let y = &t + Tensor::randn([150, 5, 3, 2], (Kind::Float, tch::Device::Cpu)) * 0.2;
        for objective in [Objective::Mse, Objective::Cosine] {
            let whole = objective.error(&y, &t, Kind::Double).double_value(&[]);
            let chunked = whole_set_error(objective, &y, &t);
            assert!(whole > 0.0);
            assert!(
                (chunked - whole).abs() <= 1e-12 * whole,
                "{objective:?}: {chunked} vs {whole}"
            );
        }
        let whole = t.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
        let chunked = channel_sum(&t);
        assert_eq!(chunked.size(), [5]);
        let gap = (&chunked - &whole).abs().max().double_value(&[]);
        assert!(gap < 1e-9, "channel sums differ by {gap}");
    }
}
