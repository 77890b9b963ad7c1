//! The simulated Trading API (`POST /ws/api.dll`) for the one call it serves, `GetOrders`
//! with `OrderRole=Buyer` and a `ModTimeFrom`/`ModTimeTo` filter, and the seller's own
//! purchases it answers: [`PURCHASES_PER_DAY`] a day, each `Active` at creation,
//! `Completed` once paid (two to four hours later, `PaidTime` set) and shipped half a day
//! to two days after that (`ShippedTime` set). Deterministic from (seed, seller, day,
//! index) like the orders.
//!
//! Trading's way of refusing: HTTP 200, `<Ack>Failure</Ack>` and `<Errors>` (ErrorCode,
//! ShortMessage, LongMessage, SeverityCode, ErrorClassification). A missing, unknown,
//! expired or application token gets 21916984 "Invalid IAF token."; the daily call limit
//! 518; the shared `server_error` fault an HTTP 500 with 10007.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use quick_xml::escape::escape;
use quick_xml::events::Event;
use serde::Serialize;

use super::data::{draw, seller_key, SimChange};
use super::oauth::TokenKind;
use super::{Ebay, EbayRequest, EbaySimConfig, DAY, HOUR, PACIFIC_OFFSET, REQUEST_LOG_CAP};
use crate::domain::{format_millis, parse_millis};
use crate::sim::{FaultKind, Simulator};

/// Fault-schedule name of Trading GetOrders (as buyer).
pub const OP_GET_PURCHASES: &str = "ebay.tradingGetOrders";
/// Purchases the simulated seller makes a UTC day (as a buyer).
pub const PURCHASES_PER_DAY: u32 = 6;
/// Trading calls a seller may make a day (eBay's default Trading limit is 5,000 calls a
/// day per application; the simulator counts per seller).
pub const TRADING_DAILY_CALLS: u64 = 5_000;
/// GetOrders' largest `Pagination.EntriesPerPage`.
pub const MAX_ENTRIES_PER_PAGE: u64 = 100;
/// The widest `ModTimeFrom`..`ModTimeTo` GetOrders takes.
pub const MAX_MOD_TIME_RANGE: i64 = 30 * DAY;
/// How far back GetOrders reaches.
pub const MAX_LOOKBACK: i64 = 90 * DAY;
/// The largest request document read.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The schema version the answers carry.
const VERSION: &str = "1423";

/// One purchase of the seller (times in unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimPurchase {
    pub order_id: String,
    pub created: i64,
    pub paid_at: i64,
    pub shipped_at: i64,
    pub total_cents: i64,
    /// Who sold it to our seller.
    pub seller_user_id: String,
    pub item_id: String,
}

impl SimPurchase {
    /// `OrderStatus` at `now`: Active until paid, then Completed.
    pub fn status_at(&self, now: i64) -> &'static str {
        if now >= self.paid_at {
            "Completed"
        } else {
            "Active"
        }
    }

    /// The order's modification time at `now`: its latest change so far.
    pub fn modified_at(&self, now: i64) -> i64 {
        if now >= self.shipped_at {
            self.shipped_at
        } else if now >= self.paid_at {
            self.paid_at
        } else {
            self.created
        }
    }
}

/// The `index`-th purchase of `day` for `seller`.
pub fn purchase(seed: u64, seller: &str, day: i64, index: u32) -> SimPurchase {
    let key = seller_key(seller);
    let slot = DAY / i64::from(PURCHASES_PER_DAY);
    let created = day * DAY
        + i64::from(index) * slot
        + (draw(seed, key, day, index, 40) % slot as u64) as i64;
    let paid_at = created + 2 * HOUR + (draw(seed, key, day, index, 41) % (2 * HOUR) as u64) as i64;
    let shipped_at =
        paid_at + 12 * HOUR + (draw(seed, key, day, index, 42) % (36 * HOUR) as u64) as i64;
    SimPurchase {
        order_id: format!(
            "{:02}-{:05}-9{:04}",
            key % 100,
            day.rem_euclid(100_000),
            index
        ),
        created,
        paid_at,
        shipped_at,
        total_cents: 199 + (draw(seed, key, day, index, 43) % 20_000) as i64,
        seller_user_id: format!("vendor_{:03}", draw(seed, key, day, index, 44) % 1000),
        item_id: format!("2{:05}{:05}", day.rem_euclid(100_000), index),
    }
}

