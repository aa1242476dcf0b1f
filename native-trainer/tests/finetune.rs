//! Fine-tuning on a tiny generated network and a handful of LFW crops: resumption is exact, and
//! the exported file reproduces the trainer's embeddings on the CPU backend.

use std::path::Path;

use efq_shared::builders::tiny_mobilefacenet;
use efq_shared::cpu;
use efq_shared::format::PackedModel;
use efq_shared::quant::QuantConfig;
use efq_tests::{cosine, lfw};
use efq_trainer::finetune::{self, FinetuneConfig, LossKind, Optimizer, Positives, Protocol};
use efq_trainer::net::TchNet;
use efq_trainer::quantize::{self, Calibration, QuantizeArgs};

fn setup(dir: &Path) -> FinetuneConfig {
    let teacher = dir.join("tiny.onnx");
    let g = tiny_mobilefacenet(112, 64, 5).unwrap();
    std::fs::write(&teacher, efq_shared::onnx::export_bytes(&g).unwrap()).unwrap();
    let crops = lfw().join("insightface112");
    let student = quantize::run(&QuantizeArgs {
        teacher: &teacher,
        crops: &crops,
        exclude_pairs_people: None,
        config: QuantConfig::parse("w4a8").unwrap(),
        calibration: Calibration {
            images: 16,
            batch: 8,
            ..Calibration::default_with_seed(1)
        },
        device: tch::Device::Cpu,
    })
    .unwrap();
    let init = dir.join("init.efq");
    student.save(&init).unwrap();
    FinetuneConfig {
        student_init: init,
        teacher,
        train_crops: crops,
        pairs: lfw().join("pairs.txt"),
        protocol: Protocol::Paper,
        positives: Positives::Both,
        fraction: 0.006,
        seed: 3,
        batch: 8,
        lr: 0.01,
        optimizer: Optimizer::Adam,
        loss: LossKind::Ekd,
        hard_negatives: 8,
        epochs: 1,
        checkpoint_every: 2,
        ce_weight: 1.0,
        ce_margin: 0.4,
        ce_scale: 64.0,
        student_chunk: None,
        act_ranges: Default::default(),
    }
}

#[test]
fn resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    resume_matches(&cfg, dir.path());
}

#[test]
fn resumed_run_with_the_margin_classification_head_is_exact_too() {
    // The class centres and their initialised flags are part of the checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.loss = LossKind::EkdCe;
    resume_matches(&cfg, dir.path());
}

fn resume_matches(cfg: &FinetuneConfig, dir: &Path) {
    let whole = finetune::run(cfg, &dir.join("a"), false, tch::Device::Cpu, None).unwrap();
    assert!(
        whole.steps >= 6,
        "the test needs several steps, got {}",
        whole.steps
    );
    let b = dir.join("b");
    let part = finetune::run(cfg, &b, false, tch::Device::Cpu, Some(3)).unwrap();
    assert_eq!(part.steps, 3);
    let resumed = finetune::run(cfg, &b, true, tch::Device::Cpu, None).unwrap();
    assert_eq!(resumed.steps, whole.steps);
    assert_eq!(
        resumed.graph, whole.graph,
        "resumed weights differ from the uninterrupted run"
    );
    let init = PackedModel::load(&cfg.student_init).unwrap();
    assert_ne!(whole.graph, init.graph, "training changed nothing");
}

/// Interrupts a run at every point where the files on disk change — before, during and after
/// the checkpoint's write, before and after its rename, and between checkpoints — at each
/// checkpoint in turn, then resumes: every resumed run ends with exactly the uninterrupted
/// run's weights, and no temporary is left behind.
#[test]
fn a_run_interrupted_at_any_write_or_step_resumes_to_the_same_weights() {
    use efq_trainer::fault;
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    fault::arm("", 0);
    let whole = finetune::run(
        &cfg,
        &dir.path().join("whole"),
        false,
        tch::Device::Cpu,
        None,
    )
    .unwrap();
    let hits = fault::disarm();
    assert!(whole.steps >= 6, "the test needs several checkpoints");
    let points = [
        "checkpoint:before-write",
        "checkpoint:during-write",
        "checkpoint:before-rename",
        "checkpoint:after-rename",
        "finetune:step",
    ];
    for p in points {
        assert!(hits.iter().any(|h| h == p), "{p} never reached: {hits:?}");
    }
    // The first, second and last checkpoint (steps 2, 4 and the end), and odd steps between.
    let checkpoints = hits
        .iter()
        .filter(|h| *h == "checkpoint:before-write")
        .count();
    let mut tried = 0;
    for p in points {
        let nths: Vec<usize> = if p == "finetune:step" {
            vec![1, 3, whole.steps]
        } else {
            vec![1, 2, checkpoints]
        };
        for nth in nths {
            let out = dir.path().join(format!("{}-{nth}", p.replace(':', "-")));
            fault::arm(p, nth);
            let err = finetune::run(&cfg, &out, false, tch::Device::Cpu, None);
            fault::disarm();
            let err = err
                .err()
                .unwrap_or_else(|| panic!("{p} #{nth} was not reached"));
            assert!(
                err.to_string().contains("injected fault"),
                "{p} #{nth}: {err}"
            );
            let resumed = finetune::run(&cfg, &out, true, tch::Device::Cpu, None)
                .unwrap_or_else(|e| panic!("resume after {p} #{nth}: {e:#}"));
            assert_eq!(resumed.steps, whole.steps, "{p} #{nth}");
            assert!(
                resumed.graph == whole.graph,
                "after an interruption at {p} #{nth} the resumed weights differ"
            );
            let left: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp"))
                .collect();
            assert!(left.is_empty(), "{p} #{nth}: temporaries left: {left:?}");
            tried += 1;
        }
    }
    assert_eq!(tried, 15);
}

