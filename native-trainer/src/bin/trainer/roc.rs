//! `trainer roc`: the all-pairs ROC curves of several `eval` reports in one PNG.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct RocCmd {
    /// Reports as LABEL=PATH (or PATH, labelled by the model name in the report).
    #[arg(required = true)]
    reports: Vec<String>,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Lowest FAR on the x axis.
    #[arg(long, default_value_t = 1e-6)]
    far_min: f64,
}

impl RocCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
        let mut curves = Vec::new();
        for r in &c.reports {
            let (label, path) = match r.split_once('=') {
                Some((l, p)) => (Some(l.to_string()), PathBuf::from(p)),
                None => (None, PathBuf::from(r)),
            };
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{} is not an eval report.json", path.display()))?;
            let points: Vec<(f64, f64)> =
                serde_json::from_value(report["all_pairs_roc"].clone())
                    .with_context(|| format!("{} has no all_pairs_roc", path.display()))?;
            let label =
                label.unwrap_or_else(|| report["model"].as_str().unwrap_or("?").to_string());
            curves.push(efq_trainer::plot::Curve { label, points });
        }
        efq_trainer::plot::roc_png(
            &c.out,
            "ROC, all pairs of the LFW test crops (flip)",
            &curves,
            c.far_min,
        )?;
        println!("wrote {}", c.out.display());

        Ok(())
    }
}
