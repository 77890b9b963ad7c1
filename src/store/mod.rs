//! The store: every SQL statement of marketsync lives below this module.
//!
//! One SQLite file (WAL) holds the daemon's state, one file per table family; the hour
//! ledger's tables, the supervision rows, the eBay cursor streams' tables (the
//! `active_inventory` snapshot's included) and the job queue (with its prices, catalog
//! caches and tracked keys) may live in PostgreSQL instead (`[store] url_env`), behind
//! the same traits; the SQLite leases stay in the file:
//! - [`blocking`](mod@blocking): the one helper that runs store work on the blocking pool.
//! - [`ledger`]: the ledger's storage trait ([`LedgerStore`], with the supertraits
//!   [`LedgerReads`], [`supervision::SupervisionStore`], [`cursors::CursorStore`] and
//!   [`inventory::InventoryStore`]), its
//!   error and row types.
//! - [`reads`]: the ledger's read surfaces ([`LedgerReads`]), implemented by both engines.
//! - [`sqlite`]: the SQLite connection, migrations and the hour ledger (claims, sales,
//!   cooldowns, audits).
//! - [`postgres`]: the hour ledger, supervision, cursor streams (with the inventory
//!   snapshot) and the job queue on
//!   PostgreSQL ([`PgLedger`]): pool, migrations, claims with `SKIP LOCKED`, fences in
//!   every write's transaction, `store copy`, exports.
//! - [`cursors`]: eBay cursor streams ([`cursors::CursorStore`]): cursors, resources and
//!   their change history; the SQLite implementation.
//! - [`ebay_tables`]: the eBay streams' resource tables and their tracked fields.
//! - [`ebay_inventory`]: eBay active-inventory snapshots (per-SKU quantity and price) in
//!   the SQLite file; [`inventory::InventoryStore`] is the trait both engines implement.
//! - [`ebay_streams`]: which stored eBay resources are still moving (re-read windows).
//! - [`ebay_inquiries`]: the eBay `inquiries` and `purchases` tables.
//! - [`history`]: the dashboard's pictures: a stream's hours over a range, cursor positions.
//! - [`export`]: one table family streamed as CSV or JSON lines (`marketsync export`).
//! - [`jobs`]: the keyed job queue and the market prices / Keepa snapshots and catalog
//!   caches it fills, behind [`jobs::JobStore`] (both engines).
//! - [`tracked`]: tracked keys and freshness-scheduler passes, behind
//!   [`tracked::TrackedStore`] (both engines).
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
pub mod inventory;
pub mod jobs;
pub mod leases;
pub mod ledger;
pub mod postgres;
pub mod reads;
pub mod sales;
pub mod sqlite;
pub mod supervision;
pub mod tracked;

pub use blocking::{blocking, BlockingFailed};

/// Runs each named contract case (`fn case(engine: &Engine)`, beside an `Engine` with
/// `sqlite()` and `postgres()`) as one test per engine: `case::sqlite`, `case::postgres`.
/// Textually scoped: the contract modules below see it.
#[cfg(test)]
macro_rules! both_engines {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[test]
            fn sqlite() {
                super::$case(&super::Engine::sqlite());
            }

            #[test]
            fn postgres() {
                super::$case(&super::Engine::postgres());
            }
        }
    )*};
}

#[cfg(test)]
mod contract_cursors;
#[cfg(test)]
mod contract_inventory;
#[cfg(test)]
mod contract_jobs;
#[cfg(test)]
mod contract_tests;
pub use ledger::*;
pub use postgres::PgLedger;
pub use reads::{FailedHour, HourDiagnostics, LedgerReads};
pub use sqlite::SqliteLedger;

/// The engine that holds the hour ledger, the supervision rows, the eBay cursor streams
/// (the `active_inventory` snapshot's tables included) and the job queue
/// ([`cursors::CursorStore`], [`inventory::InventoryStore`], [`jobs::JobStore`] and
/// [`tracked::TrackedStore`] are supertraits of [`LedgerStore`]): PostgreSQL when
/// `[store] url_env` is set (`store`), the SQLite file otherwise. Blocking (connects and
/// migrates): async callers run it on the blocking pool.
pub fn hour_ledger(
    store: Option<&postgres::StoreSettings>,
    sqlite: &std::sync::Arc<SqliteLedger>,
) -> Result<std::sync::Arc<dyn LedgerStore>, LedgerError> {
    match store {
        Some(settings) => {
            let ledger = PgLedger::open(settings.url.expose(), &settings.pg)?;
            tracing::info!(url = %settings.url, pool_size = settings.pg.pool_size, "hour ledger on postgresql");
            Ok(std::sync::Arc::new(ledger))
        }
        None => Ok(std::sync::Arc::clone(sqlite) as std::sync::Arc<dyn LedgerStore>),
    }
}
