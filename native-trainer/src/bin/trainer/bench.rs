//! `trainer bench`: images/s, latency and peak memory of one backend, or a kernel profile.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use efq_trainer::engine_cli::{self, BackendArgs};
use efq_trainer::paths;

#[derive(Args)]
pub struct BenchCmd {
    /// Model: an ONNX or arcface_torch .pth teacher, or a packed .efq student [default: the
    /// teacher scripts/setup.sh installed].
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

impl BenchCmd {
    pub fn run(self) -> Result<()> {
        let mut c = self;
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

        Ok(())
    }
}
