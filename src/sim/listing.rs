//! getReports and cancelReport of the Reports API 2021-06-30 (`docs/spapi-wire.md`).
//!
//! getReports pages newest first (creation time, then report id, both descending); a
//! `nextToken` remembers the filter and the last report of the page, so reports created
//! meanwhile never shift a page. Tokens live in the simulator's state, at most
//! [`MAX_PAGE_TOKENS`], and belong to the seller that asked.

use rand::RngExt;
use tracing::debug;

use super::amazon;
use super::reports::status_name;
use super::state::{Operation, Outcome, Phase, Reject};
use super::Simulator;
use crate::domain::{format_ts, parse_ts};

/// How many getReports continuation tokens are kept; the oldest is dropped first.
pub(super) const MAX_PAGE_TOKENS: usize = 10_000;
/// Most query parameters a getReports call may carry (repeated names count each).
const MAX_QUERY_PAIRS: usize = 64;
/// `reportTypes` and `marketplaceIds` carry 1 to 10 items (the model's minItems/maxItems).
const MAX_LIST_ITEMS: usize = 10;
/// The model's default `createdSince`: 90 days ago (reports are retained 90 days).
const DEFAULT_CREATED_SINCE: i64 = 90 * 24 * 3600;
const STATUSES: [&str; 5] = ["CANCELLED", "DONE", "FATAL", "IN_PROGRESS", "IN_QUEUE"];

/// The filters of a getReports call.
#[derive(Debug, Clone)]
pub(super) struct ReportFilter {
    report_types: Vec<String>,
    statuses: Vec<String>,
    marketplaces: Vec<String>,
    created_since: i64,
    created_until: i64,
    page_size: usize,
}

/// Where the page after a `nextToken` starts.
#[derive(Debug, Clone)]
pub(super) struct PageCursor {
    seller: String,
    filter: ReportFilter,
    /// The last report of the previous page: (simulator clock at creation, report id).
    after: (f64, String),
}

enum ListRequest {
    First(ReportFilter),
    Next(String),
}

/// A comma-separated list (SP-API's array form), or repeated parameters, of 1..=max items.
fn list(name: &str, values: &[&str], max: usize) -> Result<Vec<String>, String> {
    let items: Vec<String> = values
        .iter()
        .flat_map(|value| value.split(','))
        .map(|item| item.trim().to_string())
        .collect();
    if items.iter().any(String::is_empty) {
        return Err(format!("{name}: empty item; give a comma-separated list"));
    }
    if items.is_empty() || items.len() > max {
        return Err(format!("{name}: {} items; give 1 to {max}", items.len()));
    }
    Ok(items)
}

