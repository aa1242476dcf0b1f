//! What the benchmarks and reports measure about the process itself: its peak memory and the
//! median time of repeated calls.

use std::time::Instant;

/// Peak resident memory of this process so far (Linux `VmHWM`), MB; 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Median wall time of `runs` calls of `f`, in ms (the median: one slow call on a shared
/// machine does not move it).
pub fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    assert!(runs > 0, "median of no runs");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_memory_covers_a_buffer_just_touched() {
        let before = peak_rss_mb();
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        assert!(
            peak_rss_mb() >= before.max(64.0),
            "{before} → {}",
            peak_rss_mb()
        );
    }

    #[test]
    fn the_median_ignores_one_slow_run() {
        let mut i = 0;
        let ms = median_ms(
            || {
                i += 1;
                if i == 1 {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            },
            5,
        );
        assert!(ms < 100.0, "{ms}");
    }
}
