//! A flow that runs on another machine (a "dev VM" near the hosts):
//! `flow run --detach --controller HOST` pushes flow itself, the project
//! folder and the inventory there, and starts the detached flow there, its
//! artifact there. The local artifact folder is a copy marked with
//! `remote.json`: `flow status`, `attach` and `stop` forward to the
//! controller, `flow sync` brings the artifact back (incrementally, also
//! while it runs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cli::{RunArgs, SyncArgs};
use crate::diag::display_path;
use crate::exec::ssh::{Target, plain_command, sh_quote};

use super::status::resolve;
use super::{Error, exit};

/// Marks a local artifact folder as a copy of one on a controller host.
pub const REMOTE_FILE: &str = "remote.json";

/// The inventory file pushed with the project (`--hosts`).
const PUSHED_HOSTS: &str = ".flow-hosts.yaml";

/// Where an artifact runs: `remote.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteArtifact {
    /// The artifact id (the same there and here).
    pub id: String,
    /// How the controller host is reached.
    pub target: Target,
    /// The flow binary there.
    pub flow: String,
    /// The project folder there (flow's working directory).
    pub project: String,
    /// The artifact folder there.
    pub artifact: String,
}

impl RemoteArtifact {
    /// The one in `dir`, if `dir` is a copy of a remote artifact.
    pub fn of(dir: &Path) -> Option<RemoteArtifact> {
        let text = std::fs::read(dir.join(REMOTE_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Runs `flow ARGS` on the controller, in its project folder, with
    /// this terminal's stdout and stderr; returns its exit code.
    pub fn forward(&self, args: &[&str]) -> Result<i32, Error> {
        let mut line = format!("cd {} && {}", sh_quote(&self.project), sh_quote(&self.flow));
        for a in args {
            line.push(' ');
            line.push_str(&sh_quote(a));
        }
        let status = ssh(&self.target)
            .arg(&line)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| Error::io("run ssh for", Path::new(&self.target.address), e))?;
        Ok(status.code().unwrap_or(exit::FAILED))
    }
}

fn ssh(t: &Target) -> Command {
    let argv = plain_command(t);
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).arg(&t.address).arg("--");
    c
}

/// One connection to the controller host for everything `--detach`
/// does there (a master, reused by each command and by rsync).
struct Session {
    rt: tokio::runtime::Runtime,
    ssh: crate::exec::ssh::Ssh,
    t: Target,
}

impl Session {
    fn open(t: &Target) -> Result<Session, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("start the runtime for", Path::new(&t.address), e))?;
        let ssh = crate::exec::ssh::Ssh::new(vec![t.clone()])
            .map_err(|e| Error::io("set up ssh for", Path::new(&t.address), e))?;
        let s = Session {
            rt,
            ssh,
            t: t.clone(),
        };
        s.rt.block_on(s.ssh.connect(&t.name)).map_err(|e| {
            Error::Invalid(format!(
                "error: cannot reach controller host `{}`: {e}\n  = help: `--controller` takes an inventory host's name or an ssh destination `[user@]address[:port]`\n",
                t.name
            ))
        })?;
        Ok(s)
    }

    /// Runs a shell line there; its stdout, or an error that names the
    /// host and what it said.
    fn run(&self, line: &str, stdin: Option<&[u8]>) -> Result<String, Error> {
        let out = self
            .rt
            .block_on(self.ssh.run(&self.t.name, line, stdin))
            .map_err(|e| {
                Error::Invalid(format!("error: controller host `{}`: {e}\n", self.t.name))
            })?;
        if out.code != 0 {
            return Err(Error::Invalid(format!(
                "error: controller host `{}`: `{line}` failed (exit {}):\n{}\n",
                self.t.name,
                out.code,
                String::from_utf8_lossy(&out.stderr).trim_end()
            )));
        }
        Ok(out.stdout_text())
    }

    /// `rsync -e` over the master.
    fn rsync_e(&self) -> String {
        self.ssh
            .command_for(&self.t.name)
            .map(|v| v.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| rsync_e(&self.t))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.rt.block_on(self.ssh.close());
    }
}

