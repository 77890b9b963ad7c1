//! SQLite side of the eBay `active_inventory` stream (migration `0005_ebay_inventory.sql`):
//! one snapshot of a seller's active listings applied in one transaction.
//!
//! A snapshot is a stream of rows (read from the report file as it is parsed, never held
//! in memory as a whole). Each row is upserted; a quantity, price or currency change of a
//! SKU seen before appends one `events` row per field, as the cursor streams do (first
//! sight appends nothing). After the last row, every SKU still ACTIVE that this snapshot
//! did not list has ended: its quantity goes to 0, its state to ENDED, and both changes
//! are appended to the history. A row source that fails (a malformed or truncated file)
//! rolls the whole transaction back: nothing of that snapshot is applied.
//!
//! `ebay_feed_tasks` holds the Feed task a stream waits for until its file is applied, so
//! an interrupted run resumes it ([`pending_task`], [`record_task`], [`forget_task`]).
//!
//! The stream's row in `cursors` records the snapshot: `cursor_ts` is when the applied
//! snapshot was taken, `last_error`/`failures`/`retry_at` as for cursor streams.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::cursors::TableSpec;
use crate::store::sqlite::check_fence;
use crate::store::{LedgerError, WriteFence};

/// `ebay_inventory` as the status counts see it (no cursor-engine columns).
pub static INVENTORY_TABLE: TableSpec = TableSpec {
    table: "ebay_inventory",
    key: "sku",
    columns: &[],
    tracked: &[],
};

/// The history's field names (the report's element names).
pub const FIELD_QUANTITY: &str = "Quantity";
pub const FIELD_PRICE: &str = "Price";
pub const FIELD_CURRENCY: &str = "Price.currencyID";
/// A listing's state: ACTIVE while the report lists it, ENDED once it does not.
pub const FIELD_STATE: &str = "state";
pub const STATE_ACTIVE: &str = "ACTIVE";
pub const STATE_ENDED: &str = "ENDED";

/// One SKU of a snapshot, as the report lists it (already bounded and checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryRow {
    pub item_id: String,
    /// `""` when the listing (or variation) has no seller SKU.
    pub sku: String,
    pub quantity: u64,
    pub price: Option<String>,
    pub currency: Option<String>,
}

impl InventoryRow {
    /// The resource id in the `events` history: `ITEMID` or `ITEMID/SKU`.
    pub fn resource_id(&self) -> String {
        resource_id(&self.item_id, &self.sku)
    }
}

fn resource_id(item_id: &str, sku: &str) -> String {
    if sku.is_empty() {
        item_id.to_string()
    } else {
        format!("{item_id}/{sku}")
    }
}

/// A stored SKU's (quantity, price, currency, state, snapshot).
type StoredState = (i64, Option<String>, Option<String>, String, i64);

/// What applying one snapshot did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotApplied {
    /// Rows the snapshot listed.
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// SKUs listed twice in one snapshot (the first is kept).
    pub duplicates: u64,
    /// SKUs active before that this snapshot no longer lists.
    pub ended: u64,
    /// History rows appended.
    pub events: u64,
}

/// Why a snapshot was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The row source failed (a malformed or truncated file): nothing was applied.
    #[error("{0}; nothing from this snapshot was applied")]
    Source(String),
}

impl From<rusqlite::Error> for SnapshotError {
    fn from(err: rusqlite::Error) -> SnapshotError {
        SnapshotError::Ledger(LedgerError::from(err))
    }
}

/// Rows handed from the reader thread to the writer at a time.
const READ_AHEAD_BATCH: usize = 1024;
/// Batches the reader may be ahead of the writer: with [`READ_AHEAD_BATCH`], about 5,000
/// rows (well under a megabyte) in memory at most.
const READ_AHEAD_BATCHES: usize = 4;

/// What the reader thread hands the writer.
enum ReadAhead {
    Rows(Vec<InventoryRow>),
    /// The source failed: nothing may be applied.
    Failed(String),
    /// The source ended cleanly. Without it (the reader panicked) nothing is applied.
    End,
}

