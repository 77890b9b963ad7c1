//! What the dashboard's pictures read, and the sampler that records the short history.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/accounts/{id}/streams/{stream}/hours?days=N` | every hour of a report stream's last `N` days (default: exactly its lookback; `N` at most [`MAX_HEATMAP_DAYS`]) with its ledger state and failure record: the heatmap |
//! | GET | `/api/history/buckets?provider=&limit=` | per quota bucket, the last hour of tokens and calls |
//! | GET | `/api/history/cursors?account=&limit=` | per cursor stream, the last hour of its lag |
//! | GET | `/api/history/queues?provider=` | per job provider, the last hour of its queue depth |
//!
//! The heatmap comes from the ledger (read pool). The three series come from
//! [`crate::telemetry::history::History`], filled by [`run_sampler`]: a root service
//! (`history`) that every `[http] history_interval` (15 s) reads the TokenManager's
//! buckets, the cursors and the job-queue depth. `limit` is at most
//! [`MAX_SERIES_PER_ANSWER`]; a bad `days` or `limit` is a 400 naming the bound.
//!
//! Response structs derive `Serialize` so the OpenAPI document can describe them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Serialize;
use tracing::warn;
use utoipa::ToSchema;

use super::api::{check_query_keys, query_map, query_number};
use super::openapi::ErrorBody;
use super::{blocking, ApiError, HttpState};
use crate::domain::{format_ts, now_ts, HOUR};
use crate::shapes::spec::ShapeSettings;
use crate::telemetry::history::{
    lock, BucketId, BucketSample, History, LagSample, QueueSample, StreamId, DEFAULT_MAX_SERIES,
};

/// The most days a heatmap covers (the longest lookback a stream may have: 90 days).
pub const MAX_HEATMAP_DAYS: i64 = 90;
/// The most series one history answer carries.
pub const MAX_SERIES_PER_ANSWER: i64 = 1000;
/// Series per history answer when `limit` is not given.
pub const DEFAULT_SERIES_PER_ANSWER: i64 = 50;
/// How long one sampling pass may wait for the TokenManager or the database.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(10);

/// One hour of the heatmap.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HourView {
    /// The hour's start, `2026-11-23T14:00:00Z`.
    pub hour_utc: String,
    /// The ledger state (`MISSING`, `REQUESTED`, `DOWNLOADED`, `APPLIED`, `FAILED`), or
    /// `NONE` for an hour with no ledger row (not seeded yet, or outside the lookback).
    pub state: String,
    pub attempts: i64,
    /// The failure record of a FAILED hour (the last error of an hour claimed again).
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true)]
    pub next_retry_at: Option<String>,
    #[schema(required = true)]
    pub updated_at: Option<String>,
    #[schema(required = true)]
    pub applied_at: Option<String>,
}

/// `GET /api/accounts/{id}/streams/{stream}/hours`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HoursView {
    pub account: String,
    pub stream: String,
    /// The `days` asked for, or the lookback in days rounded up when none was.
    pub days: i64,
    /// The stream's configured lookback, in hours.
    pub lookback_hours: i64,
    /// The first hour shown (inclusive) and the end (exclusive): the end of the lookback
    /// window (the newest complete hour plus the safety lag).
    pub from: String,
    pub to: String,
    /// Hours per state over the range (`NONE` included).
    pub counts: BTreeMap<String, u64>,
    /// Every hour of the range, oldest first: `days * 24` entries, or one per hour of
    /// the lookback when `days` was not given.
    pub hours: Vec<HourView>,
}

