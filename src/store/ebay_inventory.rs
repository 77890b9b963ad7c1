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
//! A report sorted by (ItemID, SKU), as eBay's files are, is applied as a merge
//! ([`apply_snapshot_from`]): the rows are walked beside the account's stored rows in
//! primary-key order, so a new SKU is inserted without a lookup, an unchanged one is not
//! written at all, and a stored SKU the walk passes has ended. A report out of order is
//! read again and applied row by row (a lookup per row, the SKUs it did not mark ended
//! after the last row). The snapshot counter is `ebay_inventory_snapshots`. New SKUs,
//! changed SKUs and history rows are written `INSERT_ROWS` and `EVENT_ROWS` (64) per
//! statement (changed ones as an upsert whose rows all meet their stored row): a
//! statement per row started a statement and descended the primary key from its root for
//! every SKU, and a write to `ebay_inventory` makes the merge's scan of that table save
//! its position and seek it again before its next row (`bench ebay-inventory`: first
//! snapshot 1.05× idle to 1.16× under load, changed snapshot 1.1× to 1.25× for new SKUs
//! and history in groups; the changed SKUs in groups then cut the writer's CPU time in
//! the changed snapshot by about 13%).
//!
//! Where the changed snapshot's time goes (`perf record --call-graph dwarf`, 500k
//! listings, the writer thread, after the grouping): the changed SKUs' upserts about 28%,
//! the history rows (`events` and its two indexes) about 28%, the commit about 13% (the
//! WAL checkpoint of every page the snapshot wrote: most of `ebay_inventory`, and the new
//! `events` pages), the scan of the stored rows about 12%, the rest the merge itself and
//! page writes to the WAL when the page cache fills. The parse is on the other core.
//!
//! `ebay_feed_tasks` holds the Feed task a stream waits for until its file is applied, so
//! an interrupted run resumes it ([`pending_task`], [`record_task`], [`forget_task`]).
//!
//! The stream's row in `cursors` records the snapshot: `cursor_ts` is when the applied
//! snapshot was taken, `last_error`/`failures`/`retry_at` as for cursor streams.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tracing::debug;

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
const READ_AHEAD_BATCH: usize = 4096;
/// Batches the reader may be ahead of the writer: with [`READ_AHEAD_BATCH`], about
/// 20,000 rows (a few megabytes) in memory at most.
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

/// The writer's next batch; `None` after the reader's clean [`ReadAhead::End`].
fn next_batch(
    receiver: &std::sync::mpsc::Receiver<ReadAhead>,
) -> Result<Option<Vec<InventoryRow>>, SnapshotError> {
    match receiver.recv() {
        Ok(ReadAhead::Rows(batch)) => Ok(Some(batch)),
        Ok(ReadAhead::Failed(message)) => Err(SnapshotError::Source(message)),
        Ok(ReadAhead::End) => Ok(None),
        Err(_) => Err(SnapshotError::Source(
            "the report reader stopped before the end of the file".to_string(),
        )),
    }
}

/// How a snapshot's rows meet the stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The rows come sorted by (ItemID, SKU) (eBay's files, as the simulator serves
    /// them): they are walked beside the account's stored rows in primary-key order. An
    /// unchanged row is not written at all, a new one is inserted without a lookup, a
    /// stored row the walk passes is ended on the spot. The first row out of order gives
    /// the merge up ([`Unsorted`]).
    Merge,
    /// Any order: each row is looked up by its key and marked with the snapshot; the
    /// active rows left unmarked are ended after the last row.
    Lookup,
}

/// A merge met a row out of order: it gave up, and its transaction was rolled back.
#[derive(Debug)]
struct Unsorted;

/// Applies one snapshot of (account, stream) taken at `taken_at` in one transaction (see
/// the module doc), reading `rows` once, each row looked up by its key (any order).
/// `rows` is read to its end inside the transaction; its first error rolls everything
/// back. `progress` is called every 10,000 rows (stuck detection).
///
/// [`apply_snapshot_from`] is the faster form for a source that can be read twice.
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
    let target = Target {
        account,
        stream,
        fence,
        taken_at,
        now,
    };
    match apply_once(conn, &target, rows, Mode::Lookup, progress)? {
        Ok(applied) => Ok(applied),
        // A lookup takes any order; kept total all the same.
        Err(Unsorted) => Err(SnapshotError::Source(
            "the rows are out of order".to_string(),
        )),
    }
}

