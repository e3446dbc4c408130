//! `flow run`: plan, write the artifact folder, execute, summarize.

use std::io::Write;
use std::sync::Arc;

use crate::cli::{PlanArgs, RunArgs};
use crate::diag::{Diagnostic, Diagnostics, Sources, display_path};
use crate::exec::host::HostSet;
use crate::exec::{self, Options};
use crate::plan::{Only, RunPlan};

use super::plan::{prepare, summary, write_artifact};
use super::{Error, exit};

/// The file that marks an artifact as being run, holding flow's pid.
pub const LOCK_FILE: &str = "flow.pid";

/// `--only` and `--shard` together.
fn keep_fn<'a>(
    only: &'a Only,
    shard: Option<(crate::plan::Shard, &'a crate::plan::shard::Assignment)>,
) -> impl Fn(&RunPlan) -> bool + 'a {
    move |r: &RunPlan| only.matches(r, None) && shard.is_none_or(|(s, a)| a.holds(s, r))
}

pub fn run(args: &RunArgs) -> Result<i32, Error> {
    if args.slurm {
        return super::slurm::submit(args);
    }
    if let Some(id) = &args.resume {
        let r = crate::cli::ResumeArgs {
            id: Some(id.clone()),
            rerun_failed: args.rerun_failed,
            only: args.only.clone(),
            replan: args.replan,
            jobs: args.jobs,
            max_failures: args.max_failures(),
            verbose: args.verbose,
            share_hosts: args.share_hosts,
            keep_hosts: args.keep_hosts,
            artifacts: args.artifacts.clone(),
        };
        return super::resume(&r, false);
    }
    if args.dry_run {
        return super::plan(&PlanArgs {
            suite: args.suite.clone(),
            dry_run: true,
            format: args.format,
            artifacts: args.artifacts.clone(),
            shard: args.shard,
            shards: None,
        });
    }
    let only = only(&args.only)?;
    if only.needs_status() {
        return Err(Error::Invalid(
            "error: `--only status=…` picks runs by how they went in an artifact, and a new run has none\n  = help: `flow run --resume ID --only status=failed` runs the failed runs of artifact ID again\n".into(),
        ));
    }
    // The hosts are made before they are read, and destroyed after the
    // last run by the flow that runs them (a detached or remote one
    // does so itself).
    let hooks = super::hooks::of_suite(&args.suite.suite)?;
    if let Err(e) = super::hooks::provision(&hooks) {
        super::hooks::deprovision(&hooks, args.keep_hosts);
        return Err(e);
    }
    let r = run_new(args, &only);
    if !args.detach && args.controller.is_none() {
        super::hooks::deprovision(&hooks, args.keep_hosts);
    }
    r
}

/// `flow run` of a new artifact, between the hooks.
fn run_new(args: &RunArgs, only: &Only) -> Result<i32, Error> {
    let only = only.clone();
    let p = prepare(&args.suite)?;
    check_keys(&only, &p)?;
    let assignment = args
        .shard
        .map(|s| crate::plan::shard::Assignment::of_expansion(&p.expansion, s.count));
    let shard = args.shard.zip(assignment.as_ref());
    // Planned once without an artifact where a selection may be empty (a
    // shard with nothing to do), and for a controller host, so that a
    // suite that does not plan is reported here before anything is pushed.
    if (args.controller.is_some() || args.shard.is_some())
        && super::plan::check_plans(&p, keep_fn(&only, shard))? == 0
    {
        return empty_selection(args, &p);
    }
    if let Some(host) = &args.controller {
        return super::remote::start(args, host, &p.suite.inventory);
    }
    let keep = keep_fn(&only, shard);
    let selection = super::plan::Selection {
        shard: args.shard,
        only: args.only.clone(),
    };
    let (artifact, plans) = write_artifact(&p, &args.artifacts, &selection, keep, |plans| {
        if plans.is_empty() {
            return Err(Error::Invalid(no_match(&args.only)));
        }
        Ok(())
    })?;
    let n = plans.len();
    {
        let mut out = std::io::stdout().lock();
        let head = summary(&p);
        let selected = match (n == p.expansion.runs.len(), args.shard) {
            (true, _) => String::new(),
            (false, Some(s)) if args.only.is_empty() => format!("\n{n} of them in shard {s}"),
            (false, Some(s)) => format!("\n{n} of them in shard {s} selected by --only"),
            (false, None) => format!("\n{n} of them selected by --only"),
        };
        // A closed stdout does not stop the runs: the artifact is the output.
        let _ = writeln!(
            out,
            "{head}{selected}\nartifact: {}",
            display_path(&artifact.path)
        );
    }
    if args.detach {
        let d = super::detach::Detach {
            artifacts: &args.artifacts,
            jobs: args.jobs.max(1),
            max_failures: args.max_failures(),
            verbose: args.verbose,
            share_hosts: args.share_hosts,
            keep_hosts: args.keep_hosts,
        };
        return super::detach::start(&artifact.path, &artifact.id, &d);
    }
    let opts = Options {
        jobs: args.jobs.max(1),
        max_failures: args.max_failures(),
        verbose: args.verbose,
        plain: false,
    };
    let plans: Vec<Arc<RunPlan>> = plans.into_iter().map(Arc::new).collect();
    let (todo, rows) = exec::Todo::fresh(plans);
    let inv = Invocation {
        dir: &artifact.path,
        id: &artifact.id,
        inventory: &p.suite.inventory,
        share_hosts: args.share_hosts,
        resuming: false,
    };
    inv.execute(todo, rows, &opts)
}

