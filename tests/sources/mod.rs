//! The code under test: `sources:` recorded in the artifact, mutations run
//! from exact snapshots and compared with `none`, annotations everywhere
//! but in run ids. A real git repository holding a small C program.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::Flow;
use super::run::Project;

const PROGRAM: &str = r#"#include <stdio.h>
#include <stdlib.h>

static int base(void) {
    return 100;
}

int main(int argc, char **argv) {
    int rep = argc > 1 ? atoi(argv[1]) : 0;
    printf("value: %d\n", base() + rep);
    return 0;
}
"#;

/// `git` in `dir` with an identity; its stdout (scripts/test.sh installs git).
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=flow", "-c", "user.email=flow@localhost"])
        .args(args)
        .output()
        .expect("git runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A patch of `work.c` that makes `base()` return `value`.
fn base_patch(app: &Path, value: u32) -> String {
    let text = std::fs::read_to_string(app.join("work.c")).expect("work.c");
    std::fs::write(
        app.join("work.c"),
        text.replace("return 100;", &format!("return {value};")),
    )
    .expect("edit");
    let patch = git(app, &["diff"]);
    git(app, &["checkout", "--", "work.c"]);
    format!("{patch}\n")
}

const WORKLOAD: &str = r#"workload: app
steps:
  build: { run: "cc -O0 -o work {{ sources.app.path }}/work.c" }
  measure: { run: "./work {{ run.repetition }}", needs: [build] }
metrics:
  v: { from: "logs/measure@local.out", regex: "value: (?P<value>[0-9]+)" }
"#;

const SUITE: &str = r#"suite: patched
sources: { app: app }
annotations: { purpose: locks }
workloads:
  - workload: workload.yaml
    repetitions: 3
    mutations:
      double: [patches/double.patch]
      more: { source: app, patches: [patches/more.patch] }
    annotations: { batch: one }
"#;

/// The project: `app/` a git repository with one commit, two patches.
fn project() -> Project {
    let p = Project::new()
        .file("app/work.c", PROGRAM)
        .file("app/README", "the code under test\n")
        .file("workload.yaml", WORKLOAD)
        .file("suite.yaml", SUITE);
    let app = p.path().join("app");
    git(&app, &["init", "-q", "-b", "main"]);
    git(&app, &["add", "-A"]);
    git(&app, &["commit", "-q", "-m", "first"]);
    let double = base_patch(&app, 200);
    let more = base_patch(&app, 150);
    p.file("patches/double.patch", &double)
        .file("patches/more.patch", &more)
}

fn ids(p: &Project, extra: &[&str]) -> BTreeMap<String, String> {
    let (out, _) = Flow::new()
        .args([
            "plan",
            "--suite",
            "suite.yaml",
            "--dry-run",
            "--format",
            "json",
        ])
        .args(extra)
        .cwd(p.path())
        .expect(0);
    let v: Value = serde_json::from_str(&out).expect("json");
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                format!(
                    "{}#{}",
                    r["variant"].as_str().unwrap_or(""),
                    r["repetition"]
                ),
                r["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(std::fs::read(path).expect("read"));
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn mutations_run_their_patched_code_and_are_compared_with_none() {
    let p = project();
    let app = p.path().join("app");
    let commit = git(&app, &["rev-parse", "HEAD"]);
    // Uncommitted work is part of what runs, and recorded; an untracked
    // file is listed only.
    std::fs::write(app.join("README"), "the code under test, edited\n").expect("edit");
    std::fs::write(app.join("scratch.txt"), "mine\n").expect("untracked");

    let (stdout, _) = p.run(&["--annotate", "operator=ci"], 0);
    assert!(stdout.contains("9 runs: 9 passed"), "{stdout}");
    let art = p.artifact();

    // Provenance: the commit, the dirty diff stored with its hash.
    let sj = json(&art.join("suite.json"));
    let src = &sj["sources"]["app"];
    assert_eq!(src["commit"], commit.as_str());
    assert_eq!(src["branch"], "main");
    assert_eq!(src["dirty"], true);
    assert_eq!(src["diff"], "sources/app.diff");
    assert_eq!(src["untracked"], serde_json::json!(["scratch.txt"]));
    let diff = art.join("sources/app.diff");
    assert!(
        std::fs::read_to_string(&diff)
            .expect("diff")
            .contains("+the code under test, edited")
    );
    assert_eq!(src["diff_sha256"], sha256(&diff).as_str());
    // The repository around the suite is recorded too (here: none).
    assert!(
        sj["sources"].get("experiment").is_none(),
        "{}",
        sj["sources"]
    );
    assert_eq!(sj["annotations"]["purpose"], "locks");
    assert_eq!(
        sj["expansion"]["entries"][0]["mutations"][0]["name"],
        "double"
    );

    // Each run ran its own code and says which.
    let mut seen = BTreeMap::new();
    for e in std::fs::read_dir(art.join("runs")).expect("runs").flatten() {
        let r = json(&e.path().join("run_result.json"));
        let plan = json(&e.path().join("plan.json"));
        let m = r["mutation"].as_str().expect("mutation").to_string();
        let rep = r["repetition"].as_u64().expect("rep");
        let v = r["metrics"]["v"]["value"].as_f64().expect("value");
        let base = match m.as_str() {
            "none" => 100.0,
            "double" => 200.0,
            "more" => 150.0,
            other => panic!("mutation {other}"),
        };
        assert_eq!(v, base + rep as f64, "{m} r{rep}");
        let s = &r["sources"]["app"];
        assert_eq!(s["commit"], commit.as_str());
        assert_eq!(s["dirty"], true);
        assert_eq!(s, &plan["sources"]["app"]);
        if m == "none" {
            assert!(s.get("patches").is_none());
        } else {
            assert_eq!(s["mutation"], m.as_str());
            let file = format!("patches/{m}.patch");
            assert_eq!(s["patches"][0]["file"], file.as_str());
            assert_eq!(
                s["patches"][0]["sha256"],
                sha256(&p.path().join(&file)).as_str()
            );
        }
        // Annotations: suite < entry < command line, in plan and result.
        for doc in [&r, &plan] {
            assert_eq!(
                doc["annotations"],
                serde_json::json!({"batch": "one", "operator": "ci", "purpose": "locks"})
            );
        }
        *seen.entry(m).or_insert(0) += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);

    // runs.csv: the mutation as a variant column, annotations at the end.
    let runs = std::fs::read_to_string(art.join("runs.csv")).expect("runs.csv");
    assert_eq!(
        runs.lines().next(),
        Some(
            "id,workload,mode,variant,mutation,repetition,status,duration_ms,\
             annotation.batch,annotation.operator,annotation.purpose"
        )
    );
    assert!(runs.contains(",mutation=double,double,1,passed,"), "{runs}");
    assert!(
        runs.lines().skip(1).all(|l| l.ends_with(",one,ci,locks")),
        "{runs}"
    );

    // The summary compares each mutation with none, with Welch's test.
    let summary = json(&art.join("summary.json"));
    let rows = summary["rows"].as_array().expect("rows");
    let row = |variant: &str| {
        rows.iter()
            .find(|r| r["variant"] == variant)
            .unwrap_or_else(|| panic!("{variant} in {rows:?}"))
    };
    let double = row("mutation=double");
    assert_eq!(double["none_mean"], 102.0);
    assert!((double["none_ratio"].as_f64().expect("ratio") - 202.0 / 102.0).abs() < 1e-9);
    assert!(double["none_p_value"].as_f64().expect("p") < 0.001);
    assert_eq!(double["none_significant"], true);
    assert_eq!(double["annotations"]["operator"], "ci");
    assert!(
        row("mutation=none")
            .get("none_mean")
            .is_none_or(Value::is_null)
    );
    let csv = std::fs::read_to_string(art.join("summary.csv")).expect("summary.csv");
    assert!(
        csv.lines().next().expect("header").contains(",mutation,"),
        "{csv}"
    );
    let report = std::fs::read_to_string(art.join("report.html")).expect("report");
    assert!(report.contains("vs none"), "report has no mutation column");
    assert!(
        report.contains("mutation <b>double</b>"),
        "report names no mutation"
    );
    assert!(report.contains("operator=ci"), "report shows no annotation");

    // `--only` knows mutations and annotations.
    let (out, _) = p.run(&["--only", "mutation=double"], 0);
    assert!(out.contains("3 runs: 3 passed"), "{out}");
    let (out, _) = p.run(
        &[
            "--annotate",
            "who=me",
            "--only",
            "annotation.who=me,mutation=n*",
        ],
        0,
    );
    assert!(out.contains("3 runs: 3 passed"), "{out}");
    let (_, err) = p.run(&["--only", "annotation.nobody=x"], 2);
    assert!(err.contains("no run has a `annotation.nobody`"), "{err}");
}

#[test]
fn run_ids_change_with_a_patch_or_the_code_and_not_with_notes() {
    let p = project();
    let before = ids(&p, &[]);
    assert_eq!(before.len(), 9);
    // Notes are not part of an id.
    assert_eq!(ids(&p, &["--annotate", "who=me"]), before);
    // A changed patch changes its mutation's runs, and only those.
    std::fs::write(
        p.path().join("patches/more.patch"),
        base_patch(&p.path().join("app"), 160),
    )
    .expect("write");
    let after = ids(&p, &[]);
    for (k, id) in &before {
        if k.starts_with("mutation=more") {
            assert_ne!(&after[k], id, "{k}");
        } else {
            assert_eq!(&after[k], id, "{k}");
        }
    }
    // Changed code under test, committed or not, changes every run.
    let app = p.path().join("app");
    std::fs::write(app.join("README"), "changed\n").expect("edit");
    let dirty = ids(&p, &[]);
    assert!(after.iter().all(|(k, id)| &dirty[k] != id));
    git(&app, &["commit", "-q", "-am", "second"]);
    let committed = ids(&p, &[]);
    assert!(dirty.iter().all(|(k, id)| &committed[k] != id));
}

#[test]
fn a_resume_runs_the_code_the_artifact_recorded_not_the_work_tree() {
    // Runs fail until `go` exists.
    let go = tempfile::tempdir().expect("tmp");
    let gate = go.path().join("go");
    let p = project().file(
        "workload.yaml",
        &WORKLOAD.replace(
            "run: \"./work",
            &format!("run: \"test -e {} && ./work", gate.display()),
        ),
    );
    p.run(&[], 1);
    let art = p.artifact();
    let app = p.path().join("app");
    // The code moves on: a new commit and an uncommitted edit.
    let text = std::fs::read_to_string(app.join("work.c")).expect("read");
    std::fs::write(app.join("work.c"), text.replace("100", "300")).expect("edit");
    git(&app, &["commit", "-q", "-am", "faster"]);
    std::fs::write(app.join("README"), "more\n").expect("edit");
    std::fs::write(&gate, "").expect("gate");
    let id = art.file_name().expect("id").to_string_lossy().into_owned();
    let (stdout, stderr) = Flow::new()
        .args(["resume", &id, "--artifacts", "artifacts", "--rerun-failed"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("9 passed"), "{stdout}\n{stderr}");
    for e in std::fs::read_dir(art.join("runs")).expect("runs").flatten() {
        let r = json(&e.path().join("run_result.json"));
        let base = match r["mutation"].as_str() {
            Some("double") => 200.0,
            Some("more") => 150.0,
            _ => 100.0,
        };
        let rep = r["repetition"].as_f64().expect("rep");
        assert_eq!(r["status"], "passed");
        assert_eq!(r["metrics"]["v"]["value"].as_f64(), Some(base + rep));
    }
}

/// Refusals, each located in the suite file (snapshotted).
#[test]
fn a_patch_that_does_not_apply_is_a_located_error() {
    let p = project();
    let app = p.path().join("app");
    // Made against other code: its context is not in the source.
    let text = std::fs::read_to_string(app.join("work.c")).expect("read");
    std::fs::write(
        app.join("work.c"),
        text.replace("static int", "static long"),
    )
    .expect("edit");
    let broken = base_patch(&app, 999);
    git(&app, &["checkout", "--", "work.c"]);
    let p = p.file("patches/broken.patch", &broken).file(
        "suite.yaml",
        &SUITE.replace(
            "      double: [patches/double.patch]",
            "      double: [patches/double.patch, patches/broken.patch]",
        ),
    );
    let (_, stderr) = Flow::new()
        .args(["plan", "--suite", "suite.yaml", "--dry-run"])
        .cwd(p.path())
        .expect(2);
    let commit = git(&app, &["rev-parse", "HEAD"]);
    let shown = stderr.replace(&commit[..12], "<commit>");
    insta::assert_snapshot!("patch_does_not_apply", shown);

    // Mutations without sources, an unknown source, `none` as a name.
    let p = p.file(
        "suite.yaml",
        "suite: s\nsources: { app: app, other: nowhere }\nworkloads:\n  - workload: workload.yaml\n    mutations:\n      none: [patches/double.patch]\n      x: { source: ap, patches: [patches/double.patch] }\n      y: { source: app, patches: [patches/missing.patch] }\n    annotations: { deep: { a: 1 } }\n",
    );
    let (_, stderr) = Flow::new()
        .args([
            "plan",
            "--suite",
            "suite.yaml",
            "--dry-run",
            "--annotate",
            "novalue",
        ])
        .cwd(p.path())
        .expect(2);
    insta::assert_snapshot!("mutation_refusals", stderr);
}
