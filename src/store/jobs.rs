//! The queue's SQLite tables (migration 0004): `jobs`, `market_prices`, `keepa_products`
//! and `job_runs`. Every function takes the [`SqliteLedger`] and runs synchronously:
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

use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::store::sqlite::check_fence;
use crate::store::{LedgerError, SqliteLedger};

/// Providers whose keys live in this queue.
pub const JOB_PROVIDERS: &[&str] = &["stockx", "keepa"];

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
    /// `stockx` or `keepa`.
    pub provider: String,
    /// StockX style id (e.g. `DD1391-100`) or Keepa ASIN.
    pub sku: String,
    /// StockX size (required); Keepa has none.
    pub size: Option<String>,
    pub priority: JobPriority,
    /// Who asked: `deal`, `backfill`, `cli`, `api`, ...
    pub source: String,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// One row of `market_prices`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarketPrice {
    pub provider: String,
    pub sku: String,
    /// `None` when the key has no size.
    pub size: Option<String>,
    pub lowest_ask: Option<f64>,
    pub highest_bid: Option<f64>,
    pub last_sale: Option<f64>,
    pub currency: String,
    pub updated_at: i64,
}

/// One row of `keepa_products`: a complete snapshot (history and stats present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeepaProduct {
    pub asin: String,
    pub domain: i64,
    pub title: Option<String>,
    /// Keepa prices are integer cents; -1 means none.
    pub current_amazon: Option<i64>,
    pub current_new: Option<i64>,
    pub sales_rank: Option<i64>,
    pub avg_90_new: Option<i64>,
    /// The one-year average (seed 004's "1yr avg").
    pub avg_365_new: Option<i64>,
    pub history_points: i64,
    /// The product JSON as received.
    pub raw: String,
    pub updated_at: i64,
}

/// One row of `job_runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobRun {
    pub id: i64,
    pub provider: String,
    pub account: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub jobs_run: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub deferred: i64,
    pub not_found: i64,
    pub calls_made: i64,
    pub rescued: i64,
    pub outcome: String,
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
        (_, Some(size)) => Some(check("size", size)?),
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

/// The most recently updated market prices, at most `limit`.
pub fn market_prices(ledger: &SqliteLedger, limit: usize) -> Result<Vec<MarketPrice>, JobError> {
    select(
        ledger,
        "SELECT provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at
         FROM market_prices ORDER BY updated_at DESC, provider, sku, size LIMIT ?1",
        params![sql_limit(limit)],
        |row| {
            let size: String = row.get(2)?;
            Ok(MarketPrice {
                provider: row.get(0)?,
                sku: row.get(1)?,
                size: (!size.is_empty()).then_some(size),
                lowest_ask: row.get(3)?,
                highest_bid: row.get(4)?,
                last_sale: row.get(5)?,
                currency: row.get(6)?,
                updated_at: row.get(7)?,
            })
        },
    )
}

/// The most recently updated Keepa snapshots, at most `limit`.
pub fn keepa_products(ledger: &SqliteLedger, limit: usize) -> Result<Vec<KeepaProduct>, JobError> {
    select(
        ledger,
        "SELECT asin, domain, title, current_amazon, current_new, sales_rank, avg_90_new, avg_365_new,
                history_points, raw, updated_at
         FROM keepa_products ORDER BY updated_at DESC, asin LIMIT ?1",
        params![sql_limit(limit)],
        |row| {
            Ok(KeepaProduct {
                asin: row.get(0)?,
                domain: row.get(1)?,
                title: row.get(2)?,
                current_amazon: row.get(3)?,
                current_new: row.get(4)?,
                sales_rank: row.get(5)?,
                avg_90_new: row.get(6)?,
                avg_365_new: row.get(7)?,
                history_points: row.get(8)?,
                raw: row.get(9)?,
                updated_at: row.get(10)?,
            })
        },
    )
}

/// The latest runs, newest first, at most `limit`.
pub fn recent_runs(ledger: &SqliteLedger, limit: usize) -> Result<Vec<JobRun>, JobError> {
    select(
        ledger,
        "SELECT id, provider, account, started_at, finished_at, jobs_run, succeeded, failed, deferred,
                not_found, calls_made, rescued, outcome
         FROM job_runs ORDER BY id DESC LIMIT ?1",
        params![sql_limit(limit)],
        |row| {
            Ok(JobRun {
                id: row.get(0)?,
                provider: row.get(1)?,
                account: row.get(2)?,
                started_at: row.get(3)?,
                finished_at: row.get(4)?,
                jobs_run: row.get(5)?,
                succeeded: row.get(6)?,
                failed: row.get(7)?,
                deferred: row.get(8)?,
                not_found: row.get(9)?,
                calls_made: row.get(10)?,
                rescued: row.get(11)?,
                outcome: row.get(12)?,
            })
        },
    )
}

