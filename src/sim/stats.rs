//! What the simulator reports about itself: call, throttle and error counts per operation
//! ([`SimStats`]) and the rows it served ([`ServedRow`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::Operation;
use crate::domain::SalesRow;

/// A counter per operation; serializes with the wire operation names as keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpCounts {
    pub token: u64,
    pub create_report: u64,
    pub get_report: u64,
    pub get_report_document: u64,
    pub download_document: u64,
    pub get_reports: u64,
    pub cancel_report: u64,
}

impl OpCounts {
    /// The count for an operation name (`createReport`, ...); 0 for unknown names.
    pub fn get(&self, operation: &str) -> u64 {
        Operation::from_name(operation).map_or(0, |operation| *self.slot(operation))
    }

    fn slot(&self, operation: Operation) -> &u64 {
        match operation {
            Operation::Token => &self.token,
            Operation::CreateReport => &self.create_report,
            Operation::GetReport => &self.get_report,
            Operation::GetReportDocument => &self.get_report_document,
            Operation::DownloadDocument => &self.download_document,
            Operation::GetReports => &self.get_reports,
            Operation::CancelReport => &self.cancel_report,
        }
    }

    /// Adds one and returns the new count.
    pub(super) fn bump(&mut self, operation: Operation) -> u64 {
        let slot = match operation {
            Operation::Token => &mut self.token,
            Operation::CreateReport => &mut self.create_report,
            Operation::GetReport => &mut self.get_report,
            Operation::GetReportDocument => &mut self.get_report_document,
            Operation::DownloadDocument => &mut self.download_document,
            Operation::GetReports => &mut self.get_reports,
            Operation::CancelReport => &mut self.cancel_report,
        };
        *slot += 1;
        *slot
    }
}

/// Calls, 429s (bucket and injected) and injected 500s per operation, and duplicate
/// createReports, as served by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    pub calls: OpCounts,
    pub throttled: OpCounts,
    pub server_errors: OpCounts,
    /// Reports created for a (seller, marketplace, reportType, dataStartTime, dataEndTime)
    /// while an earlier report of that key was still IN_QUEUE, IN_PROGRESS or DONE (as
    /// seen at the new call): work a client paid the scarcest quota for twice. A request
    /// again after FATAL or CANCELLED is not a duplicate.
    pub duplicate_create_reports: u64,
    /// 429s from the token buckets (not injected ones), per bucket: `seller/operation`.
    pub bucket_throttles: BTreeMap<String, u64>,
}

impl SimStats {
    /// Requests received for `operation`, whatever their answer.
    pub fn calls(&self, operation: &str) -> u64 {
        self.calls.get(operation)
    }

    /// 429 answers to `operation`, from its bucket or injected.
    pub fn throttled(&self, operation: &str) -> u64 {
        self.throttled.get(operation)
    }

    /// Injected 500 answers to `operation`.
    pub fn server_errors(&self, operation: &str) -> u64 {
        self.server_errors.get(operation)
    }

    /// The most 429s any one (seller, operation) bucket answered, and that bucket.
    pub fn max_bucket_throttles(&self) -> Option<(&str, u64)> {
        self.bucket_throttles
            .iter()
            .max_by_key(|(_, count)| **count)
            .map(|(bucket, count)| (bucket.as_str(), *count))
    }

    /// Duplicate createReports (see [`SimStats::duplicate_create_reports`]).
    pub fn duplicate_reports(&self) -> u64 {
        self.duplicate_create_reports
    }
}

/// One sales row served in an intact DONE document, with who downloaded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedRow {
    /// The seller: the refresh token the access token was issued for.
    pub seller: String,
    pub marketplace: String,
    pub hour_utc: i64,
    pub asin: String,
    pub ordered_units: i64,
    pub ordered_revenue: f64,
}

impl ServedRow {
    /// The row without seller and marketplace, to compare with stored rows.
    pub fn sales_row(&self) -> SalesRow {
        SalesRow {
            hour_utc: self.hour_utc,
            asin: self.asin.clone(),
            ordered_units: self.ordered_units,
            ordered_revenue: self.ordered_revenue,
        }
    }
}
