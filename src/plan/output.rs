//! Printing plans: text for people, JSON for tools, DOT for graphviz.

use std::io::{self, Write};

use super::types::RunPlan;
use crate::duration;

/// Output formats of `flow plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Dot,
}

/// Streams plans as they are made, so memory stays flat for large suites.
pub struct PlanWriter<W: Write> {
    out: W,
    format: Format,
    count: usize,
}

impl<W: Write> PlanWriter<W> {
    /// Starts the output; `header` is the suite-level summary object for JSON.
    pub fn new(
        mut out: W,
        format: Format,
        header: &serde_json::Value,
        summary: &str,
    ) -> io::Result<Self> {
        match format {
            Format::Json => {
                // `{ ...header fields..., "runs": [` — the header without its closing brace.
                let h = serde_json::to_string(header).map_err(io::Error::other)?;
                let open = h.strip_suffix('}').unwrap_or(&h);
                let sep = if open.len() > 1 { "," } else { "" };
                write!(out, "{open}{sep}\"runs\":[")?;
            }
            Format::Text => writeln!(out, "{summary}")?,
            Format::Dot => writeln!(
                out,
                "digraph plan {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];"
            )?,
        }
        Ok(PlanWriter {
            out,
            format,
            count: 0,
        })
    }

    pub fn write(&mut self, run: &RunPlan) -> io::Result<()> {
        match self.format {
            Format::Json => {
                if self.count > 0 {
                    self.out.write_all(b",")?;
                }
                serde_json::to_writer(&mut self.out, run).map_err(io::Error::other)?;
            }
            Format::Text => write_text(&mut self.out, run, "run")?,
            Format::Dot => write_dot(&mut self.out, run, self.count)?,
        }
        self.count += 1;
        Ok(())
    }

    /// A setup or teardown instance (text only: JSON carries them in its
    /// header).
    pub fn write_phase(&mut self, plan: &RunPlan) -> io::Result<()> {
        if self.format == Format::Text {
            write_text(&mut self.out, plan, &plan.workload)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        match self.format {
            Format::Json => self.out.write_all(b"]}\n")?,
            Format::Text => {}
            Format::Dot => self.out.write_all(b"}\n")?,
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_text<W: Write>(out: &mut W, run: &RunPlan, label: &str) -> io::Result<()> {
    writeln!(out)?;
    if label == "run" {
        writeln!(
            out,
            "run {}  (mode {}, variant {}, repetition {})",
            run.id, run.mode, run.variant, run.repetition
        )?;
    } else {
        let code = match &run.mutation {
            Some(m) => format!(", mutation {m}"),
            None => String::new(),
        };
        writeln!(out, "{label} {}  (step {}{code})", run.id, run.mode)?;
    }
    let width = run.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
    for s in &run.steps {
        let what = match (&s.run, s.paths.is_empty()) {
            (Some(_), _) => s.command_display(),
            (None, false) => format!("fetch {}", s.paths.join(" ")),
            (None, true) => String::new(),
        };
        writeln!(out, "  {:<7} {:<width$}  {what}", s.kind.as_str(), s.id)?;
        let pad = " ".repeat(12 + width);
        let mut notes = Vec::new();
        if let Some(r) = &s.ready {
            let probe = match (&r.log, r.port, &r.cmd) {
                (Some(l), _, _) => format!("log /{l}/"),
                (_, Some(p), _) => format!("port {p}"),
                (_, _, Some(c)) => format!("cmd `{c}`"),
                _ => String::new(),
            };
            notes.push(format!(
                "ready when {probe} (within {})",
                duration::format(std::time::Duration::from_millis(r.timeout_ms))
            ));
        }
        if let Some(t) = s.timeout_ms {
            notes.push(format!(
                "timeout {}",
                duration::format(std::time::Duration::from_millis(t))
            ));
        }
        if s.retries > 0 {
            notes.push(format!("retries {}", s.retries));
        }
        if s.allow_failure {
            notes.push("failure allowed".into());
        }
        let after: Vec<&str> = run
            .edges
            .iter()
            .filter(|e| e.to == s.id)
            .map(|e| e.from.as_str())
            .collect();
        if !after.is_empty() {
            notes.push(format!("after {}", after.join(", ")));
        }
        for n in notes {
            writeln!(out, "{pad}{n}")?;
        }
    }
    Ok(())
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_dot<W: Write>(out: &mut W, run: &RunPlan, n: usize) -> io::Result<()> {
    writeln!(
        out,
        "  subgraph cluster_{n} {{\n    label=\"{}\";",
        dot_escape(&run.id)
    )?;
    for s in &run.steps {
        let cmd = s
            .run
            .as_ref()
            .map(|_| s.command_display())
            .unwrap_or_else(|| s.paths.join(" "));
        let short: String = cmd.chars().take(60).collect();
        writeln!(
            out,
            "    \"{}/{}\" [label=\"{} ({})\\n{}\"];",
            dot_escape(&run.id),
            dot_escape(&s.id),
            dot_escape(&s.id),
            s.kind.as_str(),
            dot_escape(&short)
        )?;
    }
    for e in &run.edges {
        let style = match e.kind {
            super::dag::EdgeKind::Needs => "solid",
            super::dag::EdgeKind::Lifecycle => "dashed",
        };
        writeln!(
            out,
            "    \"{r}/{}\" -> \"{r}/{}\" [style={style}];",
            dot_escape(&e.from),
            dot_escape(&e.to),
            r = dot_escape(&run.id)
        )?;
    }
    writeln!(out, "  }}")
}
