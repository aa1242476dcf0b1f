//! `trainer eval`: the InsightFace LFW protocol, the all-pairs low-FAR protocol and (with a
//! teacher) the student's fidelity, with a table, a JSON report and a ROC plot.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use efq_shared::eval::{
    AllPairs, Fidelity, TarAtFar, TenFold, all_pairs, auc, read_lfw_pairs, roc, tar_at_far,
    teacher_fidelity, ten_fold,
};
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::graph::Graph;
use serde::Serialize;

use crate::embed::{Backend, Embeddings, FaceFolder, embed_images};
use crate::plot::{Curve, roc_png};

/// The FARs of the summary table (the paper's IJB-C columns and two easier points).
pub const TABLE_FARS: [f64; 5] = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// Whether `path` is a float teacher — ONNX, or an arcface_torch checkpoint (`.pth`, `.pt`) —
/// rather than a packed `.efq` model.
pub fn is_float_teacher(path: &Path) -> bool {
    efq_shared::pth::is_checkpoint(path)
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Imports a float teacher: ONNX as it is, an arcface_torch checkpoint as the ONNX its export
/// would be (`efq_shared::pth`).
pub fn import_teacher(path: &Path) -> Result<efq_shared::onnx::Imported> {
    Ok(if efq_shared::pth::is_checkpoint(path) {
        efq_shared::pth::import_file(path)?
    } else {
        efq_shared::onnx::import_file_with_conventions(path)?
    })
}

/// Loads a float teacher (ONNX or `.pth`; its input conventions from [`crate::conventions`])
/// or a packed `.efq` model (which records its own).
pub fn load_model(path: &Path) -> Result<(Graph, Preprocessing)> {
    if is_float_teacher(path) {
        let imported = import_teacher(path)?;
        let pre = crate::conventions::for_onnx(&imported, path)?;
        Ok((imported.graph, pre))
    } else {
        let m = PackedModel::load(path)?;
        crate::conventions::check_packed(&m.manifest.preprocessing, path)?;
        Ok((m.graph, m.manifest.preprocessing))
    }
}

#[derive(Serialize)]
pub struct VariantReport {
    /// InsightFace 10-fold accuracy on the pairs file.
    pub ten_fold: TenFold,
    /// ROC AUC on the pairs file (cosine scores).
    pub auc: f64,
    /// TAR at FAR on the pairs file (3,000 impostor pairs: 1e-3 is the lowest meaningful point).
    pub pairs_tar_at_far: Vec<TarAtFar>,
    /// All pairs of the crop folder.
    pub all_pairs: AllPairsSummary,
}

#[derive(Serialize)]
pub struct AllPairsSummary {
    pub n_genuine: usize,
    pub n_impostor: usize,
    pub tar_at_far: Vec<TarAtFar>,
}

#[derive(Serialize)]
pub struct FidelityReport {
    pub flip: Fidelity,
    pub no_flip: Fidelity,
}

#[derive(Serialize)]
pub struct EvalReport {
    pub model: String,
    pub model_path: PathBuf,
    pub device: String,
    pub crops: PathBuf,
    pub pairs_file: PathBuf,
    pub images: usize,
    pub identities: usize,
    pub batch: usize,
    /// Throughput of the embedding pass (each image forwarded twice: plain and flipped).
    pub images_per_second: f64,
    pub seconds_total: f64,
    pub flip: VariantReport,
    pub no_flip: VariantReport,
    pub teacher: Option<PathBuf>,
    pub fidelity: Option<FidelityReport>,
    /// (FAR, TAR) of the all-pairs ROC with flip, for plots.
    pub all_pairs_roc: Vec<(f64, f64)>,
}

pub struct EvalArgs<'a> {
    pub model: &'a Path,
    pub crops: &'a Path,
    pub pairs: &'a Path,
    pub teacher: Option<&'a Path>,
    pub batch: usize,
    pub backend: &'a Backend,
    pub limit: Option<usize>,
}

fn far_grid() -> Vec<f64> {
    // 41 log-spaced points from 1e-6 to 1e-2 for the plot; the table FARs are among them.
    (0..=40)
        .map(|i| 10f64.powf(-6.0 + i as f64 * 0.1))
        .chain(TABLE_FARS)
        .collect()
}

