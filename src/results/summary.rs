//! Tidy summaries: one row per (workload, variant, mode, metric) with
//! statistics over repetitions, and, for every mode but `baseline`, how it
//! compares with `baseline` at the same variant (Welch's t-test).
//!
//! Only runs that passed contribute values: a failed run's numbers are not
//! trusted. Rows are sorted (workload, variant, mode with `baseline` first,
//! metric) and numbers are printed in Rust's shortest round-trip form, so
//! the same artifact always gives the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::extract::MetricValue;
use super::stats::{describe, welch};
use crate::expand::MUTATION_KEY;
use crate::suite::NO_MUTATION;
use crate::suite::raw::Better;

/// What a summary needs of one run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub variant_params: serde_json::Map<String, serde_json::Value>,
    pub passed: bool,
    /// Metric name → (unit, better) as the workload declares it.
    pub declared: BTreeMap<String, (Option<String>, Option<Better>)>,
    pub metrics: BTreeMap<String, MetricValue>,
    pub annotations: BTreeMap<String, String>,
}

/// Significance level of the baseline comparison.
pub const ALPHA: f64 = 0.05;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub metric: String,
    pub unit: Option<String>,
    pub better: Option<Better>,
    /// Runs of the group.
    pub n: usize,
    /// Runs that passed and gave a value.
    pub n_ok: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub baseline_mean: Option<f64>,
    /// mean / baseline mean.
    pub ratio: Option<f64>,
    /// 95% CI of the ratio (delta method, Welch's degrees of freedom).
    pub ratio_ci95_low: Option<f64>,
    pub ratio_ci95_high: Option<f64>,
    /// (ratio − 1) × 100.
    pub overhead_pct: Option<f64>,
    /// Welch's two-sided p-value against baseline.
    pub p_value: Option<f64>,
    /// p < [`ALPHA`].
    pub significant: Option<bool>,
    /// A mutation's row: the mean of `none` (the unpatched code) at the
    /// same workload, mode, params and metric.
    pub none_mean: Option<f64>,
    /// mean / none's mean.
    pub none_ratio: Option<f64>,
    /// Welch's two-sided p-value against `none`.
    pub none_p_value: Option<f64>,
    pub none_significant: Option<bool>,
    /// The annotations every run of the group has alike.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Why some run of the group has no value (the first such run's
    /// reason, runs that passed first): a typo in `from` shows here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The values, in run-id order (JSON only).
    #[serde(skip)]
    pub values: Vec<f64>,
}

/// A baseline row's mean and values.
type Baseline = (Option<f64>, Vec<f64>);

/// Key of a group; `mode_rank` puts `baseline` first.
type Key = (String, String, u8, String, String);

