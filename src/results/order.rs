//! The order people read variants in: numbers by value (`num_events=50`
//! before `=100`), text by text, keys in the order the variant names them.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// A param value as a number: a JSON number, or text that reads as a
/// finite one.
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// A param value as people write it: text without quotes.
pub fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numbers by value before text; text by text.
pub fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => label(a).cmp(&label(b)),
    }
}

/// The keys of `params` in the order `variant` (`k=v,…`) names them; keys
/// it does not name last, by name.
pub fn keys_in_order<'a>(variant: &str, params: &'a Map<String, Value>) -> Vec<&'a String> {
    let mut keys: Vec<&String> = params.keys().collect();
    let at = |k: &str| {
        variant
            .split(',')
            .position(|part| part.split_once('=').is_some_and(|(name, _)| name == k))
            .unwrap_or(usize::MAX)
    };
    keys.sort_by_key(|k| (at(k), (*k).clone()));
    keys
}

/// Two variants, key by key in the first one's order, each value with
/// [`value_cmp`]; the labels break ties.
pub fn variant_cmp(
    (va, pa): (&str, &Map<String, Value>),
    (vb, pb): (&str, &Map<String, Value>),
) -> Ordering {
    for k in keys_in_order(va, pa) {
        let o = match (pa.get(k), pb.get(k)) {
            (Some(x), Some(y)) => value_cmp(x, y),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len()).then_with(|| va.cmp(vb))
}

/// Modes as reports show them: `baseline` first, then by name.
pub fn mode_rank(mode: &str) -> (bool, &str) {
    (mode != "baseline", mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn numbers_sort_by_value_and_keys_in_the_variants_order() {
        let a = params(json!({"num_events": 100, "size": "big"}));
        let b = params(json!({"num_events": 50, "size": "small"}));
        let c = params(json!({"num_events": "7", "size": "small"}));
        let mut v = [
            ("num_events=100,size=big", &a),
            ("num_events=50,size=small", &b),
            ("num_events=7,size=small", &c),
        ];
        v.sort_by(|x, y| variant_cmp(*x, *y));
        let names: Vec<&str> = v.iter().map(|x| x.0).collect();
        assert_eq!(
            names,
            [
                "num_events=7,size=small",
                "num_events=50,size=small",
                "num_events=100,size=big"
            ]
        );
        // The variant's own key order leads, not the alphabet.
        let p = params(json!({"b": 1, "a": 2}));
        assert_eq!(keys_in_order("b=1,a=2", &p), ["b", "a"]);
        assert_eq!(value_cmp(&json!("x"), &json!(3)), Ordering::Greater);
        assert_eq!(as_number(&json!("1e3")), Some(1000.0));
        assert_eq!(as_number(&json!("inf")), None);
    }
}
