//! The integration binary: drives the real `flow` binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

mod checkers;
mod conformance;
mod export;
mod longrun;
mod merge;
mod netns;
mod phases;
mod plans;
mod provision;
mod remote;
mod results;
mod resume;
mod run;
mod slurm;
mod sources;
mod sshd;

/// A small fluent helper around one `flow` invocation.
struct Flow {
    args: Vec<String>,
    cwd: Option<PathBuf>,
}

impl Flow {
    fn new() -> Self {
        Flow {
            args: Vec::new(),
            cwd: None,
        }
    }

    fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    fn output(self) -> Output {
        let mut cmd = Command::cargo_bin("flow").expect("the flow binary is built");
        // Never inside an allocation, whatever runs the tests.
        cmd.args(&self.args)
            .env_remove("FLOW_LOG")
            .env_remove("SLURM_JOB_NODELIST")
            .env_remove("SLURM_NODELIST");
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        cmd.output().expect("flow runs")
    }

    /// Runs and expects `code`; returns (stdout, stderr).
    fn expect(self, code: i32) -> (String, String) {
        let args = self.args.join(" ");
        let out = self.output();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "flow {args}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        (stdout, stderr)
    }
}

/// A TCP port no one listens on now, on any address.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A UDP port no one is bound to now.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// A program from the PyPI tools `scripts/test.sh` installs into the
/// folder `FLOW_TEST_TOOLS` names.
fn test_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("FLOW_TEST_TOOLS").unwrap_or_else(|| {
        panic!("FLOW_TEST_TOOLS is not set: run scripts/test.sh, which installs {name}")
    });
    let p = PathBuf::from(dir).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/test.sh",
        p.display()
    );
    p
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Replaces the checkout's absolute path, so snapshots hold on any machine.
fn redact(s: &str) -> String {
    s.replace(&root().display().to_string(), "[ROOT]")
}

