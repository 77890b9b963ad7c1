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

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use rusqlite_migration::{Migrations, M};

use super::{
    Applied, Claim, Cooldown, HourState, LedgerError, LedgerStore, Priority, RowFeed,
    StreamSnapshot,
};
use crate::domain::ClaimOrder;
use crate::domain::{HourWindow, HOUR};

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_ledger.sql"),
    include_str!("../../migrations/0002_supervision.sql"),
    include_str!("../../migrations/0003_cursors.sql"),
    include_str!("../../migrations/0004_jobs.sql"),
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
}

impl SqliteLedger {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|err| LedgerError::Open {
                    path: path.display().to_string(),
                    message: format!("cannot create its directory: {err}"),
                })?;
            }
        }
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
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 16 MiB of page cache (negative = KiB): the claim path touches the partial
        // index and the primary key of hot scopes; misses there dominate claim cost.
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
        // Two processes opening a new file at once (the daemon and `status`) may both try
        // to migrate; the loser fails on "already exists" and, retried, finds it done.
        let mut attempt = 0;
        loop {
            match migrations.to_latest(&mut conn) {
                Ok(()) => break,
                Err(_) if attempt < 3 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50 * attempt));
                }
                Err(err) => return Err(LedgerError::Migration(err.to_string())),
            }
        }
        Ok(SqliteLedger {
            conn: Mutex::new(conn),
            path: None,
            readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
            next_reader: AtomicUsize::new(0),
        })
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

/// A read-only connection on the ledger's file (the writer already migrated it).
fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
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
/// records a newer one. Writes without a fence (tools, tests) are not checked.
pub(crate) fn check_fence(
    tx: &Transaction<'_>,
    account: &str,
    stream: &str,
    fence: Option<u64>,
    now: i64,
) -> Result<(), LedgerError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let newest: Option<i64> = tx
        .prepare_cached("SELECT fence FROM scope_fences WHERE account = ?1 AND stream = ?2")?
        .query_row(params![account, stream], |row| row.get(0))
        .optional()?;
    match newest {
        Some(newest) if newest as u64 > fence => Err(LedgerError::StaleFence {
            account: account.to_string(),
            stream: stream.to_string(),
            fence,
            newest: newest as u64,
        }),
        Some(newest) if newest as u64 == fence => Ok(()),
        _ => {
            tx.prepare_cached(
                "INSERT INTO scope_fences (account, stream, fence, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, stream) DO UPDATE SET fence = excluded.fence, updated_at = excluded.updated_at",
            )?
            .execute(params![account, stream, fence as i64, now])?;
            Ok(())
        }
    }
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

