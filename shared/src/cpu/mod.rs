//! The CPU reference executor: float32 for an unquantized graph and the exact integer path for
//! a quantized one. It is the oracle the WGSL kernels must match and the fallback when no GPU
//! adapter exists, so it favours obviously-correct loops over cleverness (the float convolution
//! still goes through `matrixmultiply` so that whole-model checks on real images stay quick).

use crate::Error;
use crate::graph::{ConvAttrs, Graph, Node, Op, Tensor, ValueId, Weights};
use crate::quant::{ActQuant, QuantWeights};
use rayon::prelude::*;

mod int_gemm;

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
        return run(graph, input, 1, outputs, &mut |_, _| {});
    }
    let per: usize = graph.input_shape.iter().product();
    let images: Vec<Vec<Vec<f32>>> = input
        .par_chunks(per)
        .map(|x| run(graph, x, 1, outputs, &mut |_, _| {}))
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
    let mut out = run(graph, input, batch, &[graph.output], observe)?;
    Ok(out.pop().expect("one output asked for"))
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
) -> Result<Vec<Vec<f32>>, Error> {
    rayon::scope(|_| run_layers(graph, input, batch, outputs, observe))
}

fn run_layers(
    graph: &Graph,
    input: &[f32],
    batch: usize,
    outputs: &[ValueId],
    observe: &mut (dyn FnMut(usize, &[f32]) + Send),
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
    values[0] = Some(input.to_vec());
    let mut layer = 0;
    let uses = graph.use_counts();
    let mut nodes = graph.nodes.iter().peekable();
    while let Some(node) = nodes.next() {
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
            continue;
        }
        // A PReLU that is the only reader of an integer convolution runs in the convolution's
        // dequantization pass (MobileFaceNet: every convolution but the linear ones).
        let int_conv = matches!(
            node.op,
            Op::Conv {
                weights: Weights::Quant(_),
                input_quant: Some(_),
                ..
            }
        );
        let fused_prelu = match nodes.peek() {
            Some(next)
                if int_conv
                    && uses[node.output] == 1
                    && next.inputs[0] == node.output
                    && !outputs.contains(&node.output) =>
            {
                match &next.op {
                    Op::PRelu { slope } => Some((*next, slope.as_slice())),
                    _ => None,
                }
            }
            _ => None,
        };
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
                    (Weights::Quant(q), Some(aq)) => {
                        conv_int(x, &geo, q, bias, aq, fused_prelu.map(|f| f.1))
                    }
                    (Weights::Quant(_), None) => {
                        return Err(Error::Graph(format!(
                            "layer '{}' has quantized weights but no input quantization",
                            node.name
                        )));
                    }
                    (Weights::Float(wt), aq) => {
                        let xq = aq.map(|aq| fake_quant(x, &aq));
                        conv_f32(xq.as_deref().unwrap_or(x), &geo, wt, bias)
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
        match fused_prelu {
            Some((prelu, _)) => {
                nodes.next();
                release_inputs(prelu, &mut remaining, &mut values);
                values[prelu.output] = Some(y);
            }
            _ => values[node.output] = Some(y),
        }
    }
    Ok(outputs
        .iter()
        .map(|&v| values[v].clone().expect("output computed"))
        .collect())
}

/// Runs an element-wise layer on its first input's buffer, taken (`in_place`: this layer is its
/// last reader) or copied; `None` for any other layer.
fn elementwise(
    node: &Node,
    xs: &[usize],
    values: &mut [Option<Vec<f32>>],
    in_place: bool,
) -> Option<Vec<f32>> {
    if !matches!(
        node.op,
        Op::Affine { .. } | Op::PRelu { .. } | Op::Relu | Op::Add | Op::Flatten
    ) {
        return None;
    }
    let i0 = node.inputs[0];
    let mut y = if in_place {
        values[i0].take()
    } else {
        values[i0].clone()
    }
    .expect("topological order checked by infer_shapes");
    let (c, spatial) = (xs[0], xs[1..].iter().product::<usize>());
    match &node.op {
        Op::Affine { scale, shift } => y
            .par_chunks_mut(spatial)
            .enumerate()
            .with_min_len(ROWS_PER_TASK.div_ceil(spatial))
            .for_each(|(row, plane)| {
                let (a, b) = (scale[row % c], shift[row % c]);
                plane.iter_mut().for_each(|v| *v = *v * a + b);
            }),
        Op::PRelu { slope } => y
            .par_chunks_mut(spatial)
            .enumerate()
            .with_min_len(ROWS_PER_TASK.div_ceil(spatial))
            .for_each(|(row, plane)| {
                prelu(plane, slope[if slope.len() == 1 { 0 } else { row % c }])
            }),
        Op::Relu => y
            .par_chunks_mut(ROWS_PER_TASK)
            .for_each(|y| y.iter_mut().for_each(|v| *v = v.max(0.0))),
        Op::Add => {
            let b = values[node.inputs[1]].as_ref().expect("checked");
            y.par_chunks_mut(ROWS_PER_TASK)
                .zip(b.par_chunks(ROWS_PER_TASK))
                .for_each(|(y, b)| y.iter_mut().zip(b).for_each(|(y, b)| *y += b));
        }
        Op::Flatten => {}
        _ => unreachable!("matched above"),
    }
    Some(y)
}

