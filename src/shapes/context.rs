//! What every stream's run shares, whatever its shape: the [`StreamContext`] (account,
//! stream, ledger, lease owner, cancellation, metrics), the [`ShapeRunner`] seam and
//! [`StreamWork`], how a run ends ([`RunOutcome`]), and the quota and cooldown
//! handling every shape goes through (pacing a call, reading a refusal, persisting a
//! cooldown).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::spec::{AccountConfig, StreamConfig};
use super::windowed::WindowedRunner;
use crate::domain::{format_ts, now_ts};
use crate::provider::amazon::SpApiClient;
use crate::provider::ProviderError;
use crate::quota::{Observation, Pacer, QuotaError};
use crate::store::{account_scope, Claim, Cooldown, LedgerError, LedgerStore};

/// `min(max, base·2^n)·(1 + rand·0.2)` seconds after a unit's `n`-th failure.
pub fn retry_delay(stream: &StreamConfig, attempts_before: i64) -> Duration {
    let exponent = attempts_before.clamp(0, 30) as u32;
    let base = stream.retry_base.as_secs_f64() * 2f64.powi(exponent as i32);
    let capped = base.min(stream.retry_max.as_secs_f64());
    let jitter = 1.0 + rand::rng().random_range(0.0..0.2);
    Duration::from_secs_f64(capped * jitter)
}

/// Everything one stream runner needs.
#[derive(Clone)]
pub struct StreamContext {
    pub account: Arc<AccountConfig>,
    pub stream: StreamConfig,
    pub ledger: Arc<dyn LedgerStore>,
    /// The stream's sync shape and the client it calls.
    pub work: StreamWork,
    /// Where downloaded documents wait between DOWNLOADED and APPLIED.
    pub documents_dir: PathBuf,
    /// `task:pid@host`, written to `claimed_by`.
    pub owner: String,
    /// Stop claiming: shutdown was requested. Units in flight still finish.
    pub cancel: CancellationToken,
    /// Stop now: the shutdown grace period is over, or the lease was lost. Units in
    /// flight stop at their next await and keep their report ids for the next owner.
    pub abort: CancellationToken,
    /// Bumped per unit step and poll, read by the supervisor's stuck detection.
    pub progress: Option<Arc<crate::domain::supervision::ChildProgress>>,
    /// Crash drills (`[chaos]`), for this account only.
    pub chaos: Option<Arc<crate::domain::chaos::Chaos>>,
    /// The daemon's in-process counters (calls, 429s, lock takeovers).
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Work permits (`daemon.max_concurrent_runs`): held for the work that costs CPU,
    /// memory and database time, never while waiting (see [`RunPermits`]).
    pub permits: RunPermits,
    /// The daemon's poll schedule for reports in flight (`None`: a unit sleeps for its
    /// own polls; tools and tests).
    pub polls: Option<Arc<super::windowed::PollSchedule>>,
    /// Until when the run's lease is known to be ours (`None`: no lease; tools and
    /// tests). Checked before every provider call ([`StreamContext::paced`]).
    pub lease_deadline: Option<crate::lock::keeper::LeaseDeadline>,
}

/// The daemon's work permits and, for a run of a shape that holds one throughout, the
/// permit it holds. Waiting holds nothing: a quota wait lets go of the run's permit and
/// takes one again after the grant ([`StreamContext::paced`]); a report stream takes one
/// only to download and apply a document. The default is unbounded (tools and tests).
#[derive(Clone, Default)]
pub struct RunPermits {
    semaphore: Option<Arc<tokio::sync::Semaphore>>,
    held: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
}

impl RunPermits {
    /// Permits from `semaphore`, shared by every stream of the daemon.
    pub fn bounded(semaphore: Arc<tokio::sync::Semaphore>) -> RunPermits {
        RunPermits {
            semaphore: Some(semaphore),
            held: Arc::default(),
        }
    }

    /// The same permits with a slot of its own, for one run.
    pub fn for_run(&self) -> RunPermits {
        RunPermits {
            semaphore: self.semaphore.clone(),
            held: Arc::default(),
        }
    }

