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
//! - a 429 is first a model correction (issue 12): a `Throttled` observation empties the
//!   bucket, lowers its learned burst to what the provider really accepted (never below
//!   1; shown with the count of corrections in [`BucketView`]) and honours `Retry-After`,
//!   so the next grant comes one token interval (or the `Retry-After`) later;
//! - cooldowns (seed 001's hard stop): during a cooldown, `acquire` for a key in its scope
//!   answers [`QuotaError::CoolingDown`] at once. One starts for the key's account scope
//!   (`{provider}:{scope}`) when 429s repeat despite the correction
//!   ([`THROTTLE_ESCALATE_AFTER`] within [`THROTTLE_ESCALATE_WINDOW`] for one bucket) or
//!   at once on a `Capped` observation (a per-hour or per-day budget spent), as long as
//!   the provider's throttle cooldown (the daemon sets each provider's from its streams'
//!   `quota_cooldown`; 30 min amazon, 5 min others otherwise) or the `Retry-After`,
//!   whichever is longer. Cooldowns persist through a [`CooldownStore`] (the SQLite
//!   ledger, or Redis).
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
//! `marketsync cooldowns` lives in [`crate::diagnose::cooldowns`]; `marketsync bench quota` in
//! [`crate::bench::quota`].
//!
//! Emits (tracing, structured fields): `debug!(key, priority, cost, wait_ms, "request
//! queued")`, `debug!(key, waited_ms, "deadline exceeded")`, `debug!(key, rate, previous,
//! "rate learned from header")`, `info!(key, tokens_left, refill_in_ms,
//! refill_rate_per_min, "keepa balance resynced")`, `warn!(key, scope, until,
//! "provider throttled; cooling down")`, `warn!(key, burst_before, burst,
//! retry_after_ms, recent, "429 read as a model correction")`, `info!(scope, reason, until,
//! "cooldown started")`, `info!(scope, "cooldown cleared")`, `warn!(scope, error, "cooldown store
//! failed")`, and from Redis mode `warn!(error, "quota redis unavailable")`.
//!
//! Layer 7 of docs/architecture.md. May use: `domain`, `store`, `lock`. May not touch:
//! provider calls (callers ask it, then call).

pub mod bucket;
mod clock;
pub mod cooldown;
mod handle;
mod local;
mod manager;
mod queue;
pub mod redis;
pub mod settings;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub use bucket::{Bucket, DEFAULT_RESERVE_SHARE};
pub use cooldown::{CooldownReason, CooldownStore};
pub use redis::RedisCooldowns;

pub use clock::Clock;
#[cfg(any(test, feature = "testing"))]
pub use clock::ManualClock;
pub use handle::{bench_grants, Pacer, QuotaHandle};
pub use manager::{ManagerState, QuotaMsg, TokenManager};
pub use settings::QuotaConfig;

use crate::store::Cooldown;

/// The default Redis key prefix (shared with the lock service).
pub const DEFAULT_PREFIX: &str = crate::lock::DEFAULT_PREFIX;
/// The cooldown after a 429 on amazon (seed 001: `QUOTA_COOLDOWN_MINUTES = 30`).
pub const AMAZON_THROTTLE_COOLDOWN: Duration = Duration::from_secs(30 * 60);
/// The cooldown after a 429 on any other provider (unless configured).
pub const DEFAULT_THROTTLE_COOLDOWN: Duration = Duration::from_secs(5 * 60);
/// How long a "no cooldown" answer of the store is trusted before asking again.
pub const DEFAULT_COOLDOWN_RECHECK: Duration = Duration::from_secs(5);
/// The share of every rate the daemon leaves unused (`[quota] rate_margin`): the
/// rates a bucket is told are rounded (Amazon documents 0.0167/s for one call a minute,
/// 0.2% above 1/60; 0.0222/s for 1/45, 0.1% above), and a model refilling faster than
/// the provider's bucket runs ahead of it by that share of every token. Timing is not
/// the margin's job: a call reaching the provider after its grant is what
/// [`bucket::Bucket::answered`] corrects (it used to be 2%, 20 ms at one call a second,
/// which covered neither a first call that took longer than that nor more than it
/// had to). [`QuotaConfig::new`] uses 0 (exact rates); the daemon uses this.
pub const DEFAULT_RATE_MARGIN: f64 = 0.005;
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

    /// Where a hard stop on this key reaches (see [`stops_per_api`]): the API the
    /// operation belongs to (`{provider}:{scope}:{api}`, [`stop_group`]) for a provider
    /// whose budgets are per API, the account otherwise.
    pub fn hard_stop_scope(&self) -> String {
        if stops_per_api(&self.provider) {
            self.api_scope()
        } else {
            self.account_scope()
        }
    }

    /// `{provider}:{scope}:{api}`: every operation of one API ([`stop_group`]; the
    /// operation itself when it has no known API).
    pub fn api_scope(&self) -> String {
        api_scope(&self.provider, &self.account_scope(), &self.operation)
    }

    /// Every cooldown scope that stops this key: the provider, the account, the bucket,
    /// and the bucket's API when the provider has one ([`stop_group`]).
    pub fn cooldown_scopes(&self) -> Vec<String> {
        let mut scopes = vec![
            self.provider.clone(),
            self.account_scope(),
            self.bucket_scope(),
        ];
        let group = self.api_scope();
        if !scopes.contains(&group) {
            scopes.push(group);
        }
        scopes
    }
}

