//! The runner loop every stream of every shape runs under: take the stream's lease and
//! run one pass of its shape, then wait for the interval, the cooldown's end, the lease
//! holder's expiry or the next retry, whichever comes first. Infrastructure errors back
//! off without crashing the account.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn, Instrument};

use super::context::{blocking, RunOutcome, StreamContext, SyncError};
use crate::domain::{format_ts, now_ts};
use crate::lock::keeper::{HeldLease, KeeperHandle};
use crate::store::{Cooldown, LedgerError, WriteFence};

/// A runner waiting for a cooldown's end asks again this often (a clear made on another
/// host, in a Redis shared with it, shows within this long).
const COOLDOWN_RECHECK: Duration = Duration::from_secs(60);

/// One stream's loop: take the lease and run, then wait for the interval, the cooldown's
/// end, the lease holder's expiry or the next retry, whichever comes first;
/// infrastructure errors back off without crashing.
///
/// Each pass (the run, and the waits and retries that follow from its outcome) runs in
/// the stream's span ([`StreamContext::span`]), so every line it logs, down to the
/// store work it sends to the blocking pool, names the account and the stream.
///
/// Memory: 10,000 accounts keep 10,000 of these futures resident while idle, so the
/// future holds the context behind an `Arc` and boxes the pass (the run, the cooldown
/// wait, the next-wake lookup): it is allocated only while it happens. The span is made
/// per pass for the same reason: an idle stream keeps no span (a registry slot and its
/// formatted fields) alive.
pub async fn run_stream(context: Arc<StreamContext>, keeper: KeeperHandle, ttl: Duration) {
    let mut infra_failures: u32 = 0;
    loop {
        // A shape that works throughout its run holds a work permit for it (let go
        // while it waits for quota); a report stream takes one only to download and
        // apply (its reports wait in flight holding nothing).
        let permits = context.permits.for_run();
        if context.work.runner().works_throughout() {
            tokio::select! {
                _ = context.cancel.cancelled() => break,
                _ = permits.hold() => {}
            }
        }
        let pass = Box::pin(
            pass(&context, &keeper, ttl, permits, &mut infra_failures).instrument(context.span()),
        );
        let wait = match pass.await {
            Next::Stop => break,
            Next::Again => continue,
            Next::Wait(wait) => wait,
        };
        tokio::select! {
            _ = context.cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What the runner loop does after a pass.
enum Next {
    /// Shutdown: the runner ends.
    Stop,
    /// Run again at once (a cooldown just ended).
    Again,
    /// Run again after this long.
    Wait(Duration),
}

/// One pass of the runner loop: the leased run, then what its outcome calls for (the
/// cooldown wait, the next wake); see [`run_stream`].
async fn pass(
    context: &Arc<StreamContext>,
    keeper: &KeeperHandle,
    ttl: Duration,
    permits: super::context::RunPermits,
    infra_failures: &mut u32,
) -> Next {
    let interval = context.stream.interval;
    let outcome = {
        let _busy = context
            .progress
            .as_ref()
            .map(|progress| progress.busy_scope());
        // Each run gets its own cancellation scope under the daemon's `abort`, closed
        // when the run ends or is dropped: what the run leaves behind on it (its lease
        // renewer task) stops with the run, instead of idling until the next renewal
        // time and then failing to renew a released lease (one resident task per
        // stream, issue 3's RSS).
        let run_scope = context.abort.child_token();
        let _close_scope = run_scope.clone().drop_guard();
        let mut run_context = StreamContext::clone(context);
        run_context.abort = run_scope;
        run_context.permits = permits;
        let outcome = run_context.run_leased(keeper, ttl).await;
        context.metrics.run_ended();
        outcome
    };
    let wait = match outcome {
        Ok(LeasedOutcome::Busy { until_ms, .. }) => {
            let until = until_ms / 1000 + 1;
            Duration::from_secs(
                (until - now_ts()).clamp(1, interval.as_secs().max(1) as i64) as u64,
            )
        }
        Ok(LeasedOutcome::Unavailable(_)) => {
            *infra_failures = infra_failures.saturating_add(1);
            Duration::from_secs(1u64 << (*infra_failures).min(4))
        }
        Ok(LeasedOutcome::Lost(_)) => Duration::from_secs(1),
        Ok(LeasedOutcome::Ran(RunOutcome::Cancelled)) => return Next::Stop,
        Ok(LeasedOutcome::Ran(RunOutcome::CoolingDown { until, reason })) => {
            *infra_failures = 0;
            info!(reason = %reason, until = %format_ts(until), "cooling down");
            if !wait_out_cooldown(context, until).await {
                return Next::Stop;
            }
            return Next::Again;
        }
        Ok(LeasedOutcome::Ran(RunOutcome::Deferred {
            retry_in,
            infrastructure,
            ..
        })) => {
            if infrastructure {
                *infra_failures = infra_failures.saturating_add(1);
                Duration::from_secs(1u64 << (*infra_failures).min(4)).max(retry_in)
            } else {
                *infra_failures = 0;
                retry_in
            }
        }
        Ok(LeasedOutcome::Ran(RunOutcome::Finished { .. })) => {
            *infra_failures = 0;
            next_wake(context, interval).await
        }
        Err(err) => {
            *infra_failures = infra_failures.saturating_add(1);
            let backoff = Duration::from_secs(1u64 << (*infra_failures).min(6));
            error!(error = %err, retry_in = %humantime::format_duration(backoff), "run failed; retrying");
            backoff
        }
    };
    Next::Wait(wait)
}

/// Waits until the cooldown that stopped the last run is over: its end, an early clear
/// (the cooldown watch), or every [`COOLDOWN_RECHECK`] a fresh look. Returns false when
/// shutdown was requested meanwhile. Nothing is claimed and no lease is taken while
/// waiting.
async fn wait_out_cooldown(context: &StreamContext, until: i64) -> bool {
    let mut until = until;
    let mut cleared = context.work.pacer().and_then(|pacer| pacer.cleared.clone());
    loop {
        let remaining = until - now_ts();
        if remaining <= 0 {
            return true;
        }
        let nap = Duration::from_secs(remaining as u64).min(COOLDOWN_RECHECK);
        let ended_early = async {
            match cleared.as_mut() {
                Some(receiver) => receiver.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = context.cancel.cancelled() => return false,
            _ = tokio::time::sleep(nap) => {}
            alive = ended_early => {
                if !alive {
                    cleared = None;
                }
            }
        }
        match context.active_cooldown().await {
            Ok(Some(cooldown)) => until = cooldown.until_at,
            Ok(None) => {
                info!("cooldown over; resuming");
                return true;
            }
            Err(err) => {
                debug!(error = %err, "cannot read the cooldown; keeping the known end")
            }
        }
    }
}

/// The interval, or sooner when a failed hour becomes retryable or a new hour completes.
async fn next_wake(context: &StreamContext, interval: Duration) -> Duration {
    let now = now_ts();
    let (account, stream) = (context.account.id.clone(), context.stream.name.clone());
    let next_retry = blocking(&context.ledger, move |ledger| {
        ledger.snapshot(&account, &stream, now)
    })
    .await
    .ok()
    .and_then(|snapshot| snapshot.next_retry_at);
    let next_hour_complete =
        crate::domain::floor_hour(now - context.stream.safety_lag.as_secs() as i64)
            + 3600
            + context.stream.safety_lag.as_secs() as i64;
    let mut wake = now + interval.as_secs() as i64;
    for candidate in [next_retry, Some(next_hour_complete)].into_iter().flatten() {
        wake = wake.min(candidate.max(now + 1));
    }
    Duration::from_secs((wake - now).max(1) as u64).min(interval.max(Duration::from_secs(1)))
}

/// How a leased run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeasedOutcome {
    Ran(RunOutcome),
    /// Another owner holds the scope's lease until `until_ms`.
    Busy {
        holder: String,
        until_ms: i64,
    },
    /// The lock backend cannot be reached; work waits for it.
    Unavailable(String),
    /// The lease was lost mid-run (not renewed in time, or taken over); work stopped.
    Lost(String),
}

/// The lock condition of a stream whose writes the store refused as stale (a newer
/// fence was seen for the scope: another owner took the lease over, or two daemons share
/// the database but not the lease backend).
pub const FENCE_REFUSED: &str = "fence_refused";

/// How long a fence refusal stays on record after the last one (unless a clean run
/// under a lease clears it sooner).
pub const FENCE_REFUSAL_MEMORY: Duration = Duration::from_secs(10 * 60);

/// The refusal count at the start of a `fence_refused` condition's detail.
pub fn fence_refusals_in(detail: &str) -> u32 {
    detail
        .split_once(' ')
        .and_then(|(count, _)| count.parse::<u32>().ok())
        .unwrap_or(0)
}

/// Cooldown scope under which lock conditions of a stream are recorded for `status`.
pub fn lock_scope(account: &str, stream: &str) -> String {
    format!("lock:{account}/{stream}")
}

/// Aborts a spawned task when dropped.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl StreamContext {
    /// The lease scope of this stream.
    pub fn lease_scope(&self) -> String {
        format!("{}/{}", self.account.id, self.stream.name)
    }

    /// Takes the stream's lease (its fence above the store's newest for the scope), runs
    /// under its fence while a renewer extends it every ttl/3, and releases it. Busy and
    /// unreachable lock backends and writes refused as stale are recorded (cooldown
    /// reasons `lock_busy`, `lock_unavailable`, [`FENCE_REFUSED`]) so `status` and
    /// `doctor` can say why nothing moves.
    pub async fn run_leased(
        &self,
        keeper: &KeeperHandle,
        ttl: Duration,
    ) -> Result<LeasedOutcome, SyncError> {
        use crate::lock::LockError;
        let locks = keeper.locks();
        let scope = self.lease_scope();
        let status_scope = lock_scope(&self.account.id, &self.stream.name);
        // The store's newest fence for the scope is the floor of the new lease's fence (one
        // atomic step in the backend): a lease backend that lost its counter (Redis
        // restarted empty) cannot hand out a fence the store refuses as stale.
        let (account, stream) = (self.account.id.clone(), self.stream.name.clone());
        let floor = blocking(&self.ledger, move |ledger| {
            ledger.newest_fence(&account, &stream)
        })
        .await?;
        // Cancelled by the keeper when the lease is lost: the run stops at its next await.
        let lost = self.abort.child_token();
        let mut acquired = keeper
            .acquire(&scope, &self.owner, ttl, floor, lost.clone())
            .await;
        if let Err(LockError::Busy { holder, .. }) = &acquired {
            if *holder == self.owner {
                // Our own previous incarnation in this process (an account actor that
                // crashed or was killed) left it; it cannot release in a destructor. The
                // owner names this process start (`#instance`), so another daemon with the
                // same pid and hostname (a container) never matches. Take it back: the new
                // fence shuts out anything the old incarnation might still write.
                info!(scope = %scope, owner = %self.owner, "taking back the lease of a previous incarnation of this account");
                let _ = locks.release_scope(&scope, true).await;
                acquired = keeper
                    .acquire(&scope, &self.owner, ttl, floor, lost.clone())
                    .await;
            }
        }
        let (lease, deadline) = match acquired {
            Ok(HeldLease {
                lease,
                taken_from,
                deadline,
            }) => {
                self.metrics.lease_held(&scope);
                if taken_from.is_some() {
                    // An expired lease of another owner: seed 000's "steal", counted.
                    self.metrics.lock_takeover(&scope);
                }
                (lease, deadline)
            }
            Err(LockError::Busy { holder, .. }) => {
                let until_ms = locks
                    .list()
                    .await
                    .ok()
                    .and_then(|all| all.into_iter().find(|info| info.scope == scope))
                    .and_then(|info| info.expires_at_ms)
                    .unwrap_or_else(|| (now_ts() + ttl.as_secs() as i64) * 1000);
                let until = (until_ms / 1000).max(now_ts() + 1);
                self.record_lock_condition(
                    &status_scope,
                    "lock_busy",
                    until,
                    &format!("held by {holder}"),
                )
                .await?;
                debug!(scope = %scope, holder = %holder, "lease busy; another owner works this scope");
                return Ok(LeasedOutcome::Busy { holder, until_ms });
            }
            Err(err) => {
                let message = err.to_string();
                self.record_lock_condition(
                    &status_scope,
                    "lock_unavailable",
                    now_ts() + 30,
                    &message,
                )
                .await?;
                warn!(scope = %scope, error = %message, "lock backend unavailable; work on this scope waits");
                return Ok(LeasedOutcome::Unavailable(message));
            }
        };
        // The lease is ours: a busy or unreachable backend is over. A fence refusal stays
        // on record until a run under a lease ends without one.
        let cleared = status_scope.clone();
        blocking(&self.ledger, move |ledger| {
            match ledger.active_cooldown(&cleared, now_ts())? {
                Some(condition) if condition.reason == FENCE_REFUSED => Ok(()),
                _ => ledger.clear_cooldown(&cleared).map(|_| ()),
            }
        })
        .await?;

        // The keeper renews the lease every ttl/3 until it is released below, or, when
        // this task is aborted before that (an account stopped past its grace period),
        // when the guard drops.
        let release = keeper.release_guard(&lease);
        let mut leased = self.clone();
        leased.abort = lost.clone();
        leased.lease_deadline = Some(deadline);
        let outcome = leased.run_fenced(WriteFence::of(&lease)).await;
        release.release().await;
        match outcome {
            Err(SyncError::Ledger(LedgerError::StaleFence { fence, newest, .. })) => {
                let refusals = self
                    .record_fence_refusal(&status_scope, fence, newest)
                    .await?;
                warn!(scope = %scope, fence, newest, refusals, "lease taken over; stopped before writing");
                Ok(LeasedOutcome::Lost("a newer fence was seen".to_string()))
            }
            Ok(RunOutcome::Cancelled) if lost.is_cancelled() && !self.abort.is_cancelled() => {
                Ok(LeasedOutcome::Lost("lease not renewed in time".to_string()))
            }
            Ok(outcome) => {
                self.clear_fence_refusal(&status_scope).await?;
                Ok(LeasedOutcome::Ran(outcome))
            }
            Err(err) => Err(err),
        }
    }

    /// Records a write refused as stale under `status_scope` (reason
    /// [`FENCE_REFUSED`], kept for [`FENCE_REFUSAL_MEMORY`] after the last one, counting
    /// refusals in a row) so `status` and `doctor` can name a refusal loop. Returns how
    /// many refusals in a row there were.
    async fn record_fence_refusal(
        &self,
        status_scope: &str,
        fence: u64,
        newest: u64,
    ) -> Result<u32, SyncError> {
        let scope = status_scope.to_string();
        blocking(&self.ledger, move |ledger| {
            let now = now_ts();
            let previous = ledger
                .active_cooldown(&scope, now)?
                .filter(|condition| condition.reason == FENCE_REFUSED);
            let refusals = previous
                .as_ref()
                .and_then(|condition| condition.detail.as_deref())
                .map(fence_refusals_in)
                .unwrap_or(0)
                .saturating_add(1);
            let condition = Cooldown {
                scope: scope.clone(),
                reason: FENCE_REFUSED.to_string(),
                started_at: previous.map_or(now, |condition| condition.started_at),
                until_at: now.saturating_add(FENCE_REFUSAL_MEMORY.as_secs() as i64),
                detail: Some(format!(
                    "{refusals} refusal(s) in a row: a write carried fence {fence}, the store has seen {newest}"
                )),
            };
            ledger.clear_cooldown(&scope)?;
            ledger.set_cooldown(&condition)?;
            Ok(refusals)
        })
        .await
    }

    /// Forgets a recorded fence refusal: a run under a lease ended without one.
    async fn clear_fence_refusal(&self, status_scope: &str) -> Result<(), SyncError> {
        let scope = status_scope.to_string();
        blocking(&self.ledger, move |ledger| {
            if let Some(condition) = ledger.active_cooldown(&scope, now_ts())? {
                if condition.reason == FENCE_REFUSED {
                    ledger.clear_cooldown(&scope)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn record_lock_condition(
        &self,
        scope: &str,
        reason: &str,
        until: i64,
        detail: &str,
    ) -> Result<(), SyncError> {
        let cooldown = Cooldown {
            scope: scope.to_string(),
            reason: reason.to_string(),
            started_at: now_ts(),
            until_at: until,
            detail: Some(detail.to_string()),
        };
        blocking(&self.ledger, move |ledger| {
            ledger.clear_cooldown(&cooldown.scope)?;
            ledger.set_cooldown(&cooldown)
        })
        .await
    }
}
