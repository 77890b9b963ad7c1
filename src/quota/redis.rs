//! Redis mode: several daemons share one quota.
//!
//! Key layout (prefix normally `marketsync:`):
//! - `{prefix}quota:{provider}:{scope}:{operation}`: a hash per bucket with `tokens`
//!   (may be negative), `ts` (microseconds of Redis `TIME` the level refers to; in the
//!   future while a Keepa `refillIn` runs), `rate` (tokens/s) and `burst`. Created full
//!   from the configured spec at first use; the stored `rate`/`burst` win over the spec
//!   afterwards (they may have been learned from headers). It expires an hour after it
//!   would be full again, so idle buckets clean themselves up.
//! - `{prefix}cooldown:{scope}`: a running cooldown as JSON (`scope`, `reason`,
//!   `started_at`, `until_at`, `detail`; unix seconds) with `PX` expiry at its end.
//!
//! Every decision is one Lua script ([`::redis::Script`]) using Redis `TIME`, never the
//! daemons' clocks:
//! - acquire: if any cooldown key of the request exists, answer it; otherwise refill
//!   every bucket of the request to now and either take `cost` from all of them or take
//!   nothing and return the longest wait (microseconds) and which bucket needs it. The
//!   TokenManager then schedules its one wake-up that far ahead.
//! - observe: set the rate (`x-amzn-RateLimit-Limit`), adopt a Keepa balance, or drain a
//!   bucket after a 429.
//! - cooldown set: keep the later end of a running cooldown.
//!
//! Connection problems are [`QuotaError::Unavailable`], bounded by [`OP_TIMEOUT`]; after
//! one, calls fail fast for [`RETRY_AFTER`] instead of each waiting for a timeout. The
//! connection is made lazily (a daemon starts while Redis is down) and
//! [`::redis::aio::ConnectionManager`] reconnects by itself. Emits
//! `warn!(error, "quota redis unavailable")` when a call fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::Script;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tracing::warn;

use super::cooldown::CooldownStore;
use super::queue::Payer;
use super::{cooling_down, BucketKey, BucketSpec, BucketView, QuotaError};
use crate::store::Cooldown;

/// The bound on one Redis call, connecting included.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed call, calls fail at once for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(4);

/// Shared by the scripts: `now` in microseconds of Redis time, and refilling.
const LUA_PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function load(key, default_rate, default_burst)
  local h = redis.call('HMGET', key, 'tokens', 'ts', 'rate', 'burst')
  local rate = tonumber(h[3]) or default_rate
  local burst = tonumber(h[4]) or default_burst
  local tokens = tonumber(h[1]) or burst
  local ts = tonumber(h[2]) or now
  if now > ts then
    if tokens < burst then
      tokens = math.min(burst, tokens + rate * (now - ts) / 1000000)
    end
    ts = now
  end
  return {tokens = tokens, ts = ts, rate = rate, burst = burst}
end
local function store(key, b)
  redis.call('HSET', key,
    'tokens', string.format('%.17g', b.tokens),
    'ts', string.format('%.0f', b.ts),
    'rate', string.format('%.17g', b.rate),
    'burst', string.format('%.17g', b.burst))
  local refill_ms = math.max(0, b.burst - b.tokens) / b.rate * 1000 + (b.ts - now) / 1000
  redis.call('PEXPIRE', key, math.ceil(math.min(refill_ms + 3600000, 2592000000)))
end
"#;

/// KEYS: cooldown keys (ARGV[1] of them), then bucket keys. ARGV: n_cooldowns, cost,
/// reserved ('1'/'0'), reserve share, then rate and burst per bucket.
/// Returns {2, cooldown json, index} | {0, wait_us, index} | {1, '', 0}.
const LUA_ACQUIRE: &str = r#"
local ncool = tonumber(ARGV[1])
for i = 1, ncool do
  local raw = redis.call('GET', KEYS[i])
  if raw then return {2, raw, i - 1} end
end
local cost = tonumber(ARGV[2])
local reserved = ARGV[3] == '1'
local share = tonumber(ARGV[4])
local wait = 0
local limiting = 0
local buckets = {}
for j = 1, #KEYS - ncool do
  local b = load(KEYS[ncool + j], tonumber(ARGV[3 + 2 * j]), tonumber(ARGV[4 + 2 * j]))
  local need = cost
  if reserved then need = math.min(cost + share * b.burst, math.max(b.burst, cost)) end
  local slack = 1e-9 * math.max(math.abs(need), 1)
  if b.tokens + slack < need then
    local w = math.ceil((need - b.tokens) / b.rate * 1000000)
    if b.ts > now then w = w + (b.ts - now) end
    if w > wait then
      wait = w
      limiting = j - 1
    end
  end
  buckets[j] = b
