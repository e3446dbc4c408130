//! Decoding a [`Node`] tree into typed `Raw*` shapes with serde, keeping spans.
//!
//! serde stops at the first error, but a user wants every mistake of a file at
//! once. [`decode`] therefore recovers: after an error it removes the offending
//! entry from a scratch copy of the tree and decodes again, until the shape
//! decodes or nothing more can be removed. "Missing field" errors caused by
//! its own removals are not reported.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::node::{Key, Node, NodeKind};
use crate::diag::{Diagnostic, Diagnostics, Span, did_you_mean, list_names};

/// An error raised while decoding a node, with the span it belongs to.
#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    pub span: Option<Span>,
    pub help: Option<String>,
    /// For "missing field" errors: the field's name.
    pub missing: Option<String>,
}

impl DeError {
    fn or_span(mut self, span: Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    pub fn into_diagnostic(self) -> Diagnostic {
        Diagnostic::new(self.span, self.message).with_help_opt(self.help)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            span: None,
            help: None,
            missing: None,
        }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "expected {}, found {}",
            expected_text(exp),
            describe(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid value {}: expected {exp}",
            describe(&unexp)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format_args!("unknown field `{field}`"));
        e.help = did_you_mean(field, expected.iter().copied()).or_else(|| {
            Some(format!(
                "expected one of {}",
                list_names(expected.iter().copied())
            ))
        });
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut e = Self::custom(format_args!("unknown value `{variant}`"));
        e.help = did_you_mean(variant, expected.iter().copied()).or_else(|| {
            Some(format!(
                "expected one of {}",
                list_names(expected.iter().copied())
            ))
        });
        e
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::custom(format_args!("missing field `{field}`"));
        e.missing = Some(field.to_string());
        e
    }
}

/// serde names integer types by their Rust names; users read YAML.
fn expected_text(exp: &dyn de::Expected) -> String {
    let s = exp.to_string();
    match s.as_str() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        _ => s,
    }
}

fn describe(unexp: &de::Unexpected) -> String {
    match unexp {
        de::Unexpected::Unit => "null".into(),
        de::Unexpected::Map => "a mapping".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Str(s) => format!("string \"{s}\""),
        other => other.to_string(),
    }
}

/// Decodes `node` into `T`, pushing every error found into `diags`.
/// Returns `None` if the node had any error.
pub fn decode<T: DeserializeOwned>(node: &Node, diags: &mut Diagnostics) -> Option<T> {
    match T::deserialize(NodeDe(node)) {
        Ok(v) => Some(v),
        Err(first) => {
            recover::<T>(node, first, diags);
            None
        }
    }
}

/// Like [`decode`], but after errors also returns what did decode: the
/// value of the tree with the offending entries removed, and that tree, so
/// later checks can report their errors in the same pass.
pub fn decode_partial<T: DeserializeOwned>(
    node: &Node,
    diags: &mut Diagnostics,
) -> Option<(T, Node)> {
    match T::deserialize(NodeDe(node)) {
        Ok(v) => Some((v, node.clone())),
        Err(first) => recover::<T>(node, first, diags),
    }
}

/// Decodes without error recovery: the first error only.
pub fn decode_one<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node))
}

const MAX_RECOVERIES: usize = 200;

fn recover<T: DeserializeOwned>(
    node: &Node,
    first: DeError,
    diags: &mut Diagnostics,
) -> Option<(T, Node)> {
    let mut scratch = node.clone();
    // (mapping span, field) pairs removed by us: their "missing field" errors are ours.
    let mut removed: Vec<(Span, String)> = Vec::new();
    let mut err = first;
    for _ in 0..MAX_RECOVERIES {
        let span = err.span.unwrap_or(scratch.span);
        let ours = err
            .missing
            .as_ref()
            .is_some_and(|f| removed.iter().any(|(s, name)| *s == span && name == f));
        if !ours {
            diags.push(err.clone().into_diagnostic());
        }
        if span == scratch.span {
            return None;
        }
        removed.push(scratch.remove_at(span)?);
        match T::deserialize(NodeDe(&scratch)) {
            Ok(v) => return Some((v, scratch)),
            Err(next) => err = next,
        }
    }
    None
}

/// A serde deserializer over a borrowed [`Node`].
#[derive(Clone, Copy)]
pub struct NodeDe<'a>(pub &'a Node);

impl<'a> NodeDe<'a> {
    fn span(&self) -> Span {
        self.0.span
    }
}

