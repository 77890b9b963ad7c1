//! The Reports API of the simulator: createReport, getReport, getReportDocument and the
//! document download, rendered from the deterministic vendor sales rows.

use rand::RngExt;
use tracing::debug;

use super::amazon;
use super::faults::{ContentFault, DEFAULT_BOMB_BYTES, DEFAULT_HUGE_FIELD_BYTES};
use super::profile::{SimProfile, StuckEnd, Timing};
use super::state::{Operation, Outcome, Phase, Reject, Report};
use super::stats::ServedRow;
use super::{Simulator, MAX_REPORT_WINDOW};
use crate::domain::{format_ts, parse_ts, HOUR};

/// A validated createReport request.
pub(super) struct ReportRequest {
    marketplace: String,
    start: i64,
    end: i64,
}

/// Parses a createReport body (`CreateReportSpecification`, reports_2021-06-30) at
/// `now` (unix seconds). `dataStartTime` and `dataEndTime` are optional: "The default is
/// now. The value must be prior to or equal to the current date and time." A start equal
/// to the end (both left out, for one) is a window that holds no full hour: the report's
/// `reportData` is empty. A start after the end is refused.
pub(super) fn parse_create_report(body: &[u8], now: i64) -> Result<ReportRequest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("body: invalid JSON: {err}"))?;
    let Some(object) = value.as_object() else {
        return Err("body: expected a JSON object".to_string());
    };
    match object.get("reportType").and_then(|value| value.as_str()) {
        Some(amazon::VENDOR_REAL_TIME_SALES_REPORT) => {}
        Some(other) => {
            return Err(format!(
                "reportType: {other:?} is not supported; use {}",
                amazon::VENDOR_REAL_TIME_SALES_REPORT
            ))
        }
        None => return Err("reportType: missing or not a string".to_string()),
    }
    let marketplace = match object
        .get("marketplaceIds")
        .and_then(|value| value.as_array())
    {
        Some(ids) if ids.len() == 1 => match ids[0].as_str() {
            Some(id) if !id.trim().is_empty() => id.to_string(),
            _ => {
                return Err(
                    "marketplaceIds: the marketplace id must be a non-empty string".to_string(),
                )
            }
        },
        Some(_) => return Err("marketplaceIds: exactly one marketplace id is required".to_string()),
        None => return Err("marketplaceIds: missing or not an array".to_string()),
    };
    let timestamp = |field: &str| -> Result<i64, String> {
        let Some(value) = object.get(field) else {
            return Ok(now);
        };
        let text = value
            .as_str()
            .ok_or_else(|| format!("{field}: not a string"))?;
        parse_ts(text).ok_or_else(|| format!("{field}: {text:?} is not an RFC 3339 timestamp"))
    };
    let start = timestamp("dataStartTime")?;
    let end = timestamp("dataEndTime")?;
    if start > end {
        return Err(format!(
            "dataStartTime: {} is after dataEndTime {}",
            format_ts(start),
            format_ts(end)
        ));
    }
    if end - start > MAX_REPORT_WINDOW {
        return Err("dataEndTime: a report covers at most 7 days after dataStartTime".to_string());
    }
    Ok(ReportRequest {
        marketplace,
        start,
        end,
    })
}

/// The wire `processingStatus` of a report in `phase` with `outcome`.
pub(super) fn status_name(phase: Phase, outcome: Outcome) -> &'static str {
    match (phase, outcome) {
        (Phase::InQueue, _) => "IN_QUEUE",
        (Phase::InProgress, _) => "IN_PROGRESS",
        (Phase::Ended, Outcome::Done(_)) => "DONE",
        (Phase::Ended, Outcome::Fatal) => "FATAL",
        (Phase::Ended, Outcome::Cancelled) => "CANCELLED",
    }
}

/// What a download needs once the lock is released.
pub(super) struct DownloadPlan {
    seller: String,
    marketplace: String,
    start: i64,
    end: i64,
    content: DocumentContent,
    /// Sizes of the hostile documents (from the faults in force at the download).
    bomb_bytes: u64,
    huge_field_bytes: u64,
}

pub(super) enum DocumentContent {
    Error,
    Sales(Option<ContentFault>),
}

