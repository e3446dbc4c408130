//! The validated workload: steps with their kinds, placement selectors,
//! readiness probes and stop rules, every string kept with its source span so
//! that plan-time template errors can point at it.
//!
//! A [`Workload`] is built from a *merged* tree (workload file, suite
//! defaults, entry overrides, mode and `--set`), once per workload entry and
//! mode; the per-run parts (params, templates) are applied by the planner.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::raw::{
    Command, RawMetric, RawStep, RawTimelineSource, RawWorkload, Scalar, StepKind, When,
};
use crate::diag::{Diagnostic, Diagnostics, Span, did_you_mean, list_names};
use crate::duration;
use crate::names::NameKind;
use crate::yaml::{Node, decode_partial};

/// A string from a file (usually a template) and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub text: String,
    #[serde(skip)]
    pub span: Span,
}

impl Field {
    pub fn new(text: impl Into<String>, span: Span) -> Self {
        Field {
            text: text.into(),
            span,
        }
    }

    /// True when the text contains template syntax and must be rendered.
    pub fn is_template(&self) -> bool {
        is_template(&self.text)
    }
}

pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// How a step's command is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunField {
    /// Run by `sh -c`; interpolated values are shell-quoted.
    Shell(Field),
    /// Run as argv; each element rendered, nothing quoted.
    Argv(Vec<Field>),
}

/// A readiness probe of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyProbe {
    Log(Field),
    Port(Field),
    Cmd(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub probe: ReadyProbe,
    pub timeout: Field,
    pub interval: Field,
}

/// `scrape:` of a monitor: the endpoint and how often it is polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrape {
    pub url: Field,
    pub every: Field,
    pub timeout: Option<Field>,
    pub max_missed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub signal: Field,
    pub grace: Field,
}

/// `when:` of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    Never,
    Expr(Field),
}

/// One validated step of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub name_span: Span,
    pub kind: StepKind,
    pub description: Option<String>,
    /// Selectors (roles, host names, `all`); empty for analyze steps.
    pub on: Vec<Field>,
    pub run: Option<RunField>,
    pub needs: Vec<Field>,
    pub ready: Option<Ready>,
    pub timeout: Option<Field>,
    /// Services and monitors: how long they collect, all hosts together.
    pub duration: Option<Field>,
    /// Fetch steps: how often they also pull while the run goes.
    pub every: Option<Field>,
    pub stop: Option<Stop>,
    /// Monitors: poll a Prometheus endpoint; flow supplies the command.
    pub scrape: Option<Scrape>,
    pub env: Vec<(String, Field)>,
    pub retries: u32,
    pub when: Condition,
    pub allow_failure: bool,
    /// A lost host does not end the run's other steps.
    pub continue_on_host_loss: bool,
    pub paths: Vec<Field>,
    /// Fetch steps: the most bytes of one file, and of all files from one
    /// host, they bring home; past them, keep the first bytes or fail.
    pub max_bytes: Option<u64>,
    pub max_total_bytes: Option<u64>,
    pub truncate: bool,
}

/// A figure of merit; extraction is described in `docs/reference/workload.md`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Metric {
    pub name: String,
    /// A glob relative to the run's folder; a template, rendered per run.
    pub from: String,
    /// Where the metric is declared (its name), for messages.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
    #[serde(flatten)]
    pub source: MetricSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub better: Option<super::raw::Better>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricSource {
    Json {
        pointer: String,
    },
    Csv {
        column: String,
        agg: String,
        filter: BTreeMap<String, String>,
    },
    Regex {
        pattern: String,
        all: bool,
    },
    /// A series of a `scrape:` monitor's CSV log.
    Scrape {
        metric: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
        labels: BTreeMap<String, String>,
        agg: String,
    },
}

/// Aggregations over time of a scraped series.
pub const SCRAPE_AGGS: &[&str] = &["last", "mean", "min", "max", "increase", "rate"];

/// The most often a `scrape:` monitor polls.
pub const MIN_SCRAPE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// CSV aggregations a metric may use.
pub const CSV_AGGS: &[&str] = &[
    "count", "sum", "mean", "min", "max", "p50", "p90", "p95", "p99", "last",
];

