//! The shape bookkeeping every convolution shares and the float convolution: tiles of patches
//! and a matrix product (the `gemm` crate natively; in wasm `matrixmultiply`, or `gemm_fma`
//! with relaxed SIMD), or direct row loops for a depthwise layer.
//!
//! Natively `gemm` (candle's CPU product) replaced `matrixmultiply`: its kernels and packing
//! suit the detector's short products better (SCRFD's network 7 % faster on 2 threads, its 1×1
//! layers 9 %: `detect_bench`, both builds alternating, 2026-12-06). The wasm builds keep the
//! products measured there.

use crate::graph::{ConvAttrs, Tensor};
use rayon::prelude::*;

/// Shape bookkeeping of one convolution call.
pub struct ConvGeometry {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub attrs: ConvAttrs,
}

impl ConvGeometry {
    /// Input row read by output row `oy` at kernel row `ky`, or `None` in the padding.
    #[inline(always)]
    pub(super) fn source_row(&self, oy: usize, ky: usize) -> Option<usize> {
        let a = &self.attrs;
        let iy = (oy * a.stride[0] + ky * a.dilation[0]).checked_sub(a.pads[0])?;
        (iy < self.h).then_some(iy)
    }

    /// Input pixel read by output `(oy, ox)` at kernel tap `(ky, kx)`, or `None` in the padding:
    /// the definition the row-wise layouts are tested against ([`im2col`]).
    #[cfg(test)]
    pub(super) fn source(
        &self,
        oy: usize,
        ox: usize,
        ky: usize,
        kx: usize,
    ) -> Option<(usize, usize)> {
        let a = &self.attrs;
        let iy = self.source_row(oy, ky)?;
        let ix = (ox * a.stride[1] + kx * a.dilation[1]).checked_sub(a.pads[1])?;
        (ix < self.w).then_some((iy, ix))
    }
}

/// Lays out one group of one image as `[P][K]` patches, K ordered (channel, ky, kx) like OIHW:
/// the patch-by-patch definition the integer path's tests check against.
#[cfg(test)]
pub(super) fn im2col<T: Copy + Default>(
    x: &[T],
    geo: &ConvGeometry,
    c0: usize,
    cg: usize,
    kh: usize,
    kw: usize,
) -> Vec<T> {
    let k = cg * kh * kw;
    let p = geo.oh * geo.ow;
    let mut col = vec![T::default(); p * k];
    for oy in 0..geo.oh {
        for ox in 0..geo.ow {
            let row = &mut col[(oy * geo.ow + ox) * k..][..k];
            for ci in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        if let Some((iy, ix)) = geo.source(oy, ox, ky, kx) {
                            row[(ci * kh + ky) * kw + kx] =
                                x[((c0 + ci) * geo.h + iy) * geo.w + ix];
                        }
                    }
                }
            }
        }
    }
    col
}

/// Float convolution: per image and group, `out[o][p] = Σ_k W[o][k] · patch[p][k] + b[o]`.
pub fn conv_f32(x: &[f32], geo: &ConvGeometry, wt: &Tensor, bias: &[f32]) -> Vec<f32> {
    conv_f32_then(x, geo, wt, bias, false)
}

/// [`conv_f32`], then a ReLU when `relu` (in the pass that adds the bias, while the output is
/// still in cache, instead of one more pass over the whole tensor).
pub(super) fn conv_f32_then(
    x: &[f32],
    geo: &ConvGeometry,
    wt: &Tensor,
    bias: &[f32],
    relu: bool,
) -> Vec<f32> {
    let (o, cg, g) = (wt.shape[0], wt.shape[1], geo.attrs.group);
    if g == geo.c && o == geo.c && cg == 1 {
        return super::depthwise::depthwise_f32(x, geo, wt, bias, relu);
    }
    conv_f32_gemm(x, geo, wt, bias, relu)
}

