//! `GET /metrics`: Prometheus metrics in the OpenMetrics text format (which Prometheus
//! scrapes natively), built with the `prometheus-client` crate.
//!
//! Two kinds of metrics:
//!
//! - **Read from the database and the lease backend at scrape time** (so they are right
//!   even for work done by another process): ledger hours per state per stream, the lag
//!   of the newest applied hour, cooldowns, account actor restarts and states
//!   (quarantines), leases and stale leases, and the verdict per stream.
//! - **Counted in process** in the daemon's [`Metrics`] handle (`crate::telemetry`),
//!   injected into the runners and this server: provider calls and 429s by provider and
//!   operation, lock takeovers, and tokens available per quota bucket.
//!
//! Names (all prefixed `marketsync_`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `provider_calls_total` | counter | provider, operation |
//! | `provider_throttled_total` | counter | provider, operation |
//! | `lock_takeovers_total` | counter | scope |
//! | `service_restarts_total` | counter | service (`housekeeping`, `cooldown-watch`, `http`, `simulator`, `token-manager`, `lease-keeper`) |
//! | `quota_tokens_available` | gauge | provider, bucket |
//! | `ledger_hours` | gauge | account, stream, state |
//! | `ledger_newest_applied_lag_seconds` | gauge | account, stream |
//! | `stream_verdict` | gauge (1) | account, stream, verdict |
//! | `cooldown_remaining_seconds` | gauge | scope, reason |
//! | `actor_restarts_total` | counter | account |
//! | `actor_state` | gauge (1) | account, state |
//! | `actors_quarantined` | gauge | |
//! | `locks` | gauge | state (`live`, `stale`) |
//! | `lock_backend_up` | gauge | backend |
//! | `cursor_lag_seconds` | gauge | account, stream |
//! | `job_queue_depth` | gauge | provider, state |
//! | `member_info` | gauge (1) | member |
//! | `accounts_owned` | gauge | member |
//!
//! The daemon's identity is one info metric, `member_info{member="..."} 1` (its
//! `[cluster]` member id, or `pid@host#instance` when the cluster is off), not a label on
//! every series: Prometheus' own `instance` label already tells scrape targets apart, a
//! per-start member id on every series would start new series at each restart, and a
//! query that wants the member joins it in (`... * on(instance) group_left(member)
//! marketsync_member_info`). `accounts_owned{member}` is how many configured accounts this
//! daemon runs, labelled with the member id so a sum over daemons shows who runs what: its share by the cluster view (0 while it has none), or all of them when the
//! cluster is off.
//!
//! `provider_throttled_total` exists at 0 from a (provider, operation)'s first call,
//! `service_restarts_total` from a service's first start and `lock_takeovers_total` from
//! a scope's first lease, so `rate()` (and contrib/grafana/marketsync.json) see every
//! series before its first event.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::telemetry::Labels;
pub use crate::telemetry::Metrics;

use super::{blocking, ApiError, HttpState};
use crate::diagnose;
use crate::domain::{now_ts, HOUR};
use crate::store::HourState;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "surface",
    responses(
        (status = 200, description = "Prometheus metrics in the OpenMetrics text format (version 1.0.0)", content_type = "application/openmetrics-text", body = String),
        (status = 500, description = "The database could not be read", body = super::openapi::ErrorBody),
    ),
)]
pub async fn scrape(State(state): State<HttpState>) -> Result<Response, ApiError> {
    let (locks, lock_error) = super::api::list_locks(&state).await;
    if let Some(quota) = &state.quota {
        // Read at scrape time, like the ledger gauges: the buckets the TokenManager holds.
        if let Ok(buckets) = quota.buckets().await {
            for (key, view) in buckets {
                state.metrics.set_tokens_available(
                    &key.provider,
                    &format!("{}:{}", key.scope, key.operation),
                    view.tokens,
                );
            }
        }
    }
    let now = now_ts();
    let text = blocking(&state, move |state| {
        let snapshot = snapshot_registry(state, &locks, lock_error.is_none(), now)?;
        let mut text = String::new();
        encode_registry(&mut text, state.metrics.registry())
            .and_then(|()| encode_registry(&mut text, &snapshot))
            .and_then(|()| encode_eof(&mut text))
            .map_err(|err| ApiError::internal(format!("cannot encode metrics: {err}")))?;
        Ok(text)
    })
    .await?;
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| (*key, value.to_string()))
        .collect()
}

