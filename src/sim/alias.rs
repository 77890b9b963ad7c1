//! The Alias simulator (GOAT's seller platform, `https://api.alias.org`), mounted beside
//! the others in the same server. What it follows and what it assumes: docs/jobs.md,
//! "Alias".
//!
//! - Every call needs `Authorization: Bearer <personal access token>`; a missing token,
//!   or one in `rejected_tokens`, gets 401 `{"code": 16, "message", "details": []}`
//!   (gRPC-gateway's status body: assumed).
//! - `GET /api/v1/catalog?query=&limit=` (SearchCatalog): the items whose style id
//!   matches the query, compared without case, spaces or hyphens, plus a decoy (the
//!   same style id with ` GS`, listed first) so a client must pick the exact match.
//!   Alias writes style ids with a space (`DD1391 100`). Unknown style ids (prefix
//!   `UNKNOWN` or in `unknown_skus`) match nothing. `limit` must be a whole number from
//!   1 to [`MAX_CATALOG_LIMIT`] (400 otherwise).
//! - `GET /api/v1/catalog/{catalog_id}` (GetCatalogItem): the item or 404.
//! - `GET /api/v1/pricing_insights/availability?catalog_id&size&product_condition&packaging_condition[&consigned][&region_id]`
//!   (GetPricingInsights): all four first parameters are required (400 otherwise), the
//!   conditions must be Alias enum names, `size` a US size the item lists; an unknown
//!   catalog id is 404. Answers `{"availability": {lowest_listing_price_cents,
//!   highest_offer_price_cents, last_sold_listing_price_cents,
//!   global_indicator_price_cents}}`, cents as strings, deterministic from the seed
//!   ([`market_for`]); a variant without offers has no `highest_offer_price_cents`.
//! - An hourly budget per token (`hourly_budget`, seed 002's 200; every call counts,
//!   whatever its answer) answered 429 `{"code": 8, ...}` when spent. Alias's published
//!   limits are not known: the budget is seed 002's.
//! - `x-request-id` on every answer (Alias's reference names the header).
//! - Faults: `alias.catalog`, `alias.pricing` (`throttle` → 429, `server_error` → 500).
//! - `POST /_sim/alias/catalog/relist` `{"sku"}`: the style id's item gets a new catalog
//!   id; the old one answers 404 (an item Alias removed and listed again).
//! - `GET /_sim/alias/stats`: calls and answers per kind, `served` (calls past the token
//!   and budget checks) and `requests`, the style id keys of the last
//!   [`REQUEST_LOG_CAP`] of them (`catalog:KEY`, `pricing:KEY|SIZE`) in order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::stockx::fnv;
use super::{FaultKind, Simulator};

/// Fault-schedule name of SearchCatalog.
pub const OP_CATALOG: &str = "alias.catalog";
/// Fault-schedule name of GetPricingInsights.
pub const OP_PRICING: &str = "alias.pricing";
/// Operation names for fault schedules (`[simulator.faults]`, `/_sim/faults`).
pub const OPERATIONS: &[&str] = &[OP_CATALOG, OP_PRICING];
/// The largest catalog `limit` the simulator takes (Alias documents a maximum without
/// its value: assumed).
pub const MAX_CATALOG_LIMIT: u64 = 100;
/// Requests kept in the stats' `requests` log (the oldest are dropped).
pub const REQUEST_LOG_CAP: usize = 10_000;
/// The US sizes every simulated item lists: 3.5 to 15 in half sizes.
pub fn allowed_sizes() -> impl Iterator<Item = f64> {
    (7..=30).map(|half| f64::from(half) / 2.0)
}

