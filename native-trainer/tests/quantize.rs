//! Post-training quantization of a tiny generated network on a few LFW crops: channel
//! equalization earns its place.

use efq_shared::builders::tiny_mobilefacenet;
use efq_shared::graph::Graph;
use efq_shared::quant::QuantConfig;
use efq_shared::{cpu, equalize};
use efq_tests::{cosine, lfw};
use efq_trainer::quantize::{self, ActGrid, Calibration, QuantizeArgs};
use rand::{Rng, SeedableRng};

/// The tiny network with the channels in front of its first depthwise layer spread over three
/// decades (an exact float rescaling: the teacher's function does not change).
fn unequal_teacher() -> Graph {
    let mut g = tiny_mobilefacenet(112, 64, 5).unwrap();
    let site = equalize::sites(&g)[0];
    assert!(
        site.depthwise,
        "the tiny net's first site is its depthwise layer"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let f: Vec<f32> = (0..8)
        .map(|_| 10f32.powf(rng.random_range(-2.0..1.0)))
        .collect();
    equalize::rescale(&mut g, &site, &f).unwrap();
    g
}

/// `teacher` written as ONNX into `dir`, then quantized at `bits` with `calibration` on
/// `insightface112` crops.
fn quantize_teacher(
    teacher: &Graph,
    dir: &std::path::Path,
    bits: &str,
    calibration: Calibration,
) -> efq_shared::format::PackedModel {
    // libtorch's generator is global to the process and calibration draws from it after
    // seeding it: tests quantizing at once would interleave their draws.
    static LIBTORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _seeded = LIBTORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let path = dir.join(format!("teacher-{bits}-{}.onnx", calibration.equalize));
    std::fs::write(&path, efq_shared::onnx::export_bytes(teacher).unwrap()).unwrap();
    quantize::run(&QuantizeArgs {
        teacher: &path,
        crops: &lfw().join("insightface112"),
        exclude_pairs_people: None,
        config: QuantConfig::parse(bits).unwrap(),
        calibration,
        device: tch::Device::Cpu,
    })
    .unwrap()
}

fn ptq_fidelity(teacher: &Graph, equalize: bool, dir: &std::path::Path) -> f64 {
    let calibration = Calibration {
        images: 16,
        batch: 8,
        equalize,
        ..Calibration::default_with_seed(1)
    };
    let student = quantize_teacher(teacher, dir, "w8a8", calibration);
    let equalized = student.manifest.extra["equalized_layers"].as_u64().unwrap();
    assert_eq!(equalized > 0, equalize);
    let x = efq_shared::builders::random_images(8, [3, 112, 112], 4);
    let want = cpu::forward(teacher, &x, 8).unwrap();
    let got = cpu::forward(&student.graph, &x, 8).unwrap();
    let n = want.len() / 8;
    want.chunks(n)
        .zip(got.chunks(n))
        .map(|(a, b)| cosine(a, b))
        .sum::<f64>()
        / 8.0
}

#[test]
fn channel_equalization_keeps_quiet_channels_that_a_per_tensor_scale_rounds_away() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = unequal_teacher();
    let plain = ptq_fidelity(&teacher, false, dir.path());
    let equalized = ptq_fidelity(&teacher, true, dir.path());
    eprintln!("w8a8 fidelity: {plain:.5} without equalization, {equalized:.5} with");
    assert!(
        equalized > plain && 1.0 - equalized < 0.5 * (1.0 - plain),
        "w8a8 fidelity: {plain:.5} without equalization, {equalized:.5} with"
    );
}

