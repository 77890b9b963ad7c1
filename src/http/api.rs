//! The JSON handlers of [`super::router`]: status with verdicts, the DB-only summary,
//! recent failures, leases, and the admin actions (refresh, fill-day, reset failed,
//! clear cooldown, resume, release a lease).
//!
//! Every handler validates its input first (unknown account → 404, bad window, date,
//! number or body → 400 naming what was wrong) and does its SQLite work on the blocking
//! pool. Admin actions are logged (account, action, outcome), never with the token.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::openapi::{ErrorBody, ErrorStatus, SuccessStatus};
use super::{blocking, parse_body, ApiError, HttpState};
use crate::diagnose::status::{CooldownStatus, CursorStatus, SupervisorStatus};
use crate::diagnose::{self, Verdict};
use crate::domain::{floor_hour, format_ts, now_ts, HourWindow, HOUR};
use crate::lock::{LockError, LockInfo};
use crate::shapes::windowed::lookback_window;
use crate::store::{account_scope, HourState, Priority};

/// How long a handler waits for the lease backend before answering without it.
const LOCKS_TIMEOUT: Duration = Duration::from_secs(3);

/// The leases, or why they could not be read (Redis down must not take the status down).
pub(crate) async fn list_locks(state: &HttpState) -> (Vec<LockInfo>, Option<String>) {
    match tokio::time::timeout(LOCKS_TIMEOUT, state.locks.list()).await {
        Ok(Ok(locks)) => (locks, None),
        Ok(Err(err)) => (Vec::new(), Some(err.to_string())),
        Err(_) => (
            Vec::new(),
            Some(format!(
                "the {} lock backend did not answer within {}",
                state.locks.backend(),
                humantime::format_duration(LOCKS_TIMEOUT)
            )),
        ),
    }
}

/// `GET /api/status`: `marketsync status --json` plus a verdict per stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDocument {
    /// Always `true`: the document could be built.
    pub ok: bool,
    /// RFC 3339 UTC.
    pub generated_at: String,
    /// `redis` or `sqlite`.
    pub lock_backend: String,
    /// Why the leases could not be read; the document is served without them.
    #[schema(required = true)]
    pub lock_error: Option<String>,
    /// How many streams have each verdict (every verdict is present).
    pub summary: BTreeMap<Verdict, u64>,
    pub accounts: Vec<AccountView>,
}

/// One account of [`StatusDocument`].
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub provider: crate::domain::Provider,
    /// With `[cluster]`: the member that runs the account (a member id, see
    /// `GET /api/cluster`), or `unowned` when no member is live; absent when the cluster
    /// is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The account actor as its supervisor last recorded it; `null` before the daemon
    /// first ran the account.
    #[schema(required = true)]
    pub supervisor: Option<SupervisorStatus>,
    pub streams: Vec<StreamView>,
    /// Things to act on before they stop the account (an eBay refresh token within 14
    /// days of its known expiry); absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The worst verdict of its streams.
    pub verdict: Verdict,
}

/// One stream of [`AccountView`].
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamView {
    pub name: String,
    /// The sync shape: `windowed` (the hour ledger: `counts` and the hour fields),
    /// `cursor` (see `cursor`) or `jobs` (see `queue`).
    #[schema(value_type = String)]
    pub shape: &'static str,
    /// Cursor streams: where the cursor stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorStatus>,
    /// Job streams: jobs of the account's provider by state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<BTreeMap<String, i64>>,
    /// Hours per ledger state: MISSING, REQUESTED, DOWNLOADED, APPLIED, FAILED.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub counts: BTreeMap<&'static str, u64>,
    #[schema(required = true)]
    pub last_applied_hour: Option<String>,
    #[schema(required = true)]
    pub next_claimable_hour: Option<String>,
    /// When the earliest FAILED hour may be retried.
    #[schema(required = true)]
    pub next_retry_at: Option<String>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub cooldown: CooldownStatus,
    /// The stream's lease, when one is held (or left behind).
    #[schema(required = true)]
    pub lock: Option<LockView>,
    pub verdict: Verdict,
    /// Why the verdict, in a sentence.
    pub explanation: String,
}

/// A stream's lease in [`StreamView`].
#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    pub owner: String,
    pub fence: u64,
    /// `null`: the key has no expiry at all (a zombie the hygiene pass repairs).
    #[schema(required = true)]
    pub expires_at: Option<String>,
    /// The lease's expiry has passed: its owner most likely died mid-flight.
    pub stale: bool,
    /// When the holder took it; absent when the stored lease does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acquired_at: Option<String>,
}

/// `GET /api/status`: every configured account and stream, its counts, lease, cooldown
/// and supervisor state, with a verdict and its explanation.
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "status",
    responses(
        (status = 200, description = "Every configured account and stream with its verdict", body = StatusDocument),
        (status = 500, description = "The database could not be read", body = ErrorBody),
        (status = 503, description = "The state database (PostgreSQL) is unreachable or did not answer within 10 s (`store_unavailable`, `store_slow`); the daemon waits for it", body = ErrorBody),
    ),
)]
pub async fn status(State(state): State<HttpState>) -> Result<Json<StatusDocument>, ApiError> {
    let (locks, lock_error) = list_locks(&state).await;
    let now = now_ts();
    let document = blocking(&state, move |state| {
        if let Some(down) = state.hours.unavailable() {
            return Err(ApiError::store_down(&down));
        }
        status_document(state, &locks, lock_error, now)
    });
    let document = tokio::time::timeout(STATUS_DEADLINE, document)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_slow",
                format!(
                    "the state database did not answer within {}; it may be overloaded or unreachable: see `marketsync doctor`",
                    humantime::format_duration(STATUS_DEADLINE)
                ),
            )
        })??;
    Ok(Json(document))
}

