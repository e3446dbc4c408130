//! Continuity: `kill -9` of flow, then `flow resume`/`flow attach` (local
//! and ssh hosts); a suite edited between the two is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::Flow;
use super::run::{Project, wait_for};
use super::sshd::Sshds;

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("flow"))
        .args(args)
        .args(["--artifacts", "artifacts"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flow starts")
}

fn kill_9(mut c: Child) {
    c.kill().expect("kill -9");
    let _ = c.wait();
}

fn artifact(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir.join("artifacts/latest")).expect("latest")
}

fn runs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(artifact(dir).join("runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The status of a run's `run_ended` event, if it has one.
fn ended(run: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run.join("events.jsonl")).ok()?;
    text.lines().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["event"] == "run_ended").then(|| v["status"].as_str().map(String::from))?
    })
}

/// Whether a journal has `event` for `step`.
fn has_event(journal: &str, event: &str, step: &str) -> bool {
    journal.lines().any(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == event && v["step"] == step)
    })
}

/// The journal's events of one kind.
fn events(run: &Path, kind: &str) -> usize {
    let text = std::fs::read_to_string(run.join("events.jsonl")).unwrap_or_default();
    count(&text, &format!(r#""event":"{kind}""#))
}

const FOUR_RUNS: &str = "suite: t\nworkloads:\n  - workload: workload.yaml\n    repetitions: 4\n";

/// Each run writes a file the fetch brings back and counts its starts in
/// a file outside the artifact; `hosts`: an inventory (else this machine).
fn four_runs(hosts: Option<&Path>) -> Project {
    let p = Project::new();
    let starts = p.path().join("starts.log");
    let workload = format!(
        "workload: w\nsteps:\n  job: {{ run: \"echo {{{{ run.id }}}} >> {}; sleep 0.6; echo {{{{ run.repetition }}}} > out.txt\" }}\n  grab: {{ kind: fetch, paths: [out.txt] }}\n",
        starts.display()
    );
    let suite = match hosts {
        Some(h) => FOUR_RUNS.replace("suite: t\n", &format!("suite: t\nhosts: {}\n", h.display())),
        None => FOUR_RUNS.to_string(),
    };
    p.file("suite.yaml", &suite)
        .file("workload.yaml", &workload)
}

#[test]
fn kill_9_at_any_moment_then_resume_ends_every_run_once_passed() {
    kill_9_then_resume(None, "local");
}

#[test]
fn kill_9_of_an_ssh_suite_then_resume_ends_every_run_once_passed() {
    let s = Sshds::start(1);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [server]")]);
    kill_9_then_resume(Some(&inv), "a");
}

fn kill_9_then_resume(hosts: Option<&Path>, host: &str) {
    // Bounded: three moments across the suite's few seconds.
    for delay_ms in [300u64, 1100, 2300] {
        let p = four_runs(hosts);
        let child = spawn(p.path(), &["run", "--suite", "suite.yaml"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill_9(child);
        // What had passed, as it was.
        let before: Vec<(PathBuf, Vec<u8>)> = runs(p.path())
            .into_iter()
            .filter(|r| ended(r) == Some("passed".into()))
            .map(|r| {
                let b = std::fs::read(r.join("run_result.json")).expect("result");
                (r, b)
            })
            .collect();
        let (stdout, _) = Flow::new()
            .args(["resume", "--artifacts", "artifacts"])
            .cwd(p.path())
            .expect(0);
        assert!(stdout.starts_with("resuming artifact "), "{stdout}");
        for (r, b) in &before {
            assert_eq!(
                &std::fs::read(r.join("run_result.json")).expect("result"),
                b,
                "a passed run was touched ({delay_ms} ms): {stdout}"
            );
        }
        let csv = std::fs::read_to_string(artifact(p.path()).join("runs.csv")).expect("csv");
        assert_eq!(count(&csv, ",passed,"), 4, "{csv}\n{stdout}");
        for r in runs(p.path()) {
            let res = json(&r.join("run_result.json"));
            assert_eq!(res["status"], "passed", "{}", r.display());
            assert_eq!(events(&r, "run_ended"), 1, "{}", r.display());
            let rep = res["repetition"].as_u64().expect("rep");
            let got =
                std::fs::read_to_string(r.join(format!("hosts/{host}/out.txt"))).expect("fetched");
            assert_eq!(got.trim(), rep.to_string());
            // An earlier attempt, when there was one, is kept whole.
            if r.join("attempts/1").exists() {
                assert!(r.join("attempts/1/events.jsonl").is_file());
                assert_eq!(events(&r.join("attempts/1"), "rescued"), 1);
            }
        }
        // Every run started at most twice (once per attempt), passed once.
        let starts = std::fs::read_to_string(p.path().join("starts.log")).unwrap_or_default();
        for r in runs(p.path()) {
            let id = r.file_name().expect("name").to_string_lossy().into_owned();
            let attempts = usize::from(r.join("attempts/1").exists()) + 1;
            assert!(count(&starts, &id) <= attempts, "{id}: {starts}");
        }
        // A second resume has nothing to do.
        let (again, _) = Flow::new()
            .args(["resume", "--artifacts", "artifacts"])
            .cwd(p.path())
            .expect(0);
        assert!(again.contains("nothing to do"), "{again}");
    }
}

#[test]
fn failed_runs_are_kept_unless_rerun_failed() {
    let p = Project::new();
    let flag = p.path().join("ok");
    let p = p
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - workload: workload.yaml\n",
        )
        .file(
            "workload.yaml",
            &format!(
                "workload: w\nsteps:\n  job: {{ run: \"echo tried > tried.txt; test -e {}\" }}\n",
                flag.display()
            ),
        );
    p.run(&[], 1);
    let (stdout, _) = Flow::new()
        .args(["resume", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("1 failed, kept"), "{stdout}");
    assert!(stdout.contains("nothing to do"), "{stdout}");
    std::fs::write(&flag, "").expect("write");
    let (stdout, _) = Flow::new()
        .args([
            "run",
            "--resume",
            "latest",
            "--rerun-failed",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("run again"), "{stdout}");
    let run = runs(p.path()).remove(0);
    assert_eq!(json(&run.join("run_result.json"))["status"], "passed");
    // The failed attempt is kept, in the artifact and on its host.
    assert_eq!(
        json(&run.join("attempts/1/run_result.json"))["status"],
        "failed"
    );
    let plan = json(&run.join("plan.json"));
    let cwd = plan["steps"][0]["cwd"].as_str().expect("cwd").to_string();
    assert!(Path::new(&format!("{cwd}.attempt-1/tried.txt")).is_file());
    assert!(Path::new(&format!("{cwd}/tried.txt")).is_file());
}

/// A CI job's second try: `--resume ID --only status=failed` runs the
/// failed runs again and nothing else; `status=` on a new run, an unknown
/// key and a bad status are refused.
#[test]
fn only_status_failed_runs_the_failed_runs_again_and_leaves_the_rest() {
    let p = Project::new();
    let flags = p.path().join("flags");
    std::fs::create_dir_all(&flags).expect("mkdir");
    // k=2 fails while `flags/fail-2` exists.
    std::fs::write(flags.join("fail-2"), "").expect("flag");
    let p = p
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - workload: workload.yaml\n    repetitions: 2\n    matrix: { k: [1, 2, 3] }\n",
        )
        .file(
            "workload.yaml",
            &format!(
                "workload: w\nparams: {{ k: 1 }}\nsteps:\n  job: {{ run: \"test ! -e {}/fail-{{{{ params.k }}}}\" }}\n",
                flags.display()
            ),
        );
    let (out, _) = p.run(&[], 1);
    assert!(out.contains("4 passed, 2 failed"), "{out}");
    let before: Vec<(PathBuf, Vec<u8>)> = runs(p.path())
        .into_iter()
        .map(|r| {
            let b = std::fs::read(r.join("run_result.json")).expect("result");
            (r, b)
        })
        .collect();
    // Refused: status on a new run, a key no run has, a status that is none.
    for (args, snap) in [
        (vec!["--only", "status=failed"], "only__status_on_a_new_run"),
        (vec!["--only", "kk=2"], "only__unknown_key"),
        (vec!["--only", "status=broken"], "only__bad_status"),
    ] {
        let (_, err) = p.run(&args, 2);
        insta::assert_snapshot!(snap, err);
    }
    std::fs::remove_file(flags.join("fail-2")).expect("rm");
    // Runs `--only` leaves out are not run again, failed or not.
    let (out, _) = Flow::new()
        .args(["resume", "--only", "k=1", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(
        out.contains("2 failed, kept") && !out.contains("run again"),
        "{out}"
    );
    assert!(out.contains("nothing to do"), "{out}");
    let (out, _) = Flow::new()
        .args(["run", "--resume", "latest", "--only", "status=failed"])
        .args(["--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(
        out.contains("4 passed, kept") && out.contains("2 run again"),
        "{out}"
    );
    for (run, bytes) in before {
        let now = std::fs::read(run.join("run_result.json")).expect("result");
        let was = serde_json::from_slice::<Value>(&bytes).expect("json");
        if was["status"] == "passed" {
            assert_eq!(now, bytes, "{} was left as it was", run.display());
        } else {
            assert_eq!(json(&run.join("run_result.json"))["status"], "passed");
            assert!(run.join("attempts/1/run_result.json").is_file());
        }
    }
    let csv = std::fs::read_to_string(artifact(p.path()).join("runs.csv")).expect("csv");
    assert_eq!(csv.matches(",passed,").count(), 6, "{csv}");
    // Nothing failed any more: a second try selects nothing, and says so.
    let (_, err) = Flow::new()
        .args([
            "resume",
            "--only",
            "status=failed",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(2);
    assert!(err.contains("no run of artifact"), "{err}");
    // Conditions joined by commas; analyze takes them too.
    let (out, _) = Flow::new()
        .args([
            "analyze",
            "--only",
            "k=2,status=passed",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    assert!(out.starts_with("2 runs:"), "{out}");
}

#[test]
fn resume_after_editing_the_suite_is_refused_naming_the_changed_runs() {
    let p = four_runs(None);
    p.run(&["--only", "*.r1-*"], 0);
    let workload = std::fs::read_to_string(p.path().join("workload.yaml")).expect("read");
    std::fs::write(
        p.path().join("workload.yaml"),
        workload.replace("sleep 0.6", "sleep 0.7"),
    )
    .expect("write");
    let (_, stderr) = Flow::new()
        .args(["resume", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(2);
    assert!(
        stderr.starts_with("error: the suite no longer plans the runs of artifact "),
        "{stderr}"
    );
    assert!(stderr.contains("  changed  w.baseline.r1-"), "{stderr}");
    assert!(
        stderr.contains("sleep 0.6") && stderr.contains("sleep 0.7"),
        "{stderr}"
    );
    assert!(stderr.contains("--replan"), "{stderr}");
    // With --replan the changed run runs under its new id; the old one is
    // kept aside.
    let (stdout, _) = Flow::new()
        .args(["resume", "--replan", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(artifact(p.path()).join("replaced"))
            .expect("replaced")
            .count(),
        1
    );
    let sj = json(&artifact(p.path()).join("suite.json"));
    assert_eq!(sj["replans"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_collector_outlives_its_controller_and_is_taken_over_with_its_csv_continuous() {
    let s = Sshds::start(2);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [server]"), ("b", "roles: [client]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("suite.yaml"),
        format!(
            "suite: t\nhosts: {}\nworkloads:\n  - workload: workload.yaml\n",
            inv.display()
        ),
    )
    .expect("suite");
    std::fs::write(
        dir.join("workload.yaml"),
        r#"workload: collect
steps:
  collect: { kind: monitor, on: server, run: "echo start > data.csv; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo $i >> data.csv; echo line $i; sleep 0.05; done" }
  work: { on: client, run: "sleep 5", needs: [collect] }
  grab: { kind: fetch, from: server, paths: [data.csv] }
"#,
    )
    .expect("workload");
    let child = spawn(&dir, &["run", "--suite", "suite.yaml"]);
    wait_for(Duration::from_secs(60), "the task to start", || {
        has_event(
            &super::remote::journal(&dir.join("artifacts")),
            "step_started",
            "work@b",
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    kill_9(child);
    let (status, _) = Flow::new()
        .args(["status", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(status.contains("abandoned"), "{status}");
    assert!(status.contains("flow resume"), "{status}");
    // The data so far, now, without finishing anything.
    let (fetched, _) = Flow::new()
        .args(["fetch", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(fetched.contains(": 1 file, "), "{fetched}");
    let run = runs(&dir).remove(0);
    let early = std::fs::read_to_string(run.join("hosts/a/data.csv")).expect("data so far");
    assert!(early.starts_with("start\n1\n"), "{early}");
    assert_eq!(events(&run, "fetched_on_request"), 1);
    assert!(
        std::fs::read_to_string(run.join("fetch.log"))
            .expect("fetch.log")
            .contains("hosts/a/data.csv")
    );
    let (stdout, _) = Flow::new()
        .args(["attach", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(stdout.contains("1 taken over"), "{stdout}");
    assert!(stdout.contains("1 run: 1 passed"), "{stdout}");
    let res = json(&run.join("run_result.json"));
    assert_eq!(res["status"], "passed");
    let collect = res["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "collect@a")
        .expect("collect");
    assert_eq!(collect["attempts"], 1, "{collect}");
    assert_eq!(events(&run, "step_adopted"), 2);
    assert!(!run.join("attempts").exists());
    // One start, then every sample in order: never restarted, never
    // overwritten.
    let csv = std::fs::read_to_string(run.join("hosts/a/data.csv")).expect("data.csv");
    assert!(csv.len() > early.len(), "the final fetch brought more");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("start"));
    let samples: Vec<u64> = lines.map(|l| l.parse().expect("a number")).collect();
    assert!(samples.len() > 20, "{} samples", samples.len());
    assert!(
        samples.iter().enumerate().all(|(i, &v)| v == i as u64 + 1),
        "{csv}"
    );
    // Its output, followed by the dead flow and then by the one that took
    // it over, is in its log once, in order.
    let log = std::fs::read_to_string(run.join("logs/collect@a.out")).expect("log");
    let numbered: Vec<&str> = log.lines().collect();
    assert!(numbered.len() > 20, "{log}");
    assert!(
        numbered
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {}", i + 1)),
        "{log}"
    );
}

#[test]
fn a_moved_artifact_resumes_in_its_new_place() {
    let p = four_runs(None);
    p.run(&["--only", "*.r1-*"], 0);
    let old = artifact(p.path());
    let moved = p.path().join("moved");
    std::fs::create_dir_all(&moved).expect("mkdir");
    let to = moved.join(old.file_name().expect("name"));
    std::fs::rename(&old, &to).expect("move");
    let (stdout, _) = Flow::new()
        .args([
            "resume",
            &to.display().to_string(),
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("nothing to do"), "{stdout}");
}

#[test]
fn run_without_a_suite_says_which_argument_is_missing() {
    let p = Project::new();
    let (_, stderr) = Flow::new()
        .args(["run", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(2);
    assert_eq!(
        stderr,
        "error: which suite? `--suite NAME|PATH` is required\n  = help: `flow run --resume ID` continues an artifact without it\n"
    );
}

#[test]
fn an_artifact_another_flow_is_running_is_not_resumed() {
    let p = four_runs(None);
    p.run(&["--only", "*.r1-*"], 0);
    // A live process holds it (this test's own).
    let lock = artifact(p.path()).join("flow.pid");
    std::fs::write(&lock, format!("{}\n", std::process::id())).expect("write");
    let (_, stderr) = Flow::new()
        .args(["resume", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(2);
    assert!(
        stderr.starts_with(&format!(
            "error: flow (pid {}) is running artifact ",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(lock.exists(), "another flow's lock is left alone");
    // A dead flow's lock is taken over, and given back.
    std::fs::write(&lock, "999999999\n").expect("write");
    let (stdout, _) = Flow::new()
        .args(["resume", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert!(!lock.exists());
}