#[test]
fn a_checkpoint_that_cannot_be_used_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let out = dir.path().join("run");
    finetune::run(&cfg, &out, false, tch::Device::Cpu, Some(2)).unwrap();
    let ckpt = out.join(efq_trainer::checkpoint::FILE);
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 3]).unwrap();
    let err = finetune::run(&cfg, &out, true, tch::Device::Cpu, None)
        .err()
        .expect("a truncated checkpoint was accepted");
    let msg = format!("{err:#}");
    assert!(msg.contains("checkpoint.safetensors"), "{msg}");
    assert!(msg.contains("cannot be read"), "{msg}");
    // A checkpoint whose tensor has another shape (another student's): named, no libtorch abort.
    finetune::run(&cfg, &out, false, tch::Device::Cpu, Some(2)).unwrap();
    let saved = efq_trainer::checkpoint::load(&out).unwrap().unwrap();
    let mut tensors: Vec<(String, tch::Tensor)> = saved
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (name, t) = tensors
        .iter_mut()
        .find(|(n, _)| !n.starts_with("opt."))
        .unwrap();
    let name = name.clone();
    *t = tch::Tensor::zeros([t.numel() as i64 + 1], (tch::Kind::Float, tch::Device::Cpu));
    efq_trainer::checkpoint::save(&out, &tensors, &saved.record).unwrap();
    let err = finetune::run(&cfg, &out, true, tch::Device::Cpu, None)
        .err()
        .expect("a checkpoint of another shape was accepted");
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("'{name}' has shape")), "{msg}");
    // Other options (a loss with class centres) than the checkpoint's: the missing tensor named.
    finetune::run(&cfg, &out, false, tch::Device::Cpu, Some(2)).unwrap();
    let mut ce = cfg.clone();
    ce.loss = LossKind::EkdCe;
    let err = finetune::run(&ce, &out, true, tch::Device::Cpu, None)
        .err()
        .expect("a checkpoint without the class centres was accepted");
    assert!(format!("{err:#}").contains("lacks 'ce.head"), "{err:#}");
}

#[test]
fn exported_student_reproduces_the_trainer_embeddings_on_the_cpu_backend() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.loss = LossKind::Quantface;
    cfg.positives = Positives::Views;
    let out = finetune::run(
        &cfg,
        &dir.path().join("q"),
        false,
        tch::Device::Cpu,
        Some(4),
    )
    .unwrap();
    let file = dir.path().join("student.efq");
    PackedModel::new(out.graph.clone(), Some(QuantConfig::parse("w4a8").unwrap()))
        .unwrap()
        .save(&file)
        .unwrap();
    let loaded = PackedModel::load(&file).unwrap();
    let x = efq_shared::builders::random_images(3, [3, 112, 112], 8);
    let r = cpu::forward(&loaded.graph, &x, 3).unwrap();
    let net = TchNet::new(&out.graph, tch::Device::Cpu).unwrap();
    let t = tch::no_grad(|| {
        net.forward(&tch::Tensor::from_slice(&x).reshape([3, 3, 112, 112]))
            .unwrap()
    });
    let t = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    for i in 0..3 {
        let c = cosine(&r[i * 64..][..64], &t[i * 64..][..64]);
        assert!(c >= 0.999, "image {i}: cosine {c}");
    }
}

#[test]
fn clean_protocol_excludes_every_person_of_the_test_pairs() {
    let folder = efq_trainer::embed::FaceFolder::scan(&lfw().join("insightface112")).unwrap();
    // insightface112 holds exactly the pairs.txt people: nothing is left to train on.
    let err = finetune::training_set(&folder, &lfw().join("pairs.txt"), Protocol::Clean, 1.0, 0)
        .unwrap_err();
    assert!(err.to_string().contains("no training images left"), "{err}");
    let all =
        finetune::training_set(&folder, &lfw().join("pairs.txt"), Protocol::Paper, 0.5, 0).unwrap();
    assert_eq!(
        all.len(),
        (folder.images.len() as f64 * 0.5).round() as usize
    );
}

