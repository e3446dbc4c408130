//! The code under test: git repositories a suite names under `sources:`,
//! what state each is in (commit, branch, remote, uncommitted changes), and
//! the exact trees runs use — the commit plus the uncommitted diff, plus a
//! mutation's patches — written out as snapshots.
//!
//! Read with libgit2, without a network and without writing into the
//! repository's objects. Snapshots live in the repository's git folder
//! (`.git/flow/snapshots/<hash>/<name>/`), named by the hash of what they
//! hold, so one is written once and every command after that reuses it, as
//! long as nothing has written into it since (its manifest says).

pub mod patch;

use std::fs;
use std::path::{Path, PathBuf};

use git2::{
    DiffFormat, DiffOptions, ObjectType, Repository, StatusOptions, TreeWalkMode, TreeWalkResult,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// At most this many untracked paths are listed.
const MAX_UNTRACKED: usize = 1000;

/// The name `suite.json` gives the repository holding the suite file.
pub const EXPERIMENT: &str = "experiment";

/// A repository's state when it was read.
#[derive(Debug, Clone, Serialize)]
pub struct SourceState {
    pub name: String,
    /// The work tree's top folder.
    pub path: PathBuf,
    /// `origin`'s URL, else the first remote's; none without remotes.
    pub remote: Option<String>,
    /// The checked-out branch; none on a detached HEAD.
    pub branch: Option<String>,
    pub commit: String,
    /// Whether tracked files differ from the commit (staged or not).
    pub dirty: bool,
    /// The uncommitted changes of tracked files, as a git patch (empty
    /// when clean). Stored as `sources/<name>.diff`.
    #[serde(skip)]
    pub diff: String,
    /// SHA-256 of `diff`; none when clean.
    pub diff_sha256: Option<String>,
    /// Files git does not track and does not ignore: listed, never part
    /// of what runs.
    pub untracked: Vec<String>,
}

impl SourceState {
    /// What runs of this state: the commit and the uncommitted diff.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.commit.as_bytes());
        h.update([0]);
        h.update(self.diff.as_bytes());
        h.finalize().into()
    }

    /// `3f2a9c1d0b7e` or `3f2a9c1d0b7e+dirty`, for people.
    pub fn short(&self) -> String {
        let c: String = self.commit.chars().take(12).collect();
        if self.dirty { format!("{c}+dirty") } else { c }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn git_err(e: git2::Error) -> String {
    e.message().to_string()
}

/// Reads the state of the repository whose work tree is `dir`. With
/// `inside`, `dir` may be any folder of the work tree (the experiment
/// repository around a suite file); otherwise it must be its top.
pub fn capture(name: &str, dir: &Path, inside: bool) -> Result<SourceState, String> {
    // A folder inside a work tree is found, then refused with its top named.
    let repo = Repository::discover(dir).map_err(|e| {
        if e.code() == git2::ErrorCode::NotFound {
            format!(
                "`{}` is not a git repository",
                crate::diag::display_path(dir)
            )
        } else {
            git_err(e)
        }
    })?;
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        return Err(format!(
            "`{}` is a bare repository: give a folder with checked-out files",
            crate::diag::display_path(dir)
        ));
    };
    if !inside {
        let same = fs::canonicalize(dir).ok() == fs::canonicalize(&workdir).ok();
        if !same {
            return Err(format!(
                "`{}` is inside the repository at `{}`: give that folder",
                crate::diag::display_path(dir),
                crate::diag::display_path(&workdir)
            ));
        }
    }
    let head = repo
        .head()
        .map_err(|e| format!("has no commit to run ({})", e.message()))?;
    let commit = head.peel_to_commit().map_err(git_err)?;
    let branch = head
        .is_branch()
        .then(|| head.shorthand().ok().map(str::to_string))
        .flatten();
    let remote = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(str::to_string))
        .or_else(|| {
            let names = repo.remotes().ok()?;
            let first = names.iter().flatten().flatten().next()?.to_string();
            repo.find_remote(&first)
                .ok()?
                .url()
                .ok()
                .map(str::to_string)
        });
    let tree = commit.tree().map_err(git_err)?;
    let mut opts = DiffOptions::new();
    opts.include_untracked(false).ignore_submodules(true);
    let diff = repo
        .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut opts))
        .map_err(git_err)?;
    for delta in diff.deltas() {
        if delta.flags().is_binary() {
            let p = delta
                .new_file()
                .path()
                .or(delta.old_file().path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(format!(
                "the binary file `{p}` has uncommitted changes, which flow cannot record as a patch: commit it"
            ));
        }
    }
    let mut text: Vec<u8> = Vec::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            text.push(line.origin() as u8);
        }
        text.extend_from_slice(line.content());
        true
    })
    .map_err(git_err)?;
    // libgit2 marks a binary change only once it has looked at the content.
    if text.windows(13).any(|w| w == b"Binary files ") {
        return Err(
            "a binary file has uncommitted changes, which flow cannot record as a patch: commit it"
                .into(),
        );
    }
    let diff_text = String::from_utf8_lossy(&text).into_owned();
    let mut sopts = StatusOptions::new();
    // An untracked folder is one entry (`artifacts/`), not its files: a
    // project's unignored artifacts must not fill `suite.json`.
    sopts
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let mut untracked = Vec::new();
    let mut more = 0usize;
    for s in repo.statuses(Some(&mut sopts)).map_err(git_err)?.iter() {
        if s.status().contains(git2::Status::WT_NEW)
            && let Ok(p) = s.path()
        {
            if untracked.len() < MAX_UNTRACKED {
                untracked.push(p.to_string());
            } else {
                more += 1;
            }
        }
    }
    untracked.sort();
    if more > 0 {
        untracked.push(format!("… and {more} more"));
    }
    let dirty = !diff_text.is_empty();
    Ok(SourceState {
        name: name.to_string(),
        path: workdir.components().collect(),
        remote,
        branch,
        commit: commit.id().to_string(),
        dirty,
        diff_sha256: dirty.then(|| sha256_hex(diff_text.as_bytes())),
        diff: diff_text,
        untracked,
    })
}