/// Every purchase of `seller` created in `[from, to)` (not before `orders_since`).
pub fn purchases_created(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimPurchase> {
    let mut out = Vec::new();
    for day in from.div_euclid(DAY)..=to.div_euclid(DAY) {
        for index in 0..PURCHASES_PER_DAY {
            let bought = purchase(seed, seller, day, index);
            if bought.created >= from
                && bought.created < to
                && bought.created >= config.orders_since
            {
                out.push(bought);
            }
        }
    }
    out
}

/// The longest time from a purchase's creation to its last change.
const MAX_PURCHASE_SPAN: i64 = 4 * HOUR + 48 * HOUR;

/// The purchases' changes with `at` in `[from, to)`: `OrderStatus` and `PaidTime` when
/// paid, `ShippedTime` when shipped (`before` is empty for a time that was not set).
pub(super) fn purchase_changes(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    let mut out = Vec::new();
    for bought in purchases_created(seed, config, seller, from - MAX_PURCHASE_SPAN, to) {
        let paid = format_millis(bought.paid_at * 1000);
        let shipped = format_millis(bought.shipped_at * 1000);
        for (at, field, before, after) in [
            (bought.paid_at, "OrderStatus", "Active", "Completed"),
            (bought.paid_at, "PaidTime", "", paid.as_str()),
            (bought.shipped_at, "ShippedTime", "", shipped.as_str()),
        ] {
            if at >= from && at < to {
                out.push(SimChange {
                    at,
                    stream: "purchases".to_string(),
                    resource_id: bought.order_id.clone(),
                    field: field.to_string(),
                    before: before.to_string(),
                    after: after.to_string(),
                    created: bought.created,
                });
            }
        }
    }
    out
}

/// A Trading answer with `Ack` Failure and one error.
fn failure(status: StatusCode, call: &str, code: u64, short: &str, long: &str) -> Response {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<{call}Response xmlns="urn:ebay:apis:eBLBaseComponents"><Timestamp>{now}</Timestamp><Ack>Failure</Ack><Errors><ShortMessage>{short}</ShortMessage><LongMessage>{long}</LongMessage><ErrorCode>{code}</ErrorCode><SeverityCode>Error</SeverityCode><ErrorClassification>RequestError</ErrorClassification></Errors><Version>{VERSION}</Version></{call}Response>"#,
        call = escape(call),
        now = format_millis(crate::domain::now_ts() * 1000),
        short = escape(short),
        long = escape(long),
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/xml;charset=utf-8")],
        body,
    )
        .into_response()
}

/// Error 37, Trading's "input data is invalid" (the simulator's choice for every
/// request it cannot answer).
fn invalid_input(message: &str) -> Response {
    failure(
        StatusCode::OK,
        "GetOrders",
        37,
        "Input data is invalid.",
        message,
    )
}

/// What a GetOrders request asked for.
#[derive(Debug, Default)]
struct GetOrdersAsk {
    mod_from_ms: Option<i64>,
    mod_to_ms: Option<i64>,
    role: Option<String>,
    entries: Option<u64>,
    page: Option<u64>,
    /// The first element the simulator does not serve, if any.
    unserved: Option<String>,
}

