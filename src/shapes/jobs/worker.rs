//! The drainer: a [`ShapeRunner`] that claims a provider's jobs in priority order and
//! runs them within the TokenManager's budget, one request at a time.
//!
//! One run: stop at once during a cooldown; rescue running jobs whose lease expired;
//! then claim (highest priority first, Keepa up to `batch` ASINs of one priority), ask
//! the TokenManager for the request's cost at the jobs' priority, call, and write the
//! jobs' ends and results in one fenced transaction, until nothing is due. A `job_runs`
//! row records every run that claimed or rescued something.
//!
//! Failure table (docs/jobs.md):
//! - 429: the jobs go back to pending without consuming an attempt, a `quota` cooldown
//!   for the account is persisted and the run stops ([`RunOutcome::CoolingDown`]);
//! - 401/403: the same with an `auth` cooldown ([`crate::shapes::AUTH_COOLDOWN`]): no retry
//!   loop, `status` and `cooldowns` name it until an operator fixes the credentials;
//! - 404 (StockX), an unknown ASIN (Keepa), no catalog item or an unlisted size (Alias),
//!   no listing (eBay Browse): terminal `not_found`;
//! - 5xx, timeouts, invalid or incomplete answers: an attempt is consumed and the job is
//!   retried after `retry_delay` (capped exponential backoff), `failed` after
//!   `max_attempts`;
//! - no grant in time, or the quota backend down: back to pending unharmed
//!   ([`RunOutcome::Deferred`]).
//!
//! Alias: a lookup whose catalog id is not cached yet asks the TokenManager for 2 tokens
//! (catalog search and pricing), otherwise 1; `calls_made` counts both calls.
//!
//! Keepa: every response (also a 429) carries the balance, fed to the TokenManager as
//! [`Observation::Keepa`]; a negative balance makes the next grant wait for the refill,
//! computed once (no polling, no spinning).
//!
//! Emits: `info!(account, provider, jobs, succeeded, failed, not_found, deferred, calls,
//! "jobs drained")`, `warn!(job, previous_owner, "job rescued ...")`, `warn!(.. "provider
//! refused the account ...")`, `debug!` per request.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tracing::{debug, info, warn};

use crate::domain::now_ts;
use crate::provider::alias::{AliasClient, OP_PRICING};
use crate::provider::ebay_browse::{BrowseOutcome, EbayBrowseClient, OP_SEARCH};
use crate::provider::keepa::{KeepaClient, KeepaProductOutcome, OP_PRODUCT};
use crate::provider::stockx::{StockxClient, OP_MARKET_DATA};
use crate::provider::ProviderError;
use crate::quota::{Observation, Pacer};
use crate::shapes::{
    retry_delay, CallError, QuotaStop, RunOutcome, ShapeRunner, StreamContext, SyncError,
    DEFERRED_RETRY, QUOTA_WAIT_MAX,
};
use crate::store::jobs::{
    self as store, Claimer, Job, JobEnd, JobPriority, JobResult, JobRun, KeepaSnapshot,
    ListingStats,
};
use crate::store::{Cooldown, SqliteLedger};

/// The provider client a drainer calls.
pub enum JobClient {
    Stockx(StockxClient),
    Keepa(KeepaClient),
    /// Alias pricing insights (catalog search when the catalog id is not cached).
    Alias(AliasClient),
    /// eBay Browse item search with the application token (the `ebay` queue).
    EbayBrowse(EbayBrowseClient),
}

impl JobClient {
    /// `stockx`, `keepa`, `alias` or `ebay`: the jobs this client drains.
    pub fn provider(&self) -> &'static str {
        match self {
            JobClient::Stockx(_) => "stockx",
            JobClient::Keepa(_) => "keepa",
            JobClient::Alias(_) => "alias",
            JobClient::EbayBrowse(_) => "ebay",
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            JobClient::Stockx(_) => OP_MARKET_DATA,
            JobClient::Keepa(_) => OP_PRODUCT,
            JobClient::Alias(_) => OP_PRICING,
            JobClient::EbayBrowse(_) => OP_SEARCH,
        }
    }
}

/// The job-queue sync shape of one StockX or Keepa account.
pub struct JobRunner {
    client: JobClient,
    pacer: Option<Pacer>,
    ledger: Arc<SqliteLedger>,
}

