//! The report's metric figures.
//!
//! For each workload and metric: a matrix key with numbers on a numeric x
//! axis (log scale when its values span a decade and a half or more), one line per
//! mode and per value of the other keys, small multiples (one panel per
//! value of a key) when that would be more than a few lines, axis titles
//! with units, and a legend outside the data (the page draws it). With
//! three values or more a point is the mean with its 95% CI; with fewer,
//! the values themselves. An interval reaching below zero for a quantity
//! that was never negative is cut at zero, and a note says so. Where modes
//! other than baseline exist, a second row of panels shows the ratio to
//! baseline with its CI.
//!
//! Deciding what goes where ([`layout`]) is pure; drawing is plotters.

use std::collections::BTreeMap;

use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::super::compare::short;
use super::super::order::{as_number, label, mode_rank, value_cmp};
use super::super::stats;
use super::super::summary::Row;

/// Series colours (Tableau 10), repeated with dashed lines past ten.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Lines in one panel at most before the figure splits into panels.
const MAX_SERIES: usize = 6;

/// Values of a numeric key spanning this factor (one and a half
/// decades) or more get a log axis.
const LOG_SPAN: f64 = 30.0;

/// One metric's figure.
#[derive(Debug, Serialize)]
pub struct Figure {
    pub workload: String,
    pub metric: String,
    pub panels: Vec<Panel>,
    /// The ratio to baseline, one panel per panel above; empty without
    /// other modes.
    pub overhead: Vec<Panel>,
    pub legend: Vec<LegendItem>,
    /// What the reader must know to read it right.
    pub notes: Vec<String>,
    /// Why it could not be drawn.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Panel {
    pub title: String,
    pub svg: String,
}

#[derive(Debug, Serialize)]
pub struct LegendItem {
    pub label: String,
    /// `#rrggbb`.
    pub color: String,
    pub dashed: bool,
}

/// Where each key of a metric's variants goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The numeric key on the x axis; none: variants as categories.
    pub x: Option<String>,
    pub log: bool,
    /// One panel per value of this key.
    pub facet: Option<String>,
    /// Keys told apart by line (besides the mode).
    pub series: Vec<String>,
    /// Keys with one value across the figure.
    pub constant: Vec<(String, String)>,
}

/// The keys of `rows`' variants, in the order their variants name them,
/// each with its distinct values in reading order.
fn keys(rows: &[&Row]) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for r in rows {
        for k in super::super::order::keys_in_order(&r.variant, &r.params) {
            let v = &r.params[k];
            match out.iter_mut().find(|(name, _)| name == k) {
                Some((_, vals)) => {
                    if !vals.iter().any(|x| x == v) {
                        vals.push(v.clone());
                    }
                }
                None => out.push((k.clone(), vec![v.clone()])),
            }
        }
    }
    for (_, vals) in &mut out {
        vals.sort_by(value_cmp);
    }
    out
}

/// Decides the axes, lines and panels of one metric's rows.
pub fn layout(rows: &[&Row]) -> Layout {
    let keys = keys(rows);
    let constant: Vec<(String, String)> = keys
        .iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(k, v)| (k.clone(), label(&v[0])))
        .collect();
    let varying: Vec<&(String, Vec<Value>)> = keys.iter().filter(|(_, v)| v.len() > 1).collect();
    // The numeric key with the most values (the first such on a tie).
    let x = varying
        .iter()
        .filter(|(_, v)| v.iter().all(|x| as_number(x).is_some()))
        .fold(None::<&&(String, Vec<Value>)>, |best, k| match best {
            Some(b) if b.1.len() >= k.1.len() => Some(b),
            _ => Some(k),
        });
    let log = x.is_some_and(|(_, v)| {
        let nums: Vec<f64> = v.iter().filter_map(as_number).collect();
        let (lo, hi) = nums
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        lo > 0.0 && hi / lo >= LOG_SPAN
    });
    let mut series: Vec<&(String, Vec<Value>)> = varying
        .iter()
        .filter(|k| x.is_none_or(|x| x.0 != k.0))
        .copied()
        .collect();
    let modes = rows
        .iter()
        .map(|r| r.mode.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let lines =
        |s: &[&(String, Vec<Value>)]| s.iter().map(|k| k.1.len()).product::<usize>() * modes;
    // Categories hold every other key; lines are the modes only.
    let mut facet = None;
    if x.is_none() {
        series.clear();
    } else if lines(&series) > MAX_SERIES && !series.is_empty() {
        // Panels by the key with the most values: the fewest lines left.
        let (i, _) = series
            .iter()
            .enumerate()
            .max_by_key(|(i, k)| (k.1.len(), usize::MAX - i))
            .unwrap_or((0, &series[0]));
        facet = Some(series.remove(i).0.clone());
    }
    Layout {
        x: x.map(|k| k.0.clone()),
        log,
        facet,
        series: series.iter().map(|k| k.0.clone()).collect(),
        constant,
    }
}

