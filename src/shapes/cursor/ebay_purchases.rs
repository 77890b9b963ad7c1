//! The eBay purchase stream as an adapter: `purchases`, the seller's own purchases as a
//! buyer, read with the Trading API's `GetOrders` (`OrderRole=Buyer`, XML) by order
//! modification time (`ModTimeFrom` / `ModTimeTo`). A payment or a shipment modifies the
//! order, which moves it into a later window, so no window is read twice; the changes of
//! `OrderStatus`, `PaidTime` and `ShippedTime` go to the history. Why Trading and not a
//! REST API: `docs/ebay-wire.md`, "Purchases".
//!
//! The answer is parsed with the bounded pull reader of [`crate::provider::ebay_trading`]
//! (depth, text per element, entities, no DOCTYPE), one `Order` at a time.

use serde::Serialize;

use super::adapter::{CursorAdapter, CursorWindow, Page, Resource, TableSpec, TradingRequest};
use super::ebay::range;
use crate::domain::parse_millis;
use crate::provider::ebay::EbayApi;
use crate::provider::ebay_trading::{XmlFields, XmlStep};
use crate::store::ebay_inquiries::PURCHASES_TABLE;

/// Trading GetOrders as buyer, by modification time, paged by `Pagination.PageNumber`.
pub struct PurchasesAdapter;

/// GetOrders' largest `Pagination.EntriesPerPage`.
pub const MAX_ENTRIES_PER_PAGE: u32 = 100;
/// The most orders one page may hold before it is refused (eBay sends at most
/// `EntriesPerPage`).
const MAX_ORDERS_PER_PAGE: usize = 1000;
/// The longest OrderID / SellerUserID accepted.
const MAX_ID_CHARS: usize = 128;

/// One `Order` of the answer, as stored (`raw` is this, as JSON: the wire is XML).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Purchase {
    #[serde(rename = "OrderID")]
    order_id: Option<String>,
    order_status: Option<String>,
    created_time: Option<String>,
    last_modified_time: Option<String>,
    paid_time: Option<String>,
    shipped_time: Option<String>,
    total: Option<String>,
    #[serde(rename = "TotalCurrencyID")]
    currency: Option<String>,
    #[serde(rename = "SellerUserID")]
    seller_user_id: Option<String>,
}

/// `text` if it is an ISO 8601 time eBay-style (parses to milliseconds).
fn checked_time(name: &str, text: String) -> Result<String, String> {
    parse_millis(&text)
        .map(|_| text.clone())
        .ok_or_else(|| format!("{name} {text:?} is not an ISO 8601 time"))
}

fn checked_id(name: &str, text: String) -> Result<String, String> {
    if text.is_empty()
        || text.chars().count() > MAX_ID_CHARS
        || text.chars().any(|ch| ch.is_control() || ch.is_whitespace())
    {
        return Err(format!(
            "{name} {:?} is empty, longer than {MAX_ID_CHARS} characters or holds spaces",
            text.chars().take(40).collect::<String>()
        ));
    }
    Ok(text)
}

fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.len() <= 32
        && digits.chars().filter(|ch| *ch == '.').count() <= 1
        && digits.chars().all(|ch| ch.is_ascii_digit() || ch == '.')
        && digits.chars().any(|ch| ch.is_ascii_digit())
}