const PRODUCT_CONDITIONS: &[&str] = &[
    "PRODUCT_CONDITION_NEW",
    "PRODUCT_CONDITION_USED",
    "PRODUCT_CONDITION_NEW_WITH_DEFECTS",
];
const PACKAGING_CONDITIONS: &[&str] = &[
    "PACKAGING_CONDITION_GOOD_CONDITION",
    "PACKAGING_CONDITION_MISSING_LID",
    "PACKAGING_CONDITION_BADLY_DAMAGED",
    "PACKAGING_CONDITION_NO_ORIGINAL_BOX",
];

/// Alias simulator settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AliasSimConfig {
    /// Calls per token per clock hour (seed 002: 200).
    pub hourly_budget: u32,
    /// Style ids the catalog does not know (besides those starting `UNKNOWN`).
    pub unknown_skus: Vec<String>,
    /// Tokens answered 401.
    pub rejected_tokens: Vec<String>,
}

impl Default for AliasSimConfig {
    fn default() -> Self {
        AliasSimConfig {
            hourly_budget: 200,
            unknown_skus: Vec::new(),
            rejected_tokens: Vec::new(),
        }
    }
}

/// Counters served by `GET /_sim/alias/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AliasStats {
    pub catalog_calls: u64,
    pub pricing_calls: u64,
    pub ok: u64,
    /// 429s: budget spent or injected.
    pub throttled: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    pub not_found: u64,
    pub bad_requests: u64,
    /// Calls past the token and budget checks (the ones a budget pays for).
    pub served: u64,
    /// `catalog:KEY` / `pricing:KEY|SIZE` of the last [`REQUEST_LOG_CAP`] served calls,
    /// oldest first (KEY: the style id's letters and digits, upper-cased; SIZE: the US
    /// size asked, as a shortest decimal).
    pub requests: VecDeque<String>,
}

struct AliasState {
    /// Token -> (hour start, calls in it).
    budgets: HashMap<String, (i64, u32)>,
    stats: AliasStats,
    next_request: u64,
    /// Style id key → how often its item was relisted (its catalog id's generation).
    generations: HashMap<String, u32>,
}

struct AliasSim {
    sim: Arc<Simulator>,
    config: AliasSimConfig,
    state: Mutex<AliasState>,
}