/// Mean cosine of `student` to `teacher` (CPU backend) on `n` real crops that calibration
/// did not see (it draws from `insightface112`; these come from `aligned112`).
fn fidelity_on_unseen_faces(teacher: &Graph, student: &Graph, n: usize) -> f64 {
    let pre = efq_shared::format::Preprocessing::default();
    let root = lfw().join("aligned112");
    let mut people: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    people.sort();
    let x: Vec<f32> = people
        .iter()
        .step_by(people.len() / n)
        .take(n)
        .flat_map(|dir| {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            efq_shared::preprocess::load_face(&files[0], &pre).unwrap()
        })
        .collect();
    let want = cpu::forward(teacher, &x, n).unwrap();
    let got = cpu::forward(student, &x, n).unwrap();
    let d = want.len() / n;
    want.chunks(d)
        .zip(got.chunks(d))
        .map(|(a, b)| cosine(a, b))
        .sum::<f64>()
        / n as f64
}

/// The input grid of every quantized layer of `m`, in node order.
fn input_grids(m: &efq_shared::format::PackedModel) -> Vec<efq_shared::quant::ActQuant> {
    use efq_shared::graph::Op;
    m.graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv { input_quant, .. } | Op::Gemm { input_quant, .. } => *input_quant,
            _ => None,
        })
        .collect()
}

/// Asserts that `after` is closer to `teacher` than `before` on unseen faces: 1 − cosine falls
/// by at least 20 %.
fn assert_unseen_faces_closer(teacher: &Graph, before: &Graph, after: &Graph, what: &str) {
    let (b, a) = (
        fidelity_on_unseen_faces(teacher, before, 8),
        fidelity_on_unseen_faces(teacher, after, 8),
    );
    eprintln!("w4a4 fidelity on unseen faces, {what}: {b:.5} → {a:.5}");
    assert!(
        1.0 - a < 0.8 * (1.0 - b),
        "w4a4 fidelity on unseen faces, {what}: {b:.5} → {a:.5}"
    );
}

/// Block-wise reconstruction settings of [`reconstructed_w4a4`].
#[derive(Clone, Copy)]
struct Blocks {
    steps: usize,
    drop: f64,
    bound: f64,
    head: efq_trainer::reconstruct::Objective,
    /// Not a block setting, but the one other thing these tests vary: how the whole-set
    /// activations are held.
    storage: efq_trainer::reconstruct::Storage,
}

const LAYERS_ONLY: Blocks = Blocks {
    steps: 0,
    drop: 0.0,
    bound: 0.0,
    head: efq_trainer::reconstruct::Objective::Mse,
    storage: efq_trainer::reconstruct::Storage::F32,
};

/// The tiny network quantized at w4a4 on `images` calibration crops, plainly and reconstructed
/// with `ranges` (then `blocks`), and the layer records of the reconstruction.
fn reconstructed_w4a4(
    teacher: &Graph,
    dir: &std::path::Path,
    images: usize,
    ranges: efq_trainer::student::ActRanges,
    blocks: Blocks,
) -> (
    efq_shared::format::PackedModel,
    efq_shared::format::PackedModel,
    Vec<efq_trainer::reconstruct::LayerFit>,
) {
    use efq_trainer::reconstruct::Reconstruction;
    let quantize = |reconstruct| {
        // Symmetric grids: the start these tests were sized on (split grids start closer).
        let calibration = Calibration {
            images,
            batch: 8,
            reconstruct,
            act_grid: ActGrid::Symmetric,
            ..Calibration::default_with_seed(1)
        };
        quantize_teacher(teacher, dir, "w4a4", calibration)
    };
    let plain = quantize(None);
    let fitted = quantize(Some(Reconstruction {
        steps: 60,
        batch: 8,
        lr: 0.02,
        ranges,
        block_steps: blocks.steps,
        block_drop: blocks.drop,
        block_box: blocks.bound,
        head_objective: blocks.head,
        storage: blocks.storage,
    }));
    let fits = serde_json::from_value(fitted.manifest.extra["reconstruction"].clone()).unwrap();
    assert!(!plain.manifest.extra.contains_key("reconstruction"));
    (plain, fitted, fits)
}

