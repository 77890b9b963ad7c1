//! Provider clients: one module per marketplace API, all returning [`ProviderError`].
//!
//! The error enum is what callers branch on: [`ProviderError::QuotaExceeded`] means
//! "stop calling this provider for this account" (seed 001's hard stop), everything
//! else fails only the unit at hand.
//!
//! The HTTP plumbing every client shares lives here too: a non-2xx answer to a
//! [`ProviderError`] (`error_for_status`), `Retry-After` parsing, capped body reads,
//! transport errors with the URL stripped and messages clipped to a readable length.
//!
//! Layer 8 of docs/architecture.md. May use: `domain`, `quota` (the pacer). May not touch:
//! the ledger.

pub mod credentials;
pub use credentials::read_env;

pub mod alias;
pub mod alias_wire;
pub mod amazon;
pub mod ebay;
pub mod ebay_browse;
pub mod ebay_feed;
pub mod ebay_trading;
pub mod keepa;
pub mod stockx;

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use tracing::warn;

use crate::domain::now_ts;

/// Whether `scope` is one API or bucket of the account scope `account`
/// (`{provider}:{account}:{api}`).
pub fn is_api_scope_of(scope: &str, account: &str) -> bool {
    scope
        .strip_prefix(account)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|operation| !operation.is_empty() && !operation.contains(':'))
}

/// The cooldown scopes narrower than the account that stop `stream` of the account whose
/// cooldown scope is `account_scope` (`{provider}:{account}`), for a provider whose hard
/// stop cools one API ([`crate::quota::stops_per_api`]): one `{account_scope}:{api}`
/// per API the stream calls ([`crate::quota::stop_group`]). None otherwise (an
/// account-wide cooldown stops every stream).
pub fn stream_stop_scopes(
    provider: crate::domain::Provider,
    account_scope: &str,
    stream: &str,
) -> Vec<String> {
    if !crate::quota::stops_per_api(provider.as_str()) {
        return Vec::new();
    }
    let operations = match provider {
        crate::domain::Provider::Ebay => ebay::stream_operations(stream),
        _ => &[],
    };
    let mut scopes: Vec<String> = Vec::new();
    for operation in operations {
        let scope = crate::quota::api_scope(provider.as_str(), account_scope, operation);
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes
}

/// The longest provider text (chars) an error message keeps.
pub(crate) const MAX_MESSAGE_CHARS: usize = 300;
/// The largest JSON body accepted from a successful call (paged and product answers
/// take their own limits).
pub(crate) const MAX_JSON_BODY: u64 = 1 << 20;
/// The most of an error body read: enough for any provider's error document.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;
/// SP-API's rate header, the only one any provider sends (requests per second).
const RATE_LIMIT_HEADER: &str = "x-amzn-ratelimit-limit";
/// The longest wait a `Retry-After` may ask for; a longer one (or one too large to
/// represent) is clamped to this and logged with the value received.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The shortest and longest an OAuth access token is believed to live, whatever
/// `expires_in` said (a shorter one would refresh on every call, a longer one is a lie).
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The total deadline of one provider call (connect, headers and the whole body) unless
/// `MARKETSYNC_PROVIDER_CALL_DEADLINE` (seconds, 1 to 3600) says otherwise: an upstream
/// that drips its answer fails as [`ProviderError::Transport`] instead of holding a run.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(120);
/// The environment variable that overrides [`DEFAULT_CALL_DEADLINE`].
pub const CALL_DEADLINE_ENV: &str = "MARKETSYNC_PROVIDER_CALL_DEADLINE";
/// A report document download (up to `max_document_bytes`) gets this many call deadlines.
pub const DOWNLOAD_DEADLINE_FACTOR: u32 = 5;
/// The most redirects followed, and only within the same origin (scheme, host, port).
pub const MAX_REDIRECTS: usize = 5;

/// Why a provider call failed. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// HTTP 429 from any call. Quota is not failure: the unit goes back to claimable
    /// when the cooldown ends, without consuming an attempt.
    #[error("quota exceeded on {operation}: {message}")]
    QuotaExceeded {
        operation: &'static str,
        /// From the `Retry-After` header, when the provider sent one.
        retry_after: Option<Duration>,
        /// From `x-amzn-RateLimit-Limit` (requests per second), when present.
        rate_limit: Option<f64>,
        message: String,
    },
    /// Credentials were refused (401/403 that a token refresh did not cure).
    #[error("authentication failed on {operation}: {message}")]
    Auth {
        operation: &'static str,
        message: String,
    },
    /// HTTP 404: the key (a SKU, a product) does not exist at the provider. Terminal for
    /// the unit at hand; retrying cannot help.
    #[error("{operation}: not found: {message}")]
    NotFound {
        operation: &'static str,
        message: String,
    },
    /// Any other non-success HTTP status.
    #[error("{operation} returned http {status}: {body}")]
    Http {
        operation: &'static str,
        status: u16,
        body: String,
    },
    /// Connection refused, timeout, reset: the request may not have reached the provider.
    #[error("{operation} failed to reach the provider: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// The provider answered 2xx with something we cannot use.
    #[error("{operation} returned an invalid response: {message}")]
    InvalidResponse {
        operation: &'static str,
        message: String,
    },
}

