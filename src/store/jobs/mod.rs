//! The job queue's tables (migration 0004): `jobs`, `market_prices`, `keepa_products`
//! and `job_runs`; the StockX and Alias catalog caches (migrations 0008 and 0014,
//! `catalog.rs`). Storage is behind the [`JobStore`] trait, implemented by the SQLite
//! file ([`SqliteLedger`], `sqlite.rs`) and by PostgreSQL ([`crate::store::PgLedger`],
//! `store/postgres/jobs.rs`, migration `postgres/0004_jobs.sql`); a supertrait of
//! [`crate::store::LedgerStore`], so the engine that holds the hour ledger holds the
//! queue too. The free functions here validate input and call the trait; they run
//! synchronously: callers on async threads go through [`crate::store::blocking`].
//!
//! - Enqueue merges into the live (pending or running) job of the same dedupe key and
//!   keeps the higher priority; a key whose last job finished gets a new pending job
//!   (the finished row stays as history).
//! - Claim takes, in one transaction (`BEGIN IMMEDIATE` on SQLite; rows locked
//!   `FOR UPDATE SKIP LOCKED` on PostgreSQL, so daemons claiming at once take disjoint
//!   jobs), the highest-priority due pending jobs of a provider (oldest first within a
//!   priority), up to `batch`, all of the head's priority, and marks them running under
//!   a lease.
//! - Rescue moves running jobs whose lease expired back to pending (their worker died;
//!   seed 002 did this by hand after 10 minutes).
//! - Results and job states are written in one transaction that checks the lease fence.

use std::fmt;
use std::str::FromStr;

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