/// Reads `rows` to its end on the calling thread, handing them on in batches; stops at
/// the first error or when the writer hangs up.
fn read_ahead<E, I>(rows: I, sender: std::sync::mpsc::SyncSender<ReadAhead>)
where
    E: std::fmt::Display,
    I: Iterator<Item = Result<InventoryRow, E>>,
{
    let mut batch = Vec::with_capacity(READ_AHEAD_BATCH);
    for row in rows {
        match row {
            Ok(row) => {
                batch.push(row);
                if batch.len() == READ_AHEAD_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_AHEAD_BATCH));
                    if sender.send(ReadAhead::Rows(full)).is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                let _ = sender.send(ReadAhead::Failed(err.to_string()));
                return;
            }
        }
    }
    if !batch.is_empty() && sender.send(ReadAhead::Rows(batch)).is_err() {
        return;
    }
    let _ = sender.send(ReadAhead::End);
}

/// Applies one snapshot of (account, stream) taken at `taken_at` in one transaction (see
/// the module doc). `rows` is read to its end inside the transaction; its first error
/// rolls everything back. `progress` is called every 10,000 rows (stuck detection).
///
/// The source is read (a report file: inflating and parsing XML) on a thread of its own,
/// a few batches ahead of the writer, so parsing and SQLite overlap on two cores. The
/// thread is scoped to this call: it ends (and is joined) before the call returns, and
/// a reader that panics or stops without saying it ended applies nothing.
#[allow(clippy::too_many_arguments)]
pub fn apply_snapshot<E, I>(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    rows: I,
    taken_at: i64,
    now: i64,
    progress: &dyn Fn(),
) -> Result<SnapshotApplied, SnapshotError>
where
    E: std::fmt::Display,
    I: IntoIterator<Item = Result<InventoryRow, E>>,
    I::IntoIter: Send,
{
    let rows = rows.into_iter();
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(READ_AHEAD_BATCHES);
        let reader = std::thread::Builder::new()
            .name("inventory-read".to_string())
            .spawn_scoped(scope, move || read_ahead(rows, sender))
            .map_err(|err| {
                SnapshotError::Source(format!("cannot start the report reader thread: {err}"))
            })?;
        let applied = apply_read_ahead(
            conn, account, stream, fence, &receiver, taken_at, now, progress,
        );
        // Hang up first: a reader blocked on a full channel (the writer failed) ends.
        drop(receiver);
        let joined = reader.join();
        match (applied, joined) {
            (Err(err), _) => Err(err),
            (Ok(_), Err(_)) => Err(SnapshotError::Source(
                "the report reader panicked".to_string(),
            )),
            (Ok(applied), Ok(())) => Ok(applied),
        }
    })
}

