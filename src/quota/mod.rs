//! The TokenManager: every provider call asks it first; nothing else sleeps to pace calls.
//!
//! A caller names the buckets its call spends from ([`BucketKey`]: provider, operation,
//! scope; an SP-API call may name the account-application bucket *and* the application
//! bucket), a cost, a [`Priority`] and a deadline, and gets a [`Grant`] or a
//! [`QuotaError`]. A request is granted only when every bucket it names can pay: the
//! strictest one decides.
//!
//! The model (seeds 001, 002, 004):
//! - token buckets ([`bucket::Bucket`]) with a rate and a burst; tokens may go negative
//!   (Keepa) and the wait for the next grant is computed once, in closed form, never by
//!   a retry loop (seed 004's "death spiral");
//! - priorities 200 manual / 150 hot / 100 background (seed 002). Non-manual work leaves a
//!   reserve of `reserve_share * burst` tokens (default 0.2), so a background flood never
//!   starves manual requests;
//! - cooldowns (seed 001's hard stop): during a cooldown, `acquire` for a key in its scope
//!   answers [`QuotaError::CoolingDown`] at once. A `Throttled` observation (a 429) starts
//!   one for the key's account scope (`{provider}:{scope}`), as long as the provider's
//!   configured throttle cooldown (amazon 30 min) or the `Retry-After`, whichever is longer.
//!   Cooldowns persist through a [`CooldownStore`] (the SQLite ledger, or Redis).
//!
//! The actor never sleeps in a handler and never spins. A request that cannot be granted
//! waits in per-bucket priority queues (higher priority first, FIFO within a priority; see
//! `queue.rs`); the actor keeps exactly one self-message scheduled (`send_after`) for the
//! earliest time the head of any queue can be served or a deadline runs out, and counts
//! its wake-ups ([`QuotaStats`]). A request whose deadline passes is answered with
//! [`QuotaError::DeadlineExceeded`] at that wake-up; a cost above a bucket's burst is
//! refused at once ([`QuotaError::CostExceedsBurst`]), never queued forever.
//!
//! Backends ([`QuotaBackend`]): `InProcess` keeps buckets in the actor; `Redis { url,
//! prefix }` keeps them in Redis so several daemons share one quota: an atomic Lua script
//! using Redis `TIME` takes the tokens of all keys of a request or says how long to wait,
//! and the actor schedules its wake-up that far ahead (see [`redis`]).
//!
//! Options ([`QuotaConfig`]): backend, bucket specs (overriding [`default_spec`]),
//! reserve share, rate margin (the share of every configured, default or learned rate
//! left unused; 0 here, [`DEFAULT_RATE_MARGIN`] in the daemon), throttle cooldowns per
//! provider, the cooldown store, how long a "no cooldown" answer of the store is trusted,
//! and the [`Clock`] (tokio time, or a manual clock for tests).
//!
//! In the daemon (`crate::app`): one TokenManager, linked to the Root; every SP-API
//! client carries a [`Pacer`] (handle + bucket scope = the selling partner) and the sync
//! runner acquires before each call and observes each response (`crate::shapes::windowed`).
//! [`admin`] is `marketsync cooldowns`; [`efficiency`] is `marketsync bench quota`.
//!
//! Emits (tracing, structured fields): `debug!(key, priority, cost, wait_ms, "request
//! queued")`, `debug!(key, waited_ms, "deadline exceeded")`, `debug!(key, rate, previous,
//! "rate learned from header")`, `info!(key, tokens_left, refill_in_ms,
//! refill_rate_per_min, "keepa balance resynced")`, `warn!(key, scope, until,
//! "provider throttled; cooling down")`, `info!(scope, reason, until, "cooldown
//! started")`, `info!(scope, "cooldown cleared")`, `warn!(scope, error, "cooldown store
//! failed")`, and from Redis mode `warn!(error, "quota redis unavailable")`.

pub mod bucket;
pub mod cooldown;
mod queue;
pub mod redis;
pub mod settings;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use bucket::{Bucket, DEFAULT_RESERVE_SHARE};
pub use cooldown::{CooldownReason, CooldownStore};
pub use redis::RedisCooldowns;

use crate::store::{Cooldown, LedgerStore};
use queue::{Outcome, Payer, Queue};
use redis::{RedisBuckets, RedisLink, RemoteObservation};

/// The default Redis key prefix (shared with the lock service).
pub const DEFAULT_PREFIX: &str = crate::lock::DEFAULT_PREFIX;
/// The cooldown after a 429 on amazon (seed 001: `QUOTA_COOLDOWN_MINUTES = 30`).
pub const AMAZON_THROTTLE_COOLDOWN: Duration = Duration::from_secs(30 * 60);
/// The cooldown after a 429 on any other provider (unless configured).
pub const DEFAULT_THROTTLE_COOLDOWN: Duration = Duration::from_secs(5 * 60);
/// How long a "no cooldown" answer of the store is trusted before asking again.
pub const DEFAULT_COOLDOWN_RECHECK: Duration = Duration::from_secs(5);
/// The share of every rate the daemon leaves unused (`[quota] rate_margin`): a call
/// granted exactly when our bucket holds a token may reach the provider a few
/// milliseconds *earlier* (relative to the first call) than the grant spacing says,
/// and find the provider's bucket a hair short. 2% of the rate is 20 ms at 1 call/s.
/// [`QuotaConfig::new`] uses 0 (exact rates); the daemon uses this.
pub const DEFAULT_RATE_MARGIN: f64 = 0.02;
/// How long after its deadline a caller still waits for the actor's own answer.
const REPLY_GRACE: Duration = Duration::from_millis(250);
/// The bound on the handle's other requests (cooldowns, stats).
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// One bucket: `provider` (`amazon`, `ebay`, `stockx`, `keepa`, ...), `operation`
/// (`createReport`, ...) and `scope` (a seller account, an application, or both, as
/// the provider's usage plan counts them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    pub provider: String,
    pub operation: String,
    pub scope: String,
}

impl BucketKey {
    pub fn new(
        provider: impl Into<String>,
        operation: impl Into<String>,
        scope: impl Into<String>,
    ) -> BucketKey {
        BucketKey {
            provider: provider.into(),
            operation: operation.into(),
            scope: scope.into(),
        }
    }

    /// `{provider}:{scope}`: the account scope ([`crate::store::account_scope`]).
    pub fn account_scope(&self) -> String {
        crate::store::account_scope(&self.provider, &self.scope)
    }

    /// `{provider}:{scope}:{operation}`: this bucket alone.
    pub fn bucket_scope(&self) -> String {
        format!("{}:{}:{}", self.provider, self.scope, self.operation)
    }

    /// Every cooldown scope that stops this key: the provider, the account, the bucket.
    pub fn cooldown_scopes(&self) -> [String; 3] {
        [
            self.provider.clone(),
            self.account_scope(),
            self.bucket_scope(),
        ]
    }
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.provider, self.scope, self.operation)
    }
}

