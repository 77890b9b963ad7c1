//! Wiring settings into the parts the daemon runs: each account's sync shape and
//! client, the lease backend, the TokenManager's settings.

use crate::domain::{Provider, Shape};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::config::{AccountConfig, Config, Endpoints};
use crate::quota::{Pacer, QuotaBackend, QuotaConfig};
use crate::store::{LedgerStore, SqliteLedger};

use crate::domain::now_ts;
use crate::lock::LockService;
use crate::provider::amazon::{LwaCredentials, SpApiClient, SpApiEndpoints};
use crate::provider::read_env;
use crate::shapes::StreamWork;

/// The sync shape and client of an account's streams, by provider. Every shape's client
/// carries `pacer`, so its calls ask the TokenManager first. `hours`: the hour ledger's
/// engine, which holds the eBay cursor streams too.
pub(super) fn build_work(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
    own_addresses: &[SocketAddr],
    pacer: Pacer,
    ledger: &Arc<SqliteLedger>,
    hours: &Arc<dyn LedgerStore>,
) -> anyhow::Result<StreamWork> {
    match account.provider.shape() {
        Shape::Windowed => Ok(StreamWork::reports(Arc::new(
            build_client(account, http, simulator)?
                .with_pacer(pacer)
                .with_own_addresses(own_addresses.to_vec()),
        ))),
        Shape::Cursor => {
            let cursor = crate::shapes::cursor::stream_work(
                account,
                http,
                simulator,
                pacer.clone(),
                Arc::clone(ledger),
                Arc::clone(hours),
            )?;
            // eBay's `market_prices` stream drains the `ebay` job queue beside the cursors.
            crate::shapes::jobs::with_market_prices(
                account,
                http,
                simulator,
                pacer,
                Arc::clone(hours),
                cursor,
            )
        }
        Shape::Jobs => {
            crate::shapes::jobs::stream_work(account, http, simulator, pacer, Arc::clone(hours))
        }
    }
}

fn build_client(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator_addr: Option<SocketAddr>,
) -> anyhow::Result<SpApiClient> {
    let endpoints = match (&account.endpoints, simulator_addr) {
        (Endpoints::EmbeddedSimulator, Some(addr)) => SpApiEndpoints {
            api_base: format!("http://{addr}"),
            lwa_token_url: format!("http://{addr}/auth/o2/token"),
        },
        (Endpoints::EmbeddedSimulator, None) => {
            anyhow::bail!(
                "account {}: uses the embedded simulator, which is not enabled",
                account.id
            )
        }
        (
            Endpoints::Explicit {
                api_base,
                token_url,
            },
            _,
        ) => SpApiEndpoints {
            api_base: api_base.clone(),
            lwa_token_url: token_url.clone(),
        },
    };
    let credentials = match &account.credentials {
        Some(names) => LwaCredentials {
            client_id: read_env(&account.id, names.client_id_env.as_deref())?,
            client_secret: read_env(&account.id, names.client_secret_env.as_deref())?,
            refresh_token: read_env(&account.id, names.refresh_token_env.as_deref())?,
        },
        // The simulator accepts any credentials; the refresh token names the seller.
        None => LwaCredentials {
            client_id: "simulator-client".to_string(),
            client_secret: "simulator-secret".to_string(),
            // Accounts of one selling partner share its buckets in the simulator too.
            refresh_token: format!("simulator-refresh-{}", account.quota_scope()),
        },
    };
    Ok(SpApiClient::new(http.clone(), endpoints, credentials))
}

