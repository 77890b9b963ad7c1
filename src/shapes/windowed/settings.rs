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
    /// Shortest and longest pause between getReport polls of one report (the pause
    /// grows with the report's age in between; see [`crate::shapes::windowed::poll`]).
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// A report not finished after this long is cancelled (cancelReport, when it is
    /// still IN_QUEUE) and its unit fails, to be requested again.
    pub poll_timeout: Duration,
    /// Windows of the stream requested ahead and in flight at once (createReport's
    /// burst: 15).
    pub max_in_flight: u32,
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
        max_in_flight: 15,
        daily_audit: true,
        weekly_audit: false,
    };
}
