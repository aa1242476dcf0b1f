//! `trainer quantize`: post-training quantization of a float teacher into a packed student,
//! with activation ranges calibrated on training images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use efq_shared::format::PackedModel;
use efq_shared::preprocess::load_face;
use efq_shared::quant::{ActQuant, QuantConfig, WeightClip, qmax, quantize_graph_with_grids};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::embed::{FaceFolder, progress};
use crate::eval::load_model;
use crate::net::TchNet;
use crate::reconstruct::Reconstruction;
use crate::student::Student;

/// How an activation's range is chosen from what the calibration images show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RangeMethod {
    /// The range whose grid reproduces the observed values with the least squared error: a
    /// search over clipping points from 1 % to 100 % of the largest |x| seen, at the layer's
    /// own bit-width. At 6 bits and below it clips much harder than any fixed percentile.
    Mse,
    /// The `percentile` of |x| per batch, averaged over batches.
    Percentile,
}

/// Where an activation's integer levels sit around zero (docs/quantization.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ActGrid {
    /// `[-qmax, qmax]`.
    #[default]
    Symmetric,
    /// The same number of levels split around zero as the calibration images ask
    /// (`[lo, lo + 2·qmax]`, chosen with the range by least squared error; below 8 bits, with
    /// `--calibration mse`). A PReLU output with slopes near 0 gets most levels above zero.
    Split,
}

/// How activation ranges are read off the calibration images.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Calibration {
    /// Number of calibration images (drawn with `seed` from the training folder).
    pub images: usize,
    pub batch: usize,
    pub method: RangeMethod,
    /// For [`RangeMethod::Percentile`]: per batch, the range is this percentile of |x|. Below
    /// 100 it ignores rare outliers, which at 4 bits would otherwise stretch the grid until
    /// most activations round to zero.
    pub percentile: f64,
    pub seed: u64,
    /// Equalize the channels in front of grouped, depthwise and pointwise convolutions before
    /// calibrating ([`equalize`]): exact in float, it lets one activation scale per tensor fit
    /// channels of unequal range.
    #[serde(default)]
    pub equalize: bool,
    /// Migration strength in front of grouped and pointwise convolutions, where equalizing
    /// moves range differences into the consumer's weights (0: depthwise layers only); `None`:
    /// [`auto_alpha`] of the weight width.
    #[serde(default)]
    pub equalize_alpha: Option<f32>,
    /// How each output channel's weight scale is chosen (`max|w|`, or the least-squared-error
    /// clipping point).
    #[serde(default)]
    pub weight_clip: WeightClip,
    /// Layer-wise reconstruction after calibration ([`crate::reconstruct`]); `None`: off.
    #[serde(default)]
    pub reconstruct: Option<Reconstruction>,
    /// How the activation levels sit around zero (files written before this option existed:
    /// symmetric).
    #[serde(default)]
    pub act_grid: ActGrid,
}

/// The equalization strength `quantize` uses unless told: 0.5 with weights of 6 bits or more,
/// 0.25 below, where the weights have little precision to spare. From a sweep of the PTQ
/// student's teacher fidelity on `w600k_mbf` (docs/EXPERIMENTS.md, "Channel equalization").
pub fn auto_alpha(weight_bits: u8) -> f32 {
    if weight_bits >= 6 { 0.5 } else { 0.25 }
}

impl Calibration {
    /// 512 images in batches of 32, MSE ranges: what `quantize` and `finetune` use by default.
    pub fn default_with_seed(seed: u64) -> Self {
        Calibration {
            images: 512,
            batch: 32,
            method: RangeMethod::Mse,
            percentile: 99.99,
            seed,
            equalize: true,
            equalize_alpha: None,
            weight_clip: WeightClip::Max,
            reconstruct: None,
            act_grid: ActGrid::Split,
        }
    }
}

pub struct QuantizeArgs<'a> {
    pub teacher: &'a Path,
    pub crops: &'a Path,
    /// A `pairs.txt` whose people are left out of the calibration images (LFW's clean set:
    /// the faces a model is tested on never calibrate it), or `None` for every crop.
    pub exclude_pairs_people: Option<&'a Path>,
    pub config: QuantConfig,
    pub calibration: Calibration,
    pub device: tch::Device,
}

