//! The bundled marketplace simulator: an axum server speaking SP-API's wire formats
//! (`docs/spapi-wire.md`) so that tests and the demo run the daemon over real HTTP.
//!
//! - LWA: `POST /auth/o2/token`; the refresh token names the selling partner (seller).
//! - Reports API 2021-06-30: createReport, getReport, getReportDocument, with a token
//!   bucket per (seller, operation) and Amazon's documented default rates.
//! - Pre-signed style document downloads: `GET /_documents/{documentId}?expires={unix}`.
//! - Control: `GET /_sim/stats`, `GET|PUT /_sim/faults`, `GET /_sim/served`.
//!
//! Data comes from [`amazon::vendor_sales_rows`], deterministic from the seed. Faults
//! ([`SimFaults`]) are drawn from a seeded RNG or scheduled on the nth call of an operation.
//! All state sits behind one std `Mutex` held only for short, await-free sections.

pub mod amazon;
mod bucket;
pub mod ebay;
mod handlers;
pub mod keepa;
pub mod stockx;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::domain::{format_ts, parse_ts, SalesRow, HOUR};
use bucket::TokenBucket;

/// The longest window one report may cover (the daemon's `chunk` has the same limit).
const MAX_REPORT_WINDOW: i64 = 7 * 24 * HOUR;

/// Simulator settings. Every field has a default, so `{}` is a valid configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seeds the sales data and the fault RNG.
    pub seed: u64,
    /// Items per marketplace: ASINs `B000000000` .. `B{n-1:09}`.
    pub asins_per_marketplace: u32,
    /// How long a report stays IN_QUEUE then IN_PROGRESS (half each) before it ends;
    /// zero ends reports at creation.
    #[serde(with = "humantime_serde")]
    pub processing_latency: Duration,
    /// LWA `expires_in` of access tokens.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// How long a document url from getReportDocument stays valid.
    #[serde(with = "humantime_serde")]
    pub document_url_lifetime: Duration,
    /// Rate overrides by operation name (`createReport`, `getReport`, `getReportDocument`);
    /// operations not named keep Amazon's documented defaults.
    pub rates: BTreeMap<String, RateSpec>,
    /// Faults in force at start; replaceable later with [`Simulator::set_faults`].
    pub faults: SimFaults,
    /// The eBay simulator (OAuth, Fulfillment/Finances/Post-Order APIs).
    pub ebay: ebay::EbaySimConfig,
    /// The StockX simulator (OAuth, market data).
    pub stockx: stockx::StockxSimConfig,
    /// The Keepa simulator (`/product`, `/token`).
    pub keepa: keepa::KeepaSimConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            asins_per_marketplace: 25,
            processing_latency: Duration::from_secs(2),
            token_lifetime: Duration::from_secs(3600),
            document_url_lifetime: Duration::from_secs(5 * 60),
            rates: BTreeMap::new(),
            faults: SimFaults::default(),
            ebay: ebay::EbaySimConfig::default(),
            stockx: stockx::StockxSimConfig::default(),
            keepa: keepa::KeepaSimConfig::default(),
        }
    }
}

impl SimConfig {
    /// The rate limit in force for an SP-API operation: the override or Amazon's default.
    /// `None` for operations that are not rate limited (token, document download).
    pub fn rate_for(&self, operation: &str) -> Option<RateSpec> {
        let default = match operation {
            "createReport" => RateSpec {
                rate: 0.0167,
                burst: 15.0,
            },
            "getReport" => RateSpec {
                rate: 2.0,
                burst: 15.0,
            },
            "getReportDocument" => RateSpec {
                rate: 0.0167,
                burst: 15.0,
            },
            _ => return None,
        };
        Some(self.rates.get(operation).copied().unwrap_or(default))
    }
}

/// A token bucket setting: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub rate: f64,
    pub burst: f64,
}

/// Injected faults. Probabilities are in `[0, 1]` and drawn per call (or per report) from
/// a RNG seeded with [`SimConfig::seed`]; `schedule` pins a fault on the nth call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimFaults {
    /// 429 QuotaExceeded on any SP-API call (not token, not download).
    pub throttle: f64,
    /// 500 InternalFailure on any SP-API call (not token, not download).
    pub server_error: f64,
    /// A new report ends FATAL; its document is an error document.
    pub fatal: f64,
    /// A new report ends CANCELLED, without a document.
    pub cancelled: f64,
    /// A new report's document is served with its gzip bytes cut in half.
    pub truncated: f64,
    /// A new report's document is gzip of invalid JSON.
    pub malformed: f64,
    /// A new report's document covers the requested window shifted by +1h.
    pub wrong_window: f64,
    /// Faults on the nth call of an operation.
    pub schedule: Vec<ScheduledFault>,
    /// Sent as `Retry-After` on every 429 (injected or from a bucket) when set.
    pub retry_after_secs: Option<u64>,
}

impl SimFaults {
    /// Checks probabilities and schedule entries; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let probabilities = [
            ("throttle", self.throttle),
            ("server_error", self.server_error),
            ("fatal", self.fatal),
            ("cancelled", self.cancelled),
            ("truncated", self.truncated),
            ("malformed", self.malformed),
            ("wrong_window", self.wrong_window),
        ];
        for (name, value) in probabilities {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!(
                    "{name}: {value} is not a probability; use a number from 0 to 1"
                ));
            }
        }
        for (index, entry) in self.schedule.iter().enumerate() {
            let known = Operation::from_name(&entry.operation).is_some()
                || provider_operations().any(|name| name == entry.operation);
            if !known {
                let mut names: Vec<&str> = Operation::ALL.map(Operation::name).to_vec();
                names.extend(provider_operations());
                return Err(format!(
                    "schedule[{index}].operation: unknown operation {:?}; expected one of {}",
                    entry.operation,
                    names.join(", ")
                ));
            }
            if entry.nth == 0 {
                return Err(format!("schedule[{index}].nth: calls count from 1"));
            }
        }
        Ok(())
    }
}

/// The operations of the other providers' simulators, as fault schedules name them
/// (`ebay.getOrders`, `stockx.marketData`, `keepa.product`, ...).
fn provider_operations() -> impl Iterator<Item = &'static str> {
    ebay::OPERATIONS
        .iter()
        .chain(stockx::OPERATIONS)
        .chain(keepa::OPERATIONS)
        .copied()
}

/// "The nth call (1-based, since start, across all sellers) of `operation` gets `fault`."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// `createReport`, `getReport`, `getReportDocument`, `downloadDocument` or `token`.
    pub operation: String,
    pub nth: u64,
    pub fault: FaultKind,
}

/// What a scheduled fault does. `throttle` and `server_error` fail the call itself; the
/// others set a report's outcome on `createReport`, and `truncated`, `malformed` and
/// `wrong_window` also spoil one download on `downloadDocument`. Elsewhere they do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Throttle,
    ServerError,
    Fatal,
    Cancelled,
    Truncated,
    Malformed,
    WrongWindow,
}

