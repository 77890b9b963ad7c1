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
use super::paging::{
    criteria, offset_page, page_of, paged_body, parse_limit, parse_number, parse_offset,
    range_value, set_values, Asked, BadInput,
};
use super::sell::{money, origin, range_seconds};
use super::{admit, bad_request, Ebay, EbaySimConfig, DAY, HOUR, MAX_LIMIT, MAX_ORDER_SPAN};
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

/// The `payoutDate` of the payout that pays a transaction dated `booked`: the first
/// [`PAYOUT_HOUR`] strictly after its PAYOUT moment (`booked` + [`PAYOUT_AFTER`]), so a
/// payout pays what reached PAYOUT in the 24 hours before it.
pub(super) fn payout_date_for(booked: i64) -> i64 {
    let paid = booked + PAYOUT_AFTER;
    let day = (paid - PAYOUT_HOUR).div_euclid(DAY) + 1;
    day * DAY + PAYOUT_HOUR
}

/// The `payoutId` of the payout dated `date`.
pub(super) fn payout_id(date: i64) -> String {
    format!("7{:09}", date.div_euclid(DAY).rem_euclid(1_000_000_000))
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
            let date = payout_date_for(booked);
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
            payout_id: payout_id(date),
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

/// The `domain` of the Finances API's errors.
pub(super) const FINANCES: &str = "API_FINANCES";
/// PayoutStatusEnum, the values of getPayouts' `payoutStatus` filter.
const PAYOUT_STATUSES: &[&str] = &[
    "INITIATED",
    "SUCCEEDED",
    "RETRYABLE_FAILED",
    "TERMINAL_FAILED",
    "REVERSED",
];
/// `payoutReference:{...}` "can support up to 200 payoutReference inputs".
const MAX_PAYOUT_REFERENCES: usize = 200;

/// What a getPayouts request selects besides the `payoutDate` range and page in [`Asked`].
#[derive(Debug, Default, PartialEq)]
struct PayoutMatch {
    /// `payoutStatus:{...}`: one PayoutStatusEnum value, the payout's status now.
    status: Option<String>,
    /// `payoutReference:{...}` was given: only the split payouts of mainland China
    /// sellers carry one, and no simulated payout is such, so nothing matches.
    by_reference: bool,
    /// `sort`: newest first unless `payoutDate` / `lastAttemptedPayoutDate` (ascending).
    descending: bool,
}

/// Parses getPayouts' query as the Finances API defines it (sell_finances_v1_oas3,
/// getPayouts `filter`, `limit`, `offset`, `sort`): the criteria `payoutDate:[FROM..TO]`,
/// `payoutStatus:{STATUS}`, `lastAttemptedPayoutDate:[FROM..TO]` (only beside
/// `payoutStatus:{RETRYABLE_FAILED}`) and `payoutReference:{ID|...}`, comma-separated.
/// Refused as its 400 list names them (domain `API_FINANCES`): 135002 "The value of
/// payout status filter is invalid.", 135003 "The value of pagination is invalid.",
/// 135004 "The value of payout date filter is invalid.", 135005 "The value of sorting
/// is invalid."; a criterion the definition does not name is the generic 2004.
fn payouts_query(query: &HashMap<String, String>) -> Result<(Asked, PayoutMatch), BadInput> {
    let status_invalid = || {
        BadInput::new(
            135002,
            FINANCES,
            "The value of payout status filter is invalid.".to_string(),
        )
    };
    let date_invalid = || {
        BadInput::new(
            135004,
            FINANCES,
            "The value of payout date filter is invalid.".to_string(),
        )
    };
    let pagination_invalid = || {
        BadInput::new(
            135003,
            FINANCES,
            "The value of pagination is invalid.".to_string(),
        )
    };
    let descending = match query.get("sort").map(String::as_str) {
        None | Some("-payoutDate") | Some("-lastAttemptedPayoutDate") => true,
        Some("payoutDate") | Some("lastAttemptedPayoutDate") => false,
        Some(_) => {
            return Err(BadInput::new(
                135005,
                FINANCES,
                "The value of sorting is invalid.".to_string(),
            ))
        }
    };
    let limit = parse_limit(query, 20, MAX_LIMIT).map_err(|_| pagination_invalid())?;
    let offset = parse_offset(query).map_err(|_| pagination_invalid())?;
    let mut matched = PayoutMatch {
        descending,
        ..PayoutMatch::default()
    };
    let (mut range, mut last_attempted) = (None, false);
    if let Some(filter) = query.get("filter") {
        for (name, value) in criteria(filter)? {
            match name {
                "payoutDate" => range = Some(range_value(value).map_err(|_| date_invalid())?),
                "lastAttemptedPayoutDate" => {
                    range_value(value).map_err(|_| date_invalid())?;
                    last_attempted = true;
                }
                "payoutStatus" => {
                    let status = set_values(value)
                        .filter(|members| members.len() == 1)
                        .map(|members| members[0])
                        .filter(|status| PAYOUT_STATUSES.contains(status))
                        .ok_or_else(status_invalid)?;
                    matched.status = Some(status.to_string());
                }
                "payoutReference" => {
                    let references = set_values(value).ok_or_else(|| {
                        BadInput::from(format!(
                            "filter payoutReference: {value:?} is not one or more ids in braces, like payoutReference:{{ID}}"
                        ))
                    })?;
                    if references.len() > MAX_PAYOUT_REFERENCES {
                        return Err(BadInput::from(format!(
                            "filter payoutReference: {} ids, at most {MAX_PAYOUT_REFERENCES}",
                            references.len()
                        )));
                    }
                    matched.by_reference = true;
                }
                other => {
                    return Err(BadInput::from(format!(
                        "filter {other:?} is not a getPayouts filter; use payoutDate, payoutStatus, lastAttemptedPayoutDate or payoutReference"
                    )))
                }
            }
        }
    }
    // "In order to use this filter, the payoutStatus filter must also be used and its
    // value must be set to RETRYABLE_FAILED."
    if last_attempted && matched.status.as_deref() != Some("RETRYABLE_FAILED") {
        return Err(status_invalid());
    }
    // Without payoutDate: every payout of the last five years (eBay's default).
    Ok((Asked::finances(range, limit, offset), matched))
}

/// Finances `GET /sell/finances/v1/payout` (getPayouts): the filters, paging and sort of
/// [`payouts_query`]; `-payoutDate` (newest first) by default.
async fn get_payouts(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let parsed = payouts_query(&query);
    let (asked, matched) = match parsed {
        Ok((asked, matched)) => (Ok(asked), matched),
        Err(bad) => (Err(bad), PayoutMatch::default()),
    };
    let (seller, asked) = match admit(&sim, &ebay, &headers, OP_GET_PAYOUTS, "finances", asked) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let now = ebay.now(&sim);
    // Without a payoutDate range: every payout of the last five years (eBay's default).
    let from_ms = if asked.unfiltered {
        Some(now.saturating_sub(5 * 365 * DAY).saturating_mul(1000))
    } else {
        asked.from_ms
    };
    let (from, to) = range_seconds(from_ms, asked.to_ms, now);
    let mut matching: Vec<SimPayout> = if matched.by_reference {
        Vec::new()
    } else {
        payouts_between(
            sim.config().seed,
            &sim.config().ebay,
            &seller,
            from,
            to.saturating_add(1),
        )
    };
    if let Some(status) = &matched.status {
        matching.retain(|payout| payout.status_at(now) == status.as_str());
    }
    matching.sort_by(|a, b| (a.date, &a.payout_id).cmp(&(b.date, &b.payout_id)));
    if matched.descending {
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

/// Fault-schedule name of Message getConversations.
pub const OP_GET_CONVERSATIONS: &str = "ebay.getConversations";
/// Daily calls per seller to the Message API in the simulator.
pub(super) const MESSAGE_DAILY_CALLS: u64 = 50_000;

/// A buyer's first message comes this long after the order ...
const FIRST_MESSAGE_AFTER: i64 = HOUR;
/// ... a follow-up (one conversation in two) this long after the order ...
const FOLLOW_UP_AFTER: i64 = DAY;
/// ... and the seller reads each message this long after it arrived.
const READ_AFTER: i64 = 2 * HOUR;

/// One buyer message of a simulated conversation (times in unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    pub message_id: String,
    pub sent_at: i64,
    pub read_at: i64,
}

/// A conversation with a buyer about an order (one order in four): a first message an
/// hour after the order, a follow-up a day after it for one conversation in two; the
/// seller reads each two hours after it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConversation {
    pub conversation_id: String,
    pub buyer: String,
    pub order_id: String,
    pub created: i64,
    pub messages: Vec<SimMessage>,
}

impl SimConversation {
    /// The latest message at `now` (none before the first is sent).
    pub fn latest_at(&self, now: i64) -> Option<&SimMessage> {
        self.messages
            .iter()
            .rev()
            .find(|message| message.sent_at <= now)
    }

    fn json(&self, seller: &str, now: i64) -> Option<Value> {
        let latest = self.latest_at(now)?;
        let read = now >= latest.read_at;
        Some(json!({
            "conversationId": self.conversation_id,
            "conversationStatus": "ACTIVE",
            "conversationTitle": format!("Question about order {}", self.order_id),
            "conversationType": "FROM_MEMBERS",
            "createdDate": format_millis(self.created * 1000),
            "referenceId": self.order_id,
            "referenceType": "ORDER",
            "unreadCount": u32::from(!read),
            "latestMessage": {
                "messageId": latest.message_id,
                "createdDate": format_millis(latest.sent_at * 1000),
                "messageBody": "Hello, when will my order ship?",
                "readStatus": read,
                "senderUsername": self.buyer,
                "recipientUsername": seller,
                "subject": format!("Question about order {}", self.order_id),
            },
        }))
    }
}

/// The conversations of `seller` whose first message was sent in `[from, to)`.
pub fn conversations_between(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimConversation> {
    orders_created(seed, config, seller, from - FIRST_MESSAGE_AFTER, to)
        .into_iter()
        .filter(|order| order.index % 4 == 1)
        .filter_map(|order| {
            let created = order.created + FIRST_MESSAGE_AFTER;
            if created < from || created >= to {
                return None;
            }
            let suffix = format!("{:05}{:05}", order.day.rem_euclid(100_000), order.index);
            let mut messages = vec![SimMessage {
                message_id: format!("8{suffix}1"),
                sent_at: created,
                read_at: created + READ_AFTER,
            }];
            if order.index % 8 == 1 {
                let sent_at = order.created + FOLLOW_UP_AFTER;
                messages.push(SimMessage {
                    message_id: format!("8{suffix}2"),
                    sent_at,
                    read_at: sent_at + READ_AFTER,
                });
            }
            Some(SimConversation {
                conversation_id: format!("4{suffix}"),
                buyer: order.buyer,
                order_id: order.order_id,
                created,
                messages,
            })
        })
        .collect()
}

/// The conversations' changes with `at` in `[from, to)` (see `changes_between`): a read
/// (`latestMessage.readStatus` false → true, `unreadCount` 1 → 0) and a follow-up's
/// arrival (`latestMessage.messageId`, and back to unread).
pub(super) fn conversation_changes(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    let mut out = Vec::new();
    let span = FOLLOW_UP_AFTER + READ_AFTER;
    for conversation in conversations_between(seed, config, seller, from - span, to) {
        let mut push = |at: i64, field: &str, before: &str, after: &str| {
            if at >= from && at < to {
                out.push(SimChange {
                    at,
                    stream: "messages".to_string(),
                    resource_id: conversation.conversation_id.clone(),
                    field: field.to_string(),
                    before: before.to_string(),
                    after: after.to_string(),
                    created: conversation.created,
                });
            }
        };
        let mut previous: Option<&SimMessage> = None;
        for message in &conversation.messages {
            if let Some(before) = previous {
                push(
                    message.sent_at,
                    "latestMessage.messageId",
                    &before.message_id,
                    &message.message_id,
                );
                push(message.sent_at, "latestMessage.readStatus", "true", "false");
                push(message.sent_at, "unreadCount", "0", "1");
            }
            push(message.read_at, "latestMessage.readStatus", "false", "true");
            push(message.read_at, "unreadCount", "1", "0");
            previous = Some(message);
        }
    }
    out
}

/// Message `GET /commerce/message/v1/conversation` (getConversations):
/// `conversation_type` (FROM_EBAY | FROM_MEMBERS, required), `start_time` / `end_time`
/// (the latest message sent after / before them, both exclusive), `limit` 1..50
/// (default 25), `offset` (items skipped).
async fn get_conversations(
    State(sim): State<Arc<Simulator>>,
    Extension(ebay): Extension<Arc<Ebay>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let time = |key: &str| -> Result<Option<i64>, String> {
        match query.get(key) {
            None => Ok(None),
            Some(text) => crate::domain::parse_millis(text).map(Some).ok_or_else(|| {
                format!("invalid {key} {text:?}; use ISO 8601 like 2026-11-23T10:00:00.000Z")
            }),
        }
    };
    let asked = (|| -> Result<Asked, String> {
        Ok(Asked {
            from_ms: time("start_time")?,
            to_ms: time("end_time")?,
            limit: parse_number(&query, "limit", 25)?,
            offset: parse_number(&query, "offset", 0)?,
            unfiltered: false,
        })
    })();
    let (seller, asked) = match admit(
        &sim,
        &ebay,
        &headers,
        OP_GET_CONVERSATIONS,
        "message",
        asked,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let from_members =
        match query.get("conversation_type").map(String::as_str) {
            Some("FROM_MEMBERS") => true,
            Some("FROM_EBAY") => false,
            _ => return bad_request(
                "The 'conversation_type' query parameter is required: FROM_EBAY or FROM_MEMBERS.",
            ),
        };
    let now = ebay.now(&sim);
    let mut matching: Vec<(i64, String, Value)> = Vec::new();
    if from_members {
        // A conversation's latest message is at most FOLLOW_UP_AFTER after its first.
        // Without start_time: the last 90 days (the reference read names no default).
        let from_ms = asked
            .from_ms
            .unwrap_or_else(|| now.saturating_sub(90 * DAY).saturating_mul(1000));
        let oldest = from_ms
            .div_euclid(1000)
            .max(now.saturating_sub(5 * 365 * DAY))
            - FOLLOW_UP_AFTER;
        for conversation in conversations_between(
            sim.config().seed,
            &sim.config().ebay,
            &seller,
            oldest,
            now.saturating_add(1),
        ) {
            let Some(latest) = conversation.latest_at(now) else {
                continue;
            };
            let at_ms = latest.sent_at.saturating_mul(1000);
            let after_start = match asked.from_ms {
                Some(from) => at_ms > from,
                None => at_ms >= from_ms,
            };
            let before_end = asked.to_ms.is_none_or(|to| at_ms < to);
            if !(after_start && before_end) {
                continue;
            }
            let sent_at = latest.sent_at;
            if let Some(value) = conversation.json(&seller, now) {
                matching.push((sent_at, conversation.conversation_id.clone(), value));
            }
        }
    }
    matching.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let (total, page) = page_of(matching, &asked);
    let conversations: Vec<Value> = page.into_iter().map(|(_, _, value)| value).collect();
    let mut body = offset_page(
        &origin(&sim),
        "/commerce/message/v1/conversation",
        &HashMap::new(),
        &asked,
        total,
        "conversations",
        conversations,
    );
    // The links carry the request's filters (offset_page knows only `filter`).
    let mut base = String::new();
    for key in ["conversation_type", "start_time", "end_time"] {
        if let Some(value) = query.get(key) {
            base.push_str(&format!("{key}={}&", super::paging::percent_encode(value)));
        }
    }
    let (href, next, prev) = super::paging::page_links(
        &format!("{}/commerce/message/v1/conversation", origin(&sim)),
        &base,
        total,
        asked.limit,
        asked.offset,
    );
    body["href"] = json!(href);
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    if let Some(prev) = prev {
        body["prev"] = json!(prev);
    }
    paged_body(&ebay, &sim, OP_GET_CONVERSATIONS, body)
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
        .route("/commerce/message/v1/conversation", get(get_conversations))
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
