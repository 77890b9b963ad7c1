//! Cooldowns: "no provider calls in this scope until then", and where they are kept.
//!
//! A cooldown is a [`crate::store::Cooldown`]: scope, reason (`quota`, `lock_busy`,
//! `auth`; see [`CooldownReason`]), start and end as unix seconds, and a detail. Scopes
//! used by the TokenManager for a [`super::BucketKey`] (see
//! [`super::BucketKey::cooldown_scopes`]):
//! - `{provider}`: the whole provider, every account;
//! - `{provider}:{scope}`: one account (the same string as
//!   [`crate::store::account_scope`], so cooldowns written by the sync runner count);
//! - `{provider}:{scope}:{operation}`: one bucket;
//! - `{provider}:{scope}:{api}`: every operation of one API ([`super::stop_group`]). A
//!   hard stop lands here for a provider whose budgets are per API (eBay,
//!   [`super::stops_per_api`]), on the account scope otherwise.
//!
//! Persistence is behind [`CooldownStore`] (object safe, boxed futures):
//! - `Arc<dyn LedgerStore>`: the SQLite `cooldowns` table, each call on the blocking pool;
//!   a cooldown survives a restart of the daemon;
//! - [`super::redis::RedisCooldowns`]: key `{prefix}cooldown:{scope}` holding the JSON of
//!   the cooldown with a `PX` expiry at its end, shared by every daemon on that Redis.
//!
//! Both keep the later end when a cooldown is started again for a running one. Emits
//! nothing itself; the TokenManager logs what it does with them.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::QuotaError;
use crate::store::{Cooldown, LedgerError, LedgerStore};

/// Why a scope cools down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CooldownReason {
    /// The provider said 429 / QuotaExceeded (seed 001's hard stop).
    Quota,
    /// The lease for the scope is held elsewhere.
    LockBusy,
    /// Credentials were refused.
    Auth,
}

impl CooldownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CooldownReason::Quota => "quota",
            CooldownReason::LockBusy => "lock_busy",
            CooldownReason::Auth => "auth",
        }
    }

    pub fn parse(text: &str) -> Option<CooldownReason> {
        [
            CooldownReason::Quota,
            CooldownReason::LockBusy,
            CooldownReason::Auth,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }
}

impl fmt::Display for CooldownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where cooldowns persist. Times are unix seconds, as in [`Cooldown`].
pub trait CooldownStore: Send + Sync + 'static {
    /// Stores `cooldown`; a running cooldown of the same scope keeps the later end.
    fn set<'a>(&'a self, cooldown: &'a Cooldown) -> BoxFuture<'a, Result<(), QuotaError>>;
    /// The cooldown of `scope` if it still runs at `now`.
    fn active<'a>(
        &'a self,
        scope: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Cooldown>, QuotaError>>;
    /// Ends the cooldown of `scope`; true when there was one.
    fn clear<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<bool, QuotaError>>;
    /// Every cooldown still running at `now`, when the store can list them in one read:
    /// the TokenManager then asks once per `cooldown_recheck` instead of once per scope
    /// (200 accounts starting at once asked ~600 scopes one after another, and every
    /// grant waited behind them). `None`: this store cannot list (the default).
    fn all_active(&self, now: i64) -> BoxFuture<'_, Result<Option<Vec<Cooldown>>, QuotaError>> {
        let _ = now;
        Box::pin(async { Ok(None) })
    }
}

fn ledger_error(err: LedgerError) -> QuotaError {
    QuotaError::Unavailable(format!("cooldown store: {err}"))
}

async fn on_blocking_pool<T, F>(ledger: &Arc<dyn LedgerStore>, work: F) -> Result<T, QuotaError>
where
    T: Send + 'static,
    F: FnOnce(&dyn LedgerStore) -> Result<T, LedgerError> + Send + 'static,
{
    let ledger = Arc::clone(ledger);
    crate::store::blocking(move || work(ledger.as_ref()))
        .await
        .map_err(|err| QuotaError::Unavailable(format!("cooldown store task: {err}")))?
        .map_err(ledger_error)
}

impl CooldownStore for Arc<dyn LedgerStore> {
    fn set<'a>(&'a self, cooldown: &'a Cooldown) -> BoxFuture<'a, Result<(), QuotaError>> {
        let cooldown = cooldown.clone();
        Box::pin(on_blocking_pool(self, move |ledger| {
            ledger.set_cooldown(&cooldown)
        }))
    }

    fn active<'a>(
        &'a self,
        scope: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Cooldown>, QuotaError>> {
        let scope = scope.to_string();
        Box::pin(on_blocking_pool(self, move |ledger| {
            ledger.active_cooldown(&scope, now)
        }))
    }

    fn clear<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<bool, QuotaError>> {
        let scope = scope.to_string();
        Box::pin(on_blocking_pool(self, move |ledger| {
            ledger.clear_cooldown(&scope)
        }))
    }

    fn all_active(&self, now: i64) -> BoxFuture<'_, Result<Option<Vec<Cooldown>>, QuotaError>> {
        Box::pin(async move {
            on_blocking_pool(self, move |ledger| ledger.cooldowns(now))
                .await
                .map(Some)
        })
    }
}
