//! Working the queue: claims by priority within a budget, lease rescue, finishing a job
//! with its result (market prices, Keepa snapshots) in one fenced transaction, run records.

use super::*;

/// Who claims: the account and stream (for the fence) and the lease owner string.
#[derive(Debug, Clone)]
pub struct Claimer<'a> {
    pub provider: &'a str,
    pub account: &'a str,
    pub stream: &'a str,
    pub owner: &'a str,
    /// The lease fence every write of this claimer carries (see [`crate::store::WriteFence`]).
    pub fence: crate::store::WriteFence,
}

/// Running jobs of `provider` whose lease ended by `now` go back to pending (no attempt
/// consumed: the worker died, the job did not fail). Returns (id, previous owner).
pub fn rescue_expired(
    store: &dyn JobStore,
    provider: &str,
    now: i64,
) -> Result<Vec<(i64, String)>, JobError> {
    store.rescue_expired_jobs(provider, now)
}

/// Claims up to `batch` due pending jobs of the claimer's provider: the highest priority
/// first, oldest first within it, all of the head's priority (a batch never mixes
/// background keys into a hot request). They become running with a lease until
/// `now + lease_secs`. Empty when nothing is due.
pub fn claim(
    store: &dyn JobStore,
    claimer: &Claimer<'_>,
    batch: usize,
    lease_secs: i64,
    now: i64,
) -> Result<Vec<Job>, JobError> {
    store.claim_jobs(claimer, sql_limit(batch.max(1)), lease_secs, now)
}

/// Whether `provider` has a due pending job of a priority above `priority` (a manual
/// refresh waiting while a lower job is between its calls).
pub fn pending_above(
    store: &dyn JobStore,
    provider: &str,
    priority: JobPriority,
    now: i64,
) -> Result<bool, JobError> {
    store.has_pending_above(provider, priority, now)
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
    /// Statistics of active listings (eBay Browse): `lowest_ask` is their minimum.
    Listings(ListingStats),
}

/// Price statistics of the active listings a search returned, in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ListingStats {
    /// Listings whose price entered the statistics.
    pub count: i64,
    pub min: f64,
    pub median: f64,
    pub mean: f64,
    pub max: f64,
    pub currency: String,
    /// The provider's count of matching listings (eBay's `total`), of which at most one
    /// page was read.
    pub total: i64,
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
    store: &dyn JobStore,
    claimer: &Claimer<'_>,
    ends: &[(Job, JobEnd)],
    now: i64,
) -> Result<Finished, JobError> {
    store.finish_jobs(claimer, ends, now)
}

/// Records one drainer run.
pub fn record_run(store: &dyn JobStore, run: &JobRun) -> Result<i64, JobError> {
    store.insert_job_run(run)
}
