//! Readiness probes of services, run on the host itself: a regex over the
//! service's output from its first byte, a TCP port that accepts, or a
//! command that exits 0.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::bytes::Regex;

use super::process::{self, Exit, Spec};
use crate::plan::{ReadyPlan, RunCommand};

/// A probe with its state between tries.
pub enum Probe {
    Log(LogProbe),
    Port(u16),
    Cmd {
        cmd: RunCommand,
        cwd: PathBuf,
        env: Vec<(String, String)>,
        log: PathBuf,
    },
}

impl Probe {
    /// Builds the probe of a service; `out` and `err` are its output files,
    /// `log` where a `cmd` probe's output goes.
    pub fn new(
        plan: &ReadyPlan,
        out: &Path,
        err: &Path,
        cwd: &Path,
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Probe, String> {
        if let Some(pattern) = &plan.log {
            let re = Regex::new(pattern).map_err(|e| format!("bad `ready.log` regex: {e}"))?;
            return Ok(Probe::Log(LogProbe::new(re, vec![out.into(), err.into()])));
        }
        if let Some(port) = plan.port {
            return Ok(Probe::Port(port));
        }
        if let Some(cmd) = &plan.cmd {
            return Ok(Probe::Cmd {
                cmd: RunCommand::Shell(cmd.clone()),
                cwd: cwd.into(),
                env: env.to_vec(),
                log,
            });
        }
        Err("`ready` has no probe".into())
    }

    /// One try: whether the service is ready now.
    /// (`port`: something accepts on 127.0.0.1 or ::1.)
    pub async fn check(&mut self, interval: Duration) -> bool {
        match self {
            Probe::Log(p) => p.check(),
            Probe::Port(port) => {
                // A server may listen on IPv4, IPv6 or both.
                let limit = interval.max(Duration::from_millis(100));
                for addr in [
                    std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, *port)),
                ] {
                    let attempt = tokio::net::TcpStream::connect(addr);
                    if let Ok(Ok(_)) = tokio::time::timeout(limit, attempt).await {
                        return true;
                    }
                }
                false
            }
            Probe::Cmd { cmd, cwd, env, log } => {
                let spec = Spec {
                    run: cmd,
                    cwd,
                    env: env.clone(),
                    stdout: log,
                    stderr: log,
                };
                let Ok(mut p) = process::spawn(&spec) else {
                    return false;
                };
                // A probe gets at least a second, and at most its interval
                // when that is longer.
                let limit = interval.max(Duration::from_secs(1));
                match tokio::time::timeout(limit, process::wait(&mut p)).await {
                    Ok(Ok(Exit::Code(0))) => {
                        process::sweep_group(p.pid);
                        true
                    }
                    Ok(_) => {
                        process::sweep_group(p.pid);
                        false
                    }
                    Err(_) => {
                        process::signal_group(p.pid, nix::sys::signal::Signal::SIGKILL);
                        let _ = process::wait(&mut p).await;
                        false
                    }
                }
            }
        }
    }

    /// For messages: `log /Worker ready/`, `port 8080`, `cmd "…"`.
    pub fn describe(&self) -> String {
        match self {
            Probe::Log(p) => format!("log /{}/", p.matcher.pattern()),
            Probe::Port(p) => format!("port {p}"),
            Probe::Cmd { cmd, .. } => format!("cmd `{}`", cmd.display()),
        }
    }
}

/// Matches a regex line by line over streams that grow, whatever host the
/// bytes come from: every transport feeds it the bytes a service wrote, so a
/// `ready.log` pattern means the same (Rust's regex syntax) everywhere.
pub struct LineMatcher {
    re: Regex,
    /// Per stream, the unfinished last line.
    pending: Vec<Vec<u8>>,
}

impl LineMatcher {
    pub fn new(re: Regex, streams: usize) -> LineMatcher {
        LineMatcher {
            re,
            pending: vec![Vec::new(); streams],
        }
    }

    /// Feeds what `stream` gained; true once a line (or the unfinished last
    /// line: a prompt may never end its line) matches.
    pub fn feed(&mut self, stream: usize, bytes: &[u8]) -> bool {
        let Some(pending) = self.pending.get_mut(stream) else {
            return false;
        };
        pending.extend_from_slice(bytes);
        // Complete lines are matched and dropped; the unfinished tail is
        // kept and matched again with what follows.
        let keep_from = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if pending
            .split(|&b| b == b'\n')
            .any(|line| self.re.is_match(line))
        {
            return true;
        }
        pending.drain(..keep_from);
        false
    }

    pub fn pattern(&self) -> &str {
        self.re.as_str()
    }
}

/// A [`LineMatcher`] over local files, reading each byte once.
pub struct LogProbe {
    matcher: LineMatcher,
    files: Vec<(PathBuf, u64)>,
}

impl LogProbe {
    pub fn new(re: Regex, paths: Vec<PathBuf>) -> LogProbe {
        LogProbe {
            matcher: LineMatcher::new(re, paths.len()),
            files: paths.into_iter().map(|p| (p, 0)).collect(),
        }
    }

    /// Reads what was appended since the last call; true once a line (or the
    /// unfinished last line) matches.
    pub fn check(&mut self) -> bool {
        for (i, (path, offset)) in self.files.iter_mut().enumerate() {
            let Ok(mut f) = std::fs::File::open(&*path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_err() {
                continue;
            }
            *offset += buf.len() as u64;
            if self.matcher.feed(i, &buf) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn log_probe_reads_lines_as_they_arrive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("s.out");
        let err = dir.path().join("s.err");
        let mut p = LogProbe::new(
            Regex::new("ready on port [0-9]+").expect("regex"),
            vec![out.clone(), err.clone()],
        );
        assert!(!p.check(), "no files yet");
        let mut f = std::fs::File::create(&out).expect("create");
        f.write_all(b"starting\nready on po").expect("write");
        assert!(!p.check());
        f.write_all(b"rt 80").expect("write");
        assert!(p.check(), "an unfinished line matches too");
    }

    #[test]
    fn log_probe_sees_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("s.out");
        let err = dir.path().join("s.err");
        std::fs::write(&out, "nothing\n").expect("write");
        std::fs::write(&err, "listening\n").expect("write");
        let mut p = LogProbe::new(Regex::new("^listening$").expect("regex"), vec![out, err]);
        assert!(p.check());
    }
}
