//! Validation of the top-level tables: `RawConfig` into [`Config`], and the `[quota]`,
//! `[chaos]`, `[http]`, `[redis]`, `[locks]` and `[simulator]` sections, plus the duration
//! helpers every section uses. Accounts and their streams are validated in
//! [`super::accounts`]. Every error names the key path and the fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{
    RawBucket, RawChaos, RawConfig, RawHttp, RawLocks, RawQuota, RawRedis, RawSimulator,
};
use super::{
    quota_operations, AccountConfig, ChaosSettings, Config, HttpSettings, LockSettings,
    QuotaSettings, RedisSettings, RedisUrl, SimulatorSettings,
};

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config, String> {
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

impl RawChaos {
    fn validate(self, accounts: &[AccountConfig]) -> Result<Option<ChaosSettings>, String> {
        use crate::domain::chaos::{ChaosAction, ChaosTarget, ChaosWhen, SERVICES};
        if !self.enabled {
            if self.account.is_some()
                || self.service.is_some()
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
        let (account, target) = match (self.account, self.service) {
            (Some(_), Some(_)) => {
                return Err(
                    "chaos: give account or service, not both (one drill at a time)".to_string(),
                )
            }
            (None, Some(service)) => {
                if !SERVICES.contains(&service.as_str()) {
                    return Err(format!(
                        "chaos.service: unknown service {service:?}; expected one of {}",
                        SERVICES.join(", ")
                    ));
                }
                if self.action.as_deref().is_some_and(|action| action != "panic") {
                    return Err(
                        "chaos.action: a service drill can only panic; remove action or use panic"
                            .to_string(),
                    );
                }
                (service, ChaosTarget::Service)
            }
            (Some(account), None) => {
                if !accounts.iter().any(|known| known.id == account) {
                    return Err(format!(
                        "chaos.account: unknown account {account:?}; name a configured account"
                    ));
                }
                (account, ChaosTarget::Account)
            }
            (None, None) => {
                return Err(
                    "chaos.account: missing; name the account whose actor the drill crashes (or chaos.service for an infrastructure service)"
                        .to_string(),
                )
            }
        };
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
            target,
            action,
            when,
        }))
    }
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

/// Parses a humantime duration, naming the key and the fix on error.
pub(super) fn duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, String> {
    let Some(text) = value else {
        return Ok(default);
    };
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("{key}: invalid duration {text:?}; use a form like 72h, 15m or 30s"))
}

pub(super) fn whole_hours(key: &str, value: Duration) -> Result<Duration, String> {
    if value.as_secs() == 0 || value.as_secs() % 3600 != 0 || value.subsec_nanos() != 0 {
        return Err(format!(
            "{key}: {} is not a whole number of hours; use a form like 6h",
            humantime::format_duration(value)
        ));
    }
    Ok(value)
}

pub(super) fn hours(count: u64) -> Duration {
    Duration::from_secs(count * 3600)
}
