//! The eBay simulator, mounted beside SP-API in the same server (`docs/ebay-wire.md`).
//!
//! - OAuth: `POST /identity/v1/oauth2/token` (client-credentials and refresh-token grants,
//!   HTTP Basic `client_id:client_secret`, `expires_in` 7200). The refresh token names the
//!   seller; a client-credentials token is the application's (seller = client id).
//! - Fulfillment `GET /sell/fulfillment/v1/order` (getOrders, `filter=lastmodifieddate:[..]`),
//!   Finances `GET /sell/finances/v1/transaction` (getTransactions,
//!   `filter=transactionDate:[..]`), Post-Order `GET /post-order/v2/return/search`
//!   (searchReturns, `creation_date_range_from`/`_to`, `offset` a 1-based page number).
//! - Daily call quotas per API (Fulfillment, Finances, Post-Order) that reset at midnight
//!   Pacific time, approximated as UTC-8 (no daylight saving); the 429 body has `errorId` 2001.
//! - Shared faults ([`Simulator::provider_fault`]) under the operation names in
//!   [`OPERATIONS`]; control: `GET /_sim/ebay/stats`, `GET /_sim/ebay/requests` (every data
//!   request with its window), `GET /_sim/ebay/changes` (the status changes the data made),
//!   `PUT /_sim/ebay/control` (pin the clock, serve oversized pages).
//!
//! Data is a pure function of (seed, seller, day, index): [`orders_between`] and friends,
//! so tests compute exactly what was served. Orders move NOT_STARTED → IN_PROGRESS →
//! FULFILLED hours after creation; one order in `return_every` gets a return that moves
//! RETURN_REQUESTED → ITEM_SHIPPED → CLOSED and refunds the order (FULLY_REFUNDED, plus a
//! REFUND transaction). An entity exists once its time is ≤ the simulator's now.

pub use crate::domain::{format_millis, parse_millis};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{FaultKind, Simulator};

/// Fault-schedule name of the OAuth token call.
pub const OP_TOKEN: &str = "ebay.token";
/// Fault-schedule name of Fulfillment getOrders.
pub const OP_GET_ORDERS: &str = "ebay.getOrders";
/// Fault-schedule name of Finances getTransactions.
pub const OP_GET_TRANSACTIONS: &str = "ebay.getTransactions";
/// Fault-schedule name of Post-Order return search.
pub const OP_SEARCH_RETURNS: &str = "ebay.searchReturns";

/// Operation names for fault schedules (`[simulator.faults]`, `/_sim/faults`).
pub const OPERATIONS: &[&str] = &[
    OP_TOKEN,
    OP_GET_ORDERS,
    OP_GET_TRANSACTIONS,
    OP_SEARCH_RETURNS,
];

/// The body of every eBay 429, byte for byte.
pub const QUOTA_BODY: &str = r#"{"errors":[{"errorId":2001,"domain":"API_REQUEST","category":"REQUEST","message":"Too many requests. The request limit has been reached for the resource."}]}"#;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// Pacific time approximated as UTC-8 (no daylight saving) for the daily quota reset.
const PACIFIC_OFFSET: i64 = -8 * HOUR;
/// The largest page eBay serves.
pub const MAX_LIMIT: u64 = 200;
/// Longest time from an order's creation to its last change (return closed), so a
/// window query knows how far back to look for candidates.
const MAX_ORDER_SPAN: i64 = 6 * HOUR + 48 * HOUR + 3 * DAY + 2 * DAY + 4 * DAY;
/// Requests kept for `/_sim/ebay/requests` (oldest dropped first).
const REQUEST_LOG_CAP: usize = 20_000;

/// eBay simulator settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbaySimConfig {
    /// Orders created per seller per UTC day.
    pub orders_per_day: u32,
    /// One order in this many gets a return (0: none).
    pub return_every: u32,
    /// `expires_in` of access tokens.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Daily calls per seller to the Fulfillment API (getOrders).
    pub fulfillment_daily_calls: u64,
    /// Daily calls per seller to the Finances API (getTransactions).
    pub finances_daily_calls: u64,
    /// Daily calls per seller to the Post-Order API (return search).
    pub post_order_daily_calls: u64,
    /// Bytes of padding an oversized page carries (see `PUT /_sim/ebay/control`).
    pub oversize_bytes: u64,
    /// No order is created before this unix second (0: orders on every day), so a test
    /// can start a history with nothing older than its first sync.
    pub orders_since: i64,
}

impl Default for EbaySimConfig {
    fn default() -> Self {
        Self {
            orders_per_day: 50,
            return_every: 10,
            token_lifetime: Duration::from_secs(7200),
            fulfillment_daily_calls: 100_000,
            finances_daily_calls: 50_000,
            post_order_daily_calls: 50_000,
            oversize_bytes: 32 << 20,
            orders_since: 0,
        }
    }
}

