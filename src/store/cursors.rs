//! Cursor streams (tables of SQLite migrations 0003, 0006, 0007 and 0011; PostgreSQL
//! migration `0003_cursors.sql`): cursors, resource upserts with their change history,
//! and the read API for status and HTTP, behind the [`CursorStore`] trait that both
//! engines implement ([`SqliteLedger`] here, `PgLedger` in `store::postgres::cursors`).
//! Everything here is synchronous and runs on the blocking pool.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::store::ebay_streams::OpenSpec;
use crate::store::history::CursorPosition;
use crate::store::sqlite::check_fence;
use crate::store::WriteFence;
use crate::store::{LedgerError, SqliteLedger};

/// Storage for the cursor streams: the `cursors` rows, the streams' resource tables and
/// the `events` history. A supertrait of [`crate::store::LedgerStore`], so the engine
/// that holds the hour ledger (`store::hour_ledger`) holds the cursor streams too.
/// Methods are blocking: async callers use `store::blocking`. The same contract tests run
/// against both engines (`store::contract_cursors`).
pub trait CursorStore: Send + Sync {
    /// The cursor of (account, stream), created at `initial` when absent.
    fn load_or_init_cursor(
        &self,
        account: &str,
        stream: &str,
        initial: i64,
        now: i64,
    ) -> Result<CursorRow, LedgerError>;

    /// Applies one window in one transaction: checks the fence, upserts every resource
    /// into `spec`'s table, appends one event per changed tracked field of a resource
    /// seen before, and moves the cursor from `window.start` to `window.end`. A cursor no
    /// longer at `window.start` (another run moved it) is
    /// [`LedgerError::CursorMoved`]; a stale fence is [`LedgerError::StaleFence`]; in
    /// both cases nothing is written.
    #[allow(clippy::too_many_arguments)]
    fn apply_window(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        spec: &TableSpec,
        resources: &[Resource],
        window: CursorWindow,
        now: i64,
    ) -> Result<Applied, LedgerError>;

    /// Records a failed window: the cursor stays, `failures + 1`, the error and when to
    /// retry. The fence is checked in the same transaction.
    fn record_failure(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        message: &str,
        retry_at: i64,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// Where (account, stream) stands; `None` before its first run.
    fn cursor_snapshot(
        &self,
        account: &str,
        stream: &str,
    ) -> Result<Option<CursorSnapshot>, LedgerError>;

    /// The newest `limit` change-history rows, of one account or all, newest first.
    fn recent_events(
        &self,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, LedgerError>;

    /// The `limit` most recently modified orders of an account.
    fn latest_orders(&self, account: &str, limit: usize) -> Result<Vec<OrderSummary>, LedgerError>;

    /// The earliest `spec.date_column` of `account`'s resources in an open status, as
    /// stored (text, compared in byte order); `None` when none is open.
    fn oldest_open(&self, account: &str, spec: &OpenSpec) -> Result<Option<String>, LedgerError>;

    /// Every cursor, by (account, stream) in byte order, at most `limit`: the
    /// dashboard's cursor positions.
    fn cursor_positions(&self, limit: usize) -> Result<Vec<CursorPosition>, LedgerError>;
}

impl CursorStore for SqliteLedger {
    fn load_or_init_cursor(
        &self,
        account: &str,
        stream: &str,
        initial: i64,
        now: i64,
    ) -> Result<CursorRow, LedgerError> {
        self.with_conn(|conn| load_or_init_cursor(conn, account, stream, initial, now))
    }

    fn apply_window(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        spec: &TableSpec,
        resources: &[Resource],
        window: CursorWindow,
        now: i64,
    ) -> Result<Applied, LedgerError> {
        self.with_conn(|conn| {
            apply_window(
                conn,
                account,
                stream,
                fence,
                spec,
                resources,
                window.start,
                window.end,
                now,
            )
        })
    }

    fn record_failure(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        message: &str,
        retry_at: i64,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| record_failure(conn, account, stream, fence, message, retry_at, now))
    }

    fn cursor_snapshot(
        &self,
        account: &str,
        stream: &str,
    ) -> Result<Option<CursorSnapshot>, LedgerError> {
        self.with_read_conn(|conn| cursor_snapshot(conn, account, stream))
    }

    fn recent_events(
        &self,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, LedgerError> {
        self.with_read_conn(|conn| recent_events_of(conn, account, limit))
    }

    fn latest_orders(&self, account: &str, limit: usize) -> Result<Vec<OrderSummary>, LedgerError> {
        self.with_read_conn(|conn| latest_orders(conn, account, limit))
    }

    fn oldest_open(&self, account: &str, spec: &OpenSpec) -> Result<Option<String>, LedgerError> {
        self.with_read_conn(|conn| super::ebay_streams::oldest_open(conn, account, spec))
    }

    fn cursor_positions(&self, limit: usize) -> Result<Vec<CursorPosition>, LedgerError> {
        self.with_read_conn(|conn| cursor_positions_of(conn, limit))
    }
}

/// A half-open window `[start, end)` of unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorWindow {
    pub start: i64,
    pub end: i64,
}

/// A stream's resource table: `account`, the key column, `columns`, `raw`,
/// `first_seen_at`, `updated_at`; primary key (account, key).
#[derive(Debug)]
pub struct TableSpec {
    pub table: &'static str,
    pub key: &'static str,
    /// Columns filled from [`Resource::values`], in this order.
    pub columns: &'static [&'static str],
    /// Columns whose changes are history: (column, wire field name recorded in `events`).
    pub tracked: &'static [(&'static str, &'static str)],
}

