//! The verification threshold a model stores: the cosine at which it falsely accepts a given
//! share of impostor pairs (FAR 1e-3), measured with the flip test over all pairs of a face
//! folder. `quantize` stores one so that `verify` and the web page can say "same person" or
//! "different people" with any model it writes.
//!
//! By default the folder is LFW's clean set — the 1,549 `aligned112` crops of the 1,468 people
//! who appear nowhere in `pairs.txt` — so the threshold is not fitted on the test pairs.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use efq_shared::eval::all_pairs;
use efq_shared::format::{PackedModel, Threshold};

use crate::embed::{Backend, FaceFolder, embed_images};
use crate::finetune::{Protocol, training_set};

/// The false-accept rate of the stored threshold.
pub const FAR: f64 = 1e-3;

/// Labelled crops to measure a threshold on.
pub struct ThresholdSet {
    pub root: PathBuf,
    /// Paths relative to `root`.
    pub images: Vec<PathBuf>,
    pub labels: Vec<u32>,
    /// Where the threshold came from, stored with it.
    pub description: String,
}

impl ThresholdSet {
    /// LFW's clean set: the crops under `lfw/aligned112` of people absent from `pairs.txt`.
    pub fn lfw_clean(lfw: &Path) -> Result<ThresholdSet> {
        let folder = FaceFolder::scan(&lfw.join("aligned112"))?;
        let mut items = training_set(&folder, &lfw.join("pairs.txt"), Protocol::Clean, 1.0, 0)?;
        items.sort();
        let people = {
            let mut l: Vec<u32> = items.iter().map(|i| i.1).collect();
            l.dedup();
            l.len()
        };
        Ok(ThresholdSet {
            description: format!(
                "LFW aligned112, the {} crops of {people} people outside pairs.txt, all pairs, flip",
                items.len()
            ),
            root: folder.root,
            images: items.iter().map(|i| i.0.clone()).collect(),
            labels: items.iter().map(|i| i.1).collect(),
        })
    }

    /// Every crop of a face folder (`<person>/<image>`).
    pub fn folder(dir: &Path) -> Result<ThresholdSet> {
        let f = FaceFolder::scan(dir)?;
        Ok(ThresholdSet {
            description: format!(
                "{}, {} crops of {} people, all pairs, flip",
                dir.display(),
                f.images.len(),
                f.identities.len()
            ),
            root: f.root,
            images: f.images,
            labels: f.labels,
        })
    }
}

/// The cosine threshold at [`FAR`] of `model` on `set`. Impostor pairs must be numerous enough
/// for that FAR to mean something (at least 10,000) and genuine pairs must exist.
pub fn measure(model: &PackedModel, set: &ThresholdSet) -> Result<Threshold> {
    let n = set.images.len();
    let impostors_at_most = n.saturating_mul(n.saturating_sub(1)) / 2;
    if impostors_at_most < 10_000 {
        bail!(
            "{}: {n} crops give too few pairs to place a threshold at FAR {FAR:e} (at least 142 \
             crops are needed)",
            set.root.display()
        );
    }
    // A quantized model runs exactly on the CPU backend's integer path; a float one in libtorch.
    let backend = if model.graph.is_quantized() {
        Backend::Cpu
    } else {
        Backend::Tch(tch::Device::Cpu)
    };
    let net = backend.load(&model.graph, backend.default_batch())?;
    let emb = embed_images(
        &net,
        &set.root,
        &set.images,
        &model.manifest.preprocessing,
        backend.default_batch(),
        "threshold",
    )?;
    let ap = all_pairs(&emb.flip, emb.dim, &set.labels, &[FAR])?;
    if ap.n_genuine == 0 {
        bail!(
            "{}: no two crops of one person, so no genuine pair to check a threshold against",
            set.root.display()
        );
    }
    Ok(Threshold {
        far: FAR,
        cosine: ap.tar[0].threshold,
        source: set.description.clone(),
    })
}
