//! `flow analyze --metrics-from-workloads`: the metric definitions of the
//! suite's workload files as they are now, in place of the ones the runs
//! were planned with.
//!
//! The suite is loaded and planned again from what `suite.json` records
//! (its file, hosts file, `--set`s, pinned sources), files only; each
//! stored run takes the metrics of the run that now has its workload,
//! mode, variant and repetition. The new definitions are written into the
//! runs' `plan.json` (only `metrics` changes), so the artifact says which
//! definitions gave its values, and `suite.json` lists the change under
//! `metric_changes`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::Error;
use super::plan::{invalid, plan_all, prepare};
use super::resume::{key, suite_args};
use crate::artifact::atomic_write;
use crate::plan::{PlanOptions, Planner, RunPlan};
use crate::results::StoredRun;
use crate::suite::Metric;

/// What happened to one metric name, and in how many runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// name → (what, runs), in name order.
    pub metrics: BTreeMap<String, (&'static str, usize)>,
    /// Stored runs the suite no longer has: their metrics stay.
    pub orphans: Vec<String>,
}

impl Changes {
    /// Lines for the terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.metrics.is_empty() {
            out.push_str("metrics: as the workload files define them already\n");
        }
        for (name, (what, n)) in &self.metrics {
            out.push_str(&format!(
                "metric `{name}`: {what} in {n} run{}\n",
                if *n == 1 { "" } else { "s" }
            ));
        }
        out
    }
}

/// `(added, removed, changed)` names between two definitions.
fn diff(old: &[Metric], new: &[Metric]) -> Vec<(String, &'static str)> {
    let json = |m: &Metric| serde_json::to_string(m).unwrap_or_default();
    let old: HashMap<&str, String> = old.iter().map(|m| (m.name.as_str(), json(m))).collect();
    let mut out = Vec::new();
    for m in new {
        match old.get(m.name.as_str()) {
            None => out.push((m.name.clone(), "added")),
            Some(o) if *o != json(m) => out.push((m.name.clone(), "changed")),
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !new.iter().any(|m| m.name == *name) {
            out.push((name.to_string(), "removed"));
        }
    }
    out
}

/// Replaces the metrics of the runs `select` picks with the workload
/// files', writing each changed `plan.json`.
pub fn apply(
    artifact: &Path,
    runs: &mut [StoredRun],
    select: &dyn Fn(&str) -> bool,
) -> Result<Changes, Error> {
    let sj = super::status::read_suite_json(artifact)?;
    let sa = suite_args(&sj, artifact)?;
    let p = prepare(&sa)?;
    let planner = Planner::new(
        &p.suite,
        &p.expansion,
        &PlanOptions {
            artifact_dir: artifact.to_path_buf(),
        },
    )
    .map_err(|d| invalid(&d, &p.suite.sources))?;
    let mut fresh: HashMap<(String, String, String, u32), Vec<Metric>> = HashMap::new();
    plan_all(&p, &planner, |r: &RunPlan| {
        fresh.insert(key(r), r.metrics.clone());
        Ok(())
    })?;
    let mut changes = Changes::default();
    for run in runs.iter_mut().filter(|r| select(&r.plan.id)) {
        let Some(now) = fresh.get(&key(&run.plan)) else {
            changes.orphans.push(run.plan.id.clone());
            continue;
        };
        let d = diff(&run.plan.metrics, now);
        if d.is_empty() {
            continue;
        }
        for (name, what) in d {
            let e = changes.metrics.entry(name).or_insert((what, 0));
            e.1 += 1;
        }
        // Only `metrics` changes: the rest is as the run ran.
        let path = run.dir.join("plan.json");
        let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut v: Value = serde_json::from_slice(&text).map_err(|e| {
            Error::Invalid(format!("error: `{}` is not JSON: {e}\n", path.display()))
        })?;
        v["metrics"] = serde_json::to_value(now).map_err(|e| Error::Output(e.into()))?;
        let bytes = serde_json::to_vec_pretty(&v).map_err(|e| Error::Output(e.into()))?;
        atomic_write(&path, &bytes).map_err(|e| Error::io("write", &path, e))?;
        run.plan.metrics = now.clone();
    }
    if !changes.metrics.is_empty() {
        let mut sj = sj;
        let entry = serde_json::json!({
            "at": crate::artifact::utc_timestamp(std::time::SystemTime::now()),
            "metrics": changes.metrics.iter().map(|(n, (w, c))| {
                serde_json::json!({"name": n, "change": w, "runs": c})
            }).collect::<Vec<_>>(),
        });
        match sj.get_mut("metric_changes").and_then(Value::as_array_mut) {
            Some(a) => a.push(entry),
            None => sj["metric_changes"] = Value::from(vec![entry]),
        }
        let path = artifact.join("suite.json");
        let bytes = serde_json::to_vec_pretty(&sj).map_err(|e| Error::Output(e.into()))?;
        atomic_write(&path, &bytes).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::MetricSource;

    fn m(name: &str, pattern: &str) -> Metric {
        Metric {
            name: name.into(),
            from: "logs/*.out".into(),
            span: Default::default(),
            source: MetricSource::Regex {
                pattern: pattern.into(),
                all: false,
            },
            unit: None,
            better: None,
        }
    }

    #[test]
    fn metrics_are_added_removed_or_changed_by_name() {
        let old = [m("a", "x(?P<value>1)"), m("b", "y"), m("c", "z")];
        let new = [m("a", "x(?P<value>2)"), m("b", "y"), m("d", "w")];
        let mut d = diff(&old, &new);
        d.sort();
        assert_eq!(
            d,
            [
                ("a".to_string(), "changed"),
                ("c".to_string(), "removed"),
                ("d".to_string(), "added")
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }
}
