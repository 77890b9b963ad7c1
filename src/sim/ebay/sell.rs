//! The simulated Sell APIs: getOrders, getTransactions and searchReturns, with the JSON of
//! orders, transactions and returns.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::data::{orders_created, transaction_ids, transaction_status_at, SimOrder, SimReturn};
use super::paging::{filtered_ask, offset_page, page_of, paged_body, parse_number, Asked};
use super::{
    admit, Ebay, DAY, MAX_ORDER_SPAN, OP_GET_ORDERS, OP_GET_TRANSACTIONS, OP_SEARCH_RETURNS,
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

pub(super) async fn get_orders(
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
    let asked = default_window(asked, ebay.now(&sim));
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    // Without a filter, eBay answers the orders created in the last 90 days.
    let by_creation = asked.unfiltered;
    let mut matching: Vec<(i64, SimOrder)> = candidates
        .into_iter()
        .filter(|order| order.created <= now)
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

/// A SALE at creation and, for returned orders, a REFUND when the return closes; the
/// status of each follows [`transaction_status_at`].
pub(super) fn transactions_of(order: &SimOrder, now: i64) -> Vec<(i64, Value)> {
    transaction_ids(order)
        .into_iter()
        .map(|(transaction_id, booked, kind)| {
            let sale = kind == "SALE";
            (
                booked,
                json!({
                    "transactionId": transaction_id,
                    "orderId": order.order_id,
                    "transactionType": kind,
                    "transactionStatus": transaction_status_at(booked, now),
                    "transactionDate": format_millis(booked * 1000),
                    "amount": money(order.total_cents),
                    "bookingEntry": if sale { "CREDIT" } else { "DEBIT" },
                    "buyer": {"username": order.buyer},
                }),
            )
        })
        .collect()
}

pub(super) async fn get_transactions(
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
    let asked = default_window(asked, ebay.now(&sim));
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