/// A patch file of a mutation, read when the suite was loaded.
#[derive(Debug, Clone, Serialize)]
pub struct PatchFile {
    /// As written in the suite, relative to it.
    pub file: String,
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub text: Vec<u8>,
    pub sha256: String,
}

/// Why a snapshot could not be made.
#[derive(Debug)]
pub enum SnapshotError {
    /// The patch at this index of the list did not apply.
    Patch(usize, patch::ApplyError),
    /// The recorded uncommitted diff did not apply to the commit.
    Dirty(patch::ApplyError),
    Io(String),
}

/// The folder holding the commit of `state` plus its uncommitted diff plus
/// `patches` in order. Written once (into a temporary folder renamed into
/// place), then reused.
pub fn snapshot(state: &SourceState, patches: &[PatchFile]) -> Result<PathBuf, SnapshotError> {
    let io = |e: std::io::Error| SnapshotError::Io(e.to_string());
    let repo = Repository::open(&state.path).map_err(|e| SnapshotError::Io(git_err(e)))?;
    let mut h = Sha256::new();
    h.update(state.digest());
    for p in patches {
        h.update(p.sha256.as_bytes());
    }
    let key = hex(&h.finalize()[..8]);
    let base = repo.path().join("flow").join("snapshots");
    fs::create_dir_all(&base).map_err(io)?;
    // A snapshot something wrote into since it was made (a build in place)
    // no longer holds what it says: it is never used again, nor removed (a
    // running flow may be using it); the next generation is made beside it.
    for generation in 0..MAX_GENERATIONS {
        let name = if generation == 0 {
            key.clone()
        } else {
            format!("{key}.{generation}")
        };
        // `<name>/<source>/`: pushed as a folder, it arrives as `<source>/`.
        let top = base.join(&name);
        let dir = top.join(&state.name);
        if dir.exists() {
            if intact(&dir) {
                return Ok(dir);
            }
            continue;
        }
        let tmp_top = base.join(format!(".tmp-{name}-{}", std::process::id()));
        let tmp = tmp_top.join(&state.name);
        let _ = fs::remove_dir_all(&tmp_top);
        let made = (|| {
            write_commit(&repo, &state.commit, &tmp)?;
            if !state.diff.is_empty() {
                patch::apply(&tmp, state.diff.as_bytes()).map_err(SnapshotError::Dirty)?;
            }
            for (i, p) in patches.iter().enumerate() {
                patch::apply(&tmp, &p.text).map_err(|e| SnapshotError::Patch(i, e))?;
            }
            let manifest = manifest_of(&tmp).map_err(io)?;
            fs::write(tmp.join(MARKER), manifest).map_err(io)
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&tmp_top);
            return Err(e);
        }
        // Into place whole. When another flow got there first, its snapshot
        // is the same one, and is checked like any other.
        let _ = if top.exists() {
            fs::rename(&tmp, &dir)
        } else {
            fs::rename(&tmp_top, &top)
        };
        let _ = fs::remove_dir_all(&tmp_top);
        if !dir.exists() {
            return Err(SnapshotError::Io(format!(
                "could not create `{}`",
                dir.display()
            )));
        }
        if intact(&dir) {
            return Ok(dir);
        }
    }
    Err(SnapshotError::Io(format!(
        "{MAX_GENERATIONS} snapshots of this state in `{}` were written into after they were made; remove that folder",
        base.display()
    )))
}

