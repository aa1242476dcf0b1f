//! Results are dated by date and commit, never by the numbered period of the work that found
//! them or by the day it was written down (the words are [`WORK`], [`STEP`] and [`NOW`] below):
//! bookkeeping that means nothing to a reader and goes stale the day after. This test reads every tracked text file of the repository
//! (docs, comments, scripts, test names) and names each line that uses such wording.

use std::path::{Path, PathBuf};
use std::process::Command;

// Spelled in parts so that this file does not hold the phrases it looks for.
/// A numbered period of the work, as in "WORK 12".
const WORK: &str = concat!("ses", "sion");
/// A numbered step of the work, as in "STEP 3" (with its space).
const STEP: &str = concat!("sta", "ge ");
/// The day of writing.
const NOW: &str = concat!("to", "day");

/// The repository root: the workspace folder above this crate.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// This file, which has to spell the words it looks for.
const SELF: &str = "shared/tests/wording.rs";

/// Tracked files, relative to the root: `git ls-files`, or where git is missing (a source
/// tarball), every file below the root but build outputs and dependencies.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let git = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output();
    if let Ok(out) = git
        && out.status.success()
        && !out.stdout.is_empty()
    {
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect();
    }
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files);
    files
}

fn walk(root: &Path, rel: &Path, files: &mut Vec<PathBuf>) {
    const SKIP: [&str; 7] = [
        ".git",
        "target",
        "node_modules",
        "web/dist",
        "out",
        ".gpu",
        "web/pkg",
    ];
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = rel.join(entry.file_name());
        let name = path.to_string_lossy().replace('\\', "/");
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, files),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}

/// Where in `line` (lowercased ASCII) a result is dated by the work rather than by the
/// calendar: [`WORK`] followed by a number (also after a space, a hyphen or a plural `s`),
/// [`STEP`] followed by a number, or the word [`NOW`]. Returns the matched phrase.
fn dating_word(line: &str) -> Option<String> {
    let l = line.to_ascii_lowercase();
    let b = l.as_bytes();
    let word_char = |i: usize| {
        b.get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    let starts_word = |i: usize| i == 0 || !word_char(i - 1);
    // The end of the run of digits at `i`, if there is one.
    let digits = |i: usize| {
        let end = (i..b.len())
            .find(|&j| !b[j].is_ascii_digit())
            .unwrap_or(b.len());
        (end > i).then_some(end)
    };
    for (start, _) in l.match_indices(WORK) {
        let mut i = start + WORK.len();
        if b.get(i) == Some(&b's') {
            i += 1;
        }
        if matches!(b.get(i), Some(b' ' | b'-')) {
            i += 1;
        }
        if let Some(end) = digits(i) {
            return Some(line[start..end].to_string());
        }
    }
    for (start, _) in l.match_indices(STEP) {
        if let Some(end) = digits(start + STEP.len()).filter(|_| starts_word(start)) {
            return Some(line[start..end].to_string());
        }
    }
    for (start, _) in l.match_indices(NOW) {
        let end = start + NOW.len();
        if starts_word(start) && !word_char(end) {
            return Some(line[start..end].to_string());
        }
    }
    None
}

#[test]
fn the_matcher_finds_numbered_work_periods_and_the_day_of_writing_and_nothing_else() {
    let cap = |w: &str| format!("{}{}", w[..1].to_ascii_uppercase(), &w[1..]);
    for hit in [
        format!("measured in {WORK} 12"),
        format!("(docs/RESULTS.md, {} 8)", cap(WORK)),
        format!("the {WORK}-14 start"),
        format!("{WORK}s 12-14"),
        format!("{WORK}3"),
        format!("at {STEP}2 of the work"),
        format!("{} the default is", cap(NOW)),
        format!("{NOW}'s code"),
    ] {
        assert!(dating_word(&hit).is_some(), "{hit:?} should be found");
    }
    for miss in [
        format!("ort.Inference{}.create(bytes)", cap(WORK)),
        format!("median {WORK}.run"),
        format!("a {WORK} of the browser"),
        format!("each {STEP}capped by a timeout"),
        format!("{STEP}\"engine tests\""),
        format!("back{STEP}3"),
        format!("{NOW}s"),
        "measured 2026-12-05 at commit f37483c".to_string(),
    ] {
        assert_eq!(dating_word(&miss), None, "{miss:?} should not be found");
    }
}

#[test]
fn no_result_is_dated_by_a_work_period() {
    let root = root();
    let files = tracked_files(&root);
    assert!(!files.is_empty(), "no files found under {}", root.display());
    let mut found = Vec::new();
    for rel in &files {
        let name = rel.to_string_lossy().replace('\\', "/");
        if name == SELF || name.ends_with("Cargo.lock") {
            continue;
        }
        let Ok(bytes) = std::fs::read(root.join(rel)) else {
            continue; // a tracked file deleted in the working tree
        };
        // Binary files (images, model fixtures) are not prose.
        if bytes.contains(&0) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if let Some(word) = dating_word(line) {
                found.push(format!("{name}:{}: \"{word}\": {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} line(s) date a result by a numbered period of the work or by the day of writing; \
         give the date and the commit instead (e.g. \"2026-12-05, f37483c\"):\n{}",
        found.len(),
        found.join("\n")
    );
}
