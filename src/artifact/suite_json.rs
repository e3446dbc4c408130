//! `suite.json`: what an artifact was made from — the source files (copied),
//! the inventory, the expansion, flow's version, the state of every
//! repository (`sources`, with uncommitted diffs under `sources/`) and the
//! command line.

use std::path::Path;

use serde_json::{Value, json};

use crate::expand::Expansion;
use crate::sources::SourceState;
use crate::suite::Suite;

/// Version of `suite.json`.
pub const SUITE_SCHEMA_VERSION: u32 = 2;

pub fn suite_json(suite: &Suite, exp: &Expansion, run_ids: &[String], artifact_id: &str) -> Value {
    let files: Vec<Value> = suite
        .sources
        .iter()
        .map(|f| json!({ "path": f.display, "text": f.text }))
        .collect();
    // The code under test, then the repository holding the suite.
    let mut code = serde_json::Map::new();
    for c in &suite.code {
        code.insert(c.state.name.clone(), source_json(&c.state));
    }
    if let Some(e) = &suite.experiment {
        code.insert(e.name.clone(), source_json(e));
    }
    let entries: Vec<Value> = suite
        .entries
        .iter()
        .map(|e| {
            serde_json::to_value(e.summary(&suite.sources, &suite.code)).unwrap_or(Value::Null)
        })
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
                // The allocation shorthand and a hosts command are kept
                // as written.
                if crate::slurm::is_shorthand(p) || crate::suite::hosts_command(p).is_some() {
                    p.to_path_buf()
                } else {
                    crate::paths::absolute(p)
                }
            }),
            "max_runs": suite.max_runs,
            "set": suite.set_args,
            "annotate": suite.annotate_args,
        },
        "inventory": suite.inventory,
        "expansion": {
            "entries": entries,
            "run_count": exp.runs.len(),
            "runs": run_ids,
        },
        "sources": code,
        "annotations": suite.annotations,
        "files": files,
    })
}

/// What `suite.json` says of a repository: its state, and where its
/// uncommitted diff is stored.
fn source_json(s: &SourceState) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("path".into(), json!(crate::diag::display_path(&s.path)));
        o.insert(
            "diff".into(),
            if s.dirty {
                json!(diff_path(&s.name))
            } else {
                Value::Null
            },
        );
    }
    v
}

/// Where a source's uncommitted diff is stored, relative to the artifact.
pub fn diff_path(name: &str) -> String {
    format!("sources/{name}.diff")
}

/// Writes `sources/<name>.diff` of every dirty source (the experiment's
/// repository too) into the artifact folder `dir`.
pub fn write_source_diffs(
    suite: &Suite,
    dir: &Path,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let states = suite
        .code
        .iter()
        .map(|c| &c.state)
        .chain(suite.experiment.as_ref());
    for s in states.filter(|s| s.dirty) {
        let path = dir.join(diff_path(&s.name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| (parent.to_path_buf(), e))?;
        }
        super::atomic_write(&path, s.diff.as_bytes()).map_err(|e| (path.clone(), e))?;
    }
    Ok(())
}
