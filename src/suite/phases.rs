//! Loading `setup:` and `teardown:`: steps of the invocation, not of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use super::inventory::Inventory;
use super::model::CodeSource;
use super::raw::{Command, RawPhaseStep};
use super::workload::{check_env_keys, check_inside_run_dir, check_name};
use crate::diag::{Diagnostic, Diagnostics, Span, did_you_mean, list_names};
use crate::names::NameKind;
use crate::yaml::Node;

/// Whether a step belongs to `setup:` or `teardown:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Setup,
    Teardown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Teardown => "teardown",
        }
    }
}

/// A validated `setup:` or `teardown:` step.
#[derive(Debug, Clone)]
pub struct PhaseStep {
    pub phase: Phase,
    pub name: String,
    pub span: Span,
    /// Indexes into the inventory's hosts, in inventory order.
    pub hosts: Vec<usize>,
    pub run: Command,
    /// Indexes into [`super::Suite::code`].
    pub sources: Vec<usize>,
    pub outputs: Vec<String>,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
}

/// The steps of `setup:` or `teardown:` (`node` is its map), in name order.
pub fn load_phase(
    phase: Phase,
    raw: &BTreeMap<String, RawPhaseStep>,
    node: Option<&Node>,
    inventory: Option<&Inventory>,
    code: &[CodeSource],
    diags: &mut Diagnostics,
) -> Vec<PhaseStep> {
    let mut out = Vec::new();
    let what = phase.as_str();
    for (name, step) in raw {
        let at = node
            .and_then(|n| n.get_key(name))
            .map_or(node.map_or(Span::default(), |n| n.span), |k| k.span);
        let sn = node.and_then(|n| n.get(name));
        let field = |f: &str| sn.and_then(|s| s.get(f)).map_or(at, |n| n.span);
        let before = diags.len();
        check_name(NameKind::Step, name, at, diags);
        check_env_keys(sn.and_then(|s| s.get("env")), diags);
        let hosts = match (inventory, &step.on) {
            (None, _) => Vec::new(),
            (Some(inv), Some(on)) => match inv.select(&on.to_vec()) {
                Ok(h) => h,
                Err(e) => {
                    diags.push(
                        Diagnostic::at(
                            field("on"),
                            format!("{what} step `{name}`: `on`: {}", e.message),
                        )
                        .with_help_opt(e.help),
                    );
                    Vec::new()
                }
            },
            (Some(inv), None) if inv.hosts.len() == 1 => vec![0],
            (Some(inv), None) => {
                diags.push(
                    Diagnostic::at(
                        at,
                        format!("{what} step `{name}` does not say where it runs"),
                    )
                    .with_help(format!(
                        "add `on:` with a host or role; hosts: {}",
                        list_names(inv.hosts.iter().map(|h| h.name.as_str()))
                    )),
                );
                Vec::new()
            }
        };
        if phase == Phase::Setup
            && hosts.len() > 1
            && let Some(inv) = inventory
        {
            diags.push(
                Diagnostic::at(
                    field("on"),
                    format!(
                        "setup step `{name}` runs on one host, and `on` names {}: {}",
                        hosts.len(),
                        list_names(hosts.iter().map(|&i| inv.hosts[i].name.as_str()))
                    ),
                )
                .with_help("name one host (or a role one host carries): it builds once, and its outputs go to every run"),
            );
        }
        let mut sources = Vec::new();
        let items = sn
            .and_then(|s| s.get("sources"))
            .and_then(Node::as_seq)
            .unwrap_or_default();
        for (i, s) in step.sources.iter().enumerate() {
            match code.iter().position(|c| &c.state.name == s) {
                Some(k) => sources.push(k),
                None => {
                    let names = code.iter().map(|c| c.state.name.as_str());
                    let help = did_you_mean(s, names.clone()).unwrap_or_else(|| {
                        if code.is_empty() {
                            "the suite has no `sources:`".into()
                        } else {
                            format!("sources: {}", list_names(names))
                        }
                    });
                    diags.push(
                        Diagnostic::at(
                            items.get(i).map_or(field("sources"), |n| n.span),
                            format!("{what} step `{name}`: unknown source `{s}`"),
                        )
                        .with_help(help),
                    );
                }
            }
        }
        if phase == Phase::Teardown && !step.outputs.is_empty() {
            diags.push(
                Diagnostic::at(
                    field("outputs"),
                    format!("teardown step `{name}` has `outputs`"),
                )
                .with_help("only setup steps hand files to the runs"),
            );
        }
        let outs = sn
            .and_then(|s| s.get("outputs"))
            .and_then(Node::as_seq)
            .unwrap_or_default();
        for (i, o) in step.outputs.iter().enumerate() {
            if let Err(why) = check_inside_run_dir(o) {
                diags.push(Diagnostic::at(
                    outs.get(i).map_or(field("outputs"), |n| n.span),
                    format!("{what} step `{name}`: output `{o}` {}", why.as_str()),
                ));
            }
        }
        let timeout = match &step.timeout {
            None => None,
            Some(t) => match crate::duration::parse(t) {
                Ok(d) => Some(d),
                Err(e) => {
                    diags.push(Diagnostic::at(
                        field("timeout"),
                        format!("{what} step `{name}`: `timeout`: {e}"),
                    ));
                    None
                }
            },
        };
        if diags.len() == before {
            out.push(PhaseStep {
                phase,
                name: name.clone(),
                span: at,
                hosts,
                run: step.run.clone(),
                sources,
                outputs: step.outputs.clone(),
                timeout,
                env: step.env.clone(),
            });
        }
    }
    out
}