/// One order as the simulator models it (times in unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimOrder {
    pub order_id: String,
    pub day: i64,
    pub index: u32,
    pub created: i64,
    pub in_progress_at: i64,
    pub fulfilled_at: i64,
    pub total_cents: i64,
    pub buyer: String,
    pub sku: String,
    pub quantity: u32,
    pub return_info: Option<SimReturn>,
}

/// A return of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReturn {
    pub return_id: String,
    pub created: i64,
    pub shipped_at: i64,
    pub closed_at: i64,
}

/// One change the simulated data made, as a change-history row should record it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SimChange {
    /// When it happened (unix seconds).
    pub at: i64,
    /// `orders` or `returns` (the stream that sees it).
    pub stream: String,
    pub resource_id: String,
    /// The wire field name (`orderFulfillmentStatus`, `orderPaymentStatus`, `state`).
    pub field: String,
    pub before: String,
    pub after: String,
    /// When the resource was created (unix seconds).
    pub created: i64,
}

impl SimOrder {
    /// `orderFulfillmentStatus` and the time it took that value, at `now`.
    pub fn fulfillment_at(&self, now: i64) -> (&'static str, i64) {
        if now >= self.fulfilled_at {
            ("FULFILLED", self.fulfilled_at)
        } else if now >= self.in_progress_at {
            ("IN_PROGRESS", self.in_progress_at)
        } else {
            ("NOT_STARTED", self.created)
        }
    }

    /// `orderPaymentStatus` and the time it took that value, at `now`.
    pub fn payment_at(&self, now: i64) -> (&'static str, i64) {
        match &self.return_info {
            Some(ret) if now >= ret.closed_at => ("FULLY_REFUNDED", ret.closed_at),
            _ => ("PAID", self.created),
        }
    }

    /// `lastModifiedDate` at `now`: the latest change so far.
    pub fn last_modified_at(&self, now: i64) -> i64 {
        self.fulfillment_at(now).1.max(self.payment_at(now).1)
    }

    fn total_text(&self) -> String {
        format!("{}.{:02}", self.total_cents / 100, self.total_cents % 100)
    }
}

