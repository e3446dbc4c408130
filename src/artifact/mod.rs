//! The artifact folder of one invocation: its id, layout and atomic writes.

pub mod logs;
pub mod merge;
pub mod replay;
pub mod run_result;
mod suite_json;
mod write;

pub use suite_json::{SUITE_SCHEMA_VERSION, diff_path, suite_json, write_source_diffs};
pub use write::{ArtifactDir, atomic_write, new_artifact_id, replace_file, utc_timestamp};

/// The CSV header of a param column (`runs.csv`, `summary.csv`): the param's
/// name, unless that is one of the file's fixed columns (`fixed`) or starts
/// with `param.`; then `param.<name>`. A matrix key called `status` or `n`
/// so never makes a second `status` or `n` column that a reader would take
/// for flow's.
pub fn param_column(name: &str, fixed: &[&str]) -> String {
    if fixed.contains(&name) || name.starts_with("param.") {
        format!("param.{name}")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::param_column;

    #[test]
    fn param_columns_never_shadow_fixed_ones() {
        let fixed = ["id", "status", "n"];
        assert_eq!(param_column("size", &fixed), "size");
        assert_eq!(param_column("status", &fixed), "param.status");
        assert_eq!(param_column("param.n", &fixed), "param.param.n");
        assert_ne!(param_column("n", &fixed), param_column("param.n", &fixed));
    }
}
