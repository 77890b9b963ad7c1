//! The job queue over HTTP: list jobs by state with the queue depth, enqueue (merging
//! into a live job with the same key), and re-queue failed jobs. The store is
//! [`crate::store::jobs`]; this module only validates and maps errors.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::api::{check_query_keys, query_map, query_number};
use super::openapi::{ErrorBody, SuccessStatus};
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

/// The `provider` of the job endpoints: the names of [`store::JOB_PROVIDERS`].
pub struct JobProviderName;

impl utoipa::PartialSchema for JobProviderName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::openapi::string_enum(
            "A provider whose lookups run as jobs",
            store::JOB_PROVIDERS.iter().copied(),
        )
    }
}

impl ToSchema for JobProviderName {
    fn name() -> std::borrow::Cow<'static, str> {
        "JobProvider".into()
    }
}

/// The most jobs or tracked keys one list answer carries.
pub const MAX_LIST: i64 = 1000;

/// A job as the API shows it: timestamps as RFC 3339 UTC.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub provider: String,
    pub sku: String,
    #[schema(required = true)]
    pub size: Option<String>,
    /// The key jobs are deduplicated on.
    pub dedupe_key: String,
    /// 100 background, 150 hot, 200 manual.
    pub priority: i64,
    pub priority_name: JobPriority,
    pub state: JobState,
    pub attempts: i64,
    #[schema(required = true)]
    pub error: Option<String>,
    /// Not claimed before this time.
    pub not_before: String,
    #[schema(required = true)]
    pub lease_owner: Option<String>,
    #[schema(required = true)]
    pub lease_until: Option<String>,
    /// Who asked: `deal`, `backfill`, `cli`, `api`, `freshness`, ...
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    #[schema(required = true)]
    pub finished_at: Option<String>,
}

impl From<&store::Job> for JobView {
    fn from(job: &store::Job) -> JobView {
        JobView {
            id: job.id,
            provider: job.provider.clone(),
            sku: job.sku.clone(),
            size: job.size.clone(),
            dedupe_key: job.dedupe_key.clone(),
            priority: job.priority,
            priority_name: job.level(),
            state: job.state,
            attempts: job.attempts,
            error: job.error.clone(),
            not_before: format_ts(job.not_before),
            lease_owner: job.lease_owner.clone(),
            lease_until: job.lease_until.map(format_ts),
            source: job.source.clone(),
            created_at: format_ts(job.created_at),
            updated_at: format_ts(job.updated_at),
            finished_at: job.finished_at.map(format_ts),
        }
    }
}

/// Jobs of one provider in one state.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDepth {
    pub provider: String,
    pub state: String,
    pub count: i64,
}

/// `GET /api/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobsDocument {
    /// Jobs per provider and state.
    pub depth: Vec<QueueDepth>,
    /// The most recently updated jobs (of `state`, when given).
    pub jobs: Vec<JobView>,
    /// The freshness scheduler's newest pass per provider.
    pub freshness: Vec<PassView>,
    /// Its 20 most recent passes.
    pub runs: Vec<PassView>,
}

/// `GET /api/jobs?state=failed&limit=100`: the queue depth per provider and state, and
/// the most recently updated jobs (of `state`, when given).
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    params(
        ("state" = Option<JobState>, Query, description = "Only jobs in this state"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "How many jobs (default 100)"),
    ),
    responses(
        (status = 200, description = "Queue depth, latest jobs and the freshness scheduler's passes", body = JobsDocument),
        (status = 400, description = "An unknown state, a number out of range or an unknown query parameter", body = ErrorBody),
        (status = 500, description = "The database could not be read", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<JobsDocument>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["state", "limit"])?;
    let limit = query_number(&query, "limit", 100, MAX_LIST)? as usize;
    let job_state = match query.get("state") {
        Some(text) => Some(text.parse::<JobState>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let document = blocking(&state, move |state| {
        let depth = store::queue_depth(state.hours.as_ref())?
            .into_iter()
            .map(|(provider, state, count)| QueueDepth {
                provider,
                state,
                count,
            })
            .collect();
        let jobs = store::list_jobs(state.hours.as_ref(), job_state, limit)?
            .iter()
            .map(JobView::from)
            .collect();
        // The freshness scheduler: its newest pass per provider (with the fresh share)
        // and the recent passes.
        let freshness = crate::store::tracked::latest_passes(state.hours.as_ref())?
            .iter()
            .map(PassView::from)
            .collect();
        let runs = crate::store::tracked::recent_passes(state.hours.as_ref(), None, 20)?
            .iter()
            .map(PassView::from)
            .collect();
        Ok(JobsDocument {
            depth,
            jobs,
            freshness,
            runs,
        })
    })
    .await?;
    Ok(Json(document))
}

/// Body of `POST /api/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// A job provider with a configured account.
    #[schema(value_type = JobProviderName)]
    provider: String,
    /// The product key (StockX style, ASIN, eBay GTIN or keywords): 1 to 64 letters,
    /// digits, `-`, `_`, `.`, `:`, `/` or spaces.
    #[schema(
        example = "DD1391-100",
        pattern = r"^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$",
        max_length = 64
    )]
    sku: String,
    /// The size (StockX, Alias: required; Keepa: none; eBay: optional); Alias sizes are
    /// positive numbers up to 100.
    #[schema(
        example = "10",
        pattern = r"^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$",
        max_length = 64
    )]
    size: Option<String>,
    /// Default `manual` (a person asked).
    #[schema(value_type = Option<JobPriority>)]
    priority: Option<String>,
}