impl SimReturn {
    /// The return's `state` at `now`.
    pub fn state_at(&self, now: i64) -> &'static str {
        if now >= self.closed_at {
            "CLOSED"
        } else if now >= self.shipped_at {
            "ITEM_SHIPPED"
        } else {
            "RETURN_REQUESTED"
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn seller_key(seller: &str) -> u64 {
    seller.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn draw(seed: u64, seller: u64, day: i64, index: u32, salt: u64) -> u64 {
    splitmix(seed ^ splitmix(seller ^ splitmix((day as u64) ^ splitmix(u64::from(index) ^ salt))))
}

/// The `index`-th order of `day` (days since the unix epoch, UTC) for `seller`.
pub fn order(seed: u64, config: &EbaySimConfig, seller: &str, day: i64, index: u32) -> SimOrder {
    let key = seller_key(seller);
    let per_day = i64::from(config.orders_per_day.max(1));
    let slot = DAY / per_day;
    let created = day * DAY
        + i64::from(index) * slot
        + (draw(seed, key, day, index, 1) % slot.max(1) as u64) as i64;
    let in_progress_at =
        created + 2 * HOUR + (draw(seed, key, day, index, 2) % (4 * HOUR) as u64) as i64;
    let fulfilled_at =
        in_progress_at + 18 * HOUR + (draw(seed, key, day, index, 3) % (30 * HOUR) as u64) as i64;
    let order_id = format!(
        "{:02}-{:05}-{:05}",
        key % 100,
        day.rem_euclid(100_000),
        index
    );
    let with_return = config.return_every > 0
        && draw(seed, key, day, index, 4) % u64::from(config.return_every) == 0;
    let return_info = with_return.then(|| {
        let created_r =
            fulfilled_at + DAY + (draw(seed, key, day, index, 5) % (2 * DAY) as u64) as i64;
        let shipped_at = created_r + DAY + (draw(seed, key, day, index, 6) % DAY as u64) as i64;
        let closed_at =
            shipped_at + 2 * DAY + (draw(seed, key, day, index, 7) % (2 * DAY) as u64) as i64;
        SimReturn {
            return_id: format!("5{:05}{:05}", day.rem_euclid(100_000), index),
            created: created_r,
            shipped_at,
            closed_at,
        }
    });
    SimOrder {
        order_id,
        day,
        index,
        created,
        in_progress_at,
        fulfilled_at,
        total_cents: 500 + (draw(seed, key, day, index, 8) % 50_000) as i64,
        buyer: format!("buyer_{:04}", draw(seed, key, day, index, 9) % 10_000),
        sku: format!("SKU-{:03}", draw(seed, key, day, index, 10) % 500),
        quantity: 1 + (draw(seed, key, day, index, 11) % 3) as u32,
        return_info,
    }
}

/// Every order of `seller` created in `[from, to)` (unix seconds), in creation order.
pub fn orders_created(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimOrder> {
    let mut out = Vec::new();
    for day in from.div_euclid(DAY)..=to.div_euclid(DAY) {
        for index in 0..config.orders_per_day {
            let order = order(seed, config, seller, day, index);
            if order.created >= from && order.created < to && order.created >= config.orders_since {
                out.push(order);
            }
        }
    }
    out
}

/// Every status change of `seller`'s orders and returns with `at` in `[from, to)`, sorted
/// by time. These are the rows a change history that saw each state records.
pub fn changes_between(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    let mut out = Vec::new();
    for order in orders_created(seed, config, seller, from - MAX_ORDER_SPAN, to) {
        let mut push = |at: i64,
                        stream: &str,
                        id: &str,
                        field: &str,
                        before: &str,
                        after: &str,
                        created: i64| {
            if at >= from && at < to {
                out.push(SimChange {
                    at,
                    stream: stream.to_string(),
                    resource_id: id.to_string(),
                    field: field.to_string(),
                    before: before.to_string(),
                    after: after.to_string(),
                    created,
                });
            }
        };
        let id = order.order_id.as_str();
        push(
            order.in_progress_at,
            "orders",
            id,
            "orderFulfillmentStatus",
            "NOT_STARTED",
            "IN_PROGRESS",
            order.created,
        );
        push(
            order.fulfilled_at,
            "orders",
            id,
            "orderFulfillmentStatus",
            "IN_PROGRESS",
            "FULFILLED",
            order.created,
        );
        if let Some(ret) = &order.return_info {
            push(
                ret.closed_at,
                "orders",
                id,
                "orderPaymentStatus",
                "PAID",
                "FULLY_REFUNDED",
                order.created,
            );
            let rid = ret.return_id.as_str();
            push(
                ret.shipped_at,
                "returns",
                rid,
                "state",
                "RETURN_REQUESTED",
                "ITEM_SHIPPED",
                ret.created,
            );
            push(
                ret.closed_at,
                "returns",
                rid,
                "state",
                "ITEM_SHIPPED",
                "CLOSED",
                ret.created,
            );
        }
    }
    out.sort();
    out
}

/// A data request the simulator received, for `GET /_sim/ebay/requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EbayRequest {
    pub operation: String,
    pub seller: String,
    /// Window bounds asked for, unix milliseconds (inclusive, as eBay's ranges are).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: u64,
    /// Item offset (for return search: (page − 1) · limit).
    pub offset: u64,
    /// The answer's status code.
    pub status: u16,
}

/// Calls and answers per operation, for `GET /_sim/ebay/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EbayStats {
    pub calls: BTreeMap<String, u64>,
    pub throttled: BTreeMap<String, u64>,
    pub server_errors: BTreeMap<String, u64>,
    pub oversized: BTreeMap<String, u64>,
}

impl EbayStats {
    pub fn calls(&self, operation: &str) -> u64 {
        self.calls.get(operation).copied().unwrap_or(0)
    }
    pub fn throttled(&self, operation: &str) -> u64 {
        self.throttled.get(operation).copied().unwrap_or(0)
    }
}

/// `PUT /_sim/ebay/control`: test levers. Absent fields leave the setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbayControl {
    /// Pin the simulator's clock to this unix second (what "now" is for the data).
    pub now_unix: Option<i64>,
    /// Follow the real clock again.
    pub unpin: bool,
    /// The next this-many data pages carry `oversize_bytes` of padding.
    pub oversize_next: Option<u32>,
    /// Serve this many data pages normally before the oversized ones.
    pub oversize_after: Option<u32>,
}

#[derive(Default)]
struct EbayState {
    /// Access token → (seller, expires at unix seconds).
    tokens: HashMap<String, (String, f64)>,
    next_token: u64,
    /// (seller, api, pacific day) → calls.
    daily: HashMap<(String, &'static str, i64), u64>,
    stats: EbayStats,
    requests: VecDeque<EbayRequest>,
    now_pinned: Option<i64>,
    oversize_next: u32,
    oversize_after: u32,
}

/// The eBay simulator's own state, beside the shared [`Simulator`].
struct Ebay {
    state: Mutex<EbayState>,
}

impl Ebay {
    fn lock(&self) -> MutexGuard<'_, EbayState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self, sim: &Simulator) -> i64 {
        self.lock()
            .now_pinned
            .unwrap_or_else(|| sim.unix_now().floor() as i64)
    }

