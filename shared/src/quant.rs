//! The quantization arithmetic, written once for every consumer: symmetric per-output-channel
//! weights (2–8 bits), symmetric per-tensor activations (2–8 bits), round-half-to-even,
//! and dense packing of w-bit two's-complement integers into bytes. `docs/quantization.md`
//! is the specification; this file is its implementation.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::graph::{Graph, Op, Tensor, Weights};

pub const MIN_BITS: u8 = 2;
pub const MAX_BITS: u8 = 8;

/// Largest magnitude of a symmetric `bits`-bit integer: the grid is `[-qmax, qmax]`, so zero is
/// exact and the grid is symmetric (the two's-complement `-2^(b-1)` is left unused on purpose:
/// it would make negation overflow and bias low-bit weights).
pub fn qmax(bits: u8) -> i32 {
    (1i32 << (bits - 1)) - 1
}

pub fn check_bits(bits: u8) -> Result<(), Error> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::Quant(format!(
            "bit-width {bits} is outside {MIN_BITS}..={MAX_BITS}"
        )))
    }
}

/// `clamp(round_half_even(x · inv_scale), -qmax, qmax)`.
///
/// Multiplying by a precomputed reciprocal (instead of dividing by the scale) is deliberate: a
/// float multiply is correctly rounded in IEEE 754, WGSL and PyTorch alike, whereas WGSL allows
/// division to be off by 2.5 ULP, which would move values across rounding boundaries.
///
/// Clamping before rounding gives the same integer (±qmax are integers and rounding is
/// monotonic), and after the clamp `(t + 1.5·2²³) − 1.5·2²³` rounds half to even exactly (|t| ≤
/// 127 ≪ 2²²). That form vectorises, where `round_ties_even` is a libm call per value on
/// baseline x86-64; it made quantization a third of the CPU backend's time. NaN maps to 0.
#[inline]
pub fn quantize(x: f32, inv_scale: f32, bits: u8) -> i8 {
    Quantizer::new(inv_scale, bits).to_i16(x) as i8
}

/// [`quantize`] with its bound computed once, for loops: the bound's shift, left in the loop,
/// was one of the things that kept it scalar.
#[derive(Clone, Copy, Debug)]
pub struct Quantizer {
    inv_scale: f32,
    lo: f32,
    hi: f32,
}

impl Quantizer {
    /// `1.5 · 2^23`: added to a value within ±2^22, it leaves the value rounded half to even in
    /// the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;

    /// The symmetric grid `[-qmax(bits), qmax(bits)]`.
    #[inline(always)]
    pub fn new(inv_scale: f32, bits: u8) -> Self {
        let q = qmax(bits);
        Self::with_levels(inv_scale, [-q, q])
    }

    /// The integer grid `[lo, hi]` (an activation's [`ActQuant::levels`]).
    #[inline(always)]
    pub fn with_levels(inv_scale: f32, [lo, hi]: [i32; 2]) -> Self {
        Quantizer {
            inv_scale,
            lo: lo as f32,
            hi: hi as f32,
        }
    }

    /// `round_half_even(clamp(x · inv_scale)) + 1.5·2^23`: the rounded integer sits in the low
    /// mantissa bits. Comparisons and selects only (a `clamp`/`min`/`max` becomes NaN-handling
    /// sequences on WebAssembly, and a float→int conversion did not vectorise there at all).
    #[inline(always)]
    fn biased(self, x: f32) -> f32 {
        let t = x * self.inv_scale;
        let t = if t < self.lo { self.lo } else { t };
        let t = if t > self.hi { self.hi } else { t };
        let t = if t.is_nan() { 0.0 } else { t };
        t + Self::ROUNDER
    }

    /// [`quantize`]'s integer as an f32 (exactly: |q| ≤ 127), for sums kept in f32 lanes.
    #[inline(always)]
    pub fn to_f32(self, x: f32) -> f32 {
        self.biased(x) - Self::ROUNDER
    }

    /// [`quantize`] as an i16 (the operand width of the integer products), read from the bits
    /// of the biased float: `bits(1.5·2^23 + q) = 0x4B40_0000 + q` for |q| ≤ 127.
    #[inline(always)]
    pub fn to_i16(self, x: f32) -> i16 {
        (self.biased(x).to_bits() as i32 - 0x4B40_0000) as i16
    }

    /// [`quantize`]'s integer as the i8 every integer layer multiplies (every level fits: see
    /// [`ActQuant`]).
    #[inline(always)]
    pub fn to_i8(self, x: f32) -> i8 {
        self.to_i16(x) as i8
    }
}

