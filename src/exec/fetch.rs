//! Fetch steps on local hosts: copy the globbed paths from the host's run dir
//! into `runs/<id>/hosts/<host>/`, hashing while copying, and describe every
//! file in `fetch.log`. A pattern that matches nothing is recorded, not fatal.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// The header of `fetch.log` (tab-separated).
pub const FETCH_LOG_HEADER: &str = "host\tremote_path\tlocal_path\tbytes\tsha256\tms\tstatus\n";

/// The passes of incremental fetches (`every:`), the final one included:
/// `fetch.log`'s columns after the pass number and whether it was the final.
pub const PASSES_LOG: &str = "fetch.passes.log";

/// One line of `fetch.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub host: String,
    /// Path on the host (absolute), or the pattern that matched nothing.
    pub remote: String,
    /// Path relative to the run's artifact folder; empty when missing.
    pub local: String,
    pub bytes: u64,
    pub sha256: String,
    pub ms: u64,
    /// `ok`, `missing`, or `error: …`.
    pub status: String,
}

/// What a batch of transfers came to, and their `fetch.log` lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
    /// Patterns that matched nothing.
    pub missing: u64,
    /// FIFOs, sockets, devices, links out of the run dir: recorded, never
    /// opened.
    pub skipped: u64,
    /// Transfers that failed: the data is not all there.
    pub failed: u64,
    /// Files cut at the step's `max_bytes` (`over_max: truncate`).
    pub truncated: u64,
    pub lines: String,
}

impl Tally {
    pub fn add(&mut self, t: &Transfer) {
        self.lines.push_str(&t.line());
        if t.ok() {
            self.files += 1;
            self.bytes += t.bytes;
            if t.status != "ok" {
                self.truncated += 1;
            }
        } else if t.status == "missing" {
            self.missing += 1;
        } else if t.status.starts_with("skipped") {
            self.skipped += 1;
        } else {
            self.failed += 1;
        }
    }

    pub fn of(transfers: &[Transfer]) -> Tally {
        let mut t = Tally::default();
        for x in transfers {
            t.add(x);
        }
        t
    }

    /// Appends the lines to `path` (with the header when it is new), synced.
    pub fn append_to(&self, path: &Path) -> std::io::Result<()> {
        let mut text = String::new();
        if !path.exists() {
            text.push_str(FETCH_LOG_HEADER);
        }
        text.push_str(&self.lines);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }
}

impl Tally {
    /// Appends the lines to `fetch.passes.log` at `path`, each after its
    /// pass number and `final` or `during`.
    pub fn append_pass_to(&self, path: &Path, pass: u32, last: bool) -> std::io::Result<()> {
        let mut text = String::new();
        if !path.exists() {
            text.push_str("pass\twhen\t");
            text.push_str(FETCH_LOG_HEADER);
        }
        let when = if last { "final" } else { "during" };
        for l in self.lines.lines() {
            text.push_str(&format!("{pass}\t{when}\t{l}\n"));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(text.as_bytes())
    }
}

impl Transfer {
    /// A transfer that could not be made (`remote`: the path or pattern).
    pub fn failed(host: &str, remote: &str, error: &str) -> Transfer {
        Transfer {
            host: host.to_string(),
            remote: remote.to_string(),
            local: String::new(),
            bytes: 0,
            sha256: String::new(),
            ms: 0,
            status: format!("error: {error}"),
        }
    }

    /// The data is here: whole, or cut where the step's `max_bytes` said.
    pub fn ok(&self) -> bool {
        self.status == "ok" || self.status.starts_with("truncated:")
    }

    pub fn line(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            clean(&self.host),
            clean(&self.remote),
            clean(&self.local),
            self.bytes,
            self.sha256,
            self.ms,
            clean(&self.status)
        )
    }
}

/// What a fetch finds under a matched path, without following a link and
/// without opening anything but regular files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    File(PathBuf),
    /// A symlink whose target stays inside the run dir: fetched as a link.
    Link(PathBuf, PathBuf),
    /// A symlink to a path outside the run dir: never followed.
    LinkOut(PathBuf, PathBuf),
    /// A symlink whose target does not exist: the data is not there.
    Dangling(PathBuf, PathBuf),
    /// A FIFO, socket or device: never opened (a FIFO would block).
    Special(PathBuf, &'static str),
    /// Could not be read (permissions): an error of the fetch.
    Unreadable(PathBuf, String),
}

