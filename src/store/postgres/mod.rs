//! The PostgreSQL implementation of [`LedgerStore`] and its supertraits: the hour ledger
//! (hours, claims, cooldowns, audits, sales, scope fences; [`LedgerReads`]), the
//! supervision rows (`supervision`), the eBay cursor streams (cursors, resource tables,
//! events; `cursors`), the `active_inventory` snapshot (per-SKU rows, snapshot counter,
//! Feed task; `inventory`) and the job queue with what it fills (jobs, market prices,
//! Keepa snapshots, run records, the StockX and Alias catalog caches, tracked keys,
//! scheduler passes: `jobs`, `tracked`) in a server database that several daemons on
//! several hosts share. [`TABLES`] lists them; the rest of the daemon's state stays in the
//! SQLite file.
//!
//! - A pool of sync `postgres` connections (`r2d2`): `[store] pool_size` connections,
//!   each opened with `statement_timeout` and `lock_timeout` set and TCP keepalives on,
//!   and a pool checkout deadline, so no call can hang on a dead or locked server.
//! - Migrations from `migrations/postgres/`, applied at open by [`migrate`]: one
//!   transaction per file under a transaction-scoped advisory lock (daemons opening at
//!   once take turns), recorded in `schema_migrations`; a database migrated by a newer
//!   binary is refused.
//! - Claims lock their rows with `FOR UPDATE SKIP LOCKED`: daemons claiming the same
//!   scope (or the same provider's job queue) at once take disjoint runs (jobs); fences
//!   are checked in the transaction of every write, job claims and results included (the fence row is held `FOR SHARE` until commit, so a takeover's newer fence
//!   waits for a write under way and refuses every later one).
//! - Serialization failures and deadlocks are retried a bounded number of times.
//!
//! Methods are blocking, as [`LedgerStore`] says: async callers use `store::blocking`.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use super::ledger::fence_to_check;
use super::{Claim, HourState, LedgerError, StoreDown, WriteFence};

pub mod copy;
pub(crate) mod cursors;
mod export;
mod inventory;
mod jobs;
mod ledger;
mod reads;
pub mod scratch;
mod supervision;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tracked;
pub mod url;

pub use url::{is_postgres_url, redact_url, with_database};

/// The migrations of the PostgreSQL store, in order; a file's number is its version.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_ledger",
        include_str!("../../../migrations/postgres/0001_ledger.sql"),
    ),
    (
        2,
        "0002_supervision",
        include_str!("../../../migrations/postgres/0002_supervision.sql"),
    ),
    (
        3,
        "0003_cursors",
        include_str!("../../../migrations/postgres/0003_cursors.sql"),
    ),
    (
        4,
        "0004_jobs",
        include_str!("../../../migrations/postgres/0004_jobs.sql"),
    ),
    (
        5,
        "0005_inventory",
        include_str!("../../../migrations/postgres/0005_inventory.sql"),
    ),
    (
        6,
        "0006_quota_corrections",
        include_str!("../../../migrations/postgres/0006_quota_corrections.sql"),
    ),
    (
        7,
        "0007_events_by_stream",
        include_str!("../../../migrations/postgres/0007_events_by_stream.sql"),
    ),
];

/// The tables the PostgreSQL store holds (the rest of the daemon's state stays in the
/// SQLite file): what `marketsync store copy` copies, in this order.
pub const TABLES: &[&str] = &[
    "ledger_hours",
    "ledger_claims",
    "cooldowns",
    "audits",
    "vendor_realtime_sales",
    "scope_fences",
    "account_supervision",
    "cursors",
    "ebay_orders",
    "ebay_transactions",
    "ebay_returns",
    "events",
    "ebay_payouts",
    "ebay_offers",
    "ebay_conversations",
    "ebay_cases",
    "ebay_inquiries",
    "ebay_purchases",
    "ebay_inventory",
    "ebay_inventory_snapshots",
    "ebay_feed_tasks",
    "jobs",
    "market_prices",
    "keepa_products",
    "job_runs",
    "stockx_styles",
    "stockx_products",
    "stockx_variants",
    "tracked_items",
    "market_job_runs",
    "alias_catalog",
    "quota_corrections",
];

