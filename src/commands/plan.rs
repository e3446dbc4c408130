//! `flow validate` and `flow plan`.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::artifact::{ArtifactDir, atomic_write};
use crate::cli::{PlanArgs, PlanFormat, SuiteArgs};
use crate::diag::{Diagnostic, Diagnostics, Sources};
use crate::expand::{Expansion, expand};
use crate::plan::output::{Format, PlanWriter};
use crate::plan::{PlanOptions, Planner, RunPlan, SCHEMA_VERSION};
use crate::suite::{LoadOptions, Suite, load};

use super::{Error, exit};

/// At most this many distinct plan-time errors are reported.
const MAX_PLAN_ERRORS: usize = 50;

/// A suite loaded and expanded, ready to plan.
pub struct Prepared {
    pub suite: Suite,
    pub expansion: Expansion,
}

/// Loads and expands a suite; configuration errors come back rendered.
pub fn prepare(args: &SuiteArgs) -> Result<Prepared, Error> {
    prepare_for(args, None)
}

/// [`prepare`] for a Slurm allocation not granted yet (see
/// `Inventory::from_node`).
pub fn prepare_for(
    args: &SuiteArgs,
    planned_nodes: Option<Option<usize>>,
) -> Result<Prepared, Error> {
    if args.suite.is_empty() {
        return Err(Error::Invalid(
            "error: which suite? `--suite NAME|PATH` is required\n  = help: `flow run --resume ID` continues an artifact without it\n".into(),
        ));
    }
    let opts = LoadOptions {
        hosts: args.hosts.clone(),
        set: args.set.clone(),
        max_runs: Some(args.max_runs),
        planned_nodes,
        annotate: args.annotate.clone(),
        pinned: args.pinned.clone(),
    };
    let suite = load(&args.suite, &opts).map_err(|f| Error::Invalid(f.render()))?;
    let expansion = expand(&suite).map_err(|d| Error::Invalid(d.render(&suite.sources)))?;
    for note in &expansion.notes {
        let _ = writeln!(std::io::stderr().lock(), "warning: {note}");
    }
    Ok(Prepared { suite, expansion })
}

pub(super) fn invalid(diags: &Diagnostics, sources: &Sources) -> Error {
    Error::Invalid(diags.render(sources))
}

/// Plans every run, calling `each` with it. Errors are collected (each
/// distinct one once), and duplicate run ids are reported.
pub(super) fn plan_all(
    p: &Prepared,
    planner: &Planner<'_>,
    each: impl FnMut(&RunPlan) -> Result<(), Error>,
) -> Result<(), Error> {
    plan_where(p, planner, |_| true, each)
}

/// [`plan_all`] of the runs `pick` selects by index (the first run of each
/// group is planned all the same, for its errors).
pub(super) fn plan_where(
    p: &Prepared,
    planner: &Planner<'_>,
    pick: impl Fn(usize) -> bool,
    mut each: impl FnMut(&RunPlan) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut diags = Diagnostics::new();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(planner.len());
    // Most plan-time errors are the same for every run of a group: try the
    // first run of each group before streaming anything.
    let mut first_of_group = vec![usize::MAX; p.expansion.groups.len()];
    for (i, r) in p.expansion.runs.iter().enumerate() {
        if first_of_group[r.group] == usize::MAX {
            first_of_group[r.group] = i;
        }
    }
    for &i in first_of_group.iter().filter(|&&i| i != usize::MAX) {
        if let Err(d) = planner.plan(i) {
            diags.push(d);
        }
    }
    if !diags.is_empty() {
        diags.finish();
        return Err(invalid(&diags, &p.suite.sources));
    }
    for i in (0..planner.len()).filter(|&i| pick(i)) {
        match planner.plan(i) {
            Ok(run) => {
                if let Some(prev) = seen.insert(run.id.clone(), i) {
                    let a = &p.expansion.runs[prev];
                    let entry = &p.suite.entries[p.expansion.groups[a.group].entry];
                    diags.push(
                        Diagnostic::at(entry.span, format!("two runs have the same id `{}`", run.id))
                            .with_help("the suite lists the same workload point twice; remove one of the entries or make them differ"),
                    );
                    continue;
                }
                if diags.is_empty() {
                    each(&run)?;
                }
            }
            Err(d) => {
                diags.push(d);
                if diags.len() >= MAX_PLAN_ERRORS {
                    break;
                }
            }
        }
    }
    diags.finish();
    if diags.is_empty() {
        Ok(())
    } else {
        Err(invalid(&diags, &p.suite.sources))
    }
}

