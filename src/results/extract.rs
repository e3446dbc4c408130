//! Metric extraction from a run's artifact folder: files only, no host.
//!
//! A metric gives one number per run. `from` globs files relative to the
//! run dir (sorted by path). `json` reads the number at a JSON pointer in
//! each file; `regex` takes the `value` group of the last match over all
//! files (`matches: last`) or of every match (`all`); when that yields
//! several numbers (several files, or `all`), the run's value is their
//! mean. `csv` reads one column from the rows of every file (each with its
//! own header), keeps the rows that match `where`, and aggregates them.
//! `scrape` reads a `scrape:` monitor's log (see `scraped`). A
//! metric that cannot be extracted gets an error saying why, never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::stats::percentile_sorted;
use crate::suite::{Metric, MetricSource};

pub use crate::artifact::run_result::MetricValue;

/// Every metric of a run.
pub fn extract_all(run_dir: &Path, metrics: &[Metric]) -> BTreeMap<String, MetricValue> {
    metrics
        .iter()
        .map(|m| (m.name.clone(), extract(run_dir, m)))
        .collect()
}

pub fn extract(run_dir: &Path, m: &Metric) -> MetricValue {
    let (value, samples, error) = match values(run_dir, m) {
        Ok((v, n)) if v.is_finite() => (Some(v), n, None),
        Ok((v, _)) => (None, 0, Some(format!("not a finite number: {v}"))),
        Err(e) => (None, 0, Some(e)),
    };
    MetricValue {
        value,
        unit: m.unit.clone(),
        samples,
        error,
    }
}

fn files(run_dir: &Path, from: &str) -> Result<Vec<PathBuf>, String> {
    if Path::new(from).is_absolute() || from.split('/').any(|c| c == "..") {
        return Err(format!("`from: {from}` must stay inside the run dir"));
    }
    let mut found: Vec<PathBuf> = if from.contains("**") {
        // Recursive patterns: the glob crate's walk.
        let pattern = format!(
            "{}/{from}",
            glob::Pattern::escape(&run_dir.display().to_string())
        );
        glob::glob(&pattern)
            .map_err(|e| format!("`from: {from}`: {e}"))?
            .flatten()
            .collect()
    } else {
        // One component at a time from the run dir: a literal one is
        // joined, a pattern lists its folder. (Globbing the absolute path
        // walks every folder above the run dir, for every run and metric.)
        let mut current = vec![run_dir.to_path_buf()];
        for comp in from.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !comp.contains(['*', '?', '[']) {
                current.iter_mut().for_each(|d| d.push(comp));
                continue;
            }
            let pat = glob::Pattern::new(comp).map_err(|e| format!("`from: {from}`: {e}"))?;
            let mut next = Vec::new();
            for d in &current {
                let Ok(rd) = std::fs::read_dir(d) else {
                    continue;
                };
                for e in rd.flatten() {
                    let name = e.file_name();
                    if name.to_str().is_some_and(|n| pat.matches(n)) {
                        next.push(d.join(name));
                    }
                }
            }
            current = next;
        }
        current
    };
    found.retain(|p| p.is_file());
    found.sort();
    if found.is_empty() {
        return Err(format!("no file matches `{from}`"));
    }
    Ok(found)
}