/// A counter per operation; serializes with the wire operation names as keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpCounts {
    pub token: u64,
    pub create_report: u64,
    pub get_report: u64,
    pub get_report_document: u64,
    pub download_document: u64,
}

impl OpCounts {
    /// The count for an operation name (`createReport`, ...); 0 for unknown names.
    pub fn get(&self, operation: &str) -> u64 {
        Operation::from_name(operation).map_or(0, |operation| *self.slot(operation))
    }

    fn slot(&self, operation: Operation) -> &u64 {
        match operation {
            Operation::Token => &self.token,
            Operation::CreateReport => &self.create_report,
            Operation::GetReport => &self.get_report,
            Operation::GetReportDocument => &self.get_report_document,
            Operation::DownloadDocument => &self.download_document,
        }
    }

    /// Adds one and returns the new count.
    fn bump(&mut self, operation: Operation) -> u64 {
        let slot = match operation {
            Operation::Token => &mut self.token,
            Operation::CreateReport => &mut self.create_report,
            Operation::GetReport => &mut self.get_report,
            Operation::GetReportDocument => &mut self.get_report_document,
            Operation::DownloadDocument => &mut self.download_document,
        };
        *slot += 1;
        *slot
    }
}

/// Calls, 429s (bucket and injected) and injected 500s per operation, as served by
/// `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    pub calls: OpCounts,
    pub throttled: OpCounts,
    pub server_errors: OpCounts,
}

impl SimStats {
    /// Requests received for `operation`, whatever their answer.
    pub fn calls(&self, operation: &str) -> u64 {
        self.calls.get(operation)
    }

    /// 429 answers to `operation`, from its bucket or injected.
    pub fn throttled(&self, operation: &str) -> u64 {
        self.throttled.get(operation)
    }

    /// Injected 500 answers to `operation`.
    pub fn server_errors(&self, operation: &str) -> u64 {
        self.server_errors.get(operation)
    }
}

/// One sales row served in an intact DONE document, with who downloaded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedRow {
    /// The seller: the refresh token the access token was issued for.
    pub seller: String,
    pub marketplace: String,
    pub hour_utc: i64,
    pub asin: String,
    pub ordered_units: i64,
    pub ordered_revenue: f64,
}

impl ServedRow {
    /// The row without seller and marketplace, to compare with stored rows.
    pub fn sales_row(&self) -> SalesRow {
        SalesRow {
            hour_utc: self.hour_utc,
            asin: self.asin.clone(),
            ordered_units: self.ordered_units,
            ordered_revenue: self.ordered_revenue,
        }
    }
}

/// The operations the simulator counts, schedules faults on and rate-limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Operation {
    Token,
    CreateReport,
    GetReport,
    GetReportDocument,
    DownloadDocument,
}

impl Operation {
    const ALL: [Operation; 5] = [
        Operation::Token,
        Operation::CreateReport,
        Operation::GetReport,
        Operation::GetReportDocument,
        Operation::DownloadDocument,
    ];

    fn name(self) -> &'static str {
        match self {
            Operation::Token => "token",
            Operation::CreateReport => "createReport",
            Operation::GetReport => "getReport",
            Operation::GetReportDocument => "getReportDocument",
            Operation::DownloadDocument => "downloadDocument",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|operation| operation.name() == name)
    }
}

/// Why a call is refused; `handlers` turns each into its wire response.
#[derive(Debug, Clone, PartialEq)]
enum Reject {
    /// 403 Unauthorized; `expired` selects the expired-token details.
    Unauthorized { expired: bool },
    /// 429 QuotaExceeded.
    Throttled { retry_after_secs: Option<u64> },
    /// 500 InternalFailure, injected.
    ServerError,
    /// 500 InternalFailure, a real failure inside the simulator.
    Internal(String),
    /// 400 InvalidInput.
    InvalidInput(String),
    /// 404 NotFound.
    NotFound(String),
    /// LWA error body `{"error","error_description"}` with status 400.
    Lwa {
        error: &'static str,
        description: String,
    },
    /// Download with a missing or unreadable `expires`.
    DocumentUnsigned,
    /// Download after the url expired.
    DocumentExpired,
    /// Download of an unknown document.
    DocumentMissing,
}

/// A report's fate, decided at createReport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done(Option<ContentFault>),
    Fatal,
    Cancelled,
}

/// How a DONE document is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentFault {
    Truncated,
    Malformed,
    WrongWindow,
}

