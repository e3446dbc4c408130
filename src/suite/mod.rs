//! Suite, workload and inventory files: loading (with spans), raw shapes,
//! and the validated model.

mod inventory;
mod load;
mod model;
pub mod raw;
mod workload;

pub use inventory::{Host, Inventory, LOCAL};
pub use load::{LoadFailure, LoadOptions, load, load_inventory_file, resolve_suite_path};
pub use model::{Entry, ModeRef, Suite};
pub use raw::StepKind;
pub use workload::{
    Condition, Field, Metric, MetricSource, Ready, ReadyProbe, RunField, Step, Stop, Workload,
    normalize_signal,
};
