//! The owner of one run's state. It starts step supervisors as the DAG
//! allows, takes their reports, and walks the run through its lifecycle:
//! services, monitors and tasks; then monitors and services stopped in
//! reverse order; then every fetch; then analysis. Everything it learns goes
//! to `events.jsonl` at once and to `run_result.json` as the run goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::fetch::{FETCH_LOG_HEADER, Tally, Transfer, check_fetched_links};
use super::host::Launcher;
use super::journal::RunJournal;
use super::process::{self, RUN_TAG_VAR};
use super::progress::{Progress, Tail};
use super::step::{Adopt, Ctl, Ended, Report, StepJob};
use crate::artifact::replay::Replay;
use crate::artifact::run_result::{RunResult, RunStatus, StepResult, StepStatus};
use crate::artifact::{atomic_write, replace_file};
use crate::clock::Stamp;
use crate::plan::{CONTROLLER, RunPlan};
use crate::suite::StepKind;

/// What every run of an invocation shares.
pub struct RunEnv {
    pub artifact_id: String,
    /// Distinguishes this invocation's processes from another flow's.
    pub invocation: String,
    pub verbose: bool,
    pub launcher: Arc<dyn Launcher>,
}

/// How a run begins in this invocation.
#[derive(Debug, Clone, Default)]
pub enum Resume {
    /// From the beginning.
    #[default]
    Fresh,
    /// Again: an earlier attempt, kept in `attempts/<attempt>/`, was
    /// interrupted or failed. `tags` are the tags its steps carried: what
    /// of them still runs is stopped, and what they wrote is fetched into
    /// that attempt's folder, before the hosts' run dirs are set aside.
    Again { attempt: u32, tags: Vec<String> },
    /// Going on from where a flow that died left it: its steps that still
    /// run are taken over, the rest of the DAG follows.
    Adopt(Box<Replay>),
}

/// Analyze steps' path of their run's `clocks.json`.
pub const CLOCKS_VAR: &str = "FLOW_CLOCKS";

/// Interrupt level: 0 none, 1 tear down cleanly, 2 kill now.
pub type Interrupt = watch::Receiver<u8>;

struct Node {
    ctl: Option<watch::Sender<Ctl>>,
    preds: Vec<usize>,
    tail: Option<Tail>,
}

/// Work the owner starts on a clock while the main phase goes, and that
/// reports back when done.
enum Background {
    /// One pass of an incremental fetch step (`every:`).
    Pass {
        idx: usize,
        started: Stamp,
        transfers: Vec<Transfer>,
    },
    /// Every remote host's clock, measured once.
    Clocks(Vec<(String, Option<crate::clock::ClockOffset>)>),
}

/// What the main phase does on a clock besides supervising: `duration:`
/// stops, incremental fetch passes and clock samples.
#[derive(Default)]
struct Timers {
    /// `duration:` steps (by name) whose instances were told to stop.
    due: Vec<String>,
    /// Fetch steps with `every:`: when each one's next pass is due.
    next_pass: Vec<(usize, tokio::time::Instant)>,
    /// Hosts with a pass on the way (one at a time per host).
    passing: Vec<String>,
    next_clock: Option<tokio::time::Instant>,
    clock_busy: bool,
    work: tokio::task::JoinSet<Background>,
}

struct Run<'a> {
    plan: &'a RunPlan,
    env: &'a RunEnv,
    dir: PathBuf,
    tag: String,
    result: RunResult,
    nodes: Vec<Node>,
    /// Services and monitors in the order they became ready.
    started: Vec<usize>,
    journal: RunJournal,
    progress: &'a Progress,
    tx: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
    interrupt: Interrupt,
    level: u8,
    /// Tags of earlier flows' steps in this run (taken over or stopped).
    old_tags: Vec<String>,
    timers: Timers,
}

/// Runs one plan to the end and returns its result (also written to disk).
pub async fn run_one(
    plan: &RunPlan,
    env: &RunEnv,
    journal: RunJournal,
    progress: &Progress,
    interrupt: Interrupt,
    resume: Resume,
) -> RunResult {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut nodes: Vec<Node> = plan
        .steps
        .iter()
        .map(|_| Node {
            ctl: None,
            preds: Vec::new(),
            tail: None,
        })
        .collect();
    let index: std::collections::HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    for e in &plan.edges {
        if let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) {
            nodes[b].preds.push(a);
        }
    }
    let level = *interrupt.borrow();
    let mut run = Run {
        plan,
        env,
        dir: PathBuf::from(&plan.dir),
        tag: format!("{}/{}", env.invocation, plan.id),
        result: RunResult::new(plan, Stamp::now()),
        nodes,
        started: Vec::new(),
        journal,
        progress,
        tx,
        rx,
        interrupt,
        level,
        old_tags: Vec::new(),
        timers: Timers::default(),
    };
    run.go(resume).await;
    run.result
}