end
if wait > 0 then return {0, string.format('%.0f', wait), limiting} end
for j = 1, #KEYS - ncool do
  local b = buckets[j]
  b.tokens = b.tokens - cost
  store(KEYS[ncool + j], b)
end
return {1, '', 0}
"#;

/// KEYS: bucket. ARGV: mode ('rate' | 'keepa' | 'drain'), default rate, default burst,
/// then for 'rate': rate; for 'keepa': tokens_left, refill_in_ms, refill_rate_per_min;
/// for 'drain': the hold in microseconds (the next token no sooner than that from now)
/// and the corrected burst (0: unchanged; never raised).
const LUA_OBSERVE: &str = r#"
local b = load(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local mode = ARGV[1]
if mode == 'rate' then
  b.rate = tonumber(ARGV[4])
elseif mode == 'keepa' then
  local per_min = tonumber(ARGV[6])
  if per_min > 0 then
    b.rate = per_min / 60
    b.burst = per_min * 60
  end
  b.tokens = tonumber(ARGV[4])
  b.ts = now + tonumber(ARGV[5]) * 1000
elseif mode == 'drain' then
  b.tokens = math.min(b.tokens, 0)
  local hold = tonumber(ARGV[4]) or 0
  local interval = 1000000 / b.rate
  if hold > interval then
    b.ts = math.max(b.ts, now + hold - interval)
  end
  local burst = tonumber(ARGV[5]) or 0
  if burst >= 1 and burst < b.burst then
    b.burst = burst
  end
end
store(KEYS[1], b)
return 1
"#;

/// KEYS: bucket. ARGV: default rate, default burst. Returns {tokens, rate, burst} as text.
const LUA_READ: &str = r#"
local b = load(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
return {string.format('%.17g', b.tokens), string.format('%.17g', b.rate), string.format('%.17g', b.burst)}
"#;

/// KEYS: cooldown. ARGV: json, until (unix ms). Keeps a running cooldown that ends later.
const LUA_COOLDOWN_SET: &str = r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = tonumber(ARGV[2])
if until_ms <= now_ms then return 0 end
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, old = pcall(cjson.decode, raw)
  if ok and type(old) == 'table' and tonumber(old.until_at) and tonumber(old.until_at) * 1000 >= until_ms then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', string.format('%.0f', until_ms - now_ms))
return 1
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}{body}"))
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| script(LUA_ACQUIRE));
static OBSERVE: LazyLock<Script> = LazyLock::new(|| script(LUA_OBSERVE));
/// Buckets read per pipeline by [`RedisBuckets::views`].
pub(crate) const VIEW_BATCH: usize = 500;

static READ: LazyLock<Script> = LazyLock::new(|| script(LUA_READ));
static COOLDOWN_SET: LazyLock<Script> = LazyLock::new(|| Script::new(LUA_COOLDOWN_SET));

/// One lazily made, shared connection to the quota Redis.
pub(crate) struct RedisLink {
    client: ::redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
}

impl RedisLink {
    /// Parses the URL (no I/O: the connection is made at first use).
    pub(crate) fn new(url: &str, prefix: &str) -> Result<RedisLink, QuotaError> {
        // The parse error does not echo the URL, which may hold a password.
        let client = ::redis::Client::open(url)
            .map_err(|err| QuotaError::Unavailable(format!("invalid redis url: {err}")))?;
        Ok(RedisLink {
            client,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
        })
    }

    pub(crate) fn bucket_key(&self, key: &BucketKey) -> String {
        format!("{}quota:{}", self.prefix, key.bucket_scope())
    }

    pub(crate) fn cooldown_key(&self, scope: &str) -> String {
        format!("{}cooldown:{scope}", self.prefix)
    }

    /// Runs `op` on the connection, bounded by [`OP_TIMEOUT`] (connecting included).
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, QuotaError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, ::redis::RedisError>>,
    {
        let attempt = async {
            let conn = self
                .conn
                .get_or_try_init(|| {
                    let config = ConnectionManagerConfig::new()
                        .set_number_of_retries(0)
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(RESPONSE_TIMEOUT));
                    ConnectionManager::new_with_config(self.client.clone(), config)
                })
                .await?
                .clone();
            op(conn).await
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(QuotaError::Unavailable(format!("redis {what}: {err}"))),
            Err(_) => Err(QuotaError::Unavailable(format!(
                "redis {what}: no reply within {}",
                humantime::format_duration(OP_TIMEOUT)
            ))),
        }
    }
}

