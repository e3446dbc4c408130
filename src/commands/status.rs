//! `flow status` and `flow list`: read-only views of artifact folders.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::artifact::run_result::{RunResult, RunStatus, StepStatus};
use crate::cli::{ListArgs, StatusArgs};
use crate::clock::Stamp;
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
    pub(super) fn describe(&self) -> String {
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

/// What `flow status` shows: built from the artifact's files alone, then
/// printed as text or JSON.
#[derive(Debug, Serialize)]
struct View {
    artifact: String,
    suite: String,
    /// `planned`, `running`, `abandoned` or `done`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    counts: Counts,
    runs: Vec<RunView>,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    total: usize,
    passed: usize,
    failed: usize,
    interrupted: usize,
    running: usize,
    left: usize,
}

#[derive(Debug, Serialize)]
struct RunView {
    id: String,
    /// `pending`, `running`, `abandoned`, `passed`, `failed`, `interrupted`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_step: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hosts: Vec<HostView>,
}

#[derive(Debug, Serialize)]
struct HostView {
    host: String,
    /// What this host's fetch steps have brought into the artifact so far.
    files_fetched: u64,
    bytes_fetched: u64,
    fetch_passes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    fetch_error: Option<String>,
    steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
struct StepView {
    id: String,
    kind: &'static str,
    state: &'static str,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u64>,
    /// The last line of its output so far (steps that run).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_line: Option<String>,
}

/// The last non-empty line of a log file, from its last 4 KiB.
fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut line: String = line.chars().filter(|c| !c.is_control()).collect();
    if line.chars().count() > 100 {
        line = line.chars().take(99).collect::<String>() + "…";
    }
    Some(line)
}

fn host_views(run_dir: &Path, r: &RunResult, live: bool, now: &Stamp) -> Vec<HostView> {
    let mut hosts: Vec<HostView> = Vec::new();
    for st in &r.steps {
        if st.host == crate::plan::CONTROLLER {
            continue;
        }
        let h = match hosts.iter().position(|h| h.host == st.host) {
            Some(i) => &mut hosts[i],
            None => {
                hosts.push(HostView {
                    host: st.host.clone(),
                    files_fetched: 0,
                    bytes_fetched: 0,
                    fetch_passes: 0,
                    fetch_error: None,
                    steps: Vec::new(),
                });
                let last = hosts.len() - 1;
                &mut hosts[last]
            }
        };
        if let Some(p) = r.fetched.get(&st.id) {
            h.files_fetched += p.files;
            h.bytes_fetched += p.bytes;
            h.fetch_passes = h.fetch_passes.max(p.passes);
            if p.error.is_some() {
                h.fetch_error.clone_from(&p.error);
            }
        }
        let going = matches!(st.status, StepStatus::Running | StepStatus::Ready);
        // Live: the steps that run; afterwards: every step.
        if live && !going {
            continue;
        }
        let elapsed_ms = st
            .started
            .map(|s| s.ms_until(st.ended.as_ref().unwrap_or(now)));
        let last_line = going
            .then(|| {
                let logs = run_dir.join("logs");
                last_line(&logs.join(format!("{}.out", st.id)))
                    .or_else(|| last_line(&logs.join(format!("{}.err", st.id))))
            })
            .flatten();
        h.steps.push(StepView {
            id: st.id.clone(),
            kind: st.kind.as_str(),
            state: st.status.as_str(),
            attempt: st.attempts,
            elapsed_ms,
            last_line,
        });
    }
    hosts
}

fn view(dir: &Path) -> View {
    let st = state(dir);
    let ids = run_ids(dir);
    let now = Stamp::now();
    let mut c = Counts {
        total: ids.len(),
        ..Counts::default()
    };
    let mut runs = Vec::new();
    for id in &ids {
        let run_dir = dir.join("runs").join(id);
        let result: Option<RunResult> = std::fs::read(run_dir.join("run_result.json"))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok());
        let Some(r) = result else {
            c.left += 1;
            runs.push(RunView {
                id: id.clone(),
                status: "pending",
                error: None,
                elapsed_ms: None,
                current_step: None,
                hosts: Vec::new(),
            });
            continue;
        };
        let (status, live) = match r.status {
            RunStatus::Passed => {
                c.passed += 1;
                ("passed", false)
            }
            RunStatus::Failed => {
                c.failed += 1;
                ("failed", false)
            }
            RunStatus::Interrupted => {
                c.interrupted += 1;
                ("interrupted", false)
            }
            RunStatus::Running if matches!(st, State::Running(_)) => {
                c.running += 1;
                ("running", true)
            }
            RunStatus::Running if matches!(st, State::Abandoned(_)) => {
                c.interrupted += 1;
                ("abandoned", true)
            }
            RunStatus::Running => {
                c.interrupted += 1;
                ("interrupted", false)
            }
        };
        let error = (r.status == RunStatus::Failed)
            .then(|| r.first_error())
            .flatten();
        let elapsed_ms = r
            .duration_ms
            .or_else(|| live.then(|| r.started.ms_until(&now)));
        runs.push(RunView {
            id: id.clone(),
            status,
            error,
            elapsed_ms,
            current_step: live.then(|| current_step(&run_dir)).flatten(),
            hosts: host_views(&run_dir, &r, live, &now),
        });
    }
    let (state_name, pid) = match st {
        State::Planned => ("planned", None),
        State::Running(p) => ("running", Some(p)),
        State::Abandoned(p) => ("abandoned", Some(p)),
        State::Done => ("done", None),
    };
    View {
        artifact: dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        suite: suite_name(dir),
        state: state_name,
        pid,
        counts: c,
        runs,
    }
}

