//! Templates: minijinja, strict about undefined names, and shell-quoting every
//! interpolated value in fields that a shell will read.
//!
//! A template whose name ends in `.sh` is rendered with the `shell`
//! auto-escape: each `{{ value }}` is written as one shell word (quoted only
//! when it needs to be), so a param holding `; rm -rf /` or `$(…)` stays inert
//! text. `{{ value | safe }}` opts out for one expression.

use std::borrow::Cow;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// Suffix of template names rendered with shell quoting.
pub const SHELL_SUFFIX: &str = ".sh";

/// All templates of a plan, compiled once, rendered per run and host.
pub struct Templates {
    env: Environment<'static>,
    /// Names added so far: a name is never reused, so one template can
    /// never silently stand in for another.
    names: std::collections::HashSet<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(SHELL_SUFFIX) {
                AutoEscape::Custom("shell".into())
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::Custom(name) if name == "shell") {
                if value.is_safe() {
                    return out
                        .write_str(&value.to_string())
                        .map_err(minijinja::Error::from);
                }
                if value.is_undefined() {
                    return minijinja::escape_formatter(out, state, value);
                }
                let text = match value.as_str() {
                    Some(s) => Cow::Borrowed(s),
                    None => Cow::Owned(value.to_string()),
                };
                out.write_str(&shell_quote(&text))
                    .map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_filter("shell_quote", |s: Cow<'_, str>| {
            Value::from_safe_string(shell_quote(&s).into_owned())
        });
        env.add_filter("endpoints", endpoints);
        Templates {
            env,
            names: std::collections::HashSet::new(),
        }
    }

    /// How many templates were added.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Compiles `source` under `name`; a syntax error is returned as text.
    /// A name that was already added is refused.
    pub fn add(&mut self, name: String, source: String) -> Result<(), String> {
        if !self.names.insert(name.clone()) {
            return Err(format!("internal error: template `{name}` added twice"));
        }
        self.env
            .add_template_owned(name, source)
            .map_err(|e| describe_error(&e))
    }

    /// Renders the template `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| describe_error(&e))?;
        tmpl.render(ctx)
            .map_err(|e| self.explain_render_error(&e, tmpl.source(), ctx))
    }

    /// Evaluates a `when:` expression (with or without `{{ }}`) to a boolean.
    pub fn eval_bool(&self, expr: &str, ctx: &Value) -> Result<bool, String> {
        let inner = strip_braces(expr);
        let compiled = self
            .env
            .compile_expression(inner)
            .map_err(|e| describe_error(&e))?;
        let v = compiled
            .eval(ctx)
            .map_err(|e| self.explain_render_error(&e, inner, ctx))?;
        Ok(v.is_true())
    }

    /// Turns an "undefined value" error into one that names the expression
    /// that failed and, where it can, the closest name that exists.
    ///
    /// The error's byte range gives the failing expression (not just any
    /// name the template uses, which would blame `host.vars.sudo` for an
    /// undefined `hosts[p]` later on). Its prefixes (`hosts`, `hosts[p]`,
    /// `hosts[p][0]`, …) are evaluated in turn; the first that is undefined
    /// is the culprit, and its parent's keys make the hint.
    fn explain_render_error(&self, e: &minijinja::Error, source: &str, ctx: &Value) -> String {
        if e.kind() != minijinja::ErrorKind::UndefinedError {
            return describe_error(e);
        }
        // The range covers the failing lookup (`.vars.sudo`, `[p][0]`):
        // widen it to the start of its chain (`host.vars.sudo`).
        let expr = e
            .range()
            .filter(|r| source.is_char_boundary(r.start) && source.is_char_boundary(r.end))
            .and_then(|r| source.get(chain_start(source, r.start)..r.end))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let Some(expr) = expr else {
            return describe_error(e);
        };
        let cuts = prefix_cuts(expr);
        let mut parent: Option<(&str, Value)> = None;
        for &end in &cuts {
            let prefix = &expr[..end];
            let value = self
                .env
                .compile_expression(prefix)
                .ok()
                .and_then(|c| c.eval(ctx).ok());
            match value {
                Some(v) if !v.is_undefined() => parent = Some((prefix, v)),
                _ => {
                    let (keys, parent_name) = match &parent {
                        Some((name, v)) => (keys_of(v), format!("`{name}`")),
                        None => (keys_of(ctx), "the context".to_string()),
                    };
                    let last = last_segment(prefix);
                    let hint =
                        match crate::diag::did_you_mean(last, keys.iter().map(String::as_str)) {
                            Some(h) => format!("; {h}"),
                            None if keys.is_empty() => String::new(),
                            None => format!(
                                "; {parent_name} has {}",
                                crate::diag::list_names(keys.iter().map(String::as_str))
                            ),
                        };
                    let per_host = if prefix.starts_with("host.vars.") {
                        format!(
                            " (not every host has it: give it a default under the inventory's `defaults: {{ vars: … }}`, or test `{prefix} is defined`)"
                        )
                    } else {
                        String::new()
                    };
                    return format!("undefined value `{prefix}`{hint}{per_host}");
                }
            }
        }
        format!("undefined value in `{expr}`")
    }

    /// Checks that a `when:` expression compiles.
    pub fn check_expression(&self, expr: &str) -> Result<(), String> {
        self.env
            .compile_expression(strip_braces(expr))
            .map(|_| ())
            .map_err(|e| describe_error(&e))
    }
}

