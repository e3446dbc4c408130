//! `flow export`: a real ClickHouse round trip, and the Parquet files read
//! by DuckDB (from PyPI, through `FLOW_TEST_TOOLS`).

mod clickhouse;

use std::collections::BTreeMap;
use std::path::Path;

use super::run::Project;
use super::{Flow, test_tool as tool};
use clickhouse::ClickHouse;

/// Two local hosts, each writing timestamped events; two modes, two
/// variants, two repetitions; a timeline of both hosts' events.
fn project() -> Project {
    Project::new()
        .file(
            "hosts.yaml",
            "hosts:\n  a: { address: local, roles: [node] }\n  b: { address: local, roles: [node] }\n",
        )
        .file(
            "suite.yaml",
            "suite: t\nhosts: hosts.yaml\nworkloads:\n  - workload: workload.yaml\n    modes: [baseline, slow]\n    repetitions: 2\n    matrix:\n      n: [10, 3]\n",
        )
        .file(
            "workload.yaml",
            r#"workload: ev
params: { n: 1, extra: 0 }
steps:
  emit:
    on: node
    run: >-
      echo seq,t,what > events.csv;
      for i in 1 2 3; do echo "$i,$(date +%s%N),tick" >> events.csv; done;
      echo "value: $(( {{ params.n }} * 10 + {{ params.extra }} + {{ run.repetition }} ))"
  get: { kind: fetch, from: node, paths: [events.csv] }
timeline:
  ticks: { files: events.csv, time: t, unit: ns }
metrics:
  v: { from: "logs/emit@a.out", regex: "value: (?P<value>[0-9]+)", unit: ms }
  events: { from: "hosts/*/events.csv", csv: { column: seq, agg: count } }
modes:
  slow: { params: { extra: 7 } }
"#,
        )
}

/// `summary.csv` as (workload, mode, variant, metric) → mean.
fn summary_means(artifact: &Path) -> BTreeMap<(String, String, String, String), f64> {
    let text = std::fs::read_to_string(artifact.join("summary.csv")).expect("summary.csv");
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let h = rd.headers().expect("header").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect(n);
    let (w, m, v, k, mean) = (
        col("workload"),
        col("mode"),
        col("variant"),
        col("metric"),
        col("mean"),
    );
    rd.records()
        .map(|r| r.expect("a row"))
        .map(|r| {
            (
                (
                    r[w].to_string(),
                    r[m].to_string(),
                    r[v].to_string(),
                    r[k].to_string(),
                ),
                r[mean].parse::<f64>().expect("a mean"),
            )
        })
        .collect()
}

fn artifact_id(p: &Path) -> String {
    p.file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned()
}

fn timeline_rows(artifact: &Path) -> usize {
    std::fs::read_dir(artifact.join("runs"))
        .expect("runs")
        .flatten()
        .map(|e| {
            std::fs::read_to_string(e.path().join("analysis/timeline.csv"))
                .expect("each run has its timeline")
                .lines()
                .count()
                - 1
        })
        .sum()
}

