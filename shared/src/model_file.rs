//! Any recognizer file, told apart by its bytes rather than its name: a packed `.efq` student
//! (safetensors), an ONNX model, or an arcface_torch `.pth` checkpoint (a zip). Apps and the
//! browser page load what a user hands them through [`load_bytes`]; the trainer's commands,
//! which also take convention flags for ONNX, load files by extension.

use crate::Error;
use crate::format::{PackedModel, Preprocessing, Threshold};
use crate::graph::Graph;

/// What kind of file some bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A packed EfQuantFace model (safetensors with the manifest).
    Packed,
    /// An ONNX model (anything that is neither of the others is tried as ONNX).
    Onnx,
    /// A PyTorch checkpoint (`torch.save`'s zip archive).
    Pth,
}

/// Tells the kind from the first bytes: a zip's local-header signature, or safetensors' 8-byte
/// little-endian header length followed by the JSON header's `{`.
pub fn sniff(bytes: &[u8]) -> Kind {
    if bytes.starts_with(b"PK\x03\x04") {
        return Kind::Pth;
    }
    if bytes.len() > 9 && bytes[8] == b'{' {
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if n <= (bytes.len() - 8) as u64 {
            return Kind::Packed;
        }
    }
    Kind::Onnx
}

/// A recognizer ready to run: its graph, the preprocessing it takes, its stored threshold.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    pub graph: Graph,
    pub preprocessing: Preprocessing,
    /// The verification threshold a packed file stores (ONNX and `.pth` files carry none).
    pub threshold: Option<Threshold>,
    pub kind: Kind,
}

/// Loads a recognizer file's bytes of any [`Kind`]; ONNX and `.pth` at the default input
/// conventions (RGB, `(pixel − 127.5) / 127.5`, or what the graph normalises itself).
pub fn load_bytes(bytes: &[u8], name: &str) -> Result<LoadedModel, Error> {
    let kind = sniff(bytes);
    let imported = match kind {
        Kind::Packed => {
            let m = PackedModel::from_bytes(bytes)?;
            return Ok(LoadedModel {
                graph: m.graph,
                preprocessing: m.manifest.preprocessing,
                threshold: m.manifest.threshold,
                kind,
            });
        }
        Kind::Pth => crate::pth::import_bytes(bytes, name)?,
        Kind::Onnx => crate::onnx::import_bytes_with_conventions(bytes, name)?,
    };
    let preprocessing = imported.preprocessing(false, None, None)?;
    Ok(LoadedModel {
        graph: imported.graph,
        preprocessing,
        threshold: None,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_the_three_kinds_apart() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Kind::Pth);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        st.push(0);
        assert_eq!(sniff(&st), Kind::Packed);
        // A header length past the end is not safetensors.
        let mut bad = 99u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{}x");
        assert_eq!(sniff(&bad), Kind::Onnx);
        assert_eq!(sniff(b"\x08\x07\x12\x04"), Kind::Onnx);
        assert_eq!(sniff(b""), Kind::Onnx);
    }
}
