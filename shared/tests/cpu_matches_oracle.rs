//! The CPU backend (`efq_shared::cpu`: threads, fused epilogues, f32-exact grouped sums, an
//! i16-pair integer product) against the oracle (`efq_shared::reference`: plain loops) on
//! random small graphs of every op: convolutions with random kernels, strides, asymmetric
//! padding, dilation and groups (depthwise, narrow groups, 1×1), BatchNorm folded into them
//! or left as an affine, PReLU (per channel or shared), ReLU, residual Add, nearest upsampling,
//! and a Flatten → Gemm head, on random batches. Quantized at several widths the two must agree
//! bit for bit; in float, where the backend sums in another order, to f32 rounding.

use efq_shared::builders::{
    random_images, split_activation_grids, tiny_mobilefacenet, tiny_upsampling,
};
use efq_shared::graph::{ConvAttrs, Graph, GraphBuilder, Op, Tensor, ValueId, Weights};
use efq_shared::quant::{QuantConfig, qmax, quantize_graph};
use efq_shared::{cpu, reference};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Uniform values in `[-scale, scale]`.
fn uniform(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-scale..=scale)).collect()
}

/// A random convolution reading `[c, h, w]`: kernel 1–3 per axis, stride 1–2, dilation 1–2,
/// each pad 0–2, and groups of one of four kinds: dense; depthwise; a proper divisor of the
/// channels as the number of groups (groups of 2 channels or more, which the backend runs as
/// direct loops up to 4 and as products beyond); or 1×1 stride 1 unpadded, which it reads in
/// place. Returns the op and its output shape.
fn random_conv(r: &mut ChaCha8Rng, [c, h, w]: [usize; 3]) -> (Op, [usize; 3]) {
    loop {
        // Proper divisors where there are any (a prime count of channels has none).
        let divisors: Vec<usize> = (2..c).filter(|g| c % g == 0).collect();
        let divisors = if divisors.is_empty() {
            vec![1, c]
        } else {
            divisors
        };
        let (group, og, kernel, stride, dilation, pads) = match r.random_range(0..4) {
            0 => (1, r.random_range(1..=12), [1, 1], [1, 1], [1, 1], [0; 4]),
            kind => {
                let group = match kind {
                    1 => 1,
                    2 => c,
                    // Half the time the fewest groups, so the widest ones.
                    _ if r.random_bool(0.5) => divisors[0],
                    _ => divisors[r.random_range(0..divisors.len())],
                };
                // (At most 16 output channels, so that chains of layers stay small.)
                let og = if kind == 2 {
                    1
                } else {
                    r.random_range(1..=4).min(16 / group).max(1)
                };
                (
                    group,
                    og,
                    [r.random_range(1..=3), r.random_range(1..=3)],
                    [r.random_range(1..=2), r.random_range(1..=2)],
                    [r.random_range(1..=2), r.random_range(1..=2)],
                    [0; 4].map(|_: usize| r.random_range(0..=2)),
                )
            }
        };
        let out = |size: usize, axis: usize| {
            let reach = dilation[axis] * (kernel[axis] - 1) + 1;
            (size + pads[axis] + pads[axis + 2])
                .checked_sub(reach)
                .map(|d| d / stride[axis] + 1)
        };
        let (Some(oh), Some(ow)) = (out(h, 0), out(w, 1)) else {
            continue; // the dilated kernel does not fit: draw again
        };
        let o = og * group;
        let cg = c / group;
        let fan_in = (cg * kernel[0] * kernel[1]) as f32;
        let weights = Tensor::new(
            vec![o, cg, kernel[0], kernel[1]],
            uniform(r, o * cg * kernel[0] * kernel[1], 1.5 / fan_in.sqrt()),
        )
        .unwrap();
        let op = Op::Conv {
            weights: Weights::Float(weights),
            bias: uniform(r, o, 0.2),
            attrs: ConvAttrs {
                stride,
                pads,
                dilation,
                group,
            },
            input_quant: None,
        };
        return (op, [o, oh, ow]);
    }
}

fn affine(r: &mut ChaCha8Rng, c: usize) -> Op {
    Op::Affine {
        scale: (0..c).map(|_| r.random_range(0.5..=1.5)).collect(),
        shift: uniform(r, c, 0.3),
    }
}

fn prelu(r: &mut ChaCha8Rng, c: usize) -> Op {
    let n = if r.random_bool(0.3) { 1 } else { c };
    Op::PRelu {
        slope: uniform(r, n, 0.5),
    }
}

