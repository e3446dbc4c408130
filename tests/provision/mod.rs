//! Hosts made around a suite: an inventory printed by a command,
//! `provision:` before the hosts are read, `deprovision:` after the last
//! run (after a failure and Ctrl-C too, not with `--keep-hosts`), and
//! `flow ssh` onto one of them.

use super::Flow;
use super::run::Project;
use super::sshd::Sshds;

/// A suite whose hosts exist only after `provision` (which writes the
/// inventory the hosts command prints), logging each hook to `hooks.log`.
fn project(workload: &str) -> Project {
    Project::new()
        .file(
            "suite.yaml",
            r#"suite: made
provision: "echo provision >> hooks.log && printf '{\"hosts\": {\"m1\": {\"address\": \"local\", \"roles\": [\"w\"]}}}' > made.json"
deprovision: [sh, -c, "echo deprovision >> hooks.log && rm made.json"]
hosts: { command: "cat made.json" }
workloads:
  - workload: workload.yaml
"#,
        )
        .file("workload.yaml", workload)
}

fn hooks(p: &Project) -> String {
    std::fs::read_to_string(p.path().join("hooks.log")).unwrap_or_default()
}

#[test]
fn provision_comes_before_the_hosts_are_read_and_deprovision_after_the_last_run() {
    let p = project("workload: w\nsteps:\n  a: { on: w, run: 'echo on $FLOW_HOST' }\n");
    let (stdout, stderr) = p.run(&[], 0);
    assert!(stdout.contains("1 run: 1 passed"), "{stdout}");
    assert!(stderr.contains("provision: done in"), "{stderr}");
    assert_eq!(hooks(&p), "provision\ndeprovision\n");
    assert!(!p.path().join("made.json").exists());
    let run = p.run_dir();
    assert_eq!(
        std::fs::read_to_string(run.join("logs/a@m1.out")).expect("log"),
        "on m1\n"
    );

    // A failed run is deprovisioned too; `--keep-hosts` keeps them.
    let p = project("workload: w\nsteps:\n  a: { on: w, run: 'exit 1' }\n");
    p.run(&[], 1);
    assert_eq!(hooks(&p), "provision\ndeprovision\n");
    let (_, stderr) = p.run(&["--keep-hosts"], 1);
    assert!(
        stderr.contains("deprovision: skipped (--keep-hosts)"),
        "{stderr}"
    );
    assert_eq!(hooks(&p), "provision\ndeprovision\nprovision\n");
    assert!(p.path().join("made.json").exists());
}

#[test]
fn deprovision_runs_after_ctrl_c_and_after_a_failed_provision() {
    let p = project("workload: w\nsteps:\n  a: { on: w, run: 'echo started; sleep 300' }\n");
    let out = p.interrupt_once_started("a@m1.out");
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(hooks(&p), "provision\ndeprovision\n");

    // A provision that fails: nothing runs, what it made is destroyed.
    let p = p.file(
        "suite.yaml",
        "suite: made\nprovision: \"echo provision >> hooks.log; echo quota exceeded >&2; exit 4\"\ndeprovision: \"echo deprovision >> hooks.log\"\nhosts: { command: \"cat made.json\" }\nworkloads:\n  - workload: workload.yaml\n",
    );
    let (_, stderr) = p.run(&[], 2);
    assert!(stderr.contains("quota exceeded"), "{stderr}");
    assert!(
        stderr.contains("error: `provision` (`echo provision >> hooks.log; echo quota exceeded >&2; exit 4`) exited with 4"),
        "{stderr}"
    );
    assert_eq!(
        hooks(&p),
        "provision\ndeprovision\nprovision\ndeprovision\n"
    );
}

/// What a hosts command can get wrong, said with its output located.
#[test]
fn a_hosts_command_is_validated_like_an_inventory_file() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: s\nhosts: { command: \"printf 'hosts:\\\\n  a: { address: local, rolse: [w] }\\\\n'\" }\nworkloads:\n  - workload: workload.yaml\n",
        )
        .file("workload.yaml", "workload: w\nsteps:\n  a: { run: 'true' }\n");
    let (_, stderr) = Flow::new()
        .args(["plan", "--suite", "suite.yaml", "--dry-run"])
        .cwd(p.path())
        .expect(2);
    insta::assert_snapshot!("hosts_command_output_invalid", stderr);

    let (_, stderr) = Flow::new()
        .args(["plan", "--suite", "suite.yaml", "--dry-run", "--hosts"])
        .args(["cmd:echo no such cloud >&2; exit 3"])
        .cwd(p.path())
        .expect(2);
    insta::assert_snapshot!("hosts_command_failed", stderr);

    // `--hosts cmd:…` works wherever an inventory file does.
    let (stdout, _) = Flow::new()
        .args(["plan", "--suite", "suite.yaml", "--dry-run", "--hosts"])
        .args(["cmd:echo '{\"hosts\": {\"x\": {\"address\": \"local\"}}}'"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("a@x"), "{stdout}");
}

#[test]
fn flow_ssh_reaches_a_host_as_flow_does() {
    let s = Sshds::start(1);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory(&inv, &[&["w"]]);
    let (stdout, _) = Flow::new()
        .args(["ssh", "h1", "--hosts"])
        .args([
            inv.to_string_lossy().as_ref(),
            "--",
            "echo",
            "hello from",
            "$(hostname)",
        ])
        .expect(0);
    assert!(stdout.starts_with("hello from "), "{stdout}");
    let (_, stderr) = Flow::new()
        .args(["ssh", "h2", "--hosts"])
        .args([inv.to_string_lossy().as_ref()])
        .expect(2);
    assert_eq!(
        stderr,
        "error: host `h2` is not in the inventory\n  = help: hosts: `h1`\n"
    );
    // The command's exit code is flow's.
    let out = Flow::new()
        .args(["ssh", "h1", "--hosts"])
        .args([inv.to_string_lossy().as_ref(), "--", "exit 7"])
        .output();
    assert_eq!(out.status.code(), Some(7));
}
