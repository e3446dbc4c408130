//! One corrected timeline per run: the event files a workload's
//! `timeline:` names, found below each host's fetched folder, merged into
//! `analysis/timeline.csv` on the controller's clock.
//!
//! Each event's time is read on its host's wall clock and put on the
//! controller's with the offsets flow measured for that host (before,
//! through and after the run; interpolated between the two measurements
//! around the instant), with the error bound of those measurements. Local
//! hosts share the controller's clock (bound 0). A remote host without a
//! measurement is an error, never a guess. Skew that shows only in the
//! data (matching ticks between hosts) is not estimated.

use std::path::Path;

use crate::artifact::run_result::RunResult;
use crate::suite::TimelineSource;

/// Where the merged timeline goes, relative to the run's folder.
pub const TIMELINE_CSV: &str = "analysis/timeline.csv";

/// Columns flow writes besides the events' own.
const OWN: [&str; 6] = [
    "host",
    "source",
    "file",
    "local_ns",
    "corrected_ns",
    "bound_ns",
];

/// What a merge made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub events: usize,
    pub hosts: usize,
    pub files: usize,
    /// The largest error bound of a corrected time.
    pub max_bound_ns: u64,
}

struct Event {
    host: String,
    source: String,
    file: String,
    /// (column index, value).
    fields: Vec<(usize, String)>,
    local_ns: i128,
    corrected_ns: i128,
    bound_ns: u64,
}

/// `text` (a decimal number of `unit`s) in nanoseconds, exactly when it
/// has no exponent.
pub fn parse_time(text: &str, unit: &str) -> Option<i128> {
    let scale: i128 = match unit {
        "s" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" => 1_000,
        "ns" => 1,
        _ => return None,
    };
    let t = text.trim();
    if t.contains(['e', 'E']) {
        let v: f64 = t.parse().ok().filter(|v: &f64| v.is_finite())?;
        return Some((v * scale as f64).round() as i128);
    }
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 30
    {
        return None;
    }
    let mut ns = if int.is_empty() {
        0
    } else {
        int.parse::<i128>().ok()?
    } * scale;
    // Digits past a nanosecond are dropped.
    let mut place = scale / 10;
    for b in frac.bytes() {
        if place == 0 {
            break;
        }
        ns += i128::from(b - b'0') * place;
        place /= 10;
    }
    Some(if neg { -ns } else { ns })
}

/// A file's format: as declared, or by its extension.
fn format_of(src: &TimelineSource, path: &Path) -> Result<&'static str, String> {
    match src.format.as_deref() {
        Some("csv") => return Ok("csv"),
        Some("jsonl") => return Ok("jsonl"),
        _ => {}
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok("csv"),
        Some("jsonl" | "ndjson" | "json") => Ok("jsonl"),
        _ => Err(format!(
            "timeline `{}`: cannot tell the format of `{}` by its name: set `format: csv` or `format: jsonl`",
            src.name,
            path.display()
        )),
    }
}

/// A JSON value as a cell.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The rows of one event file: (fields by name, in file order), time text.
type Rows = Vec<(Vec<(String, String)>, String)>;

fn read_rows(path: &Path, format: &str, time: &str, shown: &str) -> Result<Rows, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    let mut out = Vec::new();
    if format == "csv" {
        let mut rd = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        let headers = rd.headers().map_err(|e| format!("`{shown}`: {e}"))?.clone();
        let Some(ti) = headers.iter().position(|h| h == time) else {
            return Err(format!(
                "`{shown}` has no column `{time}` (its columns: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ));
        };
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.map_err(|e| format!("`{shown}`: {e}"))?;
            let fields: Vec<(String, String)> = headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            let t = rec
                .get(ti)
                .ok_or_else(|| format!("`{shown}` line {}: no `{time}`", i + 2))?;
            out.push((fields, t.to_string()));
        }
    } else {
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("`{shown}` line {}: not JSON: {e}", i + 1))?;
            let Some(obj) = v.as_object() else {
                return Err(format!("`{shown}` line {}: not a JSON object", i + 1));
            };
            let t = obj
                .get(time)
                .map(cell)
                .ok_or_else(|| format!("`{shown}` line {}: no field `{time}`", i + 1))?;
            out.push((obj.iter().map(|(k, v)| (k.clone(), cell(v))).collect(), t));
        }
    }
    Ok(out)
}

