//! `marketsync export` for the tables the PostgreSQL store holds: the same `SELECT`,
//! columns and output as the SQLite export ([`crate::store::export`]), rows streamed from
//! a server-side portal as they come (`query_raw`), so memory stays constant.

use std::io::Write;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::Row;

use super::PgLedger;
use crate::store::export::{select, BoundValue, Cell, ExportError, ExportQuery, RowWriter};

impl PgLedger {
    /// Writes every row of `query` to `out` as it reads it; returns the number of rows.
    /// Only for a kind whose table this store holds
    /// ([`crate::store::export::lives_in_postgres`]).
    pub fn export(&self, query: &ExportQuery, out: &mut dyn Write) -> Result<u64, ExportError> {
        let (sql, bound) = select(query, |n| format!("${n}"));
        let mut client = self.client()?;
        let params: Vec<Box<dyn ToSql + Sync>> = bound
            .into_iter()
            .map(|value| -> Box<dyn ToSql + Sync> {
                match value {
                    BoundValue::Text(text) => Box::new(text),
                    BoundValue::Integer(value) => Box::new(value),
                }
            })
            .collect();
        let mut rows = client.query_raw(&sql, params.iter().map(|param| param.as_ref()))?;
        let mut writer = RowWriter::new(query, out)?;
        while let Some(row) = rows.next()? {
            writer.row(|index| cell(&row, index))?;
        }
        writer.finish()
    }
}

/// The value of column `index` of `row` by its PostgreSQL type.
fn cell(row: &Row, index: usize) -> Result<Cell<'_>, ExportError> {
    let Some(column) = row.columns().get(index) else {
        return Err(ExportError::Write(std::io::Error::other(format!(
            "the export query returned no column {index}"
        ))));
    };
    let ty = column.type_();
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(index)?.map(Cell::Integer)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(index)?
            .map(|value| Cell::Integer(value.into()))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(index)?
            .map(|value| Cell::Integer(value.into()))
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(index)?.map(Cell::Real)
    } else if *ty == Type::FLOAT4 {
        row.try_get::<_, Option<f32>>(index)?
            .map(|value| Cell::Real(value.into()))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(index)?
            .map(|value| Cell::Integer(value.into()))
    } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
        row.try_get::<_, Option<&str>>(index)?
            .map(|text| Cell::Text(text.as_bytes()))
    } else {
        return Err(ExportError::Write(std::io::Error::other(format!(
            "column {} has postgresql type {ty}, which the export cannot write",
            column.name()
        ))));
    };
    Ok(value.unwrap_or(Cell::Null))
}
