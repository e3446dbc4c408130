//! What a run leaves behind: `run_result.json` and the rows of `runs.csv`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::clock::{ClockOffset, Stamp};
use crate::plan::{RunPlan, StepInstance};
use crate::suite::StepKind;

/// How a step's process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exited with {c}"),
            Exit::Signal(s) => format!("killed by SIG{}", signal_name(s)),
        }
    }
}

/// `TERM` for 15; the number itself when it names no signal.
pub fn signal_name(s: i32) -> String {
    nix::sys::signal::Signal::try_from(s).map_or_else(
        |_| s.to_string(),
        |sig| sig.as_str().trim_start_matches("SIG").to_string(),
    )
}

/// One metric of one run, in `run_result.json`: its value, or why there is
/// none (never a made-up zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricValue {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unit: Option<String>,
    /// How many numbers the value comes from (rows, files, matches).
    #[serde(default)]
    pub samples: u64,
    /// Why there is no value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Version of `run_result.json`.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// Outcome of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished (or flow died while it ran).
    Running,
    /// Every step that was not allowed to fail succeeded.
    Passed,
    /// Some step failed.
    Failed,
    /// Stopped by SIGINT/SIGTERM.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Where one step instance is, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// Started; a service not ready yet.
    Running,
    /// A service that passed its readiness probe, or a running monitor.
    Ready,
    /// A task or fetch that succeeded; a service or monitor that ran until
    /// flow stopped it (or that exited 0 on its own).
    Passed,
    /// Exited non-zero, was killed by a signal, timed out, never became
    /// ready, or could not start.
    Failed,
    /// Not started: something it needs failed, or the run ended first.
    Skipped,
    /// Stopped before it finished because another step failed.
    Cancelled,
    /// Stopped before it finished because flow was interrupted.
    Interrupted,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            StepStatus::Pending | StepStatus::Running | StepStatus::Ready
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Ready => "ready",
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Interrupted => "interrupted",
        }
    }
}

/// A process that outlived its step and was killed by flow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Leak {
    pub pid: i32,
    /// Its command line, as `/proc` showed it.
    pub cmdline: String,
}

/// One step instance of a run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StepResult {
    /// `<step>@<host>`.
    pub id: String,
    pub step: String,
    pub host: String,
    pub kind: StepKind,
    pub status: StepStatus,
    /// A failure of this step does not fail the run.
    #[serde(default)]
    pub allow_failure: bool,
    /// Times the step was started (tasks retry).
    pub attempts: u32,
    /// Process id of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started: Option<Stamp>,
    /// When a service passed its probe or a monitor started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ready: Option<Stamp>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended: Option<Stamp>,
    /// Milliseconds from start to end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// Exit code of the last attempt, when it exited.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<i32>,
    /// Signal that ended the last attempt (`TERM`, `KILL`, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signal: Option<String>,
    /// Signals flow sent to stop it, in order (`["TERM", "KILL"]`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub stop_signals: Vec<String>,
    /// Processes left behind by the step and killed.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub leaked: Vec<Leak>,
    /// One message per failed attempt or problem, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<String>,
    /// A remote step's start and end on its host's clock, and on the
    /// controller's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host_times: Option<HostTimes>,
}

/// When a remote step started and ended, as its host's wall clock saw it
/// (the helper reads it around the command), and the same instants on the
/// controller's wall clock, corrected with the host's clock offsets of the
/// run (`clocks`), give or take `bound_ns`. Nanoseconds since the Unix
/// epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostTimes {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_host_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended_host_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bound_ns: Option<u64>,
}

impl StepResult {
    pub fn new(s: &StepInstance) -> StepResult {
        StepResult {
            id: s.id.clone(),
            step: s.step.clone(),
            host: s.host.clone(),
            kind: s.kind,
            status: StepStatus::Pending,
            allow_failure: s.allow_failure,
            attempts: 0,
            pid: None,
            started: None,
            ready: None,
            ended: None,
            duration_ms: None,
            exit_code: None,
            signal: None,
            stop_signals: Vec::new(),
            leaked: Vec::new(),
            errors: Vec::new(),
            host_times: None,
        }
    }

    /// Failed in a way that fails the run.
    pub fn fails_run(&self) -> bool {
        self.status == StepStatus::Failed && !self.allow_failure
    }
}

/// Totals of a run's fetch steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct FetchTotals {
    pub files: u64,
    pub bytes: u64,
    /// Patterns that matched nothing (recorded, not a failure).
    pub missing: u64,
    /// FIFOs, sockets, devices and links out of the run dir: recorded,
    /// never opened or followed.
    #[serde(default)]
    pub skipped: u64,
    /// Transfers that failed (a copy error, a dangling link, rsync's
    /// failure, a file over `max_bytes` with `over_max: fail`): each fails
    /// its fetch step.
    #[serde(default)]
    pub failed: u64,
    /// Files cut at `max_bytes` (`over_max: truncate`): their first bytes
    /// are here, and `fetch.log` says how big they were.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub truncated: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// A remote host's clock against the controller's, measured before and
