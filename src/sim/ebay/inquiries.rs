//! The simulated Post-Order inquiry search (`GET /post-order/v2/inquiry/search`) and its
//! Item Not Received inquiries: one order in [`INQUIRY_EVERY`] without a return gets an
//! INR inquiry two days after it was fulfilled; the inquiry is OPEN, moves to
//! WAITING_BUYER_RESPONSE a day later (the seller answered with tracking) and to CLOSED two
//! days after that. Deterministic from (seed, seller, day, index) like the orders.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::data::{draw, orders_created, seller_key, SimChange, SimOrder};
use super::paging::{paged_body, parse_number, post_order_page, Asked};
use super::sell::{candidates, money};
use super::{admit, Ebay, EbaySimConfig, DAY, MAX_ORDER_SPAN};
use crate::domain::{format_millis, parse_millis};
use crate::sim::Simulator;

/// Fault-schedule name of Post-Order inquiry search.
pub const OP_SEARCH_INQUIRIES: &str = "ebay.searchInquiries";

/// One order in this many (among those without a return) gets an INR inquiry.
pub const INQUIRY_EVERY: u64 = 6;

/// An Item Not Received inquiry on an order (times in unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimInquiry {
    pub inquiry_id: String,
    pub created: i64,
    /// When it went from OPEN to WAITING_BUYER_RESPONSE.
    pub answered_at: i64,
    pub closed_at: i64,
    pub claim_cents: i64,
    pub item_id: String,
    pub transaction_id: String,
}

impl SimInquiry {
    /// `inquiryStatusEnum` at `now`.
    pub fn status_at(&self, now: i64) -> &'static str {
        if now >= self.closed_at {
            "CLOSED"
        } else if now >= self.answered_at {
            "WAITING_BUYER_RESPONSE"
        } else {
            "OPEN"
        }
    }

    /// `lastModifiedDate` at `now`: the latest status change so far.
    pub fn last_change(&self, now: i64) -> i64 {
        if now >= self.closed_at {
            self.closed_at
        } else if now >= self.answered_at {
            self.answered_at
        } else {
            self.created
        }
    }
}

/// The inquiry of `order`, if it has one (no return, and one order in [`INQUIRY_EVERY`]).
pub fn inquiry_of(seed: u64, seller: &str, order: &SimOrder) -> Option<SimInquiry> {
    if order.return_info.is_some() {
        return None;
    }
    let key = seller_key(seller);
    if !draw(seed, key, order.day, order.index, 30).is_multiple_of(INQUIRY_EVERY) {
        return None;
    }
    let suffix = format!("{:05}{:05}", order.day.rem_euclid(100_000), order.index);
    let created = order.fulfilled_at + 2 * DAY;
    let answered_at = created + DAY;
    Some(SimInquiry {
        inquiry_id: format!("3{suffix}"),
        created,
        answered_at,
        closed_at: answered_at + 2 * DAY,
        claim_cents: order.total_cents,
        item_id: format!("1{suffix}"),
        transaction_id: format!("1{suffix}"),
    })
}

