//! ssh hosts: the helper (see [`crate::exec::remote`]) installed in each
//! host's workdir and driven over one [`Agent`] channel per host; `files`
//! pushed and results fetched with rsync (tar where rsync is missing) over
//! the host's ssh master. [`SshHost`] is the [`Host`]; a started step is a
//! [`RemoteRunning`], which knows it by its run dir and step id only, so a
//! new channel picks it up where a lost one left it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::agent::{Agent, Reply};
use super::shell::{Hosts, OFFSET_PROBES};
use super::{BoxFuture, Finish, Host, HostError, Running, StartEnd, file_len};
use crate::artifact::run_result::{Exit, Leak};
use crate::clock::{ClockOffset, Probe, best_offset};
use crate::exec::fetch::{Found, Transfer, hash_file, hex, link_stays_inside, walk};
use crate::exec::remote::{
    HELPER, helper_command, install_command, next_frame, parse_frames, remote_word,
};
use crate::exec::ssh::sh_quote;
use crate::exec::step::StepJob;
use crate::plan::RunCommand;
use crate::suite::{Inventory, StepKind};

/// A request to the agent (a status poll, a start, a log read) unanswered
/// for this long means the channel is dead.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// Status polls of a running step start this often and slow down to
/// [`POLL_TASK`] (tasks) or [`POLL_BACKGROUND`] (services and monitors).
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_TASK: Duration = Duration::from_millis(250);
const POLL_BACKGROUND: Duration = Duration::from_secs(1);

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
    /// What dead flows left on each host was dealt with (once, before this
    /// flow's first run there).
    swept: HashMap<String, tokio::sync::OnceCell<()>>,
    /// (host, absolute workdir) this flow took, given back at close.
    locked: std::sync::Mutex<Vec<(String, String)>>,
    /// One agent channel per host, opened at its first request.
    agents: HashMap<String, Agent>,
    /// Each host's last clock offset measurement (see [`CLOCK_REUSE`]).
    clocks: std::sync::Mutex<HashMap<String, ClockOffset>>,
}