/// One resource parsed from a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: String,
    /// One value per [`TableSpec::columns`].
    pub values: Vec<Option<String>>,
    /// The resource as served (JSON).
    pub raw: String,
}

impl Resource {
    /// The value of `column` of `spec`.
    pub fn value<'a>(&'a self, spec: &TableSpec, column: &str) -> Option<&'a str> {
        let index = spec.columns.iter().position(|name| *name == column)?;
        self.values.get(index)?.as_deref()
    }
}

/// One parsed page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Items in the whole result set (all pages).
    pub total: u64,
    pub items: Vec<Resource>,
}

/// Where a cursor stream stands, for `status` and the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorSnapshot {
    /// Everything modified before this (unix seconds) is applied.
    pub cursor_ts: i64,
    pub last_run_at: Option<i64>,
    /// The latest failed window's error; `None` once a window succeeds again.
    pub last_error: Option<String>,
    /// Consecutive failed windows.
    pub failures: i64,
    /// A failed window is not retried before this.
    pub retry_at: Option<i64>,
    /// Resources of the stream stored for the account.
    pub resources: i64,
    /// Change-history rows of the stream for the account.
    pub events: i64,
}

impl CursorSnapshot {
    /// Nothing applied yet: a snapshot stream (`active_inventory`, `offers`) keeps its
    /// cursor at 0 until its first snapshot (a cursor stream starts at its `start`).
    pub fn before_first_snapshot(&self) -> bool {
        self.cursor_ts <= 0
    }

    /// Seconds the cursor is behind the newest time a window of a stream with
    /// `safety_lag` may end at (now minus the lag); 0 when caught up.
    pub fn behind(&self, safety_lag: std::time::Duration, now: i64) -> i64 {
        let lag = i64::try_from(safety_lag.as_secs()).unwrap_or(i64::MAX);
        now.saturating_sub(lag)
            .saturating_sub(self.cursor_ts)
            .max(0)
    }
}

/// One change-history row: a field of a resource went from `before` to `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChangeEvent {
    pub id: i64,
    pub account: String,
    pub stream: String,
    pub resource_id: String,
    /// The wire field name, e.g. `orderFulfillmentStatus`.
    pub field: String,
    #[schema(required = true)]
    pub before: Option<String>,
    #[schema(required = true)]
    pub after: Option<String>,
    pub observed_at: i64,
}

