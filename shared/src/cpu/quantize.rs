//! Into and out of the integer grid: quantizing a layer's input and the dequantization epilogue
//! (with the PReLU that may follow), each in parallel over rows. The arithmetic per value is
//! [`crate::quant`]'s, which the oracle uses too.

use super::elementwise::{ROWS_PER_TASK, prelu};
use crate::quant::{self, ActQuant, QuantWeights};
use rayon::prelude::*;

/// A float layer's quantized input: [`ActQuant::fake_quantize`] of every value.
pub(super) fn fake_quant(x: &[f32], aq: &ActQuant) -> Vec<f32> {
    x.iter().map(|&v| aq.fake_quantize(v)).collect()
}

/// Quantizes a tensor of activations to the integer grid.
pub fn quantize_activations(x: &[f32], aq: &ActQuant) -> Vec<i8> {
    let quantizer = aq.quantizer();
    let mut q = vec![0i8; x.len()];
    q.par_chunks_mut(ROWS_PER_TASK)
        .zip(x.par_chunks(ROWS_PER_TASK))
        .for_each(|(q, x)| {
            q.iter_mut()
                .zip(x)
                .for_each(|(q, &v)| *q = quantizer.to_i8(v))
        });
    q
}

/// Dequantization epilogue shared by every integer layer: `y = acc · (s_x · s_w[o]) + b[o]`,
/// with the combined multiplier rounded to f32 once.
pub fn dequantize_acc(
    acc: &[i32],
    per_channel: usize,
    q: &QuantWeights,
    aq: &ActQuant,
    bias: &[f32],
) -> Vec<f32> {
    dequantize_then(acc, per_channel, q, aq, bias, None)
}

/// [`dequantize_acc`], then the PReLU with these slopes (one, or one per channel) if given: the
/// same arithmetic as the two layers apart, in one pass over the tensor.
pub(super) fn dequantize_then(
    acc: &[i32],
    per_channel: usize,
    q: &QuantWeights,
    aq: &ActQuant,
    bias: &[f32],
    prelu_slope: Option<&[f32]>,
) -> Vec<f32> {
    let o = q.scales.len();
    let mult = aq_multipliers(q, aq);
    let mut y = vec![0f32; acc.len()];
    y.par_chunks_mut(per_channel)
        .zip(acc.par_chunks(per_channel))
        .enumerate()
        .with_min_len(ROWS_PER_TASK.div_ceil(per_channel))
        .for_each(|(row, (y, plane))| {
            let oc = row % o;
            dequantize_row(
                y,
                plane,
                mult[oc],
                bias[oc],
                prelu_slope.map(|s| slope_of(s, oc)),
            );
        });
    y
}

/// The combined multipliers `s_x · s_w[o]`, each rounded to f32 once.
pub(super) fn aq_multipliers(q: &QuantWeights, aq: &ActQuant) -> Vec<f32> {
    q.scales.iter().map(|&s| aq.multiplier(s)).collect()
}

/// A PReLU's slope for channel `c` (one shared slope, or one per channel).
pub(super) fn slope_of(slope: &[f32], c: usize) -> f32 {
    slope[if slope.len() == 1 { 0 } else { c }]
}

/// One channel's row: `y = acc · m + b`, then the PReLU with `slope` if given.
#[inline]
pub(super) fn dequantize_row(y: &mut [f32], acc: &[i32], m: f32, b: f32, slope: Option<f32>) {
    y.iter_mut()
        .zip(acc)
        .for_each(|(y, &a)| *y = quant::dequantize(a, m, b));
    if let Some(s) = slope {
        prelu(y, s);
    }
}