/// The shortest `every:` of a fetch step.
pub const MIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The shortest `clock_every:`.
pub const MIN_CLOCK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Signals a `stop:` may name.
pub const SIGNALS: &[&str] = &["TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "KILL"];

/// A workload after merging and validation.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub description: Option<String>,
    /// Params with their (merged) defaults, in file order.
    pub params: Node,
    pub files: Vec<Field>,
    pub env: Vec<(String, Field)>,
    /// Steps in file order.
    pub steps: Vec<Step>,
    pub metrics: Vec<Metric>,
    pub exclusive: bool,
    /// How often clock offsets are sampled while a run goes, when set.
    pub clock_every: Option<std::time::Duration>,
    /// Event files merged onto one corrected timeline, by source name.
    pub timeline: Vec<TimelineSource>,
}

impl Workload {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Builds and validates a workload from a merged tree. Every error is
    /// pushed into `diags`; `None` if there was any.
    pub fn from_node(node: &Node, diags: &mut Diagnostics) -> Option<Workload> {
        let before = diags.len();
        // Keep checking what did decode, so one pass reports every error.
        let (raw, pruned): (RawWorkload, Node) = decode_partial(node, diags)?;
        let node = &pruned;
        let span_of = |path: &[&str]| -> Span {
            let mut n = node;
            for p in path {
                match n.get(p) {
                    Some(c) => n = c,
                    None => return n.span,
                }
            }
            n.span
        };
        check_name(
            NameKind::Workload,
            &raw.workload,
            span_of(&["workload"]),
            diags,
        );
        let steps_node = node.get("steps");
        let mut steps = Vec::new();
        for (key, step_node) in steps_node.and_then(Node::as_map).unwrap_or_default() {
            let Some(raw_step) = raw.steps.get(&key.name) else {
                continue;
            };
            check_name(NameKind::Step, &key.name, key.span, diags);
            if let Some(step) = build_step(&key.name, key.span, raw_step, step_node, diags) {
                steps.push(step);
            }
        }
        if steps.is_empty() && diags.len() == before {
            diags.push(
                Diagnostic::at(
                    node.get_key("steps").map_or(node.span, |k| k.span),
                    "the workload has no steps",
                )
                .with_help("add at least one step under `steps:`"),
            );
        }
        check_needs(&steps, diags);
        let mut metrics = Vec::new();
        for (name, m) in &raw.metrics {
            let span = node
                .get("metrics")
                .and_then(|ms| ms.get_key(name))
                .map_or(node.span, |k| k.span);
            check_name(NameKind::Metric, name, span, diags);
            if let Some(metric) = build_metric(name, m, span, diags) {
                metrics.push(metric);
            }
        }
        let clock_every = field(node.get("clock_every"), node.span).and_then(|f| {
            match duration::parse(&f.text) {
                Ok(d) if d.is_zero() || d >= MIN_CLOCK_EVERY => Some(d),
                Ok(_) => {
                    diags.push(
                        Diagnostic::at(f.span, format!("`clock_every: {}` is too often", f.text))
                            .with_help("clock offsets are sampled at most every 10s; `0s` turns sampling off"),
                    );
                    None
                }
                Err(e) => {
                    diags.push(Diagnostic::at(f.span, format!("`clock_every`: {e}")));
                    None
                }
            }
        });
        let mut timeline = Vec::new();
        for (name, t) in &raw.timeline {
            let span = node
                .get("timeline")
                .and_then(|ms| ms.get_key(name))
                .map_or(node.span, |k| k.span);
            check_name(NameKind::Metric, name, span, diags);
            if let Some(t) = build_timeline_source(name, t, span, diags) {
                timeline.push(t);
            }
        }
        let files = seq_fields(node.get("files"));
        check_env_keys(node.get("env"), diags);
        let env = map_fields(node.get("env"));
        (diags.len() == before).then(|| Workload {
            name: raw.workload,
            description: raw.description,
            params: node
                .get("params")
                .cloned()
                .unwrap_or_else(|| Node::empty_map(node.span)),
            files,
            env,
            steps,
            metrics,
            exclusive: raw.exclusive.unwrap_or(true),
            clock_every,
            timeline,
        })
    }
}

