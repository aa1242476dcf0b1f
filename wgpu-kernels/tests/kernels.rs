//! Each kernel against the oracle (`efq_shared::reference`: plain loops, no threads) on random
//! shapes and values. The integer path must agree bit for bit (quantize → dot4 convolution →
//! epilogue → PReLU); the float path within 1e-5 of the output's magnitude.

mod common;

use common::*;
use efq_engine::{GpuModel, Images};
use efq_shared::graph::{ConvAttrs, GraphBuilder, Op, Tensor, Weights};
use efq_shared::quant::{ActQuant, QuantWeights};
use efq_shared::reference;
use proptest::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

fn attrs(stride: usize, pad: [usize; 4], dilation: usize, group: usize) -> ConvAttrs {
    ConvAttrs {
        stride: [stride, stride],
        pads: pad,
        dilation: [dilation, dilation],
        group,
    }
}

/// Random convolution problems: channels per group 1–9, groups 1–3, output channels per group
/// 1–9 (often a multiple of four, the tiled case), kernels up to 3×3, stride and dilation up to
/// 2, asymmetric padding up to 2, batches of 1–3, every weight and activation width.
fn conv_cases(quantized: bool) -> impl Strategy<Value = ConvCase> {
    (
        (
            1usize..=9,
            1usize..=3,
            prop_oneof![1usize..=9, Just(4), Just(8)],
        ),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        (1usize..=3, 0usize..=6, 0usize..=6),
        (2u8..=8, 2u8..=8, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            move |(
                (cg, groups, og),
                (kh, kw, stride, dil),
                pads,
                (batch, dh, dw),
                (wb, ab, prelu, seed),
            )| {
                ConvCase {
                    batch,
                    in_c: cg * groups,
                    h: dil * (kh - 1) + 1 + dh,
                    w: dil * (kw - 1) + 1 + dw,
                    out_c: og * groups,
                    kernel: [kh, kw],
                    attrs: attrs(stride, [pads.0, pads.1, pads.2, pads.3], dil, groups),
                    bits: quantized.then_some((wb, ab)),
                    prelu,
                    seed,
                }
            },
        )
}

/// Depthwise problems (one filter per channel, the MobileFaceNet case) and narrow groups of
/// 2 or 4 input and output channels (MobileFaceNet's first "depthwise" layer).
fn depthwise_cases() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=7, prop_oneof![Just(1usize), Just(2), Just(4)]),
        (1usize..=3, 1usize..=2, 0usize..=1),
        (1usize..=3, 0usize..=6),
        (2u8..=8, 2u8..=8, any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((groups, cg), (k, stride, pad), (batch, extra), (wb, ab, prelu, seed))| ConvCase {
                batch,
                in_c: groups * cg,
                h: k + extra,
                w: k + extra + 1,
                out_c: groups * cg,
                kernel: [k, k],
                attrs: attrs(stride, [pad; 4], 1, groups),
                bits: Some((wb, ab)),
                prelu,
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn integer_conv_matches_the_oracle_bit_for_bit_with_stride_padding_dilation_and_groups(case in conv_cases(true)) {
        let (graph, input) = conv_graph(&case);
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.batch);
        assert_bit_exact(&got, &want, &format!("{case:?}"));
    }

    #[test]
    fn integer_depthwise_and_narrow_group_conv_matches_the_oracle_bit_for_bit(case in depthwise_cases()) {
        let (graph, input) = conv_graph(&case);
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.batch);
        assert_bit_exact(&got, &want, &format!("{case:?}"));
    }

    #[test]
    fn float_conv_matches_the_oracle_within_1e5_relative(case in conv_cases(false)) {
        let (graph, input) = conv_graph(&case);
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.batch);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        prop_assert!(err <= 1e-5 * scale, "max error {err} vs output magnitude {scale}: {case:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn f32_multiply_add_path_gives_the_same_bits_as_the_oracle(case in conv_cases(true)) {
        let (graph, input) = conv_graph(&case);
        let (got, want) = engine_and_oracle(float_gpu(), &graph, &input, case.batch);
        assert_bit_exact(&got, &want, &format!("{case:?}"));
    }

    #[test]
    fn polyfill_dot4_gives_the_same_bits_as_the_oracle(case in conv_cases(true)) {
        let (graph, input) = conv_graph(&case);
        let (got, want) = engine_and_oracle(polyfill_gpu(), &graph, &input, case.batch);
        assert_bit_exact(&got, &want, &format!("{case:?}"));
    }

    /// Outputs past one workgroup of lanes, batches past one tile of four images and past the
    /// model's batch of eight (two submissions), with and without a fused PReLU.
    #[test]
    fn quantized_gemm_after_flatten_matches_the_oracle_bit_for_bit(
        (c, h, w, out, wb, ab, batch, prelu, seed) in (1usize..=9, 1usize..=4, 1usize..=4, 1usize..=80, 2u8..=8, 2u8..=8, 1usize..=10, any::<bool>(), any::<u64>())
    ) {
        let mut r = rng(seed);
        let fin = c * h * w;
        let wt = Tensor::new(vec![out, fin], random_vec(&mut r, out * fin, 0.5)).unwrap();
        let input = random_vec(&mut r, batch * fin, 1.5);
        let mut b = GraphBuilder::new("gemm", [c, h, w]);
        let f = b.push("flatten", Op::Flatten, &[GraphBuilder::INPUT]);
        let y = b.push("fc", Op::Gemm {
            weights: Weights::Quant(QuantWeights::from_float(&wt, wb).unwrap()),
            bias: random_vec(&mut r, out, 0.2),
            input_quant: Some(ActQuant { levels: random_levels(&mut r, ab), ..ActQuant::from_range(ab, 1.2).unwrap() }),
        }, &[f]);
        let y = if prelu {
            b.push("prelu", Op::PRelu { slope: random_vec(&mut r, out, 0.5) }, &[y])
        } else {
            y
        };
        let graph = b.finish(y).unwrap();
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, batch);
        prop_assert!(want.iter().any(|v| *v != 0.0));
        assert_bit_exact(&got, &want, "gemm");
        let (got, _) = engine_and_oracle(polyfill_gpu(), &graph, &input, batch);
        assert_bit_exact(&got, &want, "gemm, polyfill dot4");
    }

    #[test]
    fn affine_prelu_add_relu_match_the_oracle_bit_for_bit(
        (c, h, w, batch, shared_slope, seed) in (1usize..=11, 1usize..=6, 1usize..=6, 1usize..=3, any::<bool>(), any::<u64>())
    ) {
        let mut r = rng(seed);
        let input = random_vec(&mut r, batch * c * h * w, 3.0);
        let mut b = GraphBuilder::new("elementwise", [c, h, w]);
        let a = b.push("bn", Op::Affine { scale: random_vec(&mut r, c, 2.0), shift: random_vec(&mut r, c, 1.0) }, &[GraphBuilder::INPUT]);
        let slope = random_vec(&mut r, if shared_slope { 1 } else { c }, 0.5);
        let p = b.push("prelu", Op::PRelu { slope }, &[a]);
        let s = b.push("add", Op::Add, &[p, GraphBuilder::INPUT]);
        let q = b.push("relu", Op::Relu, &[s]);
        let y = b.push("flatten", Op::Flatten, &[q]);
        let graph = b.finish(y).unwrap();
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, batch);
        assert_bit_exact(&got, &want, "elementwise chain");
    }
}

