//! Redis leases: several daemons (on several hosts) share one Redis.
//!
//! Key layout (default prefix `marketsync:`):
//! - `{prefix}lock:{scope}`: the lease as JSON (a serialized [`Lease`]: scope, owner,
//!   token, fence, acquired_at_ms, expires_at_ms), readable with `redis-cli GET`. The key
//!   carries `PX ttl`, so a lease vanishes on its own when its holder stops renewing.
//! - `{prefix}fence:{scope}`: the counter of the scope's fences. It has no TTL and is
//!   never deleted, so fences only go up. If Redis loses it anyway (restarted empty, or
//!   from an old dump), `acquire` still continues above the fence in the stored lease and
//!   above the store's newest fence for the scope, which the caller passes in
//!   ([`RedisLocks::acquire_above`]): the new fence is `max(counter, lease, floor) + 1`,
//!   decided in the one acquire script.
//!
//! Every compare-and-* is a Lua script ([`::redis::Script`]), so it is atomic, and every
//! decision about expiry uses Redis `TIME` inside the script, never the local clock: the
//! daemons' clocks may disagree, Redis' is the one they share. The JSON's `expires_at_ms`
//! is computed from that same `TIME`.
//! - acquire: `GET` the key; a live lease means [`LockError::Busy`]. No key, or a lease
//!   whose `expires_at_ms` is past even though the key survived (no TTL or a too-long
//!   one: the zombie of seed 004), means a fence of `max(counter, old lease's fence, store floor) + 1` and
//!   `SET key json PX ttl`; a
//!   replaced lease is logged with its owner. A value that is not a lease counts as live
//!   (it is left for an operator or the hygiene pass).
//! - renew: if the stored token is ours and the lease has not expired, `SET` the new
//!   value `PX ttl`; otherwise [`LockError::Lost`].
//! - release: if the stored token is ours, `DEL`.
//! - repair(cap): `SCAN MATCH {prefix}lock:*` (never `KEYS`), `PTTL` each key; no expiry
//!   (`-1`) or more than `cap` left means `PEXPIRE key cap`, or `DEL` when the owner is
//!   provably dead on this host. The change is a compare-and-set on the value read, so a
//!   lease renewed or taken over in between is left alone.
//!
//! Connection problems surface as [`LockError::Unavailable`], bounded by a timeout, never
//! a panic. [`::redis::aio::ConnectionManager`] reconnects by itself once Redis is back;
//! a call that finds the previous reconnect attempt refused tries once more.
//! `redis://` and `rediss://` URLs (with password or ACL user) go through redis' own URL
//! parsing. Keys of one scope are not hash-tagged: this is for a single Redis, not a
//! cluster.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script};
use tracing::{debug, warn};

use super::{
    busy, check_owner, check_scope, new_token, ttl_ms, Lease, LockError, LockInfo, Repair,
    RepairAction,
};

/// The bound on any one call, reconnect attempts included.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// One connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One command's reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per `SCAN` round trip.
const SCAN_COUNT: usize = 200;

/// Helpers prepended to every script.
const LUA_PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function decode(raw)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'table' then return value end
  return nil
end
local function expiry(lease)
  if lease == nil then return nil end
  return tonumber(lease['expires_at_ms'])
end
local function encode(scope, owner, token, fence, acquired, expires)
  return string.format(
    '{"scope":%s,"owner":%s,"token":%s,"fence":%.0f,"acquired_at_ms":%.0f,"expires_at_ms":%.0f}',
    scope, owner, token, fence, acquired, expires)
end
"#;