/// The longest `/api/status` waits for the store before it answers 503.
const STATUS_DEADLINE: Duration = Duration::from_secs(10);

/// The status document: `marketsync status --json` plus `verdict` and `explanation` per
/// stream (and the worst verdict per account), a verdict summary, and the lease backend.
pub fn status_document(
    state: &HttpState,
    locks: &[LockInfo],
    lock_error: Option<String>,
    now: i64,
) -> Result<StatusDocument, ApiError> {
    let hours = state.hours.as_ref();
    let supervision = state.hours.supervision_statuses()?;
    let mut report =
        crate::diagnose::status::collect(&state.config, hours, locks, &supervision, now)?;
    report.assign_owners(
        state.config.cluster.is_some(),
        state.cluster_view().as_ref(),
    );
    let acquired = crate::domain::lease::acquired_at_by_scope(locks);
    let facts = diagnose::gather(
        &state.config,
        hours,
        locks,
        &acquired,
        &supervision,
        None,
        None,
        now,
    )?;
    let mut summary: BTreeMap<Verdict, u64> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
    let mut accounts = Vec::with_capacity(report.accounts.len());
    for (account, account_facts) in report.accounts.into_iter().zip(&facts) {
        let mut worst: Option<Verdict> = None;
        let mut streams = Vec::with_capacity(account.streams.len());
        for (stream, stream_facts) in account.streams.into_iter().zip(&account_facts.streams) {
            let (verdict, explanation) = diagnose::verdict(account_facts, stream_facts, now);
            *summary.entry(verdict).or_default() += 1;
            worst = worst.max(Some(verdict));
            let lock = stream.lock.map(|lock| LockView {
                owner: lock.owner,
                fence: lock.fence,
                expires_at: lock.expires_at,
                stale: lock.stale,
                acquired_at: stream_facts
                    .lock_acquired_at_ms
                    .map(|at| format_ts(at.div_euclid(1000))),
            });
            streams.push(StreamView {
                name: stream.name,
                shape: stream.shape,
                cursor: stream.cursor,
                queue: stream.queue,
                counts: stream.counts,
                last_applied_hour: stream.last_applied_hour,
                next_claimable_hour: stream.next_claimable_hour,
                next_retry_at: stream.next_retry_at,
                last_error: stream.last_error,
                cooldown: stream.cooldown,
                lock,
                verdict,
                explanation,
            });
        }
        accounts.push(AccountView {
            id: account.id,
            provider: account.provider,
            owner: account.owner,
            supervisor: account.supervisor,
            streams,
            warnings: account.warnings,
            verdict: worst.unwrap_or(Verdict::CaughtUp),
        });
    }
    Ok(StatusDocument {
        ok: true,
        generated_at: format_ts(now),
        lock_backend: state.locks.backend().to_string(),
        lock_error,
        summary,
        accounts,
    })
}

/// The windows `POST /api/accounts/{id}/refresh` resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum RefreshWindow {
    /// The last 3 hours of each stream's lookback window.
    #[serde(rename = "last_3h")]
    Last3h,
    /// The last 24 hours.
    #[serde(rename = "last_24h")]
    Last24h,
}

impl RefreshWindow {
    pub const ALL: [RefreshWindow; 2] = [RefreshWindow::Last3h, RefreshWindow::Last24h];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshWindow::Last3h => "last_3h",
            RefreshWindow::Last24h => "last_24h",
        }
    }

    pub fn hours(self) -> i64 {
        match self {
            RefreshWindow::Last3h => 3,
            RefreshWindow::Last24h => 24,
        }
    }
}

/// Body of `POST /api/accounts/{id}/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    #[schema(value_type = RefreshWindow)]
    window: String,
}

/// What one stream's reset covered.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowReset {
    pub stream: String,
    /// Hours set to MISSING (hours in flight are left alone).
    pub hours_reset: u64,
    /// RFC 3339 UTC, inclusive.
    pub from: String,
    /// RFC 3339 UTC, exclusive.
    pub to: String,
}

/// The answer of `POST /api/accounts/{id}/refresh`: done, or refused during a cooldown
/// (still 200: the request was valid, the provider is just not to be called now).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RefreshAnswer {
    Done(RefreshDone),
    Refused(RefreshRefused),
}

/// The hours were reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshDone {
    pub status: SuccessStatus,
    pub window: RefreshWindow,
    pub hours_reset: u64,
    pub streams: Vec<WindowReset>,
    pub message: String,
}

/// Why a refresh was refused: a quota cooldown, or another cooldown of the account.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum RefusalCode {
    QuotaExceeded,
    CooldownActive,
}

