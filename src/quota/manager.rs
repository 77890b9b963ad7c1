//! The TokenManager actor: its messages, its state, and how it grants, queues, wakes and
//! keeps cooldowns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::clock::{Clock, Timer};
use super::cooldown::{CooldownReason, CooldownStore};
use super::local::LocalBuckets;
use super::queue::{self, Outcome, Queue};
use super::redis::{RedisBuckets, RedisCooldowns, RedisLink, RemoteObservation};
use super::settings::QuotaConfig;
use super::{
    cooling_down, BucketKey, BucketSpec, BucketView, Grant, Observation, Priority, QuotaBackend,
    QuotaError, QuotaStats,
};
use crate::store::Cooldown;

mod cooldowns;
mod corrections;

use corrections::Corrections;

/// The TokenManager's messages. Use [`super::QuotaHandle`] rather than sending them yourself.
pub enum QuotaMsg {
    Acquire {
        keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Instant,
        reply: RpcReplyPort<Result<Grant, QuotaError>>,
    },
    Observe {
        key: BucketKey,
        observation: Observation,
    },
    /// The one scheduled self-message; stale generations are ignored.
    Wake {
        generation: u64,
    },
    Stats(RpcReplyPort<QuotaStats>),
    Bucket {
        key: BucketKey,
        reply: RpcReplyPort<Result<Option<BucketView>, QuotaError>>,
    },
    /// Every bucket this manager has used, with its view now (the budgets page).
    Buckets(RpcReplyPort<Result<Vec<(BucketKey, BucketView)>, QuotaError>>),
    GetCooldown {
        scope: String,
        reply: RpcReplyPort<Option<Cooldown>>,
    },
    StartCooldown {
        scope: String,
        reason: CooldownReason,
        until: DateTime<Utc>,
        detail: Option<String>,
        reply: RpcReplyPort<Result<Cooldown, QuotaError>>,
    },
    ClearCooldown {
        scope: String,
        reply: RpcReplyPort<bool>,
    },
    /// Drops what memory says about `scope`: the next question asks the store (another
    /// process cleared it there).
    Forget {
        scope: String,
    },
}

/// The actor. Spawn with [`TokenManager::spawn`]; talk to it through [`super::QuotaHandle`].
pub struct TokenManager;

impl TokenManager {
    /// Starts an unsupervised TokenManager. No I/O happens here (Redis is reached at
    /// first use), so it starts while Redis is down.
    pub async fn spawn(
        config: QuotaConfig,
    ) -> Result<(ActorRef<QuotaMsg>, JoinHandle<()>), QuotaError> {
        Actor::spawn(None, TokenManager, config)
            .await
            .map_err(|err| {
                QuotaError::Unavailable(format!("cannot start the token manager: {err}"))
            })
    }

    /// Starts a TokenManager supervised by `supervisor`.
    pub async fn spawn_linked(
        config: QuotaConfig,
        supervisor: ActorCell,
    ) -> Result<(ActorRef<QuotaMsg>, JoinHandle<()>), QuotaError> {
        Actor::spawn_linked(None, TokenManager, config, supervisor)
            .await
            .map_err(|err| {
                QuotaError::Unavailable(format!("cannot start the token manager: {err}"))
            })
    }
}

enum Buckets {
    Local(LocalBuckets),
    Redis(RedisBuckets),
}

/// A cached answer about one cooldown scope.
struct Cached {
    cooldown: Option<Cooldown>,
    checked_at: Instant,
    /// Started here but the store refused it: memory is the only record.
    unsaved: bool,
}

/// How many store answers are cached between sweeps of the stale ones.
const COOLDOWN_CACHE_SWEEP_EVERY: usize = 1024;

/// The most running cooldowns taken from one read of the store's list; past it (a bug,
/// or a fleet far past 10,000 accounts all cooling down) each scope is asked alone.
const MAX_LISTED_COOLDOWNS: usize = 100_000;

