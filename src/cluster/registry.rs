//! The member registry in Redis: who is alive, by Redis' clock.
//!
//! Key layout (default prefix `marketsync:`):
//! - `{prefix}cluster:members`: a sorted set, member id → the expiry of its registration
//!   in epoch milliseconds of Redis `TIME` (heartbeat time + `member_ttl`). A member is
//!   live while its score is in the future; nothing else decides it.
//! - `{prefix}cluster:heartbeats`: a hash, member id → its last heartbeat (epoch ms of
//!   Redis `TIME`), shown by `GET /api/cluster` and `doctor`.
//!
//! Every read and write is one Lua script that reads `TIME` inside Redis, so the daemons'
//! own clocks never decide who is alive. A heartbeat also removes members whose
//! registration expired (at most [`MAX_MEMBERS`] per call) and their heartbeat fields.
//! Inspect with `redis-cli ZRANGE marketsync:cluster:members 0 -1 WITHSCORES`.
//!
//! Every call is bounded by [`OP_TIMEOUT`]; every value read back is checked
//! ([`RegistryError::Malformed`]), never trusted.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::Script;

use super::{ClusterError, Member};

/// The bound on any one call.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Members a registry answers with at most; more is refused as malformed (a cluster this
/// size is not what the design was measured for, and an answer is bounded).
pub const MAX_MEMBERS: usize = 1_000;
/// The longest member id accepted (config validation refuses longer ones).
pub const MAX_MEMBER_ID: usize = 200;

/// Shared by the scripts: Redis' clock in epoch ms, and the live members as a flat list
/// `{id, expires_ms, heartbeat_ms, ...}` (at most ARGV[1] + 1 of them, so the caller sees
/// when there are too many).
const LUA_PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function live(now, limit)
  local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now), '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
  local out = {string.format('%.0f', now)}
  for i = 1, #rows, 2 do
    local beat = redis.call('HGET', KEYS[2], rows[i]) or '0'
    out[#out + 1] = rows[i]
    out[#out + 1] = rows[i + 1]
    out[#out + 1] = beat
  end
  return out
end
"#;

/// KEYS: members, heartbeats. ARGV: limit, member id, ttl_ms.
const LUA_HEARTBEAT: &str = r#"
local now = now_ms()
local limit = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], string.format('%.0f', now))
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now), 'LIMIT', 0, limit)
for i = 1, #dead do
  redis.call('ZREM', KEYS[1], dead[i])
  redis.call('HDEL', KEYS[2], dead[i])
end
return live(now, limit)
"#;

/// KEYS: members, heartbeats. ARGV: limit.
const LUA_READ: &str = r#"
return live(now_ms(), tonumber(ARGV[1]))
"#;

/// KEYS: members, heartbeats. ARGV: member id.
const LUA_LEAVE: &str = r#"
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LUA_PRELUDE}{LUA_HEARTBEAT}")));
static READ: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{LUA_PRELUDE}{LUA_READ}")));
static LEAVE: LazyLock<Script> = LazyLock::new(|| Script::new(LUA_LEAVE));

/// Redis' answer: its clock and the live members (sorted by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub redis_now_ms: i64,
    pub members: Vec<Member>,
}

/// The registry of one Redis. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct Registry {
    conn: ConnectionManager,
    members_key: Arc<str>,
    heartbeats_key: Arc<str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("members_key", &self.members_key)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Connects to `url` (never logged: it may hold a password) using `prefix` for keys.
    pub async fn connect(url: &str, prefix: &str) -> Result<Registry, ClusterError> {
        let client = ::redis::Client::open(url)
            .map_err(|err| ClusterError::Invalid(format!("invalid redis url: {err}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        let conn = tokio::time::timeout(
            OP_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| ClusterError::Unavailable("no connection to redis in time".to_string()))?
        .map_err(|err| ClusterError::Unavailable(format!("cannot connect to redis: {err}")))?;
        Ok(Registry {
            conn,
            members_key: Arc::from(format!("{prefix}cluster:members")),
            heartbeats_key: Arc::from(format!("{prefix}cluster:heartbeats")),
        })
    }

    /// Registers (or renews) `member` until Redis' now + `ttl`, drops expired members, and
    /// returns the live ones.
    pub async fn heartbeat(&self, member: &str, ttl: Duration) -> Result<Snapshot, ClusterError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = HEARTBEAT.prepare_invoke();
        invocation
            .key(&*self.members_key)
            .key(&*self.heartbeats_key)
            .arg(MAX_MEMBERS)
            .arg(member)
            .arg(ttl_ms);
        let mut conn = self.conn.clone();
        let rows: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        parse(&rows)
    }

    /// The live members, without registering anyone.
    pub async fn read(&self) -> Result<Snapshot, ClusterError> {
        let mut invocation = READ.prepare_invoke();
        invocation
            .key(&*self.members_key)
            .key(&*self.heartbeats_key)
            .arg(MAX_MEMBERS);
        let mut conn = self.conn.clone();
        let rows: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        parse(&rows)
    }

    /// Removes `member` at once (a clean shutdown): its accounts move now instead of
    /// after its registration expires. True when it was registered.
    pub async fn leave(&self, member: &str) -> Result<bool, ClusterError> {
        let mut invocation = LEAVE.prepare_invoke();
        invocation
            .key(&*self.members_key)
            .key(&*self.heartbeats_key)
            .arg(member);
        let mut conn = self.conn.clone();
        let removed: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(removed > 0)
    }
}

