//! The three sync shapes behind one [`ShapeRunner`] seam, and the runner loop that works
//! every stream under its lease.
//!
//! - [`context`]: what every run shares: [`StreamContext`], the [`ShapeRunner`] seam and
//!   [`StreamWork`], run outcomes, pacing and cooldown handling.
//! - [`runner`]: the loop every stream runs under its lease (leases, fencing, cooldown
//!   waits, infrastructure backoff).
//! - [`spec`]: the validated account and stream settings, one type per shape.
//! - [`windowed`]: SP-API report streams over the hour ledger ([`windowed::WindowedRunner`]).
//! - [`cursor`]: eBay cursor streams, one bounded window per run.
//! - [`jobs`]: the keyed job queue (StockX, Keepa).
//!
//! Layer 9 of docs/architecture.md. May use: everything up to `provider`. May not touch:
//! actors, surfaces, the raw configuration.

pub mod context;
pub mod cursor;
pub mod jobs;
pub mod runner;
pub mod spec;
pub mod windowed;

pub use context::{
    blocking, retry_delay, CallError, QuotaStop, RunOutcome, RunPermits, ShapeRunner,
    StreamContext, StreamWork, SyncError, AUTH_COOLDOWN, DEFERRED_RETRY, QUOTA_WAIT_MAX,
};
pub use runner::{
    fence_refusals_in, lock_scope, AbortOnDrop, LeasedOutcome, FENCE_REFUSAL_MEMORY, FENCE_REFUSED,
};
