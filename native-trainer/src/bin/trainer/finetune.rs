//! `trainer finetune`: a quantized student fine-tuned from its teacher with EKD, exported and
//! evaluated.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use efq_shared::quant::QuantConfig;
use efq_trainer::finetune::{self, FinetuneConfig, LossKind, Optimizer, Positives, Protocol};
use efq_trainer::memory::peak_rss_mb;
use efq_trainer::{eval, net, paths, quantize};

use crate::common::{DataArgs, EXPERIMENTS};
use crate::reconstruct::ReconstructArgs;

#[derive(Args)]
pub struct FinetuneCmd {
    /// TOML file of options (keys are the long option names); command-line options win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Float teacher: ONNX or an arcface_torch .pth [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    teacher: Option<PathBuf>,
    /// Starting point: a quantized .efq student, or a float network (ONNX, .pth or .efq) such
    /// as a pruned teacher (`trainer prune`) or a smaller architecture to distil into
    /// (`trainer generate --like`), trained in float; default: quantize the teacher at --bits.
    #[arg(long)]
    student_init: Option<PathBuf>,
    /// Without --student-init: the bit-widths to quantize the teacher at (as `trainer quantize
    /// --bits`: w8a8, w6a6, w4a4, mixed w4a4-dw8 …).
    #[arg(long, default_value = "w8a8", value_parser = |s: &str| QuantConfig::parse(s).map_err(|e| e.to_string()))]
    bits: QuantConfig,
    /// Without --student-init: how the teacher is quantized first (as `trainer quantize`).
    #[command(flatten)]
    reconstruct: ReconstructArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Training crops, relative to --lfw unless absolute (falls back to insightface112).
    #[arg(long, default_value = "aligned112")]
    train_crops: PathBuf,
    #[arg(long, value_enum, default_value = "paper")]
    protocol: Protocol,
    /// Fraction of the training images (0.25, 0.5, 0.75, 1.0 …), drawn with --seed.
    #[arg(long, default_value_t = 1.0)]
    fraction: f64,
    /// Where positive pairs come from: `labels` (one view per image, a person's images
    /// batched together), `views` (two views per image, no labels needed, twice the passes),
    /// `both`; `auto` is `labels` when some identity folder has two training images.
    #[arg(long, value_enum, default_value = "auto")]
    positives: Positives,
    /// The distillation loss [default: ekd for a quantized student; quantface (the feature
    /// loss) for a float one — a pruned or smaller network, which EKD barely moves:
    /// docs/RESULTS.md, "Compression beyond quantization"].
    #[arg(long, value_enum)]
    loss: Option<LossKind>,
    /// Samples per step (with two views per image: two of batch/2 images).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Learning rate [default: 0.001 for a quantized student, 0.0001 for a float one].
    #[arg(long)]
    lr: Option<f64>,
    /// [default: sgd for a quantized student, adam for a float one]
    #[arg(long, value_enum)]
    optimizer: Option<Optimizer>,
    /// Hardest negatives (by student cosine) in the EKD negative term.
    #[arg(long, default_value_t = 64)]
    hard_negatives: i64,
    /// --loss ekd-ce: weight of the margin classification term (margin 0.4, scale 64).
    #[arg(long, default_value_t = 1.0)]
    ce_weight: f64,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Views per student forward/backward pass [default: the whole batch]. A smaller chunk
    /// turns on gradient caching: the loss still sees the whole batch, memory drops ~5× (8
    /// views: under 1 GB), each step costs ~25 % more on the CPU.
    #[arg(long)]
    student_chunk: Option<usize>,
    /// Activation scales during fine-tuning: `frozen` keeps the calibrated ones; `learned`
    /// trains each with LSQ's gradient (docs/quantization.md) and exports what it learned
    /// (measured on mbf w6a6: no better than frozen in one epoch, 10 % slower, +2 GB).
    #[arg(
        long,
        value_enum,
        default_value = "frozen",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    act_ranges: efq_trainer::student::ActRanges,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Continue from the checkpoint in --out-dir.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps (the checkpoint stays resumable).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Skip the LFW evaluation after training.
    #[arg(long)]
    no_eval: bool,
    #[arg(long)]
    cpu: bool,
    #[arg(long)]
    out_dir: PathBuf,
}

