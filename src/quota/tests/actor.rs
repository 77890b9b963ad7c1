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
