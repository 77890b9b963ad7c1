//! eBay REST client: the OAuth token exchange (client-credentials and refresh-token
//! grants) and size-capped GETs of the paged APIs the cursor streams read (Fulfillment
//! getOrders, Finances getTransactions, Post-Order return search). Wire formats:
//! `docs/ebay-wire.md`.
//!
//! The access token is cached and refreshed 60 seconds before it expires; a 401 or 403
//! drops it, fetches a fresh one and retries the call once. Errors are
//! [`ProviderError`]s: 429 is [`ProviderError::QuotaExceeded`] (with `Retry-After` when
//! sent), 401/403 after the retry and refused grants are [`ProviderError::Auth`], other
//! statuses [`ProviderError::Http`]. A success body is streamed and refused once it grows
//! past the caller's byte limit, so a huge page fails its window instead of the process.
//!
//! Neither the credentials nor the access token ever appear in errors or logs.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;

use super::{
    clip, invalid, read_capped, read_error_body, transport_error, CachedToken, ProviderError,
    TokenCache, MAX_ERROR_BODY,
};

/// Operation name of the token call (for errors).
pub const OP_TOKEN: &str = "ebayToken";
/// Used when the token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// What a page over the byte limit tells the operator to change.
const TOO_BIG_ADVICE: &str =
    "; nothing from it was applied (raise max_response_bytes or lower page_limit)";
/// The scope of the client-credentials grant.
const PUBLIC_SCOPE: &str = "https://api.ebay.com/oauth/api_scope";

/// OAuth credentials of an eBay application (and seller, with a refresh token).
/// `Debug` redacts every field.
#[derive(Clone)]
pub struct EbayCredentials {
    pub client_id: String,
    pub client_secret: String,
    /// The user's refresh token: refresh-token grant. `None`: the application's
    /// client-credentials grant.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for EbayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbayCredentials")
            .field("client_id", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where eBay's APIs and token endpoint live.
#[derive(Debug, Clone)]
pub struct EbayEndpoints {
    /// Fulfillment and Post-Order, e.g. `https://api.ebay.com` or the simulator.
    pub api_base: String,
    /// Finances: `https://apiz.ebay.com` in production, else `api_base`.
    pub finances_base: String,
    /// e.g. `https://api.ebay.com/identity/v1/oauth2/token`.
    pub token_url: String,
}

impl EbayEndpoints {
    /// Endpoints from the configured api base and token url; the Finances API moves to
    /// `apiz.` when the base is eBay's production or sandbox host.
    pub fn new(api_base: &str, token_url: &str) -> EbayEndpoints {
        let api_base = api_base.trim_end_matches('/').to_string();
        let finances_base = if api_base.ends_with("://api.ebay.com") {
            api_base.replace("://api.ebay.com", "://apiz.ebay.com")
        } else if api_base.ends_with("://api.sandbox.ebay.com") {
            api_base.replace("://api.sandbox.ebay.com", "://apiz.sandbox.ebay.com")
        } else {
            api_base.clone()
        };
        EbayEndpoints {
            api_base,
            finances_base,
            token_url: token_url.to_string(),
        }
    }
}

/// Which eBay API a call goes to: picks the host and the authorization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EbayApi {
    Fulfillment,
    Finances,
    /// Post-Order v2 takes the OAuth token as `Authorization: IAF <token>`.
    PostOrder,
}

/// An eBay client for one account. Share it via `Arc`; it is `Send + Sync`.
pub struct EbayClient {
    http: reqwest::Client,
    endpoints: EbayEndpoints,
    credentials: EbayCredentials,
    /// Sent as `X-EBAY-C-MARKETPLACE-ID`, e.g. `EBAY_US`.
    marketplace: String,
    /// Held across the token request so concurrent callers refresh only once.
    token: TokenCache,
}

impl std::fmt::Debug for EbayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbayClient")
            .field("endpoints", &self.endpoints)
            .field("credentials", &self.credentials)
            .field("marketplace", &self.marketplace)
            .finish_non_exhaustive()
    }
}