fn variant(
    emb: &[f32],
    dim: usize,
    pair_idx: &[(usize, usize, bool)],
    labels: &[u32],
) -> Result<(VariantReport, AllPairs)> {
    let score = |i: usize, j: usize| -> f32 {
        emb[i * dim..][..dim]
            .iter()
            .zip(&emb[j * dim..][..dim])
            .map(|(a, b)| a * b)
            .sum()
    };
    let mut dist = Vec::with_capacity(pair_idx.len());
    let mut scores = Vec::with_capacity(pair_idx.len());
    let mut same = Vec::with_capacity(pair_idx.len());
    for &(i, j, s) in pair_idx {
        let d: f32 = emb[i * dim..][..dim]
            .iter()
            .zip(&emb[j * dim..][..dim])
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        dist.push(d);
        scores.push(score(i, j));
        same.push(s);
    }
    let genuine: Vec<f32> = scores
        .iter()
        .zip(&same)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let impostor: Vec<f32> = scores
        .iter()
        .zip(&same)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    let grid = far_grid();
    let ap = all_pairs(emb, dim, labels, &grid)?;
    let table: Vec<TarAtFar> = ap
        .tar
        .iter()
        .skip(grid.len() - TABLE_FARS.len())
        .copied()
        .collect();
    Ok((
        VariantReport {
            ten_fold: ten_fold(&dist, &same)?,
            auc: auc(&roc(&scores, &same)?),
            pairs_tar_at_far: tar_at_far(&genuine, &impostor, &[1e-2, 1e-3])?,
            all_pairs: AllPairsSummary {
                n_genuine: ap.n_genuine,
                n_impostor: ap.n_impostor,
                tar_at_far: table,
            },
        },
        ap,
    ))
}

/// Fewest pairs of the pairs file a limited run must hold (the 10-fold protocol splits them).
const MIN_PAIRS: usize = 20;

/// The smallest `--limit` whose first images hold [`MIN_PAIRS`] pairs of `pairs`, genuine and
/// impostor ones among them, and two faces of one person (for the all-pairs protocol).
fn smallest_limit(folder: &FaceFolder, pairs: &[efq_shared::eval::Pair]) -> Option<usize> {
    let index = folder.index();
    let mut need: Vec<(usize, bool)> = pairs
        .iter()
        .filter_map(|p| {
            Some((
                index.get(p.a.as_path())?.max(index.get(p.b.as_path())?) + 1,
                p.same,
            ))
        })
        .collect();
    need.sort();
    let (mut genuine, mut impostor) = (false, false);
    let mut n = None;
    for (k, (limit, same)) in need.iter().enumerate() {
        genuine |= same;
        impostor |= !same;
        if genuine && impostor && k + 1 >= MIN_PAIRS {
            n = Some(*limit);
            break;
        }
    }
    // Two faces of one person: images are grouped by person, so the first repeat label.
    let repeat = folder.labels.windows(2).position(|w| w[0] == w[1])? + 2;
    Some(n?.max(repeat))
}

