//! `marketsync doctor [ACCOUNT [STREAM]]`: explains why an account is not syncing, from
//! the database, the lease backend and the configuration, without tailing logs.
//!
//! It automates seed 000's troubleshooting checklist and seed 004's diagnostics:
//! - **lock busy**: who holds the stream's lease, since when, until when, and whether it
//!   is stale (its expiry passed: the holder most likely died mid-flight) or a zombie
//!   (no expiry at all);
//! - **quota cooldown**: until when no provider call is made;
//! - **missing hours never drop**: hours are claimable but nothing claimed them, and why
//!   (a lease, a cooldown, or no daemon running);
//! - **applied never advances**: the `last_error` of FAILED hours and when they retry;
//! - **quarantine**: the crash that quarantined the account actor;
//! - **auth failures**: a cooldown with reason `auth` or FAILED hours whose error says
//!   authentication failed;
//! - **unreachable dependencies**: Redis or the configured endpoint (or the embedded
//!   simulator), by a TCP connect with a short timeout.
//!
//! Every finding is one line with the command that fixes it. The exit status is 1 when
//! some finding needs a person ([`Severity::Action`]), 0 otherwise.
//!
//! The same facts give the one-word [`Verdict`] (and its one-line explanation) that the
//! HTTP status endpoint and the dashboard show per stream (see [`crate::http`]).

pub mod cooldowns;
pub mod deployment;
pub mod repair;
pub mod status;

pub use deployment::Deployment;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::actors::supervisor::{ChildState, ChildStatus};
use crate::domain::{format_ts, now_ts, HOUR};
use crate::lock::{LockInfo, LockService};
use crate::shapes::lock_scope;
use crate::shapes::spec::{AccountConfig, CredentialEnv, Endpoints, StreamConfig};
use crate::store::{account_scope, Cooldown, LedgerError, LedgerStore, SqliteLedger};

/// How long a TCP connect to Redis or an endpoint may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the fix commands of HTTP-only actions point; the daemon's `[http]` settings.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Base URL of the daemon's HTTP API, e.g. `http://127.0.0.1:8080`.
    pub admin_url: String,
    /// The environment variable holding the admin token (named, never printed).
    pub admin_token_env: String,
    /// How fix commands start, e.g. `marketsync --config prod.toml`; `None`: derived from
    /// the configuration's source.
    pub command: Option<String>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            admin_url: "http://127.0.0.1:8080".to_string(),
            admin_token_env: "MARKETSYNC_ADMIN_TOKEN".to_string(),
            command: None,
        }
    }
}

/// How much a finding needs a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// All is well.
    Ok,
    /// Worth knowing; nothing to do.
    Info,
    /// Resolves by itself at a known time; nothing to do but wait.
    Wait,
    /// Needs a person: run the fix.
    Action,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Wait => "wait",
            Severity::Action => "action",
        }
    }
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `ACCOUNT/STREAM`, `ACCOUNT`, `redis`, `database`, or an endpoint `host:port`.
    pub scope: String,
    pub message: String,
    /// The command that fixes it, when there is one.
    pub fix: Option<String>,
}

impl Finding {
    fn new(severity: Severity, scope: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity,
            scope: scope.into(),
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// `[action] acct/vendor_rt_sales: message; fix: command`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "[{}] {}: {}",
            self.severity.as_str(),
            self.scope,
            self.message
        );
        if let Some(fix) = &self.fix {
            line.push_str("; fix: ");
            line.push_str(fix);
        }
        line
    }
}

/// The doctor's whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Findings with [`Severity::Action`].
    pub needs_attention: usize,
}

impl Report {
    fn new(mut findings: Vec<Finding>) -> Report {
        // Worst first, stable within a severity (config order).
        findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
        let needs_attention = findings
            .iter()
            .filter(|finding| finding.severity == Severity::Action)
            .count();
        Report {
            findings,
            needs_attention,
        }
    }

    /// 1 when something needs a person, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.needs_attention > 0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&finding.line());
            out.push('\n');
        }
        if self.needs_attention == 0 {
            out.push_str("all is well: nothing needs a person\n");
        } else {
            out.push_str(&format!(
                "{} finding(s) need a person\n",
                self.needs_attention
            ));
        }
        out
    }
}

/// The one-word state of a stream, shown by the status endpoint and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

/// What the database and the lease backend say about one account.
#[derive(Debug, Clone)]
pub struct AccountFacts {
    pub id: String,
    pub provider: crate::domain::Provider,
    pub credentials: Option<CredentialEnv>,
    pub supervisor: Option<ChildStatus>,
    /// The account's provider cooldown (`quota`, `auth`), when one is running.
    pub cooldown: Option<Cooldown>,
    pub streams: Vec<StreamFacts>,
}

/// FAILED hours of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFacts {
    pub hours: u64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    /// When the earliest FAILED hour becomes claimable again.
    pub next_retry_at: Option<i64>,
    pub oldest_hour: i64,
    pub newest_hour: i64,
    /// A FAILED hour whose error says authentication failed.
    pub auth_error: Option<String>,
}

/// What the database and the lease backend say about one stream.
#[derive(Debug, Clone)]
pub struct StreamFacts {
    pub account: String,
    pub stream: StreamConfig,
    /// Indexed like [`crate::store::HourState::ALL`].
    pub counts: [u64; 5],
    pub rows: u64,
    pub last_applied_hour: Option<i64>,
    pub next_claimable_hour: Option<i64>,
    /// Hours claimable right now (MISSING, or FAILED whose retry time passed).
    pub claimable_now: u64,
    /// The oldest `updated_at` among the claimable hours: how long they have waited.
    pub claimable_since: Option<i64>,
    /// The oldest `updated_at` among hours in flight (REQUESTED, DOWNLOADED).
    pub in_flight_since: Option<i64>,
    pub in_flight_report: Option<String>,
    /// The newest claim: when and by whom.
    pub last_claim: Option<(i64, String)>,
    pub failed: Option<FailedFacts>,
    /// A lock condition recorded by a runner (`lock_busy`, `lock_unavailable`).
    pub lock_cooldown: Option<Cooldown>,
    pub lock: Option<LockInfo>,
    /// When the lease was acquired (epoch milliseconds), when the backend says.
    pub lock_acquired_at_ms: Option<i64>,
    /// What a cursor or job stream's own tables say (the hour facts above stay empty).
    pub shape: ShapeFacts,
}

