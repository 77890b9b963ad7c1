//! The StockX simulator, mounted beside SP-API in the same server. It follows StockX's
//! public API v2 (developer.stockx.com, `swagger.json`; operations `Search`,
//! `GetVariants`, `GetVariantMarketData`): products and variants are addressed by catalog
//! UUID, found through the catalog.
//!
//! - `POST /oauth/token` (form): the refresh-token grant; needs `client_id`,
//!   `client_secret` and a `refresh_token` not listed in `rejected_refresh_tokens`
//!   (those get 403 `invalid_grant`). Answers `access_token`, `expires_in`, `token_type`.
//! - Every `/v2/catalog/...` call needs `Authorization: Bearer <token from /oauth/token>`
//!   and an `x-api-key` not listed in `rejected_api_keys` (401 otherwise), and counts
//!   against the key's hourly budget (`hourly_budget`, seed 002's 100 calls/hour, whatever
//!   the answer): 429 with `Retry-After` (seconds to the next hour) when spent.
//! - `GET /v2/catalog/search?query=..&pageNumber=..&pageSize=..`: `query` 1 to 100
//!   characters, `pageNumber` >= 1, `pageSize` 1 to 50 (else 400). A style id the catalog
//!   knows (every one except those starting `UNKNOWN` or listed in `unknown_skus`) answers
//!   its product and a look-alike (`{style}-W`), in an order that varies by style, so a
//!   client must pick by `styleId`; an unknown one answers `count: 0, products: []`.
//! - `GET /v2/catalog/products/{productId}/variants`: the sizes [`SIZES`] (variantValue
//!   the US men's size, `sizeChart` with US M, US W, UK and EU conversions, `gtins`);
//!   404 for a product id the catalog does not have (never issued, or relisted).
//! - `GET /v2/catalog/products/{productId}/variants/{variantId}/market-data?currencyCode=USD`:
//!   `productId`, `variantId`, `currencyCode`, `lowestAskAmount`, `highestBidAmount`,
//!   `sellFasterAmount`, `earnMoreAmount`, `flexLowestAskAmount` (strings or null), and
//!   `standardMarketData` / `flexMarketData`, deterministic from the seed, the style and
//!   the size ([`market_for`]); no last sale (StockX's market data has none). A variant
//!   that does not belong to the product: 400 `Variant does not belong to the product.`;
//!   an unknown product: 404. Errors are StockX's `PublicApiError`
//!   (`{"statusCode", "message"}`).
//! - `POST /_sim/stockx/catalog/relist` `{"styleId", "variantsOnly"}`: the style's product
//!   (or only its variants) gets new UUIDs; the old ones answer 404 (product) or 400
//!   (variant), as a relisted product does.
//! - Faults: the shared [`super::SimFaults`] through `Simulator::provider_fault` with the
//!   operations `stockx.token`, `stockx.catalogSearch`, `stockx.catalogVariants` and
//!   `stockx.marketData` (`throttle` → 429, `server_error` → 500).
//! - `GET /_sim/stockx/stats`: calls and answers per kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{FaultKind, Simulator};

/// Operation names for fault schedules (`[simulator.faults]`, `/_sim/faults`).
pub const OPERATIONS: &[&str] = &[
    "stockx.token",
    "stockx.catalogSearch",
    "stockx.catalogVariants",
    "stockx.marketData",
];

/// The sizes (US men's, StockX's default chart for sneakers) every simulated product has.
pub const SIZES: &[&str] = &[
    "3.5", "4", "4.5", "5", "5.5", "6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5",
    "11", "11.5", "12", "12.5", "13", "14", "15", "16", "17", "18",
];

/// The currencies StockX's market data accepts (`currencyCode`).
const CURRENCIES: &[&str] = &[
    "AUD", "CAD", "CHF", "EUR", "GBP", "HKD", "JPY", "KRW", "MXN", "NZD", "SGD", "USD",
];