/// The inquiries of `seller` created in `[from, to)` (unix seconds), by creation time.
pub fn inquiries_between(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimInquiry> {
    let mut inquiries: Vec<SimInquiry> = orders_created(
        seed,
        config,
        seller,
        from.saturating_sub(MAX_ORDER_SPAN),
        to,
    )
    .iter()
    .filter_map(|order| inquiry_of(seed, seller, order))
    .filter(|inquiry| inquiry.created >= from && inquiry.created < to)
    .collect();
    inquiries.sort_by(|a, b| (a.created, &a.inquiry_id).cmp(&(b.created, &b.inquiry_id)));
    inquiries
}

/// The inquiries' status changes with `at` in `[from, to)` (see `changes_between`).
pub(super) fn inquiry_changes(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    // An inquiry closes within MAX_ORDER_SPAN of its order's creation.
    let oldest = from.saturating_sub(MAX_ORDER_SPAN);
    let mut out = Vec::new();
    for order in orders_created(seed, config, seller, oldest, to) {
        let Some(inquiry) = inquiry_of(seed, seller, &order) else {
            continue;
        };
        for (at, before, after) in [
            (inquiry.answered_at, "OPEN", "WAITING_BUYER_RESPONSE"),
            (inquiry.closed_at, "WAITING_BUYER_RESPONSE", "CLOSED"),
        ] {
            if at >= from && at < to {
                out.push(SimChange {
                    at,
                    stream: "inquiries".to_string(),
                    resource_id: inquiry.inquiry_id.clone(),
                    field: "inquiryStatusEnum".to_string(),
                    before: before.to_string(),
                    after: after.to_string(),
                    created: inquiry.created,
                });
            }
        }
    }
    out
}

/// An InquirySummaryType as eBay's inquiry search serves it.
fn inquiry_json(inquiry: &SimInquiry, order: &SimOrder, seller: &str, now: i64) -> Value {
    json!({
        "inquiryId": inquiry.inquiry_id,
        "inquiryStatusEnum": inquiry.status_at(now),
        "creationDate": {"value": format_millis(inquiry.created * 1000)},
        "lastModifiedDate": {"value": format_millis(inquiry.last_change(now) * 1000)},
        "respondByDate": {"value": format_millis((inquiry.created + 3 * DAY) * 1000)},
        "claimAmount": money(inquiry.claim_cents),
        "buyer": order.buyer,
        "seller": seller,
        "itemId": inquiry.item_id,
        "transactionId": inquiry.transaction_id,
    })
}

/// `GET /post-order/v2/inquiry/search`: `inquiry_creation_date_range_from` / `_to`
/// (inclusive), `limit` (1..200, default 25), `offset` (entries skipped, default 0),
/// `fieldgroups` DEFAULT or SUMMARY (eBay answers both alike). The status, item, order
/// and transaction filters and `sort` are not served: a request with one is refused
/// rather than answered unfiltered.
async fn search_inquiries(
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
        let unserved = [
            "inquiry_status",
            "item_id",
            "order_id",
            "transaction_id",
            "sort",
        ];
        if let Some(key) = unserved.iter().find(|key| query.contains_key(**key)) {
            return Err(format!("the simulator does not serve the {key} parameter"));
        }
        if let Some(groups) = query.get("fieldgroups") {
            if groups != "DEFAULT" && groups != "SUMMARY" {
                return Err(format!(
                    "fieldgroups: {groups:?} is not an InquirySearchFieldGroupEnum value"
                ));
            }
        }
        let from_ms = bound("inquiry_creation_date_range_from")?;
        let to_ms = bound("inquiry_creation_date_range_to")?;
        if let (Some(from), Some(to)) = (from_ms, to_ms) {
            if from > to {
                return Err(
                    "inquiry_creation_date_range_from must be older than inquiry_creation_date_range_to"
                        .to_string(),
                );
            }
        }
        Ok(Asked {
            from_ms,
            to_ms,
            limit: parse_number(&query, "limit", 25)?,
            offset: parse_number(&query, "offset", 0)?,
            unfiltered: false,
        })
    })();
    let (seller, asked) = match admit(
        &sim,
        &ebay,
        &headers,
        OP_SEARCH_INQUIRIES,
        "postOrder",
        asked,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    let seed = sim.config().seed;
    let matching: Vec<(i64, String, Value)> = candidates
        .iter()
        .filter_map(|order| {
            let inquiry = inquiry_of(seed, &seller, order)?;
            (inquiry.created >= from && inquiry.created <= to).then(|| {
                (
                    inquiry.created,
                    inquiry.inquiry_id.clone(),
                    inquiry_json(&inquiry, order, &seller, now),
                )
            })
        })
        .collect();
    let body = post_order_page(matching, &asked, "totalNumberOfInquiries");
    paged_body(&ebay, &sim, OP_SEARCH_INQUIRIES, body)
}

pub(super) fn routes() -> Router<Arc<Simulator>> {
    Router::new().route("/post-order/v2/inquiry/search", get(search_inquiries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiries_move_open_answered_closed_and_their_changes_match() {
        let config = EbaySimConfig {
            orders_per_day: 20,
            return_every: 10,
            orders_since: 0,
            ..EbaySimConfig::default()
        };
        let inquiries = inquiries_between(7, &config, "s", 100 * DAY, 110 * DAY);
        assert!(inquiries.len() >= 10, "{} inquiries", inquiries.len());
        let changes = inquiry_changes(7, &config, "s", 0, 200 * DAY);
        for inquiry in &inquiries {
            assert_eq!(inquiry.status_at(inquiry.created), "OPEN");
            assert_eq!(
                inquiry.status_at(inquiry.answered_at),
                "WAITING_BUYER_RESPONSE"
            );
            assert_eq!(inquiry.status_at(inquiry.closed_at), "CLOSED");
            let mine = changes
                .iter()
                .filter(|change| change.resource_id == inquiry.inquiry_id)
                .count();
            assert_eq!(mine, 2, "inquiry {}", inquiry.inquiry_id);
        }
    }
}
