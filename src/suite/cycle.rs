//! Cycles among a workload's `needs`: found while the workload is
//! validated, spelled out in the error (`a → b → a`), and used again by the
//! planner.

use super::Step;

/// Finds a cycle among explicit `needs`, as step indices in order
/// (`[a, b]` means a needs b needs a). Unknown names are ignored.
pub fn find_cycle(steps: &[Step]) -> Option<Vec<usize>> {
    let idx = |name: &str| steps.iter().position(|s| s.name == name);
    let adj: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| s.needs.iter().filter_map(|n| idx(&n.text)).collect())
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; steps.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn dfs(
        v: usize,
        adj: &[Vec<usize>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[v] = 1;
        stack.push(v);
        for &w in &adj[v] {
            if state[w] == 1 {
                let start = stack.iter().position(|&x| x == w).unwrap_or(0);
                return Some(stack[start..].to_vec());
            }
            if state[w] == 0
                && let Some(c) = dfs(w, adj, state, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        state[v] = 2;
        None
    }
    (0..steps.len()).find_map(|v| {
        if state[v] == 0 {
            dfs(v, &adj, &mut state, &mut stack)
        } else {
            None
        }
    })
}