    /// Permits free now (`None`: unbounded).
    pub fn available(&self) -> Option<usize> {
        self.semaphore
            .as_ref()
            .map(|semaphore| semaphore.available_permits())
    }

    /// One permit for a piece of work; `None` when unbounded (or the semaphore closed).
    pub async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = self.semaphore.clone()?;
        semaphore.acquire_owned().await.ok()
    }

    /// Takes a permit into this run's slot (a run that works throughout).
    pub async fn hold(&self) {
        let permit = self.acquire().await;
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = permit;
    }

    /// Lets go of the run's permit, if it holds one (before a wait); says whether it did.
    pub fn let_go(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .is_some()
    }
}

/// What a stream's runs do: its sync shape (and in it the provider client it calls).
#[derive(Clone)]
pub struct StreamWork(Arc<dyn ShapeRunner>);

/// A sync shape: windowed reports, cursors, jobs. The runner loop, leases, fencing,
/// cooldown waits and supervision stay the same for every shape: a shape only says
/// what one leased run does and how its calls are paced.
pub trait ShapeRunner: Send + Sync + 'static {
    /// The pacer every provider call of the stream asks first (`None`: unpaced).
    fn pacer(&self) -> Option<&Pacer>;
    /// One run under `fence` (every ledger write carries it): work until nothing is left,
    /// a cooldown stops it, or `context.cancel`/`context.abort` fire. The contract of
    /// [`StreamContext::run_fenced`].
    fn run<'a>(
        &'a self,
        context: &'a StreamContext,
        fence: crate::store::WriteFence,
    ) -> BoxFuture<'a, Result<RunOutcome, SyncError>>;
    /// The rate the provider announced for `operation` in its last response (SP-API's
    /// `x-amzn-RateLimit-Limit`), for the TokenManager to learn; `None` by default.
    fn observed_rate_limit(&self, _operation: &str) -> Option<f64> {
        None
    }
    /// Whether a run of this shape works throughout (pages fetched and applied one after
    /// another) and so holds a work permit for the run, let go only while it waits for
    /// quota. A shape whose runs mostly wait (reports in flight) answers false and takes
    /// permits for its work itself ([`StreamContext::permits`]).
    fn works_throughout(&self) -> bool {
        true
    }
}

impl StreamWork {
    /// A stream run by `runner`.
    pub fn shape(runner: Arc<dyn ShapeRunner>) -> StreamWork {
        StreamWork(runner)
    }

    /// A windowed report stream (SP-API) calling `client`.
    pub fn reports(client: Arc<SpApiClient>) -> StreamWork {
        StreamWork(Arc::new(WindowedRunner::new(client)))
    }

    /// The stream's shape.
    pub fn runner(&self) -> &dyn ShapeRunner {
        self.0.as_ref()
    }

    /// The pacer of the stream's client.
    pub fn pacer(&self) -> Option<&Pacer> {
        self.0.pacer()
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing left to claim; `applied` hours were applied and `failed` units failed.
    Finished { applied: i64, failed: i64 },
    /// A cooldown is running (found at the start, or started by a 429 in this run).
    CoolingDown { until: i64, reason: String },
    /// The quota could not grant a call in time (`infrastructure`: its backend, Redis,
    /// could not be reached). The unit went back without consuming an attempt; try again
    /// after `retry_in`.
    Deferred {
        reason: String,
        retry_in: Duration,
        infrastructure: bool,
    },
    /// Shutdown was requested; units in flight keep their report ids.
    Cancelled,
}

/// The longest a unit waits for a quota grant before it goes back (without consuming an
/// attempt) and the run ends: well under the supervisor's stuck detection (15m).
pub const QUOTA_WAIT_MAX: Duration = Duration::from_secs(5 * 60);

/// How soon a run deferred for a quota deadline tries again (every shape).
pub const DEFERRED_RETRY: Duration = Duration::from_secs(1);

/// Errors that end a run: infrastructure, not the unit's fault.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("blocking ledger task failed: {0}")]
    Join(String),
}

