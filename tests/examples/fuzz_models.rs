//! The fuzzing campaign behind docs/RESULTS.md's reliability table: N mutants per entry point,
//! each loaded and, if it loads, run on the CPU backend — and, with `--backends`, on libtorch
//! and on the wgpu engine, whose answers must equal the CPU backend's.
//!
//! ```sh
//! CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
//!   cargo run --release -p efq-tests --example fuzz_models -- --inputs 40000 --backends
//! ```
//!
//! A supervisor runs the inputs in a worker process and restarts it past any input that
//! aborts the process or runs longer than `--hang-seconds`; a counting allocator flags any
//! single allocation over 1 GiB. Every finding is written with its seed and index, so
//! `--only SEED:INDEX` re-runs it. Each input's outcome is appended to `OUT/lines.tsv` as it
//! comes, so a campaign stopped part-way goes on from where it stood with `--resume` (same
//! `--inputs`, `--seed` and `--backends`).

#[path = "../fuzz/mod.rs"]
mod fuzz;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fuzz::Outcome;

/// The largest single allocation since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LARGEST.fetch_max(n, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

const GIB: usize = 1 << 30;

struct Args {
    inputs: u64,
    seed: u64,
    backends: bool,
    hang_seconds: u64,
    only: Option<(usize, u64)>,
    resume: bool,
    worker: Option<(u64, u64)>,
    out: std::path::PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        inputs: 1000,
        seed: 1,
        backends: false,
        hang_seconds: 60,
        only: None,
        resume: false,
        worker: None,
        out: "out/fuzz".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = |i: usize| v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--inputs" => a.inputs = next(i).parse().expect("--inputs N (per seed)"),
            "--seed" => a.seed = next(i).parse().expect("--seed N"),
            "--hang-seconds" => a.hang_seconds = next(i).parse().expect("--hang-seconds S"),
            "--out" => a.out = next(i).into(),
            "--resume" => {
                a.resume = true;
                i += 1;
                continue;
            }
            "--backends" => {
                a.backends = true;
                i += 1;
                continue;
            }
            "--only" => {
                let s = next(i);
                let (k, n) = s.split_once(':').expect("--only SEED:INDEX");
                a.only = Some((k.parse().unwrap(), n.parse().unwrap()));
            }
            "--worker" => {
                let s = next(i);
                let (from, to) = s.split_once(':').unwrap();
                a.worker = Some((from.parse().unwrap(), to.parse().unwrap()));
            }
            "--help" | "-h" => {
                println!(
                    "fuzz_models [--inputs N per seed] [--seed S] [--backends] \
                     [--hang-seconds S] [--out DIR] [--only SEED:INDEX] [--resume]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
        i += 2;
    }
    a
}

/// Input `n` of the flattened run: (seed number, index within the seed).
fn split(n: u64, seeds: usize) -> (usize, u64) {
    ((n % seeds as u64) as usize, n / seeds as u64)
}

/// Runs one input and returns its report line (tab-separated: kind, seed, index, category,
/// detail).
fn one(
    seeds: &[fuzz::Seed],
    a: &Args,
    k: usize,
    index: u64,
    gpu: Option<&efq_engine::Gpu>,
) -> String {
    let seed = &seeds[k];
    let (bytes, category) = fuzz::mutant(seed, a.seed, index);
    LARGEST.store(0, Ordering::Relaxed);
    let (outcome, graph) = fuzz::run(seed.target, &bytes);
    let big = LARGEST.load(Ordering::Relaxed);
    let mut kind = match &outcome {
        Outcome::Refused => "refused".to_string(),
        Outcome::Ran => "ran".to_string(),
        Outcome::Panic(m) => format!("panic\t{}", m.replace(['\t', '\n'], " ")),
    };
    if big > GIB {
        kind = format!("alloc\t{big} bytes");
    }
    if let (Some(g), true, Outcome::Ran) = (graph, a.backends, &outcome)
        && let Some(d) = backends_differ(&g, gpu)
    {
        kind = format!("differ\t{d}");
    }
    let kind = kind.split('\t').collect::<Vec<_>>();
    format!(
        "{}\t{k}\t{index}\t{}\t{category}\t{}",
        kind[0],
        seed.name,
        kind.get(1).unwrap_or(&"")
    )
}

/// Whether libtorch or the engine answer differently from the CPU backend on a loaded graph:
/// any output further from the CPU backend's than 1e-3 of its largest magnitude (a NaN counts),
/// or a backend refusing what the CPU backend ran. (Not a cosine: a mutant whose output is all
/// zeros, e.g. an activation scale so large that every input rounds to 0, has none.)
fn backends_differ(g: &efq_shared::graph::Graph, gpu: Option<&efq_engine::Gpu>) -> Option<String> {
    let x = efq_shared::builders::random_images(2, g.input_shape, 3);
    let r = efq_shared::cpu::forward(g, &x, 2).ok()?;
    if r.iter().any(|v| !v.is_finite()) {
        return None; // overflowing weights: no answer to compare
    }
    let scale = r.iter().fold(0f32, |m, v| m.max(v.abs()));
    let agree = |name: &str, y: Result<Vec<f32>, String>| -> Option<String> {
        let y = match y {
            Ok(y) => y,
            Err(e) => return Some(format!("{name} refused a model the CPU backend ran: {e}")),
        };
        if y.len() != r.len() {
            return Some(format!("{name} gave {} values for {}", y.len(), r.len()));
        }
        let worst = r
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |m, d| {
                if d.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(d)
                }
            });
        if worst.is_nan() || worst > 1e-3 * scale.max(1e-6) {
            return Some(format!("{name} differs by {worst} (outputs up to {scale})"));
        }
        None
    };
    let shape = [
        2,
        g.input_shape[0] as i64,
        g.input_shape[1] as i64,
        g.input_shape[2] as i64,
    ];
    let t = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = efq_trainer::net::TchNet::new(g, tch::Device::Cpu).map_err(|e| e.to_string())?;
        let y = tch::no_grad(|| net.forward(&tch::Tensor::from_slice(&x).reshape(shape)))
            .map_err(|e| e.to_string())?;
        Vec::<f32>::try_from(y.flatten(0, -1)).map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|_| Err("panicked".into()));
    if let Some(d) = agree("libtorch", t) {
        return Some(d);
    }
    let gpu = gpu?;
    let e = efq_engine::GpuModel::from_graph(gpu, g, 2)
        .and_then(|m| m.forward_blocking(efq_engine::Images::Nchw(&x), 2))
        .map_err(|e| e.to_string());
    agree("engine", e)
}

