//! A report stream's own settings (`[accounts.streams.NAME]` keys of windowed streams).

use std::time::Duration;

use crate::domain::ClaimOrder;

/// The settings only windowed (report) streams have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowedSettings {
    /// Rolling window kept filled with ledger rows.
    pub lookback: Duration,
    /// Most hours one report request covers.
    pub chunk: Duration,
    /// Which end of the lookback window claims start from.
    pub order: ClaimOrder,
    /// First and largest pause between getReport polls.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// A report not finished after this long fails its unit.
    pub poll_timeout: Duration,
    /// A document larger than this fails its unit instead of filling the disk.
    pub max_document_bytes: u64,
    pub daily_audit: bool,
    pub weekly_audit: bool,
}

impl WindowedSettings {
    /// The defaults `config/example.toml` documents.
    pub const DEFAULT: WindowedSettings = WindowedSettings {
        lookback: Duration::from_secs(72 * 3600),
        chunk: Duration::from_secs(6 * 3600),
        order: ClaimOrder::NewestFirst,
        poll_min: Duration::from_secs(2),
        poll_max: Duration::from_secs(60),
        poll_timeout: Duration::from_secs(30 * 60),
        max_document_bytes: 512 * 1024 * 1024,
        daily_audit: true,
        weekly_audit: false,
    };
}
