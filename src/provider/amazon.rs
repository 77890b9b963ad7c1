//! Selling Partner API client: the Login with Amazon (LWA) token exchange and the Reports
//! API 2021-06-30 calls marketsync uses (createReport, getReport, getReportDocument and the
//! pre-signed document download). The wire formats are in `docs/spapi-wire.md`.
//!
//! The access token is cached and refreshed 60 seconds before it expires; a 403 saying the
//! token has expired drops it, refreshes once and retries the call once. Every failure is
//! a [`ProviderError`]: 429 from any call is [`ProviderError::QuotaExceeded`] (with
//! `Retry-After` and `x-amzn-RateLimit-Limit` when sent), 401/403 are
//! [`ProviderError::Auth`], other statuses [`ProviderError::Http`]. The latest
//! `x-amzn-RateLimit-Limit` seen on success is kept per operation for the quota model.
//!
//! Neither the credentials, the access token nor the pre-signed document URL ever appear
//! in errors or logs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex as StdMutex, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::{
    clip, invalid, rate_limit, read_capped, read_error_body, transport_error, CachedToken,
    ProviderError, TokenCache, MAX_JSON_BODY,
};
use crate::domain::{format_ts, parse_ts, HourWindow};

/// The report type of the vendor real-time sales report.
pub const VENDOR_RT_SALES_REPORT: &str = "GET_VENDOR_REAL_TIME_SALES_REPORT";

const OP_TOKEN: &str = "lwa_token";
const OP_CREATE_REPORT: &str = "createReport";
const OP_GET_REPORT: &str = "getReport";
const OP_GET_REPORT_DOCUMENT: &str = "getReportDocument";
const OP_DOWNLOAD: &str = "downloadDocument";

const ACCESS_TOKEN_HEADER: &str = "x-amz-access-token";
/// Used when the token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// LWA credentials of one selling partner. `Debug` redacts all three.
#[derive(Clone)]
pub struct LwaCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for LwaCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LwaCredentials")
            .field("client_id", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

/// Where the SP-API and the LWA token endpoint live.
#[derive(Debug, Clone)]
pub struct SpApiEndpoints {
    /// e.g. `https://sellingpartnerapi-na.amazon.com` or `http://127.0.0.1:4000`; a
    /// trailing slash is allowed.
    pub api_base: String,
    /// e.g. `https://api.amazon.com/auth/o2/token`.
    pub lwa_token_url: String,
}

/// `processingStatus` of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessingStatus {
    InQueue,
    InProgress,
    Done,
    /// No data for the window: there is no document.
    Cancelled,
    /// The report failed; `reportDocumentId` points at an error document.
    Fatal,
}

impl ProcessingStatus {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "IN_QUEUE" => ProcessingStatus::InQueue,
            "IN_PROGRESS" => ProcessingStatus::InProgress,
            "DONE" => ProcessingStatus::Done,
            "CANCELLED" => ProcessingStatus::Cancelled,
            "FATAL" => ProcessingStatus::Fatal,
            _ => return None,
        })
    }
}

/// The parts of a getReport answer marketsync uses.
#[derive(Debug, Clone)]
pub struct ReportStatus {
    pub report_id: String,
    pub processing_status: ProcessingStatus,
    pub report_document_id: Option<String>,
    /// `dataStartTime`, unix seconds.
    pub data_start: Option<i64>,
    /// `dataEndTime`, unix seconds.
    pub data_end: Option<i64>,
}

/// A getReportDocument answer. `url` is pre-signed and short-lived: never log it.
#[derive(Debug, Clone)]
pub struct ReportDocument {
    pub report_document_id: String,
    pub url: String,
    /// `compressionAlgorithm` was `GZIP`.
    pub gzip: bool,
}

/// An SP-API client for one selling partner. Share it via `Arc`; it is `Send + Sync`.
pub struct SpApiClient {
    http: reqwest::Client,
    endpoints: SpApiEndpoints,
    credentials: LwaCredentials,
    /// Held across the token request so concurrent callers refresh only once.
    token: TokenCache,
    /// Latest `x-amzn-RateLimit-Limit` per operation; never held across an await.
    rate_limits: StdMutex<HashMap<&'static str, f64>>,
    /// The TokenManager binding every call of this client asks first (the daemon sets
    /// it; see [`SpApiClient::with_pacer`]). `None`: unpaced (tools and tests).
    pacer: Option<crate::quota::Pacer>,
}

