//! 1:N search speed on the GPU (or lavapipe) against the CPU `Gallery`, in one run: generated
//! galleries of 512-d faces, 1 and 100 probes, top 5. Prints a markdown table: median ms per
//! call on each, the upload, whether both agree on every probe's best match, and the process's
//! peak RSS (VmHWM) after each size (with a software GPU its buffers are process memory too).
//!
//! cargo run --release -p efq-engine --example gallery_gpu_bench -- [SIZES...]
//!
//! SIZES default to 1000 10000 100000.

use std::sync::Arc;
use std::time::Instant;

use efq_engine::{GpuGallery, GpuOptions, request_blocking};
use efq_shared::gallery::Gallery;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 512;
const K: usize = 5;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    let gpu = request_blocking(&GpuOptions::default())?;
    println!("GPU: {}\n", gpu.adapter());
    println!(
        "| faces | probes | CPU median ms | GPU median ms | GPU upload ms | same best match | peak RSS MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let probes: Vec<f32> = (0..100 * DIM)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    for n in sizes {
        let mut g = Gallery::new(DIM, "generated", Some(0.3));
        let mut e = vec![0f32; DIM];
        for i in 0..n {
            e.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
            g.enroll(&format!("person {}", i / 3), &e)?;
        }
        let g = Arc::new(g);
        let t = Instant::now();
        let on_gpu = GpuGallery::from_shared(&gpu, g.clone())?;
        let upload = t.elapsed().as_secs_f64() * 1e3;
        // Fewer runs of the slow cases: the machine is shared.
        let runs = if n >= 50_000 { 3 } else { 7 };
        for p in [1, 100] {
            let q = &probes[..p * DIM];
            // Warm-up: compiles this probe count's pipeline and checks the answers agree.
            let a = on_gpu.identify_blocking(q, p, K)?;
            let b = g.identify_batch(q, p, K)?;
            let same = a
                .iter()
                .zip(&b)
                .filter(|(a, b)| a.best().map(|m| m.index) == b.best().map(|m| m.index))
                .count();
            let cpu = median_ms(|| drop(g.identify_batch(q, p, K).unwrap()), runs);
            let gpu_ms = median_ms(|| drop(on_gpu.identify_blocking(q, p, K).unwrap()), runs);
            println!(
                "| {n} | {p} | {cpu:.2} | {gpu_ms:.2} | {upload:.1} | {same}/{p} | {:.0} |",
                peak_rss_mb()
            );
        }
    }
    Ok(())
}
