//! The eBay cursor streams on PostgreSQL ([`CursorStore`]): the `cursors` rows, the
//! streams' resource tables and the `events` history of migration `0003_cursors.sql`,
//! with the same rules as the SQLite file's (`store::cursors`).
//!
//! - Every write checks the caller's fence in its own transaction ([`check_fence`]: the
//!   scope's `scope_fences` row, held `FOR SHARE` until commit), the row the hour ledger's
//!   writes use too, so a takeover recorded by any write of the scope refuses the rest.
//! - A window locks its cursor row (`FOR UPDATE`) before writing anything: two applies of
//!   the same window take turns, and the second finds the cursor moved and writes nothing.
//! - Text is compared and sorted in byte order (`COLLATE "C"`), as SQLite's BINARY does.
//! - Every stream lives here whole, `active_inventory` included: its snapshot
//!   (`store::postgres::inventory`) moves the same `cursors` row and appends to the same
//!   `events`.

use std::collections::HashMap;

use postgres::types::ToSql;

use super::{check_fence, PgLedger};
use crate::store::cursors::{
    Applied, ChangeEvent, CursorRow, CursorSnapshot, CursorStore, CursorWindow, OrderSummary,
    Resource, TableSpec,
};
use crate::store::ebay_streams::OpenSpec;
use crate::store::ebay_tables::table_for_stream;
use crate::store::history::CursorPosition;
use crate::store::{LedgerError, WriteFence};

/// Resource columns that are integers in both schemas (the streams hand every value over
/// as text; SQLite's INTEGER affinity converts it, PostgreSQL is told to). A test checks
/// that no other column of a stream's table is an integer.
pub(crate) const INTEGER_COLUMNS: &[(&str, &str)] = &[("ebay_payouts", "transaction_count")];

const EVENT_COLUMNS: &str = "id, account, stream, resource_id, field, before, after, observed_at";

fn row_to_event(row: &postgres::Row) -> Result<ChangeEvent, LedgerError> {
    Ok(ChangeEvent {
        id: row.try_get(0)?,
        account: row.try_get(1)?,
        stream: row.try_get(2)?,
        resource_id: row.try_get(3)?,
        field: row.try_get(4)?,
        before: row.try_get(5)?,
        after: row.try_get(6)?,
        observed_at: row.try_get(7)?,
    })
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Resources whose stored state one statement reads before a window is applied.
const PREFETCH_IDS: usize = 1_000;

/// A resource's stored tracked values and raw document.
type Stored = (Vec<Option<String>>, String);

/// The statements of one resource table: the stored key, tracked values and raw of the
/// resources whose ids are in an array, and the upsert of one resource.
fn statements(spec: &TableSpec) -> (String, String) {
    let mut selected: Vec<&str> = vec![spec.key];
    selected.extend(spec.tracked.iter().map(|(column, _)| *column));
    selected.push("raw");
    let select = format!(
        "SELECT {} FROM {} WHERE account = $1 AND {} = ANY($2::text[])",
        selected.join(", "),
        spec.table,
        spec.key
    );
    let placeholders: Vec<String> = spec
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            let at = index + 3;
            if INTEGER_COLUMNS.contains(&(spec.table, column)) {
                format!("${at}::text::bigint")
            } else {
                format!("${at}::text")
            }
        })
        .collect();
    let updates: Vec<String> = spec
        .columns
        .iter()
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    let raw_at = spec.columns.len() + 3;
    let upsert = format!(
        "INSERT INTO {table} (account, {key}, {columns}, raw, first_seen_at, updated_at)
         VALUES ($1, $2, {placeholders}, ${raw_at}, ${now_at}, ${now_at})
         ON CONFLICT (account, {key}) DO UPDATE SET {updates}, raw = excluded.raw, updated_at = excluded.updated_at",
        table = spec.table,
        key = spec.key,
        columns = spec.columns.join(", "),
        placeholders = placeholders.join(", "),
        now_at = raw_at + 1,
        updates = updates.join(", "),
    );
    (select, upsert)
}