impl ProviderError {
    pub fn is_quota(&self) -> bool {
        matches!(self, ProviderError::QuotaExceeded { .. })
    }

    /// The provider refuses this account as a whole (quota or credentials): stop calling
    /// it for a cooldown instead of failing unit after unit.
    pub fn stops_account(&self) -> bool {
        matches!(
            self,
            ProviderError::QuotaExceeded { .. } | ProviderError::Auth { .. }
        )
    }

    /// Worth retrying soon without blaming the unit: 5xx and transport errors.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Http { status, .. } => *status >= 500,
            ProviderError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// Refresh an access token this long before the provider says it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// An OAuth access token and when to refresh it.
pub(crate) struct CachedToken {
    access_token: String,
    refresh_at: tokio::time::Instant,
}

impl CachedToken {
    /// A token the provider says lives `lifetime`: refreshed a minute before it ends.
    /// The lifetime is first bounded by [`token_lifetime`].
    pub(crate) fn new(access_token: String, lifetime: Duration) -> CachedToken {
        let lifetime = token_lifetime(lifetime);
        let now = tokio::time::Instant::now();
        CachedToken {
            access_token,
            refresh_at: now
                .checked_add(lifetime.saturating_sub(REFRESH_MARGIN))
                .unwrap_or(now),
        }
    }
}

/// `expires_in` bounded to [[`MIN_TOKEN_LIFETIME`], [`MAX_TOKEN_LIFETIME`]]; a value out
/// of that range is logged with what was received.
pub(crate) fn token_lifetime(expires_in: Duration) -> Duration {
    let bounded = expires_in.clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
    if bounded != expires_in {
        warn!(
            expires_in_s = expires_in.as_secs(),
            used_s = bounded.as_secs(),
            "token expires_in out of range; clamped"
        );
    }
    bounded
}

/// The total deadline of one provider call: [`CALL_DEADLINE_ENV`] when set to a whole
/// number of seconds from 1 to 3600, [`DEFAULT_CALL_DEADLINE`] otherwise (a bad value is
/// logged and ignored).
pub fn call_deadline() -> Duration {
    let Ok(text) = std::env::var(CALL_DEADLINE_ENV) else {
        return DEFAULT_CALL_DEADLINE;
    };
    match text.trim().parse::<u64>() {
        Ok(seconds @ 1..=3600) => Duration::from_secs(seconds),
        _ => {
            warn!(
                variable = CALL_DEADLINE_ENV,
                value = %clip(&text),
                default_s = DEFAULT_CALL_DEADLINE.as_secs(),
                "ignored: expected whole seconds from 1 to 3600"
            );
            DEFAULT_CALL_DEADLINE
        }
    }
}

/// The redirect policy of every provider client: follow at most [`MAX_REDIRECTS`] hops,
/// and only to the same origin (scheme, host and port). A redirect elsewhere is not
/// followed, so an access token, an api key or a body never reaches another host: the
/// 3xx comes back as the answer and fails the call as [`ProviderError::Http`].
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same_origin {
            warn!(
                to_host = attempt.url().host_str().unwrap_or(""),
                "redirect to another origin not followed"
            );
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Whether a report document may be downloaded from `url`: https anywhere, or http on a
/// loopback address (the simulator); never a port the daemon itself listens on
/// (`own`: its HTTP address). The error names the URL's host and what is allowed; it
/// never carries the (pre-signed) URL itself.
pub fn check_document_url(url: &str, own: &[std::net::SocketAddr]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|err| format!("document url is not a url ({err}); expected https://..."))?;
    let host = parsed.host_str().unwrap_or("").to_string();
    let ip: Option<std::net::IpAddr> = host.trim_matches(['[', ']']).parse().ok();
    let loopback = match ip {
        Some(ip) => ip.is_loopback(),
        None => host.eq_ignore_ascii_case("localhost"),
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        scheme => {
            return Err(format!(
                "document url on host {host:?} uses {scheme}; only https (or http on loopback) is accepted"
            ))
        }
    }
    let port = parsed.port_or_known_default();
    let own_address = own
        .iter()
        .any(|addr| Some(addr.port()) == port && (loopback || ip == Some(addr.ip())));
    if own_address {
        return Err(format!(
            "document url on host {host:?} points at the daemon's own http listener; refused"
        ));
    }
    Ok(())
}

/// The access token of one client. The lock is held across the token request, so
/// concurrent callers refresh only once.
#[derive(Default)]
pub(crate) struct TokenCache(tokio::sync::Mutex<Option<CachedToken>>);

impl TokenCache {
    /// The cached token, or a fresh one from `fetch` when none is cached or it is due.
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<String, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, ProviderError>>,
    {
        let mut cached = self.0.lock().await;
        if let Some(token) = cached.as_ref() {
            if tokio::time::Instant::now() < token.refresh_at {
                return Ok(token.access_token.clone());
            }
        }
        let fresh = fetch().await?;
        let access_token = fresh.access_token.clone();
        *cached = Some(fresh);
        Ok(access_token)
    }

