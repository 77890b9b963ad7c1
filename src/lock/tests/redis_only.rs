//! Redis-only lease tests: the documented JSON keys, prefix isolation, the zombie lock of
//! seed 004 surviving a restart, Redis going away and coming back, and URL credentials.

use super::*;

#[tokio::test]
async fn redis_lease_is_readable_json_under_documented_keys() {
    let h = Harness::redis().await;
    let lease = h
        .svc
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    let mut conn = h.redis_conn().await;
    let raw: String = conn.get("test:lock:acme/orders").await.expect("lock key");
    let stored: Lease = serde_json::from_str(&raw).expect("lease json");
    assert_eq!(stored, lease);
    // The script writes exactly what serde would: same field order, integers, escapes.
    assert_eq!(raw, serde_json::to_string(&lease).expect("json"));
    let odd = h
        .svc
        .acquire("ünï \"côde\"/orders", "auto-sync:1@wéb1", LONG)
        .await
        .expect("acquire an odd scope");
    let raw: String = conn
        .get("test:lock:ünï \"côde\"/orders")
        .await
        .expect("odd lock key");
    assert_eq!(raw, serde_json::to_string(&odd).expect("json"));
    assert_eq!(odd.scope, "ünï \"côde\"/orders");
    let fence: u64 = conn.get("test:fence:acme/orders").await.expect("fence key");
    assert_eq!(fence, lease.fence);
    let pttl: i64 = conn.pttl("test:lock:acme/orders").await.expect("pttl");
    assert!(pttl > 0 && pttl <= LONG.as_millis() as i64, "{pttl}");
    let fence_ttl: i64 = conn.pttl("test:fence:acme/orders").await.expect("pttl");
    assert_eq!(fence_ttl, -1, "the fence counter never expires");
    // Expiry is computed from Redis TIME.
    let now = redis_now_ms(&mut conn).await;
    assert!((lease.acquired_at_ms - now).abs() < 5_000);
}

#[tokio::test]
async fn redis_prefixes_are_isolated_and_globs_escaped() {
    let server = RedisServer::start().expect("start redis-server");
    let plain = LockService::Redis(
        RedisLocks::connect(&server.url(), "app:")
            .await
            .expect("connect"),
    );
    let globby = LockService::Redis(
        RedisLocks::connect(&server.url(), "a*p:")
            .await
            .expect("connect"),
    );
    plain
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    globby
        .acquire("acme/orders", "b:2@h2", LONG)
        .await
        .expect("acquire");
    let listed = globby.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].owner, "b:2@h2");
    assert_eq!(plain.list().await.expect("list").len(), 1);
}

