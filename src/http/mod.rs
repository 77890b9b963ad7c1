//! The operator surface inside the daemon: an axum server with the status and admin API,
//! the dashboard page and Prometheus metrics. Nobody should need to tail logs to know why
//! data is stale.
//!
//! Endpoints (read endpoints are open on the listen address, 127.0.0.1 by default; every
//! mutating endpoint needs `Authorization: Bearer <admin token>`):
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | the dashboard ([`dashboard`]) |
//! | GET | `/api/status` | `{"ok": true, "accounts": [...]}`: `status --json` plus a verdict per stream |
//! | GET | `/api/accounts/{id}/summary?hours=24` | RT sales totals per hour and per ASIN, from the database only |
//! | GET | `/api/failures?limit=50` | the most recent FAILED hours with their `last_error` |
//! | GET | `/api/locks` | the leases (scope, owner, fence, expiry, stale) |
//! | GET | `/api/jobs?state=failed&limit=100` | job queue depth per provider and state, the latest jobs, the freshness scheduler's last pass per provider (`freshness`, with `fresh_share`) and recent passes (`runs`) |
//! | GET | `/api/tracked?provider=stockx&limit=100` | tracked keys with their last success, and counts per provider |
//! | GET | `/api/budgets` | every quota bucket in use: rate, burst (as learned from 429s), configured burst, burst corrections, tokens now, calls made this hour |
//! | GET | `/metrics` | Prometheus (OpenMetrics) text ([`metrics`]) |
//! | GET | `/api/accounts/{id}/streams/{stream}/hours?days=N` | a report stream's hours with state and failure record: the dashboard's heatmap ([`history`]) |
//! | GET | `/api/history/buckets`, `/api/history/cursors`, `/api/history/queues` | the last hour of quota tokens and calls, cursor lag, queue depth ([`history`]) |
//! | GET | `/api/openapi.json` | this API as an OpenAPI 3.1 document ([`openapi`]; checked in as docs/openapi.json) |
//! | POST | `/api/accounts/{id}/refresh` | `{"window": "last_3h" \| "last_24h"}`: those hours to MISSING at manual priority; during a quota cooldown 200 `{"status":"error","error":"QuotaExceeded",...}` and no provider call |
//! | POST | `/api/accounts/{id}/fill-day` | `{"date": "YYYY-MM-DD", "stream": optional}` |
//! | POST | `/api/accounts/{id}/reset-failed` | `{"stream": optional}`: FAILED hours to MISSING now |
//! | POST | `/api/accounts/{id}/clear-cooldown` | ends the account's provider cooldown |
//! | POST | `/api/accounts/{id}/resume` | asks the supervisor to resume a quarantined account |
//! | POST | `/api/jobs` | `{"provider", "sku", "size"?, "priority"?}`: enqueue (merges into a live job with the same key, keeping the higher priority) |
//! | POST | `/api/tracked` | `{"provider", "sku", "size"?}` or `{"items": [...]}` (≤ 1000): keys the freshness scheduler keeps fresh |
//! | POST | `/api/jobs/reset-failed` | `{"provider": optional}`: failed jobs back to pending |
//! | POST | `/api/locks/{account}/{stream}/release` | `{"force": bool}`: a live lease only with force |
//!
//! Authentication: the token is compared in constant time ([`subtle`]); a missing or wrong
//! one is 401, and with no token configured mutating endpoints answer 403 saying how to
//! configure one. The token never appears in logs or responses. Errors are JSON
//! `{"status":"error","error":CODE,"message":TEXT}` with 400 (bad input), 401/403, 404
//! (unknown account, stream or path), 405 (wrong method), 408 (body too slow), 409 (a
//! live lease without force), 413 (body above 64 KiB, refused on its Content-Length
//! before it is read), 414 (URI above 8 KiB), 415, 421 (Host not allowed) or 500/503:
//! `json_errors` turns every error the framework answers itself into that shape.
//!
//! Host allowlist (DNS rebinding): a request is answered only when its `Host` names the
//! listen address, `localhost`, `127.0.0.1` or `[::1]` (with the listen port, or none),
//! or an `[http] allowed_hosts` entry; anything else is 421 before routing. Slow
//! clients: a request head not complete within `header_read_timeout` (10 s) closes the
//! connection; a body not complete within `body_read_timeout` (30 s) is answered 408 and
//! the connection closed. Requests hyper itself refuses before the router sees them (a
//! head above ~400 KiB, a malformed request line) keep hyper's empty 4xx body.
//!
//! SQLite work runs on the blocking pool (`spawn_blocking`), never on the async workers.
//!
//! Layer 12 of docs/architecture.md. May use: everything up to `diagnose`. May not touch:
//! the raw configuration.