    /// Drops the cached token if it is still `stale` (another caller may have refreshed).
    pub(crate) async fn forget(&self, stale: &str) {
        let mut cached = self.0.lock().await;
        if cached
            .as_ref()
            .is_some_and(|token| token.access_token == stale)
        {
            *cached = None;
        }
    }
}

/// Maps a non-2xx answer to the variant callers branch on: 429 is
/// [`ProviderError::QuotaExceeded`] (with `Retry-After` and `x-amzn-RateLimit-Limit` when
/// sent); 401, 402 and 403 are [`ProviderError::Auth`] (`http {status}: {message}`, then
/// `; {auth_fix}` when given: what the operator checks); anything else is
/// [`ProviderError::Http`]. `message`: what the body said, already clipped. A client whose
/// 404 names a missing key checks for it first.
pub(crate) fn error_for_status(
    operation: &'static str,
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
    auth_fix: &str,
) -> ProviderError {
    match status.as_u16() {
        429 => ProviderError::QuotaExceeded {
            operation,
            retry_after: retry_after(headers),
            rate_limit: rate_limit(headers),
            message,
        },
        code @ (401..=403) => ProviderError::Auth {
            operation,
            message: if auth_fix.is_empty() {
                format!("http {code}: {message}")
            } else {
                format!("http {code}: {message}; {auth_fix}")
            },
        },
        code => ProviderError::Http {
            operation,
            status: code,
            body: message,
        },
    }
}

/// `Retry-After` as seconds (integer or fractional) or an HTTP-date (a past one is now),
/// at most [`MAX_RETRY_AFTER`]: a longer wait (`9000000000000`, `18446744073709551615`,
/// `1e300`, a date in year 9999) is clamped and logged with the value received. A negative
/// number is now; anything unparsable is `None`.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let (wait, clamped) = parse_retry_after(text, now_ts())?;
    if clamped {
        warn!(retry_after = %clip(text), used_s = wait.as_secs(), "retry-after above the limit; clamped");
    }
    Some(wait)
}

