//! Validation of the top-level tables: `RawConfig` into [`Config`], and the `[quota]`,
//! `[chaos]`, `[http]`, `[redis]`, `[store]`, `[locks]` and `[simulator]` sections, plus the duration
//! helpers every section uses. Accounts and their streams are validated in
//! [`super::accounts`]. Every error names the key path and the fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{
    RawBucket, RawChaos, RawCluster, RawConfig, RawHttp, RawLocks, RawQuota, RawRedis,
    RawSimulator, RawStore,
};
use super::{
    quota_operations, AccountConfig, ChaosSettings, Config, HttpSettings, LockSettings, Purpose,
    QuotaSettings, RedisSettings, RedisUrl, SimulatorProfile, SimulatorSettings,
};
use crate::store::postgres::{DatabaseUrl, PgSettings, StoreSettings};

impl RawConfig {
    pub(super) fn validate(self, purpose: Purpose) -> Result<Config, String> {
        let data_dir = PathBuf::from(self.data_dir.unwrap_or_else(|| "data".to_string()));
        let simulator = match self.simulator {
            Some(raw) if raw.enabled => Some(raw.validate()?),
            _ => None,
        };
        check_count("accounts", self.accounts.len(), 0, limits::ACCOUNTS_MAX)?;
        let mut accounts = Vec::with_capacity(self.accounts.len());
        // Per account, its streams that leave `max_in_flight` to the default (which
        // follows a configured createReport burst; see below).
        let mut in_flight_defaulted = Vec::with_capacity(self.accounts.len());
        for (index, raw) in self.accounts.into_iter().enumerate() {
            let key = format!("accounts[{index}]");
            in_flight_defaulted.push(
                raw.streams
                    .iter()
                    .filter(|(_, stream)| stream.max_in_flight.is_none())
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<String>>(),
            );
            let account = raw.validate(&key, simulator.is_some(), purpose)?;
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
        let cluster = match self.cluster {
            Some(raw) => raw.validate(redis.is_some())?,
            None => None,
        };
        let store = match self.store {
            Some(raw) => raw.validate()?,
            None => None,
        };
        let supervisor = self.supervisor.unwrap_or_default();
        supervisor.validate().map_err(|err| err.to_string())?;
        check_supervisor(&supervisor)?;
        let max_concurrent_runs = check_count(
            "daemon.max_concurrent_runs",
            self.daemon
                .as_ref()
                .and_then(|daemon| daemon.max_concurrent_runs)
                .unwrap_or(8),
            1,
            limits::MAX_CONCURRENT_RUNS_MAX,
        )?;
        let shutdown_grace = bounded_duration(
            "daemon.shutdown_grace",
            self.daemon
                .as_ref()
                .and_then(|daemon| daemon.shutdown_grace.as_ref()),
            limits::SHUTDOWN_GRACE_DEFAULT,
            limits::SECOND,
            limits::SHUTDOWN_GRACE_MAX,
        )?;
        let chaos = match self.chaos {
            Some(raw) => raw.validate(&accounts)?,
            None => None,
        };
        let http = self.http.map(RawHttp::validate).transpose()?;
        let quota = match self.quota {
            Some(raw) => raw.validate()?,
            None => QuotaSettings::default(),
        };
        default_in_flight_to_the_burst(&mut accounts, &in_flight_defaulted, &quota);
        let freshness = match self.freshness {
            Some(raw) => raw.validate()?,
            None => crate::shapes::jobs::scheduler::FreshnessSettings::default(),
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
            store,
            locks,
            cluster,
            supervisor,
            max_concurrent_runs,
            shutdown_grace,
            chaos,
            quota,
            http,
            freshness,
            accounts,
        })
    }
}

