//! What several subcommands share: where LFW is, and the help heading of the experiments.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use efq_trainer::paths;

/// The help heading of options whose alternatives to the default lost in docs/EXPERIMENTS.md:
/// listed apart under `--help`, left out of `-h`.
pub const EXPERIMENTS: &str =
    "Experiments (did not improve results; kept to reproduce docs/EXPERIMENTS.md)";

#[derive(Args)]
pub struct DataArgs {
    /// LFW folder holding pairs.txt and the crop folders [default: shared/data/lfw beside this
    /// checkout, not the working directory].
    #[arg(long, env = "EFQ_LFW")]
    pub lfw: Option<PathBuf>,
}

impl DataArgs {
    pub fn lfw(&self) -> Result<PathBuf> {
        paths::lfw(self.lfw.clone())
    }
}
