//! The bundled marketplace simulator: an axum server speaking SP-API's wire formats
//! (`docs/spapi-wire.md`) so that tests and the demo run the daemon over real HTTP.
//!
//! - LWA: `POST /auth/o2/token`; the refresh token names the selling partner (seller).
//! - Reports API 2021-06-30: createReport, getReport, getReportDocument, getReports,
//!   cancelReport, with a token bucket per (seller, operation) and Amazon's documented
//!   default rates; report processing times from a `fast` or `realistic` profile, and a
//!   `time_scale` that speeds up latencies and bucket refills together ([`SimProfile`]).
//! - `x-amzn-RequestId` on every answer; document urls on the listen address.
//! - Pre-signed style document downloads: `GET /_documents/{documentId}?expires={unix}`.
//! - Control: `GET /_sim/stats`, `GET|PUT /_sim/faults`, `GET /_sim/served`.
//!
//! Data comes from [`amazon::vendor_sales_rows`], deterministic from the seed. Faults
//! ([`SimFaults`]) are drawn from a seeded RNG or scheduled on the nth call of an operation.
//! All state sits behind one std `Mutex` held only for short, await-free sections.
//!
//! Layer 1 of docs/architecture.md. May use: `domain` only. May not be imported by the
//! product, except by `app` (the embedded simulator) and by `cli`/`bench`.

pub mod alias;
pub mod amazon;
mod bucket;
pub mod ebay;
mod faults;
mod handlers;
mod hostile;
pub mod keepa;
mod listing;
mod profile;
mod reports;
mod state;
mod stats;
pub mod stockx;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::domain::HOUR;

pub use faults::{FaultKind, ScheduledFault, SimFaults};
pub use profile::{
    SimProfile, REALISTIC_MAX_SECS, REALISTIC_MEDIAN_SECS, REALISTIC_STUCK, TIME_SCALE_MAX,
    TIME_SCALE_MIN,
};
use state::{AccessToken, Operation, Phase, Reject, Report, SimState, TokenGrant};
pub use stats::{OpCounts, ServedRow, SimStats};

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
    /// How long a report stays IN_QUEUE then IN_PROGRESS (half each) before it ends, in
    /// the `fast` profile; zero ends reports at creation. The `realistic` profile ignores it.
    #[serde(with = "humantime_serde")]
    pub processing_latency: Duration,
    /// How report processing times are drawn: `fast` (fixed) or `realistic`.
    pub profile: SimProfile,
    /// Simulated seconds per real second, applied to report processing times and to the
    /// SP-API rate-limit refills together (60: one simulated minute per real second).
    /// Clamped to [`TIME_SCALE_MIN`, `TIME_SCALE_MAX`].
    pub time_scale: f64,
    /// LWA `expires_in` of access tokens.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// How long a document url from getReportDocument stays valid.
    #[serde(with = "humantime_serde")]
    pub document_url_lifetime: Duration,
    /// Rate overrides by operation name (`createReport`, `getReport`, `getReportDocument`,
    /// `getReports`, `cancelReport`);
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
    /// The Alias simulator (catalog search, pricing insights).
    pub alias: alias::AliasSimConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            asins_per_marketplace: 25,
            processing_latency: Duration::from_secs(2),
            profile: SimProfile::Fast,
            time_scale: 1.0,
            token_lifetime: Duration::from_secs(3600),
            document_url_lifetime: Duration::from_secs(5 * 60),
            rates: BTreeMap::new(),
            faults: SimFaults::default(),
            ebay: ebay::EbaySimConfig::default(),
            stockx: stockx::StockxSimConfig::default(),
            keepa: keepa::KeepaSimConfig::default(),
            alias: alias::AliasSimConfig::default(),
        }
    }
}

