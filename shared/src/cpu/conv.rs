//! The shape bookkeeping every convolution shares and the float convolution: im2col and
//! `matrixmultiply`'s sgemm per group, or direct loops for a depthwise layer.

use crate::graph::{ConvAttrs, Tensor};
use rayon::prelude::*;

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
    pub(super) fn source(
        &self,
        oy: usize,
        ox: usize,
        ky: usize,
        kx: usize,
    ) -> Option<(usize, usize)> {
        let a = &self.attrs;
        let iy = (oy * a.stride[0] + ky * a.dilation[0]).checked_sub(a.pads[0])?;
        let ix = (ox * a.stride[1] + kx * a.dilation[1]).checked_sub(a.pads[1])?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
}

/// Lays out one group of one image as `[P][K]` patches, K ordered (channel, ky, kx) like OIHW.
pub(super) fn im2col<T: Copy + Default>(
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
}