/// Several float convolutions of the same input with the same geometry (SCRFD's score, box
/// and keypoint heads) as one: their patches are laid out once and multiplied by all their
/// weights stacked, which also fills the product's kernel rows better (2 + 8 + 20 output
/// channels instead of three products of 2, 8 and 20). Returns each one's output; every
/// value is computed as [`conv_f32`] computes it alone.
pub(super) fn conv_f32_stacked(
    x: &[f32],
    geo: &ConvGeometry,
    convs: &[(&Tensor, &[f32])],
) -> Vec<Vec<f32>> {
    let mut shape = convs[0].0.shape.clone();
    let counts: Vec<usize> = convs.iter().map(|(wt, _)| wt.shape[0]).collect();
    shape[0] = counts.iter().sum();
    let data = convs
        .iter()
        .flat_map(|(wt, _)| wt.data.iter().copied())
        .collect();
    let bias: Vec<f32> = convs.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let stacked = Tensor { shape, data };
    let y = conv_f32_gemm(x, geo, &stacked, &bias, false);
    let (total, p) = (stacked.shape[0], geo.oh * geo.ow);
    let mut first = 0;
    let parts = counts
        .iter()
        .map(|&o| {
            let mut part = Vec::with_capacity(geo.batch * o * p);
            for n in 0..geo.batch {
                part.extend_from_slice(&y[(n * total + first) * p..][..o * p]);
            }
            first += o;
            part
        })
        .collect();
    super::buffers::give(y);
    parts
}

/// The output columns `o` (of `n_out`) whose input index `o · stride + offset` lies in
/// `0..n_in`: `lo..hi` (empty when none). Outside it a tap reads the zero padding.
#[inline]
pub(super) fn inside(n_out: usize, n_in: usize, stride: usize, offset: isize) -> (usize, usize) {
    let (s, n_in) = (stride as isize, n_in as isize);
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    let hi = if n_in <= offset {
        0
    } else {
        (n_in - offset + s - 1) / s
    };
    let hi = (hi as usize).min(n_out);
    ((lo as usize).min(hi), hi)
}

