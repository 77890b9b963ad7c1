//! The eBay cursor streams as adapters: orders (Fulfillment getOrders), transactions
//! (Finances getTransactions) and returns (Post-Order return search). Each parses its
//! page with serde into typed structs and keeps every item's JSON as served.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::adapter::{CursorAdapter, CursorWindow, OpenSpec, Page, Resource, TableSpec};
use crate::domain::format_millis;
use crate::provider::ebay::EbayApi;
use crate::store::ebay_streams::OPEN_TRANSACTIONS;
use crate::store::ebay_tables::{ORDERS_TABLE, RETURNS_TABLE, TRANSACTIONS_TABLE};

/// The adapters of every built eBay stream.
pub fn adapters() -> Vec<Arc<dyn CursorAdapter>> {
    vec![
        Arc::new(OrdersAdapter),
        Arc::new(TransactionsAdapter),
        Arc::new(ReturnsAdapter),
        Arc::new(super::ebay_streams::PayoutsAdapter),
        Arc::new(super::ebay_streams::ConversationsAdapter),
        Arc::new(super::ebay_cases::CasesAdapter),
        Arc::new(super::ebay_inquiries::InquiriesAdapter),
        Arc::new(super::ebay_purchases::PurchasesAdapter),
    ]
}

/// eBay date ranges are inclusive: `[start .. end − 1 ms]` covers `[start, end)` exactly.
pub(super) fn range(window: CursorWindow) -> (String, String) {
    (
        format_millis(window.start * 1000),
        format_millis(window.end * 1000 - 1),
    )
}

#[derive(Deserialize)]
pub(super) struct Money {
    pub(super) value: Option<String>,
    pub(super) currency: Option<String>,
}

/// Parses each raw item as `T`, keeping its JSON.
pub(super) fn typed<T: for<'de> Deserialize<'de>>(
    items: Vec<Value>,
    what: &str,
    mut convert: impl FnMut(T) -> (String, Vec<Option<String>>),
) -> Result<Vec<Resource>, String> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let raw = item.to_string();
            let parsed: T = serde_json::from_value(item)
                .map_err(|err| format!("{what}[{index}] is not the expected json: {err}"))?;
            let (id, values) = convert(parsed);
            if id.is_empty() {
                return Err(format!("{what}[{index}] has an empty id"));
            }
            Ok(Resource { id, values, raw })
        })
        .collect()
}

/// Fulfillment API getOrders, by `lastmodifieddate`.
pub struct OrdersAdapter;

impl CursorAdapter for OrdersAdapter {
    fn stream(&self) -> &'static str {
        "orders"
    }
    fn operation(&self) -> &'static str {
        "getOrders"
    }
    fn api(&self) -> EbayApi {
        EbayApi::Fulfillment
    }
    fn path(&self) -> &'static str {
        "/sell/fulfillment/v1/order"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        let (from, to) = range(window);
        vec![
            ("filter".into(), format!("lastmodifieddate:[{from}..{to}]")),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        struct OrderPage {
            total: u64,
            #[serde(default)]
            orders: Vec<Value>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Order {
            order_id: String,
            creation_date: String,
            last_modified_date: String,
            order_fulfillment_status: String,
            order_payment_status: String,
            pricing_summary: Option<PricingSummary>,
            buyer: Option<Buyer>,
        }
        #[derive(Deserialize)]
        struct PricingSummary {
            total: Option<Money>,
        }
        #[derive(Deserialize)]
        struct Buyer {
            username: Option<String>,
        }
        let page: OrderPage = serde_json::from_slice(body)
            .map_err(|err| format!("getOrders page is not the expected json: {err}"))?;
        let items = typed(page.orders, "orders", |order: Order| {
            let total = order.pricing_summary.and_then(|summary| summary.total);
            let (value, currency) = match total {
                Some(money) => (money.value, money.currency),
                None => (None, None),
            };
            (
                order.order_id,
                vec![
                    Some(order.creation_date),
                    Some(order.last_modified_date),
                    Some(order.order_fulfillment_status),
                    Some(order.order_payment_status),
                    value,
                    currency,
                    order.buyer.and_then(|buyer| buyer.username),
                ],
            )
        })?;
        Ok(Page {
            total: page.total,
            items,
        })
    }
    fn table(&self) -> &'static TableSpec {
        &ORDERS_TABLE
    }
}

/// Finances API getTransactions, by `transactionDate`. The date never moves while the
/// status does (FUNDS_PROCESSING → FUNDS_AVAILABLE_FOR_PAYOUT → PAYOUT, or FUNDS_ON_HOLD
/// first), and the `transactionStatus` filter selects a status, not a change of one: a
/// live run re-reads back to the oldest stored transaction whose status is still open,
/// at most [`TRANSACTIONS_REVISIT`], and the changes it sees go to the history.
pub struct TransactionsAdapter;

/// The farthest a live transactions run reads back for open transactions: eBay holds a
/// sale's funds for up to 30 days. A transaction still open longer than this after its
/// date is no longer re-read (its later change is not recorded); the bound keeps one
/// stuck transaction from making every run re-read months of data.
pub const TRANSACTIONS_REVISIT: Duration = Duration::from_secs(30 * 24 * 3600);