pub mod api;
pub mod cluster;
pub mod dashboard;
pub mod export;
pub mod history;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod settings;

pub use settings::HttpSettings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::lock::LockService;
use crate::shapes::spec::AccountConfig;
use crate::store::SqliteLedger;

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    pub config: Arc<crate::diagnose::Deployment>,
    pub ledger: Arc<SqliteLedger>,
    /// The engine holding the hour ledger (hours, claims, cooldowns, sales): `ledger`
    /// itself unless the daemon keeps it in PostgreSQL ([`HttpState::with_hours`]).
    pub hours: Arc<dyn crate::store::LedgerStore>,
    pub locks: LockService,
    /// The resolved admin secret (read from the environment variable the config names);
    /// `None`: mutating endpoints answer 403.
    pub admin_token: Option<String>,
    /// The daemon's TokenManager, for the provider budgets and the tokens gauge;
    /// `None` when the server runs without one (tests of the read API).
    pub quota: Option<crate::quota::QuotaHandle>,
    /// The daemon's in-process counters, exposed by `/metrics` (a fresh, empty set when
    /// the server runs on its own).
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Host allowlist additions and slow-client timeouts (`[http]`); the listen address
    /// is added by [`serve`].
    pub surface: Arc<SurfaceSettings>,
    /// Permits of the exports running now (`GET /api/export/{kind}`): at most
    /// [`export::MAX_CONCURRENT_EXPORTS`].
    pub exports: Arc<tokio::sync::Semaphore>,
    /// The last hour of buckets, cursor lag and queue depth the dashboard draws (empty
    /// unless the daemon's `history` sampler feeds it, see [`history::run_sampler`]).
    pub history: Arc<crate::telemetry::history::History>,
    /// This daemon's identity on `/metrics` and `/api/cluster`: its `[cluster]` member
    /// id, or its lease owner identity (`pid@host#instance`) when the cluster is off.
    pub member_id: Arc<str>,
    /// The membership service's latest view (`[cluster]` on, inside the daemon); `None`
    /// when the server runs without one.
    pub cluster: Option<tokio::sync::watch::Receiver<Option<crate::cluster::ClusterView>>>,
}

/// What the request guards of [`serve`] need from `[http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurfaceSettings {
    /// Lowercase `name` or `name:port` entries of `[http] allowed_hosts`.
    pub allowed_hosts: Vec<String>,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