/// KEYS: lock, fence. ARGV: scope, owner, token (each JSON-encoded), ttl_ms, floor (the
/// newest fence the store has seen for the scope). The new fence is
/// `max(counter, previous lease's fence, floor) + 1`, written back to the counter.
/// Returns `{1, new_value, replaced_value_or_empty}` or `{0, holder_value, ''}`.
const LUA_ACQUIRE: &str = r#"
local now = now_ms()
local ttl = tonumber(ARGV[4])
local floor = tonumber(ARGV[5]) or 0
local raw = redis.call('GET', KEYS[1])
local previous_fence = 0
if raw then
  local old = decode(raw)
  local expires = expiry(old)
  if expires == nil or expires > now then
    return {0, raw, ''}
  end
  previous_fence = tonumber(old['fence']) or 0
end
local counter = tonumber(redis.call('GET', KEYS[2])) or 0
local fence = math.max(counter, previous_fence, floor) + 1
redis.call('SET', KEYS[2], string.format('%.0f', fence))
local lease = encode(ARGV[1], ARGV[2], ARGV[3], fence, now, now + ttl)
redis.call('SET', KEYS[1], lease, 'PX', ttl)
return {1, lease, raw or ''}
"#;

/// KEYS: lock. ARGV: scope, owner, token (each JSON-encoded), token, ttl_ms.
/// Returns `{1, new_value}`, `{0, ''}` (gone), `{2, value}` (not our token) or
/// `{3, value}` (ours but expired).
const LUA_RENEW: &str = r#"
local now = now_ms()
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, ''} end
local old = decode(raw)
if old == nil or old['token'] ~= ARGV[4] then return {2, raw} end
local expires = expiry(old)
if expires == nil or expires <= now then return {3, raw} end
local ttl = tonumber(ARGV[5])
local fence = tonumber(old['fence']) or 0
local acquired = tonumber(old['acquired_at_ms']) or now
local lease = encode(ARGV[1], ARGV[2], ARGV[3], fence, acquired, now + ttl)
redis.call('SET', KEYS[1], lease, 'PX', ttl)
return {1, lease}
"#;

/// KEYS: lock. ARGV: token. Returns 1 when deleted.
const LUA_RELEASE: &str = r#"
local old = decode(redis.call('GET', KEYS[1]))
if old ~= nil and old['token'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// KEYS: lock. Returns `{value_or_empty, pttl, now}`.
const LUA_READ: &str = r#"
local now = now_ms()
local raw = redis.call('GET', KEYS[1])
if not raw then return {'', -2, now} end
return {raw, redis.call('PTTL', KEYS[1]), now}
"#;

/// KEYS: lock. ARGV: force ('1' or '0'). Returns `{status, value, pttl, now}`:
/// 0 = nothing stored, 1 = released, 2 = live and not forced.
const LUA_RELEASE_SCOPE: &str = r#"
local now = now_ms()
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, '', -2, now} end
local pttl = redis.call('PTTL', KEYS[1])
local expires = expiry(decode(raw))
if (expires == nil or expires > now) and ARGV[1] ~= '1' then
  return {2, raw, pttl, now}
end
redis.call('DEL', KEYS[1])
return {1, raw, pttl, now}
"#;

/// KEYS: lock. ARGV: expected value, cap_ms, 'del' or 'expire'. Returns 1 when applied.
const LUA_REPAIR: &str = r#"
local raw = redis.call('GET', KEYS[1])
if raw ~= ARGV[1] then return 0 end
local pttl = redis.call('PTTL', KEYS[1])
local cap = tonumber(ARGV[2])
if pttl ~= -1 and pttl <= cap then return 0 end
if ARGV[3] == 'del' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], cap)
end
return 1
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}{body}"))
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| script(LUA_ACQUIRE));
static RENEW: LazyLock<Script> = LazyLock::new(|| script(LUA_RENEW));
/// The renew script's text, for pipelined `EVAL`s (the keeper's renewal pass).
static RENEW_SOURCE: LazyLock<String> = LazyLock::new(|| format!("{LUA_PRELUDE}{LUA_RENEW}"));
static RELEASE: LazyLock<Script> = LazyLock::new(|| script(LUA_RELEASE));
static READ: LazyLock<Script> = LazyLock::new(|| script(LUA_READ));
static RELEASE_SCOPE: LazyLock<Script> = LazyLock::new(|| script(LUA_RELEASE_SCOPE));
static REPAIR: LazyLock<Script> = LazyLock::new(|| script(LUA_REPAIR));

