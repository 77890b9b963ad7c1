//! WAL checkpoints off the writer's path.
//!
//! In WAL mode every commit appends the pages it changed to the `-wal` file, and a
//! checkpoint copies them back into the database file (two `fsync`s with
//! `synchronous = NORMAL`). By default SQLite runs that checkpoint inside the commit that
//! takes the WAL past 1,000 pages, on the committing connection: here the one writer,
//! under its lock, so every write of every account queued behind the copy and its syncs.
//! With a thousand accounts writing small transactions at once, that was a checkpoint
//! every few dozen commits, and a fifth of the writer's time (`bench reports --scenario
//! head-of-line-1000`, writer lock held 1.12 s with checkpoints in the commits against
//! 0.87 s without).
//!
//! The daemon runs the `wal-checkpoint` root service instead (`app::wal_checkpoint`):
//! it calls [`SqliteLedger::defer_checkpoints`] once, which moves the writer's own
//! threshold to [`BACKSTOP_WAL_PAGES`], then [`SqliteLedger::checkpoint`] every
//! [`CHECKPOINT_EVERY`] on a connection of its own. A `PASSIVE` checkpoint never waits
//! for the writer or a reader and never blocks them: it copies what no reader still
//! needs, and the writer starts the WAL over once all of it is copied. The backstop keeps
//! the WAL bounded when the service is down (restarting, or its budget spent): the writer
//! then checkpoints by itself as before, only less often. Durability is SQLite's
//! `synchronous = NORMAL` either way: a commit is durable once checkpointed or synced
//! with the WAL, and a power cut loses at most the last commits, never the file.
//!
//! Processes without the service (the CLI, benches, tests) keep SQLite's default.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{LedgerError, SqliteLedger, BUSY_TIMEOUT};

/// The writer's own checkpoint threshold once checkpoints are deferred: 64 MiB of WAL at
/// SQLite's 4 KiB pages.
pub const BACKSTOP_WAL_PAGES: i64 = 16_384;
/// How often the `wal-checkpoint` service checkpoints.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// What one checkpoint did (SQLite's `wal_checkpoint` row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalCheckpoint {
    /// Pages in the WAL when it ran.
    pub wal_pages: u64,
    /// Of those, pages now in the database file.
    pub checkpointed: u64,
}

impl SqliteLedger {
    /// Hands WAL checkpoints to a caller of [`SqliteLedger::checkpoint`]: the writer
    /// checkpoints by itself only past [`BACKSTOP_WAL_PAGES`]. A no-op in memory.
    pub fn defer_checkpoints(&self) -> Result<(), LedgerError> {
        if self.path.is_none() {
            return Ok(());
        }
        self.with_conn(|conn| {
            conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_WAL_PAGES)?;
            Ok(())
        })
    }

    /// Copies the WAL back into the database file as far as no reader needs it
    /// (`PASSIVE`: waits for nobody, blocks nobody), on a connection of its own. A no-op
    /// in memory.
    pub fn checkpoint(&self) -> Result<WalCheckpoint, LedgerError> {
        let Some(path) = &self.path else {
            return Ok(WalCheckpoint::default());
        };
        let mut slot = self
            .checkpointer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match &mut *slot {
            Some(conn) => conn,
            empty => empty.insert(open_checkpointer(path)?),
        };
        // (busy, pages in the WAL, pages checkpointed); -1 when not in WAL mode.
        let (_busy, wal_pages, checkpointed): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .inspect_err(|_| {
                // Opened again at the next call: an error may have left it unusable.
                *slot = None;
            })?;
        Ok(WalCheckpoint {
            wal_pages: u64::try_from(wal_pages).unwrap_or(0),
            checkpointed: u64::try_from(checkpointed).unwrap_or(0),
        })
    }
}

/// A read-write connection for checkpoints only (a read-only one may not write the
/// database file).
fn open_checkpointer(path: &std::path::Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| LedgerError::Open {
        path: path.display().to_string(),
        message: err.to_string(),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Its own commits would checkpoint too; it makes none, but say so.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HourWindow, HOUR};
    use crate::store::LedgerStore;

    const T0: i64 = 1_700_000_000 / HOUR * HOUR;

    /// Pages in the `-wal` file (its header and frame headers aside).
    fn wal_pages(path: &std::path::Path) -> u64 {
        let mut wal = path.as_os_str().to_os_string();
        wal.push("-wal");
        std::fs::metadata(std::path::PathBuf::from(wal)).map_or(0, |meta| meta.len() / 4120)
    }

    /// Seeds `streams` new streams of 48 hours, each its own small commit (about seven
    /// pages of WAL each).
    fn write_pages(ledger: &SqliteLedger, from: usize, streams: usize) {
        for stream in from..from + streams {
            ledger
                .seed(
                    &format!("account-{stream:05}"),
                    "s",
                    HourWindow::new(T0, T0 + 48 * HOUR),
                    T0,
                )
                .unwrap();
        }
    }

    /// Deferred, the writer lets the WAL grow past SQLite's 1,000 pages (by default it
    /// would have checkpointed and started it over); a checkpoint then copies all of it.
    #[test]
    fn deferred_checkpoints_leave_the_wal_to_the_checkpoint_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger = SqliteLedger::open(&path).unwrap();
        ledger.defer_checkpoints().unwrap();
        let threshold: i64 = ledger
            .with_conn(|conn| conn.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0)))
            .unwrap();
        assert_eq!(threshold, BACKSTOP_WAL_PAGES);
        write_pages(&ledger, 0, 1_000);
        let grown = wal_pages(&path);
        assert!(
            grown > 1_500 && grown < BACKSTOP_WAL_PAGES as u64,
            "the WAL grew to {grown} pages"
        );
        let done = ledger.checkpoint().unwrap();
        assert!(done.wal_pages > 1_500, "{done:?}");
        assert_eq!(done.checkpointed, done.wal_pages, "no reader held any back");
        // The next commit starts the WAL over: it stops growing.
        write_pages(&ledger, 1_000, 10);
        assert_eq!(wal_pages(&path), grown, "the file is reused from its start");
        let again = ledger.checkpoint().unwrap();
        assert!(
            again.wal_pages > 0 && again.wal_pages < done.wal_pages / 4,
            "only the last commits: {again:?}"
        );
        // Everything is readable through a new connection on the file.
        let reopened = SqliteLedger::open(&path).unwrap();
        assert_eq!(
            reopened.snapshot("account-01009", "s", T0).unwrap().counts[0],
            48
        );
    }

    /// Without deferral the writer keeps SQLite's default: the WAL never gets far past
    /// 1,000 pages.
    #[test]
    fn without_deferral_the_writer_checkpoints_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger = SqliteLedger::open(&path).unwrap();
        write_pages(&ledger, 0, 1_000);
        let pages = wal_pages(&path);
        assert!(pages < 1_300, "the WAL stayed near 1,000 pages: {pages}");
    }

    #[test]
    fn an_in_memory_ledger_has_nothing_to_checkpoint() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        ledger.defer_checkpoints().unwrap();
        assert_eq!(ledger.checkpoint().unwrap(), WalCheckpoint::default());
    }
}