/// The advisory lock key the migration runner holds (any constant unlikely to clash with
/// an application's own: "msync" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6d_73_79_6e_63;

/// How often a transaction that hit a serialization failure or a deadlock is tried.
const MAX_TRIES: u32 = 5;

/// Settings of the pool and of each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections in the pool (`[store] pool_size`).
    pub pool_size: u32,
    /// The longest a call waits for a pooled connection.
    pub checkout_timeout: Duration,
    /// The longest a new connection takes to be established.
    pub connect_timeout: Duration,
    /// The longest one statement runs (`statement_timeout`).
    pub statement_timeout: Duration,
    /// The longest one statement waits for a lock (`lock_timeout`).
    pub lock_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            pool_size: 16,
            checkout_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(20),
        }
    }
}

/// A PostgreSQL URL as the configuration holds it: shown (`Debug`, `Display`) without
/// its password, so a printed configuration or an error never carries the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Takes `url` when it is a `postgres://` or `postgresql://` URL; the error says why
    /// not (without the password).
    pub fn new(url: &str) -> Result<DatabaseUrl, String> {
        let url = url.trim();
        if !is_postgres_url(url) {
            return Err(format!(
                "{} is not a postgresql url; use a form like postgres://user:password@host:5432/marketsync",
                redact_url(url)
            ));
        }
        if let Err(err) = url.parse::<postgres::Config>() {
            return Err(format!("{} does not parse: {err}", redact_url(url)));
        }
        Ok(DatabaseUrl(url.to_string()))
    }

    /// The URL with its password, for connecting; never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", redact_url(&self.0))
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `[store]` with `url_env` set: the hour ledger lives in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// The environment variable the URL was read from (named in messages).
    pub url_env: String,
    pub url: DatabaseUrl,
    pub pg: PgSettings,
}

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The hour ledger on PostgreSQL.
pub struct PgLedger {
    /// `Some` until dropped (see the `Drop` impl).
    pool: Option<Pool>,
    /// The URL without its password, for messages.
    shown_url: String,
    /// Set when a pool checkout fails, cleared by the next one that succeeds: what
    /// [`LedgerStore::unavailable`] answers.
    down: std::sync::Mutex<Option<StoreDown>>,
}

