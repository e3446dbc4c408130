//! A YAML document as a tree whose every node remembers where it came from.
//!
//! Suites, workloads, modes and `--set` values are all merged as trees of
//! [`Node`]s before they are decoded, so an error in a merged workload still
//! points at the file, line and column the offending value was written at.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, FileId, Span};

/// A value in a YAML tree, with its source span.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

/// A mapping key: always a string in flow's formats.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in source order (matrix keys are ordered: first key outermost).
    Map(Vec<(Key, Node)>),
}

impl Node {
    pub fn new(kind: NodeKind, span: Span) -> Self {
        Node { kind, span }
    }

    pub fn null(span: Span) -> Self {
        Node::new(NodeKind::Null, span)
    }

    pub fn empty_map(span: Span) -> Self {
        Node::new(NodeKind::Map(Vec::new()), span)
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Vec<(Key, Node)>> {
        match &mut self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The key entry of `key` in a mapping (for its span).
    pub fn get_key(&self, key: &str) -> Option<&Key> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k)
    }

    /// A short description of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Deep-merges `over` onto `self`: mappings merge key by key, everything
    /// else (lists, scalars) is replaced. A `null` in `over` removes the key,
    /// which is how a mode or an override drops a step or a param.
    pub fn merge(&mut self, over: &Node) {
        match (&mut self.kind, &over.kind) {
            (NodeKind::Map(base), NodeKind::Map(top)) => {
                for (k, v) in top {
                    match base.iter().position(|(bk, _)| bk.name == k.name) {
                        Some(i) if v.is_null() => {
                            base.remove(i);
                        }
                        Some(i) => base[i].1.merge(v),
                        None if v.is_null() => {}
                        None => base.push((k.clone(), v.clone())),
                    }
                }
            }
            _ => *self = over.clone(),
        }
    }

    /// Composes two overlays into one that, merged over a base, does what
    /// merging `self` and then `over` would. Unlike [`Node::merge`], a
    /// `null` in `over` is kept (it is how an overlay removes a key from
    /// the base it is merged over later) instead of being dropped where
    /// `self` has no such key.
    pub fn compose(&mut self, over: &Node) {
        match (&mut self.kind, &over.kind) {
            (NodeKind::Map(base), NodeKind::Map(top)) => {
                for (k, v) in top {
                    match base.iter().position(|(bk, _)| bk.name == k.name) {
                        Some(i) if v.is_null() => base[i].1 = v.clone(),
                        Some(i) => base[i].1.compose(v),
                        None => base.push((k.clone(), v.clone())),
                    }
                }
            }
            _ => *self = over.clone(),
        }
    }

    /// Sets the value at a dotted `path`, creating mappings on the way.
    /// Returns an error message when the path crosses a non-mapping.
    pub fn set_path(&mut self, path: &[&str], key_span: Span, value: Node) -> Result<(), String> {
        let Some((first, rest)) = path.split_first() else {
            self.merge(&value);
            return Ok(());
        };
        let span = self.span;
        if self.is_null() {
            *self = Node::empty_map(span);
        }
        let Some(map) = self.as_map_mut() else {
            return Err(format!(
                "cannot set `{first}`: the value it belongs to is {}",
                self.type_name()
            ));
        };
        let child = match map.iter().position(|(k, _)| k.name == *first) {
            Some(i) => &mut map[i].1,
            None => {
                map.push((
                    Key {
                        name: (*first).to_string(),
                        span: key_span,
                    },
                    Node::null(key_span),
                ));
                let last = map.len() - 1;
                &mut map[last].1
            }
        };
        if rest.is_empty() {
            *child = value;
            Ok(())
        } else {
            child.set_path(rest, key_span, value)
        }
    }

    /// Removes the entry or item whose key or value has exactly `span`.
    /// Returns the span of the mapping it was removed from and the key name,
    /// or `None` if nothing matched.
    pub fn remove_at(&mut self, span: Span) -> Option<(Span, String)> {
        let parent = self.span;
        match &mut self.kind {
            NodeKind::Map(m) => {
                if let Some(i) = m.iter().position(|(k, v)| k.span == span || v.span == span) {
                    let (k, _) = m.remove(i);
                    return Some((parent, k.name));
                }
                m.iter_mut().find_map(|(_, v)| v.remove_at(span))
            }
            NodeKind::Seq(s) => {
                if let Some(i) = s.iter().position(|v| v.span == span) {
                    s.remove(i);
                    return Some((parent, i.to_string()));
                }
                s.iter_mut().find_map(|v| v.remove_at(span))
            }
            _ => None,
        }
    }

