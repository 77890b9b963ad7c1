//! The eBay simulator, mounted beside SP-API in the same server (`docs/ebay-wire.md`).
//!
//! - OAuth (`oauth`): `POST /identity/v1/oauth2/token` with the client-credentials,
//!   authorization-code and refresh-token grants, the consent step at `/oauth2/authorize`,
//!   and eBay's 403 (errorId 1100) for an application token, or a user token without the
//!   API's scope, on a seller API.
//! - Fulfillment `GET /sell/fulfillment/v1/order` (getOrders, optional
//!   `filter=lastmodifieddate:[..]`; without it the orders created in the last 90 days),
//!   Finances `GET /sell/finances/v1/transaction` (getTransactions,
//!   `filter=transactionDate:[..]`, `limit` up to 1000), Post-Order
//!   `GET /post-order/v2/return/search` (searchReturns, `creation_date_range_from`/`_to`,
//!   `offset` entries skipped), and `GET /post-order/v2/casemanagement/search` ([`cases`],
//!   searchCases, `case_creation_date_range_from`/`_to`), `GET /post-order/v2/inquiry/search`
//!   ([`inquiries`], searchInquiries, `inquiry_creation_date_range_from`/`_to`) and the
//!   Trading API's `POST /ws/api.dll` ([`purchases`], GetOrders as buyer, XML). `href`/`next`/`prev` are absolute on the simulator's own
//!   address with the query percent-encoded.
//! - Sell Feed `LMS_ACTIVE_INVENTORY_REPORT` ([`feed`]): createInventoryTask,
//!   getInventoryTask, getResultFile (a zipped ActiveInventoryReport); user tokens only.
//! - Daily call quotas per API (Fulfillment, Finances, Post-Order) that reset at midnight
//!   Pacific time, approximated as UTC-8 (no daylight saving); the 429 body has `errorId` 2001.
//! - Shared faults (`Simulator::provider_fault`) under the operation names in
//!   [`OPERATIONS`]; control: `GET /_sim/ebay/stats`, `GET /_sim/ebay/requests` (every data
//!   request with its window), `GET /_sim/ebay/changes` (the status changes the data made),
//!   `PUT /_sim/ebay/control` (pin the clock, serve oversized pages).
//!
//! Data is a pure function of (seed, seller, day, index): `orders_between` and friends,
//! so tests compute exactly what was served. Orders move NOT_STARTED → IN_PROGRESS →
//! FULFILLED hours after creation; one order in `return_every` gets a return that moves
//! RETURN_REQUESTED → ITEM_SHIPPED → CLOSED and refunds the order (FULLY_REFUNDED, plus a
//! REFUND transaction). An entity exists once its time is ≤ the simulator's now.

mod browse;
mod cases;
mod data;
pub mod feed;
mod inquiries;
mod oauth;
mod paging;
mod purchases;
mod sell;
mod streams;

pub use crate::domain::{format_millis, parse_millis};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{FaultKind, Simulator};

pub use browse::{listings_for, BrowseFixture, BROWSE_DAILY_CALLS, OP_SEARCH as OP_ITEM_SEARCH};
pub use cases::{cases_between, SimCase, OP_SEARCH_CASES};
pub use data::{changes_between, order, orders_created, SimChange, SimOrder, SimReturn};
pub use inquiries::{inquiries_between, SimInquiry, OP_SEARCH_INQUIRIES};
use oauth::IssuedToken;
pub use oauth::{
    ACCESS_DENIED_BODY, CODE_LIFETIME_SECS, REFRESH_TOKEN_LIFETIME_SECS, SCOPE_BASE,
    SCOPE_FINANCES, SCOPE_FULFILLMENT, SCOPE_FULFILLMENT_READONLY, SCOPE_INVENTORY,
    SCOPE_INVENTORY_READONLY,
};
use paging::Asked;
pub use purchases::{
    purchases_created, SimPurchase, MAX_ENTRIES_PER_PAGE as MAX_TRADING_ENTRIES_PER_PAGE,
    OP_GET_PURCHASES, PURCHASES_PER_DAY,
};
use sell::{get_orders, get_transactions, search_returns};
pub use streams::{
    conversations_between, offers_at, payouts_between, SimConversation, SimMessage, SimOffer,
    SimPayout, OP_GET_CONVERSATIONS, OP_GET_INVENTORY_ITEMS, OP_GET_OFFERS, OP_GET_PAYOUTS,
};

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
    feed::OP_CREATE_INVENTORY_TASK,
    feed::OP_GET_INVENTORY_TASK,
    feed::OP_GET_RESULT_FILE,
    streams::OP_GET_PAYOUTS,
    streams::OP_GET_INVENTORY_ITEMS,
    streams::OP_GET_OFFERS,
    streams::OP_GET_CONVERSATIONS,
    cases::OP_SEARCH_CASES,
    inquiries::OP_SEARCH_INQUIRIES,
    purchases::OP_GET_PURCHASES,
    browse::OP_SEARCH,
];