/// How long [`LedgerStore::unavailable`] tries for a connection when the store is known
/// to be down (a person waits for that answer).
const DOWN_PROBE: Duration = Duration::from_millis(500);

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl PgLedger {
    /// Connects to `url` (`postgres://` or `postgresql://`) and brings the schema up to
    /// date. Fails with [`LedgerError::PgUnavailable`] when the server cannot be reached
    /// within the settings' deadlines and [`LedgerError::SchemaTooNew`] when a newer
    /// binary migrated the database.
    pub fn open(url: &str, settings: &PgSettings) -> Result<PgLedger, LedgerError> {
        let shown_url = redact_url(url);
        if !is_postgres_url(url) {
            return Err(LedgerError::PgUnavailable {
                url: shown_url,
                message: "not a postgres:// or postgresql:// url".to_string(),
            });
        }
        let mut config: postgres::Config =
            url.parse()
                .map_err(|err: postgres::Error| LedgerError::PgUnavailable {
                    url: shown_url.clone(),
                    message: format!("the url does not parse: {err}"),
                })?;
        config
            .connect_timeout(settings.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(settings.statement_timeout)
            .application_name("marketsync")
            .options(&format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
                settings.statement_timeout.as_millis(),
                settings.lock_timeout.as_millis(),
                settings.statement_timeout.as_millis().saturating_mul(2),
            ));
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size.clamp(1, 256))
            .min_idle(Some(0))
            .connection_timeout(settings.checkout_timeout)
            .error_handler(Box::new(QuietErrors))
            .build(manager)
            .map_err(|err| LedgerError::PgUnavailable {
                url: shown_url.clone(),
                message: err.to_string(),
            })?;
        let ledger = PgLedger {
            pool: Some(pool),
            shown_url,
            down: std::sync::Mutex::new(None),
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// The URL this ledger connects to, without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// A pooled connection, or [`LedgerError::PgUnavailable`] after the checkout deadline.
    pub(crate) fn client(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, LedgerError> {
        let Some(pool) = &self.pool else {
            return Err(LedgerError::PgUnavailable {
                url: self.shown_url.clone(),
                message: "the pool is closed".to_string(),
            });
        };
        let checkout = pool.get();
        self.note_checkout(checkout.as_ref().err());
        checkout.map_err(|err| LedgerError::PgUnavailable {
            url: self.shown_url.clone(),
            message: err.to_string(),
        })
    }

    /// Records the outcome of a pool checkout for [`LedgerStore::unavailable`].
    fn note_checkout(&self, error: Option<&r2d2::Error>) {
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match (error, down.is_some()) {
            (None, true) => {
                tracing::info!(url = %self.shown_url, "postgresql is reachable again");
                *down = None;
            }
            (Some(err), false) => {
                tracing::warn!(url = %self.shown_url, error = %err, "postgresql is unreachable; store calls wait and retry");
                *down = Some(StoreDown {
                    since: crate::domain::now_ts(),
                    error: err.to_string(),
                });
            }
            (Some(err), true) => {
                if let Some(state) = down.as_mut() {
                    state.error = err.to_string();
                }
            }
            (None, false) => {}
        }
    }

    /// [`LedgerStore::unavailable`]: when the store is known down, one short checkout
    /// decides whether it still is.
    pub(crate) fn known_down(&self) -> Option<StoreDown> {
        let latched = self
            .down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        latched.as_ref()?;
        let pool = self.pool.as_ref()?;
        let checkout = pool.get_timeout(DOWN_PROBE);
        self.note_checkout(checkout.as_ref().err());
        match checkout {
            Ok(_) => None,
            Err(_) => self
                .down
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }

    /// Runs `work` in a transaction and commits it; retried (from the start, with a new
    /// transaction) up to [`MAX_TRIES`] times when PostgreSQL reports a serialization
    /// failure or a deadlock. Any error rolls the transaction back.
    /// Generic over the error (the ledger's, the job queue's): anything a
    /// [`LedgerError`] converts into that says which of its values is one.
    pub(crate) fn with_tx<T, E>(
        &self,
        mut work: impl FnMut(&mut Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<LedgerError> + From<postgres::Error> + std::fmt::Display + AsLedgerError,
    {
        let mut client = self.client()?;
        let mut tries = 0u32;
        loop {
            tries = tries.saturating_add(1);
            let result = client.transaction().map_err(E::from).and_then(|mut tx| {
                let value = work(&mut tx)?;
                tx.commit()?;
                Ok(value)
            });
            match result {
                Err(err)
                    if err.as_ledger_error().is_some_and(is_retryable) && tries < MAX_TRIES =>
                {
                    tracing::debug!(tries, error = %err, "postgresql transaction retried");
                    std::thread::sleep(Duration::from_millis(5u64 << tries.min(6)));
                }
                other => return other,
            }
        }
    }

    /// Runs `work` outside an explicit transaction (single statements, reads).
    pub(crate) fn with_client<T>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut client = self.client()?;
        work(&mut client)
    }

    /// The schema version of the database (0 when never migrated).
    pub fn schema_version(&self) -> Result<i64, LedgerError> {
        self.with_client(|client| {
            let exists: bool = client
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
                .get(0);
            if !exists {
                return Ok(0);
            }
            Ok(client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )?
                .get(0))
        })
    }

    /// Applies the migrations this binary knows and the database lacks: each file in its
    /// own transaction under [`MIGRATION_LOCK_KEY`], so daemons opening at once take
    /// turns (the second finds the work done). A database with a version above the
    /// newest known is refused.
    fn migrate(&self) -> Result<(), LedgerError> {
        let known = known_schema_version();
        for (version, name, sql) in MIGRATIONS {
            self.with_tx(|tx| {
                tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                        version    BIGINT PRIMARY KEY,
                        name       TEXT   NOT NULL,
                        applied_at BIGINT NOT NULL
                    )",
                )?;
                let current: i64 = tx
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                        &[],
                    )?
                    .get(0);
                if current > known {
                    return Err(LedgerError::SchemaTooNew {
                        url: self.shown_url.clone(),
                        database: current,
                        known,
                    });
                }
                let applied = tx
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[version],
                    )?
                    .is_some();
                if applied {
                    return Ok(());
                }
                tx.batch_execute(sql).map_err(|err| {
                    LedgerError::Migration(format!("postgresql migration {name}: {err}"))
                })?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)
                     VALUES ($1, $2, EXTRACT(EPOCH FROM now())::bigint)",
                    &[version, name],
                )?;
                tracing::info!(version, name, "postgresql migration applied");
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// What `doctor` learns from the database without changing it: its schema version
/// (0 when never migrated) after one connection within `timeout`.
pub fn probe_schema(url: &DatabaseUrl, timeout: Duration) -> Result<i64, LedgerError> {
    let unavailable = |message: String| LedgerError::PgUnavailable {
        url: url.to_string(),
        message,
    };
    let mut config: postgres::Config = url
        .expose()
        .parse()
        .map_err(|err: postgres::Error| unavailable(format!("the url does not parse: {err}")))?;
    config
        .connect_timeout(timeout)
        .tcp_user_timeout(timeout)
        .options(&format!("-c statement_timeout={}", timeout.as_millis()));
    let mut client = config
        .connect(NoTls)
        .map_err(|err| unavailable(err.to_string()))?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )?
        .get(0))
}

