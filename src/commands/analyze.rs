//! `flow analyze`: results again from a stored artifact, files only.

use std::io::Write;
use std::path::Path;

use super::status::resolve;
use super::{Error, exit};
use crate::cli::{AnalyzeArgs, CompareArgs};
use crate::diag::display_path;
use crate::plan::{RunCommand, StepInstance};
use crate::results::{self, StoredRun};
use crate::suite::StepKind;

pub fn analyze(args: &AnalyzeArgs) -> Result<i32, Error> {
    let artifact = resolve(&args.artifacts, args.id.as_deref())?;
    let only = super::run::only(&args.only)?;
    let (mut runs, mut problems) = results::load_runs(&artifact);
    super::run::unknown_keys(&only, results::param_names(runs.iter().map(|r| &r.plan)))?;
    // Decided before anything is extracted again: the runs as they were.
    let picked_ids: std::collections::HashSet<String> = runs
        .iter()
        .filter(|r| only.matches(&r.plan, Some(results::status_of(r.result.as_ref()))))
        .map(|r| r.plan.id.clone())
        .collect();
    let select = |id: &str| picked_ids.contains(id);
    let artifact_id = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let picked = runs.iter().filter(|r| select(&r.plan.id)).count();
    if picked == 0 {
        return Err(Error::Invalid(format!(
            "error: no run of `{}` matches{}\n",
            display_path(&artifact),
            if only.is_empty() {
                String::new()
            } else {
                format!(" `--only {}`", args.only.join(" --only "))
            }
        )));
    }
    if args.metrics_from_workloads {
        let changes = super::metrics_from::apply(&artifact, &mut runs, &select)?;
        let _ = std::io::stdout()
            .lock()
            .write_all(changes.render().as_bytes());
        if !changes.orphans.is_empty() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "warning: {} run{} the suite no longer has keep{} the metrics {} ran with: {}",
                changes.orphans.len(),
                if changes.orphans.len() == 1 { "" } else { "s" },
                if changes.orphans.len() == 1 { "s" } else { "" },
                if changes.orphans.len() == 1 {
                    "it"
                } else {
                    "they"
                },
                changes.orphans.join(", ")
            );
        }
    }
    // Each picked run's timeline merged again (the event files and clock
    // record are in the artifact), before the analyze steps read it.
    for run in runs.iter().filter(|r| select(&r.plan.id)) {
        if run.plan.timeline.is_empty() {
            continue;
        }
        let Some(result) = run.passed() else {
            continue;
        };
        if let Err(errors) = results::timeline::merge(&run.dir, result, &run.plan.timeline) {
            problems.extend(errors.into_iter().map(|e| format!("{}: {e}", run.plan.id)));
        }
    }
    let mut steps_failed = 0;
    if !args.no_steps {
        for run in runs.iter().filter(|r| select(&r.plan.id)) {
            if run.passed().is_none() {
                continue;
            }
            for step in run
                .plan
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Analyze)
            {
                if let Err(e) = run_step(run, step, &artifact_id) {
                    steps_failed += 1;
                    problems.push(format!("{} {}: {e}", run.plan.id, step.id));
                }
            }
        }
    }
    problems.extend(results::extract_into(&mut runs, &select));
    let rows = results::summarize(&runs);
    if let Err(e) = results::write_summaries(&artifact, &rows) {
        problems.push(e);
    }
    if !args.no_steps {
        let failed = results::suite_steps::run_all(&artifact);
        steps_failed += failed.len();
        problems.extend(failed);
    }
    if let Err(e) = results::write_report(&artifact, &runs, &rows) {
        problems.push(e);
    }
    if let Err(e) = results::junit::write(&artifact, &runs) {
        problems.push(e);
    }
    let (mut extracted, mut failed) = (0, 0);
    for r in runs.iter().filter(|r| select(&r.plan.id)) {
        for v in r.result.iter().flat_map(|x| x.metrics.values()) {
            if v.value.is_some() {
                extracted += 1;
            } else {
                failed += 1;
            }
        }
    }
    let mut err = std::io::stderr().lock();
    for p in &problems {
        let _ = writeln!(err, "error: {p}");
    }
    for w in results::metric_gaps(runs.iter().filter(|r| select(&r.plan.id))) {
        let _ = writeln!(err, "warning: {w}");
    }
    if let Some(w) = results::unfinished(runs.iter().filter(|r| select(&r.plan.id))) {
        let _ = writeln!(err, "warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{picked} run{}: {extracted} metric value{} extracted, {failed} without a value\nsummary: {}\nreport: {}",
        if picked == 1 { "" } else { "s" },
        if extracted == 1 { "" } else { "s" },
        display_path(&artifact.join("summary.csv")),
        display_path(&artifact.join("report.html"))
    );
    Ok(if steps_failed > 0 || !problems.is_empty() {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// Runs one analyze step again, on this machine, with its output into the
/// run's `logs/`. The plan's commands name the run dir where it was when
/// planned; an artifact that moved since gets its new place.
fn run_step(run: &StoredRun, step: &StepInstance, artifact_id: &str) -> Result<(), String> {
    let here = run.dir.display().to_string();
    // The artifact where it was planned and where it is now: every path
    // below the old one names its copy here (the run's folder, the
    // artifact's, `clocks.json`), never the old controller's.
    let old_artifact = Path::new(&run.plan.dir)
        .parent()
        .and_then(Path::parent)
        .map(|p| p.display().to_string());
    let new_artifact = run
        .dir
        .parent()
        .and_then(Path::parent)
        .map(|p| p.display().to_string());
    let moved = |s: &str| match (&old_artifact, &new_artifact) {
        (Some(o), Some(n)) if o != n => results::relocate(s, o, n),
        _ => s.to_string(),
    };
    let Some(command) = &step.run else {
        return Ok(());
    };
    let command = match command {
        RunCommand::Shell(text) => RunCommand::Shell(moved(text)),
        RunCommand::Argv(argv) => RunCommand::Argv(argv.iter().map(|a| moved(a)).collect()),
    };
    let mut env: Vec<(String, String)> = step
        .env
        .iter()
        .map(|(k, v)| (k.clone(), moved(v)))
        .collect();
    // The clock record, from the stored result (an artifact made before
    // there was one gets it now).
    if let Some(r) = &run.result {
        crate::artifact::run_result::ClockRecord::of(r)
            .write(&run.dir)
            .map_err(|e| format!("cannot write the run's clocks.json: {e}"))?;
    }
    env.extend([
        (
            crate::exec::run::CLOCKS_VAR.to_string(),
            run.dir
                .join(crate::artifact::run_result::CLOCKS_FILE)
                .display()
                .to_string(),
        ),
        ("FLOW_RUN_ID".to_string(), run.plan.id.clone()),
        ("FLOW_RUN_DIR".to_string(), here.clone()),
        ("FLOW_ARTIFACT_ID".to_string(), artifact_id.to_string()),
        ("FLOW_STEP".to_string(), step.step.clone()),
        ("FLOW_HOST".to_string(), step.host.clone()),
    ]);
    results::run_on_controller(
        &command,
        Path::new(&step.cwd),
        &env,
        &run.dir.join("logs").join(&step.id),
    )
}

/// `flow compare A B`: from the stored results of both (metrics as they
/// are in their `run_result.json`; nothing is extracted again).
pub fn compare(args: &CompareArgs) -> Result<i32, Error> {
    if let (Some(key), Some(reference)) = (&args.by, &args.reference) {
        return compare_within(args, key, reference);
    }
    let mut sides = Vec::new();
    for id in [Some(&args.a), args.b.as_ref()].into_iter().flatten() {
        let dir = resolve(&args.artifacts, Some(id))?;
        let (runs, errors) = results::load_runs(&dir);
        for e in &errors {
            let _ = writeln!(std::io::stderr().lock(), "warning: {e}");
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        sides.push((name, results::summarize(&runs)));
    }
    let diffs = results::compare::compare(&sides[0].1, &sides[1].1);
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&serde_json::json!({
            "a": sides[0].0,
            "b": sides[1].0,
            "alpha": results::summary::ALPHA,
            "rows": diffs,
        }))
        .unwrap_or_default();
        s.push('\n');
        s
    } else {
        results::compare::table(&diffs, &sides[0].0, &sides[1].0)
    };
    out.write_all(text.as_bytes()).map_err(Error::Output)?;
    Ok(exit::OK)
}

/// `flow compare ID --by KEY --ref VALUE`: each value of a variant key
/// against the reference value, within one artifact.
fn compare_within(args: &CompareArgs, key: &str, reference: &str) -> Result<i32, Error> {
    let dir = resolve(&args.artifacts, Some(&args.a))?;
    let (runs, errors) = results::load_runs(&dir);
    for e in &errors {
        let _ = writeln!(std::io::stderr().lock(), "warning: {e}");
    }
    let rows = results::summarize(&runs);
    let diffs = results::compare::compare_by(&rows, key, reference)
        .map_err(|e| Error::Invalid(format!("error: {e}\n")))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&serde_json::json!({
            "artifact": name,
            "by": key,
            "ref": reference,
            "alpha": results::summary::ALPHA,
            "rows": diffs,
        }))
        .unwrap_or_default();
        s.push('\n');
        s
    } else {
        results::compare::table(&diffs, &format!("{key}={reference}"), "this variant")
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(Error::Output)?;
    Ok(exit::OK)
}

/// `flow report ID`: `report.html` again from the stored results.
pub fn report(args: &crate::cli::ReportArgs) -> Result<i32, Error> {
    let artifact = resolve(&args.artifacts, args.id.as_deref())?;
    let (runs, errors) = results::load_runs(&artifact);
    let mut err = std::io::stderr().lock();
    for e in &errors {
        let _ = writeln!(err, "warning: {e}");
    }
    let rows = results::summarize(&runs);
    if args.by.len() != args.reference.len() {
        return Err(Error::Invalid(
            "error: each `--by KEY` needs its own `--ref VALUE`\n".into(),
        ));
    }
    if !args.by.is_empty() || args.no_compare {
        let pairs: Vec<(String, String)> = args
            .by
            .iter()
            .cloned()
            .zip(args.reference.iter().cloned())
            .collect();
        // A key or value that is not there is an error now, not a note in
        // the page later.
        for (k, v) in &pairs {
            results::compare::compare_by(&rows, k, v)
                .map_err(|e| Error::Invalid(format!("error: {e}\n")))?;
        }
        if let Err(e) = results::set_report_comparisons(&artifact, &pairs) {
            let _ = writeln!(err, "error: {e}");
            return Ok(exit::FAILED);
        }
    }
    if let Err(e) = results::write_report(&artifact, &runs, &rows) {
        let _ = writeln!(err, "error: {e}");
        return Ok(exit::FAILED);
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "report: {}",
        display_path(&artifact.join("report.html"))
    );
    Ok(exit::OK)
}
