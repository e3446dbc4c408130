//! `report.html`: one self-contained page (inline CSS and SVG, nothing
//! fetched) rendered from a minijinja template with autoescaping.
//!
//! It holds the code the runs ran, setup and teardown, the summary table,
//! a figure per metric ([`plot`]), the cross-host timelines
//! (`analysis/timeline.csv`), the suite's own figures, and the runs in
//! reading order (variant, then repetition), each with its metric values
//! or why there is none, its timeline ([`timeline`]) and its figures. Past
//! [`MAX_TIMELINES`] runs, a table filtered by a few lines of inline
//! script replaces the timelines.
//!
//! Every link is relative to the artifact, so a copied artifact's report
//! works where it is.

mod merged;
pub mod plot;
pub mod timeline;

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::StoredRun;
use super::compare::short;
use super::order::{mode_rank, variant_cmp};
use super::summary::Row;

/// Timelines drawn at most; with more runs the page shows a table.
pub const MAX_TIMELINES: usize = 100;

/// Runs whose merged timeline (`analysis/timeline.csv`) is drawn at most;
/// the rest are counted and linked from their run.
pub const MAX_MERGED: usize = 12;

/// Figures of one run embedded at most.
const MAX_FIGURES: usize = 12;

const TEMPLATE: &str = include_str!("report.html");

/// `s` cut to `n` characters, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

#[derive(Serialize)]
struct Page {
    id: String,
    suite: String,
    passed: usize,
    code: Vec<CodeLine>,
    notes: Vec<String>,
    phases: Vec<PhaseRow>,
    rows: Vec<SummaryRow>,
    mutations: bool,
    figures: Vec<plot::Figure>,
    merged: Vec<merged::Drawn>,
    /// `flow report --by KEY --ref VALUE`: each value of a key against one.
    comparisons: Vec<ComparisonView>,
    /// Runs with a merged timeline past [`MAX_MERGED`].
    merged_more: usize,
    suite_figures: Vec<String>,
    /// More runs than timelines: the table.
    table: bool,
    metric_names: Vec<String>,
    runs: Vec<RunView>,
    kinds: Vec<Kind>,
}

#[derive(Serialize)]
struct CodeLine {
    name: String,
    commit: String,
    dirty: bool,
    mutation: Option<String>,
    patches: Vec<Patch>,
}

#[derive(Serialize, PartialEq)]
struct Patch {
    file: String,
    sha256: String,
}

#[derive(Serialize)]
struct PhaseRow {
    id: String,
    hosts: String,
    status: String,
    class: &'static str,
    error: Option<String>,
    time: String,
    logs: Vec<LogLink>,
}

#[derive(Serialize)]
struct LogLink {
    dir: String,
    step: String,
}

#[derive(Serialize)]
struct SummaryRow {
    workload: String,
    mode: String,
    variant: String,
    metric: String,
    n: String,
    mean: String,
    error: Option<String>,
    error_short: String,
    ci: String,
    median: String,
    std: String,
    vs: String,
    p: String,
    vs_none: String,
    p_none: String,
    sig: bool,
}

#[derive(Serialize)]
struct MetricCell {
    name: String,
    value: String,
    error: Option<String>,
}

#[derive(Serialize)]
struct RunView {
    id: String,
    mode: String,
    variant: String,
    repetition: u32,
    status: String,
    class: &'static str,
    time: String,
    notes: Vec<String>,
    error: Option<String>,
    metrics: Vec<MetricCell>,
    /// The table's cells, one per metric of the artifact.
    metric_cells: Vec<MetricCell>,
    svg: Option<String>,
    timeline_error: Option<String>,
    figures: Vec<String>,
    logs: Vec<String>,
}

#[derive(Serialize)]
struct Kind {
    name: &'static str,
    color: String,
}

fn class_of(status: &str) -> &'static str {
    match status {
        "passed" => "passed",
        "failed" => "failed",
        _ => "other",
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map_or("—".into(), |d| format!("{:.1} s", d as f64 / 1000.0))
}

/// Images under `dir/analysis/` (SVG, PNG, JPEG), as paths relative to
/// the artifact with `prefix`, by name.
fn images(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir.join("analysis")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            [".svg", ".png", ".jpg", ".jpeg"]
                .iter()
                .any(|x| l.ends_with(x))
        })
        .collect();
    out.sort();
    out.truncate(MAX_FIGURES);
    out.into_iter()
        .map(|n| format!("{prefix}analysis/{n}"))
        .collect()
}

/// A key compared with a reference value, as the page shows it.
#[derive(Serialize)]
struct ComparisonView {
    by: String,
    reference: String,
    /// Why there is no table (the key or value is gone).
    error: Option<String>,
    rows: Vec<ComparisonRow>,
}

