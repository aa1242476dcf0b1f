//! The fast CPU backend: float32 for an unquantized graph and the exact integer path for a
//! quantized one, on all of rayon's threads (Web Workers in the browser's `threads` build). It
//! is what runs models on the CPU (the trainer's `--backend cpu`, calibration, the detector, the
//! browser without WebGPU) and the engine's CPU fallback.
//!
//! It is optimised (one image per task, fused epilogues, f32-exact grouped sums, an i16-pair
//! integer product), so it is not its own proof: [`crate::reference`] is the oracle, plain loops
//! that compute the same integer arithmetic, and `shared/tests/cpu_matches_oracle.rs` checks
//! this backend against it on random graphs (bit for bit when quantized). The arithmetic both
//! must share, quantizing an activation and dequantizing a sum, lives in [`crate::quant`].
//!
//! Files by concern: this one the layer loop; `conv` the float convolution and the geometry;
//! `depthwise` and `rows` its depthwise row loops; `gemm_fma` its product in a relaxed-SIMD
//! wasm build; `conv_int` the integer convolution; `grouped` its depthwise/grouped form; `gemm`
//! the fully-connected layer; `int_gemm` the i8 matrix product; `quantize` the way into and out of
//! the integer grid; `elementwise` affine, PReLU, ReLU, Add and upsampling.

mod buffers;
mod conv;
mod conv_int;
mod depthwise;
mod elementwise;
mod gemm;
mod gemm_fma;
mod grouped;
mod int_gemm;
mod quantize;
mod rows;

pub use conv::{ConvGeometry, conv_f32};
pub use conv_int::conv_int_acc;
pub use gemm::{dot_i8, gemm_f32, gemm_int_acc};
pub use quantize::{dequantize_acc, quantize_activations};

use crate::Error;
use crate::graph::{Graph, Node, Op, ValueId, Weights};
use conv::{conv_f32_stacked, conv_f32_then};
use conv_int::conv_int;
use elementwise::{elementwise, upsample_nearest};
use gemm::gemm_int;
use quantize::fake_quant;
use rayon::prelude::*;

/// Runs `graph` on a batch of NCHW images; returns `batch × dim` raw (unnormalised) embeddings.
pub fn forward(graph: &Graph, input: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
    let mut out = forward_values(graph, input, batch, &[graph.output])?;
    Ok(out.pop().expect("one output asked for"))
}

/// Runs `graph` and returns the values `outputs` (each `batch ×` its shape, NCHW): models with
/// several outputs, such as a detector's heads.
///
/// A batch runs as one forward pass per image, the images spread over rayon's threads: one
/// image's activations stay in cache where a whole batch's stream through memory at every
/// layer (single-threaded in the browser, batch 32 ran at 0.8× the rate of batch 1), and whole
/// images are the coarsest, cheapest unit of parallel work. A single image's layers are split
/// across threads instead. Every path computes each value the same way, so the result does not
/// depend on the batch size or the number of threads.
pub fn forward_values(
    graph: &Graph,
    input: &[f32],
    batch: usize,
    outputs: &[ValueId],
) -> Result<Vec<Vec<f32>>, Error> {
    check_input(graph, input, batch)?;
    if batch == 1 {
        return run(graph, input, 1, outputs, &mut |_, _| {}, &mut |_| {});
    }
    let per: usize = graph.input_shape.iter().product();
    let images: Vec<Vec<Vec<f32>>> = input
        .par_chunks(per)
        .map(|x| run(graph, x, 1, outputs, &mut |_, _| {}, &mut |_| {}))
        .collect::<Result<_, _>>()?;
    Ok((0..outputs.len())
        .map(|o| images.iter().flat_map(|v| v[o].iter().copied()).collect())
        .collect())
}

fn check_input(graph: &Graph, input: &[f32], batch: usize) -> Result<(), Error> {
    let per: usize = graph.input_shape.iter().product();
    if batch == 0 || input.len() != batch * per {
        return Err(Error::Input(format!(
            "expected {batch} images of shape {:?} ({} values), got {} values",
            graph.input_shape,
            batch * per,
            input.len()
        )));
    }
    Ok(())
}

/// Like [`forward`], calling `observe(k, x)` with the input of the k-th Conv/Gemm before it runs.
pub fn forward_observed(
    graph: &Graph,
    input: &[f32],
    batch: usize,
    observe: &mut (dyn FnMut(usize, &[f32]) + Send),
) -> Result<Vec<f32>, Error> {
    let mut out = run(graph, input, batch, &[graph.output], observe, &mut |_| {})?;
    Ok(out.pop().expect("one output asked for"))
}

