//! The remote supervisor: `helper.sh`, a POSIX-sh program flow installs on
//! each remote host under `<workdir>/.flow/helper-<hash>.sh` (a new hash is a
//! new file, so an older flow's helper is never overwritten mid-run). It
//! starts steps under `setsid` with pid, exit and output files in the run's
//! remote dir, reports their status, stops them (signal to the group, grace,
//! SIGKILL, verified), probes readiness on the host, and reaps what carries
//! a tag. A step's life is not tied to the ssh channel that started it.

use sha2::{Digest, Sha256};

use super::ssh::sh_quote;

/// The helper's source.
pub const HELPER: &str = include_str!("helper.sh");

/// `helper-<first 12 hex of sha256>.sh`.
pub fn helper_name() -> String {
    let digest = Sha256::digest(HELPER.as_bytes());
    format!("helper-{}.sh", &super::fetch::hex(&digest)[..12])
}

/// The helper's path under a host's workdir (`~` left for the remote shell).
pub fn helper_path(workdir: &str) -> String {
    format!("{}/.flow/{}", workdir.trim_end_matches('/'), helper_name())
}

/// A shell command that installs the helper (read from stdin), every time:
/// into the workdir's `.flow/`, which it first checks is the ssh user's own
/// and not writable by anyone else (as is the workdir), so that a file
/// another user planted there is never run. Exit 3 with a message on
/// stderr when the check fails.
pub fn install_command(workdir: &str) -> String {
    let w = remote_word(workdir.trim_end_matches('/'));
    let path = remote_word(&helper_path(workdir));
    format!(
        "umask 077 && mkdir -p {w}/.flow && \
         for d in {w} {w}/.flow; do \
           [ -O \"$d\" ] || {{ echo \"$d is not owned by $(id -un)\" >&2; exit 3; }}; \
           case $(ls -ld \"$d\" | cut -c6,9) in *w*) echo \"$d is writable by other users ($(ls -ld \"$d\" | cut -c1-10))\" >&2; exit 3;; esac; \
         done && \
         cat > {path}.tmp.$$ && mv -f {path}.tmp.$$ {path}"
    )
}

/// Quotes a remote path, leaving a leading `~/` for the remote shell to expand.
pub fn remote_word(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("~/{}", sh_quote(rest)),
        None if path == "~" => "~".into(),
        None => sh_quote(path),
    }
}

/// `sh <helper> <args…>` as one command line.
pub fn helper_command(workdir: &str, args: &[&str]) -> String {
    let mut s = format!("sh {}", remote_word(&helper_path(workdir)));
    for a in args {
        s.push(' ');
        s.push_str(&remote_word(a));
    }
    s
}

/// `(first line, rest)` of a byte string.
pub fn split_line(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b'\n') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// One frame of `helper logs` / `helper follow` output: `NAME N\n` and
/// N bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub name: &'a str,
    pub body: &'a [u8],
    /// Bytes of the input the frame took, header included.
    pub len: usize,
}

/// The frame at the start of `b`. `None` while it is incomplete;
/// `Some(Err)` for a header that is not one.
pub fn next_frame(b: &[u8]) -> Option<Result<Frame<'_>, ()>> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    let head = std::str::from_utf8(&b[..nl]).unwrap_or("");
    let mut w = head.split_whitespace();
    let (Some(name), Some(Ok(n))) = (w.next(), w.next().map(str::parse::<usize>)) else {
        return Some(Err(()));
    };
    let body = b.get(nl + 1..nl + 1 + n)?;
    Some(Ok(Frame {
        name,
        body,
        len: nl + 1 + n,
    }))
}

