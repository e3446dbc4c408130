//! Remote hosts through the system OpenSSH client, so `~/.ssh/config`,
//! agents, ProxyJump and every key type work as they do in a terminal.
//!
//! One ControlMaster connection per host per invocation, held as a child of
//! flow in its own process group (a terminal's Ctrl-C must not cut it before
//! teardown), with its socket in a short private temp dir: Unix socket paths
//! are limited to about 104 bytes, and `~/.ssh/…/%C`-style paths under a long
//! home run out. Commands multiplex over the master, at most
//! [`CHANNELS_PER_HOST`] at once per host, and are retried with backoff when
//! ssh itself fails (exit 255), never when the command does.
//!
//! A host of a Slurm allocation with `transport: srun` is reached the same
//! way through `srun --nodelist=NODE -N1 -n1 --overlap` instead: no master
//! (Slurm's daemons carry the bytes), each command a job step of the
//! allocation flow runs in. srun returns the task's exit status and says
//! nothing of its own failures in it, so the command is wrapped to report
//! its status on stderr's last line: one without it was never run.
//!
//! A master that dies (the host rebooted, its link went down and
//! `ServerAlive` gave up) is reopened once by the next command. When that
//! fails too the host is lost: every command fails at once with the same
//! error for [`RECONNECT_AFTER`], so a run's teardown (stop, logs, fetch,
//! clocks, sweep) does not wait out a connect timeout per call, and a later
//! run tries the host again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, Semaphore};

use crate::suite::{Host, Inventory};

/// Commands in flight per host (sshd's `MaxSessions` defaults to 10).
pub const CHANNELS_PER_HOST: usize = 8;
/// Masters being opened at once.
pub const PARALLEL_CONNECTS: usize = 16;
/// ssh's own failures (exit 255) are retried this many times.
const RETRIES: u32 = 3;
const CONNECT_TIMEOUT_S: u32 = 10;
/// A lost host is not tried again for this long.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(30);

/// The state of a host's master connection.
enum Master {
    Unopened,
    Up(Child),
    /// The last attempt to open it failed at `at`.
    Down {
        error: SshError,
        at: Instant,
    },
}

/// How to reach one host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub name: String,
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// ProxyJump spec: `[user@]host[:port]` or an ssh config name.
    pub jump: Option<String>,
    pub identity: Option<PathBuf>,
    pub options: Vec<(String, String)>,
    pub config: Option<PathBuf>,
    /// Reached as a job step on this Slurm node (`transport: srun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srun_node: Option<String>,
}

impl Target {
    /// From an inventory host; a `jump` naming another inventory host becomes
    /// that host's `user@address:port`.
    pub fn of(host: &Host, inventory: &Inventory) -> Target {
        let jump = host.jump.as_ref().map(|j| match inventory.host(j) {
            Some(h) if !h.is_local() => {
                let mut s = String::new();
                if let Some(u) = &h.user {
                    s.push_str(u);
                    s.push('@');
                }
                s.push_str(&h.address);
                if let Some(p) = h.port {
                    s.push_str(&format!(":{p}"));
                }
                s
            }
            _ => j.clone(),
        });
        Target {
            name: host.name.clone(),
            address: host.address.clone(),
            user: host.user.clone(),
            port: host.port,
            jump,
            identity: host
                .identity
                .as_deref()
                .map(super::host::local::expand_home),
            options: host
                .ssh_options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            config: host.ssh_config.clone(),
            srun_node: (host.transport == crate::suite::Transport::Srun).then(|| host.name.clone()),
        }
    }
}

/// What went wrong talking to a host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to host `{host}`: {stderr}")]
    Connect { host: String, stderr: String },
    #[error("lost the connection to host `{host}`: {stderr}")]
    Lost { host: String, stderr: String },
    #[error("cannot run ssh or srun for host `{host}`: {message}")]
    Spawn { host: String, message: String },
    #[error("host `{host}` is not in the inventory")]
    Unknown { host: String },
}

/// A finished remote command.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command's exit code (never ssh's 255: that is an error).
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