// --- the drainer's side ---------------------------------------------------------------

/// Who claims: the account and stream (for the fence) and the lease owner string.
#[derive(Debug, Clone)]
pub struct Claimer<'a> {
    pub provider: &'a str,
    pub account: &'a str,
    pub stream: &'a str,
    pub owner: &'a str,
    pub fence: Option<u64>,
}

/// Running jobs of `provider` whose lease ended by `now` go back to pending (no attempt
/// consumed: the worker died, the job did not fail). Returns (id, previous owner).
pub fn rescue_expired(
    ledger: &SqliteLedger,
    provider: &str,
    now: i64,
) -> Result<Vec<(i64, String)>, JobError> {
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rescued = rescue_in(&tx, provider, now)?;
        tx.commit()?;
        Ok(rescued)
    })
}

fn rescue_in(
    tx: &Transaction<'_>,
    provider: &str,
    now: i64,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let stuck: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT id, COALESCE(lease_owner, '') FROM jobs
             WHERE provider = ?1 AND state = 'running' AND COALESCE(lease_until, 0) <= ?2",
        )?
        .query_map(params![provider, now], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, _) in &stuck {
        tx.prepare_cached(
            "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL, not_before = ?1,
                    updated_at = ?1, error = 'rescued: the lease of its worker expired'
             WHERE id = ?2",
        )?
        .execute(params![now, id])?;
    }
    Ok(stuck)
}

/// Claims up to `batch` due pending jobs of the claimer's provider: the highest priority
/// first, oldest first within it, all of the head's priority (a batch never mixes
/// background keys into a hot request). They become running with a lease until
/// `now + lease_secs`. Empty when nothing is due.
pub fn claim(
    ledger: &SqliteLedger,
    claimer: &Claimer<'_>,
    batch: usize,
    lease_secs: i64,
    now: i64,
) -> Result<Vec<Job>, JobError> {
    let batch = batch.max(1) as i64;
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_fence(&tx, claimer.account, claimer.stream, claimer.fence, now)?;
        let head: Option<i64> = tx
            .prepare_cached(
                "SELECT priority FROM jobs WHERE provider = ?1 AND state = 'pending' AND not_before <= ?2
                 ORDER BY priority DESC, created_at, id LIMIT 1",
            )?
            .query_row(params![claimer.provider, now], |row| row.get(0))
            .optional()?;
        let Some(priority) = head else {
            return Ok(Vec::new());
        };
        let ids: Vec<i64> = tx
            .prepare_cached(
                "SELECT id FROM jobs WHERE provider = ?1 AND state = 'pending' AND not_before <= ?2 AND priority = ?3
                 ORDER BY created_at, id LIMIT ?4",
            )?
            .query_map(params![claimer.provider, now, priority, batch], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let owner = format!("{}/{}", claimer.account, claimer.owner);
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            tx.prepare_cached(
                "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2, updated_at = ?3 WHERE id = ?4",
            )?
            .execute(params![owner, now + lease_secs.max(1), now, id])?;
            let job = tx
                .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
                .query_row(params![id], job_from_row)?;
            jobs.push(job);
        }
        tx.commit()?;
        Ok(jobs)
    })
}

/// What became of one claimed job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    /// Done; its result is written in the same transaction.
    Succeeded(JobResult),
    /// The provider does not know the key.
    NotFound(String),
    /// A failed attempt: back to pending at `retry_at`, or `failed` when it was the last.
    Failed {
        error: String,
        retry_at: i64,
        max_attempts: i64,
    },
    /// Back to pending at `not_before` without consuming an attempt (429, auth, quota
    /// wait, shutdown).
    Deferred { reason: String, not_before: i64 },
}

/// A result row to write.
#[derive(Debug, Clone, PartialEq)]
pub enum JobResult {
    Market {
        lowest_ask: Option<f64>,
        highest_bid: Option<f64>,
        last_sale: Option<f64>,
        currency: String,
    },
    Keepa(Box<KeepaSnapshot>),
}

/// A complete Keepa product, as written to `keepa_products`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaSnapshot {
    pub domain: i64,
    pub title: Option<String>,
    pub current_amazon: Option<i64>,
    pub current_new: Option<i64>,
    pub sales_rank: Option<i64>,
    pub avg_90_new: Option<i64>,
    pub avg_365_new: Option<i64>,
    pub history_points: i64,
    pub raw: String,
}