    /// Converts to a JSON value (for params and canonical hashing).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            NodeKind::Null => J::Null,
            NodeKind::Bool(b) => J::Bool(*b),
            NodeKind::Int(i) => J::from(*i),
            NodeKind::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            NodeKind::Str(s) => J::String(s.clone()),
            NodeKind::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            NodeKind::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node from a JSON value, every node carrying `span`.
    pub fn from_json(value: &serde_json::Value, span: Span) -> Node {
        use serde_json::Value as J;
        let kind = match value {
            J::Null => NodeKind::Null,
            J::Bool(b) => NodeKind::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => NodeKind::Int(i),
                None => NodeKind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => NodeKind::Str(s.clone()),
            J::Array(a) => NodeKind::Seq(a.iter().map(|v| Node::from_json(v, span)).collect()),
            J::Object(o) => NodeKind::Map(
                o.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                span,
                            },
                            Node::from_json(v, span),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(kind, span)
    }

    fn retag(&mut self, file: FileId) {
        self.span.file = file;
        match &mut self.kind {
            NodeKind::Seq(s) => s.iter_mut().for_each(|n| n.retag(file)),
            NodeKind::Map(m) => m.iter_mut().for_each(|(k, v)| {
                k.span.file = file;
                v.retag(file);
            }),
            _ => {}
        }
    }
}

impl fmt::Display for Node {
    /// Scalars print as themselves; collections as compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            NodeKind::Null => f.write_str("null"),
            NodeKind::Bool(b) => write!(f, "{b}"),
            NodeKind::Int(i) => write!(f, "{i}"),
            NodeKind::Float(x) => write!(f, "{x}"),
            NodeKind::Str(s) => f.write_str(s),
            _ => write!(f, "{}", self.to_json()),
        }
    }
}

/// Parses YAML text into a node tree whose spans point into `file`.
///
/// An empty document is an empty mapping's worth of nothing: `null`.
pub fn parse(text: &str, file: FileId) -> Result<Node, Diagnostic> {
    let start = Span {
        file,
        line: 1,
        col: 1,
        len: 1,
    };
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Node::null(start));
    }
    // YAML 1.2 booleans only: `on:`, `yes` and `no` stay strings (a step's
    // `on:` key must not turn into `true`).
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    match serde_saphyr::from_str_with_options::<Spanned<Loaded>>(text, options) {
        Ok(loaded) => {
            let mut node = into_node(loaded);
            node.retag(file);
            Ok(node)
        }
        Err(err) => Err(syntax_diagnostic(&err, text, file)),
    }
}

fn syntax_diagnostic(err: &serde_saphyr::Error, text: &str, file: FileId) -> Diagnostic {
    let plain = err.without_snippet();
    let message = clean_parser_message(&plain.to_string());
    let span = plain.location().map(|loc| Span {
        file,
        line: u32::try_from(loc.line()).unwrap_or(0),
        col: u32::try_from(loc.column()).unwrap_or(0),
        len: 1,
    });
    let span = span.filter(|s| s.line as usize <= text.lines().count().max(1));
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(',').next().unwrap_or(key).trim();
        return Diagnostic::new(span, format!("duplicate key `{key}`"))
            .with_help("a key may appear only once in a mapping; remove or rename one of them");
    }
    if let Some(breach) = message.strip_prefix("budget breached: ") {
        return Diagnostic::new(span, format!("the file is too large to read: {}", budget_phrase(breach)))
            .with_help("flow's YAML reader stops at these limits so that a runaway file cannot exhaust memory; split the file or shrink the lists in it");
    }
    if message.starts_with("multiple YAML documents") {
        return Diagnostic::new(span, "the file holds more than one YAML document")
            .with_help("flow reads one document per file: remove the `---` line and what follows it, or move that part into a file of its own");
    }
    let on_template = span
        .and_then(|s| text.lines().nth(s.line as usize - 1))
        .is_some_and(|l| l.contains("{{") || l.contains("{%"));
    let d = Diagnostic::new(span, format!("invalid YAML: {message}"));
    if on_template {
        d.with_help("YAML reads `{` as the start of a mapping: quote values that contain templates, e.g. `run: \"echo {{ params.x }}\"`")
    } else {
        d
    }
}

