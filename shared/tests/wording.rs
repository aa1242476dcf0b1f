//! Results are dated by date and commit, never by the numbered stage of the work that found
//! them ("session 12", "stage 3") or by "today": bookkeeping that means nothing to a reader and
//! goes stale the day after. This test reads every tracked text file of the repository
//! (docs, comments, scripts, test names) and names each line that uses such wording.

use std::path::{Path, PathBuf};
use std::process::Command;

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
/// calendar: `session N`, `session-N`, `sessionN` (also `sessions N`), `stage N`, or the word
/// `today`. Returns the matched phrase.
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
    for (start, _) in l.match_indices("session") {
        let mut i = start + "session".len();
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
    for (start, _) in l.match_indices("stage ") {
        if let Some(end) = digits(start + "stage ".len()).filter(|_| starts_word(start)) {
            return Some(line[start..end].to_string());
        }
    }
    for (start, _) in l.match_indices("today") {
        let end = start + "today".len();
        if starts_word(start) && !word_char(end) {
            return Some(line[start..end].to_string());
        }
    }
    None
}

#[test]
fn the_matcher_finds_work_stages_and_today_and_nothing_else() {
    for hit in [
        "measured in session 12",
        "(docs/RESULTS.md, Session 8)",
        "the session-14 start",
        "sessions 12-14",
        "session3",
        "at stage 2 of the work",
        "Today the default is",
        "today's code",
    ] {
        assert!(dating_word(hit).is_some(), "{hit:?} should be found");
    }
    for miss in [
        "ort.InferenceSession.create(bytes)",
        "median session.run",
        "a session of the browser",
        "each stage capped by a timeout",
        "stage \"engine tests\"",
        "backstage 3",
        "todays",
        "measured 2026-12-05 at commit f37483c",
    ] {
        assert_eq!(dating_word(miss), None, "{miss:?} should not be found");
    }
}

#[test]
fn no_result_is_dated_by_a_work_session() {
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
        "{} line(s) date a result by the stage of the work or by \"today\"; \
         give the date and the commit instead (e.g. \"2026-12-05, f37483c\"):\n{}",
        found.len(),
        found.join("\n")
    );
}