/// Whether a symlink at `link` (below `root`) pointing at `target` stays
/// inside `root`, read lexically as rsync's `--safe-links` does: relative,
/// and never climbing above `root`.
pub fn link_stays_inside(root: &Path, link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link
        .parent()
        .and_then(|d| d.strip_prefix(root).ok())
        .map_or(0, |d| d.components().count() as i64);
    for c in target.components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Everything under `p` (itself when not a folder), sorted, by `lstat`:
/// links are reported, never followed, so a loop (`up -> ..`) cannot
/// recurse and a link to `/etc` cannot leak it.
pub fn walk(root: &Path, p: &Path, out: &mut Vec<Found>) {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => {
            out.push(Found::Unreadable(p.to_path_buf(), e.to_string()));
            return;
        }
    };
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_symlink() {
        let target = std::fs::read_link(p).unwrap_or_default();
        if !link_stays_inside(root, p, &target) {
            out.push(Found::LinkOut(p.to_path_buf(), target));
        } else if std::fs::metadata(p).is_err() {
            out.push(Found::Dangling(p.to_path_buf(), target));
        } else {
            out.push(Found::Link(p.to_path_buf(), target));
        }
    } else if ft.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) => {
                out.push(Found::Unreadable(p.to_path_buf(), e.to_string()));
                return;
            }
        };
        entries.sort();
        for e in entries {
            walk(root, &e, out);
        }
    } else if ft.is_file() {
        out.push(Found::File(p.to_path_buf()));
    } else {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        out.push(Found::Special(p.to_path_buf(), kind));
    }
}

impl Found {
    /// The transfer of what was found; `copy` moves a regular file (and
    /// says its size and hash), `link` makes a symlink.
    pub fn transfer(
        &self,
        host: &str,
        root: &Path,
        shown_root: &str,
        dest_root: &Path,
        copy: impl FnOnce(&Path, &Path) -> std::io::Result<(u64, String)>,
    ) -> Transfer {
        let t0 = Instant::now();
        let path = match self {
            Found::File(p)
            | Found::Link(p, _)
            | Found::LinkOut(p, _)
            | Found::Dangling(p, _)
            | Found::Special(p, _)
            | Found::Unreadable(p, _) => p,
        };
        let rel = path.strip_prefix(root).unwrap_or(path);
        let remote = Path::new(shown_root)
            .join(rel)
            .to_string_lossy()
            .into_owned();
        let local = Path::new("hosts").join(host).join(rel);
        let mut t = Transfer {
            host: host.into(),
            remote,
            local: String::new(),
            bytes: 0,
            sha256: String::new(),
            ms: 0,
            status: "ok".into(),
        };
        let dest = dest_root.join(rel);
        match self {
            Found::File(p) => match copy(p, &dest) {
                Ok((bytes, hash)) => {
                    t.bytes = bytes;
                    t.sha256 = hash;
                    t.local = local.to_string_lossy().into_owned();
                }
                Err(e) => t.status = format!("error: {e}"),
            },
            Found::Link(_, target) => {
                let made = dest
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| match std::fs::symlink_metadata(&dest) {
                        Ok(_) => Ok(()),
                        Err(_) => std::os::unix::fs::symlink(target, &dest),
                    });
                match made {
                    Ok(()) => t.local = local.to_string_lossy().into_owned(),
                    Err(e) => t.status = format!("error: {e}"),
                }
            }
            Found::LinkOut(_, target) => {
                t.status = format!(
                    "skipped: a link out of the run dir (to {})",
                    target.display()
                );
            }
            Found::Dangling(_, target) => {
                t.status = format!("error: a dangling link (to {})", target.display());
            }
            Found::Special(_, kind) => t.status = format!("skipped: {kind}"),
            Found::Unreadable(_, e) => t.status = format!("error: {e}"),
        }
        t.ms = t0.elapsed().as_millis() as u64;
        t
    }
}

/// A symlink was fetched as a symlink; if its target was not fetched too,
/// the data it names is not in the artifact, and a run must not pass on it.
/// Each such transfer (of any transport, any fetch step of the run) becomes
/// an error. Links are checked once every fetch of the run is done.
pub fn check_fetched_links(transfers: &mut [&mut Transfer], run_dir: &Path) {
    for t in transfers.iter_mut() {
        if !t.ok() || t.local.is_empty() {
            continue;
        }
        let local = run_dir.join(&t.local);
        let Ok(meta) = std::fs::symlink_metadata(&local) else {
            continue;
        };
        if meta.file_type().is_symlink() && std::fs::metadata(&local).is_err() {
            let target = std::fs::read_link(&local).unwrap_or_default();
            t.status = format!(
                "error: a link to what was not fetched (to {}); fetch its target too",
                target.display()
            );
        }
    }
}

