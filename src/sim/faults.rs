//! Fault injection of the simulator: the fault settings ([`SimFaults`]: probabilities and
//! faults scheduled on the nth call of an operation) and the content faults of a document.

use serde::{Deserialize, Serialize};

use super::state::Operation;
use super::{alias, ebay, keepa, stockx};

/// Injected faults. Probabilities are in `[0, 1]` and drawn per call (or per report) from
/// a RNG seeded with [`super::SimConfig::seed`]; `schedule` pins a fault on the nth call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimFaults {
    /// 429 QuotaExceeded on any SP-API call (not token, not download).
    pub throttle: f64,
    /// 500 InternalFailure on any SP-API call (not token, not download).
    pub server_error: f64,
    /// A new report ends FATAL; its document is an error document.
    pub fatal: f64,
    /// A new report ends CANCELLED, without a document.
    pub cancelled: f64,
    /// A new report's document is served with its gzip bytes cut in half.
    pub truncated: f64,
    /// A new report's document is gzip of invalid JSON.
    pub malformed: f64,
    /// A new report's document covers the requested window shifted by +1h.
    pub wrong_window: f64,
    /// Faults on the nth call of an operation.
    pub schedule: Vec<ScheduledFault>,
    /// Sent as `Retry-After` on every 429 (injected or from a bucket) when set.
    pub retry_after_secs: Option<u64>,

    // hostile provider answers (see `super::hostile`; all off by default)
    /// Sent verbatim as `Retry-After` on every 429 of any provider, replacing
    /// `retry_after_secs`: `"9000000000000"`, `"18446744073709551615"`, an HTTP date.
    pub retry_after_text: Option<String>,
    /// The `expires_in` of every token answer (LWA, eBay, StockX), e.g. `u64::MAX`.
    pub token_expires_in: Option<u64>,
    /// eBay getOrders says a `total` that grows on every page and never runs out of items.
    pub ebay_total_grows: bool,
    /// Every API answer's body is sent one byte per this many milliseconds.
    pub slow_drip_ms: Option<u64>,
    /// Every API call (not a token request, not a document download) answers 307 to this
    /// base url (`http://127.0.0.1:PORT`) with the same path and query.
    pub redirect_to: Option<String>,
    /// getReportDocument's `url` points at this base (scheme, host, port) instead.
    pub document_url: Option<String>,
    /// Keepa answers carry this `tokensLeft` instead of the real balance.
    pub keepa_tokens_left: Option<i64>,
    /// Keepa answers carry this `refillIn` (ms) instead of the real one.
    pub keepa_refill_in: Option<u64>,
    /// Keepa answers carry this `refillRate` (per minute) instead of the real one.
    pub keepa_refill_rate: Option<f64>,
    // hostile documents: sizes of the `gzip_bomb` and `huge_field` documents.
    /// Decompressed size of a `gzip_bomb` document (default 1 GiB, at most 64 GiB).
    pub bomb_bytes: Option<u64>,
    /// Length of the ASIN string in a `huge_field` document (default 512 MiB, at most
    /// 4 GiB).
    pub huge_field_bytes: Option<u64>,
}

/// Default decompressed size of a `gzip_bomb` document: 1 GiB.
pub const DEFAULT_BOMB_BYTES: u64 = 1024 * 1024 * 1024;
/// Most a `gzip_bomb` may expand to (the simulator compresses it per download).
pub const MAX_BOMB_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Default length of the string in a `huge_field` document: 512 MiB.
pub const DEFAULT_HUGE_FIELD_BYTES: u64 = 512 * 1024 * 1024;
/// Most a `huge_field` string may be.
pub const MAX_HUGE_FIELD_BYTES: u64 = 4 * 1024 * 1024 * 1024;

