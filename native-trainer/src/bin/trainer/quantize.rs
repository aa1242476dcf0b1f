//! `trainer quantize`: a float teacher packed into a low-bit student (post-training quantization).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use efq_shared::quant::QuantConfig;
use efq_trainer::paths::file_stem;
use efq_trainer::{net, paths, quantize, threshold};

use crate::common::{DataArgs, EXPERIMENTS};
use crate::reconstruct::ReconstructArgs;

#[derive(Args)]
pub struct QuantizeCmd {
    /// Float teacher: ONNX or an arcface_torch .pth [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Training crops for calibration, relative to --lfw unless absolute.
    #[arg(long, default_value = "aligned112")]
    train_crops: PathBuf,
    /// Whose crops calibrate: `clean` leaves out everyone in --lfw's pairs.txt, so the faces
    /// `eval` tests on never shape the model (LFW's clean set: 1,549 crops of 1,468 people);
    /// `all` takes every crop of --train-crops (the paper's protocol; the default until
    /// 2026-12-06).
    #[arg(long, value_enum, default_value_t = CalibPeople::Clean)]
    calib_people: CalibPeople,
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
    /// the PTQ student's teacher fidelity at every width (docs/EXPERIMENTS.md, "weights or activations"): for ablations.
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
    /// Face folder (`<person>/<image>`) on which to measure the verification threshold stored
    /// in the model (FAR 1e-3, flip test, all pairs) [default: LFW's clean set, the aligned112
    /// crops of the people outside pairs.txt].
    #[arg(long)]
    threshold_crops: Option<PathBuf>,
    /// Store no threshold (saves the ~1,549-crop pass; `verify` then gives no decision).
    #[arg(long)]
    no_threshold: bool,
    /// Output model file [default: out/<teacher>-<bits>-ptq.efq].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_weight_clip(s: &str) -> Result<efq_shared::quant::WeightClip, String> {
    s.parse().map_err(|e: efq_shared::Error| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CalibPeople {
    Clean,
    All,
}

impl QuantizeCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
        let mut config = c.bits;
        config.first_last_8bit = !c.all_layers;
        let teacher = paths::teacher(c.model, "--model")?;
        let lfw = c.data.lfw()?;
        let crops = lfw.join(&c.train_crops);
        let pairs = lfw.join("pairs.txt");
        let mut model = quantize::run(&quantize::QuantizeArgs {
            teacher: &teacher,
            crops: &crops,
            exclude_pairs_people: (c.calib_people == CalibPeople::Clean).then_some(pairs.as_path()),
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
        if !c.no_threshold {
            let set = match &c.threshold_crops {
                Some(dir) => threshold::ThresholdSet::folder(dir)?,
                None => threshold::ThresholdSet::lfw_clean(&lfw)?,
            };
            let t = threshold::measure(&model, &set)?;
            eprintln!(
                "threshold: cosine {:.4} at FAR {:e} ({})",
                t.cosine, t.far, t.source
            );
            model.manifest.threshold = Some(t);
        }
        quantize::save(&model, &out)?;
        println!("{}", quantize::describe(&model, &out));

        Ok(())
    }
}