/// How a path meant to stay inside a run's folder leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideRunDir {
    Empty,
    Absolute,
    Parent,
}

impl OutsideRunDir {
    pub fn as_str(self) -> &'static str {
        match self {
            OutsideRunDir::Empty => "is empty",
            OutsideRunDir::Absolute => "is absolute",
            OutsideRunDir::Parent => "leaves the run's folder (`..`)",
        }
    }
}

/// A path that must stay inside a run's folder (a fetch path, a metric's
/// `from`): relative, without `..`.
pub fn check_inside_run_dir(p: &str) -> Result<(), OutsideRunDir> {
    if p.trim().is_empty() {
        return Err(OutsideRunDir::Empty);
    }
    if p.starts_with('/') || p.starts_with('~') {
        return Err(OutsideRunDir::Absolute);
    }
    if std::path::Path::new(p)
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(OutsideRunDir::Parent);
    }
    Ok(())
}

/// Pushes an error when `name` breaks the rule of its kind.
pub fn check_name(kind: NameKind, name: &str, span: Span, diags: &mut Diagnostics) {
    if let Err((message, help)) = kind.check(name) {
        diags.push(Diagnostic::at(span, message).with_help(help));
    }
}

/// `env:` keys become shell variables on every host: `A;touch x;B` must
/// never reach a shell.
pub fn check_env_keys(node: Option<&Node>, diags: &mut Diagnostics) {
    for (k, _) in node.and_then(Node::as_map).unwrap_or_default() {
        check_name(NameKind::EnvVar, &k.name, k.span, diags);
    }
}

/// The scalar at `node` as a field; `None` when absent or null. A node
/// without a known span (one built from JSON) takes `fallback`.
fn field(node: Option<&Node>, fallback: Span) -> Option<Field> {
    let n = node.filter(|n| !n.is_null())?;
    let span = if n.span.is_known() { n.span } else { fallback };
    Some(Field::new(n.to_string(), span))
}

fn seq_fields(node: Option<&Node>) -> Vec<Field> {
    match node {
        Some(n) => match n.as_seq() {
            Some(items) => items
                .iter()
                .map(|i| Field::new(i.to_string(), i.span))
                .collect(),
            None if n.is_null() => Vec::new(),
            None => vec![Field::new(n.to_string(), n.span)],
        },
        None => Vec::new(),
    }
}

fn map_fields(node: Option<&Node>) -> Vec<(String, Field)> {
    node.and_then(Node::as_map)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.name.clone(), Field::new(v.to_string(), v.span)))
        .collect()
}

fn check_duration(f: &Field, what: &str, diags: &mut Diagnostics) {
    if f.is_template() {
        return;
    }
    if let Err(e) = duration::parse(&f.text) {
        diags.push(Diagnostic::at(f.span, format!("{what}: {e}")));
    }
}

