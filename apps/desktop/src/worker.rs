//! The engine on its own thread: compiling the models and running a photo through the
//! pipeline take from milliseconds (a real GPU) to seconds (lavapipe), and the window must
//! keep repainting meanwhile. The UI sends [`Request`]s and polls [`Reply`]s; each reply
//! also asks egui for a repaint so that it is shown at once.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use efq_engine::face::{Choice, Face, FaceVerifier, Photo, Runtime};
use efq_shared::format::Threshold;
use image::RgbImage;

/// What the window asks of the engine.
#[derive(Debug)]
pub enum Request {
    /// Read this file into photo slot `slot` (0: A, 1: B) and use its central face.
    Open {
        /// Which photo panel.
        slot: usize,
        /// The image file.
        path: PathBuf,
    },
    /// Use face `index` of the photo already in `slot` (a clicked box): no new detection.
    Choose {
        /// Which photo panel.
        slot: usize,
        /// Index in the photo's detections.
        index: usize,
    },
}

/// The engine's answer to a request, or its start-up.
#[derive(Debug)]
pub enum Reply {
    /// Models compiled; requests are served from now on.
    Ready(Engine),
    /// The models could not be opened: nothing more will be served.
    Failed(String),
    /// The decoded pixels of a photo (or why it could not be read), before any face is found.
    Image {
        /// Which photo panel.
        slot: usize,
        /// The file's path, as the photo's label.
        label: String,
        /// The pixels to show.
        image: Result<RgbImage, String>,
    },
    /// The faces of the photo in `slot` and the chosen one embedded (or why not).
    Face {
        /// Which photo panel.
        slot: usize,
        /// The pipeline's result.
        face: Result<Face, String>,
        /// Wall time of the request on the worker, in milliseconds.
        ms: f64,
    },
    /// The two chosen faces compared; `None` until both photos have one.
    Verdict(Option<Verdict>),
}

/// What the UI needs to know about the opened models.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The recognizer's file name (recorded in galleries).
    pub model: String,
    /// Values per embedding.
    pub dim: usize,
    /// The cosine decided at, if any.
    pub threshold: Option<f32>,
    /// Where that threshold comes from.
    pub threshold_source: String,
    /// Time to open and compile both networks, in milliseconds.
    pub ms: f64,
}

/// Same person or not.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    /// Cosine similarity of the two chosen faces.
    pub similarity: f32,
    /// The cosine decided at, if any.
    pub threshold: Option<f32>,
    /// `None` without a threshold.
    pub same: Option<bool>,
}

/// Where the worker's models live and how to decide.
pub struct Config {
    /// Recognizer file.
    pub model: PathBuf,
    /// SCRFD detector file.
    pub detector: PathBuf,
    /// Cosine to decide at when the model stores none.
    pub threshold: Option<f32>,
    /// The engine's device (the one egui draws with).
    pub runtime: Runtime,
}

/// Starts the worker; `wake` is called after every reply (egui's `request_repaint`).
pub fn spawn(
    config: Config,
    wake: impl Fn() + Send + 'static,
) -> (Sender<Request>, Receiver<Reply>) {
    let (req_tx, req_rx) = channel();
    let (reply_tx, reply_rx) = channel();
    std::thread::Builder::new()
        .name("efq-engine".into())
        .spawn(move || {
            let send = |r: Reply| {
                // The window is gone when this fails: nothing left to tell.
                let _ = reply_tx.send(r);
                wake();
            };
            let mut state = match open(config) {
                Ok((state, engine)) => {
                    send(Reply::Ready(engine));
                    state
                }
                Err(e) => return send(Reply::Failed(e)),
            };
            for request in req_rx {
                state.serve(request, &send);
            }
        })
        .expect("spawning a thread");
    (req_tx, reply_rx)
}

fn open(config: Config) -> Result<(State, Engine), String> {
    let start = Instant::now();
    let mut verifier = FaceVerifier::open(&config.model, &config.detector, &config.runtime)
        .map_err(|e| e.to_string())?;
    let recognizer = verifier.recognizer_mut();
    let threshold_source = match (recognizer.threshold(), config.threshold) {
        (Some(t), _) => format!("stored in the model ({}, FAR {:e})", t.source, t.far),
        (None, Some(cosine)) => {
            recognizer.set_threshold(Threshold {
                // Not measured: the user chose it.
                far: f64::NAN,
                cosine,
                source: "--threshold".into(),
            });
            "--threshold".into()
        }
        (None, None) => "none: the model stores none and no --threshold was given".into(),
    };
    let model = config
        .model
        .file_name()
        .map_or_else(|| recognizer.name().into(), |n| n.to_string_lossy().into());
    let engine = Engine {
        model,
        dim: recognizer.embedding_dim(),
        threshold: recognizer.threshold().map(|t| t.cosine),
        threshold_source,
        ms: start.elapsed().as_secs_f64() * 1e3,
    };
    let state = State {
        verifier,
        photos: [None, None],
        faces: [None, None],
    };
    Ok((state, engine))
}

/// The worker's copy of each slot: the photo and its chosen face, so that a click re-chooses
/// without detecting again and the verdict is recomputed from the latest pair.
struct State {
    verifier: FaceVerifier,
    photos: [Option<Photo>; 2],
    faces: [Option<Face>; 2],
}

impl State {
    fn serve(&mut self, request: Request, send: &impl Fn(Reply)) {
        let start = Instant::now();
        match request {
            Request::Open { slot, path } => {
                self.photos[slot] = None;
                self.faces[slot] = None;
                let label = path.display().to_string();
                match Photo::open(&path) {
                    Ok(photo) => {
                        let image = Ok(photo.image().clone());
                        send(Reply::Image { slot, label, image });
                        let face = self.verifier.face_blocking(&photo, Choice::Central);
                        self.photos[slot] = Some(photo);
                        self.settle(slot, face.map_err(|e| e.to_string()), start, send);
                    }
                    Err(e) => {
                        let image = Err(e.to_string());
                        send(Reply::Image { slot, label, image });
                    }
                }
            }
            Request::Choose { slot, index } => {
                if let (Some(photo), Some(face)) = (&self.photos[slot], &self.faces[slot]) {
                    let faces = face.faces.clone();
                    let face = self
                        .verifier
                        .rechoose_blocking(photo, faces, Choice::Index(index));
                    self.settle(slot, face.map_err(|e| e.to_string()), start, send);
                }
            }
        }
        // Every request ends with a verdict: the window counts them to know when it is idle.
        let verdict = match &self.faces {
            [Some(a), Some(b)] => {
                let v = self.verifier.compare(a.clone(), b.clone());
                Some(Verdict {
                    similarity: v.similarity,
                    threshold: v.threshold,
                    same: v.same,
                })
            }
            _ => None,
        };
        send(Reply::Verdict(verdict));
    }

    fn settle(
        &mut self,
        slot: usize,
        face: Result<Face, String>,
        start: Instant,
        send: &impl Fn(Reply),
    ) {
        self.faces[slot] = face.as_ref().ok().cloned();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        send(Reply::Face { slot, face, ms });
    }
}
