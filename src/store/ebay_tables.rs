//! The eBay cursor streams' resource tables (migration `0003_cursors.sql`): key, columns
//! and the fields whose changes go to the `events` history.

use super::cursors::TableSpec;

/// `ebay_orders`: tracked fields are the fulfillment and payment status and the total.
pub static ORDERS_TABLE: TableSpec = TableSpec {
    table: "ebay_orders",
    key: "order_id",
    columns: &[
        "creation_date",
        "last_modified_date",
        "fulfillment_status",
        "payment_status",
        "total_value",
        "currency",
        "buyer",
    ],
    tracked: &[
        ("fulfillment_status", "orderFulfillmentStatus"),
        ("payment_status", "orderPaymentStatus"),
        ("total_value", "pricingSummary.total.value"),
    ],
};

/// `ebay_transactions`: the status moves (FUNDS_PROCESSING → ... → PAYOUT).
pub static TRANSACTIONS_TABLE: TableSpec = TableSpec {
    table: "ebay_transactions",
    key: "transaction_id",
    columns: &[
        "transaction_type",
        "transaction_date",
        "transaction_status",
        "amount_value",
        "currency",
        "order_id",
    ],
    tracked: &[
        ("transaction_status", "transactionStatus"),
        ("amount_value", "amount.value"),
    ],
};

/// `ebay_returns`: the state moves (RETURN_REQUESTED → ITEM_SHIPPED → CLOSED).
pub static RETURNS_TABLE: TableSpec = TableSpec {
    table: "ebay_returns",
    key: "return_id",
    columns: &["order_id", "creation_date", "state", "return_type"],
    tracked: &[("state", "state"), ("return_type", "currentType")],
};

/// The eBay cursor streams that have a resource table ([`table_for_stream`]).
pub const CURSOR_STREAMS: &[&str] = &[
    "orders",
    "transactions",
    "returns",
    "active_inventory",
    "finances",
    "offers",
    "messages",
    "cases",
    "inquiries",
    "purchases",
];

/// The resource table of an eBay stream.
pub fn table_for_stream(stream: &str) -> Option<&'static TableSpec> {
    match stream {
        "orders" => Some(&ORDERS_TABLE),
        "transactions" => Some(&TRANSACTIONS_TABLE),
        "returns" => Some(&RETURNS_TABLE),
        "active_inventory" => Some(&super::ebay_inventory::INVENTORY_TABLE),
        "finances" => Some(&super::ebay_streams::PAYOUTS_TABLE),
        "offers" => Some(&super::ebay_streams::OFFERS_TABLE),
        "messages" => Some(&super::ebay_streams::CONVERSATIONS_TABLE),
        "cases" => Some(&super::ebay_cases::CASES_TABLE),
        "inquiries" => Some(&super::ebay_inquiries::INQUIRIES_TABLE),
        "purchases" => Some(&super::ebay_inquiries::PURCHASES_TABLE),
        _ => None,
    }
}