fn build_step(
    name: &str,
    name_span: Span,
    raw: &RawStep,
    node: &Node,
    diags: &mut Diagnostics,
) -> Option<Step> {
    let before = diags.len();
    let kind = raw.kind.unwrap_or(StepKind::Task);
    let at = |key: &str| node.get_key(key).map_or(name_span, |k| k.span);
    let not_for = |key: &str, kinds: &str, diags: &mut Diagnostics| {
        diags.push(
            Diagnostic::at(
                at(key),
                format!(
                    "step `{name}`: `{key}` is not allowed on a {} step",
                    kind.as_str()
                ),
            )
            .with_help(format!("`{key}` belongs to {kinds} steps")),
        );
    };
    // Fields that only some kinds take.
    if raw.ready.is_some() && kind != StepKind::Service {
        not_for("ready", "service", diags);
    }
    if raw.stop.is_some() && !matches!(kind, StepKind::Service | StepKind::Monitor) {
        not_for("stop", "service and monitor", diags);
    }
    if raw.retries.is_some() && kind != StepKind::Task {
        not_for("retries", "task", diags);
    }
    if !raw.paths.is_empty() && kind != StepKind::Fetch {
        not_for("paths", "fetch", diags);
    }
    if raw.max_bytes.is_some() && kind != StepKind::Fetch {
        not_for("max_bytes", "fetch", diags);
    }
    if raw.over_max.is_some() && kind != StepKind::Fetch {
        not_for("over_max", "fetch", diags);
    }
    if raw.scrape.is_some() && kind != StepKind::Monitor {
        let d = Diagnostic::at(
            at("scrape"),
            format!(
                "step `{name}`: `scrape` is not allowed on a {} step",
                kind.as_str()
            ),
        );
        diags.push(d.with_help("a scrape runs for as long as the run goes: write `kind: monitor`"));
    }
    if raw.scrape.is_some() && raw.run.is_some() {
        diags.push(
            Diagnostic::at(
                at("run"),
                format!("step `{name}` has both `scrape` and `run`"),
            )
            .with_help("a scrape step's command is flow's poller: drop `run`, or make it a separate monitor"),
        );
    }
    let mut size = |s: Option<&super::raw::Size>, key: &str| -> Option<u64> {
        let s = s?;
        match s.bytes() {
            Ok(b) => Some(b),
            Err(e) => {
                let at = node
                    .get("max_bytes")
                    .map_or(name_span, |n| n.get(key).map_or(n.span, |k| k.span));
                diags.push(Diagnostic::at(
                    at,
                    format!("step `{name}`: `max_bytes`: {e}"),
                ));
                None
            }
        }
    };
    let (max_bytes, max_total_bytes) = match &raw.max_bytes {
        None => (None, None),
        Some(super::raw::RawMaxBytes::Size(s)) => (size(Some(s), "file"), None),
        Some(super::raw::RawMaxBytes::Split { file, total }) => {
            (size(file.as_ref(), "file"), size(total.as_ref(), "total"))
        }
    };
    if raw.from.is_some() && kind != StepKind::Fetch {
        not_for("from", "fetch", diags);
    }
    if raw.on_host_loss.is_some() && !matches!(kind, StepKind::Service | StepKind::Monitor) {
        not_for("on_host_loss", "service and monitor", diags);
    }
    if raw.every.is_some() && kind != StepKind::Fetch {
        not_for("every", "fetch", diags);
    }
    if raw.duration.is_some() && !matches!(kind, StepKind::Service | StepKind::Monitor) {
        let d = Diagnostic::at(
            at("duration"),
            format!(
                "step `{name}`: `duration` is not allowed on a {} step",
                kind.as_str()
            ),
        );
        diags.push(if kind == StepKind::Task {
            d.with_help("a task runs until it exits; `timeout:` bounds it, and a fixed-length collection is a monitor with `duration:`")
        } else {
            d.with_help("`duration` belongs to service and monitor steps")
        });
    }
    if raw.on.is_some() && matches!(kind, StepKind::Fetch | StepKind::Analyze) {
        let d = Diagnostic::at(
            at("on"),
            format!(
                "step `{name}`: `on` is not allowed on a {} step",
                kind.as_str()
            ),
        );
        diags.push(if kind == StepKind::Fetch {
            d.with_help("a fetch step names its hosts with `from:`")
        } else {
            d.with_help("analyze steps run on the controller")
        });
    }
    match (kind, &raw.run) {
        (StepKind::Fetch, Some(_)) => not_for("run", "task, service, monitor and analyze", diags),
        (StepKind::Fetch, None) if raw.paths.is_empty() => diags.push(
            Diagnostic::at(name_span, format!("fetch step `{name}` has no `paths`"))
                .with_help("list the files to fetch, e.g. `paths: [\"results.csv\"]`"),
        ),
        (StepKind::Fetch, None) => {}
        (_, None) if raw.scrape.is_some() => {}
        (_, None) => diags.push(
            Diagnostic::at(name_span, format!("step `{name}` has no `run` command"))
                .with_help("add `run: <command>`"),
        ),
        (_, Some(Command::Argv(v))) if v.is_empty() => {
            diags.push(Diagnostic::at(
                at("run"),
                format!("step `{name}`: `run` is an empty list"),
            ));
        }
        (_, Some(Command::Shell(s))) if s.trim().is_empty() => {
            diags.push(Diagnostic::at(
                at("run"),
                format!("step `{name}`: `run` is empty"),
            ));
        }
        _ => {}
    }
    let run = match (&raw.run, node.get("run")) {
        (Some(Command::Shell(s)), Some(n)) => Some(RunField::Shell(Field::new(s.clone(), n.span))),
        (Some(Command::Argv(_)), Some(n)) => Some(RunField::Argv(seq_fields(Some(n)))),
        _ => None,
    };
    let selectors = if kind == StepKind::Fetch {
        "from"
    } else {
        "on"
    };
    let on = match kind {
        StepKind::Analyze => Vec::new(),
        _ => {
            let v = seq_fields(node.get(selectors));
            if v.is_empty() {
                vec![Field::new("all", name_span)]
            } else {
                v
            }
        }
    };
    let ready = raw.ready.as_ref().and_then(|r| {
        let rn = node.get("ready")?;
        let probes: Vec<ReadyProbe> = [
            r.log
                .as_ref()
                .and(field(rn.get("log"), rn.span))
                .map(ReadyProbe::Log),
            r.port
                .as_ref()
                .and(field(rn.get("port"), rn.span))
                .map(ReadyProbe::Port),
            r.cmd
                .as_ref()
                .and(field(rn.get("cmd"), rn.span))
                .map(ReadyProbe::Cmd),
        ]
        .into_iter()
        .flatten()
        .collect();
        if probes.len() != 1 {
            diags.push(
                Diagnostic::at(
                    at("ready"),
                    format!("step `{name}`: `ready` needs exactly one of `log`, `port`, `cmd`"),
                )
                .with_help(format!("found {}", probes.len())),
            );
            return None;
        }
        let probe = probes.into_iter().next()?;
        match (&probe, &r.port) {
            (ReadyProbe::Port(f), Some(Scalar::Int(p))) if !(1..=65535).contains(p) => {
                diags.push(Diagnostic::at(
                    f.span,
                    format!("step `{name}`: port {p} is out of range 1-65535"),
                ));
            }
            (ReadyProbe::Log(f), _) if !f.is_template() => {
                if let Err(e) = regex::Regex::new(&f.text) {
                    diags.push(Diagnostic::at(
                        f.span,
                        format!(
                            "step `{name}`: invalid `ready.log` regex: {}",
                            first_line(&e.to_string())
                        ),
                    ));
                }
            }
            _ => {}
        }
        let timeout =
            field(rn.get("timeout"), rn.span).unwrap_or_else(|| Field::new("60s", rn.span));
        let interval =
            field(rn.get("interval"), rn.span).unwrap_or_else(|| Field::new("200ms", rn.span));
        check_duration(&timeout, &format!("step `{name}`: `ready.timeout`"), diags);
        check_duration(
            &interval,
            &format!("step `{name}`: `ready.interval`"),
            diags,
        );
        Some(Ready {
            probe,
            timeout,
            interval,
        })
    });
    let timeout = field(node.get("timeout"), name_span);
    if let Some(t) = &timeout {
        check_duration(t, &format!("step `{name}`: `timeout`"), diags);
    }
    let duration = field(node.get("duration"), name_span);
    if let Some(t) = &duration {
        check_duration(t, &format!("step `{name}`: `duration`"), diags);
    }
    let every = field(node.get("every"), name_span);
    if let Some(t) = &every {
        check_duration(t, &format!("step `{name}`: `every`"), diags);
        if !t.is_template() && duration::parse(&t.text).is_ok_and(|d| d < MIN_EVERY) {
            diags.push(
                Diagnostic::at(
                    t.span,
                    format!("step `{name}`: `every: {}` is too often", t.text),
                )
                .with_help(
                    "an incremental fetch runs at most once a second; `every: 10m` is typical",
                ),
            );
        }
    }
    let stop = match kind {
        StepKind::Service | StepKind::Monitor => {
            let sn = node.get("stop");
            let signal = field(sn.and_then(|s| s.get("signal")), name_span)
                .unwrap_or_else(|| Field::new("TERM", name_span));
            let grace = field(sn.and_then(|s| s.get("grace")), name_span)
                .unwrap_or_else(|| Field::new("10s", name_span));
            check_duration(&grace, &format!("step `{name}`: `stop.grace`"), diags);
            if !signal.is_template() && normalize_signal(&signal.text).is_none() {
                diags.push(
                    Diagnostic::at(
                        signal.span,
                        format!("step `{name}`: unknown signal `{}`", signal.text),
                    )
                    .with_help(format!(
                        "expected one of {}",
                        list_names(SIGNALS.iter().copied())
                    )),
                );
            }
            Some(Stop { signal, grace })
        }
        _ => None,
    };
    let scrape = raw.scrape.as_ref().and_then(|r| {
        let sn = node.get("scrape")?;
        let url = field(sn.get("url"), sn.span)?;
        let http = url.text.starts_with("http://") || url.text.starts_with("https://");
        if !(url.is_template() || http) {
            diags.push(
                Diagnostic::at(url.span, format!("step `{name}`: `scrape.url` `{}` is not an http:// or https:// URL", url.text))
                    .with_help("the endpoint as the step's host reaches it, e.g. `http://localhost:9100/metrics`"),
            );
        }
        let every = field(sn.get("every"), sn.span).unwrap_or_else(|| Field::new("1s", sn.span));
        check_duration(&every, &format!("step `{name}`: `scrape.every`"), diags);
        if !every.is_template() && duration::parse(&every.text).is_ok_and(|d| d < MIN_SCRAPE_EVERY) {
            diags.push(
                Diagnostic::at(every.span, format!("step `{name}`: `scrape.every: {}` is too often", every.text))
                    .with_help("a scrape runs at most every 100ms; Prometheus itself defaults to 1m"),
            );
        }
        let timeout = field(sn.get("timeout"), sn.span);
        if let Some(t) = &timeout {
            check_duration(t, &format!("step `{name}`: `scrape.timeout`"), diags);
        }
        Some(Scrape {
            url,
            every,
            timeout,
            max_missed: r.max_missed.unwrap_or(0),
        })
    });
    let when = match &raw.when {
        None | Some(When::Bool(true)) => Condition::Always,
        Some(When::Bool(false)) => Condition::Never,
        Some(When::Expr(_)) => match field(node.get("when"), name_span) {
            Some(f) => Condition::Expr(f),
            None => Condition::Always,
        },
    };
    let needs = seq_fields(node.get("needs"));
    let step = Step {
        name: name.to_string(),
        name_span,
        kind,
        description: raw.description.clone(),
        on,
        run,
        needs,
        ready,
        timeout,
        duration,
        every,
        stop,
        scrape,
        env: {
            check_env_keys(node.get("env"), diags);
            map_fields(node.get("env"))
        },
        retries: raw.retries.unwrap_or(0),
        when,
        allow_failure: raw.allow_failure.unwrap_or(false),
        continue_on_host_loss: raw.on_host_loss == Some(super::raw::HostLoss::Continue),
        paths: seq_fields(node.get("paths")),
        max_bytes,
        max_total_bytes,
        truncate: raw.over_max == Some(super::raw::OverMax::Truncate),
    };
    (diags.len() == before).then_some(step)
}