/// [`apply_snapshot`] for a source `open` can open again (a report file): the snapshot is
/// first applied as a merge ([`Mode::Merge`]: rows sorted by ItemID and SKU, as eBay's
/// files are); if a row comes out of order, that attempt is rolled back and the file is
/// read again and applied row by row ([`Mode::Lookup`]). Either way the snapshot is one
/// transaction with the same result.
#[allow(clippy::too_many_arguments)]
pub fn apply_snapshot_from<F, S, E, I>(
    conn: &mut Connection,
    account: &str,
    stream: &str,
    fence: WriteFence,
    mut open: F,
    taken_at: i64,
    now: i64,
    progress: &dyn Fn(),
) -> Result<SnapshotApplied, SnapshotError>
where
    F: FnMut() -> Result<I, S>,
    S: std::fmt::Display,
    E: std::fmt::Display,
    I: IntoIterator<Item = Result<InventoryRow, E>>,
    I::IntoIter: Send,
{
    let target = Target {
        account,
        stream,
        fence,
        taken_at,
        now,
    };
    let rows = open().map_err(|err| SnapshotError::Source(err.to_string()))?;
    if let Ok(applied) = apply_once(conn, &target, rows, Mode::Merge, progress)? {
        return Ok(applied);
    }
    debug!(
        account,
        stream, "inventory rows out of (ItemID, SKU) order: applying them by lookup"
    );
    let rows = open().map_err(|err| SnapshotError::Source(err.to_string()))?;
    match apply_once(conn, &target, rows, Mode::Lookup, progress)? {
        Ok(applied) => Ok(applied),
        Err(Unsorted) => Err(SnapshotError::Source(
            "the rows are out of order".to_string(),
        )),
    }
}

/// What a snapshot is applied to, and when.
struct Target<'a> {
    account: &'a str,
    stream: &'a str,
    fence: WriteFence,
    taken_at: i64,
    now: i64,
}

/// One attempt: the reader thread and the writer (see [`apply_snapshot`]).
fn apply_once<E, I>(
    conn: &mut Connection,
    target: &Target<'_>,
    rows: I,
    mode: Mode,
    progress: &dyn Fn(),
) -> Result<Result<SnapshotApplied, Unsorted>, SnapshotError>
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
        let applied = apply_read_ahead(conn, target, &receiver, mode, progress);
        // Hang up first: a reader blocked on a full channel (the writer failed or gave
        // the merge up) ends.
        drop(receiver);
        let joined = reader.join();
        match (applied, joined) {
            (Err(err), _) => Err(err),
            (Ok(Err(Unsorted)), _) => Ok(Err(Unsorted)),
            (Ok(_), Err(_)) => Err(SnapshotError::Source(
                "the report reader panicked".to_string(),
            )),
            (Ok(applied), Ok(())) => Ok(applied),
        }
    })
}

/// The writer's side of [`apply_once`]: commits only after the reader's
/// [`ReadAhead::End`].
fn apply_read_ahead(
    conn: &mut Connection,
    target: &Target<'_>,
    receiver: &std::sync::mpsc::Receiver<ReadAhead>,
    mode: Mode,
    progress: &dyn Fn(),
) -> Result<Result<SnapshotApplied, Unsorted>, SnapshotError> {
    let Target {
        account,
        stream,
        fence,
        taken_at,
        now,
    } = *target;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_fence(&tx, account, stream, fence, "inventory snapshot apply", now)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO cursors (account, stream, cursor_ts, updated_at) VALUES (?1, ?2, 0, ?3)",
    )?
    .execute(params![account, stream, now])?;
    let snapshot: i64 = tx
        .prepare_cached(
            "SELECT COALESCE((SELECT snapshot FROM ebay_inventory_snapshots WHERE account = ?1), 0) + 1",
        )?
        .query_row([account], |row| row.get(0))?;
    let mut applied = SnapshotApplied::default();
    let walked = match mode {
        Mode::Merge => apply_merged(&tx, target, receiver, snapshot, progress, &mut applied)?,
        Mode::Lookup => {
            apply_looked_up(&tx, target, receiver, snapshot, progress, &mut applied)?;
            Ok(())
        }
    };
    if let Err(Unsorted) = walked {
        // Dropping the transaction rolls the attempt back.
        return Ok(Err(Unsorted));
    }
    tx.prepare_cached(
        "INSERT INTO ebay_inventory_snapshots (account, snapshot) VALUES (?1, ?2)
         ON CONFLICT(account) DO UPDATE SET snapshot = excluded.snapshot",
    )?
    .execute(params![account, snapshot])?;
    tx.prepare_cached("DELETE FROM ebay_feed_tasks WHERE account = ?1 AND stream = ?2")?
        .execute(params![account, stream])?;
    tx.prepare_cached(
        "UPDATE cursors SET cursor_ts = ?3, updated_at = ?4, last_run_at = ?4, last_error = NULL,
             failures = 0, retry_at = NULL
         WHERE account = ?1 AND stream = ?2",
    )?
    .execute(params![account, stream, taken_at, now])?;
    tx.commit()?;
    Ok(Ok(applied))
}

/// Counts a row, calling `progress` every 10,000.
fn count_row(applied: &mut SnapshotApplied, progress: &dyn Fn()) {
    applied.rows = applied.rows.saturating_add(1);
    if applied.rows.is_multiple_of(10_000) {
        progress();
    }
}

