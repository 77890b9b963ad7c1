//! The StockX simulator, mounted beside SP-API in the same server.
//!
//! - `POST /oauth/token` (form): the refresh-token grant; needs `client_id`,
//!   `client_secret` and a `refresh_token` not listed in `rejected_refresh_tokens`
//!   (those get 403 `invalid_grant`). Answers `access_token`, `expires_in`, `token_type`.
//! - `GET /v2/catalog/products/{productId}/variants/{variantId}/market-data`: needs
//!   `Authorization: Bearer <token from /oauth/token>` and an `x-api-key` not listed in
//!   `rejected_api_keys` (401 otherwise). The simulator takes the style id (SKU) as
//!   productId and the size as variantId. Answers `productId`, `variantId`,
//!   `currencyCode`, `lowestAskAmount`, `highestBidAmount`, `sellFasterAmount`,
//!   `earnMoreAmount` (amounts as strings, like StockX) and `lastSaleAmount`, deterministic
//!   from the seed, the SKU and the size ([`market_for`]).
//! - An hourly budget per api key (`hourly_budget`, seed 002's 100 calls/hour; every
//!   market-data request counts, whatever its answer): 429 with `Retry-After` (seconds to
//!   the next hour) when spent.
//! - 404 for SKUs starting `UNKNOWN` or listed in `unknown_skus`.
//! - Faults: the shared [`super::SimFaults`] through `Simulator::provider_fault` with the
//!   operations `stockx.token` and `stockx.marketData` (`throttle` → 429, `server_error` → 500).
//! - `GET /_sim/stockx/stats`: calls and answers per kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{FaultKind, Simulator};

/// Operation names for fault schedules (`[simulator.faults]`, `/_sim/faults`).
pub const OPERATIONS: &[&str] = &["stockx.token", "stockx.marketData"];

/// StockX simulator settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StockxSimConfig {
    /// Market-data calls per api key per clock hour (seed 002: 100).
    pub hourly_budget: u32,
    /// SKUs answered 404 (besides those starting `UNKNOWN`).
    pub unknown_skus: Vec<String>,
    /// Api keys answered 401.
    pub rejected_api_keys: Vec<String>,
    /// Refresh tokens the token endpoint refuses (403 `invalid_grant`).
    pub rejected_refresh_tokens: Vec<String>,
    /// `expires_in` of access tokens.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
}

impl Default for StockxSimConfig {
    fn default() -> Self {
        StockxSimConfig {
            hourly_budget: 100,
            unknown_skus: Vec::new(),
            rejected_api_keys: Vec::new(),
            rejected_refresh_tokens: Vec::new(),
            token_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// Counters served by `GET /_sim/stockx/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StockxStats {
    pub token_calls: u64,
    pub market_data_calls: u64,
    pub ok: u64,
    /// 429s: budget spent or injected.
    pub throttled: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    pub not_found: u64,
}

struct StockxState {
    /// Access token -> unix expiry.
    tokens: HashMap<String, f64>,
    /// Api key -> (hour start, calls in it).
    budgets: HashMap<String, (i64, u32)>,
    next_token: u64,
    stats: StockxStats,
}

struct StockxSim {
    sim: Arc<Simulator>,
    config: StockxSimConfig,
    state: Mutex<StockxState>,
}

impl StockxSim {
    fn lock(&self) -> MutexGuard<'_, StockxState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// FNV-1a over the parts: the simulator's deterministic "randomness".
pub(crate) fn fnv(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(b"|") {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The market the simulator serves for (`sku`, `size`): (lowest ask, highest bid, last
/// sale) in whole USD.
pub fn market_for(seed: u64, sku: &str, size: &str) -> (f64, f64, f64) {
    let hash = fnv(&[&seed.to_le_bytes(), sku.as_bytes(), size.as_bytes()]);
    let ask = 100 + (hash % 300) as i64;
    let bid = ask - 5 - ((hash >> 16) % 20) as i64;
    let last = bid + ((hash >> 32) % 10) as i64;
    (ask as f64, bid as f64, last as f64)
}

/// Whether the simulator answers 404 for `sku`.
pub fn is_unknown(config: &StockxSimConfig, sku: &str) -> bool {
    sku.starts_with("UNKNOWN") || config.unknown_skus.iter().any(|known| known == sku)
}

fn error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// The StockX routes.
pub(super) fn router(sim: Arc<Simulator>) -> Router<Arc<Simulator>> {
    let config = sim.config().stockx.clone();
    let state = Arc::new(StockxSim {
        sim,
        config,
        state: Mutex::new(StockxState {
            tokens: HashMap::new(),
            budgets: HashMap::new(),
            next_token: 0,
            stats: StockxStats::default(),
        }),
    });
    Router::new()
        .route("/oauth/token", post(token))
        .route(
            "/v2/catalog/products/{product_id}/variants/{variant_id}/market-data",
            get(market_data),
        )
        .route("/_sim/stockx/stats", get(stats))
        .with_state(state)
}

/// The answer a scheduled fault of `operation` gives, if one is due (counted in the
/// stats): a 429 with `throttled` or a 500 with `failed` as the body.
fn fault(
    state: &StockxSim,
    operation: &str,
    throttled: serde_json::Value,
    failed: serde_json::Value,
) -> Option<Response> {
    match state.sim.provider_fault(operation)? {
        FaultKind::Throttle => {
            state.lock().stats.throttled += 1;
            Some(error(StatusCode::TOO_MANY_REQUESTS, throttled))
        }
        FaultKind::ServerError => {
            state.lock().stats.server_errors += 1;
            Some(error(StatusCode::INTERNAL_SERVER_ERROR, failed))
        }
        _ => None,
    }
}

async fn token(
    State(state): State<Arc<StockxSim>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    state.lock().stats.token_calls += 1;
    if let Some(response) = fault(
        &state,
        "stockx.token",
        json!({"error": "too_many_requests", "error_description": "Rate limit exceeded"}),
        json!({"error": "server_error", "error_description": "simulated failure"}),
    ) {
        return response;
    }
    let Ok(Form(form)) = form else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "expected an application/x-www-form-urlencoded body"}),
        );
    };
    let field = |name: &str| form.get(name).filter(|value| !value.is_empty());
    if field("grant_type").map(String::as_str) != Some("refresh_token") {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "use grant_type=refresh_token"}),
        );
    }
    for name in ["client_id", "client_secret", "refresh_token"] {
        if field(name).is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": format!("missing {name}")}),
            );
        }
    }
    let refresh = field("refresh_token").cloned().unwrap_or_default();
    if state.config.rejected_refresh_tokens.contains(&refresh) {
        state.lock().stats.unauthorized += 1;
        return error(
            StatusCode::FORBIDDEN,
            json!({"error": "invalid_grant", "error_description": "Unknown or invalid refresh token."}),
        );
    }
    let lifetime = state.config.token_lifetime;
    let now = state.sim.unix_now();
    let mut guard = state.lock();
    guard.next_token += 1;
    let access = format!(
        "sx-{:016x}-{}",
        fnv(&[refresh.as_bytes(), &now.to_le_bytes()]),
        guard.next_token
    );
    guard
        .tokens
        .insert(access.clone(), now + lifetime.as_secs_f64());
    drop(guard);
    Json(json!({
        "access_token": access,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
        "scope": "offline_access openid",
    }))
    .into_response()
}

