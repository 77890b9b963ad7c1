//! Tests of the quota model: the pure bucket and queue logic under proptest (time
//! injected), the actor on a [`ManualClock`] (wake-ups counted exactly), cooldowns in
//! SQLite, and Redis mode against a private `redis-server`.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::queue::{Outcome, Payer, Queue};
use super::*;
use crate::lock::testing::RedisServer;
use crate::store::SqliteLedger;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const FAR: Duration = Duration::from_secs(1_000_000);

// ---------------------------------------------------------------------------------------
// Pure logic: bucket + queue, event-driven simulation with injected time.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Arrival {
    at: Duration,
    keys: Vec<BucketKey>,
    cost: f64,
    priority: Priority,
}

#[derive(Debug, Clone)]
struct GrantRecord {
    id: u64,
    at: Duration,
    arrived: Duration,
    keys: Vec<BucketKey>,
    cost: f64,
    priority: Priority,
}

/// Runs `arrivals` (sorted by time) through a queue over `buckets`, jumping from event to
/// event (arrivals and the wake-ups the queue asks for). Returns the grants and the
/// number of wake-ups.
fn simulate(buckets: &mut LocalBuckets, arrivals: &[Arrival]) -> (Vec<GrantRecord>, usize) {
    let mut queue = Queue::new();
    let mut grants = Vec::new();
    let mut next_wake: Option<Duration> = None;
    let mut arrived = std::collections::HashMap::new();
    let mut index = 0;
    let mut wakes = 0;
    loop {
        let next_arrival = arrivals.get(index).map(|arrival| arrival.at);
        let now = match (next_arrival, next_wake) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(w)) => {
                wakes += 1;
                w
            }
            (Some(a), Some(w)) => {
                if w < a {
                    wakes += 1;
                }
                a.min(w)
            }
        };
        while let Some(arrival) = arrivals.get(index).filter(|arrival| arrival.at <= now) {
            let id = queue.push(
                arrival.keys.clone(),
                arrival.cost,
                arrival.priority,
                FAR,
                now,
            );
            arrived.insert(id, arrival.at);
            index += 1;
        }
        let served = queue
            .serve(buckets, now)
            .now_or_never()
            .expect("the local payer never awaits");
        for (id, pending, outcome) in served.outcomes {
            match outcome {
                Outcome::Granted { .. } => grants.push(GrantRecord {
                    id,
                    at: now,
                    arrived: arrived[&id],
                    keys: pending.keys,
                    cost: pending.cost,
                    priority: pending.priority,
                }),
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        if let Some(wake) = served.next_wake {
            assert!(wake > now, "a wake-up is always in the future");
        }
        next_wake = served.next_wake;
        assert!(wakes < 100_000, "the queue spins");
    }
    assert_eq!(queue.len(), 0, "everything is served in the end");
    (grants, wakes)
}

/// Over every window [t_i, t_j] between grants, what the grants naming `key` took is at
/// most `rate·(t_j - t_i) + burst`.
fn assert_window_bound(grants: &[GrantRecord], key: &BucketKey, spec: BucketSpec) {
    let mine: Vec<&GrantRecord> = grants.iter().filter(|g| g.keys.contains(key)).collect();
    for (i, first) in mine.iter().enumerate() {
        let mut taken = 0.0;
        for last in &mine[i..] {
            taken += last.cost;
            let window = (last.at - first.at).as_secs_f64();
            let bound = spec.rate * window + spec.burst;
            assert!(
                taken <= bound + 1e-6,
                "{key}: took {taken} in {window}s, bound {bound}"
            );
        }
    }
}

