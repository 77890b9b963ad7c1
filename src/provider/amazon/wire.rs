//! Reading what SP-API sends back: error statuses and bodies (JSON or XML) mapped to
//! [`ProviderError`]s, optional timestamps, and path segments for URLs.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::domain::parse_ts;
use crate::provider::{clip, invalid, ProviderError};

pub(super) fn optional_ts(
    operation: &'static str,
    field: &str,
    text: Option<&str>,
) -> Result<Option<i64>, ProviderError> {
    match text {
        None => Ok(None),
        Some(text) => parse_ts(text).map(Some).ok_or_else(|| {
            invalid(
                operation,
                &format!("{field} is not an rfc 3339 timestamp: {:?}", clip(text)),
            )
        }),
    }
}

pub(super) fn is_expired_token(body: &str) -> bool {
    body.to_ascii_lowercase()
        .contains("access token you provided has expired")
}

/// Maps a non-2xx answer to the error callers branch on, worded from SP-API's error
/// list: its message for a 429, `code: message (details)` for a refusal, the body else.
pub(super) fn error_for_status(
    operation: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderError {
    let message = match status.as_u16() {
        429 => quota_message(body),
        401 | 403 => describe_error_body(body),
        _ => clip(body.trim()),
    };
    crate::provider::error_for_status(operation, status, headers, message, "")
}

#[derive(Deserialize)]
pub(super) struct ErrorList {
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
pub(super) struct ApiError {
    code: Option<String>,
    message: Option<String>,
    details: Option<String>,
}

pub(super) fn first_api_error(body: &str) -> Option<ApiError> {
    serde_json::from_str::<ErrorList>(body)
        .ok()
        .and_then(|list| list.errors.into_iter().next())
}

/// `errors[0].message`, else the raw body (truncated).
pub(super) fn quota_message(body: &str) -> String {
    match first_api_error(body)
        .and_then(|error| error.message)
        .filter(|m| !m.is_empty())
    {
        Some(message) => clip(&message),
        None if body.trim().is_empty() => "http 429 without a body".to_string(),
        None => clip(body.trim()),
    }
}

/// `code: message (details)` from an SP-API error list, `Code: Message` from an S3 XML
/// error, else the raw body (truncated).
pub(super) fn describe_error_body(body: &str) -> String {
    if let Some(error) = first_api_error(body) {
        let mut parts = Vec::new();
        for part in [error.code, error.message, error.details]
            .into_iter()
            .flatten()
        {
            if !part.is_empty() {
                parts.push(part);
            }
        }
        if !parts.is_empty() {
            return clip(&parts.join(": "));
        }
    }
    if let Some(message) = xml_text(body, "Message") {
        return match xml_text(body, "Code") {
            Some(code) => clip(&format!("{code}: {message}")),
            None => clip(message),
        };
    }
    if body.trim().is_empty() {
        return "no response body".to_string();
    }
    clip(body.trim())
}

pub(super) fn xml_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

/// An LWA error code is a short identifier; anything else is cut down to one.
pub(super) fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-')
        .take(64)
        .collect()
}

/// Percent-encodes one path segment (ids are normally safe already).
pub(super) fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