/// `{{ hosts.worker | endpoints(params.port) }}` → `a:9000,b:9000`: each
/// host's address and its `vars.port` (or `vars.<var>`), else the default.
fn endpoints(
    hosts: Value,
    default_port: Value,
    var: Option<String>,
) -> Result<String, minijinja::Error> {
    let var = var.unwrap_or_else(|| "port".into());
    let mut out = Vec::new();
    for h in hosts.try_iter()? {
        let address = h.get_attr("address")?;
        let port = h
            .get_attr("vars")
            .and_then(|v| v.get_attr(&var))
            .ok()
            .filter(|p| !p.is_undefined() && !p.is_none())
            .unwrap_or_else(|| default_port.clone());
        if port.is_undefined() {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::UndefinedError,
                format!("host {address} has no `vars.{var}` and no default port was given"),
            ));
        }
        out.push(format!("{address}:{port}"));
    }
    Ok(out.join(","))
}

fn strip_braces(expr: &str) -> &str {
    let t = expr.trim();
    t.strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .map_or(t, str::trim)
}

fn describe_error(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", kind_text(e)),
        None => kind_text(e).to_string(),
    }
}

fn kind_text(e: &minijinja::Error) -> &'static str {
    use minijinja::ErrorKind as K;
    match e.kind() {
        K::SyntaxError => "syntax error",
        K::UndefinedError => "undefined value",
        K::UnknownFilter => "unknown filter",
        K::UnknownFunction => "unknown function",
        K::UnknownTest => "unknown test",
        K::InvalidOperation => "invalid operation",
        K::MissingArgument => "missing argument",
        K::TooManyArguments => "too many arguments",
        K::BadSerialization => "bad value",
        _ => "template error",
    }
}

/// Where the lookup chain that ends at `end` starts: back over names, `.`
/// and balanced `[…]` / `(…)`.
fn chain_start(source: &str, end: usize) -> usize {
    let bytes = source.as_bytes();
    let mut i = end;
    while i > 0 {
        let c = bytes[i - 1];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            i -= 1;
        } else if c == b']' || c == b')' {
            let (open, close) = if c == b']' {
                (b'[', b']')
            } else {
                (b'(', b')')
            };
            let mut depth = 0usize;
            let mut j = i;
            while j > 0 {
                j -= 1;
                if bytes[j] == close {
                    depth += 1;
                } else if bytes[j] == open {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            if depth != 0 {
                break;
            }
            i = j;
        } else {
            break;
        }
    }
    i
}

/// Byte offsets where `expr` can be cut into ever longer prefixes that
/// are expressions themselves: before each `.` or `[` outside brackets,
/// parentheses and quotes, and at the end. A filter (`|`) or an operator
/// ends the chain: what follows is not part of the lookup.
fn prefix_cuts(expr: &str) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in expr.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' => {
                if depth == 0 && c == '[' && i > 0 {
                    cuts.push(i);
                }
                depth += 1;
            }
            ']' | ')' => depth -= 1,
            '.' if depth == 0 && i > 0 => cuts.push(i),
            c if depth == 0 && !(c.is_alphanumeric() || c == '_') => {
                cuts.push(i);
                return cuts;
            }
            _ => {}
        }
    }
    cuts.push(expr.len());
    cuts
}