fn priority_strategy() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Manual),
        Just(Priority::Hot),
        Just(Priority::Background)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn granted_tokens_never_exceed_rate_times_window_plus_burst(
        rate_a in 0.2f64..5.0,
        burst_a in 1.0f64..10.0,
        rate_b in 0.2f64..5.0,
        burst_b in 1.0f64..10.0,
        raw in proptest::collection::vec(
            (0u64..20_000, 0usize..3, 0.05f64..1.0, priority_strategy()),
            1..60,
        ),
    ) {
        let a = BucketKey::new("p", "a", "s");
        let b = BucketKey::new("p", "b", "s");
        let spec_a = BucketSpec::new(rate_a, burst_a);
        let spec_b = BucketSpec::new(rate_b, burst_b);
        let mut buckets = LocalBuckets::new(DEFAULT_RESERVE_SHARE);
        buckets.ensure(&a, spec_a, Duration::ZERO);
        buckets.ensure(&b, spec_b, Duration::ZERO);
        let mut arrivals: Vec<Arrival> = raw
            .into_iter()
            .map(|(at_ms, which, share, priority)| {
                let keys = match which {
                    0 => vec![a.clone()],
                    1 => vec![b.clone()],
                    _ => vec![a.clone(), b.clone()],
                };
                // Any cost the narrowest bucket can hold.
                let cost = share * burst_a.min(burst_b);
                Arrival { at: Duration::from_millis(at_ms), keys, cost, priority }
            })
            .collect();
        arrivals.sort_by_key(|arrival| arrival.at);
        let (grants, _) = simulate(&mut buckets, &arrivals);
        prop_assert_eq!(grants.len(), arrivals.len());
        assert_window_bound(&grants, &a, spec_a);
        assert_window_bound(&grants, &b, spec_b);
    }

    #[test]
    fn priorities_are_served_in_order(
        rate in 0.2f64..5.0,
        burst in 1.0f64..10.0,
        raw in proptest::collection::vec((0.05f64..1.0, priority_strategy()), 1..40),
    ) {
        let key = BucketKey::new("p", "op", "s");
        let mut buckets = LocalBuckets::new(DEFAULT_RESERVE_SHARE);
        buckets.ensure(&key, BucketSpec::new(rate, burst), Duration::ZERO);
        // Empty bucket, everyone arrives at once: the order is decided by the queue alone.
        let empty = buckets.try_pay(std::slice::from_ref(&key), burst, false, Duration::ZERO)
            .now_or_never()
            .expect("the local payer never awaits");
        prop_assert!(matches!(empty, Ok(Ok(()))));
        let arrivals: Vec<Arrival> = raw
            .into_iter()
            .map(|(share, priority)| Arrival {
                at: Duration::ZERO,
                keys: vec![key.clone()],
                cost: share * burst,
                priority,
            })
            .collect();
        let (grants, _) = simulate(&mut buckets, &arrivals);
        prop_assert_eq!(grants.len(), arrivals.len());
        let mut expected: Vec<(Reverse<u16>, u64)> = grants
            .iter()
            .map(|grant| (Reverse(grant.priority.value()), grant.id))
            .collect();
        expected.sort();
        let served: Vec<(Reverse<u16>, u64)> = grants
            .iter()
            .map(|grant| (Reverse(grant.priority.value()), grant.id))
            .collect();
        prop_assert_eq!(served, expected);
    }

    #[test]
    fn reserve_holds_under_a_background_flood(
        rate in 0.5f64..5.0,
        burst in 5.0f64..20.0,
        flood in proptest::collection::vec((0u64..60_000, 0.05f64..0.5), 50..200),
        gaps in proptest::collection::vec((0u64..5_000, 0.1f64..1.0), 1..12),
    ) {
        let key = BucketKey::new("p", "op", "s");
        let mut buckets = LocalBuckets::new(DEFAULT_RESERVE_SHARE);
        buckets.ensure(&key, BucketSpec::new(rate, burst), Duration::ZERO);
        let reserve = DEFAULT_RESERVE_SHARE * burst;
        let one_refill = Duration::from_secs_f64(reserve / rate);
        let mut arrivals: Vec<Arrival> = flood
            .into_iter()
            .map(|(at_ms, share)| Arrival {
                at: Duration::from_millis(at_ms),
                keys: vec![key.clone()],
                cost: share * burst,
                priority: Priority::Background,
            })
            .collect();
        // Manual requests of at most the reserve, at least one reserve refill apart.
        let mut at = Duration::from_millis(500);
        for (extra_ms, share) in gaps {
            at += one_refill + Duration::from_millis(extra_ms);
            arrivals.push(Arrival {
                at,
                keys: vec![key.clone()],
                cost: share * reserve,
                priority: Priority::Manual,
            });
        }
        arrivals.sort_by_key(|arrival| arrival.at);
        let (grants, _) = simulate(&mut buckets, &arrivals);
        prop_assert_eq!(grants.len(), arrivals.len());
        // The flood never takes the reserve, and one reserve refill separates manual
        // requests: each one finds its tokens on arrival (well within one refill).
        for grant in grants.iter().filter(|grant| grant.priority == Priority::Manual) {
            let waited = grant.at - grant.arrived;
            prop_assert!(
                waited.is_zero() && waited <= one_refill,
                "manual request waited {:?}, one reserve refill is {:?}",
                waited,
                one_refill
            );
        }
        assert_window_bound(&grants, &key, BucketSpec::new(rate, burst));
    }
}

