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
    /// The Feed API task of a snapshot stream (`active_inventory`); unused by the others.
    pub feed: FeedSettings,
}

/// How a snapshot stream (`active_inventory`) waits for its Feed API task and how much
/// of its result file it accepts (`poll_min`, `poll_max`, `poll_timeout`,
/// `max_document_bytes` under `[accounts.streams.active_inventory]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSettings {
    /// The first pause between getInventoryTask polls; it doubles up to `poll_max`.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// A task not finished this long after it was created fails the run (total deadline).
    pub poll_timeout: Duration,
    /// A result file (as downloaded, compressed) larger than this fails the run.
    pub max_file_bytes: u64,
    /// At most this much XML is read out of it ([`FeedSettings::XML_PER_FILE_BYTE`] times
    /// `max_file_bytes`): a decompression bomb fails instead of running on.
    pub max_xml_bytes: u64,
}

impl FeedSettings {
    /// XML bytes accepted per byte of result file (eBay's zipped XML compresses ~10:1).
    pub const XML_PER_FILE_BYTE: u64 = 32;

    /// The defaults `config/example.toml` documents.
    pub const DEFAULT: FeedSettings = FeedSettings {
        poll_min: Duration::from_secs(5),
        poll_max: Duration::from_secs(120),
        poll_timeout: Duration::from_secs(2 * 3600),
        max_file_bytes: 512 * 1024 * 1024,
        max_xml_bytes: 512 * 1024 * 1024 * FeedSettings::XML_PER_FILE_BYTE,
    };
}

impl CursorSettings {
    /// The defaults `config/example.toml` documents.
    pub const DEFAULT: CursorSettings = CursorSettings {
        start: Duration::from_secs(90 * 24 * 3600),
        max_window: Duration::from_secs(24 * 3600),
        page_limit: 200,
        max_response_bytes: 16 * 1024 * 1024,
        feed: FeedSettings::DEFAULT,
    };
}
