//! The job queue on PostgreSQL ([`JobStore`]): the tables of `migrations/postgres/
//! 0004_jobs.sql`, the same rules as the SQLite file's (`store::jobs`), for several
//! daemons at once.
//!
//! - Claims lock the jobs they take with `FOR UPDATE SKIP LOCKED`: two daemons' drainers
//!   claiming the same provider at once take disjoint jobs, neither waits for the other.
//! - The claimer's fence is checked ([`check_fence`]) in the transaction of the claim and
//!   of every result write: a drainer whose lease was taken over writes nothing.
//! - Enqueue relies on the unique index of live keys (`jobs_live_key`): two daemons
//!   queueing the same key at once end with one live job (the second merges).
//! - Catalog cache rows are written outside the fence, as on SQLite.
//!
//! Text is ordered `COLLATE "C"` (byte order), as SQLite's BINARY collation orders it,
//! so listings come back in the same order on both engines.

use postgres::{Row, Transaction};

use super::{check_fence, PgLedger, MAX_TRIES};
use crate::store::jobs::*;
use crate::store::LedgerError;

fn job_from_row(row: &Row) -> Result<Job, JobError> {
    let state_text: String = row.try_get(6)?;
    let state = state_text.parse::<JobState>().map_err(|err| {
        LedgerError::Migration(format!("jobs holds a row marketsync cannot read: {err}"))
    })?;
    Ok(Job {
        id: row.try_get(0)?,
        provider: row.try_get(1)?,
        sku: row.try_get(2)?,
        size: row.try_get(3)?,
        dedupe_key: row.try_get(4)?,
        priority: row.try_get(5)?,
        state,
        attempts: row.try_get(7)?,
        error: row.try_get(8)?,
        not_before: row.try_get(9)?,
        lease_owner: row.try_get(10)?,
        lease_until: row.try_get(11)?,
        created_at: row.try_get(12)?,
        updated_at: row.try_get(13)?,
        finished_at: row.try_get(14)?,
        source: row.try_get(15)?,
    })
}

impl PgLedger {
    /// [`PgLedger::with_tx`] for the queue's error type: runs `work` in a transaction,
    /// commits it, retries it on a serialization failure or a deadlock; any error
    /// (including [`JobError::Invalid`]) rolls it back.
    pub(super) fn job_tx<T>(
        &self,
        work: impl FnMut(&mut Transaction<'_>) -> Result<T, JobError>,
    ) -> Result<T, JobError> {
        self.with_tx(work)
    }

    /// Reads outside an explicit transaction.
    pub(super) fn job_read<T>(
        &self,
        work: impl FnOnce(&mut postgres::Client) -> Result<T, JobError>,
    ) -> Result<T, JobError> {
        let mut client = self.client()?;
        work(&mut client)
    }
}

/// Merges a lookup into the live job of `key` (raising its priority to `priority` if
/// higher) or inserts a new pending job, inside `tx`. A concurrent insert of the same key
/// (the unique index of live keys) makes the insert do nothing; the next round merges.
#[allow(clippy::too_many_arguments)]
pub(super) fn upsert_live_job(
    tx: &mut Transaction<'_>,
    provider: &str,
    sku: &str,
    size: Option<&str>,
    key: &str,
    priority: i64,
    source: &str,
    now: i64,
) -> Result<EnqueueOutcome, JobError> {
    for _ in 0..MAX_TRIES {
        let live = tx.query_opt(
            "SELECT id, priority FROM jobs WHERE dedupe_key = $1 AND state IN ('pending', 'running')
             FOR UPDATE",
            &[&key],
        )?;
        if let Some(row) = live {
            let (id, current): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            let merged = current.max(priority);
            tx.execute(
                "UPDATE jobs SET priority = $1, updated_at = $2 WHERE id = $3",
                &[&merged, &now, &id],
            )?;
            return Ok(EnqueueOutcome::Merged {
                id,
                priority: JobPriority::from_value(merged),
            });
        }
        let inserted = tx.query_opt(
            "INSERT INTO jobs (provider, sku, size, dedupe_key, priority, state, attempts, not_before,
                               created_at, updated_at, source)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, $7)
             ON CONFLICT (dedupe_key) WHERE state IN ('pending', 'running') DO NOTHING
             RETURNING id",
            &[&provider, &sku, &size, &key, &priority, &now, &source],
        )?;
        if let Some(row) = inserted {
            return Ok(EnqueueOutcome::Created {
                id: row.try_get(0)?,
            });
        }
    }
    Err(JobError::Ledger(LedgerError::Migration(format!(
        "job key {key} kept changing while it was queued; try again"
    ))))
}