#[test]
fn a_waiting_head_is_not_asked_again_before_its_wait() {
    let key = BucketKey::new("p", "op", "s");
    let mut buckets = LocalBuckets::new(DEFAULT_RESERVE_SHARE);
    buckets.ensure(&key, BucketSpec::new(1.0, 1.0), Duration::ZERO);
    let arrivals: Vec<Arrival> = (0..10)
        .map(|_| Arrival {
            at: Duration::ZERO,
            keys: vec![key.clone()],
            cost: 1.0,
            priority: Priority::Manual,
        })
        .collect();
    let (grants, wakes) = simulate(&mut buckets, &arrivals);
    assert_eq!(grants.len(), 10);
    // One wake-up per refill, never more.
    assert_eq!(wakes, 9);
    assert_eq!(grants[9].at, secs(9));
}

// ---------------------------------------------------------------------------------------
// The actor, on a manual clock.
// ---------------------------------------------------------------------------------------

async fn start(config: QuotaConfig) -> (QuotaHandle, tokio::task::JoinHandle<()>) {
    let (actor, join) = TokenManager::spawn(config).await.expect("spawn");
    (QuotaHandle::new(actor), join)
}

async fn stop(handle: QuotaHandle, join: tokio::task::JoinHandle<()>) {
    handle.stop();
    let _ = join.await;
}

