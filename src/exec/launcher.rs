//! Where a run's steps execute. The run's owner only speaks to a
//! [`Launcher`]: prepare a host's run dir, start a step (a supervisor that
//! reports back), fetch files, sweep leftovers. [`Local`] runs everything as
//! child processes of flow; tests drive the owner with a scripted fake.

use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, watch};

use super::fetch::{Transfer, copy_tree, fetch_local};
use super::process;
use super::result::Leak;
use super::step::{self, Ctl, Report, StepJob};

pub trait Launcher: Send + Sync {
    /// Creates a host's run dir and copies `files` (controller paths) into it.
    fn prepare(&self, host: &str, dir: &Path, files: &[String]) -> Result<(), String>;

    /// Starts a supervisor for one step instance; returns the handle that
    /// steers it. Every report goes to `tx`, the last one being `Ended`.
    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl>;

    /// Copies what `patterns` match under `host_dir` into
    /// `run_dir/hosts/<host>/`. Blocking.
    fn fetch(
        &self,
        host: &str,
        host_dir: &Path,
        patterns: &[String],
        run_dir: &Path,
    ) -> Vec<Transfer>;

    /// Kills what a run left running after its steps ended.
    fn sweep(&self, tag: &str, alone: bool) -> Vec<Leak>;
}

/// Steps as child processes of flow, on this machine.
pub struct Local;

impl Launcher for Local {
    fn prepare(&self, host: &str, dir: &Path, files: &[String]) -> Result<(), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("host `{host}`: cannot create `{}`: {e}", dir.display()))?;
        for f in files {
            let src = Path::new(f.trim_end_matches('/'));
            let Some(name) = src.file_name() else {
                continue;
            };
            copy_tree(src, &dir.join(name)).map_err(|e| {
                format!(
                    "host `{host}`: cannot copy `{}` into `{}`: {e}",
                    src.display(),
                    dir.display()
                )
            })?;
        }
        Ok(())
    }

    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
        step::start(job, tx)
    }

    fn fetch(
        &self,
        host: &str,
        host_dir: &Path,
        patterns: &[String],
        run_dir: &Path,
    ) -> Vec<Transfer> {
        fetch_local(host, host_dir, patterns, run_dir)
    }

    fn sweep(&self, tag: &str, alone: bool) -> Vec<Leak> {
        process::sweep_orphans(tag, alone)
    }
}

/// `~/x` → `$HOME/x` (local hosts with a `workdir` under home).
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(p)
}
