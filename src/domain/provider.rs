//! The providers marketsync speaks to and the sync shape each one uses.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The eBay stream that drains the `ebay` job queue (Browse API market prices).
pub const EBAY_MARKET_PRICES_STREAM: &str = "market_prices";

/// A marketplace API marketsync syncs from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon Selling Partner API (report streams).
    Amazon,
    /// eBay seller APIs (cursor streams).
    Ebay,
    /// StockX market data (job queue).
    Stockx,
    /// Keepa products (job queue).
    Keepa,
    /// Alias (GOAT's seller platform) pricing insights (job queue).
    Alias,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Amazon,
        Provider::Ebay,
        Provider::Stockx,
        Provider::Keepa,
        Provider::Alias,
    ];

    /// The name used in the configuration, in scopes and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Amazon => "amazon",
            Provider::Ebay => "ebay",
            Provider::Stockx => "stockx",
            Provider::Keepa => "keepa",
            Provider::Alias => "alias",
        }
    }

    pub fn parse(text: &str) -> Option<Provider> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.as_str() == text)
    }

    /// The names of every provider, for messages (`amazon, ebay, stockx, keepa, alias`).
    pub fn names() -> String {
        Provider::ALL.map(Provider::as_str).join(", ")
    }

    /// The sync shape of the provider's streams.
    pub fn shape(self) -> Shape {
        match self {
            Provider::Amazon => Shape::Windowed,
            Provider::Ebay => Shape::Cursor,
            Provider::Stockx | Provider::Keepa | Provider::Alias => Shape::Jobs,
        }
    }

    /// The sync shape of the provider's stream `stream`: the provider's [`Provider::shape`],
    /// except eBay's `market_prices`, a job queue (Browse API lookups) beside its cursor
    /// streams.
    pub fn stream_shape(self, stream: &str) -> Shape {
        match (self, stream) {
            (Provider::Ebay, EBAY_MARKET_PRICES_STREAM) => Shape::Jobs,
            _ => self.shape(),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three sync shapes of the architecture card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Hour rows per (account, stream), filled by report requests (SP-API).
    Windowed,
    /// A cursor per (account, stream), moved one bounded window per run (eBay).
    Cursor,
    /// Keyed on-demand lookups drained from a queue (StockX, Keepa, Alias, eBay market
    /// prices).
    Jobs,
}

impl Shape {
    /// How the shape is named in messages and `status --json` (`windowed`, `cursor`, `jobs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Windowed => "windowed",
            Shape::Cursor => "cursor",
            Shape::Jobs => "jobs",
        }
    }
}