/// The account is in a cooldown: nothing was reset and no provider was called.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshRefused {
    pub status: ErrorStatus,
    pub error: RefusalCode,
    pub message: String,
    pub window: RefreshWindow,
    /// The cooldown's reason (`quota`, `auth`, ...).
    pub reason: String,
    /// When the cooldown ends, RFC 3339 UTC.
    pub until_utc: String,
    /// Where the last known data is: `/api/accounts/{id}/summary`.
    pub summary_url: String,
}

/// `POST /api/accounts/{id}/refresh`: resets the window's hours to MISSING at manual
/// priority (the daemon claims them first on its next run). During a cooldown of the
/// account nothing is reset and no provider is called: 200 with `"status":"error"`.
#[utoipa::path(
    post,
    path = "/api/accounts/{id}/refresh",
    tag = "admin",
    params(("id" = String, Path, description = "A configured account id", example = "amazon-us-acme")),
    request_body(content = RefreshBody, description = "Which hours to reset"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The hours were reset, or (`\"status\":\"error\"`) the account is in a cooldown and nothing was done", body = RefreshAnswer),
        (status = 400, description = "Not a report account, or a bad body", body = ErrorBody),
        (status = 404, description = "Unknown account", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn refresh(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<RefreshAnswer>, ApiError> {
    let account = state.account(&id)?.clone();
    hour_streams_only(&account, "refresh")?;
    let body: RefreshBody = parse_body(&body, None, r#"{"window":"last_3h"}"#)?;
    let Some(window_name) = RefreshWindow::ALL
        .into_iter()
        .find(|window| window.as_str() == body.window)
    else {
        return Err(ApiError::bad_request(format!(
            "window: expected \"last_3h\" or \"last_24h\", got {:?}",
            body.window
        )));
    };
    let hours = window_name.hours();
    let answer = blocking(&state, move |state| {
        let now = now_ts();
        let ledger = state.hours.as_ref();
        let scope = account_scope(account.provider.as_str(), &account.id);
        if let Some(cooldown) = ledger.active_cooldown(&scope, now)? {
            let until = format_ts(cooldown.until_at);
            let (error, message) = match cooldown.reason.as_str() {
                "quota" => (
                    RefusalCode::QuotaExceeded,
                    format!(
                        "{} quota for account {} has been exceeded; no provider call is made until {until}. showing last known data: GET /api/accounts/{}/summary",
                        account.provider, account.id, account.id
                    ),
                ),
                other => (
                    RefusalCode::CooldownActive,
                    format!(
                        "account {} is in a {other} cooldown until {until}; no provider call is made. showing last known data: GET /api/accounts/{}/summary",
                        account.id, account.id
                    ),
                ),
            };
            info!(account = %account.id, window = window_name.as_str(), reason = %cooldown.reason, "refresh refused during a cooldown");
            return Ok(RefreshAnswer::Refused(RefreshRefused {
                status: ErrorStatus::Error,
                error,
                message,
                window: window_name,
                reason: cooldown.reason,
                until_utc: until,
                summary_url: format!("/api/accounts/{}/summary", account.id),
            }));
        }
        let mut streams = Vec::new();
        let mut total = 0u64;
        for stream in &account.streams {
            let end = lookback_window(stream, now).end;
            let window = HourWindow::new(end - hours * HOUR, end);
            let reset =
                ledger.reset_window(&account.id, &stream.name, window, Priority::Manual, now)?;
            total += reset;
            streams.push(WindowReset {
                stream: stream.name.clone(),
                hours_reset: reset,
                from: format_ts(window.start),
                to: format_ts(window.end),
            });
        }
        info!(account = %account.id, window = window_name.as_str(), hours_reset = total, "refresh requested");
        Ok(RefreshAnswer::Done(RefreshDone {
            status: SuccessStatus::Success,
            window: window_name,
            hours_reset: total,
            streams,
            message: format!(
                "{total} hour(s) reset to MISSING at manual priority; the daemon fetches them first on its next run (hours in flight were left alone)"
            ),
        }))
    })
    .await?;
    Ok(Json(answer))
}

/// Query of `GET /api/accounts/{id}/summary`.
pub(crate) fn query_number(
    query: &HashMap<String, String>,
    key: &str,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match query.get(key) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(value) if (1..=max).contains(&value) => Ok(value),
            _ => Err(ApiError::bad_request(format!(
                "{key}: expected a whole number from 1 to {max}, got {text:?}"
            ))),
        },
    }
}

pub(crate) fn check_query_keys(
    query: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), ApiError> {
    for key in query.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?}; allowed: {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

pub(crate) fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(map)| map)
        .map_err(|err| ApiError::bad_request(format!("invalid query string: {}", err.body_text())))
}

fn cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The most hours `GET /api/accounts/{id}/summary` covers (90 days).
pub const MAX_SUMMARY_HOURS: i64 = 24 * 90;
/// The most ASINs it lists.
pub const MAX_SUMMARY_ASINS: i64 = 10_000;
/// The most rows `GET /api/failures` lists.
pub const MAX_FAILURES: i64 = 1000;

/// `GET /api/accounts/{id}/summary`: the account's data, from the database only. Report
/// accounts have `ledger`, `totals`, `by_hour` and `by_asin`; eBay accounts `orders` and
/// `changes`; job accounts `market_prices` (and Keepa `keepa_products`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryDocument {
    pub account: String,
    pub provider: crate::domain::Provider,
    /// Always `database`: a summary never calls a provider.
    pub source: String,
    /// RFC 3339 UTC, inclusive.
    pub from: String,
    /// RFC 3339 UTC, exclusive (the end of the current hour).
    pub to: String,
    pub hours: i64,
    /// Report accounts: APPLIED hours in the window per stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Vec<StreamCoverage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<SalesTotalsView>,
    /// Report accounts: totals per hour, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_hour: Option<Vec<HourSalesView>>,
    /// Report accounts: the `asins` ASINs with the most revenue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_asin: Option<Vec<AsinSalesView>>,
    /// eBay accounts: the 20 most recently modified orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders: Option<Vec<crate::store::cursors::OrderSummary>>,
    /// eBay accounts: the 20 newest change-history rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<crate::store::cursors::ChangeEvent>>,
    /// Job accounts: up to 50 of the provider's market prices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market_prices: Option<Vec<crate::store::jobs::MarketPrice>>,
    /// Keepa accounts: up to 50 product snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepa_products: Option<Vec<crate::store::jobs::KeepaProduct>>,
}