/// The epilogue of every integer layer, `f32(acc) · m + bias` with `m` from
/// [`ActQuant::multiplier`]: two roundings, never a fused multiply-add (the engine's kernels and
/// the trainer round twice too; see docs/quantization.md, "One quantized layer").
#[inline(always)]
pub fn dequantize(acc: i32, m: f32, bias: f32) -> f32 {
    acc as f32 * m + bias
}

/// Per-tensor activation quantization of a Conv/Gemm input. Zero point is always 0: padding and
/// every integer dot product stay offset-free. The grid is symmetric, `[-qmax, qmax]`, unless
/// `levels` **splits** the same `2^bits − 1` levels unevenly around zero, `[lo, lo + 2^bits − 2]`:
/// the input of most convolutions is a PReLU output whose slopes are near 0, mostly positive,
/// where a symmetric grid leaves half its levels unused. Every level still fits an i8 (at 8
/// bits only the symmetric split does), so the kernels change only their clamp.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActQuant {
    pub bits: u8,
    pub scale: f32,
    /// `[lo, hi]`, the integer grid; absent: symmetric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<[i32; 2]>,
}

impl ActQuant {
    /// Scale so that `range` maps to `qmax(bits)` (symmetric grid).
    pub fn from_range(bits: u8, range: f32) -> Result<Self, Error> {
        check_bits(bits)?;
        if !(range.is_finite() && range > 0.0) {
            return Err(Error::Quant(format!(
                "activation range {range} must be finite and positive"
            )));
        }
        Ok(ActQuant {
            bits,
            scale: range / qmax(bits) as f32,
            levels: None,
        })
    }
    /// The integer grid `[lo, hi]`.
    pub fn levels(&self) -> [i32; 2] {
        self.levels.unwrap_or_else(|| {
            let q = qmax(self.bits);
            [-q, q]
        })
    }
    /// The largest |q| on the grid (what bounds an integer sum).
    pub fn max_level(&self) -> i32 {
        let [lo, hi] = self.levels();
        lo.abs().max(hi)
    }
    /// The reciprocal every implementation multiplies by (computed once, in f32).
    pub fn inv_scale(&self) -> f32 {
        1.0 / self.scale
    }
    pub fn quantizer(&self) -> Quantizer {
        Quantizer::with_levels(self.inv_scale(), self.levels())
    }
    /// The multiplier of [`dequantize`] for an output channel whose weights have scale
    /// `weight_scale`: `s_a · s_w`, rounded to f32 once.
    #[inline(always)]
    pub fn multiplier(&self, weight_scale: f32) -> f32 {
        self.scale * weight_scale
    }
    /// A float layer's quantized input (a layer whose weights stayed float): the grid value
    /// scaled back, `q(x) · s_a`.
    #[inline(always)]
    pub fn fake_quantize(&self, x: f32) -> f32 {
        self.quantizer().to_f32(x) * self.scale
    }
    pub fn validate(&self) -> Result<(), Error> {
        check_bits(self.bits)?;
        // A subnormal scale has no finite reciprocal: every backend would quantize by infinity.
        if !(self.scale.is_normal() && self.scale > 0.0 && self.inv_scale().is_finite()) {
            return Err(Error::Quant(format!(
                "activation scale {} must be a positive normal float",
                self.scale
            )));
        }
        if let Some([lo, hi]) = self.levels {
            let span = 2 * qmax(self.bits);
            // Bounds first: a file's levels may be anywhere in i32, and `hi - lo` must not wrap.
            if !(lo >= -127 && hi <= 127 && lo <= 0 && hi >= 0 && hi - lo == span) {
                return Err(Error::Quant(format!(
                    "activation grid [{lo}, {hi}] must hold zero, span {span} levels at {} bits \
                     and fit an i8",
                    self.bits
                )));
            }
        }
        Ok(())
    }
}

/// Symmetric per-output-channel quantized weights, kept in the layer's float layout
/// (OIHW or `[out, in]`) in memory; the file stores them packed in OHWI order.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantWeights {
    pub bits: u8,
    pub shape: Vec<usize>,
    /// One integer per weight, each within `[-qmax(bits), qmax(bits)]`.
    pub values: Vec<i8>,
    /// One scale per output channel.
    pub scales: Vec<f32>,
}