/// What the TokenManager's refusal of a grant means for a run, the same for every shape
/// (see [`StreamContext::quota_stop`]).
#[derive(Debug)]
pub enum QuotaStop {
    /// A cooldown runs: its copy under the account's scope; `record`: write it to the
    /// ledger (see [`StreamContext::quota_cooldown_copy`]). The run stops.
    Cooldown { cooldown: Cooldown, record: bool },
    /// No grant in time, or shutdown stopped the wait (`infrastructure`: the quota
    /// backend could not be reached): the work goes back unharmed and the run ends.
    Deferred {
        reason: String,
        infrastructure: bool,
    },
    /// The call can never be granted (a cost over the burst, an unknown bucket): a
    /// configuration error, the work fails with the fix.
    Misconfigured(QuotaError),
}

/// Why a provider call was not made or failed.
#[derive(Debug)]
pub enum CallError {
    Provider(crate::provider::ProviderError),
    Quota(QuotaError),
    /// Shutdown before the call was made.
    Cancelled,
}

impl From<ProviderError> for CallError {
    fn from(err: ProviderError) -> CallError {
        CallError::Provider(err)
    }
}

/// Runs `work` against the ledger on the blocking pool, off the async worker threads.
pub async fn blocking<T, F>(ledger: &Arc<dyn LedgerStore>, work: F) -> Result<T, SyncError>
where
    T: Send + 'static,
    F: FnOnce(&dyn LedgerStore) -> Result<T, LedgerError> + Send + 'static,
{
    let ledger = Arc::clone(ledger);
    crate::store::blocking(move || work(ledger.as_ref()))
        .await
        .map_err(|err| SyncError::Join(err.0))?
        .map_err(SyncError::from)
}

/// How long an account rests after the provider refused its credentials.
pub const AUTH_COOLDOWN: Duration = Duration::from_secs(3600);

impl StreamContext {
    /// The account's cooldown scope in the ledger (`{provider}:{account}`).
    pub fn scope(&self) -> String {
        account_scope(self.account.provider.as_str(), &self.account.id)
    }

    /// The scope a spent budget of `operation` stops: the operation's API
    /// (`{provider}:{account}:{api}`, [`crate::quota::stop_group`]) for a provider whose
    /// budgets are per API ([`crate::quota::stops_per_api`]: eBay), else the account's.
    pub fn hard_stop_scope(&self, operation: &str) -> String {
        let provider = self.account.provider.as_str();
        if crate::quota::stops_per_api(provider) {
            crate::quota::api_scope(provider, &self.scope(), operation)
        } else {
            self.scope()
        }
    }

    /// One run without a lease (single-process tools and tests): its writes say so with
    /// [`crate::store::WriteFence::Unfenced`]. The daemon's runner never uses this; it
    /// runs under its lease's fence (see [`Self::run_leased`]).
    ///
    /// Runs in the stream's [span](Self::span), as the daemon's passes do.
    pub async fn run_once(&self) -> Result<RunOutcome, SyncError> {
        self.run_fenced(crate::store::WriteFence::Unfenced)
            .instrument(self.span())
            .await
    }

    /// A new span for one pass of this stream: `account{account=ID}:stream{stream=NAME}`
    /// ([`crate::telemetry::spans::stream_span`]). Every line logged inside it names the
    /// account and the stream, so the shapes' log lines do not repeat them.
    pub fn span(&self) -> tracing::Span {
        crate::telemetry::spans::stream_span(&self.account.id, &self.stream.name)
    }

    /// One run of the stream's shape. Every ledger write carries `fence`, so a run whose
    /// lease was taken over cannot overwrite the new owner's work.
    pub async fn run_fenced(
        &self,
        fence: crate::store::WriteFence,
    ) -> Result<RunOutcome, SyncError> {
        self.work.runner().run(self, fence).await
    }

    /// Tells the supervisor's stuck detection that the stream made progress.
    pub fn bump(&self) {
        if let Some(progress) = &self.progress {
            progress.bump();
        }
    }