/// Who is asking (seed 002's job priorities). Higher is served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// A person is waiting; may use the reserve.
    Manual = 200,
    /// Hot items.
    Hot = 150,
    /// Everything else.
    Background = 100,
}

impl Priority {
    pub fn value(self) -> u16 {
        self as u16
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Manual => "manual",
            Priority::Hot => "hot",
            Priority::Background => "background",
        }
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value().cmp(&other.value())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::store::Priority> for Priority {
    /// Audits run as background work.
    fn from(priority: crate::store::Priority) -> Priority {
        match priority {
            crate::store::Priority::Manual => Priority::Manual,
            crate::store::Priority::Hot => Priority::Hot,
            crate::store::Priority::Background | crate::store::Priority::Audit => {
                Priority::Background
            }
        }
    }
}

/// A bucket's refill rate (tokens per second) and capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSpec {
    pub rate: f64,
    pub burst: f64,
}

impl BucketSpec {
    pub const fn new(rate: f64, burst: f64) -> BucketSpec {
        BucketSpec { rate, burst }
    }

    /// A provider budget of `n` calls per hour (seed 002). A continuous bucket grants at
    /// most `rate·t + burst` in any window `t`, so `rate = 0.9·n/3600` and
    /// `burst = 0.1·n` keep *every* one-hour window within `n` (a burst of `n` would
    /// allow `2n` in the first hour).
    pub fn per_hour(n: f64) -> BucketSpec {
        BucketSpec {
            rate: 0.9 * n / 3600.0,
            burst: 0.1 * n,
        }
    }

    /// A daily call limit of `n` (eBay's per-API quotas, which reset daily): the same
    /// construction as [`BucketSpec::per_hour`] over a day, so no 24-hour window exceeds `n`.
    pub fn per_day(n: f64) -> BucketSpec {
        BucketSpec {
            rate: 0.9 * n / 86_400.0,
            burst: 0.1 * n,
        }
    }

    /// A Keepa plan refilling `n` tokens per minute: `rate = n/60`, and the bucket holds
    /// an hour of refill (`burst = 60·n`), as Keepa's plans do.
    pub fn keepa_per_minute(n: f64) -> BucketSpec {
        BucketSpec {
            rate: n / 60.0,
            burst: 60.0 * n,
        }
    }
}

/// The documented defaults:
/// - `amazon` (SP-API Reports 2021-06-30): `createReport` 0.0167/s burst 15,
///   `getReport` 2/s burst 15, `getReportDocument` 0.0167/s burst 15;
/// - `stockx` 100/h, `alias` 200/h, `ebay` 150/h (seed 002), any operation, via
///   [`BucketSpec::per_hour`]: stockx 0.025/s burst 10, alias 0.05/s burst 20,
///   ebay 0.0375/s burst 15;
/// - `keepa` 20 tokens/min, any operation (Keepa's bucket is per account, not per call):
///   rate 1/3 per s, burst 1200 ([`BucketSpec::keepa_per_minute`]); a Keepa balance
///   observation replaces both with the plan the response reports.
///
/// Other keys have no default: configure them, or `acquire` answers `UnknownBucket`.
pub fn default_spec(provider: &str, operation: &str) -> Option<BucketSpec> {
    match (provider, operation) {
        ("amazon", "createReport") => Some(BucketSpec::new(0.0167, 15.0)),
        ("amazon", "getReport") => Some(BucketSpec::new(2.0, 15.0)),
        ("amazon", "getReportDocument") => Some(BucketSpec::new(0.0167, 15.0)),
        ("stockx", _) => Some(BucketSpec::per_hour(100.0)),
        ("alias", _) => Some(BucketSpec::per_hour(200.0)),
        // eBay's Sell Fulfillment API allows 100,000 calls a day per application; other
        // eBay calls fall back to seed 002's budget of 150 an hour.
        ("ebay", "getOrders") => Some(BucketSpec::per_day(100_000.0)),
        ("ebay", _) => Some(BucketSpec::per_hour(150.0)),
        ("keepa", _) => Some(BucketSpec::keepa_per_minute(20.0)),
        _ => None,
    }
}

/// Why a request was not granted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    /// Refused at once: the bucket can never hold that many tokens.
    #[error("cost {cost} exceeds the burst {burst} of {key}")]
    CostExceedsBurst {
        key: BucketKey,
        cost: f64,
        burst: f64,
    },
    /// The deadline passed while waiting for `key` (the bucket that was short).
    #[error("deadline exceeded waiting for {key} after {}", humantime::format_duration(*waited))]
    DeadlineExceeded { key: BucketKey, waited: Duration },
    /// A cooldown runs for `scope`; nothing was called.
    #[error("{scope} is cooling down ({reason}) until {until_utc}")]
    CoolingDown {
        scope: String,
        reason: String,
        until_utc: DateTime<Utc>,
    },
    /// The quota backend (Redis) or the cooldown store cannot be reached.
    #[error("quota backend unavailable: {0}")]
    Unavailable(String),
    /// The TokenManager is not running.
    #[error("the token manager stopped")]
    Stopped,
    /// No spec configured and no default for this key.
    #[error("no bucket spec for {key}; configure one")]
    UnknownBucket { key: BucketKey },
    /// The cost is negative or not a number.
    #[error("invalid cost {0}")]
    InvalidCost(f64),
}

/// `CoolingDown` for a cooldown.
pub(crate) fn cooling_down(cooldown: &Cooldown) -> QuotaError {
    QuotaError::CoolingDown {
        scope: cooldown.scope.clone(),
        reason: cooldown.reason.clone(),
        until_utc: DateTime::<Utc>::from_timestamp(cooldown.until_at, 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    }
}

/// What a provider response said about its quota.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// `x-amzn-RateLimit-Limit`: the bucket's real rate (requests per second).
    RateLimitHeader(f64),
    /// Keepa's `tokensLeft` (may be negative), `refillIn` (ms), `refillRate` (per minute).
    Keepa {
        tokens_left: i64,
        refill_in_ms: u64,
        refill_rate_per_min: f64,
    },
    /// A 429; `Retry-After` when the provider sent one.
    Throttled { retry_after: Option<Duration> },
}

/// Permission to make one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub keys: Vec<BucketKey>,
    pub cost: f64,
    pub priority: Priority,
    /// Time spent queued (zero when granted on arrival).
    pub waited: Duration,
    /// When the actor granted it (on its clock).
    pub granted_at: Instant,
}

/// Counters for tests and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaStats {
    pub grants: u64,
    /// Scheduled self-messages handled (stale ones are not counted).
    pub wakeups: u64,
    /// Requests waiting now.
    pub queued: usize,
    pub deadline_exceeded: u64,
    pub cooling_down: u64,
    /// Self-messages scheduled so far (at most one is outstanding at any time).
    pub timers_scheduled: u64,
}

/// A bucket as the manager sees it now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketView {
    pub rate: f64,
    pub burst: f64,
    pub tokens: f64,
    pub reserve_share: f64,
}

