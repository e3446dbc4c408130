//! `flow export`: an artifact as four tables (runs, metric values, summary
//! rows, timeline events) for the databases and dataframes people query,
//! read from the stored results only, never from a host.
//!
//! [`tables`] builds the rows (pure but for reading the artifact);
//! [`clickhouse`] sends them over ClickHouse's HTTP interface; [`parquet`]
//! writes one Parquet file per table.

pub mod clickhouse;
pub mod http;
pub mod parquet;

use std::path::Path;

use serde::Serialize;

use crate::results::{self, StoredRun};

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub artifact_id: String,
    pub run_id: String,
    pub suite: String,
    pub workload: String,
    pub mode: String,
    pub variant: String,
    /// The variant's params, as a JSON object.
    pub params: String,
    pub repetition: u32,
    /// Empty when the entry has no mutations.
    pub mutation: String,
    /// `passed`, `failed`, `interrupted`, …, or `pending` (never started).
    pub status: String,
    /// Controller wall clock, nanoseconds since the Unix epoch.
    pub started_ns: Option<u64>,
    pub duration_ms: Option<u64>,
    pub first_error: Option<String>,
    /// The run's annotations, as a JSON object.
    pub annotations: String,
}

/// One metric of one run: its value, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct MetricRow {
    pub artifact_id: String,
    pub run_id: String,
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub repetition: u32,
    pub status: String,
    pub metric: String,
    pub value: Option<f64>,
    pub unit: String,
    pub samples: u64,
    pub error: Option<String>,
}

/// One row of `summary.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub artifact_id: String,
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub params: String,
    pub metric: String,
    pub unit: String,
    pub better: String,
    pub n: u32,
    pub n_ok: u32,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub baseline_mean: Option<f64>,
    pub ratio: Option<f64>,
    pub ratio_ci95_low: Option<f64>,
    pub ratio_ci95_high: Option<f64>,
    pub overhead_pct: Option<f64>,
    pub p_value: Option<f64>,
    pub significant: Option<u8>,
    pub none_mean: Option<f64>,
    pub none_ratio: Option<f64>,
    pub none_p_value: Option<f64>,
    pub none_significant: Option<u8>,
}

/// One event of a run's `analysis/timeline.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub artifact_id: String,
    pub run_id: String,
    pub host: String,
    pub source: String,
    pub file: String,
    pub local_ns: i64,
    pub corrected_ns: i64,
    pub bound_ns: u64,
    /// The event's own fields, as a JSON object of strings.
    pub fields: String,
}

/// The four tables of an artifact.
#[derive(Debug, Default)]
pub struct Tables {
    pub runs: Vec<RunRow>,
    pub metrics: Vec<MetricRow>,
    pub summary: Vec<SummaryRow>,
    pub timeline: Vec<EventRow>,
}

/// The names the tables go by (ClickHouse tables, Parquet files).
pub const TABLES: [&str; 4] = ["runs", "metrics", "summary", "timeline"];

impl Tables {
    pub fn counts(&self) -> [usize; 4] {
        [
            self.runs.len(),
            self.metrics.len(),
            self.summary.len(),
            self.timeline.len(),
        ]
    }
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// The tables of the artifact at `artifact`: every run (also those that
/// never started), their metrics as stored, the summary computed as
/// `summary.csv` is, and each run's merged timeline when it has one.
/// Unreadable run folders and timelines are errors: an export is whole.
pub fn tables(artifact: &Path) -> Result<Tables, Vec<String>> {
    let id = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (runs, errors) = results::load_runs(artifact);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut t = Tables::default();
    let mut errors = Vec::new();
    for r in &runs {
        add_run(&mut t, &id, r);
        match timeline_rows(&id, r) {
            Ok(rows) => t.timeline.extend(rows),
            Err(e) => errors.push(e),
        }
    }
    for s in results::summarize(&runs) {
        t.summary.push(SummaryRow {
            artifact_id: id.clone(),
            params: json_text(&s.params),
            better: s
                .better
                .map(|b| match b {
                    crate::suite::raw::Better::Higher => "higher",
                    crate::suite::raw::Better::Lower => "lower",
                })
                .unwrap_or_default()
                .to_string(),
            unit: s.unit.clone().unwrap_or_default(),
            n: s.n as u32,
            n_ok: s.n_ok as u32,
            mean: s.mean,
            median: s.median,
            std: s.std,
            min: s.min,
            max: s.max,
            ci95_low: s.ci95_low,
            ci95_high: s.ci95_high,
            baseline_mean: s.baseline_mean,
            ratio: s.ratio,
            ratio_ci95_low: s.ratio_ci95_low,
            ratio_ci95_high: s.ratio_ci95_high,
            overhead_pct: s.overhead_pct,
            p_value: s.p_value,
            significant: s.significant.map(u8::from),
            none_mean: s.none_mean,
            none_ratio: s.none_ratio,
            none_p_value: s.none_p_value,
            none_significant: s.none_significant.map(u8::from),
            workload: s.workload,
            mode: s.mode,
            variant: s.variant,
            metric: s.metric,
        });
    }
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors)
    }
}