/// A drawn point: its x (transformed), mean, interval and values.
#[derive(Debug, Clone)]
struct Point {
    x: f64,
    mean: f64,
    interval: Option<(f64, f64)>,
    values: Vec<f64>,
}

/// One line: its legend index and points by x.
struct Line {
    color: usize,
    points: Vec<Point>,
}

/// A panel's lines, before drawing.
struct PanelData {
    title: String,
    lines: Vec<Line>,
    ratios: Vec<Line>,
}

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Every metric's figure, workloads and metrics in name order.
pub fn figures(rows: &[Row]) -> Vec<Figure> {
    let mut by_metric: BTreeMap<(&str, &str), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_metric
            .entry((r.workload.as_str(), r.metric.as_str()))
            .or_default()
            .push(r);
    }
    by_metric
        .into_iter()
        .filter(|(_, g)| g.iter().any(|r| r.mean.is_some()))
        .map(|((workload, metric), group)| {
            let mut fig = Figure {
                workload: workload.to_string(),
                metric: metric.to_string(),
                panels: Vec::new(),
                overhead: Vec::new(),
                legend: Vec::new(),
                notes: Vec::new(),
                error: None,
            };
            if let Err(e) = figure(&group, &mut fig) {
                fig.error = Some(e);
            }
            fig
        })
        .collect()
}

/// The key of a variant's value for `k`, as the label shows it.
fn value_of(r: &Row, k: &str) -> String {
    r.params.get(k).map(label).unwrap_or_default()
}