/// One line per workload entry: `streaming: 2 modes × 5 variants × 5 repetitions = 50 runs`.
pub fn summary(p: &Prepared) -> String {
    let n = p.expansion.runs.len();
    let mut lines = vec![format!(
        "suite `{}`: {n} run{} on {} host{}",
        p.suite.name,
        if n == 1 { "" } else { "s" },
        p.suite.inventory.hosts.len(),
        if p.suite.inventory.hosts.len() == 1 {
            ""
        } else {
            "s"
        },
    )];
    for e in &p.suite.entries {
        let runs: Vec<_> = p
            .expansion
            .runs
            .iter()
            .filter(|r| p.expansion.groups[r.group].entry == e.index)
            .collect();
        let mut variants: Vec<String> = runs.iter().map(|r| r.variant_label()).collect();
        variants.sort();
        variants.dedup();
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        lines.push(format!(
            "  {}: {} × {} × {} = {}",
            e.workload_name,
            plural(e.modes.len(), "mode"),
            plural(variants.len(), "variant"),
            plural(e.repetitions as usize, "repetition"),
            plural(runs.len(), "run"),
        ));
    }
    lines.join("\n")
}

pub fn validate(args: &SuiteArgs) -> Result<i32, Error> {
    let p = prepare(args)?;
    check_plans(&p, |_| true)?;
    writeln!(std::io::stdout().lock(), "{}\nvalid", summary(&p)).map_err(Error::Output)?;
    Ok(exit::OK)
}

/// `flow plan --shards N`: how many runs each shard gets; with
/// `matrix`, as a GitHub Actions matrix: one entry per shard with a
/// readable name (`{"include": [{"shard": "1/4", "name": "…", "runs": 24}]}`).
fn shard_sizes(p: &Prepared, n: u32, matrix: bool) -> Result<i32, Error> {
    if n == 0 {
        return Err(Error::Invalid(
            "error: `--shards 0`: the shard count must be at least 1\n".into(),
        ));
    }
    let a = crate::plan::shard::Assignment::of_expansion(&p.expansion, n);
    // Runs, not points: every mode of a point is a run of its shard.
    let sizes = a.sizes(p.expansion.runs.iter().map(|r| {
        (
            p.expansion.groups[r.group].workload.name.as_str(),
            r.variant_label(),
            r.repetition,
        )
    }));
    let mut out = std::io::stdout().lock();
    if matrix {
        let include: Vec<serde_json::Value> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "shard": format!("{}/{n}", i + 1),
                    "name": format!("{} {}/{n} ({s} run{})", p.suite.name, i + 1, if *s == 1 { "" } else { "s" }),
                    "runs": s,
                })
            })
            .collect();
        let m = serde_json::json!({ "include": include });
        writeln!(out, "{m}").map_err(Error::Output)?;
        return Ok(exit::OK);
    }
    writeln!(out, "{}", summary(p)).map_err(Error::Output)?;
    for (i, s) in sizes.iter().enumerate() {
        writeln!(
            out,
            "shard {}/{n}: {s} run{}",
            i + 1,
            if *s == 1 { "" } else { "s" }
        )
        .map_err(Error::Output)?;
    }
    Ok(exit::OK)
}

/// Plans every run without writing anything, as `flow validate` does: an
/// error when any run does not plan, or when `keep` selects none.
pub(super) fn check_plans(p: &Prepared, keep: impl Fn(&RunPlan) -> bool) -> Result<usize, Error> {
    let opts = PlanOptions {
        artifact_dir: Path::new("artifacts").join("validate"),
    };
    let planner =
        Planner::new(&p.suite, &p.expansion, &opts).map_err(|d| invalid(&d, &p.suite.sources))?;
    let mut kept = 0;
    plan_all(p, &planner, |r| {
        kept += usize::from(keep(r));
        Ok(())
    })?;
    Ok(kept)
}

