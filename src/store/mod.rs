//! The store: every SQL statement of marketsync lives below this module.
//!
//! One SQLite file (WAL) holds the ledger and everything beside it, one file per table
//! family:
//! - [`blocking`](mod@blocking): the one helper that runs store work on the blocking pool.
//! - [`ledger`]: the ledger's storage trait ([`LedgerStore`]), its error and row types.
//! - [`sqlite`]: the SQLite connection, migrations and the hour ledger (claims, sales,
//!   cooldowns, audits).
//! - [`cursors`]: eBay cursor streams: cursors, resources and their change history.
//! - [`ebay_tables`]: the eBay streams' resource tables and their tracked fields.
//! - [`ebay_inventory`]: eBay active-inventory snapshots (per-SKU quantity and price).
//! - [`ebay_streams`]: which stored eBay resources are still moving (re-read windows).
//! - [`ebay_inquiries`]: the eBay `inquiries` and `purchases` tables.
//! - [`history`]: the dashboard's pictures: a stream's hours over a range, cursor positions.
//! - [`export`]: one table family streamed as CSV or JSON lines (`marketsync export`).
//! - [`jobs`]: the keyed job queue and the market prices / Keepa snapshots it fills.
//! - [`sales`]: the vendor sales table as the read surfaces sum it.
//! - [`supervision`]: restart counts, crashes and quarantines of the accounts supervisor.
//! - [`leases`]: the SQLite lease backend's tables.
//!
//! Layer 4 of docs/architecture.md. May use: `domain`, `report`, `telemetry`. May not
//! touch: providers, shapes, actors or surfaces; it is the only module with SQL.

pub mod blocking;
pub mod cursors;
pub mod ebay_cases;
pub mod ebay_inquiries;
pub mod ebay_inventory;
pub mod ebay_streams;
pub mod ebay_tables;
pub mod export;
pub mod history;
pub mod jobs;
pub mod leases;
pub mod ledger;
pub mod sales;
pub mod sqlite;
pub mod supervision;
pub mod tracked;

pub use blocking::{blocking, BlockingFailed};
pub use ledger::*;
pub use sqlite::SqliteLedger;
