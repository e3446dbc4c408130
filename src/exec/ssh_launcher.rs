//! Steps on remote hosts: the [`Launcher`] that speaks to each host's
//! helper (see [`super::remote`]) over its ssh master, pushes `files` and
//! fetches results with rsync, and [`Mixed`], which sends each host to the
//! local or the remote launcher.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, mpsc, watch};

use super::fetch::{Found, Transfer, hash_file, hex, link_stays_inside, walk};
use super::hosts::Hosts;
use super::launcher::{BoxFuture, Launcher, Local};
use super::process::Exit;
use super::ready::LineMatcher;
use super::remote::{
    HELPER, helper_command, install_command, next_frame, parse_frames, remote_word, split_line,
};
use super::ssh::sh_quote;
use super::step::{Ctl, Ended, Report, StepJob, changed, ended, fmt_duration, stopped_status};
use crate::artifact::run_result::{Leak, StepStatus};
use crate::clock::{ClockOffset, Stamp};
use crate::plan::RunCommand;
use crate::suite::{Inventory, StepKind};

/// How long the start call waits for a task to end (and then reports it at
/// once, with its output).
const START_WAIT_MS: u64 = 200;
/// A quick command (a status poll, a probe) unanswered for this long means
/// the connection is dead.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// Grace of a remote task that is cancelled or timed out.
const TASK_GRACE_MS: u64 = 5000;

/// Local hosts to [`Local`], the others to [`Remote`].
pub struct Mixed {
    local: Local,
    remote: Remote,
}

impl Mixed {
    /// For `flow run` of artifact `artifact`: remote hosts are taken (one
    /// flow at a time per workdir) unless `share_hosts`.
    pub fn new(
        inventory: &Inventory,
        hosts: &[String],
        artifact: &str,
        share_hosts: bool,
    ) -> std::io::Result<Mixed> {
        let owner = RunOwner {
            artifact: artifact.to_string(),
            lock: !share_hosts,
        };
        Ok(Mixed {
            local: Local,
            remote: Remote::new(inventory, hosts, Some(owner))?,
        })
    }

    fn is_remote(&self, host: &str) -> bool {
        self.remote.0.workdirs.contains_key(host)
    }

    /// Gives the hosts back and closes the ssh connections.
    pub async fn close(&self) {
        self.remote.close().await;
    }
}

impl Launcher for Mixed {
    fn prepare<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        if self.is_remote(host) {
            self.remote.prepare(host, dir, files)
        } else {
            self.local.prepare(host, dir, files)
        }
    }

    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
        if self.is_remote(&job.step.host) {
            self.remote.start(job, tx)
        } else {
            self.local.start(job, tx)
        }
    }

    fn fetch<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
    ) -> BoxFuture<'a, Vec<Transfer>> {
        if self.is_remote(host) {
            self.remote.fetch(host, dir, patterns, run_dir)
        } else {
            self.local.fetch(host, dir, patterns, run_dir)
        }
    }

    fn clock<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<ClockOffset>> {
        if self.is_remote(host) {
            self.remote.clock(host)
        } else {
            self.local.clock(host)
        }
    }

    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async move {
            let mut leaks = self.local.sweep(tag).await;
            leaks.extend(self.remote.sweep(tag).await);
            leaks
        })
    }
}

struct Inner {
    hosts: Hosts,
    /// Workdir as written, per remote host.
    workdirs: HashMap<String, String>,
    /// `$HOME` of each host, learnt when the helper is installed.
    /// Set once per host, when its setup succeeds; hosts are set up in
    /// parallel, and a failed setup is tried again by the next run.
    homes: HashMap<String, tokio::sync::OnceCell<HostInfo>>,
    /// (host, content hash) of `files` already pushed this invocation.
    pushed: Mutex<HashSet<(String, String)>>,
    /// Set for `flow run`.
    run: Option<RunOwner>,
    /// (host, absolute workdir) this flow took, given back at close.
    locked: std::sync::Mutex<Vec<(String, String)>>,
}

/// What a host's setup learnt.
#[derive(Debug, Clone)]
struct HostInfo {
    home: String,
    /// Files move with rsync (on both ends), else with tar over ssh.
    rsync: bool,
}

/// Whether this machine has rsync (looked up once).
fn local_rsync() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("rsync").is_file()))
    })
}

/// Steps on ssh hosts.
#[derive(Clone)]
pub struct Remote(Arc<Inner>);

impl Remote {
    /// `run`: for `flow run`: when a host is first used, take its workdir
    /// (see [`RunOwner`]) and kill what flows that are no longer running
    /// left there. `None` for `flow reap` (which reports what it kills
    /// itself) and `flow hosts`.
    pub fn new(
        inventory: &Inventory,
        names: &[String],
        run: Option<RunOwner>,
    ) -> std::io::Result<Remote> {
        let remote: Vec<String> = names
            .iter()
            .filter(|n| inventory.host(n).is_some_and(|h| !h.is_local()))
            .cloned()
            .collect();
        let workdirs = remote
            .iter()
            .filter_map(|n| inventory.host(n))
            .map(|h| (h.name.clone(), h.workdir_for(Path::new(""))))
            .collect();
        Ok(Remote(Arc::new(Inner {
            hosts: Hosts::new(inventory, &remote)?,
            workdirs,
            homes: remote
                .iter()
                .map(|n| (n.clone(), tokio::sync::OnceCell::new()))
                .collect(),
            pushed: Mutex::new(HashSet::new()),
            run,
            locked: std::sync::Mutex::new(Vec::new()),
        })))
    }
}

