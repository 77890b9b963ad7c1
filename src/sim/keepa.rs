//! The Keepa simulator, mounted beside SP-API in the same server. It follows Keepa's API
//! as its official clients use it (the keepa Python client, akaszynski/keepa
//! `keepa_sync.py`/`utils.py`/`constants.py`; Keepa's Java backend, keepacom/api_backend
//! `Product.java`, `Stats.java`, `Response.java`, `RequestError.java`).
//!
//! - `GET /product?key=..&domain=1&asin=A,B,C&stats=365&history=1[&buybox=1]`, also as
//!   `/product/?...` (the Python client's form, trailing slash): up to 100 ASINs. Costs
//!   `tokens_per_asin` per ASIN (+2 with `buybox=1`). Served when the key's balance is
//!   positive *before* the request; the cost is then subtracted, so the balance may go
//!   negative (as Keepa does). With a balance <= 0: 429 `NOT_ENOUGH_TOKEN`.
//! - `GET /token?key=..` (also `/token/`): the balance alone, free.
//! - Every answer carries `timestamp` (ms), `tokensLeft`, `refillIn` (ms to the next
//!   refill), `refillRate` (an integer, tokens per minute), `tokenFlowReduction`,
//!   `tokensConsumed`, `processingTimeInMs`; errors add Keepa's `error` object
//!   `{"type", "message", "details"}` with the status codes the Python client knows:
//!   400 `REQUEST_REJECTED` (an unknown key, listed in `rejected_keys`, or empty; a bad
//!   parameter), 402 `PAYMENT_REQUIRED` (keys in `expired_keys`), 429 `NOT_ENOUGH_TOKEN`,
//!   500 `INTERNAL_SERVER_ERROR`.
//! - The balance of a key starts at `initial_tokens` (default: full, 60 minutes of refill)
//!   and gains `refill_rate * refill_period / 1min` tokens every `refill_period` (Keepa: one
//!   minute), up to 60 minutes of refill.
//! - Products are deterministic from the seed and the ASIN ([`product_json`]): `asin`,
//!   `domainId`, `title`, `productType` 0, `csv` with all [`CSV_SLOTS`] (36) price-type
//!   slots, `null` where the type has no history: 0 AMAZON, 1 NEW, 3 SALES, 11 COUNT_NEW,
//!   16 RATING, 17 COUNT_REVIEWS as `[keepaMinutes, value, ...]`, and with `buybox=1` 18
//!   BUY_BOX_SHIPPING as `[keepaMinutes, value, shipping, ...]`; with `stats` the `stats`
//!   object (`current`, `avg`, `avg30`, `avg90`, `avg180`, `avg365`, `atIntervalStart`,
//!   `outOfStockPercentage*` indexed like `csv`, -1 for none; `min`, `max`,
//!   `minInInterval`, `maxInInterval` as `[keepaMinutes, value]` or null; counts).
//!   Unknown ASINs (starting `UNKNOWN` or in `unknown_asins`) come back as
//!   `{"asin", "domainId", "productType": 4, "csv": null, "title": null}` and still cost
//!   their token. ASINs starting `PARTIAL` or in `incomplete_asins` come back without
//!   `stats` (the "Missing 1yr Avg" of seed 004).
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
    /// Tokens per minute of the plan (Keepa's `refillRate`, an integer).
    pub refill_rate: u32,
    /// How often tokens arrive (Keepa: every minute); each arrival brings
    /// `refill_rate * refill_period / 60s` tokens.
    #[serde(with = "humantime_serde")]
    pub refill_period: Duration,
    /// The balance a key starts with; default: full (60 minutes of refill).
    pub initial_tokens: Option<i64>,
    /// Tokens one ASIN of a product request costs.
    pub tokens_per_asin: i64,
    /// Keys Keepa does not know: 400 `REQUEST_REJECTED`.
    pub rejected_keys: Vec<String>,
    /// Keys whose subscription ended: 402 `PAYMENT_REQUIRED`.
    pub expired_keys: Vec<String>,
    /// ASINs Keepa does not know (besides those starting `UNKNOWN`).
    pub unknown_asins: Vec<String>,
    /// ASINs served without stats (besides those starting `PARTIAL`).
    pub incomplete_asins: Vec<String>,
}

