//! Batch jobs: the script `flow run --slurm` submits for a shard, what
//! `sbatch`, `squeue`, `scontrol` and `sacct` answer, and what a job's
//! state means for its runs. Pure: the commands run in `commands::slurm`.

use std::collections::HashMap;

/// What a batch script is written from.
pub struct Script<'a> {
    pub job_name: &'a str,
    pub nodes: usize,
    /// `--output`, with `%j` for the job id.
    pub output: &'a str,
    /// The folder the job works in (where flow was run).
    pub cwd: &'a str,
    /// The shell command that runs the shard.
    pub command: &'a str,
    /// `I/K`.
    pub shard: &'a str,
    /// The submission's folder.
    pub submission: &'a str,
}

/// The placeholders a template may use, in the order the reference lists
/// them.
pub const PLACEHOLDERS: [&str; 7] = [
    "command",
    "job_name",
    "nodes",
    "output",
    "cwd",
    "shard",
    "submission",
];

/// The script flow writes when no template is given.
pub const DEFAULT_TEMPLATE: &str = "#!/bin/sh
#SBATCH --job-name={{ job_name }}
#SBATCH --nodes={{ nodes }}
#SBATCH --output={{ output }}
#SBATCH --exclusive
# Shard {{ shard }} of flow submission {{ submission }}. Whole nodes: runs
# are measurements, and another job on their nodes would be in them.
cd {{ cwd }} || exit 1
exec {{ command }}
";

impl Script<'_> {
    /// `template` with its placeholders filled in. `{{ cwd }}` and
    /// `{{ output }}` are shell-quoted, `{{ command }}` is a shell command
    /// line. A template without `{{ command }}`, or with a placeholder
    /// flow does not know, is refused.
    pub fn render(&self, template: &str) -> Result<String, String> {
        let q = |s: &str| crate::exec::ssh::sh_quote(s);
        let nodes = self.nodes.to_string();
        let values: HashMap<&str, String> = [
            ("command", self.command.to_string()),
            ("job_name", self.job_name.to_string()),
            ("nodes", nodes),
            ("output", q(self.output)),
            ("cwd", q(self.cwd)),
            ("shard", self.shard.to_string()),
            ("submission", self.submission.to_string()),
        ]
        .into_iter()
        .collect();
        let mut out = String::with_capacity(template.len() + 256);
        let mut rest = template;
        let mut used_command = false;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err("a `{{` is never closed with `}}`".into());
            };
            let name = after[..end].trim();
            let Some(v) = values.get(name) else {
                return Err(format!(
                    "`{{{{ {name} }}}}` is not a placeholder flow fills in; it knows {}",
                    PLACEHOLDERS.map(|p| format!("`{{{{ {p} }}}}`")).join(", ")
                ));
            };
            used_command |= name == "command";
            out.push_str(v);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        if !used_command {
            return Err(
                "it has no `{{ command }}`: flow would never run in the job it submits".into(),
            );
        }
        Ok(out)
    }
}

/// The job id `sbatch --parsable` printed (`ID` or `ID;CLUSTER`).
pub fn parse_sbatch(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_')).then(|| id.to_string())
}

/// `ID STATE` lines of `squeue -h -o '%i %T'`.
pub fn parse_squeue(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// `JobState=` of `scontrol -o show job ID`.
pub fn parse_scontrol(stdout: &str) -> Option<String> {
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .map(String::from)
}

/// The state of the job itself in `sacct -n -X -P -o JobID,State -j ID`
/// (`CANCELLED by 0` is `CANCELLED`).
pub fn parse_sacct(stdout: &str, id: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let (job, state) = l.split_once('|')?;
        (job.trim() == id).then(|| state.split_whitespace().next().unwrap_or("").to_string())
    })
}

