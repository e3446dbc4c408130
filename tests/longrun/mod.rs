//! Long runs: a `duration:` collection on ssh hosts whose data comes back
//! while it runs, live `flow status`, kill -9 of the controller then
//! `flow attach`; a detached flow followed, stopped and finished.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flow starts")
}

fn status_json(dir: &Path) -> Value {
    let (out, _) = Flow::new()
        .args(["status", "--json", "--artifacts", "artifacts"])
        .cwd(dir)
        .expect(0);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Per host of the first run: bytes fetched so far.
fn bytes_fetched(v: &Value) -> Vec<(String, u64)> {
    v["runs"][0]["hosts"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h["host"].as_str().unwrap_or_default().to_string(),
                        h["bytes_fetched"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn run_dir(dir: &Path) -> PathBuf {
    let runs = std::fs::canonicalize(dir.join("artifacts/latest/runs")).expect("runs");
    std::fs::read_dir(runs)
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a run")
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("json")
}

/// Samples of one host's CSV: `<host ns>,<n>` lines, n counting from 1.
fn samples(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(',').nth(1)?.trim().parse().ok())
        .collect()
}

/// The shipped collection suite (`suites/collection.yaml`, its workload and
/// script) in `dir`, as the tutorial uses it.
fn shipped_collection(dir: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("suites")).expect("mkdir");
    std::fs::create_dir_all(dir.join("workloads/collection")).expect("mkdir");
    for f in [
        "suites/collection.yaml",
        "workloads/collection.yaml",
        "workloads/collection/sample.sh",
    ] {
        std::fs::copy(root.join(f), dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

/// The issue's test: three ssh hosts sample at 1 Hz for 60 s; data comes
/// back every 5 s while they do; `flow status --json` shows it grow; the
/// controller is killed at 30 s and `flow attach` finishes the run with
/// every sample, every host stopped together.
#[test]
fn a_60s_collection_on_three_ssh_hosts_comes_back_as_it_is_made_and_survives_kill_9() {
    let s = Sshds::start(3);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(
        &inv,
        &[
            ("a", "roles: [sensor]"),
            ("b", "roles: [sensor]"),
            ("c", "roles: [sensor]"),
        ],
    );
    let dir = s.dir.path().join("project");
    shipped_collection(&dir);
    let t0 = Instant::now();
    // The shipped 24-hour collection (the tutorial's), shortened to 60 s.
    let inv = inv.display().to_string();
    let mut child = spawn(
        &dir,
        &[
            "run",
            "--suite",
            "collection",
            "--hosts",
            &inv,
            "--set",
            "length=60s",
            "--set",
            "steps.pull.every=5s",
            "--set",
            "clock_every=10s",
        ],
    );
    // Bytes fetched so far grow while the run goes, on every host.
    let mut seen: Vec<Vec<(String, u64)>> = Vec::new();
    while t0.elapsed() < Duration::from_secs(29) {
        std::thread::sleep(Duration::from_secs(4));
        if dir.join("artifacts/latest/runs").exists() {
            let v = status_json(&dir);
            assert_eq!(v["state"], "running", "{v}");
            seen.push(bytes_fetched(&v));
        }
    }
    let grown = |h: &str| {
        let series: Vec<u64> = seen
            .iter()
            .filter_map(|s| s.iter().find(|(n, _)| n == h).map(|(_, b)| *b))
            .collect();
        series.windows(2).filter(|w| w[1] > w[0]).count()
    };
    for h in ["a", "b", "c"] {
        assert!(
            grown(h) >= 2,
            "bytes fetched from {h} did not grow: {seen:?}"
        );
    }
    // Data in the artifact before the run's end.
    let run = run_dir(&dir);
    let early: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|h| samples(&run.join(format!("hosts/{h}/samples.csv"))).len())
        .collect();
    assert!(early.iter().all(|&n| n >= 15), "{early:?}");
    // The controller dies at 30 s; its collectors do not.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(t0.elapsed()));
    child.kill().expect("kill -9");
    let _ = child.wait();
    let (stdout, _) = Flow::new()
        .args(["attach", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(
        stdout.contains("3 taken over") || stdout.contains("taken over"),
        "{stdout}"
    );
    assert!(stdout.contains("1 run: 1 passed"), "{stdout}");
    let res = json(&run.join("run_result.json"));
    assert_eq!(res["status"], "passed", "{res}");
    let counts: Vec<usize> = ["a", "b", "c"]
        .iter()
        .map(|h| {
            let v = samples(&run.join(format!("hosts/{h}/samples.csv")));
            // Continuous: nothing lost, nothing started twice.
            assert!(
                v.iter().enumerate().all(|(i, &n)| n == i as u64 + 1),
                "{h}: {v:?}"
            );
            v.len()
        })
        .collect();
    let (lo, hi) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    eprintln!("samples per host {counts:?}; bytes fetched while running {seen:?}");
    assert!(
        hi - lo <= 1,
        "sample counts differ by more than one: {counts:?}"
    );
    assert!((59..=63).contains(&lo), "{counts:?}");
    for st in res["steps"].as_array().expect("steps") {
        if st["step"] == "sensor" {
            assert_eq!(st["status"], "passed", "{st}");
        }
    }
    // Clocks sampled through the run (every 10 s), not only before/after.
    let samples_a = res["clocks"]["a"]["samples"].as_array().map_or(0, Vec::len);
    assert!(samples_a >= 2, "{}", res["clocks"]);
    let passes = std::fs::read_to_string(run.join("fetch.passes.log")).expect("passes log");
    assert!(
        passes.lines().filter(|l| l.contains("\tduring\t")).count() >= 9,
        "{passes}"
    );
    let journal = std::fs::read_to_string(run.join("events.jsonl")).expect("journal");
    assert!(
        journal.contains(r#""event":"duration_reached""#),
        "{journal}"
    );
}

/// `flow run --suite suite.yaml --detach` in `p`; its stdout.
fn detach(p: &Project) -> String {
    let (out, _) = Flow::new()
        .args([
            "run",
            "--suite",
            "suite.yaml",
            "--detach",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    out
}

/// The last output line of each running step, from `flow status --json`.
fn last_lines(v: &Value) -> Vec<String> {
    v["runs"][0]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| h["steps"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["last_line"].as_str().map(String::from))
        .collect()
}

fn collecting(p: Project, duration: &str) -> Project {
    p.file("suite.yaml", "suite: t\nworkloads:\n  - workload: w.yaml\n")
        .file(
            "w.yaml",
            &format!(
                "workload: w\nsteps:\n  sensor:\n    kind: monitor\n    run: \"i=0; while :; do i=$((i+1)); echo $i >> data.csv; echo sample $i; sleep 0.1; done\"\n    duration: {duration}\n  pull: {{ kind: fetch, paths: [data.csv], every: 1s }}\n"
            ),
        )
}

#[test]
fn a_detached_run_returns_at_once_and_is_followed_to_its_end() {
    let p = collecting(Project::new(), "3s");
    let t0 = Instant::now();
    let out = detach(&p);
    let returned = t0.elapsed();
    assert!(out.contains("detached: flow (pid "), "{out}");
    assert!(out.contains("flow stop "), "{out}");
    // Back before the run's 3 s collection is over: it goes on without us.
    assert!(returned < Duration::from_secs(3), "{returned:?}");
    let v = status_json(p.path());
    assert_eq!(v["state"], "running", "{v}");
    let (followed, _) = Flow::new()
        .args(["attach", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(followed.contains("PASS  [1/1]"), "{followed}");
    assert!(followed.contains("1 run: 1 passed"), "{followed}");
    let v = status_json(p.path());
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["counts"]["passed"], 1, "{v}");
    let run = run_dir(p.path());
    assert!(samples_plain(&run.join("hosts/local/data.csv")) >= 25);
    assert!(run.join("../../controller.log").is_file());
}

fn samples_plain(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn flow_stop_ends_a_detached_run_cleanly_with_its_data_fetched() {
    let p = collecting(Project::new(), "10m");
    detach(&p);
    wait_for(Duration::from_secs(30), "a fetch pass", || {
        bytes_fetched(&status_json(p.path()))
            .iter()
            .any(|(_, b)| *b > 0)
    });
    // The running step's last line, live.
    let lines = last_lines(&status_json(p.path()));
    assert!(lines.iter().any(|l| l.starts_with("sample ")), "{lines:?}");
    // A live run's steps are not leftovers: reap refuses, nothing is killed.
    let (_, refused) = Flow::new()
        .args(["reap", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(2);
    assert!(
        refused.contains("is running") && refused.contains("flow stop"),
        "{refused}"
    );
    assert_eq!(status_json(p.path())["state"], "running");
    let (_, err) = Flow::new()
        .args(["stop", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(err.contains("stopped;"), "{err}");
    let v = status_json(p.path());
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["counts"]["interrupted"], 1, "{v}");
    let run = run_dir(p.path());
    let res = json(&run.join("run_result.json"));
    assert_eq!(res["status"], "interrupted");
    // Stopped, then fetched once more: everything it wrote is here.
    let pull = res["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "pull")
        .expect("pull");
    assert_eq!(pull["status"], "passed", "{pull}");
    assert!(samples_plain(&run.join("hosts/local/data.csv")) >= 5);
    // Nothing left to stop.
    let (out, _) = Flow::new()
        .args(["stop", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(out.contains("nothing to stop"), "{out}");
}

/// The issue's overnight sweep: the suite is detached onto an ssh
/// controller host ("a dev VM"); "the laptop" follows it, brings the
/// artifact back while and after it runs, and analyses its copy to the
/// same bytes.
#[test]
fn a_suite_detached_onto_an_ssh_controller_is_followed_synced_and_reanalysed_here() {
    let s = Sshds::start(3);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(
        &inv,
        &[
            ("devvm", "roles: [dev]"),
            ("a", "roles: [sensor]"),
            ("b", "roles: [sensor]"),
        ],
    );
    let dir = s.dir.path().join("laptop");
    shipped_collection(&dir);
    // The tutorial's command, with a 4 s collection instead of a day's.
    let inv = inv.display().to_string();
    let (out, err) = Flow::new()
        .args([
            "run",
            "--suite",
            "collection",
            "--hosts",
            &inv,
            "--set",
            "length=8s",
            "--set",
            "interval=0.2",
            "--set",
            "steps.pull.every=1s",
            "--detach",
            "--controller",
            "devvm",
            "--artifacts",
            "artifacts",
        ])
        .cwd(&dir)
        .expect(0);
    assert!(out.contains("detached on `devvm`"), "{out}");
    assert!(err.contains("pushing flow"), "{err}");
    let local = std::fs::canonicalize(dir.join("artifacts/latest")).expect("latest");
    assert!(local.join("remote.json").is_file());
    // From the laptop: its progress, forwarded.
    let v = status_json(&dir);
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["counts"]["total"], 1, "{v}");
    // A sync while it runs brings what is there so far.
    wait_for(Duration::from_secs(30), "data on the controller", || {
        Flow::new()
            .args(["sync", "--artifacts", "artifacts"])
            .cwd(&dir)
            .expect(0);
        std::fs::read_dir(local.join("runs"))
            .map(|rd| {
                rd.flatten()
                    .any(|r| r.path().join("hosts/a/samples.csv").is_file())
            })
            .unwrap_or(false)
    });
    // That copy is not the whole artifact yet, and analysing it says so.
    let (_, warned) = Flow::new()
        .args(["analyze", "--no-steps", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(warned.contains("1 of 1 runs have not ended"), "{warned}");
    let (followed, _) = Flow::new()
        .args(["attach", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(followed.contains("1 run: 1 passed"), "{followed}");
    let (synced, _) = Flow::new()
        .args(["sync", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(synced.contains("synced"), "{synced}");
    assert!(!local.join("flow.pid").exists());
    let before: Vec<(String, Vec<u8>)> = ["runs.csv", "summary.csv", "summary.json"]
        .iter()
        .map(|f| {
            let b = std::fs::read(local.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (f.to_string(), b)
        })
        .collect();
    // Analysed here, from the copy alone: the same bytes.
    Flow::new()
        .args(["analyze", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    for (f, b) in before {
        let after = std::fs::read(local.join(&f)).expect("after");
        assert!(after == b, "{f} differs after flow analyze");
    }
    let csv = std::fs::read_to_string(local.join("runs.csv")).expect("runs.csv");
    assert_eq!(csv.matches(",passed,").count(), 1, "{csv}");
    // The forwarded stop of a finished artifact: nothing to stop.
    let (stopped, _) = Flow::new()
        .args(["stop", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(stopped.contains("nothing to stop"), "{stopped}");
}

/// `on_host_loss: continue`: one host drops off the network mid-collection;
/// the other collects to the end and its data comes back whole, while the
/// run is failed (the lost host's data ends early) and says which host.
#[test]
fn with_on_host_loss_continue_a_lost_host_does_not_end_the_others_collection() {
    let mut s = Sshds::start(2);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [sensor]"), ("b", "roles: [sensor]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("suite.yaml"),
        format!(
            "suite: t\nhosts: {}\nworkloads:\n  - workload: collect.yaml\n",
            inv.display()
        ),
    )
    .expect("suite");
    std::fs::write(
        dir.join("collect.yaml"),
        r#"workload: collect
steps:
  sensor:
    kind: monitor
    on: sensor
    run: "i=0; while :; do i=$((i+1)); echo $(date +%s%N),$i >> samples.csv; echo sample $i; sleep 0.2; done"
    duration: 30s
    on_host_loss: continue
  pull: { kind: fetch, from: sensor, paths: [samples.csv], every: 1s }
"#,
    )
    .expect("workload");
    let child = Command::new(assert_cmd::cargo::cargo_bin("flow"))
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flow starts");
    let artifacts = dir.join("artifacts");
    wait_for(Duration::from_secs(60), "both sensors", || {
        let j = super::remote::journal(&artifacts);
        let ready = |h: &str| {
            j.lines().any(|l| {
                l.contains(r#""event":"step_ready""#)
                    && l.contains(&format!(r#""step":"sensor@{h}""#))
            })
        };
        ready("a") && ready("b")
    });
    let tag = super::remote::run_tag(&artifacts);
    std::thread::sleep(Duration::from_secs(3));
    // An ssh monitor's output comes back as it is written.
    let lines = last_lines(&status_json(&dir));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("sample ")).count(),
        2,
        "{lines:?}"
    );
    s.vanish("h1"); // host `a`
    let out = child.wait_with_output().expect("flow exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What ran on the vanished host still runs there; this test ends it.
    for (pid, _) in super::run::processes_with_env(&tag) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let journal = super::remote::journal(&artifacts);
    assert!(
        stderr.contains("host `a` was lost") || stdout.contains("host `a` was lost"),
        "{stdout}\n{stderr}\n{journal}"
    );
    let run = run_dir(&dir);
    let res = json(&run.join("run_result.json"));
    assert_eq!(res["status"], "failed", "{res}");
    let step = |id: &str| {
        res["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id}"))
    };
    assert_eq!(step("sensor@a")["status"], "failed");
    assert_eq!(step("sensor@b")["status"], "passed", "{}", step("sensor@b"));
    // `b` collected for the whole 30 s (5 samples a second; a loaded
    // machine's `sleep 0.2` takes longer), and it is all here.
    let b = samples(&run.join("hosts/b/samples.csv"));
    assert!(b.len() >= 120, "{} samples from b", b.len());
    assert!(b.iter().enumerate().all(|(i, &n)| n == i as u64 + 1));
    // What `a` sent before it was lost is kept.
    assert!(!samples(&run.join("hosts/a/samples.csv")).is_empty());
}