/// A stream's APPLIED hours within the summary's window.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamCoverage {
    pub stream: String,
    pub applied_hours: i64,
    #[schema(required = true)]
    pub last_applied_hour: Option<String>,
}

/// The window's sales totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct SalesTotalsView {
    pub ordered_units: i64,
    /// Rounded to cents.
    pub ordered_revenue: f64,
    pub rows: i64,
    pub asins: i64,
    pub hours_with_data: i64,
}

/// Sales of one hour, summed over ASINs.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourSalesView {
    pub hour_utc: String,
    pub ordered_units: i64,
    pub ordered_revenue: f64,
    /// ASINs with a row in the hour.
    pub asins: i64,
}

/// Sales of one ASIN, summed over the window's hours.
#[derive(Debug, Serialize, ToSchema)]
pub struct AsinSalesView {
    pub asin: String,
    pub ordered_units: i64,
    pub ordered_revenue: f64,
    /// Hours with a row for the ASIN.
    pub hours: i64,
}

/// `GET /api/accounts/{id}/summary?hours=24&asins=100`: RT sales totals per hour and
/// per ASIN over the last `hours` hours, from the database only (never a provider call),
/// with how many of those hours are APPLIED (complete) per stream.
#[utoipa::path(
    get,
    path = "/api/accounts/{id}/summary",
    tag = "status",
    params(
        ("id" = String, Path, description = "A configured account id", example = "amazon-us-acme"),
        ("hours" = Option<i64>, Query, minimum = 1, maximum = 2160, description = "The window: the last this many hours (default 24, at most 90 days)"),
        ("asins" = Option<i64>, Query, minimum = 1, maximum = 10000, description = "How many ASINs `by_asin` lists (default 100)"),
    ),
    responses(
        (status = 200, description = "The account's data in the window", body = SummaryDocument),
        (status = 400, description = "A number out of range or an unknown query parameter", body = ErrorBody),
        (status = 404, description = "Unknown account", body = ErrorBody),
        (status = 500, description = "The database could not be read", body = ErrorBody),
    ),
)]
pub async fn summary(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<SummaryDocument>, ApiError> {
    let account = state.account(&id)?.clone();
    let query = query_map(query)?;
    check_query_keys(&query, &["hours", "asins"])?;
    let hours = query_number(&query, "hours", 24, MAX_SUMMARY_HOURS)?;
    let asin_limit = query_number(&query, "asins", 100, MAX_SUMMARY_ASINS)?;
    let document = blocking(&state, move |state| {
        let now = now_ts();
        let to = floor_hour(now) + HOUR;
        let from = to - hours * HOUR;
        let id = account.id.as_str();
        let mut summary = SummaryDocument {
            account: account.id.clone(),
            provider: account.provider,
            source: "database".to_string(),
            from: format_ts(from),
            to: format_ts(to),
            hours,
            ledger: None,
            totals: None,
            by_hour: None,
            by_asin: None,
            orders: None,
            changes: None,
            market_prices: None,
            keepa_products: None,
        };
        // Hour totals are the report streams' data; other shapes have their own below.
        if account.provider.shape() == crate::domain::Shape::Windowed {
            let (hour_rows, asin_rows, sums) =
                state.hours.sales_summary(id, from, to, asin_limit)?;
            summary.by_hour = Some(
                hour_rows
                    .into_iter()
                    .map(|row| HourSalesView {
                        hour_utc: format_ts(row.hour_utc),
                        ordered_units: row.ordered_units,
                        ordered_revenue: cents(row.ordered_revenue),
                        asins: row.asins,
                    })
                    .collect(),
            );
            summary.by_asin = Some(
                asin_rows
                    .into_iter()
                    .map(|row| AsinSalesView {
                        asin: row.asin,
                        ordered_units: row.ordered_units,
                        ordered_revenue: cents(row.ordered_revenue),
                        hours: row.hours,
                    })
                    .collect(),
            );
            summary.totals = Some(SalesTotalsView {
                ordered_units: sums.ordered_units,
                ordered_revenue: cents(sums.ordered_revenue),
                rows: sums.rows,
                asins: sums.asins,
                hours_with_data: sums.hours_with_data,
            });
            let mut coverage = Vec::new();
            for stream in &account.streams {
                let (applied, last) = state.hours.applied_coverage(id, &stream.name, from, to)?;
                coverage.push(StreamCoverage {
                    stream: stream.name.clone(),
                    applied_hours: applied,
                    last_applied_hour: last.map(format_ts),
                });
            }
            summary.ledger = Some(coverage);
        }
        // The other shapes' data: latest orders and their changes (eBay), market
        // prices and product snapshots (job providers). Still only the database.
        match account.provider.as_str() {
            "ebay" => {
                summary.orders = Some(state.hours.latest_orders(id, 20)?);
                summary.changes = Some(state.hours.recent_events(Some(id), 20)?);
            }
            "stockx" | "keepa" | "alias" => {
                let prices: Vec<_> = crate::store::jobs::market_prices(state.hours.as_ref(), 200)?
                    .into_iter()
                    .filter(|price| price.provider == account.provider.as_str())
                    .take(50)
                    .collect();
                summary.market_prices = Some(prices);
                if account.provider == crate::domain::Provider::Keepa {
                    summary.keepa_products = Some(crate::store::jobs::keepa_products(
                        state.hours.as_ref(),
                        50,
                    )?);
                }
            }
            _ => {}
        }
        Ok(summary)
    })
    .await?;
    Ok(Json(document))
}

/// A FAILED hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedHourView {
    pub account: String,
    pub stream: String,
    pub hour_utc: String,
    pub attempts: i64,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true)]
    pub next_retry_at: Option<String>,
    /// When the hour failed (its last update).
    pub failed_at: String,
}