/// The newest schema version this binary knows.
pub fn known_schema_version() -> i64 {
    MIGRATIONS.last().map(|migration| migration.0).unwrap_or(0)
}

/// The sync `postgres` client closes a connection with a `block_on` of its own, which
/// panics on a thread that drives async tasks; the last `Arc` of a ledger may well be
/// dropped there (the daemon's shutdown). So the pool, and the connections in it, are
/// dropped on a short-lived thread of their own, joined before `drop` returns.
impl Drop for PgLedger {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closer = std::thread::Builder::new()
                .name("pg-pool-close".to_string())
                .spawn(move || drop(pool));
            match closer {
                Ok(handle) => {
                    let _ = handle.join();
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start a thread to close the postgresql pool");
                }
            }
        }
    }
}

/// r2d2 logs connection errors through the `log` crate by default; they come back to the
/// caller as [`LedgerError::PgUnavailable`] anyway, so the pool keeps quiet.
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::debug!(error = %error, "postgresql connection attempt failed");
    }
}

/// The [`LedgerError`] inside an error a transaction may end with (to tell a retryable
/// one), if it holds one.
pub(crate) trait AsLedgerError {
    fn as_ledger_error(&self) -> Option<&LedgerError>;
}

impl AsLedgerError for LedgerError {
    fn as_ledger_error(&self) -> Option<&LedgerError> {
        Some(self)
    }
}

impl AsLedgerError for crate::store::jobs::JobError {
    fn as_ledger_error(&self) -> Option<&LedgerError> {
        match self {
            crate::store::jobs::JobError::Ledger(err) => Some(err),
            crate::store::jobs::JobError::Invalid(_) => None,
        }
    }
}

/// A serialization failure or a deadlock: the transaction may succeed when run again.
fn is_retryable(err: &LedgerError) -> bool {
    match err {
        LedgerError::Postgres(err) => matches!(
            err.code(),
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        ),
        _ => false,
    }
}