/// `GET /api/accounts/{id}/streams/{stream}/hours?days=N`.
#[utoipa::path(
    get,
    path = "/api/accounts/{id}/streams/{stream}/hours",
    tag = "status",
    params(
        ("id" = String, Path, description = "The account id"),
        ("stream" = String, Path, description = "A report (windowed) stream of that account"),
        ("days" = Option<i64>, Query, minimum = 1, maximum = 90, description = "Days back from the end of the lookback window (default: exactly the lookback)"),
    ),
    responses(
        (status = 200, description = "Every hour of the range with its ledger state and failure record", body = HoursView),
        (status = 400, description = "`days` out of range, an unknown query parameter, or a stream that is not a report stream", body = ErrorBody),
        (status = 404, description = "No such account or no such enabled stream", body = ErrorBody),
        (status = 500, description = "The database could not be read", body = ErrorBody),
    ),
)]
pub async fn hours(
    State(state): State<HttpState>,
    Path((id, stream_name)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<HoursView>, ApiError> {
    let account = state.account(&id)?.clone();
    let Some(stream) = account.stream(&stream_name).cloned() else {
        let known: Vec<&str> = account.streams.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "account {id} has no enabled stream {stream_name:?}; enabled streams: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let ShapeSettings::Windowed(windowed) = &stream.shape else {
        return Err(ApiError::bad_request(format!(
            "stream {stream_name} of account {id} is not a report stream, so it has no hours; its position is in GET /api/status (cursor lag in GET /api/history/cursors, queue depth in GET /api/history/queues)"
        )));
    };
    let lookback_hours = i64::try_from(windowed.lookback.as_secs() / 3600).unwrap_or(i64::MAX);
    let query = query_map(query)?;
    check_query_keys(&query, &["days"])?;
    let max_hours = MAX_HEATMAP_DAYS * 24;
    let default_days = (lookback_hours.saturating_add(23) / 24).clamp(1, MAX_HEATMAP_DAYS);
    let days = query_number(&query, "days", default_days, MAX_HEATMAP_DAYS)?;
    // Without `days`: exactly the lookback's hours (a 12 h lookback is 12 cells).
    let span_hours = if query.contains_key("days") {
        days * 24
    } else {
        lookback_hours.clamp(1, max_hours)
    };
    let view = blocking(&state, move |state| {
        let now = now_ts();
        let to = crate::shapes::windowed::lookback_window(&stream, now).end;
        let from = to.saturating_sub(span_hours.saturating_mul(HOUR));
        let cells = state.hours.stream_hours(
            &account.id,
            &stream.name,
            from,
            to,
            usize::try_from(span_hours).unwrap_or(0),
        )?;
        let mut by_hour: HashMap<i64, crate::store::history::HourCell> = cells
            .into_iter()
            .map(|cell| (cell.hour_utc, cell))
            .collect();
        let mut counts = BTreeMap::new();
        let mut hours = Vec::with_capacity(usize::try_from(span_hours).unwrap_or(0));
        let mut hour = from;
        while hour < to {
            let view = match by_hour.remove(&hour) {
                Some(cell) => HourView {
                    hour_utc: format_ts(hour),
                    state: cell.state,
                    attempts: cell.attempts,
                    last_error: cell.last_error,
                    next_retry_at: cell.next_retry_at.map(format_ts),
                    updated_at: Some(format_ts(cell.updated_at)),
                    applied_at: cell.applied_at.map(format_ts),
                },
                None => HourView {
                    hour_utc: format_ts(hour),
                    state: "NONE".to_string(),
                    attempts: 0,
                    last_error: None,
                    next_retry_at: None,
                    updated_at: None,
                    applied_at: None,
                },
            };
            *counts.entry(view.state.clone()).or_insert(0u64) += 1;
            hours.push(view);
            hour += HOUR;
        }
        Ok(HoursView {
            account: account.id.clone(),
            stream: stream.name.clone(),
            days,
            lookback_hours,
            from: format_ts(from),
            to: format_ts(to),
            counts,
            hours,
        })
    })
    .await?;
    Ok(Json(view))
}

/// One quota bucket's last hour, as columns (oldest first).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BucketSeries {
    pub provider: String,
    pub operation: String,
    pub scope: String,
    /// Sample times, unix seconds.
    pub at: Vec<i64>,
    /// Tokens the bucket held.
    pub tokens: Vec<f32>,
    /// Calls granted since the sample before.
    pub calls: Vec<u32>,
}

/// `GET /api/history/buckets`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BucketHistory {
    /// Seconds between samples.
    pub interval_secs: u64,
    /// How far back a series reaches at most (an hour, or 240 samples when fewer).
    pub kept_secs: u64,
    /// Series that matched (`buckets` holds at most `limit` of them).
    pub total: usize,
    pub buckets: Vec<BucketSeries>,
}

/// One cursor stream's last hour.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CursorSeries {
    pub account: String,
    pub stream: String,
    pub at: Vec<i64>,
    /// Seconds the cursor was behind now minus the stream's safety lag.
    pub lag_secs: Vec<i64>,
}

/// `GET /api/history/cursors`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CursorHistory {
    pub interval_secs: u64,
    pub kept_secs: u64,
    pub total: usize,
    pub cursors: Vec<CursorSeries>,
}

