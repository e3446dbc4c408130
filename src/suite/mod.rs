//! Suite, workload and inventory files: loading (with spans), raw shapes,
//! and the validated model.

pub mod code;
mod cycle;
mod inventory;
mod load;
mod model;
pub mod phases;
pub mod raw;
mod workload;

pub use cycle::find_cycle;
pub use inventory::{Host, Inventory, LOCAL, Transport, invocation_folder};
pub use load::{
    DEFAULT_MAX_RUNS, Hooks, LoadFailure, LoadOptions, MAX_SOURCE_BYTES, hosts_command, load,
    load_inventory_file, read_hooks, read_source, resolve_suite_path,
};
pub use model::{CodeSource, Entry, ModeRef, Mutation, NO_MUTATION, Suite};
pub use raw::StepKind;
pub use workload::{
    Condition, Field, MIN_EVERY, MIN_SCRAPE_EVERY, Metric, MetricSource, OutsideRunDir, Ready,
    ReadyProbe, RunField, Scrape, Step, Stop, TimelineSource, Workload, check_inside_run_dir,
    normalize_signal,
};

#[cfg(test)]
mod fuzz_tests;
