//! The command of a `scrape:` monitor: a POSIX shell poller run on the
//! step's host (with curl, wget or python3, whichever it has), written into
//! the plan as the step's `run`, so the plan shows what runs.

use super::types::{RunCommand, ScrapePlan};

/// The poller; its header says what it prints and how it exits.
pub const SCRIPT: &str = include_str!("scrape.sh");

/// `sh -c SCRIPT flow-scrape URL EVERY_MS TIMEOUT_MS MAX_MISSED`.
pub fn command(s: &ScrapePlan) -> RunCommand {
    RunCommand::Argv(vec![
        "sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "flow-scrape".into(),
        s.url.clone(),
        s.every_ms.to_string(),
        s.timeout_ms.to_string(),
        s.max_missed.to_string(),
    ])
}

/// The command as people read it in `flow plan`.
pub fn display(s: &ScrapePlan) -> String {
    format!(
        "scrape {} every {}",
        s.url,
        crate::duration::format(std::time::Duration::from_millis(s.every_ms))
    )
}

#[cfg(test)]
mod tests {
    //! The poller itself, run by `sh` against an endpoint in this process
    //! that answers twice and then refuses connections.
    use super::*;
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const BODY: &str = "# HELP req_total Requests.\n# TYPE req_total counter\n\
        req_total{code=\"200\",path=\"/a b\"} 7 1700000000000\nup 1\n\n";

    /// An endpoint that serves `BODY` twice, then closes.
    fn endpoint() -> String {
        serving(BODY)
    }

    /// An endpoint that serves `body` twice (HTTP 200), then closes.
    fn serving(body: &'static str) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/metrics", l.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for _ in 0..2 {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    /// Runs the poller until its log shows a failure after two scrapes,
    /// stops it with TERM; (exit code, stdout, stderr).
    fn poll(max_missed: u32, path: Option<&Path>) -> (i32, String, String) {
        poll_url(endpoint(), max_missed, path)
    }

    fn poll_url(url: String, max_missed: u32, path: Option<&Path>) -> (i32, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let plan = ScrapePlan {
            url,
            every_ms: 100,
            timeout_ms: 1000,
            max_missed,
        };
        let RunCommand::Argv(argv) = command(&plan) else {
            panic!("argv")
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&err).expect("err"));
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let mut child = cmd.spawn().expect("sh");
        let start = Instant::now();
        while !std::fs::read_to_string(&err).is_ok_and(|e| e.contains("failed")) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no failed scrape"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("TERM");
        let code = child.wait().expect("exit").code().expect("a code");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        (code, read(&out), read(&err))
    }

    fn rows(out: &str) -> Vec<String> {
        // Without the time column: every row of a scrape has the same.
        out.lines()
            .skip(1)
            .map(|l| l.split_once(',').expect("a time").1.to_string())
            .collect()
    }

    #[test]
    fn a_hole_in_the_series_fails_unless_allowed() {
        let (code, out, err) = poll(0, None);
        assert_eq!(code, 1, "{err}");
        assert!(out.starts_with("time_ns,metric,labels,value\n"), "{out}");
        assert_eq!(
            rows(&out),
            [
                r#"req_total,"code=""200"",path=""/a b""",7"#,
                r#"up,"",1"#,
                r#"req_total,"code=""200"",path=""/a b""",7"#,
                r#"up,"",1"#,
            ]
        );
        assert!(err.contains("more than max_missed (0)"), "{err}");

        let (code, _, err) = poll(100, None);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("flow scrape: 2 scrapes of http://127.0.0.1:"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_that_is_not_prometheus_text_is_a_failed_scrape() {
        for (body, why) in [
            (
                "<html><body>502 Bad Gateway</body></html>\n",
                "line 1: `<html><body>502` is not a metric name",
            ),
            ("# HELP only comments\n\n", "no samples"),
            ("up one\n", "line 1: `one` is not a number"),
        ] {
            let (code, out, err) = poll_url(serving(body), 100, None);
            assert_eq!(code, 1, "{body}: {err}");
            assert_eq!(
                out, "time_ns,metric,labels,value\n",
                "no rows of it: {body}"
            );
            assert!(
                err.contains(&format!("is not Prometheus text: {why}\n")),
                "{body}: {err}"
            );
            assert!(err.contains("no scrape of http://127.0.0.1:"), "{err}");
        }
    }

    /// A PATH with the poller's tools and one fetcher.
    fn path_with(fetcher: Option<&str>) -> tempfile::TempDir {
        let bin = tempfile::tempdir().expect("tempdir");
        for tool in ["date", "awk", "sleep"].into_iter().chain(fetcher) {
            let p = which(tool)
                .unwrap_or_else(|()| panic!("{tool} is missing: scripts/test.sh installs it"));
            std::os::unix::fs::symlink(p, bin.path().join(tool)).expect("link");
        }
        bin
    }

    #[test]
    fn without_curl_it_fetches_with_wget_then_python() {
        for fetcher in ["wget", "python3"] {
            let bin = path_with(Some(fetcher));
            let (code, out, err) = poll(100, Some(bin.path()));
            assert_eq!(code, 0, "{fetcher}: {err}");
            assert_eq!(rows(&out).len(), 4, "{fetcher}: {out}");
        }

        // Nothing to fetch with: it says so at once.
        let bin = path_with(None);
        let plan = ScrapePlan {
            url: "http://127.0.0.1:9/metrics".into(),
            every_ms: 100,
            timeout_ms: 100,
            max_missed: 0,
        };
        let RunCommand::Argv(argv) = command(&plan) else {
            panic!("argv")
        };
        let o = Command::new("/bin/sh")
            .args(&argv[1..])
            .env("PATH", bin.path())
            .output()
            .expect("sh");
        assert_eq!(o.status.code(), Some(127));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "flow scrape: this host has none of curl, wget, python3 to fetch http://127.0.0.1:9/metrics\n"
        );
    }

    fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
        ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .ok_or(())
    }
}