/// Waits (real time, bounded) until the manager's stats satisfy `ready`.
async fn stats_until(handle: &QuotaHandle, ready: impl Fn(&QuotaStats) -> bool) -> QuotaStats {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = handle.stats().await.expect("stats");
        if ready(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "stats never got there: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn spawn_acquire(
    handle: &QuotaHandle,
    keys: Vec<BucketKey>,
    cost: f64,
    priority: Priority,
    deadline: Instant,
) -> JoinHandle<Result<Grant, QuotaError>> {
    let handle = handle.clone();
    tokio::spawn(async move { handle.acquire(keys, cost, priority, deadline).await })
}

/// Advances `clock` in `step`s up to `total`, letting the manager handle each step's
/// wake-up; asserts at most one timer is ever outstanding.
async fn advance(clock: &ManualClock, handle: &QuotaHandle, total: Duration, step: Duration) {
    let mut moved = Duration::ZERO;
    while moved < total {
        let by = step.min(total - moved);
        clock.advance(by);
        moved += by;
        handle.stats().await.expect("stats");
        assert!(
            clock.pending_timers() <= 1,
            "more than one wake-up scheduled"
        );
    }
}

fn manual() -> (ManualClock, QuotaConfig) {
    let clock = ManualClock::new();
    let config = QuotaConfig::default().with_clock(Clock::Manual(clock.clone()));
    (clock, config)
}

#[tokio::test]
async fn keepa_negative_balance_grants_after_the_closed_form_wait_with_bounded_wakeups() {
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let key = BucketKey::new("keepa", "product", "acct");
    let started = clock.now();
    // Create the bucket, then report the negative balance of seed 004.
    assert_eq!(
        handle
            .acquire(vec![key.clone()], 1.0, Priority::Manual, started + secs(1))
            .await
            .map(|grant| grant.waited),
        Ok(Duration::ZERO)
    );
    handle.observe(
        key.clone(),
        Observation::Keepa {
            tokens_left: -30,
            refill_in_ms: 5000,
            refill_rate_per_min: 20.0,
        },
    );
    let pending = spawn_acquire(
        &handle,
        vec![key.clone()],
        1.0,
        Priority::Manual,
        started + secs(600),
    );
    stats_until(&handle, |stats| stats.queued == 1).await;
    advance(&clock, &handle, secs(200), secs(1)).await;
    let grant = pending.await.expect("join").expect("granted");
    let at = grant.granted_at - started;
    // |balance| / (20/60 per s) + refillIn = 95 s until the balance is back at zero; the
    // one token this request costs takes 3 s more.
    assert!(at >= secs(95), "granted too early: {at:?}");
    assert!(
        at <= secs(98) + Duration::from_millis(1),
        "granted late: {at:?}"
    );
    let stats = handle.stats().await.expect("stats");
    assert!(stats.wakeups <= 2, "woke {} times", stats.wakeups);
    assert_eq!(stats.grants, 2);
    assert_eq!(clock.pending_timers(), 0);
    stop(handle, join).await;
}

#[tokio::test]
async fn cost_above_burst_is_refused_at_once() {
    let (handle, join) = start(QuotaConfig::default()).await;
    let key = BucketKey::new("amazon", "createReport", "acme");
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        handle.acquire(
            vec![key.clone()],
            16.0,
            Priority::Manual,
            Instant::now() + secs(3600),
        ),
    )
    .await
    .expect("answered at once");
    assert_eq!(
        answer,
        Err(QuotaError::CostExceedsBurst {
            key,
            cost: 16.0,
            burst: 15.0
        })
    );
    assert_eq!(handle.stats().await.expect("stats").queued, 0);
    let unknown = handle
        .acquire(
            vec![BucketKey::new("nobody", "op", "s")],
            1.0,
            Priority::Manual,
            Instant::now() + secs(1),
        )
        .await;
    assert!(matches!(unknown, Err(QuotaError::UnknownBucket { .. })));
    stop(handle, join).await;
}

#[tokio::test]
async fn deadline_expiry_answers_deadline_exceeded() {
    let (clock, config) = manual();
    let config = config.with_spec("test", "slow", BucketSpec::new(0.001, 1.0));
    let (handle, join) = start(config).await;
    let key = BucketKey::new("test", "slow", "s");
    let started = clock.now();
    handle
        .acquire(vec![key.clone()], 1.0, Priority::Manual, started + secs(1))
        .await
        .expect("the first token is there");
    let pending = spawn_acquire(
        &handle,
        vec![key.clone()],
        1.0,
        Priority::Manual,
        started + secs(10),
    );
    stats_until(&handle, |stats| stats.queued == 1).await;
    advance(&clock, &handle, secs(30), secs(1)).await;
    let answer = pending.await.expect("join");
    assert_eq!(
        answer,
        Err(QuotaError::DeadlineExceeded {
            key,
            waited: secs(10)
        })
    );
    let stats = handle.stats().await.expect("stats");
    assert_eq!(stats.deadline_exceeded, 1);
    assert_eq!(stats.wakeups, 1);
    assert_eq!(stats.queued, 0);
    stop(handle, join).await;
}

