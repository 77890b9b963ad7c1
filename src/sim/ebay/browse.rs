//! The simulated Browse API item search (`GET /buy/browse/v1/item_summary/search`),
//! after eBay's Buy Browse OpenAPI (docs/ebay-wire.md, "Browse API").
//!
//! - Auth: the operation's security is the client-credentials grant with the base scope
//!   `https://api.ebay.com/oauth/api_scope`: an application token is served; a missing,
//!   unknown or expired token gets 401 errorId 1001, a user token 403 errorId 1100.
//! - Input: one of `q`, `gtin`, `category_ids`, `epid` (else 400 errorId 12001);
//!   `limit` a whole number (12007) from 1 to 200 (12006), default 50; `offset` a whole
//!   number (12005) from 0 to 10,000 (12004), default 0; a `gtin` that is not digits is
//!   answered 200 with no items and warning 12022.
//! - Answer: `SearchPagedCollection` `{href, total, limit, offset, next?,
//!   itemSummaries?, warnings?}`; `itemSummaries` is absent when the page is empty; an
//!   item's `price` is `{value: "123.45", currency}` (a decimal string, as eBay's
//!   `ConvertedAmount`), in the marketplace's currency (`X-EBAY-C-MARKETPLACE-ID`).
//! - Quota: 5,000 calls per application a day (eBay's Browse API limit), reset at
//!   midnight Pacific time; 429 with errorId 2001 and `Retry-After`.
//! - Data: fixtures set by `PUT /_sim/ebay/browse` (a key's items as raw JSON, any
//!   `total`, and `ignore_limit` to serve more items than asked: hostile answers), or
//!   deterministic listings from the seed ([`listings_for`]): keys starting `UNKNOWN`
//!   have none.
//! - Faults: `ebay.itemSummarySearch`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::oauth::{self, TokenKind};
use super::{authorize, ebay_error, injected, quota_response, Ebay, EbayRequest};
use super::{DAY, PACIFIC_OFFSET, REQUEST_LOG_CAP};
use crate::sim::stockx::fnv;
use crate::sim::Simulator;

/// Fault-schedule name of the item search.
pub const OP_SEARCH: &str = "ebay.itemSummarySearch";
/// Calls per application per (Pacific) day: eBay's Browse API default.
pub const BROWSE_DAILY_CALLS: u64 = 5_000;
/// The largest page (`limit`).
const MAX_LIMIT: u64 = 200;
/// The largest `offset`.
const MAX_OFFSET: u64 = 10_000;

/// `PUT /_sim/ebay/browse`: what a search for `gtin` or `q` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowseFixture {
    /// The key: a GTIN, or `q` exactly as sent (`DD1391-100,10`).
    pub gtin: Option<String>,
    pub q: Option<String>,
    /// `itemSummaries` as served, raw (a test may send anything).
    pub items: Vec<Value>,
    /// `total` as served; the number of items when absent.
    pub total: Option<Value>,
    /// Serve every item whatever `limit` and `offset` say (a misbehaving server).
    pub ignore_limit: bool,
    /// `daily_calls`: replaces the per-application daily limit (no key needed).
    pub daily_calls: Option<u64>,
}

#[derive(Default)]
struct BrowseState {
    fixtures: HashMap<(String, String), BrowseFixture>,
    /// (application, pacific day) → calls.
    daily: HashMap<(String, i64), u64>,
    daily_limit: Option<u64>,
}

struct Browse {
    state: Mutex<BrowseState>,
}

impl Browse {
    fn lock(&self) -> MutexGuard<'_, BrowseState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(super) fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/buy/browse/v1/item_summary/search", get(search))
        .route("/_sim/ebay/browse", put(set_fixture))
        .layer(Extension(Arc::new(Browse {
            state: Mutex::new(BrowseState::default()),
        })))
}

/// The listings the simulator serves for a key (`gtin:…` or `q:…`) without a fixture:
/// prices in whole cents, deterministic from the seed; none for keys starting `UNKNOWN`.
pub fn listings_for(seed: u64, key: &str) -> Vec<u64> {
    let term = key.split_once(':').map_or(key, |(_, term)| term);
    if term.to_ascii_uppercase().starts_with("UNKNOWN") {
        return Vec::new();
    }
    let hash = fnv(&[&seed.to_le_bytes(), key.as_bytes()]);
    let count = 5 + hash % 40;
    let base = 5_000 + (hash >> 8) % 20_000;
    (0..count)
        .map(|index| base + fnv(&[&hash.to_le_bytes(), &index.to_le_bytes()]) % 10_000)
        .collect()
}

