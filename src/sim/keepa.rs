//! The Keepa simulator, mounted beside SP-API in the same server.
//!
//! - `GET /product?key=..&domain=1&asin=A,B,C&stats=365&history=1[&buybox=1]`: up to 100
//!   ASINs. Costs `tokens_per_asin` per ASIN (+2 with `buybox=1`). Served when the key's
//!   balance is positive *before* the request; the cost is then subtracted, so the balance
//!   may go negative (as Keepa does). With a balance <= 0: 429 with the envelope and
//!   `error.type = NOT_ENOUGH_TOKEN`.
//! - `GET /token?key=..`: the balance alone, free.
//! - Every answer (also the 429) carries `timestamp` (ms), `tokensLeft`, `refillIn` (ms to
//!   the next refill), `refillRate` (per minute), `tokenFlowReduction`, `tokensConsumed`,
//!   `processingTimeInMs`.
//! - The balance of a key starts at `initial_tokens` (default: full, 60 minutes of refill)
//!   and gains `refill_rate * refill_period / 1min` tokens every `refill_period` (Keepa: one
//!   minute), up to 60 minutes of refill.
//! - Products are deterministic from the seed and the ASIN ([`product_json`]): `asin`,
//!   `domainId`, `title`, `productType` 0, `csv` (0 AMAZON, 1 NEW, 3 SALES histories as
//!   `[keepaMinutes, value, ...]`), and with `stats` the `stats` object (`current`, `avg90`,
//!   `avg365` indexed like `csv`). Unknown ASINs (starting `UNKNOWN` or in `unknown_asins`)
//!   come back as `{"asin", "domainId", "productType": 4, "csv": null, "title": null}` and
//!   still cost their token. ASINs starting `PARTIAL` or in `incomplete_asins` come back
//!   without `stats` (the "Missing 1yr Avg" of seed 004).
//! - Unknown keys (listed in `rejected_keys`, or empty) get 401.
//! - Faults: the shared [`super::SimFaults`] with `keepa.product` and `keepa.token`.
//! - `GET /_sim/keepa/stats`: calls, 429s, 500s, tokens consumed, the lowest balance seen
//!   and the ASINs of the last 1000 served product requests in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::stockx::fnv;
use super::{FaultKind, Simulator};

/// Operation names for fault schedules (`[simulator.faults]`, `/_sim/faults`).
pub const OPERATIONS: &[&str] = &["keepa.product", "keepa.token"];

/// Keepa simulator settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaSimConfig {
    /// Tokens per minute of the plan (Keepa's `refillRate`).
    pub refill_rate: f64,
    /// How often tokens arrive (Keepa: every minute); each arrival brings
    /// `refill_rate * refill_period / 60s` tokens.
    #[serde(with = "humantime_serde")]
    pub refill_period: Duration,
    /// The balance a key starts with; default: full (60 minutes of refill).
    pub initial_tokens: Option<i64>,
    /// Tokens one ASIN of a product request costs.
    pub tokens_per_asin: i64,
    /// Keys answered 401.
    pub rejected_keys: Vec<String>,
    /// ASINs Keepa does not know (besides those starting `UNKNOWN`).
    pub unknown_asins: Vec<String>,
    /// ASINs served without stats (besides those starting `PARTIAL`).
    pub incomplete_asins: Vec<String>,
}

impl Default for KeepaSimConfig {
    fn default() -> Self {
        KeepaSimConfig {
            refill_rate: 20.0,
            refill_period: Duration::from_secs(60),
            initial_tokens: None,
            tokens_per_asin: 1,
            rejected_keys: Vec::new(),
            unknown_asins: Vec::new(),
            incomplete_asins: Vec::new(),
        }
    }
}

impl KeepaSimConfig {
    /// The most a balance refills to: 60 minutes of refill.
    pub fn capacity(&self) -> f64 {
        (self.refill_rate * 60.0).max(1.0)
    }

    fn per_period(&self) -> f64 {
        self.refill_rate * self.period_secs() / 60.0
    }

    fn period_secs(&self) -> f64 {
        self.refill_period.as_secs_f64().max(0.001)
    }
}

/// Counters served by `GET /_sim/keepa/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeepaStats {
    pub product_calls: u64,
    pub token_calls: u64,
    /// Product requests served (200).
    pub served: u64,
    /// 429 NOT_ENOUGH_TOKEN (or injected).
    pub throttled: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    pub tokens_consumed: i64,
    /// The lowest balance any key had after a request.
    pub min_balance: i64,
    /// ASINs of the served product requests, oldest first (the last 1000 requests).
    pub requests: VecDeque<Vec<String>>,
}

struct Balance {
    tokens: f64,
    /// Unix seconds of the last refill tick.
    tick: f64,
}

