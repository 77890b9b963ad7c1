//! The verdict of a stream (caught_up, syncing, cooldown, lock_busy, failing, stalled,
//! quarantined) as a pure function of its facts and the time.

use crate::actors::supervisor::ChildState;
use crate::domain::format_ts;
use serde::Serialize;
use std::time::Duration;

use super::*;

/// The one-word state of a stream, shown by the status endpoint and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    CaughtUp,
    Syncing,
    Cooldown,
    LockBusy,
    Failing,
    Stalled,
    Quarantined,
}

impl Verdict {
    pub const ALL: [Verdict; 7] = [
        Verdict::CaughtUp,
        Verdict::Syncing,
        Verdict::Cooldown,
        Verdict::LockBusy,
        Verdict::Failing,
        Verdict::Stalled,
        Verdict::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::CaughtUp => "caught_up",
            Verdict::Syncing => "syncing",
            Verdict::Cooldown => "cooldown",
            Verdict::LockBusy => "lock_busy",
            Verdict::Failing => "failing",
            Verdict::Stalled => "stalled",
            Verdict::Quarantined => "quarantined",
        }
    }
}

/// The verdict of a cursor or job stream once supervision, cooldowns and leases have
/// been looked at; `None` for windowed streams (the hour ledger decides).
pub(crate) fn shape_verdict(stream: &StreamFacts, now: i64) -> Option<(Verdict, String)> {
    let config = &stream.stream;
    match &stream.shape {
        ShapeFacts::Windowed => None,
        ShapeFacts::Cursor(None) => Some((
            Verdict::Stalled,
            "no cursor yet: the daemon has not run this stream".to_string(),
        )),
        ShapeFacts::Cursor(Some(cursor))
            if cursor.before_first_snapshot() && cursor.failures == 0 =>
        {
            Some((
                Verdict::Stalled,
                "no snapshot applied yet: the daemon has not finished a run of this stream"
                    .to_string(),
            ))
        }
        ShapeFacts::Cursor(Some(cursor)) => {
            let behind = cursor_behind(stream, cursor, now);
            if cursor.failures > 0 {
                let retry = match cursor.retry_at {
                    Some(at) if at > now => format!("next retry at {}", format_ts(at)),
                    _ => "retry due now".to_string(),
                };
                return Some((
                    Verdict::Failing,
                    format!(
                        "window from {} failed {} time(s), the cursor stays until it applies: {}; {retry}",
                        format_ts(cursor.cursor_ts),
                        cursor.failures,
                        cursor.last_error.as_deref().unwrap_or("no error recorded")
                    ),
                ));
            }
            let stalled_after = 2 * config.interval.as_secs() as i64 + 60;
            let idle = cursor.last_run_at.map_or(i64::MAX, |at| now - at);
            if behind > 0 && idle > stalled_after.max(15 * 60) {
                return Some((
                    Verdict::Stalled,
                    format!(
                        "cursor at {} ({} behind) and no run since {}: no daemon is working this stream",
                        format_ts(cursor.cursor_ts),
                        duration_text(behind),
                        cursor.last_run_at.map(format_ts).unwrap_or_else(|| "ever".to_string())
                    ),
                ));
            }
            let lag_allowed = 2 * config.interval.as_secs() as i64 + 60;
            if behind > lag_allowed {
                return Some((
                    Verdict::Syncing,
                    format!(
                        "cursor at {}, {} behind; catching up in windows of at most {}",
                        format_ts(cursor.cursor_ts),
                        duration_text(behind),
                        humantime::format_duration(config.cursor().max_window)
                    ),
                ));
            }
            Some((
                Verdict::CaughtUp,
                format!(
                    "cursor at {} ({} resources, {} changes recorded)",
                    format_ts(cursor.cursor_ts),
                    cursor.resources,
                    cursor.events
                ),
            ))
        }
        ShapeFacts::Jobs(queue) => {
            let (pending, running) = (queue.count("pending"), queue.count("running"));
            let failed = queue.count("failed");
            if failed > 0 {
                let (key, error) = queue.last_failure.clone().unwrap_or_default();
                return Some((
                    Verdict::Failing,
                    format!("{failed} job(s) failed after their attempts; latest {key}: {error}"),
                ));
            }
            let stalled_after = (2 * config.interval.as_secs() as i64 + 60).max(5 * 60);
            let waiting = queue.pending_due_since.map_or(0, |since| now - since);
            let quiet = queue.last_activity.map_or(i64::MAX, |at| now - at);
            if pending > 0 && running == 0 && waiting > stalled_after && quiet > stalled_after {
                return Some((
                    Verdict::Stalled,
                    format!(
                        "{pending} job(s) due since {} and none claimed: no daemon is draining this queue",
                        format_ts(queue.pending_due_since.unwrap_or(now))
                    ),
                ));
            }
            if pending + running > 0 {
                return Some((
                    Verdict::Syncing,
                    format!("{pending} job(s) pending, {running} running"),
                ));
            }
            Some((
                Verdict::CaughtUp,
                format!(
                    "queue empty ({} succeeded, {} not found)",
                    queue.count("succeeded"),
                    queue.count("not_found")
                ),
            ))
        }
    }
}

