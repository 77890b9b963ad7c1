//! The simulated eBay streams of issue 14 beyond orders, transactions and returns:
//! Finances getPayouts (`finances`); Sell Inventory getInventoryItems and getOffers
//! (`offers`), whose SKUs, prices and quantities are the active inventory's
//! ([`super::feed::inventory_listings`]). Deterministic from (seed, seller, day) like the rest
//! of the seller's data, and consistent with it: a day's payout pays the transactions
//! that reached PAYOUT in the day before it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::data::{orders_created, transaction_ids, SimChange, PAYOUT_AFTER};
use super::feed::inventory_listings;
use super::paging::{filtered_ask, offset_page, page_of, paged_body, parse_number, Asked};
use super::sell::{money, origin, range_seconds};
use super::{admit, bad_request, Ebay, EbaySimConfig, DAY, HOUR, MAX_ORDER_SPAN};
use crate::domain::format_millis;
use crate::sim::Simulator;

/// Fault-schedule name of Finances getPayouts.
pub const OP_GET_PAYOUTS: &str = "ebay.getPayouts";

/// A day's payout begins processing at this hour (UTC) ...
const PAYOUT_HOUR: i64 = 10 * HOUR;
/// ... and has SUCCEEDED this long after.
const PAYOUT_SUCCEEDS_AFTER: i64 = DAY;

/// One simulated payout (times in unix seconds, amounts in cents).
#[derive(Debug, Clone, PartialEq)]
pub struct SimPayout {
    pub payout_id: String,
    /// `payoutDate`: when it began processing.
    pub date: i64,
    pub succeeded_at: i64,
    pub amount_cents: i64,
    pub transaction_count: u32,
}

impl SimPayout {
    /// `payoutStatus` at `now`: INITIATED, then SUCCEEDED.
    pub fn status_at(&self, now: i64) -> &'static str {
        if now >= self.succeeded_at {
            "SUCCEEDED"
        } else {
            "INITIATED"
        }
    }

    fn json(&self, now: i64) -> Value {
        let status = self.status_at(now);
        json!({
            "payoutId": self.payout_id,
            "payoutStatus": status,
            "payoutStatusDescription": if status == "SUCCEEDED" { "Funds sent" } else { "Preparing to send" },
            "amount": money(self.amount_cents),
            "payoutDate": format_millis(self.date * 1000),
            "transactionCount": self.transaction_count,
            "payoutInstrument": {
                "instrumentType": "BANK",
                "nickname": "Checking",
                "accountLastFourDigits": "4242",
            },
        })
    }
}

