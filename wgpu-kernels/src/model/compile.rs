//! Compiling a graph: the walk over its nodes in order, each lowered by its op family
//! (`lower/`), that plans every dispatch and buffer, then the plan made real (`materialize`).
//!
//! The walk fuses a PReLU (or, after a float convolution, a ReLU) into the convolution before
//! it when nothing else reads the convolution's output, an upsampling into the Add after it
//! when that Add is its only reader, computes sibling convolutions whose
//! outputs are only read back as one (`siblings`), and returns each value's buffer to the pool
//! after its last reader.
//! GPU validation errors raised while compiling are caught here, so that natively a model that
//! cannot run on this device fails to load rather than at its first submission.

use efq_shared::format::Preprocessing;
use efq_shared::graph::{Graph, Op, SampleShape, ValueId, Weights};

use super::plan::{Planner, StepDesc, Val};
use super::siblings;
use super::{GpuModel, ModelInfo};
use crate::error::EngineError;
use crate::gpu::Gpu;
use crate::kernels::Kernel;

/// A graph planned to the last dispatch, before any activation buffer exists.
pub(super) struct Plan<'g> {
    pub(super) planner: Planner<'g>,
    /// The input's buffer (its shape gives the upload's size).
    pub(super) input: Val,
    pub(super) entry_rgb8: StepDesc,
    /// `None` where the first layer reads the NCHW floats in place (`Planner::planar_input`):
    /// they are then written straight into `input`.
    pub(super) entry_nchw: Option<StepDesc>,
    /// The graph's dispatches are `planner.steps[..body_len]`; the rest convert the requested
    /// outputs to NCHW.
    pub(super) body_len: usize,
    /// The network's output, and its normalisation into the embeddings.
    pub(super) output: Val,
    pub(super) normalize: StepDesc,
    /// Where each requested output lands: (pooled buffer, values per image).
    pub(super) output_slots: Vec<(usize, usize)>,
}

impl GpuModel {
    /// Compiles `graph` for `gpu`, reading back `outputs` besides the network's output.
    pub(super) fn compile(
        gpu: &Gpu,
        graph: &Graph,
        info: ModelInfo,
        max_batch: usize,
        outputs: &[ValueId],
    ) -> Result<GpuModel, EngineError> {
        gpu.check_alive()?;
        let shapes = graph.infer_shapes()?;
        let planner = Planner::new(gpu);
        let error_scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let plan = plan(planner, graph, &shapes, &info.preprocessing, outputs)?;
        let model = GpuModel::materialize(gpu, plan, info, max_batch)?;
        if let Some(e) = pollster_free_pop(error_scope) {
            return Err(EngineError::Gpu(format!(
                "compiling '{}': {e}",
                model.info.name
            )));
        }
        Ok(model)
    }
}