/// The writer's side of [`apply_snapshot`]: commits only after the reader's
/// [`ReadAhead::End`].
#[allow(clippy::too_many_arguments)]
fn apply_read_ahead(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    receiver: &std::sync::mpsc::Receiver<ReadAhead>,
    taken_at: i64,
    now: i64,
    progress: &dyn Fn(),
) -> Result<SnapshotApplied, SnapshotError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_fence(&tx, account, stream, fence, "inventory snapshot apply", now)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO cursors (account, stream, cursor_ts, updated_at) VALUES (?1, ?2, 0, ?3)",
    )?
    .execute(params![account, stream, now])?;
    let snapshot: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(MAX(snapshot), 0) + 1 FROM ebay_inventory WHERE account = ?1",
        )?
        .query_row([account], |row| row.get(0))?;
    let mut applied = SnapshotApplied::default();
    {
        let mut select = tx.prepare_cached(
            "SELECT quantity, price, currency, state, snapshot FROM ebay_inventory
             WHERE account = ?1 AND item_id = ?2 AND sku = ?3",
        )?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO ebay_inventory (account, item_id, sku, quantity, price, currency, state, snapshot, first_seen_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'ACTIVE', ?7, ?8, ?8)
             ON CONFLICT(account, item_id, sku) DO UPDATE SET quantity = excluded.quantity,
                 price = excluded.price, currency = excluded.currency, state = 'ACTIVE',
                 snapshot = excluded.snapshot, updated_at = excluded.updated_at",
        )?;
        let mut seen = tx.prepare_cached(
            "UPDATE ebay_inventory SET snapshot = ?4 WHERE account = ?1 AND item_id = ?2 AND sku = ?3",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (account, stream, resource_id, field, before, after, observed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        loop {
            let batch = match receiver.recv() {
                Ok(ReadAhead::Rows(batch)) => batch,
                Ok(ReadAhead::Failed(message)) => return Err(SnapshotError::Source(message)),
                Ok(ReadAhead::End) => break,
                Err(_) => {
                    return Err(SnapshotError::Source(
                        "the report reader stopped before the end of the file".to_string(),
                    ))
                }
            };
            for row in batch {
                applied.rows = applied.rows.saturating_add(1);
                if applied.rows % 10_000 == 0 {
                    progress();
                }
                // SQLite integers are signed: a quantity is bounded by the parser, this only
                // keeps the conversion total.
                let quantity = i64::try_from(row.quantity).unwrap_or(i64::MAX);
                let previous: Option<StoredState> = select
                    .query_row(params![account, row.item_id, row.sku], |found| {
                        Ok((
                            found.get(0)?,
                            found.get(1)?,
                            found.get(2)?,
                            found.get(3)?,
                            found.get(4)?,
                        ))
                    })
                    .optional()?;
                let Some((old_quantity, old_price, old_currency, old_state, old_snapshot)) =
                    previous
                else {
                    upsert.execute(params![
                        account,
                        row.item_id,
                        row.sku,
                        quantity,
                        row.price,
                        row.currency,
                        snapshot,
                        now
                    ])?;
                    applied.inserted += 1;
                    continue;
                };
                if old_snapshot == snapshot {
                    applied.duplicates += 1;
                    continue;
                }
                let resource = row.resource_id();
                let mut changes: Vec<(&str, Option<String>, Option<String>)> = Vec::new();
                if old_quantity != quantity {
                    changes.push((
                        FIELD_QUANTITY,
                        Some(old_quantity.to_string()),
                        Some(quantity.to_string()),
                    ));
                }
                if old_price != row.price {
                    changes.push((FIELD_PRICE, old_price, row.price.clone()));
                }
                if old_currency != row.currency {
                    changes.push((FIELD_CURRENCY, old_currency, row.currency.clone()));
                }
                if old_state != STATE_ACTIVE {
                    changes.push((FIELD_STATE, Some(old_state), Some(STATE_ACTIVE.to_string())));
                }
                if changes.is_empty() {
                    seen.execute(params![account, row.item_id, row.sku, snapshot])?;
                    applied.unchanged += 1;
                    continue;
                }
                for (field, before, after) in changes {
                    event.execute(params![
                        account, stream, resource, field, before, after, now
                    ])?;
                    applied.events += 1;
                }
                upsert.execute(params![
                    account,
                    row.item_id,
                    row.sku,
                    quantity,
                    row.price,
                    row.currency,
                    snapshot,
                    now
                ])?;
                applied.updated += 1;
            }
        }
        // Every SKU still active that this snapshot did not list has ended.
        let mut gone = tx.prepare_cached(
            "SELECT item_id, sku, quantity FROM ebay_inventory
             WHERE account = ?1 AND state = 'ACTIVE' AND snapshot < ?2",
        )?;
        let mut ended = gone.query(params![account, snapshot])?;
        while let Some(found) = ended.next()? {
            let item_id: String = found.get(0)?;
            let sku: String = found.get(1)?;
            let quantity: i64 = found.get(2)?;
            let resource = resource_id(&item_id, &sku);
            if quantity != 0 {
                event.execute(params![
                    account,
                    stream,
                    resource,
                    FIELD_QUANTITY,
                    quantity.to_string(),
                    "0",
                    now
                ])?;
                applied.events += 1;
            }
            event.execute(params![
                account,
                stream,
                resource,
                FIELD_STATE,
                STATE_ACTIVE,
                STATE_ENDED,
                now
            ])?;
            applied.events += 1;
            applied.ended += 1;
        }
    }
    tx.prepare_cached(
        "UPDATE ebay_inventory SET quantity = 0, state = 'ENDED', updated_at = ?3
         WHERE account = ?1 AND state = 'ACTIVE' AND snapshot < ?2",
    )?
    .execute(params![account, snapshot, now])?;
    tx.prepare_cached("DELETE FROM ebay_feed_tasks WHERE account = ?1 AND stream = ?2")?
        .execute(params![account, stream])?;
    tx.prepare_cached(
        "UPDATE cursors SET cursor_ts = ?3, updated_at = ?4, last_run_at = ?4, last_error = NULL,
             failures = 0, retry_at = NULL
         WHERE account = ?1 AND stream = ?2",
    )?
    .execute(params![account, stream, taken_at, now])?;
    tx.commit()?;
    Ok(applied)
}