/// The parser's budget breach (`Nodes { nodes: 250001 }`) in words.
fn budget_phrase(breach: &str) -> &'static str {
    let kind = breach.split([' ', '{']).next().unwrap_or_default();
    match kind {
        "Nodes" => "it has more than 250,000 values (lists, maps and scalars)",
        "Events" => "it has more than 1,000,000 YAML events",
        "Depth" => "it nests deeper than 64 levels",
        "Aliases" | "Anchors" | "AliasAnchorRatio" => {
            "it uses too many aliases (`*name`) or anchors (`&name`)"
        }
        "ScalarBytes" | "InputBytes" => "it holds more than 64 MiB of text",
        "MergeKeys" => "it has more than 10,000 merge keys (`<<`)",
        _ => "it exceeds the YAML reader's limits",
    }
}

/// Strips the parser's own location suffix; flow prints the location itself.
fn clean_parser_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let cut = [" at line ", " at position "]
        .iter()
        .filter_map(|pat| first.find(pat))
        .min();
    let first = match cut {
        Some(i) => &first[..i],
        None => first,
    };
    first.trim_end_matches([',', '.', ':']).to_string()
}

fn span_of(loc: &serde_saphyr::Location, len: usize) -> Span {
    Span {
        file: 0,
        line: u32::try_from(loc.line()).unwrap_or(0),
        col: u32::try_from(loc.column()).unwrap_or(0),
        len: u32::try_from(len.max(1)).unwrap_or(1),
    }
}

fn into_node(s: Spanned<Loaded>) -> Node {
    let loc = s.referenced;
    let src_len = usize::try_from(loc.span().len()).unwrap_or(0);
    let (kind, len) = match s.value {
        Loaded::Null => (NodeKind::Null, src_len),
        Loaded::Bool(b) => (NodeKind::Bool(b), src_len),
        Loaded::Int(i) => (NodeKind::Int(i), src_len),
        Loaded::Float(f) => (NodeKind::Float(f), src_len),
        Loaded::Str(x) => {
            let n = x.chars().count();
            let len = if src_len > 0 { src_len } else { n };
            (NodeKind::Str(x), len)
        }
        Loaded::Seq(items) => (NodeKind::Seq(items.into_iter().map(into_node).collect()), 1),
        Loaded::Map(entries) => (
            NodeKind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let kspan = span_of(&k.referenced, k.value.len_hint());
                        let name = k.value.key_string();
                        (Key { name, span: kspan }, into_node(v))
                    })
                    .collect(),
            ),
            1,
        ),
    };
    Node::new(kind, span_of(&loc, len))
}

/// The shape serde-saphyr hands us; converted into [`Node`] right away.
enum Loaded {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Loaded>>),
    Map(Vec<(Spanned<Loaded>, Spanned<Loaded>)>),
}

impl Loaded {
    fn key_string(&self) -> String {
        match self {
            Loaded::Null => "null".into(),
            Loaded::Bool(b) => b.to_string(),
            Loaded::Int(i) => i.to_string(),
            Loaded::Float(f) => f.to_string(),
            Loaded::Str(s) => s.clone(),
            Loaded::Seq(_) | Loaded::Map(_) => "<complex key>".into(),
        }
    }

    fn len_hint(&self) -> usize {
        self.key_string().chars().count()
    }
}

impl<'de> Deserialize<'de> for Loaded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LoadedVisitor)
    }
}

struct LoadedVisitor;