/// Whether a hard stop (a spent budget, or 429s repeated despite the correction) of
/// `provider` cools only the refused operation's API ([`stop_group`]) instead of the
/// whole account.
///
/// eBay counts its call limits per API, some per resource ("API Call Limits",
/// developer.ebay.com/develop/api/sell/api_call_limits: "the limits on the total calls
/// and the rate at which the calls can be made depend on the API"; Finances 15,000 a
/// day, Analytics per resource), so a spent Post-Order quota says nothing about getOrders:
/// the returns, cases and inquiries streams wait for its reset while orders, finances
/// and inventory go on. Amazon keeps seed 001's stop of every SP-API call of the account;
/// Keepa's token balance and StockX's hourly budget are one budget per key, so every
/// operation is refused alike.
pub fn stops_per_api(provider: &str) -> bool {
    provider == "ebay"
}

/// eBay's API of each operation the daemon calls, as eBay counts its call limits (and as
/// the simulator counts them: `[simulator.ebay]` `fulfillment_daily_calls`,
/// `finances_daily_calls`, `post_order_daily_calls`). `provider::ebay` names the
/// operations; its tests check that every operation a stream calls is listed here.
const EBAY_APIS: &[(&str, &str)] = &[
    ("getOrders", "fulfillment"),
    ("getTransactions", "finances"),
    ("getPayouts", "finances"),
    ("searchReturns", "post_order"),
    ("searchCases", "post_order"),
    ("searchInquiries", "post_order"),
    ("getInventoryItems", "inventory"),
    ("getOffers", "inventory"),
    ("createInventoryTask", "feed"),
    ("getInventoryTask", "feed"),
    ("getResultFile", "feed"),
    ("getConversations", "message"),
    ("tradingGetOrders", "trading"),
    ("itemSummarySearch", "browse"),
];

/// `{account_scope}:{api}`: the scope of `operation`'s API ([`stop_group`]) within the
/// account scope `account_scope` (`{provider}:{account}`). The one formula the
/// TokenManager, the streams and the surfaces share.
pub fn api_scope(provider: &str, account_scope: &str, operation: &str) -> String {
    format!("{account_scope}:{}", stop_group(provider, operation))
}

/// The API of a scope narrower than the account (`{provider}:{account}:{api}`): its
/// last part, as status and doctor name it.
pub fn api_of_scope(scope: &str) -> &str {
    scope.rsplit_once(':').map_or(scope, |(_, api)| api)
}

/// The group of `operation` a hard stop of `provider` cools together: eBay's API (one
/// spent daily quota refuses every operation of that API alike, so the first 429 stops
/// them all), the operation itself otherwise.
pub fn stop_group<'a>(provider: &str, operation: &'a str) -> &'a str {
    if provider == "ebay" {
        if let Some((_, api)) = EBAY_APIS.iter().find(|(known, _)| *known == operation) {
            return api;
        }
    }
    operation
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

/// A bucket's refill rate (tokens per second) and capacity, and optionally a cap on the
/// tokens taken in any window ([`WindowCap`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSpec {
    pub rate: f64,
    pub burst: f64,
    /// At most `limit` tokens in any window of `length` (an hourly call budget), kept by
    /// a log of grants on top of the bucket; `None`: the bucket alone.
    pub window: Option<WindowCap>,
}

/// A budget of `limit` tokens in **any** window of `length`, the strictest reading of
/// "n calls an hour": it holds whether the provider counts clock hours or trailing
/// hours. The in-process TokenManager keeps a log of its grants and grants nothing that
/// would put more than `limit` in the trailing `length`; so the bucket beside it may
/// refill at the full `limit/length` (no `burst` taken off the rate) without ever
/// exceeding the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowCap {
    pub limit: f64,
    pub length: Duration,
}

