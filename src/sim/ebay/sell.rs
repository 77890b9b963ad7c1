//! The simulated Sell APIs: getOrders, getTransactions and searchReturns, with the JSON of
//! orders, transactions and returns.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::data::{
    order, orders_created, transaction_ids, transaction_status_at, SimOrder, SimReturn,
};
use super::paging::{
    criteria, offset_page, page_of, paged_body, parse_limit, parse_number, parse_offset,
    range_value, set_values, Asked, BadInput, RangeError,
};
use super::streams::{payout_date_for, payout_id, payouts_between, FINANCES};
use super::{
    admit, bad_request, Ebay, DAY, MAX_ORDER_SPAN, MAX_TRANSACTIONS_LIMIT, OP_GET_ORDERS,
    OP_GET_TRANSACTIONS, OP_SEARCH_RETURNS,
};
use crate::domain::{format_millis, parse_millis};
use crate::sim::Simulator;

pub(super) fn money(cents: i64) -> Value {
    json!({"value": format!("{}.{:02}", cents / 100, cents % 100), "currency": "USD"})
}

pub(super) fn order_json(order: &SimOrder, seller: &str, now: i64) -> Value {
    let (fulfillment, _) = order.fulfillment_at(now);
    let (payment, _) = order.payment_at(now);
    json!({
        // No `legacyOrderId`: Fulfillment API 1.20.6 (2025-04-10) decommissioned it.
        "orderId": order.order_id,
        "creationDate": format_millis(order.created * 1000),
        "lastModifiedDate": format_millis(order.last_modified_at(now) * 1000),
        "orderFulfillmentStatus": fulfillment,
        "orderPaymentStatus": payment,
        "sellerId": seller,
        "buyer": {"username": order.buyer},
        "pricingSummary": {"total": {"value": order.total_text(), "currency": "USD"}},
        "salesRecordReference": sales_record_number(order),
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
pub(super) fn candidates(
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
pub(super) fn range_seconds(from_ms: Option<i64>, to_ms: Option<i64>, now: i64) -> (i64, i64) {
    // Whole-second data: [ceil(from), floor(to)] inclusive, and nothing after now.
    let from = from_ms.map_or(0, |ms| {
        ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
    });
    let to = to_ms.map_or(now, |ms| ms.div_euclid(1000)).min(now);
    (from, to)
}

/// The simulator's own origin (`http://ip:port`) for absolute links; empty (relative
/// links) when it was not started through [`crate::sim::serve`].
pub(super) fn origin(sim: &Simulator) -> String {
    sim.address()
        .map(|address| format!("http://{address}"))
        .unwrap_or_default()
}

/// eBay's default window for a request without a filter: the last 90 days.
fn default_window(asked: Asked, now: i64) -> Asked {
    if !asked.unfiltered {
        return asked;
    }
    Asked {
        from_ms: Some(
            now.saturating_sub(DEFAULT_WINDOW_DAYS * DAY)
                .saturating_mul(1000),
        ),
        to_ms: None,
        ..asked
    }
}

/// Days an unfiltered getOrders (and getTransactions) covers.
const DEFAULT_WINDOW_DAYS: i64 = 90;

/// The `domain` of the Fulfillment API's errors.
const FULFILLMENT: &str = "API_FULFILLMENT";
/// getOrders' `orderIds`: "maximum 50".
const MAX_ORDER_IDS: usize = 50;
/// getOrders' default `limit`.
const ORDERS_DEFAULT_LIMIT: u64 = 50;
/// getOrders' largest `limit`: "If a requested limit is more than 200, the call fails and
/// returns an error. ... Maximum: 200" (sell_fulfillment_v1_oas3 v1.20.4, `limit`; the
/// definitions up to v1.19.2 said "Maximum: 1000").
const ORDERS_MAX_LIMIT: u64 = 200;
/// The `orderfulfillmentstatus` sets getOrders supports: "only the combinations shown here
/// are currently supported".
const FULFILLMENT_SETS: [[&str; 2]; 2] =
    [["NOT_STARTED", "IN_PROGRESS"], ["FULFILLED", "IN_PROGRESS"]];

/// What a getOrders request selects, besides the range and page in [`Asked`].
#[derive(Debug, Clone, PartialEq)]
enum OrdersSelection {
    /// `orderIds`: exactly these orders; every other parameter is ignored.
    Ids(Vec<String>),
    /// `filter`'s criteria (or none): by `creationdate` when `by_creation`, else by
    /// `lastmodifieddate`; `statuses` from `orderfulfillmentstatus`.
    Filter {
        by_creation: bool,
        statuses: Option<[&'static str; 2]>,
    },
}

/// How far back getOrders reaches, in years: "getOrders can return orders up to two years
/// old" (sell_fulfillment_v1_oas3 v1.20.4, `filter`), and a date range may span at most
/// this much (errorId 30830). eBay's release notes, Fulfillment API 1.19.19 (2023-02-16):
/// "The date threshold for retrieving past orders has been increased from 90 days to two
/// years."
const ORDERS_HISTORY_YEARS: u32 = 2;

/// `at_ms` moved back `years` calendar years (the 29th of February to the 28th), in unix
/// milliseconds; `i64::MIN` when out of chrono's range.
fn years_before(at_ms: i64, years: u32) -> i64 {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .and_then(|at| at.checked_sub_months(chrono::Months::new(12 * years)))
        .map_or(i64::MIN, |at| at.timestamp_millis())
}

/// eBay's limits on one getOrders date range `[from..to]` (an open end is now), as its
/// 400 list words them: 30850 "Start and end dates can't be in the future", then 30830
/// "Time range between start date and end date must be within '{allowedTime}' years."
/// (`allowedTime` is [`ORDERS_HISTORY_YEARS`]).
fn check_orders_range(from: i64, to: Option<i64>, now_ms: i64) -> Result<(), BadInput> {
    if from > now_ms || to.is_some_and(|to| to > now_ms) {
        return Err(BadInput::new(
            30850,
            FULFILLMENT,
            "Start and end dates can't be in the future".to_string(),
        ));
    }
    if from < years_before(to.unwrap_or(now_ms), ORDERS_HISTORY_YEARS) {
        return Err(BadInput::new(
            30830,
            FULFILLMENT,
            format!(
                "Time range between start date and end date must be within '{ORDERS_HISTORY_YEARS}' years."
            ),
        ));
    }
    Ok(())
}

/// Parses getOrders' query as the Fulfillment API's getOrders reference defines it
/// (sell_fulfillment_v1_oas3 v1.20.4, `filter`, `orderIds`, `limit`, `offset`) and
/// refuses what its 400 list names: 30700 "Invalid filter name", 30800 "Invalid filter
/// value", 30810 "Invalid date format", 30820 "Start date is missing", 30830 (a range
/// over two years), 30840 "Start date should be before end date", 30850 (a date after
/// `now_ms`), 30900 "Exceeded maximum number of order IDs", 31000 "Invalid offset",
/// 31100 "Invalid limit" (outside 1..=[`ORDERS_MAX_LIMIT`]).
fn orders_query(
    query: &HashMap<String, String>,
    now_ms: i64,
) -> Result<(Asked, OrdersSelection), BadInput> {
    let invalid_value = |name: &str, value: &str| {
        BadInput::new(
            30800,
            FULFILLMENT,
            format!("Invalid filter value {value} for filter {name}"),
        )
    };
    if let Some(ids) = query.get("orderIds") {
        // "If one or more order ID values are specified through the orderIds query
        // parameter, all other query parameters will be ignored."
        let ids: Vec<String> = ids
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Err(invalid_value("orderIds", ""));
        }
        if ids.len() > MAX_ORDER_IDS {
            return Err(BadInput::new(
                30900,
                FULFILLMENT,
                format!(
                    "Exceeded maximum number of order IDs (the current limit is {MAX_ORDER_IDS})"
                ),
            ));
        }
        let asked = Asked {
            from_ms: None,
            to_ms: None,
            limit: ORDERS_DEFAULT_LIMIT,
            offset: 0,
            unfiltered: false,
        };
        return Ok((asked, OrdersSelection::Ids(ids)));
    }
    // 31100 "Invalid limit: {limitvalue}", 31000 "Invalid offset: {offsetvalue}".
    let limit = parse_limit(query, ORDERS_DEFAULT_LIMIT, ORDERS_MAX_LIMIT)
        .map_err(|text| BadInput::new(31100, FULFILLMENT, format!("Invalid limit: {text}")))?;
    let offset = parse_offset(query)
        .map_err(|text| BadInput::new(31000, FULFILLMENT, format!("Invalid offset: {text}")))?;
    let Some(filter) = query.get("filter") else {
        let asked = Asked {
            from_ms: None,
            to_ms: None,
            limit,
            offset,
            unfiltered: true,
        };
        return Ok((
            asked,
            OrdersSelection::Filter {
                by_creation: true,
                statuses: None,
            },
        ));
    };
    let parts = criteria(filter)
        .map_err(|_| BadInput::new(30800, FULFILLMENT, format!("Invalid filter {filter}")))?;
    let (mut created, mut modified, mut statuses) = (None, None, None);
    for (name, value) in parts {
        let range = |value: &str| {
            range_value(value).map_err(|err| match err {
                RangeError::Shape => invalid_value(name, value),
                RangeError::MissingStart => {
                    BadInput::new(30820, FULFILLMENT, "Start date is missing".to_string())
                }
                RangeError::BadDate => {
                    BadInput::new(30810, FULFILLMENT, "Invalid date format".to_string())
                }
                RangeError::Reversed => BadInput::new(
                    30840,
                    FULFILLMENT,
                    "Start date should be before end date".to_string(),
                ),
            })
        };
        let checked_range = |value: &str| {
            let (from, to) = range(value)?;
            check_orders_range(from, to, now_ms)?;
            Ok::<_, BadInput>((from, to))
        };
        match name.to_ascii_lowercase().as_str() {
            "creationdate" => created = Some(checked_range(value)?),
            "lastmodifieddate" => modified = Some(checked_range(value)?),
            "orderfulfillmentstatus" => {
                let members = set_values(value).ok_or_else(|| invalid_value(name, value))?;
                let set = FULFILLMENT_SETS
                    .iter()
                    .find(|set| {
                        members.len() == set.len()
                            && set.iter().all(|status| members.contains(status))
                    })
                    .ok_or_else(|| invalid_value(name, value))?;
                statuses = Some(*set);
            }
            _ => {
                return Err(BadInput::new(
                    30700,
                    FULFILLMENT,
                    format!("Invalid filter name: {name}"),
                ))
            }
        }
    }
    // "If creationdate and lastmodifieddate are both included, only creationdate is
    // used." With neither, the last 90 days (by creation) as without a filter.
    let (by_creation, range) = match (created, modified) {
        (Some(range), _) => (true, Some(range)),
        (None, Some(range)) => (false, Some(range)),
        (None, None) => (true, None),
    };
    let asked = Asked {
        from_ms: range.map(|(from, _)| from),
        to_ms: range.and_then(|(_, to)| to),
        limit,
        offset,
        unfiltered: range.is_none(),
    };
    Ok((
        asked,
        OrdersSelection::Filter {
            by_creation,
            statuses,
        },
    ))
}

/// The orders `ids` name that `seller` has at `now`, each once. An id is an `orderId`
/// (`KK-DDDDD-IIIII`: the seller's key, the day, the index); the current definition's
/// `orderIds` takes "the unique identifiers of the orders" and no longer the legacy
/// `ITEMID-TRANSACTIONID` form (its field, `legacyOrderId`, was decommissioned in 1.20.6),
/// so such an id names no order and is left out like any unknown one.
fn orders_by_id(sim: &Simulator, seller: &str, ids: &[String], now: i64) -> Vec<SimOrder> {
    let config = &sim.config().ebay;
    let mut found: Vec<SimOrder> = Vec::new();
    for id in ids {
        let (day, index) = match id.split('-').collect::<Vec<_>>()[..] {
            [_, day, index] => (day.parse::<i64>().ok(), index.parse::<u32>().ok()),
            _ => (None, None),
        };
        let (Some(day), Some(index)) = (day, index) else {
            continue;
        };
        if index >= config.orders_per_day {
            continue;
        }
        let order = order(sim.config().seed, config, seller, day, index);
        let exists = order.created >= config.orders_since && order.created <= now;
        if order.order_id == *id
            && exists
            && !found.iter().any(|seen| seen.order_id == order.order_id)
        {
            found.push(order);
        }
    }
    found
}

pub(super) async fn get_orders(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let parsed = orders_query(&query, ebay.now_ms(&sim));
    let (asked, selection) = match parsed {
        Ok((asked, selection)) => (Ok(asked), Some(selection)),
        Err(bad) => (Err(bad), None),
    };
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_GET_ORDERS, "fulfillment", asked) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let Some(selection) = selection else {
        return bad_request("the request could not be read");
    };
    let asked = default_window(asked, ebay.now(&sim));
    let (now, from, to, candidates) = match &selection {
        OrdersSelection::Ids(ids) => {
            let now = ebay.now(&sim);
            (
                now,
                i64::MIN,
                i64::MAX,
                orders_by_id(&sim, &seller, ids, now),
            )
        }
        OrdersSelection::Filter { .. } => candidates(&sim, &ebay, &seller, &asked),
    };
    let (by_creation, statuses) = match selection {
        OrdersSelection::Ids(_) => (true, None),
        OrdersSelection::Filter {
            by_creation,
            statuses,
        } => (by_creation, statuses),
    };
    // "getOrders can return orders up to two years old": older ones are not served, by
    // filter nor by id.
    let oldest = years_before(now.saturating_mul(1000), ORDERS_HISTORY_YEARS).div_euclid(1000);
    let mut matching: Vec<(i64, SimOrder)> = candidates
        .into_iter()
        .filter(|order| order.created <= now && order.created >= oldest)
        .filter(|order| statuses.is_none_or(|set| set.contains(&order.fulfillment_at(now).0)))
        .map(|order| (order.last_modified_at(now), order))
        .filter(|(modified, order)| {
            let at = if by_creation {
                order.created
            } else {
                *modified
            };
            at >= from && at <= to
        })
        .collect();
    matching.sort_by(|a, b| (a.0, &a.1.order_id).cmp(&(b.0, &b.1.order_id)));
    let (total, page) = if sim.faults().ebay_total_grows {
        super::paging::growing_page_of(matching, &asked)
    } else {
        page_of(matching, &asked)
    };
    let orders: Vec<Value> = page
        .iter()
        .map(|(_, order)| order_json(order, &seller, now))
        .collect();
    let mut body = offset_page(
        &origin(&sim),
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

/// The order's Selling Manager sales record number, as getOrders' `salesRecordReference`.
fn sales_record_number(order: &SimOrder) -> String {
    format!("{}", order.day * 1000 + i64::from(order.index))
}

/// 2020-02-01T00:00:00Z: getTransactions' `salesRecordReference` is `0` for orders from
/// then on ("For all orders originating after February 1, 2020, a value of 0 will be
/// returned in this field", sell_finances_v1_oas3, Transaction).
const SALES_RECORD_ZERO_FROM: i64 = 1_580_515_200;

/// A SALE at creation and, for returned orders, a REFUND when the return closes; the
/// status of each follows [`transaction_status_at`]. `payoutId` is the payout that pays
/// it once that payout has begun (its date is in `payouts`, the payouts existing now):
/// "This field will not be returned if eBay has not yet begun processing the payout".
/// `salesRecordReference` is the order's record number, `0` for orders from
/// [`SALES_RECORD_ZERO_FROM`] on.
pub(super) fn transactions_of(
    order: &SimOrder,
    now: i64,
    payouts: &BTreeSet<i64>,
) -> Vec<(i64, Value)> {
    let sales_record = if order.created >= SALES_RECORD_ZERO_FROM {
        "0".to_string()
    } else {
        sales_record_number(order)
    };
    transaction_ids(order)
        .into_iter()
        .map(|(transaction_id, booked, kind)| {
            let sale = kind == "SALE";
            let mut value = json!({
                "transactionId": transaction_id,
                "orderId": order.order_id,
                "transactionType": kind,
                "transactionStatus": transaction_status_at(booked, now),
                "transactionDate": format_millis(booked * 1000),
                "amount": money(order.total_cents),
                "bookingEntry": if sale { "CREDIT" } else { "DEBIT" },
                "buyer": {"username": order.buyer},
                "salesRecordReference": sales_record,
            });
            let paid_by = payout_date_for(booked);
            if payouts.contains(&paid_by) {
                value["payoutId"] = json!(payout_id(paid_by));
            }
            (booked, value)
        })
        .collect()
}

/// getTransactions' `transactionType` values (sell_finances_v1_oas3, `filter`).
const TRANSACTION_TYPES: &[&str] = &[
    "SALE",
    "REFUND",
    "CREDIT",
    "DISPUTE",
    "NON_SALE_CHARGE",
    "SHIPPING_LABEL",
    "TRANSFER",
];
/// getTransactions' `transactionStatus` values.
const TRANSACTION_STATUSES: &[&str] = &[
    "PAYOUT",
    "FUNDS_PROCESSING",
    "FUNDS_AVAILABLE_FOR_PAYOUT",
    "FUNDS_ON_HOLD",
    "COMPLETED",
    "FAILED",
];

/// What a getTransactions `filter` asks beyond the date range: (field of the
/// transaction's JSON, the value it must have). `orderId`, `transactionId` and
/// `payoutId` make eBay ignore `limit` (`ignores_limit`).
#[derive(Debug, Default, PartialEq)]
struct TransactionMatch {
    fields: Vec<(&'static str, String)>,
    ignores_limit: bool,
    /// Newest first: without `sort` ("By default, monetary transactions that match the
    /// input criteria are sorted in descending order according to the transaction date")
    /// and with `sort=-transactionDate`; `sort=transactionDate` is oldest first.
    descending: bool,
}

/// Parses getTransactions' `filter` criteria (every `filter` parameter, as eBay's own
/// example repeats it: `filter=transactionId:{...}&filter=transactionType:{SALE}`),
/// `sort`, `limit` and `offset` as the Finances definition (sell_finances_v1_oas3,
/// getTransactions) defines them: `transactionDate:[FROM..TO]`, and `transactionType`,
/// `transactionStatus`, `buyerUsername`, `salesRecordReference`, `payoutId`,
/// `transactionId` (only with `transactionType`), `orderId` as `{VALUE}`.
/// Refused as its 400 list names them (domain `API_FINANCES`): 135003 "The value of
/// pagination is invalid.", 135005 "The value of sorting is invalid.", 135006 "The value
/// of transaction type filter is invalid.", 135007 "The value of transaction status filter
/// is invalid.", 135008 "The value of transaction date filter is invalid.", 135009
/// "Transaction type filter is missing."; what the list names no code for (an unknown
/// criterion, another criterion's value not in braces) is the generic 2004.
fn transactions_query(
    filters: &[&str],
    query: &HashMap<String, String>,
) -> Result<(Asked, TransactionMatch), BadInput> {
    let finances =
        |error_id: u32, message: &str| BadInput::new(error_id, FINANCES, message.to_string());
    let mut range = None;
    let mut matched = TransactionMatch::default();
    for filter in filters {
        for (name, value) in criteria(filter)? {
            let single = || {
                set_values(value)
                    .filter(|members| members.len() == 1)
                    .map(|members| members[0].to_string())
            };
            let generic = || {
                BadInput::from(format!(
                    "filter {name}: {value:?} is not one value in braces, like {name}:{{VALUE}}"
                ))
            };
            let enumerated =
                |known: &[&str]| single().filter(|chosen| known.contains(&chosen.as_str()));
            match name {
                "transactionDate" => {
                    let (from, to) = range_value(value).map_err(|_| {
                        finances(135008, "The value of transaction date filter is invalid.")
                    })?;
                    range = Some((from, to));
                }
                "transactionType" => {
                    let kind = enumerated(TRANSACTION_TYPES).ok_or_else(|| {
                        finances(135006, "The value of transaction type filter is invalid.")
                    })?;
                    matched.fields.push(("transactionType", kind));
                }
                "transactionStatus" => {
                    let status = enumerated(TRANSACTION_STATUSES).ok_or_else(|| {
                        finances(135007, "The value of transaction status filter is invalid.")
                    })?;
                    matched.fields.push(("transactionStatus", status));
                }
                "buyerUsername" => matched
                    .fields
                    .push(("buyerUsername", single().ok_or_else(generic)?)),
                "salesRecordReference" => matched
                    .fields
                    .push(("salesRecordReference", single().ok_or_else(generic)?)),
                "orderId" | "transactionId" | "payoutId" => {
                    let field = match name {
                        "orderId" => "orderId",
                        "transactionId" => "transactionId",
                        _ => "payoutId",
                    };
                    matched.fields.push((field, single().ok_or_else(generic)?));
                    matched.ignores_limit = true;
                }
                other => {
                    return Err(BadInput::from(format!(
                        "filter {other:?} is not a getTransactions filter; use transactionDate, transactionType, transactionStatus, buyerUsername, salesRecordReference, payoutId, transactionId or orderId"
                    )))
                }
            }
        }
    }
    let named = |field: &str| matched.fields.iter().any(|(name, _)| *name == field);
    // transactionId "cannot be used alone; the transactionType must also be specified".
    if named("transactionId") && !named("transactionType") {
        return Err(finances(135009, "Transaction type filter is missing."));
    }
    // "Transactions can only be sorted according to transaction date": `transactionDate`
    // (oldest first), or with `-` newest first, as eBay answers without `sort`.
    matched.descending = match query.get("sort").map(String::as_str) {
        Some("transactionDate") => false,
        None | Some("-transactionDate") => true,
        Some(_) => return Err(finances(135005, "The value of sorting is invalid.")),
    };
    let pagination_invalid = || finances(135003, "The value of pagination is invalid.");
    // "If an orderId, transactionId, or payoutId filter is included in the request, any
    // limit value will be ignored": every match on one page, whatever `limit` says.
    let limit = if matched.ignores_limit {
        MAX_TRANSACTIONS_LIMIT
    } else {
        parse_limit(query, 20, MAX_TRANSACTIONS_LIMIT).map_err(|_| pagination_invalid())?
    };
    let offset = parse_offset(query).map_err(|_| pagination_invalid())?;
    // Without transactionDate: "all monetary transactions from the last 90 days".
    Ok((Asked::finances(range, limit, offset), matched))
}

/// The value of a transaction's `field` as a filter compares it.
fn transaction_field<'a>(transaction: &'a Value, field: &str) -> &'a str {
    match field {
        "buyerUsername" => transaction["buyer"]["username"].as_str(),
        other => transaction[other].as_str(),
    }
    .unwrap_or_default()
}

pub(super) async fn get_transactions(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let filters: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "filter")
        .map(|(_, value)| value.as_str())
        .collect();
    let mut query: HashMap<String, String> = pairs.iter().cloned().collect();
    if filters.len() > 1 {
        // One `filter` for the links: eBay takes the criteria comma-separated too.
        query.insert("filter".to_string(), filters.join(","));
    }
    let parsed = transactions_query(&filters, &query);
    let (asked, matched) = match parsed {
        Ok((asked, matched)) => (Ok(asked), matched),
        Err(bad) => (Err(bad), TransactionMatch::default()),
    };
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
    let asked = default_window(asked, ebay.now(&sim));
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    // The payouts that have begun and may pay a transaction dated in [from, to].
    let payouts: BTreeSet<i64> = payouts_between(
        sim.config().seed,
        &sim.config().ebay,
        &seller,
        payout_date_for(from),
        payout_date_for(to).min(now).saturating_add(1),
    )
    .into_iter()
    .map(|payout| payout.date)
    .collect();
    let mut matching: Vec<(i64, String, Value)> = candidates
        .iter()
        .flat_map(|order| transactions_of(order, now, &payouts))
        .filter(|(at, _)| *at >= from && *at <= to)
        .filter(|(_, value)| {
            matched
                .fields
                .iter()
                .all(|(field, wanted)| transaction_field(value, field) == wanted.as_str())
        })
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
    if matched.descending {
        matching.reverse();
    }
    let (total, page) = page_of(matching, &asked);
    if total == 0 {
        // getTransactions: "If no monetary transactions match the input criteria, an http
        // status code of 204 No Content is returned with no response payload."
        return StatusCode::NO_CONTENT.into_response();
    }
    let transactions: Vec<Value> = page.into_iter().map(|(_, _, value)| value).collect();
    let body = offset_page(
        &origin(&sim),
        "/sell/finances/v1/transaction",
        &query,
        &asked,
        total,
        "transactions",
        transactions,
    );
    paged_body(&ebay, &sim, OP_GET_TRANSACTIONS, body)
}

pub(super) fn return_json(order: &SimOrder, ret: &SimReturn, seller: &str, now: i64) -> Value {
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

pub(super) async fn search_returns(
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
        // ReturnSortEnum values, prefixed + (ascending) or - (descending).
        if let Some(sort) = query.get("sort") {
            let known = [
                "ACTUAL_AMOUNT",
                "BUYER_LOGIN_NAME",
                "ESTIMATED_AMOUNT",
                "FILING_DATE",
                "REASON",
                "REFUND_DUE_DATE",
                "RETURN_ID",
                "STATUS",
            ];
            let valid = sort
                .strip_prefix('+')
                .or_else(|| sort.strip_prefix('-'))
                .is_some_and(|field| known.contains(&field));
            if !valid {
                return Err(format!("sort {sort:?} is invalid; use + or - followed by a ReturnSortEnum value such as +FILING_DATE"));
            }
        }
        // Post-Order's PaginationOutput: `offset` is the number of entries skipped,
        // 0 when omitted (not a page number).
        Ok(Asked {
            from_ms: bound("creation_date_range_from")?,
            to_ms: bound("creation_date_range_to")?,
            limit: parse_number(&query, "limit", 25)?,
            offset: parse_number(&query, "offset", 0)?,
            unfiltered: false,
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
            "offset": asked.offset,
            "totalEntries": total,
            "totalPages": total.div_ceil(asked.limit),
        },
    });
    paged_body(&ebay, &sim, OP_SEARCH_RETURNS, body)
}