pub fn summarize(runs: &[RunRecord]) -> Vec<Row> {
    let mut groups: BTreeMap<Key, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        let names: std::collections::BTreeSet<&String> =
            r.declared.keys().chain(r.metrics.keys()).collect();
        for m in names {
            let rank = u8::from(r.mode != "baseline");
            groups
                .entry((
                    r.workload.clone(),
                    r.variant.clone(),
                    rank,
                    r.mode.clone(),
                    m.clone(),
                ))
                .or_default()
                .push(r);
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for ((workload, variant, _, mode, metric), mut members) in groups {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let values: Vec<f64> = members
            .iter()
            .filter(|r| r.passed)
            .filter_map(|r| r.metrics.get(&metric).and_then(|v| v.value))
            .collect();
        let first = members[0];
        let missing = |r: &&&RunRecord| {
            r.metrics
                .get(&metric)
                .filter(|v| v.value.is_none())
                .map(|v| format!("{}: {}", r.id, v.error.as_deref().unwrap_or("no value")))
        };
        let error = members
            .iter()
            .filter(|r| r.passed)
            .find_map(|r| missing(&r))
            .or_else(|| members.iter().find_map(|r| missing(&r)));
        let (unit, better) = members
            .iter()
            .find_map(|r| r.declared.get(&metric).cloned())
            .unwrap_or_default();
        let d = describe(&values);
        // Notes the group's runs share (a key whose value differs is left out).
        let mut annotations = first.annotations.clone();
        annotations.retain(|k, v| members.iter().all(|r| r.annotations.get(k) == Some(v)));
        rows.push(Row {
            workload,
            mode,
            variant,
            params: first.variant_params.clone(),
            metric,
            unit,
            better,
            n: members.len(),
            n_ok: values.len(),
            mean: d.map(|d| d.mean),
            median: d.map(|d| d.median),
            std: d.map(|d| d.std),
            min: d.map(|d| d.min),
            max: d.map(|d| d.max),
            ci95_low: d.and_then(|d| d.ci95).map(|c| c.0),
            ci95_high: d.and_then(|d| d.ci95).map(|c| c.1),
            annotations,
            error,
            values,
            // The comparisons are filled in below.
            ..Row::default()
        });
    }
    // Against baseline at the same workload, variant and metric.
    let baselines: BTreeMap<(String, String, String), Baseline> = rows
        .iter()
        .filter(|r| r.mode == "baseline")
        .map(|r| {
            (
                (r.workload.clone(), r.variant.clone(), r.metric.clone()),
                (r.mean, r.values.clone()),
            )
        })
        .collect();
    for r in rows.iter_mut().filter(|r| r.mode != "baseline") {
        let Some((Some(base), base_values)) =
            baselines.get(&(r.workload.clone(), r.variant.clone(), r.metric.clone()))
        else {
            continue;
        };
        r.baseline_mean = Some(*base);
        if let Some(mean) = r.mean
            && *base != 0.0
        {
            r.ratio = Some(mean / base);
            r.overhead_pct = Some((mean / base - 1.0) * 100.0);
        }
        if let Some(w) = welch(&r.values, base_values) {
            r.p_value = Some(w.p);
            r.significant = Some(w.p < ALPHA);
        }
        if let Some((lo, hi)) = super::stats::ratio_ci95(&r.values, base_values) {
            r.ratio_ci95_low = Some(lo);
            r.ratio_ci95_high = Some(hi);
        }
    }
    // Each mutation against `none` at the same workload, mode, other
    // params and metric.
    let nones: BTreeMap<(String, String, String, String), Baseline> = rows
        .iter()
        .filter(|r| mutation_of(&r.variant) == Some(NO_MUTATION))
        .map(|r| {
            (
                (
                    r.workload.clone(),
                    r.mode.clone(),
                    r.variant.clone(),
                    r.metric.clone(),
                ),
                (r.mean, r.values.clone()),
            )
        })
        .collect();
    for r in rows.iter_mut() {
        let Some(m) = mutation_of(&r.variant).filter(|m| *m != NO_MUTATION) else {
            continue;
        };
        let none_variant = format!(
            "{MUTATION_KEY}={NO_MUTATION}{}",
            &r.variant[MUTATION_KEY.len() + 1 + m.len()..]
        );
        let Some((Some(base), base_values)) = nones.get(&(
            r.workload.clone(),
            r.mode.clone(),
            none_variant,
            r.metric.clone(),
        )) else {
            continue;
        };
        r.none_mean = Some(*base);
        if let Some(mean) = r.mean
            && *base != 0.0
        {
            r.none_ratio = Some(mean / base);
        }
        if let Some(w) = welch(&r.values, base_values) {
            r.none_p_value = Some(w.p);
            r.none_significant = Some(w.p < ALPHA);
        }
    }
    // Variants in the order people read them: 50 before 100.
    rows.sort_by(|a, b| {
        a.workload
            .cmp(&b.workload)
            .then_with(|| {
                super::order::variant_cmp((&a.variant, &a.params), (&b.variant, &b.params))
            })
            .then_with(|| super::order::mode_rank(&a.mode).cmp(&super::order::mode_rank(&b.mode)))
            .then_with(|| a.metric.cmp(&b.metric))
    });
    rows
}

/// The mutation a variant label starts with (`mutation=nolock,…`).
pub fn mutation_of(variant: &str) -> Option<&str> {
    let rest = variant.strip_prefix(MUTATION_KEY)?.strip_prefix('=')?;
    Some(rest.split(',').next().unwrap_or(rest))
}

/// A number as summaries print it: shortest round trip, empty when absent.
pub fn num(x: Option<f64>) -> String {
    x.map(|v| format!("{v}")).unwrap_or_default()
}

/// The fixed columns of `summary.csv`; variant params go between the third
/// and the fourth.
const SUMMARY_CSV_FIXED: [&str; 26] = [
    "workload",
    "mode",
    "variant",
    "metric",
    "unit",
    "better",
    "n",
    "n_ok",
    "mean",
    "median",
    "std",
    "min",
    "max",
    "ci95_low",
    "ci95_high",
    "baseline_mean",
    "ratio",
    "ratio_ci95_low",
    "ratio_ci95_high",
    "overhead_pct",
    "p_value",
    "significant",
    "none_mean",
    "none_ratio",
    "none_p_value",
    "none_significant",
];

/// `summary.csv`: fixed columns, one per variant param (sorted union), then
/// the statistics. A param whose name is a fixed column is written
/// `param.<name>`.
pub fn to_csv(rows: &[Row]) -> Vec<u8> {
    let params: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.params.keys()).collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = SUMMARY_CSV_FIXED[..3]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(
        params
            .iter()
            .map(|p| crate::artifact::param_column(p, &SUMMARY_CSV_FIXED)),
    );
    header.extend(SUMMARY_CSV_FIXED[3..].iter().map(|s| s.to_string()));
    let notes: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.annotations.keys()).collect();
    header.extend(notes.iter().map(|k| format!("annotation.{k}")));
    let _ = w.write_record(&header);
    for r in rows {
        let mut rec: Vec<String> = vec![r.workload.clone(), r.mode.clone(), r.variant.clone()];
        for p in &params {
            rec.push(match r.params.get(*p) {
                None => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            });
        }
        rec.push(r.metric.clone());
        rec.push(r.unit.clone().unwrap_or_default());
        rec.push(
            r.better
                .map(|b| match b {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                })
                .unwrap_or_default()
                .to_string(),
        );
        rec.push(r.n.to_string());
        rec.push(r.n_ok.to_string());
        for x in [
            r.mean,
            r.median,
            r.std,
            r.min,
            r.max,
            r.ci95_low,
            r.ci95_high,
            r.baseline_mean,
            r.ratio,
            r.ratio_ci95_low,
            r.ratio_ci95_high,
            r.overhead_pct,
            r.p_value,
        ] {
            rec.push(num(x));
        }
        rec.push(r.significant.map(|s| s.to_string()).unwrap_or_default());
        for x in [r.none_mean, r.none_ratio, r.none_p_value] {
            rec.push(num(x));
        }
        rec.push(
            r.none_significant
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
        for k in &notes {
            rec.push(r.annotations.get(*k).cloned().unwrap_or_default());
        }
        let _ = w.write_record(&rec);
    }
    w.into_inner().unwrap_or_default()
}