#[tokio::test]
async fn priorities_are_served_in_order_by_the_actor() {
    let (clock, config) = manual();
    let config = config.with_spec("test", "op", BucketSpec::new(1.0, 1.0));
    let (handle, join) = start(config).await;
    let key = BucketKey::new("test", "op", "s");
    let started = clock.now();
    handle
        .acquire(vec![key.clone()], 1.0, Priority::Manual, started + secs(1))
        .await
        .expect("drains the bucket");
    let mut pending = Vec::new();
    for (queued, priority) in [Priority::Background, Priority::Hot, Priority::Manual]
        .into_iter()
        .enumerate()
    {
        pending.push(spawn_acquire(
            &handle,
            vec![key.clone()],
            1.0,
            priority,
            started + secs(60),
        ));
        stats_until(&handle, |stats| stats.queued == queued + 1).await;
    }
    advance(&clock, &handle, secs(5), Duration::from_millis(250)).await;
    let mut order = Vec::new();
    for task in pending {
        let grant = task.await.expect("join").expect("granted");
        order.push((grant.granted_at - started, grant.priority));
    }
    order.sort_by_key(|(at, _)| *at);
    let priorities: Vec<Priority> = order.iter().map(|(_, priority)| *priority).collect();
    assert_eq!(
        priorities,
        vec![Priority::Manual, Priority::Hot, Priority::Background]
    );
    assert_eq!(order[0].0, secs(1));
    assert_eq!(order[2].0, secs(3));
    assert_eq!(handle.stats().await.expect("stats").wakeups, 3);
    stop(handle, join).await;
}

#[tokio::test]
async fn header_learning_converges_to_the_observed_rate() {
    let (clock, config) = manual();
    // Configured wrong: 0.1/s where the provider says 2/s.
    let config = config.with_spec("amazon", "getReport", BucketSpec::new(0.1, 1.0));
    let (handle, join) = start(config).await;
    let key = BucketKey::new("amazon", "getReport", "acme");
    let started = clock.now();
    handle
        .acquire(vec![key.clone()], 1.0, Priority::Manual, started + secs(1))
        .await
        .expect("first call");
    handle.observe(key.clone(), Observation::RateLimitHeader(2.0));
    let view = handle
        .bucket(key.clone())
        .await
        .expect("view")
        .expect("bucket");
    assert_eq!(view.rate, 2.0);
    let pending = spawn_acquire(
        &handle,
        vec![key.clone()],
        1.0,
        Priority::Manual,
        started + secs(60),
    );
    stats_until(&handle, |stats| stats.queued == 1).await;
    advance(&clock, &handle, secs(2), Duration::from_millis(50)).await;
    let grant = pending.await.expect("join").expect("granted");
    // One token at the learned 2/s: 0.5 s, not the configured 10 s.
    assert_eq!(grant.granted_at - started, Duration::from_millis(500));
    // Repeated observations keep it there.
    for _ in 0..3 {
        handle.observe(key.clone(), Observation::RateLimitHeader(2.0));
    }
    let view = handle.bucket(key).await.expect("view").expect("bucket");
    assert_eq!(view.rate, 2.0);
    stop(handle, join).await;
}

#[tokio::test]
async fn throttled_starts_the_longer_of_configured_cooldown_and_retry_after() {
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let key = BucketKey::new("amazon", "createReport", "acme");
    let wall = clock.wall_now().timestamp();
    handle.observe(key.clone(), Observation::Throttled { retry_after: None });
    let cooldown = handle.cooldown("amazon:acme").await.expect("cooling down");
    assert_eq!(cooldown.reason, "quota");
    assert_eq!(cooldown.until_at - wall, 30 * 60);
    let answer = handle
        .acquire(
            vec![BucketKey::new("amazon", "getReport", "acme")],
            1.0,
            Priority::Manual,
            clock.now() + secs(1),
        )
        .await;
    assert!(
        matches!(&answer, Err(QuotaError::CoolingDown { scope, .. }) if scope == "amazon:acme"),
        "{answer:?}"
    );
    // Another account is not affected.
    handle
        .acquire(
            vec![BucketKey::new("amazon", "getReport", "other")],
            1.0,
            Priority::Manual,
            clock.now() + secs(1),
        )
        .await
        .expect("other account");
    handle.observe(
        key,
        Observation::Throttled {
            retry_after: Some(secs(2 * 3600)),
        },
    );
    let cooldown = handle.cooldown("amazon:acme").await.expect("cooling down");
    assert_eq!(cooldown.until_at - wall, 2 * 3600);
    assert!(handle.clear_cooldown("amazon:acme").await);
    assert_eq!(handle.cooldown("amazon:acme").await, None);
    stop(handle, join).await;
}

