//! What a person sees while runs go: on a terminal a progress bar (runs
//! done / failed / left, ETA, the current step); otherwise one plain line per
//! finished run. `-v` streams each step's output prefixed with `step@host`.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::artifact::logs::failure_tail;
use crate::artifact::run_result::{RunResult, RunStatus, StepStatus};

/// How many log lines are quoted under a failed run.
const FAILURE_LINES: usize = 5;
use crate::plan::RunPlan;

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: AtomicU64,
    failed: AtomicU64,
    verbose: bool,
    out: Mutex<()>,
}

impl Progress {
    /// A bar when stderr is a terminal (and `plain` is false), lines otherwise.
    pub fn new(total: usize, verbose: bool, plain: bool) -> Progress {
        let total = total as u64;
        let bar = (!plain && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs, {prefix} ETA {eta}  {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix("0 failed,");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            total,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            verbose,
            out: Mutex::new(()),
        }
    }

    /// Prints a line above the bar (or on stdout).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => {
                let _guard = self.out.lock();
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            }
        }
    }

    pub fn warn(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {msg}")),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "warning: {msg}");
            }
        }
    }

    pub fn run_started(&self, plan: &RunPlan) {
        if let Some(b) = &self.bar {
            b.set_message(plan.id.clone());
        } else if self.verbose {
            self.println(&format!("START {}", plan.id));
        }
    }

    pub fn step(&self, run: &str, step: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{run}: {step}"));
        }
    }

    pub fn step_ended(&self, _run: &str, step: &str, status: StepStatus) {
        if self.verbose {
            let line = format!("      {step} {}", status.as_str());
            self.println(&line);
        }
    }

    /// Prints a run's line; under a failure, the error and the last lines
    /// of the failing step's log from `run_dir`.
    pub fn run_finished(&self, r: &RunResult, run_dir: &Path) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = if r.status == RunStatus::Failed {
            self.failed.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.failed.load(Ordering::Relaxed)
        };
        let tag = match r.status {
            RunStatus::Passed => "PASS ",
            RunStatus::Failed => "FAIL ",
            RunStatus::Interrupted => "INTR ",
            RunStatus::Running => "?    ",
        };
        let secs = r.duration_ms.unwrap_or(0) as f64 / 1000.0;
        let mut line = format!(
            "{tag} [{done:>w$}/{}] {} ({secs:.1}s)",
            self.total,
            r.id,
            w = digits(self.total)
        );
        if r.status == RunStatus::Failed
            && let Some(e) = r.first_error()
        {
            line.push_str(&format!("\n      {e}"));
            // The cause is usually in what the step said last.
            if let Some(step) = r.failing_step()
                && let Some((log, lines)) = failure_tail(run_dir, &step.id, FAILURE_LINES)
            {
                let shown = log
                    .strip_prefix(run_dir)
                    .map_or_else(|_| log.display().to_string(), |p| p.display().to_string());
                line.push_str(&format!("\n      last lines of {shown}:"));
                for l in lines {
                    line.push_str(&format!("\n        | {l}"));
                }
            }
        }
        self.println(&line);
        if let Some(b) = &self.bar {
            b.set_position(done);
            b.set_prefix(format!("{failed} failed,"));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// With `-v`: follows a step's output files and prints each new line as
    /// `step@host | line` until [`Tail::finish`].
    pub fn tail(&self, step: &str, out: &Path, err: &Path) -> Tail {
        let (tx, mut rx) = watch::channel(false);
        let state = Arc::new(TailState {
            prefix: step.to_string(),
            files: Mutex::new(vec![
                (out.to_path_buf(), 0u64, Vec::new()),
                (err.to_path_buf(), 0u64, Vec::new()),
            ]),
            bar: self.bar.clone(),
        });
        let s = Arc::clone(&state);
        tokio::spawn(async move {
            while !*rx.borrow_and_update() {
                s.pump(false);
                tokio::select! {
                    _ = rx.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        Tail { state, stop: tx }
    }
}

struct TailState {
    prefix: String,
    files: Mutex<Vec<(PathBuf, u64, Vec<u8>)>>,
    bar: Option<ProgressBar>,
}

impl TailState {
    /// Prints what was appended; with `flush`, unfinished last lines too.
    fn pump(&self, flush: bool) {
        let Ok(mut files) = self.files.lock() else {
            return;
        };
        for (path, off, pending) in files.iter_mut() {
            for line in read_new_lines(path, off, pending, flush) {
                let l = format!("{} | {line}", self.prefix);
                match &self.bar {
                    Some(b) => b.println(l),
                    None => {
                        let _ = writeln!(std::io::stdout().lock(), "{l}");
                    }
                }
            }
        }
    }
}

/// A step's output being followed.
pub struct Tail {
    state: Arc<TailState>,
    stop: watch::Sender<bool>,
}

impl Tail {
    /// Prints the rest of the output and stops following.
    pub fn finish(self) {
        let _ = self.stop.send(true);
        self.state.pump(true);
    }
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

/// Complete lines appended since `off`; with `flush`, the unfinished tail too.
fn read_new_lines(path: &Path, off: &mut u64, pending: &mut Vec<u8>, flush: bool) -> Vec<String> {
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(*off)).is_ok()
    {
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_ok() {
            *off += buf.len() as u64;
            pending.extend_from_slice(&buf);
        }
    }
    let mut lines = Vec::new();
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=i).collect();
        lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    if flush && !pending.is_empty() {
        lines.push(String::from_utf8_lossy(pending).into_owned());
        pending.clear();
    }
    lines
}
