//! The validated suite: its inventory, and per workload entry the trees that
//! expansion merges (workload, defaults, overrides, modes, `--set`).

use std::path::PathBuf;

use serde::Serialize;

use super::inventory::Inventory;
use crate::diag::{FileId, Sources, Span};
use crate::yaml::{Key, Node};

/// A loaded, validated suite, with every source text it was read from.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub file: FileId,
    pub inventory: Inventory,
    /// The suite's `defaults:` overlay.
    pub defaults: Option<Node>,
    pub entries: Vec<Entry>,
    /// The `--set` arguments as one overlay (applied last).
    pub set: Option<Node>,
    /// The `--set` arguments as given.
    pub set_args: Vec<String>,
    /// The most runs the suite may expand to (`--max-runs`).
    pub max_runs: u64,
    /// Every text read, for diagnostics and for `suite.json`.
    pub sources: Sources,
    /// Suite-level analyze steps (name order).
    pub analyze: Vec<(String, super::raw::RawSuiteAnalyze)>,
}

/// One `workloads:` entry of a suite.
#[derive(Debug, Clone)]
pub struct Entry {
    pub index: usize,
    /// Span of the entry's `workload:` value.
    pub span: Span,
    pub workload_path: PathBuf,
    /// The workload file's tree, without its `modes:`.
    pub workload: Node,
    /// The name in the workload file.
    pub workload_name: String,
    pub modes: Vec<ModeRef>,
    pub repetitions: u32,
    /// Matrix keys in file order with their values.
    pub matrix: Vec<(Key, Vec<Node>)>,
    pub exclude: Vec<Node>,
    pub include: Vec<Node>,
    pub overrides: Option<Node>,
}

/// A mode selected by an entry, with its overlay (`None` for `baseline`
/// when the workload does not define it).
#[derive(Debug, Clone)]
pub struct ModeRef {
    pub name: String,
    pub span: Span,
    pub overlay: Option<Node>,
}

/// What `suite.json` records of the suite's shape.
#[derive(Debug, Clone, Serialize)]
pub struct EntrySummary {
    pub workload: String,
    pub file: String,
    pub modes: Vec<String>,
    pub repetitions: u32,
    pub matrix: Vec<(String, Vec<serde_json::Value>)>,
}

impl Entry {
    pub fn summary(&self, sources: &Sources) -> EntrySummary {
        EntrySummary {
            workload: self.workload_name.clone(),
            file: sources.display(self.workload.span.file).to_string(),
            modes: self.modes.iter().map(|m| m.name.clone()).collect(),
            repetitions: self.repetitions,
            matrix: self
                .matrix
                .iter()
                .map(|(k, v)| (k.name.clone(), v.iter().map(Node::to_json).collect()))
                .collect(),
        }
    }
}