macro_rules! forward_to_any {
    ($($m:ident)*) => {
        $(fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            self.deserialize_any(v)
        })*
    };
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let span = self.span();
        let r = match &self.0.kind {
            NodeKind::Null => v.visit_unit(),
            NodeKind::Bool(b) => v.visit_bool(*b),
            NodeKind::Int(i) => v.visit_i64(*i),
            NodeKind::Float(f) => v.visit_f64(*f),
            NodeKind::Str(s) => v.visit_str(s),
            NodeKind::Seq(items) => v.visit_seq(Seq {
                items: items.iter(),
            }),
            NodeKind::Map(entries) => v.visit_map(Map {
                entries: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.or_span(span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let span = self.span();
        match self.0.kind {
            NodeKind::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
        .map_err(|e| e.or_span(span))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // Scalars are accepted where a string is expected: `port: 9000` in an
        // `env:` map is the string "9000", as a shell would see it.
        let span = self.span();
        match &self.0.kind {
            NodeKind::Bool(b) => v.visit_string(b.to_string()),
            NodeKind::Int(i) => v.visit_string(i.to_string()),
            NodeKind::Float(f) => v.visit_string(f.to_string()),
            _ => return self.deserialize_any(v),
        }
        .map_err(|e: DeError| e.or_span(span))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_string(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let span = self.span();
        v.visit_newtype_struct(self).map_err(|e| e.or_span(span))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let span = self.span();
        match &self.0.kind {
            NodeKind::Str(s) => v.visit_enum(UnitEnum { name: s, span }),
            NodeKind::Map(m) if m.len() == 1 => v.visit_enum(MapEnum {
                key: &m[0].0,
                value: &m[0].1,
            }),
            _ => Err(<DeError as de::Error>::custom(format_args!(
                "expected a name, found {}",
                self.0.type_name()
            ))),
        }
        .map_err(|e: DeError| e.or_span(span))
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier
        deserialize_ignored_any deserialize_i128 deserialize_u128
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let span = self.span();
        match &self.0.kind {
            NodeKind::Map(_) => self.deserialize_any(v),
            // An empty value (`worker:` with nothing after it) is an empty mapping.
            NodeKind::Null => v
                .visit_map(Map {
                    entries: [].iter(),
                    value: None,
                })
                .map_err(|e| e.or_span(span)),
            _ => Err(DeError {
                message: format!("expected a mapping, found {}", self.0.type_name()),
                span: Some(span),
                help: None,
                missing: None,
            }),
        }
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de, 'a> SeqAccess<'de> for Seq<'a> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(n) => seed.deserialize(NodeDe(n)).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de, 'a> MapAccess<'de> for Map<'a> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                let de: de::value::StrDeserializer<'_, DeError> =
                    k.name.as_str().into_deserializer();
                seed.deserialize(de)
                    .map(Some)
                    .map_err(|e| e.or_span(k.span))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(v) => seed.deserialize(NodeDe(v)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct UnitEnum<'a> {
    name: &'a str,
    span: Span,
}

impl<'de, 'a> EnumAccess<'de> for UnitEnum<'a> {
    type Error = DeError;
    type Variant = UnitOnly;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitOnly), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> = self.name.into_deserializer();
        let v = seed.deserialize(de).map_err(|e| e.or_span(self.span))?;
        Ok((v, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> VariantAccess<'de> for UnitOnly {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(de::Error::custom("expected a mapping with one key"))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _v: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom("expected a mapping with one key"))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, DeError> {
        Err(de::Error::custom("expected a mapping with one key"))
    }
}

struct MapEnum<'a> {
    key: &'a Key,
    value: &'a Node,
}

impl<'de, 'a> EnumAccess<'de> for MapEnum<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> =
            self.key.name.as_str().into_deserializer();
        let v = seed.deserialize(de).map_err(|e| e.or_span(self.key.span))?;
        Ok((v, NodeDe(self.value)))
    }
}

impl<'de, 'a> VariantAccess<'de> for NodeDe<'a> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Step {
        run: String,
        #[serde(default)]
        retries: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        steps: std::collections::BTreeMap<String, Step>,
    }

    fn errors(yaml: &str) -> Vec<(u32, u32, String)> {
        let node = parse(yaml, 0).expect("parses");
        let mut d = Diagnostics::new();
        let r: Option<Doc> = decode(&node, &mut d);
        assert!(r.is_none() || d.is_empty());
        d.finish();
        d.iter()
            .map(|x| {
                let s = x.span.unwrap_or_default();
                (s.line, s.col, x.message.clone())
            })
            .collect()
    }

    #[test]
    fn decodes_valid_documents() {
        let node = parse("name: x\nsteps:\n  a: {run: echo, retries: 2}\n", 0).expect("parses");
        let doc: Doc = decode_one(&node).expect("decodes");
        assert_eq!(doc.steps["a"].retries, 2);
    }

    #[test]
    fn collects_every_error_with_its_location() {
        let e = errors(
            "name: x\nsteps:\n  a: {run: echo, retrys: 2}\n  b: {run: [1], retries: x}\nextra: 1\n",
        );
        assert_eq!(
            e,
            vec![
                (3, 18, "unknown field `retrys`".to_string()),
                (4, 12, "expected a string, found a list".to_string()),
                (
                    4,
                    26,
                    "expected a whole number, found string \"x\"".to_string()
                ),
                (5, 1, "unknown field `extra`".to_string()),
            ]
        );
    }

    #[test]
    fn missing_fields_are_reported_at_their_mapping() {
        let e = errors("steps: {}\n");
        assert_eq!(e, vec![(1, 1, "missing field `name`".to_string())]);
    }
}

#[cfg(test)]
mod no_panic {
    use crate::diag::Diagnostics;
    use crate::suite::Workload;
    use crate::suite::raw::{RawInventory, RawSuite};
    use crate::yaml::{decode, parse};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Loaders return errors, never panic, whatever the bytes.
        #[test]
        fn loaders_never_panic(text in "[ -~\n\t:{}\\[\\],'\"#&*!|>-]{0,200}") {
            if let Ok(node) = parse(&text, 0) {
                let mut d = Diagnostics::new();
                let _ = Workload::from_node(&node, &mut d);
                let _: Option<RawSuite> = decode(&node, &mut d);
                let _: Option<RawInventory> = decode(&node, &mut d);
            }
        }

        /// The same for inputs shaped like workloads, with random values.
        #[test]
        fn workload_shaped_inputs_never_panic(
            kind in "(task|service|monitor|fetch|analyze|x)",
            field in "(run|ready|needs|on|timeout|stop|paths|when|env)",
            value in "[ -~]{0,30}",
        ) {
            let text = format!("workload: w\nsteps:\n  s:\n    kind: {kind}\n    {field}: {value}\n");
            if let Ok(node) = parse(&text, 0) {
                let mut d = Diagnostics::new();
                let _ = Workload::from_node(&node, &mut d);
            }
        }
    }
}