impl Default for KeepaSimConfig {
    fn default() -> Self {
        KeepaSimConfig {
            refill_rate: 20,
            refill_period: Duration::from_secs(60),
            initial_tokens: None,
            tokens_per_asin: 1,
            rejected_keys: Vec::new(),
            expired_keys: Vec::new(),
            unknown_asins: Vec::new(),
            incomplete_asins: Vec::new(),
        }
    }
}

impl KeepaSimConfig {
    /// The most a balance refills to: 60 minutes of refill.
    pub fn capacity(&self) -> f64 {
        (f64::from(self.refill_rate) * 60.0).max(1.0)
    }

    fn per_period(&self) -> f64 {
        f64::from(self.refill_rate) * self.period_secs() / 60.0
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
    /// 400 `REQUEST_REJECTED` and 402 `PAYMENT_REQUIRED` for the key.
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

/// Keepa's price types (`csv` indices, Product.CsvType): the product object's `csv` and
/// the stats arrays have one slot per type.
pub const CSV_SLOTS: usize = 36;
const CSV_AMAZON: usize = 0;
const CSV_NEW: usize = 1;
const CSV_SALES: usize = 3;
const CSV_COUNT_NEW: usize = 11;
const CSV_RATING: usize = 16;
const CSV_COUNT_REVIEWS: usize = 17;
const CSV_BUY_BOX_SHIPPING: usize = 18;

/// What the simulator serves for a product request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductRequest {
    pub domain: i64,
    /// `stats=` given: the `stats` object, its interval in days.
    pub stats_days: Option<i64>,
    /// `buybox=1`: the BUY_BOX_SHIPPING history (slot 18).
    pub buybox: bool,
}

/// The product the simulator serves for `asin`.
pub fn product_json(seed: u64, asin: &str, request: ProductRequest, now_unix: f64) -> Value {
    let hash = fnv(&[&seed.to_le_bytes(), asin.as_bytes()]);
    let base = 1_000 + (hash % 9_000) as i64;
    let rank = 1_000 + ((hash >> 20) % 200_000) as i64;
    let now = keepa_minutes(now_unix);
    // A year of weekly points, deterministic wiggles around the base price: (minute,
    // value) per type that has a history.
    let points: i64 = 52;
    let mut series: Vec<Option<Vec<(i64, i64)>>> = vec![None; CSV_SLOTS];
    let mut push = |slot: usize, at: i64, value: i64| {
        series[slot].get_or_insert_with(Vec::new).push((at, value));
    };
    for week in 0..points {
        let at = now - (points - week) * 7 * 24 * 60;
        let wiggle = ((hash >> (week % 48)) % 200) as i64 - 100;
        push(CSV_AMAZON, at, base + wiggle);
        push(CSV_NEW, at, base + wiggle + 50);
        push(CSV_SALES, at, rank + wiggle * 10);
        push(CSV_COUNT_NEW, at, 3 + (wiggle.rem_euclid(7)));
        push(CSV_RATING, at, 40 + (hash % 10) as i64);
        push(CSV_COUNT_REVIEWS, at, 100 + week * 3);
        if request.buybox {
            push(CSV_BUY_BOX_SHIPPING, at, base + wiggle + 40);
        }
    }
    let csv: Vec<Value> = series
        .iter()
        .enumerate()
        .map(|(slot, points)| match points {
            None => Value::Null,
            Some(points) => {
                let mut flat = Vec::with_capacity(points.len() * 3);
                for (at, value) in points {
                    flat.push(*at);
                    flat.push(*value);
                    if slot == CSV_BUY_BOX_SHIPPING {
                        flat.push(0); // shipping cost
                    }
                }
                json!(flat)
            }
        })
        .collect();
    let mut product = json!({
        "asin": asin,
        "domainId": request.domain,
        "productType": 0,
        "title": format!("Simulated product {asin}"),
        "trackingSince": now - points * 7 * 24 * 60,
        "lastUpdate": now,
        "lastPriceChange": now,
        "csv": csv,
    });
    if let Some(days) = request.stats_days {
        product["stats"] = stats_json(&series, now, days);
    }
    product
}

/// What one stats array holds for a price type's history (`None`: -1).
type Pick<'a> = &'a dyn Fn(&[(i64, i64)]) -> Option<i64>;

/// Keepa's `stats` object over `series` at `now` (Keepa minutes), `days` the requested
/// interval.
fn stats_json(series: &[Option<Vec<(i64, i64)>>], now: i64, days: i64) -> Value {
    let since = |days: i64| now - days * 24 * 60;
    let per_slot = |pick: Pick<'_>| -> Vec<i64> {
        series
            .iter()
            .map(|points| points.as_deref().and_then(pick).unwrap_or(-1))
            .collect()
    };
    let average = |from: i64| {
        move |points: &[(i64, i64)]| {
            let values: Vec<i64> = points
                .iter()
                .filter(|(at, _)| *at >= from)
                .map(|(_, value)| *value)
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<i64>() / values.len() as i64)
        }
    };
    let extreme = |from: i64, lowest: bool| -> Vec<Value> {
        series
            .iter()
            .map(|points| {
                let points = points.as_deref()?;
                let inside = points.iter().filter(|(at, _)| *at >= from);
                let best = if lowest {
                    inside.min_by_key(|(_, value)| *value)
                } else {
                    inside.max_by_key(|(_, value)| *value)
                };
                best.map(|(at, value)| json!([at, value]))
            })
            .map(|value| value.unwrap_or(Value::Null))
            .collect()
    };
    let interval = since(days);
    let zeros = |points: &[(i64, i64)]| (!points.is_empty()).then_some(0);
    json!({
        "current": per_slot(&|points| points.last().map(|(_, value)| *value)),
        "avg": per_slot(&average(interval)),
        "avg30": per_slot(&average(since(30))),
        "avg90": per_slot(&average(since(90))),
        "avg180": per_slot(&average(since(180))),
        "avg365": per_slot(&average(since(365))),
        "atIntervalStart": per_slot(&|points| {
            points.iter().find(|(at, _)| *at >= interval).map(|(_, value)| *value)
        }),
        "min": extreme(i64::MIN, true),
        "max": extreme(i64::MIN, false),
        "minInInterval": extreme(interval, true),
        "maxInInterval": extreme(interval, false),
        "outOfStockPercentageInInterval": per_slot(&zeros),
        "outOfStockPercentage30": per_slot(&zeros),
        "outOfStockPercentage90": per_slot(&zeros),
        "totalOfferCount": series[CSV_COUNT_NEW]
            .as_deref()
            .and_then(|points| points.last())
            .map_or(-2, |(_, count)| *count),
        "lastOffersUpdate": -1,
        "salesRankDrops30": 4,
        "salesRankDrops90": 12,
        "salesRankDrops180": 25,
        "salesRankDrops365": 51,
    })
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
        .route("/product/", get(product))
        .route("/token", get(token))
        .route("/token/", get(token))
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