/// A host's clock offset measured less than this long ago is used again
/// instead of measuring it anew (with the time it was measured): offsets
/// drift by microseconds a second, well inside a measurement's bound, and
/// back-to-back short runs would otherwise spend 16 round trips a run on
/// them.
const CLOCK_REUSE: Duration = Duration::from_secs(2);

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
        let hosts = Hosts::new(inventory, &remote)?;
        let agents = remote
            .iter()
            .filter_map(|n| inventory.host(n))
            .map(|h| {
                let ssh = Arc::clone(hosts.ssh());
                let (name, workdir) = (h.name.clone(), h.workdir_for(Path::new("")));
                // A job step's agent ends when its job does (cancelled, out
                // of time): the steps it started end with it.
                let args: &[&str] = match h.transport {
                    crate::suite::Transport::Srun => &["agent", "--own-steps"],
                    crate::suite::Transport::Ssh => &["agent"],
                };
                let cmd = helper_command(&workdir, args);
                let open: super::agent::Opener = Box::new(move || {
                    let (ssh, name, cmd) = (Arc::clone(&ssh), name.clone(), cmd.clone());
                    Box::pin(async move { ssh.spawn(&name, &cmd).await.map_err(|e| e.to_string()) })
                });
                (h.name.clone(), Agent::new(&h.name, open))
            })
            .collect();
        Ok(Remote(Arc::new(Inner {
            hosts,
            agents,
            workdirs,
            homes: remote
                .iter()
                .map(|n| (n.clone(), tokio::sync::OnceCell::new()))
                .collect(),
            pushed: Mutex::new(HashSet::new()),
            swept: remote
                .iter()
                .map(|n| (n.clone(), tokio::sync::OnceCell::new()))
                .collect(),
            run,
            locked: std::sync::Mutex::new(Vec::new()),
            clocks: std::sync::Mutex::new(HashMap::new()),
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

    /// `name` as a [`Host`].
    pub fn host(&self, name: &str) -> SshHost {
        SshHost {
            name: name.to_string(),
            r: Arc::clone(&self.0),
        }
    }

    /// Gives back the workdirs this flow took, then closes the connections.
    pub async fn close(&self) {
        for a in self.0.agents.values() {
            a.close().await;
        }
        let locked: Vec<(String, String)> = self
            .0
            .locked
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let owner = self.0.owner();
        let mut set = tokio::task::JoinSet::new();
        for (host, workdir) in locked {
            // A host held lost is not waited for: its lock, left behind by
            // a flow that has ended, is taken over by the next one.
            if self.0.agents.get(&host).is_some_and(Agent::is_silent) {
                continue;
            }
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
    /// `flow resume`/`attach`: this artifact's leftovers are its own
    /// steps, to be taken over.
    pub resuming: bool,
}

impl Inner {
    /// `CONTROLLER ARTIFACT`, as the lock records its owner.
    fn owner(&self) -> String {
        format!(
            "{} {}",
            crate::exec::controller::identity(),
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
            if code == 4 && crate::exec::controller::is_dead(controller) {
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
        // srun carries no rsync protocol: files move with tar there.
        let rsync =
            lines.next() == Some("rsync") && local_rsync() && !self.hosts.ssh().is_srun(host);
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
        if let Some(run) = &self.run
            && run.lock
        {
            self.take(host, &workdir, first_lock).await?;
        }
        Ok(HostInfo { home, rsync })
    }

    /// Once per host, before this flow's first run there: what dead flows
    /// left (see [`Inner::reap_leftovers`]).
    async fn sweep_once(&self, host: &str) -> Result<(), String> {
        if self.run.is_none() {
            return Ok(());
        }
        let workdir = self.absolute(host, self.workdir(host)).await?;
        if let Some(cell) = self.swept.get(host) {
            cell.get_or_init(|| self.reap_leftovers(host, &workdir))
                .await;
        }
        Ok(())
    }

    /// Deals with what flows that are no longer running (killed with
    /// `kill -9`, say) left on `host` from this workdir, before anything new
    /// starts there: what they wrote is fetched into their artifact, then
    /// they are stopped. Leftovers of a flow still running, or of one on another
    /// machine, are left alone. Says what it did on stderr.
    async fn reap_leftovers(&self, host: &str, workdir: &str) {
        // Over the agent channel, which the run needs next anyway (the
        // helper is installed by now; `ready` would wait for this setup).
        let Ok(agent) = self.agent(host) else {
            return;
        };
        let Ok(out) = agent.call(&["leftovers"], None, ANSWER_WITHIN).await else {
            return;
        };
        let own = self
            .run
            .as_ref()
            .filter(|r| r.resuming)
            .map(|r| r.artifact.as_str());
        // Per dead flow: its artifact, and the run dirs of its steps here.
        let mut dead: Vec<(String, String, Vec<String>)> = Vec::new();
        for l in crate::exec::controller::parse_leftovers(&out.stdout_text()) {
            if Some(l.artifact.as_str()) == own || !crate::exec::controller::is_dead(&l.controller)
            {
                continue;
            }
            let i = match dead.iter().position(|(c, _, _)| *c == l.controller) {
                Some(i) => i,
                None => {
                    dead.push((l.controller.clone(), l.artifact.clone(), Vec::new()));
                    dead.len() - 1
                }
            };
            if !l.run_dir.is_empty() && !dead[i].2.contains(&l.run_dir) {
                dead[i].2.push(l.run_dir);
            }
        }
        for (controller, artifact, run_dirs) in dead {
            let pid = controller.split(':').nth(2).unwrap_or("?");
            // Their data first: into their own artifact, when it is on this
            // machine; otherwise they are left running for their owner.
            let here = !run_dirs.is_empty()
                && run_dirs
                    .iter()
                    .all(|d| Path::new(d).join("plan.json").is_file());
            if !here {
                eprintln!(
                    "warning: host `{host}`: steps of artifact {artifact} (flow pid {pid}, no longer running) still run there; its folder is not on this machine, so they are left running: \
                     `flow attach {artifact}` where it is takes them over, `flow reap {artifact}` stops them"
                );
                continue;
            }
            let mut rescued = (0u64, 0u64, 0u64);
            for d in &run_dirs {
                let r = self.rescue(host, Path::new(d)).await;
                rescued = (rescued.0 + r.0, rescued.1 + r.1, rescued.2 + r.2);
            }
            let reap = [
                "reap".to_string(),
                format!("{}={controller}", crate::exec::controller::VAR),
                format!("FLOW_WORKDIR={workdir}"),
            ];
            let reap: Vec<&str> = reap.iter().map(String::as_str).collect();
            if let Ok(out) = agent.call(&reap, None, ANSWER_WITHIN).await {
                let n = out.stdout_text().lines().count();
                if n > 0 {
                    let failed = if rescued.2 > 0 {
                        format!(", {} failed", rescued.2)
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "warning: host `{host}`: fetched what the steps of artifact {artifact} (flow pid {pid}, no longer running) wrote into that artifact ({} file{}, {} bytes{failed}), then stopped them ({n} process{})",
                        rescued.0,
                        if rescued.0 == 1 { "" } else { "s" },
                        rescued.1,
                        if n == 1 { "" } else { "es" }
                    );
                }
            }
        }
    }

    /// Fetches what the fetch steps on `host` of the run in `run_dir` (a
    /// dead flow's, on this machine) would, into that run's folder, and
    /// records it there as a rescue; returns (files, bytes, failed).
    async fn rescue(&self, host: &str, run_dir: &Path) -> (u64, u64, u64) {
        let Ok(text) = std::fs::read(run_dir.join("plan.json")) else {
            return (0, 0, 0);
        };
        let Ok(plan) = serde_json::from_slice::<crate::plan::RunPlan>(&text) else {
            return (0, 0, 0);
        };
        let mut tally = crate::exec::fetch::Tally::default();
        for s in plan
            .steps
            .iter()
            .filter(|s| s.kind == StepKind::Fetch && s.host == host)
        {
            for t in fetch(self, host, &s.cwd, &s.paths, run_dir, s.limits()).await {
                tally.add(&t);
            }
        }
        let mut failed = tally.failed;
        if tally.append_to(&run_dir.join("fetch.log")).is_err() {
            // Fetched but not recorded: not a complete rescue.
            failed += 1;
        }
        crate::exec::run::append_event(
            &run_dir.join("events.jsonl"),
            "rescued",
            &serde_json::json!({"host": host, "by": crate::exec::controller::identity(), "files": tally.files, "bytes": tally.bytes, "failed": failed}),
        );
        (tally.files, tally.bytes, failed)
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

    async fn run(&self, host: &str, cmd: &str) -> Result<crate::exec::ssh::Output, String> {
        self.hosts
            .ssh()
            .run_within(host, cmd, None, None)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sets the host up (once), so that its agent can be asked.
    async fn ready(&self, host: &str) -> Result<(), HostError> {
        self.host_info(host)
            .await
            .map(drop)
            .map_err(HostError::Failed)
    }

    fn agent(&self, host: &str) -> Result<&Agent, HostError> {
        self.agents
            .get(host)
            .ok_or_else(|| HostError::Failed(format!("host `{host}` is not a remote host")))
    }

    /// A request to the host's helper that may be served twice.
    async fn call(&self, host: &str, args: &[&str]) -> Result<Reply, HostError> {
        self.ready(host).await?;
        self.agent(host)?.call(args, None, ANSWER_WITHIN).await
    }

    /// [`Inner::call`] with `input` on the command's stdin.
    async fn call_with(&self, host: &str, args: &[&str], input: &[u8]) -> Result<Reply, HostError> {
        self.ready(host).await?;
        self.agent(host)?
            .call(args, Some(input), ANSWER_WITHIN)
            .await
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

/// One ssh host of an invocation.
pub struct SshHost {
    name: String,
    r: Arc<Inner>,
}

impl Host for SshHost {
    fn prepare<'a>(
        &'a self,
        dir: &'a str,
        files: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (r, host) = (&self.r, self.name.as_str());
            r.sweep_once(host).await?;
            let dir = r.absolute(host, dir).await?;
            let fail = |what: &str, reply: &Reply| {
                format!(
                    "host `{host}`: cannot {what} `{dir}`: {}",
                    reply.stderr_text()
                )
            };
            if files.is_empty() {
                let reply = r
                    .call(host, &["prepare", &dir])
                    .await
                    .map_err(|e| e.to_string())?;
                return if reply.code == 0 {
                    Ok(())
                } else {
                    Err(fail("create", &reply))
                };
            }
            let hash = files_hash(files);
            let workdir = r.absolute(host, r.workdir(host)).await?;
            let cache = format!("{workdir}/.flow/files/{hash}");
            let key = (host.to_string(), hash.clone());
            let mut pushed = r.pushed.lock().await;
            // Exit 5: the cache is not there yet (another invocation may
            // have left it: files are content-addressed).
            let mut reply = r
                .call(host, &["prepare", &dir, &cache])
                .await
                .map_err(|e| e.to_string())?;
            if reply.code == 5 && !pushed.contains(&key) {
                push(r, host, files, &cache).await?;
                reply = r
                    .call(host, &["prepare", &dir, &cache])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            pushed.insert(key);
            if reply.code == 0 {
                Ok(())
            } else {
                Err(fail("copy the workload's files into", &reply))
            }
        })
    }

    fn spawn<'a>(
        &'a self,
        job: &'a StepJob,
        _attempt: u32,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, HostError>> {
        Box::pin(async move {
            let (r, host) = (&self.r, self.name.as_str());
            let id = job.step.id.as_str();
            let dir = r
                .absolute(host, &job.cwd.to_string_lossy())
                .await
                .map_err(HostError::Failed)?;
            let script = remote_script(job).map_err(HostError::Failed)?;
            // This attempt's output goes after what earlier attempts wrote.
            let base = (file_len(&job.out), file_len(&job.err));
            // Not retried on a new channel: a start must not run twice.
            r.ready(host).await?;
            let reply = r
                .agent(host)?
                .call_once(
                    &["start", &dir, id, "-"],
                    Some(script.as_bytes()),
                    ANSWER_WITHIN,
                )
                .await?;
            if reply.code != 0 {
                return Err(HostError::Failed(format!(
                    "cannot start on host `{host}`: {}",
                    reply.stderr_text()
                )));
            }
            let pid = reply
                .stdout_text()
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
                .unwrap_or(0);
            Ok(Box::new(remote_running(r, host, dir, pid, job, base)) as Box<dyn Running>)
        })
    }

    fn adopt<'a>(
        &'a self,
        job: &'a StepJob,
        pid: i32,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, HostError>> {
        Box::pin(async move {
            let (r, host) = (&self.r, self.name.as_str());
            let dir = r
                .absolute(host, &job.cwd.to_string_lossy())
                .await
                .map_err(HostError::Failed)?;
            // Its whole output comes home when it ends. A first attempt's
            // replaces what the dead flow's follower had brought of it; a
            // later attempt's goes after what the run's logs hold now
            // (earlier attempts, and possibly part of this one).
            let base = if job.adopt.is_some_and(|a| a.attempt <= 1) {
                (0, 0)
            } else {
                (file_len(&job.out), file_len(&job.err))
            };
            r.ready(host).await?;
            Ok(Box::new(remote_running(r, host, dir, pid, job, base)) as Box<dyn Running>)
        })
    }

    fn set_aside<'a>(&'a self, dir: &'a str, suffix: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (r, host) = (&self.r, self.name.as_str());
            let dir = r.absolute(host, dir).await?;
            let to = format!("{dir}.{suffix}");
            let script = format!(
                "if [ -e {d} ]; then mv -- {d} {t}; fi\n",
                d = sh_quote(&dir),
                t = sh_quote(&to)
            );
            let reply = r
                .call_with(host, &["script"], script.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            if reply.code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "host `{host}`: cannot move `{dir}` aside: {}",
                    reply.stderr_text()
                ))
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
        Box::pin(async move { fetch(&self.r, &self.name, dir, patterns, run_dir, limits).await })
    }

    fn clock(&self) -> BoxFuture<'_, Option<ClockOffset>> {
        Box::pin(async move {
            let (r, host) = (&self.r, self.name.as_str());
            let recent = r
                .clocks
                .lock()
                .ok()
                .and_then(|c| c.get(host).copied())
                .filter(|c| {
                    crate::clock::Stamp::now().wall_ns.saturating_sub(c.at_ns)
                        < CLOCK_REUSE.as_nanos() as u64
                });
            if recent.is_some() {
                return recent;
            }
            r.ready(host).await.ok()?;
            let agent = r.agent(host).ok()?;
            let mut probes = Vec::with_capacity(OFFSET_PROBES);
            for _ in 0..OFFSET_PROBES {
                let before = crate::clock::Stamp::now().wall_ns;
                let Ok(reply) = agent.call_once(&["now"], None, ANSWER_WITHIN).await else {
                    break;
                };
                let after = crate::clock::Stamp::now().wall_ns;
                if let Ok(remote) = reply.stdout_text().trim().parse::<u64>() {
                    probes.push(Probe {
                        before_ns: before,
                        remote_ns: remote,
                        after_ns: after,
                    });
                }
            }
            let best = best_offset(&probes);
            if let (Some(c), Ok(mut cache)) = (best, r.clocks.lock()) {
                cache.insert(host.to_string(), c);
            }
            best
        })
    }

    fn sweep<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Vec<Leak>> {
        Box::pin(async move {
            let (r, host) = (&self.r, self.name.as_str());
            // A host never set up ran nothing of this invocation.
            if !r.homes.get(host).is_some_and(|c| c.initialized()) {
                return Vec::new();
            }
            let tag = format!("{}={tag}", crate::exec::process::RUN_TAG_VAR);
            let Ok(reply) = r.call(host, &["reap", &tag]).await else {
                return Vec::new();
            };
            reply
                .stdout_text()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .map(|pid| Leak {
                    pid,
                    cmdline: format!("(on host `{host}`)"),
                })
                .collect()
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

/// The handle of a step attempt the helper started as `pid` in `dir`.
fn remote_running(
    r: &Arc<Inner>,
    host: &str,
    dir: String,
    pid: i32,
    job: &StepJob,
    base: (u64, u64),
) -> RemoteRunning {
    let id = job.step.id.as_str();
    let background = matches!(job.step.kind, StepKind::Service | StepKind::Monitor);
    // A service's or monitor's output comes back as it is written (it may
    // run for a day); a task's with `-v`.
    let follower = (job.live || background).then(|| {
        tokio::spawn(follow(
            Arc::clone(r),
            host.to_string(),
            dir.clone(),
            id.to_string(),
            job.out.clone(),
            job.err.clone(),
        ))
    });
    RemoteRunning {
        r: Arc::clone(r),
        host: host.to_string(),
        dir,
        id: id.to_string(),
        pid,
        out: job.out.clone(),
        err: job.err.clone(),
        base,
        offsets: [0, 0],
        exit: None,
        killed: false,
        poll: POLL_FIRST,
        max_poll: if background {
            POLL_BACKGROUND
        } else {
            POLL_TASK
        },
        env: job.env.clone(),
        env_stored: false,
        follower,
    }
}

/// A step attempt started by a host's helper, known by its run dir and id.
struct RemoteRunning {
    r: Arc<Inner>,
    host: String,
    /// The step's run dir on the host (absolute).
    dir: String,
    id: String,
    pid: i32,
    out: PathBuf,
    err: PathBuf,
    /// The local log files' lengths before this attempt.
    base: (u64, u64),
    /// Read so far of the host's output files (`read_new`).
    offsets: [u64; 2],
    exit: Option<Exit>,
    /// SIGKILL was sent: a wrapper that vanished was killed by it.
    killed: bool,
    poll: Duration,
    max_poll: Duration,
    env: Vec<(String, String)>,
    /// The environment is stored on the host for `ready.cmd`.
    env_stored: bool,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl RemoteRunning {
    async fn call(&self, args: &[&str]) -> Result<Reply, HostError> {
        self.r.call(&self.host, args).await
    }

    fn failed(&self, what: &str, reply: &Reply) -> HostError {
        let err = reply.stderr_text();
        let why = if err.trim().is_empty() {
            format!(
                "the helper answered {:?} (exit status {})",
                reply.stdout_text().trim_end(),
                reply.code
            )
        } else {
            err.trim_end().to_string()
        };
        HostError::Failed(format!("host `{}`: cannot {what}: {why}", self.host))
    }
}

impl Running for RemoteRunning {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn wait(&mut self, within: Duration) -> BoxFuture<'_, Result<Option<Exit>, HostError>> {
        Box::pin(async move {
            let started = Instant::now();
            loop {
                if let Some(e) = self.exit {
                    return Ok(Some(e));
                }
                let reply = self.call(&["status", &self.dir, &self.id]).await?;
                match reply
                    .stdout_text()
                    .lines()
                    .next()
                    .and_then(|l| parse_state(l, &self.id))
                {
                    Some(State::Exited(c)) => self.exit = Some(exit_of(c)),
                    Some(State::Gone) if self.killed => self.exit = Some(Exit::Signal(9)),
                    Some(State::Gone) => {
                        return Err(HostError::Failed(format!(
                            "vanished from host `{}` (no exit status was written)",
                            self.host
                        )));
                    }
                    Some(State::Running) => {}
                    None => return Err(self.failed("ask for the step's status", &reply)),
                }
                if self.exit.is_some() {
                    continue;
                }
                let left = within.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Ok(None);
                }
                tokio::time::sleep(self.poll.min(left)).await;
                self.poll = (self.poll * 3 / 2).min(self.max_poll);
            }
        })
    }

    fn signal(&mut self, sig: Signal) -> BoxFuture<'_, Result<(), HostError>> {
        Box::pin(async move {
            if self.exit.is_some() {
                return Ok(());
            }
            let name = sig.as_str().trim_start_matches("SIG");
            let reply = self.call(&["signal", &self.dir, &self.id, name]).await?;
            if reply.code != 0 {
                return Err(self.failed("signal the step", &reply));
            }
            if sig == Signal::SIGKILL {
                self.killed = true;
            }
            // It is expected to end now: look again soon.
            self.poll = POLL_FIRST;
            Ok(())
        })
    }

    fn read_new(&mut self) -> BoxFuture<'_, Result<[Vec<u8>; 2], HostError>> {
        Box::pin(async move {
            let (oo, eo) = (self.offsets[0].to_string(), self.offsets[1].to_string());
            let reply = self.call(&["read", &self.dir, &self.id, &oo, &eo]).await?;
            if reply.code != 0 {
                return Err(self.failed("read the step's output", &reply));
            }
            let mut got = [Vec::new(), Vec::new()];
            for (name, bytes) in parse_frames(&reply.stdout) {
                let i = usize::from(name == "err");
                self.offsets[i] += bytes.len() as u64;
                got[i].extend_from_slice(&bytes);
            }
            Ok(got)
        })
    }

    fn probe_port(
        &mut self,
        port: u16,
        _limit: Duration,
    ) -> BoxFuture<'_, Result<bool, HostError>> {
        Box::pin(async move {
            let reply = self.call(&["probe-port", &port.to_string()]).await?;
            Ok(reply.code == 0)
        })
    }

    fn probe_cmd<'a>(
        &'a mut self,
        cmd: &'a str,
        limit: Duration,
    ) -> BoxFuture<'a, Result<bool, HostError>> {
        Box::pin(async move {
            // The step's environment is stored on the host once (never on a
            // command line); the probe runs in a session of its own, so that
            // a slow one holds up no other request.
            if !self.env_stored {
                let exports = env_exports(&self.env).map_err(HostError::Failed)?;
                self.r.ready(&self.host).await?;
                let reply = self
                    .r
                    .agent(&self.host)?
                    .call(
                        &["env", &self.dir, &self.id],
                        Some(exports.as_bytes()),
                        ANSWER_WITHIN,
                    )
                    .await?;
                if reply.code != 0 {
                    return Err(self.failed("store the step's environment", &reply));
                }
                self.env_stored = true;
            }
            let line = format!(
                "( cd {d} && . {env} && ( {cmd} ) ) >/dev/null 2>&1 </dev/null && echo READY",
                d = sh_quote(&self.dir),
                env = sh_quote(&format!("./.flow/{}.env", self.id)),
            );
            match self
                .r
                .hosts
                .ssh()
                .run_within(&self.host, &line, None, Some(limit + ANSWER_WITHIN))
                .await
            {
                Ok(out) => Ok(out.stdout_text().lines().any(|l| l.trim() == "READY")),
                Err(e) => Err(HostError::Lost {
                    host: self.host.clone(),
                    reason: e.to_string(),
                }),
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Finish> {
        Box::pin(async move {
            if let Some(f) = self.follower.take() {
                f.abort();
                let _ = f.await;
            }
            let reply = match self.call(&["finish", &self.dir, &self.id]).await {
                Ok(r) if r.code == 0 => r,
                Ok(r) => {
                    return Finish {
                        error: Some(self.failed("bring the step's logs back", &r).to_string()),
                        ..Finish::default()
                    };
                }
                Err(e) => {
                    return Finish {
                        error: Some(format!("cannot bring the step's logs back: {e}")),
                        ..Finish::default()
                    };
                }
            };
            let mut leaked = Vec::new();
            for (name, body) in parse_frames(&reply.stdout) {
                if name == "leaks" {
                    for l in String::from_utf8_lossy(&body).lines() {
                        let (pid, cmd) = l.split_once(' ').unwrap_or((l, ""));
                        if let Ok(pid) = pid.parse() {
                            leaked.push(Leak {
                                pid,
                                cmdline: format!("{} (on host `{}`)", cmd.trim(), self.host),
                            });
                        }
                    }
                }
            }
            let times = write_logs(&self.out, &self.err, &reply.stdout, self.base);
            Finish {
                leaked,
                host_times: Some(times),
                error: None,
            }
        })
    }
}

/// What `helper status` said about a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Exited(i32),
    Gone,
}

/// `ID STATE…` for step `id`: an answer about another step (a garbled
/// channel) is no answer, never that step's state.
fn parse_state(line: &str, id: &str) -> Option<State> {
    let mut w = line.split_whitespace();
    if w.next()? != id {
        return None;
    }
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

/// Writes an attempt's output after what earlier attempts wrote (`base`:
/// the files' lengths when the attempt started; what `-v` appended since is
/// replaced by the exact output); returns the host's start and end times.
fn write_logs(out: &Path, err: &Path, framed: &[u8], base: (u64, u64)) -> StartEnd {
    let mut times = (None, None);
    for (name, bytes) in parse_frames(framed) {
        let path = match name.as_str() {
            "out" => out,
            "err" => err,
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
    r: &Inner,
    host: &str,
    dir: &str,
    patterns: &[String],
    run_dir: &Path,
    limits: crate::exec::fetch::Limits,
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
    let listed = match r.call_with(host, &["script"], list.as_bytes()).await {
        Ok(out) if out.code == 0 => out.stdout_text(),
        Ok(out) => {
            let why = format!("error: cannot list `{dir}`: {}", out.stderr_text());
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
    // Over `max_bytes`: what is not fetched whole is measured on the host
    // first, left out of the transfer, then cut (head) or refused here.
    let limited = if limits.is_none() || all.is_empty() {
        Vec::new()
    } else {
        match limited_files(r, host, &dir, &all, &limits).await {
            Ok(l) => l,
            Err(e) => {
                return patterns
                    .iter()
                    .map(|p| missing(p, format!("error: cannot measure the files: {e}")))
                    .collect();
            }
        }
    };
    if !all.is_empty() {
        let _ = std::fs::create_dir_all(&dest);
        let list_file = run_dir.join(format!(".fetch-{host}.list"));
        let _ = std::fs::write(
            &list_file,
            all.iter().map(|s| format!("{s}\n")).collect::<String>(),
        );
        let exclude_file = run_dir.join(format!(".fetch-{host}.exclude"));
        let _ = std::fs::write(
            &exclude_file,
            limited
                .iter()
                .map(|(p, _)| format!("/{p}\n"))
                .collect::<String>(),
        );
        let tar = !r.host_info(host).await.is_ok_and(|i| i.rsync);
        let out = match r.rsync_ssh(host) {
            Ok(_) if tar => fetch_tar(r, host, &dir, &all, &dest, &limited).await,
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
                .arg("--exclude-from")
                .arg(&exclude_file)
                .args(["-e", &ssh])
                .arg(format!("{}:{dir}/", r.address(host)))
                .arg(format!("{}/", dest.display()))
                .output()
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&list_file);
        let _ = std::fs::remove_file(&exclude_file);
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => rsync_error = Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => rsync_error = Some(e),
        }
        // The first bytes of what is cut, one stream each.
        for (p, v) in &limited {
            if let crate::exec::fetch::Verdict::Head { n, .. } = v
                && let Err(e) = fetch_head(r, host, &dir, p, *n, &dest).await
            {
                rsync_error.get_or_insert(format!("`{p}`: {e}"));
            }
        }
    }
    let ms = t0.elapsed().as_millis() as u64;
    let mut transfers = Vec::new();
    let verdict_of = |remote: &str| {
        limited
            .iter()
            .find(|(p, _)| format!("{dir}/{p}") == remote)
            .map(|(_, v)| v)
    };
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
                // Left out for `max_bytes`, or lost in the transfer.
                let status = match verdict_of(&format!("{dir}/{m}")) {
                    Some(crate::exec::fetch::Verdict::Not(s)) => s.clone(),
                    _ => rsync_error
                        .clone()
                        .map_or("missing".into(), |e| format!("error: {e}")),
                };
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
                if let (Some(crate::exec::fetch::Verdict::Head { n, size }), true) =
                    (verdict_of(&t.remote), t.ok())
                {
                    t.status = crate::exec::fetch::truncated_status(*n, *size);
                }
                transfers.push(t);
            }
            // What was left out, under this match.
            for (p, v) in &limited {
                if let crate::exec::fetch::Verdict::Not(status) = v
                    && (p == m || p.starts_with(&format!("{m}/")))
                {
                    transfers.push(missing(p, status.clone()));
                }
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
    left_out: &[(String, crate::exec::fetch::Verdict)],
) -> Result<std::process::Output, String> {
    let mut cmd = format!("cd {} && tar -cf -", sh_quote(dir));
    if !left_out.is_empty() {
        cmd.push_str(" --anchored");
        for (p, _) in left_out {
            cmd.push_str(&format!(" --exclude={}", sh_quote(p)));
        }
    }
    cmd.push_str(" --");
    for p in paths {
        cmd.push(' ');
        cmd.push_str(&sh_quote(p));
    }
    let (remote, out) = spawn_reading(r, host, &cmd).await?;
    let stream: std::process::Stdio = out.try_into().map_err(|e: std::io::Error| e.to_string())?;
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

/// The regular files under `paths` (in `dir` on the host) that
/// `limits` do not let through whole, each with its verdict.
async fn limited_files(
    r: &Inner,
    host: &str,
    dir: &str,
    paths: &[&String],
    limits: &crate::exec::fetch::Limits,
) -> Result<Vec<(String, crate::exec::fetch::Verdict)>, String> {
    let mut script = format!("cd {} || exit 1\n", sh_quote(dir));
    for p in paths {
        script.push_str(&format!(
            "find {} -type f -exec sh -c 'for x; do printf \"%s\\t%s\\n\" \"$(wc -c < \"$x\")\" \"$x\"; done' sh {{}} + | sort -t \"$(printf '\\t')\" -k2\n",
            sh_quote(p)
        ));
    }
    let out = r
        .call_with(host, &["script"], script.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if out.code != 0 {
        return Err(out.stderr_text());
    }
    let mut files = Vec::new();
    for line in out.stdout_text().lines() {
        let Some((size, path)) = line.split_once('\t') else {
            continue;
        };
        let Ok(size) = size.trim().parse::<u64>() else {
            continue;
        };
        if safe_relative(path) {
            files.push((path.to_string(), size));
        }
    }
    let sizes: Vec<u64> = files.iter().map(|(_, s)| *s).collect();
    Ok(files
        .into_iter()
        .zip(limits.decide(&sizes))
        .filter(|(_, v)| *v != crate::exec::fetch::Verdict::Whole)
        .map(|((p, _), v)| (p, v))
        .collect())
}

/// Starts `cmd` on the host with nothing on its stdin; its stdout to read.
async fn spawn_reading(
    r: &Inner,
    host: &str,
    cmd: &str,
) -> Result<(tokio::process::Child, tokio::process::ChildStdout), String> {
    let mut remote = r
        .hosts
        .ssh()
        .spawn(host, cmd)
        .await
        .map_err(|e| e.to_string())?;
    drop(remote.stdin.take());
    let out = remote.stdout.take().ok_or("no output from the host")?;
    Ok((remote, out))
}

/// The first `n` bytes of `path` (in `dir` on the host) into `dest/path`.
async fn fetch_head(
    r: &Inner,
    host: &str,
    dir: &str,
    path: &str,
    n: u64,
    dest: &Path,
) -> Result<(), String> {
    let cmd = format!("cd {} && head -c {n} {}", sh_quote(dir), sh_quote(path));
    let local = dest.join(path);
    if let Some(parent) = local.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let (mut remote, mut out) = spawn_reading(r, host, &cmd).await?;
    let mut file = std::fs::File::create(&local).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        use std::io::Write as _;
        use tokio::io::AsyncReadExt as _;
        let n = out.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    file.sync_all().map_err(|e| e.to_string())?;
    let status = remote.wait().await.map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("`head -c {n}` failed on the host"));
    }
    Ok(())
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
    use crate::exec::remote::split_line;

    #[test]
    fn helper_states_parse() {
        assert_eq!(parse_state("a@b running", "a@b"), Some(State::Running));
        assert_eq!(
            parse_state("a@b exited 143", "a@b"),
            Some(State::Exited(143))
        );
        assert_eq!(parse_state("a@b gone", "a@b"), Some(State::Gone));
        assert_eq!(parse_state("garbage", "a@b"), None);
        assert_eq!(parse_state("c@d exited 0", "a@b"), None);
        assert_eq!(parse_state(" running", "a@b"), None);
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
            Some(Ok(crate::exec::remote::Frame {
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
