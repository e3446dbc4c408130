//! `setup:` and `teardown:`: a build made once per state of the code on
//! one ssh host and handed to the runs on two others, kept on resume; a
//! failing setup that starts no run; a teardown that runs after Ctrl-C.

use std::path::Path;

use serde_json::Value;

use super::Flow;
use super::run::Project;
use super::sources::git;
use super::sshd::Sshds;

fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

const PROGRAM: &str = "#include <stdio.h>\n#include <stdlib.h>\nint main(int c, char **v) {\n    int base = 100;\n    printf(\"value: %d\\n\", base + (c > 1 ? atoi(v[1]) : 0));\n    return 0;\n}\n";

#[test]
fn a_setup_builds_each_mutation_once_on_one_host_and_every_run_gets_its_own_build() {
    let s = Sshds::start(3);
    let inv = s.dir.path().join("inventory.yaml");
    s.inventory(&inv, &[&["builder"], &["worker"], &["worker"]]);
    let dir = s.dir.path().join("project");
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::write(app.join("work.c"), PROGRAM).expect("write");
    git(&app, &["init", "-q"]);
    git(&app, &["add", "-A"]);
    git(&app, &["commit", "-q", "-m", "first"]);
    std::fs::write(app.join("work.c"), PROGRAM.replace("100", "200")).expect("edit");
    std::fs::write(dir.join("double.patch"), git(&app, &["diff"]) + "\n").expect("patch");
    git(&app, &["checkout", "--", "work.c"]);
    let builds = s.dir.path().join("builds.log");
    let gate = s.dir.path().join("go");
    std::fs::write(
        dir.join("suite.yaml"),
        format!(
            r#"suite: built
hosts: {inv}
sources: {{ app: app }}
setup:
  compile:
    on: builder
    sources: [app]
    run: "echo {{{{ mutation }}}} on {{{{ host.name }}}} >> {builds} && mkdir -p bin && cc -o bin/work app/work.c"
    outputs: [bin/]
workloads:
  - workload: workload.yaml
    repetitions: 2
    mutations:
      double: [double.patch]
"#,
            inv = inv.display(),
            builds = builds.display(),
        ),
    )
    .expect("suite");
    std::fs::write(
        dir.join("workload.yaml"),
        format!(
            r#"workload: app
steps:
  measure: {{ on: worker, run: "test -e {gate} && ./bin/work {{{{ run.repetition }}}}" }}
metrics:
  v: {{ from: "logs/measure@*.out", regex: "value: (?P<value>[0-9]+)", matches: all }}
"#,
            gate = gate.display()
        ),
    )
    .expect("workload");

    // The runs fail (no `go` yet); the setup passes, once per mutation.
    let (stdout, _) = Flow::new()
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .cwd(&dir)
        .expect(1);
    assert!(stdout.contains("4 runs: 0 passed, 4 failed"), "{stdout}");
    let built = std::fs::read_to_string(&builds).expect("builds.log");
    assert_eq!(
        built, "none on h1\ndouble on h1\n",
        "one build per mutation, on the builder"
    );
    let art = std::fs::canonicalize(dir.join("artifacts/latest")).expect("latest");
    let phases = json(&art.join("phases.json"));
    assert_eq!(
        phases["setup"].as_array().map(Vec::len),
        Some(2),
        "{phases}"
    );

    // Resumed: the builds that passed are kept, not made again.
    std::fs::write(&gate, "").expect("gate");
    let id = art.file_name().expect("id").to_string_lossy().into_owned();
    let (stdout, _) = Flow::new()
        .args(["resume", &id, "--artifacts", "artifacts", "--rerun-failed"])
        .cwd(&dir)
        .expect(0);
    assert!(stdout.contains("KEPT  [setup]"), "{stdout}");
    assert!(stdout.contains("4 runs: 4 passed"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&builds).expect("builds.log"), built);

    // Each run ran its mutation's build on both workers, which received it.
    for e in std::fs::read_dir(art.join("runs")).expect("runs").flatten() {
        let r = json(&e.path().join("run_result.json"));
        let plan = json(&e.path().join("plan.json"));
        let base = if r["mutation"] == "double" {
            200.0
        } else {
            100.0
        };
        let rep = r["repetition"].as_f64().expect("rep");
        assert_eq!(r["status"], "passed");
        for host in ["h2", "h3"] {
            let out = std::fs::read_to_string(e.path().join(format!("logs/measure@{host}.out")))
                .expect("log");
            assert_eq!(out, format!("value: {}\n", base + rep), "{host}");
        }
        assert_eq!(r["metrics"]["v"]["samples"], 2);
        // The build is one of the run's files, from its mutation's setup.
        let files = plan["files"].as_array().expect("files");
        let setup = files
            .iter()
            .filter_map(Value::as_str)
            .find(|f| f.contains("/setup/"))
            .expect("the setup's outputs are pushed");
        let which = if base == 200.0 { ".double-" } else { ".none-" };
        assert!(
            setup.contains(which) && setup.ends_with("/hosts/h1/bin/"),
            "{setup}"
        );
    }
    // The instance records its code and its fetched outputs.
    for id in phases["setup"].as_array().expect("setup") {
        let d = art.join("setup").join(id.as_str().expect("id"));
        let r = json(&d.join("run_result.json"));
        assert_eq!(r["status"], "passed");
        assert_eq!(r["fetch"]["files"], 1);
        assert!(d.join("hosts/h1/bin/work").is_file());
        assert!(r["sources"]["app"]["commit"].is_string());
    }
}

