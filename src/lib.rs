//! marketsync: keeps a local SQLite database in sync with rate-limited marketplace APIs.
//!
//! Module map:
//! - [`config`]: the TOML configuration, parsed raw then validated once into [`config::Config`].
//! - [`model`]: plain shared types (sales rows, hour windows, timestamp helpers).
//! - [`ledger`]: the unit-of-work ledger: states, allowed transitions, the storage trait and
//!   its SQLite implementation (claims, cooldowns, applying documents).
//! - [`provider`]: provider clients (SP-API today) and the error enum callers branch on.
//! - [`report`]: streaming parser for report documents.
//! - [`sync`]: the windowed-stream runner: claim, request, poll, download, apply; and
//!   [`sync::StreamWork`], the seam every sync shape plugs into.
//! - [`cursor`]: cursor streams (eBay): one bounded window per run, change history.
//! - [`jobs`]: the keyed job queue (StockX market data, Keepa products).
//! - [`daemon`]: `marketsync run`: starts the simulator when configured, the lease service and
//!   the supervision tree; stream runner loops and lock hygiene.
//! - [`root`]: the root of the supervision tree and its Housekeeping child.
//! - [`supervisor`]: the AccountsSupervisor: restart backoff, quarantine, stuck detection.
//! - [`account`]: the Account actor, one per account, owning its stream runners.
//! - [`chaos`]: crash drills for proving isolation on the real binary.
//! - [`lock`]: leases with fencing tokens, Redis and SQLite backends, TTL hygiene.
//! - [`quota`]: the TokenManager quota model (buckets, priorities, cooldowns).
//! - [`status`]: per account/stream status, as a table or JSON.
//! - [`http`]: the operator surface inside the daemon: status and admin API, the dashboard
//!   page, Prometheus metrics.
//! - [`doctor`]: `marketsync doctor`: why an account is not syncing, one finding a line,
//!   and the per-stream verdicts the status API shows.
//! - [`sim`]: the bundled marketplace simulator speaking the real wire formats.
//! - [`bench`]: the benchmark commands (`marketsync bench ...`).
//! - [`cli`]: command-line parsing and dispatch.

pub mod account;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod cursor;
pub mod daemon;
pub mod doctor;
pub mod http;
pub mod jobs;
pub mod ledger;
pub mod lock;
pub mod model;
pub mod provider;
pub mod quota;
pub mod report;
pub mod root;
pub mod sim;
pub mod status;
pub mod supervisor;
pub mod sync;