fn figure(group: &[&Row], fig: &mut Figure) -> Result<(), String> {
    let lay = layout(group);
    let unit = group.iter().find_map(|r| r.unit.clone());
    let nonneg = group.iter().all(|r| r.values.iter().all(|v| *v >= 0.0));
    // The x of each row: the numeric key's value (transformed), or the
    // index of its category.
    let mut categories: Vec<&Row> = Vec::new();
    if lay.x.is_none() {
        let mut seen: Vec<&Row> = group.to_vec();
        seen.sort_by(|a, b| {
            super::super::order::variant_cmp((&a.variant, &a.params), (&b.variant, &b.params))
        });
        for r in seen {
            if !categories.iter().any(|c| c.variant == r.variant) {
                categories.push(r);
            }
        }
    }
    let category_label = |r: &Row| -> String {
        let parts: Vec<String> = super::super::order::keys_in_order(&r.variant, &r.params)
            .into_iter()
            .filter(|k| !lay.constant.iter().any(|(c, _)| c == *k))
            .map(|k| format!("{k}={}", label(&r.params[k])))
            .collect();
        if parts.is_empty() {
            r.variant.clone()
        } else {
            parts.join(",")
        }
    };
    let x_of = |r: &Row| -> Option<f64> {
        match &lay.x {
            Some(k) => {
                let v = as_number(r.params.get(k)?)?;
                Some(if lay.log { v.log10() } else { v })
            }
            None => categories
                .iter()
                .position(|c| c.variant == r.variant)
                .map(|i| i as f64),
        }
    };
    // Lines: mode × series keys, in reading order; one legend entry each.
    let mut line_keys: Vec<(String, Vec<String>)> = Vec::new();
    let mut sorted: Vec<&Row> = group.to_vec();
    sorted.sort_by(|a, b| {
        mode_rank(&a.mode).cmp(&mode_rank(&b.mode)).then_with(|| {
            for k in &lay.series {
                let o = value_cmp(
                    a.params.get(k).unwrap_or(&Value::Null),
                    b.params.get(k).unwrap_or(&Value::Null),
                );
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        })
    });
    for r in &sorted {
        let key = (
            r.mode.clone(),
            lay.series.iter().map(|k| value_of(r, k)).collect(),
        );
        if !line_keys.contains(&key) {
            line_keys.push(key);
        }
    }
    let modes: std::collections::BTreeSet<&str> = group.iter().map(|r| r.mode.as_str()).collect();
    for (i, (mode, vals)) in line_keys.iter().enumerate() {
        let mut parts: Vec<String> = Vec::new();
        if modes.len() > 1 || lay.series.is_empty() {
            parts.push(mode.clone());
        }
        parts.extend(lay.series.iter().zip(vals).map(|(k, v)| format!("{k}={v}")));
        fig.legend.push(LegendItem {
            label: parts.join(" · "),
            color: hex(PALETTE[i % PALETTE.len()]),
            dashed: i >= PALETTE.len(),
        });
    }
    // Panels by the facet key's values.
    let facet_values: Vec<Option<Value>> = match &lay.facet {
        Some(k) => keys(group)
            .into_iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.into_iter().map(Some).collect())
            .unwrap_or_default(),
        None => vec![None],
    };
    // Baseline rows by variant, for the ratios.
    let baselines: BTreeMap<&str, &Row> = group
        .iter()
        .filter(|r| r.mode == "baseline")
        .map(|r| (r.variant.as_str(), *r))
        .collect();
    let mut clipped = Vec::new();
    let mut few = false;
    let mut panels: Vec<PanelData> = Vec::new();
    for fv in &facet_values {
        let mut data = PanelData {
            title: match (&lay.facet, fv) {
                (Some(k), Some(v)) => format!("{k}={}", label(v)),
                _ => String::new(),
            },
            lines: Vec::new(),
            ratios: Vec::new(),
        };
        for (li, (mode, vals)) in line_keys.iter().enumerate() {
            let mut pts = Vec::new();
            let mut ratios = Vec::new();
            for r in group.iter().filter(|r| {
                r.mode == *mode
                    && lay
                        .series
                        .iter()
                        .zip(vals)
                        .all(|(k, v)| value_of(r, k) == *v)
                    && match (&lay.facet, fv) {
                        (Some(k), Some(v)) => r.params.get(k) == Some(v),
                        _ => true,
                    }
            }) {
                let (Some(mean), Some(x)) = (r.mean, x_of(r)) else {
                    continue;
                };
                let interval = match (r.n_ok >= 3, r.ci95_low, r.ci95_high) {
                    (true, Some(lo), Some(hi)) => {
                        if nonneg && lo < 0.0 {
                            clipped.push(format!("{} (n={})", category_label(r), r.n_ok));
                            Some((0.0, hi))
                        } else {
                            Some((lo, hi))
                        }
                    }
                    _ => {
                        few = true;
                        None
                    }
                };
                pts.push(Point {
                    x,
                    mean,
                    interval,
                    values: if interval.is_none() {
                        r.values.clone()
                    } else {
                        Vec::new()
                    },
                });
                if r.mode != "baseline"
                    && let (Some(ratio), Some(base)) = (r.ratio, baselines.get(r.variant.as_str()))
                {
                    let interval = (r.n_ok >= 3 && base.n_ok >= 3)
                        .then(|| stats::ratio_ci95(&r.values, &base.values))
                        .flatten();
                    ratios.push(Point {
                        x,
                        mean: ratio,
                        interval,
                        values: Vec::new(),
                    });
                }
            }
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            ratios.sort_by(|a, b| a.x.total_cmp(&b.x));
            if !pts.is_empty() {
                data.lines.push(Line {
                    color: li,
                    points: pts,
                });
            }
            if !ratios.is_empty() {
                data.ratios.push(Line {
                    color: li,
                    points: ratios,
                });
            }
        }
        panels.push(data);
    }
    // One y range for all panels, so that they compare.
    let span = |lines: &mut dyn Iterator<Item = &Line>| {
        lines
            .flat_map(|l| &l.points)
            .flat_map(|p| {
                let mut v = vec![p.mean];
                if let Some((a, b)) = p.interval {
                    v.extend([a, b]);
                }
                v.extend(&p.values);
                v
            })
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            })
    };
    let y = padded(span(&mut panels.iter().flat_map(|p| &p.lines)), nonneg)?;
    let xs: Vec<f64> = {
        let mut v: Vec<f64> = panels
            .iter()
            .flat_map(|p| &p.lines)
            .flat_map(|l| l.points.iter().map(|p| p.x))
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let x_title = match &lay.x {
        Some(k) if lay.log => format!("{k} (log scale)"),
        Some(k) => k.clone(),
        None => "variant".into(),
    };
    let y_title = match &unit {
        Some(u) => format!("{} ({u})", fig.metric),
        None => fig.metric.clone(),
    };
    let cat_labels: Vec<String> = categories.iter().map(|r| category_label(r)).collect();
    let fmt_x = |v: f64| -> String {
        if lay.x.is_none() {
            return cat_labels
                .get(v.round() as usize)
                .cloned()
                .unwrap_or_default();
        }
        short(Some(if lay.log { 10f64.powf(v) } else { v }))
    };
    let size = if panels.len() > 1 {
        (420, 300)
    } else {
        ((300 + 90 * xs.len() as u32).clamp(560, 1000), 340)
    };
    for p in &panels {
        fig.panels.push(Panel {
            title: p.title.clone(),
            svg: draw(&Chart {
                size,
                xs: &xs,
                fmt_x: &fmt_x,
                y,
                x_title: &x_title,
                y_title: &y_title,
                lines: &p.lines,
                reference: None,
            })?,
        });
    }
    if panels.iter().any(|p| !p.ratios.is_empty()) {
        let (lo, hi) = span(&mut panels.iter().flat_map(|p| &p.ratios));
        let yr = padded((lo.min(1.0), hi.max(1.0)), false)?;
        for p in &panels {
            fig.overhead.push(Panel {
                title: p.title.clone(),
                svg: draw(&Chart {
                    size,
                    xs: &xs,
                    fmt_x: &fmt_x,
                    y: yr,
                    x_title: &x_title,
                    y_title: &format!("{} ÷ baseline", fig.metric),
                    lines: &p.ratios,
                    reference: Some(1.0),
                })?,
            });
        }
    }
    if !(lay.constant.is_empty() || lay.constant.len() == 1 && lay.x.is_none()) {
        fig.notes.push(format!(
            "every variant here has {}",
            lay.constant
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if few {
        fig.notes.push(
            "hollow dots are single runs: with fewer than 3 values a point shows the values, not an interval"
                .into(),
        );
    }
    if !clipped.is_empty() {
        clipped.dedup();
        fig.notes.push(format!(
            "the 95% CI of {} reaches below 0, which no run measured; it is drawn from 0",
            clipped.join(", ")
        ));
    }
    if group.iter().any(|r| r.mean.is_none()) {
        fig.notes.push(format!(
            "{} of {} variants have no value (see the summary)",
            group.iter().filter(|r| r.mean.is_none()).count(),
            group.len()
        ));
    }
    Ok(())
}

/// A y range around `(lo, hi)` with a margin; never below zero for a
/// quantity that was never negative; 0..1 for all zeros.
fn padded((lo, hi): (f64, f64), nonneg: bool) -> Result<(f64, f64), String> {
    if !lo.is_finite() || !hi.is_finite() {
        return Err("no values".into());
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else if hi != 0.0 {
        hi.abs() * 0.1
    } else {
        1.0
    };
    let mut y0 = lo - pad;
    if nonneg && y0 < 0.0 {
        y0 = 0.0;
    }
    Ok((y0, hi + pad))
}

/// What one panel draws.
struct Chart<'a> {
    size: (u32, u32),
    /// Every x of the figure (transformed): the ticks.
    xs: &'a [f64],
    fmt_x: &'a dyn Fn(f64) -> String,
    y: (f64, f64),
    x_title: &'a str,
    y_title: &'a str,
    lines: &'a [Line],
    /// A dashed horizontal line (the ratio 1).
    reference: Option<f64>,
}

/// A linear axis with its ticks at given values (the variants' own).
struct Ticked {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let f = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.5
        };
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

fn draw(c: &Chart) -> Result<String, String> {
    let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let (x0, x1) = match (c.xs.first(), c.xs.last()) {
        (Some(a), Some(b)) if b > a => {
            let pad = (b - a) * 0.06;
            (a - pad, b + pad)
        }
        (Some(a), _) => (a - 0.5, a + 0.5),
        _ => return Err("no values".into()),
    };
    // Lines at one x are set apart a little, so that intervals do not hide
    // each other.
    let gap = c.xs.windows(2).map(|w| w[1] - w[0]).fold(x1 - x0, f64::min);
    let n = c.lines.len().max(1) as f64;
    let width = (gap * 0.3).min((x1 - x0) * 0.04);
    let dodge = |i: usize| width * ((i as f64 + 0.5) / n - 0.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, c.size).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(46)
            .y_label_area_size(72)
            .build_cartesian_2d(
                Ticked {
                    range: x0..x1,
                    ticks: c.xs.to_vec(),
                },
                c.y.0..c.y.1,
            )
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(235, 235, 235))
            .x_label_formatter(&|v| (c.fmt_x)(*v))
            .y_label_formatter(&|v| short(Some(*v)))
            .x_desc(c.x_title)
            .y_desc(c.y_title)
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(e)?;
        if let Some(r) = c.reference {
            chart
                .draw_series(DashedLineSeries::new(
                    [(x0, r), (x1, r)],
                    6,
                    4,
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(e)?;
        }
        for (i, line) in c.lines.iter().enumerate() {
            let color = PALETTE[line.color % PALETTE.len()];
            let d = dodge(i);
            let pts: Vec<(f64, f64)> = line.points.iter().map(|p| (p.x + d, p.mean)).collect();
            if line.color >= PALETTE.len() {
                chart
                    .draw_series(DashedLineSeries::new(
                        pts.clone(),
                        5,
                        3,
                        color.stroke_width(2),
                    ))
                    .map_err(e)?;
            } else {
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(e)?;
            }
            for p in &line.points {
                let x = p.x + d;
                match p.interval {
                    Some((lo, hi)) => {
                        chart
                            .draw_series([ErrorBar::new_vertical(
                                x,
                                lo,
                                p.mean,
                                hi,
                                color.stroke_width(2),
                                10,
                            )])
                            .map_err(e)?;
                        chart
                            .draw_series([Circle::new((x, p.mean), 4, color.filled())])
                            .map_err(e)?;
                    }
                    None => {
                        chart
                            .draw_series(
                                p.values
                                    .iter()
                                    .map(|v| Circle::new((x, *v), 4, color.stroke_width(2))),
                            )
                            .map_err(e)?;
                        chart
                            .draw_series([Cross::new((x, p.mean), 4, color.stroke_width(2))])
                            .map_err(e)?;
                    }
                }
            }
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(mode: &str, params: Value, mean: f64, values: &[f64]) -> Row {
        let params = params.as_object().cloned().unwrap_or_default();
        let variant = params
            .iter()
            .map(|(k, v)| format!("{k}={}", label(v)))
            .collect::<Vec<_>>()
            .join(",");
        let d = stats::describe(values);
        Row {
            workload: "w".into(),
            mode: mode.into(),
            variant,
            params,
            metric: "latency".into(),
            unit: Some("ms".into()),
            n: values.len(),
            n_ok: values.len(),
            mean: Some(mean),
            ci95_low: d.and_then(|d| d.ci95).map(|c| c.0),
            ci95_high: d.and_then(|d| d.ci95).map(|c| c.1),
            values: values.to_vec(),
            ..Row::default()
        }
    }

    #[test]
    fn a_numeric_key_goes_on_the_x_axis_and_the_other_makes_lines() {
        let mut rows = Vec::new();
        for size in [4096, 64] {
            for count in [1000, 10, 100] {
                for mode in ["perf", "baseline"] {
                    rows.push(row(
                        mode,
                        json!({"size": size, "count": count, "host": "a"}),
                        1.0,
                        &[1.0, 1.0, 1.0],
                    ));
                }
            }
        }
        let refs: Vec<&Row> = rows.iter().collect();
        let lay = layout(&refs);
        assert_eq!(lay.x.as_deref(), Some("count"));
        assert!(lay.log, "10 to 1000 spans two decades");
        let few: Vec<Row> = [1, 20]
            .iter()
            .map(|n| row("baseline", json!({"n": n}), 1.0, &[1.0]))
            .collect();
        assert!(
            !layout(&few.iter().collect::<Vec<_>>()).log,
            "1 to 20 is linear"
        );
        assert_eq!(lay.series, ["size"]);
        assert_eq!(lay.facet, None);
        assert_eq!(lay.constant, [("host".to_string(), "a".to_string())]);
    }

    #[test]
    fn many_lines_become_panels_and_text_keys_become_categories() {
        let mut rows = Vec::new();
        for a in [1, 2, 3, 4] {
            for b in ["x", "y", "z"] {
                for n in [1, 2] {
                    rows.push(row(
                        "baseline",
                        json!({"a": a, "b": b, "n": n}),
                        1.0,
                        &[1.0],
                    ));
                }
            }
        }
        let refs: Vec<&Row> = rows.iter().collect();
        let lay = layout(&refs);
        assert_eq!(lay.x.as_deref(), Some("a"));
        assert!(!lay.log);
        // 3 × 2 = 6 lines fit; one more key value would not.
        assert_eq!(lay.facet, None);
        let text: Vec<Row> = ["red", "blue"]
            .iter()
            .map(|c| row("baseline", json!({"colour": c}), 1.0, &[1.0]))
            .collect();
        let refs: Vec<&Row> = text.iter().collect();
        assert_eq!(layout(&refs).x, None);
        let mut wide = Vec::new();
        for a in [1, 2] {
            for b in 0..4 {
                for m in ["baseline", "perf"] {
                    wide.push(row(m, json!({"a": a, "b": format!("k{b}")}), 1.0, &[1.0]));
                }
            }
        }
        let refs: Vec<&Row> = wide.iter().collect();
        let lay = layout(&refs);
        assert_eq!(lay.facet.as_deref(), Some("b"), "8 lines are too many");
        assert!(lay.series.is_empty());
    }

    #[test]
    fn few_values_are_drawn_as_points_and_impossible_intervals_are_cut_and_said() {
        let rows = vec![
            row("baseline", json!({"n": 1}), 0.4, &[0.0, 0.0, 1.2]),
            row("baseline", json!({"n": 10}), 1.0, &[1.0, 1.0]),
        ];
        let figs = figures(&rows);
        assert_eq!(figs.len(), 1);
        let f = &figs[0];
        assert_eq!(f.error, None);
        assert_eq!(f.panels.len(), 1);
        assert!(f.overhead.is_empty());
        let notes = f.notes.join("\n");
        assert!(notes.contains("fewer than 3 values"), "{notes}");
        assert!(notes.contains("reaches below 0"), "{notes}");
        let svg = &f.panels[0].svg;
        assert!(svg.contains("latency (ms)"), "the y title with its unit");
        assert!(
            svg.contains(">n<") || svg.contains(">\nn\n<"),
            "the x title: {svg}"
        );
    }

    #[test]
    fn other_modes_get_a_ratio_panel() {
        let rows = vec![
            row("baseline", json!({"n": 1}), 10.0, &[9.0, 10.0, 11.0]),
            Row {
                ratio: Some(1.2),
                ..row("perf", json!({"n": 1}), 12.0, &[11.0, 12.0, 13.0])
            },
            row("baseline", json!({"n": 2}), 10.0, &[9.0, 10.0, 11.0]),
        ];
        let figs = figures(&rows);
        assert_eq!(figs[0].overhead.len(), 1);
        assert!(figs[0].overhead[0].svg.contains("latency ÷ baseline"));
        let labels: Vec<&str> = figs[0].legend.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["baseline", "perf"]);
    }
}
