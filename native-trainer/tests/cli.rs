//! `trainer eval` end to end on a slice of LFW: table, JSON report and ROC plot.

use std::process::Command;

use efq_tests::{lfw, teacher};

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

/// Asserts that the run failed; its error output.
fn failure_message(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "the run should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    let err = failure_message(&o);
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
    let err = failure_message(&o);
    assert!(err.contains("bad.efq") && err.contains("corrupt"), "{err}");
}

/// A w8a8 post-training-quantized teacher, calibrated on a few crops (quick).
fn quantized_teacher(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("mbf-w8a8.efq");
    let o = trainer()
        .args([
            "quantize",
            "--bits",
            "w8a8",
            "--calib-images",
            "32",
            "--model",
        ])
        .arg(teacher())
        .arg("--lfw")
        .arg(lfw())
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    model
}

#[test]
fn eval_through_the_wgpu_engine_reports_exactly_what_libtorch_reports() {
    let dir = tempfile::tempdir().unwrap();
    let model = quantized_teacher(dir.path());
    let report = |backend: &str| -> serde_json::Value {
        let o = trainer()
            .args([
                "eval",
                "--limit",
                "240",
                "--batch",
                "16",
                "--json",
                "--backend",
                backend,
            ])
            .arg("--model")
            .arg(&model)
            .arg("--lfw")
            .arg(lfw())
            .arg("--out")
            .arg(dir.path().join(backend))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (tch, wgpu) = (report("tch"), report("wgpu"));
    assert!(wgpu["device"].as_str().unwrap().contains("wgpu engine"));
    // The integer path is bit-exact in both, so every metric is identical, not merely close.
    for key in ["flip", "no_flip"] {
        assert_eq!(tch[key], wgpu[key], "{key}");
    }
    assert!(tch["flip"]["ten_fold"]["mean_accuracy"].as_f64().unwrap() > 0.9);
}

#[test]
fn verify_scores_the_same_person_above_two_different_people() {
    let crops = lfw().join("insightface112");
    let first = |person: &str, k: usize| {
        let mut v: Vec<_> = std::fs::read_dir(crops.join(person))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v[k].clone()
    };
    let verify = |a: &std::path::Path, b: &std::path::Path| -> serde_json::Value {
        let o = trainer()
            .args(["verify", "--json", "--model"])
            .arg(teacher())
            .arg(a)
            .arg(b)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let same = verify(&first("Abel_Pacheco", 0), &first("Abel_Pacheco", 1));
    let diff = verify(&first("Abel_Pacheco", 0), &first("Aaron_Peirsol", 0));
    let s = same["similarity"].as_f64().unwrap();
    let d = diff["similarity"].as_f64().unwrap();
    assert!(s > 0.4 && d < 0.2, "same {s}, different {d}");
    // An ONNX teacher stores no threshold, so there is no verdict rather than a made-up one.
    assert!(same["same"].is_null() && same["threshold"].is_null());
}

#[test]
fn verify_rejects_a_file_that_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let o = trainer()
        .args(["verify", "--backend", "cpu", "--model"])
        .arg(teacher())
        .arg(&bad)
        .arg(&bad)
        .output()
        .unwrap();
    let err = failure_message(&o);
    assert!(
        err.contains("notes.jpg") && err.contains("cannot decode"),
        "{err}"
    );
}

/// Each kind of student gets its own recipe by default: a float one (here the teacher itself,
/// as a pruned or smaller network would be) the feature loss with Adam at 1e-4, a quantized
/// one EKD with SGD at 1e-3; an option given on the command line still wins.
#[test]
fn finetune_defaults_to_the_recipe_of_the_students_kind() {
    let dir = tempfile::tempdir().unwrap();
    let quantized = quantized_teacher(dir.path());
    let run = |init: &std::path::Path, out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let o = trainer()
            .args([
                "finetune",
                "--fraction",
                "0.004",
                "--batch",
                "8",
                "--stop-after",
                "1",
            ])
            .args(["--no-eval", "--train-crops", "insightface112"])
            .args(extra)
            .arg("--student-init")
            .arg(init)
            .arg("--lfw")
            .arg(lfw())
            .arg("--teacher")
            .arg(teacher())
            .arg("--out-dir")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        (c["loss"].clone(), c["optimizer"].clone(), c["lr"].clone())
    };
    assert_eq!(
        run(&teacher(), "float", &[]),
        ("quantface".into(), "adam".into(), 1e-4.into())
    );
    assert_eq!(
        run(&quantized, "quantized", &[]),
        ("ekd".into(), "sgd".into(), 1e-3.into())
    );
    assert_eq!(
        run(&teacher(), "float-ekd", &["--loss", "ekd"]),
        ("ekd".into(), "adam".into(), 1e-4.into())
    );
}