/// One provider's job queue over the last hour.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueSeries {
    pub provider: String,
    pub at: Vec<i64>,
    pub pending: Vec<u32>,
    pub running: Vec<u32>,
}

/// `GET /api/history/queues`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueHistory {
    pub interval_secs: u64,
    pub kept_secs: u64,
    pub total: usize,
    pub queues: Vec<QueueSeries>,
}

fn series_limit(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    let limit = query_number(
        query,
        "limit",
        DEFAULT_SERIES_PER_ANSWER,
        MAX_SERIES_PER_ANSWER,
    )?;
    Ok(usize::try_from(limit).unwrap_or(0))
}

/// `GET /api/history/buckets?provider=amazon&limit=50`.
#[utoipa::path(
    get,
    path = "/api/history/buckets",
    tag = "status",
    params(
        ("provider" = Option<String>, Query, description = "Only series of this provider"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "How many series (default 50)"),
    ),
    responses(
        (status = 200, description = "The last hour of samples per quota bucket, kept in memory", body = BucketHistory),
        (status = 400, description = "`limit` out of range or an unknown query parameter", body = ErrorBody),
    ),
)]
pub async fn buckets(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<BucketHistory>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["provider", "limit"])?;
    let limit = series_limit(&query)?;
    let provider = query.get("provider").cloned();
    let (series, total) = lock(&state.history.buckets).snapshot(
        |(p, _, _)| provider.as_ref().is_none_or(|wanted| wanted == p),
        limit,
    );
    let buckets = series
        .into_iter()
        .map(|((provider, operation, scope), samples)| BucketSeries {
            provider,
            operation,
            scope,
            at: samples.iter().map(|s| s.at).collect(),
            tokens: samples.iter().map(|s| s.tokens).collect(),
            calls: samples.iter().map(|s| s.calls).collect(),
        })
        .collect();
    Ok(Json(BucketHistory {
        interval_secs: state.history.interval_secs,
        kept_secs: state.history.kept_secs(),
        total,
        buckets,
    }))
}

/// `GET /api/history/cursors?account=ebay-1&limit=50`.
#[utoipa::path(
    get,
    path = "/api/history/cursors",
    tag = "status",
    params(
        ("account" = Option<String>, Query, description = "Only series of this account"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "How many series (default 50)"),
    ),
    responses(
        (status = 200, description = "The last hour of samples per cursor stream, kept in memory", body = CursorHistory),
        (status = 400, description = "`limit` out of range or an unknown query parameter", body = ErrorBody),
    ),
)]
pub async fn cursors(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<CursorHistory>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["account", "limit"])?;
    let limit = series_limit(&query)?;
    let account = query.get("account").cloned();
    let (series, total) = lock(&state.history.cursors).snapshot(
        |(a, _)| account.as_ref().is_none_or(|wanted| wanted == a),
        limit,
    );
    let cursors = series
        .into_iter()
        .map(|((account, stream), samples)| CursorSeries {
            account,
            stream,
            at: samples.iter().map(|s| s.at).collect(),
            lag_secs: samples.iter().map(|s| s.lag_secs).collect(),
        })
        .collect();
    Ok(Json(CursorHistory {
        interval_secs: state.history.interval_secs,
        kept_secs: state.history.kept_secs(),
        total,
        cursors,
    }))
}

/// `GET /api/history/queues?provider=stockx`.
#[utoipa::path(
    get,
    path = "/api/history/queues",
    tag = "status",
    params(
        ("provider" = Option<String>, Query, description = "Only series of this provider"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "How many series (default 50)"),
    ),
    responses(
        (status = 200, description = "The last hour of samples per job provider, kept in memory", body = QueueHistory),
        (status = 400, description = "`limit` out of range or an unknown query parameter", body = ErrorBody),
    ),
)]
pub async fn queues(
    State(state): State<HttpState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<QueueHistory>, ApiError> {
    let query = query_map(query)?;
    check_query_keys(&query, &["provider", "limit"])?;
    let limit = series_limit(&query)?;
    let provider = query.get("provider").cloned();
    let (series, total) = lock(&state.history.queues).snapshot(
        |p| provider.as_ref().is_none_or(|wanted| wanted == p),
        limit,
    );
    let queues = series
        .into_iter()
        .map(|(provider, samples)| QueueSeries {
            provider,
            at: samples.iter().map(|s| s.at).collect(),
            pending: samples.iter().map(|s| s.pending).collect(),
            running: samples.iter().map(|s| s.running).collect(),
        })
        .collect();
    Ok(Json(QueueHistory {
        interval_secs: state.history.interval_secs,
        kept_secs: state.history.kept_secs(),
        total,
        queues,
    }))
}

/// Records one sample of every bucket, cursor stream and job provider every `every`,
/// forever (the `history` root service runs it; an error in one pass is logged and the
/// next pass tries again).
pub async fn run_sampler(state: HttpState, every: Duration) -> anyhow::Result<()> {
    let mut sampler = Sampler::new(&state);
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        sampler.sample(&state).await;
    }
}