/// after the run, and through it (`clock_every`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct HostClock {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub before: Option<ClockOffset>,
    /// Measured while the run went, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub samples: Vec<ClockOffset>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub after: Option<ClockOffset>,
}

/// The run's clock record for analysis (`runs/<id>/clocks.json`), written
/// before its analyze steps run: what they need to put every host's times
/// on the controller's clock.
pub const CLOCKS_FILE: &str = "clocks.json";

/// What `clocks.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClockRecord {
    pub run: String,
    /// Per remote host: its offset before, through and after the run
    /// (`host clock - controller clock`, with the error bound of each).
    pub hosts: BTreeMap<String, HostClock>,
    /// Per remote step instance: its start and end on its host's clock and
    /// on the controller's (corrected by the offsets above).
    pub steps: BTreeMap<String, HostTimes>,
}

impl ClockRecord {
    pub fn of(r: &RunResult) -> ClockRecord {
        ClockRecord {
            run: r.id.clone(),
            hosts: r.clocks.clone(),
            steps: r
                .steps
                .iter()
                .filter_map(|s| s.host_times.clone().map(|t| (s.id.clone(), t)))
                .collect(),
        }
    }

    /// Writes `clocks.json` into the run's folder.
    pub fn write(&self, run_dir: &std::path::Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::artifact::atomic_write(&run_dir.join(CLOCKS_FILE), &bytes)
    }
}

impl HostClock {
    /// Every measurement, in time order.
    pub fn points(&self) -> Vec<&ClockOffset> {
        let mut v: Vec<&ClockOffset> = self
            .before
            .iter()
            .chain(self.samples.iter())
            .chain(self.after.iter())
            .collect();
        v.sort_by_key(|c| c.at_ns);
        v
    }
}

/// What a host's fetch steps have brought into the artifact so far: by the
/// passes of incremental fetches (`every:`) while the run goes, then by the
/// final fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FetchProgress {
    /// Passes made (the final fetch included).
    pub passes: u32,
    /// Files and bytes in place after the last pass.
    pub files: u64,
    pub bytes: u64,
    /// Transfers of the last pass that failed.
    #[serde(default)]
    pub failed: u64,
    /// When the last pass ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at: Option<Stamp>,
    /// The last pass's first failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// `run_result.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunResult {
    pub schema_version: u32,
    pub id: String,
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub repetition: u32,
    pub status: RunStatus,
    pub started: Stamp,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended: Option<Stamp>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// The step flow was at when it last wrote this file.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub current_step: Option<String>,
    pub steps: Vec<StepResult>,
    pub fetch: FetchTotals,
    /// Per host: what its fetches have brought so far (updated by every
    /// incremental pass while the run goes).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub fetched: BTreeMap<String, FetchProgress>,
    /// Per remote host: its clock offset before and after the run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub clocks: BTreeMap<String, HostClock>,
    /// Metric name → value (or why there is none), extracted after the run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub metrics: BTreeMap<String, MetricValue>,
    /// Problems of the run itself (setup, files, leaks, interruption).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<String>,
    /// The run's mutation, when its entry has mutations.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mutation: Option<String>,
    /// The code the run ran: each source's commit, uncommitted diff and
    /// patches (as in its plan).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub sources: BTreeMap<String, crate::plan::RunSource>,
    /// Notes on the run (as in its plan).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

impl RunResult {
    pub fn new(plan: &RunPlan, started: Stamp) -> RunResult {
        RunResult {
            schema_version: RESULT_SCHEMA_VERSION,
            id: plan.id.clone(),
            workload: plan.workload.clone(),
            mode: plan.mode.clone(),
            variant: plan.variant.clone(),
            repetition: plan.repetition,
            status: RunStatus::Running,
            started,
            ended: None,
            duration_ms: None,
            current_step: None,
            steps: plan.steps.iter().map(StepResult::new).collect(),
            fetch: FetchTotals::default(),
            fetched: BTreeMap::new(),
            clocks: BTreeMap::new(),
            metrics: BTreeMap::new(),
            errors: Vec::new(),
            mutation: plan.mutation.clone(),
            sources: plan.sources.clone(),
            annotations: plan.annotations.clone(),
        }
    }

    /// The step whose failure failed the run, if a step did.
    pub fn failing_step(&self) -> Option<&StepResult> {
        let failed = |s: &&StepResult| s.fails_run() && !s.errors.is_empty();
        // A fetch that failed after a failed setup only repeats the setup's
        // error: a step that ran comes first, then the run's own errors.
        self.steps
            .iter()
            .filter(|s| s.kind != StepKind::Fetch)
            .find(failed)
            .or_else(|| {
                self.errors
                    .is_empty()
                    .then(|| self.steps.iter().find(failed))
                    .flatten()
            })
    }

