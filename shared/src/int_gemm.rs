//! The CPU integer path's matrix product, `out[o][p] = Σ_k w[o][k] · x[k][p]` from i8 operands
//! into exact i32 sums: the inner loop of every non-depthwise quantized convolution in the
//! reference executor, natively and in the browser's wasm fallback.
//!
//! It is built on one instruction both targets have: multiply eight pairs of i16 and add
//! adjacent products into four i32 lanes (`pmaddwd`, SSE2, on every x86-64; `i32x4.dot_i16x8_s`
//! in WebAssembly SIMD128). Letting the compiler vectorise plain loops instead produced 32-bit
//! multiplies that SSE2 lacks (emulated with shuffles) and ran at a third of the speed. The
//! activations are therefore re-laid out as i16 pairs of consecutive `k` per pixel, `[K/2][P][2]`,
//! so that one load feeds four pixels × two taps; each weight pair is broadcast to all lanes.
//! Elsewhere scalar lanes do the same arithmetic. Integer sums are exact in any order, so
//! every variant gives the same result (tested against the naive sum in `reference`).

use rayon::prelude::*;

/// The register tile: 4 output channels × 8 pixels (two vectors of four) = 8 accumulator
/// vectors, held in registers across the whole `k` loop; per pair of taps it loads two
/// activation vectors and four weight pairs. Pixels are walked in strips of 8, the outer loop,
/// so that a strip's activations (`K/2 × 32` bytes) stay in L1 while every channel tile
/// reads them.
const OT: usize = 4;
const PX: usize = 8;

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
    #[inline(always)]
    pub fn splat(w: i32) -> V {
        // SAFETY: as above.
        unsafe { _mm_set1_epi32(w) }
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
    #[inline(always)]
    pub fn splat(w: i32) -> V {
        i32x4_splat(w)
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

/// `x` (`[K][P]` i8) as `[K/2][P8][2]` i16: pairs of consecutive taps per pixel, `k` and `p`
/// padded with zeros to even and to a multiple of 8.
fn pair_up(x: &[i8], k: usize, p: usize) -> (Vec<i16>, usize) {
    let (k2, p8) = (k.div_ceil(2), p.div_ceil(PX) * PX);
    let mut out = vec![0i16; k2 * p8 * 2];
    out.par_chunks_exact_mut(p8 * 2)
        .enumerate()
        .with_min_len(8)
        .for_each(|(kk, rows)| {
            let r0 = &x[2 * kk * p..][..p];
            for (dst, &v) in rows.iter_mut().step_by(2).zip(r0) {
                *dst = v as i16;
            }
            if 2 * kk + 1 < k {
                let r1 = &x[(2 * kk + 1) * p..][..p];
                for (dst, &v) in rows.iter_mut().skip(1).step_by(2).zip(r1) {
                    *dst = v as i16;
                }
            }
        });
    (out, p8)
}

macro_rules! gemm_with {
    ($(#[$m:meta])* $name:ident, $lanes:ident) => {
$(#[$m])*
fn $name(w: &[i8], x: &[i8], k: usize, p: usize, out: &mut [i32], split: usize) {
    use $lanes as lanes;
    let o = w.len() / k;
    assert!(
        x.len() == k * p && out.len() == o * p,
        "gemm_i8: operand sizes"
    );
    let (xp, p8) = pair_up(x, k, p);
    let k2 = k.div_ceil(2);
    // Weight pairs as i32 lanes (low half w[2kk], high half w[2kk+1]), laid out
    // `[O/4][K/2][4]` so that a channel tile's four pairs for one `kk` are adjacent; channels
    // padded with zeros to a multiple of 4.
    let tiles = o.div_ceil(OT);
    let mut wq = vec![0i32; tiles * k2 * OT];
    for (oc, row) in w.chunks_exact(k).enumerate() {
        for kk in 0..k2 {
            let lo = row[2 * kk] as i16 as u16 as u32;
            let hi = row.get(2 * kk + 1).map_or(0, |&v| v as i16 as u16 as u32);
            wq[((oc / OT) * k2 + kk) * OT + oc % OT] = (lo | hi << 16) as i32;
        }
    }
    // Threads take disjoint runs of channel tiles (their output rows are contiguous), each
    // walking all pixel strips; with `split == 1` this is the single-threaded loop order.
    let tiles_per_task = tiles.div_ceil(split.max(1));
    out.par_chunks_mut(tiles_per_task * OT * p).enumerate().for_each(|(task, out)| {
        let o_here = out.len() / p;
        for p0 in (0..p8).step_by(PX) {
            for tl in 0..o_here.div_ceil(OT) {
                let t = task * tiles_per_task + tl;
                let wt = &wq[t * k2 * OT..][..k2 * OT];
                let mut acc = [[lanes::zero(); 2]; OT];
                for kk in 0..k2 {
                    let xs = &xp[(kk * p8 + p0) * 2..][..2 * PX];
                    // SAFETY: `xs` holds 16 i16: two loads of 8.
                    let (x0, x1) =
                        unsafe { (lanes::load(xs.as_ptr()), lanes::load(xs[8..].as_ptr())) };
                    let ws = &wt[kk * OT..][..OT];
                    for (a, &wv) in acc.iter_mut().zip(ws) {
                        let wv = lanes::splat(wv);
                        a[0] = lanes::madd(a[0], x0, wv);
                        a[1] = lanes::madd(a[1], x1, wv);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let oc = tl * OT + r;
                    if oc >= o_here {
                        break;
                    }
                    let dst = &mut out[oc * p..][..p];
                    let vals = [lanes::to_array(a[0]), lanes::to_array(a[1])];
                    for (j, &v) in vals.iter().flatten().enumerate() {
                        if p0 + j < p {
                            dst[p0 + j] = v;
                        }
                    }
                }
            }
        }
    });
}
    };
}

gemm_with!(
    /// `out[o][p] = Σ_k w[o][k] · x[k][p]`, exactly; `w` is `[O][K]`, `x` is `[K][P]`, `out`
    /// is `[O][P]` and is overwritten.
    gemm_i8_lanes,
    lanes
);
#[cfg(test)]
gemm_with!(gemm_i8_scalar, scalar);

/// `out[o][p] = Σ_k w[o][k] · x[k][p]`, exactly; `w` is `[O][K]`, `x` is `[K][P]`, `out` is
/// `[O][P]` and is overwritten. `split`: how many parallel tasks the output channels are cut
/// into (1 when the caller already has enough parallel work).
pub(crate) fn gemm_i8(w: &[i8], x: &[i8], k: usize, p: usize, out: &mut [i32], split: usize) {
    gemm_i8_lanes(w, x, k, p, out, split)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The vector lanes of this target and the scalar lanes of the others agree, and both
        /// equal the plain triple loop, on random shapes (odd K, P not a multiple of 8, O not
        /// a multiple of 4, channels cut into 1–4 parallel tasks) over the whole i8 range.
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
            gemm_i8_scalar(&w, &x, k, p, &mut got_scalar, split);
            proptest::prop_assert_eq!(&got, &want);
            proptest::prop_assert_eq!(&got_scalar, &want);
        }
    }
}