struct KeepaState {
    balances: HashMap<String, Balance>,
    stats: KeepaStats,
}

struct KeepaSim {
    sim: Arc<Simulator>,
    config: KeepaSimConfig,
    state: Mutex<KeepaState>,
}

impl KeepaSim {
    fn lock(&self) -> MutexGuard<'_, KeepaState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keepa time: minutes since 2011-01-01.
fn keepa_minutes(unix: f64) -> i64 {
    ((unix as i64) - 1_293_840_000) / 60
}

/// The product the simulator serves for `asin` (with `stats` when asked).
pub fn product_json(seed: u64, asin: &str, domain: i64, with_stats: bool, now_unix: f64) -> Value {
    let hash = fnv(&[&seed.to_le_bytes(), asin.as_bytes()]);
    let base = 1_000 + (hash % 9_000) as i64;
    let rank = 1_000 + ((hash >> 20) % 200_000) as i64;
    let now = keepa_minutes(now_unix);
    let mut amazon = Vec::new();
    let mut new = Vec::new();
    let mut sales = Vec::new();
    // A year of weekly points, deterministic wiggles around the base price.
    let points = 52;
    for week in 0..points {
        let at = now - (points - week) * 7 * 24 * 60;
        let wiggle = ((hash >> (week % 48)) % 200) as i64 - 100;
        amazon.extend([at, base + wiggle]);
        new.extend([at, base + wiggle + 50]);
        sales.extend([at, rank + wiggle * 10]);
    }
    let average = |values: &[i64], last: usize| -> i64 {
        let prices: Vec<i64> = values.chunks(2).map(|pair| pair[1]).collect();
        let take = prices.len().min(last);
        let tail = &prices[prices.len() - take..];
        tail.iter().sum::<i64>() / (take.max(1) as i64)
    };
    let last = |values: &[i64]| values.last().copied().unwrap_or(-1);
    let mut product = json!({
        "asin": asin,
        "domainId": domain,
        "productType": 0,
        "title": format!("Simulated product {asin}"),
        "lastUpdate": now,
        "csv": [amazon.clone(), new.clone(), null, sales.clone()],
    });
    if with_stats {
        product["stats"] = json!({
            "current": [last(&amazon), last(&new), -1, last(&sales)],
            "avg90": [average(&amazon, 13), average(&new, 13), -1, average(&sales, 13)],
            "avg365": [average(&amazon, 52), average(&new, 52), -1, average(&sales, 52)],
        });
    }
    product
}

/// The Keepa routes.
pub(super) fn router(sim: Arc<Simulator>) -> Router<Arc<Simulator>> {
    let config = sim.config().keepa.clone();
    let state = Arc::new(KeepaSim {
        sim,
        config,
        state: Mutex::new(KeepaState {
            balances: HashMap::new(),
            stats: KeepaStats::default(),
        }),
    });
    Router::new()
        .route("/product", get(product))
        .route("/token", get(token))
        .route("/_sim/keepa/stats", get(stats))
        .with_state(state)
}

/// The envelope every answer carries, for `key` after refilling to `now`.
fn envelope(
    state: &KeepaSim,
    balance: &Balance,
    consumed: i64,
    now: f64,
) -> serde_json::Map<String, Value> {
    let period = state.config.period_secs();
    let refill_in = ((balance.tick + period - now) * 1000.0).ceil().max(0.0) as u64;
    let mut body = serde_json::Map::new();
    body.insert("timestamp".into(), json!((now * 1000.0) as i64));
    body.insert("tokensLeft".into(), json!(balance.tokens.floor() as i64));
    body.insert("refillIn".into(), json!(refill_in));
    body.insert("refillRate".into(), json!(state.config.refill_rate));
    body.insert("tokenFlowReduction".into(), json!(0.0));
    body.insert("tokensConsumed".into(), json!(consumed));
    body.insert("processingTimeInMs".into(), json!(1));
    body
}

/// Refills `key`'s balance to `now` (whole periods only) and returns it.
fn refilled<'a>(
    state: &KeepaSim,
    guard: &'a mut KeepaState,
    key: &str,
    now: f64,
) -> &'a mut Balance {
    let config = &state.config;
    let initial = config
        .initial_tokens
        .map_or(config.capacity(), |tokens| tokens as f64);
    let balance = guard.balances.entry(key.to_string()).or_insert(Balance {
        tokens: initial,
        tick: now,
    });
    let period = config.period_secs();
    let periods = ((now - balance.tick) / period).floor();
    if periods >= 1.0 {
        balance.tick += periods * period;
        if balance.tokens < config.capacity() {
            balance.tokens =
                (balance.tokens + periods * config.per_period()).min(config.capacity());
        }
    }
    balance
}

