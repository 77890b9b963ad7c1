//! The job queue over HTTP: list jobs by state with the queue depth, enqueue (merging
//! into a live job with the same key), and re-queue failed jobs. The store is
//! [`crate::store::jobs`]; this module only validates and maps errors.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::api::{check_query_keys, query_map, query_number};
use super::{blocking, parse_body, ApiError, HttpState};
use crate::domain::format_ts;
use crate::store::jobs::{self as store, JobError, JobPriority, JobState, NewJob};

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Invalid(message) => ApiError::bad_request(message),
            JobError::Ledger(err) => err.into(),
        }
    }
}

/// A job as the API shows it: timestamps as RFC 3339 UTC.
fn job_json(job: &store::Job) -> Value {
    json!({
        "id": job.id,
        "provider": job.provider,
        "sku": job.sku,
        "size": job.size,
        "dedupe_key": job.dedupe_key,
        "priority": job.priority,
        "priority_name": job.level().as_str(),
        "state": job.state,
        "attempts": job.attempts,
        "error": job.error,
        "not_before": format_ts(job.not_before),
        "lease_owner": job.lease_owner,
        "lease_until": job.lease_until.map(format_ts),
        "source": job.source,
        "created_at": format_ts(job.created_at),
        "updated_at": format_ts(job.updated_at),
        "finished_at": job.finished_at.map(format_ts),
    })
}

/// `GET /api/jobs?state=failed&limit=100`: the queue depth per provider and state, and
/// the most recently updated jobs (of `state`, when given).
pub async fn list(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["state", "limit"])?;
    let limit = query_number(&query, "limit", 100, 1000)? as usize;
    let job_state = match query.get("state") {
        Some(text) => Some(text.parse::<JobState>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let value = blocking(&state, move |state| {
        let depth: Vec<Value> = store::queue_depth(&state.ledger)?
            .into_iter()
            .map(|(provider, state, count)| json!({"provider": provider, "state": state, "count": count}))
            .collect();
        let jobs: Vec<Value> = store::list_jobs(&state.ledger, job_state, limit)?
            .iter()
            .map(job_json)
            .collect();
        // The freshness scheduler: its newest pass per provider (with the fresh share)
        // and the recent passes.
        let freshness: Vec<Value> = crate::store::tracked::latest_passes(&state.ledger)?
            .iter()
            .map(pass_json)
            .collect();
        let runs: Vec<Value> = crate::store::tracked::recent_passes(&state.ledger, None, 20)?
            .iter()
            .map(pass_json)
            .collect();
        Ok(json!({"depth": depth, "jobs": jobs, "freshness": freshness, "runs": runs}))
    })
    .await?;
    Ok(Json(value))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    provider: String,
    sku: String,
    size: Option<String>,
    priority: Option<String>,
}

/// `POST /api/jobs` `{"provider": "stockx", "sku": "DD1391-100", "size": "10",
/// "priority": "manual"}` (priority defaults to manual: a person asked). A job with the
/// same key that is still pending or running absorbs it and keeps the higher priority.
pub async fn enqueue(State(state): State<HttpState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    const EXAMPLE: &str =
        r#"{"provider": "stockx", "sku": "DD1391-100", "size": "10", "priority": "manual"}"#;
    let body: EnqueueBody = parse_body(&body, None, EXAMPLE)?;
    let priority = match body.priority.as_deref() {
        Some(text) => text.parse::<JobPriority>().map_err(ApiError::bad_request)?,
        None => JobPriority::Manual,
    };
    let provider = body.provider.trim().to_ascii_lowercase();
    if !state.config.accounts.iter().any(|account| {
        account.provider.as_str() == provider
            && account
                .streams
                .iter()
                .any(|stream| matches!(stream.shape, crate::shapes::spec::ShapeSettings::Jobs(_)))
    }) {
        let served: Vec<&str> = store::JOB_PROVIDERS
            .iter()
            .copied()
            .filter(|name| {
                state
                    .config
                    .accounts
                    .iter()
                    .any(|a| a.provider.as_str() == *name)
            })
            .collect();
        return Err(ApiError::bad_request(format!(
            "no {provider:?} account with an enabled stream is configured, so the job would never run; job providers configured here: {}",
            if served.is_empty() { "none".to_string() } else { served.join(", ") }
        )));
    }
    let job = NewJob {
        provider,
        sku: body.sku,
        size: body.size,
        priority,
        source: "api".to_string(),
    };
    let outcome = blocking(&state, move |state| {
        Ok(store::enqueue(&state.ledger, &job)?)
    })
    .await?;
    info!(outcome = ?outcome, "job enqueued over http");
    Ok(Json(json!({"status": "success", "job": outcome})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    provider: Option<String>,
}

/// `POST /api/jobs/reset-failed` `{"provider": optional}`: failed jobs back to pending
/// with fresh attempts.
pub async fn reset_failed(
    State(state): State<HttpState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ResetBody = parse_body(
        &body,
        Some(ResetBody::default()),
        r#"{"provider": "stockx"}"#,
    )?;
    if let Some(provider) = &body.provider {
        if !store::JOB_PROVIDERS.contains(&provider.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown job provider {provider:?}; expected one of {}",
                store::JOB_PROVIDERS.join(", ")
            )));
        }
    }
    let reset = blocking(&state, move |state| {
        Ok(store::reset_failed(
            &state.ledger,
            body.provider.as_deref(),
        )?)
    })
    .await?;
    info!(reset, "failed jobs re-queued over http");
    Ok(Json(json!({"status": "success", "reset": reset})))
}

