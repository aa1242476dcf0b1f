//! A restricted unpickler for the `data.pkl` that `torch.save` writes.
//!
//! Python's `pickle` runs whatever the file names: loading a stranger's checkpoint with
//! `torch.load(weights_only=False)` executes their code. This reader executes nothing. It
//! understands the opcodes of pickle protocols 2–4 that a state dict uses, builds plain values,
//! and calls only the constructors a state dict needs (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`); anything else (a
//! whole pickled model, an arbitrary callable) is refused naming what the file asked for.

use crate::Error;

/// Stack and memo sizes beyond any state dict (an iresnet200 has ~1,500 tensors, each a few
/// dozen stack values): a hostile pickle cannot grow them without bound.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;
const MAX_CONTAINER: usize = 1 << 22;
/// Values copied out of the memo in all: `BINGET` of a list into itself, repeated, would
/// otherwise double memory each time.
const MAX_COPIED: usize = 1 << 22;

/// A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// `FloatStorage`, `HalfStorage`, … (the class name torch wrote).
    pub dtype: String,
    /// The record name in the archive's `data/` folder.
    pub key: String,
    /// Elements in the storage.
    pub numel: u64,
}

/// A tensor view of a storage, as `_rebuild_tensor_v2` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// The values a state dict's pickle builds.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict or `OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// `module.name` pushed by `GLOBAL`: only a name until something calls it.
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// Stack marker of `MARK`.
    Mark,
}

impl Value {
    /// Values in this one, itself included.
    fn count(&self) -> usize {
        1 + match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(Value::count).sum(),
            Value::Dict(d) => d.iter().map(|(k, v)| k.count() + v.count()).sum(),
            _ => 0,
        }
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Pth(msg.into())
}

/// A value for an error message, cut short.
fn show(v: &Value) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| err("data.pkl ends in the middle of an opcode"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, Error> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| err("data.pkl ends inside a GLOBAL name"))?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| err("GLOBAL name not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, Error> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| err("string not UTF-8"))
    }
}

fn usize_of(n: u64) -> Result<usize, Error> {
    usize::try_from(n).map_err(|_| err("length does not fit this machine"))
}

fn int_of(v: &Value, what: &str) -> Result<u64, Error> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        other => Err(err(format!(
            "{what} must be a non-negative integer, found {}",
            show(other)
        ))),
    }
}

fn ints_of(v: &Value, what: &str) -> Result<Vec<u64>, Error> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|i| int_of(i, what)).collect(),
        other => Err(err(format!(
            "{what} must be a tuple, found {}",
            show(other)
        ))),
    }
}

/// `('storage', <dtype class>, key, location, numel)`.
fn persistent_load(pid: Value) -> Result<Value, Error> {
    let Value::Tuple(t) = pid else {
        return Err(err(format!("persistent id is not a tuple: {}", show(&pid))));
    };
    match t.as_slice() {
        [
            Value::Str(kind),
            Value::Global(module, dtype),
            Value::Str(key),
            _location,
            numel,
        ] if kind == "storage" && module == "torch" => Ok(Value::Storage(StorageRef {
            dtype: dtype.clone(),
            key: key.clone(),
            numel: int_of(numel, "storage size")?,
        })),
        _ => Err(err(format!(
            "persistent id {} is not a torch storage",
            show(&Value::Tuple(t.clone()))
        ))),
    }
}

/// Calls the whitelisted constructor `module.name` on `args`.
fn reduce(module: &str, name: &str, args: Value) -> Result<Value, Error> {
    let Value::Tuple(args) = args else {
        return Err(err(format!(
            "{module}.{name} called without an argument tuple"
        )));
    };
    match (module, name) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") if args.len() >= 4 => {
            let Value::Storage(storage) = &args[0] else {
                return Err(err(format!(
                    "_rebuild_tensor_v2 of {}, not a storage",
                    show(&args[0])
                )));
            };
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: int_of(&args[1], "storage offset")?,
                shape: ints_of(&args[2], "tensor size")?,
                stride: ints_of(&args[3], "tensor stride")?,
            }))
        }
        ("torch._utils", "_rebuild_parameter") if !args.is_empty() => match &args[0] {
            t @ Value::Tensor(_) => Ok(t.clone()),
            other => Err(err(format!(
                "_rebuild_parameter of {}, not a tensor",
                show(other)
            ))),
        },
        _ => Err(err(format!(
            "the file asks to run {module}.{name}, which a state dict never does (a pickled \
             Python object, not weights): refused, nothing was executed. Save the model's \
             weights with torch.save(model.state_dict(), path)"
        ))),
    }
}

