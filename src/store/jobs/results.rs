//! What the queue produced, as the read surfaces list it: market prices, Keepa
//! products and per-run metrics.

use serde::Serialize;

use super::*;

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
pub fn market_prices(store: &dyn JobStore, limit: usize) -> Result<Vec<MarketPrice>, JobError> {
    store.market_price_rows(sql_limit(limit))
}

/// The listing statistics of a `market_prices` row from its columns, when it has them
/// all (both engines read them so).
pub(crate) fn listing_stats(
    count: Option<i64>,
    (min, median, mean, max): (Option<f64>, Option<f64>, Option<f64>, Option<f64>),
    currency: &str,
    total: Option<i64>,
) -> Option<ListingStats> {
    let (Some(count), Some(min), Some(median), Some(mean), Some(max)) =
        (count, min, median, mean, max)
    else {
        return None;
    };
    Some(ListingStats {
        count,
        min,
        median,
        mean,
        max,
        currency: currency.to_string(),
        total: total.unwrap_or(count),
    })
}

/// The most recently updated Keepa snapshots, at most `limit`.
pub fn keepa_products(store: &dyn JobStore, limit: usize) -> Result<Vec<KeepaProduct>, JobError> {
    store.keepa_product_rows(sql_limit(limit))
}

/// The latest runs, newest first, at most `limit`.
pub fn recent_runs(store: &dyn JobStore, limit: usize) -> Result<Vec<JobRun>, JobError> {
    store.job_run_rows(sql_limit(limit))
}