/// Keepa's error answer: `body` (the token fields, when the key has a balance) plus
/// `error: {type, message, details}` (RequestError.java).
fn keepa_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    mut body: serde_json::Map<String, Value>,
) -> Response {
    body.insert(
        "error".into(),
        json!({"type": kind, "message": message, "details": Value::Null}),
    );
    (status, Json(Value::Object(body))).into_response()
}

/// The envelope of an answer to a request without a known key: the time fields only.
fn bare(now: f64) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    body.insert("timestamp".into(), json!((now * 1000.0) as i64));
    body.insert("tokensLeft".into(), json!(0));
    body.insert("refillIn".into(), json!(0));
    body.insert("refillRate".into(), json!(0));
    body.insert("tokenFlowReduction".into(), json!(0.0));
    body.insert("tokensConsumed".into(), json!(0));
    body.insert("processingTimeInMs".into(), json!(0));
    body
}

/// The key of the request, or Keepa's refusal: 400 `REQUEST_REJECTED` for an unknown
/// key, 402 `PAYMENT_REQUIRED` for an expired one.
fn check_key(state: &KeepaSim, query: &HashMap<String, String>) -> Result<String, Box<Response>> {
    let key = query.get("key").cloned().unwrap_or_default();
    let now = state.sim.unix_now();
    if key.is_empty() || state.config.rejected_keys.contains(&key) {
        state.lock().stats.unauthorized += 1;
        return Err(Box::new(keepa_error(
            StatusCode::BAD_REQUEST,
            "REQUEST_REJECTED",
            "Invalid access key.",
            bare(now),
        )));
    }
    if state.config.expired_keys.contains(&key) {
        state.lock().stats.unauthorized += 1;
        return Err(Box::new(keepa_error(
            StatusCode::PAYMENT_REQUIRED,
            "PAYMENT_REQUIRED",
            "The subscription of this access key has expired.",
            bare(now),
        )));
    }
    Ok(key)
}

