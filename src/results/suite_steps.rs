//! Suite-level analyze steps: rendered once when the artifact is made
//! (with `{{ artifact.dir }}`, `{{ artifact.id }}`, `{{ suite.name }}`),
//! kept in `suite.json`, and run on the controller after every run (and by
//! `flow analyze`), in name order, in the suite file's folder, with their
//! output in `<artifact>/logs/<name>@suite.out|.err`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::RunCommand;
use crate::plan::template::{SHELL_SUFFIX, Templates};
use crate::suite::Suite;
use crate::suite::raw::Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteStep {
    pub name: String,
    pub run: RunCommand,
    /// The suite file's folder.
    pub cwd: String,
    /// The artifact's absolute path when the step was rendered: where the
    /// artifact is now replaces it, should it have moved.
    #[serde(default)]
    pub artifact_dir: String,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Renders the suite's analyze steps for the artifact at `dir`.
pub fn render(suite: &Suite, dir: &Path, id: &str) -> Result<Vec<SuiteStep>, String> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let ctx = serde_json::json!({
        "artifact": { "dir": dir.display().to_string(), "id": id },
        "suite": { "name": suite.name },
    });
    let ctx = minijinja::Value::from(minijinja::value::Serde(&ctx));
    let folder = match suite.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let cwd = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    let mut t = Templates::new();
    let mut out = Vec::new();
    for (name, step) in &suite.analyze {
        // Each template is named by its number, never by its field, so two
        // fields can never share one.
        let mut one = |source: &str, shell: bool| -> Result<String, String> {
            let key = format!("{}{}", t.len(), if shell { SHELL_SUFFIX } else { "" });
            t.add(key.clone(), source.to_string())
                .and_then(|()| t.render(&key, &ctx))
                .map_err(|e| {
                    format!(
                        "{}: analyze step `{name}`: {e}",
                        crate::diag::display_path(&suite.path)
                    )
                })
        };
        let run = match &step.run {
            Command::Shell(s) => RunCommand::Shell(one(s, true)?),
            Command::Argv(v) => {
                RunCommand::Argv(v.iter().map(|a| one(a, false)).collect::<Result<_, _>>()?)
            }
        };
        out.push(SuiteStep {
            name: name.clone(),
            run,
            cwd: cwd.display().to_string(),
            artifact_dir: dir.display().to_string(),
            env: step.env.clone(),
        });
    }
    Ok(out)
}

/// Runs the steps kept in the artifact's `suite.json`; returns one message
/// per failed step.
pub fn run_all(artifact: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read(artifact.join("suite.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return vec![format!(
            "{}: not JSON",
            artifact.join("suite.json").display()
        )];
    };
    let steps: Vec<SuiteStep> = v
        .get("analyze")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default();
    let id = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut errors = Vec::new();
    for s in &steps {
        if let Err(e) = run_one(artifact, &id, s) {
            errors.push(format!("analyze step `{}`: {e}", s.name));
        }
    }
    errors
}

fn run_one(artifact: &Path, id: &str, s: &SuiteStep) -> Result<(), String> {
    let logs = artifact.join("logs");
    // Paths into the artifact name it where it is now.
    let here = std::path::absolute(artifact).unwrap_or_else(|_| artifact.to_path_buf());
    let here = here.display().to_string();
    let moved = |t: &str| super::relocate(t, &s.artifact_dir, &here);
    let run = match &s.run {
        RunCommand::Shell(t) => RunCommand::Shell(moved(t)),
        RunCommand::Argv(v) => RunCommand::Argv(v.iter().map(|a| moved(a)).collect()),
    };
    let mut env: Vec<(String, String)> = s.env.iter().map(|(k, v)| (k.clone(), moved(v))).collect();
    env.push(("FLOW_ARTIFACT_ID".into(), id.into()));
    env.push(("FLOW_ARTIFACT_DIR".into(), here.clone()));
    super::run_on_controller(
        &run,
        Path::new(&s.cwd),
        &env,
        &logs.join(format!("{}@suite", s.name)),
    )
}
