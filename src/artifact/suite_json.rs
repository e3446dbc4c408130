//! `suite.json`: what an artifact was made from — the source files (copied),
//! the inventory, the expansion, flow's version, git provenance and the
//! command line.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::expand::Expansion;
use crate::suite::Suite;

/// Version of `suite.json`.
pub const SUITE_SCHEMA_VERSION: u32 = 1;

pub fn suite_json(suite: &Suite, exp: &Expansion, run_ids: &[String], artifact_id: &str) -> Value {
    let sources: Vec<Value> = suite
        .sources
        .iter()
        .map(|f| json!({ "path": f.display, "text": f.text }))
        .collect();
    let entries: Vec<Value> = suite
        .entries
        .iter()
        .map(|e| serde_json::to_value(e.summary(&suite.sources)).unwrap_or(Value::Null))
        .collect();
    json!({
        "schema_version": SUITE_SCHEMA_VERSION,
        "artifact_id": artifact_id,
        "created": super::utc_timestamp(std::time::SystemTime::now()),
        "flow_version": env!("CARGO_PKG_VERSION"),
        "command_line": std::env::args().collect::<Vec<_>>(),
        "suite": {
            "name": suite.name,
            "description": suite.description,
            "path": crate::diag::display_path(&suite.path),
            // What `flow resume` loads the suite from again.
            "file": crate::paths::absolute(&suite.path),
            "hosts_file": suite.inventory.source.as_deref().map(|p| {
                // The allocation shorthand is kept as written.
                if crate::slurm::is_shorthand(p) {
                    p.to_path_buf()
                } else {
                    crate::paths::absolute(p)
                }
            }),
            "max_runs": suite.max_runs,
            "set": suite.set_args,
        },
        "inventory": suite.inventory,
        "expansion": {
            "entries": entries,
            "run_count": exp.runs.len(),
            "runs": run_ids,
        },
        "git": git_provenance(suite.path.parent().unwrap_or(Path::new("."))),
        "sources": sources,
    })
}

/// Commit, branch and dirty state of the repository holding the suite, if
/// any (read with the `git` command; `null` without git or a repository).
fn git_provenance(dir: &Path) -> Value {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return Value::Null;
    };
    let status = git(&["status", "--porcelain"]).unwrap_or_default();
    json!({
        "commit": commit,
        "branch": git(&["rev-parse", "--abbrev-ref", "HEAD"]),
        "dirty": !status.is_empty(),
        "changed_files": status.lines().count(),
    })
}
