//! The freshness scheduler (issue 15 point 5; seed 002's integration points): keeps the
//! tracked keys' market data fresh within each provider's budget.
//!
//! Purpose. Every pass (every `[freshness] interval`, default 1 min), for each job
//! provider with accounts:
//! 1. asks the TokenManager what the provider's buckets hold ([`QuotaHandle::bucket`]
//!    per account scope) and computes the jobs they can serve **before the next pass**
//!    for non-manual work: `max(0, tokens − reserve) + rate × interval` per bucket (with
//!    a window cap, an hourly budget, at most `room + rate × interval`, `room` being
//!    what the window still lets through now),
//!    divided by the tokens one job costs ([`provider_cost`]), minus the provider's
//!    live (pending or running) jobs, rounded to the nearest whole job, capped at
//!    `max_per_pass`. The reserve
//!    (`[quota] reserve_share`) is left to manual refreshes (priority 200), which the
//!    drainer claims first and the TokenManager serves first;
//! 2. reads every tracked key with its last success and last end ([`key_states`]);
//!    keys with a live job are skipped (counted as `live`); keys never looked at go
//!    first at **hot** priority (150, seed 002's "item just added"), then keys whose
//!    last end is older than the provider's `stale_after` (default 60 min), stalest
//!    first, at **background** priority (100);
//! 3. queues the selection in one transaction and records a `market_job_runs` row
//!    ([`PassRecord`]: tracked, fresh, selected, hot, background, merged, deferred,
//!    budget left, outcome).
//!
//! A key is **fresh** when its last succeeded job finished within `stale_after`.
//!
//! Options ([`FreshnessSettings`]): `interval`, `max_per_pass`, `stale_after` per
//! provider, `keep_runs` (pass rows older than that are pruned).
//!
//! Emits: `info!(provider, tracked, fresh, selected, hot, background, deferred,
//! budget_left, "freshness pass")` when it queued something (`debug!` otherwise),
//! `warn!(provider, error, "freshness pass failed")`.
//!
//! Supervision: the daemon runs [`Scheduler::run`] as the root service `freshness`; a
//! panic (the `[chaos] service = "freshness"` drill) ends the task, the root restarts
//! it with backoff, and the next pass continues from the tables (the scheduler holds no
//! state of its own).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::domain::chaos::Chaos;
use crate::domain::now_ts;
use crate::quota::{BucketKey, QuotaConfig, QuotaHandle};
use crate::store::jobs::{JobError, JobPriority};
use crate::store::tracked::{self, KeyState, PassRecord};
use crate::store::LedgerStore;

/// Seed 002: "a background refresh of every price older than 60 minutes".
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60 * 60);
/// How often a pass runs unless configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The most jobs one pass queues per provider unless configured.
pub const DEFAULT_MAX_PER_PASS: usize = 1_000;
/// How long pass rows are kept unless configured.
pub const DEFAULT_KEEP_RUNS: Duration = Duration::from_secs(7 * 24 * 3600);
/// The `source` of the jobs a pass queues.
pub const SOURCE: &str = "freshness";

/// `[freshness]`: validated by `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshnessSettings {
    /// Off: the service is not started (tracked keys stay, nothing is queued).
    pub enabled: bool,
    pub interval: Duration,
    pub max_per_pass: usize,
    /// Per provider; providers not listed use [`DEFAULT_STALE_AFTER`].
    pub stale_after: BTreeMap<String, Duration>,
    pub keep_runs: Duration,
}

impl Default for FreshnessSettings {
    fn default() -> Self {
        FreshnessSettings {
            enabled: true,
            interval: DEFAULT_INTERVAL,
            max_per_pass: DEFAULT_MAX_PER_PASS,
            stale_after: BTreeMap::new(),
            keep_runs: DEFAULT_KEEP_RUNS,
        }
    }
}

impl FreshnessSettings {
    /// The `stale_after` of `provider`.
    pub fn stale_after(&self, provider: &str) -> Duration {
        self.stale_after
            .get(provider)
            .copied()
            .unwrap_or(DEFAULT_STALE_AFTER)
    }
}

/// What one job of a provider costs in its buckets: the operation its drainer asks the
/// TokenManager for, and the tokens per job. The one table a new job provider adds a
/// row to (alias, ebay after the merge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderCost {
    pub operation: &'static str,
    pub tokens_per_job: f64,
}

