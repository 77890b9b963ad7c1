//! The configuration file as serde reads it: one `Raw*` struct per TOML table, every
//! field optional where the file may omit it and unknown keys refused. Nothing here is
//! checked; [`super::validate`] turns these into the validated [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) data_dir: Option<String>,
    pub(super) simulator: Option<RawSimulator>,
    pub(super) redis: Option<RawRedis>,
    pub(super) locks: Option<RawLocks>,
    pub(super) cluster: Option<RawCluster>,
    pub(super) supervisor: Option<crate::actors::supervisor::policy::RestartPolicy>,
    pub(super) daemon: Option<RawDaemon>,
    pub(super) chaos: Option<RawChaos>,
    pub(super) quota: Option<RawQuota>,
    pub(super) http: Option<RawHttp>,
    pub(super) freshness: Option<RawFreshness>,
    pub(super) store: Option<RawStore>,
    #[serde(default)]
    pub(super) accounts: Vec<RawAccount>,
}

/// `[freshness]`: the freshness scheduler (docs/jobs.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFreshness {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    pub(super) max_per_pass: Option<usize>,
    pub(super) keep_runs: Option<String>,
    /// Provider → duration (`stockx = "60m"`).
    #[serde(default)]
    pub(super) stale_after: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuota {
    pub(super) reserve_share: Option<f64>,
    pub(super) rate_margin: Option<f64>,
    #[serde(default)]
    pub(super) amazon: BTreeMap<String, RawBucket>,
    /// Per-application limits, shared by every account signed in through the same LWA
    /// application (`client_id_env`); requests pay both buckets: the stricter applies.
    #[serde(default)]
    pub(super) amazon_application: BTreeMap<String, RawBucket>,
    #[serde(default)]
    pub(super) ebay: BTreeMap<String, RawBucket>,
    #[serde(default)]
    pub(super) stockx: BTreeMap<String, RawBucket>,
    #[serde(default)]
    pub(super) keepa: BTreeMap<String, RawBucket>,
    #[serde(default)]
    pub(super) alias: BTreeMap<String, RawBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBucket {
    pub(super) rate: f64,
    pub(super) burst: f64,
    /// At most this many calls in any hour (an hourly budget), on top of the bucket.
    pub(super) per_hour: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) max_concurrent_runs: Option<usize>,
    pub(super) shutdown_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChaos {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) account: Option<String>,
    /// An infrastructure service instead of an account (`housekeeping`, `cooldown-watch`).
    pub(super) service: Option<String>,
    pub(super) action: Option<String>,
    pub(super) every_unit: Option<bool>,
    pub(super) nth_unit: Option<u64>,
    /// `pause_before_apply` only: how long the apply waits (a duration like "15s").
    pub(super) pause: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) admin_token_env: Option<String>,
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) allow_unauthenticated: Option<bool>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) body_read_timeout: Option<String>,
    pub(super) history_interval: Option<String>,
}

/// `[store]`: where the hour ledger lives (docs/configuration.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url_env: Option<String>,
    pub(super) pool_size: Option<u32>,
    pub(super) statement_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) url: Option<String>,
    pub(super) url_env: Option<String>,
    pub(super) prefix: Option<String>,
}

/// `[cluster]`: several daemons sharing one Redis split the accounts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) enabled: Option<bool>,
    pub(super) member_id: Option<String>,
    pub(super) heartbeat: Option<String>,
    pub(super) member_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocks {
    pub(super) ttl: Option<String>,
    pub(super) hygiene_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSimulator {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) listen: Option<String>,
    pub(super) seed: Option<u64>,
    pub(super) processing_latency: Option<String>,
    pub(super) profile: Option<String>,
    pub(super) time_scale: Option<f64>,
    pub(super) asins_per_marketplace: Option<u32>,
    pub(super) ebay_orders_per_day: Option<u32>,
    pub(super) ebay_inventory_listings: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) id: String,
    pub(super) provider: String,
    pub(super) marketplace: Option<String>,
    pub(super) region: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) token_url: Option<String>,
    pub(super) selling_partner_id: Option<String>,
    /// eBay: the RuName `marketsync auth ebay` uses as `redirect_uri`.
    pub(super) ru_name: Option<String>,
    /// eBay: the refresh token's expiry, RFC 3339 (as `marketsync auth ebay` prints it).
    pub(super) refresh_token_expires: Option<String>,
    pub(super) credentials: Option<RawCredentials>,
    #[serde(default)]
    pub(super) streams: BTreeMap<String, RawStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) client_id_env: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) refresh_token_env: Option<String>,
    pub(super) api_key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    pub(super) enabled: Option<bool>,
    pub(super) lookback: Option<String>,
    pub(super) chunk: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) safety_lag: Option<String>,
    pub(super) order: Option<String>,
    pub(super) quota_cooldown: Option<String>,
    pub(super) retry_base: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) poll_min: Option<String>,
    pub(super) poll_max: Option<String>,
    pub(super) poll_timeout: Option<String>,
    pub(super) max_document_bytes: Option<u64>,
    pub(super) max_in_flight: Option<u32>,
    pub(super) daily_audit: Option<bool>,
    pub(super) weekly_audit: Option<bool>,
    // Cursor streams (eBay).
    pub(super) start: Option<String>,
    pub(super) max_window: Option<String>,
    pub(super) page_limit: Option<u32>,
    pub(super) max_response_bytes: Option<u64>,
    // Job queues (StockX, Keepa).
    pub(super) max_attempts: Option<u32>,
    pub(super) job_lease: Option<String>,
    pub(super) batch: Option<u32>,
}
