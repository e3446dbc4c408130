//! The serde shapes of flow's three file kinds, exactly as written in YAML.
//!
//! These types reject unknown keys and are the single source of the published
//! JSON Schema (`flow schema`). They carry no meaning beyond shape: the
//! validated model is built from them in `workload.rs`, `inventory.rs` and
//! `model.rs`. Free-form parts (params, overlays) stay `serde_json::Value`
//! here; the model takes them from the spanned YAML tree instead.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value as Any;

/// An inventory file (`hosts/*.yaml`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    /// Fields applied to every host unless the host sets them.
    #[serde(default)]
    pub defaults: Option<RawHost>,
    /// Hosts by name (an inventory with `provider:` has none: its hosts come
    /// from the provider).
    #[serde(default)]
    pub hosts: BTreeMap<String, RawHost>,
    /// `slurm`: the hosts are the nodes of the Slurm allocation flow runs
    /// in (`SLURM_JOB_NODELIST`), with roles by `roles`.
    pub provider: Option<String>,
    /// With `provider: slurm`: how steps reach the nodes (`srun`, the
    /// default: as job steps of the allocation; `ssh`: over ssh, with
    /// `defaults` for user, identity and the like).
    pub transport: Option<String>,
    /// With `provider: slurm`: role → the nodes it takes, in the order
    /// written: a count (`1`), `rest`, `all`, or node indexes (`[0, 2]`).
    pub roles: Option<BTreeMap<String, Any>>,
    /// With `provider: slurm`: `host.vars` of the nodes carrying a role.
    pub role_vars: Option<BTreeMap<String, BTreeMap<String, Any>>>,
}

/// One host of an inventory. Every field may also sit in `defaults`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// Host name or IP; `local` runs steps as local child processes, without ssh.
    pub address: Option<String>,
    /// ssh user.
    pub user: Option<String>,
    /// ssh port.
    pub port: Option<u16>,
    /// ProxyJump host (an inventory name, or anything `~/.ssh/config` knows).
    pub jump: Option<String>,
    /// ssh identity file.
    pub identity: Option<String>,
    /// Directory on the host under which runs live (`<workdir>/runs/<artifact-id>-<hash>/<host>/<run-id>/`).
    pub workdir: Option<String>,
    /// Roles this host carries; steps select hosts by role.
    pub roles: Option<Vec<String>>,
    /// Free-form variables, available to templates as `host.vars`.
    pub vars: Option<BTreeMap<String, Any>>,
    /// Extra ssh options, passed as `-o Key=Value`.
    pub ssh_options: Option<BTreeMap<String, String>>,
    /// An ssh config file, passed as `-F`.
    pub ssh_config: Option<String>,
}

/// A workload file (`workloads/*.yaml`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    /// The workload's name: the first part of its run ids.
    pub workload: String,
    pub description: Option<String>,
    /// Parameters with their defaults; any of them can be swept or overridden.
    #[serde(default)]
    pub params: BTreeMap<String, Any>,
    /// Paths (relative to this file) pushed into each host's run directory.
    #[serde(default)]
    pub files: Vec<String>,
    /// Environment variables for every step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The steps, by name.
    #[serde(default)]
    pub steps: BTreeMap<String, RawStep>,
    /// Figures of merit extracted after each run.
    #[serde(default)]
    pub metrics: BTreeMap<String, RawMetric>,
    /// Named overlays over this file; `baseline` (empty) always exists.
    #[serde(default)]
    pub modes: BTreeMap<String, RawOverlay>,
    /// Whether runs of this workload need their hosts to themselves (default true).
    pub exclusive: Option<bool>,
    /// How often remote hosts' clock offsets are measured while a run goes
    /// (default `5m`; `0s` only before and after).
    pub clock_every: Option<String>,
    /// Event files of the run's hosts merged onto one timeline on the
    /// controller's clock (`analysis/timeline.csv`), by source name.
    #[serde(default)]
    pub timeline: BTreeMap<String, RawTimelineSource>,
}

/// Event files, one or more per host, with a time column on that host's
/// wall clock.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimelineSource {
    /// A glob below each host's fetched folder (`hosts/<host>/`).
    pub files: String,
    /// The column (CSV) or field (JSON lines) holding the event's time:
    /// the host's wall clock since the Unix epoch.
    pub time: String,
    /// `s` (default), `ms`, `us` or `ns`.
    pub unit: Option<String>,
    /// `csv` or `jsonl`; by default from the file's extension.
    pub format: Option<String>,
}

