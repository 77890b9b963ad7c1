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
//! | GET | `/api/jobs?state=failed&limit=100` | job queue depth per provider and state, and the latest jobs |
//! | GET | `/api/budgets` | every quota bucket in use: rate, burst, tokens now, calls made this hour |
//! | GET | `/metrics` | Prometheus (OpenMetrics) text ([`metrics`]) |
//! | POST | `/api/accounts/{id}/refresh` | `{"window": "last_3h" \| "last_24h"}`: those hours to MISSING at manual priority; during a quota cooldown 200 `{"status":"error","error":"QuotaExceeded",...}` and no provider call |
//! | POST | `/api/accounts/{id}/fill-day` | `{"date": "YYYY-MM-DD", "stream": optional}` |
//! | POST | `/api/accounts/{id}/reset-failed` | `{"stream": optional}`: FAILED hours to MISSING now |
//! | POST | `/api/accounts/{id}/clear-cooldown` | ends the account's provider cooldown |
//! | POST | `/api/accounts/{id}/resume` | asks the supervisor to resume a quarantined account |
//! | POST | `/api/jobs` | `{"provider", "sku", "size"?, "priority"?}`: enqueue (merges into a live job with the same key, keeping the higher priority) |
//! | POST | `/api/jobs/reset-failed` | `{"provider": optional}`: failed jobs back to pending |
//! | POST | `/api/locks/{account}/{stream}/release` | `{"force": bool}`: a live lease only with force |
//!
//! Authentication: the token is compared in constant time ([`subtle`]); a missing or wrong
//! one is 401, and with no token configured mutating endpoints answer 403 saying how to
//! configure one. The token never appears in logs or responses. Errors are JSON
//! `{"status":"error","error":CODE,"message":TEXT}` with 400 (bad input), 401/403, 404
//! (unknown account, stream or path), 409 (a live lease without force) or 500/503.
//!
//! SQLite work runs on the blocking pool (`spawn_blocking`), never on the async workers.
//!
//! Layer 11 of docs/architecture.md. May use: everything up to `diagnose`. May not touch:
//! the raw configuration.

pub mod api;
pub mod dashboard;
pub mod jobs;
pub mod metrics;
pub mod settings;

pub use settings::HttpSettings;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::lock::LockService;
use crate::shapes::spec::AccountConfig;
use crate::store::SqliteLedger;

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    pub config: Arc<crate::diagnose::Deployment>,
    pub ledger: Arc<SqliteLedger>,
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
}

impl HttpState {
    pub fn new(
        config: Arc<crate::diagnose::Deployment>,
        ledger: Arc<SqliteLedger>,
        locks: LockService,
        admin_token: Option<String>,
    ) -> HttpState {
        HttpState {
            config,
            ledger,
            locks,
            admin_token: admin_token.filter(|token| !token.is_empty()),
            quota: None,
            metrics: Arc::default(),
        }
    }

    /// The same state counting into the daemon's metrics.
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> HttpState {
        self.metrics = metrics;
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

/// The router: read endpoints open, mutating ones behind the bearer token.
pub fn router(state: HttpState) -> Router {
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
        .route("/api/jobs/reset-failed", post(jobs::reset_failed))
        .route(
            "/api/locks/{account}/{stream}/release",
            post(api::release_lock),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/api/status", get(api::status))
        .route("/api/accounts/{id}/summary", get(api::summary))
        .route("/api/failures", get(api::failures))
        .route("/api/locks", get(api::locks))
        .route("/api/budgets", get(api::budgets))
        .route("/api/jobs", get(jobs::list))
        .route("/metrics", get(metrics::scrape))
        .merge(admin)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(no_store))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves; requests in progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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
        (
            self.status,
            Json(json!({"status": "error", "error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl From<crate::store::LedgerError> for ApiError {
    fn from(err: crate::store::LedgerError) -> Self {
        ApiError::internal(format!("database error: {err}"))
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
