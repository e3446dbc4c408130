//! Local child processes: each step runs in its own process group with its
//! output going straight to files, so a step is stopped as a whole (signal to
//! the group, grace period, SIGKILL) and nothing it leaves behind goes
//! unnoticed.
//!
//! flow makes itself a child subreaper: a process that escapes its group
//! (`setsid`, double fork) is re-parented to flow when its parent dies, and
//! the sweep at the end of each run finds it by the `FLOW_RUN_TAG` it
//! inherited.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::artifact::run_result::Leak;
use crate::plan::RunCommand;

/// Pids of children tokio owns (spawned and not yet waited for). The sweep
/// must never reap these: tokio waits for them itself.
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The environment variable that tags every process of a run.
pub const RUN_TAG_VAR: &str = "FLOW_RUN_TAG";

/// What a local process is started with.
pub struct Spec<'a> {
    pub run: &'a RunCommand,
    pub cwd: &'a Path,
    pub env: Vec<(String, String)>,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
}

/// A started process: the leader of its own process group.
pub struct Proc {
    pub child: Child,
    pub pid: i32,
}

/// Makes this process a child subreaper (Linux), so that orphans of steps are
/// re-parented to it rather than to init.
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts a process in a new process group, stdin from /dev/null, stdout and
/// stderr appended to files.
pub fn spawn(spec: &Spec<'_>) -> io::Result<Proc> {
    let mut cmd = match spec.run {
        RunCommand::Shell(text) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(text);
            c
        }
        RunCommand::Argv(argv) => {
            let Some((prog, args)) = argv.split_first() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "empty argv".to_string(),
                ));
            };
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
    };
    cmd.current_dir(spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(open_log(spec.stdout)?)
        .stderr(open_log(spec.stderr)?)
        .process_group(0)
        .kill_on_drop(false);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one async-signal-safe system call (prctl). Should flow die
    // without tearing down, the kernel kills the step's leader with it; the
    // runtime is single-threaded, so the forking thread lives as long as flow.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| io::Error::other("the child has no pid"))?;
    if let Ok(mut s) = SPAWNED.lock() {
        s.insert(pid);
    }
    tracing::trace!(pid, cwd = %spec.cwd.display(), "spawned `{}`", spec.run.display());
    Ok(Proc { child, pid })
}

pub use crate::artifact::run_result::{Exit, signal_name};

/// Waits for the leader of a group to exit.
pub async fn wait(proc: &mut Proc) -> io::Result<Exit> {
    use std::os::unix::process::ExitStatusExt;
    let status = proc.child.wait().await;
    if let Ok(mut s) = SPAWNED.lock() {
        s.remove(&proc.pid);
    }
    let status = status?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    })
}

/// Sends a signal to a process group; a group that is gone is not an error.
pub fn signal_group(pgid: i32, sig: Signal) {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!("cannot send {sig} to process group {pgid}: {e}"),
    }
}

/// Whether any process (zombies included) is in the group.
pub fn group_exists(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// `TERM` → `SIGTERM`.
pub fn parse_signal(name: &str) -> Signal {
    match name {
        "INT" => Signal::SIGINT,
        "HUP" => Signal::SIGHUP,
        "QUIT" => Signal::SIGQUIT,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        "KILL" => Signal::SIGKILL,
        _ => Signal::SIGTERM,
    }
}

/// One line of `/proc/<pid>/stat`.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub zombie: bool,
}

/// Every process the kernel shows in `/proc`. Runs after every run, so it
/// reads each `stat` file with one `read` into a reused buffer.
pub fn scan() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let mut path = String::with_capacity(32);
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        path.clear();
        path.push_str("/proc/");
        path.push_str(name.to_str().unwrap_or_default());
        path.push_str("/stat");
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(n) = f.read(&mut buf) else { continue };
        if let Some(info) = parse_stat(pid, &buf[..n]) {
            out.push(info);
        }
    }
    out
}

/// `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
fn parse_stat(pid: i32, text: &[u8]) -> Option<ProcInfo> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgrp,
        zombie: state == "Z" || state == "X",
    })
}

/// The command line of a process, arguments joined by spaces; its name in
/// brackets when it has none (a kernel thread, or caught mid-exec).
pub fn cmdline(pid: i32) -> String {
    let line = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default();
    if !line.is_empty() {
        return line;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("[{}]", comm.trim())
}

/// Whether a process's environment holds `var=value`.
/// The value of `var` in the environment `pid` started with.
pub fn env_value(pid: i32, var: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    env.split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub fn has_env(pid: i32, var: &str, value: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let needle = format!("{var}={value}");
    env.split(|&b| b == 0).any(|e| e == needle.as_bytes())
}

fn owned_by_tokio(pid: i32) -> bool {
    SPAWNED.lock().map(|s| s.contains(&pid)).unwrap_or(true)
}

/// Kills every live process `select` picks, and reaps the zombies of flow
/// that it killed or that `reap` picks, returning what was found alive.
/// Bounded: gives up after about a second. Never reaps a child tokio waits
/// for (an ssh command in flight is flow's child too).
pub fn sweep(select: impl Fn(&ProcInfo) -> bool, reap: impl Fn(&ProcInfo) -> bool) -> Vec<Leak> {
    let me = std::process::id() as i32;
    let mut leaks: Vec<Leak> = Vec::new();
    for _ in 0..100 {
        let found: Vec<ProcInfo> = scan()
            .into_iter()
            .filter(|p| p.pid != me)
            .filter(|p| {
                if p.zombie {
                    p.ppid == me
                        && !owned_by_tokio(p.pid)
                        && (leaks.iter().any(|l| l.pid == p.pid) || reap(p))
                } else {
                    select(p)
                }
            })
            .collect();
        if found.is_empty() {
            break;
        }
        for p in &found {
            if p.zombie {
                let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
                continue;
            }
            if !leaks.iter().any(|l| l.pid == p.pid) {
                leaks.push(Leak {
                    pid: p.pid,
                    cmdline: cmdline(p.pid),
                });
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    leaks
}

/// Kills what is left of a process group after its leader exited. Cheap when
/// the group is gone (one `kill(-pgid, 0)`).
pub fn sweep_group(pgid: i32) -> Vec<Leak> {
    if !group_exists(pgid) {
        return Vec::new();
    }
    sweep(|p| p.pgrp == pgid, |p| p.pgrp == pgid)
}

/// Kills the processes re-parented to flow that carry the run's `tag` (they
/// escaped their step's group), and reaps them.
pub fn sweep_orphans(tag: &str) -> Vec<Leak> {
    let me = std::process::id() as i32;
    sweep(
        |p| p.ppid == me && !owned_by_tokio(p.pid) && has_env(p.pid, RUN_TAG_VAR, tag),
        |_| false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let p = parse_stat(42, b"42 (a) b (c)) S 7 42 42 0 -1").expect("parses");
        assert_eq!((p.ppid, p.pgrp, p.zombie), (7, 42, false));
        assert!(parse_stat(1, b"1 (x) Z 0 1").expect("parses").zombie);
        assert!(parse_stat(1, b"garbage").is_none());
    }

    #[test]
    fn scan_sees_this_process() {
        let me = std::process::id() as i32;
        let all = scan();
        let mine = all
            .iter()
            .find(|p| p.pid == me)
            .expect("this process is listed");
        assert!(!mine.zombie);
    }
}