/// Leases in one Redis. Cheap to clone (the connection is shared and multiplexed).
#[derive(Clone)]
pub struct RedisLocks {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl RedisLocks {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://`),
    /// using `prefix` (normally [`super::DEFAULT_PREFIX`]) for every key.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisLocks, LockError> {
        // The parse error does not echo the URL, which may hold a password.
        let client = ::redis::Client::open(url)
            .map_err(|err| LockError::Invalid(format!("invalid redis url: {err}")))?;
        let config = ConnectionManagerConfig::new()
            // Fail fast: a caller gets `Unavailable` at once and retries at its own pace
            // (a holder renews every ttl/3); the next call reconnects.
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = tokio::time::timeout(
            OP_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            LockError::Unavailable(format!(
                "no connection to redis within {}",
                humantime::format_duration(OP_TIMEOUT)
            ))
        })?
        .map_err(|err| LockError::Unavailable(format!("cannot connect to redis: {err}")))?;
        Ok(RedisLocks {
            conn,
            prefix: Arc::from(prefix),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}lock:{scope}`: the key holding the lease JSON.
    pub fn lock_key(&self, scope: &str) -> String {
        format!("{}lock:{scope}", self.prefix)
    }

    /// `{prefix}fence:{scope}`: the scope's fence counter.
    pub fn fence_key(&self, scope: &str) -> String {
        format!("{}fence:{scope}", self.prefix)
    }

    /// Runs `op` on a clone of the connection, bounded by [`OP_TIMEOUT`]. A refused
    /// connection means the command was never sent (the manager was still holding a
    /// failed reconnect), so it is tried once more on the fresh connection attempt.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, LockError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempts = async {
            let mut retried = false;
            loop {
                match op(self.conn.clone()).await {
                    Ok(value) => return Ok(value),
                    Err(err) if err.is_connection_refusal() && !retried => {
                        debug!(operation = what, error = %err, "redis refused, retrying once");
                        retried = true;
                    }
                    Err(err) => return Err(err),
                }
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, attempts).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(LockError::Unavailable(format!("redis {what}: {err}"))),
            Err(_) => Err(LockError::Unavailable(format!(
                "redis {what}: no reply within {}",
                humantime::format_duration(OP_TIMEOUT)
            ))),
        }
    }

    pub async fn acquire(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Lease, LockError> {
        self.acquire_reporting(scope, owner, ttl)
            .await
            .map(|(lease, _)| lease)
    }

    /// [`Self::acquire`], also naming the owner of the expired lease it took over.
    pub async fn acquire_reporting(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(Lease, Option<String>), LockError> {
        self.acquire_above(scope, owner, ttl, 0).await
    }

    /// [`Self::acquire_reporting`] with a fence above `floor` (the store's newest fence for
    /// the scope), decided inside the acquire script: a Redis that came back empty (or
    /// from an old dump) hands out fences the store accepts at once.
    pub async fn acquire_above(
        &self,
        scope: &str,
        owner: &str,
        ttl: Duration,
        floor: u64,
    ) -> Result<(Lease, Option<String>), LockError> {
        check_scope(scope)?;
        check_owner(owner)?;
        let ttl_ms = ttl_ms(ttl, true)?;
        let floor = check_floor(floor)?;
        let token = new_token();
        let lock_key = self.lock_key(scope);
        let fence_key = self.fence_key(scope);
        let (scope_json, owner_json, token_json) = (json(scope), json(owner), json(&token));
        let (status, value, replaced): (i64, String, String) = self
            .run("acquire", |mut conn| {
                let (lock_key, fence_key) = (&lock_key, &fence_key);
                let (scope_json, owner_json, token_json) = (&scope_json, &owner_json, &token_json);
                async move {
                    ACQUIRE
                        .key(lock_key)
                        .key(fence_key)
                        .arg(scope_json)
                        .arg(owner_json)
                        .arg(token_json)
                        .arg(ttl_ms)
                        .arg(floor)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        if status != 1 {
            let (holder, until) = holder_of(&value);
            return Err(busy(scope, &holder, until));
        }
        let lease = parse_lease(&value)?;
        let mut taken_from = None;
        if !replaced.is_empty() {
            let (replaced_owner, _) = holder_of(&replaced);
            warn!(
                scope = %scope,
                replaced_owner = %replaced_owner,
                fence = lease.fence,
                "took over an expired lease"
            );
            taken_from = Some(replaced_owner);
        }
        debug!(scope = %scope, owner = %owner, fence = lease.fence, ttl_ms, "acquired lease");
        Ok((lease, taken_from))
    }

    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LockError> {
        let ttl_ms = ttl_ms(ttl, true)?;
        let lock_key = self.lock_key(&lease.scope);
        let (scope_json, owner_json, token_json) =
            (json(&lease.scope), json(&lease.owner), json(&lease.token));
        let (status, value): (i64, String) = self
            .run("renew", |mut conn| {
                let lock_key = &lock_key;
                let (scope_json, owner_json, token_json) = (&scope_json, &owner_json, &token_json);
                let token = &lease.token;
                async move {
                    RENEW
                        .key(lock_key)
                        .arg(scope_json)
                        .arg(owner_json)
                        .arg(token_json)
                        .arg(token)
                        .arg(ttl_ms)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        renew_answer(lease, status, &value)
    }

    /// Renews every lease of `due` in one pipelined round trip (the lease keeper's
    /// renewal pass); one answer per lease, in order.
    pub async fn renew_many(&self, due: &[(Lease, Duration)]) -> Vec<Result<Lease, LockError>> {
        let mut pipe = redis::pipe();
        let mut refused = Vec::with_capacity(due.len());
        for (lease, ttl) in due {
            match ttl_ms(*ttl, true) {
                Ok(ttl_ms) => {
                    pipe.cmd("EVAL")
                        .arg(RENEW_SOURCE.as_str())
                        .arg(1)
                        .arg(self.lock_key(&lease.scope))
                        .arg(json(&lease.scope))
                        .arg(json(&lease.owner))
                        .arg(json(&lease.token))
                        .arg(&lease.token)
                        .arg(ttl_ms);
                    refused.push(None);
                }
                Err(err) => refused.push(Some(err)),
            }
        }
        let answers: Result<Vec<(i64, String)>, LockError> = if refused.iter().all(Option::is_some)
        {
            Ok(Vec::new())
        } else {
            self.run("renew", |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await
        };
        let mut answers = match answers {
            Ok(answers) => answers.into_iter(),
            Err(err) => {
                let message = err.to_string();
                return due
                    .iter()
                    .map(|_| Err(LockError::Unavailable(message.clone())))
                    .collect();
            }
        };
        due.iter()
            .zip(refused)
            .map(|((lease, _), refused)| match refused {
                Some(err) => Err(err),
                None => match answers.next() {
                    Some((status, value)) => renew_answer(lease, status, &value),
                    None => Err(LockError::Unavailable(
                        "redis renew: fewer answers than leases".to_string(),
                    )),
                },
            })
            .collect()
    }

    pub async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let lock_key = self.lock_key(&lease.scope);
        let released: i64 = self
            .run("release", |mut conn| {
                let (lock_key, token) = (&lock_key, &lease.token);
                async move {
                    RELEASE
                        .key(lock_key)
                        .arg(token)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        debug!(scope = %lease.scope, released = released == 1, "released lease");
        Ok(released == 1)
    }

    /// Every lock key under the prefix, by `SCAN` (never `KEYS`), deduplicated.
    async fn scan_lock_keys(&self) -> Result<BTreeSet<String>, LockError> {
        let pattern = format!("{}*", glob_escape(&self.lock_key("")));
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run("scan", |mut conn| {
                    let pattern = &pattern;
                    async move {
                        ::redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(SCAN_COUNT)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// The value, `PTTL` and Redis time of one key; `None` when it is gone.
    async fn read(&self, key: &str) -> Result<Option<Stored>, LockError> {
        let (value, pttl, now_ms): (String, i64, i64) = self
            .run("read", |mut conn| async move {
                READ.key(key).invoke_async(&mut conn).await
            })
            .await?;
        Ok((pttl != -2 && !value.is_empty()).then_some(Stored {
            value,
            pttl,
            now_ms,
        }))
    }

    pub async fn list(&self) -> Result<Vec<LockInfo>, LockError> {
        let lock_prefix = self.lock_key("");
        let mut infos = Vec::new();
        for key in self.scan_lock_keys().await? {
            let Some(stored) = self.read(&key).await? else {
                continue;
            };
            let scope = key.strip_prefix(&lock_prefix).unwrap_or(&key);
            infos.push(stored.info(scope));
        }
        Ok(infos)
    }

    pub async fn release_scope(
        &self,
        scope: &str,
        force: bool,
    ) -> Result<Option<LockInfo>, LockError> {
        check_scope(scope)?;
        let lock_key = self.lock_key(scope);
        let force_arg = if force { "1" } else { "0" };
        let (status, value, pttl, now_ms): (i64, String, i64, i64) = self
            .run("release_scope", |mut conn| {
                let lock_key = &lock_key;
                async move {
                    RELEASE_SCOPE
                        .key(lock_key)
                        .arg(force_arg)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        if status == 0 {
            return Ok(None);
        }
        let info = Stored {
            value,
            pttl,
            now_ms,
        }
        .info(scope);
        if status == 2 {
            return Err(busy(scope, &info.owner, info.expires_at_ms));
        }
        warn!(
            scope = %scope,
            owner = %info.owner,
            fence = info.fence,
            stale = info.stale,
            force,
            "released lock by scope"
        );
        Ok(Some(info))
    }

    pub async fn repair(&self, cap: Duration) -> Result<Vec<Repair>, LockError> {
        let cap_ms = ttl_ms(cap, false)?;
        let lock_prefix = self.lock_key("");
        let mut repairs = Vec::new();
        for key in self.scan_lock_keys().await? {
            let Some(stored) = self.read(&key).await? else {
                continue;
            };
            if stored.pttl != -1 && stored.pttl <= cap_ms {
                continue;
            }
            let scope = key.strip_prefix(&lock_prefix).unwrap_or(&key).to_string();
            let (owner, _) = holder_of(&stored.value);
            let action = if super::owner_is_dead_local(&owner) {
                RepairAction::Deleted
            } else {
                RepairAction::ExpirySetToCap
            };
            let mode = match action {
                RepairAction::Deleted => "del",
                RepairAction::ExpirySetToCap => "expire",
            };
            let applied: i64 = self
                .run("repair", |mut conn| {
                    let (key, value) = (&key, &stored.value);
                    async move {
                        REPAIR
                            .key(key)
                            .arg(value)
                            .arg(cap_ms)
                            .arg(mode)
                            .invoke_async(&mut conn)
                            .await
                    }
                })
                .await?;
            if applied != 1 {
                debug!(scope = %scope, "lock key changed while repairing, left alone");
                continue;
            }
            let previous_ttl_ms = (stored.pttl >= 0).then_some(stored.pttl);
            warn!(
                scope = %scope,
                replaced_owner = %owner,
                previous_ttl_ms,
                action = action.as_str(),
                "repaired lock key"
            );
            repairs.push(Repair {
                scope,
                replaced_owner: owner,
                action,
                previous_ttl_ms,
            });
        }
        Ok(repairs)
    }
}

/// One lock key as read by [`LUA_READ`].
struct Stored {
    value: String,
    /// Redis `PTTL`: `-1` = no expiry.
    pttl: i64,
    /// Redis `TIME` when it was read.
    now_ms: i64,
}

impl Stored {
    fn info(&self, scope: &str) -> LockInfo {
        let parsed = serde_json::from_str::<serde_json::Value>(&self.value).ok();
        let field = |name: &str| parsed.as_ref().and_then(|value| value.get(name));
        let owner = field("owner")
            .and_then(|owner| owner.as_str())
            .unwrap_or(UNREADABLE)
            .to_string();
        let fence = field("fence").and_then(|fence| fence.as_u64()).unwrap_or(0);
        let lease_expiry = field("expires_at_ms").and_then(|at| at.as_i64());
        let key_deadline = (self.pttl >= 0).then(|| self.now_ms.saturating_add(self.pttl));
        let expires_at_ms = match (key_deadline, lease_expiry) {
            (None, _) => None,
            (Some(deadline), Some(lease)) => Some(deadline.min(lease)),
            (Some(deadline), None) => Some(deadline),
        };
        LockInfo {
            scope: scope.to_string(),
            owner,
            fence,
            expires_at_ms,
            remaining_ms: expires_at_ms.map(|at| at.saturating_sub(self.now_ms).max(0)),
            stale: lease_expiry.is_some_and(|at| at <= self.now_ms),
            acquired_at_ms: field("acquired_at_ms").and_then(|at| at.as_i64()),
        }
    }
}

/// The owner named in a stored value that is not a lease.
const UNREADABLE: &str = "<unreadable lock value>";

/// The holder and lease expiry named in a stored value.
/// What a renew script's `{status, value}` means for `lease`.
fn renew_answer(lease: &Lease, status: i64, value: &str) -> Result<Lease, LockError> {
    let lost = |reason: String| LockError::Lost {
        scope: lease.scope.clone(),
        reason,
    };
    match status {
        1 => parse_lease(value),
        0 => Err(lost(
            "the lock key is gone (expired or released)".to_string(),
        )),
        2 => {
            let (holder, _) = holder_of(value);
            Err(lost(format!("it is now held by {holder}")))
        }
        _ => {
            let (_, until) = holder_of(value);
            let at = until.map(super::format_ms).unwrap_or_default();
            Err(lost(format!("it expired at {at} before it was renewed")))
        }
    }
}

fn holder_of(value: &str) -> (String, Option<i64>) {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(parsed) => (
            parsed
                .get("owner")
                .and_then(|owner| owner.as_str())
                .unwrap_or(UNREADABLE)
                .to_string(),
            parsed.get("expires_at_ms").and_then(|at| at.as_i64()),
        ),
        Err(_) => (UNREADABLE.to_string(), None),
    }
}

fn parse_lease(value: &str) -> Result<Lease, LockError> {
    serde_json::from_str(value).map_err(|err| {
        LockError::Unavailable(format!("redis returned a lease that does not parse: {err}"))
    })
}

/// Lua numbers are doubles: fences stay exact only up to 2^53.
const MAX_FENCE: u64 = 1 << 53;

/// Refuses a floor the acquire script could not count from exactly.
fn check_floor(floor: u64) -> Result<u64, LockError> {
    if floor >= MAX_FENCE {
        return Err(LockError::Invalid(format!(
            "the store's newest fence {floor} is above {MAX_FENCE}; the scope's fences are corrupt: check scope_fences in the database"
        )));
    }
    Ok(floor)
}

/// `text` as a JSON string literal, for the scripts to splice into the lease JSON.
fn json(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// Escapes the glob metacharacters of `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    escaped
}