/// The history rows a listed SKU's change appends: (field, before, after).
type Changes = Vec<(&'static str, Option<String>, Option<String>)>;

/// What changed between a stored SKU and its row in this snapshot (empty: nothing).
fn changes_of(
    old_quantity: i64,
    old_price: Option<&str>,
    old_currency: Option<&str>,
    old_state: &str,
    row: &InventoryRow,
    quantity: i64,
) -> Changes {
    let mut changes = Changes::new();
    if old_quantity != quantity {
        changes.push((
            FIELD_QUANTITY,
            Some(old_quantity.to_string()),
            Some(quantity.to_string()),
        ));
    }
    if old_price != row.price.as_deref() {
        changes.push((
            FIELD_PRICE,
            old_price.map(str::to_string),
            row.price.clone(),
        ));
    }
    if old_currency != row.currency.as_deref() {
        changes.push((
            FIELD_CURRENCY,
            old_currency.map(str::to_string),
            row.currency.clone(),
        ));
    }
    if old_state != STATE_ACTIVE {
        changes.push((
            FIELD_STATE,
            Some(old_state.to_string()),
            Some(STATE_ACTIVE.to_string()),
        ));
    }
    changes
}

/// SQLite integers are signed: a quantity is bounded by the parser, this only keeps the
/// conversion total.
fn quantity_of(row: &InventoryRow) -> i64 {
    i64::try_from(row.quantity).unwrap_or(i64::MAX)
}

/// Writes `row` with `statement`: the insert, update or upsert of a SKU, which all take
/// (account, item, sku, quantity, price, currency, snapshot, now).
fn write_row(
    statement: &mut rusqlite::CachedStatement<'_>,
    target: &Target<'_>,
    row: &InventoryRow,
    quantity: i64,
    snapshot: i64,
) -> rusqlite::Result<()> {
    statement.execute(params![
        target.account,
        row.item_id,
        row.sku,
        quantity,
        row.price,
        row.currency,
        snapshot,
        target.now
    ])?;
    Ok(())
}

/// History rows appended per statement (as [`INSERT_ROWS`] for new SKUs).
const EVENT_ROWS: usize = 64;

/// The insert of `rows` history rows: ?1 the account, ?2 the stream, ?3 the time, then
/// four values per row (resource, field, before, after).
fn event_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (account, stream, resource_id, field, before, after, observed_at) VALUES ",
    );
    for index in 0..rows {
        let at = 4 + index * 4;
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(?1, ?2, ?{}, ?{}, ?{}, ?{}, ?3)",
            at,
            at + 1,
            at + 2,
            at + 3
        ));
    }
    sql
}

/// One history row not yet written: (resource, field, before, after).
type PendingEvent = (String, &'static str, Option<String>, Option<String>);

/// The history rows of a snapshot, appended [`EVENT_ROWS`] at a time in the order they
/// were found (so their ids keep that order); [`History::flush`] writes the rest before
/// the commit.
struct History<'t> {
    full: rusqlite::CachedStatement<'t>,
    rows: Vec<PendingEvent>,
}

impl<'t> History<'t> {
    fn new(tx: &'t rusqlite::Transaction<'_>) -> rusqlite::Result<History<'t>> {
        Ok(History {
            full: tx.prepare_cached(&event_sql(EVENT_ROWS))?,
            rows: Vec::with_capacity(EVENT_ROWS),
        })
    }

    /// Appends one history row per changed field of a SKU.
    fn append(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        target: &Target<'_>,
        resource: &str,
        changes: Changes,
        applied: &mut SnapshotApplied,
    ) -> rusqlite::Result<()> {
        for (field, before, after) in changes {
            self.rows.push((resource.to_string(), field, before, after));
            applied.events += 1;
            if self.rows.len() >= EVENT_ROWS {
                self.flush(tx, target)?;
            }
        }
        Ok(())
    }

    /// Writes the rows held (the last, shorter group with a statement of its size).
    fn flush(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        target: &Target<'_>,
    ) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if self.rows.len() == EVENT_ROWS {
            Self::write(&mut self.full, target, &self.rows)?;
        } else {
            let mut partial = tx.prepare(&event_sql(self.rows.len()))?;
            Self::write(&mut partial, target, &self.rows)?;
        }
        self.rows.clear();
        Ok(())
    }

    fn write(
        statement: &mut rusqlite::Statement<'_>,
        target: &Target<'_>,
        rows: &[PendingEvent],
    ) -> rusqlite::Result<()> {
        statement.raw_bind_parameter(1, target.account)?;
        statement.raw_bind_parameter(2, target.stream)?;
        statement.raw_bind_parameter(3, target.now)?;
        for (index, (resource, field, before, after)) in rows.iter().enumerate() {
            let at = 4 + index * 4;
            statement.raw_bind_parameter(at, resource.as_str())?;
            statement.raw_bind_parameter(at + 1, *field)?;
            statement.raw_bind_parameter(at + 2, before.as_deref())?;
            statement.raw_bind_parameter(at + 3, after.as_deref())?;
        }
        statement.raw_execute()?;
        Ok(())
    }
}

