//! `trainer convert`: an arcface_torch checkpoint (`backbone.pth`) → the ONNX graph its export
//! would be, for onnxruntime, the browser page or any ONNX tool; and a float `.efq` (a student
//! fine-tuned in float, such as a pruned network after recovery) → ONNX, so that it can be
//! quantized like any teacher.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use efq_shared::format::{PackedModel, Preprocessing};
use efq_shared::model_file::Kind;

#[derive(Args)]
pub struct ConvertCmd {
    /// The checkpoint: a state dict saved by arcface_torch (iresnet18–200 or MobileFaceNet),
    /// or a training checkpoint holding one under `state_dict_backbone`; or a float packed
    /// `.efq` (quantized files have no float ONNX form).
    checkpoint: PathBuf,
    /// Output ONNX file.
    #[arg(long)]
    out: PathBuf,
}

impl ConvertCmd {
    pub fn run(self) -> Result<()> {
        let bytes = std::fs::read(&self.checkpoint)
            .map_err(|e| efq_shared::Error::io(&self.checkpoint, e))?;
        let name = efq_trainer::paths::file_stem(&self.checkpoint);
        let onnx = match efq_shared::model_file::sniff(&bytes) {
            Kind::Pth => efq_shared::pth::onnx_bytes(&bytes, &name)
                .map_err(|e| anyhow::anyhow!("{}: {e}", self.checkpoint.display()))?,
            Kind::Packed => float_packed_to_onnx(&bytes, &self.checkpoint)?,
            Kind::Onnx => bail!(
                "{}: expected a PyTorch checkpoint or a float .efq; ONNX files are read by every \
                 command as they are",
                self.checkpoint.display()
            ),
        };
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

/// The ONNX of a float packed model. ONNX records no input conventions, so only a model with
/// the default ones (RGB, `(p − 127.5) / 127.5`, which every command assumes of an ONNX file)
/// is converted; anything else would be read back silently wrong.
fn float_packed_to_onnx(bytes: &[u8], path: &std::path::Path) -> Result<Vec<u8>> {
    let m =
        PackedModel::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if m.graph.is_quantized() {
        bail!(
            "{}: a quantized model has no float ONNX form (quantize the float teacher instead)",
            path.display()
        );
    }
    let default = Preprocessing {
        size: m.manifest.preprocessing.size,
        ..Preprocessing::default()
    };
    if m.manifest.preprocessing != default {
        bail!(
            "{}: its input conventions ({:?}) are not the default an ONNX file is read with",
            path.display(),
            m.manifest.preprocessing
        );
    }
    Ok(efq_shared::onnx::export_bytes(&m.graph)?)
}
