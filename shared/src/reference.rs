//! The oracle: every op of [`Op`] written as its definition, in plain loops on one thread, so
//! that it can be read in one sitting and believed. It is what the fast backends are tested
//! against: [`crate::cpu`] (`shared/tests/cpu_matches_oracle.rs`) and the WGSL engine
//! (`wgpu-kernels/tests/kernels.rs`), both on random graphs.
//!
//! A quantized layer is computed as docs/quantization.md specifies it, with the contract's own
//! functions from [`crate::quant`]: the input quantized to i8 by [`ActQuant::quantizer`], exact
//! i32 sums of products, then [`quant::dequantize`] with [`ActQuant::multiplier`]. Integer sums
//! do not depend on their order, and everything between matrix products is one f32 operation
//! per value, so a quantized graph must give the backends' results **bit for bit**. A float
//! convolution sums in another order than the backends do (they use sgemm and tiles), so float
//! graphs agree to f32 rounding, and comparisons use a tight relative tolerance.
//!
//! Nothing here is fast (a 112×112 MobileFaceNet takes seconds per image, tens of times the CPU
//! backend's time); use [`crate::cpu`] to run models.

use crate::Error;
use crate::graph::{ConvAttrs, Graph, Op, ValueId, Weights};
use crate::quant::{self, ActQuant};

/// Runs `graph` on a batch of NCHW images; returns `batch ×` the output's shape, raw.
pub fn forward(graph: &Graph, input: &[f32], batch: usize) -> Result<Vec<f32>, Error> {
    let mut out = forward_values(graph, input, batch, &[graph.output])?;
    Ok(out.pop().expect("one output asked for"))
}

/// Runs `graph` and returns the values `outputs`, each `batch ×` its shape in NCHW order (a
/// detector reads several heads).
pub fn forward_values(
    graph: &Graph,
    input: &[f32],
    batch: usize,
    outputs: &[ValueId],
) -> Result<Vec<Vec<f32>>, Error> {
    // The graph's own validation is the only guard: shapes, arities and parameter sizes.
    let shapes = graph.infer_shapes()?;
    let per_image: usize = graph.input_shape.iter().product();
    if batch == 0 || input.len() != batch * per_image {
        return Err(Error::Input(format!(
            "expected {batch} images of shape {:?} ({} values), got {} values",
            graph.input_shape,
            batch * per_image,
            input.len()
        )));
    }
    if let Some(v) = outputs.iter().find(|&&v| v >= graph.num_values) {
        return Err(Error::Graph(format!("output value {v} out of range")));
    }
    // Every value is kept: memory is not this module's concern.
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); graph.num_values];
    values[0] = input.to_vec();
    for node in &graph.nodes {
        let x = &values[node.inputs[0]];
        let xs = &shapes[node.inputs[0]];
        let ys = &shapes[node.output];
        let y = match &node.op {
            Op::Conv {
                weights,
                bias,
                attrs,
                input_quant,
            } => {
                let layer = Layer {
                    weights,
                    bias,
                    input_quant: input_quant.as_ref(),
                };
                layer.run(x, batch, xs, ys, attrs, &node.name)?
            }
            // A fully-connected layer is a 1×1 convolution of a 1×1 image whose channels are
            // the flattened input: `[out, in]` weights read as OIHW `[out, in, 1, 1]`.
            Op::Gemm {
                weights,
                bias,
                input_quant,
            } => {
                let fin = xs.iter().product();
                let layer = Layer {
                    weights,
                    bias,
                    input_quant: input_quant.as_ref(),
                };
                let (xs, ys) = ([fin, 1, 1], [ys[0], 1, 1]);
                layer.run(x, batch, &xs, &ys, &ConvAttrs::default(), &node.name)?
            }
            Op::Affine { scale, shift } => {
                let (c, spatial) = channels(xs);
                (0..x.len())
                    .map(|i| {
                        let ch = (i / spatial) % c;
                        x[i] * scale[ch] + shift[ch]
                    })
                    .collect()
            }
            Op::PRelu { slope } => {
                let (c, spatial) = channels(xs);
                (0..x.len())
                    .map(|i| {
                        let a = if slope.len() == 1 {
                            slope[0]
                        } else {
                            slope[(i / spatial) % c]
                        };
                        if x[i] <= 0.0 { x[i] * a } else { x[i] }
                    })
                    .collect()
            }
            // `max`, not a comparison: it sends NaN to 0 as the CPU backend does.
            Op::Relu => x.iter().map(|v| v.max(0.0)).collect(),
            Op::Add => {
                let b = &values[node.inputs[1]];
                x.iter().zip(b).map(|(a, b)| a + b).collect()
            }
            Op::Flatten => x.clone(),
            Op::Upsample { factor } => {
                let f = *factor;
                let (c, h, w) = (xs[0], xs[1], xs[2]);
                let (oh, ow) = (h * f, w * f);
                let mut y = Vec::with_capacity(x.len() * f * f);
                for n in 0..batch {
                    for ch in 0..c {
                        for i in 0..oh {
                            for j in 0..ow {
                                y.push(x[((n * c + ch) * h + i / f) * w + j / f]);
                            }
                        }
                    }
                }
                y
            }
        };
        values[node.output] = y;
    }
    Ok(outputs.iter().map(|&v| values[v].clone()).collect())
}

