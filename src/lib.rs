//! marketsync: keeps a local SQLite database in sync with rate-limited marketplace APIs.
//!
//! The crate is a layered house (docs/architecture.md); each module depends only on the
//! ones listed before it, and `scripts/check-layers.py` fails the build when one does not:
//! - [`domain`]: plain shared types: ids, providers, hour windows, ledger states,
//!   priorities, scopes, time helpers.
//! - [`telemetry`]: the in-process metrics handle (calls, 429s, takeovers, tokens).
//! - [`store`]: all SQL: the SQLite connection, migrations, one file per table family.
//! - [`lock`]: leases with fencing tokens (Redis and SQLite backends) and their hygiene.
//! - [`cluster`]: daemons sharing one Redis: membership (heartbeats) and which member
//!   runs each account (rendezvous hashing).
//! - [`quota`]: the TokenManager quota model (buckets, priorities, cooldowns).
//! - [`report`]: streaming parser for report documents.
//! - [`provider`]: provider clients and the error enum callers branch on.
//! - [`shapes`]: the three sync shapes (windowed reports, cursors, jobs) behind one seam,
//!   and the stream runner loop.
//! - [`actors`]: the supervision tree: root, accounts supervisor, accounts, housekeeping.
//! - [`diagnose`]: facts and verdicts (status, doctor) over typed store queries.
//! - [`http`]: the operator surface inside the daemon: API, dashboard, metrics.
//! - [`config`]: the TOML configuration, parsed raw then validated once.
//! - [`app`]: the composition root: starts and stops the daemon.
//! - [`cli`]: command-line parsing, one file per command.
//! - [`sim`]: the bundled marketplace simulator speaking the real wire formats.
//! - [`bench`](mod@bench): the benchmark commands (`marketsync bench ...`).

pub mod actors;
pub mod app;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod diagnose;
pub mod domain;
pub mod http;
pub mod lock;
pub mod provider;
pub mod quota;
pub mod report;
pub mod shapes;
pub mod sim;
pub mod store;
pub mod telemetry;
