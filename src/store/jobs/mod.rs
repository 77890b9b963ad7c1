//! The queue's SQLite tables (migration 0004): `jobs`, `market_prices`, `keepa_products`
//! and `job_runs`; the StockX and Alias catalog caches (migrations 0008 and 0014, `catalog.rs`). Every function takes the [`SqliteLedger`] and runs synchronously:
//! callers on async threads go through `spawn_blocking`.
//!
//! - Enqueue merges into the live (pending or running) job of the same dedupe key and
//!   keeps the higher priority; a key whose last job finished gets a new pending job
//!   (the finished row stays as history).
//! - Claim takes, in one `BEGIN IMMEDIATE` transaction, the highest-priority due pending
//!   jobs of a provider (oldest first within a priority), up to `batch`, all of the head's
//!   priority, and marks them running under a lease.
//! - Rescue moves running jobs whose lease expired back to pending (their worker died;
//!   seed 002 did this by hand after 10 minutes).
//! - Results and job states are written in one transaction that checks the lease fence.

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::store::{LedgerError, SqliteLedger};

/// Providers whose keys live in this queue (`ebay`: Browse API market prices).
pub const JOB_PROVIDERS: &[&str] = &["stockx", "keepa", "alias", "ebay"];

/// The largest Alias size accepted: Alias takes US sizes as numbers (`size` is a double
/// in its pricing insights), and no shoe or apparel size comes near this.
const MAX_ALIAS_SIZE: f64 = 100.0;

/// Longest accepted SKU / ASIN.
const MAX_KEY_CHARS: usize = 64;

/// Why a queue operation failed. `Invalid` is the caller's input (answer 400 / exit 2
/// with the message); the rest is the database.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<rusqlite::Error> for JobError {
    fn from(err: rusqlite::Error) -> JobError {
        JobError::Ledger(LedgerError::Sqlite(err))
    }
}

/// Seed 002's priorities. Higher is claimed first and asks the TokenManager at the
/// matching [`crate::quota::Priority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobPriority {
    /// 100: history backfill, stale refreshes.
    Background,
    /// 150: fresh deals, items just added.
    Hot,
    /// 200: a person pressed refresh.
    Manual,
}

impl JobPriority {
    pub fn value(self) -> i64 {
        match self {
            JobPriority::Background => 100,
            JobPriority::Hot => 150,
            JobPriority::Manual => 200,
        }
    }

    /// The level a stored value stands for (values between levels round down).
    pub fn from_value(value: i64) -> JobPriority {
        if value >= 200 {
            JobPriority::Manual
        } else if value >= 150 {
            JobPriority::Hot
        } else {
            JobPriority::Background
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobPriority::Background => "background",
            JobPriority::Hot => "hot",
            JobPriority::Manual => "manual",
        }
    }

    /// The TokenManager priority a job of this level asks with.
    pub fn quota(self) -> crate::domain::Priority {
        match self {
            JobPriority::Background => crate::domain::Priority::Background,
            JobPriority::Hot => crate::domain::Priority::Hot,
            JobPriority::Manual => crate::domain::Priority::Manual,
        }
    }
}

impl fmt::Display for JobPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobPriority {
    type Err = String;

    fn from_str(text: &str) -> Result<JobPriority, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "manual" | "200" => Ok(JobPriority::Manual),
            "hot" | "150" => Ok(JobPriority::Hot),
            "background" | "100" => Ok(JobPriority::Background),
            _ => Err(format!(
                "unknown priority {text:?}; expected manual, hot or background"
            )),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be claimed once `not_before` has passed.
    Pending,
    /// Claimed by a drainer under a lease.
    Running,
    Succeeded,
    /// Out of attempts (5xx, timeouts, incomplete data); `jobs reset-failed` re-queues.
    Failed,
    /// The provider does not know the key (404, Keepa's invalid product). Terminal.
    NotFound,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::NotFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::NotFound => "not_found",
        }
    }

    /// Pending or running: the key is still being worked.
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Pending | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(text: &str) -> Result<JobState, String> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown job state {text:?}; expected one of pending, running, succeeded, failed, not_found"
                )
            })
    }
}