/// `x ≤ 0 ? a·x : x`, written as a select rather than a conditional store so that it
/// vectorises (the branch mispredicted on half the values and took 16 % of a forward pass).
#[inline]
fn prelu(plane: &mut [f32], a: f32) {
    plane
        .iter_mut()
        .for_each(|v| *v = if *v <= 0.0 { *v * a } else { *v });
}

fn release_inputs(node: &Node, remaining: &mut [usize], values: &mut [Option<Vec<f32>>]) {
    for &i in &node.inputs {
        remaining[i] -= 1;
        if remaining[i] == 0 {
            values[i] = None;
        }
    }
}

/// `y[n, c, i, j] = x[n, c, i / f, j / f]`.
fn upsample_nearest(x: &[f32], batch: usize, xs: &[usize], f: usize) -> Vec<f32> {
    let (w, ow) = (xs[2], xs[2] * f);
    let mut y = Vec::with_capacity(x.len() * f * f);
    for row in x.chunks(w).take(batch * xs[0] * xs[1]) {
        let wide: Vec<f32> = (0..ow).map(|j| row[j / f]).collect();
        for _ in 0..f {
            y.extend_from_slice(&wide);
        }
    }
    y
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

fn fake_quant(x: &[f32], aq: &ActQuant) -> Vec<f32> {
    let quantizer = aq.quantizer();
    x.iter().map(|&v| quantizer.to_f32(v) * aq.scale).collect()
}

/// Shape bookkeeping of one convolution call.
pub struct ConvGeometry {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub attrs: ConvAttrs,
}

impl ConvGeometry {
    /// Input pixel read by output `(oy, ox)` at kernel tap `(ky, kx)`, or `None` in the padding.
    #[inline]
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let a = &self.attrs;
        let iy = (oy * a.stride[0] + ky * a.dilation[0]).checked_sub(a.pads[0])?;
        let ix = (ox * a.stride[1] + kx * a.dilation[1]).checked_sub(a.pads[1])?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
}

/// Lays out one group of one image as `[P][K]` patches, K ordered (channel, ky, kx) like OIHW.
fn im2col<T: Copy + Default>(
    x: &[T],
    geo: &ConvGeometry,
    c0: usize,
    cg: usize,
    kh: usize,
    kw: usize,
) -> Vec<T> {
    let k = cg * kh * kw;
    let p = geo.oh * geo.ow;
    let mut col = vec![T::default(); p * k];
    for oy in 0..geo.oh {
        for ox in 0..geo.ow {
            let row = &mut col[(oy * geo.ow + ox) * k..][..k];
            for ci in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        if let Some((iy, ix)) = geo.source(oy, ox, ky, kx) {
                            row[(ci * kh + ky) * kw + kx] =
                                x[((c0 + ci) * geo.h + iy) * geo.w + ix];
                        }
                    }
                }
            }
        }
    }
    col
}

/// Float convolution: per image and group, `out[o][p] = Σ_k W[o][k] · patch[p][k] + b[o]`.
pub fn conv_f32(x: &[f32], geo: &ConvGeometry, wt: &Tensor, bias: &[f32]) -> Vec<f32> {
    let (o, cg, g) = (wt.shape[0], wt.shape[1], geo.attrs.group);
    if g == geo.c && o == geo.c && cg == 1 {
        return depthwise_f32(x, geo, wt, bias);
    }
    conv_f32_im2col(x, geo, wt, bias)
}

/// Any float convolution: im2col and a matrix product per group.
fn conv_f32_im2col(x: &[f32], geo: &ConvGeometry, wt: &Tensor, bias: &[f32]) -> Vec<f32> {
    let (o, cg, kh, kw) = (wt.shape[0], wt.shape[1], wt.shape[2], wt.shape[3]);
    let g = geo.attrs.group;
    let og = o / g;
    let (k, p) = (cg * kh * kw, geo.oh * geo.ow);
    let mut out = vec![0f32; geo.batch * o * p];
    for n in 0..geo.batch {
        let xn = &x[n * geo.c * geo.h * geo.w..][..geo.c * geo.h * geo.w];
        for gi in 0..g {
            let col = im2col(xn, geo, gi * cg, cg, kh, kw);
            let wg = &wt.data[gi * og * k..][..og * k];
            let yg = &mut out[(n * o + gi * og) * p..][..og * p];
            // SAFETY: slices are sized m·k, p·k and m·p with the strides passed.
            unsafe {
                matrixmultiply::sgemm(
                    og,
                    k,
                    p,
                    1.0,
                    wg.as_ptr(),
                    k as isize,
                    1,
                    col.as_ptr(),
                    1,
                    k as isize,
                    0.0,
                    yg.as_mut_ptr(),
                    p as isize,
                    1,
                );
            }
            for (oc, row) in yg.chunks_mut(p).enumerate() {
                let b = bias[gi * og + oc];
                row.iter_mut().for_each(|v| *v += b);
            }
        }
    }
    out
}

/// Quantizes a tensor of activations to the integer grid.
pub fn quantize_activations(x: &[f32], aq: &ActQuant) -> Vec<i8> {
    let quantizer = aq.quantizer();
    let mut q = vec![0i8; x.len()];
    q.par_chunks_mut(ROWS_PER_TASK)
        .zip(x.par_chunks(ROWS_PER_TASK))
        .for_each(|(q, x)| {
            q.iter_mut()
                .zip(x)
                .for_each(|(q, &v)| *q = quantizer.to_i16(v) as i8)
        });
    q
}

