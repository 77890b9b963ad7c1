//! marketsync: keeps a local SQLite database in sync with rate-limited marketplace APIs.
//!
//! Module map:
//! - [`config`]: the TOML configuration, parsed raw then validated once into [`config::Config`].
//! - [`model`]: plain shared types (sales rows, hour windows, timestamp helpers).
//! - [`ledger`]: the unit-of-work ledger: states, allowed transitions, the storage trait and
//!   its SQLite implementation (claims, cooldowns, applying documents).
//! - [`provider`]: provider clients (SP-API today) and the error enum callers branch on.
//! - [`report`]: streaming parser for report documents.
//! - [`sync`]: the windowed-stream runner: claim, request, poll, download, apply.
//! - [`daemon`]: `marketsync run`: starts the simulator when configured and the stream runners.
//! - [`status`]: per account/stream status, as a table or JSON.
//! - [`sim`]: the bundled marketplace simulator speaking the real wire formats.
//! - [`bench`]: the benchmark commands (`marketsync bench ...`).
//! - [`cli`]: command-line parsing and dispatch.

pub mod account;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod ledger;
pub mod lock;
pub mod model;
pub mod provider;
pub mod quota;
pub mod report;
pub mod sim;
pub mod status;
pub mod supervisor;
pub mod sync;
