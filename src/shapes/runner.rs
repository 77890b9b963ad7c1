//! The runner loop every stream of every shape runs under: take the stream's lease and
//! run one pass of its shape, then wait for the interval, the cooldown's end, the lease
//! holder's expiry or the next retry, whichever comes first. Infrastructure errors back
//! off without crashing the account.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, error, info};

use super::windowed::{blocking, LeasedOutcome, RunOutcome, StreamContext};
use crate::domain::{format_ts, now_ts};
use crate::lock::LockService;

/// A runner waiting for a cooldown's end asks again this often (a clear made on another
/// host, in a Redis shared with it, shows within this long).
const COOLDOWN_RECHECK: Duration = Duration::from_secs(60);

/// One stream's loop: take the lease and run, then wait for the interval, the cooldown's
/// end, the lease holder's expiry or the next retry, whichever comes first;
/// infrastructure errors back off without crashing.
///
/// Memory: 10,000 accounts keep 10,000 of these futures resident while idle, so the
/// future holds the context behind an `Arc` and boxes every await that is not the idle
/// wait (the run, the cooldown wait, the next-wake lookup): those are allocated only
/// while they happen.
pub async fn run_stream(
    context: Arc<StreamContext>,
    locks: LockService,
    ttl: Duration,
    permits: Arc<Semaphore>,
) {
    let interval = context.stream.interval;
    let mut infra_failures: u32 = 0;
    loop {
        let outcome = {
            let permit = tokio::select! {
                _ = context.cancel.cancelled() => break,
                permit = permits.acquire() => permit,
            };
            let Ok(_permit) = permit else {
                break;
            };
            let _busy = context
                .progress
                .as_ref()
                .map(|progress| progress.busy_scope());
            // Boxed: a run's future (HTTP, parsing, ledger calls) is tens of KB; boxing
            // keeps it allocated only while the run is in flight, not for every idle
            // stream of 10,000 accounts.
            Box::pin(async {
                // Each run gets its own cancellation scope under the daemon's `abort`,
                // closed when the run ends or is dropped: what the run leaves behind on
                // it (its lease renewer task) stops with the run, instead of idling
                // until the next renewal time and then failing to renew a released
                // lease (one resident task per stream, issue 3's RSS).
                let run_scope = context.abort.child_token();
                let _close_scope = run_scope.clone().drop_guard();
                let mut run_context = StreamContext::clone(&context);
                run_context.abort = run_scope;
                run_context.run_leased(&locks, ttl).await
            })
            .await
        };
        let wait = match outcome {
            Ok(LeasedOutcome::Busy { until_ms, .. }) => {
                let until = until_ms / 1000 + 1;
                Duration::from_secs(
                    (until - now_ts()).clamp(1, interval.as_secs().max(1) as i64) as u64,
                )
            }
            Ok(LeasedOutcome::Unavailable(_)) => {
                infra_failures = infra_failures.saturating_add(1);
                Duration::from_secs(1u64 << infra_failures.min(4))
            }
            Ok(LeasedOutcome::Lost(_)) => Duration::from_secs(1),
            Ok(LeasedOutcome::Ran(RunOutcome::Cancelled)) => break,
            Ok(LeasedOutcome::Ran(RunOutcome::CoolingDown { until, reason })) => {
                infra_failures = 0;
                info!(account = %context.account.id, stream = %context.stream.name, reason = %reason, until = %format_ts(until), "cooling down");
                if !Box::pin(wait_out_cooldown(&context, until)).await {
                    break;
                }
                continue;
            }
            Ok(LeasedOutcome::Ran(RunOutcome::Deferred {
                retry_in,
                infrastructure,
                ..
            })) => {
                if infrastructure {
                    infra_failures = infra_failures.saturating_add(1);
                    Duration::from_secs(1u64 << infra_failures.min(4)).max(retry_in)
                } else {
                    infra_failures = 0;
                    retry_in
                }
            }
            Ok(LeasedOutcome::Ran(RunOutcome::Finished { .. })) => {
                infra_failures = 0;
                Box::pin(next_wake(&context, interval)).await
            }
            Err(err) => {
                infra_failures = infra_failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << infra_failures.min(6));
                error!(account = %context.account.id, stream = %context.stream.name, error = %err, retry_in = %humantime::format_duration(backoff), "run failed; retrying");
                backoff
            }
        };
        tokio::select! {
            _ = context.cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
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
                info!(account = %context.account.id, stream = %context.stream.name, "cooldown over; resuming");
                return true;
            }
            Err(err) => {
                debug!(account = %context.account.id, error = %err, "cannot read the cooldown; keeping the known end")
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
