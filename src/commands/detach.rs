//! A flow that outlives its terminal: `flow run --detach` (the artifact is
//! planned here, then executed by a `flow resume` in its own session),
//! `flow stop` (a clean teardown of a flow that runs), and the follow mode
//! of `flow attach` (its output as it comes; Ctrl-C stops following only).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::StopArgs;
use crate::diag::display_path;

use super::status::{State, resolve, state};
use super::{Error, exit};

/// Where a detached flow's stdout and stderr go, in its artifact folder.
pub const CONTROLLER_LOG: &str = "controller.log";

/// Set for the background flow `--detach` starts.
pub const DETACHED_VAR: &str = "FLOW_DETACHED";

/// How the background flow's first line begins (`flow resume` prints it
/// once it has compared the suite with the artifact and decided each run).
pub const RUNNING_LINE: &str = "running in the background:";

/// How long `--detach` waits for the background flow to take the artifact.
const TAKE_WITHIN: Duration = Duration::from_secs(30);

/// What the background flow is given of `flow run`'s options.
pub struct Detach<'a> {
    pub artifacts: &'a Path,
    pub jobs: usize,
    pub max_failures: Option<usize>,
    pub verbose: bool,
    pub share_hosts: bool,
    /// `--keep-hosts`: the background flow does not deprovision.
    pub keep_hosts: bool,
}

