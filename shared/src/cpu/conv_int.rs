//! The integer convolution: exact i32 sums of i8 products through [`super::int_gemm`], or the
//! direct loops of [`super::grouped`] for groups of few channels.

use super::conv::ConvGeometry;
use super::grouped::{grouped_conv_exact_f32, grouped_int_acc, sums_exact_in_f32};
use super::quantize::{
    aq_multipliers, dequantize_row, dequantize_then, quantize_activations, slope_of,
};
use crate::quant::{ActQuant, QuantWeights};
use rayon::prelude::*;

/// The integer convolution's accumulators (`batch × O × P`), bit-exact: the quantity every GPU
/// kernel must reproduce. Padding contributes 0 because the zero point is 0.
///
/// Integer sums are exact in any order, so this may be fast without being clever about
/// correctness: depthwise layers run as direct loops, everything else as an `[O][K] × [K][P]`
/// product (`int_gemm`: SSE2 natively, SIMD128 in the browser's CPU path). A 1×1
/// stride-1 convolution reads its input in place; other shapes lay their patches out as
/// `[K][P]` first. `tests::conv_int_acc_matches_the_naive_sum` checks it
/// against the plain patch-by-patch dot products.
pub fn conv_int_acc(xq: &[i8], geo: &ConvGeometry, q: &QuantWeights) -> Vec<i32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let g = geo.attrs.group;
    if g > 1 && cg <= 4 {
        return grouped_int_acc(xq, geo, q);
    }
    let og = o / g;
    let (k, p) = (cg * kh * kw, geo.oh * geo.ow);
    let a = &geo.attrs;
    let in_place = kh == 1 && kw == 1 && a.stride == [1, 1] && a.pads == [0; 4];
    // One task per image and group; when there are fewer of those than threads, each product
    // is cut along its output channels too.
    let pairs = geo.batch * g;
    let split = if pairs >= rayon::current_num_threads() {
        1
    } else {
        2 * rayon::current_num_threads()
    };
    let mut acc = vec![0i32; pairs * og * p];
    acc.par_chunks_mut(og * p)
        .enumerate()
        .for_each(|(pair, out)| {
            let (n, gi) = (pair / g, pair % g);
            let xn = &xq[n * geo.c * geo.h * geo.w..][..geo.c * geo.h * geo.w];
            let patches;
            let col: &[i8] = if in_place {
                &xn[gi * cg * p..][..cg * p]
            } else {
                patches = im2col_kp(xn, geo, gi * cg, cg, kh, kw);
                &patches
            };
            super::int_gemm::gemm_i8(&q.values[gi * og * k..][..og * k], col, k, p, out, split);
        });
    acc
}

/// One group of one image as `[K][P]` patch rows (K ordered channel, ky, kx like OIHW), so that
/// the product's inner loop runs along pixels: the float convolution's row-wise layout
/// ([`super::conv::im2col_rows`]) over i8.
fn im2col_kp(x: &[i8], geo: &ConvGeometry, c0: usize, cg: usize, kh: usize, kw: usize) -> Vec<i8> {
    let mut col = vec![0i8; cg * kh * kw * geo.oh * geo.ow];
    super::conv::im2col_rows(x, geo, (c0, cg, kh, kw), (0, geo.oh), &mut col);
    col
}

