//! Export to ClickHouse over its HTTP interface: the four tables created
//! when missing (`flow_runs`, `flow_metrics`, `flow_summary`,
//! `flow_timeline`, each keyed by `artifact_id`), rows sent as
//! `JSONEachRow`, then counted back. An artifact already in any of the
//! tables is refused, not inserted twice; an export that fails part way
//! says which tables hold rows of it and how to remove them.

use serde::Serialize;

use super::Tables;
use super::http::{Response, Url, encode, post};

/// ClickHouse's HTTP port.
pub const DEFAULT_PORT: u16 = 8123;

/// Rows sent per request at most.
const BATCH: usize = 50_000;

/// Each table's name and columns (the documented schema).
pub const SCHEMA: [(&str, &str, &str); 4] = [
    (
        "flow_runs",
        "artifact_id String, run_id String, suite String, workload String, mode String, \
         variant String, params String, repetition UInt32, mutation String, status String, \
         started_ns Nullable(UInt64), duration_ms Nullable(UInt64), first_error Nullable(String), \
         annotations String",
        "artifact_id, run_id",
    ),
    (
        "flow_metrics",
        "artifact_id String, run_id String, workload String, mode String, variant String, \
         repetition UInt32, status String, metric String, value Nullable(Float64), unit String, \
         samples UInt64, error Nullable(String)",
        "artifact_id, workload, metric, run_id",
    ),
    (
        "flow_summary",
        "artifact_id String, workload String, mode String, variant String, params String, \
         metric String, unit String, better String, n UInt32, n_ok UInt32, \
         mean Nullable(Float64), median Nullable(Float64), std Nullable(Float64), \
         min Nullable(Float64), max Nullable(Float64), ci95_low Nullable(Float64), \
         ci95_high Nullable(Float64), baseline_mean Nullable(Float64), ratio Nullable(Float64), \
         ratio_ci95_low Nullable(Float64), ratio_ci95_high Nullable(Float64), \
         overhead_pct Nullable(Float64), p_value Nullable(Float64), significant Nullable(UInt8), \
         none_mean Nullable(Float64), none_ratio Nullable(Float64), none_p_value Nullable(Float64), \
         none_significant Nullable(UInt8)",
        "artifact_id, workload, metric, mode, variant",
    ),
    (
        "flow_timeline",
        "artifact_id String, run_id String, host String, source String, file String, \
         local_ns Int64, corrected_ns Int64, bound_ns UInt64, fields String",
        "artifact_id, run_id, corrected_ns",
    ),
];

/// The `CREATE TABLE` statement of each table.
pub fn create_statements(database: &str) -> Vec<String> {
    SCHEMA
        .iter()
        .map(|(name, cols, key)| {
            format!(
                "CREATE TABLE IF NOT EXISTS {}.{name} ({cols}) ENGINE = MergeTree ORDER BY ({key})",
                ident(database)
            )
        })
        .collect()
}

/// A database name quoted for SQL.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A string literal for SQL.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Runs one statement; its answer's text.
fn query(url: &Url, sql: &str, body: &[u8]) -> Result<String, String> {
    let path = if body.is_empty() {
        "/".to_string()
    } else {
        format!("/?query={}", encode(sql))
    };
    let send = if body.is_empty() {
        sql.as_bytes()
    } else {
        body
    };
    let Response { status, body } = post(url, &path, send)?;
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if status != 200 {
        let first = sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ");
        return Err(format!(
            "ClickHouse at {} refused `{first} …` (HTTP {status}): {text}",
            url.authority()
        ));
    }
    Ok(text)
}

/// Rows of `artifact` in each table, in [`SCHEMA`] order.
fn counts(url: &Url, database: &str, artifact: &str) -> Result<[u64; 4], String> {
    let mut out = [0u64; 4];
    for (i, (name, _, _)) in SCHEMA.iter().enumerate() {
        let text = query(
            url,
            &format!(
                "SELECT count() FROM {}.{name} WHERE artifact_id = {} FORMAT TSV",
                ident(database),
                literal(artifact)
            ),
            b"",
        )?;
        out[i] = text
            .parse()
            .map_err(|_| format!("ClickHouse answered `{text}` to a count"))?;
    }
    Ok(out)
}