/// How each output channel's weight scale is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightClip {
    /// `max|w[o]| / qmax`: no weight is clipped.
    #[default]
    Max,
    /// `c · max|w[o]| / qmax` with `c` ∈ {1.00, 0.99, …, 0.50} minimising the channel's squared
    /// rounding-plus-clipping error: a few outlying weights clipped for a finer grid under the
    /// rest. Fine-tuning keeps it: its masters are the dequantized weights, whose largest
    /// magnitude is the clipped one.
    Mse,
}

impl std::str::FromStr for WeightClip {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "max" => Ok(WeightClip::Max),
            "mse" => Ok(WeightClip::Mse),
            _ => Err(Error::Quant(format!(
                "weight clip '{s}': expected 'max' or 'mse'"
            ))),
        }
    }
}

/// Clipping fractions the MSE search tries, from no clipping down to half the range.
const CLIP_CANDIDATES: usize = 51;

/// The scale of one channel's weights under `clip` (an all-zero channel gets 1).
/// The smallest per-channel weight scale, `f32::MIN_POSITIVE` (the smallest normal float). A
/// channel whose scale would fall below it — its largest weight subnormal or under ~1e-36 —
/// quantizes like an all-zero channel (scale 1, every value 0): dividing by 127 would
/// otherwise underflow to a scale of 0 or one whose reciprocal overflows, which no backend
/// can run. Such weights change no output a float can represent.
pub const MIN_WEIGHT_SCALE: f32 = f32::MIN_POSITIVE;

fn channel_scale(row: &[f32], bits: u8, clip: WeightClip) -> f32 {
    let scale = channel_scale_unchecked(row, bits, clip);
    if scale >= MIN_WEIGHT_SCALE && scale.is_finite() {
        scale
    } else {
        1.0
    }
}

fn channel_scale_unchecked(row: &[f32], bits: u8, clip: WeightClip) -> f32 {
    let q = qmax(bits) as f32;
    let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !(absmax > 0.0 && absmax.is_finite()) {
        return 1.0;
    }
    match clip {
        WeightClip::Max => absmax / q,
        WeightClip::Mse => {
            let error = |scale: f32| -> f64 {
                let quantizer = Quantizer::new(1.0 / scale, bits);
                row.iter()
                    .map(|&v| {
                        let d = (v - quantizer.to_f32(v) * scale) as f64;
                        d * d
                    })
                    .sum()
            };
            // Strictly better only: ties keep the larger range (fewer weights clipped).
            (0..CLIP_CANDIDATES)
                .map(|i| absmax * (1.0 - i as f32 / 100.0) / q)
                .fold((f64::INFINITY, absmax / q), |best, s| {
                    let e = error(s);
                    if e < best.0 { (e, s) } else { best }
                })
                .1
        }
    }
}

impl QuantWeights {
    /// Quantizes float weights with `scale[o] = max|w[o,…]| / qmax` (an all-zero channel, or one
    /// whose scale would be below [`MIN_WEIGHT_SCALE`], gets scale 1).
    pub fn from_float(w: &Tensor, bits: u8) -> Result<Self, Error> {
        Self::from_float_clipped(w, bits, WeightClip::Max)
    }

    /// Quantizes float weights with each channel's scale chosen by `clip`.
    pub fn from_float_clipped(w: &Tensor, bits: u8, clip: WeightClip) -> Result<Self, Error> {
        check_bits(bits)?;
        let out = *w
            .shape
            .first()
            .ok_or_else(|| Error::Quant("weights without an output axis".into()))?;
        if out == 0 || !w.numel().is_multiple_of(out) {
            return Err(Error::Quant(format!("bad weight shape {:?}", w.shape)));
        }
        let per = w.numel() / out;
        let mut scales = Vec::with_capacity(out);
        let mut values = Vec::with_capacity(w.numel());
        for row in w.data.chunks(per) {
            let scale = channel_scale(row, bits, clip);
            let inv = 1.0 / scale;
            values.extend(row.iter().map(|&v| quantize(v, inv, bits)));
            scales.push(scale);
        }
        Ok(QuantWeights {
            bits,
            shape: w.shape.clone(),
            values,
            scales,
        })
    }

    pub fn dequantize(&self) -> Tensor {
        let per = self.values.len() / self.scales.len().max(1);
        let data = self
            .values
            .chunks(per.max(1))
            .zip(&self.scales)
            .flat_map(|(row, &s)| row.iter().map(move |&q| q as f32 * s))
            .collect();
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }

