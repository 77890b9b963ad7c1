//! Configuration: a TOML file parsed into raw structs, then validated once into [`Config`].
//!
//! Nothing downstream re-validates. Every error names the file, the key path and the fix,
//! e.g. `config/demo.toml: accounts[1].streams.vendor_rt_sales.lookback: invalid duration
//! "3 hourz"; use a form like 72h`. Unknown keys are errors. Secrets never live in the
//! file: credentials are given as names of environment variables.

pub use crate::domain::chaos::ChaosSettings;
pub use crate::domain::{ClaimOrder, Provider, Shape};
pub use crate::http::HttpSettings;
pub use crate::lock::settings::{LockSettings, RedisSettings, RedisUrl};
pub use crate::quota::settings::QuotaSettings;
pub use crate::shapes::spec::{
    AccountConfig, CredentialEnv, Endpoints, ShapeSettings, StreamConfig,
};
pub use crate::shapes::{cursor::CursorSettings, jobs::JobsSettings, windowed::WindowedSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration used when no `--config` is given: the demo against the embedded simulator.
pub const EMBEDDED_DEMO: &str = include_str!("../../config/demo.toml");

/// Streams each provider supports today.
pub fn streams_of(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Amazon => &["vendor_rt_sales"],
        Provider::Ebay => crate::shapes::cursor::EBAY_STREAMS,
        Provider::Stockx => &["market_data"],
        Provider::Keepa => &["products"],
    }
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
    pub locks: LockSettings,
    /// Restart policy of the accounts supervisor (`[supervisor]`).
    pub supervisor: crate::actors::supervisor::policy::RestartPolicy,
    /// Stream runs in flight at once across all accounts (`[daemon] max_concurrent_runs`).
    pub max_concurrent_runs: usize,
    /// Crash drills, only when `[chaos] enabled = true`.
    pub chaos: Option<ChaosSettings>,
    /// The TokenManager's settings (`[quota]`).
    pub quota: QuotaSettings,
    /// The operator HTTP server (`[http]`): status and admin API, dashboard, metrics.
    pub http: Option<HttpSettings>,
    pub accounts: Vec<AccountConfig>,
}

/// SP-API operations whose buckets `[quota.amazon.OPERATION]` may override.
pub const AMAZON_QUOTA_OPERATIONS: &[&str] = &["createReport", "getReport", "getReportDocument"];

/// The paced operations of every provider, as `[quota.PROVIDER.OPERATION]` names them.
pub fn quota_operations(provider: &str) -> &'static [&'static str] {
    match provider {
        "amazon" | "amazon_application" => AMAZON_QUOTA_OPERATIONS,
        "ebay" => &["getOrders", "getTransactions", "searchReturns"],
        "stockx" => &["marketData"],
        "keepa" => &["product"],
        _ => &[],
    }
}

#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    pub listen: SocketAddr,
    pub seed: u64,
    pub processing_latency: Duration,
    pub asins_per_marketplace: u32,
    /// Orders the eBay simulator creates per seller and day (their status changes make
    /// the change history).
    pub ebay_orders_per_day: u32,
}

impl Config {
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            source_name: source_name.clone(),
            message: format!("cannot read the file: {err}; check the path given to --config"),
        })?;
        Config::parse(&text, &source_name)
    }

    /// The embedded demo configuration.
    pub fn embedded_demo() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEMO, "<embedded demo>")
    }

    /// Parses and validates configuration text; `source_name` prefixes every error.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            source_name: source_name.to_string(),
            message,
        };
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.message().trim_end_matches('\n').to_string();
            let location = match inner.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!(" (line {line})")
                }
                None => String::new(),
            };
            if path.is_empty() || path == "." {
                error(format!("{message}{location}"))
            } else {
                error(format!("{path}: {message}{location}"))
            }
        })?;
        let mut config = raw.validate().map_err(error)?;
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
            simulator_listen: self.simulator.as_ref().map(|simulator| simulator.listen),
            accounts: self.accounts.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<String>,
    simulator: Option<RawSimulator>,
    redis: Option<RawRedis>,
    locks: Option<RawLocks>,
    supervisor: Option<crate::actors::supervisor::policy::RestartPolicy>,
    daemon: Option<RawDaemon>,
    chaos: Option<RawChaos>,
    quota: Option<RawQuota>,
    http: Option<RawHttp>,
    #[serde(default)]
    accounts: Vec<RawAccount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    reserve_share: Option<f64>,
    rate_margin: Option<f64>,
    #[serde(default)]
    amazon: BTreeMap<String, RawBucket>,
    /// Per-application limits, shared by every account signed in through the same LWA
    /// application (`client_id_env`); requests pay both buckets: the stricter applies.
    #[serde(default)]
    amazon_application: BTreeMap<String, RawBucket>,
    #[serde(default)]
    ebay: BTreeMap<String, RawBucket>,
    #[serde(default)]
    stockx: BTreeMap<String, RawBucket>,
    #[serde(default)]
    keepa: BTreeMap<String, RawBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBucket {
    rate: f64,
    burst: f64,
}