/// Activation values kept per layer and batch for the MSE search (a seeded random sample).
const MSE_SAMPLES: i64 = 1 << 14;
/// Clipping points tried by the MSE search: k/100 of the largest |x|, k = 1..=100.
const MSE_CANDIDATES: usize = 100;

/// Splits of the levels the search tries: `lo = −round(2·qmax·j/16)`, j = 0..=16 (all below
/// zero to all above), the symmetric `−qmax` first so that a tie keeps it.
const SPLITS: i32 = 16;
/// Samples per layer the split search reads (the symmetric search reads them all).
const SPLIT_SEARCH_SAMPLES: i64 = 1 << 16;

/// The grid minimising Σ (x − fake_quant(x))² over `samples`, whose most negative and most
/// positive values have magnitudes `neg` and `pos`: for each split `[lo, lo + 2·qmax]` (only
/// the symmetric one unless `grid` is [`ActGrid::Split`] and `bits < 8`, where every split
/// fits an i8), the scales k/100 of the one that covers both extremes, k = 1..=100.
pub fn mse_grid(samples: &Tensor, neg: f64, pos: f64, bits: u8, grid: ActGrid) -> ActQuant {
    let q = qmax(bits);
    let mut splits = vec![-q];
    let split = grid == ActGrid::Split && bits < 8;
    // 17 splits × 100 scales: every one of a (random) fraction of the samples, to keep the
    // search within seconds per layer.
    let n = samples.size()[0];
    let samples = if split && n > SPLIT_SEARCH_SAMPLES {
        samples.slice(
            0,
            0,
            n,
            (n + SPLIT_SEARCH_SAMPLES - 1) / SPLIT_SEARCH_SAMPLES,
        )
    } else {
        samples.shallow_clone()
    };
    let samples = &samples;
    if split {
        splits.extend(
            (0..=SPLITS)
                .map(|j| -((2 * q * j + SPLITS / 2) / SPLITS))
                .filter(|&lo| lo != -q),
        );
        splits.dedup();
    }
    let mut best = (f64::INFINITY, 1.0f64, -q);
    for &lo in &splits {
        let hi = lo + 2 * q;
        let cover = f64::max(
            if hi > 0 { pos / hi as f64 } else { 0.0 },
            if lo < 0 { neg / -lo as f64 } else { 0.0 },
        );
        // A split with no level on one side clips that sign to zero, which the error counts.
        if cover.is_nan() || cover <= 0.0 {
            continue;
        }
        for k in 1..=MSE_CANDIDATES {
            let s = cover * k as f64 / MSE_CANDIDATES as f64;
            let err = (samples.fake_quantize_per_tensor_affine(s, 0, lo as i64, hi as i64)
                - samples)
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
            if err < best.0 {
                best = (err, s, lo);
            }
        }
    }
    let (_, scale, lo) = best;
    ActQuant {
        bits,
        scale: scale as f32,
        levels: (lo != -q).then_some([lo, lo + 2 * q]),
    }
}

/// Runs `net` over the calibration images (seeded draw of `cal.images` from `folder`), calling
/// `observe(k, x)` with the input of the k-th Conv/Gemm of every batch.
fn observe_calibration(
    net: &TchNet,
    folder: &FaceFolder,
    cal: &Calibration,
    pre: &efq_shared::format::Preprocessing,
    label: &'static str,
    observe: &mut dyn FnMut(usize, &Tensor),
) -> Result<()> {
    let order = calibration_order(folder, cal);
    tch::manual_seed(cal.seed as i64);
    let pb = progress(order.len() as u64, label);
    for chunk in order.chunks(cal.batch.max(1)) {
        let x = load_batch(folder, chunk, pre, net.input_shape)?;
        let _ = tch::no_grad(|| net.forward_observed(&x, observe))?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(())
}

/// The calibration images: a seeded draw of `cal.images` from `folder`.
fn calibration_order(folder: &FaceFolder, cal: &Calibration) -> Vec<PathBuf> {
    let mut order: Vec<PathBuf> = folder.images.clone();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(cal.seed));
    order.truncate(cal.images.max(1));
    order
}

