//! `scrape:` monitors against a real Prometheus endpoint: Python's
//! `prometheus_client` (from PyPI, through `FLOW_TEST_TOOLS`) serving a
//! counter that rises by one on every scrape and a gauge at 42.

use serde_json::Value;

use crate::run::Project;
use crate::{free_port, test_tool};

const EXPORTER: &str = r#"import sys, time
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

class Served:
    n = 0
    def collect(self):
        Served.n += 1
        c = CounterMetricFamily("served", "Scrapes served", labels=["kind"])
        c.add_metric(["one"], Served.n)
        c.add_metric(['tw"o, 2'], 2 * Served.n)
        yield c
        yield GaugeMetricFamily("answer", "The answer", value=42)

REGISTRY.register(Served())
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
time.sleep(120)
"#;

fn project(python: &str, port: u16, dead: u16) -> Project {
    let p = Project::new().file("exporter.py", EXPORTER);
    let exporter = p.path().join("exporter.py").display().to_string();
    p
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - workload: workload.yaml\n    modes: [baseline, dead]\n",
        )
        .file(
            "workload.yaml",
            &format!(
                r#"workload: scr
params: {{ scrape_port: {port} }}
steps:
  exporter:
    kind: service
    run: "exec {python} {exporter} {port}"
    ready: {{ port: {port} }}
  observe:
    kind: monitor
    needs: [exporter]
    scrape: {{ url: "http://127.0.0.1:{{{{ params.scrape_port }}}}/metrics", every: 200ms }}
  work: {{ needs: [observe], run: "sleep 2" }}
metrics:
  answer: {{ from: "logs/observe@local.out", scrape: {{ metric: answer }} }}
  served: {{ from: "logs/observe@local.out", scrape: {{ metric: served_total, labels: {{ kind: one }}, agg: increase }} }}
  both: {{ from: "logs/observe@local.out", scrape: {{ metric: served_total, agg: increase }} }}
  per_second: {{ from: "logs/observe@local.out", scrape: {{ metric: served_total, labels: {{ kind: one }}, agg: rate }} }}
modes:
  dead: {{ params: {{ scrape_port: {dead} }} }}
"#
            ),
        )
}

fn json(p: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json")
}

#[test]
#[ignore = "needs prometheus_client from PyPI: scripts/test.sh installs it"]
fn a_scrape_of_a_real_endpoint_is_extracted_as_metrics_and_a_dead_one_fails_the_run() {
    let python = test_tool("python3");
    let p = project(&python.display().to_string(), free_port(), free_port());
    // One run passes, the other fails: flow says so with exit code 1.
    p.run(&[], 1);
    let runs = p.artifact().join("runs");
    let mut dirs: Vec<_> = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let (mut good, mut dead) = (None, None);
    for d in dirs {
        let r = json(&d.join("run_result.json"));
        match r["mode"].as_str() {
            Some("baseline") => good = Some((d, r)),
            Some("dead") => dead = Some((d, r)),
            m => panic!("mode {m:?}"),
        }
    }
    let (dir, r) = good.expect("the baseline run");
    assert_eq!(r["status"], "passed", "{r:#}");

    // The log is the series: K scrapes of each sample, the counter rising
    // by one per scrape; labels kept whole (quote, comma and all).
    let log = std::fs::read_to_string(dir.join("logs/observe@local.out")).expect("log");
    let mut rows = csv::Reader::from_reader(log.as_bytes());
    assert_eq!(
        rows.headers().expect("header").iter().collect::<Vec<_>>(),
        ["time_ns", "metric", "labels", "value"]
    );
    let mut one: Vec<(i64, f64)> = Vec::new();
    let mut two = 0;
    for rec in rows.records() {
        let rec = rec.expect("a row");
        if &rec[1] == "served_total" && &rec[2] == r#"kind="one""# {
            let (Ok(t), Ok(v)) = (rec[0].parse::<i64>(), rec[3].parse::<f64>()) else {
                panic!("{rec:?} in\n{log}");
            };
            one.push((t, v));
        }
        if &rec[1] == "served_total" && &rec[2] == r#"kind="tw\"o, 2""# {
            two += 1;
        }
    }
    let k = one.len();
    assert!(k >= 5, "{k} scrapes in 2s every 200ms:\n{log}");
    assert_eq!(two, k, "both series every scrape");
    assert!(
        one.windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 == w[0].1 + 1.0),
        "{one:?}"
    );

    let m = &r["metrics"];
    assert_eq!(m["answer"]["value"], 42.0, "{m:#}");
    assert_eq!(m["served"]["value"], (k - 1) as f64, "{m:#}");
    assert_eq!(m["both"]["value"], 3.0 * (k - 1) as f64, "{m:#}");
    let span = (one[k - 1].0 - one[0].0) as f64 / 1e9;
    let rate = m["per_second"]["value"].as_f64().expect("a rate");
    assert!(
        (rate - (k - 1) as f64 / span).abs() < 1e-9,
        "{rate} vs {k} in {span}s"
    );
    assert!((3.0..=7.0).contains(&rate), "about 5 per second: {rate}");

    // The plan says what ran: the endpoint and interval, and the poller.
    let plan = json(&dir.join("plan.json"));
    let step = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "observe@local")
        .expect("the scrape step");
    assert_eq!(step["scrape"]["every_ms"], 200);
    assert_eq!(step["run"]["argv"][0], "sh", "{step:#}");

    // Nothing listening: every scrape failed, the step and the run fail
    // and say why; the metrics have errors, never values.
    let (dir, r) = dead.expect("the dead run");
    assert_eq!(r["status"], "failed", "{r:#}");
    let st = r["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "observe@local")
        .expect("observe");
    assert_eq!(st["status"], "failed", "{st:#}");
    assert!(
        st["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("exited with code 1 when stopped")),
        "{st:#}"
    );
    let err = std::fs::read_to_string(dir.join("logs/observe@local.err")).expect("stderr");
    assert!(err.contains("no scrape of http://127.0.0.1:"), "{err}");
    assert!(r["metrics"]["answer"]["value"].is_null(), "{r:#}");
}
