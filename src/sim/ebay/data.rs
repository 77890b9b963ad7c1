//! The simulated eBay seller's data: orders, returns and changes, deterministic from (seed,
//! seller, day, index), so any day can be regenerated at any time.

use serde::{Deserialize, Serialize};

use super::{EbaySimConfig, DAY, HOUR, MAX_ORDER_SPAN};

/// One order as the simulator models it (times in unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimOrder {
    pub order_id: String,
    pub day: i64,
    pub index: u32,
    pub created: i64,
    pub in_progress_at: i64,
    pub fulfilled_at: i64,
    pub total_cents: i64,
    pub buyer: String,
    pub sku: String,
    pub quantity: u32,
    pub return_info: Option<SimReturn>,
}

/// A return of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReturn {
    pub return_id: String,
    pub created: i64,
    pub shipped_at: i64,
    pub closed_at: i64,
}

/// One change the simulated data made, as a change-history row should record it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SimChange {
    /// When it happened (unix seconds).
    pub at: i64,
    /// `orders`, `returns`, `transactions`, `finances`, `messages`, `cases`, `inquiries`
    /// or `purchases` (the stream that sees it).
    pub stream: String,
    pub resource_id: String,
    /// The wire field name (`orderFulfillmentStatus`, `orderPaymentStatus`, `state`,
    /// `transactionStatus`, `payoutStatus`).
    pub field: String,
    pub before: String,
    pub after: String,
    /// When the resource was created (unix seconds).
    pub created: i64,
}

impl SimOrder {
    /// `orderFulfillmentStatus` and the time it took that value, at `now`.
    pub fn fulfillment_at(&self, now: i64) -> (&'static str, i64) {
        if now >= self.fulfilled_at {
            ("FULFILLED", self.fulfilled_at)
        } else if now >= self.in_progress_at {
            ("IN_PROGRESS", self.in_progress_at)
        } else {
            ("NOT_STARTED", self.created)
        }
    }

    /// `orderPaymentStatus` and the time it took that value, at `now`.
    pub fn payment_at(&self, now: i64) -> (&'static str, i64) {
        match &self.return_info {
            Some(ret) if now >= ret.closed_at => ("FULLY_REFUNDED", ret.closed_at),
            _ => ("PAID", self.created),
        }
    }

    /// `lastModifiedDate` at `now`: the latest change so far.
    pub fn last_modified_at(&self, now: i64) -> i64 {
        self.fulfillment_at(now).1.max(self.payment_at(now).1)
    }

    pub(super) fn total_text(&self) -> String {
        format!("{}.{:02}", self.total_cents / 100, self.total_cents % 100)
    }
}