/// The answer of `POST /api/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueueDone {
    pub status: SuccessStatus,
    pub job: store::EnqueueOutcome,
}

/// `POST /api/jobs` `{"provider": "stockx", "sku": "DD1391-100", "size": "10",
/// "priority": "manual"}` (priority defaults to manual: a person asked). A job with the
/// same key that is still pending or running absorbs it and keeps the higher priority.
#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "jobs",
    request_body(content = EnqueueBody, description = "The key to look up"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A new job, or merged into the live job with the same key", body = EnqueueDone),
        (status = 400, description = "No account of that provider, an invalid key or priority, or a bad body", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn enqueue(
    State(state): State<HttpState>,
    body: Bytes,
) -> Result<Json<EnqueueDone>, ApiError> {
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
        Ok(store::enqueue(state.hours.as_ref(), &job)?)
    })
    .await?;
    info!(outcome = ?outcome, "job enqueued over http");
    Ok(Json(EnqueueDone {
        status: SuccessStatus::Success,
        job: outcome,
    }))
}

/// Body of `POST /api/jobs/reset-failed`; an empty body means every provider.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// Only this job provider's failed jobs.
    #[schema(value_type = Option<JobProviderName>)]
    provider: Option<String>,
}

/// The answer of `POST /api/jobs/reset-failed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetJobsDone {
    pub status: SuccessStatus,
    /// Failed jobs now pending again.
    pub reset: u64,
}

/// `POST /api/jobs/reset-failed` `{"provider": optional}`: failed jobs back to pending
/// with fresh attempts.
#[utoipa::path(
    post,
    path = "/api/jobs/reset-failed",
    tag = "jobs",
    request_body(content = Option<ResetBody>, description = "Optional: the provider (an empty body resets every provider's)"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Failed jobs are pending again", body = ResetJobsDone),
        (status = 400, description = "An unknown job provider or a bad body", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn reset_failed(
    State(state): State<HttpState>,
    body: Bytes,
) -> Result<Json<ResetJobsDone>, ApiError> {
    // The document calls the body optional (an empty body or JSON `null`).
    let body: ResetBody =
        parse_body::<Option<ResetBody>>(&body, Some(None), r#"{"provider": "stockx"}"#)?
            .unwrap_or_default();
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
            state.hours.as_ref(),
            body.provider.as_deref(),
        )?)
    })
    .await?;
    info!(reset, "failed jobs re-queued over http");
    Ok(Json(ResetJobsDone {
        status: SuccessStatus::Success,
        reset: reset as u64,
    }))
}

/// The most keys one `POST /api/tracked` may carry (bodies are capped at 64 KiB anyway).
pub const MAX_TRACK_ITEMS: usize = 1_000;

/// One key of `POST /api/tracked`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackItem {
    #[schema(value_type = JobProviderName)]
    provider: String,
    /// As in `POST /api/jobs`.
    #[schema(
        example = "B07FZ8S74R",
        pattern = r"^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$",
        max_length = 64
    )]
    sku: String,
    /// As in `POST /api/jobs`.
    #[schema(pattern = r"^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$", max_length = 64)]
    size: Option<String>,
}

/// Body of `POST /api/tracked`: one key (`provider`, `sku`, `size`) or `items`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackBody {
    #[schema(value_type = Option<JobProviderName>)]
    provider: Option<String>,
    /// As in `POST /api/jobs`.
    #[schema(
        example = "DD1391-100",
        pattern = r"^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$",
        max_length = 64
    )]
    sku: Option<String>,
    /// As in `POST /api/jobs`.
    #[schema(pattern = r"^[A-Za-z0-9._:/-][A-Za-z0-9._:/ -]*$", max_length = 64)]
    size: Option<String>,
    /// 1 to 1000 keys, all or nothing.
    #[schema(max_items = 1000)]
    items: Option<Vec<TrackItem>>,
}

/// The answer of `POST /api/tracked`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackDone {
    pub status: SuccessStatus,
    /// Keys newly tracked.
    pub added: u64,
    /// Keys that were tracked already (left as they were).
    pub already: u64,
}

