//! `junit.xml`: one test case per run, for CI systems that show test
//! reports. A run that passed is a passing case; a failed run is a
//! `<failure>` with its first error and the last lines of its failing
//! step's stderr; an interrupted run is an `<error>`; a run that never
//! started is `<skipped>`. Each case's `system-out` names the run's files.

use std::fmt::Write as _;
use std::path::Path;

use super::StoredRun;
use crate::artifact::run_result::RunStatus;

/// How many lines of the failing step's stderr go into a failure.
const STDERR_LINES: usize = 20;

/// Text as XML character data or attribute value: escaped, and without the
/// characters XML 1.0 cannot hold.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The whole document for an artifact's runs.
pub fn render(suite: &str, runs: &[StoredRun]) -> String {
    let (mut failures, mut errors, mut skipped, mut time) = (0, 0, 0, 0.0f64);
    let mut cases = String::new();
    for run in runs {
        let p = &run.plan;
        let classname = format!("{}.{}", p.workload, p.mode);
        let secs = run
            .result
            .as_ref()
            .and_then(|r| r.duration_ms)
            .map_or(0.0, |ms| ms as f64 / 1000.0);
        time += secs;
        let rel = format!("runs/{}", p.id);
        let _ = writeln!(
            cases,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{secs:.3}\">",
            xml(&classname),
            xml(&format!("{} r{} ({})", p.variant, p.repetition, p.id))
        );
        match run.result.as_ref().map(|r| (r.status, r)) {
            None => {
                skipped += 1;
                cases.push_str("      <skipped message=\"not run\"/>\n");
            }
            Some((RunStatus::Passed, _)) => {}
            Some((RunStatus::Failed, r)) => {
                failures += 1;
                let message = r.first_error().unwrap_or_else(|| "failed".into());
                let body = r
                    .failing_step()
                    .map(|s| {
                        let err = run.dir.join("logs").join(format!("{}.err", s.id));
                        format!(
                            "{}\n--- last lines of {rel}/logs/{}.err ---\n{}",
                            s.errors.join("\n"),
                            s.id,
                            tail(&err, STDERR_LINES)
                        )
                    })
                    .unwrap_or_else(|| r.errors.join("\n"));
                let _ = writeln!(
                    cases,
                    "      <failure message=\"{}\" type=\"failed\">{}</failure>",
                    xml(&message),
                    xml(&body)
                );
            }
            Some((status, _)) => {
                errors += 1;
                let _ = writeln!(
                    cases,
                    "      <error message=\"{}\" type=\"{}\"/>",
                    xml(&format!("the run was {}", status.as_str())),
                    status.as_str()
                );
            }
        }
        let _ = writeln!(
            cases,
            "      <system-out>{}</system-out>\n    </testcase>",
            xml(&format!(
                "plan: {rel}/plan.json\nresult: {rel}/run_result.json\njournal: {rel}/events.jsonl\nlogs: {rel}/logs/\nfetched: {rel}/hosts/"
            ))
        );
    }
    let n = runs.len();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{name}\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n  <testsuite name=\"{name}\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n{cases}  </testsuite>\n</testsuites>\n",
        name = xml(suite)
    )
}

/// Writes `junit.xml` into the artifact.
pub fn write(artifact: &Path, runs: &[StoredRun]) -> Result<(), String> {
    let suite = runs
        .first()
        .map(|r| r.plan.suite.clone())
        .unwrap_or_default();
    let p = artifact.join("junit.xml");
    crate::artifact::atomic_write(&p, render(&suite, runs).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_stripped_of_what_xml_cannot_hold() {
        assert_eq!(
            xml("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
        assert_eq!(xml("bell\u{7} tab\t"), "bell\u{FFFD} tab\t");
    }
}
