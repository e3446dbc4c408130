//! What `flow resume` does with each run of an artifact, decided from the
//! runs' journals (the exact record of what finished), and keeping an
//! earlier attempt's files before a run starts again.

use std::path::Path;

use crate::artifact::replay::Replay;
use crate::artifact::run_result::{RunResult, RunStatus, StepStatus};
use crate::plan::RunPlan;
use crate::suite::StepKind;

/// What becomes of one run.
#[derive(Debug, Clone)]
pub enum Decision {
    /// It ended (passed, or failed without `--rerun-failed`): kept as it
    /// is, with the duration its `run_result.json` gives.
    Keep(RunStatus, Option<u64>),
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
            Decision::Keep(RunStatus::Passed, _) => "passed, kept",
            Decision::Keep(..) => "failed, kept",
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
        Some(Some(status @ (RunStatus::Passed | RunStatus::Failed)))
            if status == RunStatus::Passed || !rerun_failed =>
        {
            // Kept only with the final result the journal vouches for.
            let result: Option<RunResult> = std::fs::read(run_dir.join("run_result.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match result {
                Some(r) if r.status == status => Decision::Keep(status, r.duration_ms),
                _ => Decision::Again {
                    why: format!(
                        "it {} but its run_result.json does not say so",
                        status.as_str()
                    ),
                    tags: Replay::read(run_dir).map(|r| r.tags).unwrap_or_default(),
                },
            }
        }
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

    fn plan() -> RunPlan {
        RunPlan {
            schema_version: 1,
            id: "w.baseline.r1-x".into(),
            suite: "s".into(),
            workload: "w".into(),
            mode: "baseline".into(),
            variant: "default".into(),
            variant_params: Default::default(),
            repetition: 1,
            params: Default::default(),
            exclusive: true,
            dir: String::new(),
            hosts: vec![],
            files: vec![],
            steps: vec![],
            edges: vec![],
            metrics: vec![],
            clock_every_ms: None,
            timeline: Vec::new(),
            mutation: None,
            sources: Default::default(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn a_run_is_kept_only_with_the_result_its_journal_vouches_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path();
        std::fs::write(
            run.join("events.jsonl"),
            concat!(
                r#"{"wall_ns":1,"mono_ns":1,"event":"run_started","tag":"t"}"#,
                "\n",
                r#"{"wall_ns":2,"mono_ns":2,"event":"run_ended","status":"passed","duration_ms":5}"#,
                "\n"
            ),
        )
        .expect("write");
        let result = |status: &str| {
            let mut r = serde_json::to_value(crate::artifact::run_result::RunResult::new(
                &plan(),
                crate::clock::Stamp::now(),
            ))
            .expect("json");
            r["status"] = status.into();
            r["duration_ms"] = 5.into();
            std::fs::write(run.join("run_result.json"), r.to_string()).expect("write");
        };
        let remote = |_: &str| false;
        // flow died between the two writes: the result says `running`.
        result("running");
        assert!(matches!(
            decide(&plan(), run, false, &remote),
            Decision::Again { ref tags, .. } if tags == &["t"]
        ));
        result("passed");
        assert!(matches!(
            decide(&plan(), run, false, &remote),
            Decision::Keep(RunStatus::Passed, Some(5))
        ));
        std::fs::remove_file(run.join("run_result.json")).expect("rm");
        assert!(matches!(
            decide(&plan(), run, false, &remote),
            Decision::Again { .. }
        ));
    }

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
