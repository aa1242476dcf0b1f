//! The depthwise float convolution (one filter per channel) as direct row loops, one channel
//! plane per task: im2col + a matrix product per group costs more than it computes (SCRFD's
//! 16×320×320 layer took 270 ms so).
//!
//! Every output is summed as the patch-by-patch definition sums it: the taps inside the image
//! in (ky, kx) order from 0, then the bias. 3×3 kernels at horizontal stride 1 or 2 (all of
//! SCRFD's and MobileFaceNet's) take a fast path: the columns where all three taps of a row are
//! inside are computed as whole-row loops over contiguous runs (stride 2 reads the input row's
//! even and odd columns, split once per row), nine taps per output in one pass where all three
//! rows are inside, and only the border columns one by one. Other kernels accumulate one tap
//! at a time over the columns where it is inside. On x86-64 the loops are compiled a second
//! time for AVX2 and chosen at run time (the portable build targets SSE2 only); wasm32 gets
//! SIMD128 from the crate's build flags.

use super::conv::{ConvGeometry, inside};
use crate::graph::Tensor;
use rayon::prelude::*;

pub(super) fn depthwise_f32(
    x: &[f32],
    geo: &ConvGeometry,
    wt: &Tensor,
    bias: &[f32],
    relu: bool,
) -> Vec<f32> {
    let (kh, kw) = (wt.shape[2], wt.shape[3]);
    let (h, w, oh, ow) = (geo.h, geo.w, geo.oh, geo.ow);
    let mut out = super::buffers::take(geo.batch * geo.c * oh * ow);
    if oh * ow == 0 {
        return out;
    }
    out.par_chunks_exact_mut(oh * ow)
        .enumerate()
        .for_each(|(nc, y)| {
            let c = nc % geo.c;
            let plane = &x[nc * h * w..][..h * w];
            let k = &wt.data[c * kh * kw..][..kh * kw];
            run_plane(
                plane,
                geo,
                k,
                [kh, kw],
                Finish {
                    bias: bias[c],
                    relu,
                },
                y,
            );
        });
    out
}

/// What is done to a sum of taps before it is stored: the bias, then the ReLU that follows
/// (when fused), in the same pass.
#[derive(Clone, Copy)]
struct Finish {
    bias: f32,
    relu: bool,
}

impl Finish {
    #[inline(always)]
    fn apply(self, t: f32) -> f32 {
        let v = t + self.bias;
        if self.relu { v.max(0.0) } else { v }
    }
}

fn run_plane(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    kernel: [usize; 2],
    b: Finish,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { plane_avx2(x, geo, k, kernel, b, y) };
    }
    plane(x, geo, k, kernel, b, y)
}

/// [`plane`] compiled for AVX2 (8 lanes instead of SSE2's 4). Separate multiplies and adds as
/// in the portable build (Rust never contracts them into FMAs), so both give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    kernel: [usize; 2],
    b: Finish,
    y: &mut [f32],
) {
    plane(x, geo, k, kernel, b, y)
}

/// One channel: input plane `x` (`h × w`), kernel `k` (`kh × kw`), bias `b`, output `y`.
#[inline(always)]
fn plane(x: &[f32], geo: &ConvGeometry, k: &[f32], [kh, kw]: [usize; 2], b: Finish, y: &mut [f32]) {
    let a = geo.attrs;
    if kh == 3 && kw == 3 && a.dilation[1] == 1 && (a.stride[1] == 1 || a.stride[1] == 2) {
        plane_3x3(x, geo, k, b, y)
    } else {
        plane_any(x, geo, k, [kh, kw], b, y)
    }
}

/// Input row `ky` of output row `oy`, or `None` in the padding.
#[inline(always)]
fn input_row<'a>(x: &'a [f32], geo: &ConvGeometry, oy: usize, ky: usize) -> Option<&'a [f32]> {
    let a = &geo.attrs;
    let iy = (oy * a.stride[0] + ky * a.dilation[0]) as isize - a.pads[0] as isize;
    (iy >= 0 && iy < geo.h as isize).then(|| &x[iy as usize * geo.w..][..geo.w])
}

/// Any kernel: one tap at a time over the output columns where it is inside.
#[inline(always)]
fn plane_any(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    [kh, kw]: [usize; 2],
    b: Finish,
    y: &mut [f32],
) {
    let a = geo.attrs;
    let (s, ow) = (a.stride[1], geo.ow);
    for (oy, acc) in y.chunks_exact_mut(ow).enumerate() {
        // (The output buffer may be reused: stale values.)
        acc.fill(0.0);
        for ky in 0..kh {
            let Some(row) = input_row(x, geo, oy, ky) else {
                continue;
            };
            for (kx, &wv) in k[ky * kw..][..kw].iter().enumerate() {
                let offset = (kx * a.dilation[1]) as isize - a.pads[1] as isize;
                let (lo, hi) = inside(ow, geo.w, s, offset);
                if lo == hi {
                    continue;
                }
                let start = (lo as isize * s as isize + offset) as usize;
                for (v, &xv) in acc[lo..hi].iter_mut().zip(row[start..].iter().step_by(s)) {
                    *v += wv * xv;
                }
            }
        }
        acc.iter_mut().for_each(|v| *v = b.apply(*v));
    }
}