    /// The integers reordered for the file and the GPU: OIHW → OHWI (input channels innermost,
    /// so four consecutive channels form one `dot4I8Packed` operand). Gemm weights are unchanged.
    pub fn values_ohwi(&self) -> Vec<i8> {
        reorder(&self.values, &self.shape, true)
    }

    /// Inverse of [`values_ohwi`](Self::values_ohwi).
    pub fn from_ohwi(bits: u8, shape: Vec<usize>, ohwi: &[i8], scales: Vec<f32>) -> Self {
        let values = reorder(ohwi, &shape, false);
        QuantWeights {
            bits,
            shape,
            values,
            scales,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        check_bits(self.bits)?;
        let n: usize = self.shape.iter().product();
        if n != self.values.len() || self.shape.first() != Some(&self.scales.len()) {
            return Err(Error::Quant(format!(
                "weights of shape {:?} have {} values and {} scales",
                self.shape,
                self.values.len(),
                self.scales.len()
            )));
        }
        let q = qmax(self.bits);
        if let Some(v) = self.values.iter().find(|&&v| (v as i32).abs() > q) {
            return Err(Error::Quant(format!(
                "weight value {v} exceeds the {}-bit range ±{q}",
                self.bits
            )));
        }
        if let Some(s) = self.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Quant(format!(
                "weight scale {s} must be finite and positive"
            )));
        }
        Ok(())
    }
}

fn reorder(src: &[i8], shape: &[usize], to_ohwi: bool) -> Vec<i8> {
    if shape.len() != 4 {
        return src.to_vec();
    }
    let (o, i, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut dst = vec![0i8; src.len()];
    for oo in 0..o {
        for ii in 0..i {
            for hh in 0..h {
                for ww in 0..w {
                    let oihw = ((oo * i + ii) * h + hh) * w + ww;
                    let ohwi = ((oo * h + hh) * w + ww) * i + ii;
                    if to_ohwi {
                        dst[ohwi] = src[oihw];
                    } else {
                        dst[oihw] = src[ohwi];
                    }
                }
            }
        }
    }
    dst
}

/// Number of bytes that `n` values of `bits` bits occupy when packed.
pub fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Packs `bits`-bit two's-complement integers densely, least-significant bit first: value `k`
/// occupies bits `k·bits … k·bits+bits-1` of the little-endian bit stream. Values must fit.
pub fn pack(values: &[i8], bits: u8) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(values.len(), bits)];
    let mask = (1u32 << bits) - 1;
    for (k, &v) in values.iter().enumerate() {
        let u = (v as i32 as u32) & mask;
        let bit = k * bits as usize;
        let (byte, shift) = (bit / 8, bit % 8);
        let span = u << shift;
        out[byte] |= span as u8;
        if shift + bits as usize > 8 {
            out[byte + 1] |= (span >> 8) as u8;
        }
    }
    out
}

/// Inverse of [`pack`]: reads `n` sign-extended values.
pub fn unpack(bytes: &[u8], bits: u8, n: usize) -> Result<Vec<i8>, Error> {
    check_bits(bits)?;
    if bytes.len() != packed_len(n, bits) {
        return Err(Error::Quant(format!(
            "{n} values of {bits} bits need {} bytes, got {}",
            packed_len(n, bits),
            bytes.len()
        )));
    }
    let mask = (1u32 << bits) - 1;
    let sign = 1u32 << (bits - 1);
    Ok((0..n)
        .map(|k| {
            let bit = k * bits as usize;
            let (byte, shift) = (bit / 8, bit % 8);
            let lo = bytes[byte] as u32;
            let hi = bytes.get(byte + 1).copied().unwrap_or(0) as u32;
            let u = ((lo | (hi << 8)) >> shift) & mask;
            // sign-extend from `bits`
            ((u ^ sign).wrapping_sub(sign)) as i32 as i8
        })
        .collect())
}

/// What to quantize: widths for weights and activations, whether the first convolution
/// and the final fully-connected layer stay at 8 bits, and whether the grouped convolutions do
/// too (see docs/quantization.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantConfig {
    pub weight_bits: u8,
    pub act_bits: u8,
    pub first_last_8bit: bool,
    /// Every grouped convolution (group > 1: MobileFaceNet's depthwise layers and the
    /// 2-channel-group layer after its first convolution) at w8a8. A mixed-precision
    /// configuration, so its label says so (`w4a4-dw8`) and results with it are never
    /// reported as plain `w4a4`. Files written before this field existed read as `false`.
    #[serde(default)]
    pub grouped_8bit: bool,
}

