//! A bounded fuzzing run on every model entry point, as part of the test suite: mutants of
//! the generated and the real model files load with an error or run, and never panic. (The
//! long campaign, which also counts aborts, hangs and large allocations across processes, is
//! `cargo run --release -p efq-tests --example fuzz_models`; docs/RESULTS.md has its numbers.)
//! Set `EFQ_FUZZ_SECONDS` for a longer run (default 60 seconds over all targets).

#[path = "../fuzz/mod.rs"]
mod fuzz;

use std::time::{Duration, Instant};

use fuzz::{Outcome, Target};

#[test]
fn mutated_model_files_load_with_an_error_or_run_and_never_panic() {
    let seconds: u64 = std::env::var("EFQ_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // The real files too: the suite's set-up installs them (efq_tests::teacher checks).
    let _ = efq_tests::teacher();
    let seeds = fuzz::seeds(true);
    for t in Target::ALL {
        assert!(seeds.iter().any(|s| s.target == t), "no seed for {t:?}");
    }
    // Silence the default hook: panics are collected and reported below.
    std::panic::set_hook(Box::new(|_| {}));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut tried, mut ran) = (0u64, 0u64);
    let mut panics = Vec::new();
    let mut index = 0u64;
    while Instant::now() < deadline {
        for seed in &seeds {
            let (bytes, category) = fuzz::mutant(seed, 1, index);
            match fuzz::run(seed.target, &bytes).0 {
                Outcome::Ran => ran += 1,
                Outcome::Refused => {}
                Outcome::Panic(m) => {
                    panics.push(format!("{} #{index} ({category}): {m}", seed.name))
                }
            }
            tried += 1;
        }
        index += 1;
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "{tried} mutants, {ran} loaded and ran, {} panics",
        panics.len()
    );
    assert!(tried >= 100, "only {tried} mutants in {seconds} s");
    assert!(
        ran > 0,
        "no mutant loaded: the mutations are too coarse to test the executor"
    );
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}
