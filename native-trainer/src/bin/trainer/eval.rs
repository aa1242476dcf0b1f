//! `trainer eval`: a model on LFW — 10-fold accuracy, all-pairs TAR at low FAR, ROC.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use efq_trainer::engine_cli::{self, BackendArgs};
use efq_trainer::paths::file_stem;
use efq_trainer::{eval, paths};

use crate::common::DataArgs;

#[derive(Args)]
pub struct EvalCmd {
    /// Model to evaluate: an ONNX or .pth teacher, or a packed .efq student [default: the
    /// teacher scripts/setup.sh installed].
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

impl EvalCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
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

        Ok(())
    }
}
