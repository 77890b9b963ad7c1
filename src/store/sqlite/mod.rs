//! The SQLite implementation of [`LedgerStore`]: WAL mode, a busy timeout, migrations
//! from `migrations/`, claims under `BEGIN IMMEDIATE`.
//!
//! One writer connection behind a std `Mutex`: SQLite has one writer anyway, every method
//! is short, and callers run it on the blocking pool, so a std lock (never held across an
//! `.await`) is the right tool. Beside it a small pool of read-only connections
//! ([`SqliteLedger::with_read_conn`], opened on first use): in WAL mode a reader sees the
//! last commit and never waits for the writer, so status, doctor, the dashboard and
//! `/metrics` do not queue behind a long apply.

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::{Mutex, MutexGuard, TryLockError};

use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use rusqlite_migration::{Migrations, M};

use super::ledger::fence_to_check;
use super::{
    Applied, Claim, Cooldown, HourState, LedgerError, LedgerStore, Priority, RowFeed,
    StreamSnapshot, WriteFence,
};

use crate::domain::ClaimOrder;

use crate::domain::{HourWindow, HOUR};

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_ledger.sql"),
    include_str!("../../../migrations/0002_supervision.sql"),
    include_str!("../../../migrations/0003_cursors.sql"),
    include_str!("../../../migrations/0004_jobs.sql"),
    include_str!("../../../migrations/0005_ebay_inventory.sql"),
    include_str!("../../../migrations/0006_ebay_streams.sql"),
    include_str!("../../../migrations/0007_ebay_cases.sql"),
    include_str!("../../../migrations/0008_stockx_catalog.sql"),
    include_str!("../../../migrations/0009_market_prices.sql"),
    include_str!("../../../migrations/0010_tracked.sql"),
    include_str!("../../../migrations/0011_ebay_inquiries_purchases.sql"),
    include_str!("../../../migrations/0013_ebay_inventory_merge.sql"),
    include_str!("../../../migrations/0014_alias_catalog.sql"),
    include_str!("../../../migrations/0015_quota_corrections.sql"),
    include_str!("../../../migrations/0016_events_by_stream.sql"),
];

/// How long a writer waits for another process's transaction before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read-only connections beside the writer: enough for the read surfaces (status, doctor,
/// dashboard, metrics) to run at once.
const READERS: usize = 4;

pub struct SqliteLedger {
    /// The writer. Why std and not tokio: held only inside blocking calls, never across
    /// an await.
    conn: Mutex<Connection>,
    /// The database file; `None` for an in-memory ledger (whose reads use the writer).
    path: Option<PathBuf>,
    /// Read-only connections, each opened on first use.
    readers: Vec<Mutex<Option<Connection>>>,
    /// Where the next read starts looking for a free reader.
    next_reader: AtomicUsize,
    /// The connection [`SqliteLedger::checkpoint`] copies the WAL back with, opened on
    /// first use (see `checkpoint.rs`).
    checkpointer: Mutex<Option<Connection>>,
}