    fn bump(map: &mut BTreeMap<String, u64>, operation: &str) {
        *map.entry(operation.to_string()).or_default() += 1;
    }
}

/// The eBay routes.
pub(super) fn router(_sim: Arc<Simulator>) -> Router<Arc<Simulator>> {
    let ebay = Arc::new(Ebay {
        state: Mutex::new(EbayState::default()),
    });
    Router::new()
        .route("/identity/v1/oauth2/token", post(token))
        .route("/sell/fulfillment/v1/order", get(get_orders))
        .route("/sell/finances/v1/transaction", get(get_transactions))
        .route("/post-order/v2/return/search", get(search_returns))
        .route("/_sim/ebay/stats", get(stats))
        .route("/_sim/ebay/requests", get(requests))
        .route("/_sim/ebay/changes", get(changes))
        .route("/_sim/ebay/control", axum::routing::put(control))
        .layer(Extension(ebay))
}

fn ebay_error(
    status: StatusCode,
    error_id: u32,
    domain: &str,
    category: &str,
    message: &str,
) -> Response {
    (
        status,
        Json(json!({"errors": [{"errorId": error_id, "domain": domain, "category": category, "message": message}]})),
    )
        .into_response()
}

fn quota_response(retry_after: Option<u64>) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        QUOTA_BODY,
    )
        .into_response();
    if let Some(secs) = retry_after {
        if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
    }
    response
}

fn bad_request(message: &str) -> Response {
    ebay_error(
        StatusCode::BAD_REQUEST,
        2004,
        "API_REQUEST",
        "REQUEST",
        message,
    )
}

/// Decodes standard base64 (with or without padding); `None` on bad input.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for byte in text.trim_end_matches('=').bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
}

async fn token(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    {
        let mut state = ebay.lock();
        Ebay::bump(&mut state.stats.calls, OP_TOKEN);
    }
    if let Some(response) = injected(&sim, &ebay, OP_TOKEN) {
        return response;
    }
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    let client_id = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| decode_base64(encoded.trim()))
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (id.to_string(), secret.to_string()))
        })
        .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
        .map(|(id, _)| id);
    let Some(client_id) = client_id else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "request body is not a form",
        );
    };
    let (seller, token_type) = match form.grant_type.as_deref() {
        Some("client_credentials") => (client_id, "Application Access Token"),
        Some("refresh_token") => match form.refresh_token.filter(|token| !token.is_empty()) {
            Some(refresh) if !refresh.starts_with("revoked") => (refresh, "User Access Token"),
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the provided authorization refresh token is invalid or was issued to another client",
                )
            }
        },
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant type in request is not supported by the authorization server",
            )
        }
    };
    let lifetime = sim.config().ebay.token_lifetime.as_secs();
    let expires = (ebay.now(&sim) + lifetime as i64) as f64;
    let access_token = {
        let mut state = ebay.lock();
        state.next_token += 1;
        let token = format!(
            "v^1.1#i^1#sim-{}-{}",
            state.next_token,
            seller_key(&seller) % 1_000_000
        );
        if state.tokens.len() >= 10_000 {
            // Expired tokens are never valid again: keep the map small on long runs.
            let cutoff = expires - lifetime as f64;
            state.tokens.retain(|_, (_, until)| *until > cutoff);
        }
        state.tokens.insert(token.clone(), (seller, expires));
        token
    };
    Json(json!({"access_token": access_token, "expires_in": lifetime, "token_type": token_type}))
        .into_response()
}

/// The seller an API call's token belongs to, or the 401 to answer.
fn authorize(sim: &Simulator, ebay: &Ebay, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("IAF "))
        })
        .map(str::trim);
    let now = ebay.now(sim) as f64;
    let found = token.and_then(|token| ebay.lock().tokens.get(token).cloned());
    match found {
        Some((seller, expires)) if now < expires => Ok(seller),
        _ => Err(Box::new(ebay_error(
            StatusCode::UNAUTHORIZED,
            1001,
            "OAuth",
            "REQUEST",
            "Invalid access token. Check the value of the Authorization HTTP request header.",
        ))),
    }
}

/// The shared fault for this call, as an eBay answer.
fn injected(sim: &Simulator, ebay: &Ebay, operation: &str) -> Option<Response> {
    match sim.provider_fault(operation) {
        Some(FaultKind::Throttle) => {
            Ebay::bump(&mut ebay.lock().stats.throttled, operation);
            Some(quota_response(sim.faults().retry_after_secs))
        }
        Some(FaultKind::ServerError) => {
            Ebay::bump(&mut ebay.lock().stats.server_errors, operation);
            Some(ebay_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                10001,
                "API_FULFILLMENT",
                "APPLICATION",
                "System error. Unable to process your request. Please re-try the request.",
            ))
        }
        _ => None,
    }
}

