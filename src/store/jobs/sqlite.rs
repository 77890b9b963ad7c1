//! [`JobStore`] on the SQLite file: the job queue, its results and the catalog caches
//! (migrations 0004, 0008, 0009, 0014). Writes run in `BEGIN IMMEDIATE` transactions (one
//! writer at a time, so a claim never races another); the fence of a claim or a result
//! is checked in the write's own transaction ([`check_fence`]).

use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::*;
use crate::store::sqlite::check_fence;

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

/// Runs `work` in a `BEGIN IMMEDIATE` transaction and commits it.
fn immediate<T>(
    ledger: &SqliteLedger,
    work: impl FnOnce(&Transaction<'_>) -> Result<T, JobError>,
) -> Result<T, JobError> {
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = work(&tx)?;
        tx.commit()?;
        Ok(value)
    })
}

impl JobStore for SqliteLedger {
    fn insert_job(&self, job: &NewJob, key: &str, now: i64) -> Result<EnqueueOutcome, JobError> {
        immediate(self, |tx| {
            let live: Option<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT id, priority FROM jobs WHERE dedupe_key = ?1 AND state IN ('pending', 'running')",
                )?
                .query_row(params![key], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(match live {
                Some((id, priority)) => {
                    let merged = priority.max(job.priority.value());
                    tx.prepare_cached(
                        "UPDATE jobs SET priority = ?1, updated_at = ?2 WHERE id = ?3",
                    )?
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
            })
        })
    }

    fn job_rows(&self, state: Option<JobState>, limit: i64) -> Result<Vec<Job>, JobError> {
        match state {
            Some(state) => select(
                self,
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY updated_at DESC, id DESC LIMIT ?2"
                ),
                params![state.as_str(), limit],
                job_from_row,
            ),
            None => select(
                self,
                &format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY updated_at DESC, id DESC LIMIT ?1"),
                params![limit],
                job_from_row,
            ),
        }
    }