/// The file in a snapshot that marks it whole and lists what it holds.
const MARKER: &str = ".flow-snapshot";

/// How many snapshots of one state are made because earlier ones were
/// written into, at most.
const MAX_GENERATIONS: u32 = 100;

/// What a snapshot holds, one line per entry in path order: files with
/// their size, mode and modification time, links with their target.
fn manifest_of(root: &Path) -> std::io::Result<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            if rel == MARKER {
                continue;
            }
            let meta = fs::symlink_metadata(&p)?;
            if meta.file_type().is_symlink() {
                out.push(format!("L\t{}\t{rel}", fs::read_link(&p)?.display()));
            } else if meta.is_dir() {
                out.push(format!("D\t{rel}"));
                walk(root, &p, out)?;
            } else {
                use std::os::unix::fs::MetadataExt;
                out.push(format!(
                    "F\t{}\t{:o}\t{}.{:09}\t{rel}",
                    meta.len(),
                    meta.mode() & 0o7777,
                    meta.mtime(),
                    meta.mtime_nsec()
                ));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out.join("\n") + "\n")
}

/// Whether a snapshot still holds exactly what it was made with.
fn intact(dir: &Path) -> bool {
    match (fs::read_to_string(dir.join(MARKER)), manifest_of(dir)) {
        (Ok(recorded), Ok(now)) => recorded == now,
        _ => false,
    }
}