/// How the runs of an artifact were picked from its suite's plan
/// (`--shard`, `--only`); recorded in `suite.json` as `selection` when not
/// every run was, with the ids of the whole plan, so that `flow merge`
/// can tell which runs no shard holds.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub shard: Option<crate::plan::Shard>,
    pub only: Vec<String>,
}

impl Selection {
    pub fn to_json(&self, all_runs: &[String]) -> serde_json::Value {
        serde_json::json!({
            "shard": self.shard.map(|s| serde_json::json!({
                "index": s.index,
                "count": s.count,
                "text": s.to_string(),
            })),
            "only": self.only,
            "all_runs": all_runs,
        })
    }
}

/// Creates an artifact folder and writes `suite.json` and the `plan.json` of
/// every run `keep` selects; returns the folder and those plans, in order.
/// `check` sees the selected plans first: when it refuses them (or the suite
/// does not plan), no folder is made.
pub fn write_artifact(
    p: &Prepared,
    root: &Path,
    selection: &Selection,
    keep: impl Fn(&RunPlan) -> bool,
    check: impl FnOnce(&[RunPlan]) -> Result<(), Error>,
) -> Result<(ArtifactDir, Vec<RunPlan>), Error> {
    let staging = PlanOptions {
        artifact_dir: root.join("staging"),
    };
    let planner = Planner::new(&p.suite, &p.expansion, &staging)
        .map_err(|d| invalid(&d, &p.suite.sources))?;
    let mut staged = Vec::new();
    plan_all(p, &planner, |run| {
        if keep(run) {
            staged.push(run.clone());
        }
        Ok(())
    })?;
    check(&staged)?;
    drop(staged);
    let artifact = ArtifactDir::create(root, &p.suite.name)
        .map_err(|e| Error::io("create the artifact folder in", root, e))?;
    let opts = PlanOptions {
        artifact_dir: artifact.path.clone(),
    };
    let planner =
        Planner::new(&p.suite, &p.expansion, &opts).map_err(|d| invalid(&d, &p.suite.sources))?;
    let mut plans = Vec::with_capacity(planner.len());
    let mut all = Vec::with_capacity(planner.len());
    plan_all(p, &planner, |run| {
        all.push(run.id.clone());
        if keep(run) {
            plans.push(run.clone());
        }
        Ok(())
    })?;
    for run in &plans {
        let path = artifact.run_dir(&run.id).join("plan.json");
        let json = serde_json::to_vec_pretty(run).map_err(|e| Error::Output(e.into()))?;
        atomic_write(&path, &json).map_err(|e| Error::io("write", &path, e))?;
    }
    let ids: Vec<String> = plans.iter().map(|r| r.id.clone()).collect();
    let mut extra = serde_json::Map::new();
    if ids.len() < all.len() {
        extra.insert("selection".into(), selection.to_json(&all));
    }
    write_suite_json(p, &artifact.path, &artifact.id, &ids, Some(&extra))?;
    write_phases(&planner, &artifact.path)?;
    Ok((artifact, plans))
}

/// Writes the plans of the suite's `setup:` and `teardown:` instances into
/// `<dir>/setup/<id>/plan.json` and `<dir>/teardown/<id>/plan.json`, and
/// their ids, in order, into `<dir>/phases.json` (absent without any).
pub fn write_phases(planner: &Planner<'_>, dir: &Path) -> Result<(), Error> {
    let (setup, teardown) = (planner.setup_plans(), planner.teardown_plans());
    let list = dir.join(crate::exec::PHASES_FILE);
    if setup.is_empty() && teardown.is_empty() {
        let _ = std::fs::remove_file(&list);
        return Ok(());
    }
    for plan in setup.iter().chain(&teardown) {
        let path = Path::new(&plan.dir).join("plan.json");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let json = serde_json::to_vec_pretty(plan).map_err(|e| Error::Output(e.into()))?;
        atomic_write(&path, &json).map_err(|e| Error::io("write", &path, e))?;
    }
    let ids = |v: &[RunPlan]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    let json = serde_json::to_vec_pretty(&serde_json::json!({
        "setup": ids(&setup),
        "teardown": ids(&teardown),
    }))
    .map_err(|e| Error::Output(e.into()))?;
    atomic_write(&list, &json).map_err(|e| Error::io("write", &list, e))
}

