//! Channel equalization: a function-preserving rescaling of a float graph that lets one
//! per-tensor activation scale serve channels of very different range.
//!
//! MobileFaceNet's grouped and depthwise layers read the output of a `Conv → PReLU` whose
//! channels differ in range by orders of magnitude; with one activation scale per tensor the
//! quiet channels round to a handful of levels. Multiplying channel `c` of the producer (weights
//! row and bias) by `f[c] > 0` multiplies channel `c` of the PReLU output by `f[c]` (PReLU and
//! ReLU are positively homogeneous per channel), and dividing the consumer's weights that read
//! channel `c` by `f[c]` undoes it.
//!
//! Where the consumer is depthwise (one input channel per output channel) the equalization is
//! free: every weight row of both layers is multiplied by one positive number, so with
//! per-output-channel weight scales their quantized weights do not change, and only the
//! activation grid moves. Where a consumer's output channel reads several input channels
//! (grouped or pointwise convolutions) the factors also move range differences into the
//! consumer's weight rows, which per-channel weight scales cannot absorb: there a partial
//! migration `f[c] = (top / r[c])^α`, α < 1, shares the difficulty between weights and
//! activations (SmoothQuant's trade-off).

use crate::Error;
use crate::graph::{Graph, Op, Weights};

/// One place where the equalization applies: `producer` (a float Conv) feeds, directly or
/// through a PReLU/ReLU read by nothing else, the float Conv `consumer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// Node index of the producing convolution.
    pub producer: usize,
    /// Node index of the consuming convolution.
    pub consumer: usize,
    /// Position of the consumer among the graph's Conv/Gemm nodes (the `k` of calibration's
    /// per-layer observations).
    pub layer: usize,
    /// The consumer reads one input channel per output channel (depthwise): rescaling leaves
    /// both layers' per-channel-quantized weights unchanged.
    pub depthwise: bool,
}

/// Every site of `graph`, in node order.
pub fn sites(graph: &Graph) -> Vec<Site> {
    let uses = graph.use_counts();
    let producer_of = |v| graph.nodes.iter().position(|n| n.output == v);
    let mut out = Vec::new();
    let mut layer = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Conv { .. } | Op::Gemm { .. }) {
            continue;
        }
        let k = layer;
        layer += 1;
        let Op::Conv {
            weights: Weights::Float(w),
            attrs,
            input_quant: None,
            ..
        } = &node.op
        else {
            continue;
        };
        let channels = w.shape[1] * attrs.group;
        let mut v = node.inputs[0];
        if uses[v] != 1 {
            continue;
        }
        let Some(mut p) = producer_of(v) else {
            continue;
        };
        if matches!(graph.nodes[p].op, Op::PRelu { .. } | Op::Relu) {
            v = graph.nodes[p].inputs[0];
            if uses[v] != 1 {
                continue;
            }
            let Some(q) = producer_of(v) else { continue };
            p = q;
        }
        if let Op::Conv {
            weights: Weights::Float(pw),
            input_quant: None,
            ..
        } = &graph.nodes[p].op
            && pw.shape[0] == channels
        {
            out.push(Site {
                producer: p,
                consumer: i,
                layer: k,
                depthwise: w.shape[1] == 1,
            });
        }
    }
    out
}

/// Largest factor one channel may be scaled by: a channel quieter than this fraction of the
/// loudest is (for quantization) dead, and blowing it up further only amplifies noise.
pub const MAX_FACTOR: f32 = 1e3;

/// Factors `(top / absmax[c])^alpha` that bring every channel's observed range (`absmax[c]`, the
/// largest `|x|` seen on the calibration images) towards the loudest channel's (all the way at
/// `alpha` = 1), capped at [`MAX_FACTOR`]; a channel never seen non-zero keeps factor 1.
pub fn factors(absmax: &[f32], alpha: f32) -> Vec<f32> {
    let top = absmax.iter().copied().fold(0f32, f32::max);
    absmax
        .iter()
        .map(|&r| {
            if r > 0.0 && top > 0.0 {
                (top / r).min(MAX_FACTOR).powf(alpha)
            } else {
                1.0
            }
        })
        .collect()
}

type ConvParts<'a> = (Vec<usize>, usize, &'a mut Vec<f32>, &'a mut Vec<f32>);

/// Shape, group count, weights and bias of the float convolution `node`.
fn float_conv(graph: &mut Graph, node: usize) -> Result<ConvParts<'_>, Error> {
    let name = graph.nodes[node].name.clone();
    match &mut graph.nodes[node].op {
        Op::Conv {
            weights: Weights::Float(w),
            bias,
            attrs,
            ..
        } => Ok((w.shape.clone(), attrs.group, &mut w.data, bias)),
        _ => Err(Error::Graph(format!("{name} is not a float convolution"))),
    }
}

