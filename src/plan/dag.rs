//! The step graph of a run: explicit `needs` plus the implicit lifecycle.
//!
//! Lifecycle, as edges: services (ordered by `needs`) come first; monitors
//! start once every service is ready; tasks start once monitors run (or
//! services are ready); fetch steps run after every task, monitor and
//! service; analyze steps after every fetch. An implicit edge is left out
//! when it would close a cycle with explicit `needs` (a setup task that a
//! service needs) or when it is already implied by other edges.

use petgraph::algo::is_cyclic_directed;
use petgraph::graph::DiGraph;
use serde::Serialize;

use crate::suite::{Step, StepKind};

/// Why an edge exists.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Written by the user as `needs:`.
    Needs,
    /// Implied by the step kinds.
    Lifecycle,
}

pub use crate::suite::find_cycle;

/// Step-level edges (`from` must reach its ready/done point before `to`
/// starts) among the steps that are `kept` in a run.
pub fn step_edges(steps: &[Step], kept: &[bool]) -> Vec<(usize, usize, EdgeKind)> {
    let n = steps.len();
    let mut reach = vec![vec![false; n]; n];
    let mut edges: Vec<(usize, usize, EdgeKind)> = Vec::new();
    let add = |reach: &mut Vec<Vec<bool>>, a: usize, b: usize| {
        // everything reaching a (and a) now reaches everything b reaches (and b)
        let from: Vec<usize> = (0..n).filter(|&x| x == a || reach[x][a]).collect();
        let to: Vec<usize> = (0..n).filter(|&y| y == b || reach[b][y]).collect();
        for &x in &from {
            for &y in &to {
                reach[x][y] = true;
            }
        }
    };
    for (b, s) in steps.iter().enumerate() {
        if !kept[b] {
            continue;
        }
        for need in &s.needs {
            if let Some(a) = steps.iter().position(|x| x.name == need.text)
                && kept[a]
            {
                edges.push((a, b, EdgeKind::Needs));
                add(&mut reach, a, b);
            }
        }
    }
    let of =
        |k: StepKind| -> Vec<usize> { (0..n).filter(|&i| kept[i] && steps[i].kind == k).collect() };
    let services = of(StepKind::Service);
    let monitors = of(StepKind::Monitor);
    let tasks = of(StepKind::Task);
    let fetches = of(StepKind::Fetch);
    let analyzes = of(StepKind::Analyze);
    let running: Vec<usize> = services
        .iter()
        .chain(&monitors)
        .chain(&tasks)
        .copied()
        .collect();
    let mut phases: Vec<(&[usize], &[usize])> = vec![
        (&services, &monitors),
        (&monitors, &tasks),
        (&services, &tasks),
        (&tasks, &fetches),
        (&running, &fetches),
        (&fetches, &analyzes),
        (&tasks, &analyzes),
        (&running, &analyzes),
    ];
    // Services among themselves and tasks among themselves follow `needs` only.
    for (sources, targets) in phases.drain(..) {
        for &b in targets {
            for &a in sources {
                if a == b || reach[a][b] || reach[b][a] {
                    continue;
                }
                edges.push((a, b, EdgeKind::Lifecycle));
                add(&mut reach, a, b);
            }
        }
    }
    edges.sort_unstable();
    edges
}

/// Builds the petgraph of a run's step instances and checks it is acyclic.
pub fn instance_graph<N: Clone>(
    nodes: &[N],
    edges: &[(usize, usize, EdgeKind)],
) -> Option<DiGraph<N, EdgeKind>> {
    let mut g = DiGraph::with_capacity(nodes.len(), edges.len());
    let idx: Vec<_> = nodes.iter().map(|n| g.add_node(n.clone())).collect();
    for &(a, b, k) in edges {
        g.add_edge(idx[a], idx[b], k);
    }
    (!is_cyclic_directed(&g)).then_some(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Span;
    use crate::suite::{Condition, Field};

    fn step(name: &str, kind: StepKind, needs: &[&str]) -> Step {
        Step {
            name: name.into(),
            name_span: Span::default(),
            kind,
            description: None,
            on: vec![],
            run: None,
            needs: needs
                .iter()
                .map(|n| Field::new(*n, Span::default()))
                .collect(),
            ready: None,
            timeout: None,
            duration: None,
            every: None,
            continue_on_host_loss: false,
            stop: None,
            scrape: None,
            env: vec![],
            retries: 0,
            when: Condition::Always,
            allow_failure: false,
            paths: vec![],
            max_bytes: None,
            max_total_bytes: None,
            truncate: false,
        }
    }

    fn names(steps: &[Step], e: &[(usize, usize, EdgeKind)]) -> Vec<String> {
        e.iter()
            .map(|&(a, b, k)| format!("{}->{}:{k:?}", steps[a].name, steps[b].name))
            .collect()
    }

    #[test]
    fn cycles_are_found_in_order() {
        let steps = vec![
            step("a", StepKind::Task, &["b"]),
            step("b", StepKind::Task, &["c"]),
            step("c", StepKind::Task, &["a"]),
        ];
        assert_eq!(find_cycle(&steps), Some(vec![0, 1, 2]));
        let steps = vec![
            step("a", StepKind::Task, &[]),
            step("b", StepKind::Task, &["a"]),
        ];
        assert_eq!(find_cycle(&steps), None);
    }

    #[test]
    fn lifecycle_edges_follow_the_phases_without_redundancy() {
        let steps = vec![
            step("worker", StepKind::Service, &[]),
            step("cpu", StepKind::Monitor, &[]),
            step("go", StepKind::Task, &["worker"]),
            step("results", StepKind::Fetch, &[]),
            step("analyze", StepKind::Analyze, &[]),
        ];
        let e = step_edges(&steps, &[true; 5]);
        assert_eq!(
            names(&steps, &e),
            [
                "worker->cpu:Lifecycle",
                "worker->go:Needs",
                "cpu->go:Lifecycle",
                "go->results:Lifecycle",
                "results->analyze:Lifecycle"
            ]
        );
    }

    #[test]
    fn a_service_may_need_a_setup_task() {
        let steps = vec![
            step("setup", StepKind::Task, &[]),
            step("db", StepKind::Service, &["setup"]),
            step("bench", StepKind::Task, &[]),
        ];
        let e = step_edges(&steps, &[true; 3]);
        assert_eq!(
            names(&steps, &e),
            ["setup->db:Needs", "db->bench:Lifecycle"]
        );
    }

    #[test]
    fn dropped_steps_take_their_edges_with_them() {
        let steps = vec![
            step("warm", StepKind::Task, &[]),
            step("bench", StepKind::Task, &["warm"]),
        ];
        assert!(step_edges(&steps, &[false, true]).is_empty());
    }
}
