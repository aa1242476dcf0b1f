//! Writes a state dict in the layout `torch.save(model.state_dict(), path)` produces — the zip
//! records and the protocol-2 pickle opcodes torch 2.x emits, `OrderedDict` with `_metadata`
//! and `num_batches_tracked` included — so tests and the fuzzer can generate arcface_torch
//! checkpoints without Python.

use std::io::{Cursor, Write};

use super::archive::StateDict;
use crate::Error;

/// Pickle opcodes (Python's `pickle` module names).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const BINPUT: u8 = b'q';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINPUT: u8 = b'r';
    pub const LONG_BINGET: u8 = b'j';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_DICT: u8 = b'}';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const NEWFALSE: u8 = 0x89;
    pub const BINPERSID: u8 = b'Q';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const BUILD: u8 = b'b';
    pub const STOP: u8 = b'.';
}

struct Pickler {
    out: Vec<u8>,
    memo: usize,
}

impl Pickler {
    fn put(&mut self) {
        match u8::try_from(self.memo) {
            Ok(m) => self.out.extend([op::BINPUT, m]),
            Err(_) => {
                self.out.push(op::LONG_BINPUT);
                self.out.extend((self.memo as u32).to_le_bytes());
            }
        }
        self.memo += 1;
    }
    fn get(&mut self, m: usize) {
        match u8::try_from(m) {
            Ok(m) => self.out.extend([op::BINGET, m]),
            Err(_) => {
                self.out.push(op::LONG_BINGET);
                self.out.extend((m as u32).to_le_bytes());
            }
        }
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(op::GLOBAL);
        self.out
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self.put();
    }
    fn str(&mut self, s: &str) {
        self.out.push(op::BINUNICODE);
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.put();
    }
    fn int(&mut self, v: u64) {
        if v < 256 {
            self.out.extend([op::BININT1, v as u8]);
        } else if v < 65_536 {
            self.out.push(op::BININT2);
            self.out.extend((v as u16).to_le_bytes());
        } else if v < 1 << 31 {
            self.out.push(op::BININT);
            self.out.extend((v as u32).to_le_bytes());
        } else {
            self.out.extend([op::LONG1, 8]);
            self.out.extend(v.to_le_bytes());
        }
    }
    fn tuple(&mut self, v: &[usize]) {
        if v.is_empty() {
            self.out.push(op::EMPTY_TUPLE);
            return;
        }
        self.out.push(op::MARK);
        for &x in v {
            self.int(x as u64);
        }
        self.out.push(op::TUPLE);
        self.put();
    }
    /// `OrderedDict()` built from the memoised global at `od`.
    fn empty_ordered_dict(&mut self, od: usize) {
        self.get(od);
        self.out.extend([op::EMPTY_TUPLE, op::REDUCE]);
        self.put();
    }
}

/// One entry to write: a float32 tensor, or an int64 scalar (`num_batches_tracked`).
enum Entry<'a> {
    Float(&'a [usize], &'a [f32]),
    Long(i64),
}

/// The bytes of `torch.save(sd)` for a state dict; `archive` names the records' folder
/// (torch uses the file's stem). `sd.other` entries are written as int64 scalars after the
/// BatchNorm statistics they belong to, as torch orders them.
pub fn write_state_dict(sd: &StateDict, archive: &str) -> Result<Vec<u8>, Error> {
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for (k, t) in &sd.tensors {
        entries.push((k.clone(), Entry::Float(&t.shape, &t.data)));
        if let Some(bn) = k.strip_suffix(".running_var") {
            let tracked = format!("{bn}.num_batches_tracked");
            if sd.other.contains(&tracked) {
                entries.push((tracked, Entry::Long(0)));
            }
        }
    }
    let mut p = Pickler {
        out: vec![op::PROTO, 2],
        memo: 0,
    };
    p.global("collections", "OrderedDict");
    let od = 0usize;
    p.out.extend([op::EMPTY_TUPLE, op::REDUCE]);
    p.put();
    let mut rebuild: Option<usize> = None;
    let mut storage_globals: Vec<(&str, usize)> = Vec::new();
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for chunk in entries.chunks(1000) {
        p.out.push(op::MARK);
        for (key, e) in chunk {
            p.str(key);
            match rebuild {
                Some(m) => p.get(m),
                None => {
                    rebuild = Some(p.memo);
                    p.global("torch._utils", "_rebuild_tensor_v2");
                }
            }
            let (dtype, shape, bytes): (&str, &[usize], Vec<u8>) = match e {
                Entry::Float(shape, data) => (
                    "FloatStorage",
                    shape,
                    data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
                Entry::Long(v) => ("LongStorage", &[], v.to_le_bytes().to_vec()),
            };
            let numel = shape.iter().product::<usize>();
            let storage_key = records.len().to_string();
            records.push((storage_key.clone(), bytes));
            p.out.extend([op::MARK, op::MARK]);
            p.str("storage");
            match storage_globals.iter().find(|(d, _)| *d == dtype) {
                Some(&(_, m)) => p.get(m),
                None => {
                    storage_globals.push((dtype, p.memo));
                    p.global("torch", dtype);
                }
            }
            p.str(&storage_key);
            p.str("cpu");
            p.int(numel as u64);
            p.out.push(op::TUPLE);
            p.put();
            p.out.push(op::BINPERSID);
            p.int(0);
            p.tuple(shape);
            let mut stride = vec![1usize; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                stride[i] = stride[i + 1] * shape[i + 1];
            }
            p.tuple(&stride);
            p.out.push(op::NEWFALSE);
            p.empty_ordered_dict(od);
            p.out.push(op::TUPLE);
            p.put();
            p.out.push(op::REDUCE);
            p.put();
        }
        p.out.push(op::SETITEMS);
    }
    // The state dict's `_metadata`: {'': {'version': 1}} — module versions, ignored on reading.
    p.out.push(op::EMPTY_DICT);
    p.put();
    p.str("_metadata");
    p.empty_ordered_dict(od);
    p.str("");
    p.out.push(op::EMPTY_DICT);
    p.put();
    p.str("version");
    p.int(1);
    p.out
        .extend([op::SETITEM, op::SETITEM, op::SETITEM, op::BUILD, op::STOP]);

    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut record = |name: String, data: &[u8]| -> Result<(), Error> {
        zip.start_file(name, opts)
            .map_err(|e| Error::Pth(format!("zip: {e}")))?;
        zip.write_all(data)
            .map_err(|e| Error::Pth(format!("zip: {e}")))
    };
    record(format!("{archive}/data.pkl"), &p.out)?;
    record(format!("{archive}/byteorder"), b"little")?;
    for (key, data) in &records {
        record(format!("{archive}/data/{key}"), data)?;
    }
    record(format!("{archive}/version"), b"3\n")?;
    let cursor = zip.finish().map_err(|e| Error::Pth(format!("zip: {e}")))?;
    Ok(cursor.into_inner())
}