/// A Feed task a snapshot stream waits for (see `ebay_feed_tasks` in the migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    pub task_id: String,
    /// Unix seconds: when it was created (the time of its snapshot).
    pub created_at: i64,
}

/// The task (account, stream) waits for, if any.
pub fn pending_task(
    conn: &Connection,
    account: &str,
    stream: &str,
) -> Result<Option<PendingTask>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT task_id, created_at FROM ebay_feed_tasks WHERE account = ?1 AND stream = ?2",
        )?
        .query_row(params![account, stream], |row| {
            Ok(PendingTask {
                task_id: row.get(0)?,
                created_at: row.get(1)?,
            })
        })
        .optional()?)
}

/// Records the task (account, stream) now waits for (replacing any other), under the
/// lease's fence.
pub fn record_task(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    task: &PendingTask,
    now: i64,
) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_fence(&tx, account, stream, fence, "feed task record", now)?;
    tx.prepare_cached(
        "INSERT INTO ebay_feed_tasks (account, stream, task_id, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(account, stream) DO UPDATE SET task_id = excluded.task_id, created_at = excluded.created_at",
    )?
    .execute(params![account, stream, task.task_id, task.created_at])?;
    tx.commit()?;
    Ok(())
}

/// Gives up the task (account, stream) waited for: the next run creates a new one.
pub fn forget_task(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    now: i64,
) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_fence(&tx, account, stream, fence, "feed task forget", now)?;
    tx.prepare_cached("DELETE FROM ebay_feed_tasks WHERE account = ?1 AND stream = ?2")?
        .execute(params![account, stream])?;
    tx.commit()?;
    Ok(())
}

/// One stored SKU, for tests and the read surfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSku {
    pub item_id: String,
    pub sku: String,
    pub quantity: i64,
    pub price: Option<String>,
    pub currency: Option<String>,
    pub state: String,
}