/// Each layer ends closer to its teacher layer on the calibration images: the bias correction
/// is a least-squares step, and the fit starts from there. Returns the mean error ratio.
fn assert_every_layer_improves(fits: &[efq_trainer::reconstruct::LayerFit]) -> f64 {
    assert!(fits.iter().any(|f| f.weights) && fits.iter().any(|f| !f.weights));
    for f in fits {
        assert!(
            f.mse_after <= f.mse_before * 1.0001 && f.mse_after.is_finite(),
            "{}: {} → {}",
            f.name,
            f.mse_before,
            f.mse_after
        );
    }
    fits.iter()
        .map(|f| f.mse_before / f.mse_after.max(1e-30))
        .sum::<f64>()
        / fits.len() as f64
}

#[test]
fn layerwise_reconstruction_lowers_every_layers_error_and_brings_unseen_faces_closer() {
    use efq_trainer::student::ActRanges;
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let (plain, fitted, fits) =
        reconstructed_w4a4(&teacher, dir.path(), 24, ActRanges::Frozen, LAYERS_ONLY);
    let gain = assert_every_layer_improves(&fits);
    assert!(gain > 1.05, "mean error ratio before/after {gain}");
    assert!(fits.iter().all(|f| f.act_scale.is_none()));
    assert_unseen_faces_closer(&teacher, &plain.graph, &fitted.graph, "PTQ → reconstructed");
}

#[test]
fn reconstruction_with_learned_ranges_moves_the_scales_the_file_then_carries() {
    use efq_trainer::student::ActRanges;
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let (plain, fitted, fits) =
        reconstructed_w4a4(&teacher, dir.path(), 24, ActRanges::Learned, LAYERS_ONLY);
    let gain = assert_every_layer_improves(&fits);
    let scales = |m| input_grids(m).iter().map(|a| a.scale).collect::<Vec<_>>();
    let (calibrated, written) = (scales(&plain), scales(&fitted));
    // Layers whose weights were fitted, in node order, with the scale the fit ended at.
    let mut moved = 0;
    for (k, f) in fits.iter().enumerate() {
        match f.act_scale {
            Some((from, to)) => {
                assert!(
                    f.weights,
                    "{}: only fitted layers learn their range",
                    f.name
                );
                assert_eq!(
                    from, calibrated[k],
                    "{}: starts at the calibrated scale",
                    f.name
                );
                assert_eq!(
                    to, written[k],
                    "{}: the file carries the fitted scale",
                    f.name
                );
                moved += usize::from((to / from - 1.0).abs() > 1e-3);
            }
            None => assert_eq!(calibrated[k], written[k], "{}", f.name),
        }
    }
    assert!(moved > 0, "no activation scale moved");
    eprintln!("learned ranges: {moved} scales moved, mean error ratio {gain:.3}");
    assert_unseen_faces_closer(
        &teacher,
        &plain.graph,
        &fitted.graph,
        "PTQ → reconstructed, learned ranges",
    );
}