/// `GET /api/failures`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailuresDocument {
    /// Newest first.
    pub failures: Vec<FailedHourView>,
}

/// `GET /api/failures?limit=50`: the most recently failed hours, newest first.
#[utoipa::path(
    get,
    path = "/api/failures",
    tag = "status",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "How many (default 50)"),
    ),
    responses(
        (status = 200, description = "The most recently failed hours with their error", body = FailuresDocument),
        (status = 400, description = "A number out of range or an unknown query parameter", body = ErrorBody),
        (status = 500, description = "The database could not be read", body = ErrorBody),
    ),
)]
pub async fn failures(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<FailuresDocument>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["limit"])?;
    let limit = query_number(&query, "limit", 50, MAX_FAILURES)?;
    let document = blocking(&state, move |state| {
        let failures = state
            .hours
            .recent_failures(limit)?
            .into_iter()
            .map(|failed| FailedHourView {
                account: failed.account,
                stream: failed.stream,
                hour_utc: format_ts(failed.hour_utc),
                attempts: failed.attempts,
                last_error: failed.last_error,
                next_retry_at: failed.next_retry_at.map(format_ts),
                failed_at: format_ts(failed.updated_at),
            })
            .collect();
        Ok(FailuresDocument { failures })
    })
    .await?;
    Ok(Json(document))
}

/// `GET /api/locks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LocksDocument {
    /// `redis` or `sqlite`.
    pub backend: String,
    pub locks: Vec<LockInfo>,
}

/// `GET /api/locks`: every lease in the lock backend (scope, owner, fence, expiry, stale).
#[utoipa::path(
    get,
    path = "/api/locks",
    tag = "status",
    responses(
        (status = 200, description = "Every lease in the lock backend", body = LocksDocument),
        (status = 503, description = "The lock backend did not answer", body = ErrorBody),
    ),
)]
pub async fn locks(State(state): State<HttpState>) -> Result<Json<LocksDocument>, ApiError> {
    match tokio::time::timeout(LOCKS_TIMEOUT, state.locks.list()).await {
        Ok(Ok(locks)) => Ok(Json(LocksDocument {
            backend: state.locks.backend().to_string(),
            locks,
        })),
        Ok(Err(err)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lock_backend_unavailable",
            format!("cannot list leases: {err}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lock_backend_unavailable",
            format!(
                "the {} lock backend did not answer within {}",
                state.locks.backend(),
                humantime::format_duration(LOCKS_TIMEOUT)
            ),
        )),
    }
}

/// One quota bucket of `GET /api/budgets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketBudget {
    pub provider: String,
    pub operation: String,
    /// The selling partner, seller or account the bucket is for.
    pub scope: String,
    pub rate_per_second: f64,
    pub rate_per_hour: f64,
    /// The burst in force (as learned from 429s).
    pub burst: f64,
    /// The burst configured or documented, before any correction.
    pub configured_burst: f64,
    /// 429s read as corrections of this bucket since the daemon started.
    pub burst_corrections: u64,
    /// Tokens available now.
    pub tokens: f64,
    /// The share of the burst kept for manual work.
    pub reserve_share: f64,
    /// Calls this process made in the current UTC hour.
    pub calls_this_hour: u64,
}

/// `GET /api/budgets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetsDocument {
    /// The current UTC hour, RFC 3339.
    pub hour: String,
    pub buckets: Vec<BucketBudget>,
}

