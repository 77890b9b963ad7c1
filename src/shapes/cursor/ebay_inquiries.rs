//! The eBay Post-Order inquiry stream as an adapter: `inquiries` (GET
//! /post-order/v2/inquiry/search, InquirySearchResponse of InquirySummaryType), read by
//! inquiry creation date. An Item Not Received inquiry's status moves while its creation
//! date does not, so a live run re-reads back to the oldest stored inquiry still open
//! ([`OPEN_INQUIRIES`]), at most [`INQUIRIES_REVISIT`], and the changes it sees go to the
//! history, exactly as `cases` does.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::adapter::{CursorAdapter, CursorWindow, OpenSpec, Page, TableSpec};
use super::ebay::{range, typed, Money};
use super::ebay_cases::{DateValue, Identifier};
use crate::provider::ebay::EbayApi;
use crate::store::ebay_inquiries::{INQUIRIES_TABLE, OPEN_INQUIRIES};

/// Post-Order inquiry search, by `inquiry_creation_date_range_from` / `_to`. `offset` is
/// the number of entries skipped (Post-Order's PaginationOutput type), as for returns.
pub struct InquiriesAdapter;

/// The farthest a live inquiries run reads back for open inquiries. An INR inquiry the
/// seller does not settle is escalated to a case or closed within weeks; one still open
/// longer than this after its creation is no longer re-read (its later change is not
/// recorded), which keeps one stuck inquiry from making every run re-read months.
pub const INQUIRIES_REVISIT: Duration = Duration::from_secs(30 * 24 * 3600);

impl CursorAdapter for InquiriesAdapter {
    fn stream(&self) -> &'static str {
        "inquiries"
    }
    fn operation(&self) -> &'static str {
        "searchInquiries"
    }
    fn api(&self) -> EbayApi {
        EbayApi::PostOrder
    }
    fn path(&self) -> &'static str {
        "/post-order/v2/inquiry/search"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        let (from, to) = range(window);
        vec![
            ("inquiry_creation_date_range_from".into(), from),
            ("inquiry_creation_date_range_to".into(), to),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct InquiryPage {
            #[serde(default)]
            members: Vec<Value>,
            total_number_of_inquiries: Option<u64>,
            pagination_output: Option<Pagination>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Pagination {
            total_entries: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Inquiry {
            inquiry_id: Identifier,
            inquiry_status_enum: String,
            creation_date: DateValue,
            last_modified_date: Option<DateValue>,
            respond_by_date: Option<DateValue>,
            claim_amount: Option<Money>,
            item_id: Option<Identifier>,
            transaction_id: Option<Identifier>,
        }
        let page: InquiryPage = serde_json::from_slice(body)
            .map_err(|err| format!("inquiry search page is not the expected json: {err}"))?;
        let total = page
            .pagination_output
            .and_then(|pagination| pagination.total_entries)
            .or(page.total_number_of_inquiries)
            .ok_or(
                "inquiry search page has neither paginationOutput.totalEntries nor totalNumberOfInquiries",
            )?;
        let items = typed(page.members, "members", |inquiry: Inquiry| {
            let (value, currency) = match inquiry.claim_amount {
                Some(money) => (money.value, money.currency),
                None => (None, None),
            };
            (
                inquiry.inquiry_id.into_text(),
                vec![
                    Some(inquiry.inquiry_status_enum),
                    Some(inquiry.creation_date.value),
                    inquiry.last_modified_date.map(|date| date.value),
                    inquiry.respond_by_date.map(|date| date.value),
                    value,
                    currency,
                    inquiry.item_id.map(Identifier::into_text),
                    inquiry.transaction_id.map(Identifier::into_text),
                ],
            )
        })?;
        Ok(Page { total, items })
    }
    fn table(&self) -> &'static TableSpec {
        &INQUIRIES_TABLE
    }
    fn revisit(&self) -> Duration {
        INQUIRIES_REVISIT
    }
    fn open_resources(&self) -> Option<&'static OpenSpec> {
        Some(&OPEN_INQUIRIES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inquiry_query_covers_the_window_and_skips_offset_entries() {
        let query = InquiriesAdapter.query(CursorWindow { start: 0, end: 10 }, 400, 200);
        assert_eq!(
            query,
            vec![
                (
                    "inquiry_creation_date_range_from".to_string(),
                    "1970-01-01T00:00:00.000Z".to_string()
                ),
                (
                    "inquiry_creation_date_range_to".to_string(),
                    "1970-01-01T00:00:09.999Z".to_string()
                ),
                ("limit".to_string(), "200".to_string()),
                ("offset".to_string(), "400".to_string()),
            ]
        );
    }

    #[test]
    fn inquiry_parse_takes_numeric_or_text_ids_and_refuses_missing_status() {
        let body = br#"{"members":[{"inquiryId":5000012345,"inquiryStatusEnum":"WAITING_SELLER_RESPONSE","creationDate":{"value":"2026-01-01T00:00:00.000Z"},"respondByDate":{"value":"2026-01-04T00:00:00.000Z"},"claimAmount":{"value":"12.50","currency":"USD"},"itemId":"110012345","transactionId":0}],"paginationOutput":{"totalEntries":1},"totalNumberOfInquiries":1}"#;
        let page = InquiriesAdapter.parse(body).expect("parse");
        assert_eq!(page.total, 1);
        assert_eq!(page.items[0].id, "5000012345");
        assert_eq!(
            page.items[0].value(&INQUIRIES_TABLE, "status"),
            Some("WAITING_SELLER_RESPONSE")
        );
        assert_eq!(
            page.items[0].value(&INQUIRIES_TABLE, "respond_by"),
            Some("2026-01-04T00:00:00.000Z")
        );
        assert_eq!(
            page.items[0].value(&INQUIRIES_TABLE, "transaction_id"),
            Some("0")
        );
        let missing = br#"{"members":[{"inquiryId":1,"creationDate":{"value":"x"}}],"totalNumberOfInquiries":1}"#;
        assert!(InquiriesAdapter.parse(missing).is_err());
        let float_id = br#"{"members":[{"inquiryId":1.5,"inquiryStatusEnum":"OPEN","creationDate":{"value":"x"}}],"totalNumberOfInquiries":1}"#;
        assert!(InquiriesAdapter.parse(float_id).is_err());
        assert!(InquiriesAdapter.parse(br#"{"members":[]}"#).is_err());
    }
}
