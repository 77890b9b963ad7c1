//! Leases across real processes: two daemons on one SQLite file and one private
//! redis-server, the zombie-lock regression through a real dump.rdb reload, and Redis
//! restarting under a running daemon.

use std::time::{Duration, Instant};

use marketsync::bench::redis_server::RedisServer;
use marketsync::lock::{local_hostname, Lease};
use marketsync::sim::SimConfig;

use crate::common::{applied_hours, status_json, wait_until, DaemonProcess, Fixture, TestSim};

/// (claim id, owner, fence) of every claim, in claim order.
fn claim_history(fixture: &Fixture) -> Vec<(i64, String, Option<i64>)> {
    let ledger = fixture.open_ledger();
    ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare("SELECT id, claimed_by, fence FROM ledger_claims ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    })
}

fn redis_globals(redis: &RedisServer, ttl: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n[locks]\nttl = \"{ttl}\"\nhygiene_interval = \"1s\"\n",
        redis.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_never_work_one_scope_at_once_and_take_over_after_sigkill() {
    let redis = RedisServer::start().expect("redis-server");
    // Slow reports so a run spans several seconds and the holder dies mid-run.
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::from_millis(700),
        ..SimConfig::default()
    })
    .await;
    let fixture = Fixture::with_globals(
        &sim,
        &redis_globals(&redis, "3s"),
        // One window in flight at a time, so the holder dies with claims still to make.
        "lookback = \"48h\"\ninterval = \"1s\"\npoll_min = \"200ms\"\npoll_max = \"400ms\"\nmax_in_flight = 1",
    );
    let mut first = DaemonProcess::spawn(&fixture.config_path);
    let mut second = DaemonProcess::spawn(&fixture.config_path);

    // Wait for the first applied chunk, then SIGKILL whichever daemon holds the lease.
    let started = wait_until(Duration::from_secs(30), || {
        applied_hours(&fixture.config_path) >= 6
    })
    .await;
    assert!(
        started,
        "first chunk applied; logs:\n{}\n{}",
        first.logs(),
        second.logs()
    );
    let history = claim_history(&fixture);
    let holder = history.last().unwrap().1.clone();
    let (victim, survivor) = if holder.contains(&format!(":{}@", first.pid())) {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    victim.signal("KILL");
    let killed_at = Instant::now();
    assert!(victim.wait_exit(Duration::from_secs(5)).await.is_some());

    // The survivor takes over within TTL + one renew interval (plus process slack).
    let survivor_tag = format!(":{}@", survivor.pid());
    let took_over = wait_until(Duration::from_secs(15), || {
        claim_history(&fixture)
            .iter()
            .any(|(_, owner, _)| owner.contains(&survivor_tag))
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        took_over,
        "survivor never claimed; logs:\n{}",
        survivor.logs()
    );
    assert!(
        takeover <= Duration::from_secs(3 + 1 + 3),
        "takeover took {takeover:?}, expected about ttl (3s) + renew interval (1s)"
    );
    let converged = wait_until(Duration::from_secs(60), || {
        applied_hours(&fixture.config_path) == 48
    })
    .await;
    assert!(converged, "all hours applied; logs:\n{}", survivor.logs());

    // Never two owners at once: claims by owner form runs with strictly growing fences,
    // and the killed holder never claims again after the survivor's first claim.
    let history = claim_history(&fixture);
    let mut previous_fence = 0;
    for (_, _, fence) in &history {
        let fence = fence.expect("every daemon claim carries a fence");
        assert!(fence >= previous_fence, "fences go backwards: {history:?}");
        previous_fence = fence;
    }
    let first_survivor = history
        .iter()
        .position(|(_, owner, _)| owner.contains(&survivor_tag))
        .unwrap();
    assert!(
        history[first_survivor..]
            .iter()
            .all(|(_, owner, _)| owner.contains(&survivor_tag)),
        "the killed holder's claims interleave with the survivor's: {history:?}"
    );
    survivor.signal("TERM");
    assert_eq!(
        survivor.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}

/// Writes a lease as a previous incarnation of this host left it, with `ttl_ms` (None:
/// no expiry at all), saves the dump and restarts redis-server from it.
async fn plant_zombie_and_reload(redis: &mut RedisServer, ttl_ms: Option<u64>) -> String {
    let owner = format!("auto-sync:999999@{}", local_hostname().unwrap_or_default());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let lease = Lease {
        scope: "acct/vendor_rt_sales".to_string(),
        owner: owner.clone(),
        token: "0123456789abcdef0123456789abcdef".to_string(),
        fence: 7,
        acquired_at_ms: now_ms,
        expires_at_ms: now_ms + ttl_ms.unwrap_or(864_000_000) as i64,
    };
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = "marketsync:lock:acct/vendor_rt_sales";
    let value = serde_json::to_string(&lease).unwrap();
    let mut set = redis::cmd("SET");
    set.arg(key).arg(&value);
    if let Some(ttl) = ttl_ms {
        set.arg("PX").arg(ttl);
    }
    let _: () = set.query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    drop(conn);
    redis.restart().expect("restart redis-server from its dump");

    // The dump brought the lock back exactly as written.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    match ttl_ms {
        Some(ttl) => assert!(
            pttl > (ttl as i64) - 60_000,
            "ttl survived the reload: {pttl}"
        ),
        None => assert_eq!(pttl, -1, "no ttl after the reload"),
    }
    owner
}

async fn assert_zombie_is_repaired_and_sync_resumes(ttl_ms: Option<u64>) {
    let mut redis = RedisServer::start().expect("redis-server");
    let owner = plant_zombie_and_reload(&mut redis, ttl_ms).await;
    let sim = TestSim::start(crate::common::fast_sim()).await;
    let fixture = Fixture::with_globals(&sim, &redis_globals(&redis, "15m"), "lookback = \"6h\"");
    let mut daemon = DaemonProcess::spawn(&fixture.config_path);
    let applied = wait_until(Duration::from_secs(20), || {
        applied_hours(&fixture.config_path) == 6
    })
    .await;
    let logs = daemon.logs();
    assert!(
        applied,
        "hours applied within seconds of start; logs:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|line| line.contains("repaired lock") && line.contains(&owner)),
        "a log line names the replaced owner {owner}; logs:\n{logs}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_lock_with_a_ten_day_ttl_from_a_dump_is_repaired_at_startup() {
    assert_zombie_is_repaired_and_sync_resumes(Some(864_000_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_lock_without_any_ttl_is_repaired_at_startup() {
    assert_zombie_is_repaired_and_sync_resumes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_does_not_crash_and_work_resumes() {
    let mut redis = RedisServer::start().expect("redis-server");
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await;
    let fixture = Fixture::with_globals(
        &sim,
        &redis_globals(&redis, "3s"),
        "lookback = \"48h\"\ninterval = \"1s\"\npoll_min = \"200ms\"\npoll_max = \"400ms\"",
    );
    let mut daemon = DaemonProcess::spawn(&fixture.config_path);
    assert!(
        wait_until(Duration::from_secs(30), || applied_hours(
            &fixture.config_path
        ) >= 6)
        .await
    );

    redis.stop();
    // While Redis is down the daemon stays up and says why work waits.
    let waiting = wait_until(Duration::from_secs(20), || {
        status_json(&fixture.config_path)
            .map(|status| {
                status["accounts"][0]["streams"][0]["cooldown"]["reason"] == "lock_unavailable"
            })
            .unwrap_or(false)
    })
    .await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "daemon still running; logs:\n{}",
        daemon.logs()
    );
    redis.restart().expect("redis back");
    let converged = wait_until(Duration::from_secs(60), || {
        applied_hours(&fixture.config_path) == 48
    })
    .await;
    let logs = daemon.logs();
    assert!(
        waiting,
        "status showed lock_unavailable while redis was down; logs:\n{logs}"
    );
    assert!(
        converged,
        "work resumed after redis returned; logs:\n{logs}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_command_lists_and_releases_stale_leases_and_live_ones_only_with_force() {
    use marketsync::lock::LockService;
    let sim = TestSim::start(crate::common::fast_sim()).await;
    // No [redis]: the SQLite lease backend in the ledger's file.
    let fixture = Fixture::new(&sim, "lookback = \"6h\"");
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    let scope = "acct/vendor_rt_sales";
    let lease = locks
        .acquire(scope, "backfill:4242@elsewhere", Duration::from_secs(600))
        .await
        .unwrap();

    let run = |args: &[&str]| {
        crate::common::marketsync()
            .arg("--config")
            .arg(&fixture.config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let listed = run(&["locks", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["scope"], scope);
    assert_eq!(listed[0]["owner"], "backfill:4242@elsewhere");
    assert_eq!(listed[0]["stale"], false);
    let table = String::from_utf8(run(&["locks"]).stdout).unwrap();
    assert!(
        table.starts_with("SCOPE") && table.contains("backfill:4242@elsewhere"),
        "{table}"
    );

    // status shows the lease and why the stream waits.
    let status = status_json(&fixture.config_path).unwrap();
    let stream = &status["accounts"][0]["streams"][0];
    assert_eq!(stream["lock"]["owner"], "backfill:4242@elsewhere");
    assert_eq!(stream["lock"]["stale"], false);

    // A live lease is not released without --force, and the refusal names its owner.
    let refused = run(&["locks", "release", scope]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("held by a live lease of backfill:4242@elsewhere")
            && stderr.contains("--force"),
        "{stderr}"
    );
    let forced = run(&["locks", "release", scope, "--force"]);
    assert!(forced.status.success());
    assert!(String::from_utf8_lossy(&forced.stdout)
        .contains("owner backfill:4242@elsewhere, fence 1, was live"));
    assert!(
        locks.renew(&lease, Duration::from_secs(600)).await.is_err(),
        "the old holder lost it"
    );

    // A stale lease is released without --force.
    let short = locks
        .acquire(scope, "backfill:4243@elsewhere", Duration::from_secs(1))
        .await
        .unwrap();
    let stale = wait_until(Duration::from_secs(10), || {
        status_json(&fixture.config_path)
            .map(|status| status["accounts"][0]["streams"][0]["lock"]["stale"] == true)
            .unwrap_or(false)
    })
    .await;
    assert!(stale, "the expired lease shows stale");
    let released = run(&["locks", "release", scope]);
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    assert!(String::from_utf8_lossy(&released.stdout)
        .contains(&format!("fence {}, stale", short.fence)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lease_shows_as_lock_busy_in_status() {
    use marketsync::lock::LockService;
    let sim = TestSim::start(crate::common::fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"");
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    let _held = locks
        .acquire(
            "acct/vendor_rt_sales",
            "fill-day:4242@elsewhere",
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, tokio_util::sync::CancellationToken::new());
    let outcome = context
        .run_leased(
            &marketsync::lock::keeper::LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
                .await
                .unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        matches!(&outcome, marketsync::shapes::LeasedOutcome::Busy { holder, .. } if holder == "fill-day:4242@elsewhere"),
        "{outcome:?}"
    );
    assert_eq!(
        sim.stats().calls("createReport"),
        0,
        "no provider call without the lease"
    );
    let status = status_json(&fixture.config_path).unwrap();
    let cooldown = &status["accounts"][0]["streams"][0]["cooldown"];
    assert_eq!(cooldown["reason"], "lock_busy");
    assert!(cooldown["until_utc"].is_string());
}

/// Regression (issue 11): `lock_takeovers_total` was documented but only ever counted by
/// a test; a runner that takes over an expired lease of another owner counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_over_an_expired_lease_counts_a_lock_takeover() {
    use marketsync::lock::LockService;
    let sim = TestSim::start(crate::common::fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"");
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    let scope = "acct/vendor_rt_sales";
    locks
        .acquire(scope, "backfill:4243@elsewhere", Duration::from_millis(200))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = locks.list().await.unwrap();
        if all.iter().any(|info| info.scope == scope && info.stale) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other owner's lease expires"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, tokio_util::sync::CancellationToken::new());
    assert_eq!(context.metrics.lock_takeovers(scope), 0);
    let outcome = context
        .run_leased(
            &marketsync::lock::keeper::LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
                .await
                .unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, marketsync::shapes::LeasedOutcome::Ran(_)),
        "{outcome:?}"
    );
    assert_eq!(context.metrics.lock_takeovers(scope), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_shows_lock_unavailable_and_work_starts_when_it_returns() {
    let mut redis = RedisServer::start().expect("redis-server");
    let sim = TestSim::start(crate::common::fast_sim()).await;
    let fixture = Fixture::with_globals(&sim, &redis_globals(&redis, "15m"), "lookback = \"6h\"");
    redis.stop();
    let daemon = DaemonProcess::spawn(&fixture.config_path);
    let waiting = wait_until(Duration::from_secs(20), || {
        status_json(&fixture.config_path)
            .map(|status| {
                status["accounts"][0]["streams"][0]["cooldown"]["reason"] == "lock_unavailable"
            })
            .unwrap_or(false)
    })
    .await;
    assert!(
        waiting,
        "status says lock_unavailable while redis is down; logs:\n{}",
        daemon.logs()
    );
    assert_eq!(applied_hours(&fixture.config_path), 0);
    redis.restart().expect("redis back");
    let applied = wait_until(Duration::from_secs(60), || {
        applied_hours(&fixture.config_path) == 6
    })
    .await;
    assert!(
        applied,
        "work started once redis returned; logs:\n{}",
        daemon.logs()
    );
    let status = status_json(&fixture.config_path).unwrap();
    assert_eq!(
        status["accounts"][0]["streams"][0]["cooldown"]["reason"], "none",
        "{status:#}"
    );
}
