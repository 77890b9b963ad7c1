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
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::{blocking, parse_body, ApiError, HttpState};
use crate::diagnose::{self, Verdict};
use crate::domain::{floor_hour, format_ts, now_ts, HourWindow, HOUR};
use crate::lock::{LockError, LockInfo};
use crate::shapes::windowed::lookback_window;
use crate::store::{account_scope, HourState, LedgerStore, Priority};

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

/// `GET /api/status`.
pub async fn status(State(state): State<HttpState>) -> Result<Json<Value>, ApiError> {
    let (locks, lock_error) = list_locks(&state).await;
    let now = now_ts();
    let value = blocking(&state, move |state| {
        status_value(state, &locks, lock_error, now)
    })
    .await?;
    Ok(Json(value))
}

/// The status document: `marketsync status --json` plus `verdict` and `explanation` per
/// stream (and the worst verdict per account), a verdict summary, and the lease backend.
pub fn status_value(
    state: &HttpState,
    locks: &[LockInfo],
    lock_error: Option<String>,
    now: i64,
) -> Result<Value, ApiError> {
    let ledger = state.ledger.as_ref();
    let supervision = ledger.with_read_conn(crate::store::supervision::statuses)?;
    let report = crate::diagnose::status::collect(&state.config, ledger, locks, &supervision, now)?;
    let acquired = crate::domain::lease::acquired_at_by_scope(locks);
    let facts = diagnose::gather(
        &state.config,
        ledger,
        locks,
        &acquired,
        &supervision,
        None,
        None,
        now,
    )?;
    let mut accounts = serde_json::to_value(&report.accounts)
        .map_err(|err| ApiError::internal(format!("cannot encode the status: {err}")))?;
    let mut summary: BTreeMap<&'static str, u64> =
        Verdict::ALL.iter().map(|v| (v.as_str(), 0)).collect();
    if let Some(list) = accounts.as_array_mut() {
        for (account_value, account_facts) in list.iter_mut().zip(&facts) {
            let mut worst: Option<Verdict> = None;
            if let Some(streams) = account_value
                .get_mut("streams")
                .and_then(Value::as_array_mut)
            {
                for (stream_value, stream_facts) in streams.iter_mut().zip(&account_facts.streams) {
                    let (verdict, explanation) =
                        diagnose::verdict(account_facts, stream_facts, now);
                    *summary.entry(verdict.as_str()).or_default() += 1;
                    worst = worst.max(Some(verdict));
                    stream_value["verdict"] = json!(verdict.as_str());
                    stream_value["explanation"] = json!(explanation);
                    if let (Some(at), Some(lock)) = (
                        stream_facts.lock_acquired_at_ms,
                        stream_value.get_mut("lock").filter(|lock| lock.is_object()),
                    ) {
                        lock["acquired_at"] = json!(format_ts(at.div_euclid(1000)));
                    }
                }
            }
            account_value["verdict"] = json!(worst.unwrap_or(Verdict::CaughtUp).as_str());
        }
    }
    Ok(json!({
        "ok": true,
        "generated_at": format_ts(now),
        "lock_backend": state.locks.backend(),
        "lock_error": lock_error,
        "summary": summary,
        "accounts": accounts,
    }))
}

/// Body of `POST /api/accounts/{id}/refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    window: String,
}