/// The wait `text` asks for at unix time `now`, clamped to [`MAX_RETRY_AFTER`], and
/// whether it was clamped.
pub fn parse_retry_after(text: &str, now: i64) -> Option<(Duration, bool)> {
    let bound = |seconds: f64| -> (Duration, bool) {
        if seconds.is_nan() || seconds <= 0.0 {
            (Duration::ZERO, false)
        } else if seconds > MAX_RETRY_AFTER.as_secs_f64() {
            (MAX_RETRY_AFTER, true)
        } else {
            (Duration::from_secs_f64(seconds), false)
        }
    };
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        // Any length of digits: too many for a u64 is simply "very long".
        return Some(match text.parse::<u64>() {
            Ok(seconds) if seconds <= MAX_RETRY_AFTER.as_secs() => {
                (Duration::from_secs(seconds), false)
            }
            _ => (MAX_RETRY_AFTER, true),
        });
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Some(bound(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    Some(bound(date.timestamp().saturating_sub(now) as f64))
}

/// `x-amzn-RateLimit-Limit` (requests per second), when sent and positive.
pub fn rate_limit(headers: &HeaderMap) -> Option<f64> {
    let limit = headers
        .get(RATE_LIMIT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (limit.is_finite() && limit > 0.0).then_some(limit)
}

/// Streams a 2xx body into memory, failing with [`ProviderError::InvalidResponse`] once
/// it passes `max_bytes` (a declared `Content-Length` over it fails before any read).
/// `advice`: what to change, appended to that message.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    operation: &'static str,
    max_bytes: u64,
    advice: &str,
) -> Result<Vec<u8>, ProviderError> {
    let too_big = |size: String| {
        invalid(
            operation,
            &format!("response body {size}exceeds the limit of {max_bytes} bytes{advice}"),
        )
    };
    if let Some(length) = response.content_length() {
        if length > max_bytes {
            return Err(too_big(format!("of {length} bytes ")));
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| transport_error(operation, err))?
    {
        if (body.len() as u64).saturating_add(chunk.len() as u64) > max_bytes {
            return Err(too_big(String::new()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads up to [`MAX_ERROR_BODY`] bytes of an error body; a failed read keeps what arrived.
pub(crate) async fn read_error_body(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Reqwest failures, the URL stripped (it may be pre-signed or carry an api key); a
/// request that could not be built is [`ProviderError::InvalidResponse`].
pub(crate) fn transport_error(operation: &'static str, err: reqwest::Error) -> ProviderError {
    let err = err.without_url();
    if err.is_builder() {
        return invalid(
            operation,
            &format!("cannot build the request: {}", error_chain(&err)),
        );
    }
    let message = if err.is_timeout() {
        format!(
            "deadline exceeded (a call may take {} s in all): {}",
            call_deadline().as_secs(),
            error_chain(&err)
        )
    } else {
        error_chain(&err)
    };
    ProviderError::Transport { operation, message }
}

/// `err: source: source…`, skipping sources whose text is already included.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

/// A 2xx answer we cannot use.
pub(crate) fn invalid(operation: &'static str, message: &str) -> ProviderError {
    ProviderError::InvalidResponse {
        operation,
        message: message.to_string(),
    }
}

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters, `…` marking a cut.
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ebay_stream_is_stopped_by_the_apis_it_calls_only() {
        use crate::domain::Provider;
        assert_eq!(
            stream_stop_scopes(Provider::Ebay, "ebay:shop", "offers"),
            ["ebay:shop:inventory"]
        );
        assert_eq!(
            stream_stop_scopes(Provider::Ebay, "ebay:shop", "returns"),
            ["ebay:shop:post_order"]
        );
        assert_eq!(
            stream_stop_scopes(Provider::Ebay, "ebay:shop", "cases"),
            ["ebay:shop:post_order"]
        );
        // Every operation an eBay stream calls has its API.
        for entry in ebay::STREAM_SCOPES {
            for operation in entry.operations {
                assert_ne!(
                    crate::quota::stop_group("ebay", operation),
                    *operation,
                    "{operation} of {} has no API in quota::EBAY_APIS",
                    entry.stream
                );
            }
        }
        // Amazon's hard stop is the account's: no API scopes.
        assert!(stream_stop_scopes(Provider::Amazon, "amazon:acme", "vendor_rt_sales").is_empty());
        assert!(is_api_scope_of("ebay:shop:fulfillment", "ebay:shop"));
        for not_a_bucket in [
            "ebay:shop",
            "ebay:shop:",
            "ebay:shopx:getOrders",
            "ebay:shop:a:b",
        ] {
            assert!(
                !is_api_scope_of(not_a_bucket, "ebay:shop"),
                "{not_a_bucket}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "12".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        headers.insert(RETRY_AFTER, "1.5".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(
            retry_after(&headers),
            Some(Duration::ZERO),
            "a past date means now"
        );
        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn retry_after_is_clamped_to_a_day_whatever_it_says() {
        let now = 1_700_000_000;
        let day = (MAX_RETRY_AFTER, true);
        for huge in [
            "9000000000000",
            "18446744073709551615",
            "99999999999999999999999999999999",
            "1e300",
            "86401",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(huge, now), Some(day), "{huge}");
        }
        assert_eq!(
            parse_retry_after("86400", now),
            Some((MAX_RETRY_AFTER, false))
        );
        assert_eq!(parse_retry_after("-5", now), Some((Duration::ZERO, false)));
        assert_eq!(parse_retry_after("NaN", now), Some((Duration::ZERO, false)));
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "18446744073709551615".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    }

    #[tokio::test]
    async fn token_expires_in_is_bounded_and_never_overflows_the_clock() {
        assert_eq!(
            token_lifetime(Duration::from_secs(u64::MAX)),
            MAX_TOKEN_LIFETIME
        );
        assert_eq!(token_lifetime(Duration::ZERO), MIN_TOKEN_LIFETIME);
        assert_eq!(
            token_lifetime(Duration::from_secs(3600)),
            Duration::from_secs(3600)
        );
        // `Instant + u64::MAX s` panicked the account.
        let token = CachedToken::new("t".to_string(), Duration::MAX);
        assert!(token.refresh_at <= tokio::time::Instant::now() + MAX_TOKEN_LIFETIME);
    }

    #[test]
    fn document_urls_are_https_or_loopback_and_never_the_daemon_itself() {
        let own: Vec<std::net::SocketAddr> = vec!["127.0.0.1:8080".parse().expect("addr")];
        assert_eq!(
            check_document_url("https://bucket.s3.amazonaws.com/doc?sig=1", &own),
            Ok(())
        );
        assert_eq!(
            check_document_url("http://127.0.0.1:9000/_documents/1", &own),
            Ok(())
        );
        assert_eq!(
            check_document_url("http://[::1]:9000/_documents/1", &own),
            Ok(())
        );
        let plain = check_document_url("http://evil.example/doc?sig=secret", &own)
            .expect_err("plain http elsewhere");
        assert!(plain.contains("\"evil.example\""), "{plain}");
        assert!(
            !plain.contains("secret"),
            "the url is not repeated: {plain}"
        );
        for own_url in [
            "http://127.0.0.1:8080/api/status",
            "http://localhost:8080/metrics",
        ] {
            let err = check_document_url(own_url, &own).expect_err(own_url);
            assert!(err.contains("own http listener"), "{err}");
        }
        let any: Vec<std::net::SocketAddr> = vec!["0.0.0.0:8080".parse().expect("addr")];
        assert!(check_document_url("http://127.0.0.1:8080/api/status", &any).is_err());
        assert!(check_document_url("file:///etc/passwd", &own).is_err());
        assert!(check_document_url("not a url", &own).is_err());
    }

    #[test]
    fn statuses_map_to_the_variants_callers_branch_on() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().expect("header"));
        headers.insert(RATE_LIMIT_HEADER, "0.5".parse().expect("header"));
        let quota = error_for_status(
            "op",
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            "slow down".to_string(),
            "",
        );
        assert!(
            matches!(
                &quota,
                ProviderError::QuotaExceeded { retry_after: Some(wait), rate_limit: Some(rate), message, .. }
                    if *wait == Duration::from_secs(7) && *rate == 0.5 && message == "slow down"
            ),
            "{quota:?}"
        );
        let auth = error_for_status(
            "op",
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            "denied".to_string(),
            "check the key",
        );
        assert_eq!(
            auth.to_string(),
            "authentication failed on op: http 403: denied; check the key"
        );
        let plain = error_for_status(
            "op",
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            "denied".to_string(),
            "",
        );
        assert_eq!(
            plain.to_string(),
            "authentication failed on op: http 401: denied"
        );
        let http = error_for_status(
            "op",
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            "gone".to_string(),
            "",
        );
        assert_eq!(http.to_string(), "op returned http 404: gone");
    }

    #[test]
    fn clip_marks_a_cut_on_a_char_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(
            clip(&"a".repeat(MAX_MESSAGE_CHARS)).chars().count(),
            MAX_MESSAGE_CHARS
        );
    }
}
