//! `trainer`: turns a full-precision face-recognition teacher into a low-bit student
//! (Ef-QuantFace) and evaluates both.

use efq_shared::quant::QuantConfig;
use efq_trainer::{eval, net, quantize};

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Ef-QuantFace trainer: import a face-recognition teacher, quantize it, evaluate it",
    long_about = "Ef-QuantFace trainer.\n\n\
        Models are InsightFace ONNX files (float teachers such as w600k_mbf.onnx) or packed\n\
        EfQuantFace files (.efq, safetensors with a manifest). Data is LFW: a folder of aligned\n\
        112×112 crops with one sub-folder per person, and the standard pairs.txt.\n\n\
        Defaults come from the environment that scripts/setup.sh prepares:\n  \
        EFQ_TEACHER  the teacher model (w600k_mbf.onnx in the setup cache)\n  \
        EFQ_LFW      the LFW folder (../shared/data/lfw beside the checkout)"
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
        Weights: symmetric per output channel at --bits' w width; activations: symmetric per\n\
        tensor at its a width, ranges calibrated on --calib-images training crops (the\n\
        --percentile of |x| per batch, averaged). The first conv and the last FC stay at 8 bits\n\
        unless --all-layers. See docs/quantization.md.\n\n\
        Example: trainer quantize --bits w6a6 --out out/mbf-w6a6-ptq.efq"
    )]
    Quantize(QuantizeCmd),
}

#[derive(Args)]
struct QuantizeCmd {
    /// Float teacher (ONNX).
    #[arg(long, env = "EFQ_TEACHER")]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Training crops for calibration, relative to --lfw unless absolute.
    #[arg(long, default_value = "aligned112")]
    train_crops: PathBuf,
    /// Bit-widths: w<weights>a<activations>, each 2..8 (w8a8, w6a6, w4a8, w4a4 …).
    #[arg(long, default_value = "w8a8", value_parser = |s: &str| QuantConfig::parse(s).map_err(|e| e.to_string()))]
    bits: QuantConfig,
    /// Quantize the first conv and the last FC at --bits too (default: keep them at 8 bits).
    #[arg(long)]
    all_layers: bool,
    /// Calibration images, drawn at random (seeded) from --train-crops.
    #[arg(long, default_value_t = 512)]
    calib_images: usize,
    /// Percentile of |x| taken as an activation's range (per batch, then averaged).
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
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
    /// LFW folder holding pairs.txt and the crop folders.
    #[arg(long, env = "EFQ_LFW", default_value = "../shared/data/lfw")]
    lfw: PathBuf,
}

#[derive(Args)]
struct EvalCmd {
    /// Model to evaluate: an ONNX teacher or a packed .efq student.
    #[arg(long, env = "EFQ_TEACHER")]
    model: PathBuf,
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
    /// Images per forward pass [default: 4 on the CPU, where small batches stay in cache
    /// and run fastest; 128 on CUDA].
    #[arg(long)]
    batch: Option<usize>,
    /// Use the CPU even when CUDA is available.
    #[arg(long)]
    cpu: bool,
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
    let cli = Cli::parse();
    match cli.command {
        Command::Eval(c) => {
            let crops = c.data.lfw.join(&c.crops);
            let pairs = c.data.lfw.join(&c.pairs);
            if !c.model.exists() {
                anyhow::bail!(
                    "model {} does not exist (run scripts/setup.sh or pass --model)",
                    c.model.display()
                );
            }
            let device = net::pick_device(c.cpu);
            let report = eval::run(&eval::EvalArgs {
                model: &c.model,
                crops: &crops,
                pairs: &pairs,
                teacher: c.teacher.as_deref(),
                batch: c.batch.unwrap_or(if device.is_cuda() { 128 } else { 4 }),
                device,
                limit: c.limit,
            })?;
            let stem = c
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
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
            let crops = c.data.lfw.join(&c.train_crops);
            let model = quantize::run(&quantize::QuantizeArgs {
                teacher: &c.model,
                crops: &crops,
                config,
                calibration: quantize::Calibration {
                    images: c.calib_images,
                    batch: 32,
                    percentile: c.percentile,
                    seed: c.seed,
                },
                device: net::pick_device(c.cpu),
            })?;
            let stem = c
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let out = c.out.unwrap_or_else(|| {
                PathBuf::from("out").join(format!("{stem}-{}-ptq.efq", config.label()))
            });
            quantize::save(&model, &out)?;
            println!("{}", quantize::describe(&model, &out));
        }
    }
    Ok(())
}
