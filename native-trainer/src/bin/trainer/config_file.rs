//! `--config FILE.toml`: a file of options, expanded into the command line before parsing.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// `--config FILE.toml` → the file's keys as long options, inserted right after the subcommand
/// so that options given on the command line (later, and `args_override_self`) win. Keys are
/// the long option names (`lr`, `hard-negatives` or `hard_negatives`); `true` turns a flag on.
pub fn expand(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    let pos = args.iter().position(|a| a == "--config");
    let path = match pos {
        Some(i) => args
            .get(i + 1)
            .map(PathBuf::from)
            .context("--config needs a file")?,
        None => match args
            .iter()
            .find_map(|a| a.to_str().and_then(|s| s.strip_prefix("--config=")))
        {
            Some(p) => PathBuf::from(p),
            None => return Ok(args),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config {} is not valid TOML", path.display()))?;
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => extra.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => extra.extend([flag.into(), s.into()]),
            toml::Value::Integer(i) => extra.extend([flag.into(), i.to_string().into()]),
            toml::Value::Float(f) => extra.extend([flag.into(), f.to_string().into()]),
            other => bail!(
                "config {}: '{key}' must be a string, number or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        }
    }
    // After the program name and the subcommand.
    let mut out = args[..2.min(args.len())].to_vec();
    out.extend(extra);
    out.extend(args[2.min(args.len())..].iter().cloned());
    Ok(out)
}