    /// The running cooldown that stops this account's calls: the TokenManager's view
    /// (the provider, the selling partner, the account) when the client is paced, else
    /// the ledger's cooldown of the account scope. A cooldown the TokenManager keeps
    /// elsewhere (Redis, or the seller's scope) is copied under the account's scope in
    /// the ledger, so `status` shows it.
    ///
    /// A cooldown of one API this stream calls (`{provider}:{account}:{api}`, see
    /// [`crate::provider::stream_stop_scopes`]) stops this stream too, and no other
    /// stream outside that API.
    pub async fn active_cooldown(&self) -> Result<Option<Cooldown>, SyncError> {
        let now = now_ts();
        let apis = crate::provider::stream_stop_scopes(
            self.account.provider,
            &self.scope(),
            &self.stream.name,
        );
        let Some(pacer) = self.work.pacer() else {
            let mut scopes = vec![self.scope()];
            scopes.extend(apis);
            return blocking(&self.ledger, move |ledger| {
                for scope in &scopes {
                    if let Some(cooldown) = ledger.active_cooldown(scope, now)? {
                        return Ok(Some(cooldown));
                    }
                }
                Ok(None)
            })
            .await;
        };
        let mut running = pacer.cooldown(&self.account.id).await;
        for scope in &apis {
            if running.is_some() {
                break;
            }
            running = pacer.handle.cooldown(scope).await;
        }
        let Some(cooldown) = running else {
            return Ok(None);
        };
        let (copy, record) =
            self.quota_cooldown_copy(&cooldown.scope, &cooldown.reason, cooldown.until_at);
        if record {
            blocking(&self.ledger, move |ledger| {
                match ledger.active_cooldown(&copy.scope, now)? {
                    Some(existing) if existing.until_at >= copy.until_at => Ok(()),
                    _ => ledger.set_cooldown(&copy),
                }
            })
            .await?;
        }
        Ok(Some(cooldown))
    }

    /// A cooldown under this account's scope standing for the TokenManager's cooldown of
    /// `scope` (a copy for `status`), and whether to write it to the ledger: when the
    /// pacer mirrors its cooldowns there, or `scope` is another account's whose quota
    /// this one shares. Every shape that meets the TokenManager's cooldown uses this.
    ///
    /// A cooldown of one of this account's APIs (`{provider}:{account}:{api}`, see
    /// [`crate::quota::stops_per_api`]) keeps its scope: a copy under the account's
    /// would stop every other stream of the account too.
    pub fn quota_cooldown_copy(&self, scope: &str, reason: &str, until: i64) -> (Cooldown, bool) {
        let account = self.scope();
        let own = if crate::provider::is_api_scope_of(scope, &account) {
            scope.to_string()
        } else {
            account
        };
        let record = scope != own
            || self
                .work
                .pacer()
                .is_some_and(|pacer| pacer.mirror_to_ledger);
        let copy = Cooldown {
            scope: own.clone(),
            reason: reason.to_string(),
            started_at: now_ts(),
            until_at: until,
            detail: Some(if scope == own {
                format!("{scope} cooling down (shared quota store)")
            } else {
                format!("{scope} cooling down (this account shares its quota)")
            }),
        };
        (copy, record)
    }

    /// Waits for the TokenManager's grant of one `operation` call for `claim` (a no-op
    /// for an unpaced client). `stop_on_cancel`: shutdown stops the wait too (nothing
    /// was asked of the provider yet); otherwise only `abort` does.
    pub(crate) async fn gate(
        &self,
        operation: &'static str,
        claim: &Claim,
        stop_on_cancel: bool,
    ) -> Result<(), CallError> {
        let wait = self.stream.windowed().poll_timeout.min(QUOTA_WAIT_MAX);
        self.paced(
            operation,
            1.0,
            crate::quota::Priority::from(claim.priority),
            wait,
            stop_on_cancel,
        )
        .await
    }