impl std::fmt::Debug for SpApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpApiClient")
            .field("endpoints", &self.endpoints)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl SpApiClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: SpApiEndpoints,
        credentials: LwaCredentials,
    ) -> Self {
        Self {
            http,
            endpoints,
            credentials,
            token: TokenCache::default(),
            rate_limits: StdMutex::new(HashMap::new()),
            pacer: None,
        }
    }

    /// Paces this client's SP-API calls through a TokenManager: the sync runner acquires
    /// from `pacer` before every createReport, getReport and getReportDocument, and feeds
    /// it `x-amzn-RateLimit-Limit` and 429s. Buckets are keyed `("amazon", operation,
    /// pacer.scope)`; the scope is the selling partner the credentials belong to. (The
    /// pre-signed document download is not an SP-API operation and has no bucket.)
    pub fn with_pacer(mut self, pacer: crate::quota::Pacer) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// The TokenManager binding, when the client is paced.
    pub fn pacer(&self) -> Option<&crate::quota::Pacer> {
        self.pacer.as_ref()
    }

    /// createReport for `window` in one marketplace; returns the reportId.
    pub async fn create_report(
        &self,
        report_type: &str,
        marketplace_id: &str,
        window: HourWindow,
    ) -> Result<String, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            report_id: String,
        }
        let body = serde_json::json!({
            "reportType": report_type,
            "marketplaceIds": [marketplace_id],
            "dataStartTime": format_ts(window.start),
            "dataEndTime": format_ts(window.end),
        });
        let url = self.api_url("/reports/2021-06-30/reports");
        let created: Created = self
            .call_json(OP_CREATE_REPORT, Method::POST, &url, Some(&body))
            .await?;
        if created.report_id.is_empty() {
            return Err(invalid(OP_CREATE_REPORT, "empty reportId"));
        }
        debug!(operation = OP_CREATE_REPORT, report_id = %created.report_id, report_type, marketplace_id, window = %window, "report requested");
        Ok(created.report_id)
    }

    /// getReport: the report's processing status and, once done, its document id.
    pub async fn get_report(&self, report_id: &str) -> Result<ReportStatus, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Report {
            report_id: String,
            processing_status: String,
            report_document_id: Option<String>,
            data_start_time: Option<String>,
            data_end_time: Option<String>,
        }
        let url = self.api_url(&format!(
            "/reports/2021-06-30/reports/{}",
            encode_segment(report_id)
        ));
        let report: Report = self
            .call_json(OP_GET_REPORT, Method::GET, &url, None)
            .await?;
        if report.report_id != report_id {
            return Err(invalid(
                OP_GET_REPORT,
                &format!(
                    "asked for report {report_id} but got {}",
                    clip(&report.report_id)
                ),
            ));
        }
        let Some(processing_status) = ProcessingStatus::parse(&report.processing_status) else {
            return Err(invalid(
                OP_GET_REPORT,
                &format!(
                    "unknown processingStatus {:?}",
                    clip(&report.processing_status)
                ),
            ));
        };
        let data_start = optional_ts(
            OP_GET_REPORT,
            "dataStartTime",
            report.data_start_time.as_deref(),
        )?;
        let data_end = optional_ts(
            OP_GET_REPORT,
            "dataEndTime",
            report.data_end_time.as_deref(),
        )?;
        let report_document_id = report.report_document_id.filter(|id| !id.is_empty());
        debug!(
            operation = OP_GET_REPORT,
            report_id = %report_id,
            status = ?processing_status,
            report_document_id = report_document_id.as_deref().unwrap_or(""),
            "report status"
        );
        Ok(ReportStatus {
            report_id: report.report_id,
            processing_status,
            report_document_id,
            data_start,
            data_end,
        })
    }

    /// getReportDocument: the pre-signed download URL and compression of a document.
    pub async fn get_report_document(
        &self,
        report_document_id: &str,
    ) -> Result<ReportDocument, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Document {
            report_document_id: String,
            url: String,
            compression_algorithm: Option<String>,
        }
        let url = self.api_url(&format!(
            "/reports/2021-06-30/documents/{}",
            encode_segment(report_document_id)
        ));
        let document: Document = self
            .call_json(OP_GET_REPORT_DOCUMENT, Method::GET, &url, None)
            .await?;
        if document.url.is_empty() {
            return Err(invalid(OP_GET_REPORT_DOCUMENT, "empty document url"));
        }
        let gzip = match document.compression_algorithm.as_deref() {
            None => false,
            Some(algorithm) if algorithm.eq_ignore_ascii_case("GZIP") => true,
            Some(other) => {
                return Err(invalid(
                    OP_GET_REPORT_DOCUMENT,
                    &format!("unsupported compressionAlgorithm {:?}", clip(other)),
                ))
            }
        };
        debug!(
            operation = OP_GET_REPORT_DOCUMENT,
            report_document_id, gzip, "report document located"
        );
        Ok(ReportDocument {
            report_document_id: document.report_document_id,
            url: document.url,
            gzip,
        })
    }

    /// Streams the document body as-is (still compressed) into `dest` (create/truncate),
    /// returning bytes written. Never buffers the whole body in memory; fails with
    /// `InvalidResponse` if the body exceeds `max_bytes`. On failure `dest` is removed.
    pub async fn download_document(
        &self,
        document: &ReportDocument,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, ProviderError> {
        // Pre-signed: no access token (it must not leak to the storage host).
        let mut response = self
            .http
            .get(&document.url)
            .send()
            .await
            .map_err(|err| transport_error(OP_DOWNLOAD, err))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            return Err(error_for_status(OP_DOWNLOAD, status, &headers, &body));
        }
        self.record_rate_limit(OP_DOWNLOAD, response.headers());
        if let Some(length) = response.content_length() {
            if length > max_bytes {
                return Err(invalid(
                    OP_DOWNLOAD,
                    &format!("document is {length} bytes, over the {max_bytes} byte limit"),
                ));
            }
        }
        let file = tokio::fs::File::create(dest).await.map_err(|err| {
            invalid(
                OP_DOWNLOAD,
                &format!("cannot create {}: {err}", dest.display()),
            )
        })?;
        let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, file);
        let streamed = async {
            let mut written: u64 = 0;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|err| transport_error(OP_DOWNLOAD, err))?
            {
                written += chunk.len() as u64;
                if written > max_bytes {
                    return Err(invalid(
                        OP_DOWNLOAD,
                        &format!("document exceeds the {max_bytes} byte limit"),
                    ));
                }
                writer.write_all(&chunk).await.map_err(|err| {
                    invalid(
                        OP_DOWNLOAD,
                        &format!("cannot write {}: {err}", dest.display()),
                    )
                })?;
            }
            writer.flush().await.map_err(|err| {
                invalid(
                    OP_DOWNLOAD,
                    &format!("cannot write {}: {err}", dest.display()),
                )
            })?;
            Ok(written)
        }
        .await;
        drop(writer);
        match streamed {
            Ok(written) => {
                debug!(operation = OP_DOWNLOAD, report_document_id = %document.report_document_id, bytes = written, "document downloaded");
                Ok(written)
            }
            Err(err) => {
                if let Err(remove) = tokio::fs::remove_file(dest).await {
                    debug!(operation = OP_DOWNLOAD, path = %dest.display(), error = %remove, "cannot remove partial document");
                }
                Err(err)
            }
        }
    }

    /// The latest `x-amzn-RateLimit-Limit` (requests per second) seen on a successful
    /// call of `operation` (e.g. `"getReport"`).
    pub fn observed_rate_limit(&self, operation: &str) -> Option<f64> {
        self.rate_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(operation)
            .copied()
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoints.api_base.trim_end_matches('/'))
    }

    fn record_rate_limit(&self, operation: &'static str, headers: &HeaderMap) {
        if let Some(limit) = rate_limit(headers) {
            self.rate_limits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(operation, limit);
        }
    }

    /// One SP-API call with the access token; a 403 for an expired token refreshes the
    /// token and retries once.
    async fn call_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ProviderError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(ACCESS_TOKEN_HEADER, token.as_str())
                .header(ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|err| transport_error(operation, err))?;
            let status = response.status();
            if status.is_success() {
                self.record_rate_limit(operation, response.headers());
                let bytes = read_capped(response, operation, MAX_JSON_BODY, "").await?;
                return serde_json::from_slice(&bytes).map_err(|err| {
                    invalid(
                        operation,
                        &format!("response is not the expected json: {err}"),
                    )
                });
            }
            let headers = response.headers().clone();
            let text = read_error_body(response).await;
            if status == StatusCode::FORBIDDEN && !refreshed && is_expired_token(&text) {
                debug!(
                    operation,
                    "access token expired; refreshing it and retrying once"
                );
                self.token.forget(&token).await;
                refreshed = true;
                continue;
            }
            return Err(error_for_status(operation, status, &headers, &text));
        }
    }

    /// The cached access token, refreshed when it is within 60 s of expiry.
    async fn access_token(&self) -> Result<String, ProviderError> {
        self.token.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<CachedToken, ProviderError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        #[derive(Deserialize)]
        struct TokenError {
            error: Option<String>,
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", self.credentials.refresh_token.as_str()),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.as_str()),
        ];
        let response = self
            .http
            .post(&self.endpoints.lwa_token_url)
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|err| transport_error(OP_TOKEN, err))?;
        let status = response.status();
        if status.is_success() {
            let bytes = read_capped(response, OP_TOKEN, MAX_JSON_BODY, "").await?;
            // The body holds the token: describe a bad one by position only.
            let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|err| {
                invalid(
                    OP_TOKEN,
                    &format!(
                        "token response is not the expected json (line {}, column {})",
                        err.line(),
                        err.column()
                    ),
                )
            })?;
            if parsed.access_token.is_empty() {
                return Err(invalid(OP_TOKEN, "empty access_token"));
            }
            let lifetime = parsed
                .expires_in
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TOKEN_LIFETIME);
            debug!(
                operation = OP_TOKEN,
                expires_in = lifetime.as_secs(),
                "access token refreshed"
            );
            return Ok(CachedToken::new(parsed.access_token, lifetime));
        }
        let headers = response.headers().clone();
        let text = self.redact(&read_error_body(response).await);
        match status.as_u16() {
            400 | 401 | 403 => {
                let code = serde_json::from_str::<TokenError>(&text)
                    .ok()
                    .and_then(|body| body.error)
                    .map(|code| sanitize_code(&code))
                    .unwrap_or_else(|| "unknown_error".to_string());
                Err(ProviderError::Auth {
                    operation: OP_TOKEN,
                    message: format!(
                        "lwa refused the refresh token exchange with http {}: {code}",
                        status.as_u16()
                    ),
                })
            }
            _ => Err(error_for_status(OP_TOKEN, status, &headers, &text)),
        }
    }

    /// Removes the credentials from text an endpoint sent back, should it echo them.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in [
            &self.credentials.client_secret,
            &self.credentials.refresh_token,
        ] {
            if !secret.is_empty() && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

fn optional_ts(
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

fn is_expired_token(body: &str) -> bool {
    body.to_ascii_lowercase()
        .contains("access token you provided has expired")
}

/// Maps a non-2xx answer to the error callers branch on, worded from SP-API's error
/// list: its message for a 429, `code: message (details)` for a refusal, the body else.
fn error_for_status(
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
    super::error_for_status(operation, status, headers, message, "")
}

#[derive(Deserialize)]
struct ErrorList {
    errors: Vec<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<String>,
    message: Option<String>,
    details: Option<String>,
}

fn first_api_error(body: &str) -> Option<ApiError> {
    serde_json::from_str::<ErrorList>(body)
        .ok()
        .and_then(|list| list.errors.into_iter().next())
}

/// `errors[0].message`, else the raw body (truncated).
fn quota_message(body: &str) -> String {
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
fn describe_error_body(body: &str) -> String {
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

fn xml_text<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

/// An LWA error code is a short identifier; anything else is cut down to one.
fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-')
        .take(64)
        .collect()
}

/// Percent-encodes one path segment (ids are normally safe already).
fn encode_segment(segment: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::extract::{Form, Path as UrlPath, State};
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    const CLIENT_ID: &str = "amzn1.application-oa2-client.test";
    const CLIENT_SECRET: &str = "super-secret-client-secret";
    const REFRESH_TOKEN: &str = "Atzr|super-secret-refresh-token";
    const START: i64 = 1_765_238_400; // 2025-12-09T00:00:00Z

    struct Fake {
        base: String,
        token_calls: AtomicUsize,
        api_calls: AtomicUsize,
        expires_in: AtomicU64,
        last_create: StdMutex<Option<serde_json::Value>>,
    }

    fn api_error(code: &str, message: &str, details: &str) -> serde_json::Value {
        serde_json::json!({"errors": [{"code": code, "message": message, "details": details}]})
    }

    fn token_of(headers: &AxumHeaders) -> String {
        headers
            .get(ACCESS_TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    fn unauthorized() -> Response {
        let body = api_error(
            "Unauthorized",
            "Access to requested resource is denied.",
            "",
        );
        (AxumStatus::FORBIDDEN, Json(body)).into_response()
    }

    async fn token(
        State(fake): State<Arc<Fake>>,
        Form(form): Form<HashMap<String, String>>,
    ) -> Response {
        let n = fake.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
        if field("grant_type") != "refresh_token" || field("client_id") != CLIENT_ID {
            return (
                AxumStatus::UNAUTHORIZED,
                Json(serde_json::json!({"error": "invalid_client"})),
            )
                .into_response();
        }
        if field("refresh_token") != REFRESH_TOKEN || field("client_secret") != CLIENT_SECRET {
            let body = serde_json::json!({
                "error": "invalid_grant",
                "error_description": format!("bad refresh token {}", field("refresh_token")),
            });
            return (AxumStatus::BAD_REQUEST, Json(body)).into_response();
        }
        let body = serde_json::json!({
            "access_token": format!("Atza|tok-{n}"),
            "refresh_token": REFRESH_TOKEN,
            "token_type": "bearer",
            "expires_in": fake.expires_in.load(Ordering::SeqCst),
        });
        Json(body).into_response()
    }

    async fn create_report(
        State(fake): State<Arc<Fake>>,
        headers: AxumHeaders,
        Json(body): Json<serde_json::Value>,
    ) -> Response {
        fake.api_calls.fetch_add(1, Ordering::SeqCst);
        if !token_of(&headers).starts_with("Atza|tok-") {
            return unauthorized();
        }
        *fake.last_create.lock().unwrap() = Some(body);
        (
            AxumStatus::ACCEPTED,
            [("x-amzn-RateLimit-Limit", "0.0167")],
            Json(serde_json::json!({"reportId": "50001"})),
        )
            .into_response()
    }

    async fn get_report(
        State(fake): State<Arc<Fake>>,
        headers: AxumHeaders,
        UrlPath(id): UrlPath<String>,
    ) -> Response {
        fake.api_calls.fetch_add(1, Ordering::SeqCst);
        let token = token_of(&headers);
        if !token.starts_with("Atza|tok-") {
            return unauthorized();
        }
        let report = |status: &str| {
            serde_json::json!({
                "reportId": id,
                "reportType": VENDOR_RT_SALES_REPORT,
                "dataStartTime": "2025-12-09T00:00:00Z",
                "dataEndTime": "2025-12-09T06:00:00Z",
                "marketplaceIds": ["ATVPDKIKX0DER"],
                "processingStatus": status,
                "createdTime": "2025-12-09T07:00:00Z",
                "reportDocumentId": "amzn1.spdoc.1.4.na.doc-1",
            })
        };
        match id.as_str() {
            "expire-once" if token == "Atza|tok-1" => {
                let body = api_error(
                    "Unauthorized",
                    "Access to requested resource is denied.",
                    "The access token you provided has expired.",
                );
                (AxumStatus::FORBIDDEN, Json(body)).into_response()
            }
            "always-expired" => {
                let body = api_error(
                    "Unauthorized",
                    "Access to requested resource is denied.",
                    "The access token you provided has expired.",
                );
                (AxumStatus::FORBIDDEN, Json(body)).into_response()
            }
            "denied" => unauthorized(),
            "quota" => {
                let body = api_error(
                    "QuotaExceeded",
                    "You exceeded your quota for the requested resource.",
                    "",
                );
                (
                    AxumStatus::TOO_MANY_REQUESTS,
                    [("Retry-After", "7"), ("x-amzn-RateLimit-Limit", "2.0")],
                    Json(body),
                )
                    .into_response()
            }
            "boom" => {
                let body = api_error(
                    "InternalFailure",
                    "We encountered an internal error. Please try again.",
                    "",
                );
                (AxumStatus::INTERNAL_SERVER_ERROR, Json(body)).into_response()
            }
            "weird" => Json(report("EXPLODED")).into_response(),
            "garbage" => (AxumStatus::OK, "{\"reportId\": ").into_response(),
            _ => ([("x-amzn-RateLimit-Limit", "2.0")], Json(report("DONE"))).into_response(),
        }
    }

    async fn get_document(
        State(fake): State<Arc<Fake>>,
        headers: AxumHeaders,
        UrlPath(id): UrlPath<String>,
    ) -> Response {
        fake.api_calls.fetch_add(1, Ordering::SeqCst);
        if !token_of(&headers).starts_with("Atza|tok-") {
            return unauthorized();
        }
        let mut body = serde_json::json!({
            "reportDocumentId": id,
            "url": format!("{}/download/{id}?X-Amz-Signature=secret", fake.base),
        });
        if id != "plain" {
            body["compressionAlgorithm"] = serde_json::json!("GZIP");
        }
        Json(body).into_response()
    }

    async fn download(headers: AxumHeaders, UrlPath(id): UrlPath<String>) -> Response {
        if headers.contains_key(ACCESS_TOKEN_HEADER) {
            return (
                AxumStatus::BAD_REQUEST,
                "access token sent to the storage host",
            )
                .into_response();
        }
        match id.as_str() {
            "expired" => (
                AxumStatus::FORBIDDEN,
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
            )
                .into_response(),
            "quota" => (
                AxumStatus::TOO_MANY_REQUESTS,
                [("Retry-After", "3")],
                "SlowDown",
            )
                .into_response(),
            _ => {
                // 40 chunks of 5000 bytes, without a Content-Length.
                let chunks = (0..40u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 5000])));
                (
                    [("x-amzn-RateLimit-Limit", "10")],
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
                    .into_response()
            }
        }
    }

    async fn start_fake() -> Arc<Fake> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Arc::new(Fake {
            base,
            token_calls: AtomicUsize::new(0),
            api_calls: AtomicUsize::new(0),
            expires_in: AtomicU64::new(3600),
            last_create: StdMutex::new(None),
        });
        let app = Router::new()
            .route("/auth/o2/token", post(token))
            .route("/reports/2021-06-30/reports", post(create_report))
            .route("/reports/2021-06-30/reports/{id}", get(get_report))
            .route("/reports/2021-06-30/documents/{id}", get(get_document))
            .route("/download/{id}", get(download))
            .with_state(Arc::clone(&fake));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        fake
    }

    fn client_with(fake: &Fake, refresh_token: &str) -> SpApiClient {
        SpApiClient::new(
            reqwest::Client::new(),
            SpApiEndpoints {
                api_base: format!("{}/", fake.base),
                lwa_token_url: format!("{}/auth/o2/token", fake.base),
            },
            LwaCredentials {
                client_id: CLIENT_ID.to_string(),
                client_secret: CLIENT_SECRET.to_string(),
                refresh_token: refresh_token.to_string(),
            },
        )
    }

    fn client(fake: &Fake) -> SpApiClient {
        client_with(fake, REFRESH_TOKEN)
    }

    #[test]
    fn client_is_send_sync_and_debug_redacts() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SpApiClient>();
        let credentials = LwaCredentials {
            client_id: CLIENT_ID.to_string(),
            client_secret: CLIENT_SECRET.to_string(),
            refresh_token: REFRESH_TOKEN.to_string(),
        };
        let text = format!("{credentials:?}");
        assert!(
            !text.contains(CLIENT_SECRET)
                && !text.contains(REFRESH_TOKEN)
                && !text.contains(CLIENT_ID),
            "{text}"
        );
        assert!(text.contains("<redacted>"));
    }

    #[tokio::test]
    async fn token_is_cached_across_calls() {
        let fake = start_fake().await;
        let client = client(&fake);
        let window = HourWindow::new(START, START + 6 * 3600);
        let id = client
            .create_report(VENDOR_RT_SALES_REPORT, "ATVPDKIKX0DER", window)
            .await
            .unwrap();
        assert_eq!(id, "50001");
        let status = client.get_report(&id).await.unwrap();
        assert_eq!(status.processing_status, ProcessingStatus::Done);
        assert_eq!(
            status.report_document_id.as_deref(),
            Some("amzn1.spdoc.1.4.na.doc-1")
        );
        assert_eq!(status.data_start, Some(START));
        assert_eq!(status.data_end, Some(START + 6 * 3600));
        assert_eq!(
            fake.token_calls.load(Ordering::SeqCst),
            1,
            "one token exchange for two calls"
        );
        assert_eq!(fake.api_calls.load(Ordering::SeqCst), 2);
        let sent = fake.last_create.lock().unwrap().clone().unwrap();
        assert_eq!(
            sent,
            serde_json::json!({
                "reportType": "GET_VENDOR_REAL_TIME_SALES_REPORT",
                "marketplaceIds": ["ATVPDKIKX0DER"],
                "dataStartTime": "2025-12-09T00:00:00Z",
                "dataEndTime": "2025-12-09T06:00:00Z",
            })
        );
        assert_eq!(client.observed_rate_limit("createReport"), Some(0.0167));
        assert_eq!(client.observed_rate_limit("getReport"), Some(2.0));
        assert_eq!(client.observed_rate_limit("getReportDocument"), None);
    }

    #[tokio::test]
    async fn token_within_the_refresh_margin_is_refreshed() {
        let fake = start_fake().await;
        fake.expires_in.store(30, Ordering::SeqCst); // already inside the 60 s margin
        let client = client(&fake);
        client.get_report("1").await.unwrap();
        client.get_report("2").await.unwrap();
        assert_eq!(fake.token_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_token_is_refreshed_once_and_the_call_retried() {
        let fake = start_fake().await;
        let client = client(&fake);
        let status = client.get_report("expire-once").await.unwrap();
        assert_eq!(status.processing_status, ProcessingStatus::Done);
        assert_eq!(fake.token_calls.load(Ordering::SeqCst), 2);
        assert_eq!(fake.api_calls.load(Ordering::SeqCst), 2);

        // A token that stays "expired" after the refresh is an auth failure, not a loop.
        let err = client.get_report("always-expired").await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::Auth {
                    operation: "getReport",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(fake.token_calls.load(Ordering::SeqCst), 3);
        assert_eq!(fake.api_calls.load(Ordering::SeqCst), 4);

        // Any other 403 is an auth failure without a refresh.
        let err = client.get_report("denied").await.unwrap_err();
        assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
        assert_eq!(fake.token_calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn quota_exceeded_carries_retry_after_and_message() {
        let fake = start_fake().await;
        let client = client(&fake);
        let err = client.get_report("quota").await.unwrap_err();
        match &err {
            ProviderError::QuotaExceeded {
                operation,
                retry_after,
                rate_limit,
                message,
            } => {
                assert_eq!(*operation, "getReport");
                assert_eq!(*retry_after, Some(Duration::from_secs(7)));
                assert_eq!(*rate_limit, Some(2.0));
                assert_eq!(
                    message,
                    "You exceeded your quota for the requested resource."
                );
            }
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        assert!(err.is_quota());
    }

    #[tokio::test]
    async fn server_error_is_http() {
        let fake = start_fake().await;
        let client = client(&fake);
        let err = client.get_report("boom").await.unwrap_err();
        match &err {
            ProviderError::Http {
                operation,
                status,
                body,
            } => {
                assert_eq!(*operation, "getReport");
                assert_eq!(*status, 500);
                assert!(body.contains("InternalFailure"), "{body}");
            }
            other => panic!("expected Http, got {other:?}"),
        }
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn bad_answers_are_invalid_responses() {
        let fake = start_fake().await;
        let client = client(&fake);
        for id in ["weird", "garbage"] {
            let err = client.get_report(id).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ProviderError::InvalidResponse {
                        operation: "getReport",
                        ..
                    }
                ),
                "{id}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn refused_refresh_token_is_auth_naming_the_lwa_code() {
        let fake = start_fake().await;
        let client = client_with(&fake, "Atzr|wrong-and-secret");
        let err = client.get_report("1").await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                ProviderError::Auth {
                    operation: "lwa_token",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(text.contains("invalid_grant"), "{text}");
        assert!(
            !text.contains("wrong-and-secret") && !text.contains(CLIENT_SECRET),
            "{text}"
        );
        assert_eq!(fake.api_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transport() {
        // Bind then drop a listener: nothing listens on that port any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = SpApiClient::new(
            reqwest::Client::new(),
            SpApiEndpoints {
                api_base: format!("http://{addr}"),
                lwa_token_url: format!("http://{addr}/auth/o2/token"),
            },
            LwaCredentials {
                client_id: CLIENT_ID.to_string(),
                client_secret: CLIENT_SECRET.to_string(),
                refresh_token: REFRESH_TOKEN.to_string(),
            },
        );
        let err = client.get_report("1").await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::Transport {
                    operation: "lwa_token",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn download_streams_the_body_to_a_file() {
        let fake = start_fake().await;
        let client = client(&fake);
        let dir = tempfile::tempdir().unwrap();
        let document = client
            .get_report_document("amzn1.spdoc.1.4.na.doc-1")
            .await
            .unwrap();
        assert!(document.gzip);
        assert_eq!(document.report_document_id, "amzn1.spdoc.1.4.na.doc-1");
        let plain = client.get_report_document("plain").await.unwrap();
        assert!(!plain.gzip);

        let dest = dir.path().join("doc.json.gz");
        std::fs::write(&dest, b"stale content that must be truncated away").unwrap();
        let written = client
            .download_document(&document, &dest, 1 << 20)
            .await
            .unwrap();
        assert_eq!(written, 200_000);
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(bytes.len(), 200_000);
        assert!(bytes
            .chunks(5000)
            .enumerate()
            .all(|(i, chunk)| chunk.iter().all(|b| usize::from(*b) == i)));
        assert_eq!(client.observed_rate_limit("downloadDocument"), Some(10.0));
        assert_eq!(fake.token_calls.load(Ordering::SeqCst), 1);

        // Over the limit: InvalidResponse, and no partial file left behind.
        let capped = dir.path().join("capped.json.gz");
        let err = client
            .download_document(&document, &capped, 50_000)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::InvalidResponse {
                    operation: "downloadDocument",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!capped.exists());
    }

    #[tokio::test]
    async fn download_errors_map_to_provider_errors() {
        let fake = start_fake().await;
        let client = client(&fake);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("doc.json.gz");

        let expired = client.get_report_document("expired").await.unwrap();
        let err = client
            .download_document(&expired, &dest, 1 << 20)
            .await
            .unwrap_err();
        match &err {
            ProviderError::Auth { operation, message } => {
                assert_eq!(*operation, "downloadDocument");
                assert!(message.contains("Request has expired"), "{message}");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert!(!err.to_string().contains("X-Amz-Signature"), "{err}");

        let quota = client.get_report_document("quota").await.unwrap();
        let err = client
            .download_document(&quota, &dest, 1 << 20)
            .await
            .unwrap_err();
        match err {
            ProviderError::QuotaExceeded {
                operation,
                retry_after,
                message,
                ..
            } => {
                assert_eq!(operation, "downloadDocument");
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert_eq!(message, "SlowDown");
            }
            other => panic!("expected QuotaExceeded, got {other:?}"),
        }
        assert!(!dest.exists());
    }
}
