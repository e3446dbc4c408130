//! flow's files read by the tools their users read them with, from PyPI
//! (installed by `scripts/test.sh` into a venv it names in
//! `FLOW_TEST_TOOLS`): actionlint for the example GitHub workflow,
//! junitparser for `junit.xml`.

use std::process::Command;

use super::run::Project;
use super::{Flow, root, test_tool as tool};

fn lint(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(tool("actionlint"))
        .arg("-no-color")
        .arg(path)
        .output()
        .expect("actionlint runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "needs actionlint and junitparser from PyPI: scripts/test.sh installs them"]
fn the_example_github_workflow_passes_actionlint() {
    let workflow = root().join("docs/ci/github-actions.yml");
    let (ok, out) = lint(&workflow);
    assert!(ok, "{out}");
    // The linter does look: a misspelt job output is caught.
    let text = std::fs::read_to_string(&workflow).expect("workflow");
    assert!(text.contains("needs.plan.outputs.matrix"));
    let bad = tempfile::NamedTempFile::with_suffix(".yml").expect("tmp");
    std::fs::write(
        bad.path(),
        text.replace("needs.plan.outputs.matrix", "needs.plan.outputs.matrx"),
    )
    .expect("write");
    let (ok, out) = lint(bad.path());
    assert!(!ok && out.contains("matrx"), "{out}");
    // Every flow command it runs is one flow takes.
    for line in text.lines() {
        let Some(at) = line.find("./.flow-bin/flow ") else {
            continue;
        };
        let words: Vec<&str> = line[at..].split_whitespace().collect();
        let sub = words[1];
        Flow::new().args([sub, "--help"]).cwd(&root()).expect(0);
    }
}

#[test]
#[ignore = "needs actionlint and junitparser from PyPI: scripts/test.sh installs them"]
fn junit_xml_is_read_by_junitparser() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: j\nworkloads:\n  - workload: w.yaml\n    matrix: { code: [0, 3] }\n    repetitions: 2\n",
        )
        .file(
            "w.yaml",
            "workload: w\nparams: { code: 0 }\nsteps:\n  job: { run: \"echo 'why <it> failed' >&2; exit {{ params.code }}\" }\n",
        );
    Flow::new()
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(1);
    let xml = p.path().join("artifacts/latest/junit.xml");
    let script = r#"
import sys
from junitparser import JUnitXml, Failure
xml = JUnitXml.fromfile(sys.argv[1])
cases = [c for s in xml for c in s]
failed = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
print(len(cases), len(failed), xml.tests, xml.failures)
for c in failed:
    f = [r for r in c.result if isinstance(r, Failure)][0]
    print(c.classname, "|", f.message, "|", "why <it> failed" in (f.text or ""), "|", "logs/" in (c.system_out or ""))
"#;
    let out = Command::new(tool("python"))
        .args(["-c", script])
        .arg(&xml)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("4 2 4 2"), "{stdout}");
    for l in lines {
        let cells: Vec<&str> = l.split(" | ").collect();
        assert_eq!(cells[0], "w.baseline", "{l}");
        assert!(cells[1].contains("exited with 3"), "{l}");
        assert_eq!(cells[2], "True", "the failing step's stderr: {l}");
        assert_eq!(cells[3], "True", "links to the logs: {l}");
    }
}
