//! The spans that carry an account's and a stream's names into every log line logged
//! inside them, so those lines do not repeat `account = ...` / `stream = ...` by hand.
//!
//! - `account{account=ID}`: work of one account;
//! - `account{account=ID}:stream{stream=NAME}`: one pass of one of its streams (the
//!   shape's run, the runner's waits and retries around it, and the store work it sends
//!   to the blocking pool: [`crate::store::blocking`] carries the caller's span there).
//!
//! Attach them to futures with [`tracing::Instrument::instrument`], never by holding an
//! `Entered` guard across an `.await` (the guard would stay entered on whatever else the
//! worker thread polls). A task spawned inside a span does not inherit it: instrument
//! the spawned future with `Span::current()` explicitly.
//!
//! The text log format prints them before the event's own fields
//! (`account{account=shop}:stream{stream=orders}: marketsync::shapes::cursor: caught up
//! windows=8`); the JSON format lists them under `spans` (see `--log-format` in README).
//!
//! Lines logged outside an account's work (the supervisor about a child, HTTP handlers
//! acting on an account, configuration checks) keep an `account` field of their own.

use tracing::Span;

/// The span of `account`'s work. Info level: the daemon's default filter keeps it, so
/// every info line inside it names the account.
pub fn account_span(account: &str) -> Span {
    tracing::info_span!("account", account = %account)
}

/// The span of one pass of `account`'s stream `stream`: a `stream` span inside a fresh
/// [`account_span`].
pub fn stream_span(account: &str, stream: &str) -> Span {
    let account = account_span(account);
    tracing::info_span!(parent: &account, "stream", stream = %stream)
}