impl RawQuota {
    fn validate(self) -> Result<QuotaSettings, String> {
        let reserve_share = self
            .reserve_share
            .unwrap_or(crate::quota::DEFAULT_RESERVE_SHARE);
        if !(0.0..=1.0).contains(&reserve_share) {
            return Err(format!(
                "quota.reserve_share: {reserve_share} is not a share; use a number from 0 to 1, e.g. 0.2"
            ));
        }
        let rate_margin = self
            .rate_margin
            .unwrap_or(crate::quota::DEFAULT_RATE_MARGIN);
        if !(0.0..0.5).contains(&rate_margin) {
            return Err(format!(
                "quota.rate_margin: {rate_margin} is out of range; use a number from 0 to 0.5, e.g. 0.02"
            ));
        }
        let amazon = validate_buckets("amazon", self.amazon)?;
        let amazon_application = validate_buckets("amazon_application", self.amazon_application)?;
        let mut providers = BTreeMap::new();
        for (provider, raw) in [
            ("ebay", self.ebay),
            ("stockx", self.stockx),
            ("keepa", self.keepa),
        ] {
            let buckets = validate_buckets(provider, raw)?;
            if !buckets.is_empty() {
                providers.insert(provider.to_string(), buckets);
            }
        }
        Ok(QuotaSettings {
            reserve_share,
            rate_margin,
            amazon,
            amazon_application,
            providers,
        })
    }
}

