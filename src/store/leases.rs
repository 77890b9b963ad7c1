//! SQLite leases: the one-host backend, in the same database file as the ledger (or any
//! other file).
//!
//! Tables (created if missing; they do not take part in the ledger's migrations):
//! - `leases (scope TEXT PRIMARY KEY, owner, token, fence, acquired_at_ms,
//!   expires_at_ms)`: the live or expired lease of each scope. An expired row stays until
//!   it is taken over or released.
//! - `lease_fences (scope TEXT PRIMARY KEY, fence INTEGER)`: the highest fence handed out
//!   per scope. Never deleted, so fences only go up even after a release.
//!
//! Semantics match the Redis backend (see [`super`]), with the local clock deciding
//! expiry: every daemon using the file is on this host. Every operation is one
//! `BEGIN IMMEDIATE` transaction, so two processes sharing the file serialize on SQLite's
//! writer lock (WAL mode, 10 s busy timeout). The connection is this backend's own,
//! behind a std `Mutex` that is only taken on the blocking pool (`spawn_blocking`),
//! never across an `.await`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tracing::{debug, warn};

use crate::domain::lease::{
    busy, check_owner, check_scope, format_ms, local_now_ms, new_token, owner_is_dead_local,
    ttl_ms, Lease, LockError, LockInfo, Repair, RepairAction,
};

// Statements of hot paths, prepared once per connection (`prepare_cached`): parsing
// them on every call (rusqlite's `execute`/`query_row`) was a visible share of the
// writer's time with a thousand accounts starting at once (`bench reports --scenario
// head-of-line-1000`).
const SELECT_FENCE: &str = "SELECT fence FROM lease_fences WHERE scope = ?1";
const UPSERT_FENCE: &str = "INSERT INTO lease_fences (scope, fence) VALUES (?1, ?2)
     ON CONFLICT (scope) DO UPDATE SET fence = excluded.fence";
const UPSERT_LEASE: &str = "INSERT OR REPLACE INTO leases
     (scope, owner, token, fence, acquired_at_ms, expires_at_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SET_LEASE_EXPIRY: &str =
    "UPDATE leases SET expires_at_ms = ?1 WHERE scope = ?2 AND token = ?3";

/// How long a writer waits for another process's transaction before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    scope TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token TEXT NOT NULL,
    fence INTEGER NOT NULL,
    acquired_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_fences (
    scope TEXT PRIMARY KEY,
    fence INTEGER NOT NULL
);
";

/// Leases in a SQLite file. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct SqliteLocks {
    /// Why std and not tokio: held only inside blocking calls, never across an await.
    conn: Arc<Mutex<Connection>>,
    /// A read-only connection on the same file for [`Self::list`], opened on first use
    /// (`None` in memory). Why not `conn`: a renewal holds `conn` while it waits for the
    /// file's write lock, which a long apply on the ledger's connection holds for as long
    /// as it writes; a listing behind it waited that long, and `/api/status` with it. In
    /// WAL mode a reader never waits for a writer.
    reader: Option<(std::path::PathBuf, Arc<Mutex<Option<Connection>>>)>,
}

