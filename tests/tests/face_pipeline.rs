//! The engine's face pipeline (`efq_engine::face`) does what `trainer align` + `verify` do, by
//! hand: the same faces chosen, the same crops, the same flip-test embeddings — bit for bit on
//! the CPU backend, and the same choices on the engine (lavapipe in CI); and it refuses bad
//! photos and files with the error variant an app can act on.
//!
//! A few photos by default (CI); `EFQ_DETECT_SAMPLE=all` runs the whole `raw250-sample`.

use std::path::PathBuf;

use efq_engine::face::{Choice, FaceDetector, FaceError, FaceVerifier, Photo, Recognizer, Runtime};
use efq_shared::align::align_face;
use efq_shared::detect::{DetectConfig, Scrfd, iou, pick_central};
use efq_shared::preprocess::{flip_horizontal, pixels_to_chw};
use efq_shared::{cpu, onnx};
use efq_tests::{cosine, detector, lfw, raw_sample, teacher};

/// `n` photos of `raw250-sample`, as paths.
fn sample(default_n: usize) -> Vec<PathBuf> {
    let root = lfw().join("raw250-sample");
    raw_sample(default_n).iter().map(|p| root.join(p)).collect()
}

/// Two photos side by side: a picture with two faces.
fn two_people() -> Photo {
    let root = lfw().join("raw250-sample");
    let a = image::open(root.join("Allen_Iverson/Allen_Iverson_0001.jpg"))
        .unwrap()
        .to_rgb8();
    let b = image::open(root.join("Andy_Benes/Andy_Benes_0001.jpg"))
        .unwrap()
        .to_rgb8();
    let mut both = image::RgbImage::new(a.width() + b.width(), a.height().max(b.height()));
    image::imageops::replace(&mut both, &a, 0, 0);
    image::imageops::replace(&mut both, &b, a.width() as i64, 0);
    Photo::from_image("two people", both).unwrap()
}

#[test]
fn pipeline_on_the_cpu_equals_align_and_verify_by_hand() {
    let photos = sample(6);
    let verifier = FaceVerifier::open(teacher(), detector(), &Runtime::Cpu).unwrap();
    let loaded: Vec<Photo> = photos.iter().map(|p| Photo::open(p).unwrap()).collect();
    let asks: Vec<(&Photo, Choice)> = loaded.iter().map(|p| (p, Choice::Central)).collect();
    let faces = verifier.faces_blocking(&asks).unwrap();

    // By hand, as `trainer align` and `trainer verify` did before the pipeline existed.
    let nets = [640, 320].map(|s| Scrfd::import_file(detector(), [s, s]).unwrap());
    let imported = onnx::import_file_with_conventions(teacher()).unwrap();
    let pre = imported.preprocessing(false, None, None).unwrap();
    for (photo, face) in loaded.iter().zip(&faces) {
        let img = photo.image();
        let mut dets = Vec::new();
        for net in &nets {
            dets = net.detect(img, &DetectConfig::default()).unwrap();
            if !dets.is_empty() {
                break;
            }
        }
        assert_eq!(face.faces.faces, dets, "{}: detections", face.photo);
        let central = pick_central(&dets, img.width() as usize, img.height() as usize).unwrap();
        assert_eq!(&face.faces.faces[face.chosen], central, "{}", face.photo);
        let crop = align_face(img, &central.kps).unwrap();
        assert_eq!(face.crop, crop, "{}: crop", face.photo);
        let x = pixels_to_chw(crop.as_raw(), 112, 112, &pre);
        let mut both = x.clone();
        both.extend(flip_horizontal(&x, 112));
        let y = cpu::forward(&imported.graph, &both, 2).unwrap();
        let mut e: Vec<f32> = y[..512].iter().zip(&y[512..]).map(|(a, b)| a + b).collect();
        cpu::l2_normalize_rows(&mut e, 512);
        assert_eq!(face.embedding, e, "{}: embedding", face.photo);
    }
    // Verification is the cosine of those embeddings.
    let v = verifier.verify_blocking(&loaded[0], &loaded[1]).unwrap();
    let want: f32 = faces[0]
        .embedding
        .iter()
        .zip(&faces[1].embedding)
        .map(|(a, b)| a * b)
        .sum();
    assert_eq!(v.similarity, want);
    assert_eq!(v.same, None, "an ONNX teacher stores no threshold");
}

