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
use crate::domain::{format_ts, HourWindow};
use wire::{encode_segment, error_for_status, is_expired_token, optional_ts, sanitize_code};

/// The report type of the vendor real-time sales report.
pub const VENDOR_RT_SALES_REPORT: &str = "GET_VENDOR_REAL_TIME_SALES_REPORT";

const OP_TOKEN: &str = "lwa_token";
const OP_CREATE_REPORT: &str = "createReport";
const OP_GET_REPORT: &str = "getReport";
const OP_GET_REPORT_DOCUMENT: &str = "getReportDocument";
const OP_DOWNLOAD: &str = "downloadDocument";
const OP_GET_REPORTS: &str = "getReports";
const OP_CANCEL_REPORT: &str = "cancelReport";
/// Most reports one getReports page may carry (the model's `pageSize` maximum).
pub const GET_REPORTS_MAX_PAGE: u32 = 100;

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

/// One report of a getReports page.
#[derive(Debug, Clone)]
pub struct ListedReport {
    pub status: ReportStatus,
    pub report_type: String,
    /// `createdTime`, unix seconds.
    pub created: Option<i64>,
    pub marketplace_ids: Vec<String>,
}

/// A getReports page.
#[derive(Debug, Clone, Default)]
pub struct ReportsPage {
    pub reports: Vec<ListedReport>,
    pub next_token: Option<String>,
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
    /// The daemon's own listen addresses: a document url pointing at one is refused.
    own_addresses: Vec<std::net::SocketAddr>,
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
            own_addresses: Vec::new(),
        }
    }

    /// The daemon's own listen addresses (its HTTP API): a document url pointing at one
    /// is refused (see [`crate::provider::check_document_url`]).
    pub fn with_own_addresses(mut self, own: Vec<std::net::SocketAddr>) -> Self {
        self.own_addresses = own;
        self
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

    /// getReports: one page of this selling partner's reports of `report_type` created
    /// since `created_since` (unix seconds), newest first, with the `nextToken` of the
    /// next page. `next_token` given: the page it names (Amazon accepts nothing else with
    /// it). A page longer than [`GET_REPORTS_MAX_PAGE`] or an entry that does not parse
    /// is refused as an invalid response.
    pub async fn get_reports(
        &self,
        report_type: &str,
        created_since: i64,
        next_token: Option<&str>,
    ) -> Result<ReportsPage, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Listed {
            report_id: String,
            report_type: Option<String>,
            processing_status: String,
            data_start_time: Option<String>,
            data_end_time: Option<String>,
            created_time: Option<String>,
            #[serde(default)]
            marketplace_ids: Vec<String>,
            report_document_id: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            reports: Vec<Listed>,
            next_token: Option<String>,
        }
        let query = match next_token {
            Some(token) => format!("nextToken={}", encode_segment(token)),
            None => format!(
                "reportTypes={}&pageSize={GET_REPORTS_MAX_PAGE}&createdSince={}",
                encode_segment(report_type),
                encode_segment(&format_ts(created_since))
            ),
        };
        let url = self.api_url(&format!("/reports/2021-06-30/reports?{query}"));
        let page: Page = self
            .call_json(OP_GET_REPORTS, Method::GET, &url, None)
            .await?;
        if page.reports.len() > GET_REPORTS_MAX_PAGE as usize {
            return Err(invalid(
                OP_GET_REPORTS,
                &format!(
                    "{} reports in one page; pageSize was {GET_REPORTS_MAX_PAGE}",
                    page.reports.len()
                ),
            ));
        }
        let mut reports = Vec::with_capacity(page.reports.len());
        for listed in page.reports {
            let Some(processing_status) = ProcessingStatus::parse(&listed.processing_status) else {
                return Err(invalid(
                    OP_GET_REPORTS,
                    &format!(
                        "unknown processingStatus {:?}",
                        clip(&listed.processing_status)
                    ),
                ));
            };
            reports.push(ListedReport {
                status: ReportStatus {
                    report_id: listed.report_id,
                    processing_status,
                    report_document_id: listed.report_document_id.filter(|id| !id.is_empty()),
                    data_start: optional_ts(
                        OP_GET_REPORTS,
                        "dataStartTime",
                        listed.data_start_time.as_deref(),
                    )?,
                    data_end: optional_ts(
                        OP_GET_REPORTS,
                        "dataEndTime",
                        listed.data_end_time.as_deref(),
                    )?,
                },
                report_type: listed.report_type.unwrap_or_default(),
                created: optional_ts(
                    OP_GET_REPORTS,
                    "createdTime",
                    listed.created_time.as_deref(),
                )?,
                marketplace_ids: listed.marketplace_ids,
            });
        }
        Ok(ReportsPage {
            reports,
            next_token: page.next_token.filter(|token| !token.is_empty()),
        })
    }

    /// cancelReport: asks Amazon to cancel a report that is still IN_QUEUE (Amazon
    /// refuses the others with a 400).
    pub async fn cancel_report(&self, report_id: &str) -> Result<(), ProviderError> {
        let url = self.api_url(&format!(
            "/reports/2021-06-30/reports/{}",
            encode_segment(report_id)
        ));
        self.call(OP_CANCEL_REPORT, Method::DELETE, &url, None)
            .await?;
        debug!(operation = OP_CANCEL_REPORT, report_id, "report cancelled");
        Ok(())
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
        // The url is pre-signed: the message names its host only.
        crate::provider::check_document_url(&document.url, &self.own_addresses)
            .map_err(|message| invalid(OP_GET_REPORT_DOCUMENT, &message))?;
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
        crate::provider::check_document_url(&document.url, &self.own_addresses)
            .map_err(|message| invalid(OP_DOWNLOAD, &message))?;
        // Pre-signed: no access token (it must not leak to the storage host). A large
        // document gets several call deadlines, still a total one.
        let deadline = crate::provider::call_deadline()
            .saturating_mul(crate::provider::DOWNLOAD_DEADLINE_FACTOR);
        let mut response = self
            .http
            .get(&document.url)
            .timeout(deadline)
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
        // Documents are sales data: readable by the daemon's user only.
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(dest).await.map_err(|err| {
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
                written = written.saturating_add(chunk.len() as u64);
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

    /// One SP-API call whose answer is JSON (see [`Self::call`]).
    async fn call_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ProviderError> {
        let bytes = self.call(operation, method, url, body).await?;
        serde_json::from_slice(&bytes).map_err(|err| {
            invalid(
                operation,
                &format!("response is not the expected json: {err}"),
            )
        })
    }

    /// One SP-API call with the access token, returning the (capped) body of a 2xx
    /// answer; a 403 for an expired token refreshes the token and retries once.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, ProviderError> {
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
                return read_capped(response, operation, MAX_JSON_BODY, "").await;
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

    /// Makes sure an access token is cached (fetching one from LWA when there is none
    /// or it is within 60 s of expiry). The report engine calls it before asking the
    /// quota for a createReport grant: a grant is taken to be spent when it is given, so
    /// a call must not then wait on LWA, or the provider's bucket sees it (and the calls
    /// granted while it waited) later than the model counted, and answers 429.
    pub async fn warm_token(&self) -> Result<(), ProviderError> {
        self.access_token().await.map(|_| ())
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

mod wire;

#[cfg(test)]
mod tests;
