//! `flow resume` and `flow attach`: continue an artifact in place.
//!
//! The suite is planned again from its files and checked against the
//! artifact's `plan.json`s; each run's journal then says what becomes of it
//! (see [`crate::exec::resume::decide`]).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::plan::{Prepared, invalid, plan_all, prepare, write_suite_json};
use super::run::Invocation;
use super::status::{State, resolve, state};
use super::{Error, exit};
use crate::artifact::atomic_write;
use crate::artifact::run_result::{RunRow, RunStatus};
use crate::cli::{ResumeArgs, SuiteArgs};
use crate::diag::display_path;
use crate::exec::resume::{Decision, decide, keep_attempt};
use crate::exec::run::Resume;
use crate::exec::{Options, Todo};
use crate::plan::diff::json_diff;
use crate::plan::{PlanOptions, Planner, RunPlan};

/// At most this many changed runs are listed when a resume is refused.
const MAX_LISTED: usize = 20;

/// The command line the artifact was planned with, from its `suite.json`.
pub(super) fn suite_args(sj: &Value, dir: &Path) -> Result<SuiteArgs, Error> {
    let s = &sj["suite"];
    let file = s["file"]
        .as_str()
        .or_else(|| s["path"].as_str())
        .ok_or_else(|| {
            Error::Invalid(
                "error: the artifact's `suite.json` does not say which suite it ran\n".into(),
            )
        })?;
    Ok(SuiteArgs {
        suite: file.to_string(),
        hosts: s["hosts_file"].as_str().map(PathBuf::from),
        set: s["set"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        max_runs: s["max_runs"]
            .as_u64()
            .unwrap_or(crate::suite::DEFAULT_MAX_RUNS),
        annotate: strings(&s["annotate"]),
        pinned: pinned_sources(sj, dir)?,
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The source states the artifact ran: its commits and stored diffs.
fn pinned_sources(
    sj: &Value,
    dir: &Path,
) -> Result<std::collections::BTreeMap<String, crate::suite::code::Pinned>, Error> {
    let mut out = std::collections::BTreeMap::new();
    let Some(sources) = sj["sources"].as_object() else {
        return Ok(out);
    };
    for (name, s) in sources {
        if name == crate::sources::EXPERIMENT {
            continue;
        }
        let Some(commit) = s["commit"].as_str() else {
            continue;
        };
        let diff = match s["diff"].as_str() {
            Some(rel) => {
                let path = dir.join(rel);
                std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?
            }
            None => String::new(),
        };
        out.insert(
            name.clone(),
            crate::suite::code::Pinned {
                commit: commit.to_string(),
                diff,
            },
        );
    }
    Ok(out)
}

/// How the suite's plan now differs from the artifact's.
#[derive(Default)]
struct Changes {
    /// Same id, other plan: `(id, differences)`.
    changed: Vec<(String, Vec<String>)>,
    /// An id the suite no longer plans, and the run that takes its place
    /// (same workload, mode, variant, repetition), if any.
    gone: Vec<(String, Option<String>, Vec<String>)>,
    /// Runs the suite plans now that the artifact does not hold.
    new: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.gone.is_empty() && self.new.is_empty()
    }

    fn render(&self, artifact: &str) -> String {
        let mut lines = Vec::new();
        for (id, diff) in &self.changed {
            lines.push(format!("  changed  {id}: {}", diff.join("; ")));
        }
        for (id, now, diff) in &self.gone {
            match now {
                Some(n) => lines.push(format!("  changed  {id} → {n}: {}", diff.join("; "))),
                None => lines.push(format!("  gone     {id}")),
            }
        }
        for id in &self.new {
            lines.push(format!("  new      {id}"));
        }
        let total = lines.len();
        lines.truncate(MAX_LISTED);
        if total > MAX_LISTED {
            lines.push(format!("  … and {} more", total - MAX_LISTED));
        }
        format!(
            "error: the suite no longer plans the runs of artifact {artifact} as they were planned\n{}\n  = help: restore the suite's files to resume as planned, or pass `--replan` to run the changed runs as the suite now plans them (their earlier results are kept under `replaced/`)\n",
            lines.join("\n")
        )
    }
}

/// The stored plan of a run. When the artifact folder was moved since, its
/// old path in the plan is read as the new one: a run on this machine
/// that works inside the artifact is the same run in its new place (a run
/// on a remote host is not: its folder there depends on the old path).
fn stored_plan(dir: &Path, id: &str) -> Option<Value> {
    let text = std::fs::read(dir.join("runs").join(id).join("plan.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    let old_root = v["dir"]
        .as_str()?
        .strip_suffix(&format!("/runs/{id}"))?
        .to_string();
    let new_root = dir.display().to_string();
    if old_root == new_root {
        return Some(v);
    }
    let text = String::from_utf8_lossy(&text).replace(&old_root, &new_root);
    serde_json::from_str(&text).ok()
}

pub(super) fn key(p: &RunPlan) -> (String, String, String, u32) {
    (
        p.workload.clone(),
        p.mode.clone(),
        p.variant.clone(),
        p.repetition,
    )
}

/// What differs between the allocation an artifact was planned in and the
/// one it resumes in: `(old, new)` node names and addresses, place by place
/// (see `Host::slot`). Empty unless both inventories came from one.
fn node_moves(sj: &Value, now: &crate::suite::Inventory) -> Vec<(String, String)> {
    let mut moves = Vec::new();
    let old = sj["inventory"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for h in &now.hosts {
        let Some(slot) = h.slot else { continue };
        let Some(o) = old.iter().find(|o| o["slot"].as_u64() == Some(slot as u64)) else {
            continue;
        };
        for (was, is) in [(&o["name"], &h.name), (&o["address"], &h.address)] {
            if let Some(was) = was.as_str()
                && was != is
                && !moves.iter().any(|(w, _)| w == was)
            {
                moves.push((was.to_string(), is.clone()));
            }
        }
    }
    moves
}

/// `text` with every `old` of `moves` replaced by its `new` at once, where
/// it stands as a word of its own (no letter or digit right before or
/// after it: `node1` is not in `node10`, `10.0.0.1` not in `10.0.0.10`),
/// the longest first; a name moved onto another's is not moved twice.
fn substitute(text: &str, moves: &[(String, String)]) -> String {
    let mut by_len: Vec<&(String, String)> = moves.iter().filter(|(o, _)| !o.is_empty()).collect();
    by_len.sort_by_key(|(o, _)| std::cmp::Reverse(o.len()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    'scan: while let Some(c) = rest.chars().next() {
        if !before.is_some_and(char::is_alphanumeric) {
            for (old, new) in &by_len {
                if rest.starts_with(old.as_str())
                    && !rest[old.len()..]
                        .chars()
                        .next()
                        .is_some_and(char::is_alphanumeric)
                {
                    out.push_str(new);
                    rest = &rest[old.len()..];
                    before = old.chars().last();
                    continue 'scan;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        before = Some(c);
    }
    out
}

fn compare(
    dir: &Path,
    stored: &[String],
    stored_count: u64,
    fresh: &[RunPlan],
    moves: &[(String, String)],
) -> Changes {
    let mut c = Changes::default();
    let by_id: HashMap<&str, &RunPlan> = fresh.iter().map(|p| (p.id.as_str(), p)).collect();
    let stored_set: HashSet<&str> = stored.iter().map(String::as_str).collect();
    let mut taken: HashSet<&str> = HashSet::new();
    for id in stored {
        let old = stored_plan(dir, id);
        match by_id.get(id.as_str()) {
            Some(p) => {
                let now = serde_json::to_value(p).unwrap_or(Value::Null);
                // In another allocation: the same run if it differs only by
                // the nodes that hold its places.
                let old = match old {
                    Some(o) if !moves.is_empty() && o != now => {
                        serde_json::from_str(&substitute(&o.to_string(), moves)).ok()
                    }
                    o => o,
                };
                if old.as_ref() != Some(&now) {
                    let diff = old.map_or_else(
                        || vec!["plan.json is missing or unreadable".into()],
                        |o| json_diff(&o, &now, 3),
                    );
                    c.changed.push((id.clone(), diff));
                }
            }
            None => {
                let old_key = old.as_ref().and_then(|o| {
                    Some((
                        o["workload"].as_str()?.to_string(),
                        o["mode"].as_str()?.to_string(),
                        o["variant"].as_str()?.to_string(),
                        u32::try_from(o["repetition"].as_u64()?).ok()?,
                    ))
                });
                let twin = fresh.iter().find(|p| {
                    !stored_set.contains(p.id.as_str())
                        && !taken.contains(p.id.as_str())
                        && old_key.as_ref() == Some(&key(p))
                });
                let diff = match (twin, &old) {
                    (Some(t), Some(o)) => {
                        taken.insert(t.id.as_str());
                        // Its id is in its paths and commands: compare as if
                        // it had the new one.
                        let text = o.to_string().replace(id.as_str(), &t.id);
                        let o: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        json_diff(&o, &serde_json::to_value(t).unwrap_or(Value::Null), 3)
                    }
                    _ => Vec::new(),
                };
                c.gone.push((id.clone(), twin.map(|t| t.id.clone()), diff));
            }
        }
    }
    // An artifact of every run of its suite gets every run the suite plans
    // now; one made with `--only` only the ones it holds.
    if stored.len() as u64 == stored_count {
        for p in fresh {
            if !stored_set.contains(p.id.as_str()) && !taken.contains(p.id.as_str()) {
                c.new.push(p.id.clone());
            }
        }
    }
    c
}

/// The runs of the artifact as they will be: with `--replan`, the suite's
/// new plan takes the place of what changed.
fn replan(
    p: &Prepared,
    dir: &Path,
    id: &str,
    sj: &Value,
    stored: &[String],
    fresh: Vec<RunPlan>,
    changes: &Changes,
) -> Result<(Vec<RunPlan>, HashSet<String>), Error> {
    let fresh_ids: Vec<String> = fresh.iter().map(|r| r.id.clone()).collect();
    let mut keep: HashSet<String> = stored.iter().cloned().collect();
    for (old, now, _) in &changes.gone {
        keep.remove(old);
        let from = dir.join("runs").join(old);
        let to = dir.join("replaced").join(old);
        if from.exists() {
            std::fs::create_dir_all(dir.join("replaced"))
                .and_then(|()| std::fs::rename(&from, &to))
                .map_err(|e| Error::io("move aside", &from, e))?;
        }
        if let Some(n) = now {
            keep.insert(n.clone());
        }
    }
    keep.extend(changes.new.iter().cloned());
    let plans: Vec<RunPlan> = fresh.into_iter().filter(|p| keep.contains(&p.id)).collect();
    let changed: HashSet<String> = changes.changed.iter().map(|(i, _)| i.clone()).collect();
    for run in &plans {
        let path = dir.join("runs").join(&run.id).join("plan.json");
        if path.exists() && !changed.contains(&run.id) {
            continue;
        }
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let json = serde_json::to_vec_pretty(run).map_err(|e| Error::Output(e.into()))?;
        atomic_write(&path, &json).map_err(|e| Error::io("write", &path, e))?;
    }
    let ids: Vec<String> = plans.iter().map(|r| r.id.clone()).collect();
    let mut extra = serde_json::Map::new();
    extra.insert("created".into(), sj["created"].clone());
    let mut history = sj["replans"].as_array().cloned().unwrap_or_default();
    history.push(serde_json::json!({
        "at": crate::artifact::utc_timestamp(std::time::SystemTime::now()),
        "changed": changes.changed.iter().map(|(i, _)| i).collect::<Vec<_>>(),
        "replaced": changes.gone.iter().map(|(i, n, _)| serde_json::json!({"id": i, "by": n})).collect::<Vec<_>>(),
        "new": changes.new,
    }));
    extra.insert("replans".into(), Value::from(history));
    // The whole plan is the fresh one now.
    if let Some(sel) = sj.get("selection").filter(|v| v.is_object()) {
        let mut sel = sel.clone();
        sel["all_runs"] = fresh_ids.into();
        extra.insert("selection".into(), sel);
    }
    write_suite_json(p, dir, id, &ids, Some(&extra))?;
    Ok((plans, changed))
}

/// The artifact's `flow.pid`, taken for this flow (atomically: of two
/// flows resuming at once, one is refused); given back when dropped.
struct Lock(PathBuf);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn take(dir: &Path) -> Result<Lock, Error> {
    let path = dir.join(super::run::LOCK_FILE);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                writeln!(f, "{}", std::process::id()).map_err(|e| Error::io("write", &path, e))?;
                return Ok(Lock(path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match state(dir) {
                State::Running(pid) => {
                    return Err(Error::Invalid(format!(
                        "error: flow (pid {pid}) is running artifact `{}` now\n  = help: `flow status {}` shows how far it is; resume it once that flow has ended\n",
                        display_path(dir),
                        display_path(dir)
                    )));
                }
                // A dead flow's: taken over.
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            },
            Err(e) => return Err(Error::io("create", &path, e)),
        }
    }
    Err(Error::Invalid(format!(
        "error: another flow took artifact `{}` at the same moment\n",
        display_path(dir)
    )))
}

pub fn resume(args: &ResumeArgs, attach: bool) -> Result<i32, Error> {
    if !attach && let Some(sub) = super::slurm::find(&args.artifacts, args.id.as_deref()) {
        return super::slurm::resume(&sub, args.rerun_failed);
    }
    let dir = resolve(&args.artifacts, args.id.as_deref())?;
    if let Some((r, there)) = super::remote::forwarded(&dir) {
        let there = there.display().to_string();
        if attach {
            return r.forward(&["attach", &there]);
        }
        return Err(Error::Invalid(format!(
            "error: artifact `{}` runs on controller host `{}`\n  = help: resume it there: `flow attach {}` forwards to it; `ssh` there and run `flow resume {}`\n",
            display_path(&dir),
            r.target.name,
            r.id,
            r.artifact
        )));
    }
    // A flow that runs it: `attach` follows it.
    if attach && let State::Running(pid) = state(&dir) {
        return super::detach::follow(&dir, pid);
    }
    let _lock = take(&dir)?;
    let sj = super::status::read_suite_json(&dir)?;
    let id = sj["artifact_id"]
        .as_str()
        .map(String::from)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let stored: Vec<String> = sj["expansion"]["runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let stored_count = sj["expansion"]["run_count"]
        .as_u64()
        .unwrap_or(stored.len() as u64);
    let sa = suite_args(&sj, &dir)?;
    // The hosts are made again before they are read (they may have been
    // destroyed since), and destroyed after the last run.
    let hooks = if attach {
        crate::suite::Hooks::default()
    } else {
        super::hooks::of_suite(&sa.suite)?
    };
    if let Err(e) = super::hooks::provision(&hooks) {
        super::hooks::deprovision(&hooks, args.keep_hosts);
        return Err(e);
    }
    let r = (|| -> Result<i32, Error> {
        let p = prepare(&sa)?;
        let planner = Planner::new(
            &p.suite,
            &p.expansion,
            &PlanOptions {
                artifact_dir: dir.clone(),
            },
        )
        .map_err(|d| invalid(&d, &p.suite.sources))?;
        super::plan::write_phases(&planner, &dir)?;
        let mut fresh = Vec::with_capacity(planner.len());
        plan_all(&p, &planner, |r| {
            fresh.push(r.clone());
            Ok(())
        })?;
        let moves = node_moves(&sj, &p.suite.inventory);
        let changes = compare(&dir, &stored, stored_count, &fresh, &moves);
        let (plans, changed): (Vec<RunPlan>, HashSet<String>) = if changes.is_empty() {
            let by_id: HashMap<String, RunPlan> =
                fresh.into_iter().map(|p| (p.id.clone(), p)).collect();
            let mut by_id = by_id;
            (
                stored.iter().filter_map(|i| by_id.remove(i)).collect(),
                HashSet::new(),
            )
        } else if args.replan && !attach {
            replan(&p, &dir, &id, &sj, &stored, fresh, &changes)?
        } else {
            return Err(Error::Invalid(changes.render(&id)));
        };

        let inventory = &p.suite.inventory;
        let remote = |h: &str| inventory.host(h).is_some_and(|x| !x.is_local());
        let only = super::run::only(&args.only)?;
        super::run::unknown_keys(&only, crate::results::param_names(&plans))?;
        // How each run stands before this resume, as its journal says.
        let journal_status = |run_dir: &Path| match crate::artifact::replay::Replay::ending(run_dir)
        {
            None => "pending",
            Some(None) => "running",
            Some(Some(s)) => s.as_str(),
        };
        let selected: Vec<bool> = plans
            .iter()
            .map(|plan| only.matches(plan, Some(journal_status(Path::new(&plan.dir)))))
            .collect();
        if !selected.contains(&true) {
            return Err(Error::Invalid(format!(
                "error: no run of artifact {id} matches `--only {}`\n  = help: `flow status {id}` shows how its runs went\n",
                args.only.join(" --only ")
            )));
        }
        let mut rows = Vec::with_capacity(plans.len());
        let mut todo = Vec::new();
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        let mut notes = Vec::new();
        for (row, plan) in plans.into_iter().enumerate() {
            let run_dir = PathBuf::from(&plan.dir);
            let mut r = RunRow::new(&plan);
            let decision = if changed.contains(&plan.id) {
                match crate::artifact::replay::Replay::read(&run_dir) {
                    Some(replay) => Decision::Again {
                        why: "its plan changed (--replan)".into(),
                        tags: replay.tags,
                    },
                    None => Decision::Start,
                }
            } else if selected[row] && !only.is_empty() {
                // Picked by `--only`: to be run again if it failed.
                decide(&plan, &run_dir, true, &remote)
            } else {
                decide(&plan, &run_dir, args.rerun_failed, &remote)
            };
            // What a flow in another allocation left running is on nodes this
            // one does not have: it runs again here.
            let decision = match decision {
                Decision::Adopt(replay) if !moves.is_empty() => Decision::Again {
                    why: "it was running in another allocation".into(),
                    tags: replay.tags,
                },
                d => d,
            };
            // What `--only` leaves out stays as it is; only what a dead flow
            // left running is still taken over, or it would be lost.
            if !selected[row]
                && !changed.contains(&plan.id)
                && !matches!(decision, Decision::Keep(..) | Decision::Adopt(_))
            {
                const LEFT: &str = "left as they are (--only)";
                match counts.iter_mut().find(|(l, _)| *l == LEFT) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((LEFT, 1)),
                }
                let ending = crate::artifact::replay::Replay::ending(&run_dir).flatten();
                r.status = ending.map_or("pending", RunStatus::as_str).to_string();
                if let Some(res) = std::fs::read(run_dir.join("run_result.json"))
                    .ok()
                    .and_then(|b| {
                        serde_json::from_slice::<crate::artifact::run_result::RunResult>(&b).ok()
                    })
                {
                    r.duration_ms = res.duration_ms;
                }
                rows.push(r);
                continue;
            }
            match counts.iter_mut().find(|(l, _)| *l == decision.label()) {
                Some((_, n)) => *n += 1,
                None => counts.push((decision.label(), 1)),
            }
            let resume = match decision {
                Decision::Keep(status, duration_ms) => {
                    r.status = status.as_str().to_string();
                    r.duration_ms = duration_ms;
                    rows.push(r);
                    continue;
                }
                _ if attach && !matches!(decision, Decision::Adopt(_)) => {
                    // `flow attach` starts nothing: the rest stays as it is.
                    let ending = crate::artifact::replay::Replay::ending(&run_dir).flatten();
                    r.status = ending.map_or("pending", RunStatus::as_str).to_string();
                    rows.push(r);
                    continue;
                }
                Decision::Start => Resume::Fresh,
                Decision::Adopt(replay) => {
                    notes.push(format!("  taken over  {}", plan.id));
                    Resume::Adopt(replay)
                }
                Decision::Again { why, tags } => {
                    let n = keep_attempt(&run_dir)
                        .map_err(|e| Error::io("keep the earlier attempt of", &run_dir, e))?;
                    notes.push(format!(
                        "  run again   {}: {why}; attempt {n} kept in {}",
                        plan.id,
                        display_path(&run_dir.join("attempts").join(n.to_string()))
                    ));
                    Resume::Again { attempt: n, tags }
                }
            };
            // A run that starts on other nodes than it was planned on says so
            // in its plan.json (one that ended keeps the plan it ran).
            if !moves.is_empty() {
                let path = run_dir.join("plan.json");
                let json = serde_json::to_vec_pretty(&plan).map_err(|e| Error::Output(e.into()))?;
                atomic_write(&path, &json).map_err(|e| Error::io("write", &path, e))?;
            }
            rows.push(r);
            todo.push(Todo {
                plan: Arc::new(plan),
                resume,
                row,
            });
        }
        // The nodes of this allocation are the artifact's hosts now (`flow
        // fetch`, `flow reap` and the next resume reach them).
        if !moves.is_empty() && !todo.is_empty() && !attach {
            // What flow added to it after planning is kept as it was.
            let mut extra = serde_json::Map::new();
            for k in ["created", "selection", "replans", "merged"] {
                if let Some(v) = sj.get(k) {
                    extra.insert(k.into(), v.clone());
                }
            }
            let mut history = sj["allocations"].as_array().cloned().unwrap_or_default();
            history.push(serde_json::json!({
                "at": crate::artifact::utc_timestamp(std::time::SystemTime::now()),
                "job": std::env::var("SLURM_JOB_ID").ok(),
                "moved": moves.iter().map(|(a, b)| serde_json::json!({"from": a, "to": b})).collect::<Vec<_>>(),
            }));
            extra.insert("allocations".into(), Value::from(history));
            super::plan::write_suite_json(&p, &dir, &id, &stored, Some(&extra))?;
        }
        {
            let mut out = std::io::stdout().lock();
            let parts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
            let _ = writeln!(
                out,
                "{} artifact {id}: {} run{}: {}",
                if attach {
                    "attaching to"
                } else if std::env::var_os(super::detach::DETACHED_VAR).is_some() {
                    super::detach::RUNNING_LINE
                } else {
                    "resuming"
                },
                rows.len(),
                if rows.len() == 1 { "" } else { "s" },
                parts.join(", ")
            );
            for n in &notes {
                let _ = writeln!(out, "{n}");
            }
        }
        if todo.is_empty() {
            let what = if attach {
                format!(
                    "nothing of artifact {id} is left running to take over; `flow resume {id}` runs what is left"
                )
            } else {
                format!(
                    "nothing to do: every run of artifact {id} has ended (`--rerun-failed` runs the failed ones again)"
                )
            };
            writeln!(std::io::stdout().lock(), "{what}").map_err(Error::Output)?;
            return Ok(exit::OK);
        }
        let opts = Options {
            jobs: args.jobs.max(1),
            max_failures: args.max_failures,
            verbose: args.verbose,
            plain: false,
        };
        let inv = Invocation {
            dir: &dir,
            id: &id,
            inventory,
            share_hosts: args.share_hosts,
            resuming: true,
        };
        inv.execute(todo, rows, &opts)
    })();
    super::hooks::deprovision(&hooks, args.keep_hosts);
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn nodes_move_all_at_once_and_longest_first() {
        let moves = vec![
            ("node1".to_string(), "node10".to_string()),
            ("node10".to_string(), "node2".to_string()),
            ("10.0.0.1".to_string(), "10.0.0.9".to_string()),
        ];
        assert_eq!(
            super::substitute(
                "node1 node10 10.0.0.1:9 10.0.0.10 xnode1 node1.log é",
                &moves
            ),
            "node10 node2 10.0.0.9:9 10.0.0.10 xnode1 node10.log é"
        );
        assert_eq!(super::substitute("same", &[]), "same");
    }
}