fn worker(a: &Args, from: u64, to: u64) {
    std::panic::set_hook(Box::new(|_| {}));
    let seeds = fuzz::seeds(true);
    let gpu = a
        .backends
        .then(|| efq_engine::request_blocking(&Default::default()).ok())
        .flatten();
    let progress = a.out.join("progress");
    let mut out = std::io::stdout().lock();
    for n in from..to {
        let (k, index) = split(n, seeds.len());
        // Written before the input runs: a supervisor that finds the worker dead knows which.
        std::fs::write(&progress, n.to_string()).unwrap();
        let line = one(&seeds, a, k, index, gpu.as_ref());
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.out).unwrap();
    if let Some((from, to)) = a.worker {
        return worker(&a, from, to);
    }
    let seeds = fuzz::seeds(true);
    if let Some((k, index)) = a.only {
        let (bytes, category) = fuzz::mutant(&seeds[k], a.seed, index);
        let path = a.out.join(format!("seed{k}-{index}.bin"));
        std::fs::write(&path, &bytes).unwrap();
        eprintln!(
            "{} ({category}) written to {}",
            seeds[k].name,
            path.display()
        );
        let gpu = a
            .backends
            .then(|| efq_engine::request_blocking(&Default::default()).ok())
            .flatten();
        println!("{}", one(&seeds, &a, k, index, gpu.as_ref()));
        return;
    }
    let total = a.inputs * seeds.len() as u64;
    eprintln!(
        "{} seeds: {}",
        seeds.len(),
        seeds
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut next = 0u64;
    // Seconds spent by earlier runs of a resumed campaign.
    let mut before = 0f64;
    let lines_path = a.out.join("lines.tsv");
    if a.resume {
        let old = std::fs::read_to_string(&lines_path).unwrap_or_default();
        for line in old.lines().filter(|l| !l.is_empty()) {
            next = tally(line, &seeds, &mut counts, &mut findings);
        }
        before = std::fs::read_to_string(a.out.join("seconds"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        eprintln!("resuming at input {next} of {total} ({before:.0} s so far)");
    } else {
        std::fs::write(&lines_path, "").unwrap();
    }
    let mut lines = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&lines_path)
        .unwrap();
    let t0 = Instant::now();
    let exe = std::env::current_exe().unwrap();
    while next < total {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--worker",
            &format!("{next}:{total}"),
            "--seed",
            &a.seed.to_string(),
        ])
        .args(["--out", a.out.to_str().unwrap()])
        .stdout(std::process::Stdio::piped());
        if a.backends {
            cmd.arg("--backends");
        }
        let mut child = cmd.spawn().expect("start the worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let mut last = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    writeln!(lines, "{line}").unwrap();
                    next = tally(&line, &seeds, &mut counts, &mut findings);
                    if !matches!(line.split('\t').next(), Some("ran" | "refused")) {
                        eprintln!("FINDING {line}");
                    }
                    std::fs::write(
                        a.out.join("seconds"),
                        format!("{}", before + t0.elapsed().as_secs_f64()),
                    )
                    .unwrap();
                    last = Instant::now();
                    if next.is_multiple_of(5000) {
                        eprintln!("{next}/{total} in {:.0} s", t0.elapsed().as_secs_f64());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if last.elapsed() > Duration::from_secs(a.hang_seconds) {
                        let _ = child.kill();
                        let _ = child.wait();
                        let line =
                            record_dead(&a, &seeds, &mut next, "hang", &mut counts, &mut findings);
                        writeln!(lines, "{line}").unwrap();
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    if !status.success() || next < total {
                        let line =
                            record_dead(&a, &seeds, &mut next, "abort", &mut counts, &mut findings);
                        writeln!(lines, "{line}").unwrap();
                    }
                    break;
                }
            }
        }
    }
    let seconds = before + t0.elapsed().as_secs_f64();
    report(&a, &counts, &findings, total, seconds);
}