async fn token(
    State(state): State<Arc<KeepaSim>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.lock().stats.token_calls += 1;
    let key = match check_key(&state, &query) {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    let now = state.sim.unix_now();
    if let Some(FaultKind::ServerError) = state.sim.provider_fault("keepa.token") {
        state.lock().stats.server_errors += 1;
        return keepa_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "simulated failure",
            bare(now),
        );
    }
    let mut guard = state.lock();
    let balance = refilled(&state, &mut guard, &key, now);
    let body = envelope(&state, balance, 0, now);
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

/// `stats=`: a number of days (Keepa also takes a date range `from,to`, answered here as
/// its length in days); `None` when absent or empty.
fn stats_days(value: Option<&String>) -> Result<Option<i64>, String> {
    let Some(text) = value
        .map(|text| text.trim())
        .filter(|text| !text.is_empty())
    else {
        return Ok(None);
    };
    if let Ok(days) = text.parse::<i64>() {
        return if (1..=36_500).contains(&days) {
            Ok(Some(days))
        } else {
            Err(format!("stats: {days} days is out of range"))
        };
    }
    let parts: Vec<&str> = text.split(',').collect();
    match parts.as_slice() {
        [from, to] => {
            let date = |text: &str| chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok();
            match (date(from), date(to)) {
                (Some(from), Some(to)) if to >= from => {
                    Ok(Some((to - from).num_days().clamp(1, 36_500)))
                }
                _ => Err(format!(
                    "stats: {text:?} is not a day count or a date range"
                )),
            }
        }
        _ => Err(format!(
            "stats: {text:?} is not a day count or a date range"
        )),
    }
}

async fn product(
    State(state): State<Arc<KeepaSim>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.lock().stats.product_calls += 1;
    let key = match check_key(&state, &query) {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    let now = state.sim.unix_now();
    let rejected = |message: String| {
        keepa_error(
            StatusCode::BAD_REQUEST,
            "REQUEST_REJECTED",
            &message,
            bare(now),
        )
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
        return rejected(format!(
            "asin: {} ASINs given; 1 to 100 are accepted",
            asins.len()
        ));
    }
    let domain = match query.get("domain").map(|text| text.trim().parse::<i64>()) {
        Some(Ok(domain)) if (1..=12).contains(&domain) && domain != 7 => domain,
        Some(_) => {
            return rejected("domain: expected a Keepa domain id (1 to 12, not 7)".to_string())
        }
        None => return rejected("domain: missing".to_string()),
    };
    let stats_days = match stats_days(query.get("stats")) {
        Ok(days) => days,
        Err(message) => return rejected(message),
    };
    let buybox = query.get("buybox").is_some_and(|value| value == "1");
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
                "Not enough tokens (simulated).",
                body,
            );
        }
        Some(FaultKind::ServerError) => {
            guard.stats.server_errors += 1;
            return keepa_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "simulated failure",
                bare(now),
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
            "Not enough tokens. Wait for the refill.",
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
                let request = ProductRequest {
                    domain,
                    stats_days: if partial { None } else { stats_days },
                    buybox,
                };
                product_json(seed, asin, request, now)
            }
        })
        .collect();
    body.insert("products".into(), Value::Array(products));
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

async fn stats(State(state): State<Arc<KeepaSim>>) -> Json<KeepaStats> {
    Json(state.lock().stats.clone())
}
