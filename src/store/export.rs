//! Data export: one table family at a time, streamed row by row as CSV or JSON lines,
//! for a spreadsheet or a BI load (`marketsync export`, `GET /api/export/{kind}`).
//!
//! Constant memory: rows are read with a SQLite cursor and written to the output as they
//! come; nothing collects the result. Timestamps stored as unix seconds are written as
//! RFC 3339 UTC (`2026-11-26T05:00:00Z`); eBay's own dates are written as eBay sent them.
//!
//! | kind | table | `--since` filters | `--account` |
//! |---|---|---|---|
//! | `sales` | `vendor_realtime_sales` | `hour_utc >= since` | yes |
//! | `orders` | `ebay_orders` | `last_modified_date >= since` | yes |
//! | `events` | `events` (eBay change history) | `observed_at >= since` | yes |
//! | `prices` | `market_prices` (StockX, Alias and eBay market prices) | `updated_at >= since` | no (not per account) |
//! | `jobs` | `jobs` | `updated_at >= since` | no (per provider) |

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::domain::{format_millis, format_ts};

/// What to export: one of the table families of the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    Sales,
    Orders,
    Events,
    Prices,
    Jobs,
}

impl ExportKind {
    pub const ALL: [ExportKind; 5] = [
        ExportKind::Sales,
        ExportKind::Orders,
        ExportKind::Events,
        ExportKind::Prices,
        ExportKind::Jobs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Sales => "sales",
            ExportKind::Orders => "orders",
            ExportKind::Events => "events",
            ExportKind::Prices => "prices",
            ExportKind::Jobs => "jobs",
        }
    }

    /// Whether rows belong to an account (`--account` applies).
    pub fn per_account(self) -> bool {
        matches!(
            self,
            ExportKind::Sales | ExportKind::Orders | ExportKind::Events
        )
    }

    /// The columns, in output order.
    pub fn columns(self) -> &'static [Column] {
        use ColumnType::{Integer, Real, Text, UnixSeconds};
        match self {
            ExportKind::Sales => {
                const COLUMNS: &[Column] = &[
                    Column::new("account", Text),
                    Column::new("hour_utc", UnixSeconds),
                    Column::new("asin", Text),
                    Column::new("ordered_units", Integer),
                    Column::new("ordered_revenue", Real),
                    Column::new("report_id", Text),
                    Column::new("updated_at", UnixSeconds),
                ];
                COLUMNS
            }
            ExportKind::Orders => {
                const COLUMNS: &[Column] = &[
                    Column::new("account", Text),
                    Column::new("order_id", Text),
                    Column::new("creation_date", Text),
                    Column::new("last_modified_date", Text),
                    Column::new("fulfillment_status", Text),
                    Column::new("payment_status", Text),
                    Column::new("total_value", Text),
                    Column::new("currency", Text),
                    Column::new("buyer", Text),
                    Column::new("first_seen_at", UnixSeconds),
                    Column::new("updated_at", UnixSeconds),
                ];
                COLUMNS
            }
            ExportKind::Events => {
                const COLUMNS: &[Column] = &[
                    Column::new("id", Integer),
                    Column::new("account", Text),
                    Column::new("stream", Text),
                    Column::new("resource_id", Text),
                    Column::new("field", Text),
                    Column::new("before", Text),
                    Column::new("after", Text),
                    Column::new("observed_at", UnixSeconds),
                ];
                COLUMNS
            }
            ExportKind::Prices => {
                const COLUMNS: &[Column] = &[
                    Column::new("provider", Text),
                    Column::new("sku", Text),
                    Column::new("size", Text),
                    Column::new("lowest_ask", Real),
                    Column::new("highest_bid", Real),
                    Column::new("last_sale", Real),
                    Column::new("currency", Text),
                    Column::new("updated_at", UnixSeconds),
                    Column::new("job_id", Integer),
                ];
                COLUMNS
            }
            ExportKind::Jobs => {
                const COLUMNS: &[Column] = &[
                    Column::new("id", Integer),
                    Column::new("provider", Text),
                    Column::new("sku", Text),
                    Column::new("size", Text),
                    Column::new("priority", Integer),
                    Column::new("state", Text),
                    Column::new("attempts", Integer),
                    Column::new("error", Text),
                    Column::new("not_before", UnixSeconds),
                    Column::new("created_at", UnixSeconds),
                    Column::new("updated_at", UnixSeconds),
                    Column::new("finished_at", UnixSeconds),
                    Column::new("source", Text),
                ];
                COLUMNS
            }
        }
    }

    /// The table, the column `--since` compares with, and the order rows come in (an
    /// index or the primary key serves each).
    fn table(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ExportKind::Sales => (
                "vendor_realtime_sales",
                "hour_utc",
                "account, hour_utc, asin",
            ),
            ExportKind::Orders => (
                "ebay_orders",
                "last_modified_date",
                "account, last_modified_date, order_id",
            ),
            ExportKind::Events => ("events", "observed_at", "id"),
            ExportKind::Prices => ("market_prices", "updated_at", "provider, sku, size"),
            ExportKind::Jobs => ("jobs", "updated_at", "id"),
        }
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportKind {
    type Err = ExportError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ExportKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| ExportError::UnknownKind(text.to_string()))
    }
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row; NULL is an empty field.
    #[default]
    Csv,
    /// One JSON object per line, keys in column order; NULL is `null`.
    Jsonl,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }

    /// The HTTP content type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/jsonl; charset=utf-8",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = ExportError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(ExportError::UnknownFormat(other.to_string())),
        }
    }
}

