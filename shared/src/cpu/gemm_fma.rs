//! `C = A · B` with fused multiply-adds, for the float convolutions in a wasm build with
//! relaxed SIMD (`f32x4.relaxed_madd`, an FMA where the CPU has one): `A` the weights (`m × k`,
//! rows contiguous), `B` the input rows or patches (`k × n`, row stride `rsb`), `C` the output
//! tile (row stride `rsc`), in blocks of 4 output channels × 16 pixels summed over `k` in
//! order. `matrixmultiply`'s wasm kernel multiplies and adds separately: profiled in node's V8
//! (`bench/profile_detect_wasm.mjs`), this halves the detector's 1×1 and dense convolutions.
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

/// [`gemm`] over any [`Lanes`]: full blocks of 16 columns with `madd`, the last `n mod 16`
/// columns with a plain multiply and add.
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
        let a = std::slice::from_raw_parts(a, m * k);
        let load = |l: usize, j: usize| L::load(b.add(l * rsb + j));
        let mut j0 = 0;
        while j0 + 16 <= n {
            let mut i0 = 0;
            while i0 + 4 <= m {
                let mut acc = [[L::splat(0.0); 4]; 4];
                for l in 0..k {
                    let x = [
                        load(l, j0),
                        load(l, j0 + 4),
                        load(l, j0 + 8),
                        load(l, j0 + 12),
                    ];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w = L::splat(a[(i0 + r) * k + l]);
                        for (s, x) in acc.iter_mut().zip(x) {
                            *s = L::madd(w, x, *s);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    for (q, v) in acc.iter().enumerate() {
                        v.store(c.add((i0 + r) * rsc + j0 + 4 * q));
                    }
                }
                i0 += 4;
            }
            for i in i0..m {
                let mut acc = [L::splat(0.0); 4];
                for l in 0..k {
                    let w = L::splat(a[i * k + l]);
                    for (q, s) in acc.iter_mut().enumerate() {
                        *s = L::madd(w, load(l, j0 + 4 * q), *s);
                    }
                }
                for (q, v) in acc.iter().enumerate() {
                    v.store(c.add(i * rsc + j0 + 4 * q));
                }
            }
            j0 += 16;
        }
        for j in j0..n {
            for i in 0..m {
                let mut s = 0f32;
                for l in 0..k {
                    s += a[i * k + l] * *b.add(l * rsb + j);
                }
                *c.add(i * rsc + j) = s;
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
        /// triple loop summed in the same order, bit for bit: fused in the 16-column blocks,
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
            let blocked = n / 16 * 16;
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
