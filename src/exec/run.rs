//! The owner of one run's state. It starts step supervisors as the DAG
//! allows, takes their reports, and walks the run through its lifecycle:
//! services, monitors and tasks; then monitors and services stopped in
//! reverse order; then every fetch; then analysis. Everything it learns goes
//! to `events.jsonl` at once and to `run_result.json` as the run goes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::clock::Stamp;
use super::fetch::{FETCH_LOG_HEADER, copy_tree, fetch_local};
use super::journal::RunJournal;
use super::process::{self, RUN_TAG_VAR};
use super::progress::{Progress, Tail};
use super::result::{RunResult, RunStatus, StepResult, StepStatus};
use super::step::{self, Ctl, Ended, Report, StepJob};
use crate::artifact::{atomic_write, replace_file};
use crate::plan::{CONTROLLER, RunPlan};
use crate::suite::StepKind;

/// How often `run_result.json` is rewritten while a run goes on (besides its
/// start and end).
const RESULT_EVERY: Duration = Duration::from_secs(1);

/// What every run of an invocation shares.
pub struct RunEnv {
    pub artifact_id: String,
    pub artifact_dir: PathBuf,
    /// Distinguishes this invocation's processes from another flow's.
    pub invocation: String,
    /// Only one run at a time: any orphan left at the end of a run is its.
    pub alone: bool,
    pub verbose: bool,
}

/// Interrupt level: 0 none, 1 tear down cleanly, 2 kill now.
pub type Interrupt = watch::Receiver<u8>;

struct Node {
    ctl: Option<watch::Sender<Ctl>>,
    preds: Vec<usize>,
    tail: Option<Tail>,
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
    last_write: std::time::Instant,
}

/// Runs one plan to the end and returns its result (also written to disk).
pub async fn run_one(
    plan: &RunPlan,
    env: &RunEnv,
    journal: RunJournal,
    progress: &Progress,
    interrupt: Interrupt,
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
        last_write: std::time::Instant::now(),
    };
    run.go().await;
    run.result
}

