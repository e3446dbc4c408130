//! A run's timeline: one lane per host, a bar per step coloured by its
//! kind, readiness marked with a tick, failures outlined in red and
//! labelled, the run's own setup (before its first step) on the
//! controller's lane. Remote steps sit at their host's times corrected by
//! the measured clock offsets, so every bar is on the controller's clock.
//! Labels that would collide go to a row of their own within the lane.

use plotters::prelude::*;

use crate::artifact::run_result::{RunResult, StepStatus};
use crate::suite::raw::StepKind;

/// The colour of each step kind, and of the run's setup.
pub const KINDS: [(&str, RGBColor); 6] = [
    ("setup", RGBColor(190, 190, 190)),
    ("task", RGBColor(31, 119, 180)),
    ("service", RGBColor(44, 160, 44)),
    ("monitor", RGBColor(148, 103, 189)),
    ("fetch", RGBColor(255, 127, 14)),
    ("analyze", RGBColor(140, 86, 75)),
];

const FAILED: RGBColor = RGBColor(200, 0, 30);

fn kind_color(kind: &str) -> RGBColor {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(RGBColor(150, 150, 150), |(_, c)| *c)
}

/// One bar: lane, row within it, start and end in seconds from the run's
/// start, when it became ready, kind, whether it failed, label.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub lane: usize,
    pub row: usize,
    pub start: f64,
    pub end: f64,
    pub ready: Option<f64>,
    pub kind: &'static str,
    pub failed: bool,
    pub label: String,
}

/// Width of the plotting area in pixels, and of a label's character.
const PLOT_PX: f64 = 860.0;
const CHAR_PX: f64 = 6.5;

/// The bars of `r`, and the lanes' names and row counts.
pub fn bars(r: &RunResult) -> (Vec<Bar>, Vec<(String, usize)>) {
    let t0 = r.started.wall_ns as f64;
    let mut lanes: Vec<(String, usize)> = Vec::new();
    let mut out: Vec<Bar> = Vec::new();
    let lane_of =
        |lanes: &mut Vec<(String, usize)>, host: &str| match lanes.iter().position(|l| l.0 == host)
        {
            Some(i) => i,
            None => {
                lanes.push((host.to_string(), 1));
                lanes.len() - 1
            }
        };
    let first = r
        .steps
        .iter()
        .filter_map(|s| s.started.map(|x| x.wall_ns))
        .min();
    if let Some(f) = first
        && f as f64 > t0
    {
        let lane = lane_of(&mut lanes, "controller");
        out.push(Bar {
            lane,
            row: 0,
            start: 0.0,
            end: (f as f64 - t0) / 1e9,
            ready: None,
            kind: "setup",
            failed: false,
            label: "setup".into(),
        });
    }
    for s in &r.steps {
        let (Some(st), Some(en)) = (s.started, s.ended.or(r.ended)) else {
            continue;
        };
        let (mut a, mut b) = (st.wall_ns as f64, en.wall_ns as f64);
        if let Some(t) = &s.host_times {
            a = t.started_ns.map_or(a, |x| x as f64);
            b = t.ended_ns.map_or(b, |x| x as f64);
        }
        let lane = lane_of(&mut lanes, &s.host);
        let failed = s.status == StepStatus::Failed;
        out.push(Bar {
            lane,
            row: 0,
            start: (a - t0) / 1e9,
            end: ((b - t0) / 1e9).max((a - t0) / 1e9),
            ready: match s.kind {
                StepKind::Service => s.ready.map(|x| (x.wall_ns as f64 - t0) / 1e9),
                _ => None,
            },
            kind: s.kind.as_str(),
            failed,
            label: if failed {
                format!("✗ {}", s.step)
            } else {
                s.step.clone()
            },
        });
    }
    // Rows within a lane: a bar goes to the first row where neither it nor
    // its label overlaps what is there.
    let (t_min, span) = extent(&out, r);
    let px = |t: f64| (t - t_min) / span * PLOT_PX;
    for (lane, rows) in lanes.iter_mut().enumerate() {
        let mut ends: Vec<f64> = Vec::new();
        let mut mine: Vec<&mut Bar> = out.iter_mut().filter(|b| b.lane == lane).collect();
        mine.sort_by(|a, b| a.start.total_cmp(&b.start));
        for b in mine {
            let from = px(b.start);
            let to = px(b.end).max(from + b.label.chars().count() as f64 * CHAR_PX + 8.0);
            let row = ends.iter().position(|e| *e <= from).unwrap_or(ends.len());
            if row == ends.len() {
                ends.push(to);
            } else {
                ends[row] = to;
            }
            b.row = row;
        }
        rows.1 = ends.len().max(1);
    }
    (out, lanes)
}

/// The first instant drawn and the span of the axis, in seconds.
fn extent(bars: &[Bar], r: &RunResult) -> (f64, f64) {
    let t_min = bars.iter().map(|b| b.start).fold(0.0, f64::min);
    let t_max = bars
        .iter()
        .map(|b| b.end)
        .fold(r.duration_ms.map_or(0.0, |d| d as f64 / 1000.0), f64::max);
    (t_min, (t_max - t_min).max(0.001) * 1.02)
}