/// Whether every file `fetch.log` (under `run_dir`) records as fetched is
/// still there with the size and hash it had: what a setup built is only
/// handed on as it was made.
pub fn unchanged_since(run_dir: &Path) -> bool {
    let Ok(log) = std::fs::read_to_string(run_dir.join("fetch.log")) else {
        return false;
    };
    log.lines().skip(1).all(|line| {
        let f: Vec<&str> = line.split('\t').collect();
        let [_, _, local, bytes, sha256, _, status] = f[..] else {
            return false;
        };
        if status != "ok" || sha256.is_empty() {
            // Links carry no hash; anything else did not come home whole.
            return status == "ok";
        }
        hash_file(&run_dir.join(local)).is_ok_and(|(n, h)| n.to_string() == bytes && h == sha256)
    })
}

/// A fetch step's `max_bytes`: what it may bring home.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Per file.
    pub file: Option<u64>,
    /// For all the step's files on one host, in the order found.
    pub total: Option<u64>,
    /// `over_max: truncate`: keep the first bytes; else the fetch fails.
    pub truncate: bool,
}

/// What a fetch does with one file under [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Whole,
    /// The first `n` bytes of a file of `size`.
    Head {
        n: u64,
        size: u64,
    },
    /// Not fetched: `status` says why (an error, or skipped).
    Not(String),
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.file.is_none() && self.total.is_none()
    }

    /// The verdict on each file of `sizes`, in order.
    pub fn decide(&self, sizes: &[u64]) -> Vec<Verdict> {
        let mut used = 0u64;
        let mut out = Vec::with_capacity(sizes.len());
        for &size in sizes {
            let by_file = self.file.unwrap_or(u64::MAX);
            let left = self.total.map_or(u64::MAX, |t| t.saturating_sub(used));
            let cap = by_file.min(left);
            let v = if size <= cap {
                Verdict::Whole
            } else if !self.truncate {
                Verdict::Not(if size > by_file {
                    format!("error: {size} bytes, over the step's max_bytes of {by_file} per file")
                } else {
                    format!(
                        "error: over the step's max_bytes of {} in all ({used} fetched before it)",
                        self.total.unwrap_or_default()
                    )
                })
            } else if cap == 0 {
                Verdict::Not(format!(
                    "skipped: the step's max_bytes of {} in all was reached",
                    self.total.unwrap_or_default()
                ))
            } else {
                Verdict::Head { n: cap, size }
            };
            used = used.saturating_add(match &v {
                Verdict::Whole => size,
                Verdict::Head { n, .. } => *n,
                Verdict::Not(_) => 0,
            });
            out.push(v);
        }
        out
    }
}

/// The status of a file cut to `n` of its `size` bytes.
pub fn truncated_status(n: u64, size: u64) -> String {
    format!("truncated: {size} bytes, the first {n} kept (max_bytes)")
}

/// Copies what `patterns` match under `host_dir` into `run_dir/hosts/<host>/`,
/// within `limits`.
pub fn fetch_local(
    host: &str,
    host_dir: &Path,
    patterns: &[String],
    run_dir: &Path,
    limits: &Limits,
) -> Vec<Transfer> {
    let dest_root = run_dir.join("hosts").join(host);
    let shown = host_dir.to_string_lossy().into_owned();
    // Everything found first, in pattern order, so that limits apply in
    // that order over every file; a pattern that matched nothing keeps
    // its place.
    let mut items: Vec<Result<Found, Transfer>> = Vec::new();
    for pattern in patterns {
        let full = host_dir.join(pattern);
        let matches: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths.flatten().collect(),
            Err(e) => {
                items.push(Err(missing(
                    host,
                    &full,
                    format!("error: bad pattern: {e}"),
                )));
                continue;
            }
        };
        if matches.is_empty() {
            items.push(Err(missing(host, &full, "missing".into())));
            continue;
        }
        for m in matches {
            let mut found = Vec::new();
            walk(host_dir, &m, &mut found);
            items.extend(found.into_iter().map(Ok));
        }
    }
    let sizes: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            Ok(Found::File(p)) => Some(std::fs::symlink_metadata(p).map_or(0, |m| m.len())),
            _ => None,
        })
        .collect();
    let mut verdicts = limits.decide(&sizes).into_iter();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let f = match item {
            Err(t) => {
                out.push(t);
                continue;
            }
            Ok(f) => f,
        };
        let v = match &f {
            Found::File(_) => verdicts.next().unwrap_or(Verdict::Whole),
            _ => Verdict::Whole,
        };
        let t = match v {
            Verdict::Not(status) => {
                let mut t = f.transfer(host, host_dir, &shown, &dest_root, |_, _| {
                    Err(std::io::Error::other("not fetched"))
                });
                t.status = status;
                t
            }
            Verdict::Head { n, size } => {
                let mut t = f.transfer(host, host_dir, &shown, &dest_root, |src, dest| {
                    copy_hashing_capped(src, Some(dest), Some(n))
                });
                if t.ok() {
                    t.status = truncated_status(n, size);
                }
                t
            }
            Verdict::Whole => f.transfer(host, host_dir, &shown, &dest_root, copy_hashing),
        };
        out.push(t);
    }
    out
}

