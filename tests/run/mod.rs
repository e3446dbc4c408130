//! `flow run` for real: real processes, real signals, the artifact folder
//! checked file by file (JSON files against the published schemas).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Flow, root};

/// A throwaway project: a suite, its workloads, an artifacts folder.
pub(crate) struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    pub(crate) fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(self, name: &str, text: &str) -> Project {
        let p = self.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
        self
    }

    /// `suite.yaml` running `workload.yaml` once.
    pub(crate) fn workload(self, text: &str) -> Project {
        self.file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - workload: workload.yaml\n",
        )
        .file("workload.yaml", text)
    }

    pub(crate) fn run(&self, extra: &[&str], code: i32) -> (String, String) {
        Flow::new()
            .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
            .args(extra)
            .cwd(self.path())
            .expect(code)
    }

    /// Starts `flow run` in the background, output piped.
    fn spawn(&self, extra: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        Command::new(assert_cmd::cargo::cargo_bin("flow"))
            .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flow starts")
    }

    /// `flow run` in the background, interrupted (SIGINT) once the log
    /// `logs/<log>` of a run says `started`; what it ended with.
    pub(crate) fn interrupt_once_started(&self, log: &str) -> std::process::Output {
        let child = self.spawn(&[], &[]);
        wait_for(Duration::from_secs(30), "the run to start", || {
            std::fs::read_dir(self.path().join("artifacts/latest/runs"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read_to_string(e.path().join("logs").join(log))
                        .is_ok_and(|t| t.contains("started"))
                })
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        child.wait_with_output().expect("flow exits")
    }

    /// Every run's journal so far, one after the other.
    fn events(&self) -> String {
        let Ok(dirs) = std::fs::read_dir(self.path().join("artifacts/latest/runs")) else {
            return String::new();
        };
        dirs.flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("events.jsonl")).ok())
            .collect()
    }

    pub(crate) fn artifact(&self) -> PathBuf {
        std::fs::canonicalize(self.path().join("artifacts/latest")).expect("latest")
    }

    /// The only run's folder.
    pub(crate) fn run_dir(&self) -> PathBuf {
        let runs: Vec<PathBuf> = std::fs::read_dir(self.artifact().join("runs"))
            .expect("runs")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs.into_iter().next().expect("one run")
    }

    fn result(&self) -> Value {
        json(&self.run_dir().join("run_result.json"))
    }

    /// `FLOW_RUN_TAG=…` of the only run, from its journal.
    fn tag(&self) -> String {
        let events = std::fs::read_to_string(self.run_dir().join("events.jsonl")).expect("events");
        let first: Value =
            serde_json::from_str(events.lines().next().expect("a line")).expect("json");
        format!("FLOW_RUN_TAG={}", first["tag"].as_str().expect("tag"))
    }
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn step<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {result:#}"))
}

/// Checks `value` against `flow schema <kind>`.
fn assert_schema_valid(kind: &str, value: &Value) {
    let (schema, _) = Flow::new().args(["schema", kind]).expect(0);
    let schema: Value = serde_json::from_str(&schema).expect("schema json");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} does not match its schema: {errors:#?}"
    );
}

