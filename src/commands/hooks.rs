//! `provision:` and `deprovision:`: commands run on the controller around
//! an invocation that executes runs, to create its hosts before they are
//! read and destroy them after the last run (after a failure or Ctrl-C
//! too, unless `--keep-hosts`).

use std::io::Write;
use std::process::Stdio;

use super::Error;
use crate::suite::Hooks;
use crate::suite::raw::Command;

/// The hooks of the suite `spec` (none when it has none).
pub fn of_suite(spec: &str) -> Result<Hooks, Error> {
    crate::suite::read_hooks(spec).map_err(|f| Error::Invalid(f.render()))
}

/// Set for a flow started by one that has just provisioned its hosts (a
/// detached run): it does not provision them again.
pub const PROVISIONED_VAR: &str = "FLOW_PROVISIONED";

/// Runs `provision`, when there is one. Its output goes to flow's stderr
/// (flow's stdout is the runs' summary).
pub fn provision(h: &Hooks) -> Result<(), Error> {
    let Some(c) = &h.provision else {
        return Ok(());
    };
    if std::env::var_os(PROVISIONED_VAR).is_some() {
        return Ok(());
    }
    run_hook("provision", c, h).map_err(|e| {
        Error::Invalid(format!(
            "error: {e}\n  = help: nothing ran; the hosts may be half made: `deprovision` runs now unless `--keep-hosts`\n"
        ))
    })
}

/// Runs `deprovision`, when there is one and the hosts are not kept; a
/// failure is a warning (the runs' results stand).
pub fn deprovision(h: &Hooks, keep: bool) {
    let Some(c) = &h.deprovision else {
        return;
    };
    if keep {
        let _ = writeln!(
            std::io::stderr().lock(),
            "deprovision: skipped (--keep-hosts)"
        );
        return;
    }
    if let Err(e) = run_hook("deprovision", c, h) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "warning: {e}: the hosts may still exist"
        );
    }
}

fn run_hook(what: &str, c: &Command, h: &Hooks) -> Result<(), String> {
    let shown = match c {
        Command::Shell(s) => s.clone(),
        Command::Argv(v) => v.join(" "),
    };
    let mut cmd = match c {
        Command::Shell(s) => {
            let mut x = std::process::Command::new("sh");
            x.arg("-c").arg(s);
            x
        }
        Command::Argv(v) => {
            let Some((first, rest)) = v.split_first() else {
                return Err(format!("`{what}` is an empty command"));
            };
            let mut x = std::process::Command::new(first);
            x.args(rest);
            x
        }
    };
    let _ = writeln!(std::io::stderr().lock(), "{what}: {shown}");
    let started = std::time::Instant::now();
    // Its stdout joins flow's stderr.
    let stdout = {
        use std::os::fd::AsFd;
        std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::inherit())
    };
    let status = cmd
        .current_dir(&h.dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run `{what}` (`{shown}`): {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    if status.success() {
        let _ = writeln!(std::io::stderr().lock(), "{what}: done in {secs:.1}s");
        Ok(())
    } else {
        Err(match status.code() {
            Some(code) => format!("`{what}` (`{shown}`) exited with {code} after {secs:.1}s"),
            None => format!("`{what}` (`{shown}`) was killed by a signal after {secs:.1}s"),
        })
    }
}
