//! Command-line types (clap derive) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run distributed-systems experiments described in YAML.
#[derive(Debug, Parser)]
#[command(name = "flow", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check a suite and everything it names; nothing runs.
    Validate(SuiteArgs),
    /// Expand a suite into runs and show or store their plans.
    Plan(PlanArgs),
    /// Run a suite: every run's steps on its hosts, results into an artifact folder.
    Run(Box<RunArgs>),
    /// Continue an artifact in place: keep what passed, take over what still runs, run the rest.
    Resume(ResumeArgs),
    /// Take over the runs a dead flow left running in an artifact, and finish them; start no new run.
    Attach(ResumeArgs),
    /// Bring back now what the fetch steps of an artifact's runs would, from every host.
    Fetch(FetchArgs),
    /// Re-run analysis, metric extraction and summaries on a stored artifact; no host is contacted.
    Analyze(AnalyzeArgs),
    /// Write an artifact's `report.html` again from its stored results.
    Report(ReportArgs),
    /// Two artifacts side by side: per metric and variant, both means, the delta and its significance.
    Compare(CompareArgs),
    /// Send an artifact's runs, metrics, summary and timelines to ClickHouse, or write them as Parquet.
    Export(ExportArgs),
    /// Merge artifacts of one plan (the shards of a CI matrix) into one artifact folder.
    Merge(MergeArgs),
    /// Progress of a running or finished artifact.
    Status(StatusArgs),
    /// Bring an artifact that runs on a controller host (`--controller`) here: only what changed, also while it runs.
    Sync(SyncArgs),
    /// Stop the flow that runs an artifact, cleanly: steps stopped, then fetch and analysis.
    Stop(StopArgs),
    /// Artifact folders, newest first, with their run counts.
    List(ListArgs),
    /// Inspect the hosts of an inventory.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Kill every process an artifact left running on its hosts (after flow was killed).
    Reap(ReapArgs),
    /// Run a command on every (or every matching) host of an inventory, in parallel.
    Exec(ExecArgs),
    /// Open a shell (or run a command) on one host of an inventory, reached as flow reaches it.
    Ssh(SshArgs),
    /// Print the JSON Schema of suite, workload, inventory, plan and run-result files.
    Schema(SchemaArgs),
}

