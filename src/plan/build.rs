//! From run points to run plans: placement, run ids, rendered steps and the
//! instance DAG of each run.
//!
//! Templates are compiled once per group (workload entry × mode); each run
//! then only evaluates `when`, resolves `on`, computes its id and renders.
//!
//! A run id is `<workload>.<mode>.r<repetition>-<hash>`, the hash being the
//! first ten hex digits of a SHA-256 over the schema version, the merged
//! workload structure (templates unrendered), the resolved params, the mode,
//! the repetition and the placement (step → host names; for the nodes of an
//! allocation, their places in it). Rendered text is not
//! hashed: it contains the run id itself and paths that differ between
//! artifacts; everything it is rendered from is.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use minijinja::value::{Object, Value};
use sha2::{Digest, Sha256};

use super::dag::{EdgeKind, instance_graph, step_edges};
use super::template::{SHELL_SUFFIX, Templates};
use super::types::{
    CONTROLLER, Edge, PatchRef, ReadyPlan, RunCommand, RunPlan, RunSource, ScrapePlan,
    StepInstance, StopPlan,
};
use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::duration;
use crate::expand::{Expansion, RunPoint};
use crate::paths::absolute;
use crate::suite::{
    Condition, Field, ReadyProbe, RunField, Step, StepKind, Suite, normalize_signal,
};