impl Simulator {
    /// createReport: returns the report id and the bucket rate.
    pub(super) fn create_report(
        &self,
        access_token: Option<&str>,
        body: &[u8],
    ) -> Result<(String, f64), Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(Operation::CreateReport, access_token, now, &self.config)?;
        // "The default is now" (whole seconds, as the timestamps are), and "The value must
        // be prior to or equal to the current date and time" (a timestamp within the
        // current second is not later than now).
        let request = parse_create_report(body, self.unix_now().floor() as i64)
            .map_err(Reject::InvalidInput)?;
        let now_unix = self.unix_now().ceil() as i64;
        for (field, value) in [
            ("dataStartTime", request.start),
            ("dataEndTime", request.end),
        ] {
            if value > now_unix {
                return Err(Reject::InvalidInput(format!(
                    "{field}: {} is in the future; it must be prior to or equal to the current date and time ({})",
                    format_ts(value),
                    format_ts(now_unix)
                )));
            }
        }
        let mut outcome = state.draw_outcome(admitted.scheduled);
        let timing = match self.config.profile {
            SimProfile::Fast => Timing::fixed(self.config.processing_latency.as_secs_f64()),
            SimProfile::Realistic => Timing::realistic(&mut state.latency_rng),
        }
        .scaled(self.config.time_scale());
        match timing.stuck {
            Some(StuckEnd::Cancelled) => outcome = Outcome::Cancelled,
            Some(StuckEnd::Fatal) => outcome = Outcome::Fatal,
            None => {}
        }
        let key = (
            admitted.seller.clone(),
            request.marketplace.clone(),
            request.start,
            request.end,
        );
        let duplicate = state.reports_by_key.get(&key).is_some_and(|earlier| {
            earlier.iter().any(|earlier_id| {
                state.reports.get(earlier_id).is_some_and(|report| {
                    let status = status_name(self.phase(report, now), report.outcome);
                    status != "FATAL" && status != "CANCELLED"
                })
            })
        });
        if duplicate {
            state.stats.duplicate_create_reports += 1;
        }
        let serial = state.next_id();
        let report_id = format!("{}{serial:07}", self.instance_tag);
        let document_id = match outcome {
            Outcome::Cancelled => None,
            Outcome::Done(_) | Outcome::Fatal => {
                let document_id = format!(
                    "amzn1.spdoc.1.4.na.{:08x}-{:04x}-{:012x}",
                    self.instance_tag,
                    state.id_rng.random::<u16>(),
                    serial
                );
                state
                    .documents
                    .insert(document_id.clone(), report_id.clone());
                Some(document_id)
            }
        };
        debug!(
            seller = %admitted.seller,
            report_id = %report_id,
            marketplace = %request.marketplace,
            start = %format_ts(request.start),
            end = %format_ts(request.end),
            outcome = ?outcome,
            processing_secs = timing.total,
            stuck = timing.stuck.is_some(),
            "report created"
        );
        state
            .reports_by_key
            .entry(key)
            .or_default()
            .push(report_id.clone());
        state.reports.insert(
            report_id.clone(),
            Report {
                seller: admitted.seller,
                marketplace: request.marketplace,
                start: request.start,
                end: request.end,
                created_at: now,
                queued_for: timing.queued,
                ends_after: timing.total,
                cancelled_by_request: false,
                outcome,
                document_id,
            },
        );
        Ok((report_id, admitted.rate))
    }

    /// getReport: the report as JSON, and the bucket rate.
    pub(super) fn get_report(
        &self,
        access_token: Option<&str>,
        report_id: &str,
    ) -> Result<(serde_json::Value, f64), Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(Operation::GetReport, access_token, now, &self.config)?;
        let report = match state.reports.get(report_id) {
            Some(report) if report.seller == admitted.seller => report.clone(),
            _ => return Err(Reject::NotFound(format!("Report {report_id} not found"))),
        };
        drop(state);
        Ok((self.report_json(report_id, &report, now), admitted.rate))
    }

    /// The `Report` object of the model (getReport, and each entry of getReports).
    pub(super) fn report_json(
        &self,
        report_id: &str,
        report: &Report,
        now: f64,
    ) -> serde_json::Value {
        let phase = self.phase(report, now);
        let mut body = serde_json::Map::new();
        body.insert("reportId".into(), report_id.into());
        body.insert(
            "reportType".into(),
            amazon::VENDOR_REAL_TIME_SALES_REPORT.into(),
        );
        body.insert("dataStartTime".into(), format_ts(report.start).into());
        body.insert("dataEndTime".into(), format_ts(report.end).into());
        body.insert(
            "marketplaceIds".into(),
            serde_json::json!([report.marketplace]),
        );
        body.insert(
            "processingStatus".into(),
            status_name(phase, report.outcome).into(),
        );
        body.insert(
            "createdTime".into(),
            format_ts(self.unix_at(report.created_at)).into(),
        );
        if phase != Phase::InQueue && !report.cancelled_by_request {
            let started = self.unix_at(report.created_at + report.queued_for);
            body.insert("processingStartTime".into(), format_ts(started).into());
        }
        if phase == Phase::Ended {
            let ended = self.unix_at(report.created_at + report.ends_after);
            body.insert("processingEndTime".into(), format_ts(ended).into());
            if let Some(document_id) = &report.document_id {
                body.insert("reportDocumentId".into(), document_id.as_str().into());
            }
        }
        serde_json::Value::Object(body)
    }

    /// getReportDocument: the document reference with a fresh url on the simulator's own
    /// address (the one it listens on; `localhost` before [`Simulator::set_address`]).
    pub(super) fn get_report_document(
        &self,
        access_token: Option<&str>,
        document_id: &str,
    ) -> Result<(serde_json::Value, f64), Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let admitted = state.admit(
            Operation::GetReportDocument,
            access_token,
            now,
            &self.config,
        )?;
        let not_found = || Reject::NotFound(format!("Report document {document_id} not found"));
        let report = state
            .documents
            .get(document_id)
            .and_then(|report_id| state.reports.get(report_id))
            .filter(|report| report.seller == admitted.seller)
            .cloned()
            .ok_or_else(not_found)?;
        drop(state);
        if self.phase(&report, now) != Phase::Ended {
            return Err(not_found());
        }
        let expires = self.unix_at(now + self.config.document_url_lifetime.as_secs_f64());
        let host = self
            .address()
            .map_or_else(|| "localhost".to_string(), |address| address.to_string());
        let url = format!("http://{host}/_documents/{document_id}?expires={expires}");
        let body = serde_json::json!({
            "reportDocumentId": document_id,
            "url": url,
            "compressionAlgorithm": "GZIP",
        });
        Ok((body, admitted.rate))
    }

    /// The pre-signed style download: gzip bytes of the document.
    pub(super) fn download_document(
        &self,
        document_id: &str,
        expires: Option<&str>,
    ) -> Result<Vec<u8>, Reject> {
        let now = self.clock();
        let mut state = self.lock();
        let bomb_bytes = state.faults.bomb_bytes.unwrap_or(DEFAULT_BOMB_BYTES);
        let huge_field_bytes = state
            .faults
            .huge_field_bytes
            .unwrap_or(DEFAULT_HUGE_FIELD_BYTES);
        let scheduled = state.count(Operation::DownloadDocument);
        let scheduled = state.apply_scheduled(Operation::DownloadDocument, scheduled)?;
        let expires = expires
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or(Reject::DocumentUnsigned)?;
        if self.epoch_unix + now > expires as f64 {
            return Err(Reject::DocumentExpired);
        }
        let report = state
            .documents
            .get(document_id)
            .and_then(|report_id| state.reports.get(report_id))
            .cloned()
            .ok_or(Reject::DocumentMissing)?;
        drop(state);
        if self.phase(&report, now) != Phase::Ended {
            return Err(Reject::DocumentMissing);
        }
        let content = match report.outcome {
            Outcome::Cancelled => return Err(Reject::DocumentMissing),
            Outcome::Fatal => DocumentContent::Error,
            Outcome::Done(fault) => {
                DocumentContent::Sales(scheduled.and_then(ContentFault::from_kind).or(fault))
            }
        };
        let plan = DownloadPlan {
            seller: report.seller,
            marketplace: report.marketplace,
            start: report.start,
            end: report.end,
            content,
            bomb_bytes,
            huge_field_bytes,
        };
        self.render(document_id, plan)
    }

    /// Builds (outside the lock) the bytes of a download and records intact rows.
    fn render(&self, document_id: &str, plan: DownloadPlan) -> Result<Vec<u8>, Reject> {
        let internal = |err: &dyn std::fmt::Display| {
            Reject::Internal(format!("document {document_id}: {err}"))
        };
        let seed = self.config.seed;
        let asins = self.config.asins_per_marketplace;
        match plan.content {
            DocumentContent::Error => {
                let json = amazon::error_document(
                    "The report could not be generated because of an internal processing error (simulated FATAL).",
                )
                .map_err(|err| internal(&err))?;
                amazon::gzip(&json).map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::Malformed)) => {
                amazon::gzip(amazon::MALFORMED_DOCUMENT).map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::WrongWindow)) => {
                let (json, _) = amazon::sales_document(
                    seed,
                    &plan.marketplace,
                    asins,
                    plan.start + HOUR,
                    plan.end + HOUR,
                )
                .map_err(|err| internal(&err))?;
                amazon::gzip(&json).map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::GzipBomb)) => {
                // A valid specification, then whitespace until `bomb_bytes` inside
                // reportData: nothing but the decompressed size is wrong with it.
                let prefix = format!(
                    r#"{{"reportSpecification":{},"reportData":["#,
                    specification_json(&plan.marketplace, plan.start, plan.end)
                );
                gzip_stretched(prefix.as_bytes(), b' ', plan.bomb_bytes, b"]}")
                    .map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::HugeField)) => {
                let prefix = format!(
                    r#"{{"reportSpecification":{},"reportData":[{{"startTime":"{}","endTime":"{}","orderedUnits":1,"orderedRevenue":1.0,"asin":""#,
                    specification_json(&plan.marketplace, plan.start, plan.end),
                    format_ts(plan.start),
                    format_ts(plan.start + HOUR),
                );
                gzip_stretched(prefix.as_bytes(), b'A', plan.huge_field_bytes, b"\"}]}")
                    .map_err(|err| internal(&err))
            }
            DocumentContent::Sales(Some(ContentFault::Truncated)) => {
                let (json, _) =
                    amazon::sales_document(seed, &plan.marketplace, asins, plan.start, plan.end)
                        .map_err(|err| internal(&err))?;
                let mut bytes = amazon::gzip(&json).map_err(|err| internal(&err))?;
                bytes.truncate(bytes.len() / 2);
                Ok(bytes)
            }
            DocumentContent::Sales(None) => {
                let (json, rows) =
                    amazon::sales_document(seed, &plan.marketplace, asins, plan.start, plan.end)
                        .map_err(|err| internal(&err))?;
                let bytes = amazon::gzip(&json).map_err(|err| internal(&err))?;
                let mut state = self.lock();
                for row in rows {
                    let key = (
                        plan.seller.clone(),
                        plan.marketplace.clone(),
                        row.hour_utc,
                        row.asin.clone(),
                    );
                    state.served.insert(
                        key,
                        ServedRow {
                            seller: plan.seller.clone(),
                            marketplace: plan.marketplace.clone(),
                            hour_utc: row.hour_utc,
                            asin: row.asin,
                            ordered_units: row.ordered_units,
                            ordered_revenue: row.ordered_revenue,
                        },
                    );
                }
                Ok(bytes)
            }
        }
    }
}

