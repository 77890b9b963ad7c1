//! Plain data types shared by the provider clients, the simulator and the ledger.
//!
//! Hours are carried as unix seconds of the hour's start (always a multiple of 3600),
//! which keeps SQLite keys compact and arithmetic trivial; formatting to RFC 3339
//! happens only at the edges (status output, wire formats).
//!
//! Layer 0 of docs/architecture.md. May use: nothing else in the crate. May not touch: I/O
//! beyond reading `/proc` for owner liveness.

pub mod chaos;
pub mod lease;
pub mod ledger;
pub mod provider;
pub mod supervision;

pub use ledger::{account_scope, BurstCorrection, ClaimOrder, Cooldown, HourState, Priority};
pub use provider::{Provider, Shape};

use chrono::{DateTime, TimeZone, Utc};

/// Seconds in one hour.
pub const HOUR: i64 = 3600;

/// One row of `GET_VENDOR_REAL_TIME_SALES_REPORT`'s `reportData`, reduced to one full hour.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesRow {
    /// Unix seconds of the hour's start (`startTime`).
    pub hour_utc: i64,
    pub asin: String,
    /// Can be negative: cancellations and returns are reported as negative units.
    pub ordered_units: i64,
    pub ordered_revenue: f64,
}

/// A half-open window of whole hours `[start, end)`, in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HourWindow {
    pub start: i64,
    pub end: i64,
}

impl HourWindow {
    pub fn new(start: i64, end: i64) -> Self {
        debug_assert!(start % HOUR == 0 && end % HOUR == 0 && start < end);
        Self { start, end }
    }

    pub fn hours(&self) -> i64 {
        (self.end - self.start) / HOUR
    }

    pub fn contains_hour(&self, hour_utc: i64) -> bool {
        hour_utc >= self.start && hour_utc < self.end
    }
}

impl std::fmt::Display for HourWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", format_ts(self.start), format_ts(self.end))
    }
}

/// Floors unix seconds to the start of their hour.
pub fn floor_hour(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(HOUR) * HOUR
}

/// Formats unix seconds as RFC 3339 UTC with a `Z` suffix, e.g. `2025-12-09T20:00:00Z`.
pub fn format_ts(unix_seconds: i64) -> String {
    match Utc.timestamp_opt(unix_seconds, 0).single() {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("@{unix_seconds}"),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into unix seconds.
pub fn parse_ts(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|dt| dt.with_timezone(&Utc).timestamp())
}

/// The current time in unix seconds.
pub fn now_ts() -> i64 {
    Utc::now().timestamp()
}

/// Formats unix milliseconds the way eBay writes dates (RFC 3339 with millis and `Z`): `2026-11-23T10:00:00.000Z`.
pub fn format_millis(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("@{millis}"),
    }
}

/// Parses an eBay date (RFC 3339, usually with millis and `Z`) into unix milliseconds.
pub fn parse_millis(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|dt| dt.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_format_round_trip() {
        let ts = parse_ts("2025-12-09T20:18:00+00:00").unwrap();
        assert_eq!(format_ts(floor_hour(ts)), "2025-12-09T20:00:00Z");
        assert_eq!(floor_hour(-1), -3600);
    }
}
