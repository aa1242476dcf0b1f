//! `trainer inspect`: what a model file is — graph, input conventions, bit-widths, threshold —
//! and, with `--probe-conventions`, which conventions an ONNX teacher was trained with.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use efq_trainer::{inspect, paths, probe};

use crate::common::DataArgs;

#[derive(Args)]
pub struct InspectCmd {
    /// Model: an ONNX or .pth teacher, or a packed .efq file [default: the teacher
    /// scripts/setup.sh installed].
    #[arg(env = "EFQ_TEACHER")]
    model: Option<PathBuf>,
    /// Measure which channel order and normalisation the (ONNX) model expects: LFW pairs
    /// verified under RGB and BGR and each common normalisation, ranked by accuracy, with the
    /// flags that select the best (about a minute on 2 CPU cores).
    #[arg(long)]
    probe_conventions: bool,
    /// Pairs of pairs.txt the probe verifies (half genuine, spread over its folds).
    #[arg(long, default_value_t = 300)]
    probe_pairs: usize,
    #[command(flatten)]
    data: DataArgs,
    /// Print JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

impl InspectCmd {
    pub fn run(self) -> Result<()> {
        let model = paths::teacher(self.model, "MODEL")?;
        let s = inspect::summarize(&model)?;
        let probe = if self.probe_conventions {
            Some(probe::run(&model, &self.data.lfw()?, self.probe_pairs)?)
        } else {
            None
        };
        if self.json {
            let mut v = serde_json::to_value(&s)?;
            if let Some(p) = &probe {
                v["probe"] = serde_json::to_value(p)?;
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            inspect::print(&s);
            if let Some(p) = &probe {
                println!();
                probe::print(p);
            }
        }
        Ok(())
    }
}
