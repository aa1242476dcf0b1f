//! The CPU integer path's matrix product, `out[o][p] = Σ_k w[o][k] · x[k][p]` from i8 operands
//! into exact i32 sums: the inner loop of every non-depthwise quantized convolution in the
//! CPU backend, natively and in the browser's wasm fallback.
//!
//! It is built on one instruction both targets have: multiply eight pairs of i16 and add
//! adjacent products into four i32 lanes (`pmaddwd`, SSE2, on every x86-64; `i32x4.dot_i16x8_s`
//! in WebAssembly SIMD128). Letting the compiler vectorise plain loops instead produced 32-bit
//! multiplies that SSE2 lacks (emulated with shuffles) and ran at a third of the speed. The
//! activations are therefore re-laid out as i16 pairs of consecutive `k` per pixel, in strips of
//! eight pixels (`[P/8][K/2][8][2]`), so that one load feeds four pixels × two taps; each weight
//! pair is broadcast to all lanes.
//! Elsewhere scalar lanes do the same arithmetic. Integer sums are exact in any order, so
//! every variant gives the same result (tested against the plain triple loop below).

use rayon::prelude::*;

/// The register tile: 4 output channels × 8 pixels (two vectors of four) = 8 accumulator
/// vectors, held in registers across the whole `k` loop; per pair of taps it loads two
/// activation vectors and four weight pairs. Pixels are walked in strips of 8, the outer loop,
/// so that a strip's activations (`K/2 × 32` bytes) stay in L1 while every channel tile
/// reads them.
const OT: usize = 4;
const PX: usize = 8;
// `lanes::splat4` broadcasts one tile's four weight pairs.
const _: () = assert!(OT == 4);

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;
    pub type V = __m128i;
    pub type X = __m128i;
    #[inline(always)]
    pub fn zero() -> V {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { _mm_setzero_si128() }
    }
    /// # Safety
    /// `x` must point to 8 readable i16.
    #[inline(always)]
    pub unsafe fn load(x: *const i16) -> X {
        // SAFETY: the caller guarantees 16 readable bytes; unaligned load.
        unsafe { _mm_loadu_si128(x as *const X) }
    }
    /// `acc + [x0·w0 + x1·w1, …]` over four lanes of i16 pairs.
    #[inline(always)]
    pub fn madd(acc: V, x: X, w: V) -> V {
        // SAFETY: SSE2 is baseline.
        unsafe { _mm_add_epi32(acc, _mm_madd_epi16(x, w)) }
    }
    /// Four i32 from `w`, each broadcast to all lanes: one load and four shuffles.
    /// # Safety
    /// `w` must point to 4 readable i32.
    #[inline(always)]
    pub unsafe fn splat4(w: *const i32) -> [V; 4] {
        // SAFETY: the caller guarantees 16 readable bytes; unaligned load; SSE2 shuffles.
        unsafe {
            let v = _mm_loadu_si128(w as *const V);
            [
                _mm_shuffle_epi32::<0x00>(v),
                _mm_shuffle_epi32::<0x55>(v),
                _mm_shuffle_epi32::<0xAA>(v),
                _mm_shuffle_epi32::<0xFF>(v),
            ]
        }
    }
    #[inline(always)]
    pub fn to_array(v: V) -> [i32; 4] {
        // SAFETY: both are 16 bytes of plain integers.
        unsafe { std::mem::transmute(v) }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::*;
    pub type V = v128;
    pub type X = v128;
    #[inline(always)]
    pub fn zero() -> V {
        i32x4_splat(0)
    }
    /// # Safety
    /// `x` must point to 8 readable i16.
    #[inline(always)]
    pub unsafe fn load(x: *const i16) -> X {
        // SAFETY: the caller guarantees 16 readable bytes (v128_load needs no alignment).
        unsafe { v128_load(x as *const X) }
    }
    #[inline(always)]
    pub fn madd(acc: V, x: X, w: V) -> V {
        i32x4_add(acc, i32x4_dot_i16x8(x, w))
    }
    /// Four i32 from `w`, each broadcast to all lanes (`v128.load32_splat`: one instruction
    /// each where the engine has a broadcast load).
    /// # Safety
    /// `w` must point to 4 readable i32.
    #[inline(always)]
    pub unsafe fn splat4(w: *const i32) -> [V; 4] {
        // SAFETY: the caller guarantees 16 readable bytes (no alignment needed).
        unsafe {
            let w = w as *const u32;
            [
                v128_load32_splat(w),
                v128_load32_splat(w.add(1)),
                v128_load32_splat(w.add(2)),
                v128_load32_splat(w.add(3)),
            ]
        }
    }
    #[inline(always)]
    pub fn to_array(v: V) -> [i32; 4] {
        [
            i32x4_extract_lane::<0>(v),
            i32x4_extract_lane::<1>(v),
            i32x4_extract_lane::<2>(v),
            i32x4_extract_lane::<3>(v),
        ]
    }
}