/// An overlay over a workload: a mode, suite `defaults`, or an entry's `overrides`.
/// Maps merge deeply; lists and scalars replace; `null` removes a key.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOverlay {
    pub description: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Any>,
    pub files: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, Any>,
    /// Partial steps, merged over the workload's steps by name.
    #[serde(default)]
    pub steps: BTreeMap<String, Any>,
    #[serde(default)]
    pub metrics: BTreeMap<String, Any>,
    pub exclusive: Option<bool>,
}

/// What a step is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Runs to completion; its exit code matters.
    Task,
    /// Long-running; waited on until ready, stopped by flow at the end.
    Service,
    /// Runs while tasks run; stopped after the last task.
    Monitor,
    /// Copies files from hosts into the run's artifact folder; always runs.
    Fetch,
    /// Runs on the controller after fetch.
    Analyze,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Task => "task",
            StepKind::Service => "service",
            StepKind::Monitor => "monitor",
            StepKind::Fetch => "fetch",
            StepKind::Analyze => "analyze",
        }
    }
}

/// One step of a workload.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// `task` (default), `service`, `monitor`, `fetch` or `analyze`.
    pub kind: Option<StepKind>,
    pub description: Option<String>,
    /// Where the step runs: a role, a host name, a list of them, or `all`.
    pub on: Option<OneOrMany>,
    /// For `fetch`: the hosts to fetch from (same forms as `on`).
    pub from: Option<OneOrMany>,
    /// A string run by `sh -c` in the host's run dir, or a list run as argv.
    pub run: Option<Command>,
    /// Steps that must be ready (services) or done (tasks) first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// For services: how to tell the service is ready.
    pub ready: Option<RawReady>,
    /// Longest the step may take (`30s`, `10m`, …).
    pub timeout: Option<String>,
    /// For services and monitors: how long they run once every host's
    /// instance is up (`24h`); then all are stopped together, as a pass.
    pub duration: Option<String>,
    /// For `fetch`: also pull during the run, this often (`10m`).
    pub every: Option<String>,
    /// How flow stops a service or monitor.
    pub stop: Option<RawStop>,
    /// For monitors, instead of `run`: poll a Prometheus text endpoint
    /// into the step's log as CSV (`time_ns,metric,labels,value`).
    pub scrape: Option<RawScrape>,
    /// Environment variables for this step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How many times a failed task is tried again.
    pub retries: Option<u32>,
    /// A template expression; when false the step is dropped from the run.
    pub when: Option<When>,
    /// A failure of this step does not fail the run.
    pub allow_failure: Option<bool>,
    /// Services and monitors: what losing their host does to the run:
    /// `fail` (the default) ends it; `continue` lets the other hosts'
    /// steps go on (the run still fails: that host's data is incomplete).
    pub on_host_loss: Option<HostLoss>,
    /// For `fetch`: paths (globs) relative to the host's run dir.
    #[serde(default)]
    pub paths: Vec<String>,
    /// For `fetch`: the most it brings home: a size per file (`100MB`,
    /// `1GiB`, a number of bytes), or `{ file: SIZE, total: SIZE }` (total:
    /// all its files from one host).
    pub max_bytes: Option<RawMaxBytes>,
    /// For `fetch`: over `max_bytes`, `fail` (the default: the run fails,
    /// its data being incomplete) or `truncate` (keep the first bytes, and
    /// say so in `fetch.log`).
    pub over_max: Option<OverMax>,
}

/// `over_max:` of a fetch step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverMax {
    Fail,
    Truncate,
}

/// `max_bytes:` of a fetch step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawMaxBytes {
    Size(Size),
    Split {
        file: Option<Size>,
        total: Option<Size>,
    },
}

/// A size: bytes, or a number with a unit (`500KB`, `100MB`, `2GiB`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// In bytes; `Err` says what is wrong.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => parse_size(t),
        }
    }
}