/// What a data request asked for, once parsed.
struct Asked {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: u64,
    offset: u64,
}

/// Parses `name:[FROM..TO]` (either bound may be empty) into unix milliseconds.
fn parse_range(filter: &str, name: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let rest = filter
        .split(',')
        .find_map(|part| {
            let (key, value) = part.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then_some(value)
        })
        .ok_or_else(|| format!("filter must name {name}:[FROM..TO]"))?;
    let inner = rest
        .trim()
        .strip_prefix('[')
        .and_then(|value| value.strip_suffix(']'))
        .ok_or_else(|| format!("{name} range must be [FROM..TO]"))?;
    let (from, to) = inner
        .split_once("..")
        .ok_or_else(|| format!("{name} range must be [FROM..TO]"))?;
    let bound = |text: &str| -> Result<Option<i64>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        parse_millis(text.trim()).map(Some).ok_or_else(|| {
            format!("invalid date {text:?}; use ISO 8601 like 2026-11-23T10:00:00.000Z")
        })
    };
    Ok((bound(from)?, bound(to)?))
}

/// A request paged by offset over `filter={field}:[FROM..TO]` (`limit` defaults to
/// `default_limit`).
fn filtered_ask(
    query: &HashMap<String, String>,
    field: &str,
    default_limit: u64,
) -> Result<Asked, String> {
    let filter = query
        .get("filter")
        .ok_or_else(|| format!("filter={field}:[FROM..TO] is required"))?;
    let (from_ms, to_ms) = parse_range(filter, field)?;
    Ok(Asked {
        from_ms,
        to_ms,
        limit: parse_number(query, "limit", default_limit)?,
        offset: parse_number(query, "offset", 0)?,
    })
}

/// The page `asked` for out of `matching` (sorted already), and how many matched.
fn page_of<T>(matching: Vec<T>, asked: &Asked) -> (u64, Vec<T>) {
    let total = matching.len() as u64;
    let page = matching
        .into_iter()
        .skip(asked.offset as usize)
        .take(asked.limit as usize)
        .collect();
    (total, page)
}

/// An offset-paged answer of `path`: `href`, `total`, `limit`, `offset`, the page's
/// `items` under `key`, and `next`/`prev` links where there are such pages.
fn offset_page(
    path: &str,
    query: &HashMap<String, String>,
    asked: &Asked,
    total: u64,
    key: &str,
    items: Vec<Value>,
) -> Value {
    let filter = query.get("filter").cloned().unwrap_or_default();
    let (href, next, prev) = page_links(
        path,
        &format!("filter={filter}"),
        total,
        asked.limit,
        asked.offset,
    );
    let mut body =
        json!({"href": href, "total": total, "limit": asked.limit, "offset": asked.offset});
    body[key] = json!(items);
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    if let Some(prev) = prev {
        body["prev"] = json!(prev);
    }
    body
}

fn parse_number(query: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, String> {
    match query.get(key) {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| format!("{key} must be a non-negative integer, got {text:?}")),
    }
}

/// The common front of every data call: count, authorize, faults, quota, input.
fn admit(
    sim: &Simulator,
    ebay: &Ebay,
    headers: &HeaderMap,
    operation: &'static str,
    api: &'static str,
    asked: Result<Asked, String>,
) -> Result<(String, Asked), Box<Response>> {
    Ebay::bump(&mut ebay.lock().stats.calls, operation);
    let log = |seller: &str, asked: Option<&Asked>, status: StatusCode| {
        let mut state = ebay.lock();
        if state.requests.len() >= REQUEST_LOG_CAP {
            state.requests.pop_front();
        }
        state.requests.push_back(EbayRequest {
            operation: operation.to_string(),
            seller: seller.to_string(),
            from_ms: asked.and_then(|asked| asked.from_ms),
            to_ms: asked.and_then(|asked| asked.to_ms),
            limit: asked.map_or(0, |asked| asked.limit),
            offset: asked.map_or(0, |asked| asked.offset),
            status: status.as_u16(),
        });
    };
    let seller =
        authorize(sim, ebay, headers).inspect_err(|_| log("", None, StatusCode::UNAUTHORIZED))?;
    if let Some(response) = injected(sim, ebay, operation) {
        log(&seller, asked.as_ref().ok(), response.status());
        return Err(Box::new(response));
    }
    let limit = match api {
        "fulfillment" => sim.config().ebay.fulfillment_daily_calls,
        "finances" => sim.config().ebay.finances_daily_calls,
        _ => sim.config().ebay.post_order_daily_calls,
    };
    let now = ebay.now(sim);
    let pacific_day = (now + PACIFIC_OFFSET).div_euclid(DAY);
    let over = {
        let mut state = ebay.lock();
        let used = state
            .daily
            .entry((seller.clone(), api, pacific_day))
            .or_default();
        if *used >= limit {
            Ebay::bump(&mut state.stats.throttled, operation);
            true
        } else {
            *used += 1;
            false
        }
    };
    if over {
        // Until the next midnight, Pacific time.
        let reset = (pacific_day + 1) * DAY - PACIFIC_OFFSET;
        log(&seller, asked.as_ref().ok(), StatusCode::TOO_MANY_REQUESTS);
        return Err(Box::new(quota_response(Some((reset - now).max(1) as u64))));
    }
    match asked {
        Ok(asked) if asked.limit == 0 || asked.limit > MAX_LIMIT => {
            log(&seller, Some(&asked), StatusCode::BAD_REQUEST);
            Err(Box::new(bad_request(&format!(
                "The 'limit' value {} is invalid; it must be between 1 and {MAX_LIMIT}.",
                asked.limit
            ))))
        }
        Ok(asked) => {
            log(&seller, Some(&asked), StatusCode::OK);
            Ok((seller, asked))
        }
        Err(message) => {
            log(&seller, None, StatusCode::BAD_REQUEST);
            Err(Box::new(bad_request(&message)))
        }
    }
}

