//! `flow fetch`: what an artifact's fetch steps would bring back, now, for
//! an artifact whose flow died or still runs. Nothing on the hosts is
//! stopped or changed.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::status::resolve;
use super::{Error, exit};
use crate::cli::FetchArgs;
use crate::diag::display_path;
use crate::exec::fetch::{Tally, Transfer};
use crate::exec::host::{HostSet, Launcher};
use crate::plan::RunPlan;
use crate::suite::StepKind;

pub fn fetch(args: &FetchArgs) -> Result<i32, Error> {
    let dir = resolve(&args.artifacts, args.id.as_deref())?;
    let only = super::run::only(&args.only)?;
    // The controller reaches the hosts and holds the artifact; `flow sync`
    // brings what it fetched here.
    if let Some((r, there)) = super::remote::forwarded(&dir) {
        let mut a = vec!["fetch".to_string(), there.display().to_string()];
        for o in &args.only {
            a.extend(["--only".to_string(), o.clone()]);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        return r.forward(&a);
    }
    let v = super::status::read_suite_json(&dir)?;
    let inv = super::status::stored_inventory(&dir, &v)?;
    let mut plans: Vec<RunPlan> = Vec::new();
    for id in v["expansion"]["runs"].as_array().into_iter().flatten() {
        let Some(id) = id.as_str() else { continue };
        let path = dir.join("runs").join(id).join("plan.json");
        let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let plan: RunPlan = serde_json::from_slice(&text)
            .map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?;
        let status = (!only.is_empty() && only.needs_status())
            .then(|| crate::results::status_in(&dir.join("runs").join(id)));
        if !only.matches(&plan, Some(status.unwrap_or("pending"))) {
            continue;
        }
        if plan.steps.iter().any(|s| s.kind == StepKind::Fetch) {
            plans.push(plan);
        }
    }
    let mut out = std::io::stdout().lock();
    if plans.is_empty() {
        writeln!(
            out,
            "no run of `{}` has a fetch step{}",
            display_path(&dir),
            if only.is_empty() {
                String::new()
            } else {
                format!(" matching `--only {}`", args.only.join(" --only "))
            }
        )
        .map_err(Error::Output)?;
        return Ok(exit::OK);
    }
    let mut names: Vec<String> = Vec::new();
    for s in plans.iter().flat_map(|p| &p.steps) {
        if s.kind == StepKind::Fetch && !names.contains(&s.host) {
            names.push(s.host.clone());
        }
    }
    let hosts = HostSet::observer(&inv, &names).map_err(|e| {
        Error::io(
            "prepare ssh connections in",
            std::path::Path::new("/tmp"),
            e,
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::io("start the runtime in", &dir, e))?;
    let mut failed = 0;
    let results: Vec<(RunPlan, Vec<Transfer>)> = rt.block_on(async {
        let mut v = Vec::new();
        for plan in plans {
            let run_dir = PathBuf::from(&plan.dir);
            let mut got = Vec::new();
            for s in plan.steps.iter().filter(|s| s.kind == StepKind::Fetch) {
                got.extend(
                    hosts
                        .fetch(&s.host, &s.cwd, &s.paths, &run_dir, s.limits())
                        .await,
                );
            }
            v.push((plan, got));
        }
        hosts.close().await;
        v
    });
    for (plan, transfers) in results {
        let run_dir = PathBuf::from(&plan.dir);
        let log = run_dir.join("fetch.log");
        let t = Tally::of(&transfers);
        let (files, bytes, missing, bad) = (t.files, t.bytes, t.missing, t.failed);
        if let Err(e) = t.append_to(&log) {
            failed += 1;
            writeln!(
                out,
                "{}: cannot write `{}`: {e}",
                plan.id,
                display_path(&log)
            )
            .map_err(Error::Output)?;
        }
        crate::exec::run::append_event(
            &run_dir.join("events.jsonl"),
            "fetched_on_request",
            &json!({"files": files, "bytes": bytes, "missing": missing, "failed": bad}),
        );
        if bad > 0 {
            failed += 1;
        }
        let mut line = format!(
            "{}: {files} file{}, {bytes} bytes",
            plan.id,
            if files == 1 { "" } else { "s" }
        );
        if missing > 0 {
            line.push_str(&format!(", {missing} missing"));
        }
        if bad > 0 {
            line.push_str(&format!(", {bad} failed (see {})", display_path(&log)));
        }
        writeln!(out, "{line}").map_err(Error::Output)?;
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}
