//! The step supervisor, the one for every host: one tokio task per started
//! step instance. It owns the step's attempts, probes readiness (log
//! patterns are matched here, on bytes the host returns), enforces the
//! timeout, stops (signal to the group, grace, SIGKILL), and reports every
//! change to the run's owner. What differs between hosts is below the
//! [`Running`] primitives it drives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::host::{Host, HostError, Running};
use super::process::{self, Exit};
use super::ready::LineMatcher;
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
        /// Taken over from a dead flow rather than started.
        adopted: bool,
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
    /// It ended because its host stopped answering.
    pub host_lost: bool,
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
    /// The step already runs, started by a flow that died: take it over
    /// instead of starting it (`flow resume`, `flow attach`).
    pub adopt: Option<Adopt>,
}

/// A running step instance taken over from a dead flow.
#[derive(Debug, Clone, Copy)]
pub struct Adopt {
    /// The attempt it is.
    pub attempt: u32,
    /// Its leader's pid on its host.
    pub pid: i32,
    /// It had passed its readiness probe (services and monitors).
    pub ready: bool,
    /// How long ago it started: its timeout counts from then.
    pub elapsed: Duration,
}

/// Starts a supervisor for a step on `host`; returns the handle that
/// steers it.
pub fn start(
    job: StepJob,
    host: Arc<dyn Host>,
    tx: mpsc::UnboundedSender<Report>,
) -> watch::Sender<Ctl> {
    let (ctl_tx, ctl_rx) = watch::channel(Ctl::Run);
    tokio::spawn(async move {
        let idx = job.idx;
        let ended = supervise(&job, host.as_ref(), &tx, ctl_rx).await;
        let _ = tx.send(Report::Ended(Box::new(Ended { idx, ..ended })));
    });
    ctl_tx
}

/// A step that cannot be started at all (its host is unknown): reported as
/// failed at once.
pub fn refuse(
    job: StepJob,
    error: String,
    tx: mpsc::UnboundedSender<Report>,
) -> watch::Sender<Ctl> {
    let (ctl_tx, _) = watch::channel(Ctl::Run);
    let e = ended(StepStatus::Failed, None, Some(error));
    let _ = tx.send(Report::Ended(Box::new(Ended { idx: job.idx, ..e })));
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
        host_lost: false,
    }
}