impl SqliteLocks {
    /// Opens (creating if needed) the database file and the lease tables. Blocking: call
    /// it from the blocking pool (or see `LockService::sqlite` in the lock layer).
    pub fn open(path: &Path) -> Result<SqliteLocks, LockError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|err| {
                    LockError::Unavailable(format!(
                        "cannot create the directory of {}: {err}",
                        path.display()
                    ))
                })?;
            }
        }
        let conn = Connection::open(path).map_err(|err| {
            LockError::Unavailable(format!("cannot open {}: {err}", path.display()))
        })?;
        let mut locks = Self::prepare(conn)?;
        locks.reader = Some((path.to_path_buf(), Arc::new(Mutex::new(None))));
        Ok(locks)
    }

    /// Leases in a private in-memory database (one process only).
    pub fn open_in_memory() -> Result<SqliteLocks, LockError> {
        Self::prepare(Connection::open_in_memory().map_err(sqlite_error)?)
    }

    fn prepare(conn: Connection) -> Result<SqliteLocks, LockError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        // An in-memory database answers "memory"; that is fine. Switching the mode does
        // not wait on the busy handler (another process may be opening the file too), so
        // it is retried, and skipped once the file is in WAL mode (the mode persists).
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            let current: Result<String, rusqlite::Error> =
                conn.query_row("PRAGMA journal_mode", [], |row| row.get(0));
            let switched = match current {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") || mode == "memory" => break,
                Ok(_) => conn
                    .query_row("PRAGMA journal_mode = WAL", [], |row| {
                        row.get::<_, String>(0)
                    })
                    .map(|_| ()),
                Err(err) => Err(err),
            };
            match switched {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(failure, _))
                    if matches!(
                        failure.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(sqlite_error(err)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite_error)?;
        conn.execute_batch(SCHEMA).map_err(sqlite_error)?;
        Ok(SqliteLocks {
            conn: Arc::new(Mutex::new(conn)),
            reader: None,
        })
    }

    /// Runs `work` in a `BEGIN IMMEDIATE` transaction on the blocking pool; commits when
    /// it returns `Ok`, rolls back otherwise.
    async fn transaction<T, F>(&self, work: F) -> Result<T, LockError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, LockError> + Send + 'static,
    {
        self.transaction_with(TransactionBehavior::Immediate, work)
            .await
    }

    /// One transaction of `behavior` on the blocking pool.
    async fn transaction_with<T, F>(
        &self,
        behavior: TransactionBehavior,
        work: F,
    ) -> Result<T, LockError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, LockError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        super::blocking(move || {
            // A poisoned lock only means another thread panicked mid-call; SQLite rolled
            // its transaction back, so the connection is fine.
            let mut guard = match conn.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let tx = guard
                .transaction_with_behavior(behavior)
                .map_err(sqlite_error)?;
            let value = work(&tx)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(value)
        })
        .await
        .map_err(|err| LockError::Unavailable(format!("sqlite lock task failed: {err}")))?
    }

    pub async fn acquire(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, LockError> {
        self.acquire_reporting(scope, owner, ttl)
            .await
            .map(|(lease, _)| lease)
    }

    /// [`Self::acquire`], also naming the owner of the expired lease it took over.
    pub async fn acquire_reporting(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(Lease, Option<String>), LockError> {
        self.acquire_above(scope, owner, ttl, 0).await
    }

    /// [`Self::acquire_reporting`] with a fence above `floor` (the ledger's newest fence
    /// for the scope), in the same transaction.
    pub async fn acquire_above(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<(Lease, Option<String>), LockError> {
        check_scope(scope)?;
        check_owner(owner)?;
        let ttl_ms = ttl_ms(ttl, true)?;
        let (scope, owner) = (scope.to_string(), owner.to_string());
        let token = new_token();
        let (lease, replaced) = self
            .transaction(move |tx| {
                let now = local_now_ms();
                let current = load(tx, &scope)?;
                if let Some(current) = &current {
                    if current.expires_at_ms > now {
                        return Err(busy(&scope, &current.owner, Some(current.expires_at_ms)));
                    }
                }
                let counted: Option<i64> = tx
                    .prepare_cached(SELECT_FENCE)
                    .map_err(sqlite_error)?
                    .query_row(params![scope], |row| row.get(0))
                    .optional()
                    .map_err(sqlite_error)?;
                let previous = counted
                    .map(fence_from_db)
                    .transpose()?
                    .unwrap_or(0)
                    .max(current.as_ref().map_or(0, |lease| lease.fence))
                    .max(floor);
                let fence = previous.checked_add(1).ok_or_else(|| {
                    LockError::Invalid(format!(
                        "the fence of {scope} cannot go above {previous}; the scope's fences are corrupt"
                    ))
                })?;
                let lease = Lease {
                    scope: scope.clone(),
                    owner,
                    token,
                    fence,
                    acquired_at_ms: now,
                    expires_at_ms: now.saturating_add(ttl_ms),
                };
                let fence_db = fence_to_db(fence)?;
                tx.prepare_cached(UPSERT_FENCE)
                    .map_err(sqlite_error)?
                    .execute(params![scope, fence_db])
                    .map_err(sqlite_error)?;
                tx.prepare_cached(UPSERT_LEASE)
                    .map_err(sqlite_error)?
                    .execute(params![
                        lease.scope,
                        lease.owner,
                        lease.token,
                        fence_db,
                        lease.acquired_at_ms,
                        lease.expires_at_ms
                    ])
                    .map_err(sqlite_error)?;
                Ok((lease, current.map(|old| old.owner)))
            })
            .await?;
        if let Some(replaced_owner) = &replaced {
            warn!(
                scope = %lease.scope,
                replaced_owner = %replaced_owner,
                fence = lease.fence,
                "took over an expired lease"
            );
        }
        debug!(scope = %lease.scope, owner = %lease.owner, fence = lease.fence, ttl_ms, "acquired lease");
        Ok((lease, replaced))
    }

    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LockError> {
        let ttl_ms = ttl_ms(ttl, true)?;
        let lease = lease.clone();
        self.transaction(move |tx| {
            let now = local_now_ms();
            let lost = |reason: String| LockError::Lost {
                scope: lease.scope.clone(),
                reason,
            };
            let Some(current) = load(tx, &lease.scope)? else {
                return Err(lost("the lease is gone (released)".to_string()));
            };
            if current.token != lease.token {
                return Err(lost(format!("it is now held by {}", current.owner)));
            }
            if current.expires_at_ms <= now {
                return Err(lost(format!(
                    "it expired at {} before it was renewed",
                    format_ms(current.expires_at_ms)
                )));
            }
            let renewed = Lease {
                expires_at_ms: now.saturating_add(ttl_ms),
                ..current
            };
            tx.prepare_cached(SET_LEASE_EXPIRY)
                .map_err(sqlite_error)?
                .execute(params![renewed.expires_at_ms, renewed.scope, renewed.token])
                .map_err(sqlite_error)?;
            Ok(renewed)
        })
        .await
    }

    pub async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let (scope, token) = (lease.scope.clone(), lease.token.clone());
        let released = self
            .transaction(move |tx| {
                let deleted = tx
                    .prepare_cached("DELETE FROM leases WHERE scope = ?1 AND token = ?2")
                    .map_err(sqlite_error)?
                    .execute(params![scope, token])
                    .map_err(sqlite_error)?;
                Ok(deleted > 0)
            })
            .await?;
        debug!(scope = %lease.scope, released, "released lease");
        Ok(released)
    }

    pub async fn list(&self) -> Result<Vec<LockInfo>, LockError> {
        let list = |tx: &Transaction<'_>| -> Result<Vec<LockInfo>, LockError> {
            let now = local_now_ms();
            Ok(load_all(tx)?.iter().map(|lease| info(lease, now)).collect())
        };
        // A read: a deferred transaction takes no write lock, so listing never blocks a
        // writer; on its own connection it never waits for one either (see `reader`).
        let Some((path, reader)) = self.reader.clone() else {
            return self
                .transaction_with(TransactionBehavior::Deferred, list)
                .await;
        };
        super::blocking(move || {
            let mut guard = reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let conn = match guard.as_mut() {
                Some(conn) => conn,
                None => {
                    guard.insert(crate::store::sqlite::open_reader(&path).map_err(sqlite_error)?)
                }
            };
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(sqlite_error)?;
            let listed = list(&tx)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(listed)
        })
        .await
        .map_err(|err| LockError::Unavailable(format!("sqlite lock task failed: {err}")))?
    }

    pub async fn release_scope(
        &self,
        scope: &str,
        force: bool,
    ) -> Result<Option<LockInfo>, LockError> {
        check_scope(scope)?;
        let scope = scope.to_string();
        let released = self
            .transaction(move |tx| {
                let now = local_now_ms();
                let Some(current) = load(tx, &scope)? else {
                    return Ok(None);
                };
                let info = info(&current, now);
                if !info.stale && !force {
                    return Err(busy(&scope, &current.owner, Some(current.expires_at_ms)));
                }
                tx.prepare_cached("DELETE FROM leases WHERE scope = ?1")
                    .map_err(sqlite_error)?
                    .execute(params![scope])
                    .map_err(sqlite_error)?;
                Ok(Some(info))
            })
            .await?;
        if let Some(info) = &released {
            warn!(
                scope = %info.scope,
                owner = %info.owner,
                fence = info.fence,
                stale = info.stale,
                force,
                "released lock by scope"
            );
        }
        Ok(released)
    }

    /// Rows whose expiry is more than `cap` away get `expires_at = now + cap`; rows of
    /// owners provably dead on this host are deleted whatever their expiry.
    pub async fn repair(&self, cap: Duration) -> Result<Vec<Repair>, LockError> {
        let cap_ms = ttl_ms(cap, false)?;
        let repairs = self
            .transaction(move |tx| {
                let now = local_now_ms();
                let mut repairs = Vec::new();
                for lease in load_all(tx)? {
                    let remaining = lease.expires_at_ms.saturating_sub(now);
                    let action = if owner_is_dead_local(&lease.owner) {
                        tx.prepare_cached("DELETE FROM leases WHERE scope = ?1 AND token = ?2")
                            .map_err(sqlite_error)?
                            .execute(params![lease.scope, lease.token])
                            .map_err(sqlite_error)?;
                        RepairAction::Deleted
                    } else if remaining > cap_ms {
                        tx.prepare_cached(SET_LEASE_EXPIRY)
                            .map_err(sqlite_error)?
                            .execute(params![
                                now.saturating_add(cap_ms),
                                lease.scope,
                                lease.token
                            ])
                            .map_err(sqlite_error)?;
                        RepairAction::ExpirySetToCap
                    } else {
                        continue;
                    };
                    repairs.push(Repair {
                        scope: lease.scope,
                        replaced_owner: lease.owner,
                        action,
                        previous_ttl_ms: Some(remaining),
                    });
                }
                Ok(repairs)
            })
            .await?;
        for repair in &repairs {
            warn!(
                scope = %repair.scope,
                replaced_owner = %repair.replaced_owner,
                previous_ttl_ms = repair.previous_ttl_ms,
                action = repair.action.as_str(),
                "repaired lock key"
            );
        }
        Ok(repairs)
    }
}

