//! 1:N search speed and memory: a gallery of N generated 512-d faces, saved and loaded, then
//! identification of 1 and of 100 probes (top 5). bench/gallery_bench.sh runs it beside numpy.
//! Usage: cargo run --release -p efq-shared --example gallery_bench -- N [PATH]

use std::time::Instant;

use efq_shared::gallery::Gallery;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| format!("/tmp/gallery-{n}.safetensors"));
    let dim = 512;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut g = Gallery::new(dim, "generated", Some(0.3));
    let mut e = vec![0f32; dim];
    let t = Instant::now();
    for i in 0..n {
        e.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
        g.enroll(&format!("person {}", i / 3), &e).unwrap();
    }
    let enroll_s = t.elapsed().as_secs_f64();
    g.save(&path).unwrap();
    drop(g);
    let enrolled_rss = peak_rss_mb();
    let t = Instant::now();
    let g = Gallery::load(&path).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let probes: Vec<f32> = (0..100 * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let one = median_ms(|| drop(g.identify(&probes[..dim], 5).unwrap()), 21);
    let hundred = median_ms(|| drop(g.identify_batch(&probes, 100, 5).unwrap()), 7);
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "{{\"faces\": {n}, \"file_mb\": {:.1}, \"enroll_s\": {enroll_s:.3}, \"load_s\": {load_s:.3}, \
         \"one_probe_ms\": {one:.3}, \"hundred_probes_ms\": {hundred:.3}, \"peak_rss_mb_enrolling\": \
         {enrolled_rss:.0}, \"peak_rss_mb\": {:.0}}}",
        bytes as f64 / 1e6,
        peak_rss_mb()
    );
}