/// Merges the run's event files into `analysis/timeline.csv` (written
/// whole, then renamed into place). Every problem is returned; on any,
/// the file is not written (and an older one is removed: it would not be
/// this run's data as it is now).
pub fn merge(
    run_dir: &Path,
    result: &RunResult,
    sources: &[TimelineSource],
) -> Result<Merged, Vec<String>> {
    let out_path = run_dir.join(TIMELINE_CSV);
    let r = collect(run_dir, result, sources).and_then(|(events, columns, files)| {
        write(&out_path, &events, &columns).map_err(|e| vec![e])?;
        let hosts: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e.host.as_str()).collect();
        Ok(Merged {
            events: events.len(),
            hosts: hosts.len(),
            files,
            max_bound_ns: events.iter().map(|e| e.bound_ns).max().unwrap_or(0),
        })
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&out_path);
    }
    r
}

type Collected = (Vec<Event>, Vec<String>, usize);

fn collect(
    run_dir: &Path,
    result: &RunResult,
    sources: &[TimelineSource],
) -> Result<Collected, Vec<String>> {
    let mut errors = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut files = 0usize;
    let hosts_dir = run_dir.join("hosts");
    let mut hosts: Vec<String> = std::fs::read_dir(&hosts_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    for src in sources {
        let mut found = 0usize;
        for host in &hosts {
            let base = hosts_dir.join(host);
            let pattern = format!(
                "{}/{}",
                glob::Pattern::escape(&base.display().to_string()),
                src.files
            );
            let Ok(paths) = glob::glob(&pattern) else {
                errors.push(format!(
                    "timeline `{}`: `{}` is not a glob",
                    src.name, src.files
                ));
                continue;
            };
            let mut paths: Vec<_> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            if paths.is_empty() {
                continue;
            }
            // The host's clock against the controller's.
            let points: Vec<&crate::clock::ClockOffset> = result
                .clocks
                .get(host)
                .map(|c| c.before.iter().chain(&c.samples).chain(&c.after).collect())
                .unwrap_or_default();
            let remote = result
                .steps
                .iter()
                .any(|s| s.host == *host && s.host_times.is_some());
            if points.is_empty() && remote {
                errors.push(format!(
                    "timeline `{}`: host `{host}` has events but no clock measurement in run_result.json, so its times cannot be put on the controller's clock",
                    src.name
                ));
                continue;
            }
            for path in paths {
                found += 1;
                files += 1;
                let rel = path
                    .strip_prefix(&base)
                    .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
                let shown = format!("hosts/{host}/{rel}");
                let format = match format_of(src, &path) {
                    Ok(f) => f,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let rows = match read_rows(&path, format, &src.time, &shown) {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(format!("timeline `{}`: {e}", src.name));
                        continue;
                    }
                };
                for (i, (fields, t)) in rows.into_iter().enumerate() {
                    let Some(local) = parse_time(&t, &src.unit) else {
                        errors.push(format!(
                            "timeline `{}`: `{shown}` event {}: `{}` is `{t}`, not a number of {}",
                            src.name,
                            i + 1,
                            src.time,
                            src.unit
                        ));
                        break;
                    };
                    let (corrected, bound) = if points.is_empty() {
                        (local, 0)
                    } else {
                        match u64::try_from(local)
                            .ok()
                            .and_then(|h| crate::clock::to_controller_points(h, &points))
                        {
                            Some((c, b)) => (i128::from(c), b),
                            None => {
                                errors.push(format!(
                                    "timeline `{}`: `{shown}` event {}: time {local} ns is not on the Unix epoch (check `unit: {}`)",
                                    src.name,
                                    i + 1,
                                    src.unit
                                ));
                                break;
                            }
                        }
                    };
                    let fields = fields
                        .into_iter()
                        .map(|(k, v)| {
                            // An event field named like one of flow's columns
                            // keeps its value under `event.<name>`.
                            let k = if OWN.contains(&k.as_str()) {
                                format!("event.{k}")
                            } else {
                                k
                            };
                            let at = match columns.iter().position(|c| *c == k) {
                                Some(i) => i,
                                None => {
                                    columns.push(k);
                                    columns.len() - 1
                                }
                            };
                            (at, v)
                        })
                        .collect();
                    events.push(Event {
                        host: host.clone(),
                        source: src.name.clone(),
                        file: rel.clone(),
                        fields,
                        local_ns: local,
                        corrected_ns: corrected,
                        bound_ns: bound,
                    });
                }
            }
        }
        if found == 0 {
            errors.push(format!(
                "timeline `{}`: no file matches `{}` below any host's folder (`hosts/<host>/`; {})",
                src.name,
                src.files,
                if hosts.is_empty() {
                    "nothing was fetched".to_string()
                } else {
                    format!("hosts fetched: {}", hosts.join(", "))
                }
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Stable: events at one instant keep their host, source and file order.
    events.sort_by_key(|e| e.corrected_ns);
    Ok((events, columns, files))
}

fn write(path: &Path, events: &[Event], columns: &[String]) -> Result<(), String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = vec!["host", "source", "file"];
    header.extend(columns.iter().map(String::as_str));
    header.extend(["local_ns", "corrected_ns", "bound_ns"]);
    let e = |e: csv::Error| format!("cannot write {}: {e}", path.display());
    w.write_record(&header).map_err(e)?;
    let mut row: Vec<String> = Vec::with_capacity(header.len());
    for ev in events {
        row.clear();
        row.extend([ev.host.clone(), ev.source.clone(), ev.file.clone()]);
        row.resize(3 + columns.len(), String::new());
        for (i, v) in &ev.fields {
            row[3 + i] = v.clone();
        }
        row.extend([
            ev.local_ns.to_string(),
            ev.corrected_ns.to_string(),
            ev.bound_ns.to_string(),
        ]);
        w.write_record(&row).map_err(e)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|x| format!("cannot write {}: {x}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|x| format!("cannot create {}: {x}", dir.display()))?;
    }
    crate::artifact::atomic_write(path, &bytes)
        .map_err(|x| format!("cannot write {}: {x}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockOffset;

    #[test]
    fn times_parse_exactly_in_every_unit() {
        assert_eq!(
            parse_time("1700000000.123456789", "s"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_time("1.5", "ms"), Some(1_500_000));
        assert_eq!(parse_time("-2", "us"), Some(-2000));
        assert_eq!(parse_time("12", "ns"), Some(12));
        assert_eq!(parse_time("1.7e9", "s"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("x", "s"), None);
        assert_eq!(parse_time("", "s"), None);
        assert_eq!(parse_time("1", "h"), None);
    }

    fn offset(offset_ns: i64, bound_ns: u64, at_ns: u64) -> ClockOffset {
        ClockOffset {
            offset_ns,
            bound_ns,
            rtt_ns: bound_ns * 2,
            probes: 5,
            at_ns,
        }
    }

    /// Four hosts whose clocks are off by known amounts (a made-up clock
    /// record, as flow would have measured it); each logs the same true
    /// instants on its own clock. Merged, every corrected time is within
    /// its bound of the truth, and the order is the true order.
    #[test]
    fn four_hosts_with_known_offsets_merge_onto_the_controllers_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = 1_800_000_000_000_000_000u64; // true times, controller's clock
        let hosts: [(&str, i64, u64); 4] = [
            ("a", 0, 40_000),
            ("b", 2_500_000_000, 70_000), // 2.5 s ahead
            ("c", -750_000_000, 15_000),  // 0.75 s behind
            ("d", 12_000, 5_000),         // 12 µs ahead
        ];
        let mut result: RunResult = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": "r", "workload": "w", "mode": "baseline",
            "variant": "default", "repetition": 1, "status": "passed",
            "started": {"wall_ns": t, "mono_ns": 0},
            "steps": [], "fetch": {"files": 0, "bytes": 0, "missing": 0}
        }))
        .expect("a run result");
        for (i, (h, off, bound)) in hosts.iter().enumerate() {
            let c = crate::artifact::run_result::HostClock {
                before: Some(offset(*off, *bound, t - 1_000_000_000)),
                after: Some(offset(*off, *bound, t + 100_000_000_000)),
                ..Default::default()
            };
            result.clocks.insert((*h).to_string(), c);
            let folder = dir.path().join("hosts").join(h);
            std::fs::create_dir_all(&folder).expect("mkdir");
            // Event k of host i happens at t + k s + i ms (true time).
            let mut csv = String::from("seq,ts\n");
            let mut jsonl = String::new();
            for k in 0..5u64 {
                let truth = t + k * 1_000_000_000 + i as u64 * 1_000_000;
                let local = (truth as i128 + i128::from(*off)) as u64;
                csv.push_str(&format!(
                    "{k},{}.{:09}\n",
                    local / 1_000_000_000,
                    local % 1_000_000_000
                ));
                jsonl.push_str(&format!(
                    "{{\"what\":\"tick\",\"t_us\":{}}}\n",
                    local / 1000
                ));
            }
            std::fs::write(folder.join("events.csv"), csv).expect("write");
            std::fs::write(folder.join("ticks.jsonl"), jsonl).expect("write");
        }
        let sources = [
            TimelineSource {
                name: "events".into(),
                files: "events.csv".into(),
                time: "ts".into(),
                unit: "s".into(),
                format: None,
            },
            TimelineSource {
                name: "ticks".into(),
                files: "*.jsonl".into(),
                time: "t_us".into(),
                unit: "us".into(),
                format: None,
            },
        ];
        let m = merge(dir.path(), &result, &sources).expect("merged");
        assert_eq!((m.events, m.hosts, m.files), (40, 4, 8));
        assert_eq!(m.max_bound_ns, 70_000);
        let text = std::fs::read_to_string(dir.path().join(TIMELINE_CSV)).expect("written");
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = rd
            .headers()
            .expect("header")
            .iter()
            .map(String::from)
            .collect();
        assert_eq!(
            header,
            [
                "host",
                "source",
                "file",
                "seq",
                "ts",
                "t_us",
                "what",
                "local_ns",
                "corrected_ns",
                "bound_ns"
            ]
        );
        let mut last = 0i128;
        for rec in rd.records() {
            let rec = rec.expect("a row");
            let host = &rec[0];
            let i = hosts.iter().position(|h| h.0 == host).expect("a host");
            let corrected: i128 = rec[8].parse().expect("corrected");
            let bound: i128 = rec[9].parse().expect("bound");
            assert!(corrected >= last, "sorted");
            last = corrected;
            // The truth: a whole second plus the host's millisecond (the
            // JSON source keeps microseconds only).
            let since = corrected - i128::from(t) - i as i128 * 1_000_000;
            let k = (since as f64 / 1e9).round() as i128;
            let err = (since - k * 1_000_000_000).abs();
            assert!(
                err <= bound + 1000,
                "host {host}: off by {err} ns, bound {bound}"
            );
        }
    }

    #[test]
    fn missing_files_columns_and_clocks_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("hosts/n1");
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("e.csv"), "a,b\n1,2\n").expect("write");
        std::fs::write(dir.path().join("hosts/n1/old"), "").expect("write");
        let result: RunResult = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": "r", "workload": "w", "mode": "baseline",
            "variant": "default", "repetition": 1, "status": "passed",
            "started": {"wall_ns": 1, "mono_ns": 0},
            "steps": [{"id": "s@n1", "step": "s", "host": "n1", "kind": "task",
                       "status": "passed", "attempts": 1, "host_times": {"started_host_ns": 5}}],
            "fetch": {"files": 0, "bytes": 0, "missing": 0}
        }))
        .expect("a run result");
        let src = |files: &str, time: &str| TimelineSource {
            name: "e".into(),
            files: files.into(),
            time: time.into(),
            unit: "s".into(),
            format: None,
        };
        let errs = merge(dir.path(), &result, &[src("nothing.csv", "a")]).expect_err("no file");
        assert!(
            errs[0].contains("no file matches `nothing.csv`") && errs[0].contains("n1"),
            "{errs:?}"
        );
        let errs = merge(dir.path(), &result, &[src("e.csv", "a")]).expect_err("no clock");
        assert!(errs[0].contains("no clock measurement"), "{errs:?}");
        assert!(!dir.path().join(TIMELINE_CSV).exists());
    }
}
