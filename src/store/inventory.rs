//! The eBay `active_inventory` snapshot's storage ([`InventoryStore`]): the per-SKU rows
//! (`ebay_inventory`), the snapshot counter (`ebay_inventory_snapshots`), the pending Sell
//! Feed task (`ebay_feed_tasks`), with the stream's `cursors` row, its `events` history
//! and its fence. Both engines implement it: the SQLite file through the functions of
//! [`super::ebay_inventory`] (the merge apply its module doc describes), PostgreSQL in
//! `store::postgres::inventory`. The same contract tests run against both
//! (`store::contract_inventory`).

use super::ebay_inventory::{
    self, InventoryRow, PendingTask, SnapshotApplied, SnapshotError, StoredSku,
};
use super::{LedgerError, SqliteLedger, WriteFence};

/// A snapshot's rows as they are parsed (never the whole document in memory); the first
/// error (a malformed or truncated file) means nothing of the snapshot may be applied.
pub type RowSource = Box<dyn Iterator<Item = Result<InventoryRow, String>> + Send>;

/// Opens a snapshot's rows from the start. An engine may read them more than once (the
/// SQLite merge reads a file out of (ItemID, SKU) order a second time, a retried
/// PostgreSQL transaction reads it again).
pub type OpenRows<'a> = dyn FnMut() -> Result<RowSource, String> + Send + 'a;

/// One snapshot to apply: whose, under which fence, and when.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotTarget<'a> {
    pub account: &'a str,
    pub stream: &'a str,
    pub fence: WriteFence,
    /// When the snapshot was taken: the stream's `cursor_ts` after the apply.
    pub taken_at: i64,
    pub now: i64,
}

/// Storage for the `active_inventory` snapshot stream. A supertrait of
/// [`crate::store::LedgerStore`], so the engine that holds the hour ledger
/// (`store::hour_ledger`) holds the snapshot's tables too. Methods are blocking: async
/// callers use `store::blocking`.
pub trait InventoryStore: Send + Sync {
    /// Applies one snapshot in one transaction: the fence is checked in it, the stream's
    /// cursor row is locked first (two applies of one account take turns), each listed
    /// SKU is inserted (new), rewritten with one history row per changed field (changed)
    /// or left alone (unchanged); a SKU listed twice keeps its first row; every SKU still
    /// ACTIVE that the snapshot does not list ends (quantity 0, ENDED, both in the
    /// history). The Feed task is forgotten and the cursor moves to `taken_at`. A failing
    /// row source is [`SnapshotError::Source`] and a stale fence
    /// [`LedgerError::StaleFence`]: nothing of the snapshot is written. `progress` is
    /// called every 10,000 rows.
    fn apply_inventory_snapshot(
        &self,
        target: SnapshotTarget<'_>,
        open: &mut OpenRows<'_>,
        progress: &dyn Fn(),
    ) -> Result<SnapshotApplied, SnapshotError>;

    /// The Feed task (account, stream) waits for, if any.
    fn pending_task(&self, account: &str, stream: &str)
        -> Result<Option<PendingTask>, LedgerError>;

    /// Records the task (account, stream) now waits for (replacing any other), the fence
    /// checked in the same transaction.
    fn record_task(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        task: &PendingTask,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// Gives up the task (account, stream) waited for, the fence checked in the same
    /// transaction: the next run creates a new one.
    fn forget_task(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        now: i64,
    ) -> Result<(), LedgerError>;

    /// Every stored SKU of `account`, ordered by (item id, sku) in byte order.
    fn inventory_of(&self, account: &str) -> Result<Vec<StoredSku>, LedgerError>;
}

impl InventoryStore for SqliteLedger {
    fn apply_inventory_snapshot(
        &self,
        target: SnapshotTarget<'_>,
        open: &mut OpenRows<'_>,
        progress: &dyn Fn(),
    ) -> Result<SnapshotApplied, SnapshotError> {
        self.with_conn(|conn| {
            ebay_inventory::apply_snapshot_from(
                conn,
                target.account,
                target.stream,
                target.fence,
                &mut *open,
                target.taken_at,
                target.now,
                progress,
            )
        })
    }

    fn pending_task(
        &self,
        account: &str,
        stream: &str,
    ) -> Result<Option<PendingTask>, LedgerError> {
        self.with_conn(|conn| ebay_inventory::pending_task(conn, account, stream))
    }

    fn record_task(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        task: &PendingTask,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| ebay_inventory::record_task(conn, account, stream, fence, task, now))
    }

    fn forget_task(
        &self,
        account: &str,
        stream: &str,
        fence: WriteFence,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| ebay_inventory::forget_task(conn, account, stream, fence, now))
    }

    fn inventory_of(&self, account: &str) -> Result<Vec<StoredSku>, LedgerError> {
        self.with_read_conn(|conn| ebay_inventory::inventory_of(conn, account))
    }
}