fn parse_list_request(pairs: &[(String, String)], now_unix: i64) -> Result<ListRequest, String> {
    if pairs.len() > MAX_QUERY_PAIRS {
        return Err(format!(
            "query: {} parameters; at most {MAX_QUERY_PAIRS} are accepted",
            pairs.len()
        ));
    }
    let values = |name: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    };
    const KNOWN: [&str; 7] = [
        "reportTypes",
        "processingStatuses",
        "marketplaceIds",
        "pageSize",
        "createdSince",
        "createdUntil",
        "nextToken",
    ];
    if let Some((unknown, _)) = pairs.iter().find(|(key, _)| !KNOWN.contains(&key.as_str())) {
        return Err(format!(
            "{unknown}: unknown parameter; getReports takes {}",
            KNOWN.join(", ")
        ));
    }
    let single = |name: &str| -> Result<Option<&str>, String> {
        match values(name).as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(format!("{name}: given more than once")),
        }
    };
    if let Some(token) = single("nextToken")? {
        if pairs.len() > 1 {
            return Err(
                "nextToken: must be the only parameter; specifying nextToken with any other parameters is not allowed"
                    .to_string(),
            );
        }
        return Ok(ListRequest::Next(token.to_string()));
    }
    let types = values("reportTypes");
    if types.is_empty() {
        return Err("reportTypes: either reportTypes or nextToken is required".to_string());
    }
    let report_types = list("reportTypes", &types, MAX_LIST_ITEMS)?;
    let statuses = match values("processingStatuses").as_slice() {
        [] => Vec::new(),
        given => {
            let statuses = list("processingStatuses", given, STATUSES.len())?;
            if let Some(bad) = statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
                return Err(format!(
                    "processingStatuses: {bad:?} is not a processing status; use {}",
                    STATUSES.join(", ")
                ));
            }
            statuses
        }
    };
    let marketplaces = match values("marketplaceIds").as_slice() {
        [] => Vec::new(),
        given => list("marketplaceIds", given, MAX_LIST_ITEMS)?,
    };
    let page_size = match single("pageSize")? {
        None => 10,
        Some(text) => match text.parse::<usize>() {
            Ok(size) if (1..=100).contains(&size) => size,
            _ => {
                return Err(format!(
                    "pageSize: {text:?} is not an integer from 1 to 100"
                ))
            }
        },
    };
    let timestamp = |name: &str, default: i64| -> Result<i64, String> {
        match single(name)? {
            None => Ok(default),
            Some(text) => parse_ts(text)
                .ok_or_else(|| format!("{name}: {text:?} is not an ISO 8601 date-time")),
        }
    };
    let created_since = timestamp(
        "createdSince",
        now_unix.saturating_sub(DEFAULT_CREATED_SINCE),
    )?;
    let created_until = timestamp("createdUntil", now_unix)?;
    if created_since > created_until {
        return Err("createdSince: must not be after createdUntil".to_string());
    }
    Ok(ListRequest::First(ReportFilter {
        report_types,
        statuses,
        marketplaces,
        created_since,
        created_until,
        page_size,
    }))
}

impl Simulator {
    /// getReports: a page of the seller's reports matching the filters, and the bucket rate.
    pub(super) fn get_reports(
        &self,
        access_token: Option<&str>,
        pairs: &[(String, String)],
    ) -> Result<(serde_json::Value, f64), Reject> {
        let now = self.clock();
        let now_unix = self.unix_now().floor() as i64;
        let mut state = self.lock();
        let admitted = state.admit(Operation::GetReports, access_token, now, &self.config)?;
        let (filter, after) =
            match parse_list_request(pairs, now_unix).map_err(Reject::InvalidInput)? {
                ListRequest::First(filter) => (filter, None),
                ListRequest::Next(token) => match state.page_tokens.get(&token) {
                    Some(cursor) if cursor.seller == admitted.seller => {
                        (cursor.filter.clone(), Some(cursor.after.clone()))
                    }
                    _ => {
                        return Err(Reject::InvalidInput(
                            "nextToken: unknown or expired token; start again with reportTypes"
                                .to_string(),
                        ))
                    }
                },
            };
        let mut matching: Vec<(f64, String, super::state::Report)> = state
            .reports
            .iter()
            .filter(|(_, report)| report.seller == admitted.seller)
            .filter(|(_, report)| {
                filter
                    .report_types
                    .iter()
                    .any(|kind| kind == amazon::VENDOR_REAL_TIME_SALES_REPORT)
                    && (filter.marketplaces.is_empty()
                        || filter.marketplaces.contains(&report.marketplace))
                    && (filter.created_since..=filter.created_until)
                        .contains(&self.unix_at(report.created_at))
                    && (filter.statuses.is_empty()
                        || filter.statuses.iter().any(|status| {
                            status == status_name(self.phase(report, now), report.outcome)
                        }))
            })
            .filter(|(id, report)| match &after {
                // Newest first: a page continues with the reports ordered after the last one.
                Some((created, last_id)) => {
                    report.created_at < *created
                        || (report.created_at == *created && id.as_str() < last_id.as_str())
                }
                None => true,
            })
            .map(|(id, report)| (report.created_at, id.clone(), report.clone()))
            .collect();
        matching.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let more = matching.len() > filter.page_size;
        matching.truncate(filter.page_size);
        let next_token = match (more, matching.last()) {
            (true, Some((created, id, _))) => {
                let token = format!("{:032x}", state.id_rng.random::<u128>());
                state.page_tokens.insert(
                    token.clone(),
                    PageCursor {
                        seller: admitted.seller.clone(),
                        filter: filter.clone(),
                        after: (*created, id.clone()),
                    },
                );
                state.page_token_order.push_back(token.clone());
                while state.page_token_order.len() > MAX_PAGE_TOKENS {
                    if let Some(oldest) = state.page_token_order.pop_front() {
                        state.page_tokens.remove(&oldest);
                    }
                }
                Some(token)
            }
            _ => None,
        };
        drop(state);
        let reports: Vec<serde_json::Value> = matching
            .iter()
            .map(|(_, id, report)| self.report_json(id, report, now))
            .collect();
        debug!(
            seller = %admitted.seller,
            count = reports.len(),
            more,
            since = %format_ts(filter.created_since),
            "reports listed"
        );
        let mut body = serde_json::Map::new();
        body.insert("reports".into(), serde_json::Value::Array(reports));
        if let Some(token) = next_token {
            body.insert("nextToken".into(), token.into());
        }
        Ok((serde_json::Value::Object(body), admitted.rate))
    }