impl Run<'_> {
    fn event(&self, name: &str, fields: Value) {
        let fields = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.journal.event(Stamp::now(), name, fields);
    }

    /// Rewrites `run_result.json`; only the final version is fsync'd (the
    /// journal is the durable record while the run goes).
    fn write_result(&mut self, last: bool) {
        self.last_write = std::time::Instant::now();
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

    async fn go(&mut self) {
        let plan = self.plan;
        self.event(
            "run_started",
            json!({"run": plan.id, "pid": std::process::id(), "tag": self.tag}),
        );
        self.progress.run_started(plan);
        if let Err(e) = std::fs::create_dir_all(self.dir.join("logs")) {
            self.result.errors.push(format!(
                "cannot create `{}`: {e}",
                self.dir.join("logs").display()
            ));
        }
        self.write_result(false);
        let setup_ok = self.result.errors.is_empty() && self.setup();
        let mut reason = None;
        if setup_ok {
            reason = self.main_phase().await;
        } else {
            for i in 0..plan.steps.len() {
                if !matches!(self.kind(i), StepKind::Fetch) {
                    self.skip(i, "not started: the run's setup failed");
                }
            }
        }
        self.teardown(reason).await;
        if self.level < 2 {
            self.fetch().await;
        }
        self.analyze().await;
        let leaks = process::sweep_orphans(&self.tag, self.env.alone);
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
        } else if !setup_ok || self.result.steps.iter().any(StepResult::fails_run) {
            RunStatus::Failed
        } else {
            RunStatus::Passed
        };
        self.event(
            "run_ended",
            json!({"status": self.result.status, "duration_ms": self.result.duration_ms}),
        );
        self.write_result(true);
    }

    /// Creates each host's run dir and pushes the workload's files into it.
    fn setup(&mut self) -> bool {
        let plan = self.plan;
        let mut dirs: Vec<(&str, PathBuf)> = Vec::new();
        for s in &plan.steps {
            if s.host != CONTROLLER && !dirs.iter().any(|(h, _)| *h == s.host) {
                dirs.push((&s.host, expand_home(&s.cwd)));
            }
        }
        let mut ok = true;
        for (host, dir) in &dirs {
            if let Err(e) = std::fs::create_dir_all(dir) {
                self.result.errors.push(format!(
                    "host `{host}`: cannot create `{}`: {e}",
                    dir.display()
                ));
                ok = false;
                continue;
            }
            for f in &plan.files {
                let src = Path::new(f.trim_end_matches('/'));
                let Some(name) = src.file_name() else {
                    continue;
                };
                if let Err(e) = copy_tree(src, &dir.join(name)) {
                    self.result.errors.push(format!(
                        "host `{host}`: cannot copy `{}` into `{}`: {e}",
                        src.display(),
                        dir.display()
                    ));
                    ok = false;
                }
            }
        }
        self.event("setup_done", json!({"ok": ok, "hosts": dirs.len()}));
        ok
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
        ]);
        StepJob {
            idx,
            step: s.clone(),
            cwd: expand_home(&s.cwd),
            out: logs.join(format!("{}.out", s.id)),
            err: logs.join(format!("{}.err", s.id)),
            env,
        }
    }

    fn launch(&mut self, idx: usize) {
        let job = self.job(idx);
        if self.env.verbose {
            self.nodes[idx].tail = Some(self.progress.tail(&job.step.id, &job.out, &job.err));
        }
        let ctl = step::start(job, self.tx.clone());
        self.nodes[idx].ctl = Some(ctl);
        self.step(idx).status = StepStatus::Running;
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
            let busy = (0..n).any(|i| {
                self.in_main_phase(i) && self.result.steps[i].status == StepStatus::Running
            });
            if !busy {
                return None;
            }
            tokio::select! {
                Some(r) = self.rx.recv() => {
                    if let Some(why) = self.handle(r) {
                        return Some(why);
                    }
                }
                lvl = next_level(&mut self.interrupt, self.level) => {
                    self.on_interrupt(lvl);
                }
            }
        }
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
            } => {
                let st = self.step(idx);
                st.attempts = attempt;
                st.pid = Some(pid);
                st.started.get_or_insert(at);
                let id = st.id.clone();
                self.event(
                    "step_started",
                    json!({"step": id, "attempt": attempt, "pid": pid}),
                );
                None
            }
            Report::Ready { idx, at } => {
                let st = self.step(idx);
                st.status = StepStatus::Ready;
                st.ready = Some(at);
                let id = st.id.clone();
                self.started.push(idx);
                self.event("step_ready", json!({"step": id}));
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
                self.finish_step(*e);
                let fails = self.result.steps[idx].fails_run();
                let background = matches!(self.kind(idx), StepKind::Service | StepKind::Monitor);
                if self.last_write.elapsed() >= RESULT_EVERY {
                    self.write_result(false);
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
        let order: Vec<usize> = self
            .started
            .iter()
            .rev()
            .filter(|&&i| self.kind(i) == StepKind::Monitor)
            .chain(
                self.started
                    .iter()
                    .rev()
                    .filter(|&&i| self.kind(i) == StepKind::Service),
            )
            .copied()
            .collect();
        for i in order {
            self.stop_and_wait(i, Ctl::Stop).await;
        }
    }

    async fn fetch(&mut self) {
        let fetches: Vec<usize> = (0..self.plan.steps.len())
            .filter(|&i| self.kind(i) == StepKind::Fetch)
            .collect();
        if fetches.is_empty() {
            return;
        }
        let log_path = self.dir.join("fetch.log");
        let mut log = String::from(FETCH_LOG_HEADER);
        for i in fetches {
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
            let host_dir = expand_home(&s.cwd);
            let run_dir = self.dir.clone();
            let host = s.host.clone();
            let paths = s.paths.clone();
            let transfers = tokio::task::spawn_blocking(move || {
                fetch_local(&host, &host_dir, &paths, &run_dir)
            })
            .await
            .unwrap_or_default();
            let mut errors = Vec::new();
            for t in &transfers {
                log.push_str(&t.line());
                self.event(
                    "fetched",
                    json!({"step": s.id, "remote": t.remote, "local": t.local, "bytes": t.bytes, "status": t.status}),
                );
                if t.ok() {
                    self.result.fetch.files += 1;
                    self.result.fetch.bytes += t.bytes;
                } else {
                    self.result.fetch.missing += 1;
                    errors.push(format!("{}: {}", t.remote, t.status));
                }
            }
            let ended = Stamp::now();
            let st = self.step(i);
            // A missing file is recorded, not a failure of the run.
            st.status = StepStatus::Passed;
            st.ended = Some(ended);
            st.duration_ms = Some(started.ms_until(&ended));
            st.errors.extend(errors);
            let id = st.id.clone();
            self.event("step_ended", json!({"step": id, "status": "passed"}));
            self.progress
                .step_ended(&self.plan.id, &id, StepStatus::Passed);
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

/// `~/x` → `$HOME/x` (local hosts with a `workdir` under home).
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(p)
}