/// Plans every dispatch of `graph`: the two entries, the body node by node, the NCHW copies of
/// the requested outputs, and the L2 norm.
fn plan<'g>(
    mut pl: Planner<'g>,
    graph: &Graph,
    shapes: &[SampleShape],
    pre: &Preprocessing,
    outputs: &[ValueId],
) -> Result<Plan<'g>, EngineError> {
    let [c0, h0, w0] = graph.input_shape;
    let input = Val {
        buf: pl.alloc(c0 * h0 * w0),
        c: c0,
        h: h0,
        w: w0,
    };

    // Readers left per value; a requested output counts as one more, so it stays alive.
    let mut remaining = graph.use_counts();
    for &v in outputs {
        if v >= graph.num_values {
            return Err(EngineError::Input(format!("output value {v} out of range")));
        }
        remaining[v] += 1;
    }
    let uses = graph.use_counts();
    let mut vals: Vec<Option<Val>> = vec![None; graph.num_values];
    vals[0] = Some(input);
    // Values that are channels first… of a buffer whose pixels hold more (siblings).
    let mut slices: Vec<Option<(usize, usize)>> = vec![None; graph.num_values];
    let mut fused_into_previous = vec![false; graph.nodes.len()];
    for (k, node) in graph.nodes.iter().enumerate() {
        if fused_into_previous[k] {
            continue;
        }
        pl.label = node.name.clone();
        let x = vals[node.inputs[0]].expect("topological order checked by infer_shapes");
        // The input's only reader may take it channel by channel (NCHW), as uploaded.
        pl.planar_input =
            (node.inputs == [0] && remaining[0] == 1 && graph.output != 0).then_some(input.buf);
        let run = siblings::run_length(graph, k, &uses, outputs);
        if run > 1 {
            let (weights, bias) = siblings::merged(graph, k..k + run);
            let Op::Conv { attrs, .. } = &node.op else {
                unreachable!("siblings are convolutions")
            };
            let out_hw = (shapes[node.output][1], shapes[node.output][2]);
            let names: Vec<&str> = graph.nodes[k..k + run]
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            let name = names.join("+");
            let y = pl.conv(
                &name,
                x,
                &Weights::Float(weights),
                &bias,
                attrs,
                None,
                out_hw,
                None,
                false,
                false,
            )?;
            let mut first = 0;
            for (j, sibling) in graph.nodes.iter().enumerate().skip(k).take(run) {
                let c = shapes[sibling.output][0];
                vals[sibling.output] = Some(Val { c, ..y });
                slices[sibling.output] = Some((first, y.c));
                first += c;
                fused_into_previous[j] = true;
            }
            remaining[node.inputs[0]] -= run;
            if remaining[node.inputs[0]] == 0 {
                pl.release(x.buf);
            }
            pl.planar_input = None;
            continue;
        }
        if let Some((factor, add)) = upsample_then_add(graph, k, &remaining, outputs, x.c) {
            // The upsampled value never exists: the Add reads its source (upsample_add.wgsl).
            let add = &graph.nodes[add];
            let other = add.inputs[(add.inputs[0] == node.output) as usize];
            pl.label = format!("{}+{}", node.name, add.name);
            let y = pl.upsample_add(x, factor, vals[other].expect("computed before the Add"))?;
            fused_into_previous[k + 1] = true;
            for i in [node.inputs[0], other] {
                remaining[i] -= 1;
                if remaining[i] == 0 {
                    pl.release(vals[i].expect("defined").buf);
                }
            }
            vals[add.output] = Some(y);
            pl.planar_input = None;
            continue;
        }
        let fused = match node.op {
            Op::Conv { .. } | Op::Gemm { .. } => fusable_prelu(graph, k, &remaining, outputs),
            _ => None,
        };
        let slopes = fused.and_then(|(_, a)| match a {
            Fused::PRelu(s) => Some(s),
            Fused::Relu => None,
        });
        let relu = matches!(fused, Some((_, Fused::Relu)));
        let name = &node.name;
        let y = match &node.op {
            Op::Conv {
                weights,
                bias,
                attrs,
                input_quant,
            } => {
                let out_shape = &shapes[node.output];
                let out_hw = (out_shape[1], out_shape[2]);
                let quant = input_quant.as_ref();
                pl.conv(
                    name, x, weights, bias, attrs, quant, out_hw, slopes, relu, false,
                )?
            }
            Op::Gemm {
                weights,
                bias,
                input_quant,
            } => pl.gemm(name, x, weights, bias, input_quant.as_ref(), slopes)?,
            Op::Affine { scale, shift } => pl.affine(name, x, scale, shift)?,
            Op::PRelu { slope } => pl.prelu(name, x, slope)?,
            Op::Relu => pl.relu(x)?,
            Op::Add => pl.add(x, vals[node.inputs[1]].expect("checked"))?,
            Op::Upsample { factor } => pl.upsample(x, *factor)?,
            Op::Flatten => pl.flatten(x)?,
        };
        // A fused activation's output is the value the convolution now writes.
        let output = match fused {
            Some((j, _)) => {
                fused_into_previous[j] = true;
                graph.nodes[j].output
            }
            None => node.output,
        };
        for &i in &node.inputs {
            remaining[i] -= 1;
            if remaining[i] == 0 {
                pl.release(vals[i].expect("defined").buf);
            }
        }
        vals[output] = Some(y);
        pl.planar_input = None;
    }
    // The entries, once the body has said whether its first layer reads the input planar.
    let planar = pl.input_read_planar;
    let entry_rgb8 = pl.entry(Kernel::FromRgb8, input, pre, planar)?;
    let entry_nchw = match planar {
        true => None,
        false => Some(pl.entry(Kernel::FromNchw, input, pre, false)?),
    };

    // Requested outputs, converted to NCHW where they have a spatial extent.
    let mut output_slots: Vec<(usize, usize)> = Vec::new();
    let body_len = pl.steps.len();
    for &v in outputs {
        let x = vals[v].expect("every value is computed");
        if x.h * x.w == 1 && slices[v].is_none() {
            output_slots.push((x.buf, x.per_image()));
            continue;
        }
        pl.label = format!("output {v}");
        let (first, src_channels) = slices[v].unwrap_or((0, x.c));
        let out = pl.nchw_slice_copy("output", x, first, src_channels)?;
        output_slots.push((out, x.per_image()));
    }
    let output = vals[graph.output].expect("output computed");
    let normalize = pl.l2norm(output);
    Ok(Plan {
        planner: pl,
        input,
        entry_rgb8,
        entry_nchw,
        body_len,
        output,
        normalize,
        output_slots,
    })
}

