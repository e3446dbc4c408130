//! flow: run distributed-systems experiments described in YAML.
//!
//! Data flows one way: [`suite`] loads and validates files, [`expand`] turns a
//! suite into runs, [`plan`] turns each run into a DAG of rendered steps.

pub mod diag;
pub mod yaml;