/// One execution of runs of an artifact: `flow run`, `flow resume`,
/// `flow attach`.
pub(super) struct Invocation<'a> {
    pub dir: &'a std::path::Path,
    pub id: &'a str,
    pub inventory: &'a crate::suite::Inventory,
    pub share_hosts: bool,
    /// Steps a dead flow left for this artifact are taken over, not
    /// killed as leftovers.
    pub resuming: bool,
}

impl Invocation<'_> {
    /// Takes the artifact (its `flow.pid`), executes `todo`, then writes
    /// summaries and the report and says how it went; returns the exit
    /// code.
    pub fn execute(
        &self,
        todo: Vec<exec::Todo>,
        rows: Vec<crate::artifact::run_result::RunRow>,
        opts: &Options,
    ) -> Result<i32, Error> {
        let n = todo.len();
        let lock = self.dir.join(LOCK_FILE);
        std::fs::write(&lock, format!("{}\n", std::process::id()))
            .map_err(|e| Error::io("write", &lock, e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("start the runtime in", self.dir, e))?;
        let started = std::time::Instant::now();
        let phases = exec::Phases::load(self.dir).map_err(|e| {
            Error::Invalid(format!("error: the artifact's setup and teardown: {e}\n"))
        })?;
        let mut used: Vec<String> = Vec::new();
        // Analyze steps run on the controller, which is not among a run's hosts.
        for h in todo
            .iter()
            .flat_map(|t| {
                t.plan
                    .hosts
                    .iter()
                    .chain(t.plan.steps.iter().map(|s| &s.host))
            })
            .chain(phases.hosts())
        {
            if !used.contains(h) {
                used.push(h.clone());
            }
        }
        let launcher = Arc::new(
            HostSet::new(
                self.inventory,
                &used,
                self.id,
                self.share_hosts,
                self.resuming,
            )
            .map_err(|e| {
                Error::io(
                    "prepare ssh connections in",
                    std::path::Path::new("/tmp"),
                    e,
                )
            })?,
        );
        let with_metrics = todo.iter().any(|t| !t.plan.metrics.is_empty())
            || self.dir.join("summary.csv").exists();
        let outcome = rt.block_on(async {
            let outcome = exec::execute(
                todo,
                rows,
                self.id,
                self.dir.to_path_buf(),
                opts,
                Arc::clone(&launcher) as Arc<dyn exec::host::Launcher>,
                &phases,
            )
            .await;
            launcher.close().await;
            outcome
        });
        let _ = std::fs::remove_file(&lock);
        let mut warnings = outcome.warnings.clone();
        {
            let (runs, errors) = crate::results::load_runs(self.dir);
            warnings.extend(errors);
            warnings.extend(crate::results::metric_gaps(&runs));
            let rows = crate::results::summarize(&runs);
            if with_metrics && let Err(e) = crate::results::write_summaries(self.dir, &rows) {
                warnings.push(e);
            }
            // After the summaries, so that they can read them; not after Ctrl-C.
            if !outcome.was_interrupted {
                warnings.extend(crate::results::suite_steps::run_all(self.dir));
            }
            if let Err(e) = crate::results::write_report(self.dir, &runs, &rows) {
                warnings.push(e);
            }
            if let Err(e) = crate::results::junit::write(self.dir, &runs) {
                warnings.push(e);
            }
        }
        for w in &warnings {
            let _ = writeln!(std::io::stderr().lock(), "warning: {w}");
        }
        if let Some(e) = &outcome.setup_failed {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: {e}\n  = help: no run started; fix the setup and `flow resume {}` runs it again, then the runs",
                self.id
            );
        }
        let mut parts = vec![
            format!("{} passed", outcome.passed),
            format!("{} failed", outcome.failed),
        ];
        if outcome.interrupted > 0 {
            parts.push(format!("{} interrupted", outcome.interrupted));
        }
        if outcome.not_run > 0 {
            parts.push(format!("{} not run", outcome.not_run));
        }
        let mut out = std::io::stdout().lock();
        // The exit code says how the runs went, whether or not this line lands.
        let _ = writeln!(
            out,
            "{n} run{}: {} in {:.1}s\nresults: {}",
            if n == 1 { "" } else { "s" },
            parts.join(", "),
            started.elapsed().as_secs_f64(),
            display_path(&self.dir.join("runs.csv")),
        );
        if with_metrics {
            let _ = writeln!(
                out,
                "summary: {}",
                display_path(&self.dir.join("summary.csv"))
            );
        }
        let _ = writeln!(
            out,
            "report: {}",
            display_path(&self.dir.join("report.html"))
        );
        Ok(if outcome.was_interrupted {
            exit::INTERRUPTED
        } else if outcome.failed > 0 || outcome.interrupted > 0 || outcome.setup_failed.is_some() {
            exit::FAILED
        } else {
            exit::OK
        })
    }
}

