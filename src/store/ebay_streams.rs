//! Store side of the eBay streams that re-read resources whose state is still moving
//! (migration `0006_ebay_streams.sql`): which stored resources are not final yet, and
//! from when a live run must read again to see their next change.

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;

use super::cursors::TableSpec;
use super::ebay_tables::TRANSACTIONS_TABLE;
use super::LedgerError;

/// The resources of a table whose status can still change: a live run re-reads from the
/// oldest of them, so their next change reaches the history.
#[derive(Debug)]
pub struct OpenSpec {
    pub table: &'static TableSpec,
    /// The column the API filters on (the date that never moves), ISO 8601 text.
    pub date_column: &'static str,
    /// The status column.
    pub status_column: &'static str,
    /// Status values that still move; any other value (or none) is final.
    pub open: &'static [&'static str],
}

/// `ebay_transactions`: eBay's TransactionStatusEnum (Finances API getTransactions):
/// FUNDS_PROCESSING, FUNDS_AVAILABLE_FOR_PAYOUT and FUNDS_ON_HOLD still move; PAYOUT,
/// COMPLETED and FAILED are final.
pub static OPEN_TRANSACTIONS: OpenSpec = OpenSpec {
    table: &TRANSACTIONS_TABLE,
    date_column: "transaction_date",
    status_column: "transaction_status",
    open: &[
        "FUNDS_PROCESSING",
        "FUNDS_AVAILABLE_FOR_PAYOUT",
        "FUNDS_ON_HOLD",
    ],
};

/// `ebay_payouts` (stream `finances`, Finances getPayouts): the payout status moves.
pub static PAYOUTS_TABLE: TableSpec = TableSpec {
    table: "ebay_payouts",
    key: "payout_id",
    columns: &[
        "payout_date",
        "payout_status",
        "amount_value",
        "currency",
        "transaction_count",
        "instrument_type",
    ],
    tracked: &[
        ("payout_status", "payoutStatus"),
        ("amount_value", "amount.value"),
    ],
};

/// `ebay_payouts`: eBay's PayoutStatusEnum: INITIATED, and RETRYABLE_FAILED and REVERSED
/// ("Waiting to retry") still move; SUCCEEDED and TERMINAL_FAILED are final.
pub static OPEN_PAYOUTS: OpenSpec = OpenSpec {
    table: &PAYOUTS_TABLE,
    date_column: "payout_date",
    status_column: "payout_status",
    open: &["INITIATED", "RETRYABLE_FAILED", "REVERSED"],
};

/// `ebay_offers` (stream `offers`, Sell Inventory getOffers per SKU): the offer's status,
/// its listing's status, price and available quantity are history.
pub static OFFERS_TABLE: TableSpec = TableSpec {
    table: "ebay_offers",
    key: "offer_id",
    columns: &[
        "sku",
        "status",
        "listing_id",
        "listing_status",
        "price_value",
        "currency",
        "available_quantity",
    ],
    tracked: &[
        ("status", "status"),
        ("listing_status", "listing.listingStatus"),
        ("price_value", "pricingSummary.price.value"),
        ("available_quantity", "availableQuantity"),
    ],
};

/// `ebay_conversations` (stream `messages`, Message API getConversations): a new
/// message, a read and a status change are history.
pub static CONVERSATIONS_TABLE: TableSpec = TableSpec {
    table: "ebay_conversations",
    key: "conversation_id",
    columns: &[
        "conversation_type",
        "conversation_status",
        "created_date",
        "latest_message_id",
        "latest_message_date",
        "read_status",
        "unread_count",
        "sender",
    ],
    tracked: &[
        ("conversation_status", "conversationStatus"),
        ("latest_message_id", "latestMessage.messageId"),
        ("read_status", "latestMessage.readStatus"),
        ("unread_count", "unreadCount"),
    ],
};

/// `ebay_conversations` whose latest message is unread (`read_status` "false"): a read
/// does not move the latest message's date, so a live run re-reads back to them.
pub static OPEN_CONVERSATIONS: OpenSpec = OpenSpec {
    table: &CONVERSATIONS_TABLE,
    date_column: "latest_message_date",
    status_column: "read_status",
    open: &["false"],
};

/// The earliest `date_column` of `account`'s resources in an open status, as stored
/// (text, as eBay served it); `None` when none is open.
pub fn oldest_open(
    conn: &Connection,
    account: &str,
    spec: &OpenSpec,
) -> Result<Option<String>, LedgerError> {
    // Table and column names are this module's constants, never input.
    let placeholders = (0..spec.open.len())
        .map(|index| format!("?{}", index + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT MIN({date}) FROM {table} WHERE account = ?1 AND {status} IN ({placeholders})",
        date = spec.date_column,
        table = spec.table.table,
        status = spec.status_column,
    );
    let mut values: Vec<SqlValue> = Vec::with_capacity(spec.open.len() + 1);
    values.push(SqlValue::Text(account.to_string()));
    values.extend(
        spec.open
            .iter()
            .map(|status| SqlValue::Text((*status).to_string())),
    );
    let oldest: Option<String> = conn
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(values), |row| row.get(0))?;
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteLedger;

    #[test]
    fn oldest_open_ignores_final_statuses_and_other_accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = SqliteLedger::open(&dir.path().join("t.db")).expect("open");
        ledger
            .with_conn(|conn| -> Result<(), LedgerError> {
                assert_eq!(oldest_open(conn, "a", &OPEN_TRANSACTIONS)?, None);
                let insert =
                    "INSERT INTO ebay_transactions (account, transaction_id, transaction_type,
                     transaction_date, transaction_status, raw, first_seen_at, updated_at)
                     VALUES (?1, ?2, 'SALE', ?3, ?4, '{}', 0, 0)";
                for (account, id, date, status) in [
                    ("a", "1", "2026-01-01T00:00:00.000Z", Some("PAYOUT")),
                    ("a", "2", "2026-01-03T00:00:00.000Z", Some("FUNDS_ON_HOLD")),
                    (
                        "a",
                        "3",
                        "2026-01-05T00:00:00.000Z",
                        Some("FUNDS_PROCESSING"),
                    ),
                    ("a", "4", "2026-01-02T00:00:00.000Z", None),
                    (
                        "b",
                        "5",
                        "2025-01-01T00:00:00.000Z",
                        Some("FUNDS_PROCESSING"),
                    ),
                ] {
                    conn.execute(insert, rusqlite::params![account, id, date, status])?;
                }
                assert_eq!(
                    oldest_open(conn, "a", &OPEN_TRANSACTIONS)?.as_deref(),
                    Some("2026-01-03T00:00:00.000Z")
                );
                Ok(())
            })
            .expect("query");
    }
}