/// Processes on this machine whose environment holds `needle`.
pub fn processes_with_env(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

/// Waits for `cond` to hold, polling, up to `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_passing_run_leaves_every_artifact_file_and_each_matches_its_schema() {
    let p = Project::new().workload(
        r#"
workload: ok
params: { greeting: hello }
steps:
  server:
    kind: service
    run: "echo listening; exec sleep 60"
    ready: { log: "^listening$", timeout: 10s, interval: 20ms }
  mon:
    kind: monitor
    run: "while :; do echo tick; sleep 0.05; done"
  hello:
    run: "echo {{ params.greeting }} > out.txt; echo done"
  grab:
    kind: fetch
    paths: ["out.txt", "nothing-*.csv"]
  sum:
    kind: analyze
    run: "mkdir -p $FLOW_RUN_DIR/analysis && wc -c < $FLOW_RUN_DIR/hosts/local/out.txt > $FLOW_RUN_DIR/analysis/bytes.txt"
"#,
    );
    let (stdout, _) = p.run(&[], 0);
    assert!(stdout.contains("1 run: 1 passed, 0 failed"), "{stdout}");
    let a = p.artifact();
    let run = p.run_dir();
    for f in ["suite.json", "runs.csv"] {
        assert!(a.join(f).is_file(), "{f}");
    }
    for f in [
        "plan.json",
        "run_result.json",
        "events.jsonl",
        "fetch.log",
        "logs/server@local.out",
        "logs/server@local.err",
        "logs/mon@local.out",
        "logs/hello@local.out",
        "logs/sum@controller.out",
        "hosts/local/out.txt",
        "analysis/bytes.txt",
    ] {
        assert!(run.join(f).is_file(), "{f} is missing");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("hosts/local/out.txt")).expect("read"),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("analysis/bytes.txt"))
            .expect("read")
            .trim(),
        "6"
    );

    let r = p.result();
    assert_schema_valid("run-result", &r);
    assert_schema_valid("plan", &json(&run.join("plan.json")));
    assert_eq!(r["status"], "passed");
    for (id, status) in [
        ("server@local", "passed"),
        ("mon@local", "passed"),
        ("hello@local", "passed"),
        ("grab@local", "passed"),
        ("sum@controller", "passed"),
    ] {
        assert_eq!(step(&r, id)["status"], status, "{id}: {r:#}");
    }
    let server = step(&r, "server@local");
    assert!(server["ready"]["mono_ns"].as_u64() > server["started"]["mono_ns"].as_u64());
    assert_eq!(server["stop_signals"], serde_json::json!(["TERM"]));
    assert_eq!(server["signal"], "TERM");
    assert_eq!(step(&r, "hello@local")["exit_code"], 0);
    assert_eq!(
        r["fetch"],
        serde_json::json!({"files": 1, "bytes": 6, "missing": 1, "skipped": 0, "failed": 0})
    );

    // Lifecycle: the task starts after the service is ready and the monitor
    // runs; the monitor stops before the service; fetch after both.
    let mono = |id: &str, at: &str| step(&r, id)[at]["mono_ns"].as_u64().expect("stamp");
    assert!(mono("hello@local", "started") >= mono("server@local", "ready"));
    assert!(mono("hello@local", "started") >= mono("mon@local", "ready"));
    assert!(mono("mon@local", "ended") <= mono("server@local", "ended"));
    assert!(mono("grab@local", "started") >= mono("server@local", "ended"));
    assert!(mono("sum@controller", "started") >= mono("grab@local", "ended"));

    let fetch_log = std::fs::read_to_string(run.join("fetch.log")).expect("fetch.log");
    let lines: Vec<&str> = fetch_log.lines().collect();
    assert_eq!(
        lines[0],
        "host\tremote_path\tlocal_path\tbytes\tsha256\tms\tstatus"
    );
    let ok: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(ok[2], "hosts/local/out.txt");
    assert_eq!(ok[3], "6");
    assert_eq!(
        ok[4],
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    assert_eq!(ok[6], "ok");
    assert!(lines[2].ends_with("\tmissing"), "{}", lines[2]);

    let events = std::fs::read_to_string(run.join("events.jsonl")).expect("events");
    let names: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("each line is JSON")["event"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("run_started"));
    assert_eq!(names.last().map(String::as_str), Some("run_ended"));
    assert!(names.iter().any(|n| n == "step_ready"));

    let csv = std::fs::read_to_string(a.join("runs.csv")).expect("runs.csv");
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("id,workload,mode,variant,repetition,status,duration_ms")
    );
    let row = rows.next().expect("a row");
    assert!(
        row.starts_with(&format!(
            "{},ok,baseline,default,1,passed,",
            r["id"].as_str().unwrap_or("")
        )),
        "{row}"
    );

    let suite = json(&a.join("suite.json"));
    assert_eq!(suite["expansion"]["runs"][0], r["id"]);

    // status and list read the same folder.
    let (status, _) = Flow::new()
        .args(["status", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(
        status.contains("(suite t): done\n1 runs: 1 passed, 0 failed, 0 left"),
        "{status}"
    );
    let (list, _) = Flow::new()
        .args(["list", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(
        list.contains("1 runs, 1 passed, 0 failed  [done]"),
        "{list}"
    );
}

#[test]
fn a_failing_task_fails_the_run_skips_its_dependents_and_still_fetches() {
    let p = Project::new().workload(
        r#"
workload: failing
steps:
  write:
    run: "echo data > data.txt"
  boom:
    needs: [write]
    run: "echo going down >&2; exit 3"
  after:
    needs: [boom]
    run: "touch never"
  side:
    needs: [write]
    run: "echo independent"
  grab:
    kind: fetch
    paths: ["data.txt"]
  sum:
    kind: analyze
    run: "true"
"#,
    );
    let (stdout, _) = p.run(&[], 1);
    assert!(stdout.contains("FAIL "), "{stdout}");
    assert!(stdout.contains("boom@local: exited with 3"), "{stdout}");
    assert!(stdout.contains("1 run: 0 passed, 1 failed"), "{stdout}");
    let r = p.result();
    assert_eq!(r["status"], "failed");
    assert_eq!(step(&r, "boom@local")["status"], "failed");
    assert_eq!(step(&r, "boom@local")["exit_code"], 3);
    assert_eq!(step(&r, "after@local")["status"], "skipped");
    assert_eq!(
        step(&r, "after@local")["errors"][0],
        "skipped: `boom@local` failed"
    );
    assert_eq!(step(&r, "side@local")["status"], "passed");
    assert_eq!(step(&r, "grab@local")["status"], "passed");
    assert_eq!(step(&r, "sum@controller")["status"], "skipped");
    assert!(p.run_dir().join("hosts/local/data.txt").is_file());
    let err = std::fs::read_to_string(p.run_dir().join("logs/boom@local.err")).expect("log");
    assert_eq!(err, "going down\n");
}

#[test]
fn allowed_failures_and_retries() {
    let p = Project::new().workload(
        r#"
workload: retry
steps:
  flaky:
    run: "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; test $n -ge 3"
    retries: 2
  optional:
    run: "exit 1"
    allow_failure: true
  then:
    needs: [optional, flaky]
    run: "true"
"#,
    );
    p.run(&[], 0);
    let r = p.result();
    assert_eq!(step(&r, "flaky@local")["attempts"], 3);
    assert_eq!(step(&r, "flaky@local")["status"], "passed");
    assert_eq!(
        step(&r, "flaky@local")["errors"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(step(&r, "optional@local")["status"], "failed");
    assert_eq!(step(&r, "then@local")["status"], "passed");
}

#[test]
fn a_service_that_dies_before_ready_fails_at_once_not_after_its_timeout() {
    let p = Project::new().workload(
        r#"
workload: crash
steps:
  server:
    kind: service
    run: "echo starting; sleep 0.2; echo 'bind: address in use' >&2; exit 7"
    ready: { log: "never printed", timeout: 30s }
  client:
    needs: [server]
    run: "touch never"
"#,
    );
    let t0 = Instant::now();
    p.run(&[], 1);
    let took = t0.elapsed();
    let r = p.result();
    let server = step(&r, "server@local");
    assert_eq!(server["status"], "failed");
    assert_eq!(server["exit_code"], 7);
    assert_eq!(
        server["errors"][0],
        "exited with 7 before it was ready (probe: log /never printed/)"
    );
    assert!(
        server["duration_ms"].as_u64().expect("duration") < 2000,
        "{server}"
    );
    assert!(took < Duration::from_secs(10), "flow took {took:?}");
    assert_eq!(step(&r, "client@local")["status"], "skipped");
}

#[test]
fn a_task_over_its_timeout_is_stopped_and_fails() {
    let p = Project::new().workload(
        r#"
workload: slow
steps:
  slow:
    run: "sleep 30"
    timeout: 300ms
"#,
    );
    p.run(&[], 1);
    let r = p.result();
    let s = step(&r, "slow@local");
    assert_eq!(s["status"], "failed");
    assert_eq!(s["errors"][0], "timed out after 300ms");
    assert_eq!(s["stop_signals"], serde_json::json!(["TERM"]));
    assert!(s["duration_ms"].as_u64().expect("duration") < 5000, "{s}");
}

#[test]
fn readiness_by_port_and_by_command() {
    let port = super::free_port();
    let p = Project::new().workload(&format!(
        r#"
workload: probes
steps:
  tcp:
    kind: service
    run: ["python3", "-c", "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); time.sleep(0.3); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"]
    ready: {{ port: {port}, timeout: 10s, interval: 50ms }}
  file:
    kind: service
    run: "sleep 0.2; touch ready.flag; exec sleep 60"
    ready: {{ cmd: "test -e ready.flag", timeout: 10s, interval: 50ms }}
  use:
    needs: [tcp, file]
    run: "test -e ready.flag"
"#
    ));
    p.run(&[], 0);
    let r = p.result();
    for id in ["tcp@local", "file@local"] {
        let s = step(&r, id);
        let waited = s["ready"]["mono_ns"].as_u64().unwrap_or(0)
            - s["started"]["mono_ns"].as_u64().unwrap_or(0);
        assert!(waited >= 150_000_000, "{id} was ready after {waited} ns");
    }
    assert_eq!(step(&r, "use@local")["status"], "passed");
}

#[test]
fn leaked_grandchildren_are_found_killed_and_recorded() {
    let p = Project::new().workload(
        r#"
workload: leaky
steps:
  leaky:
    run: >-
      sleep 301 &
      setsid sh -c 'echo $$ > escaped.pid; exec sleep 302' &
      while [ ! -s escaped.pid ]; do sleep 0.01; done; echo forked
"#,
    );
    p.run(&[], 0);
    let r = p.result();
    let leaked = step(&r, "leaky@local")["leaked"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let run_errors = r["errors"].as_array().cloned().unwrap_or_default();
    let all = format!("{leaked:?} {run_errors:?}");
    assert!(all.contains("sleep 301"), "{all}");
    assert!(all.contains("sleep 302"), "{all}");
    assert_eq!(
        processes_with_env(&p.tag()),
        vec![],
        "processes outlived flow"
    );
}

#[test]
fn ctrl_c_tears_down_cleanly_and_leaves_no_process_behind() {
    let p = Project::new().workload(
        r#"
workload: stubborn
steps:
  deaf:
    kind: service
    run: "trap '' TERM; echo up; while :; do sleep 0.1; done"
    ready: { log: up, timeout: 10s, interval: 20ms }
    stop: { signal: TERM, grace: 1s }
  forker:
    run: >-
      sh -c 'sleep 303' &
      setsid sh -c 'echo $$ > escaped.pid; exec sleep 304' &
      while [ ! -s escaped.pid ]; do sleep 0.01; done; echo forked; sleep 305
  grab:
    kind: fetch
    paths: ["*.txt"]
"#,
    );
    let child = p.spawn(&[], &[]);
    wait_for(Duration::from_secs(20), "the forker to start", || {
        p.events().contains("step_started") && {
            let out = p.run_dir().join("logs/forker@local.out");
            std::fs::read_to_string(out).is_ok_and(|s| s.contains("forked"))
        }
    });
    let artifact = p.artifact();
    let tag = p.tag();
    assert!(
        processes_with_env(&tag).len() >= 4,
        "{:?}",
        processes_with_env(&tag)
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let t0 = Instant::now();
    let out = child.wait_with_output().expect("flow exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "teardown took {:?}",
        t0.elapsed()
    );
    assert!(
        stderr.contains("interrupted: stopping the steps"),
        "{stderr}"
    );
    assert_eq!(processes_with_env(&tag), vec![], "processes outlived flow");

    let r = p.result();
    assert_eq!(r["status"], "interrupted");
    assert_eq!(step(&r, "forker@local")["status"], "interrupted");
    let deaf = step(&r, "deaf@local");
    assert_eq!(deaf["stop_signals"], serde_json::json!(["TERM", "KILL"]));
    assert_eq!(deaf["signal"], "KILL");
    assert_eq!(
        step(&r, "grab@local")["status"],
        "passed",
        "fetch runs after Ctrl-C"
    );
    let all = format!("{r}");
    assert!(
        all.contains("sleep 304"),
        "the escaped grandchild is recorded: {all}"
    );
    let csv = std::fs::read_to_string(artifact.join("runs.csv")).expect("runs.csv");
    assert!(csv.contains(",interrupted,"), "{csv}");
    assert!(!artifact.join("flow.pid").exists());
}

#[test]
fn jobs_never_overlap_two_runs_on_one_host() {
    let p = Project::new()
        .file(
            "hosts.yaml",
            "hosts:\n  a: { address: local, roles: [a] }\n  b: { address: local, roles: [b] }\n",
        )
        .file(
            "suite.yaml",
            "suite: t\nhosts: hosts.yaml\nworkloads:\n  - { workload: wa.yaml, repetitions: 3 }\n  - { workload: wb.yaml, repetitions: 3 }\n",
        )
        .file("wa.yaml", "workload: wa\nsteps:\n  t: { on: a, run: sleep 0.3 }\n")
        .file("wb.yaml", "workload: wb\nsteps:\n  t: { on: b, run: sleep 0.3 }\n");
    p.run(&["--jobs", "2"], 0);
    let runs: Vec<(String, String, u64, u64)> = std::fs::read_dir(p.artifact().join("runs"))
        .expect("runs")
        .flatten()
        .map(|e| {
            let r = json(&e.path().join("run_result.json"));
            let s = &r["steps"][0];
            (
                r["workload"].as_str().unwrap_or("").to_string(),
                s["host"].as_str().unwrap_or("").to_string(),
                s["started"]["mono_ns"].as_u64().expect("start"),
                s["ended"]["mono_ns"].as_u64().expect("end"),
            )
        })
        .collect();
    assert_eq!(runs.len(), 6);
    let mut overlapped_across_hosts = false;
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            let overlap = a.2 < b.3 && b.2 < a.3;
            if a.1 == b.1 {
                assert!(!overlap, "two runs on host {} overlapped: {a:?} {b:?}", a.1);
            } else if overlap {
                overlapped_across_hosts = true;
            }
        }
    }
    assert!(
        overlapped_across_hosts,
        "--jobs 2 ran nothing at once: {runs:?}"
    );
}

#[test]
fn fail_fast_stops_starting_runs() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml, repetitions: 3 }\n",
        )
        .file(
            "workload.yaml",
            "workload: bad\nsteps:\n  t: { run: exit 1 }\n",
        );
    let (stdout, _) = p.run(&["--fail-fast"], 1);
    assert!(
        stdout.contains("3 runs: 0 passed, 1 failed, 2 not run"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(p.artifact().join("runs.csv")).expect("runs.csv");
    assert_eq!(csv.matches(",pending,").count(), 2, "{csv}");
}

#[test]
fn only_selects_runs_by_id() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml, repetitions: 3 }\n",
        )
        .file(
            "workload.yaml",
            "workload: w\nsteps:\n  t: { run: 'true' }\n",
        );
    let (stdout, _) = p.run(&["--only", "w.baseline.r2-*"], 0);
    assert!(stdout.contains("1 of them selected by --only"), "{stdout}");
    assert!(stdout.contains("1 run: 1 passed"), "{stdout}");
    let (_, stderr) = p.run(&["--only", "nope*"], 2);
    insta::assert_snapshot!(stderr, @r"
    error: no run matches `--only nope*`
      = help: run ids look like `<workload>.<mode>.r<repetition>-<hash>`; `flow plan --dry-run` lists them

    error: 1 error found; nothing was run
    ");
}

#[test]
fn an_unreachable_host_fails_the_run_with_its_name_and_ssh_s_words() {
    let p = Project::new()
        .file(
            "hosts.yaml",
            "hosts:\n  far: { address: 127.0.0.1, port: 1, roles: [w] }\n",
        )
        .file(
            "suite.yaml",
            "suite: t\nhosts: hosts.yaml\nworkloads:\n  - workload: workload.yaml\n",
        )
        .file(
            "workload.yaml",
            "workload: w\nsteps:\n  t: { on: w, run: 'true' }\n",
        );
    let (stdout, _) = p.run(&[], 1);
    assert!(stdout.contains("FAIL "), "{stdout}");
    let r = p.result();
    assert_eq!(r["status"], "failed");
    assert_eq!(
        r["errors"][0],
        "cannot connect to host `far`: ssh: connect to host 127.0.0.1 port 1: Connection refused"
    );
    assert_eq!(step(&r, "t@far")["status"], "skipped");
}

#[test]
fn the_streaming_demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let art = tmp.path().join("artifacts");
    let (stdout, _) = Flow::new()
        .args(["run", "--suite", "streaming", "--artifacts"])
        .args([art.to_string_lossy()])
        .cwd(&root())
        .expect(0);
    assert!(stdout.contains("4 runs: 4 passed, 0 failed"), "{stdout}");
    let latest = std::fs::canonicalize(art.join("latest")).expect("latest");
    let mut n = 0;
    for e in std::fs::read_dir(latest.join("runs"))
        .expect("runs")
        .flatten()
    {
        n += 1;
        let plan = json(&e.path().join("plan.json"));
        let events = plan["params"]["num_events"].as_u64().expect("num_events");
        let summary = json(&e.path().join("analysis/summary.json"));
        for w in ["w1", "w2"] {
            assert_eq!(
                summary["workers"][w]["received"].as_u64(),
                Some(events),
                "{summary:#}"
            );
        }
        assert_eq!(summary["across"]["seen_by_all"].as_u64(), Some(events));
        assert!(summary["across"]["skew_p99_ms"].is_number());
        assert!(e.path().join("analysis/arrivals.svg").is_file());
        let csv = std::fs::read_to_string(e.path().join("hosts/w1/worker.csv")).expect("csv");
        assert!(
            csv.starts_with("event_id,send_time_ns,receive_time_ns"),
            "{csv}"
        );
    }
    assert_eq!(n, 4);
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    let p = Project::new().workload(
        r#"
workload: stubborn
steps:
  deaf:
    kind: service
    run: "trap '' TERM INT; echo up; while :; do sleep 0.1; done"
    ready: { log: up, timeout: 10s, interval: 20ms }
    stop: { signal: TERM, grace: 60s }
  wait:
    run: "echo waiting; sleep 300"
"#,
    );
    let child = p.spawn(&[], &[]);
    wait_for(Duration::from_secs(20), "the task to start", || {
        p.events().contains(r#""step":"wait@local""#)
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    wait_for(Duration::from_secs(20), "the service to be stopped", || {
        p.events()
            .lines()
            .any(|l| l.contains(r#""step_stopping""#) && l.contains(r#""deaf@local""#))
    });
    let t0 = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("second SIGINT");
    let out = child.wait_with_output().expect("flow exits");
    assert_eq!(out.status.code(), Some(130));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the second Ctrl-C took {:?}",
        t0.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted again: killing every step now")
    );
    let r = p.result();
    assert_eq!(r["status"], "interrupted");
    assert_eq!(step(&r, "deaf@local")["signal"], "KILL");
    assert_eq!(
        processes_with_env(&p.tag()),
        vec![],
        "processes outlived flow"
    );
}

#[test]
fn closed_stdout_and_stderr_do_not_stop_a_run() {
    let p = Project::new().workload(
        "workload: quiet\nsteps:\n  srv: { kind: service, run: 'echo up; exec sleep 60', ready: { log: up } }\n  t: { run: 'echo done' }\n",
    );
    let mut child = p.spawn(&["-v"], &[("FLOW_LOG", "flow=trace")]);
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().expect("flow exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(p.result()["status"], "passed");
}

#[test]
fn status_shows_the_current_step_of_a_running_artifact() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml, repetitions: 2 }\n",
        )
        .file(
            "workload.yaml",
            "workload: w\nsteps:\n  nap: { run: 'sleep 60' }\n",
        );
    let child = p.spawn(&[], &[]);
    wait_for(
        Duration::from_secs(20),
        "the first run's step to start",
        || p.events().contains(r#""step":"nap@local""#),
    );
    let (status, _) = Flow::new()
        .args(["status", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = child.wait_with_output().expect("flow exits");
    assert_eq!(out.status.code(), Some(130));
    assert!(
        status.contains(&format!("(suite t): running (pid {pid})")),
        "{status}"
    );
    assert!(
        status.contains("2 runs: 0 passed, 0 failed, 1 running, 1 left"),
        "{status}"
    );
    assert!(status.contains(": nap@local (started)"), "{status}");
    let (after, _) = Flow::new()
        .args(["status", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(
        after.contains("): done\n2 runs: 0 passed, 0 failed, 1 interrupted, 1 left"),
        "{after}"
    );
}

#[test]
fn after_kill_9_reap_kills_local_escapees_of_this_artifact_only() {
    let workload =
        "workload: w\nsteps:\n  t: { run: 'setsid sleep 304 & echo started; sleep 60' }\n";
    let p = Project::new().workload(workload);
    // Another project, same suite name: possibly the same artifact id.
    let other = Project::new().workload(workload);
    let mut children = Vec::new();
    for q in [&p, &other] {
        children.push(q.spawn(&[], &[]));
    }
    // Each project's own escapee, found by its run dir: the two artifact
    // ids may be the same, so an id would find the other's.
    let mine = |q: &Project| {
        let Ok(artifact) = std::fs::canonicalize(q.path().join("artifacts/latest")) else {
            return 0;
        };
        let Ok(runs) = std::fs::read_dir(artifact.join("runs")) else {
            return 0;
        };
        runs.flatten()
            .map(|e| e.path().display().to_string())
            .flat_map(|d| processes_with_env(&format!("FLOW_RUN_DIR={d}")))
            .filter(|(_, c)| c.trim() == "sleep 304")
            .count()
    };
    for q in [&p, &other] {
        wait_for(Duration::from_secs(20), "the escapee", || mine(q) == 1);
    }
    for c in &mut children {
        c.kill().expect("kill -9");
        let _ = c.wait();
    }
    assert_eq!((mine(&p), mine(&other)), (1, 1));
    let (stdout, _) = Flow::new()
        .args(["reap", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.starts_with("local: killed "), "{stdout}");
    wait_for(Duration::from_secs(10), "the escapee to go", || {
        mine(&p) == 0
    });
    assert_eq!(mine(&other), 1, "the other project's was left alone");
    Flow::new()
        .args(["reap", "--artifacts", "artifacts"])
        .cwd(other.path())
        .expect(0);
    wait_for(Duration::from_secs(10), "the other escapee to go", || {
        mine(&other) == 0
    });
}