impl EbayClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: EbayEndpoints,
        credentials: EbayCredentials,
        marketplace: &str,
    ) -> EbayClient {
        EbayClient {
            http,
            endpoints,
            credentials,
            marketplace: marketplace.to_string(),
            token: TokenCache::default(),
        }
    }

    /// GETs `path` with `query` from `api` and returns the success body, read as a stream
    /// and refused past `max_bytes` (nothing beyond the limit is buffered). A 401/403
    /// refreshes the token and retries once.
    pub async fn get_capped(
        &self,
        operation: &'static str,
        api: EbayApi,
        path: &str,
        query: &[(String, String)],
        max_bytes: u64,
    ) -> Result<Vec<u8>, ProviderError> {
        let base = match api {
            EbayApi::Finances => &self.endpoints.finances_base,
            EbayApi::Fulfillment | EbayApi::PostOrder => &self.endpoints.api_base,
        };
        let url = format!("{base}{path}");
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let scheme = match api {
                EbayApi::PostOrder => "IAF",
                EbayApi::Fulfillment | EbayApi::Finances => "Bearer",
            };
            let response = self
                .http
                .get(&url)
                .query(query)
                .header(AUTHORIZATION, format!("{scheme} {token}"))
                .header(ACCEPT, "application/json")
                .header("X-EBAY-C-MARKETPLACE-ID", self.marketplace.as_str())
                .send()
                .await
                .map_err(|err| transport_error(operation, err))?;
            let status = response.status();
            if status.is_success() {
                return read_capped(response, operation, max_bytes, TOO_BIG_ADVICE).await;
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && !refreshed {
                debug!(
                    operation,
                    status = status.as_u16(),
                    "access token refused; refreshing it and retrying once"
                );
                self.token.forget(&token).await;
                refreshed = true;
                continue;
            }
            return Err(error_for_status(operation, status, &headers, &body));
        }
    }

    /// Sends the request `build` makes (from the http client, the API base and the
    /// access token) with the marketplace header, refreshing the token and retrying once
    /// on 401/403; returns a 2xx response unread (the caller caps what it reads) or the
    /// error its status maps to. Used by the Feed API client (`ebay_feed`).
    pub(crate) async fn send_authorized<F>(
        &self,
        operation: &'static str,
        build: F,
    ) -> Result<reqwest::Response, ProviderError>
    where
        F: Fn(&reqwest::Client, &str, &str) -> reqwest::RequestBuilder,
    {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let response = build(&self.http, &self.endpoints.api_base, &token)
                .header("X-EBAY-C-MARKETPLACE-ID", self.marketplace.as_str())
                .send()
                .await
                .map_err(|err| transport_error(operation, err))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && !refreshed {
                debug!(
                    operation,
                    status = status.as_u16(),
                    "access token refused; refreshing it and retrying once"
                );
                self.token.forget(&token).await;
                refreshed = true;
                continue;
            }
            return Err(error_for_status(operation, status, &headers, &body));
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
            error_description: Option<String>,
        }
        let form: Vec<(&str, &str)> = match &self.credentials.refresh_token {
            Some(refresh_token) => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
            ],
            None => vec![
                ("grant_type", "client_credentials"),
                ("scope", PUBLIC_SCOPE),
            ],
        };
        let response = self
            .http
            .post(&self.endpoints.token_url)
            .basic_auth(
                &self.credentials.client_id,
                Some(&self.credentials.client_secret),
            )
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|err| transport_error(OP_TOKEN, err))?;
        let status = response.status();
        if status.is_success() {
            let bytes = read_capped(response, OP_TOKEN, MAX_ERROR_BODY as u64, "").await?;
            let token: TokenResponse = serde_json::from_slice(&bytes).map_err(|err| {
                invalid(
                    OP_TOKEN,
                    &format!("token response is not the expected json: {err}"),
                )
            })?;
            if token.access_token.is_empty() {
                return Err(invalid(OP_TOKEN, "empty access_token"));
            }
            let lifetime = token
                .expires_in
                .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
            debug!(
                operation = OP_TOKEN,
                expires_in_s = lifetime.as_secs(),
                "access token issued"
            );
            return Ok(CachedToken::new(token.access_token, lifetime));
        }
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(error_for_status(OP_TOKEN, status, &headers, &body));
        }
        // Refused grant or client: the OAuth error code only (its description is eBay's
        // text, never our secret).
        let reason = serde_json::from_str::<TokenError>(&body)
            .ok()
            .map(|error| {
                format!(
                    "{}: {}",
                    error.error.unwrap_or_default(),
                    clip(&error.error_description.unwrap_or_default())
                )
            })
            .unwrap_or_else(|| format!("http {}", status.as_u16()));
        Err(ProviderError::Auth {
            operation: OP_TOKEN,
            message: format!(
                "eBay refused the credentials ({reason}); check the client id/secret and refresh token variables of this account"
            ),
        })
    }
}

/// A non-2xx answer as a [`ProviderError`], worded from eBay's error list.
fn error_for_status(
    operation: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderError {
    super::error_for_status(
        operation,
        status,
        headers,
        error_message(body),
        "the token was refreshed once; check the account's eBay credentials and scopes",
    )
}

/// eBay's `errors[0].message` (with its errorId), else the body, shortened.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorEntry {
        error_id: Option<u64>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let first = &errors.errors[0];
            format!(
                "errorId {}: {}",
                first.error_id.unwrap_or(0),
                clip(first.message.as_deref().unwrap_or(""))
            )
        }
        _ => clip(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finances_moves_to_apiz_in_production_only() {
        let production = EbayEndpoints::new(
            "https://api.ebay.com/",
            "https://api.ebay.com/identity/v1/oauth2/token",
        );
        assert_eq!(production.finances_base, "https://apiz.ebay.com");
        assert_eq!(production.api_base, "https://api.ebay.com");
        let sim = EbayEndpoints::new("http://127.0.0.1:4000", "http://127.0.0.1:4000/t");
        assert_eq!(sim.finances_base, "http://127.0.0.1:4000");
    }

    #[test]
    fn quota_body_becomes_quota_exceeded() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        let err = error_for_status(
            "getOrders",
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            crate::sim::ebay::QUOTA_BODY,
        );
        match err {
            ProviderError::QuotaExceeded {
                retry_after,
                message,
                ..
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert!(message.starts_with("errorId 2001"), "{message}");
            }
            other => panic!("expected quota, got {other:?}"),
        }
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let credentials = EbayCredentials {
            client_id: "id-value".into(),
            client_secret: "secret-value".into(),
            refresh_token: Some("refresh-value".into()),
        };
        let text = format!("{credentials:?}");
        assert!(!text.contains("value"), "{text}");
    }
}
