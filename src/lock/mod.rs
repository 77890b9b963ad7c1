//! Leases ("worker locks") with fencing tokens and TTL hygiene.
//!
//! One lease per scope, where a scope is `"{account}/{stream}"`. A lease names its
//! owner as `task:pid@host#instance` (for example `auto-sync:1234@web1#3f9a2c-5e1f03a2`,
//! see [`local_owner`]: the instance id is random per process start, followed by a tag of
//! the boot and PID namespace, so two containers that are both PID 1 on one hostname are
//! two owners; owners of the old form `task:pid@host` still parse), carries a random
//! 128-bit token (hex) that proves ownership, and a fence number that only ever goes up
//! per scope: every successful acquisition gets `previous max + 1`, and with
//! [`LockService::acquire_above`] at least the store's newest fence + 1. Ledger writes
//! carry the fence ([`WriteFence`]) so a store can refuse a write from a holder that lost
//! its lease without noticing (a paused process, a partitioned host), and refuses a write
//! that carries none.
//!
//! Semantics shared by both backends (the contract suite in `tests.rs` runs against both):
//! - [`LockService::acquire`] fails with [`LockError::Busy`] (naming the holder) while a
//!   live lease exists. An expired lease is taken over, logging the replaced owner
//!   (`warn!(scope, replaced_owner, "took over an expired lease")`, seed 000's "steal").
//! - [`LockService::renew`] is compare-and-extend by token. It fails with
//!   [`LockError::Lost`] when the token no longer matches, the lease is gone, or the lease
//!   already expired (someone may have taken it over; a holder must not carry on).
//! - [`LockService::release`] is compare-and-delete by token.
//! - [`LockService::release_scope`] is the operator's tool: it releases a stale lease, or
//!   a live one only with `force`.
//! - [`LockService::repair`] is the hygiene pass of seed 004: a lock persisted in a Redis
//!   dump with a ~10-day TTL (or none) survives restarts exactly as written, so the daemon
//!   scans lock keys at startup and periodically and brings every TTL back under the cap
//!   ([`MAX_TTL`]), deleting the lease outright when its owner is provably dead on this
//!   host ([`owner_is_dead_local`]).
//!
//! Backends: [`redis::RedisLocks`] (several daemons; expiry decided by Redis `TIME`
//! inside Lua scripts) and [`sqlite::SqliteLocks`] (one host; local clock). Key and table
//! layouts are documented in their modules.  Tokens are secrets of their holder and are never logged.
//!
//! Layer 5 of docs/architecture.md. May use: `domain`, `store`. May not touch: ledger rows
//! (the store checks fences on write).

pub mod hygiene;
pub mod keeper;
pub mod redis;
pub mod settings;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use crate::domain::lease::{busy, check_owner, check_scope, format_ms, new_token, ttl_ms};
pub use crate::domain::lease::{
    instance_id, local_hostname, local_owner, namespace_tag, owner_is_dead_local, parse_owner,
    OwnerId, WriteFence,
};
pub use crate::domain::lease::{
    Lease, LockError, LockInfo, Repair, RepairAction, DEFAULT_PREFIX, MAX_TTL,
};
pub use crate::store::leases as sqlite;
pub use hygiene::lock_hygiene;

/// Enum dispatch over the two backends (no dyn/async-trait needed).
#[derive(Clone)]
pub enum LockService {
    Redis(redis::RedisLocks),
    Sqlite(sqlite::SqliteLocks),
}

impl LockService {
    /// Connects to Redis (see [`redis::RedisLocks::connect`]).
    pub async fn redis(url: &str, prefix: &str) -> Result<LockService, LockError> {
        Ok(LockService::Redis(
            redis::RedisLocks::connect(url, prefix).await?,
        ))
    }

    /// Opens the SQLite lease tables in the database at `path` on the blocking pool.
    pub async fn sqlite(path: &Path) -> Result<LockService, LockError> {
        let path = path.to_path_buf();
        let locks = tokio::task::spawn_blocking(move || sqlite::SqliteLocks::open(&path))
            .await
            .map_err(|err| LockError::Unavailable(format!("sqlite open task failed: {err}")))??;
        Ok(LockService::Sqlite(locks))
    }