impl ContentFault {
    fn from_kind(kind: FaultKind) -> Option<Self> {
        match kind {
            FaultKind::Truncated => Some(ContentFault::Truncated),
            FaultKind::Malformed => Some(ContentFault::Malformed),
            FaultKind::WrongWindow => Some(ContentFault::WrongWindow),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Report {
    seller: String,
    marketplace: String,
    start: i64,
    end: i64,
    /// Simulator clock (seconds) at creation.
    created_at: f64,
    outcome: Outcome,
    /// Set for DONE and FATAL outcomes; exposed once the report ends.
    document_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    InQueue,
    InProgress,
    Ended,
}

#[derive(Debug, Clone)]
struct AccessToken {
    seller: String,
    /// Simulator clock (seconds) from which the token is expired.
    expires_at: f64,
}

/// What an admitted SP-API call carries on.
struct Admitted {
    seller: String,
    /// The bucket rate, for `x-amzn-RateLimit-Limit`.
    rate: f64,
    /// A scheduled fault that did not fail the call itself.
    scheduled: Option<FaultKind>,
}

/// A granted LWA token.
struct TokenGrant {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

/// Everything mutable. Behind a std `Mutex` (not tokio's): every section is short,
/// synchronous, and never spans an `.await`.
struct SimState {
    faults: SimFaults,
    /// Seeded from the config so fault draws repeat for the same call order.
    fault_rng: StdRng,
    /// Seeded from the OS: access tokens should not be guessable across runs.
    id_rng: StdRng,
    next_id: u64,
    tokens: HashMap<String, AccessToken>,
    buckets: HashMap<(String, Operation), TokenBucket>,
    reports: HashMap<String, Report>,
    /// Document id → report id.
    documents: HashMap<String, String>,
    stats: SimStats,
    /// Calls per operation of the other providers' simulators (fault schedule positions).
    provider_calls: HashMap<String, u64>,
    /// Keyed by (seller, marketplace, hour, asin): repeated downloads serve the same rows.
    served: BTreeMap<(String, String, i64, String), ServedRow>,
}

impl SimState {
    /// Counts the call and returns the fault scheduled for it, if any.
    fn count(&mut self, operation: Operation) -> Option<FaultKind> {
        let nth = self.stats.calls.bump(operation);
        self.faults
            .schedule
            .iter()
            .find(|entry| entry.nth == nth && entry.operation == operation.name())
            .map(|entry| entry.fault)
    }

    fn throttled(&mut self, operation: Operation) -> Reject {
        self.stats.throttled.bump(operation);
        Reject::Throttled {
            retry_after_secs: self.faults.retry_after_secs,
        }
    }

    fn server_error(&mut self, operation: Operation) -> Reject {
        self.stats.server_errors.bump(operation);
        Reject::ServerError
    }

    /// Applies a scheduled throttle/server_error; passes other kinds on.
    fn apply_scheduled(
        &mut self,
        operation: Operation,
        scheduled: Option<FaultKind>,
    ) -> Result<Option<FaultKind>, Reject> {
        match scheduled {
            Some(FaultKind::Throttle) => Err(self.throttled(operation)),
            Some(FaultKind::ServerError) => Err(self.server_error(operation)),
            other => Ok(other),
        }
    }

    /// `true` with probability `probability`; draws nothing when it is zero.
    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.fault_rng.gen::<f64>() < probability
    }

    /// The gate of every SP-API call: count, authenticate, faults, then the bucket.
    fn admit(
        &mut self,
        operation: Operation,
        access_token: Option<&str>,
        now: f64,
        config: &SimConfig,
    ) -> Result<Admitted, Reject> {
        let scheduled = self.count(operation);
        let seller = match access_token.and_then(|token| self.tokens.get(token)) {
            None => return Err(Reject::Unauthorized { expired: false }),
            Some(token) if now >= token.expires_at => {
                return Err(Reject::Unauthorized { expired: true })
            }
            Some(token) => token.seller.clone(),
        };
        let scheduled = self.apply_scheduled(operation, scheduled)?;
        if scheduled.is_none() {
            if self.chance(self.faults.throttle) {
                return Err(self.throttled(operation));
            }
            if self.chance(self.faults.server_error) {
                return Err(self.server_error(operation));
            }
        }
        let spec = config.rate_for(operation.name()).unwrap_or(RateSpec {
            rate: 1.0,
            burst: 1.0,
        });
        let bucket = self
            .buckets
            .entry((seller.clone(), operation))
            .or_insert_with(|| TokenBucket::new(spec.rate, spec.burst, now));
        let rate = bucket.rate();
        if !bucket.try_take(now) {
            return Err(self.throttled(operation));
        }
        Ok(Admitted {
            seller,
            rate,
            scheduled,
        })
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The outcome of a new report: a scheduled kind wins, else the probabilities in order.
    fn draw_outcome(&mut self, scheduled: Option<FaultKind>) -> Outcome {
        if let Some(kind) = scheduled {
            return match kind {
                FaultKind::Fatal => Outcome::Fatal,
                FaultKind::Cancelled => Outcome::Cancelled,
                other => Outcome::Done(ContentFault::from_kind(other)),
            };
        }
        let faults = [
            (self.faults.fatal, Outcome::Fatal),
            (self.faults.cancelled, Outcome::Cancelled),
            (
                self.faults.truncated,
                Outcome::Done(Some(ContentFault::Truncated)),
            ),
            (
                self.faults.malformed,
                Outcome::Done(Some(ContentFault::Malformed)),
            ),
            (
                self.faults.wrong_window,
                Outcome::Done(Some(ContentFault::WrongWindow)),
            ),
        ];
        for (probability, outcome) in faults {
            if self.chance(probability) {
                return outcome;
            }
        }
        Outcome::Done(None)
    }
}

/// A validated createReport request.
struct ReportRequest {
    marketplace: String,
    start: i64,
    end: i64,
}

fn parse_create_report(body: &[u8]) -> Result<ReportRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("body: invalid JSON: {err}"))?;
    let Some(object) = value.as_object() else {
        return Err("body: expected a JSON object".to_string());
    };
    match object.get("reportType").and_then(|value| value.as_str()) {
        Some(amazon::VENDOR_REAL_TIME_SALES_REPORT) => {}
        Some(other) => {
            return Err(format!(
                "reportType: {other:?} is not supported; use {}",
                amazon::VENDOR_REAL_TIME_SALES_REPORT
            ))
        }
        None => return Err("reportType: missing or not a string".to_string()),
    }
    let marketplace = match object
        .get("marketplaceIds")
        .and_then(|value| value.as_array())
    {
        Some(ids) if ids.len() == 1 => match ids[0].as_str() {
            Some(id) if !id.trim().is_empty() => id.to_string(),
            _ => {
                return Err(
                    "marketplaceIds: the marketplace id must be a non-empty string".to_string(),
                )
            }
        },
        Some(_) => return Err("marketplaceIds: exactly one marketplace id is required".to_string()),
        None => return Err("marketplaceIds: missing or not an array".to_string()),
    };
    let timestamp = |field: &str| -> Result<i64, String> {
        let text = object
            .get(field)
            .and_then(|value| value.as_str())
            .ok_or_else(|| format!("{field}: missing or not a string"))?;
        parse_ts(text).ok_or_else(|| format!("{field}: {text:?} is not an RFC 3339 timestamp"))
    };
    let start = timestamp("dataStartTime")?;
    let end = timestamp("dataEndTime")?;
    if start >= end {
        return Err("dataStartTime: must be before dataEndTime".to_string());
    }
    if end - start > MAX_REPORT_WINDOW {
        return Err("dataEndTime: a report covers at most 7 days after dataStartTime".to_string());
    }
    Ok(ReportRequest {
        marketplace,
        start,
        end,
    })
}

/// What a download needs once the lock is released.
struct DownloadPlan {
    seller: String,
    marketplace: String,
    start: i64,
    end: i64,
    content: DocumentContent,
}

enum DocumentContent {
    Error,
    Sales(Option<ContentFault>),
}

/// The simulator: configuration plus state, shared by every handler through an `Arc`.
pub struct Simulator {
    config: SimConfig,
    /// Simulator clock origin; tokio's clock so paused-time tests can move it.
    epoch: tokio::time::Instant,
    /// Unix seconds at `epoch`, to turn the clock into wall timestamps.
    epoch_unix: f64,
    /// Random per instance, so ids from an earlier run do not name a report of this one.
    instance_tag: u32,
    state: Mutex<SimState>,
}

impl Simulator {
    /// A simulator with `config`; serve it with [`serve`] or mount [`Simulator::router`].
    pub fn new(config: SimConfig) -> Arc<Simulator> {
        let epoch_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        for name in config.rates.keys() {
            if config.rate_for(name).is_none() {
                warn!(operation = %name, "ignoring a rate for an operation that is not rate limited");
            }
        }
        let mut id_rng = StdRng::from_entropy();
        let instance_tag = id_rng.gen_range(10_000..100_000);
        let state = SimState {
            faults: config.faults.clone(),
            fault_rng: StdRng::seed_from_u64(config.seed ^ 0x5eed_fa01_7000_0000),
            id_rng,
            next_id: 0,
            tokens: HashMap::new(),
            buckets: HashMap::new(),
            reports: HashMap::new(),
            documents: HashMap::new(),
            stats: SimStats::default(),
            provider_calls: HashMap::new(),
            served: BTreeMap::new(),
        };
        Arc::new(Simulator {
            config,
            epoch: tokio::time::Instant::now(),
            epoch_unix,
            instance_tag,
            state: Mutex::new(state),
        })
    }

    /// The HTTP routes (SP-API, LWA, documents, `/_sim` control).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        handlers::router(Arc::clone(self))
    }

    /// The configuration the simulator was built with (faults as at start).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Calls, 429s and injected 500s per operation so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// The faults in force now.
    pub fn faults(&self) -> SimFaults {
        self.lock().faults.clone()
    }

    /// Replaces the faults. Call counts (and so `schedule` positions) keep counting from start.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// Every row served in an intact DONE document, once per (seller, marketplace, hour,
    /// asin), sorted by those. Truncated, malformed and wrong-window documents do not count.
    pub fn served_rows(&self) -> Vec<ServedRow> {
        self.lock().served.values().cloned().collect()
    }

    /// The fault injection of the other providers' simulators, under the same
    /// [`SimFaults`] as SP-API: counts this call of `operation` (one of their
    /// `OPERATIONS`), then answers the fault scheduled on this nth call, else draws
    /// `throttle` and `server_error`. `None`: serve the call normally. The provider
    /// simulator turns `Throttle` and `ServerError` into its own wire errors.
    pub(crate) fn provider_fault(&self, operation: &str) -> Option<FaultKind> {
        let mut state = self.lock();
        let nth = {
            let calls = state
                .provider_calls
                .entry(operation.to_string())
                .or_default();
            *calls += 1;
            *calls
        };
        let scheduled = state
            .faults
            .schedule
            .iter()
            .find(|entry| entry.nth == nth && entry.operation == operation)
            .map(|entry| entry.fault);
        if scheduled.is_some() {
            return scheduled;
        }
        let (throttle, server_error) = (state.faults.throttle, state.faults.server_error);
        if state.chance(throttle) {
            return Some(FaultKind::Throttle);
        }
        if state.chance(server_error) {
            return Some(FaultKind::ServerError);
        }
        None
    }

    /// Unix seconds now, on the simulator's clock (paused-time tests move it).
    pub(crate) fn unix_now(&self) -> f64 {
        self.epoch_unix + self.clock()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic elsewhere while holding the lock leaves consistent data (no multi-step
        // invariants), so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Seconds since the simulator started.
    fn clock(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn unix_at(&self, clock: f64) -> i64 {
        (self.epoch_unix + clock).floor() as i64
    }

    fn latency(&self) -> f64 {
        self.config.processing_latency.as_secs_f64()
    }

    fn phase(&self, report: &Report, now: f64) -> Phase {
        let latency = self.latency();
        let elapsed = now - report.created_at;
        if latency <= 0.0 || elapsed >= latency {
            Phase::Ended
        } else if elapsed < latency / 2.0 {
            Phase::InQueue
        } else {
            Phase::InProgress
        }
    }

    /// LWA: grants an access token to the seller named by the refresh token.
    fn grant_token(&self, form: Option<HashMap<String, String>>) -> Result<TokenGrant, Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let scheduled = state.count(Operation::Token);
        state.apply_scheduled(Operation::Token, scheduled)?;
        let Some(form) = form else {
            return Err(Reject::Lwa {
                error: "invalid_request",
                description: "The request body must be application/x-www-form-urlencoded"
                    .to_string(),
            });
        };
        let field = |name: &str| {
            form.get(name)
                .map(|value| value.as_str())
                .filter(|value| !value.is_empty())
        };
        match field("grant_type") {
            Some("refresh_token") => {}
            Some(other) => {
                return Err(Reject::Lwa {
                    error: "unsupported_grant_type",
                    description: format!(
                        "grant_type {other:?} is not supported; use refresh_token"
                    ),
                })
            }
            None => {
                return Err(Reject::Lwa {
                    error: "invalid_request",
                    description: "The request is missing the required parameter: grant_type"
                        .to_string(),
                })
            }
        }
        for name in ["client_id", "client_secret", "refresh_token"] {
            if field(name).is_none() {
                return Err(Reject::Lwa {
                    error: "invalid_request",
                    description: format!("The request is missing the required parameter: {name}"),
                });
            }
        }
        let seller = field("refresh_token").unwrap_or_default().to_string();
        let serial = state.next_id();
        let access_token = format!(
            "Atza|IwEB{:016x}{:016x}{serial:x}",
            state.id_rng.gen::<u64>(),
            state.id_rng.gen::<u64>()
        );
        let lifetime = self.config.token_lifetime;
        state.tokens.insert(
            access_token.clone(),
            AccessToken {
                seller: seller.clone(),
                expires_at: now + lifetime.as_secs_f64(),
            },
        );
        drop(state);
        debug!(seller = %seller, expires_in = lifetime.as_secs(), "access token granted");
        Ok(TokenGrant {
            access_token,
            refresh_token: seller,
            expires_in: lifetime.as_secs(),
        })
    }

    /// createReport: returns the report id and the bucket rate.
    fn create_report(
        &self,
        access_token: Option<&str>,
        body: &[u8],
    ) -> Result<(String, f64), Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(Operation::CreateReport, access_token, now, &self.config)?;
        let request = parse_create_report(body).map_err(Reject::InvalidInput)?;
        let outcome = state.draw_outcome(admitted.scheduled);
        let serial = state.next_id();
        let report_id = format!("{}{serial:07}", self.instance_tag);
        let document_id = match outcome {
            Outcome::Cancelled => None,
            Outcome::Done(_) | Outcome::Fatal => {
                let document_id = format!(
                    "amzn1.spdoc.1.4.na.{:08x}-{:04x}-{:012x}",
                    self.instance_tag,
                    state.id_rng.gen::<u16>(),
                    serial
                );
                state
                    .documents
                    .insert(document_id.clone(), report_id.clone());
                Some(document_id)
            }
        };
        debug!(
            seller = %admitted.seller,
            report_id = %report_id,
            marketplace = %request.marketplace,
            start = %format_ts(request.start),
            end = %format_ts(request.end),
            outcome = ?outcome,
            "report created"
        );
        state.reports.insert(
            report_id.clone(),
            Report {
                seller: admitted.seller,
                marketplace: request.marketplace,
                start: request.start,
                end: request.end,
                created_at: now,
                outcome,
                document_id,
            },
        );
        Ok((report_id, admitted.rate))
    }

    /// getReport: the report as JSON, and the bucket rate.
    fn get_report(
        &self,
        access_token: Option<&str>,
        report_id: &str,
    ) -> Result<(serde_json::Value, f64), Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(Operation::GetReport, access_token, now, &self.config)?;
        let report = match state.reports.get(report_id) {
            Some(report) if report.seller == admitted.seller => report.clone(),
            _ => return Err(Reject::NotFound(format!("Report {report_id} not found"))),
        };
        drop(state);
        let phase = self.phase(&report, now);
        let status = match (phase, report.outcome) {
            (Phase::InQueue, _) => "IN_QUEUE",
            (Phase::InProgress, _) => "IN_PROGRESS",
            (Phase::Ended, Outcome::Done(_)) => "DONE",
            (Phase::Ended, Outcome::Fatal) => "FATAL",
            (Phase::Ended, Outcome::Cancelled) => "CANCELLED",
        };
        let latency = self.latency();
        let mut body = serde_json::Map::new();
        body.insert("reportId".into(), report_id.into());
        body.insert(
            "reportType".into(),
            amazon::VENDOR_REAL_TIME_SALES_REPORT.into(),
        );
        body.insert("dataStartTime".into(), format_ts(report.start).into());
        body.insert("dataEndTime".into(), format_ts(report.end).into());
        body.insert(
            "marketplaceIds".into(),
            serde_json::json!([report.marketplace]),
        );
        body.insert("processingStatus".into(), status.into());
        body.insert(
            "createdTime".into(),
            format_ts(self.unix_at(report.created_at)).into(),
        );
        if phase != Phase::InQueue {
            let started = self.unix_at(report.created_at + latency / 2.0);
            body.insert("processingStartTime".into(), format_ts(started).into());
        }
        if phase == Phase::Ended {
            let ended = self.unix_at(report.created_at + latency);
            body.insert("processingEndTime".into(), format_ts(ended).into());
            if let Some(document_id) = &report.document_id {
                body.insert("reportDocumentId".into(), document_id.as_str().into());
            }
        }
        Ok((serde_json::Value::Object(body), admitted.rate))
    }

    /// getReportDocument: the document reference with a fresh url on `host`.
    fn get_report_document(
        &self,
        access_token: Option<&str>,
        document_id: &str,
        host: &str,
    ) -> Result<(serde_json::Value, f64), Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(
            Operation::GetReportDocument,
            access_token,
            now,
            &self.config,
        )?;
        let not_found = || Reject::NotFound(format!("Report document {document_id} not found"));
        let report = state
            .documents
            .get(document_id)
            .and_then(|report_id| state.reports.get(report_id))
            .filter(|report| report.seller == admitted.seller)
            .cloned()
            .ok_or_else(not_found)?;
        drop(state);
        if self.phase(&report, now) != Phase::Ended {
            return Err(not_found());
        }
        let expires = self.unix_at(now + self.config.document_url_lifetime.as_secs_f64());
        let url = format!("http://{host}/_documents/{document_id}?expires={expires}");
        let body = serde_json::json!({
            "reportDocumentId": document_id,
            "url": url,
            "compressionAlgorithm": "GZIP",
        });
        Ok((body, admitted.rate))
    }

