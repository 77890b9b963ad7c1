//! `marketsync cooldowns`: list the running cooldowns and end one early.
//!
//! Cooldowns live in the SQLite `cooldowns` table (the ledger; what `status` reads) and,
//! when `[redis]` is configured, under `{prefix}cooldown:{scope}` in Redis (what the
//! daemons' TokenManagers share). `cooldowns` lists both, marking where each row lives;
//! `cooldowns clear SCOPE` deletes the scope from both.
//!
//! Scopes: `amazon` (the provider), `amazon:{account}` (an account, as
//! [`crate::store::account_scope`] writes it), `amazon:{seller}` (a selling partner's
//! buckets, when accounts set `selling_partner_id`), `lock:{account}/{stream}` (lease
//! conditions recorded for `status`). Clearing an account or selling-partner scope clears
//! every account scope of that seller and the seller's scope too: they are one quota,
//! and a copy left behind would keep the others waiting.
//!
//! A running daemon notices a clear of its SQLite file within about a second (see
//! [`crate::app`]); a daemon on another host sharing the Redis within a minute.
//! Emits nothing (prints its result).

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::Deployment;
use crate::domain::{format_ts, now_ts};
use crate::quota::redis::RedisCooldowns;
use crate::quota::CooldownStore;
pub use crate::store::sqlite::ledger_cooldowns;
use crate::store::{account_scope, Cooldown, LedgerStore, SqliteLedger};

/// One running cooldown, as `cooldowns --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CooldownRow {
    pub scope: String,
    /// `quota`, `lock_busy`, `lock_unavailable`, `auth`.
    pub reason: String,
    pub started_utc: String,
    pub until_utc: String,
    pub remaining_secs: i64,
    pub detail: Option<String>,
    /// `sqlite` or `redis`.
    pub store: &'static str,
}

impl CooldownRow {
    pub(crate) fn new(cooldown: Cooldown, store: &'static str, now: i64) -> CooldownRow {
        CooldownRow {
            remaining_secs: (cooldown.until_at - now).max(0),
            started_utc: format_ts(cooldown.started_at),
            until_utc: format_ts(cooldown.until_at),
            scope: cooldown.scope,
            reason: cooldown.reason,
            detail: cooldown.detail,
            store,
        }
    }
}

/// One bucket's last burst correction, as `cooldowns --json` prints it under
/// `corrections`: a 429 read as a correction of the bucket model (issue 12), no stop.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CorrectionRow {
    /// `provider/operation/scope`, as `/api/budgets` names the bucket.
    pub bucket: String,
    pub configured_burst: f64,
    /// The burst the last correction left (the daemon learns from there).
    pub burst: f64,
    pub corrections: u64,
    pub first_utc: String,
    pub last_utc: String,
    pub detail: Option<String>,
}

/// The recorded burst corrections, the latest first.
pub async fn corrections(config: &Deployment) -> anyhow::Result<Vec<CorrectionRow>> {
    let ledger = open_ledger(config).await?;
    Ok(ledger
        .corrections()?
        .into_iter()
        .map(|correction| CorrectionRow {
            bucket: correction.bucket,
            configured_burst: correction.configured_burst,
            burst: correction.burst,
            corrections: correction.corrections,
            first_utc: format_ts(correction.first_at),
            last_utc: format_ts(correction.last_at),
            detail: correction.detail,
        })
        .collect())
}

/// The Redis cooldown store of `config`, when `[redis]` is configured.
pub fn redis_cooldowns(config: &Deployment) -> anyhow::Result<Option<RedisCooldowns>> {
    let Some(redis) = &config.redis else {
        return Ok(None);
    };
    let url = redis
        .url
        .resolve()
        .map_err(|err| anyhow::anyhow!("{}: {err}", config.source_name))?;
    Ok(Some(RedisCooldowns::new(&url, &redis.prefix)?))
}

