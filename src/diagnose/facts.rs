//! Facts about each account and stream, gathered from typed store queries and the
//! lease list: counts, in-flight and claimable hours, failures, cursors, queues, leases.

use crate::actors::supervisor::ChildStatus;
use crate::domain::{format_ts, HOUR};
use crate::lock::LockInfo;
use crate::shapes::lock_scope;
use crate::shapes::spec::{AccountConfig, CredentialEnv, StreamConfig};
use crate::store::{account_scope, Cooldown, LedgerError, LedgerStore};
use std::collections::HashMap;

use super::*;

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
    /// The running cooldown of one API this stream calls, when its provider's hard stop
    /// cools a single API (eBay's per-API budgets, see
    /// [`crate::provider::stream_stop_scopes`]): this stream waits, the account's others
    /// go on.
    pub api_cooldown: Option<Cooldown>,
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

    pub(crate) fn pending(&self) -> u64 {
        self.counts[0] + self.counts[1] + self.counts[2]
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.counts[1] + self.counts[2]
    }

    /// No runner has touched the stream for this long while work waits: it is stuck.
    pub(crate) fn stall_after(&self) -> i64 {
        2 * self.stream.interval.as_secs() as i64 + 60
    }

    /// How long the newest applied hour may lag the newest complete hour.
    pub(crate) fn lag_allowed(&self) -> i64 {
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
    pub(crate) fn claims_stalled(&self, now: i64) -> bool {
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
    pub(crate) fn in_flight_stuck(&self, now: i64) -> bool {
        let limit = self.stream.windowed().poll_timeout.as_secs() as i64 + self.stall_after();
        self.in_flight() > 0
            && self
                .in_flight_since
                .is_some_and(|since| now - since > limit)
    }

    pub(crate) fn lock_line(&self) -> Option<String> {
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
    hours: &dyn LedgerStore,
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
            hours.active_cooldown(&account_scope(account.provider.as_str(), &account.id), now)?;
        let mut streams = Vec::new();
        for stream in &account.streams {
            if only_stream.is_some_and(|only| only != stream.name) {
                continue;
            }
            streams.push(stream_facts(
                hours,
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

/// The first running cooldown of an API that stops `stream` of `account` (see
/// [`StreamFacts::api_cooldown`]).
pub(crate) fn api_cooldown(
    hours: &dyn LedgerStore,
    account: &AccountConfig,
    stream: &str,
    now: i64,
) -> Result<Option<Cooldown>, LedgerError> {
    let scope = account_scope(account.provider.as_str(), &account.id);
    for api in crate::provider::stream_stop_scopes(account.provider, &scope, stream) {
        if let Some(cooldown) = hours.active_cooldown(&api, now)? {
            return Ok(Some(cooldown));
        }
    }
    Ok(None)
}

pub(crate) fn stream_facts(
    hours: &dyn LedgerStore,
    account: &AccountConfig,
    stream: &StreamConfig,
    locks: &[LockInfo],
    lock_acquired_at_ms: &HashMap<String, i64>,
    now: i64,
) -> Result<StreamFacts, LedgerError> {
    let mut facts = hour_facts(hours, account, stream, locks, lock_acquired_at_ms, now)?;
    if let ShapeFacts::Cursor(snapshot) = &mut facts.shape {
        *snapshot = hours.cursor_snapshot(&account.id, &stream.name)?;
    }
    Ok(facts)
}

pub(crate) fn hour_facts(
    hour_ledger: &dyn LedgerStore,
    account: &AccountConfig,
    stream: &StreamConfig,
    locks: &[LockInfo],
    lock_acquired_at_ms: &HashMap<String, i64>,
    now: i64,
) -> Result<StreamFacts, LedgerError> {
    let snapshot = hour_ledger.snapshot(&account.id, &stream.name, now)?;
    let lock_cooldown = hour_ledger.active_cooldown(&lock_scope(&account.id, &stream.name), now)?;
    let api_cooldown = api_cooldown(hour_ledger, account, &stream.name, now)?;
    let scope = format!("{}/{}", account.id, stream.name);
    let lock = locks.iter().find(|info| info.scope == scope).cloned();
    let acquired = lock_acquired_at_ms.get(&scope).copied();
    let (id, name) = (account.id.as_str(), stream.name.as_str());
    let hours = hour_ledger.hour_diagnostics(id, name, now)?;
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
    let shape = match account.provider.stream_shape(&stream.name) {
        crate::domain::Shape::Windowed => ShapeFacts::Windowed,
        crate::domain::Shape::Cursor => ShapeFacts::Cursor(None),
        crate::domain::Shape::Jobs => ShapeFacts::Jobs(crate::store::jobs::provider_queue(
            hour_ledger,
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
        api_cooldown,
        lock,
        lock_acquired_at_ms: acquired,
    })
}