/// The facts of the sync shapes that are not an hour ledger.
#[derive(Debug, Clone)]
pub enum ShapeFacts {
    /// The hour ledger: everything is in the hour facts.
    Windowed,
    /// A cursor stream; `None` before its first run.
    Cursor(Option<crate::store::cursors::CursorSnapshot>),
    /// A job stream: the queue of the account's provider.
    Jobs(QueueFacts),
}

/// The job queue of one provider.
pub type QueueFacts = crate::store::jobs::ProviderQueue;

impl StreamFacts {
    pub fn scope(&self) -> String {
        format!("{}/{}", self.account, self.stream.name)
    }

    fn pending(&self) -> u64 {
        self.counts[0] + self.counts[1] + self.counts[2]
    }

    fn in_flight(&self) -> u64 {
        self.counts[1] + self.counts[2]
    }

    /// No runner has touched the stream for this long while work waits: it is stuck.
    fn stall_after(&self) -> i64 {
        2 * self.stream.interval.as_secs() as i64 + 60
    }

    /// How long the newest applied hour may lag the newest complete hour.
    fn lag_allowed(&self) -> i64 {
        2 * self.stream.interval.as_secs() as i64 + 15 * 60
    }

    /// Seconds the data is behind: from the moment the hour after the newest applied
    /// one became fetchable until `now` (0 when caught up).
    pub fn behind_secs(&self, now: i64) -> Option<i64> {
        let last = self.last_applied_hour?;
        let fetchable_from = last + HOUR + HOUR + self.stream.safety_lag.as_secs() as i64;
        Some((now - fetchable_from).max(0))
    }

    /// Claimable hours that waited past [`Self::stall_after`] with no claim in that time.
    fn claims_stalled(&self, now: i64) -> bool {
        let threshold = self.stall_after();
        let waiting_long = self
            .claimable_since
            .is_some_and(|since| now - since > threshold);
        let no_recent_claim = self
            .last_claim
            .as_ref()
            .is_none_or(|(at, _)| now - at > threshold);
        self.claimable_now > 0 && waiting_long && no_recent_claim
    }

    /// Hours in flight longer than a report may take plus two intervals.
    fn in_flight_stuck(&self, now: i64) -> bool {
        let limit = self.stream.windowed().poll_timeout.as_secs() as i64 + self.stall_after();
        self.in_flight() > 0
            && self
                .in_flight_since
                .is_some_and(|since| now - since > limit)
    }

    fn lock_line(&self) -> Option<String> {
        let lock = self.lock.as_ref()?;
        let since = self
            .lock_acquired_at_ms
            .map(|ms| format!(" since {}", format_ts(ms.div_euclid(1000))))
            .unwrap_or_default();
        let until = match lock.expires_at_ms {
            Some(ms) if lock.stale => format!(", expired at {}", format_ts(ms.div_euclid(1000))),
            Some(ms) => format!(" until {}", format_ts(ms.div_euclid(1000))),
            None => ", with no expiry at all".to_string(),
        };
        Some(format!(
            "lease held by {}{since}{until} (fence {})",
            lock.owner, lock.fence
        ))
    }
}

/// Reads the facts of every configured account (or only `only_account`, and of it only
/// `only_stream`). Blocking: call it from the blocking pool in async code.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    config: &Deployment,
    ledger: &SqliteLedger,
    locks: &[LockInfo],
    lock_acquired_at_ms: &HashMap<String, i64>,
    supervision: &[ChildStatus],
    only_account: Option<&str>,
    only_stream: Option<&str>,
    now: i64,
) -> Result<Vec<AccountFacts>, LedgerError> {
    let mut accounts = Vec::new();
    for account in &config.accounts {
        if only_account.is_some_and(|only| only != account.id) {
            continue;
        }
        let cooldown =
            ledger.active_cooldown(&account_scope(account.provider.as_str(), &account.id), now)?;
        let mut streams = Vec::new();
        for stream in &account.streams {
            if only_stream.is_some_and(|only| only != stream.name) {
                continue;
            }
            streams.push(stream_facts(
                ledger,
                account,
                stream,
                locks,
                lock_acquired_at_ms,
                now,
            )?);
        }
        accounts.push(AccountFacts {
            id: account.id.clone(),
            provider: account.provider,
            credentials: account.credentials.clone(),
            supervisor: supervision
                .iter()
                .find(|child| child.id == account.id)
                .cloned(),
            cooldown,
            streams,
        });
    }
    Ok(accounts)
}

fn stream_facts(
    ledger: &SqliteLedger,
    account: &AccountConfig,
    stream: &StreamConfig,
    locks: &[LockInfo],
    lock_acquired_at_ms: &HashMap<String, i64>,
    now: i64,
) -> Result<StreamFacts, LedgerError> {
    let mut facts = hour_facts(ledger, account, stream, locks, lock_acquired_at_ms, now)?;
    if let ShapeFacts::Cursor(snapshot) = &mut facts.shape {
        *snapshot = crate::store::cursors::cursor_snapshot(ledger, &account.id, &stream.name)?;
    }
    Ok(facts)
}