/// Every running cooldown (SQLite, then Redis). A Redis that cannot be reached is not an
/// error: its message comes back as the second value.
pub async fn list(config: &Deployment) -> anyhow::Result<(Vec<CooldownRow>, Option<String>)> {
    let now = now_ts();
    let ledger = open_ledger(config).await?;
    let store = ledger_store_name(config);
    let mut rows: Vec<CooldownRow> = ledger
        .cooldowns(now)?
        .into_iter()
        .map(|cooldown| CooldownRow::new(cooldown, store, now))
        .collect();
    let mut warning = None;
    if let Some(redis) = redis_cooldowns(config)? {
        match redis.list().await {
            Ok(found) => rows.extend(
                found
                    .into_iter()
                    .filter(|cooldown| cooldown.until_at > now)
                    .map(|cooldown| CooldownRow::new(cooldown, "redis", now)),
            ),
            Err(err) => warning = Some(err.to_string()),
        }
    }
    rows.sort_by(|a, b| (&a.scope, a.store).cmp(&(&b.scope, b.store)));
    Ok((rows, warning))
}

/// The scopes `cooldowns clear SCOPE` ends: SCOPE, and for an account or selling
/// partner scope of a configured account, the seller's scope and every account scope
/// of that seller; for an account's own scope, its API scopes too
/// ([`account_api_scopes`]).
pub fn related_scopes(config: &Deployment, scope: &str) -> Vec<String> {
    let mut scopes = vec![scope.to_string()];
    let mut add = |scope: String| {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    };
    let sellers: Vec<(&str, &str)> = config
        .accounts
        .iter()
        .filter(|account| {
            scope == account_scope(account.provider.as_str(), &account.id)
                || scope == account_scope(account.provider.as_str(), account.quota_scope())
        })
        .map(|account| (account.provider.as_str(), account.quota_scope()))
        .collect();
    for (provider, seller) in sellers {
        add(account_scope(provider, seller));
        for account in &config.accounts {
            if account.provider.as_str() == provider && account.quota_scope() == seller {
                add(account_scope(provider, &account.id));
            }
        }
    }
    // An account's scope also ends the cooldowns of its single buckets (eBay's per-API
    // hard stops, `ebay:ACCOUNT:OPERATION`): clearing the account resumes all of it.
    for account in &config.accounts {
        if scope == account_scope(account.provider.as_str(), &account.id) {
            for api in account_api_scopes(account) {
                add(api);
            }
        }
    }
    scopes
}

/// The API scopes of every stream of `account` (see
/// [`crate::provider::stream_stop_scopes`]), each once: the cooldowns narrower than the
/// account that clearing the account ends.
pub fn account_api_scopes(account: &crate::shapes::spec::AccountConfig) -> Vec<String> {
    let own = account_scope(account.provider.as_str(), &account.id);
    let mut scopes: Vec<String> = Vec::new();
    for stream in &account.streams {
        for api in crate::provider::stream_stop_scopes(account.provider, &own, &stream.name) {
            if !scopes.contains(&api) {
                scopes.push(api);
            }
        }
    }
    scopes
}

/// Ends the cooldowns of [`related_scopes`] in SQLite and Redis; returns what was
/// cleared, as (scope, store).
pub async fn clear(
    config: &Deployment,
    scope: &str,
) -> anyhow::Result<Vec<(String, &'static str)>> {
    let scopes = related_scopes(config, scope);
    let ledger = open_ledger(config).await?;
    let store = ledger_store_name(config);
    let mut cleared = Vec::new();
    for scope in &scopes {
        if ledger.clear_cooldown(scope)? {
            cleared.push((scope.clone(), store));
        }
    }
    if let Some(redis) = redis_cooldowns(config)? {
        for scope in &scopes {
            let removed = redis.clear(scope).await.with_context(|| {
                format!(
                    "cleared {} in {store}, but redis cannot be reached; run the command again once it is up",
                    if cleared.is_empty() {
                        "nothing".to_string()
                    } else {
                        cleared
                            .iter()
                            .map(|(scope, _)| scope.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )
            })?;
            if removed {
                cleared.push((scope.clone(), "redis"));
            }
        }
    }
    Ok(cleared)
}

/// The engine holding the ledger's cooldowns: the SQLite file, or PostgreSQL with
/// `[store] url_env`.
async fn open_ledger(config: &Deployment) -> anyhow::Result<Arc<dyn LedgerStore>> {
    let path = config.database_path();
    let store = config.store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<dyn LedgerStore>> {
        let sqlite = Arc::new(SqliteLedger::open(&path)?);
        Ok(crate::store::hour_ledger(store.as_ref(), &sqlite)?)
    })
    .await
    .context("opening the ledger")?
}

/// How `cooldowns list` names the ledger's store.
fn ledger_store_name(config: &Deployment) -> &'static str {
    if config.store.is_some() {
        "postgresql"
    } else {
        "sqlite"
    }
}
