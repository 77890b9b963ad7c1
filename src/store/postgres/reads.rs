//! [`LedgerReads`] on PostgreSQL: the same queries as the SQLite store's read surfaces
//! (`sqlite/queries.rs`, `sales.rs`, `history.rs`), with PostgreSQL's types (`SUM` of a
//! `BIGINT` is `NUMERIC`, so sums are cast back).

use super::ledger::cooldown_of;
use super::*;
use crate::store::history::{HourCell, MAX_CELL_ERROR_CHARS};
use crate::store::reads::{FailedHour, HourDiagnostics, LedgerReads, SalesSummary};
use crate::store::sales::{AsinSales, HourSales, SalesTotals};
use crate::store::{Cooldown, Priority};

impl LedgerReads for PgLedger {
    fn hour_diagnostics(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<HourDiagnostics, LedgerError> {
        self.with_client(|client| {
            let row = client.query_one(
                "SELECT COUNT(*),
                        MIN(CASE WHEN state IN ('REQUESTED', 'DOWNLOADED') THEN updated_at END),
                        SUM(CASE WHEN state = 'MISSING' OR (state = 'FAILED' AND next_retry_at <= $3) THEN 1 ELSE 0 END)::bigint,
                        MIN(CASE WHEN state = 'MISSING' OR (state = 'FAILED' AND next_retry_at <= $3) THEN updated_at END),
                        SUM(CASE WHEN state = 'FAILED' THEN 1 ELSE 0 END)::bigint,
                        MAX(CASE WHEN state = 'FAILED' THEN attempts END),
                        MIN(CASE WHEN state = 'FAILED' THEN hour_utc END),
                        MAX(CASE WHEN state = 'FAILED' THEN hour_utc END)
                 FROM ledger_hours WHERE account = $1 AND stream = $2",
                &[&account, &stream, &now],
            )?;
            let rows: i64 = row.get(0);
            let in_flight_since: Option<i64> = row.get(1);
            let claimable: Option<i64> = row.get(2);
            let claimable_since: Option<i64> = row.get(3);
            let failed: Option<i64> = row.get(4);
            let max_attempts: Option<i64> = row.get(5);
            let oldest: Option<i64> = row.get(6);
            let newest: Option<i64> = row.get(7);
            let in_flight_report: Option<String> = if in_flight_since.is_some() {
                client
                    .query_opt(
                        "SELECT report_id FROM ledger_hours
                         WHERE account = $1 AND stream = $2 AND state IN ('REQUESTED', 'DOWNLOADED')
                         ORDER BY updated_at LIMIT 1",
                        &[&account, &stream],
                    )?
                    .and_then(|row| row.get(0))
            } else {
                None
            };
            let last_claim: Option<(i64, String)> = client
                .query_opt(
                    "SELECT claimed_at, claimed_by FROM ledger_claims
                     WHERE account = $1 AND stream = $2 ORDER BY id DESC LIMIT 1",
                    &[&account, &stream],
                )?
                .map(|row| (row.get(0), row.get(1)));
            let failed = u64::try_from(failed.unwrap_or(0)).unwrap_or(0);
            let auth_error: Option<String> = if failed > 0 {
                client
                    .query_opt(
                        "SELECT last_error FROM ledger_hours
                         WHERE account = $1 AND stream = $2 AND state = 'FAILED'
                           AND lower(last_error) LIKE '%authentication%'
                         ORDER BY updated_at DESC LIMIT 1",
                        &[&account, &stream],
                    )?
                    .and_then(|row| row.get(0))
            } else {
                None
            };
            Ok(HourDiagnostics {
                rows: u64::try_from(rows).unwrap_or(0),
                in_flight_since,
                in_flight_report,
                claimable_now: u64::try_from(claimable.unwrap_or(0)).unwrap_or(0),
                claimable_since,
                failed,
                max_attempts: max_attempts.unwrap_or(0),
                oldest_failed_hour: oldest.unwrap_or(0),
                newest_failed_hour: newest.unwrap_or(0),
                auth_error,
                last_claim,
            })
        })
    }

    fn recent_failures(&self, limit: i64) -> Result<Vec<FailedHour>, LedgerError> {
        let limit = limit.max(0);
        self.with_client(|client| {
            Ok(client
                .query(
                    "SELECT account, stream, hour_utc, attempts, last_error, next_retry_at, updated_at
                     FROM ledger_hours
                     WHERE state IN ('MISSING', 'FAILED') AND state = 'FAILED'
                     ORDER BY updated_at DESC, hour_utc DESC LIMIT $1",
                    &[&limit],
                )?
                .iter()
                .map(|row| FailedHour {
                    account: row.get(0),
                    stream: row.get(1),
                    hour_utc: row.get(2),
                    attempts: row.get(3),
                    last_error: row.get(4),
                    next_retry_at: row.get(5),
                    updated_at: row.get(6),
                })
                .collect())
        })
    }

    fn reset_failed(
        &self,
        account: &str,
        stream: &str,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError> {
        let priority_value = priority as i64;
        self.with_client(|client| {
            Ok(client.execute(
                "UPDATE ledger_hours SET state = 'MISSING', priority = $3, attempts = 0,
                     next_retry_at = NULL, claim_id = NULL, updated_at = $4
                 WHERE account = $1 AND stream = $2 AND state = 'FAILED'",
                &[&account, &stream, &priority_value, &now],
            )?)
        })
    }

    fn applied_hours_total(&self) -> Result<u64, LedgerError> {
        self.with_client(|client| {
            let count: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM ledger_hours WHERE state = 'APPLIED'",
                    &[],
                )?
                .get(0);
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn prune_claims(&self, before: i64) -> Result<u64, LedgerError> {
        self.with_client(|client| {
            Ok(client.execute(
                "DELETE FROM ledger_claims WHERE finished_at IS NOT NULL AND finished_at < $1",
                &[&before],
            )?)
        })
    }

    fn stream_hours(
        &self,
        account: &str,
        stream: &str,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<HourCell>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_client(|client| {
            Ok(client
                .query(
                    "SELECT hour_utc, state, attempts, last_error, next_retry_at, updated_at, applied_at
                     FROM ledger_hours
                     WHERE account = $1 AND stream = $2 AND hour_utc >= $3 AND hour_utc < $4
                     ORDER BY hour_utc LIMIT $5",
                    &[&account, &stream, &from, &to, &limit],
                )?
                .iter()
                .map(|row| {
                    let last_error: Option<String> = row.get(3);
                    HourCell {
                        hour_utc: row.get(0),
                        state: row.get(1),
                        attempts: row.get(2),
                        last_error: last_error.map(cut_error),
                        next_retry_at: row.get(4),
                        updated_at: row.get(5),
                        applied_at: row.get(6),
                    }
                })
                .collect())
        })
    }

    fn sales_summary(
        &self,
        account: &str,
        from: i64,
        to: i64,
        asin_limit: i64,
    ) -> Result<SalesSummary, LedgerError> {
        let asin_limit = asin_limit.max(0);
        self.with_client(|client| {
            let by_hour = client
                .query(
                    "SELECT hour_utc, SUM(ordered_units)::bigint, SUM(ordered_revenue), COUNT(*)
                     FROM vendor_realtime_sales WHERE account = $1 AND hour_utc >= $2 AND hour_utc < $3
                     GROUP BY hour_utc ORDER BY hour_utc DESC",
                    &[&account, &from, &to],
                )?
                .iter()
                .map(|row| HourSales {
                    hour_utc: row.get(0),
                    ordered_units: row.get(1),
                    ordered_revenue: row.get(2),
                    asins: row.get(3),
                })
                .collect();
            let by_asin = client
                .query(
                    "SELECT asin, SUM(ordered_units)::bigint, SUM(ordered_revenue), COUNT(*)
                     FROM vendor_realtime_sales WHERE account = $1 AND hour_utc >= $2 AND hour_utc < $3
                     GROUP BY asin ORDER BY SUM(ordered_revenue) DESC, asin COLLATE \"C\" LIMIT $4",
                    &[&account, &from, &to, &asin_limit],
                )?
                .iter()
                .map(|row| AsinSales {
                    asin: row.get(0),
                    ordered_units: row.get(1),
                    ordered_revenue: row.get(2),
                    hours: row.get(3),
                })
                .collect();
            let row = client.query_one(
                "SELECT COALESCE(SUM(ordered_units), 0)::bigint, COALESCE(SUM(ordered_revenue), 0.0)::float8,
                        COUNT(*), COUNT(DISTINCT asin), COUNT(DISTINCT hour_utc)
                 FROM vendor_realtime_sales WHERE account = $1 AND hour_utc >= $2 AND hour_utc < $3",
                &[&account, &from, &to],
            )?;
            let totals = SalesTotals {
                ordered_units: row.get(0),
                ordered_revenue: row.get(1),
                rows: row.get(2),
                asins: row.get(3),
                hours_with_data: row.get(4),
            };
            Ok((by_hour, by_asin, totals))
        })
    }

    fn applied_coverage(
        &self,
        account: &str,
        stream: &str,
        from: i64,
        to: i64,
    ) -> Result<(i64, Option<i64>), LedgerError> {
        self.with_client(|client| {
            let row = client.query_one(
                "SELECT SUM(CASE WHEN hour_utc >= $3 AND hour_utc < $4 THEN 1 ELSE 0 END)::bigint, MAX(hour_utc)
                 FROM ledger_hours WHERE account = $1 AND stream = $2 AND state = 'APPLIED'",
                &[&account, &stream, &from, &to],
            )?;
            let applied: Option<i64> = row.get(0);
            Ok((applied.unwrap_or(0), row.get(1)))
        })
    }

    fn cooldowns(&self, now: i64) -> Result<Vec<Cooldown>, LedgerError> {
        self.with_client(|client| {
            Ok(client
                .query(
                    "SELECT scope, reason, started_at, until_at, detail FROM cooldowns
                     WHERE until_at > $1 ORDER BY scope COLLATE \"C\"",
                    &[&now],
                )?
                .iter()
                .map(cooldown_of)
                .collect())
        })
    }
}

/// An error text as a heatmap cell carries it: at most [`MAX_CELL_ERROR_CHARS`]
/// characters, then an ellipsis.
fn cut_error(text: String) -> String {
    if text.chars().count() > MAX_CELL_ERROR_CHARS {
        let mut cut: String = text.chars().take(MAX_CELL_ERROR_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}