/// The currency of a marketplace's listings.
fn currency_of(marketplace: &str) -> &'static str {
    match marketplace {
        "EBAY_GB" => "GBP",
        "EBAY_DE" | "EBAY_FR" | "EBAY_IT" | "EBAY_ES" | "EBAY_AT" | "EBAY_BE" | "EBAY_NL"
        | "EBAY_IE" => "EUR",
        "EBAY_AU" => "AUD",
        "EBAY_CA" => "CAD",
        _ => "USD",
    }
}

fn browse_error(status: StatusCode, error_id: u32, message: &str) -> Response {
    ebay_error(status, error_id, "API_BROWSE", "REQUEST", message)
}

async fn search(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    Extension(browse): Extension<Arc<Browse>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    Ebay::bump(&mut ebay.lock().stats.calls, OP_SEARCH);
    let log = |app: &str, limit: u64, offset: u64, status: StatusCode| {
        let mut state = ebay.lock();
        if state.requests.len() >= REQUEST_LOG_CAP {
            state.requests.pop_front();
        }
        state.requests.push_back(EbayRequest {
            operation: OP_SEARCH.to_string(),
            seller: app.to_string(),
            from_ms: None,
            to_ms: None,
            limit,
            offset,
            status: status.as_u16(),
        });
    };
    let token = match authorize(&sim, &ebay, &headers) {
        Ok(token) => token,
        Err(response) => {
            log("", 0, 0, StatusCode::UNAUTHORIZED);
            return *response;
        }
    };
    if token.kind != TokenKind::Application {
        log(&token.seller, 0, 0, StatusCode::FORBIDDEN);
        return oauth::access_denied();
    }
    let app = token.seller;
    if let Some(response) = injected(&sim, &ebay, OP_SEARCH) {
        log(&app, 0, 0, response.status());
        return response;
    }
    let now = ebay.now(&sim);
    let pacific_day = (now + PACIFIC_OFFSET).div_euclid(DAY);
    let over = {
        let mut state = browse.lock();
        let limit = state.daily_limit.unwrap_or(BROWSE_DAILY_CALLS);
        let used = state.daily.entry((app.clone(), pacific_day)).or_default();
        if *used >= limit {
            true
        } else {
            *used += 1;
            false
        }
    };
    if over {
        Ebay::bump(&mut ebay.lock().stats.throttled, OP_SEARCH);
        log(&app, 0, 0, StatusCode::TOO_MANY_REQUESTS);
        let reset = (pacific_day + 1) * DAY - PACIFIC_OFFSET;
        return quota_response(Some((reset - now).max(1) as u64));
    }
    let limit = match query.get("limit").map(|text| text.trim().parse::<i64>()) {
        None => 50,
        Some(Ok(value)) if (1..=MAX_LIMIT as i64).contains(&value) => value as u64,
        Some(Ok(_)) => {
            log(&app, 0, 0, StatusCode::BAD_REQUEST);
            return browse_error(
                StatusCode::BAD_REQUEST,
                12006,
                "The 'limit' value should be between 1 and 200 (inclusive).",
            );
        }
        Some(Err(_)) => {
            log(&app, 0, 0, StatusCode::BAD_REQUEST);
            return browse_error(
                StatusCode::BAD_REQUEST,
                12007,
                "The 'limit' value must be an integer value.",
            );
        }
    };
    let offset = match query.get("offset").map(|text| text.trim().parse::<i64>()) {
        None => 0,
        Some(Ok(value)) if (0..=MAX_OFFSET as i64).contains(&value) => value as u64,
        Some(Ok(_)) => {
            log(&app, limit, 0, StatusCode::BAD_REQUEST);
            return browse_error(
                StatusCode::BAD_REQUEST,
                12004,
                "The 'offset' value cannot be negative.",
            );
        }
        Some(Err(_)) => {
            log(&app, limit, 0, StatusCode::BAD_REQUEST);
            return browse_error(
                StatusCode::BAD_REQUEST,
                12005,
                "The 'offset' value must be an integer.",
            );
        }
    };
    let present = |name: &str| {
        query
            .get(name)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    };
    let key = match (present("gtin"), present("q")) {
        (Some(gtin), _) => ("gtin".to_string(), gtin),
        (None, Some(q)) => ("q".to_string(), q),
        (None, None) if present("category_ids").is_some() || present("epid").is_some() => {
            ("category".to_string(), String::new())
        }
        (None, None) => {
            log(&app, limit, offset, StatusCode::BAD_REQUEST);
            return browse_error(
                StatusCode::BAD_REQUEST,
                12001,
                "The call must have a valid 'q', 'category_ids', 'epid' or 'gtin' query parameter.",
            );
        }
    };
    log(&app, limit, offset, StatusCode::OK);
    let marketplace = headers
        .get("X-EBAY-C-MARKETPLACE-ID")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("EBAY_US");
    let href = format!(
        "https://api.ebay.com/buy/browse/v1/item_summary/search?{}={}&limit={limit}&offset={offset}",
        key.0, key.1
    );
    if key.0 == "gtin" && !key.1.chars().all(|c| c.is_ascii_digit()) {
        return Json(json!({
            "href": href, "total": 0, "limit": limit, "offset": offset,
            "warnings": [{"errorId": 12022, "domain": "API_BROWSE", "category": "REQUEST",
                          "message": format!("The 'gtin' value {} is invalid. For information, see the API call reference documentation.", key.1)}],
        }))
        .into_response();
    }
    let fixture = browse.lock().fixtures.get(&key).cloned();
    let (items, total, ignore_limit) = match fixture {
        Some(fixture) => {
            let total = fixture
                .total
                .clone()
                .unwrap_or_else(|| json!(fixture.items.len()));
            (fixture.items, total, fixture.ignore_limit)
        }
        None => {
            let currency = currency_of(marketplace);
            let items: Vec<Value> = listings_for(sim.config().seed, &format!("{}:{}", key.0, key.1))
                .into_iter()
                .enumerate()
                .map(|(index, cents)| {
                    json!({
                        "itemId": format!("v1|{}|0", 110_000_000_000u64 + index as u64),
                        "title": format!("{} listing {index}", key.1),
                        "price": {"value": format!("{}.{:02}", cents / 100, cents % 100), "currency": currency},
                        "buyingOptions": ["FIXED_PRICE"],
                        "condition": "New",
                        "conditionId": "1000",
                        "itemWebUrl": format!("https://www.ebay.com/itm/{}", 110_000_000_000u64 + index as u64),
                    })
                })
                .collect();
            let total = json!(items.len());
            (items, total, false)
        }
    };
    let count = items.len() as u64;
    let page: Vec<Value> = if ignore_limit {
        items
    } else {
        items
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect()
    };
    let mut body = json!({"href": href, "total": total, "limit": limit, "offset": offset});
    if let Some(object) = body.as_object_mut() {
        if offset + limit < count {
            object.insert(
                "next".to_string(),
                json!(format!(
                    "https://api.ebay.com/buy/browse/v1/item_summary/search?{}={}&limit={limit}&offset={}",
                    key.0,
                    key.1,
                    offset + limit
                )),
            );
        }
        if !page.is_empty() {
            object.insert("itemSummaries".to_string(), Value::Array(page));
        }
    }
    Json(body).into_response()
}

async fn set_fixture(
    Extension(browse): Extension<Arc<Browse>>,
    Json(fixture): Json<BrowseFixture>,
) -> Response {
    let mut state = browse.lock();
    if let Some(limit) = fixture.daily_calls {
        state.daily_limit = Some(limit);
    }
    let key = match (&fixture.gtin, &fixture.q) {
        (Some(gtin), None) => ("gtin".to_string(), gtin.clone()),
        (None, Some(q)) => ("q".to_string(), q.clone()),
        (None, None) if fixture.daily_calls.is_some() => {
            return StatusCode::NO_CONTENT.into_response()
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "give exactly one of gtin and q (or only daily_calls)",
            )
                .into_response()
        }
    };
    state.fixtures.insert(key, fixture);
    StatusCode::NO_CONTENT.into_response()
}
