//! Where a run's steps execute. The run's owner only speaks to a
//! [`Launcher`]: prepare a host's run dir, start a step (a supervisor that
//! reports back), fetch files, sweep leftovers. [`Local`] runs everything as
//! child processes of flow; tests drive the owner with a scripted fake.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::sync::{mpsc, watch};

use super::fetch::{Transfer, copy_tree, fetch_local};
use super::process;
use super::step::{self, Ctl, Report, StepJob};
use crate::artifact::run_result::Leak;
use crate::clock::ClockOffset;

/// A boxed future, so launchers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Launcher: Send + Sync {
    /// Creates a host's run dir (`dir` as the plan says it: a remote `~` is
    /// the remote user's home) and copies `files` (controller paths) into it.
    fn prepare<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Starts a supervisor for one step instance; returns the handle that
    /// steers it. Every report goes to `tx`, the last one being `Ended`.
    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl>;

    /// Copies what `patterns` match under the host's `dir` into
    /// `run_dir/hosts/<host>/`.
    fn fetch<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
    ) -> BoxFuture<'a, Vec<Transfer>>;

    /// Kills what a run left running after its steps ended.
    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>>;

    /// The host's clock against the controller's; `None` for hosts that
    /// share the controller's clock.
    fn clock<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, Option<ClockOffset>> {
        Box::pin(async { None })
    }
}

/// Steps as child processes of flow, on this machine.
pub struct Local;

impl Launcher for Local {
    fn prepare<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let dir = expand_home(dir);
            let files = files.to_vec();
            let host = host.to_string();
            tokio::task::spawn_blocking(move || prepare_local(&host, &dir, &files))
                .await
                .map_err(|e| format!("internal error: {e}"))?
        })
    }

    fn start(&self, mut job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
        job.cwd = expand_home(&job.cwd.to_string_lossy());
        step::start(job, tx)
    }

    fn fetch<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
    ) -> BoxFuture<'a, Vec<Transfer>> {
        Box::pin(async move {
            let (host, dir, patterns, run_dir) = (
                host.to_string(),
                expand_home(dir),
                patterns.to_vec(),
                run_dir.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || fetch_local(&host, &dir, &patterns, &run_dir))
                .await
                .unwrap_or_default()
        })
    }

    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async move { process::sweep_orphans(tag) })
    }
}

fn prepare_local(host: &str, dir: &Path, files: &[String]) -> Result<(), String> {
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

/// `~/x` → `$HOME/x` (local hosts with a `workdir` under home).
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(p)
}