/// An integer convolution from float input to float output (`prelu_slope`: the PReLU that
/// reads it, applied in the same pass). Non-grouped layers quantize straight into the
/// product's pair layout and dequantize each task's rows of sums as soon as they are done:
/// the arithmetic of [`quantize_activations`], [`conv_int_acc`] and [`dequantize_acc`] with
/// two passes over the tensor and two hand-offs between threads fewer (`tests::
/// conv_int_equals_its_steps` checks it against those three).
pub(super) fn conv_int(
    x: &[f32],
    geo: &ConvGeometry,
    q: &QuantWeights,
    bias: &[f32],
    aq: &ActQuant,
    prelu_slope: Option<&[f32]>,
) -> Vec<f32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let g = geo.attrs.group;
    if g > 1 && cg <= 4 {
        if sums_exact_in_f32(cg * kh * kw, q.bits, aq.max_level()) {
            return grouped_conv_exact_f32(x, geo, q, bias, aq, prelu_slope);
        }
        let xq = quantize_activations(x, aq);
        let acc = grouped_int_acc(&xq, geo, q);
        return dequantize_then(&acc, geo.oh * geo.ow, q, aq, bias, prelu_slope);
    }
    let og = o / g;
    let (k, p, hw) = (cg * kh * kw, geo.oh * geo.ow, geo.h * geo.w);
    let a = &geo.attrs;
    let in_place = kh == 1 && kw == 1 && a.stride == [1, 1] && a.pads == [0; 4];
    let (quantizer, mult) = (aq.quantizer(), aq_multipliers(q, aq));
    let pairs = geo.batch * g;
    if in_place && g == 1 {
        let threads = rayon::current_num_threads();
        let tasks = if geo.batch >= threads { 1 } else { threads };
        let mut y = vec![0f32; geo.batch * o * p];
        y.par_chunks_mut(o * p).enumerate().for_each(|(n, y)| {
            let xn = &x[n * geo.c * hw..][..geo.c * hw];
            super::int_gemm::gemm_quantized_by_pixels(
                &q.values,
                xn,
                k,
                p,
                quantizer,
                tasks,
                y,
                |oc, sums, y| {
                    dequantize_row(
                        y,
                        sums,
                        mult[oc],
                        bias[oc],
                        prelu_slope.map(|s| slope_of(s, oc)),
                    )
                },
            );
        });
        return y;
    }
    let split = if pairs >= rayon::current_num_threads() {
        1
    } else {
        2 * rayon::current_num_threads()
    };
    let mut y = vec![0f32; pairs * og * p];
    y.par_chunks_mut(og * p).enumerate().for_each(|(pair, y)| {
        let (n, gi) = (pair / g, pair % g);
        let xg = &x[(n * geo.c + gi * cg) * hw..][..cg * hw];
        let xp = if in_place {
            super::int_gemm::pair_up_quantized(xg, k, p, quantizer)
        } else {
            let xq = quantize_activations(xg, aq);
            super::int_gemm::pair_up(&im2col_kp(&xq, geo, 0, cg, kh, kw), k, p)
        };
        let w = &q.values[gi * og * k..][..og * k];
        super::int_gemm::gemm_paired_then(w, &xp, split, y, |oc0, sums, y| {
            for (r, (y, sums)) in y.chunks_mut(p).zip(sums.chunks(p)).enumerate() {
                let oc = gi * og + oc0 + r;
                dequantize_row(
                    y,
                    sums,
                    mult[oc],
                    bias[oc],
                    prelu_slope.map(|s| slope_of(s, oc)),
                );
            }
        });
    });
    y
}

#[cfg(test)]
mod tests {
    use super::super::conv::im2col;
    use super::super::gemm::dot_i8;
    use super::super::quantize::dequantize_acc;
    use super::*;
    use crate::graph::ConvAttrs;

