//! Builders for InsightFace's networks with generated (seeded) weights. No iresnet weights can
//! be downloaded here, so these stand in for them in tests and benchmarks; the graphs have the
//! layout InsightFace's `torch2onnx.py` exports (convolutions carry their folded BatchNorm as a
//! bias, the block-input BatchNorm and the head's BatchNorms stay separate).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Error;
use crate::graph::{ConvAttrs, Graph, GraphBuilder, Op, Tensor, ValueId, Weights};

/// Blocks per stage of InsightFace's iresnet variants.
pub fn iresnet_layers(depth: usize) -> Result<[usize; 4], Error> {
    Ok(match depth {
        18 => [2, 2, 2, 2],
        34 => [3, 4, 6, 3],
        50 => [3, 4, 14, 3],
        100 => [3, 13, 30, 3],
        200 => [6, 26, 60, 6],
        d => {
            return Err(Error::Graph(format!(
                "no iresnet of depth {d} (have 18, 34, 50, 100, 200)"
            )));
        }
    })
}

struct Gen {
    rng: ChaCha8Rng,
}

impl Gen {
    fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(lo..hi)).collect()
    }
    /// He-uniform weights scaled by `gain`: keeps activations O(1) through deep random nets.
    fn conv(&mut self, o: usize, i: usize, k: usize, gain: f32) -> Tensor {
        let fan_in = (i * k * k) as f32;
        let bound = gain * (6.0 / fan_in).sqrt();
        Tensor {
            shape: vec![o, i, k, k],
            data: self.uniform(o * i * k * k, -bound, bound),
        }
    }
    fn affine(&mut self, c: usize, gamma: (f32, f32)) -> Op {
        Op::Affine {
            scale: self.uniform(c, gamma.0, gamma.1),
            shift: self.uniform(c, -0.1, 0.1),
        }
    }
    fn prelu(&mut self, c: usize) -> Op {
        Op::PRelu {
            slope: self.uniform(c, 0.1, 0.3),
        }
    }
}

fn conv_op(w: Tensor, bias: Vec<f32>, stride: usize, pad: usize, group: usize) -> Op {
    Op::Conv {
        weights: Weights::Float(w),
        bias,
        attrs: ConvAttrs {
            stride: [stride; 2],
            pads: [pad; 4],
            dilation: [1, 1],
            group,
        },
        input_quant: None,
    }
}

/// InsightFace iresnet (R18 … R200) for 112×112 input and a 512-d embedding, seeded weights.
pub fn iresnet(depth: usize, seed: u64) -> Result<Graph, Error> {
    let layers = iresnet_layers(depth)?;
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    let mut b = GraphBuilder::new(format!("iresnet{depth}"), [3, 112, 112]);
    // stem: conv3×3 (+BN folded) → PReLU
    let w = g.conv(64, 3, 3, 1.0);
    let bias = g.uniform(64, -0.1, 0.1);
    let mut x = b.push("conv1", conv_op(w, bias, 1, 1, 1), &[GraphBuilder::INPUT]);
    x = b.push("prelu", g.prelu(64), &[x]);
    let mut inplanes = 64;
    for (stage, (&blocks, planes)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
        for blk in 0..blocks {
            let p = format!("layer{}.{blk}", stage + 1);
            let stride = if blk == 0 { 2 } else { 1 };
            let identity: ValueId = if blk == 0 {
                // downsample: conv1×1 (stride) + BN, folded
                let w = g.conv(planes, inplanes, 1, 1.0);
                let bias = g.uniform(planes, -0.1, 0.1);
                b.push(
                    format!("{p}.downsample"),
                    conv_op(w, bias, stride, 0, 1),
                    &[x],
                )
            } else {
                x
            };
            let mut y = b.push(format!("{p}.bn1"), g.affine(inplanes, (0.8, 1.2)), &[x]);
            let w = g.conv(planes, inplanes, 3, 1.0);
            let bias = g.uniform(planes, -0.1, 0.1);
            y = b.push(format!("{p}.conv1"), conv_op(w, bias, 1, 1, 1), &[y]);
            y = b.push(format!("{p}.prelu"), g.prelu(planes), &[y]);
            // A small gain on the residual branch keeps deep random nets from exploding.
            let w = g.conv(planes, planes, 3, 0.3);
            let bias = g.uniform(planes, -0.05, 0.05);
            y = b.push(format!("{p}.conv2"), conv_op(w, bias, stride, 1, 1), &[y]);
            x = b.push(format!("{p}.add"), Op::Add, &[y, identity]);
            inplanes = planes;
        }
    }
    x = b.push("bn2", g.affine(512, (0.8, 1.2)), &[x]);
    x = b.push("flatten", Op::Flatten, &[x]);
    let fin = 512 * 7 * 7;
    let bound = (3.0 / fin as f32).sqrt();
    let w = Tensor {
        shape: vec![512, fin],
        data: g.uniform(512 * fin, -bound, bound),
    };
    x = b.push(
        "fc",
        Op::Gemm {
            weights: Weights::Float(w),
            bias: g.uniform(512, -0.1, 0.1),
            input_quant: None,
        },
        &[x],
    );
    x = b.push("features", g.affine(512, (0.9, 1.1)), &[x]);
    b.finish(x)
}

