//! `flow schema`: the JSON Schema of the three input file kinds, derived from
//! the same serde types the loader decodes into, and of the two JSON files a
//! run writes (`plan.json`, `run_result.json`), derived from the types that
//! write them.

use std::io::Write;

use crate::artifact::run_result::RunResult;
use crate::cli::{SchemaArgs, SchemaKind};
use crate::plan::RunPlan;
use crate::suite::raw::{RawInventory, RawSuite, RawWorkload};

use super::Error;

pub fn schema_json(kind: Option<SchemaKind>) -> serde_json::Value {
    let one = |k: SchemaKind| {
        match k {
            SchemaKind::Suite => serde_json::to_value(schemars::schema_for!(RawSuite)),
            SchemaKind::Workload => serde_json::to_value(schemars::schema_for!(RawWorkload)),
            SchemaKind::Inventory => serde_json::to_value(schemars::schema_for!(RawInventory)),
            SchemaKind::Plan => serde_json::to_value(schemars::schema_for!(RunPlan)),
            SchemaKind::RunResult => serde_json::to_value(schemars::schema_for!(RunResult)),
        }
        .unwrap_or_default()
    };
    match kind {
        Some(k) => one(k),
        None => serde_json::json!({
            "suite": one(SchemaKind::Suite),
            "workload": one(SchemaKind::Workload),
            "inventory": one(SchemaKind::Inventory),
            "plan": one(SchemaKind::Plan),
            "run-result": one(SchemaKind::RunResult),
        }),
    }
}

pub fn schema(args: &SchemaArgs) -> Result<i32, Error> {
    let v = schema_json(args.kind);
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &v).map_err(|e| Error::Output(e.into()))?;
    writeln!(out).map_err(Error::Output)?;
    Ok(super::exit::OK)
}
