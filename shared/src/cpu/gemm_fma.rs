//! `C = A · B` with fused multiply-adds, for the float convolutions in a wasm build with
//! relaxed SIMD (`f32x4.relaxed_madd`, an FMA where the CPU has one): `A` the weights (`m × k`,
//! rows contiguous), `B` the input rows or patches (`k × n`, row stride `rsb`), `C` the output
//! tile (row stride `rsc`), in blocks of 3 output channels × 12 pixels summed over `k` in
//! order. `matrixmultiply`'s wasm kernel multiplies and adds separately: profiled in node's V8
//! (`bench/profile_wasm.mjs`), this halves the detector's 1×1 and dense convolutions.
//!
//! Relaxed SIMD leaves it to the engine whether a multiply-add rounds once or twice, so results
//! may differ between machines in the last bit; the detector's float path is held to
//! tolerances across runtimes, not bits. The blocking is written once over [`Lanes`], so that
//! a native test runs it with a software FMA and checks every shape and tail exactly.
#![cfg_attr(
    not(all(target_arch = "wasm32", target_feature = "relaxed-simd")),
    allow(dead_code)
)]

/// Four f32 lanes: what the kernel needs of SIMD.
trait Lanes: Copy {
    fn splat(v: f32) -> Self;
    /// # Safety
    /// `p` points to four readable floats.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` points to four writable floats.
    unsafe fn store(self, p: *mut f32);
    /// `a · b + c`, rounded once (or, where the engine chooses, twice).
    fn madd(a: Self, b: Self, c: Self) -> Self;
}

#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
impl Lanes for core::arch::wasm32::v128 {
    fn splat(v: f32) -> Self {
        core::arch::wasm32::f32x4_splat(v)
    }
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's; v128_load allows unaligned addresses.
        unsafe { core::arch::wasm32::v128_load(p as *const Self) }
    }
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's; v128_store allows unaligned addresses.
        unsafe { core::arch::wasm32::v128_store(p as *mut Self, self) }
    }
    fn madd(a: Self, b: Self, c: Self) -> Self {
        core::arch::wasm32::f32x4_relaxed_madd(a, b, c)
    }
}

/// `C[i][j] = Σₗ A[i][l] · B[l][j]`, `l` in order from 0, written (not accumulated) into `c`.
///
/// # Safety
/// `a` holds `m × k` floats; `b` holds rows `0..k` of `n` floats at stride `rsb`; `c` has room
/// for rows `0..m` of `n` floats at stride `rsc` and overlaps neither.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
) {
    // SAFETY: forwarded.
    unsafe { gemm_with::<core::arch::wasm32::v128>(m, k, n, a, b, rsb, c, rsc) }
}

/// The register tile: MR output channels × NR pixels (NV vectors of four). Its 9 accumulators,
/// 3 pixel vectors and a weight splat fit in the 16 vector registers V8 gives wasm on x86-64.
/// The 4 × 16 tile this kernel had before (16 accumulators) spilled: one detection on the
/// page's single-threaded path took 141 ms with it and 105–116 ms with this one (headless
/// Chromium, `tests/browser/bench_detect.mjs`, two runs each; 4 × 8 133–136, 2 × 16 121–129,
/// 3 × 8 127–131 ms). Node 20's V8 ranks them a little differently (4 × 8 ≈ 3 × 12 there).
const MR: usize = 3;
const NV: usize = 3;
const NR: usize = 4 * NV;

