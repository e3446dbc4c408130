//! The hosts of an invocation as one thing to run commands on: local hosts
//! through `sh -c`, remote ones over their ssh master. Also what `flow hosts
//! check` asks of each host, and clock-offset probes.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::clock::{ClockOffset, Probe, Stamp, best_offset};
use crate::exec::ssh::{Output, Ssh, SshError, Target};
use crate::suite::Inventory;

/// Probes per clock-offset measurement.
pub const OFFSET_PROBES: usize = 8;

pub struct Hosts {
    ssh: Arc<Ssh>,
    local: HashSet<String>,
}

impl Hosts {
    /// Prepares connections (none opened yet) to the named hosts.
    pub fn new(inventory: &Inventory, names: &[String]) -> std::io::Result<Hosts> {
        let mut local = HashSet::new();
        let mut targets = Vec::new();
        for name in names {
            let Some(h) = inventory.host(name) else {
                continue;
            };
            if h.is_local() {
                local.insert(name.clone());
            } else {
                targets.push(Target::of(h, inventory));
            }
        }
        Ok(Hosts {
            ssh: Arc::new(Ssh::new(targets)?),
            local,
        })
    }

    pub fn is_local(&self, host: &str) -> bool {
        self.local.contains(host)
    }

    pub fn ssh(&self) -> &Arc<Ssh> {
        &self.ssh
    }

    /// Opens the host's connection; zero for local hosts.
    pub async fn connect(&self, host: &str) -> Result<std::time::Duration, SshError> {
        if self.is_local(host) {
            return Ok(std::time::Duration::ZERO);
        }
        self.ssh.connect(host).await
    }

    /// Runs a shell command line on the host.
    pub async fn run(&self, host: &str, command: &str) -> Result<Output, SshError> {
        if !self.is_local(host) {
            return self.ssh.run(host, command, None).await;
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| SshError::Spawn {
                host: host.to_string(),
                message: e.to_string(),
            })?;
        use std::os::unix::process::ExitStatusExt;
        let code = out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok(Output {
            code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// The host's wall clock against the controller's; `None` for local
    /// hosts (same clock).
    pub async fn clock_offset(&self, host: &str) -> Result<Option<ClockOffset>, SshError> {
        if self.is_local(host) {
            return Ok(None);
        }
        // One channel answering a line per request: each probe's round trip
        // is a message over an open connection, not a new session.
        let mut child = self
            .ssh
            .spawn(host, "while read -r _; do date +%s%N; done")
            .await?;
        let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Ok(None);
        };
        let mut lines = BufReader::new(output).lines();
        let mut probes = Vec::with_capacity(OFFSET_PROBES);
        for _ in 0..OFFSET_PROBES {
            let before = Stamp::now().wall_ns;
            if input.write_all(b"\n").await.is_err() {
                break;
            }
            let Ok(Some(line)) = lines.next_line().await else {
                break;
            };
            let after = Stamp::now().wall_ns;
            if let Ok(remote) = line.trim().parse::<u64>() {
                probes.push(Probe {
                    before_ns: before,
                    remote_ns: remote,
                    after_ns: after,
                });
            }
        }
        drop(input);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
        Ok(best_offset(&probes))
    }

    pub async fn close(&self) {
        self.ssh.close().await;
    }
}

/// What `flow hosts check` learns about a host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Facts {
    pub kernel: String,
    pub python3: bool,
    pub rsync: bool,
    pub setsid: bool,
    pub sudo: bool,
}

/// One command line that reports the facts, a `key=value` per line.
pub const FACTS_SCRIPT: &str = "echo kernel=$(uname -sr); \
    for t in python3 rsync setsid; do \
      if command -v $t >/dev/null 2>&1; then echo $t=yes; else echo $t=no; fi; \
    done; \
    if sudo -n true >/dev/null 2>&1; then echo sudo=yes; else echo sudo=no; fi";

pub fn parse_facts(text: &str) -> Facts {
    let mut f = Facts::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let yes = v.trim() == "yes";
        match k.trim() {
            "kernel" => f.kernel = v.trim().to_string(),
            "python3" => f.python3 = yes,
            "rsync" => f.rsync = yes,
            "setsid" => f.setsid = yes,
            "sudo" => f.sudo = yes,
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_parse_and_the_script_runs_here() {
        let f = parse_facts("kernel=Linux 6.1.0\npython3=yes\nrsync=no\nsetsid=yes\nsudo=no\n");
        assert_eq!(f.kernel, "Linux 6.1.0");
        assert!(f.python3 && f.setsid && !f.rsync && !f.sudo);
        let out = std::process::Command::new("sh")
            .args(["-c", FACTS_SCRIPT])
            .output()
            .expect("sh");
        let here = parse_facts(&String::from_utf8_lossy(&out.stdout));
        assert!(!here.kernel.is_empty());
        assert!(here.setsid, "setsid is part of util-linux");
    }
}