/// `--controller HOST`: an inventory host by that name, or an ssh
/// destination `[user@]address[:port]` (the user's ssh config applies).
fn target(spec: &str, inventory: &crate::suite::Inventory) -> (Target, Option<String>) {
    if let Some(h) = inventory.host(spec).filter(|h| !h.is_local()) {
        return (Target::of(h, inventory), h.workdir.clone());
    }
    let (user, rest) = match spec.split_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, spec),
    };
    let (address, port) = match rest.rsplit_once(':') {
        Some((a, p)) if p.parse::<u16>().is_ok() => (a.to_string(), p.parse().ok()),
        _ => (rest.to_string(), None),
    };
    (
        Target {
            name: spec.to_string(),
            address,
            user,
            port,
            jump: None,
            identity: None,
            options: Vec::new(),
            config: None,
            srun_node: None,
        },
        None,
    )
}

/// `uname -m` names for this build's architecture.
fn same_arch(remote: &str) -> bool {
    let here = std::env::consts::ARCH;
    remote == here || (here == "aarch64" && remote == "arm64")
}

/// Names this build of flow: its size and modification time, hashed
/// (hashing the whole binary would cost a second on every detach).
fn build_key(p: &Path) -> Result<String, Error> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).map_err(|e| Error::io("read", p, e))?;
    let d = sha2::Sha256::digest(format!("{} {} {}", m.size(), m.mtime(), m.mtime_nsec()));
    Ok(crate::exec::fetch::hex(&d)[..16].to_string())
}

