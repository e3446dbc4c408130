//! Plans that say what runs: templated list items each rendered, labels that
//! describe the params a run has, input that cannot be read refused at
//! once, and failures and empty metrics that say why.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::run::Project;
use super::{Flow, redact, root};

const LISTS: &str = "tests/fixtures/templated-lists/suite.yaml";

fn plan_json(suite: &str, extra: &[&str]) -> (Value, String) {
    let (stdout, stderr) = Flow::new()
        .args(["plan", "--suite", suite, "--dry-run", "--format", "json"])
        .args(["--artifacts", "/artifacts"])
        .args(extra)
        .cwd(&root())
        .expect(0);
    (
        serde_json::from_str(&redact(&stdout)).expect("valid JSON"),
        stderr,
    )
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

#[test]
fn every_templated_list_item_renders_as_itself_in_files_on_from_and_paths() {
    let (v, _) = plan_json(LISTS, &[]);
    insta::assert_snapshot!(
        "plan__templated_lists_json",
        serde_json::to_string_pretty(&v).expect("prints")
    );
    let run = &v["runs"][0];
    let files: Vec<&str> = run["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        files[0].ends_with("/one.txt") && files[1].ends_with("/two.txt"),
        "{files:?}"
    );
    // `on:` and `from:` select both roles, so both hosts.
    assert_eq!(run["hosts"], serde_json::json!(["h1", "h2"]));
    step(run, "write@h1");
    step(run, "write@h2");
    for host in ["h1", "h2"] {
        assert_eq!(
            step(run, &format!("get@{host}"))["paths"],
            serde_json::json!(["data.csv", "debug.log"])
        );
    }
    assert_eq!(run["metrics"][0]["from"], "hosts/*/data.csv");
}

#[test]
fn a_run_of_templated_lists_fetches_every_file_from_every_host() {
    let p = Project::new();
    let src = root().join("tests/fixtures/templated-lists");
    for f in [
        "suite.yaml",
        "workload.yaml",
        "hosts.yaml",
        "one.txt",
        "two.txt",
    ] {
        std::fs::copy(src.join(f), p.path().join(f)).expect("copy fixture");
    }
    let (stdout, stderr) = p.run(&[], 0);
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let run = p.run_dir();
    for host in ["h1", "h2"] {
        for f in ["data.csv", "debug.log"] {
            assert!(
                run.join("hosts").join(host).join(f).is_file(),
                "{host}/{f} not fetched"
            );
        }
        // Both pushed files are on each host.
        let work = p.artifact().join("work").join(host).join("runs");
        let pushed: Vec<_> = std::fs::read_dir(&work)
            .expect("work dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(pushed.len(), 1);
        assert_eq!(
            std::fs::read_to_string(pushed[0].join("two.txt")).expect("two.txt"),
            "two\n"
        );
    }
    let result: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("run_result.json")).expect("run_result.json"),
    )
    .expect("json");
    assert_eq!(result["fetch"]["files"], 4, "{result}");
    assert!(result["metrics"]["rows"]["value"].is_number(), "{result}");
}

#[test]
fn set_over_a_matrix_key_labels_the_variant_with_what_runs() {
    let (v, stderr) = plan_json("streaming", &["--set", "num_events=100"]);
    let runs = v["runs"].as_array().expect("runs");
    // Two points (50, 100) became one variant: two repetitions, not four
    // runs with two ids each twice.
    assert_eq!(runs.len(), 2, "{v}");
    for r in runs {
        assert_eq!(r["variant"], "num_events=100");
        assert_eq!(r["variant_params"]["num_events"], 100);
        assert_eq!(r["params"]["num_events"], 100);
    }
    assert!(
        stderr.contains(
            "warning: `--set` fixes matrix key `num_events` of workload `streaming`: its 2 matrix points run as 1 variant"
        ),
        "{stderr}"
    );
    // The same run as without --set at that point: the same id.
    let (plain, _) = plan_json("streaming", &[]);
    let ids = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["variant"] == "num_events=100")
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(ids(&v), ids(&plain));
    // The text header counts what runs.
    let (text, _) = Flow::new()
        .args(["plan", "--suite", "streaming", "--dry-run"])
        .args(["--set", "num_events=100"])
        .cwd(&root())
        .expect(0);
    assert!(
        text.contains("streaming: 1 mode × 1 variant × 2 repetitions = 2 runs"),
        "{text}"
    );
    assert!(text.contains("variant num_events=100"), "{text}");
    assert!(!text.contains("num_events=50"), "{text}");
}