#[tokio::test]
async fn redis_zombie_lock_survives_restart_and_is_repaired() {
    const TEN_DAYS_MS: i64 = 864_000_000;
    let mut h = Harness::redis().await;
    let dead_owner = dead_local_owner();
    let remote_owner = "backfill:4242@some-other-host";
    {
        let mut conn = h.redis_conn().await;
        let now = redis_now_ms(&mut conn).await;
        let with_long_ttl = Lease {
            scope: "acme/orders".into(),
            owner: dead_owner.clone(),
            token: format!("{:032x}", 1u128),
            fence: 7,
            acquired_at_ms: now - 3_600_000,
            expires_at_ms: now + TEN_DAYS_MS,
        };
        let without_ttl = Lease {
            scope: "acme/returns".into(),
            owner: remote_owner.into(),
            token: format!("{:032x}", 2u128),
            fence: 3,
            acquired_at_ms: now - 3_600_000,
            expires_at_ms: now + TEN_DAYS_MS,
        };
        let () = ::redis::cmd("SET")
            .arg("test:lock:acme/orders")
            .arg(serde_json::to_string(&with_long_ttl).expect("json"))
            .arg("PX")
            .arg(TEN_DAYS_MS)
            .query_async(&mut conn)
            .await
            .expect("set long ttl");
        let () = conn.set("test:fence:acme/orders", 7).await.expect("fence");
        let () = conn
            .set(
                "test:lock:acme/returns",
                serde_json::to_string(&without_ttl).expect("json"),
            )
            .await
            .expect("set no ttl");
    }
    let healthy = h
        .svc
        .acquire("acme/settlements", "auto-sync:1@web1", LONG)
        .await
        .expect("healthy lease");
    {
        let mut conn = h.redis_conn().await;
        let () = ::redis::cmd("SAVE")
            .query_async(&mut conn)
            .await
            .expect("SAVE");
    }
    assert!(h
        .redis
        .as_ref()
        .expect("redis")
        .server
        .dir()
        .join("dump.rdb")
        .exists());

    // The restart of seed 004: the dump brings the locks back exactly as written.
    h.redis
        .as_mut()
        .expect("redis")
        .server
        .restart()
        .expect("restart");
    let mut conn = h.redis_conn().await;
    let pttl: i64 = conn.pttl("test:lock:acme/orders").await.expect("pttl");
    assert!(
        pttl > TEN_DAYS_MS - 600_000 && pttl <= TEN_DAYS_MS,
        "{pttl}"
    );
    let pttl: i64 = conn.pttl("test:lock:acme/returns").await.expect("pttl");
    assert_eq!(pttl, -1);
    // The service's connection manager reconnects on its own; the zombies block.
    wait_until("the lock service to reconnect", DEADLINE, || async {
        h.svc.list().await.is_ok()
    })
    .await;
    let listed = h.svc.list().await.expect("list");
    let returns = listed
        .iter()
        .find(|info| info.scope == "acme/returns")
        .expect("listed");
    assert_eq!(returns.expires_at_ms, None, "no expiry: a zombie");
    assert!(matches!(
        h.svc.acquire("acme/orders", "auto-sync:2@web1", LONG).await,
        Err(LockError::Busy { .. })
    ));

    let mut repairs = h.svc.repair(MAX_TTL).await.expect("repair");
    repairs.sort_by(|a, b| a.scope.cmp(&b.scope));
    assert_eq!(repairs.len(), 2, "{repairs:?}");
    assert_eq!(repairs[0].scope, "acme/orders");
    assert_eq!(repairs[0].replaced_owner, dead_owner);
    assert_eq!(repairs[0].action, RepairAction::Deleted);
    let previous = repairs[0].previous_ttl_ms.expect("had a ttl");
    assert!(previous > TEN_DAYS_MS - 600_000, "{previous}");
    assert_eq!(repairs[1].scope, "acme/returns");
    assert_eq!(repairs[1].replaced_owner, remote_owner);
    assert_eq!(repairs[1].action, RepairAction::ExpirySetToCap);
    assert_eq!(repairs[1].previous_ttl_ms, None);

    let exists: bool = conn.exists("test:lock:acme/orders").await.expect("exists");
    assert!(!exists, "the dead owner's lock is deleted");
    let pttl: i64 = conn.pttl("test:lock:acme/returns").await.expect("pttl");
    assert!(pttl > 0 && pttl <= MAX_TTL.as_millis() as i64, "{pttl}");
    let pttl: i64 = conn.pttl("test:lock:acme/settlements").await.expect("pttl");
    assert!(
        pttl > 0 && pttl <= LONG.as_millis() as i64,
        "healthy key untouched: {pttl}"
    );
    assert!(h.svc.repair(MAX_TTL).await.expect("second pass").is_empty());

    // The scope is free again and its fence carries on from the persisted counter.
    let lease = h
        .svc
        .acquire("acme/orders", "auto-sync:2@web1", LONG)
        .await
        .expect("acquire after repair");
    assert_eq!(lease.fence, 8);
    let next = h
        .svc
        .acquire("acme/settlements", "auto-sync:2@web1", LONG)
        .await;
    assert!(matches!(next, Err(LockError::Busy { .. })), "{next:?}");
    assert!(h.svc.release(&healthy).await.expect("release healthy"));
}