/// The events of a SKU that a snapshot no longer lists: its quantity to 0 (when it was
/// not already) and its state from ACTIVE to ENDED.
fn ending_changes(quantity: i64) -> Changes {
    let mut changes = Changes::new();
    if quantity != 0 {
        changes.push((
            FIELD_QUANTITY,
            Some(quantity.to_string()),
            Some("0".to_string()),
        ));
    }
    changes.push((
        FIELD_STATE,
        Some(STATE_ACTIVE.to_string()),
        Some(STATE_ENDED.to_string()),
    ));
    changes
}

/// One stored SKU as the merge walks past it; its buffers are reused row after row.
#[derive(Debug, Default)]
struct Stored {
    item_id: String,
    sku: String,
    quantity: i64,
    price: Option<String>,
    currency: Option<String>,
    state: String,
    /// The key of the row before (the walk moves strictly forward), once there is one.
    previous_item_id: String,
    previous_sku: String,
    started: bool,
}

/// Copies `from` into `into`, reusing its allocation.
fn copy_into(into: &mut String, from: &str) {
    into.clear();
    into.push_str(from);
}

fn copy_optional(into: &mut Option<String>, from: Option<&str>) {
    match (into.as_mut(), from) {
        (Some(buffer), Some(from)) => copy_into(buffer, from),
        (None, Some(from)) => *into = Some(from.to_string()),
        (_, None) => *into = None,
    }
}

fn text_at<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<&'r str>> {
    row.get_ref(index)?.as_str_or_null().map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, err.into())
    })
}

impl Stored {
    /// Moves to the walk's next row with a key above the current one; false once the
    /// walk is done. Writing the row a statement is on may show it once more (SQLite:
    /// whether a running statement sees the connection's own changes is undefined), so a
    /// key not above the last one is passed over.
    fn advance(&mut self, walk: &mut rusqlite::Rows<'_>) -> rusqlite::Result<bool> {
        let had = std::mem::replace(&mut self.started, true);
        if had {
            std::mem::swap(&mut self.item_id, &mut self.previous_item_id);
            std::mem::swap(&mut self.sku, &mut self.previous_sku);
        }
        loop {
            if !self.load(walk.next()?)? {
                return Ok(false);
            }
            if !had
                || (self.item_id.as_str(), self.sku.as_str())
                    > (self.previous_item_id.as_str(), self.previous_sku.as_str())
            {
                return Ok(true);
            }
        }
    }

    /// Loads the scan's next row; false once the scan is done.
    fn load(&mut self, row: Option<&rusqlite::Row<'_>>) -> rusqlite::Result<bool> {
        let Some(row) = row else {
            return Ok(false);
        };
        copy_into(&mut self.item_id, text_at(row, 0)?.unwrap_or(""));
        copy_into(&mut self.sku, text_at(row, 1)?.unwrap_or(""));
        self.quantity = row.get(2)?;
        copy_optional(&mut self.price, text_at(row, 3)?);
        copy_optional(&mut self.currency, text_at(row, 4)?);
        copy_into(&mut self.state, text_at(row, 5)?.unwrap_or(""));
        Ok(true)
    }
}