/// Seconds the cursor is behind the newest time a window may end at.
pub fn cursor_behind(
    stream: &StreamFacts,
    cursor: &crate::store::cursors::CursorSnapshot,
    now: i64,
) -> i64 {
    cursor.behind(stream.stream.safety_lag, now)
}

/// A lag as a person reads it: `45d 13h`, `3h 20m`, `12m`.
pub(crate) fn duration_text(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (days, hours, minutes) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The stream's verdict and a one-line explanation naming the cause.
pub fn verdict(account: &AccountFacts, stream: &StreamFacts, now: i64) -> (Verdict, String) {
    if let Some(supervisor) = &account.supervisor {
        let reason = supervisor
            .reason
            .clone()
            .or_else(|| {
                supervisor
                    .last_crash
                    .as_ref()
                    .map(|crash| crash.reason.clone())
            })
            .unwrap_or_else(|| "no reason recorded".to_string());
        match supervisor.state {
            ChildState::Quarantined => {
                let until = supervisor
                    .quarantined_until
                    .as_ref()
                    .map(|until| format!(" until {until}"))
                    .unwrap_or_default();
                return (
                    Verdict::Quarantined,
                    format!(
                        "account actor quarantined{until} after {} restarts: {reason}",
                        supervisor.restarts
                    ),
                );
            }
            ChildState::Halted => {
                return (
                    Verdict::Stalled,
                    format!("restarts paused after a mass failure: {reason}"),
                )
            }
            ChildState::BackingOff => {
                return (
                    Verdict::Failing,
                    format!(
                    "account actor crashed ({reason}); restarting after its backoff ({} restarts)",
                    supervisor.restarts
                ),
                )
            }
            ChildState::Running | ChildState::Stopped => {}
        }
    }
    if let Some(cooldown) = &account.cooldown {
        let detail = cooldown
            .detail
            .as_ref()
            .map(|detail| format!(": {detail}"))
            .unwrap_or_default();
        let what = match cooldown.reason.as_str() {
            "quota" => "provider quota exceeded (429)".to_string(),
            "auth" => "credentials refused".to_string(),
            other => format!("cooldown ({other})"),
        };
        return (
            Verdict::Cooldown,
            format!(
                "{what}; no provider calls until {}{detail}",
                format_ts(cooldown.until_at)
            ),
        );
    }
    if let Some(cooldown) = &stream.api_cooldown {
        return (
            Verdict::Cooldown,
            format!(
                "{}; the account's other streams go on",
                api_cooldown_line(cooldown)
            ),
        );
    }
    if let Some(cooldown) = &stream.lock_cooldown {
        match cooldown.reason.as_str() {
            "lock_busy" => {
                let holder = stream
                    .lock_line()
                    .or_else(|| cooldown.detail.clone())
                    .unwrap_or_else(|| "lease held by another owner".to_string());
                return (
                    Verdict::LockBusy,
                    format!(
                        "{holder}; this daemon waits until {}",
                        format_ts(cooldown.until_at)
                    ),
                );
            }
            reason
                if reason == crate::shapes::FENCE_REFUSED
                    && crate::shapes::fence_refusals_in(
                        cooldown.detail.as_deref().unwrap_or(""),
                    ) >= super::FENCE_REFUSAL_LOOP =>
            {
                return (
                    Verdict::Stalled,
                    format!(
                        "fence refusal loop: {}; nothing is written until it is broken (see doctor)",
                        cooldown.detail.as_deref().unwrap_or("no detail")
                    ),
                );
            }
            "lock_unavailable" => {
                return (
                    Verdict::Stalled,
                    format!(
                        "lock backend unreachable ({}); work resumes by itself once it answers",
                        cooldown.detail.as_deref().unwrap_or("no detail")
                    ),
                );
            }
            _ => {}
        }
    }
    if let Some(answer) = shape_verdict(stream, now) {
        return answer;
    }
    if let Some(failed) = &stream.failed {
        let retry = failed
            .next_retry_at
            .map(|at| {
                if at <= now {
                    "retry due now".to_string()
                } else {
                    format!("next retry at {}", format_ts(at))
                }
            })
            .unwrap_or_else(|| "no retry scheduled".to_string());
        return (
            Verdict::Failing,
            format!(
                "{} hour(s) FAILED (attempts up to {}): {}; {retry}",
                failed.hours,
                failed.max_attempts,
                failed.last_error.as_deref().unwrap_or("no error recorded")
            ),
        );
    }
    if stream.rows == 0 {
        return (
            Verdict::Stalled,
            "no ledger rows: the daemon has not run this stream yet".to_string(),
        );
    }
    if let Some(lock) = &stream.lock {
        if lock.stale && stream.pending() > 0 {
            return (
                Verdict::Stalled,
                format!(
                    "{}; its holder most likely died mid-flight, the next run takes it over",
                    stream.lock_line().unwrap_or_default()
                ),
            );
        }
    }
    if stream.in_flight_stuck(now) {
        return (
            Verdict::Stalled,
            format!(
                "{} hour(s) in flight since {} (report {}), longer than a report may take",
                stream.in_flight(),
                format_ts(stream.in_flight_since.unwrap_or(now)),
                stream
                    .in_flight_report
                    .as_deref()
                    .unwrap_or("not yet requested")
            ),
        );
    }
    if stream.claims_stalled(now) {
        return (
            Verdict::Stalled,
            format!(
                "{} hour(s) claimable since {} but nothing claimed them{}: is the daemon running?",
                stream.claimable_now,
                format_ts(stream.claimable_since.unwrap_or(now)),
                stream
                    .last_claim
                    .as_ref()
                    .map(|(at, owner)| format!(" (last claim {} by {owner})", format_ts(*at)))
                    .unwrap_or_else(|| " (never claimed)".to_string())
            ),
        );
    }
    if stream.pending() > 0 {
        let next = stream
            .next_claimable_hour
            .map(|hour| format!(", next claimable {}", format_ts(hour)))
            .unwrap_or_default();
        let holder = stream
            .lock_line()
            .map(|line| format!("; {line}"))
            .unwrap_or_default();
        return (
            Verdict::Syncing,
            format!(
                "{} hour(s) pending ({} in flight){next}{holder}",
                stream.pending(),
                stream.in_flight()
            ),
        );
    }
    match stream.behind_secs(now) {
        Some(behind) if behind > stream.lag_allowed() => (
            Verdict::Stalled,
            format!(
                "newest applied hour {} is {} behind and no newer hour was seeded: is the daemon running?",
                format_ts(stream.last_applied_hour.unwrap_or(0)),
                humantime::format_duration(Duration::from_secs(behind as u64))
            ),
        ),
        _ => (
            Verdict::CaughtUp,
            format!(
                "all {} hour(s) APPLIED through {}",
                stream.counts[3],
                stream
                    .last_applied_hour
                    .map(format_ts)
                    .unwrap_or_else(|| "-".to_string())
            ),
        ),
    }
}

/// "the fulfillment API's quota is spent (429): this stream makes no fulfillment calls
/// until T: detail" for the cooldown of one API (scope `{provider}:{account}:{api}`).
pub(crate) fn api_cooldown_line(cooldown: &crate::store::Cooldown) -> String {
    let api = crate::quota::api_of_scope(&cooldown.scope);
    let detail = cooldown
        .detail
        .as_ref()
        .map(|detail| format!(": {detail}"))
        .unwrap_or_default();
    format!(
        "the {api} API's quota is spent (429): this stream makes no {api} calls until {}{detail}",
        format_ts(cooldown.until_at)
    )
}