/// `summary.json`.
pub fn to_json(rows: &[Row]) -> Vec<u8> {
    let v = serde_json::json!({ "schema_version": 1, "alpha": ALPHA, "rows": rows });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, mode: &str, variant: &str, passed: bool, value: Option<f64>) -> RunRecord {
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "lat".to_string(),
            MetricValue {
                value,
                unit: Some("ms".into()),
                samples: 1,
                error: value.is_none().then(|| "no file matches `x`".to_string()),
            },
        );
        let mut declared = BTreeMap::new();
        declared.insert(
            "lat".to_string(),
            (Some("ms".to_string()), Some(Better::Lower)),
        );
        let mut params = serde_json::Map::new();
        params.insert("size".into(), serde_json::json!(variant.len()));
        RunRecord {
            id: id.into(),
            workload: "kv".into(),
            mode: mode.into(),
            variant: variant.into(),
            variant_params: params,
            passed,
            declared,
            metrics,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn groups_describe_and_compare_with_baseline() {
        let runs = vec![
            run("kv.perf.r1", "perf", "a", true, Some(21.0)),
            run("kv.baseline.r1", "baseline", "a", true, Some(18.0)),
            run("kv.baseline.r2", "baseline", "a", true, Some(19.0)),
            run("kv.baseline.r3", "baseline", "a", true, Some(20.0)),
            run("kv.baseline.r4", "baseline", "a", true, Some(21.0)),
            run("kv.baseline.r5", "baseline", "a", true, Some(22.0)),
            run("kv.perf.r2", "perf", "a", true, Some(21.5)),
            run("kv.perf.r3", "perf", "a", true, Some(22.5)),
            run("kv.perf.r4", "perf", "a", true, Some(23.0)),
            // A failed run's number is not used; a run without one counts in n.
            run("kv.perf.r5", "perf", "a", false, Some(1000.0)),
            run("kv.perf.r6", "perf", "a", true, None),
        ];
        let rows = summarize(&runs);
        assert_eq!(rows.len(), 2);
        let (b, p) = (&rows[0], &rows[1]);
        assert_eq!((b.mode.as_str(), b.n, b.n_ok), ("baseline", 5, 5));
        assert_eq!(b.mean, Some(20.0));
        assert_eq!((p.mode.as_str(), p.n, p.n_ok), ("perf", 6, 4));
        assert_eq!(p.mean, Some(22.0));
        assert_eq!(p.baseline_mean, Some(20.0));
        assert_eq!(p.ratio, Some(1.1));
        assert!((p.overhead_pct.expect("overhead") - 10.0).abs() < 1e-9);
        // The same samples as the Welch example in `stats`: p = 0.051743.
        assert!((p.p_value.expect("p") - 0.051_743).abs() < 1e-6);
        assert_eq!(p.significant, Some(false));
        let csv = String::from_utf8(to_csv(&rows)).expect("utf-8");
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(
                "workload,mode,variant,size,metric,unit,better,n,n_ok,mean,median,std,min,max,\
                 ci95_low,ci95_high,baseline_mean,ratio,ratio_ci95_low,ratio_ci95_high,overhead_pct,p_value,significant,\
                 none_mean,none_ratio,none_p_value,none_significant"
            )
        );
        let base = lines.next().expect("baseline row");
        assert!(
            base.starts_with("kv,baseline,a,1,lat,ms,lower,5,5,20,20,1.5811388300841898,18,22,"),
            "{base}"
        );
        assert!(base.ends_with(",,,,,,,,,"), "{base}");
        assert!(lines.next().expect("perf row").ends_with(",false,,,,"));
    }

    #[test]
    fn each_mutation_is_compared_with_none_at_the_same_mode_and_params() {
        let mut runs = Vec::new();
        for (i, v) in [18.0, 19.0, 20.0, 21.0, 22.0].iter().enumerate() {
            runs.push(run(
                &format!("n{i}"),
                "baseline",
                "mutation=none,size=1",
                true,
                Some(*v),
            ));
            runs.push(run(
                &format!("m{i}"),
                "baseline",
                "mutation=nolock,size=1",
                true,
                Some(v * 2.0),
            ));
            // Another size: compared with its own `none`, not this one.
            runs.push(run(
                &format!("o{i}"),
                "baseline",
                "mutation=nolock,size=2",
                true,
                Some(1.0),
            ));
        }
        for r in &mut runs {
            r.annotations.insert("purpose".into(), "locks".into());
        }
        runs[0].annotations.insert("note".into(), "first".into());
        let rows = summarize(&runs);
        let row = |v: &str| rows.iter().find(|r| r.variant == v).expect("row");
        let m = row("mutation=nolock,size=1");
        assert_eq!(m.none_mean, Some(20.0));
        assert_eq!(m.none_ratio, Some(2.0));
        assert!(m.none_p_value.expect("p") < 0.001);
        assert_eq!(m.none_significant, Some(true));
        let none = row("mutation=none,size=1");
        assert_eq!((none.none_mean, none.none_p_value), (None, None));
        assert_eq!(row("mutation=nolock,size=2").none_mean, None);
        // Modes are still compared with baseline, not mutations.
        assert_eq!(m.baseline_mean, None);
        // Notes all runs of a row share are kept; one only some have is not.
        assert_eq!(
            none.annotations.get("purpose").map(String::as_str),
            Some("locks")
        );
        assert!(!none.annotations.contains_key("note"));
        let csv = String::from_utf8(to_csv(&rows)).expect("utf-8");
        assert!(
            csv.lines()
                .next()
                .expect("header")
                .ends_with(",annotation.purpose"),
            "{csv}"
        );
        assert_eq!(mutation_of("mutation=nolock,size=1"), Some("nolock"));
        assert_eq!(mutation_of("size=1"), None);
    }

    #[test]
    fn output_is_the_same_whatever_the_input_order() {
        let mut runs = vec![
            run("a1", "baseline", "x", true, Some(1.0)),
            run("a2", "baseline", "x", true, Some(2.0)),
            run("b1", "obs", "x", true, Some(3.0)),
            run("b2", "obs", "x", true, Some(5.0)),
            run("c1", "baseline", "y", true, Some(7.0)),
        ];
        let one = (to_csv(&summarize(&runs)), to_json(&summarize(&runs)));
        runs.reverse();
        let two = (to_csv(&summarize(&runs)), to_json(&summarize(&runs)));
        assert_eq!(one, two);
    }
}