/// Elements per parallel task of the element-wise passes: enough to dwarf a task's start-up,
/// which in the browser is waking a Web Worker (tens to hundreds of µs, about what a residual
/// add of MobileFaceNet's 28×28×128 tensor costs on one thread): such layers run inline.
const ROWS_PER_TASK: usize = 1 << 16;

/// Exact integer dot product of two i8 vectors into i32.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// The integer convolution's accumulators (`batch × O × P`), bit-exact: the quantity every GPU
/// kernel must reproduce. Padding contributes 0 because the zero point is 0.
///
/// Integer sums are exact in any order, so this may be fast without being clever about
/// correctness: depthwise layers run as direct loops, everything else as an `[O][K] × [K][P]`
/// product ([`int_gemm`]: SSE2 natively, SIMD128 in the browser's CPU path). A 1×1
/// stride-1 convolution reads its input in place; other shapes lay their patches out as
/// `[K][P]` first. `tests::conv_int_acc_matches_the_naive_sum` checks it
/// against the plain patch-by-patch dot products.
pub fn conv_int_acc(xq: &[i8], geo: &ConvGeometry, q: &QuantWeights) -> Vec<i32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let g = geo.attrs.group;
    if g > 1 && cg <= 4 {
        return grouped_int_acc(xq, geo, q);
    }
    let og = o / g;
    let (k, p) = (cg * kh * kw, geo.oh * geo.ow);
    let a = &geo.attrs;
    let in_place = kh == 1 && kw == 1 && a.stride == [1, 1] && a.pads == [0; 4];
    // One task per image and group; when there are fewer of those than threads, each product
    // is cut along its output channels too.
    let pairs = geo.batch * g;
    let split = if pairs >= rayon::current_num_threads() {
        1
    } else {
        2 * rayon::current_num_threads()
    };
    let mut acc = vec![0i32; pairs * og * p];
    acc.par_chunks_mut(og * p)
        .enumerate()
        .for_each(|(pair, out)| {
            let (n, gi) = (pair / g, pair % g);
            let xn = &xq[n * geo.c * geo.h * geo.w..][..geo.c * geo.h * geo.w];
            let patches;
            let col: &[i8] = if in_place {
                &xn[gi * cg * p..][..cg * p]
            } else {
                patches = im2col_kp(xn, geo, gi * cg, cg, kh, kw);
                &patches
            };
            int_gemm::gemm_i8(&q.values[gi * og * k..][..og * k], col, k, p, out, split);
        });
    acc
}

/// One group of one image as `[K][P]` patch rows (K ordered channel, ky, kx like OIHW): the
/// transpose of [`im2col`], so that the product's inner loop runs along pixels.
fn im2col_kp(x: &[i8], geo: &ConvGeometry, c0: usize, cg: usize, kh: usize, kw: usize) -> Vec<i8> {
    let p = geo.oh * geo.ow;
    let mut col = vec![0i8; cg * kh * kw * p];
    for ci in 0..cg {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut col[((ci * kh + ky) * kw + kx) * p..][..p];
                for oy in 0..geo.oh {
                    for ox in 0..geo.ow {
                        if let Some((iy, ix)) = geo.source(oy, ox, ky, kx) {
                            row[oy * geo.ow + ox] = x[((c0 + ci) * geo.h + iy) * geo.w + ix];
                        }
                    }
                }
            }
        }
    }
    col
}

/// Grouped integer convolution with few input channels per group (depthwise: one; MobileFaceNet
/// also has groups of two) as direct loops: im2col and a product per group would cost more
/// than they compute. For each kernel tap, the run of output pixels whose source lies inside
/// the image is computed first, so the inner loop has no bounds test (and, at stride 1, walks
/// two contiguous rows).
fn grouped_int_acc(xq: &[i8], geo: &ConvGeometry, q: &QuantWeights) -> Vec<i32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let og = o / geo.attrs.group;
    let a = &geo.attrs;
    let (h, w, oh, ow) = (geo.h, geo.w, geo.oh, geo.ow);
    let (sx, pad_l) = (a.stride[1], a.pads[1] as isize);
    let mut acc = vec![0i32; geo.batch * o * oh * ow];
    acc.par_chunks_exact_mut(oh * ow)
        .enumerate()
        .for_each(|(no, out)| {
            let (n, oc) = (no / o, no % o);
            for ci in 0..cg {
                let plane = &xq[(n * geo.c + (oc / og) * cg + ci) * h * w..][..h * w];
                let kern = &q.values[(oc * cg + ci) * kh * kw..][..kh * kw];
                for oy in 0..oh {
                    let orow = &mut out[oy * ow..][..ow];
                    for ky in 0..kh {
                        let iy =
                            (oy * a.stride[0] + ky * a.dilation[0]) as isize - a.pads[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let irow = &plane[iy as usize * w..][..w];
                        for kx in 0..kw {
                            let wv = kern[ky * kw + kx] as i16;
                            if wv == 0 {
                                continue;
                            }
                            // Source column of output ox: ox·sx + off, valid while in [0, w).
                            let off = (kx * a.dilation[1]) as isize - pad_l;
                            let lo = if off < 0 {
                                (-off as usize).div_ceil(sx)
                            } else {
                                0
                            };
                            let hi = if (w as isize) > off {
                                ((w as isize - off) as usize).div_ceil(sx).min(ow)
                            } else {
                                0
                            };
                            if lo >= hi {
                                continue;
                            }
                            let first = (lo * sx) as isize + off;
                            if sx == 1 {
                                let src = &irow[first as usize..][..hi - lo];
                                for (y, &x) in orow[lo..hi].iter_mut().zip(src) {
                                    *y += wv.wrapping_mul(x as i16) as i32;
                                }
                            } else {
                                let src = irow[first as usize..].iter().step_by(sx);
                                for (y, &x) in orow[lo..hi].iter_mut().zip(src) {
                                    *y += wv.wrapping_mul(x as i16) as i32;
                                }
                            }
                        }
                    }
                }
            }
        });
    acc
}