impl SqliteLedger {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    /// A new directory is created 0700 and a new file 0600 (SQLite gives its `-wal` and
    /// `-shm` files the database file's mode): sales and orders are nobody else's.
    pub fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                private_dir_builder()
                    .create(parent)
                    .map_err(|err| LedgerError::Open {
                        path: path.display().to_string(),
                        message: format!("cannot create its directory: {err}"),
                    })?;
            }
        }
        create_private_file(path).map_err(|err| LedgerError::Open {
            path: path.display().to_string(),
            message: format!("cannot create the file: {err}"),
        })?;
        let conn = Connection::open(path).map_err(|err| LedgerError::Open {
            path: path.display().to_string(),
            message: err.to_string(),
        })?;
        let mut ledger = Self::prepare(conn)?;
        ledger.path = Some(path.to_path_buf());
        Ok(ledger)
    }

    /// An in-memory ledger, for unit tests and benchmarks of pure ledger logic.
    pub fn open_in_memory() -> Result<SqliteLedger, LedgerError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(mut conn: Connection) -> Result<SqliteLedger, LedgerError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(64);
        // Another process (the daemon and `status`, two CLI commands) may open the file at
        // the same moment: switching the journal mode does not wait on SQLite's busy
        // handler, so it is retried here, and skipped once the file is in WAL mode already
        // (the mode is persistent).
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let mode: Result<String, rusqlite::Error> =
                conn.query_row("PRAGMA journal_mode", [], |row| row.get(0));
            let attempt = match mode {
                // An in-memory database answers "memory" and stays so.
                Ok(mode) if mode.eq_ignore_ascii_case("wal") || mode == "memory" => break,
                Ok(_) => conn
                    .pragma_update(None, "journal_mode", "WAL")
                    .map_err(LedgerError::from),
                Err(err) => Err(LedgerError::from(err)),
            };
            match attempt {
                // Switched: the next look confirms it (and gives up at the deadline).
                Ok(()) if std::time::Instant::now() < deadline => {}
                Ok(()) => break,
                Err(err) if is_busy(&err) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(err),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 16 MiB of page cache (negative = KiB): the claim path touches the partial
        // index and the primary key of hot scopes; misses there dominate claim cost.
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        // Two processes opening a new file at once (the daemon and `status`) may both try
        // to migrate; the loser fails on "already exists" and, retried, finds it done.
        let mut attempt: u64 = 0;
        loop {
            match migrations.to_latest(&mut conn) {
                Ok(()) => break,
                Err(_) if attempt < 3 || std::time::Instant::now() < deadline => {
                    attempt = attempt.saturating_add(1);
                    std::thread::sleep(Duration::from_millis(50 * attempt.min(4)));
                }
                Err(err) => return Err(LedgerError::Migration(err.to_string())),
            }
        }
        Ok(SqliteLedger {
            conn: Mutex::new(conn),
            path: None,
            readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
            next_reader: AtomicUsize::new(0),
            checkpointer: Mutex::new(None),
        })
    }

    /// The database file; `None` for an in-memory ledger.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `work` with the connection. A poisoned lock only means another thread
    /// panicked mid-call; SQLite rolled its transaction back, so the connection is fine.
    pub fn with_conn<T>(&self, work: impl FnOnce(&mut Connection) -> T) -> T {
        let mut guard: MutexGuard<'_, Connection> = match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        work(&mut guard)
    }

    /// Runs read-only `work` on one of the read connections (a free one if any), so it
    /// does not wait for the writer. An in-memory ledger, or a reader that cannot be
    /// opened, reads through the writer instead. A write attempted here fails with
    /// SQLite's "attempt to write a readonly database".
    pub fn with_read_conn<T>(&self, work: impl FnOnce(&Connection) -> T) -> T {
        let Some(path) = &self.path else {
            return self.with_conn(|conn| work(conn));
        };
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let count = self.readers.len();
        let mut slot_opt = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            match self.readers[index].try_lock() {
                Ok(guard) => {
                    slot_opt = Some(guard);
                    break;
                }
                Err(TryLockError::Poisoned(poisoned)) => {
                    slot_opt = Some(poisoned.into_inner());
                    break;
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let mut slot = match slot_opt {
            Some(guard) => guard,
            None => match self.readers[start % count].lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            },
        };
        if slot.is_none() {
            *slot = open_reader(path).ok();
        }
        match slot.as_ref() {
            Some(reader) => work(reader),
            None => {
                drop(slot);
                self.with_conn(|conn| work(conn))
            }
        }
    }
}

/// SQLite's "database is locked" or "database table is locked": another connection holds
/// the lock a statement needs.
fn is_busy(err: &LedgerError) -> bool {
    matches!(
        err,
        LedgerError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
            if matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )
    )
}

/// A `cooldowns` row read as `scope, reason, started_at, until_at, detail`.
fn cooldown_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Cooldown> {
    Ok(Cooldown {
        scope: row.get(0)?,
        reason: row.get(1)?,
        started_at: row.get(2)?,
        until_at: row.get(3)?,
        detail: row.get(4)?,
    })
}

/// A read-only connection on the ledger's file (the writer already migrated it).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    conn.pragma_update(None, "cache_size", -4_096)?;
    Ok(conn)
}