/// The lease backend: Redis when configured, else the SQLite file of the ledger. While
/// Redis is unreachable at startup, every stream is marked `lock_unavailable` in `ledger`
/// (when given) so `status` says why nothing moves.
pub async fn open_locks(
    config: &Config,
    ledger: Option<&Arc<dyn LedgerStore>>,
) -> anyhow::Result<LockService> {
    match &config.redis {
        Some(redis) => {
            let url = redis
                .url
                .resolve()
                .map_err(|err| anyhow::anyhow!("{}: {err}", config.source_name))?;
            // A daemon must start even while Redis is down: work that needs a lease waits.
            let mut delay = Duration::from_millis(500);
            loop {
                match LockService::redis(&url, &redis.prefix).await {
                    Ok(locks) => return Ok(locks),
                    Err(crate::lock::LockError::Invalid(message)) => {
                        anyhow::bail!("redis.url: {message}")
                    }
                    Err(err) => {
                        warn!(error = %err, retry_in = %humantime::format_duration(delay), "redis unreachable at startup; leases wait for it");
                        if let Some(ledger) = ledger {
                            mark_locks_unavailable(config, ledger, &err.to_string(), delay).await;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        None => Ok(LockService::sqlite(&config.database_path()).await?),
    }
}

/// Records `lock_unavailable` for every configured stream until `retry_in` from now.
async fn mark_locks_unavailable(
    config: &Config,
    ledger: &Arc<dyn LedgerStore>,
    detail: &str,
    retry_in: Duration,
) {
    let now = now_ts();
    let cooldowns: Vec<crate::store::Cooldown> = config
        .accounts
        .iter()
        .flat_map(|account| {
            account
                .streams
                .iter()
                .map(move |stream| crate::store::Cooldown {
                    scope: crate::shapes::lock_scope(&account.id, &stream.name),
                    reason: "lock_unavailable".to_string(),
                    started_at: now,
                    until_at: now + retry_in.as_secs().max(1) as i64 + 30,
                    detail: Some(detail.to_string()),
                })
        })
        .collect();
    let ledger = Arc::clone(ledger);
    let written = tokio::task::spawn_blocking(move || {
        for cooldown in &cooldowns {
            ledger.clear_cooldown(&cooldown.scope)?;
            ledger.set_cooldown(cooldown)?;
        }
        Ok::<(), crate::store::LedgerError>(())
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        warn!("cannot record lock_unavailable in the ledger");
    }
}

/// The TokenManager's settings from the configuration: Redis (the leases' url and
/// prefix) when `[redis]` is configured, else in process with cooldowns in the ledger;
/// `[quota]` reserve share, rate margin and bucket overrides; each provider's hard stop
/// (429s repeating despite the correction, or a spent budget) is the shortest
/// `quota_cooldown` of its streams (30m by default), not a fixed 5 minutes.
pub fn quota_config(config: &Config, ledger: Arc<dyn LedgerStore>) -> anyhow::Result<QuotaConfig> {
    let mut quota = match &config.redis {
        Some(redis) => {
            let url = redis
                .url
                .resolve()
                .map_err(|err| anyhow::anyhow!("{}: {err}", config.source_name))?;
            QuotaConfig::new(QuotaBackend::Redis {
                url,
                prefix: redis.prefix.clone(),
            })
        }
        None => QuotaConfig::new(QuotaBackend::InProcess).with_ledger(ledger),
    }
    .with_rate_margin(config.quota.rate_margin);
    quota.reserve_share = config.quota.reserve_share;
    for (operation, spec) in &config.quota.amazon {
        quota = quota.with_spec(Provider::Amazon.as_str(), operation, *spec);
    }
    for (operation, spec) in &config.quota.amazon_application {
        quota = quota.with_spec("amazon_application", operation, *spec);
    }
    for (provider, buckets) in &config.quota.providers {
        for (operation, spec) in buckets {
            quota = quota.with_spec(provider, operation, *spec);
        }
    }
    // Every provider's hard stop (after 429s that repeat despite the correction, or a
    // spent per-hour/per-day budget) is its streams' `quota_cooldown`, the shortest when
    // they differ (a stream's own longer one is recorded by its run).
    let mut shortest: std::collections::BTreeMap<&str, Duration> = Default::default();
    for account in &config.accounts {
        for stream in &account.streams {
            shortest
                .entry(account.provider.as_str())
                .and_modify(|known| *known = (*known).min(stream.quota_cooldown))
                .or_insert(stream.quota_cooldown);
        }
    }
    for (provider, cooldown) in shortest {
        quota
            .throttle_cooldowns
            .insert(provider.to_string(), cooldown);
    }
    Ok(quota)
}
