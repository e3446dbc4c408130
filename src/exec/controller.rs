//! Which flow process started a step, so that a later flow can tell the
//! leftovers of a dead one (killed with `kill -9`, or its machine lost)
//! from the steps of one still running.
//!
//! Every step carries `FLOW_CONTROLLER=<machine>:<boot>:<pid>:<start>` in
//! its environment: this machine's id, its boot id, flow's pid and flow's
//! start time in clock ticks since boot (`/proc/<pid>/stat`). The pid alone
//! is not enough (pids are reused); the start time pins the process, the
//! boot id the boot. Whether a controller is alive can only be told on its
//! own machine: the leftovers of a flow on another machine are never
//! touched.

use std::sync::OnceLock;

/// The environment variable.
pub const VAR: &str = "FLOW_CONTROLLER";

/// This flow process.
pub fn identity() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id() as i32;
        format!(
            "{}:{}:{pid}:{}",
            crate::machine::machine_id(),
            boot_id(),
            start_ticks(pid).unwrap_or(0)
        )
    })
}

/// Whether the controller `id` (an [`identity`]) is a flow on this machine
/// that is no longer running.
pub fn is_dead(id: &str) -> bool {
    let mut parts = id.split(':');
    let (Some(machine), Some(boot), Some(pid), Some(start), None) = (
        parts.next(),
        parts.next(),
        parts.next().and_then(|p| p.parse::<i32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
        parts.next(),
    ) else {
        return false;
    };
    if machine != crate::machine::machine_id() {
        return false;
    }
    boot != boot_id() || start_ticks(pid) != Some(start)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`: when the process started.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count from the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// One process found by `helper leftovers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub pid: i32,
    pub controller: String,
    pub artifact: String,
    /// The run's folder on its controller (`FLOW_RUN_DIR`); may be empty.
    pub run_dir: String,
}

/// Parses `helper leftovers` output (`PID CONTROLLER ARTIFACT RUN_DIR`
/// lines; the run dir, last, may hold spaces).
pub fn parse_leftovers(text: &str) -> Vec<Leftover> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.splitn(4, ' ');
            Some(Leftover {
                pid: w.next()?.trim().parse().ok()?,
                controller: w.next()?.to_string(),
                artifact: w.next().unwrap_or("").to_string(),
                run_dir: w.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_flow_is_alive_and_a_gone_one_is_dead() {
        let me = identity();
        assert!(!is_dead(me), "{me}");
        let parts: Vec<&str> = me.split(':').collect();
        assert_eq!(parts.len(), 4, "{me}");
        // Same pid, another start: that process is gone.
        let other = format!("{}:{}:{}:1", parts[0], parts[1], parts[2]);
        assert!(is_dead(&other));
        // Another boot of this machine.
        let rebooted = format!("{}:x:{}:{}", parts[0], parts[2], parts[3]);
        assert!(is_dead(&rebooted));
        // Another machine: never ours to judge.
        let foreign = format!("elsewhere:{}:{}:1", parts[1], parts[2]);
        assert!(!is_dead(&foreign));
        assert!(!is_dead("garbage"));
    }

    #[test]
    fn leftovers_parse() {
        assert_eq!(
            parse_leftovers("12 m:b:3:4 20261123T000000Z-s /a b/runs/r1\nbad\n13 m:b:3:4\n"),
            vec![
                Leftover {
                    pid: 12,
                    controller: "m:b:3:4".into(),
                    artifact: "20261123T000000Z-s".into(),
                    run_dir: "/a b/runs/r1".into(),
                },
                Leftover {
                    pid: 13,
                    controller: "m:b:3:4".into(),
                    artifact: String::new(),
                    run_dir: String::new(),
                }
            ]
        );
    }
}