fn send<T: Serialize>(url: &Url, database: &str, table: &str, rows: &[T]) -> Result<(), String> {
    for batch in rows.chunks(BATCH) {
        let mut body = Vec::with_capacity(batch.len() * 256);
        for r in batch {
            serde_json::to_writer(&mut body, r).map_err(|e| e.to_string())?;
            body.push(b'\n');
        }
        query(
            url,
            &format!("INSERT INTO {}.{table} FORMAT JSONEachRow", ident(database)),
            &body,
        )?;
    }
    Ok(())
}

/// What an export put where.
#[derive(Debug)]
pub struct Exported {
    pub counts: [usize; 4],
}

/// Sends `tables` of `artifact` into `database` at `url`, then checks
/// that each table holds exactly the rows sent.
pub fn export(
    url_text: &str,
    database: &str,
    artifact: &str,
    tables: &Tables,
) -> Result<Exported, String> {
    let url = Url::parse(url_text, DEFAULT_PORT)?;
    query(
        &url,
        &format!("CREATE DATABASE IF NOT EXISTS {}", ident(database)),
        b"",
    )?;
    for stmt in create_statements(database) {
        query(&url, &stmt, b"")?;
    }
    let before = counts(&url, database, artifact)?;
    if before.iter().any(|n| *n > 0) {
        return Err(format!(
            "artifact `{artifact}` is already in ClickHouse at {} ({}): nothing was inserted\n  \
             help: to export it again, first remove it: {}",
            url.authority(),
            held(database, &before),
            removal(database, artifact, &before)
        ));
    }
    let sent = tables.counts();
    let result = send(&url, database, SCHEMA[1].0, &tables.metrics)
        .and_then(|()| send(&url, database, SCHEMA[2].0, &tables.summary))
        .and_then(|()| send(&url, database, SCHEMA[3].0, &tables.timeline))
        // Runs last: a run row says its artifact went in whole.
        .and_then(|()| send(&url, database, SCHEMA[0].0, &tables.runs));
    let after = counts(&url, database, artifact);
    match (result, after) {
        (Ok(()), Ok(after)) if after.iter().zip(&sent).all(|(a, s)| *a == *s as u64) => {
            Ok(Exported { counts: sent })
        }
        (r, after) => {
            let after = after.unwrap_or([0; 4]);
            Err(format!(
                "the export of `{artifact}` to {} is incomplete: {}sent {}, the tables hold {}\n  \
                 help: remove what went in, then export again: {}",
                url.authority(),
                r.err().map(|e| format!("{e}; ")).unwrap_or_default(),
                held(database, &sent.map(|n| n as u64)),
                held(database, &after),
                removal(database, artifact, &after)
            ))
        }
    }
}

fn held(database: &str, counts: &[u64; 4]) -> String {
    SCHEMA
        .iter()
        .zip(counts)
        .map(|((name, _, _), n)| format!("{database}.{name}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn removal(database: &str, artifact: &str, counts: &[u64; 4]) -> String {
    SCHEMA
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|((name, _, _), _)| {
            format!(
                "ALTER TABLE {}.{name} DELETE WHERE artifact_id = {};",
                ident(database),
                literal(artifact)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_the_rows_is_in_the_schema_and_back() {
        // The JSON keys of each row type are the table's columns, in order.
        let cols = |i: usize| -> Vec<String> {
            SCHEMA[i]
                .1
                .split(", ")
                .map(|c| c.split_whitespace().next().unwrap_or("").to_string())
                .collect()
        };
        let keys = |v: serde_json::Value| -> Vec<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        let run = super::super::RunRow {
            artifact_id: String::new(),
            run_id: String::new(),
            suite: String::new(),
            workload: String::new(),
            mode: String::new(),
            variant: String::new(),
            params: String::new(),
            repetition: 1,
            mutation: String::new(),
            status: String::new(),
            started_ns: None,
            duration_ms: None,
            first_error: None,
            annotations: String::new(),
        };
        let mut a = keys(serde_json::to_value(&run).expect("json"));
        let mut b = cols(0);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(
            create_statements("x`y")[0]
                .starts_with("CREATE TABLE IF NOT EXISTS `x\\`y`.flow_runs (")
        );
        assert_eq!(literal("it's"), "'it\\'s'");
    }
}
