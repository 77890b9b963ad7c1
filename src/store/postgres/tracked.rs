//! Tracked keys and scheduler passes on PostgreSQL ([`TrackedStore`]): the same tables
//! and rules as the SQLite file's (`store::tracked`). The scheduler's selected jobs go
//! through the queue's one enqueue path ([`upsert_live_job`]), in one transaction.

use postgres::Row;

use super::jobs::upsert_live_job;
use super::PgLedger;
use crate::store::jobs::{dedupe_key, sql_limit, JobError, JobPriority, NewJob};
use crate::store::tracked::{
    stored_budget, too_many_tracked, KeyState, PassRecord, TrackOutcome, TrackedItem, TrackedStore,
    MAX_TRACKED, PASS_COLUMNS,
};

fn pass_from_row(row: &Row) -> Result<PassRecord, JobError> {
    Ok(PassRecord {
        id: row.try_get(0)?,
        provider: row.try_get(1)?,
        started_at: row.try_get(2)?,
        finished_at: row.try_get(3)?,
        tracked: row.try_get(4)?,
        fresh: row.try_get(5)?,
        stale_after: row.try_get(6)?,
        live: row.try_get(7)?,
        selected: row.try_get(8)?,
        hot: row.try_get(9)?,
        background: row.try_get(10)?,
        merged: row.try_get(11)?,
        deferred: row.try_get(12)?,
        budget_left: row.try_get(13)?,
        outcome: row.try_get(14)?,
    })
}

