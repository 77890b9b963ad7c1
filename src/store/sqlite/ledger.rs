//! The [`LedgerStore`] implementation: seeding, claims under `BEGIN IMMEDIATE`,
//! transitions checked against the state machine, fenced writes, applying documents,
//! cooldowns, audits and snapshots.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::*;
use crate::store::{BurstCorrection, MAX_CORRECTIONS_LISTED};

// Statements of hot paths, prepared once per connection (`prepare_cached`): parsing
// them on every call (rusqlite's `execute`/`query_row`) was a visible share of the
// writer's time with a thousand accounts starting at once (`bench reports --scenario
// head-of-line-1000`).
const PRUNE_APPLIED: &str = "DELETE FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND hour_utc < ?3 AND state = 'APPLIED'";
const UPSERT_COOLDOWN: &str = "INSERT INTO cooldowns (scope, reason, started_at, until_at, detail) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (scope) DO UPDATE SET reason = excluded.reason, started_at = excluded.started_at,
     until_at = MAX(cooldowns.until_at, excluded.until_at), detail = excluded.detail";
const SELECT_ACTIVE_COOLDOWN: &str = "SELECT scope, reason, started_at, until_at, detail FROM cooldowns WHERE scope = ?1 AND until_at > ?2";
const UPSERT_CORRECTION: &str = "INSERT INTO quota_corrections (bucket, configured_burst, burst, corrections, first_at, last_at, detail)
     VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5)
     ON CONFLICT (bucket) DO UPDATE SET burst = excluded.burst,
     corrections = quota_corrections.corrections + 1,
     last_at = excluded.last_at, detail = excluded.detail";
const SELECT_AUDIT: &str =
    "SELECT last_run_at FROM audits WHERE account = ?1 AND stream = ?2 AND kind = ?3";
const UPSERT_AUDIT: &str =
    "INSERT INTO audits (account, stream, kind, last_run_at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (account, stream, kind) DO UPDATE SET last_run_at = excluded.last_run_at";
const SELECT_LAST_APPLIED: &str = "SELECT MAX(hour_utc) FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'APPLIED'";
const SELECT_NEXT_RETRY: &str = "SELECT MIN(next_retry_at) FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'";
const SELECT_LAST_ERROR: &str =
    "SELECT last_error FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'
     ORDER BY updated_at DESC LIMIT 1";

/// True when, on a read connection, the store's newest fence for (account, stream) is
/// `fence` and no hour of the stream is claimable at `now`: a claim would find nothing
/// and write nothing. One statement, so both are read from one snapshot.
fn nothing_to_claim(
    ledger: &SqliteLedger,
    account: &str,
    stream: &str,
    fence: i64,
    now: i64,
) -> Result<bool, LedgerError> {
    ledger.with_read_conn(|conn| {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT coalesce((SELECT fence FROM scope_fences WHERE account = ?1 AND stream = ?2) = ?4, false)
                    AND NOT EXISTS (SELECT 1 FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE})"
            ))?
            .query_row(params![account, stream, now, fence], |row| row.get(0))?)
    })
}

/// The most hours [`LedgerStore::seed`] inserts in one transaction.
pub const SEED_BATCH_HOURS: i64 = 10_000;