/// The metrics read from the database and the lease backend at `now`.
fn snapshot_registry(
    state: &HttpState,
    locks: &[crate::lock::LockInfo],
    lock_backend_up: bool,
    now: i64,
) -> Result<Registry, ApiError> {
    let mut registry = Registry::with_prefix("marketsync");
    let supervision = state.hours.supervision_statuses()?;
    let facts = diagnose::gather(
        &state.config,
        state.hours.as_ref(),
        locks,
        &Default::default(),
        &supervision,
        None,
        None,
        now,
    )?;

    let hours = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge>::default();
    let verdicts = Family::<Labels, Gauge>::default();
    let cursor_lag = Family::<Labels, Gauge>::default();
    let queue_depth = Family::<Labels, Gauge>::default();
    let mut providers_seen = std::collections::BTreeSet::new();
    for account in &facts {
        for stream in &account.streams {
            let name = stream.stream.name.as_str();
            let (verdict, _) = diagnose::verdict(account, stream, now);
            verdicts
                .get_or_create(&labels(&[
                    ("account", &account.id),
                    ("stream", name),
                    ("verdict", verdict.as_str()),
                ]))
                .set(1);
            match &stream.shape {
                diagnose::ShapeFacts::Windowed => {}
                diagnose::ShapeFacts::Cursor(cursor) => {
                    if let Some(cursor) = cursor {
                        cursor_lag
                            .get_or_create(&labels(&[("account", &account.id), ("stream", name)]))
                            .set(diagnose::cursor_behind(stream, cursor, now));
                    }
                    continue;
                }
                diagnose::ShapeFacts::Jobs(queue) => {
                    // One queue per provider, whichever of its accounts reports it.
                    if providers_seen.insert(account.provider) {
                        for job_state in ["pending", "running", "succeeded", "failed", "not_found"]
                        {
                            queue_depth
                                .get_or_create(&labels(&[
                                    ("provider", account.provider.as_str()),
                                    ("state", job_state),
                                ]))
                                .set(queue.depth.get(job_state).copied().unwrap_or(0));
                        }
                    }
                    continue;
                }
            }
            for (state, count) in HourState::ALL.iter().zip(stream.counts) {
                hours
                    .get_or_create(&labels(&[
                        ("account", &account.id),
                        ("stream", name),
                        ("state", state.as_str()),
                    ]))
                    .set(count as i64);
            }
            if let Some(last) = stream.last_applied_hour {
                lag.get_or_create(&labels(&[("account", &account.id), ("stream", name)]))
                    .set((now - (last + HOUR)).max(0));
            }
        }
    }
    registry.register_with_unit(
        "cursor_lag",
        "How far each cursor stream's cursor is behind now minus its safety lag",
        Unit::Seconds,
        cursor_lag,
    );
    registry.register(
        "job_queue_depth",
        "Jobs per provider and state (pending, running, succeeded, failed, not_found)",
        queue_depth,
    );
    registry.register(
        "ledger_hours",
        "Ledger hours per state, per account and stream",
        hours,
    );
    registry.register_with_unit(
        "ledger_newest_applied_lag",
        "Time from the end of the newest APPLIED hour to now",
        Unit::Seconds,
        lag,
    );
    registry.register(
        "stream_verdict",
        "1 for the current verdict of each stream (caught_up, syncing, cooldown, lock_busy, failing, stalled, quarantined)",
        verdicts,
    );

    let cooldowns = Family::<Labels, Gauge>::default();
    for cooldown in state.hours.cooldowns(now)? {
        cooldowns
            .get_or_create(&labels(&[
                ("scope", &cooldown.scope),
                ("reason", &cooldown.reason),
            ]))
            .set(cooldown.until_at - now);
    }
    registry.register_with_unit(
        "cooldown_remaining",
        "Time left in each active cooldown (no provider calls in its scope)",
        Unit::Seconds,
        cooldowns,
    );

    let restarts = Family::<Labels, Counter>::default();
    let actor_state = Family::<Labels, Gauge>::default();
    let quarantined = Gauge::<i64>::default();
    for child in &supervision {
        restarts
            .get_or_create(&labels(&[("account", &child.id)]))
            .inc_by(child.restarts);
        actor_state
            .get_or_create(&labels(&[
                ("account", &child.id),
                ("state", child.state.as_str()),
            ]))
            .set(1);
        if child.state == crate::actors::supervisor::ChildState::Quarantined {
            quarantined.inc();
        }
    }
    registry.register(
        "actor_restarts",
        "Restarts of each account actor, as the supervisor recorded them",
        restarts,
    );
    registry.register(
        "actor_state",
        "1 for the current supervision state of each account actor",
        actor_state,
    );
    registry.register(
        "actors_quarantined",
        "Account actors quarantined now (waiting for a probe or an operator's resume)",
        quarantined,
    );

    let lock_count = Family::<Labels, Gauge>::default();
    let live = locks.iter().filter(|lock| !lock.stale).count() as i64;
    lock_count
        .get_or_create(&labels(&[("state", "live")]))
        .set(live);
    lock_count
        .get_or_create(&labels(&[("state", "stale")]))
        .set(locks.len() as i64 - live);
    registry.register(
        "locks",
        "Leases stored in the lock backend, live or stale (expiry passed)",
        lock_count,
    );
    let member = Family::<Labels, Gauge>::default();
    member
        .get_or_create(&labels(&[("member", state.member_id.as_ref())]))
        .set(1);
    registry.register(
        "member_info",
        "1, labelled with this daemon's member id (its lease owner identity when [cluster] is off)",
        member,
    );
    let owned = Family::<Labels, Gauge>::default();
    let owned_count = if state.config.cluster.is_some() {
        let view = state.cluster_view();
        state
            .config
            .accounts
            .iter()
            .filter(|account| view.as_ref().is_some_and(|view| view.owns(&account.id)))
            .count()
    } else {
        state.config.accounts.len()
    };
    owned
        .get_or_create(&labels(&[("member", state.member_id.as_ref())]))
        .set(i64::try_from(owned_count).unwrap_or(i64::MAX));
    registry.register(
        "accounts_owned",
        "Configured accounts this daemon runs (its share of the cluster, or all when [cluster] is off)",
        owned,
    );
    let backend_up = Family::<Labels, Gauge>::default();
    backend_up
        .get_or_create(&labels(&[("backend", state.locks.backend())]))
        .set(i64::from(lock_backend_up));
    registry.register(
        "lock_backend_up",
        "1 when the lock backend answered this scrape",
        backend_up,
    );
    Ok(registry)
}
