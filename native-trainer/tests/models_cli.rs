//! The commands around teachers and galleries, end to end: `.pth` checkpoints (`generate`,
//! `convert`, `inspect`), `prune`, and 1:N search (`enroll`, `identify`).

use std::process::{Command, Output};

use efq_tests::{lfw, teacher};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_generated_checkpoint_converts_and_inspects_as_its_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let (pth, onnx) = (dir.path().join("mbf.pth"), dir.path().join("mbf.onnx"));
    let run = |args: &[&std::ffi::OsStr]| ok(&trainer().args(args).output().unwrap());
    run(&[
        "generate".as_ref(),
        "--arch".as_ref(),
        "mobilefacenet".as_ref(),
        "--out".as_ref(),
        pth.as_os_str(),
    ]);
    run(&[
        "convert".as_ref(),
        pth.as_os_str(),
        "--out".as_ref(),
        onnx.as_os_str(),
    ]);
    let inspect = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&run(&[
            "inspect".as_ref(),
            p.as_os_str(),
            "--json".as_ref(),
        ]))
        .unwrap()
    };
    let (a, b) = (inspect(&pth), inspect(&onnx));
    assert_eq!(a["format"], "pth");
    assert_eq!(b["format"], "onnx");
    for k in [
        "parameters",
        "gmac",
        "ops",
        "input",
        "embedding_dim",
        "nodes",
    ] {
        assert_eq!(a[k], b[k], "{k}");
    }
    // A missing checkpoint is an error naming it.
    let o = trainer()
        .arg("inspect")
        .arg(dir.path().join("missing.pth"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.pth"));
}

#[test]
fn prune_writes_a_smaller_teacher_that_embeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sp02.onnx");
    let report: serde_json::Value = serde_json::from_str(&ok(&trainer()
        .args([
            "prune",
            "--score",
            "l2",
            "--sparsity",
            "0.2",
            "--json",
            "--model",
        ])
        .arg(teacher())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap()))
    .unwrap();
    let (before, after) = (
        report["parameters_before"].as_u64().unwrap(),
        report["parameters_after"].as_u64().unwrap(),
    );
    assert!(after < before * 8 / 10, "{before} → {after}");
    // Taylor scores, the default (one batch of the clean set), keep the same shapes, other
    // channels.
    let taylor = dir.path().join("taylor.onnx");
    let report: serde_json::Value = serde_json::from_str(&ok(&trainer()
        .args(["prune", "--taylor-batches", "1", "--json", "--model"])
        .arg(teacher())
        .arg("--lfw")
        .arg(lfw())
        .arg("--out")
        .arg(&taylor)
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(report["parameters_after"].as_u64().unwrap(), after);
    assert_ne!(
        std::fs::read(&taylor).unwrap(),
        std::fs::read(&out).unwrap()
    );
    let crop = lfw().join("insightface112/Aaron_Peirsol/Aaron_Peirsol_0001.jpg");
    let o = trainer()
        .args(["embed", "--backend", "cpu", "--model"])
        .arg(&out)
        .arg(&crop)
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(rows[0]["embedding"].as_array().unwrap().len(), 512);
}

#[test]
fn identify_finds_the_enrolled_person_in_another_photo() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("g.safetensors");
    let crops = lfw().join("insightface112");
    let person = |name: &str, k: usize| {
        let mut v: Vec<_> = std::fs::read_dir(crops.join(name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v[k].clone()
    };
    let o = trainer()
        .args(["enroll", "--backend", "cpu", "--model"])
        .arg(teacher())
        .arg("--gallery")
        .arg(&gallery)
        .arg(person("Abel_Pacheco", 0))
        .arg(person("Aaron_Peirsol", 0))
        .arg(format!("Tony={}", person("Tony_Blair", 0).display()))
        .arg(person("Allen_Iverson", 0))
        .output()
        .unwrap();
    let said = ok(&o);
    assert!(said.contains("4 faces of 4 people"), "{said}");
    let o = trainer()
        .args([
            "identify",
            "--backend",
            "cpu",
            "--json",
            "--top",
            "2",
            "--model",
        ])
        .arg(teacher())
        .arg("--gallery")
        .arg(&gallery)
        .arg(person("Abel_Pacheco", 1))
        .arg(person("Tony_Blair", 1))
        // A raw photo: its face is found and aligned first, and the row says which.
        .arg(lfw().join("raw250-sample/Allen_Iverson/Allen_Iverson_0002.jpg"))
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(rows[0]["matches"][0]["name"], "Abel_Pacheco");
    assert_eq!(rows[1]["matches"][0]["name"], "Tony");
    assert_eq!(
        rows[2]["matches"][0]["name"], "Allen_Iverson",
        "{}",
        rows[2]
    );
    assert_eq!(rows[2]["face"]["faces"], 1, "{}", rows[2]);
    assert!(rows[0]["face"].is_null(), "a crop is used as it is");
    assert_eq!(rows[0]["matches"].as_array().unwrap().len(), 2);
    // The ONNX teacher stores no threshold: a best match, but no decision.
    assert_eq!(rows[0]["decided"], false);
    // Another model's embeddings are refused, not compared.
    let o = trainer()
        .args([
            "identify",
            "--backend",
            "cpu",
            "--model",
            "other.efq",
            "--gallery",
        ])
        .arg(&gallery)
        .arg(person("Tony_Blair", 1))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("was enrolled with"));
}

/// A float `.efq` (what `finetune` writes for a pruned or distilled float student) converts to
/// the ONNX of the same network: both embed a crop to the same JSON. A quantized one is refused.
#[test]
fn convert_writes_a_float_efq_as_the_same_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let graph = efq_shared::onnx::import_file(teacher()).unwrap();
    let efq = dir.path().join("float.efq");
    efq_shared::format::PackedModel::new(graph, None)
        .unwrap()
        .save(&efq)
        .unwrap();
    let onnx = dir.path().join("float.onnx");
    ok(&trainer()
        .arg("convert")
        .arg(&efq)
        .arg("--out")
        .arg(&onnx)
        .output()
        .unwrap());
    let crop = lfw().join("insightface112/Aaron_Peirsol/Aaron_Peirsol_0001.jpg");
    let embed = |m: &std::path::Path| {
        ok(&trainer()
            .args(["embed", "--backend", "cpu", "--model"])
            .arg(m)
            .arg(&crop)
            .output()
            .unwrap())
    };
    assert_eq!(embed(&efq), embed(&onnx));
    let w8 = dir.path().join("w8.efq");
    let q = trainer()
        .args([
            "quantize",
            "--bits",
            "w8a8",
            "--calib-images",
            "8",
            "--no-threshold",
            "--model",
        ])
        .arg(teacher())
        .arg("--out")
        .arg(&w8)
        .output()
        .unwrap();
    ok(&q);
    let o = trainer()
        .arg("convert")
        .arg(&w8)
        .arg("--out")
        .arg(dir.path().join("no.onnx"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no float ONNX form"));
}

/// Distillation into another architecture, the iresnet case: a generated iresnet18
/// student trained from a generated iresnet50 teacher (the feature loss with Adam, the float
/// recipe), exported as a float student of iresnet18's size; and `generate --like` makes the
/// half-width MobileFaceNet student of the real teacher.
#[test]
fn a_smaller_architecture_distils_from_a_larger_one() {
    let dir = tempfile::tempdir().unwrap();
    let (r50, r18) = (dir.path().join("r50.onnx"), dir.path().join("r18.onnx"));
    for (arch, out) in [("iresnet50", &r50), ("iresnet18", &r18)] {
        ok(&trainer()
            .args(["generate", "--arch", arch, "--out"])
            .arg(out)
            .output()
            .unwrap());
    }
    let params = |m: &std::path::Path| {
        let info: serde_json::Value = serde_json::from_str(&ok(&trainer()
            .arg("inspect")
            .arg(m)
            .arg("--json")
            .output()
            .unwrap()))
        .unwrap();
        info["parameters"].as_u64().unwrap()
    };
    let run = dir.path().join("r18-from-r50");
    let o = trainer()
        .args([
            "finetune",
            "--fraction",
            "0.002",
            "--batch",
            "4",
            "--stop-after",
            "1",
        ])
        .args(["--no-eval", "--train-crops", "insightface112", "--teacher"])
        .arg(&r50)
        .arg("--student-init")
        .arg(&r18)
        .arg("--lfw")
        .arg(lfw())
        .arg("--out-dir")
        .arg(&run)
        .output()
        .unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("float student: --loss quantface"));
    let student = run.join("student.efq");
    assert_eq!(params(&student), params(&r18));
    assert!(params(&r18) < params(&r50));

    let half = dir.path().join("half.onnx");
    ok(&trainer()
        .args(["generate", "--width", "0.5", "--like"])
        .arg(teacher())
        .arg("--out")
        .arg(&half)
        .output()
        .unwrap());
    assert!(params(&half) * 2 < params(&teacher()));
}
