//! `trainer`: turns a full-precision face-recognition teacher into a low-bit student
//! (Ef-QuantFace) and evaluates both.

use efq_shared::quant::QuantConfig;
use efq_trainer::engine_cli::{self, BackendArgs, file_stem, peak_rss_mb};
use efq_trainer::finetune::{self, FinetuneConfig, LossKind, Optimizer, Positives, Protocol};
use efq_trainer::{eval, net, paths, quantize};

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

/// The help heading of options whose alternatives to the default lost in docs/EXPERIMENTS.md:
/// listed apart under `--help`, left out of `-h`.
const EXPERIMENTS: &str =
    "Experiments (did not improve results; kept to reproduce docs/EXPERIMENTS.md)";

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Ef-QuantFace trainer: import a face-recognition teacher, quantize it, evaluate it",
    long_about = "Ef-QuantFace trainer.\n\n\
        Models are InsightFace ONNX files (float teachers such as w600k_mbf.onnx) or packed\n\
        EfQuantFace files (.efq, safetensors with a manifest). Data is LFW: a folder of aligned\n\
        112×112 crops with one sub-folder per person, and the standard pairs.txt.\n\n\
        Without a flag, files are found where scripts/setup.sh puts them, whatever the working\n\
        directory; an environment variable overrides each default, a flag overrides both:\n  \
        EFQ_TEACHER   the teacher (--model, --teacher): $EFQ_CACHE/models/w600k_mbf.onnx\n  \
        EFQ_DETECTOR  the face detector (--detector): $EFQ_CACHE/models/scrfd_500m_bnkps.onnx\n  \
        EFQ_CACHE     the set-up cache: ~/.cache/efquantface\n  \
        EFQ_LFW       the LFW folder (--lfw): shared/data/lfw beside this checkout\n\n\
        The recipe is the default. Options whose alternatives did not improve results are listed\n\
        under their own \"Experiments\" heading in a subcommand's --help (not in -h).\n\n\
        `trainer finetune --config FILE.toml` reads options from a file: its keys are the long\n\
        option names (e.g. `lr = 0.001`, `loss = \"ekd\"`, `positives = \"views\"`); options on the\n\
        command line win. The effective configuration is saved as config.json in --out-dir.",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a model on LFW: 10-fold accuracy, all-pairs TAR at low FAR, ROC plot.
    #[command(long_about = "Evaluate a model on LFW.\n\n\
        Embeds every crop of --crops (with and without the flip test), then reports\n\
        - InsightFace's 10-fold accuracy on pairs.txt (squared-L2 thresholds 0..4 step 0.01),\n\
        - ROC AUC of the pairs,\n\
        - TAR at FAR 1e-2 … 1e-6 over ALL pairs of the folder (29.6M impostor pairs on the\n  \
          7,701 standard test crops), where quantized models actually differ,\n\
        - with --teacher, the mean and 1st-percentile cosine of each embedding to the teacher's.\n\
        Writes report.json and roc.png into --out.\n\n\
        Example: trainer eval --model student.efq --teacher w600k_mbf.onnx --json")]
    Eval(EvalCmd),
    /// Quantize a float teacher into a packed low-bit student (post-training quantization).
    #[command(
        long_about = "Quantize a float teacher into a packed low-bit student.\n\n\
        Weights: symmetric per output channel at --bits' w width; activations: per tensor at\n\
        its a width, ranges calibrated on --calib-images training crops (by default the\n\
        clipping point with the least squared error at that width; below 8 bits the levels\n\
        may also be split unevenly around zero, --act-grid). Before calibrating,\n\
        the channels in front of grouped and depthwise layers are equalized (an exact float\n\
        rescaling; --no-equalize skips it). The first conv and the last FC stay at 8 bits\n\
        unless --all-layers. --reconstruct STEPS then fits each layer to the teacher's output\n\
        of that layer on the calibration images (~20 minutes on 2 CPU cores; at w4a4 it lifts\n\
        w600k_mbf's teacher fidelity from 0.61 to 0.83), and --reconstruct-blocks STEPS then\n\
        fits each block (a bottleneck or residual unit) as a whole to the teacher's output of\n\
        that block (0.83 to 0.89 at 600 steps; --reconstruct-drop 0.5 leaves half the\n\
        activations float during that fit, QDrop, and adds a little on unseen faces).\n\
        See docs/quantization.md.\n\n\
        Examples: trainer quantize --bits w6a6 --out out/mbf-w6a6-ptq.efq\n          \
        trainer quantize --bits w4a4 --reconstruct 200 --reconstruct-blocks 600 \\\n            \
        --reconstruct-drop 0.5 --out out/mbf-w4a4-rec.efq"
    )]
    Quantize(QuantizeCmd),
    /// Fine-tune a quantized student with distillation (EKD by default), export it, evaluate it.
    #[command(
        long_about = "Fine-tune a quantized student from the teacher (Ef-QuantFace).\n\n\
        Starts from --student-init, or quantizes the teacher at --bits first (as `quantize`).\n\
        One epoch over --train-crops, EKD loss by default, no classification head. Positive\n\
        pairs come from the identity folders (one view per image, a person's images batched\n\
        together), or, with --positives views or where no person has two images, from two\n\
        views of each image (the image and an augmented copy: no labels, twice the passes).\n\
        Checkpoints every --checkpoint-every steps into --out-dir; --resume continues from the last one.\n\
        Writes student.efq (packed weights) and, unless --no-eval, evaluates it on LFW with the\n\
        teacher's fidelity and stores the FAR = 1e-3 threshold in the model.\n\n\
        Example: trainer finetune --bits w6a6 --out-dir out/ekd-w6a6"
    )]
    Finetune(FinetuneCmd),
    /// Compare two aligned face crops: cosine similarity and same/different at the model's threshold.
    #[command(long_about = "Compare two aligned 112×112 face crops.\n\n\
        Embeds both (with the flip test) through --backend (by default the fastest present: the\n\
        wgpu engine on a hardware GPU, else a CPU path; stderr says which) and prints their\n\
        cosine similarity and, for a packed model that stores one, the decision at its\n\
        FAR = 1e-3 threshold. Without --model it uses the teacher.\n\n\
        Example: trainer verify --model out/ekd-w6a6/student.efq a.jpg b.jpg")]
    Verify(VerifyCmd),
    /// Write the L2-normalised embeddings of aligned face crops as JSON.
    Embed(EmbedCmd),
    /// Measure images/s and latency of a model at several batch sizes on one backend.
    #[command(
        long_about = "Measure images/s and median batch latency of plain forward passes\n\
        on random inputs at each --batches size, on one --backend, and the peak memory of the\n\
        process. bench/engine_bench.sh runs every backend and onnxruntime side by side.\n\n\
        Example: trainer bench --model out/mbf-w8a8.efq --backend wgpu --batches 1,32,256"
    )]
    Bench(BenchCmd),
    /// Draw the all-pairs ROC curves of several `eval` reports in one PNG.
    #[command(
        long_about = "Draw the all-pairs ROC curves (flip test) of several `eval` reports\n\
        in one PNG, to compare a teacher with its students at low FAR.\n\n\
        Example: trainer roc --out roc.png teacher=out/eval-t/report.json w6a6=out/eval-s/report.json"
    )]
    Roc(RocCmd),
    /// Write a generated network (random weights, seeded) as an InsightFace-layout ONNX file.
    #[command(
        long_about = "Write a generated network with seeded random weights as ONNX, in\n\
        the layout of InsightFace's model zoo: for benchmarks and for testing the import of\n\
        architectures whose trained weights are not available here (iresnet R18–R200).\n\n\
        Example: trainer generate --arch iresnet50 --out out/r50-random.onnx"
    )]
    Generate(GenerateCmd),
    /// Detect and align faces: a folder of raw photos → 112×112 ArcFace crops.
    #[command(
        long_about = "Detect and align faces: a folder of raw photos → 112×112 ArcFace crops.\n\n\
        Every .jpg/.jpeg/.png under SRC (recursively) gets one crop at the same relative path\n\
        under DST. SCRFD (--detector) finds the faces at --det-size (retried at --retry-size\n\
        when none is found); of several faces the one nearest the photo's centre is kept; its\n\
        five keypoints are mapped onto the ArcFace template by a least-squares similarity.\n\
        Photos without a face are listed in DST/align-report.json and the summary.\n\n\
        Example: trainer align photos/ crops/"
    )]
    Align(efq_trainer::align::AlignCmd),
}