/// `(channels, values per channel)` of one image's value: `[C, H, W]` or `[F]` (one per channel).
fn channels(shape: &[usize]) -> (usize, usize) {
    (shape[0], shape[1..].iter().product())
}

/// A convolution's parameters (a Gemm's too, as a 1×1 convolution).
struct Layer<'a> {
    weights: &'a Weights,
    bias: &'a [f32],
    input_quant: Option<&'a ActQuant>,
}

impl Layer<'_> {
    /// The layer on a batch with per-image input shape `xs` and output shape `ys` (`[C, H, W]`).
    fn run(
        &self,
        x: &[f32],
        batch: usize,
        xs: &[usize],
        ys: &[usize],
        attrs: &ConvAttrs,
        name: &str,
    ) -> Result<Vec<f32>, Error> {
        let shape = self.weights.shape();
        let (o, cg, kh, kw) = match shape.len() {
            4 => (shape[0], shape[1], shape[2], shape[3]),
            _ => (shape[0], shape[1], 1, 1),
        };
        let conv = Conv {
            batch,
            input: [xs[0], xs[1], xs[2]],
            output: [o, ys[1], ys[2]],
            kernel: [cg, kh, kw],
            attrs: *attrs,
        };
        // Output (n, oc, …) has channel `oc`: bias and multiplier are per channel.
        let channel = |i: usize| (i / (conv.output[1] * conv.output[2])) % o;
        Ok(match (self.weights, self.input_quant) {
            // The integer path: i8 inputs (widened, so that the products are i32), exact i32
            // sums, the contract's epilogue.
            (Weights::Quant(q), Some(aq)) => {
                let quantizer = aq.quantizer();
                let xq: Vec<i32> = x.iter().map(|&v| quantizer.to_i8(v) as i32).collect();
                let wq: Vec<i32> = q.values.iter().map(|&v| v as i32).collect();
                let sums = conv.sums(&xq, &wq);
                let m: Vec<f32> = q.scales.iter().map(|&s| aq.multiplier(s)).collect();
                (sums.iter().enumerate())
                    .map(|(i, &acc)| quant::dequantize(acc, m[channel(i)], self.bias[channel(i)]))
                    .collect()
            }
            (Weights::Quant(_), None) => {
                return Err(Error::Graph(format!(
                    "layer '{name}' has quantized weights but no input quantization"
                )));
            }
            // Float weights: an f32 sum, on the fake-quantized input if the input is quantized.
            (Weights::Float(w), aq) => {
                let xf: Vec<f32> = match aq {
                    Some(aq) => x.iter().map(|&v| aq.fake_quantize(v)).collect(),
                    None => x.to_vec(),
                };
                let sums = conv.sums(&xf, &w.data);
                (sums.iter().enumerate())
                    .map(|(i, &sum)| sum + self.bias[channel(i)])
                    .collect()
            }
        })
    }
}

