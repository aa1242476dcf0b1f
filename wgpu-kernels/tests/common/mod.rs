//! Shared by the engine's test binaries: one device per process and small graph builders.
#![allow(dead_code)]

use std::sync::OnceLock;

use efq_engine::{Gpu, GpuModel, GpuOptions, Images, request_blocking};
use efq_shared::graph::{ConvAttrs, Graph, GraphBuilder, Op, Tensor, Weights};
use efq_shared::quant::{ActQuant, QuantWeights, qmax};
use efq_shared::reference;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The adapter every test uses (lavapipe in CI). Set `EFQ_TEST_POLYFILL=1` to run the whole
/// suite through the dot4 polyfill instead of the native built-ins.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let options = GpuOptions {
            force_polyfill: std::env::var_os("EFQ_TEST_POLYFILL").is_some(),
            ..Default::default()
        };
        request_blocking(&options)
            .unwrap_or_else(|e| panic!("the engine tests need a GPU adapter: {e}"))
    })
}

/// The dot4 polyfill.
pub fn polyfill_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        request_blocking(&GpuOptions {
            force_polyfill: true,
            float_dot: false,
            ..Default::default()
        })
        .expect("a GPU adapter")
    })
}

/// The exact f32 multiply-add path, forced on.
pub fn float_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        request_blocking(&GpuOptions {
            float_dot: true,
            ..Default::default()
        })
        .expect("a GPU adapter")
    })
}

/// Subgroup broadcasts off: every invocation reads its own weight words.
pub fn plain_reads_gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        request_blocking(&GpuOptions {
            no_subgroups: true,
            ..Default::default()
        })
        .expect("a GPU adapter")
    })
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Values in [-scale, scale], never all zero.
pub fn random_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// Runs `graph` through the engine (raw output) and through the oracle
/// (`efq_shared::reference`, plain loops).
pub fn engine_and_oracle(
    gpu: &Gpu,
    graph: &Graph,
    input: &[f32],
    batch: usize,
) -> (Vec<f32>, Vec<f32>) {
    let model = GpuModel::from_graph(gpu, graph, 8).expect("engine compiles the graph");
    let got = model
        .forward_blocking(Images::Nchw(input), batch)
        .expect("engine runs");
    let want = reference::forward(graph, input, batch).expect("the oracle runs");
    (got, want)
}

/// Asserts bit-for-bit equality and says where the first difference is.
pub fn assert_bit_exact(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let diffs = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    if let Some(i) = got
        .iter()
        .zip(want)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        panic!(
            "{what}: {diffs} of {} values differ; first at {i}: engine {} vs oracle {}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// Half the time below 8 bits, an activation grid split unevenly around zero (`[lo, lo +
/// 2·qmax]`, any `lo` that keeps zero on the grid); otherwise the symmetric one.
pub fn random_levels(r: &mut ChaCha8Rng, bits: u8) -> Option<[i32; 2]> {
    let q = qmax(bits);
    (bits < 8 && r.random_bool(0.5)).then(|| {
        let lo = r.random_range(-2 * q..=0);
        [lo, lo + 2 * q]
    })
}

/// A convolution layer's description for the property tests.
#[derive(Clone, Debug)]
pub struct ConvCase {
    pub batch: usize,
    pub in_c: usize,
    pub h: usize,
    pub w: usize,
    pub out_c: usize,
    pub kernel: [usize; 2],
    pub attrs: ConvAttrs,
    /// `None`: float weights and input.
    pub bits: Option<(u8, u8)>,
    pub prelu: bool,
    pub seed: u64,
}

/// `input → conv (→ PReLU) → flatten`, quantized as the case says; with the input batch.
pub fn conv_graph(case: &ConvCase) -> (Graph, Vec<f32>) {
    let mut r = rng(case.seed);
    let cg = case.in_c / case.attrs.group;
    let [kh, kw] = case.kernel;
    let n = case.out_c * cg * kh * kw;
    let w = Tensor::new(vec![case.out_c, cg, kh, kw], random_vec(&mut r, n, 0.5)).unwrap();
    let bias = random_vec(&mut r, case.out_c, 0.3);
    let mut input = random_vec(&mut r, case.batch * case.in_c * case.h * case.w, 2.0);
    let (weights, input_quant) = match case.bits {
        Some((wb, ab)) if case.seed.is_multiple_of(2) => {
            // A power-of-two scale makes x · (1/s) exact, so inputs on half-integer multiples
            // of s land exactly on rounding ties (half to even) and beyond the clamp.
            let scale = 0.125f32;
            let levels = random_levels(&mut r, ab);
            let [lo, hi] = levels.unwrap_or([-qmax(ab), qmax(ab)]);
            for v in input.iter_mut() {
                *v = (r.random_range(lo - 2..=hi + 2) as f32 + 0.5 * r.random_range(0..=1) as f32)
                    * scale;
            }
            (
                Weights::Quant(QuantWeights::from_float(&w, wb).unwrap()),
                Some(ActQuant {
                    bits: ab,
                    scale,
                    levels,
                }),
            )
        }
        Some((wb, ab)) => {
            let range = input.iter().fold(0f32, |m, v| m.max(v.abs())) * r.random_range(0.6..1.0);
            let aq = ActQuant {
                levels: random_levels(&mut r, ab),
                ..ActQuant::from_range(ab, range).unwrap()
            };
            (
                Weights::Quant(QuantWeights::from_float(&w, wb).unwrap()),
                Some(aq),
            )
        }
        None => (Weights::Float(w), None),
    };
    let mut b = GraphBuilder::new("conv-case", [case.in_c, case.h, case.w]);
    let mut y = b.push(
        "conv",
        Op::Conv {
            weights,
            bias,
            attrs: case.attrs,
            input_quant,
        },
        &[GraphBuilder::INPUT],
    );
    if case.prelu {
        let slope = random_vec(&mut r, case.out_c, 0.5);
        y = b.push("prelu", Op::PRelu { slope }, &[y]);
    }
    let y = b.push("flatten", Op::Flatten, &[y]);
    (b.finish(y).expect("valid case"), input)
}