/// `GET /api/budgets`: the provider budgets for the current hour (seed 002's
/// market_budgets): every quota bucket the TokenManager holds, with its rate (per second
/// and per hour), burst, tokens available now, and the calls this process made in the
/// current UTC hour. 503 when the daemon runs without a TokenManager.
#[utoipa::path(
    get,
    path = "/api/budgets",
    tag = "status",
    responses(
        (status = 200, description = "Every quota bucket in use", body = BudgetsDocument),
        (status = 503, description = "No token manager in this server, or it did not answer", body = ErrorBody),
    ),
)]
pub async fn budgets(State(state): State<HttpState>) -> Result<Json<BudgetsDocument>, ApiError> {
    let Some(quota) = &state.quota else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "quota_unavailable",
            "this server runs without a token manager; budgets are served by `marketsync run`"
                .to_string(),
        ));
    };
    let buckets = quota.buckets().await.map_err(|err| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "quota_unavailable",
            format!("cannot read the quota buckets: {err}"),
        )
    })?;
    let hour = now_ts().div_euclid(crate::domain::HOUR) * crate::domain::HOUR;
    let metrics = &state.metrics;
    let buckets = buckets
        .into_iter()
        .map(|(key, view)| BucketBudget {
            calls_this_hour: metrics.calls_in_hour(key.provider.as_str(), &key.operation, hour),
            provider: key.provider,
            operation: key.operation,
            scope: key.scope,
            rate_per_second: view.rate,
            rate_per_hour: view.rate * 3600.0,
            burst: view.burst,
            configured_burst: view.configured_burst,
            burst_corrections: view.corrections,
            tokens: view.tokens,
            reserve_share: view.reserve_share,
        })
        .collect();
    Ok(Json(BudgetsDocument {
        hour: crate::domain::format_ts(hour),
        buckets,
    }))
}

/// Refresh and fill-day reset hours: only report (windowed) streams have them. Cursor
/// streams catch up by themselves; job providers take `POST /api/jobs`.
fn hour_streams_only(
    account: &crate::shapes::spec::AccountConfig,
    action: &str,
) -> Result<(), ApiError> {
    match account.provider.shape() {
        crate::domain::Shape::Windowed => Ok(()),
        crate::domain::Shape::Cursor => Err(ApiError::bad_request(format!(
            "{action} resets hours of report streams; account {} is a {} cursor account whose cursor catches up by itself (see its verdict in GET /api/status)",
            account.id, account.provider
        ))),
        crate::domain::Shape::Jobs => Err(ApiError::bad_request(format!(
            "{action} resets hours of report streams; account {} drains the {} job queue: enqueue lookups with POST /api/jobs",
            account.id, account.provider
        ))),
    }
}