fn placeholders(states: &[HourState]) -> String {
    states
        .iter()
        .map(|state| format!("'{}'", state.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses a write whose fence is older than the newest recorded for the scope and
/// records a newer one, inside the write's transaction `tx`. The fence row stays locked
/// `FOR SHARE` until `tx` ends: writers under the same fence proceed together, and a new
/// owner's newer fence (an update of the row) waits for them, so no write of the old
/// owner commits after the takeover was recorded. Same rules as the SQLite store's
/// `check_fence`: [`WriteFence::Missing`] is refused, [`WriteFence::Unfenced`] skips.
pub(crate) fn check_fence(
    tx: &mut Transaction<'_>,
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
    // At most two rounds: a first writer inserts the row, then reads it locked.
    for _ in 0..2 {
        let newest_opt: Option<i64> = tx
            .query_opt(
                "SELECT fence FROM scope_fences WHERE account = $1 AND stream = $2 FOR SHARE",
                &[&account, &stream],
            )?
            .map(|row| row.get(0));
        match newest_opt {
            Some(newest) if newest > fence_db => {
                return Err(LedgerError::StaleFence {
                    account: account.to_string(),
                    stream: stream.to_string(),
                    fence,
                    newest: u64::try_from(newest).unwrap_or(0),
                })
            }
            Some(newest) if newest == fence_db => return Ok(()),
            Some(_) => {
                // Newer than the record: take the row over (waits for writers under the
                // old fence to finish). The condition keeps a concurrent newer one.
                let changed = tx.execute(
                    "UPDATE scope_fences SET fence = $3, updated_at = $4
                     WHERE account = $1 AND stream = $2 AND fence < $3",
                    &[&account, &stream, &fence_db, &now],
                )?;
                if changed == 1 {
                    return Ok(());
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO scope_fences (account, stream, fence, updated_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account, stream) DO NOTHING",
                    &[&account, &stream, &fence_db, &now],
                )?;
            }
        }
    }
    // A third look decides: whatever is recorded now is locked and final for this tx.
    let newest: i64 = tx
        .query_one(
            "SELECT fence FROM scope_fences WHERE account = $1 AND stream = $2 FOR SHARE",
            &[&account, &stream],
        )?
        .get(0);
    if newest > fence_db {
        return Err(LedgerError::StaleFence {
            account: account.to_string(),
            stream: stream.to_string(),
            fence,
            newest: u64::try_from(newest).unwrap_or(0),
        });
    }
    Ok(())
}

/// Moves every hour of `claim` to `to`, refusing (the caller's transaction rolls back)
/// if any hour is in a state that may not become `to` ([`HourState::sources_of`]). The
/// single gate for claim transitions, as in the SQLite store. `extra_set` uses
/// placeholders from `$5` on, bound from `extra_params`.
pub(crate) fn transition_claim(
    tx: &mut Transaction<'_>,
    claim: &Claim,
    to: HourState,
    extra_set: &str,
    extra_params: &[&(dyn ToSql + Sync)],
    now: i64,
) -> Result<u64, LedgerError> {
    let sources = HourState::sources_of(to);
    let sql = format!(
        "UPDATE ledger_hours SET state = '{to}', updated_at = $1{extra_set}
         WHERE account = $2 AND stream = $3 AND claim_id = $4 AND state IN ({from})",
        to = to.as_str(),
        from = placeholders(&sources),
    );
    let mut bound: Vec<&(dyn ToSql + Sync)> =
        vec![&now, &claim.account, &claim.stream, &claim.claim_id];
    bound.extend_from_slice(extra_params);
    let changed = tx.execute(sql.as_str(), &bound)?;
    let expected = u64::try_from(claim.window.hours()).unwrap_or(0);
    if changed != expected {
        let states: Vec<String> = tx
            .query(
                "SELECT state, COUNT(*) FROM ledger_hours
                 WHERE account = $1 AND stream = $2 AND claim_id = $3 GROUP BY state ORDER BY state",
                &[&claim.account, &claim.stream, &claim.claim_id],
            )?
            .iter()
            .map(|row| format!("{}={}", row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect();
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

fn finish_claim(
    tx: &mut Transaction<'_>,
    claim: &Claim,
    outcome: &str,
    now: i64,
) -> Result<(), LedgerError> {
    tx.execute(
        "UPDATE ledger_claims SET finished_at = $1, outcome = $2 WHERE id = $3",
        &[&now, &outcome, &claim.claim_id],
    )?;
    Ok(())
}

/// Claimable rows: MISSING, or FAILED whose retry time passed (`$3` is now).
const CLAIMABLE: &str =
    "state IN ('MISSING', 'FAILED') AND (state = 'MISSING' OR next_retry_at <= $3)";

#[cfg(test)]
mod tests;
