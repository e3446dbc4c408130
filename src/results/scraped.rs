//! Metrics from the CSV a `scrape:` monitor writes (`time_ns,metric,
//! labels,value`, one row per sample of a scrape).
//!
//! A metric names a Prometheus metric and, optionally, label values; every
//! matching series (one per file and label set) is aggregated over time,
//! and the series' results are summed. `increase` is the sum of the rises
//! between consecutive samples, a fall being a counter reset (the value
//! after it counts whole), between the first and the last scrape: unlike
//! Prometheus, nothing is extrapolated to the ends of the run. `rate` is
//! that increase per second of the series' own span.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One series: (host time in ns, value) in file order.
type Series = Vec<(i64, f64)>;

/// (value, samples) or why not.
pub fn aggregate(
    run_dir: &Path,
    paths: &[PathBuf],
    metric: &str,
    labels: &BTreeMap<String, String>,
    agg: &str,
) -> Result<(f64, u64), String> {
    let rel = |p: &Path| p.strip_prefix(run_dir).unwrap_or(p).display().to_string();
    let mut series: BTreeMap<(usize, String), Series> = BTreeMap::new();
    let mut names_seen = 0usize;
    for (fi, p) in paths.iter().enumerate() {
        let mut r = csv::ReaderBuilder::new()
            .from_path(p)
            .map_err(|e| format!("`{}`: {e}", rel(p)))?;
        let header = r.headers().map_err(|e| format!("`{}`: {e}", rel(p)))?;
        if header.iter().collect::<Vec<_>>() != ["time_ns", "metric", "labels", "value"] {
            return Err(format!(
                "`{}` is not a scrape log: its header is not `time_ns,metric,labels,value`",
                rel(p)
            ));
        }
        for (line, rec) in r.records().enumerate() {
            let at = || format!("`{}` line {}", rel(p), line + 2);
            let rec = rec.map_err(|e| format!("{}: {e}", at()))?;
            if rec.get(1) != Some(metric) {
                continue;
            }
            names_seen += 1;
            let raw = rec.get(2).unwrap_or("");
            let have = parse_labels(raw).map_err(|e| format!("{}: labels {e}", at()))?;
            if !labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
                continue;
            }
            let t: i64 = rec
                .get(0)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{}: `time_ns` is not a whole number", at()))?;
            let cell = rec.get(3).unwrap_or("");
            let v = parse_value(cell)
                .ok_or_else(|| format!("{}: the value `{cell}` is not a number", at()))?;
            series
                .entry((fi, raw.to_string()))
                .or_default()
                .push((t, v));
        }
    }
    if series.is_empty() {
        let files = paths
            .iter()
            .map(|p| format!("`{}`", rel(p)))
            .collect::<Vec<_>>();
        return Err(if names_seen == 0 {
            format!("no sample of `{metric}` in {}", files.join(", "))
        } else {
            let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!(
                "{names_seen} samples of `{metric}` in {}, none with {}",
                files.join(", "),
                want.join(",")
            )
        });
    }
    let mut total = 0.0;
    let mut samples = 0u64;
    for ((fi, raw), s) in &series {
        let finite: Vec<(i64, f64)> = s.iter().copied().filter(|(_, v)| v.is_finite()).collect();
        let what = || format!("`{metric}{{{raw}}}` in `{}`", rel(&paths[*fi]));
        if finite.is_empty() {
            return Err(format!("{} has no finite value", what()));
        }
        samples += finite.len() as u64;
        let vals = || finite.iter().map(|(_, v)| *v);
        total += match agg {
            "last" => finite[finite.len() - 1].1,
            "mean" => vals().sum::<f64>() / finite.len() as f64,
            "min" => vals().fold(f64::INFINITY, f64::min),
            "max" => vals().fold(f64::NEG_INFINITY, f64::max),
            "increase" | "rate" => {
                if finite.len() < 2 {
                    return Err(format!(
                        "{} has one sample: `{agg}` needs two scrapes at least",
                        what()
                    ));
                }
                let inc = increase(&finite);
                if agg == "increase" {
                    inc
                } else {
                    let span = (finite[finite.len() - 1].0 - finite[0].0) as f64 / 1e9;
                    if span <= 0.0 {
                        return Err(format!("{}: its samples span no time", what()));
                    }
                    inc / span
                }
            }
            other => return Err(format!("unknown aggregation `{other}`")),
        };
    }
    Ok((total, samples))
}

