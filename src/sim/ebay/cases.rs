//! The simulated Post-Order case search (`GET /post-order/v2/casemanagement/search`) and
//! its cases: one return in two is escalated to a RETURN case half a day after the item
//! shipped; the case moves OPEN → WAITING_CS a day later and → CLOSED a day after the
//! return closed. Deterministic from (seed, seller, day, index) like the orders.

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
use super::{admit, Ebay, EbaySimConfig, DAY, HOUR, MAX_ORDER_SPAN};
use crate::domain::{format_millis, parse_millis};
use crate::sim::Simulator;

/// Fault-schedule name of Post-Order case search.
pub const OP_SEARCH_CASES: &str = "ebay.searchCases";

/// A case escalated from an order's return (times in unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimCase {
    pub case_id: String,
    pub created: i64,
    /// When it went from OPEN to WAITING_CS.
    pub waiting_at: i64,
    pub closed_at: i64,
    pub claim_cents: i64,
    pub item_id: String,
    pub transaction_id: String,
}

impl SimCase {
    /// `caseStatusEnum` at `now`.
    pub fn status_at(&self, now: i64) -> &'static str {
        if now >= self.closed_at {
            "CLOSED"
        } else if now >= self.waiting_at {
            "WAITING_CS"
        } else {
            "OPEN"
        }
    }
}

/// The case of `order`, if its return was escalated (one return in two).
pub fn case_of(seed: u64, seller: &str, order: &SimOrder) -> Option<SimCase> {
    let ret = order.return_info.as_ref()?;
    let key = seller_key(seller);
    if !draw(seed, key, order.day, order.index, 20).is_multiple_of(2) {
        return None;
    }
    let suffix = format!("{:05}{:05}", order.day.rem_euclid(100_000), order.index);
    let created = ret.shipped_at + 12 * HOUR;
    Some(SimCase {
        case_id: format!("7{suffix}"),
        created,
        waiting_at: created + DAY,
        closed_at: ret.closed_at + DAY,
        claim_cents: order.total_cents,
        item_id: format!("1{suffix}"),
        transaction_id: format!("1{suffix}"),
    })
}

/// The cases of `seller` created in `[from, to)` (unix seconds), by creation time.
pub fn cases_between(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimCase> {
    let mut cases: Vec<SimCase> = orders_created(
        seed,
        config,
        seller,
        from.saturating_sub(MAX_ORDER_SPAN),
        to,
    )
    .iter()
    .filter_map(|order| case_of(seed, seller, order))
    .filter(|case| case.created >= from && case.created < to)
    .collect();
    cases.sort_by(|a, b| (a.created, &a.case_id).cmp(&(b.created, &b.case_id)));
    cases
}

/// The cases' status changes with `at` in `[from, to)` (see `changes_between`).
pub(super) fn case_changes(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    // A case closes at most MAX_ORDER_SPAN + DAY after its order's creation.
    let oldest = from.saturating_sub(MAX_ORDER_SPAN + DAY);
    let mut out = Vec::new();
    for order in orders_created(seed, config, seller, oldest, to) {
        let Some(case) = case_of(seed, seller, &order) else {
            continue;
        };
        for (at, before, after) in [
            (case.waiting_at, "OPEN", "WAITING_CS"),
            (case.closed_at, "WAITING_CS", "CLOSED"),
        ] {
            if at >= from && at < to {
                out.push(SimChange {
                    at,
                    stream: "cases".to_string(),
                    resource_id: case.case_id.clone(),
                    field: "caseStatusEnum".to_string(),
                    before: before.to_string(),
                    after: after.to_string(),
                    created: case.created,
                });
            }
        }
    }
    out
}

/// A CaseSummaryType as eBay's case search serves it.
fn case_json(case: &SimCase, order: &SimOrder, seller: &str, now: i64) -> Value {
    json!({
        "caseId": case.case_id,
        "caseType": "RETURN",
        "caseStatusEnum": case.status_at(now),
        "creationDate": {"value": format_millis(case.created * 1000)},
        "lastModifiedDate": {"value": format_millis(last_change(case, now) * 1000)},
        "claimAmount": money(case.claim_cents),
        "buyer": order.buyer,
        "seller": seller,
        "itemId": case.item_id,
        "transactionId": case.transaction_id,
    })
}

fn last_change(case: &SimCase, now: i64) -> i64 {
    if now >= case.closed_at {
        case.closed_at
    } else if now >= case.waiting_at {
        case.waiting_at
    } else {
        case.created
    }
}

/// `GET /post-order/v2/casemanagement/search`: `case_creation_date_range_from` / `_to`
/// (inclusive), `limit` (1..200, default 25), `offset` (entries skipped, default 0).
/// The status, item, order and transaction filters and `sort` are not served: a request
/// with one is refused rather than answered unfiltered.
async fn search_cases(
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
            "case_status_filter",
            "item_id",
            "order_id",
            "return_id",
            "transaction_id",
            "sort",
        ];
        if let Some(key) = unserved.iter().find(|key| query.contains_key(**key)) {
            return Err(format!("the simulator does not serve the {key} parameter"));
        }
        Ok(Asked {
            from_ms: bound("case_creation_date_range_from")?,
            to_ms: bound("case_creation_date_range_to")?,
            limit: parse_number(&query, "limit", 25)?,
            offset: parse_number(&query, "offset", 0)?,
            unfiltered: false,
        })
    })();
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_SEARCH_CASES, "postOrder", asked) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let (now, from, to, candidates) = candidates(&sim, &ebay, &seller, &asked);
    let seed = sim.config().seed;
    let matching: Vec<(i64, String, Value)> = candidates
        .iter()
        .filter_map(|order| {
            let case = case_of(seed, &seller, order)?;
            (case.created >= from && case.created <= to).then(|| {
                (
                    case.created,
                    case.case_id.clone(),
                    case_json(&case, order, &seller, now),
                )
            })
        })
        .collect();
    let body = post_order_page(matching, &asked, "totalNumberOfCases");
    paged_body(&ebay, &sim, OP_SEARCH_CASES, body)
}

pub(super) fn routes() -> Router<Arc<Simulator>> {
    Router::new().route("/post-order/v2/casemanagement/search", get(search_cases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_move_open_waiting_closed_and_their_changes_match() {
        let config = EbaySimConfig {
            orders_per_day: 20,
            return_every: 2,
            orders_since: 0,
            ..EbaySimConfig::default()
        };
        let cases = cases_between(7, &config, "s", 100 * DAY, 110 * DAY);
        assert!(cases.len() >= 10, "{} cases", cases.len());
        let changes = case_changes(7, &config, "s", 0, 200 * DAY);
        for case in &cases {
            assert_eq!(case.status_at(case.created), "OPEN");
            assert_eq!(case.status_at(case.waiting_at), "WAITING_CS");
            assert_eq!(case.status_at(case.closed_at), "CLOSED");
            let mine = changes
                .iter()
                .filter(|change| change.resource_id == case.case_id)
                .count();
            assert_eq!(mine, 2, "case {}", case.case_id);
        }
    }
}
