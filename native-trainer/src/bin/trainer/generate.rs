//! `trainer generate`: a seeded random network, written as InsightFace-layout ONNX or, for a
//! `.pth` output, as the state dict arcface_torch would save for it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub struct GenerateCmd {
    /// iresnet18, iresnet34, iresnet50, iresnet100, iresnet200, or (for a .pth) mobilefacenet
    /// (arcface_torch's `mbf`).
    #[arg(long, default_value = "iresnet50")]
    arch: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file: `.onnx`, or `.pth` for an arcface_torch state dict.
    #[arg(long)]
    out: PathBuf,
    /// Instead of --arch: the topology of this float model (ONNX or .pth) at --width of its
    /// channels, with fresh weights: a smaller student to distil the model into.
    #[arg(long, conflicts_with = "arch")]
    like: Option<PathBuf>,
    /// With --like: the fraction of every prunable channel group kept (0.5: half width; the
    /// image, the embedding and grouped convolutions keep every channel).
    #[arg(long, default_value_t = 0.5, requires = "like")]
    width: f32,
}

impl GenerateCmd {
    pub fn run(self) -> Result<()> {
        let c = self;
        if let Some(like) = &c.like {
            return c.write_like(like);
        }
        if efq_shared::pth::is_checkpoint(&c.out) {
            return c.write_pth();
        }
        let depth = depth(&c.arch)?;
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

    fn write_like(&self, like: &std::path::Path) -> Result<()> {
        use efq_shared::prune;
        if !(self.width > 0.0 && self.width <= 1.0) {
            bail!("--width {} must lie in (0, 1]", self.width);
        }
        let (g, _) = efq_trainer::eval::load_model(like)?;
        let sp = prune::spaces(&g)?;
        // Every channel scored alike: the first `width` of each group are kept.
        let flat: Vec<Vec<f32>> = sp.spaces.iter().map(|s| vec![0.0; s.channels]).collect();
        let kept = prune::select(&sp, &flat, 1.0 - self.width, prune::Scope::PerSpace)?;
        let mut small = prune::apply(&g, &sp, &kept)?;
        small.name = efq_trainer::paths::file_stem(&self.out);
        efq_shared::builders::reinitialize(&mut small, self.seed);
        let bytes = efq_shared::onnx::export_bytes(&small)?;
        efq_shared::format::write_atomic(&self.out, &bytes)?;
        efq_shared::onnx::import_file(&self.out)?;
        println!(
            "wrote {} ({} at {} width, fresh weights: {:.3} GMAC per image against {:.3}, {:.1} MB)",
            self.out.display(),
            like.display(),
            self.width,
            small.macs()? as f64 / 1e9,
            g.macs()? as f64 / 1e9,
            bytes.len() as f64 / 1e6
        );
        Ok(())
    }

    fn write_pth(&self) -> Result<()> {
        use efq_shared::pth::generate::{iresnet_state_dict, mobilefacenet_state_dict};
        let sd = if self.arch == "mobilefacenet" {
            mobilefacenet_state_dict([1, 4, 6, 2], 2, 7, self.seed)
        } else {
            let layers = efq_shared::builders::iresnet_layers(depth(&self.arch)?)?;
            iresnet_state_dict(layers, 7, self.seed)
        };
        let stem = efq_trainer::paths::file_stem(&self.out);
        let bytes = efq_shared::pth::write_state_dict(&sd, &stem)?;
        efq_shared::format::write_atomic(&self.out, &bytes)?;
        // Read back what was written, as every command that writes a model does.
        let imported = efq_shared::pth::import_file(&self.out)?;
        println!(
            "wrote {} (arcface_torch {} state dict, {} tensors, {:.2} GMAC per image, {:.1} MB)",
            self.out.display(),
            self.arch,
            sd.tensors.len() + sd.other.len(),
            imported.graph.macs()? as f64 / 1e9,
            bytes.len() as f64 / 1e6
        );
        Ok(())
    }
}

fn depth(arch: &str) -> Result<usize> {
    let Some(d) = arch.strip_prefix("iresnet").and_then(|d| d.parse().ok()) else {
        bail!("unknown --arch {arch} (iresnet18 … iresnet200, or mobilefacenet for a .pth)");
    };
    Ok(d)
}
