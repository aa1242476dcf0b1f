//! A fine-tuning checkpoint is one file, `checkpoint.safetensors`: every trainable tensor,
//! the optimiser's buffers, and a record of the step and the EKD thresholds (JSON in a `u8`
//! tensor), so that the whole state changes with one rename. It is written to a temporary
//! sibling, synced, renamed over the previous checkpoint, and the folder synced: a kill at
//! any moment leaves either the previous checkpoint or the new one, never a mix. (Earlier
//! versions wrote the step to `checkpoint.json` beside the tensors, in a second rename; a
//! kill between the two made `--resume` train two steps twice.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::fault;
use crate::loss::EkdState;

pub const FILE: &str = "checkpoint.safetensors";
/// The record's tensor name inside the file.
const RECORD: &str = "checkpoint.record";
/// Where earlier versions kept the record; read for their checkpoints, removed on the next save.
const LEGACY_RECORD: &str = "checkpoint.json";

/// What a checkpoint holds besides the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Optimiser steps taken.
    pub step: usize,
    pub ekd: EkdState,
    /// Seconds and images of training up to this checkpoint, over every process that
    /// contributed (0 in checkpoints written before these were kept).
    #[serde(default)]
    pub trained_seconds: f64,
    #[serde(default)]
    pub trained_images: usize,
    /// The loss of the step that wrote the checkpoint.
    #[serde(default)]
    pub loss: Option<f64>,
}

/// A checkpoint read back: its record and tensors by name.
pub struct Checkpoint {
    pub path: PathBuf,
    pub record: Record,
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// The tensor `name`, which must have `like`'s shape, or an error naming the file.
    pub fn tensor(&self, name: &str, like: &Tensor) -> Result<&Tensor> {
        let t = self.tensors.get(name).with_context(|| {
            format!(
                "checkpoint {} lacks '{name}': was it written with other options \
                 (--act-ranges, --loss, another student)?",
                self.path.display()
            )
        })?;
        if t.size() != like.size() {
            bail!(
                "checkpoint {}: '{name}' has shape {:?}, the run expects {:?} (another \
                 student?)",
                self.path.display(),
                t.size(),
                like.size()
            );
        }
        Ok(t)
    }
}

/// Writes `tensors` and `record` as `dir/checkpoint.safetensors`, atomically.
pub fn save(dir: &Path, tensors: &[(String, Tensor)], record: &Record) -> Result<()> {
    let json = serde_json::to_vec(record)?;
    let mut named: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    named.push((RECORD.to_string(), Tensor::from_slice(&json)));
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    fault::point("checkpoint:before-write")?;
    Tensor::write_safetensors(&named, &tmp)
        .with_context(|| format!("cannot write checkpoint {}", tmp.display()))?;
    if fault::point("checkpoint:during-write").is_err() {
        // What a kill in the middle of the write leaves behind: half a file.
        let len = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        f.set_len(len / 2)?;
        bail!("injected fault at checkpoint:during-write");
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fault::point("checkpoint:before-rename")?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    fault::point("checkpoint:after-rename")?;
    sync_dir(dir);
    // The record now lives in the file; an earlier version's separate record would be stale.
    let legacy = dir.join(LEGACY_RECORD);
    if legacy.exists() {
        std::fs::remove_file(&legacy)
            .with_context(|| format!("cannot remove {}", legacy.display()))?;
    }
    Ok(())
}

/// Reads `dir`'s checkpoint, `None` when there is none. A checkpoint that cannot be used is an
/// error naming the file and what is wrong with it.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(None);
    }
    let read = Tensor::read_safetensors(&path).map_err(|e| {
        anyhow::anyhow!(
            "checkpoint {} cannot be read ({e}); delete it to start the run again",
            path.display()
        )
    })?;
    let mut tensors: HashMap<String, Tensor> = read.into_iter().collect();
    let record = match tensors.remove(RECORD) {
        Some(t) if t.kind() == Kind::Uint8 => {
            let bytes = Vec::<u8>::try_from(&t)?;
            serde_json::from_slice(&bytes).with_context(|| {
                format!("checkpoint {}: its record is not valid", path.display())
            })?
        }
        Some(_) => bail!(
            "checkpoint {}: '{RECORD}' is not a byte tensor",
            path.display()
        ),
        None => {
            // A checkpoint of an earlier version: the record is the file beside it.
            let legacy = dir.join(LEGACY_RECORD);
            let bytes = std::fs::read(&legacy).with_context(|| {
                format!(
                    "checkpoint {} has no step record, and {} cannot be read",
                    path.display(),
                    legacy.display()
                )
            })?;
            eprintln!(
                "warning: {} is a two-file checkpoint of an earlier version; resuming from \
                 the step {} records",
                path.display(),
                legacy.display()
            );
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid record", legacy.display()))?
        }
    };
    Ok(Some(Checkpoint {
        path,
        record,
        tensors,
    }))
}

/// Removes the temporaries an interrupted write leaves in `dir` (`.NAME.tmp…`, from the
/// checkpoint and from [`efq_shared::format::write_atomic`]); returns what it removed.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(removed);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp") && e.path().is_file() {
            std::fs::remove_file(e.path())
                .with_context(|| format!("cannot remove {}", e.path().display()))?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Makes a rename in `dir` durable. Best effort: not every file system lets a folder be synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
