//! Remote hosts with addresses of their own (network namespaces, see
//! `tests/netns`): what loopback hosts cannot show.

use super::super::Flow;
use super::super::netns::{self, NsHosts};
use super::{journal, project, spawn_run};

#[test]
#[ignore = "needs root: network-namespace hosts (scripts/test.sh runs it as root)"]
fn two_workers_on_the_same_port_at_their_own_addresses_run_the_streaming_demo() {
    netns::require_root();
    let n = NsHosts::start(&["coord", "w1", "w2"]);
    let inv = n.dir.path().join("inventory.yaml");
    // No `vars.port`: both workers listen on the workload's port 9000.
    n.inventory(
        &inv,
        &[
            "roles: [coordinator]",
            "roles: [worker], vars: { node_id: w1 }",
            "roles: [worker], vars: { node_id: w2 }",
        ],
    );
    let art = n.dir.path().join("artifacts");
    let (stdout, _) = Flow::new()
        .args(["run", "--suite", "streaming", "--only", "*.r1-*", "--hosts"])
        .args([
            inv.to_string_lossy(),
            "--artifacts".into(),
            art.to_string_lossy(),
        ])
        .cwd(&super::super::root())
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
        let n_events = plan["params"]["num_events"].as_u64().expect("num_events");
        // The coordinator was given each worker's own address, same port.
        let broadcast = plan["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == "broadcast@coord"))
            .and_then(|s| s["run"]["shell"].as_str())
            .expect("broadcast step")
            .to_string();
        for w in &n.hosts[1..] {
            assert!(
                broadcast.contains(&format!("{}:9000", w.address)),
                "{broadcast}"
            );
        }
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("analysis/summary.json")).expect("summary"),
        )
        .expect("json");
        for w in ["w1", "w2"] {
            assert_eq!(
                summary["workers"][w]["received"].as_u64(),
                Some(n_events),
                "{summary:#}"
            );
            let out =
                std::fs::read_to_string(run.join(format!("logs/worker@{w}.out"))).expect("log");
            assert!(out.contains("listening on port 9000"), "{out}");
        }
    }
    for h in ["coord", "w1", "w2"] {
        assert_eq!(n.processes(h, "python3"), Vec::<i32>::new(), "left on {h}");
    }
}

#[test]
#[ignore = "needs root: network-namespace hosts (scripts/test.sh runs it as root)"]
fn a_host_whose_link_goes_down_mid_run_fails_the_run_and_reap_cleans_it_once_back() {
    netns::require_root();
    let n = NsHosts::start(&["a", "b"]);
    let inv = n.dir.path().join("inventory.yaml");
    n.inventory(&inv, &["roles: [server]", "roles: [client]"]);
    let dir = n.dir.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    project(
        &dir,
        &inv,
        r#"
workload: fragile
steps:
  srv: { kind: service, on: server, run: "echo up; exec sleep 301", ready: { log: up, interval: 50ms } }
  work: { on: client, run: "echo started; sleep 30" }
"#,
    );
    let child = spawn_run(&dir, &[]);
    let artifacts = dir.join("artifacts");
    super::super::run::wait_for(
        std::time::Duration::from_secs(60),
        "the task to start",
        || journal(&artifacts).contains(r#""step":"work@b""#),
    );
    n.link_down("a");
    let t0 = std::time::Instant::now();
    let out = child.wait_with_output().expect("flow exits");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "DEBUG {:?}\n{}\n{}",
        took,
        journal(&artifacts),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 run: 0 passed, 1 failed"), "{stdout}");
    assert!(
        stdout.contains("host `a`"),
        "the error names the host: {stdout}"
    );
    assert!(
        took < std::time::Duration::from_secs(60),
        "noticed the lost host after {took:?}"
    );
    // b was reachable all along: its task was stopped.
    assert_eq!(n.processes("b", "sleep 30"), Vec::<i32>::new());
    // a's service is still there, unreachable; once a is back, reap ends it.
    assert!(!n.processes("a", "sleep 301").is_empty());
    n.link_up("a");
    let id = std::fs::read_link(artifacts.join("latest")).expect("latest");
    let id = id.file_name().expect("id").to_string_lossy().to_string();
    Flow::new()
        .args(["reap", &id, "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(0);
    assert_eq!(n.processes("a", "sleep 301"), Vec::<i32>::new());
}