/// Bucket state in Redis; the TokenManager's [`Payer`] in Redis mode.
pub(crate) struct RedisBuckets {
    link: Arc<RedisLink>,
    specs: HashMap<BucketKey, BucketSpec>,
    reserve_share: f64,
    /// Calls fail at once until then (after a failure).
    down_until: Option<tokio::time::Instant>,
}

/// What the observe script should do.
pub(crate) enum RemoteObservation {
    Rate(f64),
    Keepa {
        tokens_left: i64,
        refill_in_ms: u64,
        refill_rate_per_min: f64,
    },
    /// The level to zero; with a `hold` longer than one token interval, the next token
    /// comes `hold` from now (a `Retry-After`), and a lower `burst` when the 429 corrected
    /// it, as [`super::bucket::Bucket::correct`] does in process. The burst is written to
    /// the shared bucket: every daemon sharing it learns it (never up).
    Drain {
        hold: Duration,
        burst: Option<f64>,
    },
}

impl RedisBuckets {
    pub(crate) fn new(link: Arc<RedisLink>, reserve_share: f64) -> RedisBuckets {
        RedisBuckets {
            link,
            specs: HashMap::new(),
            reserve_share,
            down_until: None,
        }
    }

    /// Remembers the spec a new bucket is created with. Redis keeps no log of grants, so
    /// a window cap becomes the bucket alone that keeps every window within its limit
    /// ([`BucketSpec::without_window`]).
    pub(crate) fn ensure(&mut self, key: &BucketKey, spec: BucketSpec) {
        self.specs
            .entry(key.clone())
            .or_insert(spec.without_window());
    }

    /// The buckets this manager created or used.
    pub(crate) fn known_keys(&self) -> Vec<BucketKey> {
        self.specs.keys().cloned().collect()
    }

    pub(crate) fn spec(&self, key: &BucketKey) -> Option<BucketSpec> {
        self.specs.get(key).copied()
    }

    /// Remembers a burst learned from a Keepa balance (checked by `CostExceedsBurst`).
    pub(crate) fn set_burst(&mut self, key: &BucketKey, burst: f64) {
        if let Some(spec) = self.specs.get_mut(key) {
            spec.burst = burst;
        }
    }

    fn check_up(&self) -> Result<(), QuotaError> {
        match self.down_until {
            Some(until) if tokio::time::Instant::now() < until => Err(QuotaError::Unavailable(
                "redis unavailable (last call failed; retrying shortly)".to_string(),
            )),
            _ => Ok(()),
        }
    }

    fn note<T>(&mut self, result: Result<T, QuotaError>) -> Result<T, QuotaError> {
        match &result {
            Ok(_) => self.down_until = None,
            Err(err) => {
                warn!(error = %err, "quota redis unavailable");
                self.down_until = Some(tokio::time::Instant::now() + RETRY_AFTER);
            }
        }
        result
    }

    pub(crate) async fn observe(
        &mut self,
        key: &BucketKey,
        observation: RemoteObservation,
    ) -> Result<(), QuotaError> {
        self.check_up()?;
        let Some(spec) = self.spec(key) else {
            return Ok(());
        };
        let mut invocation = OBSERVE.key(self.link.bucket_key(key));
        match observation {
            RemoteObservation::Rate(rate) => {
                invocation
                    .arg("rate")
                    .arg(spec.rate)
                    .arg(spec.burst)
                    .arg(rate);
            }
            RemoteObservation::Keepa {
                tokens_left,
                refill_in_ms,
                refill_rate_per_min,
            } => {
                invocation
                    .arg("keepa")
                    .arg(spec.rate)
                    .arg(spec.burst)
                    .arg(tokens_left)
                    .arg(refill_in_ms)
                    .arg(refill_rate_per_min);
            }
            RemoteObservation::Drain { hold, burst } => {
                invocation
                    .arg("drain")
                    .arg(spec.rate)
                    .arg(spec.burst)
                    .arg(u64::try_from(hold.as_micros()).unwrap_or(u64::MAX))
                    .arg(
                        burst
                            .filter(|burst| burst.is_finite() && *burst >= 1.0)
                            .unwrap_or(0.0),
                    );
            }
        }
        let result = self
            .link
            .run("observe", |mut conn| async move {
                let _: i64 = invocation.invoke_async(&mut conn).await?;
                Ok(())
            })
            .await;
        self.note(result)
    }