/// StockX simulator settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StockxSimConfig {
    /// Catalog and market-data calls per api key per clock hour (seed 002: 100).
    pub hourly_budget: u32,
    /// Style ids the catalog does not know (besides those starting `UNKNOWN`).
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
    pub search_calls: u64,
    pub variants_calls: u64,
    pub market_data_calls: u64,
    pub ok: u64,
    /// 429s: budget spent or injected.
    pub throttled: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    /// 404s: a product id the catalog does not have.
    pub not_found: u64,
    /// 400s: validation errors (a variant not of the product, a bad parameter).
    pub bad_request: u64,
}

/// Generations of a style's catalog ids: a relist bumps them.
#[derive(Debug, Clone, Copy, Default)]
struct Generations {
    product: u32,
    variants: u32,
}

struct StockxState {
    /// Access token -> unix expiry.
    tokens: HashMap<String, f64>,
    /// Api key -> (hour start, calls in it).
    budgets: HashMap<String, (i64, u32)>,
    next_token: u64,
    stats: StockxStats,
    /// Product UUIDs issued by the search -> (canonical style id, product generation).
    products: HashMap<String, (String, u32)>,
    /// Canonical style id -> its generations.
    generations: HashMap<String, Generations>,
}

/// The most product ids the simulator remembers; past it the oldest are not evicted but
/// new ones are still served (a test tool, bounded so a runaway client cannot grow it
/// without end).
const MAX_PRODUCTS: usize = 1_000_000;

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

/// A version-4-shaped UUID from `parts`.
fn uuid_of(parts: &[&[u8]]) -> String {
    let high = fnv(parts);
    let low = fnv(&[&high.to_le_bytes(), b"uuid"]);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xfff,
        8 + (low >> 62),
        (low >> 48) & 0xfff,
        low & 0xffff_ffff_ffff
    )
}

/// The canonical form of a style id: trimmed, upper-case.
pub fn canonical_style(style: &str) -> String {
    style.trim().to_uppercase()
}

/// The product UUID of `style` in `generation` (0 until relisted).
pub fn product_uuid(seed: u64, style: &str, generation: u32) -> String {
    let style = canonical_style(style);
    uuid_of(&[
        &seed.to_le_bytes(),
        b"product",
        style.as_bytes(),
        &generation.to_le_bytes(),
    ])
}

/// The variant UUID of `size` of `style` in `generation` (0 until relisted).
pub fn variant_uuid(seed: u64, style: &str, size: &str, generation: u32) -> String {
    let style = canonical_style(style);
    uuid_of(&[
        &seed.to_le_bytes(),
        b"variant",
        style.as_bytes(),
        size.as_bytes(),
        &generation.to_le_bytes(),
    ])
}

/// The market the simulator serves for (`style`, `size`): (lowest ask, highest bid) in
/// whole USD; some variants have no ask (`None`, sent as `null`).
pub fn market_for(seed: u64, style: &str, size: &str) -> (Option<f64>, Option<f64>) {
    let style = canonical_style(style);
    let hash = fnv(&[&seed.to_le_bytes(), style.as_bytes(), size.as_bytes()]);
    let ask = 100 + (hash % 300) as i64;
    let bid = ask - 5 - ((hash >> 16) % 20) as i64;
    let has_asks = !(hash >> 40).is_multiple_of(13);
    (has_asks.then_some(ask as f64), Some(bid as f64))
}

/// Whether the catalog does not know `style`.
pub fn is_unknown(config: &StockxSimConfig, style: &str) -> bool {
    let style = canonical_style(style);
    style.starts_with("UNKNOWN")
        || config
            .unknown_skus
            .iter()
            .any(|known| canonical_style(known) == style)
}

/// StockX's error document (`PublicApiError`).
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"statusCode": status.as_u16(), "message": message})),
    )
        .into_response()
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
            products: HashMap::new(),
            generations: HashMap::new(),
        }),
    });
    Router::new()
        .route("/oauth/token", post(token))
        .route("/v2/catalog/search", get(search))
        .route("/v2/catalog/products/{product_id}/variants", get(variants))
        .route(
            "/v2/catalog/products/{product_id}/variants/{variant_id}/market-data",
            get(market_data),
        )
        .route("/_sim/stockx/catalog/relist", post(relist))
        .route("/_sim/stockx/stats", get(stats))
        .with_state(state)
}

