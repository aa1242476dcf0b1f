//! The contract both halves of EfQuantFace share: the graph, the quantization arithmetic, the
//! packed model format, the CPU backend and the naive oracle it is tested against,
//! preprocessing and evaluation.

pub mod align;
pub mod builders;
pub mod cpu;
pub mod detect;
pub mod equalize;
pub mod eval;
pub mod format;
pub mod gallery;
pub mod graph;
pub mod limits;
pub mod measure;
pub mod model_file;
pub mod onnx;
pub mod preprocess;
pub mod prune;
pub mod pth;
pub mod quant;
pub mod reference;

/// Every failure the shared crate reports; each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid graph: {0}")]
    Graph(String),
    #[error("ONNX import: {0}")]
    Onnx(String),
    #[error("unsupported ONNX op '{op}' at node '{node}'")]
    UnsupportedOp { op: String, node: String },
    #[error("quantization: {0}")]
    Quant(String),
    #[error("PyTorch checkpoint: {0}")]
    Pth(String),
    #[error("model file: {0}")]
    Format(String),
    #[error("input: {0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {source}")]
    Image {
        path: String,
        source: image::ImageError,
    },
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
