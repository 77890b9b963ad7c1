//! The eBay Post-Order case stream as an adapter: `cases` (GET
//! /post-order/v2/casemanagement/search, CaseSearchResponse of CaseSummaryType), read by
//! case creation date. A case's status moves while its creation date does not, so a live
//! run re-reads back to the oldest stored case still open ([`OPEN_CASES`]), at most
//! [`CASES_REVISIT`], and the changes it sees go to the history.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::adapter::{CursorAdapter, CursorWindow, OpenSpec, Page, TableSpec};
use super::ebay::{range, typed, Money};
use crate::provider::ebay::EbayApi;
use crate::store::ebay_cases::{CASES_TABLE, OPEN_CASES};

/// Post-Order case search, by `case_creation_date_range_from` / `_to`. `offset` is the
/// number of entries skipped (Post-Order's PaginationOutput type), as for returns.
pub struct CasesAdapter;

/// The farthest a live cases run reads back for open cases. eBay closes a case the
/// seller does not answer within days, and one escalated to customer service within
/// weeks; a case open longer than this after its creation is no longer re-read (its
/// later change is not recorded), which keeps one stuck case from making every run
/// re-read months.
pub const CASES_REVISIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A Post-Order `DateTime` container: `{"value": "2026-11-23T10:00:00.000Z"}`.
#[derive(Deserialize)]
pub(super) struct DateValue {
    pub(super) value: String,
}

/// A Post-Order integer identifier: the reference types `caseId`, `itemId` and
/// `transactionId` as integers, and eBay sends some of them as strings; both are kept
/// as text. Anything else (a float, an object) is refused.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Identifier {
    Number(u64),
    Text(String),
}

impl Identifier {
    pub(super) fn into_text(self) -> String {
        match self {
            Identifier::Number(number) => number.to_string(),
            Identifier::Text(text) => text,
        }
    }
}

impl CursorAdapter for CasesAdapter {
    fn stream(&self) -> &'static str {
        "cases"
    }
    fn operation(&self) -> &'static str {
        "searchCases"
    }
    fn api(&self) -> EbayApi {
        EbayApi::PostOrder
    }
    fn path(&self) -> &'static str {
        "/post-order/v2/casemanagement/search"
    }
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)> {
        let (from, to) = range(window);
        vec![
            ("case_creation_date_range_from".into(), from),
            ("case_creation_date_range_to".into(), to),
            ("limit".into(), limit.to_string()),
            ("offset".into(), offset.to_string()),
        ]
    }
    fn parse(&self, body: &[u8]) -> Result<Page, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct CasePage {
            #[serde(default)]
            members: Vec<Value>,
            total_number_of_cases: Option<u64>,
            pagination_output: Option<Pagination>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Pagination {
            total_entries: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Case {
            case_id: Identifier,
            case_type: Option<String>,
            case_status_enum: String,
            creation_date: DateValue,
            claim_amount: Option<Money>,
            item_id: Option<Identifier>,
            transaction_id: Option<Identifier>,
        }
        let page: CasePage = serde_json::from_slice(body)
            .map_err(|err| format!("case search page is not the expected json: {err}"))?;
        let total = page
            .pagination_output
            .and_then(|pagination| pagination.total_entries)
            .or(page.total_number_of_cases)
            .ok_or(
                "case search page has neither paginationOutput.totalEntries nor totalNumberOfCases",
            )?;
        let items = typed(page.members, "members", |case: Case| {
            let (value, currency) = match case.claim_amount {
                Some(money) => (money.value, money.currency),
                None => (None, None),
            };
            (
                case.case_id.into_text(),
                vec![
                    case.case_type,
                    Some(case.case_status_enum),
                    Some(case.creation_date.value),
                    value,
                    currency,
                    case.item_id.map(Identifier::into_text),
                    case.transaction_id.map(Identifier::into_text),
                ],
            )
        })?;
        Ok(Page { total, items })
    }
    fn table(&self) -> &'static TableSpec {
        &CASES_TABLE
    }
    fn revisit(&self) -> Duration {
        CASES_REVISIT
    }
    fn open_resources(&self) -> Option<&'static OpenSpec> {
        Some(&OPEN_CASES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_query_covers_the_window_and_skips_offset_entries() {
        let query = CasesAdapter.query(CursorWindow { start: 0, end: 10 }, 400, 200);
        assert_eq!(
            query,
            vec![
                (
                    "case_creation_date_range_from".to_string(),
                    "1970-01-01T00:00:00.000Z".to_string()
                ),
                (
                    "case_creation_date_range_to".to_string(),
                    "1970-01-01T00:00:09.999Z".to_string()
                ),
                ("limit".to_string(), "200".to_string()),
                ("offset".to_string(), "400".to_string()),
            ]
        );
    }

    #[test]
    fn case_parse_takes_numeric_or_text_ids_and_refuses_missing_status() {
        let body = br#"{"members":[{"caseId":5000012345,"caseType":"RETURN","caseStatusEnum":"OPEN","creationDate":{"value":"2026-01-01T00:00:00.000Z"},"claimAmount":{"value":"12.50","currency":"USD"},"itemId":"110012345","transactionId":0}],"paginationOutput":{"totalEntries":1},"totalNumberOfCases":1}"#;
        let page = CasesAdapter.parse(body).expect("parse");
        assert_eq!(page.total, 1);
        assert_eq!(page.items[0].id, "5000012345");
        assert_eq!(page.items[0].value(&CASES_TABLE, "status"), Some("OPEN"));
        assert_eq!(
            page.items[0].value(&CASES_TABLE, "claim_value"),
            Some("12.50")
        );
        assert_eq!(
            page.items[0].value(&CASES_TABLE, "item_id"),
            Some("110012345")
        );
        let missing =
            br#"{"members":[{"caseId":1,"creationDate":{"value":"x"}}],"totalNumberOfCases":1}"#;
        assert!(CasesAdapter.parse(missing).is_err());
        let float_id = br#"{"members":[{"caseId":1.5,"caseStatusEnum":"OPEN","creationDate":{"value":"x"}}],"totalNumberOfCases":1}"#;
        assert!(CasesAdapter.parse(float_id).is_err());
        assert!(CasesAdapter.parse(br#"{"members":[]}"#).is_err());
    }
}