impl FinetuneCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
        if c.student_init.is_some() && c.reconstruct.reconstruct.is_some() {
            bail!(
                "--reconstruct applies to finetune's own quantization of the teacher; \
                 --student-init is already quantized (reconstruct it with `trainer quantize --reconstruct`)"
            );
        }
        let teacher = paths::teacher(c.teacher.clone(), "--teacher")?;
        let lfw = c.data.lfw()?;
        let device = net::pick_device(c.cpu);
        let mut train_crops = lfw.join(&c.train_crops);
        if !train_crops.exists() && c.train_crops.as_os_str() == "aligned112" {
            train_crops = lfw.join("insightface112");
            eprintln!(
                "aligned112 not found; training on {}",
                train_crops.display()
            );
        }
        std::fs::create_dir_all(&c.out_dir)
            .with_context(|| format!("cannot create {}", c.out_dir.display()))?;
        let student_init = match c.student_init {
            Some(p) => p,
            None => {
                let p = c.out_dir.join("student-init.efq");
                if !(c.resume && p.exists()) {
                    // Calibrate on the images the protocol trains on: under the clean one, the
                    // people of the test pairs are left out of calibration too.
                    let pairs = lfw.join("pairs.txt");
                    let model = quantize::run(&quantize::QuantizeArgs {
                        teacher: &teacher,
                        crops: &train_crops,
                        exclude_pairs_people: (c.protocol == Protocol::Clean)
                            .then_some(pairs.as_path()),
                        config: c.bits,
                        calibration: quantize::Calibration {
                            reconstruct: c.reconstruct.settings(),
                            ..quantize::Calibration::default_with_seed(c.seed)
                        },
                        device,
                    })?;
                    quantize::save(&model, &p)?;
                }
                p
            }
        };
        // Two recipes, each the best found for its kind of student (docs/EXPERIMENTS.md):
        // a quantized student keeps the teacher's weights and only needs its rounding
        // corrected (EKD, SGD 1e-3); a float student with channels removed or a new shape
        // must relearn the teacher's features (feature loss, Adam 1e-4).
        let float = finetune::load_student_init(&student_init)?
            .manifest
            .quant
            .is_none();
        let (loss, optimizer, lr) = if float {
            (LossKind::Quantface, Optimizer::Adam, 1e-4)
        } else {
            (LossKind::Ekd, Optimizer::Sgd, 1e-3)
        };
        let (loss, optimizer, lr) = (
            c.loss.unwrap_or(loss),
            c.optimizer.unwrap_or(optimizer),
            c.lr.unwrap_or(lr),
        );
        if float && (c.loss.is_none() || c.optimizer.is_none() || c.lr.is_none()) {
            let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
            eprintln!(
                "float student: --loss {} --optimizer {} --lr {lr} (the float recipe)",
                name(&loss),
                name(&optimizer)
            );
        }
        let mut cfg = FinetuneConfig {
            student_init,
            teacher: teacher.clone(),
            train_crops,
            pairs: lfw.join("pairs.txt"),
            protocol: c.protocol,
            positives: c.positives,
            fraction: c.fraction,
            seed: c.seed,
            batch: c.batch,
            lr,
            optimizer,
            loss,
            hard_negatives: c.hard_negatives,
            epochs: c.epochs,
            checkpoint_every: c.checkpoint_every,
            ce_weight: c.ce_weight,
            ce_margin: 0.4,
            ce_scale: 64.0,
            student_chunk: c.student_chunk,
            act_ranges: c.act_ranges,
        };
        let peak_before = peak_rss_mb();
        let outcome = finetune::run(&cfg, &c.out_dir, c.resume, device, c.stop_after)?;
        let init = finetune::load_student_init(&cfg.student_init)?;
        cfg.positives = outcome.positives;
        let mut model = efq_shared::format::PackedModel::new(outcome.graph, init.manifest.quant)?;
        model.manifest.preprocessing = init.manifest.preprocessing.clone();
        model.manifest.name = format!("{}-{:?}", init.manifest.name, loss).to_lowercase();
        let training = serde_json::json!({
            "config": cfg,
            "steps": outcome.steps,
            "images": outcome.images,
            "seconds": outcome.seconds,
            "images_per_second": outcome.images_per_second,
            "steady_images_per_second": outcome.steady_images_per_second,
            "final_loss": outcome.final_loss,
            "act_scale_ratio_min_median_max": outcome.act_scale_ratio,
            "peak_rss_mb": peak_rss_mb().max(peak_before),
            "device": format!("{device:?}"),
        });
        model
            .manifest
            .extra
            .insert("training".into(), training.clone());
        model
            .manifest
            .extra
            .insert("size_mb".into(), quantize::size_mb(&model).into());
        let out = c.out_dir.join("student.efq");
        quantize::save(&model, &out)?;
        let mut summary = training.clone();
        summary["size_mb"] = quantize::size_mb(&model).into();
        efq_shared::format::write_atomic(
            &c.out_dir.join("training.json"),
            &serde_json::to_vec_pretty(&summary)?,
        )?;
        println!("{}", serde_json::to_string_pretty(&training)?);
        println!("{}", quantize::describe(&model, &out));
        if !c.no_eval {
            let backend = efq_trainer::embed::Backend::Tch(device);
            let report = eval::run(&eval::EvalArgs {
                model: &out,
                crops: &lfw.join("insightface112"),
                pairs: &lfw.join("pairs.txt"),
                teacher: Some(&teacher),
                batch: backend.default_batch(),
                backend: &backend,
                limit: None,
            })?;
            let t = report
                .flip
                .all_pairs
                .tar_at_far
                .iter()
                .find(|t| t.far == 1e-3)
                .expect("table FARs include 1e-3");
            model.manifest.threshold = Some(efq_shared::format::Threshold {
                far: 1e-3,
                cosine: t.threshold,
                source: "LFW insightface112, all pairs, flip".into(),
            });
            quantize::save(&model, &out)?;
            eval::write_outputs(&report, &c.out_dir.join("eval"))?;
            eval::print_table(&report);
        }
        Ok(())
    }
}