impl LedgerStore for SqliteLedger {
    fn seed(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        now: i64,
    ) -> Result<u64, LedgerError> {
        // Bounded transactions: at most SEED_BATCH_HOURS rows each, the writer released
        // between them, so a long window never holds the database (or grows the WAL)
        // in one piece.
        let mut inserted = 0u64;
        let mut batch_start = window.start;
        while batch_start < window.end {
            let batch_end = batch_start
                .saturating_add(SEED_BATCH_HOURS.saturating_mul(HOUR))
                .min(window.end);
            // One statement per batch, the hours generated in SQL (as PostgreSQL's
            // generate_series does): a statement per hour cost about 20 µs a row, and a
            // daemon starting with 200 accounts seeds 67,200 hours on its one writer
            // before most accounts' first createReport.
            inserted += self.with_conn(|conn| -> Result<u64, LedgerError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let batch = tx
                    .prepare_cached(
                        "WITH RECURSIVE hours(hour) AS (
                             SELECT ?3 WHERE ?3 < ?4
                             UNION ALL
                             SELECT hour + ?5 FROM hours WHERE hour + ?5 < ?4
                         )
                         INSERT OR IGNORE INTO ledger_hours (account, stream, hour_utc, state, created_at, updated_at)
                         SELECT ?1, ?2, hour, 'MISSING', ?6, ?6 FROM hours",
                    )?
                    .execute(params![account, stream, batch_start, batch_end, HOUR, now])?
                    as u64;
                tx.commit()?;
                Ok(batch)
            })?;
            batch_start = batch_end;
        }
        Ok(inserted)
    }

    fn claim(
        &self,
        account: &str,
        stream: &str,
        max_hours: i64,
        order: ClaimOrder,
        owner: &str,
        fence: WriteFence,
        now: i64,
    ) -> Result<Option<Claim>, LedgerError> {
        let max_hours = max_hours.max(1);
        // Checked by `check_fence` below: a fence above i64::MAX never gets here.
        let fence_value = fence.value().and_then(|fence| i64::try_from(fence).ok());
        // A claim that finds nothing under a fence the store already holds writes
        // nothing, so a read connection answers it without queueing for the writer: a
        // run asks once more after its last window and again whenever a unit ends, and
        // with a thousand streams starting together those empty claims were two thirds
        // of the claim transactions. Anything else (something claimable, a fence new to
        // the store or stale) takes the write path below, which decides.
        if let Some(fence_db) = fence_value {
            if nothing_to_claim(self, account, stream, fence_db, now)? {
                return Ok(None);
            }
        }
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, account, stream, fence, "claim", now)?;
            let direction = match order {
                ClaimOrder::NewestFirst => "DESC",
                ClaimOrder::OldestFirst => "ASC",
            };
            let first: Option<(i64, i64)> = tx
                .prepare_cached(&format!(
                    "SELECT hour_utc, priority FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE}
                         ORDER BY priority DESC, hour_utc {direction} LIMIT 1"
                ))?
                .query_row(params![account, stream, now], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let Some((first, priority)) = first else {
                return Ok(None);
            };
            // The contiguous run from `first` towards older (newest first) or newer hours.
            let (low, high) = match order {
                ClaimOrder::NewestFirst => (first - (max_hours - 1) * HOUR, first),
                ClaimOrder::OldestFirst => (first, first + (max_hours - 1) * HOUR),
            };
            let candidates: Vec<i64> = tx
                .prepare_cached(&format!(
                    "SELECT hour_utc FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE}
                     AND hour_utc BETWEEN ?4 AND ?5 ORDER BY hour_utc {direction}"
                ))?
                .query_map(params![account, stream, now, low, high], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut run_end = first;
            for hour in candidates.iter().skip(1) {
                let next = match order {
                    ClaimOrder::NewestFirst => run_end - HOUR,
                    ClaimOrder::OldestFirst => run_end + HOUR,
                };
                if *hour != next {
                    break;
                }
                run_end = next;
            }
            let window = HourWindow::new(first.min(run_end), first.max(run_end) + HOUR);
            tx.prepare_cached(
                "INSERT INTO ledger_claims (account, stream, start_hour, end_hour, claimed_by, fence, claimed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![account, stream, window.start, window.end, owner, fence_value, now])?;
            let claim_id = tx.last_insert_rowid();
            let sources = placeholders(&HourState::sources_of(HourState::Requested));
            let attempts: Vec<i64> = tx
                .prepare_cached(&format!(
                    "UPDATE ledger_hours SET state = 'REQUESTED', claim_id = ?6, claimed_by = ?7, fence = ?8, updated_at = ?3,
                        report_id = NULL, report_document_id = NULL, document_path = NULL
                     WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE} AND hour_utc >= ?4 AND hour_utc < ?5
                       AND state IN ({sources})
                     RETURNING attempts"
                ))?
                .query_map(
                    params![account, stream, now, window.start, window.end, claim_id, owner, fence_value],
                    |row| row.get(0),
                )?
                .collect::<Result<_, _>>()?;
            if attempts.len() as i64 != window.hours() {
                return Err(LedgerError::IllegalTransition {
                    account: account.to_string(),
                    stream: stream.to_string(),
                    claim_id,
                    detail: format!(
                        "claimed {} of {} hours of {window}",
                        attempts.len(),
                        window.hours()
                    ),
                });
            }
            tx.commit()?;
            Ok(Some(Claim {
                claim_id,
                account: account.to_string(),
                stream: stream.to_string(),
                window,
                state: HourState::Requested,
                report_id: None,
                report_document_id: None,
                document_path: None,
                attempts: attempts.into_iter().max().unwrap_or(0),
                fence,
                priority: Priority::from_value(priority),
            }))
        })
    }

    fn newest_fence(&self, account: &str, stream: &str) -> Result<u64, LedgerError> {
        self.with_read_conn(|conn| newest_fence(conn, account, stream))
    }

    fn in_flight(&self, account: &str, stream: &str) -> Result<Vec<Claim>, LedgerError> {
        // A read: every run asks it at its start, so it does not queue for the writer.
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT claim_id, MIN(hour_utc), MAX(hour_utc), MAX(state), MAX(report_id),
                        MAX(report_document_id), MAX(document_path), MAX(attempts), MAX(priority)
                 FROM ledger_hours
                 WHERE account = ?1 AND stream = ?2 AND state IN ('REQUESTED', 'DOWNLOADED')
                 GROUP BY claim_id ORDER BY MIN(hour_utc) DESC",
            )?;
            let rows = statement.query_map(params![account, stream], |row| {
                let state: String = row.get(3)?;
                Ok(Claim {
                    claim_id: row.get(0)?,
                    account: account.to_string(),
                    stream: stream.to_string(),
                    window: HourWindow::new(row.get(1)?, row.get::<_, i64>(2)? + HOUR),
                    // MAX over the strings: 'REQUESTED' > 'DOWNLOADED', so a mixed claim
                    // (impossible through this API) would resume from the earlier step.
                    state: HourState::parse(&state).unwrap_or(HourState::Requested),
                    report_id: row.get(4)?,
                    report_document_id: row.get(5)?,
                    document_path: row.get(6)?,
                    attempts: row.get(7)?,
                    fence: WriteFence::Missing,
                    priority: Priority::from_value(row.get(8)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn claimed_at(&self, claim_id: i64) -> Result<Option<i64>, LedgerError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached("SELECT claimed_at FROM ledger_claims WHERE id = ?1")?
                .query_row(params![claim_id], |row| row.get(0))
                .optional()?)
        })
    }

    fn set_report_id(&self, claim: &Claim, report_id: &str, now: i64) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(
                &tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "report id write",
                now,
            )?;
            let changed = tx
                .prepare_cached(
                    "UPDATE ledger_hours SET report_id = ?1, updated_at = ?2
                     WHERE account = ?3 AND stream = ?4 AND claim_id = ?5 AND state = 'REQUESTED'",
                )?
                .execute(params![
                    report_id,
                    now,
                    claim.account,
                    claim.stream,
                    claim.claim_id
                ])?;
            if changed as i64 != claim.window.hours() {
                return Err(LedgerError::IllegalTransition {
                    account: claim.account.clone(),
                    stream: claim.stream.clone(),
                    claim_id: claim.claim_id,
                    detail: format!(
                        "report id for {} hours, {changed} are REQUESTED",
                        claim.window.hours()
                    ),
                });
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn mark_downloaded(
        &self,
        claim: &Claim,
        report_document_id: &str,
        document_path: &str,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(
                &tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "download record",
                now,
            )?;
            transition_claim(
                &tx,
                claim,
                HourState::Downloaded,
                ", report_document_id = ?5, document_path = ?6",
                &[&report_document_id, &document_path],
                now,
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Applies a document in bounded steps (issue 13): the feed's rows go, in batches of
    /// `STAGE_BATCH_ROWS`, into a TEMP table of the writer connection (each batch its own
    /// short transaction on the temp database: the main file's write lock is not taken,
    /// and other accounts' writes interleave between batches); then one short transaction
    /// checks the fence, replaces the window's rows with the staged ones (`INSERT ...
    /// SELECT`, no parsing and no Rust per row) and marks the hours APPLIED. Partial data is
    /// never visible: the staged rows live only in the temp table (gone with the
    /// connection on a crash) until the final commit; on any error they are dropped.
    ///
    /// A document of fewer than `STAGE_BATCH_ROWS` rows (nearly every window: a few
    /// hours of a vendor's ASINs) skips the temp table: its rows, already in memory, are
    /// written by that one transaction itself, so the apply takes the writer once instead
    /// of four times (create and clear the staging, stage, swap, clear).
    fn apply_sales(
        &self,
        claim: &Claim,
        feed: RowFeed<'_>,
        now: i64,
    ) -> Result<Applied, LedgerError> {
        let mut batch: Vec<crate::domain::SalesRow> = Vec::new();
        // Whether rows went to the temp table (the document outgrew one batch).
        let mut staging = false;
        // A write failure is the store's, not the document's: keep it aside so it is
        // reported as such, and stop the feed with a placeholder error.
        let mut store_error: Option<rusqlite::Error> = None;
        let fed = {
            let mut sink = |row: crate::domain::SalesRow| {
                batch.push(row);
                if batch.len() < STAGE_BATCH_ROWS {
                    return Ok(());
                }
                let staged = if staging {
                    self.stage_batch(claim.claim_id, &mut batch)
                } else {
                    staging = true;
                    self.with_conn(|conn| {
                        conn.execute_batch(STAGED_SALES_SCHEMA)?;
                        clear_staged(conn, claim.claim_id)
                    })
                    .and_then(|()| self.stage_batch(claim.claim_id, &mut batch))
                };
                staged.map_err(|err| {
                    store_error = Some(err);
                    crate::report::ReportError::Io(std::io::Error::other("store write failed"))
                })
            };
            feed(&mut sink)
        };
        let staged = match (store_error, fed) {
            (Some(err), _) => Err(LedgerError::Sqlite(err)),
            (None, Err(err)) => Err(LedgerError::Document(err)),
            (None, Ok(summary)) if staging => self
                .stage_batch(claim.claim_id, &mut batch)
                .map(|()| summary)
                .map_err(LedgerError::Sqlite),
            (None, Ok(summary)) => Ok(summary),
        };
        let summary = match staged {
            Ok(summary) => summary,
            Err(err) => {
                if staging {
                    let _ = self.with_conn(|conn| clear_staged(conn, claim.claim_id));
                }
                return Err(err);
            }
        };
        let swap_started = std::time::Instant::now();
        let result = self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, "sales apply", now)?;
            tx.prepare_cached(
                "DELETE FROM vendor_realtime_sales WHERE account = ?1 AND hour_utc >= ?2 AND hour_utc < ?3",
            )?
            .execute(params![claim.account, claim.window.start, claim.window.end])?;
            // Document order decides duplicates (the later row wins), as a row-by-row
            // upsert would; `WHERE true` lets SQLite parse the upsert after a SELECT.
            if staging {
                tx.prepare_cached(
                    "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
                     SELECT ?2, hour_utc, asin, ordered_units, ordered_revenue, ?3, ?4
                     FROM temp.staged_sales WHERE claim_id = ?1 AND true ORDER BY seq
                     ON CONFLICT (account, hour_utc, asin) DO UPDATE SET
                        ordered_units = excluded.ordered_units,
                        ordered_revenue = excluded.ordered_revenue,
                        report_id = excluded.report_id,
                        updated_at = excluded.updated_at",
                )?
                .execute(params![claim.claim_id, claim.account, claim.report_id, now])?;
            } else {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (account, hour_utc, asin) DO UPDATE SET
                        ordered_units = excluded.ordered_units,
                        ordered_revenue = excluded.ordered_revenue,
                        report_id = excluded.report_id,
                        updated_at = excluded.updated_at",
                )?;
                for row in &batch {
                    insert.execute(params![
                        claim.account,
                        row.hour_utc,
                        row.asin,
                        row.ordered_units,
                        row.ordered_revenue,
                        claim.report_id,
                        now
                    ])?;
                }
            }
            let hours = transition_claim(
                &tx,
                claim,
                HourState::Applied,
                ", applied_at = ?1, last_error = NULL, next_retry_at = NULL, priority = 100",
                &[],
                now,
            )?;
            finish_claim(&tx, claim, "applied", now)?;
            tx.commit()?;
            Ok(Applied {
                hours: hours as i64,
                summary,
            })
        });
        // The account and stream come from the caller's span (a windowed run's).
        tracing::debug!(
            claim_id = claim.claim_id,
            rows = summary_rows(&result),
            staged_in_temp_table = staging,
            swap_ms = u64::try_from(swap_started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "staged rows swapped in"
        );
        if staging {
            let _ = self.with_conn(|conn| clear_staged(conn, claim.claim_id));
        }
        result
    }

    fn fail(
        &self,
        claim: &Claim,
        error: &str,
        next_retry_at: i64,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(
                &tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "failure record",
                now,
            )?;
            transition_claim(
                &tx,
                claim,
                HourState::Failed,
                ", attempts = attempts + 1, last_error = ?5, next_retry_at = ?6",
                &[&error, &next_retry_at],
                now,
            )?;
            finish_claim(&tx, claim, "failed", now)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn release(&self, claim: &Claim, reason: &str, now: i64) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, &claim.account, &claim.stream, claim.fence, "claim release", now)?;
            transition_claim(
                &tx,
                claim,
                HourState::Missing,
                ", claim_id = NULL, report_id = NULL, report_document_id = NULL, document_path = NULL",
                &[],
                now,
            )?;
            finish_claim(&tx, claim, reason, now)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn reset_window(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut total = 0u64;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO ledger_hours (account, stream, hour_utc, state, priority, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'MISSING', ?4, ?5, ?5)",
                )?;
                let mut hour = window.start;
                while hour < window.end {
                    total += insert.execute(params![account, stream, hour, priority as i64, now])? as u64;
                    hour += HOUR;
                }
            }
            // Only finished hours are reset: work in flight keeps its report handle.
            let sources: Vec<HourState> = HourState::sources_of(HourState::Missing)
                .into_iter()
                .filter(|state| matches!(state, HourState::Applied | HourState::Failed))
                .collect();
            total += tx.execute(
                &format!(
                    "UPDATE ledger_hours SET state = 'MISSING', priority = ?5, attempts = 0, next_retry_at = NULL,
                        claim_id = NULL, updated_at = ?6
                     WHERE account = ?1 AND stream = ?2 AND hour_utc >= ?3 AND hour_utc < ?4
                       AND state IN ({})",
                    placeholders(&sources)
                ),
                params![account, stream, window.start, window.end, priority as i64, now],
            )? as u64;
            tx.commit()?;
            Ok(total)
        })
    }

    fn prune(&self, account: &str, stream: &str, before: i64) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached(PRUNE_APPLIED)?
                .execute(params![account, stream, before])? as u64)
        })
    }

    fn set_cooldown(&self, cooldown: &Cooldown) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            conn.prepare_cached(UPSERT_COOLDOWN)?.execute(params![
                cooldown.scope,
                cooldown.reason,
                cooldown.started_at,
                cooldown.until_at,
                cooldown.detail
            ])?;
            Ok(())
        })
    }

    fn active_cooldown(&self, scope: &str, now: i64) -> Result<Option<Cooldown>, LedgerError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached(SELECT_ACTIVE_COOLDOWN)?
                .query_row(params![scope, now], cooldown_from_row)
                .optional()?)
        })
    }

    fn clear_cooldown(&self, scope: &str) -> Result<bool, LedgerError> {
        // Every run clears its lock conditions when it takes its lease, and there is
        // nearly always none: a read connection says so without queueing for the writer
        // (a cooldown set after this look was set after the clear, as if the clear had
        // come a moment sooner).
        let exists = self.with_read_conn(|conn| {
            conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM cooldowns WHERE scope = ?1)")?
                .query_row(params![scope], |row| row.get::<_, bool>(0))
        })?;
        if !exists {
            return Ok(false);
        }
        self.with_conn(|conn| {
            Ok(conn
                .prepare_cached("DELETE FROM cooldowns WHERE scope = ?1")?
                .execute(params![scope])?
                > 0)
        })
    }

    fn record_correction(&self, correction: &BurstCorrection) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            conn.prepare_cached(UPSERT_CORRECTION)?.execute(params![
                correction.bucket,
                correction.configured_burst,
                correction.burst,
                correction.last_at,
                correction.detail
            ])?;
            Ok(())
        })
    }

    fn corrections(&self) -> Result<Vec<BurstCorrection>, LedgerError> {
        self.with_read_conn(|conn| {
            let mut statement = conn.prepare(
                "SELECT bucket, configured_burst, burst, corrections, first_at, last_at, detail
                 FROM quota_corrections ORDER BY last_at DESC, bucket LIMIT ?1",
            )?;
            let rows = statement.query_map(params![MAX_CORRECTIONS_LISTED as i64], |row| {
                Ok(BurstCorrection {
                    bucket: row.get(0)?,
                    configured_burst: row.get(1)?,
                    burst: row.get(2)?,
                    corrections: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    first_at: row.get(4)?,
                    last_at: row.get(5)?,
                    detail: row.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn last_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
    ) -> Result<Option<i64>, LedgerError> {
        self.with_read_conn(|conn| {
            Ok(conn
                .prepare_cached(SELECT_AUDIT)?
                .query_row(params![account, stream, kind], |row| row.get(0))
                .optional()?)
        })
    }

    fn record_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
        at: i64,
    ) -> Result<(), LedgerError> {
        self.with_conn(|conn| {
            conn.prepare_cached(UPSERT_AUDIT)?
                .execute(params![account, stream, kind, at])?;
            Ok(())
        })
    }

    fn snapshot(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<StreamSnapshot, LedgerError> {
        self.with_read_conn(|conn| {
            let mut snapshot = StreamSnapshot {
                account: account.to_string(),
                stream: stream.to_string(),
                ..StreamSnapshot::default()
            };
            let mut counts = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM ledger_hours WHERE account = ?1 AND stream = ?2 GROUP BY state",
            )?;
            let rows = counts.query_map(params![account, stream], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (state, count) = row?;
                if let Some(index) = HourState::parse(&state)
                    .and_then(|state| HourState::ALL.iter().position(|s| *s == state))
                {
                    snapshot.counts[index] = count as u64;
                }
            }
            snapshot.last_applied_hour = conn
                .prepare_cached(SELECT_LAST_APPLIED)?
                .query_row(params![account, stream], |row| row.get(0))?;
            let next_claimable = format!(
                "SELECT hour_utc FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND {CLAIMABLE}
                 ORDER BY priority DESC, hour_utc DESC LIMIT 1"
            );
            snapshot.next_claimable_hour = conn
                .prepare_cached(&next_claimable)?
                .query_row(params![account, stream, now], |row| row.get(0))
                .optional()?;
            snapshot.next_retry_at = conn
                .prepare_cached(SELECT_NEXT_RETRY)?
                .query_row(params![account, stream], |row| row.get(0))?;
            snapshot.last_error = conn
                .prepare_cached(SELECT_LAST_ERROR)?
                .query_row(params![account, stream], |row| row.get(0))
                .optional()?
                .flatten();
            Ok(snapshot)
        })
    }
}

/// Rows per staging transaction of [`LedgerStore::apply_sales`]: a few milliseconds of
/// writer time each.
const STAGE_BATCH_ROWS: usize = 5_000;

/// The staging table: per writer connection (TEMP), so a crash leaves nothing behind.
/// `seq` keeps document order across batches; `claim_id` keeps concurrent applies apart.
const STAGED_SALES_SCHEMA: &str = "CREATE TEMP TABLE IF NOT EXISTS staged_sales (
    seq             INTEGER PRIMARY KEY,
    claim_id        INTEGER NOT NULL,
    hour_utc        INTEGER NOT NULL,
    asin            TEXT    NOT NULL,
    ordered_units   INTEGER NOT NULL,
    ordered_revenue REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS temp.staged_sales_claim ON staged_sales (claim_id, seq);";

fn summary_rows(result: &Result<Applied, LedgerError>) -> u64 {
    result
        .as_ref()
        .map(|applied| applied.summary.rows)
        .unwrap_or(0)
}

fn clear_staged(conn: &rusqlite::Connection, claim_id: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("DELETE FROM temp.staged_sales WHERE claim_id = ?1")?
        .execute(params![claim_id])?;
    Ok(())
}

impl SqliteLedger {
    /// Writes `batch` to the staging table in one transaction on the temp database (the
    /// main file is not locked) and empties it.
    fn stage_batch(
        &self,
        claim_id: i64,
        batch: &mut Vec<crate::domain::SalesRow>,
    ) -> Result<(), rusqlite::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO temp.staged_sales (claim_id, hour_utc, asin, ordered_units, ordered_revenue)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for row in batch.drain(..) {
                    insert.execute(params![
                        claim_id,
                        row.hour_utc,
                        row.asin,
                        row.ordered_units,
                        row.ordered_revenue
                    ])?;
                }
            }
            tx.commit()
        })
    }
}