/// The cost row of `provider`; `None` for a provider without a job drainer.
pub fn provider_cost(provider: &str) -> Option<ProviderCost> {
    match provider {
        // One market-data request per style id and size once the style's catalog ids
        // are cached (a cold style costs a search and a variant list first).
        "stockx" => Some(ProviderCost {
            operation: crate::provider::stockx::OP_MARKET_DATA,
            tokens_per_job: 1.0,
        }),
        // One token per ASIN (batches of up to 100 ASINs share a request).
        "keepa" => Some(ProviderCost {
            operation: crate::provider::keepa::OP_PRODUCT,
            tokens_per_job: 1.0,
        }),
        // One pricing call per style id and size once the catalog id is cached (the
        // first lookup of a style costs a catalog search too: docs/jobs.md, "Catalog
        // cost and the order of sizes", says why that is not counted here).
        "alias" => Some(ProviderCost {
            operation: crate::provider::alias::OP_PRICING,
            tokens_per_job: 1.0,
        }),
        // One Browse item search per key.
        "ebay" => Some(ProviderCost {
            operation: crate::provider::ebay_browse::OP_SEARCH,
            tokens_per_job: 1.0,
        }),
        _ => None,
    }
}

/// A job provider the daemon drains, and the quota scopes of its accounts (one bucket
/// per account scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccounts {
    pub provider: String,
    pub scopes: Vec<String>,
}

/// The scheduler: stateless between passes (everything lives in the tables).
pub struct Scheduler {
    ledger: Arc<dyn LedgerStore>,
    quota: QuotaHandle,
    /// For buckets the TokenManager has not created yet (no call so far): their spec
    /// (full), and the reserve share.
    quota_config: QuotaConfig,
    providers: Vec<ProviderAccounts>,
    settings: FreshnessSettings,
    chaos: Option<Arc<Chaos>>,
}

/// The selection of one provider's pass, before it is queued.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// (sku, size, priority), hot first, then the stalest.
    pub jobs: Vec<(String, Option<String>, JobPriority)>,
    pub tracked: i64,
    pub fresh: i64,
    pub live: i64,
    pub hot: i64,
    pub background: i64,
    pub deferred: i64,
}

/// Picks what a pass queues from `keys` at `now`: keys with a live job are skipped, keys
/// never looked at go first (hot, oldest tracked first), then keys last looked at before
/// `now − stale_after` (background, stalest first), at most `room` in all.
pub fn select(keys: &[KeyState], now: i64, stale_after: Duration, room: usize) -> Selection {
    let stale_secs = i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(stale_secs);
    let mut selection = Selection {
        tracked: keys.len() as i64,
        ..Selection::default()
    };
    let mut new = Vec::new();
    let mut stale = Vec::new();
    for key in keys {
        if key.last_success.is_some_and(|at| at > cutoff) {
            selection.fresh += 1;
        }
        if key.live {
            selection.live += 1;
            continue;
        }
        match key.last_end {
            None => new.push(key),
            Some(at) if at <= cutoff => stale.push(key),
            Some(_) => {}
        }
    }
    new.sort_by(|a, b| (a.added_at, &a.dedupe_key).cmp(&(b.added_at, &b.dedupe_key)));
    stale.sort_by(|a, b| (a.last_end, &a.dedupe_key).cmp(&(b.last_end, &b.dedupe_key)));
    let due = new.len() + stale.len();
    for (key, priority) in new
        .iter()
        .map(|key| (key, JobPriority::Hot))
        .chain(stale.iter().map(|key| (key, JobPriority::Background)))
        .take(room)
    {
        match priority {
            JobPriority::Hot => selection.hot += 1,
            _ => selection.background += 1,
        }
        selection
            .jobs
            .push((key.sku.clone(), key.size.clone(), priority));
    }
    selection.deferred = (due - selection.jobs.len()) as i64;
    selection
}

impl Scheduler {
    pub fn new(
        ledger: Arc<dyn LedgerStore>,
        quota: QuotaHandle,
        quota_config: QuotaConfig,
        providers: Vec<ProviderAccounts>,
        settings: FreshnessSettings,
        chaos: Option<Arc<Chaos>>,
    ) -> Scheduler {
        Scheduler {
            ledger,
            quota,
            quota_config,
            providers,
            settings,
            chaos,
        }
    }

    pub fn settings(&self) -> &FreshnessSettings {
        &self.settings
    }

