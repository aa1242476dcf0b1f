//! The depthwise float convolution (one filter per channel) as direct row loops, one channel
//! plane per task: im2col + a matrix product per group costs more than it computes (SCRFD's
//! 16×320×320 layer took 270 ms so).
//!
//! Every output sums its taps in (ky, kx) order from 0, then adds the bias, as the
//! patch-by-patch definition does. 3×3 kernels at horizontal stride 1 or 2 (all of SCRFD's and
//! MobileFaceNet's) take a fast path: each input row is laid out once with its padding as
//! zeros (stride 2: even columns, then odd ones), so that every output row is nine whole-row
//! loops over contiguous runs with no border columns (a tap in the padding adds `w·0`: the
//! same sum but for the sign of a zero one; `rows.rs`). Other kernels accumulate one tap at a
//! time over the columns where it is inside. On x86-64 the loops are compiled a second time
//! for AVX2 and chosen at run time (the portable build targets SSE2 only); wasm32 gets SIMD128
//! from the crate's build flags.

use super::conv::{ConvGeometry, inside};
use super::rows::{Finish, RowRing, sum_row};
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

fn run_plane(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    kernel: [usize; 2],
    b: Finish,
    y: &mut [f32],
) {
    ROWS.with_borrow_mut(|rows| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { plane_avx2(x, geo, k, kernel, b, y, rows) };
        }
        plane(x, geo, k, kernel, b, y, rows)
    })
}

/// [`plane`] compiled for AVX2 (8 lanes instead of SSE2's 4). Separate multiplies and adds as
/// in the portable build (Rust never contracts them into FMAs), so both give the same bits.
/// Everything it calls is inlined into it (`#[inline(always)]`, no closures handed to generic
/// functions such as `LocalKey::with`): code outside it is compiled for SSE2, and a closure
/// there once ran the whole plane without AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    kernel: [usize; 2],
    b: Finish,
    y: &mut [f32],
    rows: &mut RowRing,
) {
    plane(x, geo, k, kernel, b, y, rows)
}

/// One channel: input plane `x` (`h × w`), kernel `k` (`kh × kw`), bias `b`, output `y`.
#[inline(always)]
fn plane(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    [kh, kw]: [usize; 2],
    b: Finish,
    y: &mut [f32],
    rows: &mut RowRing,
) {
    let a = geo.attrs;
    if kh == 3 && kw == 3 && a.dilation[1] == 1 && (a.stride[1] == 1 || a.stride[1] == 2) {
        plane_3x3(x, geo, k, b, y, rows)
    } else {
        plane_any(x, geo, k, [kh, kw], b, y)
    }
}

/// Input row `ky` of output row `oy`, or `None` in the padding.
#[inline(always)]
fn input_row<'a>(x: &'a [f32], geo: &ConvGeometry, oy: usize, ky: usize) -> Option<&'a [f32]> {
    let iy = geo.source_row(oy, ky)?;
    Some(&x[iy * geo.w..][..geo.w])
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

thread_local! {
    /// A task's prepared rows, kept between planes: a fresh buffer per plane cost an
    /// allocation and its zeroing per 20×20 plane.
    static ROWS: std::cell::RefCell<RowRing> = const { std::cell::RefCell::new(RowRing::new()) };
}

/// 3×3, horizontal stride 1 or 2, no horizontal dilation: every output row is nine runs of
/// prepared rows summed (see `rows.rs`).
#[inline(always)]
fn plane_3x3(
    x: &[f32],
    geo: &ConvGeometry,
    k: &[f32],
    b: Finish,
    y: &mut [f32],
    ring: &mut RowRing,
) {
    let ow = geo.ow;
    if ow == 0 {
        return;
    }
    ring.reset(ow, geo.attrs.stride[1]);
    let start = ring.starts();
    // Weights in locals and every run cut to the row's length, so that the compiler sees no
    // aliasing and no bounds to check, and vectorises the loops.
    let [k0, k1, k2, k3, k4, k5, k6, k7, k8]: [f32; 9] = k[..9].try_into().expect("a 3×3 kernel");
    for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
        let rows = ring.rows(x, geo, oy);
        let taps: [(f32, &[f32]); 9] = [
            (k0, &rows[0][start[0]..][..ow]),
            (k1, &rows[0][start[1]..][..ow]),
            (k2, &rows[0][start[2]..][..ow]),
            (k3, &rows[1][start[0]..][..ow]),
            (k4, &rows[1][start[1]..][..ow]),
            (k5, &rows[1][start[2]..][..ow]),
            (k6, &rows[2][start[0]..][..ow]),
            (k7, &rows[2][start[1]..][..ow]),
            (k8, &rows[2][start[2]..][..ow]),
        ];
        sum_row(&taps, out, b);
    }
}
