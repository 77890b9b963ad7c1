//! Configuration: a TOML file parsed into raw structs, then validated once into [`Config`].
//!
//! Nothing downstream re-validates. Every error names the file, the key path and the fix,
//! e.g. `config/demo.toml: accounts[1].streams.vendor_rt_sales.lookback: invalid duration
//! "3 hourz"; use a form like 72h`. Unknown keys are errors. Secrets never live in the
//! file: credentials are given as names of environment variables.
//!
//! This file holds the validated [`Config`], [`ConfigError`] and loading; `raw` holds the
//! serde structs the file is read into, `validate` checks the top-level tables and
//! `accounts` checks each account and its streams.
//!
//! Layer 13 of docs/architecture.md. May use: the settings types of the modules below it.
//! Only `app` and `cli` read `Config`.

pub use crate::cluster::ClusterSettings;
pub use crate::domain::chaos::ChaosSettings;
pub use crate::domain::{ClaimOrder, Provider, Shape};
pub use crate::http::HttpSettings;
pub use crate::lock::settings::{LockSettings, RedisSettings, RedisUrl};
pub use crate::quota::settings::QuotaSettings;
pub use crate::shapes::spec::{
    AccountConfig, CredentialEnv, Endpoints, ShapeSettings, StreamConfig,
};
pub use crate::shapes::{
    cursor::{CursorSettings, FeedSettings},
    jobs::JobsSettings,
    windowed::WindowedSettings,
};
pub use crate::store::postgres::StoreSettings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawConfig;

/// The configuration used when no `--config` is given: the demo against the embedded simulator.
pub const EMBEDDED_DEMO: &str = include_str!("../../config/demo.toml");

/// Streams each provider supports today. eBay's are its cursor streams and
/// `market_prices`, the Browse API job queue.
pub fn streams_of(provider: Provider) -> Vec<&'static str> {
    match provider {
        Provider::Amazon => vec!["vendor_rt_sales"],
        Provider::Ebay => crate::shapes::cursor::EBAY_STREAMS
            .iter()
            .copied()
            .chain([crate::domain::provider::EBAY_MARKET_PRICES_STREAM])
            .collect(),
        Provider::Stockx | Provider::Alias => vec!["market_data"],
        Provider::Keepa => vec!["products"],
    }
}

/// What a configuration is loaded for, which decides the one check that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Syncing, and every command but `auth ebay` (`run`, `sync`, `check-config`,
    /// `status`, ...): every check, so an eBay seller account outside the embedded
    /// simulator needs `refresh_token_env`.
    Sync,
    /// `marketsync auth ebay`: the command that produces the refresh token `Sync` asks
    /// for, so an eBay account may lack `refresh_token_env`; every other check holds.
    EbayConsent,
}

/// A configuration error: where it is and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the configuration came from, or `<embedded demo>`.
    pub source_name: String,
    /// Where the SQLite database and downloaded documents live.
    pub data_dir: PathBuf,
    /// The embedded simulator, when `[simulator] enabled = true`.
    pub simulator: Option<SimulatorSettings>,
    /// Redis for leases, when configured; otherwise leases live in the SQLite file.
    pub redis: Option<RedisSettings>,
    /// PostgreSQL for the hour ledger (`[store] url_env`); `None`: SQLite holds it.
    pub store: Option<StoreSettings>,
    pub locks: LockSettings,
    /// Membership and account ownership across daemons, when `[cluster] enabled = true`
    /// (needs `[redis]`).
    pub cluster: Option<ClusterSettings>,
    /// Restart policy of the accounts supervisor (`[supervisor]`).
    pub supervisor: crate::actors::supervisor::policy::RestartPolicy,
    /// Stream runs in flight at once across all accounts (`[daemon] max_concurrent_runs`).
    pub max_concurrent_runs: usize,
    /// The longest a shutdown takes after the first signal (`[daemon] shutdown_grace`).
    pub shutdown_grace: Duration,
    /// Crash drills, only when `[chaos] enabled = true`.
    pub chaos: Option<ChaosSettings>,
    /// The TokenManager's settings (`[quota]`).
    pub quota: QuotaSettings,
    /// The operator HTTP server (`[http]`): status and admin API, dashboard, metrics.
    pub http: Option<HttpSettings>,
    /// The freshness scheduler (`[freshness]`).
    pub freshness: crate::shapes::jobs::scheduler::FreshnessSettings,
    pub accounts: Vec<AccountConfig>,
}

