//! `flow merge ID... -o ID`: artifacts of one plan (the shards of a CI
//! matrix) into one artifact folder, analysed as if it had run in one
//! place. The inputs are only read (unless `--move`); the merged folder is
//! built under a hidden name and renamed into place once whole, so an
//! interrupted merge leaves no half artifact behind a real id.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::status::{State, read_suite_json, resolve, state};
use super::{Error, exit};
use crate::artifact::merge::{self, Input};
use crate::artifact::run_result::{RunRow, RunStatus, runs_csv};
use crate::artifact::{ArtifactDir, atomic_write, new_artifact_id, utc_timestamp};
use crate::cli::MergeArgs;
use crate::diag::display_path;
use crate::results;

pub fn merge(args: &MergeArgs) -> Result<i32, Error> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut inputs: Vec<Input> = Vec::new();
    let mut jsons: Vec<Value> = Vec::new();
    // A submission (`flow run --slurm`) stands for its shards' artifacts.
    let mut names: Vec<(String, Option<PathBuf>)> = Vec::new();
    for name in &args.ids {
        match super::slurm::find(&args.artifacts, Some(name)) {
            Some(sub) => {
                for a in super::slurm::shard_artifacts(&sub)? {
                    let shown = format!("{name}/{}", a.strip_prefix(&sub).unwrap_or(&a).display());
                    names.push((shown, Some(a)));
                }
            }
            None => names.push((name.clone(), None)),
        }
    }
    let ids: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    for (name, known) in &names {
        let dir = match known {
            Some(d) => d.clone(),
            None => resolve(&args.artifacts, Some(name))?,
        };
        if let Some(k) = dirs.iter().position(|d| *d == dir) {
            let what = if ids[k] == *name {
                format!("`{name}` is named twice")
            } else {
                format!(
                    "`{}` and `{name}` are the same artifact `{}`",
                    ids[k],
                    display_path(&dir)
                )
            };
            return Err(Error::Invalid(format!(
                "error: {what}\n  = help: name each shard's artifact once\n"
            )));
        }
        if let State::Running(pid) = state(&dir) {
            return Err(Error::Invalid(format!(
                "error: flow (pid {pid}) is running artifact `{name}` now\n  = help: merge it once it has ended; `flow status {name}` shows how far it is\n"
            )));
        }
        let v = read_suite_json(&dir)?;
        inputs.push(Input::of_suite_json(name, &v));
        jsons.push(v);
        dirs.push(dir);
    }
    let plan = merge::plan(&inputs).map_err(Error::Invalid)?;
    let suite = inputs[0].suite.clone();
    let id = match &args.output {
        Some(id) => check_id(id)?,
        None => new_artifact_id(&suite, std::time::SystemTime::now()),
    };
    let out = args.artifacts.join(&id);
    if out.exists() {
        return Err(Error::Invalid(format!(
            "error: `{}` exists; merge writes a new artifact and never into one\n  = help: pick another `-o ID`\n",
            display_path(&out)
        )));
    }
    std::fs::create_dir_all(&args.artifacts)
        .map_err(|e| Error::io("create", &args.artifacts, e))?;
    let staging = args
        .artifacts
        .join(format!(".{id}.merging-{}", std::process::id()));
    let mut warnings = Vec::new();
    let mut held = Vec::with_capacity(plan.held.len());
    let mut gone = Vec::new();
    let built = build(
        args,
        &staging,
        &dirs,
        &inputs,
        &plan,
        &mut held,
        &mut gone,
        &mut warnings,
    );
    if let Err(e) = built {
        // Copies only are dropped; moved runs stay where the user is told.
        if !args.move_runs {
            let _ = std::fs::remove_dir_all(&staging);
        }
        return Err(e);
    }
    let mut missing: Vec<String> = plan.missing.clone();
    missing.extend(gone.iter().cloned());
    let merged = merged_suite_json(&jsons, &dirs, &inputs, &id, &out, &held, &missing);
    let sj = staging.join("suite.json");
    let bytes = serde_json::to_vec_pretty(&merged).map_err(|e| Error::Output(e.into()))?;
    atomic_write(&sj, &bytes).map_err(|e| Error::io("write", &sj, e))?;
    std::fs::rename(&staging, &out).map_err(|e| Error::io("rename into place", &out, e))?;
    ArtifactDir::adopt(&args.artifacts, &id).map_err(|e| Error::io("point latest at", &out, e))?;
    let out = out.canonicalize().unwrap_or(out);

    // Results again, as at the end of `flow run`.
    let (runs, errors) = results::load_runs(&out);
    warnings.extend(errors);
    let order: std::collections::HashMap<&str, usize> = held
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let mut rows: Vec<(usize, RunRow)> = runs
        .iter()
        .map(|r| {
            let mut row = RunRow::new(&r.plan);
            if let Some(res) = &r.result {
                row.status = res.status.as_str().to_string();
                row.duration_ms = res.duration_ms;
            }
            (
                order.get(r.plan.id.as_str()).copied().unwrap_or(usize::MAX),
                row,
            )
        })
        .collect();
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<RunRow> = rows.into_iter().map(|(_, r)| r).collect();
    let csv = out.join("runs.csv");
    atomic_write(&csv, runs_csv(&rows).as_bytes()).map_err(|e| Error::io("write", &csv, e))?;
    warnings.extend(results::metric_gaps(&runs));
    let with_metrics = runs.iter().any(|r| !r.plan.metrics.is_empty())
        || dirs.iter().any(|d| d.join("summary.csv").exists());
    let summary = results::summarize(&runs);
    if with_metrics && let Err(e) = results::write_summaries(&out, &summary) {
        warnings.push(e);
    }
    let mut steps_failed = 0;
    if !args.no_steps {
        let failed = results::suite_steps::run_all(&out);
        steps_failed = failed.len();
        warnings.extend(failed);
    }
    if let Err(e) = results::write_report(&out, &runs, &summary) {
        warnings.push(e);
    }
    if let Err(e) = results::junit::write(&out, &runs) {
        warnings.push(e);
    }

    let count = |s: RunStatus| {
        runs.iter()
            .filter(|r| r.result.as_ref().is_some_and(|x| x.status == s))
            .count()
    };
    let (passed, failed, interrupted) = (
        count(RunStatus::Passed),
        count(RunStatus::Failed),
        count(RunStatus::Interrupted),
    );
    let not_ended = runs.len() - passed - failed - interrupted;
    if !missing.is_empty() {
        let shards = if plan.missing_shards.is_empty() {
            String::new()
        } else {
            format!(
                "; no input is shard {}",
                plan.missing_shards
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        warnings.push(format!(
            "{} of the plan's {} runs are in no input (first: {}){shards}; `suite.json` lists them under `merged.missing`",
            missing.len(),
            plan.all_runs(),
            missing[0]
        ));
    }
    if let Some(w) = results::unfinished(&runs) {
        warnings.push(w);
    }
    let mut err = std::io::stderr().lock();
    for w in &warnings {
        let _ = writeln!(err, "warning: {w}");
    }
    let mut shards: Vec<crate::plan::Shard> = inputs
        .iter()
        .flat_map(|i| i.shards.iter().copied())
        .collect();
    shards.sort_by_key(|s| (s.count, s.index));
    let shards: Vec<String> = shards.iter().map(ToString::to_string).collect();
    let mut parts = vec![format!("{passed} passed"), format!("{failed} failed")];
    if interrupted > 0 {
        parts.push(format!("{interrupted} interrupted"));
    }
    if not_ended > 0 {
        parts.push(format!("{not_ended} not ended"));
    }
    if !missing.is_empty() {
        parts.push(format!("{} missing", missing.len()));
    }
    let mut o = std::io::stdout().lock();
    let _ = writeln!(
        o,
        "merged {} artifact{} of suite `{suite}`{}\nartifact: {}\n{} run{}: {}\nresults: {}",
        inputs.len(),
        if inputs.len() == 1 { "" } else { "s" },
        if shards.is_empty() {
            String::new()
        } else {
            format!(" (shards {})", shards.join(", "))
        },
        display_path(&out),
        plan.all_runs(),
        if plan.all_runs() == 1 { "" } else { "s" },
        parts.join(", "),
        display_path(&out.join("runs.csv")),
    );
    if with_metrics {
        let _ = writeln!(o, "summary: {}", display_path(&out.join("summary.csv")));
    }
    let _ = writeln!(o, "report: {}", display_path(&out.join("report.html")));
    let whole = missing.is_empty() && passed == plan.all_runs() && steps_failed == 0;
    Ok(if whole { exit::OK } else { exit::FAILED })
}

/// An `-o` id names one new folder in `--artifacts`.
fn check_id(id: &str) -> Result<String, Error> {
    let bad = id.is_empty()
        || id.starts_with('.')
        || id.contains('/')
        || id.contains('\0')
        || id == "latest";
    if bad {
        return Err(Error::Invalid(format!(
            "error: `-o {id}` is not an artifact id: it names one new folder in `--artifacts` (not `latest`, no `/`, not starting with `.`)\n"
        )));
    }
    Ok(id.to_string())
}

/// Fills `staging` with the runs (copied or moved) and, under
/// `shards/<n>/`, each input's own top-level files; `held` gets the runs
/// brought, in plan order, `gone` those an input lists without a folder.
#[allow(clippy::too_many_arguments)]
fn build(
    args: &MergeArgs,
    staging: &Path,
    dirs: &[PathBuf],
    inputs: &[Input],
    plan: &merge::Merge,
    held: &mut Vec<String>,
    gone: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    std::fs::create_dir_all(staging.join("runs")).map_err(|e| Error::io("create", staging, e))?;
    let mut copied_instead = 0;
    let mut copies: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (run, i) in &plan.held {
        let from = dirs[*i].join("runs").join(run);
        let to = staging.join("runs").join(run);
        // The folder must hold that run: a folder renamed or copied over
        // by hand would bring another run's data under this id.
        if let Err(why) = holds_run(&from, run) {
            warnings.push(format!("`{}` lists run {run} but {why}", inputs[*i].name));
            gone.push(run.clone());
            continue;
        }
        held.push(run.clone());
        if args.move_runs {
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                    copied_instead += 1;
                    copies.push((from, to));
                }
                Err(e) => {
                    return Err(Error::io(
                        "move",
                        &from,
                        std::io::Error::other(format!(
                            "{e}; the runs moved so far are in `{}`",
                            display_path(staging)
                        )),
                    ));
                }
            }
        } else {
            copies.push((from, to));
        }
    }
    copy_all(&copies)?;
    if copied_instead > 0 {
        warnings.push(format!(
            "{copied_instead} runs were copied, not moved: their inputs are on another file system"
        ));
    }
    // Each input's own files (not its runs), so that nothing it recorded
    // is lost: its suite.json, runs.csv, controller log, analysis logs,
    // local hosts' work folders.
    for (n, dir) in dirs.iter().enumerate() {
        let keep = staging.join("shards").join((n + 1).to_string());
        std::fs::create_dir_all(&keep).map_err(|e| Error::io("create", &keep, e))?;
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let skip = ["runs", "shards", "flow.pid", "report.html"]
                .iter()
                .any(|s| name == *s)
                || name.to_string_lossy().starts_with('.');
            if skip {
                continue;
            }
            let (from, to) = (e.path(), keep.join(&name));
            let moved = args.move_runs && std::fs::rename(&from, &to).is_ok();
            if !moved {
                copy_exact(&from, &to).map_err(|err| Error::io("copy", &from, err))?;
            }
        }
    }
    Ok(())
}

