//! `trainer convert`: an arcface_torch checkpoint (`backbone.pth`) → the ONNX graph its export
//! would be, for onnxruntime, the browser page or any ONNX tool.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub struct ConvertCmd {
    /// The checkpoint: a state dict saved by arcface_torch (iresnet18–200 or MobileFaceNet),
    /// or a training checkpoint holding one under `state_dict_backbone`.
    checkpoint: PathBuf,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
}

impl ConvertCmd {
    pub fn run(self) -> Result<()> {
        if !efq_shared::pth::is_checkpoint(&self.checkpoint) {
            bail!(
                "{}: expected a PyTorch checkpoint (.pth or .pt); ONNX and .efq files are read \
                 by every command as they are",
                self.checkpoint.display()
            );
        }
        let bytes = std::fs::read(&self.checkpoint)
            .map_err(|e| efq_shared::Error::io(&self.checkpoint, e))?;
        let name = efq_trainer::paths::file_stem(&self.checkpoint);
        let onnx = efq_shared::pth::onnx_bytes(&bytes, &name)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.checkpoint.display()))?;
        efq_shared::format::write_atomic(&self.out, &onnx)?;
        // Read back what was written, as every command that writes a model does.
        let imported = efq_shared::onnx::import_file_with_conventions(&self.out)?;
        let g = &imported.graph;
        let [c, h, w] = g.input_shape;
        println!(
            "wrote {} ({} nodes, input {c}×{h}×{w}, {:.2} GMAC per image, {:.1} MB)",
            self.out.display(),
            g.nodes.len(),
            g.macs()? as f64 / 1e9,
            onnx.len() as f64 / 1e6
        );
        Ok(())
    }
}
