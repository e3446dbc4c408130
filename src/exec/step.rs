//! Step supervisors: one tokio task per started step instance. A supervisor
//! owns its process, probes readiness, enforces the timeout, retries tasks,
//! obeys stop requests, and reports every change to the run's owner.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::process::{self, Exit, Proc, Spec};
use super::ready::Probe;
use crate::artifact::run_result::{Leak, StepStatus};
use crate::clock::Stamp;
use crate::plan::StepInstance;
use crate::suite::StepKind;

/// Grace period of a task that is cancelled or timed out: SIGTERM, then
/// SIGKILL after this long.
pub const TASK_GRACE: Duration = Duration::from_secs(5);

/// What the run's owner asks of a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    Run,
    /// Stop as planned (services and monitors at the end of a run).
    Stop,
    /// Stop because another step failed.
    Cancel,
    /// Stop because flow was interrupted.
    Interrupt,
    /// SIGKILL now (second Ctrl-C).
    Kill,
}

/// What a supervisor tells the run's owner.
#[derive(Debug)]
pub enum Report {
    Started {
        idx: usize,
        pid: i32,
        attempt: u32,
        at: Stamp,
    },
    Ready {
        idx: usize,
        at: Stamp,
    },
    /// An attempt failed and the task is tried again.
    Retrying {
        idx: usize,
        error: String,
    },
    Ended(Box<Ended>),
}

/// How a step instance ended.
#[derive(Debug)]
pub struct Ended {
    pub idx: usize,
    pub status: StepStatus,
    pub at: Stamp,
    pub exit: Option<Exit>,
    pub error: Option<String>,
    pub stop_signals: Vec<String>,
    pub leaked: Vec<Leak>,
    /// Start and end on the host's own wall clock (remote steps).
    pub host_times: Option<(Option<u64>, Option<u64>)>,
}

/// Everything a supervisor needs, fixed when the step is started.
pub struct StepJob {
    pub idx: usize,
    pub step: StepInstance,
    pub cwd: PathBuf,
    pub out: PathBuf,
    pub err: PathBuf,
    pub env: Vec<(String, String)>,
    /// Someone watches the output as it comes (`-v`).
    pub live: bool,
}

/// Starts a supervisor; returns the handle that steers it.
pub fn start(job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
    let (ctl_tx, ctl_rx) = watch::channel(Ctl::Run);
    tokio::spawn(async move {
        let idx = job.idx;
        let ended = supervise(Arc::new(job), &tx, ctl_rx).await;
        let _ = tx.send(Report::Ended(Box::new(Ended { idx, ..ended })));
    });
    ctl_tx
}

pub(crate) fn ended(status: StepStatus, exit: Option<Exit>, error: Option<String>) -> Ended {
    Ended {
        idx: 0,
        status,
        at: Stamp::now(),
        exit,
        error,
        stop_signals: Vec::new(),
        leaked: Vec::new(),
        host_times: None,
    }
}

/// The status a step gets when flow stops it for `ctl`.
pub(crate) fn stopped_status(ctl: Ctl) -> StepStatus {
    match ctl {
        Ctl::Run | Ctl::Stop => StepStatus::Passed,
        Ctl::Cancel => StepStatus::Cancelled,
        Ctl::Interrupt | Ctl::Kill => StepStatus::Interrupted,
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    crate::duration::format(d)
}

async fn supervise(
    job: Arc<StepJob>,
    tx: &mpsc::UnboundedSender<Report>,
    mut ctl: watch::Receiver<Ctl>,
) -> Ended {
    let s = &job.step;
    let Some(run) = &s.run else {
        return ended(
            StepStatus::Failed,
            None,
            Some("the step has no command".into()),
        );
    };
    let attempts = if matches!(s.kind, StepKind::Task | StepKind::Analyze) {
        s.retries + 1
    } else {
        1
    };
    let spec = Spec {
        run,
        cwd: &job.cwd,
        env: job.env.clone(),
        stdout: &job.out,
        stderr: &job.err,
    };
    let mut last = ended(StepStatus::Failed, None, None);
    for attempt in 1..=attempts {
        let now = *ctl.borrow();
        if now != Ctl::Run {
            return ended(stopped_status(now), None, None);
        }
        let mut proc = match process::spawn(&spec) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!(
                    "cannot start `{}` in `{}`: {e}",
                    run.display(),
                    job.cwd.display()
                );
                if attempt < attempts {
                    let _ = tx.send(Report::Retrying {
                        idx: job.idx,
                        error: msg,
                    });
                    continue;
                }
                return ended(StepStatus::Failed, None, Some(msg));
            }
        };
        let _ = tx.send(Report::Started {
            idx: job.idx,
            pid: proc.pid,
            attempt,
            at: Stamp::now(),
        });
        last = match s.kind {
            StepKind::Service | StepKind::Monitor => {
                return background(&job, &mut proc, tx, &mut ctl).await;
            }
            _ => foreground(&job, &mut proc, &mut ctl).await,
        };
        last.leaked = process::sweep_group(proc.pid);
        if last.status != StepStatus::Failed {
            return last;
        }
        if attempt < attempts {
            let _ = tx.send(Report::Retrying {
                idx: job.idx,
                error: last.error.clone().unwrap_or_default(),
            });
        }
    }
    last
}

