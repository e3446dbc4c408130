//! `--only`: which runs a command takes.
//!
//! Each `--only` value is a glob on the run id (`'*.perf.*'`), or
//! conditions `key=glob` joined by commas, all of which must hold
//! (`mode=perf,num_events=100`). A run is taken when any `--only` value
//! holds for it. Keys are `id`, `workload`, `mode`, `variant`,
//! `repetition`, `status` (of a run in an artifact: `passed`, `failed`,
//! `interrupted`, `running` or `pending`), `mutation`, a param's name
//! (`param.NAME` reaches a param named like one of these), or an
//! annotation's (`annotation.KEY` reaches one named like a param).

use glob::Pattern;

use super::RunPlan;

/// The statuses a run in an artifact can have, for `status=`.
pub const STATUSES: [&str; 5] = ["passed", "failed", "interrupted", "running", "pending"];

const FIELDS: [&str; 7] = [
    "id",
    "workload",
    "mode",
    "variant",
    "repetition",
    "status",
    "mutation",
];

#[derive(Debug, Clone)]
enum Cond {
    Id(Pattern),
    Field { key: String, pattern: Pattern },
}

/// Parsed `--only` values: any of them, each all of its conditions.
#[derive(Debug, Clone, Default)]
pub struct Only {
    any: Vec<Vec<Cond>>,
}

impl Only {
    /// Parses `--only` values; `Err` holds one message per bad value.
    pub fn parse(values: &[String]) -> Result<Only, Vec<String>> {
        let mut any = Vec::new();
        let mut errors = Vec::new();
        for v in values {
            match parse_one(v) {
                Ok(all) => any.push(all),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Only { any })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.any.is_empty()
    }

    /// Whether some value asks for `status=` (which only an artifact has).
    pub fn needs_status(&self) -> bool {
        self.keys().any(|k| k == "status")
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.any.iter().flatten().filter_map(|c| match c {
            Cond::Field { key, .. } => Some(key.as_str()),
            Cond::Id(_) => None,
        })
    }

    /// Keys that are neither a field nor any of `params`: a typo that
    /// would otherwise select nothing, silently.
    pub fn unknown_keys<'a>(&'a self, params: &[&str]) -> Vec<&'a str> {
        let mut out: Vec<&str> = self
            .keys()
            .filter(|k| {
                let param = k
                    .strip_prefix("param.")
                    .or_else(|| k.strip_prefix("annotation."))
                    .unwrap_or(k);
                !FIELDS.contains(k) && !params.contains(&param)
            })
            .collect();
        out.dedup();
        out
    }

    /// Whether `plan` (whose status in its artifact is `status`, when
    /// known) is taken. Everything is taken when there is no `--only`.
    pub fn matches(&self, plan: &RunPlan, status: Option<&str>) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|c| holds(c, plan, status)))
    }
}

