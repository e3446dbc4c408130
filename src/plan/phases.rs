//! `setup:` and `teardown:` as plans: each instance is a run of its own
//! (one task on each of its hosts, and for a setup with outputs a fetch of
//! them), executed by the same supervisor as every run, into
//! `<artifact>/setup/<id>/` or `<artifact>/teardown/<id>/`.
//!
//! A setup step that uses a source with mutations has one instance per
//! state of the code it builds (`none`, and each mutation of that source);
//! a run gets the outputs of the instance built from its own code. The
//! instance's id hashes what it runs and from which code, so an unchanged
//! setup that passed is not run again on resume, and its id is part of the
//! id of every run that uses its outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use minijinja::value::Value;
use sha2::{Digest, Sha256};

use super::{Planner, SCHEMA_VERSION, ctx, json_value, run_sources};
use crate::diag::{Diagnostic, Diagnostics};
use crate::plan::dag::EdgeKind;
use crate::plan::template::{SHELL_SUFFIX, Templates};
use crate::plan::types::{Edge, RunCommand, RunPlan, RunSource, StepInstance};
use crate::suite::phases::PhaseStep;
use crate::suite::raw::Command;
use crate::suite::{NO_MUTATION, StepKind};

/// One instance of a setup step, and where its outputs land.
#[derive(Debug, Clone)]
pub(super) struct SetupInstance {
    step: usize,
    pub plan: RunPlan,
    /// Controller paths of the fetched outputs, pushed into runs as
    /// `files:` are (a trailing `/` is a folder).
    pub outputs: Vec<String>,
    /// The sources' snapshot paths it was built from: its key.
    key: Vec<String>,
}

