//! Two artifacts side by side: per (workload, mode, variant, metric), both
//! means, the difference, and Welch's t-test between the two sets of runs.

use serde::Serialize;

use super::stats::welch;
use super::summary::{ALPHA, Row};

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub workload: String,
    pub mode: String,
    pub variant: String,
    pub metric: String,
    pub unit: Option<String>,
    pub a_n: usize,
    pub a_mean: Option<f64>,
    pub b_n: usize,
    pub b_mean: Option<f64>,
    /// b − a.
    pub delta: Option<f64>,
    /// (b − a) / a × 100.
    pub delta_pct: Option<f64>,
    pub p_value: Option<f64>,
    pub significant: Option<bool>,
}

/// Row `b` against row `a` (either may be missing), named after `b`.
fn diff(a: Option<&Row>, b: Option<&Row>) -> Diff {
    let (am, bm) = (a.and_then(|r| r.mean), b.and_then(|r| r.mean));
    let delta = am.zip(bm).map(|(x, y)| y - x);
    let w = a.zip(b).and_then(|(x, y)| welch(&y.values, &x.values));
    let named = b.or(a);
    Diff {
        workload: named.map(|r| r.workload.clone()).unwrap_or_default(),
        mode: named.map(|r| r.mode.clone()).unwrap_or_default(),
        variant: named.map(|r| r.variant.clone()).unwrap_or_default(),
        metric: named.map(|r| r.metric.clone()).unwrap_or_default(),
        unit: a.or(b).and_then(|r| r.unit.clone()),
        a_n: a.map_or(0, |r| r.n_ok),
        a_mean: am,
        b_n: b.map_or(0, |r| r.n_ok),
        b_mean: bm,
        delta,
        delta_pct: am
            .zip(delta)
            .filter(|(x, _)| *x != 0.0)
            .map(|(x, d)| d / x * 100.0),
        p_value: w.map(|w| w.p),
        significant: w.map(|w| w.p < ALPHA),
    }
}

/// Rows of `a` and `b` matched by key; a key in only one of them is listed
/// with the other side empty. Sorted like the summaries.
pub fn compare(a: &[Row], b: &[Row]) -> Vec<Diff> {
    let key = |r: &Row| {
        (
            r.workload.clone(),
            r.variant.clone(),
            u8::from(r.mode != "baseline"),
            r.mode.clone(),
            r.metric.clone(),
        )
    };
    let mut keys: Vec<_> = a.iter().chain(b.iter()).map(key).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let ra = a.iter().find(|r| key(r) == k);
            let rb = b.iter().find(|r| key(r) == k);
            // Named by the key: a row may be on one side only.
            let mut d = diff(ra, rb);
            (d.workload, d.variant, d.mode, d.metric) = (k.0, k.1, k.3, k.4);
            d
        })
        .collect()
}