/// A MobileFaceNet-shaped toy network (depthwise, grouped and pointwise convolutions, PReLU,
/// residual Add, global depthwise conv, Gemm, BN1d) for fast tests on small inputs.
pub fn tiny_mobilefacenet(hw: usize, dim: usize, seed: u64) -> Result<Graph, Error> {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    let mut b = GraphBuilder::new("tiny_mobilefacenet", [3, hw, hw]);
    let conv = |b: &mut GraphBuilder,
                g: &mut Gen,
                name: &str,
                x,
                i: usize,
                o: usize,
                k,
                s,
                p,
                grp: usize| {
        let w = g.conv(o, i / grp, k, 1.0);
        let bias = g.uniform(o, -0.1, 0.1);
        b.push(name, conv_op(w, bias, s, p, grp), &[x])
    };
    let mut x = conv(
        &mut b,
        &mut g,
        "conv1",
        GraphBuilder::INPUT,
        3,
        8,
        3,
        2,
        1,
        1,
    );
    x = b.push("prelu1", g.prelu(8), &[x]);
    x = conv(&mut b, &mut g, "dw1", x, 8, 8, 3, 1, 1, 8);
    x = b.push("prelu2", g.prelu(8), &[x]);
    x = conv(&mut b, &mut g, "pw1", x, 8, 16, 1, 1, 0, 1);
    x = b.push("prelu3", g.prelu(16), &[x]);
    let y = conv(&mut b, &mut g, "gconv", x, 16, 16, 3, 1, 1, 4);
    let y = b.push("prelu4", g.prelu(16), &[y]);
    let y = conv(&mut b, &mut g, "project", y, 16, 16, 1, 1, 0, 1);
    x = b.push("add", Op::Add, &[x, y]);
    x = conv(&mut b, &mut g, "down", x, 16, 32, 3, 2, 1, 1);
    x = b.push("prelu5", g.prelu(32), &[x]);
    let s = hw.div_ceil(2).div_ceil(2);
    x = conv(&mut b, &mut g, "gdc", x, 32, 32, s, 1, 0, 32);
    x = b.push("flatten", Op::Flatten, &[x]);
    let bound = (3.0f32 / 32.0).sqrt();
    let w = Tensor {
        shape: vec![dim, 32],
        data: g.uniform(dim * 32, -bound, bound),
    };
    x = b.push(
        "fc",
        Op::Gemm {
            weights: Weights::Float(w),
            bias: g.uniform(dim, -0.1, 0.1),
            input_quant: None,
        },
        &[x],
    );
    x = b.push("features", g.affine(dim, (0.9, 1.1)), &[x]);
    b.finish(x)
}