/// The account's enabled streams, or only `name` (404 when it is not one of them).
fn select_streams(
    account: &crate::shapes::spec::AccountConfig,
    name: Option<&str>,
) -> Result<Vec<crate::shapes::spec::StreamConfig>, ApiError> {
    match name {
        None => Ok(account.streams.clone()),
        Some(name) => match account.stream(name) {
            Some(stream) => Ok(vec![stream.clone()]),
            None => {
                let known: Vec<&str> = account.streams.iter().map(|s| s.name.as_str()).collect();
                Err(ApiError::not_found(format!(
                    "account {} has no enabled stream {name:?}; enabled streams: {}",
                    account.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        },
    }
}

/// Body of `POST /api/accounts/{id}/fill-day`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FillDayBody {
    /// The UTC day, `YYYY-MM-DD`, within the stream's lookback.
    #[schema(example = "2025-12-09", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    date: String,
    /// One stream of the account; every enabled stream when absent.
    #[schema(example = "vendor_rt_sales")]
    stream: Option<String>,
}

/// The day's hours were reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct FillDayDone {
    pub status: SuccessStatus,
    pub date: String,
    pub hours_reset: u64,
    pub streams: Vec<WindowReset>,
    pub message: String,
}

/// `POST /api/accounts/{id}/fill-day`: `marketsync fill-day` for one or every stream.
#[utoipa::path(
    post,
    path = "/api/accounts/{id}/fill-day",
    tag = "admin",
    params(("id" = String, Path, description = "A configured account id", example = "amazon-us-acme")),
    request_body(content = FillDayBody, description = "The day (and optionally the stream) whose hours to reset"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The day's hours were reset to MISSING", body = FillDayDone),
        (status = 400, description = "Not a report account, a bad body or a date outside the lookback", body = ErrorBody),
        (status = 404, description = "Unknown account or stream", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn fill_day(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<FillDayDone>, ApiError> {
    let account = state.account(&id)?.clone();
    hour_streams_only(&account, "fill-day")?;
    let body: FillDayBody = parse_body(
        &body,
        None,
        r#"{"date":"2025-12-09","stream":"vendor_rt_sales"}"#,
    )?;
    let streams = select_streams(&account, body.stream.as_deref())?;
    let mut windows = Vec::new();
    for stream in &streams {
        let window = crate::diagnose::repair::fill_day_window(
            &state.config,
            &account.id,
            &stream.name,
            &body.date,
        )
        .map_err(|err| ApiError::bad_request(format!("date: {err}")))?;
        windows.push((stream.name.clone(), window));
    }
    let date = body.date;
    let done = blocking(&state, move |state| {
        let now = now_ts();
        let mut out = Vec::new();
        let mut total = 0;
        for (stream, window) in windows {
            let reset = state.hours.reset_window(
                &account.id,
                &stream,
                window,
                Priority::Manual,
                now,
            )?;
            total += reset;
            out.push(WindowReset {
                stream,
                hours_reset: reset,
                from: format_ts(window.start),
                to: format_ts(window.end),
            });
        }
        info!(account = %account.id, date = %date, hours_reset = total, "fill-day requested");
        Ok(FillDayDone {
            status: SuccessStatus::Success,
            message: format!("{total} hour(s) of {date} reset to MISSING; the daemon fetches them on its next run"),
            date,
            hours_reset: total,
            streams: out,
        })
    })
    .await?;
    Ok(Json(done))
}

/// Body of `POST /api/accounts/{id}/reset-failed`; an empty body means every stream.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBody {
    /// One stream of the account; every enabled stream when absent.
    #[schema(example = "vendor_rt_sales")]
    stream: Option<String>,
}

/// How many hours of one stream were reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamReset {
    pub stream: String,
    pub hours_reset: u64,
}

/// The FAILED hours were reset.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetFailedDone {
    pub status: SuccessStatus,
    pub hours_reset: u64,
    pub streams: Vec<StreamReset>,
    pub message: String,
}

/// `POST /api/accounts/{id}/reset-failed`: FAILED hours become MISSING at manual
/// priority, claimable at once (their retry wait and attempt count are cleared).
#[utoipa::path(
    post,
    path = "/api/accounts/{id}/reset-failed",
    tag = "admin",
    params(("id" = String, Path, description = "A configured account id", example = "amazon-us-acme")),
    request_body(content = Option<StreamBody>, description = "Optional: the stream (an empty body resets every stream)"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "FAILED hours reset to MISSING", body = ResetFailedDone),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 404, description = "Unknown account or stream", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn reset_failed(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ResetFailedDone>, ApiError> {
    let account = state.account(&id)?.clone();
    // The document calls the body optional (an empty body or JSON `null`).
    let body: StreamBody = parse_body::<Option<StreamBody>>(
        &body,
        Some(None),
        r#"{"stream":"vendor_rt_sales"} or an empty body"#,
    )?
    .unwrap_or_default();
    let streams = select_streams(&account, body.stream.as_deref())?;
    debug_assert!(HourState::Failed.can_become(HourState::Missing));
    let done = blocking(&state, move |state| {
        let now = now_ts();
        let mut out = Vec::new();
        let mut total = 0u64;
        for stream in &streams {
            let reset =
                state
                    .hours
                    .reset_failed(&account.id, &stream.name, Priority::Manual, now)?;
            total += reset;
            out.push(StreamReset {
                stream: stream.name.clone(),
                hours_reset: reset,
            });
        }
        info!(account = %account.id, hours_reset = total, "failed hours reset");
        Ok(ResetFailedDone {
            status: SuccessStatus::Success,
            hours_reset: total,
            streams: out,
            message: format!(
                "{total} FAILED hour(s) reset to MISSING; the daemon retries them on its next run"
            ),
        })
    })
    .await?;
    Ok(Json(done))
}

/// The cooldown a clear ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClearedCooldown {
    /// `quota`, `auth`, ...
    pub reason: String,
    pub until_utc: String,
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// The answer of `POST /api/accounts/{id}/clear-cooldown`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClearCooldownDone {
    pub status: SuccessStatus,
    /// The account scope, `{provider}:{account}`.
    pub scope: String,
    /// A cooldown was active and is gone.
    pub cleared: bool,
    /// The cooldown that was active, if any.
    #[schema(required = true)]
    pub previous: Option<ClearedCooldown>,
    pub message: String,
}

/// `POST /api/accounts/{id}/clear-cooldown`: ends the account's provider cooldown
/// (quota or auth), and those of its APIs (an eBay API's spent quota), so the
/// next run calls the provider again.
#[utoipa::path(
    post,
    path = "/api/accounts/{id}/clear-cooldown",
    tag = "admin",
    params(("id" = String, Path, description = "A configured account id", example = "amazon-us-acme")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The cooldown is cleared (or there was none)", body = ClearCooldownDone),
        (status = 404, description = "Unknown account", body = ErrorBody),
        (status = 500, description = "The database or Redis could not be written", body = ErrorBody),
    ),
)]
pub async fn clear_cooldown(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<ClearCooldownDone>, ApiError> {
    let account = state.account(&id)?.clone();
    let scope = account_scope(account.provider.as_str(), &account.id);
    // The account's own cooldown, else one of its APIs' (eBay's per-API stops), which
    // the clear ends too.
    let mut scopes = vec![scope.clone()];
    scopes.extend(crate::diagnose::cooldowns::account_api_scopes(&account));
    let previous = blocking(&state, move |state| {
        for scope in &scopes {
            if let Some(cooldown) = state.hours.active_cooldown(scope, now_ts())? {
                return Ok(Some(cooldown));
            }
        }
        Ok(None)
    })
    .await?;
    // The same clear as `marketsync cooldowns clear`: SQLite and, when configured, Redis
    // (the TokenManager's shared store), including the seller's related scopes.
    let cleared_scopes = crate::diagnose::cooldowns::clear(&state.config, &scope)
        .await
        .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    let cleared = !cleared_scopes.is_empty();
    info!(account = %account.id, cleared, "cooldown cleared");
    Ok(Json(ClearCooldownDone {
        status: SuccessStatus::Success,
        scope,
        cleared: previous.is_some() && cleared,
        previous: previous.map(|cooldown| ClearedCooldown {
            reason: cooldown.reason,
            until_utc: format_ts(cooldown.until_at),
            detail: cooldown.detail,
        }),
        message: if cleared {
            "cooldown cleared; the daemon calls the provider again on its next run".to_string()
        } else {
            "no cooldown was set for this account".to_string()
        },
    }))
}

/// The answer of `POST /api/accounts/{id}/resume`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResumeDone {
    pub status: SuccessStatus,
    pub resume_requested: bool,
    pub message: String,
}

