//! A run's merged timeline (`analysis/timeline.csv`, see
//! [`crate::results::timeline`]) drawn for the report: a lane per host, a
//! colour per source, on the controller's clock.

use std::path::Path;

use plotters::prelude::*;

use crate::results::timeline::TIMELINE_CSV;

/// Events drawn at most; past that, every k-th.
const MAX_DRAWN: usize = 4000;

/// An error bound for people: `0 ns`, `35 µs`, `1.2 ms`.
fn bound_text(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{} µs", crate::results::compare::short(Some(v / 1e3)))
    } else if ns < 1_000_000_000 {
        format!("{} ms", crate::results::compare::short(Some(v / 1e6)))
    } else {
        format!("{} s", crate::results::compare::short(Some(v / 1e9)))
    }
}

/// A run's merged timeline, drawn for the report.
#[derive(Debug, serde::Serialize)]
pub struct Drawn {
    pub run: String,
    pub svg: Option<String>,
    pub caption: String,
}

/// Draws `analysis/timeline.csv` of the run in `dir`, when there is one:
/// a lane per host, a colour per source, on the controller's clock.
pub fn drawn(dir: &Path, id: &str) -> Option<Drawn> {
    let bytes = std::fs::read(dir.join(TIMELINE_CSV)).ok()?;
    let mut rd = csv::Reader::from_reader(bytes.as_slice());
    let headers = rd.headers().ok()?.clone();
    let col = |n: &str| headers.iter().position(|h| h == n);
    let (hi, si, ci, bi) = (
        col("host")?,
        col("source")?,
        col("corrected_ns")?,
        col("bound_ns")?,
    );
    let mut points: Vec<(String, String, i128)> = Vec::new();
    let mut max_bound = 0u64;
    for rec in rd.records().map_while(Result::ok) {
        let (Some(h), Some(s), Some(c)) = (rec.get(hi), rec.get(si), rec.get(ci)) else {
            continue;
        };
        let Ok(c) = c.parse::<i128>() else { continue };
        max_bound = max_bound.max(rec.get(bi).and_then(|b| b.parse().ok()).unwrap_or(0));
        points.push((h.to_string(), s.to_string(), c));
    }
    let n = points.len();
    let hosts: std::collections::BTreeSet<&str> = points.iter().map(|p| p.0.as_str()).collect();
    let mut caption = format!(
        "{n} events from {} host{} on the controller's clock; every corrected time is within ±{} of it",
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" },
        bound_text(max_bound),
    );
    let step = n.div_ceil(MAX_DRAWN).max(1);
    if step > 1 {
        caption.push_str(&format!("; every {step}th event is drawn"));
    }
    let svg = match draw(&points, step) {
        Ok(s) => Some(s),
        Err(e) => {
            caption.push_str(&format!("; cannot draw: {e}"));
            None
        }
    };
    Some(Drawn {
        run: id.to_string(),
        svg,
        caption,
    })
}

fn draw(points: &[(String, String, i128)], step: usize) -> Result<String, String> {
    let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    let Some(t0) = points.iter().map(|p| p.2).min() else {
        return Err("no events".into());
    };
    let t1 = points.iter().map(|p| p.2).max().unwrap_or(t0);
    let span = ((t1 - t0) as f64 / 1e9).max(1e-6);
    let mut lanes: Vec<&str> = points.iter().map(|p| p.0.as_str()).collect();
    lanes.sort();
    lanes.dedup();
    let mut sources: Vec<&str> = points.iter().map(|p| p.1.as_str()).collect();
    sources.sort();
    sources.dedup();
    let palette = super::plot::PALETTE;
    let mut svg = String::new();
    {
        let height = 70 + 30 * lanes.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (1000, height)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (plot, legend) = root.split_horizontally(860);
        let mut chart = ChartBuilder::on(&plot)
            .margin(6)
            .x_label_area_size(34)
            .y_label_area_size(110)
            .build_cartesian_2d(-span * 0.01..span * 1.01, 0.0..lanes.len() as f64)
            .map_err(e)?;
        let names: Vec<(f64, String)> = lanes
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64 + 0.5, (*l).to_string()))
            .collect();
        super::timeline::lane_mesh(
            &mut chart,
            lanes.len(),
            &names,
            "seconds from the first event (controller's clock, corrected)",
        )?;
        // Sources are set apart within a lane.
        let k = sources.len().max(1) as f64;
        chart
            .draw_series(points.iter().step_by(step).map(|(h, s, c)| {
                let lane = lanes.iter().position(|l| l == h).unwrap_or(0) as f64;
                let si = sources.iter().position(|x| x == s).unwrap_or(0);
                let y = lane + 0.2 + 0.6 * (si as f64 + 0.5) / k;
                let x = (*c - t0) as f64 / 1e9;
                Circle::new((x, y), 2, palette[si % palette.len()].filled())
            }))
            .map_err(e)?;
        for (i, s) in sources.iter().enumerate() {
            let y = 16 + 18 * i as i32;
            legend
                .draw(&Circle::new(
                    (12, y),
                    4,
                    palette[i % palette.len()].filled(),
                ))
                .map_err(e)?;
            legend
                .draw(&Text::new(
                    (*s).to_string(),
                    (22, y - 7),
                    ("sans-serif", 12).into_font(),
                ))
                .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}