/// One page of `items`, padded when an oversized page is due.
fn paged_body(ebay: &Ebay, sim: &Simulator, operation: &str, mut body: Value) -> Response {
    let oversize = {
        let mut state = ebay.lock();
        if state.oversize_after > 0 {
            state.oversize_after -= 1;
            false
        } else if state.oversize_next > 0 {
            state.oversize_next -= 1;
            Ebay::bump(&mut state.stats.oversized, operation);
            true
        } else {
            false
        }
    };
    if oversize {
        let padding = "x".repeat(sim.config().ebay.oversize_bytes as usize);
        body["warnings"] = json!([{"errorId": 0, "message": padding}]);
    }
    Json(body).into_response()
}

fn page_links(
    path: &str,
    base_query: &str,
    total: u64,
    limit: u64,
    offset: u64,
) -> (String, Option<String>, Option<String>) {
    let href = format!("{path}?{base_query}&limit={limit}&offset={offset}");
    let next = (offset + limit < total).then(|| {
        format!(
            "{path}?{base_query}&limit={limit}&offset={}",
            offset + limit
        )
    });
    let prev = (offset > 0).then(|| {
        format!(
            "{path}?{base_query}&limit={limit}&offset={}",
            offset.saturating_sub(limit)
        )
    });
    (href, next, prev)
}

fn money(cents: i64) -> Value {
    json!({"value": format!("{}.{:02}", cents / 100, cents % 100), "currency": "USD"})
}

fn order_json(order: &SimOrder, seller: &str, now: i64) -> Value {
    let (fulfillment, _) = order.fulfillment_at(now);
    let (payment, _) = order.payment_at(now);
    json!({
        "orderId": order.order_id,
        "legacyOrderId": format!("{}-{}", 110_000_000_000u64 + order.index as u64, order.day),
        "creationDate": format_millis(order.created * 1000),
        "lastModifiedDate": format_millis(order.last_modified_at(now) * 1000),
        "orderFulfillmentStatus": fulfillment,
        "orderPaymentStatus": payment,
        "sellerId": seller,
        "buyer": {"username": order.buyer},
        "pricingSummary": {"total": {"value": order.total_text(), "currency": "USD"}},
        "salesRecordReference": format!("{}", order.day * 1000 + i64::from(order.index)),
        "lineItems": [{
            "lineItemId": format!("1{:05}{:05}", order.day.rem_euclid(100_000), order.index),
            "sku": order.sku,
            "title": format!("Simulated item {}", order.sku),
            "quantity": order.quantity,
            "lineItemCost": {"value": order.total_text(), "currency": "USD"},
            "lineItemFulfillmentStatus": fulfillment,
        }],
    })
}

/// The orders of `seller` that may hold data in the range `asked` for: created up to
/// [`MAX_ORDER_SPAN`] before it. Returns them with the simulated now and the range in
/// whole seconds (see [`range_seconds`]).
fn candidates(
    sim: &Simulator,
    ebay: &Ebay,
    seller: &str,
    asked: &Asked,
) -> (i64, i64, i64, Vec<SimOrder>) {
    let now = ebay.now(sim);
    let (from, to) = range_seconds(asked.from_ms, asked.to_ms, now);
    let orders = orders_created(
        sim.config().seed,
        &sim.config().ebay,
        seller,
        from - MAX_ORDER_SPAN,
        to + 1,
    );
    (now, from, to, orders)
}

