//! Creating an artifact folder and writing files into it atomically
//! (temp file + rename), so a crash never leaves half a JSON file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `artifacts/<artifact-id>/`.
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    pub id: String,
    pub path: PathBuf,
}

/// `20261122T213000Z`, UTC, from the system clock.
pub fn utc_timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A new artifact id: `<utc timestamp>-<suite>`.
pub fn new_artifact_id(suite: &str, now: SystemTime) -> String {
    format!("{}-{suite}", utc_timestamp(now))
}

impl ArtifactDir {
    /// Creates `root/<id>/` (with a numeric suffix if that id is taken) and
    /// points `root/latest` at it.
    pub fn create(root: &Path, suite: &str) -> std::io::Result<ArtifactDir> {
        std::fs::create_dir_all(root)?;
        let base = new_artifact_id(suite, SystemTime::now());
        for n in 1..1000 {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let path = root.join(&id);
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::create_dir_all(path.join("runs"))?;
                    let dir = ArtifactDir { id, path };
                    dir.point_latest(root)?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("could not find a free artifact id"))
    }

    /// The folder `root/<id>/` for an artifact made elsewhere (a copy of
    /// one on a controller host); `root/latest` points at it.
    pub fn adopt(root: &Path, id: &str) -> std::io::Result<ArtifactDir> {
        let path = root.join(id);
        std::fs::create_dir_all(path.join("runs"))?;
        let dir = ArtifactDir {
            id: id.to_string(),
            path,
        };
        dir.point_latest(root)?;
        Ok(dir)
    }

    fn point_latest(&self, root: &Path) -> std::io::Result<()> {
        let tmp = root.join(format!(".latest.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.id, &tmp)?;
        std::fs::rename(&tmp, root.join("latest"))
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.path.join("runs").join(run_id)
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder,
/// fsync'd, then renamed over the target.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, true)
}

/// Like [`atomic_write`] without the fsync: for files rewritten as a run
/// goes (readers never see half a file, and the final version is synced).
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = match std::fs::File::create(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::File::create(&tmp)?
        }
        Err(e) => return Err(e),
    };
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_civil_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_383_000);
        assert_eq!(utc_timestamp(t), "20261122T213000Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101T000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "20000229T000000Z");
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a/b.json");
        atomic_write(&p, b"one").expect("write");
        atomic_write(&p, b"two").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path().join("a")).expect("ls").count(),
            1
        );
    }

    #[test]
    fn ids_do_not_collide_and_latest_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ArtifactDir::create(dir.path(), "s").expect("a");
        let b = ArtifactDir::create(dir.path(), "s").expect("b");
        assert_ne!(a.id, b.id);
        let latest = std::fs::read_link(dir.path().join("latest")).expect("link");
        assert_eq!(latest, PathBuf::from(&b.id));
    }
}