/// A lookup to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// `stockx`, `keepa`, `alias` or `ebay`.
    pub provider: String,
    /// StockX/Alias style id (e.g. `DD1391-100`), Keepa ASIN, eBay GTIN or keywords.
    pub sku: String,
    /// StockX and Alias size (required); eBay's is optional; Keepa has none.
    pub size: Option<String>,
    pub priority: JobPriority,
    /// Who asked: `deal`, `backfill`, `cli`, `api`, ...
    pub source: String,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EnqueueOutcome {
    /// A new pending job.
    Created { id: i64 },
    /// Merged into the live job `id`, which now has `priority` (the higher of both).
    Merged { id: i64, priority: JobPriority },
}

impl EnqueueOutcome {
    pub fn id(&self) -> i64 {
        match self {
            EnqueueOutcome::Created { id } | EnqueueOutcome::Merged { id, .. } => *id,
        }
    }
}

/// One row of `jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub provider: String,
    pub sku: String,
    pub size: Option<String>,
    pub dedupe_key: String,
    pub priority: i64,
    pub state: JobState,
    pub attempts: i64,
    pub error: Option<String>,
    pub not_before: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub source: String,
}

impl Job {
    pub fn level(&self) -> JobPriority {
        JobPriority::from_value(self.priority)
    }
}

/// The dedupe key: `provider|sku|size` (`keepa|ASIN`).
pub fn dedupe_key(provider: &str, sku: &str, size: Option<&str>) -> String {
    match size {
        Some(size) => format!("{provider}|{sku}|{size}"),
        None => format!("{provider}|{sku}"),
    }
}

/// Checks and normalises a new job: known provider, a sane key, a size for StockX and
/// none for Keepa. ASINs are upper-cased.
pub fn validate(job: &NewJob) -> Result<NewJob, JobError> {
    let provider = job.provider.trim().to_ascii_lowercase();
    if !JOB_PROVIDERS.contains(&provider.as_str()) {
        return Err(JobError::Invalid(format!(
            "unknown job provider {:?}; expected one of {}",
            job.provider,
            JOB_PROVIDERS.join(", ")
        )));
    }
    let check = |what: &str, value: &str| -> Result<String, JobError> {
        let value = value.trim();
        let ok = !value.is_empty()
            && value.chars().count() <= MAX_KEY_CHARS
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/ ".contains(c));
        if ok {
            Ok(value.to_string())
        } else {
            Err(JobError::Invalid(format!(
                "invalid {what} {value:?}: use 1 to {MAX_KEY_CHARS} letters, digits, '-', '_', '.', ':', '/' or spaces"
            )))
        }
    };
    let mut sku = check(if provider == "keepa" { "asin" } else { "sku" }, &job.sku)?;
    let size = match (&provider[..], &job.size) {
        ("keepa", Some(_)) => {
            return Err(JobError::Invalid(
                "keepa jobs are keyed by ASIN alone; drop --size".to_string(),
            ))
        }
        ("keepa", None) => {
            sku = sku.to_ascii_uppercase();
            None
        }
        ("alias", Some(size)) => Some(alias_size(&check("size", size)?)?),
        (_, Some(size)) => Some(check("size", size)?),
        // eBay market prices: a GTIN or keywords, the size optional (docs/jobs.md).
        ("ebay", None) => None,
        (_, None) => {
            return Err(JobError::Invalid(format!(
                "{provider} market data is per size; give one with --size (e.g. --size 10)"
            )))
        }
    };
    let source = job.source.trim();
    let source = if source.is_empty() { "api" } else { source };
    Ok(NewJob {
        provider,
        sku,
        size,
        priority: job.priority,
        source: source.to_string(),
    })
}

/// An Alias size as the key stores it: a positive number in its shortest form (`10`,
/// `10.5`), so `10.0` and `10` are one key.
fn alias_size(size: &str) -> Result<String, JobError> {
    match size.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 && value <= MAX_ALIAS_SIZE => {
            Ok(format!("{value}"))
        }
        _ => Err(JobError::Invalid(format!(
            "invalid alias size {size:?}: Alias prices US sizes given as numbers; use e.g. --size 10 or --size 10.5"
        ))),
    }
}