/// [`Mode::Merge`]: the rows walked beside the stored ones in primary-key order.
fn apply_merged(
    tx: &rusqlite::Transaction<'_>,
    target: &Target<'_>,
    receiver: &std::sync::mpsc::Receiver<ReadAhead>,
    snapshot: i64,
    progress: &dyn Fn(),
    applied: &mut SnapshotApplied,
) -> Result<Result<(), Unsorted>, SnapshotError> {
    let (account, now) = (target.account, target.now);
    let mut scan = tx.prepare(
        "SELECT item_id, sku, quantity, price, currency, state FROM ebay_inventory
         WHERE account = ?1 ORDER BY item_id, sku",
    )?;
    let mut inserts = RowWrites::new(tx, insert_sql)?;
    let mut updates = RowWrites::new(tx, update_sql)?;
    let mut end = tx.prepare_cached(
        "UPDATE ebay_inventory SET quantity = 0, state = 'ENDED', snapshot = ?4, updated_at = ?5
         WHERE account = ?1 AND item_id = ?2 AND sku = ?3",
    )?;
    let mut history = History::new(tx)?;
    // A stored SKU the walk passed without meeting it in the snapshot has ended.
    let mut end_stored = |stored: &Stored,
                          history: &mut History<'_>,
                          applied: &mut SnapshotApplied|
     -> rusqlite::Result<()> {
        if stored.state != STATE_ACTIVE {
            return Ok(());
        }
        let resource = resource_id(&stored.item_id, &stored.sku);
        history.append(
            tx,
            target,
            &resource,
            ending_changes(stored.quantity),
            applied,
        )?;
        end.execute(params![account, stored.item_id, stored.sku, snapshot, now])?;
        applied.ended += 1;
        Ok(())
    };
    let mut walk = scan.query([account])?;
    let mut stored = Stored::default();
    let mut more = stored.advance(&mut walk)?;
    let (mut last_item, mut last_sku, mut any) = (String::new(), String::new(), false);
    while let Some(batch) = next_batch(receiver)? {
        for row in batch {
            count_row(applied, progress);
            let key = (row.item_id.as_str(), row.sku.as_str());
            if any {
                match key.cmp(&(last_item.as_str(), last_sku.as_str())) {
                    std::cmp::Ordering::Less => return Ok(Err(Unsorted)),
                    std::cmp::Ordering::Equal => {
                        applied.duplicates += 1;
                        continue;
                    }
                    std::cmp::Ordering::Greater => {}
                }
            }
            copy_into(&mut last_item, key.0);
            copy_into(&mut last_sku, key.1);
            any = true;
            let quantity = quantity_of(&row);
            // None: a new SKU; Some(changed) once met.
            let mut met = None;
            while more {
                match (stored.item_id.as_str(), stored.sku.as_str()).cmp(&key) {
                    std::cmp::Ordering::Less => {
                        end_stored(&stored, &mut history, applied)?;
                        more = stored.advance(&mut walk)?;
                    }
                    std::cmp::Ordering::Equal => {
                        let changes = changes_of(
                            stored.quantity,
                            stored.price.as_deref(),
                            stored.currency.as_deref(),
                            &stored.state,
                            &row,
                            quantity,
                        );
                        met = Some(!changes.is_empty());
                        if changes.is_empty() {
                            applied.unchanged += 1;
                        } else {
                            history.append(tx, target, &row.resource_id(), changes, applied)?;
                            applied.updated += 1;
                        }
                        more = stored.advance(&mut walk)?;
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            match met {
                None => {
                    applied.inserted += 1;
                    inserts.push(tx, target, snapshot, row)?;
                }
                Some(true) => updates.push(tx, target, snapshot, row)?,
                Some(false) => {}
            }
        }
    }
    while more {
        end_stored(&stored, &mut history, applied)?;
        more = stored.advance(&mut walk)?;
    }
    inserts.flush(tx, target, snapshot)?;
    updates.flush(tx, target, snapshot)?;
    history.flush(tx, target)?;
    Ok(Ok(()))
}

/// New SKUs a merge inserts per statement. One statement per row starts a statement,
/// binds every value and descends the primary key from its root for each SKU; a
/// statement of many rows in key order keeps its cursor on the table's last page and
/// binds the account, snapshot and time once.
const INSERT_ROWS: usize = 64;

/// The insert of `rows` new SKUs: ?1 the account, ?2 the snapshot, ?3 the time, then
/// five values per row (item, sku, quantity, price, currency).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO ebay_inventory (account, item_id, sku, quantity, price, currency, state, snapshot, first_seen_at, updated_at) VALUES ",
    );
    for index in 0..rows {
        let at = 4 + index * 5;
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(?1, ?{}, ?{}, ?{}, ?{}, ?{}, 'ACTIVE', ?2, ?3, ?3)",
            at,
            at + 1,
            at + 2,
            at + 3,
            at + 4
        ));
    }
    sql
}

/// The changed SKUs' upsert of `rows` rows: [`insert_sql`] whose every row meets its
/// stored one. A statement per changed SKU (an UPDATE by key) cost a statement, eight
/// bindings and a descent of the primary key from its root per row, and made the
/// merge's scan, whose table the UPDATE wrote, save its position and seek it again
/// before its next row; [`INSERT_ROWS`] rows a statement do that once per group.
fn update_sql(rows: usize) -> String {
    let mut sql = insert_sql(rows);
    sql.push_str(
        " ON CONFLICT(account, item_id, sku) DO UPDATE SET quantity = excluded.quantity,
             price = excluded.price, currency = excluded.currency, state = 'ACTIVE',
             snapshot = excluded.snapshot, updated_at = excluded.updated_at",
    );
    sql
}

/// The SKUs a merge has met and not yet written ([`INSERT_ROWS`] at a time): the new
/// ones ([`insert_sql`]) or the changed ones ([`update_sql`]). They lie behind the walk
/// (each was met at or before the stored key the walk is on, and the walk has moved
/// past it), so writing them later neither shows them to the walk nor changes what it
/// compares (a key shown again is passed over, see [`Stored::advance`]).
struct RowWrites<'t> {
    full: rusqlite::CachedStatement<'t>,
    sql: fn(usize) -> String,
    rows: Vec<InventoryRow>,
}

