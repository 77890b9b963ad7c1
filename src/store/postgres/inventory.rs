//! The eBay `active_inventory` snapshot on PostgreSQL ([`InventoryStore`]): the tables of
//! migration `0005_inventory.sql`, with the same results as the SQLite file's merge apply
//! (`store::ebay_inventory`).
//!
//! A snapshot is one transaction:
//! 1. the fence is checked ([`check_fence`]: the scope's `scope_fences` row held
//!    `FOR SHARE` until commit), then the stream's `cursors` row is locked `FOR UPDATE`,
//!    so a second apply of the same account (another daemon) waits for the first and
//!    then compares with what it wrote: the history is never written twice;
//! 2. the rows are read as parsed and staged [`STAGE_ROWS`] at a time (one
//!    `INSERT ... SELECT FROM unnest(...)` per batch) into a temporary table dropped at
//!    commit: the daemon holds one batch, never the whole report, whatever its size. A
//!    SKU listed twice keeps its first row: in a report sorted by (ItemID, SKU), as
//!    eBay's are, the repeat is the row before and is passed over as it is read; in any
//!    other order one statement drops the later rows after the last;
//! 3. one full join of the staged rows with the account's stored ones gives each listed
//!    SKU beside its stored row and each stored ACTIVE SKU the snapshot no longer lists
//!    (one pass over the account's rows); from it, set-based statements append the
//!    history (changed fields of listed SKUs, quantity → 0 and ACTIVE → ENDED of those no
//!    longer listed, in (ItemID, SKU) byte order as the merge walks them), update and end
//!    the stored rows, insert the new ones, bump the snapshot counter, forget the Feed
//!    task and move the cursor.
//!
//! A row source that fails rolls the transaction back: nothing of the snapshot is
//! applied. Text is compared and sorted in byte order (`COLLATE "C"`).

use postgres::Transaction;

use super::{check_fence, AsLedgerError, PgLedger};
use crate::store::ebay_inventory::{
    InventoryRow, PendingTask, SnapshotApplied, SnapshotError, StoredSku, FIELD_CURRENCY,
    FIELD_PRICE, FIELD_QUANTITY, FIELD_STATE,
};
use crate::store::inventory::{InventoryStore, OpenRows, SnapshotTarget};
use crate::store::{LedgerError, WriteFence};

/// Rows staged per statement.
const STAGE_ROWS: usize = 4096;

/// Rows between two calls of the caller's progress (stuck detection), as on SQLite.
const PROGRESS_ROWS: u64 = 10_000;

impl From<postgres::Error> for SnapshotError {
    fn from(err: postgres::Error) -> SnapshotError {
        SnapshotError::Ledger(LedgerError::Postgres(err))
    }
}

impl AsLedgerError for SnapshotError {
    fn as_ledger_error(&self) -> Option<&LedgerError> {
        match self {
            SnapshotError::Ledger(err) => Some(err),
            SnapshotError::Source(_) => None,
        }
    }
}

/// One batch of staged rows, column by column (the arrays `unnest` reads).
#[derive(Default)]
struct Stage {
    ord: Vec<i64>,
    item_id: Vec<String>,
    sku: Vec<String>,
    quantity: Vec<i64>,
    price: Vec<Option<String>>,
    currency: Vec<Option<String>>,
}

impl Stage {
    fn len(&self) -> usize {
        self.ord.len()
    }

    fn clear(&mut self) {
        self.ord.clear();
        self.item_id.clear();
        self.sku.clear();
        self.quantity.clear();
        self.price.clear();
        self.currency.clear();
    }

    fn flush(
        &mut self,
        tx: &mut Transaction<'_>,
        insert: &postgres::Statement,
    ) -> Result<(), SnapshotError> {
        if self.len() == 0 {
            return Ok(());
        }
        tx.execute(
            insert,
            &[
                &self.ord,
                &self.item_id,
                &self.sku,
                &self.quantity,
                &self.price,
                &self.currency,
            ],
        )?;
        self.clear();
        Ok(())
    }
}