/// Output rows `oy0..oy1` of one group of one image as `[K][P]` patch rows (K ordered channel,
/// ky, kx like OIHW; P the tile's pixels): each row is a shifted copy of an input row, copied
/// whole at stride 1, with the padding zero-filled at its ends only.
pub(super) fn im2col_rows<T: Copy + Default>(
    x: &[T],
    geo: &ConvGeometry,
    (c0, cg, kh, kw): (usize, usize, usize, usize),
    (oy0, oy1): (usize, usize),
    col: &mut [T],
) {
    let a = &geo.attrs;
    let (h, w, ow, sx) = (geo.h, geo.w, geo.ow, a.stride[1]);
    let nb = (oy1 - oy0) * ow;
    // Per kx: the column offset of its tap and the output columns where it is inside.
    let taps: Vec<(isize, usize, usize)> = (0..kw)
        .map(|kx| {
            let offset = (kx * a.dilation[1]) as isize - a.pads[1] as isize;
            let (lo, hi) = inside(ow, w, sx, offset);
            (offset, lo, hi)
        })
        .collect();
    // Stride 2: the input row's even columns then its odd ones, split once per row so that
    // every tap copies a contiguous run.
    let half = w.div_ceil(2);
    let mut halves = vec![T::default(); if sx == 2 { 2 * half } else { 0 }];
    for ci in 0..cg {
        let plane = &x[(c0 + ci) * h * w..][..h * w];
        for ky in 0..kh {
            for oy in oy0..oy1 {
                let at = (oy - oy0) * ow;
                let Some(iy) = geo.source_row(oy, ky) else {
                    for kx in 0..kw {
                        col[((ci * kh + ky) * kw + kx) * nb + at..][..ow].fill(T::default());
                    }
                    continue;
                };
                let src = &plane[iy * w..][..w];
                if sx == 2 {
                    super::rows::split_even_odd(src, &mut halves);
                }
                for (kx, &(offset, lo, hi)) in taps.iter().enumerate() {
                    let dst = &mut col[((ci * kh + ky) * kw + kx) * nb + at..][..ow];
                    dst[..lo].fill(T::default());
                    dst[hi..].fill(T::default());
                    if lo == hi {
                        continue;
                    }
                    let s0 = (lo as isize * sx as isize + offset) as usize;
                    match sx {
                        1 => dst[lo..hi].copy_from_slice(&src[s0..][..hi - lo]),
                        2 => dst[lo..hi]
                            .copy_from_slice(&halves[(s0 % 2) * half + s0 / 2..][..hi - lo]),
                        _ => {
                            for (d, s) in dst[lo..hi].iter_mut().zip(src[s0..].iter().step_by(sx)) {
                                *d = *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A pointer to the output that tasks writing disjoint tiles share.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes its own (image, channel range, pixel range) tile of the buffer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// (A method, so that closures capture the whole `Send` wrapper and not its field.)
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

thread_local! {
    /// A task's patch tile, kept between calls: a fresh buffer of this size per task costs
    /// page faults (it is above malloc's mmap threshold) that show in the profile.
    static PATCHES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Patch-tile size aimed at (floats): the tile and the product's packed copy of it stay in a
/// core's L2 cache while the product reads them.
const TILE_FLOATS: usize = 1 << 18;

/// Any non-depthwise float convolution as `[O][K] × [K][P]` products
/// over tiles of output rows, in parallel. A 1×1 stride-1 unpadded convolution reads its
/// input in place; other shapes lay each tile's patches out first (`im2col_rows`), in the task
/// that multiplies them, so that they are still in cache. Where there are too few tiles to
/// keep the threads busy (small maps, e.g. 20×20×288) the products are also cut along the
/// output channels, on patches laid out once per image and group beforehand.
fn conv_f32_gemm(x: &[f32], geo: &ConvGeometry, wt: &Tensor, bias: &[f32], relu: bool) -> Vec<f32> {
    let (o, cg, kh, kw) = (wt.shape[0], wt.shape[1], wt.shape[2], wt.shape[3]);
    let a = &geo.attrs;
    let g = a.group;
    let og = o / g;
    let (k, p, ow) = (cg * kh * kw, geo.oh * geo.ow, geo.ow);
    let chw = geo.c * geo.h * geo.w;
    let in_place = kh == 1 && kw == 1 && a.stride == [1, 1] && a.pads == [0; 4];
    // Every element is written below (sgemm with β = 0): a reused buffer needs no zeroing.
    let mut out = super::buffers::take(geo.batch * o * p);
    if p == 0 || o == 0 {
        return out;
    }
    // Output rows per tile: a patch tile of about TILE_FLOATS, 128–4096 pixels wide.
    let cols = (TILE_FLOATS / k.max(1)).clamp(128, 4096);
    let rows = (cols / ow.max(1)).clamp(1, geo.oh);
    let tiles = geo.oh.div_ceil(rows);
    let pairs = geo.batch * g;
    let threads = rayon::current_num_threads();
    // Output-channel chunks of 8 rows or more (the sgemm kernel's height).
    let chunks = if pairs * tiles >= 2 * threads {
        1
    } else {
        (2 * threads)
            .div_ceil(pairs * tiles)
            .min(og.div_ceil(8))
            .max(1)
    };
    let per_chunk = og.div_ceil(chunks);
    let chunks = og.div_ceil(per_chunk);
    // Patches laid out beforehand, for every image and group, when tasks share them.
    let shared_cols: Vec<f32> = if in_place || chunks == 1 {
        Vec::new()
    } else {
        let mut cols = vec![0f32; pairs * k * p];
        cols.par_chunks_mut(k * p)
            .enumerate()
            .for_each(|(pair, col)| {
                let (n, gi) = (pair / g, pair % g);
                let xn = &x[n * chw..][..chw];
                im2col_rows(xn, geo, (gi * cg, cg, kh, kw), (0, geo.oh), col);
            });
        cols
    };
    let out_ptr = OutPtr(out.as_mut_ptr());
    (0..pairs * tiles * chunks)
        .into_par_iter()
        .for_each(|task| {
            let (pair, rest) = (task / (tiles * chunks), task % (tiles * chunks));
            let (tile, chunk) = (rest / chunks, rest % chunks);
            let (n, gi) = (pair / g, pair % g);
            let (oy0, oy1) = (tile * rows, ((tile + 1) * rows).min(geo.oh));
            let (p0, nb) = (oy0 * ow, (oy1 - oy0) * ow);
            let (o0, o1) = (chunk * per_chunk, ((chunk + 1) * per_chunk).min(og));
            let xn = &x[n * chw..][..chw];
            let multiply = |b: *const f32, rsb: usize| {
                let oc0 = n * o + gi * og + o0;
                // SAFETY: A is (o1 − o0) × k inside the weights; B is k × nb with row stride rsb
                // inside its buffer; C is this task's (o1 − o0) × nb tile of `out`, row stride p,
                // written by no other task.
                unsafe {
                    let c = out_ptr.at(oc0 * p + p0);
                    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
                    super::gemm_fma::gemm(
                        o1 - o0,
                        k,
                        nb,
                        wt.data.as_ptr().add((gi * og + o0) * k),
                        b,
                        rsb,
                        c,
                        p,
                    );
                    #[cfg(not(target_arch = "wasm32"))]
                    gemm::gemm(
                        o1 - o0,
                        nb,
                        k,
                        c,
                        1,
                        p as isize,
                        false,
                        wt.data.as_ptr().add((gi * og + o0) * k),
                        1,
                        k as isize,
                        b,
                        1,
                        rsb as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    #[cfg(all(target_arch = "wasm32", not(target_feature = "relaxed-simd")))]
                    matrixmultiply::sgemm(
                        o1 - o0,
                        k,
                        nb,
                        1.0,
                        wt.data.as_ptr().add((gi * og + o0) * k),
                        k as isize,
                        1,
                        b,
                        rsb as isize,
                        1,
                        0.0,
                        c,
                        p as isize,
                        1,
                    );
                    for (r, &bv) in bias[gi * og + o0..gi * og + o1].iter().enumerate() {
                        let row = std::slice::from_raw_parts_mut(c.add(r * p), nb);
                        if relu {
                            row.iter_mut().for_each(|v| *v = (*v + bv).max(0.0));
                        } else {
                            row.iter_mut().for_each(|v| *v += bv);
                        }
                    }
                }
            };
            if in_place {
                multiply(xn[gi * cg * p + p0..].as_ptr(), p);
            } else if chunks > 1 {
                multiply(shared_cols[pair * k * p + p0..].as_ptr(), p);
            } else {
                PATCHES.with_borrow_mut(|col| {
                    col.resize(k * nb, 0.0);
                    im2col_rows(
                        xn,
                        geo,
                        (gi * cg, cg, kh, kw),
                        (oy0, oy1),
                        &mut col[..k * nb],
                    );
                    multiply(col.as_ptr(), nb);
                });
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::super::depthwise::depthwise_f32;
    use super::*;

    #[test]
    fn depthwise_loops_match_the_im2col_convolution() {
        for (stride, pad, batch) in [(1, 1, 1), (2, 1, 2), (2, 0, 3)] {
            let (c, h, w) = (3, 7, 6);
            let x: Vec<f32> = (0..batch * c * h * w)
                .map(|i| ((i * 37) % 11) as f32 - 5.0)
                .collect();
            let wt = Tensor::new(
                vec![c, 1, 3, 3],
                (0..c * 9)
                    .map(|i| ((i * 13) % 7) as f32 * 0.25 - 0.5)
                    .collect(),
            )
            .unwrap();
            let out = |n: usize| (n + 2 * pad - 3) / stride + 1;
            let geo = ConvGeometry {
                batch,
                c,
                h,
                w,
                oh: out(h),
                ow: out(w),
                attrs: ConvAttrs {
                    stride: [stride, stride],
                    pads: [pad; 4],
                    dilation: [1, 1],
                    group: c,
                },
            };
            let bias = [0.5, -1.0, 2.0];
            // Small integers and quarters: both summation orders are exact.
            assert_eq!(
                depthwise_f32(&x, &geo, &wt, &bias, false),
                conv_f32_gemm(&x, &geo, &wt, &bias, false)
            );
        }
    }

    /// Stacked convolutions give each convolution's own bits, on one image and on several,
    /// for output counts on and off the product kernel's row multiple.
    #[test]
    fn stacked_convolutions_equal_each_alone() {
        let (c, h, w) = (5, 23, 19);
        for batch in [1, 2] {
            let x: Vec<f32> = (0..batch * c * h * w)
                .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
                .collect();
            let geo = ConvGeometry {
                batch,
                c,
                h,
                w,
                oh: h,
                ow: w,
                attrs: ConvAttrs {
                    pads: [1; 4],
                    ..ConvAttrs::default()
                },
            };
            let convs: Vec<(Tensor, Vec<f32>)> = [2, 8, 20, 3]
                .iter()
                .enumerate()
                .map(|(s, &o)| {
                    let n = o * c * 9;
                    let wt = (0..n)
                        .map(|i| ((i * 31 + s * 17) % 97) as f32 / 97.0 - 0.5)
                        .collect();
                    let bias = (0..o).map(|i| i as f32 * 0.1 - s as f32).collect();
                    (Tensor::new(vec![o, c, 3, 3], wt).unwrap(), bias)
                })
                .collect();
            let refs: Vec<(&Tensor, &[f32])> =
                convs.iter().map(|(t, b)| (t, b.as_slice())).collect();
            let stacked = conv_f32_stacked(&x, &geo, &refs);
            for ((wt, bias), y) in convs.iter().zip(&stacked) {
                assert_eq!(y, &conv_f32(&x, &geo, wt, bias));
            }
        }
    }
}