struct Conn {
    target: Target,
    socket: PathBuf,
    channels: Semaphore,
    master: Mutex<Master>,
}

/// The connections of one invocation.
pub struct Ssh {
    dir: PathBuf,
    conns: HashMap<String, Arc<Conn>>,
    connects: Semaphore,
}

impl Ssh {
    /// Sets up (without connecting) one connection per target.
    pub fn new(targets: Vec<Target>) -> std::io::Result<Ssh> {
        let dir = private_dir()?;
        let conns = targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let conn = Conn {
                    socket: dir.join(format!("{i}")),
                    target: t,
                    channels: Semaphore::new(CHANNELS_PER_HOST),
                    master: Mutex::new(Master::Unopened),
                };
                (conn.target.name.clone(), Arc::new(conn))
            })
            .collect();
        Ok(Ssh {
            dir,
            conns,
            connects: Semaphore::new(PARALLEL_CONNECTS),
        })
    }

    fn conn(&self, host: &str) -> Result<&Arc<Conn>, SshError> {
        self.conns.get(host).ok_or_else(|| SshError::Unknown {
            host: host.to_string(),
        })
    }

    /// Makes sure the host's master connection is up: opens it the first
    /// time, reopens it when it has died, and fails at once while the host
    /// is lost (see the module's notes). Returns how long opening took.
    pub async fn connect(&self, host: &str) -> Result<Duration, SshError> {
        let conn = self.conn(host)?;
        if conn.target.srun_node.is_some() {
            return Ok(Duration::ZERO);
        }
        let mut master = conn.master.lock().await;
        let reopening = match &mut *master {
            Master::Up(child) => match child.try_wait() {
                Ok(None) => return Ok(Duration::ZERO),
                _ => true,
            },
            Master::Down { error, at } if at.elapsed() < RECONNECT_AFTER => {
                return Err(error.clone());
            }
            Master::Down { .. } => true,
            Master::Unopened => false,
        };
        if reopening {
            tracing::debug!(host, "reopening the master connection");
            let _ = std::fs::remove_file(&conn.socket);
        }
        let _permit = self.connects.acquire().await;
        let t0 = Instant::now();
        match open_master(conn).await {
            Ok(child) => {
                *master = Master::Up(child);
                Ok(t0.elapsed())
            }
            Err(e) => {
                // A host that was up and is gone is lost, in ssh's words.
                let error = match (reopening, e) {
                    (true, SshError::Connect { host, stderr }) => SshError::Lost { host, stderr },
                    (_, e) => e,
                };
                *master = Master::Down {
                    error: error.clone(),
                    at: Instant::now(),
                };
                Err(error)
            }
        }
    }

    /// Runs `command` (a shell command line for the remote user's shell) on
    /// `host` over its master, feeding `stdin`. Retries ssh's own failures.
    pub async fn run(
        &self,
        host: &str,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, SshError> {
        self.run_within(host, command, stdin, None).await
    }

    /// [`Ssh::run`] for a command that answers within `limit`. One that
    /// does not is taken for a dead connection, which ssh may not notice
    /// for a long while (a host whose link went down sends nothing, not
    /// even a reset): the master is killed and the command retried over a
    /// new one, which fails quickly if the host is really gone.
    pub async fn run_within(
        &self,
        host: &str,
        command: &str,
        stdin: Option<&[u8]>,
        limit: Option<Duration>,
    ) -> Result<Output, SshError> {
        let conn = self.conn(host)?;
        let _channel = conn.channels.acquire().await;
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            // Over a live master only: with its socket gone, ssh would
            // quietly open a connection of its own.
            self.connect(host).await?;
            let srun = conn.target.srun_node.is_some();
            let mut cmd = if srun {
                // In a subshell: an `exit` in the command ends only that.
                let wrapped = format!("(\n{command}\n); echo \"{SRUN_EXIT}$?\" >&2");
                srun_command(&conn.target, &wrapped)
            } else {
                self.ssh_command(conn, command)
            };
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
            let began = Instant::now();
            let mut child = cmd.spawn().map_err(|e| SshError::Spawn {
                host: host.to_string(),
                message: e.to_string(),
            })?;
            if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
                let _ = pipe.write_all(data).await;
                drop(pipe);
            }
            let waited = match limit {
                Some(l) => tokio::time::timeout(l, child.wait_with_output()).await,
                None => Ok(child.wait_with_output().await),
            };
            let Ok(out) = waited else {
                // The client is killed as it is dropped; the master next.
                last = format!(
                    "no answer within {}s; the connection is taken for dead",
                    limit.map_or(0, |l| l.as_secs())
                );
                tracing::debug!(host, attempt, "{last}");
                if let Master::Up(m) = &mut *conn.master.lock().await {
                    let _ = m.start_kill();
                }
                continue;
            };
            let out = out.map_err(|e| SshError::Spawn {
                host: host.to_string(),
                message: e.to_string(),
            })?;
            // `FLOW_LOG=flow::exec::ssh=trace`: every command and its time.
            tracing::trace!(
                host,
                ms = began.elapsed().as_millis() as u64,
                "{}",
                command.chars().take(120).collect::<String>()
            );
            if srun {
                match srun_exit(&out.stderr) {
                    Some((code, stderr)) => {
                        return Ok(Output {
                            code,
                            stdout: out.stdout,
                            stderr,
                        });
                    }
                    None => {
                        last = clean_srun_stderr(&out.stderr);
                        tracing::debug!(host, attempt, "srun failed: {last}");
                        continue;
                    }
                }
            }
            match out.status.code() {
                Some(255) => {
                    last = clean_stderr(&out.stderr);
                    tracing::debug!(host, attempt, "ssh failed: {last}");
                }
                code => {
                    return Ok(Output {
                        code: code.unwrap_or(-1),
                        stdout: out.stdout,
                        stderr: out.stderr,
                    });
                }
            }
        }
        Err(SshError::Lost {
            host: host.to_string(),
            stderr: last,
        })
    }

    /// Starts `command` on `host` over its master with stdin and stdout
    /// piped, for a conversation (clock probes). Holds one of the host's
    /// channels until the returned child ends.
    pub async fn spawn(&self, host: &str, command: &str) -> Result<Child, SshError> {
        self.connect(host).await?;
        let conn = self.conn(host)?;
        let mut cmd = match conn.target.srun_node {
            Some(_) => srun_command(&conn.target, command),
            None => self.ssh_command(conn, command),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SshError::Spawn {
                host: host.to_string(),
                message: e.to_string(),
            })
    }

    /// `ssh` over `conn`'s master, running `command`.
    fn ssh_command(&self, conn: &Conn, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(base_args(&conn.target))
            .arg("-S")
            .arg(&conn.socket)
            .args(["-o", "ControlMaster=no"])
            .arg(&conn.target.address)
            .arg("--")
            .arg(command);
        cmd
    }

    /// Whether `host` is reached with srun (files then move with tar).
    pub fn is_srun(&self, host: &str) -> bool {
        self.conns
            .get(host)
            .is_some_and(|c| c.target.srun_node.is_some())
    }

    /// The destination ssh is given for `host` (its inventory address).
    pub fn address(&self, host: &str) -> Option<String> {
        self.conns.get(host).map(|c| c.target.address.clone())
    }

    /// The `ssh` arguments that reach `host` over its master, for tools that
    /// take an ssh command (`rsync -e`).
    pub fn command_for(&self, host: &str) -> Result<Vec<String>, SshError> {
        let conn = self.conn(host)?;
        let mut v = vec!["ssh".to_string()];
        v.extend(base_args(&conn.target));
        v.push("-S".into());
        v.push(conn.socket.display().to_string());
        v.extend(["-o".into(), "ControlMaster=no".into()]);
        Ok(v)
    }

    /// Closes every master.
    pub async fn close(&self) {
        for conn in self.conns.values() {
            let mut master = conn.master.lock().await;
            if let Master::Up(mut child) = std::mem::replace(&mut *master, Master::Unopened) {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    super::process::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a command run through srun prints last on stderr: its exit status.
const SRUN_EXIT: &str = "flow-srun-exit ";

/// `srun` running `command` (a shell command line) as one task on the
/// target's node, sharing the allocation's resources with the other steps.
fn srun_command(t: &Target, command: &str) -> Command {
    let mut cmd = Command::new("srun");
    cmd.arg(format!(
        "--nodelist={}",
        t.srun_node.as_deref().unwrap_or(&t.name)
    ))
    .args([
        "-N1",
        "-n1",
        "--overlap",
        "--quiet",
        "--job-name=flow",
        "--",
        "sh",
        "-c",
    ])
    .arg(command);
    cmd
}

/// The exit status a command run by [`srun_command`] reported as the last
/// line of its stderr, and the stderr before it; `None` when it did not
/// report one (srun could not run it).
fn srun_exit(stderr: &[u8]) -> Option<(i32, Vec<u8>)> {
    let body = stderr.strip_suffix(b"\n").unwrap_or(stderr);
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = std::str::from_utf8(&body[start..]).ok()?;
    let code = last.strip_prefix(SRUN_EXIT)?.trim().parse().ok()?;
    let mut rest = stderr[..start].to_vec();
    // srun's own notes about the task (never the command's words).
    if let Ok(text) = std::str::from_utf8(&rest) {
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("srun: "))
            .collect();
        rest = kept.into_bytes();
    }
    Some((code, rest))
}

/// srun's stderr as one line.
fn clean_srun_stderr(err: &[u8]) -> String {
    one_line(&String::from_utf8_lossy(err))
        .unwrap_or_else(|| "srun ended without running the command and said nothing".into())
}

/// A program's words as one line: its non-empty lines, trimmed, joined by
/// `; `; `None` when it said nothing.
pub fn one_line(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// `-F`, `-p`, `-l`, `-i`, `-J` and the options every connection gets.
/// `ssh` and the options that reach `t`, without a master (the
/// destination is `t.address`, given after): for one-off commands and
/// `rsync -e`.
pub fn plain_command(t: &Target) -> Vec<String> {
    let mut v = vec!["ssh".to_string()];
    v.extend(base_args(t));
    v
}

fn base_args(t: &Target) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if let Some(c) = &t.config {
        a.extend(["-F".into(), c.display().to_string()]);
    }
    if let Some(p) = t.port {
        a.extend(["-p".into(), p.to_string()]);
    }
    if let Some(u) = &t.user {
        a.extend(["-l".into(), u.clone()]);
    }
    if let Some(i) = &t.identity {
        a.extend(["-i".into(), i.display().to_string()]);
    }
    if let Some(j) = &t.jump {
        a.extend(["-J".into(), j.clone()]);
    }
    for o in [
        "BatchMode=yes".to_string(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
        "ServerAliveInterval=5".into(),
        "ServerAliveCountMax=3".into(),
    ] {
        a.extend(["-o".into(), o]);
    }
    for (k, v) in &t.options {
        a.extend(["-o".into(), format!("{k}={v}")]);
    }
    a
}

/// The master ends when flow does, however flow ends (`kill -9` included):
/// the kernel sends it SIGTERM when the thread that started it exits (flow
/// starts masters from its runtime's one thread, which lives as long as
/// flow). A flow that died between the fork and this call is caught by
/// comparing the parent's pid.
fn tie_to_this_process(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes two system calls and builds errors from raw codes, which neither
    // allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

async fn open_master(conn: &Conn) -> Result<Child, SshError> {
    let host = conn.target.name.clone();
    let mut cmd = Command::new("ssh");
    cmd.args(base_args(&conn.target))
        .args([
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
            "-N",
            "-S",
        ])
        .arg(&conn.socket)
        .arg(&conn.target.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    tie_to_this_process(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| SshError::Spawn {
        host: host.clone(),
        message: e.to_string(),
    })?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(CONNECT_TIMEOUT_S) * 3);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let mut err = Vec::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_end(&mut err).await;
            }
            return Err(SshError::Connect {
                host,
                stderr: clean_stderr(&err),
            });
        }
        // The master creates its socket once it is authenticated; a stat is
        // cheap, an `ssh -O check` is a process, so check once it is there.
        if conn.socket.exists() && check(conn).await {
            // Nothing more is read from its stderr; do not let a full pipe
            // ever block it.
            drop(child.stderr.take());
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(SshError::Connect {
                host,
                stderr: "timed out waiting for the connection".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn check(conn: &Conn) -> bool {
    Command::new("ssh")
        .args(base_args(&conn.target))
        .arg("-S")
        .arg(&conn.socket)
        .args(["-O", "check"])
        .arg(&conn.target.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// ssh's stderr as one line, without the noise of warnings about known hosts.
pub fn clean_stderr(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    if lines.is_empty() {
        "ssh exited with 255 and said nothing".into()
    } else {
        lines.join("; ")
    }
}

/// `/tmp/flow-<pid>-<n>`, mode 0700: short enough for socket paths. Such
/// folders of flows that are gone (`kill -9` leaves them) are removed first.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = Path::new("/tmp");
    remove_stale_private_dirs(base);
    for n in 0..100 {
        let dir = base.join(format!("flow-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "no free private directory under /tmp",
    ))
}

/// Removes `flow-<pid>-<n>` folders under `base` that this user owns and
/// whose flow no longer runs (no process with that pid at all: a pid that
/// was reused is left alone).
fn remove_stale_private_dirs(base: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to this process's user.
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("flow-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let ours = std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Quotes a word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    crate::plan::template::shell_quote(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_carry_every_inventory_field() {
        let t = Target {
            name: "b".into(),
            address: "10.0.0.2".into(),
            user: Some("jc".into()),
            port: Some(2222),
            jump: Some("jc@ares:22".into()),
            identity: Some(PathBuf::from("/k/id")),
            options: vec![("Compression".into(), "yes".into())],
            config: Some(PathBuf::from("/c/ssh_config")),
            srun_node: None,
        };
        let a = base_args(&t).join(" ");
        assert!(
            a.starts_with("-F /c/ssh_config -p 2222 -l jc -i /k/id -J jc@ares:22 -o BatchMode=yes"),
            "{a}"
        );
        assert!(a.ends_with("-o Compression=yes"), "{a}");
    }

    #[test]
    fn stderr_is_one_line_without_known_hosts_noise() {
        let e = b"Warning: Permanently added 'x' (ED25519) to the list of known hosts.\r\nssh: connect to host 10.0.0.9 port 22: Connection refused\r\n";
        assert_eq!(
            clean_stderr(e),
            "ssh: connect to host 10.0.0.9 port 22: Connection refused"
        );
        assert_eq!(clean_stderr(b""), "ssh exited with 255 and said nothing");
    }

    #[test]
    fn a_command_through_srun_reports_its_own_exit_status() {
        let (code, err) = srun_exit(b"warn\nflow-srun-exit 3\n").expect("reported");
        assert_eq!((code, err.as_slice()), (3, b"warn\n".as_slice()));
        let (code, err) =
            srun_exit(b"srun: error: node1: task 0: Exited with exit code 3\nflow-srun-exit 3\n")
                .expect("reported");
        assert_eq!((code, err.len()), (3, 0));
        assert_eq!(srun_exit(b"flow-srun-exit 0").map(|r| r.0), Some(0));
        // srun's own failure: the command never ran.
        assert!(
            srun_exit(
                b"srun: error: Unable to create step for job 7: Invalid node name specified\n"
            )
            .is_none()
        );
        assert!(srun_exit(b"").is_none());
        assert_eq!(
            clean_srun_stderr(b"srun: error: a\nsrun: error: b\n"),
            "srun: error: a; srun: error: b"
        );
    }

    #[test]
    fn socket_dirs_are_short_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = private_dir().expect("dir");
        assert!(d.join("99").as_os_str().len() < 40);
        let mode = std::fs::metadata(&d).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::remove_dir(&d).expect("rm");
    }
}