/// `hosts[params.p]` → `params.p]`'s owner segment: the text after the last
/// `.` or `[`, without brackets and quotes, for "did you mean".
fn last_segment(prefix: &str) -> &str {
    let tail = prefix
        .rfind(['.', '['])
        .map_or(prefix, |i| &prefix[i + 1..]);
    tail.trim_end_matches(']').trim_matches(['\'', '"'])
}

fn keys_of(v: &Value) -> Vec<String> {
    if v.kind() != minijinja::value::ValueKind::Map {
        return Vec::new();
    }
    v.try_iter()
        .map(|it| it.filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Quotes `s` as one shell word, only when it needs quoting.
///
/// A leading `~/` stays outside the quotes so the shell still expands it.
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    fn plain(c: char) -> bool {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.' | ',' | ':' | '/' | '@' | '%' | '+' | '=')
    }
    if !s.is_empty() && s.chars().all(plain) && !s.starts_with('=') {
        return Cow::Borrowed(s);
    }
    if let Some(rest) = s.strip_prefix("~/") {
        return Cow::Owned(format!("~/{}", shell_quote(rest)));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    trait FromJson {
        fn from_serialize_json(v: serde_json::Value) -> Value;
    }
    impl FromJson for Value {
        fn from_serialize_json(v: serde_json::Value) -> Value {
            Value::from(minijinja::value::Serde(v))
        }
    }

    fn render(src: &str, ctx: Value) -> Result<String, String> {
        let mut t = Templates::new();
        t.add("t.sh".into(), src.into())?;
        t.render("t.sh", &ctx)
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("abc-1.2,x:y/z"), "abc-1.2,x:y/z");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("~/flow/runs/x y"), "~/'flow/runs/x y'");
    }

    #[test]
    fn interpolated_values_cannot_inject_shell() {
        let ctx =
            context! { params => context! { x => "; rm -rf / $(id) `id` \"q\" 'q'\nnewline" } };
        let out = render("echo {{ params.x }}", ctx).expect("renders");
        let run = std::process::Command::new("sh")
            .arg("-c")
            .arg(&out)
            .output()
            .expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "; rm -rf / $(id) `id` \"q\" 'q'\nnewline\n"
        );
    }

    #[test]
    fn safe_opts_out() {
        let ctx = context! { params => context! { x => "a b" } };
        assert_eq!(
            render("echo {{ params.x | safe }}", ctx).as_deref(),
            Ok("echo a b")
        );
    }

    #[test]
    fn undefined_names_are_errors_with_suggestions() {
        let ctx = context! { params => context! { num_events => 1 } };
        let err = render("go {{ params.num_evnts }}", ctx).expect_err("strict");
        assert_eq!(
            err,
            "undefined value `params.num_evnts`; did you mean `num_events`?"
        );
    }

    #[test]
    fn endpoints_use_host_ports_or_the_default() {
        let hosts = Value::from_serialize_json(serde_json::json!([
            {"address": "a", "vars": {"port": 9001}},
            {"address": "b", "vars": {}}
        ]));
        let ctx = context! { hosts => hosts };
        assert_eq!(
            render("--workers {{ hosts | endpoints(9000) }}", ctx).as_deref(),
            Ok("--workers a:9001,b:9000")
        );
    }

    #[test]
    fn when_expressions() {
        let t = Templates::new();
        let ctx = context! { params => context! { n => 5 } };
        assert_eq!(t.eval_bool("params.n > 3", &ctx), Ok(true));
        assert_eq!(t.eval_bool("{{ params.n > 9 }}", &ctx), Ok(false));
    }
}

#[cfg(test)]
mod quoting_properties {
    use super::*;
    use minijinja::context;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever a param holds, the shell sees exactly that one word.
        #[test]
        fn any_param_renders_inert(value in "[^\u{0}]{0,40}") {
            let mut t = Templates::new();
            t.add("p.sh".into(), "printf %s {{ params.v }}".into()).map_err(TestCaseError::fail)?;
            let cmd = t.render("p.sh", &context! { params => context! { v => value.clone() } }).map_err(TestCaseError::fail)?;
            let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(out.status.success());
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }
}