/// Reads a GetOrdersRequest document (bounded: 64 KiB, depth 16, no DOCTYPE).
fn read_request(body: &[u8]) -> Result<GetOrdersAsk, String> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "the request is larger than {MAX_REQUEST_BYTES} bytes"
        ));
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    reader.config_mut().expand_empty_elements = true;
    let mut path: Vec<String> = Vec::new();
    let mut ask = GetOrdersAsk::default();
    let mut leaves: HashMap<String, String> = HashMap::new();
    loop {
        match reader
            .read_event()
            .map_err(|err| format!("the request is not well-formed xml: {err}"))?
        {
            Event::Start(start) => {
                if path.len() >= 16 {
                    return Err("the request nests deeper than 16".to_string());
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if path.is_empty() && name != "GetOrdersRequest" {
                    return Err(format!("the root element is {name}, not GetOrdersRequest"));
                }
                if path.len() == 1
                    && ask.unserved.is_none()
                    && matches!(
                        name.as_str(),
                        "CreateTimeFrom"
                            | "CreateTimeTo"
                            | "NumberOfDays"
                            | "OrderIDArray"
                            | "OrderStatus"
                            | "ListingType"
                            | "OutputSelector"
                            | "SortingOrder"
                    )
                {
                    ask.unserved = Some(name.clone());
                }
                path.push(name);
            }
            Event::Text(text) => {
                let value = text
                    .decode()
                    .map_err(|err| format!("bad text in the request: {err}"))?
                    .into_owned();
                leaves.insert(path.join("/"), value);
            }
            Event::End(_) => {
                path.pop();
            }
            Event::DocType(_) => return Err("a DOCTYPE in the request".to_string()),
            Event::Eof => break,
            _ => {}
        }
    }
    let time = |key: &str| -> Result<Option<i64>, String> {
        match leaves.get(&format!("GetOrdersRequest/{key}")) {
            None => Ok(None),
            Some(text) => parse_millis(text)
                .map(Some)
                .ok_or_else(|| format!("{key} {text:?} is not an ISO 8601 time")),
        }
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        match leaves.get(&format!("GetOrdersRequest/{key}")) {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{key} {text:?} is not a whole number")),
        }
    };
    ask.mod_from_ms = time("ModTimeFrom")?;
    ask.mod_to_ms = time("ModTimeTo")?;
    ask.role = leaves.get("GetOrdersRequest/OrderRole").cloned();
    ask.entries = number("Pagination/EntriesPerPage")?;
    ask.page = number("Pagination/PageNumber")?;
    Ok(ask)
}

/// One `Order` element of the answer.
fn order_xml(bought: &SimPurchase, buyer: &str, now: i64) -> String {
    let paid = now >= bought.paid_at;
    let mut xml = format!(
        "<Order><OrderID>{id}</OrderID><OrderStatus>{status}</OrderStatus><CheckoutStatus><eBayPaymentStatus>NoPaymentFailure</eBayPaymentStatus><LastModifiedTime>{modified}</LastModifiedTime><PaymentMethod>CreditCard</PaymentMethod><Status>{checkout}</Status></CheckoutStatus><CreatedTime>{created}</CreatedTime>",
        id = escape(bought.order_id.as_str()),
        status = bought.status_at(now),
        modified = format_millis(bought.modified_at(now) * 1000),
        checkout = if paid { "Complete" } else { "Incomplete" },
        created = format_millis(bought.created * 1000),
    );
    if paid {
        xml.push_str(&format!(
            "<PaidTime>{}</PaidTime>",
            format_millis(bought.paid_at * 1000)
        ));
    }
    if now >= bought.shipped_at {
        xml.push_str(&format!(
            "<ShippedTime>{}</ShippedTime>",
            format_millis(bought.shipped_at * 1000)
        ));
    }
    xml.push_str(&format!(
        "<Total currencyID=\"USD\">{}.{:02}</Total><BuyerUserID>{}</BuyerUserID><SellerUserID>{}</SellerUserID><TransactionArray><Transaction><Item><ItemID>{}</ItemID></Item><QuantityPurchased>1</QuantityPurchased></Transaction></TransactionArray></Order>",
        bought.total_cents / 100,
        bought.total_cents % 100,
        escape(buyer),
        escape(bought.seller_user_id.as_str()),
        escape(bought.item_id.as_str()),
    ));
    xml
}

