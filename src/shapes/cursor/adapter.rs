//! The seam between the cursor engine and one stream: a [`CursorAdapter`] says which
//! call reads a window's page, how to parse it, and which table (and which tracked
//! fields) its resources go to. Adding `messages` or `active_inventory` is one more
//! adapter and one more table, not a copy of the engine.

use std::time::Duration;

use crate::provider::ebay::EbayApi;

pub use crate::store::cursors::{CursorWindow, Page, Resource, TableSpec};
pub use crate::store::ebay_streams::OpenSpec;

/// A page asked for through eBay's Trading API (an XML document POSTed to
/// `/ws/api.dll`) instead of a paged GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradingRequest {
    /// `X-EBAY-API-CALL-NAME`, e.g. `GetOrders`.
    pub call_name: &'static str,
    /// The request document.
    pub body: String,
}

/// One cursor stream of a provider.
pub trait CursorAdapter: Send + Sync + 'static {
    /// The stream name in the configuration (`orders`).
    fn stream(&self) -> &'static str;
    /// The operation: the TokenManager bucket and the metrics label (`getOrders`).
    fn operation(&self) -> &'static str;
    /// Which API (host, authorization scheme) serves it.
    fn api(&self) -> EbayApi;
    /// The path of the paged GET.
    fn path(&self) -> &'static str;
    /// The query of one page: items from `offset` (0-based), at most `limit`.
    fn query(&self, window: CursorWindow, offset: u64, limit: u32) -> Vec<(String, String)>;
    /// Parses a page body into typed resources.
    fn parse(&self, body: &[u8]) -> Result<Page, String>;
    /// The table its resources go to.
    fn table(&self) -> &'static TableSpec;
    /// How far back a live (caught-up) window is read again, for APIs that filter on a
    /// date that does not move when the resource changes (Post-Order searches by creation
    /// date): re-reading recent resources is how their changes are seen. Zero: never.
    fn revisit(&self) -> Duration {
        Duration::ZERO
    }
    /// For an adapter that revisits: its stored resources whose status still moves. A
    /// live window is then read again only back to the oldest of them (and not at all
    /// when none is open), never further back than [`CursorAdapter::revisit`]. `None`:
    /// always the whole `revisit`.
    fn open_resources(&self) -> Option<&'static OpenSpec> {
        None
    }
    /// The largest `limit` the operation accepts; `page_limit` is clamped to it.
    fn max_page_limit(&self) -> u32 {
        200
    }
    /// For a Trading API stream: the call that reads the page of items from `offset`
    /// (a multiple of `limit`), which then replaces the GET of [`CursorAdapter::path`]
    /// and [`CursorAdapter::query`]. `None` (the default): a REST GET.
    fn trading_request(
        &self,
        _window: CursorWindow,
        _offset: u64,
        _limit: u32,
    ) -> Option<TradingRequest> {
        None
    }
}