    /// Waits up to `wait` for the TokenManager's grant of one `operation` call costing
    /// `cost` tokens at `priority` (a no-op for an unpaced client), bumping the progress
    /// counter meanwhile. `stop_on_cancel`: shutdown stops the wait too (nothing was
    /// asked of the provider yet); otherwise only `abort` does. Every shape paces its
    /// calls through this.
    pub async fn paced(
        &self,
        operation: &str,
        cost: f64,
        priority: crate::quota::Priority,
        wait: Duration,
        stop_on_cancel: bool,
    ) -> Result<(), CallError> {
        self.check_lease()?;
        let Some(pacer) = self.work.pacer() else {
            return Ok(());
        };
        // Waiting holds nothing: the run's permit (if any) goes back for the wait and is
        // taken again once the call may go.
        let held = self.permits.let_go();
        let granted = self
            .paced_wait(pacer, operation, cost, priority, wait, stop_on_cancel)
            .await;
        if held && granted.is_ok() {
            tokio::select! {
                _ = self.abort.cancelled() => return Err(CallError::Cancelled),
                _ = self.permits.hold() => {}
            }
        }
        granted?;
        // The wait may have been long (or the process frozen): the lease is checked again
        // right before the call goes.
        self.check_lease()
    }

    /// Refuses a provider call once the run's lease may have expired: the run stops as if
    /// the keeper had reported the lease lost (its units keep their report ids for the
    /// next owner).
    fn check_lease(&self) -> Result<(), CallError> {
        match &self.lease_deadline {
            Some(deadline) if deadline.passed() => {
                warn!("lease expired by this process's clock before a provider call (the process was stalled or frozen); stopping work on this scope");
                self.abort.cancel();
                Err(CallError::Cancelled)
            }
            _ => Ok(()),
        }
    }

    async fn paced_wait(
        &self,
        pacer: &Pacer,
        operation: &str,
        cost: f64,
        priority: crate::quota::Priority,
        wait: Duration,
        stop_on_cancel: bool,
    ) -> Result<(), CallError> {
        let deadline = tokio::time::Instant::now() + wait;
        let acquire = pacer
            .handle
            .acquire(pacer.keys(operation), cost, priority, deadline);
        tokio::select! {
            _ = self.abort.cancelled() => Err(CallError::Cancelled),
            _ = self.cancel.cancelled(), if stop_on_cancel => Err(CallError::Cancelled),
            answer = self.waiting(acquire) => match answer {
                Ok(grant) => {
                    if grant.waited >= Duration::from_secs(1) {
                        debug!(operation, priority = %priority, waited_ms = grant.waited.as_millis() as u64, "quota granted after waiting");
                    }
                    Ok(())
                }
                Err(err) => Err(CallError::Quota(err)),
            },
        }
    }

