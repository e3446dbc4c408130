//! Executing plans: the scheduler of runs (one at a time, or `--jobs N` runs
//! on disjoint hosts), signal handling, and `runs.csv`. One run is owned by
//! [`run::run_one`]; its steps by supervisors in [`step`].

pub mod controller;
pub mod fetch;
pub mod host;
pub mod journal;
pub mod process;
pub mod progress;
pub mod ready;
pub mod remote;
pub mod resume;
pub mod run;
pub mod ssh;
pub mod step;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::artifact::run_result::{RunResult, RunRow, RunStatus, runs_csv};
use crate::artifact::{atomic_write, replace_file};
use crate::plan::RunPlan;
use journal::Journal;
use progress::Progress;
use run::{RunEnv, next_level};

/// `runs.csv` is rewritten at most this often while runs go.
const CSV_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How the runs of an invocation are scheduled.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs at once, at most.
    pub jobs: usize,
    /// Stop starting runs after this many failed.
    pub max_failures: Option<usize>,
    pub verbose: bool,
    /// Plain lines even on a terminal.
    pub plain: bool,
}

/// How an invocation ended.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Not started (after an interrupt or too many failures).
    pub not_run: usize,
    pub was_interrupted: bool,
    /// Problems writing `runs.csv` and the like; the runs themselves went on.
    pub warnings: Vec<String>,
    /// Why no run started: a setup instance did not pass.
    pub setup_failed: Option<String>,
}

/// Two runs may overlap unless they share a host and either needs its hosts
/// to itself.
pub fn conflicts(a: &RunPlan, b: &RunPlan) -> bool {
    (a.exclusive || b.exclusive) && a.hosts.iter().any(|h| b.hosts.contains(h))
}

/// One run to execute, and how it begins.
pub struct Todo {
    pub plan: Arc<RunPlan>,
    pub resume: run::Resume,
    /// Its row of `runs.csv`.
    pub row: usize,
}

impl Todo {
    /// Every plan from the beginning, each its own row.
    pub fn fresh(plans: Vec<Arc<RunPlan>>) -> (Vec<Todo>, Vec<RunRow>) {
        let rows = plans.iter().map(|p| RunRow::new(p)).collect();
        let todo = plans
            .into_iter()
            .enumerate()
            .map(|(row, plan)| Todo {
                plan,
                resume: run::Resume::Fresh,
                row,
            })
            .collect();
        (todo, rows)
    }
}

/// The list of an artifact's setup and teardown instances.
pub const PHASES_FILE: &str = "phases.json";

/// The setup and teardown instances of an invocation, as planned.
#[derive(Debug, Default, Clone)]
pub struct Phases {
    pub setup: Vec<Arc<RunPlan>>,
    pub teardown: Vec<Arc<RunPlan>>,
}

impl Phases {
    /// Reads `phases.json` and the instances' `plan.json` from an
    /// artifact; none when it has no phases.
    pub fn load(artifact_dir: &std::path::Path) -> Result<Phases, String> {
        let list = artifact_dir.join(PHASES_FILE);
        let Ok(text) = std::fs::read(&list) else {
            return Ok(Phases::default());
        };
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("`{}`: {e}", list.display()))?;
        let read = |kind: &str| -> Result<Vec<Arc<RunPlan>>, String> {
            let mut out = Vec::new();
            for id in v[kind].as_array().into_iter().flatten() {
                let id = id.as_str().unwrap_or_default();
                let path = artifact_dir.join(kind).join(id).join("plan.json");
                let text = std::fs::read(&path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                let plan: RunPlan = serde_json::from_slice(&text)
                    .map_err(|e| format!("`{}`: {e}", path.display()))?;
                out.push(Arc::new(plan));
            }
            Ok(out)
        };
        Ok(Phases {
            setup: read("setup")?,
            teardown: read("teardown")?,
        })
    }

    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.setup
            .iter()
            .chain(&self.teardown)
            .flat_map(|p| p.hosts.iter())
    }
}

