//! One SCRFD detection at the detector's input size on the CPU backend, timed per stage and per
//! kind of layer, next to onnxruntime on the same letterboxed inputs in the same run.
//!
//! Usage: cargo run --release -p efq-shared --example detect_bench -- [IMAGES] [ROUNDS] [THREADS]
//! (defaults 4 photos of `$EFQ_LFW/raw250-sample`, 5 rounds, 2 threads). Reads `$EFQ_DETECTOR`;
//! with `$EFQ_PYTHON` set it also runs `bench/ort_detect_bench.py` (onnxruntime, the same number
//! of intra-op threads) on the same normalised inputs, written to a temporary file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use efq_shared::cpu;
use efq_shared::detect::{DetectConfig, Scrfd, letterbox_input, nms};
use efq_shared::graph::{Op, Weights};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of this process so far, all threads (Linux `/proc/self/stat` utime + stime, in
/// ms at 100 ticks/s), or `None` elsewhere.
fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(d)
    };
    let (n_images, rounds, threads) = (arg(1, 4), arg(2, 5), arg(3, 2));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let det = Scrfd::import_file(std::env::var("EFQ_DETECTOR")?, [640, 640])?;
    let size = det.input_size[0];
    let lfw = PathBuf::from(std::env::var("EFQ_LFW")?).join("raw250-sample");
    let mut files = Vec::new();
    for d in std::fs::read_dir(&lfw)? {
        for f in std::fs::read_dir(d?.path())? {
            files.push(f?.path());
        }
    }
    files.sort();
    let photos: Vec<image::RgbImage> = (0..n_images)
        .map(|i| image::open(&files[i * files.len() / n_images]).map(|im| im.to_rgb8()))
        .collect::<Result<_, _>>()?;

    // What each node is, for the per-layer table.
    let graph = &det.graph;
    let shapes = graph.infer_shapes()?;
    let heads = det.head_values();
    let kind: Vec<&str> = graph
        .nodes
        .iter()
        .map(|n| match &n.op {
            Op::Conv {
                weights: Weights::Float(w),
                attrs,
                ..
            } => {
                let c = shapes[n.inputs[0]][0];
                if heads.contains(&n.output) {
                    "heads"
                } else if attrs.group == c && w.shape[1] == 1 {
                    "depthwise"
                } else if w.shape[2] == 1 && w.shape[3] == 1 {
                    "1x1"
                } else {
                    "dense kxk"
                }
            }
            Op::Upsample { .. } | Op::Add => "upsample/add",
            Op::Relu | Op::Affine { .. } | Op::PRelu { .. } => "relu/affine",
            _ => "other",
        })
        .collect();

    let cfg = DetectConfig::default();
    let outputs = det.head_values();
    let mut stage: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_node = vec![Vec::new(); graph.nodes.len()];
    let mut inputs = Vec::new();
    let mut faces = Vec::new();
    let mut cpu_start = None;
    for round in 0..=rounds {
        if round == 1 {
            cpu_start = process_cpu_ms();
        }
        for photo in &photos {
            let t0 = Instant::now();
            let (x, scale) = letterbox_input(photo, size);
            let t2 = Instant::now();
            let mut marks = Vec::with_capacity(graph.nodes.len());
            let values = cpu::forward_values_traced(graph, &x, &outputs, &mut |i| {
                marks.push((i, Instant::now()))
            })?;
            let t3 = Instant::now();
            let outs = det.heads_from_nchw(&values);
            let dets = nms(det.decode(&outs, scale, cfg.score_threshold), cfg.nms_iou);
            let t4 = Instant::now();
            if round == 0 {
                // Warm-up round: keep the inputs for onnxruntime and the face counts.
                inputs.push(x);
                faces.push(dets.len());
                continue;
            }
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            stage
                .entry("letterbox+normalize")
                .or_default()
                .push(ms(t0, t2));
            stage.entry("network").or_default().push(ms(t2, t3));
            stage.entry("decode+nms").or_default().push(ms(t3, t4));
            stage.entry("total").or_default().push(ms(t0, t4));
            let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
            let mut prev = t2;
            for (i, t) in marks {
                sums.entry(kind[i]).or_default();
                *sums.get_mut(kind[i]).unwrap() += ms(prev, t);
                per_node[i].push(ms(prev, t));
                prev = t;
            }
            for (k, v) in sums {
                per_kind.entry(k).or_default().push(v);
            }
        }
    }
    let timed = (rounds * n_images) as f64;
    let cpu_per_run = cpu_start
        .zip(process_cpu_ms())
        .map(|(a, b)| (b - a) / timed);
    println!(
        "SCRFD {size}×{size}, {n_images} photos × {rounds} rounds, {threads} threads; faces found {faces:?}"
    );
    // The fastest run too: on a shared machine it is the least disturbed.
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!("CPU backend, ms:             median      min");
    for (k, v) in &stage {
        println!("  {k:<19} {:8.2} {:8.2}", median(v.clone()), min(v));
    }
    println!("network by layer kind (nodes), median ms:");
    for (k, v) in &per_kind {
        let count = kind.iter().filter(|&&x| x == *k).count();
        println!("  {k:<19} {:8.2}  ({count})", median(v.clone()));
    }
    let mut slow: Vec<(f64, usize)> = per_node
        .iter()
        .enumerate()
        // (A ReLU run inside the convolution before it reports no time of its own.)
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, v)| (median(v.clone()), i))
        .collect();
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("slowest layers, median ms:");
    for &(t, i) in slow.iter().take(
        std::env::var("EFQ_BENCH_LAYERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15),
    ) {
        let n = &graph.nodes[i];
        println!(
            "  {t:7.2}  {:<12} {:<28} {:?} -> {:?}",
            kind[i], n.name, shapes[n.inputs[0]], shapes[n.output]
        );
    }

    if let Some(python) = std::env::var("EFQ_PYTHON").ok().filter(|p| !p.is_empty()) {
        let path = std::env::temp_dir().join(format!("detect_bench_{}.f32", std::process::id()));
        let bytes: Vec<u8> = inputs
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&path, bytes)?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/ort_detect_bench.py");
        let out = Command::new(python)
            .arg(script)
            .args(["--model", &std::env::var("EFQ_DETECTOR")?])
            .arg("--input")
            .arg(&path)
            .args(["--size", &size.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--rounds", &rounds.to_string()])
            .output()?;
        std::fs::remove_file(&path).ok();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        let ort: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let ort_ms = ort["median_ms"].as_f64().unwrap_or(f64::NAN);
        let ort_min = ort["min_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{}, {threads} intra-op threads, network ms: median {ort_ms:.2}, min {ort_min:.2}",
            ort["backend"].as_str().unwrap_or("onnxruntime")
        );
        if let (Some(ours), Some(theirs)) = (cpu_per_run, ort["cpu_ms_per_run"].as_f64()) {
            println!(
                "CPU time per detection (all threads, less sensitive to other load): CPU backend \
                 {ours:.1} ms (letterbox to NMS), onnxruntime {theirs:.1} ms (network), ratio {:.2}×",
                ours / theirs
            );
        }
        println!(
            "ratio CPU backend / onnxruntime (median; min): network {:.2}×; {:.2}×, \
             with letterbox+normalize+decode+NMS {:.2}×; {:.2}×",
            median(stage["network"].clone()) / ort_ms,
            min(&stage["network"]) / ort_min,
            median(stage["total"].clone()) / ort_ms,
            min(&stage["total"]) / ort_min,
        );
    }
    Ok(())
}