impl From<postgres::Error> for JobError {
    fn from(err: postgres::Error) -> JobError {
        JobError::Ledger(LedgerError::Postgres(err))
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

/// The columns of a `jobs` row, in [`Job`]'s order (both engines read them so).
pub(crate) const JOB_COLUMNS: &str =
    "id, provider, sku, size, dedupe_key, priority, state, attempts, error, not_before, \
     lease_owner, lease_until, created_at, updated_at, finished_at, source";

/// The storage of the job queue and of what it fills (market prices, Keepa snapshots,
/// run records, the StockX and Alias catalog caches), one implementation per engine:
/// [`SqliteLedger`] (the SQLite file) and [`crate::store::PgLedger`] (PostgreSQL, shared
/// by several daemons). Methods are blocking. Input is validated by the free functions
/// of this module ([`enqueue`], [`reset_failed`], ...), which are what callers use; the
/// methods take what those checked and normalised.
pub trait JobStore: Send + Sync {
    /// Queues validated `job` under dedupe key `key`, or merges it into the key's live
    /// job keeping the higher priority (see [`enqueue`]).
    fn insert_job(&self, job: &NewJob, key: &str, now: i64) -> Result<EnqueueOutcome, JobError>;
    /// Jobs in `state` (all when `None`), newest first, at most `limit`.
    fn job_rows(&self, state: Option<JobState>, limit: i64) -> Result<Vec<Job>, JobError>;
    fn job_by_id(&self, id: i64) -> Result<Option<Job>, JobError>;
    /// See [`reset_failed`]; `provider` is a known one.
    fn requeue_failed_jobs(&self, provider: Option<&str>, now: i64) -> Result<usize, JobError>;
    /// Job counts per (provider, state), ordered by provider then state.
    fn job_counts(&self) -> Result<Vec<(String, String, i64)>, JobError>;
    /// See [`provider_queue`].
    fn job_queue(&self, provider: &str, now: i64) -> Result<ProviderQueue, LedgerError>;
    /// See [`rescue_expired`].
    fn rescue_expired_jobs(&self, provider: &str, now: i64)
        -> Result<Vec<(i64, String)>, JobError>;
    /// See [`claim`]; `batch` is at least 1. The claimer's fence is checked in the
    /// claim's transaction; claims by several daemons at once never overlap.
    fn claim_jobs(
        &self,
        claimer: &Claimer<'_>,
        batch: i64,
        lease_secs: i64,
        now: i64,
    ) -> Result<Vec<Job>, JobError>;
    /// See [`pending_above`].
    fn has_pending_above(
        &self,
        provider: &str,
        priority: JobPriority,
        now: i64,
    ) -> Result<bool, JobError>;
    /// See [`finish`]: the fence is checked in the transaction that writes the ends.
    fn finish_jobs(
        &self,
        claimer: &Claimer<'_>,
        ends: &[(Job, JobEnd)],
        now: i64,
    ) -> Result<Finished, JobError>;
    /// Records one drainer run; returns its id.
    fn insert_job_run(&self, run: &JobRun) -> Result<i64, JobError>;
    fn market_price_rows(&self, limit: i64) -> Result<Vec<MarketPrice>, JobError>;
    fn keepa_product_rows(&self, limit: i64) -> Result<Vec<KeepaProduct>, JobError>;
    fn job_run_rows(&self, limit: i64) -> Result<Vec<JobRun>, JobError>;

    /// The unexpired `stockx_styles` row of `key` at `now`: (product id, expires_at).
    fn stockx_style_row(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(Option<String>, i64)>, JobError>;
    /// See [`cached_stockx_variant`].
    fn stockx_variant_lookup(
        &self,
        product_id: &str,
        size_key: &str,
        now: i64,
    ) -> Result<CachedVariant, JobError>;
    #[allow(clippy::too_many_arguments)]
    fn upsert_stockx_style(
        &self,
        key: &str,
        style_id: &str,
        product_id: Option<&str>,
        title: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<(), JobError>;
    /// Replaces the variant list of `product_id` (see [`put_stockx_variants`]).
    fn replace_stockx_variants(
        &self,
        product_id: &str,
        variants: &[VariantRow],
        now: i64,
        expires_at: i64,
    ) -> Result<(), JobError>;
    fn delete_stockx_style(&self, key: &str) -> Result<(), JobError>;
    fn stockx_cache_totals(&self, now: i64) -> Result<(i64, i64, i64), JobError>;
    /// The unexpired `alias_catalog` row of `key`: (catalog id, sizes text, expires_at).
    fn alias_catalog_row(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(Option<String>, String, i64)>, JobError>;
    #[allow(clippy::too_many_arguments)]
    fn upsert_alias_item(
        &self,
        key: &str,
        sku: &str,
        catalog_id: Option<&str>,
        sizes: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), JobError>;
    fn delete_alias_item(&self, key: &str) -> Result<(), JobError>;
    fn alias_cache_totals(&self, now: i64) -> Result<(i64, i64), JobError>;
}

/// Queues a lookup, or merges it into the live job of the same key (keeping the higher
/// priority; a pending job waiting for a retry keeps its `not_before`). A key whose last
/// job finished (succeeded, failed, not_found) gets a new pending job.
pub fn enqueue(store: &dyn JobStore, job: &NewJob) -> Result<EnqueueOutcome, JobError> {
    enqueue_at(store, job, crate::domain::now_ts())
}

/// [`enqueue`] at `now`.
pub fn enqueue_at(
    store: &dyn JobStore,
    job: &NewJob,
    now: i64,
) -> Result<EnqueueOutcome, JobError> {
    let job = validate(job)?;
    let key = dedupe_key(&job.provider, &job.sku, job.size.as_deref());
    store.insert_job(&job, &key, now)
}

/// Jobs in `state` (all states when `None`), newest first, at most `limit`.
pub fn list_jobs(
    store: &dyn JobStore,
    state: Option<JobState>,
    limit: usize,
) -> Result<Vec<Job>, JobError> {
    store.job_rows(state, sql_limit(limit))
}

/// A caller's row limit as the databases' integer.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// One job by id.
pub fn get_job(store: &dyn JobStore, id: i64) -> Result<Option<Job>, JobError> {
    store.job_by_id(id)
}

/// Moves failed jobs (of `provider`, or all) back to pending with their attempts reset.
/// A failed job whose key has a live job already is left alone (the live one covers it).
/// Returns how many were re-queued.
pub fn reset_failed(store: &dyn JobStore, provider: Option<&str>) -> Result<usize, JobError> {
    if let Some(provider) = provider {
        if !JOB_PROVIDERS.contains(&provider) {
            return Err(JobError::Invalid(format!(
                "unknown job provider {provider:?}; expected one of {}",
                JOB_PROVIDERS.join(", ")
            )));
        }
    }
    store.requeue_failed_jobs(provider, crate::domain::now_ts())
}

/// Job counts per (provider, state), for status and metrics.
pub fn queue_depth(store: &dyn JobStore) -> Result<Vec<(String, String, i64)>, JobError> {
    store.job_counts()
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

/// The queue of `provider` at `now` (status, doctor and `sync --once` read it).
pub fn provider_queue(
    store: &dyn JobStore,
    provider: &str,
    now: i64,
) -> Result<ProviderQueue, LedgerError> {
    store.job_queue(provider, now)
}

mod catalog;
mod results;
mod sqlite;
mod work;

#[cfg(test)]
mod tests;

pub use catalog::*;
pub use results::*;
pub use work::*;
