//! Remote hosts for real: private sshd instances on loopback (see
//! `tests/sshd`), reached through the system OpenSSH client.

use super::Flow;
use super::sshd::Sshds;

mod netns;

#[test]
fn hosts_check_reports_every_host_and_fails_on_an_unreachable_one() {
    let s = Sshds::start(2);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory(&inv, &[&["w"], &["w"]]);
    let mut text = std::fs::read_to_string(&inv).expect("inventory");
    text.push_str(
        "  gone: { address: 127.0.0.1, port: 1, roles: [w] }\n  me: { address: local }\n",
    );
    std::fs::write(&inv, text).expect("write");
    let (stdout, _) = Flow::new()
        .args(["hosts", "check", "--hosts"])
        .args([inv.to_string_lossy()])
        .expect(1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("host  address    status  connect  rtt"),
        "{stdout}"
    );
    for h in ["h1", "h2"] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("{h} ")))
            .expect("a row");
        assert!(row.contains(" ok "), "{row}");
        assert!(row.contains(" ± "), "a clock offset with its bound: {row}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("me ") && l.contains("0 (local)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("error: cannot connect to host `gone`: ssh: connect to host 127.0.0.1 port 1: Connection refused"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 of 4 hosts failed\n"), "{stdout}");

    let (json, _) = Flow::new()
        .args(["hosts", "check", "--json", "--hosts"])
        .args([inv.to_string_lossy()])
        .expect(1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let h1 = &v[0];
    assert_eq!(h1["ok"], true);
    // Same machine, same clock: the true offset is 0, so it must lie
    // within the reported bound.
    let off = h1["clock"]["offset_ns"]
        .as_i64()
        .expect("offset")
        .unsigned_abs();
    let bound = h1["clock"]["bound_ns"].as_u64().expect("bound");
    assert!(
        off <= bound + 1_000_000,
        "offset {off} ns, bound {bound} ns"
    );
    assert_eq!(v[2]["ok"], false);
}

#[test]
fn exec_runs_on_the_selected_hosts_and_reports_each_exit() {
    let s = Sshds::start(3);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory(&inv, &[&["worker"], &["worker"], &["coordinator"]]);
    let (stdout, _) = Flow::new()
        .args(["exec", "--on", "worker", "--hosts"])
        .args([inv.to_string_lossy()])
        .args([
            "--",
            "echo out-$((6*7)); echo err >&2; test \"$(id -u)\" -ge 0",
        ])
        .expect(0);
    for h in ["h1", "h2"] {
        assert!(stdout.contains(&format!("{h} | out-42\n")), "{stdout}");
        assert!(stdout.contains(&format!("{h} ! err\n")), "{stdout}");
        assert!(stdout.contains(&format!("{h} : exit 0\n")), "{stdout}");
    }
    assert!(!stdout.contains("h3"), "{stdout}");
    let (stdout, _) = Flow::new()
        .args(["exec", "--hosts"])
        .args([inv.to_string_lossy()])
        .args(["--", "exit 4"])
        .expect(1);
    assert_eq!(stdout.matches(": exit 4\n").count(), 3, "{stdout}");
}

#[test]
fn a_host_behind_a_jump_host_is_reached_through_it() {
    let s = Sshds::start(2);
    let inv = s.dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        format!(
            "defaults:\n  ssh_config: {}\nhosts:\n  gateway: {{ address: h1 }}\n  inner: {{ address: h2, jump: gateway }}\n",
            s.ssh_config().display()
        ),
    )
    .expect("inventory");
    // The jump is taken: with h1's sshd gone, h2 cannot be reached.
    let (stdout, _) = Flow::new()
        .args(["exec", "--on", "inner", "--hosts"])
        .args([inv.to_string_lossy()])
        .args(["--", "echo $SSH_CONNECTION"])
        .expect(0);
    assert!(stdout.contains("inner : exit 0"), "{stdout}");
    let mut s = s;
    s.stop("h1");
    let (stdout, _) = Flow::new()
        .args(["exec", "--on", "inner", "--hosts"])
        .args([inv.to_string_lossy()])
        .args(["--", "true"])
        .expect(1);
    assert!(
        stdout.contains("inner : error: cannot connect to host `inner`"),
        "{stdout}"
    );
}

#[test]
fn the_streaming_demo_runs_across_three_ssh_hosts() {
    let mut s = Sshds::start(3);
    let inv = s.dir.path().join("inventory.yaml");
    let (p1, p2) = (super::free_udp_port(), super::free_udp_port());
    s.inventory_direct(
        &inv,
        &[
            ("coord", "roles: [coordinator]"),
            (
                "w1",
                &format!("roles: [worker], vars: {{ node_id: w1, port: {p1} }}"),
            ),
            (
                "w2",
                &format!("roles: [worker], vars: {{ node_id: w2, port: {p2} }}"),
            ),
        ],
    );
    let art = s.dir.path().join("artifacts");
    let (stdout, _) = Flow::new()
        .args(["run", "--suite", "streaming", "--only", "*.r1-*", "--hosts"])
        .args([
            inv.to_string_lossy(),
            "--artifacts".into(),
            art.to_string_lossy(),
        ])
        .cwd(&super::root())
        .expect(0);
    assert!(stdout.contains("2 runs: 2 passed, 0 failed"), "{stdout}");
    let latest = std::fs::canonicalize(art.join("latest")).expect("latest");
    for e in std::fs::read_dir(latest.join("runs"))
        .expect("runs")
        .flatten()
    {
        let run = e.path();
        let plan: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).expect("plan"))
                .expect("json");
        let n = plan["params"]["num_events"].as_u64().expect("num_events");
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("analysis/summary.json")).expect("summary"),
        )
        .expect("json");
        for w in ["w1", "w2"] {
            assert_eq!(
                summary["workers"][w]["received"].as_u64(),
                Some(n),
                "{summary:#}"
            );
            let csv =
                std::fs::read_to_string(run.join(format!("hosts/{w}/worker.csv"))).expect("csv");
            assert!(
                csv.lines()
                    .nth(1)
                    .is_some_and(|l| l.contains(&format!(",{w},"))),
                "{csv}"
            );
            let out =
                std::fs::read_to_string(run.join(format!("logs/worker@{w}.out"))).expect("log");
            assert!(out.contains("Worker ready, listening on port"), "{out}");
        }
        let fetch = std::fs::read_to_string(run.join("fetch.log")).expect("fetch.log");
        assert_eq!(
            fetch.lines().filter(|l| l.ends_with("\tok")).count(),
            2,
            "{fetch}"
        );
        let result: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("run_result.json")).expect("result"),
        )
        .expect("json");
        assert_eq!(result["status"], "passed");
        assert!(result.get("errors").is_none(), "{result:#}");
        for h in ["coord", "w1", "w2"] {
            for when in ["before", "after"] {
                let c = &result["clocks"][h][when];
                // One machine, one clock: the true offset (0) is within the bound.
                let off = c["offset_ns"].as_i64().expect("offset").unsigned_abs();
                let bound = c["bound_ns"].as_u64().expect("bound");
                assert!(off <= bound + 1_000_000, "{h} {when}: {c}");
            }
        }
        // The coordinator's start and end on its host's clock, and on the
        // controller's: within the step's own times, and (one machine)
        // within the bound of the host's reading.
        let b = result["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == "broadcast@coord"))
            .cloned()
            .expect("broadcast step");
        let t = &b["host_times"];
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{b:#}"));
        let bound = n(&t["bound_ns"]);
        for (on_host, on_controller) in [
            ("started_host_ns", "started_ns"),
            ("ended_host_ns", "ended_ns"),
        ] {
            assert!(
                n(&t[on_host]).abs_diff(n(&t[on_controller])) <= bound + 1_000_000,
                "{b:#}"
            );
        }
        assert!(
            n(&t["started_ns"]) + bound >= n(&b["started"]["wall_ns"]),
            "{b:#}"
        );
        assert!(
            n(&t["ended_ns"]) <= n(&b["ended"]["wall_ns"]) + bound,
            "{b:#}"
        );
        assert!(n(&t["started_ns"]) <= n(&t["ended_ns"]), "{b:#}");
        let load = result["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == "load@w1"))
            .cloned();
        assert_eq!(
            load.map(|l| l["stop_signals"].clone()),
            Some(serde_json::json!(["TERM"]))
        );
    }
    // The hosts are gone; the artifact alone gives the same results again.
    for h in ["h1", "h2", "h3"] {
        s.stop(h);
    }
    let files = |dir: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut v = vec![
            (
                "summary.csv".to_string(),
                std::fs::read(dir.join("summary.csv")).expect("csv"),
            ),
            (
                "summary.json".to_string(),
                std::fs::read(dir.join("summary.json")).expect("json"),
            ),
        ];
        for e in std::fs::read_dir(dir.join("runs")).expect("runs").flatten() {
            for f in ["run_result.json", "analysis/summary.json"] {
                v.push((
                    format!("{}/{f}", e.path().display()),
                    std::fs::read(e.path().join(f)).expect(f),
                ));
            }
        }
        v
    };
    let before = files(&latest);
    let (stdout, _) = Flow::new()
        .args(["analyze", "--artifacts"])
        .args([art.to_string_lossy()])
        .cwd(&super::root())
        .expect(0);
    assert!(
        stdout.starts_with("2 runs: 6 metric values extracted, 0 without a value"),
        "{stdout}"
    );
    assert!(before == files(&latest), "flow analyze changed the results");
}