#[test]
fn block_reconstruction_fits_whole_units_and_brings_unseen_faces_closer_than_layers_alone() {
    use efq_trainer::reconstruct::BlockFit;
    use efq_trainer::student::ActRanges;
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    // 64 calibration crops: on 24 a joint fit of five layers learns those crops (their error
    // falls, unseen faces move away: 0.895 → 0.861), as a 512-crop fit of w600k_mbf does not.
    let (_, layers, _) =
        reconstructed_w4a4(&teacher, dir.path(), 64, ActRanges::Learned, LAYERS_ONLY);
    let sixty = Blocks {
        steps: 60,
        ..LAYERS_ONLY
    };
    let (_, blocks, _) = reconstructed_w4a4(&teacher, dir.path(), 64, ActRanges::Learned, sixty);
    assert!(!layers.manifest.extra.contains_key("reconstruction_blocks"));
    let fits: Vec<BlockFit> =
        serde_json::from_value(blocks.manifest.extra["reconstruction_blocks"].clone()).unwrap();
    for f in &fits {
        eprintln!(
            "{}…{}: {} layers, {:.4e} → {:.4e}{}",
            f.first,
            f.last,
            f.layers,
            f.mse_before,
            f.mse_after,
            if f.reverted { " (reverted)" } else { "" }
        );
        assert!(f.mse_after <= f.mse_before && f.mse_after.is_finite());
    }
    // Whole units, not the layers one by one.
    assert!(fits.len() >= 2 && fits.iter().any(|f| f.layers >= 3));
    assert!(
        fits.iter().any(|f| f.mse_after < 0.9 * f.mse_before),
        "no block fit lowered its error by 10 %"
    );
    // On this random network the gain on unseen faces is smaller than on a trained one and
    // moved with the step count (32-d head, before the weight steps decayed, 30 steps:
    // −0.004, 60: +0.027, 100: +0.018; decayed, 60: +0.023) and with the head (64-d since
    // f3683f7, 60 steps: 0.88564 → 0.89131, a twentieth of the error), so the bar is a
    // thirtieth of the error, not the fifth of `assert_unseen_faces_closer`.
    let (b, a) = (
        fidelity_on_unseen_faces(&teacher, &layers.graph, 8),
        fidelity_on_unseen_faces(&teacher, &blocks.graph, 8),
    );
    eprintln!("w4a4 fidelity on unseen faces, layer-wise → + block-wise: {b:.5} → {a:.5}");
    assert!(1.0 - a < 0.97 * (1.0 - b), "{b:.5} → {a:.5}");
}

/// `--reconstruct-storage f16` holds the whole-set activations at half the memory: the fits
/// then see every input and target rounded to 11 significant bits. That rounding is far below
/// the 4-bit grid's: the first layer's error (nothing fitted before it) moves by under 1 %.
/// Further on, two fits from inputs that differ in the last bits take different Adam paths (as
/// two seeds would, on 24 crops: the block fits end several percent apart either way), so
/// what must hold is what the fit is for: every layer's error falls, and unseen faces gain
/// at least half of what f32 storage gives them.
#[test]
fn half_precision_storage_fits_layers_and_blocks_as_well_as_f32_and_the_file_records_it() {
    use efq_trainer::reconstruct::{BlockFit, Storage};
    use efq_trainer::student::ActRanges;
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let run = |storage| {
        let blocks = Blocks {
            steps: 20,
            storage,
            ..LAYERS_ONLY
        };
        reconstructed_w4a4(&teacher, dir.path(), 24, ActRanges::Learned, blocks)
    };
    let (plain, full, full_layers) = run(Storage::F32);
    let (_, half, half_layers) = run(Storage::F16);
    let recorded = |m: &efq_shared::format::PackedModel| {
        m.manifest.extra["calibration"]["reconstruct"]["storage"].clone()
    };
    assert_eq!(
        (recorded(&full), recorded(&half)),
        ("f32".into(), "f16".into())
    );
    let (f, h) = (&full_layers[0], &half_layers[0]);
    assert_eq!(f.name, h.name);
    let moved = (h.mse_before / f.mse_before - 1.0).abs();
    assert!(
        moved < 0.01,
        "{}: {} vs {}",
        f.name,
        f.mse_before,
        h.mse_before
    );
    assert!(
        moved > 0.0,
        "the f16 run saw exactly the f32 inputs: nothing was stored as f16"
    );
    assert_every_layer_improves(&half_layers);
    let blocks: Vec<BlockFit> =
        serde_json::from_value(half.manifest.extra["reconstruction_blocks"].clone()).unwrap();
    assert!(blocks.iter().any(|b| b.layers > 0));
    assert!(blocks.iter().all(|b| b.mse_after <= b.mse_before));
    let fid = |m: &efq_shared::format::PackedModel| fidelity_on_unseen_faces(&teacher, &m.graph, 8);
    let (p, f, h) = (fid(&plain), fid(&full), fid(&half));
    eprintln!("w4a4 fidelity on unseen faces: plain {p:.5}, f32 storage {f:.5}, f16 {h:.5}");
    assert!(f > p && h - p >= 0.5 * (f - p), "{p:.5} {f:.5} {h:.5}");
}