/// Writes the files of `commit` under `dest` (submodules are left out).
fn write_commit(repo: &Repository, commit: &str, dest: &Path) -> Result<(), SnapshotError> {
    let e = |e: git2::Error| SnapshotError::Io(git_err(e));
    let oid = git2::Oid::from_str(commit).map_err(e)?;
    let tree = repo.find_commit(oid).map_err(e)?.tree().map_err(e)?;
    fs::create_dir_all(dest).map_err(|e| SnapshotError::Io(e.to_string()))?;
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        let path = dest.join(root).join(name);
        let r: Result<(), String> = (|| match entry.kind() {
            Some(ObjectType::Tree) => fs::create_dir_all(&path).map_err(|e| e.to_string()),
            Some(ObjectType::Blob) => {
                let blob = repo.find_blob(entry.id()).map_err(git_err)?;
                let mode = entry.filemode();
                if mode == 0o120000 {
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    std::os::unix::fs::symlink(target, &path).map_err(|e| e.to_string())
                } else {
                    fs::write(&path, blob.content()).map_err(|e| e.to_string())?;
                    if mode == 0o100755 {
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            }
            _ => Ok(()),
        })();
        match r {
            Ok(()) => TreeWalkResult::Ok,
            Err(m) => {
                failure = Some(format!("{}: {m}", path.display()));
                TreeWalkResult::Abort
            }
        }
    })
    .ok();
    match failure {
        Some(m) => Err(SnapshotError::Io(m)),
        None => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// A repository with one commit of `files`, made with the git command
    /// when it is there, else with libgit2.
    pub fn repo_with(dir: &Path, files: &[(&str, &str)]) -> String {
        let repo = Repository::init(dir).expect("init");
        for (p, text) in files {
            let path = dir.join(p);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("mkdir");
            }
            fs::write(path, text).expect("write");
        }
        let mut index = repo.index().expect("index");
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let sig = git2::Signature::now("flow", "flow@localhost").expect("sig");
        repo.commit(Some("HEAD"), &sig, &sig, "first", &tree, &[])
            .expect("commit")
            .to_string()
    }

    #[test]
    fn a_clean_repository_is_its_commit() {
        let d = tempfile::tempdir().expect("tmp");
        let commit = repo_with(d.path(), &[("main.c", "int main() { return 0; }\n")]);
        let s = capture("kv", d.path(), false).expect("capture");
        assert_eq!(s.commit, commit);
        assert!(!s.dirty);
        assert_eq!(s.diff_sha256, None);
        assert!(s.untracked.is_empty());
        let snap = snapshot(&s, &[]).expect("snapshot");
        assert_eq!(
            fs::read_to_string(snap.join("main.c")).expect("read"),
            "int main() { return 0; }\n"
        );
        // Written once: the second call finds it.
        assert_eq!(snapshot(&s, &[]).expect("again"), snap);
    }

    #[test]
    fn a_snapshot_written_into_is_never_used_again_nor_removed() {
        let d = tempfile::tempdir().expect("tmp");
        repo_with(d.path(), &[("main.c", "int x = 1;\n")]);
        let s = capture("kv", d.path(), false).expect("capture");
        let first = snapshot(&s, &[]).expect("snapshot");
        // A build in place leaves a file behind.
        fs::write(first.join("main.o"), "object").expect("write");
        let second = snapshot(&s, &[]).expect("again");
        assert_ne!(second, first);
        assert!(!second.join("main.o").exists());
        assert!(
            first.join("main.o").exists(),
            "the written-into snapshot was removed"
        );
        assert_eq!(snapshot(&s, &[]).expect("third"), second);
        // A tracked file rewritten in place, same size, is seen too.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(second.join("main.c"), "int x = 2;\n").expect("write");
        let third = snapshot(&s, &[]).expect("fourth");
        assert_ne!(third, second);
        assert_eq!(
            fs::read_to_string(third.join("main.c")).expect("read"),
            "int x = 1;\n"
        );
    }

    #[test]
    fn a_mutation_has_a_snapshot_of_its_own_beside_the_unpatched_one() {
        let d = tempfile::tempdir().expect("tmp");
        repo_with(d.path(), &[("a.txt", "one\ntwo\n"), ("b.txt", "x\n")]);
        fs::write(d.path().join("a.txt"), "one\nTWO\n").expect("edit");
        let patched = capture("kv", d.path(), false).expect("capture");
        fs::write(d.path().join("a.txt"), "one\ntwo\n").expect("undo");
        let s = capture("kv", d.path(), false).expect("capture");
        let p = PatchFile {
            file: "p.diff".into(),
            path: d.path().join("p.diff"),
            sha256: sha256_hex(patched.diff.as_bytes()),
            text: patched.diff.into_bytes(),
        };
        let plain = snapshot(&s, &[]).expect("plain");
        let mutated = snapshot(&s, std::slice::from_ref(&p)).expect("mutated");
        assert_ne!(plain, mutated);
        assert_eq!(
            fs::read_to_string(mutated.join("a.txt")).expect("read"),
            "one\nTWO\n"
        );
        assert_eq!(
            fs::read_to_string(plain.join("a.txt")).expect("read"),
            "one\ntwo\n"
        );
        assert_eq!(
            fs::read_to_string(mutated.join("b.txt")).expect("read"),
            "x\n"
        );
    }

    #[test]
    fn uncommitted_changes_are_recorded_and_in_the_snapshot_and_untracked_files_are_not() {
        let d = tempfile::tempdir().expect("tmp");
        repo_with(d.path(), &[("a.txt", "one\ntwo\n"), ("b/c.txt", "x\n")]);
        fs::write(d.path().join("a.txt"), "one\nTWO\n").expect("edit");
        fs::write(d.path().join("notes.txt"), "mine\n").expect("untracked");
        fs::create_dir_all(d.path().join("artifacts/x")).expect("mkdir");
        fs::write(d.path().join("artifacts/x/run.log"), "data\n").expect("untracked");
        let s = capture("kv", d.path(), false).expect("capture");
        assert!(s.dirty);
        assert!(s.diff.contains("+TWO"), "{}", s.diff);
        assert_eq!(
            s.diff_sha256.as_deref(),
            Some(sha256_hex(s.diff.as_bytes()).as_str())
        );
        assert_eq!(
            s.untracked,
            vec!["artifacts/".to_string(), "notes.txt".to_string()]
        );
        let snap = snapshot(&s, &[]).expect("snapshot");
        assert_eq!(
            fs::read_to_string(snap.join("a.txt")).expect("read"),
            "one\nTWO\n"
        );
        assert!(!snap.join("notes.txt").exists());
        // The diff is a patch flow itself applies: recorded == run.
        assert!(patch::check(s.diff.as_bytes()).is_ok());
        // Another edit is another state, with another snapshot.
        fs::write(d.path().join("a.txt"), "one\n2\n").expect("edit");
        let s2 = capture("kv", d.path(), false).expect("capture");
        assert_ne!(s.digest(), s2.digest());
        assert_ne!(snapshot(&s2, &[]).expect("snapshot"), snap);
    }

    #[test]
    fn a_folder_inside_a_repository_or_outside_any_is_refused_as_a_source() {
        let d = tempfile::tempdir().expect("tmp");
        repo_with(d.path(), &[("sub/a.txt", "a\n")]);
        let e = capture("kv", &d.path().join("sub"), false).expect_err("inside");
        assert!(e.contains("is inside the repository"), "{e}");
        assert!(capture(EXPERIMENT, &d.path().join("sub"), true).is_ok());
        let e2 = tempfile::tempdir().expect("tmp");
        let e = capture("kv", e2.path(), false).expect_err("no repo");
        assert!(e.contains("is not a git repository"), "{e}");
    }

    #[test]
    fn the_recorded_diff_is_the_one_git_itself_would_apply() {
        // Cross-checked with the git command (scripts/test.sh installs it).
        let d = tempfile::tempdir().expect("tmp");
        repo_with(d.path(), &[("a.txt", "1\n2\n3\n4\n5\n6\n7\n8\n")]);
        fs::write(d.path().join("a.txt"), "1\n2\nthree\n4\n5\n6\n7\neight\n").expect("edit");
        let s = capture("kv", d.path(), false).expect("capture");
        let p = d.path().join("x.diff");
        fs::write(&p, &s.diff).expect("write");
        let st = Command::new("git")
            .arg("-C")
            .arg(d.path())
            .args(["apply", "--check", "-R"])
            .arg(&p)
            .status()
            .expect("git apply");
        assert!(
            st.success(),
            "git cannot reverse the recorded diff:\n{}",
            s.diff
        );
    }
}