fn hour_facts(
    ledger: &SqliteLedger,
    account: &AccountConfig,
    stream: &StreamConfig,
    locks: &[LockInfo],
    lock_acquired_at_ms: &HashMap<String, i64>,
    now: i64,
) -> Result<StreamFacts, LedgerError> {
    let snapshot = ledger.snapshot(&account.id, &stream.name, now)?;
    let lock_cooldown = ledger.active_cooldown(&lock_scope(&account.id, &stream.name), now)?;
    let scope = format!("{}/{}", account.id, stream.name);
    let lock = locks.iter().find(|info| info.scope == scope).cloned();
    let acquired = lock_acquired_at_ms.get(&scope).copied();
    let (id, name) = (account.id.as_str(), stream.name.as_str());
    let hours = ledger.hour_diagnostics(id, name, now)?;
    let failed = match hours.failed {
        0 => None,
        count => Some(FailedFacts {
            hours: count,
            max_attempts: hours.max_attempts,
            last_error: snapshot.last_error.clone(),
            next_retry_at: snapshot.next_retry_at,
            oldest_hour: hours.oldest_failed_hour,
            newest_hour: hours.newest_failed_hour,
            auth_error: hours.auth_error,
        }),
    };
    ledger.with_read_conn(|conn| {
        let shape = match account.provider.shape() {
            crate::domain::Shape::Windowed => ShapeFacts::Windowed,
            crate::domain::Shape::Cursor => ShapeFacts::Cursor(None),
            crate::domain::Shape::Jobs => ShapeFacts::Jobs(crate::store::jobs::provider_queue(
                conn,
                account.provider.as_str(),
                now,
            )?),
        };
        Ok(StreamFacts {
            shape,
            account: account.id.clone(),
            stream: stream.clone(),
            counts: snapshot.counts,
            rows: hours.rows,
            last_applied_hour: snapshot.last_applied_hour,
            next_claimable_hour: snapshot.next_claimable_hour,
            claimable_now: hours.claimable_now,
            claimable_since: hours.claimable_since,
            in_flight_since: hours.in_flight_since,
            in_flight_report: hours.in_flight_report,
            last_claim: hours.last_claim,
            failed,
            lock_cooldown,
            lock,
            lock_acquired_at_ms: acquired,
        })
    })
}

