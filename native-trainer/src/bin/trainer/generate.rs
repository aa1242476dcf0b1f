//! `trainer generate`: a seeded random iresnet written as InsightFace-layout ONNX.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct GenerateCmd {
    /// iresnet18, iresnet34, iresnet50, iresnet100 or iresnet200.
    #[arg(long, default_value = "iresnet50")]
    arch: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
}

impl GenerateCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
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

        Ok(())
    }
}