impl SimReturn {
    /// The return's `state` at `now`.
    pub fn state_at(&self, now: i64) -> &'static str {
        if now >= self.closed_at {
            "CLOSED"
        } else if now >= self.shipped_at {
            "ITEM_SHIPPED"
        } else {
            "RETURN_REQUESTED"
        }
    }
}

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(super) fn seller_key(seller: &str) -> u64 {
    seller.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(super) fn draw(seed: u64, seller: u64, day: i64, index: u32, salt: u64) -> u64 {
    splitmix(seed ^ splitmix(seller ^ splitmix((day as u64) ^ splitmix(u64::from(index) ^ salt))))
}

/// The `index`-th order of `day` (days since the unix epoch, UTC) for `seller`.
pub fn order(seed: u64, config: &EbaySimConfig, seller: &str, day: i64, index: u32) -> SimOrder {
    let key = seller_key(seller);
    let per_day = i64::from(config.orders_per_day.max(1));
    let slot = DAY / per_day;
    let created = day * DAY
        + i64::from(index) * slot
        + (draw(seed, key, day, index, 1) % slot.max(1) as u64) as i64;
    let in_progress_at =
        created + 2 * HOUR + (draw(seed, key, day, index, 2) % (4 * HOUR) as u64) as i64;
    let fulfilled_at =
        in_progress_at + 18 * HOUR + (draw(seed, key, day, index, 3) % (30 * HOUR) as u64) as i64;
    let order_id = format!(
        "{:02}-{:05}-{:05}",
        key % 100,
        day.rem_euclid(100_000),
        index
    );
    let with_return = config.return_every > 0
        && draw(seed, key, day, index, 4).is_multiple_of(u64::from(config.return_every));
    let return_info = with_return.then(|| {
        let created_r =
            fulfilled_at + DAY + (draw(seed, key, day, index, 5) % (2 * DAY) as u64) as i64;
        let shipped_at = created_r + DAY + (draw(seed, key, day, index, 6) % DAY as u64) as i64;
        let closed_at =
            shipped_at + 2 * DAY + (draw(seed, key, day, index, 7) % (2 * DAY) as u64) as i64;
        SimReturn {
            return_id: format!("5{:05}{:05}", day.rem_euclid(100_000), index),
            created: created_r,
            shipped_at,
            closed_at,
        }
    });
    SimOrder {
        order_id,
        day,
        index,
        created,
        in_progress_at,
        fulfilled_at,
        total_cents: 500 + (draw(seed, key, day, index, 8) % 50_000) as i64,
        buyer: format!("buyer_{:04}", draw(seed, key, day, index, 9) % 10_000),
        sku: format!("SKU-{:03}", draw(seed, key, day, index, 10) % 500),
        quantity: 1 + (draw(seed, key, day, index, 11) % 3) as u32,
        return_info,
    }
}

/// Every order of `seller` created in `[from, to)` (unix seconds), in creation order.
pub fn orders_created(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimOrder> {
    let mut out = Vec::new();
    for day in from.div_euclid(DAY)..=to.div_euclid(DAY) {
        for index in 0..config.orders_per_day {
            let order = order(seed, config, seller, day, index);
            if order.created >= from && order.created < to && order.created >= config.orders_since {
                out.push(order);
            }
        }
    }
    out
}

/// A transaction's funds become available for payout this long after its date.
pub const FUNDS_AVAILABLE_AFTER: i64 = 2 * DAY;
/// ... and are paid out this long after its date.
pub const PAYOUT_AFTER: i64 = 4 * DAY;

/// `transactionStatus` of a transaction dated `booked`, at `now`: FUNDS_PROCESSING, then
/// FUNDS_AVAILABLE_FOR_PAYOUT ([`FUNDS_AVAILABLE_AFTER`]), then PAYOUT ([`PAYOUT_AFTER`]).
pub fn transaction_status_at(booked: i64, now: i64) -> &'static str {
    if now >= booked.saturating_add(PAYOUT_AFTER) {
        "PAYOUT"
    } else if now >= booked.saturating_add(FUNDS_AVAILABLE_AFTER) {
        "FUNDS_AVAILABLE_FOR_PAYOUT"
    } else {
        "FUNDS_PROCESSING"
    }
}

/// The transactions of `order`: (transactionId, transactionDate in unix seconds,
/// transactionType) of its SALE (30 s after creation) and, for a returned order, its
/// REFUND (when the return closes).
pub fn transaction_ids(order: &SimOrder) -> Vec<(String, i64, &'static str)> {
    let suffix = format!("{:05}{:05}", order.day.rem_euclid(100_000), order.index);
    let mut out = vec![(format!("1{suffix}"), order.created + 30, "SALE")];
    if let Some(ret) = &order.return_info {
        out.push((format!("2{suffix}"), ret.closed_at, "REFUND"));
    }
    out
}

/// Every status change of `seller`'s orders, returns, transactions, payouts and buyer
/// conversations with `at`
/// in `[from, to)`, sorted by time. These are the rows a change history that saw each state
/// records.
pub fn changes_between(
    seed: u64,
    config: &EbaySimConfig,
    seller: &str,
    from: i64,
    to: i64,
) -> Vec<SimChange> {
    let mut out = Vec::new();
    // A refund's payout comes PAYOUT_AFTER its date, the order's last change.
    let lookback = MAX_ORDER_SPAN + PAYOUT_AFTER;
    for order in orders_created(seed, config, seller, from - lookback, to) {
        let mut push = |at: i64,
                        stream: &str,
                        id: &str,
                        field: &str,
                        before: &str,
                        after: &str,
                        created: i64| {
            if at >= from && at < to {
                out.push(SimChange {
                    at,
                    stream: stream.to_string(),
                    resource_id: id.to_string(),
                    field: field.to_string(),
                    before: before.to_string(),
                    after: after.to_string(),
                    created,
                });
            }
        };
        let id = order.order_id.as_str();
        push(
            order.in_progress_at,
            "orders",
            id,
            "orderFulfillmentStatus",
            "NOT_STARTED",
            "IN_PROGRESS",
            order.created,
        );
        push(
            order.fulfilled_at,
            "orders",
            id,
            "orderFulfillmentStatus",
            "IN_PROGRESS",
            "FULFILLED",
            order.created,
        );
        if let Some(ret) = &order.return_info {
            push(
                ret.closed_at,
                "orders",
                id,
                "orderPaymentStatus",
                "PAID",
                "FULLY_REFUNDED",
                order.created,
            );
            let rid = ret.return_id.as_str();
            push(
                ret.shipped_at,
                "returns",
                rid,
                "state",
                "RETURN_REQUESTED",
                "ITEM_SHIPPED",
                ret.created,
            );
            push(
                ret.closed_at,
                "returns",
                rid,
                "state",
                "ITEM_SHIPPED",
                "CLOSED",
                ret.created,
            );
        }
        for (transaction_id, booked, _) in transaction_ids(&order) {
            let tid = transaction_id.as_str();
            push(
                booked + FUNDS_AVAILABLE_AFTER,
                "transactions",
                tid,
                "transactionStatus",
                "FUNDS_PROCESSING",
                "FUNDS_AVAILABLE_FOR_PAYOUT",
                booked,
            );
            push(
                booked + PAYOUT_AFTER,
                "transactions",
                tid,
                "transactionStatus",
                "FUNDS_AVAILABLE_FOR_PAYOUT",
                "PAYOUT",
                booked,
            );
        }
    }
    out.extend(super::streams::payout_changes(
        seed, config, seller, from, to,
    ));
    out.extend(super::streams::conversation_changes(
        seed, config, seller, from, to,
    ));
    out.extend(super::cases::case_changes(seed, config, seller, from, to));
    out.extend(super::inquiries::inquiry_changes(
        seed, config, seller, from, to,
    ));
    out.extend(super::purchases::purchase_changes(
        seed, config, seller, from, to,
    ));
    out.sort();
    out
}
