//! `flow hosts check` and `flow exec`: an inventory's hosts, without a suite.

use std::io::Write;
use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinSet;

use crate::cli::{ExecArgs, HostsCheckArgs};
use crate::diag::{Diagnostic, Diagnostics, Sources};
use crate::exec::host::shell::{FACTS_SCRIPT, Facts, Hosts, parse_facts};
use crate::suite::{Inventory, load_inventory_file};

use super::{Error, exit};

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("start the runtime in", std::path::Path::new("."), e))
}

fn inventory(path: &std::path::Path) -> Result<Inventory, Error> {
    load_inventory_file(path).map_err(|f| Error::Invalid(f.render()))
}

/// One host's answer to `flow hosts check`.
struct Checked {
    name: String,
    address: String,
    result: Result<(f64, Option<crate::clock::ClockOffset>, Facts), String>,
}

pub fn check(args: &HostsCheckArgs) -> Result<i32, Error> {
    let inv = inventory(&args.hosts)?;
    let names: Vec<String> = inv.hosts.iter().map(|h| h.name.clone()).collect();
    let hosts = Arc::new(Hosts::new(&inv, &names).map_err(|e| {
        Error::io(
            "prepare ssh connections in",
            std::path::Path::new("/tmp"),
            e,
        )
    })?);
    let rt = runtime()?;
    let checked: Vec<Checked> = rt.block_on(async {
        let mut set = JoinSet::new();
        for (i, h) in inv.hosts.iter().enumerate() {
            let hosts = Arc::clone(&hosts);
            let name = h.name.clone();
            set.spawn(async move {
                let r = async {
                    let took = hosts.connect(&name).await.map_err(|e| e.to_string())?;
                    let facts = hosts
                        .run(&name, FACTS_SCRIPT)
                        .await
                        .map_err(|e| e.to_string())?;
                    let offset = hosts.clock_offset(&name).await.map_err(|e| e.to_string())?;
                    Ok((
                        took.as_secs_f64() * 1000.0,
                        offset,
                        parse_facts(&facts.stdout_text()),
                    ))
                }
                .await;
                (i, r)
            });
        }
        let mut results: Vec<Option<Result<_, String>>> =
            (0..inv.hosts.len()).map(|_| None).collect();
        while let Some(Ok((i, r))) = set.join_next().await {
            results[i] = Some(r);
        }
        hosts.close().await;
        inv.hosts
            .iter()
            .zip(results)
            .map(|(h, r)| Checked {
                name: h.name.clone(),
                address: h.address.clone(),
                result: r.unwrap_or_else(|| Err("the check did not finish".into())),
            })
            .collect()
    });
    let failed = checked.iter().filter(|c| c.result.is_err()).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = checked
            .iter()
            .map(|c| match &c.result {
                Ok((connect_ms, offset, facts)) => json!({
                    "host": c.name, "address": c.address, "ok": true,
                    "connect_ms": connect_ms, "clock": offset, "facts": facts,
                }),
                Err(e) => json!({"host": c.name, "address": c.address, "ok": false, "error": e}),
            })
            .collect();
        let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::Output(e.into()))?;
        writeln!(out, "{text}").map_err(Error::Output)?;
    } else {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut table = vec![
            [
                "host",
                "address",
                "status",
                "connect",
                "rtt",
                "clock offset",
                "kernel",
                "python3",
                "rsync",
                "setsid",
                "sudo -n",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for c in &checked {
            let mut row = vec![c.name.clone(), c.address.clone()];
            match &c.result {
                Ok((ms, offset, f)) => {
                    row.push("ok".into());
                    row.push(format!("{ms:.0} ms"));
                    match offset {
                        Some(o) => {
                            row.push(format!("{:.2} ms", o.rtt_ns as f64 / 1e6));
                            row.push(format!(
                                "{:+.3} ± {:.3} ms",
                                o.offset_ns as f64 / 1e6,
                                o.bound_ns as f64 / 1e6
                            ));
                        }
                        None => {
                            row.push("—".into());
                            row.push("0 (local)".into());
                        }
                    }
                    row.push(f.kernel.clone());
                    row.extend(
                        [yes(f.python3), yes(f.rsync), yes(f.setsid), yes(f.sudo)]
                            .map(String::from),
                    );
                }
                Err(_) => row.push("failed".into()),
            }
            table.push(row);
        }
        let widths: Vec<usize> = (0..table[0].len())
            .map(|col| {
                table
                    .iter()
                    .filter_map(|r| r.get(col))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &table {
            let last = row.len() - 1;
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == last {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            writeln!(out, "{}", line.join("  ").trim_end()).map_err(Error::Output)?;
        }
        for c in &checked {
            if let Err(e) = &c.result {
                writeln!(out, "error: {e}").map_err(Error::Output)?;
            }
        }
        if failed > 0 {
            writeln!(out, "{failed} of {} hosts failed", checked.len()).map_err(Error::Output)?;
        }
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}

pub fn exec(args: &ExecArgs) -> Result<i32, Error> {
    let inv = inventory(&args.hosts)?;
    let selectors = if args.on.is_empty() {
        vec!["all".to_string()]
    } else {
        args.on.clone()
    };
    let picked = inv.select(&selectors).map_err(|u| {
        let mut d = Diagnostics::new();
        d.push(Diagnostic::new(None, format!("--on: {}", u.message)).with_help_opt(u.help));
        Error::Invalid(d.render(&Sources::default()))
    })?;
    let names: Vec<String> = picked.iter().map(|&i| inv.hosts[i].name.clone()).collect();
    let command = args.command.join(" ");
    let hosts = Arc::new(Hosts::new(&inv, &names).map_err(|e| {
        Error::io(
            "prepare ssh connections in",
            std::path::Path::new("/tmp"),
            e,
        )
    })?);
    let rt = runtime()?;
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let failed = rt.block_on(async {
        let mut set = JoinSet::new();
        for name in &names {
            let hosts = Arc::clone(&hosts);
            let name = name.clone();
            let command = command.clone();
            set.spawn(async move {
                let r = hosts.run(&name, &command).await;
                (name, r)
            });
        }
        let mut failed = 0;
        // Each host's output is printed whole, as the host finishes.
        while let Some(Ok((name, r))) = set.join_next().await {
            let mut text = String::new();
            match r {
                Ok(out) => {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        text.push_str(&format!("{name:<width$} | {line}\n"));
                    }
                    for line in String::from_utf8_lossy(&out.stderr).lines() {
                        text.push_str(&format!("{name:<width$} ! {line}\n"));
                    }
                    text.push_str(&format!("{name:<width$} : exit {}\n", out.code));
                    if out.code != 0 {
                        failed += 1;
                    }
                }
                Err(e) => {
                    text.push_str(&format!("{name:<width$} : error: {e}\n"));
                    failed += 1;
                }
            }
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        hosts.close().await;
        failed
    });
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}

/// `flow reap [ID]`: kills every process of an artifact still running on its
/// hosts (after flow itself was killed), found by `FLOW_ARTIFACT_ID`.
pub fn reap(args: &crate::cli::ReapArgs) -> Result<i32, Error> {
    let dir = super::status::resolve(&args.artifacts, args.id.as_deref())?;
    // Only the controller knows whether its flow still runs the artifact.
    if let Some((r, there)) = super::remote::forwarded(&dir) {
        return r.forward(&["reap", &there.display().to_string()]);
    }
    // Its steps are a live run's, collecting: never killed as leftovers.
    if let super::status::State::Running(pid) = super::status::state(&dir) {
        return Err(Error::Invalid(format!(
            "error: flow (pid {pid}) is running `{}`: its steps are not leftovers\n  = help: `flow stop {}` stops it cleanly (teardown, fetch, analysis)\n",
            crate::diag::display_path(&dir),
            crate::diag::display_path(&dir)
        )));
    }
    let v = super::status::read_suite_json(&dir)?;
    let id = v["artifact_id"].as_str().unwrap_or_default().to_string();
    let inv = super::status::stored_inventory(&dir, &v)?;
    let names: Vec<String> = inv.hosts.iter().map(|h| h.name.clone()).collect();
    let remote = crate::exec::host::ssh::Remote::new(&inv, &names, None).map_err(|e| {
        Error::io(
            "prepare ssh connections in",
            std::path::Path::new("/tmp"),
            e,
        )
    })?;
    let rt = runtime()?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    let mut local_done = false;
    let results: Vec<(String, Result<Vec<i32>, String>)> = rt.block_on(async {
        let mut v = Vec::new();
        for h in &inv.hosts {
            if h.is_local() {
                if !local_done {
                    local_done = true;
                    // This artifact's, not one of the same id in another
                    // folder: the run dir is below this one.
                    let ours = |run_dir: String| {
                        std::fs::canonicalize(run_dir)
                            .ok()
                            .and_then(|p| p.parent()?.parent().map(std::path::Path::to_path_buf))
                            .is_some_and(|a| a == dir)
                    };
                    let leaks = crate::exec::process::sweep(
                        |p| {
                            crate::exec::process::has_env(p.pid, "FLOW_ARTIFACT_ID", &id)
                                && crate::exec::process::env_value(p.pid, "FLOW_RUN_DIR")
                                    .is_some_and(ours)
                        },
                        |_| false,
                    );
                    v.push((
                        "local".to_string(),
                        Ok(leaks.iter().map(|l| l.pid).collect()),
                    ));
                }
                continue;
            }
            v.push((
                h.name.clone(),
                remote.reap(&h.name, "FLOW_ARTIFACT_ID", &id).await,
            ));
        }
        remote.close().await;
        v
    });
    for (host, r) in results {
        let line = match r {
            Ok(pids) if pids.is_empty() => format!("{host}: nothing left"),
            Ok(pids) => format!(
                "{host}: killed {} process{} ({})",
                pids.len(),
                if pids.len() == 1 { "" } else { "es" },
                pids.iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => {
                failed += 1;
                format!("{host}: error: {e}")
            }
        };
        writeln!(out, "{line}").map_err(Error::Output)?;
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}

/// `flow ssh HOST`: a shell, or `-- CMD`, on one inventory host, over
/// ssh with the inventory's settings (or as a job step on a Slurm node);
/// flow's process becomes that command.
pub fn ssh(args: &crate::cli::SshArgs) -> Result<i32, Error> {
    let inv = match (&args.hosts, &args.suite) {
        (Some(h), _) => inventory(h)?,
        (None, suite) => {
            let spec = suite.clone().unwrap_or_default();
            if spec.is_empty() {
                return Err(Error::Invalid(
                    "error: which inventory? give `--hosts FILE` or `--suite NAME`\n".into(),
                ));
            }
            let opts = crate::suite::LoadOptions::default();
            crate::suite::load(&spec, &opts)
                .map_err(|f| Error::Invalid(f.render()))?
                .inventory
        }
    };
    let Some(host) = inv.hosts.iter().find(|h| h.name == args.host) else {
        let names = inv.hosts.iter().map(|h| h.name.as_str());
        let help = crate::diag::did_you_mean(&args.host, names.clone())
            .unwrap_or_else(|| format!("hosts: {}", crate::diag::list_names(names)));
        return Err(Error::Invalid(format!(
            "error: host `{}` is not in the inventory\n  = help: {help}\n",
            args.host
        )));
    };
    let remote = args.command.join(" ");
    let argv: Vec<String> = if host.is_local() {
        let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
        if remote.is_empty() {
            vec![shell]
        } else {
            vec![shell, "-c".into(), remote]
        }
    } else if host.transport == crate::suite::Transport::Srun {
        let mut v: Vec<String> = [
            "srun",
            "--nodelist",
            host.name.as_str(),
            "-N1",
            "-n1",
            "--overlap",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if remote.is_empty() {
            v.extend(["--pty".into(), "/bin/sh".into(), "-l".into()]);
        } else {
            v.extend(["sh".into(), "-c".into(), remote]);
        }
        v
    } else {
        let t = crate::exec::ssh::Target::of(host, &inv);
        // Interactive: the user may be asked for a passphrase.
        let mut v: Vec<String> = Vec::new();
        let plain = crate::exec::ssh::plain_command(&t);
        let mut it = plain.into_iter().peekable();
        while let Some(a) = it.next() {
            if a == "-o" && it.peek().is_some_and(|o| o == "BatchMode=yes") {
                it.next();
                continue;
            }
            v.push(a);
        }
        if remote.is_empty() {
            v.push("-t".into());
        }
        v.push(t.address.clone());
        if !remote.is_empty() {
            v.push(remote);
        }
        v
    };
    use std::os::unix::process::CommandExt;
    let Some((first, rest)) = argv.split_first() else {
        return Ok(exit::OK);
    };
    let e = std::process::Command::new(first).args(rest).exec();
    Err(Error::Invalid(format!(
        "error: cannot run `{first}`: {e}\n"
    )))
}