impl Default for SurfaceSettings {
    fn default() -> Self {
        SurfaceSettings {
            allowed_hosts: Vec::new(),
            header_read_timeout: HttpSettings::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: HttpSettings::DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

/// The largest request body any endpoint takes (they take small JSON objects).
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// The longest request target (path and query) answered; longer is 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

impl HttpState {
    pub fn new(
        config: Arc<crate::diagnose::Deployment>,
        ledger: Arc<SqliteLedger>,
        locks: LockService,
        admin_token: Option<String>,
    ) -> HttpState {
        HttpState {
            config,
            hours: Arc::clone(&ledger) as Arc<dyn crate::store::LedgerStore>,
            ledger,
            locks,
            admin_token: admin_token.filter(|token| !token.is_empty()),
            quota: None,
            metrics: Arc::default(),
            surface: Arc::default(),
            exports: Arc::new(tokio::sync::Semaphore::new(export::MAX_CONCURRENT_EXPORTS)),
            history: Arc::default(),
            member_id: Arc::from(crate::cluster::default_member_id()),
            cluster: None,
        }
    }

    /// The same state following the daemon's cluster membership (`member_id` is then its
    /// member id).
    pub fn with_cluster(
        mut self,
        member_id: &str,
        view: Option<tokio::sync::watch::Receiver<Option<crate::cluster::ClusterView>>>,
    ) -> HttpState {
        self.member_id = Arc::from(member_id);
        self.cluster = view;
        self
    }

    /// The cluster view to show now: the latest heartbeat's (a clone; the channel is not
    /// held across anything).
    pub fn cluster_view(&self) -> Option<crate::cluster::ClusterView> {
        self.cluster.as_ref().and_then(|view| view.borrow().clone())
    }

    /// The same state reading the daemon's short history.
    pub fn with_history(mut self, history: Arc<crate::telemetry::history::History>) -> HttpState {
        self.history = history;
        self
    }

    /// The same state with `[http]`'s allowed hosts and timeouts.
    pub fn with_settings(mut self, settings: &HttpSettings) -> HttpState {
        self.surface = Arc::new(SurfaceSettings {
            allowed_hosts: settings.allowed_hosts.clone(),
            header_read_timeout: settings.header_read_timeout,
            body_read_timeout: settings.body_read_timeout,
        });
        self
    }

    /// The same state counting into the daemon's metrics.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> HttpState {
        self.metrics = metrics;
        self
    }

    /// The same state reading the hour ledger from `hours` (PostgreSQL, `[store] url_env`).
    pub fn with_hours(mut self, hours: Arc<dyn crate::store::LedgerStore>) -> HttpState {
        self.hours = hours;
        self
    }

    /// The same state with the daemon's TokenManager attached.
    pub fn with_quota(mut self, quota: crate::quota::QuotaHandle) -> HttpState {
        self.quota = Some(quota);
        self
    }

    /// The configured account, or a 404 naming the configured ones.
    pub(crate) fn account(&self, id: &str) -> Result<&AccountConfig, ApiError> {
        self.config.account(id).ok_or_else(|| {
            let known: Vec<&str> = self.config.accounts.iter().map(|a| a.id.as_str()).collect();
            ApiError::not_found(format!(
                "unknown account {id:?}; configured accounts: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("config", &self.config.source_name)
            .field("locks", &self.locks.backend())
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The router: read endpoints open, mutating ones behind the bearer token. Answers any
/// `Host`; [`serve`] adds the Host allowlist (see [`router_for`]).
pub fn router(state: HttpState) -> Router {
    routes(state, None)
}

/// The router as [`serve`] mounts it for a listener bound to `listen`: the Host
/// allowlist in front of everything.
pub fn router_for(state: HttpState, listen: SocketAddr) -> Router {
    let allowlist = Arc::new(HostAllowlist::new(listen, &state.surface.allowed_hosts));
    routes(state, Some(allowlist))
}

fn routes(state: HttpState, allowlist: Option<Arc<HostAllowlist>>) -> Router {
    let body_timeout = state.surface.body_read_timeout;
    let admin = Router::new()
        .route("/api/accounts/{id}/refresh", post(api::refresh))
        .route("/api/accounts/{id}/fill-day", post(api::fill_day))
        .route("/api/accounts/{id}/reset-failed", post(api::reset_failed))
        .route(
            "/api/accounts/{id}/clear-cooldown",
            post(api::clear_cooldown),
        )
        .route("/api/accounts/{id}/resume", post(api::resume))
        .route("/api/jobs", post(jobs::enqueue))
        .route("/api/tracked", post(jobs::track))
        .route("/api/jobs/reset-failed", post(jobs::reset_failed))
        .route("/api/export/{kind}", get(export::export))
        .route(
            "/api/locks/{account}/{stream}/release",
            post(api::release_lock),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    let router = Router::new()
        .route("/", get(dashboard::page))
        .route("/api/status", get(api::status))
        .route("/api/accounts/{id}/summary", get(api::summary))
        .route("/api/failures", get(api::failures))
        .route("/api/locks", get(api::locks))
        .route("/api/cluster", get(cluster::cluster))
        .route("/api/budgets", get(api::budgets))
        .route("/api/jobs", get(jobs::list))
        .route("/api/tracked", get(jobs::tracked_list))
        .route(
            "/api/accounts/{id}/streams/{stream}/hours",
            get(history::hours),
        )
        .route("/api/history/buckets", get(history::buckets))
        .route("/api/history/cursors", get(history::cursors))
        .route("/api/history/queues", get(history::queues))
        .route("/metrics", get(metrics::scrape))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .merge(admin)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(no_store))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(move |request, next| {
            bounded_request(body_timeout, request, next)
        }));
    let router = match allowlist {
        Some(allowlist) => router.layer(axum::middleware::from_fn(move |request, next| {
            host_check(Arc::clone(&allowlist), request, next)
        })),
        None => router,
    };
    router.with_state(state)
}

/// Serves [`router_for`] on `listener` until `shutdown` resolves; requests in progress
/// finish (connections still open 5 s later are dropped). Each connection gets hyper's
/// header-read timeout; `bounded_request` bounds the body.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listen = listener.local_addr()?;
    let header_read_timeout = state.surface.header_read_timeout;
    let app = router_for(state, listen);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "http: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http: connections still open 5s after shutdown were dropped");
    }
    Ok(())
}

/// The `Host` values a server bound to one address answers to.
#[derive(Debug)]
struct HostAllowlist {
    port: u16,
    /// Names answered with the listen port or no port.
    names: Vec<String>,
    /// `[http] allowed_hosts` entries, `name` (any port) or `name:port`.
    extra: Vec<String>,
}

impl HostAllowlist {
    fn new(listen: SocketAddr, extra: &[String]) -> HostAllowlist {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
        let ip = listen.ip();
        if !ip.is_unspecified() {
            names.push(match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        HostAllowlist {
            port: listen.port(),
            names,
            extra: extra.to_vec(),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = settings::split_host(&host) else {
            return false;
        };
        let port_matches = match port {
            None => true,
            Some(port) => port.parse::<u16>().ok() == Some(self.port),
        };
        if port_matches && self.names.iter().any(|known| known == name) {
            return true;
        }
        self.extra
            .iter()
            .any(|entry| match settings::split_host(entry) {
                Some((_, Some(_))) => *entry == host,
                Some((entry_name, None)) => entry_name == name,
                None => false,
            })
    }
}

/// DNS rebinding: only the Host names of [`HostAllowlist`] are answered; others 421.
async fn host_check(allowlist: Arc<HostAllowlist>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()));
    match host {
        Some(host) if allowlist.allows(&host) => next.run(request).await,
        Some(host) => {
            let shown: String = host.chars().take(100).collect();
            tracing::warn!(host = %shown, path = %request.uri().path(), "http: request for a host not allowed refused");
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "host {shown:?} is not served here; use http://127.0.0.1:{}/ or add the name to [http] allowed_hosts",
                    allowlist.port
                ),
            )
            .into_response()
        }
        None => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "the request has no Host header; send Host: 127.0.0.1:PORT",
        )
        .into_response(),
    }
}

/// Bounds a request before any handler sees it: a target above [`MAX_URI_BYTES`] is 414,
/// a `Content-Length` above [`MAX_BODY_BYTES`] is 413 at once (nothing read), and the
/// body is read here, at most [`MAX_BODY_BYTES`] within `body_timeout` (else 413 or
/// 408, and the connection is closed).
async fn bounded_request(body_timeout: Duration, request: Request, next: Next) -> Response {
    let target_length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target_length > MAX_URI_BYTES {
        return closing(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {target_length} bytes; at most {MAX_URI_BYTES} are accepted"
            ),
        ));
    }
    let declared = request.headers().get(header::CONTENT_LENGTH).map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    });
    match declared {
        Some(None) => {
            return closing(ApiError::bad_request(
                "invalid Content-Length header; send the body's length in bytes",
            ))
        }
        Some(Some(length)) if length > MAX_BODY_BYTES => {
            return closing(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is {length} bytes; endpoints take at most {MAX_BODY_BYTES} bytes of JSON"
                ),
            ));
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let limit = usize::try_from(MAX_BODY_BYTES).unwrap_or(usize::MAX);
    let bytes = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return closing(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is above {MAX_BODY_BYTES} bytes or was cut off; endpoints take at most {MAX_BODY_BYTES} bytes of JSON"),
            ))
        }
        Err(_) => {
            return closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {}; send the whole request at once",
                    humantime::format_duration(body_timeout)
                ),
            ))
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// An error response after which the connection is closed (its request was not read).
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Every error status answers `{"status":"error","error":CODE,"message":TEXT}`: responses
/// the framework makes itself (405 with its Allow list, 415, extractor 400s) are
/// rewritten; JSON ones pass through.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path: String = request.uri().path().chars().take(200).collect();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_default();
    let (code, hint) = match status {
        // axum adds the Allow header after this layer: name it instead of copying it.
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!(
                "{method} is not allowed on {path}; the Allow header lists the methods it takes (see the endpoint table at GET /)"
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json".to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!("endpoints take at most {MAX_BODY_BYTES} bytes"),
        ),
        StatusCode::NOT_FOUND => ("not_found", format!("no endpoint {method} {path}")),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "send the whole request at once".to_string(),
        ),
        status if status.is_server_error() => ("internal", "see the daemon's log".to_string()),
        _ => ("bad_request", format!("{method} {path} was not understood")),
    };
    let message = if text.is_empty() {
        hint
    } else {
        format!("{text}; {hint}")
    };
    let mut rebuilt = ApiError::new(status, code, message).into_response();
    for name in [
        header::ALLOW,
        header::WWW_AUTHENTICATE,
        header::CONNECTION,
        header::RETRY_AFTER,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            rebuilt.headers_mut().insert(name, value.clone());
        }
    }
    rebuilt
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {} {}; see GET / for the dashboard, GET /api/status, GET /metrics",
        request.method(),
        request.uri().path()
    ))
}