/// Clamps an inclusive millisecond range to the data that exists at `now`.
fn range_seconds(from_ms: Option<i64>, to_ms: Option<i64>, now: i64) -> (i64, i64) {
    // Whole-second data: [ceil(from), floor(to)] inclusive, and nothing after now.
    let from = from_ms.map_or(0, |ms| {
        ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
    });
    let to = to_ms.map_or(now, |ms| ms.div_euclid(1000)).min(now);
    (from, to)
}

async fn get_orders(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = filtered_ask(&query, "lastmodifieddate", 50);
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_GET_ORDERS, "fulfillment", asked) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    let mut matching: Vec<(i64, SimOrder)> = candidates
        .into_iter()
        .filter(|order| order.created <= now)
        .map(|order| (order.last_modified_at(now), order))
        .filter(|(modified, _)| *modified >= from && *modified <= to)
        .collect();
    matching.sort_by(|a, b| (a.0, &a.1.order_id).cmp(&(b.0, &b.1.order_id)));
    let (total, page) = page_of(matching, &asked);
    let orders: Vec<Value> = page
        .iter()
        .map(|(_, order)| order_json(order, &seller, now))
        .collect();
    let mut body = offset_page(
        "/sell/fulfillment/v1/order",
        &query,
        &asked,
        total,
        "orders",
        orders,
    );
    body["warnings"] = json!([]);
    paged_body(&ebay, &sim, OP_GET_ORDERS, body)
}

/// A SALE at creation and, for returned orders, a REFUND when the return closes.
fn transactions_of(order: &SimOrder, now: i64) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    let sale_at = order.created + 30;
    let status = |at: i64| {
        if now >= at + 4 * DAY {
            "PAYOUT"
        } else if now >= at + 2 * DAY {
            "FUNDS_AVAILABLE_FOR_PAYOUT"
        } else {
            "FUNDS_PROCESSING"
        }
    };
    out.push((
        sale_at,
        json!({
            "transactionId": format!("1{:05}{:05}", order.day.rem_euclid(100_000), order.index),
            "orderId": order.order_id,
            "transactionType": "SALE",
            "transactionStatus": status(sale_at),
            "transactionDate": format_millis(sale_at * 1000),
            "amount": money(order.total_cents),
            "bookingEntry": "CREDIT",
            "buyer": {"username": order.buyer},
        }),
    ));
    if let Some(ret) = &order.return_info {
        out.push((
            ret.closed_at,
            json!({
                "transactionId": format!("2{:05}{:05}", order.day.rem_euclid(100_000), order.index),
                "orderId": order.order_id,
                "transactionType": "REFUND",
                "transactionStatus": status(ret.closed_at),
                "transactionDate": format_millis(ret.closed_at * 1000),
                "amount": money(order.total_cents),
                "bookingEntry": "DEBIT",
                "buyer": {"username": order.buyer},
            }),
        ));
    }
    out
}

