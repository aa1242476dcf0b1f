//! The float product on SCRFD's convolution shapes, one thread: the `gemm` crate (what the
//! native CPU backend uses) against `matrixmultiply` (what it used before, and what the wasm
//! builds use), best of 20 each, in GFLOP/s. `[O][K] × [K][P]`: output channels × patch size ×
//! pixels.
//!
//! Usage: cargo run --release -p efq-shared --example product_bench

use std::time::Instant;

fn best_of(mut f: impl FnMut()) -> f64 {
    (0..20)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    println!("| O × K × P | matrixmultiply, GFLOP/s | gemm, GFLOP/s |");
    println!("|---|---:|---:|");
    let shapes = [
        (16, 16, 102400),
        (40, 40, 25600),
        (72, 72, 6400),
        (152, 152, 1600),
        (288, 288, 400),
        (30, 576, 6400),
        (16, 27, 102400),
    ];
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 11) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let (ki, ni) = (k as isize, n as isize);
        // SAFETY (both): A is m × k, B is k × n, C is m × n, all row-major and disjoint.
        let mm = best_of(|| unsafe {
            matrixmultiply::sgemm(m, k, n, 1.0, ap, ki, 1, bp, ni, 1, 0.0, cp, ni, 1)
        });
        let gm = best_of(|| unsafe {
            gemm::gemm(
                m,
                n,
                k,
                cp,
                1,
                ni,
                false,
                ap,
                1,
                ki,
                bp,
                1,
                ni,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        });
        let flop = 2.0 * (m * k * n) as f64;
        println!(
            "| {m} × {k} × {n} | {:.1} | {:.1} |",
            flop / mm / 1e9,
            flop / gm / 1e9
        );
        std::hint::black_box(&c);
    }
}