/// Whether a setup instance passed before with every output fetched: it
/// is not run again.
fn setup_done(plan: &RunPlan) -> bool {
    let dir = PathBuf::from(&plan.dir);
    let passed = std::fs::read(dir.join("run_result.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<RunResult>(&b).ok())
        .is_some_and(|r| {
            r.status == RunStatus::Passed && r.fetch.missing == 0 && r.fetch.failed == 0
        });
    passed && fetch::unchanged_since(&dir)
}

/// Runs one setup or teardown instance (its earlier attempt, if any, kept
/// under `attempts/`); `Err` says why it did not pass.
async fn run_phase(
    plan: &RunPlan,
    key: u64,
    env: &RunEnv,
    journal: &Journal,
    progress: &Progress,
    interrupt: run::Interrupt,
) -> Result<(), String> {
    let dir = PathBuf::from(&plan.dir);
    let _ = std::fs::create_dir_all(&dir);
    let mut resume = run::Resume::Fresh;
    if dir.join("run_result.json").exists() {
        match resume::keep_attempt(&dir) {
            Ok(attempt) => {
                resume = run::Resume::Again {
                    attempt,
                    tags: Vec::new(),
                }
            }
            Err(e) => return Err(format!("cannot keep its earlier attempt: {e}")),
        }
    }
    let rj = journal.open(key, dir.join("events.jsonl"));
    let r = run::run_one(plan, env, rj.clone(), progress, interrupt, resume).await;
    if let Some(e) = rj.close().await {
        progress.warn(&e);
    }
    let secs = r.duration_ms.unwrap_or(0) as f64 / 1000.0;
    let verdict = if r.status != RunStatus::Passed {
        Err(r
            .first_error()
            .unwrap_or_else(|| format!("it {}", r.status.as_str())))
    } else if r.fetch.missing > 0 || r.fetch.failed > 0 {
        Err(format!(
            "outputs {} were not all fetched (see {}/fetch.log)",
            plan.steps
                .iter()
                .flat_map(|s| s.paths.iter())
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
            plan.dir
        ))
    } else {
        Ok(())
    };
    let tag = if verdict.is_ok() { "PASS " } else { "FAIL " };
    progress.println(&format!(
        "{tag} [{}] {} ({secs:.1}s)",
        plan.workload, plan.id
    ));
    if let Err(e) = &verdict {
        progress.println(&format!("      {e}"));
    }
    verdict
}

/// Runs every plan of `todo`, writing results into `artifact_dir`;
/// `runs.csv` holds `rows` (the runs not executed as they are). The setup
/// instances of `phases` run first (none of `todo` runs when one fails);
/// the teardown instances run last, whatever happened.
pub async fn execute(
    todo: Vec<Todo>,
    mut rows: Vec<RunRow>,
    artifact_id: &str,
    artifact_dir: PathBuf,
    opts: &Options,
    launcher: Arc<dyn host::Launcher>,
    phases: &Phases,
) -> Outcome {
    process::become_subreaper();
    let (int_tx, int_rx) = watch::channel(0u8);
    let signals = tokio::spawn(watch_signals(int_tx));
    let journal = Journal::start();
    let progress = Arc::new(Progress::new(todo.len(), opts.verbose, opts.plain));
    let env = Arc::new(RunEnv {
        artifact_id: artifact_id.to_string(),
        invocation: format!(
            "{}-{}",
            std::process::id(),
            crate::clock::Stamp::now().wall_ns
        ),
        verbose: opts.verbose,
        launcher,
    });
    let row_of: Vec<usize> = todo.iter().map(|t| t.row).collect();
    let mut resumes: Vec<Option<run::Resume>> =
        todo.iter().map(|t| Some(t.resume.clone())).collect();
    let plans: Vec<Arc<RunPlan>> = todo.into_iter().map(|t| t.plan).collect();
    let csv_path = artifact_dir.join("runs.csv");
    let mut out = Outcome::default();
    // Rewritten as runs end, at most once a second, and synced at the end:
    // each run's own run_result.json is its durable record.
    let mut csv_written = std::time::Instant::now();
    let mut write_csv = |rows: &[RunRow], out: &mut Outcome, last: bool| {
        if !last && csv_written.elapsed() < CSV_EVERY {
            return;
        }
        csv_written = std::time::Instant::now();
        let text = runs_csv(rows);
        let r = if last {
            atomic_write(&csv_path, text.as_bytes())
        } else {
            replace_file(&csv_path, text.as_bytes())
        };
        if let Err(e) = r {
            out.warnings
                .push(format!("cannot write `{}`: {e}", csv_path.display()));
        }
    };
    write_csv(&rows, &mut out, true);

    let mut pending: Vec<usize> = (0..plans.len()).collect();
    // Setup: in order, each once (one that passed before is kept).
    for (k, plan) in phases.setup.iter().enumerate() {
        if setup_done(plan) {
            progress.println(&format!("KEPT  [setup] {} (passed before)", plan.id));
            continue;
        }
        let r = run_phase(
            plan,
            PHASE_KEY + k as u64,
            &env,
            &journal,
            &progress,
            int_rx.clone(),
        )
        .await;
        if *int_rx.borrow() > 0 {
            out.was_interrupted = true;
        }
        if let Err(e) = r {
            out.setup_failed = Some(format!("setup `{}` failed: {e}", plan.id));
            break;
        }
        if out.was_interrupted {
            break;
        }
    }
    let mut stop_starting = out.setup_failed.is_some() || out.was_interrupted;
    let mut running: Vec<usize> = Vec::new();
    let mut set: JoinSet<(usize, RunResult)> = JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut int_seen = int_rx.clone();
    let mut level = u8::from(out.was_interrupted);
    loop {
        if !stop_starting {
            let mut k = 0;
            while running.len() < opts.jobs.max(1) && k < pending.len() {
                let i = pending[k];
                if running.iter().any(|&r| conflicts(&plans[r], &plans[i])) {
                    k += 1;
                    continue;
                }
                pending.remove(k);
                running.push(i);
                rows[row_of[i]].status = RunStatus::Running.as_str().to_string();
                let resume = resumes[i].take().unwrap_or_default();
                let plan = Arc::clone(&plans[i]);
                let env = Arc::clone(&env);
                let progress = Arc::clone(&progress);
                let rj = journal.open(i as u64, PathBuf::from(&plan.dir).join("events.jsonl"));
                let irx = int_rx.clone();
                let handle = set.spawn(async move {
                    let _ = std::fs::create_dir_all(&plan.dir);
                    let r = run::run_one(&plan, &env, rj.clone(), &progress, irx, resume).await;
                    if let Some(e) = rj.close().await {
                        progress.warn(&e);
                    }
                    (i, r)
                });
                tasks.insert(handle.id(), i);
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = set.join_next() => {
                let (i, r) = match joined {
                    Ok(done) => done,
                    Err(e) => {
                        // A bug, not a failure of the run: say so, and do not
                        // wait for a run that will never report.
                        let Some(i) = tasks.get(&e.id()).copied() else { continue };
                        let msg = format!("internal error while running {}: {e}", plans[i].id);
                        progress.warn(&msg);
                        out.warnings.push(msg);
                        let mut r = RunResult::new(&plans[i], crate::clock::Stamp::now());
                        r.status = RunStatus::Failed;
                        r.errors.push("internal error: see flow's output".into());
                        (i, r)
                    }
                };
                running.retain(|&x| x != i);
                progress.run_finished(&r, std::path::Path::new(&plans[i].dir));
                rows[row_of[i]].status = r.status.as_str().to_string();
                rows[row_of[i]].duration_ms = r.duration_ms;
                match r.status {
                    RunStatus::Passed => out.passed += 1,
                    RunStatus::Failed => out.failed += 1,
                    RunStatus::Interrupted | RunStatus::Running => out.interrupted += 1,
                }
                write_csv(&rows, &mut out, false);
                if opts.max_failures.is_some_and(|m| out.failed >= m) {
                    stop_starting = true;
                }
            }
            lvl = next_level(&mut int_seen, level) => {
                level = lvl;
                stop_starting = true;
                out.was_interrupted = true;
                let msg = if lvl == 1 {
                    "interrupted: stopping the steps, fetching and writing results (press Ctrl-C again to kill at once)"
                } else {
                    "interrupted again: killing every step now"
                };
                progress.warn(msg);
            }
        }
    }
    out.not_run = pending.len();
    write_csv(&rows, &mut out, true);
    // Teardown: always, after a failure or a first Ctrl-C too; only a
    // further Ctrl-C cuts it short.
    if !phases.teardown.is_empty() {
        let seen = *int_rx.borrow();
        let (tx, rx) = watch::channel(0u8);
        let mut more = int_rx.clone();
        let forward = tokio::spawn(async move {
            while more.changed().await.is_ok() {
                let now = *more.borrow();
                let _ = tx.send(now.saturating_sub(seen));
            }
        });
        for (k, plan) in phases.teardown.iter().enumerate() {
            if let Err(e) = run_phase(
                plan,
                PHASE_KEY + 1000 + k as u64,
                &env,
                &journal,
                &progress,
                rx.clone(),
            )
            .await
            {
                out.warnings
                    .push(format!("teardown `{}` failed: {e}", plan.id));
            }
        }
        forward.abort();
    }
    progress.finish();
    signals.abort();
    journal.finish();
    out
}

/// Journal keys of setup and teardown instances, clear of run indexes.
const PHASE_KEY: u64 = 1 << 40;

/// Counts SIGINT and SIGTERM into the interrupt level.
async fn watch_signals(tx: watch::Sender<u8>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will kill flow without cleaning up");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tx.send_modify(|l| *l = l.saturating_add(1).min(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(hosts: &[&str], exclusive: bool) -> RunPlan {
        RunPlan {
            schema_version: 1,
            id: "x".into(),
            suite: "s".into(),
            workload: "w".into(),
            mode: "baseline".into(),
            variant: "default".into(),
            variant_params: Default::default(),
            repetition: 1,
            params: Default::default(),
            exclusive,
            dir: String::new(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            files: vec![],
            steps: vec![],
            edges: vec![],
            metrics: vec![],
            clock_every_ms: None,
            timeline: Vec::new(),
            mutation: None,
            sources: Default::default(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn runs_sharing_a_host_conflict_unless_both_share_willingly() {
        assert!(conflicts(&plan(&["a", "b"], true), &plan(&["b"], true)));
        assert!(conflicts(&plan(&["a"], false), &plan(&["a"], true)));
        assert!(!conflicts(&plan(&["a"], false), &plan(&["a"], false)));
        assert!(!conflicts(&plan(&["a"], true), &plan(&["b"], true)));
    }
}
