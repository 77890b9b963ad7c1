//! The reads behind the dashboard's pictures: one stream's ledger hours over a range
//! (the heatmap), on the read pool, so the dashboard never queues behind an apply; and
//! the row type of every cursor's position (the sampler's cursor lag), which both engines
//! read through [`super::cursors::CursorStore::cursor_positions`].

use rusqlite::params;

use super::{LedgerError, SqliteLedger};

/// One ledger hour as the heatmap shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCell {
    pub hour_utc: i64,
    /// `MISSING`, `REQUESTED`, `DOWNLOADED`, `APPLIED` or `FAILED`.
    pub state: String,
    pub attempts: i64,
    /// The failure record: the last error, kept until the hour is claimed again.
    pub last_error: Option<String>,
    pub next_retry_at: Option<i64>,
    pub updated_at: i64,
    pub applied_at: Option<i64>,
}

/// The longest error text a heatmap cell carries (the rest is cut, on a char boundary).
pub const MAX_CELL_ERROR_CHARS: usize = 2000;

/// The ledger rows of (account, stream) with `from <= hour_utc < to`, oldest first, at
/// most `limit` (the caller bounds the range; the limit keeps a bad range harmless).
pub fn stream_hours(
    ledger: &SqliteLedger,
    account: &str,
    stream: &str,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<HourCell>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    ledger.with_read_conn(|conn| {
        let mut statement = conn.prepare_cached(
            "SELECT hour_utc, state, attempts, last_error, next_retry_at, updated_at, applied_at
             FROM ledger_hours
             WHERE account = ?1 AND stream = ?2 AND hour_utc >= ?3 AND hour_utc < ?4
             ORDER BY hour_utc LIMIT ?5",
        )?;
        let rows = statement
            .query_map(params![account, stream, from, to, limit], |row| {
                let last_error: Option<String> = row.get(3)?;
                Ok(HourCell {
                    hour_utc: row.get(0)?,
                    state: row.get(1)?,
                    attempts: row.get(2)?,
                    last_error: last_error.map(|text| {
                        if text.chars().count() > MAX_CELL_ERROR_CHARS {
                            let mut cut: String = text.chars().take(MAX_CELL_ERROR_CHARS).collect();
                            cut.push('…');
                            cut
                        } else {
                            text
                        }
                    }),
                    next_retry_at: row.get(4)?,
                    updated_at: row.get(5)?,
                    applied_at: row.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// One cursor's position ([`super::cursors::CursorStore::cursor_positions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorPosition {
    pub account: String,
    pub stream: String,
    /// Everything modified before this (unix seconds) is applied.
    pub cursor_ts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HourWindow, HOUR};
    use crate::store::LedgerStore;

    #[test]
    fn stream_hours_reads_the_range_in_order_with_the_failure_record() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let start = 1_700_000_000 / HOUR * HOUR;
        ledger
            .seed("acct", "s", HourWindow::new(start, start + 6 * HOUR), start)
            .unwrap();
        let long = "x".repeat(MAX_CELL_ERROR_CHARS + 50);
        ledger.with_conn(|conn| {
            conn.execute(
                "UPDATE ledger_hours SET state = 'FAILED', attempts = 2, last_error = ?1, next_retry_at = ?2
                 WHERE hour_utc = ?3",
                params![long, start + 99, start + 2 * HOUR],
            )
            .unwrap();
        });
        let hours =
            stream_hours(&ledger, "acct", "s", start + HOUR, start + 4 * HOUR, 100).unwrap();
        let at: Vec<i64> = hours.iter().map(|h| h.hour_utc).collect();
        assert_eq!(at, [start + HOUR, start + 2 * HOUR, start + 3 * HOUR]);
        let failed = &hours[1];
        assert_eq!(failed.state, "FAILED");
        assert_eq!(failed.attempts, 2);
        assert_eq!(failed.next_retry_at, Some(start + 99));
        let error = failed.last_error.as_deref().unwrap();
        assert_eq!(
            error.chars().count(),
            MAX_CELL_ERROR_CHARS + 1,
            "cut, with an ellipsis"
        );
        assert_eq!(hours[0].state, "MISSING");
        let limited = stream_hours(&ledger, "acct", "s", start, start + 6 * HOUR, 2).unwrap();
        assert_eq!(limited.len(), 2);
        assert!(
            stream_hours(&ledger, "other", "s", start, start + 6 * HOUR, 10)
                .unwrap()
                .is_empty()
        );
    }
}
