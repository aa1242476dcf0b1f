//! What the face pipeline can refuse, one variant per thing an app can act on.

use std::path::PathBuf;

use crate::EngineError;

/// Why a photo, a model or a detector was refused. Never a panic.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// The detector found no face (at any of its sizes).
    #[error("no face found in {photo}")]
    NoFace {
        /// Which photo (its label: a file name, or `photo 2`).
        photo: String,
    },
    /// [`Choice::Only`](super::Choice::Only) was asked for and several faces were found.
    #[error("{count} faces in {photo} and none chosen: name one (faces are numbered by score)")]
    SeveralFaces {
        /// Which photo.
        photo: String,
        /// How many faces.
        count: usize,
    },
    /// [`Choice::Index`](super::Choice::Index) named a face the photo does not have.
    #[error("face {index} asked for in {photo}, which has {count}")]
    NoSuchFace {
        /// Which photo.
        photo: String,
        /// The index asked for.
        index: usize,
        /// How many faces there are.
        count: usize,
    },
    /// The image is smaller than any face the detector can find, or larger than the pipeline
    /// accepts.
    #[error("{photo} is {width}×{height}: {why}")]
    ImageSize {
        /// Which photo.
        photo: String,
        /// Its width.
        width: usize,
        /// Its height.
        height: usize,
        /// The bound it breaks.
        why: String,
    },
    /// The bytes are not an image, or the pixel buffer does not match its stated size.
    #[error("{photo}: {why}")]
    BadImage {
        /// Which photo.
        photo: String,
        /// What is wrong.
        why: String,
    },
    /// The recognizer file is not a face recognizer (unreadable, or the wrong input or output
    /// shape).
    #[error("{name} is not a face recognizer: {why}")]
    NotARecognizer {
        /// The file's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The detector file is not an SCRFD face detector.
    #[error("{name} is not an SCRFD face detector: {why}")]
    NotADetector {
        /// The file's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The detector file does not exist (or cannot be read).
    #[error("detector {path} not found ({why}); scripts/setup.sh installs scrfd_500m_bnkps.onnx")]
    DetectorMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// The reason the read failed.
        why: String,
    },
    /// The recognizer file does not exist (or cannot be read).
    #[error("model {path} not found ({why})")]
    ModelMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// The reason the read failed.
        why: String,
    },
    /// The engine failed (no adapter, lost device, a model too large for it …).
    #[error(transparent)]
    Engine(#[from] EngineError),
}