impl AliasSim {
    fn lock(&self) -> MutexGuard<'_, AliasState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A style id as Alias compares it: letters and digits, upper-cased.
fn sku_key(sku: &str) -> String {
    sku.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The catalog id of a style id: `sim-` and the style id's key, lower-cased.
pub fn catalog_id_of(sku: &str) -> String {
    catalog_id_in(sku, 0)
}

/// The catalog id of a style id after `generation` relists (`-r1`, `-r2`, ... appended).
pub fn catalog_id_in(sku: &str, generation: u32) -> String {
    let base = format!("sim-{}", sku_key(sku).to_ascii_lowercase());
    if generation == 0 {
        base
    } else {
        format!("{base}-r{generation}")
    }
}

/// Whether the catalog knows `sku`.
pub fn is_unknown(config: &AliasSimConfig, sku: &str) -> bool {
    let key = sku_key(sku);
    key.starts_with("UNKNOWN")
        || config
            .unknown_skus
            .iter()
            .any(|known| sku_key(known) == key)
}

/// The market the simulator serves for (`catalog_id`, US `size`), in cents: (lowest
/// listing, highest offer (none for one variant in five), last sold, global indicator).
pub fn market_for(seed: u64, catalog_id: &str, size: f64) -> (u64, Option<u64>, u64, u64) {
    let hash = fnv(&[
        &seed.to_le_bytes(),
        catalog_id.as_bytes(),
        &size.to_le_bytes(),
    ]);
    let lowest = (100 + hash % 300) * 100 + (hash >> 40) % 100;
    let offer = lowest.saturating_sub((5 + (hash >> 16) % 20) * 100);
    let last = offer + ((hash >> 32) % 10) * 100;
    let indicator = lowest - 100;
    let offer = (!(hash >> 8).is_multiple_of(5)).then_some(offer);
    (lowest, offer, last, indicator)
}

/// The Alias style id of a catalog key (`DD1391100` → as sent, with a space before the
/// last three characters when it is long enough, as Alias writes `DD1391 100`).
fn alias_sku(sku: &str) -> String {
    let key = sku_key(sku);
    if key.len() > 6 {
        let (head, tail) = key.split_at(key.len() - 3);
        format!("{head} {tail}")
    } else {
        key
    }
}

fn catalog_item(catalog_id: &str, sku: &str, name: &str) -> Value {
    let sizes: Vec<Value> = allowed_sizes()
        .map(|size| json!({"display_name": format!("{size}"), "value": size, "us_size_equivalent": size}))
        .collect();
    json!({
        "catalog_id": catalog_id,
        "name": name,
        "sku": sku,
        "brand": "Simulated",
        "gender": "men",
        "product_category_v2": "shoes",
        "product_type": "sneakers",
        "size_unit": "SIZE_UNIT_US",
        "allowed_sizes": sizes,
        "minimum_listing_price_cents": "2500",
        "maximum_listing_price_cents": "200000",
        "retail_price_cents": "11000",
        "resellable": true,
    })
}

/// The Alias routes.
pub(super) fn router(sim: Arc<Simulator>) -> Router<Arc<Simulator>> {
    let config = sim.config().alias.clone();
    let state = Arc::new(AliasSim {
        sim,
        config,
        state: Mutex::new(AliasState {
            budgets: HashMap::new(),
            stats: AliasStats::default(),
            next_request: 0,
            generations: HashMap::new(),
        }),
    });
    Router::new()
        .route("/api/v1/catalog", get(search_catalog))
        .route("/api/v1/catalog/{catalog_id}", get(get_catalog_item))
        .route("/api/v1/pricing_insights/availability", get(availability))
        .route("/_sim/alias/catalog/relist", post(relist))
        .route("/_sim/alias/stats", get(stats))
        .with_state(state)
}

/// A gRPC-gateway status body (`code`: the gRPC code) with `x-request-id`.
fn status(state: &AliasSim, http: StatusCode, code: u32, message: &str) -> Response {
    with_request_id(
        state,
        (
            http,
            Json(json!({"code": code, "message": message, "details": []})),
        )
            .into_response(),
    )
}

fn with_request_id(state: &AliasSim, mut response: Response) -> Response {
    let id = {
        let mut guard = state.lock();
        guard.next_request = guard.next_request.wrapping_add(1);
        guard.next_request
    };
    if let Ok(value) = HeaderValue::from_str(&format!("sim-{id:012x}")) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The common front of every call: token, budget, faults. `Err` is the answer to give.
fn admit(
    state: &AliasSim,
    headers: &HeaderMap,
    operation: &str,
    key: &str,
) -> Result<(), Box<Response>> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if token.is_empty() || state.config.rejected_tokens.contains(&token) {
        state.lock().stats.unauthorized += 1;
        return Err(Box::new(status(
            state,
            StatusCode::UNAUTHORIZED,
            16,
            "request unauthenticated with bearer",
        )));
    }
    let now = state.sim.unix_now().floor() as i64;
    let hour = now.div_euclid(3600) * 3600;
    let budget = state.config.hourly_budget;
    {
        let mut guard = state.lock();
        let entry = guard.budgets.entry(token).or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        if entry.1 >= budget {
            guard.stats.throttled += 1;
            drop(guard);
            return Err(Box::new(status(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                8,
                "too many requests",
            )));
        }
        entry.1 += 1;
    }
    match state.sim.provider_fault(operation) {
        Some(FaultKind::Throttle) => {
            state.lock().stats.throttled += 1;
            Err(Box::new(status(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                8,
                "too many requests",
            )))
        }
        Some(FaultKind::ServerError) => {
            state.lock().stats.server_errors += 1;
            Err(Box::new(status(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                13,
                "internal error",
            )))
        }
        _ => {
            let kind = if operation == OP_CATALOG {
                "catalog"
            } else {
                "pricing"
            };
            let mut guard = state.lock();
            guard.stats.served += 1;
            if guard.stats.requests.len() >= REQUEST_LOG_CAP {
                guard.stats.requests.pop_front();
            }
            guard.stats.requests.push_back(format!("{kind}:{key}"));
            Ok(())
        }
    }
}

fn bad_request(state: &AliasSim, message: &str) -> Response {
    state.lock().stats.bad_requests += 1;
    status(state, StatusCode::BAD_REQUEST, 3, message)
}

async fn search_catalog(
    State(state): State<Arc<AliasSim>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.lock().stats.catalog_calls += 1;
    let logged = query.get("query").map(|q| sku_key(q)).unwrap_or_default();
    if let Err(response) = admit(&state, &headers, OP_CATALOG, &logged) {
        return *response;
    }
    let Some(text) = query
        .get("query")
        .map(|q| q.trim())
        .filter(|q| !q.is_empty())
    else {
        return bad_request(&state, "query is required");
    };
    if let Some(limit) = query.get("limit") {
        match limit.parse::<u64>() {
            Ok(limit) if (1..=MAX_CATALOG_LIMIT).contains(&limit) => {}
            _ => {
                return bad_request(
                    &state,
                    &format!("limit must be a whole number from 1 to {MAX_CATALOG_LIMIT}"),
                )
            }
        }
    }
    let items = if is_unknown(&state.config, text) || sku_key(text).is_empty() {
        Vec::new()
    } else {
        let sku = alias_sku(text);
        let decoy = format!("{sku} GS");
        let (decoy_generation, generation) = {
            let guard = state.lock();
            let of = |key: &str| guard.generations.get(key).copied().unwrap_or(0);
            (of(&sku_key(&decoy)), of(&sku_key(text)))
        };
        vec![
            catalog_item(
                &catalog_id_in(&decoy, decoy_generation),
                &decoy,
                "Simulated sneaker (GS)",
            ),
            catalog_item(&catalog_id_in(text, generation), &sku, "Simulated sneaker"),
        ]
    };
    state.lock().stats.ok += 1;
    with_request_id(
        &state,
        Json(json!({"catalog_items": items, "next_pagination_token": "", "has_more": false}))
            .into_response(),
    )
}

/// The style id key and generation a simulated catalog id names (any text: `None`
/// when it is not of the form `sim-KEY[-rN]`).
fn parse_catalog_id(catalog_id: &str) -> Option<(String, u32)> {
    let rest = catalog_id.strip_prefix("sim-")?;
    let (key, generation) = match rest.split_once("-r") {
        Some((key, generation)) => (key, generation.parse::<u32>().ok()?),
        None => (rest, 0),
    };
    let key = key.to_ascii_uppercase();
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())).then_some((key, generation))
}