fn lost(e: HostError) -> Ended {
    let host_lost = matches!(e, HostError::Lost { .. });
    Ended {
        host_lost,
        ..ended(StepStatus::Failed, None, Some(e.to_string()))
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

/// How long "until it exits" is.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// After SIGKILL, the leader is waited for this long at most.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The stop signal and grace of a step.
fn stop_policy(job: &StepJob) -> (Signal, Duration) {
    match (&job.step.stop, job.step.kind) {
        (Some(p), _) => (
            process::parse_signal(&p.signal),
            Duration::from_millis(p.grace_ms),
        ),
        (None, StepKind::Service | StepKind::Monitor) => (Signal::SIGTERM, Duration::from_secs(10)),
        (None, _) => (Signal::SIGTERM, TASK_GRACE),
    }
}

async fn supervise(
    job: &StepJob,
    host: &dyn Host,
    tx: &mpsc::UnboundedSender<Report>,
    mut ctl: watch::Receiver<Ctl>,
) -> Ended {
    let s = &job.step;
    let attempts = if matches!(s.kind, StepKind::Task | StepKind::Analyze) {
        s.retries + 1
    } else {
        1
    };
    let mut last = ended(StepStatus::Failed, None, None);
    let first = job.adopt.map_or(1, |a| a.attempt);
    for attempt in first..=attempts.max(first) {
        let now = *ctl.borrow();
        if now != Ctl::Run {
            return ended(stopped_status(now), None, None);
        }
        let adopted = job.adopt.filter(|_| attempt == first);
        // The attempt started within [at, the answer]: its host's own
        // start time falls after `at`.
        let at = Stamp::now();
        let spawned = match adopted {
            Some(a) => host.adopt(job, a.pid).await,
            None => host.spawn(job, attempt).await,
        };
        let mut running = match spawned {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                if attempt < attempts && *ctl.borrow() == Ctl::Run {
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
            pid: running.pid(),
            attempt,
            at,
            adopted: adopted.is_some(),
        });
        let elapsed = adopted.map_or(Duration::ZERO, |a| a.elapsed);
        last = match s.kind {
            StepKind::Service | StepKind::Monitor if adopted.is_some_and(|a| a.ready) => {
                let (sig, grace) = stop_policy(job);
                run_until_stopped(job, running.as_mut(), &mut ctl, sig, grace, elapsed).await
            }
            StepKind::Service | StepKind::Monitor => {
                background(job, running.as_mut(), tx, &mut ctl).await
            }
            _ => foreground(job, running.as_mut(), &mut ctl, elapsed).await,
        };
        let fin = running.finish().await;
        last.leaked = fin.leaked;
        last.host_times = fin.host_times;
        if let Some(e) = fin.error {
            // Whatever the step did, its record is not complete.
            last.status = StepStatus::Failed;
            last.error = Some(match last.error.take() {
                Some(first) => format!("{first}; {e}"),
                None => e,
            });
        }
        if last.status != StepStatus::Failed
            || attempt == attempts
            || *ctl.borrow() != Ctl::Run
            || s.kind == StepKind::Service
            || s.kind == StepKind::Monitor
        {
            return last;
        }
        let _ = tx.send(Report::Retrying {
            idx: job.idx,
            error: last.error.clone().unwrap_or_default(),
        });
    }
    last
}

/// A task or analyze step: wait for it to exit, within its timeout.
async fn foreground(
    job: &StepJob,
    proc: &mut dyn Running,
    ctl: &mut watch::Receiver<Ctl>,
    elapsed: Duration,
) -> Ended {
    let timeout = job.step.timeout_ms.map(Duration::from_millis);
    let deadline = timeout.map(|t| Instant::now() + t.saturating_sub(elapsed));
    let (sig, grace) = stop_policy(job);
    tokio::select! {
        r = proc.wait(FOREVER) => match r {
            Ok(Some(exit)) if exit.success() => ended(StepStatus::Passed, Some(exit), None),
            Ok(Some(exit)) => ended(StepStatus::Failed, Some(exit), Some(exit.describe())),
            Ok(None) => ended(StepStatus::Failed, None, Some("lost track of the process".into())),
            Err(e) => lost(e),
        },
        () = sleep_until(deadline) => {
            let mut e = stop_with(proc, sig, grace, ctl).await;
            e.status = StepStatus::Failed;
            let why = format!("timed out after {}", fmt_duration(timeout.unwrap_or_default()));
            e.error = Some(match e.error.take() {
                Some(more) => format!("{why}; {more}"),
                None => why,
            });
            e
        }
        why = changed(ctl) => {
            let mut e = stop_with(proc, sig, grace, ctl).await;
            if e.error.is_none() || e.status != StepStatus::Failed {
                e.status = stopped_status(why);
            }
            e
        }
    }
}

/// How a service's readiness is probed, with its state between tries.
enum Probe {
    /// `ready.log`: matched here on the bytes the host returns.
    Log(LineMatcher),
    Port(u16),
    Cmd(String),
}

impl Probe {
    fn new(plan: &crate::plan::ReadyPlan) -> Result<Probe, String> {
        if let Some(pattern) = &plan.log {
            let re = regex::bytes::Regex::new(pattern)
                .map_err(|e| format!("bad `ready.log` regex: {e}"))?;
            return Ok(Probe::Log(LineMatcher::new(re, 2)));
        }
        if let Some(port) = plan.port {
            return Ok(Probe::Port(port));
        }
        if let Some(cmd) = &plan.cmd {
            return Ok(Probe::Cmd(cmd.clone()));
        }
        Err("`ready` has no probe".into())
    }

    /// One try: whether the service is ready now.
    async fn check(
        &mut self,
        proc: &mut dyn Running,
        interval: Duration,
    ) -> Result<bool, HostError> {
        match self {
            Probe::Log(m) => {
                let [out, err] = proc.read_new().await?;
                Ok(m.feed(0, &out) | m.feed(1, &err))
            }
            Probe::Port(p) => {
                proc.probe_port(*p, interval.max(Duration::from_millis(100)))
                    .await
            }
            // A probe command gets at least a second, and its interval when
            // that is longer.
            Probe::Cmd(c) => {
                proc.probe_cmd(c, interval.max(Duration::from_secs(1)))
                    .await
            }
        }
    }

    /// For messages: `log /Worker ready/`, `port 8080`, `cmd \`…\``.
    fn describe(&self) -> String {
        match self {
            Probe::Log(m) => format!("log /{}/", m.pattern()),
            Probe::Port(p) => format!("port {p}"),
            Probe::Cmd(c) => format!("cmd `{c}`"),
        }
    }
}

/// A service or monitor: probe readiness, then run until stopped.
async fn background(
    job: &StepJob,
    proc: &mut dyn Running,
    tx: &mpsc::UnboundedSender<Report>,
    ctl: &mut watch::Receiver<Ctl>,
) -> Ended {
    let s = &job.step;
    let (sig, grace) = stop_policy(job);
    match &s.ready {
        Some(plan) if s.kind == StepKind::Service => match Probe::new(plan) {
            Ok(probe) => await_ready(job, proc, probe, plan, tx, ctl, sig, grace).await,
            Err(e) => {
                let mut r = stop_with(proc, sig, grace, ctl).await;
                r.status = StepStatus::Failed;
                r.error = Some(e);
                r
            }
        },
        _ => {
            let _ = tx.send(Report::Ready {
                idx: job.idx,
                at: Stamp::now(),
            });
            run_until_stopped(job, proc, ctl, sig, grace, Duration::ZERO).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn await_ready(
    job: &StepJob,
    proc: &mut dyn Running,
    mut probe: Probe,
    plan: &crate::plan::ReadyPlan,
    tx: &mpsc::UnboundedSender<Report>,
    ctl: &mut watch::Receiver<Ctl>,
    sig: Signal,
    grace: Duration,
) -> Ended {
    let interval = Duration::from_millis(plan.interval_ms.max(1));
    let timeout = Duration::from_millis(plan.timeout_ms);
    let deadline = Instant::now() + timeout;
    loop {
        let ready = match probe.check(proc, interval).await {
            Ok(r) => r,
            Err(e) => return lost(e),
        };
        if ready {
            let _ = tx.send(Report::Ready {
                idx: job.idx,
                at: Stamp::now(),
            });
            return run_until_stopped(job, proc, ctl, sig, grace, Duration::ZERO).await;
        }
        let now = Instant::now();
        if now >= deadline {
            let mut e = stop_with(proc, sig, grace, ctl).await;
            e.status = StepStatus::Failed;
            e.error = Some(format!(
                "not ready after {} (probe: {})",
                fmt_duration(timeout),
                probe.describe()
            ));
            return e;
        }
        let pause = interval.min(deadline - now);
        tokio::select! {
            r = proc.wait(pause) => match r {
                Ok(None) => {}
                Ok(Some(exit)) => {
                    // It may have printed its line and exited at once: one
                    // last look.
                    let ready_anyway = probe.check(proc, interval).await.unwrap_or(false);
                    let status = if ready_anyway && exit.success() {
                        StepStatus::Passed
                    } else {
                        StepStatus::Failed
                    };
                    let error = (status == StepStatus::Failed).then(|| {
                        let when = if ready_anyway { "just after" } else { "before" };
                        format!("{} {when} it was ready (probe: {})", exit.describe(), probe.describe())
                    });
                    return ended(status, Some(exit), error);
                }
                Err(e) => return lost(e),
            },
            why = changed(ctl) => {
                let mut e = stop_with(proc, sig, grace, ctl).await;
                // Stopped before it was ready: never a pass.
                if e.status != StepStatus::Failed || e.error.is_none() {
                    e.status = match stopped_status(why) {
                        StepStatus::Passed => StepStatus::Cancelled,
                        s => s,
                    };
                }
                return e;
            }
        }
    }
}

async fn run_until_stopped(
    job: &StepJob,
    proc: &mut dyn Running,
    ctl: &mut watch::Receiver<Ctl>,
    sig: Signal,
    grace: Duration,
    elapsed: Duration,
) -> Ended {
    let timeout = job.step.timeout_ms.map(Duration::from_millis);
    let deadline = timeout.map(|t| Instant::now() + t.saturating_sub(elapsed));
    tokio::select! {
        r = proc.wait(FOREVER) => match r {
            Ok(Some(exit)) if exit.success() => ended(StepStatus::Passed, Some(exit), None),
            Ok(Some(exit)) => ended(
                StepStatus::Failed,
                Some(exit),
                Some(format!("{} while the run was going", exit.describe())),
            ),
            Ok(None) => ended(StepStatus::Failed, None, Some("lost track of the process".into())),
            Err(e) => lost(e),
        },
        () = sleep_until(deadline) => {
            // A timeout on a service or monitor is how long it runs.
            checked_on_stop(job, stop_with(proc, sig, grace, ctl).await)
        }
        why = changed(ctl) => {
            let mut e = stop_with(proc, sig, grace, ctl).await;
            if e.status != StepStatus::Failed || e.error.is_none() {
                e.status = stopped_status(why);
            }
            if why == Ctl::Stop {
                e = checked_on_stop(job, e);
            }
            e
        }
    }
}

/// A scrape's poller says as it exits whether its series is whole: stopped
/// as planned, a non-zero exit is a failure, not a pass.
fn checked_on_stop(job: &StepJob, mut e: Ended) -> Ended {
    if job.step.scrape.is_some()
        && e.status == StepStatus::Passed
        && let Some(Exit::Code(c)) = e.exit
        && c != 0
    {
        e.status = StepStatus::Failed;
        e.error = Some(format!(
            "exited with code {c} when stopped: its scrapes are incomplete (its stderr says which failed)"
        ));
    }
    e
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

/// Resolves once the owner asks for `Kill`; never when it is gone.
async fn kill_asked(ctl: &mut watch::Receiver<Ctl>) {
    loop {
        if *ctl.borrow_and_update() == Ctl::Kill {
            return;
        }
        if ctl.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Stops a step: `sig` to its group, then SIGKILL after `grace` (or at once
/// when the owner asks for `Kill` meanwhile). The result is a pass with the
/// exit and the signals sent; the caller sets the status it means. A host
/// that cannot be reached makes it a failure with the reason.
async fn stop_with(
    proc: &mut dyn Running,
    sig: Signal,
    grace: Duration,
    ctl: &mut watch::Receiver<Ctl>,
) -> Ended {
    let sig = if *ctl.borrow() == Ctl::Kill {
        Signal::SIGKILL
    } else {
        sig
    };
    let name = |s: Signal| s.as_str().trim_start_matches("SIG").to_string();
    let mut sent = vec![name(sig)];
    let fail = |e: HostError, sent: Vec<String>| {
        let host_lost = matches!(e, HostError::Lost { .. });
        let mut e = ended(
            StepStatus::Failed,
            None,
            Some(format!("cannot stop it: {e}")),
        );
        e.stop_signals = sent;
        e.host_lost = host_lost;
        e
    };
    if let Err(e) = proc.signal(sig).await {
        return fail(e, sent);
    }
    if sig != Signal::SIGKILL {
        let mut ctl = ctl.clone();
        tokio::select! {
            r = proc.wait(grace) => match r {
                Ok(Some(exit)) => {
                    let mut e = ended(StepStatus::Passed, Some(exit), None);
                    e.stop_signals = sent;
                    return e;
                }
                Ok(None) => {}
                Err(e) => return fail(e, sent),
            },
            () = kill_asked(&mut ctl) => {}
        }
        sent.push("KILL".into());
        if let Err(e) = proc.signal(Signal::SIGKILL).await {
            return fail(e, sent);
        }
    }
    let mut e = match proc.wait(KILL_WAIT).await {
        Ok(Some(exit)) => ended(StepStatus::Passed, Some(exit), None),
        Ok(None) => ended(
            StepStatus::Failed,
            None,
            Some(format!(
                "still running {} after SIGKILL",
                fmt_duration(KILL_WAIT)
            )),
        ),
        Err(e) => return fail(e, sent),
    };
    if sent.len() > 1 && e.error.is_none() {
        e.error = Some(format!(
            "did not exit within {} of SIG{}; killed",
            fmt_duration(grace),
            sent[0]
        ));
    }
    e.stop_signals = sent;
    e
}

#[cfg(test)]
mod tests {
    //! The supervisor's policy against the scripted host, on tokio's paused
    //! clock: every case is exact and takes no real time.
    use super::*;
    use crate::exec::host::fake::{Attempt, FakeHost};
    use crate::plan::{ReadyPlan, RunCommand, StopPlan};

    fn job(kind: StepKind) -> StepJob {
        StepJob {
            idx: 0,
            step: StepInstance {
                id: "s@h".into(),
                step: "s".into(),
                host: "h".into(),
                kind,
                cwd: "/nonexistent".into(),
                run: Some(RunCommand::Shell("true".into())),
                env: Default::default(),
                ready: None,
                timeout_ms: None,
                duration_ms: None,
                every_ms: None,
                stop: None,
                scrape: None,
                retries: 0,
                allow_failure: false,
                continue_on_host_loss: false,
                paths: vec![],
                max_bytes: None,
                max_total_bytes: None,
                truncate: false,
            },
            cwd: "/nonexistent".into(),
            out: "/nonexistent/out".into(),
            err: "/nonexistent/err".into(),
            env: vec![],
            live: false,
            adopt: None,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs a supervisor to its end; `stop_at`: the owner asks for this
    /// (at these times after the start).
    async fn drive(
        job: StepJob,
        host: Arc<FakeHost>,
        asks: &[(Duration, Ctl)],
    ) -> (Ended, Vec<String>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctl = start(job, host.clone(), tx);
        let t0 = Instant::now();
        let mut asks = asks.to_vec();
        let mut reports = Vec::new();
        loop {
            let next = asks.first().map(|(d, _)| t0 + *d);
            tokio::select! {
                r = rx.recv() => match r {
                    Some(Report::Ended(e)) => return (*e, reports),
                    Some(Report::Started { attempt, .. }) => reports.push(format!("started {attempt}")),
                    Some(Report::Ready { .. }) => reports.push(format!("ready at {}s", (Instant::now() - t0).as_secs())),
                    Some(Report::Retrying { error, .. }) => reports.push(format!("retrying: {error}")),
                    None => panic!("the supervisor ended without a report"),
                },
                () = sleep_until(next) => {
                    let (_, c) = asks.remove(0);
                    let _ = ctl.send(c);
                }
            }
        }
    }

    fn calls(h: &FakeHost) -> Vec<String> {
        h.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_task_is_tried_again_and_its_pass_counts() {
        let mut j = job(StepKind::Task);
        j.step.retries = 2;
        let host = Arc::new(FakeHost::new(vec![
            Attempt {
                exits: Some((secs(1), 3)),
                ..Default::default()
            },
            Attempt {
                exits: Some((secs(1), 0)),
                ..Default::default()
            },
        ]));
        let (e, reports) = drive(j, host.clone(), &[]).await;
        assert_eq!(e.status, StepStatus::Passed);
        assert_eq!(
            reports,
            ["started 1", "retrying: exited with 3", "started 2"]
        );
        assert_eq!(calls(&host), ["spawn 1", "finish", "spawn 2", "finish"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_over_its_timeout_gets_term_then_kill_after_the_grace() {
        let mut j = job(StepKind::Task);
        j.step.timeout_ms = Some(2000);
        let host = Arc::new(FakeHost::new(vec![Attempt {
            deaf: true,
            ..Default::default()
        }]));
        let t0 = Instant::now();
        let (e, _) = drive(j, host.clone(), &[]).await;
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(e.stop_signals, ["TERM", "KILL"]);
        assert_eq!(e.exit, Some(Exit::Signal(9)));
        assert!(
            e.error
                .as_deref()
                .is_some_and(|m| m.starts_with("timed out after 2s")),
            "{e:?}"
        );
        assert_eq!(Instant::now() - t0, secs(2) + TASK_GRACE);
        assert_eq!(
            calls(&host),
            ["spawn 1", "signal SIGTERM", "signal SIGKILL", "finish"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_is_ready_when_its_line_comes_and_passes_when_stopped() {
        let mut j = job(StepKind::Service);
        j.step.ready = Some(ReadyPlan {
            log: Some("^listening on \\d+$".into()),
            port: None,
            cmd: None,
            timeout_ms: 30_000,
            interval_ms: 500,
        });
        j.step.stop = Some(StopPlan {
            signal: "INT".into(),
            grace_ms: 3000,
        });
        let host = Arc::new(FakeHost::new(vec![Attempt {
            output: vec![(secs(1), b"starting\nlisten"), (secs(3), b"ing on 80\n")],
            ..Default::default()
        }]));
        let (e, reports) = drive(j, host.clone(), &[(secs(10), Ctl::Stop)]).await;
        assert_eq!(reports, ["started 1", "ready at 3s"]);
        assert_eq!(e.status, StepStatus::Passed);
        assert_eq!(e.stop_signals, ["INT"]);
        assert_eq!(e.error, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_exits_before_ready_fails_at_once() {
        let mut j = job(StepKind::Service);
        j.step.ready = Some(ReadyPlan {
            log: None,
            port: Some(80),
            cmd: None,
            timeout_ms: 60_000,
            interval_ms: 1000,
        });
        let host = Arc::new(FakeHost::new(vec![Attempt {
            exits: Some((Duration::from_millis(2500), 3)),
            ..Default::default()
        }]));
        let t0 = Instant::now();
        let (e, _) = drive(j, host, &[]).await;
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(
            e.error.as_deref(),
            Some("exited with 3 before it was ready (probe: port 80)")
        );
        assert_eq!(
            Instant::now() - t0,
            Duration::from_millis(2500),
            "not after its timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_never_ready_is_stopped_at_its_ready_timeout() {
        let mut j = job(StepKind::Service);
        j.step.ready = Some(ReadyPlan {
            log: None,
            port: Some(80),
            cmd: None,
            timeout_ms: 5000,
            interval_ms: 1000,
        });
        let host = Arc::new(FakeHost::new(vec![Attempt::default()]));
        let (e, _) = drive(j, host, &[]).await;
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(
            e.error.as_deref(),
            Some("not ready after 5s (probe: port 80)")
        );
        assert_eq!(e.stop_signals, ["TERM"]);
    }

    #[tokio::test(start_paused = true)]
    async fn kill_during_the_grace_kills_at_once() {
        let mut j = job(StepKind::Monitor);
        j.step.stop = Some(StopPlan {
            signal: "TERM".into(),
            grace_ms: 60_000,
        });
        let host = Arc::new(FakeHost::new(vec![Attempt {
            deaf: true,
            ..Default::default()
        }]));
        let t0 = Instant::now();
        let (e, _) = drive(j, host, &[(secs(1), Ctl::Interrupt), (secs(2), Ctl::Kill)]).await;
        assert_eq!(e.status, StepStatus::Interrupted);
        assert_eq!(e.stop_signals, ["TERM", "KILL"]);
        assert_eq!(Instant::now() - t0, secs(2), "the grace was not waited out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_host_fails_the_step_with_its_name_and_no_retry_of_a_service() {
        let j = job(StepKind::Monitor);
        let host = Arc::new(FakeHost::new(vec![Attempt {
            lost: Some(secs(3)),
            ..Default::default()
        }]));
        let (e, reports) = drive(j, host, &[]).await;
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(e.error.as_deref(), Some("lost host `fake`: scripted"));
        assert_eq!(reports, ["started 1", "ready at 0s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_refuses_every_start_uses_up_the_retries() {
        let mut j = job(StepKind::Task);
        j.step.retries = 1;
        let no = || Attempt {
            refuse: Some(HostError::Failed("cannot start: no".into())),
            ..Default::default()
        };
        let host = Arc::new(FakeHost::new(vec![no(), no()]));
        let (e, reports) = drive(j, host.clone(), &[]).await;
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(e.error.as_deref(), Some("cannot start: no"));
        assert_eq!(reports, ["retrying: cannot start: no"]);
        assert_eq!(calls(&host), ["spawn 1", "spawn 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_task_is_cancelled_not_failed() {
        let j = job(StepKind::Task);
        let host = Arc::new(FakeHost::new(vec![Attempt::default()]));
        let (e, _) = drive(j, host, &[(secs(1), Ctl::Cancel)]).await;
        assert_eq!(e.status, StepStatus::Cancelled);
        assert_eq!(e.stop_signals, ["TERM"]);
        assert_eq!(e.exit, Some(Exit::Signal(15)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_whose_logs_did_not_come_back_is_a_failure() {
        let host = Arc::new(FakeHost::new(vec![Attempt {
            exits: Some((secs(1), 0)),
            logs_lost: true,
            ..Default::default()
        }]));
        let (e, _) = drive(job(StepKind::Task), host, &[]).await;
        assert_eq!(e.status, StepStatus::Failed);
        assert_eq!(e.exit, Some(Exit::Code(0)));
        assert_eq!(
            e.error.as_deref(),
            Some("cannot bring the step's logs back: scripted")
        );
    }
}