impl super::raw::RawFreshness {
    fn validate(self) -> Result<crate::shapes::jobs::scheduler::FreshnessSettings, String> {
        use crate::shapes::jobs::scheduler as freshness;
        let interval = bounded_duration(
            "freshness.interval",
            self.interval.as_ref(),
            freshness::DEFAULT_INTERVAL,
            Duration::from_millis(100),
            Duration::from_secs(24 * 3600),
        )?;
        let max_per_pass = check_count(
            "freshness.max_per_pass",
            self.max_per_pass.unwrap_or(freshness::DEFAULT_MAX_PER_PASS),
            1,
            100_000,
        )?;
        let keep_runs = bounded_duration(
            "freshness.keep_runs",
            self.keep_runs.as_ref(),
            freshness::DEFAULT_KEEP_RUNS,
            Duration::from_secs(60),
            Duration::from_secs(366 * 24 * 3600),
        )?;
        let mut stale_after = BTreeMap::new();
        for (provider, text) in &self.stale_after {
            if !crate::store::jobs::JOB_PROVIDERS.contains(&provider.as_str()) {
                return Err(format!(
                    "freshness.stale_after.{provider}: unknown job provider; expected one of {}",
                    crate::store::jobs::JOB_PROVIDERS.join(", ")
                ));
            }
            let key = format!("freshness.stale_after.{provider}");
            let value = bounded_duration(
                &key,
                Some(text),
                freshness::DEFAULT_STALE_AFTER,
                Duration::from_secs(1),
                Duration::from_secs(30 * 24 * 3600),
            )?;
            stale_after.insert(provider.clone(), value);
        }
        Ok(freshness::FreshnessSettings {
            enabled: self.enabled.unwrap_or(true),
            interval,
            max_per_pass,
            stale_after,
            keep_runs,
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
                "quota.rate_margin: {rate_margin} is out of range; use a number from 0 to 0.5, e.g. 0.005"
            ));
        }
        let amazon = validate_buckets("amazon", self.amazon)?;
        let amazon_application = validate_buckets("amazon_application", self.amazon_application)?;
        let mut providers = BTreeMap::new();
        for (provider, raw) in [
            ("ebay", self.ebay),
            ("stockx", self.stockx),
            ("keepa", self.keepa),
            ("alias", self.alias),
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

/// Upper bounds of the `[supervisor]` durations and counts (its own `validate` checks
/// they are positive and ordered).
fn check_supervisor(
    policy: &crate::actors::supervisor::policy::RestartPolicy,
) -> Result<(), String> {
    let durations = [
        ("min_backoff", policy.min_backoff),
        ("max_backoff", policy.max_backoff),
        ("reset_after", policy.reset_after),
        ("crash_window", policy.crash_window),
        ("probe_after", policy.probe_after),
        ("stuck_after", policy.stuck_after),
        ("mass_failure_window", policy.mass_failure_window),
        ("mass_failure_pause", policy.mass_failure_pause),
    ];
    for (key, value) in durations {
        check_duration(
            &format!("supervisor.{key}"),
            value,
            Duration::ZERO,
            limits::SUPERVISOR_DURATION_MAX,
        )?;
    }
    check_duration(
        "supervisor.heartbeat",
        policy.heartbeat,
        Duration::from_millis(10),
        limits::SUPERVISOR_HEARTBEAT_MAX,
    )?;
    check_count("supervisor.max_crashes", policy.max_crashes, 0, 10_000_000)?;
    check_count(
        "supervisor.mass_failure_children",
        policy.mass_failure_children,
        0,
        limits::ACCOUNTS_MAX,
    )?;
    Ok(())
}

/// A number as an error message shows it: plain when short, else in exponent form
/// (`1e300`, not three hundred digits).
fn show_number(value: f64) -> String {
    if value.is_finite() && value.abs() < 1e15 {
        format!("{value}")
    } else {
        format!("{value:?}")
    }
}

/// A report stream's default `max_in_flight` is "what the createReport burst allows"
/// (issue 12): the documented burst (15) unless `[quota.amazon.createReport] burst` says
/// otherwise, in which case every Amazon windowed stream that does not set its own
/// `max_in_flight` requests that many windows ahead (floored, 1 to
/// [`limits::MAX_IN_FLIGHT`]). Windows past the burst would only wait at the gate.
fn default_in_flight_to_the_burst(
    accounts: &mut [AccountConfig],
    defaulted: &[Vec<String>],
    quota: &QuotaSettings,
) {
    let Some(spec) = quota.amazon.get("createReport") else {
        return;
    };
    if !spec.burst.is_finite() {
        return;
    }
    let in_flight = spec
        .burst
        .floor()
        .clamp(1.0, f64::from(limits::MAX_IN_FLIGHT)) as u32;
    for (account, defaulted) in accounts.iter_mut().zip(defaulted) {
        if account.provider != crate::domain::Provider::Amazon {
            continue;
        }
        for stream in &mut account.streams {
            if !defaulted.contains(&stream.name) {
                continue;
            }
            if let crate::shapes::spec::ShapeSettings::Windowed(windowed) = &mut stream.shape {
                windowed.max_in_flight = in_flight;
            }
        }
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
        if !(raw.rate.is_finite() && raw.rate > 0.0 && raw.rate <= limits::BUCKET_RATE_MAX) {
            return Err(format!(
                "{key}.rate: {} is not a rate; give requests per second above 0 and at most {}, e.g. 0.0167",
                show_number(raw.rate),
                limits::BUCKET_RATE_MAX
            ));
        }
        if !(raw.burst.is_finite() && raw.burst >= 1.0 && raw.burst <= limits::BUCKET_BURST_MAX) {
            return Err(format!(
                "{key}.burst: {} is out of range; a bucket holds 1 to {} requests, e.g. 15",
                show_number(raw.burst),
                limits::BUCKET_BURST_MAX
            ));
        }
        let window = match raw.per_hour {
            None => None,
            Some(limit) if limit.is_finite() && limit >= raw.burst && limit <= limits::BUCKET_BURST_MAX => {
                Some(crate::quota::WindowCap {
                    limit,
                    length: std::time::Duration::from_secs(3600),
                })
            }
            Some(limit) => {
                return Err(format!(
                    "{key}.per_hour: {} is out of range; give the calls allowed in any hour, at least the burst ({}) and at most {}, e.g. 100",
                    show_number(limit),
                    show_number(raw.burst),
                    limits::BUCKET_BURST_MAX
                ))
            }
        };
        buckets.insert(
            operation,
            crate::quota::BucketSpec::new(raw.rate, raw.burst).with_window(window),
        );
    }
    Ok(buckets)
}

impl RawChaos {
    fn validate(self, accounts: &[AccountConfig]) -> Result<Option<ChaosSettings>, String> {
        use crate::domain::chaos::{ChaosAction, ChaosTarget, ChaosWhen, PAUSE_MAX, SERVICES};
        if !self.enabled {
            if self.account.is_some()
                || self.service.is_some()
                || self.action.is_some()
                || self.every_unit.is_some()
                || self.nth_unit.is_some()
                || self.pause.is_some()
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
        let action = match (self.action.as_deref(), self.pause) {
            (None | Some("panic"), None) => ChaosAction::Panic,
            (Some("freeze"), None) => ChaosAction::Freeze,
            (Some("pause_before_apply"), Some(pause)) => {
                ChaosAction::PauseBeforeApply(bounded_duration(
                    "chaos.pause",
                    Some(&pause),
                    Duration::ZERO,
                    Duration::from_millis(1),
                    PAUSE_MAX,
                )?)
            }
            (Some("pause_before_apply"), None) => {
                return Err(
                    "chaos.pause: missing; pause_before_apply needs pause = \"DURATION\" (e.g. \"15s\")"
                        .to_string(),
                )
            }
            (Some("panic" | "freeze") | None, Some(_)) => {
                return Err(
                    "chaos.pause: only action = \"pause_before_apply\" takes a pause; remove it"
                        .to_string(),
                )
            }
            (Some(other), _) => {
                return Err(format!(
                    "chaos.action: unknown action {other:?}; expected panic, freeze or pause_before_apply"
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
                && name.len() <= 128
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
        let allow_unauthenticated = self.allow_unauthenticated.unwrap_or(false);
        if !listen.ip().is_loopback() && self.admin_token_env.is_none() && !allow_unauthenticated {
            return Err(format!(
                "http.listen: {listen} is reachable from other hosts but no admin token is configured; set admin_token_env = \"MARKETSYNC_ADMIN_TOKEN\" (and export that variable), listen on 127.0.0.1, or set allow_unauthenticated = true to accept an open API knowingly"
            ));
        }
        let allowed_hosts = self.allowed_hosts.unwrap_or_default();
        check_count(
            "http.allowed_hosts",
            allowed_hosts.len(),
            0,
            limits::ALLOWED_HOSTS_MAX,
        )?;
        let mut hosts = Vec::with_capacity(allowed_hosts.len());
        for (index, host) in allowed_hosts.iter().enumerate() {
            let normalized = crate::http::settings::normalize_allowed_host(host).ok_or_else(|| {
                format!(
                    "http.allowed_hosts[{index}]: {:?} is not a host name; give a name or address as the Host header carries it, like \"marketsync.internal\" or \"10.0.0.5:8080\"",
                    host.chars().take(64).collect::<String>()
                )
            })?;
            hosts.push(normalized);
        }
        let header_read_timeout = bounded_duration(
            "http.header_read_timeout",
            self.header_read_timeout.as_ref(),
            HttpSettings::DEFAULT_HEADER_READ_TIMEOUT,
            limits::SECOND,
            limits::HTTP_TIMEOUT_MAX,
        )?;
        let body_read_timeout = bounded_duration(
            "http.body_read_timeout",
            self.body_read_timeout.as_ref(),
            HttpSettings::DEFAULT_BODY_READ_TIMEOUT,
            limits::SECOND,
            limits::HTTP_TIMEOUT_MAX,
        )?;
        let history_interval = bounded_duration(
            "http.history_interval",
            self.history_interval.as_ref(),
            HttpSettings::DEFAULT_HISTORY_INTERVAL,
            limits::SECOND,
            std::time::Duration::from_secs(300),
        )?;
        Ok(HttpSettings {
            listen,
            admin_token_env: self.admin_token_env,
            allowed_hosts: hosts,
            allow_unauthenticated,
            header_read_timeout,
            body_read_timeout,
            history_interval,
        })
    }
}

impl RawStore {
    /// `None` (SQLite holds everything) without `url_env`; with it, the URL read from
    /// that variable now, so a missing or wrong one is a configuration error at once.
    fn validate(self) -> Result<Option<StoreSettings>, String> {
        let defaults = PgSettings::default();
        let pool_size = check_count(
            "store.pool_size",
            self.pool_size.unwrap_or(defaults.pool_size),
            1,
            limits::STORE_POOL_SIZE_MAX,
        )?;
        let statement_timeout = bounded_duration(
            "store.statement_timeout",
            self.statement_timeout.as_ref(),
            defaults.statement_timeout,
            limits::SECOND,
            limits::STORE_STATEMENT_TIMEOUT_MAX,
        )?;
        let Some(name) = self.url_env else {
            return Ok(None);
        };
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(
                "store.url_env: empty; name the environment variable that holds the postgresql url, e.g. url_env = \"MARKETSYNC_DATABASE_URL\""
                    .to_string(),
            );
        }
        let url = match std::env::var(&name) {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                return Err(format!(
                    "store.url_env: environment variable {name} is not set or empty; export it with the postgresql url (postgres://user:password@host:5432/marketsync), or remove url_env to keep everything in SQLite"
                ))
            }
        };
        let url = DatabaseUrl::new(&url)
            .map_err(|message| format!("store.url_env: {name} holds {message}"))?;
        Ok(Some(StoreSettings {
            url_env: name,
            url,
            pg: PgSettings {
                pool_size,
                statement_timeout,
                ..defaults
            },
        }))
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

impl RawCluster {
    /// `None` unless `enabled = true`; the other keys are checked either way.
    fn validate(self, redis: bool) -> Result<Option<crate::cluster::ClusterSettings>, String> {
        use crate::cluster::{
            DEFAULT_HEARTBEAT, DEFAULT_MEMBER_TTL, MAX_HEARTBEAT, MAX_MEMBER_TTL, MIN_HEARTBEAT,
        };
        let member_id = match self.member_id {
            Some(id) => {
                crate::cluster::check_member_id(&id).map_err(|why| {
                    format!("cluster.member_id: {id:?} {why}; use a name like \"web1\"")
                })?;
                id
            }
            None => crate::cluster::default_member_id(),
        };
        let heartbeat = bounded_duration(
            "cluster.heartbeat",
            self.heartbeat.as_ref(),
            DEFAULT_HEARTBEAT,
            MIN_HEARTBEAT,
            MAX_HEARTBEAT,
        )?;
        let member_ttl = bounded_duration(
            "cluster.member_ttl",
            self.member_ttl.as_ref(),
            DEFAULT_MEMBER_TTL,
            limits::SECOND,
            MAX_MEMBER_TTL,
        )?;
        if member_ttl < heartbeat.saturating_mul(2) {
            return Err(format!(
                "cluster.member_ttl ({}) must be at least twice cluster.heartbeat ({}): one late heartbeat must not declare a live member dead; raise member_ttl or lower heartbeat",
                short_duration(member_ttl),
                short_duration(heartbeat)
            ));
        }
        if !self.enabled.unwrap_or(false) {
            return Ok(None);
        }
        if !redis {
            return Err("cluster.enabled: the members register in Redis and share its leases, so a cluster needs a [redis] section; add [redis] url = \"redis://...\" (the same for every daemon) or set enabled = false".to_string());
        }
        Ok(Some(crate::cluster::ClusterSettings {
            member_id,
            heartbeat,
            member_ttl,
        }))
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
        let hygiene_interval = bounded_duration(
            "locks.hygiene_interval",
            self.hygiene_interval.as_ref(),
            Duration::from_secs(60),
            limits::SECOND,
            limits::HYGIENE_INTERVAL_MAX,
        )?;
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
        let processing_latency = bounded_duration(
            "simulator.processing_latency",
            self.processing_latency.as_ref(),
            Duration::from_secs(2),
            Duration::ZERO,
            limits::SIMULATOR_LATENCY_MAX,
        )?;
        let profile = match self.profile.as_deref() {
            None | Some("fast") => SimulatorProfile::Fast,
            Some("realistic") => SimulatorProfile::Realistic,
            Some(other) => {
                return Err(format!(
                    "simulator.profile: {other:?} is not a simulator profile; use fast or realistic"
                ))
            }
        };
        let time_scale = self.time_scale.unwrap_or(1.0);
        if !(1.0..=limits::SIMULATOR_TIME_SCALE_MAX).contains(&time_scale) {
            return Err(format!(
                "simulator.time_scale: {time_scale} is out of range; use 1 to {} (60 = one simulated minute per second)",
                limits::SIMULATOR_TIME_SCALE_MAX
            ));
        }
        let asins_per_marketplace = check_count(
            "simulator.asins_per_marketplace",
            self.asins_per_marketplace.unwrap_or(25),
            1,
            limits::ASINS_MAX,
        )?;
        let ebay_orders_per_day = self.ebay_orders_per_day.unwrap_or(50);
        if !(1..=100_000).contains(&ebay_orders_per_day) {
            return Err(format!(
                "simulator.ebay_orders_per_day: {ebay_orders_per_day} is out of range; use 1 to 100000"
            ));
        }
        let ebay_inventory_listings = check_count(
            "simulator.ebay_inventory_listings",
            self.ebay_inventory_listings.unwrap_or(500),
            0,
            10_000_000,
        )?;
        Ok(SimulatorSettings {
            listen,
            seed: self.seed.unwrap_or(42),
            processing_latency,
            profile,
            time_scale,
            asins_per_marketplace,
            ebay_orders_per_day,
            ebay_inventory_listings,
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
    if text.len() > 64 {
        return Err(format!(
            "{key}: invalid duration ({} characters); use a form like 72h, 15m or 30s",
            text.len()
        ));
    }
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("{key}: invalid duration {text:?}; use a form like 72h, 15m or 30s"))
}

/// Parses a duration (or takes its default) and checks it lies in `min..=max`; the
/// error names the key, the value, the bound and the fix, e.g. `lookback:
/// 100000000000h is above the maximum of 90d; use a lookback of at most 90d`.
pub(super) fn bounded_duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let parsed = duration(key, value, default)?;
    check_duration(key, parsed, min, max)
}

/// Checks a duration lies in `min..=max` (see [`bounded_duration`]).
pub(super) fn check_duration(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let name = key.rsplit('.').next().unwrap_or(key);
    if value > max {
        return Err(format!(
            "{key}: {} is above the maximum of {}; use a {name} of at most {} (allowed: {} to {})",
            short_duration(value),
            short_duration(max),
            short_duration(max),
            short_duration(min),
            short_duration(max)
        ));
    }
    if value < min {
        return Err(format!(
            "{key}: {} is below the minimum of {}; use a {name} of at least {} (allowed: {} to {})",
            short_duration(value),
            short_duration(min),
            short_duration(min),
            short_duration(min),
            short_duration(max)
        ));
    }
    Ok(value)
}

/// Checks a count lies in `min..=max`, naming the key and the allowed range.
pub(super) fn check_count<T>(key: &str, value: T, min: T, max: T) -> Result<T, String>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let name = key.rsplit('.').next().unwrap_or(key);
    if value > max {
        return Err(format!(
            "{key}: {value} is above the maximum of {max}; use a {name} of at most {max} (allowed: {min} to {max})"
        ));
    }
    if value < min {
        return Err(format!(
            "{key}: {value} is below the minimum of {min}; use a {name} of at least {min} (allowed: {min} to {max})"
        ));
    }
    Ok(value)
}

/// A duration in the largest unit that divides it: `90d`, `36h`, `15m`, `30s`, `250ms`;
/// anything else in humantime's form.
pub(super) fn short_duration(value: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    if value.subsec_nanos() == 0 {
        let seconds = value.as_secs();
        if seconds == 0 {
            return "0s".to_string();
        }
        for (unit, suffix) in UNITS {
            if seconds.is_multiple_of(unit) {
                return format!("{}{suffix}", seconds / unit);
            }
        }
    }
    if value.subsec_nanos().is_multiple_of(1_000_000) && value.as_secs() < 60 {
        return format!("{}ms", value.as_millis());
    }
    humantime::format_duration(value).to_string()
}

pub(super) fn whole_hours(key: &str, value: Duration) -> Result<Duration, String> {
    if value.as_secs() == 0 || !value.as_secs().is_multiple_of(3600) || value.subsec_nanos() != 0 {
        return Err(format!(
            "{key}: {} is not a whole number of hours; use a form like 6h",
            humantime::format_duration(value)
        ));
    }
    Ok(value)
}

/// `count` hours (saturating: only ever called with small constants).
pub(super) const fn hours(count: u64) -> Duration {
    Duration::from_secs(count.saturating_mul(3600))
}

/// `count` days.
pub(super) const fn days(count: u64) -> Duration {
    hours(count.saturating_mul(24))
}

/// The documented bounds of every duration and count in the file (config/example.toml
/// names them next to each key).
pub(super) mod limits {
    use super::{days, hours};
    use std::time::Duration;

    pub const SECOND: Duration = Duration::from_secs(1);
    pub const MILLISECOND: Duration = Duration::from_millis(1);
    /// Windowed streams: the rolling window kept seeded (and what fill-day may reach).
    pub const LOOKBACK_MAX: Duration = days(90);
    /// Cursor streams: how far back the first sync may start.
    pub const START_MAX: Duration = days(730);
    /// Every run interval, safety lag, retry delay.
    pub const INTERVAL_MAX: Duration = days(1);
    pub const QUOTA_COOLDOWN_MAX: Duration = hours(24);
    pub const POLL_MAX: Duration = hours(1);
    pub const POLL_TIMEOUT_MAX: Duration = days(1);
    pub const JOB_LEASE_MAX: Duration = days(1);
    pub const HYGIENE_INTERVAL_MAX: Duration = days(1);
    pub const SIMULATOR_LATENCY_MAX: Duration = hours(1);
    /// `[simulator] time_scale`: one simulated hour per real second at most (the
    /// simulator's own `TIME_SCALE_MAX`).
    pub const SIMULATOR_TIME_SCALE_MAX: f64 = 3600.0;
    /// Supervisor durations (backoffs, windows, probe and stuck times, pauses).
    pub const SUPERVISOR_DURATION_MAX: Duration = days(7);
    pub const SUPERVISOR_HEARTBEAT_MAX: Duration = hours(1);
    pub const MAX_CONCURRENT_RUNS_MAX: usize = 4096;
    pub const MAX_ATTEMPTS_MAX: u32 = 1000;
    pub const DOCUMENT_BYTES_MIN: u64 = 1024;
    /// 8 GiB: a month of hourly sales of a very large vendor is far below this.
    pub const DOCUMENT_BYTES_MAX: u64 = 8 << 30;
    /// Windows one report stream keeps in flight at most.
    pub const MAX_IN_FLIGHT: u32 = 1_000;
    pub const RESPONSE_BYTES_MIN: u64 = 1024;
    pub const RESPONSE_BYTES_MAX: u64 = 1 << 30;
    pub const ASINS_MAX: u32 = 100_000;
    pub const BUCKET_RATE_MAX: f64 = 100_000.0;
    pub const BUCKET_BURST_MAX: f64 = 1_000_000.0;
    pub const ACCOUNTS_MAX: usize = 100_000;
    /// The same 30 s as `app::DEFAULT_GRACE`.
    pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(30);
    pub const SHUTDOWN_GRACE_MAX: Duration = Duration::from_secs(300);
    pub const HTTP_TIMEOUT_MAX: Duration = Duration::from_secs(300);
    pub const ALLOWED_HOSTS_MAX: usize = 64;
    /// `[store] pool_size`: PostgreSQL connections one daemon holds at most.
    pub const STORE_POOL_SIZE_MAX: u32 = 256;
    pub const STORE_STATEMENT_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
}