#[test]
fn an_artifact_goes_into_clickhouse_whole_and_only_once() {
    let ch = ClickHouse::start();
    let p = project();
    let (stdout, _) = p.run(&[], 0);
    assert!(stdout.contains("8 runs: 8 passed"), "{stdout}");
    let art = p.artifact();
    let id = artifact_id(&art);
    // Each run's timeline: both hosts' three events, on one clock, sorted.
    assert_eq!(timeline_rows(&art), 8 * 6);
    let export = |code| {
        Flow::new()
            .args([
                "export",
                &id,
                "--clickhouse",
                &ch.url(),
                "--database",
                "lab",
                "--artifacts",
                "artifacts",
            ])
            .cwd(p.path())
            .expect(code)
    };
    let (stdout, stderr) = export(0);
    assert!(
        stdout.contains(&format!("exported {id} to ClickHouse (lab.flow_*): 8 runs, 16 metrics, 8 summary, 48 timeline, counted back")),
        "{stdout}{stderr}"
    );
    let one = |sql: &str| ch.query(&sql.replace("ID", &format!("'{id}'")));
    assert_eq!(
        one("SELECT count() FROM lab.flow_runs WHERE artifact_id = ID"),
        "8"
    );
    assert_eq!(
        one("SELECT countIf(status = 'passed') FROM lab.flow_runs WHERE artifact_id = ID"),
        "8"
    );
    assert_eq!(
        one("SELECT count() FROM lab.flow_timeline WHERE artifact_id = ID"),
        "48"
    );
    assert_eq!(
        one(
            "SELECT uniqExact(host) FROM lab.flow_timeline WHERE artifact_id = ID AND bound_ns = 0"
        ),
        "2",
        "local hosts: the controller's clock"
    );
    // Means computed by ClickHouse from the raw values, and the exported
    // summary, both equal summary.csv.
    let expected = summary_means(&art);
    assert_eq!(expected.len(), 8, "{expected:?}");
    for (table, sql) in [
        (
            "flow_metrics",
            "SELECT workload, mode, variant, metric, avg(value) FROM lab.flow_metrics WHERE artifact_id = ID GROUP BY workload, mode, variant, metric FORMAT TSV",
        ),
        (
            "flow_summary",
            "SELECT workload, mode, variant, metric, mean FROM lab.flow_summary WHERE artifact_id = ID FORMAT TSV",
        ),
    ] {
        let got: BTreeMap<(String, String, String, String), f64> = one(sql)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    (f[0].into(), f[1].into(), f[2].into(), f[3].into()),
                    f[4].parse().expect("a number"),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{table}: {got:?}");
        for (k, v) in &expected {
            let g = got.get(k).unwrap_or_else(|| panic!("{table} lacks {k:?}"));
            assert!((g - v).abs() < 1e-9, "{table} {k:?}: {g} != {v}");
        }
    }
    // Again: refused, nothing inserted twice.
    let (_, stderr) = export(1);
    assert!(
        stderr.contains("is already in ClickHouse") && stderr.contains("nothing was inserted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ALTER TABLE `lab`.flow_runs DELETE WHERE artifact_id"),
        "{stderr}"
    );
    assert_eq!(
        one("SELECT count() FROM lab.flow_runs WHERE artifact_id = ID"),
        "8"
    );
    // A server that is not there.
    let closed = format!("http://127.0.0.1:{}", ch.port.wrapping_add(1).max(1024));
    drop(ch);
    let (_, stderr) = Flow::new()
        .args([
            "export",
            &id,
            "--clickhouse",
            &closed,
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(1);
    assert!(stderr.contains("cannot connect to 127.0.0.1:"), "{stderr}");
}

#[test]
#[ignore = "needs DuckDB from PyPI: scripts/test.sh installs it"]
fn parquet_files_read_back_in_duckdb_with_the_summarys_means() {
    let p = project();
    p.run(&[], 0);
    let art = p.artifact();
    let out = p.path().join("out");
    let (stdout, _) = Flow::new()
        .args([
            "export",
            "--format",
            "parquet",
            "--out",
            "out",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    assert!(
        stdout.contains("8 runs, 16 metrics, 8 summary, 48 timeline"),
        "{stdout}"
    );
    let script = format!(
        r#"
import duckdb, json
d = "{}"
c = duckdb.connect()
q = lambda s: c.sql(s.replace("D/", d + "/")).fetchall()
print(json.dumps({{
  "runs": q("select count(*) from 'D/runs.parquet'")[0][0],
  "timeline": q("select count(*), count(distinct host) from 'D/timeline.parquet'")[0],
  "nulls": q("select count(*) from 'D/metrics.parquet' where value is null")[0][0],
  "types": q("select column_name, column_type from (describe select * from 'D/summary.parquet') where column_name in ('mean', 'n', 'significant', 'variant') order by column_name"),
  "means": q("select workload, mode, variant, metric, avg(value) from 'D/metrics.parquet' group by all"),
  "summary": q("select workload, mode, variant, metric, mean from 'D/summary.parquet'"),
}}))
"#,
        out.display()
    );
    let run = std::process::Command::new(tool("python"))
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(v["runs"], 8);
    assert_eq!(v["timeline"], serde_json::json!([48, 2]));
    assert_eq!(v["nulls"], 0);
    assert_eq!(
        v["types"],
        serde_json::json!([
            ["mean", "DOUBLE"],
            ["n", "BIGINT"],
            ["significant", "BOOLEAN"],
            ["variant", "VARCHAR"]
        ])
    );
    let expected = summary_means(&art);
    for key in ["means", "summary"] {
        let rows = v[key].as_array().expect("rows");
        assert_eq!(rows.len(), expected.len(), "{key}: {rows:?}");
        for r in rows {
            let k = (
                r[0].as_str().unwrap_or("").to_string(),
                r[1].as_str().unwrap_or("").to_string(),
                r[2].as_str().unwrap_or("").to_string(),
                r[3].as_str().unwrap_or("").to_string(),
            );
            let want = expected.get(&k).unwrap_or_else(|| panic!("{key}: {k:?}"));
            assert!(
                (r[4].as_f64().unwrap_or(f64::NAN) - want).abs() < 1e-9,
                "{key} {k:?}"
            );
        }
    }
}
