//! Expansion: a suite becomes a list of run points (workload entry × mode ×
//! variant × repetition). Pure and deterministic: nothing here reads the
//! filesystem, the network, the clock or the environment.
//!
//! Precedence, lowest first: workload file < suite `defaults` < entry
//! `overrides` < matrix point < mode < `--set`. Maps merge deeply; lists and
//! scalars replace. Only params vary between the points of one entry and
//! mode, so the merged structure is built and validated once per
//! (entry, mode) — a [`Group`] — and each point carries only its params.

use std::collections::BTreeSet;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics, did_you_mean, list_names};
use crate::suite::{Entry, Suite, Workload};
use crate::yaml::{Key, Node};

pub type Params = serde_json::Map<String, serde_json::Value>;

/// The keys that make a variant, with their values, in key order.
pub type Variant = Vec<(String, serde_json::Value)>;

/// One (workload entry, mode): the merged, validated workload.
#[derive(Debug, Clone)]
pub struct Group {
    pub entry: usize,
    pub mode: String,
    pub workload: Workload,
    /// Digest of the merged structure (everything but params).
    pub digest: [u8; 32],
}

/// One run to be planned.
#[derive(Debug, Clone)]
pub struct RunPoint {
    pub group: usize,
    /// Every param, resolved.
    pub params: Arc<Params>,
    /// The matrix keys (or include row keys) of this variant, in key order,
    /// each with the value the run has: a mode or `--set` that overrides a
    /// matrix key shows here, so the label describes what runs.
    pub variant: Arc<Variant>,
    /// 1-based.
    pub repetition: u32,
    /// Index into the entry's mutations (`none` is 0); `None` when the
    /// entry has none. The variant holds its name as key `mutation`.
    pub mutation: Option<usize>,
}

/// The variant key that holds a run's mutation.
pub const MUTATION_KEY: &str = "mutation";

impl RunPoint {
    /// `num_events=100,interval_ms=10`, or `default` without a matrix.
    pub fn variant_label(&self) -> String {
        variant_label(&self.variant)
    }
}