/// A random float graph of 2–6 layers on a `[1–12, 3–9, 3–9]` input, drawn from `seed`, with
/// its BatchNorms folded into the convolutions before them where that is exact.
fn random_graph(seed: u64) -> Graph {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let input = [
        r.random_range(1..=12),
        r.random_range(3..=9),
        r.random_range(3..=9),
    ];
    let mut b = GraphBuilder::new("random", input);
    let (mut x, mut shape): (ValueId, [usize; 3]) = (GraphBuilder::INPUT, input);
    for i in 0..r.random_range(2..=6) {
        let name = |what: &str| format!("{what}{i}");
        match r.random_range(0..9) {
            0..=2 => {
                let (op, out) = random_conv(&mut r, shape);
                x = b.push(name("conv"), op, &[x]);
                shape = out;
                // A BatchNorm after the convolution, for fold_batchnorm.
                if r.random_bool(0.4) {
                    x = b.push(name("bn"), affine(&mut r, shape[0]), &[x]);
                }
            }
            3 => x = b.push(name("affine"), affine(&mut r, shape[0]), &[x]),
            4 => x = b.push(name("prelu"), prelu(&mut r, shape[0]), &[x]),
            5 => x = b.push(name("relu"), Op::Relu, &[x]),
            6 => {
                // A residual unit: a shape-keeping 3×3 (or 1×1) convolution added back.
                let k = if r.random_bool(0.5) { 3 } else { 1 };
                let c = shape[0];
                let group = if r.random_bool(0.3) { c } else { 1 };
                let branch = Op::Conv {
                    weights: Weights::Float(
                        Tensor::new(
                            vec![c, c / group, k, k],
                            uniform(&mut r, c * (c / group) * k * k, 0.5),
                        )
                        .unwrap(),
                    ),
                    bias: uniform(&mut r, c, 0.2),
                    attrs: ConvAttrs {
                        pads: [k / 2; 4],
                        group,
                        ..ConvAttrs::default()
                    },
                    input_quant: None,
                };
                let y = b.push(name("branch"), branch, &[x]);
                let y = b.push(name("branch_prelu"), prelu(&mut r, c), &[y]);
                let operands = if r.random_bool(0.5) { [x, y] } else { [y, x] };
                x = b.push(name("add"), Op::Add, &operands);
            }
            7 if shape[1] <= 8 && shape[2] <= 8 => {
                let factor = r.random_range(1..=2);
                x = b.push(name("up"), Op::Upsample { factor }, &[x]);
                shape = [shape[0], shape[1] * factor, shape[2] * factor];
            }
            _ => {}
        }
    }
    if r.random_bool(0.5) {
        let fin: usize = shape.iter().product();
        let out = r.random_range(1..=24);
        let f = b.push("flatten", Op::Flatten, &[x]);
        let fc = Op::Gemm {
            weights: Weights::Float(
                Tensor::new(
                    vec![out, fin],
                    uniform(&mut r, out * fin, 1.5 / (fin as f32).sqrt()),
                )
                .unwrap(),
            ),
            bias: uniform(&mut r, out, 0.2),
            input_quant: None,
        };
        x = b.push("fc", fc, &[f]);
        if r.random_bool(0.5) {
            x = b.push("bn1d", affine(&mut r, out), &[x]);
        }
    }
    let mut g = b.finish(x).expect("a valid random graph");
    if r.random_bool(0.7) {
        g.fold_batchnorm();
    }
    g
}

/// The largest |x| at the input of every Conv/Gemm in node order, measured on the oracle (so
/// that nothing in these tests depends on the backend under test), times `clip` in (0.5, 1]
/// so that some values land beyond the grid's ends.
fn ranges_from_the_oracle(g: &Graph, x: &[f32], batch: usize, r: &mut ChaCha8Rng) -> Vec<f32> {
    let all: Vec<ValueId> = (0..g.num_values).collect();
    let values = reference::forward_values(g, x, batch, &all).unwrap();
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. } | Op::Gemm { .. }))
        .map(|n| {
            let m = values[n.inputs[0]].iter().fold(0f32, |m, v| m.max(v.abs()));
            if m > 0.0 {
                m * r.random_range(0.5..=1.0)
            } else {
                1.0
            }
        })
        .collect()
}

/// `g` quantized at `spec`, sometimes with split activation grids and the first and last
/// layers at the spec's widths too.
fn quantized(g: &Graph, spec: &str, seed: u64) -> Graph {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let calib = random_images(3, g.input_shape, seed);
    let ranges = ranges_from_the_oracle(g, &calib, 3, &mut r);
    let mut cfg = QuantConfig::parse(spec).unwrap();
    cfg.first_last_8bit = r.random_bool(0.5);
    let s = quantize_graph(g, &cfg, &ranges).unwrap();
    if r.random_bool(0.5) {
        split_activation_grids(s)
    } else {
        s
    }
}