/// Runs flow with a deadline: a FIFO once made `flow validate` hang.
fn validate_within(dir: &Path, args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("flow"))
        .arg("validate")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flow starts");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flow validate {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fifos_devices_and_folders_are_refused_at_once() {
    let p = Project::new()
        .workload("workload: w\nsteps:\n  t: { run: 'true' }\n")
        .file(
            "fifo-workload.yaml",
            "suite: t\nworkloads:\n  - workload: pipe.yaml\n",
        );
    let made = Command::new("mkfifo")
        .arg(p.path().join("pipe.yaml"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let limit = Duration::from_secs(10);
    let cases: [(&[&str], &str); 5] = [
        (
            &["--suite", "pipe.yaml"],
            "error: suite `pipe.yaml` is a FIFO (named pipe), not a file",
        ),
        (
            &["--suite", "fifo-workload.yaml"],
            "error: workload `pipe.yaml` is a FIFO (named pipe), not a file",
        ),
        (
            &["--suite", "suite.yaml", "--hosts", "pipe.yaml"],
            "error: inventory `pipe.yaml` is a FIFO (named pipe), not a file",
        ),
        (
            &["--suite", "/dev/zero"],
            "error: suite `/dev/zero` is a device, not a file",
        ),
        (
            &["--suite", "./"],
            "error: suite `.` is a folder, not a file",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = validate_within(p.path(), args, limit);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
    }
}

#[test]
fn a_failed_step_shows_the_last_lines_it_wrote() {
    let p = Project::new().workload(
        "workload: w\nsteps:\n  server:\n    kind: service\n    run: ./server --port 1\n    ready: { port: 1, timeout: 5s }\n  t: { run: 'true' }\n",
    );
    let (stdout, _) = p.run(&[], 1);
    assert!(
        stdout.contains("server@local: exited with 127 before it was ready"),
        "{stdout}"
    );
    assert!(
        stdout.contains("      last lines of logs/server@local.err:\n        | "),
        "{stdout}"
    );
    assert!(stdout.contains("./server: not found"), "{stdout}");
}

#[test]
fn a_metric_that_extracts_nothing_is_reported_by_run_and_in_the_report() {
    let p = Project::new().workload(
            "workload: w\nsteps:\n  t: { run: 'echo 1 > out.csv' }\n  get: { kind: fetch, paths: [out.csv] }\nmetrics:\n  typo:\n    from: hosts/*/uot.csv\n    regex: '(?P<value>[0-9]+)'\n",
        );
    let (stdout, stderr) = p.run(&[], 0);
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(
        stderr.contains(
            "warning: metric `typo` has no value in 1 of 1 passed run (first: w.baseline.r1-"
        ) && stderr.contains("no file matches `hosts/*/uot.csv`"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(p.artifact().join("report.html")).expect("report");
    assert!(
        report.contains("no value: w.baseline.r1-") && report.contains("uot.csv"),
        "the report shows why"
    );
    let (_, stderr) = Flow::new()
        .args(["analyze", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(stderr.contains("warning: metric `typo`"), "{stderr}");
}

#[test]
fn a_param_named_like_a_column_never_shadows_it() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - workload: workload.yaml\n    matrix:\n      status: [ok, \"a,b\\nc\"]\n      n: [1]\n",
        )
        .file(
            "workload.yaml",
            "workload: w\nparams: { status: x, n: 0 }\nsteps:\n  t: { run: 'echo 5 > v.txt' }\n  get: { kind: fetch, paths: [v.txt] }\nmetrics:\n  v: { from: hosts/*/v.txt, regex: '(?P<value>[0-9]+)' }\n",
        );
    p.run(&[], 0);
    let art = p.artifact();
    let headers = |r: &mut csv::Reader<std::fs::File>| -> Vec<String> {
        r.headers()
            .expect("header")
            .iter()
            .map(String::from)
            .collect()
    };
    let mut runs = csv::Reader::from_path(art.join("runs.csv")).expect("runs.csv");
    let header = headers(&mut runs);
    assert_eq!(
        header,
        [
            "id",
            "workload",
            "mode",
            "variant",
            "n",
            "param.status",
            "repetition",
            "status",
            "duration_ms"
        ]
    );
    let statuses: Vec<String> = runs
        .records()
        .map(|r| r.expect("row")[7].to_string())
        .collect();
    assert_eq!(statuses, ["passed", "passed"]);
    let mut summary = csv::Reader::from_path(art.join("summary.csv")).expect("summary.csv");
    let header = headers(&mut summary);
    assert_eq!(
        &header[..6],
        ["workload", "mode", "variant", "param.n", "status", "metric"]
    );
    assert_eq!(header.iter().filter(|h| *h == "n").count(), 1);
    // `flow list` reads runs.csv as CSV: a value with a line break is one row.
    let (out, _) = Flow::new()
        .args(["list", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(out.contains("2 runs, 2 passed, 0 failed"), "{out}");
}

/// `flow plan --shard I/N` over random suites: the shards are disjoint,
/// cover the plan, and keep every mode of a (workload, variant,
/// repetition) with its baseline.
#[test]
fn shards_of_random_suites_are_disjoint_cover_the_plan_and_keep_baselines_with_their_modes() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut seed: u64 = 42;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    for _ in 0..8 {
        let mut p = super::run::Project::new();
        let mut suite = String::from("suite: s\nworkloads:\n");
        for w in 0..1 + next(3) {
            let workload = format!(
                "workload: w{w}\nparams: {{ a: 0, b: x }}\nsteps:\n  job: {{ run: 'true' }}\nmodes:\n  m1: {{ env: {{ M: '1' }} }}\n  m2: {{ env: {{ M: '2' }} }}\n"
            );
            p = p.file(&format!("w{w}.yaml"), &workload);
            let a: Vec<String> = (0..1 + next(5)).map(|i| i.to_string()).collect();
            let b: Vec<String> = (0..1 + next(3)).map(|i| format!("v{i}")).collect();
            let modes = ["baseline", "m1", "m2"][..1 + next(3) as usize].join(", ");
            suite.push_str(&format!(
                "  - workload: w{w}.yaml\n    modes: [{modes}]\n    repetitions: {}\n    matrix: {{ a: [{}], b: [{}] }}\n",
                1 + next(4),
                a.join(", "),
                b.join(", ")
            ));
        }
        let p = p.file("suite.yaml", &suite);
        let runs = |extra: &[&str]| -> Vec<serde_json::Value> {
            let mut args = vec![
                "plan",
                "--suite",
                "suite.yaml",
                "--dry-run",
                "--format",
                "json",
            ];
            args.extend_from_slice(extra);
            let (out, _) = Flow::new().args(args).cwd(p.path()).expect(0);
            let v: serde_json::Value = serde_json::from_str(&out).expect("json");
            v["runs"].as_array().cloned().unwrap_or_default()
        };
        let all: BTreeSet<String> = runs(&[])
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect();
        let n = 1 + next(6);
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        let mut point_shard: BTreeMap<String, u64> = BTreeMap::new();
        for i in 1..=n {
            for r in runs(&["--shard", &format!("{i}/{n}")]) {
                let id = r["id"].as_str().unwrap_or_default().to_string();
                assert!(
                    seen.insert(id.clone(), i).is_none(),
                    "{id} in two shards\n{suite}"
                );
                let point = format!("{}|{}|{}", r["workload"], r["variant"], r["repetition"]);
                let s = *point_shard.entry(point.clone()).or_insert(i);
                assert_eq!(
                    s, i,
                    "{point}: its modes are in shards {s} and {i}\n{suite}"
                );
            }
        }
        let covered: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(covered, all, "{suite}");
    }
}

#[test]
fn an_empty_shard_is_a_job_with_nothing_to_do_and_a_bad_shard_is_refused() {
    let p = Project::new()
        .file("suite.yaml", "suite: s\nworkloads:\n  - workload: w.yaml\n")
        .file("w.yaml", "workload: w\nsteps:\n  job: { run: 'true' }\n");
    let (sizes, _) = Flow::new()
        .args(["plan", "--suite", "suite.yaml", "--shards", "2"])
        .cwd(p.path())
        .expect(0);
    // One run: one shard has it, the other has none.
    assert!(
        sizes.contains(": 1 run\n") && sizes.contains(": 0 runs\n"),
        "{sizes}"
    );
    let empty = if sizes.contains("shard 1/2: 0 runs") {
        "1/2"
    } else {
        "2/2"
    };
    let (out, _) = Flow::new()
        .args([
            "run",
            "--suite",
            "suite.yaml",
            "--shard",
            empty,
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    assert!(
        out.contains("holds none of these runs: nothing to run"),
        "{out}"
    );
    assert!(!p.path().join("artifacts/latest").exists());
    let (_, err) = Flow::new()
        .args(["run", "--suite", "suite.yaml", "--shard", "3/2"])
        .cwd(p.path())
        .expect(2);
    assert!(err.contains("`3/2`: shards are numbered 1 to 2"), "{err}");
}

#[test]
fn the_github_matrix_has_one_entry_per_shard_and_counts_every_run() {
    let (out, _) = Flow::new()
        .args([
            "plan",
            "--suite",
            "overhead",
            "--shards",
            "4",
            "--format",
            "github-matrix",
        ])
        .cwd(&super::root())
        .expect(0);
    let m: Value = serde_json::from_str(&out).expect("json");
    let include = m["include"].as_array().expect("include");
    assert_eq!(include.len(), 4);
    let mut total = 0;
    for (i, e) in include.iter().enumerate() {
        assert_eq!(e["shard"], format!("{}/4", i + 1));
        assert!(
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("overhead ")),
            "{e}"
        );
        total += e["runs"].as_u64().expect("runs");
    }
    assert_eq!(total, 90);
}