impl SimConfig {
    /// `time_scale` within [`TIME_SCALE_MIN`, `TIME_SCALE_MAX`]; a non-finite one is 1.
    pub fn time_scale(&self) -> f64 {
        if self.time_scale.is_finite() {
            self.time_scale.clamp(TIME_SCALE_MIN, TIME_SCALE_MAX)
        } else {
            TIME_SCALE_MIN
        }
    }

    /// The SP-API operations [`SimConfig::rate_for`] limits.
    pub const RATE_LIMITED: [&'static str; 5] = [
        "createReport",
        "getReport",
        "getReportDocument",
        "getReports",
        "cancelReport",
    ];

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
            "getReports" | "cancelReport" => RateSpec {
                rate: 0.0222,
                burst: 10.0,
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

/// One report of [`Simulator::report_timeline`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReportTimeline {
    /// The seller (refresh token's selling partner) that created it.
    pub seller: String,
    /// The report's window (`dataStartTime`, `dataEndTime`), unix seconds.
    pub start: i64,
    pub end: i64,
    /// Simulator clock at creation: real seconds since the simulator started.
    pub created_at: f64,
    /// Real seconds from creation to its end (DONE, FATAL or CANCELLED) as drawn.
    pub processing: f64,
    /// Ended DONE (a document to apply), not FATAL, CANCELLED or cancelled by request.
    pub done: bool,
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
        let time_scale = config.time_scale();
        if time_scale != config.time_scale {
            warn!(
                time_scale = config.time_scale,
                used = time_scale,
                "time_scale out of range; clamped"
            );
        }
        let mut id_rng = rand::make_rng::<StdRng>();
        let instance_tag = id_rng.random_range(10_000..100_000);
        let state = SimState {
            faults: config.faults.clone(),
            fault_rng: StdRng::seed_from_u64(config.seed ^ 0x5eed_fa01_7000_0000),
            latency_rng: StdRng::seed_from_u64(config.seed ^ 0x1a7e_4c70_0000_0000),
            id_rng,
            address: None,
            page_tokens: HashMap::new(),
            page_token_order: std::collections::VecDeque::new(),
            next_id: 0,
            tokens: HashMap::new(),
            buckets: HashMap::new(),
            reports: HashMap::new(),
            reports_by_key: HashMap::new(),
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

    /// Every report created so far, in creation order: who asked, for which window, when (simulator clock,
    /// real seconds since start), how long its processing was drawn to take (real
    /// seconds) and whether it ended DONE with a document. Read-only, for benchmarks that
    /// compare a run with the quota-bound minimum of the latencies actually drawn.
    pub fn report_timeline(&self) -> Vec<ReportTimeline> {
        let state = self.lock();
        let mut reports: Vec<ReportTimeline> = state
            .reports
            .values()
            .map(|report| ReportTimeline {
                seller: report.seller.clone(),
                start: report.start,
                end: report.end,
                created_at: report.created_at,
                processing: report.ends_after,
                done: matches!(report.outcome, state::Outcome::Done(_))
                    && !report.cancelled_by_request,
            })
            .collect();
        reports.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        reports
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

    /// Records the address the simulator listens on; document urls are built on it
    /// (an unspecified address, `0.0.0.0` or `::`, becomes loopback).
    pub fn set_address(&self, address: SocketAddr) {
        let ip = match address.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        self.lock().address = Some(SocketAddr::new(ip, address.port()));
    }

    /// The address document urls are built on: the one [`serve`] listens on.
    fn address(&self) -> Option<SocketAddr> {
        self.lock().address
    }

    fn phase(&self, report: &Report, now: f64) -> Phase {
        let elapsed = now - report.created_at;
        if elapsed >= report.ends_after {
            Phase::Ended
        } else if elapsed < report.queued_for {
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
            state.id_rng.random::<u64>(),
            state.id_rng.random::<u64>()
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
}

/// Serves `sim` on `listener` until `shutdown` completes, then drains open requests.
/// Document urls are built on the listener's address (never on a request's `Host`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    sim.set_address(listener.local_addr()?);
    axum::serve(listener, sim.router())
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