/// A variant param's value as labels show it.
fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Within one artifact: every row whose variant key `key` is not
/// `reference`, against the row with `key = reference` and every other
/// param, the workload, mode and metric the same (side `a` is the
/// reference). `Err` says why there is nothing to compare.
pub fn compare_by(rows: &[Row], key: &str, reference: &str) -> Result<Vec<Diff>, String> {
    let with: Vec<&Row> = rows.iter().filter(|r| r.params.contains_key(key)).collect();
    if with.is_empty() {
        let mut keys: Vec<&String> = rows.iter().flat_map(|r| r.params.keys()).collect();
        keys.sort();
        keys.dedup();
        let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        return Err(format!(
            "no variant has a key `{key}`; {}",
            if keys.is_empty() {
                "this artifact's runs have no matrix".to_string()
            } else {
                format!("keys: {}", keys.join(", "))
            }
        ));
    }
    let mut values: Vec<String> = with.iter().map(|r| shown(&r.params[key])).collect();
    values.sort();
    values.dedup();
    if !values.iter().any(|v| v == reference) {
        return Err(format!(
            "`{key}` is never `{reference}`; its values: {}",
            values
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The rest of a row's params: what must be equal.
    let rest = |r: &Row| {
        let mut p = r.params.clone();
        p.remove(key);
        serde_json::to_string(&p).unwrap_or_default()
    };
    let mut out = Vec::new();
    for r in with.iter().filter(|r| shown(&r.params[key]) != reference) {
        let base = with.iter().find(|b| {
            shown(&b.params[key]) == reference
                && b.workload == r.workload
                && b.mode == r.mode
                && b.metric == r.metric
                && rest(b) == rest(r)
        });
        out.push(diff(base.copied(), Some(r)));
    }
    Ok(out)
}

/// A number for people: 4 significant digits, trailing zeros dropped.
pub fn short(x: Option<f64>) -> String {
    let Some(v) = x else {
        return "—".into();
    };
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The table `flow compare` prints.
pub fn table(diffs: &[Diff], a: &str, b: &str) -> String {
    let mut rows: Vec<Vec<String>> = vec![vec![
        "workload".into(),
        "mode".into(),
        "variant".into(),
        "metric".into(),
        a.into(),
        b.into(),
        "delta".into(),
        "delta %".into(),
        "p".into(),
        "".into(),
    ]];
    for d in diffs {
        let unit = d
            .unit
            .as_deref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        rows.push(vec![
            d.workload.clone(),
            d.mode.clone(),
            d.variant.clone(),
            d.metric.clone(),
            format!("{}{unit} (n={})", short(d.a_mean), d.a_n),
            format!("{}{unit} (n={})", short(d.b_mean), d.b_n),
            d.delta.map_or("—".into(), |x| {
                format!("{}{}", if x > 0.0 { "+" } else { "" }, short(Some(x)))
            }),
            d.delta_pct.map_or("—".into(), |x| format!("{x:+.1}%")),
            d.p_value.map_or("—".into(), |p| format!("{p:.3}")),
            match d.significant {
                Some(true) => "significant".into(),
                Some(false) => "".into(),
                None => "".into(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(variant: &str, size: i64, clients: i64, values: &[f64]) -> Row {
        Row {
            workload: "kv".into(),
            mode: "baseline".into(),
            variant: variant.into(),
            params: serde_json::json!({"size": size, "clients": clients})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            metric: "lat".into(),
            unit: Some("ms".into()),
            n: values.len(),
            n_ok: values.len(),
            mean: super::super::stats::describe(values).map(|d| d.mean),
            values: values.to_vec(),
            ..Row::default()
        }
    }

    #[test]
    fn a_key_is_compared_with_its_reference_at_the_same_other_params() {
        let rows = vec![
            row("size=64,clients=1", 64, 1, &[10.0, 11.0, 12.0]),
            row("size=1024,clients=1", 1024, 1, &[20.0, 21.0, 22.0]),
            row("size=64,clients=4", 64, 4, &[40.0, 41.0, 42.0]),
            row("size=1024,clients=4", 1024, 4, &[40.0, 42.0, 44.0]),
        ];
        let d = compare_by(&rows, "size", "64").expect("compared");
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].variant.as_str(), d[0].a_mean, d[0].b_mean),
            ("size=1024,clients=1", Some(11.0), Some(21.0))
        );
        assert_eq!(d[0].significant, Some(true));
        // Compared with clients=4's reference, not clients=1's.
        assert_eq!((d[1].a_mean, d[1].b_mean), (Some(41.0), Some(42.0)));
        assert_eq!(d[1].significant, Some(false));
        assert_eq!(
            compare_by(&rows, "sise", "64").expect_err("no key"),
            "no variant has a key `sise`; keys: `clients`, `size`"
        );
        assert_eq!(
            compare_by(&rows, "size", "63").expect_err("no value"),
            "`size` is never `63`; its values: `1024`, `64`"
        );
    }

    #[test]
    fn short_numbers_keep_four_significant_digits() {
        assert_eq!(short(Some(1234.5678)), "1235");
        assert_eq!(short(Some(12.345678)), "12.35");
        assert_eq!(short(Some(0.00123456)), "0.001235");
        assert_eq!(short(Some(20.0)), "20");
        assert_eq!(short(None), "—");
    }
}