    /// The pre-signed style download: gzip bytes of the document.
    fn download_document(
        &self,
        document_id: &str,
        expires: Option<&str>,
    ) -> Result<Vec<u8>, Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let scheduled = state.count(Operation::DownloadDocument);
        let scheduled = state.apply_scheduled(Operation::DownloadDocument, scheduled)?;
        let expires = expires
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or(Reject::DocumentUnsigned)?;
        if self.epoch_unix + now > expires as f64 {
            return Err(Reject::DocumentExpired);
        }
        let report = state
            .documents
            .get(document_id)
            .and_then(|report_id| state.reports.get(report_id))
            .cloned()
            .ok_or(Reject::DocumentMissing)?;
        drop(state);
        if self.phase(&report, now) != Phase::Ended {
            return Err(Reject::DocumentMissing);
        }
        let content = match report.outcome {
            Outcome::Cancelled => return Err(Reject::DocumentMissing),
            Outcome::Fatal => DocumentContent::Error,
            Outcome::Done(fault) => {
                DocumentContent::Sales(scheduled.and_then(ContentFault::from_kind).or(fault))
            }
        };
        let plan = DownloadPlan {
            seller: report.seller,
            marketplace: report.marketplace,
            start: report.start,
            end: report.end,
            content,
        };
        self.render(document_id, plan)
    }

    /// Builds (outside the lock) the bytes of a download and records intact rows.
    fn render(&self, document_id: &str, plan: DownloadPlan) -> Result<Vec<u8>, Reject> {
        let internal = |err: &dyn std::fmt::Display| {
            Reject::Internal(format!("document {document_id}: {err}"))
        };
        let seed = self.config.seed;
        let asins = self.config.asins_per_marketplace;
        match plan.content {
            DocumentContent::Error => {
                let json = amazon::error_document(
                    "The report could not be generated because of an internal processing error (simulated FATAL).",
                )
                .map_err(|err| internal(&err))?;
                amazon::gzip(&json).map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::Malformed)) => {
                amazon::gzip(amazon::MALFORMED_DOCUMENT).map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::WrongWindow)) => {
                let (json, _) = amazon::sales_document(
                    seed,
                    &plan.marketplace,
                    asins,
                    plan.start + HOUR,
                    plan.end + HOUR,
                )
                .map_err(|err| internal(&err))?;
                amazon::gzip(&json).map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::Truncated)) => {
                let (json, _) =
                    amazon::sales_document(seed, &plan.marketplace, asins, plan.start, plan.end)
                        .map_err(|err| internal(&err))?;
                let mut bytes = amazon::gzip(&json).map_err(|err| internal(&err))?;
                bytes.truncate(bytes.len() / 2);
                Ok(bytes)
            }
            DocumentContent::Sales(None) => {
                let (json, rows) =
                    amazon::sales_document(seed, &plan.marketplace, asins, plan.start, plan.end)
                        .map_err(|err| internal(&err))?;
                let bytes = amazon::gzip(&json).map_err(|err| internal(&err))?;
                let mut state = self.lock();
                for row in rows {
                    let key = (
                        plan.seller.clone(),
                        plan.marketplace.clone(),
                        row.hour_utc,
                        row.asin.clone(),
                    );
                    state.served.insert(
                        key,
                        ServedRow {
                            seller: plan.seller.clone(),
                            marketplace: plan.marketplace.clone(),
                            hour_utc: row.hour_utc,
                            asin: row.asin,
                            ordered_units: row.ordered_units,
                            ordered_revenue: row.ordered_revenue,
                        },
                    );
                }
                Ok(bytes)
            }
        }
    }
}