/// The merged artifact's `suite.json`: the first input's, with this
/// artifact's id, the runs it holds, where each came from, and what is
/// missing.
#[allow(clippy::too_many_arguments)]
fn merged_suite_json(
    jsons: &[Value],
    dirs: &[PathBuf],
    inputs: &[Input],
    id: &str,
    out: &Path,
    held: &[String],
    missing: &[String],
) -> Value {
    let mut v = jsons[0].clone();
    let old_id = v["artifact_id"].as_str().unwrap_or_default().to_string();
    let out_abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    // Suite-level analyze steps were rendered with the first input's
    // folder and id: this artifact's now. Its folder as recorded is where
    // its runs were planned (`…/runs/<id>` in a plan.json).
    if let Some(steps) = v.get("analyze").cloned()
        && let Some(old_dir) = planned_dir(&dirs[0], &inputs[0])
    {
        let text = steps
            .to_string()
            .replace(&old_dir, &out_abs.display().to_string());
        let text = if old_id.is_empty() {
            text
        } else {
            text.replace(&old_id, id)
        };
        if let Ok(s) = serde_json::from_str::<Value>(&text) {
            v["analyze"] = s;
        }
    }
    let created = jsons
        .iter()
        .filter_map(|j| j["created"].as_str())
        .min()
        .map(String::from);
    let from: Vec<Value> = jsons
        .iter()
        .zip(inputs)
        .enumerate()
        .map(|(n, (j, i))| {
            json!({
                "input": i.name,
                "artifact_id": j["artifact_id"],
                "folder": format!("shards/{}", n + 1),
                "shard": match i.shards.as_slice() {
                    [one] => json!(one.to_string()),
                    [] => Value::Null,
                    many => json!(many.iter().map(ToString::to_string).collect::<Vec<_>>()),
                },
                "runs": held.iter().filter(|r| i.runs.contains(r)).count(),
                "created": j["created"],
                "command_line": j["command_line"],
            })
        })
        .collect();
    let mut history = v["merged"]["earlier"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if v.get("merged").is_some_and(Value::is_object) {
        let mut earlier = v["merged"].clone();
        if let Some(o) = earlier.as_object_mut() {
            o.remove("earlier");
        }
        history.push(earlier);
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("artifact_id".into(), json!(id));
        if let Some(c) = created {
            o.insert("created".into(), json!(c));
        }
        o.insert(
            "command_line".into(),
            json!(std::env::args().collect::<Vec<_>>()),
        );
        o.insert(
            "merged".into(),
            json!({
                "at": utc_timestamp(std::time::SystemTime::now()),
                "from": from,
                "missing": missing,
                "earlier": history,
            }),
        );
        if missing.is_empty() {
            o.remove("selection");
        } else {
            // What a later merge with the missing runs checks against.
            o.insert(
                "selection".into(),
                json!({ "shard": null, "only": [], "all_runs": inputs[0].all_runs }),
            );
        }
    }
    v["expansion"]["runs"] = json!(held);
    v
}

/// The absolute folder an input's runs were planned in, from one of its
/// run's `plan.json` (`dir` is `<artifact>/runs/<id>`).
fn planned_dir(dir: &Path, input: &Input) -> Option<String> {
    let run = input.runs.first()?;
    let text = std::fs::read(dir.join("runs").join(run).join("plan.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    let d = v["dir"].as_str()?;
    d.strip_suffix(&format!("/runs/{run}")).map(String::from)
}

/// Whether `dir` is the folder of run `id`: its `plan.json` says so.
fn holds_run(dir: &Path, id: &str) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let path = dir.join("plan.json");
    let bytes = std::fs::read(&path).map_err(|_| format!("has no `runs/{id}/plan.json`"))?;
    match serde_json::from_slice::<Id>(&bytes) {
        Ok(p) if p.id == id => Ok(()),
        Ok(p) => Err(format!("its `runs/{id}/plan.json` is the plan of {}", p.id)),
        Err(e) => Err(format!("its `runs/{id}/plan.json` cannot be read: {e}")),
    }
}

/// Copies each `(from, to)` folder, on a few threads: run folders are
/// many small files, and copying them is bound by system calls.
fn copy_all(copies: &[(PathBuf, PathBuf)]) -> Result<(), Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(2, 8);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<(PathBuf, std::io::Error)>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.min(copies.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((from, to)) = copies.get(i) else {
                        return;
                    };
                    if let Err(e) = copy_exact(from, to) {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert((from.clone(), e));
                        }
                        // The others stop at their next folder.
                        next.store(copies.len(), std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().ok().flatten() {
        Some((from, e)) => Err(Error::io("copy", &from, e)),
        None => Ok(()),
    }
}

/// Copies a file, symlink or folder (recursively), keeping symlinks as
/// symlinks and file modes.
fn copy_exact(src: &Path, dest: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src)?;
        std::os::unix::fs::symlink(target, dest)
    } else if meta.is_dir() {
        std::fs::create_dir_all(dest)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_exact(&e.path(), &dest.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(src, dest).map(|_| ())
    }
}