#[test]
fn pipeline_on_the_engine_chooses_the_faces_the_cpu_chooses() {
    let gpu =
        efq_engine::request_blocking(&Default::default()).expect("a GPU adapter (lavapipe in CI)");
    let photos = sample(2);
    let loaded: Vec<Photo> = photos.iter().map(|p| Photo::open(p).unwrap()).collect();
    let asks: Vec<(&Photo, Choice)> = loaded.iter().map(|p| (p, Choice::Central)).collect();
    let on_cpu = FaceVerifier::open(teacher(), detector(), &Runtime::Cpu).unwrap();
    let on_gpu = FaceVerifier::open(teacher(), detector(), &Runtime::Gpu(gpu)).unwrap();
    let want = on_cpu.faces_blocking(&asks).unwrap();
    let got = on_gpu.faces_blocking(&asks).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.faces.faces.len(), w.faces.faces.len(), "{}", g.photo);
        assert_eq!(g.chosen, w.chosen, "{}", g.photo);
        let (gd, wd) = (&g.faces.faces[g.chosen], &w.faces.faces[w.chosen]);
        assert!(
            iou(&gd.bbox, &wd.bbox) >= 0.99,
            "{}: {gd:?} vs {wd:?}",
            g.photo
        );
        let c = cosine(&g.embedding, &w.embedding);
        assert!(
            c >= 0.999,
            "{}: engine and CPU embeddings' cosine {c}",
            g.photo
        );
    }
}

/// Photos detected together — in passes of two, so one pass is short, and a grey photo that
/// has no face at 640 goes on to 320 — give exactly the faces each gives alone, on the CPU
/// backend and on the engine.
#[test]
fn batched_detection_finds_exactly_what_one_photo_at_a_time_finds() {
    let gpu =
        efq_engine::request_blocking(&Default::default()).expect("a GPU adapter (lavapipe in CI)");
    let mut photos: Vec<Photo> = sample(2).iter().map(|p| Photo::open(p).unwrap()).collect();
    let grey = Photo::from_pixels("grey", &vec![128u8; 200 * 150 * 4], 200, 150, 4).unwrap();
    photos.insert(1, grey);
    let refs: Vec<&Photo> = photos.iter().collect();
    for runtime in [Runtime::Cpu, Runtime::Gpu(gpu)] {
        let one =
            FaceDetector::open(detector(), &efq_engine::face::DETECT_SIZES, &runtime).unwrap();
        let want: Vec<_> = refs
            .iter()
            .map(|p| one.detect_blocking(p).unwrap())
            .collect();
        let two = one.with_batch(2).unwrap();
        let got = two.detect_batch_blocking(&refs).unwrap();
        assert_eq!(got, want, "{}", runtime.describe());
        assert!(want[1].faces.is_empty() && !want[0].faces.is_empty());
    }
}

#[test]
fn pipeline_errors_name_what_an_app_can_act_on() {
    let v = FaceVerifier::open(teacher(), detector(), &Runtime::Cpu).unwrap();
    // A photo of nothing.
    let grey = Photo::from_pixels("grey", &vec![128u8; 200 * 150 * 4], 200, 150, 4).unwrap();
    assert!(matches!(
        v.face_blocking(&grey, Choice::Central),
        Err(FaceError::NoFace { .. })
    ));
    // Too small, too large, not an image, a buffer of the wrong length.
    let e = Photo::from_pixels("tiny", &[0u8; 8 * 8 * 3], 8, 8, 3).unwrap_err();
    assert!(matches!(e, FaceError::ImageSize { width: 8, .. }), "{e}");
    let e = Photo::from_pixels("huge", &[], 100_000, 100_000, 3).unwrap_err();
    assert!(matches!(e, FaceError::BadImage { .. }), "{e}");
    let e = Photo::decode("garbage.jpg", b"not an image").unwrap_err();
    assert!(matches!(e, FaceError::BadImage { .. }), "{e}");
    assert!(e.to_string().contains("garbage.jpg"), "{e}");
    // Two faces: the central one by default, either by index, an error when one is required.
    let two = two_people();
    let faces = v.detector().detect_blocking(&two).unwrap().faces.len();
    assert!(faces >= 2, "the side-by-side photo shows {faces} faces");
    let e = v.face_blocking(&two, Choice::Only).unwrap_err();
    assert!(
        matches!(e, FaceError::SeveralFaces { count, .. } if count == faces),
        "{e}"
    );
    let e = v.face_blocking(&two, Choice::Index(faces)).unwrap_err();
    assert!(matches!(e, FaceError::NoSuchFace { .. }), "{e}");
    let first = v.face_blocking(&two, Choice::Index(0)).unwrap();
    let second = v
        .rechoose_blocking(&two, first.faces.clone(), Choice::Index(1))
        .unwrap();
    assert!(
        cosine(&first.embedding, &second.embedding) < 0.5,
        "two people, one embedding"
    );
    // Files that are not what they claim, or not there.
    let e = Recognizer::open(detector(), &Runtime::Cpu).err().unwrap();
    assert!(matches!(e, FaceError::NotARecognizer { .. }), "{e}");
    let e = FaceDetector::open(teacher(), &[640], &Runtime::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, FaceError::NotADetector { .. }), "{e}");
    let e = FaceVerifier::open(teacher(), "/nonexistent/scrfd.onnx", &Runtime::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, FaceError::DetectorMissing { .. }), "{e}");
    let e = FaceVerifier::open("/nonexistent/model.efq", detector(), &Runtime::Cpu)
        .err()
        .unwrap();
    assert!(matches!(e, FaceError::ModelMissing { .. }), "{e}");
}