impl BucketSpec {
    pub const fn new(rate: f64, burst: f64) -> BucketSpec {
        BucketSpec {
            rate,
            burst,
            window: None,
        }
    }

    /// A budget of `n` calls in any hour paced at its full rate: a bucket refilling
    /// `n` an hour with `burst` (so a grant that waited for its drainer is not lost at
    /// the cap), and a [`WindowCap`] of `n` per hour that keeps every hour, a clock hour
    /// or any other, within `n`. [`BucketSpec::per_hour`] needs `rate = (n − burst)/h`
    /// for that and so never reaches `n`; this one does.
    pub fn hourly_budget(n: f64, burst: f64) -> BucketSpec {
        BucketSpec::windowed(n, Duration::from_secs(3600), burst)
    }

    /// `limit` tokens in any window of `length`, paced at `limit/length` with `burst`
    /// (see [`BucketSpec::hourly_budget`]).
    pub fn windowed(limit: f64, length: Duration, burst: f64) -> BucketSpec {
        let seconds = length.as_secs_f64().max(f64::MIN_POSITIVE);
        BucketSpec {
            rate: limit / seconds,
            burst,
            window: Some(WindowCap { limit, length }),
        }
    }

    /// The spec with `window` (kept as is by every other change of the spec).
    pub fn with_window(mut self, window: Option<WindowCap>) -> BucketSpec {
        self.window = window;
        self
    }

    /// The same budget for a store that keeps no log of grants (Redis): a bucket alone
    /// whose `burst + rate·length` stays within the window's limit (the rate lowered to
    /// `(limit − burst)/length` when it is above it); a spec without a window as is.
    pub fn without_window(self) -> BucketSpec {
        match self.window {
            None => self,
            Some(cap) => {
                let seconds = cap.length.as_secs_f64().max(f64::MIN_POSITIVE);
                let safe = ((cap.limit - self.burst) / seconds).max(bucket::MIN_SETTING);
                BucketSpec::new(self.rate.min(safe), self.burst)
            }
        }
    }

    /// A provider budget of `n` calls per hour (seed 002). A continuous bucket grants at
    /// most `rate·t + burst` in any window `t`, so `rate = 0.9·n/3600` and
    /// `burst = 0.1·n` keep *every* one-hour window within `n` (a burst of `n` would
    /// allow `2n` in the first hour).
    pub fn per_hour(n: f64) -> BucketSpec {
        BucketSpec {
            rate: 0.9 * n / 3600.0,
            burst: 0.1 * n,
            window: None,
        }
    }

    /// A daily call limit of `n` (eBay's per-API quotas, which reset daily): the same
    /// construction as [`BucketSpec::per_hour`] over a day, so no 24-hour window exceeds `n`.
    pub fn per_day(n: f64) -> BucketSpec {
        BucketSpec {
            rate: 0.9 * n / 86_400.0,
            burst: 0.1 * n,
            window: None,
        }
    }

    /// A Keepa plan refilling `n` tokens per minute: `rate = n/60`, and the bucket holds
    /// an hour of refill (`burst = 60·n`), as Keepa's plans do.
    pub fn keepa_per_minute(n: f64) -> BucketSpec {
        BucketSpec {
            rate: n / 60.0,
            burst: 60.0 * n,
            window: None,
        }
    }
}

/// The documented defaults:
/// - `amazon` (SP-API Reports 2021-06-30): `createReport` 0.0167/s burst 15,
///   `getReport` 2/s burst 15, `getReportDocument` 0.0167/s burst 15, `getReports` and
///   `cancelReport` 0.0222/s burst 10;
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
        ("amazon", "getReports" | "cancelReport") => Some(BucketSpec::new(0.0222, 10.0)),
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
/// The longest cooldown the TokenManager keeps: a longer end (from a provider's
/// `Retry-After`, a caller, or a persisted row) is clamped to `now` + this.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(MAX_COOLDOWN_SECS as u64);
/// [`MAX_COOLDOWN`] in seconds.
pub const MAX_COOLDOWN_SECS: i64 = 24 * 3600;

/// `Some(bounded end)` when a cooldown ending at `until_at` (unix seconds) ends more than
/// [`MAX_COOLDOWN`] after `now`; `None` when it is in range.
pub fn bounded_cooldown_end(until_at: i64, now: i64) -> Option<i64> {
    let latest = now.saturating_add(MAX_COOLDOWN_SECS);
    (until_at > latest).then_some(latest)
}

