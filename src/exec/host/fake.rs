//! A scripted host for the supervisor's tests: no processes, no clock but
//! tokio's (paused in tests), each attempt of a step does what its script
//! says, and every primitive the supervisor calls is logged.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{BoxFuture, Finish, Host, HostError, Running};
use crate::artifact::run_result::{Exit, Leak};
use crate::exec::fetch::Transfer;
use crate::exec::step::StepJob;

/// What one attempt does.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// `spawn` fails with this.
    pub refuse: Option<HostError>,
    /// Exits by itself this long after its start, with this code.
    pub exits: Option<(Duration, i32)>,
    /// Exits on SIGTERM (or the step's stop signal) unless set.
    pub deaf: bool,
    /// Writes these bytes to stdout at these times after its start.
    pub output: Vec<(Duration, &'static [u8])>,
    /// Listens on its port from this long after its start.
    pub listens: Option<Duration>,
    /// Its host stops answering this long after its start.
    pub lost: Option<Duration>,
    /// Its logs cannot be brought back when it ends.
    pub logs_lost: bool,
}

/// Calls the supervisor made, in order: `spawn`, `signal TERM`, `finish`…
pub type Log = Arc<Mutex<Vec<String>>>;

pub struct FakeHost {
    attempts: Mutex<VecDeque<Attempt>>,
    pub log: Log,
}

impl FakeHost {
    pub fn new(attempts: Vec<Attempt>) -> FakeHost {
        FakeHost {
            attempts: Mutex::new(attempts.into()),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

fn note(log: &Log, what: String) {
    if let Ok(mut l) = log.lock() {
        l.push(what);
    }
}

impl Host for FakeHost {
    fn prepare<'a>(&'a self, _: &'a str, _: &'a [String]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn spawn<'a>(
        &'a self,
        _job: &'a StepJob,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, HostError>> {
        Box::pin(async move {
            note(&self.log, format!("spawn {attempt}"));
            let a = self
                .attempts
                .lock()
                .ok()
                .and_then(|mut q| q.pop_front())
                .unwrap_or_default();
            if let Some(e) = a.refuse {
                return Err(e);
            }
            Ok(Box::new(FakeRunning {
                started: Instant::now(),
                exit_at: a.exits.map(|(d, c)| (Instant::now() + d, Exit::Code(c))),
                script: a,
                read: 0,
                log: Arc::clone(&self.log),
            }) as Box<dyn Running>)
        })
    }

    fn set_aside<'a>(
        &'a self,
        _dir: &'a str,
        _suffix: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn fetch<'a>(
        &'a self,
        _: &'a str,
        _: &'a [String],
        _: &'a Path,
        _: crate::exec::fetch::Limits,
    ) -> BoxFuture<'a, Vec<Transfer>> {
        Box::pin(async { Vec::new() })
    }

    fn sweep<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async { Vec::new() })
    }
}

struct FakeRunning {
    started: Instant,
    script: Attempt,
    exit_at: Option<(Instant, Exit)>,
    /// Output chunks handed out so far.
    read: usize,
    log: Log,
}

impl FakeRunning {
    fn check_lost(&self) -> Result<(), HostError> {
        match self.script.lost {
            Some(d) if Instant::now() >= self.started + d => Err(HostError::Lost {
                host: "fake".into(),
                reason: "scripted".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl Running for FakeRunning {
    fn pid(&self) -> i32 {
        4242
    }

    fn wait(&mut self, within: Duration) -> BoxFuture<'_, Result<Option<Exit>, HostError>> {
        Box::pin(async move {
            self.check_lost()?;
            let until = Instant::now() + within.min(Duration::from_secs(365 * 24 * 3600));
            let lost_at = self.script.lost.map(|d| self.started + d);
            let wake = [self.exit_at.map(|(t, _)| t), lost_at, Some(until)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until);
            tokio::time::sleep_until(wake).await;
            self.check_lost()?;
            Ok(match self.exit_at {
                Some((t, e)) if Instant::now() >= t => Some(e),
                _ => None,
            })
        })
    }

    fn signal(&mut self, sig: Signal) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            self.check_lost()?;
            note(&self.log, format!("signal {}", sig.as_str()));
            let now = Instant::now();
            let ends = sig == Signal::SIGKILL || !self.script.deaf;
            let already = self.exit_at.is_some_and(|(t, _)| t <= now);
            if ends && !already {
                self.exit_at = Some((now, Exit::Signal(sig as i32)));
            }
            Ok(())
        })
    }

    fn read_new(&mut self) -> BoxFuture<'_, Result<[Vec<u8>; 2], HostError>> {
        Box::pin(async move {
            self.check_lost()?;
            let now = Instant::now();
            let mut out = Vec::new();
            while let Some((d, bytes)) = self.script.output.get(self.read) {
                if self.started + *d > now {
                    break;
                }
                out.extend_from_slice(bytes);
                self.read += 1;
            }
            Ok([out, Vec::new()])
        })
    }

    fn probe_port(
        &mut self,
        _port: u16,
        _limit: Duration,
    ) -> BoxFuture<'_, Result<bool, HostError>> {
        Box::pin(async move {
            self.check_lost()?;
            Ok(self
                .script
                .listens
                .is_some_and(|d| Instant::now() >= self.started + d))
        })
    }

    fn probe_cmd<'a>(
        &'a mut self,
        _: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, Result<bool, HostError>> {
        Box::pin(async { Ok(false) })
    }

    fn finish(&mut self) -> BoxFuture<'_, Finish> {
        Box::pin(async move {
            note(&self.log, "finish".into());
            Finish {
                error: self
                    .script
                    .logs_lost
                    .then(|| "cannot bring the step's logs back: scripted".to_string()),
                ..Finish::default()
            }
        })
    }
}