#[derive(Args)]
struct VerifyCmd {
    /// Model: an ONNX teacher or a packed .efq student [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// First aligned crop.
    a: PathBuf,
    /// Second aligned crop.
    b: PathBuf,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EmbedCmd {
    /// Model: an ONNX teacher or a packed .efq student [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Aligned 112×112 crops.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Output JSON file [default: stdout].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct BenchCmd {
    /// Model: an ONNX teacher or a packed .efq student [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batches: Vec<usize>,
    /// Keep timing each batch size for at least this many seconds (and 3 runs).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// wgpu: instead of timing, show where one forward pass at the first batch size spends
    /// its time, kernel by kernel.
    #[arg(long)]
    profile: bool,
}

#[derive(Args)]
struct RocCmd {
    /// Reports as LABEL=PATH (or PATH, labelled by the model name in the report).
    #[arg(required = true)]
    reports: Vec<String>,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Lowest FAR on the x axis.
    #[arg(long, default_value_t = 1e-6)]
    far_min: f64,
}

#[derive(Args)]
struct GenerateCmd {
    /// iresnet18, iresnet34, iresnet50, iresnet100 or iresnet200.
    #[arg(long, default_value = "iresnet50")]
    arch: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct FinetuneCmd {
    /// TOML file of options (keys are the long option names); command-line options win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Float teacher (ONNX) [default: the teacher scripts/setup.sh installed].
    #[arg(long, env = "EFQ_TEACHER")]
    teacher: Option<PathBuf>,
    /// Quantized starting point; default: quantize the teacher at --bits.
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
    #[arg(long, value_enum, default_value = "ekd")]
    loss: LossKind,
    /// Samples per step (with two views per image: two of batch/2 images).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: Optimizer,
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

/// Layer-wise reconstruction options, shared by `quantize` and `finetune`'s own quantization.
#[derive(Args)]
struct ReconstructArgs {
    /// After calibrating, fit each quantized layer in turn to the teacher's output of that
    /// layer, from the student's own quantized input on the calibration images: this many Adam
    /// steps on its weights, then its bias set to cancel the mean error per channel (0: the
    /// bias correction alone). Off unless given. See docs/quantization.md.
    #[arg(long, value_name = "STEPS")]
    reconstruct: Option<usize>,
    /// --reconstruct: Adam's step in units of each channel's weight quantization step.
    #[arg(long, default_value_t = 0.02)]
    reconstruct_lr: f64,
    /// --reconstruct: calibration images per Adam step.
    #[arg(long, default_value_t = 32)]
    reconstruct_batch: usize,
    /// --reconstruct: `learned` also fits each layer's input activation scale (LSQ's gradient)
    /// with its weights (on w600k_mbf at w4a4: teacher fidelity 0.773 against 0.765 frozen);
    /// `frozen` keeps the calibrated ranges.
    #[arg(
        long,
        value_enum,
        default_value = "learned",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    reconstruct_ranges: efq_trainer::student::ActRanges,
    /// --reconstruct: then fit each block (a residual unit, a bottleneck: the steps between two
    /// points where one pre-activation value is live) as a whole to the teacher's output of
    /// that block, this many Adam steps on all its layers at once (BRECQ). 0: off.
    #[arg(
        long,
        value_name = "STEPS",
        default_value_t = 0,
        requires = "reconstruct"
    )]
    reconstruct_blocks: usize,
    /// --reconstruct-blocks: during the block fit, leave each element of a quantized layer's
    /// input unquantized with this probability (QDrop; w600k_mbf w4a4 at 0.5: +0.4 point of
    /// TAR @ 1e-5 on LFW). 0: every input quantized. The file always quantizes all.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        requires = "reconstruct_blocks"
    )]
    reconstruct_drop: f64,
    /// --reconstruct-blocks: keep each weight within this many of its channel's quantization
    /// steps of where the block fit started (AdaRound's constraint; 0.5: only the two grid
    /// points around it). 0: unbounded, the default: at 0.5 the real teacher's w4a4 start
    /// came out worse (docs/RESULTS.md).
    #[arg(
        long,
        value_name = "STEPS",
        default_value_t = 0.0,
        requires = "reconstruct_blocks",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    reconstruct_box: f64,
    /// --reconstruct-blocks: what the last block's fit minimises. Its output is the embedding,
    /// which verification compares by cosine: `cosine` fits its direction alone (mean 1 −
    /// cosine to the teacher's; a trailing block with nothing to fit joins the one before),
    /// `mse` also its norm, as every other block does. On w600k_mbf w4a4 `cosine` halved the
    /// head's calibration error but left unseen faces where they were (docs/RESULTS.md).
    #[arg(
        long,
        value_enum,
        default_value = "mse",
        requires = "reconstruct_blocks",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    reconstruct_head: efq_trainer::reconstruct::Objective,
    /// --reconstruct: hold the activations over all calibration images (a layer's or block's
    /// input and the teacher's output, for each image) as `f16` to halve the memory that
    /// bounds --calib-images (computing stays f32), or `f32`, the default.
    #[arg(long, value_enum, default_value = "f32", requires = "reconstruct")]
    reconstruct_storage: efq_trainer::reconstruct::Storage,
}

