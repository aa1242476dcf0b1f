//! 1:N search speed and memory: a gallery of N generated 512-d faces, saved and loaded, then
//! identification of 1 and of 100 probes (top 5). bench/gallery_bench.sh runs it beside numpy.
//! Usage: cargo run --release -p efq-shared --example gallery_bench -- N [PATH]

use std::time::Instant;

use efq_shared::builders::{random_gallery, random_images};
use efq_shared::gallery::Gallery;
use efq_shared::measure::{median_ms, peak_rss_mb};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| format!("/tmp/gallery-{n}.safetensors"));
    let dim = 512;
    let t = Instant::now();
    let g = random_gallery(n, dim, 1);
    let enroll_s = t.elapsed().as_secs_f64();
    g.save(&path).unwrap();
    drop(g);
    let enrolled_rss = peak_rss_mb();
    let t = Instant::now();
    let g = Gallery::load(&path).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let probes = random_images(100, [dim, 1, 1], 2);
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
