//! Where the SCRFD detector (a float graph) spends its time on the engine: the network's time
//! for one image and a per-dispatch profile grouped by layer kind (depthwise 3×3, pointwise
//! 1×1, full 3×3, …), for tuning the float convolution on a software rasteriser (lavapipe).
//!
//! ```sh
//! cargo run --release -p efq-engine --example scrfd_profile -- [DETECTOR.onnx] [SIZE] [RUNS]
//! ```
//! The detector defaults to `$EFQ_DETECTOR`, the size to 640, the runs to 3;
//! `EFQ_NO_SUBGROUPS=1` turns the block convolution's subgroup weight reads off (to compare
//! with the plain reads that browsers run); `EFQ_PROFILE_TOP=N` lists the N slowest
//! dispatches (12 by default). The profile times
//! each dispatch in its own submission (the fastest of up to 5 profiles), so its sum differs
//! from the network time; compare kinds by it, and latencies by the `network` line.

use std::collections::BTreeMap;
use std::time::Instant;

use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::detect::Scrfd;
use efq_shared::graph::{Op, Weights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .or_else(|| std::env::var("EFQ_DETECTOR").ok())
        .ok_or("pass the detector's path or set EFQ_DETECTOR")?;
    let size: usize = args.next().map_or(Ok(640), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |s| s.parse())?;

    let det = Scrfd::import_file(&path, [size, size])?;
    let shapes = det.graph.infer_shapes()?;
    // Each conv node's kind, from its weights and attributes and its input's shape.
    let mut kind_of = BTreeMap::new();
    for node in &det.graph.nodes {
        if let Op::Conv { weights, attrs, .. } = &node.op {
            let shape = match weights {
                Weights::Float(w) => w.shape.clone(),
                Weights::Quant(q) => q.shape.clone(),
            };
            let (o, cg, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
            let form = if attrs.group > 1 && cg == 1 {
                "depthwise"
            } else if attrs.group > 1 {
                "grouped"
            } else {
                "full"
            };
            let x = &shapes[node.inputs[0]];
            kind_of.insert(
                node.name.clone(),
                (
                    format!("{form} {kh}x{kw}/s{}", attrs.stride[0]),
                    format!(
                        "{}→{o} {}x{}",
                        x[0],
                        x[1].div_ceil(attrs.stride[0]),
                        x[2].div_ceil(attrs.stride[1])
                    ),
                ),
            );
        }
    }

    let gpu = request_blocking(&GpuOptions {
        no_subgroups: std::env::var("EFQ_NO_SUBGROUPS").is_ok_and(|v| v == "1"),
        ..GpuOptions::default()
    })?;
    println!("subgroup weight reads: {}", gpu.subgroups());
    let model = GpuModel::from_graph_with_outputs(&gpu, &det.graph, &det.head_values(), 1)?;
    // A fixed pseudo-random image: the work does not depend on the pixels.
    let chw: Vec<f32> = (0..3 * size * size)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let t = Instant::now();
    model.forward_values_blocking(Images::Nchw(&chw), 1)?; // compiles the pipelines
    println!(
        "first run (pipelines compiled): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        model.forward_values_blocking(Images::Nchw(&chw), 1)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "network {size}x{size} on {}: median {:.1} ms, min {:.1} ms over {runs} runs ({:?})",
        gpu.adapter().name,
        times[times.len() / 2],
        times[0],
        times.iter().map(|t| t.round()).collect::<Vec<_>>()
    );

    // Each dispatch's fastest of several profiles: one profile's dispatches vary by ±20 % on
    // a busy two-core machine.
    let mut rows = model.profile(&chw, 1)?;
    for _ in 1..runs.min(5) {
        for (r, again) in rows.iter_mut().zip(model.profile(&chw, 1)?) {
            r.seconds = r.seconds.min(again.seconds);
        }
    }
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    let mut by_kind: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in &rows {
        let kind = match kind_of.get(&r.node) {
            Some((k, _)) if r.kernel.starts_with("Conv") => format!("{} {k}", r.kernel),
            _ => r.kernel.to_string(),
        };
        let e = by_kind.entry(kind).or_default();
        e.0 += r.seconds;
        e.1 += 1;
    }
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!(
        "profile: {} dispatches, {:.1} ms summed (one submission each)",
        rows.len(),
        total * 1e3
    );
    for (kind, (s, n)) in &kinds {
        println!(
            "  {:>9.1} ms {:>5.1} %  {n:>3}×  {kind}",
            s * 1e3,
            100.0 * s / total
        );
    }
    let mut slow: Vec<_> = rows.iter().collect();
    slow.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    println!("slowest dispatches:");
    let top = std::env::var("EFQ_PROFILE_TOP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for r in slow.iter().take(top) {
        let (k, s) = kind_of.get(&r.node).cloned().unwrap_or_default();
        println!(
            "  {:>9.1} ms  {:<10} {k:<18} {s:<16} {}",
            r.seconds * 1e3,
            r.kernel,
            r.node
        );
    }
    Ok(())
}
