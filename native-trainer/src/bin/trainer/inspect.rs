//! `trainer inspect`: what a model file is — graph, input conventions, bit-widths, threshold.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use efq_trainer::{inspect, paths};

#[derive(Args)]
pub struct InspectCmd {
    /// Model: an ONNX teacher or a packed .efq file [default: the teacher scripts/setup.sh
    /// installed].
    #[arg(env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    /// Print JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

impl InspectCmd {
    pub fn run(self) -> Result<()> {
        let model = paths::teacher(self.model, "MODEL")?;
        let s = inspect::summarize(&model)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            inspect::print(&s);
        }
        Ok(())
    }
}
