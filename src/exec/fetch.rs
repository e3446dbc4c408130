//! Fetch steps on local hosts: copy the globbed paths from the host's run dir
//! into `runs/<id>/hosts/<host>/`, hashing while copying, and describe every
//! file in `fetch.log`. A pattern that matches nothing is recorded, not fatal.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// The header of `fetch.log` (tab-separated).
pub const FETCH_LOG_HEADER: &str = "host\tremote_path\tlocal_path\tbytes\tsha256\tms\tstatus\n";

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

impl Transfer {
    pub fn ok(&self) -> bool {
        self.status == "ok"
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

/// Copies what `patterns` match under `host_dir` into `run_dir/hosts/<host>/`.
pub fn fetch_local(
    host: &str,
    host_dir: &Path,
    patterns: &[String],
    run_dir: &Path,
) -> Vec<Transfer> {
    let dest_root = run_dir.join("hosts").join(host);
    let mut out = Vec::new();
    for pattern in patterns {
        let full = host_dir.join(pattern);
        let matches: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => paths.flatten().collect(),
            Err(e) => {
                out.push(missing(host, &full, format!("error: bad pattern: {e}")));
                continue;
            }
        };
        if matches.is_empty() {
            out.push(missing(host, &full, "missing".into()));
            continue;
        }
        for m in matches {
            let mut files = Vec::new();
            collect_files(&m, &mut files);
            for f in files {
                let rel = f.strip_prefix(host_dir).unwrap_or(&f);
                let dest = dest_root.join(rel);
                let local = Path::new("hosts").join(host).join(rel);
                out.push(copy_one(host, &f, &dest, &local));
            }
        }
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

/// Files under `p` (itself when it is a file), sorted.
fn collect_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let Ok(rd) = std::fs::read_dir(p) else {
            out.push(p.to_path_buf());
            return;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            collect_files(&e, out);
        }
    } else {
        out.push(p.to_path_buf());
    }
}

fn copy_one(host: &str, src: &Path, dest: &Path, local: &Path) -> Transfer {
    let t0 = Instant::now();
    let mut t = Transfer {
        host: host.into(),
        remote: src.to_string_lossy().into_owned(),
        local: local.to_string_lossy().into_owned(),
        bytes: 0,
        sha256: String::new(),
        ms: 0,
        status: "ok".into(),
    };
    match copy_hashing(src, dest) {
        Ok((bytes, hash)) => {
            t.bytes = bytes;
            t.sha256 = hash;
        }
        Err(e) => t.status = format!("error: {e}"),
    }
    t.ms = t0.elapsed().as_millis() as u64;
    t
}

fn copy_hashing(src: &Path, dest: &Path) -> std::io::Result<(u64, String)> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut input = std::fs::File::open(src)?;
    let mut output = std::fs::File::create(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        total += n as u64;
    }
    output.sync_all()?;
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
