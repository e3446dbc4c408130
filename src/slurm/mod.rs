//! Slurm: the hosts of an allocation.

pub mod alloc;
pub mod hostlist;

use std::collections::HashMap;

/// Each node's address as Slurm reaches it (`NodeAddr`), by node name, from
/// `scontrol show node`; nodes it does not name (or every node, when
/// scontrol is missing or fails: planning outside an allocation) are left
/// out, and are reached by their names.
pub fn node_addresses(nodes: &[String]) -> HashMap<String, String> {
    if nodes.is_empty() {
        return HashMap::new();
    }
    let out = std::process::Command::new("scontrol")
        .args(["-o", "show", "node", &nodes.join(",")])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nodes(&String::from_utf8_lossy(&o.stdout)),
        _ => HashMap::new(),
    }
}

/// `NodeName=… NodeAddr=…` lines of `scontrol -o show node`.
fn parse_nodes(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let field = |key: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(String::from)
            };
            Some((field("NodeName=")?, field("NodeAddr=")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_come_from_scontrol_lines() {
        let m = super::parse_nodes(
            "NodeName=node1 Arch=x86_64 CoresPerSocket=1 NodeAddr=10.1.2.3 NodeHostName=node1 Version=22.05.8\nNodeName=node2 NodeAddr=node2\ngarbage\n",
        );
        assert_eq!(m["node1"], "10.1.2.3");
        assert_eq!(m["node2"], "node2");
        assert_eq!(m.len(), 2);
    }
}