/// Dequantization epilogue shared by every integer layer: `y = acc · (s_x · s_w[o]) + b[o]`,
/// with the combined multiplier rounded to f32 once.
pub fn dequantize_acc(
    acc: &[i32],
    per_channel: usize,
    q: &QuantWeights,
    aq: &ActQuant,
    bias: &[f32],
) -> Vec<f32> {
    dequantize_then(acc, per_channel, q, aq, bias, None)
}

/// [`dequantize_acc`], then the PReLU with these slopes (one, or one per channel) if given: the
/// same arithmetic as the two layers apart, in one pass over the tensor.
fn dequantize_then(
    acc: &[i32],
    per_channel: usize,
    q: &QuantWeights,
    aq: &ActQuant,
    bias: &[f32],
    prelu_slope: Option<&[f32]>,
) -> Vec<f32> {
    let o = q.scales.len();
    let mult = aq_multipliers(q, aq);
    let mut y = vec![0f32; acc.len()];
    y.par_chunks_mut(per_channel)
        .zip(acc.par_chunks(per_channel))
        .enumerate()
        .with_min_len(ROWS_PER_TASK.div_ceil(per_channel))
        .for_each(|(row, (y, plane))| {
            let oc = row % o;
            dequantize_row(
                y,
                plane,
                mult[oc],
                bias[oc],
                prelu_slope.map(|s| slope_of(s, oc)),
            );
        });
    y
}

/// The combined multipliers `s_x · s_w[o]`, each rounded to f32 once.
fn aq_multipliers(q: &QuantWeights, aq: &ActQuant) -> Vec<f32> {
    q.scales.iter().map(|s| aq.scale * s).collect()
}

/// A PReLU's slope for channel `c` (one shared slope, or one per channel).
fn slope_of(slope: &[f32], c: usize) -> f32 {
    slope[if slope.len() == 1 { 0 } else { c }]
}

/// One channel's row: `y = acc · m + b`, then the PReLU with `slope` if given.
#[inline]
fn dequantize_row(y: &mut [f32], acc: &[i32], m: f32, b: f32, slope: Option<f32>) {
    y.iter_mut()
        .zip(acc)
        .for_each(|(y, &a)| *y = a as f32 * m + b);
    if let Some(s) = slope {
        prelu(y, s);
    }
}

/// An integer convolution from float input to float output (`prelu_slope`: the PReLU that
/// reads it, applied in the same pass). Non-grouped layers quantize straight into the
/// product's pair layout and dequantize each task's rows of sums as soon as they are done:
/// the arithmetic of [`quantize_activations`], [`conv_int_acc`] and [`dequantize_acc`] with
/// two passes over the tensor and two hand-offs between threads fewer (`tests::
/// conv_int_equals_its_steps` checks it against those three).
fn conv_int(
    x: &[f32],
    geo: &ConvGeometry,
    q: &QuantWeights,
    bias: &[f32],
    aq: &ActQuant,
    prelu_slope: Option<&[f32]>,
) -> Vec<f32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let g = geo.attrs.group;
    if g > 1 && cg <= 4 {
        if sums_exact_in_f32(cg * kh * kw, q.bits, aq.max_level()) {
            return grouped_conv_exact_f32(x, geo, q, bias, aq, prelu_slope);
        }
        let xq = quantize_activations(x, aq);
        let acc = grouped_int_acc(&xq, geo, q);
        return dequantize_then(&acc, geo.oh * geo.ow, q, aq, bias, prelu_slope);
    }
    let og = o / g;
    let (k, p, hw) = (cg * kh * kw, geo.oh * geo.ow, geo.h * geo.w);
    let a = &geo.attrs;
    let in_place = kh == 1 && kw == 1 && a.stride == [1, 1] && a.pads == [0; 4];
    let (quantizer, mult) = (aq.quantizer(), aq_multipliers(q, aq));
    let pairs = geo.batch * g;
    if in_place && g == 1 {
        let threads = rayon::current_num_threads();
        let tasks = if geo.batch >= threads { 1 } else { threads };
        let mut y = vec![0f32; geo.batch * o * p];
        y.par_chunks_mut(o * p).enumerate().for_each(|(n, y)| {
            let xn = &x[n * geo.c * hw..][..geo.c * hw];
            int_gemm::gemm_quantized_by_pixels(
                &q.values,
                xn,
                k,
                p,
                quantizer,
                tasks,
                y,
                |oc, sums, y| {
                    dequantize_row(
                        y,
                        sums,
                        mult[oc],
                        bias[oc],
                        prelu_slope.map(|s| slope_of(s, oc)),
                    )
                },
            );
        });
        return y;
    }
    let split = if pairs >= rayon::current_num_threads() {
        1
    } else {
        2 * rayon::current_num_threads()
    };
    let mut y = vec![0f32; pairs * og * p];
    y.par_chunks_mut(og * p).enumerate().for_each(|(pair, y)| {
        let (n, gi) = (pair / g, pair % g);
        let xg = &x[(n * geo.c + gi * cg) * hw..][..cg * hw];
        let xp = if in_place {
            int_gemm::pair_up_quantized(xg, k, p, quantizer)
        } else {
            let xq = quantize_activations(xg, aq);
            int_gemm::pair_up(&im2col_kp(&xq, geo, 0, cg, kh, kw), k, p)
        };
        let w = &q.values[gi * og * k..][..og * k];
        int_gemm::gemm_paired_then(w, &xp, split, y, |oc0, sums, y| {
            for (r, (y, sums)) in y.chunks_mut(p).zip(sums.chunks(p)).enumerate() {
                let oc = gi * og + oc0 + r;
                dequantize_row(
                    y,
                    sums,
                    mult[oc],
                    bias[oc],
                    prelu_slope.map(|s| slope_of(s, oc)),
                );
            }
        });
    });
    y
}