/// The actor's state.
pub struct ManagerState {
    clock: Clock,
    origin: Instant,
    config: QuotaConfig,
    queue: Queue,
    replies: HashMap<u64, RpcReplyPort<Result<Grant, QuotaError>>>,
    buckets: Buckets,
    store: Option<Arc<dyn CooldownStore>>,
    cooldowns: HashMap<String, Cached>,
    /// Store answers cached since the last sweep of stale "no cooldown" entries: with
    /// 10,000 accounts the cache would otherwise keep ~4 such answers per account for
    /// the daemon's life (issue 3: RSS).
    cached_since_sweep: usize,
    /// When the store's list of every running cooldown was last read into `cooldowns`
    /// ([`CooldownStore::all_active`]): until `cooldown_recheck` after it, a scope not in
    /// the cache has no cooldown, without asking the store. `None`: never read, or the
    /// store cannot list (Redis), and each scope is asked on its own.
    listed_at: Option<Instant>,
    /// The store answered that it cannot list its cooldowns; not asked again.
    cannot_list: bool,
    timer: Option<(Duration, u64, Timer)>,
    generation: u64,
    stats: QuotaStats,
    /// The 429s read as model corrections, per bucket (issue 12).
    corrections: Corrections,
    /// Grants per bucket since the manager started (one entry per bucket used, like
    /// `corrections`), shown in [`BucketView::grants`].
    grants: HashMap<BucketKey, u64>,
}

