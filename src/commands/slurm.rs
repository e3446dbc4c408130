//! `flow run --slurm`: a suite submitted to Slurm, one batch job per shard,
//! and what `flow status`, `flow stop`, `flow run --resume` and `flow
//! merge` do with such a submission.
//!
//! A submission is a folder in `--artifacts` with `slurm.json` (the jobs,
//! one per shard, and the jobs each replaced), `slurm/` (each shard's batch
//! script and its jobs' output) and `shards/` (each shard's artifact). The
//! artifacts are planned here, before anything is submitted, for an
//! allocation of the size the jobs ask for; a job runs `flow run --resume`
//! on its shard's artifact inside its allocation, where the nodes Slurm gave
//! take the planned places (runs are planned on places, not on node names).
//! So a job that never started, was cancelled or ran out of time is
//! submitted again onto the same artifact, and its shard goes on where it
//! stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::plan::{Selection, check_plans, prepare_for, write_artifact};
use super::{Error, exit};
use crate::artifact::ArtifactDir;
use crate::artifact::atomic_write;
use crate::cli::RunArgs;
use crate::diag::display_path;
use crate::exec::ssh::sh_quote;
use crate::plan::Shard;
use crate::slurm::batch::{
    DEFAULT_TEMPLATE, Phase, Script, parse_sacct, parse_sbatch, parse_scontrol, parse_squeue,
};

/// The file that makes a folder a submission.
pub const SUBMISSION_FILE: &str = "slurm.json";

#[derive(Debug, Serialize, Deserialize)]
struct Submission {
    schema_version: u32,
    id: String,
    created: String,
    suite: String,
    /// Where flow was run; the jobs work there.
    cwd: String,
    /// The flow binary the jobs run.
    flow: String,
    nodes: usize,
    shards: u32,
    /// sbatch's options before the script, as given.
    sbatch: Vec<String>,
    /// `flow run` options each job passes on (see `run::execution_options`).
    run_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    jobs: Vec<Job>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    shard: String,
    runs: usize,
    /// The shard's artifact, relative to the submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    submitted: Option<String>,
    /// The job's last state as Slurm gave it, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    /// Jobs of this shard that came before, and how they ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    earlier: Vec<Earlier>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Earlier {
    job_id: String,
    state: String,
}

fn now() -> String {
    crate::artifact::utc_timestamp(std::time::SystemTime::now())
}

fn write(dir: &Path, s: &Submission) -> Result<(), Error> {
    let path = dir.join(SUBMISSION_FILE);
    let bytes = serde_json::to_vec_pretty(s).map_err(|e| Error::Output(e.into()))?;
    atomic_write(&path, &bytes).map_err(|e| Error::io("write", &path, e))
}

fn read(dir: &Path) -> Result<Submission, Error> {
    let path = dir.join(SUBMISSION_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::io("read", &path, std::io::Error::other(e)))
}

/// The submission folder `id` names in `root` (`latest` without one), if it
/// is one.
pub fn find(root: &Path, id: Option<&str>) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match id {
        None => vec![root.join("latest")],
        Some(id) => vec![root.join(id), PathBuf::from(id)],
    };
    candidates
        .into_iter()
        .find(|c| c.join(SUBMISSION_FILE).is_file())
        .map(|c| c.canonicalize().unwrap_or(c))
}

