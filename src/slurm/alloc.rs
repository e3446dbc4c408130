//! Roles onto the nodes of an allocation: each role of an inventory with
//! `provider: slurm` takes nodes by a rule, in the order the roles are
//! written: a count (`coordinator: 1`: the next node not yet taken by a
//! count or a list), `rest` (every node no count or list took), `all`, or
//! a list of node indexes (`[0, 2]`, 0-based in the allocation's order).

/// How many of the allocation's nodes a role takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    Count(usize),
    Rest,
    All,
    Nodes(Vec<usize>),
}

impl Take {
    /// From the YAML value of `roles.<role>`: a number, `rest`, `all`, or
    /// a list of numbers.
    pub fn parse(v: &serde_json::Value) -> Result<Take, String> {
        let bad = || {
            format!(
                "`{v}` is not a node rule: a count (`1`), `rest`, `all`, or a list of node indexes (`[0, 2]`)"
            )
        };
        match v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .map(Take::Count)
                .ok_or_else(bad),
            serde_json::Value::String(s) if s == "rest" => Ok(Take::Rest),
            serde_json::Value::String(s) if s == "all" => Ok(Take::All),
            serde_json::Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect::<Option<Vec<usize>>>()
                .map(Take::Nodes)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// The roles of each node (in `nodes` order) under `rules` (in the order
/// written); `Err` says why the allocation does not fit them.
pub fn assign(nodes: &[String], rules: &[(String, Take)]) -> Result<Vec<Vec<String>>, String> {
    let mut roles: Vec<Vec<String>> = vec![Vec::new(); nodes.len()];
    let mut taken = vec![false; nodes.len()];
    // Lists first (they name their nodes), then counts in order.
    for (role, take) in rules {
        if let Take::Nodes(ix) = take {
            for &i in ix {
                if i >= nodes.len() {
                    return Err(format!(
                        "role `{role}` names node {i}, but the allocation has {} node{} (0 to {})",
                        nodes.len(),
                        if nodes.len() == 1 { "" } else { "s" },
                        nodes.len().saturating_sub(1)
                    ));
                }
                taken[i] = true;
                roles[i].push(role.clone());
            }
        }
    }
    let counted: usize = rules
        .iter()
        .map(|(_, t)| if let Take::Count(n) = t { *n } else { 0 })
        .sum();
    let free = taken.iter().filter(|t| !**t).count();
    if counted > free {
        let what: Vec<String> = rules
            .iter()
            .filter_map(|(r, t)| match t {
                Take::Count(n) => Some(format!("{r}: {n}")),
                _ => None,
            })
            .collect();
        return Err(format!(
            "the allocation has {} node{} ({free} not named by index); the roles need {counted} ({})",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            what.join(", ")
        ));
    }
    for (role, take) in rules {
        if let Take::Count(n) = take {
            let mut left = *n;
            for i in 0..nodes.len() {
                if left == 0 {
                    break;
                }
                if !taken[i] {
                    taken[i] = true;
                    roles[i].push(role.clone());
                    left -= 1;
                }
            }
        }
    }
    for (role, take) in rules {
        match take {
            Take::Rest => {
                let rest: Vec<usize> = (0..nodes.len()).filter(|&i| !taken[i]).collect();
                if rest.is_empty() {
                    return Err(format!(
                        "no node is left for role `{role}` (rest): the allocation has {} node{}, all taken by the roles before it",
                        nodes.len(),
                        if nodes.len() == 1 { "" } else { "s" }
                    ));
                }
                for i in rest {
                    roles[i].push(role.clone());
                }
            }
            Take::All => {
                for r in &mut roles {
                    r.push(role.clone());
                }
            }
            _ => {}
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn rules(r: &[(&str, Take)]) -> Vec<(String, Take)> {
        r.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
    }

    #[test]
    fn counts_take_in_order_rest_takes_the_others_all_takes_every_node() {
        let got = assign(
            &nodes(4),
            &rules(&[
                ("coordinator", Take::Count(1)),
                ("worker", Take::Rest),
                ("monitor", Take::All),
            ]),
        )
        .expect("fits");
        assert_eq!(got[0], ["coordinator", "monitor"]);
        for r in &got[1..] {
            assert_eq!(r, &["worker", "monitor"]);
        }
        let got = assign(
            &nodes(3),
            &rules(&[("server", Take::Nodes(vec![2])), ("client", Take::Count(2))]),
        )
        .expect("fits");
        assert_eq!(got, vec![vec!["client"], vec!["client"], vec!["server"]]);
    }

    #[test]
    fn an_allocation_too_small_says_what_the_roles_need() {
        let e = assign(
            &nodes(2),
            &rules(&[("a", Take::Count(2)), ("b", Take::Count(1))]),
        )
        .expect_err("too small");
        assert!(
            e.contains("has 2 nodes (2 not named by index); the roles need 3 (a: 2, b: 1)"),
            "{e}"
        );
        let e = assign(
            &nodes(1),
            &rules(&[("a", Take::Count(1)), ("b", Take::Rest)]),
        )
        .expect_err("none left");
        assert!(e.contains("no node is left for role `b`"), "{e}");
        let e = assign(&nodes(2), &rules(&[("a", Take::Nodes(vec![5]))])).expect_err("index");
        assert!(e.contains("names node 5"), "{e}");
    }

    #[test]
    fn rules_parse_from_yaml_values() {
        use serde_json::json;
        assert_eq!(Take::parse(&json!(2)), Ok(Take::Count(2)));
        assert_eq!(Take::parse(&json!("rest")), Ok(Take::Rest));
        assert_eq!(Take::parse(&json!("all")), Ok(Take::All));
        assert_eq!(Take::parse(&json!([0, 3])), Ok(Take::Nodes(vec![0, 3])));
        assert!(Take::parse(&json!(0)).is_err());
        assert!(Take::parse(&json!("some")).is_err());
        assert!(Take::parse(&json!([])).is_err());
    }
}