impl ReconstructArgs {
    fn settings(&self) -> Option<efq_trainer::reconstruct::Reconstruction> {
        self.reconstruct
            .map(|steps| efq_trainer::reconstruct::Reconstruction {
                steps,
                batch: self.reconstruct_batch,
                lr: self.reconstruct_lr,
                ranges: self.reconstruct_ranges,
                block_steps: self.reconstruct_blocks,
                block_drop: self.reconstruct_drop,
                block_box: self.reconstruct_box,
                head_objective: self.reconstruct_head,
                storage: self.reconstruct_storage,
            })
    }
}

#[derive(Args)]
struct QuantizeCmd {
    /// Float teacher (ONNX) [default: the teacher scripts/setup.sh installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Training crops for calibration, relative to --lfw unless absolute.
    #[arg(long, default_value = "aligned112")]
    train_crops: PathBuf,
    /// Bit-widths: w<weights>a<activations>, each 2..8 (w8a8, w6a6, w4a8, w4a4 …). A `-dw8`
    /// suffix (w4a4-dw8) keeps every grouped/depthwise convolution at w8a8: mixed precision,
    /// labelled as such in the file and its reports.
    #[arg(long, default_value = "w8a8", value_parser = |s: &str| QuantConfig::parse(s).map_err(|e| e.to_string()))]
    bits: QuantConfig,
    /// Quantize the first conv and the last FC at --bits too (default: keep them at 8 bits).
    #[arg(long)]
    all_layers: bool,
    /// Calibration images, drawn at random (seeded) from --train-crops.
    #[arg(long, default_value_t = 512)]
    calib_images: usize,
    /// How activation ranges are chosen: the least-squared-error clipping point at each
    /// layer's width, or a percentile of |x| (the first default; `mse` replaced it on
    /// 2026-11-29, 3f73ead).
    #[arg(
        long,
        value_enum,
        default_value = "mse",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    calibration: quantize::RangeMethod,
    /// --calibration percentile: the percentile of |x| (per batch, then averaged).
    #[arg(long, default_value_t = 99.99, help_heading = EXPERIMENTS, hide_short_help = true)]
    percentile: f64,
    /// Activation grids below 8 bits: `split` places the levels around zero as the
    /// calibration images ask (most above zero after a PReLU; zero point still 0), chosen with
    /// the range by least squared error; `symmetric` keeps [-qmax, qmax] (every grid before
    /// `split` became the default, 2026-11-30, b79652a).
    #[arg(
        long,
        value_enum,
        default_value = "split",
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    act_grid: quantize::ActGrid,
    /// Skip the channel equalization in front of depthwise convolutions (an exact float
    /// rescaling that lets one activation scale per tensor fit channels of unequal range; with
    /// it w8a8 post-training quantization first met both its targets, 2026-11-30, 872ba46).
    #[arg(long, help_heading = EXPERIMENTS, hide_short_help = true)]
    no_equalize: bool,
    /// Equalization strength in front of grouped and pointwise convolutions, where it also
    /// moves range differences into their weights: 0 equalizes depthwise inputs only, 1 fully
    /// [default: 0.5 with weights of 6 bits or more, 0.25 below].
    #[arg(long)]
    equalize_alpha: Option<f32>,
    /// How each output channel's weight scale is chosen: `max` (max|w| / qmax, nothing
    /// clipped) or `mse` (the clipping point, 50–100 % of max|w|, with the least squared
    /// weight error per channel; a fine-tuned student keeps it). On w600k_mbf `mse` lowered
    /// the PTQ student's teacher fidelity at every width (docs/RESULTS.md): for ablations.
    #[arg(
        long,
        default_value = "max",
        value_parser = parse_weight_clip,
        help_heading = EXPERIMENTS,
        hide_short_help = true
    )]
    weight_clip: efq_shared::quant::WeightClip,
    #[command(flatten)]
    reconstruct: ReconstructArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the CPU even when CUDA is available.
    #[arg(long)]
    cpu: bool,
    /// Output model file [default: out/<teacher>-<bits>-ptq.efq].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct DataArgs {
    /// LFW folder holding pairs.txt and the crop folders [default: shared/data/lfw beside this
    /// checkout, not the working directory].
    #[arg(long, env = "EFQ_LFW")]
    lfw: Option<PathBuf>,
}