/// The verdict of a cursor or job stream once supervision, cooldowns and leases have
/// been looked at; `None` for windowed streams (the hour ledger decides).
fn shape_verdict(stream: &StreamFacts, now: i64) -> Option<(Verdict, String)> {
    let config = &stream.stream;
    match &stream.shape {
        ShapeFacts::Windowed => None,
        ShapeFacts::Cursor(None) => Some((
            Verdict::Stalled,
            "no cursor yet: the daemon has not run this stream".to_string(),
        )),
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
fn duration_text(seconds: i64) -> String {
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

/// `marketsync` with the `--config` this configuration came from (or the options' own).
fn command_prefix(config: &Deployment, options: &DoctorOptions) -> String {
    if let Some(command) = &options.command {
        return command.clone();
    }
    if config.source_name.starts_with('<') {
        "marketsync".to_string()
    } else {
        format!("marketsync --config {}", shell_word(&config.source_name))
    }
}

/// `marketsync` with the global options given on this command line, for fix commands.
pub fn command_line(
    config: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
) -> String {
    let mut command = "marketsync".to_string();
    if let Some(path) = config {
        command.push_str(&format!(
            " --config {}",
            shell_word(&path.display().to_string())
        ));
    }
    if let Some(dir) = data_dir {
        command.push_str(&format!(
            " --data-dir {}",
            shell_word(&dir.display().to_string())
        ));
    }
    command
}

/// Quotes `text` for a POSIX shell when it holds anything but safe characters.
fn shell_word(text: &str) -> String {
    let safe = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if safe && !text.is_empty() {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn admin_call(options: &DoctorOptions, method_path: &str) -> String {
    format!(
        "curl -X POST -H \"Authorization: Bearer ${}\" {}{method_path}",
        options.admin_token_env,
        options.admin_url.trim_end_matches('/')
    )
}

fn day_of(hour: i64) -> String {
    format_ts(hour).chars().take(10).collect()
}

/// The findings about accounts and streams (not the dependencies: see [`run`]).
pub fn findings(
    config: &Deployment,
    accounts: &[AccountFacts],
    options: &DoctorOptions,
    now: i64,
) -> Vec<Finding> {
    let cmd = command_prefix(config, options);
    let mut out = Vec::new();
    for account in accounts {
        let id = &account.id;
        let mut account_problem = false;
        if let Some(supervisor) = &account.supervisor {
            let reason = supervisor
                .last_crash
                .as_ref()
                .map(|crash| format!("{} (at {})", crash.reason, crash.at_utc))
                .or_else(|| supervisor.reason.clone())
                .unwrap_or_else(|| "no crash recorded".to_string());
            match supervisor.state {
                ChildState::Quarantined => {
                    account_problem = true;
                    let until = supervisor
                        .quarantined_until
                        .as_ref()
                        .map(|until| format!(" until {until} (then one probe restart)"))
                        .unwrap_or_default();
                    out.push(
                        Finding::new(
                            Severity::Action,
                            id.clone(),
                            format!(
                                "account actor quarantined{until} after {} restarts; crash reason: {reason}",
                                supervisor.restarts
                            ),
                        )
                        .fix(format!("fix the cause, then {cmd} accounts resume {id}")),
                    );
                }
                ChildState::Halted => {
                    account_problem = true;
                    out.push(Finding::new(
                        Severity::Wait,
                        id.clone(),
                        format!(
                            "restarts paused after a mass failure: {}; they resume when the pause ends",
                            supervisor.reason.as_deref().unwrap_or("no reason recorded")
                        ),
                    ));
                }
                ChildState::BackingOff => {
                    account_problem = true;
                    out.push(Finding::new(
                        Severity::Wait,
                        id.clone(),
                        format!(
                            "account actor crashed ({reason}); it restarts after its backoff ({} restarts so far)",
                            supervisor.restarts
                        ),
                    ));
                }
                ChildState::Running | ChildState::Stopped => {}
            }
        }
        if let Some(cooldown) = &account.cooldown {
            account_problem = true;
            let detail = cooldown
                .detail
                .as_ref()
                .map(|detail| format!(" ({detail})"))
                .unwrap_or_default();
            let until = format_ts(cooldown.until_at);
            match cooldown.reason.as_str() {
                "quota" => out.push(Finding::new(
                    Severity::Wait,
                    id.clone(),
                    format!(
                        "quota cooldown until {until}{detail}: no provider calls until then; avoid triggering more (manual refreshes answer QuotaExceeded)"
                    ),
                )),
                "auth" => out.push(
                    Finding::new(
                        Severity::Action,
                        id.clone(),
                        format!(
                            "authentication failed: cooldown until {until}{detail}{}",
                            credential_hint(account.credentials.as_ref())
                        ),
                    )
                    .fix(format!(
                        "fix the credentials, restart the daemon, then {}",
                        admin_call(options, &format!("/api/accounts/{id}/clear-cooldown"))
                    )),
                ),
                other => out.push(Finding::new(
                    Severity::Wait,
                    id.clone(),
                    format!("cooldown ({other}) until {until}{detail}"),
                )),
            }
        }
        for stream in &account.streams {
            let before = out.len();
            stream_findings(account, stream, &cmd, now, &mut out);
            if out.len() == before && !account_problem {
                let (verdict, explanation) = verdict(account, stream, now);
                let severity = match verdict {
                    Verdict::CaughtUp | Verdict::Syncing => Severity::Ok,
                    _ => Severity::Info,
                };
                out.push(Finding::new(
                    severity,
                    stream.scope(),
                    format!("{}: {explanation}", verdict.as_str()),
                ));
            }
        }
    }
    out
}

fn credential_hint(credentials: Option<&CredentialEnv>) -> String {
    match credentials {
        Some(names) => format!(
            "; check the environment variables {} of the daemon",
            names.names().join(", ")
        ),
        None => String::new(),
    }
}

/// Findings of a cursor or job stream: its verdict when it needs a look, with the
/// command that helps.
fn shape_findings(
    account: &AccountFacts,
    stream: &StreamFacts,
    cmd: &str,
    now: i64,
    out: &mut Vec<Finding>,
) {
    let Some((verdict, explanation)) = shape_verdict(stream, now) else {
        return;
    };
    let scope = stream.scope();
    let finding = match verdict {
        Verdict::CaughtUp | Verdict::Syncing => return,
        Verdict::Failing => match &stream.shape {
            ShapeFacts::Jobs(_) => Finding::new(Severity::Action, scope, explanation).fix(format!(
                "fix the cause, then {cmd} jobs reset-failed {}",
                account.provider
            )),
            _ => {
                let auth = explanation.to_lowercase().contains("authentication");
                let hint = if auth {
                    credential_hint(account.credentials.as_ref())
                } else {
                    String::new()
                };
                Finding::new(
                    Severity::Wait,
                    scope,
                    format!("{explanation} (retried automatically with backoff){hint}"),
                )
            }
        },
        _ => Finding::new(Severity::Action, scope, explanation).fix(format!("{cmd} run")),
    };
    out.push(finding);
}

fn stream_findings(
    account: &AccountFacts,
    stream: &StreamFacts,
    cmd: &str,
    now: i64,
    out: &mut Vec<Finding>,
) {
    let scope = stream.scope();
    let id = &account.id;
    let name = &stream.stream.name;
    // 1. Lock busy.
    if let (Some(lock), Some(line)) = (&stream.lock, stream.lock_line()) {
        let owner_dead = crate::lock::owner_is_dead_local(&lock.owner);
        if lock.expires_at_ms.is_none() {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!("{line}: a zombie lease that blocks the stream forever"),
                )
                .fix(format!("{cmd} locks release {scope} --force (a running daemon's hygiene pass also caps it)")),
            );
        } else if lock.stale {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!("{line}: stale, its holder most likely died mid-flight"),
                )
                .fix(format!("{cmd} locks release {scope}")),
            );
        } else if owner_dead {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!("{line}, but its owner process is gone from this host"),
                )
                .fix(format!("{cmd} locks release {scope} --force")),
            );
        } else {
            let held_for = stream
                .lock_acquired_at_ms
                .map(|ms| now - ms.div_euclid(1000))
                .unwrap_or(0);
            let owner_claimed_recently = stream.last_claim.as_ref().is_some_and(|(at, owner)| {
                *owner == lock.owner && now - at <= stream.stall_after()
            });
            // Seed 000: a lock stuck for more than 15 minutes deserves a look; with no
            // claim by its owner and work pending it is stuck, not busy.
            let hold_limit = stream.stall_after().max(15 * 60);
            if held_for > hold_limit && !owner_claimed_recently && stream.pending() > 0 {
                out.push(
                    Finding::new(
                        Severity::Action,
                        scope.clone(),
                        format!(
                            "{line}: held for {} with work pending and no claim by its owner lately; confirm the owner is stuck before forcing",
                            humantime::format_duration(Duration::from_secs(held_for.max(0) as u64))
                        ),
                    )
                    .fix(format!("{cmd} locks release {scope} --force")),
                );
            } else {
                let severity = if stream
                    .lock_cooldown
                    .as_ref()
                    .is_some_and(|cooldown| cooldown.reason == "lock_busy")
                {
                    Severity::Wait
                } else {
                    Severity::Info
                };
                out.push(Finding::new(
                    severity,
                    scope.clone(),
                    format!("{line}: live; other runners wait for it (lock busy)"),
                ));
            }
        }
    } else if let Some(cooldown) = &stream.lock_cooldown {
        if cooldown.reason == "lock_busy" {
            out.push(Finding::new(
                Severity::Wait,
                scope.clone(),
                format!(
                    "lock busy: {} until {}",
                    cooldown
                        .detail
                        .as_deref()
                        .unwrap_or("held by another owner"),
                    format_ts(cooldown.until_at)
                ),
            ));
        } else if cooldown.reason == "lock_unavailable" {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!(
                        "the lock backend was unreachable when the daemon last tried: {}",
                        cooldown.detail.as_deref().unwrap_or("no detail")
                    ),
                )
                .fix("start redis (or fix redis.url); leases resume by themselves"),
            );
        }
    }
    if !matches!(stream.shape, ShapeFacts::Windowed) {
        shape_findings(account, stream, cmd, now, out);
        return;
    }
    // 2. Never ran.
    if stream.rows == 0 {
        out.push(
            Finding::new(
                Severity::Action,
                scope.clone(),
                "no ledger rows: the daemon has not run this stream yet",
            )
            .fix(format!("{cmd} run")),
        );
        return;
    }
    // 3. Applied never advances: FAILED hours.
    if let Some(failed) = &stream.failed {
        let retry = match failed.next_retry_at {
            Some(at) if at <= now => "retry due now".to_string(),
            Some(at) => format!("next retry at {}", format_ts(at)),
            None => "no retry scheduled".to_string(),
        };
        let days: BTreeSet<String> = [failed.oldest_hour, failed.newest_hour]
            .into_iter()
            .map(day_of)
            .collect();
        let fill_days = days
            .iter()
            .map(|day| format!("{cmd} fill-day {id} {name} {day}"))
            .collect::<Vec<_>>()
            .join(" && ");
        if let Some(error) = &failed.auth_error {
            out.push(
                Finding::new(
                    Severity::Action,
                    scope.clone(),
                    format!(
                        "authentication failures: {error}{}",
                        credential_hint(account.credentials.as_ref())
                    ),
                )
                .fix(format!(
                    "fix the credentials, restart the daemon, then {fill_days}"
                )),
            );
        }
        let repeated = failed.max_attempts >= 3;
        let message = format!(
            "applied not advancing: {} hour(s) FAILED between {} and {} (attempts up to {}); last error: {}; {retry}",
            failed.hours,
            format_ts(failed.oldest_hour),
            format_ts(failed.newest_hour),
            failed.max_attempts,
            failed.last_error.as_deref().unwrap_or("none recorded")
        );
        if repeated {
            out.push(
                Finding::new(Severity::Action, scope.clone(), message)
                    .fix(format!("fix the cause of the error, then {fill_days}")),
            );
        } else {
            out.push(Finding::new(
                Severity::Wait,
                scope.clone(),
                format!("{message} (retried automatically with backoff)"),
            ));
        }
    }
    // 4. Missing hours never drop.
    if stream.claims_stalled(now) {
        let why = if account
            .supervisor
            .as_ref()
            .is_some_and(|s| s.state == ChildState::Quarantined)
        {
            "the account actor is quarantined".to_string()
        } else if let Some(cooldown) = &account.cooldown {
            format!(
                "a {} cooldown runs until {}",
                cooldown.reason,
                format_ts(cooldown.until_at)
            )
        } else if let Some(lock) = stream.lock.as_ref().filter(|lock| !lock.stale) {
            format!("the lease is held by {}", lock.owner)
        } else {
            "no lease is held and no cooldown runs: no daemon is claiming (is it running?)"
                .to_string()
        };
        // A cooldown, a live lease or a quarantine explains it (and has its own finding);
        // otherwise nothing is claiming at all and a person must start the daemon.
        let explained = stream.lock.as_ref().is_some_and(|lock| !lock.stale)
            || account.cooldown.is_some()
            || account
                .supervisor
                .as_ref()
                .is_some_and(|s| s.state == ChildState::Quarantined);
        let (severity, fix) = if explained {
            (
                Severity::Wait,
                "see the other findings of this account".to_string(),
            )
        } else {
            (Severity::Action, format!("start the daemon: {cmd} run"))
        };
        out.push(
            Finding::new(
                severity,
                scope.clone(),
                format!(
                    "missing hours not dropping: {} hour(s) claimable since {} (next claimable {}) but nothing claimed them{}; why: {why}",
                    stream.claimable_now,
                    format_ts(stream.claimable_since.unwrap_or(now)),
                    stream.next_claimable_hour.map(format_ts).unwrap_or_else(|| "-".to_string()),
                    stream
                        .last_claim
                        .as_ref()
                        .map(|(at, owner)| format!(" (last claim {} by {owner})", format_ts(*at)))
                        .unwrap_or_else(|| " (never claimed)".to_string())
                ),
            )
            .fix(fix),
        );
    }
    // 5. Units stuck in flight.
    if stream.in_flight_stuck(now) {
        out.push(
            Finding::new(
                Severity::Action,
                scope.clone(),
                format!(
                    "{} hour(s) in flight since {} (report {}), longer than poll_timeout plus two intervals: the worker looks stuck",
                    stream.in_flight(),
                    format_ts(stream.in_flight_since.unwrap_or(now)),
                    stream.in_flight_report.as_deref().unwrap_or("not yet requested")
                ),
            )
            .fix(format!("restart the daemon ({cmd} run); it resumes polling the same report")),
        );
    }
    // 6. Data stale with nothing pending: the daemon stopped seeding.
    if stream.pending() == 0 && stream.failed.is_none() {
        if let Some(behind) = stream.behind_secs(now) {
            if behind > stream.lag_allowed() {
                out.push(
                    Finding::new(
                        Severity::Action,
                        scope.clone(),
                        format!(
                            "newest applied hour {} is {} behind and no newer hour was seeded: no daemon is running this stream",
                            format_ts(stream.last_applied_hour.unwrap_or(0)),
                            humantime::format_duration(Duration::from_secs(behind as u64))
                        ),
                    )
                    .fix(format!("start the daemon: {cmd} run")),
                );
            }
        }
    }
}

