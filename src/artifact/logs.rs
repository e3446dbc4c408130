//! A run's step logs, `logs/<step>@<host>.out` and `.err`: where they are and
//! their last lines, which failure reports quote so that the cause of a
//! failure (`sh: 1: ./server: not found`) is seen where the failure is.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// At most this much of a log's end is read for its last lines.
const TAIL_BYTES: u64 = 16 * 1024;
/// A quoted line longer than this is cut.
const MAX_LINE_CHARS: usize = 200;

/// `<run_dir>/logs/<step_id>.<ext>` (`ext` is `out` or `err`).
pub fn step_log(run_dir: &Path, step_id: &str, ext: &str) -> PathBuf {
    run_dir.join("logs").join(format!("{step_id}.{ext}"))
}

/// The last `n` non-blank lines of the file at `path` (fewer when it has
/// fewer; none when it is missing), each cut to a readable length.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(TAIL_BYTES);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.take(TAIL_BYTES).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    // A partial first line (the read began mid-line) is dropped.
    if from > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let kept: Vec<String> = lines
        .iter()
        .rev()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .take(n)
        .map(|l| {
            let clean: String = l
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if clean.chars().count() > MAX_LINE_CHARS {
                let cut: String = clean.chars().take(MAX_LINE_CHARS).collect();
                format!("{cut}…")
            } else {
                clean
            }
        })
        .collect();
    kept.into_iter().rev().collect()
}

/// The last lines a failed step wrote: its stderr, or its stdout when
/// stderr is empty. Returns the log's path with the lines.
pub fn failure_tail(run_dir: &Path, step_id: &str, n: usize) -> Option<(PathBuf, Vec<String>)> {
    ["err", "out"].iter().find_map(|ext| {
        let path = step_log(run_dir, step_id, ext);
        let lines = tail_lines(&path, n);
        (!lines.is_empty()).then_some((path, lines))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_non_blank_lines_of_a_long_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.err");
        let mut text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        text.push_str("\n\x1b[31mred\x1b[0m\n\n");
        std::fs::write(&p, text).expect("write");
        assert_eq!(
            tail_lines(&p, 3),
            vec!["line 4998", "line 4999", " [31mred [0m"]
        );
        assert!(tail_lines(&dir.path().join("missing"), 3).is_empty());
    }

    #[test]
    fn stdout_when_stderr_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("logs")).expect("mkdir");
        std::fs::write(dir.path().join("logs/s@h.err"), "").expect("write");
        std::fs::write(dir.path().join("logs/s@h.out"), "said\n").expect("write");
        let (path, lines) = failure_tail(dir.path(), "s@h", 5).expect("a tail");
        assert!(path.ends_with("logs/s@h.out"));
        assert_eq!(lines, vec!["said"]);
    }
}