    /// Runs a pass every `interval` until `cancel`; the first pass runs at once.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut ticker =
            tokio::time::interval(self.settings.interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            if let Some(chaos) = &self.chaos {
                chaos.on_service_step("freshness");
            }
            self.pass().await;
        }
    }

    /// One pass over every provider; returns the rows it recorded.
    pub async fn pass(&self) -> Vec<PassRecord> {
        let mut records = Vec::new();
        let mut served: Vec<&str> = Vec::new();
        for accounts in &self.providers {
            served.push(&accounts.provider);
            let record = match self.provider_pass(accounts).await {
                Ok(record) => record,
                Err(err) => {
                    warn!(provider = %accounts.provider, error = %err, "freshness pass failed; the next pass tries again");
                    PassRecord {
                        provider: accounts.provider.clone(),
                        started_at: now_ts(),
                        finished_at: now_ts(),
                        outcome: "error".to_string(),
                        ..PassRecord::default()
                    }
                }
            };
            records.push(record);
        }
        // Keys of providers no account drains: recorded, so the operator sees them wait.
        let orphans = self
            .blocking(|ledger| tracked::tracked_providers(ledger))
            .await
            .unwrap_or_default();
        for (provider, count) in orphans {
            if served.contains(&provider.as_str()) {
                continue;
            }
            let now = now_ts();
            records.push(PassRecord {
                provider,
                started_at: now,
                finished_at: now,
                tracked: count,
                outcome: "no_accounts".to_string(),
                ..PassRecord::default()
            });
        }
        let keep = i64::try_from(self.settings.keep_runs.as_secs()).unwrap_or(i64::MAX);
        let rows = records.clone();
        let written = self
            .blocking(move |ledger| {
                for row in &rows {
                    tracked::record_pass(ledger, row)?;
                }
                tracked::prune_passes(ledger, now_ts().saturating_sub(keep))
            })
            .await;
        if let Err(err) = written {
            warn!(error = %err, "freshness pass not recorded");
        }
        records
    }

    async fn provider_pass(&self, accounts: &ProviderAccounts) -> Result<PassRecord, JobError> {
        let provider = accounts.provider.clone();
        let started_at = now_ts();
        let stale_after = self.settings.stale_after(&provider);
        let budget = self.budget(accounts).await;
        let live_jobs = {
            let provider = provider.clone();
            self.blocking(move |ledger| tracked::live_jobs(ledger, &provider))
                .await?
        };
        let budget_left = (budget.unwrap_or(0.0) - live_jobs as f64).max(0.0);
        // The nearest whole number of jobs, not the floor: a budget of 2.7 queues 3, so
        // the drainer still holds a job (waiting for its grant) when the next pass comes
        // instead of idling while its bucket refills (with a small burst, the refill of
        // an idle drainer is lost at the cap). The job queued early waits into the next
        // interval, and that pass subtracts it.
        let room = if budget_left >= self.settings.max_per_pass as f64 {
            self.settings.max_per_pass
        } else {
            budget_left.round() as usize
        };
        let keys = {
            let provider = provider.clone();
            self.blocking(move |ledger| tracked::key_states(ledger, &provider))
                .await?
        };
        let now = now_ts();
        let selection = select(&keys, now, stale_after, room);
        let (created, merged) = if selection.jobs.is_empty() {
            (0, 0)
        } else {
            let (provider, jobs) = (provider.clone(), selection.jobs.clone());
            self.blocking(move |ledger| {
                tracked::enqueue_selected(ledger, &provider, &jobs, SOURCE, now)
            })
            .await?
        };
        let outcome = match budget {
            None => "no_accounts",
            Some(_) if room == 0 && selection.deferred > 0 => "no_budget",
            Some(_) => "ok",
        };
        let record = PassRecord {
            id: 0,
            provider: provider.clone(),
            started_at,
            finished_at: now_ts(),
            tracked: selection.tracked,
            fresh: selection.fresh,
            stale_after: i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX),
            live: selection.live,
            selected: created + merged,
            hot: selection.hot,
            background: selection.background,
            merged,
            deferred: selection.deferred,
            budget_left,
            outcome: outcome.to_string(),
        };
        if record.selected > 0 {
            info!(
                provider = %provider,
                tracked = record.tracked,
                fresh = record.fresh,
                selected = record.selected,
                hot = record.hot,
                background = record.background,
                deferred = record.deferred,
                budget_left = record.budget_left,
                "freshness pass"
            );
        } else {
            debug!(provider = %provider, tracked = record.tracked, fresh = record.fresh, deferred = record.deferred, budget_left = record.budget_left, "freshness pass");
        }
        Ok(record)
    }

    /// Jobs of `accounts.provider` its buckets can serve for non-manual work before the
    /// next pass; `None` when the provider has no cost row or no account.
    async fn budget(&self, accounts: &ProviderAccounts) -> Option<f64> {
        let cost = provider_cost(&accounts.provider)?;
        if accounts.scopes.is_empty() {
            return None;
        }
        let horizon = self.settings.interval.as_secs_f64();
        let mut tokens = 0.0;
        for scope in &accounts.scopes {
            let key = BucketKey::new(&accounts.provider, cost.operation, scope);
            let view = match self.quota.bucket(key.clone()).await {
                Ok(view) => view,
                Err(err) => {
                    warn!(provider = %accounts.provider, scope = %scope, error = %err, "token manager did not answer; this bucket counts as empty for the pass");
                    continue;
                }
            };
            let (rate, burst, level, share, room) = match view {
                Some(view) => (
                    view.rate,
                    view.burst,
                    view.tokens,
                    view.reserve_share,
                    view.window_room,
                ),
                // Not used yet: the TokenManager creates it full with this spec (and its
                // window empty).
                None => match self.quota_config.effective_spec(&key) {
                    Some(spec) => (
                        spec.rate,
                        spec.burst,
                        spec.burst,
                        self.quota_config.reserve_share,
                        spec.window.map(|cap| cap.limit),
                    ),
                    None => continue,
                },
            };
            let mut budget = bucket_budget(rate, burst, level, share, horizon);
            if let Some(room) = room {
                // A window cap (an hourly budget) already full lets through only what
                // leaves it, at most the refill, before the next pass.
                budget = budget.min(bucket_budget(rate, room, room, 0.0, horizon));
            }
            tokens += budget;
        }
        Some(tokens / cost.tokens_per_job.max(f64::MIN_POSITIVE))
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn LedgerStore) -> Result<T, JobError> + Send + 'static,
    {
        let ledger = Arc::clone(&self.ledger);
        crate::store::blocking(move || work(ledger.as_ref()))
            .await
            .map_err(|err| JobError::Invalid(format!("blocking task failed: {}", err.0)))?
    }
}