/// `100MB` (10^6), `1GiB` (2^30), `512` (bytes).
pub fn parse_size(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a size (like `500KB`, `100MB`, `2GiB`)"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0f64.powi(4),
        u => {
            return Err(format!(
                "`{u}` is not a size unit: B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let b = (n * mult).round();
    if !(0.0..1.8e19).contains(&b) {
        return Err(format!("`{t}` is out of range"));
    }
    Ok(b as u64)
}

/// `scrape:` of a monitor step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScrape {
    /// The endpoint, fetched from the step's host (`http://localhost:9100/metrics`).
    pub url: String,
    /// How often (default `1s`; at least `100ms`).
    pub every: Option<String>,
    /// The longest one request may take (default: `every`, at most `10s`).
    pub timeout: Option<String>,
    /// How many scrapes may fail after the first that succeeded before the
    /// step fails (default 0: the series has no holes).
    pub max_missed: Option<u32>,
}

/// `on_host_loss:` of a service or monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostLoss {
    Fail,
    Continue,
}

/// Readiness probe of a service. Exactly one of `log`, `port`, `cmd`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    /// A regex matched against the service's output from its start.
    pub log: Option<String>,
    /// A TCP port on the host that accepts connections.
    pub port: Option<Scalar>,
    /// A command that exits 0 once the service is ready.
    pub cmd: Option<String>,
    /// How long to wait (default 60s).
    pub timeout: Option<String>,
    /// How often to probe (default 200ms).
    pub interval: Option<String>,
}

/// How a long-running step is stopped: `signal`, then `grace`, then SIGKILL.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    /// Signal name (`TERM` default, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, `KILL`).
    pub signal: Option<String>,
    /// Time between the signal and SIGKILL (default 10s).
    pub grace: Option<String>,
}

/// A figure of merit. Exactly one of `json`, `csv`, `regex`, `scrape`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    /// A glob relative to the run dir (`hosts/*/worker.csv`, `logs/*.out`).
    pub from: String,
    /// A JSON pointer into the file.
    pub json: Option<String>,
    /// A column of a CSV file, aggregated.
    pub csv: Option<RawCsvMetric>,
    /// A regex with a named group `value`.
    pub regex: Option<String>,
    /// For `regex`: every match (`all`) or the last one (`last`, default).
    pub matches: Option<String>,
    /// A series of a `scrape:` monitor's log, aggregated over time.
    pub scrape: Option<RawScrapeMetric>,
    pub unit: Option<String>,
    /// Which direction is an improvement.
    pub better: Option<Better>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCsvMetric {
    pub column: String,
    /// count, sum, mean, min, max, p50, p90, p95, p99, last (default mean).
    pub agg: Option<String>,
    /// Keep only rows whose columns equal these values.
    #[serde(rename = "where", default)]
    pub filter: BTreeMap<String, String>,
}

/// `scrape:` of a metric.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScrapeMetric {
    /// The Prometheus metric name (`node_load1`, `http_requests_total`).
    pub metric: String,
    /// Keep only series whose labels have these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// last (default), mean, min, max, increase, rate; several matching
    /// series are each aggregated, then summed.
    pub agg: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// A suite file (`suites/*.yaml`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSuite {
    /// The suite's name: part of every artifact id.
    pub suite: String,
    pub description: Option<String>,
    /// An inventory file, relative to this file, or `{ command: "…" }`: a
    /// shell command, run in this file's folder, that prints an inventory
    /// (YAML or JSON). `--hosts` overrides it.
    pub hosts: Option<RawHostsSpec>,
    /// A command run on the controller (in this file's folder) before the
    /// hosts are read: creates them (`terraform apply -auto-approve`).
    pub provision: Option<Command>,
    /// A command run after the last run, also after a failure or Ctrl-C
    /// (unless `--keep-hosts`): destroys them.
    pub deprovision: Option<Command>,
    /// An overlay applied to every workload entry.
    pub defaults: Option<RawOverlay>,
    /// The workloads to run.
    pub workloads: Vec<RawEntry>,
    /// Steps run once on the controller after every run, in name order,
    /// with `{{ artifact.dir }}` in their context.
    #[serde(default)]
    pub analyze: BTreeMap<String, RawSuiteAnalyze>,
    /// The code under test: name → the top folder of a git work tree,
    /// relative to this file. Each one's commit and uncommitted changes are
    /// recorded, are part of every run id, and are what runs (a snapshot,
    /// at `{{ sources.NAME.path }}`).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// Free-form notes on every run (`key: value`): recorded everywhere,
    /// filterable with `--only`, never part of a run id.
    #[serde(default)]
    pub annotations: BTreeMap<String, Any>,
    /// Steps run once per invocation, before the first run, in name order
    /// (once per mutation when they use a mutated source); their
    /// `outputs` are pushed into every run's folder on its hosts.
    #[serde(default)]
    pub setup: BTreeMap<String, RawPhaseStep>,
    /// Steps run once at the end, after the runs, also after a failure or
    /// Ctrl-C, in name order.
    #[serde(default)]
    pub teardown: BTreeMap<String, RawPhaseStep>,
}

