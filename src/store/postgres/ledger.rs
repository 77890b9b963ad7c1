//! [`LedgerStore`] on PostgreSQL: seeding with `generate_series`, claims with
//! `FOR UPDATE SKIP LOCKED`, transitions checked against the state machine, fenced
//! writes, applying documents in one transaction, cooldowns, audits and snapshots.

use std::collections::HashMap;

use super::*;
use crate::domain::{ClaimOrder, HourWindow, SalesRow, HOUR};
use crate::store::{
    Applied, BurstCorrection, Cooldown, LedgerStore, Priority, RowFeed, StreamSnapshot,
    MAX_CORRECTIONS_LISTED,
};

/// The most hours [`LedgerStore::seed`] inserts in one transaction.
const SEED_BATCH_HOURS: i64 = 10_000;

/// Sales rows per insert statement of [`LedgerStore::apply_sales`].
const APPLY_BATCH_ROWS: usize = 5_000;

impl LedgerStore for PgLedger {
    fn as_postgres(&self) -> Option<&PgLedger> {
        Some(self)
    }

    fn unavailable(&self) -> Option<crate::store::StoreDown> {
        self.known_down()
    }

    fn seed(
        &self,
        account: &str,
        stream: &str,
        window: HourWindow,
        now: i64,
    ) -> Result<u64, LedgerError> {
        let mut inserted = 0u64;
        let mut batch_start = window.start;
        while batch_start < window.end {
            let batch_end = batch_start
                .saturating_add(SEED_BATCH_HOURS.saturating_mul(HOUR))
                .min(window.end);
            // generate_series is inclusive: the last hour is batch_end - HOUR.
            let last = batch_end.saturating_sub(HOUR);
            inserted = inserted.saturating_add(self.with_client(|client| {
                Ok(client.execute(
                    "INSERT INTO ledger_hours (account, stream, hour_utc, state, created_at, updated_at)
                     SELECT $1, $2, hour, 'MISSING', $5, $5 FROM generate_series($3::bigint, $4::bigint, 3600) AS hour
                     ON CONFLICT (account, stream, hour_utc) DO NOTHING",
                    &[&account, &stream, &batch_start, &last, &now],
                )?)
            })?);
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
        let max_hours = max_hours.clamp(1, SEED_BATCH_HOURS);
        let fence_value = fence.value().and_then(|fence| i64::try_from(fence).ok());
        let direction = match order {
            ClaimOrder::NewestFirst => "DESC",
            ClaimOrder::OldestFirst => "ASC",
        };
        self.with_tx(|tx| {
            check_fence(tx, account, stream, fence, "claim", now)?;
            // The first claimable hour no other transaction holds; rows locked by a
            // concurrent claim are skipped, not waited for.
            let first_opt = tx.query_opt(
                format!(
                    "SELECT hour_utc, priority FROM ledger_hours WHERE account = $1 AND stream = $2 AND {CLAIMABLE}
                     ORDER BY priority DESC, hour_utc {direction} LIMIT 1 FOR UPDATE SKIP LOCKED"
                )
                .as_str(),
                &[&account, &stream, &now],
            )?;
            let Some(first_row) = first_opt else {
                return Ok(None);
            };
            let first: i64 = first_row.get(0);
            let priority: i64 = first_row.get(1);
            let span = (max_hours - 1).saturating_mul(HOUR);
            let (low, high) = match order {
                ClaimOrder::NewestFirst => (first.saturating_sub(span), first),
                ClaimOrder::OldestFirst => (first, first.saturating_add(span)),
            };
            // The run's candidates, locked; a row another claim holds is skipped and so
            // ends the contiguous run before it.
            let candidates: Vec<i64> = tx
                .query(
                    format!(
                        "SELECT hour_utc FROM ledger_hours WHERE account = $1 AND stream = $2 AND {CLAIMABLE}
                         AND hour_utc BETWEEN $4 AND $5 ORDER BY hour_utc {direction} FOR UPDATE SKIP LOCKED"
                    )
                    .as_str(),
                    &[&account, &stream, &now, &low, &high],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut run_end = first;
            for hour in candidates.iter().skip_while(|hour| **hour != first).skip(1) {
                let next = match order {
                    ClaimOrder::NewestFirst => run_end.saturating_sub(HOUR),
                    ClaimOrder::OldestFirst => run_end.saturating_add(HOUR),
                };
                if *hour != next {
                    break;
                }
                run_end = next;
            }
            let window = HourWindow::new(first.min(run_end), first.max(run_end).saturating_add(HOUR));
            let claim_id: i64 = tx
                .query_one(
                    "INSERT INTO ledger_claims (account, stream, start_hour, end_hour, claimed_by, fence, claimed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&account, &stream, &window.start, &window.end, &owner, &fence_value, &now],
                )?
                .get(0);
            let sources = placeholders(&HourState::sources_of(HourState::Requested));
            let attempts: Vec<i64> = tx
                .query(
                    format!(
                        "UPDATE ledger_hours SET state = 'REQUESTED', claim_id = $6, claimed_by = $7, fence = $8, updated_at = $3,
                            report_id = NULL, report_document_id = NULL, document_path = NULL
                         WHERE account = $1 AND stream = $2 AND {CLAIMABLE} AND hour_utc >= $4 AND hour_utc < $5
                           AND state IN ({sources})
                         RETURNING attempts"
                    )
                    .as_str(),
                    &[&account, &stream, &now, &window.start, &window.end, &claim_id, &owner, &fence_value],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if i64::try_from(attempts.len()).ok() != Some(window.hours()) {
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

    fn in_flight(&self, account: &str, stream: &str) -> Result<Vec<Claim>, LedgerError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT claim_id, MIN(hour_utc), MAX(hour_utc), MAX(state), MAX(report_id),
                        MAX(report_document_id), MAX(document_path), MAX(attempts), MAX(priority)
                 FROM ledger_hours
                 WHERE account = $1 AND stream = $2 AND state IN ('REQUESTED', 'DOWNLOADED')
                 GROUP BY claim_id ORDER BY MIN(hour_utc) DESC",
                &[&account, &stream],
            )?;
            let mut claims = Vec::with_capacity(rows.len());
            for row in rows {
                let claim_id_opt: Option<i64> = row.get(0);
                let state: String = row.get(3);
                let last: i64 = row.get(2);
                claims.push(Claim {
                    claim_id: claim_id_opt.unwrap_or(0),
                    account: account.to_string(),
                    stream: stream.to_string(),
                    window: HourWindow::new(row.get(1), last.saturating_add(HOUR)),
                    // MAX over the strings: 'REQUESTED' > 'DOWNLOADED', as in SQLite.
                    state: HourState::parse(&state).unwrap_or(HourState::Requested),
                    report_id: row.get(4),
                    report_document_id: row.get(5),
                    document_path: row.get(6),
                    attempts: row.get(7),
                    fence: WriteFence::Missing,
                    priority: Priority::from_value(row.get(8)),
                });
            }
            Ok(claims)
        })
    }

    fn claimed_at(&self, claim_id: i64) -> Result<Option<i64>, LedgerError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(
                    "SELECT claimed_at FROM ledger_claims WHERE id = $1",
                    &[&claim_id],
                )?
                .map(|row| row.get(0)))
        })
    }

    fn newest_fence(&self, account: &str, stream: &str) -> Result<u64, LedgerError> {
        self.with_client(|client| {
            let newest_opt: Option<i64> = client
                .query_opt(
                    "SELECT fence FROM scope_fences WHERE account = $1 AND stream = $2",
                    &[&account, &stream],
                )?
                .map(|row| row.get(0));
            Ok(newest_opt
                .and_then(|fence| u64::try_from(fence).ok())
                .unwrap_or(0))
        })
    }

    fn set_report_id(&self, claim: &Claim, report_id: &str, now: i64) -> Result<(), LedgerError> {
        self.with_tx(|tx| {
            check_fence(
                tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "report id write",
                now,
            )?;
            let changed = tx.execute(
                "UPDATE ledger_hours SET report_id = $1, updated_at = $2
                 WHERE account = $3 AND stream = $4 AND claim_id = $5 AND state = 'REQUESTED'",
                &[
                    &report_id,
                    &now,
                    &claim.account,
                    &claim.stream,
                    &claim.claim_id,
                ],
            )?;
            if i64::try_from(changed).ok() != Some(claim.window.hours()) {
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
        self.with_tx(|tx| {
            check_fence(
                tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "download record",
                now,
            )?;
            transition_claim(
                tx,
                claim,
                HourState::Downloaded,
                ", report_document_id = $5, document_path = $6",
                &[&report_document_id, &document_path],
                now,
            )?;
            Ok(())
        })
    }

    /// One transaction: the window's rows are deleted, the feed's rows inserted in
    /// batches as they are parsed (duplicates: the later row wins, as in SQLite), then the
    /// fence is checked and the hours marked APPLIED. Partial data is never visible
    /// (MVCC: nobody sees the rows before the commit); any error rolls everything back.
    /// Not retried on a serialization failure: the feed can be read only once.
    fn apply_sales(
        &self,
        claim: &Claim,
        feed: RowFeed<'_>,
        now: i64,
    ) -> Result<Applied, LedgerError> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        tx.execute(
            "DELETE FROM vendor_realtime_sales WHERE account = $1 AND hour_utc >= $2 AND hour_utc < $3",
            &[&claim.account, &claim.window.start, &claim.window.end],
        )?;
        let mut batch: Vec<SalesRow> = Vec::with_capacity(APPLY_BATCH_ROWS);
        // A write failure is the store's, not the document's: kept aside and reported as
        // such; the feed is stopped with a placeholder error.
        let mut store_error: Option<LedgerError> = None;
        let fed = {
            let mut sink = |row: SalesRow| {
                batch.push(row);
                if batch.len() < APPLY_BATCH_ROWS {
                    return Ok(());
                }
                insert_sales(&mut tx, claim, &mut batch, now).map_err(|err| {
                    store_error = Some(err);
                    crate::report::ReportError::Io(std::io::Error::other("store write failed"))
                })
            };
            feed(&mut sink)
        };
        let summary = match (store_error, fed) {
            (Some(err), _) => return Err(err),
            (None, Err(err)) => return Err(LedgerError::Document(err)),
            (None, Ok(summary)) => summary,
        };
        insert_sales(&mut tx, claim, &mut batch, now)?;
        check_fence(
            &mut tx,
            &claim.account,
            &claim.stream,
            claim.fence,
            "sales apply",
            now,
        )?;
        let hours = transition_claim(
            &mut tx,
            claim,
            HourState::Applied,
            ", applied_at = $1, last_error = NULL, next_retry_at = NULL, priority = 100",
            &[],
            now,
        )?;
        finish_claim(&mut tx, claim, "applied", now)?;
        tx.commit()?;
        Ok(Applied {
            hours: i64::try_from(hours).unwrap_or(i64::MAX),
            summary,
        })
    }

    fn fail(
        &self,
        claim: &Claim,
        error: &str,
        next_retry_at: i64,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.with_tx(|tx| {
            check_fence(
                tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "failure record",
                now,
            )?;
            transition_claim(
                tx,
                claim,
                HourState::Failed,
                ", attempts = attempts + 1, last_error = $5, next_retry_at = $6",
                &[&error, &next_retry_at],
                now,
            )?;
            finish_claim(tx, claim, "failed", now)
        })
    }

    fn release(&self, claim: &Claim, reason: &str, now: i64) -> Result<(), LedgerError> {
        self.with_tx(|tx| {
            check_fence(
                tx,
                &claim.account,
                &claim.stream,
                claim.fence,
                "claim release",
                now,
            )?;
            transition_claim(
                tx,
                claim,
                HourState::Missing,
                ", claim_id = NULL, report_id = NULL, report_document_id = NULL, document_path = NULL",
                &[],
                now,
            )?;
            finish_claim(tx, claim, reason, now)
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
        let priority_value = priority as i64;
        let last = window.end.saturating_sub(HOUR);
        // Only finished hours are reset: work in flight keeps its report handle.
        let sources: Vec<HourState> = HourState::sources_of(HourState::Missing)
            .into_iter()
            .filter(|state| matches!(state, HourState::Applied | HourState::Failed))
            .collect();
        self.with_tx(|tx| {
            let inserted = if window.start < window.end {
                tx.execute(
                    "INSERT INTO ledger_hours (account, stream, hour_utc, state, priority, created_at, updated_at)
                     SELECT $1, $2, hour, 'MISSING', $5, $6, $6 FROM generate_series($3::bigint, $4::bigint, 3600) AS hour
                     ON CONFLICT (account, stream, hour_utc) DO NOTHING",
                    &[&account, &stream, &window.start, &last, &priority_value, &now],
                )?
            } else {
                0
            };
            let reset = tx.execute(
                format!(
                    "UPDATE ledger_hours SET state = 'MISSING', priority = $5, attempts = 0, next_retry_at = NULL,
                        claim_id = NULL, updated_at = $6
                     WHERE account = $1 AND stream = $2 AND hour_utc >= $3 AND hour_utc < $4
                       AND state IN ({})",
                    placeholders(&sources)
                )
                .as_str(),
                &[&account, &stream, &window.start, &window.end, &priority_value, &now],
            )?;
            Ok(inserted.saturating_add(reset))
        })
    }

    fn prune(&self, account: &str, stream: &str, before: i64) -> Result<u64, LedgerError> {
        self.with_client(|client| {
            Ok(client.execute(
                "DELETE FROM ledger_hours WHERE account = $1 AND stream = $2 AND hour_utc < $3 AND state = 'APPLIED'",
                &[&account, &stream, &before],
            )?)
        })
    }

    fn set_cooldown(&self, cooldown: &Cooldown) -> Result<(), LedgerError> {
        self.with_client(|client| {
            client.execute(
                "INSERT INTO cooldowns (scope, reason, started_at, until_at, detail) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (scope) DO UPDATE SET reason = excluded.reason, started_at = excluded.started_at,
                    until_at = GREATEST(cooldowns.until_at, excluded.until_at), detail = excluded.detail",
                &[
                    &cooldown.scope,
                    &cooldown.reason,
                    &cooldown.started_at,
                    &cooldown.until_at,
                    &cooldown.detail,
                ],
            )?;
            Ok(())
        })
    }

    fn active_cooldown(&self, scope: &str, now: i64) -> Result<Option<Cooldown>, LedgerError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(
                    "SELECT scope, reason, started_at, until_at, detail FROM cooldowns WHERE scope = $1 AND until_at > $2",
                    &[&scope, &now],
                )?
                .map(|row| cooldown_of(&row)))
        })
    }

    fn clear_cooldown(&self, scope: &str) -> Result<bool, LedgerError> {
        self.with_client(|client| {
            Ok(client.execute("DELETE FROM cooldowns WHERE scope = $1", &[&scope])? > 0)
        })
    }

    fn record_correction(&self, correction: &BurstCorrection) -> Result<(), LedgerError> {
        self.with_client(|client| {
            client.execute(
                "INSERT INTO quota_corrections (bucket, configured_burst, burst, corrections, first_at, last_at, detail)
                 VALUES ($1, $2, $3, 1, $4, $4, $5)
                 ON CONFLICT (bucket) DO UPDATE SET burst = excluded.burst,
                    corrections = quota_corrections.corrections + 1,
                    last_at = excluded.last_at, detail = excluded.detail",
                &[
                    &correction.bucket,
                    &correction.configured_burst,
                    &correction.burst,
                    &correction.last_at,
                    &correction.detail,
                ],
            )?;
            Ok(())
        })
    }

    fn corrections(&self) -> Result<Vec<BurstCorrection>, LedgerError> {
        self.with_client(|client| {
            let rows = client.query(
                "SELECT bucket, configured_burst, burst, corrections, first_at, last_at, detail
                 FROM quota_corrections ORDER BY last_at DESC, bucket LIMIT $1",
                &[&(MAX_CORRECTIONS_LISTED as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|row| BurstCorrection {
                    bucket: row.get(0),
                    configured_burst: row.get(1),
                    burst: row.get(2),
                    corrections: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
                    first_at: row.get(4),
                    last_at: row.get(5),
                    detail: row.get(6),
                })
                .collect())
        })
    }

    fn last_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
    ) -> Result<Option<i64>, LedgerError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(
                    "SELECT last_run_at FROM audits WHERE account = $1 AND stream = $2 AND kind = $3",
                    &[&account, &stream, &kind],
                )?
                .map(|row| row.get(0)))
        })
    }

    fn record_audit(
        &self,
        account: &str,
        stream: &str,
        kind: &str,
        at: i64,
    ) -> Result<(), LedgerError> {
        self.with_client(|client| {
            client.execute(
                "INSERT INTO audits (account, stream, kind, last_run_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (account, stream, kind) DO UPDATE SET last_run_at = excluded.last_run_at",
                &[&account, &stream, &kind, &at],
            )?;
            Ok(())
        })
    }

    fn snapshot(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<StreamSnapshot, LedgerError> {
        self.with_client(|client| {
            let mut snapshot = StreamSnapshot {
                account: account.to_string(),
                stream: stream.to_string(),
                ..StreamSnapshot::default()
            };
            for row in client.query(
                "SELECT state, COUNT(*) FROM ledger_hours WHERE account = $1 AND stream = $2 GROUP BY state",
                &[&account, &stream],
            )? {
                let state: String = row.get(0);
                let count: i64 = row.get(1);
                if let Some(index) = HourState::parse(&state)
                    .and_then(|state| HourState::ALL.iter().position(|s| *s == state))
                {
                    snapshot.counts[index] = u64::try_from(count).unwrap_or(0);
                }
            }
            snapshot.last_applied_hour = client
                .query_one(
                    "SELECT MAX(hour_utc) FROM ledger_hours WHERE account = $1 AND stream = $2 AND state = 'APPLIED'",
                    &[&account, &stream],
                )?
                .get(0);
            snapshot.next_claimable_hour = client
                .query_opt(
                    format!(
                        "SELECT hour_utc FROM ledger_hours WHERE account = $1 AND stream = $2 AND {CLAIMABLE}
                         ORDER BY priority DESC, hour_utc DESC LIMIT 1"
                    )
                    .as_str(),
                    &[&account, &stream, &now],
                )?
                .map(|row| row.get(0));
            snapshot.next_retry_at = client
                .query_one(
                    "SELECT MIN(next_retry_at) FROM ledger_hours WHERE account = $1 AND stream = $2 AND state = 'FAILED'",
                    &[&account, &stream],
                )?
                .get(0);
            snapshot.last_error = client
                .query_opt(
                    "SELECT last_error FROM ledger_hours WHERE account = $1 AND stream = $2 AND state = 'FAILED'
                     ORDER BY updated_at DESC LIMIT 1",
                    &[&account, &stream],
                )?
                .and_then(|row| row.get(0));
            Ok(snapshot)
        })
    }
}

