//! The eBay `inquiries` and `purchases` streams' tables (migration
//! `0011_ebay_inquiries_purchases.sql`): their columns, the fields whose changes are
//! history, and which inquiries still move.

use super::cursors::TableSpec;
use super::ebay_streams::OpenSpec;

/// `ebay_inquiries` (stream `inquiries`, Post-Order inquiry search): the inquiry status
/// and the claimed amount are history.
pub static INQUIRIES_TABLE: TableSpec = TableSpec {
    table: "ebay_inquiries",
    key: "inquiry_id",
    columns: &[
        "status",
        "creation_date",
        "last_modified",
        "respond_by",
        "claim_value",
        "currency",
        "item_id",
        "transaction_id",
    ],
    tracked: &[
        ("status", "inquiryStatusEnum"),
        ("claim_value", "claimAmount.value"),
    ],
};

/// `ebay_inquiries` whose InquiryStatusEnum is not final: every value but CLOSED,
/// CLOSED_WITH_ESCALATION and CS_CLOSED (OTHER, "cannot be determined", counts as open).
/// The search filters on creation date, so a live run re-reads back to the oldest of them.
pub static OPEN_INQUIRIES: OpenSpec = OpenSpec {
    table: &INQUIRIES_TABLE,
    date_column: "creation_date",
    status_column: "status",
    open: &[
        "OPEN",
        "OTHER",
        "PENDING",
        "WAITING_BUYER_RESPONSE",
        "WAITING_SELLER_RESPONSE",
    ],
};

/// `ebay_purchases` (stream `purchases`, Trading GetOrders with OrderRole=Buyer): the
/// order status, the time it was paid and the time it shipped are history.
pub static PURCHASES_TABLE: TableSpec = TableSpec {
    table: "ebay_purchases",
    key: "order_id",
    columns: &[
        "order_status",
        "created_time",
        "last_modified",
        "paid_time",
        "shipped_time",
        "total_value",
        "currency",
        "seller_user_id",
    ],
    tracked: &[
        ("order_status", "OrderStatus"),
        ("paid_time", "PaidTime"),
        ("shipped_time", "ShippedTime"),
    ],
};