impl DataArgs {
    fn lfw(&self) -> Result<PathBuf> {
        paths::lfw(self.lfw.clone())
    }
}

#[derive(Args)]
struct EvalCmd {
    /// Model to evaluate: an ONNX teacher or a packed .efq student [default: the teacher
    /// scripts/setup.sh installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Crop folder, relative to --lfw unless absolute.
    #[arg(long, default_value = "insightface112")]
    crops: PathBuf,
    /// Pairs file, relative to --lfw unless absolute.
    #[arg(long, default_value = "pairs.txt")]
    pairs: PathBuf,
    /// Teacher to measure the model's fidelity against (cosine of embeddings).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Images per forward pass [default: libtorch 4 on the CPU (small batches stay in cache
    /// and run fastest), 128 on CUDA; wgpu 32].
    #[arg(long)]
    batch: Option<usize>,
    /// Where to run the network: libtorch (default), the wgpu engine, the CPU backend, or
    /// `auto` (as in `verify`: the fastest present, said on stderr).
    #[arg(long, value_enum, default_value = "tch")]
    backend: engine_cli::BackendKind,
    /// libtorch: use the CPU even when CUDA is available.
    #[arg(long)]
    cpu: bool,
    /// wgpu: use the dot4 polyfill even where `dot4I8Packed` exists.
    #[arg(long)]
    polyfill: bool,
    /// Only the first N images (a quick smoke run; pairs outside them are skipped).
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder for report.json and roc.png [default: out/eval-<model name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    quiet_vulkan_probe();
    efq_trainer::alloc::keep_freed_memory();
    let cli = Cli::parse_from(engine_cli::expand_config(std::env::args_os().collect())?);
    match cli.command {
        Command::Eval(c) => {
            let model = paths::teacher(c.model, "--model")?;
            if !model.exists() {
                anyhow::bail!(
                    "model {} does not exist (run `bash scripts/setup.sh` or pass --model)",
                    model.display()
                );
            }
            let lfw = c.data.lfw()?;
            let crops = lfw.join(&c.crops);
            let pairs = lfw.join(&c.pairs);
            let backend = BackendArgs {
                backend: c.backend,
                cpu: c.cpu,
                polyfill: c.polyfill,
                arith: engine_cli::Arith::Auto,
            }
            .open(&model)?;
            let report = eval::run(&eval::EvalArgs {
                model: &model,
                crops: &crops,
                pairs: &pairs,
                teacher: c.teacher.as_deref(),
                batch: c.batch.unwrap_or(backend.default_batch()),
                backend: &backend,
                limit: c.limit,
            })?;
            let stem = file_stem(&model);
            let out = c
                .out
                .unwrap_or_else(|| PathBuf::from("out").join(format!("eval-{stem}")));
            eval::write_outputs(&report, &out)
                .with_context(|| format!("writing results to {}", out.display()))?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                eval::print_table(&report);
                println!("wrote {0}/report.json and {0}/roc.png", out.display());
            }
        }
        Command::Quantize(c) => {
            let mut config = c.bits;
            config.first_last_8bit = !c.all_layers;
            let teacher = paths::teacher(c.model, "--model")?;
            let crops = c.data.lfw()?.join(&c.train_crops);
            let model = quantize::run(&quantize::QuantizeArgs {
                teacher: &teacher,
                crops: &crops,
                config,
                calibration: quantize::Calibration {
                    images: c.calib_images,
                    method: c.calibration,
                    percentile: c.percentile,
                    equalize: !c.no_equalize,
                    equalize_alpha: c.equalize_alpha,
                    weight_clip: c.weight_clip,
                    reconstruct: c.reconstruct.settings(),
                    act_grid: c.act_grid,
                    ..quantize::Calibration::default_with_seed(c.seed)
                },
                device: net::pick_device(c.cpu),
            })?;
            let stem = file_stem(&teacher);
            let out = c.out.unwrap_or_else(|| {
                PathBuf::from("out").join(format!("{stem}-{}-ptq.efq", config.label()))
            });
            quantize::save(&model, &out)?;
            println!("{}", quantize::describe(&model, &out));
        }
        Command::Finetune(c) => run_finetune(c)?,
        Command::Verify(c) => {
            let model = paths::teacher(c.model, "--model")?;
            let backend = c.backend.open(&model)?;
            let r = engine_cli::verify(&backend, &model, &c.a, &c.b)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verdict = match r.same {
                    Some(true) => "same person".to_string(),
                    Some(false) => "different people".to_string(),
                    None => "no decision: the model stores no threshold (export a student)".into(),
                };
                println!(
                    "cosine {:.4}{} → {verdict}  ({:.1} ms on {})",
                    r.similarity,
                    r.threshold
                        .as_ref()
                        .map(|t| format!(" vs threshold {:.4} (FAR {:e})", t.cosine, t.far))
                        .unwrap_or_default(),
                    r.latency_ms,
                    r.backend
                );
            }
        }
        Command::Embed(c) => {
            let model = paths::teacher(c.model, "--model")?;
            let backend = c.backend.open(&model)?;
            let rows = engine_cli::embed_files(&backend, &model, &c.images)?;
            let json = serde_json::to_vec_pretty(&rows)?;
            match c.out {
                Some(p) => efq_shared::format::write_atomic(&p, &json)?,
                None => println!("{}", String::from_utf8_lossy(&json)),
            }
        }
        Command::Bench(mut c) => {
            let model = paths::teacher(c.model, "--model")?;
            if c.profile && c.backend.backend == engine_cli::BackendKind::Auto {
                c.backend.backend = engine_cli::BackendKind::Wgpu; // what --profile measures
            }
            let backend = c.backend.open(&model)?;
            if c.profile {
                return engine_cli::profile(&backend, &model, c.batches[0]);
            }
            let rows = engine_cli::bench(&backend, &model, &c.batches, c.seconds)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                engine_cli::print_bench(&rows);
            }
        }
        Command::Roc(c) => {
            let mut curves = Vec::new();
            for r in &c.reports {
                let (label, path) = match r.split_once('=') {
                    Some((l, p)) => (Some(l.to_string()), PathBuf::from(p)),
                    None => (None, PathBuf::from(r)),
                };
                let report: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                )
                .with_context(|| format!("{} is not an eval report.json", path.display()))?;
                let points: Vec<(f64, f64)> =
                    serde_json::from_value(report["all_pairs_roc"].clone())
                        .with_context(|| format!("{} has no all_pairs_roc", path.display()))?;
                let label =
                    label.unwrap_or_else(|| report["model"].as_str().unwrap_or("?").to_string());
                curves.push(efq_trainer::plot::Curve { label, points });
            }
            efq_trainer::plot::roc_png(
                &c.out,
                "ROC, all pairs of the LFW test crops (flip)",
                &curves,
                c.far_min,
            )?;
            println!("wrote {}", c.out.display());
        }
        Command::Generate(c) => {
            let depth: usize = c
                .arch
                .strip_prefix("iresnet")
                .and_then(|d| d.parse().ok())
                .with_context(|| format!("unknown --arch {} (iresnet18 … iresnet200)", c.arch))?;
            let graph = efq_shared::builders::iresnet(depth, c.seed)?;
            let bytes = efq_shared::onnx::export_bytes(&graph)?;
            efq_shared::format::write_atomic(&c.out, &bytes)?;
            println!(
                "wrote {} ({}, {:.2} GMAC per image, {:.1} MB)",
                c.out.display(),
                c.arch,
                graph.macs()? as f64 / 1e9,
                bytes.len() as f64 / 1e6
            );
        }
        Command::Align(c) => efq_trainer::align::run(&c)?,
    }
    Ok(())
}

