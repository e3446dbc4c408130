//! What merging artifacts of one plan (CI shards) into one means, without
//! touching a file: which input holds which run, which runs of the plan
//! none holds, and when inputs may not be merged at all.
//!
//! Artifacts are of one plan when they list the same run ids, in the same
//! order, for the whole plan. A run id hashes everything a run is planned
//! from (workload, params, mode, repetition, placement), so equal lists
//! mean equal plans, whatever else differs (comments, the machine).

use std::collections::HashMap;

use serde_json::Value;

use crate::plan::Shard;

/// One artifact given to `flow merge`, from its `suite.json`.
#[derive(Debug, Clone)]
pub struct Input {
    /// As the user named it, for messages.
    pub name: String,
    pub suite: String,
    /// Every run of the plan it was selected from, in plan order.
    pub all_runs: Vec<String>,
    /// The runs it holds.
    pub runs: Vec<String>,
    /// The shards it holds: the `--shard` it ran with, or for a merged
    /// artifact those of its inputs; empty when not made of shards.
    pub shards: Vec<Shard>,
}

impl Input {
    /// From an artifact's `suite.json` (`v`).
    pub fn of_suite_json(name: &str, v: &Value) -> Input {
        let ids = |p: &str| -> Option<Vec<String>> {
            v.pointer(p).and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
        };
        let runs = ids("/expansion/runs").unwrap_or_default();
        let parse = |s: &Value| -> Option<Shard> {
            if let Some(text) = s.as_str() {
                return text.parse().ok();
            }
            Some(Shard {
                index: u32::try_from(s["index"].as_u64()?).ok()?,
                count: u32::try_from(s["count"].as_u64()?).ok()?,
            })
        };
        let mut shards: Vec<Shard> = v
            .pointer("/selection/shard")
            .and_then(parse)
            .into_iter()
            .collect();
        if let Some(from) = v.pointer("/merged/from").and_then(Value::as_array) {
            for f in from {
                match f["shard"].as_array() {
                    Some(many) => shards.extend(many.iter().filter_map(parse)),
                    None => shards.extend(parse(&f["shard"])),
                }
            }
        }
        Input {
            name: name.to_string(),
            suite: v
                .pointer("/suite/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            all_runs: ids("/selection/all_runs").unwrap_or_else(|| runs.clone()),
            runs,
            shards,
        }
    }
}

/// What a merge of inputs gives.
#[derive(Debug, PartialEq, Eq)]
pub struct Merge {
    /// The plan's runs that some input holds, in plan order, each with the
    /// index of that input.
    pub held: Vec<(String, usize)>,
    /// The plan's runs no input holds, in plan order.
    pub missing: Vec<String>,
    /// Shards of the inputs' shard count that no input is (when every
    /// input is a shard of one count).
    pub missing_shards: Vec<Shard>,
}

impl Merge {
    pub fn all_runs(&self) -> usize {
        self.held.len() + self.missing.len()
    }
}

/// Which input holds which run; refused (with the message to print) when
/// the inputs are not of one plan or a run is in more than one.
pub fn plan(inputs: &[Input]) -> Result<Merge, String> {
    let Some(first) = inputs.first() else {
        return Err("error: nothing to merge: name the artifacts of the shards\n".into());
    };
    for other in &inputs[1..] {
        if other.suite != first.suite {
            return Err(format!(
                "error: `{}` and `{}` are artifacts of different suites (`{}` and `{}`)\n  = help: merge only the shards of one suite\n",
                first.name, other.name, first.suite, other.suite
            ));
        }
        if other.all_runs != first.all_runs {
            return Err(different_plans(first, other));
        }
    }
    let mut holders: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, input) in inputs.iter().enumerate() {
        for id in &input.runs {
            holders.entry(id.as_str()).or_default().push(i);
        }
    }
    let mut twice: Vec<String> = Vec::new();
    let mut held = Vec::new();
    let mut missing = Vec::new();
    for id in &first.all_runs {
        match holders.get(id.as_str()).map(Vec::as_slice) {
            None | Some([]) => missing.push(id.clone()),
            Some([one]) => held.push((id.clone(), *one)),
            Some(many) => twice.push(format!(
                "  {id}: in {}",
                many.iter()
                    .map(|&i| format!("`{}`", inputs[i].name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    if !twice.is_empty() {
        let n = twice.len();
        let shown = twice
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let more = if n > 10 {
            format!("\n  … and {} more", n - 10)
        } else {
            String::new()
        };
        return Err(format!(
            "error: {n} run{} in more than one input:\n{shown}{more}\n  = help: each run must come from one artifact; leave out the input whose copy you do not want (`flow status ID` shows how each went)\n",
            if n == 1 { " is" } else { "s are" }
        ));
    }
    // Named only when every input is made of shards of one count.
    let counts: Vec<u32> = inputs
        .iter()
        .flat_map(|i| &i.shards)
        .map(|s| s.count)
        .collect();
    let whole_shards = inputs.iter().all(|i| !i.shards.is_empty());
    let missing_shards = match counts.first() {
        Some(&n) if whole_shards && counts.iter().all(|&c| c == n) => (1..=n)
            .filter(|k| !inputs.iter().flat_map(|i| &i.shards).any(|s| s.index == *k))
            .map(|index| Shard { index, count: n })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Merge {
        held,
        missing,
        missing_shards,
    })
}

fn different_plans(a: &Input, b: &Input) -> String {
    let in_a: std::collections::HashSet<&str> = a.all_runs.iter().map(String::as_str).collect();
    let in_b: std::collections::HashSet<&str> = b.all_runs.iter().map(String::as_str).collect();
    let only = |x: &Input, other: &std::collections::HashSet<&str>| -> String {
        let not: Vec<&String> = x
            .all_runs
            .iter()
            .filter(|i| !other.contains(i.as_str()))
            .collect();
        match not.first() {
            Some(f) => format!(
                "; {} run{} the other does not plan, first `{f}`",
                not.len(),
                if not.len() == 1 { "" } else { "s" }
            ),
            None => String::new(),
        }
    };
    let order = if in_a == in_b {
        "; the same runs in another order"
    } else {
        ""
    };
    format!(
        "error: `{}` and `{}` are not shards of one plan\n  `{}`: {} runs planned{}\n  `{}`: {} runs planned{}{order}\n  = help: shards merge when they were planned from the same suite files, `--set` values and host names; `flow plan --dry-run` lists a suite's runs\n",
        a.name,
        b.name,
        a.name,
        a.all_runs.len(),
        only(a, &in_b),
        b.name,
        b.all_runs.len(),
        only(b, &in_a),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, all: &[&str], runs: &[&str], shard: Option<(u32, u32)>) -> Input {
        Input {
            name: name.into(),
            suite: "s".into(),
            all_runs: all.iter().map(|s| s.to_string()).collect(),
            runs: runs.iter().map(|s| s.to_string()).collect(),
            shards: shard
                .map(|(index, count)| Shard { index, count })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn shards_merge_in_plan_order_and_say_what_is_missing() {
        let all = ["a", "b", "c", "d"];
        let m = plan(&[
            input("x", &all, &["d", "b"], Some((2, 3))),
            input("y", &all, &["a"], Some((1, 3))),
        ])
        .expect("merges");
        assert_eq!(
            m.held,
            vec![("a".into(), 1), ("b".into(), 0), ("d".into(), 0)]
        );
        assert_eq!(m.missing, vec!["c".to_string()]);
        assert_eq!(m.missing_shards, vec![Shard { index: 3, count: 3 }]);
        assert_eq!(m.all_runs(), 4);
    }

    #[test]
    fn a_run_in_two_inputs_is_refused_with_both_named() {
        let all = ["a", "b"];
        let e = plan(&[
            input("x", &all, &["a", "b"], None),
            input("y", &all, &["b"], None),
        ])
        .expect_err("refused");
        assert!(e.contains("1 run is in more than one input"), "{e}");
        assert!(e.contains("b: in `x`, `y`"), "{e}");
    }

    #[test]
    fn inputs_of_other_plans_or_suites_are_refused() {
        let e = plan(&[
            input("x", &["a", "b"], &["a"], None),
            input("y", &["a", "c"], &["c"], None),
        ])
        .expect_err("refused");
        assert!(e.contains("not shards of one plan"), "{e}");
        assert!(
            e.contains("1 run the other does not plan, first `b`"),
            "{e}"
        );
        let e = plan(&[
            input("x", &["a", "b"], &["a"], None),
            input("y", &["b", "a"], &["b"], None),
        ])
        .expect_err("refused");
        assert!(e.contains("the same runs in another order"), "{e}");
        let mut other = input("y", &["a"], &["a"], None);
        other.suite = "t".into();
        let e = plan(&[input("x", &["a"], &[], None), other]).expect_err("refused");
        assert!(e.contains("different suites"), "{e}");
    }

    #[test]
    fn a_merged_input_brings_its_shards() {
        let v = serde_json::json!({
            "suite": {"name": "s"},
            "expansion": {"runs": ["a"]},
            "selection": {"shard": null, "only": [], "all_runs": ["a", "b", "c"]},
            "merged": {"from": [{"shard": "1/3"}, {"shard": "3/3"}]},
        });
        let merged = Input::of_suite_json("m", &v);
        assert_eq!(merged.all_runs.len(), 3);
        let all = ["a", "b", "c"];
        let m = plan(&[merged, input("y", &all, &["b"], Some((2, 3)))]).expect("merges");
        assert!(m.missing_shards.is_empty(), "{m:?}");
        assert_eq!(m.missing, vec!["c".to_string()]);
    }

    #[test]
    fn missing_shards_are_named_only_for_one_shard_count() {
        let all = ["a", "b"];
        let m = plan(&[
            input("x", &all, &["a"], Some((1, 2))),
            input("y", &all, &["b"], None),
        ])
        .expect("merges");
        assert!(m.missing_shards.is_empty());
        assert!(m.missing.is_empty());
    }
}