/// `--reconstruct-head cosine`: the last block fits and records the embedding direction's
/// error, every other block still its squared error. On this network, as on w600k_mbf, the
/// block of the embedding FC alone has too few samples to fit anything: it joins the block
/// before it, so that the fitted block's output is the embedding and its fit lowers 1 − cos.
#[test]
fn a_cosine_head_fits_the_embeddings_direction_and_only_the_last_block_uses_it() {
    use efq_trainer::reconstruct::{BlockFit, Objective};
    use efq_trainer::student::ActRanges;
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let cosine = Blocks {
        steps: 20,
        head: Objective::Cosine,
        ..LAYERS_ONLY
    };
    let (_, fitted, _) = reconstructed_w4a4(&teacher, dir.path(), 24, ActRanges::Learned, cosine);
    let fits: Vec<BlockFit> =
        serde_json::from_value(fitted.manifest.extra["reconstruction_blocks"].clone()).unwrap();
    let (head, rest) = fits.split_last().unwrap();
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|f| f.objective == Objective::Mse));
    assert_eq!(head.objective, Objective::Cosine);
    assert!(head.layers > 0, "the head fitted nothing");
    assert_eq!((head.first.as_str(), head.last.as_str()), ("down", "fc"));
    // 1 − cosine lies in [0, 2]; a squared error of this net's embedding is not bounded so.
    assert!(
        (0.0..=2.0).contains(&head.mse_before) && head.mse_after < head.mse_before,
        "head 1 − cos {} → {}",
        head.mse_before,
        head.mse_after
    );
}

#[test]
fn split_activation_grids_bring_a_four_bit_student_closer_to_its_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let quantize = |act_grid| {
        let calibration = Calibration {
            images: 24,
            batch: 8,
            act_grid,
            ..Calibration::default_with_seed(1)
        };
        quantize_teacher(&teacher, dir.path(), "w4a4", calibration)
    };
    let (symmetric, split) = (quantize(ActGrid::Symmetric), quantize(ActGrid::Split));
    let levels = |m| input_grids(m).iter().map(|a| a.levels).collect::<Vec<_>>();
    assert!(levels(&symmetric).iter().all(Option::is_none));
    let split_layers = levels(&split).iter().filter(|l| l.is_some()).count();
    assert!(split_layers > 0, "no layer took a split grid");
    eprintln!("{split_layers} layers split");
    assert_unseen_faces_closer(
        &teacher,
        &symmetric.graph,
        &split.graph,
        "symmetric → split grids",
    );
}