/// Parses one GetOrders answer into its total and its orders.
fn parse_orders(body: &[u8]) -> Result<Page, String> {
    let mut fields = XmlFields::new(body);
    let mut ack: Option<String> = None;
    let mut total: Option<u64> = None;
    let mut orders: Vec<Purchase> = Vec::new();
    let mut current: Option<Purchase> = None;
    loop {
        match fields.next_step()? {
            XmlStep::End => break,
            XmlStep::Open => {
                if fields.path().len() == 1 && fields.path()[0] != "GetOrdersResponse" {
                    return Err(format!(
                        "the root element is {}, not GetOrdersResponse",
                        fields.path()[0]
                    ));
                }
                if fields.path().len() == 3 && fields.at(&["OrderArray", "Order"]) {
                    if orders.len() >= MAX_ORDERS_PER_PAGE {
                        return Err(format!("more than {MAX_ORDERS_PER_PAGE} orders on a page"));
                    }
                    current = Some(Purchase::default());
                }
            }
            XmlStep::Close { text, attributes } => {
                let depth = fields.path().len();
                if depth == 2 && fields.at(&["Ack"]) {
                    ack = Some(text);
                } else if depth == 3 && fields.at(&["PaginationResult", "TotalNumberOfEntries"]) {
                    total = Some(text.parse::<u64>().map_err(|_| {
                        format!("PaginationResult.TotalNumberOfEntries {text:?} is not a count")
                    })?);
                } else if depth == 3 && fields.at(&["OrderArray", "Order"]) {
                    if let Some(order) = current.take() {
                        orders.push(order);
                    }
                } else if let Some(order) = current.as_mut() {
                    let name = fields.path().last().map(String::as_str).unwrap_or("");
                    if depth == 4 {
                        match name {
                            "OrderID" => order.order_id = Some(checked_id("OrderID", text)?),
                            "OrderStatus" => {
                                order.order_status = Some(checked_id("OrderStatus", text)?)
                            }
                            "CreatedTime" => {
                                order.created_time = Some(checked_time("CreatedTime", text)?)
                            }
                            "PaidTime" => order.paid_time = Some(checked_time("PaidTime", text)?),
                            "ShippedTime" => {
                                order.shipped_time = Some(checked_time("ShippedTime", text)?)
                            }
                            "SellerUserID" => {
                                order.seller_user_id = Some(checked_id("SellerUserID", text)?)
                            }
                            "Total" => {
                                if !is_decimal(&text) {
                                    return Err(format!("Total {text:?} is not a decimal"));
                                }
                                let currency = attributes
                                    .iter()
                                    .find(|(key, _)| key == "currencyID")
                                    .map(|(_, value)| value.clone());
                                if let Some(code) = &currency {
                                    if code.len() != 3
                                        || !code.chars().all(|ch| ch.is_ascii_uppercase())
                                    {
                                        return Err(format!(
                                            "Total has an invalid currencyID {code:?}"
                                        ));
                                    }
                                }
                                order.total = Some(text);
                                order.currency = currency;
                            }
                            _ => {}
                        }
                    } else if depth == 5 && fields.at(&["CheckoutStatus", "LastModifiedTime"]) {
                        order.last_modified_time = Some(checked_time("LastModifiedTime", text)?);
                    }
                }
            }
        }
    }
    match ack.as_deref() {
        Some("Success" | "Warning") => {}
        Some(other) => return Err(format!("GetOrders answered Ack {other:?}")),
        None => return Err("GetOrders answer has no Ack".to_string()),
    }
    let total = total.ok_or("GetOrders answer has no PaginationResult.TotalNumberOfEntries")?;
    let items = orders
        .into_iter()
        .enumerate()
        .map(|(index, order)| {
            let raw = serde_json::to_string(&order)
                .map_err(|err| format!("Order[{index}] cannot be kept: {err}"))?;
            let id = order
                .order_id
                .ok_or_else(|| format!("Order[{index}] has no OrderID"))?;
            let status = order
                .order_status
                .ok_or_else(|| format!("Order[{index}] has no OrderStatus"))?;
            let created = order
                .created_time
                .ok_or_else(|| format!("Order[{index}] has no CreatedTime"))?;
            Ok(Resource {
                id,
                values: vec![
                    Some(status),
                    Some(created),
                    order.last_modified_time,
                    order.paid_time,
                    order.shipped_time,
                    order.total,
                    order.currency,
                    order.seller_user_id,
                ],
                raw,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Page { total, items })
}

impl CursorAdapter for PurchasesAdapter {
    fn stream(&self) -> &'static str {
        "purchases"
    }
    fn operation(&self) -> &'static str {
        "tradingGetOrders"
    }
    fn api(&self) -> EbayApi {
        EbayApi::Trading
    }
    fn path(&self) -> &'static str {
        crate::provider::ebay_trading::TRADING_PATH
    }
    /// Unused: the page is asked for by [`CursorAdapter::trading_request`].
    fn query(&self, _window: CursorWindow, _offset: u64, _limit: u32) -> Vec<(String, String)> {
        Vec::new()
    }
    fn trading_request(
        &self,
        window: CursorWindow,
        offset: u64,
        limit: u32,
    ) -> Option<TradingRequest> {
        let (from, to) = range(window);
        let limit = limit.clamp(1, MAX_ENTRIES_PER_PAGE);
        let page = offset / u64::from(limit) + 1;
        Some(TradingRequest {
            call_name: "GetOrders",
            body: format!(
                r#"<?xml version="1.0" encoding="utf-8"?>
<GetOrdersRequest xmlns="urn:ebay:apis:eBLBaseComponents">
  <ModTimeFrom>{from}</ModTimeFrom>
  <ModTimeTo>{to}</ModTimeTo>
  <OrderRole>Buyer</OrderRole>
  <Pagination><EntriesPerPage>{limit}</EntriesPerPage><PageNumber>{page}</PageNumber></Pagination>
  <DetailLevel>ReturnAll</DetailLevel>
</GetOrdersRequest>
"#
            ),
        })
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        parse_orders(body)
    }
    fn table(&self) -> &'static TableSpec {
        &PURCHASES_TABLE
    }
    fn max_page_limit(&self) -> u32 {
        MAX_ENTRIES_PER_PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<GetOrdersResponse xmlns="urn:ebay:apis:eBLBaseComponents">
 <Timestamp>2026-11-26T00:00:00.000Z</Timestamp><Ack>Success</Ack><Version>1423</Version>
 <PaginationResult><TotalNumberOfPages>1</TotalNumberOfPages><TotalNumberOfEntries>2</TotalNumberOfEntries></PaginationResult>
 <HasMoreOrders>false</HasMoreOrders>
 <OrderArray>
  <Order><OrderID>09-00001-00002</OrderID><OrderStatus>Completed</OrderStatus>
   <CheckoutStatus><LastModifiedTime>2026-11-25T10:00:00.000Z</LastModifiedTime><Status>Complete</Status></CheckoutStatus>
   <CreatedTime>2026-11-25T08:00:00.000Z</CreatedTime><PaidTime>2026-11-25T09:00:00.000Z</PaidTime>
   <Total currencyID="USD">12.50</Total><SellerUserID>some_seller</SellerUserID>
   <TransactionArray><Transaction><Item><ItemID>1</ItemID></Item></Transaction></TransactionArray></Order>
  <Order><OrderID>09-00001-00003</OrderID><OrderStatus>Active</OrderStatus>
   <CreatedTime>2026-11-25T11:00:00.000Z</CreatedTime><Total currencyID="EUR">3</Total></Order>
 </OrderArray>
 <OrdersPerPage>100</OrdersPerPage><PageNumber>1</PageNumber><ReturnedOrderCountActual>2</ReturnedOrderCountActual>
</GetOrdersResponse>"#;

    #[test]
    fn purchases_ask_getorders_as_buyer_by_mod_time_and_page_number() {
        let request = PurchasesAdapter
            .trading_request(CursorWindow { start: 0, end: 10 }, 200, 100)
            .expect("trading");
        assert_eq!(request.call_name, "GetOrders");
        assert!(request
            .body
            .contains("<ModTimeFrom>1970-01-01T00:00:00.000Z</ModTimeFrom>"));
        assert!(request
            .body
            .contains("<ModTimeTo>1970-01-01T00:00:09.999Z</ModTimeTo>"));
        assert!(request.body.contains("<OrderRole>Buyer</OrderRole>"));
        assert!(request
            .body
            .contains("<EntriesPerPage>100</EntriesPerPage><PageNumber>3</PageNumber>"));
    }

    #[test]
    fn purchases_parse_orders_and_refuse_hostile_values() {
        let page = PurchasesAdapter.parse(PAGE.as_bytes()).expect("parse");
        assert_eq!(page.total, 2);
        assert_eq!(page.items.len(), 2);
        let first = &page.items[0];
        assert_eq!(first.id, "09-00001-00002");
        assert_eq!(
            first.value(&PURCHASES_TABLE, "order_status"),
            Some("Completed")
        );
        assert_eq!(
            first.value(&PURCHASES_TABLE, "paid_time"),
            Some("2026-11-25T09:00:00.000Z")
        );
        assert_eq!(
            first.value(&PURCHASES_TABLE, "last_modified"),
            Some("2026-11-25T10:00:00.000Z")
        );
        assert_eq!(first.value(&PURCHASES_TABLE, "currency"), Some("USD"));
        assert_eq!(page.items[1].value(&PURCHASES_TABLE, "paid_time"), None);
        for (from, to) in [
            (
                "<Total currencyID=\"USD\">12.50</Total>",
                "<Total currencyID=\"USD\">1e9</Total>",
            ),
            ("currencyID=\"USD\"", "currencyID=\"usd!\""),
            (
                "<PaidTime>2026-11-25T09:00:00.000Z</PaidTime>",
                "<PaidTime>yesterday</PaidTime>",
            ),
            (
                "<TotalNumberOfEntries>2</TotalNumberOfEntries>",
                "<TotalNumberOfEntries>-1</TotalNumberOfEntries>",
            ),
            ("<Ack>Success</Ack>", "<Ack>Failure</Ack>"),
            ("<OrderID>09-00001-00003</OrderID>", ""),
            (
                "<OrderID>09-00001-00002</OrderID>",
                "<OrderID>a b</OrderID>",
            ),
        ] {
            let hostile = PAGE.replacen(from, to, 1);
            assert!(
                PurchasesAdapter.parse(hostile.as_bytes()).is_err(),
                "{to} accepted"
            );
        }
        let no_total = PAGE.replace("<TotalNumberOfEntries>2</TotalNumberOfEntries>", "");
        assert!(PurchasesAdapter.parse(no_total.as_bytes()).is_err());
        assert!(PurchasesAdapter
            .parse(b"<Other><Ack>Success</Ack></Other>")
            .is_err());
    }
}