/// A task or analyze step: wait for it to exit, within its timeout.
async fn foreground(job: &StepJob, proc: &mut Proc, ctl: &mut watch::Receiver<Ctl>) -> Ended {
    let timeout = job.step.timeout_ms.map(Duration::from_millis);
    let deadline = timeout.map(|t| Instant::now() + t);
    tokio::select! {
        r = process::wait(proc) => match r {
            Ok(exit) if exit.success() => ended(StepStatus::Passed, Some(exit), None),
            Ok(exit) => ended(StepStatus::Failed, Some(exit), Some(exit.describe())),
            Err(e) => ended(StepStatus::Failed, None, Some(format!("cannot wait for the process: {e}"))),
        },
        () = sleep_until(deadline) => {
            let (exit, signals) = stop_with(proc, Signal::SIGTERM, TASK_GRACE, ctl).await;
            let mut e = ended(
                StepStatus::Failed,
                exit,
                Some(format!("timed out after {}", fmt_duration(timeout.unwrap_or_default()))),
            );
            e.stop_signals = signals;
            e
        }
        why = changed(ctl) => {
            let (exit, signals) = stop_with(proc, Signal::SIGTERM, TASK_GRACE, ctl).await;
            let mut e = ended(stopped_status(why), exit, None);
            e.stop_signals = signals;
            e
        }
    }
}

/// A service or monitor: probe readiness, then run until stopped.
async fn background(
    job: &StepJob,
    proc: &mut Proc,
    tx: &mpsc::UnboundedSender<Report>,
    ctl: &mut watch::Receiver<Ctl>,
) -> Ended {
    let s = &job.step;
    let (sig, grace) = s
        .stop
        .as_ref()
        .map_or((Signal::SIGTERM, Duration::from_secs(10)), |p| {
            (
                process::parse_signal(&p.signal),
                Duration::from_millis(p.grace_ms),
            )
        });
    let mut result = match &s.ready {
        Some(plan) if s.kind == StepKind::Service => {
            let probe = Probe::new(
                plan,
                &job.out,
                &job.err,
                &job.cwd,
                &job.env,
                job.out.with_extension("ready"),
            );
            match probe {
                Ok(probe) => await_ready(job, proc, probe, tx, ctl, sig, grace).await,
                Err(e) => {
                    let (exit, signals) = stop_with(proc, sig, grace, ctl).await;
                    let mut r = ended(StepStatus::Failed, exit, Some(e));
                    r.stop_signals = signals;
                    r
                }
            }
        }
        _ => {
            let _ = tx.send(Report::Ready {
                idx: job.idx,
                at: Stamp::now(),
            });
            run_until_stopped(job, proc, ctl, sig, grace).await
        }
    };
    result.leaked = process::sweep_group(proc.pid);
    result
}