impl CursorStore for PgLedger {
    fn load_or_init_cursor(
        &self,
        account: &str,
        stream: &str,
        initial: i64,
        now: i64,
    ) -> Result<CursorRow, LedgerError> {
        self.with_client(|client| {
            client.execute(
                "INSERT INTO cursors (account, stream, cursor_ts, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, stream) DO NOTHING",
                &[&account, &stream, &initial, &now],
            )?;
            let row = client.query_one(
                "SELECT cursor_ts, failures, retry_at FROM cursors WHERE account = $1 AND stream = $2",
                &[&account, &stream],
            )?;
            Ok(CursorRow {
                cursor_ts: row.try_get(0)?,
                failures: row.try_get(1)?,
                retry_at: row.try_get(2)?,
            })
        })
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
        let (select, upsert) = statements(spec);
        self.with_tx(|tx| {
            check_fence(tx, account, stream, fence, "cursor window apply", now)?;
            // The cursor row first: a second apply of the window waits here, then finds
            // the cursor moved and writes nothing.
            let at: Option<i64> = tx
                .query_opt(
                    "SELECT cursor_ts FROM cursors WHERE account = $1 AND stream = $2 FOR UPDATE",
                    &[&account, &stream],
                )?
                .map(|row| row.try_get(0))
                .transpose()?;
            if at != Some(window.start) {
                return Err(LedgerError::CursorMoved {
                    account: account.to_string(),
                    stream: stream.to_string(),
                    expected: window.start,
                });
            }
            // The stored state of the window's resources, read in a few statements rather
            // than one per resource; kept up to date below, so a resource served twice is
            // compared with its first copy, as on SQLite.
            let tracked_count = spec.tracked.len();
            let mut stored: HashMap<String, Stored> = HashMap::with_capacity(resources.len());
            for chunk in resources.chunks(PREFETCH_IDS) {
                let ids: Vec<&str> = chunk.iter().map(|resource| resource.id.as_str()).collect();
                for row in tx.query(select.as_str(), &[&account, &ids])? {
                    let key: String = row.try_get(0)?;
                    let tracked = (1..=tracked_count)
                        .map(|index| row.try_get::<_, Option<String>>(index))
                        .collect::<Result<Vec<_>, _>>()?;
                    stored.insert(key, (tracked, row.try_get(tracked_count + 1)?));
                }
            }
            let upsert_statement = tx.prepare(&upsert)?;
            let event_statement = tx.prepare(
                "INSERT INTO events (account, stream, resource_id, field, before, after, observed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )?;
            let mut applied = Applied::default();
            for resource in resources {
                let tracked_now: Vec<Option<&str>> = spec
                    .tracked
                    .iter()
                    .map(|(column, _)| resource.value(spec, column))
                    .collect();
                if let Some((before, raw)) = stored.get(&resource.id) {
                    let mut changed = false;
                    for (((_, field), old), new) in
                        spec.tracked.iter().zip(before).zip(&tracked_now)
                    {
                        if old.as_deref() != *new {
                            tx.execute(
                                &event_statement,
                                &[&account, &stream, &resource.id, field, old, new, &now],
                            )?;
                            applied.events += 1;
                            changed = true;
                        }
                    }
                    if !changed && *raw == resource.raw {
                        applied.unchanged += 1;
                        continue;
                    }
                    applied.updated += 1;
                } else {
                    applied.inserted += 1;
                }
                let mut values: Vec<&(dyn ToSql + Sync)> =
                    Vec::with_capacity(spec.columns.len() + 4);
                values.push(&account);
                values.push(&resource.id);
                for value in &resource.values {
                    values.push(value);
                }
                values.push(&resource.raw);
                values.push(&now);
                tx.execute(&upsert_statement, &values)?;
                stored.insert(
                    resource.id.clone(),
                    (
                        tracked_now.iter().map(|value| value.map(str::to_string)).collect(),
                        resource.raw.clone(),
                    ),
                );
            }
            tx.execute(
                "UPDATE cursors SET cursor_ts = $3, updated_at = $4, last_run_at = $4, last_error = NULL,
                     failures = 0, retry_at = NULL
                 WHERE account = $1 AND stream = $2",
                &[&account, &stream, &window.end, &now],
            )?;
            Ok(applied)
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
        self.with_tx(|tx| {
            check_fence(tx, account, stream, fence, "cursor failure record", now)?;
            tx.execute(
                "UPDATE cursors SET last_error = $3, failures = failures + 1, retry_at = $4, last_run_at = $5
                 WHERE account = $1 AND stream = $2",
                &[&account, &stream, &message, &retry_at, &now],
            )?;
            Ok(())
        })
    }

    fn cursor_snapshot(
        &self,
        account: &str,
        stream: &str,
    ) -> Result<Option<CursorSnapshot>, LedgerError> {
        self.with_client(|client| {
            let Some(row) = client.query_opt(
                "SELECT cursor_ts, last_run_at, last_error, failures, retry_at FROM cursors
                 WHERE account = $1 AND stream = $2",
                &[&account, &stream],
            )?
            else {
                return Ok(None);
            };
            let mut snapshot = CursorSnapshot {
                cursor_ts: row.try_get(0)?,
                last_run_at: row.try_get(1)?,
                last_error: row.try_get(2)?,
                failures: row.try_get(3)?,
                retry_at: row.try_get(4)?,
                resources: 0,
                events: 0,
            };
            if let Some(spec) = table_for_stream(stream) {
                // Table names are the store's constants, never input.
                snapshot.resources = client
                    .query_one(
                        format!("SELECT COUNT(*) FROM {} WHERE account = $1", spec.table).as_str(),
                        &[&account],
                    )?
                    .try_get(0)?;
            }
            snapshot.events = client
                .query_one(
                    "SELECT COUNT(*) FROM events WHERE account = $1 AND stream = $2",
                    &[&account, &stream],
                )?
                .try_get(0)?;
            Ok(Some(snapshot))
        })
    }

    fn recent_events(
        &self,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, LedgerError> {
        self.with_client(|client| {
            client
                .query(
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM events
                         WHERE ($1::text IS NULL OR account = $1)
                         ORDER BY id DESC LIMIT $2"
                    )
                    .as_str(),
                    &[&account, &sql_limit(limit)],
                )?
                .iter()
                .map(row_to_event)
                .collect::<Result<Vec<_>, _>>()
        })
    }

    fn latest_orders(&self, account: &str, limit: usize) -> Result<Vec<OrderSummary>, LedgerError> {
        self.with_client(|client| {
            client
                .query(
                    "SELECT order_id, creation_date, last_modified_date, fulfillment_status, payment_status,
                            total_value, currency, buyer
                     FROM ebay_orders WHERE account = $1
                     ORDER BY last_modified_date COLLATE \"C\" DESC, order_id COLLATE \"C\" LIMIT $2",
                    &[&account, &sql_limit(limit)],
                )?
                .iter()
                .map(|row| {
                    Ok(OrderSummary {
                        order_id: row.try_get(0)?,
                        creation_date: row.try_get(1)?,
                        last_modified_date: row.try_get(2)?,
                        fulfillment_status: row.try_get(3)?,
                        payment_status: row.try_get(4)?,
                        total_value: row.try_get(5)?,
                        currency: row.try_get(6)?,
                        buyer: row.try_get(7)?,
                    })
                })
                .collect()
        })
    }

    fn oldest_open(&self, account: &str, spec: &OpenSpec) -> Result<Option<String>, LedgerError> {
        // Table and column names are the store's constants, never input.
        let sql = format!(
            "SELECT MIN({date} COLLATE \"C\") FROM {table} WHERE account = $1 AND {status} = ANY($2::text[])",
            date = spec.date_column,
            table = spec.table.table,
            status = spec.status_column,
        );
        self.with_client(|client| {
            Ok(client
                .query_one(sql.as_str(), &[&account, &spec.open])?
                .try_get(0)?)
        })
    }

    fn cursor_positions(&self, limit: usize) -> Result<Vec<CursorPosition>, LedgerError> {
        self.with_client(|client| {
            client
                .query(
                    "SELECT account, stream, cursor_ts FROM cursors
                     ORDER BY account COLLATE \"C\", stream COLLATE \"C\" LIMIT $1",
                    &[&sql_limit(limit)],
                )?
                .iter()
                .map(|row| {
                    Ok(CursorPosition {
                        account: row.try_get(0)?,
                        stream: row.try_get(1)?,
                        cursor_ts: row.try_get(2)?,
                    })
                })
                .collect::<Result<Vec<_>, LedgerError>>()
        })
    }
}