impl SimFaults {
    /// Checks probabilities and schedule entries; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let probabilities = [
            ("throttle", self.throttle),
            ("server_error", self.server_error),
            ("fatal", self.fatal),
            ("cancelled", self.cancelled),
            ("truncated", self.truncated),
            ("malformed", self.malformed),
            ("wrong_window", self.wrong_window),
        ];
        for (name, value) in probabilities {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!(
                    "{name}: {value} is not a probability; use a number from 0 to 1"
                ));
            }
        }
        for (name, url) in [
            ("redirect_to", &self.redirect_to),
            ("document_url", &self.document_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "{name}: {url:?} is not a base url; use a form like http://127.0.0.1:8080"
                    ));
                }
            }
        }
        if let Some(rate) = self.keepa_refill_rate {
            if !rate.is_finite() {
                return Err("keepa_refill_rate: not a finite number".to_string());
            }
        }
        for (index, entry) in self.schedule.iter().enumerate() {
            let known = Operation::from_name(&entry.operation).is_some()
                || provider_operations().any(|name| name == entry.operation);
            if !known {
                let mut names: Vec<&str> = Operation::ALL.map(Operation::name).to_vec();
                names.extend(provider_operations());
                return Err(format!(
                    "schedule[{index}].operation: unknown operation {:?}; expected one of {}",
                    entry.operation,
                    names.join(", ")
                ));
            }
            if entry.nth == 0 {
                return Err(format!("schedule[{index}].nth: calls count from 1"));
            }
        }
        let sizes = [
            ("bomb_bytes", self.bomb_bytes, MAX_BOMB_BYTES),
            (
                "huge_field_bytes",
                self.huge_field_bytes,
                MAX_HUGE_FIELD_BYTES,
            ),
        ];
        for (name, value, max) in sizes {
            if let Some(value) = value {
                if value == 0 || value > max {
                    return Err(format!(
                        "{name}: {value} is out of range; use 1 to {max} bytes"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The operations of the other providers' simulators, as fault schedules name them
/// (`ebay.getOrders`, `stockx.marketData`, `keepa.product`, ...).
pub(super) fn provider_operations() -> impl Iterator<Item = &'static str> {
    ebay::OPERATIONS
        .iter()
        .chain(stockx::OPERATIONS)
        .chain(keepa::OPERATIONS)
        .chain(alias::OPERATIONS)
        .copied()
}

/// "The nth call (1-based, since start, across all sellers) of `operation` gets `fault`."
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// `createReport`, `getReport`, `getReportDocument`, `getReports`, `cancelReport`,
    /// `downloadDocument` or `token` (or another provider's operation).
    pub operation: String,
    pub nth: u64,
    pub fault: FaultKind,
}

/// What a scheduled fault does. `throttle` and `server_error` fail the call itself; the
/// others set a report's outcome on `createReport`, and the document faults (`truncated`,
/// `malformed`, `wrong_window`, `gzip_bomb`, `huge_field`) also spoil one download on
/// `downloadDocument`. Elsewhere they do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Throttle,
    ServerError,
    Fatal,
    Cancelled,
    Truncated,
    Malformed,
    WrongWindow,
    // hostile documents
    /// A small gzip that expands to `bomb_bytes` of whitespace inside a valid document.
    GzipBomb,
    /// A valid document whose first row's ASIN is a `huge_field_bytes` string.
    HugeField,
}

/// How a DONE document is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentFault {
    Truncated,
    Malformed,
    WrongWindow,
    // hostile documents
    GzipBomb,
    HugeField,
}

impl ContentFault {
    pub(super) fn from_kind(kind: FaultKind) -> Option<Self> {
        match kind {
            FaultKind::Truncated => Some(ContentFault::Truncated),
            FaultKind::Malformed => Some(ContentFault::Malformed),
            FaultKind::WrongWindow => Some(ContentFault::WrongWindow),
            FaultKind::GzipBomb => Some(ContentFault::GzipBomb),
            FaultKind::HugeField => Some(ContentFault::HugeField),
            _ => None,
        }
    }
}