pub fn variant_label(variant: &[(String, serde_json::Value)]) -> String {
    if variant.is_empty() {
        return "default".into();
    }
    variant
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The whole expansion of a suite.
#[derive(Debug, Clone, Default)]
pub struct Expansion {
    pub groups: Vec<Group>,
    pub runs: Vec<RunPoint>,
    /// What the expansion did that a user may not expect (matrix points
    /// that collapsed into one): printed as warnings.
    pub notes: Vec<String>,
}

/// Expands `suite` into runs. Errors are collected and returned together.
///
/// Runs are ordered entry by entry; within an entry, repetition is the
/// outermost loop and mode the innermost, so an interrupted suite has whole
/// repetitions of every variant and mode, and modes are interleaved in time
/// (drift on the machine affects them alike).
pub fn expand(suite: &Suite) -> Result<Expansion, Diagnostics> {
    let mut diags = Diagnostics::new();
    let mut out = Expansion::default();
    // Counted before anything is materialised: a matrix of 10^9 points is
    // refused in microseconds instead of exhausting memory.
    let mut bound: u128 = 0;
    for entry in &suite.entries {
        let b = run_bound(entry);
        bound = bound.saturating_add(b);
        if b > u128::from(suite.max_runs) {
            diags.push(too_many_runs(entry, b, suite.max_runs));
        }
    }
    if diags.is_empty() && bound > u128::from(suite.max_runs) {
        diags.push(
            Diagnostic::new(
                None,
                format!(
                    "the suite expands to up to {} runs, over the limit of {}",
                    group_digits(bound),
                    group_digits(u128::from(suite.max_runs))
                ),
            )
            .with_help(
                "shrink the matrices or repetitions, or raise the limit with `--max-runs N`",
            ),
        );
    }
    if !diags.is_empty() {
        diags.finish();
        return Err(diags);
    }
    for entry in &suite.entries {
        expand_entry(suite, entry, &mut out, &mut diags);
    }
    if out.runs.is_empty() && diags.is_empty() {
        diags.push(Diagnostic::new(None, "the suite expands to no runs"));
    }
    diags.finish();
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn expand_entry(suite: &Suite, entry: &Entry, out: &mut Expansion, diags: &mut Diagnostics) {
    let before = diags.len();
    // workload < defaults < overrides: the base every mode starts from.
    let mut base = entry.workload.clone();
    for overlay in [&suite.defaults, &entry.overrides].into_iter().flatten() {
        base.merge(overlay);
    }
    // mode < --set: applied over the matrix point.
    let tails: Vec<Node> = entry
        .modes
        .iter()
        .map(|m| {
            // Composed, not merged: a `null` in either must still remove
            // its key from the base (`--set steps.x=null`).
            let mut tail = Node::empty_map(m.span);
            if let Some(o) = &m.overlay {
                tail.compose(o);
            }
            if let Some(s) = &suite.set {
                tail.compose(s);
            }
            tail
        })
        .collect();

    // Every param the workload or a mode declares: matrix, include,
    // exclude and `--set` keys must be among them.
    let mut declared: BTreeSet<String> = param_names(&base);
    for m in &entry.modes {
        if let Some(o) = &m.overlay {
            declared.extend(param_names(o));
        }
    }
    let mut first_group = None;
    for (mode, tail) in entry.modes.iter().zip(&tails) {
        let mut merged = base.clone();
        merged.merge(tail);
        if let Some(w) = Workload::from_node(&merged, diags) {
            first_group.get_or_insert(out.groups.len());
            out.groups.push(Group {
                entry: entry.index,
                mode: mode.name.clone(),
                workload: w,
                digest: structure_digest(&merged),
            });
        }
    }
    check_keys(entry, &declared, suite, diags);
    if !entry.mutations.is_empty() && declared.contains(MUTATION_KEY) {
        diags.push(
            Diagnostic::at(
                entry.span,
                format!(
                    "workload `{}` has a param named `mutation`, which is the variant key of this entry's mutations",
                    entry.workload_name
                ),
            )
            .with_help("rename the param"),
        );
    }
    if diags.len() != before {
        return;
    }
    let Some(first_group) = first_group else {
        return;
    };

    let points = points(entry, diags);
    if diags.len() != before {
        return;
    }
    if points.is_empty() {
        diags.push(
            Diagnostic::at(
                entry.span,
                format!(
                    "workload entry `{}` expands to no runs",
                    entry.workload_name
                ),
            )
            .with_help("every matrix point is excluded; loosen `exclude` or add `include` rows"),
        );
        return;
    }
    let base_params = base.get("params").map(Node::to_json);
    // params = base < point < mode/--set, shared by all repetitions.
    let mut per_point_mode: Vec<Vec<Arc<Params>>> = Vec::new();
    for point in &points {
        let mut row = Vec::new();
        for tail in &tails {
            let mut p = match &base_params {
                Some(serde_json::Value::Object(m)) => m.clone(),
                _ => Params::new(),
            };
            for (k, v) in point.iter() {
                p.insert(k.clone(), v.clone());
            }
            if let Some(serde_json::Value::Object(tp)) = tail.get("params").map(Node::to_json) {
                for (k, v) in tp {
                    merge_json(p.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            p.retain(|_, v| !v.is_null());
            row.push(Arc::new(p));
        }
        per_point_mode.push(row);
    }
    // The label of a run describes what runs: each matrix key with the value
    // the run actually has, after the mode and `--set` (which outrank the
    // matrix). Points that then resolve to the same params are one variant:
    // keep the first, and say so.
    let set_params: BTreeSet<String> = suite.set.as_ref().map(param_names).unwrap_or_default();
    let mut seen: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut variants: Vec<Vec<Option<Arc<Variant>>>> = Vec::with_capacity(points.len());
    let mut collapsed = vec![0usize; entry.modes.len()];
    for (point, row) in points.iter().zip(&per_point_mode) {
        let mut vrow = Vec::with_capacity(row.len());
        for (mi, p) in row.iter().enumerate() {
            let key = serde_json::to_string(&**p).unwrap_or_default();
            if seen.insert((mi, key)) {
                let v: Variant = point
                    .iter()
                    .map(|(k, _)| {
                        (
                            k.clone(),
                            p.get(k).cloned().unwrap_or(serde_json::Value::Null),
                        )
                    })
                    .collect();
                vrow.push(Some(Arc::new(v)));
            } else {
                collapsed[mi] += 1;
                vrow.push(None);
            }
        }
        variants.push(vrow);
    }
    for (mi, n) in collapsed.iter().enumerate().filter(|(_, n)| **n > 0) {
        let mode = &entry.modes[mi];
        let matrix_keys: Vec<&str> = entry.matrix.iter().map(|(k, _)| k.name.as_str()).collect();
        let by_set: Vec<&str> = matrix_keys
            .iter()
            .copied()
            .filter(|k| set_params.contains(*k))
            .collect();
        let cause = if by_set.is_empty() {
            format!("mode `{}` sets a matrix key", mode.name)
        } else {
            format!(
                "`--set` fixes matrix key{} {}",
                if by_set.len() == 1 { "" } else { "s" },
                list_names(by_set)
            )
        };
        let total = points.len();
        out.notes.push(format!(
            "{cause} of workload `{}`: its {total} matrix points run as {} variant{} in mode `{}`",
            entry.workload_name,
            total - n,
            if total - n == 1 { "" } else { "s" },
            mode.name,
        ));
    }
    // With mutations, each variant runs once per mutation (`none` first),
    // the mutation leading its label.
    let mutations: Vec<Option<usize>> = if entry.mutations.is_empty() {
        vec![None]
    } else {
        (0..entry.mutations.len()).map(Some).collect()
    };
    let labelled: Vec<Vec<Vec<Option<Arc<Variant>>>>> = variants
        .iter()
        .map(|row| {
            mutations
                .iter()
                .map(|m| {
                    row.iter()
                        .map(|v| {
                            let v = v.as_ref()?;
                            Some(match m {
                                None => v.clone(),
                                Some(k) => {
                                    let mut with = Vec::with_capacity(v.len() + 1);
                                    with.push((
                                        MUTATION_KEY.to_string(),
                                        serde_json::Value::String(entry.mutations[*k].name.clone()),
                                    ));
                                    with.extend(v.iter().cloned());
                                    Arc::new(with)
                                }
                            })
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    for repetition in 1..=entry.repetitions {
        for (pi, by_mutation) in labelled.iter().enumerate() {
            for (m, row) in mutations.iter().zip(by_mutation) {
                for (mi, variant) in row.iter().enumerate() {
                    let Some(variant) = variant else {
                        continue;
                    };
                    out.runs.push(RunPoint {
                        group: first_group + mi,
                        params: per_point_mode[pi][mi].clone(),
                        variant: variant.clone(),
                        repetition,
                        mutation: *m,
                    });
                }
            }
        }
    }
}

/// An upper bound of an entry's runs, without materialising anything:
/// (matrix product + include rows) × modes × repetitions. `exclude` rows are
/// not subtracted (the cap is on what would be enumerated).
fn run_bound(entry: &Entry) -> u128 {
    let product = entry
        .matrix
        .iter()
        .fold(1u128, |acc, (_, v)| acc.saturating_mul(v.len() as u128));
    product
        .saturating_add(entry.include.len() as u128)
        .saturating_mul(entry.modes.len().max(1) as u128)
        .saturating_mul(entry.mutations.len().max(1) as u128)
        .saturating_mul(u128::from(entry.repetitions))
}

fn too_many_runs(entry: &Entry, bound: u128, cap: u64) -> Diagnostic {
    let mut parts: Vec<String> = entry
        .matrix
        .iter()
        .map(|(k, v)| format!("`{}` {}", k.name, v.len()))
        .collect();
    if !entry.include.is_empty() {
        parts.push(format!("{} include rows", entry.include.len()));
    }
    parts.push(format!(
        "{} mode{}",
        entry.modes.len(),
        if entry.modes.len() == 1 { "" } else { "s" }
    ));
    parts.push(format!(
        "{} repetition{}",
        group_digits(u128::from(entry.repetitions)),
        if entry.repetitions == 1 { "" } else { "s" }
    ));
    Diagnostic::at(
        entry.span,
        format!(
            "workload entry `{}` expands to up to {} runs ({}), over the limit of {}",
            entry.workload_name,
            group_digits(bound),
            parts.join(" × "),
            group_digits(u128::from(cap))
        ),
    )
    .with_help("shrink the matrix or the repetitions, or raise the limit with `--max-runs N`")
}

/// `1000000` → `1,000,000`.
pub fn group_digits(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn param_names(node: &Node) -> BTreeSet<String> {
    node.get("params")
        .and_then(Node::as_map)
        .unwrap_or_default()
        .iter()
        .map(|(k, _)| k.name.clone())
        .collect()
}

/// Matrix, include and exclude keys, and `--set` params, must name params.
fn check_keys(entry: &Entry, declared: &BTreeSet<String>, suite: &Suite, diags: &mut Diagnostics) {
    let unknown = |k: &Key, what: &str| {
        let help =
            did_you_mean(&k.name, declared.iter().map(String::as_str)).unwrap_or_else(|| {
                if declared.is_empty() {
                    "the workload declares no params; add it under `params:` with a default".into()
                } else {
                    format!(
                        "params of `{}`: {}",
                        entry.workload_name,
                        list_names(declared.iter().map(String::as_str))
                    )
                }
            });
        Diagnostic::at(k.span, format!("{what} names unknown param `{}`", k.name)).with_help(help)
    };
    for (k, _) in &entry.matrix {
        if !declared.contains(&k.name) {
            diags.push(unknown(k, "matrix"));
        }
    }
    let matrix_keys: BTreeSet<&str> = entry.matrix.iter().map(|(k, _)| k.name.as_str()).collect();
    for row in &entry.exclude {
        for (k, _) in row.as_map().unwrap_or_default() {
            if !declared.contains(&k.name) {
                diags.push(unknown(k, "an `exclude` row"));
            } else if !matrix_keys.contains(k.name.as_str()) {
                diags.push(
                    Diagnostic::at(
                        k.span,
                        format!(
                            "an `exclude` row names `{}`, which is not a matrix key",
                            k.name
                        ),
                    )
                    .with_help("such a row can never match; exclude rows match matrix points"),
                );
            }
        }
    }
    for row in &entry.include {
        for (k, _) in row.as_map().unwrap_or_default() {
            if !declared.contains(&k.name) {
                diags.push(unknown(k, "an `include` row"));
            }
        }
    }
    if let Some(params) = suite
        .set
        .as_ref()
        .and_then(|s| s.get("params"))
        .and_then(Node::as_map)
    {
        for (k, _) in params {
            if !declared.contains(&k.name) {
                diags.push(unknown(k, "`--set`"));
            }
        }
    }
}

/// The variants of an entry: the matrix cross product (first key outermost),
/// minus rows matched by `exclude`, plus `include` rows not already present.
fn points(entry: &Entry, diags: &mut Diagnostics) -> Vec<Vec<(String, serde_json::Value)>> {
    let mut pts: Vec<Vec<(String, serde_json::Value)>> = vec![Vec::new()];
    for (k, values) in &entry.matrix {
        let json: Vec<serde_json::Value> = values.iter().map(Node::to_json).collect();
        pts = pts
            .into_iter()
            .flat_map(|p| {
                json.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push((k.name.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    let rows = |nodes: &[Node]| -> Vec<Vec<(String, serde_json::Value)>> {
        nodes
            .iter()
            .map(|r| {
                r.as_map()
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect()
            })
            .collect()
    };
    let exclude = rows(&entry.exclude);
    let matches = |p: &[(String, serde_json::Value)], row: &[(String, serde_json::Value)]| {
        row.iter()
            .all(|(k, v)| p.iter().any(|(pk, pv)| pk == k && pv == v))
    };
    for (row, node) in exclude.iter().zip(&entry.exclude) {
        if !row.is_empty() && !pts.iter().any(|p| matches(p, row)) {
            diags.push(
                Diagnostic::at(node.span, "this `exclude` row matches no matrix point")
                    .with_help("check its values against the matrix"),
            );
        }
    }
    pts.retain(|p| !exclude.iter().any(|row| !row.is_empty() && matches(p, row)));
    for row in rows(&entry.include) {
        // An include row lists the matrix keys first, in matrix order, then the rest.
        let mut ordered: Vec<(String, serde_json::Value)> = Vec::new();
        for (k, _) in &entry.matrix {
            if let Some((_, v)) = row.iter().find(|(rk, _)| *rk == k.name) {
                ordered.push((k.name.clone(), v.clone()));
            }
        }
        for (k, v) in &row {
            if !ordered.iter().any(|(ok, _)| ok == k) {
                ordered.push((k.clone(), v.clone()));
            }
        }
        if !pts.contains(&ordered) {
            pts.push(ordered);
        }
    }
    pts
}

/// Deep merge for JSON values, with the same rules as [`Node::merge`].
pub fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge_json(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A digest of everything in a merged workload except its params and
/// descriptions: part of every run id of the group.
fn structure_digest(merged: &Node) -> [u8; 32] {
    let mut json = merged.to_json();
    if let serde_json::Value::Object(m) = &mut json {
        m.remove("params");
        m.remove("description");
    }
    let mut h = Sha256::new();
    h.update(json.to_string().as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{LoadOptions, load};
    use proptest::prelude::*;

    const WORKLOAD: &str = "workload: w\nparams: {a: 0, b: 0, c: 0, x: workload}\nsteps:\n  t: {run: \"echo {{ params.x }}\"}\nmodes:\n  m1: {}\n  m2: {params: {x: mode}}\n";

    fn expand_yaml(suite: &str, workload: &str, set: &[&str]) -> Result<Expansion, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("w.yaml"), workload).map_err(|e| e.to_string())?;
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, suite).map_err(|e| e.to_string())?;
        let opts = LoadOptions {
            hosts: None,
            set: set.iter().map(|s| s.to_string()).collect(),
            max_runs: None,
            planned_nodes: None,
            ..Default::default()
        };
        let s = load(path.to_str().unwrap_or_default(), &opts).map_err(|f| f.render())?;
        expand(&s).map_err(|d| d.render(&s.sources))
    }

    fn x_of(exp: &Expansion, run: usize) -> serde_json::Value {
        exp.runs[run].params["x"].clone()
    }

    #[test]
    fn precedence_is_workload_defaults_overrides_matrix_mode_set() {
        let entry = |extra: &str| {
            format!("suite: s\n{extra}workloads:\n  - workload: w.yaml\n    modes: [m1]\n")
        };
        let layers = [
            ("", "", ""),
            ("defaults: {params: {x: defaults}}\n", "", ""),
            (
                "defaults: {params: {x: defaults}}\n",
                "    overrides: {params: {x: overrides}}\n",
                "",
            ),
            (
                "defaults: {params: {x: defaults}}\n",
                "    overrides: {params: {x: overrides}}\n",
                "    matrix: {x: [matrix]}\n",
            ),
        ];
        let expected = ["workload", "defaults", "overrides", "matrix"];
        for ((d, o, m), want) in layers.iter().zip(expected) {
            let suite = format!("{}{o}{m}", entry(d));
            let exp = expand_yaml(&suite, WORKLOAD, &[]).expect("expands");
            assert_eq!(x_of(&exp, 0), want, "{suite}");
        }
        // mode beats matrix, --set beats mode.
        let suite = "suite: s\nworkloads:\n  - workload: w.yaml\n    modes: [m2]\n    matrix: {x: [matrix]}\n";
        assert_eq!(
            x_of(&expand_yaml(suite, WORKLOAD, &[]).expect("expands"), 0),
            "mode"
        );
        assert_eq!(
            x_of(
                &expand_yaml(suite, WORKLOAD, &["x=cli"]).expect("expands"),
                0
            ),
            "cli"
        );
    }

    #[test]
    fn runs_are_ordered_repetition_then_variant_then_mode() {
        let suite = "suite: s\nworkloads:\n  - workload: w.yaml\n    modes: [m1, m2]\n    repetitions: 2\n    matrix: {a: [1, 2]}\n";
        let exp = expand_yaml(suite, WORKLOAD, &[]).expect("expands");
        let order: Vec<(u32, String, String)> = exp
            .runs
            .iter()
            .map(|r| {
                (
                    r.repetition,
                    r.variant_label(),
                    exp.groups[r.group].mode.clone(),
                )
            })
            .collect();
        assert_eq!(order.len(), 8);
        assert_eq!(order[0], (1, "a=1".into(), "m1".into()));
        assert_eq!(order[1], (1, "a=1".into(), "m2".into()));
        assert_eq!(order[2], (1, "a=2".into(), "m1".into()));
        assert_eq!(order[4], (2, "a=1".into(), "m1".into()));
    }

    #[test]
    fn a_mode_over_a_matrix_key_is_labelled_with_its_value_and_said() {
        let suite = "suite: s\nworkloads:\n  - workload: w.yaml\n    modes: [m1, m2]\n    matrix: {x: [p, q]}\n";
        let exp = expand_yaml(suite, WORKLOAD, &[]).expect("expands");
        let labels: Vec<(String, String)> = exp
            .runs
            .iter()
            .map(|r| (exp.groups[r.group].mode.clone(), r.variant_label()))
            .collect();
        assert_eq!(
            labels,
            [
                ("m1".to_string(), "x=p".to_string()),
                ("m2".to_string(), "x=mode".to_string()),
                ("m1".to_string(), "x=q".to_string()),
            ]
        );
        assert_eq!(
            exp.notes,
            [
                "mode `m2` sets a matrix key of workload `w`: its 2 matrix points run as 1 variant in mode `m2`"
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever the matrix, a `--set` value is what every run has, in
        /// its params and, for a matrix key, in its label and variant
        /// params; points it collapses run once.
        #[test]
        fn a_set_value_always_appears_in_the_label_and_params(
            a_values in proptest::collection::btree_set(0i64..20, 1..5),
            b_values in proptest::collection::btree_set(0i64..20, 1..4),
            set_key in 0usize..3,
            set_value in -5i64..30,
            reps in 1u32..3,
        ) {
            let list = |v: &std::collections::BTreeSet<i64>| {
                v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            };
            let suite = format!(
                "suite: s\nworkloads:\n  - workload: w.yaml\n    modes: [m1, m2]\n    repetitions: {reps}\n    matrix:\n      a: [{}]\n      b: [{}]\n",
                list(&a_values),
                list(&b_values)
            );
            let key = ["a", "b", "c"][set_key];
            let arg = format!("{key}={set_value}");
            let exp = expand_yaml(&suite, WORKLOAD, &[arg.as_str()]).map_err(TestCaseError::fail)?;
            let points = match key {
                "a" => b_values.len(),
                "b" => a_values.len(),
                _ => a_values.len() * b_values.len(),
            };
            prop_assert_eq!(exp.runs.len(), points * 2 * reps as usize);
            let mut ids = std::collections::BTreeSet::new();
            for r in &exp.runs {
                prop_assert_eq!(&r.params[key], &serde_json::json!(set_value));
                let label = r.variant_label();
                if key != "c" {
                    let want = format!("{key}={set_value}");
                    prop_assert!(label.split(',').any(|p| p == want), "{} lacks {}", label, want);
                    prop_assert!(r.variant.iter().any(|(k, v)| k == key && *v == serde_json::json!(set_value)));
                }
                // Each variant appears once per mode and repetition.
                prop_assert!(ids.insert((label, r.group, r.repetition)));
            }
            prop_assert_eq!(exp.notes.is_empty(), key == "c" || points == a_values.len() * b_values.len());
        }

        /// runs = (product − excluded + new includes) × modes × repetitions
        #[test]
        fn run_count_is_product_minus_excluded_plus_included(
            sizes in proptest::collection::vec(1usize..4, 1..4),
            excl in proptest::collection::vec((0usize..3, 0usize..4), 0..3),
            incl in proptest::collection::vec(0usize..6, 0..3),
            modes in 1usize..3,
            reps in 1u32..3,
        ) {
            let keys = ["a", "b", "c"];
            let mut suite = String::from("suite: s\nworkloads:\n  - workload: w.yaml\n");
            suite += &format!("    modes: [{}]\n    repetitions: {reps}\n    matrix:\n", ["m1", "m2"][..modes].join(", "));
            for (k, n) in keys.iter().zip(&sizes) {
                let vals: Vec<String> = (0..*n).map(|v| v.to_string()).collect();
                suite += &format!("      {k}: [{}]\n", vals.join(", "));
            }
            // exclude rows: one key each, only values that exist (rows must match something)
            let rows: Vec<(usize, usize)> = excl.into_iter()
                .filter(|(k, v)| *k < sizes.len() && *v < sizes[*k])
                .collect();
            if !rows.is_empty() {
                suite += "    exclude:\n";
                for (k, v) in &rows {
                    suite += &format!("      - {{ {}: {v} }}\n", keys[*k]);
                }
            }
            if !incl.is_empty() {
                suite += "    include:\n";
                for v in &incl {
                    suite += &format!("      - {{ a: {} }}\n", 10 + v);
                }
            }
            // expected, computed directly
            let mut points: Vec<Vec<usize>> = vec![vec![]];
            for n in &sizes {
                points = points.into_iter().flat_map(|p| (0..*n).map(move |v| { let mut q = p.clone(); q.push(v); q })).collect();
            }
            let kept = points.iter().filter(|p| !rows.iter().any(|(k, v)| p[*k] == *v)).count();
            let mut distinct_incl = incl.clone();
            distinct_incl.sort_unstable();
            distinct_incl.dedup();
            let expected = kept + distinct_incl.len();
            match expand_yaml(&suite, WORKLOAD, &[]) {
                Ok(exp) => prop_assert_eq!(exp.runs.len(), expected * modes * reps as usize),
                Err(e) => prop_assert!(expected == 0, "unexpected error: {}", e),
            }
        }
    }
}
