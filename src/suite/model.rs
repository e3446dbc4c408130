//! The validated suite: its inventory, and per workload entry the trees that
//! expansion merges (workload, defaults, overrides, modes, `--set`).

use std::collections::BTreeMap;
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
    /// The code under test (`sources:`), in name order, each with the
    /// snapshot its unpatched runs use.
    pub code: Vec<CodeSource>,
    /// The repository holding the suite file, when there is one: recorded,
    /// never part of a run id.
    pub experiment: Option<crate::sources::SourceState>,
    /// `annotations:` of the suite, then `--annotate`, as strings.
    pub annotations: BTreeMap<String, String>,
    /// The `--annotate` arguments as given.
    pub annotate_args: Vec<String>,
    /// `setup:` steps, in name order.
    pub setup: Vec<super::phases::PhaseStep>,
    /// `teardown:` steps, in name order.
    pub teardown: Vec<super::phases::PhaseStep>,
}

/// A source of `sources:` as loaded.
#[derive(Debug, Clone)]
pub struct CodeSource {
    pub state: crate::sources::SourceState,
    /// The commit plus the uncommitted diff, written out.
    pub snapshot: PathBuf,
}

/// A mutation of an entry: patches against one source. An entry with
/// mutations lists `none` (no patches) first.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub name: String,
    /// Index into [`Suite::code`].
    pub source: usize,
    pub patches: Vec<crate::sources::PatchFile>,
    /// The source with the patches applied, written out.
    pub snapshot: PathBuf,
}

/// The name of the unpatched variant of an entry with mutations.
pub const NO_MUTATION: &str = "none";

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
    /// Empty, or `none` followed by the entry's mutations in name order.
    pub mutations: Vec<Mutation>,
    /// The suite's annotations with the entry's over them.
    pub annotations: BTreeMap<String, String>,
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mutations: Vec<MutationSummary>,
}

/// What `suite.json` records of a mutation.
#[derive(Debug, Clone, Serialize)]
pub struct MutationSummary {
    pub name: String,
    pub source: String,
    pub patches: Vec<crate::sources::PatchFile>,
}

impl Entry {
    pub fn summary(&self, sources: &Sources, code: &[CodeSource]) -> EntrySummary {
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
            mutations: self
                .mutations
                .iter()
                .filter(|m| m.name != NO_MUTATION)
                .map(|m| MutationSummary {
                    name: m.name.clone(),
                    source: code
                        .get(m.source)
                        .map(|c| c.state.name.clone())
                        .unwrap_or_default(),
                    patches: m.patches.clone(),
                })
                .collect(),
        }
    }
}