/// Serves `sim` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, sim.router())
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use serde_json::{json, Value};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    const MARKETPLACE: &str = "ATVPDKIKX0DER";
    const START: &str = "2025-12-09T00:00:00Z";
    const END: &str = "2025-12-09T06:00:00Z";
    const QUOTA_BODY: &str = r#"{"errors":[{"code":"QuotaExceeded","message":"You exceeded your quota for the requested resource.","details":""}]}"#;

    /// A simulator serving on an ephemeral port.
    struct Running {
        sim: Arc<Simulator>,
        base: String,
        client: reqwest::Client,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    }

    fn instant_config() -> SimConfig {
        SimConfig {
            processing_latency: Duration::ZERO,
            asins_per_marketplace: 8,
            ..SimConfig::default()
        }
    }

    async fn start(config: SimConfig) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let sim = Simulator::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&sim), async move {
            let _ = stopped.await;
        }));
        Running {
            sim,
            base,
            client: reqwest::Client::new(),
            stop,
            task,
        }
    }

    impl Running {
        async fn stop(self) {
            let _ = self.stop.send(());
            self.task
                .await
                .expect("server task")
                .expect("server result");
        }

        async fn token(&self, seller: &str) -> String {
            let response = self
                .client
                .post(format!("{}/auth/o2/token", self.base))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", seller),
                    ("client_id", "client"),
                    ("client_secret", "secret"),
                ])
                .send()
                .await
                .expect("token request");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("token json");
            assert_eq!(body["token_type"], "bearer");
            assert_eq!(body["refresh_token"], seller);
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string()
        }

        async fn create(&self, token: &str, body: Value) -> reqwest::Response {
            self.client
                .post(format!("{}/reports/2021-06-30/reports", self.base))
                .header("x-amz-access-token", token)
                .json(&body)
                .send()
                .await
                .expect("createReport request")
        }

        async fn create_ok(&self, token: &str, start: &str, end: &str) -> String {
            let response = self.create(token, report_request(start, end)).await;
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.expect("createReport json");
            body["reportId"].as_str().expect("reportId").to_string()
        }

        async fn get(&self, token: &str, path: &str) -> reqwest::Response {
            self.client
                .get(format!("{}{path}", self.base))
                .header("x-amz-access-token", token)
                .send()
                .await
                .expect("get request")
        }

        async fn report(&self, token: &str, report_id: &str) -> Value {
            let response = self
                .get(token, &format!("/reports/2021-06-30/reports/{report_id}"))
                .await;
            assert_eq!(response.status(), 200);
            response.json().await.expect("getReport json")
        }

        /// getReportDocument then the download; returns the raw (gzip) bytes.
        async fn download(&self, token: &str, document_id: &str) -> Vec<u8> {
            let response = self
                .get(
                    token,
                    &format!("/reports/2021-06-30/documents/{document_id}"),
                )
                .await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("getReportDocument json");
            assert_eq!(body["compressionAlgorithm"], "GZIP");
            let url = body["url"].as_str().expect("url");
            let response = self.client.get(url).send().await.expect("download");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("document bytes").to_vec()
        }
    }

    fn report_request(start: &str, end: &str) -> Value {
        json!({
            "reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT",
            "marketplaceIds": [MARKETPLACE],
            "dataStartTime": start,
            "dataEndTime": end,
        })
    }

    fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    fn document_rows(document: &Value) -> Vec<SalesRow> {
        document["reportData"]
            .as_array()
            .expect("reportData")
            .iter()
            .map(|row| {
                let start = parse_ts(row["startTime"].as_str().expect("startTime")).expect("ts");
                let end = parse_ts(row["endTime"].as_str().expect("endTime")).expect("ts");
                assert_eq!(end - start, HOUR);
                SalesRow {
                    hour_utc: start,
                    asin: row["asin"].as_str().expect("asin").to_string(),
                    ordered_units: row["orderedUnits"].as_i64().expect("orderedUnits"),
                    ordered_revenue: row["orderedRevenue"].as_f64().expect("orderedRevenue"),
                }
            })
            .collect()
    }

    fn expected_rows(seed: u64, asins: u32, start: &str, end: &str) -> Vec<SalesRow> {
        let start = parse_ts(start).expect("start");
        let end = parse_ts(end).expect("end");
        amazon::full_hours(start, end)
            .flat_map(|hour| amazon::vendor_sales_rows(seed, MARKETPLACE, asins, hour))
            .collect()
    }

    #[tokio::test]
    async fn create_poll_download_serves_vendor_sales_rows() {
        let running = start(instant_config()).await;
        let token = running.token("seller-a").await;

        let response = running.create(&token, report_request(START, END)).await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "0.0167");
        let body: Value = response.json().await.expect("json");
        let report_id = body["reportId"].as_str().expect("reportId").to_string();

        let response = running
            .get(&token, &format!("/reports/2021-06-30/reports/{report_id}"))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-amzn-ratelimit-limit"], "2.0");
        let report: Value = response.json().await.expect("json");
        assert_eq!(report["processingStatus"], "DONE");
        assert_eq!(report["reportId"], report_id.as_str());
        assert_eq!(report["reportType"], "GET_VENDOR_REAL_TIME_SALES_REPORT");
        assert_eq!(report["dataStartTime"], START);
        assert_eq!(report["dataEndTime"], END);
        assert_eq!(report["marketplaceIds"], json!([MARKETPLACE]));
        assert!(report["createdTime"].is_string());
        assert!(report["processingEndTime"].is_string());
        let document_id = report["reportDocumentId"]
            .as_str()
            .expect("reportDocumentId");

        let bytes = running.download(&token, document_id).await;
        let document: Value =
            serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("document json");
        let spec = &document["reportSpecification"];
        assert_eq!(spec["reportType"], "GET_VENDOR_REAL_TIME_SALES_REPORT");
        assert_eq!(spec["dataStartTime"], START);
        assert_eq!(spec["dataEndTime"], END);
        assert_eq!(spec["marketplaceIds"], json!([MARKETPLACE]));
        let rows = document_rows(&document);
        let expected = expected_rows(42, 8, START, END);
        assert!(!expected.is_empty());
        assert_eq!(rows, expected);

        let served = running.sim.served_rows();
        assert_eq!(
            served.iter().map(ServedRow::sales_row).collect::<Vec<_>>(),
            expected
        );
        assert!(served
            .iter()
            .all(|row| row.seller == "seller-a" && row.marketplace == MARKETPLACE));

        // The control endpoints say the same over HTTP.
        let stats: SimStats = running
            .client
            .get(format!("{}/_sim/stats", running.base))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        assert_eq!(stats, running.sim.stats());
        for operation in [
            "token",
            "createReport",
            "getReport",
            "getReportDocument",
            "downloadDocument",
        ] {
            assert_eq!(stats.calls(operation), 1, "{operation}");
            assert_eq!(stats.throttled(operation), 0, "{operation}");
        }
        let served_json: Value = running
            .client
            .get(format!("{}/_sim/served", running.base))
            .send()
            .await
            .expect("served")
            .json()
            .await
            .expect("served json");
        assert_eq!(
            served_json["rows"].as_array().map(Vec::len),
            Some(served.len())
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn create_report_is_throttled_once_the_burst_is_spent() {
        let mut config = instant_config();
        config.rates.insert(
            "createReport".to_string(),
            RateSpec {
                rate: 0.001,
                burst: 2.0,
            },
        );
        config.faults.retry_after_secs = Some(7);
        let running = start(config).await;
        let token = running.token("seller-a").await;
        running.create_ok(&token, START, END).await;
        running.create_ok(&token, START, END).await;

        let response = running.create(&token, report_request(START, END)).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert!(response.headers().get("x-amzn-ratelimit-limit").is_none());
        assert_eq!(response.text().await.expect("body"), QUOTA_BODY);

        // Buckets are per seller.
        let other = running.token("seller-b").await;
        running.create_ok(&other, START, END).await;

        let stats = running.sim.stats();
        assert_eq!(stats.calls("createReport"), 4);
        assert_eq!(stats.throttled("createReport"), 1);
        running.stop().await;
    }

    #[tokio::test]
    async fn unknown_and_expired_tokens_are_refused() {
        let running = start(SimConfig {
            token_lifetime: Duration::ZERO,
            ..instant_config()
        })
        .await;
        let response = running
            .create("not-a-token", report_request(START, END))
            .await;
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":""}]}"#
        );

        let expired = running.token("seller-a").await;
        let response = running.get(&expired, "/reports/2021-06-30/reports/1").await;
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":"The access token you provided has expired."}]}"#
        );

        let response = running
            .client
            .post(format!("{}/auth/o2/token", running.base))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "c"),
                ("client_secret", "s"),
            ])
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "invalid_request");

        let response = running
            .client
            .post(format!("{}/auth/o2/token", running.base))
            .body("not a form")
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 400);
        assert_eq!(running.sim.stats().calls("token"), 3);
        running.stop().await;
    }

    #[tokio::test]
    async fn create_report_validates_its_input() {
        let running = start(instant_config()).await;
        let token = running.token("seller-a").await;
        let cases = [
            (
                json!({"reportType": "GET_FLAT_FILE_OPEN_LISTINGS_DATA", "marketplaceIds": [MARKETPLACE], "dataStartTime": START, "dataEndTime": END}),
                "reportType",
            ),
            (
                json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE, "A2EUQ1WTGCTBG2"], "dataStartTime": START, "dataEndTime": END}),
                "marketplaceIds",
            ),
            (
                json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE], "dataStartTime": "yesterday", "dataEndTime": END}),
                "dataStartTime",
            ),
            (
                json!({"reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT", "marketplaceIds": [MARKETPLACE], "dataStartTime": START}),
                "dataEndTime",
            ),
            (report_request(END, START), "dataStartTime"),
            (report_request(START, START), "dataStartTime"),
            (report_request(START, "2026-01-09T00:00:00Z"), "dataEndTime"),
            (json!([1, 2]), "body"),
        ];
        for (body, field) in cases {
            let response = running.create(&token, body.clone()).await;
            assert_eq!(response.status(), 400, "{body}");
            let answer: Value = response.json().await.expect("json");
            assert_eq!(answer["errors"][0]["code"], "InvalidInput");
            let message = answer["errors"][0]["message"].as_str().expect("message");
            assert!(message.starts_with(field), "{message} should name {field}");
        }
        let response = running
            .client
            .post(format!("{}/reports/2021-06-30/reports", running.base))
            .header("x-amz-access-token", &token)
            .body("{not json")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400);
        let response = running
            .get(&token, "/reports/2021-06-30/nothing-here")
            .await;
        assert_eq!(response.status(), 404);
        running.stop().await;
    }

    #[tokio::test]
    async fn reports_and_documents_belong_to_their_seller() {
        let running = start(instant_config()).await;
        let token_a = running.token("seller-a").await;
        let token_b = running.token("seller-b").await;
        let report_id = running.create_ok(&token_a, START, END).await;
        let report = running.report(&token_a, &report_id).await;
        let document_id = report["reportDocumentId"].as_str().expect("document id");

        let response = running
            .get(
                &token_b,
                &format!("/reports/2021-06-30/reports/{report_id}"),
            )
            .await;
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "NotFound");
        let response = running
            .get(
                &token_b,
                &format!("/reports/2021-06-30/documents/{document_id}"),
            )
            .await;
        assert_eq!(response.status(), 404);
        running.stop().await;
    }

    #[tokio::test]
    async fn reports_wait_in_queue_for_the_processing_latency() {
        let running = start(SimConfig {
            processing_latency: Duration::from_secs(3600),
            ..instant_config()
        })
        .await;
        let token = running.token("seller-a").await;
        let report_id = running.create_ok(&token, START, END).await;
        let report = running.report(&token, &report_id).await;
        assert_eq!(report["processingStatus"], "IN_QUEUE");
        assert!(report.get("reportDocumentId").is_none());
        assert!(report.get("processingStartTime").is_none());
        running.stop().await;
    }

    #[test]
    fn phases_follow_elapsed_time() {
        let sim = Simulator::new(SimConfig {
            processing_latency: Duration::from_secs(10),
            ..SimConfig::default()
        });
        let report = Report {
            seller: "s".into(),
            marketplace: MARKETPLACE.into(),
            start: 0,
            end: HOUR,
            created_at: 100.0,
            outcome: Outcome::Done(None),
            document_id: None,
        };
        assert_eq!(sim.phase(&report, 100.0), Phase::InQueue);
        assert_eq!(sim.phase(&report, 104.9), Phase::InQueue);
        assert_eq!(sim.phase(&report, 105.0), Phase::InProgress);
        assert_eq!(sim.phase(&report, 109.9), Phase::InProgress);
        assert_eq!(sim.phase(&report, 110.0), Phase::Ended);
    }

    #[tokio::test]
    async fn scheduled_faults_hit_the_nth_call() {
        let schedule = |operation: &str, nth: u64, fault: FaultKind| ScheduledFault {
            operation: operation.to_string(),
            nth,
            fault,
        };
        let mut config = instant_config();
        config.faults.schedule = vec![
            schedule("createReport", 1, FaultKind::Fatal),
            schedule("createReport", 2, FaultKind::Cancelled),
            schedule("createReport", 3, FaultKind::Truncated),
            schedule("createReport", 4, FaultKind::Malformed),
            schedule("createReport", 5, FaultKind::WrongWindow),
            schedule("createReport", 6, FaultKind::ServerError),
            schedule("getReport", 1, FaultKind::Throttle),
            schedule("downloadDocument", 5, FaultKind::Truncated),
        ];
        let running = start(config).await;
        let token = running.token("seller-a").await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(running.create_ok(&token, START, END).await);
        }
        let response = running.create(&token, report_request(START, END)).await;
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.text().await.expect("body"),
            r#"{"errors":[{"code":"InternalFailure","message":"We encountered an internal error. Please try again.","details":""}]}"#
        );

        // getReport #1 is throttled, whatever the report.
        let response = running
            .get(&token, &format!("/reports/2021-06-30/reports/{}", ids[0]))
            .await;
        assert_eq!(response.status(), 429);

        // FATAL: the document is an error document.
        let fatal = running.report(&token, &ids[0]).await;
        assert_eq!(fatal["processingStatus"], "FATAL");
        let bytes = running
            .download(&token, fatal["reportDocumentId"].as_str().expect("id"))
            .await;
        let error: Value = serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("json");
        assert!(error["errorDetails"].is_string());

        // CANCELLED: no document.
        let cancelled = running.report(&token, &ids[1]).await;
        assert_eq!(cancelled["processingStatus"], "CANCELLED");
        assert!(cancelled.get("reportDocumentId").is_none());

        // Truncated: every download of it is cut.
        let truncated = running.report(&token, &ids[2]).await;
        assert_eq!(truncated["processingStatus"], "DONE");
        let bytes = running
            .download(&token, truncated["reportDocumentId"].as_str().expect("id"))
            .await;
        assert!(gunzip(&bytes).is_err());

        // Malformed: gunzips, but is not JSON.
        let malformed = running.report(&token, &ids[3]).await;
        let bytes = running
            .download(&token, malformed["reportDocumentId"].as_str().expect("id"))
            .await;
        let text = gunzip(&bytes).expect("gunzip");
        assert!(serde_json::from_slice::<Value>(&text).is_err());

        // Wrong window: shifted by one hour, rows included.
        let wrong = running.report(&token, &ids[4]).await;
        let wrong_document_id = wrong["reportDocumentId"].as_str().expect("id").to_string();
        let bytes = running.download(&token, &wrong_document_id).await;
        let document: Value =
            serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("json");
        assert_eq!(
            document["reportSpecification"]["dataStartTime"],
            "2025-12-09T01:00:00Z"
        );
        assert_eq!(
            document["reportSpecification"]["dataEndTime"],
            "2025-12-09T07:00:00Z"
        );
        assert_eq!(
            document_rows(&document),
            expected_rows(42, 8, "2025-12-09T01:00:00Z", "2025-12-09T07:00:00Z")
        );
        assert!(
            running.sim.served_rows().is_empty(),
            "spoiled documents are not served rows"
        );

        // A fresh, intact report; its first download is download #5, scheduled truncated.
        let good_id = running.create_ok(&token, START, END).await;
        let good = running.report(&token, &good_id).await;
        let good_document_id = good["reportDocumentId"].as_str().expect("id");
        assert!(gunzip(&running.download(&token, good_document_id).await).is_err());
        let bytes = running.download(&token, good_document_id).await;
        let document: Value =
            serde_json::from_slice(&gunzip(&bytes).expect("gunzip")).expect("json");
        assert_eq!(document_rows(&document), expected_rows(42, 8, START, END));
        assert_eq!(
            running.sim.served_rows().len(),
            document_rows(&document).len()
        );

        let stats = running.sim.stats();
        assert_eq!(stats.server_errors("createReport"), 1);
        assert_eq!(stats.throttled("getReport"), 1);
        assert_eq!(stats.calls("createReport"), 7);
        running.stop().await;
    }

    #[tokio::test]
    async fn probabilistic_faults_and_put_faults() {
        let running = start(instant_config()).await;
        let token = running.token("seller-a").await;
        let put = |body: Value| {
            running
                .client
                .put(format!("{}/_sim/faults", running.base))
                .json(&body)
                .send()
        };
        let response = put(json!({"throttle": 1.0, "retry_after_secs": 3}))
            .await
            .expect("put");
        assert_eq!(response.status(), 200);
        let response = running.create(&token, report_request(START, END)).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");

        let response = put(json!({"server_error": 1.0})).await.expect("put");
        assert_eq!(response.status(), 200);
        let response = running.get(&token, "/reports/2021-06-30/reports/1").await;
        assert_eq!(response.status(), 500);

        let response = put(json!({"fatal": 1.0})).await.expect("put");
        assert_eq!(response.status(), 200);
        let report_id = running.create_ok(&token, START, END).await;
        assert_eq!(
            running.report(&token, &report_id).await["processingStatus"],
            "FATAL"
        );

        for bad in [
            json!({"throttle": 1.5}),
            json!({"bogus": 1}),
            json!({"schedule": [{"operation": "nope", "nth": 1, "fault": "throttle"}]}),
            json!({"schedule": [{"operation": "getReport", "nth": 1, "fault": "explode"}]}),
        ] {
            let response = put(bad.clone()).await.expect("put");
            assert_eq!(response.status(), 400, "{bad}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["errors"][0]["code"], "InvalidInput");
        }
        assert_eq!(
            running.sim.faults().fatal,
            1.0,
            "a refused PUT leaves the faults alone"
        );

        let stats = running.sim.stats();
        assert_eq!(stats.throttled("createReport"), 1);
        assert_eq!(stats.server_errors("getReport"), 1);
        running.stop().await;
    }

    #[tokio::test]
    async fn document_urls_expire() {
        let running = start(SimConfig {
            document_url_lifetime: Duration::ZERO,
            ..instant_config()
        })
        .await;
        let token = running.token("seller-a").await;
        let report_id = running.create_ok(&token, START, END).await;
        let report = running.report(&token, &report_id).await;
        let document_id = report["reportDocumentId"].as_str().expect("id");
        let response = running
            .get(
                &token,
                &format!("/reports/2021-06-30/documents/{document_id}"),
            )
            .await;
        let body: Value = response.json().await.expect("json");
        let url = body["url"].as_str().expect("url");
        assert!(url.starts_with(&format!(
            "{}/_documents/{document_id}?expires=",
            running.base
        )));
        let response = running.client.get(url).send().await.expect("download");
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.text().await.expect("body"),
            "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        );
        let response = running
            .client
            .get(format!("{}/_documents/{document_id}", running.base))
            .send()
            .await
            .expect("download");
        assert_eq!(response.status(), 403);
        assert!(running.sim.served_rows().is_empty());
        running.stop().await;
    }

    #[test]
    fn config_and_faults_round_trip_through_serde() {
        let config: SimConfig = serde_json::from_value(json!({
            "processing_latency": "500ms",
            "rates": {"getReport": {"rate": 0.5, "burst": 3}},
            "faults": {"truncated": 0.1, "schedule": [{"operation": "token", "nth": 2, "fault": "server_error"}]}
        }))
        .expect("config");
        assert_eq!(config.seed, 42);
        assert_eq!(config.processing_latency, Duration::from_millis(500));
        assert_eq!(config.token_lifetime, Duration::from_secs(3600));
        assert_eq!(
            config.rate_for("getReport"),
            Some(RateSpec {
                rate: 0.5,
                burst: 3.0
            })
        );
        assert_eq!(
            config.rate_for("createReport"),
            Some(RateSpec {
                rate: 0.0167,
                burst: 15.0
            })
        );
        assert_eq!(config.rate_for("downloadDocument"), None);
        assert_eq!(config.faults.schedule[0].fault, FaultKind::ServerError);
        assert!(config.faults.validate().is_ok());
        assert!(serde_json::from_value::<SimConfig>(json!({"sed": 1})).is_err());

        let stats = serde_json::to_value(SimStats::default()).expect("stats");
        let keys = json!({"token": 0, "createReport": 0, "getReport": 0, "getReportDocument": 0, "downloadDocument": 0});
        assert_eq!(
            stats,
            json!({"calls": keys, "throttled": keys, "server_errors": keys})
        );
    }
}