/// Tokens a bucket gives non-manual work within `horizon_secs`: what it holds above its
/// reserve, plus its refill. Every input comes from a provider (Keepa's balance) or a
/// configuration: non-finite or negative values count as nothing.
pub fn bucket_budget(rate: f64, burst: f64, level: f64, share: f64, horizon_secs: f64) -> f64 {
    let finite = |value: f64| if value.is_finite() { value } else { 0.0 };
    let (rate, burst, level) = (finite(rate).max(0.0), finite(burst).max(0.0), finite(level));
    let reserve = finite(share).clamp(0.0, 1.0) * burst;
    let above = (level.min(burst) - reserve).max(0.0);
    let refill = rate * finite(horizon_secs).max(0.0);
    (above + refill).min(1e12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, added: i64, success: Option<i64>, end: Option<i64>, live: bool) -> KeyState {
        KeyState {
            sku: name.to_string(),
            size: Some("10".to_string()),
            dedupe_key: format!("stockx|{name}|10"),
            added_at: added,
            last_success: success,
            last_end: end,
            live,
        }
    }

    #[test]
    fn new_keys_go_hot_first_then_the_stalest_within_the_room() {
        let now = 10_000;
        let keys = vec![
            key("fresh", 0, Some(9_000), Some(9_000), false),
            key("stale-b", 0, Some(5_000), Some(5_000), false),
            key("stale-a", 0, Some(2_000), Some(2_000), false),
            key("new-late", 50, None, None, false),
            key("new-early", 10, None, None, false),
            key("live", 0, None, None, true),
            key("notfound-old", 0, None, Some(1_000), false),
        ];
        let selection = select(&keys, now, Duration::from_secs(3_600), 4);
        let names: Vec<(&str, JobPriority)> = selection
            .jobs
            .iter()
            .map(|(sku, _, priority)| (sku.as_str(), *priority))
            .collect();
        assert_eq!(
            names,
            vec![
                ("new-early", JobPriority::Hot),
                ("new-late", JobPriority::Hot),
                ("notfound-old", JobPriority::Background),
                ("stale-a", JobPriority::Background),
            ]
        );
        assert_eq!(selection.tracked, 7);
        assert_eq!(selection.fresh, 1);
        assert_eq!(selection.live, 1);
        assert_eq!(selection.deferred, 1, "stale-b waits for a later pass");
    }

    #[test]
    fn bucket_budget_leaves_the_reserve_and_ignores_hostile_numbers() {
        // 10 tokens, burst 10, reserve 0.2 → 8 above the reserve, + 0.5/s × 60 s.
        assert_eq!(bucket_budget(0.5, 10.0, 10.0, 0.2, 60.0), 38.0);
        // A Keepa balance below zero gives only the refill.
        assert_eq!(bucket_budget(1.0, 100.0, -500.0, 0.0, 10.0), 10.0);
        assert_eq!(
            bucket_budget(f64::NAN, f64::INFINITY, f64::NAN, f64::NAN, 60.0),
            0.0
        );
        assert!(bucket_budget(1e300, 1e300, 1e300, 0.0, 1e300) <= 1e12);
    }
}