fn info(lease: &Lease, now: i64) -> LockInfo {
    LockInfo {
        scope: lease.scope.clone(),
        owner: lease.owner.clone(),
        fence: lease.fence,
        expires_at_ms: Some(lease.expires_at_ms),
        remaining_ms: Some(lease.expires_at_ms.saturating_sub(now).max(0)),
        stale: lease.expires_at_ms <= now,
        acquired_at_ms: Some(lease.acquired_at_ms),
    }
}

const SELECT_LEASE: &str =
    "SELECT scope, owner, token, fence, acquired_at_ms, expires_at_ms FROM leases";

type Row = (String, String, String, i64, i64, i64);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn lease_from_row(row: Row) -> Result<Lease, LockError> {
    let (scope, owner, token, fence, acquired_at_ms, expires_at_ms) = row;
    Ok(Lease {
        scope,
        owner,
        token,
        fence: fence_from_db(fence)?,
        acquired_at_ms,
        expires_at_ms,
    })
}

fn load(tx: &Transaction<'_>, scope: &str) -> Result<Option<Lease>, LockError> {
    tx.prepare_cached(&format!("{SELECT_LEASE} WHERE scope = ?1"))
        .map_err(sqlite_error)?
        .query_row(params![scope], read_row)
        .optional()
        .map_err(sqlite_error)?
        .map(lease_from_row)
        .transpose()
}

fn load_all(tx: &Transaction<'_>) -> Result<Vec<Lease>, LockError> {
    let mut statement = tx
        .prepare(&format!("{SELECT_LEASE} ORDER BY scope"))
        .map_err(sqlite_error)?;
    let rows = statement
        .query_map([], read_row)
        .map_err(sqlite_error)?
        .collect::<rusqlite::Result<Vec<Row>>>()
        .map_err(sqlite_error)?;
    rows.into_iter().map(lease_from_row).collect()
}

fn fence_from_db(fence: i64) -> Result<u64, LockError> {
    u64::try_from(fence)
        .map_err(|_| LockError::Invalid(format!("stored lease fence {fence} is negative")))
}

fn fence_to_db(fence: u64) -> Result<i64, LockError> {
    i64::try_from(fence)
        .map_err(|_| LockError::Invalid(format!("lease fence {fence} is out of range")))
}

fn sqlite_error(err: rusqlite::Error) -> LockError {
    LockError::Unavailable(format!("sqlite: {err}"))
}