    fn job_by_id(&self, id: i64) -> Result<Option<Job>, JobError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
                .query_row(params![id], job_from_row)
                .optional()?)
        })
    }

    fn requeue_failed_jobs(&self, provider: Option<&str>, now: i64) -> Result<usize, JobError> {
        immediate(self, |tx| {
            Ok(tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'pending', attempts = 0, not_before = ?1, updated_at = ?1,
                            finished_at = NULL, lease_owner = NULL, lease_until = NULL
                     WHERE id IN (
                         SELECT f.id FROM jobs f
                         WHERE f.state = 'failed' AND (?2 IS NULL OR f.provider = ?2)
                           AND NOT EXISTS (SELECT 1 FROM jobs l WHERE l.dedupe_key = f.dedupe_key AND l.state IN ('pending', 'running'))
                           AND f.id = (SELECT MAX(g.id) FROM jobs g WHERE g.dedupe_key = f.dedupe_key AND g.state = 'failed'))",
                )?
                .execute(params![now, provider])?)
        })
    }

    fn job_counts(&self) -> Result<Vec<(String, String, i64)>, JobError> {
        select(
            self,
            "SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state ORDER BY provider, state",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
    }

    fn job_queue(&self, provider: &str, now: i64) -> Result<ProviderQueue, LedgerError> {
        self.with_read_conn(|conn| {
            let mut queue = ProviderQueue::default();
            let mut statement = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM jobs WHERE provider = ?1 GROUP BY state",
            )?;
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
        })
    }

    fn rescue_expired_jobs(
        &self,
        provider: &str,
        now: i64,
    ) -> Result<Vec<(i64, String)>, JobError> {
        immediate(self, |tx| {
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
        })
    }

    fn claim_jobs(
        &self,
        claimer: &Claimer<'_>,
        batch: i64,
        lease_secs: i64,
        now: i64,
    ) -> Result<Vec<Job>, JobError> {
        immediate(self, |tx| {
            check_fence(
                tx,
                claimer.account,
                claimer.stream,
                claimer.fence,
                "job claim",
                now,
            )?;
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
            Ok(jobs)
        })
    }

    fn has_pending_above(
        &self,
        provider: &str,
        priority: JobPriority,
        now: i64,
    ) -> Result<bool, JobError> {
        self.with_read_conn(|conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE provider = ?1 AND state = 'pending'
                     AND priority > ?2 AND not_before <= ?3)",
            )?
            .query_row(params![provider, priority.value(), now], |row| row.get(0))
            .map_err(JobError::from)
        })
    }

    fn finish_jobs(
        &self,
        claimer: &Claimer<'_>,
        ends: &[(Job, JobEnd)],
        now: i64,
    ) -> Result<Finished, JobError> {
        let owner = format!("{}/{}", claimer.account, claimer.owner);
        immediate(self, |tx| {
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
            Ok(counts)
        })
    }

    fn insert_job_run(&self, run: &JobRun) -> Result<i64, JobError> {
        self.with_conn(|conn| {
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

    fn market_price_rows(&self, limit: i64) -> Result<Vec<MarketPrice>, JobError> {
        select(
            self,
            "SELECT provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at,
                    listing_count, price_min, price_median, price_mean, price_max, listings_total
             FROM market_prices ORDER BY updated_at DESC, provider, sku, size LIMIT ?1",
            params![limit],
            |row| {
                let size: String = row.get(2)?;
                let currency: String = row.get(6)?;
                Ok(MarketPrice {
                    provider: row.get(0)?,
                    sku: row.get(1)?,
                    size: (!size.is_empty()).then_some(size),
                    lowest_ask: row.get(3)?,
                    highest_bid: row.get(4)?,
                    last_sale: row.get(5)?,
                    updated_at: row.get(7)?,
                    listings: listing_stats(
                        row.get(8)?,
                        (row.get(9)?, row.get(10)?, row.get(11)?, row.get(12)?),
                        &currency,
                        row.get(13)?,
                    ),
                    currency,
                })
            },
        )
    }

    fn keepa_product_rows(&self, limit: i64) -> Result<Vec<KeepaProduct>, JobError> {
        select(
            self,
            "SELECT asin, domain, title, current_amazon, current_new, sales_rank, avg_90_new, avg_365_new,
                    history_points, raw, updated_at
             FROM keepa_products ORDER BY updated_at DESC, asin LIMIT ?1",
            params![limit],
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

    fn job_run_rows(&self, limit: i64) -> Result<Vec<JobRun>, JobError> {
        select(
            self,
            "SELECT id, provider, account, started_at, finished_at, jobs_run, succeeded, failed, deferred,
                    not_found, calls_made, rescued, outcome
             FROM job_runs ORDER BY id DESC LIMIT ?1",
            params![limit],
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

    fn stockx_style_row(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(Option<String>, i64)>, JobError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT product_id, expires_at FROM stockx_styles WHERE style_key = ?1 AND expires_at > ?2",
                )?
                .query_row(params![key, now], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?)
        })
    }

    fn stockx_variant_lookup(
        &self,
        product_id: &str,
        size_key: &str,
        now: i64,
    ) -> Result<CachedVariant, JobError> {
        self.with_read_conn(|conn| {
            let listed: Option<i64> = conn
                .prepare_cached(
                    "SELECT variants FROM stockx_products WHERE product_id = ?1 AND expires_at > ?2",
                )?
                .query_row(params![product_id, now], |row| row.get(0))
                .optional()?;
            if listed.is_none() {
                return Ok(CachedVariant::Unknown);
            }
            let variant: Option<String> = conn
                .prepare_cached(
                    "SELECT variant_id FROM stockx_variants WHERE product_id = ?1 AND size_key = ?2",
                )?
                .query_row(params![product_id, size_key], |row| row.get(0))
                .optional()?;
            if let Some(variant_id) = variant {
                return Ok(CachedVariant::Variant { variant_id });
            }
            let sizes: Vec<String> = conn
                .prepare_cached(
                    "SELECT size_key FROM stockx_variants WHERE product_id = ?1 AND size_key NOT LIKE '% %'
                     ORDER BY size_key LIMIT 40",
                )?
                .query_map(params![product_id], |row| row.get(0))?
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
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO stockx_styles (style_key, style_id, product_id, title, resolved_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (style_key) DO UPDATE SET style_id = excluded.style_id,
                     product_id = excluded.product_id, title = excluded.title,
                     resolved_at = excluded.resolved_at, expires_at = excluded.expires_at",
            )?
            .execute(params![key, style_id, product_id, title, now, expires_at])?;
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
        immediate(self, |tx| {
            tx.prepare_cached("DELETE FROM stockx_products WHERE product_id = ?1")?
                .execute(params![product_id])?;
            tx.prepare_cached(
                "INSERT INTO stockx_products (product_id, resolved_at, expires_at, variants) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![product_id, now, expires_at, sql_limit(variants.len())])?;
            for (key, variant_id) in variant_keys(variants) {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO stockx_variants (product_id, size_key, variant_id) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![product_id, key, variant_id])?;
            }
            Ok(())
        })
    }

    fn delete_stockx_style(&self, key: &str) -> Result<(), JobError> {
        immediate(self, |tx| {
            tx.prepare_cached(
                "DELETE FROM stockx_products WHERE product_id IN
                     (SELECT product_id FROM stockx_styles WHERE style_key = ?1 AND product_id IS NOT NULL)",
            )?
            .execute(params![key])?;
            tx.prepare_cached("DELETE FROM stockx_styles WHERE style_key = ?1")?
                .execute(params![key])?;
            Ok(())
        })
    }

    fn stockx_cache_totals(&self, now: i64) -> Result<(i64, i64, i64), JobError> {
        self.with_read_conn(|conn| {
            let (hits, misses): (i64, i64) = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(product_id IS NOT NULL), 0), COALESCE(SUM(product_id IS NULL), 0)
                     FROM stockx_styles WHERE expires_at > ?1",
                )?
                .query_row(params![now], |row| Ok((row.get(0)?, row.get(1)?)))?;
            let products: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM stockx_products WHERE expires_at > ?1")?
                .query_row(params![now], |row| row.get(0))?;
            Ok((hits, misses, products))
        })
    }

    fn alias_catalog_row(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Option<(Option<String>, String, i64)>, JobError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT catalog_id, sizes, expires_at FROM alias_catalog WHERE sku_key = ?1 AND expires_at > ?2",
                )?
                .query_row(params![key, now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional()?)
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
        self.with_conn(|conn| {
            conn.prepare_cached(
                "INSERT INTO alias_catalog (sku_key, sku, catalog_id, sizes, resolved_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (sku_key) DO UPDATE SET sku = excluded.sku,
                     catalog_id = excluded.catalog_id, sizes = excluded.sizes,
                     resolved_at = excluded.resolved_at, expires_at = excluded.expires_at",
            )?
            .execute(params![key, sku, catalog_id, sizes, now, expires_at])?;
            Ok(())
        })
    }

    fn delete_alias_item(&self, key: &str) -> Result<(), JobError> {
        self.with_conn(|conn| {
            conn.prepare_cached("DELETE FROM alias_catalog WHERE sku_key = ?1")?
                .execute(params![key])?;
            Ok(())
        })
    }

    fn alias_cache_totals(&self, now: i64) -> Result<(i64, i64), JobError> {
        self.with_read_conn(|conn| {
            conn.prepare_cached(
                "SELECT COALESCE(SUM(catalog_id IS NOT NULL), 0), COALESCE(SUM(catalog_id IS NULL), 0)
                 FROM alias_catalog WHERE expires_at > ?1",
            )?
            .query_row(params![now], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(JobError::from)
        })
    }
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