pub fn run(args: &EvalArgs) -> Result<EvalReport> {
    let start = Instant::now();
    let (graph, pre) = load_model(args.model)?;
    let net = args.backend.load(&graph, args.batch)?;
    let mut folder = FaceFolder::scan(args.crops)?;
    let pairs = read_lfw_pairs(args.pairs)?;
    if let Some(n) = args.limit {
        let needed = smallest_limit(&folder, &pairs);
        if n < needed.unwrap_or(usize::MAX) {
            bail!(
                "--limit {n} is too small: the protocol needs genuine and impostor pairs of {} \
                 among the first images (at least {MIN_PAIRS} pairs) and two faces of one person; {}",
                args.pairs.display(),
                match needed {
                    Some(k) => format!("the smallest limit that has them is {k}"),
                    None => format!("{} never has them", args.crops.display()),
                }
            );
        }
        folder.images.truncate(n);
        folder.labels.truncate(n);
    }
    let index = folder.index();
    let mut pair_idx = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let find = |q: &Path| {
            index.get(q).copied().with_context(|| {
                format!(
                    "pairs file names {}, which is not in {}",
                    q.display(),
                    args.crops.display()
                )
            })
        };
        match (find(&p.a), find(&p.b)) {
            (Ok(i), Ok(j)) => pair_idx.push((i, j, p.same)),
            (Err(e), _) | (_, Err(e)) if args.limit.is_none() => return Err(e),
            _ => {}
        }
    }
    let emb = embed_images(
        &net,
        &folder.root,
        &folder.images,
        &pre,
        args.batch,
        "embed",
    )?;
    let fidelity = match args.teacher {
        Some(t) => {
            let (tg, tpre) = load_model(t)?;
            let tnet = args.backend.load(&tg, args.batch)?;
            let temb: Embeddings = embed_images(
                &tnet,
                &folder.root,
                &folder.images,
                &tpre,
                args.batch,
                "teacher",
            )?;
            Some(FidelityReport {
                flip: teacher_fidelity(&emb.flip, &temb.flip, emb.dim)?,
                no_flip: teacher_fidelity(&emb.plain, &temb.plain, emb.dim)?,
            })
        }
        None => None,
    };
    let (flip, ap_flip) = variant(&emb.flip, emb.dim, &pair_idx, &folder.labels)?;
    let (no_flip, _) = variant(&emb.plain, emb.dim, &pair_idx, &folder.labels)?;
    let grid = far_grid();
    let mut curve: Vec<(f64, f64)> = grid
        .iter()
        .zip(&ap_flip.tar)
        .map(|(f, t)| (*f, t.tar))
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    curve.dedup_by(|a, b| a.0 == b.0);
    Ok(EvalReport {
        model: graph.name.clone(),
        model_path: args.model.to_path_buf(),
        device: args.backend.describe(),
        crops: args.crops.to_path_buf(),
        pairs_file: args.pairs.to_path_buf(),
        images: folder.images.len(),
        identities: folder
            .labels
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        batch: args.batch,
        images_per_second: emb.images_per_second,
        seconds_total: start.elapsed().as_secs_f64(),
        flip,
        no_flip,
        teacher: args.teacher.map(Path::to_path_buf),
        fidelity,
        all_pairs_roc: curve,
    })
}

fn pct(v: f64) -> String {
    format!("{:.2}", v * 100.0)
}

/// The human table.
pub fn print_table(r: &EvalReport) {
    println!("model {}  ({})", r.model, r.model_path.display());
    println!(
        "{} images of {} people from {}; {} on {}, batch {}: {:.1} images/s (flip test: 2 forwards per image)",
        r.images,
        r.identities,
        r.crops.display(),
        r.pairs_file.display(),
        r.device,
        r.batch,
        r.images_per_second
    );
    println!();
    println!(
        "| embedding | LFW 10-fold acc. % | AUC    | all-pairs TAR % @ FAR 1e-2 | 1e-3  | 1e-4  | 1e-5  | 1e-6  |"
    );
    println!(
        "|-----------|--------------------|--------|----------------------------|-------|-------|-------|-------|"
    );
    for (name, v) in [("flip", &r.flip), ("no flip", &r.no_flip)] {
        let t = &v.all_pairs.tar_at_far;
        println!(
            "| {name:<9} | {} ± {}       | {:.4} | {:<26} | {} | {} | {} | {} |",
            pct(v.ten_fold.mean_accuracy),
            pct(v.ten_fold.std_accuracy),
            v.auc,
            pct(t[0].tar),
            pct(t[1].tar),
            pct(t[2].tar),
            pct(t[3].tar),
            pct(t[4].tar)
        );
    }
    println!(
        "\nall pairs: {} genuine, {} impostor",
        r.flip.all_pairs.n_genuine, r.flip.all_pairs.n_impostor
    );
    if let Some(f) = &r.fidelity {
        println!(
            "teacher fidelity (cosine to {}): flip mean {:.5}, 1st percentile {:.5}; no flip mean {:.5}, 1st percentile {:.5}",
            r.teacher
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            f.flip.mean_cosine,
            f.flip.p1_cosine,
            f.no_flip.mean_cosine,
            f.no_flip.p1_cosine
        );
    }
    println!("total {:.1} s", r.seconds_total);
}

/// Writes `report.json` and `roc.png` into `out`.
pub fn write_outputs(r: &EvalReport, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = serde_json::to_vec_pretty(r)?;
    efq_shared::format::write_atomic(&out.join("report.json"), &json)?;
    let curve = Curve {
        label: format!("{} (flip), all pairs", r.model),
        points: r.all_pairs_roc.clone(),
    };
    roc_png(
        &out.join("roc.png"),
        &format!("ROC, all pairs of {}", r.crops.display()),
        &[curve],
        1e-6,
    )?;
    Ok(())
}
