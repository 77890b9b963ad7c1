//! The three sync shapes behind one [`ShapeRunner`] seam, and the runner loop that works
//! every stream under its lease.
//!
//! - [`windowed`]: SP-API report streams over the hour ledger.
//! - [`cursor`]: eBay cursor streams, one bounded window per run.
//! - [`jobs`]: the keyed job queue (StockX, Keepa).
//!
//! May use: `domain`, `store`, `lock`, `quota`, `provider`, `report`, `telemetry`.
//! May not touch: actors, surfaces, the raw configuration.

pub mod cursor;
pub mod jobs;
pub mod runner;
pub mod spec;
pub mod windowed;