/// SP-API operations whose buckets `[quota.amazon.OPERATION]` may override.
pub const AMAZON_QUOTA_OPERATIONS: &[&str] = &[
    "createReport",
    "getReport",
    "getReportDocument",
    "getReports",
    "cancelReport",
];

/// The paced operations of every provider, as `[quota.PROVIDER.OPERATION]` names them.
pub fn quota_operations(provider: &str) -> &'static [&'static str] {
    match provider {
        "amazon" | "amazon_application" => AMAZON_QUOTA_OPERATIONS,
        "ebay" => &[
            "getOrders",
            "getTransactions",
            "searchReturns",
            "getPayouts",
            "getInventoryItems",
            "getOffers",
            "getConversations",
            "searchCases",
            "searchInquiries",
            "tradingGetOrders",
            "itemSummarySearch",
        ],
        "stockx" => &["marketData"],
        "keepa" => &["product"],
        "alias" => &["pricingInsights"],
        _ => &[],
    }
}

/// `[simulator] profile`: how the simulator draws report processing times (`app` maps it
/// onto the simulator's own profile; `config` does not import `sim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatorProfile {
    /// Every report takes `processing_latency` (the default; the demo and the tests).
    Fast,
    /// Production-shaped processing times (docs/spapi-wire.md).
    Realistic,
}

#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    pub listen: SocketAddr,
    pub seed: u64,
    pub processing_latency: Duration,
    /// `fast` or `realistic` report processing times.
    pub profile: SimulatorProfile,
    /// Simulated seconds per real second (report latencies and rate refills together).
    pub time_scale: f64,
    pub asins_per_marketplace: u32,
    /// Orders the eBay simulator creates per seller and day (their status changes make
    /// the change history).
    pub ebay_orders_per_day: u32,
    /// Listings in each eBay seller's active inventory (the Feed API's
    /// LMS_ACTIVE_INVENTORY_REPORT).
    pub ebay_inventory_listings: u32,
}

impl Config {
    /// Loads and validates a file for syncing ([`Purpose::Sync`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, Purpose::Sync)
    }

    /// Loads and validates a file for `purpose`.
    pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            source_name: source_name.clone(),
            message: format!("cannot read the file: {err}; check the path given to --config"),
        })?;
        Config::parse_for(&text, &source_name, purpose)
    }

    /// The embedded demo configuration.
    pub fn embedded_demo() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEMO, "<embedded demo>")
    }

    /// Parses and validates configuration text for syncing ([`Purpose::Sync`]);
    /// `source_name` prefixes every error.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        Config::parse_for(text, source_name, Purpose::Sync)
    }

    /// Parses and validates configuration text for `purpose`.
    pub fn parse_for(
        text: &str,
        source_name: &str,
        purpose: Purpose,
    ) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            source_name: source_name.to_string(),
            message,
        };
        // A syntax error is found while parsing, a wrong key or value while deserializing;
        // both name the line, the latter also the key's path.
        let describe = |path: String, inner: toml::de::Error| {
            let message = inner.message().trim_end_matches('\n').to_string();
            let location = match inner.span() {
                Some(span) => {
                    // Bytes, not a str slice: a span need not fall on a char boundary.
                    let before = text.as_bytes().get(..span.start).unwrap_or(text.as_bytes());
                    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
                    format!(" (line {line})")
                }
                None => String::new(),
            };
            if path.is_empty() || path == "." {
                error(format!("{message}{location}"))
            } else {
                error(format!("{path}: {message}{location}"))
            }
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|err| describe(String::new(), err))?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            describe(path, err.into_inner())
        })?;
        let mut config = raw.validate(purpose).map_err(error)?;
        config.source_name = source_name.to_string();
        Ok(config)
    }

    /// The SQLite file inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("marketsync.db")
    }

    pub fn account(&self, id: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|account| account.id == id)
    }

    /// The view of the configuration the status, doctor, HTTP and metrics surfaces use.
    pub fn deployment(&self) -> crate::diagnose::Deployment {
        crate::diagnose::Deployment {
            source_name: self.source_name.clone(),
            data_dir: self.data_dir.clone(),
            redis: self.redis.clone(),
            cluster: self.cluster.clone(),
            simulator_listen: self.simulator.as_ref().map(|simulator| simulator.listen),
            store: self.store.clone(),
            accounts: self.accounts.clone(),
        }
    }
}

mod accounts;
mod raw;
mod validate;

#[cfg(test)]
mod tests;