#[test]
fn finetune_reads_a_toml_config_and_command_line_options_win() {
    let dir = tempfile::tempdir().unwrap();
    let init = quantized_teacher(dir.path());
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "loss = \"quantface\"\nfraction = 0.005\nbatch = 8\nlr = 0.5\ncheckpoint_every = 1\npositives = \"both\"\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = trainer()
        .args(["finetune", "--config"])
        .arg(&config)
        .args([
            "--lr",
            "0.002",
            "--stop-after",
            "2",
            "--no-eval",
            "--train-crops",
            "insightface112",
        ])
        .arg("--student-init")
        .arg(&init)
        .arg("--lfw")
        .arg(lfw())
        .arg("--teacher")
        .arg(teacher())
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["loss"], "quantface");
    assert_eq!(saved["fraction"], 0.005);
    assert_eq!(saved["batch"], 8);
    assert_eq!(saved["positives"], "both");
    assert_eq!(saved["checkpoint_every"], 1);
    assert_eq!(saved["lr"], 0.002, "the command line overrides the file");
    assert!(out.join("checkpoint.safetensors").exists());
    let training: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(training["steps"], 2);
    let (all, steady) = (
        training["images_per_second"].as_f64().unwrap(),
        training["steady_images_per_second"].as_f64().unwrap(),
    );
    assert!(all > 0.0 && steady > 0.0, "{training}");

    std::fs::write(&config, "lr = [1, 2]\n").unwrap();
    let o = trainer()
        .args(["finetune", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = failure_message(&o);
    assert!(
        err.contains("'lr' must be a string, number or boolean"),
        "{err}"
    );
}

#[test]
fn finetune_refuses_to_reconstruct_a_student_that_is_already_quantized() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = trainer()
        .args(["finetune", "--reconstruct", "50", "--student-init", "s.efq"])
        .arg("--teacher")
        .arg(teacher())
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    let err = failure_message(&o);
    assert!(
        err.contains("--reconstruct") && err.contains("--student-init is already quantized"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "nothing is written before the options are checked"
    );
}

#[test]
fn block_reconstruction_without_the_layer_wise_pass_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.efq");
    let o = trainer()
        .args(["quantize", "--bits", "w4a4", "--reconstruct-blocks", "200"])
        .arg("--model")
        .arg(teacher())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = failure_message(&o);
    assert!(err.contains("--reconstruct <STEPS>"), "{err}");
    assert!(!out.exists());
}

#[test]
fn dropping_or_boxing_outside_a_block_fit_or_beyond_their_ranges_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.efq");
    let run = |extra: &[&str]| {
        trainer()
            .args(["quantize", "--bits", "w4a4", "--reconstruct", "2"])
            .args(extra)
            .arg("--model")
            .arg(teacher())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let err = failure_message(&run(&["--reconstruct-drop", "0.5"]));
    assert!(err.contains("--reconstruct-blocks <STEPS>"), "{err}");
    let err = failure_message(&run(&[
        "--reconstruct-blocks",
        "2",
        "--reconstruct-drop",
        "1",
    ]));
    assert!(
        err.contains("--reconstruct-drop is a probability in [0, 1) (got 1)"),
        "{err}"
    );
    let err = failure_message(&run(&["--reconstruct-box", "0.5"]));
    assert!(err.contains("--reconstruct-blocks <STEPS>"), "{err}");
    let err = failure_message(&run(&["--reconstruct-blocks", "2", "--reconstruct-box=-1"]));
    assert!(
        err.contains(
            "--reconstruct-box is a distance in weight quantization steps, 0 or more (got -1)"
        ),
        "{err}"
    );
    assert!(!out.exists());
}