impl QuantConfig {
    pub fn new(weight_bits: u8, act_bits: u8) -> Result<Self, Error> {
        check_bits(weight_bits)?;
        check_bits(act_bits)?;
        Ok(QuantConfig {
            weight_bits,
            act_bits,
            first_last_8bit: true,
            grouped_8bit: false,
        })
    }
    /// Parses `w8a8`, `w6a6`, `w4a8` …, and the mixed-precision `w4a4-dw8` (grouped
    /// convolutions at w8a8).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Quant(format!(
                "'{s}' is not a bit-width spec like w8a8, w4a4 or w4a4-dw8"
            ))
        };
        let (spec, grouped_8bit) = match s.strip_suffix("-dw8") {
            Some(spec) => (spec, true),
            None => (s, false),
        };
        let rest = spec.strip_prefix('w').ok_or_else(bad)?;
        let (w, a) = rest.split_once('a').ok_or_else(bad)?;
        let mut cfg = Self::new(w.parse().map_err(|_| bad())?, a.parse().map_err(|_| bad())?)?;
        cfg.grouped_8bit = grouped_8bit;
        Ok(cfg)
    }
    pub fn label(&self) -> String {
        let dw = if self.grouped_8bit { "-dw8" } else { "" };
        format!("w{}a{}{dw}", self.weight_bits, self.act_bits)
    }
    /// (weight bits, activation bits) of the `k`-th of `n` quantized layers in node order;
    /// `grouped` says whether that layer is a convolution with more than one group.
    fn layer_bits(&self, k: usize, n: usize, grouped: bool) -> (u8, u8) {
        if (self.first_last_8bit && (k == 0 || k + 1 == n)) || (self.grouped_8bit && grouped) {
            (8, 8)
        } else {
            (self.weight_bits, self.act_bits)
        }
    }
    /// (weight bits, activation bits) of every Conv/Gemm of `graph`, in node order.
    pub fn layer_widths(&self, graph: &Graph) -> Vec<(u8, u8)> {
        let grouped: Vec<bool> = graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv { attrs, .. } => Some(attrs.group > 1),
                Op::Gemm { .. } => Some(false),
                _ => None,
            })
            .collect();
        let n = grouped.len();
        grouped
            .iter()
            .enumerate()
            .map(|(k, &g)| self.layer_bits(k, n, g))
            .collect()
    }
}

/// Turns a float graph into the quantized student: every Conv/Gemm gets quantized weights and
/// a quantized input. `input_ranges[k]` is the calibrated range (max |x|) of the input of the
/// k-th Conv/Gemm in node order.
pub fn quantize_graph(
    graph: &Graph,
    cfg: &QuantConfig,
    input_ranges: &[f32],
) -> Result<Graph, Error> {
    quantize_graph_clipped(graph, cfg, input_ranges, WeightClip::Max)
}