/// The most keys one `POST /api/tracked` may carry (bodies are capped at 64 KiB anyway).
pub const MAX_TRACK_ITEMS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackItem {
    provider: String,
    sku: String,
    size: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackBody {
    provider: Option<String>,
    sku: Option<String>,
    size: Option<String>,
    items: Option<Vec<TrackItem>>,
}

/// `POST /api/tracked` `{"provider": "stockx", "sku": "DD1391-100", "size": "10"}` or
/// `{"items": [{"provider", "sku", "size"?}, ...]}` (at most [`MAX_TRACK_ITEMS`]): tracks
/// the keys; the next freshness pass queues new ones at hot priority. All or nothing:
/// the first invalid item is named (`items[3]: ...`) and nothing is tracked.
pub async fn track(State(state): State<HttpState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    const EXAMPLE: &str = r#"{"provider": "stockx", "sku": "DD1391-100", "size": "10"} or {"items": [{"provider": "keepa", "sku": "B07FZ8S74R"}]}"#;
    let body: TrackBody = parse_body(&body, None, EXAMPLE)?;
    let items = match (body.items, body.provider, body.sku) {
        (Some(items), None, None) if body.size.is_none() => items,
        (None, Some(provider), Some(sku)) => vec![TrackItem {
            provider,
            sku,
            size: body.size,
        }],
        _ => {
            return Err(ApiError::bad_request(format!(
                "give either provider and sku (and size) or items, not both or neither; send for example {EXAMPLE}"
            )))
        }
    };
    if items.is_empty() || items.len() > MAX_TRACK_ITEMS {
        return Err(ApiError::bad_request(format!(
            "items holds {} keys; send 1 to {MAX_TRACK_ITEMS} per request (or use `marketsync track import` for a file)",
            items.len()
        )));
    }
    let mut jobs = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let job = store::validate(&NewJob {
            provider: item.provider,
            sku: item.sku,
            size: item.size,
            priority: JobPriority::Hot,
            source: "api".to_string(),
        })
        .map_err(|err| ApiError::bad_request(format!("items[{index}]: {err}")))?;
        jobs.push(job);
    }
    let outcome = blocking(&state, move |state| {
        Ok(crate::store::tracked::track_many(
            &state.ledger,
            &jobs,
            "api",
            crate::domain::now_ts(),
        )?)
    })
    .await?;
    info!(
        added = outcome.added,
        already = outcome.already,
        "keys tracked over http"
    );
    Ok(Json(
        json!({"status": "success", "added": outcome.added, "already": outcome.already}),
    ))
}

/// `GET /api/tracked?provider=stockx&limit=100`: tracked keys with their last success.
pub async fn tracked_list(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["provider", "limit"])?;
    let limit = query_number(&query, "limit", 100, 1000)? as usize;
    let provider = query.get("provider").cloned();
    let value = blocking(&state, move |state| {
        let items: Vec<Value> =
            crate::store::tracked::list_tracked(&state.ledger, provider.as_deref(), limit)?
                .iter()
                .map(|item| {
                    json!({
                        "provider": item.provider,
                        "sku": item.sku,
                        "size": item.size,
                        "dedupe_key": item.dedupe_key,
                        "added_at": format_ts(item.added_at),
                        "source": item.source,
                        "last_success": item.last_success.map(format_ts),
                    })
                })
                .collect();
        let counts: Vec<Value> = crate::store::tracked::tracked_providers(&state.ledger)?
            .into_iter()
            .map(|(provider, count)| json!({"provider": provider, "tracked": count}))
            .collect();
        Ok(json!({"counts": counts, "items": items}))
    })
    .await?;
    Ok(Json(value))
}

/// A scheduler pass as the API shows it.
pub fn pass_json(pass: &crate::store::tracked::PassRecord) -> Value {
    json!({
        "provider": pass.provider,
        "started_at": format_ts(pass.started_at),
        "finished_at": format_ts(pass.finished_at),
        "tracked": pass.tracked,
        "fresh": pass.fresh,
        "fresh_share": pass.fresh_share(),
        "stale_after_secs": pass.stale_after,
        "live": pass.live,
        "selected": pass.selected,
        "hot": pass.hot,
        "background": pass.background,
        "merged": pass.merged,
        "deferred": pass.deferred,
        "budget_left": pass.budget_left,
        "outcome": pass.outcome,
    })
}