#[derive(Serialize)]
struct ComparisonRow {
    workload: String,
    mode: String,
    variant: String,
    metric: String,
    reference: String,
    value: String,
    delta_pct: String,
    p: String,
    sig: bool,
}

fn comparison_view((by, reference): &(String, String), rows: &[Row]) -> ComparisonView {
    let with_n = |m: Option<f64>, n: usize, unit: &Option<String>| match m {
        None => "—".to_string(),
        Some(_) => format!(
            "{}{} (n={n})",
            short(m),
            unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default()
        ),
    };
    match super::compare::compare_by(rows, by, reference) {
        Err(e) => ComparisonView {
            by: by.clone(),
            reference: reference.clone(),
            error: Some(e),
            rows: Vec::new(),
        },
        Ok(diffs) => ComparisonView {
            by: by.clone(),
            reference: reference.clone(),
            error: None,
            rows: diffs
                .iter()
                .map(|d| ComparisonRow {
                    workload: d.workload.clone(),
                    mode: d.mode.clone(),
                    variant: d.variant.clone(),
                    metric: d.metric.clone(),
                    reference: with_n(d.a_mean, d.a_n, &d.unit),
                    value: with_n(d.b_mean, d.b_n, &d.unit),
                    delta_pct: d
                        .delta_pct
                        .map(|x| format!("{x:+.1}%"))
                        .unwrap_or_else(|| "—".into()),
                    p: d.p_value.map_or_else(|| "—".into(), |p| short(Some(p))),
                    sig: d.significant == Some(true),
                })
                .collect(),
        },
    }
}