/// Which suite, with which hosts and overrides.
#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// A suite name (`suites/NAME.yaml`) or a path to a suite file
    /// (required, except with `flow run --resume`).
    #[arg(
        long,
        short = 's',
        value_name = "NAME|PATH",
        default_value = "",
        hide_default_value = true
    )]
    pub suite: String,
    /// An inventory file; replaces the suite's `hosts:`.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Override a value: `param=value` or `steps.NAME.FIELD=value` (value is YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The most runs the suite may expand to; more is an error before
    /// anything is planned.
    #[arg(long, value_name = "N", default_value_t = crate::suite::DEFAULT_MAX_RUNS)]
    pub max_runs: u64,
    /// A note on every run (`KEY=VALUE`): recorded in plans, results,
    /// `runs.csv`, summaries and the report, filterable with `--only`,
    /// never part of a run id.
    #[arg(long = "annotate", value_name = "KEY=VALUE")]
    pub annotate: Vec<String>,
    /// Source states an artifact recorded (a resume runs them again).
    #[arg(skip)]
    pub pinned: std::collections::BTreeMap<String, crate::suite::code::Pinned>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Print the plan instead of writing an artifact folder.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of `--dry-run`.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
    /// Only the runs of shard I of N (see `flow run --shard`).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<crate::plan::Shard>,
    /// Print how many runs each of N shards gets, and nothing else.
    #[arg(long, value_name = "N", conflicts_with_all = ["shard", "dry_run"])]
    pub shards: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// Only these runs: a glob on the run id (`streaming.perf.*`), or
    /// `key=glob` conditions joined by commas (`mode=perf,num_events=100`;
    /// with `--resume`, also `status=failed`); repeatable.
    #[arg(long, value_name = "FILTER")]
    pub only: Vec<String>,
    /// Only the runs of shard I of N: a partition by workload, variant and repetition that keeps a point's modes together and does not move when other runs are added.
    #[arg(long, value_name = "I/N", conflicts_with = "resume")]
    pub shard: Option<crate::plan::Shard>,
    /// Runs at once, at most; runs share a host only when their workload says `exclusive: false`.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Go on with the next run after a failed one (the default).
    #[arg(long, conflicts_with = "fail_fast")]
    pub keep_going: bool,
    /// Start no run after the first failed one.
    #[arg(long)]
    pub fail_fast: bool,
    /// Start no run after this many failed.
    #[arg(long, value_name = "N", conflicts_with = "fail_fast")]
    pub max_failures: Option<usize>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
    /// Print the plan and run nothing (`flow plan --dry-run`).
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of `--dry-run`.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text, requires = "dry_run")]
    pub format: PlanFormat,
    /// Stream each step's output, prefixed with `step@host`.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Run on ssh hosts that another flow is using (in the same workdir)
    /// instead of refusing them; the two runs may disturb each other's
    /// measurements.
    #[arg(long)]
    pub share_hosts: bool,
    /// Leave the hosts as they are at the end: the suite's `deprovision`
    /// does not run.
    #[arg(long)]
    pub keep_hosts: bool,
    /// Continue artifact ID in place instead of planning a new one (`flow resume ID`).
    #[arg(long, value_name = "ID", conflicts_with = "dry_run")]
    pub resume: Option<String>,
    /// With `--resume`: run failed runs again too.
    #[arg(long, requires = "resume")]
    pub rerun_failed: bool,
    /// With `--resume`: go on even though the suite now plans other runs.
    #[arg(long, requires = "resume")]
    pub replan: bool,
    /// Plan the artifact, then run it in the background, in a session of its own, and return at once.
    #[arg(long, conflicts_with_all = ["dry_run", "resume"])]
    pub detach: bool,
    /// With `--detach`: run it on HOST (an inventory host, or `[user@]address[:port]`), the artifact there; flow and the project folder are pushed.
    #[arg(long, value_name = "HOST", requires = "detach")]
    pub controller: Option<String>,
    /// Submit the suite to Slurm and return: one batch job per shard, each running its shard's runs back to back in an allocation of its own (the hosts must come from the allocation: `--hosts slurm:…` or `provider: slurm`).
    #[arg(long, conflicts_with_all = ["dry_run", "resume", "detach", "shard"])]
    pub slurm: bool,
    /// With `--slurm`: nodes per job (default: the fewest the inventory's roles fit).
    #[arg(long, value_name = "N", requires = "slurm", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub nodes: Option<u32>,
    /// With `--slurm`: each job's time limit, as sbatch takes it (`30`, `2:00:00`, `1-0`).
    #[arg(long, value_name = "T", requires = "slurm")]
    pub time: Option<String>,
    /// With `--slurm`: the partition to submit to.
    #[arg(long, value_name = "P", requires = "slurm")]
    pub partition: Option<String>,
    /// With `--slurm`: the account to charge.
    #[arg(long, value_name = "A", requires = "slurm")]
    pub account: Option<String>,
    /// With `--slurm`: split the runs into K shards, one job each (`flow merge` puts them together).
    #[arg(long, value_name = "K", requires = "slurm", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub shards: u32,
    /// With `--slurm`: an option for sbatch, as written (`--sbatch-arg=--exclusive`); repeatable.
    #[arg(
        long = "sbatch-arg",
        value_name = "ARG",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    pub sbatch_args: Vec<String>,
    /// With `--slurm`: the batch script to submit, with `{{ command }}` where flow runs (see the reference for every placeholder).
    #[arg(long, value_name = "FILE", requires = "slurm")]
    pub sbatch_template: Option<PathBuf>,
}

impl RunArgs {
    /// `--fail-fast` is `--max-failures 1`.
    pub fn max_failures(&self) -> Option<usize> {
        if self.fail_fast {
            Some(1)
        } else {
            self.max_failures
        }
    }
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The artifacts to merge: ids (in `--artifacts`) or folders.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// The merged artifact's id: a new folder in `--artifacts` (default: a
    /// new `<time>-<suite>` id).
    #[arg(long, short = 'o', value_name = "ID")]
    pub output: Option<String>,
    /// Move the runs' folders out of the inputs instead of copying them.
    #[arg(long = "move")]
    pub move_runs: bool,
    /// Do not run the suite's analyze steps on the merged artifact.
    #[arg(long)]
    pub no_steps: bool,
    /// Where artifact folders live (inputs named by id, and the output).
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Only these runs: a glob on the run id, or `key=glob` conditions
    /// (`status=running`, `mode=perf`); repeatable.
    #[arg(long, value_name = "FILTER")]
    pub only: Vec<String>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Run failed runs again too (by default they are kept as they are).
    #[arg(long)]
    pub rerun_failed: bool,
    /// Only these runs: a glob on the run id, or `key=glob` conditions
    /// (`status=failed`, `mode=perf,num_events=100`); repeatable. A
    /// selected run that failed is run again; the others are left as they
    /// are.
    #[arg(long, value_name = "FILTER")]
    pub only: Vec<String>,
    /// Go on even though the suite, as its files are now, plans other runs
    /// than the artifact holds: changed runs are run under their new ids.
    #[arg(long)]
    pub replan: bool,
    /// Runs at once, at most.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Start no run after this many failed.
    #[arg(long, value_name = "N")]
    pub max_failures: Option<usize>,
    /// Stream each step's output, prefixed with `step@host`.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Run on ssh hosts that another flow is using.
    #[arg(long)]
    pub share_hosts: bool,
    /// Leave the hosts as they are at the end: the suite's `deprovision`
    /// does not run.
    #[arg(long)]
    pub keep_hosts: bool,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Reachability, connection time, clock offset, kernel and tools of each host.
    Check(HostsCheckArgs),
}