/// Seeded pseudo-images in the model's normalised range (−1, 1), NCHW.
pub fn random_images(n: usize, shape: [usize; 3], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

/// A gallery of `n` seeded random `dim`-d faces, three per person ("person 0", …), with
/// threshold 0.3: for the 1:N search benchmarks and tests.
pub fn random_gallery(n: usize, dim: usize, seed: u64) -> crate::gallery::Gallery {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut g = crate::gallery::Gallery::new(dim, "generated", Some(0.3));
    let mut e = vec![0f32; dim];
    for i in 0..n {
        e.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
        g.enroll(&format!("person {}", i / 3), &e)
            .expect("a finite embedding of the gallery's width");
    }
    g
}

/// Gives every quantized input below 8 bits of `g` a split activation grid, `lo = −(k mod
/// (2·qmax + 1))` for the k-th of them: for tests that every implementation follows each
/// layer's own levels (the trainer's calibration chooses them from data).
pub fn split_activation_grids(mut g: Graph) -> Graph {
    let mut k = 0;
    for n in &mut g.nodes {
        if let Op::Conv {
            input_quant: Some(aq),
            ..
        }
        | Op::Gemm {
            input_quant: Some(aq),
            ..
        } = &mut n.op
            && aq.bits < 8
        {
            let q = crate::quant::qmax(aq.bits);
            let lo = -((k * 5 + q / 2) % (2 * q + 1));
            aq.levels = Some([lo, lo + 2 * q]);
            k += 1;
        }
    }
    g
}

/// A small recognizer with an upsampling layer (the op SCRFD's neck uses): a 3×3 convolution
/// down by 4, nearest upsampling ×2, a convolution down by 2, and a 64-d fully-connected head,
/// on 32×32 inputs. Fixed weights; for tests of the upsampling path and of model-file limits.
pub fn tiny_upsampling() -> Result<Graph, Error> {
    let conv = |i: usize, o: usize, s: usize| -> Result<Op, Error> {
        let w = (0..o * i * 9)
            .map(|k| ((k % 7) as f32 - 3.0) * 0.1)
            .collect();
        Ok(conv_op(
            Tensor::new(vec![o, i, 3, 3], w)?,
            vec![0.01; o],
            s,
            1,
            1,
        ))
    };
    let mut b = GraphBuilder::new("up", [3, 32, 32]);
    let x = b.push("down", conv(3, 4, 4)?, &[GraphBuilder::INPUT]);
    let x = b.push("up", Op::Upsample { factor: 2 }, &[x]);
    let x = b.push("down2", conv(4, 4, 2)?, &[x]);
    let x = b.push("flat", Op::Flatten, &[x]);
    let w = (0..64 * 256).map(|k| (k % 5) as f32 * 0.01).collect();
    let fc = Op::Gemm {
        weights: Weights::Float(Tensor::new(vec![64, 256], w)?),
        bias: vec![0.0; 64],
        input_quant: None,
    };
    let x = b.push("fc", fc, &[x]);
    b.finish(x)
}

/// Fresh weights for `graph`'s layers, seeded: He-uniform convolutions and fully-connected
/// layers with zero bias, BatchNorm as identity, PReLU slopes 0.25 (PyTorch's defaults). With
/// a topology taken from a teacher at a smaller width (`prune::apply` with every channel
/// scored alike), this is the student of distillation into a smaller network.
pub fn reinitialize(graph: &mut Graph, seed: u64) {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    for node in &mut graph.nodes {
        match &mut node.op {
            Op::Conv {
                weights: Weights::Float(w),
                bias,
                ..
            }
            | Op::Gemm {
                weights: Weights::Float(w),
                bias,
                ..
            } => {
                let fan_in = (w.numel() / w.shape[0].max(1)).max(1) as f32;
                let bound = (6.0 / fan_in).sqrt();
                w.data = g.uniform(w.numel(), -bound, bound);
                bias.iter_mut().for_each(|b| *b = 0.0);
            }
            Op::Affine { scale, shift } => {
                scale.iter_mut().for_each(|s| *s = 1.0);
                shift.iter_mut().for_each(|s| *s = 0.0);
            }
            Op::PRelu { slope } => slope.iter_mut().for_each(|s| *s = 0.25),
            _ => {}
        }
    }
}