impl Run<'_> {
    /// Journals an event (and mirrors it to `FLOW_LOG=flow=debug`).
    fn event(&self, name: &str, fields: Value) {
        tracing::debug!(run = %self.plan.id, "{name} {fields}");
        let fields = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.journal.event(Stamp::now(), name, fields);
    }

    /// Rewrites `run_result.json`; only the final version is fsync'd (the
    /// journal is the durable record while the run goes).
    fn write_result(&mut self, last: bool) {
        let path = self.dir.join("run_result.json");
        let bytes = match serde_json::to_vec_pretty(&self.result) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot serialize the result of {}: {e}", self.plan.id);
                return;
            }
        };
        let written = if last {
            atomic_write(&path, &bytes)
        } else {
            replace_file(&path, &bytes)
        };
        if let Err(e) = written {
            // Not fatal: events.jsonl holds the same facts.
            self.progress
                .warn(&format!("cannot write `{}`: {e}", path.display()));
        }
    }

    fn step(&mut self, idx: usize) -> &mut StepResult {
        &mut self.result.steps[idx]
    }

    fn kind(&self, idx: usize) -> StepKind {
        self.plan.steps[idx].kind
    }

    async fn go(&mut self, resume: Resume) {
        let plan = self.plan;
        let adopted = match resume {
            Resume::Adopt(replay) => Some(replay),
            Resume::Again { attempt, tags } => {
                self.rescue(attempt, &tags).await;
                None
            }
            Resume::Fresh => None,
        };
        self.progress.run_started(plan);
        let setup_ok;
        let mut reason = None;
        if let Some(replay) = adopted {
            self.restore(&replay);
            self.event(
                "run_resumed",
                json!({"run": plan.id, "pid": std::process::id(), "tag": self.tag}),
            );
            self.write_result(false);
            setup_ok = true;
            self.adopt_running();
            reason = self.main_phase().await;
        } else {
            self.event(
                "run_started",
                json!({"run": plan.id, "pid": std::process::id(), "tag": self.tag}),
            );
            if let Err(e) = std::fs::create_dir_all(self.dir.join("logs")) {
                self.result.errors.push(format!(
                    "cannot create `{}`: {e}",
                    self.dir.join("logs").display()
                ));
            }
            self.write_result(false);
            setup_ok = self.result.errors.is_empty() && self.setup().await;
            if setup_ok {
                self.measure_clocks(true).await;
                reason = self.main_phase().await;
            } else {
                for i in 0..plan.steps.len() {
                    if !matches!(self.kind(i), StepKind::Fetch) {
                        self.skip(i, "not started: the run's setup failed");
                    }
                }
            }
        }
        self.teardown(reason).await;
        if self.level < 2 {
            self.fetch().await;
            if setup_ok {
                self.measure_clocks(false).await;
            }
            self.correct_host_times();
        }
        // The hosts' event files on one timeline, before analysis reads it:
        // declared data that cannot be merged fails the run.
        let mut timeline_ok = true;
        if setup_ok && self.level < 2 && !self.plan.timeline.is_empty() {
            match crate::results::timeline::merge(&self.dir, &self.result, &self.plan.timeline) {
                Ok(m) => self.event(
                    "timeline",
                    json!({"events": m.events, "hosts": m.hosts, "files": m.files, "max_bound_ns": m.max_bound_ns}),
                ),
                Err(errors) => {
                    timeline_ok = false;
                    self.event("timeline", json!({"errors": errors}));
                    self.result.errors.extend(errors);
                }
            }
        }
        // Analysis sees the whole clock record, the measurements after the
        // run included (`clocks.json`, and `run_result.json` as it is now).
        if self.plan.steps.iter().any(|s| s.kind == StepKind::Analyze) {
            if let Err(e) =
                crate::artifact::run_result::ClockRecord::of(&self.result).write(&self.dir)
            {
                self.result.errors.push(format!(
                    "cannot write `{}`: {e}",
                    self.dir
                        .join(crate::artifact::run_result::CLOCKS_FILE)
                        .display()
                ));
            }
            self.write_result(false);
        }
        self.analyze().await;
        if !self.plan.metrics.is_empty() {
            self.result.metrics =
                crate::results::extract::extract_all(&self.dir, &self.plan.metrics);
            let failed: Vec<&String> = self
                .result
                .metrics
                .iter()
                .filter(|(_, v)| v.value.is_none())
                .map(|(k, _)| k)
                .collect();
            self.event(
                "metrics",
                json!({"extracted": self.result.metrics.len() - failed.len(), "failed": failed}),
            );
        }
        let mut leaks = self.env.launcher.sweep(&self.tag).await;
        for t in self.old_tags.clone() {
            leaks.extend(self.env.launcher.sweep(&t).await);
        }
        for l in &leaks {
            self.event("leak", json!({"pid": l.pid, "cmdline": l.cmdline}));
        }
        if !leaks.is_empty() {
            let list: Vec<String> = leaks
                .iter()
                .map(|l| format!("{} `{}`", l.pid, l.cmdline))
                .collect();
            self.result.errors.push(format!(
                "{} process{} outlived the run and {} killed: {}",
                leaks.len(),
                if leaks.len() == 1 { "" } else { "es" },
                if leaks.len() == 1 { "was" } else { "were" },
                list.join(", ")
            ));
        }
        let ended = Stamp::now();
        self.result.ended = Some(ended);
        self.result.duration_ms = Some(self.result.started.ms_until(&ended));
        self.result.current_step = None;
        self.result.status = if self.level > 0 {
            RunStatus::Interrupted
        } else if !setup_ok || !timeline_ok || self.result.steps.iter().any(StepResult::fails_run) {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        };
        // The result first, synced: a journal that says the run ended
        // then always has its final result beside it (`flow resume` keeps
        // such a run as it is).
        self.write_result(true);
        self.event(
            "run_ended",
            json!({"status": self.result.status, "duration_ms": self.result.duration_ms}),
        );
    }

    /// Takes the state a dead flow's journal left: what ended stays ended,
    /// what ran is taken over (see [`Run::adopt_running`]); fetch and
    /// analyze steps are done again, whole.
    fn restore(&mut self, replay: &Replay) {
        if let Some(at) = replay.started {
            self.result.started = at;
        }
        self.old_tags = replay.tags.clone();
        // The last result written holds what the journal does not (host
        // times, leaks, stop signals).
        let old: Option<RunResult> = std::fs::read(self.dir.join("run_result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        for (i, st) in self.result.steps.iter_mut().enumerate() {
            let Some(r) = replay.steps.get(&st.id) else {
                continue;
            };
            let kind = self.plan.steps[i].kind;
            if matches!(kind, StepKind::Fetch | StepKind::Analyze)
                && r.status != StepStatus::Skipped
            {
                continue;
            }
            st.status = r.status;
            st.attempts = r.attempt;
            st.pid = r.pid;
            st.started = r.started;
            st.ready = r.ready;
            st.ended = r.ended;
            st.duration_ms = match (r.started, r.ended) {
                (Some(a), Some(b)) => Some(a.ms_until(&b)),
                _ => None,
            };
            st.exit_code = r.exit_code;
            st.signal = r.signal.clone();
            st.errors = r.errors.clone();
            if st.status.is_terminal()
                && let Some(o) = old
                    .as_ref()
                    .and_then(|o| o.steps.iter().find(|s| s.id == st.id))
                && o.status == st.status
            {
                st.host_times = o.host_times.clone();
                st.leaked = o.leaked.clone();
                st.stop_signals = o.stop_signals.clone();
            }
        }
        for (host, c) in &replay.clocks_before {
            self.result.clocks.entry(host.clone()).or_default().before = Some(*c);
        }
        for (host, c) in &replay.clock_samples {
            self.result
                .clocks
                .entry(host.clone())
                .or_default()
                .samples
                .push(*c);
        }
        self.started = replay
            .ready_order
            .iter()
            .filter_map(|id| self.plan.steps.iter().position(|s| s.id == *id))
            .collect();
    }

    /// Starts a supervisor for every step the dead flow left running,
    /// taking it over on its host.
    fn adopt_running(&mut self) {
        for i in 0..self.plan.steps.len() {
            let st = &self.result.steps[i];
            if !self.in_main_phase(i)
                || !matches!(st.status, StepStatus::Running | StepStatus::Ready)
            {
                continue;
            }
            let Some(pid) = st.pid else {
                let st = self.step(i);
                st.status = StepStatus::Failed;
                st.errors
                    .push("flow died as it started this step: no process to take over".into());
                continue;
            };
            let elapsed = st.started.map_or(Duration::ZERO, |s| {
                Duration::from_nanos(Stamp::now().wall_ns.saturating_sub(s.wall_ns))
            });
            let adopt = Adopt {
                attempt: st.attempts.max(1),
                pid,
                ready: st.status == StepStatus::Ready,
                elapsed,
            };
            let id = st.id.clone();
            self.event("step_adopting", json!({"step": id, "pid": pid}));
            self.launch_with(i, Some(adopt));
        }
    }

    /// Before a run starts again: stops what its earlier attempt left
    /// running, fetches what that attempt wrote into
    /// `attempts/<attempt>/` (recorded in its `fetch.log` and journal), and
    /// moves the hosts' run dirs aside, so nothing of it is lost or mixed
    /// with the new attempt's data.
    async fn rescue(&mut self, attempt: u32, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        let dest = self.dir.join("attempts").join(attempt.to_string());
        let mut stopped = 0;
        for t in tags {
            stopped += self.env.launcher.sweep(t).await.len();
        }
        let mut tally = Tally::default();
        for s in self.plan.steps.iter().filter(|s| s.kind == StepKind::Fetch) {
            for t in self
                .env
                .launcher
                .fetch(&s.host, &s.cwd, &s.paths, &dest, s.limits())
                .await
            {
                tally.add(&t);
            }
        }
        let failed = tally.failed;
        let suffix = format!("attempt-{attempt}");
        let mut dirs: Vec<(&str, &str)> = Vec::new();
        for s in &self.plan.steps {
            if s.host != CONTROLLER && !dirs.contains(&(s.host.as_str(), s.cwd.as_str())) {
                dirs.push((s.host.as_str(), s.cwd.as_str()));
            }
        }
        let mut errors = Vec::new();
        // Only when the fetch got everything: otherwise the data stays
        // where the next attempt's would go, and that attempt fails.
        if failed == 0 {
            for (host, dir) in dirs {
                if let Err(e) = self.env.launcher.set_aside(host, dir, &suffix).await {
                    errors.push(e);
                }
            }
        } else {
            errors.push(format!(
                "{failed} file{} of attempt {attempt} could not be fetched (see `{}`); its run dirs were left in place",
                if failed == 1 { "" } else { "s" },
                dest.join("fetch.log").display()
            ));
        }
        if let Err(e) =
            std::fs::create_dir_all(&dest).and_then(|()| tally.append_to(&dest.join("fetch.log")))
        {
            errors.push(format!(
                "cannot write `{}`: {e}",
                dest.join("fetch.log").display()
            ));
        }
        let fields = json!({"attempt": attempt, "stopped": stopped, "files": tally.files, "bytes": tally.bytes, "failed": failed});
        append_event(&dest.join("events.jsonl"), "rescued", &fields);
        self.event("rescued", fields);
        self.result.errors.extend(errors);
    }

    /// Creates each host's run dir and pushes the workload's files into it,
    /// all hosts at once.
    async fn setup(&mut self) -> bool {
        let plan = self.plan;
        let mut dirs: Vec<(String, String)> = Vec::new();
        for s in &plan.steps {
            if s.host != CONTROLLER && !dirs.iter().any(|(h, _)| *h == s.host) {
                dirs.push((s.host.clone(), s.cwd.clone()));
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (host, dir) in dirs.clone() {
            let launcher = Arc::clone(&self.env.launcher);
            let files = plan.files.clone();
            set.spawn(async move { launcher.prepare(&host, &dir, &files).await });
        }
        let mut ok = true;
        while let Some(r) = set.join_next().await {
            if let Err(e) = r.unwrap_or_else(|e| Err(format!("internal error: {e}"))) {
                self.result.errors.push(e);
                ok = false;
            }
        }
        self.result.errors.sort();
        self.event("setup_done", json!({"ok": ok, "hosts": dirs.len()}));
        ok
    }

    /// Each remote host's clock offset, all hosts at once.
    async fn measure_clocks(&mut self, before: bool) {
        let mut set = tokio::task::JoinSet::new();
        for host in &self.plan.hosts {
            let launcher = Arc::clone(&self.env.launcher);
            let host = host.clone();
            set.spawn(async move {
                let c = launcher.clock(&host).await;
                (host, c)
            });
        }
        while let Some(Ok((host, c))) = set.join_next().await {
            let Some(c) = c else { continue };
            self.event(
                "clock",
                json!({"host": host, "when": if before { "before" } else { "after" }, "offset_ns": c.offset_ns, "bound_ns": c.bound_ns, "rtt_ns": c.rtt_ns, "probes": c.probes, "at_ns": c.at_ns}),
            );
            let entry = self.result.clocks.entry(host).or_default();
            if before {
                entry.before = Some(c);
            } else {
                entry.after = Some(c);
            }
        }
    }

    /// Puts remote steps' host times onto the controller's clock.
    fn correct_host_times(&mut self) {
        for st in &mut self.result.steps {
            let Some(t) = &mut st.host_times else {
                continue;
            };
            let Some(c) = self.result.clocks.get(&st.host) else {
                continue;
            };
            let (b, a) = (c.before.as_ref(), c.after.as_ref());
            let started = t
                .started_host_ns
                .and_then(|h| crate::clock::to_controller(h, b, a));
            let ended = t
                .ended_host_ns
                .and_then(|h| crate::clock::to_controller(h, b, a));
            t.started_ns = started.map(|x| x.0);
            t.ended_ns = ended.map(|x| x.0);
            t.bound_ns = started.or(ended).map(|x| x.1);
        }
    }

    fn job(&self, idx: usize) -> StepJob {
        let s = &self.plan.steps[idx];
        let logs = self.dir.join("logs");
        let mut env: Vec<(String, String)> =
            s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.extend([
            ("FLOW_RUN_ID".to_string(), self.plan.id.clone()),
            ("FLOW_RUN_DIR".to_string(), self.plan.dir.clone()),
            ("FLOW_ARTIFACT_ID".to_string(), self.env.artifact_id.clone()),
            ("FLOW_STEP".to_string(), s.step.clone()),
            ("FLOW_HOST".to_string(), s.host.clone()),
            (RUN_TAG_VAR.to_string(), self.tag.clone()),
            (
                super::controller::VAR.to_string(),
                super::controller::identity().to_string(),
            ),
        ]);
        if s.kind == StepKind::Analyze {
            env.push((
                CLOCKS_VAR.to_string(),
                self.dir
                    .join(crate::artifact::run_result::CLOCKS_FILE)
                    .display()
                    .to_string(),
            ));
        }
        StepJob {
            idx,
            step: s.clone(),
            cwd: PathBuf::from(&s.cwd),
            out: logs.join(format!("{}.out", s.id)),
            err: logs.join(format!("{}.err", s.id)),
            env,
            live: self.env.verbose,
            adopt: None,
        }
    }

    fn launch(&mut self, idx: usize) {
        self.launch_with(idx, None);
    }

    fn launch_with(&mut self, idx: usize, adopt: Option<Adopt>) {
        let mut job = self.job(idx);
        job.adopt = adopt;
        if self.env.verbose {
            self.nodes[idx].tail = Some(self.progress.tail(&job.step.id, &job.out, &job.err));
        }
        let ctl = self.env.launcher.start(job, self.tx.clone());
        self.nodes[idx].ctl = Some(ctl);
        if !adopt.is_some_and(|a| a.ready) {
            self.step(idx).status = StepStatus::Running;
        }
        self.result.current_step = Some(self.plan.steps[idx].id.clone());
        self.progress.step(&self.plan.id, &self.plan.steps[idx].id);
    }

    fn skip(&mut self, idx: usize, why: &str) {
        let st = self.step(idx);
        if st.status == StepStatus::Pending {
            st.status = StepStatus::Skipped;
            st.errors.push(why.to_string());
            let id = st.id.clone();
            self.event("step_skipped", json!({"step": id, "reason": why}));
        }
    }

    /// A predecessor lets its successors start.
    fn satisfies(&self, idx: usize) -> bool {
        let st = &self.result.steps[idx];
        match st.status {
            StepStatus::Ready => true,
            StepStatus::Passed => true,
            StepStatus::Failed => st.allow_failure,
            _ => false,
        }
    }

    /// A predecessor will never let its successors start.
    fn blocks(&self, idx: usize) -> bool {
        let st = &self.result.steps[idx];
        st.status.is_terminal() && !self.satisfies(idx)
    }

    fn in_main_phase(&self, idx: usize) -> bool {
        matches!(
            self.kind(idx),
            StepKind::Service | StepKind::Monitor | StepKind::Task
        )
    }

    /// Services, monitors and tasks. Returns why it ended early, if it did.
    async fn main_phase(&mut self) -> Option<Ctl> {
        let n = self.plan.steps.len();
        self.arm_timers();
        loop {
            if self.level > 0 {
                return Some(Ctl::Interrupt);
            }
            // Start everything the DAG allows; skip what it never will.
            let mut changed = true;
            while changed {
                changed = false;
                for i in 0..n {
                    if !self.in_main_phase(i) || self.result.steps[i].status != StepStatus::Pending
                    {
                        continue;
                    }
                    let preds = self.nodes[i].preds.clone();
                    if let Some(&p) = preds.iter().find(|&&p| !self.in_main_phase(p)) {
                        let why = format!(
                            "skipped: it needs `{}`, a {} step, which runs after the services stop",
                            self.plan.steps[p].id,
                            self.kind(p).as_str()
                        );
                        self.skip(i, &why);
                        changed = true;
                    } else if let Some(&p) = preds.iter().find(|&&p| self.blocks(p)) {
                        let why = format!(
                            "skipped: `{}` {}",
                            self.plan.steps[p].id,
                            self.result.steps[p].status.as_str()
                        );
                        self.skip(i, &why);
                        changed = true;
                    } else if preds.iter().all(|&p| self.satisfies(p)) {
                        self.launch(i);
                        changed = true;
                    }
                }
            }
            // A `duration:` step keeps the run going until it is stopped.
            let busy = (0..n).any(|i| {
                self.in_main_phase(i)
                    && match self.result.steps[i].status {
                        StepStatus::Running => true,
                        StepStatus::Ready => self.plan.steps[i].duration_ms.is_some(),
                        _ => false,
                    }
            });
            if !busy {
                return None;
            }
            self.on_timers();
            let wake = self.next_wake();
            let working = !self.timers.work.is_empty();
            tokio::select! {
                Some(r) = self.rx.recv() => {
                    if let Some(why) = self.handle(r) {
                        return Some(why);
                    }
                }
                lvl = next_level(&mut self.interrupt, self.level) => {
                    self.on_interrupt(lvl);
                }
                () = super::step::sleep_until(wake) => {}
                Some(done) = self.timers.work.join_next(), if working => {
                    match done {
                        Ok(b) => self.on_background(b),
                        Err(e) => self.progress.warn(&format!("internal error: {e}")),
                    }
                }
            }
        }
    }

    /// When each `duration:` step is due to stop, on the wall clock: once
    /// every instance is up (ready, or ended), the latest `ready` plus the
    /// duration, so that every host collects for at least that long and all
    /// stop at once. `(step name, deadline ns, instances)`.
    fn duration_deadlines(&self) -> Vec<(String, u64, Vec<usize>)> {
        let mut groups: Vec<(String, u64, Vec<usize>)> = Vec::new();
        for (i, s) in self.plan.steps.iter().enumerate() {
            let Some(ms) = s.duration_ms else { continue };
            if self.timers.due.contains(&s.step) {
                continue;
            }
            match groups.iter_mut().find(|g| g.0 == s.step) {
                Some(g) => g.2.push(i),
                None => groups.push((s.step.clone(), ms, vec![i])),
            }
        }
        groups
            .into_iter()
            .filter_map(|(name, ms, idxs)| {
                let sts: Vec<&StepResult> = idxs.iter().map(|&i| &self.result.steps[i]).collect();
                if sts
                    .iter()
                    .any(|s| matches!(s.status, StepStatus::Pending | StepStatus::Running))
                {
                    return None;
                }
                let last_ready = sts
                    .iter()
                    .filter(|s| s.status == StepStatus::Ready)
                    .filter_map(|s| s.ready.map(|r| r.wall_ns))
                    .max()?;
                Some((
                    name,
                    last_ready.saturating_add(ms.saturating_mul(1_000_000)),
                    idxs,
                ))
            })
            .collect()
    }

    /// The next instant something on a clock is due.
    fn next_wake(&self) -> Option<tokio::time::Instant> {
        let now_wall = Stamp::now().wall_ns;
        let now = tokio::time::Instant::now();
        let durations = self
            .duration_deadlines()
            .into_iter()
            .map(|(_, at, _)| now + Duration::from_nanos(at.saturating_sub(now_wall)));
        let passes = self
            .timers
            .next_pass
            .iter()
            .filter(|(i, _)| !self.timers.passing.contains(&self.plan.steps[*i].host))
            .map(|(_, at)| *at);
        let clock = self.timers.next_clock.filter(|_| !self.timers.clock_busy);
        durations.chain(passes).chain(clock).min()
    }

    /// Starts what is due: stops of `duration:` steps, fetch passes, a
    /// clock sample.
    fn on_timers(&mut self) {
        let now_wall = Stamp::now().wall_ns;
        for (name, at, idxs) in self.duration_deadlines() {
            if at > now_wall {
                continue;
            }
            self.timers.due.push(name.clone());
            let hosts: Vec<&str> = idxs
                .iter()
                .map(|&i| self.plan.steps[i].host.as_str())
                .collect();
            self.event(
                "duration_reached",
                json!({"step": name, "duration_ms": self.plan.steps[idxs[0]].duration_ms, "hosts": hosts}),
            );
            // All hosts at once: every instance is told before any is
            // waited for.
            for &i in &idxs {
                if self.result.steps[i].status != StepStatus::Ready {
                    continue;
                }
                if let Some(c) = &self.nodes[i].ctl {
                    let _ = c.send(Ctl::Stop);
                    let id = self.plan.steps[i].id.clone();
                    self.event("step_stopping", json!({"step": id, "reason": "duration"}));
                }
            }
        }
        let now = tokio::time::Instant::now();
        // A host where nothing of the run goes on any more writes nothing
        // new: its passes end (the final fetch follows the teardown).
        let live_hosts: Vec<&str> = (0..self.plan.steps.len())
            .filter(|&i| {
                self.in_main_phase(i)
                    && matches!(
                        self.result.steps[i].status,
                        StepStatus::Pending | StepStatus::Running | StepStatus::Ready
                    )
            })
            .map(|i| self.plan.steps[i].host.as_str())
            .collect();
        let plan = self.plan;
        self.timers
            .next_pass
            .retain(|(i, _)| live_hosts.contains(&plan.steps[*i].host.as_str()));
        let due: Vec<usize> = self
            .timers
            .next_pass
            .iter()
            .filter(|(i, at)| {
                *at <= now && !self.timers.passing.contains(&self.plan.steps[*i].host)
            })
            .map(|(i, _)| *i)
            .collect();
        for idx in due {
            self.timers.next_pass.retain(|(i, _)| *i != idx);
            let s = &self.plan.steps[idx];
            self.timers.passing.push(s.host.clone());
            let launcher = Arc::clone(&self.env.launcher);
            let (host, cwd, paths, dir, limits) = (
                s.host.clone(),
                s.cwd.clone(),
                s.paths.clone(),
                self.dir.clone(),
                s.limits(),
            );
            self.timers.work.spawn(async move {
                let started = Stamp::now();
                let transfers = launcher.fetch(&host, &cwd, &paths, &dir, limits).await;
                Background::Pass {
                    idx,
                    started,
                    transfers,
                }
            });
        }
        if self.timers.next_clock.is_some_and(|at| at <= now) && !self.timers.clock_busy {
            self.timers.clock_busy = true;
            let launcher = Arc::clone(&self.env.launcher);
            let hosts = self.plan.hosts.clone();
            self.timers.work.spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for host in hosts {
                    let launcher = Arc::clone(&launcher);
                    set.spawn(async move {
                        let c = launcher.clock(&host).await;
                        (host, c)
                    });
                }
                let mut got = Vec::new();
                while let Some(Ok(x)) = set.join_next().await {
                    got.push(x);
                }
                Background::Clocks(got)
            });
        }
    }

    /// Arms the timers of the main phase: incremental fetches and clock
    /// samples.
    fn arm_timers(&mut self) {
        let now = tokio::time::Instant::now();
        for (i, s) in self.plan.steps.iter().enumerate() {
            if let Some(ms) = s.every_ms {
                self.timers
                    .next_pass
                    .push((i, now + Duration::from_millis(ms)));
            }
        }
        let every = self
            .plan
            .clock_every_ms
            .unwrap_or(crate::plan::CLOCK_EVERY_DEFAULT_MS);
        self.timers.next_clock = (every > 0).then(|| now + Duration::from_millis(every));
    }

    fn on_background(&mut self, done: Background) {
        match done {
            Background::Pass {
                idx,
                started,
                transfers,
            } => {
                let s = &self.plan.steps[idx];
                self.timers.passing.retain(|h| *h != s.host);
                if let Some(ms) = s.every_ms {
                    self.timers
                        .next_pass
                        .push((idx, tokio::time::Instant::now() + Duration::from_millis(ms)));
                }
                self.record_pass(idx, started, &transfers, false);
            }
            Background::Clocks(got) => {
                self.timers.clock_busy = false;
                let every = self
                    .plan
                    .clock_every_ms
                    .unwrap_or(crate::plan::CLOCK_EVERY_DEFAULT_MS);
                self.timers.next_clock =
                    Some(tokio::time::Instant::now() + Duration::from_millis(every.max(1)));
                for (host, c) in got {
                    let Some(c) = c else { continue };
                    self.event(
                        "clock",
                        json!({"host": host, "when": "during", "offset_ns": c.offset_ns, "bound_ns": c.bound_ns, "rtt_ns": c.rtt_ns, "probes": c.probes, "at_ns": c.at_ns}),
                    );
                    self.result.clocks.entry(host).or_default().samples.push(c);
                }
            }
        }
    }

    /// Records a fetch pass (incremental, or the final fetch): its lines in
    /// `fetch.passes.log`, a journal event, and the step's progress in
    /// `run_result.json`.
    fn record_pass(&mut self, idx: usize, started: Stamp, transfers: &[Transfer], last: bool) {
        let id = self.plan.steps[idx].id.clone();
        let tally = Tally::of(transfers);
        let progress = self.result.fetched.entry(id.clone()).or_default();
        progress.passes += 1;
        progress.files = tally.files;
        progress.bytes = tally.bytes;
        progress.failed = tally.failed;
        progress.at = Some(Stamp::now());
        progress.error = transfers
            .iter()
            .find(|t| !t.ok() && t.status != "missing" && !t.status.starts_with("skipped"))
            .map(|t| format!("{}: {}", t.remote, t.status));
        let pass = progress.passes;
        let log = self.dir.join(super::fetch::PASSES_LOG);
        let incremental = self.plan.steps[idx].every_ms.is_some();
        if incremental && let Err(e) = tally.append_pass_to(&log, pass, last) {
            self.progress
                .warn(&format!("cannot write `{}`: {e}", log.display()));
        }
        self.event(
            "fetch_pass",
            json!({"step": id, "pass": pass, "final": last, "files": tally.files, "bytes": tally.bytes, "missing": tally.missing, "failed": tally.failed, "ms": started.ms_until(&Stamp::now())}),
        );
        if !last {
            self.write_result(false);
        }
    }

    /// Waits for the passes and samples still on the way (before the final
    /// fetch, which writes where they do).
    async fn drain_timers(&mut self) {
        self.timers.next_pass.clear();
        self.timers.next_clock = None;
        while let Some(done) = self.timers.work.join_next().await {
            if let Ok(b) = done {
                self.on_background(b);
            }
        }
        self.timers.next_pass.clear();
        self.timers.next_clock = None;
    }

    fn on_interrupt(&mut self, lvl: u8) {
        self.level = lvl;
        self.event("interrupted", json!({"level": lvl}));
        if lvl >= 2 {
            for n in &self.nodes {
                if let Some(c) = &n.ctl {
                    let _ = c.send(Ctl::Kill);
                }
            }
        }
    }

    /// Applies a supervisor's report; returns a reason to end the main
    /// phase early (a service or monitor failed after it was ready).
    fn handle(&mut self, r: Report) -> Option<Ctl> {
        match r {
            Report::Started {
                idx,
                pid,
                attempt,
                at,
                adopted,
            } => {
                let st = self.step(idx);
                st.attempts = attempt;
                st.pid = Some(pid);
                st.started.get_or_insert(at);
                let id = st.id.clone();
                let name = if adopted {
                    "step_adopted"
                } else {
                    "step_started"
                };
                self.event(name, json!({"step": id, "attempt": attempt, "pid": pid}));
                self.write_result(false);
                None
            }
            Report::Ready { idx, at } => {
                let st = self.step(idx);
                st.status = StepStatus::Ready;
                st.ready = Some(at);
                let id = st.id.clone();
                if !self.started.contains(&idx) {
                    self.started.push(idx);
                }
                self.event("step_ready", json!({"step": id}));
                self.write_result(false);
                None
            }
            Report::Retrying { idx, error } => {
                let st = self.step(idx);
                st.errors.push(error.clone());
                let id = st.id.clone();
                self.event("step_retrying", json!({"step": id, "error": error}));
                None
            }
            Report::Ended(e) => {
                let was_ready = self.result.steps[e.idx].status == StepStatus::Ready;
                let idx = e.idx;
                let host_lost = e.host_lost;
                self.finish_step(*e);
                let fails = self.result.steps[idx].fails_run();
                let background = matches!(self.kind(idx), StepKind::Service | StepKind::Monitor);
                // While others still run; the last one's end is written
                // with what follows it (teardown, fetch, the final result).
                if self.nodes.iter().any(|n| n.ctl.is_some()) {
                    self.write_result(false);
                }
                let s = &self.plan.steps[idx];
                if background && was_ready && fails && host_lost && s.continue_on_host_loss {
                    // The run fails (that host's data ends here), but the
                    // other hosts' collection goes on to its end.
                    let (host, id) = (s.host.clone(), s.id.clone());
                    self.event(
                        "host_lost",
                        json!({"host": host, "step": id, "on_host_loss": "continue"}),
                    );
                    self.progress.warn(&format!(
                        "host `{host}` was lost: `{id}` ended there; the run's other steps go on (on_host_loss: continue)"
                    ));
                    return None;
                }
                (background && was_ready && fails).then_some(Ctl::Cancel)
            }
        }
    }

    fn finish_step(&mut self, e: Ended) {
        if let Some(t) = self.nodes[e.idx].tail.take() {
            t.finish();
        }
        self.nodes[e.idx].ctl = None;
        let st = &mut self.result.steps[e.idx];
        st.status = e.status;
        st.ended = Some(e.at);
        st.duration_ms = st.started.map(|s| s.ms_until(&e.at));
        match e.exit {
            Some(process::Exit::Code(c)) => st.exit_code = Some(c),
            Some(process::Exit::Signal(s)) => st.signal = Some(process::signal_name(s)),
            None => {}
        }
        if let Some(err) = e.error {
            st.errors.push(err);
        }
        st.stop_signals = e.stop_signals;
        st.leaked.extend(e.leaked);
        if let Some((started, ended)) = e.host_times
            && (started.is_some() || ended.is_some())
        {
            st.host_times = Some(crate::artifact::run_result::HostTimes {
                started_host_ns: started,
                ended_host_ns: ended,
                ..Default::default()
            });
        }
        let fields = json!({
            "step": st.id,
            "status": st.status,
            "exit_code": st.exit_code,
            "signal": st.signal,
            "error": st.errors.last(),
            "leaked": st.leaked.iter().map(|l| l.pid).collect::<Vec<_>>(),
        });
        let id = st.id.clone();
        let status = st.status;
        self.event("step_ended", fields);
        self.progress.step_ended(&self.plan.id, &id, status);
    }

    /// Sends `ctl` to a started step and waits for it to end, taking other
    /// reports meanwhile.
    async fn stop_and_wait(&mut self, idx: usize, ctl: Ctl) {
        let Some(c) = &self.nodes[idx].ctl else {
            return;
        };
        let ctl = if self.level >= 2 { Ctl::Kill } else { ctl };
        let _ = c.send(ctl);
        let id = self.plan.steps[idx].id.clone();
        self.event("step_stopping", json!({"step": id}));
        self.result.current_step = Some(id);
        while self.nodes[idx].ctl.is_some() {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => { self.handle(r); }
                    None => break,
                },
                lvl = next_level(&mut self.interrupt, self.level) => self.on_interrupt(lvl),
            }
        }
    }

    /// Ends what still runs: tasks cancelled (or interrupted), then monitors
    /// and services in reverse order of readiness.
    async fn teardown(&mut self, reason: Option<Ctl>) {
        let n = self.plan.steps.len();
        let why = match reason {
            Some(Ctl::Interrupt) => "not started: flow was interrupted",
            _ => "not started: the run ended early after a failure",
        };
        for i in 0..n {
            if self.in_main_phase(i) {
                self.skip(i, why);
            }
        }
        let running_tasks: Vec<usize> = (0..n)
            .filter(|&i| self.nodes[i].ctl.is_some() && self.kind(i) == StepKind::Task)
            .collect();
        for &i in &running_tasks {
            if let Some(c) = &self.nodes[i].ctl {
                let _ = c.send(reason.unwrap_or(Ctl::Cancel));
            }
        }
        for i in running_tasks {
            self.stop_and_wait(i, reason.unwrap_or(Ctl::Cancel)).await;
        }
        // Not ready yet: stopped with the reason; ready: stopped as planned.
        let not_ready: Vec<usize> = (0..n)
            .filter(|&i| self.nodes[i].ctl.is_some() && !self.started.contains(&i))
            .collect();
        for i in not_ready {
            self.stop_and_wait(i, reason.unwrap_or(Ctl::Cancel)).await;
        }
        // Monitors, then services; each host's in reverse order of
        // readiness, the hosts in parallel, so that every host collects for
        // the same time and teardown does not grow with the host count.
        for kind in [StepKind::Monitor, StepKind::Service] {
            let mut lanes: Vec<(String, Vec<usize>)> = Vec::new();
            for &i in self.started.iter().rev() {
                if self.kind(i) != kind {
                    continue;
                }
                let host = &self.plan.steps[i].host;
                match lanes.iter_mut().find(|(h, _)| h == host) {
                    Some((_, lane)) => lane.push(i),
                    None => lanes.push((host.clone(), vec![i])),
                }
            }
            self.stop_lanes(lanes.into_iter().map(|(_, l)| l).collect())
                .await;
        }
    }

    /// Stops the steps of each lane one after the other, in lane order, all
    /// lanes at once; returns when every one has ended.
    async fn stop_lanes(&mut self, mut lanes: Vec<Vec<usize>>) {
        lanes.retain(|l| !l.is_empty());
        for lane in &mut lanes {
            lane.reverse();
        }
        let mut current: Vec<Option<usize>> = vec![None; lanes.len()];
        loop {
            let ctl = if self.level >= 2 {
                Ctl::Kill
            } else {
                Ctl::Stop
            };
            // Start the next stop of every lane whose current step ended.
            for (lane, cur) in lanes.iter_mut().zip(current.iter_mut()) {
                while cur.is_none_or(|i| self.nodes[i].ctl.is_none()) {
                    let Some(next) = lane.pop() else {
                        *cur = None;
                        break;
                    };
                    if let Some(c) = &self.nodes[next].ctl {
                        let _ = c.send(ctl);
                        let id = self.plan.steps[next].id.clone();
                        self.event("step_stopping", json!({"step": id}));
                        self.result.current_step = Some(id);
                        *cur = Some(next);
                    }
                }
            }
            if current.iter().all(Option::is_none) {
                return;
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => { self.handle(r); }
                    None => return,
                },
                lvl = next_level(&mut self.interrupt, self.level) => {
                    self.on_interrupt(lvl);
                    // A second Ctrl-C: what is being stopped is killed now.
                    if self.level >= 2 {
                        for &i in current.iter().flatten() {
                            if let Some(c) = &self.nodes[i].ctl {
                                let _ = c.send(Ctl::Kill);
                            }
                        }
                    }
                }
            }
        }
    }

    async fn fetch(&mut self) {
        self.drain_timers().await;
        let fetches: Vec<usize> = (0..self.plan.steps.len())
            .filter(|&i| self.kind(i) == StepKind::Fetch)
            .collect();
        if fetches.is_empty() {
            return;
        }
        let log_path = self.dir.join("fetch.log");
        let mut log = String::from(FETCH_LOG_HEADER);
        // Every fetch first, then the check of the links they brought (a
        // link may point at what a later fetch step brings), then the
        // record of each step.
        // The fetch steps run at once (each host's transfer is its own
        // session).
        let mut started_at = Vec::new();
        for &i in &fetches {
            let s = self.plan.steps[i].clone();
            let started = Stamp::now();
            {
                let st = self.step(i);
                st.status = StepStatus::Running;
                st.attempts = 1;
                st.started = Some(started);
            }
            self.result.current_step = Some(s.id.clone());
            self.progress.step(&self.plan.id, &s.id);
            self.event("step_started", json!({"step": s.id, "attempt": 1}));
            started_at.push(started);
        }
        // Hosts at once; one host's fetch steps one after another (they
        // may write into the same folder of the artifact).
        let launcher = Arc::clone(&self.env.launcher);
        let steps = &self.plan.steps;
        let dir = &self.dir;
        let mut by_host: Vec<(&str, Vec<usize>)> = Vec::new();
        for (k, &i) in fetches.iter().enumerate() {
            let host = steps[i].host.as_str();
            match by_host.iter_mut().find(|(h, _)| *h == host) {
                Some((_, ks)) => ks.push(k),
                None => by_host.push((host, vec![k])),
            }
        }
        let per_host = super::host::join_all(by_host.into_iter().map(|(_, ks)| {
            let launcher = &launcher;
            let fetches = &fetches;
            Box::pin(async move {
                let mut got = Vec::new();
                for k in ks {
                    let s = &steps[fetches[k]];
                    got.push((
                        k,
                        launcher
                            .fetch(&s.host, &s.cwd, &s.paths, dir, s.limits())
                            .await,
                    ));
                }
                got
            }) as super::host::BoxFuture<'_, Vec<(usize, Vec<Transfer>)>>
        }))
        .await;
        let mut results: Vec<Vec<Transfer>> = vec![Vec::new(); fetches.len()];
        for (k, t) in per_host.into_iter().flatten() {
            results[k] = t;
        }
        let mut done: Vec<(usize, Stamp, Vec<Transfer>)> = fetches
            .into_iter()
            .zip(started_at)
            .zip(results)
            .map(|((i, at), t)| (i, at, t))
            .collect();
        let mut all: Vec<&mut Transfer> =
            done.iter_mut().flat_map(|(_, _, t)| t.iter_mut()).collect();
        check_fetched_links(&mut all, &self.dir);
        for (i, started, transfers) in done {
            self.record_pass(i, started, &transfers, true);
            let id = self.plan.steps[i].id.clone();
            let mut errors = Vec::new();
            let mut failed = false;
            for t in &transfers {
                log.push_str(&t.line());
                self.event(
                    "fetched",
                    json!({"step": id, "remote": t.remote, "local": t.local, "bytes": t.bytes, "status": t.status}),
                );
                if t.ok() {
                    self.result.fetch.files += 1;
                    self.result.fetch.bytes += t.bytes;
                    if t.status != "ok" {
                        // Cut at `max_bytes`, as the step said: counted
                        // here, each with its size in `fetch.log`.
                        self.result.fetch.truncated += 1;
                    }
                    continue;
                }
                errors.push(format!("{}: {}", t.remote, t.status));
                if t.status == "missing" {
                    self.result.fetch.missing += 1;
                } else if t.status.starts_with("skipped") {
                    self.result.fetch.skipped += 1;
                } else {
                    self.result.fetch.failed += 1;
                    failed = true;
                }
            }
            let ended = Stamp::now();
            let st = self.step(i);
            // A pattern that matched nothing, or a FIFO or a link out of the
            // run dir, is recorded; a transfer that failed fails the step
            // (and the run, unless the step allows failure): a PASS means
            // what was there was fetched.
            let status = if failed {
                StepStatus::Failed
            } else {
                StepStatus::Passed
            };
            st.status = status;
            st.ended = Some(ended);
            st.duration_ms = Some(started.ms_until(&ended));
            st.errors.extend(errors);
            self.event("step_ended", json!({"step": id, "status": status.as_str()}));
            self.progress.step_ended(&self.plan.id, &id, status);
        }
        if let Err(e) = atomic_write(&log_path, log.as_bytes()) {
            self.result
                .errors
                .push(format!("cannot write `{}`: {e}", log_path.display()));
        }
    }

    /// Analyze steps, on the controller, once the run has everything; in an
    /// order their edges allow.
    async fn analyze(&mut self) {
        let n = self.plan.steps.len();
        let todo: Vec<usize> = (0..n)
            .filter(|&i| self.kind(i) == StepKind::Analyze)
            .collect();
        if todo.is_empty() {
            return;
        }
        let failed =
            self.result.steps.iter().any(StepResult::fails_run) || !self.result.errors.is_empty();
        if self.level > 0 || failed {
            let why = if self.level > 0 {
                "not started: flow was interrupted"
            } else {
                "skipped: the run failed before analysis"
            };
            for i in todo {
                self.skip(i, why);
            }
            return;
        }
        let mut left = todo;
        while !left.is_empty() && self.level == 0 {
            let pos = left.iter().position(|&i| {
                self.nodes[i].preds.iter().all(|&p| {
                    self.kind(p) != StepKind::Analyze || self.result.steps[p].status.is_terminal()
                })
            });
            let i = left.remove(pos.unwrap_or(0));
            if let Some(&p) = self.nodes[i]
                .preds
                .iter()
                .find(|&&p| self.kind(p) == StepKind::Analyze && self.blocks(p))
            {
                let why = format!(
                    "skipped: `{}` {}",
                    self.plan.steps[p].id,
                    self.result.steps[p].status.as_str()
                );
                self.skip(i, &why);
                continue;
            }
            self.launch(i);
            while self.nodes[i].ctl.is_some() {
                tokio::select! {
                    r = self.rx.recv() => match r {
                        Some(r) => { self.handle(r); }
                        None => break,
                    },
                    lvl = next_level(&mut self.interrupt, self.level) => {
                        self.on_interrupt(lvl);
                        if let Some(c) = &self.nodes[i].ctl {
                            let _ = c.send(if lvl >= 2 { Ctl::Kill } else { Ctl::Interrupt });
                        }
                    }
                }
            }
        }
        for i in left {
            self.skip(i, "not started: flow was interrupted");
        }
    }
}