/// The whole page for the artifact at `artifact`; `comparisons` are the
/// `(key, reference value)` pairs `flow report --by` chose.
#[allow(clippy::too_many_arguments)]
pub fn render(
    artifact: &Path,
    artifact_id: &str,
    suite: &str,
    runs: &[StoredRun],
    rows: &[Row],
    phases: &[StoredRun],
    comparisons: &[(String, String)],
) -> Result<String, String> {
    let mut ordered: Vec<&StoredRun> = runs.iter().collect();
    ordered.sort_by(|a, b| {
        let (a, b) = (&a.plan, &b.plan);
        a.workload
            .cmp(&b.workload)
            .then_with(|| {
                variant_cmp(
                    (&a.variant, &a.variant_params),
                    (&b.variant, &b.variant_params),
                )
            })
            .then_with(|| mode_rank(&a.mode).cmp(&mode_rank(&b.mode)))
            .then_with(|| a.repetition.cmp(&b.repetition))
            .then_with(|| a.id.cmp(&b.id))
    });
    let table = runs.len() > MAX_TIMELINES;
    let metric_names: Vec<String> = runs
        .iter()
        .flat_map(|r| r.plan.metrics.iter().map(|m| m.name.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let views: Vec<RunView> = ordered
        .iter()
        .map(|r| run_view(r, table, &metric_names))
        .collect();
    let page = Page {
        id: artifact_id.to_string(),
        suite: suite.to_string(),
        passed: runs
            .iter()
            .filter(|r| {
                r.result
                    .as_ref()
                    .is_some_and(|x| x.status.as_str() == "passed")
            })
            .count(),
        code: code(runs),
        notes: runs
            .iter()
            .flat_map(|r| r.plan.annotations.iter().map(|(k, v)| format!("{k}={v}")))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        phases: phases.iter().map(phase_row).collect(),
        mutations: rows
            .iter()
            .any(|r| super::summary::mutation_of(&r.variant).is_some()),
        rows: rows.iter().map(summary_row).collect(),
        figures: plot::figures(rows),
        comparisons: comparisons
            .iter()
            .map(|c| comparison_view(c, rows))
            .collect(),
        merged: ordered
            .iter()
            .filter_map(|r| merged::drawn(&r.dir, &r.plan.id))
            .take(MAX_MERGED)
            .collect(),
        merged_more: ordered
            .iter()
            .filter(|r| r.dir.join(super::timeline::TIMELINE_CSV).is_file())
            .count()
            .saturating_sub(MAX_MERGED),
        suite_figures: images(artifact, ""),
        table,
        metric_names,
        kinds: if views.iter().any(|v| v.svg.is_some()) {
            timeline::KINDS
                .iter()
                .map(|(name, c)| Kind {
                    name,
                    color: format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2),
                })
                .collect()
        } else {
            Vec::new()
        },
        runs: views,
    };
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| format!("the report's template: {e}"))?;
    env.get_template("report.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&page))))
        .map_err(|e| format!("the report's template: {e}"))
}

/// The code the runs ran: each source's commit and state, the mutations'
/// patches, once each.
fn code(runs: &[StoredRun]) -> Vec<CodeLine> {
    let mut out: Vec<CodeLine> = Vec::new();
    for r in runs {
        for (name, s) in &r.plan.sources {
            let line = CodeLine {
                name: name.clone(),
                commit: s.commit.chars().take(12).collect(),
                dirty: s.dirty,
                mutation: s.mutation.clone(),
                patches: s
                    .patches
                    .iter()
                    .map(|p| Patch {
                        file: p.file.clone(),
                        sha256: p.sha256.chars().take(12).collect(),
                    })
                    .collect(),
            };
            let same = |c: &CodeLine| {
                c.name == line.name
                    && c.commit == line.commit
                    && c.mutation == line.mutation
                    && c.patches == line.patches
            };
            if !out.iter().any(same) {
                out.push(line);
            }
        }
    }
    out
}

fn phase_row(p: &StoredRun) -> PhaseRow {
    let (status, time, error) = match &p.result {
        Some(r) => (
            r.status.as_str().to_string(),
            seconds(r.duration_ms),
            r.first_error().map(|e| clip(&e, 200)),
        ),
        None => ("not run".into(), "—".into(), None),
    };
    let dir = format!("{}/{}", p.plan.workload, p.plan.id);
    PhaseRow {
        id: p.plan.id.clone(),
        hosts: p.plan.hosts.join(", "),
        class: class_of(&status),
        status,
        error,
        time,
        logs: p
            .plan
            .steps
            .iter()
            .filter(|s| s.run.is_some())
            .map(|s| LogLink {
                dir: dir.clone(),
                step: s.id.clone(),
            })
            .collect(),
    }
}

fn summary_row(r: &Row) -> SummaryRow {
    let unit = r
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let ratio_ci = match (r.ratio_ci95_low, r.ratio_ci95_high) {
        (Some(a), Some(b)) => format!(" [{:+.1}, {:+.1}]", (a - 1.0) * 100.0, (b - 1.0) * 100.0),
        _ => String::new(),
    };
    SummaryRow {
        workload: r.workload.clone(),
        mode: r.mode.clone(),
        variant: r.variant.clone(),
        metric: r.metric.clone(),
        n: format!("{}/{}", r.n_ok, r.n),
        mean: format!("{}{unit}", short(r.mean)),
        // No value: say why instead of a bare dash.
        error: r.error.clone().filter(|_| r.mean.is_none()),
        error_short: r.error.as_deref().map(|e| clip(e, 120)).unwrap_or_default(),
        ci: match (r.ci95_low, r.ci95_high) {
            (Some(a), Some(b)) => format!("{} – {}", short(Some(a)), short(Some(b))),
            _ => "—".into(),
        },
        median: short(r.median),
        std: short(r.std),
        vs: r
            .overhead_pct
            .map_or("—".into(), |o| format!("{o:+.1}%{ratio_ci}")),
        p: r.p_value.map_or("—".into(), |p| format!("{p:.3}")),
        vs_none: r
            .none_ratio
            .map_or("—".into(), |x| format!("{:+.1}%", (x - 1.0) * 100.0)),
        p_none: r.none_p_value.map_or("—".into(), |p| format!("{p:.3}")),
        sig: r.significant == Some(true) || r.none_significant == Some(true),
    }
}

fn run_view(run: &StoredRun, table: bool, metric_names: &[String]) -> RunView {
    let status = super::status_of(run.result.as_ref()).to_string();
    let r = run.result.as_ref();
    let cell = |name: &str| {
        let v = r.and_then(|r| r.metrics.get(name));
        MetricCell {
            name: name.to_string(),
            value: v
                .and_then(|v| v.value)
                .map(|x| {
                    format!(
                        "{}{}",
                        short(Some(x)),
                        v.and_then(|v| v.unit.as_deref())
                            .map(|u| format!(" {u}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "—".into()),
            error: v.and_then(|v| v.error.clone()),
        }
    };
    let (svg, timeline_error) = match (r, table) {
        (Some(r), false) => match timeline::draw(r) {
            Ok(s) => (s, None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let prefix = format!("runs/{}/", run.plan.id);
    RunView {
        id: run.plan.id.clone(),
        mode: run.plan.mode.clone(),
        variant: run.plan.variant.clone(),
        repetition: run.plan.repetition,
        class: class_of(&status),
        status,
        time: seconds(r.and_then(|r| r.duration_ms)),
        notes: run
            .plan
            .annotations
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        error: r.and_then(|r| r.first_error()),
        metrics: if table {
            Vec::new()
        } else {
            run.plan.metrics.iter().map(|m| cell(&m.name)).collect()
        },
        metric_cells: if table {
            metric_names.iter().map(|m| cell(m)).collect()
        } else {
            Vec::new()
        },
        svg,
        timeline_error,
        figures: if table {
            Vec::new()
        } else {
            images(&run.dir, &prefix)
        },
        logs: r
            .map(|r| {
                r.steps
                    .iter()
                    .filter(|s| s.started.is_some())
                    .map(|s| s.id.clone())
                    .collect()
            })
            .unwrap_or_default(),
    }
}
