//! Streaming parser for report documents.
//!
//! [`read_vendor_sales_document`] reads a `GET_VENDOR_REAL_TIME_SALES_REPORT` document
//! (see `docs/spapi-wire.md`) from a file, gunzipping on the fly, and hands its rows to a
//! callback one at a time: the document is never held in memory. It is driven by serde's
//! `DeserializeSeed`/`Visitor` machinery over `serde_json::Deserializer::from_reader`, so
//! memory stays flat whatever the document size.
//!
//! The document is validated while it streams: the `reportSpecification` window must be
//! the requested one (whichever order the top-level keys come in), every full-hour row
//! must lie inside that window and carry the required fields with the right types, and
//! the JSON and gzip streams must be complete. Rows already handed out before an error is
//! found are the caller's to discard: the daemon stages them to a file in a first pass
//! ([`stage_vendor_sales_document`]) and only a document that validated whole reaches the
//! store ([`read_staged_rows`]).
//!
//! Every read is bounded ([`DocumentLimits`], enforced by [`limits::GuardedReader`] on the
//! decompressed bytes before serde_json sees them): the decompressed size is capped by the
//! stream's `max_document_bytes`, one JSON string by [`MAX_STRING_BYTES`] and one number or
//! literal by [`MAX_NUMBER_BYTES`]; breaking one is [`ReportError::TooLarge`]. Containers the
//! parser does not need are skipped iteratively, so nesting costs no stack.
//!
//! [`read_error_document`] reads the small `{"errorDetails":"…"}` document that FATAL
//! reports point at.
//!
//! Layer 2 of docs/architecture.md. May use: `domain`. May not touch: the database or the
//! network.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use flate2::bufread::GzDecoder;
use serde::de::DeserializeSeed;

use crate::domain::{HourWindow, SalesRow};
use limits::GuardedReader;
pub use limits::{
    DocumentLimits, LimitExceeded, DEFAULT_MAX_DOCUMENT_BYTES, MAX_NUMBER_BYTES, MAX_STRING_BYTES,
};
use seeds::DocumentSeed;
pub use staging::{
    read_staged_rows, remove_file_if_present, stage_spilling_after, stage_vendor_sales_document,
    staging_path, StagedRows, MEMORY_STAGING_BYTES,
};
use validate::ParseState;

/// Read buffer size; large enough that the gzip decoder is not called per token.
const BUFFER_BYTES: usize = 64 * 1024;
/// Longest error document text returned (and raw text quoted in errors), in characters.
const MAX_ERROR_TEXT: usize = 2000;

/// Why a document was rejected. Rows handed out before the error must be discarded.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The gzip stream or the JSON ends early (an interrupted download).
    #[error("document truncated: {0}")]
    Truncated(String),
    /// Invalid JSON, a corrupt gzip stream, or rows missing fields or with wrong types.
    #[error("malformed document: {0}")]
    Malformed(String),
    /// The document covers another window than the one requested.
    #[error("document window mismatch: {0}")]
    WindowMismatch(String),
    /// The document broke a size cap (decompressed size, one string, one number).
    #[error("document too large: {0}")]
    TooLarge(LimitExceeded),
    /// Reading the file failed (or a row callback failed with an io error).
    #[error("document io error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a document held, once fully read and validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportSummary {
    /// `reportSpecification.dataStartTime`, unix seconds.
    pub data_start: Option<i64>,
    /// `reportSpecification.dataEndTime`, unix seconds.
    pub data_end: Option<i64>,
    /// Full-hour rows handed to the callback.
    pub rows: u64,
    /// Rows skipped because they do not cover exactly one aligned hour.
    pub skipped_partial: u64,
}