/// Appends one event to a journal that no writer holds (an earlier
/// attempt's), synced.
pub fn append_event(path: &std::path::Path, event: &str, fields: &Value) {
    use std::io::Write;
    let at = Stamp::now();
    let mut m = Map::new();
    m.insert("wall_ns".into(), at.wall_ns.into());
    m.insert("mono_ns".into(), at.mono_ns.into());
    m.insert("event".into(), event.into());
    if let Value::Object(f) = fields {
        m.extend(f.clone());
    }
    let Ok(mut line) = serde_json::to_vec(&Value::Object(m)) else {
        return;
    };
    line.push(b'\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(&line).and_then(|()| f.sync_data());
    }
}

/// Resolves when the interrupt level rises above `seen`.
pub async fn next_level(rx: &mut Interrupt, seen: u8) -> u8 {
    loop {
        let now = *rx.borrow_and_update();
        if now > seen {
            return now;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The owner's logic against a scripted launcher: no processes, each
    //! step does what the script says, and the launcher logs what it was
    //! asked to do.

    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::artifact::run_result::Leak;
    use crate::exec::fetch::Transfer;
    use crate::exec::host::BoxFuture;
    use crate::exec::journal::Journal;
    use crate::exec::process::Exit;
    use crate::exec::step::stopped_status;

    /// What a scripted step does once started.
    #[derive(Clone, Copy)]
    enum Act {
        /// Exit with this code after this long (tasks, analyze).
        Exit(u64, i32),
        /// Become ready after this long, then run until stopped or, when
        /// given, exit with the code after the second duration.
        Serve(u64, Option<(u64, i32)>),
        /// Become ready after the first duration, then lose the host after
        /// the second.
        Lose(u64, u64),
    }

    #[derive(Default)]
    struct Fake {
        script: HashMap<String, Act>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Fake {
        fn note(log: &Mutex<Vec<String>>, s: String) {
            if let Ok(mut l) = log.lock() {
                l.push(s);
            }
        }
    }

    impl Launcher for Fake {
        fn prepare<'a>(
            &'a self,
            host: &'a str,
            _dir: &'a str,
            _files: &'a [String],
        ) -> BoxFuture<'a, Result<(), String>> {
            Fake::note(&self.log, format!("prepare {host}"));
            Box::pin(async { Ok(()) })
        }

        fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
            let (ctl_tx, mut ctl) = watch::channel(Ctl::Run);
            let act = self
                .script
                .get(&job.step.step)
                .copied()
                .unwrap_or(Act::Exit(0, 0));
            let log = Arc::clone(&self.log);
            let (idx, id) = (job.idx, job.step.id.clone());
            let job_adopted = job.adopt.is_some();
            Fake::note(
                &log,
                format!("{} {id}", if job_adopted { "adopt" } else { "start" }),
            );
            tokio::spawn(async move {
                let _ = tx.send(Report::Started {
                    idx,
                    pid: 1,
                    attempt: 1,
                    at: Stamp::now(),
                    adopted: job_adopted,
                });
                let ended = |status, exit, lost| {
                    Report::Ended(Box::new(Ended {
                        idx,
                        status,
                        at: Stamp::now(),
                        exit,
                        error: None,
                        stop_signals: Vec::new(),
                        leaked: Vec::new(),
                        host_times: None,
                        host_lost: lost,
                    }))
                };
                let stopped = |why: Ctl| {
                    Fake::note(&log, format!("stop {id}"));
                    ended(stopped_status(why), Some(Exit::Signal(15)), false)
                };
                let (wait, code) = match act {
                    Act::Exit(ms, code) => (ms, Some(code)),
                    Act::Lose(ready_ms, ms) => {
                        tokio::time::sleep(Duration::from_millis(ready_ms)).await;
                        let _ = tx.send(Report::Ready {
                            idx,
                            at: Stamp::now(),
                        });
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(ms)) => {
                                let _ = tx.send(ended(StepStatus::Failed, None, true));
                            }
                            _ = ctl.changed() => {
                                let _ = tx.send(stopped(*ctl.borrow()));
                            }
                        }
                        return;
                    }
                    Act::Serve(ready_ms, die) => {
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(ready_ms)) => {}
                            _ = ctl.changed() => {
                                let _ = tx.send(stopped(*ctl.borrow()));
                                return;
                            }
                        }
                        let _ = tx.send(Report::Ready {
                            idx,
                            at: Stamp::now(),
                        });
                        die.map_or((u64::MAX / 4, None), |(ms, c)| (ms, Some(c)))
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {
                        let c = code.unwrap_or(0);
                        let status = if c == 0 { StepStatus::Passed } else { StepStatus::Failed };
                        let _ = tx.send(ended(status, Some(Exit::Code(c)), false));
                    }
                    _ = ctl.changed() => {
                        let _ = tx.send(stopped(*ctl.borrow()));
                    }
                }
            });
            ctl_tx
        }

        fn fetch<'a>(
            &'a self,
            host: &'a str,
            _dir: &'a str,
            patterns: &'a [String],
            _run: &'a Path,
            _: crate::exec::fetch::Limits,
        ) -> BoxFuture<'a, Vec<Transfer>> {
            Fake::note(&self.log, format!("fetch {host}"));
            let t = patterns
                .iter()
                .map(|p| Transfer {
                    host: host.into(),
                    remote: p.clone(),
                    local: format!("hosts/{host}/{p}"),
                    bytes: 1,
                    sha256: String::new(),
                    ms: 0,
                    status: "ok".into(),
                })
                .collect();
            Box::pin(async move { t })
        }

        fn sweep<'a>(&'a self, _tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
            Box::pin(async { Vec::new() })
        }
    }

    fn plan_of(dir: &Path, workload: &str) -> RunPlan {
        std::fs::write(
            dir.join("suite.yaml"),
            "suite: t\nworkloads:\n  - workload: w.yaml\n",
        )
        .expect("write suite");
        std::fs::write(dir.join("w.yaml"), workload).expect("write workload");
        let suite_path = dir.join("suite.yaml");
        let suite = crate::suite::load(&suite_path.to_string_lossy(), &Default::default())
            .unwrap_or_else(|f| panic!("{}", f.render()));
        let exp = crate::expand::expand(&suite)
            .unwrap_or_else(|d| panic!("{}", d.render(&suite.sources)));
        let opts = crate::plan::PlanOptions {
            artifact_dir: dir.join("artifact"),
        };
        let planner = crate::plan::Planner::new(&suite, &exp, &opts)
            .unwrap_or_else(|d| panic!("{}", d.render(&suite.sources)));
        planner
            .plan(0)
            .unwrap_or_else(|d| panic!("{}", d.render(&suite.sources)))
    }

    struct Outcome {
        result: RunResult,
        log: Vec<String>,
        dir: String,
        _tmp: tempfile::TempDir,
    }

    /// Runs `workload` with the fake; `interrupt_after` raises the
    /// interrupt level to 1 after that many milliseconds.
    fn run(workload: &str, script: &[(&str, Act)], interrupt_after: Option<u64>) -> Outcome {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = plan_of(tmp.path(), workload);
        let fake = Fake {
            script: script.iter().map(|(k, a)| (k.to_string(), *a)).collect(),
            log: Arc::default(),
        };
        let log = Arc::clone(&fake.log);
        let env = RunEnv {
            artifact_id: "a".into(),
            invocation: "test".into(),
            verbose: false,
            launcher: Arc::new(fake),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let journal = Journal::start();
        let progress = Progress::new(1, false, true);
        let result = rt.block_on(async {
            let (itx, irx) = watch::channel(0u8);
            if let Some(ms) = interrupt_after {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = itx.send(1);
                    std::future::pending::<()>().await;
                });
            } else {
                std::mem::forget(itx);
            }
            // The folder first: the writer thread opens the file at once.
            let _ = std::fs::create_dir_all(&plan.dir);
            let rj = journal.open(0, PathBuf::from(&plan.dir).join("events.jsonl"));
            run_one(&plan, &env, rj, &progress, irx, Resume::Fresh).await
        });
        journal.finish();
        let log = log.lock().map(|l| l.clone()).unwrap_or_default();
        Outcome {
            result,
            log,
            dir: plan.dir.clone(),
            _tmp: tmp,
        }
    }

    fn status(o: &Outcome, id: &str) -> StepStatus {
        o.result
            .steps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.status)
            .unwrap_or_else(|| panic!("no step {id}"))
    }

    fn position(o: &Outcome, line: &str) -> usize {
        o.log
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("`{line}` not in {:?}", o.log))
    }

    #[test]
    fn a_duration_step_runs_that_long_after_the_tasks_and_stops_as_a_pass() {
        let t0 = std::time::Instant::now();
        let o = run(
            "workload: w\nsteps:\n  mon: { kind: monitor, run: m, duration: 400ms }\n  job: { run: 'true' }\n",
            &[("mon", Act::Serve(0, None)), ("job", Act::Exit(50, 0))],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Passed, "{:?}", o.result.steps);
        assert_eq!(status(&o, "mon@local"), StepStatus::Passed);
        let mon = &o.result.steps[0];
        let ran = mon
            .ready
            .expect("ready")
            .ms_until(&mon.ended.expect("ended"));
        assert!((400..2000).contains(&ran), "ran {ran} ms");
        assert!(t0.elapsed() >= Duration::from_millis(400));
        assert!(position(&o, "stop mon@local") > position(&o, "start job@local"));
    }

    #[test]
    fn a_run_of_monitors_alone_collects_for_its_duration() {
        let o = run(
            "workload: w\nsteps:\n  a: { kind: monitor, run: m, duration: 300ms }\n  b: { kind: monitor, run: m }\n",
            &[("a", Act::Serve(0, None)), ("b", Act::Serve(0, None))],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Passed, "{:?}", o.result.steps);
        // `b` has no duration: it runs as long as the run, stopped after `a`.
        assert!(position(&o, "stop b@local") > position(&o, "stop a@local"));
        let a = &o.result.steps[0];
        assert!(a.ready.expect("ready").ms_until(&a.ended.expect("ended")) >= 300);
    }

    #[test]
    fn an_incremental_fetch_passes_while_the_run_goes_then_once_more_at_the_end() {
        let o = run(
            "workload: w\nsteps:\n  mon: { kind: monitor, run: m, duration: 2500ms }\n  grab: { kind: fetch, paths: [x], every: 1s }\n",
            &[("mon", Act::Serve(0, None))],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Passed, "{:?}", o.result.steps);
        let fetches = o.log.iter().filter(|l| *l == "fetch local").count();
        assert!((3..=4).contains(&fetches), "{:?}", o.log);
        // Passes come before the monitor is stopped, the final one after.
        assert!(position(&o, "fetch local") < position(&o, "stop mon@local"));
        assert_eq!(o.log.last().map(String::as_str), Some("fetch local"));
        let p = &o.result.fetched["grab@local"];
        assert_eq!((p.passes as usize, p.files, p.bytes), (fetches, 1, 1));
        let log = std::fs::read_to_string(Path::new(&o.dir).join("fetch.passes.log"))
            .expect("fetch.passes.log");
        assert_eq!(log.lines().count(), 1 + fetches, "{log}");
        assert!(
            log.lines().last().is_some_and(|l| l.contains("\tfinal\t")),
            "{log}"
        );
    }

    #[test]
    fn a_lost_host_ends_the_run_unless_on_host_loss_continue() {
        let w = |policy: &str| {
            format!(
                "workload: w\nsteps:\n  a: {{ kind: monitor, run: m{policy} }}\n  b: {{ kind: monitor, run: m }}\n  job: {{ run: 'true', needs: [a, b] }}\n"
            )
        };
        let script = [
            ("a", Act::Lose(0, 50)),
            ("b", Act::Serve(0, None)),
            ("job", Act::Exit(400, 0)),
        ];
        let ends = run(&w(""), &script, None);
        assert_eq!(status(&ends, "job@local"), StepStatus::Cancelled);
        let goes_on = run(&w(", on_host_loss: continue"), &script, None);
        assert_eq!(status(&goes_on, "job@local"), StepStatus::Passed);
        assert_eq!(status(&goes_on, "b@local"), StepStatus::Passed);
        assert_eq!(status(&goes_on, "a@local"), StepStatus::Failed);
        // Its data is incomplete: never a pass.
        assert_eq!(goes_on.result.status, RunStatus::Failed);
        let journal =
            std::fs::read_to_string(Path::new(&goes_on.dir).join("events.jsonl")).expect("journal");
        assert!(journal.contains(r#""event":"host_lost""#), "{journal}");
    }

    #[test]
    fn monitors_then_services_stop_in_reverse_order_of_readiness() {
        let o = run(
            "workload: w\nsteps:\n  db: { kind: service, run: s }\n  api: { kind: service, run: s, needs: [db] }\n  mon: { kind: monitor, run: m }\n  job: { run: 'true' }\n  grab: { kind: fetch, paths: [x] }\n  sum: { kind: analyze, run: 'true' }\n",
            &[
                ("db", Act::Serve(10, None)),
                ("api", Act::Serve(10, None)),
                ("mon", Act::Serve(0, None)),
            ],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Passed, "{:?}", o.result.steps);
        let order = [
            "start db@local",
            "start api@local",
            "start mon@local",
            "start job@local",
            "stop mon@local",
            "stop api@local",
            "stop db@local",
            "fetch local",
            "start sum@controller",
        ];
        let pos: Vec<usize> = order.iter().map(|l| position(&o, l)).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{:?}", o.log);
        assert_eq!(o.log.first().map(String::as_str), Some("prepare local"));
        assert_eq!(o.result.fetch.files, 1);
    }

    #[test]
    fn a_service_dying_while_the_run_goes_cancels_the_tasks() {
        let o = run(
            "workload: w\nsteps:\n  srv: { kind: service, run: s }\n  long: { run: 'sleep 60' }\n  after: { needs: [long], run: 'true' }\n  grab: { kind: fetch, paths: [x] }\n",
            &[
                ("srv", Act::Serve(0, Some((30, 1)))),
                ("long", Act::Exit(60_000, 0)),
            ],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Failed);
        assert_eq!(status(&o, "srv@local"), StepStatus::Failed);
        assert_eq!(status(&o, "long@local"), StepStatus::Cancelled);
        assert_eq!(status(&o, "after@local"), StepStatus::Skipped);
        assert_eq!(status(&o, "grab@local"), StepStatus::Passed);
    }

    #[test]
    fn failures_skip_their_dependents_transitively_and_analysis() {
        let o = run(
            "workload: w\nsteps:\n  a: { run: x }\n  b: { needs: [a], run: x }\n  c: { needs: [b], run: x }\n  d: { run: x }\n  sum: { kind: analyze, run: x }\n",
            &[("a", Act::Exit(0, 2))],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Failed);
        assert_eq!(status(&o, "b@local"), StepStatus::Skipped);
        assert_eq!(status(&o, "c@local"), StepStatus::Skipped);
        assert_eq!(status(&o, "d@local"), StepStatus::Passed);
        assert_eq!(status(&o, "sum@controller"), StepStatus::Skipped);
        let c = o
            .result
            .steps
            .iter()
            .find(|s| s.id == "c@local")
            .expect("c");
        assert_eq!(c.errors, ["skipped: `b@local` skipped"]);
        assert!(!o.log.contains(&"start sum@controller".to_string()));
    }

    #[test]
    fn an_interrupt_stops_what_runs_and_still_fetches() {
        let o = run(
            "workload: w\nsteps:\n  srv: { kind: service, run: s }\n  long: { run: 'sleep 60' }\n  next: { needs: [long], run: x }\n  grab: { kind: fetch, paths: [x] }\n  sum: { kind: analyze, run: x }\n",
            &[("srv", Act::Serve(0, None)), ("long", Act::Exit(60_000, 0))],
            Some(50),
        );
        assert_eq!(o.result.status, RunStatus::Interrupted);
        assert_eq!(status(&o, "long@local"), StepStatus::Interrupted);
        assert_eq!(status(&o, "next@local"), StepStatus::Skipped);
        assert_eq!(status(&o, "srv@local"), StepStatus::Passed);
        assert_eq!(status(&o, "grab@local"), StepStatus::Passed);
        assert_eq!(status(&o, "sum@controller"), StepStatus::Skipped);
        assert!(position(&o, "stop long@local") < position(&o, "stop srv@local"));
    }

    #[test]
    fn analyze_steps_run_in_the_order_their_needs_give() {
        let o = run(
            "workload: w\nsteps:\n  job: { run: x }\n  second: { kind: analyze, needs: [first], run: x }\n  first: { kind: analyze, run: x }\n",
            &[],
            None,
        );
        assert_eq!(o.result.status, RunStatus::Passed);
        assert!(position(&o, "start first@controller") < position(&o, "start second@controller"));
    }
}
