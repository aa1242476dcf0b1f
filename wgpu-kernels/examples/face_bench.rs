//! Latency of the face pipeline per photo pair — detection, alignment and both flip-test
//! embeddings included — on the CPU backend and on the engine (a GPU, or lavapipe), in one run.
//!
//! cargo run --release -p efq-engine --example face_bench -- PHOTO_DIR [PAIRS] [MODEL] [DETECTOR]
//!
//! PHOTO_DIR: a folder of person folders (e.g. LFW's raw250-sample); PAIRS consecutive photo
//! pairs (default 10) after one warm-up pair. MODEL and DETECTOR default to $EFQ_TEACHER and
//! $EFQ_DETECTOR. A second table times detection alone over the same photos: one photo per
//! network pass against batches of 4 (`FaceDetector::with_batch`).

use std::time::Instant;

use efq_engine::face::{DETECT_SIZES, FaceDetector, FaceVerifier, Photo, Runtime};
use efq_engine::{GpuOptions, request_blocking};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: face_bench PHOTO_DIR [PAIRS] [MODEL] [DETECTOR]")?;
    let pairs: usize = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let model = args
        .get(2)
        .cloned()
        .map_or_else(|| env("EFQ_TEACHER"), Ok)?;
    let detector = args
        .get(3)
        .cloned()
        .map_or_else(|| env("EFQ_DETECTOR"), Ok)?;
    let mut files = Vec::new();
    for person in std::fs::read_dir(dir)? {
        for f in std::fs::read_dir(person?.path())? {
            files.push(f?.path());
        }
    }
    files.sort();
    let photos: Vec<Photo> = files
        .iter()
        .take(2 * pairs + 2)
        .map(Photo::open)
        .collect::<Result<_, _>>()?;
    let mut runtimes = vec![Runtime::Cpu];
    match request_blocking(&GpuOptions::default()) {
        Ok(gpu) => runtimes.push(Runtime::Gpu(gpu)),
        Err(e) => eprintln!("no engine run: {e}"),
    }
    println!("| runtime | pairs | median ms per pair | mean |");
    println!("|---|---:|---:|---:|");
    for runtime in &runtimes {
        let verifier = FaceVerifier::open(&model, &detector, runtime)?;
        let mut ms = Vec::new();
        for (k, pair) in photos.chunks_exact(2).enumerate() {
            let t = Instant::now();
            match verifier.verify_blocking(&pair[0], &pair[1]) {
                Ok(_) => {}
                Err(e) => eprintln!("skipped: {e}"),
            }
            if k > 0 {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        ms.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {:.1} | {:.1} |",
            runtime.describe(),
            ms.len(),
            ms[ms.len() / 2],
            mean
        );
    }
    println!("\n| runtime | photos | detection, one per pass, ms per photo | batches of 4 |");
    println!("|---|---:|---:|---:|");
    let refs: Vec<&Photo> = photos.iter().collect();
    for runtime in &runtimes {
        let one = FaceDetector::open(&detector, &DETECT_SIZES, runtime)?;
        let four = FaceDetector::open(&detector, &DETECT_SIZES, runtime)?.with_batch(4)?;
        one.detect_batch_blocking(&refs[..4])?; // warm-up: pipelines compiled
        four.detect_batch_blocking(&refs[..4])?;
        let per_photo = |d: &FaceDetector| -> Result<f64, Box<dyn std::error::Error>> {
            let t = Instant::now();
            d.detect_batch_blocking(&refs)?;
            Ok(t.elapsed().as_secs_f64() * 1e3 / refs.len() as f64)
        };
        let (a, b) = (per_photo(&one)?, per_photo(&four)?);
        println!(
            "| {} | {} | {a:.1} | {b:.1} |",
            runtime.describe(),
            refs.len()
        );
    }
    Ok(())
}
