//! `trainer eval` end to end on a slice of LFW: table, JSON report and ROC plot.

use std::process::Command;

use efq_tests::{lfw, teacher};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

#[test]
fn eval_writes_report_json_and_roc_png() {
    let out = tempfile::tempdir().unwrap();
    let o = trainer()
        .args([
            "eval", "--limit", "240", "--batch", "32", "--json", "--model",
        ])
        .arg(teacher())
        .arg("--lfw")
        .arg(lfw())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["images"], 240);
    let acc = report["flip"]["ten_fold"]["mean_accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        acc > 0.9,
        "a real teacher verifies LFW faces: accuracy {acc}"
    );
    let png = std::fs::read(out.path().join("roc.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(saved, report);
}

#[test]
fn missing_model_is_a_clear_error() {
    let o = trainer()
        .args(["eval", "--model", "/nonexistent/model.onnx"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/model.onnx") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn corrupt_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.efq");
    std::fs::write(&bad, b"definitely not a model").unwrap();
    let o = trainer()
        .args(["eval", "--lfw"])
        .arg(lfw())
        .arg("--model")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.efq") && err.contains("corrupt"), "{err}");
}
