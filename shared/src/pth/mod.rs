//! PyTorch checkpoints (`backbone.pth`, as InsightFace's arcface_torch saves them) read without
//! Python: the zip archive `torch.save` writes, a restricted unpickler that executes nothing,
//! and the arcface_torch backbones rebuilt as the ONNX graph their export would be, which the
//! ONNX importer then reads like any teacher.
//!
//! ```no_run
//! let imported = efq_shared::pth::import_file("backbone.pth")?;
//! println!("{} nodes", imported.graph.nodes.len());
//! # Ok::<(), efq_shared::Error>(())
//! ```

mod arcface;
mod archive;
pub mod generate;
mod pickle;
mod write;

use std::path::Path;

use prost::Message;

pub use arcface::{Arch, to_onnx};
pub use archive::{StateDict, read_state_dict};
pub use write::write_state_dict;

use crate::Error;
use crate::onnx::Imported;

/// Whether `path` names a PyTorch checkpoint (`.pth`, `.pt`) rather than ONNX or a packed model.
pub fn is_checkpoint(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pth") || e.eq_ignore_ascii_case("pt"))
}

/// The ONNX bytes of the arcface_torch backbone in a checkpoint (what `trainer convert` writes).
pub fn onnx_bytes(bytes: &[u8], name: &str) -> Result<Vec<u8>, Error> {
    Ok(to_onnx(&read_state_dict(bytes)?, name)?.encode_to_vec())
}

/// Imports an arcface_torch checkpoint as the ONNX importer imports the same network's export.
pub fn import_bytes(bytes: &[u8], name: &str) -> Result<Imported, Error> {
    crate::onnx::import_bytes_with_conventions(&onnx_bytes(bytes, name)?, name)
}

/// [`import_bytes`] on a file; errors name the file.
pub fn import_file(path: impl AsRef<Path>) -> Result<Imported, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_bytes(&bytes, &name).map_err(|e| match e {
        Error::Pth(m) => Error::Pth(format!("{}: {m}", path.display())),
        Error::Onnx(m) => Error::Onnx(format!("{}: {m}", path.display())),
        other => other,
    })
}