#[tokio::test]
async fn a_cooldown_answers_queued_requests_in_its_scope() {
    let (clock, config) = manual();
    let config = config.with_spec("test", "op", BucketSpec::new(0.01, 1.0));
    let (handle, join) = start(config).await;
    let key = BucketKey::new("test", "op", "acct");
    handle
        .acquire(
            vec![key.clone()],
            1.0,
            Priority::Manual,
            clock.now() + secs(1),
        )
        .await
        .expect("drain");
    let pending = spawn_acquire(
        &handle,
        vec![key.clone()],
        1.0,
        Priority::Manual,
        clock.now() + secs(600),
    );
    stats_until(&handle, |stats| stats.queued == 1).await;
    let until = clock.wall_now() + chrono::Duration::minutes(5);
    handle
        .start_cooldown("test", CooldownReason::Auth, until)
        .await
        .expect("started");
    let answer = pending.await.expect("join");
    assert!(
        matches!(&answer, Err(QuotaError::CoolingDown { scope, reason, .. }) if scope == "test" && reason == "auth"),
        "{answer:?}"
    );
    let stats = handle.stats().await.expect("stats");
    assert_eq!(stats.queued, 0);
    assert_eq!(clock.pending_timers(), 0);
    stop(handle, join).await;
}

#[tokio::test]
async fn cooldown_in_sqlite_survives_a_new_manager_and_clear_ends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let key = BucketKey::new("amazon", "createReport", "acme");
    let until = chrono::Utc::now() + chrono::Duration::minutes(30);
    {
        let ledger: Arc<dyn LedgerStore> = Arc::new(SqliteLedger::open(&path).expect("open"));
        let (handle, join) = start(QuotaConfig::default().with_ledger(ledger)).await;
        let cooldown = handle
            .start_cooldown(&key.account_scope(), CooldownReason::Quota, until)
            .await
            .expect("persisted");
        assert_eq!(cooldown.until_at, until.timestamp());
        stop(handle, join).await;
    }
    let ledger: Arc<dyn LedgerStore> = Arc::new(SqliteLedger::open(&path).expect("reopen"));
    let (handle, join) = start(QuotaConfig::default().with_ledger(ledger)).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        handle.acquire(
            vec![key.clone()],
            1.0,
            Priority::Manual,
            Instant::now() + secs(3600),
        ),
    )
    .await
    .expect("answered at once");
    match answer {
        Err(QuotaError::CoolingDown {
            scope,
            reason,
            until_utc,
        }) => {
            assert_eq!(scope, "amazon:acme");
            assert_eq!(reason, "quota");
            assert_eq!(until_utc.timestamp(), until.timestamp());
        }
        other => panic!("expected CoolingDown, got {other:?}"),
    }
    let seen = handle.cooldown("amazon:acme").await.expect("persisted");
    assert_eq!(seen.until_at, until.timestamp());
    assert!(handle.clear_cooldown("amazon:acme").await);
    assert_eq!(handle.cooldown("amazon:acme").await, None);
    handle
        .acquire(vec![key], 1.0, Priority::Manual, Instant::now() + secs(5))
        .await
        .expect("granted after clear");
    stop(handle, join).await;
}

#[tokio::test]
async fn multi_key_requests_pay_the_strictest_bucket() {
    let (clock, config) = manual();
    let config = config
        .with_spec("amazon", "getReport", BucketSpec::new(2.0, 2.0))
        .with_spec("amazon", "app", BucketSpec::new(0.5, 1.0));
    let (handle, join) = start(config).await;
    let pair = BucketKey::new("amazon", "getReport", "acme@app1");
    let app = BucketKey::new("amazon", "app", "app1");
    let started = clock.now();
    let keys = vec![pair.clone(), app.clone()];
    handle
        .acquire(keys.clone(), 1.0, Priority::Manual, started + secs(1))
        .await
        .expect("first");
    let pending = spawn_acquire(&handle, keys, 1.0, Priority::Manual, started + secs(60));
    stats_until(&handle, |stats| stats.queued == 1).await;
    advance(&clock, &handle, secs(3), Duration::from_millis(100)).await;
    let grant = pending.await.expect("join").expect("granted");
    // The pair bucket had a token left; the application bucket needs 2 s for one.
    assert_eq!(grant.granted_at - started, secs(2));
    stop(handle, join).await;
}

