//! Where steps execute. Everything above this module (the run's owner, the
//! one step supervisor in [`super::step`]) speaks to hosts only through two
//! traits:
//!
//! - [`Host`]: prepare a run dir, start a step detached, fetch files, sweep
//!   what a run left, probe the clock;
//! - [`Running`]: one started attempt of a step: await or poll its exit,
//!   signal its process group, read what its output gained, probe a port or
//!   a command, and finish (kill what is left of its group, bring its logs
//!   home).
//!
//! Implementations: [`local::LocalHost`] (child process groups of flow) and
//! [`ssh::SshHost`] (the helper on the host, driven over one
//! [`agent::Agent`] channel per host). [`HostSet`] is the one place that
//! decides which host is which.

pub mod agent;
#[cfg(test)]
pub mod fake;
pub mod local;
pub mod shell;
pub mod ssh;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use super::fetch::{Limits, Transfer};
use super::step::{Ctl, Report, StepJob};
use crate::artifact::run_result::{Exit, Leak};
use crate::clock::ClockOffset;
use crate::suite::Inventory;

/// A boxed future, so hosts can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What went wrong between flow and a host: the owner tells a host it lost
/// from a command that failed on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host does not answer (its connection died, or an answer did not
    /// come in time). What runs there may well still run.
    #[error("lost host `{host}`: {reason}")]
    Lost { host: String, reason: String },
    /// The host answered: the operation failed there.
    #[error("{0}")]
    Failed(String),
}

/// `(start, end)` of a step on its host's own wall clock, nanoseconds.
pub type StartEnd = (Option<u64>, Option<u64>);

/// What finishing an attempt found.
#[derive(Debug, Default)]
pub struct Finish {
    /// Processes of the step's group still alive after its leader ended;
    /// killed.
    pub leaked: Vec<Leak>,
    /// The host's clock at the command's start and end (remote hosts).
    pub host_times: Option<StartEnd>,
    /// The logs could not be brought home: the step's record is incomplete.
    pub error: Option<String>,
}

/// One host of an invocation.
pub trait Host: Send + Sync {
    /// Creates the run dir (`dir` as the plan says it: `~` is the host
    /// user's home) and copies `files` (controller paths) into it.
    fn prepare<'a>(
        &'a self,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Starts one attempt of a step, detached from flow's own life on hosts
    /// that can outlive it. Output goes to the step's log files (local) or
    /// to files on the host that [`Running::finish`] brings home.
    fn spawn<'a>(
        &'a self,
        job: &'a StepJob,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, HostError>>;

    /// Takes over a step a dead flow started (its leader is `pid`), as
    /// [`Host::spawn`] would have returned it. Only hosts whose steps outlive
    /// flow can.
    fn adopt<'a>(
        &'a self,
        _job: &'a StepJob,
        _pid: i32,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, HostError>> {
        Box::pin(async {
            Err(HostError::Failed(
                "steps on this machine end with flow: there is nothing to take over".into(),
            ))
        })
    }

    /// Renames a run dir that an earlier attempt used to `<dir>.<suffix>`,
    /// so that a new attempt starts in an empty one and nothing of the old
    /// one is lost. Nothing to do when it is not there.
    fn set_aside<'a>(&'a self, dir: &'a str, suffix: &'a str) -> BoxFuture<'a, Result<(), String>>;

    /// Copies what `patterns` match under `dir` into
    /// `run_dir/hosts/<host>/`, one [`Transfer`] per file or problem.
    fn fetch<'a>(
        &'a self,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
        limits: Limits,
    ) -> BoxFuture<'a, Vec<Transfer>>;

    /// Kills what carries a run's `tag` and escaped its step's group.
    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>>;

    /// The host's clock against the controller's; `None` when it is the
    /// controller's own.
    fn clock(&self) -> BoxFuture<'_, Option<ClockOffset>> {
        Box::pin(async { None })
    }
}

/// One started attempt of a step.
pub trait Running: Send {
    /// The leader's pid on its host (= its process group).
    fn pid(&self) -> i32;

    /// Waits up to `within` for the leader to exit; `None` while it runs.
    /// Cancel-safe: dropping the future loses nothing.
    fn wait(&mut self, within: Duration) -> BoxFuture<'_, Result<Option<Exit>, HostError>>;

    /// `sig` to the whole process group, while its leader runs.
    fn signal(&mut self, sig: Signal) -> BoxFuture<'_, Result<(), HostError>>;

    /// What stdout and stderr of this attempt gained since the last call.
    fn read_new(&mut self) -> BoxFuture<'_, Result<[Vec<u8>; 2], HostError>>;

    /// Whether something listens on TCP `port` on the step's host.
    fn probe_port(&mut self, port: u16, limit: Duration) -> BoxFuture<'_, Result<bool, HostError>>;

    /// Whether `cmd` (a shell line) exits 0 within `limit`, run in the
    /// step's dir with the step's environment.
    fn probe_cmd<'a>(
        &'a mut self,
        cmd: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<bool, HostError>>;

    /// After the leader ended (or flow gave up on it): kills what is left of
    /// its group and brings the attempt's logs home.
    fn finish(&mut self) -> BoxFuture<'_, Finish>;
}