/// Status pages must not be cached by a browser or proxy.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Mutating endpoints: `Authorization: Bearer <token>`, compared in constant time.
async fn require_admin(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token.as_deref() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "mutating endpoints are disabled because no admin token is configured; set [http] admin_token_env = \"MARKETSYNC_ADMIN_TOKEN\" in the configuration and export that variable (a long random secret) before starting the daemon",
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    let authorized = match presented {
        Some(token) => bool::from(token.as_bytes().ct_eq(expected.as_bytes())),
        None => false,
    };
    if !authorized {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs the admin token: send the header Authorization: Bearer <token> (the value of the variable named by [http] admin_token_env)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// A JSON error: `{"status":"error","error":CODE,"message":TEXT}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!(error = %message, "http request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = openapi::ErrorBody {
            status: openapi::ErrorStatus::Error,
            error: self.code,
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::LedgerError> for ApiError {
    fn from(err: crate::store::LedgerError) -> Self {
        match err {
            // The server is down or unreachable: not a fault of this request, and the
            // daemon waits for it; a client may retry.
            crate::store::LedgerError::PgUnavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{err}; the daemon waits for it and resumes where it stopped"),
            ),
            err => ApiError::internal(format!("database error: {err}")),
        }
    }
}

impl ApiError {
    /// 503 for a store known to be down ([`crate::store::LedgerStore::unavailable`]).
    pub fn store_down(down: &crate::store::StoreDown) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!(
                "the state database has been unreachable since {} ({}); the daemon waits for it and resumes where it stopped, losing nothing; check that postgresql runs and that the url in [store] url_env is right",
                crate::domain::format_ts(down.since),
                down.error
            ),
        )
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        ApiError::internal(format!("database error: {err}"))
    }
}

/// Parses a JSON request body; an empty body is `T::default()` when `empty` is given.
/// Errors are 400s that name the problem and show the expected shape.
pub(crate) fn parse_body<T: DeserializeOwned>(
    body: &[u8],
    empty: Option<T>,
    example: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| {
            ApiError::bad_request(format!("missing JSON body; send for example {example}"))
        });
    }
    serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request(format!(
            "invalid JSON body: {err}; send for example {example}"
        ))
    })
}

/// Runs blocking SQLite work on the blocking pool.
pub(crate) async fn blocking<T, F>(state: &HttpState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&HttpState) -> Result<T, ApiError> + Send + 'static,
{
    let state = state.clone();
    crate::store::blocking(move || work(&state))
        .await
        .map_err(|err| ApiError::internal(format!("background task failed: {err}")))?
}