#[test]
fn gradient_caching_gives_the_full_batch_gradient() {
    use efq_trainer::finetune::{backward_through, embed_detached};
    use efq_trainer::student::Student;
    use tch::{Kind, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let init = PackedModel::load(&cfg.student_init).unwrap();
    let student = Student::new(&init.graph, tch::Device::Cpu, Default::default()).unwrap();
    let x = Tensor::from_slice(&efq_shared::builders::random_images(12, [3, 112, 112], 4))
        .reshape([12, 3, 112, 112]);
    let target = Tensor::randn([12, 64], (Kind::Float, tch::Device::Cpu));
    // A loss that couples every sample with every other, like EKD's similarity matrix.
    let loss_of = |e: &Tensor| {
        let e = e / e.norm_scalaropt_dim(2, [1], true);
        (e.matmul(&e.transpose(0, 1)) - target.matmul(&target.transpose(0, 1)) * 0.01)
            .square()
            .mean(Kind::Float)
    };
    let grads = || -> Vec<Tensor> {
        student
            .params
            .iter()
            .map(|(_, p)| {
                let g = p.grad().copy();
                let _ = p.grad().zero_();
                g
            })
            .collect()
    };
    loss_of(&student.forward(&x)).backward();
    let direct = grads();
    let leaf = embed_detached(&student, &x, 5);
    loss_of(&leaf).backward();
    backward_through(&student, &x, &leaf, 5);
    let cached = grads();
    let mut nonzero = 0;
    for ((name, _), (a, b)) in student.params.iter().zip(direct.iter().zip(&cached)) {
        let scale = a.abs().max().double_value(&[]);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-5 * scale.max(1e-12),
            "{name}: max diff {diff} vs magnitude {scale}"
        );
        nonzero += (scale > 0.0) as usize;
    }
    assert!(nonzero > 0, "no parameter received a gradient");
}

#[test]
fn resumed_run_with_learned_activation_ranges_is_exact_and_moves_the_scales() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.act_ranges = efq_trainer::student::ActRanges::Learned;
    resume_matches(&cfg, dir.path());
    let out = finetune::run(&cfg, &dir.path().join("c"), false, tch::Device::Cpu, None).unwrap();
    let [lo, _, hi] = out
        .act_scale_ratio
        .expect("learned ranges report their change");
    assert!(
        lo < 0.999 || hi > 1.001,
        "no activation scale moved: {lo}..{hi}"
    );
}

#[test]
fn learned_activation_scales_are_the_ones_the_exported_file_runs() {
    use efq_trainer::student::{ActRanges, Student};
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let init = PackedModel::load(&cfg.student_init).unwrap();
    let student = Student::new(&init.graph, tch::Device::Cpu, ActRanges::Learned).unwrap();
    // Move every learned scale by its own factor in [0.6, 1.4], as training would.
    let mut moved = 0;
    tch::no_grad(|| {
        for (k, (name, p)) in student.params.iter().enumerate() {
            if name.ends_with(".act_scale") {
                let f = 0.6 + 0.8 * ((k * 7919) % 101) as f64 / 100.0;
                let _ = p.shallow_clone().g_mul_scalar_(f);
                moved += 1;
            }
        }
    });
    assert!(moved > 3, "the tiny student has {moved} learned scales");
    let graph = student.to_graph().unwrap();
    assert_ne!(graph, init.graph);
    let n = 3;
    let x = efq_shared::builders::random_images(n, [3, 112, 112], 9);
    let r = cpu::forward(&graph, &x, n).unwrap();
    let xt = tch::Tensor::from_slice(&x).reshape([n as i64, 3, 112, 112]);
    // The training forward, with its graph (the LSQ path) and without (the frozen path).
    let trained = student.forward(&xt);
    assert!(trained.requires_grad());
    let frozen = tch::no_grad(|| student.forward(&xt));
    let before = cpu::forward(&init.graph, &x, n).unwrap();
    for t in [trained, frozen] {
        let t = Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap();
        for i in 0..n {
            let c = cosine(&r[i * 64..][..64], &t[i * 64..][..64]);
            assert!(c >= 0.999, "image {i}: cosine {c}");
            // …and the moved scales matter: the calibrated file gives something else.
            let c0 = cosine(&before[i * 64..][..64], &t[i * 64..][..64]);
            assert!(
                c0 < c,
                "image {i}: moved scales changed nothing ({c0} vs {c})"
            );
        }
    }
}

#[test]
fn resumed_one_view_run_with_identity_positives_is_exact_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.positives = Positives::Labels;
    resume_matches(&cfg, dir.path());
}