/// The options whose alternatives lost (docs/EXPERIMENTS.md) sit under one heading in `--help`
/// and are left out of `-h`; the recipe's options stay where they were.
#[test]
fn help_sets_the_experiments_apart_from_the_recipe() {
    let help = |args: &[&str]| -> String {
        let o = trainer().args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let heading = "Experiments (did not improve results; kept to reproduce docs/EXPERIMENTS.md):";
    let cases: [(&str, &[&str]); 2] = [
        (
            "quantize",
            &[
                "--weight-clip",
                "--reconstruct-box",
                "--reconstruct-head",
                "--reconstruct-ranges",
                "--calibration",
                "--act-grid",
                "--no-equalize",
            ],
        ),
        (
            "finetune",
            &["--act-ranges", "--reconstruct-box", "--reconstruct-head"],
        ),
    ];
    for (command, experiments) in cases {
        let long = help(&[command, "--help"]);
        let (recipe, tried) = long
            .split_once(heading)
            .unwrap_or_else(|| panic!("{command} --help has no experiments heading:\n{long}"));
        let short = help(&[command, "-h"]);
        assert!(!short.contains("Experiments"), "{short}");
        for flag in experiments {
            let option = format!("      {flag} ");
            let listed = format!("      {flag}\n");
            let named = |text: &str| text.contains(&option) || text.contains(&listed);
            assert!(named(tried), "{command}: {flag} is not under the heading");
            assert!(
                !named(recipe),
                "{command}: {flag} is listed with the recipe"
            );
            assert!(!named(&short), "{command} -h lists {flag}");
        }
        for flag in ["--bits", "--reconstruct ", "--reconstruct-drop", "--lfw"] {
            assert!(recipe.contains(flag), "{command}: {flag} left the recipe");
        }
    }
}

/// Two crops of one person, and a set-up cache holding the teacher (a link to it), as
/// `scripts/setup.sh` leaves `$EFQ_CACHE`.
fn crops_and_cache(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let person = lfw().join("insightface112/Abel_Pacheco");
    let mut crops: Vec<_> = std::fs::read_dir(&person)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    crops.sort();
    let models = dir.join("cache/models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(teacher(), models.join("w600k_mbf.onnx")).unwrap();
    (crops[0].clone(), crops[1].clone())
}

/// What a user gets who runs the binary by itself: no EFQ_* variables but the cache, any
/// working directory.
fn outside_setup(cwd: &std::path::Path) -> Command {
    let mut c = trainer();
    c.current_dir(cwd);
    for var in ["EFQ_TEACHER", "EFQ_DETECTOR", "EFQ_LFW", "EFQ_CACHE"] {
        c.env_remove(var);
    }
    c
}

#[test]
fn verify_outside_the_checkout_finds_the_installed_teacher_and_says_which_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = crops_and_cache(dir.path());
    let o = outside_setup(dir.path())
        .env("EFQ_CACHE", dir.path().join("cache"))
        .args(["verify", "--json"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["similarity"].as_f64().unwrap() > 0.4, "{r}");
    assert!(
        r["model"]
            .as_str()
            .unwrap()
            .ends_with("cache/models/w600k_mbf.onnx"),
        "{r}"
    );
    let backend = r["backend"].as_str().unwrap();
    let said = err
        .lines()
        .find(|l| l.starts_with("backend: "))
        .unwrap_or_else(|| panic!("auto says nothing of its choice: {err}"));
    assert!(said.contains(backend) && said.contains("auto: "), "{said}");
    // A software GPU (lavapipe) is never the automatic choice: it is the slowest path.
    assert!(
        !(backend.contains("wgpu") && backend.contains("software")),
        "{said}"
    );
}

#[test]
fn eval_outside_the_checkout_reads_the_lfw_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = outside_setup(dir.path())
        .args(["eval", "--crops", "no-such-crops", "--model"])
        .arg(teacher())
        .output()
        .unwrap();
    let err = failure_message(&o);
    let beside = efq_trainer::paths::default_lfw().join("no-such-crops");
    assert!(
        err.contains(&beside.display().to_string()),
        "not the checkout's LFW: {err}"
    );
}

#[test]
fn without_the_set_up_the_errors_say_to_run_it_and_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = crops_and_cache(dir.path());
    let empty = dir.path().join("empty-cache");
    let run = |args: &[&str]| {
        failure_message(
            &outside_setup(dir.path())
                .env("EFQ_CACHE", &empty)
                .args(args)
                .arg(&a)
                .arg(&b)
                .output()
                .unwrap(),
        )
    };
    let err = run(&["verify"]);
    for needle in [
        "bash scripts/setup.sh",
        "--model",
        "EFQ_TEACHER",
        "empty-cache/models/w600k_mbf.onnx",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let err = run(&["align"]);
    for needle in ["bash scripts/setup.sh", "--detector", "EFQ_DETECTOR"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn embed_streams_rows_in_order_and_the_batch_size_changes_nothing() {
    let person = lfw().join("insightface112/Abel_Pacheco");
    let mut crops: Vec<_> = std::fs::read_dir(&person)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    crops.sort();
    crops.push(lfw().join("insightface112/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"));
    let dir = tempfile::tempdir().unwrap();
    let embed = |batch: &str, out: &str| -> Vec<(String, Vec<f64>)> {
        let path = dir.path().join(out);
        let o = trainer()
            .args(["embed", "--backend", "tch", "--batch", batch, "--out"])
            .arg(&path)
            .arg("--model")
            .arg(teacher())
            .args(&crops)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", failure_message(&o));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let e: Vec<f64> = serde_json::from_value(r["embedding"].clone()).unwrap();
                (r["image"].as_str().unwrap().to_string(), e)
            })
            .collect()
    };
    let one = embed("1", "one.json");
    let three = embed("2", "two.json");
    assert_eq!(one.len(), crops.len());
    for ((row, crop), other) in one.iter().zip(&crops).zip(&three) {
        assert_eq!(row.0, crop.to_str().unwrap(), "rows out of order");
        assert_eq!(row.0, other.0);
        let cos: f64 = row.1.iter().zip(&other.1).map(|(a, b)| a * b).sum();
        assert!(cos > 0.99999, "{}: batch 1 vs 2 cosine {cos}", row.0);
        let norm: f64 = row.1.iter().map(|a| a * a).sum();
        assert!((norm - 1.0).abs() < 1e-4, "not L2-normalised: {norm}");
    }
    let cos =
        |i: usize, j: usize| -> f64 { one[i].1.iter().zip(&one[j].1).map(|(a, b)| a * b).sum() };
    let last = one.len() - 1;
    assert!(
        cos(0, 1) > 0.4 && cos(0, last) < 0.2,
        "same {} vs different {}",
        cos(0, 1),
        cos(0, last)
    );
    // Nothing is left beside the output.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn inspect_describes_the_teacher_and_its_quantized_student() {
    let dir = tempfile::tempdir().unwrap();
    let inspect = |model: &std::path::Path| -> serde_json::Value {
        let o = trainer()
            .args(["inspect", "--json"])
            .arg(model)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", failure_message(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let t = inspect(&teacher());
    assert_eq!(t["format"], "onnx");
    assert_eq!(t["embedding_dim"], 512);
    assert_eq!(t["input"], serde_json::json!([3, 112, 112]));
    assert_eq!(t["ops"]["conv"], 49, "{t}");
    assert_eq!(t["layer_widths"], serde_json::json!({"float": 50}));
    assert!(t["quant"].is_null() && t["threshold"].is_null());
    let gmac = t["gmac"].as_f64().unwrap();
    assert!(
        (0.3..0.6).contains(&gmac),
        "MobileFaceNet is ~0.44 GMAC, not {gmac}"
    );
    let s = inspect(&quantized_teacher(dir.path()));
    assert_eq!(s["format"], "efq");
    assert_eq!(s["quant"], "w8a8");
    assert_eq!(s["layer_widths"], serde_json::json!({"w8a8": 50}));
    assert_eq!(
        s["parameters"], t["parameters"],
        "quantizing keeps every parameter"
    );
    assert_eq!(s["conventions"], t["conventions"]);
    assert!(s["file_bytes"].as_u64().unwrap() < t["file_bytes"].as_u64().unwrap() / 3);
    // `quantize` stores a threshold, measured away from the test pairs.
    let th = &s["threshold"];
    assert_eq!(th["far"], 1e-3, "{s}");
    let cosine = th["cosine"].as_f64().unwrap();
    assert!((0.1..0.5).contains(&cosine), "threshold {cosine}");
    assert!(
        th["source"].as_str().unwrap().contains("outside pairs.txt"),
        "{th}"
    );
    // A file that is no model is named in the error, not summarised.
    let junk = dir.path().join("junk.efq");
    std::fs::write(&junk, b"not a model").unwrap();
    let o = trainer().args(["inspect"]).arg(&junk).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("junk.efq"),
        "{}",
        failure_message(&o)
    );
}

#[test]
fn verify_decides_with_the_threshold_quantize_stored_and_explains_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let student = quantized_teacher(dir.path());
    let person = lfw().join("insightface112/Abel_Pacheco");
    let (a, b) = (
        person.join("Abel_Pacheco_0001.jpg"),
        person.join("Abel_Pacheco_0002.jpg"),
    );
    let o = trainer()
        .args(["verify", "--json", "--model"])
        .arg(&student)
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", failure_message(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["same"], true, "{r}");
    let o = trainer()
        .args(["verify", "--model"])
        .arg(teacher())
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", failure_message(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("no same/different decision") && said.contains("trainer quantize"),
        "{said}"
    );
}

#[test]
fn a_limit_too_small_for_the_protocol_names_the_smallest_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let eval = |limit: usize| {
        trainer()
            .args(["eval", "--json", "--limit", &limit.to_string(), "--model"])
            .arg(teacher())
            .arg("--lfw")
            .arg(lfw())
            .arg("--out")
            .arg(dir.path().join(format!("eval-{limit}")))
            .output()
            .unwrap()
    };
    let o = eval(4);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let smallest: usize = err
        .split("the smallest limit that has them is ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no smallest limit named: {err}"));
    assert!(!eval(smallest - 1).status.success());
    let o = eval(smallest);
    assert!(
        o.status.success(),
        "--limit {smallest}: {}",
        failure_message(&o)
    );
}
