//! The desktop app end to end, under Xvfb on lavapipe: the window opens, the engine runs on
//! egui's own device, the verdict is painted, and `--screenshot` captures it.
//!
//! Needs `xvfb-run` and the models `scripts/setup.sh` installs; fails loudly without them.
//! `EFQ_UPDATE_SCREENSHOT=1` copies the same-person capture to `docs/img/desktop-app.png`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The window's size in pixels (`efq-desktop`'s `WINDOW`; Xvfb's scale factor is 1).
const WINDOW: (u32, u32) = (1280, 800);
/// Generous: a first lavapipe frame plus two photos takes seconds, not minutes.
const LIMIT: Duration = Duration::from_secs(240);

/// One window at a time: two lavapipe instances on a small machine would time each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn env_path(var: &str, fallback: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| panic!("{var} or HOME must be set"));
    assert!(
        p.exists(),
        "{} is missing: run `. scripts/setup.sh` first",
        p.display()
    );
    p
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn photo(person: &str, n: u32) -> PathBuf {
    let lfw = std::env::var_os("EFQ_LFW")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/lfw"));
    let p = lfw.join(format!("raw250-sample/{person}/{person}_{n:04}.jpg"));
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// Runs `efq-desktop ARGS` under `xvfb-run`, killed after [`LIMIT`].
fn run(args: &[&std::ffi::OsStr]) -> (Output, Duration) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    let mut child = Command::new("xvfb-run")
        // xvfb-run's default screen (1280×1024×24) holds the 1280×800 window.
        .args(["-a", env!("CARGO_BIN_EXE_efq-desktop")])
        .args(args)
        // lavapipe: wgpu would otherwise also try GL on llvmpipe.
        .env("WGPU_BACKEND", "vulkan")
        // One pixel per point whatever DPI Xvfb reports: the capture is the window's size.
        .env("WINIT_X11_SCALE_FACTOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xvfb-run not found: apt-get install xvfb xauth (scripts/setup.sh)");
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("efq-desktop ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

/// Verifies two photos through the window (holding `faces` faces each) and returns the JSON
/// verdict; checks the capture.
fn verify(a: &Path, b: &Path, faces: [u64; 2], shot: &Path) -> Value {
    let model = env_path("EFQ_TEACHER", ".cache/efquantface/models/w600k_mbf.onnx");
    let detector = env_path(
        "EFQ_DETECTOR",
        ".cache/efquantface/models/scrfd_500m_bnkps.onnx",
    );
    let args = [
        "--model".as_ref(),
        model.as_os_str(),
        "--detector".as_ref(),
        detector.as_os_str(),
        "--threshold".as_ref(),
        "0.3".as_ref(),
        "--a".as_ref(),
        a.as_os_str(),
        "--b".as_ref(),
        b.as_os_str(),
        "--screenshot".as_ref(),
        shot.as_os_str(),
    ];
    let (out, took) = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The app's own timings (its last stderr line) and the whole run, for the record.
    let timings = stderr
        .lines()
        .rfind(|l| l.contains("timings_ms"))
        .unwrap_or("");
    println!("run took {took:.1?}; {timings}");
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line on stdout");
    println!("{line}");
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        [&v["a_faces"], &v["b_faces"]],
        faces.map(Value::from).each_ref(),
        "{line}"
    );
    assert!(!v["adapter"].as_str().unwrap().is_empty(), "{line}");
    check_png(shot, 500);
    v
}

/// A PNG of the whole window with real content: photos and anti-aliased text give hundreds of
/// colours or more, a blank or black capture one or two.
fn check_png(path: &Path, min_colours: usize) {
    let img = image::open(path).expect("a decodable PNG").to_rgba8();
    assert_eq!(img.dimensions(), WINDOW, "the window's size");
    let colours: std::collections::HashSet<[u8; 4]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= min_colours,
        "only {} distinct colours",
        colours.len()
    );
}

#[test]
fn same_person_photos_are_painted_as_same_person_and_captured() {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("same.png");
    let v = verify(
        &photo("Allen_Iverson", 1),
        &photo("Allen_Iverson", 2),
        [1, 1],
        &shot,
    );
    assert_eq!(v["same"], true, "{v}");
    assert!(v["similarity"].as_f64().unwrap() >= 0.3, "{v}");
    if std::env::var("EFQ_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let dest = root().join("docs/img/desktop-app.png");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&shot, &dest).unwrap();
        println!("updated {}", dest.display());
    }
}

#[test]
fn different_people_are_painted_as_different_people() {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("different.png");
    let v = verify(
        &photo("Allen_Iverson", 1),
        &photo("Anna_Faris", 1),
        [1, 2],
        &shot,
    );
    assert_eq!(v["same"], false, "{v}");
    assert!(v["similarity"].as_f64().unwrap() < 0.3, "{v}");
}

#[test]
fn missing_detector_is_reported_in_words_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("error.png");
    let model = env_path("EFQ_TEACHER", ".cache/efquantface/models/w600k_mbf.onnx");
    let missing = dir.path().join("no-such-detector.onnx");
    let a = photo("Allen_Iverson", 1);
    let args = [
        "--model".as_ref(),
        model.as_os_str(),
        "--detector".as_ref(),
        missing.as_os_str(),
        "--a".as_ref(),
        a.as_os_str(),
        "--screenshot".as_ref(),
        shot.as_os_str(),
    ];
    let (out, _) = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.trim().is_empty(), "no verdict expected: {stdout}");
    assert!(stderr.contains("no-such-detector.onnx"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The window was captured with the error in it (text only: fewer colours).
    check_png(&shot, 100);
}
