//! The whole pipeline: photos → chosen faces → crops → embeddings → a decision.

use image::RgbImage;

use super::detector::align;
use super::{Choice, FaceDetector, FaceError, Faces, Located, Photo, Recognizer};

/// One photo's face as the pipeline used it.
#[derive(Clone, Debug)]
pub struct Face {
    /// The photo's label.
    pub photo: String,
    /// Every face found in it.
    pub faces: Faces,
    /// Index of the one used, in `faces.faces`.
    pub chosen: usize,
    /// Its 112×112 aligned crop.
    pub crop: RgbImage,
    /// Its L2-normalised flip-test embedding.
    pub embedding: Vec<f32>,
}

/// Two photos compared.
#[derive(Clone, Debug)]
pub struct PhotoVerification {
    /// Cosine similarity of the two faces' embeddings.
    pub similarity: f32,
    /// The cosine decided at, when the recognizer has one.
    pub threshold: Option<f32>,
    /// Same person at that threshold (`None` without one).
    pub same: Option<bool>,
    /// The faces compared.
    pub a: Face,
    /// The faces compared.
    pub b: Face,
}

/// A detector and a recognizer: from photos of any size to faces, embeddings and decisions.
pub struct FaceVerifier {
    detector: FaceDetector,
    recognizer: Recognizer,
}

impl FaceVerifier {
    /// Puts a detector and a recognizer together (they may run on different runtimes).
    pub fn new(detector: FaceDetector, recognizer: Recognizer) -> FaceVerifier {
        FaceVerifier {
            detector,
            recognizer,
        }
    }

    /// Opens a recognizer file (`.efq`, ONNX or `.pth`) and an SCRFD detector file, both on
    /// `runtime`, the detector at [`DETECT_SIZES`](super::DETECT_SIZES).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(
        recognizer: impl AsRef<std::path::Path>,
        detector: impl AsRef<std::path::Path>,
        runtime: &super::Runtime,
    ) -> Result<FaceVerifier, FaceError> {
        let detector = FaceDetector::open(detector, &super::DETECT_SIZES, runtime)?;
        Ok(FaceVerifier::new(
            detector,
            Recognizer::open(recognizer, runtime)?,
        ))
    }

    /// The detector.
    pub fn detector(&self) -> &FaceDetector {
        &self.detector
    }

    /// The recognizer.
    pub fn recognizer(&self) -> &Recognizer {
        &self.recognizer
    }

    /// The recognizer, to set a threshold.
    pub fn recognizer_mut(&mut self) -> &mut Recognizer {
        &mut self.recognizer
    }

    /// Every face in a photo, without embedding any.
    pub async fn detect(&self, photo: &Photo) -> Result<Faces, FaceError> {
        self.detector.detect(photo).await
    }

    /// The face `choice` picks in `photo`, aligned and embedded.
    pub async fn face(&self, photo: &Photo, choice: Choice) -> Result<Face, FaceError> {
        Ok(self.faces(&[(photo, choice)]).await?.remove(0))
    }

    /// Several photos, each with its choice: detected in batches of the detector's
    /// [`FaceDetector::with_batch`], recognised in one batch.
    pub async fn faces(&self, photos: &[(&Photo, Choice)]) -> Result<Vec<Face>, FaceError> {
        let only: Vec<&Photo> = photos.iter().map(|(p, _)| *p).collect();
        let detected = self.detector.detect_batch(&only).await?;
        let mut located = Vec::with_capacity(photos.len());
        for (faces, (photo, choice)) in detected.into_iter().zip(photos) {
            let chosen = faces.choose(photo, *choice)?;
            let crop = align(photo, &faces.faces[chosen])?;
            located.push(Located {
                faces,
                chosen,
                crop,
            });
        }
        let crops: Vec<RgbImage> = located.iter().map(|l| l.crop.clone()).collect();
        let embeddings = self.recognizer.embed_crops(&crops).await?;
        Ok(located
            .into_iter()
            .zip(embeddings)
            .zip(photos)
            .map(|((l, embedding), (photo, _))| Face {
                photo: photo.label().into(),
                faces: l.faces,
                chosen: l.chosen,
                crop: l.crop,
                embedding,
            })
            .collect())
    }

    /// Another face of a photo already detected (an app whose user clicked a face): chosen
    /// among `faces`, aligned and embedded without detecting again.
    pub async fn rechoose(
        &self,
        photo: &Photo,
        faces: Faces,
        choice: Choice,
    ) -> Result<Face, FaceError> {
        let chosen = faces.choose(photo, choice)?;
        let crop = align(photo, &faces.faces[chosen])?;
        let embedding = self
            .recognizer
            .embed_crops(std::slice::from_ref(&crop))
            .await?
            .remove(0);
        Ok(Face {
            photo: photo.label().into(),
            faces,
            chosen,
            crop,
            embedding,
        })
    }

    /// Same person or not: the central face of each photo.
    pub async fn verify(&self, a: &Photo, b: &Photo) -> Result<PhotoVerification, FaceError> {
        self.verify_chosen((a, Choice::Central), (b, Choice::Central))
            .await
    }

    /// Same person or not, each photo's face chosen by the app.
    pub async fn verify_chosen(
        &self,
        a: (&Photo, Choice),
        b: (&Photo, Choice),
    ) -> Result<PhotoVerification, FaceError> {
        let mut two = self.faces(&[a, b]).await?;
        let b = two.pop().expect("two faces");
        let a = two.pop().expect("two faces");
        Ok(self.compare(a, b))
    }

    /// The decision on two faces already embedded (e.g. after the app changed its choice in
    /// one photo only).
    pub fn compare(&self, a: Face, b: Face) -> PhotoVerification {
        let similarity = a
            .embedding
            .iter()
            .zip(&b.embedding)
            .map(|(x, y)| x * y)
            .sum();
        let threshold = self.recognizer.threshold().map(|t| t.cosine);
        PhotoVerification {
            similarity,
            threshold,
            same: threshold.map(|t| similarity >= t),
            a,
            b,
        }
    }

    /// [`FaceVerifier::face`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn face_blocking(&self, photo: &Photo, choice: Choice) -> Result<Face, FaceError> {
        pollster::block_on(self.face(photo, choice))
    }

    /// [`FaceVerifier::faces`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn faces_blocking(&self, photos: &[(&Photo, Choice)]) -> Result<Vec<Face>, FaceError> {
        pollster::block_on(self.faces(photos))
    }

    /// [`FaceVerifier::rechoose`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn rechoose_blocking(
        &self,
        photo: &Photo,
        faces: Faces,
        choice: Choice,
    ) -> Result<Face, FaceError> {
        pollster::block_on(self.rechoose(photo, faces, choice))
    }

    /// [`FaceVerifier::verify`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify_blocking(&self, a: &Photo, b: &Photo) -> Result<PhotoVerification, FaceError> {
        pollster::block_on(self.verify(a, b))
    }

    /// [`FaceVerifier::verify_chosen`], blocking (native code).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify_chosen_blocking(
        &self,
        a: (&Photo, Choice),
        b: (&Photo, Choice),
    ) -> Result<PhotoVerification, FaceError> {
        pollster::block_on(self.verify_chosen(a, b))
    }
}
