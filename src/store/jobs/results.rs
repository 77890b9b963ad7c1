//! What the queue produced, as the read surfaces list it: market prices, Keepa
//! products and per-run metrics.

use rusqlite::params;
use serde::Serialize;

use super::*;
use crate::store::SqliteLedger;

/// One row of `market_prices`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MarketPrice {
    pub provider: String,
    pub sku: String,
    /// `None` when the key has no size.
    #[schema(required = true)]
    pub size: Option<String>,
    #[schema(required = true)]
    pub lowest_ask: Option<f64>,
    #[schema(required = true)]
    pub highest_bid: Option<f64>,
    #[schema(required = true)]
    pub last_sale: Option<f64>,
    pub currency: String,
    pub updated_at: i64,
    /// Listing statistics (eBay market prices); `None` for market answers (StockX, Alias).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listings: Option<ListingStats>,
}

/// One row of `keepa_products`: a complete snapshot (history and stats present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeepaProduct {
    pub asin: String,
    pub domain: i64,
    #[schema(required = true)]
    pub title: Option<String>,
    /// Keepa prices are integer cents; -1 means none.
    #[schema(required = true)]
    pub current_amazon: Option<i64>,
    #[schema(required = true)]
    pub current_new: Option<i64>,
    #[schema(required = true)]
    pub sales_rank: Option<i64>,
    #[schema(required = true)]
    pub avg_90_new: Option<i64>,
    /// The one-year average (seed 004's "1yr avg").
    #[schema(required = true)]
    pub avg_365_new: Option<i64>,
    pub history_points: i64,
    /// The product JSON as received.
    pub raw: String,
    pub updated_at: i64,
}

/// One row of `job_runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobRun {
    pub id: i64,
    pub provider: String,
    pub account: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub jobs_run: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub deferred: i64,
    pub not_found: i64,
    pub calls_made: i64,
    pub rescued: i64,
    pub outcome: String,
}

/// The most recently updated market prices, at most `limit`.
pub fn market_prices(ledger: &SqliteLedger, limit: usize) -> Result<Vec<MarketPrice>, JobError> {
    select(
        ledger,
        "SELECT provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at,
                listing_count, price_min, price_median, price_mean, price_max, listings_total
         FROM market_prices ORDER BY updated_at DESC, provider, sku, size LIMIT ?1",
        params![sql_limit(limit)],
        |row| {
            let size: String = row.get(2)?;
            Ok(MarketPrice {
                provider: row.get(0)?,
                sku: row.get(1)?,
                size: (!size.is_empty()).then_some(size),
                lowest_ask: row.get(3)?,
                highest_bid: row.get(4)?,
                last_sale: row.get(5)?,
                currency: row.get(6)?,
                updated_at: row.get(7)?,
                listings: listing_stats(row, 6)?,
            })
        },
    )
}

/// The listing statistics of a `market_prices` row (columns 8 to 13; `currency` at
/// `currency_column`), when it has them.
fn listing_stats(
    row: &rusqlite::Row<'_>,
    currency_column: usize,
) -> rusqlite::Result<Option<ListingStats>> {
    let count: Option<i64> = row.get(8)?;
    let (Some(count), Some(min), Some(median), Some(mean), Some(max)) = (
        count,
        row.get::<_, Option<f64>>(9)?,
        row.get::<_, Option<f64>>(10)?,
        row.get::<_, Option<f64>>(11)?,
        row.get::<_, Option<f64>>(12)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(ListingStats {
        count,
        min,
        median,
        mean,
        max,
        currency: row.get(currency_column)?,
        total: row.get::<_, Option<i64>>(13)?.unwrap_or(count),
    }))
}

/// The most recently updated Keepa snapshots, at most `limit`.
pub fn keepa_products(ledger: &SqliteLedger, limit: usize) -> Result<Vec<KeepaProduct>, JobError> {
    select(
        ledger,
        "SELECT asin, domain, title, current_amazon, current_new, sales_rank, avg_90_new, avg_365_new,
                history_points, raw, updated_at
         FROM keepa_products ORDER BY updated_at DESC, asin LIMIT ?1",
        params![sql_limit(limit)],
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

/// The latest runs, newest first, at most `limit`.
pub fn recent_runs(ledger: &SqliteLedger, limit: usize) -> Result<Vec<JobRun>, JobError> {
    select(
        ledger,
        "SELECT id, provider, account, started_at, finished_at, jobs_run, succeeded, failed, deferred,
                not_found, calls_made, rescued, outcome
         FROM job_runs ORDER BY id DESC LIMIT ?1",
        params![sql_limit(limit)],
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

// --- the drainer's side ---------------------------------------------------------------