/// A suite of one workload on the given inventory, in a temp dir.
fn project(dir: &std::path::Path, inventory: &std::path::Path, workload: &str) {
    std::fs::write(
        dir.join("suite.yaml"),
        format!(
            "suite: t\nhosts: {}\nworkloads:\n  - workload: workload.yaml\n",
            inventory.display()
        ),
    )
    .expect("suite");
    std::fs::write(dir.join("workload.yaml"), workload).expect("workload");
}

/// `flow run --suite suite.yaml` (plus `extra`) in `dir`, in the
/// background, stdout and stderr piped.
pub(super) fn spawn_run(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("flow"))
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .args(extra)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flow starts")
}

/// `FLOW_RUN_TAG=…` of the first run, from its journal.
/// `again.yaml`, a suite of `workload` (as `quick.yaml`) on the hosts of `s`:
/// a second invocation after the first one's flow was killed.
fn second_suite(s: &Sshds, dir: &std::path::Path, workload: &str) {
    std::fs::write(
        dir.join("again.yaml"),
        format!(
            "suite: again\nhosts: {}\nworkloads:\n  - workload: quick.yaml\n",
            s.dir.path().join("inventory.yaml").display()
        ),
    )
    .expect("suite");
    std::fs::write(dir.join("quick.yaml"), workload).expect("workload");
}

