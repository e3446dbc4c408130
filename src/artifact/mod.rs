//! The artifact folder of one invocation: its id, layout and atomic writes.

pub mod logs;
mod suite_json;
mod write;

pub use suite_json::{SUITE_SCHEMA_VERSION, suite_json};
pub use write::{ArtifactDir, atomic_write, new_artifact_id, replace_file, utc_timestamp};