fn parse_one(v: &str) -> Result<Vec<Cond>, String> {
    let glob = |text: &str| {
        Pattern::new(text)
            .map_err(|e| format!("`--only {v}`: `{text}` is not a valid glob: {}", e.msg))
    };
    if !v.contains('=') {
        return Ok(vec![Cond::Id(glob(v)?)]);
    }
    let mut all = Vec::new();
    for part in v.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!(
                "`--only {v}`: `{part}` is not `key=value`; conditions are joined by commas, like `mode=perf,status=failed`"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`--only {v}`: a condition has no key before `=`"));
        }
        let value = value.trim();
        if key == "status" && !value.contains(['*', '?', '[']) && !STATUSES.contains(&value) {
            return Err(format!(
                "`--only {v}`: `{value}` is not a run status; one of {}",
                STATUSES
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        all.push(Cond::Field {
            key: key.to_string(),
            pattern: glob(value)?,
        });
    }
    Ok(all)
}

fn holds(c: &Cond, plan: &RunPlan, status: Option<&str>) -> bool {
    match c {
        Cond::Id(p) => p.matches(&plan.id),
        Cond::Field { key, pattern } => {
            let text = match key.as_str() {
                "id" => plan.id.clone(),
                "workload" => plan.workload.clone(),
                "mode" => plan.mode.clone(),
                "variant" => plan.variant.clone(),
                "repetition" => plan.repetition.to_string(),
                // A run of an entry without mutations runs unpatched code.
                "mutation" => plan
                    .mutation
                    .clone()
                    .unwrap_or_else(|| crate::suite::NO_MUTATION.to_string()),
                "status" => match status {
                    Some(s) => s.to_string(),
                    None => return false,
                },
                k => {
                    if let Some(note) = k.strip_prefix("annotation.") {
                        match plan.annotations.get(note) {
                            Some(s) => s.clone(),
                            None => return false,
                        }
                    } else {
                        let name = k.strip_prefix("param.").unwrap_or(k);
                        match (plan.params.get(name), plan.annotations.get(name)) {
                            (Some(serde_json::Value::String(s)), _) => s.clone(),
                            (Some(v), _) => v.to_string(),
                            (None, Some(note)) => note.clone(),
                            (None, None) => return false,
                        }
                    }
                }
            };
            pattern.matches(&text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: &str, n: i64) -> RunPlan {
        let mut params = serde_json::Map::new();
        params.insert("n".into(), n.into());
        params.insert("mode".into(), "fast".into());
        RunPlan {
            schema_version: 1,
            id: format!("w.{mode}.r1-abc"),
            suite: "s".into(),
            workload: "w".into(),
            mode: mode.into(),
            variant: format!("n={n}"),
            variant_params: params.clone(),
            repetition: 1,
            params,
            exclusive: false,
            dir: String::new(),
            hosts: Vec::new(),
            files: Vec::new(),
            steps: Vec::new(),
            edges: Vec::new(),
            metrics: Vec::new(),
            clock_every_ms: None,
            timeline: Vec::new(),
            mutation: None,
            sources: Default::default(),
            annotations: Default::default(),
        }
    }

    fn only(v: &[&str]) -> Only {
        Only::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parses")
    }

    #[test]
    fn globs_conditions_and_their_combinations() {
        let (a, b) = (plan("perf", 100), plan("baseline", 50));
        assert!(only(&[]).matches(&a, None));
        assert!(only(&["*.perf.*"]).matches(&a, None));
        assert!(!only(&["*.perf.*"]).matches(&b, None));
        let both = only(&["mode=perf,n=1*"]);
        assert!(both.matches(&a, None));
        assert!(!both.matches(&plan("perf", 50), None));
        let either = only(&["mode=baseline", "n=100"]);
        assert!(either.matches(&a, None) && either.matches(&b, None));
        // A param named like a field is reached as `param.NAME`.
        assert!(only(&["param.mode=fast"]).matches(&a, None));
        assert!(!only(&["mode=fast"]).matches(&a, None));
    }

    #[test]
    fn status_needs_an_artifact_and_a_real_status() {
        let a = plan("perf", 1);
        let failed = only(&["status=failed"]);
        assert!(failed.needs_status());
        assert!(failed.matches(&a, Some("failed")));
        assert!(!failed.matches(&a, Some("passed")));
        assert!(!failed.matches(&a, None));
        let e = Only::parse(&["status=broken".into()]).expect_err("refused");
        assert!(e[0].contains("`broken` is not a run status"), "{e:?}");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_named() {
        let e = Only::parse(&["mode=perf,oops".into(), "[".into()]).expect_err("refused");
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("`oops` is not `key=value`"), "{e:?}");
        assert!(e[1].contains("not a valid glob"), "{e:?}");
        let o = only(&["mdoe=perf", "n=1", "param.n=2"]);
        assert_eq!(o.unknown_keys(&["n"]), vec!["mdoe"]);
    }
}
