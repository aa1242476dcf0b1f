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
//! Elsewhere a scalar loop does the same arithmetic. Integer sums are exact in any order, so
//! every variant gives the same result (tested against the naive sum in `reference`).

/// Pixels per tile (16 vectors of four) and output channels per tile: 64 accumulator vectors,
/// 1 KiB, stay in L1 while each loaded activation vector serves four channels.
const PT: usize = 64;
const OT: usize = 4;

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::*;
    pub type V = __m128i;
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
    /// `acc + [x0·w0 + x1·w1, …]` over four lanes of i16 pairs.
    ///
    /// # Safety
    /// `x` must point to 8 readable i16.
    #[inline(always)]
    pub unsafe fn madd(acc: V, x: *const i16, w: V) -> V {
        // SAFETY: the caller guarantees 16 readable bytes; SSE2 is baseline.
        unsafe { _mm_add_epi32(acc, _mm_madd_epi16(_mm_loadu_si128(x as *const V), w)) }
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
    pub unsafe fn madd(acc: V, x: *const i16, w: V) -> V {
        // SAFETY: the caller guarantees 16 readable bytes (v128_load needs no alignment).
        i32x4_add(acc, i32x4_dot_i16x8(unsafe { v128_load(x as *const V) }, w))
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

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
mod lanes {
    pub type V = [i32; 4];
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
    pub unsafe fn madd(mut acc: V, x: *const i16, w: V) -> V {
        // SAFETY: the caller guarantees 8 readable i16.
        let x = unsafe { std::slice::from_raw_parts(x, 8) };
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

/// `x` (`[K][P]` i8) as `[K/2][P4][2]` i16: pairs of consecutive taps per pixel, `k` and `p`
/// padded with zeros to even and to a multiple of 4.
fn pair_up(x: &[i8], k: usize, p: usize) -> (Vec<i16>, usize) {
    let (k2, p4) = (k.div_ceil(2), p.div_ceil(4) * 4);
    let mut out = vec![0i16; k2 * p4 * 2];
    for (kk, rows) in out.chunks_exact_mut(p4 * 2).enumerate() {
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
    }
    (out, p4)
}

/// `out[o][p] = Σ_k w[o][k] · x[k][p]`, exactly; `w` is `[O][K]`, `x` is `[K][P]`, `out` is
/// `[O][P]` and is overwritten.
pub(crate) fn gemm_i8(w: &[i8], x: &[i8], k: usize, p: usize, out: &mut [i32]) {
    let o = w.len() / k;
    debug_assert_eq!(x.len(), k * p);
    debug_assert_eq!(out.len(), o * p);
    let (xp, p4) = pair_up(x, k, p);
    let k2 = k.div_ceil(2);
    // Each weight pair as one i32 lane: low half w[2kk], high half w[2kk+1].
    let wp: Vec<i32> = w
        .chunks_exact(k)
        .flat_map(|row| {
            (0..k2).map(move |kk| {
                let lo = row[2 * kk] as i16 as u16 as u32;
                let hi = row.get(2 * kk + 1).map_or(0, |&v| v as i16 as u16 as u32);
                (lo | hi << 16) as i32
            })
        })
        .collect();
    for p0 in (0..p4).step_by(PT) {
        let nv = (PT.min(p4 - p0)) / 4;
        for o0 in (0..o).step_by(OT) {
            let rows = OT.min(o - o0);
            let mut acc = [[lanes::zero(); PT / 4]; OT];
            for kk in 0..k2 {
                let mut wb = [lanes::zero(); OT];
                for (r, b) in wb.iter_mut().enumerate().take(rows) {
                    *b = lanes::splat(wp[(o0 + r) * k2 + kk]);
                }
                let xrow = &xp[(kk * p4 + p0) * 2..][..nv * 8];
                for v in 0..nv {
                    let ptr = xrow[v * 8..][..8].as_ptr();
                    for r in 0..rows {
                        // SAFETY: `ptr` points into `xrow` with 8 elements available.
                        acc[r][v] = unsafe { lanes::madd(acc[r][v], ptr, wb[r]) };
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(rows) {
                let dst = &mut out[(o0 + r) * p..][..p];
                for (v, &a) in row.iter().enumerate().take(nv) {
                    let base = p0 + v * 4;
                    for (j, val) in lanes::to_array(a).into_iter().enumerate() {
                        if base + j < p {
                            dst[base + j] = val;
                        }
                    }
                }
            }
        }
    }
}
