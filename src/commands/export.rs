//! `flow export`: an artifact's tables into ClickHouse or Parquet files.

use std::io::Write as _;

use super::status::resolve;
use super::{Error, exit};
use crate::cli::ExportArgs;
use crate::diag::display_path;
use crate::export;

pub fn export(args: &ExportArgs) -> Result<i32, Error> {
    let artifact = resolve(&args.artifacts, args.id.as_deref())?;
    let id = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if args.clickhouse.is_none() && args.format.is_none() {
        return Err(Error::Invalid(
            "error: say where the artifact goes: `--clickhouse URL` or `--format parquet`\n".into(),
        ));
    }
    let started = std::time::Instant::now();
    let mut err = std::io::stderr().lock();
    let tables = match export::tables(&artifact) {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(err, "error: {e}");
            }
            let _ = writeln!(
                err,
                "error: nothing was exported: the artifact `{}` cannot be read whole",
                display_path(&artifact)
            );
            return Ok(exit::FAILED);
        }
    };
    let counts = tables.counts();
    let what = export::TABLES
        .iter()
        .zip(counts)
        .map(|(t, n)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = std::io::stdout().lock();
    if let Some(url) = &args.clickhouse {
        match export::clickhouse::export(url, &args.database, &id, &tables) {
            Ok(_) => {
                let _ = writeln!(
                    out,
                    "exported {id} to ClickHouse ({}.flow_*): {what}, counted back, in {:.2} s",
                    args.database,
                    started.elapsed().as_secs_f64()
                );
                Ok(exit::OK)
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                Ok(exit::FAILED)
            }
        }
    } else {
        let dir = args.out.clone().unwrap_or_else(|| artifact.join("export"));
        match export::parquet::export(&dir, &tables) {
            Ok(paths) => {
                let _ = writeln!(
                    out,
                    "exported {id} as Parquet: {what}, in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                for p in paths {
                    let _ = writeln!(out, "  {}", display_path(&p));
                }
                Ok(exit::OK)
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                Ok(exit::FAILED)
            }
        }
    }
}
