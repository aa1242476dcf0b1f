//! Same person or not, from two photos of any size: the engine's whole face pipeline.
//!
//! cargo run --release -p efq-engine --example verify_photos -- a.jpg b.jpg [MODEL] [DETECTOR]
//!
//! MODEL (a packed `.efq` student, ONNX or `.pth`) and DETECTOR (SCRFD ONNX) default to what
//! `scripts/setup.sh` installs ($EFQ_TEACHER, $EFQ_DETECTOR). Runs on a hardware GPU when
//! there is one, else on the CPU backend.

use efq_engine::face::{FaceVerifier, Photo, PhotoVerification, Runtime};
use efq_engine::{GpuOptions, request_blocking};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&std::env::args().skip(1).collect::<Vec<_>>()).map(drop)
}

/// Verifies and prints; returns the decision (wgpu-kernels/tests/examples.rs runs this).
pub fn run(args: &[String]) -> Result<PhotoVerification, Box<dyn std::error::Error>> {
    let [a, b, rest @ ..] = args else {
        return Err("usage: verify_photos A.jpg B.jpg [MODEL] [DETECTOR]".into());
    };
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set: pass the path"));
    let model = rest
        .first()
        .cloned()
        .map_or_else(|| env("EFQ_TEACHER"), Ok)?;
    let detector = rest
        .get(1)
        .cloned()
        .map_or_else(|| env("EFQ_DETECTOR"), Ok)?;

    // A software adapter (lavapipe) is slower than the CPU backend: use a real GPU only.
    let runtime = match request_blocking(&GpuOptions::default()) {
        Ok(gpu) if !gpu.adapter().software => Runtime::Gpu(gpu),
        _ => Runtime::Cpu,
    };
    let verifier = FaceVerifier::open(&model, &detector, &runtime)?;
    let v = verifier.verify_blocking(&Photo::open(a)?, &Photo::open(b)?)?;

    for face in [&v.a, &v.b] {
        let (n, d) = (face.faces.faces.len(), face.faces.faces[face.chosen]);
        let [x0, y0, x1, y1] = d.bbox.map(|c| c.round());
        let at = format!("({x0}, {y0})–({x1}, {y1}), score {:.2}", d.score);
        println!(
            "{}: {n} face(s), using #{} at {at}",
            face.photo, face.chosen
        );
    }
    let verdict = match v.same {
        Some(true) => "same person",
        Some(false) => "different people",
        None => "no threshold stored in this model to decide at",
    };
    println!(
        "cosine {:.4} on {} → {verdict}",
        v.similarity,
        runtime.describe()
    );
    Ok(v)
}