/// A `setup:` or `teardown:` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPhaseStep {
    pub description: Option<String>,
    /// Where it runs: a host name or a role (setup: one host; teardown:
    /// every host it names). Default: the only host of the inventory.
    pub on: Option<OneOrMany>,
    /// A string run by `sh -c` in the step's folder on its host, or argv.
    pub run: Command,
    /// Sources (of `sources:`) pushed into the step's folder as
    /// `<name>/`, each as the instance's mutation has it.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Setup: paths in the step's folder that it makes (`bin/`, `server`);
    /// fetched, then pushed into every run's folder as `files:` are.
    /// A missing one fails the setup.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Longest the step may take (`10m`).
    pub timeout: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `hosts:` of a suite: a file, or a command that prints an inventory.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(untagged)]
pub enum RawHostsSpec {
    File(String),
    Command(RawHostsCommand),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHostsCommand {
    pub command: String,
}

impl<'de> Deserialize<'de> for RawHostsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHostsSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an inventory file, or `{ command: \"…\" }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawHostsSpec, E> {
                Ok(RawHostsSpec::File(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawHostsSpec, A::Error> {
                RawHostsCommand::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawHostsSpec::Command)
            }
        }
        d.deserialize_any(V)
    }
}

/// A suite-level analyze step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSuiteAnalyze {
    /// A command run by `sh -c` in the suite file's folder, or an argv list.
    pub run: Command,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// One workload entry of a suite.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    /// Path of the workload file, relative to the suite file.
    pub workload: String,
    /// Modes to run (default: `[baseline]`).
    pub modes: Option<Vec<String>>,
    /// Repetitions of every point (default 1).
    pub repetitions: Option<u32>,
    /// Param name → values; the cross product is run, first key outermost.
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<Any>>,
    /// Points to drop: a row drops every point it matches (partial match).
    #[serde(default)]
    pub exclude: Vec<BTreeMap<String, Any>>,
    /// Extra points, added after `exclude`.
    #[serde(default)]
    pub include: Vec<BTreeMap<String, Any>>,
    /// An overlay merged over the workload file.
    pub overrides: Option<RawOverlay>,
    /// Named patch sets against a source, run besides the unpatched code
    /// (`none`): `NAME: [file.patch, …]`, or `NAME: { source: S, patches:
    /// […] }` when the suite has more than one source.
    #[serde(default)]
    pub mutations: BTreeMap<String, RawMutation>,
    /// Notes on this entry's runs, over the suite's.
    #[serde(default)]
    pub annotations: BTreeMap<String, Any>,
}

/// One mutation: patch files (relative to the suite file) applied in order.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(untagged)]
pub enum RawMutation {
    Patches(Vec<String>),
    Full(RawMutationFull),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMutationFull {
    /// The source the patches apply to (may be left out when the suite
    /// has one source).
    pub source: Option<String>,
    pub patches: Vec<String>,
}

impl RawMutation {
    pub fn patches(&self) -> &[String] {
        match self {
            RawMutation::Patches(p) => p,
            RawMutation::Full(f) => &f.patches,
        }
    }

    pub fn source(&self) -> Option<&str> {
        match self {
            RawMutation::Patches(_) => None,
            RawMutation::Full(f) => f.source.as_deref(),
        }
    }
}

impl<'de> Deserialize<'de> for RawMutation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMutation;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of patch files, or a map with `source` and `patches`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawMutation, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(RawMutation::Patches(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawMutation, A::Error> {
                RawMutationFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawMutation::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings (`on: worker`, `on: [worker, coordinator]`).
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A shell command string, or an argv list.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

/// `when:` as a boolean or a template expression.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum When {
    Bool(bool),
    Expr(String),
}

/// A number or a template string (`port: 9000`, `port: "{{ params.port }}"`).
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum Scalar {
    Int(i64),
    Str(String),
}

struct StrOrSeq<T>(fn(String) -> T, fn(Vec<String>) -> T, &'static str);

impl<'de, T> Visitor<'de> for StrOrSeq<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.2)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            out.push(s);
        }
        Ok((self.1)(out))
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrSeq(
            OneOrMany::One,
            OneOrMany::Many,
            "a role, a host name, or a list of them",
        ))
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrSeq(
            Command::Shell,
            Command::Argv,
            "a command string or a list of arguments",
        ))
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = When;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean or a template expression")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<When, E> {
                Ok(When::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<When, E> {
                Ok(When::Expr(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a template")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("number out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("1.5 MB"), Ok(1_500_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").unwrap_or_default() == 0);
        assert!(parse_size("MB").is_err());
        assert!(parse_size("1e30").is_err());
    }
}
