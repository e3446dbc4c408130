//! flow: run distributed-systems experiments described in YAML.
//!
//! Data flows one way: [`suite`] loads and validates files, [`expand`] turns a
//! suite into run points, [`plan`] turns each point into a DAG of rendered
//! steps, [`artifact`] writes them down, [`exec`] runs them; [`results`] reads what they left, and
//! [`export`] sends it to databases. [`commands`] ties them to the CLI.

pub mod artifact;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod diag;
pub mod duration;
pub mod exec;
pub mod expand;
pub mod export;
pub mod machine;
pub mod names;
pub mod paths;
pub mod plan;
pub mod results;
pub mod slurm;
pub mod sources;
pub mod suite;
pub mod yaml;
