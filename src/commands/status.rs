//! `flow status` and `flow list`: read-only views of artifact folders.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::artifact::run_result::{RunResult, RunStatus};
use crate::cli::{ListArgs, StatusArgs};
use crate::diag::display_path;

use super::run::LOCK_FILE;
use super::{Error, exit};

/// Whether flow is still at work on an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Made by `flow plan`: nothing ran.
    Planned,
    Running(i32),
    /// A `flow.pid` whose process is gone: flow was killed mid-run.
    Abandoned(i32),
    Done,
}

impl State {
    fn describe(&self) -> String {
        match self {
            State::Planned => "planned".into(),
            State::Running(pid) => format!("running (pid {pid})"),
            State::Abandoned(pid) => format!("abandoned (flow, pid {pid}, is gone)"),
            State::Done => "done".into(),
        }
    }
}

pub(super) fn state(dir: &Path) -> State {
    if let Ok(text) = std::fs::read_to_string(dir.join(LOCK_FILE))
        && let Ok(pid) = text.trim().parse::<i32>()
    {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        return if alive {
            State::Running(pid)
        } else {
            State::Abandoned(pid)
        };
    }
    if dir.join("runs.csv").exists() {
        State::Done
    } else {
        State::Planned
    }
}

/// `ID`, a path, or the latest artifact.
pub(super) fn resolve(root: &Path, id: Option<&str>) -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = match id {
        None => vec![root.join("latest")],
        Some(id) => vec![root.join(id), PathBuf::from(id)],
    };
    for c in &candidates {
        if c.join("suite.json").is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    let what = id.map_or_else(
        || format!("no artifact in `{}` yet", display_path(root)),
        |i| format!("no artifact `{i}` in `{}`", display_path(root)),
    );
    Err(Error::Invalid(format!(
        "error: {what}\n  = help: `flow list` shows the artifacts; `--artifacts DIR` looks elsewhere\n"
    )))
}

/// An artifact's `suite.json`.
pub(super) fn read_suite_json(dir: &Path) -> Result<Value, Error> {
    let path = dir.join("suite.json");
    let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::io("read", &path, std::io::Error::other(e)))
}

/// The inventory an artifact ran with, from its `suite.json` `v`.
pub(super) fn stored_inventory(dir: &Path, v: &Value) -> Result<crate::suite::Inventory, Error> {
    serde_json::from_value(v["inventory"].clone()).map_err(|e| {
        Error::io(
            "read the inventory of",
            &dir.join("suite.json"),
            std::io::Error::other(e),
        )
    })
}

/// The run ids an artifact was planned with, in order.
fn run_ids(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join("suite.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    v.pointer("/expansion/runs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn suite_name(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("suite.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v.pointer("/suite/name")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| "?".into())
}

/// The step a run's journal last started or stopped.
fn current_step(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("events.jsonl")).ok()?;
    text.lines().rev().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        let ev = v.get("event")?.as_str()?;
        matches!(ev, "step_started" | "step_ready" | "step_stopping")
            .then(|| {
                let step = v.get("step")?.as_str()?;
                Some(format!("{step} ({})", ev.trim_start_matches("step_")))
            })
            .flatten()
    })
}

#[derive(Default)]
struct Counts {
    passed: usize,
    failed: usize,
    interrupted: usize,
    running: usize,
    left: usize,
}

pub fn status(args: &StatusArgs) -> Result<i32, Error> {
    let dir = resolve(&args.artifacts, args.id.as_deref())?;
    let st = state(&dir);
    let ids = run_ids(&dir);
    let mut c = Counts::default();
    let mut lines = Vec::new();
    for id in &ids {
        let run_dir = dir.join("runs").join(id);
        let result: Option<RunResult> = std::fs::read_to_string(run_dir.join("run_result.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match result.map(|r| (r.status, r)) {
            None => c.left += 1,
            Some((RunStatus::Passed, _)) => c.passed += 1,
            Some((RunStatus::Failed, r)) => {
                c.failed += 1;
                let why = r.first_error().unwrap_or_default();
                lines.push(format!("  failed       {id}: {why}"));
            }
            Some((RunStatus::Interrupted, _)) => {
                c.interrupted += 1;
                lines.push(format!("  interrupted  {id}"));
            }
            Some((RunStatus::Running, _)) => {
                if matches!(st, State::Running(_)) {
                    c.running += 1;
                    let at = current_step(&run_dir).unwrap_or_else(|| "starting".into());
                    lines.push(format!("  running      {id}: {at}"));
                } else if matches!(st, State::Abandoned(_)) {
                    c.interrupted += 1;
                    lines.push(format!(
                        "  abandoned    {id}: flow died while it ran{}",
                        current_step(&run_dir)
                            .map(|s| format!(" (at {s})"))
                            .unwrap_or_default()
                    ));
                } else {
                    c.interrupted += 1;
                    lines.push(format!("  interrupted  {id} (flow stopped while it ran)"));
                }
            }
        }
    }
    let name = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut out = std::io::stdout().lock();
    let mut text = format!(
        "artifact {name} (suite {}): {}\n{} runs: {} passed, {} failed",
        suite_name(&dir),
        st.describe(),
        ids.len(),
        c.passed,
        c.failed
    );
    if c.interrupted > 0 {
        text.push_str(&format!(", {} interrupted", c.interrupted));
    }
    if c.running > 0 {
        text.push_str(&format!(", {} running", c.running));
    }
    text.push_str(&format!(", {} left\n", c.left));
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    if matches!(st, State::Abandoned(_)) {
        text.push_str(&format!(
            "what now:\n  flow attach {name}   take over what its steps on ssh hosts still run, and finish those runs\n  flow resume {name}   the same, then run what did not pass (passed runs are kept)\n  flow fetch {name}    bring back now what the runs' fetch steps would\n  flow reap {name}     kill what it left running on its hosts\n"
        ));
    }
    out.write_all(text.as_bytes()).map_err(Error::Output)?;
    Ok(exit::OK)
}

pub fn list(args: &ListArgs) -> Result<i32, Error> {
    let root = &args.artifacts;
    let mut dirs: Vec<(String, PathBuf)> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, p)| !n.starts_with('.') && p.join("suite.json").is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", root, e)),
    };
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    let mut out = std::io::stdout().lock();
    if dirs.is_empty() {
        writeln!(out, "no artifacts in `{}`", display_path(root)).map_err(Error::Output)?;
        return Ok(exit::OK);
    }
    let width = dirs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, path) in dirs {
        let st = state(&path);
        let total = run_ids(&path).len();
        let (mut passed, mut failed, mut other) = (0, 0, 0);
        // A real CSV reader: a param value may hold commas or line breaks.
        if let Ok(mut csv) = csv::Reader::from_path(path.join("runs.csv")) {
            for rec in csv.records().flatten() {
                let n = rec.len();
                match n.checked_sub(2).and_then(|i| rec.get(i)) {
                    Some("passed") => passed += 1,
                    Some("failed") => failed += 1,
                    Some("pending") | None => {}
                    Some(_) => other += 1,
                }
            }
        }
        let mut counts = format!("{total} runs");
        if st != State::Planned {
            counts.push_str(&format!(", {passed} passed, {failed} failed"));
            if other > 0 {
                counts.push_str(&format!(", {other} interrupted or running"));
            }
        }
        writeln!(
            out,
            "{name:<width$}  {:<10}  {counts}  [{}]",
            suite_name(&path),
            st.describe()
        )
        .map_err(Error::Output)?;
    }
    Ok(exit::OK)
}