/// The payouts of `seller` whose `payoutDate` is in `[from, to)`: one a UTC day, at
/// [`PAYOUT_HOUR`], paying every transaction whose PAYOUT moment (its date plus
/// [`PAYOUT_AFTER`]) fell in the 24 hours before; SALEs add, REFUNDs subtract. A day
/// with no such transaction, or whose refunds outweigh its sales, has no payout.
pub fn payouts_between(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimPayout> {
    if to <= from {
        return Vec::new();
    }
    // A transaction paid by a payout at `date` reached PAYOUT in [date − DAY, date); its
    // order was created up to MAX_ORDER_SPAN before its date.
    let oldest_order = from - DAY - PAYOUT_AFTER - MAX_ORDER_SPAN;
    let mut per_payout: BTreeMap<i64, (i64, u32)> = BTreeMap::new();
    for order in orders_created(seed, config, seller, oldest_order, to) {
        for (_, booked, kind) in transaction_ids(&order) {
            let paid = booked + PAYOUT_AFTER;
            // The first payout time at or after `paid`... strictly after: [date − DAY, date).
            let day = (paid - PAYOUT_HOUR).div_euclid(DAY) + 1;
            let date = day * DAY + PAYOUT_HOUR;
            if date < from || date >= to {
                continue;
            }
            let entry = per_payout.entry(date).or_default();
            entry.0 += if kind == "SALE" {
                order.total_cents
            } else {
                -order.total_cents
            };
            entry.1 += 1;
        }
    }
    per_payout
        .into_iter()
        .filter(|(_, (cents, count))| *cents > 0 && *count > 0)
        .map(|(date, (amount_cents, transaction_count))| SimPayout {
            payout_id: format!("7{:09}", date.div_euclid(DAY).rem_euclid(1_000_000_000)),
            date,
            succeeded_at: date + PAYOUT_SUCCEEDS_AFTER,
            amount_cents,
            transaction_count,
        })
        .collect()
}

/// The payouts' status changes with `at` in `[from, to)` (see `changes_between`).
pub(super) fn payout_changes(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    payouts_between(seed, config, seller, from - PAYOUT_SUCCEEDS_AFTER, to)
        .into_iter()
        .filter(|payout| payout.succeeded_at >= from && payout.succeeded_at < to)
        .map(|payout| SimChange {
            at: payout.succeeded_at,
            stream: "finances".to_string(),
            resource_id: payout.payout_id,
            field: "payoutStatus".to_string(),
            before: "INITIATED".to_string(),
            after: "SUCCEEDED".to_string(),
            created: payout.date,
        })
        .collect()
}

/// Finances `GET /sell/finances/v1/payout` (getPayouts): `filter=payoutDate:[FROM..TO]`,
/// `limit` 1..200 (default 20), `offset`, `sort=payoutDate` (ascending) or
/// `-payoutDate` (descending, the default).
async fn get_payouts(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = filtered_ask(&query, "payoutDate", 20);
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_GET_PAYOUTS, "finances", asked) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    // Only the payoutDate filter is served: a status or reference filter beside it would
    // silently answer more than eBay does, so it is refused (the client never sends one).
    if let Some(filter) = query.get("filter") {
        let other = filter.split(',').find(|part| {
            let key = part.split_once(':').map_or(*part, |(key, _)| key);
            !key.trim().eq_ignore_ascii_case("payoutDate")
        });
        if let Some(other) = other {
            return bad_request(&format!(
                "The simulator serves only the payoutDate filter; {other:?} is not supported."
            ));
        }
    }
    let descending = match query.get("sort").map(String::as_str) {
        None | Some("-payoutDate") => true,
        Some("payoutDate") => false,
        Some(other) => {
            return bad_request(&format!(
                "The 'sort' value {other:?} is invalid; payouts sort only by payoutDate or -payoutDate."
            ))
        }
    };
    let now = ebay.now(&sim);
    // Without a filter: every payout of the last five years (eBay's default).
    let from_ms = if asked.unfiltered {
        Some(now.saturating_sub(5 * 365 * DAY).saturating_mul(1000))
    } else {
        asked.from_ms
    };
    let (from, to) = range_seconds(from_ms, asked.to_ms, now);
    let mut matching = payouts_between(
        sim.config().seed,
        &sim.config().ebay,
        &seller,
        from,
        to.saturating_add(1),
    );
    matching.sort_by(|a, b| (a.date, &a.payout_id).cmp(&(b.date, &b.payout_id)));
    if descending {
        matching.reverse();
    }
    let (total, page) = page_of(matching, &asked);
    let payouts: Vec<Value> = page.iter().map(|payout| payout.json(now)).collect();
    let mut body = offset_page(
        &origin(&sim),
        "/sell/finances/v1/payout",
        &query,
        &asked,
        total,
        "payouts",
        payouts,
    );
    // No match: "an empty payload" (getPayouts reference): no payouts array at all.
    if total == 0 {
        if let Some(object) = body.as_object_mut() {
            object.remove("payouts");
        }
    }
    paged_body(&ebay, &sim, OP_GET_PAYOUTS, body)
}

/// Fault-schedule name of Sell Inventory getInventoryItems.
pub const OP_GET_INVENTORY_ITEMS: &str = "ebay.getInventoryItems";
/// Fault-schedule name of Sell Inventory getOffers.
pub const OP_GET_OFFERS: &str = "ebay.getOffers";
/// Daily calls per seller to the Sell Inventory API (eBay's default: 2,000,000).
pub(super) const INVENTORY_DAILY_CALLS: u64 = 2_000_000;

/// One offer of the seller at a moment: one per SKU of a listing with a seller SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOffer {
    pub offer_id: String,
    pub sku: String,
    pub listing_id: String,
    pub price: String,
    pub quantity: u64,
}

/// The seller's offers at `now`, by SKU: the SKUs of its active listings
/// ([`inventory_listings`]) with their price and quantity; a listing without a seller
/// SKU (not created through the Inventory API) has none.
pub fn offers_at(seed: u64, config: &EbaySimConfig, seller: &str, now: i64) -> Vec<SimOffer> {
    let mut out = Vec::new();
    for listing in inventory_listings(seed, config, seller, now) {
        for (position, (item_id, sku, quantity, price)) in listing.rows().into_iter().enumerate() {
            if sku.is_empty() {
                continue;
            }
            out.push(SimOffer {
                offer_id: format!("{item_id}{position}"),
                sku,
                listing_id: item_id,
                price,
                quantity,
            });
        }
    }
    out
}

impl SimOffer {
    fn json(&self) -> Value {
        json!({
            "offerId": self.offer_id,
            "sku": self.sku,
            "marketplaceId": "EBAY_US",
            "format": "FIXED_PRICE",
            "availableQuantity": self.quantity,
            "pricingSummary": {"price": {"value": self.price, "currency": "USD"}},
            "listing": {"listingId": self.listing_id, "listingStatus": "ACTIVE"},
            "status": "PUBLISHED",
        })
    }
}

/// `limit` and `offset` of the Inventory API: `offset` is the **page number** (0-based),
/// not an item count ("the value passed in this query parameter sets the page number to
/// retrieve").
fn page_ask(query: &HashMap<String, String>, default_limit: u64) -> Result<Asked, String> {
    Ok(Asked {
        from_ms: None,
        to_ms: None,
        limit: parse_number(query, "limit", default_limit)?,
        offset: parse_number(query, "offset", 0)?,
        unfiltered: true,
    })
}