impl Planner<'_> {
    /// Builds every setup and teardown instance. Template errors come back
    /// located.
    pub(super) fn build_phases(&mut self) -> Result<(), Diagnostics> {
        let mut diags = Diagnostics::new();
        let mut t = Templates::new();
        let suite = self.suite;
        for (si, step) in suite.setup.iter().enumerate() {
            // The code states this step is built from: `none`, then every
            // mutation of a source it uses, each once.
            let mut variants: Vec<(String, BTreeMap<String, RunSource>)> = Vec::new();
            let (none, _) = run_sources(suite, None);
            variants.push((NO_MUTATION.to_string(), subset(&none, step, suite)));
            for e in &suite.entries {
                for m in e.mutations.iter().filter(|m| m.name != NO_MUTATION) {
                    if !step.sources.contains(&m.source) {
                        continue;
                    }
                    let (rs, _) = run_sources(suite, Some(m));
                    let sub = subset(&rs, step, suite);
                    if !variants.iter().any(|(_, v)| key_of(v) == key_of(&sub)) {
                        variants.push((m.name.clone(), sub));
                    }
                }
            }
            for (label, sources) in variants {
                match self.phase_plan(&mut t, step, Some(&label), &sources) {
                    Ok(plan) => {
                        let host = &suite.inventory.hosts[step.hosts[0]].name;
                        let outputs = step
                            .outputs
                            .iter()
                            .map(|o| {
                                let keep = if o.ends_with('/') { "/" } else { "" };
                                format!(
                                    "{}/hosts/{host}/{}{keep}",
                                    plan.dir,
                                    o.trim_end_matches('/')
                                )
                            })
                            .collect();
                        self.setup.push(SetupInstance {
                            step: si,
                            key: key_of(&sources),
                            plan,
                            outputs,
                        });
                    }
                    Err(d) => diags.push(d),
                }
            }
        }
        for step in &suite.teardown {
            let (none, _) = run_sources(suite, None);
            let sources = subset(&none, step, suite);
            match self.phase_plan(&mut t, step, None, &sources) {
                Ok(plan) => self.teardown.push(plan),
                Err(d) => diags.push(d),
            }
        }
        diags.finish();
        if diags.is_empty() { Ok(()) } else { Err(diags) }
    }

    /// The setup instances whose outputs a run of `entry` with mutation
    /// `mutation` takes, one per setup step.
    pub(super) fn setup_for(&self, entry: usize, mutation: Option<usize>) -> Vec<&SetupInstance> {
        let (rs, _) = &self.code[entry][mutation.unwrap_or(0)];
        self.suite
            .setup
            .iter()
            .enumerate()
            .filter_map(|(si, step)| {
                let key = key_of(&subset(rs, step, self.suite));
                self.setup.iter().find(|i| i.step == si && i.key == key)
            })
            .collect()
    }

    /// The setup instances, in order.
    pub fn setup_plans(&self) -> Vec<RunPlan> {
        self.setup.iter().map(|i| i.plan.clone()).collect()
    }

    /// The teardown instances, in order.
    pub fn teardown_plans(&self) -> Vec<RunPlan> {
        self.teardown.clone()
    }

    fn phase_plan(
        &self,
        t: &mut Templates,
        step: &PhaseStep,
        label: Option<&str>,
        sources: &BTreeMap<String, RunSource>,
    ) -> Result<RunPlan, Diagnostic> {
        let kind = step.phase.as_str();
        let inv = &self.suite.inventory;
        let mut one = |source: &str, shell: bool, c: &Value| -> Result<String, Diagnostic> {
            let key = format!("phase{}{}", t.len(), if shell { SHELL_SUFFIX } else { "" });
            t.add(key.clone(), source.to_string())
                .and_then(|()| t.render(&key, c))
                .map_err(|e| Diagnostic::at(step.span, format!("{kind} step `{}`: {e}", step.name)))
        };
        // The id comes from what runs, rendered with a placeholder dir,
        // then the commands are rendered again in the real one.
        let mut h = Sha256::new();
        h.update(SCHEMA_VERSION.to_le_bytes());
        h.update(format!("{kind}\0{}\0{}\0", step.name, label.unwrap_or("")).as_bytes());
        let render_all = |dir_of: &dyn Fn(usize) -> String,
                          one: &mut dyn FnMut(&str, bool, &Value) -> Result<String, Diagnostic>|
         -> Result<Vec<(usize, String, RunCommand)>, Diagnostic> {
            let mut out = Vec::new();
            for &hi in &step.hosts {
                let cwd = dir_of(hi);
                let src_ctx: BTreeMap<&String, serde_json::Value> = sources
                    .iter()
                    .map(|(name, s)| {
                        (
                            name,
                            serde_json::json!({
                                "path": format!("{cwd}/{name}"),
                                "commit": s.commit,
                                "dirty": s.dirty,
                                "mutation": s.mutation.as_deref().unwrap_or(NO_MUTATION),
                            }),
                        )
                    })
                    .collect();
                let c = ctx(&[
                    ("suite", self.suite_value.clone()),
                    ("hosts", self.hosts_value.clone()),
                    ("hosts_by_name", self.hosts_by_name.clone()),
                    ("host", self.host_values[hi].clone()),
                    ("sources", json_value(serde_json::json!(src_ctx))),
                    (
                        "mutation",
                        Value::from(label.unwrap_or(NO_MUTATION).to_string()),
                    ),
                ]);
                let run = match &step.run {
                    Command::Shell(s) => RunCommand::Shell(one(s, true, &c)?),
                    Command::Argv(v) => RunCommand::Argv(
                        v.iter()
                            .map(|a| one(a, false, &c))
                            .collect::<Result<_, _>>()?,
                    ),
                };
                out.push((hi, cwd, run));
            }
            Ok(out)
        };
        let probe = render_all(&|hi| format!("<{}>", inv.hosts[hi].name), &mut one)?;
        for (hi, _, run) in &probe {
            h.update(inv.hosts[*hi].name.as_bytes());
            h.update([0]);
            h.update(serde_json::to_string(run).unwrap_or_default().as_bytes());
        }
        h.update(
            serde_json::to_string(&step.env)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(
            serde_json::to_string(&step.outputs)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(
            serde_json::to_string(sources)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(format!("{:?}", step.timeout).as_bytes());
        let hex: String = h
            .finalize()
            .iter()
            .take(5)
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = match label {
            Some(l) => format!("{kind}.{}.{l}-{hex}", step.name),
            None => format!("{kind}.{}-{hex}", step.name),
        };
        let dir: PathBuf = self.artifact_dir.join(kind).join(&id);
        let rendered = render_all(
            &|hi| inv.hosts[hi].run_dir_for(&self.artifact_dir, &self.invocation, &id),
            &mut one,
        )?;
        let mut steps = Vec::new();
        let mut edges = Vec::new();
        for (hi, cwd, run) in rendered {
            let host = inv.hosts[hi].name.clone();
            let task = StepInstance {
                id: format!("{}@{host}", step.name),
                step: step.name.clone(),
                host: host.clone(),
                kind: StepKind::Task,
                cwd: cwd.clone(),
                run: Some(run),
                env: step.env.clone(),
                ready: None,
                timeout_ms: step.timeout.map(|d| d.as_millis() as u64),
                duration_ms: None,
                every_ms: None,
                stop: None,
                scrape: None,
                retries: 0,
                allow_failure: false,
                continue_on_host_loss: false,
                paths: Vec::new(),
                max_bytes: None,
                max_total_bytes: None,
                truncate: false,
            };
            if !step.outputs.is_empty() {
                let fetch = StepInstance {
                    id: format!("outputs@{host}"),
                    step: "outputs".into(),
                    kind: StepKind::Fetch,
                    run: None,
                    env: BTreeMap::new(),
                    timeout_ms: None,
                    paths: step
                        .outputs
                        .iter()
                        .map(|o| o.trim_end_matches('/').to_string())
                        .collect(),
                    ..task.clone()
                };
                edges.push(Edge {
                    from: task.id.clone(),
                    to: fetch.id.clone(),
                    kind: EdgeKind::Lifecycle,
                });
                steps.push(task);
                steps.push(fetch);
            } else {
                steps.push(task);
            }
        }
        Ok(RunPlan {
            schema_version: SCHEMA_VERSION,
            id: id.clone(),
            suite: self.suite.name.clone(),
            workload: kind.to_string(),
            mode: step.name.clone(),
            variant: label
                .map(|l| format!("mutation={l}"))
                .unwrap_or_else(|| "default".into()),
            variant_params: serde_json::Map::new(),
            repetition: 1,
            params: serde_json::Map::new(),
            exclusive: true,
            dir: dir.display().to_string(),
            hosts: step
                .hosts
                .iter()
                .map(|&i| inv.hosts[i].name.clone())
                .collect(),
            files: sources
                .values()
                .map(|s| format!("{}/", s.path.trim_end_matches('/')))
                .collect(),
            steps,
            edges,
            metrics: Vec::new(),
            clock_every_ms: None,
            timeline: Vec::new(),
            mutation: label.map(str::to_string),
            sources: sources.clone(),
            annotations: BTreeMap::new(),
        })
    }
}

/// The sources of `all` a phase step uses.
fn subset(
    all: &BTreeMap<String, RunSource>,
    step: &PhaseStep,
    suite: &crate::suite::Suite,
) -> BTreeMap<String, RunSource> {
    step.sources
        .iter()
        .filter_map(|&i| {
            let name = &suite.code[i].state.name;
            all.get(name).map(|s| (name.clone(), s.clone()))
        })
        .collect()
}

fn key_of(sources: &BTreeMap<String, RunSource>) -> Vec<String> {
    sources.values().map(|s| s.path.clone()).collect()
}
