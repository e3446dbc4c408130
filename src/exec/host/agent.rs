//! The agent channel: one long-lived session per remote host running the
//! helper as `helper.sh agent`, which serves one request per line. A step
//! start, a status poll, a log read, a signal or a port probe is then one
//! round trip over a pipe that is already open, instead of a new ssh session
//! (≈ 0.1 s of sshd CPU each).
//!
//! Requests are shell words on one line: `RID INPUT COMMAND ARGS…`, INPUT
//! being `-` or `=` and the input in `printf %b` escapes; each answer is
//! `R RID STATUS OUT_LEN ERR_LEN`, that many bytes, and a newline (checked:
//! a channel whose lengths went wrong is closed, never read on; and srun,
//! which passes a task's output on in whole lines, passes each answer at
//! once). The helper serves
//! them in order; answers are matched to callers by RID, so any number of
//! supervisors share the channel.
//!
//! Steps never depend on the channel (they run under setsid): when it dies,
//! the next call opens a new one, and a retried request picks up where the
//! lost one left off.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use super::HostError;
use crate::exec::ssh::sh_quote;

/// The helper's first line on a new channel.
const HELLO: &str = "flow-agent 1";
/// A channel that does not say hello within this long is not one.
const HELLO_WITHIN: Duration = Duration::from_secs(20);
/// How long a lost channel is tried again, a retried request included.
const RECONNECT_WITHIN: Duration = Duration::from_secs(30);
/// A host that did not answer in time (its link is down, it hangs) is not
/// asked again for this long: every request fails at once, so a run's
/// teardown does not wait out a timeout per call.
const LOST_HOLD: Duration = Duration::from_secs(30);

/// Opens a new session running `helper.sh agent` (stdin and stdout piped).
pub type Opener =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Child, String>> + Send>> + Send + Sync>;

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Reply {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

struct Conn {
    /// Taken (closed) when the channel is closed.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Pending,
    dead: Arc<AtomicBool>,
    child: Mutex<Option<Child>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.reader.abort();
        if let Ok(mut c) = self.child.lock()
            && let Some(c) = c.as_mut()
        {
            let _ = c.start_kill();
        }
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One host's channel.
pub struct Agent {
    host: String,
    open: Opener,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next: AtomicU64,
    /// When and why the host last failed to answer in time.
    silent: Mutex<Option<(std::time::Instant, String)>>,
}

impl Agent {
    pub fn new(host: &str, open: Opener) -> Agent {
        Agent {
            host: host.to_string(),
            open,
            conn: tokio::sync::Mutex::new(None),
            next: AtomicU64::new(1),
            silent: Mutex::new(None),
        }
    }

    fn lost(&self, reason: impl Into<String>) -> HostError {
        HostError::Lost {
            host: self.host.clone(),
            reason: reason.into(),
        }
    }

    /// The open channel, or a new one.
    async fn conn(&self) -> Result<Arc<Conn>, HostError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.dead.load(Ordering::SeqCst)
        {
            return Ok(Arc::clone(c));
        }
        if let Some(old) = slot.take() {
            old.kill();
        }
        let mut child = (self.open)().await.map_err(|e| self.lost(e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(self.lost("the agent session has no pipes"));
        };
        let mut stdout = BufReader::new(stdout);
        let mut hello = String::new();
        let said = tokio::time::timeout(HELLO_WITHIN, stdout.read_line(&mut hello)).await;
        if !matches!(said, Ok(Ok(n)) if n > 0) || hello.trim_end() != HELLO {
            let _ = child.start_kill();
            let mut why = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), err.read_to_string(&mut why))
                        .await;
            }
            let why = crate::exec::ssh::clean_stderr(why.as_bytes());
            return Err(self.lost(if why.is_empty() {
                format!("the helper did not answer (said {:?})", hello.trim_end())
            } else {
                why
            }));
        }
        // ssh's own complaints go nowhere: the channel's health is told by
        // its answers.
        drop(child.stderr.take());
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_answers(
            stdout,
            Arc::clone(&pending),
            Arc::clone(&dead),
        ));
        let conn = Arc::new(Conn {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            dead,
            child: Mutex::new(Some(child)),
            reader,
        });
        tracing::debug!(host = %self.host, "agent channel open");
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// One request over the channel, answered within `within`. A channel
    /// that fails or does not answer in time is closed (the next call opens
    /// a new one) and the error is [`HostError::Lost`]: the request may or
    /// may not have been served.
    pub async fn call_once(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        within: Duration,
    ) -> Result<Reply, HostError> {
        let line = request_line(0, args, input).map_err(HostError::Failed)?;
        if let Some(why) = self.still_silent() {
            return Err(self.lost(why));
        }
        let conn = self.conn().await?;
        let rid = self.next.fetch_add(1, Ordering::Relaxed);
        let line = format!("{rid} {line}\n");
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = conn.pending.lock() {
            p.insert(rid, tx);
        }
        let started = std::time::Instant::now();
        let sent = {
            let mut w = conn.stdin.lock().await;
            match w.as_mut() {
                Some(w) => match w.write_all(line.as_bytes()).await {
                    Ok(()) => w.flush().await,
                    Err(e) => Err(e),
                },
                None => Err(std::io::Error::other("the channel is closed")),
            }
        };
        if let Err(e) = sent {
            conn.kill();
            return Err(self.lost(format!("the agent channel broke: {e}")));
        }
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(reply)) => {
                tracing::trace!(host = %self.host, ms = started.elapsed().as_secs_f64() * 1e3, "agent {}", args.first().unwrap_or(&""));
                Ok(reply)
            }
            Ok(Err(_)) => {
                conn.kill();
                Err(self.lost("the agent channel closed"))
            }
            Err(_) => {
                if let Ok(mut p) = conn.pending.lock() {
                    p.remove(&rid);
                }
                conn.kill();
                let why = format!("no answer within {}", crate::duration::format(within));
                if let Ok(mut s) = self.silent.lock() {
                    *s = Some((std::time::Instant::now(), why.clone()));
                }
                Err(self.lost(why))
            }
        }
    }

    /// Why the host counts as lost, while it is held so.
    fn still_silent(&self) -> Option<String> {
        let s = self.silent.lock().ok()?;
        let (at, why) = s.as_ref()?;
        (at.elapsed() < LOST_HOLD).then(|| why.clone())
    }

    /// Whether the host is held lost (it did not answer in time lately).
    pub fn is_silent(&self) -> bool {
        self.still_silent().is_some()
    }

    /// A request that may be served twice (a status poll, a log read, a
    /// signal by step id): tried again on a new channel while the host is
    /// lost, for up to [`RECONNECT_WITHIN`].
    pub async fn call(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        within: Duration,
    ) -> Result<Reply, HostError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.call_once(args, input, within).await {
                // A channel that broke is opened again; a host that stopped
                // answering is not waited for twice.
                Err(HostError::Lost { reason, .. })
                    if started.elapsed() + pause < RECONNECT_WITHIN
                        && self.still_silent().is_none() =>
                {
                    tracing::debug!(host = %self.host, "agent channel lost ({reason}); opening another");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                r => return r,
            }
        }
    }

    /// Ends the channel (the helper exits at end of input).
    pub async fn close(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            // End of input: the helper's loop ends and so does the session.
            drop(c.stdin.lock().await.take());
            let child = c.child.lock().ok().and_then(|mut c| c.take());
            if let Some(mut child) = child {
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let _ = child.start_kill();
            }
            c.kill();
        }
    }
}