    /// The first failure worth a line: `broadcast@coord: exited with 1`, or
    /// the run's own error (a host that could not be set up) when no step
    /// but a fetch failed.
    pub fn first_error(&self) -> Option<String> {
        self.failing_step()
            .and_then(|s| s.errors.last().map(|e| format!("{}: {e}", s.id)))
            .or_else(|| self.errors.first().cloned())
            .or_else(|| {
                self.steps
                    .iter()
                    .filter(|s| s.fails_run())
                    .find_map(|s| s.errors.last().map(|e| format!("{}: {e}", s.id)))
            })
    }
}

/// One row of `runs.csv`.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub repetition: u32,
    /// `pending` (not run), or a [`RunStatus`].
    pub status: String,
    pub duration_ms: Option<u64>,
    /// Notes on the run, as columns `annotation.KEY` at the end.
    pub annotations: BTreeMap<String, String>,
}

impl RunRow {
    pub fn new(plan: &RunPlan) -> RunRow {
        RunRow {
            id: plan.id.clone(),
            workload: plan.workload.clone(),
            mode: plan.mode.clone(),
            variant: plan.variant.clone(),
            params: plan.variant_params.clone(),
            repetition: plan.repetition,
            status: "pending".to_string(),
            duration_ms: None,
            annotations: plan.annotations.clone(),
        }
    }
}

/// The fixed columns of `runs.csv`, params going between the fourth and
/// the fifth.
const RUNS_CSV_FIXED: [&str; 7] = [
    "id",
    "workload",
    "mode",
    "variant",
    "repetition",
    "status",
    "duration_ms",
];

/// `runs.csv`: `id,workload,mode,variant,<param columns…>,repetition,status,duration_ms,<annotation columns…>`.
/// A param whose name is a fixed column is written `param.<name>`.
/// Param columns are the union of every run's variant params, in first-seen
/// order; a run without one leaves it empty. Annotation columns are
/// `annotation.<key>`, in key order.
pub fn runs_csv(rows: &[RunRow]) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for r in rows {
        for k in r.params.keys() {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let notes: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.annotations.keys().map(String::as_str))
        .collect();
    let mut out = String::with_capacity(64 + rows.len() * 96);
    let mut header: Vec<String> = RUNS_CSV_FIXED[..4].iter().map(|s| s.to_string()).collect();
    header.extend(
        keys.iter()
            .map(|k| crate::artifact::param_column(k, &RUNS_CSV_FIXED)),
    );
    header.extend(RUNS_CSV_FIXED[4..].iter().map(|s| s.to_string()));
    header.extend(notes.iter().map(|k| format!("annotation.{k}")));
    push_row(&mut out, header.into_iter());
    for r in rows {
        let mut cells = vec![
            r.id.clone(),
            r.workload.clone(),
            r.mode.clone(),
            r.variant.clone(),
        ];
        for k in &keys {
            cells.push(match r.params.get(*k) {
                None => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            });
        }
        cells.push(r.repetition.to_string());
        cells.push(r.status.clone());
        cells.push(r.duration_ms.map(|d| d.to_string()).unwrap_or_default());
        for k in &notes {
            cells.push(r.annotations.get(*k).cloned().unwrap_or_default());
        }
        push_row(&mut out, cells.into_iter());
    }
    out
}

/// RFC 4180: quote a cell holding a comma, quote or line break.
fn push_row(out: &mut String, cells: impl Iterator<Item = String>) {
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if c.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&c);
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, params: serde_json::Value, status: &str) -> RunRow {
        RunRow {
            id: id.into(),
            workload: "w".into(),
            mode: "baseline".into(),
            variant: "v".into(),
            params: params.as_object().cloned().unwrap_or_default(),
            repetition: 1,
            status: status.into(),
            duration_ms: Some(12),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn csv_has_a_column_per_param_and_quotes_what_needs_it() {
        let rows = [
            row("a", serde_json::json!({"n": 1, "pattern": "x,y"}), "passed"),
            row("b", serde_json::json!({"size": "big"}), "pending"),
        ];
        assert_eq!(
            runs_csv(&rows),
            "id,workload,mode,variant,n,pattern,size,repetition,status,duration_ms\n\
             a,w,baseline,v,1,\"x,y\",,1,passed,12\n\
             b,w,baseline,v,,,big,1,pending,12\n"
        );
    }

    #[test]
    fn annotations_are_columns_of_their_own_at_the_end() {
        let mut a = row("a", serde_json::json!({"n": 1}), "passed");
        a.annotations
            .insert("purpose".into(), "lock, contention".into());
        let mut b = row("b", serde_json::json!({"n": 2}), "passed");
        b.annotations.insert("host_kernel".into(), "6.1".into());
        assert_eq!(
            runs_csv(&[a, b]),
            "id,workload,mode,variant,n,repetition,status,duration_ms,annotation.host_kernel,annotation.purpose\n\
             a,w,baseline,v,1,1,passed,12,,\"lock, contention\"\n\
             b,w,baseline,v,2,1,passed,12,6.1,\n"
        );
    }
}