/// [`gemm`] over any [`Lanes`]: full blocks of NR columns with `madd` (the last `m mod MR`
/// rows as a smaller block), the last `n mod NR` columns with a plain multiply and add.
///
/// # Safety
/// As [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_with<L: Lanes>(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
) {
    // SAFETY (all blocks below): indices stay inside the extents the caller vouches for.
    unsafe {
        let mut j0 = 0;
        while j0 + NR <= n {
            let mut i0 = 0;
            while i0 + MR <= m {
                block::<L, MR>(k, a.add(i0 * k), b.add(j0), rsb, c.add(i0 * rsc + j0), rsc);
                i0 += MR;
            }
            let (a, c) = (a.add(i0 * k), c.add(i0 * rsc + j0));
            match m - i0 {
                2 => block::<L, 2>(k, a, b.add(j0), rsb, c, rsc),
                1 => block::<L, 1>(k, a, b.add(j0), rsb, c, rsc),
                _ => {}
            }
            j0 += NR;
        }
        for j in j0..n {
            for i in 0..m {
                let mut s = 0f32;
                for l in 0..k {
                    s += *a.add(i * k + l) * *b.add(l * rsb + j);
                }
                *c.add(i * rsc + j) = s;
            }
        }
    }
}

/// One tile: R rows of `a` (stride `k`) times NR columns of `b`, into `c`.
///
/// # Safety
/// As [`gemm`], for the tile's rows and columns.
#[inline(always)]
unsafe fn block<L: Lanes, const R: usize>(
    k: usize,
    a: *const f32,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
) {
    // SAFETY: the caller's extents.
    unsafe {
        let mut acc = [[L::splat(0.0); NV]; R];
        let mut bp = b;
        for l in 0..k {
            let x: [L; NV] = std::array::from_fn(|q| L::load(bp.add(4 * q)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = L::splat(*a.add(r * k + l));
                for (s, x) in acc.iter_mut().zip(x) {
                    *s = L::madd(w, x, *s);
                }
            }
            bp = bp.add(rsb);
        }
        for (r, acc) in acc.iter().enumerate() {
            for (q, v) in acc.iter().enumerate() {
                v.store(c.add(r * rsc + 4 * q));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Four lanes in software, each multiply-add rounded once (`f32::mul_add`).
    #[derive(Clone, Copy)]
    struct Soft([f32; 4]);

    impl Lanes for Soft {
        fn splat(v: f32) -> Self {
            Soft([v; 4])
        }
        unsafe fn load(p: *const f32) -> Self {
            Soft(unsafe { std::ptr::read_unaligned(p as *const [f32; 4]) })
        }
        unsafe fn store(self, p: *mut f32) {
            unsafe { std::ptr::write_unaligned(p as *mut [f32; 4], self.0) }
        }
        fn madd(a: Self, b: Self, c: Self) -> Self {
            Soft(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
        }
    }

    proptest! {
        /// Every shape — channel and pixel tails, strides wider than the rows — equals the
        /// triple loop summed in the same order, bit for bit: fused in the NR-column blocks,
        /// multiply then add in the tail; the gaps between rows are left alone.
        #[test]
        fn the_blocks_and_tails_equal_the_triple_loop_bit_for_bit(
            m in 1usize..11, k in 1usize..40, n in 1usize..70, pad_b in 0usize..5,
            pad_c in 0usize..5, seed in any::<u64>(),
        ) {
            let mut s = seed | 1;
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            };
            let (rsb, rsc) = (n + pad_b, n + pad_c);
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * rsb).map(|_| next()).collect();
            let mut c = vec![7f32; m * rsc];
            unsafe {
                gemm_with::<Soft>(m, k, n, a.as_ptr(), b.as_ptr(), rsb, c.as_mut_ptr(), rsc)
            };
            let blocked = n / NR * NR;
            for i in 0..m {
                for j in 0..rsc {
                    let want = if j < blocked {
                        (0..k).fold(0f32, |s, l| a[i * k + l].mul_add(b[l * rsb + j], s))
                    } else if j < n {
                        (0..k).fold(0f32, |s, l| s + a[i * k + l] * b[l * rsb + j])
                    } else {
                        7.0
                    };
                    prop_assert_eq!(c[i * rsc + j].to_bits(), want.to_bits(), "({}, {})", i, j);
                }
            }
        }
    }
}
