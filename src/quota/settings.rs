//! `[quota]`: the TokenManager's settings.

use std::collections::BTreeMap;

/// `[quota]`: how the TokenManager paces provider calls.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSettings {
    /// The share of each bucket's burst background work leaves for manual work.
    pub reserve_share: f64,
    /// The share of every rate (configured, default or learned) left unused, so that
    /// network jitter never makes a call arrive before the provider's token.
    pub rate_margin: f64,
    /// Bucket overrides by SP-API operation (`[quota.amazon.createReport]`), per selling
    /// partner (the account-application pair).
    pub amazon: BTreeMap<String, super::BucketSpec>,
    /// Application-level limits by operation (`[quota.amazon_application.createReport]`),
    /// shared by every account of one LWA application; none by default.
    pub amazon_application: BTreeMap<String, super::BucketSpec>,
    /// Overrides of the other providers' buckets by provider then operation
    /// (`[quota.ebay.getOrders]`, `[quota.stockx.marketData]`, `[quota.keepa.product]`).
    pub providers: BTreeMap<String, BTreeMap<String, super::BucketSpec>>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            reserve_share: super::DEFAULT_RESERVE_SHARE,
            rate_margin: super::DEFAULT_RATE_MARGIN,
            amazon: BTreeMap::new(),
            amazon_application: BTreeMap::new(),
            providers: BTreeMap::new(),
        }
    }
}
