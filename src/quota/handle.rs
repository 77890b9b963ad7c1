//! How callers talk to a TokenManager: [`QuotaHandle`] (typed calls with timeouts), [`Pacer`]
//! (one provider client's handle, provider and scope), and the grant-rate benchmark.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::debug;

use super::cooldown::CooldownReason;
use super::manager::{QuotaMsg, TokenManager};
use super::settings::QuotaConfig;
use super::{
    BucketKey, BucketSpec, BucketView, Grant, Observation, Priority, QuotaBackend, QuotaError,
    QuotaStats, REPLY_GRACE, RPC_TIMEOUT,
};
use crate::store::Cooldown;

/// A cheap, cloneable handle on a TokenManager. Every clone shares the current actor:
/// when the root restarts a failed TokenManager it [`replaces`](QuotaHandle::replace) it
/// here, so callers (every account's pacer) survive the restart without new handles.
#[derive(Clone)]
pub struct QuotaHandle {
    /// Why a std lock: held only to clone or swap the reference, never across an await.
    current: Arc<RwLock<ActorRef<QuotaMsg>>>,
}

impl QuotaHandle {
    pub fn new(actor: ActorRef<QuotaMsg>) -> QuotaHandle {
        QuotaHandle {
            current: Arc::new(RwLock::new(actor)),
        }
    }

    /// The TokenManager that answers now.
    pub fn actor(&self) -> ActorRef<QuotaMsg> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Points every clone of this handle at `actor` (a restarted TokenManager).
    pub fn replace(&self, actor: ActorRef<QuotaMsg>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = actor;
    }

    /// Waits until every bucket in `keys` can pay `cost` (granted in priority order), or
    /// answers why not. The actor answers by `deadline` at the latest (a reply port it
    /// holds, never an unbounded `call!`); this await is bounded by the deadline too.
    pub async fn acquire(
        &self,
        keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Instant,
    ) -> Result<Grant, QuotaError> {
        let first = keys.first().cloned();
        let started = Instant::now();
        let (sender, receiver) = ractor::concurrency::oneshot();
        self.actor()
            .send_message(QuotaMsg::Acquire {
                keys,
                cost,
                priority,
                deadline,
                reply: sender.into(),
            })
            .map_err(|_| QuotaError::Stopped)?;
        match tokio::time::timeout_at(deadline + REPLY_GRACE, receiver).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(QuotaError::Stopped),
            Err(_) => Err(QuotaError::DeadlineExceeded {
                key: first.unwrap_or_else(|| BucketKey::new("", "", "")),
                waited: started.elapsed(),
            }),
        }
    }

    /// Reports what a provider response said (fire and forget).
    pub fn observe(&self, key: BucketKey, observation: Observation) {
        if self
            .actor()
            .send_message(QuotaMsg::Observe { key, observation })
            .is_err()
        {
            debug!("observation dropped: the token manager stopped");
        }
    }

    /// The running cooldown of `scope`, if any (memory, then the store).
    pub async fn cooldown(&self, scope: &str) -> Option<Cooldown> {
        let scope = scope.to_string();
        self.rpc(|reply| QuotaMsg::GetCooldown { scope, reply })
            .await
            .ok()
            .flatten()
    }

    /// Starts (or extends) a cooldown of `scope` until `until`; queued requests in the
    /// scope are answered `CoolingDown`. An `Err` means it could not be persisted (it
    /// still holds in this process).
    pub async fn start_cooldown(
        &self,
        scope: &str,
        reason: CooldownReason,
        until: DateTime<Utc>,
    ) -> Result<Cooldown, QuotaError> {
        self.start_cooldown_with_detail(scope, reason, until, None)
            .await
    }

    /// [`QuotaHandle::start_cooldown`] with a detail stored alongside.
    pub async fn start_cooldown_with_detail(
        &self,
        scope: &str,
        reason: CooldownReason,
        until: DateTime<Utc>,
        detail: Option<String>,
    ) -> Result<Cooldown, QuotaError> {
        let scope = scope.to_string();
        self.rpc(|reply| QuotaMsg::StartCooldown {
            scope,
            reason,
            until,
            detail,
            reply,
        })
        .await?
    }

    /// Forgets the cached answer about `scope` (fire and forget): the next question asks
    /// the store. For a cooldown another process cleared in the store.
    pub fn forget(&self, scope: &str) {
        let _ = self.actor().send_message(QuotaMsg::Forget {
            scope: scope.to_string(),
        });
    }

    /// Ends the cooldown of `scope`; true when one was running.
    pub async fn clear_cooldown(&self, scope: &str) -> bool {
        let scope = scope.to_string();
        self.rpc(|reply| QuotaMsg::ClearCooldown { scope, reply })
            .await
            .unwrap_or(false)
    }

    pub async fn stats(&self) -> Result<QuotaStats, QuotaError> {
        self.rpc(QuotaMsg::Stats).await
    }

    /// The bucket of `key` as the manager sees it (`None` before its first use).
    pub async fn bucket(&self, key: BucketKey) -> Result<Option<BucketView>, QuotaError> {
        self.rpc(|reply| QuotaMsg::Bucket { key, reply }).await?
    }

    /// Every bucket the manager has used so far, with rate, burst and tokens now.
    pub async fn buckets(&self) -> Result<Vec<(BucketKey, BucketView)>, QuotaError> {
        self.rpc(QuotaMsg::Buckets).await?
    }

    /// Stops the actor; waiting requests are answered `Stopped`.
    pub fn stop(&self) {
        self.actor().stop(Some("stopped by its handle".to_string()));
    }

    async fn rpc<T, F>(&self, message: F) -> Result<T, QuotaError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> QuotaMsg,
    {
        let (sender, receiver) = ractor::concurrency::oneshot();
        self.actor()
            .send_message(message(sender.into()))
            .map_err(|_| QuotaError::Stopped)?;
        match tokio::time::timeout(RPC_TIMEOUT, receiver).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(QuotaError::Stopped),
            Err(_) => Err(QuotaError::Unavailable(format!(
                "the token manager did not answer within {}",
                humantime::format_duration(RPC_TIMEOUT)
            ))),
        }
    }
}

