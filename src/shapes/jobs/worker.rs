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
//! StockX: a job is keyed by style id and size; the catalog gives the UUIDs market data
//! wants (search by style id, then the product's variants), cached in SQLite with a TTL
//! and a miss cache, so a warm lookup costs one call. Every call (catalog too) is a grant
//! of the StockX bucket. A cached id StockX says is gone (404, or its 400 validation error
//! for a variant that does not belong to the product) is forgotten and the style resolved
//! again, once; a fresh id refused the same way ends the job `not_found`.
//!
//! Alias: likewise, a style id's catalog item (its id and US sizes) is cached in SQLite
//! with a TTL and a miss cache, so a warm lookup is one pricing call; each call is a
//! grant of the Alias bucket, and a cached id the pricing call answers 404 for is
//! forgotten and searched again, once.
//!
//! Keepa: every response (also a 429) carries the balance, fed to the TokenManager as
//! [`Observation::Keepa`]; a negative balance makes the next grant wait for the refill,
//! computed once (no polling, no spinning).
//!
//! Emits (inside the stream's `account` and `stream` spans, which name both): `info!(provider,
//! jobs, succeeded, failed, not_found, deferred, calls, "jobs drained")`, `warn!(job,
//! previous_owner, "job rescued ...")`, `warn!(.. "provider refused the account ...")`,
//! `debug!` per request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tracing::{debug, info, warn};

use crate::domain::now_ts;
use crate::provider::alias::{AliasClient, OP_CATALOG, OP_PRICING};
use crate::provider::ebay_browse::{BrowseOutcome, EbayBrowseClient, OP_SEARCH};
use crate::provider::keepa::{KeepaClient, KeepaProductOutcome, OP_PRODUCT};
use crate::provider::stockx::{
    size_key, StockxClient, OP_CATALOG_SEARCH, OP_CATALOG_VARIANTS, OP_MARKET_DATA,
};
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
use crate::store::{Cooldown, LedgerStore};

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
}

/// How long a style id's catalog product and a product's variant list are cached:
/// StockX's catalog UUIDs are stable; a week bounds how long a relisted product is
/// addressed by its old id before the cache notices by itself (a 404 notices sooner).
pub const STOCKX_CATALOG_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a style id StockX's search does not know is remembered as a miss: a lookup
/// of it ends `not_found` without a call until then.
pub const STOCKX_MISS_TTL: Duration = Duration::from_secs(6 * 3600);

/// How long a style id's Alias catalog item is cached: Alias says its catalog ids "will
/// not change over time"; a week bounds how long a size added to an item stays unknown
/// (a 404 for the id notices a removed item sooner).
pub const ALIAS_CATALOG_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a style id Alias's catalog search does not know is remembered as a miss.
pub const ALIAS_MISS_TTL: Duration = Duration::from_secs(6 * 3600);

/// The ends of a request's jobs and why the run must stop, if it must.
type Outcome = (Vec<(Job, JobEnd)>, Option<Stop>);

/// Where a StockX style id and size led.
enum Resolution {
    /// The ids to ask market data for; `cached`: one of them came from the cache (and may
    /// be stale).
    Found {
        product_id: String,
        variant_id: String,
        cached: bool,
    },
    /// StockX's catalog has no such style or size: terminal.
    NotFound(String),
    /// A cached product StockX no longer has: forgotten; resolve again.
    Gone,
}