/// 3×3, horizontal stride 1 or 2, no horizontal dilation.
#[inline(always)]
fn plane_3x3(x: &[f32], geo: &ConvGeometry, k: &[f32], b: Finish, y: &mut [f32]) {
    let a = geo.attrs;
    let (s, w, ow) = (a.stride[1], geo.w, geo.ow);
    // Column offsets of the three taps; the columns where all three are inside.
    let offsets: [isize; 3] = std::array::from_fn(|kx| kx as isize - a.pads[1] as isize);
    let ranges = offsets.map(|o| inside(ow, w, s, o));
    let lo = ranges.iter().map(|r| r.0).max().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.1).min().unwrap_or(0).max(lo);
    let n = hi - lo;
    // Stride 2: per kernel row, the input row's even columns then its odd ones.
    let half = w.div_ceil(2);
    let mut halves = vec![0f32; if s == 2 { 3 * 2 * half } else { 0 }];
    for (oy, acc) in y.chunks_exact_mut(ow).enumerate() {
        let rows: [Option<&[f32]>; 3] = std::array::from_fn(|ky| input_row(x, geo, oy, ky));
        if s == 2 {
            for (ky, split) in halves.chunks_exact_mut(2 * half).enumerate() {
                if let Some(row) = rows[ky] {
                    let (even, odd) = split.split_at_mut(half);
                    let pairs = row.chunks_exact(2);
                    if let [last] = pairs.remainder() {
                        even[half - 1] = *last;
                    }
                    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                        *e = pair[0];
                        *o = pair[1];
                    }
                }
            }
        }
        // The run tap (ky, kx) reads for output columns lo..hi.
        let run = |ky: usize, kx: usize| -> &[f32] {
            let start = (lo as isize * s as isize + offsets[kx]) as usize;
            if s == 1 {
                &rows[ky].expect("a row inside")[start..][..n]
            } else {
                let split = &halves[ky * 2 * half..][..2 * half];
                &split[(start % 2) * half + start / 2..][..n]
            }
        };
        let interior = &mut acc[lo..hi];
        if n > 0 && rows.iter().all(Option::is_some) {
            // Weights in locals and every run cut to the interior's length, so that the
            // compiler sees no aliasing and no bounds to check, and vectorises the loop.
            let [k0, k1, k2, k3, k4, k5, k6, k7, k8]: [f32; 9] =
                k[..9].try_into().expect("a 3×3 kernel");
            let taps: [(f32, &[f32]); 9] = [
                (k0, run(0, 0)),
                (k1, run(0, 1)),
                (k2, run(0, 2)),
                (k3, run(1, 0)),
                (k4, run(1, 1)),
                (k5, run(1, 2)),
                (k6, run(2, 0)),
                (k7, run(2, 1)),
                (k8, run(2, 2)),
            ];
            // Blocks of BLOCK columns, each summed in BLOCK independent accumulators: one
            // accumulator per column would wait on its previous add at every tap (the sums'
            // order is fixed), several in flight keep the adders busy.
            const BLOCK: usize = 32;
            let mut blocks = interior.chunks_exact_mut(BLOCK);
            for (i, out) in (&mut blocks).enumerate() {
                let mut t = [0f32; BLOCK];
                for (wv, src) in taps {
                    let src = &src[i * BLOCK..][..BLOCK];
                    for l in 0..BLOCK {
                        t[l] += wv * src[l];
                    }
                }
                for (o, t) in out.iter_mut().zip(t) {
                    *o = b.apply(t);
                }
            }
            let tail = blocks.into_remainder();
            let j0 = n - tail.len();
            for (j, o) in tail.iter_mut().enumerate() {
                let mut t = 0.0;
                for (wv, src) in taps {
                    t += wv * src[j0 + j];
                }
                *o = b.apply(t);
            }
        } else if n > 0 {
            // A row with a kernel row in the padding (first and last rows): tap rows are
            // accumulated into it, from zero (the buffer may be reused: stale values).
            interior.fill(0.0);
            for ky in (0..3).filter(|&ky| rows[ky].is_some()) {
                let (t0, t1, t2) = (&run(ky, 0)[..n], &run(ky, 1)[..n], &run(ky, 2)[..n]);
                let [w0, w1, w2]: [f32; 3] = k[ky * 3..][..3].try_into().expect("3 taps");
                let interior = &mut interior[..n];
                for j in 0..n {
                    let mut t = interior[j];
                    t += w0 * t0[j];
                    t += w1 * t1[j];
                    t += w2 * t2[j];
                    interior[j] = t;
                }
            }
            interior.iter_mut().for_each(|v| *v = b.apply(*v));
        }
        // Border columns, where some tap is in the padding.
        let border = |ox: usize| {
            let mut t = 0.0;
            for (ky, row) in rows.iter().enumerate() {
                let Some(row) = row else { continue };
                for kx in 0..3 {
                    let ix = (ox * s) as isize + offsets[kx];
                    if ix >= 0 && ix < w as isize {
                        t += k[ky * 3 + kx] * row[ix as usize];
                    }
                }
            }
            t
        };
        for (ox, v) in acc.iter_mut().enumerate().take(lo) {
            *v = b.apply(border(ox));
        }
        for (ox, v) in acc.iter_mut().enumerate().skip(hi) {
            *v = b.apply(border(ox));
        }
    }
}