/// The regex crate's message without its pattern excerpt: its last line.
fn first_line(s: &str) -> String {
    let last = s.lines().last().unwrap_or(s).trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// `TERM`, `SIGTERM`, `term` → `TERM`; `None` if not a known signal.
pub fn normalize_signal(s: &str) -> Option<&'static str> {
    let up = s.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS.iter().copied().find(|sig| *sig == bare)
}

/// Unknown `needs`, self-needs and cycles among steps.
fn check_needs(steps: &[Step], diags: &mut Diagnostics) {
    let names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let mut ok = true;
    for s in steps {
        for n in &s.needs {
            if n.text == s.name {
                diags.push(Diagnostic::at(
                    n.span,
                    format!("step `{}` needs itself", s.name),
                ));
                ok = false;
            } else if !names.contains(n.text.as_str()) {
                let help = did_you_mean(&n.text, names.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "steps of this workload: {}",
                        list_names(names.iter().copied())
                    )
                });
                diags.push(
                    Diagnostic::at(
                        n.span,
                        format!("step `{}` needs unknown step `{}`", s.name, n.text),
                    )
                    .with_help(help),
                );
                ok = false;
            }
        }
    }
    if ok && let Some(cycle) = super::cycle::find_cycle(steps) {
        let first = &steps[cycle[0]];
        let path: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&cycle[0]))
            .map(|&i| steps[i].name.as_str())
            .collect();
        let span = first
            .needs
            .iter()
            .find(|n| n.text == steps[cycle[1 % cycle.len()]].name)
            .map_or(first.name_span, |n| n.span);
        diags.push(
            Diagnostic::at(
                span,
                format!(
                    "steps depend on each other in a cycle: {}",
                    path.join(" → ")
                ),
            )
            .with_help("remove one of these `needs` so the steps can be ordered"),
        );
    }
}