/// What one sampling pass needs to remember from the one before.
pub struct Sampler {
    /// Each bucket's grant count at the pass before (only buckets that still exist).
    grants: HashMap<BucketId, u64>,
    /// The configured cursor streams and their safety lag, in seconds.
    safety_lags: HashMap<StreamId, i64>,
    /// The providers with a job stream (sampled at 0 when their queue is empty).
    job_providers: Vec<String>,
}

impl Sampler {
    pub fn new(state: &HttpState) -> Sampler {
        let mut safety_lags = HashMap::new();
        let mut job_providers = Vec::new();
        for account in &state.config.accounts {
            for stream in &account.streams {
                match stream.shape {
                    ShapeSettings::Cursor(_) => {
                        let lag = i64::try_from(stream.safety_lag.as_secs()).unwrap_or(i64::MAX);
                        safety_lags.insert((account.id.clone(), stream.name.clone()), lag);
                    }
                    ShapeSettings::Jobs(_) => {
                        let provider = account.provider.as_str().to_string();
                        if !job_providers.contains(&provider) {
                            job_providers.push(provider);
                        }
                    }
                    ShapeSettings::Windowed(_) => {}
                }
            }
        }
        Sampler {
            grants: HashMap::new(),
            safety_lags,
            job_providers,
        }
    }

    /// One pass: buckets from the TokenManager, cursors and queues from the database.
    pub async fn sample(&mut self, state: &HttpState) {
        let history = Arc::clone(&state.history);
        if let Some(quota) = &state.quota {
            match tokio::time::timeout(SAMPLE_DEADLINE, quota.buckets()).await {
                Ok(Ok(views)) => {
                    let now = now_ts();
                    let mut grants = HashMap::with_capacity(views.len());
                    let mut family = lock(&history.buckets);
                    for (key, view) in views {
                        let id: BucketId = (key.provider.to_string(), key.operation, key.scope);
                        // A count below the last one: the manager restarted.
                        let calls = match self.grants.get(&id) {
                            Some(&before) if view.grants >= before => view.grants - before,
                            Some(_) => view.grants,
                            None => 0,
                        };
                        grants.insert(id.clone(), view.grants);
                        if !view.tokens.is_finite() {
                            continue;
                        }
                        family.push(
                            &id,
                            BucketSample {
                                at: now,
                                tokens: view.tokens as f32,
                                calls: u32::try_from(calls).unwrap_or(u32::MAX),
                            },
                        );
                    }
                    family.forget_older_than(now);
                    self.grants = grants;
                }
                Ok(Err(err)) => warn!(error = %err, "history: cannot read the quota buckets"),
                Err(_) => warn!(
                    deadline_secs = SAMPLE_DEADLINE.as_secs(),
                    "history: the token manager did not answer in time"
                ),
            }
        }
        let safety_lags = self.safety_lags.clone();
        let job_providers = self.job_providers.clone();
        let read = blocking(state, move |state| {
            let cursors = if safety_lags.is_empty() {
                Vec::new()
            } else {
                state.hours.cursor_positions(DEFAULT_MAX_SERIES)?
            };
            let depth = if job_providers.is_empty() {
                Vec::new()
            } else {
                crate::store::jobs::queue_depth(state.hours.as_ref())
                    .map_err(|err| ApiError::internal(format!("job queue depth: {err}")))?
            };
            Ok((cursors, depth))
        });
        let (cursors, depth) = match tokio::time::timeout(SAMPLE_DEADLINE, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                warn!(error = %err.message, "history: cannot read cursors and queues");
                return;
            }
            Err(_) => {
                warn!(
                    deadline_secs = SAMPLE_DEADLINE.as_secs(),
                    "history: the database did not answer in time"
                );
                return;
            }
        };
        let now = now_ts();
        {
            let mut family = lock(&history.cursors);
            for cursor in cursors {
                let id: StreamId = (cursor.account, cursor.stream);
                let Some(&safety_lag) = self.safety_lags.get(&id) else {
                    continue;
                };
                let lag_secs = now
                    .saturating_sub(safety_lag)
                    .saturating_sub(cursor.cursor_ts)
                    .max(0);
                family.push(&id, LagSample { at: now, lag_secs });
            }
            family.forget_older_than(now);
        }
        {
            let mut by_provider: BTreeMap<String, QueueSample> = self
                .job_providers
                .iter()
                .map(|provider| {
                    (
                        provider.clone(),
                        QueueSample {
                            at: now,
                            pending: 0,
                            running: 0,
                        },
                    )
                })
                .collect();
            for (provider, job_state, count) in depth {
                let count = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
                let Some(sample) = by_provider.get_mut(&provider) else {
                    continue;
                };
                match job_state.as_str() {
                    "pending" => sample.pending = count,
                    "running" => sample.running = count,
                    _ => {}
                }
            }
            let mut family = lock(&history.queues);
            for (provider, sample) in by_provider {
                family.push(&provider, sample);
            }
            family.forget_older_than(now);
        }
    }
}

