//! The seam between the cursor engine and one stream: a [`CursorAdapter`] says which
//! call reads a window's page, how to parse it, and which table (and which tracked
//! fields) its resources go to. Adding `messages` or `active_inventory` is one more
//! adapter and one more table, not a copy of the engine.

use std::time::Duration;

use crate::provider::ebay::EbayApi;

/// A half-open window `[start, end)` of unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorWindow {
    pub start: i64,
    pub end: i64,
}

/// A stream's resource table: `account`, the key column, `columns`, `raw`,
/// `first_seen_at`, `updated_at`; primary key (account, key).
#[derive(Debug)]
pub struct TableSpec {
    pub table: &'static str,
    pub key: &'static str,
    /// Columns filled from [`Resource::values`], in this order.
    pub columns: &'static [&'static str],
    /// Columns whose changes are history: (column, wire field name recorded in `events`).
    pub tracked: &'static [(&'static str, &'static str)],
}

/// One resource parsed from a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: String,
    /// One value per [`TableSpec::columns`].
    pub values: Vec<Option<String>>,
    /// The resource as served (JSON).
    pub raw: String,
}

impl Resource {
    /// The value of `column` of `spec`.
    pub fn value<'a>(&'a self, spec: &TableSpec, column: &str) -> Option<&'a str> {
        let index = spec.columns.iter().position(|name| *name == column)?;
        self.values.get(index)?.as_deref()
    }
}

/// One parsed page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Items in the whole result set (all pages).
    pub total: u64,
    pub items: Vec<Resource>,
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
}