/// What the lease backend answered.
#[derive(Debug, Default)]
pub struct LockProbe {
    pub locks: Vec<LockInfo>,
    /// Scope -> acquired_at (epoch ms), when the backend stores it.
    pub acquired_at_ms: HashMap<String, i64>,
    pub findings: Vec<Finding>,
}

/// Lists the leases and when they were acquired; a Redis that does not answer a TCP
/// connect within [`CONNECT_TIMEOUT`] is a finding (and the list is empty).
pub async fn probe_locks(config: &Deployment) -> LockProbe {
    let mut probe = LockProbe::default();
    match &config.redis {
        Some(redis) => {
            let url = match redis.url.resolve() {
                Ok(url) => url,
                Err(message) => {
                    probe.findings.push(
                        Finding::new(Severity::Action, "redis", message)
                            .fix("export the variable named by redis.url_env"),
                    );
                    return probe;
                }
            };
            let Some((host, port)) = host_port(&url, 6379) else {
                probe.findings.push(Finding::new(
                    Severity::Action,
                    "redis",
                    "redis.url cannot be parsed; use the form redis://HOST:PORT/",
                ));
                return probe;
            };
            let address = format!("{host}:{port}");
            if let Err(err) = tcp_probe(&host, port).await {
                probe.findings.push(
                    Finding::new(
                        Severity::Action,
                        "redis",
                        format!(
                            "redis at {address} is unreachable ({err}): no stream can take its lease, nothing syncs"
                        ),
                    )
                    .fix(format!(
                        "start redis-server on {address} (or fix redis.url); leases resume by themselves"
                    )),
                );
                return probe;
            }
            let service = tokio::time::timeout(
                Duration::from_secs(5),
                LockService::redis(&url, &redis.prefix),
            )
            .await;
            let service = match service {
                Ok(Ok(service)) => service,
                Ok(Err(err)) => {
                    probe.findings.push(Finding::new(
                        Severity::Action,
                        "redis",
                        format!("redis at {address} refused the connection: {err}"),
                    ));
                    return probe;
                }
                Err(_) => {
                    probe.findings.push(Finding::new(
                        Severity::Action,
                        "redis",
                        format!(
                            "redis at {address} accepted a connection but did not answer within 5s"
                        ),
                    ));
                    return probe;
                }
            };
            list_into(&service, &mut probe, &address).await;
        }
        None => {
            let path = config.database_path();
            if !path.exists() {
                return probe;
            }
            match LockService::sqlite(&path).await {
                Ok(service) => list_into(&service, &mut probe, "the sqlite lease table").await,
                Err(err) => probe.findings.push(Finding::new(
                    Severity::Action,
                    "database",
                    format!("cannot open the lease table in {}: {err}", path.display()),
                )),
            }
        }
    }
    probe
}

