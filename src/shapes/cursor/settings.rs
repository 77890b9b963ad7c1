//! A cursor stream's own settings (`[accounts.streams.NAME]` keys of cursor streams).

use std::time::Duration;

/// The settings only cursor streams have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorSettings {
    /// Where the first sync starts (this long before now).
    pub start: Duration,
    /// The longest window one run covers.
    pub max_window: Duration,
    /// Items per page (eBay allows at most 200).
    pub page_limit: u32,
    /// A response body larger than this fails its window.
    pub max_response_bytes: u64,
}

impl CursorSettings {
    /// The defaults `config/example.toml` documents.
    pub const DEFAULT: CursorSettings = CursorSettings {
        start: Duration::from_secs(90 * 24 * 3600),
        max_window: Duration::from_secs(24 * 3600),
        page_limit: 200,
        max_response_bytes: 16 * 1024 * 1024,
    };
}
