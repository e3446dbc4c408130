//! The plan of one run as it is written to `plan.json`: the resolved DAG of
//! step instances with rendered commands, placement and edges.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dag::EdgeKind;
use crate::suite::{Metric, StepKind};

/// The host name of steps that run on the controller (analyze steps).
pub const CONTROLLER: &str = "controller";

/// One run: a DAG of step instances.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunPlan {
    pub schema_version: u32,
    /// `<workload>.<mode>.r<repetition>-<hash>`; stable across invocations.
    pub id: String,
    pub suite: String,
    pub workload: String,
    pub mode: String,
    /// `key=value,…` of the matrix point, or `default`.
    pub variant: String,
    pub variant_params: serde_json::Map<String, serde_json::Value>,
    /// 1-based.
    pub repetition: u32,
    /// Every param, resolved.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Whether the run needs its hosts to itself.
    pub exclusive: bool,
    /// The run's directory on the controller.
    pub dir: String,
    /// Hosts the run uses, in inventory order.
    pub hosts: Vec<String>,
    /// Files and folders pushed into each host's run dir (controller paths).
    pub files: Vec<String>,
    pub steps: Vec<StepInstance>,
    pub edges: Vec<Edge>,
    pub metrics: Vec<Metric>,
    /// How often remote hosts' clocks are measured while the run goes;
    /// absent: every 5 minutes; 0: only before and after.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub clock_every_ms: Option<u64>,
    /// Event files merged onto one timeline on the controller's clock
    /// (`analysis/timeline.csv`) before the analyze steps run.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub timeline: Vec<crate::suite::TimelineSource>,
    /// The mutation the run runs (`none`: unpatched), when its entry has
    /// mutations; also the variant key `mutation`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mutation: Option<String>,
    /// The code the run runs: each source of the suite in the state it
    /// was in, with the patches of the run's mutation.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub sources: BTreeMap<String, RunSource>,
    /// Free-form notes (`annotations:`, `--annotate`); not part of the id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// One source as a run uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunSource {
    pub commit: String,
    /// Whether uncommitted changes were part of it (stored in the
    /// artifact as `sources/<name>.diff`).
    pub dirty: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub diff_sha256: Option<String>,
    /// The mutation whose patches were applied, when one was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mutation: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub patches: Vec<PatchRef>,
    /// The snapshot on the controller: exactly this code, written out.
    pub path: String,
}

/// A patch file a run's source had applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PatchRef {
    pub file: String,
    pub sha256: String,
}

/// How often clocks are sampled through a run when the workload does not say.
pub const CLOCK_EVERY_DEFAULT_MS: u64 = 5 * 60 * 1000;

/// A step placed on one host.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StepInstance {
    /// `<step>@<host>`.
    pub id: String,
    pub step: String,
    /// A host of the inventory, or `controller`.
    pub host: String,
    pub kind: StepKind,
    /// Working directory on the host: the run dir there (for analyze steps,
    /// the workload file's folder on the controller).
    pub cwd: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunCommand>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Services and monitors: how long they run once every host's instance
    /// is up; then all are stopped together, as a pass.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ms: Option<u64>,
    /// Fetch steps: how often they also pull while the run goes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub every_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopPlan>,
    /// Monitors that poll a Prometheus endpoint: `run` is flow's poller
    /// with these arguments; its exit when stopped as planned decides
    /// whether it passed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scrape: Option<ScrapePlan>,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub retries: u32,
    #[serde(skip_serializing_if = "is_false", default)]
    pub allow_failure: bool,
    /// `on_host_loss: continue`: losing its host does not end the run's
    /// other steps.
    #[serde(skip_serializing_if = "is_false", default)]
    pub continue_on_host_loss: bool,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub paths: Vec<String>,
    /// Fetch steps: the most bytes of one file they bring home.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_bytes: Option<u64>,
    /// Fetch steps: the most bytes of all their files from one host.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_total_bytes: Option<u64>,
    /// Fetch steps: over the limits, keep the first bytes (`truncate`)
    /// instead of failing.
    #[serde(skip_serializing_if = "is_false", default)]
    pub truncate: bool,
}

impl StepInstance {
    /// The command as one line, for people: a scrape's poller by its
    /// endpoint and interval rather than its script.
    pub fn command_display(&self) -> String {
        match (&self.scrape, &self.run) {
            (Some(s), _) => super::scrape::display(s),
            (None, Some(r)) => r.display(),
            (None, None) => String::new(),
        }
    }

    /// What a fetch step may bring home.
    pub fn limits(&self) -> crate::exec::fetch::Limits {
        crate::exec::fetch::Limits {
            file: self.max_bytes,
            total: self.max_total_bytes,
            truncate: self.truncate,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A rendered command: `sh -c` text, or argv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl RunCommand {
    /// The command as one line, for people.
    pub fn display(&self) -> String {
        match self {
            RunCommand::Shell(s) => s.clone(),
            RunCommand::Argv(v) => v
                .iter()
                .map(|a| super::template::shell_quote(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReadyPlan {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    pub timeout_ms: u64,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScrapePlan {
    pub url: String,
    pub every_ms: u64,
    pub timeout_ms: u64,
    pub max_missed: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StopPlan {
    pub signal: String,
    pub grace_ms: u64,
}

/// `from` must be ready (services), running (monitors) or done before `to` starts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
}
