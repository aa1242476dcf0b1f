//! The engine's time for one float convolution shape, measured as a chain of identical layers
//! (each followed by a ReLU, which fuses into it) so that one layer's cost stands out from the
//! upload, the read-back and the submission: for comparing kernel or tiling changes on a single
//! shape with less noise than a whole network gives.
//!
//! ```sh
//! cargo run --release -p efq-engine --example conv_chain -- CHANNELS SIZE KERNEL [LAYERS] [SECONDS]
//! EFQ_DEPTHWISE=1 cargo run … # one filter per channel instead of a full convolution
//! ```
//! `CHANNELS` in and out, a `SIZE`×`SIZE` input, a `KERNEL`×`KERNEL` convolution padded to keep
//! the size; `LAYERS` (10) of them, run repeatedly for `SECONDS` (3). Prints the fastest and the
//! median pass and the multiply-adds per second of the fastest.

use std::time::Instant;

use efq_engine::{GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::graph::{ConvAttrs, GraphBuilder, Op, Tensor, Weights};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let [c, size, k, ..] = args[..] else {
        return Err("usage: conv_chain CHANNELS SIZE KERNEL [LAYERS] [SECONDS]".into());
    };
    let layers = args.get(3).copied().unwrap_or(10);
    let seconds = args.get(4).copied().unwrap_or(3) as f64;
    let depthwise = std::env::var("EFQ_DEPTHWISE").is_ok_and(|v| v == "1");
    let per_filter = if depthwise { 1 } else { c };

    let mut b = GraphBuilder::new("chain", [c, size, size]);
    let mut y = GraphBuilder::INPUT;
    for i in 0..layers {
        // Small weights that keep the activations in range over many layers.
        let n = c * per_filter * k * k;
        let w: Vec<f32> = (0..n)
            .map(|j| ((j * 7919) % 13) as f32 * 0.01 - 0.06)
            .collect();
        let conv = Op::Conv {
            weights: Weights::Float(Tensor::new(vec![c, per_filter, k, k], w)?),
            bias: vec![0.01; c],
            attrs: ConvAttrs {
                pads: [k / 2; 4],
                group: c / per_filter,
                ..ConvAttrs::default()
            },
            input_quant: None,
        };
        y = b.push(format!("conv{i}"), conv, &[y]);
        y = b.push(format!("relu{i}"), Op::Relu, &[y]);
    }
    let y = b.push("flatten", Op::Flatten, &[y]);
    let graph = b.finish(y)?;

    let gpu = request_blocking(&GpuOptions::default())?;
    let model = GpuModel::from_graph(&gpu, &graph, 1)?;
    let x: Vec<f32> = (0..c * size * size)
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    model.forward_blocking(Images::Nchw(&x), 1)?; // compiles the pipelines
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 3 {
        let t = Instant::now();
        model.forward_blocking(Images::Nchw(&x), 1)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let macs = (c * per_filter * k * k * size * size * layers) as f64;
    let kind = if depthwise { "depthwise" } else { "conv" };
    println!(
        "{layers} × {kind} {c}→{c} {k}×{k} at {size}×{size} on {}: min {:.2} ms, median {:.2} ms \
         over {} passes; {:.1} GMAC/s at the min",
        gpu.adapter().name,
        times[0],
        times[times.len() / 2],
        times.len(),
        macs / times[0] / 1e6
    );
    Ok(())
}