async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, ::redis::RedisError>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ClusterError::Unavailable(format!("redis: {err}"))),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "redis did not answer within {}",
            humantime::format_duration(OP_TIMEOUT)
        ))),
    }
}

/// Checks a script's answer: `{now, id, expires, heartbeat, ...}`.
pub fn parse(rows: &[String]) -> Result<Snapshot, ClusterError> {
    let malformed = |what: String| ClusterError::Malformed(what);
    let (now, rest) = rows
        .split_first()
        .ok_or_else(|| malformed("empty answer".to_string()))?;
    let redis_now_ms = epoch_ms(now).ok_or_else(|| malformed(format!("redis time {now:?}")))?;
    if !rest.len().is_multiple_of(3) {
        return Err(malformed(format!("{} fields, not triples", rest.len())));
    }
    if rest.len() / 3 > MAX_MEMBERS {
        return Err(malformed(format!("more than {MAX_MEMBERS} live members")));
    }
    let mut members = Vec::with_capacity(rest.len() / 3);
    for triple in rest.chunks_exact(3) {
        let [id, expires, heartbeat] = triple else {
            continue;
        };
        if id.is_empty() || id.len() > MAX_MEMBER_ID || id.chars().any(char::is_control) {
            return Err(malformed(format!("member id of {} bytes", id.len())));
        }
        let expires_at_ms =
            epoch_ms(expires).ok_or_else(|| malformed(format!("expiry {expires:?} of {id}")))?;
        // A missing heartbeat field (0) is shown as unknown, not refused.
        let last_heartbeat_ms = epoch_ms(heartbeat).filter(|ms| *ms > 0);
        members.push(Member {
            id: id.clone(),
            expires_at_ms,
            last_heartbeat_ms,
        });
    }
    members.sort_by(|left, right| left.id.cmp(&right.id));
    Ok(Snapshot {
        redis_now_ms,
        members,
    })
}

/// An epoch-ms value as Redis formats a score (`1700000000000`, maybe `1.7e+12`): a
/// finite, non-negative number below year 10000.
fn epoch_ms(text: &str) -> Option<i64> {
    const MAX_MS: f64 = 253_402_300_799_000.0;
    let value: f64 = text.trim().parse().ok()?;
    if !value.is_finite() || !(0.0..=MAX_MS).contains(&value) {
        return None;
    }
    // In range, so the cast cannot saturate.
    Some(value.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| (*value).to_string()).collect()
    }

    #[test]
    fn parse_reads_members_sorted_and_checks_every_field() {
        let snapshot = parse(&strings(&[
            "1700000000000",
            "b",
            "1700000015000",
            "1700000000000",
            "a",
            "1.700000014e+12",
            "0",
        ]))
        .unwrap();
        assert_eq!(snapshot.redis_now_ms, 1_700_000_000_000);
        let ids: Vec<&str> = snapshot.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(snapshot.members[0].expires_at_ms, 1_700_000_014_000);
        assert_eq!(snapshot.members[0].last_heartbeat_ms, None);
        assert_eq!(
            snapshot.members[1].last_heartbeat_ms,
            Some(1_700_000_000_000)
        );

        for bad in [
            strings(&[]),
            strings(&["now"]),
            strings(&["1", "a", "2"]),
            strings(&["1", "a", "inf", "0"]),
            strings(&["1", "a", "-5", "0"]),
            strings(&["1", "", "5", "0"]),
            strings(&["1", "a\nb", "5", "0"]),
        ] {
            assert!(
                matches!(parse(&bad), Err(ClusterError::Malformed(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn parse_refuses_more_members_than_the_bound() {
        let mut rows = vec!["1".to_string()];
        for index in 0..=MAX_MEMBERS {
            rows.extend([format!("m{index}"), "5".to_string(), "1".to_string()]);
        }
        assert!(matches!(parse(&rows), Err(ClusterError::Malformed(_))));
    }
}