/// The answer a scheduled fault of `operation` gives, if one is due (counted in the
/// stats): a 429 or a 500 in StockX's error shape.
fn fault(state: &StockxSim, operation: &str) -> Option<Response> {
    match state.sim.provider_fault(operation)? {
        FaultKind::Throttle => {
            state.lock().stats.throttled += 1;
            Some(error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded"))
        }
        FaultKind::ServerError => {
            state.lock().stats.server_errors += 1;
            Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The request did not succeed (simulated failure)",
            ))
        }
        _ => None,
    }
}

/// Checks the bearer token and api key and spends one call of the key's hourly budget;
/// the refusal to answer otherwise.
fn admit(state: &StockxSim, headers: &HeaderMap) -> Result<(), Box<Response>> {
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
    let mut guard = state.lock();
    let token_ok = guard
        .tokens
        .get(&bearer)
        .is_some_and(|expires| *expires > now);
    if api_key.is_empty() || state.config.rejected_api_keys.contains(&api_key) || !token_ok {
        guard.stats.unauthorized += 1;
        return Err(Box::new(error(StatusCode::UNAUTHORIZED, "Unauthorized")));
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
            &format!("Rate limit exceeded: hourly budget of {budget} requests spent"),
        );
        if let Ok(value) = retry.to_string().parse() {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        return Err(Box::new(response));
    }
    entry.1 += 1;
    Ok(())
}

