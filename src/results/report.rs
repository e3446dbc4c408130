//! `report.html`: one self-contained page (inline CSS and SVG, no script,
//! nothing fetched) with the summary table, a plot per metric (mean and 95%
//! CI by variant, one series per mode), and a timeline of each run's steps
//! per host on the controller's clock. Plots are drawn with `plotters`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use plotters::prelude::*;

use super::StoredRun;
use super::compare::short;
use super::summary::Row;
use crate::artifact::run_result::{RunResult, StepStatus};

/// Timelines drawn at most; later runs are listed with links only.
pub const MAX_TIMELINES: usize = 100;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}\
table{border-collapse:collapse;font-size:13px;margin:1em 0}\
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}\
th:nth-child(-n+4),td:nth-child(-n+4){text-align:left}\
tr.sig td{background:#fff4e0}\
.err{color:#b00020;text-align:left}\
.passed{color:#2a7d2a}.failed{color:#b00020}.other{color:#666}\
section.run{margin:1.5em 0;border-top:1px solid #eee;padding-top:.5em}\
svg{max-width:100%;height:auto}\
.muted{color:#666;font-size:13px}\
code{font-size:12px}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `s` cut to `n` characters, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

/// The whole page.
pub fn render(
    artifact_id: &str,
    suite: &str,
    runs: &[StoredRun],
    rows: &[Row],
    phases: &[StoredRun],
) -> String {
    let mut h = String::new();
    let passed = runs
        .iter()
        .filter(|r| {
            r.result
                .as_ref()
                .is_some_and(|x| x.status.as_str() == "passed")
        })
        .count();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{CSS}</style></head><body>\n\
         <h1>{title}</h1>\n<p class=\"muted\">suite <b>{suite}</b> · {n} runs, {passed} passed · \
         <a href=\"summary.csv\">summary.csv</a> · <a href=\"runs.csv\">runs.csv</a></p>\n",
        title = esc(artifact_id),
        suite = esc(suite),
        n = runs.len(),
    );
    code(&mut h, runs);
    phase_table(&mut h, phases);
    summary_table(&mut h, rows);
    plots(&mut h, rows);
    timelines(&mut h, runs);
    h.push_str("</body></html>\n");
    h
}

/// The code the runs ran: each source's commit and state, the mutations'
/// patches, and the notes on the runs.
fn code(h: &mut String, runs: &[StoredRun]) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut lines = Vec::new();
    for r in runs {
        for (name, s) in &r.plan.sources {
            let what = match &s.mutation {
                Some(m) => format!(
                    "mutation <b>{}</b>: {}",
                    esc(m),
                    s.patches
                        .iter()
                        .map(|p| format!(
                            "{} (sha256 {})",
                            esc(&p.file),
                            esc(&p.sha256[..12.min(p.sha256.len())])
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "unpatched".into(),
            };
            if seen.insert((name.clone(), what.clone())) {
                lines.push(format!(
                    "<li><b>{}</b> at <code>{}</code>{} · {what}</li>",
                    esc(name),
                    esc(&s.commit[..12.min(s.commit.len())]),
                    if s.dirty {
                        " with uncommitted changes (<a href=\"sources/\">sources/</a>)"
                    } else {
                        ""
                    },
                ));
            }
        }
    }
    let mut notes: BTreeSet<(String, String)> = BTreeSet::new();
    for r in runs {
        for (k, v) in &r.plan.annotations {
            notes.insert((k.clone(), v.clone()));
        }
    }
    if lines.is_empty() && notes.is_empty() {
        return;
    }
    h.push_str("<h2>Code</h2>\n");
    if !lines.is_empty() {
        let _ = writeln!(h, "<ul>{}</ul>", lines.join(""));
    }
    if !notes.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"muted\">annotations: {}</p>",
            notes
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect::<Vec<_>>()
                .join(" · ")
        );
    }
}

/// Setup and teardown instances: status, time, the first error, logs.
fn phase_table(h: &mut String, phases: &[StoredRun]) {
    if phases.is_empty() {
        return;
    }
    h.push_str("<h2>Setup and teardown</h2>\n<table><tr><th>instance</th><th>host</th><th>status</th><th>time</th><th>logs</th></tr>\n");
    for p in phases {
        let kind = &p.plan.workload;
        let id = esc(&p.plan.id);
        let (status, secs, err) = match &p.result {
            Some(r) => (
                r.status.as_str(),
                r.duration_ms
                    .map_or("—".into(), |d| format!("{:.1} s", d as f64 / 1000.0)),
                r.first_error(),
            ),
            None => ("not run", "—".into(), None),
        };
        let logs: Vec<String> = p
            .plan
            .steps
            .iter()
            .filter(|s| s.run.is_some())
            .map(|s| {
                let sid = esc(&s.id);
                format!(
                    "<a href=\"{kind}/{id}/logs/{sid}.out\">out</a> <a href=\"{kind}/{id}/logs/{sid}.err\">err</a>"
                )
            })
            .collect();
        let cls = match status {
            "passed" => "passed",
            "failed" => "failed",
            _ => "other",
        };
        let _ = writeln!(
            h,
            "<tr><td>{id}</td><td>{}</td><td class=\"{cls}\">{status}{}</td><td>{secs}</td><td>{}</td></tr>",
            esc(&p.plan.hosts.join(", ")),
            err.map(|e| format!(": {}", esc(&clip(&e, 200))))
                .unwrap_or_default(),
            logs.join(" · "),
        );
    }
    h.push_str("</table>\n");
}

fn summary_table(h: &mut String, rows: &[Row]) {
    h.push_str("<h2>Summary</h2>\n");
    if rows.is_empty() {
        h.push_str("<p class=\"muted\">No metrics: the workloads declare none.</p>\n");
        return;
    }
    let mutations = rows
        .iter()
        .any(|r| super::summary::mutation_of(&r.variant).is_some());
    let _ = writeln!(
        h,
        "<table><tr><th>workload</th><th>mode</th><th>variant</th><th>metric</th><th>n</th>\
         <th>mean</th><th>95% CI</th><th>median</th><th>std</th><th>vs baseline</th><th>p</th>{}</tr>",
        if mutations {
            "<th>vs none</th><th>p (none)</th>"
        } else {
            ""
        }
    );
    for r in rows {
        let unit = r
            .unit
            .as_deref()
            .map(|u| format!(" {}", esc(u)))
            .unwrap_or_default();
        let ci = match (r.ci95_low, r.ci95_high) {
            (Some(a), Some(b)) => format!("{} – {}", short(Some(a)), short(Some(b))),
            _ => "—".into(),
        };
        let vs = r.overhead_pct.map_or("—".into(), |o| format!("{o:+.1}%"));
        // No value: say why instead of a bare dash.
        let mean = match (r.mean, &r.error) {
            (None, Some(e)) => format!(
                "<span class=\"err\" title=\"{}\">no value: {}</span>",
                esc(e),
                esc(&clip(e, 120))
            ),
            (m, _) => format!("{}{unit}", short(m)),
        };
        let vs_none = if mutations {
            format!(
                "<td>{}</td><td>{}</td>",
                r.none_ratio
                    .map_or("—".into(), |x| format!("{:+.1}%", (x - 1.0) * 100.0)),
                r.none_p_value.map_or("—".into(), |p| format!("{p:.3}"))
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<tr{cls}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{mean}</td>\
             <td>{ci}</td><td>{}</td><td>{}</td><td>{vs}</td><td>{}</td>{vs_none}</tr>",
            esc(&r.workload),
            esc(&r.mode),
            esc(&r.variant),
            esc(&r.metric),
            r.n_ok,
            r.n,
            short(r.median),
            short(r.std),
            r.p_value.map_or("—".into(), |p| format!("{p:.3}")),
            cls = if r.significant == Some(true) || r.none_significant == Some(true) {
                " class=\"sig\""
            } else {
                ""
            },
        );
    }
    h.push_str(
        "</table>\n<p class=\"muted\">CI: Student's t over the repetitions that passed. \
         p: Welch's two-sided t-test against baseline at the same variant (and, for a mutation, \
         against <code>none</code> at the same mode and params); highlighted rows differ at p &lt; 0.05.</p>\n",
    );
}

fn plots(h: &mut String, rows: &[Row]) {
    let mut by_metric: BTreeMap<(&str, &str), Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.mean.is_some()) {
        by_metric
            .entry((r.workload.as_str(), r.metric.as_str()))
            .or_default()
            .push(r);
    }
    if by_metric.is_empty() {
        return;
    }
    h.push_str("<h2>Metrics</h2>\n");
    for ((workload, metric), group) in by_metric {
        let _ = writeln!(h, "<h3>{} · {}</h3>", esc(workload), esc(metric));
        match metric_plot(&group) {
            Ok(svg) => h.push_str(&svg),
            Err(e) => {
                let _ = writeln!(h, "<p class=\"failed\">cannot draw: {}</p>", esc(&e));
            }
        }
    }
}

/// Mean with its 95% CI (or min–max for one repetition) per variant, one
/// series per mode, side by side.
fn metric_plot(group: &[&Row]) -> Result<String, String> {
    let variants: Vec<&str> = group
        .iter()
        .map(|r| r.variant.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut modes: Vec<&str> = group
        .iter()
        .map(|r| r.mode.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    modes.sort_by_key(|m| (*m != "baseline", *m));
    let bars: Vec<(f64, f64, f64, f64, usize)> = group
        .iter()
        .filter_map(|r| {
            let mean = r.mean?;
            let (lo, hi) = match (r.ci95_low, r.ci95_high) {
                (Some(a), Some(b)) => (a, b),
                _ => (r.min.unwrap_or(mean), r.max.unwrap_or(mean)),
            };
            let vi = variants.iter().position(|v| *v == r.variant)?;
            let mi = modes.iter().position(|m| *m == r.mode)?;
            let width = 0.6 / modes.len() as f64;
            let x = vi as f64 - 0.3 + width * (mi as f64 + 0.5);
            Some((x, lo, mean, hi, mi))
        })
        .collect();
    let (mut y0, mut y1) = bars.iter().fold(
        (f64::INFINITY, f64::NEG_INFINITY),
        |(a, b), &(_, lo, _, hi, _)| (a.min(lo), b.max(hi)),
    );
    if !y0.is_finite() || !y1.is_finite() {
        return Err("no values".into());
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.1
    } else if y1 != 0.0 {
        y1.abs() * 0.1
    } else {
        1.0
    };
    y0 -= pad;
    y1 += pad;
    let unit = group
        .iter()
        .find_map(|r| r.unit.clone())
        .unwrap_or_default();
    let mut svg = String::new();
    {
        let width = (260 + 120 * variants.len() as u32).min(1100);
        let root = SVGBackend::with_string(&mut svg, (width, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = variants.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..(n - 0.5), y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(variants.len().max(2))
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    variants
                        .get(i as usize)
                        .map_or(String::new(), |v| (*v).to_string())
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| short(Some(*y)))
            .y_desc(unit)
            .draw()
            .map_err(|e| e.to_string())?;
        for (mi, mode) in modes.iter().enumerate() {
            let color = PALETTE[mi % PALETTE.len()];
            let mine: Vec<_> = bars.iter().filter(|b| b.4 == mi).collect();
            chart
                .draw_series(mine.iter().map(|&&(x, lo, mean, hi, _)| {
                    ErrorBar::new_vertical(x, lo, mean, hi, color.stroke_width(2), 10)
                }))
                .map_err(|e| e.to_string())?
                .label(*mode)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled())
                });
            chart
                .draw_series(
                    mine.iter()
                        .map(|&&(x, _, mean, _, _)| Circle::new((x, mean), 4, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// One bar of a timeline: lane, start and end (seconds from the run's
/// start), status, label.
struct Bar {
    lane: usize,
    start: f64,
    end: f64,
    status: StepStatus,
    label: String,
}

fn timelines(h: &mut String, runs: &[StoredRun]) {
    h.push_str("<h2>Runs</h2>\n");
    for (i, run) in runs.iter().enumerate() {
        let id = esc(&run.plan.id);
        let status = run
            .result
            .as_ref()
            .map_or("not started", |r| r.status.as_str());
        let cls = match status {
            "passed" => "passed",
            "failed" => "failed",
            _ => "other",
        };
        let _ = writeln!(
            h,
            "<section class=\"run\" id=\"{id}\"><h3>{id} <span class=\"{cls}\">{status}</span></h3>\
             <p class=\"muted\">mode {} · variant {} · repetition {}{notes} · \
             <a href=\"runs/{id}/run_result.json\">run_result.json</a> · \
             <a href=\"runs/{id}/events.jsonl\">events</a> · <a href=\"runs/{id}/fetch.log\">fetch.log</a></p>",
            esc(&run.plan.mode),
            esc(&run.plan.variant),
            run.plan.repetition,
            notes = run
                .plan
                .annotations
                .iter()
                .map(|(k, v)| format!(" · {}={}", esc(k), esc(v)))
                .collect::<String>(),
        );
        if let Some(r) = &run.result {
            if let Some(e) = r.first_error() {
                let _ = writeln!(h, "<p class=\"failed\">{}</p>", esc(&e));
            }
            if i < MAX_TIMELINES {
                match timeline(r) {
                    Ok(Some(svg)) => h.push_str(&svg),
                    Ok(None) => {}
                    Err(e) => {
                        let _ = writeln!(h, "<p class=\"failed\">cannot draw: {}</p>", esc(&e));
                    }
                }
            }
            h.push_str("<p class=\"muted\">logs: ");
            let links: Vec<String> = r
                .steps
                .iter()
                .filter(|s| s.started.is_some())
                .map(|s| {
                    let sid = esc(&s.id);
                    format!(
                        "{sid} (<a href=\"runs/{id}/logs/{sid}.out\">out</a>, \
                         <a href=\"runs/{id}/logs/{sid}.err\">err</a>)"
                    )
                })
                .collect();
            h.push_str(&links.join(" · "));
            h.push_str("</p>");
        }
        h.push_str("</section>\n");
    }
    if runs.len() > MAX_TIMELINES {
        let _ = writeln!(
            h,
            "<p class=\"muted\">Timelines are drawn for the first {MAX_TIMELINES} runs.</p>"
        );
    }
}

/// Steps per host, on the controller's clock; remote steps at their
/// host's times corrected by the measured clock offset where there are.
fn timeline(r: &RunResult) -> Result<Option<String>, String> {
    let t0 = r.started.wall_ns as f64;
    let mut lanes: Vec<String> = Vec::new();
    let mut bars = Vec::new();
    for s in &r.steps {
        let (Some(st), Some(en)) = (s.started, s.ended) else {
            continue;
        };
        let (mut a, mut b) = (st.wall_ns as f64, en.wall_ns as f64);
        if let Some(t) = &s.host_times {
            a = t.started_ns.map_or(a, |x| x as f64);
            b = t.ended_ns.map_or(b, |x| x as f64);
        }
        let lane = match lanes.iter().position(|l| *l == s.host) {
            Some(i) => i,
            None => {
                lanes.push(s.host.clone());
                lanes.len() - 1
            }
        };
        bars.push(Bar {
            lane,
            start: (a - t0) / 1e9,
            end: ((b - t0) / 1e9).max((a - t0) / 1e9),
            status: s.status,
            label: s.step.clone(),
        });
    }
    if bars.is_empty() {
        return Ok(None);
    }
    let span = bars
        .iter()
        .map(|b| b.end)
        .fold(r.duration_ms.map_or(0.0, |d| d as f64 / 1000.0), f64::max)
        .max(0.001);
    let t_min = bars.iter().map(|b| b.start).fold(0.0, f64::min);
    let lanes_n = lanes.len();
    let mut svg = String::new();
    {
        let height = 60 + 34 * lanes_n as u32;
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(110)
            .build_cartesian_2d(t_min..span * 1.02, 0.0..lanes_n as f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(lanes_n * 2 + 1)
            .y_label_formatter(&|y| {
                let i = y - 0.5;
                if (i - i.round()).abs() < 1e-6 && i >= 0.0 {
                    lanes.get(i.round() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("seconds from the run's start")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(bars.iter().map(|b| {
                let color = match b.status {
                    StepStatus::Passed => PALETTE[0],
                    StepStatus::Failed => PALETTE[3],
                    StepStatus::Interrupted | StepStatus::Cancelled => PALETTE[1],
                    _ => RGBColor(150, 150, 150),
                };
                let y = b.lane as f64;
                Rectangle::new(
                    [
                        (b.start, y + 0.2),
                        (b.end.max(b.start + span / 500.0), y + 0.8),
                    ],
                    color.mix(0.75).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(bars.iter().map(|b| {
                Text::new(
                    b.label.clone(),
                    (b.start, b.lane as f64 + 0.95),
                    ("sans-serif", 11).into_font(),
                )
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(Some(svg))
}
