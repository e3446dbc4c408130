//! What `flow resume` does with each run of an artifact, decided from the
//! runs' journals (the exact record of what finished), and keeping an
//! earlier attempt's files before a run starts again.

use std::path::Path;

use crate::artifact::replay::Replay;
use crate::artifact::run_result::{RunStatus, StepStatus};
use crate::plan::RunPlan;
use crate::suite::StepKind;

/// What becomes of one run.
#[derive(Debug, Clone)]
pub enum Decision {
    /// It ended (passed, or failed without `--rerun-failed`): kept as it is.
    Keep(RunStatus),
    /// It never started.
    Start,
    /// It starts again; the earlier attempt is kept in `attempts/<n>/`.
    Again { why: String, tags: Vec<String> },
    /// flow died while it ran and what it left can be taken over.
    Adopt(Box<Replay>),
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Keep(RunStatus::Passed) => "passed, kept",
            Decision::Keep(_) => "failed, kept",
            Decision::Start => "not started",
            Decision::Again { .. } => "run again",
            Decision::Adopt(_) => "taken over",
        }
    }
}

/// Decides from a run's journal. `remote(host)`: steps on that host outlive
/// flow (ssh hosts); steps on this machine end with it.
pub fn decide(
    plan: &RunPlan,
    run_dir: &Path,
    rerun_failed: bool,
    remote: &dyn Fn(&str) -> bool,
) -> Decision {
    match Replay::ending(run_dir) {
        None => Decision::Start,
        Some(Some(RunStatus::Passed)) => Decision::Keep(RunStatus::Passed),
        Some(Some(RunStatus::Failed)) if !rerun_failed => Decision::Keep(RunStatus::Failed),
        Some(Some(status)) => {
            let tags = Replay::read(run_dir).map(|r| r.tags).unwrap_or_default();
            Decision::Again {
                why: format!("it {}", status.as_str()),
                tags,
            }
        }
        Some(None) => {
            let Some(replay) = Replay::read(run_dir) else {
                return Decision::Start;
            };
            match adoptable(plan, &replay, remote) {
                Ok(()) => Decision::Adopt(Box::new(replay)),
                Err(why) => Decision::Again {
                    why,
                    tags: replay.tags,
                },
            }
        }
    }
}

/// Whether a run whose flow died can go on where it was: only when no step
/// of it ended with flow.
pub fn adoptable(
    plan: &RunPlan,
    replay: &Replay,
    remote: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    if replay.interrupted {
        return Err("flow was interrupted while it ran".into());
    }
    if replay.setup_failed {
        return Err("its setup failed".into());
    }
    for s in &plan.steps {
        let Some(r) = replay.steps.get(&s.id) else {
            continue;
        };
        if r.status == StepStatus::Interrupted {
            return Err(format!("`{}` was interrupted", s.id));
        }
        let main = matches!(
            s.kind,
            StepKind::Service | StepKind::Monitor | StepKind::Task
        );
        if main && matches!(r.status, StepStatus::Running | StepStatus::Ready) && !remote(&s.host) {
            return Err(format!(
                "`{}` ran on this machine and ended with flow",
                s.id
            ));
        }
    }
    Ok(())
}

/// Moves what an earlier attempt left in `run_dir` (everything but
/// `plan.json` and `attempts/`) into `attempts/<n>/`, `n` one more than the
/// attempts kept so far; returns `n`.
pub fn keep_attempt(run_dir: &Path) -> std::io::Result<u32> {
    let attempts = run_dir.join("attempts");
    std::fs::create_dir_all(&attempts)?;
    let mut n = 1;
    while attempts.join(n.to_string()).exists() {
        n += 1;
    }
    let dest = attempts.join(n.to_string());
    std::fs::create_dir(&dest)?;
    for e in std::fs::read_dir(run_dir)? {
        let e = e?;
        let name = e.file_name();
        if name == "plan.json" || name == "attempts" {
            continue;
        }
        std::fs::rename(e.path(), dest.join(&name))?;
    }
    // The move is the record: make it durable before anything is written
    // into the run dir again.
    if let Ok(d) = std::fs::File::open(run_dir) {
        let _ = d.sync_all();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_attempt_is_moved_whole_and_numbered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path();
        std::fs::write(run.join("plan.json"), "{}").expect("write");
        std::fs::write(run.join("events.jsonl"), "x").expect("write");
        std::fs::create_dir_all(run.join("hosts/h")).expect("mkdir");
        std::fs::write(run.join("hosts/h/data.csv"), "1\n").expect("write");
        assert_eq!(keep_attempt(run).expect("keep"), 1);
        std::fs::write(run.join("events.jsonl"), "y").expect("write");
        assert_eq!(keep_attempt(run).expect("keep"), 2);
        assert!(run.join("plan.json").is_file());
        assert!(!run.join("events.jsonl").exists());
        assert_eq!(
            std::fs::read_to_string(run.join("attempts/1/hosts/h/data.csv")).expect("read"),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(run.join("attempts/2/events.jsonl")).expect("read"),
            "y"
        );
    }
}