impl<'t> RowWrites<'t> {
    fn new(
        tx: &'t rusqlite::Transaction<'_>,
        sql: fn(usize) -> String,
    ) -> rusqlite::Result<RowWrites<'t>> {
        Ok(RowWrites {
            full: tx.prepare_cached(&sql(INSERT_ROWS))?,
            sql,
            rows: Vec::with_capacity(INSERT_ROWS),
        })
    }

    fn push(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        target: &Target<'_>,
        snapshot: i64,
        row: InventoryRow,
    ) -> rusqlite::Result<()> {
        self.rows.push(row);
        if self.rows.len() >= INSERT_ROWS {
            self.flush(tx, target, snapshot)?;
        }
        Ok(())
    }

    /// Writes the rows held (the last, shorter group with a statement of its size).
    fn flush(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        target: &Target<'_>,
        snapshot: i64,
    ) -> rusqlite::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if self.rows.len() == INSERT_ROWS {
            Self::write(&mut self.full, target, snapshot, &self.rows)?;
        } else {
            let mut partial = tx.prepare(&(self.sql)(self.rows.len()))?;
            Self::write(&mut partial, target, snapshot, &self.rows)?;
        }
        self.rows.clear();
        Ok(())
    }

    fn write(
        statement: &mut rusqlite::Statement<'_>,
        target: &Target<'_>,
        snapshot: i64,
        rows: &[InventoryRow],
    ) -> rusqlite::Result<()> {
        statement.raw_bind_parameter(1, target.account)?;
        statement.raw_bind_parameter(2, snapshot)?;
        statement.raw_bind_parameter(3, target.now)?;
        for (index, row) in rows.iter().enumerate() {
            let at = 4 + index * 5;
            statement.raw_bind_parameter(at, row.item_id.as_str())?;
            statement.raw_bind_parameter(at + 1, row.sku.as_str())?;
            statement.raw_bind_parameter(at + 2, quantity_of(row))?;
            statement.raw_bind_parameter(at + 3, row.price.as_deref())?;
            statement.raw_bind_parameter(at + 4, row.currency.as_deref())?;
        }
        statement.raw_execute()?;
        Ok(())
    }
}

