//! Results from an artifact folder alone: metric extraction into each
//! run's `run_result.json`, and `summary.csv` / `summary.json` over all
//! runs. Reads and writes files only; no host is contacted.

pub mod compare;
pub mod extract;
pub mod junit;
pub mod order;
pub mod report;
pub mod scraped;
pub mod stats;
pub mod suite_steps;
pub mod summary;
pub mod timeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifact::run_result::{RunResult, RunStatus};
use crate::artifact::{atomic_write, replace_file};
use crate::plan::RunPlan;
use summary::RunRecord;

/// One run folder as found in an artifact.
pub struct StoredRun {
    pub dir: PathBuf,
    pub plan: RunPlan,
    /// Absent when the run never started.
    pub result: Option<RunResult>,
    /// `run_result.json` as read, so that an unchanged result is not
    /// written again.
    raw: Vec<u8>,
}

impl StoredRun {
    /// Its result, when the run passed: the only results whose data counts.
    pub fn passed(&self) -> Option<&RunResult> {
        self.result
            .as_ref()
            .filter(|r| r.status == RunStatus::Passed)
    }
}

/// A run's status for `--only status=…`: its result's, or `pending`
/// when it never started.
pub fn status_of(result: Option<&RunResult>) -> &'static str {
    result.map_or("pending", |r| r.status.as_str())
}

/// [`status_of`] the run in `run_dir`, from its `run_result.json`.
pub fn status_in(run_dir: &Path) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Status {
        status: RunStatus,
    }
    std::fs::read(run_dir.join("run_result.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Status>(&b).ok())
        .map_or("pending", |s| s.status.as_str())
}

/// Param and annotation names of `plans`, the keys `--only` knows
/// besides its fields.
pub fn param_names<'a>(plans: impl IntoIterator<Item = &'a RunPlan>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for p in plans {
        for k in p.params.keys() {
            if !out.contains(&k.as_str()) {
                out.push(k);
            }
        }
        for k in p.annotations.keys() {
            if !out.contains(&k.as_str()) {
                out.push(k);
            }
        }
    }
    out
}

/// Runs that have not ended (never started, or running: still going, or
/// left by a flow that died), as one warning: summaries leave them out, so
/// an analysis of a copy synced mid-run is not taken for the whole.
pub fn unfinished<'a>(runs: impl IntoIterator<Item = &'a StoredRun>) -> Option<String> {
    let (mut total, mut open, mut first) = (0, 0, None);
    for r in runs {
        total += 1;
        let ended = r
            .result
            .as_ref()
            .is_some_and(|x| x.status != RunStatus::Running);
        if !ended {
            open += 1;
            first.get_or_insert_with(|| r.plan.id.clone());
        }
    }
    (open > 0).then(|| {
        format!(
            "{open} of {total} runs have not ended (first: {}); the summaries leave them out",
            first.unwrap_or_default()
        )
    })
}

/// One line per metric that has no value in some run that passed: which
/// metric, in how many of those runs, and the first reason. A typo in a
/// metric's `from` or in a fetch path shows here instead of as a silent
/// blank in the summary.
pub fn metric_gaps<'a>(runs: impl IntoIterator<Item = &'a StoredRun>) -> Vec<String> {
    // metric → (runs that passed and have it, runs without a value, first reason)
    let mut gaps: BTreeMap<String, (usize, usize, Option<String>)> = BTreeMap::new();
    for run in runs {
        let Some(result) = run.passed() else {
            continue;
        };
        for (name, v) in &result.metrics {
            let g = gaps.entry(name.clone()).or_insert((0, 0, None));
            g.0 += 1;
            if v.value.is_none() {
                g.1 += 1;
                if g.2.is_none() {
                    g.2 = Some(format!(
                        "{}: {}",
                        result.id,
                        v.error.as_deref().unwrap_or("no value")
                    ));
                }
            }
        }
    }
    gaps.into_iter()
        .filter(|(_, (_, missing, _))| *missing > 0)
        .map(|(name, (of, missing, first))| {
            format!(
                "metric `{name}` has no value in {missing} of {of} passed run{} (first: {})",
                if of == 1 { "" } else { "s" },
                first.unwrap_or_default()
            )
        })
        .collect()
}