/// `paths` (relative to the folder) as one `[N, C, H, W]` batch on the CPU.
fn load_batch(
    folder: &FaceFolder,
    paths: &[PathBuf],
    pre: &efq_shared::format::Preprocessing,
    shape: [usize; 3],
) -> Result<Tensor> {
    let pixels: Vec<Vec<f32>> = paths
        .par_iter()
        .map(|p| load_face(folder.root.join(p), pre).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let [c, h, w] = shape.map(|d| d as i64);
    Ok(Tensor::from_slice(&pixels.concat()).reshape([paths.len() as i64, c, h, w]))
}

/// All calibration images of `cal` in one `[N, C, H, W]` tensor (512 crops of 112×112: 77 MB).
pub fn calibration_images(
    folder: &FaceFolder,
    cal: &Calibration,
    pre: &efq_shared::format::Preprocessing,
    shape: [usize; 3],
) -> Result<Tensor> {
    load_batch(folder, &calibration_order(folder, cal), pre, shape)
}

/// Equalizes, in place, the channels at every site of the float `graph` (see
/// [`efq_shared::equalize`]) from the per-channel ranges the calibration images show: fully in
/// front of depthwise consumers, with `cal.equalize_alpha` in front of the others. Returns the
/// number of layers equalized. The calibration that follows reads the images again: it needs
/// the equalized network's activations.
pub fn equalize(
    graph: &mut efq_shared::graph::Graph,
    folder: &FaceFolder,
    cal: &Calibration,
    pre: &efq_shared::format::Preprocessing,
    device: tch::Device,
) -> Result<usize> {
    let sites = efq_shared::equalize::sites(graph);
    if sites.is_empty() {
        return Ok(0);
    }
    let net = TchNet::new(graph, device)?;
    // Per site layer: the largest |x| of every channel over all calibration batches.
    let mut absmax: std::collections::BTreeMap<usize, Tensor> = Default::default();
    let wanted: std::collections::BTreeSet<usize> = sites.iter().map(|s| s.layer).collect();
    observe_calibration(&net, folder, cal, pre, "equalize", &mut |k, t| {
        if wanted.contains(&k) {
            let c = t
                .abs()
                .amax([0i64, 2, 3].as_slice(), false)
                .to_device(tch::Device::Cpu);
            let m = absmax.entry(k).or_insert_with(|| c.zeros_like());
            *m = m.maximum(&c);
        }
    })?;
    for s in &sites {
        let r = Vec::<f32>::try_from(&absmax[&s.layer])?;
        let alpha = if s.depthwise {
            1.0
        } else {
            cal.equalize_alpha.unwrap_or(0.0)
        };
        efq_shared::equalize::rescale(graph, s, &efq_shared::equalize::factors(&r, alpha))?;
    }
    Ok(sites.len())
}

/// Calibrated activation grid of every Conv/Gemm input of `net`, in node order; `act_bits(k)`
/// is the activation width of the k-th of them (the MSE search depends on it).
pub fn calibrate(
    net: &TchNet,
    folder: &FaceFolder,
    cal: &Calibration,
    pre: &efq_shared::format::Preprocessing,
    act_bits: &dyn Fn(usize) -> u8,
) -> Result<Vec<ActQuant>> {
    // Per layer: the sum of per-batch percentiles, the largest |x|, the largest magnitude of
    // either sign, and the MSE samples.
    let mut sums: Vec<f64> = Vec::new();
    let mut absmax: Vec<f64> = Vec::new();
    let mut extremes: Vec<(f64, f64)> = Vec::new();
    let mut samples: Vec<Vec<Tensor>> = Vec::new();
    let mut batches = 0usize;
    observe_calibration(net, folder, cal, pre, "calibrate", &mut |k, t| {
        if k == 0 {
            batches += 1;
        }
        if k == sums.len() {
            sums.push(0.0);
            absmax.push(0.0);
            extremes.push((0.0, 0.0));
            samples.push(Vec::new());
        }
        let flat = t.flatten(0, -1).to_device(tch::Device::Cpu);
        let n = flat.size()[0];
        absmax[k] = absmax[k].max(flat.abs().max().double_value(&[]));
        let (neg, pos) = &mut extremes[k];
        *neg = neg.max(-flat.min().double_value(&[]));
        *pos = pos.max(flat.max().double_value(&[]));
        match cal.method {
            RangeMethod::Percentile => {
                let a = flat.abs();
                let i = ((cal.percentile / 100.0 * n as f64).ceil() as i64).clamp(1, n);
                sums[k] += a.kthvalue(i, 0, false).0.double_value(&[]);
            }
            RangeMethod::Mse => {
                let pick = if n > MSE_SAMPLES {
                    flat.index_select(
                        0,
                        &Tensor::randint(n, [MSE_SAMPLES], (Kind::Int64, tch::Device::Cpu)),
                    )
                } else {
                    flat.copy()
                };
                samples[k].push(pick);
            }
        }
    })?;
    let grid = |k: usize, range: f64| {
        ActQuant::from_range(act_bits(k), range as f32).with_context(|| {
            format!("calibration found no signal at the input of quantized layer {k}")
        })
    };
    match cal.method {
        RangeMethod::Percentile => sums
            .iter()
            .enumerate()
            .map(|(k, s)| grid(k, s / batches as f64))
            .collect(),
        RangeMethod::Mse => samples
            .iter()
            .enumerate()
            .map(|(k, s)| {
                if !(absmax[k] > 0.0 && absmax[k].is_finite()) {
                    return grid(k, absmax[k]);
                }
                let (neg, pos) = extremes[k];
                let g = mse_grid(&Tensor::cat(s, 0), neg, pos, act_bits(k), cal.act_grid);
                g.validate()?;
                Ok(g)
            })
            .collect(),
    }
}

/// Teacher → calibrated, quantized student (not yet fine-tuned).
pub fn run(args: &QuantizeArgs) -> Result<PackedModel> {
    let (mut graph, pre) = load_model(args.teacher)?;
    if graph.is_quantized() {
        bail!(
            "{} is already quantized; quantize a float teacher",
            args.teacher.display()
        );
    }
    if let Some(r) = &args.calibration.reconstruct {
        r.validate()?;
    }
    let mut folder = FaceFolder::scan(args.crops)?;
    if let Some(pairs) = args.exclude_pairs_people {
        let kept = crate::finetune::training_set(
            &folder,
            pairs,
            crate::finetune::Protocol::Clean,
            1.0,
            0,
        )?;
        let mut kept: Vec<(PathBuf, u32)> = kept;
        kept.sort();
        (folder.images, folder.labels) = kept.into_iter().unzip();
    }
    let mut calibration = args.calibration;
    if let Some(a) = calibration.equalize_alpha
        && !(0.0..=1.0).contains(&a)
    {
        bail!("--equalize-alpha must lie in [0, 1], got {a}");
    }
    calibration.equalize_alpha = calibration
        .equalize_alpha
        .or(Some(auto_alpha(args.config.weight_bits)))
        .filter(|_| calibration.equalize);
    let equalized = if calibration.equalize {
        equalize(&mut graph, &folder, &calibration, &pre, args.device)?
    } else {
        0
    };
    let net = TchNet::new(&graph, args.device)?;
    let widths = args.config.layer_widths(&graph);
    let grids = calibrate(&net, &folder, &calibration, &pre, &|k| widths[k].1)?;
    let mut student =
        quantize_graph_with_grids(&graph, &args.config, &grids, calibration.weight_clip)?;
    let mut fits = None;
    if let Some(r) = &calibration.reconstruct {
        let images = calibration_images(&folder, &calibration, &pre, graph.input_shape)?;
        let s = Student::new(&student, args.device, r.ranges)?;
        let pb = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "reconstruct {bar:30.cyan/blue} {pos}/{len} nodes [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        let f = crate::reconstruct::run(&net, &s, &images, r, calibration.seed, &pb)?;
        let blocks = if r.block_steps > 0 {
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "blocks {bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            Some(crate::reconstruct::run_blocks(
                &net,
                &s,
                &images,
                r,
                calibration.seed,
                &pb,
            )?)
        } else {
            None
        };
        pb.finish_and_clear();
        student = s.to_graph()?;
        fits = Some((f, blocks));
    }
    let mut model = PackedModel::new(student, Some(args.config))?;
    model.manifest.preprocessing = pre;
    model.manifest.name = format!("{}-{}", graph.name, args.config.label());
    model
        .manifest
        .extra
        .insert("teacher".into(), args.teacher.display().to_string().into());
    model
        .manifest
        .extra
        .insert("calibration".into(), serde_json::to_value(calibration)?);
    model
        .manifest
        .extra
        .insert("equalized_layers".into(), equalized.into());
    if let Some((layers, blocks)) = fits {
        model
            .manifest
            .extra
            .insert("reconstruction".into(), serde_json::to_value(layers)?);
        if let Some(b) = blocks {
            model
                .manifest
                .extra
                .insert("reconstruction_blocks".into(), serde_json::to_value(b)?);
        }
    }
    let crops = match args.exclude_pairs_people {
        Some(pairs) => format!(
            "{}, the {} crops of people outside {}",
            args.crops.display(),
            folder.images.len(),
            pairs.display()
        ),
        None => args.crops.display().to_string(),
    };
    model
        .manifest
        .extra
        .insert("calibration_crops".into(), crops.into());
    Ok(model)
}