    /// The integer convolution as its definition: every output is the dot product of its
    /// `[P][K]` patch with the weight row.
    fn naive_conv_int_acc(xq: &[i8], geo: &ConvGeometry, q: &QuantWeights) -> Vec<i32> {
        let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let og = o / geo.attrs.group;
        let (k, p) = (cg * kh * kw, geo.oh * geo.ow);
        let mut acc = vec![0i32; geo.batch * o * p];
        for n in 0..geo.batch {
            let xn = &xq[n * geo.c * geo.h * geo.w..][..geo.c * geo.h * geo.w];
            for gi in 0..geo.attrs.group {
                let col = im2col(xn, geo, gi * cg, cg, kh, kw);
                for oc in 0..og {
                    let wrow = &q.values[(gi * og + oc) * k..][..k];
                    for pi in 0..p {
                        acc[(n * o + gi * og + oc) * p + pi] = dot_i8(wrow, &col[pi * k..][..k]);
                    }
                }
            }
        }
        acc
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]
        /// Depthwise, grouped, 1×1-in-place and general convolutions, with strides,
        /// asymmetric pads and dilation, on random i8 values (the full ±127 range, so that
        /// the i16 products and i32 sums are exercised at their extremes).
        #[test]
        fn conv_int_acc_matches_the_naive_sum(
            (batch, cg, groups, h, w, mult, kh, kw) in (1usize..=2, 1usize..=5, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=3, 1usize..=3, 1usize..=3),
            (stride_y, stride_x, dil, pads, depthwise, seed) in (1usize..=2, 1usize..=3, 1usize..=2, proptest::array::uniform4(0usize..=2), proptest::bool::ANY, proptest::num::u64::ANY),
            pointwise in proptest::bool::ANY,
        ) {
            // Half the cases: a 1×1 stride-1 unpadded convolution, read in place.
            let (kh, kw, stride_y, stride_x, pads) = if pointwise { (1, 1, 1, 1, [0; 4]) } else { (kh, kw, stride_y, stride_x, pads) };
            let (c, o, cg) = if depthwise { (cg * groups, cg * groups, 1) } else { (cg * groups, mult * groups, cg) };
            let group = if depthwise { c } else { groups };
            let (ekh, ekw) = ((kh - 1) * dil + 1, (kw - 1) * dil + 1);
            proptest::prop_assume!(h + pads[0] + pads[2] >= ekh && w + pads[1] + pads[3] >= ekw);
            let geo = ConvGeometry {
                batch, c, h, w,
                oh: (h + pads[0] + pads[2] - ekh) / stride_y + 1,
                ow: (w + pads[1] + pads[3] - ekw) / stride_x + 1,
                attrs: ConvAttrs { stride: [stride_y, stride_x], pads, dilation: [dil, dil], group },
            };
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s % 255) as i32 - 127) as i8 };
            let xq: Vec<i8> = (0..batch * c * h * w).map(|_| next()).collect();
            let values: Vec<i8> = (0..o * cg * kh * kw).map(|_| next()).collect();
            let q = QuantWeights { bits: 8, shape: vec![o, cg, kh, kw], values, scales: vec![1.0; o] };
            proptest::prop_assert!(xq.iter().any(|&v| v != 0));
            proptest::prop_assert_eq!(conv_int_acc(&xq, &geo, &q), naive_conv_int_acc(&xq, &geo, &q));
        }

        /// The float-to-float integer convolution (quantizing into the product's layout,
        /// dequantizing and applying the PReLU in the product's tasks) equals its three steps
        /// done apart, bit for bit, on the same random shapes with random scales, biases and
        /// slopes, for 1–3 threads.
        #[test]
        fn conv_int_equals_its_steps(
            (batch, cg, groups, h, w, mult, kh, kw) in (1usize..=2, 1usize..=5, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=3, 1usize..=3, 1usize..=3),
            (stride_y, stride_x, dil, pads, depthwise, pointwise, seed) in (1usize..=2, 1usize..=3, 1usize..=2, proptest::array::uniform4(0usize..=2), proptest::bool::ANY, proptest::bool::ANY, proptest::num::u64::ANY),
            (bits, with_prelu, threads) in (2u8..=8, proptest::bool::ANY, 1usize..=3),
        ) {
            let (kh, kw, stride_y, stride_x, pads) = if pointwise { (1, 1, 1, 1, [0; 4]) } else { (kh, kw, stride_y, stride_x, pads) };
            let (c, o, cg) = if depthwise { (cg * groups, cg * groups, 1) } else { (cg * groups, mult * groups, cg) };
            let group = if depthwise { c } else { groups };
            let (ekh, ekw) = ((kh - 1) * dil + 1, (kw - 1) * dil + 1);
            proptest::prop_assume!(h + pads[0] + pads[2] >= ekh && w + pads[1] + pads[3] >= ekw);
            let geo = ConvGeometry {
                batch, c, h, w,
                oh: (h + pads[0] + pads[2] - ekh) / stride_y + 1,
                ow: (w + pads[1] + pads[3] - ekw) / stride_x + 1,
                attrs: ConvAttrs { stride: [stride_y, stride_x], pads, dilation: [dil, dil], group },
            };
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 20001) as f32 / 10000.0 - 1.0 };
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| next() * 3.0).collect();
            let values: Vec<i8> = (0..o * cg * kh * kw).map(|_| (next() * 127.0) as i8).collect();
            let scales: Vec<f32> = (0..o).map(|_| 0.01 + next().abs() * 0.05).collect();
            let bias: Vec<f32> = (0..o).map(|_| next()).collect();
            let slope: Vec<f32> = (0..o).map(|_| next() * 0.5).collect();
            let q = QuantWeights { bits: 8, shape: vec![o, cg, kh, kw], values, scales };
            let aq = ActQuant::from_range(bits, 2.5).unwrap();
            let prelu = with_prelu.then_some(slope.as_slice());
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let fused = pool.install(|| conv_int(&x, &geo, &q, &bias, &aq, prelu));
            let acc = conv_int_acc(&quantize_activations(&x, &aq), &geo, &q);
            let mut apart = dequantize_acc(&acc, geo.oh * geo.ow, &q, &aq, &bias);
            if with_prelu {
                for (row, plane) in apart.chunks_mut(geo.oh * geo.ow).enumerate() {
                    plane.iter_mut().for_each(|v| if *v <= 0.0 { *v *= slope[row % o] });
                }
            }
            proptest::prop_assert!(fused.iter().any(|&v| v != 0.0));
            proptest::prop_assert_eq!(fused, apart);
        }
    }
}
