//! Sibling convolutions computed as one: consecutive float convolutions that read the same
//! value with the same geometry and whose outputs are only read back (SCRFD's heads: score,
//! box and keypoints of one stride, three 3×3 convolutions of one 64-channel map). On
//! software rasterisers a convolution's time is mostly its input reads, which one convolution
//! with the outputs' channels side by side does once instead of three times (and the
//! two-channel score head, not in fours, no longer needs the general kernel). The read-back
//! copies take each output's channels from the shared buffer.

use efq_shared::graph::{Graph, Op, Tensor, ValueId, Weights};

/// How many nodes from `k` on (at least 2, else 1) are sibling convolutions: float weights of
/// one kernel size and attributes, no input quantizer, the same input, and an output that the
/// graph does not read but `outputs` does.
pub(super) fn run_length(graph: &Graph, k: usize, uses: &[usize], outputs: &[ValueId]) -> usize {
    let key = |i: usize| -> Option<_> {
        let node = graph.nodes.get(i)?;
        match &node.op {
            Op::Conv {
                weights: Weights::Float(w),
                attrs,
                input_quant: None,
                ..
            } if uses[node.output] == 0 && outputs.contains(&node.output) => {
                Some((node.inputs[0], w.shape[1..].to_vec(), *attrs))
            }
            _ => None,
        }
    };
    let Some(first) = key(k) else { return 1 };
    let mut n = 1;
    while key(k + n).as_ref() == Some(&first) {
        n += 1;
    }
    n
}

/// The weights and bias of `nodes` (sibling convolutions) with their output channels
/// concatenated in order, then zero channels up to a multiple of four.
pub(super) fn merged(graph: &Graph, nodes: std::ops::Range<usize>) -> (Tensor, Vec<f32>) {
    let mut shape = Vec::new();
    let mut data = Vec::new();
    let mut biases = Vec::new();
    for node in &graph.nodes[nodes] {
        if let Op::Conv {
            weights: Weights::Float(w),
            bias,
            ..
        } = &node.op
        {
            if shape.is_empty() {
                shape = w.shape.clone();
                shape[0] = 0;
            }
            shape[0] += w.shape[0];
            data.extend_from_slice(&w.data);
            if bias.is_empty() {
                biases.resize(biases.len() + w.shape[0], 0.0);
            } else {
                biases.extend_from_slice(bias);
            }
        }
    }
    // Zero channels up to a multiple of four, the block kernel's unit (read back by none).
    let per_channel: usize = shape[1..].iter().product();
    shape[0] = shape[0].next_multiple_of(4);
    data.resize(shape[0] * per_channel, 0.0);
    biases.resize(shape[0], 0.0);
    let tensor = Tensor::new(shape, data).expect("siblings share the kernel's shape");
    (tensor, biases)
}
