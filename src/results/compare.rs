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
            let (am, bm) = (ra.and_then(|r| r.mean), rb.and_then(|r| r.mean));
            let delta = am.zip(bm).map(|(x, y)| y - x);
            let w = ra.zip(rb).and_then(|(x, y)| welch(&y.values, &x.values));
            Diff {
                workload: k.0,
                mode: k.3,
                variant: k.1,
                metric: k.4,
                unit: ra.or(rb).and_then(|r| r.unit.clone()),
                a_n: ra.map_or(0, |r| r.n_ok),
                a_mean: am,
                b_n: rb.map_or(0, |r| r.n_ok),
                b_mean: bm,
                delta,
                delta_pct: am
                    .zip(delta)
                    .filter(|(x, _)| *x != 0.0)
                    .map(|(x, d)| d / x * 100.0),
                p_value: w.map(|w| w.p),
                significant: w.map(|w| w.p < ALPHA),
            }
        })
        .collect()
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

    #[test]
    fn short_numbers_keep_four_significant_digits() {
        assert_eq!(short(Some(1234.5678)), "1235");
        assert_eq!(short(Some(12.345678)), "12.35");
        assert_eq!(short(Some(0.00123456)), "0.001235");
        assert_eq!(short(Some(20.0)), "20");
        assert_eq!(short(None), "—");
    }
}
