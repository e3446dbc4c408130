//! `flow merge`: shards run as CI jobs would run them, merged, and held
//! against one unsharded run of the same suite.

use std::path::Path;

use serde_json::Value;

use super::run::Project;
use super::{Flow, free_port, free_udp_port, root};

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

/// `runs.csv` without `duration_ms` (the one column that differs between
/// two runs of the same plan).
fn rows(artifact: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(artifact.join("runs.csv")).expect("runs.csv");
    text.lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            cells[..cells.len() - 1].join(",")
        })
        .collect()
}

/// `summary.csv`'s header and, per row, the columns that say what the row
/// is and how many values it holds (not the values, which differ between
/// two runs).
fn summary_structure(artifact: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(artifact.join("summary.csv")).expect("summary.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let n = header.iter().position(|h| *h == "n").expect("an n column");
    let mut out = vec![header.join(",")];
    // Up to `n_ok`: workload, mode, variant, params, metric, unit, better, n, n_ok.
    out.extend(lines.map(|l| l.split(',').take(n + 2).collect::<Vec<_>>().join(",")));
    out
}

/// Runs `suite` (from the checkout, with `extra`) as the example workflow
/// (`docs/ci/github-actions.yml`) does, in `shards` jobs laid out as its
/// upload and download steps leave them, and once whole; merges the shards
/// as its last job does, and checks the merged artifact against the whole
/// one.
fn shards_merge_like_one_run(suite: &str, shards: u32, extra: &[String]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = |args: &[&str]| {
        Flow::new()
            .args(["run", "--suite", suite])
            .args(extra)
            .args(args)
            .cwd(&root())
            .expect(0)
    };
    // The plan job.
    let (matrix, _) = Flow::new()
        .args(["plan", "--suite", suite, "--shards", &shards.to_string()])
        .args(["--format", "github-matrix"])
        .args(extra)
        .cwd(&root())
        .expect(0);
    let matrix: Value = serde_json::from_str(&matrix).expect("matrix json");
    let entries = matrix["include"].as_array().expect("include").clone();
    assert_eq!(entries.len(), shards as usize);
    // The run jobs: `--artifacts shard`, uploaded without `latest`, and
    // downloaded as `shards/shard-<job index>/<artifact id>/`.
    for (job, e) in entries.iter().enumerate() {
        let shard = e["shard"].as_str().expect("shard");
        let into = d.join(format!("job-{job}/shard"));
        let (out, _) = run(&["--shard", shard, "--artifacts", &into.display().to_string()]);
        if out.contains("nothing to run") {
            assert_eq!(e["runs"], 0, "{e}");
            continue;
        }
        let id = std::fs::read_link(into.join("latest")).expect("latest");
        let sj = json(&into.join(&id).join("suite.json"));
        assert_eq!(sj["selection"]["shard"]["text"], shard, "{sj}");
        assert_eq!(
            sj["expansion"]["runs"].as_array().map(Vec::len),
            e["runs"].as_u64().map(|n| n as usize),
            "the matrix says how many runs the shard holds"
        );
        let to = d.join(format!("shards/shard-{job}"));
        std::fs::create_dir_all(&to).expect("mkdir");
        std::fs::rename(into.join(&id), to.join(&id)).expect("download");
    }
    // The merge job: `flow merge shards/*/*/ -o sweep`, the glob as the
    // shell expands it.
    let mut inputs: Vec<String> = Vec::new();
    for job in std::fs::read_dir(d.join("shards"))
        .expect("shards")
        .flatten()
    {
        for a in std::fs::read_dir(job.path()).expect("job").flatten() {
            inputs.push(format!("{}/", a.path().display()));
        }
    }
    inputs.sort();
    assert!(inputs.len() >= 2, "{suite}: at least two shards hold runs");
    run(&["--artifacts", &d.join("whole").display().to_string()]);
    let whole = d.join("whole/latest");
    assert!(
        json(&whole.join("suite.json")).get("selection").is_none(),
        "an artifact of every run records no selection"
    );

    let (out, err) = Flow::new()
        .args(["merge"])
        .args(&inputs)
        .args(["-o", "merged", "--artifacts"])
        .args([d.join("merged-root").display().to_string()])
        .cwd(d)
        .expect(0);
    assert!(out.contains("0 failed"), "{out}\n{err}");
    let merged = d.join("merged-root/merged");
    assert_eq!(rows(&merged), rows(&whole), "{suite}: runs.csv rows");
    assert_eq!(
        summary_structure(&merged),
        summary_structure(&whole),
        "{suite}: summary rows"
    );
    let (sm, sw) = (
        json(&merged.join("suite.json")),
        json(&whole.join("suite.json")),
    );
    assert_eq!(sm["expansion"], sw["expansion"], "{suite}: the merged plan");
    assert!(sm.get("selection").is_none(), "{sm}");
    assert_eq!(
        sm["merged"]["from"].as_array().map(Vec::len),
        Some(inputs.len())
    );
    assert_eq!(sm["artifact_id"], "merged");
    // Every input's own record is kept.
    for n in 1..=inputs.len() {
        assert!(merged.join(format!("shards/{n}/suite.json")).is_file());
    }
    // The same junit test cases.
    let cases = |a: &Path| {
        let x = std::fs::read_to_string(a.join("junit.xml")).expect("junit");
        x.matches("<testcase ").count()
    };
    assert_eq!(cases(&merged), cases(&whole));

    // Analysed again, reported and compared as if it had run in one place.
    let m = merged.display().to_string();
    Flow::new().args(["analyze", &m]).cwd(d).expect(0);
    assert_eq!(summary_structure(&merged), summary_structure(&whole));
    Flow::new().args(["report", &m]).cwd(d).expect(0);
    let (cmp, _) = Flow::new()
        .args(["compare", "--json", &m, &whole.display().to_string()])
        .cwd(d)
        .expect(0);
    let cmp: Value = serde_json::from_str(&cmp).expect("compare json");
    let compared = cmp["rows"].as_array().map_or(0, Vec::len);
    let summary_rows = summary_structure(&whole).len() - 1;
    assert_eq!(compared, summary_rows, "{suite}: every row compared");
}

#[test]
fn merged_shards_of_the_streaming_demo_are_one_unsharded_run() {
    // Ports of its own, so that other tests running the demo do not meet it.
    let hosts = tempfile::NamedTempFile::new().expect("tmp");
    let (p1, p2) = (free_udp_port(), free_udp_port());
    std::fs::write(
        hosts.path(),
        format!(
            "hosts:\n  coord: {{ address: local, roles: [coordinator] }}\n  \
             w1: {{ address: local, roles: [worker], vars: {{ node_id: w1, port: {p1} }} }}\n  \
             w2: {{ address: local, roles: [worker], vars: {{ node_id: w2, port: {p2} }} }}\n"
        ),
    )
    .expect("inventory");
    shards_merge_like_one_run(
        "streaming",
        2,
        &["--hosts".into(), hosts.path().display().to_string()],
    );
}

#[test]
fn merged_shards_of_the_overhead_suite_are_one_unsharded_run() {
    let (port, observer) = (free_port(), free_port());
    shards_merge_like_one_run(
        "overhead",
        3,
        &[
            "--set".into(),
            format!("port={port}"),
            "--set".into(),
            format!("observer_port={observer}"),
            "--set".into(),
            "ops=200".into(),
        ],
    );
}

const TINY: &str = "workload: w\nparams: { k: 1, fail: 0 }\nsteps:\n  job: { run: 'test {{ params.fail }} = 0 || test {{ params.k }} != 2' }\n";

/// Two shards of a 6-run suite (3 points × 2 repetitions) run in `p`;
/// returns the folders named `a` and `b`.
fn two_shards(p: &Project, extra: &[&str]) {
    for (i, name) in [(1, "a"), (2, "b")] {
        let shard = format!("{i}/2");
        // With `fail=1` a shard holding `k=2` fails: either code is right.
        let out = Flow::new()
            .args(["run", "--suite", "suite.yaml", "--shard", &shard])
            .args(["--artifacts", &format!("ci-{name}")])
            .args(extra)
            .cwd(p.path())
            .output();
        assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
        let latest = p.path().join(format!("ci-{name}/latest"));
        let target = std::fs::read_link(&latest).expect("latest");
        std::fs::rename(
            p.path().join(format!("ci-{name}")).join(target),
            p.path().join(name),
        )
        .expect("rename");
    }
}

fn tiny() -> Project {
    Project::new()
        .file(
            "suite.yaml",
            "suite: tiny\nworkloads:\n  - workload: w.yaml\n    repetitions: 2\n    matrix: { k: [1, 2, 3] }\n",
        )
        .file("w.yaml", TINY)
}

#[test]
fn merge_refuses_what_is_not_one_plan_and_says_what_is_missing() {
    let p = tiny();
    two_shards(&p, &[]);
    let merge = |args: &[&str], code: i32| {
        Flow::new()
            .args(["merge"])
            .args(args)
            .cwd(p.path())
            .expect(code)
    };
    // Both shards: whole.
    let (out, _) = merge(&["a", "b", "-o", "ab"], 0);
    assert!(out.contains("6 runs: 6 passed, 0 failed"), "{out}");
    // The same input twice, and the same runs in two inputs.
    let (_, err) = merge(&["a", "a", "-o", "x"], 2);
    insta::assert_snapshot!("merge__same_input_twice", err);
    let (_, err) = merge(&["a", "artifacts/ab", "-o", "x"], 2);
    insta::assert_snapshot!("merge__run_in_two_inputs", err);
    // An existing output is never written into.
    let (_, err) = merge(&["a", "b", "-o", "ab"], 2);
    insta::assert_snapshot!("merge__output_exists", err);
    // One shard alone: merged, but incomplete, and it says so.
    let (out, err) = merge(&["a", "-o", "only-a"], 1);
    assert!(out.contains("missing"), "{out}");
    assert!(
        err.contains("runs are in no input") && err.contains("no input is shard 2/2"),
        "{err}"
    );
    let sj: Value = serde_json::from_slice(
        &std::fs::read(p.path().join("artifacts/only-a/suite.json")).expect("suite.json"),
    )
    .expect("json");
    let missing = sj["merged"]["missing"].as_array().map_or(0, Vec::len);
    assert!(missing > 0, "{sj}");
    // … and merging that with the other shard is whole again.
    let (out, err) = merge(&["artifacts/only-a", "b", "-o", "again"], 0);
    assert!(out.contains("6 runs: 6 passed"), "{out}\n{err}");
    let again = p.path().join("artifacts/again");
    let ab = p.path().join("artifacts/ab");
    assert_eq!(rows(&again), rows(&ab));
    // A run folder that holds another run's plan (renamed by hand) is not
    // taken for the run it is named after: the merge says so and fails.
    let runs_b: Vec<std::path::PathBuf> = std::fs::read_dir(p.path().join("b/runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .collect();
    let swapped = p.path().join("b-swapped");
    copy_dir(&p.path().join("b"), &swapped);
    let (x, y) = (&runs_b[0], &runs_b[1]);
    let name = |r: &std::path::Path| r.file_name().expect("name").to_owned();
    std::fs::copy(
        y.join("plan.json"),
        swapped.join("runs").join(name(x)).join("plan.json"),
    )
    .expect("swap");
    let (out, err) = merge(&["a", "b-swapped", "-o", "swapped"], 1);
    assert!(out.contains("1 missing"), "{out}");
    assert!(
        err.contains(&format!("is the plan of {}", name(y).to_string_lossy())),
        "{err}"
    );
    // Shards of another plan (another param value) are refused.
    let other = tiny();
    two_shards(&other, &["--set", "fail=1"]);
    let c = other.path().join("a").display().to_string();
    let (_, err) = merge(&["a", &c, "-o", "x"], 2);
    let err = err.replace(&c, "[OTHER]");
    insta::assert_snapshot!("merge__other_plan", err);
    // A failed run in a shard fails the merge, and shows in junit.xml.
    let (out, _) = Flow::new()
        .args(["merge", &c, &other.path().join("b").display().to_string()])
        .args(["-o", "failing"])
        .cwd(p.path())
        .expect(1);
    assert!(out.contains("4 passed, 2 failed"), "{out}");
    let junit =
        std::fs::read_to_string(p.path().join("artifacts/failing/junit.xml")).expect("junit");
    assert_eq!(junit.matches("<failure ").count(), 2, "{junit}");
    assert!(!p.path().join("artifacts/x").exists());
}

#[test]
fn merge_refuses_a_running_artifact_and_a_bad_output_id() {
    let p = tiny();
    two_shards(&p, &[]);
    // A live process holds `b`: this test's own pid.
    std::fs::write(
        p.path().join("b/flow.pid"),
        format!("{}\n", std::process::id()),
    )
    .expect("pid");
    let (_, err) = Flow::new()
        .args(["merge", "a", "b"])
        .cwd(p.path())
        .expect(2);
    let err = err.replace(&std::process::id().to_string(), "[PID]");
    insta::assert_snapshot!("merge__input_running", err);
    std::fs::remove_file(p.path().join("b/flow.pid")).expect("rm");
    let (_, err) = Flow::new()
        .args(["merge", "a", "b", "-o", "../up"])
        .cwd(p.path())
        .expect(2);
    insta::assert_snapshot!("merge__bad_output_id", err);
    // --move takes the runs out of the inputs, and nothing is lost.
    let (out, _) = Flow::new()
        .args(["merge", "a", "b", "--move", "-o", "moved"])
        .cwd(p.path())
        .expect(0);
    assert!(out.contains("6 passed"), "{out}");
    let left = std::fs::read_dir(p.path().join("a/runs"))
        .expect("ls")
        .count();
    assert_eq!(left, 0, "the runs were moved");
    let runs = std::fs::read_dir(p.path().join("artifacts/moved/runs"))
        .expect("ls")
        .count();
    assert_eq!(runs, 6);
}

/// `cp -r`, for a test's own folders.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}