impl TrackedStore for PgLedger {
    fn insert_tracked(
        &self,
        items: &[NewJob],
        source: &str,
        now: i64,
    ) -> Result<TrackOutcome, JobError> {
        self.job_tx(|tx| {
            let total: i64 = tx
                .query_one("SELECT COUNT(*) FROM tracked_items", &[])?
                .try_get(0)?;
            let room = MAX_TRACKED.saturating_sub(total);
            let statement = tx.prepare(
                "INSERT INTO tracked_items (provider, sku, size, dedupe_key, added_at, source)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )?;
            let mut outcome = TrackOutcome::default();
            for item in items {
                let key = dedupe_key(&item.provider, &item.sku, item.size.as_deref());
                if sql_limit(outcome.added) >= room {
                    return Err(too_many_tracked());
                }
                let inserted = tx.execute(
                    &statement,
                    &[
                        &item.provider,
                        &item.sku,
                        &item.size.as_deref().unwrap_or(""),
                        &key,
                        &now,
                        &source,
                    ],
                )?;
                if inserted == 1 {
                    outcome.added += 1;
                } else {
                    outcome.already += 1;
                }
            }
            Ok(outcome)
        })
    }

    fn delete_tracked(&self, dedupe_key: &str) -> Result<bool, JobError> {
        self.job_read(|client| {
            Ok(client.execute(
                "DELETE FROM tracked_items WHERE dedupe_key = $1",
                &[&dedupe_key],
            )? == 1)
        })
    }

    fn tracked_rows(
        &self,
        provider: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TrackedItem>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT t.provider, t.sku, t.size, t.dedupe_key, t.added_at, t.source,
                            (SELECT MAX(j.finished_at) FROM jobs j
                              WHERE j.dedupe_key = t.dedupe_key AND j.state = 'succeeded')
                     FROM tracked_items t
                     WHERE $1::text IS NULL OR t.provider = $1
                     ORDER BY t.added_at, t.provider COLLATE \"C\", t.sku COLLATE \"C\", t.size COLLATE \"C\"
                     LIMIT $2",
                    &[&provider, &limit],
                )?
                .iter()
                .map(|row| {
                    let size: String = row.try_get(2)?;
                    Ok(TrackedItem {
                        provider: row.try_get(0)?,
                        sku: row.try_get(1)?,
                        size: (!size.is_empty()).then_some(size),
                        dedupe_key: row.try_get(3)?,
                        added_at: row.try_get(4)?,
                        source: row.try_get(5)?,
                        last_success: row.try_get(6)?,
                    })
                })
                .collect()
        })
    }

    fn tracked_counts(&self) -> Result<Vec<(String, i64)>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT provider, COUNT(*) FROM tracked_items GROUP BY provider
                     ORDER BY provider COLLATE \"C\"",
                    &[],
                )?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
    }

    fn tracked_key_states(&self, provider: &str) -> Result<Vec<KeyState>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    "SELECT t.sku, t.size, t.dedupe_key, t.added_at,
                            MAX(CASE WHEN j.state = 'succeeded' THEN j.finished_at END),
                            MAX(CASE WHEN j.state IN ('succeeded', 'not_found', 'failed') THEN j.finished_at END),
                            COALESCE(BOOL_OR(j.state IN ('pending', 'running')), false)
                     FROM tracked_items t LEFT JOIN jobs j ON j.dedupe_key = t.dedupe_key
                     WHERE t.provider = $1
                     GROUP BY t.provider, t.sku, t.size, t.dedupe_key, t.added_at
                     ORDER BY t.dedupe_key COLLATE \"C\"",
                    &[&provider],
                )?
                .iter()
                .map(|row| {
                    let size: String = row.try_get(1)?;
                    Ok(KeyState {
                        sku: row.try_get(0)?,
                        size: (!size.is_empty()).then_some(size),
                        dedupe_key: row.try_get(2)?,
                        added_at: row.try_get(3)?,
                        last_success: row.try_get(4)?,
                        last_end: row.try_get(5)?,
                        live: row.try_get(6)?,
                    })
                })
                .collect()
        })
    }

    fn live_job_count(&self, provider: &str) -> Result<i64, JobError> {
        self.job_read(|client| {
            Ok(client
                .query_one(
                    "SELECT COUNT(*) FROM jobs WHERE provider = $1 AND state IN ('pending', 'running')",
                    &[&provider],
                )?
                .try_get(0)?)
        })
    }

    fn enqueue_selected_jobs(
        &self,
        provider: &str,
        selected: &[(String, Option<String>, JobPriority)],
        source: &str,
        now: i64,
    ) -> Result<(i64, i64), JobError> {
        self.job_tx(|tx| {
            let (mut created, mut merged) = (0i64, 0i64);
            for (sku, size, priority) in selected {
                let key = dedupe_key(provider, sku, size.as_deref());
                match upsert_live_job(
                    tx,
                    provider,
                    sku,
                    size.as_deref(),
                    &key,
                    priority.value(),
                    source,
                    now,
                )? {
                    crate::store::jobs::EnqueueOutcome::Created { .. } => created += 1,
                    crate::store::jobs::EnqueueOutcome::Merged { .. } => merged += 1,
                }
            }
            Ok((created, merged))
        })
    }

    fn insert_pass(&self, pass: &PassRecord) -> Result<i64, JobError> {
        self.job_read(|client| {
            Ok(client
                .query_one(
                    "INSERT INTO market_job_runs (provider, started_at, finished_at, tracked, fresh, stale_after,
                                                  live, selected, hot, background, merged, deferred,
                                                  budget_left, outcome)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                    &[
                        &pass.provider,
                        &pass.started_at,
                        &pass.finished_at,
                        &pass.tracked,
                        &pass.fresh,
                        &pass.stale_after,
                        &pass.live,
                        &pass.selected,
                        &pass.hot,
                        &pass.background,
                        &pass.merged,
                        &pass.deferred,
                        &stored_budget(pass),
                        &pass.outcome,
                    ],
                )?
                .try_get(0)?)
        })
    }

    fn pass_rows(&self, provider: Option<&str>, limit: i64) -> Result<Vec<PassRecord>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    &format!(
                        "SELECT {PASS_COLUMNS} FROM market_job_runs WHERE $1::text IS NULL OR provider = $1
                         ORDER BY started_at DESC, id DESC LIMIT $2"
                    ),
                    &[&provider, &limit],
                )?
                .iter()
                .map(pass_from_row)
                .collect()
        })
    }

    fn latest_pass_rows(&self) -> Result<Vec<PassRecord>, JobError> {
        self.job_read(|client| {
            client
                .query(
                    &format!(
                        "SELECT {PASS_COLUMNS} FROM market_job_runs
                         WHERE id IN (SELECT MAX(id) FROM market_job_runs GROUP BY provider)
                         ORDER BY provider COLLATE \"C\""
                    ),
                    &[],
                )?
                .iter()
                .map(pass_from_row)
                .collect()
        })
    }

    fn delete_passes_before(&self, before: i64) -> Result<usize, JobError> {
        self.job_read(|client| {
            let deleted = client.execute(
                "DELETE FROM market_job_runs WHERE started_at < $1",
                &[&before],
            )?;
            Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
        })
    }
}