    /// Runs `work` to its end, telling the supervisor's stuck detection every second
    /// that the stream is waiting (for a grant, a permit), not frozen.
    pub async fn waiting<F: std::future::Future>(&self, work: F) -> F::Output {
        tokio::pin!(work);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => self.bump(),
                output = &mut work => return output,
            }
        }
    }

    /// Counts the call (and a 429) for `/metrics`, and tells the TokenManager what the
    /// response said: the rate from `x-amzn-RateLimit-Limit` after a 2xx, the 429 and its
    /// `Retry-After` otherwise.
    pub fn observe<T>(&self, operation: &'static str, result: &Result<T, ProviderError>) {
        let metrics = &self.metrics;
        metrics.provider_call(self.account.provider.as_str(), operation);
        if let Err(ProviderError::QuotaExceeded { .. }) = result {
            metrics.provider_throttled(self.account.provider.as_str(), operation);
        }
        let Some(pacer) = self.work.pacer() else {
            return;
        };
        match result {
            Ok(_) => {
                let rate = self.work.runner().observed_rate_limit(operation);
                if let Some(rate) = rate {
                    pacer
                        .handle
                        .observe(pacer.key(operation), Observation::RateLimitHeader(rate));
                }
            }
            Err(ProviderError::QuotaExceeded { retry_after, .. }) => {
                let retry_after = *retry_after;
                let observation = if self.quota_is_a_budget(retry_after) {
                    Observation::Capped { retry_after }
                } else {
                    Observation::Throttled { retry_after }
                };
                pacer.handle.observe(pacer.key(operation), observation)
            }
            Err(_) => {}
        }
    }

    /// Whether this provider's 429 says a per-hour or per-day budget is spent (retrying
    /// cannot help before it refills): eBay's answer is its daily call quota (errorId
    /// 2001), Keepa's is NOT_ENOUGH_TOKEN until its refill, StockX's is its hourly
    /// budget. So is any 429 whose `Retry-After` is at least the stream's
    /// `quota_cooldown` (the provider asks for a stop as long as ours: it is persisted
    /// and visible like one). Otherwise SP-API's 429 is a per-operation token bucket
    /// running dry: a model correction (see [`StreamContext::refusal_cooldown`]).
    pub fn quota_is_a_budget(&self, retry_after: Option<Duration>) -> bool {
        self.account.provider != crate::domain::Provider::Amazon
            || retry_after.is_some_and(|after| after >= self.stream.quota_cooldown)
    }

    /// Whether `err` is a 429 the TokenManager reads as a model correction: a paced call
    /// of a provider whose 429 is a token bucket running dry, not a spent budget
    /// ([`StreamContext::quota_is_a_budget`]). The one rule behind
    /// [`StreamContext::refusal_cooldown`]'s [`QUOTA_CORRECTION`] and
    /// [`StreamContext::may_retry_corrected`].
    pub fn is_correction(&self, err: &ProviderError) -> bool {
        matches!(err, ProviderError::QuotaExceeded { retry_after, .. }
            if self.work.pacer().is_some() && !self.quota_is_a_budget(*retry_after))
    }

    /// The cooldown a provider refusal starts under this account's scope: `quota` (the
    /// stream's `quota_cooldown`, or longer if the provider's Retry-After says so) or
    /// `auth` ([`AUTH_COOLDOWN`]: credentials do not heal by retrying every chunk; an
    /// operator fixes them and clears the cooldown). Every shape stops an account
    /// through this.
    ///
    /// A 429 to a paced call of a provider whose 429 is a token bucket running dry (not
    /// a budget: [`StreamContext::quota_is_a_budget`]) is a model correction instead
    /// (issue 12): the cooldown has reason [`QUOTA_CORRECTION`] and ends after the
    /// `Retry-After` (now when none was sent); [`StreamContext::cool_down`] neither
    /// records it nor stops for long: the TokenManager, which heard the 429 first,
    /// corrected the bucket and paces the retry, unless the 429s repeat despite the
    /// correction, in which case its hard stop is what the run meets.
    pub fn refusal_cooldown(&self, err: &ProviderError) -> Cooldown {
        let now = now_ts();
        if let ProviderError::QuotaExceeded { retry_after, .. } = err {
            if self.is_correction(err) {
                let wait = retry_after
                    .unwrap_or_default()
                    .min(crate::quota::MAX_COOLDOWN)
                    .as_secs();
                return Cooldown {
                    scope: self.scope(),
                    reason: QUOTA_CORRECTION.to_string(),
                    started_at: now,
                    until_at: now.saturating_add(i64::try_from(wait).unwrap_or(0)),
                    detail: Some(err.to_string()),
                };
            }
        }
        let (reason, length, scope) = match err {
            ProviderError::QuotaExceeded {
                retry_after,
                operation,
                ..
            } => (
                "quota",
                self.stream
                    .quota_cooldown
                    .max(retry_after.unwrap_or_default()),
                self.hard_stop_scope(operation),
            ),
            ProviderError::Auth { .. } => ("auth", AUTH_COOLDOWN, self.scope()),
            _ => ("quota", self.stream.quota_cooldown, self.scope()),
        };
        let length = i64::try_from(length.min(crate::quota::MAX_COOLDOWN).as_secs().max(1))
            .unwrap_or(crate::quota::MAX_COOLDOWN_SECS);
        Cooldown {
            scope,
            reason: reason.to_string(),
            started_at: now,
            until_at: now.saturating_add(length),
            detail: Some(crate::provider::ebay::name_the_account(
                &err.to_string(),
                &self.account.id,
            )),
        }
    }
}

/// `cooldown` as it should be stored: an auth cooldown over a running one of the same
/// scope whose text names other missing eBay scopes (two streams of the account refused
/// for different scopes, as they run at once) names them all, since the account has one
/// auth cooldown and doctor and status show its text.
fn with_running_auth_detail(
    ledger: &dyn LedgerStore,
    mut cooldown: Cooldown,
) -> Result<Cooldown, LedgerError> {
    if cooldown.reason != "auth" {
        return Ok(cooldown);
    }
    let Some(new) = cooldown.detail.as_deref() else {
        return Ok(cooldown);
    };
    if let Some(running) = ledger.active_cooldown(&cooldown.scope, cooldown.started_at)? {
        let merged = match (&running.reason[..], running.detail.as_deref()) {
            ("auth", Some(old)) => crate::provider::ebay::merge_access_denied(old, new),
            _ => None,
        };
        if merged.is_some() {
            cooldown.detail = merged;
        }
    }
    Ok(cooldown)
}

