//! Tests of the TokenManager actor on a [`ManualClock`]: closed-form waits with counted
//! wake-ups, refusals, deadlines, priorities, learned rates, cooldowns (also in SQLite),
//! multi-key requests and the in-process grant benchmark.

use super::*;
use crate::store::LedgerStore;

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
async fn a_cap_starts_the_longer_of_configured_cooldown_and_retry_after() {
    // Issue 12: a single `Throttled` is a correction; a `Capped` (a spent budget) or
    // repeated 429s are the hard stop this test is about.
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let key = BucketKey::new("amazon", "createReport", "acme");
    let wall = clock.wall_now().timestamp();
    handle.observe(key.clone(), Observation::Capped { retry_after: None });
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
        Observation::Capped {
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
async fn an_ebay_cap_cools_only_the_api_that_was_refused() {
    // eBay's budgets are per API: a spent Post-Order quota stops searchReturns and
    // searchCases (the same API), and getOrders of the same account goes on. (Amazon's
    // stops the account, above.)
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let returns = BucketKey::new("ebay", "searchReturns", "shop");
    let wall = clock.wall_now().timestamp();
    handle.observe(
        returns.clone(),
        Observation::Capped {
            retry_after: Some(secs(5 * 3600)),
        },
    );
    let cooldown = handle
        .cooldown("ebay:shop:post_order")
        .await
        .expect("the API cools down");
    assert_eq!(
        (cooldown.reason.as_str(), cooldown.until_at - wall),
        ("quota", 5 * 3600)
    );
    assert_eq!(handle.cooldown("ebay:shop").await, None, "not the account");
    for operation in ["searchReturns", "searchCases"] {
        let refused = handle
            .acquire(
                vec![BucketKey::new("ebay", operation, "shop")],
                1.0,
                Priority::Manual,
                clock.now() + secs(1),
            )
            .await;
        assert!(
            matches!(&refused, Err(QuotaError::CoolingDown { scope, .. }) if scope == "ebay:shop:post_order"),
            "{operation}: {refused:?}"
        );
    }
    handle
        .acquire(
            vec![BucketKey::new("ebay", "getOrders", "shop")],
            1.0,
            Priority::Manual,
            clock.now() + secs(1),
        )
        .await
        .expect("getOrders of the same account is granted");
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

#[tokio::test]
async fn a_retry_after_beyond_any_date_cools_down_one_day_without_a_panic() {
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let key = BucketKey::new("amazon", "createReport", "acme");
    let wall = clock.wall_now().timestamp();
    // `DateTime + TimeDelta` with this overflowed and took the TokenManager down.
    handle.observe(
        key.clone(),
        Observation::Capped {
            retry_after: Some(Duration::MAX),
        },
    );
    let cooldown = handle.cooldown("amazon:acme").await.expect("cooling down");
    assert_eq!(cooldown.until_at - wall, crate::quota::MAX_COOLDOWN_SECS);
    // A caller asking for an end past the limit is clamped too.
    let far = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    let cooldown = handle
        .start_cooldown("amazon:other", CooldownReason::Quota, far)
        .await
        .expect("started");
    assert!(cooldown.until_at - wall <= crate::quota::MAX_COOLDOWN_SECS + 5);
    // Still serving.
    handle.stats().await.expect("the manager is alive");
    stop(handle, join).await;
}

#[tokio::test]
async fn absurd_keepa_balance_is_clamped_and_the_manager_keeps_serving() {
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let key = BucketKey::new("keepa", "product", "acct");
    handle
        .acquire(
            vec![key.clone()],
            1.0,
            Priority::Manual,
            clock.now() + secs(1),
        )
        .await
        .expect("first grant");
    handle.observe(
        key.clone(),
        Observation::Keepa {
            tokens_left: i64::MIN,
            refill_in_ms: u64::MAX,
            refill_rate_per_min: f64::INFINITY,
        },
    );
    // A request with a short deadline is answered (expired), not lost in an overflow.
    let answer = handle
        .acquire(
            vec![key.clone()],
            1.0,
            Priority::Manual,
            clock.now() + secs(1),
        )
        .await;
    assert!(answer.is_err(), "{answer:?}");
    handle.stats().await.expect("the manager is alive");
    stop(handle, join).await;
}

#[tokio::test]
async fn a_persisted_cooldown_ending_out_of_range_is_repaired_on_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.db");
    let ledger = Arc::new(SqliteLedger::open(&path).expect("open"));
    ledger
        .set_cooldown(&crate::store::Cooldown {
            scope: "amazon:acme".to_string(),
            reason: "quota".to_string(),
            started_at: i64::MIN,
            until_at: i64::MAX,
            detail: None,
        })
        .expect("a corrupt row");
    let store: Arc<dyn LedgerStore> = ledger.clone();
    let (handle, join) = start(QuotaConfig::default().with_ledger(store)).await;
    let now = chrono::Utc::now().timestamp();
    let answer = handle
        .acquire(
            vec![BucketKey::new("amazon", "createReport", "acme")],
            1.0,
            Priority::Manual,
            Instant::now() + secs(5),
        )
        .await;
    match answer {
        Err(QuotaError::CoolingDown { until_utc, .. }) => {
            assert!(until_utc.timestamp() <= now + crate::quota::MAX_COOLDOWN_SECS + 5);
        }
        other => panic!("expected a repaired cooldown, got {other:?}"),
    }
    let stored = ledger
        .active_cooldown("amazon:acme", now)
        .expect("read")
        .expect("still cooling down");
    assert!(
        stored.until_at <= now + crate::quota::MAX_COOLDOWN_SECS + 5,
        "{stored:?}"
    );
    assert!(
        stored.started_at <= now && stored.started_at >= now - crate::quota::MAX_COOLDOWN_SECS - 5
    );
    stop(handle, join).await;
}

#[test]
fn keepa_values_and_cooldown_ends_are_bounded() {
    use crate::quota::{bounded_cooldown_end, KeepaValues, MAX_COOLDOWN_SECS};
    let wild = KeepaValues::bounded(i64::MIN, u64::MAX, 1e300);
    assert_eq!(
        (
            wild.tokens_left,
            wild.refill_in_ms,
            wild.refill_rate_per_min,
            wild.clamped
        ),
        (-1_000_000, 3_600_000, 100_000.0, true)
    );
    let nan = KeepaValues::bounded(5, 0, f64::NAN);
    assert_eq!(nan.refill_rate_per_min, crate::quota::KEEPA_MIN_REFILL_RATE);
    let sane = KeepaValues::bounded(-30, 5000, 20.0);
    assert!(!sane.clamped);
    assert_eq!(
        bounded_cooldown_end(i64::MAX, 1000),
        Some(1000 + MAX_COOLDOWN_SECS)
    );
    assert_eq!(bounded_cooldown_end(2000, 1000), None);
    assert_eq!(bounded_cooldown_end(i64::MAX, i64::MAX), None);
}

#[tokio::test]
async fn a_single_429_corrects_the_bucket_and_starts_no_cooldown() {
    let (clock, config) = manual();
    let config = config.with_spec("amazon", "createReport", BucketSpec::new(1.0, 15.0));
    let (handle, join) = start(config).await;
    let key = BucketKey::new("amazon", "createReport", "acme");
    for _ in 0..11 {
        handle
            .acquire(
                vec![key.clone()],
                1.0,
                Priority::Manual,
                clock.now() + secs(1),
            )
            .await
            .expect("granted");
    }
    handle.observe(key.clone(), Observation::Throttled { retry_after: None });
    let view = handle
        .bucket(key.clone())
        .await
        .expect("view")
        .expect("bucket");
    assert_eq!(view.burst, 10.0, "{view:?}");
    assert_eq!(view.configured_burst, 15.0);
    assert_eq!(view.corrections, 1);
    assert!(view.tokens <= 0.0, "{view:?}");
    assert_eq!(handle.cooldown("amazon:acme").await, None);
    let listed = handle.buckets().await.expect("buckets");
    assert_eq!(listed[0].1.corrections, 1);
    // The retry is granted one token interval later, not after a cooldown.
    let started = clock.now();
    let pending = spawn_acquire(
        &handle,
        vec![key.clone()],
        1.0,
        Priority::Manual,
        started + secs(10),
    );
    stats_until(&handle, |stats| stats.queued == 1).await;
    advance(&clock, &handle, secs(2), Duration::from_millis(50)).await;
    let grant = pending.await.expect("join").expect("granted");
    assert_eq!(grant.granted_at - started, secs(1));
    stop(handle, join).await;
}

#[tokio::test]
async fn three_429s_within_ten_minutes_for_one_bucket_escalate_to_the_hard_stop() {
    let (clock, config) = manual();
    let (handle, join) = start(config).await;
    let key = BucketKey::new("amazon", "createReport", "acme");
    let wall = clock.wall_now().timestamp();
    for _ in 0..2 {
        handle.observe(key.clone(), Observation::Throttled { retry_after: None });
    }
    assert_eq!(handle.cooldown("amazon:acme").await, None);
    handle.observe(key.clone(), Observation::Throttled { retry_after: None });
    let cooldown = handle.cooldown("amazon:acme").await.expect("escalated");
    assert_eq!(cooldown.reason, "quota");
    assert_eq!(cooldown.until_at - wall, 30 * 60);
    stop(handle, join).await;
}

/// A cooldown store that counts what it is asked, over a real SQLite ledger.
struct CountingStore {
    ledger: Arc<dyn LedgerStore>,
    /// Whether it answers [`CooldownStore::all_active`] (as the ledger does) or not (as
    /// Redis does).
    lists: bool,
    per_scope: std::sync::atomic::AtomicUsize,
    listings: std::sync::atomic::AtomicUsize,
}

impl CooldownStore for CountingStore {
    fn set<'a>(
        &'a self,
        cooldown: &'a crate::store::Cooldown,
    ) -> futures_util::future::BoxFuture<'a, Result<(), QuotaError>> {
        self.ledger.set(cooldown)
    }

    fn active<'a>(
        &'a self,
        scope: &'a str,
        now: i64,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<crate::store::Cooldown>, QuotaError>>
    {
        self.per_scope
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.ledger.active(scope, now)
    }

    fn clear<'a>(
        &'a self,
        scope: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<bool, QuotaError>> {
        self.ledger.clear(scope)
    }

    fn all_active(
        &self,
        now: i64,
    ) -> futures_util::future::BoxFuture<'_, Result<Option<Vec<crate::store::Cooldown>>, QuotaError>>
    {
        if !self.lists {
            return Box::pin(async { Ok(None) });
        }
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.ledger.all_active(now)
    }
}