/// The job-queue sync shape of one StockX or Keepa account.
pub struct JobRunner {
    client: JobClient,
    pacer: Option<Pacer>,
    ledger: Arc<dyn LedgerStore>,
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
    pub fn new(client: JobClient, pacer: Option<Pacer>, ledger: Arc<dyn LedgerStore>) -> JobRunner {
        JobRunner {
            client,
            pacer,
            ledger,
        }
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, SyncError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn LedgerStore) -> Result<T, store::JobError> + Send + 'static,
    {
        let ledger = Arc::clone(&self.ledger);
        crate::store::blocking(move || work(ledger.as_ref()))
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
        F: FnOnce(&dyn LedgerStore, &Claimer<'_>) -> Result<T, store::JobError> + Send + 'static,
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
            warn!(provider, job, previous_owner = %previous_owner, "job rescued: the lease of its worker expired; back to pending without consuming an attempt");
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
                warn!(provider, reason = %reason, infrastructure, "no quota grant; the jobs went back without consuming an attempt and the run ends");
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
                        warn!(error = %err, "the token manager could not persist the cooldown; it holds in this process");
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
    async fn work(&self, ctx: &StreamContext, jobs: &[Job], run: &mut JobRun) -> Outcome {
        let priority: JobPriority = jobs
            .iter()
            .map(Job::level)
            .max()
            .unwrap_or(JobPriority::Background);
        let client = match &self.client {
            JobClient::Stockx(client) => {
                return self.work_stockx(ctx, client, jobs, priority, run).await
            }
            JobClient::Alias(client) => {
                return self.work_alias(ctx, client, jobs, priority, run).await
            }
            JobClient::EbayBrowse(client) => {
                return self.work_ebay(ctx, client, jobs, priority, run).await
            }
            JobClient::Keepa(client) => client,
        };
        let cost = client.tokens_per_asin() * jobs.len() as f64;
        let wait = QUOTA_WAIT_MAX.min(ctx.stream.jobs().job_lease / 2);
        if let Err(refused) = ctx
            .paced(OP_PRODUCT, cost, priority.quota().into(), wait, true)
            .await
        {
            return self.refused(ctx, jobs, refused);
        }
        run.calls_made += 1;
        debug!(operation = OP_PRODUCT, jobs = jobs.len(), priority = %priority, cost, "request");
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

    /// An Alias job: its style id's catalog item (the SQLite cache first, else one
    /// catalog search, cached), then one pricing call; one grant of the Alias bucket per
    /// call. A cached id the pricing call answers 404 for is forgotten and the style id
    /// searched again, once; a fresh id refused the same way ends the job `not_found`.
    async fn work_alias(
        &self,
        ctx: &StreamContext,
        client: &AliasClient,
        jobs: &[Job],
        priority: JobPriority,
        run: &mut JobRun,
    ) -> Outcome {
        let Some(job) = jobs.first() else {
            return (Vec::new(), None);
        };
        let sku = job.sku.clone();
        let size_text = job.size.clone().unwrap_or_default();
        let not_found = |message: String| (vec![(job.clone(), JobEnd::NotFound(message))], None);
        let Some(size) = crate::provider::alias_wire::parse_size(&size_text) else {
            return not_found(format!("size {size_text:?} is not a US size number"));
        };
        for attempt in 0..2 {
            let owned = sku.clone();
            let cached = match self
                .blocking(move |ledger| store::cached_alias_item(ledger, &owned, now_ts()))
                .await
            {
                Ok(cached) => cached,
                Err(err) => {
                    warn!(sku = %sku, error = %err, "alias catalog cache unreadable; asking alias");
                    None
                }
            };
            let (catalog_id, sizes, cached) = match cached {
                Some(store::CachedAliasItem::Miss { until }) => {
                    return not_found(format!(
                        "no alias catalog item has the style id {sku:?} (a remembered miss until {until}, unix seconds; no call spent)"
                    ))
                }
                Some(store::CachedAliasItem::Item { catalog_id, sizes }) => {
                    (catalog_id, sizes, true)
                }
                None => {
                    let answer = match self
                        .alias_call(ctx, jobs, priority, OP_CATALOG, run, client.search(&sku))
                        .await
                    {
                        Ok(answer) => answer,
                        Err(outcome) => return outcome,
                    };
                    match answer {
                        Ok(Some(item)) => {
                            let (owned, id, sizes) =
                                (sku.clone(), item.catalog_id.clone(), item.sizes.clone());
                            self.cache_write(move |ledger| {
                                store::put_alias_item(ledger, &owned, Some(&id), &sizes, now_ts(), ALIAS_CATALOG_TTL.as_secs() as i64)
                            })
                            .await;
                            (item.catalog_id, item.sizes, false)
                        }
                        Ok(None) | Err(ProviderError::NotFound { .. }) => {
                            let owned = sku.clone();
                            self.cache_write(move |ledger| {
                                store::put_alias_item(ledger, &owned, None, &[], now_ts(), ALIAS_MISS_TTL.as_secs() as i64)
                            })
                            .await;
                            return not_found(format!(
                                "no alias catalog item has the style id {sku:?}; remembered as a miss for {}",
                                humantime::format_duration(ALIAS_MISS_TTL)
                            ));
                        }
                        Err(err) => return self.failed_request(ctx, jobs, err),
                    }
                }
            };
            if !sizes.is_empty() && !sizes.contains(&size) {
                return not_found(format!(
                    "alias item {catalog_id} ({sku}) is not sold in US size {size_text}"
                ));
            }
            if !cached {
                // The search was this lookup's call so far.
                if let Some(yielded) = self.yield_to_higher(jobs, priority).await {
                    return yielded;
                }
            }
            let answer = match self
                .alias_call(
                    ctx,
                    jobs,
                    priority,
                    OP_PRICING,
                    run,
                    client.pricing(&catalog_id, size),
                )
                .await
            {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            match answer {
                Ok(market) => {
                    return (
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
                    )
                }
                Err(ProviderError::NotFound { message, .. }) => {
                    let owned = sku.clone();
                    if let Err(err) = self
                        .blocking(move |ledger| store::forget_alias_sku(ledger, &owned))
                        .await
                    {
                        warn!(sku = %sku, error = %err, "could not drop the stale alias catalog entry; it expires by itself");
                    }
                    if cached && attempt == 0 {
                        warn!(job = job.id, sku = %sku, catalog_id = %catalog_id, answer = %message, "alias refused a cached catalog id; searching the style id again");
                        continue;
                    }
                    return not_found(format!(
                        "alias has no pricing for {catalog_id} ({sku}) in size {size_text}: {message}"
                    ));
                }
                Err(err) => return self.failed_request(ctx, jobs, err),
            }
        }
        not_found(format!(
            "alias refused the catalog id of {sku} after it was searched again"
        ))
    }

    /// One Alias call: a grant of the Alias bucket (the catalog search shares the pricing
    /// budget) at the jobs' priority, then `call`. `Err`: the TokenManager did not let it
    /// go (the jobs' ends); `Ok`: what Alias answered.
    async fn alias_call<T>(
        &self,
        ctx: &StreamContext,
        jobs: &[Job],
        priority: JobPriority,
        operation: &'static str,
        run: &mut JobRun,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<Result<T, ProviderError>, Outcome> {
        self.shared_bucket_call(ctx, jobs, priority, OP_PRICING, operation, run, call)
            .await
    }

    /// An eBay market-price job (one a request): a grant of the Browse bucket, then the
    /// item search and its listing statistics.
    async fn work_ebay(
        &self,
        ctx: &StreamContext,
        client: &EbayBrowseClient,
        jobs: &[Job],
        priority: JobPriority,
        run: &mut JobRun,
    ) -> Outcome {
        let Some(job) = jobs.first() else {
            return (Vec::new(), None);
        };
        let wait = QUOTA_WAIT_MAX.min(ctx.stream.jobs().job_lease / 2);
        if let Err(refused) = ctx
            .paced(OP_SEARCH, 1.0, priority.quota().into(), wait, true)
            .await
        {
            return self.refused(ctx, jobs, refused);
        }
        run.calls_made += 1;
        debug!(operation = OP_SEARCH, priority = %priority, "request");
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

    /// One StockX call: a grant of the StockX bucket at the jobs' priority (catalog calls
    /// share the market-data budget), then `call`. `Err`: the TokenManager did not let it
    /// go (the jobs' ends); `Ok`: what StockX answered.
    async fn stockx_call<T>(
        &self,
        ctx: &StreamContext,
        jobs: &[Job],
        priority: JobPriority,
        operation: &'static str,
        run: &mut JobRun,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<Result<T, ProviderError>, Outcome> {
        self.shared_bucket_call(ctx, jobs, priority, OP_MARKET_DATA, operation, run, call)
            .await
    }

    /// One call paid from the bucket of `bucket_operation` (a provider whose catalog
    /// calls share its market-data budget): a grant at the jobs' priority, then `call`,
    /// counted under `operation`; a 429 to any of them spends that one bucket.
    #[allow(clippy::too_many_arguments)]
    async fn shared_bucket_call<T>(
        &self,
        ctx: &StreamContext,
        jobs: &[Job],
        priority: JobPriority,
        bucket_operation: &'static str,
        operation: &'static str,
        run: &mut JobRun,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<Result<T, ProviderError>, Outcome> {
        let wait = QUOTA_WAIT_MAX.min(ctx.stream.jobs().job_lease / 2);
        if let Err(refused) = ctx
            .paced(bucket_operation, 1.0, priority.quota().into(), wait, true)
            .await
        {
            return Err(self.refused(ctx, jobs, refused));
        }
        run.calls_made += 1;
        debug!(operation, priority = %priority, "request");
        let result = call.await;
        if operation == bucket_operation {
            ctx.observe(bucket_operation, &result);
        } else {
            // Counted under its own operation; a 429 spends the provider's one bucket.
            let provider = ctx.account.provider.as_str();
            ctx.metrics.provider_call(provider, operation);
            if let Err(ProviderError::QuotaExceeded { retry_after, .. }) = &result {
                ctx.metrics.provider_throttled(provider, operation);
                if let Some(pacer) = ctx.work.pacer() {
                    pacer.handle.observe(
                        pacer.key(bucket_operation),
                        Observation::Capped {
                            retry_after: *retry_after,
                        },
                    );
                }
            }
        }
        Ok(result)
    }

    /// A StockX job: resolve its style id and size to catalog ids (cache first), then ask
    /// their market data. A cached id StockX says is gone is forgotten and resolved again,
    /// once.
    async fn work_stockx(
        &self,
        ctx: &StreamContext,
        client: &StockxClient,
        jobs: &[Job],
        priority: JobPriority,
        run: &mut JobRun,
    ) -> Outcome {
        let Some(job) = jobs.first() else {
            return (Vec::new(), None);
        };
        let style = job.sku.clone();
        let size = job.size.clone().unwrap_or_default();
        let not_found = |message: String| (vec![(job.clone(), JobEnd::NotFound(message))], None);
        let calls_at_start = run.calls_made;
        for attempt in 0..2 {
            let resolution = match self
                .resolve_stockx(ctx, client, jobs, priority, run, &style, &size)
                .await
            {
                Ok(resolution) => resolution,
                Err(outcome) => return outcome,
            };
            let (product_id, variant_id, cached) = match resolution {
                Resolution::Found {
                    product_id,
                    variant_id,
                    cached,
                } => (product_id, variant_id, cached),
                Resolution::NotFound(message) => return not_found(message),
                Resolution::Gone if attempt == 0 => continue,
                Resolution::Gone => {
                    return not_found(format!(
                        "stockx answered that the product of style {style} is gone, twice; nothing to look up"
                    ))
                }
            };
            if run.calls_made > calls_at_start {
                if let Some(yielded) = self.yield_to_higher(jobs, priority).await {
                    return yielded;
                }
            }
            let answer = match self
                .stockx_call(
                    ctx,
                    jobs,
                    priority,
                    OP_MARKET_DATA,
                    run,
                    client.market_data(&product_id, &variant_id),
                )
                .await
            {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            match answer {
                Ok(market) => {
                    let result = JobResult::Market {
                        lowest_ask: market.lowest_ask,
                        highest_bid: market.highest_bid,
                        // StockX's market data carries no last sale.
                        last_sale: None,
                        currency: market.currency,
                    };
                    return (vec![(job.clone(), JobEnd::Succeeded(result))], None);
                }
                Err(ProviderError::NotFound { message, .. }) => {
                    self.forget_style(&style).await;
                    if cached && attempt == 0 {
                        warn!(job = job.id, style = %style, size = %size, product_id = %product_id, variant_id = %variant_id, answer = %message, "stockx refused a cached catalog id; resolving the style again");
                        continue;
                    }
                    return not_found(format!(
                        "stockx has no market for style {style} size {size} (product {product_id}, variant {variant_id}): {message}"
                    ));
                }
                Err(err) => return self.failed_request(ctx, jobs, err),
            }
        }
        not_found(format!(
            "stockx refused the catalog ids of style {style} size {size} after resolving them again"
        ))
    }

    /// Drops the cached catalog entry of `style` (a failure to is logged: the entry
    /// expires anyway).
    async fn forget_style(&self, style: &str) {
        let owned = style.to_string();
        if let Err(err) = self
            .blocking(move |ledger| store::forget_stockx_style(ledger, &owned))
            .await
        {
            warn!(style, error = %err, "could not drop the stale stockx catalog entry; it expires by itself");
        }
    }

    /// The catalog ids of `style` in `size`: from the cache when it has them, else from
    /// StockX (search, then the product's variants), cached for next time.
    #[allow(clippy::too_many_arguments)]
    async fn resolve_stockx(
        &self,
        ctx: &StreamContext,
        client: &StockxClient,
        jobs: &[Job],
        priority: JobPriority,
        run: &mut JobRun,
        style: &str,
        size: &str,
    ) -> Result<Resolution, Outcome> {
        let owned = style.to_string();
        let cached = self
            .blocking(move |ledger| store::cached_stockx_style(ledger, &owned, now_ts()))
            .await;
        let cached = match cached {
            Ok(cached) => cached,
            Err(err) => {
                warn!(style, error = %err, "stockx catalog cache unreadable; asking stockx");
                None
            }
        };
        let (product_id, product_cached) = match cached {
            Some(store::CachedStyle::Miss { until }) => {
                return Ok(Resolution::NotFound(format!(
                    "stockx's catalog has no product with style id {style} (a remembered miss until {until}, unix seconds; no call spent)"
                )))
            }
            Some(store::CachedStyle::Product { product_id }) => (product_id, true),
            None => {
                let answer = self
                    .stockx_call(ctx, jobs, priority, OP_CATALOG_SEARCH, run, client.search_style(style))
                    .await?;
                match answer {
                    Ok(Some(product)) => {
                        let (owned, id, title) = (style.to_string(), product.product_id.clone(), product.title.clone());
                        self.cache_write(move |ledger| {
                            store::put_stockx_style(ledger, &owned, Some(&id), title.as_deref(), now_ts(), STOCKX_CATALOG_TTL.as_secs() as i64)
                        })
                        .await;
                        (product.product_id, false)
                    }
                    Ok(None) | Err(ProviderError::NotFound { .. }) => {
                        let owned = style.to_string();
                        self.cache_write(move |ledger| {
                            store::put_stockx_style(ledger, &owned, None, None, now_ts(), STOCKX_MISS_TTL.as_secs() as i64)
                        })
                        .await;
                        return Ok(Resolution::NotFound(format!(
                            "stockx's catalog search found no product with style id {style}; remembered as a miss for {}",
                            humantime::format_duration(STOCKX_MISS_TTL)
                        )));
                    }
                    Err(err) => return Err(self.failed_request(ctx, jobs, err)),
                }
            }
        };
        let key = size_key(size);
        let (owned_product, owned_key) = (product_id.clone(), key.clone());
        let variant = self
            .blocking(move |ledger| {
                store::cached_stockx_variant(ledger, &owned_product, &owned_key, now_ts())
            })
            .await
            .unwrap_or(store::CachedVariant::Unknown);
        match variant {
            store::CachedVariant::Variant { variant_id } => {
                return Ok(Resolution::Found {
                    product_id,
                    variant_id,
                    cached: true,
                })
            }
            store::CachedVariant::NoSuchSize { sizes } => {
                return Ok(Resolution::NotFound(format!(
                    "stockx product {product_id} (style {style}) has no size {size:?}; it has {}",
                    sizes.join(", ")
                )))
            }
            store::CachedVariant::Unknown => {}
        }
        if !product_cached {
            // The search was this lookup's first call.
            if let Some(yielded) = self.yield_to_higher(jobs, priority).await {
                return Err(yielded);
            }
        }
        let answer = self
            .stockx_call(
                ctx,
                jobs,
                priority,
                OP_CATALOG_VARIANTS,
                run,
                client.variants(&product_id),
            )
            .await?;
        let variants = match answer {
            Ok(variants) => variants,
            Err(ProviderError::NotFound { message, .. }) => {
                self.forget_style(style).await;
                if product_cached {
                    warn!(style, product_id = %product_id, answer = %message, "stockx no longer has the cached product; resolving the style again");
                    return Ok(Resolution::Gone);
                }
                return Ok(Resolution::NotFound(format!(
                    "stockx has no variants for product {product_id} (style {style}): {message}"
                )));
            }
            Err(err) => return Err(self.failed_request(ctx, jobs, err)),
        };
        let rows: Vec<store::VariantRow> = variants
            .iter()
            .map(|variant| store::VariantRow {
                size_keys: variant.size_keys(),
                variant_id: variant.variant_id.clone(),
            })
            .collect();
        let found = rows
            .iter()
            .find(|row| row.size_keys.first() == Some(&key))
            .or_else(|| rows.iter().find(|row| row.size_keys.contains(&key)))
            .map(|row| row.variant_id.clone());
        let sizes: Vec<String> = variants
            .iter()
            .filter_map(|variant| variant.variant_value.clone())
            .take(40)
            .collect();
        let owned_product = product_id.clone();
        self.cache_write(move |ledger| {
            store::put_stockx_variants(
                ledger,
                &owned_product,
                &rows,
                now_ts(),
                STOCKX_CATALOG_TTL.as_secs() as i64,
            )
        })
        .await;
        match found {
            Some(variant_id) => Ok(Resolution::Found {
                product_id,
                variant_id,
                cached: product_cached,
            }),
            None => Ok(Resolution::NotFound(format!(
                "stockx product {product_id} (style {style}) has no size {size:?}; it has {}",
                sizes.join(", ")
            ))),
        }
    }

    /// Writes to the catalog cache; a failure is logged, not fatal (the next lookup asks
    /// StockX again).
    async fn cache_write<F>(&self, write: F)
    where
        F: FnOnce(&dyn LedgerStore) -> Result<(), store::JobError> + Send + 'static,
    {
        if let Err(err) = self.blocking(write).await {
            warn!(error = %err, "could not write the catalog cache; the next lookup asks the provider again");
        }
    }

    /// Between two calls of one lookup (a catalog step done, its answer cached): when a
    /// job of a higher priority (a manual refresh) is waiting, the lookup goes back to
    /// pending without an attempt so that job is claimed next and waits for no more than
    /// the one call already made. The next claim of this job starts from the cache, so no
    /// call is lost. `None`: go on.
    async fn yield_to_higher(&self, jobs: &[Job], priority: JobPriority) -> Option<Outcome> {
        if priority >= JobPriority::Manual {
            return None;
        }
        let provider = self.client.provider();
        let waiting = self
            .blocking(move |ledger| store::pending_above(ledger, provider, priority, now_ts()))
            .await
            .unwrap_or(false);
        if !waiting {
            return None;
        }
        debug!(
            provider,
            jobs = jobs.len(),
            "a higher-priority job is waiting; this lookup yields after its catalog step"
        );
        let now = now_ts();
        let ends = jobs
            .iter()
            .map(|job| {
                (
                    job.clone(),
                    JobEnd::Deferred {
                        reason: "yielded to a manual refresh after its catalog step".to_string(),
                        not_before: now,
                    },
                )
            })
            .collect();
        Some((ends, None))
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
    fn failed_request(&self, ctx: &StreamContext, jobs: &[Job], err: ProviderError) -> Outcome {
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
        warn!(jobs = jobs.len(), error = %err, "request failed; the jobs are retried with backoff");
        let ends = jobs
            .iter()
            .map(|job| (job.clone(), self.retry(ctx, job, err.to_string())))
            .collect();
        (ends, None)
    }

    /// The TokenManager did not let the request go: the jobs go back unharmed (except for
    /// configuration errors, which fail them with the fix).
    fn refused(&self, ctx: &StreamContext, jobs: &[Job], refused: CallError) -> Outcome {
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