    /// `"redis"` or `"sqlite"`, for status output and logs.
    pub fn backend(&self) -> &'static str {
        match self {
            LockService::Redis(_) => "redis",
            LockService::Sqlite(_) => "sqlite",
        }
    }

    /// Takes the lease on `scope` for `ttl`. [`LockError::Busy`] while a live lease
    /// exists; an expired one is taken over (and logged). The new fence is the previous
    /// maximum for the scope plus one.
    pub async fn acquire(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, LockError> {
        match self {
            LockService::Redis(locks) => locks.acquire(scope, owner, ttl).await,
            LockService::Sqlite(locks) => locks.acquire(scope, owner, ttl).await,
        }
    }

    /// [`LockService::acquire`], also naming the owner whose expired lease was taken
    /// over (`None` when the scope was free), so the caller can count takeovers.
    pub async fn acquire_reporting(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(Lease, Option<String>), LockError> {
        match self {
            LockService::Redis(locks) => locks.acquire_reporting(scope, owner, ttl).await,
            LockService::Sqlite(locks) => locks.acquire_reporting(scope, owner, ttl).await,
        }
    }

    /// [`LockService::acquire_reporting`] with a fence above `floor`, the store's newest
    /// fence for the scope, set in the same atomic step (Redis: inside the acquire script;
    /// SQLite: inside the transaction). A lease backend that lost its counter (Redis
    /// restarted empty) therefore never hands out a fence the store refuses as stale.
    pub async fn acquire_above(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<(Lease, Option<String>), LockError> {
        match self {
            LockService::Redis(locks) => locks.acquire_above(scope, owner, ttl, floor).await,
            LockService::Sqlite(locks) => locks.acquire_above(scope, owner, ttl, floor).await,
        }
    }

    /// Extends `lease` to `now + ttl` if it is still ours (same token, not expired);
    /// otherwise [`LockError::Lost`]. Returns the lease with its new expiry.
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LockError> {
        match self {
            LockService::Redis(locks) => locks.renew(lease, ttl).await,
            LockService::Sqlite(locks) => locks.renew(lease, ttl).await,
        }
    }

    /// Renews every lease of `due` (the keeper's renewal pass): one pipelined round trip
    /// to Redis, one transaction per lease in SQLite. One answer per lease, in order.
    pub async fn renew_many(&self, due: &[(Lease, Duration)]) -> Vec<Result<Lease, LockError>> {
        match self {
            LockService::Redis(locks) => locks.renew_many(due).await,
            LockService::Sqlite(locks) => {
                let mut answers = Vec::with_capacity(due.len());
                for (lease, ttl) in due {
                    answers.push(locks.renew(lease, *ttl).await);
                }
                answers
            }
        }
    }

    /// Deletes the lease if it is still ours. `false` when it was not (already expired,
    /// released, or taken over).
    pub async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        match self {
            LockService::Redis(locks) => locks.release(lease).await,
            LockService::Sqlite(locks) => locks.release(lease).await,
        }
    }

    /// Every lease currently stored, sorted by scope.
    pub async fn list(&self) -> Result<Vec<LockInfo>, LockError> {
        match self {
            LockService::Redis(locks) => locks.list().await,
            LockService::Sqlite(locks) => locks.list().await,
        }
    }

    /// Operator release by scope: releases a stale lease; a live one only with `force`
    /// (otherwise [`LockError::Busy`]). Returns what was released, `None` if nothing was
    /// stored for the scope.
    pub async fn release_scope(
        &self,
        scope: &str,
        force: bool,
    ) -> Result<Option<LockInfo>, LockError> {
        match self {
            LockService::Redis(locks) => locks.release_scope(scope, force).await,
            LockService::Sqlite(locks) => locks.release_scope(scope, force).await,
        }
    }

    /// The hygiene pass: leases whose expiry is more than `cap` away (or missing) get
    /// their expiry set to `cap`, or are deleted when their owner is provably dead on
    /// this host. Each repair is logged as `warn!(.., "repaired lock key")`.
    pub async fn repair(&self, cap: Duration) -> Result<Vec<Repair>, LockError> {
        match self {
            LockService::Redis(locks) => locks.repair(cap).await,
            LockService::Sqlite(locks) => locks.repair(cap).await,
        }
    }
}

impl From<redis::RedisLocks> for LockService {
    fn from(locks: redis::RedisLocks) -> Self {
        LockService::Redis(locks)
    }
}

impl From<sqlite::SqliteLocks> for LockService {
    fn from(locks: sqlite::SqliteLocks) -> Self {
        LockService::Sqlite(locks)
    }
}