/// How a stored value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Real,
    /// Stored as unix seconds, written as RFC 3339 UTC.
    UnixSeconds,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColumnType,
}

impl Column {
    const fn new(name: &'static str, kind: ColumnType) -> Column {
        Column { name, kind }
    }
}

/// A validated export request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportQuery {
    pub kind: ExportKind,
    /// Only this account's rows (kinds that have accounts only).
    pub account: Option<String>,
    /// Only rows at or after this time (unix seconds; the column per kind is in the
    /// module table).
    pub since: Option<i64>,
    pub format: ExportFormat,
}

impl ExportQuery {
    /// Checks the combination: `account` only for kinds that have accounts.
    pub fn new(
        kind: ExportKind,
        account: Option<String>,
        since: Option<i64>,
        format: ExportFormat,
    ) -> Result<ExportQuery, ExportError> {
        if account.is_some() && !kind.per_account() {
            return Err(ExportError::AccountNotApplicable(kind));
        }
        Ok(ExportQuery {
            kind,
            account,
            since,
            format,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export kind {0:?}; expected one of sales, orders, events, prices, jobs")]
    UnknownKind(String),
    #[error("unknown export format {0:?}; expected csv or jsonl")]
    UnknownFormat(String),
    #[error("{0} are not kept per account; drop the account filter")]
    AccountNotApplicable(ExportKind),
    #[error("invalid time {0:?}; use an RFC 3339 time (2026-11-01T00:00:00Z), a UTC date (2026-11-01) or a duration back from now (24h, 7days)")]
    InvalidTime(String),
    #[error("reading the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("reading postgresql: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("reading postgresql: {0}")]
    Store(#[from] crate::store::LedgerError),
    /// Writing the output failed (a closed pipe, a client gone, a deadline).
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

impl ExportError {
    /// The output was closed by the reader (`| head`): not a failure of the export.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ExportError::Write(err) if err.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Parses a `since` value at `now`: RFC 3339, a UTC date (midnight), or a duration back
/// from now (humantime: `24h`, `7days`, `90m`).
pub fn parse_since(text: &str, now: i64) -> Result<i64, ExportError> {
    let invalid = || ExportError::InvalidTime(text.to_string());
    let trimmed = text.trim();
    if let Some(ts) = crate::domain::parse_ts(trimmed) {
        return Ok(ts);
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(trimmed, "%Y-%m-%d") {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|midnight| midnight.and_utc().timestamp())
            .ok_or_else(invalid);
    }
    let back = humantime::parse_duration(trimmed).map_err(|_| invalid())?;
    let back = i64::try_from(back.as_secs()).map_err(|_| invalid())?;
    now.checked_sub(back).ok_or_else(invalid)
}

/// One value of a row as either engine gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
}

impl<'a> From<ValueRef<'a>> for Cell<'a> {
    fn from(value: ValueRef<'a>) -> Self {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(value) => Cell::Integer(value),
            ValueRef::Real(value) => Cell::Real(value),
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Cell::Text(bytes),
        }
    }
}

/// The `SELECT` of `query` and the values its placeholders take, written with
/// `placeholder(n)` for the n-th (1-based) bound value: `?n` on SQLite, `$n` on
/// PostgreSQL.
pub(crate) fn select(
    query: &ExportQuery,
    placeholder: fn(usize) -> String,
) -> (String, Vec<BoundValue>) {
    let kind = query.kind;
    let (table, since_column, order) = kind.table();
    let names: Vec<&str> = kind.columns().iter().map(|column| column.name).collect();
    let mut clauses = Vec::new();
    let mut bound = Vec::new();
    if let Some(account) = &query.account {
        bound.push(BoundValue::Text(account.clone()));
        clauses.push(format!("account = {}", placeholder(bound.len())));
    }
    if let Some(since) = query.since {
        // eBay dates are text in one format (millis, `Z`): text order is time order.
        bound.push(match kind {
            ExportKind::Orders => BoundValue::Text(format_millis(since.saturating_mul(1000))),
            _ => BoundValue::Integer(since),
        });
        clauses.push(format!("{since_column} >= {}", placeholder(bound.len())));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM {table}{filter} ORDER BY {order}",
        names.join(", ")
    );
    (sql, bound)
}

/// A value bound to the export's `SELECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BoundValue {
    Text(String),
    Integer(i64),
}

/// Writes rows of one kind in one format as they come; [`RowWriter::finish`] flushes.
pub(crate) struct RowWriter<'w> {
    columns: &'static [Column],
    format: WriterFormat<'w>,
    count: u64,
}

enum WriterFormat<'w> {
    Csv(Box<csv::Writer<&'w mut dyn Write>>, csv::ByteRecord),
    Jsonl(&'w mut dyn Write, Vec<u8>),
}

impl<'w> RowWriter<'w> {
    /// Starts the output of `query` (the CSV header line).
    pub(crate) fn new(query: &ExportQuery, out: &'w mut dyn Write) -> Result<Self, ExportError> {
        let columns = query.kind.columns();
        let format = match query.format {
            ExportFormat::Csv => {
                let mut writer = csv::WriterBuilder::new().from_writer(out);
                let names: Vec<&str> = columns.iter().map(|column| column.name).collect();
                writer.write_record(&names).map_err(csv_error)?;
                WriterFormat::Csv(Box::new(writer), csv::ByteRecord::new())
            }
            ExportFormat::Jsonl => WriterFormat::Jsonl(out, Vec::with_capacity(512)),
        };
        Ok(RowWriter {
            columns,
            format,
            count: 0,
        })
    }

    /// Writes one row: `cell(i)` gives the value of the i-th column.
    pub(crate) fn row<'c, E>(
        &mut self,
        mut cell: impl FnMut(usize) -> Result<Cell<'c>, E>,
    ) -> Result<(), ExportError>
    where
        ExportError: From<E>,
    {
        match &mut self.format {
            WriterFormat::Csv(writer, record) => {
                record.clear();
                for (index, column) in self.columns.iter().enumerate() {
                    match cell(index)? {
                        Cell::Null => record.push_field(b""),
                        Cell::Integer(value) if column.kind == ColumnType::UnixSeconds => {
                            record.push_field(format_ts(value).as_bytes())
                        }
                        Cell::Integer(value) => record.push_field(value.to_string().as_bytes()),
                        Cell::Real(value) => record.push_field(value.to_string().as_bytes()),
                        Cell::Text(bytes) => record.push_field(bytes),
                    }
                }
                writer.write_byte_record(record).map_err(csv_error)?;
            }
            WriterFormat::Jsonl(out, line) => {
                line.clear();
                line.push(b'{');
                for (index, column) in self.columns.iter().enumerate() {
                    if index > 0 {
                        line.push(b',');
                    }
                    write_json(line, column.name)?;
                    line.push(b':');
                    match cell(index)? {
                        Cell::Null => line.extend_from_slice(b"null"),
                        Cell::Integer(value) if column.kind == ColumnType::UnixSeconds => {
                            write_json(line, &format_ts(value))?
                        }
                        Cell::Integer(value) => write!(line, "{value}")?,
                        Cell::Real(value) => match serde_json::Number::from_f64(value) {
                            Some(number) => write!(line, "{number}")?,
                            None => line.extend_from_slice(b"null"),
                        },
                        Cell::Text(bytes) => write_json(line, &String::from_utf8_lossy(bytes))?,
                    }
                }
                line.extend_from_slice(b"}\n");
                out.write_all(line)?;
            }
        }
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    /// Flushes the output; returns the number of rows written.
    pub(crate) fn finish(self) -> Result<u64, ExportError> {
        match self.format {
            WriterFormat::Csv(mut writer, _) => writer.flush()?,
            WriterFormat::Jsonl(out, _) => out.flush()?,
        }
        Ok(self.count)
    }
}

/// Writes every row of `query` to `out`, as it reads it from the SQLite file; returns the
/// number of rows. (PostgreSQL: `PgLedger::export`.)
pub fn export(
    conn: &Connection,
    query: &ExportQuery,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let (sql, bound) = select(query, |n| format!("?{n}"));
    let bound = bound.into_iter().map(|value| match value {
        BoundValue::Text(text) => rusqlite::types::Value::Text(text),
        BoundValue::Integer(value) => rusqlite::types::Value::Integer(value),
    });
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(bound))?;
    let mut writer = RowWriter::new(query, out)?;
    while let Some(row) = rows.next()? {
        writer.row(|index| row.get_ref(index).map(Cell::from))?;
    }
    writer.finish()
}

/// Whether `kind`'s table is one the PostgreSQL store holds (`[store] url_env`): then the
/// export reads it there.
pub fn lives_in_postgres(kind: ExportKind) -> bool {
    crate::store::postgres::TABLES.contains(&kind.table().0)
}

fn write_json(line: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    serde_json::to_writer(&mut *line, text).map_err(std::io::Error::other)
}

/// The csv crate wraps the writer's I/O errors; unwrap them so a closed pipe stays one.
fn csv_error(err: csv::Error) -> ExportError {
    match err.into_kind() {
        csv::ErrorKind::Io(io) => ExportError::Write(io),
        other => ExportError::Write(std::io::Error::other(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_dates_and_durations_back() {
        let now = 1_764_000_000;
        assert_eq!(
            parse_since("2025-12-09T20:00:00Z", now).unwrap(),
            1_765_310_400
        );
        assert_eq!(parse_since("2025-12-09", now).unwrap(), 1_765_238_400);
        assert_eq!(parse_since("24h", now).unwrap(), now - 86_400);
        for bad in ["yesterday", "2025-13-01", "", "99999999999999999999s"] {
            let err = parse_since(bad, now).unwrap_err();
            assert!(err.to_string().contains("use an RFC 3339 time"), "{err}");
        }
    }

    #[test]
    fn kinds_and_formats_parse_and_name_the_choices() {
        for kind in ExportKind::ALL {
            assert_eq!(kind.as_str().parse::<ExportKind>().unwrap(), kind);
        }
        assert_eq!(
            "orderz".parse::<ExportKind>().unwrap_err().to_string(),
            "unknown export kind \"orderz\"; expected one of sales, orders, events, prices, jobs"
        );
        assert_eq!(
            "xml".parse::<ExportFormat>().unwrap_err().to_string(),
            "unknown export format \"xml\"; expected csv or jsonl"
        );
        let err = ExportQuery::new(
            ExportKind::Prices,
            Some("a".to_string()),
            None,
            ExportFormat::Csv,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "prices are not kept per account; drop the account filter"
        );
    }
}