fn placeholders(states: &[HourState]) -> String {
    states
        .iter()
        .map(|state| format!("'{}'", state.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Moves every hour of `claim` to `to`, refusing (with rollback by the caller) if any
/// hour is in a state that may not become `to`. The single gate for claim transitions.
fn transition_claim(
    tx: &Transaction<'_>,
    claim: &Claim,
    to: HourState,
    extra_set: &str,
    extra_params: &[&dyn rusqlite::ToSql],
    now: i64,
) -> Result<usize, LedgerError> {
    let sources = HourState::sources_of(to);
    let sql = format!(
        "UPDATE ledger_hours SET state = '{to}', updated_at = ?1{extra_set}
         WHERE account = ?2 AND stream = ?3 AND claim_id = ?4 AND state IN ({from})",
        to = to.as_str(),
        from = placeholders(&sources),
    );
    let mut bound: Vec<&dyn rusqlite::ToSql> =
        vec![&now, &claim.account, &claim.stream, &claim.claim_id];
    bound.extend_from_slice(extra_params);
    let changed = tx.prepare_cached(&sql)?.execute(bound.as_slice())?;
    let expected = claim.window.hours() as usize;
    if changed != expected {
        let states: Vec<String> = tx
            .prepare(
                "SELECT state, COUNT(*) FROM ledger_hours
                 WHERE account = ?1 AND stream = ?2 AND claim_id = ?3 GROUP BY state",
            )?
            .query_map(
                params![claim.account, claim.stream, claim.claim_id],
                |row| {
                    Ok(format!(
                        "{}={}",
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?
                    ))
                },
            )?
            .collect::<Result<_, _>>()?;
        return Err(LedgerError::IllegalTransition {
            account: claim.account.clone(),
            stream: claim.stream.clone(),
            claim_id: claim.claim_id,
            detail: format!(
                "{changed} of {expected} hours of {} could become {to}; hours of this claim are now [{}]",
                claim.window,
                states.join(", ")
            ),
        });
    }
    Ok(changed)
}

/// Refuses a write whose lease fence is older than the newest seen for the scope, and
/// records a newer one. A write with [`WriteFence::Missing`] is refused outright; only
/// [`WriteFence::Unfenced`] (an operator tool or test that takes no lease, said
/// explicitly) skips the check. `what` names the write in the error.
pub(crate) fn check_fence(
    tx: &Transaction<'_>,
    account: &str,
    stream: &str,
    fence: WriteFence,
    what: &'static str,
    now: i64,
) -> Result<(), LedgerError> {
    let Some(fence_db) = fence_to_check(account, stream, fence, what)? else {
        return Ok(());
    };
    // Non-negative: it came from a u64.
    let fence = fence_db.unsigned_abs();
    let newest: Option<i64> = tx
        .prepare_cached("SELECT fence FROM scope_fences WHERE account = ?1 AND stream = ?2")?
        .query_row(params![account, stream], |row| row.get(0))
        .optional()?;
    match newest {
        Some(newest) if newest > fence_db => Err(LedgerError::StaleFence {
            account: account.to_string(),
            stream: stream.to_string(),
            fence,
            newest: u64::try_from(newest).unwrap_or(0),
        }),
        Some(newest) if newest == fence_db => Ok(()),
        _ => {
            tx.prepare_cached(
                "INSERT INTO scope_fences (account, stream, fence, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, stream) DO UPDATE SET fence = excluded.fence, updated_at = excluded.updated_at",
            )?
            .execute(params![account, stream, fence_db, now])?;
            Ok(())
        }
    }
}

/// The newest fence recorded for the scope (0 when none, or a negative stored value).
pub(crate) fn newest_fence(
    conn: &Connection,
    account: &str,
    stream: &str,
) -> Result<u64, LedgerError> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT fence FROM scope_fences WHERE account = ?1 AND stream = ?2")?
        .query_row(params![account, stream], |row| row.get(0))
        .optional()?;
    Ok(newest
        .and_then(|fence| u64::try_from(fence).ok())
        .unwrap_or(0))
}

fn finish_claim(
    tx: &Transaction<'_>,
    claim: &Claim,
    outcome: &str,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE ledger_claims SET finished_at = ?1, outcome = ?2 WHERE id = ?3")?
        .execute(params![now, outcome, claim.claim_id])?;
    Ok(())
}

const CLAIMABLE: &str =
    "state IN ('MISSING', 'FAILED') AND (state = 'MISSING' OR next_retry_at <= ?3)";

/// A recursive directory builder whose new directories are 0700 (Unix).
fn private_dir_builder() -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// Creates `path` empty with mode 0600 unless it exists (SQLite then opens it as a new
/// database); an existing file is left as it is.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// The daemon's files are private: creates `data_dir` (and `documents/` in it) 0700 and
/// tightens what an older version or the umask left open: the directories to 0700, the
/// database (`marketsync.db`, `-wal`, `-shm`) and downloaded documents to 0600. Each
/// change is logged with the mode it had. Nothing happens on non-Unix systems.
pub fn secure_data_dir(data_dir: &Path) -> Result<(), LedgerError> {
    let fail = |path: &Path, err: std::io::Error| LedgerError::Open {
        path: path.display().to_string(),
        message: format!(
            "cannot secure its permissions: {err}; check the owner of the data directory"
        ),
    };
    let documents = data_dir.join("documents");
    private_dir_builder()
        .create(&documents)
        .map_err(|err| fail(&documents, err))?;
    tighten(data_dir, 0o700).map_err(|err| fail(data_dir, err))?;
    tighten(&documents, 0o700).map_err(|err| fail(&documents, err))?;
    for name in ["marketsync.db", "marketsync.db-wal", "marketsync.db-shm"] {
        let path = data_dir.join(name);
        if path.exists() {
            tighten(&path, 0o600).map_err(|err| fail(&path, err))?;
        }
    }
    let entries = std::fs::read_dir(&documents).map_err(|err| fail(&documents, err))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            tighten(&path, 0o600).map_err(|err| fail(&path, err))?;
        }
    }
    Ok(())
}

/// Removes every permission bit outside `mode` from `path`; logs when it changed any.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    let wanted = current & mode;
    if wanted != current {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
        tracing::warn!(
            path = %path.display(),
            from = %format!("{current:o}"),
            to = %format!("{wanted:o}"),
            "tightened permissions of a data file (it was readable by others)"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

mod checkpoint;
mod ledger;
mod queries;

#[cfg(test)]
mod tests;

pub use checkpoint::{WalCheckpoint, BACKSTOP_WAL_PAGES, CHECKPOINT_EVERY};
pub use queries::{ledger_cooldowns, FailedHour, HourDiagnostics};