#[tokio::test]
async fn redis_acquire_takes_over_a_zombie_without_ttl() {
    let h = Harness::redis().await;
    let mut conn = h.redis_conn().await;
    let now = redis_now_ms(&mut conn).await;
    let zombie = Lease {
        scope: "acme/orders".into(),
        owner: "auto-sync:77@web9".into(),
        token: format!("{:032x}", 3u128),
        fence: 41,
        acquired_at_ms: now - 864_000_000,
        expires_at_ms: now - 863_000_000,
    };
    let () = conn
        .set(
            "test:lock:acme/orders",
            serde_json::to_string(&zombie).expect("json"),
        )
        .await
        .expect("set");
    // The counter was lost; the fence still goes up from the stored lease.
    let lease = h
        .svc
        .acquire("acme/orders", "auto-sync:1@web1", LONG)
        .await
        .expect("takeover");
    assert_eq!(lease.fence, 42);
    let pttl: i64 = conn.pttl("test:lock:acme/orders").await.expect("pttl");
    assert!(pttl > 0 && pttl <= LONG.as_millis() as i64, "{pttl}");

    // A value that is not a lease is left alone (Busy) until an operator forces it.
    let () = conn
        .set("test:lock:acme/returns", "garbage")
        .await
        .expect("set");
    match h.svc.acquire("acme/returns", "a:1@h1", LONG).await {
        Err(LockError::Busy { holder, until, .. }) => {
            assert!(holder.contains("unreadable"), "{holder}");
            assert_eq!(until, "no expiry");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    let repairs = h.svc.repair(MAX_TTL).await.expect("repair");
    assert_eq!(repairs.len(), 1);
    assert_eq!(repairs[0].action, RepairAction::ExpirySetToCap);
    let released = h
        .svc
        .release_scope("acme/returns", true)
        .await
        .expect("force")
        .expect("released");
    assert!(released.owner.contains("unreadable"));
    h.svc
        .acquire("acme/returns", "a:1@h1", LONG)
        .await
        .expect("free after force");
}

// Multi-threaded so the manager's background reconnect attempts really run (and fail)
// while the server is down, as they would in the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_is_unavailable_then_recovers() {
    let mut h = Harness::redis().await;
    h.svc
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire while up");
    h.redis.as_mut().expect("redis").server.stop();

    for _ in 0..3 {
        let started = Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            h.svc.acquire("acme/returns", "a:1@h1", LONG),
        )
        .await
        .expect("acquire must give up by itself");
        assert!(
            matches!(result, Err(LockError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(11),
            "took {:?}",
            started.elapsed()
        );
    }
    let listed = tokio::time::timeout(Duration::from_secs(20), h.svc.list())
        .await
        .expect("bounded");
    assert!(matches!(listed, Err(LockError::Unavailable(_))));

    h.redis
        .as_mut()
        .expect("redis")
        .server
        .restart()
        .expect("restart");
    // The first call after the restart already succeeds: the manager's refused
    // reconnect is retried once on a fresh connection.
    let lease = tokio::time::timeout(
        Duration::from_secs(20),
        h.svc.acquire("acme/returns", "a:1@h1", LONG),
    )
    .await
    .expect("bounded")
    .expect("works again after the restart");
    assert_eq!(lease.fence, 1, "a fresh redis without persistence");
}

#[tokio::test]
async fn redis_url_with_password_and_acl_user() {
    let server = RedisServer::start_with_args(&[
        "--requirepass",
        "s3cret",
        "--user",
        "alice",
        "on",
        ">alicepw",
        "~*",
        "&*",
        "+@all",
    ])
    .expect("start redis-server");
    let port = server.port();
    for url in [
        format!("redis://:s3cret@127.0.0.1:{port}/"),
        format!("redis://alice:alicepw@127.0.0.1:{port}/0"),
    ] {
        let svc = LockService::Redis(
            RedisLocks::connect(&url, DEFAULT_PREFIX)
                .await
                .expect("connect"),
        );
        let lease = svc
            .acquire("acme/orders", "a:1@h1", LONG)
            .await
            .expect("acquire");
        assert!(svc.release(&lease).await.expect("release"));
    }
    let wrong = format!("redis://alice:wrong@127.0.0.1:{port}/");
    let result = RedisLocks::connect(&wrong, DEFAULT_PREFIX).await;
    match result {
        Err(LockError::Unavailable(message)) => {
            assert!(
                !message.contains("wrong"),
                "never echo credentials: {message}"
            )
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("a wrong password must not connect"),
    }
    assert!(matches!(
        RedisLocks::connect("not a url", DEFAULT_PREFIX).await,
        Err(LockError::Invalid(_))
    ));
}
