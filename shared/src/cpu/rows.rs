//! The depthwise 3×3 row loops' parts: input rows laid out once with their padding, and the
//! sum of an output row over the taps.
//!
//! A prepared row holds entry `j` = input column `j − pad_left`, zero outside the image, so that
//! output column `ox`'s tap `kx` reads entry `ox·s + kx` and every tap of every output column
//! is one contiguous run; at stride 2 the entries are stored even ones first, then odd ones. A
//! kernel row in the vertical padding reads a zero row. Each output then sums its taps in order
//! from zero (a tap in the padding adds `w·0`: the definition's sum but for the sign of a zero
//! sum), then the bias. No column or row is a special case: the border code this replaced cost
//! narrow planes (20–80 columns, most of SCRFD's layers) a quarter of their speed.
//!
//! Everything here is `#[inline(always)]` and hands no closure to a generic function, so that
//! it is compiled into the caller's AVX2 copy: code outside them is compiled for SSE2 only.

use super::conv::ConvGeometry;

/// The last three input rows one 3×3 row loop over one input plane has read, prepared, plus a
/// zero row and a staging row for the stride-2 split.
pub(super) struct RowRing {
    data: Vec<f32>,
    /// Entries of a prepared row: `(ow − 1)·s + 3`.
    len: usize,
    /// At stride 2, where the odd entries start.
    half: usize,
    /// Floats per slot.
    width: usize,
    stride: usize,
    /// The input row each of the three slots holds.
    tags: [usize; 3],
}

impl RowRing {
    pub(super) const fn new() -> Self {
        Self {
            data: Vec::new(),
            len: 0,
            half: 0,
            width: 0,
            stride: 1,
            tags: [usize::MAX; 3],
        }
    }

    /// Empties the ring for a plane with `ow ≥ 1` output columns at horizontal stride `s`
    /// (1 or 2), reusing its memory.
    #[inline(always)]
    pub(super) fn reset(&mut self, ow: usize, s: usize) {
        self.len = (ow - 1) * s + 3;
        self.half = self.len.div_ceil(2);
        self.width = if s == 2 { 2 * self.half } else { self.len };
        self.stride = s;
        self.tags = [usize::MAX; 3];
        // Slots 0–2: prepared rows; 3: zeros; 4: staging.
        self.data.clear();
        self.data.resize(5 * self.width, 0.0);
    }

    /// Where tap `kx`'s run starts in a prepared row.
    #[inline(always)]
    pub(super) fn starts(&self) -> [usize; 3] {
        let (s, half) = (self.stride, self.half);
        if s == 1 { [0, 1, 2] } else { [0, half, 1] }
    }

    /// The prepared rows kernel rows 0–2 of output row `oy` read from `plane` (`geo.h ×
    /// geo.w`), the zero row for those in the padding. A row already prepared keeps its slot;
    /// a new one takes a slot this output row does not read (three slots, at most three rows).
    #[inline(always)]
    pub(super) fn rows(&mut self, plane: &[f32], geo: &ConvGeometry, oy: usize) -> [&[f32]; 3] {
        let a = &geo.attrs;
        let need: [Option<usize>; 3] = std::array::from_fn(|ky| geo.source_row(oy, ky));
        let width = self.width;
        let (slots, rest) = self.data.split_at_mut(3 * width);
        let (zero, stage) = rest.split_at_mut(width);
        let mut slot_of = [usize::MAX; 3];
        for ky in 0..3 {
            let Some(iy) = need[ky] else { continue };
            let mut at = 0;
            while at < 3 && self.tags[at] != iy {
                at += 1;
            }
            if at == 3 {
                at = 0;
                while need.contains(&Some(self.tags[at])) {
                    at += 1;
                }
                self.tags[at] = iy;
                let src = &plane[iy * geo.w..][..geo.w];
                let dst = &mut slots[at * width..][..width];
                prepare_row(src, a.pads[1], self.stride, self.len, stage, dst);
            }
            slot_of[ky] = at;
        }
        let slots = &*slots;
        let mut rows: [&[f32]; 3] = [zero, zero, zero];
        for ky in 0..3 {
            if slot_of[ky] != usize::MAX {
                rows[ky] = &slots[slot_of[ky] * width..][..width];
            }
        }
        rows
    }
}