/// A small FPN's coarse map: a depthwise `factor`×`factor` convolution at stride `factor` of the
/// input (`c` channels).
fn push_coarse_map(b: &mut GraphBuilder, r: &mut ChaCha8Rng, c: usize, factor: usize) -> usize {
    let weights = Tensor::new(
        vec![c, 1, factor, factor],
        random_vec(r, c * factor * factor, 1.0),
    );
    let conv = Op::Conv {
        weights: Weights::Float(weights.unwrap()),
        bias: random_vec(r, c, 0.5),
        attrs: attrs(factor, [0; 4], 1, c),
        input_quant: None,
    };
    b.push("down", conv, &[GraphBuilder::INPUT])
}

/// NCHW planes of `h`×`w` repeated `factor` times along both axes (the oracle's Upsample).
fn upsample_nchw(planes: &[f32], h: usize, w: usize, factor: usize) -> Vec<f32> {
    let (hf, wf) = (h * factor, w * factor);
    (0..planes.len() * factor * factor)
        .map(|i| {
            let (x, y, plane) = (i % wf, (i / wf) % hf, i / (wf * hf));
            planes[(plane * h + y / factor) * w + x / factor]
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A small FPN: an upsampled coarse map added to a fine one, both maps and the sum read
    /// back as separate outputs (a detector's heads), NCHW like the oracle. The coarse map
    /// is a float convolution, which WGSL lets a driver contract into fused multiply-adds
    /// (this test once demanded its bits and failed on an H200's Vulkan driver), so it is held
    /// to the float tolerance; what follows it must be exact given the engine's own coarse map:
    /// the upsample a copy, the lateral add and ReLU one correctly rounded f32 operation.
    #[test]
    fn upsample_and_several_outputs_are_exact_given_the_float_conv_before_them(
        (c, h, w, factor, batch, seed) in (1usize..=9, 1usize..=5, 1usize..=5, 1usize..=3, 1usize..=3, any::<u64>())
    ) {
        let mut r = rng(seed);
        let input = random_vec(&mut r, batch * c * h * w * factor * factor, 2.0);
        let mut b = GraphBuilder::new("fpn", [c, h * factor, w * factor]);
        let coarse = push_coarse_map(&mut b, &mut r, c, factor);
        let up = b.push("up", Op::Upsample { factor }, &[coarse]);
        let sum = b.push("lateral", Op::Add, &[up, GraphBuilder::INPUT]);
        let y = b.push("relu", Op::Relu, &[sum]);
        let graph = b.finish(y).unwrap();
        let outputs = [coarse, up, y];
        let model = GpuModel::from_graph_with_outputs(gpu(), &graph, &outputs, 4).unwrap();
        let got = model.forward_values_blocking(Images::Nchw(&input), batch).unwrap();
        let want = reference::forward_values(&graph, &input, batch, &outputs).unwrap();
        prop_assert_eq!(got.len(), 3);

        let scale = want[0].iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = got[0].iter().zip(&want[0]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        prop_assert!(err <= 1e-5 * scale, "coarse map: max error {err} vs magnitude {scale}");

        let upsampled = upsample_nchw(&got[0], h, w, factor);
        assert_bit_exact(&got[1], &upsampled, "upsample of the engine's coarse map");
        let lateral: Vec<f32> = got[1].iter().zip(&input).map(|(u, x)| (u + x).max(0.0)).collect();
        assert_bit_exact(&got[2], &lateral, "relu(upsample + input)");
    }

    /// The same FPN with the upsampled map read only by the Add (either operand): where its
    /// channels come in fours the two run as one pass that never writes the upsampled map
    /// (`UpsampleAdd`), otherwise apart; the sum is exact either way given the engine's coarse
    /// map.
    #[test]
    fn upsample_read_only_by_an_add_runs_in_its_pass_and_stays_exact(
        (c, h, w, factor, batch, up_first, seed) in (prop_oneof![Just(3usize), Just(4), Just(8), Just(12)], 1usize..=6, 1usize..=6, 1usize..=3, 1usize..=3, any::<bool>(), any::<u64>())
    ) {
        let mut r = rng(seed);
        let input = random_vec(&mut r, batch * c * h * w * factor * factor, 2.0);
        let mut b = GraphBuilder::new("fpn", [c, h * factor, w * factor]);
        let coarse = push_coarse_map(&mut b, &mut r, c, factor);
        let up = b.push("up", Op::Upsample { factor }, &[coarse]);
        let operands = if up_first { [up, GraphBuilder::INPUT] } else { [GraphBuilder::INPUT, up] };
        let sum = b.push("lateral", Op::Add, &operands);
        let graph = b.finish(sum).unwrap();
        let outputs = [coarse, sum];
        let model = GpuModel::from_graph_with_outputs(gpu(), &graph, &outputs, 4).unwrap();
        let got = model.forward_values_blocking(Images::Nchw(&input), batch).unwrap();

        // Either operand order: f32 addition commutes bit for bit.
        let want: Vec<f32> = upsample_nchw(&got[0], h, w, factor).iter().zip(&input).map(|(u, x)| u + x).collect();
        assert_bit_exact(&got[1], &want, "upsample + input");
        let kernels: Vec<&str> = model.profile(&input, batch).unwrap().iter().map(|row| row.kernel).collect();
        prop_assert_eq!(kernels.contains(&"UpsampleAdd"), c % 4 == 0, "{:?}", kernels);
        prop_assert_eq!(kernels.contains(&"Upsample"), c % 4 != 0, "{:?}", kernels);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Convolutions that read one value with one geometry and are only read back (a
    /// detector's heads) run as one convolution whose output channels are theirs side by side
    /// (padded to fours), each read back from its own channels; a sibling whose output the
    /// graph reads further (`used`) stays on its own. Each output as the oracle's: exact for
    /// 1×1 on software rasterisers, else within 1e-5 relative.
    #[test]
    fn sibling_convolutions_read_back_as_separate_outputs_match_the_oracle(
        (in_words, h, w, k, batch, used, seed) in (1usize..=3, 1usize..=7, 1usize..=7, prop_oneof![Just(1usize), Just(3)], 1usize..=2, 0usize..=3, any::<u64>()),
        outs in proptest::collection::vec(1usize..=21, 2..=4),
    ) {
        let mut r = rng(seed);
        let c = 4 * in_words;
        let input = random_vec(&mut r, batch * c * h * w, 2.0);
        let mut b = GraphBuilder::new("heads", [c, h, w]);
        let mut heads = Vec::new();
        for (i, &o) in outs.iter().enumerate() {
            heads.push(b.push(format!("head{i}"), Op::Conv {
                weights: Weights::Float(Tensor::new(vec![o, c, k, k], random_vec(&mut r, o * c * k * k, 0.5)).unwrap()),
                bias: random_vec(&mut r, o, 0.3),
                attrs: attrs(1, [k / 2; 4], 1, 1),
                input_quant: None,
            }, &[GraphBuilder::INPUT]));
        }
        // Either one head also feeds the network's output (so it is not fused), or none does.
        let y = match heads.get(used) {
            Some(&v) => b.push("relu", Op::Relu, &[v]),
            None => heads[0],
        };
        let graph = b.finish(y).unwrap();
        let model = GpuModel::from_graph_with_outputs(gpu(), &graph, &heads, 2).unwrap();
        let got = model.forward_values_blocking(Images::Nchw(&input), batch).unwrap();
        let want = reference::forward_values(&graph, &input, batch, &heads).unwrap();
        prop_assert_eq!(got.len(), heads.len());
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g.len(), e.len());
            if k == 1 && gpu().adapter().software {
                assert_bit_exact(g, e, &format!("head {i} of {outs:?}"));
            } else {
                let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let err = g.iter().zip(e).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                prop_assert!(err <= 1e-5 * scale, "head {i} of {outs:?}: max error {err} vs magnitude {scale}");
            }
        }
    }
}

#[test]
fn conv_with_fused_prelu_is_exact_on_a_large_tiled_case() {
    // 64 → 64 channels, 3×3, 28×28 with padding: many tiles in both dispatch dimensions.
    let case = ConvCase {
        batch: 2,
        in_c: 64,
        h: 28,
        w: 28,
        out_c: 64,
        kernel: [3, 3],
        attrs: attrs(1, [1; 4], 1, 1),
        bits: Some((6, 6)),
        prelu: true,
        seed: 7,
    };
    let (graph, input) = conv_graph(&case);
    let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.batch);
    assert!(want.iter().any(|v| *v != 0.0));
    assert_bit_exact(&got, &want, "64×64 3×3 w6a6");
}

#[test]
fn accumulation_stays_exact_beyond_the_f32_integer_range() {
    // 4,096 products of ±127·±127 all of one sign sum to 66 million, past 2^24, where an f32
    // accumulator would start rounding: both multiply paths must still give the exact sum.
    let fin = 4096;
    let mut r = rng(3);
    let mut b = GraphBuilder::new("wide-gemm", [fin, 1, 1]);
    let f = b.push("flatten", Op::Flatten, &[GraphBuilder::INPUT]);
    let mut w = vec![0.5f32; 2 * fin];
    // the second output alternates signs, so its sum is small but its partial sums are not
    for (k, v) in w[fin..].iter_mut().enumerate() {
        *v = if k % 3 == 0 { -0.5 } else { 0.5 };
    }
    let y = b.push(
        "fc",
        Op::Gemm {
            weights: Weights::Quant(
                QuantWeights::from_float(&Tensor::new(vec![2, fin], w).unwrap(), 8).unwrap(),
            ),
            bias: vec![0.25, -0.25],
            input_quant: Some(ActQuant::from_range(8, 1.0).unwrap()),
        },
        &[f],
    );
    let graph = b.finish(y).unwrap();
    let input: Vec<f32> = (0..2 * fin)
        .map(|i| {
            if i < fin {
                1.0
            } else {
                r.random_range(-1.0..1.0)
            }
        })
        .collect();
    for gpu in [gpu(), float_gpu()] {
        let (got, want) = engine_and_oracle(gpu, &graph, &input, 2);
        // acc = 4096·127·127 ≈ 6.6e7 > 2^24, so y = acc·(1/127)·(0.5/127) + 0.25 ≈ 2048.25
        assert!((want[0] - 2048.25).abs() < 0.01, "{}", want[0]);
        assert_bit_exact(&got, &want, "4096-wide Gemm");
    }
}

/// Float convolutions with their own kernels: input channels per group in fours (read as
/// vec4 words), and depthwise layers over channels in fours (3×3 at stride 1 or 2 has its own
/// kernel; other sizes, strides and dilations fall back to the general one). Odd sizes,
/// asymmetric padding, batches past one, with a PReLU, a ReLU (fused into the float
/// convolution) or neither.
#[derive(Clone, Debug)]
struct FloatCase {
    conv: ConvCase,
    /// 0: none, 1: PReLU, 2: ReLU.
    activation: u8,
}

fn float_case_graph(case: &FloatCase) -> (efq_shared::graph::Graph, Vec<f32>) {
    let c = &case.conv;
    let mut r = rng(c.seed);
    let cg = c.in_c / c.attrs.group;
    let [kh, kw] = c.kernel;
    let w = Tensor::new(
        vec![c.out_c, cg, kh, kw],
        random_vec(&mut r, c.out_c * cg * kh * kw, 0.5),
    )
    .unwrap();
    let bias = random_vec(&mut r, c.out_c, 0.3);
    let input = random_vec(&mut r, c.batch * c.in_c * c.h * c.w, 2.0);
    let mut b = GraphBuilder::new("float-case", [c.in_c, c.h, c.w]);
    let mut y = b.push(
        "conv",
        Op::Conv {
            weights: Weights::Float(w),
            bias,
            attrs: c.attrs,
            input_quant: None,
        },
        &[GraphBuilder::INPUT],
    );
    match case.activation {
        1 => {
            let n = if c.seed.is_multiple_of(3) { 1 } else { c.out_c };
            let slope = random_vec(&mut r, n, 0.5);
            y = b.push("prelu", Op::PRelu { slope }, &[y]);
        }
        2 => y = b.push("relu", Op::Relu, &[y]),
        _ => {}
    }
    let y = b.push("flatten", Op::Flatten, &[y]);
    (b.finish(y).expect("valid case"), input)
}

fn float_word_cases() -> impl Strategy<Value = FloatCase> {
    (
        (
            1usize..=3,
            1usize..=2,
            prop_oneof![1usize..=9, Just(4), Just(8)],
        ),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        (1usize..=3, 0usize..=7, 0usize..=7),
        (0u8..=2, any::<u64>()),
    )
        .prop_map(
            |((words, groups, og), (kh, kw, stride, dil), pads, (batch, dh, dw), (act, seed))| {
                FloatCase {
                    conv: ConvCase {
                        batch,
                        in_c: 4 * words * groups,
                        h: dil * (kh - 1) + 1 + dh,
                        w: dil * (kw - 1) + 1 + dw,
                        out_c: og * groups,
                        kernel: [kh, kw],
                        attrs: attrs(stride, [pads.0, pads.1, pads.2, pads.3], dil, groups),
                        bits: None,
                        prelu: false,
                        seed,
                    },
                    activation: act,
                }
            },
        )
}

fn float_depthwise_cases() -> impl Strategy<Value = FloatCase> {
    (
        (1usize..=6, prop_oneof![4 => Just(3usize), 1 => 1usize..=2]),
        (1usize..=2, prop_oneof![4 => Just(1usize), 1 => Just(2)]),
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        (1usize..=3, 0usize..=11, 0usize..=11),
        (0u8..=2, any::<u64>()),
    )
        .prop_map(
            |((words, k), (stride, dil), pads, (batch, dh, dw), (act, seed))| {
                let c = 4 * words;
                FloatCase {
                    conv: ConvCase {
                        batch,
                        in_c: c,
                        h: dil * (k - 1) + 1 + dh,
                        w: dil * (k - 1) + 1 + dw,
                        out_c: c,
                        kernel: [k, k],
                        attrs: attrs(stride, [pads.0, pads.1, pads.2, pads.3], dil, c),
                        bits: None,
                        prelu: false,
                        seed,
                    },
                    activation: act,
                }
            },
        )
}

/// One group, output channels in fours (conv_f32_block.wgsl's 16-pixel blocks of 8 or 16
/// output channels, and conv_f32_block_narrow.wgsl's when the input channels are not in fours:
/// 1–9 of them as often as 4–20): output channel counts that are not multiples of the channel
/// tile (4–24: 8 and 16; 28, 32 and 64: the 32-channel block of 8 pixels), pixel counts not
/// multiples of the block, 1×1 at stride 1 without padding (its pointwise form) as often as
/// the rest.
fn float_block_cases() -> impl Strategy<Value = FloatCase> {
    (
        (
            prop_oneof![(1usize..=5).prop_map(|w| 4 * w), 1usize..=9],
            prop_oneof![1usize..=6, Just(4), Just(5), 7usize..=8, Just(16)],
        ),
        prop_oneof![
            1 => Just((1usize, 1usize, 1usize, 1usize, [0usize; 4])),
            1 => ((1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2), (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2))
                .prop_map(|((kh, kw, s, d), p)| (kh, kw, s, d, [p.0, p.1, p.2, p.3])),
        ],
        (1usize..=3, 0usize..=9, 0usize..=9),
        (0u8..=2, any::<u64>()),
    )
        .prop_map(
            |((in_c, out_words), (kh, kw, stride, dil, pads), (batch, dh, dw), (act, seed))| {
                FloatCase {
                    conv: ConvCase {
                        batch,
                        in_c,
                        h: dil * (kh - 1) + 1 + dh,
                        w: dil * (kw - 1) + 1 + dw,
                        out_c: 4 * out_words,
                        kernel: [kh, kw],
                        attrs: attrs(stride, pads, dil, 1),
                        bits: None,
                        prelu: false,
                        seed,
                    },
                    activation: act,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The blocks sum over taps, then input channels; the oracle over input channels, then
    /// taps. With one tap (1×1) that is the same order, so where the driver keeps each multiply
    /// and add rounded on its own (software rasterisers) the bits are the oracle's; with more
    /// taps, or on a GPU that may fuse them (WGSL allows it), the float tolerance.
    #[test]
    fn float_conv_in_pixel_blocks_is_exact_for_1x1_and_within_1e5_relative_otherwise(case in float_block_cases()) {
        let (graph, input) = float_case_graph(&case);
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.conv.batch);
        if case.conv.kernel == [1, 1] && gpu().adapter().software {
            assert_bit_exact(&got, &want, &format!("{case:?}"));
        } else {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            prop_assert!(err <= 1e-5 * scale, "max error {err} vs output magnitude {scale}: {case:?}");
        }
        // Weight words shared by subgroup broadcasts (where the device has them) or read by
        // every invocation: the same values in the same order, so the same bits.
        let (plain, _) = engine_and_oracle(plain_reads_gpu(), &graph, &input, case.conv.batch);
        assert_bit_exact(&got, &plain, &format!("subgroup against plain reads: {case:?}"));
    }

    #[test]
    fn float_conv_in_words_of_four_matches_the_oracle_within_1e5_relative(case in float_word_cases()) {
        let (graph, input) = float_case_graph(&case);
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.conv.batch);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        prop_assert!(err <= 1e-5 * scale, "max error {err} vs output magnitude {scale}: {case:?}");
    }

    /// The depthwise kernel sums the taps in the oracle's order, so where the driver keeps
    /// each multiply and add rounded on its own (software rasterisers) the bits are the
    /// oracle's; a GPU compiler may fuse them (WGSL allows it), so there the float tolerance.
    #[test]
    fn float_depthwise_conv_matches_the_oracle(case in float_depthwise_cases()) {
        let (graph, input) = float_case_graph(&case);
        let (got, want) = engine_and_oracle(gpu(), &graph, &input, case.conv.batch);
        if gpu().adapter().software {
            assert_bit_exact(&got, &want, &format!("{case:?}"));
        } else {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            prop_assert!(err <= 1e-5 * scale, "max error {err} vs output magnitude {scale}: {case:?}");
        }
        // The nine weight words by subgroup broadcast or read by every invocation: same bits.
        let (plain, _) = engine_and_oracle(plain_reads_gpu(), &graph, &input, case.conv.batch);
        assert_bit_exact(&got, &plain, &format!("subgroup against plain reads: {case:?}"));
    }
}