/// `POST /api/accounts/{id}/refresh`: resets the window's hours to MISSING at manual
/// priority (the daemon claims them first on its next run). During a cooldown of the
/// account nothing is reset and no provider is called: 200 with `"status":"error"`.
pub async fn refresh(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let account = state.account(&id)?.clone();
    hour_streams_only(&account, "refresh")?;
    let body: RefreshBody = parse_body(&body, None, r#"{"window":"last_3h"}"#)?;
    let hours = match body.window.as_str() {
        "last_3h" => 3,
        "last_24h" => 24,
        other => {
            return Err(ApiError::bad_request(format!(
                "window: expected \"last_3h\" or \"last_24h\", got {other:?}"
            )))
        }
    };
    let window_name = body.window;
    let value = blocking(&state, move |state| {
        let now = now_ts();
        let ledger = state.ledger.as_ref();
        let scope = account_scope(account.provider.as_str(), &account.id);
        if let Some(cooldown) = ledger.active_cooldown(&scope, now)? {
            let until = format_ts(cooldown.until_at);
            let (error, message) = match cooldown.reason.as_str() {
                "quota" => (
                    "QuotaExceeded",
                    format!(
                        "{} quota for account {} has been exceeded; no provider call is made until {until}. showing last known data: GET /api/accounts/{}/summary",
                        account.provider, account.id, account.id
                    ),
                ),
                other => (
                    "CooldownActive",
                    format!(
                        "account {} is in a {other} cooldown until {until}; no provider call is made. showing last known data: GET /api/accounts/{}/summary",
                        account.id, account.id
                    ),
                ),
            };
            info!(account = %account.id, window = %window_name, reason = %cooldown.reason, "refresh refused during a cooldown");
            return Ok(json!({
                "status": "error",
                "error": error,
                "message": message,
                "window": window_name,
                "reason": cooldown.reason,
                "until_utc": until,
                "summary_url": format!("/api/accounts/{}/summary", account.id),
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
            streams.push(json!({
                "stream": stream.name,
                "hours_reset": reset,
                "from": format_ts(window.start),
                "to": format_ts(window.end),
            }));
        }
        info!(account = %account.id, window = %window_name, hours_reset = total, "refresh requested");
        Ok(json!({
            "status": "success",
            "window": window_name,
            "hours_reset": total,
            "streams": streams,
            "message": format!(
                "{total} hour(s) reset to MISSING at manual priority; the daemon fetches them first on its next run (hours in flight were left alone)"
            ),
        }))
    })
    .await?;
    Ok(Json(value))
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

/// `GET /api/accounts/{id}/summary?hours=24&asins=100`: RT sales totals per hour and
/// per ASIN over the last `hours` hours, from the database only (never a provider call),
/// with how many of those hours are APPLIED (complete) per stream.
pub async fn summary(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let account = state.account(&id)?.clone();
    let query = query_map(query)?;
    check_query_keys(&query, &["hours", "asins"])?;
    let hours = query_number(&query, "hours", 24, 24 * 90)?;
    let asin_limit = query_number(&query, "asins", 100, 10_000)?;
    let value = blocking(&state, move |state| {
        let now = now_ts();
        let to = floor_hour(now) + HOUR;
        let from = to - hours * HOUR;
        let id = account.id.as_str();
        let (hour_rows, asin_rows, sums) =
            crate::store::sales::sales_summary(&state.ledger, id, from, to, asin_limit)?;
        let by_hour: Vec<Value> = hour_rows
            .into_iter()
            .map(|row| {
                json!({
                    "hour_utc": format_ts(row.hour_utc),
                    "ordered_units": row.ordered_units,
                    "ordered_revenue": cents(row.ordered_revenue),
                    "asins": row.asins,
                })
            })
            .collect();
        let by_asin: Vec<Value> = asin_rows
            .into_iter()
            .map(|row| {
                json!({
                    "asin": row.asin,
                    "ordered_units": row.ordered_units,
                    "ordered_revenue": cents(row.ordered_revenue),
                    "hours": row.hours,
                })
            })
            .collect();
        let totals = json!({
            "ordered_units": sums.ordered_units,
            "ordered_revenue": cents(sums.ordered_revenue),
            "rows": sums.rows,
            "asins": sums.asins,
            "hours_with_data": sums.hours_with_data,
        });
        let mut coverage = Vec::new();
        for stream in &account.streams {
            let (applied, last) =
                crate::store::sales::applied_coverage(&state.ledger, id, &stream.name, from, to)?;
            coverage.push(json!({
                "stream": stream.name,
                "applied_hours": applied,
                "last_applied_hour": last.map(format_ts),
            }));
        }
        let mut summary = json!({
            "account": account.id,
            "provider": account.provider,
            "source": "database",
            "from": format_ts(from),
            "to": format_ts(to),
            "hours": hours,
            "ledger": coverage,
            "totals": totals,
            "by_hour": by_hour,
            "by_asin": by_asin,
        });
        // The other shapes' data: latest orders and their changes (eBay), market
        // prices and product snapshots (job providers). Still only the database.
        let encode = |value: Result<Value, serde_json::Error>| {
            value.map_err(|err| ApiError::internal(format!("cannot encode the summary: {err}")))
        };
        if account.provider.shape() != crate::domain::Shape::Windowed {
            // Hour totals are the report streams' data; other shapes have their own below.
            if let Some(object) = summary.as_object_mut() {
                for key in ["ledger", "totals", "by_hour", "by_asin"] {
                    object.remove(key);
                }
            }
        }
        match account.provider.as_str() {
            "ebay" => {
                let orders = crate::store::cursors::latest_orders(&state.ledger, id, 20)?;
                let events = crate::store::cursors::recent_events(&state.ledger, Some(id), 20)?;
                summary["orders"] = encode(serde_json::to_value(orders))?;
                summary["changes"] = encode(serde_json::to_value(events))?;
            }
            "stockx" | "keepa" | "alias" => {
                let prices: Vec<_> = crate::store::jobs::market_prices(&state.ledger, 200)?
                    .into_iter()
                    .filter(|price| price.provider == account.provider.as_str())
                    .take(50)
                    .collect();
                summary["market_prices"] = encode(serde_json::to_value(prices))?;
                if account.provider == crate::domain::Provider::Keepa {
                    let products = crate::store::jobs::keepa_products(&state.ledger, 50)?;
                    summary["keepa_products"] = encode(serde_json::to_value(products))?;
                }
            }
            _ => {}
        }
        Ok(summary)
    })
    .await?;
    Ok(Json(value))
}

/// `GET /api/failures?limit=50`: the most recently failed hours, newest first.
pub async fn failures(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["limit"])?;
    let limit = query_number(&query, "limit", 50, 1000)?;
    let value = blocking(&state, move |state| {
        let rows: Vec<Value> = state
            .ledger
            .recent_failures(limit)?
            .into_iter()
            .map(|failed| {
                json!({
                    "account": failed.account,
                    "stream": failed.stream,
                    "hour_utc": format_ts(failed.hour_utc),
                    "attempts": failed.attempts,
                    "last_error": failed.last_error,
                    "next_retry_at": failed.next_retry_at.map(format_ts),
                    "failed_at": format_ts(failed.updated_at),
                })
            })
            .collect();
        Ok(json!({ "failures": rows }))
    })
    .await?;
    Ok(Json(value))
}

/// `GET /api/locks`.
pub async fn locks(State(state): State<HttpState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(LOCKS_TIMEOUT, state.locks.list()).await {
        Ok(Ok(locks)) => Ok(Json(json!({
            "backend": state.locks.backend(),
            "locks": locks,
        }))),
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

/// `GET /api/budgets`: the provider budgets for the current hour (seed 002's
/// market_budgets): every quota bucket the TokenManager holds, with its rate (per second
/// and per hour), burst, tokens available now, and the calls this process made in the
/// current UTC hour. 503 when the daemon runs without a TokenManager.
pub async fn budgets(State(state): State<HttpState>) -> Result<Json<Value>, ApiError> {
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
    let rows: Vec<Value> = buckets
        .into_iter()
        .map(|(key, view)| {
            json!({
                "provider": key.provider,
                "operation": key.operation,
                "scope": key.scope,
                "rate_per_second": view.rate,
                "rate_per_hour": view.rate * 3600.0,
                "burst": view.burst,
                "configured_burst": view.configured_burst,
                "burst_corrections": view.corrections,
                "tokens": view.tokens,
                "reserve_share": view.reserve_share,
                "calls_this_hour": metrics.calls_in_hour(key.provider.as_str(), &key.operation, hour),
            })
        })
        .collect();
    Ok(Json(json!({
        "hour": crate::domain::format_ts(hour),
        "buckets": rows,
    })))
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FillDayBody {
    date: String,
    stream: Option<String>,
}

/// `POST /api/accounts/{id}/fill-day`: `marketsync fill-day` for one or every stream.
pub async fn fill_day(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    let value = blocking(&state, move |state| {
        let now = now_ts();
        let mut out = Vec::new();
        let mut total = 0;
        for (stream, window) in windows {
            let reset = state.ledger.reset_window(
                &account.id,
                &stream,
                window,
                Priority::Manual,
                now,
            )?;
            total += reset;
            out.push(json!({
                "stream": stream,
                "hours_reset": reset,
                "from": format_ts(window.start),
                "to": format_ts(window.end),
            }));
        }
        info!(account = %account.id, date = %date, hours_reset = total, "fill-day requested");
        Ok(json!({
            "status": "success",
            "date": date,
            "hours_reset": total,
            "streams": out,
            "message": format!("{total} hour(s) of {date} reset to MISSING; the daemon fetches them on its next run"),
        }))
    })
    .await?;
    Ok(Json(value))
}

/// Body of `POST /api/accounts/{id}/reset-failed`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamBody {
    stream: Option<String>,
}

/// `POST /api/accounts/{id}/reset-failed`: FAILED hours become MISSING at manual
/// priority, claimable at once (their retry wait and attempt count are cleared).
pub async fn reset_failed(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let account = state.account(&id)?.clone();
    let body: StreamBody = parse_body(
        &body,
        Some(StreamBody::default()),
        r#"{"stream":"vendor_rt_sales"} or an empty body"#,
    )?;
    let streams = select_streams(&account, body.stream.as_deref())?;
    debug_assert!(HourState::Failed.can_become(HourState::Missing));
    let value = blocking(&state, move |state| {
        let now = now_ts();
        let mut out = Vec::new();
        let mut total = 0u64;
        for stream in &streams {
            let reset =
                state
                    .ledger
                    .reset_failed(&account.id, &stream.name, Priority::Manual, now)?;
            total += reset;
            out.push(json!({"stream": stream.name, "hours_reset": reset}));
        }
        info!(account = %account.id, hours_reset = total, "failed hours reset");
        Ok(json!({
            "status": "success",
            "hours_reset": total,
            "streams": out,
            "message": format!("{total} FAILED hour(s) reset to MISSING; the daemon retries them on its next run"),
        }))
    })
    .await?;
    Ok(Json(value))
}

/// `POST /api/accounts/{id}/clear-cooldown`: ends the account's provider cooldown
/// (quota or auth) so the next run calls the provider again.
pub async fn clear_cooldown(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let account = state.account(&id)?.clone();
    let scope = account_scope(account.provider.as_str(), &account.id);
    let previous = {
        let scope = scope.clone();
        blocking(&state, move |state| {
            Ok(state.ledger.active_cooldown(&scope, now_ts())?)
        })
        .await?
    };
    // The same clear as `marketsync cooldowns clear`: SQLite and, when configured, Redis
    // (the TokenManager's shared store), including the seller's related scopes.
    let cleared_scopes = crate::diagnose::cooldowns::clear(&state.config, &scope)
        .await
        .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    let cleared = !cleared_scopes.is_empty();
    info!(account = %account.id, cleared, "cooldown cleared");
    Ok(Json(json!({
        "status": "success",
        "scope": scope,
        "cleared": previous.is_some() && cleared,
        "previous": previous.map(|cooldown| json!({
            "reason": cooldown.reason,
            "until_utc": format_ts(cooldown.until_at),
            "detail": cooldown.detail,
        })),
        "message": if cleared {
            "cooldown cleared; the daemon calls the provider again on its next run".to_string()
        } else {
            "no cooldown was set for this account".to_string()
        },
    })))
}

/// `POST /api/accounts/{id}/resume`: asks the running daemon to clear the quarantine
/// (picked up within one supervisor heartbeat). 409 when the account is not quarantined.
pub async fn resume(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let account = state.account(&id)?.clone();
    let value = blocking(&state, move |state| {
        let (requested, current) = state.ledger.with_conn(|conn| {
            let requested = crate::store::supervision::request_resume(conn, &account.id)?;
            let current = crate::store::supervision::state_of(conn, &account.id)?;
            Ok::<_, rusqlite::Error>((requested, current))
        })?;
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
        Ok(json!({
            "status": "success",
            "resume_requested": true,
            "message": format!("resume of {} requested; the daemon restarts it within one supervisor heartbeat", account.id),
        }))
    })
    .await?;
    Ok(Json(value))
}

/// Body of `POST /api/locks/{account}/{stream}/release`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default)]
    force: bool,
}

/// `POST /api/locks/{account}/{stream}/release`: releases a stale lease; a live one only
/// with `{"force": true}` (409 otherwise, naming its holder).
pub async fn release_lock(
    State(state): State<HttpState>,
    Path((account, stream)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ReleaseBody = parse_body(
        &body,
        Some(ReleaseBody::default()),
        r#"{"force":true} or an empty body"#,
    )?;
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
            Ok(Json(json!({
                "status": "success",
                "was_live": !info.stale,
                "released": info,
            })))
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