/// How [`finish`] counted the jobs it wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    pub succeeded: i64,
    /// Attempts that failed (retried later or terminal).
    pub failed: i64,
    /// Of those, jobs now terminally `failed`.
    pub exhausted: i64,
    pub not_found: i64,
    pub deferred: i64,
}

/// Writes the end of every job in `ends` and their results in one transaction under the
/// claimer's fence. Only jobs still running under this claimer's lease are touched (a
/// job rescued meanwhile and claimed by someone else is left to them).
pub fn finish(
    ledger: &SqliteLedger,
    claimer: &Claimer<'_>,
    ends: &[(Job, JobEnd)],
    now: i64,
) -> Result<Finished, JobError> {
    let owner = format!("{}/{}", claimer.account, claimer.owner);
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_fence(&tx, claimer.account, claimer.stream, claimer.fence, now)?;
        let mut counts = Finished::default();
        for (job, end) in ends {
            let ours: Option<i64> = tx
                .prepare_cached(
                    "SELECT attempts FROM jobs WHERE id = ?1 AND state = 'running' AND lease_owner = ?2",
                )?
                .query_row(params![job.id, owner], |row| row.get(0))
                .optional()?;
            let Some(attempts) = ours else {
                continue;
            };
            match end {
                JobEnd::Succeeded(result) => {
                    write_result(&tx, job, result, now)?;
                    terminal(&tx, job.id, "succeeded", None, attempts, now)?;
                    counts.succeeded += 1;
                }
                JobEnd::NotFound(message) => {
                    terminal(&tx, job.id, "not_found", Some(message), attempts, now)?;
                    counts.not_found += 1;
                }
                JobEnd::Failed {
                    error,
                    retry_at,
                    max_attempts,
                } => {
                    counts.failed += 1;
                    let attempts = attempts + 1;
                    if attempts >= *max_attempts {
                        terminal(&tx, job.id, "failed", Some(error), attempts, now)?;
                        counts.exhausted += 1;
                    } else {
                        tx.prepare_cached(
                            "UPDATE jobs SET state = 'pending', attempts = ?1, error = ?2, not_before = ?3,
                                    lease_owner = NULL, lease_until = NULL, updated_at = ?4 WHERE id = ?5",
                        )?
                        .execute(params![attempts, error, retry_at, now, job.id])?;
                    }
                }
                JobEnd::Deferred { reason, not_before } => {
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'pending', error = ?1, not_before = ?2,
                                lease_owner = NULL, lease_until = NULL, updated_at = ?3 WHERE id = ?4",
                    )?
                    .execute(params![reason, not_before, now, job.id])?;
                    counts.deferred += 1;
                }
            }
        }
        tx.commit()?;
        Ok(counts)
    })
}

fn terminal(
    tx: &Transaction<'_>,
    id: i64,
    state: &str,
    error: Option<&String>,
    attempts: i64,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE jobs SET state = ?1, error = ?2, attempts = ?3, lease_owner = NULL, lease_until = NULL,
                updated_at = ?4, finished_at = ?4 WHERE id = ?5",
    )?
    .execute(params![state, error, attempts, now, id])?;
    Ok(())
}

fn write_result(
    tx: &Transaction<'_>,
    job: &Job,
    result: &JobResult,
    now: i64,
) -> rusqlite::Result<()> {
    match result {
        JobResult::Market {
            lowest_ask,
            highest_bid,
            last_sale,
            currency,
        } => {
            tx.prepare_cached(
                "INSERT INTO market_prices (provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at, job_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (provider, sku, size) DO UPDATE SET lowest_ask = excluded.lowest_ask,
                     highest_bid = excluded.highest_bid, last_sale = excluded.last_sale,
                     currency = excluded.currency, updated_at = excluded.updated_at, job_id = excluded.job_id",
            )?
            .execute(params![
                job.provider,
                job.sku,
                job.size.clone().unwrap_or_default(),
                lowest_ask,
                highest_bid,
                last_sale,
                currency,
                now,
                job.id
            ])?;
        }
        JobResult::Keepa(snapshot) => {
            tx.prepare_cached(
                "INSERT INTO keepa_products (asin, domain, title, current_amazon, current_new, sales_rank, avg_90_new,
                                             avg_365_new, history_points, raw, updated_at, job_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (asin, domain) DO UPDATE SET title = excluded.title,
                     current_amazon = excluded.current_amazon, current_new = excluded.current_new,
                     sales_rank = excluded.sales_rank, avg_90_new = excluded.avg_90_new,
                     avg_365_new = excluded.avg_365_new, history_points = excluded.history_points,
                     raw = excluded.raw, updated_at = excluded.updated_at, job_id = excluded.job_id",
            )?
            .execute(params![
                job.sku,
                snapshot.domain,
                snapshot.title,
                snapshot.current_amazon,
                snapshot.current_new,
                snapshot.sales_rank,
                snapshot.avg_90_new,
                snapshot.avg_365_new,
                snapshot.history_points,
                snapshot.raw,
                now,
                job.id
            ])?;
        }
    }
    Ok(())
}

