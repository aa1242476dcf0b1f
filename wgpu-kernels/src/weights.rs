//! Weight layouts in GPU memory. Quantized weights stay at their bit-width: the same dense
//! LSB-first two's-complement stream as the file (`shared::quant::pack`), reordered so that the
//! four values one `dot4` needs are adjacent — input channels innermost, each group's channels
//! zero-padded to a multiple of four — and followed by one spare word (a group of 4·w bits may
//! straddle two words when w is not a power of two).

use efq_shared::graph::Tensor;
use efq_shared::quant::{QuantWeights, pack};

/// Packed bytes → little-endian words, plus the spare word the shader may read past the end.
fn to_words(bytes: &[u8]) -> Vec<u32> {
    let mut words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    words.push(0);
    words
}

/// Words per kernel tap for `channels` input channels: four channels to a word.
pub fn words_for(channels: usize) -> usize {
    channels.div_ceil(4)
}

/// OIHW quantized weights → `[O][KH][KW][4·ceil(cg/4)]` at `q.bits` bits per value.
pub fn pack_conv(q: &QuantWeights) -> Vec<u32> {
    let (o, cg, kh, kw) = dims(&q.shape);
    let cp = 4 * words_for(cg);
    let mut v = vec![0i8; o * kh * kw * cp];
    for oc in 0..o {
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    v[((oc * kh + ky) * kw + kx) * cp + ci] =
                        q.values[((oc * cg + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    to_words(&pack(&v, q.bits))
}

/// Grouped weights with `cg` input and output channels per group (`[C][cg][KH][KW]`, depthwise
/// when `cg = 1`) → `[KH][KW][cg][4·ceil(C/4)]`: for each tap and each in-group input index, the
/// weights of four consecutive output channels side by side.
pub fn pack_depthwise(q: &QuantWeights) -> Vec<u32> {
    let (c, cg, kh, kw) = dims(&q.shape);
    let cp = 4 * words_for(c);
    let mut v = vec![0i8; kh * kw * cg * cp];
    for o in 0..c {
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    v[((ky * kw + kx) * cg + ci) * cp + o] =
                        q.values[((o * cg + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    to_words(&pack(&v, q.bits))
}

/// Gemm weights `[O][K]` → word-major `[ceil(K/4)][O]` groups of four input channels: the
/// groups of one input word for every output side by side, so that the lanes of gemm_int.wgsl
/// (one output each) read consecutive groups.
pub fn pack_gemm(q: &QuantWeights) -> Vec<u32> {
    let (o, k, kh, kw) = dims(&q.shape);
    let k = k * kh * kw;
    let words = words_for(k);
    let mut v = vec![0i8; words * o * 4];
    for oc in 0..o {
        for ci in 0..k {
            v[((ci / 4) * o + oc) * 4 + ci % 4] = q.values[oc * k + ci];
        }
    }
    to_words(&pack(&v, q.bits))
}

/// OIHW float weights → OHWI.
pub fn float_ohwi(w: &Tensor) -> Vec<f32> {
    let (o, cg, kh, kw) = dims(&w.shape);
    let mut v = vec![0f32; w.numel()];
    for oc in 0..o {
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    v[((oc * kh + ky) * kw + kx) * cg + ci] =
                        w.data[((oc * cg + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    v
}

/// OIHW float weights → HWIO: one tap's input channel holds its output channels side by side
/// (the pixel-block kernel reads four output channels per word).
pub fn float_hwio(w: &Tensor) -> Vec<f32> {
    let (o, ci, kh, kw) = dims(&w.shape);
    let mut v = vec![0f32; w.numel()];
    for oc in 0..o {
        for c in 0..ci {
            for tap in 0..kh * kw {
                v[(tap * ci + c) * o + oc] = w.data[(oc * ci + c) * kh * kw + tap];
            }
        }
    }
    v
}

/// `[O, I, KH, KW]`, with a Gemm's `[O, I]` read as a 1×1 convolution.
fn dims(shape: &[usize]) -> (usize, usize, usize, usize) {
    match *shape {
        [o, i, kh, kw] => (o, i, kh, kw),
        [o, i] => (o, i, 1, 1),
        _ => unreachable!("weights are checked to be rank 2 or 4 by Graph::infer_shapes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use efq_shared::quant::unpack;

    #[test]
    fn gemm_stream_puts_each_input_word_of_every_output_side_by_side() {
        // 3 outputs, 5 inputs, 3-bit: word 0 holds inputs 0–3 of outputs 0, 1, 2, then word 1
        // holds input 4 and three zeros for each output.
        let values: Vec<i8> = (0..15).map(|i| (i % 7) as i8 - 3).collect();
        let q = QuantWeights {
            bits: 3,
            shape: vec![3, 5],
            values: values.clone(),
            scales: vec![1.0; 3],
        };
        let words = pack_gemm(&q);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let got = unpack(&bytes[..efq_shared::quant::packed_len(24, 3)], 3, 24).unwrap();
        let at = |o: usize, c: usize| values[o * 5 + c];
        let mut expected = Vec::new();
        for o in 0..3 {
            expected.extend((0..4).map(|c| at(o, c)));
        }
        for o in 0..3 {
            expected.extend([at(o, 4), 0, 0, 0]);
        }
        assert_eq!(got, expected);
        assert_eq!(*words.last().unwrap(), 0, "spare word");
    }

    #[test]
    fn conv_stream_puts_four_channels_of_one_tap_side_by_side() {
        // 2 outputs, 3 channels, 1×2 kernel, 5-bit: each tap gets channels 0,1,2 then a zero.
        let values: Vec<i8> = (0..12).map(|i| (i as i8) - 6).collect();
        let q = QuantWeights {
            bits: 5,
            shape: vec![2, 3, 1, 2],
            values: values.clone(),
            scales: vec![1.0, 1.0],
        };
        let words = pack_conv(&q);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let got = unpack(&bytes[..efq_shared::quant::packed_len(16, 5)], 5, 16).unwrap();
        let at = |o: usize, c: usize, kx: usize| values[(o * 3 + c) * 2 + kx];
        let expected = vec![
            at(0, 0, 0),
            at(0, 1, 0),
            at(0, 2, 0),
            0,
            at(0, 0, 1),
            at(0, 1, 1),
            at(0, 2, 1),
            0,
            at(1, 0, 0),
            at(1, 1, 0),
            at(1, 2, 0),
            0,
            at(1, 0, 1),
            at(1, 1, 1),
            at(1, 2, 1),
            0,
        ];
        assert_eq!(got, expected);
        assert_eq!(*words.last().unwrap(), 0, "spare word");
    }
}