/// Reads answers until the channel ends; then wakes every caller still
/// waiting (their receivers see the sender dropped).
async fn read_answers(mut out: BufReader<ChildStdout>, pending: Pending, dead: Arc<AtomicBool>) {
    let mut head = String::new();
    loop {
        head.clear();
        match out.read_line(&mut head).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some((rid, code, lo, le)) = parse_head(&head) else {
            tracing::warn!("the agent said {:?}; closing its channel", head.trim_end());
            break;
        };
        let mut stdout = vec![0u8; lo];
        let mut stderr = vec![0u8; le];
        let mut end = [0u8; 1];
        if out.read_exact(&mut stdout).await.is_err()
            || out.read_exact(&mut stderr).await.is_err()
            || out.read_exact(&mut end).await.is_err()
        {
            break;
        }
        // The answer's last byte: anything else means the lengths were not
        // the bytes sent, and nothing more on this channel can be trusted.
        if end != *b"\n" {
            tracing::warn!(
                "the agent's answer {rid} did not end where it said; closing its channel"
            );
            break;
        }
        let waiter = pending.lock().ok().and_then(|mut p| p.remove(&rid));
        if let Some(w) = waiter {
            let _ = w.send(Reply {
                code,
                stdout,
                stderr,
            });
        }
    }
    dead.store(true, Ordering::SeqCst);
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

/// `R RID STATUS OUT_LEN ERR_LEN`.
fn parse_head(line: &str) -> Option<(u64, i32, usize, usize)> {
    let mut w = line.split_whitespace();
    if w.next()? != "R" {
        return None;
    }
    let r = (
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
        w.next()?.parse().ok()?,
    );
    w.next().is_none().then_some(r)
}

/// `INPUT COMMAND ARGS…` (without the RID): every word shell-quoted, the
/// input escaped for `printf %b` so that the request stays one line.
pub fn request_line(_rid: u64, args: &[&str], input: Option<&[u8]>) -> Result<String, String> {
    let mut s = match input {
        None => "-".to_string(),
        Some(bytes) => sh_quote(&format!("={}", escape_b(bytes)?)),
    };
    for a in args {
        if a.contains('\n') || a.contains('\0') {
            return Err(format!("an agent argument holds a line break: {a:?}"));
        }
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    Ok(s)
}

/// Bytes as `printf %b` reads them back: `\\`, `\n` and `\0NNN` for the
/// other control bytes; NUL cannot pass (no shell value holds it).
fn escape_b(bytes: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    for &b in bytes {
        match b {
            0 => return Err("the input holds a NUL byte".into()),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\0{b:03o}").as_bytes()),
            b => out.push(b),
        }
    }
    // Bytes that are not UTF-8 pass through the shell as they are; the
    // request is built as a Rust string, so they are written as escapes.
    Ok(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => e
            .into_bytes()
            .iter()
            .map(|&b| {
                if b >= 0x80 {
                    format!("\\0{b:03o}")
                } else {
                    (b as char).to_string()
                }
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_agent(dir: &std::path::Path) -> Agent {
        agent_under(dir, &[], &["agent"])
    }

    /// An agent on this machine started by `prefix` (a program and its
    /// arguments), as `unshare --pid --fork`.
    fn agent_under(dir: &std::path::Path, prefix: &[&str], args: &[&str]) -> Agent {
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let flow = dir.join(".flow");
        std::fs::create_dir_all(&flow).expect("mkdir");
        let helper = flow.join("helper.sh");
        std::fs::write(&helper, crate::exec::remote::HELPER).expect("write helper");
        Agent::new(
            "test",
            Box::new(move || {
                let helper = helper.clone();
                let prefix = prefix.clone();
                let args = args.clone();
                Box::pin(async move {
                    let mut cmd = match prefix.split_first() {
                        Some((program, args)) => {
                            let mut c = tokio::process::Command::new(program);
                            c.args(args).arg("sh");
                            c
                        }
                        None => tokio::process::Command::new("sh"),
                    };
                    cmd.arg(&helper)
                        .args(&args)
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .kill_on_drop(true)
                        .spawn()
                        .map_err(|e| e.to_string())
                })
            }),
        )
    }

    /// The pid of the helper under the agent's open channel.
    async fn helper_pid(agent: &Agent) -> nix::unistd::Pid {
        let slot = agent.conn.lock().await;
        let conn = slot.as_ref().expect("open");
        let child = conn.child.lock().expect("lock");
        let pid = child.as_ref().and_then(|c| c.id()).expect("pid");
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"))
    }

    #[test]
    fn answer_heads_parse_strictly() {
        assert_eq!(parse_head("R 7 0 12 3\n"), Some((7, 0, 12, 3)));
        assert_eq!(parse_head("R 7 0 12\n"), None);
        assert_eq!(parse_head("X 7 0 1 2\n"), None);
        assert_eq!(parse_head("R 7 0 1 2 9\n"), None);
    }

    #[tokio::test]
    async fn input_with_any_byte_but_nul_arrives_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = local_agent(dir.path());
        let run = dir.path().join("run");
        let run = run.to_string_lossy();
        // Every byte from 1 to 255, quotes, backslashes, `%`, and lines.
        let mut script = b"printf '%s' \"$X\" > got; cat <<'EOF' >> got\n".to_vec();
        let tricky: Vec<u8> = (1u8..=255).filter(|&b| b != b'\n').collect();
        script.extend_from_slice(&tricky);
        script.extend_from_slice(b"\n\\\\n %b %s '\"\nEOF\n");
        let full = [b"export X='a b'\n".as_slice(), &script].concat();
        let r = agent
            .call_once(
                &["start", &run, "s", "-"],
                Some(&full),
                Duration::from_secs(10),
            )
            .await
            .expect("start");
        assert_eq!(r.code, 0, "{}", r.stderr_text());
        let cmd = std::fs::read(dir.path().join("run/.flow/s.cmd")).expect("cmd file");
        assert_eq!(cmd, full);
        assert!(escape_b(b"a\0b").is_err());
        agent.close().await;
    }

    #[tokio::test]
    async fn concurrent_callers_get_their_own_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = Arc::new(local_agent(dir.path()));
        let run = dir.path().join("run").to_string_lossy().into_owned();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            let (agent, run) = (Arc::clone(&agent), run.clone());
            set.spawn(async move {
                let id = format!("s{i}");
                let r = agent
                    .call(&["status", &run, &id], None, Duration::from_secs(10))
                    .await
                    .expect("status");
                (id, r.stdout_text())
            });
        }
        while let Some(r) = set.join_next().await {
            let (id, text) = r.expect("join");
            assert_eq!(text.trim(), format!("{id} unknown"));
        }
        let bad = agent
            .call(&["nonsense"], None, Duration::from_secs(10))
            .await
            .expect("an answer");
        assert_eq!(bad.code, 2);
        assert!(bad.stderr_text().contains("unknown command"), "{bad:?}");
        agent.close().await;
    }

    /// Agents on the nodes of a cluster share a workdir over NFS, and may
    /// have the same pid: each must still answer with its own bytes. Here
    /// both are pid 1, each in a pid namespace of its own, and their
    /// answers differ in length.
    #[tokio::test]
    #[ignore = "needs root: each agent runs in a pid namespace of its own"]
    async fn agents_with_one_pid_in_one_workdir_keep_their_answers_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidns = ["unshare", "--pid", "--fork", "--kill-child"];
        let agents = [
            Arc::new(agent_under(dir.path(), &pidns, &["agent"])),
            Arc::new(agent_under(dir.path(), &pidns, &["agent"])),
        ];
        let run = dir.path().join("run").to_string_lossy().into_owned();
        let mut set = tokio::task::JoinSet::new();
        for (a, agent) in agents.iter().enumerate() {
            let (agent, run) = (Arc::clone(agent), run.clone());
            set.spawn(async move {
                let id = format!("step-{}", "x".repeat(1 + a * 40));
                for _ in 0..200 {
                    let r = agent
                        .call(&["status", &run, &id], None, Duration::from_secs(10))
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    let want = format!("{id} unknown");
                    if r.stdout_text().trim() != want {
                        return Err(format!("{:?} instead of {want:?}", r.stdout_text()));
                    }
                }
                Ok::<(), String>(())
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("join").expect("each agent's own answer");
        }
        for agent in agents {
            agent.close().await;
        }
    }

    /// A job step's agent (`--own-steps`) told to end by Slurm stops the
    /// steps it started; a plain agent's steps outlive it.
    #[tokio::test]
    async fn an_agent_that_owns_its_steps_stops_them_as_it_ends() {
        for (own, survives) in [(true, false), (false, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let args: &[&str] = if own {
                &["agent", "--own-steps"]
            } else {
                &["agent"]
            };
            let agent = agent_under(dir.path(), &[], args);
            let run = dir.path().join("run").to_string_lossy().into_owned();
            let r = agent
                .call_once(
                    &["start", &run, "s", "sleep 300"],
                    None,
                    Duration::from_secs(10),
                )
                .await
                .expect("start");
            assert_eq!(r.code, 0, "{}", r.stderr_text());
            let step: i32 = r.stdout_text().trim().parse().expect("pid");
            let pid = helper_pid(&agent).await;
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("term");
            let t0 = std::time::Instant::now();
            let gone = || nix::sys::signal::killpg(nix::unistd::Pid::from_raw(step), None).is_err();
            // The one that must survive is given a second to be wrongly stopped.
            let within = Duration::from_secs(if survives { 1 } else { 5 });
            while !gone() && t0.elapsed() < within {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(!gone(), survives, "own-steps {own}");
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(step),
                nix::sys::signal::Signal::SIGKILL,
            );
            agent.close().await;
        }
    }

    #[tokio::test]
    async fn a_dead_channel_is_replaced_by_the_next_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = local_agent(dir.path());
        let run = dir.path().join("run").to_string_lossy().into_owned();
        agent
            .call(&["status", &run, "a"], None, Duration::from_secs(10))
            .await
            .expect("first");
        // Kill the helper under the channel.
        let pid = helper_pid(&agent).await;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
        let r = agent
            .call(&["status", &run, "a"], None, Duration::from_secs(10))
            .await
            .expect("answered on a new channel");
        assert_eq!(r.stdout_text().trim(), "a unknown");
        agent.close().await;
    }

    #[tokio::test]
    async fn a_host_that_stops_answering_is_not_waited_for_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = local_agent(dir.path());
        let run = dir.path().join("run").to_string_lossy().into_owned();
        agent
            .call(&["status", &run, "a"], None, Duration::from_secs(10))
            .await
            .expect("first");
        let pid = helper_pid(&agent).await;
        // As a host whose link went down: it never answers.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop");
        let t0 = std::time::Instant::now();
        let e = agent
            .call(&["status", &run, "a"], None, Duration::from_millis(300))
            .await
            .expect_err("no answer");
        assert!(matches!(e, HostError::Lost { .. }), "{e:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "not retried: {:?}",
            t0.elapsed()
        );
        let t1 = std::time::Instant::now();
        let again = agent
            .call(&["status", &run, "a"], None, Duration::from_secs(10))
            .await
            .expect_err("still lost");
        assert_eq!(again, e);
        assert!(t1.elapsed() < Duration::from_millis(100), "failed at once");
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}
