//! Slurm: the hosts of an allocation.

pub mod alloc;
pub mod batch;
pub mod hostlist;

use std::collections::HashMap;

/// The most nodes `flow run --slurm` looks at for the fewest an
/// inventory's rules fit.
pub const MAX_PLANNED_NODES: usize = 1024;
use std::path::Path;

/// Whether `--hosts P` is the allocation shorthand (`slurm` or
/// `slurm:ROLE=RULE,…`) rather than a file (a file of that name wins).
pub fn is_shorthand(p: &Path) -> bool {
    let s = p.to_string_lossy();
    (s == "slurm" || s.starts_with("slurm:")) && !p.exists()
}

/// The inventory `slurm:coordinator=1,worker=rest` stands for.
pub fn shorthand_yaml(spec: &str) -> Result<String, String> {
    let rules = spec.strip_prefix("slurm").unwrap_or(spec);
    let rules = rules.strip_prefix(':').unwrap_or(rules);
    if rules.trim().is_empty() {
        return Err(format!(
            "`--hosts {spec}`: which nodes carry which role? the allocation's nodes need a rule per role"
        ));
    }
    let mut yaml = String::from("provider: slurm\ntransport: srun\nroles:\n");
    for part in rules.split(',') {
        let Some((role, rule)) = part.split_once('=') else {
            return Err(format!("`--hosts {spec}`: `{part}` is not `role=rule`"));
        };
        let (role, rule) = (role.trim(), rule.trim());
        let plain = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !plain(role) || !plain(rule) {
            return Err(format!("`--hosts {spec}`: `{part}` is not `role=rule`"));
        }
        yaml.push_str(&format!("  {role}: {rule}\n"));
    }
    Ok(yaml)
}

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
    fn the_shorthand_stands_for_an_allocation_inventory() {
        assert_eq!(
            super::shorthand_yaml("slurm:coordinator=1,worker=rest").expect("valid"),
            "provider: slurm\ntransport: srun\nroles:\n  coordinator: 1\n  worker: rest\n"
        );
        assert!(super::shorthand_yaml("slurm").is_err());
        assert!(super::shorthand_yaml("slurm:worker").is_err());
        assert!(super::shorthand_yaml("slurm:a=1: {}").is_err());
    }

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