/// The sources a run of `mutation` uses: every source of the suite, the
/// mutated one with its patches.
fn run_sources(
    suite: &Suite,
    mutation: Option<&crate::suite::Mutation>,
) -> (BTreeMap<String, RunSource>, Value) {
    let mut out = BTreeMap::new();
    let mut ctx = BTreeMap::new();
    for (i, c) in suite.code.iter().enumerate() {
        let patched = mutation.filter(|m| m.source == i && !m.patches.is_empty());
        let path = patched.map_or(&c.snapshot, |m| &m.snapshot);
        let rs = RunSource {
            commit: c.state.commit.clone(),
            dirty: c.state.dirty,
            diff_sha256: c.state.diff_sha256.clone(),
            mutation: patched.map(|m| m.name.clone()),
            patches: patched
                .map(|m| {
                    m.patches
                        .iter()
                        .map(|p| PatchRef {
                            file: p.file.clone(),
                            sha256: p.sha256.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            path: path.display().to_string(),
        };
        ctx.insert(
            c.state.name.clone(),
            serde_json::json!({
                "path": rs.path,
                "commit": rs.commit,
                "short": c.state.short(),
                "dirty": rs.dirty,
                "branch": c.state.branch,
                "remote": c.state.remote,
                "mutation": rs.mutation.as_deref().unwrap_or(crate::suite::NO_MUTATION),
            }),
        );
        out.insert(c.state.name.clone(), rs);
    }
    (
        out,
        json_value(serde_json::Value::Object(ctx.into_iter().collect())),
    )
}

#[path = "phases.rs"]
mod phases;

/// Version of plan.json and of the run-id hash input.
pub const SCHEMA_VERSION: u32 = 1;

/// Where the plan will execute.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `artifacts/<artifact-id>`: run dirs are `<artifact_dir>/runs/<run-id>`.
    pub artifact_dir: PathBuf,
}

type StepEdges = Arc<Vec<(usize, usize, EdgeKind)>>;

/// A string field: literal, or a compiled template.
#[derive(Debug, Clone)]
struct Text {
    literal: Option<String>,
    template: Option<String>,
    /// `steps.worker.run`, for messages.
    path: String,
    span: Span,
}

#[derive(Debug, Clone)]
enum RunText {
    Shell(Text),
    Argv(Vec<Text>),
}

#[derive(Debug, Clone)]
enum ProbeText {
    Log(Text),
    Port(Text),
    Cmd(Text),
}

#[derive(Debug, Clone)]
struct StepTexts {
    on: Vec<Text>,
    when: Option<Text>,
    run: Option<RunText>,
    env: Vec<(String, Text)>,
    ready: Option<(ProbeText, Text, Text)>,
    timeout: Option<Text>,
    duration: Option<Text>,
    every: Option<Text>,
    stop: Option<(Text, Text)>,
    /// url, every, timeout, max_missed.
    scrape: Option<(Text, Text, Option<Text>, u32)>,
    paths: Vec<Text>,
}

struct GroupTexts {
    steps: Vec<StepTexts>,
    /// Each metric's `from`.
    metrics_from: Vec<Text>,
    env: Vec<(String, Text)>,
    files: Vec<Text>,
    workload_dir: PathBuf,
}

/// Plans runs of one expansion.
pub struct Planner<'a> {
    suite: &'a Suite,
    exp: &'a Expansion,
    templates: Templates,
    groups: Vec<GroupTexts>,
    host_values: Vec<Value>,
    hosts_value: Value,
    /// `hosts_by_name`: host name → host, for per-host peers.
    hosts_by_name: Value,
    controller_value: Value,
    suite_value: Value,
    artifact_dir: PathBuf,
    /// This invocation's folder name on the hosts.
    invocation: String,
    /// Step edges by (group, which steps `when` kept).
    edge_cache: RefCell<HashMap<(usize, Vec<bool>), StepEdges>>,
    params_cache: RefCell<(usize, Value)>,
    /// `files:` paths already looked at, and whether they exist.
    files_seen: RefCell<HashMap<PathBuf, bool>>,
    /// Per entry, per mutation (index 0 without mutations): the run's
    /// sources, as plan.json records them and as templates see them.
    code: Vec<Vec<(BTreeMap<String, RunSource>, Value)>>,
    setup: Vec<phases::SetupInstance>,
    teardown: Vec<RunPlan>,
}

impl<'a> Planner<'a> {
    /// Compiles every template of the expansion; syntax errors are collected.
    pub fn new(
        suite: &'a Suite,
        exp: &'a Expansion,
        opts: &PlanOptions,
    ) -> Result<Self, Diagnostics> {
        let mut templates = Templates::new();
        let mut diags = Diagnostics::new();
        let mut groups = Vec::new();
        for (gi, g) in exp.groups.iter().enumerate() {
            let mut c = Compiler {
                templates: &mut templates,
                diags: &mut diags,
                prefix: format!("g{gi}"),
            };
            let steps = g.workload.steps.iter().map(|s| c.step(s)).collect();
            let env = g
                .workload
                .env
                .iter()
                .map(|(k, f)| (k.clone(), c.text(f, &format!("env.{k}"), false)))
                .collect();
            let files = g
                .workload
                .files
                .iter()
                .map(|f| c.text(f, "files", false))
                .collect();
            let metrics_from = g
                .workload
                .metrics
                .iter()
                .map(|m| {
                    let f = Field::new(m.from.clone(), m.span);
                    c.text(&f, &format!("metrics.{}.from", m.name), false)
                })
                .collect();
            let workload_dir = suite.entries[g.entry]
                .workload_path
                .parent()
                .map(absolute)
                .unwrap_or_default();
            groups.push(GroupTexts {
                steps,
                metrics_from,
                env,
                files,
                workload_dir,
            });
        }
        diags.finish();
        if !diags.is_empty() {
            return Err(diags);
        }
        let artifact_dir = absolute(&opts.artifact_dir);
        let host_values: Vec<Value> = suite
            .inventory
            .hosts
            .iter()
            .map(|h| {
                json_value(serde_json::json!({
                    "name": h.name,
                    "address": h.template_address(),
                    "user": h.user,
                    "port": h.port,
                    "roles": h.roles,
                    "vars": h.vars,
                    "workdir": h.workdir_for(&artifact_dir),
                    "local": h.is_local(),
                }))
            })
            .collect();
        let mut roles: BTreeMap<String, Value> = BTreeMap::new();
        for role in suite.inventory.roles() {
            let hs: Vec<Value> = suite
                .inventory
                .with_role(role)
                .into_iter()
                .map(|i| host_values[i].clone())
                .collect();
            roles.insert(role.to_string(), Value::from(hs));
        }
        let hosts_value = Value::from_object(RoleMap {
            roles,
            any: suite
                .inventory
                .builtin
                .then(|| Value::from(vec![host_values[0].clone()])),
        });
        let hosts_by_name = Value::from(
            suite
                .inventory
                .hosts
                .iter()
                .zip(&host_values)
                .map(|(h, v)| (h.name.clone(), v.clone()))
                .collect::<BTreeMap<String, Value>>(),
        );
        let controller_value = json_value(serde_json::json!({
            "name": CONTROLLER,
            "address": "localhost",
            "user": null,
            "port": null,
            "roles": [],
            "vars": {},
            "workdir": artifact_dir.display().to_string(),
            "local": true,
        }));
        let suite_value = json_value(serde_json::json!({
            "name": suite.name,
            "description": suite.description,
        }));
        let code = suite
            .entries
            .iter()
            .map(|e| {
                if e.mutations.is_empty() {
                    vec![run_sources(suite, None)]
                } else {
                    e.mutations
                        .iter()
                        .map(|m| run_sources(suite, Some(m)))
                        .collect()
                }
            })
            .collect();
        let mut planner = Planner {
            suite,
            exp,
            templates,
            groups,
            host_values,
            hosts_value,
            hosts_by_name,
            controller_value,
            suite_value,
            invocation: crate::suite::invocation_folder(&artifact_dir),
            artifact_dir,
            edge_cache: RefCell::new(HashMap::new()),
            params_cache: RefCell::new((usize::MAX, Value::UNDEFINED)),
            files_seen: RefCell::new(HashMap::new()),
            code,
            setup: Vec::new(),
            teardown: Vec::new(),
        };
        planner.build_phases()?;
        Ok(planner)
    }

    pub fn len(&self) -> usize {
        self.exp.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exp.runs.is_empty()
    }

    fn params_value(&self, pt: &RunPoint) -> Value {
        let key = Arc::as_ptr(&pt.params) as usize;
        let mut cache = self.params_cache.borrow_mut();
        if cache.0 != key {
            *cache = (key, Value::from(minijinja::value::Serde(&*pt.params)));
        }
        cache.1.clone()
    }

    /// Plans run number `index` of the expansion.
    pub fn plan(&self, index: usize) -> Result<RunPlan, Diagnostic> {
        let pt = &self.exp.runs[index];
        let group = &self.exp.groups[pt.group];
        let texts = &self.groups[pt.group];
        let wl = &group.workload;
        let variant = pt.variant_label();
        let params = self.params_value(pt);
        let entry = &self.suite.entries[group.entry];
        let mutation = pt.mutation.map(|m| entry.mutations[m].name.clone());
        let (run_sources, sources_value) = &self.code[group.entry][pt.mutation.unwrap_or(0)];
        let mut run_ctx: BTreeMap<&str, Value> = BTreeMap::new();
        run_ctx.insert("mode", Value::from(group.mode.as_str()));
        run_ctx.insert(
            "mutation",
            Value::from(mutation.as_deref().unwrap_or(crate::suite::NO_MUTATION)),
        );

        run_ctx.insert("repetition", Value::from(pt.repetition));
        run_ctx.insert("variant", Value::from(variant.as_str()));
        let early = ctx(&[
            ("params", params.clone()),
            ("run", Value::from(run_ctx.clone())),
            ("suite", self.suite_value.clone()),
            ("hosts", self.hosts_value.clone()),
            ("hosts_by_name", self.hosts_by_name.clone()),
            ("sources", sources_value.clone()),
        ]);

        // `when` and placement.
        let mut kept = vec![true; wl.steps.len()];
        let mut placement: Vec<Vec<usize>> = Vec::with_capacity(wl.steps.len());
        for (si, (step, st)) in wl.steps.iter().zip(&texts.steps).enumerate() {
            kept[si] = match (&step.when, &st.when) {
                (Condition::Always, _) => true,
                (Condition::Never, _) => false,
                (Condition::Expr(_), Some(t)) => self.eval_when(t, &early)?,
                (Condition::Expr(_), None) => true,
            };
            if !kept[si] || step.kind == StepKind::Analyze {
                placement.push(Vec::new());
                continue;
            }
            let mut selectors = Vec::with_capacity(st.on.len());
            for t in &st.on {
                selectors.push(self.render(t, &early)?);
            }
            let hosts = self.suite.inventory.select(&selectors).map_err(|e| {
                let field = if step.kind == StepKind::Fetch {
                    "from"
                } else {
                    "on"
                };
                Diagnostic::at(
                    st.on.first().map_or(step.name_span, |t| t.span),
                    format!("step `{}`: `{field}`: {}", step.name, e.message),
                )
                .with_help_opt(e.help)
            })?;
            placement.push(hosts);
        }

        let id = self.run_id(
            pt,
            group,
            &kept,
            &placement,
            (mutation.as_deref(), run_sources),
        );
        let run_dir = self.artifact_dir.join("runs").join(&id);
        run_ctx.insert("id", Value::from(id.as_str()));
        run_ctx.insert("dir", Value::from(run_dir.display().to_string()));
        run_ctx.insert(
            "clocks",
            Value::from(
                run_dir
                    .join(crate::artifact::run_result::CLOCKS_FILE)
                    .display()
                    .to_string(),
            ),
        );

        // Workload env, rendered once per run.
        let mut wl_env = BTreeMap::new();
        for (k, t) in &texts.env {
            wl_env.insert(k.clone(), self.render(t, &early)?);
        }
        let env_value = Value::from(minijinja::value::Serde(&wl_env));

        let mut instances: Vec<StepInstance> = Vec::new();
        let mut first_instance: Vec<usize> = Vec::with_capacity(wl.steps.len());
        for (si, (step, st)) in wl.steps.iter().zip(&texts.steps).enumerate() {
            first_instance.push(instances.len());
            if !kept[si] {
                continue;
            }
            let targets: Vec<Option<usize>> = if step.kind == StepKind::Analyze {
                vec![None]
            } else {
                placement[si].iter().map(|&h| Some(h)).collect()
            };
            for host in targets {
                let (host_name, host_value, cwd) = match host {
                    Some(h) => {
                        let hh = &self.suite.inventory.hosts[h];
                        let remote = hh.run_dir_for(&self.artifact_dir, &self.invocation, &id);
                        (hh.name.clone(), self.host_values[h].clone(), remote)
                    }
                    None => (
                        CONTROLLER.to_string(),
                        self.controller_value.clone(),
                        texts.workload_dir.display().to_string(),
                    ),
                };
                let mut rc = run_ctx.clone();
                rc.insert(
                    "remote_dir",
                    Value::from(if host.is_some() {
                        cwd.clone()
                    } else {
                        run_dir.display().to_string()
                    }),
                );
                let c = ctx(&[
                    ("params", params.clone()),
                    ("run", Value::from(rc)),
                    ("suite", self.suite_value.clone()),
                    ("hosts", self.hosts_value.clone()),
                    ("hosts_by_name", self.hosts_by_name.clone()),
                    ("host", host_value),
                    ("env", env_value.clone()),
                    ("sources", sources_value.clone()),
                ]);
                instances.push(self.instance(step, st, host_name, cwd, &wl_env, &c)?);
            }
        }

        // Instance edges from step edges.
        let edges = self.cached_edges(pt.group, &wl.steps, &kept);
        let counts: Vec<usize> = (0..wl.steps.len())
            .map(|si| {
                let end = first_instance
                    .get(si + 1)
                    .copied()
                    .unwrap_or(instances.len());
                end - first_instance[si]
            })
            .collect();
        let mut inst_edges = Vec::new();
        for &(a, b, kind) in edges.iter() {
            for ia in first_instance[a]..first_instance[a] + counts[a] {
                for ib in first_instance[b]..first_instance[b] + counts[b] {
                    inst_edges.push((ia, ib, kind));
                }
            }
        }
        if instance_graph(
            &instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            &inst_edges,
        )
        .is_none()
        {
            return Err(Diagnostic::new(
                None,
                format!("run `{id}`: its step graph has a cycle"),
            ));
        }
        let edges = inst_edges
            .into_iter()
            .map(|(a, b, kind)| Edge {
                from: instances[a].id.clone(),
                to: instances[b].id.clone(),
                kind,
            })
            .collect();

        let mut files = Vec::with_capacity(texts.files.len());
        for t in &texts.files {
            let rel = self.render(t, &early)?;
            let keep_slash = if rel.ends_with('/') { "/" } else { "" };
            let path = absolute(&texts.workload_dir.join(&rel));
            self.check_file_exists(&path, &rel, t)?;
            files.push(format!("{}{keep_slash}", path.display()));
        }
        // Setup outputs, made before the first run: not there yet.
        for s in self.setup_for(group.entry, pt.mutation) {
            files.extend(s.outputs.iter().cloned());
        }
        let mut metrics = wl.metrics.clone();
        for (m, t) in metrics.iter_mut().zip(&texts.metrics_from) {
            m.from = self.render(t, &early)?;
            crate::suite::check_inside_run_dir(&m.from).map_err(|why| {
                Diagnostic::at(
                    t.span,
                    format!("in `{}`: `{}` {}", t.path, m.from, why.as_str()),
                )
            })?;
        }
        let mut hosts: Vec<String> = placement
            .iter()
            .flatten()
            .map(|&h| self.suite.inventory.hosts[h].name.clone())
            .collect();
        hosts.sort_by_key(|n| self.suite.inventory.hosts.iter().position(|h| &h.name == n));
        hosts.dedup();
        Ok(RunPlan {
            schema_version: SCHEMA_VERSION,
            id,
            suite: self.suite.name.clone(),
            workload: wl.name.clone(),
            mode: group.mode.clone(),
            variant,
            variant_params: pt.variant.iter().cloned().collect(),
            repetition: pt.repetition,
            params: (*pt.params).clone(),
            exclusive: wl.exclusive,
            dir: run_dir.display().to_string(),
            hosts,
            files,
            steps: instances,
            edges,
            metrics,
            clock_every_ms: wl.clock_every.map(|d| d.as_millis() as u64),
            timeline: wl.timeline.clone(),
            mutation,
            sources: run_sources.clone(),
            annotations: entry.annotations.clone(),
        })
    }

    /// A `files:` entry must exist when the plan is made, not fail the
    /// push of every run later. Each path is looked at once per planner.
    fn check_file_exists(
        &self,
        path: &std::path::Path,
        rel: &str,
        t: &Text,
    ) -> Result<(), Diagnostic> {
        let exists = *self
            .files_seen
            .borrow_mut()
            .entry(path.to_path_buf())
            .or_insert_with(|| path.exists());
        if exists {
            return Ok(());
        }
        Err(
            Diagnostic::at(t.span, format!("in `{}`: `{rel}` does not exist", t.path)).with_help(
                format!(
                    "`files:` are relative to the workload file's folder; looked for `{}`",
                    crate::diag::display_path(path)
                ),
            ),
        )
    }

    fn cached_edges(&self, group: usize, steps: &[Step], kept: &[bool]) -> StepEdges {
        let key = (group, kept.to_vec());
        if let Some(e) = self.edge_cache.borrow().get(&key) {
            return e.clone();
        }
        let e = Arc::new(step_edges(steps, kept));
        self.edge_cache.borrow_mut().insert(key, e.clone());
        e
    }

    fn run_id(
        &self,
        pt: &RunPoint,
        group: &crate::expand::Group,
        kept: &[bool],
        placement: &[Vec<usize>],
        (mutation, sources): (Option<&str>, &BTreeMap<String, RunSource>),
    ) -> String {
        let (workload, mode) = (&group.workload.name, &group.mode);
        let mut h = Sha256::new();
        h.update(SCHEMA_VERSION.to_le_bytes());
        h.update(group.digest);
        h.update(mode.as_bytes());
        h.update([0]);
        h.update(
            serde_json::to_string(&*pt.params)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(pt.repetition.to_le_bytes());
        for (k, hosts) in kept.iter().zip(placement) {
            h.update([u8::from(*k)]);
            for &i in hosts {
                let host = &self.suite.inventory.hosts[i];
                match host.slot {
                    // A node of an allocation: its place, not its name.
                    Some(slot) => h.update(format!("\0slot {slot}").as_bytes()),
                    None => h.update(host.name.as_bytes()),
                }
                h.update([0]);
            }
            h.update([1]);
        }
        // The code: each source's commit and uncommitted diff, the
        // mutation and its patches' content. (Absent without `sources:`,
        // so ids of suites without them are as they were.)
        for (name, src) in sources {
            h.update(format!("\0source {name}\0{}\0", src.commit).as_bytes());
            h.update(src.diff_sha256.as_deref().unwrap_or("").as_bytes());
            for p in &src.patches {
                h.update(b"\0patch ");
                h.update(p.sha256.as_bytes());
            }
        }
        if let Some(m) = mutation {
            h.update(format!("\0mutation {m}").as_bytes());
        }
        // What `setup:` hands the run: its instances' ids hash their
        // commands and code.
        for s in self.setup_for(group.entry, pt.mutation) {
            h.update(format!("\0setup {}", s.plan.id).as_bytes());
        }
        let d = h.finalize();
        let hex: String = d.iter().take(5).map(|b| format!("{b:02x}")).collect();
        format!("{workload}.{mode}.r{}-{hex}", pt.repetition)
    }

    fn render(&self, t: &Text, ctx: &Value) -> Result<String, Diagnostic> {
        if let Some(l) = &t.literal {
            return Ok(l.clone());
        }
        let name = t.template.as_deref().unwrap_or_default();
        self.templates.render(name, ctx).map_err(|e| {
            // Per-host values (`host.vars.x`) differ between hosts: say which.
            let on = ctx
                .get_attr("host")
                .and_then(|h| h.get_attr("name"))
                .ok()
                .and_then(|n| n.as_str().map(|n| format!(" on host `{n}`")))
                .unwrap_or_default();
            Diagnostic::at(t.span, format!("in `{}`{on}: {e}", t.path))
        })
    }

    fn eval_when(&self, t: &Text, ctx: &Value) -> Result<bool, Diagnostic> {
        let src = t.literal.as_deref().unwrap_or_default();
        self.templates
            .eval_bool(src, ctx)
            .map_err(|e| Diagnostic::at(t.span, format!("in `{}`: {e}", t.path)))
    }

    fn duration_ms(&self, t: &Text, ctx: &Value) -> Result<u64, Diagnostic> {
        let s = self.render(t, ctx)?;
        duration::parse(&s)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| Diagnostic::at(t.span, format!("in `{}`: {e}", t.path)))
    }

    /// A `scrape:` block, rendered and checked.
    fn scrape(
        &self,
        url: &Text,
        every: &Text,
        timeout: Option<&Text>,
        max_missed: u32,
        c: &Value,
    ) -> Result<ScrapePlan, Diagnostic> {
        let u = self.render(url, c)?;
        if !(u.starts_with("http://") || u.starts_with("https://"))
            || u.contains(char::is_whitespace)
        {
            return Err(Diagnostic::at(
                url.span,
                format!("in `{}`: `{u}` is not an http:// or https:// URL", url.path),
            ));
        }
        let every_ms = self.duration_ms(every, c)?;
        if every_ms < crate::suite::MIN_SCRAPE_EVERY.as_millis() as u64 {
            return Err(Diagnostic::at(
                every.span,
                format!(
                    "in `{}`: a scrape every {every_ms} ms is too often (at most every 100ms)",
                    every.path
                ),
            ));
        }
        let timeout_ms = match timeout {
            Some(t) => self.duration_ms(t, c)?.max(1),
            None => every_ms.min(10_000),
        };
        Ok(ScrapePlan {
            url: u,
            every_ms,
            timeout_ms,
            max_missed,
        })
    }

    fn instance(
        &self,
        step: &Step,
        st: &StepTexts,
        host: String,
        cwd: String,
        wl_env: &BTreeMap<String, String>,
        c: &Value,
    ) -> Result<StepInstance, Diagnostic> {
        let run = match &st.run {
            Some(RunText::Shell(t)) => Some(RunCommand::Shell(self.render(t, c)?)),
            Some(RunText::Argv(ts)) => {
                let mut v = Vec::with_capacity(ts.len());
                for t in ts {
                    v.push(self.render(t, c)?);
                }
                Some(RunCommand::Argv(v))
            }
            None => None,
        };
        let mut env = wl_env.clone();
        for (k, t) in &st.env {
            env.insert(k.clone(), self.render(t, c)?);
        }
        let ready = match &st.ready {
            Some((probe, timeout, interval)) => {
                let (log, port, cmd) =
                    match probe {
                        ProbeText::Log(t) => (Some(self.render(t, c)?), None, None),
                        ProbeText::Port(t) => {
                            let s = self.render(t, c)?;
                            let p = s.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(
                                || {
                                    Diagnostic::at(
                                        t.span,
                                        format!(
                                            "in `{}`: `{s}` is not a TCP port (1-65535)",
                                            t.path
                                        ),
                                    )
                                },
                            )?;
                            (None, Some(p), None)
                        }
                        ProbeText::Cmd(t) => (None, None, Some(self.render(t, c)?)),
                    };
                if let (Some(l), ProbeText::Log(t)) = (&log, probe)
                    && let Err(e) = regex::Regex::new(l)
                {
                    return Err(Diagnostic::at(
                        t.span,
                        format!(
                            "in `{}`: invalid regex: {}",
                            t.path,
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    ));
                }
                Some(ReadyPlan {
                    log,
                    port,
                    cmd,
                    timeout_ms: self.duration_ms(timeout, c)?,
                    interval_ms: self.duration_ms(interval, c)?,
                })
            }
            None => None,
        };
        let timeout_ms = match &st.timeout {
            Some(t) => Some(self.duration_ms(t, c)?),
            None => None,
        };
        let duration_ms = match &st.duration {
            Some(t) => Some(self.duration_ms(t, c)?),
            None => None,
        };
        let every_ms = match &st.every {
            Some(t) => {
                let ms = self.duration_ms(t, c)?;
                if ms < crate::suite::MIN_EVERY.as_millis() as u64 {
                    return Err(Diagnostic::at(
                        t.span,
                        format!(
                            "in `{}`: an incremental fetch every {ms} ms is too often (at most once a second)",
                            t.path
                        ),
                    ));
                }
                Some(ms)
            }
            None => None,
        };
        let stop = match &st.stop {
            Some((sig, grace)) => {
                let s = self.render(sig, c)?;
                let signal = normalize_signal(&s).ok_or_else(|| {
                    Diagnostic::at(sig.span, format!("in `{}`: unknown signal `{s}`", sig.path))
                })?;
                Some(StopPlan {
                    signal: signal.to_string(),
                    grace_ms: self.duration_ms(grace, c)?,
                })
            }
            None => None,
        };
        let (run, scrape) = match &st.scrape {
            Some((url, every, timeout, max_missed)) => {
                let sc = self.scrape(url, every, timeout.as_ref(), *max_missed, c)?;
                (Some(super::scrape::command(&sc)), Some(sc))
            }
            None => (run, None),
        };
        let mut paths = Vec::with_capacity(st.paths.len());
        for t in &st.paths {
            let p = self.render(t, c)?;
            check_fetch_path(&p)
                .map_err(|m| Diagnostic::at(t.span, format!("in `{}`: {m}", t.path)))?;
            paths.push(p);
        }
        Ok(StepInstance {
            id: format!("{}@{host}", step.name),
            step: step.name.clone(),
            host,
            kind: step.kind,
            cwd,
            run,
            env,
            ready,
            timeout_ms,
            duration_ms,
            every_ms,
            stop,
            scrape,
            retries: step.retries,
            allow_failure: step.allow_failure,
            continue_on_host_loss: step.continue_on_host_loss,
            paths,
            max_bytes: step.max_bytes,
            max_total_bytes: step.max_total_bytes,
            truncate: step.truncate,
        })
    }
}

/// Fetch paths are relative to the host's run dir and may not leave it.
fn check_fetch_path(p: &str) -> Result<(), String> {
    use crate::suite::OutsideRunDir as O;
    match crate::suite::check_inside_run_dir(p) {
        Ok(()) => Ok(()),
        Err(O::Empty) => Err("a fetch path is empty".into()),
        Err(O::Absolute) => Err(format!(
            "fetch path `{p}` is absolute; paths are relative to the run dir on the host"
        )),
        Err(O::Parent) => Err(format!("fetch path `{p}` leaves the run dir (`..`)")),
    }
}

fn ctx(items: &[(&'static str, Value)]) -> Value {
    let m: BTreeMap<&str, Value> = items.iter().cloned().collect();
    Value::from(m)
}

/// `hosts` in templates: role → list of hosts. With the built-in inventory
/// the single local host carries every role, so any role resolves.
#[derive(Debug)]
struct RoleMap {
    roles: BTreeMap<String, Value>,
    any: Option<Value>,
}

impl Object for RoleMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        self.roles.get(k).cloned().or_else(|| self.any.clone())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let keys: Vec<Value> = self.roles.keys().map(|k| Value::from(k.as_str())).collect();
        minijinja::value::Enumerator::Values(keys)
    }
}

/// Compiles the templates of one group. Each template gets a name of its
/// own, numbered in the order compiled; the field path (`steps.x.paths`) is
/// only for messages, since one path can hold several templates (the items
/// of a list).
struct Compiler<'c> {
    templates: &'c mut Templates,
    diags: &'c mut Diagnostics,
    prefix: String,
}

impl Compiler<'_> {
    fn text(&mut self, f: &Field, path: &str, shell: bool) -> Text {
        if !f.is_template() {
            return Text {
                literal: Some(f.text.clone()),
                template: None,
                path: path.to_string(),
                span: f.span,
            };
        }
        let name = format!(
            "{}/{}{}",
            self.prefix,
            self.templates.len(),
            if shell { SHELL_SUFFIX } else { "" }
        );
        if let Err(e) = self.templates.add(name.clone(), f.text.clone()) {
            self.diags
                .push(Diagnostic::at(f.span, format!("in `{path}`: {e}")));
        }
        Text {
            literal: None,
            template: Some(name),
            path: path.to_string(),
            span: f.span,
        }
    }

    fn step(&mut self, s: &Step) -> StepTexts {
        let p = |f: &str| format!("steps.{}.{f}", s.name);
        let on_key = if s.kind == StepKind::Fetch {
            "from"
        } else {
            "on"
        };
        let on =
            s.on.iter()
                .map(|f| self.text(f, &p(on_key), false))
                .collect();
        let when = match &s.when {
            Condition::Expr(f) => {
                if let Err(e) = self.templates.check_expression(&f.text) {
                    self.diags
                        .push(Diagnostic::at(f.span, format!("in `{}`: {e}", p("when"))));
                }
                Some(Text {
                    literal: Some(f.text.clone()),
                    template: None,
                    path: p("when"),
                    span: f.span,
                })
            }
            _ => None,
        };
        let run = match &s.run {
            Some(RunField::Shell(f)) => Some(RunText::Shell(self.text(f, &p("run"), true))),
            Some(RunField::Argv(fs)) => Some(RunText::Argv(
                fs.iter()
                    .enumerate()
                    .map(|(i, f)| self.text(f, &format!("{}[{i}]", p("run")), false))
                    .collect(),
            )),
            None => None,
        };
        let env = s
            .env
            .iter()
            .map(|(k, f)| (k.clone(), self.text(f, &p(&format!("env.{k}")), false)))
            .collect();
        let ready = s.ready.as_ref().map(|r| {
            let probe = match &r.probe {
                ReadyProbe::Log(f) => ProbeText::Log(self.text(f, &p("ready.log"), false)),
                ReadyProbe::Port(f) => ProbeText::Port(self.text(f, &p("ready.port"), false)),
                ReadyProbe::Cmd(f) => ProbeText::Cmd(self.text(f, &p("ready.cmd"), true)),
            };
            (
                probe,
                self.text(&r.timeout, &p("ready.timeout"), false),
                self.text(&r.interval, &p("ready.interval"), false),
            )
        });
        let timeout = s
            .timeout
            .as_ref()
            .map(|f| self.text(f, &p("timeout"), false));
        let duration = s
            .duration
            .as_ref()
            .map(|f| self.text(f, &p("duration"), false));
        let every = s.every.as_ref().map(|f| self.text(f, &p("every"), false));
        let stop = s.stop.as_ref().map(|st| {
            (
                self.text(&st.signal, &p("stop.signal"), false),
                self.text(&st.grace, &p("stop.grace"), false),
            )
        });
        let paths = s
            .paths
            .iter()
            .map(|f| self.text(f, &p("paths"), false))
            .collect();
        let scrape = s.scrape.as_ref().map(|sc| {
            (
                self.text(&sc.url, &p("scrape.url"), false),
                self.text(&sc.every, &p("scrape.every"), false),
                sc.timeout
                    .as_ref()
                    .map(|f| self.text(f, &p("scrape.timeout"), false)),
                sc.max_missed,
            )
        });
        StepTexts {
            on,
            when,
            run,
            env,
            ready,
            timeout,
            duration,
            every,
            stop,
            scrape,
            paths,
        }
    }
}

fn json_value(v: serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(v))
}