impl ManagerState {
    fn elapsed(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    fn instant(&self, at: Duration) -> Instant {
        // `at` comes from bucket arithmetic fed by provider values: never overflow.
        self.origin
            .checked_add(at)
            .unwrap_or_else(|| self.origin + super::MAX_COOLDOWN)
    }

    fn spec_for(&self, key: &BucketKey) -> Option<BucketSpec> {
        match &self.buckets {
            Buckets::Local(local) => local
                .get(key)
                .map(|bucket| {
                    BucketSpec::new(bucket.rate(), bucket.burst()).with_window(bucket.window())
                })
                .or_else(|| self.config.effective_spec(key)),
            Buckets::Redis(remote) => remote.spec(key).or_else(|| self.config.effective_spec(key)),
        }
    }

    fn ensure(&mut self, key: &BucketKey, spec: BucketSpec) {
        let now = self.elapsed();
        match &mut self.buckets {
            Buckets::Local(local) => {
                local.ensure(key, spec, now);
            }
            Buckets::Redis(remote) => remote.ensure(key, spec),
        }
    }

    async fn observe(&mut self, key: BucketKey, observation: Observation) {
        let observation = match observation {
            Observation::RateLimitHeader(rate) => {
                Observation::RateLimitHeader(self.config.margined(rate))
            }
            Observation::Keepa {
                tokens_left,
                refill_in_ms,
                refill_rate_per_min,
            } => {
                let bounded =
                    super::KeepaValues::bounded(tokens_left, refill_in_ms, refill_rate_per_min);
                if bounded.clamped {
                    warn!(key = %key, tokens_left, refill_in_ms, refill_rate_per_min, "keepa balance out of range; clamped");
                }
                Observation::Keepa {
                    tokens_left: bounded.tokens_left,
                    refill_in_ms: bounded.refill_in_ms,
                    refill_rate_per_min: bounded.refill_rate_per_min,
                }
            }
            other => other,
        };
        let Some(spec) = self.spec_for(&key) else {
            debug!(key = %key, "observation for a bucket without a spec ignored");
            return;
        };
        self.ensure(&key, spec);
        let now = self.elapsed();
        if let Buckets::Local(local) = &mut self.buckets {
            // Every observation is a provider's answer to a call this bucket granted: the
            // refill it cannot have had while that call was on its way goes first.
            local.ensure(&key, spec, now).answered(now);
        }
        let remote = match (&observation, &mut self.buckets) {
            (Observation::RateLimitHeader(rate), Buckets::Local(local)) => {
                let bucket = local.ensure(&key, spec, now);
                let previous = bucket.rate();
                if bucket.set_rate(*rate, now) && (previous - rate).abs() > f64::EPSILON {
                    debug!(key = %key, rate, previous, "rate learned from header");
                }
                None
            }
            (
                Observation::Keepa {
                    tokens_left,
                    refill_in_ms,
                    refill_rate_per_min,
                },
                Buckets::Local(local),
            ) => {
                local.ensure(&key, spec, now).resync_keepa(
                    *tokens_left,
                    *refill_in_ms,
                    *refill_rate_per_min,
                    now,
                );
                None
            }
            (Observation::Throttled { retry_after }, Buckets::Local(local)) => {
                let hold = retry_after.unwrap_or_default().min(super::MAX_COOLDOWN);
                let (before, after) = local.ensure(&key, spec, now).correct(1.0, hold, now);
                self.corrections.note_burst(&key, before, after);
                None
            }
            (Observation::Capped { .. }, Buckets::Local(local)) => {
                local.ensure(&key, spec, now).drain(now);
                None
            }
            (Observation::RateLimitHeader(rate), Buckets::Redis(_)) => {
                (rate.is_finite() && *rate > 0.0).then_some(RemoteObservation::Rate(*rate))
            }
            (
                Observation::Keepa {
                    tokens_left,
                    refill_in_ms,
                    refill_rate_per_min,
                },
                Buckets::Redis(remote),
            ) => {
                if refill_rate_per_min.is_finite() && *refill_rate_per_min > 0.0 {
                    remote.set_burst(&key, refill_rate_per_min * 60.0);
                }
                Some(RemoteObservation::Keepa {
                    tokens_left: *tokens_left,
                    refill_in_ms: *refill_in_ms,
                    refill_rate_per_min: *refill_rate_per_min,
                })
            }
            (Observation::Throttled { retry_after }, Buckets::Redis(remote)) => {
                // The shared bucket is corrected as in process: its burst goes down, its
                // level to zero, and its next token comes after the Retry-After (every
                // daemon sharing the bucket waits for it, not only this one).
                let hold = retry_after.unwrap_or_default().min(super::MAX_COOLDOWN);
                let mut burst = None;
                if let Ok(Some(view)) = remote.view(&key).await {
                    let accepted = super::bucket::accepted_burst(view.burst, view.tokens, 1.0);
                    if accepted < view.burst {
                        remote.set_burst(&key, accepted);
                        self.corrections.note_burst(&key, view.burst, accepted);
                        burst = Some(accepted);
                    }
                }
                Some(RemoteObservation::Drain { hold, burst })
            }
            (Observation::Capped { .. }, Buckets::Redis(_)) => Some(RemoteObservation::Drain {
                hold: Duration::ZERO,
                burst: None,
            }),
        };
        if let (Some(remote), Buckets::Redis(buckets)) = (remote, &mut self.buckets) {
            // A failure was logged by the Redis layer; the next 2xx observes again.
            let _ = buckets.observe(&key, remote).await;
        }
        if let Observation::Keepa {
            tokens_left,
            refill_in_ms,
            refill_rate_per_min,
        } = observation
        {
            info!(key = %key, tokens_left, refill_in_ms, refill_rate_per_min, "keepa balance resynced");
        }
        let escalate = match observation {
            Observation::Throttled { retry_after } => {
                let recent = self
                    .corrections
                    .throttled(&key, spec.burst, self.clock.now());
                let escalate = recent >= super::THROTTLE_ESCALATE_AFTER;
                let burst = self.corrections.burst_of(&key);
                let configured_burst = self.corrections.configured_burst_of(&key);
                warn!(key = %key, configured_burst, burst, retry_after_ms = retry_after.map_or(0, |after| after.as_millis() as u64), recent, escalate, "429 read as a model correction");
                escalate.then_some((retry_after, "repeated despite the correction"))
            }
            Observation::Capped { retry_after } => {
                Some((retry_after, "a per-hour or per-day budget is spent"))
            }
            _ => None,
        };
        if let Some((retry_after, why)) = escalate {
            // Retry-After is bounded by the provider layer; bound it again here, where an
            // overflow would take the TokenManager (and every account) down.
            let length = self
                .config
                .throttle_cooldown(&key.provider)
                .max(retry_after.unwrap_or_default())
                .min(super::MAX_COOLDOWN);
            let wall = self.clock.wall_now();
            let until = chrono::Duration::from_std(length)
                .ok()
                .and_then(|length| wall.checked_add_signed(length))
                .unwrap_or(wall);
            let scope = key.hard_stop_scope();
            warn!(key = %key, scope = %scope, until = %until.to_rfc3339(), "provider throttled; cooling down");
            let detail = Some(format!("throttled (429) on {key}: {why}"));
            // A store failure was logged; the cooldown holds in memory regardless.
            let _ = self
                .start_cooldown(scope, CooldownReason::Quota, until, detail)
                .await;
        }
        self.queue.invalidate_waits();
    }

    async fn acquire(
        &mut self,
        myself: &ActorRef<QuotaMsg>,
        mut keys: Vec<BucketKey>,
        cost: f64,
        priority: Priority,
        deadline: Instant,
        reply: RpcReplyPort<Result<Grant, QuotaError>>,
    ) {
        keys.sort();
        keys.dedup();
        if let Err(err) = self.check(&keys, cost).await {
            if matches!(err, QuotaError::CoolingDown { .. }) {
                self.stats.cooling_down += 1;
            }
            let _ = reply.send(Err(err));
            return;
        }
        let now = self.elapsed();
        let deadline = deadline.saturating_duration_since(self.origin);
        let first = keys.first().cloned();
        let id = self.queue.push(keys, cost, priority, deadline, now);
        self.replies.insert(id, reply);
        self.pump(myself).await;
        if self.replies.contains_key(&id) {
            let wake_ms = self
                .timer
                .as_ref()
                .map_or(0, |(at, _, _)| at.saturating_sub(now).as_millis() as u64);
            debug!(key = %first.map(|key| key.to_string()).unwrap_or_default(), priority = %priority, cost, wake_ms, queued = self.queue.len(), "request queued");
        }
    }

    /// Everything refused at once: bad cost, unknown bucket, cost above burst, cooldown.
    async fn check(&mut self, keys: &[BucketKey], cost: f64) -> Result<(), QuotaError> {
        if !(cost.is_finite() && cost >= 0.0) {
            return Err(QuotaError::InvalidCost(cost));
        }
        for key in keys {
            let spec = self
                .spec_for(key)
                .ok_or_else(|| QuotaError::UnknownBucket { key: key.clone() })?;
            // A window's limit bounds a take like the burst does.
            let most = spec
                .window
                .map_or(spec.burst, |cap| spec.burst.min(cap.limit));
            if cost > most {
                return Err(QuotaError::CostExceedsBurst {
                    key: key.clone(),
                    cost,
                    burst: most,
                });
            }
            self.ensure(key, spec);
        }
        match self.cooling(keys).await {
            Some(cooldown) => Err(cooling_down(&cooldown)),
            None => Ok(()),
        }
    }

    /// Serves what can be served now and keeps exactly one wake-up scheduled.
    async fn pump(&mut self, myself: &ActorRef<QuotaMsg>) {
        let replies = &self.replies;
        for gone in self.queue.remove_where(|pending| {
            replies
                .get(&pending.id)
                .is_none_or(|reply| reply.is_closed())
        }) {
            self.replies.remove(&gone.id);
        }
        let now = self.elapsed();
        let served = match &mut self.buckets {
            Buckets::Local(local) => self.queue.serve(local, now).await,
            Buckets::Redis(remote) => self.queue.serve(remote, now).await,
        };
        for (id, pending, outcome) in served.outcomes {
            let Some(reply) = self.replies.remove(&id) else {
                continue;
            };
            let answer = match outcome {
                Outcome::Granted { waited } => {
                    self.stats.grants += 1;
                    for key in &pending.keys {
                        let count = self.grants.entry(key.clone()).or_insert(0);
                        *count = count.saturating_add(1);
                    }
                    Ok(Grant {
                        keys: pending.keys,
                        cost: pending.cost,
                        priority: pending.priority,
                        waited,
                        granted_at: self.instant(now),
                    })
                }
                Outcome::Expired { key, waited } => {
                    self.stats.deadline_exceeded += 1;
                    debug!(key = %key, waited_ms = waited.as_millis() as u64, "deadline exceeded");
                    Err(QuotaError::DeadlineExceeded { key, waited })
                }
                Outcome::Failed(err) => {
                    if matches!(err, QuotaError::CoolingDown { .. }) {
                        self.stats.cooling_down += 1;
                    }
                    Err(err)
                }
            };
            let _ = reply.send(answer);
        }
        self.stats.queued = self.queue.len();
        self.reschedule(myself, served.next_wake, now);
    }

    fn reschedule(&mut self, myself: &ActorRef<QuotaMsg>, next: Option<Duration>, now: Duration) {
        match (next, &self.timer) {
            (Some(at), Some((scheduled, _, _))) if *scheduled == at => {}
            (None, None) => {}
            (next, _) => {
                if let Some((_, _, timer)) = self.timer.take() {
                    timer.cancel();
                }
                if let Some(at) = next {
                    self.generation += 1;
                    let after = at.saturating_sub(now).max(queue::MIN_WAIT);
                    let timer = self.clock.schedule(myself, after, self.generation);
                    self.stats.timers_scheduled += 1;
                    self.timer = Some((at, self.generation, timer));
                }
            }
        }
    }
}

impl Actor for TokenManager {
    type Msg = QuotaMsg;
    type State = ManagerState;
    type Arguments = QuotaConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<QuotaMsg>,
        config: QuotaConfig,
    ) -> Result<ManagerState, ActorProcessingErr> {
        // Trivial on purpose (panics here never reach a supervisor): no I/O.
        let (buckets, default_store): (Buckets, Option<Arc<dyn CooldownStore>>) =
            match &config.backend {
                QuotaBackend::InProcess => (
                    Buckets::Local(LocalBuckets::new(config.reserve_share)),
                    None,
                ),
                QuotaBackend::Redis { url, prefix } => {
                    let link = Arc::new(RedisLink::new(url, prefix)?);
                    (
                        Buckets::Redis(RedisBuckets::new(Arc::clone(&link), config.reserve_share)),
                        Some(Arc::new(RedisCooldowns::from_link(link))),
                    )
                }
            };
        let store = config.cooldown_store.clone().or(default_store);
        let clock = config.clock.clone();
        Ok(ManagerState {
            origin: clock.now(),
            clock,
            config,
            queue: Queue::new(),
            replies: HashMap::new(),
            buckets,
            store,
            cooldowns: HashMap::new(),
            cached_since_sweep: 0,
            listed_at: None,
            cannot_list: false,
            timer: None,
            generation: 0,
            stats: QuotaStats::default(),
            corrections: Corrections::default(),
            grants: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<QuotaMsg>,
        message: QuotaMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if let (QuotaMsg::Acquire { .. }, Some(chaos)) = (&message, &state.config.chaos) {
            chaos.on_service_step("token-manager");
        }
        match message {
            QuotaMsg::Acquire {
                keys,
                cost,
                priority,
                deadline,
                reply,
            } => {
                state
                    .acquire(&myself, keys, cost, priority, deadline, reply)
                    .await
            }
            QuotaMsg::Observe { key, observation } => {
                state.observe(key, observation).await;
                state.pump(&myself).await;
            }
            QuotaMsg::Wake { generation } => {
                let current =
                    matches!(&state.timer, Some((_, scheduled, _)) if *scheduled == generation);
                if current {
                    state.timer = None;
                    state.stats.wakeups += 1;
                    state.pump(&myself).await;
                }
            }
            QuotaMsg::Stats(reply) => {
                state.stats.queued = state.queue.len();
                let _ = reply.send(state.stats);
            }
            QuotaMsg::Bucket { key, reply } => {
                let now = state.elapsed();
                let view = match &mut state.buckets {
                    Buckets::Local(local) => Ok(local.get(&key).map(|bucket| BucketView {
                        rate: bucket.rate(),
                        burst: bucket.burst(),
                        tokens: bucket.level(now),
                        reserve_share: bucket.reserve_share(),
                        configured_burst: bucket.burst(),
                        corrections: 0,
                        grants: 0,
                        window_room: bucket
                            .window()
                            .map(|cap| (cap.limit - bucket.window_used(now)).max(0.0)),
                    })),
                    Buckets::Redis(remote) => remote.view(&key).await,
                }
                .map(|view| {
                    view.map(|view| BucketView {
                        grants: state.grants.get(&key).copied().unwrap_or(0),
                        ..state.corrections.annotate(&key, view)
                    })
                });
                let _ = reply.send(view);
            }
            QuotaMsg::Buckets(reply) => {
                let now = state.elapsed();
                let views = match &mut state.buckets {
                    Buckets::Local(local) => Ok(local
                        .buckets
                        .iter()
                        .map(|(key, bucket)| {
                            let view = BucketView {
                                rate: bucket.rate(),
                                burst: bucket.burst(),
                                tokens: bucket.level(now),
                                reserve_share: bucket.reserve_share(),
                                configured_burst: bucket.burst(),
                                corrections: 0,
                                grants: 0,
                                window_room: bucket
                                    .window()
                                    .map(|cap| (cap.limit - bucket.window_used(now)).max(0.0)),
                            };
                            (key.clone(), view)
                        })
                        .collect()),
                    Buckets::Redis(remote) => {
                        let keys: Vec<BucketKey> = remote.known_keys();
                        remote.views(&keys).await
                    }
                };
                let (corrections, grants) = (&state.corrections, &state.grants);
                let _ = reply.send(views.map(|views| {
                    let mut views: Vec<(BucketKey, BucketView)> = views
                        .into_iter()
                        .map(|(key, view)| {
                            let view = BucketView {
                                grants: grants.get(&key).copied().unwrap_or(0),
                                ..corrections.annotate(&key, view)
                            };
                            (key, view)
                        })
                        .collect();
                    views.sort_by(|a, b| a.0.cmp(&b.0));
                    views
                }));
            }
            QuotaMsg::GetCooldown { scope, reply } => {
                let _ = reply.send(state.get_cooldown(&scope).await);
            }
            QuotaMsg::StartCooldown {
                scope,
                reason,
                until,
                detail,
                reply,
            } => {
                let result = state.start_cooldown(scope, reason, until, detail).await;
                let _ = reply.send(result);
                state.pump(&myself).await;
            }
            QuotaMsg::ClearCooldown { scope, reply } => {
                let _ = reply.send(state.clear_cooldown(&scope).await);
            }
            QuotaMsg::Forget { scope } => {
                // Unsaved cooldowns exist only in memory: forgetting them would end them.
                if state
                    .cooldowns
                    .get(&scope)
                    .is_some_and(|cached| !cached.unsaved)
                {
                    state.cooldowns.remove(&scope);
                    debug!(scope = %scope, "cooldown answer forgotten; the store is asked again");
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<QuotaMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, _, timer)) = state.timer.take() {
            timer.cancel();
        }
        for (_, reply) in state.replies.drain() {
            let _ = reply.send(Err(QuotaError::Stopped));
        }
        Ok(())
    }
}
