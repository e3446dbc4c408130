//! Applying git patches to a folder of files, exactly: every hunk's context
//! and removed lines must be found as written (at the line the hunk names,
//! or moved by whole lines, like `git apply`), or the patch is refused with
//! the file and hunk that did not apply. No fuzz: a mutation that applies
//! "nearly" is a different program.
//!
//! Patches are parsed by libgit2 (`git diff` and `git format-patch`
//! output); the lines are applied here so that a refusal can name its hunk
//! and nothing is written into any repository.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{Delta, Diff, DiffLineType, Patch};

/// Why a patch did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// The file the patch changes (`src/lock.c`), when the problem is there.
    pub file: Option<String>,
    /// 1-based hunk number and its `@@ … @@` header.
    pub hunk: Option<(usize, String)>,
    pub message: String,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.hunk) {
            (Some(file), Some((n, header))) => {
                write!(f, "hunk {n} of `{file}` ({header}) {}", self.message)
            }
            (Some(file), None) => write!(f, "`{file}`: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

fn err(file: Option<&str>, message: impl Into<String>) -> ApplyError {
    ApplyError {
        file: file.map(str::to_string),
        hunk: None,
        message: message.into(),
    }
}

/// One file change of a patch, as lines.
#[derive(Debug, Clone)]
struct FileChange {
    old: Option<String>,
    new: Option<String>,
    status: Delta,
    executable: bool,
    hunks: Vec<Hunk>,
}

#[derive(Debug, Clone)]
struct Hunk {
    header: String,
    old_start: usize,
    /// Context and removed lines, each with its line end.
    before: Vec<Vec<u8>>,
    /// Context and added lines.
    after: Vec<Vec<u8>>,
}

/// Checks that `text` is a patch flow can apply, without applying it.
pub fn check(text: &[u8]) -> Result<usize, ApplyError> {
    parse(text).map(|c| c.len())
}

fn parse(text: &[u8]) -> Result<Vec<FileChange>, ApplyError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(err(None, "is empty"));
    }
    let diff = Diff::from_buffer(text).map_err(|e| {
        err(
            None,
            format!(
                "is not a patch git can read ({}); write it with `git diff` or `git format-patch`",
                e.message()
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let path = |f: git2::DiffFile| f.path().map(|p| p.to_string_lossy().into_owned());
        let old = path(delta.old_file());
        let new = path(delta.new_file());
        let shown = new.clone().or_else(|| old.clone()).unwrap_or_default();
        if delta.flags().is_binary() {
            return Err(err(
                Some(&shown),
                "is a binary change, which flow does not apply",
            ));
        }
        let status = delta.status();
        if !matches!(
            status,
            Delta::Added | Delta::Deleted | Delta::Modified | Delta::Renamed
        ) {
            return Err(err(
                Some(&shown),
                format!("is a change flow does not apply ({status:?})"),
            ));
        }
        let executable = u32::from(delta.new_file().mode()) == 0o100755;
        let mut hunks = Vec::new();
        if let Some(patch) =
            Patch::from_diff(&diff, i).map_err(|e| err(Some(&shown), e.message()))?
        {
            for h in 0..patch.num_hunks() {
                let (hunk, lines) = patch.hunk(h).map_err(|e| err(Some(&shown), e.message()))?;
                let mut hk = Hunk {
                    header: String::from_utf8_lossy(hunk.header())
                        .trim_end()
                        .to_string(),
                    old_start: hunk.old_start() as usize,
                    before: Vec::new(),
                    after: Vec::new(),
                };
                let mut last = Side::Both;
                for l in 0..lines {
                    let line = patch
                        .line_in_hunk(h, l)
                        .map_err(|e| err(Some(&shown), e.message()))?;
                    let content = line.content().to_vec();
                    // "\ No newline at end of file" belongs to the line
                    // before it: that line has no line end on its side(s).
                    // (libgit2 names the marker by the whole file, so the
                    // previous line is what says which side.)
                    match line.origin_value() {
                        DiffLineType::Context => {
                            hk.before.push(content.clone());
                            hk.after.push(content);
                            last = Side::Both;
                        }
                        DiffLineType::Deletion => {
                            hk.before.push(content);
                            last = Side::Before;
                        }
                        DiffLineType::Addition => {
                            hk.after.push(content);
                            last = Side::After;
                        }
                        DiffLineType::ContextEOFNL
                        | DiffLineType::AddEOFNL
                        | DiffLineType::DeleteEOFNL => {
                            if matches!(last, Side::Both | Side::Before) {
                                strip_newline(&mut hk.before);
                            }
                            if matches!(last, Side::Both | Side::After) {
                                strip_newline(&mut hk.after);
                            }
                        }
                        _ => {}
                    }
                }
                hunks.push(hk);
            }
        }
        out.push(FileChange {
            old,
            new,
            status,
            executable,
            hunks,
        });
    }
    if out.is_empty() {
        return Err(err(None, "changes no file"));
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Side {
    Both,
    Before,
    After,
}

fn strip_newline(lines: &mut [Vec<u8>]) {
    if let Some(last) = lines.last_mut()
        && last.last() == Some(&b'\n')
    {
        last.pop();
    }
}

/// Splits a file into lines that keep their line ends.
fn lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// Applies every change of `text` to the files under `root`.
pub fn apply(root: &Path, text: &[u8]) -> Result<(), ApplyError> {
    let changes = parse(text)?;
    // Every file is patched in memory first: a patch applies whole or not
    // at all.
    let mut writes: Vec<(PathBuf, Option<Vec<u8>>, bool)> = Vec::new();
    for c in &changes {
        let shown = c.new.clone().or_else(|| c.old.clone()).unwrap_or_default();
        let old_path = c.old.as_deref().map(|p| safe_join(root, p)).transpose()?;
        let new_path = c.new.as_deref().map(|p| safe_join(root, p)).transpose()?;
        let current = match (c.status, &old_path) {
            (Delta::Added, _) => {
                if new_path.as_ref().is_some_and(|p| p.exists()) {
                    return Err(err(
                        Some(&shown),
                        "is added by the patch but already exists",
                    ));
                }
                Vec::new()
            }
            (_, Some(p)) => fs::read(p).map_err(|_| {
                err(
                    Some(&shown),
                    "does not exist in the source, so the patch cannot change it",
                )
            })?,
            (_, None) => return Err(err(Some(&shown), "names no file")),
        };
        let mut file = lines(&current);
        let mut offset: isize = 0;
        let mut floor = 0usize;
        for (n, h) in c.hunks.iter().enumerate() {
            let want = (h.old_start.max(1) as isize - 1 + offset).max(0) as usize;
            // An empty file's hunk starts at 0.
            let want = if h.before.is_empty() && h.old_start == 0 {
                0
            } else {
                want
            };
            let Some(at) = find(&file, &h.before, want, floor) else {
                return Err(ApplyError {
                    file: Some(shown.clone()),
                    hunk: Some((n + 1, h.header.clone())),
                    message: "does not apply: its context or removed lines are not in the source"
                        .into(),
                });
            };
            file.splice(at..at + h.before.len(), h.after.iter().cloned());
            offset +=
                h.after.len() as isize - h.before.len() as isize + (at as isize - want as isize);
            floor = at + h.after.len();
        }
        let content: Vec<u8> = file.concat();
        match c.status {
            Delta::Deleted => {
                if !content.is_empty() {
                    return Err(err(
                        Some(&shown),
                        "is deleted by the patch, but the source's file has more lines than it removes",
                    ));
                }
                if let Some(p) = old_path {
                    writes.push((p, None, false));
                }
            }
            Delta::Renamed => {
                if let Some(p) = old_path {
                    writes.push((p, None, false));
                }
                if let Some(p) = new_path {
                    writes.push((p, Some(content), c.executable));
                }
            }
            _ => {
                if let Some(p) = new_path.or(old_path) {
                    writes.push((p, Some(content), c.executable));
                }
            }
        }
    }
    for (path, content, executable) in writes {
        let io = |e: std::io::Error| err(None, format!("{}: {e}", path.display()));
        match content {
            None => fs::remove_file(&path).map_err(io)?,
            Some(bytes) => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                // Written beside and renamed into place: the patched file
                // appears whole, with the mode it had.
                let tmp = path.with_file_name(format!(
                    ".{}.flow-patch",
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
                fs::write(&tmp, bytes).map_err(io)?;
                let mode = if executable {
                    Some(0o755)
                } else {
                    fs::metadata(&path).ok().map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o7777
                    })
                };
                if let Some(mode) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io)?;
                }
                fs::rename(&tmp, &path).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// A path of a patch, inside `root`: never absolute, never through `..`.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf, ApplyError> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(err(Some(rel), "is a path outside the source"));
    }
    Ok(root.join(p))
}

/// Where `needle` sits in `file`, nearest to `want` and not before `floor`.
fn find(file: &[Vec<u8>], needle: &[Vec<u8>], want: usize, floor: usize) -> Option<usize> {
    let fits = |at: usize| {
        at >= floor && at + needle.len() <= file.len() && file[at..at + needle.len()] == *needle
    };
    if needle.is_empty() {
        return Some(want.clamp(floor, file.len()));
    }
    let last = file.len().checked_sub(needle.len())?;
    for d in 0..=last.max(want) {
        if want >= d && fits(want - d) {
            return Some(want - d);
        }
        if d > 0 && fits(want + d) {
            return Some(want + d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "diff --git a/a.txt b/a.txt
index 1111111..2222222 100644
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
";

    #[test]
    fn a_hunk_applies_where_it_says_and_where_lines_moved() {
        let d = tempfile::tempdir().expect("tmp");
        fs::write(d.path().join("a.txt"), "one\ntwo\nthree\n").expect("write");
        apply(d.path(), PATCH.as_bytes()).expect("applies");
        assert_eq!(
            fs::read_to_string(d.path().join("a.txt")).expect("read"),
            "one\nTWO\nthree\n"
        );

        // Two lines above: found two lines further down.
        fs::write(d.path().join("a.txt"), "zero\nhalf\none\ntwo\nthree\n").expect("write");
        apply(d.path(), PATCH.as_bytes()).expect("applies with an offset");
        assert_eq!(
            fs::read_to_string(d.path().join("a.txt")).expect("read"),
            "zero\nhalf\none\nTWO\nthree\n"
        );
    }

    #[test]
    fn a_hunk_that_does_not_apply_is_named_and_nothing_is_written() {
        let d = tempfile::tempdir().expect("tmp");
        fs::write(d.path().join("a.txt"), "one\n2\nthree\n").expect("write");
        let e = apply(d.path(), PATCH.as_bytes()).expect_err("refused");
        assert_eq!(e.file.as_deref(), Some("a.txt"));
        assert_eq!(e.hunk.as_ref().map(|h| h.0), Some(1));
        assert!(e.to_string().contains("@@ -1,3 +1,3 @@"), "{e}");
        assert_eq!(
            fs::read_to_string(d.path().join("a.txt")).expect("read"),
            "one\n2\nthree\n"
        );
    }

    #[test]
    fn new_files_deleted_files_and_missing_newlines() {
        let d = tempfile::tempdir().expect("tmp");
        fs::write(d.path().join("gone.txt"), "bye\n").expect("write");
        fs::write(d.path().join("end.txt"), "a\nb").expect("write");
        let patch = "diff --git a/new.sh b/new.sh
new file mode 100755
index 0000000..3333333
--- /dev/null
+++ b/new.sh
@@ -0,0 +1,2 @@
+#!/bin/sh
+echo hi
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
index 4444444..0000000
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/end.txt b/end.txt
index 5555555..6666666 100644
--- a/end.txt
+++ b/end.txt
@@ -1,2 +1,2 @@
 a
-b
\\ No newline at end of file
+c
";
        apply(d.path(), patch.as_bytes()).expect("applies");
        assert_eq!(
            fs::read_to_string(d.path().join("new.sh")).expect("read"),
            "#!/bin/sh\necho hi\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.path().join("new.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(!d.path().join("gone.txt").exists());
        assert_eq!(
            fs::read_to_string(d.path().join("end.txt")).expect("read"),
            "a\nc\n"
        );
    }

    #[test]
    fn text_that_is_no_patch_and_paths_outside_are_refused() {
        assert!(check(b"").is_err());
        let e = check(b"just some words\n").expect_err("no patch");
        assert!(e.to_string().contains("git diff"), "{e}");
        let d = tempfile::tempdir().expect("tmp");
        let evil = PATCH
            .replace("a/a.txt", "a/../x.txt")
            .replace("b/a.txt", "b/../x.txt");
        assert!(apply(d.path(), evil.as_bytes()).is_err());
    }
}