/// `POST /api/accounts/{id}/resume`: asks the running daemon to clear the quarantine
/// (picked up within one supervisor heartbeat). 409 when the account is not quarantined.
#[utoipa::path(
    post,
    path = "/api/accounts/{id}/resume",
    tag = "admin",
    params(("id" = String, Path, description = "A configured account id", example = "amazon-us-acme")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Resume requested", body = ResumeDone),
        (status = 404, description = "Unknown account", body = ErrorBody),
        (status = 409, description = "The account is not quarantined (`not_quarantined`)", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn resume(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<ResumeDone>, ApiError> {
    let account = state.account(&id)?.clone();
    let done = blocking(&state, move |state| {
        let requested = state.hours.request_resume(&account.id)?;
        let current = state.hours.child_state(&account.id)?;
        if !requested {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_quarantined",
                format!(
                    "account {} is not quarantined (state: {}); nothing to resume",
                    account.id,
                    current.as_deref().unwrap_or("never supervised")
                ),
            ));
        }
        info!(account = %account.id, "resume requested");
        Ok(ResumeDone {
            status: SuccessStatus::Success,
            resume_requested: true,
            message: format!(
                "resume of {} requested; the daemon restarts it within one supervisor heartbeat",
                account.id
            ),
        })
    })
    .await?;
    Ok(Json(done))
}

/// Body of `POST /api/locks/{account}/{stream}/release`; an empty body is `force: false`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Release a live lease too (its owner must be gone); default false.
    #[serde(default)]
    force: bool,
}

/// The answer of `POST /api/locks/{account}/{stream}/release`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseDone {
    pub status: SuccessStatus,
    /// The lease had not expired (only with `force`).
    pub was_live: bool,
    pub released: LockInfo,
}

/// `POST /api/locks/{account}/{stream}/release`: releases a stale lease; a live one only
/// with `{"force": true}` (409 otherwise, naming its holder).
#[utoipa::path(
    post,
    path = "/api/locks/{account}/{stream}/release",
    tag = "admin",
    params(
        ("account" = String, Path, description = "The account of the lease's scope", example = "amazon-us-acme"),
        ("stream" = String, Path, description = "The stream of the lease's scope", example = "vendor_rt_sales"),
    ),
    request_body(content = Option<ReleaseBody>, description = "Optional: `force` (an empty body releases only a stale lease)"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The lease was released", body = ReleaseDone),
        (status = 400, description = "A bad body or scope", body = ErrorBody),
        (status = 404, description = "No lease on that scope", body = ErrorBody),
        (status = 409, description = "A live lease and no `force` (`lock_live`)", body = ErrorBody),
        (status = 503, description = "The lock backend did not answer", body = ErrorBody),
    ),
)]
pub async fn release_lock(
    State(state): State<HttpState>,
    Path((account, stream)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ReleaseDone>, ApiError> {
    // The document calls the body optional (an empty body or JSON `null`).
    let body: ReleaseBody =
        parse_body::<Option<ReleaseBody>>(&body, Some(None), r#"{"force":true} or an empty body"#)?
            .unwrap_or_default();
    let scope = format!("{account}/{stream}");
    let released =
        tokio::time::timeout(LOCKS_TIMEOUT, state.locks.release_scope(&scope, body.force))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lock_backend_unavailable",
                    "the lock backend did not answer in time",
                )
            })?;
    match released {
        Ok(Some(info)) => {
            info!(scope = %scope, replaced_owner = %info.owner, forced = body.force, "lease released by an operator");
            Ok(Json(ReleaseDone {
                status: SuccessStatus::Success,
                was_live: !info.stale,
                released: info,
            }))
        }
        Ok(None) => Err(ApiError::not_found(format!("no lease on {scope}"))),
        Err(LockError::Busy { holder, until, .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "lock_live",
            format!(
                "{scope} is held by a live lease of {holder} until {until}; wait for it to expire, or send {{\"force\": true}} if that owner is gone"
            ),
        )),
        Err(LockError::Invalid(message)) => Err(ApiError::bad_request(message)),
        Err(err) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lock_backend_unavailable",
            err.to_string(),
        )),
    }
}