/// A history sampled every `every`: at most an hour per series, and never more than
/// [`crate::telemetry::history::DEFAULT_MAX_SAMPLES`] samples (a shorter interval keeps
/// a shorter stretch, so memory stays within the same bound).
pub fn history_for(every: Duration) -> History {
    History::new(every.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::SqliteLedger;
    use tokio_util::sync::CancellationToken;

    /// A server on a free loopback port over a real SQLite file; stopped when dropped.
    struct Running {
        state: HttpState,
        base: String,
        stop: CancellationToken,
        _dir: tempfile::TempDir,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            &format!(
                r#"
data_dir = "{}"
[simulator]
enabled = true
listen = "127.0.0.1:0"
[[accounts]]
id = "acme"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "72h"
[[accounts]]
id = "seller"
provider = "ebay"
[accounts.streams.orders]
start = "3days"
"#,
                dir.path().display()
            ),
            "test.toml",
        )
        .expect("config");
        let database = dir.path().join("marketsync.db");
        let ledger = Arc::new(SqliteLedger::open(&database).unwrap());
        let locks = crate::lock::LockService::sqlite(&database).await.unwrap();
        let state = HttpState::new(Arc::new(config.deployment()), ledger, locks, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let served = state.clone();
        tokio::spawn(async move {
            super::super::serve(listener, served, async move { stopped.cancelled().await }).await
        });
        Running {
            state,
            base,
            stop,
            _dir: dir,
        }
    }

    async fn get(running: &Running, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("{}{path}", running.base))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    #[tokio::test]
    async fn hours_default_to_the_lookback_with_a_cell_per_hour() {
        let state = start().await;
        let (status, body) = get(&state, "/api/accounts/acme/streams/vendor_rt_sales/hours").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["days"], 3);
        assert_eq!(body["hours"].as_array().unwrap().len(), 72);
        assert_eq!(body["counts"]["NONE"], 72, "nothing seeded yet");
        let (_, body) = get(
            &state,
            "/api/accounts/acme/streams/vendor_rt_sales/hours?days=4",
        )
        .await;
        assert_eq!(body["hours"].as_array().unwrap().len(), 96);
    }

    #[tokio::test]
    async fn days_out_of_bounds_is_a_400_naming_the_bound() {
        let state = start().await;
        for days in ["0", "91", "-1", "x", "99999999999999999999"] {
            let (status, body) = get(
                &state,
                &format!("/api/accounts/acme/streams/vendor_rt_sales/hours?days={days}"),
            )
            .await;
            assert_eq!(status, 400, "days={days}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains("days") && message.contains("90"),
                "{message}"
            );
        }
        let (status, body) = get(
            &state,
            "/api/accounts/acme/streams/vendor_rt_sales/hours?days=90",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["hours"].as_array().unwrap().len(), 90 * 24);
        let (status, body) = get(
            &state,
            "/api/accounts/acme/streams/vendor_rt_sales/hours?weeks=1",
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }

    #[tokio::test]
    async fn unknown_account_or_stream_is_a_404_and_a_cursor_stream_a_400() {
        let state = start().await;
        let (status, body) =
            get(&state, "/api/accounts/nobody/streams/vendor_rt_sales/hours").await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = get(&state, "/api/accounts/acme/streams/nothing/hours").await;
        assert_eq!(status, 404, "{body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("vendor_rt_sales"));
        let (status, body) = get(&state, "/api/accounts/seller/streams/orders/hours").await;
        assert_eq!(status, 400, "{body}");
    }

    #[tokio::test]
    async fn history_limit_out_of_bounds_is_a_400_naming_the_bound() {
        let state = start().await;
        for path in [
            "/api/history/buckets",
            "/api/history/cursors",
            "/api/history/queues",
        ] {
            for limit in ["0", "1001", "many"] {
                let (status, body) = get(&state, &format!("{path}?limit={limit}")).await;
                assert_eq!(status, 400, "{path} limit={limit}: {body}");
                assert!(body["message"].as_str().unwrap().contains("1000"), "{body}");
            }
            let (status, body) = get(&state, path).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["total"], 0);
        }
    }

    #[tokio::test]
    async fn history_answers_show_what_was_sampled() {
        let state = start().await;
        {
            let mut buckets = lock(&state.state.history.buckets);
            for (at, tokens, calls) in [(100, 15.0, 0), (115, 12.0, 3), (130, 14.5, 1)] {
                buckets.push(
                    &(
                        "amazon".to_string(),
                        "createReport".to_string(),
                        "acme".to_string(),
                    ),
                    BucketSample { at, tokens, calls },
                );
            }
            buckets.push(
                &("keepa".to_string(), "product".to_string(), "k".to_string()),
                BucketSample {
                    at: 130,
                    tokens: 1.0,
                    calls: 0,
                },
            );
        }
        let (status, body) = get(&state, "/api/history/buckets?provider=amazon").await;
        assert_eq!(status, 200);
        assert_eq!(body["total"], 1);
        let series = &body["buckets"][0];
        assert_eq!(series["operation"], "createReport");
        assert_eq!(series["at"], serde_json::json!([100, 115, 130]));
        assert_eq!(series["tokens"], serde_json::json!([15.0, 12.0, 14.5]));
        assert_eq!(series["calls"], serde_json::json!([0, 3, 1]));
        let (_, body) = get(&state, "/api/history/buckets?limit=1").await;
        assert_eq!(body["total"], 2);
        assert_eq!(body["buckets"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_sampler_records_tokens_and_the_calls_granted_between_samples() {
        use crate::quota::{
            BucketKey, BucketSpec, Priority, QuotaConfig, QuotaHandle, TokenManager,
        };
        let running = start().await;
        let config = QuotaConfig::default().with_spec(
            "amazon",
            "createReport",
            BucketSpec::new(0.001, 10.0),
        );
        let (actor, _task) = TokenManager::spawn(config).await.unwrap();
        let quota = QuotaHandle::new(actor);
        let state = running.state.clone().with_quota(quota.clone());
        let key = BucketKey::new("amazon", "createReport", "acme");
        let grant = |n: usize| {
            let (quota, key) = (quota.clone(), key.clone());
            async move {
                for _ in 0..n {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    quota
                        .acquire(vec![key.clone()], 1.0, Priority::Manual, deadline)
                        .await
                        .expect("a grant");
                }
            }
        };
        let mut sampler = Sampler::new(&state);
        grant(3).await;
        sampler.sample(&state).await;
        grant(2).await;
        sampler.sample(&state).await;
        sampler.sample(&state).await;
        let (series, total) = lock(&state.history.buckets).snapshot(|_| true, 10);
        assert_eq!(total, 1);
        let samples = &series[0].1;
        let calls: Vec<u32> = samples.iter().map(|s| s.calls).collect();
        // The first sight of a bucket has no sample before it: 0, then the differences.
        assert_eq!(calls, [0, 2, 0]);
        assert!(
            (samples[0].tokens - 7.0).abs() < 0.1 && (samples[1].tokens - 5.0).abs() < 0.1,
            "{samples:?}"
        );
        // The configured cursor stream (ebay orders) has no cursor yet: no series; the
        // configuration has no job provider: no queue series.
        assert!(lock(&state.history.cursors).is_empty());
        assert!(lock(&state.history.queues).is_empty());
        quota.stop();
    }
}