/// [`read_vendor_sales_document_with`] under the default [`DocumentLimits`].
pub fn read_vendor_sales_document(
    path: &Path,
    gzip: bool,
    expected: HourWindow,
    on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<ReportSummary, ReportError> {
    read_vendor_sales_document_with(path, gzip, expected, DocumentLimits::default(), on_row)
}

/// Reads the document at `path` (gunzipping when `gzip`) under `limits`, calls `on_row`
/// for each full-hour row in document order, and validates the whole document (see the
/// module docs). An error returned by `on_row` aborts parsing and is returned as is.
pub fn read_vendor_sales_document_with(
    path: &Path,
    gzip: bool,
    expected: HourWindow,
    limits: DocumentLimits,
    on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<ReportSummary, ReportError> {
    let file = File::open(path)?;
    read_vendor_sales_from(file, gzip, expected, limits, on_row)
}

/// Like [`read_vendor_sales_document_with`], from any reader (the fuzz target's entry).
pub fn read_vendor_sales_from(
    source: impl Read,
    gzip: bool,
    expected: HourWindow,
    limits: DocumentLimits,
    on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<ReportSummary, ReportError> {
    let reader = guarded(source, gzip, limits);
    let mut state = ParseState {
        expected,
        on_row,
        summary: ReportSummary::default(),
        failure: None,
        spec_seen: false,
        data_seen: false,
        current_row: None,
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let parsed = DocumentSeed { state: &mut state }.deserialize(&mut deserializer);
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    if let Err(err) = parsed {
        return Err(classify_json_error(err, state.current_row));
    }
    // Trailing characters, and the rest of the gzip stream (its trailer and checksum).
    deserializer
        .end()
        .map_err(|err| classify_json_error(err, None))?;
    if !state.spec_seen {
        return Err(ReportError::Malformed(
            "document has no reportSpecification".to_string(),
        ));
    }
    if !state.data_seen {
        return Err(ReportError::Malformed(
            "document has no reportData".to_string(),
        ));
    }
    Ok(state.summary)
}

/// FATAL reports point at an error document `{"errorDetails":"…"}`; returns that text, or
/// the raw text (truncated) when the document is not that shape.
pub fn read_error_document(path: &Path, gzip: bool) -> Result<String, ReportError> {
    // Raw text, not necessarily JSON: only the size is capped (the prefix read below).
    let limits = DocumentLimits {
        max_string_bytes: usize::MAX,
        max_number_bytes: usize::MAX,
        ..DocumentLimits::default()
    };
    let mut reader = guarded(File::open(path)?, gzip, limits);
    // Error documents are small; read at most a bounded prefix.
    let mut bytes = Vec::new();
    let limit = 64 * 1024;
    (&mut reader)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(classify_io_error)?;
    if bytes.len() as u64 <= limit {
        #[derive(serde::Deserialize)]
        struct ErrorDocument {
            #[serde(rename = "errorDetails")]
            error_details: String,
        }
        if let Ok(document) = serde_json::from_slice::<ErrorDocument>(&bytes) {
            return Ok(truncate_chars(
                document.error_details.trim(),
                MAX_ERROR_TEXT,
            ));
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(truncate_chars(text.trim(), MAX_ERROR_TEXT))
}

/// The outer `BufReader` is a concrete type so serde_json's byte-at-a-time reads stay
/// cheap; the boxed inner reader (decoder, then the guard counting decompressed bytes) is
/// only called once per buffer refill.
fn guarded<'a>(
    source: impl Read + 'a,
    gzip: bool,
    limits: DocumentLimits,
) -> BufReader<GuardedReader<Box<dyn Read + 'a>>> {
    let inner: Box<dyn Read + 'a> = if gzip {
        Box::new(GzDecoder::new(BufReader::with_capacity(
            BUFFER_BYTES,
            source,
        )))
    } else {
        Box::new(source)
    };
    BufReader::with_capacity(BUFFER_BYTES, GuardedReader::new(inner, limits))
}

/// Io errors from the decoder: an early end is truncation, corruption is malformation, a
/// passed cap is [`ReportError::TooLarge`].
fn classify_io_error(err: std::io::Error) -> ReportError {
    if let Some(exceeded) = limits::limit_of(&err) {
        return ReportError::TooLarge(exceeded.clone());
    }
    match err.kind() {
        ErrorKind::UnexpectedEof => ReportError::Truncated(format!("the stream ends early: {err}")),
        ErrorKind::InvalidInput | ErrorKind::InvalidData => {
            ReportError::Malformed(format!("corrupt gzip stream: {err}"))
        }
        _ => ReportError::Io(err),
    }
}

fn classify_json_error(err: serde_json::Error, row: Option<u64>) -> ReportError {
    let place = match row {
        Some(index) => format!(" in reportData row {index}"),
        None => String::new(),
    };
    match err.classify() {
        serde_json::error::Category::Io => classify_io_error(std::io::Error::from(err)),
        serde_json::error::Category::Eof => {
            ReportError::Truncated(format!("the json ends early{place}: {err}"))
        }
        serde_json::error::Category::Syntax => {
            ReportError::Malformed(format!("invalid json{place}: {err}"))
        }
        serde_json::error::Category::Data => {
            ReportError::Malformed(format!("unexpected json value{place}: {err}"))
        }
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

pub mod limits;
mod seeds;
mod staging;
mod validate;

#[cfg(test)]
mod tests;