/// `1.5 MiB`: bytes for people.
pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn elapsed(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, ms % 1000 / 100)
    }
}

fn render(v: &View) -> String {
    let c = &v.counts;
    let state = match (v.state, v.pid) {
        ("running", Some(p)) => format!("running (pid {p})"),
        ("abandoned", Some(p)) => format!("abandoned (flow, pid {p}, is gone)"),
        (s, _) => s.to_string(),
    };
    let mut text = format!(
        "artifact {} (suite {}): {state}\n{} runs: {} passed, {} failed",
        v.artifact, v.suite, c.total, c.passed, c.failed
    );
    if c.interrupted > 0 {
        text.push_str(&format!(", {} interrupted", c.interrupted));
    }
    if c.running > 0 {
        text.push_str(&format!(", {} running", c.running));
    }
    text.push_str(&format!(", {} left\n", c.left));
    for r in &v.runs {
        match r.status {
            "failed" => text.push_str(&format!(
                "  failed       {}: {}\n",
                r.id,
                r.error.as_deref().unwrap_or_default()
            )),
            "interrupted" => text.push_str(&format!("  interrupted  {}\n", r.id)),
            "running" | "abandoned" => {
                let at = r.current_step.as_deref().unwrap_or("starting");
                if r.status == "running" {
                    text.push_str(&format!(
                        "  running      {}: {at}, {} so far\n",
                        r.id,
                        elapsed(r.elapsed_ms.unwrap_or(0))
                    ));
                } else {
                    text.push_str(&format!(
                        "  abandoned    {}: flow died while it ran (at {at})\n",
                        r.id
                    ));
                }
                for h in &r.hosts {
                    let mut fetched = String::new();
                    if h.fetch_passes > 0 {
                        fetched = format!(
                            "; fetched {} file{}, {} ({} pass{})",
                            h.files_fetched,
                            if h.files_fetched == 1 { "" } else { "s" },
                            human_bytes(h.bytes_fetched),
                            h.fetch_passes,
                            if h.fetch_passes == 1 { "" } else { "es" }
                        );
                    }
                    if let Some(e) = &h.fetch_error {
                        fetched.push_str(&format!("; last fetch failed: {e}"));
                    }
                    text.push_str(&format!("    {}{fetched}\n", h.host));
                    for s in &h.steps {
                        text.push_str(&format!(
                            "      {} ({}) {} {}{}\n",
                            s.id,
                            s.kind,
                            s.state,
                            elapsed(s.elapsed_ms.unwrap_or(0)),
                            s.last_line
                                .as_deref()
                                .map(|l| format!("  | {l}"))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if v.state == "abandoned" {
        let name = &v.artifact;
        text.push_str(&format!(
            "what now:\n  flow attach {name}   take over what its steps on ssh hosts still run, and finish those runs\n  flow resume {name}   the same, then run what did not pass (passed runs are kept)\n  flow fetch {name}    bring back now what the runs' fetch steps would\n  flow reap {name}     kill what it left running on its hosts\n"
        ));
    }
    text
}

/// The text `flow status` prints for `dir`.
pub(super) fn render_text(dir: &Path) -> String {
    render(&view(dir))
}

/// Every run of the artifact passed.
pub(super) fn all_passed(dir: &Path) -> bool {
    let c = view(dir).counts;
    c.passed == c.total
}

pub fn status(args: &StatusArgs) -> Result<i32, Error> {
    if let Some(sub) = super::slurm::find(&args.artifacts, args.id.as_deref()) {
        return super::slurm::status(&sub, args.json);
    }
    let dir = resolve(&args.artifacts, args.id.as_deref())?;
    if let Some((r, there)) = super::remote::forwarded(&dir) {
        let there = there.display().to_string();
        let mut a = vec!["status".to_string(), there];
        if args.json {
            a.push("--json".into());
        }
        if let Some(s) = args.watch {
            a.push(format!("--watch={s}"));
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        return r.forward(&a);
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let v = view(&dir);
        let mut text = if args.json {
            serde_json::to_string(&v).unwrap_or_default() + "\n"
        } else {
            render(&v)
        };
        if args.watch.is_some() && tty && !args.json {
            // Home and clear: the view replaces the last one.
            text.insert_str(0, "\x1b[H\x1b[2J");
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).map_err(Error::Output)?;
        out.flush().map_err(Error::Output)?;
        drop(out);
        let Some(secs) = args.watch else { break };
        // Watching ends with flow's work on the artifact.
        if v.state != "running" {
            break;
        }
        std::thread::sleep(Duration::from_secs_f64(secs.clamp(0.1, 3600.0)));
    }
    Ok(exit::OK)
}

pub fn list(args: &ListArgs) -> Result<i32, Error> {
    let root = &args.artifacts;
    let mut dirs: Vec<(String, PathBuf)> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, p)| {
                !n.starts_with('.')
                    && (p.join("suite.json").is_file()
                        || p.join(super::slurm::SUBMISSION_FILE).is_file())
            })
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
        if let Some(line) = super::slurm::list_line(&path) {
            writeln!(out, "{name:<width$}  {line}").map_err(Error::Output)?;
            continue;
        }
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