    pub(crate) async fn view(&mut self, key: &BucketKey) -> Result<Option<BucketView>, QuotaError> {
        self.check_up()?;
        let Some(spec) = self.spec(key) else {
            return Ok(None);
        };
        let bucket_key = self.link.bucket_key(key);
        let result = self
            .link
            .run("read", |mut conn| async move {
                let (tokens, rate, burst): (String, String, String) = READ
                    .key(bucket_key)
                    .arg(spec.rate)
                    .arg(spec.burst)
                    .invoke_async(&mut conn)
                    .await?;
                Ok((tokens, rate, burst))
            })
            .await;
        let reply = self.note(result)?;
        Ok(Some(self.read_view(reply)))
    }

    /// The state of every bucket in `keys` this manager knows, read in pipelined batches of
    /// [`VIEW_BATCH`] (one `SCRIPT LOAD` and one pipeline per batch) instead of one round
    /// trip per bucket: `/api/budgets` and the dashboard's history sampler read them all.
    pub(crate) async fn views(
        &mut self,
        keys: &[BucketKey],
    ) -> Result<Vec<(BucketKey, BucketView)>, QuotaError> {
        self.check_up()?;
        let known: Vec<(BucketKey, String, BucketSpec)> = keys
            .iter()
            .filter_map(|key| {
                let spec = self.spec(key)?;
                Some((key.clone(), self.link.bucket_key(key), spec))
            })
            .collect();
        let mut views = Vec::with_capacity(known.len());
        for batch in known.chunks(VIEW_BATCH) {
            let calls: Vec<(String, f64, f64)> = batch
                .iter()
                .map(|(_, redis_key, spec)| (redis_key.clone(), spec.rate, spec.burst))
                .collect();
            let result = self
                .link
                .run("read", |mut conn| async move {
                    let sha: String = READ.load_async(&mut conn).await?;
                    let mut pipe = ::redis::pipe();
                    for (redis_key, rate, burst) in &calls {
                        pipe.cmd("EVALSHA")
                            .arg(&sha)
                            .arg(1)
                            .arg(redis_key)
                            .arg(*rate)
                            .arg(*burst);
                    }
                    let replies: Vec<(String, String, String)> =
                        pipe.query_async(&mut conn).await?;
                    Ok(replies)
                })
                .await;
            let replies = self.note(result)?;
            if replies.len() != batch.len() {
                return Err(QuotaError::Unavailable(format!(
                    "redis read: {} replies for {} buckets",
                    replies.len(),
                    batch.len()
                )));
            }
            for ((key, _, _), reply) in batch.iter().zip(replies) {
                views.push((key.clone(), self.read_view(reply)));
            }
        }
        Ok(views)
    }

    /// A bucket's view from the read script's reply (tokens, rate, burst as text).
    fn read_view(&self, (tokens, rate, burst): (String, String, String)) -> BucketView {
        let number = |text: &str| text.parse::<f64>().unwrap_or(f64::NAN);
        BucketView {
            rate: number(&rate),
            burst: number(&burst),
            tokens: number(&tokens),
            reserve_share: self.reserve_share,
            configured_burst: number(&burst),
            corrections: 0,
            grants: 0,
            window_room: None,
        }
    }
}

impl Payer for RedisBuckets {
    async fn try_pay(
        &mut self,
        keys: &[BucketKey],
        cost: f64,
        reserved: bool,
        _now: Duration,
    ) -> Result<Result<(), (Duration, usize)>, QuotaError> {
        self.check_up()?;
        let mut scopes = Vec::new();
        let mut invocation = ACQUIRE.prepare_invoke();
        for key in keys {
            for scope in key.cooldown_scopes() {
                if !scopes.contains(&scope) {
                    invocation.key(self.link.cooldown_key(&scope));
                    scopes.push(scope);
                }
            }
        }
        invocation
            .arg(scopes.len())
            .arg(cost)
            .arg(if reserved { "1" } else { "0" })
            .arg(self.reserve_share);
        for key in keys {
            let spec = self
                .spec(key)
                .ok_or_else(|| QuotaError::UnknownBucket { key: key.clone() })?;
            invocation
                .key(self.link.bucket_key(key))
                .arg(spec.rate)
                .arg(spec.burst);
        }
        let result = self
            .link
            .run("acquire", |mut conn| async move {
                let reply: (i64, String, i64) = invocation.invoke_async(&mut conn).await?;
                Ok(reply)
            })
            .await;
        let (status, value, index) = self.note(result)?;
        let index = usize::try_from(index).unwrap_or(0);
        match status {
            1 => Ok(Ok(())),
            0 => {
                let micros = value.parse::<u64>().unwrap_or(u64::MAX);
                Ok(Err((Duration::from_micros(micros), index)))
            }
            _ => {
                let scope = scopes.get(index).cloned().unwrap_or_default();
                let cooldown = parse_cooldown(&value).unwrap_or(Cooldown {
                    scope,
                    reason: "unknown".to_string(),
                    started_at: 0,
                    until_at: 0,
                    detail: None,
                });
                Err(cooling_down(&cooldown))
            }
        }
    }
}