#[test]
fn every_invalid_fixture_fails_with_its_exact_message() {
    let dir = root().join("tests/fixtures/invalid");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures exist")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 25, "only {} fixtures", names.len());
    for name in names {
        let fixture = dir.join(&name);
        let suite = format!("tests/fixtures/invalid/{name}/suite.yaml");
        let extra: Vec<String> = std::fs::read_to_string(fixture.join("args"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default();
        let (stdout, stderr) = Flow::new()
            .args(["validate", "--suite", &suite])
            .args(&extra)
            .cwd(&root())
            .expect(2);
        assert_eq!(stdout, "", "{name}: nothing on stdout");
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        insta::assert_snapshot!(format!("invalid__{name}"), redact(&stderr));
    }
}

#[test]
fn unknown_suite_names_point_at_the_suites_folder() {
    let (_, stderr) = Flow::new()
        .args(["validate", "--suite", "streamin"])
        .cwd(&root())
        .expect(2);
    insta::assert_snapshot!(stderr, @r"
    error: no suite named `streamin`: `suites/streamin.yaml` does not exist; did you mean `streaming`?

    error: 1 error found; nothing was run
    ");
}

#[test]
fn examples_validate() {
    for suite in ["streaming", "overhead"] {
        let (stdout, _) = Flow::new()
            .args(["validate", "--suite", suite])
            .cwd(&root())
            .expect(0);
        assert!(stdout.ends_with("valid\n"), "{stdout}");
    }
    let (stdout, _) = Flow::new()
        .args([
            "validate",
            "--suite",
            "streaming",
            "--hosts",
            "hosts/example-cluster.yaml",
        ])
        .cwd(&root())
        .expect(0);
    assert!(stdout.contains("4 runs on 4 hosts"), "{stdout}");
}

fn dry_run(suite: &str, format: &str, extra: &[&str]) -> String {
    let (stdout, _) = Flow::new()
        .args([
            "plan",
            "--suite",
            suite,
            "--dry-run",
            "--format",
            format,
            "--artifacts",
            "/artifacts",
        ])
        .args(extra)
        .cwd(&root())
        .expect(0);
    redact(&stdout)
}

#[test]
fn golden_plans_of_the_examples() {
    let json = dry_run("streaming", "json", &[]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    insta::assert_snapshot!(
        "plan__streaming_json",
        serde_json::to_string_pretty(&v).expect("prints")
    );
    insta::assert_snapshot!("plan__streaming_text", dry_run("streaming", "text", &[]));
    insta::assert_snapshot!("plan__overhead_text", dry_run("overhead", "text", &[]));
    insta::assert_snapshot!(
        "plan__streaming_cluster_text",
        dry_run(
            "streaming",
            "text",
            &["--hosts", "hosts/example-cluster.yaml"]
        )
    );
    let dot = dry_run("streaming", "dot", &[]);
    assert!(
        dot.starts_with("digraph plan {") && dot.ends_with("}\n"),
        "{dot}"
    );
}

#[test]
fn plans_are_byte_identical_across_invocations() {
    for suite in ["streaming", "overhead"] {
        assert_eq!(dry_run(suite, "json", &[]), dry_run(suite, "json", &[]));
    }
}

#[test]
fn run_ids_do_not_depend_on_the_artifact_folder() {
    let ids = |artifacts: &str| -> Vec<String> {
        let (out, _) = Flow::new()
            .args([
                "plan",
                "--suite",
                "overhead",
                "--dry-run",
                "--format",
                "json",
                "--artifacts",
                artifacts,
            ])
            .cwd(&root())
            .expect(0);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let a = ids("/a");
    assert_eq!(a.len(), 90);
    assert_eq!(a, ids("/somewhere/else"));
}

#[test]
fn set_overrides_params_and_step_fields() {
    let json = dry_run(
        "streaming",
        "json",
        &[
            "--set",
            "num_events=7",
            "--set",
            "steps.broadcast.timeout=1h",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let run = &v["runs"][0];
    assert_eq!(run["params"]["num_events"], 7);
    let b = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "broadcast")
        .expect("broadcast");
    assert_eq!(b["timeout_ms"], 3_600_000);
    assert!(
        b["run"]["shell"]
            .as_str()
            .unwrap_or_default()
            .contains("--num-events 7")
    );
}

#[test]
fn plan_writes_an_artifact_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let artifacts = tmp.path().join("artifacts");
    let (stdout, _) = Flow::new()
        .args(["plan", "--suite", "streaming", "--artifacts"])
        .args([artifacts.to_str().expect("utf-8 path")])
        .cwd(&root())
        .expect(0);
    assert!(stdout.contains("planned into"), "{stdout}");
    let latest = artifacts.join("latest");
    let suite: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest.join("suite.json")).expect("suite.json"))
            .expect("json");
    assert_eq!(suite["schema_version"], 2);
    assert_eq!(suite["suite"]["name"], "streaming");
    let runs = suite["expansion"]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4);
    assert!(suite["files"].as_array().expect("files").len() >= 3);
    // The repository holding the suite (this one) is recorded, and its
    // uncommitted changes are stored exactly when there are some.
    let exp = &suite["sources"]["experiment"];
    assert_eq!(exp["commit"].as_str().map(str::len), Some(40), "{exp}");
    assert_eq!(
        exp["dirty"] == true,
        latest.join("sources/experiment.diff").is_file(),
        "{exp}"
    );
    for id in runs {
        let id = id.as_str().expect("id");
        let plan: serde_json::Value = serde_json::from_slice(
            &std::fs::read(latest.join("runs").join(id).join("plan.json")).expect("plan.json"),
        )
        .expect("json");
        assert_eq!(plan["id"], id);
        assert_eq!(plan["schema_version"], 1);
        assert!(
            plan["dir"]
                .as_str()
                .expect("dir")
                .ends_with(&format!("/runs/{id}"))
        );
    }
}

#[test]
fn published_schemas_are_current() {
    for kind in ["suite", "workload", "inventory", "plan", "run-result"] {
        let (now, _) = Flow::new().args(["schema", kind]).expect(0);
        let path = root().join(format!("docs/reference/schema/{kind}.schema.json"));
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            now == published,
            "{} is stale; regenerate it with `flow schema {kind} > {}`",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn schema_covers_the_three_file_kinds() {
    let (stdout, _) = Flow::new().args(["schema"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    for kind in ["suite", "workload", "inventory"] {
        assert!(v[kind]["properties"].is_object(), "{kind}");
    }
    assert!(v["workload"]["$defs"]["RawStep"]["properties"]["ready"].is_object());
    let (one, _) = Flow::new().args(["schema", "suite"]).expect(0);
    let s: serde_json::Value = serde_json::from_str(&one).expect("json");
    assert_eq!(s["title"], "RawSuite");
}