/// The style id key behind a simulated catalog id, when it is one the catalog knows now
/// (a relisted item's old id is not).
fn known_catalog_id(state: &AliasSim, catalog_id: &str) -> Option<String> {
    let (key, generation) = parse_catalog_id(catalog_id)?;
    let current = state.lock().generations.get(&key).copied().unwrap_or(0);
    (generation == current && !is_unknown(&state.config, &key)).then_some(key)
}

/// The style id key a catalog id names for the request log (the raw id, clipped, when
/// it is not a simulated one).
fn logged_key(catalog_id: &str) -> String {
    parse_catalog_id(catalog_id)
        .map(|(key, _)| key)
        .unwrap_or_else(|| catalog_id.chars().take(64).collect())
}

async fn get_catalog_item(
    State(state): State<Arc<AliasSim>>,
    headers: HeaderMap,
    Path(catalog_id): Path<String>,
) -> Response {
    state.lock().stats.catalog_calls += 1;
    if let Err(response) = admit(&state, &headers, OP_CATALOG, &logged_key(&catalog_id)) {
        return *response;
    }
    let Some(key) = known_catalog_id(&state, &catalog_id) else {
        state.lock().stats.not_found += 1;
        return status(&state, StatusCode::NOT_FOUND, 5, "catalog item not found");
    };
    state.lock().stats.ok += 1;
    with_request_id(
        &state,
        Json(json!({"catalog_item": catalog_item(&catalog_id, &alias_sku(&key), "Simulated sneaker")}))
            .into_response(),
    )
}

