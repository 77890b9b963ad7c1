//! Read queries of the hour ledger beyond the [`LedgerStore`] trait: what doctor and the
//! HTTP API show (hour diagnostics, recent failures), repairs (reset failed hours,
//! prune claim history) and the running cooldowns.

use rusqlite::{params, OptionalExtension};

use super::*;
pub use crate::store::reads::{FailedHour, HourDiagnostics};

impl SqliteLedger {
    /// The facts behind a windowed stream's verdict (see [`HourDiagnostics`]).
    pub fn hour_diagnostics(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<HourDiagnostics, LedgerError> {
        self.with_read_conn(|conn| {
            type Aggregate = (
                i64,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            );
            let aggregate: Aggregate = conn.query_row(
                "SELECT COUNT(*),
                        MIN(CASE WHEN state IN ('REQUESTED', 'DOWNLOADED') THEN updated_at END),
                        SUM(CASE WHEN state = 'MISSING' OR (state = 'FAILED' AND next_retry_at <= ?3) THEN 1 ELSE 0 END),
                        MIN(CASE WHEN state = 'MISSING' OR (state = 'FAILED' AND next_retry_at <= ?3) THEN updated_at END),
                        SUM(CASE WHEN state = 'FAILED' THEN 1 ELSE 0 END),
                        MAX(CASE WHEN state = 'FAILED' THEN attempts END),
                        MIN(CASE WHEN state = 'FAILED' THEN hour_utc END),
                        MAX(CASE WHEN state = 'FAILED' THEN hour_utc END)
                 FROM ledger_hours WHERE account = ?1 AND stream = ?2",
                params![account, stream, now],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ))
                },
            )?;
            let (rows, in_flight_since, claimable, claimable_since, failed, max_attempts, oldest, newest) =
                aggregate;
            let in_flight_report: Option<String> = if in_flight_since.is_some() {
                conn.query_row(
                    "SELECT report_id FROM ledger_hours
                     WHERE account = ?1 AND stream = ?2 AND state IN ('REQUESTED', 'DOWNLOADED')
                     ORDER BY updated_at LIMIT 1",
                    params![account, stream],
                    |row| row.get(0),
                )
                .optional()?
                .flatten()
            } else {
                None
            };
            let last_claim: Option<(i64, String)> = conn
                .query_row(
                    "SELECT claimed_at, claimed_by FROM ledger_claims
                     WHERE account = ?1 AND stream = ?2 ORDER BY id DESC LIMIT 1",
                    params![account, stream],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let failed = u64::try_from(failed.unwrap_or(0)).unwrap_or(0);
            let auth_error: Option<String> = if failed > 0 {
                conn.query_row(
                    "SELECT last_error FROM ledger_hours
                     WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'
                       AND lower(last_error) LIKE '%authentication%'
                     ORDER BY updated_at DESC LIMIT 1",
                    params![account, stream],
                    |row| row.get(0),
                )
                .optional()?
                .flatten()
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
}

impl SqliteLedger {
    /// The `limit` most recently failed hours, newest first.
    pub fn recent_failures(&self, limit: i64) -> Result<Vec<FailedHour>, LedgerError> {
        self.with_read_conn(|conn| {
            // The first term lets SQLite use the partial claimable index.
            let mut statement = conn.prepare_cached(
                "SELECT account, stream, hour_utc, attempts, last_error, next_retry_at, updated_at
                 FROM ledger_hours
                 WHERE state IN ('MISSING', 'FAILED') AND state = 'FAILED'
                 ORDER BY updated_at DESC, hour_utc DESC LIMIT ?1",
            )?;
            let rows = statement
                .query_map(params![limit], |row| {
                    Ok(FailedHour {
                        account: row.get(0)?,
                        stream: row.get(1)?,
                        hour_utc: row.get(2)?,
                        attempts: row.get(3)?,
                        last_error: row.get(4)?,
                        next_retry_at: row.get(5)?,
                        updated_at: row.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Every FAILED hour of a stream back to MISSING at `priority` with fresh attempts;
    /// returns how many.
    pub fn reset_failed(
        &self,
        account: &str,
        stream: &str,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let reset = conn.execute(
                "UPDATE ledger_hours SET state = 'MISSING', priority = ?3, attempts = 0,
                     next_retry_at = NULL, claim_id = NULL, updated_at = ?4
                 WHERE account = ?1 AND stream = ?2 AND state = 'FAILED'",
                params![account, stream, priority as i64, now],
            )?;
            Ok(reset as u64)
        })
    }

    /// APPLIED hours across every account and stream.
    pub fn applied_hours_total(&self) -> Result<u64, LedgerError> {
        self.with_read_conn(|conn| {
            let count: i64 = conn.query_row(
                "SELECT COUNT(*) FROM ledger_hours WHERE state = 'APPLIED'",
                [],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    /// Deletes finished claims older than `before` from the claim history; returns how many.
    pub fn prune_claims(&self, before: i64) -> Result<u64, LedgerError> {
        self.with_conn(|conn| {
            let pruned = conn.execute(
                "DELETE FROM ledger_claims WHERE finished_at IS NOT NULL AND finished_at < ?1",
                params![before],
            )?;
            Ok(pruned as u64)
        })
    }
}

/// Running cooldowns in the SQLite file, by scope.
pub fn ledger_cooldowns(ledger: &SqliteLedger, now: i64) -> Result<Vec<Cooldown>, LedgerError> {
    ledger.with_read_conn(|conn| {
        let mut statement = conn.prepare_cached(
            "SELECT scope, reason, started_at, until_at, detail FROM cooldowns
             WHERE until_at > ?1 ORDER BY scope",
        )?;
        let rows = statement.query_map([now], cooldown_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

impl crate::store::reads::LedgerReads for SqliteLedger {
    fn hour_diagnostics(
        &self,
        account: &str,
        stream: &str,
        now: i64,
    ) -> Result<HourDiagnostics, LedgerError> {
        SqliteLedger::hour_diagnostics(self, account, stream, now)
    }

    fn recent_failures(&self, limit: i64) -> Result<Vec<FailedHour>, LedgerError> {
        SqliteLedger::recent_failures(self, limit)
    }

    fn reset_failed(
        &self,
        account: &str,
        stream: &str,
        priority: Priority,
        now: i64,
    ) -> Result<u64, LedgerError> {
        SqliteLedger::reset_failed(self, account, stream, priority, now)
    }

    fn applied_hours_total(&self) -> Result<u64, LedgerError> {
        SqliteLedger::applied_hours_total(self)
    }

    fn prune_claims(&self, before: i64) -> Result<u64, LedgerError> {
        SqliteLedger::prune_claims(self, before)
    }

    fn stream_hours(
        &self,
        account: &str,
        stream: &str,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<crate::store::history::HourCell>, LedgerError> {
        crate::store::history::stream_hours(self, account, stream, from, to, limit)
    }

    fn sales_summary(
        &self,
        account: &str,
        from: i64,
        to: i64,
        asin_limit: i64,
    ) -> Result<crate::store::reads::SalesSummary, LedgerError> {
        crate::store::sales::sales_summary(self, account, from, to, asin_limit)
    }

    fn applied_coverage(
        &self,
        account: &str,
        stream: &str,
        from: i64,
        to: i64,
    ) -> Result<(i64, Option<i64>), LedgerError> {
        crate::store::sales::applied_coverage(self, account, stream, from, to)
    }

    fn cooldowns(&self, now: i64) -> Result<Vec<Cooldown>, LedgerError> {
        ledger_cooldowns(self, now)
    }
}