/// [`quantize_graph`] with the weight scales chosen by `weight_clip`.
pub fn quantize_graph_clipped(
    graph: &Graph,
    cfg: &QuantConfig,
    input_ranges: &[f32],
    weight_clip: WeightClip,
) -> Result<Graph, Error> {
    let widths = cfg.layer_widths(graph);
    if widths.len() != input_ranges.len() {
        return Err(Error::Quant(format!(
            "{} quantizable layers but {} calibrated ranges",
            widths.len(),
            input_ranges.len()
        )));
    }
    let grids = input_ranges
        .iter()
        .zip(&widths)
        .enumerate()
        .map(|(k, (&r, &(_, ab)))| {
            ActQuant::from_range(ab, r)
                .map_err(|e| Error::Quant(format!("quantizable layer {k}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    quantize_graph_with_grids(graph, cfg, &grids, weight_clip)
}

/// Quantizes every Conv/Gemm's weights at `cfg`'s widths and gives its input the grid
/// `input_grids[k]` (the k-th such layer in node order), whose width must be `cfg`'s.
pub fn quantize_graph_with_grids(
    graph: &Graph,
    cfg: &QuantConfig,
    input_grids: &[ActQuant],
    weight_clip: WeightClip,
) -> Result<Graph, Error> {
    let layers: Vec<usize> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Conv { .. } | Op::Gemm { .. }))
        .map(|(i, _)| i)
        .collect();
    if layers.len() != input_grids.len() {
        return Err(Error::Quant(format!(
            "{} quantizable layers but {} calibrated ranges",
            layers.len(),
            input_grids.len()
        )));
    }
    let widths = cfg.layer_widths(graph);
    let mut out = graph.clone();
    for (k, &idx) in layers.iter().enumerate() {
        let (wb, ab) = widths[k];
        let aq = input_grids[k];
        let name = &graph.nodes[idx].name;
        aq.validate()
            .map_err(|e| Error::Quant(format!("layer '{name}': {e}")))?;
        if aq.bits != ab {
            return Err(Error::Quant(format!(
                "layer '{name}': input grid of {} bits, the configuration says {ab}",
                aq.bits
            )));
        }
        match &mut out.nodes[idx].op {
            Op::Conv {
                weights,
                input_quant,
                ..
            }
            | Op::Gemm {
                weights,
                input_quant,
                ..
            } => {
                *weights = Weights::Quant(QuantWeights::from_float_clipped(
                    &weights.to_float(),
                    wb,
                    weight_clip,
                )?);
                *input_quant = Some(aq);
            }
            _ => unreachable!("filtered above"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subnormal_and_tiny_channels_quantize_like_zero_ones() {
        // Largest weights 1e-45 (subnormal), 5e-38 (normal, but ÷7 or ÷127 is subnormal), 0, 1.
        let rows = [[1e-45f32, -1e-45], [5e-38, 2e-38], [0.0, 0.0], [1.0, -0.5]];
        let w = Tensor::new(vec![4, 2], rows.concat()).unwrap();
        for bits in [8, 4] {
            let q = QuantWeights::from_float(&w, bits).unwrap();
            q.validate().unwrap();
            assert_eq!(&q.scales[..3], &[1.0, 1.0, 1.0], "{bits} bits");
            assert!(q.values[..6].iter().all(|&v| v == 0), "{bits} bits");
            assert_eq!(q.scales[3], 1.0 / qmax(bits) as f32);
            for clip in [WeightClip::Max, WeightClip::Mse] {
                let q = QuantWeights::from_float_clipped(&w, bits, clip).unwrap();
                assert!(q.scales.iter().all(|&s| s >= MIN_WEIGHT_SCALE));
            }
        }
    }

    #[test]
    fn qmax_is_symmetric_range() {
        assert_eq!(qmax(8), 127);
        assert_eq!(qmax(4), 7);
        assert_eq!(qmax(2), 1);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_clamps() {
        assert_eq!(quantize(2.5, 1.0, 8), 2);
        assert_eq!(quantize(3.5, 1.0, 8), 4);
        assert_eq!(quantize(-2.5, 1.0, 8), -2);
        assert_eq!(quantize(1000.0, 1.0, 8), 127);
        assert_eq!(quantize(-1000.0, 1.0, 4), -7);
        assert_eq!(
            quantize(f32::NAN, 1.0, 8),
            0,
            "NaN must not poison the integer path"
        );
    }

    #[test]
    fn pack_known_nibbles() {
        // 4-bit: values 1, -1 → 0x1, 0xF → byte 0xF1
        assert_eq!(pack(&[1, -1], 4), vec![0xF1]);
        // 3-bit: 3 (011), -2 (110), 1 (001) → bits LSB-first: 011 110 001 → 0b01_110_011, 0b0
        assert_eq!(pack(&[3, -2, 1], 3), vec![0b0111_0011, 0b0000_0000]);
        assert_eq!(unpack(&[0b0111_0011, 0], 3, 3).unwrap(), vec![3, -2, 1]);
    }

    #[test]
    fn unpack_rejects_wrong_length() {
        assert!(unpack(&[0, 0], 4, 5).is_err());
        assert!(unpack(&[0], 9, 1).is_err());
    }

    #[test]
    fn per_channel_scales_follow_each_channel_absmax() {
        let w = Tensor::new(vec![2, 2], vec![0.5, -1.0, 0.0, 0.0]).unwrap();
        let q = QuantWeights::from_float(&w, 8).unwrap();
        assert_eq!(q.scales, vec![1.0 / 127.0, 1.0]);
        assert_eq!(q.values, vec![64, -127, 0, 0]);
        q.validate().unwrap();
    }

    #[test]
    fn mse_weight_clip_trades_the_tail_for_a_finer_grid() {
        // 2,000 bell-shaped weights (sums of four uniforms): at 4 bits the grid that reaches the
        // largest one is coarse for the bulk; the MSE clip cuts the tail for a finer step.
        let mut s = 12345u64;
        let mut uniform = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let row: Vec<f32> = (0..2000)
            .map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0)
            .collect();
        let w = Tensor::new(vec![1, 2000], row.clone()).unwrap();
        let err = |q: &QuantWeights| -> f32 {
            let d = q.dequantize();
            d.data
                .iter()
                .zip(&row)
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        };
        let max = QuantWeights::from_float(&w, 4).unwrap();
        let mse = QuantWeights::from_float_clipped(&w, 4, WeightClip::Mse).unwrap();
        assert!(
            mse.scales[0] < 0.95 * max.scales[0],
            "{:?} vs {:?}",
            mse.scales,
            max.scales
        );
        assert!(
            err(&mse) < 0.9 * err(&max),
            "{} vs {}",
            err(&mse),
            err(&max)
        );
        mse.validate().unwrap();
        // Evenly spread weights gain little from clipping; never more error than `max`.
        let even = Tensor::new(
            vec![2, 8],
            (0..16).map(|i| (i as f32 - 7.5) / 8.0).collect(),
        )
        .unwrap();
        let (a, b) = (
            QuantWeights::from_float(&even, 8).unwrap(),
            QuantWeights::from_float_clipped(&even, 8, WeightClip::Mse).unwrap(),
        );
        let e = |q: &QuantWeights| -> f32 {
            q.dequantize()
                .data
                .iter()
                .zip(&even.data)
                .map(|(x, y)| (x - y) * (x - y))
                .sum()
        };
        assert!(e(&b) <= e(&a));
        assert_eq!("mse".parse::<WeightClip>().unwrap(), WeightClip::Mse);
        assert!("median".parse::<WeightClip>().is_err());
    }

    #[test]
    fn split_grids_must_hold_zero_span_the_levels_and_fit_an_i8() {
        let at = |bits, levels| ActQuant {
            bits,
            scale: 0.1,
            levels: Some(levels),
        };
        assert!(at(4, [-2, 12]).validate().is_ok());
        assert!(at(4, [0, 14]).validate().is_ok());
        assert!(at(4, [-14, 0]).validate().is_ok());
        assert_eq!(at(4, [-2, 12]).max_level(), 12);
        assert!(at(7, [0, 126]).validate().is_ok());
        assert!(at(4, [1, 15]).validate().is_err(), "zero off the grid");
        assert!(at(4, [-2, 13]).validate().is_err(), "one level too many");
        assert!(at(8, [-2, 252]).validate().is_err(), "past an i8");
        assert!(at(8, [-127, 127]).validate().is_ok());
    }

    #[test]
    fn parse_bit_spec() {
        let c = QuantConfig::parse("w4a8").unwrap();
        assert_eq!((c.weight_bits, c.act_bits), (4, 8));
        assert!(QuantConfig::parse("w9a8").is_err());
        assert!(QuantConfig::parse("8a8").is_err());
        let mixed = QuantConfig::parse("w4a4-dw8").unwrap();
        assert!(mixed.grouped_8bit && !c.grouped_8bit);
        assert_eq!(mixed.label(), "w4a4-dw8");
        assert_eq!(c.label(), "w4a8");
        assert!(QuantConfig::parse("w4a4-dw4").is_err());
        assert!(QuantConfig::parse("-dw8").is_err());
    }

    #[test]
    fn grouped_8bit_widens_exactly_the_grouped_convolutions() {
        let g = crate::builders::tiny_mobilefacenet(16, 64, 1).unwrap();
        let x = crate::builders::random_images(2, g.input_shape, 3);
        let ranges = crate::cpu::input_absmax(&g, &x, 2).unwrap();
        // (group, weight bits, input bits) of every quantized layer, read off the student.
        let student = |spec: &str| -> Vec<(usize, u8, u8)> {
            let q = quantize_graph(&g, &QuantConfig::parse(spec).unwrap(), &ranges).unwrap();
            q.nodes
                .iter()
                .filter_map(|n| match &n.op {
                    Op::Conv {
                        weights: Weights::Quant(w),
                        input_quant: Some(a),
                        attrs,
                        ..
                    } => Some((attrs.group, w.bits, a.bits)),
                    Op::Gemm {
                        weights: Weights::Quant(w),
                        input_quant: Some(a),
                        ..
                    } => Some((1, w.bits, a.bits)),
                    _ => None,
                })
                .collect()
        };
        let (plain, mixed) = (student("w4a4"), student("w4a4-dw8"));
        let n = mixed.len();
        assert!(mixed.iter().filter(|l| l.0 > 1).count() >= 2, "{mixed:?}");
        for (k, (&(group, wb, ab), &(_, pwb, pab))) in mixed.iter().zip(&plain).enumerate() {
            let edge = k == 0 || k + 1 == n;
            assert_eq!((pwb, pab), if edge { (8, 8) } else { (4, 4) }, "layer {k}");
            let want = if edge || group > 1 { (8, 8) } else { (4, 4) };
            assert_eq!((wb, ab), want, "layer {k} (group {group})");
        }
        let widths: Vec<(u8, u8)> = mixed.iter().map(|&(_, w, a)| (w, a)).collect();
        assert_eq!(
            QuantConfig::parse("w4a4-dw8").unwrap().layer_widths(&g),
            widths
        );
        // Manifests written before the field existed read as uniform.
        let old: QuantConfig =
            serde_json::from_str(r#"{"weight_bits":4,"act_bits":4,"first_last_8bit":true}"#)
                .unwrap();
        assert!(!old.grouped_8bit);
    }

    proptest! {
        #[test]
        fn quantize_equals_round_ties_even_then_clamp(x in any::<f32>(), inv in 1e-3f32..1e3, bits in 2u8..=8) {
            let q = qmax(bits) as f32;
            let want = (x * inv).round_ties_even().clamp(-q, q) as i8;
            prop_assert_eq!(quantize(x, inv, bits), want);
            // The float form the exact-f32 convolutions use is the same integer.
            prop_assert_eq!(Quantizer::new(inv, bits).to_f32(x), want as f32);
        }

        #[test]
        fn split_grid_quantizer_equals_round_ties_even_then_clamp_to_its_levels(
            x in any::<f32>(), inv in 1e-3f32..1e3, bits in 2u8..=7, j in 0i32..=252,
        ) {
            let q = qmax(bits);
            let lo = -(j % (2 * q + 1));
            let aq = ActQuant { bits, scale: 1.0 / inv, levels: Some([lo, lo + 2 * q]) };
            prop_assert!(aq.validate().is_ok());
            let want = (x * aq.inv_scale()).round_ties_even().clamp(lo as f32, (lo + 2 * q) as f32);
            let want = if want.is_nan() { 0.0 } else { want };
            prop_assert_eq!(aq.quantizer().to_f32(x), want);
            prop_assert_eq!(aq.quantizer().to_i16(x), want as i16);
        }

        #[test]
        fn quantize_is_exact_on_every_half_step(k in -600i32..600, bits in 2u8..=8) {
            // Ties (k + 0.5) and their neighbours, where a rounding shortcut would slip.
            let q = qmax(bits) as f32;
            for x in [k as f32 + 0.5, k as f32 + 0.5 - f32::EPSILON * 8.0, k as f32] {
                prop_assert_eq!(quantize(x, 1.0, bits), x.round_ties_even().clamp(-q, q) as i8);
            }
        }

        #[test]
        fn pack_roundtrips_every_width(bits in 2u8..=8, raw in proptest::collection::vec(any::<i8>(), 0..300)) {
            let q = qmax(bits) as i8;
            let vals: Vec<i8> = raw.iter().map(|v| v.clamp(&-q, &q).to_owned()).collect();
            let packed = pack(&vals, bits);
            prop_assert_eq!(packed.len(), packed_len(vals.len(), bits));
            prop_assert_eq!(unpack(&packed, bits, vals.len()).unwrap(), vals);
        }

        #[test]
        fn dequantized_weights_are_within_half_a_step(bits in 2u8..=8, o in 1usize..5, per in 1usize..40, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let data: Vec<f32> = (0..o * per).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let w = Tensor::new(vec![o, per], data).unwrap();
            let q = QuantWeights::from_float(&w, bits).unwrap();
            q.validate().unwrap();
            let d = q.dequantize();
            for (c, (a, b)) in w.data.chunks(per).zip(d.data.chunks(per)).enumerate() {
                for (x, y) in a.iter().zip(b) {
                    prop_assert!((x - y).abs() <= q.scales[c] * 0.5 + 1e-6);
                }
            }
        }

        #[test]
        fn ohwi_reorder_roundtrips(o in 1usize..4, i in 1usize..5, h in 1usize..4, w in 1usize..4, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let shape = vec![o, i, h, w];
            let values: Vec<i8> = (0..o * i * h * w).map(|_| rng.random_range(-127i8..=127)).collect();
            let q = QuantWeights { bits: 8, shape: shape.clone(), values, scales: vec![1.0; o] };
            let back = QuantWeights::from_ohwi(8, shape, &q.values_ohwi(), vec![1.0; o]);
            prop_assert_eq!(back, q);
        }
    }
}