/// The run owner's view of all hosts: prepare, start (a supervisor that
/// reports back), fetch, sweep, clocks. [`HostSet`] is the real one; the
/// owner's tests drive it with a scripted fake.
pub trait Launcher: Send + Sync {
    fn prepare<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Starts a supervisor for one step instance; returns the handle that
    /// steers it. Every report goes to `tx`, the last one being `Ended`.
    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl>;

    fn fetch<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
        limits: Limits,
    ) -> BoxFuture<'a, Vec<Transfer>>;

    /// Kills what a run left running after its steps ended, on every host.
    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>>;

    /// [`Host::set_aside`] on `host`.
    fn set_aside<'a>(
        &'a self,
        _host: &'a str,
        _dir: &'a str,
        _suffix: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn clock<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, Option<ClockOffset>> {
        Box::pin(async { None })
    }
}

/// The hosts of an invocation by name: the one place that decides whether a
/// host is this machine or one reached over ssh.
pub struct HostSet {
    hosts: HashMap<String, Arc<dyn Host>>,
    /// What a run's sweep asks: every ssh host, and this machine once
    /// (however many local host names it goes by).
    sweepers: Vec<Arc<dyn Host>>,
    ssh: ssh::Remote,
}

impl HostSet {
    /// For `flow run` of `artifact`: remote hosts are taken (one flow at a
    /// time per workdir) unless `share_hosts`. `resuming`: what a dead
    /// flow left of this artifact is taken over, not killed as leftovers.
    pub fn new(
        inventory: &Inventory,
        names: &[String],
        artifact: &str,
        share_hosts: bool,
        resuming: bool,
    ) -> std::io::Result<HostSet> {
        let owner = ssh::RunOwner {
            artifact: artifact.to_string(),
            lock: !share_hosts,
            resuming,
        };
        let remote = ssh::Remote::new(inventory, names, Some(owner))?;
        Ok(HostSet::of(inventory, names, remote))
    }

    /// For commands that only look and fetch (`flow fetch`): no host is
    /// taken, nothing found there is killed.
    pub fn observer(inventory: &Inventory, names: &[String]) -> std::io::Result<HostSet> {
        let remote = ssh::Remote::new(inventory, names, None)?;
        Ok(HostSet::of(inventory, names, remote))
    }

    fn of(inventory: &Inventory, names: &[String], remote: ssh::Remote) -> HostSet {
        let mut hosts: HashMap<String, Arc<dyn Host>> = HashMap::new();
        let mut sweepers: Vec<Arc<dyn Host>> = Vec::new();
        let mut here_swept = false;
        for name in names {
            // A name the inventory does not hold is the controller's own
            // (where analyze steps run): this machine.
            let (host, here): (Arc<dyn Host>, bool) = match inventory.host(name) {
                Some(h) if !h.is_local() => (Arc::new(remote.host(name)), false),
                _ => (Arc::new(local::LocalHost::new(name)), true),
            };
            if !here || !here_swept {
                sweepers.push(Arc::clone(&host));
                here_swept |= here;
            }
            hosts.insert(name.clone(), host);
        }
        HostSet {
            hosts,
            sweepers,
            ssh: remote,
        }
    }

    fn get(&self, name: &str) -> Result<&Arc<dyn Host>, String> {
        self.hosts
            .get(name)
            .ok_or_else(|| format!("host `{name}` is not among this invocation's hosts"))
    }

    /// Gives the hosts back and closes their connections.
    pub async fn close(&self) {
        self.ssh.close().await;
    }
}

impl Launcher for HostSet {
    fn prepare<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        match self.get(host) {
            Ok(h) => h.prepare(dir, files),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
        match self.get(&job.step.host) {
            Ok(h) => super::step::start(job, Arc::clone(h), tx),
            Err(e) => super::step::refuse(job, e, tx),
        }
    }

    fn fetch<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
        limits: Limits,
    ) -> BoxFuture<'a, Vec<Transfer>> {
        match self.get(host) {
            Ok(h) => h.fetch(dir, patterns, run_dir, limits),
            Err(e) => {
                let t = patterns
                    .iter()
                    .map(|p| Transfer::failed(host, &format!("{dir}/{p}"), &e))
                    .collect();
                Box::pin(async move { t })
            }
        }
    }

    fn set_aside<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        suffix: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        match self.get(host) {
            Ok(h) => h.set_aside(dir, suffix),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async move {
            let sweeps = self.sweepers.iter().map(|h| h.sweep(tag));
            let mut leaks = Vec::new();
            for l in join_all(sweeps).await {
                leaks.extend(l);
            }
            leaks
        })
    }

    fn clock<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<ClockOffset>> {
        match self.get(host) {
            Ok(h) => h.clock(),
            Err(_) => Box::pin(async { None }),
        }
    }
}

/// A file's length; 0 when it is not there.
pub(crate) fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Awaits boxed futures together; their outputs in the order of the input.
pub async fn join_all<'a, T: Send + 'a>(futs: impl Iterator<Item = BoxFuture<'a, T>>) -> Vec<T> {
    let futs: Vec<_> = futs.collect();
    let mut out = Vec::with_capacity(futs.len());
    // Each sweep is a few system calls or one round trip: start them all,
    // then collect.
    let mut pinned: Vec<Option<BoxFuture<'a, T>>> = futs.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in pinned.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}