fn run_finetune(c: FinetuneCmd) -> Result<()> {
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
                let model = quantize::run(&quantize::QuantizeArgs {
                    teacher: &teacher,
                    crops: &train_crops,
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
        lr: c.lr,
        optimizer: c.optimizer,
        loss: c.loss,
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
    let init = efq_shared::format::PackedModel::load(&cfg.student_init)?;
    cfg.positives = outcome.positives;
    let mut model = efq_shared::format::PackedModel::new(outcome.graph, init.manifest.quant)?;
    model.manifest.preprocessing = init.manifest.preprocessing.clone();
    model.manifest.name = format!("{}-{:?}", init.manifest.name, c.loss).to_lowercase();
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

fn parse_weight_clip(s: &str) -> Result<efq_shared::quant::WeightClip, String> {
    s.parse().map_err(|e: efq_shared::Error| e.to_string())
}

/// Mesa's Vulkan driver probes for a Wayland display and prints an error on every start when
/// `XDG_RUNTIME_DIR` is unset (headless machines have none), which `--backend auto` would show
/// on every run outside scripts/setup.sh's shell: point it at the private directory the set-up
/// uses, `/tmp/xdg-runtime-<uid>`, when that is (or can be made) ours alone.
fn quiet_vulkan_probe() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
            return;
        }
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return;
        };
        let dir = PathBuf::from(format!("/tmp/xdg-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o700);
        if ours {
            // SAFETY: first thing in `main`, before any thread exists to read the environment.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
