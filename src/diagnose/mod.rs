//! Facts and verdicts over typed store queries, shared by `status`, `doctor`, the HTTP API
//! and `/metrics`: [`status`] (per account and stream), [`facts`], [`verdict`](mod@verdict),
//! [`findings`](mod@findings) and the doctor's [`probe`]s; plus the operator repairs the CLI and the
//! HTTP API share ([`cooldowns`] list/clear, [`repair`] fill-day validation) and the
//! [`Deployment`] view of the configuration they all read.
//!
//! `marketsync doctor [ACCOUNT [STREAM]]` explains why an account is not syncing, from
//! the database, the lease backend and the configuration, without tailing logs.
//!
//! It automates seed 000's troubleshooting checklist and seed 004's diagnostics:
//! - **lock busy**: who holds the stream's lease, since when, until when, and whether it
//!   is stale (its expiry passed: the holder most likely died mid-flight) or a zombie
//!   (no expiry at all);
//! - **quota cooldown**: until when no provider call is made;
//! - **missing hours never drop**: hours are claimable but nothing claimed them, and why
//!   (a lease, a cooldown, or no daemon running);
//! - **applied never advances**: the `last_error` of FAILED hours and when they retry;
//! - **quarantine**: the crash that quarantined the account actor;
//! - **auth failures**: a cooldown with reason `auth` or FAILED hours whose error says
//!   authentication failed; eBay's access denied (errorId 1100) names the scope the
//!   stream lacks and `marketsync auth ebay ACCOUNT` as the fix;
//! - **eBay refresh token expiry**: 14 days before the account's `refresh_token_expires`
//!   (also a warning line under `status`);
//! - **unreachable dependencies**: Redis or the configured endpoint (or the embedded
//!   simulator), by a TCP connect with a short timeout;
//! - **fence-refusal loop**: the runner's `fence_refused` lock condition with three or
//!   more refusals in a row (nothing is written; two daemons share the database but not
//!   one lease backend);
//! - **full disk**: the data dir's filesystem has less than [`MIN_FREE_BYTES`] free
//!   (`statvfs`), or a recorded error says SQLite found the disk full;
//! - **a lease held on another host**: whose and until when, never with a force-release
//!   (this host cannot prove that holder dead), and no "start the daemon" while a live
//!   lease says one runs.
//!
//! Every finding is one line with the command that fixes it. The exit status is 1 when
//! some finding needs a person ([`Severity::Action`]), 0 otherwise.
//!
//! The same facts give the one-word [`Verdict`] (and its one-line explanation) that the
//! HTTP status endpoint and the dashboard show per stream (see [`crate::http`]).
//!
//! Layer 11 of docs/architecture.md. May use: everything up to `actors`. May not touch: SQL
//! or Redis key names (it asks the store and the lock service); the raw configuration (it
//! reads a `Deployment`).

pub mod cluster;
pub mod cooldowns;

pub mod deployment;

pub mod repair;

pub mod status;
pub mod table;

pub mod tokens;

pub use deployment::Deployment;

use std::time::Duration;

/// How long a TCP connect to Redis or an endpoint may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the fix commands of HTTP-only actions point; the daemon's `[http]` settings.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Base URL of the daemon's HTTP API, e.g. `http://127.0.0.1:8080`; `None` when the
    /// configuration serves none (`[http]` absent): fixes then name the CLI instead.
    pub admin_url: Option<String>,
    /// The environment variable holding the admin token (named, never printed).
    pub admin_token_env: String,
    /// How fix commands start, e.g. `marketsync --config prod.toml`; `None`: derived from
    /// the configuration's source.
    pub command: Option<String>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            admin_url: None,
            admin_token_env: "MARKETSYNC_ADMIN_TOKEN".to_string(),
            command: None,
        }
    }
}

pub mod facts;
pub mod findings;
pub mod probe;
pub mod verdict;

#[cfg(test)]
mod tests;

pub use facts::*;
pub use findings::*;
pub use probe::*;
pub use verdict::*;