/// An eBay order as the summary shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderSummary {
    pub order_id: String,
    pub creation_date: String,
    pub last_modified_date: String,
    pub fulfillment_status: String,
    pub payment_status: String,
    #[schema(required = true)]
    pub total_value: Option<String>,
    #[schema(required = true)]
    pub currency: Option<String>,
    #[schema(required = true)]
    pub buyer: Option<String>,
}

/// The state of a cursor as a run reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorRow {
    pub cursor_ts: i64,
    pub failures: i64,
    pub retry_at: Option<i64>,
}

/// What applying one window did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub events: u64,
}

/// The cursor of (account, stream), created at `initial` when absent, on a connection
/// of the SQLite file (the daemon goes through [`CursorStore`]).
pub fn load_or_init_cursor(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    initial: i64,
    now: i64,
) -> Result<CursorRow, LedgerError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO cursors (account, stream, cursor_ts, updated_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![account, stream, initial, now])?;
    let row = conn
        .prepare_cached(
            "SELECT cursor_ts, failures, retry_at FROM cursors WHERE account = ?1 AND stream = ?2",
        )?
        .query_row(params![account, stream], |row| {
            Ok(CursorRow {
                cursor_ts: row.get(0)?,
                failures: row.get(1)?,
                retry_at: row.get(2)?,
            })
        })?;
    Ok(row)
}

/// [`CursorStore::apply_window`] on a connection of the SQLite file.
#[allow(clippy::too_many_arguments)]
pub fn apply_window(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    spec: &TableSpec,
    resources: &[Resource],
    window_start: i64,
    window_end: i64,
    now: i64,
) -> Result<Applied, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_fence(&tx, account, stream, fence, "cursor window apply", now)?;
    let mut applied = Applied::default();
    {
        let tracked_columns: Vec<&str> = spec.tracked.iter().map(|(column, _)| *column).collect();
        let select = format!(
            "SELECT {}, raw FROM {} WHERE account = ?1 AND {} = ?2",
            tracked_columns.join(", "),
            spec.table,
            spec.key
        );
        let columns = spec.columns.join(", ");
        let placeholders: Vec<String> = (0..spec.columns.len())
            .map(|i| format!("?{}", i + 3))
            .collect();
        let updates: Vec<String> = spec
            .columns
            .iter()
            .map(|column| format!("{column} = excluded.{column}"))
            .collect();
        let raw_at = spec.columns.len() + 3;
        let upsert = format!(
            "INSERT INTO {table} (account, {key}, {columns}, raw, first_seen_at, updated_at)
             VALUES (?1, ?2, {placeholders}, ?{raw_at}, ?{now_at}, ?{now_at})
             ON CONFLICT(account, {key}) DO UPDATE SET {updates}, raw = excluded.raw, updated_at = excluded.updated_at",
            table = spec.table,
            key = spec.key,
            placeholders = placeholders.join(", "),
            now_at = raw_at + 1,
            updates = updates.join(", "),
        );
        let mut select_statement = tx.prepare_cached(&select)?;
        let mut upsert_statement = tx.prepare_cached(&upsert)?;
        let mut event_statement = tx.prepare_cached(
            "INSERT INTO events (account, stream, resource_id, field, before, after, observed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for resource in resources {
            let previous: Option<(Vec<Option<String>>, String)> = select_statement
                .query_row(params![account, resource.id], |row| {
                    let mut values = Vec::with_capacity(tracked_columns.len());
                    for index in 0..tracked_columns.len() {
                        values.push(row.get::<_, Option<String>>(index)?);
                    }
                    Ok((values, row.get(tracked_columns.len())?))
                })
                .optional()?;
            match &previous {
                None => applied.inserted += 1,
                Some((before, raw)) => {
                    let mut changed = false;
                    for ((column, field), old) in spec.tracked.iter().zip(before) {
                        let new = resource.value(spec, column);
                        if old.as_deref() != new {
                            event_statement.execute(params![
                                account,
                                stream,
                                resource.id,
                                field,
                                old,
                                new,
                                now
                            ])?;
                            applied.events += 1;
                            changed = true;
                        }
                    }
                    if !changed && *raw == resource.raw {
                        applied.unchanged += 1;
                        continue;
                    }
                    applied.updated += 1;
                }
            }
            let mut values: Vec<SqlValue> = Vec::with_capacity(spec.columns.len() + 4);
            values.push(SqlValue::Text(account.to_string()));
            values.push(SqlValue::Text(resource.id.clone()));
            for value in &resource.values {
                values.push(match value {
                    Some(text) => SqlValue::Text(text.clone()),
                    None => SqlValue::Null,
                });
            }
            values.push(SqlValue::Text(resource.raw.clone()));
            values.push(SqlValue::Integer(now));
            upsert_statement.execute(rusqlite::params_from_iter(values))?;
        }
    }
    let moved = tx
        .prepare_cached(
            "UPDATE cursors SET cursor_ts = ?3, updated_at = ?4, last_run_at = ?4, last_error = NULL,
                 failures = 0, retry_at = NULL
             WHERE account = ?1 AND stream = ?2 AND cursor_ts = ?5",
        )?
        .execute(params![account, stream, window_end, now, window_start])?;
    if moved != 1 {
        // Another run moved the cursor (only possible without leases): drop this window.
        return Err(LedgerError::CursorMoved {
            account: account.to_string(),
            stream: stream.to_string(),
            expected: window_start,
        });
    }
    tx.commit()?;
    Ok(applied)
}

