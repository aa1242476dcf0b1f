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
use efq_shared::builders::{random_gallery, random_images};
use efq_shared::measure::{median_ms, peak_rss_mb};

const DIM: usize = 512;
const K: usize = 5;

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
    let probes = random_images(100, [DIM, 1, 1], 2);
    for n in sizes {
        let g = random_gallery(n, DIM, 1);
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
