//! Grouped integer convolutions with few input channels per group (depthwise: one;
//! MobileFaceNet also has groups of two) as direct loops rather than a matrix product.

use super::conv::ConvGeometry;
use super::elementwise::prelu;
use super::quantize::{aq_multipliers, slope_of};
use crate::quant::{ActQuant, QuantWeights, Quantizer};
use rayon::prelude::*;

/// Grouped integer convolution with few input channels per group (depthwise: one; MobileFaceNet
/// also has groups of two) as direct loops: im2col and a product per group would cost more
/// than they compute. For each kernel tap, the run of output pixels whose source lies inside
/// the image is computed first, so the inner loop has no bounds test (and, at stride 1, walks
/// two contiguous rows).
pub(super) fn grouped_int_acc(xq: &[i8], geo: &ConvGeometry, q: &QuantWeights) -> Vec<i32> {
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
                        let Some(iy) = geo.source_row(oy, ky) else {
                            continue;
                        };
                        let irow = &plane[iy * w..][..w];
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

/// Whether every partial sum of `taps` products of `w_bits`-bit weights and activations of
/// magnitude at most `a_max` is an integer below 2^24, where f32 addition is exact in any
/// order: then the products can be summed in f32 lanes and give the i32 sums' values bit for
/// bit.
pub(super) fn sums_exact_in_f32(taps: usize, w_bits: u8, a_max: i32) -> bool {
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
pub(super) fn grouped_conv_exact_f32(
    x: &[f32],
    geo: &ConvGeometry,
    q: &QuantWeights,
    bias: &[f32],
    aq: &ActQuant,
    prelu_slope: Option<&[f32]>,
) -> Vec<f32> {
    let (o, cg, kh, kw) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let g = geo.attrs.group;
    let og = o / g;
    let (hw, ohw, taps) = (geo.h * geo.w, geo.oh * geo.ow, cg * kh * kw);
    let phases = Phases::new(geo, [kh, kw]);
    let (quantizer, mult) = (aq.quantizer(), aq_multipliers(q, aq));
    let kern: Vec<f32> = q.values.iter().map(|&v| v as f32).collect();
    let mut y = vec![0f32; geo.batch * o * ohw];
    y.par_chunks_exact_mut(og * ohw)
        .enumerate()
        .for_each(|(ng, y)| {
            SCRATCH.with_borrow_mut(|scratch| {
                let (n, gi) = (ng / g, ng % g);
                let planes = &x[(n * geo.c + gi * cg) * hw..][..cg * hw];
                phases.fill(planes, geo, quantizer, scratch);
                for (r, y) in y.chunks_exact_mut(ohw).enumerate() {
                    let oc = gi * og + r;
                    let sums = phases.sums(&kern[oc * taps..][..taps], [cg, kh, kw], scratch);
                    let (m, b) = (mult[oc], bias[oc]);
                    for (y, sums) in y.chunks_exact_mut(geo.ow).zip(sums.chunks(phases.wph)) {
                        y.iter_mut().zip(sums).for_each(|(y, &a)| *y = a * m + b);
                        if let Some(s) = prelu_slope {
                            prelu(y, slope_of(s, oc));
                        }
                    }
                }
            })
        });
    y
}

/// Outputs summed together in registers across all taps: one store per output rather than a
/// load and a store per tap.
const B: usize = 16;

/// A group's input planes quantized, zero-padded and split by row and column phase:
/// `[cg][row phase][column phase][hph][wph]`, padded pixel `(yp, xp)` in phase
/// `(yp % sy, xp % sx)` at `(yp / sy, xp / sx)`.
struct Phases {
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: [usize; 2],
    /// Columns per phase row.
    wph: usize,
    /// Values per phase.
    len: usize,
    /// Sums kept per output channel, at row pitch `wph`: the last row needs only its `ow`
    /// real columns, so no tap reads past its phase.
    span: usize,
}

impl Phases {
    fn new(geo: &ConvGeometry, [kh, kw]: [usize; 2]) -> Self {
        let a = &geo.attrs;
        let ([sy, sx], [dy, dx]) = (a.stride, a.dilation);
        // Padded extent: everything any tap reads, padding included; then per phase.
        let hp = (geo.h + a.pads[0] + a.pads[2]).max((geo.oh - 1) * sy + (kh - 1) * dy + 1);
        let wp = (geo.w + a.pads[1] + a.pads[3]).max((geo.ow - 1) * sx + (kw - 1) * dx + 1);
        let (hph, wph) = (hp.div_ceil(sy), wp.div_ceil(sx));
        Phases {
            stride: a.stride,
            dilation: a.dilation,
            pads: [a.pads[0], a.pads[1]],
            wph,
            len: hph * wph,
            span: (geo.oh - 1) * wph + geo.ow,
        }
    }

    /// Quantizes `planes` (the group's `cg` input planes) into `scratch.buf`.
    fn fill(&self, planes: &[f32], geo: &ConvGeometry, q: Quantizer, scratch: &mut Scratch) {
        let ([sy, sx], [pad_t, pad_l], wph) = (self.stride, self.pads, self.wph);
        let (w, cg) = (geo.w, planes.len() / (geo.h * geo.w));
        let Scratch { buf, stage, .. } = scratch;
        buf.clear();
        // (+ B: the last block of sums reads past `span`; those sums are dropped.)
        buf.resize(cg * sy * sx * self.len + B, 0.0);
        // One input row quantized at its padded columns, zeros around it (`sx` > 1).
        stage.clear();
        stage.resize(if sx > 1 { wph * sx } else { 0 }, 0.0);
        let quantize = |(d, &v): (&mut f32, &f32)| *d = q.to_f32(v);
        for (ci, plane) in planes.chunks_exact(geo.h * w).enumerate() {
            for (iy, row) in plane.chunks_exact(w).enumerate() {
                let yp = iy + pad_t;
                // Where padded row `yp` of column phase `phase` starts.
                let at = |phase| ((ci * sy + yp % sy) * sx + phase) * self.len + yp / sy * wph;
                if sx == 1 {
                    let dst = &mut buf[at(0)..][pad_l..][..w];
                    dst.iter_mut().zip(row).for_each(quantize);
                    continue;
                }
                // Quantized contiguously, then dealt out: padded column `xp` goes to phase
                // `xp % sx`, entry `xp / sx`. (Quantizing each phase by a strided gather did
                // not vectorise: MobileFaceNet's first stride-2 layer took 2.0 ms in wasm
                // instead of 0.84.)
                stage[pad_l..][..w].iter_mut().zip(row).for_each(quantize);
                if sx == 2 {
                    let (even, odd) = buf[at(0)..].split_at_mut(self.len);
                    let (even, odd) = (&mut even[..wph], &mut odd[..wph]);
                    for ((e, o), pair) in even.iter_mut().zip(odd).zip(stage.chunks_exact(2)) {
                        *e = pair[0];
                        *o = pair[1];
                    }
                } else {
                    for (j, cols) in stage.chunks_exact(sx).enumerate() {
                        for (phase, &v) in cols.iter().enumerate() {
                            buf[at(phase) + j] = v;
                        }
                    }
                }
            }
        }
    }

    /// One output channel's sums over the filled phases, weights `k` (`[cg][kh][kw]` as f32):
    /// output `(oy, ox)` at `oy · wph + ox` of the returned slice. Each tap is one contiguous
    /// run of the phase it reads.
    fn sums<'s>(&self, k: &[f32], [cg, kh, kw]: [usize; 3], scratch: &'s mut Scratch) -> &'s [f32] {
        let ([sy, sx], [dy, dx]) = (self.stride, self.dilation);
        let Scratch { buf, acc, taps, .. } = scratch;
        taps.clear();
        for ci in 0..cg {
            for ky in 0..kh {
                let (ry, py) = ((ky * dy) / sy, (ky * dy) % sy);
                for kx in 0..kw {
                    let wv = k[(ci * kh + ky) * kw + kx];
                    let (rx, px) = ((kx * dx) / sx, (kx * dx) % sx);
                    if wv != 0.0 {
                        taps.push((
                            ((ci * sy + py) * sx + px) * self.len + ry * self.wph + rx,
                            wv,
                        ));
                    }
                }
            }
        }
        // (Every block is overwritten below: no zeroing.)
        acc.resize(self.span.next_multiple_of(B), 0.0);
        for (blk, a) in acc.chunks_exact_mut(B).enumerate() {
            let i = blk * B;
            let mut sums = [0f32; B];
            for &(at, wv) in taps.iter() {
                let src: &[f32; B] = buf[at + i..][..B].try_into().expect("B values");
                for l in 0..B {
                    sums[l] += wv * src[l];
                }
            }
            a.copy_from_slice(&sums);
        }
        acc
    }
}

/// One task's buffers in [`grouped_conv_exact_f32`], kept between groups: four allocations per
/// group were a third of the time of MobileFaceNet's 7×7 and 14×14 depthwise layers in wasm.
#[derive(Default)]
struct Scratch {
    /// The group's quantized input planes, padded and split by phase ([`Phases`]).
    buf: Vec<f32>,
    /// One input row, quantized at its padded columns (stride > 1).
    stage: Vec<f32>,
    /// One output channel's sums at row pitch `wph`.
    acc: Vec<f32>,
    /// One output channel's nonzero taps: offset in `buf` and weight.
    taps: Vec<(usize, f32)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

#[cfg(test)]
mod tests {
    use super::super::conv_int::{conv_int, conv_int_acc};
    use super::super::quantize::{dequantize_acc, quantize_activations};
    use super::*;
    use crate::graph::ConvAttrs;

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
}