pub(crate) fn cooling_down(cooldown: &Cooldown) -> QuotaError {
    QuotaError::CoolingDown {
        scope: cooldown.scope.clone(),
        reason: cooldown.reason.clone(),
        until_utc: DateTime::<Utc>::from_timestamp(cooldown.until_at, 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    }
}

/// The bounds of a Keepa balance before it reaches the quota model: `tokensLeft` within
/// ±[`KEEPA_MAX_TOKENS`], `refillIn` at most [`KEEPA_MAX_REFILL_IN_MS`] (1 h),
/// `refillRate` within [[`KEEPA_MIN_REFILL_RATE`], [`KEEPA_MAX_REFILL_RATE`]] per minute.
pub const KEEPA_MAX_TOKENS: i64 = 1_000_000;
pub const KEEPA_MAX_REFILL_IN_MS: u64 = 3_600_000;
pub const KEEPA_MIN_REFILL_RATE: f64 = 0.01;
pub const KEEPA_MAX_REFILL_RATE: f64 = 100_000.0;

/// A Keepa balance within the bounds above; `clamped` when any value was out of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepaValues {
    pub tokens_left: i64,
    pub refill_in_ms: u64,
    pub refill_rate_per_min: f64,
    pub clamped: bool,
}

impl KeepaValues {
    /// Clamps each value; a non-finite rate becomes the smallest one.
    pub fn bounded(tokens_left: i64, refill_in_ms: u64, refill_rate_per_min: f64) -> KeepaValues {
        let tokens = tokens_left.clamp(-KEEPA_MAX_TOKENS, KEEPA_MAX_TOKENS);
        let refill_in = refill_in_ms.min(KEEPA_MAX_REFILL_IN_MS);
        let rate = if refill_rate_per_min.is_finite() {
            refill_rate_per_min.clamp(KEEPA_MIN_REFILL_RATE, KEEPA_MAX_REFILL_RATE)
        } else {
            KEEPA_MIN_REFILL_RATE
        };
        KeepaValues {
            tokens_left: tokens,
            refill_in_ms: refill_in,
            refill_rate_per_min: rate,
            clamped: tokens != tokens_left
                || refill_in != refill_in_ms
                || rate.to_bits() != refill_rate_per_min.to_bits(),
        }
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
    /// A 429 to a paced call (SP-API's per-operation token buckets): our model of the
    /// bucket was wrong. The bucket is corrected ([`bucket::Bucket::correct`]: empty,
    /// a smaller learned burst, `Retry-After` honoured) and the call goes again after one
    /// token interval; only [`THROTTLE_ESCALATE_AFTER`] of them within
    /// [`THROTTLE_ESCALATE_WINDOW`] for one bucket start the hard stop (seed 001).
    Throttled { retry_after: Option<Duration> },
    /// A 429 saying a per-hour or per-day budget is spent (eBay's daily quota, Keepa's
    /// NOT_ENOUGH_TOKEN until its refill, StockX's hourly budget): retrying cannot help,
    /// so the hard stop starts at once (the provider's throttle cooldown, or the
    /// `Retry-After` when longer).
    Capped { retry_after: Option<Duration> },
}

/// How many [`Observation::Throttled`] within [`THROTTLE_ESCALATE_WINDOW`] for one bucket
/// turn the correction into seed 001's hard stop: the correction did not help.
pub const THROTTLE_ESCALATE_AFTER: usize = 3;
/// See [`THROTTLE_ESCALATE_AFTER`].
pub const THROTTLE_ESCALATE_WINDOW: Duration = Duration::from_secs(10 * 60);

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
    /// The burst configured or documented for the bucket, before any correction.
    pub configured_burst: f64,
    /// 429s read as corrections of this bucket since the manager started.
    pub corrections: u64,
    /// Grants of this bucket by this manager since it started, whatever their cost: its
    /// calls (the dashboard's sparkline samples the difference).
    pub grants: u64,
    /// Tokens its window cap still lets through now (`limit` less what the trailing
    /// window holds); `None`: no window (or one this backend turns into the bucket).
    pub window_room: Option<f64>,
}

/// Where bucket state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaBackend {
    /// In the actor: one daemon.
    InProcess,
    /// In Redis: several daemons share one quota. `prefix` is normally [`DEFAULT_PREFIX`].
    Redis { url: String, prefix: String },
}