impl LedgerStore for SqliteLedger {
    fn seed(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        now: i64,
    ) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut inserted = 0u64;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO ledger_hours (account, stream, hour_utc, state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'MISSING', ?4, ?4)",
                )?;
                let mut hour = window.start;
                while hour < window.end {
                    inserted += insert.execute(params![account, stream, hour, now])? as u64;
                    hour += HOUR;
                }
            }
            tx.commit()?;
            Ok(inserted)
        })
    }

    fn claim(
        &self,
        account: &str,
        stream: &str,
        max_hours: i64,
        order: ClaimOrder,
        owner: &str,
        fence: Option<u64>,
        now: i64,
    ) -> Result<Option<Claim>, LedgerError> {
        let max_hours = max_hours.max(1);
        let fence_value = fence.map(|fence| fence as i64);
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, account, stream, fence, now)?;
            let direction = match order {
                ClaimOrder::NewestFirst => "DESC",
                ClaimOrder::OldestFirst => "ASC",
            };
            let first: Option<(i64, i64)> = tx
                .prepare_cached(&format!(
                    "SELECT hour_utc, priority FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE}
                         ORDER BY priority DESC, hour_utc {direction} LIMIT 1"
                ))?
                .query_row(params![account, stream, now], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let Some((first, priority)) = first else {
                return Ok(None);
            };
            // The contiguous run from `first` towards older (newest first) or newer hours.
            let (low, high) = match order {
                ClaimOrder::NewestFirst => (first - (max_hours - 1) * HOUR, first),
                ClaimOrder::OldestFirst => (first, first + (max_hours - 1) * HOUR),
            };
            let candidates: Vec<i64> = tx
                .prepare_cached(&format!(
                    "SELECT hour_utc FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE}
                     AND hour_utc BETWEEN ?4 AND ?5 ORDER BY hour_utc {direction}"
                ))?
                .query_map(params![account, stream, now, low, high], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut run_end = first;
            for hour in candidates.iter().skip(1) {
                let next = match order {
                    ClaimOrder::NewestFirst => run_end - HOUR,
                    ClaimOrder::OldestFirst => run_end + HOUR,
                };
                if *hour != next {
                    break;
                }
                run_end = next;
            }
            let window = HourWindow::new(first.min(run_end), first.max(run_end) + HOUR);
            tx.prepare_cached(
                "INSERT INTO ledger_claims (account, stream, start_hour, end_hour, claimed_by, fence, claimed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![account, stream, window.start, window.end, owner, fence_value, now])?;
            let claim_id = tx.last_insert_rowid();
            let sources = placeholders(&HourState::sources_of(HourState::Requested));
            let attempts: Vec<i64> = tx
                .prepare_cached(&format!(
                    "UPDATE ledger_hours SET state = 'REQUESTED', claim_id = ?6, claimed_by = ?7, fence = ?8, updated_at = ?3,
                        report_id = NULL, report_document_id = NULL, document_path = NULL
                     WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE} AND hour_utc >= ?4 AND hour_utc < ?5
                       AND state IN ({sources})
                     RETURNING attempts"
                ))?
                .query_map(
                    params![account, stream, now, window.start, window.end, claim_id, owner, fence_value],
                    |row| row.get(0),
                )?
                .collect::<Result<_, _>>()?;
            if attempts.len() as i64 != window.hours() {
                return Err(LedgerError::IllegalTransition {
                    account: account.to_string(),
                    stream: stream.to_string(),
                    claim_id,
                    detail: format!(
                        "claimed {} of {} hours of {window}",
                        attempts.len(),
                        window.hours()
                    ),
                });
            }
            tx.commit()?;
            Ok(Some(Claim {
                claim_id,
                account: account.to_string(),
                stream: stream.to_string(),
                window,
                state: HourState::Requested,
                report_id: None,
                report_document_id: None,
                document_path: None,
                attempts: attempts.into_iter().max().unwrap_or(0),
                fence,
                priority: Priority::from_value(priority),
            }))
        })
    }

    fn in_flight(&self, account: &str, stream: &str) -> Result<Vec<Claim>, LedgerError> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT claim_id, MIN(hour_utc), MAX(hour_utc), MAX(state), MAX(report_id),
                        MAX(report_document_id), MAX(document_path), MAX(attempts), MAX(priority)
                 FROM ledger_hours
                 WHERE account = ?1 AND stream = ?2 AND state IN ('REQUESTED', 'DOWNLOADED')
                 GROUP BY claim_id ORDER BY MIN(hour_utc) DESC",
            )?;
            let rows = statement.query_map(params![account, stream], |row| {
                let state: String = row.get(3)?;
                Ok(Claim {
                    claim_id: row.get(0)?,
                    account: account.to_string(),
                    stream: stream.to_string(),
                    window: HourWindow::new(row.get(1)?, row.get::<_, i64>(2)? + HOUR),
                    // MAX over the strings: 'REQUESTED' > 'DOWNLOADED', so a mixed claim
                    // (impossible through this API) would resume from the earlier step.
                    state: HourState::parse(&state).unwrap_or(HourState::Requested),
                    report_id: row.get(4)?,
                    report_document_id: row.get(5)?,
                    document_path: row.get(6)?,
                    attempts: row.get(7)?,
                    fence: None,
                    priority: Priority::from_value(row.get(8)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn set_report_id(&self, claim: &Claim, report_id: &str, now: i64) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, now)?;
            let changed = tx
                .prepare_cached(
                    "UPDATE ledger_hours SET report_id = ?1, updated_at = ?2
                     WHERE account = ?3 AND stream = ?4 AND claim_id = ?5 AND state = 'REQUESTED'",
                )?
                .execute(params![
                    report_id,
                    now,
                    claim.account,
                    claim.stream,
                    claim.claim_id
                ])?;
            if changed as i64 != claim.window.hours() {
                return Err(LedgerError::IllegalTransition {
                    account: claim.account.clone(),
                    stream: claim.stream.clone(),
                    claim_id: claim.claim_id,
                    detail: format!(
                        "report id for {} hours, {changed} are REQUESTED",
                        claim.window.hours()
                    ),
                });
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn mark_downloaded(
        &self,
        claim: &Claim,
        report_document_id: &str,
        document_path: &str,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, now)?;
            transition_claim(
                &tx,
                claim,
                HourState::Downloaded,
                ", report_document_id = ?5, document_path = ?6",
                &[&report_document_id, &document_path],
                now,
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn apply_sales(
        &self,
        claim: &Claim,
        feed: RowFeed<'_>,
        now: i64,
    ) -> Result<Applied, LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, now)?;
            tx.prepare_cached(
                "DELETE FROM vendor_realtime_sales WHERE account = ?1 AND hour_utc >= ?2 AND hour_utc < ?3",
            )?
            .execute(params![claim.account, claim.window.start, claim.window.end])?;
            let summary = {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (account, hour_utc, asin) DO UPDATE SET
                        ordered_units = excluded.ordered_units,
                        ordered_revenue = excluded.ordered_revenue,
                        report_id = excluded.report_id,
                        updated_at = excluded.updated_at",
                )?;
                // A write failure is the store's, not the document's: keep it aside so it
                // is reported as such, and stop the parse with a placeholder error.
                let mut store_error: Option<rusqlite::Error> = None;
                let mut sink = |row: crate::domain::SalesRow| {
                    upsert
                        .execute(params![
                            claim.account,
                            row.hour_utc,
                            row.asin,
                            row.ordered_units,
                            row.ordered_revenue,
                            claim.report_id,
                            now
                        ])
                        .map(|_| ())
                        .map_err(|err| {
                            store_error = Some(err);
                            crate::report::ReportError::Io(std::io::Error::other("store write failed"))
                        })
                };
                // On error the transaction is dropped, which rolls everything back.
                let fed = feed(&mut sink);
                if let Some(err) = store_error {
                    return Err(LedgerError::Sqlite(err));
                }
                fed?
            };
            let hours = transition_claim(
                &tx,
                claim,
                HourState::Applied,
                ", applied_at = ?1, last_error = NULL, next_retry_at = NULL, priority = 100",
                &[],
                now,
            )?;
            finish_claim(&tx, claim, "applied", now)?;
            tx.commit()?;
            Ok(Applied {
                hours: hours as i64,
                summary,
            })
        })
    }

    fn fail(
        &self,
        claim: &Claim,
        error: &str,
        next_retry_at: i64,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, now)?;
            transition_claim(
                &tx,
                claim,
                HourState::Failed,
                ", attempts = attempts + 1, last_error = ?5, next_retry_at = ?6",
                &[&error, &next_retry_at],
                now,
            )?;
            finish_claim(&tx, claim, "failed", now)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn release(&self, claim: &Claim, reason: &str, now: i64) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, now)?;
            transition_claim(
                &tx,
                claim,
                HourState::Missing,
                ", claim_id = NULL, report_id = NULL, report_document_id = NULL, document_path = NULL",
                &[],
                now,
            )?;
            finish_claim(&tx, claim, reason, now)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn reset_window(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut total = 0u64;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO ledger_hours (account, stream, hour_utc, state, priority, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'MISSING', ?4, ?5, ?5)",
                )?;
                let mut hour = window.start;
                while hour < window.end {
                    total += insert.execute(params![account, stream, hour, priority as i64, now])? as u64;
                    hour += HOUR;
                }
            }
            // Only finished hours are reset: work in flight keeps its report handle.
            let sources: Vec<HourState> = HourState::sources_of(HourState::Missing)
                .into_iter()
                .filter(|state| matches!(state, HourState::Applied | HourState::Failed))
                .collect();
            total += tx.execute(
                &format!(
                    "UPDATE ledger_hours SET state = 'MISSING', priority = ?5, attempts = 0, next_retry_at = NULL,
                        claim_id = NULL, updated_at = ?6
                     WHERE account = ?1 AND stream = ?2 AND hour_utc >= ?3 AND hour_utc < ?4
                       AND state IN ({})",
                    placeholders(&sources)
                ),
                params![account, stream, window.start, window.end, priority as i64, now],
            )? as u64;
            tx.commit()?;
            Ok(total)
        })
    }

    fn prune(&self, account: &str, stream: &str, before: i64) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            Ok(conn.execute(
                "DELETE FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND hour_utc < ?3 AND state = 'APPLIED'",
                params![account, stream, before],
            )? as u64)
        })
    }

    fn set_cooldown(&self, cooldown: &Cooldown) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO cooldowns (scope, reason, started_at, until_at, detail) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scope) DO UPDATE SET reason = excluded.reason, started_at = excluded.started_at,
                    until_at = MAX(cooldowns.until_at, excluded.until_at), detail = excluded.detail",
                params![
                    cooldown.scope,
                    cooldown.reason,
                    cooldown.started_at,
                    cooldown.until_at,
                    cooldown.detail
                ],
            )?;
            Ok(())
        })
    }

    fn active_cooldown(&self, scope: &str, now: i64) -> Result<Option<Cooldown>, LedgerError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT scope, reason, started_at, until_at, detail FROM cooldowns WHERE scope = ?1 AND until_at > ?2",
                    params![scope, now],
                    |row| {
                        Ok(Cooldown {
                            scope: row.get(0)?,
                            reason: row.get(1)?,
                            started_at: row.get(2)?,
                            until_at: row.get(3)?,
                            detail: row.get(4)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn clear_cooldown(&self, scope: &str) -> Result<bool, LedgerError> {
        self.with_conn(|conn| {
            Ok(conn.execute("DELETE FROM cooldowns WHERE scope = ?1", params![scope])? > 0)
        })
    }

    fn last_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
    ) -> Result<Option<i64>, LedgerError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT last_run_at FROM audits WHERE account = ?1 AND stream = ?2 AND kind = ?3",
                    params![account, stream, kind],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }

    fn record_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
        at: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO audits (account, stream, kind, last_run_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, stream, kind) DO UPDATE SET last_run_at = excluded.last_run_at",
                params![account, stream, kind, at],
            )?;
            Ok(())
        })
    }

    fn snapshot(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<StreamSnapshot, LedgerError> {
        self.with_read_conn(|conn| {
            let mut snapshot = StreamSnapshot {
                account: account.to_string(),
                stream: stream.to_string(),
                ..StreamSnapshot::default()
            };
            let mut counts = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM ledger_hours WHERE account = ?1 AND stream = ?2 GROUP BY state",
            )?;
            let rows = counts.query_map(params![account, stream], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (state, count) = row?;
                if let Some(index) = HourState::parse(&state)
                    .and_then(|state| HourState::ALL.iter().position(|s| *s == state))
                {
                    snapshot.counts[index] = count as u64;
                }
            }
            snapshot.last_applied_hour = conn.query_row(
                "SELECT MAX(hour_utc) FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'APPLIED'",
                params![account, stream],
                |row| row.get(0),
            )?;
            snapshot.next_claimable_hour = conn
                .query_row(
                    &format!(
                        "SELECT hour_utc FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE}
                         ORDER BY priority DESC, hour_utc DESC LIMIT 1"
                    ),
                    params![account, stream, now],
                    |row| row.get(0),
                )
                .optional()?;
            snapshot.next_retry_at = conn.query_row(
                "SELECT MIN(next_retry_at) FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'",
                params![account, stream],
                |row| row.get(0),
            )?;
            snapshot.last_error = conn
                .query_row(
                    "SELECT last_error FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'
                     ORDER BY updated_at DESC LIMIT 1",
                    params![account, stream],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            Ok(snapshot)
        })
    }
}