/// The rises between consecutive samples; a fall is a reset.
fn increase(s: &[(i64, f64)]) -> f64 {
    s.windows(2)
        .map(|w| {
            let (a, b) = (w[0].1, w[1].1);
            if b >= a { b - a } else { b }
        })
        .sum()
}

/// Prometheus' `NaN`, `+Inf`, `-Inf`, and plain numbers.
fn parse_value(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// `a="x",b="y \"q\""` → {a: x, b: y "q"}; `Err` says what is malformed.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| *c != '=') {
            key.push(c);
        }
        if it.next() != Some('=') || it.next() != Some('"') {
            return Err(format!("`{s}`: expected `name=\"value\"`"));
        }
        let mut val = String::new();
        loop {
            match it.next() {
                None => return Err(format!("`{s}`: a value has no closing quote")),
                Some('"') => break,
                Some('\\') => match it.next() {
                    Some('n') => val.push('\n'),
                    Some(c) => val.push(c),
                    None => return Err(format!("`{s}`: ends in a backslash")),
                },
                Some(c) => val.push(c),
            }
        }
        out.insert(key.trim().to_string(), val);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_parse_with_escapes_and_commas_inside_values() {
        assert_eq!(
            parse_labels(r#"kind="udp \"x\", y",le="+Inf""#),
            Ok(labels(&[("kind", "udp \"x\", y"), ("le", "+Inf")]))
        );
        assert_eq!(parse_labels(""), Ok(BTreeMap::new()));
        assert!(parse_labels(r#"a="x"#).is_err());
        assert!(parse_labels("a=x").is_err());
    }

    fn log() -> (tempfile::TempDir, Vec<PathBuf>) {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("logs/scrape@h.out");
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        // Two series of a counter (one resets from 30 to 5), a gauge.
        std::fs::write(
            &p,
            "time_ns,metric,labels,value\n\
             1000000000,req_total,\"code=\"\"200\"\"\",10\n\
             1000000000,req_total,\"code=\"\"500\"\"\",1\n\
             1000000000,depth,\"\",4\n\
             2000000000,req_total,\"code=\"\"200\"\"\",30\n\
             2000000000,req_total,\"code=\"\"500\"\"\",1\n\
             2000000000,depth,\"\",NaN\n\
             3000000000,req_total,\"code=\"\"200\"\"\",5\n\
             3000000000,req_total,\"code=\"\"500\"\"\",3\n\
             3000000000,depth,\"\",8\n",
        )
        .expect("write");
        (d, vec![p])
    }

    #[test]
    fn counters_increase_across_a_reset_and_series_are_summed() {
        let (d, p) = log();
        let only = labels(&[("code", "200")]);
        let none = BTreeMap::new();
        let agg = |m: &str, l: &BTreeMap<String, String>, a: &str| aggregate(d.path(), &p, m, l, a);
        // 10 → 30 (+20), 30 → 5 (reset: +5).
        assert_eq!(agg("req_total", &only, "increase"), Ok((25.0, 3)));
        assert_eq!(agg("req_total", &only, "rate"), Ok((12.5, 3)));
        // Both series: 25 + 2.
        assert_eq!(agg("req_total", &none, "increase"), Ok((27.0, 6)));
        assert_eq!(agg("req_total", &none, "last"), Ok((8.0, 6)));
        // NaN samples are left out.
        assert_eq!(agg("depth", &none, "mean"), Ok((6.0, 2)));
        assert_eq!(agg("depth", &none, "max"), Ok((8.0, 2)));
        assert_eq!(agg("depth", &none, "min"), Ok((4.0, 2)));
    }

    #[test]
    fn a_missing_series_says_what_was_there() {
        let (d, p) = log();
        assert_eq!(
            aggregate(d.path(), &p, "nope", &BTreeMap::new(), "last"),
            Err("no sample of `nope` in `logs/scrape@h.out`".into())
        );
        assert_eq!(
            aggregate(
                d.path(),
                &p,
                "req_total",
                &labels(&[("code", "404")]),
                "last"
            ),
            Err("6 samples of `req_total` in `logs/scrape@h.out`, none with code=\"404\"".into())
        );
        let other = d.path().join("other.csv");
        std::fs::write(&other, "a,b\n1,2\n").expect("write");
        assert_eq!(
            aggregate(d.path(), &[other], "x", &BTreeMap::new(), "last"),
            Err(
                "`other.csv` is not a scrape log: its header is not `time_ns,metric,labels,value`"
                    .into()
            )
        );
    }
}