/// Parses complete `helper logs` output; a truncated last frame keeps what
/// arrived.
pub fn parse_frames(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        match next_frame(b) {
            Some(Ok(f)) => {
                out.push((f.name.to_string(), f.body.to_vec()));
                b = &b[f.len..];
            }
            Some(Err(())) => break,
            None => {
                let (head, rest) = split_line(b);
                if let Some(name) = std::str::from_utf8(head)
                    .ok()
                    .and_then(|h| h.split_whitespace().next())
                {
                    out.push((name.to_string(), rest.to_vec()));
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The helper is POSIX sh: these run it on this machine, as a remote
    //! host would.

    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    fn helper(dir: &Path, args: &[&str]) -> (i32, String) {
        let script = dir.join("helper.sh");
        if !script.exists() {
            std::fs::write(&script, HELPER).expect("write helper");
        }
        let out = Command::new("sh")
            .arg(&script)
            .args(args)
            .output()
            .expect("sh runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn wait_status(dir: &Path, run: &str, id: &str, want: &str) -> String {
        let t0 = Instant::now();
        loop {
            let (_, s) = helper(dir, &["status", run, id]);
            if s.trim_end().starts_with(&format!("{id} {want}"))
                || t0.elapsed() > Duration::from_secs(10)
            {
                return s.trim_end().to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_step_runs_detached_with_its_output_and_exit_status_recorded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run = tmp.path().join("run");
        let run_s = run.to_string_lossy().into_owned();
        let (code, pid) = helper(
            tmp.path(),
            &["start", &run_s, "t@h", "echo out; echo err >&2; exit 3"],
        );
        assert_eq!(code, 0);
        assert!(pid.trim().parse::<i32>().is_ok(), "{pid}");
        assert_eq!(
            wait_status(tmp.path(), &run_s, "t@h", "exited"),
            "t@h exited 3"
        );
        assert_eq!(
            std::fs::read_to_string(run.join(".flow/t@h.out")).expect("out"),
            "out\n"
        );
        assert_eq!(
            std::fs::read_to_string(run.join(".flow/t@h.err")).expect("err"),
            "err\n"
        );
        let (_, s) = helper(tmp.path(), &["status", &run_s, "nope"]);
        assert_eq!(s, "nope unknown\n");
    }

    #[test]
    fn follow_streams_output_as_it_grows_and_ends_with_the_step() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run_s = tmp.path().join("run").to_string_lossy().into_owned();
        helper(
            tmp.path(),
            &[
                "start",
                &run_s,
                "f",
                "echo a; sleep 0.5; printf 'b\\n' >&2; sleep 0.5; printf 'c\\nd'",
            ],
        );
        let t0 = Instant::now();
        let (code, framed) = helper(tmp.path(), &["follow", &run_s, "f"]);
        assert_eq!(code, 0);
        // It waited for the step, and took several passes.
        assert!(t0.elapsed() >= Duration::from_millis(800));
        let frames = parse_frames(framed.as_bytes());
        assert!(frames.len() >= 3, "{framed:?}");
        let joined = |n: &str| {
            frames
                .iter()
                .filter(|(k, _)| k == n)
                .flat_map(|(_, b)| b.clone())
                .collect::<Vec<u8>>()
        };
        assert_eq!(joined("out"), b"a\nc\nd");
        assert_eq!(joined("err"), b"b\n");
    }

    #[test]
    fn signal_reaches_the_group_and_finish_kills_what_is_left() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run_s = tmp.path().join("run").to_string_lossy().into_owned();
        // Polite: exits on TERM (the status of a signalled command is 128+N).
        helper(tmp.path(), &["start", &run_s, "polite", "sleep 60"]);
        let (_, sent) = helper(tmp.path(), &["signal", &run_s, "polite", "TERM"]);
        assert_eq!(sent, "sent\n");
        assert_eq!(
            wait_status(tmp.path(), &run_s, "polite", "exited"),
            "polite exited 143"
        );
        // Once the wrapper has ended, nothing is signalled by number.
        let (_, sent) = helper(tmp.path(), &["signal", &run_s, "polite", "KILL"]);
        assert_eq!(sent, "none\n");
        // A command that ends on TERM but leaves a TERM-deaf child in its
        // group: the wrapper ends, `finish` kills the child and says so.
        helper(
            tmp.path(),
            &[
                "start",
                &run_s,
                "deaf",
                "sh -c 'trap \"\" TERM; echo up; exec sleep 61' & wait",
            ],
        );
        let t0 = Instant::now();
        while !std::fs::read_to_string(tmp.path().join("run/.flow/deaf.out"))
            .unwrap_or_default()
            .contains("up")
        {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        helper(tmp.path(), &["signal", &run_s, "deaf", "TERM"]);
        assert!(wait_status(tmp.path(), &run_s, "deaf", "exited").starts_with("deaf exited"));
        let (code, framed) = helper(tmp.path(), &["finish", &run_s, "deaf"]);
        assert_eq!(code, 0);
        let frames = parse_frames(framed.as_bytes());
        let leaks = frames
            .iter()
            .find(|(n, _)| n == "leaks")
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        assert!(leaks.contains("sleep 61"), "{framed:?}");
        assert!(
            frames.iter().any(|(n, b)| n == "out" && b == b"up\n"),
            "{framed:?}"
        );
        let (_, again) = helper(tmp.path(), &["finish", &run_s, "deaf"]);
        assert!(!again.contains("leaks"), "nothing is left: {again:?}");
    }

    #[test]
    fn read_gives_what_the_output_gained_and_ports_are_probed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run_s = tmp.path().join("run").to_string_lossy().into_owned();
        helper(
            tmp.path(),
            &[
                "start",
                &run_s,
                "svc",
                "echo out1; echo 'Worker ready, listening on port 9001' >&2; sleep 60",
            ],
        );
        let t0 = Instant::now();
        let frames = loop {
            let (code, text) = helper(tmp.path(), &["read", &run_s, "svc", "0", "0"]);
            assert_eq!(code, 0);
            let frames = parse_frames(text.as_bytes());
            if frames.len() == 2 {
                break frames;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no output read: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(frames[0], ("out".to_string(), b"out1\n".to_vec()));
        assert_eq!(
            frames[1],
            (
                "err".to_string(),
                b"Worker ready, listening on port 9001\n".to_vec()
            )
        );
        // From an offset: only what came after it; nothing new, no frame.
        let (_, text) = helper(tmp.path(), &["read", &run_s, "svc", "3", "37"]);
        assert_eq!(
            parse_frames(text.as_bytes()),
            [("out".to_string(), b"1\n".to_vec())]
        );
        let (_, text) = helper(tmp.path(), &["read", &run_s, "svc", "5", "37"]);
        assert_eq!(text, "");
        helper(tmp.path(), &["signal", &run_s, "svc", "KILL"]);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port().to_string();
        assert_eq!(helper(tmp.path(), &["probe-port", &port]).0, 0);
        drop(listener);
        assert_eq!(helper(tmp.path(), &["probe-port", &port]).0, 1);
    }

    #[test]
    fn a_reused_pid_is_never_signalled() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run_s = tmp.path().join("run").to_string_lossy().into_owned();
        let (_, out) = helper(tmp.path(), &["start", &run_s, "s", "sleep 30"]);
        let pid: i32 = out.trim().parse().expect("a pid");
        assert_eq!(
            helper(tmp.path(), &["status", &run_s, "s"]).1.trim(),
            "s running"
        );
        // As if the wrapper had ended and another process got its pid.
        std::fs::write(tmp.path().join("run/.flow/s.st"), "1\n").expect("write");
        assert_eq!(
            helper(tmp.path(), &["status", &run_s, "s"]).1.trim(),
            "s gone"
        );
        assert_eq!(
            helper(tmp.path(), &["signal", &run_s, "s", "TERM"])
                .1
                .trim(),
            "none"
        );
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        assert!(alive, "the process that holds the pid was signalled");
    }

    #[test]
    fn reap_kills_what_carries_the_tag() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tag = format!(
            "FLOW_RUN_TAG=test-{}-{:?}",
            std::process::id(),
            Instant::now()
        );
        let mut child = Command::new("sh")
            .args(["-c", "sleep 62"])
            .env("FLOW_RUN_TAG", tag.trim_start_matches("FLOW_RUN_TAG="))
            .spawn()
            .expect("spawn");
        let pid = child.id().to_string();
        let t0 = Instant::now();
        let mut reaped = String::new();
        while !reaped.lines().any(|l| l == pid) && t0.elapsed() < Duration::from_secs(5) {
            reaped = helper(tmp.path(), &["reap", &tag]).1;
        }
        assert!(reaped.lines().any(|l| l == pid), "{reaped}");
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }

    #[test]
    fn install_commands_quote_paths_and_keep_the_home_tilde() {
        assert_eq!(remote_word("~/flow dir/x"), "~/'flow dir/x'");
        assert_eq!(remote_word("/srv/flow"), "/srv/flow");
        let cmd = install_command("~/flow");
        assert!(
            cmd.starts_with("umask 077 && mkdir -p ~/flow/.flow && "),
            "{cmd}"
        );
        assert!(
            cmd.ends_with(&format!(
                "&& mv -f ~/flow/.flow/{h}.tmp.$$ ~/flow/.flow/{h}",
                h = helper_name()
            )),
            "{cmd}"
        );
        assert!(helper_name().len() == "helper-.sh".len() + 12);
        assert_eq!(
            helper_command("/w", &["signal", "/w/runs/x", "a@b", "TERM"]),
            format!("sh /w/.flow/{} signal /w/runs/x a@b TERM", helper_name())
        );
    }
}

#[cfg(test)]
mod install_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::process::Command;

    fn install(workdir: &std::path::Path) -> std::process::Output {
        let cmd = install_command(&workdir.to_string_lossy());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(HELPER.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    }

    #[test]
    fn a_planted_helper_is_replaced_and_a_shared_workdir_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let w = tmp.path().join("w");
        std::fs::create_dir_all(w.join(".flow")).expect("mkdir");
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::set_permissions(w.join(".flow"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let path = w.join(".flow").join(helper_name());
        std::fs::write(&path, "echo planted").expect("plant");
        let out = install(&w);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), HELPER);

        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let out = install(&w);
        assert_eq!(out.status.code(), Some(3));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("is writable by other users (drwxrwxrwx)"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
