//! Face-verification evaluation: benchmark pair-list readers, the standard
//! verification metrics, and the low-FAR all-pairs protocol.
//!
//! Everything here is pure CPU code over slices so that the trainer, the
//! benchmarks and the browser build all score a model the same way.
//!
//! * [`pairs`] reads LFW, CALFW/CPLFW, SLLFW and IJB-C 1:1 protocol files and
//!   pools IJB-C template features.
//! * [`metrics`] holds the InsightFace 10-fold accuracy, ROC/AUC and TAR at
//!   FAR.
//! * [`allpairs`] runs TAR at FAR over every pair of a face folder without
//!   storing the impostor scores, and measures student/teacher fidelity.

use std::path::PathBuf;

pub mod allpairs;
pub mod metrics;
pub mod pairs;

pub use allpairs::{AllPairs, Fidelity, all_pairs, teacher_fidelity};
pub use metrics::{
    Roc, TarAtFar, TenFold, auc, cosine_similarity, far_index, l2_normalize, roc,
    squared_l2_distance, tar_at_far, ten_fold, ten_fold_threshold, threshold_for_far,
};
pub use pairs::{
    IjbcFace, IjbcProtocol, IjbcTemplatePair, Pair, ijbc_scores, ijbc_tar_at_far,
    ijbc_template_features, parse_lfw_pairs, parse_sllfw_pairs, parse_xlfw_pairs, read_lfw_pairs,
    read_sllfw_pairs, read_xlfw_pairs,
};

/// The FARs at which IJB-C 1:1 results are conventionally reported.
pub const IJBC_FARS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// Everything that can go wrong while reading a protocol file or scoring.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A protocol file could not be read from disk.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed to open or read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a protocol file does not match its format.
    #[error("{format} line {line}: {reason}")]
    Parse {
        /// Which format was being read, e.g. `"LFW pairs.txt"`.
        format: &'static str,
        /// 1-based line number in the text.
        line: usize,
        /// What was wrong with the line.
        reason: String,
    },
    /// A protocol file parsed line by line but is inconsistent as a whole
    /// (wrong pair count, odd number of lines, unknown template, ...).
    #[error("{format}: {reason}")]
    Structure {
        /// Which format was being read.
        format: &'static str,
        /// What is inconsistent.
        reason: String,
    },
    /// Arguments to a metric are unusable (length mismatch, empty class,
    /// non-finite score, FAR outside [0, 1], ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