/// The staged snapshot, and every SKU it lists or that is stored ACTIVE beside each other.
const TEMP_TABLES: &str = "
    CREATE TEMPORARY TABLE inventory_stage (
        ord      BIGINT NOT NULL,
        item_id  TEXT   NOT NULL,
        sku      TEXT   NOT NULL,
        quantity BIGINT NOT NULL,
        price    TEXT,
        currency TEXT
    ) ON COMMIT DROP;
    CREATE TEMPORARY TABLE inventory_diff (
        item_id      TEXT    NOT NULL,
        sku          TEXT    NOT NULL,
        listed       BOOLEAN NOT NULL,
        stored       BOOLEAN NOT NULL,
        changed      BOOLEAN NOT NULL,
        quantity     BIGINT,
        price        TEXT,
        currency     TEXT,
        old_quantity BIGINT,
        old_price    TEXT,
        old_currency TEXT,
        old_state    TEXT
    ) ON COMMIT DROP;";

/// Keeps each SKU's first row while the rows come sorted by (ItemID, SKU) in byte order
/// (eBay's files are): a duplicate is then the row just before, passed over here. The
/// first row out of order ends the watch; the staging table is deduplicated in SQL then.
#[derive(Default)]
struct Order {
    item_id: String,
    sku: String,
    any: bool,
    unsorted: bool,
}

