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

use super::local::LocalBuckets;
use super::queue::{Outcome, Payer, Queue};
use super::*;
use crate::bench::redis_server::RedisServer;
use crate::store::SqliteLedger;

mod actor;
mod redis_mode;

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