/// `flow run --slurm`.
pub fn submit(args: &RunArgs) -> Result<i32, Error> {
    let only = super::run::only(&args.only)?;
    if only.needs_status() {
        return Err(Error::Invalid(
            "error: `--only status=…` picks runs by how they went in an artifact, and a new submission has none\n".into(),
        ));
    }
    let template = match &args.sbatch_template {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io("read the sbatch template", path, e))?;
            // Checked before anything is planned or submitted.
            example_script(&text).map_err(|e| {
                Error::Invalid(format!(
                    "error: sbatch template `{}`: {e}\n",
                    display_path(path)
                ))
            })?;
            Some(text)
        }
        None => None,
    };
    let p = prepare_for(&args.suite, Some(args.nodes.map(|n| n as usize)))?;
    if !p.suite.inventory.hosts.iter().any(|h| h.slot.is_some()) {
        return Err(Error::Invalid(
            "error: `--slurm` runs the suite inside Slurm allocations, and its hosts do not come from one\n  = help: `--hosts slurm:coordinator=1,worker=rest`, or an inventory with `provider: slurm`, puts the roles on the allocation's nodes\n".into(),
        ));
    }
    super::run::check_keys(&only, &p)?;
    let nodes = p.suite.inventory.hosts.len();
    let k = args.shards;
    let assignment = crate::plan::shard::Assignment::of_expansion(&p.expansion, k);
    let cwd = std::env::current_dir().map_err(|e| Error::io("read", Path::new("."), e))?;
    let flow = std::env::current_exe()
        .map_err(|e| Error::io("find", Path::new("flow"), e))?
        .display()
        .to_string();
    // Planned for each shard before anything is created: a suite that does
    // not plan, or a selection that is empty, submits nothing.
    let mut sizes = Vec::with_capacity(k as usize);
    for i in 1..=k {
        let s = Shard { index: i, count: k };
        sizes.push(check_plans(&p, |r| {
            only.matches(r, None) && assignment.holds(s, r)
        })?);
    }
    if sizes.iter().all(|&n| n == 0) {
        return Err(Error::Invalid(super::run::no_match(&args.only)));
    }
    let sub = ArtifactDir::create(&args.artifacts, &p.suite.name)
        .map_err(|e| Error::io("create the submission folder in", &args.artifacts, e))?;
    let _ = std::fs::remove_dir(sub.path.join("runs"));
    let slurm_dir = sub.path.join("slurm");
    std::fs::create_dir_all(&slurm_dir).map_err(|e| Error::io("create", &slurm_dir, e))?;
    let mut sbatch = Vec::new();
    for (flag, v) in [
        ("--time", &args.time),
        ("--partition", &args.partition),
        ("--account", &args.account),
    ] {
        if let Some(v) = v {
            sbatch.push(format!("{flag}={v}"));
        }
    }
    sbatch.extend(args.sbatch_args.iter().cloned());
    let mut record = Submission {
        schema_version: 1,
        id: sub.id.clone(),
        created: now(),
        suite: p.suite.name.clone(),
        cwd: cwd.display().to_string(),
        flow,
        nodes,
        shards: k,
        sbatch,
        run_options: super::run::execution_options(args),
        template: args
            .sbatch_template
            .as_ref()
            .map(|t| crate::paths::absolute(t).display().to_string()),
        jobs: Vec::new(),
    };
    let shards_root = sub.path.join("shards");
    for (i, &size) in (1..=k).zip(&sizes) {
        let s = Shard { index: i, count: k };
        let mut job = Job {
            shard: s.to_string(),
            runs: size,
            artifact: None,
            script: None,
            job_id: None,
            submitted: None,
            state: None,
            earlier: Vec::new(),
        };
        if size > 0 {
            let selection = Selection {
                shard: (k > 1).then_some(s),
                only: args.only.clone(),
            };
            let keep = |r: &crate::plan::RunPlan| only.matches(r, None) && assignment.holds(s, r);
            let (artifact, _) = write_artifact(&p, &shards_root, &selection, keep, |_| Ok(()))?;
            job.artifact = Some(format!("shards/{}", artifact.id));
        }
        record.jobs.push(job);
    }
    // Each job is recorded as soon as sbatch has taken it.
    write(&sub.path, &record)?;
    let mut refused = None;
    for n in 0..record.jobs.len() {
        if record.jobs[n].artifact.is_none() {
            continue;
        }
        match submit_job(&sub.path, &mut record, n, template.as_deref()) {
            Ok(()) => write(&sub.path, &record)?,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    write(&sub.path, &record)?;
    let mut out = std::io::stdout().lock();
    let runs: usize = sizes.iter().sum();
    let _ = writeln!(
        out,
        "suite `{}`: {runs} run{} in {} shard{} of {nodes} node{} each",
        p.suite.name,
        if runs == 1 { "" } else { "s" },
        k,
        if k == 1 { "" } else { "s" },
        if nodes == 1 { "" } else { "s" },
    );
    for j in &record.jobs {
        let _ = writeln!(out, "  {}", job_line(j, None));
    }
    let _ = writeln!(out, "submission: {}", display_path(&sub.path));
    if let Some(e) = refused {
        drop(out);
        return Err(Error::Invalid(format!(
            "{e}  = help: the jobs listed with an id were submitted: `flow stop {id}` cancels them, `flow run --resume {id}` submits the rest\n",
            id = sub.id
        )));
    }
    let _ = writeln!(
        out,
        "`flow status {id}` shows how the jobs go; once they have ended, `flow merge {id}` puts the shards into one artifact",
        id = sub.id
    );
    Ok(exit::OK)
}

/// The script of an example job, to check a template before submitting.
fn example_script(template: &str) -> Result<String, String> {
    Script {
        job_name: "flow",
        nodes: 1,
        output: "out",
        cwd: ".",
        command: "flow",
        shard: "1/1",
        submission: "x",
    }
    .render(template)
}

/// Writes shard `n`'s batch script and submits it; records the job.
fn submit_job(
    dir: &Path,
    record: &mut Submission,
    n: usize,
    template: Option<&str>,
) -> Result<(), String> {
    let job = &record.jobs[n];
    let index = n + 1;
    let artifact = dir.join(job.artifact.as_deref().unwrap_or_default());
    let mut command = format!(
        "{} run --resume {}",
        sh_quote(&record.flow),
        sh_quote(&artifact.display().to_string())
    );
    for o in &record.run_options {
        command.push(' ');
        command.push_str(&sh_quote(o));
    }
    let job_name = format!("flow-{}-{index}of{}", record.suite, record.shards);
    let output = dir.join("slurm").join(format!("shard-{index}-%j.out"));
    let script = Script {
        job_name: &job_name,
        nodes: record.nodes,
        output: &output.display().to_string(),
        cwd: &record.cwd,
        command: &command,
        shard: &job.shard,
        submission: &record.id,
    }
    .render(template.unwrap_or(DEFAULT_TEMPLATE))?;
    let path = dir.join("slurm").join(format!("shard-{index}.sbatch"));
    atomic_write(&path, script.as_bytes())
        .map_err(|e| format!("error: cannot write `{}`: {e}\n", display_path(&path)))?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(&record.sbatch)
        .arg(&path)
        .current_dir(&record.cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("error: cannot run sbatch: {e}\n  = help: `--slurm` needs Slurm's client commands (sbatch, squeue, scancel) on PATH\n")
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = match parse_sbatch(&stdout) {
        Some(id) if out.status.success() => id,
        _ => {
            return Err(format!(
                "error: sbatch did not take shard {}: {}\n",
                job.shard,
                one_line(&String::from_utf8_lossy(&out.stderr), &stdout)
            ));
        }
    };
    let job = &mut record.jobs[n];
    if let Some(old) = job.job_id.take() {
        job.earlier.push(Earlier {
            job_id: old,
            state: job.state.take().unwrap_or_else(|| "ENDED".into()),
        });
    }
    job.script = Some(format!("slurm/shard-{index}.sbatch"));
    job.job_id = Some(id);
    job.submitted = Some(now());
    job.state = None;
    Ok(())
}

/// What a Slurm command said, as one line: its stderr, else its stdout.
fn one_line(stderr: &str, stdout: &str) -> String {
    crate::exec::ssh::one_line(stderr)
        .or_else(|| crate::exec::ssh::one_line(stdout))
        .unwrap_or_else(|| "it said nothing".into())
}

/// Slurm's state of each job: squeue for the jobs it still holds, then
/// `scontrol show job` and `sacct` for the ones that ended. `None`: Slurm
/// no longer knows the job.
fn states(ids: &[&str]) -> Vec<Option<String>> {
    if ids.is_empty() {
        return Vec::new();
    }
    let queued = Command::new("squeue")
        .args(["-h", "-o", "%i %T", "-j", &ids.join(",")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| parse_squeue(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    ids.iter()
        .map(|id| {
            if let Some(s) = queued.get(*id) {
                return Some(s.clone());
            }
            let ask = |program: &str, args: &[&str]| {
                Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            };
            ask("scontrol", &["-o", "show", "job", id])
                .and_then(|t| parse_scontrol(&t))
                .or_else(|| {
                    ask("sacct", &["-n", "-X", "-P", "-o", "JobID,State", "-j", id])
                        .and_then(|t| parse_sacct(&t, id))
                })
        })
        .collect()
}

/// Each job's state now; ended ones are recorded in `record`, so that they
/// are known once Slurm has forgotten them.
fn refresh(record: &mut Submission) -> Vec<Option<String>> {
    let ids: Vec<&str> = record
        .jobs
        .iter()
        .filter_map(|j| j.job_id.as_deref())
        .collect();
    let mut got = states(&ids).into_iter();
    let mut out = Vec::with_capacity(record.jobs.len());
    for j in &mut record.jobs {
        let now = match &j.job_id {
            Some(_) => got.next().flatten(),
            None => None,
        };
        match &now {
            Some(s) if !Phase::of(s).is_active() => j.state = Some(s.clone()),
            _ => {}
        }
        out.push(now.or_else(|| j.state.clone()));
    }
    out
}

/// How the runs of a shard's artifact stand: `passed 3, pending 1`, in a
/// fixed order.
fn run_counts(artifact: &Path) -> Vec<(String, usize)> {
    let ids: Vec<String> = std::fs::read(artifact.join("suite.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.pointer("/expansion/runs")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for id in ids {
        let s = match crate::artifact::replay::Replay::ending(&artifact.join("runs").join(&id)) {
            None => "pending".to_string(),
            Some(None) => "running".to_string(),
            Some(Some(s)) => s.as_str().to_string(),
        };
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    let order = ["passed", "failed", "running", "interrupted", "pending"];
    counts.sort_by_key(|(k, _)| order.iter().position(|o| o == k).unwrap_or(order.len()));
    counts
}

fn job_line(j: &Job, state: Option<&str>) -> String {
    let job = match &j.job_id {
        Some(id) => format!("job {id}"),
        None if j.runs == 0 => "no job (no runs)".into(),
        None => "not submitted".into(),
    };
    let mut line = format!("shard {:<7} {:<12}", j.shard, job);
    if let Some(s) = state {
        line.push_str(&format!(" {s:<10}"));
    }
    line.push_str(&format!(
        " {} run{}",
        j.runs,
        if j.runs == 1 { "" } else { "s" }
    ));
    if let Some(a) = &j.artifact {
        line.push_str(&format!("  {a}"));
    }
    line
}

/// `flow status` of a submission.
pub fn status(dir: &Path, json: bool) -> Result<i32, Error> {
    let mut record = read(dir)?;
    let now = refresh(&mut record);
    write(dir, &record)?;
    let mut out = std::io::stdout().lock();
    if json {
        let jobs: Vec<serde_json::Value> = record
            .jobs
            .iter()
            .zip(&now)
            .map(|(j, s)| {
                let counts: serde_json::Map<String, serde_json::Value> = j
                    .artifact
                    .as_ref()
                    .map(|a| run_counts(&dir.join(a)))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, n)| (k, serde_json::Value::from(n)))
                    .collect();
                serde_json::json!({
                    "shard": j.shard,
                    "job_id": j.job_id,
                    "state": s,
                    "runs": j.runs,
                    "artifact": j.artifact,
                    "counts": counts,
                    "earlier": j.earlier,
                })
            })
            .collect();
        let v = serde_json::json!({"submission": record.id, "suite": record.suite, "nodes": record.nodes, "jobs": jobs});
        writeln!(out, "{v}").map_err(Error::Output)?;
        return Ok(exit::OK);
    }
    let _ = writeln!(
        out,
        "submission {}: suite `{}`, {} shard{} of {} node{} each",
        record.id,
        record.suite,
        record.shards,
        if record.shards == 1 { "" } else { "s" },
        record.nodes,
        if record.nodes == 1 { "" } else { "s" },
    );
    let mut rerun = false;
    for (j, s) in record.jobs.iter().zip(&now) {
        let state = s
            .as_deref()
            .unwrap_or(if j.job_id.is_some() { "UNKNOWN" } else { "-" });
        let mut counts = j
            .artifact
            .as_ref()
            .map(|a| run_counts(&dir.join(a)))
            .unwrap_or_default();
        // A run its journal leaves running in a job that has ended was cut
        // short with it.
        if !s.as_deref().is_some_and(|s| Phase::of(s).is_active()) {
            for (k, _) in &mut counts {
                if k == "running" {
                    *k = "interrupted".into();
                }
            }
        }
        let runs: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let done = counts.iter().all(|(k, _)| k == "passed");
        rerun |= j.runs > 0 && !done && !s.as_deref().is_some_and(|s| Phase::of(s).is_active());
        let _ = writeln!(
            out,
            "  shard {:<7} {:<10} {:<12} {}",
            j.shard,
            j.job_id
                .as_deref()
                .map_or("-".to_string(), |i| format!("job {i}")),
            state,
            if runs.is_empty() {
                "no runs".into()
            } else {
                runs.join(", ")
            }
        );
    }
    if rerun {
        let _ = writeln!(
            out,
            "jobs ended with runs left: `flow run --resume {}` submits them again",
            record.id
        );
    }
    Ok(exit::OK)
}

/// `flow stop` of a submission: every job Slurm still holds is cancelled.
pub fn stop(dir: &Path) -> Result<i32, Error> {
    let mut record = read(dir)?;
    let now = refresh(&mut record);
    let active: Vec<String> = record
        .jobs
        .iter()
        .zip(&now)
        .filter(|(_, s)| s.as_deref().is_some_and(|s| Phase::of(s).is_active()))
        .filter_map(|(j, _)| j.job_id.clone())
        .collect();
    write(dir, &record)?;
    let mut out = std::io::stdout().lock();
    if active.is_empty() {
        let _ = writeln!(
            out,
            "nothing to stop: no job of submission {} is pending or running",
            record.id
        );
        return Ok(exit::OK);
    }
    let o = Command::new("scancel")
        .args(&active)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Invalid(format!("error: cannot run scancel: {e}\n")))?;
    if !o.status.success() {
        return Err(Error::Invalid(format!(
            "error: scancel {}: {}\n",
            active.join(" "),
            one_line(&String::from_utf8_lossy(&o.stderr), "")
        )));
    }
    let _ = writeln!(
        out,
        "cancelled job{} {}; runs they had not finished are run again by `flow run --resume {}`",
        if active.len() == 1 { "" } else { "s" },
        active.join(", "),
        record.id
    );
    Ok(exit::OK)
}

/// `flow run --resume` of a submission: jobs Slurm still holds are left to
/// run (never submitted twice); shards whose runs did not all pass are
/// submitted again onto their artifacts.
pub fn resume(dir: &Path, rerun_failed: bool) -> Result<i32, Error> {
    let mut record = read(dir)?;
    let now = refresh(&mut record);
    let template = match &record.template {
        Some(t) => Some(
            std::fs::read_to_string(t)
                .map_err(|e| Error::io("read the sbatch template", Path::new(t), e))?,
        ),
        None => None,
    };
    let mut lines = Vec::new();
    let mut refused = None;
    for (n, state) in now.iter().enumerate() {
        let j = record.jobs[n].clone();
        let Some(a) = &j.artifact else {
            lines.push(job_line(&j, Some("no runs")));
            continue;
        };
        if let Some(s) = state.as_deref().filter(|s| Phase::of(s).is_active()) {
            lines.push(format!(
                "{}  (still {s}: left to run)",
                job_line(&j, Some(s))
            ));
            continue;
        }
        let counts = run_counts(&dir.join(a));
        let left = counts
            .iter()
            .any(|(k, _)| k != "passed" && (rerun_failed || k != "failed"));
        if !left {
            lines.push(format!("{}  (done)", job_line(&j, state.as_deref())));
            continue;
        }
        match submit_job(dir, &mut record, n, template.as_deref()) {
            Ok(()) => {
                write(dir, &record)?;
                lines.push(format!(
                    "{}  (submitted again)",
                    job_line(&record.jobs[n], None)
                ));
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    write(dir, &record)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "submission {}:", record.id);
    for l in lines {
        let _ = writeln!(out, "  {l}");
    }
    if let Some(e) = refused {
        return Err(Error::Invalid(e));
    }
    Ok(exit::OK)
}

/// A submission's line in `flow list` (from what `slurm.json` recorded;
/// Slurm is not asked); `None` for an artifact.
pub fn list_line(dir: &Path) -> Option<String> {
    let record = read(dir).ok()?;
    let runs: usize = record.jobs.iter().map(|j| j.runs).sum();
    let jobs = record.jobs.iter().filter(|j| j.job_id.is_some()).count();
    Some(format!(
        "{:<10}  {runs} runs in {jobs} Slurm job{}  [submission: `flow status {}`]",
        record.suite,
        if jobs == 1 { "" } else { "s" },
        record.id
    ))
}

/// The shard artifacts of a submission, for `flow merge`.
pub fn shard_artifacts(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let record = read(dir)?;
    Ok(record
        .jobs
        .iter()
        .filter_map(|j| j.artifact.as_ref().map(|a| dir.join(a)))
        .collect())
}
