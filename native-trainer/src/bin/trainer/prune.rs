//! `trainer prune`: structured channel pruning of a float teacher (`efq_shared::prune`),
//! written as ONNX that onnxruntime, `quantize`, `finetune`, `eval` and the engine take.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use efq_shared::prune::{self, Scope};
use serde::Serialize;

use efq_trainer::{eval, paths};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScopeArg {
    /// Every prunable channel space loses --sparsity of its channels.
    PerLayer,
    /// All channels ranked together (scores divided by their space's mean); each space keeps
    /// at least a tenth.
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScoreArg {
    /// L2 norm of all parameters of a channel's group (DepGraph's default; no data needed).
    L2,
    /// First-order Taylor: Σ |w · ∂L/∂w| over the group, L a verification loss (impostor minus
    /// genuine cosine) on --taylor-batches identity-grouped batches of LFW's clean set.
    Taylor,
}

#[derive(Args)]
pub struct PruneCmd {
    /// Float teacher: ONNX or an arcface_torch .pth [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(long, env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    /// Fraction of the channels to remove (the paper's sp02 is 0.2).
    #[arg(long, default_value_t = 0.2)]
    sparsity: f32,
    /// How --sparsity applies: per coupled channel group (the default: norms of different
    /// layers are not on one scale) or ranked over the whole network.
    #[arg(long, value_enum, default_value_t = ScopeArg::PerLayer)]
    scope: ScopeArg,
    /// How channels are scored. Taylor by default: on w600k_mbf at sp02, L2-pruned channels
    /// left a near-constant embedding (LFW 50.00 %) where Taylor kept 86.68 % before any
    /// recovery (docs/RESULTS.md, "Compression beyond quantization").
    #[arg(long, value_enum, default_value_t = ScoreArg::Taylor)]
    score: ScoreArg,
    /// --score taylor: batches of 32 crops whose gradients are summed.
    #[arg(long, default_value_t = 8)]
    taylor_batches: usize,
    #[command(flatten)]
    data: crate::common::DataArgs,
    /// Output ONNX file [default: out/<teacher>-sp<sparsity>.onnx].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    teacher: PathBuf,
    out: PathBuf,
    sparsity: f32,
    scope: String,
    score: String,
    parameters_before: u64,
    parameters_after: u64,
    gmac_before: f64,
    gmac_after: f64,
    file_mb: f64,
    spaces_pruned: usize,
    /// Channel spaces kept whole, and why.
    kept_whole: Vec<String>,
}

impl PruneCmd {
    pub fn run(self) -> Result<()> {
        let teacher = paths::teacher(self.model, "--model")?;
        if !eval::is_float_teacher(&teacher) {
            bail!(
                "{}: prune a float teacher (ONNX or .pth), then quantize the result",
                teacher.display()
            );
        }
        let imported = eval::import_teacher(&teacher)?;
        if imported.baked.mean.iter().any(|&m| m != 0.0)
            || imported.baked.std.iter().any(|&s| s != 1.0)
            || imported.baked.nhwc
        {
            eprintln!(
                "note: the teacher prepares its input in its own graph; the pruned ONNX takes \
                 the prepared input: pass the same --color/--mean/--std the teacher needs"
            );
        }
        let g = &imported.graph;
        let scope = match self.scope {
            ScopeArg::PerLayer => Scope::PerSpace,
            ScopeArg::Global => Scope::Global,
        };
        let sp = prune::spaces(g)?;
        let scores = match self.score {
            ScoreArg::L2 => prune::l2_scores(g, &sp),
            ScoreArg::Taylor => {
                let pre = efq_trainer::conventions::for_onnx(&imported, &teacher)?;
                let lfw = self.data.lfw()?;
                let products =
                    efq_trainer::taylor::products(g, &pre, &lfw, self.taylor_batches, 32, 0)?;
                prune::taylor_scores(&products, &sp)
            }
        };
        let kept = prune::select(&sp, &scores, self.sparsity, scope)?;
        let pruned = prune::apply(g, &sp, &kept)?;
        let out = self.out.unwrap_or_else(|| {
            // The paper's naming: sparsity 0.2 → sp02, 0.25 → sp025.
            let sp = format!("{}", self.sparsity).replacen("0.", "0", 1);
            PathBuf::from("out").join(format!("{}-sp{sp}.onnx", paths::file_stem(&teacher)))
        });
        let bytes = efq_shared::onnx::export_bytes(&pruned)?;
        efq_shared::format::write_atomic(&out, &bytes)?;
        // Read back what was written, as every command that writes a model does.
        efq_shared::onnx::import_file(&out)?;
        let report = Report {
            teacher: teacher.clone(),
            out: out.clone(),
            sparsity: self.sparsity,
            scope: format!("{:?}", self.scope),
            score: format!("{:?}", self.score),
            parameters_before: g.parameters(),
            parameters_after: pruned.parameters(),
            gmac_before: g.macs()? as f64 / 1e9,
            gmac_after: pruned.macs()? as f64 / 1e9,
            file_mb: bytes.len() as f64 / 1e6,
            spaces_pruned: sp
                .spaces
                .iter()
                .zip(&kept)
                .filter(|(s, k)| k.len() < s.channels)
                .count(),
            kept_whole: sp
                .spaces
                .iter()
                .filter_map(|s| {
                    s.pinned
                        .as_ref()
                        .map(|w| format!("{} channels: {w}", s.channels))
                })
                .collect(),
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "wrote {} ({:.2} MB): {} → {} parameters ({:.1} % fewer), {:.3} → {:.3} GMAC; \
                 {} channel groups pruned, {} kept whole",
                out.display(),
                report.file_mb,
                report.parameters_before,
                report.parameters_after,
                100.0 * (1.0 - report.parameters_after as f64 / report.parameters_before as f64),
                report.gmac_before,
                report.gmac_after,
                report.spaces_pruned,
                report.kept_whole.len()
            );
            for w in &report.kept_whole {
                println!("  kept whole: {w}");
            }
        }
        Ok(())
    }
}