fn missing(host: &str, remote: &Path, status: String) -> Transfer {
    Transfer {
        host: host.into(),
        remote: remote.to_string_lossy().into_owned(),
        local: String::new(),
        bytes: 0,
        sha256: String::new(),
        ms: 0,
        status,
    }
}

/// Opens a file that must be a regular file, without following a link and
/// without blocking (a FIFO put in its place would), and checks what was
/// opened: what a walk found may have been replaced since.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW).bits())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Size and SHA-256 of a regular file (see [`open_regular`]).
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    copy_hashing_to(path, None)
}

/// Copies a regular file (see [`open_regular`]), hashing it.
fn copy_hashing(src: &Path, dest: &Path) -> std::io::Result<(u64, String)> {
    copy_hashing_to(src, Some(dest))
}

fn copy_hashing_to(src: &Path, dest: Option<&Path>) -> std::io::Result<(u64, String)> {
    copy_hashing_capped(src, dest, None)
}

/// Copies (and hashes) at most `cap` bytes of `src`.
pub fn copy_hashing_capped(
    src: &Path,
    dest: Option<&Path>,
    cap: Option<u64>,
) -> std::io::Result<(u64, String)> {
    let input = open_regular(src)?;
    let meta = input.metadata();
    let mut input = input.take(cap.unwrap_or(u64::MAX));
    let mut output = match dest {
        Some(dest) => {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Some(std::fs::File::create(dest)?)
        }
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = &mut output {
            out.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    if let Some(out) = output {
        // The mode comes along, as rsync keeps it on remote hosts: a
        // fetched program stays runnable.
        if let Ok(meta) = &meta {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            let _ = out.set_permissions(std::fs::Permissions::from_mode(mode | 0o200));
        }
        out.sync_all()?;
    }
    Ok((total, hex(&hasher.finalize())))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Copies a file or folder (recursively) to `dest`; used to push a workload's
/// `files` into a local host's run dir.
pub fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dest)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src, dest).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cut_refuse_or_skip_in_order() {
        let whole = Verdict::Whole;
        let none = Limits::default();
        assert_eq!(
            none.decide(&[10, 1 << 40]),
            vec![whole.clone(), whole.clone()]
        );
        let cut = Limits {
            file: Some(100),
            total: Some(150),
            truncate: true,
        };
        assert_eq!(
            cut.decide(&[50, 500, 10, 7]),
            vec![
                whole.clone(),
                Verdict::Head { n: 100, size: 500 },
                Verdict::Not("skipped: the step's max_bytes of 150 in all was reached".into()),
                Verdict::Not("skipped: the step's max_bytes of 150 in all was reached".into()),
            ]
        );
        let strict = Limits {
            file: Some(100),
            total: Some(150),
            truncate: false,
        };
        let v = strict.decide(&[50, 500, 90, 11]);
        assert_eq!(v[0], whole);
        assert!(
            matches!(&v[1], Verdict::Not(s) if s.contains("500 bytes, over the step's max_bytes of 100 per file"))
        );
        // 50 + 90 is over 150 only with the refused file counted: it is not.
        assert_eq!(v[2], whole);
        assert!(matches!(&v[3], Verdict::Not(s) if s.contains("in all (140 fetched before it)")));
    }

    #[test]
    fn fetch_copies_hashes_and_records_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host_dir = dir.path().join("work");
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(host_dir.join("out")).expect("mkdir");
        std::fs::write(host_dir.join("a.csv"), "abc").expect("write");
        std::fs::write(host_dir.join("out/b.txt"), "").expect("write");
        let t = fetch_local(
            "w1",
            &host_dir,
            &["*.csv".into(), "out".into(), "nope.txt".into()],
            &run_dir,
            &Limits::default(),
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].local, "hosts/w1/a.csv");
        assert_eq!(t[0].bytes, 3);
        assert_eq!(
            t[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            std::fs::read(run_dir.join("hosts/w1/a.csv")).expect("read"),
            b"abc"
        );
        assert_eq!(t[1].local, "hosts/w1/out/b.txt");
        assert!(t[1].ok());
        assert_eq!(t[2].status, "missing");
        assert!(t[2].line().ends_with("\tmissing\n"));
    }
}
