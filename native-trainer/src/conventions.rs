//! Input conventions of an ONNX teacher — channel order, mean and std — which an ONNX file does
//! not record. Set once per run by the `--color`, `--mean` and `--std` flags (every command
//! accepts them) and applied wherever an ONNX model is loaded; every file exported from it
//! records them, so a packed model never needs them again.
//!
//! A model that normalises its input in its own graph (Sub/Mul/Div at the input, removed on
//! import) takes raw pixel values unless the flags say otherwise; the pipeline then applies
//! both steps as one: `(pixel − m_flag − m_baked·s_flag) / (s_flag · s_baked)`.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use efq_shared::format::Preprocessing;
use efq_shared::onnx::Imported;

/// Channel order of the images a model was trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Rgb,
    Bgr,
}

/// The flags, as given (absent: the default).
#[derive(Args, Clone, Debug, Default)]
pub struct ConventionArgs {
    /// ONNX teacher: the channel order it was trained on [default: rgb]. `trainer inspect
    /// --probe-conventions` measures which one a model expects.
    #[arg(
        long,
        global = true,
        value_enum,
        help_heading = "Input conventions of an ONNX model"
    )]
    pub color: Option<Color>,
    /// ONNX teacher: the mean subtracted from pixel values (0–255), one number or three
    /// comma-separated, per input channel in the model's channel order [default: 127.5; 0
    /// when the model normalises its input itself].
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        allow_negative_numbers = true,
        help_heading = "Input conventions of an ONNX model"
    )]
    pub mean: Option<Vec<f32>>,
    /// ONNX teacher: the std pixel values are divided by, one number or three [default: 127.5;
    /// 1 when the model normalises its input itself].
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        help_heading = "Input conventions of an ONNX model"
    )]
    pub std: Option<Vec<f32>>,
}

static GIVEN: OnceLock<ConventionArgs> = OnceLock::new();

/// Records the flags of this run (first call wins).
pub fn set(args: ConventionArgs) {
    let _ = GIVEN.set(args);
}

fn given() -> ConventionArgs {
    GIVEN.get().cloned().unwrap_or_default()
}

fn three(v: &Option<Vec<f32>>, flag: &str) -> Result<Option<[f32; 3]>> {
    Ok(match v.as_deref() {
        None => None,
        Some([x]) => Some([*x; 3]),
        Some([a, b, c]) => Some([*a, *b, *c]),
        Some(other) => bail!("--{flag} takes one number or three, not {}", other.len()),
    })
}

/// The preprocessing of an imported ONNX model under this run's flags.
pub fn for_onnx(imported: &Imported, path: &Path) -> Result<Preprocessing> {
    preprocessing(&given(), imported, path)
}

/// The preprocessing of an imported ONNX model: `flags` (or their defaults) combined with any
/// normalisation the graph carried.
pub fn preprocessing(
    flags: &ConventionArgs,
    imported: &Imported,
    path: &Path,
) -> Result<Preprocessing> {
    let bgr = flags.color == Some(Color::Bgr);
    let (mean, std) = (three(&flags.mean, "mean")?, three(&flags.std, "std")?);
    imported
        .preprocessing(bgr, mean, std)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A packed file records its conventions: flags that contradict them are a mistake to report,
/// not to apply.
pub fn check_packed(pre: &Preprocessing, path: &Path) -> Result<()> {
    let flags = given();
    let color = flags.color.map(|c| match c {
        Color::Rgb => "RGB",
        Color::Bgr => "BGR",
    });
    let differs = color.is_some_and(|c| !pre.color.eq_ignore_ascii_case(c))
        || three(&flags.mean, "mean")?.is_some_and(|m| m != pre.mean)
        || three(&flags.std, "std")?.is_some_and(|s| s != pre.std);
    if differs {
        bail!(
            "{} records its own input conventions ({}, mean {:?}, std {:?}); --color, --mean \
             and --std describe ONNX teachers (see `trainer inspect`)",
            path.display(),
            pre.color,
            pre.mean,
            pre.std
        );
    }
    Ok(())
}