/// Model size in MB (10^6 bytes): weights at their bit-width plus scales, biases and the
/// float parameters of BatchNorm and PReLU.
pub fn size_mb(model: &PackedModel) -> f64 {
    model.parameter_bytes() as f64 / 1e6
}

pub fn describe(model: &PackedModel, path: &Path) -> String {
    format!(
        "wrote {} ({}, {:.2} MB of parameters)",
        path.display(),
        model
            .manifest
            .quant
            .map(|q| q.label())
            .unwrap_or_else(|| "float".into()),
        size_mb(model)
    )
}

/// Writes `model` and loads it back: a file that every later command would refuse is removed
/// and reported here, not announced as written.
pub fn save(model: &PackedModel, path: &Path) -> Result<()> {
    model
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Err(e) = PackedModel::load(path) {
        let _ = std::fs::remove_file(path);
        anyhow::bail!(
            "the model written to {} does not load back, so it was removed: {e}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fq_error(x: &Tensor, g: &ActQuant) -> f64 {
        let [lo, hi] = g.levels();
        (x.fake_quantize_per_tensor_affine(g.scale as f64, 0, lo as i64, hi as i64) - x)
            .square()
            .sum(Kind::Double)
            .double_value(&[])
    }

    fn extremes(x: &Tensor) -> (f64, f64) {
        (
            (-x.min().double_value(&[])).max(0.0),
            x.max().double_value(&[]).max(0.0),
        )
    }

    #[test]
    fn split_grid_gives_a_prelu_output_most_levels_above_zero_and_a_smaller_error() {
        tch::manual_seed(3);
        let z = Tensor::randn([50_000], (Kind::Float, tch::Device::Cpu));
        // A PReLU output with slope 0.1: mostly positive, a short negative tail.
        let x = z.relu() - (-&z).relu() * 0.1;
        let (neg, pos) = extremes(&x);
        let sym = mse_grid(&x, neg, pos, 4, ActGrid::Symmetric);
        let split = mse_grid(&x, neg, pos, 4, ActGrid::Split);
        assert_eq!(sym.levels, None);
        let [lo, hi] = split.levels.expect("a one-sided tensor gets a split grid");
        assert!(lo > -7 && lo < 0 && hi > 7, "levels [{lo}, {hi}]");
        split.validate().unwrap();
        let (e_sym, e_split) = (fq_error(&x, &sym), fq_error(&x, &split));
        assert!(
            e_split < 0.6 * e_sym,
            "split error {e_split} vs symmetric {e_sym}"
        );
        // The symmetric search is the split search's first candidate: equal at 8 bits,
        // where no other split fits an i8.
        let s8 = mse_grid(&x, neg, pos, 8, ActGrid::Split);
        assert_eq!(s8, mse_grid(&x, neg, pos, 8, ActGrid::Symmetric));
        assert_eq!(s8.levels, None);
    }

    #[test]
    fn split_grid_stays_near_symmetric_on_a_symmetric_tensor() {
        tch::manual_seed(4);
        let x = Tensor::randn([50_000], (Kind::Float, tch::Device::Cpu));
        let (neg, pos) = extremes(&x);
        let g = mse_grid(&x, neg, pos, 4, ActGrid::Split);
        let [lo, _] = g.levels();
        assert!((-9..=-5).contains(&lo), "levels {:?}", g.levels());
        let sym = mse_grid(&x, neg, pos, 4, ActGrid::Symmetric);
        assert!(fq_error(&x, &g) <= fq_error(&x, &sym));
    }
}
