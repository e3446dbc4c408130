//! One function per command; each returns what the process should exit with.

mod analyze;
mod detach;
mod export;
mod fetch;
mod hooks;
mod hosts;
mod merge;
mod metrics_from;
mod plan;
mod remote;
mod resume;
mod run;
mod schema;
mod slurm;
mod status;

pub use analyze::{analyze, compare, report};
pub use detach::stop;
pub use export::export;
pub use fetch::fetch;
pub use hosts::{check as hosts_check, exec, reap, ssh};
pub use merge::merge;
pub use plan::{plan, validate};
pub use remote::sync;
pub use resume::resume;
pub use run::run;
pub use schema::schema;
pub use status::{list, status};

use thiserror::Error;

/// Exit codes, documented in `docs/reference/cli.md`.
pub mod exit {
    /// Every run passed (or, for commands that run nothing: success).
    pub const OK: i32 = 0;
    /// Some run failed, or an operation failed (I/O, a host).
    pub const FAILED: i32 = 1;
    /// The input is invalid: a suite, workload, inventory or argument.
    pub const INVALID: i32 = 2;
    /// Interrupted by SIGINT/SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

/// What can go wrong in a command.
#[derive(Debug, Error)]
pub enum Error {
    /// Configuration errors, already rendered with locations and carets.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot {action} `{path}`")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) => exit::INVALID,
            Error::Io { .. } | Error::Output(_) => exit::FAILED,
        }
    }

    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: crate::diag::display_path(path),
            source,
        }
    }
}