    /// cancelReport: cancels an IN_QUEUE report (the only ones the model lets a caller
    /// cancel); any other status is refused with 400 InvalidInput naming it.
    pub(super) fn cancel_report(
        &self,
        access_token: Option<&str>,
        report_id: &str,
    ) -> Result<f64, Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(Operation::CancelReport, access_token, now, &self.config)?;
        let report = match state.reports.get(report_id) {
            Some(report) if report.seller == admitted.seller => report.clone(),
            _ => return Err(Reject::NotFound(format!("Report {report_id} not found"))),
        };
        let phase = self.phase(&report, now);
        if phase != Phase::InQueue {
            return Err(Reject::InvalidInput(format!(
                "Report {report_id} cannot be cancelled: its processingStatus is {}; only reports with processingStatus=IN_QUEUE can be cancelled",
                status_name(phase, report.outcome)
            )));
        }
        if let Some(document_id) = &report.document_id {
            state.documents.remove(document_id);
        }
        let elapsed = (now - report.created_at).max(0.0);
        if let Some(stored) = state.reports.get_mut(report_id) {
            stored.outcome = Outcome::Cancelled;
            stored.document_id = None;
            stored.cancelled_by_request = true;
            stored.queued_for = elapsed;
            stored.ends_after = elapsed;
        }
        debug!(seller = %admitted.seller, report_id = %report_id, "report cancelled");
        Ok(admitted.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error(list: &[(&str, &str)]) -> String {
        match parse_list_request(&pairs(list), 1_000_000_000) {
            Err(message) => message,
            Ok(_) => panic!("accepted {list:?}"),
        }
    }

    #[test]
    fn get_reports_requires_report_types_or_next_token_alone() {
        assert!(error(&[]).contains("either reportTypes or nextToken is required"));
        assert!(error(&[("nextToken", "abc"), ("pageSize", "5")]).contains("only parameter"));
        assert!(error(&[("reportTypes", "X"), ("pageSize", "0")]).contains("pageSize"));
        assert!(error(&[("reportTypes", "X"), ("pageSize", "101")]).contains("pageSize"));
        assert!(
            error(&[("reportTypes", "X"), ("processingStatuses", "BAD_VALUE")])
                .contains("BAD_VALUE")
        );
        assert!(error(&[("reportTypes", "A,B,C,D,E,F,G,H,I,J,K")]).contains("1 to 10"));
        assert!(error(&[("reportTypes", "X"), ("bogus", "1")]).contains("bogus"));
        assert!(
            error(&[("reportTypes", "X"), ("createdSince", "yesterday")]).contains("createdSince")
        );
    }

    #[test]
    fn get_reports_defaults_follow_the_model() {
        let Ok(ListRequest::First(filter)) =
            parse_list_request(&pairs(&[("reportTypes", "A,B")]), 1_000_000_000)
        else {
            panic!("refused");
        };
        assert_eq!(filter.report_types, vec!["A", "B"]);
        assert_eq!(filter.page_size, 10);
        assert_eq!(filter.created_until, 1_000_000_000);
        assert_eq!(filter.created_since, 1_000_000_000 - 90 * 86_400);
    }
}