/// The reason of a [`StreamContext::refusal_cooldown`] that is a model correction, not a
/// stop: a 429 to a paced SP-API call (issue 12). Never written to the ledger.
pub const QUOTA_CORRECTION: &str = "quota_correction";

/// Times one call is made again after 429s read as model corrections (issue 12) before
/// the unit gives up on it. The TokenManager escalates sooner (3 429s of a bucket within
/// 10 minutes start its hard stop), so this only bounds a misbehaving pacer.
pub const CORRECTION_RETRIES: u32 = 3;

impl StreamContext {
    /// Whether a call that failed with `err` may be made again at once through its gate
    /// (issue 12: "the call is retried after one token interval — no long stop"): `err`
    /// is a 429 to a paced call that [`StreamContext::refusal_cooldown`] reads as a model
    /// correction, and the TokenManager has not escalated it to its hard stop. The gate
    /// then waits for the corrected bucket (its level at zero, its burst lowered, the
    /// `Retry-After` held), so the retry needs no pause of its own.
    ///
    /// The correction is recorded in the ledger (`marketsync cooldowns` lists it with the
    /// burst it left) whether or not the call may go again.
    pub async fn may_retry_corrected(&self, err: &ProviderError) -> Result<bool, SyncError> {
        let ProviderError::QuotaExceeded { operation, .. } = err else {
            return Ok(false);
        };
        if !self.is_correction(err) {
            return Ok(false);
        }
        self.record_correction(operation, err).await?;
        Ok(self.active_cooldown().await?.is_none())
    }

    /// Writes the TokenManager's view of `operation`'s bucket after a correction to the
    /// ledger (see [`crate::store::BurstCorrection`]). A TokenManager that does not answer
    /// leaves nothing to record.
    async fn record_correction(
        &self,
        operation: &str,
        err: &ProviderError,
    ) -> Result<(), SyncError> {
        let Some(pacer) = self.work.pacer() else {
            return Ok(());
        };
        let key = pacer.key(operation);
        // The 429 was sent to the TokenManager before this question: its answer is the
        // corrected bucket.
        let Ok(Some(view)) = pacer.handle.bucket(key.clone()).await else {
            return Ok(());
        };
        let now = now_ts();
        let correction = crate::store::BurstCorrection {
            bucket: format!("{}/{}/{}", key.provider, key.operation, key.scope),
            configured_burst: view.configured_burst,
            burst: view.burst,
            corrections: 1,
            first_at: now,
            last_at: now,
            detail: Some(err.to_string().chars().take(300).collect()),
        };
        info!(
            bucket = %correction.bucket,
            configured_burst = view.configured_burst,
            burst = view.burst,
            "429 to a paced call: the bucket was emptied and its burst corrected"
        );
        blocking(&self.ledger, move |ledger| {
            ledger.record_correction(&correction)
        })
        .await
    }

    /// [`RunOutcome::CoolingDown`] when a cooldown stops this account's calls now (see
    /// [`StreamContext::active_cooldown`]): every shape checks this before its first call.
    pub async fn cooling_down(&self) -> Result<Option<RunOutcome>, SyncError> {
        let Some(cooldown) = self.active_cooldown().await? else {
            return Ok(None);
        };
        debug!(
            until = %format_ts(cooldown.until_at),
            reason = %cooldown.reason,
            "in cooldown; skipping provider calls this run"
        );
        Ok(Some(RunOutcome::CoolingDown {
            until: cooldown.until_at,
            reason: cooldown.reason,
        }))
    }