/// Every stored SKU of `account`, ordered by (item id, sku).
pub fn inventory_of(conn: &Connection, account: &str) -> Result<Vec<StoredSku>, LedgerError> {
    let mut statement = conn.prepare_cached(
        "SELECT item_id, sku, quantity, price, currency, state FROM ebay_inventory
         WHERE account = ?1 ORDER BY item_id, sku",
    )?;
    let rows = statement.query_map([account], |row| {
        Ok(StoredSku {
            item_id: row.get(0)?,
            sku: row.get(1)?,
            quantity: row.get(2)?,
            price: row.get(3)?,
            currency: row.get(4)?,
            state: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteLedger;

    fn row(item: &str, sku: &str, quantity: u64, price: &str) -> Result<InventoryRow, String> {
        Ok(InventoryRow {
            item_id: item.to_string(),
            sku: sku.to_string(),
            quantity,
            price: Some(price.to_string()),
            currency: Some("USD".to_string()),
        })
    }

    fn apply(
        conn: &mut Connection,
        rows: Vec<Result<InventoryRow, String>>,
        now: i64,
    ) -> Result<SnapshotApplied, SnapshotError> {
        apply_snapshot(
            conn,
            "a",
            "active_inventory",
            WriteFence::Unfenced,
            rows,
            now,
            now,
            &|| {},
        )
    }

    #[test]
    fn changes_and_ends_go_to_the_history_a_failed_source_applies_nothing() {
        let ledger = SqliteLedger::open_in_memory().expect("ledger");
        ledger
            .with_conn(|conn| {
                let first = apply(
                    conn,
                    vec![row("1", "A", 5, "9.99"), row("2", "", 1, "3.00")],
                    10,
                )
                .expect("first");
                assert_eq!((first.inserted, first.events), (2, 0));
                let second = apply(
                    conn,
                    vec![row("1", "A", 4, "9.99"), row("1", "A", 9, "1.00")],
                    20,
                )
                .expect("second");
                assert_eq!(
                    (
                        second.updated,
                        second.duplicates,
                        second.ended,
                        second.events
                    ),
                    (1, 1, 1, 3)
                );
                let failed = apply(
                    conn,
                    vec![row("1", "A", 1, "1.00"), Err("truncated".to_string())],
                    30,
                );
                assert!(matches!(failed, Err(SnapshotError::Source(_))));
                let stored = inventory_of(conn, "a")?;
                assert_eq!(stored.len(), 2);
                assert_eq!(
                    (stored[0].quantity, stored[0].state.as_str()),
                    (4, "ACTIVE")
                );
                assert_eq!((stored[1].quantity, stored[1].state.as_str()), (0, "ENDED"));
                Ok::<_, LedgerError>(())
            })
            .expect("apply");
    }

    /// The source is read on a thread of its own: a reader that panics part way (after
    /// more rows than one batch) applies nothing, and the call says why instead of
    /// taking the rows it got for the whole snapshot.
    #[test]
    fn a_reader_that_panics_applies_nothing() {
        let ledger = SqliteLedger::open_in_memory().expect("ledger");
        ledger
            .with_conn(|conn| {
                apply(conn, vec![row("1", "A", 5, "9.99")], 10).expect("first");
                let rows = (0..READ_AHEAD_BATCH * 3).map(|index| {
                    if index == READ_AHEAD_BATCH * 2 {
                        panic!("the parser broke");
                    }
                    row(&format!("{}", 100 + index), "", 1, "1.00")
                });
                let failed = apply_snapshot(
                    conn,
                    "a",
                    "active_inventory",
                    WriteFence::Unfenced,
                    rows,
                    20,
                    20,
                    &|| {},
                );
                match failed {
                    Err(SnapshotError::Source(message)) => {
                        assert!(message.contains("reader"), "{message}")
                    }
                    other => panic!("expected a source error, got {other:?}"),
                }
                let stored = inventory_of(conn, "a")?;
                assert_eq!(stored.len(), 1, "nothing of the broken snapshot");
                assert_eq!(
                    (stored[0].quantity, stored[0].state.as_str()),
                    (5, "ACTIVE")
                );
                Ok::<_, LedgerError>(())
            })
            .expect("apply");
    }

    /// Many more rows than the read-ahead holds all arrive, in order.
    #[test]
    fn a_snapshot_longer_than_the_read_ahead_is_applied_whole() {
        let ledger = SqliteLedger::open_in_memory().expect("ledger");
        ledger
            .with_conn(|conn| {
                let count = READ_AHEAD_BATCH * (READ_AHEAD_BATCHES + 3) + 7;
                let rows = (0..count)
                    .map(|index| row(&format!("{}", 1000 + index), "", 1, "1.00"))
                    .collect();
                let applied = apply(conn, rows, 10).expect("applied");
                assert_eq!(applied.inserted, count as u64);
                assert_eq!(inventory_of(conn, "a")?.len(), count);
                Ok::<_, LedgerError>(())
            })
            .expect("apply");
    }
}