/// Makes the first quantized layer's input land on rounding ties and past both ends of its
/// grid: its scale becomes 1/8 (so `x · (1/s)` is exact) and every input a multiple of 1/16.
fn on_ties(g: &mut Graph, x: &mut [f32], r: &mut ChaCha8Rng) {
    let Some(aq) = g.nodes.iter_mut().find_map(|n| match &mut n.op {
        Op::Conv {
            input_quant: Some(aq),
            ..
        } if n.inputs[0] == GraphBuilder::INPUT => Some(aq),
        _ => None,
    }) else {
        return;
    };
    aq.scale = 0.125;
    let [lo, hi] = aq.levels.unwrap_or([-qmax(aq.bits), qmax(aq.bits)]);
    for v in x.iter_mut() {
        *v = (r.random_range(lo - 2..=hi + 2) as f32 + 0.5 * r.random_range(0..=1) as f32) * 0.125;
    }
}

/// Every value of `g` from the backend's fused path (the output), its unfused path (every
/// value kept) and the oracle: `(fused output, unfused values, oracle values)`.
fn both(g: &Graph, x: &[f32], batch: usize) -> (Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let all: Vec<ValueId> = (0..g.num_values).collect();
    let fused = cpu::forward(g, x, batch).expect("the backend runs");
    let unfused = cpu::forward_values(g, x, batch, &all).expect("the backend runs");
    let oracle = reference::forward_values(g, x, batch, &all).expect("the oracle runs");
    (fused, unfused, oracle)
}

/// Equal bits, value by value, naming the first value and element that differ.
fn assert_same_bits(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    for (v, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: value {v} lengths differ");
        if let Some(i) = a
            .iter()
            .zip(b)
            .position(|(p, q)| p.to_bits() != q.to_bits())
        {
            panic!(
                "{what}: value {v} differs first at {i} of {}: got {}, want {}",
                a.len(),
                a[i],
                b[i]
            );
        }
    }
}

