//! Reading a run's `events.jsonl` back: what the journal says happened, for
//! `flow resume` and `flow attach`. The journal is fsync'd as it goes, so
//! after `kill -9` of flow it is the exact record of what finished; a torn
//! last line (flow died mid-write) is ignored.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use super::run_result::{RunStatus, StepStatus};
use crate::clock::{ClockOffset, Stamp};

/// One step instance as its journal left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReplay {
    pub status: StepStatus,
    pub attempt: u32,
    pub pid: Option<i32>,
    pub started: Option<Stamp>,
    pub ready: Option<Stamp>,
    pub ended: Option<Stamp>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub errors: Vec<String>,
}

impl Default for StepReplay {
    fn default() -> Self {
        StepReplay {
            status: StepStatus::Pending,
            attempt: 0,
            pid: None,
            started: None,
            ready: None,
            ended: None,
            exit_code: None,
            signal: None,
            errors: Vec::new(),
        }
    }
}

/// One run's journal, replayed.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// `run_started`: when, and the tag its steps carry.
    pub started: Option<Stamp>,
    pub tags: Vec<String>,
    /// `run_ended`: how it ended.
    pub ended: Option<RunStatus>,
    /// flow was interrupted while it ran (Ctrl-C, SIGTERM).
    pub interrupted: bool,
    /// `setup_done` with `ok: false`.
    pub setup_failed: bool,
    pub steps: HashMap<String, StepReplay>,
    /// Services and monitors in the order they became ready.
    pub ready_order: Vec<String>,
    /// Clock offsets measured before the run, by host.
    pub clocks_before: Vec<(String, ClockOffset)>,
    /// Clock samples taken while the run went, in order.
    pub clock_samples: Vec<(String, ClockOffset)>,
}

fn stamp(v: &Value) -> Option<Stamp> {
    Some(Stamp {
        wall_ns: v.get("wall_ns")?.as_u64()?,
        mono_ns: v.get("mono_ns")?.as_u64()?,
    })
}

fn status_of(v: &Value) -> Option<StepStatus> {
    serde_json::from_value(v.clone()).ok()
}