/// A source of `timeline:`, checked.
fn build_timeline_source(
    name: &str,
    t: &RawTimelineSource,
    span: Span,
    diags: &mut Diagnostics,
) -> Option<TimelineSource> {
    let before = diags.len();
    if let Err(why) = check_inside_run_dir(&t.files) {
        diags.push(
            Diagnostic::at(span, format!("timeline `{name}`: `files: {}` {}", t.files, why.as_str()))
                .with_help("event files are found below each host's fetched folder (`hosts/<host>/`): give a path or glob relative to it, as the fetch step's `paths` does"),
        );
    } else if let Err(e) = glob::Pattern::new(&t.files) {
        diags.push(Diagnostic::at(
            span,
            format!("timeline `{name}`: `files: {}` is not a glob: {e}", t.files),
        ));
    }
    if t.time.trim().is_empty() {
        diags.push(
            Diagnostic::at(span, format!("timeline `{name}`: `time` is empty"))
                .with_help("name the column (CSV) or field (JSON lines) holding each event's time"),
        );
    }
    let unit = t.unit.clone().unwrap_or_else(|| "s".into());
    if !TIME_UNITS.contains(&unit.as_str()) {
        diags.push(
            Diagnostic::at(
                span,
                format!("timeline `{name}`: unknown time unit `{unit}`"),
            )
            .with_help(format!(
                "expected one of {}",
                list_names(TIME_UNITS.iter().copied())
            )),
        );
    }
    let format = match t.format.as_deref() {
        None => None,
        Some(f) if EVENT_FORMATS.contains(&f) => Some(f.to_string()),
        Some(f) => {
            diags.push(
                Diagnostic::at(span, format!("timeline `{name}`: unknown format `{f}`"))
                    .with_help(format!(
                        "expected one of {}; by default the file's extension decides (`.csv`, `.jsonl`)",
                        list_names(EVENT_FORMATS.iter().copied())
                    )),
            );
            None
        }
    };
    (diags.len() == before).then(|| TimelineSource {
        name: name.to_string(),
        files: t.files.clone(),
        time: t.time.clone(),
        unit,
        format,
    })
}