/// What `doctor` needs to know about a stream's hours beyond the state counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourDiagnostics {
    /// Ledger rows of the stream.
    pub rows: u64,
    /// The oldest update of an hour in flight (REQUESTED or DOWNLOADED).
    pub in_flight_since: Option<i64>,
    /// The report id of the oldest hour in flight.
    pub in_flight_report: Option<String>,
    /// Hours claimable now (MISSING, or FAILED whose retry time passed).
    pub claimable_now: u64,
    /// The oldest update among them.
    pub claimable_since: Option<i64>,
    /// FAILED hours, their highest attempt count and their range.
    pub failed: u64,
    pub max_attempts: i64,
    pub oldest_failed_hour: i64,
    pub newest_failed_hour: i64,
    /// The newest FAILED hour's error when it names an authentication failure.
    pub auth_error: Option<String>,
    /// (claimed_at, claimed_by) of the stream's newest claim.
    pub last_claim: Option<(i64, String)>,
}

impl SqliteLedger {
    /// The facts behind a windowed stream's verdict (see [`HourDiagnostics`]).
    pub fn hour_diagnostics(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<HourDiagnostics, LedgerError> {
        self.with_read_conn(|conn| {
            type Aggregate = (
                i64,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            );
            let aggregate: Aggregate = conn.query_row(
                "SELECT COUNT(*),
                        MIN(CASE WHEN state IN ('REQUESTED', 'DOWNLOADED') THEN updated_at END),
                        SUM(CASE WHEN state = 'MISSING' OR (state = 'FAILED' AND next_retry_at <= ?3) THEN 1 ELSE 0 END),
                        MIN(CASE WHEN state = 'MISSING' OR (state = 'FAILED' AND next_retry_at <= ?3) THEN updated_at END),
                        SUM(CASE WHEN state = 'FAILED' THEN 1 ELSE 0 END),
                        MAX(CASE WHEN state = 'FAILED' THEN attempts END),
                        MIN(CASE WHEN state = 'FAILED' THEN hour_utc END),
                        MAX(CASE WHEN state = 'FAILED' THEN hour_utc END)
                 FROM ledger_hours WHERE account = ?1 AND stream = ?2",
                params![account, stream, now],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ))
                },
            )?;
            let (rows, in_flight_since, claimable, claimable_since, failed, max_attempts, oldest, newest) =
                aggregate;
            let in_flight_report: Option<String> = if in_flight_since.is_some() {
                conn.query_row(
                    "SELECT report_id FROM ledger_hours
                     WHERE account = ?1 AND stream = ?2 AND state IN ('REQUESTED', 'DOWNLOADED')
                     ORDER BY updated_at LIMIT 1",
                    params![account, stream],
                    |row| row.get(0),
                )
                .optional()?
                .flatten()
            } else {
                None
            };
            let last_claim: Option<(i64, String)> = conn
                .query_row(
                    "SELECT claimed_at, claimed_by FROM ledger_claims
                     WHERE account = ?1 AND stream = ?2 ORDER BY id DESC LIMIT 1",
                    params![account, stream],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let failed = u64::try_from(failed.unwrap_or(0)).unwrap_or(0);
            let auth_error: Option<String> = if failed > 0 {
                conn.query_row(
                    "SELECT last_error FROM ledger_hours
                     WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'
                       AND lower(last_error) LIKE '%authentication%'
                     ORDER BY updated_at DESC LIMIT 1",
                    params![account, stream],
                    |row| row.get(0),
                )
                .optional()?
                .flatten()
            } else {
                None
            };
            Ok(HourDiagnostics {
                rows: u64::try_from(rows).unwrap_or(0),
                in_flight_since,
                in_flight_report,
                claimable_now: u64::try_from(claimable.unwrap_or(0)).unwrap_or(0),
                claimable_since,
                failed,
                max_attempts: max_attempts.unwrap_or(0),
                oldest_failed_hour: oldest.unwrap_or(0),
                newest_failed_hour: newest.unwrap_or(0),
                auth_error,
                last_claim,
            })
        })
    }
}