/// The geometry of one convolution over a batch.
struct Conv {
    batch: usize,
    /// `[C, H, W]` of one input image.
    input: [usize; 3],
    /// `[O, OH, OW]` of one output image.
    output: [usize; 3],
    /// `[C / group, KH, KW]`: the weights are OIHW `[O, C / group, KH, KW]`.
    kernel: [usize; 3],
    attrs: ConvAttrs,
}

impl Conv {
    /// The convolution's definition, the same loops for exact i32 sums and f32 ones: output
    /// `(n, oc, oy, ox)` is the sum, over the input channels of `oc`'s group and the kernel
    /// taps, of input × weight, where a tap reads input pixel `(oy·stride + ky·dilation −
    /// pad_top, ox·stride + kx·dilation − pad_left)`. Taps in the padding are left out: they
    /// would contribute 0 (the zero point is 0). Returns the sums in NCHW order, no bias.
    fn sums<T>(&self, x: &[T], weights: &[T]) -> Vec<T>
    where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
    {
        let [c, h, w] = self.input;
        let [o, oh, ow] = self.output;
        let [cg, kh, kw] = self.kernel;
        let a = &self.attrs;
        let og = o / a.group;
        let mut y = Vec::with_capacity(self.batch * o * oh * ow);
        for n in 0..self.batch {
            for oc in 0..o {
                let group = oc / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = T::default();
                        for ci in 0..cg {
                            let ch = group * cg + ci;
                            for ky in 0..kh {
                                let iy = (oy * a.stride[0] + ky * a.dilation[0]) as isize
                                    - a.pads[0] as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = (ox * a.stride[1] + kx * a.dilation[1]) as isize
                                        - a.pads[1] as isize;
                                    if ix < 0 || ix >= w as isize {
                                        continue;
                                    }
                                    let input = ((n * c + ch) * h + iy as usize) * w + ix as usize;
                                    let weight = ((oc * cg + ci) * kh + ky) * kw + kx;
                                    sum = sum + x[input] * weights[weight];
                                }
                            }
                        }
                        y.push(sum);
                    }
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphBuilder, Tensor};
    use crate::quant::QuantWeights;

    /// The oracle on a convolution worked by hand: the 3×3 image 1…9, the 2×2 kernel [1 2; 3 4],
    /// stride 2, one pixel of padding on top and left. Output (oy, ox) reads input pixel
    /// (2·oy + ky − 1, 2·ox + kx − 1): (0,0) only 1·4; (0,1) 2·3 + 3·4; (1,0) 4·2 + 7·4; (1,1)
    /// 5·1 + 6·2 + 8·3 + 9·4. Quantized at 4 bits with scale 1, the inputs 8 and 9 clamp to 7.
    #[test]
    fn a_convolution_worked_by_hand() {
        let attrs = ConvAttrs {
            stride: [2, 2],
            pads: [1, 1, 0, 0],
            ..ConvAttrs::default()
        };
        let kernel = Tensor::new(vec![1, 1, 2, 2], vec![1., 2., 3., 4.]).unwrap();
        let graph = |weights, input_quant| {
            let mut b = GraphBuilder::new("by hand", [1, 3, 3]);
            let op = Op::Conv {
                weights,
                bias: vec![0.5],
                attrs,
                input_quant,
            };
            let y = b.push("conv", op, &[GraphBuilder::INPUT]);
            b.finish(y).unwrap()
        };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let float = graph(Weights::Float(kernel.clone()), None);
        assert_eq!(forward(&float, &x, 1).unwrap(), [4.5, 18.5, 36.5, 77.5]);
        let q = QuantWeights {
            bits: 8,
            shape: vec![1, 1, 2, 2],
            values: vec![1, 2, 3, 4],
            scales: vec![0.5],
        };
        let aq = ActQuant::from_range(4, 7.0).unwrap();
        let int = graph(Weights::Quant(q), Some(aq));
        // acc = [4, 18, 36, 5 + 12 + 7·3 + 7·4 = 66], then acc · (1 · 0.5) + 0.5.
        assert_eq!(forward(&int, &x, 1).unwrap(), [2.5, 9.5, 18.5, 33.5]);
    }
}
