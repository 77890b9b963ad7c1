//! Working the queue: claims by priority within a budget, lease rescue, finishing a job
//! with its result (market prices, Keepa snapshots) in one fenced transaction, run records.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::*;
use crate::store::sqlite::check_fence;
use crate::store::SqliteLedger;

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
        check_fence(&tx, claimer.account, claimer.stream, claimer.fence, "job claim", now)?;
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

/// Whether `provider` has a due pending job of a priority above `priority` (a manual
/// refresh waiting while a lower job is between its calls).
pub fn pending_above(
    ledger: &SqliteLedger,
    provider: &str,
    priority: JobPriority,
    now: i64,
) -> Result<bool, JobError> {
    ledger.with_read_conn(|conn| {
        conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE provider = ?1 AND state = 'pending'
                 AND priority > ?2 AND not_before <= ?3)",
        )?
        .query_row(params![provider, priority.value(), now], |row| row.get(0))
        .map_err(JobError::from)
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
    ledger: &SqliteLedger,
    claimer: &Claimer<'_>,
    ends: &[(Job, JobEnd)],
    now: i64,
) -> Result<Finished, JobError> {
    let owner = format!("{}/{}", claimer.account, claimer.owner);
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_fence(&tx, claimer.account, claimer.stream, claimer.fence, "job result", now)?;
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
        JobResult::Listings(stats) => {
            tx.prepare_cached(
                "INSERT INTO market_prices (provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at, job_id,
                                           listing_count, price_min, price_median, price_mean, price_max, listings_total)
                 VALUES (?1, ?2, ?3, ?4, NULL, NULL, ?5, ?6, ?7, ?8, ?4, ?9, ?10, ?11, ?12)
                 ON CONFLICT (provider, sku, size) DO UPDATE SET lowest_ask = excluded.lowest_ask,
                     highest_bid = NULL, last_sale = NULL, currency = excluded.currency,
                     updated_at = excluded.updated_at, job_id = excluded.job_id,
                     listing_count = excluded.listing_count, price_min = excluded.price_min,
                     price_median = excluded.price_median, price_mean = excluded.price_mean,
                     price_max = excluded.price_max, listings_total = excluded.listings_total",
            )?
            .execute(params![
                job.provider,
                job.sku,
                job.size.clone().unwrap_or_default(),
                stats.min,
                stats.currency,
                now,
                job.id,
                stats.count,
                stats.median,
                stats.mean,
                stats.max,
                stats.total
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