/// The SVG of `r`'s timeline; none when no step started.
pub fn draw(r: &RunResult) -> Result<Option<String>, String> {
    let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let (bars, lanes) = bars(r);
    if bars.is_empty() {
        return Ok(None);
    }
    let (t_min, span) = extent(&bars, r);
    // Each lane's first row, from the top.
    let mut offsets = Vec::new();
    let mut total = 0usize;
    for (_, rows) in &lanes {
        offsets.push(total);
        total += rows;
    }
    let row_px = 22u32;
    let mut svg = String::new();
    {
        let height = 56 + row_px * total as u32;
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(6)
            .margin_right(14)
            .x_label_area_size(34)
            .y_label_area_size(110)
            .build_cartesian_2d(t_min..t_min + span, 0.0..total as f64)
            .map_err(e)?;
        // A lane's name sits at its first row.
        let names: Vec<(f64, String)> = lanes
            .iter()
            .zip(&offsets)
            .map(|((name, _), o)| (total as f64 - *o as f64 - 0.5, name.clone()))
            .collect();
        lane_mesh(
            &mut chart,
            total,
            &names,
            "seconds from the run's start (controller's clock)",
        )?;
        let y_of = |b: &Bar| total as f64 - (offsets[b.lane] + b.row) as f64 - 1.0;
        let min_w = span / 400.0;
        chart
            .draw_series(bars.iter().map(|b| {
                let y = y_of(b);
                Rectangle::new(
                    [(b.start, y + 0.15), (b.end.max(b.start + min_w), y + 0.6)],
                    kind_color(b.kind).mix(0.85).filled(),
                )
            }))
            .map_err(e)?;
        chart
            .draw_series(bars.iter().filter(|b| b.failed).map(|b| {
                let y = y_of(b);
                Rectangle::new(
                    [(b.start, y + 0.15), (b.end.max(b.start + min_w), y + 0.6)],
                    FAILED.stroke_width(2),
                )
            }))
            .map_err(e)?;
        // Readiness: a black tick across the bar.
        chart
            .draw_series(bars.iter().filter_map(|b| {
                let t = b.ready?;
                let y = y_of(b);
                Some(PathElement::new(
                    [(t, y + 0.05), (t, y + 0.7)],
                    BLACK.stroke_width(2),
                ))
            }))
            .map_err(e)?;
        chart
            .draw_series(bars.iter().map(|b| {
                let style =
                    ("sans-serif", 11)
                        .into_font()
                        .color(if b.failed { &FAILED } else { &BLACK });
                Text::new(b.label.clone(), (b.start, y_of(b) + 0.98), style)
            }))
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(Some(svg))
}

/// The grid and axes of a chart of `rows` lanes: each lane named at its
/// `names` position on the y axis, no horizontal grid lines.
pub(super) fn lane_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    rows: usize,
    names: &[(f64, String)],
    x_desc: &str,
) -> Result<(), String> {
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(238, 238, 238))
        .y_labels(rows * 2 + 1)
        .y_label_formatter(&|y| {
            names
                .iter()
                .find(|(at, _)| (at - y).abs() < 1e-6)
                .map(|(_, n)| n.clone())
                .unwrap_or_default()
        })
        .x_desc(x_desc)
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    type StepRow<'a> = (
        &'a str,
        &'a str,
        StepKind,
        u64,
        u64,
        Option<u64>,
        StepStatus,
    );

    fn result(steps: &[StepRow]) -> RunResult {
        let mut v: serde_json::Value = serde_json::json!({
            "schema_version": 1, "id": "r", "workload": "w", "mode": "baseline",
            "variant": "default", "repetition": 1, "status": "passed",
            "started": {"wall_ns": 1_000_000_000u64, "mono_ns": 0},
            "duration_ms": 10_000, "steps": [], "fetch": {"files": 0, "bytes": 0, "missing": 0}
        });
        let stamp = |s: u64| serde_json::json!({"wall_ns": s * 1_000_000_000, "mono_ns": 0});
        for (step, host, kind, a, b, ready, status) in steps {
            let mut s = serde_json::json!({
                "id": format!("{step}@{host}"), "step": step, "host": host,
                "kind": kind.as_str(), "status": status, "attempts": 1,
                "started": stamp(*a), "ended": stamp(*b),
            });
            if let Some(r) = ready {
                s["ready"] = stamp(*r);
            }
            if let Some(x) = v["steps"].as_array_mut() {
                x.push(s);
            }
        }
        serde_json::from_value(v)
            .map_err(|e| e.to_string())
            .expect("a run result")
    }

    #[test]
    fn bars_are_coloured_by_kind_and_collisions_get_their_own_row() {
        let r = result(&[
            (
                "server",
                "a",
                StepKind::Service,
                2,
                10,
                Some(3),
                StepStatus::Passed,
            ),
            (
                "load-generator-1",
                "b",
                StepKind::Task,
                3,
                4,
                None,
                StepStatus::Passed,
            ),
            (
                "load-generator-2",
                "b",
                StepKind::Task,
                4,
                5,
                None,
                StepStatus::Failed,
            ),
            (
                "collect",
                "a",
                StepKind::Fetch,
                10,
                11,
                None,
                StepStatus::Passed,
            ),
        ]);
        let (bars, lanes) = bars(&r);
        let names: Vec<&str> = lanes.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(names, ["controller", "a", "b"], "the run's setup first");
        assert_eq!(bars[0].kind, "setup");
        assert_eq!(bars[0].end, 1.0);
        let server = &bars[1];
        assert_eq!((server.kind, server.ready), ("service", Some(2.0)));
        // The two short tasks on b: the second's bar starts where the
        // first's label still is.
        let (g1, g2) = (&bars[2], &bars[3]);
        assert_eq!((g1.row, g2.row), (0, 1));
        assert!(g2.failed && g2.label.starts_with('✗'));
        assert_eq!(lanes[2].1, 2);
        let svg = draw(&r).expect("drawn").expect("some steps");
        assert!(svg.contains("seconds from the run"), "the axis title");
    }
}