/// Units of a timeline's time column.
pub const TIME_UNITS: &[&str] = &["s", "ms", "us", "ns"];

/// Formats of a timeline's event files.
pub const EVENT_FORMATS: &[&str] = &["csv", "jsonl"];

/// One source of a workload's `timeline:` as runs use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TimelineSource {
    pub name: String,
    /// A glob below each host's fetched folder (`hosts/<host>/`).
    pub files: String,
    /// The column or field holding each event's time on its host's clock.
    pub time: String,
    /// `s`, `ms`, `us` or `ns` since the Unix epoch.
    pub unit: String,
    /// `csv` or `jsonl`; absent: by the file's extension.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub format: Option<String>,
}

fn build_metric(name: &str, m: &RawMetric, span: Span, diags: &mut Diagnostics) -> Option<Metric> {
    if let Err(why) = check_inside_run_dir(&m.from) {
        diags.push(
            Diagnostic::at(span, format!("metric `{name}`: `from: {}` {}", m.from, why.as_str()))
                .with_help("metrics are read from the run's folder only (`hosts/<host>/…`, `analysis/…`, `logs/…`): give a path or glob relative to it"),
        );
        return None;
    }
    let count = [
        m.json.is_some(),
        m.csv.is_some(),
        m.regex.is_some(),
        m.scrape.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if count != 1 {
        diags.push(
            Diagnostic::at(
                span,
                format!("metric `{name}` needs exactly one of `json`, `csv`, `regex`, `scrape`"),
            )
            .with_help(format!("found {count}")),
        );
        return None;
    }
    let source = if let Some(p) = &m.json {
        if !(p.is_empty() || p.starts_with('/')) {
            diags.push(
                Diagnostic::at(
                    span,
                    format!("metric `{name}`: `json` must be a JSON pointer starting with `/`"),
                )
                .with_help(format!("write `/{p}`")),
            );
            return None;
        }
        MetricSource::Json { pointer: p.clone() }
    } else if let Some(c) = &m.csv {
        let agg = c.agg.clone().unwrap_or_else(|| "mean".into());
        if !CSV_AGGS.contains(&agg.as_str()) {
            diags.push(
                Diagnostic::at(
                    span,
                    format!("metric `{name}`: unknown aggregation `{agg}`"),
                )
                .with_help(
                    did_you_mean(&agg, CSV_AGGS.iter().copied()).unwrap_or_else(|| {
                        format!("expected one of {}", list_names(CSV_AGGS.iter().copied()))
                    }),
                ),
            );
            return None;
        }
        MetricSource::Csv {
            column: c.column.clone(),
            agg,
            filter: c.filter.clone(),
        }
    } else if let Some(sc) = &m.scrape {
        let agg = sc.agg.clone().unwrap_or_else(|| "last".into());
        if !SCRAPE_AGGS.contains(&agg.as_str()) {
            diags.push(
                Diagnostic::at(
                    span,
                    format!("metric `{name}`: unknown aggregation `{agg}` of a scraped series"),
                )
                .with_help(
                    did_you_mean(&agg, SCRAPE_AGGS.iter().copied()).unwrap_or_else(|| {
                        format!(
                            "expected one of {}",
                            list_names(SCRAPE_AGGS.iter().copied())
                        )
                    }),
                ),
            );
            return None;
        }
        MetricSource::Scrape {
            metric: sc.metric.clone(),
            labels: sc.labels.clone(),
            agg,
        }
    } else {
        let pattern = m.regex.clone().unwrap_or_default();
        match regex::Regex::new(&pattern) {
            Ok(re) if re.capture_names().flatten().any(|n| n == "value") => {}
            Ok(_) => {
                diags.push(
                    Diagnostic::at(
                        span,
                        format!("metric `{name}`: the regex has no group named `value`"),
                    )
                    .with_help("write the number's part as `(?P<value>[0-9.]+)`"),
                );
                return None;
            }
            Err(e) => {
                diags.push(Diagnostic::at(
                    span,
                    format!(
                        "metric `{name}`: invalid regex: {}",
                        first_line(&e.to_string())
                    ),
                ));
                return None;
            }
        }
        let all = match m.matches.as_deref() {
            None | Some("last") => false,
            Some("all") => true,
            Some(other) => {
                diags.push(Diagnostic::at(
                    span,
                    format!("metric `{name}`: `matches` must be `all` or `last`, not `{other}`"),
                ));
                return None;
            }
        };
        MetricSource::Regex { pattern, all }
    };
    Some(Metric {
        name: name.to_string(),
        from: m.from.clone(),
        span,
        source,
        unit: m.unit.clone(),
        better: m.better,
    })
}