/// Writes input row `src` as a prepared row of `len` entries into `dst` (laid out in `stage`
/// first at stride 2).
#[inline(always)]
fn prepare_row(src: &[f32], pad: usize, s: usize, len: usize, stage: &mut [f32], dst: &mut [f32]) {
    let padded = if s == 1 {
        &mut dst[..len]
    } else {
        &mut stage[..len]
    };
    let lo = pad.min(len);
    let n = src.len().min(len - lo);
    padded[..lo].fill(0.0);
    padded[lo..lo + n].copy_from_slice(&src[..n]);
    padded[lo + n..].fill(0.0);
    if s == 2 {
        split_even_odd(&stage[..len], dst);
    }
}

/// `row`'s even entries then its odd ones into `out` (`row.len()` long at least): the even
/// half takes `⌈n/2⌉` places, the odd one starts there. A stride-2 tap then reads a
/// contiguous run of one half instead of a strided gather, which does not vectorise. (Inlined:
/// in the depthwise loops it is compiled into their AVX2 copy.)
#[inline(always)]
pub(super) fn split_even_odd<T: Copy>(row: &[T], out: &mut [T]) {
    let half = row.len().div_ceil(2);
    let (even, odd) = out.split_at_mut(half);
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder() {
        even[half - 1] = *last;
    }
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// What is done to a sum of taps before it is stored: the bias, then the ReLU that follows
/// (when fused), in the same pass.
#[derive(Clone, Copy)]
pub(super) struct Finish {
    pub bias: f32,
    pub relu: bool,
}

impl Finish {
    #[inline(always)]
    pub(super) fn apply(self, t: f32) -> f32 {
        let v = t + self.bias;
        if self.relu { v.max(0.0) } else { v }
    }
}

/// One output row: column `j` is `Σ_t w_t · run_t[j]`, the taps in order from zero, then
/// `b`. In blocks of 64 columns, then 32, then 8, each summed in that many independent
/// accumulators: one accumulator per column would wait on its previous add at every tap (the
/// order is fixed), several in flight keep the adders busy (64 columns are eight AVX2
/// registers: eight adds in flight cover an add's latency). Every run is at least `out.len()`
/// long.
#[inline(always)]
pub(super) fn sum_row(taps: &[(f32, &[f32])], out: &mut [f32], b: Finish) {
    let n = out.len();
    let mut j = 0;
    while j + 64 <= n {
        sum_block::<8>(taps, j, &mut out[j..j + 64], b);
        j += 64;
    }
    while j + 32 <= n {
        sum_block::<4>(taps, j, &mut out[j..j + 32], b);
        j += 32;
    }
    while j + 8 <= n {
        sum_block::<1>(taps, j, &mut out[j..j + 8], b);
        j += 8;
    }
    while j < n {
        let mut t = 0.0;
        for &(wv, src) in taps {
            t += wv * src[j];
        }
        out[j] = b.apply(t);
        j += 1;
    }
}

/// Columns `j0..j0 + 8·V`, in `V` groups of eight lanes (one AVX2 register each; written so,
/// the compiler kept every group in registers, where a flat array of `8·V` was split into odd
/// pieces).
#[inline(always)]
fn sum_block<const V: usize>(taps: &[(f32, &[f32])], j0: usize, out: &mut [f32], b: Finish) {
    let mut t = [[0f32; 8]; V];
    for &(wv, src) in taps {
        let src = &src[j0..j0 + 8 * V];
        for (tv, sv) in t.iter_mut().zip(src.chunks_exact(8)) {
            let sv: &[f32; 8] = sv.try_into().expect("eight lanes");
            for l in 0..8 {
                tv[l] += wv * sv[l];
            }
        }
    }
    for (ov, tv) in out.chunks_exact_mut(8).zip(t) {
        for (o, t) in ov.iter_mut().zip(tv) {
            *o = b.apply(t);
        }
    }
}