/// The style and generations of a product UUID the catalog has (current generation only).
fn product_of(state: &StockxSim, product_id: &str) -> Option<(String, Generations)> {
    let guard = state.lock();
    let (style, generation) = guard.products.get(product_id)?;
    let generations = guard.generations.get(style).copied().unwrap_or_default();
    (generations.product == *generation).then(|| (style.clone(), generations))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchQuery {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    page_number: Option<String>,
    #[serde(default)]
    page_size: Option<String>,
}

/// One search hit in StockX's `SearchProduct` shape.
fn search_product(seed: u64, style: &str, product_id: &str) -> Value {
    let hash = fnv(&[&seed.to_le_bytes(), style.as_bytes()]);
    json!({
        "productId": product_id,
        "urlKey": format!("simulated-{}", style.to_lowercase()),
        "styleId": style,
        "productType": "sneakers",
        "title": format!("Simulated Sneaker {style}"),
        "brand": "Simulated",
        "productAttributes": {
            "gender": "men",
            "season": null,
            "releaseDate": format!("20{:02}-0{}-1{}", 15 + hash % 10, 1 + hash % 9, hash % 10),
            "retailPrice": 100 + (hash >> 8) % 120,
            "colorway": "White/Black",
            "color": "white"
        }
    })
}

/// An OAuth error (the token endpoint answers RFC 6749 errors, not `PublicApiError`).
fn oauth_error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

async fn token(
    State(state): State<Arc<StockxSim>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    state.lock().stats.token_calls += 1;
    match state.sim.provider_fault("stockx.token") {
        Some(FaultKind::Throttle) => {
            state.lock().stats.throttled += 1;
            return oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "too_many_requests", "error_description": "Rate limit exceeded"}),
            );
        }
        Some(FaultKind::ServerError) => {
            state.lock().stats.server_errors += 1;
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": "simulated failure"}),
            );
        }
        _ => {}
    }
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "expected an application/x-www-form-urlencoded body"}),
        );
    };
    let field = |name: &str| form.get(name).filter(|value| !value.is_empty());
    if field("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "use grant_type=refresh_token"}),
        );
    }
    for name in ["client_id", "client_secret", "refresh_token"] {
        if field(name).is_none() {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": format!("missing {name}")}),
            );
        }
    }
    let refresh = field("refresh_token").cloned().unwrap_or_default();
    if state.config.rejected_refresh_tokens.contains(&refresh) {
        state.lock().stats.unauthorized += 1;
        return oauth_error(
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

async fn search(
    State(state): State<Arc<StockxSim>>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    state.lock().stats.search_calls += 1;
    if let Err(refused) = admit(&state, &headers) {
        return *refused;
    }
    if let Some(response) = fault(&state, "stockx.catalogSearch") {
        return response;
    }
    let text = query.query.unwrap_or_default();
    let number = |value: Option<String>, default: u32| -> Option<u32> {
        match value {
            None => Some(default),
            Some(text) => text.trim().parse::<u32>().ok(),
        }
    };
    let page_number = number(query.page_number, 1).filter(|page| *page >= 1);
    let page_size = number(query.page_size, 1).filter(|size| (1..=50).contains(size));
    let (Some(page_number), Some(page_size)) = (page_number, page_size) else {
        state.lock().stats.bad_request += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "pageNumber must be at least 1 and pageSize between 1 and 50",
        );
    };
    if text.trim().is_empty() || text.chars().count() > 100 {
        state.lock().stats.bad_request += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "query must be between 1 and 100 characters",
        );
    }
    let seed = state.sim.config().seed;
    let style = canonical_style(&text);
    let mut products = Vec::new();
    if !is_unknown(&state.config, &style) {
        let look_alike = format!("{style}-W");
        let mut guard = state.lock();
        let mut hits = Vec::new();
        for hit in [&style, &look_alike] {
            let generation = guard.generations.get(hit).copied().unwrap_or_default();
            let product_id = product_uuid(seed, hit, generation.product);
            if guard.products.len() < MAX_PRODUCTS || guard.products.contains_key(&product_id) {
                guard
                    .products
                    .insert(product_id.clone(), (hit.clone(), generation.product));
            }
            hits.push(search_product(seed, hit, &product_id));
        }
        drop(guard);
        if fnv(&[&seed.to_le_bytes(), style.as_bytes(), b"order"]).is_multiple_of(2) {
            hits.reverse();
        }
        products = hits;
    }
    let count = products.len();
    let start = ((page_number - 1) as usize).saturating_mul(page_size as usize);
    let page: Vec<Value> = products
        .into_iter()
        .skip(start)
        .take(page_size as usize)
        .collect();
    let has_next = start.saturating_add(page.len()) < count;
    state.lock().stats.ok += 1;
    Json(json!({
        "count": count,
        "pageSize": page_size,
        "pageNumber": page_number,
        "hasNextPage": has_next,
        "products": page,
    }))
    .into_response()
}

/// The US men's size `size` in another chart (approximations: a simulator, not a size
/// guide).
fn conversions(size: &str) -> Vec<Value> {
    let us: f64 = size.parse().unwrap_or(10.0);
    vec![
        json!({"size": format!("US M {size}"), "type": "us m"}),
        json!({"size": format!("US W {}", us + 1.5), "type": "us w"}),
        json!({"size": format!("UK {}", us - 1.0), "type": "uk"}),
        json!({"size": format!("EU {}", us + 33.0), "type": "eu"}),
    ]
}

