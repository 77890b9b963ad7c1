//! `GET /`: the dashboard, one self-contained HTML page (inline CSS and JavaScript, no
//! external requests) compiled into the binary from `dashboard.html`.
//!
//! It reads `GET /api/status` and `GET /api/failures` every 30 seconds and on its
//! refresh button, and shows per account and stream: the verdict and its explanation,
//! counts per state, last applied, next claimable, the lease (owner, stale), the cooldown
//! with its end, the supervisor state; then the most recent failures with their
//! `last_error`. Action buttons (refresh 3h/24h, fill-day, reset failed, clear cooldown,
//! resume, release a stale lease) ask for the admin token once per browser tab (kept in
//! `sessionStorage`, sent as a bearer header, never in a URL). A refresh answered with
//! `QuotaExceeded` shows the message and the account's last known data from
//! `GET /api/accounts/{id}/summary`. Rows are compact and sorted problems first, with a
//! text filter and verdict chips, so 200 accounts stay readable.
//!
//! Below the table, the pictures (inline SVG built by the page's script, redrawn on every
//! refresh): a heatmap of the hours per report stream (days × hours coloured by ledger
//! state, failed hours marked with ×, a click shows the hour's error), from
//! `GET /api/accounts/{id}/streams/{stream}/hours`; and the last hour of every quota
//! bucket (tokens, calls), cursor stream (lag) and job provider (queue depth), from
//! `GET /api/history/*` (see [`super::history`]). At most 12 heatmaps and 60 series per
//! chart group are drawn.
//!
//! Every heatmap cell carries `data-hour` and `data-state` inside
//! `data-heatmap="ACCOUNT/STREAM"`; every chart `data-chart="KIND:KEY"` and its SVG
//! `data-points`. Every count cell carries `data-cell="ACCOUNT/STREAM/STATE"` (and the verdict cell
//! `data-cell="ACCOUNT/STREAM/verdict"`) so tests can read the rendered numbers.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// `GET /`.
pub async fn page() -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Inline script and style only; nothing is loaded from elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