/// Unpickles `data`, returning the top-level value.
pub fn unpickle(data: &[u8]) -> Result<Value, Error> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: Vec<Option<Value>> = Vec::new();
    let mut copied = 0usize;
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| err("pickle stack underflow"));
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, Error> {
        let at = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| err("pickle has no MARK to pop to"))?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    let put = |memo: &mut Vec<Option<Value>>, i: usize, v: Value| -> Result<(), Error> {
        if i >= MAX_MEMO {
            return Err(err(format!("memo index {i} out of range")));
        }
        if memo.len() <= i {
            memo.resize(i + 1, None);
        }
        memo[i] = Some(v);
        Ok(())
    };
    loop {
        if stack.len() > MAX_STACK {
            return Err(err("pickle stack grows beyond any state dict"));
        }
        let op = r.u8()?;
        match op {
            0x80 => {
                let v = r.u8()?;
                if v > 5 {
                    return Err(err(format!("pickle protocol {v} is not known")));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a length hint only
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(err("integer wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => stack.push(Value::Float(f64::from_bits(u64::from_be_bytes(
                r.take(8)?.try_into().unwrap(),
            )))),
            b'X' => {
                let n = usize_of(r.u32()? as u64)?;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8d => {
                let n = usize_of(r.u64()?)?;
                stack.push(Value::Str(r.string(n)?));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'B' => {
                let n = usize_of(r.u32()? as u64)?;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err(err("STACK_GLOBAL of non-strings")),
                }
            }
            b'q' => {
                let i = r.u8()? as usize;
                let v = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| err("BINPUT on an empty stack"))?;
                put(&mut memo, i, v)?;
            }
            b'r' => {
                let i = usize_of(r.u32()? as u64)?;
                let v = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| err("BINPUT on an empty stack"))?;
                put(&mut memo, i, v)?;
            }
            0x94 => {
                let v = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| err("MEMOIZE on an empty stack"))?;
                let i = memo.len();
                put(&mut memo, i, v)?;
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    r.u8()? as usize
                } else {
                    usize_of(r.u32()? as u64)?
                };
                let v = memo
                    .get(i)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| err(format!("BINGET of memo entry {i}, never put")))?;
                copied += v.count();
                if copied > MAX_COPIED {
                    return Err(err("the pickle copies values beyond any state dict"));
                }
                stack.push(v);
            }
            b')' => stack.push(Value::Tuple(Vec::new())),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(err("pickle stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            b']' => stack.push(Value::List(Vec::new())),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last_mut() {
                    Some(Value::List(l)) if l.len() + items.len() <= MAX_CONTAINER => {
                        l.extend(items)
                    }
                    _ => return Err(err("APPEND to something that is not a list")),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                if items.len() % 2 != 0 {
                    return Err(err("SETITEMS with an odd number of values"));
                }
                match stack.last_mut() {
                    Some(Value::Dict(d)) if d.len() + items.len() / 2 <= MAX_CONTAINER => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err(err("SETITEM on something that is not a dict")),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(persistent_load(pid)?);
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let Value::Global(module, name) = callable else {
                    return Err(err(format!(
                        "REDUCE calls {}, not a global",
                        show(&callable)
                    )));
                };
                stack.push(reduce(&module, &name, args)?);
            }
            b'b' => {
                // BUILD: set an object's state. A state dict's OrderedDict carries `_metadata`
                // (module versions) this way, and tensors their hooks: both are dropped.
                let _state = pop(&mut stack)?;
                match stack.last() {
                    Some(Value::Dict(_) | Value::Tensor(_)) => {}
                    Some(other) => return Err(err(format!("BUILD on {}", show(other)))),
                    None => return Err(err("BUILD on an empty stack")),
                }
            }
            0x81 | 0x92 => {
                // NEWOBJ / NEWOBJ_EX: instantiating a class — a pickled Python object.
                let _args = pop(&mut stack)?;
                if op == 0x92 {
                    pop(&mut stack)?;
                }
                let cls = pop(&mut stack)?;
                let name = match cls {
                    Value::Global(m, n) => format!("{m}.{n}"),
                    other => show(&other),
                };
                return Err(err(format!(
                    "the file pickles an instance of {name} (a whole Python object, not a \
                     state dict): refused, nothing was executed. Save the model's weights with \
                     torch.save(model.state_dict(), path)"
                )));
            }
            other => {
                return Err(err(format!(
                    "pickle opcode 0x{other:02x} at byte {} is not one a state dict uses",
                    r.pos - 1
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data.pkl` of `torch.save(OrderedDict(test=torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])))`,
    /// byte for byte as torch wrote it (candle's `candle-core/tests/test.pt`).
    const TORCH_WROTE: &[u8] = b"\x80\x02ccollections\x0aOrderedDict\x0aq\x00)Rq\x01X\x04\x00\x00\x00testq\x02ctorch._utils\x0a_rebuild_tensor_v2\x0aq\x03((X\x07\x00\x00\x00storageq\x04ctorch\x0aLongStorage\x0aq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x08tq\x08QK\x00K\x02K\x04\x86q\x09K\x04K\x01\x86q\x0a\x89h\x00)Rq\x0btq\x0cRq\x0ds.";

    #[test]
    fn reads_the_opcodes_torch_writes() {
        let v = unpickle(TORCH_WROTE).unwrap();
        let want = Value::Dict(vec![(
            Value::Str("test".into()),
            Value::Tensor(TensorRef {
                storage: StorageRef {
                    dtype: "LongStorage".into(),
                    key: "0".into(),
                    numel: 8,
                },
                offset: 0,
                shape: vec![2, 4],
                stride: vec![4, 1],
            }),
        )]);
        assert_eq!(v, want);
    }

    #[test]
    fn never_calls_what_a_state_dict_does_not() {
        // os.system("echo pwned"), the classic malicious pickle.
        let evil = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.";
        let e = unpickle(evil).unwrap_err().to_string();
        assert!(
            e.contains("os.system") && e.contains("nothing was executed"),
            "{e}"
        );
        // A whole pickled model: NEWOBJ of its class.
        let model = b"\x80\x02cbackbones.iresnet\nIResNet\n)\x81.";
        let e = unpickle(model).unwrap_err().to_string();
        assert!(e.contains("backbones.iresnet.IResNet"), "{e}");
    }

    #[test]
    fn memo_copies_cannot_explode() {
        // l = [0]; then 64 times: l = [l, l] through BINGET of the memo.
        let mut p = b"\x80\x02]K\x00aq\x00".to_vec();
        for _ in 0..64 {
            p.extend(b"](h\x00h\x00eq\x00");
        }
        p.push(b'.');
        let e = unpickle(&p).unwrap_err().to_string();
        assert!(e.contains("copies values"), "{e}");
    }
}