const JOB_COLUMNS: &str =
    "id, provider, sku, size, dedupe_key, priority, state, attempts, error, not_before, \
     lease_owner, lease_until, created_at, updated_at, finished_at, source";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let state: String = row.get(6)?;
    let state = state.parse::<JobState>().map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, err.into())
    })?;
    Ok(Job {
        id: row.get(0)?,
        provider: row.get(1)?,
        sku: row.get(2)?,
        size: row.get(3)?,
        dedupe_key: row.get(4)?,
        priority: row.get(5)?,
        state,
        attempts: row.get(7)?,
        error: row.get(8)?,
        not_before: row.get(9)?,
        lease_owner: row.get(10)?,
        lease_until: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
        finished_at: row.get(14)?,
        source: row.get(15)?,
    })
}

/// Queues a lookup, or merges it into the live job of the same key (keeping the higher
/// priority; a pending job waiting for a retry keeps its `not_before`). A key whose last
/// job finished (succeeded, failed, not_found) gets a new pending job.
pub fn enqueue(ledger: &SqliteLedger, job: &NewJob) -> Result<EnqueueOutcome, JobError> {
    enqueue_at(ledger, job, crate::domain::now_ts())
}

/// [`enqueue`] at `now`.
pub fn enqueue_at(
    ledger: &SqliteLedger,
    job: &NewJob,
    now: i64,
) -> Result<EnqueueOutcome, JobError> {
    let job = validate(job)?;
    let key = dedupe_key(&job.provider, &job.sku, job.size.as_deref());
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let live: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, priority FROM jobs WHERE dedupe_key = ?1 AND state IN ('pending', 'running')",
            )?
            .query_row(params![key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let outcome = match live {
            Some((id, priority)) => {
                let merged = priority.max(job.priority.value());
                tx.prepare_cached("UPDATE jobs SET priority = ?1, updated_at = ?2 WHERE id = ?3")?
                    .execute(params![merged, now, id])?;
                EnqueueOutcome::Merged {
                    id,
                    priority: JobPriority::from_value(merged),
                }
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO jobs (provider, sku, size, dedupe_key, priority, state, attempts, not_before, created_at, updated_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, ?7)",
                )?
                .execute(params![
                    job.provider,
                    job.sku,
                    job.size,
                    key,
                    job.priority.value(),
                    now,
                    job.source
                ])?;
                EnqueueOutcome::Created {
                    id: tx.last_insert_rowid(),
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    })
}

/// Jobs in `state` (all states when `None`), newest first, at most `limit`.
pub fn list_jobs(
    ledger: &SqliteLedger,
    state: Option<JobState>,
    limit: usize,
) -> Result<Vec<Job>, JobError> {
    let limit = sql_limit(limit);
    match state {
        Some(state) => select(
            ledger,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY updated_at DESC, id DESC LIMIT ?2"
            ),
            params![state.as_str(), limit],
            job_from_row,
        ),
        None => select(
            ledger,
            &format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY updated_at DESC, id DESC LIMIT ?1"),
            params![limit],
            job_from_row,
        ),
    }
}

/// The rows `sql` selects with `params`, each read by `read`: the listings' one path.
fn select<T, P: rusqlite::Params>(
    ledger: &SqliteLedger,
    sql: &str,
    params: P,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, JobError> {
    ledger.with_read_conn(|conn| {
        Ok(conn
            .prepare_cached(sql)?
            .query_map(params, read)?
            .collect::<Result<Vec<_>, _>>()?)
    })
}

/// A caller's row limit as SQLite's integer.
fn sql_limit(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

/// One job by id.
pub fn get_job(ledger: &SqliteLedger, id: i64) -> Result<Option<Job>, JobError> {
    ledger.with_read_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row(params![id], job_from_row)
            .optional()?)
    })
}