/// The body of every eBay 429, byte for byte.
pub const QUOTA_BODY: &str = r#"{"errors":[{"errorId":2001,"domain":"API_REQUEST","category":"REQUEST","message":"Too many requests. The request limit has been reached for the resource."}]}"#;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// Pacific time approximated as UTC-8 (no daylight saving) for the daily quota reset.
const PACIFIC_OFFSET: i64 = -8 * HOUR;
/// The largest page eBay serves (Post-Order searches; getPayouts, which refuses a larger
/// `limit` itself with errorId 135003; getOrders has its own, refused with 31100).
pub const MAX_LIMIT: u64 = 200;
/// The largest page of Finances getTransactions (its `limit`: 1 to 1000, default 20).
pub const MAX_TRANSACTIONS_LIMIT: u64 = 1000;

/// The largest `limit` an operation accepts.
fn max_limit(operation: &str) -> u64 {
    match operation {
        OP_GET_TRANSACTIONS => MAX_TRANSACTIONS_LIMIT,
        // Sell Inventory getInventoryItems and getOffers: `limit` 1 to 100.
        streams::OP_GET_INVENTORY_ITEMS | streams::OP_GET_OFFERS => 100,
        // Message getConversations: `limit` at most 50.
        streams::OP_GET_CONVERSATIONS => 50,
        _ => MAX_LIMIT,
    }
}
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
    /// Listings of each seller's active inventory (the Feed API's
    /// LMS_ACTIVE_INVENTORY_REPORT; see `feed::inventory_listings`).
    pub inventory_listings: u32,
    /// How long one state of the inventory lasts: each period some quantities and
    /// prices change and some listings end.
    #[serde(with = "humantime_serde")]
    pub inventory_change_every: Duration,
    /// getInventoryTask polls a task answers (QUEUED, then IN_PROCESS) before COMPLETED.
    pub feed_task_polls: u32,
    /// LMS_ACTIVE_INVENTORY_REPORT tasks a seller may create in 24 hours (eBay: 25).
    pub feed_daily_tasks: u32,
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
            inventory_listings: 500,
            inventory_change_every: Duration::from_secs(3600),
            feed_task_polls: 2,
            feed_daily_tasks: 25,
        }
    }
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
    /// Item offset (every API here skips this many items; Post-Order too).
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
    /// Hold the answers of these operations (fault names, e.g. `ebay.tradingGetOrders`)
    /// until a later control replaces the list (`[]` releases all); a held call waits
    /// at most [`MAX_HOLD`]. Served by the operations that call `Ebay::hold_point`.
    pub hold: Option<Vec<String>>,
}

#[derive(Default)]
struct EbayState {
    /// Access token → whose, until when, which grant and scopes.
    tokens: HashMap<String, IssuedToken>,
    /// Authorization codes and refresh tokens the simulator issued.
    oauth: oauth::OAuthState,
    next_token: u64,
    /// (seller, api, pacific day) → calls.
    daily: HashMap<(String, &'static str, i64), u64>,
    stats: EbayStats,
    requests: VecDeque<EbayRequest>,
    now_pinned: Option<i64>,
    oversize_next: u32,
    oversize_after: u32,
    /// Operations whose answers wait (see [`EbayControl::hold`]).
    held: std::collections::BTreeSet<String>,
}

/// The eBay simulator's own state, beside the shared [`Simulator`].
struct Ebay {
    state: Mutex<EbayState>,
    /// Woken when the held operations change.
    released: tokio::sync::Notify,
}

/// The longest a held call waits before it is answered anyway.
pub const MAX_HOLD: Duration = Duration::from_secs(120);

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

    /// The simulated now in unix milliseconds: the pinned second exactly, else the clock
    /// to the millisecond (what a request's dates are compared with, e.g. getOrders'
    /// "Start and end dates can't be in the future").
    fn now_ms(&self, sim: &Simulator) -> i64 {
        match self.lock().now_pinned {
            Some(pinned) => pinned.saturating_mul(1000),
            None => (sim.unix_now() * 1000.0).floor() as i64,
        }
    }

    fn bump(map: &mut BTreeMap<String, u64>, operation: &str) {
        *map.entry(operation.to_string()).or_default() += 1;
    }

