//! The sales table (`vendor_realtime_sales`) as the read surfaces see it: totals per hour
//! and per ASIN over a window, and how much of a window the ledger has APPLIED.

use rusqlite::params;

use super::{LedgerError, SqliteLedger};

/// Sales of one hour, summed over ASINs.
#[derive(Debug, Clone, PartialEq)]
pub struct HourSales {
    pub hour_utc: i64,
    pub ordered_units: i64,
    pub ordered_revenue: f64,
    /// ASINs with a row in the hour.
    pub asins: i64,
}

/// Sales of one ASIN, summed over the window's hours.
#[derive(Debug, Clone, PartialEq)]
pub struct AsinSales {
    pub asin: String,
    pub ordered_units: i64,
    pub ordered_revenue: f64,
    /// Hours with a row for the ASIN.
    pub hours: i64,
}

/// The window's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesTotals {
    pub ordered_units: i64,
    pub ordered_revenue: f64,
    pub rows: i64,
    pub asins: i64,
    pub hours_with_data: i64,
}

/// Sales of `account` in `[from, to)`: per hour (newest first), the `asin_limit` ASINs
/// with the most revenue, and the totals.
pub fn sales_summary(
    ledger: &SqliteLedger,
    account: &str,
    from: i64,
    to: i64,
    asin_limit: i64,
) -> Result<(Vec<HourSales>, Vec<AsinSales>, SalesTotals), LedgerError> {
    ledger.with_read_conn(|conn| {
        let mut statement = conn.prepare_cached(
            "SELECT hour_utc, SUM(ordered_units), SUM(ordered_revenue), COUNT(*)
             FROM vendor_realtime_sales WHERE account = ?1 AND hour_utc >= ?2 AND hour_utc < ?3
             GROUP BY hour_utc ORDER BY hour_utc DESC",
        )?;
        let by_hour = statement
            .query_map(params![account, from, to], |row| {
                Ok(HourSales {
                    hour_utc: row.get(0)?,
                    ordered_units: row.get(1)?,
                    ordered_revenue: row.get(2)?,
                    asins: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut statement = conn.prepare_cached(
            "SELECT asin, SUM(ordered_units), SUM(ordered_revenue), COUNT(*)
             FROM vendor_realtime_sales WHERE account = ?1 AND hour_utc >= ?2 AND hour_utc < ?3
             GROUP BY asin ORDER BY SUM(ordered_revenue) DESC, asin LIMIT ?4",
        )?;
        let by_asin = statement
            .query_map(params![account, from, to, asin_limit], |row| {
                Ok(AsinSales {
                    asin: row.get(0)?,
                    ordered_units: row.get(1)?,
                    ordered_revenue: row.get(2)?,
                    hours: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let totals = conn.query_row(
            "SELECT COALESCE(SUM(ordered_units), 0), COALESCE(SUM(ordered_revenue), 0.0),
                    COUNT(*), COUNT(DISTINCT asin), COUNT(DISTINCT hour_utc)
             FROM vendor_realtime_sales WHERE account = ?1 AND hour_utc >= ?2 AND hour_utc < ?3",
            params![account, from, to],
            |row| {
                Ok(SalesTotals {
                    ordered_units: row.get(0)?,
                    ordered_revenue: row.get(1)?,
                    rows: row.get(2)?,
                    asins: row.get(3)?,
                    hours_with_data: row.get(4)?,
                })
            },
        )?;
        Ok((by_hour, by_asin, totals))
    })
}

/// How many hours of `[from, to)` of a stream are APPLIED, and its newest APPLIED hour.
pub fn applied_coverage(
    ledger: &SqliteLedger,
    account: &str,
    stream: &str,
    from: i64,
    to: i64,
) -> Result<(i64, Option<i64>), LedgerError> {
    ledger.with_read_conn(|conn| {
        Ok(conn.query_row(
            "SELECT SUM(CASE WHEN hour_utc >= ?3 AND hour_utc < ?4 THEN 1 ELSE 0 END), MAX(hour_utc)
             FROM ledger_hours WHERE account = ?1 AND stream = ?2 AND state = 'APPLIED'",
            params![account, stream, from, to],
            |row| Ok((row.get::<_, Option<i64>>(0)?.unwrap_or(0), row.get(1)?)),
        )?)
    })
}
