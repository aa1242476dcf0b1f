//! Cross-crate tests live in `tests/`; this library holds what they share: where the real
//! teacher and LFW are, as `scripts/setup.sh` leaves them.

use std::path::PathBuf;

/// The real teacher (`w600k_mbf.onnx`). Panics with the fix when the set-up has not run: these
/// tests must fail loudly rather than skip silently.
pub fn teacher() -> PathBuf {
    let p = std::env::var_os("EFQ_TEACHER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/efquantface/models/w600k_mbf.onnx"))
        })
        .expect("EFQ_TEACHER or HOME must be set");
    assert!(
        p.exists(),
        "teacher {} is missing: run `. scripts/setup.sh` first",
        p.display()
    );
    p
}

/// The LFW folder (`EFQ_LFW`, default `../shared/data/lfw` beside the checkout).
pub fn lfw() -> PathBuf {
    let p = std::env::var_os("EFQ_LFW")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lfw"));
    assert!(
        p.join("pairs.txt").exists(),
        "LFW not found at {} (set EFQ_LFW)",
        p.display()
    );
    p
}

/// The Python with onnxruntime that the set-up installed.
pub fn python() -> PathBuf {
    let p = std::env::var_os("EFQ_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/efquantface/venv/bin/python"))
        })
        .expect("EFQ_PYTHON or HOME must be set");
    assert!(
        p.exists(),
        "python venv {} is missing: run `. scripts/setup.sh` first",
        p.display()
    );
    p
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The SCRFD detector set-up installed (`EFQ_DETECTOR`, else the set-up cache).
pub fn detector() -> PathBuf {
    let p = std::env::var_os("EFQ_DETECTOR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/efquantface/models/scrfd_500m_bnkps.onnx"))
        })
        .expect("EFQ_DETECTOR or HOME must be set");
    assert!(
        p.exists(),
        "detector {} is missing: run `. scripts/setup.sh` first",
        p.display()
    );
    p
}

/// `default_n` photos of `raw250-sample` (relative to it), evenly spaced over the sorted list;
/// `EFQ_DETECT_SAMPLE=all` (or a number) asks for more.
pub fn raw_sample(default_n: usize) -> Vec<PathBuf> {
    let root = lfw().join("raw250-sample");
    let mut all = Vec::new();
    for d in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            all.push(f.unwrap().path().strip_prefix(&root).unwrap().to_path_buf());
        }
    }
    all.sort();
    assert!(all.len() > 200, "raw250-sample has {} images", all.len());
    let n = match std::env::var("EFQ_DETECT_SAMPLE").ok().as_deref() {
        Some("all") => all.len(),
        Some(v) => v.parse().expect("EFQ_DETECT_SAMPLE is a number or 'all'"),
        None => default_n,
    }
    .min(all.len());
    (0..n).map(|i| all[i * all.len() / n].clone()).collect()
}