/// `POST /api/tracked` `{"provider": "stockx", "sku": "DD1391-100", "size": "10"}` or
/// `{"items": [{"provider", "sku", "size"?}, ...]}` (at most [`MAX_TRACK_ITEMS`]): tracks
/// the keys; the next freshness pass queues new ones at hot priority. All or nothing:
/// the first invalid item is named (`items[3]: ...`) and nothing is tracked.
#[utoipa::path(
    post,
    path = "/api/tracked",
    tag = "jobs",
    request_body(content = TrackBody, description = "One key, or `items`"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The keys are tracked", body = TrackDone),
        (status = 400, description = "Both or neither forms, an empty or too long `items`, an invalid key (named) or a bad body", body = ErrorBody),
        (status = 500, description = "The database could not be written", body = ErrorBody),
    ),
)]
pub async fn track(
    State(state): State<HttpState>,
    body: Bytes,
) -> Result<Json<TrackDone>, ApiError> {
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
            state.hours.as_ref(),
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
    Ok(Json(TrackDone {
        status: SuccessStatus::Success,
        added: outcome.added as u64,
        already: outcome.already as u64,
    }))
}

/// A tracked key.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackedView {
    pub provider: String,
    pub sku: String,
    #[schema(required = true)]
    pub size: Option<String>,
    pub dedupe_key: String,
    pub added_at: String,
    /// Who tracked it: `api`, `cli`, `import`, ...
    pub source: String,
    /// When its last job succeeded.
    #[schema(required = true)]
    pub last_success: Option<String>,
}

/// Keys tracked for one provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackedCount {
    pub provider: String,
    pub tracked: i64,
}

/// `GET /api/tracked`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackedDocument {
    pub counts: Vec<TrackedCount>,
    pub items: Vec<TrackedView>,
}

/// `GET /api/tracked?provider=stockx&limit=100`: tracked keys with their last success.
#[utoipa::path(
    get,
    path = "/api/tracked",
    tag = "jobs",
    params(
        ("provider" = Option<String>, Query, description = "Only this provider's keys"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "How many keys (default 100)"),
    ),
    responses(
        (status = 200, description = "Tracked keys and counts per provider", body = TrackedDocument),
        (status = 400, description = "A number out of range or an unknown query parameter", body = ErrorBody),
        (status = 500, description = "The database could not be read", body = ErrorBody),
    ),
)]
pub async fn tracked_list(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<TrackedDocument>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["provider", "limit"])?;
    let limit = query_number(&query, "limit", 100, MAX_LIST)? as usize;
    let provider = query.get("provider").cloned();
    let document = blocking(&state, move |state| {
        let items =
            crate::store::tracked::list_tracked(state.hours.as_ref(), provider.as_deref(), limit)?
                .iter()
                .map(|item| TrackedView {
                    provider: item.provider.clone(),
                    sku: item.sku.clone(),
                    size: item.size.clone(),
                    dedupe_key: item.dedupe_key.clone(),
                    added_at: format_ts(item.added_at),
                    source: item.source.clone(),
                    last_success: item.last_success.map(format_ts),
                })
                .collect();
        let counts = crate::store::tracked::tracked_providers(state.hours.as_ref())?
            .into_iter()
            .map(|(provider, tracked)| TrackedCount { provider, tracked })
            .collect();
        Ok(TrackedDocument { counts, items })
    })
    .await?;
    Ok(Json(document))
}

/// A freshness scheduler pass as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PassView {
    pub provider: String,
    pub started_at: String,
    pub finished_at: String,
    pub tracked: i64,
    pub fresh: i64,
    /// `fresh / tracked`, 1 when nothing is tracked.
    pub fresh_share: f64,
    pub stale_after_secs: i64,
    pub live: i64,
    pub selected: i64,
    pub hot: i64,
    pub background: i64,
    pub merged: i64,
    pub deferred: i64,
    /// Jobs the provider's buckets could serve before the next pass.
    pub budget_left: f64,
    /// `ok`, `no_budget`, `no_accounts` or `error`.
    pub outcome: String,
}

impl From<&crate::store::tracked::PassRecord> for PassView {
    fn from(pass: &crate::store::tracked::PassRecord) -> PassView {
        PassView {
            provider: pass.provider.clone(),
            started_at: format_ts(pass.started_at),
            finished_at: format_ts(pass.finished_at),
            tracked: pass.tracked,
            fresh: pass.fresh,
            fresh_share: pass.fresh_share(),
            stale_after_secs: pass.stale_after,
            live: pass.live,
            selected: pass.selected,
            hot: pass.hot,
            background: pass.background,
            merged: pass.merged,
            deferred: pass.deferred,
            budget_left: pass.budget_left,
            outcome: pass.outcome.clone(),
        }
    }
}