/// Many accounts' first calls cost one read of the store's cooldowns per
/// `cooldown_recheck`, not one per scope (the actor awaited each, and every grant of every
/// account waited behind them); a cooldown another process writes is still seen once the
/// recheck is due; a store that cannot list is asked per scope, as before.
#[tokio::test]
async fn running_cooldowns_are_read_once_per_recheck_not_once_per_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger: Arc<dyn LedgerStore> =
        Arc::new(SqliteLedger::open(&dir.path().join("ledger.db")).expect("open"));
    for lists in [true, false] {
        let (clock, mut config) = manual();
        let store = Arc::new(CountingStore {
            ledger: ledger.clone(),
            lists,
            per_scope: Default::default(),
            listings: Default::default(),
        });
        config.cooldown_store = Some(store.clone());
        let recheck = config.cooldown_recheck;
        let (handle, join) = start(config).await;
        let accounts: Vec<String> = (0..40).map(|n| format!("acct-{lists}-{n}")).collect();
        for account in &accounts {
            handle
                .acquire(
                    vec![BucketKey::new("amazon", "getReport", account)],
                    1.0,
                    Priority::Background,
                    Instant::now() + secs(5),
                )
                .await
                .expect("granted: no cooldown runs");
        }
        let per_scope = store.per_scope.load(std::sync::atomic::Ordering::SeqCst);
        let listings = store.listings.load(std::sync::atomic::Ordering::SeqCst);
        if lists {
            assert_eq!((listings, per_scope), (1, 0), "one listing for 40 accounts");
        } else {
            // The provider's scope once, then each account's and each bucket's.
            assert_eq!((listings, per_scope), (0, 81));
        }
        // Another process (the sync runner, `marketsync` on the same file) starts a
        // cooldown for one of them: seen once the recheck is due, not before.
        let now = chrono::Utc::now().timestamp();
        let cooling = &accounts[7];
        ledger
            .set_cooldown(&crate::store::Cooldown {
                scope: crate::store::account_scope("amazon", cooling),
                reason: "quota".to_string(),
                started_at: now,
                until_at: now + 600,
                detail: None,
            })
            .expect("written by another process");
        let ask = |account: &String| {
            handle.acquire(
                vec![BucketKey::new("amazon", "getReport", account)],
                1.0,
                Priority::Background,
                Instant::now() + secs(5),
            )
        };
        ask(cooling)
            .await
            .expect("within the recheck: the cached answer");
        clock.advance(recheck + secs(1));
        match ask(cooling).await {
            Err(QuotaError::CoolingDown { scope, .. }) => {
                assert_eq!(scope, crate::store::account_scope("amazon", cooling));
            }
            other => panic!("expected the other process's cooldown, got {other:?}"),
        }
        ask(&accounts[8])
            .await
            .expect("its neighbour is not cooling");
        if lists {
            assert_eq!(store.listings.load(std::sync::atomic::Ordering::SeqCst), 2);
            assert_eq!(store.per_scope.load(std::sync::atomic::Ordering::SeqCst), 0);
        }
        assert!(
            handle
                .clear_cooldown(&crate::store::account_scope("amazon", cooling))
                .await
        );
        ask(cooling).await.expect("granted once cleared");
        stop(handle, join).await;
    }
}