/// An activation run in a convolution's epilogue.
#[derive(Clone, Copy)]
enum Fused<'a> {
    PRelu(&'a [f32]),
    /// Only after a float convolution: the integer kernels have no ReLU epilogue, and a
    /// separate ReLU pass over a float layer's output costs as much as a small convolution.
    Relu,
}

/// The PReLU (or ReLU) right after node `k`, when it is the only reader of `k`'s output and
/// that output is not wanted on its own (the graph's output or a requested one): it can then
/// run in `k`'s epilogue. Returns its index and the activation.
fn fusable_prelu<'a>(
    graph: &'a Graph,
    k: usize,
    remaining: &[usize],
    outputs: &[ValueId],
) -> Option<(usize, Fused<'a>)> {
    let node = &graph.nodes[k];
    let next = graph.nodes.get(k + 1)?;
    let alone = next.inputs == [node.output]
        && remaining[node.output] == 1
        && graph.output != node.output
        && !outputs.contains(&node.output);
    let float_conv = matches!(
        &node.op,
        Op::Conv {
            weights: Weights::Float(_),
            input_quant: None,
            ..
        }
    );
    match &next.op {
        Op::PRelu { slope } if alone => Some((k + 1, Fused::PRelu(slope.as_slice()))),
        Op::Relu if alone && float_conv => Some((k + 1, Fused::Relu)),
        _ => None,
    }
}

/// Node `k`'s factor and the Add right after it, when `k` is an upsampling of `channels` (in
/// fours) whose only reader is that Add and whose output is not wanted on its own.
fn upsample_then_add(
    graph: &Graph,
    k: usize,
    remaining: &[usize],
    outputs: &[ValueId],
    channels: usize,
) -> Option<(usize, usize)> {
    let node = &graph.nodes[k];
    let Op::Upsample { factor } = node.op else {
        return None;
    };
    let next = graph.nodes.get(k + 1)?;
    let alone = remaining[node.output] == 1
        && graph.output != node.output
        && !outputs.contains(&node.output);
    let one_operand = next.inputs.iter().filter(|&&i| i == node.output).count() == 1;
    (matches!(next.op, Op::Add) && one_operand && alone && channels.is_multiple_of(4))
        .then_some((factor, k + 1))
}

/// Pops a validation scope after pipeline creation. wgpu-core reports these errors
/// synchronously, so the future is ready at once; on the web it resolves later and the error
/// surfaces at the first submission instead.
fn pollster_free_pop(scope: wgpu::ErrorScopeGuard) -> Option<wgpu::Error> {
    let fut = scope.pop();
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(e) => e,
        std::task::Poll::Pending => None,
    }
}