/// The `reportSpecification` object of a document for `[start, end)`, as JSON text.
fn specification_json(marketplace: &str, start: i64, end: i64) -> String {
    serde_json::json!({
        "reportType": amazon::VENDOR_REAL_TIME_SALES_REPORT,
        "reportOptions": {"currencyCode": "USD"},
        "dataStartTime": format_ts(start),
        "dataEndTime": format_ts(end),
        "marketplaceIds": [marketplace],
    })
    .to_string()
}

/// A gzip stream of `prefix`, then `count` bytes of `repeat`, then `suffix`, compressed as
/// it is generated (hostile documents: a bomb of whitespace, a huge string), so only the
/// compressed bytes are ever held.
fn gzip_stretched(
    prefix: &[u8],
    repeat: u8,
    count: u64,
    suffix: &[u8],
) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(prefix)?;
    let block = vec![repeat; 1024 * 1024];
    let mut left = count;
    while left > 0 {
        let take = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        encoder.write_all(&block[..take])?;
        left -= take as u64;
    }
    encoder.write_all(suffix)?;
    encoder.finish()
}

#[cfg(test)]
mod hostile_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_stretched_expands_to_the_requested_size_from_a_small_stream() {
        let bytes = gzip_stretched(b"[", b' ', 8 * 1024 * 1024, b"]").unwrap();
        assert!(bytes.len() < 64 * 1024, "compressed {} bytes", bytes.len());
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text.len(), 8 * 1024 * 1024 + 2);
        assert_eq!((text[0], text[text.len() - 1]), (b'[', b']'));
    }
}
