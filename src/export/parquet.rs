//! Export to Parquet: one file per table (`runs.parquet`,
//! `metrics.parquet`, `summary.parquet`, `timeline.parquet`), Snappy
//! compressed, with the columns and types of the ClickHouse schema
//! ([`super::clickhouse::SCHEMA`]): text as UTF-8, counts and times as
//! 64-bit integers, flags as booleans, `Nullable` as optional. pandas,
//! polars, DuckDB and Spark read them as they are.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::Serialize;
use serde_json::Value;

use super::Tables;
use super::clickhouse::SCHEMA;

/// A column's kind, from its ClickHouse type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Float,
    Bool,
}

/// The columns of a table: name, kind, nullable.
fn columns(spec: &str) -> Vec<(String, Kind, bool)> {
    spec.split(", ")
        .filter_map(|c| {
            let (name, ty) = c.trim().split_once(' ')?;
            let (ty, nullable) = match ty
                .strip_prefix("Nullable(")
                .and_then(|t| t.strip_suffix(')'))
            {
                Some(inner) => (inner, true),
                None => (ty, false),
            };
            let kind = match ty {
                "String" => Kind::Text,
                "Float64" => Kind::Float,
                "UInt8" => Kind::Bool,
                _ => Kind::Int,
            };
            Some((name.to_string(), kind, nullable))
        })
        .collect()
}

fn schema(table: &str, cols: &[(String, Kind, bool)]) -> Result<Type, String> {
    let fields = cols
        .iter()
        .map(|(name, kind, nullable)| {
            let (physical, logical) = match kind {
                Kind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
                Kind::Int => (Physical::INT64, None),
                Kind::Float => (Physical::DOUBLE, None),
                Kind::Bool => (Physical::BOOLEAN, None),
            };
            Type::primitive_type_builder(name, physical)
                .with_repetition(if *nullable {
                    Repetition::OPTIONAL
                } else {
                    Repetition::REQUIRED
                })
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Type::group_type_builder(table)
        .with_fields(fields)
        .build()
        .map_err(|e| e.to_string())
}

/// Rows per row group.
const ROW_GROUP: usize = 100_000;

/// Writes `rows` to `path` (to a temporary file renamed into place).
fn write_table<T: Serialize>(
    path: &Path,
    table: &str,
    spec: &str,
    rows: &[T],
) -> Result<(), String> {
    let cols = columns(spec);
    let schema = Arc::new(schema(table, &cols)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let tmp = path.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let e = |e: parquet::errors::ParquetError| format!("cannot write {}: {e}", path.display());
    let mut w = SerializedFileWriter::new(file, schema, props).map_err(e)?;
    for group in rows
        .chunks(ROW_GROUP)
        .chain(rows.is_empty().then_some(&rows[..0]))
    {
        let values: Vec<Value> = group
            .iter()
            .map(|r| serde_json::to_value(r).map_err(|x| x.to_string()))
            .collect::<Result<_, _>>()?;
        let mut rg = w.next_row_group().map_err(e)?;
        for (name, kind, nullable) in &cols {
            let Some(mut col) = rg.next_column().map_err(e)? else {
                return Err(format!(
                    "{}: the schema has fewer columns than the table",
                    path.display()
                ));
            };
            let cells: Vec<&Value> = values
                .iter()
                .map(|v| v.get(name).unwrap_or(&Value::Null))
                .collect();
            let defs: Vec<i16> = cells.iter().map(|c| i16::from(!c.is_null())).collect();
            let defs = nullable.then_some(defs.as_slice());
            let present = cells.iter().filter(|c| !c.is_null());
            match kind {
                Kind::Text => {
                    let v: Vec<ByteArray> = present
                        .map(|c| {
                            ByteArray::from(c.as_str().unwrap_or_default().as_bytes().to_vec())
                        })
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&v, defs, None)
                        .map_err(e)?;
                }
                Kind::Int => {
                    let v: Vec<i64> = present
                        .map(|c| {
                            c.as_i64()
                                .or_else(|| c.as_u64().map(|u| u as i64))
                                .unwrap_or(0)
                        })
                        .collect();
                    col.typed::<Int64Type>()
                        .write_batch(&v, defs, None)
                        .map_err(e)?;
                }
                Kind::Float => {
                    let v: Vec<f64> = present.map(|c| c.as_f64().unwrap_or(f64::NAN)).collect();
                    col.typed::<DoubleType>()
                        .write_batch(&v, defs, None)
                        .map_err(e)?;
                }
                Kind::Bool => {
                    let v: Vec<bool> = present
                        .map(|c| c.as_u64().is_some_and(|x| x != 0))
                        .collect();
                    col.typed::<BoolType>()
                        .write_batch(&v, defs, None)
                        .map_err(e)?;
                }
            }
            col.close().map_err(e)?;
        }
        rg.close().map_err(e)?;
    }
    w.close().map_err(e)?;
    std::fs::rename(&tmp, path).map_err(|x| format!("cannot write {}: {x}", path.display()))
}

/// Writes the four tables into `dir` as `<table>.parquet`; their paths.
pub fn export(dir: &Path, tables: &Tables) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for (i, name) in super::TABLES.iter().enumerate() {
        let path = dir.join(format!("{name}.parquet"));
        let spec = SCHEMA[i].1;
        match i {
            0 => write_table(&path, name, spec, &tables.runs)?,
            1 => write_table(&path, name, spec, &tables.metrics)?,
            2 => write_table(&path, name, spec, &tables.summary)?,
            _ => write_table(&path, name, spec, &tables.timeline)?,
        }
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn a_table_reads_back_with_its_nulls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = super::super::MetricRow {
            artifact_id: "a".into(),
            run_id: "r1".into(),
            workload: "w".into(),
            mode: "baseline".into(),
            variant: "default".into(),
            repetition: 1,
            status: "passed".into(),
            metric: "lat".into(),
            value: Some(1.5),
            unit: "ms".into(),
            samples: 3,
            error: None,
        };
        let rows = vec![
            first.clone(),
            super::super::MetricRow {
                value: None,
                error: Some("no file matches".into()),
                run_id: "r2".into(),
                ..first
            },
        ];
        let path = dir.path().join("metrics.parquet");
        write_table(&path, "metrics", SCHEMA[1].1, &rows).expect("written");
        let r = SerializedFileReader::new(std::fs::File::open(&path).expect("open"))
            .expect("a parquet file");
        assert_eq!(r.metadata().file_metadata().num_rows(), 2);
        let got: Vec<String> = r
            .get_row_iter(None)
            .expect("rows")
            .map(|row| row.expect("a row").to_string())
            .collect();
        assert!(
            got[0].contains("value: 1.5") && got[0].contains("error: null"),
            "{got:?}"
        );
        assert!(
            got[1].contains("value: null") && got[1].contains("error: \"no file matches\""),
            "{got:?}"
        );
    }
}