/// The same operations on plain arrays: the lanes of targets without a pairwise multiply-add
/// (and, in tests, a second implementation to check the vector ones against).
#[allow(dead_code)]
mod scalar {
    pub type V = [i32; 4];
    pub type X = [i16; 8];
    #[inline(always)]
    pub fn zero() -> V {
        [0; 4]
    }
    #[inline(always)]
    pub fn splat(w: i32) -> V {
        [w; 4]
    }
    /// # Safety
    /// `x` must point to 8 readable i16.
    #[inline(always)]
    pub unsafe fn load(x: *const i16) -> X {
        // SAFETY: the caller guarantees 8 readable i16.
        unsafe { std::ptr::read_unaligned(x as *const X) }
    }
    /// # Safety
    /// `w` must point to 4 readable i32.
    #[inline(always)]
    pub unsafe fn splat4(w: *const i32) -> [V; 4] {
        // SAFETY: the caller guarantees 4 readable i32.
        let w = unsafe { std::ptr::read_unaligned(w as *const [i32; 4]) };
        w.map(splat)
    }
    #[inline(always)]
    pub fn madd(mut acc: V, x: X, w: V) -> V {
        let (w0, w1) = (w[0] as i16 as i32, (w[0] >> 16) as i16 as i32);
        for (j, a) in acc.iter_mut().enumerate() {
            *a += x[2 * j] as i32 * w0 + x[2 * j + 1] as i32 * w1;
        }
        acc
    }
    #[inline(always)]
    pub fn to_array(v: V) -> [i32; 4] {
        v
    }
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
use scalar as lanes;

/// Activations laid out for the product: `[P/8][K/2][8][2]` i16, strips of eight pixels, each
/// strip the pairs of consecutive taps of its pixels for every `k`; `k` and `p` padded with
/// zeros to even and to a multiple of 8. A strip is one contiguous run that the channel tiles
/// read front to back (the `[K/2][P][2]` layout before it made every step of the `k` loop
/// jump a whole row of pixels, 12 KB at 56×56, and ran 1.2× slower).
pub(super) struct Paired {
    data: Vec<i16>,
    k: usize,
    p: usize,
}

/// i16 per strip-row: eight pixels × two taps.
const ROW: usize = 2 * PX;

/// `x` (`[K][P]` i8) as [`Paired`].
pub(super) fn pair_up(x: &[i8], k: usize, p: usize) -> Paired {
    pair_up_with(x, k, p, |v| v as i16)
}

/// `x` (`[K][P]` f32) quantized by `q` straight into [`Paired`]: one pass instead of quantizing
/// to i8 and re-laying that out.
pub(super) fn pair_up_quantized(
    x: &[f32],
    k: usize,
    p: usize,
    q: crate::quant::Quantizer,
) -> Paired {
    pair_up_with(x, k, p, move |v| q.to_i16(v))
}

/// `x` (`[K][P]`) as [`Paired`], each value converted by `to_i16`; strips in parallel.
fn pair_up_with<T: Copy + Default + Sync>(
    x: &[T],
    k: usize,
    p: usize,
    to_i16: impl Fn(T) -> i16 + Sync,
) -> Paired {
    let k2 = k.div_ceil(2);
    let mut data = vec![0i16; p.div_ceil(PX) * k2 * ROW];
    data.par_chunks_exact_mut(k2 * ROW)
        .enumerate()
        .with_min_len(4)
        .for_each(|(s, strip)| fill_strip(x, k, p, (s * PX, PX.min(p - s * PX)), strip, &to_i16));
    Paired { data, k, p }
}

/// Columns `p0..p0 + n` of `x` (`[K][P]`, rows `p` long) as [`Paired`], on this thread.
fn pair_up_columns<T: Copy + Default>(
    x: &[T],
    k: usize,
    p: usize,
    (p0, n): (usize, usize),
    to_i16: impl Fn(T) -> i16,
) -> Paired {
    let k2 = k.div_ceil(2);
    let mut data = vec![0i16; n.div_ceil(PX) * k2 * ROW];
    for (s, strip) in data.chunks_exact_mut(k2 * ROW).enumerate() {
        fill_strip(x, k, p, (p0 + s * PX, PX.min(n - s * PX)), strip, &to_i16);
    }
    Paired { data, k, p: n }
}

/// One strip: pixels `p0..p0 + n` (n ≤ 8) of every tap, as `[K/2][8][2]`, zero-padded.
#[inline(always)]
fn fill_strip<T: Copy + Default>(
    x: &[T],
    k: usize,
    p: usize,
    (p0, n): (usize, usize),
    strip: &mut [i16],
    to_i16: &impl Fn(T) -> i16,
) {
    // Eight pixels at a time through fixed-size arrays: the conversions vectorise and the
    // interleave becomes an unpack (a per-value loop stayed scalar).
    let eight = |tap: usize| -> [T; PX] {
        let mut v = [T::default(); PX];
        if tap < k {
            v[..n].copy_from_slice(&x[tap * p + p0..][..n]);
        }
        v
    };
    for (kk, d) in strip.chunks_exact_mut(ROW).enumerate() {
        let (a, b) = (eight(2 * kk), eight(2 * kk + 1));
        for l in 0..PX {
            d[2 * l] = to_i16(a[l]);
            d[2 * l + 1] = to_i16(b[l]);
        }
    }
}

/// Weight pairs as i32 lanes (low half `w[2kk]`, high half `w[2kk+1]`), laid out
/// `[O/4][K/2][4]` so that a channel tile's four pairs for one `kk` are adjacent; channels
/// padded with zeros to a multiple of 4.
fn weight_pairs(w: &[i8], k: usize) -> Vec<i32> {
    let (o, k2) = (w.len() / k, k.div_ceil(2));
    let mut wq = vec![0i32; o.div_ceil(OT) * k2 * OT];
    for (oc, row) in w.chunks_exact(k).enumerate() {
        for kk in 0..k2 {
            let lo = row[2 * kk] as i16 as u16 as u32;
            let hi = row.get(2 * kk + 1).map_or(0, |&v| v as i16 as u16 as u32);
            wq[((oc / OT) * k2 + kk) * OT + oc % OT] = (lo | hi << 16) as i32;
        }
    }
    wq
}

macro_rules! tile_rows_with {
    ($(#[$m:meta])* $name:ident, $lanes:ident) => {
$(#[$m])*
fn $name(wq: &[i32], xp: &Paired, out: &mut [i32]) {
    use $lanes as lanes;
    let (k2, p) = (xp.k.div_ceil(2), xp.p);
    let o_here = out.len() / p;
    // Strips outer, channel tiles inner: a strip (`K/2 × 32` bytes) stays in L1 while every
    // tile reads it.
    for (s, strip) in xp.data.chunks_exact(k2 * ROW).enumerate() {
        let p0 = s * PX;
        for (tl, wt) in wq.chunks_exact(k2 * OT).take(o_here.div_ceil(OT)).enumerate() {
            let mut acc = [[lanes::zero(); 2]; OT];
            for (xs, ws) in strip.chunks_exact(ROW).zip(wt.chunks_exact(OT)) {
                // SAFETY: `xs` holds 16 i16 (two loads of 8), `ws` holds OT i32.
                let (x0, x1) = unsafe { (lanes::load(xs.as_ptr()), lanes::load(xs[8..].as_ptr())) };
                let wv = unsafe { lanes::splat4(ws.as_ptr()) };
                for (a, w) in acc.iter_mut().zip(wv) {
                    a[0] = lanes::madd(a[0], x0, w);
                    a[1] = lanes::madd(a[1], x1, w);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let oc = tl * OT + r;
                if oc >= o_here {
                    break;
                }
                let dst = &mut out[oc * p + p0..][..PX.min(p - p0)];
                let vals = [lanes::to_array(a[0]), lanes::to_array(a[1])];
                for (d, &v) in dst.iter_mut().zip(vals.iter().flatten()) {
                    *d = v;
                }
            }
        }
    }
}
    };
}

tile_rows_with!(
    /// Output rows `0..out.len() / p` of the product, from the channel tiles starting at `wq`.
    tile_rows_lanes,
    lanes
);
#[cfg(test)]
tile_rows_with!(tile_rows_scalar, scalar);

type TileRows = fn(&[i32], &Paired, &mut [i32]);

/// `out[o][p] = Σ_k w[o][k] · x[k][p]`, exactly; `w` is `[O][K]`, `x` is `[K][P]`, `out` is
/// `[O][P]` and is overwritten. `split`: how many parallel tasks the output channels are cut
/// into (1 when the caller already has enough parallel work).
pub(super) fn gemm_i8(w: &[i8], x: &[i8], k: usize, p: usize, out: &mut [i32], split: usize) {
    gemm_paired(tile_rows_lanes, w, &pair_up(x, k, p), split, out)
}

/// Threads take disjoint runs of channel tiles: their output rows are contiguous.
fn gemm_paired(tile_rows: TileRows, w: &[i8], xp: &Paired, split: usize, out: &mut [i32]) {
    let (wq, tiles_per_task, k2) = prepare(w, xp, split, out.len());
    out.par_chunks_mut(tiles_per_task * OT * xp.p)
        .enumerate()
        .for_each(|(task, out)| tile_rows(&wq[task * tiles_per_task * k2 * OT..], xp, out));
}

/// The product of `w` and paired activations, each task handing its rows of sums to
/// `epilogue(first channel, sums [rows][P], its rows of y)` while they are in cache: the
/// dequantization (and activation) of a layer in the same parallel pass as its product.
pub(super) fn gemm_paired_then(
    w: &[i8],
    xp: &Paired,
    split: usize,
    y: &mut [f32],
    epilogue: impl Fn(usize, &[i32], &mut [f32]) + Sync,
) {
    let (wq, tiles_per_task, k2) = prepare(w, xp, split, y.len());
    y.par_chunks_mut(tiles_per_task * OT * xp.p)
        .enumerate()
        .for_each(|(task, y)| {
            let mut sums = vec![0i32; y.len()];
            tile_rows_lanes(&wq[task * tiles_per_task * k2 * OT..], xp, &mut sums);
            epilogue(task * tiles_per_task * OT, &sums, y);
        });
}

/// The quantized product of `w` (`[O][K]` i8) and float activations `x` (`[K][P]`), split by
/// pixels into `tasks` parallel tasks that each quantize and pair their own columns, compute
/// every output channel for them and hand each channel's sums to `epilogue(channel, sums, y)`
/// with that channel's columns of `y` (`[O][P]`). One parallel pass per layer and no tensor
/// shared between tasks: at batch 1 a layer split by channels needed a pass to pair the whole
/// input first, and each extra fork-join is a wake-up of the other threads (in the browser, of
/// Web Workers) on a layer that takes a fraction of a millisecond.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_quantized_by_pixels(
    w: &[i8],
    x: &[f32],
    k: usize,
    p: usize,
    quantizer: crate::quant::Quantizer,
    tasks: usize,
    y: &mut [f32],
    epilogue: impl Fn(usize, &[i32], &mut [f32]) + Sync,
) {
    let o = w.len() / k;
    assert!(
        w.len() == o * k && x.len() == k * p && y.len() == o * p,
        "gemm_quantized_by_pixels: operand sizes"
    );
    let wq = weight_pairs(w, k);
    let strips = p.div_ceil(PX);
    let per_task = strips.div_ceil(tasks.max(1));
    let y = SharedRows(y.as_mut_ptr());
    (0..strips.div_ceil(per_task))
        .into_par_iter()
        .for_each(|t| {
            let p0 = t * per_task * PX;
            let n = (per_task * PX).min(p - p0);
            let xp = pair_up_columns(x, k, p, (p0, n), |v| quantizer.to_i16(v));
            let mut sums = vec![0i32; o * n];
            tile_rows_lanes(&wq, &xp, &mut sums);
            for (oc, sums) in sums.chunks_exact(n).enumerate() {
                // SAFETY: `y` is `o × p`; task `t` alone touches columns `p0..p0 + n` (the
                // tasks' column ranges are disjoint), so these slices never overlap, and `y`
                // outlives the parallel loop.
                let dst = unsafe { std::slice::from_raw_parts_mut(y.at(oc * p + p0), n) };
                epilogue(oc, sums, dst);
            }
        });
}

/// The output of [`gemm_quantized_by_pixels`], written by several tasks at disjoint columns.
struct SharedRows(*mut f32);
// SAFETY: the tasks write disjoint elements (see the use above).
unsafe impl Sync for SharedRows {}
impl SharedRows {
    /// (A method, so that closures capture the wrapper and not the bare pointer.)
    fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: the caller stays within the buffer (`i < o × p`).
        unsafe { self.0.add(i) }
    }
}

/// Checks the sizes; the weight pairs, channel tiles per task and `K/2`.
fn prepare(w: &[i8], xp: &Paired, split: usize, out_len: usize) -> (Vec<i32>, usize, usize) {
    let (k2, o) = (xp.k.div_ceil(2), w.len() / xp.k);
    assert!(
        w.len() == o * xp.k && out_len == o * xp.p && xp.data.len() == xp.p.div_ceil(PX) * k2 * ROW,
        "gemm_i8: operand sizes"
    );
    let tiles_per_task = o.div_ceil(OT).div_ceil(split.max(1));
    (weight_pairs(w, xp.k), tiles_per_task, k2)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The vector lanes of this target and the scalar lanes of the others agree, and both
        /// equal the plain triple loop, on random shapes (odd K, P not a multiple of 8, O not
        /// a multiple of 4, channels cut into 1–4 parallel tasks) over the whole i8 range; so do
        /// the epilogue variant and the quantizing re-layout.
        #[test]
        fn vector_and_scalar_lanes_equal_the_plain_product(
            o in 1usize..=17, k in 1usize..=40, p in 1usize..=70, split in 1usize..=4,
            seed in proptest::num::u64::ANY,
        ) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 24) as u8 as i8 };
            let w: Vec<i8> = (0..o * k).map(|_| next()).collect();
            let x: Vec<i8> = (0..k * p).map(|_| next()).collect();
            let mut want = vec![0i32; o * p];
            for oc in 0..o {
                for kk in 0..k {
                    for pi in 0..p {
                        want[oc * p + pi] += w[oc * k + kk] as i32 * x[kk * p + pi] as i32;
                    }
                }
            }
            let (mut got, mut got_scalar) = (vec![-1i32; o * p], vec![-1i32; o * p]);
            gemm_i8(&w, &x, k, p, &mut got, split);
            gemm_paired(tile_rows_scalar, &w, &pair_up(&x, k, p), split, &mut got_scalar);
            proptest::prop_assert_eq!(&got, &want);
            proptest::prop_assert_eq!(&got_scalar, &want);
            // The epilogue variant sees each row with its channel index.
            let mut y = vec![f32::NAN; o * p];
            gemm_paired_then(&w, &pair_up(&x, k, p), split, &mut y, |oc0, sums, y| {
                for (r, (y, s)) in y.chunks_mut(p).zip(sums.chunks(p)).enumerate() {
                    y.iter_mut().zip(s).for_each(|(y, &s)| *y = (2 * s) as f32 + (oc0 + r) as f32);
                }
            });
            let want_y: Vec<f32> = want.iter().enumerate().map(|(i, &s)| (2 * s) as f32 + (i / p) as f32).collect();
            proptest::prop_assert_eq!(y, want_y);
            // Split by pixels, quantizing inside the tasks: the same sums as quantizing first.
            let xf: Vec<f32> = x.iter().map(|&v| v as f32 * 0.37 + 0.11).collect();
            let (inv, bits) = (1.0 / 0.29, 5);
            let quantizer = crate::quant::Quantizer::new(inv, bits);
            let q: Vec<i8> = xf.iter().map(|&v| crate::quant::quantize(v, inv, bits)).collect();
            let mut want_q = vec![0i32; o * p];
            gemm_i8(&w, &q, k, p, &mut want_q, 1);
            proptest::prop_assert!(want_q.iter().any(|&v| v != 0));
            let mut by_pixels = vec![f32::NAN; o * p];
            gemm_quantized_by_pixels(&w, &xf, k, p, quantizer, split, &mut by_pixels, |oc, sums, y| {
                y.iter_mut().zip(sums).for_each(|(y, &s)| *y = s as f32 + 0.5 * oc as f32);
            });
            let want_y: Vec<f32> = want_q.iter().enumerate().map(|(i, &s)| s as f32 + 0.5 * (i / p) as f32).collect();
            proptest::prop_assert_eq!(by_pixels, want_y);
            // Quantizing straight into pairs equals quantizing, then pairing.
            proptest::prop_assert_eq!(pair_up_quantized(&xf, k, p, quantizer).data, pair_up(&q, k, p).data);
        }
    }
}