fn add_run(t: &mut Tables, id: &str, r: &StoredRun) {
    let p = &r.plan;
    let status = results::status_of(r.result.as_ref()).to_string();
    t.runs.push(RunRow {
        artifact_id: id.to_string(),
        run_id: p.id.clone(),
        suite: p.suite.clone(),
        workload: p.workload.clone(),
        mode: p.mode.clone(),
        variant: p.variant.clone(),
        params: json_text(&p.variant_params),
        repetition: p.repetition,
        mutation: p.mutation.clone().unwrap_or_default(),
        status: status.clone(),
        started_ns: r.result.as_ref().map(|x| x.started.wall_ns),
        duration_ms: r.result.as_ref().and_then(|x| x.duration_ms),
        first_error: r.result.as_ref().and_then(|x| x.first_error()),
        annotations: json_text(&p.annotations),
    });
    let Some(result) = &r.result else { return };
    for (name, v) in &result.metrics {
        t.metrics.push(MetricRow {
            artifact_id: id.to_string(),
            run_id: p.id.clone(),
            workload: p.workload.clone(),
            mode: p.mode.clone(),
            variant: p.variant.clone(),
            repetition: p.repetition,
            status: status.clone(),
            metric: name.clone(),
            value: v.value.filter(|x| x.is_finite()),
            unit: v.unit.clone().unwrap_or_default(),
            samples: v.samples,
            error: v.error.clone(),
        });
    }
}

/// A run's `analysis/timeline.csv` as rows; none when it has none.
fn timeline_rows(id: &str, r: &StoredRun) -> Result<Vec<EventRow>, String> {
    let path = r.dir.join(results::timeline::TIMELINE_CSV);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let bad = |what: String| format!("{}: {what}", path.display());
    let mut rd = csv::Reader::from_reader(bytes.as_slice());
    let headers = rd.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |n: &str| {
        headers
            .iter()
            .position(|h| h == n)
            .ok_or_else(|| bad(format!("no column `{n}`")))
    };
    let (h, s, f) = (col("host")?, col("source")?, col("file")?);
    let (l, c, b) = (col("local_ns")?, col("corrected_ns")?, col("bound_ns")?);
    let own = [h, s, f, l, c, b];
    let mut out = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let num = |k: usize| -> Result<i64, String> {
            rec.get(k)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad(format!("row {}: `{}` is not a number", i + 2, &headers[k])))
        };
        let fields: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .enumerate()
            .filter(|(k, _)| !own.contains(k))
            .filter_map(|(k, name)| {
                let v = rec.get(k)?;
                (!v.is_empty()).then(|| (name.to_string(), serde_json::Value::from(v)))
            })
            .collect();
        out.push(EventRow {
            artifact_id: id.to_string(),
            run_id: r.plan.id.clone(),
            host: rec.get(h).unwrap_or_default().to_string(),
            source: rec.get(s).unwrap_or_default().to_string(),
            file: rec.get(f).unwrap_or_default().to_string(),
            local_ns: num(l)?,
            corrected_ns: num(c)?,
            bound_ns: u64::try_from(num(b)?).unwrap_or(0),
            fields: json_text(&fields),
        });
    }
    Ok(out)
}