/// Where bucket state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaBackend {
    /// In the actor: one daemon.
    InProcess,
    /// In Redis: several daemons share one quota. `prefix` is normally [`DEFAULT_PREFIX`].
    Redis { url: String, prefix: String },
}

/// The time the manager runs on.
#[derive(Clone, Default)]
pub enum Clock {
    /// Tokio time (and `send_after` timers); wall time from the system.
    #[default]
    Tokio,
    /// Time moves only when a test says so; see [`ManualClock`].
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> Instant {
        match self {
            Clock::Tokio => Instant::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }

    pub fn wall_now(&self) -> DateTime<Utc> {
        match self {
            Clock::Tokio => Utc::now(),
            Clock::Manual(clock) => clock.wall_now(),
        }
    }

    fn schedule(&self, actor: &ActorRef<QuotaMsg>, after: Duration, generation: u64) -> Timer {
        match self {
            Clock::Tokio => {
                Timer::Tokio(actor.send_after(after, move || QuotaMsg::Wake { generation }))
            }
            Clock::Manual(clock) => {
                Timer::Manual(clock.clone(), clock.add(actor, after, generation))
            }
        }
    }
}

/// A clock for tests: [`ManualClock::advance`] moves time and delivers the wake-ups that
/// fell due, so wake-ups can be counted exactly (the crate's tokio has no `test-util`,
/// so `start_paused` is not available).
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

struct ManualInner {
    origin: Instant,
    wall_origin: DateTime<Utc>,
    offset: Duration,
    next_id: u64,
    timers: Vec<ManualTimer>,
}

struct ManualTimer {
    id: u64,
    at: Duration,
    generation: u64,
    actor: ActorRef<QuotaMsg>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                origin: Instant::now(),
                wall_origin: Utc::now(),
                offset: Duration::ZERO,
                next_id: 0,
                timers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> Instant {
        let inner = self.lock();
        inner.origin + inner.offset
    }

    pub fn wall_now(&self) -> DateTime<Utc> {
        let inner = self.lock();
        inner.wall_origin
            + chrono::Duration::from_std(inner.offset).unwrap_or(chrono::Duration::zero())
    }

    /// How far time moved since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().offset
    }

    /// Timers scheduled and not yet delivered or cancelled.
    pub fn pending_timers(&self) -> usize {
        self.lock().timers.len()
    }

    /// Moves time forward by `by` and delivers every timer due by then, earliest first.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut inner = self.lock();
            inner.offset += by;
            let offset = inner.offset;
            let (mut due, keep): (Vec<ManualTimer>, Vec<ManualTimer>) =
                inner.timers.drain(..).partition(|timer| timer.at <= offset);
            inner.timers = keep;
            due.sort_by_key(|timer| (timer.at, timer.id));
            due
        };
        for timer in due {
            let _ = timer.actor.send_message(QuotaMsg::Wake {
                generation: timer.generation,
            });
        }
    }

    fn add(&self, actor: &ActorRef<QuotaMsg>, after: Duration, generation: u64) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let at = inner.offset.saturating_add(after);
        inner.timers.push(ManualTimer {
            id,
            at,
            generation,
            actor: actor.clone(),
        });
        id
    }

    fn cancel(&self, id: u64) {
        self.lock().timers.retain(|timer| timer.id != id);
    }
}

enum Timer {
    Tokio(JoinHandle<Result<(), ractor::MessagingErr<QuotaMsg>>>),
    Manual(ManualClock, u64),
}

impl Timer {
    fn cancel(self) {
        match self {
            Timer::Tokio(handle) => handle.abort(),
            Timer::Manual(clock, id) => clock.cancel(id),
        }
    }
}

/// Settings of a TokenManager.
#[derive(Clone)]
pub struct QuotaConfig {
    pub backend: QuotaBackend,
    /// Overrides of [`default_spec`], by (provider, operation); operation `*` matches any.
    pub specs: HashMap<(String, String), BucketSpec>,
    /// The share of each bucket's burst kept for manual work.
    pub reserve_share: f64,
    /// Cooldown after a 429 per provider (default: amazon 30 min).
    pub throttle_cooldowns: HashMap<String, Duration>,
    /// Cooldown after a 429 for providers not in `throttle_cooldowns`.
    pub default_throttle_cooldown: Duration,
    /// Where cooldowns persist. `None`: in memory for `InProcess`, the same Redis for
    /// `Redis`.
    pub cooldown_store: Option<Arc<dyn CooldownStore>>,
    /// How long a "no cooldown" answer of the store is trusted.
    pub cooldown_recheck: Duration,
    /// The share of every rate left unused, in `[0, 0.5)`: a configured or default spec
    /// and a rate learned from `x-amzn-RateLimit-Limit` are used as `rate * (1 - margin)`.
    /// Keepa balances are taken as reported. Default 0 here; the daemon sets
    /// [`DEFAULT_RATE_MARGIN`] unless configured.
    pub rate_margin: f64,
    pub clock: Clock,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig::new(QuotaBackend::InProcess)
    }
}

impl QuotaConfig {
    pub fn new(backend: QuotaBackend) -> QuotaConfig {
        QuotaConfig {
            backend,
            specs: HashMap::new(),
            reserve_share: DEFAULT_RESERVE_SHARE,
            throttle_cooldowns: HashMap::from([("amazon".to_string(), AMAZON_THROTTLE_COOLDOWN)]),
            default_throttle_cooldown: DEFAULT_THROTTLE_COOLDOWN,
            cooldown_store: None,
            cooldown_recheck: DEFAULT_COOLDOWN_RECHECK,
            rate_margin: 0.0,
            clock: Clock::Tokio,
        }
    }