/// What a job's Slurm state means for the runs of its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its allocation (or held, suspended): its runs have not
    /// started, or wait.
    Waiting,
    /// Its allocation runs flow.
    Running,
    /// It ended by itself; the artifact says how its runs went.
    Ended,
    /// Slurm ended it (cancelled, out of time, a node failed, …): runs it
    /// did not finish are to be run again (`flow run --resume`).
    Stopped,
}

impl Phase {
    pub fn of(state: &str) -> Phase {
        match state {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD"
            | "RESV_DEL_HOLD" | "SUSPENDED" | "STOPPED" | "SPECIAL_EXIT" | "RESIZING" => {
                Phase::Waiting
            }
            "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" => Phase::Running,
            "COMPLETED" => Phase::Ended,
            _ => Phase::Stopped,
        }
    }

    /// Whether the job is still Slurm's to run (not to be submitted again).
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Waiting | Phase::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> Script<'static> {
        Script {
            job_name: "flow-kv-1of2",
            nodes: 3,
            output: "/scratch/a b/slurm/shard-1-%j.out",
            cwd: "/home/me/proj",
            command: "'/opt/flow' run --resume '/scratch/x'",
            shard: "1/2",
            submission: "20261124T101500Z-kv",
        }
    }

    #[test]
    fn the_default_script_names_the_job_and_runs_the_shard() {
        let s = script().render(DEFAULT_TEMPLATE).expect("renders");
        assert!(
            s.starts_with("#!/bin/sh\n#SBATCH --job-name=flow-kv-1of2\n#SBATCH --nodes=3\n"),
            "{s}"
        );
        assert!(
            s.contains("#SBATCH --output='/scratch/a b/slurm/shard-1-%j.out'\n"),
            "{s}"
        );
        assert!(
            s.ends_with("cd /home/me/proj || exit 1\nexec '/opt/flow' run --resume '/scratch/x'\n"),
            "{s}"
        );
    }

    #[test]
    fn templates_need_the_command_and_known_placeholders() {
        let e = script()
            .render("#!/bin/sh\nmodule load x\n")
            .expect_err("no command");
        assert!(e.contains("{{ command }}"), "{e}");
        let e = script()
            .render("{{ command }} {{ qos }}")
            .expect_err("unknown");
        assert!(e.starts_with("`{{ qos }}` is not a placeholder"), "{e}");
        assert!(script().render("{{ command").is_err());
        assert_eq!(
            script().render("x{{command}}y").expect("renders"),
            "x'/opt/flow' run --resume '/scratch/x'y"
        );
    }

    #[test]
    fn slurm_answers_parse() {
        assert_eq!(parse_sbatch("17\n").as_deref(), Some("17"));
        assert_eq!(parse_sbatch("17;cluster\n").as_deref(), Some("17"));
        assert_eq!(parse_sbatch("sbatch: error: x\n"), None);
        assert_eq!(parse_sbatch(""), None);
        let q = parse_squeue("17 RUNNING\n18 PENDING\n");
        assert_eq!(q["18"], "PENDING");
        assert_eq!(
            parse_scontrol("JobId=17 JobName=x UserId=root(0) JobState=CANCELLED Reason=None")
                .as_deref(),
            Some("CANCELLED")
        );
        assert_eq!(
            parse_sacct("17|CANCELLED by 0\n17.batch|CANCELLED\n", "17").as_deref(),
            Some("CANCELLED")
        );
        assert_eq!(parse_sacct("", "17"), None);
    }

    #[test]
    fn states_map_to_phases() {
        assert_eq!(Phase::of("PENDING"), Phase::Waiting);
        assert_eq!(Phase::of("RUNNING"), Phase::Running);
        assert_eq!(Phase::of("COMPLETED"), Phase::Ended);
        for s in [
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "FAILED",
            "OUT_OF_MEMORY",
            "PREEMPTED",
        ] {
            assert_eq!(Phase::of(s), Phase::Stopped, "{s}");
            assert!(!Phase::of(s).is_active());
        }
        assert!(Phase::of("COMPLETING").is_active());
    }
}