/// Every run folder of an artifact with a readable `plan.json`, by id.
/// Unreadable ones are returned as errors naming the file.
pub fn load_runs(artifact: &Path) -> (Vec<StoredRun>, Vec<String>) {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(artifact.join("runs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let loaded = parallel_map(dirs, |dir| {
        let plan_path = dir.join("plan.json");
        let plan: RunPlan = std::fs::read(&plan_path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", plan_path.display()))?;
        let result_path = dir.join("run_result.json");
        let (result, raw) = match std::fs::read(&result_path) {
            Ok(b) => (
                Some(
                    serde_json::from_slice::<RunResult>(&b)
                        .map_err(|e| format!("{}: {e}", result_path.display()))?,
                ),
                b,
            ),
            Err(_) => (None, Vec::new()),
        };
        Ok(StoredRun {
            dir,
            plan,
            result,
            raw,
        })
    });
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for r in loaded {
        match r {
            Ok(run) => runs.push(run),
            Err(e) => errors.push(e),
        }
    }
    (runs, errors)
}

/// Extracts the metrics of `runs` (those `select` picks) into their
/// results and rewrites `run_result.json` where that changed it (replaced
/// whole, not fsync'd: every byte of it can be made again from the run
/// folder). Returns errors writing.
pub fn extract_into(runs: &mut [StoredRun], select: &dyn Fn(&str) -> bool) -> Vec<String> {
    let picked: Vec<&mut StoredRun> = runs
        .iter_mut()
        .filter(|r| r.result.is_some() && select(&r.plan.id))
        .collect();
    parallel_map(picked, |run| {
        let metrics = extract::extract_all(&run.dir, &run.plan.metrics);
        let Some(result) = run.result.as_mut() else {
            return Ok(());
        };
        result.metrics = metrics;
        let path = run.dir.join("run_result.json");
        let bytes = serde_json::to_vec_pretty(&*result).map_err(|e| e.to_string())?;
        if bytes == run.raw {
            return Ok(());
        }
        replace_file(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        run.raw = bytes;
        Ok(())
    })
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// The summary rows of an artifact's runs.
pub fn summarize(runs: &[StoredRun]) -> Vec<summary::Row> {
    let records: Vec<RunRecord> = runs
        .iter()
        .map(|r| RunRecord {
            id: r.plan.id.clone(),
            workload: r.plan.workload.clone(),
            mode: r.plan.mode.clone(),
            variant: r.plan.variant.clone(),
            variant_params: r.plan.variant_params.clone(),
            annotations: r.plan.annotations.clone(),
            passed: r
                .result
                .as_ref()
                .is_some_and(|x| x.status == RunStatus::Passed),
            declared: r
                .plan
                .metrics
                .iter()
                .map(|m| (m.name.clone(), (m.unit.clone(), m.better)))
                .collect::<BTreeMap<_, _>>(),
            metrics: r
                .result
                .as_ref()
                .map(|x| x.metrics.clone())
                .unwrap_or_default(),
        })
        .collect();
    summary::summarize(&records)
}

/// Writes `summary.csv` and `summary.json` into the artifact.
pub fn write_summaries(artifact: &Path, rows: &[summary::Row]) -> Result<(), String> {
    for (name, bytes) in [
        ("summary.csv", summary::to_csv(rows)),
        ("summary.json", summary::to_json(rows)),
    ] {
        let p = artifact.join(name);
        atomic_write(&p, &bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Writes `report.html` into the artifact.
pub fn write_report(
    artifact: &Path,
    runs: &[StoredRun],
    rows: &[summary::Row],
) -> Result<(), String> {
    let id = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suite = runs
        .first()
        .map(|r| r.plan.suite.clone())
        .unwrap_or_default();
    // Setup and teardown instances, with how each went.
    let phases = crate::exec::Phases::load(artifact).unwrap_or_default();
    let phase_runs: Vec<StoredRun> = phases
        .setup
        .iter()
        .chain(&phases.teardown)
        .map(|plan| {
            // Where it is now, should the artifact have moved.
            let dir = artifact.join(&plan.workload).join(&plan.id);
            (plan, dir)
        })
        .map(|(plan, dir)| StoredRun {
            result: std::fs::read(dir.join("run_result.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
            dir,
            plan: (**plan).clone(),
            raw: Vec::new(),
        })
        .collect();
    let comparisons = report_comparisons(artifact)?;
    let html = report::render(artifact, &id, &suite, runs, rows, &phase_runs, &comparisons)?;
    let p = artifact.join("report.html");
    atomic_write(&p, html.as_bytes()).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Where `flow report --by KEY --ref VALUE` keeps its choice, so that
/// every later report (`flow analyze`, `flow report`) shows it too.
pub const REPORT_JSON: &str = "report.json";

/// The `(key, reference value)` comparisons the report shows.
pub fn report_comparisons(artifact: &Path) -> Result<Vec<(String, String)>, String> {
    let p = artifact.join(REPORT_JSON);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not JSON: {e}", p.display()))?;
    Ok(v["compare"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["by"].as_str()?.to_string(),
                c["ref"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Records the report's comparisons (none: the file is removed).
pub fn set_report_comparisons(artifact: &Path, pairs: &[(String, String)]) -> Result<(), String> {
    let p = artifact.join(REPORT_JSON);
    if pairs.is_empty() {
        return match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {e}", p.display()))
            }
            _ => Ok(()),
        };
    }
    let v = serde_json::json!({
        "schema_version": 1,
        "compare": pairs.iter().map(|(by, r)| serde_json::json!({"by": by, "ref": r})).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    atomic_write(&p, &bytes).map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// `text` with the folder `old` (an artifact's absolute path where it was
/// made) replaced by `new` (where it is now), as a whole path: `old`
/// followed by the end, `/` or a character that cannot go on a path name
/// (`/a/art` is not in `/a/art2`).
pub fn relocate(text: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(old) {
        let after = &rest[i + old.len()..];
        let whole = after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')));
        out.push_str(&rest[..i]);
        out.push_str(if whole { new } else { old });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Runs an analyze command on this machine in `cwd`, with `env` added,
/// its output in `<logs>.out` and `<logs>.err`; `Err` says how it failed.
pub fn run_on_controller(
    run: &crate::plan::RunCommand,
    cwd: &Path,
    env: &[(String, String)],
    logs: &Path,
) -> Result<(), String> {
    use crate::plan::RunCommand;
    let mut cmd = match run {
        RunCommand::Shell(text) => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(text);
            c
        }
        RunCommand::Argv(argv) if !argv.is_empty() => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        RunCommand::Argv(_) => return Ok(()),
    };
    if !cwd.is_dir() {
        return Err(format!("its folder `{}` is gone", cwd.display()));
    }
    if let Some(dir) = logs.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let open = |ext: &str| {
        let p = PathBuf::from(format!("{}.{ext}", logs.display()));
        std::fs::File::create(&p).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    let status = cmd
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(open("out")?)
        .stderr(open("err")?)
        .status()
        .map_err(|e| format!("cannot start: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => crate::artifact::run_result::Exit::Code(c),
        (None, s) => crate::artifact::run_result::Exit::Signal(s.unwrap_or(0)),
    };
    if exit.success() {
        Ok(())
    } else {
        Err(exit.describe())
    }
}

/// `f` over `items` on every core, results in input order.
fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 16);
    if threads == 1 || items.len() < 64 {
        return items.into_iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(chunk).collect());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                let f = &f;
                s.spawn(move || c.into_iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::relocate;

    #[test]
    fn relocate_replaces_the_old_folder_as_a_whole_path_only() {
        assert_eq!(
            relocate("plot /old/a/runs/r1 > /old/a/x.svg", "/old/a", "/new/b"),
            "plot /new/b/runs/r1 > /new/b/x.svg"
        );
        assert_eq!(relocate("/old/a2/x /old/a", "/old/a", "/n"), "/old/a2/x /n");
        assert_eq!(relocate("'/old/a'", "/old/a", "/n"), "'/n'");
        assert_eq!(relocate("x", "", "/n"), "x");
    }
}