/// [`CursorStore::record_failure`] on a connection of the SQLite file.
pub fn record_failure(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    message: &str,
    retry_at: i64,
    now: i64,
) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_fence(&tx, account, stream, fence, "cursor failure record", now)?;
    tx.prepare_cached(
        "UPDATE cursors SET last_error = ?3, failures = failures + 1, retry_at = ?4, last_run_at = ?5
         WHERE account = ?1 AND stream = ?2",
    )?
    .execute(params![account, stream, message, retry_at, now])?;
    tx.commit()?;
    Ok(())
}

fn cursor_snapshot(
    conn: &Connection,
    account: &str,
    stream: &str,
) -> Result<Option<CursorSnapshot>, LedgerError> {
    {
        let row = conn
            .prepare_cached(
                "SELECT cursor_ts, last_run_at, last_error, failures, retry_at FROM cursors
                 WHERE account = ?1 AND stream = ?2",
            )?
            .query_row(params![account, stream], |row| {
                Ok(CursorSnapshot {
                    cursor_ts: row.get(0)?,
                    last_run_at: row.get(1)?,
                    last_error: row.get(2)?,
                    failures: row.get(3)?,
                    retry_at: row.get(4)?,
                    resources: 0,
                    events: 0,
                })
            })
            .optional()?;
        let Some(mut snapshot) = row else {
            return Ok(None);
        };
        if let Some(spec) = super::ebay_tables::table_for_stream(stream) {
            snapshot.resources = conn
                .prepare_cached(&format!(
                    "SELECT COUNT(*) FROM {} WHERE account = ?1",
                    spec.table
                ))?
                .query_row([account], |row| row.get(0))?;
        }
        snapshot.events = conn
            .prepare_cached("SELECT COUNT(*) FROM events WHERE account = ?1 AND stream = ?2")?
            .query_row(params![account, stream], |row| row.get(0))?;
        Ok(Some(snapshot))
    }
}