/// Why a run stopped before the queue was empty.
enum Stop {
    /// `record`: write it to the ledger under the account's scope; `announce`: also
    /// start it in the TokenManager (a provider refusal, not the TokenManager's own).
    Cooldown {
        cooldown: Cooldown,
        record: bool,
        announce: bool,
    },
    Deferred {
        reason: String,
        infrastructure: bool,
    },
    Cancelled,
}

impl JobRunner {
    /// `pacer`: the TokenManager every call asks first (`None`: unpaced, tools only).
    pub fn new(client: JobClient, pacer: Option<Pacer>, ledger: Arc<SqliteLedger>) -> JobRunner {
        JobRunner {
            client,
            pacer,
            ledger,
        }
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, SyncError>
    where
        T: Send + 'static,
        F: FnOnce(&SqliteLedger) -> Result<T, store::JobError> + Send + 'static,
    {
        let ledger = Arc::clone(&self.ledger);
        crate::store::blocking(move || work(&ledger))
            .await
            .map_err(|err| SyncError::Join(err.0))?
            .map_err(|err| match err {
                store::JobError::Ledger(err) => SyncError::Ledger(err),
                store::JobError::Invalid(message) => SyncError::Join(message),
            })
    }

    /// Runs `work` on the blocking pool as this run's claimer: the provider, account and
    /// stream (for the fence), the lease owner and `fence`.
    async fn as_claimer<T, F>(
        &self,
        ctx: &StreamContext,
        fence: crate::store::WriteFence,
        work: F,
    ) -> Result<T, SyncError>
    where
        T: Send + 'static,
        F: FnOnce(&SqliteLedger, &Claimer<'_>) -> Result<T, store::JobError> + Send + 'static,
    {
        let provider = self.client.provider();
        let (account, stream, owner) = (
            ctx.account.id.clone(),
            ctx.stream.name.clone(),
            ctx.owner.clone(),
        );
        self.blocking(move |ledger| {
            let claimer = Claimer {
                provider,
                account: &account,
                stream: &stream,
                owner: &owner,
                fence,
            };
            work(ledger, &claimer)
        })
        .await
    }

    async fn drain(
        &self,
        ctx: &StreamContext,
        fence: crate::store::WriteFence,
    ) -> Result<RunOutcome, SyncError> {
        if ctx.cancel.is_cancelled() || ctx.abort.is_cancelled() {
            return Ok(RunOutcome::Cancelled);
        }
        if let Some(cooling) = ctx.cooling_down().await? {
            return Ok(cooling);
        }
        let provider = self.client.provider();
        let mut run = JobRun {
            provider: provider.to_string(),
            account: ctx.account.id.clone(),
            started_at: now_ts(),
            outcome: "finished".to_string(),
            ..JobRun::default()
        };
        let rescued = self
            .blocking(move |ledger| store::rescue_expired(ledger, provider, now_ts()))
            .await?;
        for (job, previous_owner) in &rescued {
            warn!(account = %ctx.account.id, provider, job, previous_owner = %previous_owner, "job rescued: the lease of its worker expired; back to pending without consuming an attempt");
        }
        run.rescued = rescued.len() as i64;
        let batch = match self.client {
            JobClient::Stockx(_) | JobClient::Alias(_) | JobClient::EbayBrowse(_) => 1,
            JobClient::Keepa(_) => {
                (ctx.stream.jobs().batch as usize).clamp(1, crate::provider::keepa::MAX_ASINS)
            }
        };
        let lease_secs = ctx.stream.jobs().job_lease.as_secs().max(1) as i64;
        let mut stop = None;
        loop {
            if ctx.cancel.is_cancelled() || ctx.abort.is_cancelled() {
                stop = Some(Stop::Cancelled);
                break;
            }
            let jobs = self
                .as_claimer(ctx, fence, move |ledger, claimer| {
                    store::claim(ledger, claimer, batch, lease_secs, now_ts())
                })
                .await?;
            if jobs.is_empty() {
                break;
            }
            ctx.bump();
            if let Some(chaos) = &ctx.chaos {
                // Crash drills: a panic here leaves the claimed jobs running under a
                // lease, which the next run rescues once it expires.
                chaos.on_unit(&ctx.account.id).await;
            }
            run.jobs_run += jobs.len() as i64;
            let (ends, stopped) = self.work(ctx, &jobs, &mut run).await;
            let counts = self
                .as_claimer(ctx, fence, move |ledger, claimer| {
                    store::finish(ledger, claimer, &ends, now_ts())
                })
                .await?;
            run.succeeded += counts.succeeded;
            run.failed += counts.failed;
            run.not_found += counts.not_found;
            run.deferred += counts.deferred;
            if stopped.is_some() {
                stop = stopped;
                break;
            }
        }
        let outcome = match stop {
            None => RunOutcome::Finished {
                applied: run.succeeded,
                failed: run.failed,
            },
            Some(Stop::Cancelled) => {
                run.outcome = "cancelled".to_string();
                RunOutcome::Cancelled
            }
            Some(Stop::Deferred {
                reason,
                infrastructure,
            }) => {
                run.outcome = "deferred".to_string();
                warn!(account = %ctx.account.id, provider, reason = %reason, infrastructure, "no quota grant; the jobs went back without consuming an attempt and the run ends");
                RunOutcome::Deferred {
                    reason,
                    retry_in: DEFERRED_RETRY,
                    infrastructure,
                }
            }
            Some(Stop::Cooldown {
                cooldown,
                record,
                announce,
            }) => {
                run.outcome = "cooldown".to_string();
                if let (true, Some(pacer)) = (announce, ctx.work.pacer()) {
                    // So the next run's cooldown check sees it at once (the TokenManager
                    // trusts a "no cooldown" answer of its store for a few seconds).
                    let kind = crate::quota::CooldownReason::parse(&cooldown.reason)
                        .unwrap_or(crate::quota::CooldownReason::Quota);
                    let end = chrono::DateTime::<chrono::Utc>::from_timestamp(cooldown.until_at, 0)
                        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                    if let Err(err) = pacer
                        .handle
                        .start_cooldown_with_detail(
                            &cooldown.scope,
                            kind,
                            end,
                            cooldown.detail.clone(),
                        )
                        .await
                    {
                        warn!(account = %ctx.account.id, error = %err, "the token manager could not persist the cooldown; it holds in this process");
                    }
                }
                ctx.cool_down(
                    cooldown,
                    record,
                    "jobs went back to pending and the account cools down",
                )
                .await?
            }
        };
        run.finished_at = now_ts();
        if run.jobs_run > 0 || run.rescued > 0 {
            info!(
                account = %ctx.account.id,
                provider,
                jobs = run.jobs_run,
                succeeded = run.succeeded,
                failed = run.failed,
                not_found = run.not_found,
                deferred = run.deferred,
                calls = run.calls_made,
                rescued = run.rescued,
                "jobs drained"
            );
            let record = run.clone();
            self.blocking(move |ledger| store::record_run(ledger, &record))
                .await?;
        }
        Ok(outcome)
    }

    /// Paces and makes the request for `jobs`; returns each job's end and why the run
    /// must stop, if it must.
    async fn work(
        &self,
        ctx: &StreamContext,
        jobs: &[Job],
        run: &mut JobRun,
    ) -> (Vec<(Job, JobEnd)>, Option<Stop>) {
        let priority: JobPriority = jobs
            .iter()
            .map(Job::level)
            .max()
            .unwrap_or(JobPriority::Background);
        let operation = self.client.operation();
        let cost = match &self.client {
            JobClient::Stockx(_) | JobClient::EbayBrowse(_) => 1.0,
            // Two calls when the style id's catalog id is not cached yet.
            JobClient::Alias(client) => f64::from(client.calls_needed(&jobs[0].sku)),
            JobClient::Keepa(client) => client.tokens_per_asin() * jobs.len() as f64,
        };
        let wait = QUOTA_WAIT_MAX.min(ctx.stream.jobs().job_lease / 2);
        if let Err(refused) = ctx
            .paced(operation, cost, priority.quota().into(), wait, true)
            .await
        {
            return self.refused(ctx, jobs, refused);
        }
        if !matches!(self.client, JobClient::Alias(_)) {
            // Alias counts the calls it made below (one or two).
            run.calls_made += 1;
        }
        debug!(account = %ctx.account.id, operation, jobs = jobs.len(), priority = %priority, cost, "request");
        match &self.client {
            JobClient::Stockx(client) => {
                let job = &jobs[0];
                let size = job.size.clone().unwrap_or_default();
                let result = client.market_data(&job.sku, &size).await;
                ctx.observe(OP_MARKET_DATA, &result);
                match result {
                    Ok(market) => (
                        vec![(
                            job.clone(),
                            JobEnd::Succeeded(JobResult::Market {
                                lowest_ask: market.lowest_ask,
                                highest_bid: market.highest_bid,
                                last_sale: market.last_sale,
                                currency: market.currency,
                            }),
                        )],
                        None,
                    ),
                    Err(err) => self.failed_request(ctx, jobs, err),
                }
            }
            JobClient::Alias(client) => {
                let job = &jobs[0];
                let size = job.size.clone().unwrap_or_default();
                let (calls, result) = client.market(&job.sku, &size).await;
                run.calls_made += i64::from(calls);
                ctx.observe(OP_PRICING, &result);
                match result {
                    Ok(market) => (
                        vec![(
                            job.clone(),
                            JobEnd::Succeeded(JobResult::Market {
                                lowest_ask: market.lowest_ask,
                                highest_bid: market.highest_bid,
                                last_sale: market.last_sale,
                                currency: market.currency,
                            }),
                        )],
                        None,
                    ),
                    Err(err) => self.failed_request(ctx, jobs, err),
                }
            }
            JobClient::EbayBrowse(client) => {
                let job = &jobs[0];
                let result = client.search(&job.sku, job.size.as_deref()).await;
                ctx.observe(OP_SEARCH, &result);
                match result {
                    Ok(BrowseOutcome::Stats(stats)) => (
                        vec![(
                            job.clone(),
                            JobEnd::Succeeded(JobResult::Listings(ListingStats {
                                count: stats.count,
                                min: stats.min,
                                median: stats.median,
                                mean: stats.mean,
                                max: stats.max,
                                currency: stats.currency,
                                total: stats.total,
                            })),
                        )],
                        None,
                    ),
                    Ok(BrowseOutcome::NoListings) => (
                        vec![(
                            job.clone(),
                            JobEnd::NotFound(format!(
                                "no active fixed-price ebay listing matches {:?}",
                                job.sku
                            )),
                        )],
                        None,
                    ),
                    Err(err) => self.failed_request(ctx, jobs, err),
                }
            }
            JobClient::Keepa(client) => {
                let asins: Vec<String> = jobs.iter().map(|job| job.sku.clone()).collect();
                let (balance, result) = client.products(&asins).await;
                ctx.observe(OP_PRODUCT, &result);
                if let (Some(balance), Some(pacer)) = (balance, ctx.work.pacer()) {
                    pacer.handle.observe(
                        pacer.key(OP_PRODUCT),
                        Observation::Keepa {
                            tokens_left: balance.tokens_left,
                            refill_in_ms: balance.refill_in_ms,
                            refill_rate_per_min: balance.refill_rate_per_min,
                        },
                    );
                }
                match result {
                    Ok(mut outcomes) => {
                        let ends = jobs
                            .iter()
                            .map(|job| {
                                let outcome = outcomes.remove(&job.sku.to_ascii_uppercase());
                                (job.clone(), self.keepa_end(ctx, job, outcome))
                            })
                            .collect();
                        (ends, None)
                    }
                    Err(err) => self.failed_request(ctx, jobs, err),
                }
            }
        }
    }

    fn keepa_end(
        &self,
        ctx: &StreamContext,
        job: &Job,
        outcome: Option<KeepaProductOutcome>,
    ) -> JobEnd {
        match outcome {
            Some(KeepaProductOutcome::Complete(data)) => {
                JobEnd::Succeeded(JobResult::Keepa(Box::new(KeepaSnapshot {
                    domain: data.domain,
                    title: data.title,
                    current_amazon: data.current_amazon,
                    current_new: data.current_new,
                    sales_rank: data.sales_rank,
                    avg_90_new: data.avg_90_new,
                    avg_365_new: data.avg_365_new,
                    history_points: data.history_points,
                    raw: data.raw,
                })))
            }
            Some(KeepaProductOutcome::NotFound(message)) => JobEnd::NotFound(message),
            Some(KeepaProductOutcome::Incomplete(detail)) => self.retry(
                ctx,
                job,
                format!("incomplete product, nothing written: {detail}"),
            ),
            None => self.retry(ctx, job, "missing from the answer".to_string()),
        }
    }

    fn retry(&self, ctx: &StreamContext, job: &Job, error: String) -> JobEnd {
        let delay = retry_delay(&ctx.stream, job.attempts);
        JobEnd::Failed {
            error,
            retry_at: now_ts() + delay.as_secs().max(1) as i64,
            max_attempts: i64::from(ctx.stream.jobs().max_attempts),
        }
    }

    /// A request that failed as a whole.
    fn failed_request(
        &self,
        ctx: &StreamContext,
        jobs: &[Job],
        err: ProviderError,
    ) -> (Vec<(Job, JobEnd)>, Option<Stop>) {
        if err.stops_account() {
            let cooldown = ctx.refusal_cooldown(&err);
            let ends = jobs
                .iter()
                .map(|job| {
                    (
                        job.clone(),
                        JobEnd::Deferred {
                            reason: format!("{}: {err}", cooldown.reason),
                            not_before: cooldown.until_at,
                        },
                    )
                })
                .collect();
            return (
                ends,
                Some(Stop::Cooldown {
                    cooldown,
                    record: true,
                    announce: true,
                }),
            );
        }
        if let ProviderError::NotFound { message, .. } = &err {
            let ends = jobs
                .iter()
                .map(|job| (job.clone(), JobEnd::NotFound(message.clone())))
                .collect();
            return (ends, None);
        }
        warn!(account = %ctx.account.id, jobs = jobs.len(), error = %err, "request failed; the jobs are retried with backoff");
        let ends = jobs
            .iter()
            .map(|job| (job.clone(), self.retry(ctx, job, err.to_string())))
            .collect();
        (ends, None)
    }

    /// The TokenManager did not let the request go: the jobs go back unharmed (except for
    /// configuration errors, which fail them with the fix).
    fn refused(
        &self,
        ctx: &StreamContext,
        jobs: &[Job],
        refused: CallError,
    ) -> (Vec<(Job, JobEnd)>, Option<Stop>) {
        let now = now_ts();
        let back = |reason: &str, not_before: i64| -> Vec<(Job, JobEnd)> {
            jobs.iter()
                .map(|job| {
                    (
                        job.clone(),
                        JobEnd::Deferred {
                            reason: reason.to_string(),
                            not_before,
                        },
                    )
                })
                .collect()
        };
        let err = match refused {
            CallError::Cancelled => {
                return (back("shutdown before the call", now), Some(Stop::Cancelled))
            }
            CallError::Provider(err) => return self.failed_request(ctx, jobs, err),
            CallError::Quota(err) => err,
        };
        match ctx.quota_stop(err) {
            QuotaStop::Cooldown { cooldown, record } => {
                let reason = format!(
                    "{}: {}",
                    cooldown.reason,
                    cooldown.detail.as_deref().unwrap_or("cooling down")
                );
                (
                    back(&reason, cooldown.until_at),
                    Some(Stop::Cooldown {
                        cooldown,
                        record,
                        announce: false,
                    }),
                )
            }
            QuotaStop::Deferred {
                reason,
                infrastructure,
            } => {
                let back_reason = if infrastructure {
                    "quota unavailable"
                } else {
                    "quota wait"
                };
                (
                    back(back_reason, now),
                    Some(Stop::Deferred {
                        reason,
                        infrastructure,
                    }),
                )
            }
            QuotaStop::Misconfigured(err) => {
                let message = format!(
                    "quota refused the request: {err}; lower accounts.streams.{}.batch or fix the provider's bucket",
                    ctx.stream.name
                );
                let ends = jobs
                    .iter()
                    .map(|job| {
                        (
                            job.clone(),
                            JobEnd::Failed {
                                error: message.clone(),
                                retry_at: now,
                                max_attempts: 0,
                            },
                        )
                    })
                    .collect();
                (ends, None)
            }
        }
    }
}

impl ShapeRunner for JobRunner {
    fn pacer(&self) -> Option<&Pacer> {
        self.pacer.as_ref()
    }

    fn run<'a>(
        &'a self,
        context: &'a StreamContext,
        fence: crate::store::WriteFence,
    ) -> BoxFuture<'a, Result<RunOutcome, SyncError>> {
        Box::pin(self.drain(context, fence))
    }
}