/// The JSON value of a cooldown key.
#[derive(Debug, Serialize, Deserialize)]
struct CooldownRecord {
    scope: String,
    reason: String,
    started_at: i64,
    until_at: i64,
    #[serde(default)]
    detail: Option<String>,
}

fn parse_cooldown(raw: &str) -> Option<Cooldown> {
    let record: CooldownRecord = serde_json::from_str(raw).ok()?;
    Some(Cooldown {
        scope: record.scope,
        reason: record.reason,
        started_at: record.started_at,
        until_at: record.until_at,
        detail: record.detail,
    })
}

/// Cooldowns in Redis (see the module docs for the key). Cheap to clone.
#[derive(Clone)]
pub struct RedisCooldowns {
    link: Arc<RedisLink>,
}

impl RedisCooldowns {
    /// Parses `url`; connects at first use.
    pub fn new(url: &str, prefix: &str) -> Result<RedisCooldowns, QuotaError> {
        Ok(RedisCooldowns {
            link: Arc::new(RedisLink::new(url, prefix)?),
        })
    }

    pub(crate) fn from_link(link: Arc<RedisLink>) -> RedisCooldowns {
        RedisCooldowns { link }
    }

    /// `{prefix}cooldown:{scope}`.
    pub fn key(&self, scope: &str) -> String {
        self.link.cooldown_key(scope)
    }

    /// Every running cooldown (`SCAN` over `{prefix}cooldown:*`, never `KEYS`), by scope.
    pub async fn list(&self) -> Result<Vec<Cooldown>, QuotaError> {
        let pattern = format!("{}*", glob_escape(&self.link.cooldown_key("")));
        let mut found = self
            .link
            .run("cooldown list", |mut conn| async move {
                let mut cursor: u64 = 0;
                let mut keys: Vec<String> = Vec::new();
                loop {
                    let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                let mut found = Vec::with_capacity(keys.len());
                for key in keys {
                    let raw: Option<String> =
                        ::redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                    // Gone since the scan (expired or cleared), or not ours: skipped.
                    if let Some(cooldown) = raw.as_deref().and_then(parse_cooldown) {
                        found.push(cooldown);
                    }
                }
                Ok(found)
            })
            .await?;
        found.sort_by(|a, b| a.scope.cmp(&b.scope));
        Ok(found)
    }
}

/// `text` with Redis glob characters escaped, for a `MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl CooldownStore for RedisCooldowns {
    fn set<'a>(&'a self, cooldown: &'a Cooldown) -> BoxFuture<'a, Result<(), QuotaError>> {
        Box::pin(async move {
            let record = CooldownRecord {
                scope: cooldown.scope.clone(),
                reason: cooldown.reason.clone(),
                started_at: cooldown.started_at,
                until_at: cooldown.until_at,
                detail: cooldown.detail.clone(),
            };
            let json = serde_json::to_string(&record)
                .map_err(|err| QuotaError::Unavailable(format!("cooldown json: {err}")))?;
            let key = self.key(&cooldown.scope);
            let until_ms = cooldown.until_at.saturating_mul(1000);
            self.link
                .run("cooldown set", |mut conn| async move {
                    let _: i64 = COOLDOWN_SET
                        .key(key)
                        .arg(json)
                        .arg(until_ms)
                        .invoke_async(&mut conn)
                        .await?;
                    Ok(())
                })
                .await
        })
    }

    fn active<'a>(
        &'a self,
        scope: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<Option<Cooldown>, QuotaError>> {
        Box::pin(async move {
            let key = self.key(scope);
            let raw: Option<String> = self
                .link
                .run("cooldown get", |mut conn| async move {
                    ::redis::cmd("GET").arg(key).query_async(&mut conn).await
                })
                .await?;
            // The key expires with the cooldown: if it is there, the cooldown runs.
            Ok(raw.and_then(|raw| parse_cooldown(&raw)))
        })
    }

    fn clear<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<bool, QuotaError>> {
        Box::pin(async move {
            let key = self.key(scope);
            let removed: i64 = self
                .link
                .run("cooldown clear", |mut conn| async move {
                    ::redis::cmd("DEL").arg(key).query_async(&mut conn).await
                })
                .await?;
            Ok(removed > 0)
        })
    }
}