impl<'de> Visitor<'de> for LoadedVisitor {
    type Value = Loaded;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Loaded, E> {
        Ok(Loaded::Null)
    }
    fn visit_none<E>(self) -> Result<Loaded, E> {
        Ok(Loaded::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loaded, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Loaded, E> {
        Ok(Loaded::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Loaded, E> {
        Ok(Loaded::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loaded, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Loaded::Int(i)),
            Err(_) => Ok(Loaded::Float(v as f64)),
        }
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Loaded, E> {
        i64::try_from(v)
            .map(Loaded::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Loaded, E> {
        i64::try_from(v)
            .map(Loaded::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Loaded, E> {
        Ok(Loaded::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Loaded, E> {
        Ok(Loaded::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Loaded, E> {
        Ok(Loaded::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loaded, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Loaded>>()? {
            items.push(item);
        }
        Ok(Loaded::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loaded, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Spanned<Loaded>>()? {
            let v = map.next_value::<Spanned<Loaded>>()?;
            entries.push((k, v));
        }
        Ok(Loaded::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(text, 0).expect("parses")
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let n = p("a: 1\nsteps:\n  worker:\n    run: echo hi\n");
        let k = n.get_key("steps").expect("steps");
        assert_eq!((k.span.line, k.span.col, k.span.len), (2, 1, 5));
        let run = n
            .get("steps")
            .and_then(|s| s.get("worker"))
            .and_then(|w| w.get("run"));
        let run = run.expect("run");
        assert_eq!(run.as_str(), Some("echo hi"));
        assert_eq!((run.span.line, run.span.col), (4, 10));
    }

    #[test]
    fn scalars_keep_their_types() {
        let n = p("i: 3\nf: 1.5\nb: true\ns: '3'\nz: ~\nl: [1, x]\n");
        assert_eq!(n.get("i").map(|x| &x.kind), Some(&NodeKind::Int(3)));
        assert_eq!(n.get("f").map(|x| &x.kind), Some(&NodeKind::Float(1.5)));
        assert_eq!(n.get("b").map(|x| &x.kind), Some(&NodeKind::Bool(true)));
        assert_eq!(
            n.get("s").map(|x| &x.kind),
            Some(&NodeKind::Str("3".into()))
        );
        assert_eq!(n.get("z").map(|x| &x.kind), Some(&NodeKind::Null));
        assert_eq!(
            n.get("l").and_then(Node::as_seq).map(<[Node]>::len),
            Some(2)
        );
    }

    #[test]
    fn map_order_is_source_order() {
        let n = p("z: 1\na: 2\nm: 3\n");
        let keys: Vec<_> = n
            .as_map()
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn syntax_errors_have_locations() {
        let err = parse("a: [1, 2\nb: 3\n", 0).expect_err("must fail");
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.span.is_some());
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let n = p("on: worker\nx: yes\ny: true\n");
        assert_eq!(n.get("on").and_then(Node::as_str), Some("worker"));
        assert_eq!(n.get("x").and_then(Node::as_str), Some("yes"));
        assert_eq!(n.get("y").map(|x| &x.kind), Some(&NodeKind::Bool(true)));
    }

    #[test]
    fn empty_documents_are_null() {
        assert!(p("").is_null());
        assert!(p("# only a comment\n").is_null());
    }

    #[test]
    fn merge_maps_deeply_and_replaces_lists_and_nulls_remove() {
        let mut base = p("params: {a: 1, b: [1, 2]}\nsteps: {x: {run: a}, y: {run: b}}\n");
        let over = p("params: {b: [3], c: 4}\nsteps: {x: {timeout: 1s}, y: null}\n");
        base.merge(&over);
        assert_eq!(
            base.to_json(),
            serde_json::json!({"params": {"a": 1, "b": [3], "c": 4}, "steps": {"x": {"run": "a", "timeout": "1s"}}})
        );
    }

    #[test]
    fn set_path_creates_intermediate_maps() {
        let mut base = p("params: {a: 1}\n");
        let v = Node::new(NodeKind::Int(5), Span::default());
        base.set_path(&["steps", "x", "retries"], Span::default(), v)
            .expect("sets");
        assert_eq!(
            base.to_json(),
            serde_json::json!({"params": {"a": 1}, "steps": {"x": {"retries": 5}}})
        );
        let v = Node::new(NodeKind::Int(5), Span::default());
        let err = base
            .set_path(&["params", "a", "b"], Span::default(), v)
            .expect_err("scalar");
        assert!(err.contains("an integer"), "{err}");
    }
}
