//! ONNX import into the shared [`Graph`](crate::graph::Graph) (and export, so tests can generate InsightFace-layout
//! files). The protobuf messages are declared with `prost` for the subset of `onnx.proto` that
//! face-recognition CNNs use; field numbers follow onnx.proto3 exactly.

mod conventions;
mod export;
mod import;
mod ops;
mod proto;

pub use conventions::BakedPreprocessing;
pub use export::export_bytes;
pub use import::{
    Imported, import_bytes, import_bytes_with_conventions, import_file,
    import_file_with_conventions,
};
pub use ops::{MAX_OPSET, MIN_OPSET};
pub(crate) use ops::{check_nearest_resize, conv_attrs};
pub use proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
pub(crate) use proto::{Attrs, Constant, decode_tensor};