/// Records one drainer run.
pub fn record_run(ledger: &SqliteLedger, run: &JobRun) -> Result<i64, JobError> {
    ledger.with_conn(|conn| {
        conn.prepare_cached(
            "INSERT INTO job_runs (provider, account, started_at, finished_at, jobs_run, succeeded, failed, deferred,
                                   not_found, calls_made, rescued, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            run.provider,
            run.account,
            run.started_at,
            run.finished_at,
            run.jobs_run,
            run.succeeded,
            run.failed,
            run.deferred,
            run.not_found,
            run.calls_made,
            run.rescued,
            run.outcome
        ])?;
        Ok(conn.last_insert_rowid())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(provider: &str, sku: &str, size: Option<&str>, priority: JobPriority) -> NewJob {
        NewJob {
            provider: provider.to_string(),
            sku: sku.to_string(),
            size: size.map(str::to_string),
            priority,
            source: "test".to_string(),
        }
    }

    /// Enqueues `new` at `now`; the test fails if it is refused.
    fn put(ledger: &SqliteLedger, new: NewJob, now: i64) -> EnqueueOutcome {
        enqueue_at(ledger, &new, now).expect("enqueue")
    }

    fn claimer<'a>(provider: &'a str) -> Claimer<'a> {
        Claimer {
            provider,
            account: "acct",
            stream: "products",
            owner: "test",
            fence: None,
        }
    }

    #[test]
    fn enqueue_merges_live_keys_and_keeps_the_higher_priority() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let first = put(
            &ledger,
            job("stockx", "DD1391-100", Some("10"), JobPriority::Background),
            100,
        );
        let EnqueueOutcome::Created { id } = first else {
            panic!("{first:?}")
        };
        let merged = put(
            &ledger,
            job("stockx", "DD1391-100", Some("10"), JobPriority::Hot),
            101,
        );
        assert_eq!(
            merged,
            EnqueueOutcome::Merged {
                id,
                priority: JobPriority::Hot
            }
        );
        let lower = put(
            &ledger,
            job("stockx", "DD1391-100", Some("10"), JobPriority::Background),
            102,
        );
        assert_eq!(
            lower,
            EnqueueOutcome::Merged {
                id,
                priority: JobPriority::Hot
            }
        );
        // Another size is another key.
        assert!(matches!(
            put(
                &ledger,
                job("stockx", "DD1391-100", Some("11"), JobPriority::Background),
                103
            ),
            EnqueueOutcome::Created { .. }
        ));
        // ASINs are case-insensitive keys.
        let asin = put(
            &ledger,
            job("keepa", "b00abc", None, JobPriority::Background),
            104,
        );
        let same = put(
            &ledger,
            job("keepa", "B00ABC", None, JobPriority::Manual),
            105,
        );
        assert_eq!(
            same,
            EnqueueOutcome::Merged {
                id: asin.id(),
                priority: JobPriority::Manual
            }
        );
        let depth = queue_depth(&ledger).unwrap();
        assert_eq!(
            depth,
            vec![
                ("keepa".to_string(), "pending".to_string(), 1),
                ("stockx".to_string(), "pending".to_string(), 2)
            ]
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_fix() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let cases = [
            (
                job("ebya", "X", None, JobPriority::Hot),
                "unknown job provider \"ebya\"",
            ),
            (
                job("keepa", "B00", Some("10"), JobPriority::Hot),
                "keepa jobs are keyed by ASIN alone",
            ),
            (
                job("stockx", "DD1391-100", None, JobPriority::Hot),
                "stockx market data is per size",
            ),
            (
                job("stockx", "a|b", Some("10"), JobPriority::Hot),
                "invalid sku \"a|b\"",
            ),
        ];
        for (new, expected) in cases {
            let err = enqueue(&ledger, &new).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        assert_eq!(
            "urgent".parse::<JobPriority>().unwrap_err(),
            "unknown priority \"urgent\"; expected manual, hot or background"
        );
        assert_eq!("hot".parse::<JobPriority>(), Ok(JobPriority::Hot));
    }

    #[test]
    fn claim_takes_priority_then_age_and_never_mixes_priorities() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        for (index, asin) in ["B1", "B2", "B3"].iter().enumerate() {
            put(
                &ledger,
                job("keepa", asin, None, JobPriority::Background),
                10 + index as i64,
            );
        }
        put(&ledger, job("keepa", "H1", None, JobPriority::Hot), 20);
        put(&ledger, job("keepa", "H2", None, JobPriority::Hot), 21);
        let first = claim(&ledger, &claimer("keepa"), 10, 600, 30).unwrap();
        let skus: Vec<&str> = first.iter().map(|job| job.sku.as_str()).collect();
        assert_eq!(skus, ["H1", "H2"]);
        let second = claim(&ledger, &claimer("keepa"), 2, 600, 30).unwrap();
        let skus: Vec<&str> = second.iter().map(|job| job.sku.as_str()).collect();
        assert_eq!(skus, ["B1", "B2"]);
        assert!(second.iter().all(|job| job.state == JobState::Running));
        // StockX jobs are another provider's.
        assert!(claim(&ledger, &claimer("stockx"), 10, 600, 30)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn expired_leases_are_rescued_without_consuming_an_attempt() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let id = put(&ledger, job("keepa", "B1", None, JobPriority::Hot), 10).id();
        let claimed = claim(&ledger, &claimer("keepa"), 1, 600, 20).unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(rescue_expired(&ledger, "keepa", 619).unwrap().is_empty());
        let rescued = rescue_expired(&ledger, "keepa", 620).unwrap();
        assert_eq!(rescued, vec![(id, "acct/test".to_string())]);
        let job = get_job(&ledger, id).unwrap().unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
        // The old worker's late result is not written over the rescued job.
        let late = finish(
            &ledger,
            &claimer("keepa"),
            &[(claimed[0].clone(), JobEnd::NotFound("late".to_string()))],
            621,
        )
        .unwrap();
        assert_eq!(late, Finished::default());
    }

    #[test]
    fn failures_retry_until_max_attempts_then_reset_failed_requeues() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let id = put(&ledger, job("stockx", "S", Some("9"), JobPriority::Hot), 10).id();
        for round in 0..2 {
            let now = 100 + round * 100;
            let claimed = claim(&ledger, &claimer("stockx"), 1, 600, now).unwrap();
            let end = JobEnd::Failed {
                error: "http 500".to_string(),
                retry_at: now + 50,
                max_attempts: 2,
            };
            finish(
                &ledger,
                &claimer("stockx"),
                &[(claimed[0].clone(), end)],
                now,
            )
            .unwrap();
        }
        let failed = get_job(&ledger, id).unwrap().unwrap();
        assert_eq!((failed.state, failed.attempts), (JobState::Failed, 2));
        assert_eq!(
            list_jobs(&ledger, Some(JobState::Failed), 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(reset_failed(&ledger, Some("stockx")).unwrap(), 1);
        let again = get_job(&ledger, id).unwrap().unwrap();
        assert_eq!((again.state, again.attempts), (JobState::Pending, 0));
        // A finished key is queued again as a new job.
        let claimed = claim(
            &ledger,
            &claimer("stockx"),
            1,
            600,
            crate::domain::now_ts() + 1,
        )
        .unwrap();
        finish(
            &ledger,
            &claimer("stockx"),
            &[(claimed[0].clone(), JobEnd::NotFound("gone".into()))],
            500,
        )
        .unwrap();
        let new = enqueue(&ledger, &job("stockx", "S", Some("9"), JobPriority::Hot)).unwrap();
        assert!(matches!(new, EnqueueOutcome::Created { id: new_id } if new_id != id));
    }

    #[test]
    fn a_stale_fence_writes_nothing() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        put(&ledger, job("keepa", "B1", None, JobPriority::Hot), 10);
        let newer = Claimer {
            fence: Some(5),
            ..claimer("keepa")
        };
        assert!(claim(&ledger, &newer, 1, 600, 20).unwrap().len() == 1);
        let older = Claimer {
            fence: Some(4),
            ..claimer("keepa")
        };
        let err = claim(&ledger, &older, 1, 600, 20).unwrap_err();
        assert!(
            matches!(err, JobError::Ledger(LedgerError::StaleFence { .. })),
            "{err}"
        );
    }
}