impl JobStore for PgLedger {
    fn insert_job(&self, job: &NewJob, key: &str, now: i64) -> Result<EnqueueOutcome, JobError> {
        self.job_tx(|tx| {
            upsert_live_job(
                tx,
                &job.provider,
                &job.sku,
                job.size.as_deref(),
                key,
                job.priority.value(),
                &job.source,
                now,
            )
        })
    }

    fn job_rows(&self, state: Option<JobState>, limit: i64) -> Result<Vec<Job>, JobError> {
        let state = state.map(JobState::as_str);
        self.job_read(|client| {
            client
                .query(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs WHERE $1::text IS NULL OR state = $1
                         ORDER BY updated_at DESC, id DESC LIMIT $2"
                    ),
                    &[&state, &limit],
                )?
                .iter()
                .map(job_from_row)
                .collect()
        })
    }

    fn job_by_id(&self, id: i64) -> Result<Option<Job>, JobError> {
        self.job_read(|client| {
            client
                .query_opt(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
                    &[&id],
                )?
                .as_ref()
                .map(job_from_row)
                .transpose()
        })
    }

    fn requeue_failed_jobs(&self, provider: Option<&str>, now: i64) -> Result<usize, JobError> {
        self.job_tx(|tx| {
            let changed = tx.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, not_before = $1, updated_at = $1,
                        finished_at = NULL, lease_owner = NULL, lease_until = NULL
                 WHERE id IN (
                     SELECT f.id FROM jobs f
                     WHERE f.state = 'failed' AND ($2::text IS NULL OR f.provider = $2)
                       AND NOT EXISTS (SELECT 1 FROM jobs l WHERE l.dedupe_key = f.dedupe_key AND l.state IN ('pending', 'running'))
                       AND f.id = (SELECT MAX(g.id) FROM jobs g WHERE g.dedupe_key = f.dedupe_key AND g.state = 'failed'))",
                &[&now, &provider],
            )?;
            Ok(usize::try_from(changed).unwrap_or(usize::MAX))
        })
    }

    fn job_counts(&self) -> Result<Vec<(String, String, i64)>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state
                     ORDER BY provider COLLATE \"C\", state COLLATE \"C\"",
                    &[],
                )?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                .collect()
        })
    }

    fn job_queue(&self, provider: &str, now: i64) -> Result<ProviderQueue, LedgerError> {
        self.with_client(|client| {
            let mut queue = ProviderQueue::default();
            for row in client.query(
                "SELECT state, COUNT(*) FROM jobs WHERE provider = $1 GROUP BY state",
                &[&provider],
            )? {
                queue.depth.insert(row.try_get(0)?, row.try_get(1)?);
            }
            queue.last_failure = client
                .query_opt(
                    "SELECT dedupe_key, COALESCE(error, 'no error recorded') FROM jobs
                     WHERE provider = $1 AND state = 'failed' ORDER BY updated_at DESC, id DESC LIMIT 1",
                    &[&provider],
                )?
                .map(|row| Ok::<_, postgres::Error>((row.try_get(0)?, row.try_get(1)?)))
                .transpose()?;
            let row = client.query_one(
                "SELECT MIN(CASE WHEN state = 'pending' THEN not_before END),
                        MAX(CASE WHEN state <> 'pending' THEN updated_at END),
                        COALESCE(SUM(CASE WHEN state = 'running'
                                           OR (state = 'pending' AND not_before <= $2) THEN 1 END), 0)::bigint
                 FROM jobs WHERE provider = $1",
                &[&provider, &now],
            )?;
            queue.pending_due_since = row.try_get(0)?;
            queue.last_activity = row.try_get(1)?;
            queue.due_now = row.try_get(2)?;
            Ok(queue)
        })
    }

    fn rescue_expired_jobs(
        &self,
        provider: &str,
        now: i64,
    ) -> Result<Vec<(i64, String)>, JobError> {
        self.job_tx(|tx| {
            let mut rescued: Vec<(i64, String)> = tx
                .query(
                    "WITH stuck AS (
                         SELECT id, COALESCE(lease_owner, '') AS owner FROM jobs
                         WHERE provider = $1 AND state = 'running' AND COALESCE(lease_until, 0) <= $2
                         FOR UPDATE SKIP LOCKED)
                     UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                            not_before = $2, updated_at = $2,
                            error = 'rescued: the lease of its worker expired'
                     FROM stuck WHERE jobs.id = stuck.id
                     RETURNING jobs.id, stuck.owner",
                    &[&provider, &now],
                )?
                .iter()
                .map(|row| Ok::<_, postgres::Error>((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, _>>()?;
            rescued.sort();
            Ok(rescued)
        })
    }

    fn claim_jobs(
        &self,
        claimer: &Claimer<'_>,
        batch: i64,
        lease_secs: i64,
        now: i64,
    ) -> Result<Vec<Job>, JobError> {
        let owner = format!("{}/{}", claimer.account, claimer.owner);
        let lease_until = now.saturating_add(lease_secs.max(1));
        self.job_tx(|tx| {
            check_fence(
                tx,
                claimer.account,
                claimer.stream,
                claimer.fence,
                "job claim",
                now,
            )?;
            // The head among the jobs no other claimer holds right now.
            let head = tx.query_opt(
                "SELECT priority FROM jobs WHERE provider = $1 AND state = 'pending' AND not_before <= $2
                 ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&claimer.provider, &now],
            )?;
            let Some(head) = head else {
                return Ok(Vec::new());
            };
            let priority: i64 = head.try_get(0)?;
            let ids: Vec<i64> = tx
                .query(
                    "SELECT id FROM jobs
                     WHERE provider = $1 AND state = 'pending' AND not_before <= $2 AND priority = $3
                     ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED",
                    &[&claimer.provider, &now, &priority, &batch],
                )?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            let mut jobs = tx
                .query(
                    &format!(
                        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, updated_at = $3
                         WHERE id = ANY($4) RETURNING {JOB_COLUMNS}"
                    ),
                    &[&owner, &lease_until, &now, &ids],
                )?
                .iter()
                .map(job_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            jobs.sort_by_key(|job| (job.created_at, job.id));
            Ok(jobs)
        })
    }

    fn has_pending_above(
        &self,
        provider: &str,
        priority: JobPriority,
        now: i64,
    ) -> Result<bool, JobError> {
        self.job_read(|client| {
            Ok(client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE provider = $1 AND state = 'pending'
                         AND priority > $2 AND not_before <= $3)",
                    &[&provider, &priority.value(), &now],
                )?
                .try_get(0)?)
        })
    }

    fn finish_jobs(
        &self,
        claimer: &Claimer<'_>,
        ends: &[(Job, JobEnd)],
        now: i64,
    ) -> Result<Finished, JobError> {
        let owner = format!("{}/{}", claimer.account, claimer.owner);
        self.job_tx(|tx| {
            check_fence(
                tx,
                claimer.account,
                claimer.stream,
                claimer.fence,
                "job result",
                now,
            )?;
            let mut counts = Finished::default();
            for (job, end) in ends {
                let ours = tx.query_opt(
                    "SELECT attempts FROM jobs WHERE id = $1 AND state = 'running' AND lease_owner = $2
                     FOR UPDATE",
                    &[&job.id, &owner],
                )?;
                let Some(ours) = ours else {
                    continue;
                };
                let attempts: i64 = ours.try_get(0)?;
                match end {
                    JobEnd::Succeeded(result) => {
                        write_result(tx, job, result, now)?;
                        terminal(tx, job.id, "succeeded", None, attempts, now)?;
                        counts.succeeded += 1;
                    }
                    JobEnd::NotFound(message) => {
                        terminal(tx, job.id, "not_found", Some(message), attempts, now)?;
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
                            terminal(tx, job.id, "failed", Some(error), attempts, now)?;
                            counts.exhausted += 1;
                        } else {
                            tx.execute(
                                "UPDATE jobs SET state = 'pending', attempts = $1, error = $2, not_before = $3,
                                        lease_owner = NULL, lease_until = NULL, updated_at = $4 WHERE id = $5",
                                &[&attempts, error, retry_at, &now, &job.id],
                            )?;
                        }
                    }
                    JobEnd::Deferred { reason, not_before } => {
                        tx.execute(
                            "UPDATE jobs SET state = 'pending', error = $1, not_before = $2,
                                    lease_owner = NULL, lease_until = NULL, updated_at = $3 WHERE id = $4",
                            &[reason, not_before, &now, &job.id],
                        )?;
                        counts.deferred += 1;
                    }
                }
            }
            Ok(counts)
        })
    }

    fn insert_job_run(&self, run: &JobRun) -> Result<i64, JobError> {
        self.job_read(|client| {
            Ok(client
                .query_one(
                    "INSERT INTO job_runs (provider, account, started_at, finished_at, jobs_run, succeeded,
                                           failed, deferred, not_found, calls_made, rescued, outcome)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
                    &[
                        &run.provider,
                        &run.account,
                        &run.started_at,
                        &run.finished_at,
                        &run.jobs_run,
                        &run.succeeded,
                        &run.failed,
                        &run.deferred,
                        &run.not_found,
                        &run.calls_made,
                        &run.rescued,
                        &run.outcome,
                    ],
                )?
                .try_get(0)?)
        })
    }

    fn market_price_rows(&self, limit: i64) -> Result<Vec<MarketPrice>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at,
                            listing_count, price_min, price_median, price_mean, price_max, listings_total
                     FROM market_prices
                     ORDER BY updated_at DESC, provider COLLATE \"C\", sku COLLATE \"C\", size COLLATE \"C\"
                     LIMIT $1",
                    &[&limit],
                )?
                .iter()
                .map(|row| {
                    let size: String = row.try_get(2)?;
                    let currency: String = row.try_get(6)?;
                    Ok(MarketPrice {
                        provider: row.try_get(0)?,
                        sku: row.try_get(1)?,
                        size: (!size.is_empty()).then_some(size),
                        lowest_ask: row.try_get(3)?,
                        highest_bid: row.try_get(4)?,
                        last_sale: row.try_get(5)?,
                        updated_at: row.try_get(7)?,
                        listings: listing_stats(
                            row.try_get(8)?,
                            (
                                row.try_get(9)?,
                                row.try_get(10)?,
                                row.try_get(11)?,
                                row.try_get(12)?,
                            ),
                            &currency,
                            row.try_get(13)?,
                        ),
                        currency,
                    })
                })
                .collect()
        })
    }

    fn keepa_product_rows(&self, limit: i64) -> Result<Vec<KeepaProduct>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT asin, domain, title, current_amazon, current_new, sales_rank, avg_90_new,
                            avg_365_new, history_points, raw, updated_at
                     FROM keepa_products ORDER BY updated_at DESC, asin COLLATE \"C\" LIMIT $1",
                    &[&limit],
                )?
                .iter()
                .map(|row| {
                    Ok(KeepaProduct {
                        asin: row.try_get(0)?,
                        domain: row.try_get(1)?,
                        title: row.try_get(2)?,
                        current_amazon: row.try_get(3)?,
                        current_new: row.try_get(4)?,
                        sales_rank: row.try_get(5)?,
                        avg_90_new: row.try_get(6)?,
                        avg_365_new: row.try_get(7)?,
                        history_points: row.try_get(8)?,
                        raw: row.try_get(9)?,
                        updated_at: row.try_get(10)?,
                    })
                })
                .collect()
        })
    }

    fn job_run_rows(&self, limit: i64) -> Result<Vec<JobRun>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT id, provider, account, started_at, finished_at, jobs_run, succeeded, failed,
                            deferred, not_found, calls_made, rescued, outcome
                     FROM job_runs ORDER BY id DESC LIMIT $1",
                    &[&limit],
                )?
                .iter()
                .map(|row| {
                    Ok(JobRun {
                        id: row.try_get(0)?,
                        provider: row.try_get(1)?,
                        account: row.try_get(2)?,
                        started_at: row.try_get(3)?,
                        finished_at: row.try_get(4)?,
                        jobs_run: row.try_get(5)?,
                        succeeded: row.try_get(6)?,
                        failed: row.try_get(7)?,
                        deferred: row.try_get(8)?,
                        not_found: row.try_get(9)?,
                        calls_made: row.try_get(10)?,
                        rescued: row.try_get(11)?,
                        outcome: row.try_get(12)?,
                    })
                })
                .collect()
        })
    }

    fn stockx_style_row(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(Option<String>, i64)>, JobError> {
        self.job_read(|client| {
            client
                .query_opt(
                    "SELECT product_id, expires_at FROM stockx_styles WHERE style_key = $1 AND expires_at > $2",
                    &[&key, &now],
                )?
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .transpose()
        })
    }

    fn stockx_variant_lookup(
        &self,
        product_id: &str,
        size_key: &str,
        now: i64,
    ) -> Result<CachedVariant, JobError> {
        self.job_read(|client| {
            let listed = client.query_opt(
                "SELECT variants FROM stockx_products WHERE product_id = $1 AND expires_at > $2",
                &[&product_id, &now],
            )?;
            if listed.is_none() {
                return Ok(CachedVariant::Unknown);
            }
            if let Some(row) = client.query_opt(
                "SELECT variant_id FROM stockx_variants WHERE product_id = $1 AND size_key = $2",
                &[&product_id, &size_key],
            )? {
                return Ok(CachedVariant::Variant {
                    variant_id: row.try_get(0)?,
                });
            }
            let sizes = client
                .query(
                    "SELECT size_key FROM stockx_variants WHERE product_id = $1 AND size_key NOT LIKE '% %'
                     ORDER BY size_key COLLATE \"C\" LIMIT 40",
                    &[&product_id],
                )?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            Ok(CachedVariant::NoSuchSize { sizes })
        })
    }

    fn upsert_stockx_style(
        &self,
        key: &str,
        style_id: &str,
        product_id: Option<&str>,
        title: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<(), JobError> {
        self.job_read(|client| {
            client.execute(
                "INSERT INTO stockx_styles (style_key, style_id, product_id, title, resolved_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (style_key) DO UPDATE SET style_id = excluded.style_id,
                     product_id = excluded.product_id, title = excluded.title,
                     resolved_at = excluded.resolved_at, expires_at = excluded.expires_at",
                &[&key, &style_id, &product_id, &title, &now, &expires_at],
            )?;
            Ok(())
        })
    }

    fn replace_stockx_variants(
        &self,
        product_id: &str,
        variants: &[VariantRow],
        now: i64,
        expires_at: i64,
    ) -> Result<(), JobError> {
        let count = sql_limit(variants.len());
        self.job_tx(|tx| {
            // The upsert locks the product row: two daemons replacing the same list take
            // turns, and the last one's list is what stays.
            tx.execute(
                "INSERT INTO stockx_products (product_id, resolved_at, expires_at, variants)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (product_id) DO UPDATE SET resolved_at = excluded.resolved_at,
                     expires_at = excluded.expires_at, variants = excluded.variants",
                &[&product_id, &now, &expires_at, &count],
            )?;
            tx.execute(
                "DELETE FROM stockx_variants WHERE product_id = $1",
                &[&product_id],
            )?;
            let statement = tx.prepare(
                "INSERT INTO stockx_variants (product_id, size_key, variant_id) VALUES ($1, $2, $3)
                 ON CONFLICT (product_id, size_key) DO NOTHING",
            )?;
            for (key, variant_id) in variant_keys(variants) {
                tx.execute(&statement, &[&product_id, &key, &variant_id])?;
            }
            Ok(())
        })
    }

    fn delete_stockx_style(&self, key: &str) -> Result<(), JobError> {
        self.job_tx(|tx| {
            tx.execute(
                "DELETE FROM stockx_products WHERE product_id IN
                     (SELECT product_id FROM stockx_styles WHERE style_key = $1 AND product_id IS NOT NULL)",
                &[&key],
            )?;
            tx.execute("DELETE FROM stockx_styles WHERE style_key = $1", &[&key])?;
            Ok(())
        })
    }

    fn stockx_cache_totals(&self, now: i64) -> Result<(i64, i64, i64), JobError> {
        self.job_read(|client| {
            let row = client.query_one(
                "SELECT COUNT(*) FILTER (WHERE product_id IS NOT NULL),
                        COUNT(*) FILTER (WHERE product_id IS NULL),
                        (SELECT COUNT(*) FROM stockx_products WHERE expires_at > $1)
                 FROM stockx_styles WHERE expires_at > $1",
                &[&now],
            )?;
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
        })
    }

    fn alias_catalog_row(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(Option<String>, String, i64)>, JobError> {
        self.job_read(|client| {
            client
                .query_opt(
                    "SELECT catalog_id, sizes, expires_at FROM alias_catalog WHERE sku_key = $1 AND expires_at > $2",
                    &[&key, &now],
                )?
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                .transpose()
        })
    }

    fn upsert_alias_item(
        &self,
        key: &str,
        sku: &str,
        catalog_id: Option<&str>,
        sizes: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), JobError> {
        self.job_read(|client| {
            client.execute(
                "INSERT INTO alias_catalog (sku_key, sku, catalog_id, sizes, resolved_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (sku_key) DO UPDATE SET sku = excluded.sku,
                     catalog_id = excluded.catalog_id, sizes = excluded.sizes,
                     resolved_at = excluded.resolved_at, expires_at = excluded.expires_at",
                &[&key, &sku, &catalog_id, &sizes, &now, &expires_at],
            )?;
            Ok(())
        })
    }

    fn delete_alias_item(&self, key: &str) -> Result<(), JobError> {
        self.job_read(|client| {
            client.execute("DELETE FROM alias_catalog WHERE sku_key = $1", &[&key])?;
            Ok(())
        })
    }

    fn alias_cache_totals(&self, now: i64) -> Result<(i64, i64), JobError> {
        self.job_read(|client| {
            let row = client.query_one(
                "SELECT COUNT(*) FILTER (WHERE catalog_id IS NOT NULL),
                        COUNT(*) FILTER (WHERE catalog_id IS NULL)
                 FROM alias_catalog WHERE expires_at > $1",
                &[&now],
            )?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }
}

fn terminal(
    tx: &mut Transaction<'_>,
    id: i64,
    state: &str,
    error: Option<&String>,
    attempts: i64,
    now: i64,
) -> Result<(), JobError> {
    tx.execute(
        "UPDATE jobs SET state = $1, error = $2, attempts = $3, lease_owner = NULL, lease_until = NULL,
                updated_at = $4, finished_at = $4 WHERE id = $5",
        &[&state, &error, &attempts, &now, &id],
    )?;
    Ok(())
}

fn write_result(
    tx: &mut Transaction<'_>,
    job: &Job,
    result: &JobResult,
    now: i64,
) -> Result<(), JobError> {
    let size = job.size.clone().unwrap_or_default();
    match result {
        JobResult::Market {
            lowest_ask,
            highest_bid,
            last_sale,
            currency,
        } => {
            tx.execute(
                "INSERT INTO market_prices (provider, sku, size, lowest_ask, highest_bid, last_sale, currency,
                                            updated_at, job_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (provider, sku, size) DO UPDATE SET lowest_ask = excluded.lowest_ask,
                     highest_bid = excluded.highest_bid, last_sale = excluded.last_sale,
                     currency = excluded.currency, updated_at = excluded.updated_at, job_id = excluded.job_id",
                &[
                    &job.provider,
                    &job.sku,
                    &size,
                    lowest_ask,
                    highest_bid,
                    last_sale,
                    currency,
                    &now,
                    &job.id,
                ],
            )?;
        }
        JobResult::Listings(stats) => {
            tx.execute(
                "INSERT INTO market_prices (provider, sku, size, lowest_ask, highest_bid, last_sale, currency,
                                            updated_at, job_id, listing_count, price_min, price_median,
                                            price_mean, price_max, listings_total)
                 VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6, $7, $8, $4, $9, $10, $11, $12)
                 ON CONFLICT (provider, sku, size) DO UPDATE SET lowest_ask = excluded.lowest_ask,
                     highest_bid = NULL, last_sale = NULL, currency = excluded.currency,
                     updated_at = excluded.updated_at, job_id = excluded.job_id,
                     listing_count = excluded.listing_count, price_min = excluded.price_min,
                     price_median = excluded.price_median, price_mean = excluded.price_mean,
                     price_max = excluded.price_max, listings_total = excluded.listings_total",
                &[
                    &job.provider,
                    &job.sku,
                    &size,
                    &stats.min,
                    &stats.currency,
                    &now,
                    &job.id,
                    &stats.count,
                    &stats.median,
                    &stats.mean,
                    &stats.max,
                    &stats.total,
                ],
            )?;
        }
        JobResult::Keepa(snapshot) => {
            tx.execute(
                "INSERT INTO keepa_products (asin, domain, title, current_amazon, current_new, sales_rank,
                                             avg_90_new, avg_365_new, history_points, raw, updated_at, job_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (asin, domain) DO UPDATE SET title = excluded.title,
                     current_amazon = excluded.current_amazon, current_new = excluded.current_new,
                     sales_rank = excluded.sales_rank, avg_90_new = excluded.avg_90_new,
                     avg_365_new = excluded.avg_365_new, history_points = excluded.history_points,
                     raw = excluded.raw, updated_at = excluded.updated_at, job_id = excluded.job_id",
                &[
                    &job.sku,
                    &snapshot.domain,
                    &snapshot.title,
                    &snapshot.current_amazon,
                    &snapshot.current_new,
                    &snapshot.sales_rank,
                    &snapshot.avg_90_new,
                    &snapshot.avg_365_new,
                    &snapshot.history_points,
                    &snapshot.raw,
                    &now,
                    &job.id,
                ],
            )?;
        }
    }
    Ok(())
}