/// Whether every partial sum of `taps` products of `w_bits`-bit weights and activations of
/// magnitude at most `a_max` is an integer below 2^24, where f32 addition is exact in any
/// order: then the products can be summed in f32 lanes and give the i32 sums' values bit for
/// bit.
fn sums_exact_in_f32(taps: usize, w_bits: u8, a_max: i32) -> bool {
    let product = crate::quant::qmax(w_bits) as u64 * a_max as u64;
    taps as u64 * product < 1 << 24
}

/// Grouped integer convolution with few input channels per group (depthwise: one; MobileFaceNet
/// also has groups of two) from float input to float output, one parallel task per group.
///
/// The group's input planes are quantized into zero-padded buffers split by row and column
/// phase (`y mod stride`, `x mod stride`), in which every kernel tap of every output pixel,
/// strided or dilated, sits at one fixed offset from the pixel's own index. Each tap is then one
/// long contiguous multiply-add over the whole plane (a few columns of padding computed and
/// dropped) instead of a short one per output row: the per-row loops of [`grouped_int_acc`]
/// spent more time on loop overhead and i16→i32 widening than on products (1.5 GMAC/s, a
/// quarter of a MobileFaceNet pass). The integer products are summed in f32 lanes, exact when
/// [`sums_exact_in_f32`] holds (the caller checks). Dequantization and the PReLU follow while
/// the sums are in cache: the arithmetic of [`dequantize_then`].
fn grouped_conv_exact_f32(
    x: &[f32],
    geo: &ConvGeometry,
    q: &QuantWeights,
    bias: &[f32],
    aq: &ActQuant,
    prelu_slope: Option<&[f32]>,
) -> Vec<f32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (g, a) = (geo.attrs.group, &geo.attrs);
    let og = o / g;
    let (h, w, oh, ow) = (geo.h, geo.w, geo.oh, geo.ow);
    let ([sy, sx], [dy, dx]) = (a.stride, a.dilation);
    // Padded extent: everything any tap reads, padding included; then per phase.
    let hp = (h + a.pads[0] + a.pads[2]).max((oh - 1) * sy + (kh - 1) * dy + 1);
    let wp = (w + a.pads[1] + a.pads[3]).max((ow - 1) * sx + (kw - 1) * dx + 1);
    let (hph, wph) = (hp.div_ceil(sy), wp.div_ceil(sx));
    let phase_len = hph * wph;
    // Sums are kept at row pitch `wph`; the last row needs only its `ow` real columns, so no
    // tap reads past its phase.
    let span = (oh - 1) * wph + ow;
    const B: usize = 16;
    let (quantizer, mult) = (aq.quantizer(), aq_multipliers(q, aq));
    let kern: Vec<f32> = q.values.iter().map(|&v| v as f32).collect();
    let mut y = vec![0f32; geo.batch * o * oh * ow];
    y.par_chunks_exact_mut(og * oh * ow)
        .enumerate()
        .for_each(|(ng, y)| {
            let (n, gi) = (ng / g, ng % g);
            // [cg][row phase][column phase][hph][wph]: padded pixel (yp, xp) lives in phase
            // (yp % sy, xp % sx) at (yp / sy, xp / sx).
            // (+ B: the last block of sums reads past `span`; those sums are dropped.)
            let mut buf = vec![0f32; cg * sy * sx * phase_len + B];
            for ci in 0..cg {
                let plane = &x[(n * geo.c + gi * cg + ci) * h * w..][..h * w];
                for (iy, row) in plane.chunks_exact(w).enumerate() {
                    let yp = iy + a.pads[0];
                    for phase in 0..sx {
                        // Source columns `ix` with `(ix + pad) % sx == phase`, in order.
                        let ix0 = (phase + sx - a.pads[1] % sx) % sx;
                        let j0 = (ix0 + a.pads[1]) / sx;
                        let at = ((ci * sy + yp % sy) * sx + phase) * phase_len + yp / sy * wph;
                        let dst = &mut buf[at..][..wph][j0..];
                        let quantize = |v| quantizer.to_f32(v);
                        if sx == 1 {
                            // (`step_by` with a run-time step would keep this from vectorising.)
                            dst.iter_mut().zip(row).for_each(|(d, &v)| *d = quantize(v));
                        } else {
                            let src = row.iter().skip(ix0).step_by(sx);
                            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = quantize(v));
                        }
                    }
                }
            }
            let mut acc = vec![0f32; span.next_multiple_of(B)];
            let mut taps: Vec<(usize, f32)> = Vec::with_capacity(cg * kh * kw);
            for (r, y) in y.chunks_exact_mut(oh * ow).enumerate() {
                let oc = gi * og + r;
                let k = &kern[oc * cg * kh * kw..][..cg * kh * kw];
                taps.clear();
                for ci in 0..cg {
                    for ky in 0..kh {
                        let (ry, py) = ((ky * dy) / sy, (ky * dy) % sy);
                        for kx in 0..kw {
                            let wv = k[(ci * kh + ky) * kw + kx];
                            let (rx, px) = ((kx * dx) / sx, (kx * dx) % sx);
                            let at = ((ci * sy + py) * sx + px) * phase_len + ry * wph + rx;
                            if wv != 0.0 {
                                taps.push((at, wv));
                            }
                        }
                    }
                }
                // Blocks of outputs held in registers across all taps: one store per output
                // rather than a load and a store per tap.
                for (blk, a) in acc.chunks_exact_mut(B).enumerate() {
                    let i = blk * B;
                    let mut sums = [0f32; B];
                    for &(at, wv) in &taps {
                        let src: &[f32; B] = buf[at + i..][..B].try_into().expect("B values");
                        for l in 0..B {
                            sums[l] += wv * src[l];
                        }
                    }
                    a.copy_from_slice(&sums);
                }
                let (m, b) = (mult[oc], bias[oc]);
                for (oy, y) in y.chunks_exact_mut(ow).enumerate() {
                    y.iter_mut()
                        .zip(&acc[oy * wph..])
                        .for_each(|(y, &a)| *y = a * m + b);
                    if let Some(s) = prelu_slope {
                        prelu(y, slope_of(s, oc));
                    }
                }
            }
        });
    y
}