/// How one provider client's calls are paced: the TokenManager, the provider, and the
/// scope of the client's buckets (for SP-API the selling partner, so accounts of one
/// seller share its buckets and cooldowns). Attached to a client (see
/// [`crate::provider::amazon::SpApiClient::with_pacer`]); the sync runner asks it before
/// every call and tells it what every response said.
#[derive(Clone)]
pub struct Pacer {
    pub handle: QuotaHandle,
    pub provider: String,
    pub scope: String,
    /// The TokenManager keeps cooldowns outside the ledger (Redis), or under a scope
    /// other than the account's: a run stopped by one writes a copy under the account
    /// scope in the ledger, so `marketsync status` shows it.
    pub mirror_to_ledger: bool,
    /// Changes when a cooldown ended early (`marketsync cooldowns clear`): runners
    /// waiting for a cooldown's end look again.
    pub cleared: Option<tokio::sync::watch::Receiver<u64>>,
    /// The application-level bucket: `{provider}_application` keys in this scope for
    /// the listed operations (those with a configured limit). Requests pay it and the
    /// seller's bucket together, so the stricter applies.
    pub application: Option<(String, Vec<String>)>,
}

impl Pacer {
    pub fn new(handle: QuotaHandle, provider: &str, scope: &str) -> Pacer {
        Pacer {
            handle,
            provider: provider.to_string(),
            scope: scope.to_string(),
            mirror_to_ledger: false,
            cleared: None,
            application: None,
        }
    }

    /// Every bucket a call of `operation` pays: the seller's, and the application's
    /// when one is configured for that operation.
    pub fn keys(&self, operation: &str) -> Vec<BucketKey> {
        let mut keys = vec![self.key(operation)];
        if let Some((scope, operations)) = &self.application {
            if operations.iter().any(|configured| configured == operation) {
                keys.push(BucketKey::new(
                    format!("{}_application", self.provider),
                    operation,
                    scope,
                ));
            }
        }
        keys
    }

    /// The bucket of `operation` in this pacer's scope.
    pub fn key(&self, operation: &str) -> BucketKey {
        BucketKey::new(&self.provider, operation, &self.scope)
    }

    /// The cooldown scopes that stop calls for `account`: the provider, the bucket
    /// scope (`{provider}:{seller}`) and the account's own (`{provider}:{account}`).
    pub fn cooldown_scopes(&self, account: &str) -> Vec<String> {
        let mut scopes = vec![
            self.provider.clone(),
            crate::store::account_scope(&self.provider, &self.scope),
        ];
        let own = crate::store::account_scope(&self.provider, account);
        if !scopes.contains(&own) {
            scopes.push(own);
        }
        scopes
    }

    /// The first running cooldown among [`Pacer::cooldown_scopes`], as the TokenManager
    /// sees it (memory, then its store).
    pub async fn cooldown(&self, account: &str) -> Option<Cooldown> {
        for scope in self.cooldown_scopes(account) {
            if let Some(cooldown) = self.handle.cooldown(&scope).await {
                return Some(cooldown);
            }
        }
        None
    }
}

/// Grants per second a TokenManager sustains when the budget is not the limit (a huge
/// rate and burst): `n` grants by 32 concurrent callers. For `marketsync bench quota`.
pub async fn bench_grants(backend: QuotaBackend, n: usize) -> Result<f64, QuotaError> {
    const CALLERS: usize = 32;
    let scope = format!(
        "bench-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let config = QuotaConfig::new(backend).with_spec("bench", "grant", BucketSpec::new(1e12, 1e12));
    let (actor, join) = TokenManager::spawn(config).await?;
    let handle = QuotaHandle::new(actor);
    let key = BucketKey::new("bench", "grant", scope);
    // One warm-up grant (connects to Redis, creates the bucket).
    let deadline = Instant::now() + Duration::from_secs(30);
    let warm = handle
        .acquire(vec![key.clone()], 1.0, Priority::Background, deadline)
        .await;
    if let Err(err) = warm {
        handle.stop();
        let _ = join.await;
        return Err(err);
    }
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(CALLERS);
    for caller in 0..CALLERS {
        let share = n / CALLERS + usize::from(caller < n % CALLERS);
        let handle = handle.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let deadline = Instant::now() + Duration::from_secs(30);
                handle
                    .acquire(vec![key.clone()], 1.0, Priority::Background, deadline)
                    .await?;
            }
            Ok::<(), QuotaError>(())
        }));
    }
    let mut outcome = Ok(());
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => outcome = Err(err),
            Err(err) => outcome = Err(QuotaError::Unavailable(format!("bench task: {err}"))),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    handle.stop();
    let _ = join.await;
    outcome?;
    Ok(n as f64 / elapsed.max(f64::MIN_POSITIVE))
}
