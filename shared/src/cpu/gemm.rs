//! The fully-connected layer: float through `matrixmultiply`'s sgemm, integer as one exact dot
//! product per image and output.

use super::quantize::{dequantize_acc, quantize_activations};
use crate::graph::Tensor;
use crate::quant::{ActQuant, QuantWeights};
use rayon::prelude::*;

/// Exact integer dot product of two i8 vectors into i32.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Float fully-connected layer: `y[n][o] = Σ_i x[n][i] · W[o][i] + b[o]`.
pub fn gemm_f32(x: &[f32], batch: usize, fin: usize, wt: &Tensor, bias: &[f32]) -> Vec<f32> {
    let o = wt.shape[0];
    let mut out = vec![0f32; batch * o];
    // SAFETY: x is batch·fin, W is o·fin (read transposed), out is batch·o.
    unsafe {
        matrixmultiply::sgemm(
            batch,
            fin,
            o,
            1.0,
            x.as_ptr(),
            fin as isize,
            1,
            wt.data.as_ptr(),
            1,
            fin as isize,
            0.0,
            out.as_mut_ptr(),
            o as isize,
            1,
        );
    }
    for row in out.chunks_mut(o) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    out
}

/// The integer fully-connected layer's accumulators (`batch × O`), bit-exact.
pub fn gemm_int_acc(xq: &[i8], batch: usize, fin: usize, q: &QuantWeights) -> Vec<i32> {
    let o = q.shape[0];
    let mut acc = vec![0i32; batch * o];
    acc.par_iter_mut().enumerate().for_each(|(i, a)| {
        let (n, oc) = (i / o, i % o);
        *a = dot_i8(&q.values[oc * fin..][..fin], &xq[n * fin..][..fin]);
    });
    acc
}

pub(super) fn gemm_int(
    x: &[f32],
    batch: usize,
    fin: usize,
    q: &QuantWeights,
    bias: &[f32],
    aq: &ActQuant,
) -> Vec<f32> {
    let xq = quantize_activations(x, aq);
    let acc = gemm_int_acc(&xq, batch, fin, q);
    dequantize_acc(&acc, 1, q, aq, bias)
}