/// The Inventory API's page links: `offset` counts pages.
fn inventory_page(
    sim: &Simulator,
    path: &str,
    extra_query: &str,
    asked: &Asked,
    total: u64,
    key: &str,
    items: Vec<Value>,
) -> Value {
    let pages = total.div_ceil(asked.limit.max(1));
    let link = |page: u64| {
        format!(
            "{}{path}?{extra_query}limit={}&offset={page}",
            origin(sim),
            asked.limit
        )
    };
    let mut body = json!({
        "href": link(asked.offset),
        "limit": asked.limit,
        "size": items.len(),
        "total": total,
    });
    body[key] = json!(items);
    if asked.offset.saturating_add(1) < pages {
        body["next"] = json!(link(asked.offset.saturating_add(1)));
    }
    if asked.offset > 0 {
        body["prev"] = json!(link(asked.offset - 1));
    }
    body
}

/// Sell Inventory `GET /sell/inventory/v1/inventory_item` (getInventoryItems): every
/// inventory item (SKU) of the seller, `limit` 1..100 (default 100) a page, `offset` the
/// page number.
async fn get_inventory_items(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = page_ask(&query, 100);
    let (seller, asked) = match admit(
        &sim,
        &ebay,
        &headers,
        OP_GET_INVENTORY_ITEMS,
        "inventory",
        asked,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let now = ebay.now(&sim);
    let offers = offers_at(sim.config().seed, &sim.config().ebay, &seller, now);
    let total = offers.len() as u64;
    let skip = usize::try_from(asked.offset.saturating_mul(asked.limit)).unwrap_or(usize::MAX);
    let items: Vec<Value> = offers
        .iter()
        .skip(skip)
        .take(usize::try_from(asked.limit).unwrap_or(usize::MAX))
        .map(|offer| {
            json!({
                "sku": offer.sku,
                "locale": "en_US",
                "condition": "NEW",
                "product": {"title": format!("Simulated item {}", offer.sku)},
                "availability": {"shipToLocationAvailability": {"quantity": offer.quantity}},
            })
        })
        .collect();
    let body = inventory_page(
        &sim,
        "/sell/inventory/v1/inventory_item",
        "",
        &asked,
        total,
        "inventoryItems",
        items,
    );
    paged_body(&ebay, &sim, OP_GET_INVENTORY_ITEMS, body)
}

/// Sell Inventory `GET /sell/inventory/v1/offer?sku=` (getOffers): the offers of one SKU
/// (`sku` required); a SKU without an offer answers 404.
async fn get_offers(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = page_ask(&query, 100);
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_GET_OFFERS, "inventory", asked) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let Some(sku) = query
        .get("sku")
        .filter(|sku| !sku.is_empty() && sku.len() <= 50)
    else {
        return bad_request("The 'sku' query parameter is required (at most 50 characters).");
    };
    let now = ebay.now(&sim);
    let offers: Vec<Value> = offers_at(sim.config().seed, &sim.config().ebay, &seller, now)
        .iter()
        .filter(|offer| offer.sku == *sku)
        .map(SimOffer::json)
        .collect();
    if offers.is_empty() {
        return super::ebay_error(
            axum::http::StatusCode::NOT_FOUND,
            25713,
            "API_INVENTORY",
            "REQUEST",
            "This Offer is not available.",
        );
    }
    let total = offers.len() as u64;
    let sku_query = format!("sku={}&", super::paging::percent_encode(sku));
    let body = inventory_page(
        &sim,
        "/sell/inventory/v1/offer",
        &sku_query,
        &asked,
        total,
        "offers",
        offers,
    );
    paged_body(&ebay, &sim, OP_GET_OFFERS, body)
}

/// The routes of this file (merged into the eBay router).
pub(super) fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/sell/finances/v1/payout", get(get_payouts))
        .route(
            "/sell/inventory/v1/inventory_item",
            get(get_inventory_items),
        )
        .route("/sell/inventory/v1/offer", get(get_offers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payout_pays_the_transactions_that_reached_payout_the_day_before() {
        let config = EbaySimConfig {
            orders_per_day: 10,
            return_every: 0,
            ..EbaySimConfig::default()
        };
        let from = 100 * DAY;
        let payouts = payouts_between(7, &config, "s", from, from + 5 * DAY);
        assert_eq!(payouts.len(), 5);
        for payout in &payouts {
            assert_eq!(payout.date.rem_euclid(DAY), PAYOUT_HOUR);
            // Exactly the sales that reached PAYOUT in the 24 hours before it.
            let sales: Vec<i64> = orders_created(7, &config, "s", 0, payout.date)
                .iter()
                .filter(|order| {
                    let at = order.created + 30 + PAYOUT_AFTER;
                    at >= payout.date - DAY && at < payout.date
                })
                .map(|order| order.total_cents)
                .collect();
            assert_eq!(payout.transaction_count as usize, sales.len());
            let paid: i64 = sales.iter().sum();
            assert_eq!(payout.amount_cents, paid);
        }
        let changes = payout_changes(7, &config, "s", from, from + 5 * DAY);
        assert_eq!(changes.len(), 5);
        assert!(changes.iter().all(|change| change.after == "SUCCEEDED"));
    }
}