/// `--only` values, parsed; bad ones are reported together.
pub(super) fn only(values: &[String]) -> Result<Only, Error> {
    Only::parse(values).map_err(|errors| {
        let mut diags = Diagnostics::new();
        for e in errors {
            diags.push(Diagnostic::new(None, e).with_help(ONLY_HELP));
        }
        Error::Invalid(diags.render(&Sources::default()))
    })
}

const ONLY_HELP: &str = "`--only` takes a glob on the run id (`'*.perf.*'`) or `key=glob` conditions joined by commas (`mode=perf,num_events=100`); keys: id, workload, mode, variant, repetition, status, mutation, a param, or an annotation (`annotation.KEY`)";

/// `--only` keys that no run of the suite has: a typo, which would
/// otherwise select nothing.
pub(super) fn check_keys(only: &Only, p: &super::plan::Prepared) -> Result<(), Error> {
    if only.is_empty() {
        return Ok(());
    }
    let mut params: Vec<&str> = Vec::new();
    for r in &p.expansion.runs {
        for k in r.params.keys() {
            if !params.contains(&k.as_str()) {
                params.push(k);
            }
        }
    }
    for e in &p.suite.entries {
        for k in e.annotations.keys() {
            if !params.contains(&k.as_str()) {
                params.push(k);
            }
        }
    }
    unknown_keys(only, params)
}

/// The error for `--only` keys that are neither a field nor in `params`.
pub(super) fn unknown_keys(only: &Only, mut params: Vec<&str>) -> Result<(), Error> {
    let unknown = only.unknown_keys(&params);
    if unknown.is_empty() {
        return Ok(());
    }
    params.sort_unstable();
    let mut d = Diagnostics::new();
    for k in unknown {
        d.push(
            Diagnostic::new(None, format!("`--only`: no run has a `{k}`")).with_help(format!(
                "keys: id, workload, mode, variant, repetition, status, mutation, and the runs' params and annotations: {}",
                params
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
    }
    Err(Error::Invalid(d.render(&Sources::default())))
}

/// No run selected: with `--shard` alone, a CI job with nothing to do
/// (exit 0, no artifact); with `--only`, an error.
fn empty_selection(args: &RunArgs, p: &super::plan::Prepared) -> Result<i32, Error> {
    match args.shard {
        Some(s) if args.only.is_empty() => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}\nshard {s} holds none of these runs: nothing to run",
                summary(p)
            );
            Ok(exit::OK)
        }
        _ => Err(Error::Invalid(no_match(&args.only))),
    }
}

/// How `args` runs its runs (`--jobs`, `--max-failures`, `--share-hosts`,
/// `--verbose`), as options for another `flow run` that runs them: on a
/// controller host, or in a Slurm job.
pub(super) fn execution_options(args: &RunArgs) -> Vec<String> {
    let mut o = vec!["--jobs".to_string(), args.jobs.max(1).to_string()];
    if let Some(n) = args.max_failures() {
        o.extend(["--max-failures".into(), n.to_string()]);
    }
    if args.share_hosts {
        o.push("--share-hosts".into());
    }
    if args.keep_hosts {
        o.push("--keep-hosts".into());
    }
    if args.verbose {
        o.push("--verbose".into());
    }
    o
}

pub(super) fn no_match(only: &[String]) -> String {
    let mut d = Diagnostics::new();
    d.push(
        Diagnostic::new(None, format!("no run matches `--only {}`", only.join(" --only ")))
            .with_help("run ids look like `<workload>.<mode>.r<repetition>-<hash>`; `flow plan --dry-run` lists them"),
    );
    d.render(&Sources::default())
}
