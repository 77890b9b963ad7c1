//! `GET /api/export/{kind}?account=&since=&format=`: the same export as `marketsync
//! export` (see [`crate::store::export`]), streamed as a chunked body.
//!
//! Admin only (the bearer token): orders carry buyer names. The rows are read on the
//! blocking pool through a read-only connection of its own (a long export never holds one
//! of the ledger's shared readers) and written in 64 KiB chunks into a bounded channel
//! (four chunks), whose receiver is the response body: memory stays constant whatever the
//! table's size, and a slow client slows the reader instead of filling memory. A client
//! that goes away ends the export at its next chunk. At most [`MAX_CONCURRENT_EXPORTS`]
//! run at once (a third answers 429), and each ends after [`EXPORT_DEADLINE`] (the body
//! is then cut short, which the client sees as a truncated chunked body).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::api::{check_query_keys, query_map};
use super::openapi::ErrorBody;
use super::{ApiError, HttpState};
use crate::domain::now_ts;
use crate::store::export::{self as store, ExportError, ExportFormat, ExportKind, ExportQuery};

/// Exports running at once; more answer 429.
pub const MAX_CONCURRENT_EXPORTS: usize = 2;
/// The longest one export may take, reading and sending.
pub const EXPORT_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Bytes per body chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between the reader and the client.
const CHANNEL_CHUNKS: usize = 4;

impl From<ExportError> for ApiError {
    fn from(err: ExportError) -> Self {
        match err {
            ExportError::UnknownKind(_) => ApiError::not_found(err.to_string()),
            ExportError::UnknownFormat(_)
            | ExportError::AccountNotApplicable(_)
            | ExportError::InvalidTime(_) => ApiError::bad_request(err.to_string()),
            ExportError::Store(err) => err.into(),
            ExportError::Sqlite(_) | ExportError::Postgres(_) | ExportError::Write(_) => {
                ApiError::internal(err.to_string())
            }
        }
    }
}

/// The `kind` path parameter: the names of [`ExportKind::ALL`].
pub struct ExportKindName;

impl utoipa::PartialSchema for ExportKindName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::openapi::string_enum(
            "What to export",
            ExportKind::ALL.iter().map(|kind| kind.as_str()),
        )
    }
}

impl utoipa::ToSchema for ExportKindName {
    fn name() -> std::borrow::Cow<'static, str> {
        "ExportKind".into()
    }
}

/// The `format` query parameter.
pub struct ExportFormatName;

impl utoipa::PartialSchema for ExportFormatName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::openapi::string_enum(
            "csv (RFC 4180 with a header row, the default) or jsonl (one JSON object per line)",
            [ExportFormat::Csv, ExportFormat::Jsonl].map(ExportFormat::as_str),
        )
    }
}

impl utoipa::ToSchema for ExportFormatName {
    fn name() -> std::borrow::Cow<'static, str> {
        "ExportFormat".into()
    }
}

/// `GET /api/export/{kind}`: a table family as CSV or JSON lines, streamed in constant
/// memory (admin only: orders carry buyer names).
#[utoipa::path(
    get,
    path = "/api/export/{kind}",
    tag = "export",
    params(
        ("kind" = ExportKindName, Path, description = "sales, orders, events, prices or jobs"),
        ("account" = Option<String>, Query, description = "Only this configured account's rows (not for prices)"),
        ("since" = Option<String>, Query, min_length = 1, description = "Only rows from this time on: RFC 3339, a UTC date (YYYY-MM-DD) or a duration back from now (`24h`, `7days`)"),
        ("format" = Option<ExportFormatName>, Query, description = "csv (default) or jsonl"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The rows, streamed (chunked); a body cut short means the export failed or passed its deadline", headers(("Content-Disposition" = String, description = "attachment; filename=\"marketsync-KIND.FORMAT\"")), content(
            (String = "text/csv"),
            (String = "application/jsonl"),
        )),
        (status = 400, description = "An unknown format, a bad `since`, an `account` where the kind has none, or an unknown query parameter", body = ErrorBody),
        (status = 404, description = "Unknown kind or account", body = ErrorBody),
        (status = 429, description = "Two exports are running already (`too_many_exports`)", body = ErrorBody),
    ),
)]
pub async fn export(
    State(state): State<HttpState>,
    Path(kind): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["account", "since", "format"])?;
    let kind: ExportKind = kind.parse()?;
    let format = match query.get("format") {
        Some(text) => text.parse::<ExportFormat>()?,
        None => ExportFormat::Csv,
    };
    let since = match query.get("since") {
        Some(text) => Some(store::parse_since(text, now_ts())?),
        None => None,
    };
    let account = query.get("account").cloned();
    let export_query = ExportQuery::new(kind, account, since, format)?;
    if let Some(account) = &export_query.account {
        state.account(account)?;
    }
    let permit = state.exports.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_exports",
            format!("{MAX_CONCURRENT_EXPORTS} exports are running; retry when one has finished"),
        )
    })?;
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    let deadline = Instant::now() + EXPORT_DEADLINE;
    let ledger = state.ledger.clone();
    // A table the PostgreSQL store holds is read there.
    let hours = store::lives_in_postgres(export_query.kind).then(|| Arc::clone(&state.hours));
    // Ends when the rows are written, the client is gone or the deadline passed; its
    // panic (caught here) is logged and ends the body early.
    drop(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut sink = ChunkSender {
            sender,
            runtime,
            buffer: Vec::with_capacity(CHUNK_BYTES),
            deadline,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(pg) = hours.as_deref().and_then(|hours| hours.as_postgres()) {
                return pg.export(&export_query, &mut sink);
            }
            match ledger.path() {
                Some(path) => {
                    let conn = crate::store::sqlite::open_reader(path)?;
                    store::export(&conn, &export_query, &mut sink)
                }
                None => ledger.with_read_conn(|conn| store::export(conn, &export_query, &mut sink)),
            }
        }));
        let kind = export_query.kind.as_str();
        match outcome {
            Ok(Ok(rows)) => info!(kind, rows, "export sent"),
            Ok(Err(err)) if err.is_broken_pipe() => {
                debug!(kind, "export ended early: the client went away")
            }
            Ok(Err(err)) => {
                warn!(kind, error = %err, "export failed; the body was cut short");
                sink.fail(err.to_string());
            }
            Err(_) => {
                tracing::error!(kind, "export panicked; the body was cut short");
                sink.fail("the export panicked".to_string());
            }
        }
    }));
    let body = Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"marketsync-{kind}.{}\"",
        format.as_str()
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// A `Write` that sends full chunks into the body's channel, waiting (on the blocking
/// thread) while the channel is full, until the deadline.
struct ChunkSender {
    sender: mpsc::Sender<io::Result<Bytes>>,
    runtime: tokio::runtime::Handle,
    buffer: Vec<u8>,
    deadline: Instant,
}

impl ChunkSender {
    fn send(&mut self, chunk: io::Result<Bytes>) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let sent = self
            .runtime
            .block_on(tokio::time::timeout(left, self.sender.send(chunk)));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client closed the connection",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the export took longer than {}",
                    humantime::format_duration(EXPORT_DEADLINE)
                ),
            )),
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.send(Ok(chunk))
    }

    /// Ends the body with an error (the client sees a truncated chunked body).
    fn fail(&mut self, message: String) {
        self.buffer.clear();
        let _ = self.send(Err(io::Error::other(message)));
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}