/// Validates `[quota.{provider}.OPERATION] rate, burst` bucket overrides.
fn validate_buckets(
    provider: &str,
    raw: BTreeMap<String, RawBucket>,
) -> Result<BTreeMap<String, crate::quota::BucketSpec>, String> {
    let mut buckets = BTreeMap::new();
    let known = quota_operations(provider);
    for (operation, raw) in raw {
        let key = format!("quota.{provider}.{operation}");
        if !known.contains(&operation.as_str()) {
            return Err(format!(
                "{key}: unknown operation {operation:?}; expected one of {}",
                known.join(", ")
            ));
        }
        if !(raw.rate.is_finite() && raw.rate > 0.0) {
            return Err(format!(
                "{key}.rate: {} is not a rate; give requests per second above 0, e.g. 0.0167",
                raw.rate
            ));
        }
        if !(raw.burst.is_finite() && raw.burst >= 1.0) {
            return Err(format!(
                "{key}.burst: {} is too small; a bucket must hold at least one request, e.g. 15",
                raw.burst
            ));
        }
        buckets.insert(
            operation,
            crate::quota::BucketSpec::new(raw.rate, raw.burst),
        );
    }
    Ok(buckets)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    max_concurrent_runs: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChaos {
    #[serde(default)]
    enabled: bool,
    account: Option<String>,
    action: Option<String>,
    every_unit: Option<bool>,
    nth_unit: Option<u64>,
}

impl RawChaos {
    fn validate(self, accounts: &[AccountConfig]) -> Result<Option<ChaosSettings>, String> {
        use crate::domain::chaos::{ChaosAction, ChaosWhen};
        if !self.enabled {
            if self.account.is_some()
                || self.action.is_some()
                || self.every_unit.is_some()
                || self.nth_unit.is_some()
            {
                return Err(
                    "chaos: crash drills are refused unless enabled = true; remove [chaos] or arm it explicitly"
                        .to_string(),
                );
            }
            return Ok(None);
        }
        let Some(account) = self.account else {
            return Err(
                "chaos.account: missing; name the account whose actor the drill crashes"
                    .to_string(),
            );
        };
        if !accounts.iter().any(|known| known.id == account) {
            return Err(format!(
                "chaos.account: unknown account {account:?}; name a configured account"
            ));
        }
        let action = match self.action.as_deref() {
            None | Some("panic") => ChaosAction::Panic,
            Some("freeze") => ChaosAction::Freeze,
            Some(other) => {
                return Err(format!(
                    "chaos.action: unknown action {other:?}; expected panic or freeze"
                ))
            }
        };
        let when = match (self.every_unit, self.nth_unit) {
            (Some(true), None) => ChaosWhen::EveryUnit,
            (None | Some(false), Some(nth)) if nth >= 1 => ChaosWhen::NthUnit(nth),
            _ => {
                return Err(
                    "chaos: give every_unit = true or nth_unit = N (N >= 1), not both".to_string(),
                )
            }
        };
        Ok(Some(ChaosSettings {
            account,
            action,
            when,
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    admin_token_env: Option<String>,
}

impl RawHttp {
    fn validate(self) -> Result<HttpSettings, String> {
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            format!("http.listen: invalid address {listen:?}; use IP:PORT like 127.0.0.1:8080")
        })?;
        if let Some(name) = &self.admin_token_env {
            let looks_like_env = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !looks_like_env {
                return Err(format!(
                    "http.admin_token_env: {:?} is not an environment variable name; give the NAME of a variable (like MARKETSYNC_ADMIN_TOKEN), never the token itself",
                    if name.len() > 12 { "<redacted>" } else { name.as_str() }
                ));
            }
        }
        Ok(HttpSettings {
            listen,
            admin_token_env: self.admin_token_env,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    url_env: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocks {
    ttl: Option<String>,
    hygiene_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulator {
    #[serde(default)]
    enabled: bool,
    listen: Option<String>,
    seed: Option<u64>,
    processing_latency: Option<String>,
    asins_per_marketplace: Option<u32>,
    ebay_orders_per_day: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    provider: String,
    marketplace: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    token_url: Option<String>,
    selling_partner_id: Option<String>,
    credentials: Option<RawCredentials>,
    #[serde(default)]
    streams: BTreeMap<String, RawStream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    client_id_env: Option<String>,
    client_secret_env: Option<String>,
    refresh_token_env: Option<String>,
    api_key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    enabled: Option<bool>,
    lookback: Option<String>,
    chunk: Option<String>,
    interval: Option<String>,
    safety_lag: Option<String>,
    order: Option<String>,
    quota_cooldown: Option<String>,
    retry_base: Option<String>,
    retry_max: Option<String>,
    poll_min: Option<String>,
    poll_max: Option<String>,
    poll_timeout: Option<String>,
    max_document_bytes: Option<u64>,
    daily_audit: Option<bool>,
    weekly_audit: Option<bool>,
    // Cursor streams (eBay).
    start: Option<String>,
    max_window: Option<String>,
    page_limit: Option<u32>,
    max_response_bytes: Option<u64>,
    // Job queues (StockX, Keepa).
    max_attempts: Option<u32>,
    job_lease: Option<String>,
    batch: Option<u32>,
}

/// Parses a humantime duration, naming the key and the fix on error.
fn duration(key: &str, value: Option<&String>, default: Duration) -> Result<Duration, String> {
    let Some(text) = value else {
        return Ok(default);
    };
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("{key}: invalid duration {text:?}; use a form like 72h, 15m or 30s"))
}

fn whole_hours(key: &str, value: Duration) -> Result<Duration, String> {
    if value.as_secs() == 0 || value.as_secs() % 3600 != 0 || value.subsec_nanos() != 0 {
        return Err(format!(
            "{key}: {} is not a whole number of hours; use a form like 6h",
            humantime::format_duration(value)
        ));
    }
    Ok(value)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

/// The production API base and token url of a provider (amazon: by region).
fn default_endpoints(provider: &str, region: &str) -> Option<(&'static str, &'static str)> {
    match provider {
        "ebay" => {
            return Some((
                "https://api.ebay.com",
                "https://api.ebay.com/identity/v1/oauth2/token",
            ))
        }
        "stockx" => {
            return Some((
                "https://api.stockx.com",
                "https://accounts.stockx.com/oauth/token",
            ))
        }
        "keepa" => return Some(("https://api.keepa.com", "https://api.keepa.com/token")),
        _ => {}
    }
    match region {
        "na" => Some((
            "https://sellingpartnerapi-na.amazon.com",
            "https://api.amazon.com/auth/o2/token",
        )),
        "eu" => Some((
            "https://sellingpartnerapi-eu.amazon.com",
            "https://api.amazon.co.uk/auth/o2/token",
        )),
        "fe" => Some((
            "https://sellingpartnerapi-fe.amazon.com",
            "https://api.amazon.co.jp/auth/o2/token",
        )),
        _ => None,
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, String> {
        let data_dir = PathBuf::from(self.data_dir.unwrap_or_else(|| "data".to_string()));
        let simulator = match self.simulator {
            Some(raw) if raw.enabled => Some(raw.validate()?),
            _ => None,
        };
        let mut accounts = Vec::with_capacity(self.accounts.len());
        for (index, raw) in self.accounts.into_iter().enumerate() {
            let key = format!("accounts[{index}]");
            let account = raw.validate(&key, simulator.is_some())?;
            if accounts
                .iter()
                .any(|other: &AccountConfig| other.id == account.id)
            {
                return Err(format!(
                    "{key}.id: duplicate account id {:?}; every account needs its own id",
                    account.id
                ));
            }
            accounts.push(account);
        }
        let redis = self.redis.map(RawRedis::validate).transpose()?;
        let supervisor = self.supervisor.unwrap_or_default();
        supervisor.validate().map_err(|err| err.to_string())?;
        let max_concurrent_runs = self
            .daemon
            .and_then(|daemon| daemon.max_concurrent_runs)
            .unwrap_or(8);
        if max_concurrent_runs == 0 {
            return Err("daemon.max_concurrent_runs: must be at least 1".to_string());
        }
        let chaos = match self.chaos {
            Some(raw) => raw.validate(&accounts)?,
            None => None,
        };
        let http = self.http.map(RawHttp::validate).transpose()?;
        let quota = match self.quota {
            Some(raw) => raw.validate()?,
            None => QuotaSettings::default(),
        };
        let locks = match self.locks {
            Some(raw) => raw.validate()?,
            None => LockSettings {
                ttl: None,
                hygiene_interval: Duration::from_secs(60),
            },
        };
        Ok(Config {
            source_name: String::new(),
            data_dir,
            simulator,
            redis,
            locks,
            supervisor,
            max_concurrent_runs,
            chaos,
            quota,
            http,
            accounts,
        })
    }
}

impl RawRedis {
    fn validate(self) -> Result<RedisSettings, String> {
        let url = match (self.url, self.url_env) {
            (Some(_), Some(_)) => {
                return Err("redis: give url or url_env, not both".to_string());
            }
            (None, None) => {
                return Err(
                    "redis: missing url; give url = \"redis://127.0.0.1:6379\" or url_env naming a variable"
                        .to_string(),
                )
            }
            (Some(url), None) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(format!(
                        "redis.url: {url:?} is not a redis url; use a form like redis://127.0.0.1:6379"
                    ));
                }
                let authority = url.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
                if authority.contains('@') {
                    return Err(
                        "redis.url: contains credentials; put the url in an environment variable and name it with url_env"
                            .to_string(),
                    );
                }
                RedisUrl::Inline(url)
            }
            (None, Some(name)) => RedisUrl::Env(name),
        };
        Ok(RedisSettings {
            url,
            prefix: self
                .prefix
                .unwrap_or_else(|| crate::lock::DEFAULT_PREFIX.to_string()),
        })
    }
}

impl RawLocks {
    fn validate(self) -> Result<LockSettings, String> {
        let ttl = match &self.ttl {
            Some(_) => {
                let ttl = duration("locks.ttl", self.ttl.as_ref(), Duration::ZERO)?;
                if ttl > crate::lock::MAX_TTL {
                    return Err(format!(
                        "locks.ttl: {} is above the cap of {}; a long lease outlives a dead owner (the zombie lock), use 15m",
                        humantime::format_duration(ttl),
                        humantime::format_duration(crate::lock::MAX_TTL)
                    ));
                }
                if ttl < Duration::from_secs(1) {
                    return Err("locks.ttl: must be at least 1s".to_string());
                }
                Some(ttl)
            }
            None => None,
        };
        let hygiene_interval = duration(
            "locks.hygiene_interval",
            self.hygiene_interval.as_ref(),
            Duration::from_secs(60),
        )?;
        if hygiene_interval < Duration::from_secs(1) {
            return Err("locks.hygiene_interval: must be at least 1s".to_string());
        }
        Ok(LockSettings {
            ttl,
            hygiene_interval,
        })
    }
}

impl RawSimulator {
    fn validate(self) -> Result<SimulatorSettings, String> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:0".to_string());
        let listen = listen_text.parse().map_err(|_| {
            format!(
                "simulator.listen: invalid address {listen_text:?}; use a form like 127.0.0.1:4000"
            )
        })?;
        let processing_latency = duration(
            "simulator.processing_latency",
            self.processing_latency.as_ref(),
            Duration::from_secs(2),
        )?;
        let asins_per_marketplace = self.asins_per_marketplace.unwrap_or(25);
        if asins_per_marketplace == 0 {
            return Err("simulator.asins_per_marketplace: must be at least 1".to_string());
        }
        let ebay_orders_per_day = self.ebay_orders_per_day.unwrap_or(50);
        if !(1..=100_000).contains(&ebay_orders_per_day) {
            return Err(format!(
                "simulator.ebay_orders_per_day: {ebay_orders_per_day} is out of range; use 1 to 100000"
            ));
        }
        Ok(SimulatorSettings {
            listen,
            seed: self.seed.unwrap_or(42),
            processing_latency,
            asins_per_marketplace,
            ebay_orders_per_day,
        })
    }
}

impl RawAccount {
    fn validate(self, key: &str, simulator_enabled: bool) -> Result<AccountConfig, String> {
        if !valid_id(&self.id) {
            return Err(format!(
                "{key}.id: invalid account id {:?}; use lowercase letters, digits, '-', '_' or '.' (at most 64)",
                self.id
            ));
        }
        let Some(provider_kind) = Provider::parse(&self.provider) else {
            return Err(format!(
                "{key}.provider: unknown provider {:?}; expected one of {}",
                self.provider,
                Provider::names()
            ));
        };
        let supported = streams_of(provider_kind);
        let provider = self.provider.as_str();
        let marketplace = match (self.marketplace, provider) {
            (Some(marketplace), _) if !marketplace.trim().is_empty() => marketplace,
            (_, "ebay") => "EBAY_US".to_string(),
            (_, "stockx") => "US".to_string(),
            // Keepa's domain id: 1 is amazon.com.
            (_, "keepa") => "1".to_string(),
            _ => {
                return Err(format!(
                    "{key}.marketplace: missing; give the marketplace id, e.g. ATVPDKIKX0DER for amazon.com"
                ))
            }
        };
        if self.region.is_some() && provider != "amazon" {
            return Err(format!(
                "{key}.region: only amazon accounts have a region; remove it (use endpoint to point a {provider} account elsewhere)"
            ));
        }
        let region = self.region.unwrap_or_else(|| "na".to_string());
        let Some((default_api, default_token)) = default_endpoints(provider, &region) else {
            return Err(format!(
                "{key}.region: unknown region {region:?}; expected one of na, eu, fe"
            ));
        };
        let explicit = self.endpoint.is_some() || self.token_url.is_some();
        let endpoints = if simulator_enabled && !explicit {
            Endpoints::EmbeddedSimulator
        } else {
            for (name, value) in [("endpoint", &self.endpoint), ("token_url", &self.token_url)] {
                if let Some(url) = value {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(format!(
                            "{key}.{name}: {url:?} is not an http(s) url; use a form like https://sellingpartnerapi-na.amazon.com"
                        ));
                    }
                }
            }
            Endpoints::Explicit {
                api_base: self
                    .endpoint
                    .unwrap_or_else(|| default_api.to_string())
                    .trim_end_matches('/')
                    .to_string(),
                token_url: self.token_url.unwrap_or_else(|| default_token.to_string()),
            }
        };
        let credentials = self.credentials.map(|raw| CredentialEnv {
            client_id_env: raw.client_id_env,
            client_secret_env: raw.client_secret_env,
            refresh_token_env: raw.refresh_token_env,
            api_key_env: raw.api_key_env,
        });
        let (required, optional): (&[&str], &[&str]) = match provider {
            "amazon" => (
                &["client_id_env", "client_secret_env", "refresh_token_env"],
                &[],
            ),
            "ebay" => (
                &["client_id_env", "client_secret_env"],
                &["refresh_token_env"],
            ),
            "stockx" => (
                &[
                    "client_id_env",
                    "client_secret_env",
                    "refresh_token_env",
                    "api_key_env",
                ],
                &[],
            ),
            _ => (&["api_key_env"], &[]),
        };
        if credentials.is_none() && endpoints != Endpoints::EmbeddedSimulator {
            return Err(format!(
                "{key}.credentials: missing; add [accounts.credentials] with {} naming environment variables",
                required.join(", ")
            ));
        }
        if let Some(credentials) = &credentials {
            let fields = [
                ("client_id_env", &credentials.client_id_env),
                ("client_secret_env", &credentials.client_secret_env),
                ("refresh_token_env", &credentials.refresh_token_env),
                ("api_key_env", &credentials.api_key_env),
            ];
            for (name, value) in fields {
                if value.is_none() && required.contains(&name) {
                    return Err(format!(
                        "{key}.credentials.{name}: missing; {provider} accounts need {}",
                        required.join(", ")
                    ));
                }
            }
            for (name, value) in fields {
                let Some(value) = value else {
                    continue;
                };
                if !required.contains(&name) && !optional.contains(&name) {
                    return Err(format!(
                        "{key}.credentials.{name}: {provider} accounts do not use it; remove it (they need {})",
                        required.join(", ")
                    ));
                }
                let looks_like_env = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if !looks_like_env {
                    return Err(format!(
                        "{key}.credentials.{name}: {:?} is not an environment variable name; give the NAME of a variable (like ACME_LWA_CLIENT_ID), never the secret itself",
                        if value.len() > 12 { "<redacted>" } else { value.as_str() }
                    ));
                }
            }
        }
        if let Some(seller) = &self.selling_partner_id {
            let valid = !seller.is_empty()
                && seller.len() <= 64
                && seller
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid {
                return Err(format!(
                    "{key}.selling_partner_id: {seller:?} is not a selling partner id; use letters, digits, '-', '_' or '.' (at most 64), e.g. A3EXAMPLE1SELLER"
                ));
            }
        }
        let mut streams = Vec::new();
        for (name, raw) in self.streams {
            let stream_key = format!("{key}.streams.{name}");
            if !supported.contains(&name.as_str()) {
                return Err(format!(
                    "{stream_key}: unknown stream {name:?} for provider {}; expected one of {}",
                    self.provider,
                    supported.join(", ")
                ));
            }
            if raw.enabled == Some(false) {
                continue;
            }
            streams.push(raw.validate(&stream_key, name, provider_kind.shape())?);
        }
        // Kept for the daemon's life, 10,000 accounts of it: no spare capacity.
        streams.shrink_to_fit();
        Ok(AccountConfig {
            id: self.id,
            provider: provider_kind,
            marketplace,
            endpoints,
            credentials,
            selling_partner_id: self.selling_partner_id,
            streams,
        })
    }
}

impl RawStream {
    /// Keys that belong to one shape only, named so a misplaced key is an error.
    fn shape_keys(&self) -> [(&'static str, bool, Shape); 16] {
        use Shape::{Cursor, Jobs, Windowed};
        [
            ("lookback", self.lookback.is_some(), Windowed),
            ("chunk", self.chunk.is_some(), Windowed),
            ("order", self.order.is_some(), Windowed),
            ("poll_min", self.poll_min.is_some(), Windowed),
            ("poll_max", self.poll_max.is_some(), Windowed),
            ("poll_timeout", self.poll_timeout.is_some(), Windowed),
            (
                "max_document_bytes",
                self.max_document_bytes.is_some(),
                Windowed,
            ),
            ("daily_audit", self.daily_audit.is_some(), Windowed),
            ("weekly_audit", self.weekly_audit.is_some(), Windowed),
            ("start", self.start.is_some(), Cursor),
            ("max_window", self.max_window.is_some(), Cursor),
            ("page_limit", self.page_limit.is_some(), Cursor),
            (
                "max_response_bytes",
                self.max_response_bytes.is_some(),
                Cursor,
            ),
            ("max_attempts", self.max_attempts.is_some(), Jobs),
            ("job_lease", self.job_lease.is_some(), Jobs),
            ("batch", self.batch.is_some(), Jobs),
        ]
    }

    fn validate(self, key: &str, name: String, shape: Shape) -> Result<StreamConfig, String> {
        let field = |field: &str| format!("{key}.{field}");
        for (name, present, belongs) in self.shape_keys() {
            if present && belongs != shape {
                let kind = match shape {
                    Shape::Windowed => "report (windowed)",
                    Shape::Cursor => "cursor",
                    Shape::Jobs => "job queue",
                };
                return Err(format!(
                    "{}: does not apply to {kind} streams; remove it (see config/example.toml for this stream's keys)",
                    field(name)
                ));
            }
        }
        let start = duration(
            &field("start"),
            self.start.as_ref(),
            CursorSettings::DEFAULT.start,
        )?;
        let max_window = duration(
            &field("max_window"),
            self.max_window.as_ref(),
            CursorSettings::DEFAULT.max_window,
        )?;
        if max_window < Duration::from_secs(60) || max_window > hours(24 * 7) {
            return Err(format!(
                "{}: must be between 1m and 7d (24h is the default and what eBay handles well)",
                field("max_window")
            ));
        }
        let page_limit = self
            .page_limit
            .unwrap_or(CursorSettings::DEFAULT.page_limit);
        if !(1..=200).contains(&page_limit) {
            return Err(format!(
                "{}: {page_limit} is out of range; eBay pages hold 1 to 200 items",
                field("page_limit")
            ));
        }
        let max_attempts = self
            .max_attempts
            .unwrap_or(JobsSettings::DEFAULT.max_attempts);
        if max_attempts == 0 {
            return Err(format!("{}: must be at least 1", field("max_attempts")));
        }
        let job_lease = duration(
            &field("job_lease"),
            self.job_lease.as_ref(),
            JobsSettings::DEFAULT.job_lease,
        )?;
        if job_lease < Duration::from_secs(1) {
            return Err(format!("{}: must be at least 1s", field("job_lease")));
        }
        let batch_max = if name == "products" { 100 } else { 1 };
        let batch = self.batch.unwrap_or(batch_max);
        if !(1..=batch_max).contains(&batch) {
            return Err(format!(
                "{}: {batch} is out of range; this provider takes 1 to {batch_max} keys per request",
                field("batch")
            ));
        }
        let default_interval = match shape {
            Shape::Windowed => Duration::from_secs(15 * 60),
            Shape::Cursor => Duration::from_secs(5 * 60),
            Shape::Jobs => Duration::from_secs(30),
        };
        let default_lag = match shape {
            Shape::Windowed => Duration::from_secs(5 * 60),
            Shape::Cursor => Duration::from_secs(2 * 60),
            Shape::Jobs => Duration::ZERO,
        };
        let lookback = whole_hours(
            &field("lookback"),
            duration(
                &field("lookback"),
                self.lookback.as_ref(),
                WindowedSettings::DEFAULT.lookback,
            )?,
        )?;
        let chunk = whole_hours(
            &field("chunk"),
            duration(
                &field("chunk"),
                self.chunk.as_ref(),
                WindowedSettings::DEFAULT.chunk,
            )?,
        )?;
        if chunk > hours(24 * 7) {
            return Err(format!(
                "{}: {} is longer than the 7 days one report may cover; use 24h or less",
                field("chunk"),
                humantime::format_duration(chunk)
            ));
        }
        let interval = duration(&field("interval"), self.interval.as_ref(), default_interval)?;
        if interval < Duration::from_secs(1) {
            return Err(format!("{}: must be at least 1s", field("interval")));
        }
        let safety_lag = duration(&field("safety_lag"), self.safety_lag.as_ref(), default_lag)?;
        let order = match self.order.as_deref() {
            None | Some("newest_first") => ClaimOrder::NewestFirst,
            Some("oldest_first") => ClaimOrder::OldestFirst,
            Some(other) => {
                return Err(format!(
                    "{}: unknown order {other:?}; expected newest_first or oldest_first",
                    field("order")
                ))
            }
        };
        let quota_cooldown = duration(
            &field("quota_cooldown"),
            self.quota_cooldown.as_ref(),
            Duration::from_secs(30 * 60),
        )?;
        let retry_base = duration(
            &field("retry_base"),
            self.retry_base.as_ref(),
            Duration::from_secs(60),
        )?;
        let retry_max = duration(&field("retry_max"), self.retry_max.as_ref(), hours(1))?;
        if retry_max < retry_base {
            return Err(format!(
                "{}: must not be shorter than retry_base ({})",
                field("retry_max"),
                humantime::format_duration(retry_base)
            ));
        }
        let poll_min = duration(
            &field("poll_min"),
            self.poll_min.as_ref(),
            WindowedSettings::DEFAULT.poll_min,
        )?;
        let poll_max = duration(
            &field("poll_max"),
            self.poll_max.as_ref(),
            WindowedSettings::DEFAULT.poll_max,
        )?;
        if poll_min.is_zero() || poll_max < poll_min {
            return Err(format!(
                "{}: poll_min must be above zero and poll_max at least poll_min",
                field("poll_max")
            ));
        }
        let poll_timeout = duration(
            &field("poll_timeout"),
            self.poll_timeout.as_ref(),
            WindowedSettings::DEFAULT.poll_timeout,
        )?;
        let shape_settings = match shape {
            Shape::Windowed => ShapeSettings::Windowed(WindowedSettings {
                lookback,
                chunk,
                order,
                poll_min,
                poll_max,
                poll_timeout,
                max_document_bytes: self
                    .max_document_bytes
                    .unwrap_or(WindowedSettings::DEFAULT.max_document_bytes),
                daily_audit: self
                    .daily_audit
                    .unwrap_or(WindowedSettings::DEFAULT.daily_audit),
                weekly_audit: self
                    .weekly_audit
                    .unwrap_or(WindowedSettings::DEFAULT.weekly_audit),
            }),
            Shape::Cursor => ShapeSettings::Cursor(CursorSettings {
                start,
                max_window,
                page_limit,
                max_response_bytes: self
                    .max_response_bytes
                    .unwrap_or(CursorSettings::DEFAULT.max_response_bytes),
            }),
            Shape::Jobs => ShapeSettings::Jobs(JobsSettings {
                max_attempts,
                job_lease,
                batch,
            }),
        };
        Ok(StreamConfig {
            name,
            interval,
            safety_lag,
            quota_cooldown,
            retry_base,
            retry_max,
            shape: shape_settings,
        })
    }
}

fn hours(count: u64) -> Duration {
    Duration::from_secs(count * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_demo_is_valid() {
        let config = Config::embedded_demo().unwrap();
        assert!(config.simulator.is_some());
        assert!(!config.accounts.is_empty());
    }

    #[test]
    fn example_documents_every_key_and_is_valid() {
        let text = include_str!("../../config/example.toml");
        let config = Config::parse(text, "config/example.toml").unwrap();
        let stream = config.accounts[0].stream("vendor_rt_sales").unwrap();
        assert_eq!(stream.windowed().lookback, hours(72));
        assert_eq!(stream.windowed().chunk, hours(6));
    }

    #[test]
    fn example_configures_every_shape() {
        let text = include_str!("../../config/example.toml");
        let config = Config::parse(text, "config/example.toml").unwrap();
        let ebay = config.account("ebay-store-17").unwrap();
        assert_eq!(ebay.provider.shape(), Shape::Cursor);
        let orders = ebay.stream("orders").unwrap();
        assert_eq!(orders.cursor().max_window, hours(24));
        assert_eq!(orders.cursor().start, hours(90 * 24));
        assert_eq!(orders.cursor().page_limit, 200);
        // Tables left empty take the defaults.
        assert_eq!(
            ebay.stream("returns").unwrap().interval,
            Duration::from_secs(300)
        );
        assert_eq!(
            ebay.credentials
                .as_ref()
                .unwrap()
                .refresh_token_env
                .as_deref(),
            Some("STORE17_EBAY_REFRESH_TOKEN")
        );
        let keepa = config.account("keepa-main").unwrap();
        assert_eq!(keepa.stream("products").unwrap().jobs().batch, 100);
        assert_eq!(
            config
                .account("stockx-main")
                .unwrap()
                .stream("market_data")
                .unwrap()
                .jobs()
                .batch,
            1
        );
    }

    #[test]
    fn keys_of_another_shape_and_missing_credentials_are_errors() {
        let cases = [
            (
                "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.orders]\nchunk = \"6h\"\n",
                "c.toml: accounts[0].streams.orders.chunk: does not apply to cursor streams; remove it",
            ),
            (
                "[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n[accounts.streams.vendor_rt_sales]\nmax_window = \"24h\"\n",
                "c.toml: accounts[0].streams.vendor_rt_sales.max_window: does not apply to report (windowed) streams",
            ),
            (
                "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\n[accounts.streams.products]\nbatch = 101\n",
                "c.toml: accounts[0].streams.products.batch: 101 is out of range; this provider takes 1 to 100",
            ),
            (
                "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.orders]\npage_limit = 500\n",
                "c.toml: accounts[0].streams.orders.page_limit: 500 is out of range",
            ),
            (
                "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.offers]\n",
                "c.toml: accounts[0].streams.offers: unknown stream \"offers\" for provider ebay",
            ),
            (
                "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\n[accounts.credentials]\nclient_id_env = \"K_ID\"\n",
                "c.toml: accounts[0].credentials.api_key_env: missing; keepa accounts need api_key_env",
            ),
            (
                "[[accounts]]\nid = \"k\"\nprovider = \"keepa\"\n[accounts.credentials]\napi_key_env = \"K_KEY\"\nclient_id_env = \"K_ID\"\n",
                "c.toml: accounts[0].credentials.client_id_env: keepa accounts do not use it; remove it",
            ),
            (
                "[[accounts]]\nid = \"s\"\nprovider = \"stockx\"\nregion = \"eu\"\n",
                "c.toml: accounts[0].region: only amazon accounts have a region",
            ),
        ];
        for (text, expected) in cases {
            let text = format!("[simulator]\nenabled = true\n{text}");
            let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let text = "[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.streams.orders]\n";
        let err = Config::parse(text, "c.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("c.toml: accounts[0].credentials: missing; add [accounts.credentials] with client_id_env, client_secret_env"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let text = "[[accounts]]\nid = \"a\"\nprovider = \"ebya\"\nmarketplace = \"X\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "c.toml: accounts[0].provider: unknown provider \"ebya\"; expected one of amazon, ebay, stockx, keepa"
        );
        let text = "[simulator]\nenabled = true\n[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n[accounts.streams.vendor_rt_sales]\nlookback = \"3 hourz\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err().to_string();
        assert_eq!(
            err,
            "c.toml: accounts[0].streams.vendor_rt_sales.lookback: invalid duration \"3 hourz\"; use a form like 72h, 15m or 30s"
        );
        let err = Config::parse("data_dri = \"x\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "c.toml: data_dri: unknown field `data_dri`, expected one of `data_dir`"
            ),
            "{err}"
        );
    }

    const ACCOUNT: &str = "[simulator]\nenabled = true\n[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n";

    #[test]
    fn quota_section_parses_overrides_and_defaults() {
        let config = Config::parse(ACCOUNT, "c.toml").unwrap();
        assert_eq!(config.quota, QuotaSettings::default());
        assert_eq!(config.accounts[0].quota_scope(), "a");
        let text = format!(
            "[quota]\nreserve_share = 0.3\nrate_margin = 0\n[quota.amazon.createReport]\nrate = 0.5\nburst = 2\n{ACCOUNT}selling_partner_id = \"A3SELLER\"\n"
        );
        let config = Config::parse(&text, "c.toml").unwrap();
        assert_eq!(config.quota.reserve_share, 0.3);
        assert_eq!(config.quota.rate_margin, 0.0);
        assert_eq!(
            config.quota.amazon.get("createReport"),
            Some(&crate::quota::BucketSpec::new(0.5, 2.0))
        );
        assert_eq!(config.accounts[0].quota_scope(), "A3SELLER");
        let text = format!("[quota.ebay.getTransactions]\nrate = 0.05\nburst = 500\n{ACCOUNT}");
        let config = Config::parse(&text, "c.toml").unwrap();
        assert_eq!(
            config.quota.providers["ebay"].get("getTransactions"),
            Some(&crate::quota::BucketSpec::new(0.05, 500.0))
        );
        let text = format!("[quota.keepa.products]\nrate = 1\nburst = 5\n{ACCOUNT}");
        let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("c.toml: quota.keepa.products: unknown operation \"products\"; expected one of product"),
            "{err}"
        );
    }

    #[test]
    fn quota_errors_name_the_key_and_the_fix() {
        let cases = [
            (
                "[quota]\nreserve_shar = 0.2\n",
                "c.toml: quota.reserve_shar: unknown field `reserve_shar`",
            ),
            (
                "[quota]\nreserve_share = 1.5\n",
                "c.toml: quota.reserve_share: 1.5 is not a share",
            ),
            (
                "[quota.amazon.createReprot]\nrate = 1.0\nburst = 2\n",
                "c.toml: quota.amazon.createReprot: unknown operation \"createReprot\"",
            ),
            (
                "[quota.amazon.getReport]\nrate = 0\nburst = 2\n",
                "c.toml: quota.amazon.getReport.rate: 0 is not a rate",
            ),
            (
                "[quota.amazon.getReport]\nrate = 1.0\n",
                "c.toml: quota.amazon.getReport: missing field `burst`",
            ),
            (
                "[quota.amazon.getReport]\nrate = 1.0\nburst = 2\ncost = 1\n",
                "c.toml: quota.amazon.getReport.cost: unknown field `cost`",
            ),
        ];
        for (quota, expected) in cases {
            let text = format!("{quota}{ACCOUNT}");
            let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let text = format!("{ACCOUNT}selling_partner_id = \"a:b\"\n");
        let err = Config::parse(&text, "c.toml").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "c.toml: accounts[0].selling_partner_id: \"a:b\" is not a selling partner id"
            ),
            "{err}"
        );
    }
}