fn keepa_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    mut body: serde_json::Map<String, Value>,
) -> Response {
    body.insert("error".into(), json!({"type": kind, "message": message}));
    (status, Json(Value::Object(body))).into_response()
}

fn unauthorized() -> Response {
    keepa_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_KEY",
        "the access key is not valid",
        serde_json::Map::new(),
    )
}

fn check_key(state: &KeepaSim, query: &HashMap<String, String>) -> Option<String> {
    let key = query.get("key").cloned().unwrap_or_default();
    if key.is_empty() || state.config.rejected_keys.contains(&key) {
        state.lock().stats.unauthorized += 1;
        return None;
    }
    Some(key)
}

async fn token(
    State(state): State<Arc<KeepaSim>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.lock().stats.token_calls += 1;
    let Some(key) = check_key(&state, &query) else {
        return unauthorized();
    };
    if let Some(FaultKind::ServerError) = state.sim.provider_fault("keepa.token") {
        state.lock().stats.server_errors += 1;
        return keepa_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "simulated failure",
            serde_json::Map::new(),
        );
    }
    let now = state.sim.unix_now();
    let mut guard = state.lock();
    let balance = refilled(&state, &mut guard, &key, now);
    let body = envelope(&state, balance, 0, now);
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

async fn product(
    State(state): State<Arc<KeepaSim>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.lock().stats.product_calls += 1;
    let Some(key) = check_key(&state, &query) else {
        return unauthorized();
    };
    let asins: Vec<String> = query
        .get("asin")
        .map(|list| {
            list.split(',')
                .map(|asin| asin.trim().to_ascii_uppercase())
                .filter(|asin| !asin.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if asins.is_empty() || asins.len() > 100 {
        return keepa_error(
            StatusCode::BAD_REQUEST,
            "REQUEST_REJECTED",
            &format!("asin: {} ASINs given; 1 to 100 are accepted", asins.len()),
            serde_json::Map::new(),
        );
    }
    let domain = query
        .get("domain")
        .and_then(|text| text.parse::<i64>().ok())
        .unwrap_or(1);
    let with_stats = query.get("stats").is_some_and(|value| !value.is_empty());
    let buybox = query.get("buybox").is_some_and(|value| value == "1");
    let now = state.sim.unix_now();
    let fault = state.sim.provider_fault("keepa.product");
    let mut guard = state.lock();
    match fault {
        Some(FaultKind::Throttle) => {
            guard.stats.throttled += 1;
            let balance = refilled(&state, &mut guard, &key, now);
            let body = envelope(&state, balance, 0, now);
            return keepa_error(
                StatusCode::TOO_MANY_REQUESTS,
                "NOT_ENOUGH_TOKEN",
                "not enough tokens (simulated)",
                body,
            );
        }
        Some(FaultKind::ServerError) => {
            guard.stats.server_errors += 1;
            return keepa_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "simulated failure",
                serde_json::Map::new(),
            );
        }
        _ => {}
    }
    let cost = asins.len() as i64 * (state.config.tokens_per_asin + if buybox { 2 } else { 0 });
    let balance = refilled(&state, &mut guard, &key, now);
    if balance.tokens <= 0.0 {
        let body = envelope(&state, balance, 0, now);
        guard.stats.throttled += 1;
        return keepa_error(
            StatusCode::TOO_MANY_REQUESTS,
            "NOT_ENOUGH_TOKEN",
            "not enough tokens; wait for the refill",
            body,
        );
    }
    balance.tokens -= cost as f64;
    let after = balance.tokens.floor() as i64;
    let mut body = envelope(&state, balance, cost, now);
    guard.stats.served += 1;
    guard.stats.tokens_consumed += cost;
    guard.stats.min_balance = guard.stats.min_balance.min(after);
    if guard.stats.requests.len() >= 1000 {
        guard.stats.requests.pop_front();
    }
    guard.stats.requests.push_back(asins.clone());
    drop(guard);
    let seed = state.sim.config().seed;
    let config = &state.config;
    let products: Vec<Value> = asins
        .iter()
        .map(|asin| {
            if asin.starts_with("UNKNOWN") || config.unknown_asins.contains(asin) {
                json!({"asin": asin, "domainId": domain, "productType": 4, "csv": null, "title": null})
            } else {
                let partial = asin.starts_with("PARTIAL") || config.incomplete_asins.contains(asin);
                product_json(seed, asin, domain, with_stats && !partial, now)
            }
        })
        .collect();
    body.insert("products".into(), Value::Array(products));
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

async fn stats(State(state): State<Arc<KeepaSim>>) -> Json<KeepaStats> {
    Json(state.lock().stats.clone())
}
