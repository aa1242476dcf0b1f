//! From a photo to a decision: find the faces (SCRFD), choose one, align it to the ArcFace
//! template, embed it, compare. One pipeline for apps, `trainer` and the browser page, on a
//! [`Gpu`](crate::Gpu) (the engine's own or the app's device) or on the CPU backend.
//!
//! ```no_run
//! # fn main() -> Result<(), efq_engine::face::FaceError> {
//! use efq_engine::face::{FaceVerifier, Photo, Runtime};
//! let verifier = FaceVerifier::open("student.efq", "scrfd_500m_bnkps.onnx", &Runtime::Cpu)?;
//! let v = verifier.verify_blocking(&Photo::open("a.jpg")?, &Photo::open("b.jpg")?)?;
//! println!("cosine {:.3}, same person: {:?}", v.similarity, v.same);
//! # Ok(()) }
//! ```
//!
//! The rules are `trainer align`'s: detection at 640×640, photos without a face retried at
//! 320×320 (close-ups whose face outgrows the 640 anchors); several faces → the one whose box
//! centre is nearest the photo's centre unless the app names one; each embedding is the
//! flip test's (the face plus its mirror image), as the thresholds stored in models assume.

mod detector;
mod error;
mod photo;
mod recognizer;
mod runtime;
mod verifier;

pub use detector::{Choice, DETECT_SIZES, FaceDetector, Faces, Located};
pub use efq_shared::detect::{DetectConfig, Detection};
pub use error::FaceError;
pub use photo::{MAX_PIXELS, MIN_SIDE, Photo};
pub use recognizer::{Recognizer, flip_test_embeddings, with_mirrors};
pub use runtime::Runtime;
pub use verifier::{Face, FaceVerifier, PhotoVerification};