async fn availability(
    State(state): State<Arc<AliasSim>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.lock().stats.pricing_calls += 1;
    let logged = format!(
        "{}|{}",
        logged_key(
            query
                .get("catalog_id")
                .map(String::as_str)
                .unwrap_or_default()
        ),
        query
            .get("size")
            .and_then(|size| size.parse::<f64>().ok())
            .filter(|size| size.is_finite())
            .map(|size| format!("{size}"))
            .unwrap_or_default()
    );
    if let Err(response) = admit(&state, &headers, OP_PRICING, &logged) {
        return *response;
    }
    let field = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    for name in [
        "catalog_id",
        "size",
        "product_condition",
        "packaging_condition",
    ] {
        if field(name).is_none() {
            return bad_request(&state, &format!("{name} is required"));
        }
    }
    if !PRODUCT_CONDITIONS.contains(&field("product_condition").unwrap_or_default()) {
        return bad_request(&state, "invalid product_condition");
    }
    if !PACKAGING_CONDITIONS.contains(&field("packaging_condition").unwrap_or_default()) {
        return bad_request(&state, "invalid packaging_condition");
    }
    let Some(size) = field("size")
        .and_then(|size| size.parse::<f64>().ok())
        .filter(|size| size.is_finite())
    else {
        return bad_request(&state, "size must be a number");
    };
    let catalog_id = field("catalog_id").unwrap_or_default().to_string();
    if known_catalog_id(&state, &catalog_id).is_none() {
        state.lock().stats.not_found += 1;
        return status(&state, StatusCode::NOT_FOUND, 5, "catalog item not found");
    }
    if !allowed_sizes().any(|allowed| allowed == size) {
        return bad_request(&state, "size is not an allowed size of the catalog item");
    }
    let (lowest, offer, last, indicator) = market_for(state.sim.config().seed, &catalog_id, size);
    let mut availability = json!({
        "lowest_listing_price_cents": lowest.to_string(),
        "last_sold_listing_price_cents": last.to_string(),
        "global_indicator_price_cents": indicator.to_string(),
    });
    if let (Some(offer), Some(object)) = (offer, availability.as_object_mut()) {
        object.insert(
            "highest_offer_price_cents".to_string(),
            Value::String(offer.to_string()),
        );
    }
    state.lock().stats.ok += 1;
    with_request_id(
        &state,
        Json(json!({ "availability": availability })).into_response(),
    )
}

/// `POST /_sim/alias/catalog/relist` body.
#[derive(Debug, Deserialize)]
struct Relist {
    sku: String,
}

/// The style id's item gets a new catalog id; the old one answers 404 from now on.
async fn relist(State(state): State<Arc<AliasSim>>, Json(relist): Json<Relist>) -> Response {
    let key = sku_key(&relist.sku);
    if key.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 3, "message": "sku has no letters or digits", "details": []})),
        )
            .into_response();
    }
    let generation = {
        let mut guard = state.lock();
        let generation = guard.generations.entry(key.clone()).or_insert(0);
        *generation = generation.saturating_add(1);
        *generation
    };
    Json(json!({"sku": relist.sku, "catalog_id": catalog_id_in(&key, generation)})).into_response()
}

async fn stats(State(state): State<Arc<AliasSim>>) -> Json<AliasStats> {
    Json(state.lock().stats.clone())
}