/// `POST /ws/api.dll`: the Trading API, GetOrders as buyer only.
async fn trading(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Ebay::bump(&mut ebay.lock().stats.calls, OP_GET_PURCHASES);
    ebay.hold_point(OP_GET_PURCHASES).await;
    let now = ebay.now(&sim);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let log = |seller: &str, ask: Option<&GetOrdersAsk>, status: u16| {
        let entries = ask.and_then(|ask| ask.entries).unwrap_or(25);
        let page = ask.and_then(|ask| ask.page).unwrap_or(1).max(1);
        let mut state = ebay.lock();
        if state.requests.len() >= REQUEST_LOG_CAP {
            state.requests.pop_front();
        }
        state.requests.push_back(EbayRequest {
            operation: OP_GET_PURCHASES.to_string(),
            seller: seller.to_string(),
            from_ms: ask.and_then(|ask| ask.mod_from_ms),
            to_ms: ask.and_then(|ask| ask.mod_to_ms),
            limit: entries,
            offset: (page - 1).saturating_mul(entries),
            status,
        });
    };
    // The OAuth user token of a seller, in X-EBAY-API-IAF-TOKEN.
    let token = header("X-EBAY-API-IAF-TOKEN")
        .and_then(|token| ebay.lock().tokens.get(token).cloned())
        .filter(|issued| (now as f64) < issued.expires && issued.kind == TokenKind::User);
    let Some(token) = token else {
        log("", None, 200);
        // The answer's root is `{call}Response`: only a plain name is echoed.
        let call = header("X-EBAY-API-CALL-NAME")
            .filter(|call| {
                !call.is_empty()
                    && call.len() <= 64
                    && call.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .unwrap_or("GetOrders");
        return failure(
            StatusCode::OK,
            call,
            21_916_984,
            "Invalid IAF token.",
            "IAF token supplied is invalid.",
        );
    };
    let seller = token.seller;
    match header("X-EBAY-API-CALL-NAME") {
        Some("GetOrders") => {}
        other => {
            log(&seller, None, 200);
            return failure(
                StatusCode::OK,
                "",
                2,
                "Unsupported API call.",
                &format!(
                    "The API call {:?} is invalid or not supported in this release.",
                    other.unwrap_or("")
                ),
            );
        }
    }
    for name in ["X-EBAY-API-SITEID", "X-EBAY-API-COMPATIBILITY-LEVEL"] {
        if !header(name)
            .is_some_and(|value| !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        {
            log(&seller, None, 200);
            return invalid_input(&format!("the {name} header is missing or not a number"));
        }
    }
    match sim.provider_fault(OP_GET_PURCHASES) {
        Some(FaultKind::Throttle) => {
            Ebay::bump(&mut ebay.lock().stats.throttled, OP_GET_PURCHASES);
            log(&seller, None, 200);
            return failure(
                StatusCode::OK,
                "GetOrders",
                518,
                "Call usage limit has been reached.",
                "Your application has exceeded usage limit on this call, please make call to Developer Analytics API to check your call usage.",
            );
        }
        Some(FaultKind::ServerError) => {
            Ebay::bump(&mut ebay.lock().stats.server_errors, OP_GET_PURCHASES);
            log(&seller, None, 500);
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "GetOrders",
                10_007,
                "Internal error to the application.",
                "Internal error to the application.",
            );
        }
        _ => {}
    }
    let pacific_day = (now + PACIFIC_OFFSET).div_euclid(DAY);
    let over = {
        let mut state = ebay.lock();
        let used = state
            .daily
            .entry((seller.clone(), "trading", pacific_day))
            .or_default();
        if *used >= TRADING_DAILY_CALLS {
            Ebay::bump(&mut state.stats.throttled, OP_GET_PURCHASES);
            true
        } else {
            *used += 1;
            false
        }
    };
    if over {
        log(&seller, None, 200);
        return failure(
            StatusCode::OK,
            "GetOrders",
            518,
            "Call usage limit has been reached.",
            "Your application has exceeded usage limit on this call.",
        );
    }
    let ask = match read_request(&body) {
        Ok(ask) => ask,
        Err(message) => {
            log(&seller, None, 200);
            return invalid_input(&message);
        }
    };
    let refused = |message: String| {
        log(&seller, Some(&ask), 200);
        invalid_input(&message)
    };
    if let Some(name) = &ask.unserved {
        return refused(format!("the simulator does not serve {name}"));
    }
    if ask.role.as_deref() != Some("Buyer") {
        return refused("the simulator serves OrderRole Buyer only".to_string());
    }
    let (Some(from_ms), Some(to_ms)) = (ask.mod_from_ms, ask.mod_to_ms) else {
        return refused("ModTimeFrom and ModTimeTo are required".to_string());
    };
    if from_ms > to_ms || to_ms - from_ms > MAX_MOD_TIME_RANGE * 1000 {
        return refused(format!(
            "ModTimeFrom must not be after ModTimeTo, and the range may span at most {} days",
            MAX_MOD_TIME_RANGE / DAY
        ));
    }
    if from_ms < (now - MAX_LOOKBACK) * 1000 {
        return refused("ModTimeFrom cannot be set back more than 90 days".to_string());
    }
    let entries = ask.entries.unwrap_or(25);
    let page = ask.page.unwrap_or(1);
    if entries == 0 || entries > MAX_ENTRIES_PER_PAGE || page == 0 {
        return refused(format!(
            "Pagination.EntriesPerPage must be 1 to {MAX_ENTRIES_PER_PAGE} and PageNumber at least 1"
        ));
    }
    log(&seller, Some(&ask), 200);
    // Whole-second data in [ceil(from), floor(to)], nothing after now.
    let from = from_ms.div_euclid(1000) + i64::from(from_ms.rem_euclid(1000) != 0);
    let to = to_ms.div_euclid(1000).min(now);
    let seed = sim.config().seed;
    let mut matching: Vec<SimPurchase> = purchases_created(
        seed,
        &sim.config().ebay,
        &seller,
        from - MAX_PURCHASE_SPAN,
        to + 1,
    )
    .into_iter()
    .filter(|bought| bought.created <= now)
    .filter(|bought| {
        let modified = bought.modified_at(now);
        modified >= from && modified <= to
    })
    .collect();
    matching
        .sort_by(|a, b| (a.modified_at(now), &a.order_id).cmp(&(b.modified_at(now), &b.order_id)));
    let total = matching.len() as u64;
    let pages = total.div_ceil(entries);
    let skip = usize::try_from((page - 1).saturating_mul(entries)).unwrap_or(usize::MAX);
    let orders: Vec<String> = matching
        .iter()
        .skip(skip)
        .take(entries as usize)
        .map(|bought| order_xml(bought, &seller, now))
        .collect();
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<GetOrdersResponse xmlns="urn:ebay:apis:eBLBaseComponents"><Timestamp>{stamp}</Timestamp><Ack>Success</Ack><Version>{VERSION}</Version><Build>E{VERSION}_SIM</Build><PaginationResult><TotalNumberOfPages>{pages}</TotalNumberOfPages><TotalNumberOfEntries>{total}</TotalNumberOfEntries></PaginationResult><HasMoreOrders>{more}</HasMoreOrders><OrderArray>{orders}</OrderArray><OrdersPerPage>{entries}</OrdersPerPage><PageNumber>{page}</PageNumber><ReturnedOrderCountActual>{count}</ReturnedOrderCountActual></GetOrdersResponse>"#,
        stamp = format_millis(now * 1000),
        more = page < pages,
        count = orders.len(),
        orders = orders.concat(),
    );
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/xml;charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) fn routes() -> Router<Arc<Simulator>> {
    Router::new().route("/ws/api.dll", post(trading))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchases_are_paid_then_shipped_and_their_changes_match() {
        let config = EbaySimConfig::default();
        let bought = purchases_created(7, &config, "s", 100 * DAY, 101 * DAY);
        assert_eq!(bought.len(), PURCHASES_PER_DAY as usize);
        let changes = purchase_changes(7, &config, "s", 0, 200 * DAY);
        for one in &bought {
            assert!(one.created < one.paid_at && one.paid_at < one.shipped_at);
            assert_eq!(one.status_at(one.created), "Active");
            assert_eq!(one.status_at(one.paid_at), "Completed");
            assert!(one.shipped_at - one.created <= MAX_PURCHASE_SPAN);
            let mine = changes
                .iter()
                .filter(|change| change.resource_id == one.order_id)
                .count();
            assert_eq!(mine, 3, "purchase {}", one.order_id);
        }
    }

    #[test]
    fn a_request_names_what_it_asks_and_what_is_not_served() {
        let ask = read_request(
            br#"<?xml version="1.0"?><GetOrdersRequest xmlns="urn:ebay:apis:eBLBaseComponents"><ModTimeFrom>2026-01-01T00:00:00.000Z</ModTimeFrom><ModTimeTo>2026-01-01T23:59:59.999Z</ModTimeTo><OrderRole>Buyer</OrderRole><Pagination><EntriesPerPage>50</EntriesPerPage><PageNumber>2</PageNumber></Pagination></GetOrdersRequest>"#,
        )
        .expect("read");
        assert_eq!(ask.role.as_deref(), Some("Buyer"));
        assert_eq!((ask.entries, ask.page), (Some(50), Some(2)));
        assert!(ask.unserved.is_none());
        let unserved =
            read_request(b"<GetOrdersRequest><NumberOfDays>3</NumberOfDays></GetOrdersRequest>")
                .expect("read");
        assert_eq!(unserved.unserved.as_deref(), Some("NumberOfDays"));
        assert!(read_request(b"<Other/>").is_err());
    }
}