/// Applies `factors` (one positive number per channel) at `site`.
pub fn rescale(graph: &mut Graph, site: &Site, factors: &[f32]) -> Result<(), Error> {
    if factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(Error::Graph(
            "channel equalization needs positive finite factors".into(),
        ));
    }
    let (shape, _, w, bias) = float_conv(graph, site.producer)?;
    if shape[0] != factors.len() {
        return Err(Error::Graph(format!(
            "the producer has {} output channels, {} factors given",
            shape[0],
            factors.len()
        )));
    }
    let per = w.len() / shape[0];
    for (c, row) in w.chunks_mut(per).enumerate() {
        row.iter_mut().for_each(|v| *v *= factors[c]);
        bias[c] *= factors[c];
    }
    // Consumer OIHW, O = group · out_per_group, I = in per group: output o reads the input
    // channels of its group.
    let (shape, group, w, _) = float_conv(graph, site.consumer)?;
    let (outs, ins, taps) = (shape[0], shape[1], shape[2] * shape[3]);
    if ins * group != factors.len() {
        return Err(Error::Graph(format!(
            "the consumer reads {} channels, {} factors given",
            ins * group,
            factors.len()
        )));
    }
    for (o, row) in w.chunks_mut(ins * taps).enumerate() {
        let first = o / (outs / group) * ins;
        for (i, col) in row.chunks_mut(taps).enumerate() {
            let f = factors[first + i];
            col.iter_mut().for_each(|v| *v /= f);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::graph::{ConvAttrs, GraphBuilder, Tensor};
    use rand::{Rng, SeedableRng};

    fn conv(rng: &mut impl Rng, o: usize, i: usize, k: usize, group: usize) -> Op {
        let w = (0..o * i * k * k)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Op::Conv {
            weights: Weights::Float(Tensor::new(vec![o, i, k, k], w).unwrap()),
            bias: (0..o).map(|_| rng.random_range(-0.5..0.5)).collect(),
            attrs: ConvAttrs {
                pads: [k / 2; 4],
                group,
                ..Default::default()
            },
            input_quant: None,
        }
    }

    /// pointwise → PReLU → depthwise → PReLU → pointwise → depthwise (no activation between)
    /// → grouped (2 channels per group) → PReLU → pointwise.
    fn net(seed: u64) -> Graph {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut b = GraphBuilder::new("eq", [3, 6, 6]);
        let x = b.push("pw1", conv(&mut rng, 8, 3, 1, 1), &[0]);
        let slope = (0..8).map(|_| rng.random_range(0.0..0.5)).collect();
        let x = b.push("act1", Op::PRelu { slope }, &[x]);
        let x = b.push("dw1", conv(&mut rng, 8, 1, 3, 8), &[x]);
        let slope = (0..8).map(|_| rng.random_range(0.0..0.5)).collect();
        let x = b.push("act2", Op::PRelu { slope }, &[x]);
        let x = b.push("pw2", conv(&mut rng, 4, 8, 1, 1), &[x]);
        let x = b.push("dw2", conv(&mut rng, 4, 1, 3, 4), &[x]);
        let x = b.push("g", conv(&mut rng, 6, 2, 3, 2), &[x]);
        let x = b.push("act3", Op::PRelu { slope: vec![0.25] }, &[x]);
        let x = b.push("pw3", conv(&mut rng, 5, 6, 1, 1), &[x]);
        b.finish(x).unwrap()
    }

    #[test]
    fn sites_are_the_convolutions_behind_a_private_producer() {
        let g = net(1);
        let found: Vec<_> = sites(&g)
            .iter()
            .map(|s| (s.producer, s.consumer, s.layer, s.depthwise))
            .collect();
        assert_eq!(
            found,
            vec![
                (0, 2, 1, true),
                (2, 4, 2, false),
                (4, 5, 3, true),
                (5, 6, 4, false),
                (6, 8, 5, false)
            ]
        );
    }

    #[test]
    fn rescaling_preserves_the_float_function() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let g = net(2);
        let x: Vec<f32> = (0..2 * 3 * 36)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let want = cpu::forward(&g, &x, 2).unwrap();
        let mut h = g.clone();
        for s in sites(&g) {
            let n = match &g.nodes[s.producer].op {
                Op::Conv { weights, .. } => weights.shape()[0],
                _ => unreachable!(),
            };
            let f: Vec<f32> = (0..n)
                .map(|_| 10f32.powf(rng.random_range(-2.0..2.0)))
                .collect();
            rescale(&mut h, &s, &f).unwrap();
        }
        assert_ne!(h, g, "the weights must have moved");
        let got = cpu::forward(&h, &x, 2).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn factors_lift_every_channel_to_the_loudest_within_the_cap() {
        assert_eq!(
            factors(&[2.0, 0.5, 0.0, 1e-6], 1.0),
            vec![1.0, 4.0, 1.0, MAX_FACTOR]
        );
        assert_eq!(factors(&[2.0, 0.5], 0.5), vec![1.0, 2.0]);
    }

    #[test]
    fn rescale_rejects_non_positive_factors_and_wrong_lengths() {
        let mut g = net(3);
        let s = sites(&g)[0];
        assert!(rescale(&mut g, &s, &[1.0; 7]).is_err());
        let mut f = vec![1.0; 8];
        f[3] = 0.0;
        assert!(rescale(&mut g, &s, &f).is_err());
    }
}
