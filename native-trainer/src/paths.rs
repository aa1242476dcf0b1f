//! Where the trainer finds what `scripts/setup.sh` installed and the data beside the checkout,
//! when no flag names them, so that the binary works outside the set-up's shell.
//!
//! Order, for every subcommand: the flag, then its environment variable (clap reads both), then
//! the default found here:
//! - the teacher (`EFQ_TEACHER`) and the detector (`EFQ_DETECTOR`): `$EFQ_CACHE/models/`, with
//!   `EFQ_CACHE` defaulting to `$HOME/.cache/efquantface` exactly as `scripts/setup.sh` does;
//! - LFW (`EFQ_LFW`): `shared/data/lfw` beside the checkout this binary was built from, found
//!   from the crate's own location at compile time, never from the working directory.

use std::path::{Component, Path, PathBuf};

use anyhow::{Result, bail};

/// The teacher's file name in the set-up cache.
pub const TEACHER_FILE: &str = "w600k_mbf.onnx";
/// The face detector's file name in the set-up cache.
pub const DETECTOR_FILE: &str = "scrfd_500m_bnkps.onnx";

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The set-up cache: `$EFQ_CACHE`, else `$HOME/.cache/efquantface`; `None` without either.
pub fn cache_dir() -> Option<PathBuf> {
    env_path("EFQ_CACHE").or_else(|| env_path("HOME").map(|h| h.join(".cache/efquantface")))
}

/// Where the set-up installs the teacher (whether or not it is there).
pub fn default_teacher() -> Option<PathBuf> {
    cache_dir().map(|c| c.join("models").join(TEACHER_FILE))
}

/// Where the set-up installs the detector (whether or not it is there).
pub fn default_detector() -> Option<PathBuf> {
    cache_dir().map(|c| c.join("models").join(DETECTOR_FILE))
}

/// `shared/data/lfw` beside the checkout this binary was built from (`<checkout>/../shared`).
pub fn default_lfw() -> PathBuf {
    normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lfw"))
}

/// The teacher: `given` (the flag or `EFQ_TEACHER`, as clap read them), else the installed one.
/// `flag` names the subcommand's option in the error (`--model`, `--teacher`).
pub fn teacher(given: Option<PathBuf>, flag: &str) -> Result<PathBuf> {
    installed(given, default_teacher(), flag, "EFQ_TEACHER", "teacher")
}

/// The SCRFD detector: `given` (`--detector` or `EFQ_DETECTOR`), else the installed one.
pub fn detector(given: Option<PathBuf>) -> Result<PathBuf> {
    installed(
        given,
        default_detector(),
        "--detector",
        "EFQ_DETECTOR",
        "face detector",
    )
}

fn installed(
    given: Option<PathBuf>,
    default: Option<PathBuf>,
    flag: &str,
    var: &str,
    what: &str,
) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let Some(p) = default else {
        bail!(
            "no {what} given, and neither EFQ_CACHE nor HOME is set to find the one \
             scripts/setup.sh installs: pass {flag} FILE or set {var}"
        );
    };
    if !p.is_file() {
        bail!(
            "no {what} given, and none installed at {}: run `bash scripts/setup.sh` to install \
             it (into $EFQ_CACHE/models, by default ~/.cache/efquantface/models), or pass \
             {flag} FILE or set {var}",
            p.display()
        );
    }
    Ok(p)
}

/// The LFW folder: `given` (`--lfw` or `EFQ_LFW`), else the one beside the checkout.
pub fn lfw(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(p) if p.is_dir() => Ok(p),
        Some(p) => bail!(
            "LFW folder {} (from --lfw or EFQ_LFW) does not exist",
            p.display()
        ),
        None => {
            let p = default_lfw();
            if !p.is_dir() {
                bail!(
                    "no LFW folder given, and none beside the checkout at {}: pass --lfw DIR or \
                     set EFQ_LFW to the folder holding pairs.txt and the crop folders",
                    p.display()
                );
            }
            Ok(p)
        }
    }
}

/// `a/b/../c` → `a/c`, without touching the file system (for paths shown to people).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The file name without its extension (`out/student.efq` → `student`), for default output names.
pub fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_parent_steps_only_after_a_name() {
        assert_eq!(normalize(Path::new("/a/b/../../c/./d")), Path::new("/c/d"));
        assert_eq!(normalize(Path::new("../x/../y")), Path::new("../y"));
    }

    #[test]
    fn the_default_lfw_is_beside_the_checkout_not_the_working_directory() {
        let p = default_lfw();
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.ends_with("shared/data/lfw"), "{}", p.display());
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert_eq!(p, normalize(&checkout.join("../shared/data/lfw")));
    }

    #[test]
    fn a_given_path_wins_over_the_installed_one() {
        let given = PathBuf::from("/somewhere/else.onnx");
        assert_eq!(teacher(Some(given.clone()), "--model").unwrap(), given);
    }
}