/// The newest `limit` events, of one account or all, newest first.
fn recent_events_of(
    conn: &Connection,
    account: Option<&str>,
    limit: usize,
) -> Result<Vec<ChangeEvent>, LedgerError> {
    let mut statement = conn.prepare_cached(
        "SELECT id, account, stream, resource_id, field, before, after, observed_at FROM events
         WHERE (?1 IS NULL OR account = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map(params![account, limit], |row| {
        Ok(ChangeEvent {
            id: row.get(0)?,
            account: row.get(1)?,
            stream: row.get(2)?,
            resource_id: row.get(3)?,
            field: row.get(4)?,
            before: row.get(5)?,
            after: row.get(6)?,
            observed_at: row.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every cursor by (account, stream), at most `limit`.
fn cursor_positions_of(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<CursorPosition>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(
        "SELECT account, stream, cursor_ts FROM cursors ORDER BY account, stream LIMIT ?1",
    )?;
    let rows = statement
        .query_map(params![limit], |row| {
            Ok(CursorPosition {
                account: row.get(0)?,
                stream: row.get(1)?,
                cursor_ts: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn latest_orders(
    conn: &Connection,
    account: &str,
    limit: usize,
) -> Result<Vec<OrderSummary>, LedgerError> {
    {
        let mut statement = conn.prepare_cached(
            "SELECT order_id, creation_date, last_modified_date, fulfillment_status, payment_status,
                    total_value, currency, buyer
             FROM ebay_orders WHERE account = ?1 ORDER BY last_modified_date DESC, order_id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![account, limit as i64], |row| {
            Ok(OrderSummary {
                order_id: row.get(0)?,
                creation_date: row.get(1)?,
                last_modified_date: row.get(2)?,
                fulfillment_status: row.get(3)?,
                payment_status: row.get(4)?,
                total_value: row.get(5)?,
                currency: row.get(6)?,
                buyer: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ebay_tables::ORDERS_TABLE;

    fn order(id: &str, status: &str, raw: &str) -> Resource {
        let mut values = vec![None; ORDERS_TABLE.columns.len()];
        let set = |values: &mut Vec<Option<String>>, column: &str, value: &str| {
            let index = ORDERS_TABLE
                .columns
                .iter()
                .position(|name| *name == column)
                .expect("column");
            values[index] = Some(value.to_string());
        };
        set(&mut values, "creation_date", "2026-01-01T00:00:00.000Z");
        set(
            &mut values,
            "last_modified_date",
            "2026-01-01T00:00:00.000Z",
        );
        set(&mut values, "fulfillment_status", status);
        set(&mut values, "payment_status", "PAID");
        Resource {
            id: id.to_string(),
            values,
            raw: raw.to_string(),
        }
    }

    /// Applies `[start, end)` with one order for account `a` (no fence) at `now`.
    fn apply_order(
        conn: &mut Connection,
        order: Resource,
        start: i64,
        end: i64,
        now: i64,
    ) -> Result<Applied, LedgerError> {
        apply_window(
            conn,
            "a",
            "orders",
            WriteFence::Unfenced,
            &ORDERS_TABLE,
            &[order],
            start,
            end,
            now,
        )
    }

    #[test]
    fn first_sight_and_unchanged_append_nothing_a_change_appends_one_event() {
        let ledger = SqliteLedger::open_in_memory().expect("ledger");
        ledger
            .with_conn(|conn| {
                load_or_init_cursor(conn, "a", "orders", 0, 0)?;
                let first = apply_order(conn, order("1", "NOT_STARTED", "{}"), 0, 10, 1)?;
                assert_eq!((first.inserted, first.events), (1, 0));
                let same = apply_order(conn, order("1", "NOT_STARTED", "{}"), 10, 20, 2)?;
                assert_eq!((same.unchanged, same.events), (1, 0));
                let moved = apply_order(conn, order("1", "FULFILLED", "{\"x\":1}"), 20, 30, 3)?;
                assert_eq!((moved.updated, moved.events), (1, 1));
                // A window that does not start at the cursor is refused and writes nothing.
                assert!(matches!(
                    apply_order(conn, order("2", "NOT_STARTED", "{}"), 0, 10, 4),
                    Err(LedgerError::CursorMoved { expected: 0, .. })
                ));
                Ok::<_, LedgerError>(())
            })
            .expect("apply");
        let events = ledger.recent_events(Some("a"), 10).expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].field, "orderFulfillmentStatus");
        assert_eq!(events[0].before.as_deref(), Some("NOT_STARTED"));
        assert_eq!(events[0].after.as_deref(), Some("FULFILLED"));
        let snapshot = ledger
            .cursor_snapshot("a", "orders")
            .expect("snapshot")
            .expect("cursor");
        assert_eq!(
            (snapshot.cursor_ts, snapshot.resources, snapshot.events),
            (30, 1, 1)
        );
        assert_eq!(ledger.latest_orders("a", 5).expect("orders").len(), 1);
    }
}