#[test]
fn a_failing_setup_starts_no_run_and_the_teardown_still_runs() {
    let marker = tempfile::tempdir().expect("tmp");
    let torn = marker.path().join("torn");
    let p = Project::new()
        .file(
            "suite.yaml",
            &format!(
                r#"suite: s
setup:
  make: {{ run: "echo compiling; exit 3", outputs: [bin/] }}
teardown:
  clean: {{ run: "echo done > {}" }}
workloads:
  - workload: workload.yaml
"#,
                torn.display()
            ),
        )
        .file(
            "workload.yaml",
            "workload: w\nsteps:\n  a: { run: ./bin/x }\n",
        );
    let (stdout, stderr) = p.run(&[], 1);
    assert!(
        stdout.contains("FAIL  [setup] setup.make.none-"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 run: 0 passed, 0 failed, 1 not run"),
        "{stdout}"
    );
    assert!(
        stderr.contains("error: setup `setup.make.none-"),
        "{stderr}"
    );
    assert!(stderr.contains("exited with 3"), "{stderr}");
    assert!(stderr.contains("no run started"), "{stderr}");
    assert!(torn.exists(), "the teardown did not run");
    let runs = std::fs::read_to_string(p.artifact().join("runs.csv")).expect("runs.csv");
    assert!(
        runs.lines().nth(1).expect("row").contains(",pending,"),
        "{runs}"
    );

    // A setup that exits 0 without its outputs fails all the same.
    let p = p.file(
        "suite.yaml",
        "suite: s\nsetup:\n  make: { run: \"true\", outputs: [bin/] }\nworkloads:\n  - workload: workload.yaml\n",
    );
    let (stdout, stderr) = p.run(&[], 1);
    assert!(
        stdout.contains("outputs `bin` were not all fetched"),
        "{stdout}"
    );
    assert!(stderr.contains("no run started"), "{stderr}");
}

#[test]
fn a_setup_whose_outputs_changed_since_is_built_again_on_resume() {
    let gate = tempfile::tempdir().expect("tmp");
    let go = gate.path().join("go");
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: s\nsetup:\n  make: { run: \"mkdir -p bin && echo built > bin/tool\", outputs: [bin/] }\nworkloads:\n  - workload: workload.yaml\n",
        )
        .file(
            "workload.yaml",
            &format!(
                "workload: w\nsteps:\n  a: {{ run: \"test -e {} && cat bin/tool\" }}\n",
                go.display()
            ),
        );
    p.run(&[], 1);
    let art = p.artifact();
    let phases: Value =
        serde_json::from_slice(&std::fs::read(art.join("phases.json")).expect("phases"))
            .expect("json");
    let id = phases["setup"][0].as_str().expect("id").to_string();
    // What the setup made is changed after it passed.
    let tool = art.join("setup").join(&id).join("hosts/local/bin/tool");
    std::fs::write(&tool, "tampered\n").expect("write");
    std::fs::write(&go, "").expect("gate");
    let name = art.file_name().expect("id").to_string_lossy().into_owned();
    let (stdout, _) = Flow::new()
        .args([
            "resume",
            &name,
            "--artifacts",
            "artifacts",
            "--rerun-failed",
        ])
        .cwd(p.path())
        .expect(0);
    assert!(
        !stdout.contains("KEPT"),
        "a changed build was handed on: {stdout}"
    );
    assert!(stdout.contains("PASS  [setup]"), "{stdout}");
    let run = p.run_dir();
    assert_eq!(
        std::fs::read_to_string(run.join("logs/a@local.out")).expect("log"),
        "built\n"
    );
    // The tampered attempt is kept, not overwritten.
    assert!(
        art.join("setup")
            .join(&id)
            .join("attempts/1/hosts/local/bin/tool")
            .is_file()
    );
}

#[test]
fn the_teardown_runs_after_ctrl_c() {
    let marker = tempfile::tempdir().expect("tmp");
    let torn = marker.path().join("torn");
    let p = Project::new()
        .file(
            "suite.yaml",
            &format!(
                "suite: s\nteardown:\n  clean: {{ run: \"echo $FLOW_RUN_ID > {}\" }}\nworkloads:\n  - workload: workload.yaml\n",
                torn.display()
            ),
        )
        .file(
            "workload.yaml",
            "workload: w\nsteps:\n  long: { run: \"echo started; sleep 300\" }\n",
        );
    let out = p.interrupt_once_started("long@local.out");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("PASS  [teardown] teardown.clean-"),
        "{stdout}"
    );
    let id = std::fs::read_to_string(&torn).expect("the teardown ran");
    assert!(id.starts_with("teardown.clean-"), "{id}");
}

/// Refusals, located (snapshotted).
#[test]
fn setup_and_teardown_mistakes_are_located() {
    let p = Project::new()
        .file(
            "hosts.yaml",
            "hosts:\n  a: { address: local, roles: [w] }\n  b: { address: local, roles: [w] }\n",
        )
        .file(
            "suite.yaml",
            "suite: s\nhosts: hosts.yaml\nsetup:\n  build: { on: w, run: make, sources: [app], outputs: [../bin] }\n  other: { run: make }\nteardown:\n  clean: { on: a, run: rm -rf x, outputs: [x] }\nworkloads:\n  - workload: workload.yaml\n",
        )
        .file("workload.yaml", "workload: w\nsteps:\n  a: { on: a, run: 'true' }\n");
    let (_, stderr) = Flow::new()
        .args(["plan", "--suite", "suite.yaml", "--dry-run"])
        .cwd(p.path())
        .expect(2);
    insta::assert_snapshot!("phase_refusals", stderr);
}