fn rel(run_dir: &Path, p: &Path) -> String {
    p.strip_prefix(run_dir).unwrap_or(p).display().to_string()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// A metric's regex, compiled once per thread rather than once per run
/// (compiling costs more than matching a short log).
fn compiled(pattern: &str) -> Result<regex::Regex, String> {
    thread_local! {
        static CACHE: std::cell::RefCell<BTreeMap<String, regex::Regex>> =
            const { std::cell::RefCell::new(BTreeMap::new()) };
    }
    CACHE.with(|c| {
        if let Some(re) = c.borrow().get(pattern) {
            return Ok(re.clone());
        }
        let re = regex::Regex::new(pattern).map_err(|e| format!("invalid regex: {e}"))?;
        let mut c = c.borrow_mut();
        if c.len() >= 64 {
            c.clear();
        }
        c.insert(pattern.to_string(), re.clone());
        Ok(re)
    })
}

/// (value, samples) or why not.
fn values(run_dir: &Path, m: &Metric) -> Result<(f64, u64), String> {
    let paths = files(run_dir, &m.from)?;
    match &m.source {
        MetricSource::Json { pointer } => {
            let mut v = Vec::new();
            for p in &paths {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("`{}`: {e}", rel(run_dir, p)))?;
                let doc: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("`{}` is not JSON: {e}", rel(run_dir, p)))?;
                let x = doc
                    .pointer(pointer)
                    .ok_or_else(|| format!("`{}` has nothing at {pointer}", rel(run_dir, p)))?;
                v.push(number(x).ok_or_else(|| {
                    format!("`{}`: {pointer} is not a number: {x}", rel(run_dir, p))
                })?);
            }
            Ok((mean(&v), v.len() as u64))
        }
        MetricSource::Regex { pattern, all } => {
            let re = compiled(pattern)?;
            let mut v = Vec::new();
            for p in &paths {
                let bytes = std::fs::read(p).map_err(|e| format!("`{}`: {e}", rel(run_dir, p)))?;
                let text = String::from_utf8_lossy(&bytes);
                for c in re.captures_iter(&text) {
                    let Some(g) = c.name("value") else { continue };
                    let x: f64 = g.as_str().trim().parse().map_err(|_| {
                        format!(
                            "`{}`: the match `{}` is not a number",
                            rel(run_dir, p),
                            g.as_str()
                        )
                    })?;
                    v.push(x);
                }
            }
            match (v.last(), all) {
                (None, _) => Err(format!(
                    "no match of /{pattern}/ in {}",
                    list(run_dir, &paths)
                )),
                (Some(&last), false) => Ok((last, 1)),
                (Some(_), true) => Ok((mean(&v), v.len() as u64)),
            }
        }
        MetricSource::Scrape {
            metric,
            labels,
            agg,
        } => super::scraped::aggregate(run_dir, &paths, metric, labels, agg),
        MetricSource::Csv {
            column,
            agg,
            filter,
        } => {
            let mut v = Vec::new();
            let mut rows = 0u64;
            for p in &paths {
                let mut r = csv::ReaderBuilder::new()
                    .flexible(true)
                    .from_path(p)
                    .map_err(|e| format!("`{}`: {e}", rel(run_dir, p)))?;
                let header = r
                    .headers()
                    .map_err(|e| format!("`{}`: {e}", rel(run_dir, p)))?
                    .clone();
                let col = |name: &str| header.iter().position(|h| h.trim() == name);
                let Some(ci) = col(column) else {
                    return Err(format!("`{}` has no column `{column}`", rel(run_dir, p)));
                };
                let mut wanted = Vec::new();
                for (k, want) in filter {
                    let Some(i) = col(k) else {
                        return Err(format!(
                            "`{}` has no column `{k}` (in `where`)",
                            rel(run_dir, p)
                        ));
                    };
                    wanted.push((i, want.as_str()));
                }
                for (line, rec) in r.records().enumerate() {
                    let rec = rec.map_err(|e| format!("`{}`: {e}", rel(run_dir, p)))?;
                    if !wanted
                        .iter()
                        .all(|(i, w)| rec.get(*i).map(str::trim) == Some(*w))
                    {
                        continue;
                    }
                    rows += 1;
                    if agg == "count" {
                        continue;
                    }
                    let cell = rec.get(ci).unwrap_or("").trim();
                    let x: f64 = cell.parse().map_err(|_| {
                        format!(
                            "`{}` line {}: `{column}` is not a number: `{cell}`",
                            rel(run_dir, p),
                            line + 2
                        )
                    })?;
                    v.push(x);
                }
            }
            if agg == "count" {
                return Ok((rows as f64, rows));
            }
            if v.is_empty() {
                return Err(format!("no rows to aggregate in {}", list(run_dir, &paths)));
            }
            let n = v.len() as u64;
            let last = v[v.len() - 1];
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let x = match agg.as_str() {
                "sum" => v.iter().sum(),
                "mean" => mean(&v),
                "min" => sorted[0],
                "max" => sorted[sorted.len() - 1],
                "p50" => percentile_sorted(&sorted, 0.5),
                "p90" => percentile_sorted(&sorted, 0.9),
                "p95" => percentile_sorted(&sorted, 0.95),
                "p99" => percentile_sorted(&sorted, 0.99),
                "last" => last,
                other => return Err(format!("unknown aggregation `{other}`")),
            };
            Ok((x, n))
        }
    }
}

fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn list(run_dir: &Path, paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|p| format!("`{}`", rel(run_dir, p)))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(from: &str, source: MetricSource) -> Metric {
        Metric {
            name: "m".into(),
            from: from.into(),
            span: crate::diag::Span::default(),
            source,
            unit: Some("ms".into()),
            better: None,
        }
    }

    fn csv_metric(agg: &str, filter: &[(&str, &str)]) -> Metric {
        metric(
            "hosts/*/w.csv",
            MetricSource::Csv {
                column: "lat".into(),
                agg: agg.into(),
                filter: filter
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )
    }

    fn run_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        for (f, text) in [
            (
                "hosts/a/w.csv",
                "id,kind,lat\n1,data,10\n2,data,20\n3,ctl,100\n",
            ),
            ("hosts/b/w.csv", "lat,kind,id\n30,data,4\n40,data,5\n"),
            ("hosts/c/bad.csv", "id,lat\n1,ten\n"),
            (
                "analysis/summary.json",
                r#"{"across": {"skew_p99_ms": 1.5, "s": "2.5", "no": [1]}}"#,
            ),
            ("logs/bench@h.out", "ops/s: 100\nops/s: 300\ndone\n"),
            ("logs/bench@g.out", "ops/s: 200\n"),
        ] {
            std::fs::create_dir_all(p.join(f).parent().expect("parent")).expect("mkdir");
            std::fs::write(p.join(f), text).expect("write");
        }
        d
    }

    fn value(m: &Metric, dir: &Path) -> Result<(f64, u64), String> {
        let v = extract(dir, m);
        match v.value {
            Some(x) => Ok((x, v.samples)),
            None => Err(v.error.expect("an error when there is no value")),
        }
    }

    #[test]
    fn from_globs_each_component_and_recursively() {
        let d = run_dir();
        let names = |from: &str| -> Vec<String> {
            files(d.path(), from)
                .map(|v| v.iter().map(|p| rel(d.path(), p)).collect())
                .unwrap_or_else(|e| vec![e])
        };
        assert_eq!(
            names("hosts/[ab]/*.csv"),
            ["hosts/a/w.csv", "hosts/b/w.csv"]
        );
        assert_eq!(names("./hosts/c/bad.csv"), ["hosts/c/bad.csv"]);
        assert_eq!(
            names("**/*.csv"),
            ["hosts/a/w.csv", "hosts/b/w.csv", "hosts/c/bad.csv"]
        );
        assert_eq!(names("hosts/*"), ["no file matches `hosts/*`"]);
        assert_eq!(
            names("logs/nope@*.out"),
            ["no file matches `logs/nope@*.out`"]
        );
    }

    #[test]
    fn csv_aggregates_rows_of_every_file_by_column_name() {
        let d = run_dir();
        let p = d.path();
        assert_eq!(value(&csv_metric("count", &[]), p), Ok((5.0, 5)));
        assert_eq!(
            value(&csv_metric("count", &[("kind", "data")]), p),
            Ok((4.0, 4))
        );
        assert_eq!(
            value(&csv_metric("sum", &[("kind", "data")]), p),
            Ok((100.0, 4))
        );
        assert_eq!(value(&csv_metric("mean", &[]), p), Ok((40.0, 5)));
        assert_eq!(value(&csv_metric("min", &[]), p), Ok((10.0, 5)));
        assert_eq!(value(&csv_metric("max", &[]), p), Ok((100.0, 5)));
        assert_eq!(value(&csv_metric("p50", &[]), p), Ok((30.0, 5)));
        // Sorted 10 20 30 40 100: rank 0.9 * 4 = 3.6 → 40 + 0.6 * 60.
        assert_eq!(
            value(&csv_metric("p90", &[]), p).map(|v| v.0.round()),
            Ok(76.0)
        );
        // Files in path order (a, b), rows in file order: the last is b's 40.
        assert_eq!(value(&csv_metric("last", &[]), p), Ok((40.0, 5)));
        assert_eq!(
            value(&csv_metric("count", &[("nope", "x")]), p),
            Err("`hosts/a/w.csv` has no column `nope` (in `where`)".into())
        );
        assert_eq!(
            value(&csv_metric("mean", &[("kind", "none")]), p),
            Err("no rows to aggregate in `hosts/a/w.csv`, `hosts/b/w.csv`".into())
        );
        let bad = metric(
            "hosts/c/*.csv",
            MetricSource::Csv {
                column: "lat".into(),
                agg: "mean".into(),
                filter: BTreeMap::new(),
            },
        );
        assert_eq!(
            value(&bad, p),
            Err("`hosts/c/bad.csv` line 2: `lat` is not a number: `ten`".into())
        );
    }

    #[test]
    fn json_reads_a_pointer_and_says_what_is_wrong() {
        let d = run_dir();
        let p = d.path();
        let j = |ptr: &str| {
            metric(
                "analysis/summary.json",
                MetricSource::Json {
                    pointer: ptr.into(),
                },
            )
        };
        assert_eq!(value(&j("/across/skew_p99_ms"), p), Ok((1.5, 1)));
        assert_eq!(value(&j("/across/s"), p), Ok((2.5, 1)));
        assert_eq!(
            value(&j("/across/missing"), p),
            Err("`analysis/summary.json` has nothing at /across/missing".into())
        );
        assert_eq!(
            value(&j("/across/no"), p),
            Err("`analysis/summary.json`: /across/no is not a number: [1]".into())
        );
        let none = metric(
            "analysis/*.missing",
            MetricSource::Json {
                pointer: "/a".into(),
            },
        );
        assert_eq!(
            value(&none, p),
            Err("no file matches `analysis/*.missing`".into())
        );
        let out = metric(
            "../x",
            MetricSource::Json {
                pointer: "/a".into(),
            },
        );
        assert_eq!(
            value(&out, p),
            Err("`from: ../x` must stay inside the run dir".into())
        );
    }

    #[test]
    fn regex_takes_the_last_match_or_the_mean_of_all() {
        let d = run_dir();
        let p = d.path();
        let r = |all| {
            metric(
                "logs/bench@*.out",
                MetricSource::Regex {
                    pattern: r"ops/s: (?P<value>[0-9.]+)".into(),
                    all,
                },
            )
        };
        // Files sorted: bench@g (200), bench@h (100, 300).
        assert_eq!(value(&r(false), p), Ok((300.0, 1)));
        assert_eq!(value(&r(true), p), Ok((200.0, 3)));
        let miss = metric(
            "logs/*.out",
            MetricSource::Regex {
                pattern: r"qps=(?P<value>\d+)".into(),
                all: false,
            },
        );
        assert_eq!(
            value(&miss, p),
            Err(
                r"no match of /qps=(?P<value>\d+)/ in `logs/bench@g.out`, `logs/bench@h.out`"
                    .into()
            )
        );
    }
}
