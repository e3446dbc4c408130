//! This machine's identity, for telling which machine a flow ran on.

/// The machine's id (`/etc/machine-id`), else its host name; never holds a
/// `:` (it is a field of `FLOW_CONTROLLER`).
pub fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(':'))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().replace(':', "_"))
        })
        .unwrap_or_else(|| "unknown".into())
}
