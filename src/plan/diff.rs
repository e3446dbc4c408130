//! What differs between two plans of a run, as readable paths:
//! `steps[1].run: "./w --port 9000" → "./w --port 9001"`.

use serde_json::Value;

/// At most `limit` differences between `a` and `b`, depth first, each as
/// `path: a → b` (`(none)` for a side that lacks the value).
pub fn json_diff(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk("", a, b, limit, &mut out);
    out
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 80 {
                let cut: String = s.chars().take(77).collect();
                format!("{cut}…")
            } else {
                s
            }
        }
    }
}

fn walk(path: &str, a: &Value, b: &Value, limit: usize, out: &mut Vec<String>) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => walk(&p, u, v, limit, out),
                    (u, v) => {
                        if out.len() < limit {
                            out.push(format!("{p}: {} → {}", show(u), show(v)));
                        }
                    }
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), u, v, limit, out);
            }
        }
        _ => out.push(format!(
            "{}: {} → {}",
            if path.is_empty() { "(plan)" } else { path },
            show(Some(a)),
            show(Some(b))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_named_by_path() {
        let a = json!({"params": {"n": 5}, "steps": [{"run": "a"}, {"run": "b"}], "x": 1});
        let b = json!({"params": {"n": 6}, "steps": [{"run": "a"}, {"run": "c"}], "y": 1});
        assert_eq!(
            json_diff(&a, &b, 10),
            [
                "params.n: 5 → 6",
                "steps[1].run: \"b\" → \"c\"",
                "x: 1 → (none)",
                "y: (none) → 1"
            ]
        );
        assert_eq!(json_diff(&a, &b, 1).len(), 1);
        assert!(json_diff(&a, &a, 10).is_empty());
    }
}
