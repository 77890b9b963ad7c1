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
//! - A stream whose resource table is not in PostgreSQL yet ([`TABLES`]: today
//!   `active_inventory`, whose snapshot writes `ebay_inventory` and its cursor row in one
//!   SQLite transaction) stays whole in the local SQLite file: its calls go there, and the
//!   reads that span streams merge both.

use std::cmp::Ordering;
use std::collections::HashMap;

use postgres::types::ToSql;

use super::{check_fence, PgLedger, TABLES};
use crate::store::cursors::{
    cursor_positions_of, recent_events_of, Applied, ChangeEvent, CursorRow, CursorSnapshot,
    CursorStore, CursorWindow, OrderSummary, Resource, TableSpec,
};
use crate::store::ebay_streams::OpenSpec;
use crate::store::ebay_tables::{table_for_stream, CURSOR_STREAMS};
use crate::store::history::CursorPosition;
use crate::store::{LedgerError, SqliteLedger, WriteFence};

/// Resource columns that are integers in both schemas (the streams hand every value over
/// as text; SQLite's INTEGER affinity converts it, PostgreSQL is told to). A test checks
/// that no other column of a stream's table is an integer.
pub(crate) const INTEGER_COLUMNS: &[(&str, &str)] = &[("ebay_payouts", "transaction_count")];

/// Whether `stream`'s cursor, resources and events live in PostgreSQL: every stream
/// whose resource table is in [`TABLES`] (and one without a table).
pub(crate) fn stream_on_postgres(stream: &str) -> bool {
    table_for_stream(stream).is_none_or(|spec| TABLES.contains(&spec.table))
}

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

impl PgLedger {
    /// The local SQLite file when `stream` stays there (see the module doc).
    fn local_for(&self, stream: &str) -> Option<&SqliteLedger> {
        self.local_fences
            .as_deref()
            .filter(|_| !stream_on_postgres(stream))
    }

    /// The streams whose rows the local SQLite file holds (none without one).
    fn local_streams(&self) -> Vec<&'static str> {
        if self.local_fences.is_none() {
            return Vec::new();
        }
        CURSOR_STREAMS
            .iter()
            .copied()
            .filter(|stream| !stream_on_postgres(stream))
            .collect()
    }
}

/// Merges two lists each already in `order`, keeping each list's own order.
fn merge<T>(first: Vec<T>, second: Vec<T>, order: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    let mut merged = Vec::with_capacity(first.len() + second.len());
    let (mut first, mut second) = (first.into_iter().peekable(), second.into_iter().peekable());
    loop {
        let take_first = match (first.peek(), second.peek()) {
            (Some(a), Some(b)) => order(a, b) != Ordering::Greater,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_first {
            first.next()
        } else {
            second.next()
        };
        merged.extend(next);
    }
    merged
}

impl CursorStore for PgLedger {
    fn load_or_init_cursor(
        &self,
        account: &str,
        stream: &str,
        initial: i64,
        now: i64,
    ) -> Result<CursorRow, LedgerError> {
        if let Some(local) = self.local_for(stream) {
            return local.load_or_init_cursor(account, stream, initial, now);
        }
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
        if let Some(local) = self.local_for(stream) {
            return local.apply_window(account, stream, fence, spec, resources, window, now);
        }
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
        if let Some(local) = self.local_for(stream) {
            return local.record_failure(account, stream, fence, message, retry_at, now);
        }
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
        if let Some(local) = self.local_for(stream) {
            return local.cursor_snapshot(account, stream);
        }
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
        let local_streams = self.local_streams();
        let ours = self.with_client(|client| {
            client
                .query(
                    format!(
                        "SELECT {EVENT_COLUMNS} FROM events
                         WHERE ($1::text IS NULL OR account = $1) AND stream <> ALL($2::text[])
                         ORDER BY id DESC LIMIT $3"
                    )
                    .as_str(),
                    &[&account, &local_streams, &sql_limit(limit)],
                )?
                .iter()
                .map(row_to_event)
                .collect::<Result<Vec<_>, _>>()
        })?;
        let Some(local) = self
            .local_fences
            .as_deref()
            .filter(|_| !local_streams.is_empty())
        else {
            return Ok(ours);
        };
        let theirs = local
            .with_read_conn(|conn| recent_events_of(conn, account, Some(&local_streams), limit))?;
        // Ids are per engine: the two lists interleave by the time they were observed.
        let mut merged = merge(ours, theirs, |a, b| b.observed_at.cmp(&a.observed_at));
        merged.truncate(limit);
        Ok(merged)
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
        if let Some(local) = self
            .local_fences
            .as_deref()
            .filter(|_| !TABLES.contains(&spec.table.table))
        {
            return local.oldest_open(account, spec);
        }
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
        let local_streams = self.local_streams();
        let ours = self.with_client(|client| {
            client
                .query(
                    "SELECT account, stream, cursor_ts FROM cursors WHERE stream <> ALL($1::text[])
                     ORDER BY account COLLATE \"C\", stream COLLATE \"C\" LIMIT $2",
                    &[&local_streams, &sql_limit(limit)],
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
        })?;
        let Some(local) = self
            .local_fences
            .as_deref()
            .filter(|_| !local_streams.is_empty())
        else {
            return Ok(ours);
        };
        let theirs =
            local.with_read_conn(|conn| cursor_positions_of(conn, Some(&local_streams), limit))?;
        let mut merged = merge(ours, theirs, |a, b| {
            (a.account.as_bytes(), a.stream.as_bytes())
                .cmp(&(b.account.as_bytes(), b.stream.as_bytes()))
        });
        merged.truncate(limit);
        Ok(merged)
    }
}