impl Order {
    /// False when `row` repeats the row before (a duplicate to pass over).
    fn keep(&mut self, row: &InventoryRow) -> bool {
        if self.unsorted {
            return true;
        }
        if self.any {
            let key = (row.item_id.as_str(), row.sku.as_str());
            match key.cmp(&(self.item_id.as_str(), self.sku.as_str())) {
                std::cmp::Ordering::Equal => return false,
                std::cmp::Ordering::Less => {
                    self.unsorted = true;
                    return true;
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        self.item_id.clear();
        self.item_id.push_str(&row.item_id);
        self.sku.clear();
        self.sku.push_str(&row.sku);
        self.any = true;
        true
    }
}

fn apply(
    tx: &mut Transaction<'_>,
    target: SnapshotTarget<'_>,
    open: &mut OpenRows<'_>,
    progress: &dyn Fn(),
) -> Result<SnapshotApplied, SnapshotError> {
    let SnapshotTarget {
        account,
        stream,
        fence,
        taken_at,
        now,
    } = target;
    check_fence(tx, account, stream, fence, "inventory snapshot apply", now)?;
    // The cursor row first: a second apply of the account waits here until the first
    // commits, then sees its rows.
    tx.execute(
        "INSERT INTO cursors (account, stream, cursor_ts, updated_at) VALUES ($1, $2, 0, $3)
         ON CONFLICT (account, stream) DO NOTHING",
        &[&account, &stream, &now],
    )?;
    tx.query_one(
        "SELECT cursor_ts FROM cursors WHERE account = $1 AND stream = $2 FOR UPDATE",
        &[&account, &stream],
    )?;
    let snapshot: i64 = tx
        .query_one(
            "SELECT COALESCE((SELECT snapshot FROM ebay_inventory_snapshots WHERE account = $1), 0) + 1",
            &[&account],
        )?
        .try_get(0)?;
    tx.batch_execute(TEMP_TABLES)?;
    let insert = tx.prepare(
        "INSERT INTO inventory_stage (ord, item_id, sku, quantity, price, currency)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])",
    )?;
    let mut applied = SnapshotApplied::default();
    let mut stage = Stage::default();
    let mut order = Order::default();
    let rows = open().map_err(SnapshotError::Source)?;
    for row in rows {
        let row = row.map_err(SnapshotError::Source)?;
        let ord = i64::try_from(applied.rows).unwrap_or(i64::MAX);
        applied.rows = applied.rows.saturating_add(1);
        if applied.rows.is_multiple_of(PROGRESS_ROWS) {
            progress();
        }
        if !order.keep(&row) {
            applied.duplicates = applied.duplicates.saturating_add(1);
            continue;
        }
        stage.ord.push(ord);
        stage.item_id.push(row.item_id);
        stage.sku.push(row.sku);
        // Bounded by the parser; the conversion only stays total.
        stage
            .quantity
            .push(i64::try_from(row.quantity).unwrap_or(i64::MAX));
        stage.price.push(row.price);
        stage.currency.push(row.currency);
        if stage.len() >= STAGE_ROWS {
            stage.flush(tx, &insert)?;
        }
    }
    stage.flush(tx, &insert)?;
    if order.unsorted {
        // Out of order: a SKU listed again keeps its first row.
        let dropped = tx.execute(
            "DELETE FROM inventory_stage s USING inventory_stage t
             WHERE t.item_id = s.item_id AND t.sku = s.sku AND t.ord < s.ord",
            &[],
        )?;
        applied.duplicates = applied.duplicates.saturating_add(dropped);
    }
    tx.batch_execute("ANALYZE inventory_stage")?;
    // The statements below each take a while for a large account: progress between them.
    progress();
    // One pass over the snapshot and the account's rows: each listed SKU beside its
    // stored row, and each stored ACTIVE SKU the snapshot no longer lists.
    tx.execute(
        "INSERT INTO inventory_diff
         SELECT COALESCE(s.item_id, i.item_id), COALESCE(s.sku, i.sku),
                s.item_id IS NOT NULL, i.item_id IS NOT NULL,
                s.item_id IS NOT NULL AND i.item_id IS NOT NULL AND (i.quantity <> s.quantity
                    OR i.price IS DISTINCT FROM s.price OR i.currency IS DISTINCT FROM s.currency
                    OR i.state <> 'ACTIVE'),
                s.quantity, s.price, s.currency, i.quantity, i.price, i.currency, i.state
         FROM inventory_stage s
         FULL JOIN (SELECT item_id, sku, quantity, price, currency, state FROM ebay_inventory
                    WHERE account = $1) AS i
             ON i.item_id = s.item_id AND i.sku = s.sku
         WHERE s.item_id IS NOT NULL OR i.state = 'ACTIVE'",
        &[&account],
    )?;
    tx.batch_execute("ANALYZE inventory_diff")?;
    progress();
    let counts = tx.query_one(
        "SELECT COUNT(*) FILTER (WHERE listed AND NOT stored), COUNT(*) FILTER (WHERE changed),
                COUNT(*) FILTER (WHERE listed AND stored AND NOT changed),
                COUNT(*) FILTER (WHERE NOT listed)
         FROM inventory_diff",
        &[],
    )?;
    let count = |index: usize| -> Result<u64, SnapshotError> {
        let value: i64 = counts.try_get(index)?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    applied.inserted = count(0)?;
    applied.updated = count(1)?;
    applied.unchanged = count(2)?;
    applied.ended = count(3)?;
    // The history, against the stored values, in the order the merge walks the SKUs.
    let events = format!(
        "INSERT INTO events (account, stream, resource_id, field, before, after, observed_at)
         SELECT $1, $2, CASE WHEN d.sku = '' THEN d.item_id ELSE d.item_id || '/' || d.sku END,
                f.field, f.before, f.after, $3
         FROM inventory_diff d CROSS JOIN LATERAL (VALUES
             (1, '{FIELD_QUANTITY}', d.old_quantity::text, COALESCE(d.quantity, 0)::text),
             (2, '{FIELD_PRICE}', d.old_price, CASE WHEN d.listed THEN d.price ELSE d.old_price END),
             (3, '{FIELD_CURRENCY}', d.old_currency,
                 CASE WHEN d.listed THEN d.currency ELSE d.old_currency END),
             (4, '{FIELD_STATE}', d.old_state, CASE WHEN d.listed THEN 'ACTIVE' ELSE 'ENDED' END)
         ) AS f (n, field, before, after)
         WHERE (d.changed OR NOT d.listed) AND f.before IS DISTINCT FROM f.after
         ORDER BY d.item_id COLLATE \"C\", d.sku COLLATE \"C\", f.n"
    );
    applied.events = tx.execute(events.as_str(), &[&account, &stream, &now])?;
    progress();
    tx.execute(
        "UPDATE ebay_inventory i SET quantity = COALESCE(d.quantity, 0),
             price = CASE WHEN d.listed THEN d.price ELSE i.price END,
             currency = CASE WHEN d.listed THEN d.currency ELSE i.currency END, state = CASE WHEN d.listed THEN 'ACTIVE' ELSE 'ENDED' END,
             snapshot = $2, updated_at = $3
         FROM inventory_diff d
         WHERE i.account = $1 AND i.item_id = d.item_id AND i.sku = d.sku
           AND (d.changed OR NOT d.listed)",
        &[&account, &snapshot, &now],
    )?;
    tx.execute(
        "INSERT INTO ebay_inventory (account, item_id, sku, quantity, price, currency, state, snapshot,
             first_seen_at, updated_at)
         SELECT $1, item_id, sku, quantity, price, currency, 'ACTIVE', $2, $3, $3
         FROM inventory_diff WHERE listed AND NOT stored
         ORDER BY item_id COLLATE \"C\", sku COLLATE \"C\"",
        &[&account, &snapshot, &now],
    )?;
    tx.execute(
        "INSERT INTO ebay_inventory_snapshots (account, snapshot) VALUES ($1, $2)
         ON CONFLICT (account) DO UPDATE SET snapshot = excluded.snapshot",
        &[&account, &snapshot],
    )?;
    tx.execute(
        "DELETE FROM ebay_feed_tasks WHERE account = $1 AND stream = $2",
        &[&account, &stream],
    )?;
    tx.execute(
        "UPDATE cursors SET cursor_ts = $3, updated_at = $4, last_run_at = $4, last_error = NULL,
             failures = 0, retry_at = NULL
         WHERE account = $1 AND stream = $2",
        &[&account, &stream, &taken_at, &now],
    )?;
    Ok(applied)
}

impl InventoryStore for PgLedger {
    fn apply_inventory_snapshot(
        &self,
        target: SnapshotTarget<'_>,
        open: &mut OpenRows<'_>,
        progress: &dyn Fn(),
    ) -> Result<SnapshotApplied, SnapshotError> {
        self.with_tx(|tx| apply(tx, target, &mut *open, progress))
    }

    fn pending_task(
        &self,
        account: &str,
        stream: &str,
    ) -> Result<Option<PendingTask>, LedgerError> {
        self.with_client(|client| {
            client
                .query_opt(
                    "SELECT task_id, created_at FROM ebay_feed_tasks WHERE account = $1 AND stream = $2",
                    &[&account, &stream],
                )?
                .map(|row| {
                    Ok(PendingTask {
                        task_id: row.try_get(0)?,
                        created_at: row.try_get(1)?,
                    })
                })
                .transpose()
        })
    }

    fn record_task(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        task: &PendingTask,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_tx(|tx| {
            check_fence(tx, account, stream, fence, "feed task record", now)?;
            tx.execute(
                "INSERT INTO ebay_feed_tasks (account, stream, task_id, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, stream) DO UPDATE SET task_id = excluded.task_id,
                     created_at = excluded.created_at",
                &[&account, &stream, &task.task_id, &task.created_at],
            )?;
            Ok(())
        })
    }

    fn forget_task(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_tx(|tx| {
            check_fence(tx, account, stream, fence, "feed task forget", now)?;
            tx.execute(
                "DELETE FROM ebay_feed_tasks WHERE account = $1 AND stream = $2",
                &[&account, &stream],
            )?;
            Ok(())
        })
    }

    fn inventory_of(&self, account: &str) -> Result<Vec<StoredSku>, LedgerError> {
        self.with_client(|client| {
            client
                .query(
                    "SELECT item_id, sku, quantity, price, currency, state FROM ebay_inventory
                     WHERE account = $1 ORDER BY item_id COLLATE \"C\", sku COLLATE \"C\"",
                    &[&account],
                )?
                .iter()
                .map(|row| {
                    Ok(StoredSku {
                        item_id: row.try_get(0)?,
                        sku: row.try_get(1)?,
                        quantity: row.try_get(2)?,
                        price: row.try_get(3)?,
                        currency: row.try_get(4)?,
                        state: row.try_get(5)?,
                    })
                })
                .collect()
        })
    }
}