/// [`Mode::Lookup`]: each row looked up by its key, in any order.
fn apply_looked_up(
    tx: &rusqlite::Transaction<'_>,
    target: &Target<'_>,
    receiver: &std::sync::mpsc::Receiver<ReadAhead>,
    snapshot: i64,
    progress: &dyn Fn(),
    applied: &mut SnapshotApplied,
) -> Result<(), SnapshotError> {
    let (account, now) = (target.account, target.now);
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
    let mut history = History::new(tx)?;
    while let Some(batch) = next_batch(receiver)? {
        for row in batch {
            count_row(applied, progress);
            let quantity = quantity_of(&row);
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
            let Some((old_quantity, old_price, old_currency, old_state, old_snapshot)) = previous
            else {
                write_row(&mut upsert, target, &row, quantity, snapshot)?;
                applied.inserted += 1;
                continue;
            };
            if old_snapshot == snapshot {
                applied.duplicates += 1;
                continue;
            }
            let changes = changes_of(
                old_quantity,
                old_price.as_deref(),
                old_currency.as_deref(),
                &old_state,
                &row,
                quantity,
            );
            if changes.is_empty() {
                seen.execute(params![account, row.item_id, row.sku, snapshot])?;
                applied.unchanged += 1;
                continue;
            }
            history.append(tx, target, &row.resource_id(), changes, applied)?;
            write_row(&mut upsert, target, &row, quantity, snapshot)?;
            applied.updated += 1;
        }
    }
    // Every SKU still active that this snapshot did not list has ended (one walk of the
    // account's primary-key range).
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
        history.append(tx, target, &resource, ending_changes(quantity), applied)?;
        applied.ended += 1;
    }
    drop(ended);
    history.flush(tx, target)?;
    tx.prepare_cached(
        "UPDATE ebay_inventory SET quantity = 0, state = 'ENDED', updated_at = ?3
         WHERE account = ?1 AND state = 'ACTIVE' AND snapshot < ?2",
    )?
    .execute(params![account, snapshot, now])?;
    Ok(())
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

    /// Migration 0016: the history's second index is in append order, so a day's
    /// history rows go at the end of their stream's range (not beside each SKU's earlier
    /// rows across the whole index), and the stream's history (status's count, one
    /// resource's rows) is still read through it.
    #[test]
    fn the_history_is_indexed_in_the_order_it_is_appended() {
        let ledger = SqliteLedger::open_in_memory().expect("ledger");
        ledger
            .with_conn(|conn| {
                let indexes: Vec<String> = conn
                    .prepare("SELECT name FROM pragma_index_list('events') ORDER BY name")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                assert_eq!(indexes, ["events_by_account", "events_by_stream"]);
                let columns: Vec<String> = conn
                    .prepare("SELECT name FROM pragma_index_info('events_by_stream') ORDER BY seqno")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                assert_eq!(columns, ["account", "stream", "id"]);
                for query in [
                    "SELECT COUNT(*) FROM events WHERE account = 'a' AND stream = 'active_inventory'",
                    "SELECT * FROM events WHERE account = 'a' AND stream = 'active_inventory' AND resource_id = '1/x' ORDER BY id",
                ] {
                    let plan: Vec<String> = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {query}"))?
                        .query_map([], |row| row.get(3))?
                        .collect::<Result<_, _>>()?;
                    assert!(
                        plan.iter().any(|step| step.contains("events_by_stream")),
                        "{query}: {plan:?}"
                    );
                }
                Ok::<(), rusqlite::Error>(())
            })
            .expect("index");
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

    type Spec = (&'static str, &'static str, u64, &'static str);
    /// A history row: (resource, field, before, after, observed at).
    type EventRow = (String, String, Option<String>, Option<String>, i64);

    /// The table and the history (sorted) after applying `snapshots` one by one with
    /// `apply_one`, and what each apply reported.
    fn outcome(
        apply_one: &dyn Fn(&mut Connection, &[Spec], i64) -> SnapshotApplied,
        snapshots: &[Vec<Spec>],
    ) -> (Vec<StoredSku>, Vec<EventRow>, Vec<SnapshotApplied>) {
        let ledger = SqliteLedger::open_in_memory().expect("ledger");
        ledger.with_conn(|conn| {
            let reports = snapshots
                .iter()
                .enumerate()
                .map(|(index, specs)| apply_one(conn, specs, 10 * (index as i64 + 1)))
                .collect();
            let mut events: Vec<_> = conn
                .prepare("SELECT resource_id, field, before, after, observed_at FROM events WHERE account = 'a'")
                .expect("prepare")
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("events");
            events.sort();
            (inventory_of(conn, "a").expect("inventory"), events, reports)
        })
    }

    fn rows_of(specs: &[Spec]) -> Vec<Result<InventoryRow, String>> {
        specs
            .iter()
            .map(|(item, sku, quantity, price)| row(item, sku, *quantity, price))
            .collect()
    }

    /// A sorted report is applied as a merge, any other by lookup (a merge that meets a
    /// row out of order gives up and reads the source again): all three leave the same
    /// table and the same history, and report the same counts.
    #[test]
    fn a_merge_and_a_lookup_apply_snapshots_alike() {
        let snapshots: Vec<Vec<Spec>> = vec![
            vec![
                ("1", "A", 5, "9.99"),
                ("1", "B", 2, "1.00"),
                ("2", "", 1, "3.00"),
                ("3", "X", 4, "2.00"),
            ],
            // 1/A's quantity and 1/B's price change, 2 ends, 3/X is unchanged, 4 is new
            // and listed twice (the first is kept).
            vec![
                ("1", "A", 4, "9.99"),
                ("1", "B", 2, "1.50"),
                ("3", "X", 4, "2.00"),
                ("4", "", 7, "1.00"),
                ("4", "", 9, "1.00"),
            ],
            // 1/A ends, 2 is back, 3/X sells out; the last SKU of the table (4) stays.
            vec![
                ("1", "B", 2, "1.50"),
                ("2", "", 1, "3.00"),
                ("3", "X", 0, "2.00"),
                ("4", "", 7, "1.00"),
            ],
            // Everything ends.
            vec![],
        ];
        let lookup = outcome(
            &|conn, specs, now| apply(conn, rows_of(specs), now).expect("lookup"),
            &snapshots,
        );
        let opened = std::cell::Cell::new(0);
        let merge = outcome(
            &|conn, specs, now| {
                apply_snapshot_from(
                    conn,
                    "a",
                    "active_inventory",
                    WriteFence::Unfenced,
                    || {
                        opened.set(opened.get() + 1);
                        Ok::<_, String>(rows_of(specs))
                    },
                    now,
                    now,
                    &|| {},
                )
                .expect("merge")
            },
            &snapshots,
        );
        assert_eq!(
            opened.get(),
            snapshots.len(),
            "a sorted source is read once"
        );
        opened.set(0);
        let unsorted = outcome(
            &|conn, specs, now| {
                apply_snapshot_from(
                    conn,
                    "a",
                    "active_inventory",
                    WriteFence::Unfenced,
                    || {
                        opened.set(opened.get() + 1);
                        let mut rows = rows_of(specs);
                        rows.reverse();
                        Ok::<_, String>(rows)
                    },
                    now,
                    now,
                    &|| {},
                )
                .expect("unsorted")
            },
            &snapshots,
        );
        // Reversed, the first three snapshots are out of order (read twice); the empty
        // one is not.
        assert_eq!(opened.get(), 2 * 3 + 1);
        assert_eq!(merge.0, lookup.0);
        assert_eq!(merge.1, lookup.1);
        assert_eq!(merge.2, lookup.2);
        // A reversed duplicate keeps the other row (the first one read): only the
        // history of 4 differs, so compare everything else.
        let not_four = |events: &Vec<EventRow>| {
            events
                .iter()
                .filter(|event| event.0 != "4")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(not_four(&unsorted.1), not_four(&lookup.1));
        assert_eq!(
            unsorted
                .2
                .iter()
                .map(|applied| applied.ended)
                .collect::<Vec<_>>(),
            lookup
                .2
                .iter()
                .map(|applied| applied.ended)
                .collect::<Vec<_>>()
        );
        let second = lookup.2[1];
        assert_eq!(
            (
                second.inserted,
                second.updated,
                second.unchanged,
                second.duplicates,
                second.ended
            ),
            (1, 2, 1, 1, 1)
        );
        let third = lookup.2[2];
        assert_eq!((third.updated, third.ended, third.unchanged), (2, 1, 2));
        assert_eq!(lookup.2[3].ended, 4);
        assert!(lookup
            .0
            .iter()
            .all(|sku| sku.state == STATE_ENDED && sku.quantity == 0));
        // 2 came back: ENDED -> ACTIVE and 0 -> 1 are in its history.
        assert!(lookup.1.iter().any(|event| event.0 == "2"
            && event.1 == FIELD_STATE
            && event.3.as_deref() == Some(STATE_ACTIVE)));
    }

    /// Changed SKUs are written [`INSERT_ROWS`] to a statement, beside new ones and ended
    /// ones: over snapshots of several hundred SKUs (groups of changed rows that cross
    /// statement boundaries, interleaved with new, unchanged and ended SKUs) a merge
    /// leaves the table and the history a lookup leaves, and keeps each SKU's first
    /// sighting.
    #[test]
    fn a_merge_writes_groups_of_changed_skus_as_a_lookup_does() {
        let count = INSERT_ROWS * 5 + 3;
        let items: Vec<String> = (0..count)
            .map(|index| format!("{}", 1000 + index))
            .collect();
        let prices = ["1.00", "2.50", "9.99"];
        // Day d: SKU i listed unless i % 7 == d (ended, back the next day); its quantity
        // moves on every third SKU, its price on every fifth.
        let owned: Vec<Vec<(String, u64, String)>> = (0..4)
            .map(|d: usize| {
                items
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| index % 7 != d)
                    .map(|(index, item)| {
                        let quantity = if index.is_multiple_of(3) {
                            (index + d) as u64
                        } else {
                            1
                        };
                        let price = if index.is_multiple_of(5) {
                            prices[d % 3]
                        } else {
                            "1.00"
                        };
                        (item.clone(), quantity, price.to_string())
                    })
                    .collect()
            })
            .collect();
        let rows_of_day = |d: usize| -> Vec<Result<InventoryRow, String>> {
            owned[d]
                .iter()
                .map(|(item, quantity, price)| {
                    Ok(InventoryRow {
                        item_id: item.clone(),
                        sku: String::new(),
                        quantity: *quantity,
                        price: Some(price.clone()),
                        currency: Some("USD".to_string()),
                    })
                })
                .collect()
        };
        let run = |merge: bool| {
            let ledger = SqliteLedger::open_in_memory().expect("ledger");
            ledger.with_conn(|conn| {
                let mut reports = Vec::new();
                for d in 0..4 {
                    let now = 10 * (d as i64 + 1);
                    let applied = if merge {
                        apply_snapshot_from(
                            conn,
                            "a",
                            "active_inventory",
                            WriteFence::Unfenced,
                            || Ok::<_, String>(rows_of_day(d)),
                            now,
                            now,
                            &|| {},
                        )
                    } else {
                        apply(conn, rows_of_day(d), now)
                    };
                    reports.push(applied.expect("applied"));
                }
                let mut events: Vec<EventRow> = conn
                    .prepare("SELECT resource_id, field, before, after, observed_at FROM events")
                    .expect("prepare")
                    .query_map([], |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    })
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("events");
                events.sort();
                let first_seen: Vec<(String, i64)> = conn
                    .prepare("SELECT item_id, first_seen_at FROM ebay_inventory ORDER BY item_id")
                    .expect("prepare")
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("first seen");
                (
                    inventory_of(conn, "a").expect("inventory"),
                    events,
                    reports,
                    first_seen,
                )
            })
        };
        let merge = run(true);
        let lookup = run(false);
        assert_eq!(merge.0, lookup.0);
        assert_eq!(merge.1, lookup.1);
        assert_eq!(merge.2, lookup.2);
        // More changed SKUs than one statement holds, on every day after the first.
        assert!(merge.2[1..]
            .iter()
            .all(|applied| applied.updated > INSERT_ROWS as u64));
        // Every SKU was first seen on the first day but those not listed that day
        // (index % 7 == 0), first listed on the second.
        assert!(merge.3.iter().all(|(item, seen)| {
            let index: usize = item.parse::<usize>().expect("item") - 1000;
            *seen == if index.is_multiple_of(7) { 20 } else { 10 }
        }));
        assert_eq!(merge.3, lookup.3);
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
