//! The layers between matrix products, all float (docs/quantization.md): affine (BatchNorm),
//! PReLU, ReLU, the residual Add and nearest upsampling, split into parallel tasks only when
//! a task is large enough to pay for waking a thread.

use crate::graph::{Node, Op};
use rayon::prelude::*;

/// Runs an element-wise layer on its first input's buffer, taken (`in_place`: this layer is its
/// last reader) or copied; `None` for any other layer.
pub(super) fn elementwise(
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
pub(super) fn prelu(plane: &mut [f32], a: f32) {
    plane
        .iter_mut()
        .for_each(|v| *v = if *v <= 0.0 { *v * a } else { *v });
}

/// `y[n, c, i, j] = x[n, c, i / f, j / f]`.
pub(super) fn upsample_nearest(x: &[f32], batch: usize, xs: &[usize], f: usize) -> Vec<f32> {
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

/// Elements per parallel task of the element-wise passes: enough to dwarf a task's start-up,
/// which in the browser is waking a Web Worker (tens to hundreds of µs, about what a residual
/// add of MobileFaceNet's 28×28×128 tensor costs on one thread): such layers run inline.
pub(super) const ROWS_PER_TASK: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

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