pub(super) fn cooldown_of(row: &postgres::Row) -> Cooldown {
    Cooldown {
        scope: row.get(0),
        reason: row.get(1),
        started_at: row.get(2),
        until_at: row.get(3),
        detail: row.get(4),
    }
}

/// Inserts `batch` (emptied) into `vendor_realtime_sales` with one statement; within the
/// batch the later row of a key wins (one statement may not update a row twice), across
/// batches the upsert does the same.
fn insert_sales(
    tx: &mut Transaction<'_>,
    claim: &Claim,
    batch: &mut Vec<SalesRow>,
    now: i64,
) -> Result<(), LedgerError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut last_of: HashMap<(i64, &str), usize> = HashMap::with_capacity(batch.len());
    for (index, row) in batch.iter().enumerate() {
        last_of.insert((row.hour_utc, row.asin.as_str()), index);
    }
    let mut hours = Vec::with_capacity(last_of.len());
    let mut asins = Vec::with_capacity(last_of.len());
    let mut units = Vec::with_capacity(last_of.len());
    let mut revenue = Vec::with_capacity(last_of.len());
    for (index, row) in batch.iter().enumerate() {
        if last_of.get(&(row.hour_utc, row.asin.as_str())) != Some(&index) {
            continue;
        }
        hours.push(row.hour_utc);
        asins.push(row.asin.as_str());
        units.push(row.ordered_units);
        revenue.push(row.ordered_revenue);
    }
    tx.execute(
        "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
         SELECT $1, row.hour_utc, row.asin, row.ordered_units, row.ordered_revenue, $6, $7
         FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::float8[])
              AS row (hour_utc, asin, ordered_units, ordered_revenue)
         ON CONFLICT (account, hour_utc, asin) DO UPDATE SET
            ordered_units = excluded.ordered_units,
            ordered_revenue = excluded.ordered_revenue,
            report_id = excluded.report_id,
            updated_at = excluded.updated_at",
        &[&claim.account, &hours, &asins, &units, &revenue, &claim.report_id, &now],
    )?;
    batch.clear();
    Ok(())
}