impl Replay {
    /// Replays `events.jsonl` text.
    pub fn parse(text: &str) -> Replay {
        let mut r = Replay::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            r.apply(&v);
        }
        r
    }

    fn apply(&mut self, v: &Value) {
        let at = stamp(v);
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let Some(event) = v.get("event").and_then(Value::as_str) else {
            return;
        };
        match event {
            "run_started" => {
                self.started = self.started.or(at);
                if let Some(t) = s("tag") {
                    self.tags.push(t);
                }
            }
            "run_resumed" => {
                if let Some(t) = s("tag") {
                    self.tags.push(t);
                }
            }
            "run_ended" => {
                self.ended = v
                    .get("status")
                    .and_then(|x| serde_json::from_value(x.clone()).ok());
            }
            "interrupted" => self.interrupted = true,
            "setup_done" => {
                self.setup_failed |= v.get("ok").and_then(Value::as_bool) == Some(false);
            }
            "clock" => {
                let when = s("when");
                if let (Some(host), Some(off)) = (s("host"), v.get("offset_ns"))
                    && let Some(offset_ns) = off.as_i64()
                {
                    let n = |k: &str| v.get(k).and_then(Value::as_u64);
                    let bound_ns = n("bound_ns").unwrap_or(0);
                    let c = ClockOffset {
                        offset_ns,
                        bound_ns,
                        rtt_ns: n("rtt_ns").unwrap_or(bound_ns.saturating_mul(2)),
                        probes: n("probes").and_then(|p| u32::try_from(p).ok()).unwrap_or(1),
                        at_ns: n("at_ns").unwrap_or(at.map_or(0, |a| a.wall_ns)),
                    };
                    match when.as_deref() {
                        Some("before") => {
                            self.clocks_before.retain(|(h, _)| *h != host);
                            self.clocks_before.push((host, c));
                        }
                        Some("during") => self.clock_samples.push((host, c)),
                        _ => {}
                    }
                }
            }
            "step_started" | "step_ready" | "step_ended" | "step_skipped" | "step_retrying" => {
                let Some(id) = s("step") else { return };
                let st = self.steps.entry(id.clone()).or_default();
                match event {
                    "step_started" => {
                        let attempt = v.get("attempt").and_then(Value::as_u64).unwrap_or(1);
                        st.attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
                        st.pid = v
                            .get("pid")
                            .and_then(Value::as_i64)
                            .and_then(|p| i32::try_from(p).ok());
                        st.status = StepStatus::Running;
                        st.started = st.started.or(at);
                        st.ended = None;
                    }
                    "step_ready" => {
                        st.status = StepStatus::Ready;
                        st.ready = at;
                        if !self.ready_order.contains(&id) {
                            self.ready_order.push(id);
                        }
                    }
                    "step_retrying" => {
                        if let Some(e) = s("error") {
                            st.errors.push(e);
                        }
                    }
                    "step_skipped" => {
                        st.status = StepStatus::Skipped;
                        if let Some(e) = s("reason") {
                            st.errors.push(e);
                        }
                    }
                    _ => {
                        st.status = v
                            .get("status")
                            .and_then(status_of)
                            .unwrap_or(StepStatus::Failed);
                        st.ended = at;
                        st.exit_code = v
                            .get("exit_code")
                            .and_then(Value::as_i64)
                            .and_then(|c| i32::try_from(c).ok());
                        st.signal = s("signal");
                        if let Some(e) = s("error") {
                            st.errors.push(e);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Reads a run dir's journal; `None` when the run never started there.
    pub fn read(run_dir: &Path) -> Option<Replay> {
        let text = std::fs::read(run_dir.join("events.jsonl")).ok()?;
        let r = Replay::parse(&String::from_utf8_lossy(&text));
        r.started.is_some().then_some(r)
    }

    /// How a run ended, reading only the journal's tail when it can (the
    /// `run_ended` event is its last line): `Some(None)` when the run
    /// started and never ended, `None` when it never started.
    pub fn ending(run_dir: &Path) -> Option<Option<RunStatus>> {
        let path = run_dir.join("events.jsonl");
        let mut f = std::fs::File::open(path).ok()?;
        let len = f.metadata().ok()?.len();
        const TAIL: u64 = 4096;
        if len > TAIL {
            f.seek(SeekFrom::Start(len - TAIL)).ok()?;
            let mut buf = Vec::with_capacity(TAIL as usize);
            f.read_to_end(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf);
            // The first line may be cut: only whole lines after it count.
            let whole = text.split_once('\n').map_or("", |(_, rest)| rest);
            if let Some(st) = whole.lines().rev().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v.get("event")?.as_str()? == "run_ended")
                    .then(|| serde_json::from_value(v.get("status")?.clone()).ok())
                    .flatten()
            }) {
                return Some(Some(st));
            }
            f.seek(SeekFrom::Start(0)).ok()?;
        }
        let mut text = Vec::new();
        f.read_to_end(&mut text).ok()?;
        let r = Replay::parse(&String::from_utf8_lossy(&text));
        r.started.map(|_| r.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ignored_and_states_follow_the_events() {
        let text = concat!(
            r#"{"wall_ns":1,"mono_ns":1,"event":"run_started","run":"r","tag":"t1"}"#,
            "\n",
            r#"{"wall_ns":2,"mono_ns":2,"event":"clock","host":"h","when":"before","offset_ns":-5,"bound_ns":3}"#,
            "\n",
            r#"{"wall_ns":3,"mono_ns":3,"event":"step_started","step":"srv@h","attempt":1,"pid":42}"#,
            "\n",
            r#"{"wall_ns":4,"mono_ns":4,"event":"step_ready","step":"srv@h"}"#,
            "\n",
            r#"{"wall_ns":5,"mono_ns":5,"event":"step_started","step":"job@h","attempt":1,"pid":43}"#,
            "\n",
            r#"{"wall_ns":6,"mono_ns":6,"event":"step_ended","step":"job@h","status":"failed","exit_code":3,"error":"exited with 3"}"#,
            "\n",
            r#"{"wall_ns":7,"mono_ns":7,"event":"step_end"#,
        );
        let r = Replay::parse(text);
        assert_eq!(r.tags, ["t1"]);
        assert_eq!(r.ended, None);
        assert_eq!(r.steps["srv@h"].status, StepStatus::Ready);
        assert_eq!(r.steps["srv@h"].pid, Some(42));
        assert_eq!(r.steps["job@h"].status, StepStatus::Failed);
        assert_eq!(r.steps["job@h"].exit_code, Some(3));
        assert_eq!(r.ready_order, ["srv@h"]);
        assert_eq!(r.clocks_before[0].1.offset_ns, -5);
    }

    #[test]
    fn the_ending_is_read_from_the_tail_of_a_long_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text =
            String::from(r#"{"wall_ns":1,"mono_ns":1,"event":"run_started","run":"r","tag":"t"}"#);
        text.push('\n');
        for i in 0..200 {
            text.push_str(&format!(
                r#"{{"wall_ns":{i},"mono_ns":{i},"event":"step_retrying","step":"a@h","error":"again"}}"#
            ));
            text.push('\n');
        }
        std::fs::write(dir.path().join("events.jsonl"), &text).expect("write");
        assert_eq!(Replay::ending(dir.path()), Some(None));
        text.push_str(r#"{"wall_ns":9,"mono_ns":9,"event":"run_ended","status":"passed"}"#);
        text.push('\n');
        std::fs::write(dir.path().join("events.jsonl"), &text).expect("write");
        assert_eq!(Replay::ending(dir.path()), Some(Some(RunStatus::Passed)));
        assert_eq!(Replay::ending(&dir.path().join("none")), None);
    }
}
