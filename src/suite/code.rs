//! Loading `sources:`, `mutations:` and `annotations:`: the repositories'
//! states, their snapshots (where a patch that does not apply is found,
//! with its file and hunk), and the notes on runs.

use std::collections::BTreeMap;
use std::path::Path;

use super::model::{CodeSource, Mutation, NO_MUTATION};
use super::raw::RawMutation;
use super::workload::check_name;
use crate::diag::{Diagnostic, Diagnostics, Span, did_you_mean, display_path, list_names};
use crate::names::NameKind;
use crate::sources::{self, PatchFile, SnapshotError, SourceState};
use crate::yaml::Node;

/// A source state recorded in an artifact: a resume runs exactly it again,
/// whatever the work tree holds now.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub commit: String,
    /// The recorded uncommitted diff (empty when it was clean).
    pub diff: String,
}

/// The suite's `sources:`, read and written out, in name order.
pub fn load_sources(
    declared: &BTreeMap<String, String>,
    node: Option<&Node>,
    dir: &Path,
    pinned: &BTreeMap<String, Pinned>,
    diags: &mut Diagnostics,
) -> Vec<CodeSource> {
    let mut out = Vec::new();
    for (name, rel) in declared {
        let at = node
            .and_then(|n| n.get(name))
            .map_or(Span::default(), |n| n.span);
        let key_at = node.and_then(|n| n.get_key(name)).map_or(at, |k| k.span);
        check_name(NameKind::Step, name, key_at, diags);
        if name == sources::EXPERIMENT {
            diags.push(
                Diagnostic::at(key_at, "`experiment` names the repository holding the suite, which flow records by itself")
                    .with_help("give this source another name"),
            );
            continue;
        }
        let path = dir.join(rel);
        let mut state = match sources::capture(name, &path, false) {
            Ok(s) => s,
            Err(e) => {
                diags.push(
                    Diagnostic::at(at, format!("source `{name}`: {e}")).with_help(
                        "`sources:` name the top folders of git work trees, relative to the suite file",
                    ),
                );
                continue;
            }
        };
        if let Some(p) = pinned.get(name) {
            pin(&mut state, p);
        }
        match sources::snapshot(&state, &[]) {
            Ok(snapshot) => out.push(CodeSource { state, snapshot }),
            Err(e) => diags.push(snapshot_error(at, &state, e, &[], None)),
        }
    }
    out
}

/// Puts the recorded commit and diff in place of what the work tree holds.
fn pin(state: &mut SourceState, p: &Pinned) {
    state.commit = p.commit.clone();
    state.diff = p.diff.clone();
    state.dirty = !p.diff.is_empty();
    state.diff_sha256 = state.dirty.then(|| sources::sha256_hex(p.diff.as_bytes()));
}

fn snapshot_error(
    at: Span,
    state: &SourceState,
    e: SnapshotError,
    patches: &[(PatchFile, Span)],
    mutation: Option<&str>,
) -> Diagnostic {
    let src = format!("source `{}` at {}", state.name, state.short());
    match e {
        SnapshotError::Patch(i, why) => {
            let (p, span) = &patches[i];
            Diagnostic::at(
                *span,
                format!(
                    "mutation `{}`: patch `{}` does not apply to {src}: {why}",
                    mutation.unwrap_or_default(),
                    p.file
                ),
            )
            .with_help(if i == 0 {
                "make the patch against that commit with `git diff` (patches apply exactly, in the order listed)".to_string()
            } else {
                format!(
                    "it is applied after {}; make it against the source with those applied",
                    list_names(patches[..i].iter().map(|(p, _)| p.file.as_str()))
                )
            })
        }
        SnapshotError::Dirty(why) => Diagnostic::at(
            at,
            format!("{src}: its uncommitted changes do not apply to its commit: {why}"),
        ),
        SnapshotError::Io(why) => {
            Diagnostic::at(at, format!("{src}: could not write its snapshot: {why}"))
        }
    }
}