async fn variants(
    State(state): State<Arc<StockxSim>>,
    headers: HeaderMap,
    Path(product_id): Path<String>,
) -> Response {
    state.lock().stats.variants_calls += 1;
    if let Err(refused) = admit(&state, &headers) {
        return *refused;
    }
    if let Some(response) = fault(&state, "stockx.catalogVariants") {
        return response;
    }
    let Some((style, generations)) = product_of(&state, &product_id) else {
        state.lock().stats.not_found += 1;
        return error(StatusCode::NOT_FOUND, "Product not found");
    };
    let seed = state.sim.config().seed;
    let list: Vec<Value> = SIZES
        .iter()
        .map(|size| {
            let hash = fnv(&[&seed.to_le_bytes(), style.as_bytes(), size.as_bytes()]);
            json!({
                "productId": product_id,
                "variantId": variant_uuid(seed, &style, size, generations.variants),
                "variantName": format!("{}:{size}", style.to_lowercase()),
                "variantValue": size,
                "sizeChart": {
                    "availableConversions": conversions(size),
                    "defaultConversion": {"size": format!("US M {size}"), "type": "us m"},
                },
                "gtins": [{"identifier": format!("{:012}", hash % 1_000_000_000_000), "type": "UPC"}],
                "isFlexEligible": hash.is_multiple_of(3),
                "isDirectEligible": false,
            })
        })
        .collect();
    state.lock().stats.ok += 1;
    Json(Value::Array(list)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarketQuery {
    #[serde(default)]
    currency_code: Option<String>,
}

async fn market_data(
    State(state): State<Arc<StockxSim>>,
    headers: HeaderMap,
    Path((product_id, variant_id)): Path<(String, String)>,
    Query(query): Query<MarketQuery>,
) -> Response {
    state.lock().stats.market_data_calls += 1;
    if let Err(refused) = admit(&state, &headers) {
        return *refused;
    }
    if let Some(response) = fault(&state, "stockx.marketData") {
        return response;
    }
    let currency = query.currency_code.unwrap_or_else(|| "USD".to_string());
    if !CURRENCIES.contains(&currency.as_str()) {
        state.lock().stats.bad_request += 1;
        return error(
            StatusCode::BAD_REQUEST,
            &format!("currencyCode must be one of {}", CURRENCIES.join(", ")),
        );
    }
    let Some((style, generations)) = product_of(&state, &product_id) else {
        state.lock().stats.not_found += 1;
        return error(StatusCode::NOT_FOUND, "Product not found");
    };
    let seed = state.sim.config().seed;
    let Some(size) = SIZES
        .iter()
        .find(|size| variant_uuid(seed, &style, size, generations.variants) == variant_id)
    else {
        state.lock().stats.bad_request += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "Variant does not belong to the product.",
        );
    };
    state.lock().stats.ok += 1;
    let (ask, bid) = market_for(seed, &style, size);
    let text = |value: Option<f64>| value.map(|value| format!("{value}"));
    let sell_faster = ask.map(|ask| ask - 1.0);
    let earn_more = ask.map(|ask| ask + 4.0);
    let flex_ask = ask.map(|ask| ask + 2.0);
    Json(json!({
        "productId": product_id,
        "variantId": variant_id,
        "currencyCode": currency,
        "lowestAskAmount": text(ask),
        "highestBidAmount": text(bid),
        "sellFasterAmount": text(sell_faster),
        "earnMoreAmount": text(earn_more),
        "flexLowestAskAmount": text(flex_ask),
        "standardMarketData": {
            "lowestAsk": text(ask),
            "highestBidAmount": text(bid),
            "sellFaster": text(sell_faster),
            "earnMore": text(earn_more),
            "beatUS": text(sell_faster),
        },
        "flexMarketData": {
            "lowestAsk": text(flex_ask),
            "highestBidAmount": text(bid),
            "sellFaster": text(flex_ask.map(|ask| ask - 1.0)),
            "earnMore": text(flex_ask.map(|ask| ask + 4.0)),
            "beatUS": text(flex_ask.map(|ask| ask - 1.0)),
        },
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Relist {
    style_id: String,
    #[serde(default)]
    variants_only: bool,
}

/// Gives a style's product (or only its variants) new catalog ids.
async fn relist(State(state): State<Arc<StockxSim>>, Json(relist): Json<Relist>) -> Response {
    let style = canonical_style(&relist.style_id);
    let mut guard = state.lock();
    let generations = guard.generations.entry(style.clone()).or_default();
    if relist.variants_only {
        generations.variants = generations.variants.saturating_add(1);
    } else {
        generations.product = generations.product.saturating_add(1);
        generations.variants = generations.variants.saturating_add(1);
    }
    let now = *generations;
    Json(json!({"styleId": style, "productGeneration": now.product, "variantGeneration": now.variants}))
        .into_response()
}

async fn stats(State(state): State<Arc<StockxSim>>) -> Json<StockxStats> {
    Json(state.lock().stats.clone())
}