/// Every value within `tol` of the largest magnitude of any value up to it (value ids are in
/// topological order): a sum that cancels to a small value still carries the rounding of its
/// large terms, and later layers carry the rounding of earlier ones.
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], tol: f32, what: &str) {
    let mut scale = 1e-6f32;
    for (v, (a, b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: value {v} lengths differ");
        scale = b.iter().fold(scale, |m, x| m.max(x.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            err <= tol * scale,
            "{what}: value {v} off by {err} (largest magnitude so far {scale})"
        );
    }
}

const SPECS: [&str; 6] = ["w8a8", "w6a6", "w4a4", "w4a8", "w2a2", "w4a4-dw8"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The integer path: fused or not, any batch, any width, split grids or not, inputs on
    /// rounding ties or not, the backend gives the oracle's bits for every value.
    #[test]
    fn quantized_random_graphs_equal_the_oracle_bit_for_bit(
        seed in any::<u64>(), spec in 0..SPECS.len(), batch in 1usize..=4, ties in any::<bool>(),
    ) {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut g = quantized(&random_graph(seed), SPECS[spec], seed);
        let mut x = random_images(batch, g.input_shape, seed.wrapping_add(1));
        if ties {
            on_ties(&mut g, &mut x, &mut r);
        }
        let (fused, unfused, oracle) = both(&g, &x, batch);
        let what = format!("{} seed {seed} batch {batch}", SPECS[spec]);
        assert_same_bits(&unfused, &oracle, &what);
        assert_same_bits(&[fused], &oracle[g.output..=g.output], &format!("{what}, fused"));
    }

    /// The float path: the backend's sgemm and depthwise loops sum in another order than the
    /// oracle's, so every value agrees to within 1e-5 of the magnitudes before it.
    #[test]
    fn float_random_graphs_match_the_oracle_to_f32_rounding(
        seed in any::<u64>(), batch in 1usize..=4,
    ) {
        let g = random_graph(seed);
        let x = random_images(batch, g.input_shape, seed.wrapping_add(1));
        let (fused, unfused, oracle) = both(&g, &x, batch);
        let what = format!("float seed {seed} batch {batch}");
        assert_close(&unfused, &oracle, 1e-5, &what);
        // The fused path's bits are the unfused path's (contract.rs checks it for threads).
        assert_same_bits(&[fused], &unfused[g.output..=g.output], &format!("{what}, fused"));
    }
}

/// One convolution of the kinds the backend runs by special paths, on inputs large enough for
/// several tiles of output rows and odd sizes: depthwise 3×3 at horizontal and vertical stride
/// 1 or 2 with any pads 0–2 (the row loops, stride 2 on split even/odd columns), other
/// depthwise kernels and dilations (the generic loops), 1×1 at stride 1 unpadded (read in
/// place) or strided/padded (laid out), and dense 3×3 (tiled patches), each on 1–3 images.
fn special_conv(seed: u64) -> Graph {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let kind = r.random_range(0..5);
    let c = r.random_range(1..=if kind == 4 { 6 } else { 20 });
    let (h, w) = (r.random_range(1..=70), r.random_range(1..=70));
    let stride = [r.random_range(1..=2), r.random_range(1..=2)];
    let pads = [0; 4].map(|_: usize| r.random_range(0..=2));
    let (o, group, kernel, stride, pads, dilation) = match kind {
        0 | 1 => (c, c, [3, 3], stride, pads, [1, 1]),
        2 => (
            c,
            c,
            [r.random_range(1..=5), r.random_range(1..=5)],
            stride,
            pads,
            [r.random_range(1..=2), r.random_range(1..=2)],
        ),
        3 if r.random_bool(0.5) => (r.random_range(1..=40), 1, [1, 1], [1, 1], [0; 4], [1, 1]),
        3 => (r.random_range(1..=40), 1, [1, 1], stride, pads, [1, 1]),
        _ => (r.random_range(1..=40), 1, [3, 3], stride, pads, [1, 1]),
    };
    // Inputs too small for the kernel get the padding they need.
    let fits = |size: usize, axis: usize| {
        size + pads[axis] + pads[axis + 2] > dilation[axis] * (kernel[axis] - 1)
    };
    let (h, w) = (
        if fits(h, 0) {
            h
        } else {
            h + 2 * kernel[0] * dilation[0]
        },
        if fits(w, 1) {
            w
        } else {
            w + 2 * kernel[1] * dilation[1]
        },
    );
    let cg = c / group;
    let n = o * cg * kernel[0] * kernel[1];
    let fan_in = (cg * kernel[0] * kernel[1]) as f32;
    let mut b = GraphBuilder::new("special", [c, h, w]);
    let conv = Op::Conv {
        weights: Weights::Float(
            Tensor::new(
                vec![o, cg, kernel[0], kernel[1]],
                uniform(&mut r, n, 1.5 / fan_in.sqrt()),
            )
            .unwrap(),
        ),
        bias: uniform(&mut r, o, 0.2),
        attrs: ConvAttrs {
            stride,
            pads,
            dilation,
            group,
        },
        input_quant: None,
    };
    let y = b.push("conv", conv, &[GraphBuilder::INPUT]);
    b.finish(y).expect("a valid convolution")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The float convolution's special paths agree with the oracle to f32 rounding.
    #[test]
    fn float_special_convolutions_match_the_oracle(seed in any::<u64>(), batch in 1usize..=3) {
        let g = special_conv(seed);
        let x = random_images(batch, g.input_shape, seed.wrapping_add(1));
        let (fused, unfused, oracle) = both(&g, &x, batch);
        let what = format!("special conv seed {seed} batch {batch}: {:?}", g.nodes[0].op.kind());
        assert_close(&unfused, &oracle, 1e-5, &what);
        assert_same_bits(&[fused], &unfused[g.output..=g.output], &what);
    }
}

/// The toy recognizers the other tests use (MobileFaceNet-shaped; one with an upsampling
/// layer), float and at every width, on a batch of five across the backend's threads.
#[test]
fn the_toy_recognizers_equal_the_oracle_at_every_width() {
    for (name, g) in [
        (
            "tiny_mobilefacenet",
            tiny_mobilefacenet(20, 64, 11).unwrap(),
        ),
        ("tiny_upsampling", tiny_upsampling().unwrap()),
    ] {
        let x = random_images(5, g.input_shape, 21);
        let (fused, unfused, oracle) = both(&g, &x, 5);
        assert_close(&unfused, &oracle, 1e-5, &format!("{name} float"));
        assert_same_bits(&[fused], &unfused[g.output..=g.output], name);
        for spec in SPECS {
            let s = quantized(&g, spec, 3);
            let (fused, unfused, oracle) = both(&s, &x, 5);
            let what = format!("{name} {spec}");
            assert_same_bits(&unfused, &oracle, &what);
            assert_same_bits(&[fused], &oracle[s.output..=s.output], &what);
        }
    }
}