/// An entry's `mutations:`: `none` first, then each by name.
pub fn load_mutations(
    raw: &BTreeMap<String, RawMutation>,
    node: Option<&Node>,
    code: &[CodeSource],
    dir: &Path,
    diags: &mut Diagnostics,
) -> Vec<Mutation> {
    if raw.is_empty() {
        return Vec::new();
    }
    let entry_at = node.map_or(Span::default(), |n| n.span);
    if code.is_empty() {
        diags.push(
            Diagnostic::at(
                entry_at,
                "`mutations:` need a source to patch, and the suite has no `sources:`",
            )
            .with_help("name the repository under test: `sources: { app: ../app }`"),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, m) in raw {
        let at = node.and_then(|n| n.get(name)).map_or(entry_at, |n| n.span);
        let key_at = node.and_then(|n| n.get_key(name)).map_or(at, |k| k.span);
        if name == NO_MUTATION {
            diags.push(
                Diagnostic::at(
                    key_at,
                    "`none` is the unpatched code, which every entry with mutations runs already",
                )
                .with_help("give the mutation another name"),
            );
            continue;
        }
        check_name(NameKind::Mode, name, key_at, diags);
        let source = match m.source() {
            Some(s) => match code.iter().position(|c| c.state.name == s) {
                Some(i) => i,
                None => {
                    let names = code.iter().map(|c| c.state.name.as_str());
                    let help = did_you_mean(s, names.clone())
                        .unwrap_or_else(|| format!("sources: {}", list_names(names)));
                    let sat = node
                        .and_then(|n| n.get(name))
                        .and_then(|n| n.get("source"))
                        .map_or(at, |n| n.span);
                    diags.push(
                        Diagnostic::at(sat, format!("mutation `{name}`: unknown source `{s}`"))
                            .with_help(help),
                    );
                    continue;
                }
            },
            None if code.len() == 1 => 0,
            None => {
                diags.push(
                    Diagnostic::at(
                        at,
                        format!("mutation `{name}` does not say which source it patches"),
                    )
                    .with_help(format!(
                        "write `{name}: {{ source: {}, patches: [...] }}`",
                        code[0].state.name
                    )),
                );
                continue;
            }
        };
        let list = node
            .and_then(|n| n.get(name))
            .map(|n| n.get("patches").unwrap_or(n));
        let items = list.and_then(Node::as_seq).unwrap_or_default();
        if m.patches().is_empty() {
            diags.push(
                Diagnostic::at(at, format!("mutation `{name}` lists no patch"))
                    .with_help("list patch files made with `git diff`, relative to the suite file"),
            );
            continue;
        }
        let mut patches: Vec<(PatchFile, Span)> = Vec::new();
        let mut ok = true;
        for (i, file) in m.patches().iter().enumerate() {
            let pat = items.get(i).map_or(at, |n| n.span);
            let path = dir.join(file);
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(
                        Diagnostic::at(
                            pat,
                            format!(
                                "mutation `{name}`: cannot read patch `{file}`: {}",
                                io_reason(&e)
                            ),
                        )
                        .with_help(format!(
                            "patch files are relative to the suite file; looked for `{}`",
                            display_path(&path)
                        )),
                    );
                    ok = false;
                    continue;
                }
            };
            if let Err(why) = sources::patch::check(&text) {
                diags.push(Diagnostic::at(
                    pat,
                    format!("mutation `{name}`: patch `{file}` {why}"),
                ));
                ok = false;
                continue;
            }
            patches.push((
                PatchFile {
                    file: file.clone(),
                    sha256: sources::sha256_hex(&text),
                    path,
                    text,
                },
                pat,
            ));
        }
        if !ok {
            continue;
        }
        let plain: Vec<PatchFile> = patches.iter().map(|(p, _)| p.clone()).collect();
        match sources::snapshot(&code[source].state, &plain) {
            Ok(snapshot) => out.push(Mutation {
                name: name.clone(),
                source,
                patches: plain,
                snapshot,
            }),
            Err(e) => diags.push(snapshot_error(
                at,
                &code[source].state,
                e,
                &patches,
                Some(name),
            )),
        }
    }
    let mut all = vec![Mutation {
        name: NO_MUTATION.into(),
        source: out.first().map_or(0, |m| m.source),
        patches: Vec::new(),
        snapshot: code[out.first().map_or(0, |m| m.source)].snapshot.clone(),
    }];
    all.extend(out);
    all
}

/// `annotations:` as strings: scalars only.
pub fn load_annotations(
    node: Option<&Node>,
    base: &BTreeMap<String, String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    for (k, v) in node.and_then(Node::as_map).unwrap_or_default() {
        check_name(NameKind::Metric, &k.name, k.span, diags);
        match v.to_json() {
            serde_json::Value::String(s) => {
                out.insert(k.name.clone(), s);
            }
            x @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                out.insert(k.name.clone(), x.to_string());
            }
            serde_json::Value::Null => {
                out.remove(&k.name);
            }
            _ => diags.push(
                Diagnostic::at(
                    v.span,
                    format!("annotation `{}` is {}", k.name, v.type_name()),
                )
                .with_help("annotations are short notes: a string, a number or a boolean"),
            ),
        }
    }
    out
}

/// `--annotate KEY=VALUE` arguments over the suite's annotations.
pub fn cli_annotations(
    args: &[String],
    base: &mut BTreeMap<String, String>,
    diags: &mut Diagnostics,
) {
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if NameKind::Metric.accepts(k) => {
                base.insert(k.to_string(), v.to_string());
            }
            Some((k, _)) => diags.push(
                Diagnostic::new(
                    None,
                    format!("`--annotate {a}`: `{k}` is not a valid annotation key"),
                )
                .with_help(
                    "keys are letters, digits, `-` and `_`, starting with a letter or digit",
                ),
            ),
            None => diags.push(
                Diagnostic::new(None, format!("`--annotate {a}`: expected KEY=VALUE"))
                    .with_help("for example `--annotate purpose=lock-contention`"),
            ),
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        "it does not exist".into()
    } else {
        e.to_string()
    }
}