/// Moves failed jobs (of `provider`, or all) back to pending with their attempts reset.
/// A failed job whose key has a live job already is left alone (the live one covers it).
/// Returns how many were re-queued.
pub fn reset_failed(ledger: &SqliteLedger, provider: Option<&str>) -> Result<usize, JobError> {
    if let Some(provider) = provider {
        if !JOB_PROVIDERS.contains(&provider) {
            return Err(JobError::Invalid(format!(
                "unknown job provider {provider:?}; expected one of {}",
                JOB_PROVIDERS.join(", ")
            )));
        }
    }
    let now = crate::domain::now_ts();
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let reset = tx
            .prepare_cached(
                "UPDATE jobs SET state = 'pending', attempts = 0, not_before = ?1, updated_at = ?1,
                        finished_at = NULL, lease_owner = NULL, lease_until = NULL
                 WHERE id IN (
                     SELECT f.id FROM jobs f
                     WHERE f.state = 'failed' AND (?2 IS NULL OR f.provider = ?2)
                       AND NOT EXISTS (SELECT 1 FROM jobs l WHERE l.dedupe_key = f.dedupe_key AND l.state IN ('pending', 'running'))
                       AND f.id = (SELECT MAX(g.id) FROM jobs g WHERE g.dedupe_key = f.dedupe_key AND g.state = 'failed'))",
            )?
            .execute(params![now, provider])?;
        tx.commit()?;
        Ok(reset)
    })
}

/// Job counts per (provider, state), for status and metrics.
pub fn queue_depth(ledger: &SqliteLedger) -> Result<Vec<(String, String, i64)>, JobError> {
    select(
        ledger,
        "SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state ORDER BY provider, state",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
}

/// One provider's queue as status, doctor and `sync --once` read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderQueue {
    /// Jobs by state (`pending`, `running`, `succeeded`, `failed`, `not_found`).
    pub depth: std::collections::BTreeMap<String, i64>,
    /// The newest failed job: its dedupe key and error.
    pub last_failure: Option<(String, String)>,
    /// The earliest `not_before` of the pending jobs: due since then.
    pub pending_due_since: Option<i64>,
    /// The newest claim or finish of a job of the provider.
    pub last_activity: Option<i64>,
    /// Jobs running, or pending and due at the time asked.
    pub due_now: i64,
}

impl ProviderQueue {
    /// Jobs in `state`.
    pub fn count(&self, state: &str) -> i64 {
        self.depth.get(state).copied().unwrap_or(0)
    }
}

/// The queue of `provider` at `now`, on a connection the caller holds (status and
/// doctor read it alongside their other facts).
pub fn provider_queue(
    conn: &rusqlite::Connection,
    provider: &str,
    now: i64,
) -> Result<ProviderQueue, rusqlite::Error> {
    let mut queue = ProviderQueue::default();
    let mut statement =
        conn.prepare_cached("SELECT state, COUNT(*) FROM jobs WHERE provider = ?1 GROUP BY state")?;
    let rows = statement.query_map(params![provider], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (state, count) = row?;
        queue.depth.insert(state, count);
    }
    queue.last_failure = conn
        .prepare_cached(
            "SELECT dedupe_key, COALESCE(error, 'no error recorded') FROM jobs
             WHERE provider = ?1 AND state = 'failed' ORDER BY updated_at DESC, id DESC LIMIT 1",
        )?
        .query_row(params![provider], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    (queue.pending_due_since, queue.last_activity, queue.due_now) = conn
        .prepare_cached(
            "SELECT MIN(CASE WHEN state = 'pending' THEN not_before END),
                    MAX(CASE WHEN state <> 'pending' THEN updated_at END),
                    COALESCE(SUM(CASE WHEN state = 'running'
                                       OR (state = 'pending' AND not_before <= ?2) THEN 1 END), 0)
             FROM jobs WHERE provider = ?1",
        )?
        .query_row(params![provider, now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    Ok(queue)
}

mod catalog;
mod results;
mod work;

#[cfg(test)]
mod tests;

pub use catalog::*;
pub use results::*;
pub use work::*;