/// Writes an artifact's `suite.json` for the runs `ids`; `extra` keys
/// (kept from an earlier version) are carried over.
pub fn write_suite_json(
    p: &Prepared,
    dir: &Path,
    id: &str,
    ids: &[String],
    extra: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), Error> {
    let mut suite_json = crate::artifact::suite_json(&p.suite, &p.expansion, ids, id);
    let steps = crate::results::suite_steps::render(&p.suite, dir, id)
        .map_err(|e| Error::Invalid(format!("error: {e}\n")))?;
    if !steps.is_empty() {
        suite_json["analyze"] =
            serde_json::to_value(&steps).map_err(|e| Error::Output(e.into()))?;
    }
    if let (Some(extra), Some(obj)) = (extra, suite_json.as_object_mut()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    crate::artifact::write_source_diffs(&p.suite, dir)
        .map_err(|(path, e)| Error::io("write", &path, e))?;
    let path = dir.join("suite.json");
    let bytes = serde_json::to_vec_pretty(&suite_json).map_err(|e| Error::Output(e.into()))?;
    atomic_write(&path, &bytes).map_err(|e| Error::io("write", &path, e))
}

pub fn plan(args: &PlanArgs) -> Result<i32, Error> {
    let p = prepare(&args.suite)?;
    if let Some(n) = args.shards {
        return shard_sizes(&p, n, args.format == PlanFormat::GithubMatrix);
    }
    if args.format == PlanFormat::GithubMatrix {
        return shard_sizes(&p, 1, true);
    }
    let shard = args.shard;
    let assignment =
        shard.map(|s| crate::plan::shard::Assignment::of_expansion(&p.expansion, s.count));
    let keep = |r: &RunPlan| match (shard, &assignment) {
        (Some(s), Some(a)) => a.holds(s, r),
        _ => true,
    };
    if args.dry_run {
        let opts = PlanOptions {
            artifact_dir: args.artifacts.join("dry-run"),
        };
        let planner = Planner::new(&p.suite, &p.expansion, &opts)
            .map_err(|d| invalid(&d, &p.suite.sources))?;
        let format = match args.format {
            PlanFormat::Text => Format::Text,
            PlanFormat::Json => Format::Json,
            PlanFormat::Dot => Format::Dot,
            PlanFormat::GithubMatrix => unreachable!("handled above"),
        };
        let mut header = serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "suite": p.suite.name,
            "run_count": p.expansion.runs.len(),
        });
        if let Some(s) = shard {
            header["shard"] = serde_json::json!(s.to_string());
        }
        let (setup, teardown) = (planner.setup_plans(), planner.teardown_plans());
        if !setup.is_empty() || !teardown.is_empty() {
            header["setup"] = serde_json::to_value(&setup).map_err(|e| Error::Output(e.into()))?;
            header["teardown"] =
                serde_json::to_value(&teardown).map_err(|e| Error::Output(e.into()))?;
        }
        let stdout = std::io::stdout().lock();
        let mut w = PlanWriter::new(
            BufWriter::with_capacity(1 << 16, stdout),
            format,
            &header,
            &summary(&p),
        )
        .map_err(Error::Output)?;
        for s in &setup {
            w.write_phase(s).map_err(Error::Output)?;
        }
        // A shard plans only its own runs.
        let pick = |i: usize| match (shard, &assignment) {
            (Some(s), Some(a)) => {
                let r = &p.expansion.runs[i];
                let wl = &p.expansion.groups[r.group].workload.name;
                a.shard(wl, &r.variant_label(), r.repetition) == s.index
            }
            _ => true,
        };
        plan_where(&p, &planner, pick, |run| {
            if keep(run) {
                w.write(run).map_err(Error::Output)?;
            }
            Ok(())
        })?;
        for t in &teardown {
            w.write_phase(t).map_err(Error::Output)?;
        }
        w.finish().map_err(Error::Output)?;
        return Ok(exit::OK);
    }
    let selection = Selection {
        shard,
        only: Vec::new(),
    };
    let (artifact, _) = write_artifact(&p, &args.artifacts, &selection, keep, |_| Ok(()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}\nplanned into {}",
        summary(&p),
        crate::diag::display_path(&artifact.path)
    )
    .map_err(Error::Output)?;
    Ok(exit::OK)
}
