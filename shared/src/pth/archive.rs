//! The zip archive `torch.save` writes (`<name>/data.pkl`, `<name>/data/<key>` per storage,
//! `<name>/byteorder`) → named float tensors.

use std::io::{Cursor, Read};

use super::pickle::{TensorRef, Value, unpickle};
use crate::Error;
use crate::graph::Tensor;
use crate::limits::MAX_PARAMETER_ELEMENTS;

fn err(msg: impl Into<String>) -> Error {
    Error::Pth(msg.into())
}

/// The tensors of a state dict, in the file's order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    /// Floating-point tensors (float32, float64, float16, bfloat16), converted to f32.
    pub tensors: Vec<(String, Tensor)>,
    /// Entries that are not floating point (BatchNorm's `num_batches_tracked`), not loaded.
    pub other: Vec<String>,
}

impl StateDict {
    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The keys under which checkpoints hold a network's state dict; the first found is used
/// (`state_dict_backbone`: arcface_torch's training checkpoint).
const WRAPPER_KEYS: [&str; 4] = [
    "state_dict_backbone",
    "state_dict",
    "model_state_dict",
    "model",
];

/// Decodes one little-endian element to f32.
type Decode = fn(&[u8]) -> f32;

/// Element width and decoding of a storage class.
fn element(dtype: &str) -> Option<(usize, Decode)> {
    Some(match dtype {
        "FloatStorage" => (4, |b| f32::from_le_bytes(b.try_into().unwrap())),
        "DoubleStorage" => (8, |b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
        "HalfStorage" => (2, |b| f16_to_f32(u16::from_le_bytes(b.try_into().unwrap()))),
        "BFloat16Storage" => (2, |b| {
            f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16)
        }),
        _ => return None,
    })
}

/// IEEE half → single, exact (every half is a single).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: f · 2^-24, a normal single
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Reads a `torch.save` zip archive holding a state dict (or a checkpoint dict that holds one
/// under one of `WRAPPER_KEYS`). A `module.` prefix on every key (DistributedDataParallel) is
/// removed.
pub fn read_state_dict(bytes: &[u8]) -> Result<StateDict, Error> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(err(if bytes.first() == Some(&0x80) {
            "a pickle without a zip archive: saved by torch before 1.6 (legacy format); load and \
             save it again with a newer torch"
                .to_string()
        } else {
            "not a PyTorch checkpoint (torch.save writes a zip archive)".to_string()
        }));
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| err(format!("the zip archive cannot be read: {e}")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    if names.iter().any(|n| n.ends_with("/constants.pkl")) {
        return Err(err(
            "a TorchScript module (torch.jit.save), not a state dict: export it to ONNX or save \
             its state_dict()",
        ));
    }
    let pkl = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .collect::<Vec<_>>();
    let [pkl] = pkl.as_slice() else {
        return Err(err(format!(
            "expected one <name>/data.pkl in the archive, found {}",
            pkl.len()
        )));
    };
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if let Some(order) = read_record(&mut zip, &format!("{prefix}byteorder"), 16).ok()
        && order.trim_ascii() != b"little"
    {
        return Err(err(format!(
            "storages are {} endian; only little endian is read",
            String::from_utf8_lossy(&order)
        )));
    }
    let data = read_record(&mut zip, pkl, 1 << 30)?;
    let top = unpickle(&data)?;
    let entries = state_dict_entries(top)?;
    let strip = !entries.is_empty() && entries.iter().all(|(k, _)| k.starts_with("module."));
    let mut sd = StateDict::default();
    for (key, t) in entries {
        let key = if strip {
            key["module.".len()..].to_string()
        } else {
            key
        };
        if element(&t.storage.dtype).is_none() {
            sd.other.push(key);
            continue;
        }
        let tensor = load_tensor(&mut zip, &prefix, &t).map_err(|e| match e {
            Error::Pth(m) => err(format!("tensor '{key}': {m}")),
            other => other,
        })?;
        sd.tensors.push((key, tensor));
    }
    Ok(sd)
}

/// The (key, tensor) pairs of the state dict inside `top`.
fn state_dict_entries(top: Value) -> Result<Vec<(String, TensorRef)>, Error> {
    let Value::Dict(mut items) = top else {
        return Err(err("the file holds no dict of tensors"));
    };
    let wrapped = WRAPPER_KEYS.iter().find_map(|w| {
        items
            .iter()
            .position(|(k, v)| matches!(k, Value::Str(s) if s == w) && matches!(v, Value::Dict(_)))
    });
    if let Some(i) = wrapped {
        let Value::Dict(inner) = items.swap_remove(i).1 else {
            unreachable!()
        };
        items = inner;
    }
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(k) = k else {
            return Err(err("a state dict key is not a string"));
        };
        match v {
            Value::Tensor(t) => out.push((k, t)),
            _ => {
                return Err(err(format!(
                    "entry '{k}' is not a tensor: not a state dict (checkpoints are read when \
                     they hold one under {WRAPPER_KEYS:?})"
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(err("the state dict holds no tensors"));
    }
    Ok(out)
}

fn read_record(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, Error> {
    let f = zip
        .by_name(name)
        .map_err(|e| err(format!("record {name}: {e}")))?;
    if f.size() > max {
        return Err(err(format!(
            "record {name} is {} bytes, more than {max}",
            f.size()
        )));
    }
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| err(format!("record {name}: {e}")))?;
    Ok(buf)
}

/// The tensor view `t` of its storage, as f32, row-major.
fn load_tensor(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    prefix: &str,
    t: &TensorRef,
) -> Result<Tensor, Error> {
    let (width, decode) = element(&t.storage.dtype).expect("float storage");
    if t.shape.len() != t.stride.len() {
        return Err(err("size and stride differ in length"));
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_PARAMETER_ELEMENTS as u64)
        .ok_or_else(|| err(format!("shape {:?} is too large", t.shape)))?;
    if t.storage.numel > MAX_PARAMETER_ELEMENTS as u64 {
        return Err(err(format!(
            "storage of {} elements is too large",
            t.storage.numel
        )));
    }
    if numel > 0 {
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| {
                a.checked_add((d - 1).checked_mul(s)?)
            })
            .ok_or_else(|| err("strides overflow"))?;
        if last >= t.storage.numel {
            return Err(err(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches past its storage of {} elements",
                t.offset, t.shape, t.stride, t.storage.numel
            )));
        }
    }
    let expected = t.storage.numel * width as u64;
    let bytes = read_record(zip, &format!("{prefix}data/{}", t.storage.key), expected)?;
    if bytes.len() as u64 != expected {
        return Err(err(format!(
            "storage {} holds {} bytes, {} expected for {} {} elements",
            t.storage.key,
            bytes.len(),
            expected,
            t.storage.numel,
            t.storage.dtype
        )));
    }
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let mut data = Vec::with_capacity(numel as usize);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = t.offset as usize
            + index
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s as usize)
                .sum::<usize>();
        data.push(decode(&bytes[at * width..][..width]));
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(Tensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }
}