/// One FAILED hour, as `GET /api/failures` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedHour {
    pub account: String,
    pub stream: String,
    pub hour_utc: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_retry_at: Option<i64>,
    /// When the hour failed (its last update).
    pub updated_at: i64,
}

impl SqliteLedger {
    /// The `limit` most recently failed hours, newest first.
    pub fn recent_failures(&self, limit: i64) -> Result<Vec<FailedHour>, LedgerError> {
        self.with_read_conn(|conn| {
            // The first term lets SQLite use the partial claimable index.
            let mut statement = conn.prepare_cached(
                "SELECT account, stream, hour_utc, attempts, last_error, next_retry_at, updated_at
                 FROM ledger_hours
                 WHERE state IN ('MISSING', 'FAILED') AND state = 'FAILED'
                 ORDER BY updated_at DESC, hour_utc DESC LIMIT ?1",
            )?;
            let rows = statement
                .query_map(params![limit], |row| {
                    Ok(FailedHour {
                        account: row.get(0)?,
                        stream: row.get(1)?,
                        hour_utc: row.get(2)?,
                        attempts: row.get(3)?,
                        last_error: row.get(4)?,
                        next_retry_at: row.get(5)?,
                        updated_at: row.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Every FAILED hour of a stream back to MISSING at `priority` with fresh attempts;
    /// returns how many.
    pub fn reset_failed(
        &self,
        account: &str,
        stream: &str,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let reset = conn.execute(
                "UPDATE ledger_hours SET state = 'MISSING', priority = ?3, attempts = 0,
                     next_retry_at = NULL, claim_id = NULL, updated_at = ?4
                 WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'",
                params![account, stream, priority as i64, now],
            )?;
            Ok(reset as u64)
        })
    }

    /// Deletes finished claims older than `before` from the claim history; returns how many.
    pub fn prune_claims(&self, before: i64) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let pruned = conn.execute(
                "DELETE FROM ledger_claims WHERE finished_at IS NOT NULL AND finished_at < ?1",
                params![before],
            )?;
            Ok(pruned as u64)
        })
    }
}

/// Running cooldowns in the SQLite file, by scope.
pub fn ledger_cooldowns(ledger: &SqliteLedger, now: i64) -> Result<Vec<Cooldown>, LedgerError> {
    ledger.with_read_conn(|conn| {
        let mut statement = conn.prepare_cached(
            "SELECT scope, reason, started_at, until_at, detail FROM cooldowns
             WHERE until_at > ?1 ORDER BY scope",
        )?;
        let rows = statement.query_map([now], |row| {
            Ok(Cooldown {
                scope: row.get(0)?,
                reason: row.get(1)?,
                started_at: row.get(2)?,
                until_at: row.get(3)?,
                detail: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SalesRow;
    use crate::report::{ReportError, ReportSummary};

    const T0: i64 = 1_700_000_000 / HOUR * HOUR;

    /// Issue 11: readers (status, doctor, dashboard, metrics) no longer queue behind the
    /// writer: with the writer's lock held (a long apply), a snapshot still answers.
    #[test]
    fn reads_do_not_wait_for_the_writer() {
        use std::sync::{mpsc, Arc};
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
        ledger
            .seed("acct", "s", HourWindow::new(T0, T0 + 6 * HOUR), T0)
            .unwrap();
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let writer = {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                ledger.with_conn(|_| {
                    held_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            })
        };
        held_rx.recv().unwrap();
        let (read_tx, read_rx) = mpsc::channel();
        let reader = {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                read_tx
                    .send(ledger.snapshot("acct", "s", T0).map(|s| s.counts))
                    .unwrap()
            })
        };
        let counts = read_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the read answered while the writer was held")
            .unwrap();
        assert_eq!(counts[0], 6, "six MISSING hours");
        release_tx.send(()).unwrap();
        writer.join().unwrap();
        reader.join().unwrap();
    }

    fn ledger_with(hours: i64) -> SqliteLedger {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        ledger
            .seed("a", "s", HourWindow::new(T0, T0 + hours * HOUR), T0)
            .unwrap();
        ledger
    }

    fn claim(ledger: &SqliteLedger, max: i64, order: ClaimOrder) -> Option<Claim> {
        ledger
            .claim("a", "s", max, order, "test:1@host", None, T0)
            .unwrap()
    }

    #[test]
    fn claims_take_contiguous_runs_newest_first() {
        let ledger = ledger_with(10);
        let first = claim(&ledger, 6, ClaimOrder::NewestFirst).unwrap();
        assert_eq!(first.window, HourWindow::new(T0 + 4 * HOUR, T0 + 10 * HOUR));
        let second = claim(&ledger, 6, ClaimOrder::NewestFirst).unwrap();
        assert_eq!(second.window, HourWindow::new(T0, T0 + 4 * HOUR));
        assert!(claim(&ledger, 6, ClaimOrder::NewestFirst).is_none());
    }

    #[test]
    fn a_gap_ends_the_run() {
        let ledger = ledger_with(6);
        // Hour 3 is taken by someone else: the newest-first run is hours 4 and 5 only.
        let middle = HourWindow::new(T0 + 3 * HOUR, T0 + 4 * HOUR);
        ledger.with_conn(|conn| {
            conn.execute(
                "UPDATE ledger_hours SET state = 'APPLIED' WHERE hour_utc = ?1",
                [middle.start],
            )
            .unwrap()
        });
        let run = claim(&ledger, 6, ClaimOrder::NewestFirst).unwrap();
        assert_eq!(run.window, HourWindow::new(T0 + 4 * HOUR, T0 + 6 * HOUR));
        let oldest = claim(&ledger, 6, ClaimOrder::OldestFirst).unwrap();
        assert_eq!(oldest.window, HourWindow::new(T0, T0 + 3 * HOUR));
    }

    #[test]
    fn illegal_transitions_are_refused_and_change_nothing() {
        let ledger = ledger_with(2);
        let unit = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
        ledger
            .apply_sales(&unit, &mut |_sink| Ok(ReportSummary::default()), T0)
            .unwrap();
        // APPLIED may not become DOWNLOADED.
        let err = ledger
            .mark_downloaded(&unit, "doc", "/tmp/doc", T0)
            .unwrap_err();
        assert!(
            matches!(err, LedgerError::IllegalTransition { .. }),
            "{err}"
        );
        let snapshot = ledger.snapshot("a", "s", T0).unwrap();
        assert_eq!(snapshot.counts, [0, 0, 0, 2, 0]);
    }

    #[test]
    fn a_failing_document_writes_nothing() {
        let ledger = ledger_with(2);
        let unit = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
        ledger
            .mark_downloaded(&unit, "doc", "/tmp/doc", T0)
            .unwrap();
        let err = ledger
            .apply_sales(
                &unit,
                &mut |sink| {
                    sink(SalesRow {
                        hour_utc: T0,
                        asin: "B000000001".to_string(),
                        ordered_units: 3,
                        ordered_revenue: 9.0,
                    })?;
                    Err(ReportError::Truncated("cut short".to_string()))
                },
                T0,
            )
            .unwrap_err();
        assert!(matches!(err, LedgerError::Document(_)), "{err}");
        let rows: i64 = ledger.with_conn(|conn| {
            conn.query_row("SELECT COUNT(*) FROM vendor_realtime_sales", [], |row| {
                row.get(0)
            })
            .unwrap()
        });
        assert_eq!(rows, 0);
        assert_eq!(
            ledger.snapshot("a", "s", T0).unwrap().counts[2],
            2,
            "still DOWNLOADED"
        );
    }

    #[test]
    fn failed_hours_wait_for_their_retry_time() {
        let ledger = ledger_with(1);
        let unit = claim(&ledger, 1, ClaimOrder::NewestFirst).unwrap();
        ledger.fail(&unit, "boom", T0 + 60, T0).unwrap();
        assert!(claim(&ledger, 1, ClaimOrder::NewestFirst).is_none());
        let later = ledger
            .claim(
                "a",
                "s",
                1,
                ClaimOrder::NewestFirst,
                "test:1@host",
                None,
                T0 + 60,
            )
            .unwrap()
            .unwrap();
        assert_eq!(later.attempts, 1);
    }

    #[test]
    fn reset_leaves_work_in_flight_alone() {
        let ledger = ledger_with(4);
        let unit = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
        let rest = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
        ledger
            .apply_sales(&rest, &mut |_sink| Ok(ReportSummary::default()), T0)
            .unwrap();
        let reset = ledger
            .reset_window(
                "a",
                "s",
                HourWindow::new(T0, T0 + 4 * HOUR),
                Priority::Manual,
                T0,
            )
            .unwrap();
        assert_eq!(reset, 2, "only the two APPLIED hours");
        assert_eq!(
            ledger.in_flight("a", "s").unwrap()[0].claim_id,
            unit.claim_id
        );
    }

    #[test]
    fn a_stale_owners_late_write_is_refused_by_fencing() {
        let ledger = ledger_with(12);
        // Owner A claims under fence 1, then its lease is taken over by B (fence 2).
        let old = ledger
            .claim(
                "a",
                "s",
                6,
                ClaimOrder::NewestFirst,
                "auto-sync:1@a",
                Some(1),
                T0,
            )
            .unwrap()
            .unwrap();
        let new = ledger
            .claim(
                "a",
                "s",
                6,
                ClaimOrder::NewestFirst,
                "auto-sync:2@b",
                Some(2),
                T0,
            )
            .unwrap()
            .unwrap();
        // A wakes up and tries to write: refused, and nothing changes.
        for result in [
            ledger.set_report_id(&old, "late", T0),
            ledger.fail(&old, "late", T0 + 60, T0),
            ledger.release(&old, "late", T0),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    LedgerError::StaleFence {
                        fence: 1,
                        newest: 2,
                        ..
                    }
                ),
                "{err}"
            );
        }
        let err = ledger
            .claim(
                "a",
                "s",
                6,
                ClaimOrder::NewestFirst,
                "auto-sync:1@a",
                Some(1),
                T0,
            )
            .unwrap_err();
        assert!(matches!(err, LedgerError::StaleFence { .. }), "{err}");
        assert_eq!(
            ledger.snapshot("a", "s", T0).unwrap().counts[1],
            12,
            "all REQUESTED"
        );
        // B's writes go through.
        ledger.set_report_id(&new, "report", T0).unwrap();
        // Another scope is not affected by this scope's fence.
        ledger
            .seed("b", "s", HourWindow::new(T0, T0 + HOUR), T0)
            .unwrap();
        assert!(ledger
            .claim(
                "b",
                "s",
                1,
                ClaimOrder::NewestFirst,
                "auto-sync:1@a",
                Some(1),
                T0
            )
            .unwrap()
            .is_some());
    }

    #[test]
    fn cooldowns_persist_and_clear() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let cooldown = Cooldown {
            scope: "amazon:a".to_string(),
            reason: "quota".to_string(),
            started_at: T0,
            until_at: T0 + 1800,
            detail: None,
        };
        ledger.set_cooldown(&cooldown).unwrap();
        assert_eq!(
            ledger.active_cooldown("amazon:a", T0 + 10).unwrap(),
            Some(cooldown)
        );
        assert_eq!(ledger.active_cooldown("amazon:a", T0 + 1800).unwrap(), None);
        assert!(ledger.clear_cooldown("amazon:a").unwrap());
        assert!(!ledger.clear_cooldown("amazon:a").unwrap());
    }
}
