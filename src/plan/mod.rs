//! Planning: run points become DAGs of rendered step instances.

mod build;
pub mod dag;
pub mod diff;
pub mod output;
pub mod scrape;
pub mod select;
pub mod template;
mod types;

pub use build::{PlanOptions, Planner, SCHEMA_VERSION};
pub mod shard;
pub use select::Only;
pub use shard::Shard;
pub use types::{
    CLOCK_EVERY_DEFAULT_MS, CONTROLLER, Edge, PatchRef, ReadyPlan, RunCommand, RunPlan, RunSource,
    ScrapePlan, StepInstance, StopPlan,
};