#[derive(Debug, Args)]
pub struct HostsCheckArgs {
    /// The inventory file.
    #[arg(long, value_name = "FILE")]
    pub hosts: PathBuf,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The inventory file.
    #[arg(long, value_name = "FILE")]
    pub hosts: PathBuf,
    /// Only hosts with this role or name (repeatable; default: all).
    #[arg(long, value_name = "ROLE")]
    pub on: Vec<String>,
    /// The command, run by each host's shell.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The host's name in the inventory.
    pub host: String,
    /// The inventory file (or `cmd:COMMAND`).
    #[arg(long, value_name = "FILE", conflicts_with = "suite")]
    pub hosts: Option<PathBuf>,
    /// The suite whose inventory names the host (its `hosts:`).
    #[arg(long, short = 's', value_name = "NAME|PATH")]
    pub suite: Option<String>,
    /// A command to run there instead of a shell.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
    /// One JSON document for tools, instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show it again every SECS seconds until flow is done (Ctrl-C stops watching; the run goes on).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
    /// Kill what it runs now, as a second Ctrl-C would: no fetch and no analysis follow.
    #[arg(long)]
    pub kill: bool,
    /// Return once asked; do not wait for it to end.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Only these runs (the summaries still cover every run): a glob on
    /// the run id, or `key=glob` conditions (`status=passed`,
    /// `mode=perf`); repeatable.
    #[arg(long, value_name = "FILTER")]
    pub only: Vec<String>,
    /// Extract metrics and summarize without re-running the analyze steps.
    #[arg(long)]
    pub no_steps: bool,
    /// Take the metric definitions from the workload files as they are now
    /// (the suite is planned again, files only) instead of the ones the
    /// runs were planned with; says which metrics changed and records the
    /// new definitions in the runs' `plan.json`.
    #[arg(long)]
    pub metrics_from_workloads: bool,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Also compare each value of this variant key (a matrix param, or
    /// `mutation`) with `--ref`, with Welch's test; kept in `report.json`
    /// for every later report. Repeatable, each with its `--ref`.
    #[arg(long, value_name = "KEY", requires = "reference")]
    pub by: Vec<String>,
    /// The reference value of each `--by`.
    #[arg(long = "ref", id = "reference", value_name = "VALUE", requires = "by")]
    pub reference: Vec<String>,
    /// Drop the comparisons an earlier `--by` chose.
    #[arg(long, conflicts_with = "by")]
    pub no_compare: bool,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// An artifact id or folder; the latest when left out.
    pub id: Option<String>,
    /// Insert into ClickHouse over HTTP: `http://[user[:password]@]host[:port]`
    /// (port 8123 by default). The tables are created when missing; an
    /// artifact already there is refused.
    #[arg(long, value_name = "URL", conflicts_with = "format")]
    pub clickhouse: Option<String>,
    /// The ClickHouse database (created when missing).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        requires = "clickhouse"
    )]
    pub database: String,
    /// Write files instead: `parquet` (one file per table).
    #[arg(long, value_name = "FORMAT", value_parser = ["parquet"])]
    pub format: Option<String>,
    /// Where the files go (default: `<artifact>/export/`).
    #[arg(long, value_name = "DIR", requires = "format")]
    pub out: Option<PathBuf>,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The artifact to compare against (an id or a folder); with `--by`,
    /// the one artifact whose variants are compared.
    pub a: String,
    /// The artifact to compare (an id or a folder).
    #[arg(required_unless_present = "by", conflicts_with = "by")]
    pub b: Option<String>,
    /// Within one artifact: compare each value of this variant key (a
    /// matrix param, or `mutation`) with `--ref` at the same other params.
    #[arg(long, value_name = "KEY", requires = "reference")]
    pub by: Option<String>,
    /// The value of `--by` the others are compared with.
    #[arg(long = "ref", id = "reference", value_name = "VALUE", requires = "by")]
    pub reference: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where artifact folders live.
    #[arg(long, value_name = "DIR", default_value = "artifacts")]
    pub artifacts: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Dot,
    /// With `--shards N`: the JSON a GitHub Actions `strategy.matrix` takes (`fromJSON`).
    GithubMatrix,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Only this file kind.
    #[arg(value_enum)]
    pub kind: Option<SchemaKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Suite,
    Workload,
    Inventory,
    /// `runs/<id>/plan.json`.
    Plan,
    /// `runs/<id>/run_result.json`.
    RunResult,
}