async fn list_into(service: &LockService, probe: &mut LockProbe, what: &str) {
    match tokio::time::timeout(Duration::from_secs(5), service.list()).await {
        Ok(Ok(locks)) => {
            probe.acquired_at_ms = crate::domain::lease::acquired_at_by_scope(&locks);
            probe.locks = locks;
        }
        Ok(Err(err)) => probe.findings.push(Finding::new(
            Severity::Action,
            service.backend(),
            format!("cannot list leases from {what}: {err}"),
        )),
        Err(_) => probe.findings.push(Finding::new(
            Severity::Action,
            service.backend(),
            format!("listing leases from {what} took longer than 5s"),
        )),
    }
}

/// `(host, port)` of a URL; `default_port` when it names none and its scheme has none.
pub fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_string();
    let port = parsed.port_or_known_default().unwrap_or(default_port);
    Some((host, port))
}

/// A TCP connect to `host:port` within [`CONNECT_TIMEOUT`] (name resolution included).
pub async fn tcp_probe(host: &str, port: u16) -> Result<(), String> {
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        )),
    }
}

/// Connects once to every distinct endpoint of the selected accounts (and the embedded
/// simulator when it listens on a fixed port).
pub async fn probe_endpoints(
    config: &Deployment,
    only_account: Option<&str>,
    options: &DoctorOptions,
) -> Vec<Finding> {
    let cmd = command_prefix(config, options);
    let mut targets: Vec<(String, u16, Vec<String>, bool)> = Vec::new();
    let mut add = |host: String, port: u16, account: &str, embedded: bool| match targets
        .iter_mut()
        .find(|(h, p, _, _)| *h == host && *p == port)
    {
        Some((_, _, accounts, _)) => {
            if !accounts.iter().any(|known| known == account) {
                accounts.push(account.to_string());
            }
        }
        None => targets.push((host, port, vec![account.to_string()], embedded)),
    };
    let mut findings = Vec::new();
    for account in &config.accounts {
        if only_account.is_some_and(|only| only != account.id) {
            continue;
        }
        match &account.endpoints {
            Endpoints::Explicit {
                api_base,
                token_url,
            } => {
                for url in [api_base, token_url] {
                    if let Some((host, port)) = host_port(url, 443) {
                        add(host, port, &account.id, false);
                    }
                }
            }
            Endpoints::EmbeddedSimulator => match &config.simulator_listen {
                Some(listen) if listen.port() != 0 => {
                    add(listen.ip().to_string(), listen.port(), &account.id, true)
                }
                _ => findings.push(Finding::new(
                    Severity::Info,
                    account.id.clone(),
                    "uses the embedded simulator on a random port: not checked",
                )),
            },
        }
    }
    let probes = targets
        .iter()
        .map(|(host, port, _, _)| tcp_probe(host, *port));
    let results = futures_util::future::join_all(probes).await;
    for ((host, port, accounts, embedded), result) in targets.into_iter().zip(results) {
        let address = format!("{host}:{port}");
        let who = if accounts.len() > 3 {
            format!(
                "{} and {} more accounts",
                accounts[..3].join(", "),
                accounts.len() - 3
            )
        } else {
            accounts.join(", ")
        };
        match result {
            Ok(()) => findings.push(Finding::new(
                Severity::Ok,
                address,
                format!("reachable (used by {who})"),
            )),
            Err(err) if embedded => findings.push(
                Finding::new(
                    Severity::Action,
                    address,
                    format!(
                        "the embedded simulator does not answer ({err}): the daemon is not running (used by {who})"
                    ),
                )
                .fix(format!("{cmd} run")),
            ),
            Err(err) => findings.push(
                Finding::new(
                    Severity::Action,
                    address,
                    format!("endpoint unreachable ({err}); used by {who}"),
                )
                .fix("check the network and the accounts' endpoint/token_url (or region) in the configuration"),
            ),
        }
    }
    findings
}

