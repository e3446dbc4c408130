//! This machine as a host: each step attempt is a child process group of
//! flow with its output appended straight to the step's log files.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{BoxFuture, Finish, Host, HostError, Running, file_len};
use crate::artifact::run_result::{Exit, Leak};
use crate::exec::fetch::{Transfer, copy_tree, fetch_local};
use crate::exec::process::{self, Proc, Spec};
use crate::exec::step::StepJob;
use crate::plan::RunCommand;

/// Waits at least this long count as "until it exits".
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub struct LocalHost {
    name: String,
}

impl LocalHost {
    pub fn new(name: &str) -> LocalHost {
        LocalHost {
            name: name.to_string(),
        }
    }
}

impl Host for LocalHost {
    fn prepare<'a>(
        &'a self,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let dir = expand_home(dir);
            let files = files.to_vec();
            let host = self.name.clone();
            tokio::task::spawn_blocking(move || prepare_local(&host, &dir, &files))
                .await
                .map_err(|e| format!("internal error: {e}"))?
        })
    }

    fn spawn<'a>(
        &'a self,
        job: &'a StepJob,
        _attempt: u32,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, HostError>> {
        Box::pin(async move {
            let Some(run) = &job.step.run else {
                return Err(HostError::Failed("the step has no command".into()));
            };
            let cwd = expand_home(&job.cwd.to_string_lossy());
            // This attempt's output starts where earlier attempts' ended.
            let base = [file_len(&job.out), file_len(&job.err)];
            let spec = Spec {
                run,
                cwd: &cwd,
                env: job.env.clone(),
                stdout: &job.out,
                stderr: &job.err,
            };
            let proc = process::spawn(&spec).map_err(|e| {
                HostError::Failed(format!(
                    "cannot start `{}` in `{}`: {e}",
                    run.display(),
                    cwd.display()
                ))
            })?;
            Ok(Box::new(LocalRunning {
                proc,
                exit: None,
                logs: [job.out.clone(), job.err.clone()],
                offsets: base,
                cwd,
                env: job.env.clone(),
                probe_log: job.out.with_extension("ready"),
            }) as Box<dyn Running>)
        })
    }

    fn set_aside<'a>(&'a self, dir: &'a str, suffix: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let dir = expand_home(dir);
            let mut to = dir.clone().into_os_string();
            to.push(format!(".{suffix}"));
            match std::fs::rename(&dir, &to) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!(
                    "host `{}`: cannot move `{}` aside: {e}",
                    self.name,
                    dir.display()
                )),
            }
        })
    }

    fn fetch<'a>(
        &'a self,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
        limits: crate::exec::fetch::Limits,
    ) -> BoxFuture<'a, Vec<Transfer>> {
        Box::pin(async move {
            let (host, dir, patterns, run_dir) = (
                self.name.clone(),
                expand_home(dir),
                patterns.to_vec(),
                run_dir.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || {
                fetch_local(&host, &dir, &patterns, &run_dir, &limits)
            })
            .await
            .unwrap_or_default()
        })
    }

    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async move { process::sweep_orphans(tag) })
    }
}

struct LocalRunning {
    proc: Proc,
    /// Set once the leader has been waited for.
    exit: Option<Exit>,
    logs: [PathBuf; 2],
    /// Read so far, per log file.
    offsets: [u64; 2],
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// Where a `ready.cmd` probe's output goes.
    probe_log: PathBuf,
}

impl Running for LocalRunning {
    fn pid(&self) -> i32 {
        self.proc.pid
    }

    fn wait(&mut self, within: Duration) -> BoxFuture<'_, Result<Option<Exit>, HostError>> {
        Box::pin(async move {
            if let Some(e) = self.exit {
                return Ok(Some(e));
            }
            let r = if within >= FOREVER {
                Ok(process::wait(&mut self.proc).await)
            } else {
                tokio::time::timeout(within, process::wait(&mut self.proc)).await
            };
            match r {
                Ok(Ok(exit)) => {
                    self.exit = Some(exit);
                    Ok(Some(exit))
                }
                Ok(Err(e)) => Err(HostError::Failed(format!(
                    "cannot wait for the process: {e}"
                ))),
                Err(_) => Ok(None),
            }
        })
    }

    fn signal(&mut self, sig: Signal) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            if self.exit.is_none() {
                process::signal_group(self.proc.pid, sig);
            }
            Ok(())
        })
    }

    fn read_new(&mut self) -> BoxFuture<'_, Result<[Vec<u8>; 2], HostError>> {
        Box::pin(async move {
            let mut out = [Vec::new(), Vec::new()];
            for (i, path) in self.logs.iter().enumerate() {
                let Ok(mut f) = std::fs::File::open(path) else {
                    continue;
                };
                if f.seek(SeekFrom::Start(self.offsets[i])).is_err() {
                    continue;
                }
                if f.read_to_end(&mut out[i]).is_ok() {
                    self.offsets[i] += out[i].len() as u64;
                }
            }
            Ok(out)
        })
    }

    fn probe_port(&mut self, port: u16, limit: Duration) -> BoxFuture<'_, Result<bool, HostError>> {
        Box::pin(async move {
            // A server may listen on IPv4, IPv6 or both.
            for addr in [
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            ] {
                let attempt = tokio::net::TcpStream::connect(addr);
                if let Ok(Ok(_)) = tokio::time::timeout(limit, attempt).await {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn probe_cmd<'a>(
        &'a mut self,
        cmd: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<bool, HostError>> {
        Box::pin(async move {
            let run = RunCommand::Shell(cmd.to_string());
            let spec = Spec {
                run: &run,
                cwd: &self.cwd,
                env: self.env.clone(),
                stdout: &self.probe_log,
                stderr: &self.probe_log,
            };
            let Ok(mut p) = process::spawn(&spec) else {
                return Ok(false);
            };
            Ok(
                match tokio::time::timeout(limit, process::wait(&mut p)).await {
                    Ok(r) => {
                        process::sweep_group(p.pid);
                        matches!(r, Ok(Exit::Code(0)))
                    }
                    Err(_) => {
                        process::signal_group(p.pid, Signal::SIGKILL);
                        let _ = process::wait(&mut p).await;
                        false
                    }
                },
            )
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Finish> {
        Box::pin(async move {
            Finish {
                leaked: process::sweep_group(self.proc.pid),
                host_times: None,
                error: None,
            }
        })
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