impl Remote {
    /// Kills every process on `host` started from its workdir whose
    /// environment holds `var=value`; returns their pids.
    pub async fn reap(&self, host: &str, var: &str, value: &str) -> Result<Vec<i32>, String> {
        let r = &self.0;
        let workdir = r.absolute(host, r.workdir(host)).await?;
        let cmd = r
            .helper(
                host,
                &[
                    "reap",
                    &format!("{var}={value}"),
                    &format!("FLOW_WORKDIR={workdir}"),
                ],
            )
            .await?;
        let out = r.run(host, &cmd).await?;
        Ok(out
            .stdout_text()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Gives back the workdirs this flow took, then closes the connections.
    pub async fn close(&self) {
        let locked: Vec<(String, String)> = self
            .0
            .locked
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let owner = self.0.owner();
        let mut set = tokio::task::JoinSet::new();
        for (host, workdir) in locked {
            let inner = Arc::clone(&self.0);
            let unlock = helper_command(&workdir, &["unlock", &owner]);
            set.spawn(async move {
                let _ = inner.hosts.ssh().run(&host, &unlock, None).await;
            });
        }
        while set.join_next().await.is_some() {}
        self.0.hosts.close().await;
    }
}

/// What `flow run` does on a host it uses first: kill what dead flows left
/// there, and take the host's workdir for this flow (`lock`), so that a
/// second flow on the same hosts is refused with the first one named,
/// instead of both measuring each other and passing.
#[derive(Debug, Clone)]
pub struct RunOwner {
    pub artifact: String,
    /// `false` with `--share-hosts`.
    pub lock: bool,
}

impl Inner {
    /// `CONTROLLER ARTIFACT`, as the lock records its owner.
    fn owner(&self) -> String {
        format!(
            "{} {}",
            super::controller::identity(),
            self.run.as_ref().map_or("-", |r| r.artifact.as_str())
        )
    }

    /// Takes `host`'s workdir for this flow. A lock left by a flow of this
    /// machine that is no longer running is taken over; one held by a live
    /// flow, or by a flow of another machine (whose life cannot be told from
    /// here), refuses the host.
    /// `first`: the lock's answer (exit code, holder) when it was asked
    /// for in the setup's own round trip.
    async fn take(
        &self,
        host: &str,
        workdir: &str,
        mut first: Option<(i32, String)>,
    ) -> Result<(), String> {
        let me = self.owner();
        for _ in 0..2 {
            let (code, holder, stderr) = match first.take() {
                Some((code, holder)) => (code, holder, String::new()),
                None => {
                    let lock = helper_command(workdir, &["lock", &me]);
                    let out = self
                        .hosts
                        .ssh()
                        .run(host, &lock, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    (
                        out.code,
                        out.stdout_text().trim().to_string(),
                        String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    )
                }
            };
            if code == 0 {
                if let Ok(mut l) = self.locked.lock() {
                    l.push((host.to_string(), workdir.to_string()));
                }
                return Ok(());
            }
            let holder = holder.trim().to_string();
            let (controller, artifact) = holder.split_once(' ').unwrap_or((&holder, "?"));
            if code == 4 && super::controller::is_dead(controller) {
                let unlock = helper_command(workdir, &["unlock", &holder]);
                let _ = self.hosts.ssh().run(host, &unlock, None).await;
                continue;
            }
            if code != 4 {
                return Err(format!("host `{host}`: cannot take `{workdir}`: {stderr}"));
            }
            let pid = controller.split(':').nth(2).unwrap_or("?");
            let whose = if controller.split(':').next() == Some(&crate::machine::machine_id()) {
                format!("flow (pid {pid}) on this machine")
            } else {
                format!("a flow on another machine (`{controller}`)")
            };
            return Err(format!(
                "host `{host}` is in use: {whose} is running artifact {artifact} in `{workdir}`; \
                 wait for it, give this suite's hosts another `workdir`, or pass --share-hosts to run beside it \
                 (if that flow is gone for good: `rm -r {workdir}/.flow/lock.*` on the host)"
            ));
        }
        Err(format!(
            "host `{host}`: cannot take `{workdir}`: the lock keeps changing hands"
        ))
    }

    fn workdir(&self, host: &str) -> &str {
        self.workdirs.get(host).map_or("~/flow", String::as_str)
    }

    /// Installs the helper (once per host), learns the host's `$HOME`, and
    /// reaps what dead flows left there.
    async fn ready_host(&self, host: &str) -> Result<String, String> {
        self.host_info(host).await.map(|i| i.home)
    }

    async fn host_info(&self, host: &str) -> Result<HostInfo, String> {
        let Some(cell) = self.homes.get(host) else {
            return Err(format!("host `{host}` is not a remote host"));
        };
        cell.get_or_try_init(|| self.set_up(host)).await.cloned()
    }

    async fn set_up(&self, host: &str) -> Result<HostInfo, String> {
        let mut cmd = format!(
            "{} && printf '%s\\n' \"$HOME\" && {{ command -v rsync >/dev/null 2>&1 && echo rsync || echo no-rsync; }}",
            install_command(self.workdir(host))
        );
        // The workdir is taken in the same round trip.
        let locking = self.run.as_ref().is_some_and(|r| r.lock);
        if locking {
            let lock = helper_command(self.workdir(host), &["lock", &self.owner()]);
            cmd.push_str(&format!(" && {{ {lock}; echo \"lock-exit $?\"; }}"));
        }
        let text = match self
            .hosts
            .ssh()
            .run(host, &cmd, Some(HELPER.as_bytes()))
            .await
        {
            Ok(out) if out.code == 0 => out.stdout_text(),
            Ok(out) => {
                return Err(format!(
                    "host `{host}`: cannot install flow's helper under `{}`: {}",
                    self.workdir(host),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut lines = text.lines();
        let home = lines.next().unwrap_or_default().to_string();
        let rsync = lines.next() == Some("rsync") && local_rsync();
        let rest: Vec<&str> = lines.collect();
        let first_lock = rest.iter().rev().find_map(|l| {
            let code = l.strip_prefix("lock-exit ")?.trim().parse::<i32>().ok()?;
            let holder = rest
                .iter()
                .take_while(|x| !x.starts_with("lock-exit "))
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            Some((code, holder))
        });
        if !rsync {
            tracing::debug!(host, "no rsync on one end: files move with tar over ssh");
        }
        let workdir = match self.workdir(host).strip_prefix("~/") {
            Some(rest) => format!("{home}/{rest}"),
            None => self.workdir(host).to_string(),
        };
        if let Some(run) = &self.run {
            if run.lock {
                self.take(host, &workdir, first_lock).await?;
            }
            self.reap_leftovers(host, &workdir).await;
        }
        Ok(HostInfo { home, rsync })
    }

    /// Kills what flows that are no longer running (killed with `kill -9`,
    /// say) left on `host` from this workdir, before anything new starts
    /// there. Leftovers of a flow still running, or of one on another
    /// machine, are left alone. Says what it did on stderr.
    async fn reap_leftovers(&self, host: &str, workdir: &str) {
        let list = helper_command(workdir, &["leftovers"]);
        let Ok(out) = self.hosts.ssh().run(host, &list, None).await else {
            return;
        };
        let mut dead: Vec<(String, String)> = Vec::new();
        for l in super::controller::parse_leftovers(&out.stdout_text()) {
            if super::controller::is_dead(&l.controller)
                && !dead.iter().any(|(c, _)| *c == l.controller)
            {
                dead.push((l.controller, l.artifact));
            }
        }
        for (controller, artifact) in dead {
            let reap = helper_command(
                workdir,
                &[
                    "reap",
                    &format!("{}={controller}", super::controller::VAR),
                    &format!("FLOW_WORKDIR={workdir}"),
                ],
            );
            if let Ok(out) = self.hosts.ssh().run(host, &reap, None).await {
                let n = out.stdout_text().lines().count();
                if n > 0 {
                    let pid = controller.split(':').nth(2).unwrap_or("?");
                    eprintln!(
                        "warning: host `{host}`: killed {n} process{} left by flow (pid {pid}, no longer running) of artifact {artifact}",
                        if n == 1 { "" } else { "es" }
                    );
                }
            }
        }
    }

    /// `~/x` with the host's home; other paths as they are.
    async fn absolute(&self, host: &str, path: &str) -> Result<String, String> {
        let home = self.ready_host(host).await?;
        Ok(match path.strip_prefix("~/") {
            Some(rest) => format!("{home}/{rest}"),
            None if path == "~" => home,
            None => path.to_string(),
        })
    }

    /// Absolute helper invocation.
    async fn helper(&self, host: &str, args: &[&str]) -> Result<String, String> {
        let workdir = self.absolute(host, self.workdir(host)).await?;
        Ok(helper_command(&workdir, args))
    }

    async fn run(&self, host: &str, cmd: &str) -> Result<super::ssh::Output, String> {
        self.run_within(host, cmd, None).await
    }

    /// A command that answers at once (a status poll, a probe, a start)
    /// or within `extra` more; see [`super::ssh::Ssh::run_within`].
    async fn run_quick(
        &self,
        host: &str,
        cmd: &str,
        extra: Duration,
    ) -> Result<super::ssh::Output, String> {
        self.run_within(host, cmd, Some(ANSWER_WITHIN + extra))
            .await
    }

    /// A quick command fed `input` on its stdin.
    async fn run_with_input(
        &self,
        host: &str,
        cmd: &str,
        input: &[u8],
        limit: Duration,
    ) -> Result<super::ssh::Output, String> {
        self.hosts
            .ssh()
            .run_within(host, cmd, Some(input), Some(limit))
            .await
            .map_err(|e| e.to_string())
    }

    async fn run_within(
        &self,
        host: &str,
        cmd: &str,
        limit: Option<Duration>,
    ) -> Result<super::ssh::Output, String> {
        self.hosts
            .ssh()
            .run_within(host, cmd, None, limit)
            .await
            .map_err(|e| e.to_string())
    }

    /// `rsync -e '<ssh over the master>'`.
    fn rsync_ssh(&self, host: &str) -> Result<String, String> {
        let words = self
            .hosts
            .ssh()
            .command_for(host)
            .map_err(|e| e.to_string())?;
        Ok(words
            .iter()
            .map(|w| sh_quote(w))
            .collect::<Vec<_>>()
            .join(" "))
    }

    fn address(&self, host: &str) -> String {
        self.hosts
            .ssh()
            .address(host)
            .unwrap_or_else(|| host.to_string())
    }
}

/// A content hash of files and folders (paths relative to each root, and
/// bytes), so unchanged `files` are pushed once per invocation.
fn files_hash(files: &[String]) -> String {
    fn walk(root: &Path, p: &Path, h: &mut Sha256) {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            entries.sort();
            for e in entries {
                walk(root, &e, h);
            }
        } else {
            h.update(
                p.strip_prefix(root)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update([0]);
            h.update(std::fs::read(p).unwrap_or_default());
            h.update([0]);
        }
    }
    let mut h = Sha256::new();
    for f in files {
        let p = Path::new(f.trim_end_matches('/'));
        h.update(f.as_bytes());
        h.update([0]);
        walk(p.parent().unwrap_or(Path::new("/")), p, &mut h);
    }
    hex(&h.finalize())[..16].to_string()
}

impl Launcher for Remote {
    fn prepare<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let r = &self.0;
            let dir = r.absolute(host, dir).await?;
            if files.is_empty() {
                let out = r
                    .run(host, &format!("umask 077 && mkdir -p {}", sh_quote(&dir)))
                    .await?;
                return if out.code == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "host `{host}`: cannot create `{dir}`: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                };
            }
            let hash = files_hash(files);
            let workdir = r.absolute(host, r.workdir(host)).await?;
            let cache = format!("{workdir}/.flow/files/{hash}");
            let key = (host.to_string(), hash.clone());
            {
                let mut pushed = r.pushed.lock().await;
                if !pushed.contains(&key) {
                    let probe = r
                        .run(host, &format!("test -d {}", sh_quote(&cache)))
                        .await?;
                    if probe.code != 0 {
                        push(r, host, files, &cache).await?;
                    }
                    pushed.insert(key);
                }
            }
            let out = r
                .run(
                    host,
                    &format!(
                        "(umask 077 && mkdir -p {d}) && cp -R {c}/. {d}/",
                        d = sh_quote(&dir),
                        c = sh_quote(&cache)
                    ),
                )
                .await?;
            if out.code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "host `{host}`: cannot copy the workload's files into `{dir}`: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
    }

    fn start(&self, job: StepJob, tx: mpsc::UnboundedSender<Report>) -> watch::Sender<Ctl> {
        let (ctl_tx, ctl_rx) = watch::channel(Ctl::Run);
        let inner = Arc::clone(&self.0);
        tokio::spawn(async move {
            let idx = job.idx;
            let e = supervise(&inner, &job, &tx, ctl_rx).await;
            let _ = tx.send(Report::Ended(Box::new(Ended { idx, ..e })));
        });
        ctl_tx
    }

    fn fetch<'a>(
        &'a self,
        host: &'a str,
        dir: &'a str,
        patterns: &'a [String],
        run_dir: &'a Path,
    ) -> BoxFuture<'a, Vec<Transfer>> {
        Box::pin(async move { fetch(&self.0, host, dir, patterns, run_dir).await })
    }

    fn clock<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Option<ClockOffset>> {
        Box::pin(async move { self.0.hosts.clock_offset(host).await.ok().flatten() })
    }

    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async move {
            let r = &self.0;
            let mut leaks = Vec::new();
            let hosts: Vec<String> = r
                .homes
                .iter()
                .filter(|(_, v)| v.initialized())
                .map(|(k, _)| k.clone())
                .collect();
            for host in hosts {
                let Ok(cmd) = r
                    .helper(
                        &host,
                        &["reap", &format!("{}={tag}", super::process::RUN_TAG_VAR)],
                    )
                    .await
                else {
                    continue;
                };
                if let Ok(out) = r.run(&host, &cmd).await {
                    for pid in out
                        .stdout_text()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                    {
                        leaks.push(Leak {
                            pid,
                            cmdline: format!("(on host `{host}`)"),
                        });
                    }
                }
            }
            leaks
        })
    }
}

/// Pushes `files` into `cache` on the host with rsync over the master.
async fn push(r: &Inner, host: &str, files: &[String], cache: &str) -> Result<(), String> {
    let tmp = format!("{cache}.tmp.{}", std::process::id());
    let out = r.run(host, &format!("mkdir -p {}", sh_quote(&tmp))).await?;
    if out.code != 0 {
        return Err(format!("host `{host}`: cannot create `{tmp}`"));
    }
    if r.host_info(host).await?.rsync {
        let ssh = r.rsync_ssh(host)?;
        let mut cmd = tokio::process::Command::new("rsync");
        cmd.args(["-a", "-e", &ssh]);
        for f in files {
            cmd.arg(f.trim_end_matches('/'));
        }
        cmd.arg(format!("{}:{tmp}/", r.address(host)));
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("host `{host}`: cannot run rsync: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "host `{host}`: cannot push the workload's files: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    } else {
        push_tar(r, host, files, &tmp).await?;
    }
    let out = r
        .run(
            host,
            &format!(
                "rm -rf {c} && mv {t} {c}",
                c = sh_quote(cache),
                t = sh_quote(&tmp)
            ),
        )
        .await?;
    if out.code != 0 {
        return Err(format!(
            "host `{host}`: cannot move the pushed files into place"
        ));
    }
    Ok(())
}

/// [`push`] where rsync is missing: each path as a tar stream over ssh.
async fn push_tar(r: &Inner, host: &str, files: &[String], tmp: &str) -> Result<(), String> {
    for f in files {
        let p = Path::new(f.trim_end_matches('/'));
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let out = tokio::process::Command::new("tar")
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(parent)
            .arg("--")
            .arg(name)
            .output()
            .await
            .map_err(|e| format!("cannot run tar: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot pack `{f}`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let put = r
            .hosts
            .ssh()
            .run(
                host,
                &format!("tar -C {} -xf -", sh_quote(tmp)),
                Some(&out.stdout),
            )
            .await
            .map_err(|e| e.to_string())?;
        if put.code != 0 {
            return Err(format!(
                "host `{host}`: cannot push the workload's files: {}",
                String::from_utf8_lossy(&put.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The command a remote step runs: its environment, then the command. A
/// key that is not a shell variable name (validation refuses them; a
/// hand-edited `plan.json` may still hold one) is refused, never exported.
fn remote_script(job: &StepJob) -> Result<String, String> {
    let mut s = env_exports(&job.env)?;
    match &job.step.run {
        Some(RunCommand::Shell(text)) => s.push_str(text),
        Some(RunCommand::Argv(argv)) => {
            s.push_str("exec");
            for a in argv {
                s.push(' ');
                s.push_str(&sh_quote(a));
            }
        }
        None => s.push_str("true"),
    }
    Ok(s)
}

/// What `helper status` said about a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Exited(i32),
    Gone,
}

fn parse_state(line: &str) -> Option<State> {
    let mut w = line.split_whitespace().skip(1);
    match w.next()? {
        "running" => Some(State::Running),
        "exited" => w.next()?.parse().ok().map(State::Exited),
        "gone" | "unknown" => Some(State::Gone),
        _ => None,
    }
}

/// `exited N`: N > 128 is how a shell reports death by signal N - 128.
fn exit_of(code: i32) -> Exit {
    if code > 128 && code < 128 + 65 {
        Exit::Signal(code - 128)
    } else {
        Exit::Code(code)
    }
}

/// A remote step's attempts: tasks and analyze steps are tried again after
/// a failure, `retries` times, as on a local host.
async fn supervise(
    r: &Arc<Inner>,
    job: &StepJob,
    tx: &mpsc::UnboundedSender<Report>,
    mut ctl: watch::Receiver<Ctl>,
) -> Ended {
    let attempts = if matches!(job.step.kind, StepKind::Task | StepKind::Analyze) {
        job.step.retries + 1
    } else {
        1
    };
    let mut attempt = 1;
    loop {
        let e = attempt_once(r, job, tx, &mut ctl, attempt).await;
        if e.status != StepStatus::Failed || attempt >= attempts || *ctl.borrow() != Ctl::Run {
            return e;
        }
        let _ = tx.send(Report::Retrying {
            idx: job.idx,
            error: e.error.clone().unwrap_or_default(),
        });
        attempt += 1;
    }
}

/// One attempt of a remote step. Its output is appended to the step's log
/// files, after what earlier attempts wrote.
async fn attempt_once(
    r: &Arc<Inner>,
    job: &StepJob,
    tx: &mpsc::UnboundedSender<Report>,
    ctl: &mut watch::Receiver<Ctl>,
    attempt: u32,
) -> Ended {
    let base = (file_len(&job.out), file_len(&job.err));
    let host = job.step.host.as_str();
    let id = job.step.id.as_str();
    let dir = match r.absolute(host, &job.cwd.to_string_lossy()).await {
        Ok(d) => d,
        Err(e) => return ended(StepStatus::Failed, None, Some(e)),
    };
    let background = matches!(job.step.kind, StepKind::Service | StepKind::Monitor);
    // A task that ends quickly is reported, with its output, by the start
    // call itself.
    let wait = if background { 0 } else { START_WAIT_MS }.to_string();
    let script = match remote_script(job) {
        Ok(s) => s,
        Err(e) => return ended(StepStatus::Failed, None, Some(e)),
    };
    let start = match r.helper(host, &["start", &dir, id, "-", &wait]).await {
        Ok(c) => c,
        Err(e) => return ended(StepStatus::Failed, None, Some(e)),
    };
    let started = Stamp::now();
    // The script goes on stdin: env values never appear on a command line.
    let pid = match r
        .run_with_input(
            host,
            &start,
            script.as_bytes(),
            ANSWER_WITHIN + Duration::from_millis(START_WAIT_MS),
        )
        .await
    {
        Ok(out) if out.code == 0 => {
            let (head, rest) = split_line(&out.stdout);
            let pid = String::from_utf8_lossy(head)
                .trim()
                .parse::<i32>()
                .unwrap_or(0);
            let (status, logs) = split_line(rest);
            if let Some(State::Exited(c)) = parse_state(&String::from_utf8_lossy(status)) {
                let _ = tx.send(Report::Started {
                    idx: job.idx,
                    pid,
                    attempt,
                    at: started,
                });
                let times = write_logs(job, logs, base);
                let exit = exit_of(c);
                let mut e = if exit.success() {
                    ended(StepStatus::Passed, Some(exit), None)
                } else {
                    ended(StepStatus::Failed, Some(exit), Some(exit.describe()))
                };
                e.host_times = Some(times);
                return e;
            }
            pid
        }
        Ok(out) => {
            return ended(
                StepStatus::Failed,
                None,
                Some(format!(
                    "cannot start on host `{host}`: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            );
        }
        Err(e) => return ended(StepStatus::Failed, None, Some(e)),
    };
    let _ = tx.send(Report::Started {
        idx: job.idx,
        pid,
        attempt,
        at: started,
    });
    let (sig, grace_ms) = match (&job.step.stop, job.step.kind) {
        (Some(s), _) => (s.signal.clone(), s.grace_ms),
        (None, StepKind::Service | StepKind::Monitor) => ("TERM".to_string(), 10_000),
        (None, _) => ("TERM".to_string(), TASK_GRACE_MS),
    };
    // `-v`: a task's output comes back as it is written.
    let follower = (job.live && !background).then(|| {
        tokio::spawn(follow(
            Arc::clone(r),
            host.to_string(),
            dir.clone(),
            id.to_string(),
            job.out.clone(),
            job.err.clone(),
        ))
    });
    let mut result = if job.step.kind == StepKind::Service && job.step.ready.is_some() {
        await_ready(r, job, &dir, tx, ctl, &sig, grace_ms).await
    } else {
        if background {
            let _ = tx.send(Report::Ready {
                idx: job.idx,
                at: Stamp::now(),
            });
        }
        None
    };
    if result.is_none() {
        result = Some(watch_until_end(r, job, &dir, ctl, &sig, grace_ms).await);
    }
    let mut e = result.unwrap_or_else(|| ended(StepStatus::Failed, None, None));
    if let Some(f) = follower {
        f.abort();
        let _ = f.await;
    }
    e.host_times = Some(pull_logs(r, job, &dir, base).await);
    e
}

/// How a remote service's readiness is probed.
enum RemoteProbe {
    /// `ready.log`: the bytes past these offsets (stdout, stderr) are read
    /// from the host and matched here.
    Log(LineMatcher, [u64; 2]),
    /// A log probe that has matched.
    Matched,
    Port(u16),
    /// The whole probe command (`… && echo READY`).
    Cmd(String),
}

impl RemoteProbe {
    fn describe(&self, plan: &crate::plan::ReadyPlan) -> String {
        match self {
            RemoteProbe::Log(..) | RemoteProbe::Matched => {
                format!("log /{}/", plan.log.as_deref().unwrap_or_default())
            }
            RemoteProbe::Port(p) => format!("port {p}"),
            RemoteProbe::Cmd(_) => format!("cmd `{}`", plan.cmd.as_deref().unwrap_or_default()),
        }
    }
}

/// `export K='v'` lines for a step's environment. A key that is not a shell
/// variable name (validation refuses them; a hand-edited `plan.json` may
/// still hold one) is refused, never exported.
fn env_exports(env: &[(String, String)]) -> Result<String, String> {
    let mut s = String::new();
    for (k, v) in env {
        if !crate::names::NameKind::EnvVar.accepts(k) {
            return Err(format!(
                "env key `{}` is not a shell variable name",
                k.escape_debug()
            ));
        }
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    Ok(s)
}

/// Polls until the service's probe passes (`None`: go on watching it), it
/// dies, its time runs out, or flow stops it.
async fn await_ready(
    r: &Arc<Inner>,
    job: &StepJob,
    dir: &str,
    tx: &mpsc::UnboundedSender<Report>,
    ctl: &mut watch::Receiver<Ctl>,
    sig: &str,
    grace_ms: u64,
) -> Option<Ended> {
    let host = job.step.host.as_str();
    let id = job.step.id.as_str();
    let plan = job.step.ready.as_ref()?;
    // The host only returns bytes and exit codes: a log pattern is matched
    // here, with the same matcher as on a local host.
    let mut probe = if let Some(re) = &plan.log {
        match regex::bytes::Regex::new(re) {
            Ok(re) => RemoteProbe::Log(LineMatcher::new(re, 2), [0, 0]),
            Err(e) => {
                return Some(ended(
                    StepStatus::Failed,
                    None,
                    Some(format!("bad `ready.log` regex: {e}")),
                ));
            }
        }
    } else if let Some(p) = plan.port {
        RemoteProbe::Port(p)
    } else if let Some(c) = &plan.cmd {
        // The probe runs in the step's dir with the step's environment,
        // which is stored on the host once (never on a command line).
        let stored = match env_exports(&job.env) {
            Ok(exports) => match r.helper(host, &["env", dir, id]).await {
                Ok(cmd) => r
                    .run_with_input(host, &cmd, exports.as_bytes(), ANSWER_WITHIN)
                    .await
                    .and_then(|o| {
                        if o.code == 0 {
                            Ok(())
                        } else {
                            Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
                        }
                    }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            return Some(ended(StepStatus::Failed, None, Some(e)));
        }
        RemoteProbe::Cmd(format!(
            "( cd {d} && . {env} && ( {c} ) ) >/dev/null 2>&1 </dev/null && echo READY",
            d = sh_quote(dir),
            env = sh_quote(&format!("./.flow/{id}.env")),
        ))
    } else {
        return Some(ended(
            StepStatus::Failed,
            None,
            Some("`ready` has no probe".into()),
        ));
    };
    let what = probe.describe(plan);
    let status = r.helper(host, &["status", dir, id]).await.ok()?;
    let port_probe = match &probe {
        RemoteProbe::Port(p) => Some(r.helper(host, &["probe-port", &p.to_string()]).await.ok()?),
        _ => None,
    };
    // A user's probe command may take its time; the built-in ones answer at once.
    let probe_extra = if plan.cmd.is_some() {
        ANSWER_WITHIN
    } else {
        Duration::ZERO
    };
    let interval = Duration::from_millis(plan.interval_ms.max(10));
    let timeout = Duration::from_millis(plan.timeout_ms);
    let deadline = Instant::now() + timeout;
    loop {
        let now = *ctl.borrow();
        if now != Ctl::Run {
            return Some(match stop(r, job, dir, sig, grace_ms, ctl).await {
                Ok(mut e) => {
                    e.status = match stopped_status(now) {
                        StepStatus::Passed => StepStatus::Cancelled,
                        s => s,
                    };
                    e
                }
                Err(e) => e,
            });
        }
        let check = match &probe {
            RemoteProbe::Log(_, [oo, eo]) => {
                let read = r
                    .helper(host, &["read", dir, id, &oo.to_string(), &eo.to_string()])
                    .await
                    .ok()?;
                format!("{status}; {read}")
            }
            RemoteProbe::Port(_) => {
                format!(
                    "{status}; {} && echo READY",
                    port_probe.as_deref().unwrap_or("false")
                )
            }
            RemoteProbe::Cmd(c) => format!("{status}; {c}"),
            RemoteProbe::Matched => status.clone(),
        };
        match r.run_quick(host, &check, probe_extra).await {
            Ok(out) => {
                let (first, rest) = split_line(&out.stdout);
                let state = parse_state(&String::from_utf8_lossy(first));
                let ready = match &mut probe {
                    RemoteProbe::Log(matcher, offsets) => {
                        let mut matched = false;
                        for (name, bytes) in parse_frames(rest) {
                            let stream = usize::from(name == "err");
                            offsets[stream] += bytes.len() as u64;
                            matched |= matcher.feed(stream, &bytes);
                        }
                        matched
                    }
                    _ => String::from_utf8_lossy(rest)
                        .lines()
                        .any(|l| l.trim() == "READY"),
                };
                // Once matched, a log stays matched.
                if ready && let RemoteProbe::Log(..) = probe {
                    probe = RemoteProbe::Matched;
                }
                let ready = ready || matches!(probe, RemoteProbe::Matched);
                match state {
                    Some(State::Running) if ready => {
                        let _ = tx.send(Report::Ready {
                            idx: job.idx,
                            at: Stamp::now(),
                        });
                        return None;
                    }
                    Some(State::Exited(c)) => {
                        let exit = exit_of(c);
                        let (status, error) = if ready && exit.success() {
                            (StepStatus::Passed, None)
                        } else {
                            let when = if ready { "just after" } else { "before" };
                            (
                                StepStatus::Failed,
                                Some(format!(
                                    "{} {when} it was ready (probe: {what})",
                                    exit.describe()
                                )),
                            )
                        };
                        return Some(ended(status, Some(exit), error));
                    }
                    Some(State::Gone) => {
                        return Some(ended(
                            StepStatus::Failed,
                            None,
                            Some(format!("vanished before it was ready (probe: {what})")),
                        ));
                    }
                    _ => {}
                }
            }
            // ssh itself has retried and tried to reconnect: the host is lost.
            Err(e) => return Some(ended(StepStatus::Failed, None, Some(e))),
        }
        if Instant::now() >= deadline {
            let mut e = stop(r, job, dir, sig, grace_ms, ctl)
                .await
                .unwrap_or_else(|e| e);
            e.status = StepStatus::Failed;
            e.error = Some(format!(
                "not ready after {} (probe: {what})",
                fmt_duration(timeout)
            ));
            return Some(e);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = changed(ctl) => {}
        }
    }
}

/// Polls a started step until it ends, its timeout passes, or flow stops it.
async fn watch_until_end(
    r: &Arc<Inner>,
    job: &StepJob,
    dir: &str,
    ctl: &mut watch::Receiver<Ctl>,
    sig: &str,
    grace_ms: u64,
) -> Ended {
    let host = job.step.host.as_str();
    let id = job.step.id.as_str();
    let background = matches!(job.step.kind, StepKind::Service | StepKind::Monitor);
    let Ok(status) = r.helper(host, &["status", dir, id]).await else {
        return ended(
            StepStatus::Failed,
            None,
            Some(format!("host `{host}` is not ready")),
        );
    };
    let deadline = job
        .step
        .timeout_ms
        .map(|t| Instant::now() + Duration::from_millis(t));
    let mut poll = Duration::from_millis(20);
    loop {
        let now = *ctl.borrow();
        if now != Ctl::Run {
            return match stop(r, job, dir, sig, grace_ms, ctl).await {
                Ok(mut e) => {
                    e.status = stopped_status(now);
                    e
                }
                Err(e) => e,
            };
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let mut e = stop(r, job, dir, sig, grace_ms, ctl)
                .await
                .unwrap_or_else(|e| e);
            if !background {
                e.status = StepStatus::Failed;
                e.error = Some(format!(
                    "timed out after {}",
                    fmt_duration(Duration::from_millis(job.step.timeout_ms.unwrap_or(0)))
                ));
            }
            return e;
        }
        match r.run_quick(host, &status, Duration::ZERO).await {
            Ok(out) => match out.stdout_text().lines().next().and_then(parse_state) {
                Some(State::Exited(c)) => {
                    let exit = exit_of(c);
                    return if exit.success() {
                        ended(StepStatus::Passed, Some(exit), None)
                    } else if background {
                        ended(
                            StepStatus::Failed,
                            Some(exit),
                            Some(format!("{} while the run was going", exit.describe())),
                        )
                    } else {
                        ended(StepStatus::Failed, Some(exit), Some(exit.describe()))
                    };
                }
                Some(State::Gone) => {
                    return ended(
                        StepStatus::Failed,
                        None,
                        Some(format!("vanished from host `{host}`")),
                    );
                }
                _ => {}
            },
            Err(e) => return ended(StepStatus::Failed, None, Some(e)),
        }
        let wait = deadline.map_or(poll, |d| {
            poll.min(d.saturating_duration_since(Instant::now()))
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = changed(ctl) => {}
        }
        poll = (poll * 3 / 2).min(Duration::from_millis(if background { 1000 } else { 250 }));
    }
}

/// Stops a remote step through its helper; the status is the caller's.
/// `Err`: it could not be stopped (its host is lost), a failure whatever
/// the reason for stopping.
async fn stop(
    r: &Arc<Inner>,
    job: &StepJob,
    dir: &str,
    sig: &str,
    grace_ms: u64,
    ctl: &watch::Receiver<Ctl>,
) -> Result<Ended, Ended> {
    let host = job.step.host.as_str();
    let id = job.step.id.as_str();
    let (sig, grace) = if *ctl.borrow() == Ctl::Kill {
        ("KILL", 0)
    } else {
        (sig, grace_ms)
    };
    let grace_s = grace.to_string();
    let Ok(cmd) = r.helper(host, &["stop", dir, id, sig, &grace_s]).await else {
        return Err(ended(
            StepStatus::Failed,
            None,
            Some(format!("cannot stop it: host `{host}` is not ready")),
        ));
    };
    // The helper waits out the grace on the host; a second Ctrl-C meanwhile
    // sends SIGKILL through a second call at once, and the first then ends
    // as soon as the group is gone.
    let graceful = r.run_quick(host, &cmd, Duration::from_millis(grace));
    tokio::pin!(graceful);
    let mut ctl = ctl.clone();
    let mut killed = false;
    let answer = loop {
        tokio::select! {
            out = &mut graceful => break out,
            now = changed_to_kill(&mut ctl), if !killed => {
                if now {
                    killed = true;
                    if let Ok(kill) = r.helper(host, &["stop", dir, id, "KILL", "0"]).await {
                        let _ = r.run_quick(host, &kill, Duration::ZERO).await;
                    }
                }
            }
        }
    };
    let sent: Vec<String> = match answer {
        Ok(out) => {
            let mut sent: Vec<String> = out
                .stdout_text()
                .split_whitespace()
                .map(String::from)
                .collect();
            if killed && sent.last().is_none_or(|s| s != "KILL") {
                sent.push("KILL".into());
            }
            sent
        }
        Err(e) => {
            return Err(ended(
                StepStatus::Failed,
                None,
                Some(format!("cannot stop it: {e}")),
            ));
        }
    };
    // The exit status, when the wrapper lived to write it.
    let state = match r.helper(host, &["status", dir, id]).await {
        Ok(c) => r
            .run(host, &c)
            .await
            .ok()
            .and_then(|o| o.stdout_text().lines().next().and_then(parse_state)),
        Err(_) => None,
    };
    let exit = match state {
        Some(State::Exited(c)) => Some(exit_of(c)),
        _ if sent.last().is_some_and(|s| s == "KILL") => Some(Exit::Signal(9)),
        _ => None,
    };
    let mut e = ended(StepStatus::Passed, exit, None);
    if sent.len() > 1 {
        e.error = Some(format!(
            "did not exit within {} of SIG{}; killed",
            fmt_duration(Duration::from_millis(grace)),
            sent[0]
        ));
    }
    e.stop_signals = sent;
    Ok(e)
}

/// Resolves `true` once the owner asks for `Kill`; `false` when it is gone.
async fn changed_to_kill(ctl: &mut watch::Receiver<Ctl>) -> bool {
    loop {
        if *ctl.borrow_and_update() == Ctl::Kill {
            return true;
        }
        if ctl.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Appends a running task's output to its local log files as the host's
/// helper reports it grow (`-v` tails those files). Ends when the step
/// does, or when aborted; the exact files are pulled afterwards anyway.
async fn follow(r: Arc<Inner>, host: String, dir: String, id: String, out: PathBuf, err: PathBuf) {
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    let Ok(cmd) = r.helper(&host, &["follow", &dir, &id]).await else {
        return;
    };
    let Ok(mut child) = r.hosts.ssh().spawn(&host, &cmd).await else {
        return;
    };
    let Some(mut stdout) = child.stdout.take() else {
        return;
    };
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    };
    let (mut fo, mut fe) = (open(&out), open(&err));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        // Whole frames only; a partial one waits for more bytes.
        let mut used = 0;
        while let Some(frame) = next_frame(&pending[used..]) {
            let Ok(frame) = frame else {
                return;
            };
            let file = if frame.name == "out" {
                &mut fo
            } else {
                &mut fe
            };
            if let Some(f) = file {
                let _ = f.write_all(frame.body);
            }
            used += frame.len;
        }
        pending.drain(..used);
    }
    let _ = child.wait().await;
}

/// Copies the step's output files from the host into `logs/`; returns the
/// host's start and end times of the step.
async fn pull_logs(r: &Arc<Inner>, job: &StepJob, dir: &str, base: (u64, u64)) -> StartEnd {
    let host = job.step.host.as_str();
    if let Ok(cmd) = r.helper(host, &["logs", dir, &job.step.id]).await
        && let Ok(out) = r.run(host, &cmd).await
    {
        return write_logs(job, &out.stdout, base);
    }
    (None, None)
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Writes an attempt's output after what earlier attempts wrote (`base`:
/// the files' lengths when the attempt started; what `-v` appended since is
/// replaced by the exact output); returns the host's start and end times.
fn write_logs(job: &StepJob, framed: &[u8], base: (u64, u64)) -> StartEnd {
    let mut times = (None, None);
    for (name, bytes) in parse_frames(framed) {
        let path = match name.as_str() {
            "out" => &job.out,
            "err" => &job.err,
            "t0" => {
                times.0 = parse_ns(&bytes);
                continue;
            }
            "t1" => {
                times.1 = parse_ns(&bytes);
                continue;
            }
            _ => continue,
        };
        let keep = if name == "out" { base.0 } else { base.1 };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .and_then(|f| {
                use std::io::{Seek, Write};
                f.set_len(keep)?;
                let mut f = f;
                f.seek(std::io::SeekFrom::End(0))?;
                f.write_all(&bytes)
            });
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
    times
}

/// `(start, end)` of a step on its host's wall clock, nanoseconds.
type StartEnd = (Option<u64>, Option<u64>);

/// `date +%s%N` output; `None` where `%N` is not supported.
fn parse_ns(b: &[u8]) -> Option<u64> {
    let t = std::str::from_utf8(b).ok()?.trim();
    if t.len() < 16 || !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Pulls what `patterns` match under the host's `dir` into
/// `run_dir/hosts/<host>/` with rsync, one [`Transfer`] per file.
async fn fetch(
    r: &Arc<Inner>,
    host: &str,
    dir: &str,
    patterns: &[String],
    run_dir: &Path,
) -> Vec<Transfer> {
    let missing = |p: &str, status: String| Transfer {
        host: host.into(),
        remote: format!("{dir}/{p}"),
        local: String::new(),
        bytes: 0,
        sha256: String::new(),
        ms: 0,
        status,
    };
    let dir = match r.absolute(host, dir).await {
        Ok(d) => d,
        Err(e) => {
            return patterns
                .iter()
                .map(|p| missing(p, format!("error: {e}")))
                .collect();
        }
    };
    // Which paths each pattern matches, as the host's shell globs them.
    let mut list = format!("cd {} || exit 1\n", sh_quote(&dir));
    // Each match with its type, so that FIFOs, devices, dangling links and
    // links out of the run dir are recorded here and never transferred:
    // `f` file or folder, `l` link, `D` dangling link, `p` FIFO, `s`
    // socket, `c` device.
    for (i, p) in patterns.iter().enumerate() {
        list.push_str(&format!(
            "for f in {}; do \
               if [ -L \"$f\" ]; then if [ -e \"$f\" ]; then t=l; else t=D; fi; \
               elif [ -p \"$f\" ]; then t=p; elif [ -S \"$f\" ]; then t=s; \
               elif [ -b \"$f\" ] || [ -c \"$f\" ]; then t=c; \
               elif [ -e \"$f\" ]; then t=f; else continue; fi; \
               printf '{i}\\t%s\\t%s\\t%s\\n' \"$t\" \"$f\" \"$(readlink \"$f\" 2>/dev/null)\"; \
             done\n",
            glob_word(p)
        ));
    }
    list.push_str("true\n");
    let listed = match r.run(host, &list).await {
        Ok(out) if out.code == 0 => out.stdout_text(),
        Ok(out) => {
            let why = format!(
                "error: cannot list `{dir}`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return patterns.iter().map(|p| missing(p, why.clone())).collect();
        }
        Err(e) => {
            return patterns
                .iter()
                .map(|p| missing(p, format!("error: {e}")))
                .collect();
        }
    };
    let mut matched: Vec<Vec<String>> = vec![Vec::new(); patterns.len()];
    // Matches that are recorded without a transfer, per pattern.
    let mut not_sent: Vec<Vec<Transfer>> = vec![Vec::new(); patterns.len()];
    let dir_path = Path::new(&dir);
    for line in listed.lines() {
        let mut f = line.splitn(4, '\t');
        let (Some(i), Some(kind), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let target = PathBuf::from(f.next().unwrap_or_default());
        let Ok(i) = i.parse::<usize>() else { continue };
        if i >= matched.len() || !safe_relative(path) {
            continue;
        }
        let at = dir_path.join(path);
        let found = match kind {
            "p" => Some(Found::Special(at, "a FIFO")),
            "s" => Some(Found::Special(at, "a socket")),
            "c" => Some(Found::Special(at, "a device")),
            "D" => Some(Found::Dangling(at, target)),
            "l" if !link_stays_inside(dir_path, &at, &target) => Some(Found::LinkOut(at, target)),
            _ => None,
        };
        match found {
            Some(found) => not_sent[i].push(found.transfer(
                host,
                dir_path,
                &dir,
                &run_dir.join("hosts").join(host),
                |_, _| Err(std::io::Error::other("not transferred")),
            )),
            None => matched[i].push(path.to_string()),
        }
    }
    let dest = run_dir.join("hosts").join(host);
    let all: Vec<&String> = matched.iter().flatten().collect();
    let t0 = Instant::now();
    let mut rsync_error = None;
    if !all.is_empty() {
        let _ = std::fs::create_dir_all(&dest);
        let list_file = run_dir.join(format!(".fetch-{host}.list"));
        let _ = std::fs::write(
            &list_file,
            all.iter().map(|s| format!("{s}\n")).collect::<String>(),
        );
        let tar = !r.host_info(host).await.is_ok_and(|i| i.rsync);
        let out = match r.rsync_ssh(host) {
            Ok(_) if tar => fetch_tar(r, host, &dir, &all, &dest).await,
            Ok(ssh) => tokio::process::Command::new("rsync")
                .args([
                    "-a",
                    "-r",
                    "--safe-links",
                    "--no-specials",
                    "--no-devices",
                    "--files-from",
                ])
                .arg(&list_file)
                .args(["-e", &ssh])
                .arg(format!("{}:{dir}/", r.address(host)))
                .arg(format!("{}/", dest.display()))
                .output()
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&list_file);
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => rsync_error = Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => rsync_error = Some(e),
        }
    }
    let ms = t0.elapsed().as_millis() as u64;
    let mut transfers = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let recorded = !not_sent[i].is_empty();
        transfers.append(&mut not_sent[i]);
        if matched[i].is_empty() {
            if !recorded {
                transfers.push(missing(p, "missing".into()));
            }
            continue;
        }
        for m in &matched[i] {
            // What arrived, walked as on a local host: links are recorded,
            // not followed; only regular files are read (hashed).
            let mut found = Vec::new();
            let local = dest.join(m);
            if std::fs::symlink_metadata(&local).is_err() {
                let status = rsync_error
                    .clone()
                    .map_or("missing".into(), |e| format!("error: {e}"));
                transfers.push(missing(m, status));
                continue;
            }
            walk(&dest, &local, &mut found);
            for f in found {
                // A link whose target was not fetched dangles here, not on
                // the host: it is a link all the same.
                let f = match f {
                    Found::Dangling(p, t) => Found::Link(p, t),
                    other => other,
                };
                let mut t = f.transfer(host, &dest, &dir, &dest, |p, _| hash_file(p));
                t.ms = ms;
                transfers.push(t);
            }
        }
        if let Some(e) = &rsync_error
            && !matched[i].is_empty()
        {
            // rsync failed part way: what arrived is recorded, and so is
            // the failure, which fails the fetch.
            transfers.push(missing(p, format!("error: {e}")));
        }
    }
    transfers
}

/// [`fetch`] where rsync is missing: one tar stream from the host, unpacked
/// as it comes; then, as rsync's `--safe-links` would, links that point out
/// of what was fetched are removed.
async fn fetch_tar(
    r: &Inner,
    host: &str,
    dir: &str,
    paths: &[&String],
    dest: &Path,
) -> Result<std::process::Output, String> {
    let mut cmd = format!("cd {} && tar -cf - --", sh_quote(dir));
    for p in paths {
        cmd.push(' ');
        cmd.push_str(&sh_quote(p));
    }
    let mut remote = r
        .hosts
        .ssh()
        .spawn(host, &cmd)
        .await
        .map_err(|e| e.to_string())?;
    drop(remote.stdin.take());
    let stream: std::process::Stdio = remote
        .stdout
        .take()
        .ok_or("no output from the host")?
        .try_into()
        .map_err(|e: std::io::Error| e.to_string())?;
    let local = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(dest)
        .args(["-xf", "-"])
        .stdin(stream)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let sent = remote.wait_with_output().await.map_err(|e| e.to_string())?;
    drop_unsafe_links(dest, dest);
    if !sent.status.success() {
        return Ok(sent);
    }
    Ok(local)
}

/// Removes symlinks under `p` that are absolute or climb out of `root`.
fn drop_unsafe_links(root: &Path, p: &Path) {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return;
    };
    if m.file_type().is_symlink() {
        let target = std::fs::read_link(p).unwrap_or_default();
        if !link_stays_inside(root, p, &target) {
            let _ = std::fs::remove_file(p);
        }
    } else if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            drop_unsafe_links(root, &e.path());
        }
    }
}

/// A path the host listed that stays inside the run dir.
fn safe_relative(p: &str) -> bool {
    !p.starts_with('/') && !p.split('/').any(|c| c == "..")
}

/// A fetch pattern for the remote shell: glob characters stay active, the
/// rest is quoted.
fn glob_word(p: &str) -> String {
    let mut out = String::new();
    let mut lit = String::new();
    for c in p.chars() {
        if matches!(c, '*' | '?' | '[' | ']') {
            if !lit.is_empty() {
                out.push_str(&remote_word(&lit));
                lit.clear();
            }
            out.push(c);
        } else {
            lit.push(c);
        }
    }
    if !lit.is_empty() {
        out.push_str(&remote_word(&lit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_states_parse() {
        assert_eq!(parse_state("a@b running"), Some(State::Running));
        assert_eq!(parse_state("a@b exited 143"), Some(State::Exited(143)));
        assert_eq!(parse_state("a@b gone"), Some(State::Gone));
        assert_eq!(parse_state("garbage"), None);
        assert_eq!(exit_of(143), Exit::Signal(15));
        assert_eq!(exit_of(3), Exit::Code(3));
    }

    #[test]
    fn framed_logs_parse_with_any_bytes_inside() {
        let b = b"out 6\na\nb\nc\nerr 0\n";
        assert_eq!(
            parse_frames(b),
            vec![
                ("out".to_string(), b"a\nb\nc\n".to_vec()),
                ("err".to_string(), Vec::new())
            ]
        );
        assert_eq!(split_line(b"123\nrest"), (&b"123"[..], &b"rest"[..]));
        // As the follower reads: a frame cut short waits for its bytes.
        assert_eq!(next_frame(b"out 6\na\nb"), None);
        assert_eq!(next_frame(b"out 6"), None);
        assert_eq!(
            next_frame(b"out 6\na\nb\nc\nerr 0\n"),
            Some(Ok(super::super::remote::Frame {
                name: "out",
                body: b"a\nb\nc\n",
                len: 12
            }))
        );
        assert_eq!(next_frame(b"garbage\n"), Some(Err(())));
        // A truncated last frame of a whole reply keeps what arrived.
        assert_eq!(
            parse_frames(b"out 2\nokerr 9\npart"),
            vec![
                ("out".to_string(), b"ok".to_vec()),
                ("err".to_string(), b"part".to_vec())
            ]
        );
    }

    #[test]
    fn fetch_patterns_keep_globs_and_quote_the_rest() {
        assert_eq!(glob_word("*.csv"), "*.csv");
        assert_eq!(glob_word("out dir/x-?.log"), "'out dir/x-'?.log");
        assert!(safe_relative("a/b.csv"));
        assert!(!safe_relative("../x"));
        assert!(!safe_relative("/etc/passwd"));
    }
}