/// Everything `marketsync doctor` checks, as a report (async: probes run concurrently).
pub async fn diagnose(
    config: &Deployment,
    only_account: Option<&str>,
    only_stream: Option<&str>,
    options: &DoctorOptions,
) -> anyhow::Result<Report> {
    if let Some(id) = only_account {
        let Some(account) = config.account(id) else {
            let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
            bail!(
                "unknown account {id:?}; configured accounts: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        if let Some(name) = only_stream {
            if account.stream(name).is_none() {
                let known: Vec<&str> = account.streams.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "account {id} has no enabled stream {name:?}; enabled streams: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
        }
    }
    let (probe, endpoint_findings) = tokio::join!(
        probe_locks(config),
        probe_endpoints(config, only_account, options)
    );
    let mut all = probe.findings;
    all.extend(endpoint_findings);
    let database = config.database_path();
    if !database.exists() {
        all.push(
            Finding::new(
                Severity::Action,
                "database",
                format!(
                    "no database at {}: the daemon never ran with this data_dir",
                    database.display()
                ),
            )
            .fix(format!("{} run", command_prefix(config, options))),
        );
        return Ok(Report::new(all));
    }
    let config_owned = config.clone();
    let only_account = only_account.map(str::to_string);
    let only_stream = only_stream.map(str::to_string);
    let options = options.clone();
    let locks = probe.locks;
    let acquired = probe.acquired_at_ms;
    let stream_findings = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Finding>> {
        let ledger = SqliteLedger::open(&config_owned.database_path())
            .with_context(|| "opening the database")?;
        let supervision = ledger.with_read_conn(crate::store::supervision::statuses)?;
        let now = now_ts();
        let facts = gather(
            &config_owned,
            &ledger,
            &locks,
            &acquired,
            &supervision,
            only_account.as_deref(),
            only_stream.as_deref(),
            now,
        )?;
        Ok(findings(&config_owned, &facts, &options, now))
    })
    .await
    .context("the doctor's database task failed")??;
    all.extend(stream_findings);
    Ok(Report::new(all))
}

/// `marketsync doctor`: prints one line per finding (or JSON) and returns the exit code.
pub fn run(
    config: &Deployment,
    only_account: Option<&str>,
    only_stream: Option<&str>,
    json: bool,
    options: &DoctorOptions,
) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(diagnose(config, only_account, only_stream, options))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::supervisor::CrashInfo;
    use crate::config::Config;
    use crate::domain::HourWindow;
    use crate::shapes::windowed::lookback_window;
    use crate::store::HourState;

    fn config() -> Deployment {
        Config::parse(
            r#"
data_dir = "/nonexistent"
[simulator]
enabled = true
[[accounts]]
id = "acct"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "24h"
"#,
            "t.toml",
        )
        .unwrap()
        .deployment()
    }

    fn facts(ledger: &SqliteLedger, now: i64) -> Vec<AccountFacts> {
        gather(
            &config(),
            ledger,
            &[],
            &HashMap::new(),
            &[],
            None,
            None,
            now,
        )
        .unwrap()
    }

    const NOW: i64 = 1_764_756_000 + 1800;

    fn seeded(at: i64) -> SqliteLedger {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let stream = &config().accounts[0].streams[0];
        let window = lookback_window(stream, NOW);
        ledger.seed("acct", "vendor_rt_sales", window, at).unwrap();
        ledger
    }

    fn ebay_config() -> Deployment {
        Config::parse(
            r#"
data_dir = "/nonexistent"
[simulator]
enabled = true
[[accounts]]
id = "store"
provider = "ebay"
[accounts.streams.orders]
interval = "5m"
safety_lag = "2m"
"#,
            "t.toml",
        )
        .unwrap()
        .deployment()
    }

    fn cursor_verdict(ledger: &SqliteLedger, now: i64) -> (Verdict, String, Vec<Finding>) {
        let config = ebay_config();
        let accounts = gather(&config, ledger, &[], &HashMap::new(), &[], None, None, now).unwrap();
        let (verdict, why) = verdict(&accounts[0], &accounts[0].streams[0], now);
        let found = findings(&config, &accounts, &DoctorOptions::default(), now);
        (verdict, why, found)
    }

    fn set_cursor(
        ledger: &SqliteLedger,
        cursor: i64,
        last_run: i64,
        failures: i64,
        error: Option<&str>,
    ) {
        ledger.with_conn(|conn| {
            conn.execute(
                "INSERT INTO cursors (account, stream, cursor_ts, updated_at, last_run_at, last_error, failures, retry_at)
                 VALUES ('store', 'orders', ?1, ?2, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, stream) DO UPDATE SET cursor_ts = excluded.cursor_ts,
                   last_run_at = excluded.last_run_at, last_error = excluded.last_error,
                   failures = excluded.failures, retry_at = excluded.retry_at",
                rusqlite::params![cursor, last_run, error, failures, error.map(|_| NOW + 600)],
            )
            .unwrap();
        });
    }

    #[test]
    fn cursor_streams_get_verdicts_from_their_cursor() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let (verdict, why, found) = cursor_verdict(&ledger, NOW);
        assert_eq!(verdict, Verdict::Stalled);
        assert!(why.contains("no cursor yet"), "{why}");
        assert!(found.iter().any(|f| f.severity == Severity::Action
            && f.fix.as_deref() == Some("marketsync --config t.toml run")));

        // 30 days behind, running: syncing one window per run.
        set_cursor(&ledger, NOW - 30 * 86_400, NOW - 10, 0, None);
        let (verdict, why, found) = cursor_verdict(&ledger, NOW);
        assert_eq!(verdict, Verdict::Syncing, "{why}");
        assert!(
            why.contains("behind; catching up in windows of at most 1day"),
            "{why}"
        );
        assert!(
            found.iter().all(|f| f.severity == Severity::Ok),
            "{found:?}"
        );

        // Behind and no run for an hour: nobody works it.
        set_cursor(&ledger, NOW - 30 * 86_400, NOW - 3600, 0, None);
        let (verdict, why, _) = cursor_verdict(&ledger, NOW);
        assert_eq!(verdict, Verdict::Stalled, "{why}");

        // A failing window keeps the cursor and says why.
        set_cursor(
            &ledger,
            NOW - 86_400,
            NOW - 10,
            3,
            Some("getOrders returned http 500: boom"),
        );
        let (verdict, why, found) = cursor_verdict(&ledger, NOW);
        assert_eq!(verdict, Verdict::Failing, "{why}");
        assert!(
            why.contains("failed 3 time(s)") && why.contains("http 500: boom"),
            "{why}"
        );
        assert!(
            found
                .iter()
                .any(|f| f.message.contains("retried automatically")),
            "{found:?}"
        );

        // Within an interval of now minus the safety lag: caught up.
        set_cursor(&ledger, NOW - 120 - 60, NOW - 60, 0, None);
        let (verdict, why, _) = cursor_verdict(&ledger, NOW);
        assert_eq!(verdict, Verdict::CaughtUp, "{why}");
    }

    #[test]
    fn no_rows_is_stalled_and_needs_the_daemon() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let accounts = facts(&ledger, NOW);
        let (verdict, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
        assert_eq!(verdict, Verdict::Stalled);
        assert!(why.contains("has not run"), "{why}");
        let found = findings(&config(), &accounts, &DoctorOptions::default(), NOW);
        assert!(found.iter().any(|f| f.severity == Severity::Action
            && f.fix.as_deref() == Some("marketsync --config t.toml run")));
    }

    #[test]
    fn fresh_missing_hours_are_syncing_old_unclaimed_ones_are_stalled() {
        let ledger = seeded(NOW - 10);
        let accounts = facts(&ledger, NOW);
        assert_eq!(
            verdict(&accounts[0], &accounts[0].streams[0], NOW).0,
            Verdict::Syncing
        );
        let ledger = seeded(NOW - 3 * HOUR);
        let accounts = facts(&ledger, NOW);
        let (verdict_now, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
        assert_eq!(verdict_now, Verdict::Stalled, "{why}");
        assert!(why.contains("never claimed"), "{why}");
        let found = findings(&config(), &accounts, &DoctorOptions::default(), NOW);
        let line = found
            .iter()
            .find(|f| f.message.contains("missing hours not dropping"))
            .expect("missing-hours finding");
        assert!(
            line.message.contains("no daemon is claiming"),
            "{}",
            line.message
        );
    }

    #[test]
    fn cooldown_outranks_failures_and_quarantine_outranks_everything() {
        let ledger = seeded(NOW - 10);
        let claim = ledger
            .claim(
                "acct",
                "vendor_rt_sales",
                2,
                crate::config::ClaimOrder::NewestFirst,
                "t:1@h",
                None,
                NOW,
            )
            .unwrap()
            .unwrap();
        ledger
            .fail(&claim, "getReport returned http 500: boom", NOW + 600, NOW)
            .unwrap();
        let accounts = facts(&ledger, NOW);
        let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
        assert_eq!(v, Verdict::Failing);
        assert!(
            why.contains("http 500") && why.contains("next retry at"),
            "{why}"
        );

        ledger
            .set_cooldown(&Cooldown {
                scope: account_scope("amazon", "acct"),
                reason: "quota".to_string(),
                started_at: NOW,
                until_at: NOW + 1800,
                detail: Some("createReport 429".to_string()),
            })
            .unwrap();
        let mut accounts = facts(&ledger, NOW);
        let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
        assert_eq!(v, Verdict::Cooldown);
        assert!(why.contains(&format_ts(NOW + 1800)), "{why}");

        accounts[0].supervisor = Some(ChildStatus {
            id: "acct".to_string(),
            state: ChildState::Quarantined,
            restarts: 6,
            last_crash: Some(CrashInfo {
                at_utc: "2025-12-03T10:00:00Z".to_string(),
                reason: "poison row".to_string(),
            }),
            quarantined_until: Some("2025-12-03T11:00:00Z".to_string()),
            reason: None,
        });
        let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
        assert_eq!(v, Verdict::Quarantined);
        assert!(why.contains("poison row"), "{why}");
        let report = Report::new(findings(
            &config(),
            &accounts,
            &DoctorOptions::default(),
            NOW,
        ));
        assert_eq!(report.exit_code(), 1);
        assert_eq!(report.findings[0].severity, Severity::Action);
        assert!(report.render().contains("accounts resume acct"));
    }

    #[test]
    fn all_applied_is_caught_up_until_it_lags() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let stream = &config().accounts[0].streams[0];
        let window = lookback_window(stream, NOW);
        ledger.seed("acct", "vendor_rt_sales", window, NOW).unwrap();
        ledger.with_conn(|conn| {
            conn.execute(
                &format!(
                    "UPDATE ledger_hours SET state = '{}'",
                    HourState::Applied.as_str()
                ),
                [],
            )
            .unwrap();
        });
        let accounts = facts(&ledger, NOW);
        assert_eq!(
            verdict(&accounts[0], &accounts[0].streams[0], NOW).0,
            Verdict::CaughtUp
        );
        let later = NOW + 5 * HOUR;
        let accounts = facts(&ledger, later);
        let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], later);
        assert_eq!(v, Verdict::Stalled, "{why}");
        let _ = HourWindow::new(window.start, window.end);
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("config/demo.toml"), "config/demo.toml");
        assert_eq!(shell_word("my config.toml"), "'my config.toml'");
        assert_eq!(
            host_port("redis://127.0.0.1:6390/", 6379),
            Some(("127.0.0.1".to_string(), 6390))
        );
        assert_eq!(
            host_port("redis://localhost", 6379),
            Some(("localhost".to_string(), 6379))
        );
        assert_eq!(
            host_port("https://sellingpartnerapi-na.amazon.com", 443),
            Some(("sellingpartnerapi-na.amazon.com".to_string(), 443))
        );
    }
}