/// Float fully-connected layer: `y[n][o] = Σ_i x[n][i] · W[o][i] + b[o]`.
pub fn gemm_f32(x: &[f32], batch: usize, fin: usize, wt: &Tensor, bias: &[f32]) -> Vec<f32> {
    let o = wt.shape[0];
    let mut out = vec![0f32; batch * o];
    // SAFETY: x is batch·fin, W is o·fin (read transposed), out is batch·o.
    unsafe {
        matrixmultiply::sgemm(
            batch,
            fin,
            o,
            1.0,
            x.as_ptr(),
            fin as isize,
            1,
            wt.data.as_ptr(),
            1,
            fin as isize,
            0.0,
            out.as_mut_ptr(),
            o as isize,
            1,
        );
    }
    for row in out.chunks_mut(o) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    out
}

/// The integer fully-connected layer's accumulators (`batch × O`), bit-exact.
pub fn gemm_int_acc(xq: &[i8], batch: usize, fin: usize, q: &QuantWeights) -> Vec<i32> {
    let o = q.shape[0];
    let mut acc = vec![0i32; batch * o];
    acc.par_iter_mut().enumerate().for_each(|(i, a)| {
        let (n, oc) = (i / o, i % o);
        *a = dot_i8(&q.values[oc * fin..][..fin], &xq[n * fin..][..fin]);
    });
    acc
}

fn gemm_int(
    x: &[f32],
    batch: usize,
    fin: usize,
    q: &QuantWeights,
    bias: &[f32],
    aq: &ActQuant,
) -> Vec<f32> {
    let xq = quantize_activations(x, aq);
    let acc = gemm_int_acc(&xq, batch, fin, q);
    dequantize_acc(&acc, 1, q, aq, bias)
}