    /// Leaves `margin` of every rate unused (see [`QuotaConfig::rate_margin`]).
    pub fn with_rate_margin(mut self, margin: f64) -> QuotaConfig {
        self.rate_margin = if margin.is_finite() {
            margin.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// `rate` with the margin taken off.
    pub fn margined(&self, rate: f64) -> f64 {
        rate * (1.0 - self.rate_margin)
    }

    /// [`QuotaConfig::spec_for`] with the margin taken off the rate: what a new bucket
    /// is created with.
    pub fn effective_spec(&self, key: &BucketKey) -> Option<BucketSpec> {
        self.spec_for(key)
            .map(|spec| BucketSpec::new(self.margined(spec.rate), spec.burst))
    }

    /// Sets the spec of (provider, operation); `*` as operation covers the provider.
    pub fn with_spec(mut self, provider: &str, operation: &str, spec: BucketSpec) -> QuotaConfig {
        self.specs
            .insert((provider.to_string(), operation.to_string()), spec);
        self
    }

    /// Persists cooldowns in the ledger (SQLite).
    pub fn with_ledger(mut self, ledger: Arc<dyn LedgerStore>) -> QuotaConfig {
        self.cooldown_store = Some(Arc::new(ledger));
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> QuotaConfig {
        self.clock = clock;
        self
    }

    /// The spec for `key`: configured, configured for the provider (`*`), or default.
    pub fn spec_for(&self, key: &BucketKey) -> Option<BucketSpec> {
        self.specs
            .get(&(key.provider.clone(), key.operation.clone()))
            .or_else(|| self.specs.get(&(key.provider.clone(), "*".to_string())))
            .copied()
            .or_else(|| default_spec(&key.provider, &key.operation))
    }

    pub fn throttle_cooldown(&self, provider: &str) -> Duration {
        self.throttle_cooldowns
            .get(provider)
            .copied()
            .unwrap_or(self.default_throttle_cooldown)
    }
}

/// The TokenManager's messages. Use [`QuotaHandle`] rather than sending them yourself.
pub enum QuotaMsg {
    Acquire {
        keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Instant,
        reply: RpcReplyPort<Result<Grant, QuotaError>>,
    },
    Observe {
        key: BucketKey,
        observation: Observation,
    },
    /// The one scheduled self-message; stale generations are ignored.
    Wake {
        generation: u64,
    },
    Stats(RpcReplyPort<QuotaStats>),
    Bucket {
        key: BucketKey,
        reply: RpcReplyPort<Result<Option<BucketView>, QuotaError>>,
    },
    /// Every bucket this manager has used, with its view now (the budgets page).
    Buckets(RpcReplyPort<Result<Vec<(BucketKey, BucketView)>, QuotaError>>),
    GetCooldown {
        scope: String,
        reply: RpcReplyPort<Option<Cooldown>>,
    },
    StartCooldown {
        scope: String,
        reason: CooldownReason,
        until: DateTime<Utc>,
        detail: Option<String>,
        reply: RpcReplyPort<Result<Cooldown, QuotaError>>,
    },
    ClearCooldown {
        scope: String,
        reply: RpcReplyPort<bool>,
    },
    /// Drops what memory says about `scope`: the next question asks the store (another
    /// process cleared it there).
    Forget {
        scope: String,
    },
}

/// The actor. Spawn with [`TokenManager::spawn`]; talk to it through [`QuotaHandle`].
pub struct TokenManager;

impl TokenManager {
    /// Starts an unsupervised TokenManager. No I/O happens here (Redis is reached at
    /// first use), so it starts while Redis is down.
    pub async fn spawn(
        config: QuotaConfig,
    ) -> Result<(ActorRef<QuotaMsg>, JoinHandle<()>), QuotaError> {
        Actor::spawn(None, TokenManager, config)
            .await
            .map_err(|err| {
                QuotaError::Unavailable(format!("cannot start the token manager: {err}"))
            })
    }

    /// Starts a TokenManager supervised by `supervisor`.
    pub async fn spawn_linked(
        config: QuotaConfig,
        supervisor: ActorCell,
    ) -> Result<(ActorRef<QuotaMsg>, JoinHandle<()>), QuotaError> {
        Actor::spawn_linked(None, TokenManager, config, supervisor)
            .await
            .map_err(|err| {
                QuotaError::Unavailable(format!("cannot start the token manager: {err}"))
            })
    }
}

/// Buckets in the actor; the [`Payer`] of the in-process mode.
pub(crate) struct LocalBuckets {
    buckets: HashMap<BucketKey, Bucket>,
    reserve_share: f64,
}

impl LocalBuckets {
    pub(crate) fn new(reserve_share: f64) -> LocalBuckets {
        LocalBuckets {
            buckets: HashMap::new(),
            reserve_share,
        }
    }

    /// The bucket of `key`, made full from `spec` at `now` if new.
    pub(crate) fn ensure(
        &mut self,
        key: &BucketKey,
        spec: BucketSpec,
        now: Duration,
    ) -> &mut Bucket {
        let share = self.reserve_share;
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(spec.rate, spec.burst, now).with_reserve_share(share))
    }

    pub(crate) fn get(&self, key: &BucketKey) -> Option<&Bucket> {
        self.buckets.get(key)
    }
}

impl Payer for LocalBuckets {
    async fn try_pay(
        &mut self,
        keys: &[BucketKey],
        cost: f64,
        reserved: bool,
        now: Duration,
    ) -> Result<Result<(), (Duration, usize)>, QuotaError> {
        let mut worst = (Duration::ZERO, 0);
        for (index, key) in keys.iter().enumerate() {
            let bucket = self
                .buckets
                .get(key)
                .ok_or_else(|| QuotaError::UnknownBucket { key: key.clone() })?;
            let wait = bucket.wait(cost, reserved, now);
            if wait > worst.0 {
                worst = (wait, index);
            }
        }
        if worst.0 > Duration::ZERO {
            return Ok(Err(worst));
        }
        for key in keys {
            if let Some(bucket) = self.buckets.get_mut(key) {
                bucket.take(cost, now);
            }
        }
        Ok(Ok(()))
    }
}

enum Buckets {
    Local(LocalBuckets),
    Redis(RedisBuckets),
}

/// A cached answer about one cooldown scope.
struct Cached {
    cooldown: Option<Cooldown>,
    checked_at: Instant,
    /// Started here but the store refused it: memory is the only record.
    unsaved: bool,
}

/// How many store answers are cached between sweeps of the stale ones.
const COOLDOWN_CACHE_SWEEP_EVERY: usize = 1024;

/// The actor's state.
pub struct ManagerState {
    clock: Clock,
    origin: Instant,
    config: QuotaConfig,
    queue: Queue,
    replies: HashMap<u64, RpcReplyPort<Result<Grant, QuotaError>>>,
    buckets: Buckets,
    store: Option<Arc<dyn CooldownStore>>,
    cooldowns: HashMap<String, Cached>,
    /// Store answers cached since the last sweep of stale "no cooldown" entries: with
    /// 10,000 accounts the cache would otherwise keep ~4 such answers per account for
    /// the daemon's life (issue 3: RSS).
    cached_since_sweep: usize,
    timer: Option<(Duration, u64, Timer)>,
    generation: u64,
    stats: QuotaStats,
}

impl ManagerState {
    fn elapsed(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn instant(&self, at: Duration) -> Instant {
        self.origin + at
    }

    fn spec_for(&self, key: &BucketKey) -> Option<BucketSpec> {
        match &self.buckets {
            Buckets::Local(local) => local
                .get(key)
                .map(|bucket| BucketSpec::new(bucket.rate(), bucket.burst()))
                .or_else(|| self.config.effective_spec(key)),
            Buckets::Redis(remote) => remote.spec(key).or_else(|| self.config.effective_spec(key)),
        }
    }

    fn ensure(&mut self, key: &BucketKey, spec: BucketSpec) {
        let now = self.elapsed();
        match &mut self.buckets {
            Buckets::Local(local) => {
                local.ensure(key, spec, now);
            }
            Buckets::Redis(remote) => remote.ensure(key, spec),
        }
    }

    /// What memory says about `scope` at `wall`, when memory decides: `Some(answer)`.
    /// Memory decides when there is no store, for a cooldown the store could not save,
    /// and for `cooldown_recheck` after the store was last asked; otherwise `None`.
    fn remembered(&self, scope: &str, wall: i64) -> Option<Option<Cooldown>> {
        let active = |cached: &Cached| {
            cached
                .cooldown
                .clone()
                .filter(|cooldown| cooldown.until_at > wall)
        };
        match self.cooldowns.get(scope) {
            None if self.store.is_none() => Some(None),
            None => None,
            Some(cached)
                if self.store.is_none()
                    || cached.unsaved
                    || self
                        .clock
                        .now()
                        .saturating_duration_since(cached.checked_at)
                        < self.config.cooldown_recheck =>
            {
                Some(active(cached))
            }
            Some(_) => None,
        }
    }

    /// The running cooldown of `scope`: memory, or the store (then remembered).
    async fn lookup(&mut self, scope: &str, wall: i64) -> Option<Cooldown> {
        if let Some(answer) = self.remembered(scope, wall) {
            return answer;
        }
        let store = self.store.as_ref()?;
        let found = match store.active(scope, wall).await {
            Ok(found) => found,
            Err(err) => {
                // Fail open: a store hiccup must not stop every call; cooldowns this
                // process could not save are kept in memory (`unsaved`).
                warn!(scope = %scope, error = %err, "cooldown store failed");
                None
            }
        };
        self.cooldowns.insert(
            scope.to_string(),
            Cached {
                cooldown: found.clone(),
                checked_at: self.clock.now(),
                unsaved: false,
            },
        );
        self.cached_since_sweep += 1;
        if self.cached_since_sweep >= COOLDOWN_CACHE_SWEEP_EVERY {
            self.sweep_cooldown_cache(wall);
        }
        found
    }

    /// Drops cached answers that [`Self::remembered`] would no longer use: no running
    /// cooldown, saved, and older than `cooldown_recheck`. Running and unsaved cooldowns
    /// stay.
    fn sweep_cooldown_cache(&mut self, wall: i64) {
        let now = self.clock.now();
        let recheck = self.config.cooldown_recheck;
        self.cooldowns.retain(|_, cached| {
            let running = cached
                .cooldown
                .as_ref()
                .is_some_and(|cooldown| cooldown.until_at > wall);
            running || cached.unsaved || now.saturating_duration_since(cached.checked_at) < recheck
        });
        self.cooldowns.shrink_to_fit();
        self.cached_since_sweep = 0;
    }

    /// A running cooldown that stops any of `keys`. In Redis mode the acquire script
    /// checks the shared cooldown keys itself (so a cooldown cleared by another daemon
    /// ends here too), and this answers `None`.
    async fn cooling(&mut self, keys: &[BucketKey]) -> Option<Cooldown> {
        if matches!(self.buckets, Buckets::Redis(_)) {
            return None;
        }
        let wall = self.clock.wall_now().timestamp();
        for key in keys {
            for scope in key.cooldown_scopes() {
                if let Some(cooldown) = self.lookup(&scope, wall).await {
                    return Some(cooldown);
                }
            }
        }
        None
    }

    /// Answers every queued request stopped by `cooldown`.
    fn fail_cooling(&mut self, cooldown: &Cooldown) {
        let scope = cooldown.scope.clone();
        let stopped = self.queue.remove_where(|pending| {
            pending
                .keys
                .iter()
                .any(|key| key.cooldown_scopes().contains(&scope))
        });
        for pending in stopped {
            self.stats.cooling_down += 1;
            if let Some(reply) = self.replies.remove(&pending.id) {
                let _ = reply.send(Err(cooling_down(cooldown)));
            }
        }
    }

    async fn start_cooldown(
        &mut self,
        scope: String,
        reason: CooldownReason,
        until: DateTime<Utc>,
        detail: Option<String>,
    ) -> Result<Cooldown, QuotaError> {
        let wall = self.clock.wall_now().timestamp();
        let mut cooldown = Cooldown {
            scope: scope.clone(),
            reason: reason.as_str().to_string(),
            started_at: wall,
            until_at: until.timestamp().max(wall),
            detail,
        };
        // A running cooldown that ends later keeps its end (as the stores do).
        if let Some(Cached {
            cooldown: Some(running),
            ..
        }) = self.cooldowns.get(&scope)
        {
            if running.until_at > cooldown.until_at {
                cooldown.until_at = running.until_at;
            }
        }
        let stored = match &self.store {
            Some(store) => store.set(&cooldown).await,
            None => Ok(()),
        };
        self.cooldowns.insert(
            scope.clone(),
            Cached {
                cooldown: Some(cooldown.clone()),
                checked_at: self.clock.now(),
                unsaved: stored.is_err(),
            },
        );
        info!(scope = %scope, reason = %cooldown.reason, until = %crate::domain::format_ts(cooldown.until_at), "cooldown started");
        self.fail_cooling(&cooldown);
        match stored {
            Ok(()) => Ok(cooldown),
            Err(err) => {
                warn!(scope = %scope, error = %err, "cooldown store failed");
                Err(err)
            }
        }
    }

    async fn get_cooldown(&mut self, scope: &str) -> Option<Cooldown> {
        let wall = self.clock.wall_now().timestamp();
        self.lookup(scope, wall).await
    }

    async fn clear_cooldown(&mut self, scope: &str) -> bool {
        let wall = self.clock.wall_now().timestamp();
        let in_memory = matches!(
            self.cooldowns.remove(scope),
            Some(Cached { cooldown: Some(cooldown), .. }) if cooldown.until_at > wall
        );
        let stored = match &self.store {
            Some(store) => match store.clear(scope).await {
                Ok(cleared) => cleared,
                Err(err) => {
                    warn!(scope = %scope, error = %err, "cooldown store failed");
                    false
                }
            },
            None => false,
        };
        let cleared = in_memory || stored;
        if cleared {
            info!(scope = %scope, "cooldown cleared");
        }
        cleared
    }

    async fn observe(&mut self, key: BucketKey, observation: Observation) {
        let observation = match observation {
            Observation::RateLimitHeader(rate) => {
                Observation::RateLimitHeader(self.config.margined(rate))
            }
            other => other,
        };
        let Some(spec) = self.spec_for(&key) else {
            debug!(key = %key, "observation for a bucket without a spec ignored");
            return;
        };
        self.ensure(&key, spec);
        let now = self.elapsed();
        let remote = match (&observation, &mut self.buckets) {
            (Observation::RateLimitHeader(rate), Buckets::Local(local)) => {
                let bucket = local.ensure(&key, spec, now);
                let previous = bucket.rate();
                if bucket.set_rate(*rate, now) && (previous - rate).abs() > f64::EPSILON {
                    debug!(key = %key, rate, previous, "rate learned from header");
                }
                None
            }
            (
                Observation::Keepa {
                    tokens_left,
                    refill_in_ms,
                    refill_rate_per_min,
                },
                Buckets::Local(local),
            ) => {
                local.ensure(&key, spec, now).resync_keepa(
                    *tokens_left,
                    *refill_in_ms,
                    *refill_rate_per_min,
                    now,
                );
                None
            }
            (Observation::Throttled { .. }, Buckets::Local(local)) => {
                local.ensure(&key, spec, now).drain(now);
                None
            }
            (Observation::RateLimitHeader(rate), Buckets::Redis(_)) => {
                (rate.is_finite() && *rate > 0.0).then_some(RemoteObservation::Rate(*rate))
            }
            (
                Observation::Keepa {
                    tokens_left,
                    refill_in_ms,
                    refill_rate_per_min,
                },
                Buckets::Redis(remote),
            ) => {
                if refill_rate_per_min.is_finite() && *refill_rate_per_min > 0.0 {
                    remote.set_burst(&key, refill_rate_per_min * 60.0);
                }
                Some(RemoteObservation::Keepa {
                    tokens_left: *tokens_left,
                    refill_in_ms: *refill_in_ms,
                    refill_rate_per_min: *refill_rate_per_min,
                })
            }
            (Observation::Throttled { .. }, Buckets::Redis(_)) => Some(RemoteObservation::Drain),
        };
        if let (Some(remote), Buckets::Redis(buckets)) = (remote, &mut self.buckets) {
            // A failure was logged by the Redis layer; the next 2xx observes again.
            let _ = buckets.observe(&key, remote).await;
        }
        if let Observation::Keepa {
            tokens_left,
            refill_in_ms,
            refill_rate_per_min,
        } = observation
        {
            info!(key = %key, tokens_left, refill_in_ms, refill_rate_per_min, "keepa balance resynced");
        }
        if let Observation::Throttled { retry_after } = observation {
            let length = self
                .config
                .throttle_cooldown(&key.provider)
                .max(retry_after.unwrap_or_default());
            let until = self.clock.wall_now()
                + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX);
            let scope = key.account_scope();
            warn!(key = %key, scope = %scope, until = %until.to_rfc3339(), "provider throttled; cooling down");
            let detail = Some(format!("throttled (429) on {key}"));
            // A store failure was logged; the cooldown holds in memory regardless.
            let _ = self
                .start_cooldown(scope, CooldownReason::Quota, until, detail)
                .await;
        }
        self.queue.invalidate_waits();
    }

    async fn acquire(
        &mut self,
        myself: &ActorRef<QuotaMsg>,
        mut keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Instant,
        reply: RpcReplyPort<Result<Grant, QuotaError>>,
    ) {
        keys.sort();
        keys.dedup();
        if let Err(err) = self.check(&keys, cost).await {
            if matches!(err, QuotaError::CoolingDown { .. }) {
                self.stats.cooling_down += 1;
            }
            let _ = reply.send(Err(err));
            return;
        }
        let now = self.elapsed();
        let deadline = deadline.saturating_duration_since(self.origin);
        let first = keys.first().cloned();
        let id = self.queue.push(keys, cost, priority, deadline, now);
        self.replies.insert(id, reply);
        self.pump(myself).await;
        if self.replies.contains_key(&id) {
            let wake_ms = self
                .timer
                .as_ref()
                .map_or(0, |(at, _, _)| at.saturating_sub(now).as_millis() as u64);
            debug!(key = %first.map(|key| key.to_string()).unwrap_or_default(), priority = %priority, cost, wake_ms, queued = self.queue.len(), "request queued");
        }
    }

    /// Everything refused at once: bad cost, unknown bucket, cost above burst, cooldown.
    async fn check(&mut self, keys: &[BucketKey], cost: f64) -> Result<(), QuotaError> {
        if !(cost.is_finite() && cost >= 0.0) {
            return Err(QuotaError::InvalidCost(cost));
        }
        for key in keys {
            let spec = self
                .spec_for(key)
                .ok_or_else(|| QuotaError::UnknownBucket { key: key.clone() })?;
            if cost > spec.burst {
                return Err(QuotaError::CostExceedsBurst {
                    key: key.clone(),
                    cost,
                    burst: spec.burst,
                });
            }
            self.ensure(key, spec);
        }
        match self.cooling(keys).await {
            Some(cooldown) => Err(cooling_down(&cooldown)),
            None => Ok(()),
        }
    }

    /// Serves what can be served now and keeps exactly one wake-up scheduled.
    async fn pump(&mut self, myself: &ActorRef<QuotaMsg>) {
        let replies = &self.replies;
        for gone in self.queue.remove_where(|pending| {
            replies
                .get(&pending.id)
                .is_none_or(|reply| reply.is_closed())
        }) {
            self.replies.remove(&gone.id);
        }
        let now = self.elapsed();
        let served = match &mut self.buckets {
            Buckets::Local(local) => self.queue.serve(local, now).await,
            Buckets::Redis(remote) => self.queue.serve(remote, now).await,
        };
        for (id, pending, outcome) in served.outcomes {
            let Some(reply) = self.replies.remove(&id) else {
                continue;
            };
            let answer = match outcome {
                Outcome::Granted { waited } => {
                    self.stats.grants += 1;
                    Ok(Grant {
                        keys: pending.keys,
                        cost: pending.cost,
                        priority: pending.priority,
                        waited,
                        granted_at: self.instant(now),
                    })
                }
                Outcome::Expired { key, waited } => {
                    self.stats.deadline_exceeded += 1;
                    debug!(key = %key, waited_ms = waited.as_millis() as u64, "deadline exceeded");
                    Err(QuotaError::DeadlineExceeded { key, waited })
                }
                Outcome::Failed(err) => {
                    if matches!(err, QuotaError::CoolingDown { .. }) {
                        self.stats.cooling_down += 1;
                    }
                    Err(err)
                }
            };
            let _ = reply.send(answer);
        }
        self.stats.queued = self.queue.len();
        self.reschedule(myself, served.next_wake, now);
    }

    fn reschedule(&mut self, myself: &ActorRef<QuotaMsg>, next: Option<Duration>, now: Duration) {
        match (next, &self.timer) {
            (Some(at), Some((scheduled, _, _))) if *scheduled == at => {}
            (None, None) => {}
            (next, _) => {
                if let Some((_, _, timer)) = self.timer.take() {
                    timer.cancel();
                }
                if let Some(at) = next {
                    self.generation += 1;
                    let after = at.saturating_sub(now).max(queue::MIN_WAIT);
                    let timer = self.clock.schedule(myself, after, self.generation);
                    self.stats.timers_scheduled += 1;
                    self.timer = Some((at, self.generation, timer));
                }
            }
        }
    }
}

impl Actor for TokenManager {
    type Msg = QuotaMsg;
    type State = ManagerState;
    type Arguments = QuotaConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<QuotaMsg>,
        config: QuotaConfig,
    ) -> Result<ManagerState, ActorProcessingErr> {
        // Trivial on purpose (panics here never reach a supervisor): no I/O.
        let (buckets, default_store): (Buckets, Option<Arc<dyn CooldownStore>>) =
            match &config.backend {
                QuotaBackend::InProcess => (
                    Buckets::Local(LocalBuckets::new(config.reserve_share)),
                    None,
                ),
                QuotaBackend::Redis { url, prefix } => {
                    let link = Arc::new(RedisLink::new(url, prefix)?);
                    (
                        Buckets::Redis(RedisBuckets::new(Arc::clone(&link), config.reserve_share)),
                        Some(Arc::new(RedisCooldowns::from_link(link))),
                    )
                }
            };
        let store = config.cooldown_store.clone().or(default_store);
        let clock = config.clock.clone();
        Ok(ManagerState {
            origin: clock.now(),
            clock,
            config,
            queue: Queue::new(),
            replies: HashMap::new(),
            buckets,
            store,
            cooldowns: HashMap::new(),
            cached_since_sweep: 0,
            timer: None,
            generation: 0,
            stats: QuotaStats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<QuotaMsg>,
        message: QuotaMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            QuotaMsg::Acquire {
                keys,
                cost,
                priority,
                deadline,
                reply,
            } => {
                state
                    .acquire(&myself, keys, cost, priority, deadline, reply)
                    .await
            }
            QuotaMsg::Observe { key, observation } => {
                state.observe(key, observation).await;
                state.pump(&myself).await;
            }
            QuotaMsg::Wake { generation } => {
                let current =
                    matches!(&state.timer, Some((_, scheduled, _)) if *scheduled == generation);
                if current {
                    state.timer = None;
                    state.stats.wakeups += 1;
                    state.pump(&myself).await;
                }
            }
            QuotaMsg::Stats(reply) => {
                state.stats.queued = state.queue.len();
                let _ = reply.send(state.stats);
            }
            QuotaMsg::Bucket { key, reply } => {
                let now = state.elapsed();
                let view = match &mut state.buckets {
                    Buckets::Local(local) => Ok(local.get(&key).map(|bucket| BucketView {
                        rate: bucket.rate(),
                        burst: bucket.burst(),
                        tokens: bucket.level(now),
                        reserve_share: bucket.reserve_share(),
                    })),
                    Buckets::Redis(remote) => remote.view(&key).await,
                };
                let _ = reply.send(view);
            }
            QuotaMsg::Buckets(reply) => {
                let now = state.elapsed();
                let views = match &mut state.buckets {
                    Buckets::Local(local) => Ok(local
                        .buckets
                        .iter()
                        .map(|(key, bucket)| {
                            let view = BucketView {
                                rate: bucket.rate(),
                                burst: bucket.burst(),
                                tokens: bucket.level(now),
                                reserve_share: bucket.reserve_share(),
                            };
                            (key.clone(), view)
                        })
                        .collect()),
                    Buckets::Redis(remote) => {
                        let keys: Vec<BucketKey> = remote.known_keys();
                        let mut views = Vec::with_capacity(keys.len());
                        let mut failed = None;
                        for key in keys {
                            match remote.view(&key).await {
                                Ok(Some(view)) => views.push((key, view)),
                                Ok(None) => {}
                                Err(err) => {
                                    failed = Some(err);
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(err) => Err(err),
                            None => Ok(views),
                        }
                    }
                };
                let _ = reply.send(views.map(|mut views| {
                    views.sort_by(|a, b| a.0.cmp(&b.0));
                    views
                }));
            }
            QuotaMsg::GetCooldown { scope, reply } => {
                let _ = reply.send(state.get_cooldown(&scope).await);
            }
            QuotaMsg::StartCooldown {
                scope,
                reason,
                until,
                detail,
                reply,
            } => {
                let result = state.start_cooldown(scope, reason, until, detail).await;
                let _ = reply.send(result);
                state.pump(&myself).await;
            }
            QuotaMsg::ClearCooldown { scope, reply } => {
                let _ = reply.send(state.clear_cooldown(&scope).await);
            }
            QuotaMsg::Forget { scope } => {
                // Unsaved cooldowns exist only in memory: forgetting them would end them.
                if state
                    .cooldowns
                    .get(&scope)
                    .is_some_and(|cached| !cached.unsaved)
                {
                    state.cooldowns.remove(&scope);
                    debug!(scope = %scope, "cooldown answer forgotten; the store is asked again");
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<QuotaMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, _, timer)) = state.timer.take() {
            timer.cancel();
        }
        for (_, reply) in state.replies.drain() {
            let _ = reply.send(Err(QuotaError::Stopped));
        }
        Ok(())
    }
}

/// A cheap, cloneable handle on a TokenManager.
#[derive(Clone)]
pub struct QuotaHandle {
    actor: ActorRef<QuotaMsg>,
}

impl QuotaHandle {
    pub fn new(actor: ActorRef<QuotaMsg>) -> QuotaHandle {
        QuotaHandle { actor }
    }

    pub fn actor(&self) -> &ActorRef<QuotaMsg> {
        &self.actor
    }

    /// Waits until every bucket in `keys` can pay `cost` (granted in priority order), or
    /// answers why not. The actor answers by `deadline` at the latest (a reply port it
    /// holds, never an unbounded `call!`); this await is bounded by the deadline too.
    pub async fn acquire(
        &self,
        keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Instant,
    ) -> Result<Grant, QuotaError> {
        let first = keys.first().cloned();
        let started = Instant::now();
        let (sender, receiver) = ractor::concurrency::oneshot();
        self.actor
            .send_message(QuotaMsg::Acquire {
                keys,
                cost,
                priority,
                deadline,
                reply: sender.into(),
            })
            .map_err(|_| QuotaError::Stopped)?;
        match tokio::time::timeout_at(deadline + REPLY_GRACE, receiver).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(QuotaError::Stopped),
            Err(_) => Err(QuotaError::DeadlineExceeded {
                key: first.unwrap_or_else(|| BucketKey::new("", "", "")),
                waited: started.elapsed(),
            }),
        }
    }

    /// Reports what a provider response said (fire and forget).
    pub fn observe(&self, key: BucketKey, observation: Observation) {
        if self
            .actor
            .send_message(QuotaMsg::Observe { key, observation })
            .is_err()
        {
            debug!("observation dropped: the token manager stopped");
        }
    }

    /// The running cooldown of `scope`, if any (memory, then the store).
    pub async fn cooldown(&self, scope: &str) -> Option<Cooldown> {
        let scope = scope.to_string();
        self.rpc(|reply| QuotaMsg::GetCooldown { scope, reply })
            .await
            .ok()
            .flatten()
    }

    /// Starts (or extends) a cooldown of `scope` until `until`; queued requests in the
    /// scope are answered `CoolingDown`. An `Err` means it could not be persisted (it
    /// still holds in this process).
    pub async fn start_cooldown(
        &self,
        scope: &str,
        reason: CooldownReason,
        until: DateTime<Utc>,
    ) -> Result<Cooldown, QuotaError> {
        self.start_cooldown_with_detail(scope, reason, until, None)
            .await
    }

    /// [`QuotaHandle::start_cooldown`] with a detail stored alongside.
    pub async fn start_cooldown_with_detail(
        &self,
        scope: &str,
        reason: CooldownReason,
        until: DateTime<Utc>,
        detail: Option<String>,
    ) -> Result<Cooldown, QuotaError> {
        let scope = scope.to_string();
        self.rpc(|reply| QuotaMsg::StartCooldown {
            scope,
            reason,
            until,
            detail,
            reply,
        })
        .await?
    }

    /// Forgets the cached answer about `scope` (fire and forget): the next question asks
    /// the store. For a cooldown another process cleared in the store.
    pub fn forget(&self, scope: &str) {
        let _ = self.actor.send_message(QuotaMsg::Forget {
            scope: scope.to_string(),
        });
    }

    /// Ends the cooldown of `scope`; true when one was running.
    pub async fn clear_cooldown(&self, scope: &str) -> bool {
        let scope = scope.to_string();
        self.rpc(|reply| QuotaMsg::ClearCooldown { scope, reply })
            .await
            .unwrap_or(false)
    }

    pub async fn stats(&self) -> Result<QuotaStats, QuotaError> {
        self.rpc(QuotaMsg::Stats).await
    }

    /// The bucket of `key` as the manager sees it (`None` before its first use).
    pub async fn bucket(&self, key: BucketKey) -> Result<Option<BucketView>, QuotaError> {
        self.rpc(|reply| QuotaMsg::Bucket { key, reply }).await?
    }

    /// Every bucket the manager has used so far, with rate, burst and tokens now.
    pub async fn buckets(&self) -> Result<Vec<(BucketKey, BucketView)>, QuotaError> {
        self.rpc(QuotaMsg::Buckets).await?
    }

    /// Stops the actor; waiting requests are answered `Stopped`.
    pub fn stop(&self) {
        self.actor.stop(Some("stopped by its handle".to_string()));
    }

    async fn rpc<T, F>(&self, message: F) -> Result<T, QuotaError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> QuotaMsg,
    {
        let (sender, receiver) = ractor::concurrency::oneshot();
        self.actor
            .send_message(message(sender.into()))
            .map_err(|_| QuotaError::Stopped)?;
        match tokio::time::timeout(RPC_TIMEOUT, receiver).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(QuotaError::Stopped),
            Err(_) => Err(QuotaError::Unavailable(format!(
                "the token manager did not answer within {}",
                humantime::format_duration(RPC_TIMEOUT)
            ))),
        }
    }
}

/// How one provider client's calls are paced: the TokenManager, the provider, and the
/// scope of the client's buckets (for SP-API the selling partner, so accounts of one
/// seller share its buckets and cooldowns). Attached to a client (see
/// [`crate::provider::amazon::SpApiClient::with_pacer`]); the sync runner asks it before
/// every call and tells it what every response said.
#[derive(Clone)]
pub struct Pacer {
    pub handle: QuotaHandle,
    pub provider: String,
    pub scope: String,
    /// The TokenManager keeps cooldowns outside the ledger (Redis), or under a scope
    /// other than the account's: a run stopped by one writes a copy under the account
    /// scope in the ledger, so `marketsync status` shows it.
    pub mirror_to_ledger: bool,
    /// Changes when a cooldown ended early (`marketsync cooldowns clear`): runners
    /// waiting for a cooldown's end look again.
    pub cleared: Option<tokio::sync::watch::Receiver<u64>>,
    /// The application-level bucket: `{provider}_application` keys in this scope for
    /// the listed operations (those with a configured limit). Requests pay it and the
    /// seller's bucket together, so the stricter applies.
    pub application: Option<(String, Vec<String>)>,
}

impl Pacer {
    pub fn new(handle: QuotaHandle, provider: &str, scope: &str) -> Pacer {
        Pacer {
            handle,
            provider: provider.to_string(),
            scope: scope.to_string(),
            mirror_to_ledger: false,
            cleared: None,
            application: None,
        }
    }

    /// Every bucket a call of `operation` pays: the seller's, and the application's
    /// when one is configured for that operation.
    pub fn keys(&self, operation: &str) -> Vec<BucketKey> {
        let mut keys = vec![self.key(operation)];
        if let Some((scope, operations)) = &self.application {
            if operations.iter().any(|configured| configured == operation) {
                keys.push(BucketKey::new(
                    format!("{}_application", self.provider),
                    operation,
                    scope,
                ));
            }
        }
        keys
    }

    /// The bucket of `operation` in this pacer's scope.
    pub fn key(&self, operation: &str) -> BucketKey {
        BucketKey::new(&self.provider, operation, &self.scope)
    }

    /// The cooldown scopes that stop calls for `account`: the provider, the bucket
    /// scope (`{provider}:{seller}`) and the account's own (`{provider}:{account}`).
    pub fn cooldown_scopes(&self, account: &str) -> Vec<String> {
        let mut scopes = vec![
            self.provider.clone(),
            crate::store::account_scope(&self.provider, &self.scope),
        ];
        let own = crate::store::account_scope(&self.provider, account);
        if !scopes.contains(&own) {
            scopes.push(own);
        }
        scopes
    }

    /// The first running cooldown among [`Pacer::cooldown_scopes`], as the TokenManager
    /// sees it (memory, then its store).
    pub async fn cooldown(&self, account: &str) -> Option<Cooldown> {
        for scope in self.cooldown_scopes(account) {
            if let Some(cooldown) = self.handle.cooldown(&scope).await {
                return Some(cooldown);
            }
        }
        None
    }
}

/// Grants per second a TokenManager sustains when the budget is not the limit (a huge
/// rate and burst): `n` grants by 32 concurrent callers. For `marketsync bench quota`.
pub async fn bench_grants(backend: QuotaBackend, n: usize) -> Result<f64, QuotaError> {
    const CALLERS: usize = 32;
    let scope = format!(
        "bench-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let config = QuotaConfig::new(backend).with_spec("bench", "grant", BucketSpec::new(1e12, 1e12));
    let (actor, join) = TokenManager::spawn(config).await?;
    let handle = QuotaHandle::new(actor);
    let key = BucketKey::new("bench", "grant", scope);
    // One warm-up grant (connects to Redis, creates the bucket).
    let deadline = Instant::now() + Duration::from_secs(30);
    let warm = handle
        .acquire(vec![key.clone()], 1.0, Priority::Background, deadline)
        .await;
    if let Err(err) = warm {
        handle.stop();
        let _ = join.await;
        return Err(err);
    }
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(CALLERS);
    for caller in 0..CALLERS {
        let share = n / CALLERS + usize::from(caller < n % CALLERS);
        let handle = handle.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let deadline = Instant::now() + Duration::from_secs(30);
                handle
                    .acquire(vec![key.clone()], 1.0, Priority::Background, deadline)
                    .await?;
            }
            Ok::<(), QuotaError>(())
        }));
    }
    let mut outcome = Ok(());
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => outcome = Err(err),
            Err(err) => outcome = Err(QuotaError::Unavailable(format!("bench task: {err}"))),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    handle.stop();
    let _ = join.await;
    outcome?;
    Ok(n as f64 / elapsed.max(f64::MIN_POSITIVE))
}