/// `flow run --detach --controller HOST`.
pub fn start(
    args: &RunArgs,
    host: &str,
    inventory: &crate::suite::Inventory,
) -> Result<i32, Error> {
    let (t, workdir) = target(host, inventory);
    let base = match &workdir {
        Some(w) => format!("{}/controller", w.trim_end_matches('/')),
        None => "$HOME/.flow".to_string(),
    };
    let quoted_base = if workdir.is_some() {
        sh_quote(&base)
    } else {
        base.clone()
    };
    let here = std::env::current_dir().map_err(|e| Error::io("read", Path::new("."), e))?;
    let name = here
        .file_name()
        .map_or_else(|| "project".into(), |n| n.to_string_lossy().into_owned());
    let path_hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(here.display().to_string().as_bytes());
        crate::exec::fetch::hex(&d)[..8].to_string()
    };
    let exe = std::env::current_exe().map_err(|e| Error::io("find", Path::new("flow"), e))?;
    // flow itself, by build: a different build goes beside, never over,
    // the one a running flow uses.
    let flow_name = format!("flow-{}-{}", env!("CARGO_PKG_VERSION"), build_key(&exe)?);
    let session = Session::open(&t)?;
    // What is there, in one round trip: its system, where flow keeps its
    // files, whether this flow and rsync are there.
    let facts = session.run(
        &format!(
            "uname -sm && mkdir -p {quoted_base}/bin {quoted_base}/projects && cd {quoted_base} && pwd && \
             (command -v rsync >/dev/null && echo rsync || echo no-rsync) && \
             (test -x bin/{flow_name} && echo have || echo missing)"
        ),
        None,
    )?;
    let mut lines = facts.lines();
    let uname = lines.next().unwrap_or("");
    let base = lines.next().unwrap_or("").trim().to_string();
    let remote_rsync = lines.next() == Some("rsync");
    let have = lines.next() == Some("have");
    let mut u = uname.split_whitespace();
    let (os, arch) = (u.next().unwrap_or(""), u.next().unwrap_or(""));
    if os != "Linux" || !same_arch(arch) {
        return Err(Error::Invalid(format!(
            "error: controller host `{}` is {os} {arch}; this flow is a Linux {} build and cannot run there\n  = help: build or install flow of this version on `{}` for its architecture, or pick a controller of the same architecture\n",
            t.name,
            std::env::consts::ARCH,
            t.name
        )));
    }
    let flow = format!("{base}/bin/{flow_name}");
    let mut err = std::io::stderr().lock();
    if !have {
        let bytes = std::fs::read(&exe).map_err(|e| Error::io("read", &exe, e))?;
        let _ = writeln!(
            err,
            "pushing flow ({}) to `{}`",
            super::status::human_bytes(bytes.len() as u64),
            t.name
        );
        let tmp = format!("{flow}.tmp.{}", std::process::id());
        session.run(
            &format!(
                "cat > {q} && chmod 755 {q} && mv {q} {}",
                sh_quote(&flow),
                q = sh_quote(&tmp)
            ),
            Some(&bytes),
        )?;
    }
    // The project: this folder, without artifacts, .git and target.
    let project = format!("{base}/projects/{name}-{path_hash}");
    let artifacts_rel = args
        .artifacts
        .strip_prefix(&here)
        .unwrap_or(&args.artifacts)
        .display()
        .to_string();
    let _ = writeln!(
        err,
        "pushing `{}` to `{}:{project}`",
        display_path(&here),
        t.name
    );
    push_project(&session, &here, &project, &artifacts_rel, remote_rsync)?;
    // The inventory given with --hosts goes along.
    let mut remote_args: Vec<String> = vec!["run".into(), "--detach".into()];
    let suite = &args.suite.suite;
    let suite_there = match Path::new(suite).strip_prefix(&here) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => suite.clone(),
    };
    remote_args.extend(["--suite".into(), suite_there]);
    if let Some(h) = &args.suite.hosts {
        let text = std::fs::read(h).map_err(|e| Error::io("read", h, e))?;
        session.run(
            &format!("cat > {}", sh_quote(&format!("{project}/{PUSHED_HOSTS}"))),
            Some(&text),
        )?;
        remote_args.extend(["--hosts".into(), PUSHED_HOSTS.into()]);
    }
    for s in &args.suite.set {
        remote_args.extend(["--set".into(), s.clone()]);
    }
    for o in &args.only {
        remote_args.extend(["--only".into(), o.clone()]);
    }
    if let Some(s) = args.shard {
        remote_args.extend(["--shard".into(), s.to_string()]);
    }
    remote_args.extend([
        "--max-runs".into(),
        args.suite.max_runs.to_string(),
        "--artifacts".into(),
        "artifacts".into(),
    ]);
    remote_args.extend(super::run::execution_options(args));
    let mut line = format!("cd {} && {}", sh_quote(&project), sh_quote(&flow));
    for a in &remote_args {
        line.push(' ');
        line.push_str(&sh_quote(a));
    }
    let out = session.run(&line, None)?;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("artifact: artifacts/"))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "error: the flow on `{}` did not say which artifact it made; it said:\n{out}",
                t.name
            ))
        })?;
    let remote = RemoteArtifact {
        id: id.clone(),
        target: t.clone(),
        flow,
        project: project.clone(),
        artifact: format!("{project}/artifacts/{id}"),
    };
    // The local copy: `remote.json`, then what is there so far.
    let local = crate::artifact::ArtifactDir::adopt(&args.artifacts, &id)
        .map_err(|e| Error::io("create", &args.artifacts.join(&id), e))?;
    let json = serde_json::to_vec_pretty(&remote).unwrap_or_default();
    crate::artifact::atomic_write(&local.path.join(REMOTE_FILE), &json)
        .map_err(|e| Error::io("write", &local.path.join(REMOTE_FILE), e))?;
    sync_from(&remote, &local.path, &session.rsync_e())?;
    drop(session);
    let mut stdout = std::io::stdout().lock();
    for l in out.lines().take_while(|l| !l.starts_with("detached:")) {
        let _ = writeln!(stdout, "{l}");
    }
    let _ = writeln!(
        stdout,
        "detached on `{}`: flow runs it there, its artifact in {}\n  flow status {id}   how far it is (--watch to follow)\n  flow attach {id}   follow its output (Ctrl-C stops following, not the run)\n  flow sync {id}     bring the artifact here (again: only what changed)\n  flow stop {id}     stop it cleanly: teardown, fetch, analysis",
        t.name, remote.artifact
    );
    Ok(exit::OK)
}