async fn get_transactions(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = filtered_ask(&query, "transactionDate", 20);
    let (seller, asked) = match admit(
        &sim,
        &ebay,
        &headers,
        OP_GET_TRANSACTIONS,
        "finances",
        asked,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    let mut matching: Vec<(i64, String, Value)> = candidates
        .iter()
        .flat_map(|order| transactions_of(order, now))
        .filter(|(at, _)| *at >= from && *at <= to)
        .map(|(at, value)| {
            (
                at,
                value["transactionId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                value,
            )
        })
        .collect();
    matching.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let (total, page) = page_of(matching, &asked);
    let transactions: Vec<Value> = page.into_iter().map(|(_, _, value)| value).collect();
    let body = offset_page(
        "/sell/finances/v1/transaction",
        &query,
        &asked,
        total,
        "transactions",
        transactions,
    );
    paged_body(&ebay, &sim, OP_GET_TRANSACTIONS, body)
}

fn return_json(order: &SimOrder, ret: &SimReturn, seller: &str, now: i64) -> Value {
    let state = ret.state_at(now);
    json!({
        "returnId": ret.return_id,
        "orderId": order.order_id,
        "buyerLoginName": order.buyer,
        "sellerLoginName": seller,
        "currentType": "MONEY_BACK",
        "state": state,
        "status": state,
        "creationInfo": {
            "item": {"itemId": format!("1{:05}{:05}", order.day.rem_euclid(100_000), order.index), "returnQuantity": order.quantity},
            "type": "MONEY_BACK",
            "reason": "NOT_AS_DESCRIBED",
            "creationDate": {"value": format_millis(ret.created * 1000)},
        },
        "sellerTotalRefund": {"estimatedRefundAmount": money(order.total_cents)},
    })
}

async fn search_returns(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = (|| -> Result<Asked, String> {
        let bound = |key: &str| -> Result<Option<i64>, String> {
            match query.get(key) {
                None => Ok(None),
                Some(text) => parse_millis(text).map(Some).ok_or_else(|| {
                    format!(
                        "{key}: invalid date {text:?}; use ISO 8601 like 2026-11-23T10:00:00.000Z"
                    )
                }),
            }
        };
        let limit = parse_number(&query, "limit", 25)?;
        let page = parse_number(&query, "offset", 1)?;
        if page == 0 {
            return Err("offset is a page number and starts at 1".to_string());
        }
        Ok(Asked {
            from_ms: bound("creation_date_range_from")?,
            to_ms: bound("creation_date_range_to")?,
            limit,
            offset: (page - 1) * limit,
        })
    })();
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_SEARCH_RETURNS, "postOrder", asked)
    {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    let mut matching: Vec<(i64, String, Value)> = candidates
        .iter()
        .filter_map(|order| {
            let ret = order.return_info.as_ref()?;
            (ret.created >= from && ret.created <= to).then(|| {
                (
                    ret.created,
                    ret.return_id.clone(),
                    return_json(order, ret, &seller, now),
                )
            })
        })
        .collect();
    matching.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let (total, page) = page_of(matching, &asked);
    let members: Vec<Value> = page.into_iter().map(|(_, _, value)| value).collect();
    let body = json!({
        "members": members,
        "total": total,
        "paginationOutput": {
            "limit": asked.limit,
            "offset": asked.offset / asked.limit + 1,
            "totalEntries": total,
            "totalPages": total.div_ceil(asked.limit),
        },
    });
    paged_body(&ebay, &sim, OP_SEARCH_RETURNS, body)
}

async fn stats(Extension(ebay): Extension<Arc<Ebay>>) -> Response {
    Json(ebay.lock().stats.clone()).into_response()
}

async fn requests(Extension(ebay): Extension<Arc<Ebay>>) -> Response {
    let all: Vec<EbayRequest> = ebay.lock().requests.iter().cloned().collect();
    Json(all).into_response()
}

async fn changes(
    State(sim): State<Arc<Simulator>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(seller) = query.get("seller") else {
        return bad_request("seller is required (the refresh token, or the client id)");
    };
    let bound = |key: &str| {
        query
            .get(key)
            .and_then(|text| parse_millis(text))
            .map(|ms| ms.div_euclid(1000))
    };
    let (Some(from), Some(to)) = (bound("from"), bound("to")) else {
        return bad_request("from and to are required, ISO 8601 like 2026-11-23T10:00:00.000Z");
    };
    Json(changes_between(
        sim.config().seed,
        &sim.config().ebay,
        seller,
        from,
        to,
    ))
    .into_response()
}

async fn control(
    Extension(ebay): Extension<Arc<Ebay>>,
    body: Result<Json<EbayControl>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(control)) = body else {
        return bad_request(
            "body must be {\"now_unix\": int, \"unpin\": bool, \"oversize_next\": int}",
        );
    };
    let mut state = ebay.lock();
    if let Some(now) = control.now_unix {
        state.now_pinned = Some(now);
    }
    if control.unpin {
        state.now_pinned = None;
    }
    if let Some(next) = control.oversize_next {
        state.oversize_next = next;
    }
    if let Some(after) = control.oversize_after {
        state.oversize_after = after;
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_basic_auth() {
        assert_eq!(
            decode_base64("aWQ6c2VjcmV0").as_deref(),
            Some(&b"id:secret"[..])
        );
        assert_eq!(decode_base64("YQ==").as_deref(), Some(&b"a"[..]));
        assert!(decode_base64("@@").is_none());
    }

    #[test]
    fn orders_are_deterministic_and_move_forward() {
        let config = EbaySimConfig::default();
        let first = order(7, &config, "seller", 20_000, 3);
        assert_eq!(first, order(7, &config, "seller", 20_000, 3));
        assert!(first.created < first.in_progress_at && first.in_progress_at < first.fulfilled_at);
        assert_eq!(first.fulfillment_at(first.created).0, "NOT_STARTED");
        assert_eq!(first.fulfillment_at(first.fulfilled_at).0, "FULFILLED");
        let day = orders_created(7, &config, "seller", 20_000 * DAY, 20_001 * DAY);
        assert_eq!(day.len(), config.orders_per_day as usize);
    }

    #[test]
    fn range_parsing_accepts_ebay_filters() {
        let (from, to) = parse_range(
            "lastmodifieddate:[2026-11-23T00:00:00.000Z..2026-11-23T23:59:59.999Z]",
            "lastmodifieddate",
        )
        .expect("valid");
        assert_eq!(to.unwrap() - from.unwrap(), DAY * 1000 - 1);
        assert!(parse_range("creationdate:[..]", "lastmodifieddate").is_err());
    }
}