async fn market_data(
    State(state): State<Arc<StockxSim>>,
    Path((product_id, variant_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let now = state.sim.unix_now();
    let api_key = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    {
        let mut guard = state.lock();
        guard.stats.market_data_calls += 1;
        let token_ok = guard
            .tokens
            .get(&bearer)
            .is_some_and(|expires| *expires > now);
        if api_key.is_empty() || state.config.rejected_api_keys.contains(&api_key) || !token_ok {
            guard.stats.unauthorized += 1;
            return error(
                StatusCode::UNAUTHORIZED,
                json!({"errorCode": "UNAUTHORIZED", "errorMessage": "Unauthorized"}),
            );
        }
        let hour = (now.floor() as i64).div_euclid(3600) * 3600;
        let budget = state.config.hourly_budget;
        let entry = guard.budgets.entry(api_key).or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        if entry.1 >= budget {
            guard.stats.throttled += 1;
            let retry = (hour + 3600 - now.floor() as i64).max(1);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"errorCode": "TOO_MANY_REQUESTS", "errorMessage": format!("hourly budget of {budget} requests spent")}),
            );
            if let Ok(value) = retry.to_string().parse() {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            return response;
        }
        entry.1 += 1;
    }
    if let Some(response) = fault(
        &state,
        "stockx.marketData",
        json!({"errorCode": "TOO_MANY_REQUESTS", "errorMessage": "Rate limit exceeded"}),
        json!({"errorCode": "INTERNAL_ERROR", "errorMessage": "simulated failure"}),
    ) {
        return response;
    }
    if is_unknown(&state.config, &product_id) {
        state.lock().stats.not_found += 1;
        return error(
            StatusCode::NOT_FOUND,
            json!({"errorCode": "NOT_FOUND", "errorMessage": format!("Product {product_id} not found")}),
        );
    }
    state.lock().stats.ok += 1;
    let (ask, bid, last) = market_for(state.sim.config().seed, &product_id, &variant_id);
    Json(json!({
        "productId": product_id,
        "variantId": variant_id,
        "currencyCode": "USD",
        "lowestAskAmount": format!("{ask}"),
        "highestBidAmount": format!("{bid}"),
        "sellFasterAmount": format!("{}", ask - 1.0),
        "earnMoreAmount": format!("{}", bid + 1.0),
        "lastSaleAmount": format!("{last}"),
    }))
    .into_response()
}

async fn stats(State(state): State<Arc<StockxSim>>) -> Json<StockxStats> {
    Json(state.lock().stats.clone())
}