/// Starts `flow resume DIR` in a session of its own (no terminal, so a
/// closed terminal or logout does not end it), its output appended to
/// `DIR/controller.log`; returns once it has taken the artifact.
pub fn start(dir: &Path, id: &str, d: &Detach) -> Result<i32, Error> {
    let log_path = dir.join(CONTROLLER_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io("create", &log_path, e))?;
    let err = log
        .try_clone()
        .map_err(|e| Error::io("open", &log_path, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find", Path::new("flow"), e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("resume")
        .arg(dir)
        .arg("--artifacts")
        .arg(d.artifacts)
        .arg("--jobs")
        .arg(d.jobs.to_string());
    if let Some(n) = d.max_failures {
        cmd.arg("--max-failures").arg(n.to_string());
    }
    if d.verbose {
        cmd.arg("--verbose");
    }
    if d.keep_hosts {
        cmd.arg("--keep-hosts");
    }
    if d.share_hosts {
        cmd.arg("--share-hosts");
    }
    // The hosts were just provisioned by this flow: the background one
    // goes on with them (and deprovisions at its end).
    cmd.env(DETACHED_VAR, "1")
        .env(super::hooks::PROVISIONED_VAR, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("start flow in the background for", dir, e))?;
    let pid = child.id() as i32;
    let lock = dir.join(super::run::LOCK_FILE);
    let t0 = Instant::now();
    // It has started once its pid is in `flow.pid` and it has said what it
    // runs (after comparing the suite with the artifact's plans); an exit
    // before that (a refused resume) is reported here, with what it said.
    let logged_before = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
    loop {
        let said_it_runs = || {
            std::fs::read(&log_path).is_ok_and(|b| {
                String::from_utf8_lossy(b.get(logged_before..).unwrap_or_default())
                    .contains(RUNNING_LINE)
            })
        };
        if std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid.to_string())
            && said_it_runs()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // A short suite may be done before we looked.
            if said_it_runs() {
                break;
            }
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::Invalid(format!(
                "error: the background flow ended at once ({status}); it said:\n{}\n",
                tail.join("\n")
            )));
        }
        if t0.elapsed() > TAKE_WITHIN {
            return Err(Error::Invalid(format!(
                "error: the background flow (pid {pid}) did not start the artifact within {}s; see `{}`\n",
                TAKE_WITHIN.as_secs(),
                display_path(&log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "detached: flow (pid {pid}) runs it in the background; its output goes to {}\n  flow status {id}   how far it is (--watch to follow)\n  flow attach {id}   follow its output (Ctrl-C stops following, not the run)\n  flow stop {id}     stop it cleanly: teardown, fetch, analysis",
        display_path(&log_path)
    );
    Ok(exit::OK)
}

/// `flow stop`: SIGINT to the flow that runs the artifact (as Ctrl-C in its
/// terminal: steps stopped, then fetch and analysis), and wait for it.
pub fn stop(args: &StopArgs) -> Result<i32, Error> {
    if let Some(sub) = super::slurm::find(&args.artifacts, args.id.as_deref()) {
        return super::slurm::stop(&sub);
    }
    let dir = resolve(&args.artifacts, args.id.as_deref())?;
    if let Some((r, there)) = super::remote::forwarded(&dir) {
        let there = there.display().to_string();
        let timeout = args.timeout.to_string();
        let mut a = vec!["stop", there.as_str(), "--timeout", timeout.as_str()];
        if args.kill {
            a.push("--kill");
        }
        if args.no_wait {
            a.push("--no-wait");
        }
        return r.forward(&a);
    }
    let pid = match state(&dir) {
        State::Running(pid) => pid,
        other => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "nothing to stop: artifact `{}` is {}",
                display_path(&dir),
                other.describe()
            );
            return Ok(exit::OK);
        }
    };
    let sig = if args.kill {
        // A second interrupt: what is being stopped is killed now.
        nix::sys::signal::Signal::SIGTERM
    } else {
        nix::sys::signal::Signal::SIGINT
    };
    let send = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
    send(sig).map_err(|e| Error::io("signal", &dir.join(super::run::LOCK_FILE), e.into()))?;
    if args.kill {
        std::thread::sleep(Duration::from_millis(100));
        let _ = send(sig);
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "asked flow (pid {pid}) to stop{}; waiting for it to tear down, fetch and analyze",
        if args.kill { " now" } else { "" }
    );
    if args.no_wait {
        return Ok(exit::OK);
    }
    let t0 = Instant::now();
    let limit = Duration::from_secs(args.timeout);
    while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
        if t0.elapsed() > limit {
            let _ = writeln!(
                err,
                "flow (pid {pid}) is still stopping after {}s; `flow stop --kill {}` kills what it runs now",
                args.timeout,
                display_path(&dir)
            );
            return Ok(exit::FAILED);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = writeln!(
        err,
        "stopped; `flow status {}` shows what it left",
        display_path(&dir)
    );
    Ok(exit::OK)
}

/// `flow attach` of an artifact a live flow runs: prints its output (the
/// detached flow's `controller.log`) as it comes, until that flow ends.
/// Ctrl-C ends only this.
pub fn follow(dir: &Path, pid: i32) -> Result<i32, Error> {
    let log = dir.join(CONTROLLER_LOG);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "flow (pid {pid}) is running `{}`; following it (Ctrl-C stops following, not the run)",
        display_path(dir)
    );
    drop(err);
    let mut offset = 0u64;
    let alive = || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let mut last_status = String::new();
    loop {
        let running = alive();
        if log.is_file() {
            offset = copy_new(&log, offset)?;
        } else {
            // Started in a terminal, not detached: the status, when it changes.
            let v = super::status::render_text(dir);
            if v != last_status {
                let mut out = std::io::stdout().lock();
                out.write_all(v.as_bytes()).map_err(Error::Output)?;
                last_status = v;
            }
        }
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(if super::status::all_passed(dir) {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// Writes what `path` gained since `offset` to stdout; the new offset.
fn copy_new(path: &PathBuf, offset: u64) -> Result<u64, Error> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(offset);
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return Ok(offset);
    }
    let mut buf = Vec::new();
    let n = f.read_to_end(&mut buf).unwrap_or(0) as u64;
    if n > 0 {
        let mut out = std::io::stdout().lock();
        out.write_all(&buf).map_err(Error::Output)?;
        out.flush().map_err(Error::Output)?;
    }
    Ok(offset + n)
}