fn push_project(
    session: &Session,
    here: &Path,
    project: &str,
    artifacts_rel: &str,
    remote_rsync: bool,
) -> Result<(), Error> {
    let excludes = [
        format!("/{}/", artifacts_rel.trim_matches('/')),
        "/.git/".to_string(),
        "/target/".to_string(),
    ];
    let local_rsync = Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let t = &session.t;
    session.run(&format!("mkdir -p {}", sh_quote(project)), None)?;
    if local_rsync && remote_rsync {
        let mut c = Command::new("rsync");
        c.args(["-a", "--delete"]);
        for e in &excludes {
            c.arg("--exclude").arg(e);
        }
        // Never the inventory pushed earlier, which --delete would remove.
        c.arg("--exclude").arg(format!("/{PUSHED_HOSTS}"));
        let e = session.rsync_e();
        let out = c
            .arg("-e")
            .arg(e)
            .arg(format!("{}/", here.display()))
            .arg(format!("{}:{project}/", t.address))
            .output()
            .map_err(|e| Error::io("run rsync for", here, e))?;
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "error: cannot push `{}` to `{}`: {}\n",
                display_path(here),
                t.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(());
    }
    // No rsync on one side: one tar stream.
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(here).arg("-cf").arg("-");
    for e in &excludes {
        tar.arg(format!("--exclude=.{}", e.trim_end_matches('/')));
    }
    let out = tar
        .arg(".")
        .output()
        .map_err(|e| Error::io("run tar in", here, e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "error: cannot pack `{}`: {}\n",
            display_path(here),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    session.run(
        &format!("tar -C {} -xf -", sh_quote(project)),
        Some(&out.stdout),
    )?;
    Ok(())
}

fn rsync_e(t: &Target) -> String {
    plain_command(t)
        .iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Brings the remote artifact into `local` with rsync: only what changed,
/// never `remote.json` or the remote flow's `flow.pid`.
fn sync_from(r: &RemoteArtifact, local: &Path, e: &str) -> Result<(), Error> {
    let out = Command::new("rsync")
        .args([
            "-a",
            "--partial",
            "--exclude",
            "/remote.json",
            "--exclude",
            "/flow.pid",
        ])
        .arg("-e")
        .arg(e)
        .arg(format!("{}:{}/", r.target.address, r.artifact))
        .arg(format!("{}/", local.display()))
        .output()
        .map_err(|e| Error::io("run rsync for", local, e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "error: cannot sync artifact `{}` from `{}`: {}\n",
            r.id,
            r.target.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `flow sync [ID]`.
pub fn sync(args: &SyncArgs) -> Result<i32, Error> {
    let dir = resolve(&args.artifacts, args.id.as_deref())?;
    let Some(r) = RemoteArtifact::of(&dir) else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "artifact `{}` runs on this machine: nothing to sync",
            display_path(&dir)
        );
        return Ok(exit::OK);
    };
    sync_from(&r, &dir, &rsync_e(&r.target))?;
    let (runs, _) = crate::results::load_runs(&dir);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "synced `{}` from `{}:{}`",
        display_path(&dir),
        r.target.name,
        r.artifact
    );
    // A copy of a run still going is not the whole artifact yet.
    if let Some(w) = crate::results::unfinished(&runs) {
        let _ = writeln!(out, "{w}: sync again once `flow status` says done");
    }
    Ok(exit::OK)
}

/// The remote artifact `dir` is a copy of, as the argument its flow takes.
pub fn forwarded(dir: &Path) -> Option<(RemoteArtifact, PathBuf)> {
    let r = RemoteArtifact::of(dir)?;
    let there = PathBuf::from(&r.artifact);
    Some((r, there))
}