async fn await_ready(
    job: &StepJob,
    proc: &mut Proc,
    mut probe: Probe,
    tx: &mpsc::UnboundedSender<Report>,
    ctl: &mut watch::Receiver<Ctl>,
    sig: Signal,
    grace: Duration,
) -> Ended {
    let Some(plan) = &job.step.ready else {
        return ended(StepStatus::Failed, None, Some("no readiness probe".into()));
    };
    let interval = Duration::from_millis(plan.interval_ms.max(1));
    let timeout = Duration::from_millis(plan.timeout_ms);
    let deadline = Instant::now() + timeout;
    let mut next_try = Instant::now();
    loop {
        tokio::select! {
            r = process::wait(proc) => {
                // It may have printed its line and exited at once: one last look.
                let ready_anyway = probe.check(interval).await;
                let exit = r.ok();
                let what = exit.map_or_else(|| "ended".to_string(), Exit::describe);
                let status = if ready_anyway && exit.is_some_and(Exit::success) {
                    StepStatus::Passed
                } else {
                    StepStatus::Failed
                };
                let error = (status == StepStatus::Failed).then(|| {
                    let when = if ready_anyway { "just after" } else { "before" };
                    format!("{what} {when} it was ready (probe: {})", probe.describe())
                });
                return ended(status, exit, error);
            }
            () = tokio::time::sleep_until(next_try) => {
                if probe.check(interval).await {
                    let _ = tx.send(Report::Ready { idx: job.idx, at: Stamp::now() });
                    return run_until_stopped(job, proc, ctl, sig, grace).await;
                }
                next_try = Instant::now() + interval;
                if next_try > deadline {
                    next_try = deadline;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let (exit, signals) = stop_with(proc, sig, grace, ctl).await;
                let mut e = ended(
                    StepStatus::Failed,
                    exit,
                    Some(format!("not ready after {} (probe: {})", fmt_duration(timeout), probe.describe())),
                );
                e.stop_signals = signals;
                return e;
            }
            why = changed(ctl) => {
                let (exit, signals) = stop_with(proc, sig, grace, ctl).await;
                // Stopped before it was ready: never a pass.
                let status = match stopped_status(why) {
                    StepStatus::Passed => StepStatus::Cancelled,
                    s => s,
                };
                let mut e = ended(status, exit, None);
                e.stop_signals = signals;
                return e;
            }
        }
    }
}

async fn run_until_stopped(
    job: &StepJob,
    proc: &mut Proc,
    ctl: &mut watch::Receiver<Ctl>,
    sig: Signal,
    grace: Duration,
) -> Ended {
    let timeout = job.step.timeout_ms.map(Duration::from_millis);
    let deadline = timeout.map(|t| Instant::now() + t);
    tokio::select! {
        r = process::wait(proc) => match r {
            Ok(exit) if exit.success() => ended(StepStatus::Passed, Some(exit), None),
            Ok(exit) => ended(
                StepStatus::Failed,
                Some(exit),
                Some(format!("{} while the run was going", exit.describe())),
            ),
            Err(e) => ended(StepStatus::Failed, None, Some(format!("cannot wait for the process: {e}"))),
        },
        () = sleep_until(deadline) => {
            // A timeout on a service or monitor is how long it runs.
            let (exit, signals) = stop_with(proc, sig, grace, ctl).await;
            let mut e = ended(StepStatus::Passed, exit, None);
            e.stop_signals = signals;
            e
        }
        why = changed(ctl) => {
            let (exit, signals) = stop_with(proc, sig, grace, ctl).await;
            let mut e = ended(stopped_status(why), exit, None);
            if signals.len() > 1 {
                e.error = Some(format!(
                    "did not exit within {} of SIG{}; killed",
                    fmt_duration(grace),
                    signals[0]
                ));
            }
            e.stop_signals = signals;
            e
        }
    }
}

/// Resolves when the owner asks for something other than `Run`.
pub(crate) async fn changed(ctl: &mut watch::Receiver<Ctl>) -> Ctl {
    loop {
        let now = *ctl.borrow_and_update();
        if now != Ctl::Run {
            return now;
        }
        if ctl.changed().await.is_err() {
            // The owner is gone: behave as interrupted.
            return Ctl::Interrupt;
        }
    }
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `sig` to the group, then SIGKILL after `grace` (or at once when the owner
/// asks for `Kill` meanwhile).
async fn stop_with(
    proc: &mut Proc,
    sig: Signal,
    grace: Duration,
    ctl: &mut watch::Receiver<Ctl>,
) -> (Option<Exit>, Vec<String>) {
    let sig = if *ctl.borrow() == Ctl::Kill {
        Signal::SIGKILL
    } else {
        sig
    };
    let mut sent = vec![sig.as_str().trim_start_matches("SIG").to_string()];
    process::signal_group(proc.pid, sig);
    if sig != Signal::SIGKILL {
        let killed = async {
            loop {
                if *ctl.borrow_and_update() == Ctl::Kill {
                    return;
                }
                if ctl.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = process::wait(proc) => return (r.ok(), sent),
            () = tokio::time::sleep(grace) => {}
            () = killed => {}
        }
        sent.push("KILL".into());
        process::signal_group(proc.pid, Signal::SIGKILL);
    }
    (process::wait(proc).await.ok(), sent)
}