    /// Waits while `operation` is held (`PUT /_sim/ebay/control {"hold": [...]}`), at
    /// most [`MAX_HOLD`].
    async fn hold_point(&self, operation: &str) {
        let wait = async {
            loop {
                let released = self.released.notified();
                if !self.lock().held.contains(operation) {
                    return;
                }
                released.await;
            }
        };
        let _ = tokio::time::timeout(MAX_HOLD, wait).await;
    }
}

/// The eBay routes.
pub(super) fn router(_sim: Arc<Simulator>) -> Router<Arc<Simulator>> {
    let ebay = Arc::new(Ebay {
        state: Mutex::new(EbayState::default()),
        released: tokio::sync::Notify::new(),
    });
    Router::new()
        .route("/identity/v1/oauth2/token", post(oauth::token))
        .route("/oauth2/authorize", get(oauth::authorize))
        .route("/sell/fulfillment/v1/order", get(get_orders))
        .route("/sell/finances/v1/transaction", get(get_transactions))
        .route("/post-order/v2/return/search", get(search_returns))
        .route("/_sim/ebay/stats", get(stats))
        .route("/_sim/ebay/requests", get(requests))
        .route("/_sim/ebay/changes", get(changes))
        .route("/_sim/ebay/control", axum::routing::put(control))
        .merge(feed::routes())
        .merge(streams::routes())
        .merge(cases::routes())
        .merge(inquiries::routes())
        .merge(purchases::routes())
        .merge(browse::routes())
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

/// The token of an API call, or the 401 to answer (missing, unknown or expired).
fn authorize(
    sim: &Simulator,
    ebay: &Ebay,
    headers: &HeaderMap,
) -> Result<IssuedToken, Box<Response>> {
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
        Some(issued) if now < issued.expires => Ok(issued),
        _ => Err(Box::new(oauth::invalid_token())),
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

/// The common front of every data call: count, authorize, faults, quota, input.
fn admit(
    sim: &Simulator,
    ebay: &Ebay,
    headers: &HeaderMap,
    operation: &'static str,
    api: &'static str,
    asked: Result<Asked, impl Into<paging::BadInput>>,
) -> Result<(String, Asked), Box<Response>> {
    let asked: Result<Asked, paging::BadInput> = asked.map_err(Into::into);
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
    let token =
        authorize(sim, ebay, headers).inspect_err(|_| log("", None, StatusCode::UNAUTHORIZED))?;
    // Seller APIs take a seller's (user) token with the API's scope: eBay answers an
    // application token, or a user token without the scope, with 403 errorId 1100.
    if !oauth::permits(&token, api) {
        log(&token.seller, asked.as_ref().ok(), StatusCode::FORBIDDEN);
        return Err(Box::new(oauth::access_denied()));
    }
    let seller = token.seller;
    if let Some(response) = injected(sim, ebay, operation) {
        log(&seller, asked.as_ref().ok(), response.status());
        return Err(Box::new(response));
    }
    let limit = match api {
        "fulfillment" => sim.config().ebay.fulfillment_daily_calls,
        "finances" => sim.config().ebay.finances_daily_calls,
        "inventory" => streams::INVENTORY_DAILY_CALLS,
        "message" => streams::MESSAGE_DAILY_CALLS,
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
    let max_limit = max_limit(operation);
    match asked {
        Ok(asked) if asked.limit == 0 || asked.limit > max_limit => {
            log(&seller, Some(&asked), StatusCode::BAD_REQUEST);
            Err(Box::new(bad_request(&format!(
                "The 'limit' value {} is invalid; it must be between 1 and {max_limit}.",
                asked.limit
            ))))
        }
        Ok(asked) => {
            log(&seller, Some(&asked), StatusCode::OK);
            Ok((seller, asked))
        }
        Err(bad) => {
            log(&seller, None, StatusCode::BAD_REQUEST);
            Err(Box::new(ebay_error(
                StatusCode::BAD_REQUEST,
                bad.error_id,
                bad.domain,
                "REQUEST",
                &bad.message,
            )))
        }
    }
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
    if let Some(hold) = control.hold {
        state.held = hold.into_iter().collect();
        drop(state);
        ebay.released.notify_waiters();
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::paging::{range_value, RangeError};
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
        let Ok((from, Some(to))) =
            range_value("[2026-11-23T00:00:00.000Z..2026-11-23T23:59:59.999Z]")
        else {
            panic!("a closed range parses");
        };
        assert_eq!(to - from, DAY * 1000 - 1);
        assert!(matches!(range_value("[..]"), Err(RangeError::MissingStart)));
        assert!(matches!(
            range_value("[2026-11-23..x]"),
            Err(RangeError::BadDate)
        ));
    }
}