    /// Sorts the TokenManager's refusal of a grant (see [`QuotaStop`]); every shape's
    /// handling of a refused call starts here.
    pub fn quota_stop(&self, err: QuotaError) -> QuotaStop {
        match err {
            QuotaError::CoolingDown {
                scope,
                reason,
                until_utc,
            } => {
                debug!(scope = %scope, until = %until_utc.to_rfc3339(), "cooling down; no call made");
                let (cooldown, record) =
                    self.quota_cooldown_copy(&scope, &reason, until_utc.timestamp());
                QuotaStop::Cooldown { cooldown, record }
            }
            QuotaError::DeadlineExceeded { .. } | QuotaError::Stopped => QuotaStop::Deferred {
                reason: err.to_string(),
                infrastructure: false,
            },
            QuotaError::Unavailable(_) => QuotaStop::Deferred {
                reason: err.to_string(),
                infrastructure: true,
            },
            QuotaError::CostExceedsBurst { .. }
            | QuotaError::UnknownBucket { .. }
            | QuotaError::InvalidCost(_) => QuotaStop::Misconfigured(err),
        }
    }

    /// Ends a run in `cooldown`: logs it (`consequence`: what became of the shape's work),
    /// writes it to the ledger when `record` (a provider refusal, or a copy of the
    /// TokenManager's cooldown from [`StreamContext::quota_cooldown_copy`]) and returns
    /// [`RunOutcome::CoolingDown`]. Every shape ends a refused run through this.
    ///
    /// A [`QUOTA_CORRECTION`] is no stop: when the TokenManager has not escalated the
    /// 429s to its hard stop, nothing is recorded and the run ends
    /// [`RunOutcome::Deferred`] (the work went back without consuming an attempt) to go
    /// again after the `Retry-After` at most: the corrected bucket paces the retry to
    /// one token interval. When it has escalated, this is the hard stop: the stream's
    /// `quota_cooldown` (or the TokenManager's end when later) recorded under the account.
    pub async fn cool_down(
        &self,
        cooldown: Cooldown,
        record: bool,
        consequence: &'static str,
    ) -> Result<RunOutcome, SyncError> {
        let (cooldown, record) = if cooldown.reason == QUOTA_CORRECTION {
            match self.active_cooldown().await? {
                None => {
                    let retry_in = Duration::from_secs(
                        u64::try_from(cooldown.until_at.saturating_sub(now_ts())).unwrap_or(0),
                    )
                    .min(crate::quota::MAX_COOLDOWN);
                    warn!(
                        provider = %self.account.provider,
                        retry_in_ms = retry_in.as_millis() as u64,
                        detail = cooldown.detail.as_deref().unwrap_or(""),
                        "429 read as a model correction; the work goes back and is retried when the corrected bucket allows"
                    );
                    return Ok(RunOutcome::Deferred {
                        reason: format!(
                            "{}: the bucket was corrected",
                            cooldown.detail.as_deref().unwrap_or("429")
                        ),
                        retry_in,
                        infrastructure: false,
                    });
                }
                Some(running) => {
                    let own = now_ts().saturating_add(
                        i64::try_from(
                            self.stream
                                .quota_cooldown
                                .min(crate::quota::MAX_COOLDOWN)
                                .as_secs(),
                        )
                        .unwrap_or(0),
                    );
                    let stop = Cooldown {
                        scope: self.scope(),
                        reason: "quota".to_string(),
                        started_at: now_ts(),
                        until_at: own.max(running.until_at).max(cooldown.until_at),
                        detail: Some(format!(
                            "{}; repeated despite the correction",
                            cooldown.detail.as_deref().unwrap_or("429")
                        )),
                    };
                    (stop, true)
                }
            }
        } else {
            (cooldown, record)
        };
        error!(
            provider = %self.account.provider,
            until = %format_ts(cooldown.until_at),
            detail = cooldown.detail.as_deref().unwrap_or(""),
            reason = %cooldown.reason,
            "provider refused the account; {consequence}"
        );
        let (until, reason) = (cooldown.until_at, cooldown.reason.clone());
        if record {
            blocking(&self.ledger, move |ledger| {
                ledger.set_cooldown(&with_running_auth_detail(ledger, cooldown)?)
            })
            .await?;
        }
        Ok(RunOutcome::CoolingDown { until, reason })
    }
}