#[tokio::test]
async fn bench_grants_in_process_measures_something() {
    let rate = bench_grants(QuotaBackend::InProcess, 2_000)
        .await
        .expect("bench");
    assert!(rate > 0.0 && rate.is_finite(), "{rate}");
}

// ---------------------------------------------------------------------------------------
// Redis mode.
// ---------------------------------------------------------------------------------------

fn redis_config(server: &RedisServer, prefix: &str) -> QuotaConfig {
    QuotaConfig::new(QuotaBackend::Redis {
        url: server.url(),
        prefix: prefix.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_managers_together_stay_within_rate_times_window_plus_burst() {
    let server = RedisServer::start().expect("redis-server");
    let rate = 20.0;
    let burst = 5.0;
    let spec = BucketSpec::new(rate, burst);
    let (one, join_one) = start(redis_config(&server, "t1:").with_spec("test", "op", spec)).await;
    let (two, join_two) = start(redis_config(&server, "t1:").with_spec("test", "op", spec)).await;
    let key = BucketKey::new("test", "op", "shared");
    let started = std::time::Instant::now();
    let run_for = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for handle in [one.clone(), two.clone()] {
        for worker in 0..6 {
            let handle = handle.clone();
            let key = key.clone();
            let priority = if worker % 2 == 0 {
                Priority::Manual
            } else {
                Priority::Background
            };
            tasks.push(tokio::spawn(async move {
                let mut granted = Vec::new();
                while started.elapsed() < run_for {
                    let deadline = Instant::now() + Duration::from_millis(500);
                    match handle
                        .acquire(vec![key.clone()], 1.0, priority, deadline)
                        .await
                    {
                        Ok(_) => granted.push(started.elapsed()),
                        Err(QuotaError::DeadlineExceeded { .. }) => {}
                        Err(err) => panic!("unexpected {err}"),
                    }
                }
                granted
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("join"));
    }
    all.sort();
    let total = all.len() as f64;
    let window = all.last().copied().unwrap_or_default().as_secs_f64();
    // Measured from before the first request: the window Redis saw is inside it.
    assert!(
        total <= rate * window + burst + 1e-9,
        "{total} grants in {window}s exceed {rate}/s + {burst}"
    );
    assert!(
        total >= rate * window * 0.5,
        "only {total} grants in {window}s: the shared quota is not being used"
    );
    let stats_one = one.stats().await.expect("stats");
    let stats_two = two.stats().await.expect("stats");
    assert!(
        stats_one.grants > 0 && stats_two.grants > 0,
        "{stats_one:?} {stats_two:?}"
    );
    stop(one, join_one).await;
    stop(two, join_two).await;
}

#[tokio::test]
async fn redis_cooldowns_are_shared_and_cleared() {
    let server = RedisServer::start().expect("redis-server");
    let (one, join_one) = start(redis_config(&server, "t2:")).await;
    let (two, join_two) = start(redis_config(&server, "t2:")).await;
    let key = BucketKey::new("amazon", "getReport", "acme");
    two.acquire(
        vec![key.clone()],
        1.0,
        Priority::Manual,
        Instant::now() + secs(5),
    )
    .await
    .expect("before the cooldown");
    let until = chrono::Utc::now() + chrono::Duration::minutes(30);
    one.start_cooldown("amazon:acme", CooldownReason::Quota, until)
        .await
        .expect("stored");
    let answer = two
        .acquire(
            vec![key.clone()],
            1.0,
            Priority::Manual,
            Instant::now() + secs(5),
        )
        .await;
    assert!(
        matches!(&answer, Err(QuotaError::CoolingDown { scope, .. }) if scope == "amazon:acme"),
        "{answer:?}"
    );
    let seen = two
        .cooldown("amazon:acme")
        .await
        .expect("visible to the other daemon");
    assert_eq!(seen.until_at, until.timestamp());
    // The key carries an expiry at the cooldown's end.
    let client = ::redis::Client::open(server.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg("t2:cooldown:amazon:acme")
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(pttl > 29 * 60 * 1000 && pttl <= 30 * 60 * 1000, "{pttl}");
    assert!(two.clear_cooldown("amazon:acme").await);
    two.acquire(vec![key], 1.0, Priority::Manual, Instant::now() + secs(5))
        .await
        .expect("after clear");
    stop(one, join_one).await;
    stop(two, join_two).await;
}

#[tokio::test]
async fn redis_keepa_negative_balance_waits_in_one_step() {
    let server = RedisServer::start().expect("redis-server");
    let (handle, join) = start(redis_config(&server, "t3:")).await;
    let key = BucketKey::new("keepa", "product", "acct");
    handle
        .acquire(
            vec![key.clone()],
            1.0,
            Priority::Manual,
            Instant::now() + secs(5),
        )
        .await
        .expect("creates the bucket");
    // 600 tokens/min = 10/s; -2 tokens and 200 ms to the refill: 0.2 s + 3/10 s = 0.5 s.
    handle.observe(
        key.clone(),
        Observation::Keepa {
            tokens_left: -2,
            refill_in_ms: 200,
            refill_rate_per_min: 600.0,
        },
    );
    let view = handle
        .bucket(key.clone())
        .await
        .expect("view")
        .expect("bucket");
    assert_eq!(view.rate, 10.0);
    assert_eq!(view.burst, 36_000.0);
    let started = std::time::Instant::now();
    handle
        .acquire(vec![key], 1.0, Priority::Manual, Instant::now() + secs(5))
        .await
        .expect("granted");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    let stats = handle.stats().await.expect("stats");
    assert!(stats.wakeups <= 2, "{stats:?}");
    stop(handle, join).await;
}

#[tokio::test]
async fn redis_down_answers_unavailable_quickly() {
    let mut server = RedisServer::start().expect("redis-server");
    let url = server.url();
    server.stop();
    let (handle, join) = start(QuotaConfig::new(QuotaBackend::Redis {
        url,
        prefix: "t4:".to_string(),
    }))
    .await;
    let answer = tokio::time::timeout(
        Duration::from_secs(8),
        handle.acquire(
            vec![BucketKey::new("amazon", "getReport", "acme")],
            1.0,
            Priority::Manual,
            Instant::now() + secs(60),
        ),
    )
    .await
    .expect("answered before the deadline");
    assert!(
        matches!(answer, Err(QuotaError::Unavailable(_))),
        "{answer:?}"
    );
    stop(handle, join).await;
}

#[tokio::test]
async fn bench_grants_on_redis_measures_something() {
    let server = RedisServer::start().expect("redis-server");
    let rate = bench_grants(
        QuotaBackend::Redis {
            url: server.url(),
            prefix: "bench:".to_string(),
        },
        500,
    )
    .await
    .expect("bench");
    assert!(rate > 0.0 && rate.is_finite(), "{rate}");
}

#[test]
fn daily_and_hourly_budgets_never_exceed_their_window() {
    // rate·window + burst is the most any window can grant.
    let daily = default_spec("ebay", "getOrders").unwrap();
    assert!(daily.rate * 86_400.0 + daily.burst <= 100_000.0 + 1e-6);
    let hourly = default_spec("ebay", "getItem").unwrap();
    assert!(hourly.rate * 3_600.0 + hourly.burst <= 150.0 + 1e-6);
    let stockx = default_spec("stockx", "market").unwrap();
    assert!(stockx.rate * 3_600.0 + stockx.burst <= 100.0 + 1e-6);
}