/// Depthwise float convolution (one filter per channel) as direct loops: im2col + a matrix
/// product per group costs more than it computes (SCRFD's 16×320×320 layer took 270 ms so).
fn depthwise_f32(x: &[f32], geo: &ConvGeometry, wt: &Tensor, bias: &[f32]) -> Vec<f32> {
    let (kh, kw) = (wt.shape[2], wt.shape[3]);
    let a = &geo.attrs;
    let (h, w, oh, ow) = (geo.h as isize, geo.w as isize, geo.oh, geo.ow);
    let mut out = vec![0f32; geo.batch * geo.c * oh * ow];
    out.par_chunks_exact_mut(oh * ow)
        .enumerate()
        .for_each(|(nc, y)| {
            let c = nc % geo.c;
            let plane = &x[nc * geo.h * geo.w..][..geo.h * geo.w];
            let k = &wt.data[c * kh * kw..][..kh * kw];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f32;
                    for ky in 0..kh {
                        let iy =
                            (oy * a.stride[0] + ky * a.dilation[0]) as isize - a.pads[0] as isize;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        let row = &plane[iy as usize * geo.w..][..geo.w];
                        for kx in 0..kw {
                            let ix = (ox * a.stride[1] + kx * a.dilation[1]) as isize
                                - a.pads[1] as isize;
                            if ix >= 0 && ix < w {
                                acc += k[ky * kw + kx] * row[ix as usize];
                            }
                        }
                    }
                    y[oy * ow + ox] = acc + bias[c];
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depthwise_loops_match_the_im2col_convolution() {
        for (stride, pad, batch) in [(1, 1, 1), (2, 1, 2), (2, 0, 3)] {
            let (c, h, w) = (3, 7, 6);
            let x: Vec<f32> = (0..batch * c * h * w)
                .map(|i| ((i * 37) % 11) as f32 - 5.0)
                .collect();
            let wt = Tensor::new(
                vec![c, 1, 3, 3],
                (0..c * 9)
                    .map(|i| ((i * 13) % 7) as f32 * 0.25 - 0.5)
                    .collect(),
            )
            .unwrap();
            let out = |n: usize| (n + 2 * pad - 3) / stride + 1;
            let geo = ConvGeometry {
                batch,
                c,
                h,
                w,
                oh: out(h),
                ow: out(w),
                attrs: ConvAttrs {
                    stride: [stride, stride],
                    pads: [pad; 4],
                    dilation: [1, 1],
                    group: c,
                },
            };
            let bias = [0.5, -1.0, 2.0];
            // Small integers and quarters: both summation orders are exact.
            assert_eq!(
                depthwise_f32(&x, &geo, &wt, &bias),
                conv_f32_im2col(&x, &geo, &wt, &bias)
            );
        }
    }

    /// The integer convolution as its definition: every output is the dot product of its
    /// `[P][K]` patch with the weight row.
    fn naive_conv_int_acc(xq: &[i8], geo: &ConvGeometry, q: &QuantWeights) -> Vec<i32> {
        let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let og = o / geo.attrs.group;
        let (k, p) = (cg * kh * kw, geo.oh * geo.ow);
        let mut acc = vec![0i32; geo.batch * o * p];
        for n in 0..geo.batch {
            let xn = &xq[n * geo.c * geo.h * geo.w..][..geo.c * geo.h * geo.w];
            for gi in 0..geo.attrs.group {
                let col = im2col(xn, geo, gi * cg, cg, kh, kw);
                for oc in 0..og {
                    let wrow = &q.values[(gi * og + oc) * k..][..k];
                    for pi in 0..p {
                        acc[(n * o + gi * og + oc) * p + pi] = dot_i8(wrow, &col[pi * k..][..k]);
                    }
                }
            }
        }
        acc
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]
        /// Depthwise, grouped, 1×1-in-place and general convolutions, with strides,
        /// asymmetric pads and dilation, on random i8 values (the full ±127 range, so that
        /// the i16 products and i32 sums are exercised at their extremes).
        #[test]
        fn conv_int_acc_matches_the_naive_sum(
            (batch, cg, groups, h, w, mult, kh, kw) in (1usize..=2, 1usize..=5, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=3, 1usize..=3, 1usize..=3),
            (stride_y, stride_x, dil, pads, depthwise, seed) in (1usize..=2, 1usize..=3, 1usize..=2, proptest::array::uniform4(0usize..=2), proptest::bool::ANY, proptest::num::u64::ANY),
            pointwise in proptest::bool::ANY,
        ) {
            // Half the cases: a 1×1 stride-1 unpadded convolution, read in place.
            let (kh, kw, stride_y, stride_x, pads) = if pointwise { (1, 1, 1, 1, [0; 4]) } else { (kh, kw, stride_y, stride_x, pads) };
            let (c, o, cg) = if depthwise { (cg * groups, cg * groups, 1) } else { (cg * groups, mult * groups, cg) };
            let group = if depthwise { c } else { groups };
            let (ekh, ekw) = ((kh - 1) * dil + 1, (kw - 1) * dil + 1);
            proptest::prop_assume!(h + pads[0] + pads[2] >= ekh && w + pads[1] + pads[3] >= ekw);
            let geo = ConvGeometry {
                batch, c, h, w,
                oh: (h + pads[0] + pads[2] - ekh) / stride_y + 1,
                ow: (w + pads[1] + pads[3] - ekw) / stride_x + 1,
                attrs: ConvAttrs { stride: [stride_y, stride_x], pads, dilation: [dil, dil], group },
            };
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s % 255) as i32 - 127) as i8 };
            let xq: Vec<i8> = (0..batch * c * h * w).map(|_| next()).collect();
            let values: Vec<i8> = (0..o * cg * kh * kw).map(|_| next()).collect();
            let q = QuantWeights { bits: 8, shape: vec![o, cg, kh, kw], values, scales: vec![1.0; o] };
            proptest::prop_assert!(xq.iter().any(|&v| v != 0));
            proptest::prop_assert_eq!(conv_int_acc(&xq, &geo, &q), naive_conv_int_acc(&xq, &geo, &q));
        }

        /// The float-to-float integer convolution (quantizing into the product's layout,
        /// dequantizing and applying the PReLU in the product's tasks) equals its three steps
        /// done apart, bit for bit, on the same random shapes with random scales, biases and
        /// slopes, for 1–3 threads.
        #[test]
        fn conv_int_equals_its_steps(
            (batch, cg, groups, h, w, mult, kh, kw) in (1usize..=2, 1usize..=5, 1usize..=3, 1usize..=9, 1usize..=9, 1usize..=3, 1usize..=3, 1usize..=3),
            (stride_y, stride_x, dil, pads, depthwise, pointwise, seed) in (1usize..=2, 1usize..=3, 1usize..=2, proptest::array::uniform4(0usize..=2), proptest::bool::ANY, proptest::bool::ANY, proptest::num::u64::ANY),
            (bits, with_prelu, threads) in (2u8..=8, proptest::bool::ANY, 1usize..=3),
        ) {
            let (kh, kw, stride_y, stride_x, pads) = if pointwise { (1, 1, 1, 1, [0; 4]) } else { (kh, kw, stride_y, stride_x, pads) };
            let (c, o, cg) = if depthwise { (cg * groups, cg * groups, 1) } else { (cg * groups, mult * groups, cg) };
            let group = if depthwise { c } else { groups };
            let (ekh, ekw) = ((kh - 1) * dil + 1, (kw - 1) * dil + 1);
            proptest::prop_assume!(h + pads[0] + pads[2] >= ekh && w + pads[1] + pads[3] >= ekw);
            let geo = ConvGeometry {
                batch, c, h, w,
                oh: (h + pads[0] + pads[2] - ekh) / stride_y + 1,
                ow: (w + pads[1] + pads[3] - ekw) / stride_x + 1,
                attrs: ConvAttrs { stride: [stride_y, stride_x], pads, dilation: [dil, dil], group },
            };
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 20001) as f32 / 10000.0 - 1.0 };
            let x: Vec<f32> = (0..batch * c * h * w).map(|_| next() * 3.0).collect();
            let values: Vec<i8> = (0..o * cg * kh * kw).map(|_| (next() * 127.0) as i8).collect();
            let scales: Vec<f32> = (0..o).map(|_| 0.01 + next().abs() * 0.05).collect();
            let bias: Vec<f32> = (0..o).map(|_| next()).collect();
            let slope: Vec<f32> = (0..o).map(|_| next() * 0.5).collect();
            let q = QuantWeights { bits: 8, shape: vec![o, cg, kh, kw], values, scales };
            let aq = ActQuant::from_range(bits, 2.5).unwrap();
            let prelu = with_prelu.then_some(slope.as_slice());
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let fused = pool.install(|| conv_int(&x, &geo, &q, &bias, &aq, prelu));
            let acc = conv_int_acc(&quantize_activations(&x, &aq), &geo, &q);
            let mut apart = dequantize_acc(&acc, geo.oh * geo.ow, &q, &aq, &bias);
            if with_prelu {
                for (row, plane) in apart.chunks_mut(geo.oh * geo.ow).enumerate() {
                    plane.iter_mut().for_each(|v| if *v <= 0.0 { *v *= slope[row % o] });
                }
            }
            proptest::prop_assert!(fused.iter().any(|&v| v != 0.0));
            proptest::prop_assert_eq!(fused, apart);
        }
    }

    #[test]
    fn f32_sums_are_trusted_only_below_two_to_the_24() {
        // 1,040 products of 127 · 127 sum to 16,774,160 < 2^24; one more passes it.
        assert!(sums_exact_in_f32(1040, 8, 127));
        assert!(!sums_exact_in_f32(1041, 8, 127));
        // Narrower operands allow longer sums: 7 · 7 = 49 per product at 4 bits.
        assert!(sums_exact_in_f32(300_000, 4, 7));
        assert!(!sums_exact_in_f32(400_000, 4, 7));
    }

    #[test]
    fn grouped_layers_too_long_for_f32_sums_stay_exact() {
        // 4 channels per group × 17×17 taps = 1,156 products of up to 127·127, all positive
        // and odd-sized so that an f32 running sum past 2^24 would lose its low bits.
        let (cg, groups, k) = (4, 2, 17);
        let geo = ConvGeometry {
            batch: 1,
            c: cg * groups,
            h: k,
            w: k,
            oh: 1,
            ow: 1,
            attrs: ConvAttrs {
                stride: [1, 1],
                pads: [0; 4],
                dilation: [1, 1],
                group: groups,
            },
        };
        assert!(!sums_exact_in_f32(cg * k * k, 8, 127));
        let aq = ActQuant::from_range(8, 1.0).unwrap();
        let x: Vec<f32> = (0..cg * groups * k * k)
            .map(|i| 1.0 - (i % 3) as f32 * 0.004)
            .collect();
        let values: Vec<i8> = (0..groups * cg * k * k)
            .map(|i| 127 - (i % 2) as i8)
            .collect();
        let q = QuantWeights {
            bits: 8,
            shape: vec![groups, cg, k, k],
            values,
            scales: vec![1.0; groups],
        };
        let acc = conv_int_acc(&quantize_activations(&x, &aq), &geo, &q);
        assert!(
            acc.iter().all(|&a| a > 1 << 24),
            "the case must pass 2^24: {acc:?}"
        );
        let want = dequantize_acc(&acc, 1, &q, &aq, &[0.0; 2]);
        assert_eq!(conv_int(&x, &geo, &q, &[0.0; 2], &aq, None), want);
        // And the case is one where summing in f32 would have been wrong.
        assert_ne!(
            grouped_conv_exact_f32(&x, &geo, &q, &[0.0; 2], &aq, None),
            want
        );
    }

    #[test]
    fn nearest_upsample_repeats_pixels_of_every_image() {
        let x = [1., 2., 3., 4., 5., 6., 7., 8.];
        assert_eq!(
            upsample_nearest(&x, 2, &[1, 2, 2], 2),
            vec![
                1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4., //
                5., 5., 6., 6., 5., 5., 6., 6., 7., 7., 8., 8., 7., 7., 8., 8.
            ]
        );
    }
}