/// Like [`forward_values`] on one image, calling `done(i)` as soon as node `i` of
/// `graph.nodes` has run (a PReLU fused into the convolution before it is reported with it):
/// a profiler times the layers by reading a clock in `done`, which this crate cannot do itself
/// on wasm32-unknown-unknown.
pub fn forward_values_traced(
    graph: &Graph,
    input: &[f32],
    outputs: &[ValueId],
    done: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Vec<f32>>, Error> {
    run(graph, input, 1, outputs, &mut |_, _| {}, done)
}

/// Runs the layers on a thread of rayon's pool: the caller waits once per forward pass instead
/// of once per parallel loop (hundreds per pass; with one worker thread those hand-offs made a
/// pass ~1.7× slower in an A/B).
fn run(
    graph: &Graph,
    input: &[f32],
    batch: usize,
    outputs: &[ValueId],
    observe: &mut (dyn FnMut(usize, &[f32]) + Send),
    done: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Vec<f32>>, Error> {
    rayon::scope(|_| run_layers(graph, input, batch, outputs, observe, done))
}

fn run_layers(
    graph: &Graph,
    input: &[f32],
    batch: usize,
    outputs: &[ValueId],
    observe: &mut (dyn FnMut(usize, &[f32]) + Send),
    done: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Vec<f32>>, Error> {
    let shapes = graph.infer_shapes()?;
    if let Some(v) = outputs.iter().find(|&&v| v >= graph.num_values) {
        return Err(Error::Graph(format!("output value {v} out of range")));
    }
    check_input(graph, input, batch)?;
    let mut remaining = graph.use_counts();
    for &v in outputs {
        remaining[v] += 1;
    }
    let mut values: Vec<Option<Vec<f32>>> = vec![None; graph.num_values];
    let mut x = buffers::take(input.len());
    x.copy_from_slice(input);
    values[0] = Some(x);
    let mut layer = 0;
    let uses = graph.use_counts();
    let mut nodes = graph.nodes.iter().enumerate().peekable();
    while let Some((index, node)) = nodes.next() {
        let (i0, xs, ys) = (
            node.inputs[0],
            &shapes[node.inputs[0]],
            &shapes[node.output],
        );
        // Element-wise layers work in place on their input's buffer when they are its last
        // reader (no copy of a whole activation tensor per layer).
        let last_reader = remaining[i0] == 1 && node.inputs[1..].iter().all(|&j| j != i0);
        if let Some(y) = elementwise(node, xs, &mut values, last_reader) {
            release_inputs(node, &mut remaining, &mut values);
            values[node.output] = Some(y);
            done(index);
            continue;
        }
        // Float convolutions that read the same input with the same geometry as this one,
        // right after it (SCRFD's three heads per stride), run as one.
        let siblings = graph.nodes[index + 1..]
            .iter()
            .take_while(|next| stackable(node, next))
            .count();
        if siblings > 0 {
            let x = values[i0]
                .as_ref()
                .expect("topological order checked by infer_shapes");
            let group = &graph.nodes[index..=index + siblings];
            let mut convs = Vec::new();
            for conv in group {
                observe(layer, x);
                layer += 1;
                if let Op::Conv {
                    weights: Weights::Float(wt),
                    bias,
                    ..
                } = &conv.op
                {
                    convs.push((wt, bias.as_slice()));
                }
            }
            let Op::Conv { attrs, .. } = &node.op else {
                unreachable!("stackable checked it")
            };
            let geo = ConvGeometry {
                batch,
                c: xs[0],
                h: xs[1],
                w: xs[2],
                oh: ys[1],
                ow: ys[2],
                attrs: *attrs,
            };
            let ys = conv_f32_stacked(x, &geo, &convs);
            for (j, (conv, y)) in group.iter().zip(ys).enumerate() {
                if j > 0 {
                    nodes.next();
                }
                release_inputs(conv, &mut remaining, &mut values);
                values[conv.output] = Some(y);
                done(index + j);
            }
            continue;
        }
        // A PReLU that is the only reader of an integer convolution runs in the convolution's
        // dequantization pass (MobileFaceNet: every convolution but the linear ones), a ReLU
        // that is the only reader of a float convolution in its bias pass (SCRFD).
        let (int_conv, float_conv) = match &node.op {
            Op::Conv {
                weights: Weights::Quant(_),
                input_quant: Some(_),
                ..
            } => (true, false),
            Op::Conv {
                weights: Weights::Float(_),
                ..
            } => (false, true),
            _ => (false, false),
        };
        let fused = match nodes.peek().map(|&(_, next)| next) {
            Some(next)
                if uses[node.output] == 1
                    && next.inputs[0] == node.output
                    && !outputs.contains(&node.output) =>
            {
                match &next.op {
                    Op::PRelu { slope } if int_conv => Some((next, Some(slope.as_slice()))),
                    Op::Relu if float_conv => Some((next, None)),
                    _ => None,
                }
            }
            _ => None,
        };
        let fused_prelu = fused.and_then(|(_, slope)| slope);
        let fused_relu = fused.is_some() && fused_prelu.is_none();
        let x = values[i0]
            .as_ref()
            .expect("topological order checked by infer_shapes");
        let y = match &node.op {
            Op::Conv {
                weights,
                bias,
                attrs,
                input_quant,
            } => {
                observe(layer, x);
                layer += 1;
                let (c, h, w) = (xs[0], xs[1], xs[2]);
                let (oh, ow) = (ys[1], ys[2]);
                let geo = ConvGeometry {
                    batch,
                    c,
                    h,
                    w,
                    oh,
                    ow,
                    attrs: *attrs,
                };
                match (weights, input_quant) {
                    (Weights::Quant(q), Some(aq)) => conv_int(x, &geo, q, bias, aq, fused_prelu),
                    (Weights::Quant(_), None) => {
                        return Err(Error::Graph(format!(
                            "layer '{}' has quantized weights but no input quantization",
                            node.name
                        )));
                    }
                    (Weights::Float(wt), aq) => {
                        let xq = aq.map(|aq| fake_quant(x, &aq));
                        conv_f32_then(xq.as_deref().unwrap_or(x), &geo, wt, bias, fused_relu)
                    }
                }
            }
            Op::Gemm {
                weights,
                bias,
                input_quant,
            } => {
                observe(layer, x);
                layer += 1;
                let fin = xs[0];
                match (weights, input_quant) {
                    (Weights::Quant(q), Some(aq)) => gemm_int(x, batch, fin, q, bias, aq),
                    (Weights::Quant(_), None) => {
                        return Err(Error::Graph(format!(
                            "layer '{}' has quantized weights but no input quantization",
                            node.name
                        )));
                    }
                    (Weights::Float(wt), aq) => {
                        let xq = aq.map(|aq| fake_quant(x, &aq));
                        gemm_f32(xq.as_deref().unwrap_or(x), batch, fin, wt, bias)
                    }
                }
            }
            Op::Affine { .. } | Op::PRelu { .. } | Op::Relu | Op::Add | Op::Flatten => {
                unreachable!("element-wise layers are handled above")
            }
            Op::Upsample { factor } => upsample_nearest(x, batch, xs, *factor),
        };
        release_inputs(node, &mut remaining, &mut values);
        match fused {
            Some((follower, _)) => {
                nodes.next();
                release_inputs(follower, &mut remaining, &mut values);
                values[follower.output] = Some(y);
            }
            _ => values[node.output] = Some(y),
        }
        done(index);
    }
    Ok(outputs
        .iter()
        .map(|&v| values[v].clone().expect("output computed"))
        .collect())
}

/// Whether float convolution `next` reads what float convolution `first` reads, with the same
/// geometry and kernel shape and no groups, so that both can run as one product.
fn stackable(first: &Node, next: &Node) -> bool {
    match (&first.op, &next.op) {
        (
            Op::Conv {
                weights: Weights::Float(a),
                attrs: aa,
                input_quant: None,
                ..
            },
            Op::Conv {
                weights: Weights::Float(b),
                attrs: ab,
                input_quant: None,
                ..
            },
        ) => {
            next.inputs[0] == first.inputs[0]
                && aa == ab
                && aa.group == 1
                && a.shape[1..] == b.shape[1..]
        }
        _ => false,
    }
}

fn release_inputs(node: &Node, remaining: &mut [usize], values: &mut [Option<Vec<f32>>]) {
    for &i in &node.inputs {
        remaining[i] -= 1;
        if remaining[i] == 0
            && let Some(b) = values[i].take()
        {
            buffers::give(b);
        }
    }
}

/// Calibration: the largest |x| seen at the input of every Conv/Gemm, in node order.
pub fn input_absmax(graph: &Graph, input: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
    let mut ranges = Vec::new();
    forward_observed(graph, input, batch, &mut |k, x| {
        let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        if k == ranges.len() {
            ranges.push(m);
        } else {
            ranges[k] = ranges[k].max(m);
        }
    })?;
    Ok(ranges)
}

/// L2-normalises each row of a `rows × dim` matrix in place.
pub fn l2_normalize_rows(m: &mut [f32], dim: usize) {
    for row in m.chunks_mut(dim) {
        let n = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt() as f32;
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}