#[test]
fn identity_positives_are_chosen_where_a_person_has_two_images_and_refused_where_none_has() {
    let item = |id: u32, k: u32| (std::path::PathBuf::from(format!("p{id}/{k}.jpg")), id);
    let paired = [item(0, 0), item(1, 0), item(1, 1)];
    let single = [item(0, 0), item(1, 0), item(2, 0)];
    assert_eq!(Positives::Auto.resolve(&paired).unwrap(), Positives::Labels);
    assert_eq!(Positives::Auto.resolve(&single).unwrap(), Positives::Views);
    assert_eq!(Positives::Both.resolve(&single).unwrap(), Positives::Both);
    let err = Positives::Labels.resolve(&single).unwrap_err().to_string();
    assert!(
        err.contains("no positive pair") && err.contains("--positives views"),
        "{err}"
    );
    // A run that cannot have positives stops before it writes anything.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.positives = Positives::Labels;
    cfg.fraction = 1.0 / 7701.0;
    let out = dir.path().join("one");
    assert!(finetune::run(&cfg, &out, false, tch::Device::Cpu, None).is_err());
    assert!(!out.join("config.json").exists());
}

#[test]
fn identity_grouped_order_keeps_every_image_once_and_beside_one_of_its_identity() {
    use rand::SeedableRng;
    // Identity sizes 1, 2, 3, 5, 9 and 17, interleaved as a folder scan would not be.
    let sizes = [1usize, 2, 3, 5, 9, 17];
    let mut items = Vec::new();
    for (id, &n) in sizes.iter().enumerate() {
        for k in 0..n {
            items.push((
                std::path::PathBuf::from(format!("p{id}/{k}.jpg")),
                id as u32,
            ));
        }
    }
    items.reverse();
    for seed in 0..20 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let order = finetune::identity_grouped_order(&items, &mut rng);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..items.len()).collect::<Vec<_>>(), "seed {seed}");
        let label = |i: usize| items[order[i]].1;
        for i in 0..order.len() {
            if sizes[label(i) as usize] < 2 {
                continue;
            }
            let beside = (i > 0 && label(i - 1) == label(i))
                || (i + 1 < order.len() && label(i + 1) == label(i));
            assert!(beside, "seed {seed}: position {i} has no partner beside it");
        }
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        assert_eq!(order, finetune::identity_grouped_order(&items, &mut again));
    }
}

/// The real thing: the `trainer` process aborted (no unwinding, no destructors) between a
/// checkpoint's write and its rename, then `--resume`d, exports the same student as a run
/// that was never interrupted.
#[test]
fn an_aborted_trainer_process_resumes_to_the_same_student() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let run = |out: &str, fault: Option<&str>, resume: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"));
        cmd.args(["finetune", "--cpu", "--no-eval", "--batch", "8"])
            .args([
                "--fraction",
                "0.006",
                "--seed",
                "3",
                "--checkpoint-every",
                "2",
            ])
            .arg("--teacher")
            .arg(&cfg.teacher)
            .arg("--student-init")
            .arg(&cfg.student_init)
            .arg("--lfw")
            .arg(lfw())
            .args(["--train-crops", "insightface112", "--out-dir"])
            .arg(dir.path().join(out))
            .env_remove("EFQ_FAULT");
        if let Some(f) = fault {
            cmd.env("EFQ_FAULT", f);
        }
        if resume {
            cmd.arg("--resume");
        }
        cmd.output().unwrap()
    };
    let whole = run("whole", None, false);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let killed = run("killed", Some("checkpoint:before-rename:2"), false);
    assert!(!killed.status.success(), "the fault point was not reached");
    assert!(
        String::from_utf8_lossy(&killed.stderr).contains("EFQ_FAULT: aborting"),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    assert!(
        dir.path()
            .join("killed/.checkpoint.safetensors.tmp")
            .exists()
    );
    let resumed = run("killed", None, true);
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    assert!(
        log.contains("resuming") && log.contains("at step 2/"),
        "{log}"
    );
    let a = PackedModel::load(dir.path().join("whole/student.efq")).unwrap();
    let b = PackedModel::load(dir.path().join("killed/student.efq")).unwrap();
    assert!(
        a.graph == b.graph,
        "the resumed process exported other weights"
    );
    assert!(
        !dir.path()
            .join("killed/.checkpoint.safetensors.tmp")
            .exists()
    );
    // The resumed run's record covers the whole run: the killed process's kept steps too,
    // and so does resuming the finished run once more.
    let images = |out: &str| {
        let t: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(out).join("training.json")).unwrap(),
        )
        .unwrap();
        (t["images"].as_u64().unwrap(), t["final_loss"].as_f64())
    };
    assert_eq!(images("killed").0, images("whole").0);
    let again = run("killed", None, true);
    assert!(again.status.success());
    assert_eq!(images("killed"), images("whole"));
}