pub(crate) fn run_tag(artifacts: &std::path::Path) -> String {
    let first: serde_json::Value =
        serde_json::from_str(journal(artifacts).lines().next().expect("a line")).expect("json");
    format!("FLOW_RUN_TAG={}", first["tag"].as_str().expect("tag"))
}

pub(crate) fn journal(artifacts: &std::path::Path) -> String {
    let Ok(runs) = std::fs::read_dir(artifacts.join("latest/runs")) else {
        return String::new();
    };
    runs.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("events.jsonl")).ok())
        .collect()
}

#[test]
fn ctrl_c_stops_remote_steps_and_leaves_nothing_on_any_host() {
    let s = Sshds::start(2);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [server]"), ("b", "roles: [client]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    project(
        &dir,
        &inv,
        r#"
workload: stubborn
steps:
  deaf:
    kind: service
    on: server
    run: "trap '' TERM; echo up; while :; do sleep 0.1; done"
    ready: { log: up, timeout: 20s, interval: 50ms }
    stop: { signal: TERM, grace: 1s }
  forker:
    on: client
    run: "sleep 301 & setsid sleep 302 & echo forked; sleep 303"
  grab:
    kind: fetch
    from: client
    paths: ["*.txt"]
"#,
    );
    let child = spawn_run(&dir, &[]);
    let artifacts = dir.join("artifacts");
    super::run::wait_for(
        std::time::Duration::from_secs(60),
        "the remote task to start",
        || journal(&artifacts).contains(r#""step":"forker@b""#),
    );
    let tag = run_tag(&artifacts);
    super::run::wait_for(
        std::time::Duration::from_secs(20),
        "the remote processes",
        || super::run::processes_with_env(&tag).len() >= 4,
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = child.wait_with_output().expect("flow exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(
        super::run::processes_with_env(&tag),
        vec![],
        "processes outlived flow on the hosts"
    );
    let runs = std::fs::read_dir(artifacts.join("latest/runs")).expect("runs");
    let run = runs.flatten().next().expect("a run").path();
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("run_result.json")).expect("result"),
    )
    .expect("json");
    assert_eq!(r["status"], "interrupted");
    let step = |id: &str| {
        r["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == id))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(step("forker@b")["status"], "interrupted");
    assert_eq!(
        step("deaf@a")["stop_signals"],
        serde_json::json!(["TERM", "KILL"])
    );
    assert_eq!(
        step("grab@b")["status"],
        "passed",
        "fetch runs after Ctrl-C"
    );
    let out = std::fs::read_to_string(run.join("logs/forker@b.out")).expect("log pulled");
    assert_eq!(out, "forked\n");
}

#[test]
fn a_host_that_vanishes_mid_run_fails_the_run_with_its_name_and_the_suite_goes_on() {
    let mut s = Sshds::start(2);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [server]"), ("b", "roles: [client]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    project(
        &dir,
        &inv,
        r#"
workload: fragile
steps:
  srv: { kind: service, on: server, run: "echo up; exec sleep 300", ready: { log: up, interval: 50ms } }
  work: { on: client, run: "echo started; sleep 30" }
"#,
    );
    std::fs::write(
        dir.join("suite.yaml"),
        format!(
            "suite: t\nhosts: {}\nworkloads:\n  - {{ workload: workload.yaml, repetitions: 2 }}\n",
            inv.display()
        ),
    )
    .expect("suite");
    let child = spawn_run(&dir, &[]);
    let artifacts = dir.join("artifacts");
    super::run::wait_for(
        std::time::Duration::from_secs(60),
        "the task to start",
        || journal(&artifacts).contains(r#""step":"work@b""#),
    );
    let tag = run_tag(&artifacts);
    s.vanish("h1"); // host `a` of the inventory
    let out = child.wait_with_output().expect("flow exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The second run cannot reach `a` either: both fail, neither hangs.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("2 runs: 0 passed, 2 failed"), "{stdout}");
    assert!(
        stdout.contains("host `a`"),
        "the error names the host: {stdout}"
    );
    // What ran on the vanished host is still there, as on a real host that
    // dropped off the network; this test cleans it up.
    for (pid, _) in super::run::processes_with_env(&tag) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let csv = std::fs::read_to_string(
        std::fs::canonicalize(artifacts.join("latest"))
            .expect("latest")
            .join("runs.csv"),
    )
    .expect("runs.csv");
    assert_eq!(csv.matches(",failed,").count(), 2, "{csv}");
}

/// Hosts `a` and `b`, a project whose run leaves a service on `a` and a
/// task with a background child on `b`, and that run's flow killed with
/// `kill -9` once they are all up. Returns the project folder, the
/// artifact id and `FLOW_RUN_TAG=<the run's tag>`.
fn orphans_after_kill_9(s: &Sshds) -> (std::path::PathBuf, String, String) {
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [server]"), ("b", "roles: [client]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    project(
        &dir,
        &inv,
        r#"
workload: orphaned
steps:
  srv: { kind: service, on: server, run: "echo collected > data.txt; echo up; exec sleep 300", ready: { log: up, interval: 50ms } }
  work: { on: client, run: "sleep 301 & echo started; sleep 302" }
  grab: { kind: fetch, from: server, paths: [data.txt] }
"#,
    );
    let mut child = spawn_run(&dir, &[]);
    let artifacts = dir.join("artifacts");
    super::run::wait_for(
        std::time::Duration::from_secs(60),
        "the task to start",
        || journal(&artifacts).contains(r#""step":"work@b""#),
    );
    let id = std::fs::canonicalize(artifacts.join("latest"))
        .expect("latest")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("id");
    // The run's tag, not the artifact id: two tests that start the same
    // suite name in the same second get the same artifact id, and this
    // looks at every process of the machine.
    let tag = journal(&artifacts)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|e| e["tag"].as_str().map(String::from))
        .expect("the run's tag in its journal");
    let needle = format!("FLOW_RUN_TAG={tag}");
    // All three sleeps (the shell may exec the last one itself).
    let sleeps = |needle: &str| {
        let found = super::run::processes_with_env(needle);
        ["sleep 300", "sleep 301", "sleep 302"]
            .iter()
            .filter(|c| found.iter().any(|(_, cmd)| cmd.trim() == **c))
            .count()
    };
    super::run::wait_for(
        std::time::Duration::from_secs(60),
        "the remote processes",
        || sleeps(&needle) == 3,
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    // Remote steps are detached from flow: they survive it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(sleeps(&needle), 3);
    (dir, id, needle)
}

#[test]
fn after_kill_9_of_flow_reap_kills_what_the_artifact_left_on_its_hosts() {
    let s = Sshds::start(2);
    let (dir, id, needle) = orphans_after_kill_9(&s);
    let (stdout, _) = Flow::new()
        .args(["reap", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    // Each host reaps what was started from its own workdir (both test
    // hosts are this machine).
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("a: killed "), "{stdout}");
    assert!(lines[1].starts_with("b: killed "), "{stdout}");
    super::run::wait_for(std::time::Duration::from_secs(30), "nothing left", || {
        super::run::processes_with_env(&needle).is_empty()
    });
    let (again, _) = Flow::new()
        .args(["reap", &id, "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert_eq!(again, "a: nothing left\nb: nothing left\n");
}

#[test]
fn after_kill_9_of_flow_a_new_run_fetches_what_the_leftovers_wrote_into_their_artifact_then_stops_them()
 {
    let s = Sshds::start(2);
    let (dir, id, needle) = orphans_after_kill_9(&s);
    second_suite(
        &s,
        &dir,
        "workload: quick\nsteps:\n  q1: { on: server, run: \"true\" }\n  q2: { on: client, run: \"true\" }\n",
    );
    let (stdout, stderr) = Flow::new()
        .args(["run", "--suite", "again.yaml", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(stdout.contains("1 run: 1 passed"), "{stdout}");
    for (h, files) in [("a", "1 file"), ("b", "0 files")] {
        assert!(
            stderr.contains(&format!(
                "warning: host `{h}`: fetched what the steps of artifact {id} "
            )) && stderr.contains(&format!("that artifact ({files}, ")),
            "{stderr}"
        );
    }
    assert_eq!(super::run::processes_with_env(&needle), vec![]);
    // Into the dead flow's own artifact, recorded there.
    let old = dir.join("artifacts").join(&id);
    let run = std::fs::read_dir(old.join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("a run")
        .path();
    assert_eq!(
        std::fs::read_to_string(run.join("hosts/a/data.txt")).expect("rescued"),
        "collected\n"
    );
    let log = std::fs::read_to_string(run.join("fetch.log")).expect("fetch.log");
    assert!(log.contains("hosts/a/data.txt"), "{log}");
    let journal = std::fs::read_to_string(run.join("events.jsonl")).expect("journal");
    assert_eq!(
        journal.matches(r#""event":"rescued""#).count(),
        2,
        "{journal}"
    );
}

#[test]
fn after_kill_9_leftovers_whose_artifact_is_not_here_are_left_running() {
    let s = Sshds::start(2);
    let (dir, id, needle) = orphans_after_kill_9(&s);
    // Its folder is gone from this machine (copied elsewhere, say).
    std::fs::remove_dir_all(dir.join("artifacts").join(&id)).expect("rm");
    second_suite(
        &s,
        &dir,
        "workload: quick\nsteps:\n  q1: { on: server, run: \"true\" }\n",
    );
    let (_, stderr) = Flow::new()
        .args([
            "run",
            "--suite",
            "again.yaml",
            "--artifacts",
            "artifacts",
            "--share-hosts",
        ])
        .cwd(&dir)
        .expect(0);
    assert!(
        stderr.contains(&format!("steps of artifact {id} ")) && stderr.contains("left running"),
        "{stderr}"
    );
    assert!(!super::run::processes_with_env(&needle).is_empty());
    for (pid, _) in super::run::processes_with_env(&needle) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn remote_fetch_records_missing_files_and_never_follows_links_out_of_the_run_dir() {
    files_and_fetch(&Sshds::start(1));
}

#[test]
fn without_rsync_on_the_host_files_and_fetch_go_by_tar_with_the_same_guarantees() {
    let s = Sshds::start_hiding(1, &["rsync"]);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("b", "roles: [client]")]);
    let (stdout, _) = Flow::new()
        .args(["exec", "--hosts"])
        .args([inv.to_string_lossy()])
        .args(["--", "command -v rsync || echo no rsync"])
        .expect(0);
    assert!(stdout.contains("b | no rsync"), "{stdout}");
    files_and_fetch(&s);
}

/// A workload with `files:` and a fetch of a missing file, a file, and a
/// link out of the run dir, on host `b` of `s`.
fn files_and_fetch(s: &Sshds) {
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("b", "roles: [client]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let secret = s.dir.path().join("secret.txt");
    std::fs::write(&secret, "outside\n").expect("secret");
    project(
        &dir,
        &inv,
        &format!(
            r#"
workload: fetchy
files: [data/]
steps:
  make: {{ on: client, run: "mkdir -p out && echo a > out/a.txt && cp data/in.txt out/b.txt && ln -s {} out/leak.txt" }}
  grab: {{ kind: fetch, from: client, paths: ["missing.csv", "out/*.txt"] }}
"#,
            secret.display()
        ),
    );
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::write(dir.join("data/in.txt"), "pushed\n").expect("data");
    Flow::new()
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    let latest = std::fs::canonicalize(dir.join("artifacts/latest")).expect("latest");
    let run = std::fs::read_dir(latest.join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("run")
        .path();
    let log = std::fs::read_to_string(run.join("fetch.log")).expect("fetch.log");
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("missing.csv").ends_with("\tmissing"), "{log}");
    assert!(line("out/a.txt").ends_with("\tok"), "{log}");
    assert!(!line("leak.txt").ends_with("\tok"), "{log}");
    assert_eq!(
        std::fs::read_to_string(run.join("hosts/b/out/a.txt")).expect("a"),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("hosts/b/out/b.txt")).expect("b"),
        "pushed\n"
    );
    let leak = run.join("hosts/b/out/leak.txt");
    assert!(
        std::fs::read_to_string(&leak).map_or(true, |t| t != "outside\n"),
        "a link out of the run dir was followed"
    );
}

#[test]
fn verbose_streams_a_remote_tasks_output_while_it_runs() {
    let s = Sshds::start(1);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory_direct(&inv, &[("a", "roles: [box]")]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    project(
        &dir,
        &inv,
        "workload: talk\nsteps:\n  talk: { on: box, run: \"echo first; sleep 6; echo second >&2; printf third\" }\n",
    );
    let mut child = spawn_run(&dir, &["-v"]);
    let stdout = child.stdout.take().expect("stdout");
    let t0 = std::time::Instant::now();
    let lines: Vec<(std::time::Duration, String)> =
        std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .map(|l| (t0.elapsed(), l))
            .collect();
    assert_eq!(child.wait().expect("flow exits").code(), Some(0));
    let at = |text: &str| {
        lines
            .iter()
            .find(|(_, l)| l == text)
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no `{text}` in {lines:#?}"))
    };
    // The first line is shown while the task sleeps, not when it ends.
    assert!(
        at("talk@a | second") >= at("talk@a | first") + std::time::Duration::from_secs(3),
        "{lines:#?}"
    );
    at("talk@a | third");
    // Each line once, and the log files exact.
    assert_eq!(lines.iter().filter(|(_, l)| l.contains("first")).count(), 1);
    let run = std::fs::read_dir(dir.join("artifacts/latest/runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("a run")
        .path();
    assert_eq!(
        std::fs::read_to_string(run.join("logs/talk@a.out")).expect("out"),
        "first\nthird"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("logs/talk@a.err")).expect("err"),
        "second\n"
    );
}

/// Two hosts whose workdir is one folder (as a cluster's shared home is for
/// every node): each host's files come back as that host wrote them.
#[test]
fn hosts_sharing_a_workdir_keep_their_files_apart() {
    let s = Sshds::start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("inventory.yaml");
    s.inventory(&inv, &[&["worker"], &["worker"]]);
    let text = std::fs::read_to_string(&inv).expect("inventory");
    let shared = text.replace("work-h2", "work-h1");
    assert_ne!(text, shared);
    std::fs::write(&inv, shared).expect("inventory");
    each_host_gets_its_own_file(dir.path(), &inv, &["h1", "h2"]);
}

/// The same for two local hosts with one `workdir`.
#[test]
fn local_hosts_sharing_a_workdir_keep_their_files_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("inventory.yaml");
    let work = dir.path().join("shared");
    std::fs::write(
        &inv,
        format!(
            "defaults: {{ address: local, workdir: {} }}\nhosts:\n  l1: {{ roles: [worker] }}\n  l2: {{ roles: [worker] }}\n",
            work.display()
        ),
    )
    .expect("inventory");
    each_host_gets_its_own_file(dir.path(), &inv, &["l1", "l2"]);
}

/// Runs a suite in `d` whose workers each write their name to `who.txt`,
/// fetched from each; every host's copy must hold its own name.
fn each_host_gets_its_own_file(d: &std::path::Path, inv: &std::path::Path, hosts: &[&str]) {
    project(
        d,
        inv,
        "workload: shared\nsteps:\n  write: { on: worker, run: \"echo {{ host.name }} > who.txt\" }\n  back: { kind: fetch, from: worker, paths: [who.txt] }\n",
    );
    Flow::new()
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .cwd(d)
        .expect(0);
    let runs = d.join("artifacts/latest/runs");
    let run = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .next()
        .expect("a run")
        .path();
    for h in hosts {
        let got =
            std::fs::read_to_string(run.join("hosts").join(h).join("who.txt")).expect("fetched");
        assert_eq!(got.trim(), *h, "host {h}'s own file");
    }
}

/// Analyze steps get the run's whole clock record (the measurement after
/// the run included) before they run: `$FLOW_CLOCKS`, `{{ run.clocks }}`,
/// and `run_result.json` as it is then.
#[test]
fn analyze_steps_see_the_final_clock_record() {
    let s = Sshds::start(1);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory(&inv, &[&["w"]]);
    let dir = s.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    project(
        &dir,
        &inv,
        r#"workload: clocks
steps:
  t: { on: w, run: "echo seq,t > ev.csv; for i in 1 2 3; do echo $i,$(date +%s%N) >> ev.csv; sleep 0.1; done" }
  get: { kind: fetch, from: w, paths: [ev.csv] }
  look:
    kind: analyze
    needs: [t]
    run: >-
      mkdir -p "$FLOW_RUN_DIR/analysis" &&
      test -s "$FLOW_RUN_DIR/analysis/timeline.csv" &&
      cp "$FLOW_CLOCKS" "$FLOW_RUN_DIR/analysis/clocks.json" &&
      cp "$FLOW_RUN_DIR/run_result.json" "$FLOW_RUN_DIR/analysis/result.json" &&
      test "$FLOW_CLOCKS" = {{ run.clocks }}
timeline:
  ev: { files: ev.csv, time: t, unit: ns }
"#,
    );
    let (stdout, _) = Flow::new()
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert!(stdout.contains("1 run: 1 passed"), "{stdout}");
    let runs = std::fs::read_dir(dir.join("artifacts/latest/runs")).expect("runs");
    let run = runs.flatten().next().expect("a run").path();
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join(p)).expect(p)).expect("json")
    };
    let clocks = read("analysis/clocks.json");
    for when in ["before", "after"] {
        assert!(
            clocks["hosts"]["h1"][when]["offset_ns"].is_i64(),
            "{clocks:#}"
        );
    }
    assert!(clocks["steps"]["t@h1"]["started_ns"].is_u64(), "{clocks:#}");
    assert!(clocks["steps"]["t@h1"]["bound_ns"].is_u64(), "{clocks:#}");
    let result = read("analysis/result.json");
    assert!(
        result["clocks"]["h1"]["after"]["offset_ns"].is_i64(),
        "run_result.json lacked the after measurement when analysis ran: {result:#}"
    );
    // The ssh host is this machine: its true offset is 0, so each
    // corrected time must be within its bound of the time as written.
    let csv = std::fs::read_to_string(run.join("analysis/timeline.csv")).expect("timeline");
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let h = rd.headers().expect("header").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect(n);
    let (host, local, corrected, bound) = (
        col("host"),
        col("local_ns"),
        col("corrected_ns"),
        col("bound_ns"),
    );
    let mut n = 0;
    for r in rd.records() {
        let r = r.expect("a row");
        let num = |i: usize| r[i].parse::<i128>().expect("a number");
        assert_eq!(&r[host], "h1");
        assert!(num(bound) > 0, "a remote host has a bound: {csv}");
        assert!((num(corrected) - num(local)).abs() <= num(bound), "{csv}");
        n += 1;
    }
    assert_eq!(n, 3, "{csv}");
}