impl CursorAdapter for TransactionsAdapter {
    fn stream(&self) -> &'static str {
        "transactions"
    }
    fn operation(&self) -> &'static str {
        "getTransactions"
    }
    fn api(&self) -> EbayApi {
        EbayApi::Finances
    }
    fn path(&self) -> &'static str {
        "/sell/finances/v1/transaction"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        let (from, to) = range(window);
        vec![
            ("filter".into(), format!("transactionDate:[{from}..{to}]")),
            // Oldest first, said rather than left to eBay's default (newest first): a
            // transaction dated into the window while it is paged then lands after the
            // pages already read instead of shifting every later offset by one.
            ("sort".into(), "transactionDate".into()),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        struct TransactionPage {
            total: u64,
            #[serde(default)]
            transactions: Vec<Value>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Transaction {
            transaction_id: String,
            transaction_type: String,
            transaction_date: String,
            transaction_status: Option<String>,
            amount: Option<Money>,
            order_id: Option<String>,
        }
        // eBay answers 204 No Content, no body, when no transaction matches the filter.
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Page {
                total: 0,
                items: Vec::new(),
            });
        }
        let page: TransactionPage = serde_json::from_slice(body)
            .map_err(|err| format!("getTransactions page is not the expected json: {err}"))?;
        let items = typed(page.transactions, "transactions", |tx: Transaction| {
            let (value, currency) = match tx.amount {
                Some(money) => (money.value, money.currency),
                None => (None, None),
            };
            (
                tx.transaction_id,
                vec![
                    Some(tx.transaction_type),
                    Some(tx.transaction_date),
                    tx.transaction_status,
                    value,
                    currency,
                    tx.order_id,
                ],
            )
        })?;
        Ok(Page {
            total: page.total,
            items,
        })
    }
    fn table(&self) -> &'static TableSpec {
        &TRANSACTIONS_TABLE
    }
    fn revisit(&self) -> Duration {
        TRANSACTIONS_REVISIT
    }
    fn open_resources(&self) -> Option<&'static OpenSpec> {
        Some(&OPEN_TRANSACTIONS)
    }
}

/// Post-Order API return search, by creation date. `offset` is the number of entries
/// skipped (Post-Order's PaginationOutput type), like every other eBay offset.
pub struct ReturnsAdapter;

/// How far back a caught-up returns run searches again, so state changes of returns
/// opened in that time are seen (the search filters on creation date only).
pub const RETURNS_REVISIT: Duration = Duration::from_secs(14 * 24 * 3600);

impl CursorAdapter for ReturnsAdapter {
    fn stream(&self) -> &'static str {
        "returns"
    }
    fn operation(&self) -> &'static str {
        "searchReturns"
    }
    fn api(&self) -> EbayApi {
        EbayApi::PostOrder
    }
    fn path(&self) -> &'static str {
        "/post-order/v2/return/search"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        let (from, to) = range(window);
        vec![
            ("creation_date_range_from".into(), from),
            ("creation_date_range_to".into(), to),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
            // ReturnSortEnum: FILING_DATE is the creation date; `+` ascending.
            ("sort".into(), "+FILING_DATE".into()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ReturnPage {
            #[serde(default)]
            members: Vec<Value>,
            total: Option<u64>,
            pagination_output: Option<Pagination>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Pagination {
            total_entries: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Return {
            return_id: String,
            order_id: Option<String>,
            state: String,
            current_type: Option<String>,
            creation_info: CreationInfo,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct CreationInfo {
            creation_date: DateValue,
        }
        #[derive(Deserialize)]
        struct DateValue {
            value: String,
        }
        let page: ReturnPage = serde_json::from_slice(body)
            .map_err(|err| format!("return search page is not the expected json: {err}"))?;
        let total = page
            .pagination_output
            .and_then(|pagination| pagination.total_entries)
            .or(page.total)
            .ok_or("return search page has neither paginationOutput.totalEntries nor total")?;
        let items = typed(page.members, "members", |ret: Return| {
            (
                ret.return_id,
                vec![
                    ret.order_id,
                    Some(ret.creation_info.creation_date.value),
                    Some(ret.state),
                    ret.current_type,
                ],
            )
        })?;
        Ok(Page { total, items })
    }
    fn table(&self) -> &'static TableSpec {
        &RETURNS_TABLE
    }
    fn revisit(&self) -> Duration {
        RETURNS_REVISIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_query_covers_the_window_exactly() {
        let query = OrdersAdapter.query(
            CursorWindow {
                start: 0,
                end: 86_400,
            },
            200,
            200,
        );
        assert_eq!(
            query[0].1,
            "lastmodifieddate:[1970-01-01T00:00:00.000Z..1970-01-01T23:59:59.999Z]"
        );
        assert_eq!(query[2].1, "200");
        let returns = ReturnsAdapter.query(CursorWindow { start: 0, end: 10 }, 400, 200);
        assert_eq!(returns[3], ("offset".to_string(), "400".to_string()));
    }

    #[test]
    fn parse_keeps_raw_and_rejects_missing_fields() {
        let body = br#"{"total":1,"orders":[{"orderId":"1-2","creationDate":"a","lastModifiedDate":"b","orderFulfillmentStatus":"NOT_STARTED","orderPaymentStatus":"PAID","pricingSummary":{"total":{"value":"1.00","currency":"USD"}}}]}"#;
        let page = OrdersAdapter.parse(body).expect("parse");
        assert_eq!(page.items[0].id, "1-2");
        assert_eq!(
            page.items[0].value(&ORDERS_TABLE, "total_value"),
            Some("1.00")
        );
        assert!(page.items[0].raw.contains("NOT_STARTED"));
        let missing = br#"{"total":1,"orders":[{"orderId":"1-2"}]}"#;
        assert!(OrdersAdapter.parse(missing).is_err());
    }

    #[test]
    fn an_empty_transactions_answer_is_an_empty_page_and_an_empty_orders_one_is_not() {
        // getTransactions answers 204 with no body when nothing matches.
        let page = TransactionsAdapter.parse(b"").expect("204 body");
        assert_eq!((page.total, page.items.len()), (0, 0));
        assert!(OrdersAdapter.parse(b"").is_err());
    }
}