/// Counts one report line and returns the input that follows it.
fn tally(
    line: &str,
    seeds: &[fuzz::Seed],
    counts: &mut BTreeMap<(String, String, String), u64>,
    findings: &mut Vec<String>,
) -> u64 {
    let f: Vec<&str> = line.split('\t').collect();
    let target = seeds[f[1].parse::<usize>().unwrap()].target.name();
    *counts
        .entry((target.into(), f[4].into(), f[0].into()))
        .or_default() += 1;
    if !matches!(f[0], "ran" | "refused") {
        findings.push(line.to_string());
    }
    // Input n is (seed n % seeds, index n / seeds); the worker goes in order.
    let (k, index): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    index * seeds.len() as u64 + k + 1
}

/// The worker died or hung on the input its progress file names: record it, skip past it,
/// and return its line.
fn record_dead(
    a: &Args,
    seeds: &[fuzz::Seed],
    next: &mut u64,
    kind: &str,
    counts: &mut BTreeMap<(String, String, String), u64>,
    findings: &mut Vec<String>,
) -> String {
    let n: u64 = std::fs::read_to_string(a.out.join("progress"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(*next);
    let (k, index) = split(n, seeds.len());
    let (_, category) = fuzz::mutant(&seeds[k], a.seed, index);
    let line = format!("{kind}\t{k}\t{index}\t{}\t{category}\t", seeds[k].name);
    eprintln!("FINDING {line}");
    *counts
        .entry((seeds[k].target.name().into(), category.into(), kind.into()))
        .or_default() += 1;
    findings.push(line.clone());
    *next = n + 1;
    line
}

fn report(
    a: &Args,
    counts: &BTreeMap<(String, String, String), u64>,
    findings: &[String],
    total: u64,
    seconds: f64,
) {
    let kinds = [
        "refused", "ran", "panic", "abort", "hang", "alloc", "differ",
    ];
    let mut rows: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    for ((t, c, k), n) in counts {
        *rows
            .entry((t.clone(), c.clone()))
            .or_default()
            .entry(k.clone())
            .or_default() += n;
    }
    println!(
        "| entry point | mutation | inputs | {} |",
        kinds.join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(kinds.len()));
    for ((t, c), m) in &rows {
        let sum: u64 = m.values().sum();
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| m.get(*k).copied().unwrap_or(0).to_string())
            .collect();
        println!("| {t} | {c} | {sum} | {} |", cells.join(" | "));
    }
    println!(
        "\n{total} inputs in {seconds:.0} s; overflow checks {}; backends compared: {}; {} findings",
        if overflow_checks_on() { "on" } else { "off" },
        a.backends,
        findings.len()
    );
    let json = serde_json::json!({
        "inputs": total,
        "seconds": seconds,
        "seed": a.seed,
        "backends": a.backends,
        "overflow_checks": overflow_checks_on(),
        "rows": rows.iter().map(|((t, c), m)| serde_json::json!({"target": t, "mutation": c, "counts": m})).collect::<Vec<_>>(),
        "findings": findings,
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
    eprintln!("report: {}", a.out.join("report.json").display());
}

/// Whether this build traps integer overflow (release builds do with
/// `CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true`).
fn overflow_checks_on() -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let x = std::hint::black_box(u8::MAX);
    let on = std::panic::catch_unwind(|| std::hint::black_box(x) + 1).is_err();
    std::panic::set_hook(hook);
    on
}
