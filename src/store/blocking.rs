//! The one way async code runs store work: on tokio's blocking pool, never on the async
//! worker threads (a SQLite call can take milliseconds; an async worker must not block
//! for more than ~500 µs).

use std::fmt;

/// The blocking task did not return: it panicked or the runtime is shutting down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blocking store task failed: {0}")]
pub struct BlockingFailed(pub String);

/// Runs `work` on the blocking pool and returns what it returned. Callers map
/// [`BlockingFailed`] into their own error (an infrastructure error: retry, do not blame
/// the unit of work).
///
/// `work` runs inside the caller's current span: what it logs names the account and
/// stream whose run sent it (see [`crate::telemetry::spans`]); a blocking-pool thread
/// has no span of its own.
pub async fn blocking<T, F>(work: F) -> Result<T, BlockingFailed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|err| BlockingFailed(describe(&err)))
}

fn describe(err: &impl fmt::Display) -> String {
    err.to_string()
}