/// The measurement behind the defaults of `--reconstruct-drop` and `--reconstruct-box` (both
/// off): on this random network the block fit with QDrop still beats the layer-wise start on
/// unseen faces, by less than the plain block fit (docs/EXPERIMENTS.md, 2026-12-01, e638965);
/// with each weight kept within half a quantization step it beat the plain fit here (N=64:
/// 0.914 vs 0.909), though not on the real teacher (2026-12-04, b555ba3); so did a cosine
/// objective on the last block (0.918), which left the real teacher's unseen faces where they
/// were (2026-12-04, cd166f5). Those figures are of the network's 32-d version; it has a 64-d
/// embedding since 2026-12-06 (f3683f7: the smallest a recognizer may declare), so a re-run
/// measures other values. Ignored: a report, five quantizations per size; `N=24` or `N=64`
/// calibration crops, `STEPS` block steps (60).
#[test]
#[ignore]
fn block_fit_with_qdrop_a_box_or_a_cosine_head_still_beats_layers_alone_on_unseen_faces() {
    use efq_trainer::student::ActRanges;
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let n: usize = std::env::var("N").map_or(64, |v| v.parse().expect("N: a count"));
    let steps: usize = std::env::var("STEPS").map_or(60, |v| v.parse().expect("STEPS: a count"));
    let fidelity = |blocks| {
        let (_, s, _) = reconstructed_w4a4(&teacher, dir.path(), n, ActRanges::Learned, blocks);
        fidelity_on_unseen_faces(&teacher, &s.graph, 8)
    };
    let plain = Blocks {
        steps,
        ..LAYERS_ONLY
    };
    let layers = fidelity(LAYERS_ONLY);
    let blocks = fidelity(plain);
    let dropped = fidelity(Blocks { drop: 0.5, ..plain });
    let boxed = fidelity(Blocks {
        bound: 0.5,
        ..plain
    });
    let headed = fidelity(Blocks {
        head: efq_trainer::reconstruct::Objective::Cosine,
        ..plain
    });
    eprintln!(
        "{n} crops, {steps} block steps, unseen-face fidelity: layer-wise {layers:.5}, + blocks {blocks:.5}, + blocks with QDrop 0.5 {dropped:.5}, + blocks within 0.5 step {boxed:.5}, + blocks with a cosine head {headed:.5}"
    );
    assert!(
        blocks > layers && dropped > layers && boxed > layers && headed > layers,
        "{layers} {blocks} {dropped} {boxed} {headed}"
    );
}

/// A teacher some of whose output channels hold only subnormal or ~1e-37 weights (as one
/// public MobileFaceNet-like model does): the student quantizes those channels like zero ones,
/// the file it writes loads back, and libtorch's fake quantization computes what the packed
/// file's integer path computes.
#[test]
fn channels_of_subnormal_weights_quantize_like_zero_ones_and_the_file_loads_back() {
    use efq_shared::graph::{Op, Weights};
    let mut teacher = tiny_mobilefacenet(112, 64, 5).unwrap();
    let mut touched = 0;
    for n in &mut teacher.nodes {
        if let Op::Conv {
            weights: Weights::Float(w),
            ..
        } = &mut n.op
        {
            let per = w.numel() / w.shape[0];
            // Channel 0: subnormal; channel 1: normal, but its scale (÷127) would be subnormal.
            w.data[..per]
                .iter_mut()
                .for_each(|v| *v = v.signum() * 1e-45);
            w.data[per..2 * per]
                .iter_mut()
                .for_each(|v| *v = v.signum() * 1e-37);
            touched += 1;
        }
    }
    assert!(touched >= 5);
    let dir = tempfile::tempdir().unwrap();
    // Without equalization, which would rescale the tiny channels before they are quantized.
    let calibration = Calibration {
        images: 8,
        batch: 8,
        equalize: false,
        ..Calibration::default_with_seed(1)
    };
    let student = quantize_teacher(&teacher, dir.path(), "w8a8", calibration);
    let file = dir.path().join("student.efq");
    quantize::save(&student, &file).unwrap();
    let loaded = efq_shared::format::PackedModel::load(&file).unwrap();
    for n in &loaded.graph.nodes {
        if let Op::Conv {
            weights: Weights::Quant(q),
            ..
        } = &n.op
        {
            assert_eq!(&q.scales[..2], &[1.0, 1.0], "node {}", n.name);
        }
    }
    let x = efq_shared::builders::random_images(2, [3, 112, 112], 9);
    let r = cpu::forward(&loaded.graph, &x, 2).unwrap();
    assert!(r.iter().all(|v| v.is_finite()));
    let net = efq_trainer::net::TchNet::new(&loaded.graph, tch::Device::Cpu).unwrap();
    let t = tch::no_grad(|| {
        net.forward(&tch::Tensor::from_slice(&x).reshape([2, 3, 112, 112]))
            .unwrap()
    });
    let t = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(
        r, t,
        "libtorch and the CPU backend differ on the quantized student"
    );
}
