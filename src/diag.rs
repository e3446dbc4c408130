//! Diagnostics that point into source files, rendered the way a compiler does:
//! `file:line:column`, the offending line, a caret under the offending text,
//! and a hint where one helps.
//!
//! Every configuration error in flow is a [`Diagnostic`]. Loaders and
//! validators push them into a [`Diagnostics`] collection instead of returning
//! on the first one, so a user sees every problem of a suite at once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Index of a file in [`Sources`].
pub type FileId = u32;

/// A location in a source file: 1-based line and column (in characters) and
/// the length of the offending text in characters. `line == 0` means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Span {
    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// One loaded text: a YAML file, or the `--set` arguments of the command line.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as shown to the user (relative to the working directory when
    /// possible).
    pub display: String,
    /// The path used to read the file; empty for pseudo-files.
    pub path: PathBuf,
    pub text: String,
}

/// Every text flow has read in this invocation, so diagnostics can quote them.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        let display = display_path(path);
        self.add_named(display, path.to_path_buf(), text)
    }

    pub fn add_named(&mut self, display: String, path: PathBuf, text: String) -> FileId {
        self.files.push(SourceFile {
            display,
            path,
            text,
        });
        FileId::try_from(self.files.len() - 1).unwrap_or(FileId::MAX)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id as usize)
    }

    pub fn display(&self, id: FileId) -> &str {
        self.get(id).map_or("<unknown>", |f| f.display.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter()
    }
}

/// Shows `path` relative to the working directory when it lies below it.
pub fn display_path(path: &Path) -> String {
    let path = crate::paths::normalize(path);
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = path.strip_prefix(&cwd)
    {
        if rel.as_os_str().is_empty() {
            return ".".into();
        }
        return rel.display().to_string();
    }
    if path.as_os_str().is_empty() {
        return ".".into();
    }
    path.display().to_string()
}

/// One error, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub span: Option<Span>,
    pub message: String,
    /// Short text printed after the carets.
    pub label: Option<String>,
    /// A hint printed as `= help: …`.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            span: span.filter(Span::is_known),
            message: message.into(),
            label: None,
            help: None,
        }
    }

    pub fn at(span: Span, message: impl Into<String>) -> Self {
        Self::new(Some(span), message)
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Renders this diagnostic, quoting the source line when the span is known.
    pub fn render(&self, sources: &Sources) -> String {
        let mut out = format!("error: {}\n", self.message);
        if let Some(span) = self.span
            && let Some(file) = sources.get(span.file)
        {
            let line_no = span.line.to_string();
            let pad = " ".repeat(line_no.len());
            let _ = writeln!(out, "{pad}--> {}:{}:{}", file.display, span.line, span.col);
            if let Some(text) = file.text.lines().nth(span.line as usize - 1) {
                let (text, start, len) = excerpt(text.trim_end(), span);
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{line_no} | {text}");
                let _ = write!(out, "{pad} | {}{}", " ".repeat(start), "^".repeat(len));
                if let Some(label) = &self.label {
                    let _ = write!(out, " {label}");
                }
                out.push('\n');
            }
        } else if let Some(label) = &self.label {
            let _ = writeln!(out, "  = note: {label}");
        }
        if let Some(help) = &self.help {
            let pad = self.span.map_or(1, |s| s.line.to_string().len());
            let _ = writeln!(out, "{} = help: {help}", " ".repeat(pad));
        }
        out
    }
}

/// At most this many characters of a source line are quoted.
const MAX_QUOTED: usize = 100;

/// The part of `line` to quote, with the caret's start and length in it: the
/// whole line when it is short, else a window around the span with `…` on
/// the cut sides, so a 2 MB line is never printed.
fn excerpt(line: &str, span: Span) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    let n = chars.len();
    let start = (span.col as usize).saturating_sub(1).min(n);
    let len = (span.len as usize).clamp(1, (n - start).max(1));
    if n <= MAX_QUOTED {
        return (line.to_string(), start, len);
    }
    let len = len.min(MAX_QUOTED / 2);
    let from = start.saturating_sub(MAX_QUOTED / 4);
    let to = (from + MAX_QUOTED).min(n);
    let from = to.saturating_sub(MAX_QUOTED).min(from);
    let mut text = String::new();
    let mut offset = start - from;
    if from > 0 {
        text.push('…');
        offset += 1;
    }
    text.extend(&chars[from..to]);
    if to < n {
        text.push('…');
    }
    (text, offset, len)
}

/// A collection of diagnostics, reported together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Sorts by file, line and column, and drops exact repeats (the same
    /// mistake seen through several modes or runs is reported once).
    pub fn finish(&mut self) {
        self.items.sort_by(|a, b| {
            let ka = a.span.map(|s| (s.file, s.line, s.col));
            let kb = b.span.map(|s| (s.file, s.line, s.col));
            ka.cmp(&kb).then_with(|| a.message.cmp(&b.message))
        });
        self.items.dedup();
    }

    /// Renders all diagnostics followed by a one-line count.
    pub fn render(&self, sources: &Sources) -> String {
        let mut out = String::new();
        for d in &self.items {
            out.push_str(&d.render(sources));
            out.push('\n');
        }
        let n = self.items.len();
        let _ = writeln!(
            out,
            "error: {n} error{} found; nothing was run",
            if n == 1 { "" } else { "s" }
        );
        out
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// Suggests the closest of `candidates` to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Formats a list of names as "`a`, `b`, `c`".
pub fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_span() {
        let mut sources = Sources::default();
        let id = sources.add_named(
            "s.yaml".into(),
            PathBuf::new(),
            "a: 1\nrepetiton: 5\n".into(),
        );
        let d = Diagnostic::at(
            Span {
                file: id,
                line: 2,
                col: 1,
                len: 9,
            },
            "unknown field `repetiton`",
        )
        .with_label("unknown field")
        .with_help("did you mean `repetitions`?");
        assert_eq!(
            d.render(&sources),
            "error: unknown field `repetiton`\n --> s.yaml:2:1\n  |\n2 | repetiton: 5\n  | ^^^^^^^^^ unknown field\n  = help: did you mean `repetitions`?\n"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("repetiton", ["repetitions", "matrix"]),
            Some("did you mean `repetitions`?".into())
        );
        assert_eq!(did_you_mean("zzz", ["repetitions", "matrix"]), None);
    }
}
