//! Test support: a real Slurm cluster on this machine, from Debian's
//! packages. munged with a key of its own, slurmctld on the bridge's
//! address, and one slurmd per node in that node's network namespace
//! (`slurmd -N nodeN`, a spool folder of its own, proctrack/linuxproc, no
//! cgroups), with a `slurm.conf` written per cluster. The nodes are
//! network-namespace hosts (with sshd), so a node is reachable both by
//! `srun` and over ssh. Needs root; everything is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::NsHosts;

pub struct Cluster {
    pub hosts: NsHosts,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    daemons: Vec<Child>,
}

const DAEMONS: [&str; 3] = [
    "/usr/sbin/munged",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
];

impl Cluster {
    /// A cluster of `n` nodes named `node1` … `noden`, idle and up.
    pub fn start(n: usize) -> Cluster {
        let names: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
        Cluster::start_nodes(&names)
    }

    /// A cluster of nodes with these names, idle and up.
    pub fn start_nodes(names: &[String]) -> Cluster {
        super::netns::require_root();
        for d in DAEMONS {
            assert!(
                Path::new(d).exists(),
                "{d} is missing: install slurmctld, slurmd, slurm-client and munge (scripts/test.sh does)"
            );
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hosts = NsHosts::start(&refs);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let mut me = Cluster {
            hosts,
            conf: d.join("slurm.conf"),
            dir,
            daemons: Vec::new(),
        };
        let d = me.dir.path().to_path_buf();

        // munge: a key and a socket of this cluster's own.
        let key: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(d.join("munge.key"), key).expect("key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("munge.key"), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
        let sock = d.join("munge.sock");
        let munged = Command::new("/usr/sbin/munged")
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--key-file={}", d.join("munge.key").display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--log-file={}", d.join("log/munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log/munged.err")).expect("log"))
            .spawn()
            .expect("munged starts");
        me.daemons.push(munged);
        wait_for(Duration::from_secs(10), "munged's socket", || sock.exists());

        let ctl_addr = me
            .hosts
            .hosts
            .first()
            .map(|h| {
                let mut parts: Vec<&str> = h.address.split('.').collect();
                parts.pop();
                format!("{}.1", parts.join("."))
            })
            .expect("a node");
        let (ctld_port, slurmd_port) = (super::free_port(), super::free_port());
        // slurmctld runs only on the host slurm.conf names as its own.
        let me_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let me_host = me_host.split('.').next().unwrap_or("localhost").to_string();
        let mut conf = format!(
            "ClusterName=flowtest\n\
             SlurmctldHost={me_host}({ctl_addr})\n\
             MailProg=/bin/true\n\
             SlurmctldPort={ctld_port}\n\
             SlurmdPort={slurmd_port}\n\
             AuthType=auth/munge\n\
             CredType=cred/munge\n\
             AuthInfo=socket={sock}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             StateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool/%n\n\
             SlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.%n.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd.%n.log\n\
             SlurmdParameters=config_overrides\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             SchedulerType=sched/backfill\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             SlurmctldTimeout=30\n\
             SlurmdTimeout=30\n\
             InactiveLimit=0\n\
             KillWait=2\n\
             MinJobAge=600\n",
            sock = sock.display(),
            d = d.display(),
        );
        for h in &me.hosts.hosts {
            conf.push_str(&format!(
                "NodeName={} NodeAddr={} NodeHostname={} CPUs=2 RealMemory=4096 State=UNKNOWN\n",
                h.name, h.address, h.name
            ));
        }
        conf.push_str("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n");
        std::fs::write(&me.conf, conf).expect("slurm.conf");

        let ctld = Command::new("/usr/sbin/slurmctld")
            .args(["-D", "-i", "-f"])
            .arg(&me.conf)
            .env("SLURM_CONF", &me.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log/slurmctld.err")).expect("log"))
            .spawn()
            .expect("slurmctld starts");
        me.daemons.push(ctld);
        for h in &me.hosts.hosts {
            std::fs::create_dir_all(d.join("spool").join(&h.name)).expect("spool");
            // Into the node's network namespace only: `ip netns exec` would
            // also mount a /sys of its own, without the cgroup mounts slurmd
            // looks for when it starts.
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", h.ns_name()))
                .args(["/usr/sbin/slurmd", "-D", "-N", &h.name, "-f"])
                .arg(&me.conf)
                .env("SLURM_CONF", &me.conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(d.join(format!("log/slurmd.{}.err", h.name)))
                        .expect("log"),
                )
                .spawn()
                .expect("slurmd starts");
            me.daemons.push(child);
        }
        // Up once every node is idle.
        let t0 = Instant::now();
        loop {
            let out = me
                .command("sinfo")
                .args(["-h", "-N", "-o", "%N %t"])
                .output();
            let text = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let idle = text.lines().filter(|l| l.ends_with(" idle")).count();
            if idle == names.len() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the cluster is not up after 20 s: sinfo says\n{text}\n{}",
                me.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        me
    }

    /// A Slurm client command (`srun`, `salloc`, `sbatch`, `squeue`, …)
    /// that talks to this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `salloc -N<nodes> flow …`: flow inside a new allocation (its
    /// arguments are added by the caller).
    pub fn flow_in_allocation(&self, nodes: usize) -> Command {
        let mut c = self.command("salloc");
        c.args([format!("-N{nodes}").as_str(), "--quiet"])
            .arg(assert_cmd::cargo::cargo_bin("flow"));
        c
    }

    /// The daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path().join("log"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!("== {}\n", e.path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // slurmd and slurmctld first, then munged; the namespaces go with
        // `hosts`.
        for c in self.daemons.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "no {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn the_test_cluster_runs_a_job_step_on_every_node() {
    let c = Cluster::start(3);
    let out = c
        .command("srun")
        .args(["-N3", "-n3", "sh", "-c", "echo $SLURMD_NODENAME"])
        .output()
        .expect("srun runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nodes: Vec<&str> = text.lines().collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        ["node1", "node2", "node3"],
        "srun: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

/// An inventory of the allocation: `provider: slurm`, every node's workdir
/// one shared folder (as a cluster's home is). Nodes are reached with srun,
/// or over ssh as root with the namespace hosts' key.
fn allocation_inventory(c: &Cluster, path: &Path, rules: &str, transport: &str) {
    let ssh = match transport {
        "ssh" => format!(
            "  user: root\n  identity: {}\n  \
             ssh_options: {{ StrictHostKeyChecking: \"no\", UserKnownHostsFile: /dev/null, LogLevel: ERROR }}\n",
            c.hosts.dir.path().join("id").display()
        ),
        _ => String::new(),
    };
    let text = format!(
        "provider: slurm\ntransport: {transport}\ndefaults:\n  workdir: {}\n{ssh}roles: {rules}\n",
        c.dir.path().join("shared-home").display(),
    );
    std::fs::write(path, text).expect("inventory");
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn the_streaming_demo_runs_inside_salloc_on_three_nodes_with_srun() {
    streaming_inside_salloc("srun");
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn the_streaming_demo_runs_inside_salloc_on_three_nodes_over_ssh() {
    streaming_inside_salloc("ssh");
}

fn streaming_inside_salloc(transport: &str) {
    let c = Cluster::start(3);
    let d = tempfile::tempdir().expect("tempdir");
    let inv = d.path().join("slurm.yaml");
    allocation_inventory(&c, &inv, "{ coordinator: 1, worker: rest }", transport);
    let out = c
        .flow_in_allocation(3)
        .args(["run", "--suite", "streaming", "--hosts"])
        .arg(&inv)
        .arg("--artifacts")
        .arg(d.path().join("artifacts"))
        .current_dir(super::root())
        .stdin(Stdio::null())
        .output()
        .expect("salloc runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("4 runs: 4 passed"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    assert!(stdout.contains("4 runs on 3 hosts"), "{stdout}");
    // Roles by the rule: the coordinator on the first node, workers on the
    // others, each reached at its own address.
    let sj: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path().join("artifacts/latest/suite.json")).expect("suite.json"),
    )
    .expect("json");
    let hosts = sj["inventory"]["hosts"].as_array().expect("hosts");
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(names, ["node1", "node2", "node3"]);
    assert_eq!(hosts[0]["roles"], serde_json::json!(["coordinator"]));
    assert_eq!(hosts[2]["roles"], serde_json::json!(["worker"]));
    for (h, ns) in hosts.iter().zip(&c.hosts.hosts) {
        assert_eq!(h["address"].as_str(), Some(ns.address.as_str()));
    }
    // `flow hosts check` inside an allocation reports its nodes.
    let out = c
        .flow_in_allocation(3)
        .args(["hosts", "check", "--json", "--hosts"])
        .arg(&inv)
        .stdin(Stdio::null())
        .output()
        .expect("salloc runs");
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rows = checked.as_array().expect("one row per node");
    assert_eq!(rows.len(), 3, "{checked}");
    assert!(out.status.success(), "{checked}");
}

/// The children of `pid`, from /proc.
fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // `pid (comm) state ppid …`; comm may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn ctrl_c_inside_an_allocation_leaves_no_process_on_any_node_with_srun() {
    ctrl_c_inside_an_allocation("srun");
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn ctrl_c_inside_an_allocation_leaves_no_process_on_any_node_over_ssh() {
    ctrl_c_inside_an_allocation("ssh");
}

fn ctrl_c_inside_an_allocation(transport: &str) {
    let c = Cluster::start(2);
    let d = tempfile::tempdir().expect("tempdir");
    let inv = d.path().join("slurm.yaml");
    allocation_inventory(&c, &inv, "{ node: all }", transport);
    std::fs::write(
        d.path().join("suite.yaml"),
        "suite: cc\nworkloads:\n  - workload: w.yaml\n",
    )
    .expect("suite");
    std::fs::write(
        d.path().join("w.yaml"),
        "workload: w\nsteps:\n  hold:\n    kind: service\n    on: node\n    run: \"sleep 3017\"\n    ready: { cmd: \"true\" }\n  wait: { on: node, needs: [hold], run: \"sleep 3017\" }\n",
    )
    .expect("workload");
    let mut salloc = c
        .flow_in_allocation(2)
        .args([
            "run",
            "--suite",
            "suite.yaml",
            "--artifacts",
            "artifacts",
            "--hosts",
        ])
        .arg(&inv)
        .current_dir(d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("salloc starts");
    let marked = |node: &str| c.hosts.processes(node, "sleep 301").len();
    let t0 = Instant::now();
    while marked("node1") < 2 || marked("node2") < 2 {
        if let Ok(Some(_)) = salloc.try_wait() {
            let out = salloc.wait_with_output().expect("output");
            panic!(
                "flow ended before its steps ran:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no steps on both nodes after 60 s: {} and {}",
            marked("node1"),
            marked("node2")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let flow = children(salloc.id());
    assert_eq!(flow.len(), 1, "salloc runs flow: {flow:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(flow[0]),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = salloc.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "flow did not end within 60 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130), "flow's exit code, through salloc");
    for node in ["node1", "node2"] {
        assert_eq!(marked(node), 0, "{node} still runs a step");
    }
    // The allocation is released with flow.
    wait_for(Duration::from_secs(20), "the allocation released", || {
        c.command("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .is_ok_and(|o| o.stdout.is_empty())
    });
}

/// `flow …` talking to this cluster, in `dir`.
fn flow_at(c: &Cluster, dir: &Path) -> Command {
    let mut cmd = c.command(&assert_cmd::cargo::cargo_bin("flow").display().to_string());
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

/// Runs `cmd`, asserting its exit code; its stdout.
fn expect(mut cmd: Command, code: i32, c: &Cluster) -> String {
    let out = cmd.output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout:\n{stdout}\nstderr:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    stdout
}

/// `flow status --json` of the latest submission in `dir`.
fn submission_status(c: &Cluster, dir: &Path) -> serde_json::Value {
    let mut cmd = flow_at(c, dir);
    cmd.args(["status", "--json"]);
    serde_json::from_str(&expect(cmd, 0, c)).expect("status JSON")
}

/// Waits until the latest submission's `flow status --json` satisfies
/// `done` (at most `limit`); that status.
fn wait_status(
    c: &Cluster,
    dir: &Path,
    what: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let v = submission_status(c, dir);
        if done(&v) {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "not {what} after {limit:?}: {v}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every job of the latest submission is in one of `states`.
fn wait_jobs(c: &Cluster, dir: &Path, states: &[&str]) -> serde_json::Value {
    wait_status(
        c,
        dir,
        &format!("every job {states:?}"),
        Duration::from_secs(120),
        |v| {
            v["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|j| !j["job_id"].is_null())
                .all(|j| j["state"].as_str().is_some_and(|s| states.contains(&s)))
        },
    )
}

/// A project in `d` whose runs (`reps` of them) each wait for the file `go`
/// in `d` (at most 2 min), write a file and fetch it; its inventory is
/// every node of the allocation, with a workdir in `d`.
fn waiting_project(d: &Path, reps: u32) {
    std::fs::write(
        d.join("slurm.yaml"),
        format!(
            "provider: slurm\ndefaults: {{ workdir: {} }}\nroles: {{ node: all }}\n",
            d.join("work").display()
        ),
    )
    .expect("inventory");
    std::fs::write(
        d.join("suite.yaml"),
        format!("suite: sb\nworkloads:\n  - workload: w.yaml\n    repetitions: {reps}\n"),
    )
    .expect("suite");
    std::fs::write(
        d.join("w.yaml"),
        format!(
            "workload: w\nsteps:\n  make:\n    on: node\n    run: \"i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; [ -e {go} ] && echo $SLURMD_NODENAME > made.txt\"\n  get: {{ kind: fetch, from: node, needs: [make], paths: [made.txt] }}\n",
            go = d.join("go").display()
        ),
    )
    .expect("workload");
}

const SUBMIT: [&str; 7] = [
    "run",
    "--suite",
    "suite.yaml",
    "--hosts",
    "slurm.yaml",
    "--artifacts",
    "artifacts",
];

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn a_suite_submitted_in_two_shards_runs_to_completion_and_merges() {
    let c = Cluster::start(2);
    let d = tempfile::tempdir().expect("tempdir");
    waiting_project(d.path(), 4);
    std::fs::write(d.path().join("go"), "").expect("go");
    let mut cmd = flow_at(&c, d.path());
    cmd.args(SUBMIT)
        .args(["--slurm", "--shards", "2", "--nodes", "1", "--time", "5"])
        .args(["--max-failures", "3", "--jobs", "2"]);
    let out = expect(cmd, 0, &c);
    assert!(out.contains("4 runs in 2 shards of 1 node each"), "{out}");
    // The job runs its shard as this flow was told to.
    let script = std::fs::read_to_string(d.path().join("artifacts/latest/slurm/shard-1.sbatch"))
        .expect("the batch script");
    assert!(script.contains(" --jobs 2 --max-failures 3\n"), "{script}");
    let v = wait_jobs(
        &c,
        d.path(),
        &["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
    );
    let jobs = v["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2, "{v}");
    let outs: String = std::fs::read_dir(d.path().join("artifacts/latest/slurm"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "out"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    for j in jobs {
        assert_eq!(j["state"], "COMPLETED", "{v}\n{outs}");
        assert_eq!(j["counts"]["passed"], j["runs"], "{v}");
    }
    // Each run says in its plan the node it ran on, and its file is that
    // node's.
    let sub = d.path().join("artifacts/latest");
    for j in jobs {
        let shard = sub.join(j["artifact"].as_str().expect("artifact"));
        for e in std::fs::read_dir(shard.join("runs"))
            .expect("runs")
            .flatten()
        {
            let plan = std::fs::read_to_string(e.path().join("plan.json")).expect("plan");
            let made = std::fs::read_dir(e.path().join("hosts"))
                .expect("fetched")
                .flatten()
                .map(|h| {
                    let node = h.file_name().to_string_lossy().into_owned();
                    let text =
                        std::fs::read_to_string(h.path().join("made.txt")).expect("made.txt");
                    assert_eq!(text.trim(), node, "the file of the node it names");
                    assert!(plan.contains(&format!("\"host\": \"{node}\"")), "{plan}");
                    node
                })
                .count();
            assert_eq!(made, 1);
            assert!(!plan.contains("slot1"), "{plan}");
        }
    }
    let mut cmd = flow_at(&c, d.path());
    let id = v["submission"].as_str().expect("id").to_string();
    cmd.args(["merge", &id, "--artifacts", "artifacts", "-o", "merged"]);
    let out = expect(cmd, 0, &c);
    assert!(out.contains("4 runs: 4 passed, 0 failed"), "{out}");
    let mut cmd = flow_at(&c, d.path());
    cmd.args(["list"]);
    let out = expect(cmd, 0, &c);
    assert!(out.contains("4 runs in 2 Slurm jobs"), "{out}");
    assert!(out.contains("merged"), "{out}");
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn a_cancelled_job_is_recorded_as_cancelled_and_resumes_in_a_new_one() {
    let c = Cluster::start(2);
    let d = tempfile::tempdir().expect("tempdir");
    waiting_project(d.path(), 1);
    let mut cmd = flow_at(&c, d.path());
    cmd.args(SUBMIT).args(["--slurm", "--nodes", "1"]);
    expect(cmd, 0, &c);
    // Cancelled with scancel (as a user or an admin would) while its step
    // runs.
    let on_a_node = || {
        c.hosts
            .hosts
            .iter()
            .any(|h| !c.hosts.processes(&h.name, ".flow/make@").is_empty())
    };
    wait_for(Duration::from_secs(60), "the step running", on_a_node);
    let v = submission_status(&c, d.path());
    let first = v["jobs"][0]["job_id"].as_str().expect("job").to_string();
    let o = c.command("scancel").arg(&first).output().expect("scancel");
    assert!(o.status.success());
    let v = wait_jobs(&c, d.path(), &["CANCELLED"]);
    assert_eq!(
        v["jobs"][0]["counts"]["passed"],
        serde_json::Value::Null,
        "{v}"
    );
    // Nothing of it is left on the nodes.
    wait_for(Duration::from_secs(20), "no step left", || !on_a_node());
    let mut cmd = flow_at(&c, d.path());
    cmd.args(["status"]);
    let text = expect(cmd, 0, &c);
    assert!(
        text.contains("CANCELLED") && text.contains("1 interrupted"),
        "{text}"
    );
    assert!(text.contains("flow run --resume"), "{text}");
    // Resumed: submitted again, and this time it may finish.
    std::fs::write(d.path().join("go"), "").expect("go");
    let mut cmd = flow_at(&c, d.path());
    cmd.args(["run", "--resume", "latest", "--artifacts", "artifacts"]);
    let out = expect(cmd, 0, &c);
    assert!(out.contains("submitted again"), "{out}");
    let v = wait_jobs(
        &c,
        d.path(),
        &["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
    );
    let j = &v["jobs"][0];
    assert_eq!(j["state"], "COMPLETED", "{v}");
    assert_ne!(j["job_id"].as_str(), Some(first.as_str()));
    assert_eq!(j["earlier"][0]["job_id"].as_str(), Some(first.as_str()));
    assert_eq!(j["earlier"][0]["state"], "CANCELLED");
    assert_eq!(j["counts"]["passed"], 1, "{v}");
    // The cut attempt is kept beside the one that passed.
    let shard = d
        .path()
        .join("artifacts/latest")
        .join(j["artifact"].as_str().expect("artifact"));
    let run = std::fs::read_dir(shard.join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("a run");
    let outs: String = std::fs::read_dir(d.path().join("artifacts/latest/slurm"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let events = std::fs::read_to_string(run.path().join("events.jsonl")).unwrap_or_default();
    assert!(run.path().join("attempts/1").is_dir(), "{outs}\n{events}");
}

#[test]
#[ignore = "needs root: a Slurm cluster in network namespaces"]
fn resume_leaves_a_pending_shard_to_slurm_instead_of_submitting_it_again() {
    let c = Cluster::start(1);
    let d = tempfile::tempdir().expect("tempdir");
    waiting_project(d.path(), 2);
    // Two jobs for one node, each wanting it whole: the second waits.
    let mut cmd = flow_at(&c, d.path());
    cmd.args(SUBMIT).args([
        "--slurm",
        "--shards",
        "2",
        "--nodes",
        "1",
        "--sbatch-arg=--exclusive",
    ]);
    expect(cmd, 0, &c);
    wait_status(
        &c,
        d.path(),
        "one job running and one pending",
        Duration::from_secs(60),
        |v| {
            let mut s: Vec<&str> = v["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| j["state"].as_str().unwrap_or(""))
                .collect();
            s.sort_unstable();
            s == ["PENDING", "RUNNING"]
        },
    );
    let before = submission_status(&c, d.path());
    let mut cmd = flow_at(&c, d.path());
    cmd.args(["run", "--resume", "latest", "--artifacts", "artifacts"]);
    let out = expect(cmd, 0, &c);
    assert!(out.contains("still PENDING: left to run"), "{out}");
    assert!(out.contains("still RUNNING: left to run"), "{out}");
    assert!(!out.contains("submitted again"), "{out}");
    let after = submission_status(&c, d.path());
    for (a, b) in before["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(after["jobs"].as_array().into_iter().flatten())
    {
        assert_eq!(a["job_id"], b["job_id"]);
    }
    let queued = c
        .command("squeue")
        .args(["-h", "-o", "%i"])
        .output()
        .expect("squeue");
    assert_eq!(
        String::from_utf8_lossy(&queued.stdout).lines().count(),
        2,
        "no third job"
    );
    // `flow stop` cancels both, the pending one too; a resume submits
    // both again, and they run to the end.
    let mut cmd = flow_at(&c, d.path());
    cmd.args(["stop"]);
    let out = expect(cmd, 0, &c);
    assert!(out.contains("cancelled jobs"), "{out}");
    wait_jobs(&c, d.path(), &["CANCELLED"]);
    // Slurm says CANCELLED at once, while the processes of the running
    // job are still being ended: `go` before the step waiting for it is
    // gone would let that run pass instead of being interrupted.
    let go = d.path().join("go").display().to_string();
    let waiting = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&go))
            })
    };
    let t0 = Instant::now();
    while waiting() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "a step of a cancelled job still runs after 60s\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(d.path().join("go"), "").expect("go");
    let mut cmd = flow_at(&c, d.path());
    cmd.args(["run", "--resume", "latest", "--artifacts", "artifacts"]);
    let out = expect(cmd, 0, &c);
    assert_eq!(out.matches("submitted again").count(), 2, "{out}");
    let v = wait_jobs(
        &c,
        d.path(),
        &["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"],
    );
    for j in v["jobs"].as_array().expect("jobs") {
        assert_eq!(j["state"], "COMPLETED", "{v}");
        assert_eq!(j["counts"]["passed"], 1, "{v}");
    }
}

/// A cluster for `benches/slurm.sh`, which starts this test with
/// `FLOW_BENCH_CLUSTER=DIR`: the cluster's `slurm.conf` path is written to
/// `DIR/conf`, and the cluster is stopped when `DIR/stop` appears (or after
/// an hour). Without the variable it does nothing: it is no test.
#[test]
#[ignore = "needs root: a Slurm cluster for benches/slurm.sh"]
fn bench_cluster() {
    let Some(dir) = std::env::var_os("FLOW_BENCH_CLUSTER").map(std::path::PathBuf::from) else {
        return;
    };
    let nodes = std::env::var("FLOW_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let c = Cluster::start(nodes);
    std::fs::write(dir.join("conf"), c.conf.display().to_string()).expect("conf");
    let t0 = Instant::now();
    while !dir.join("stop").exists() && t0.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `flow run --slurm` refuses before it plans or submits anything.
#[test]
fn submit_refuses_hosts_not_from_an_allocation_and_templates_without_the_command() {
    use super::Flow;
    use super::run::Project;
    let p = Project::new()
        .file("suite.yaml", "suite: s\nworkloads:\n  - workload: w.yaml\n")
        .file("w.yaml", "workload: w\nsteps:\n  one: { run: \"true\" }\n")
        .file("no-command.sh", "#!/bin/sh\n#SBATCH --qos=long\nflow run\n")
        .file("unknown.sh", "#!/bin/sh\n{{ command }} --{{ qos }}\n");
    let (_, err) = Flow::new()
        .args(["run", "--slurm", "--suite", "suite.yaml"])
        .cwd(p.path())
        .expect(2);
    insta::assert_snapshot!("slurm__not_from_an_allocation", err);
    for (t, name) in [
        ("no-command.sh", "slurm__template_without_command"),
        ("unknown.sh", "slurm__template_unknown_placeholder"),
    ] {
        let (_, err) = Flow::new()
            .args([
                "run",
                "--slurm",
                "--suite",
                "suite.yaml",
                "--hosts",
                "slurm:n=all",
                "--sbatch-template",
                t,
            ])
            .cwd(p.path())
            .expect(2);
        insta::assert_snapshot!(name, err);
    }
    // Nothing was created.
    assert!(!p.path().join("artifacts").exists());
    // Without Slurm's commands: the planned artifacts stay, and the
    // message says how to go on once sbatch is there.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("flow"))
        .args([
            "run",
            "--slurm",
            "--suite",
            "suite.yaml",
            "--hosts",
            "slurm:n=all",
        ])
        .current_dir(p.path())
        .env("PATH", empty.path())
        .env_remove("SLURM_JOB_NODELIST")
        .env_remove("SLURM_NODELIST")
        .output()
        .expect("flow runs");
    assert_eq!(out.status.code(), Some(2));
    let id = std::fs::read_link(p.path().join("artifacts/latest")).expect("the submission");
    let id = id.to_string_lossy();
    let err = String::from_utf8_lossy(&out.stderr).replace(id.as_ref(), "<ID>");
    insta::assert_snapshot!("slurm__no_sbatch", err);
    assert!(p.path().join("artifacts/latest/slurm.json").is_file());
}
