//! Tests of the lease backends.
//!
//! The contract suite (`contract!`) runs every case against both backends: each case is a
//! function taking a [`Harness`], and `contract!(case)` makes `case::redis` (own
//! `redis-server`) and `case::sqlite` (own temporary database file). Backend-specific
//! tests follow: the zombie lock of seed 004 surviving a Redis restart, Redis going away
//! and coming back, URL credentials, and the SQLite hygiene pass.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;

use super::redis::RedisLocks;
use super::sqlite::SqliteLocks;
use super::testing::RedisServer;
use super::*;
use crate::domain::lease::local_now_ms;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it returns true, failing the test after `deadline`.
async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct RedisSide {
    server: RedisServer,
    client: ::redis::Client,
    prefix: String,
}

/// One backend under test plus the means to poke at its storage directly.
struct Harness {
    svc: LockService,
    redis: Option<RedisSide>,
    sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn redis() -> Harness {
        let server = RedisServer::start().expect("start redis-server");
        let prefix = "test:".to_string();
        let locks = RedisLocks::connect(&server.url(), &prefix)
            .await
            .expect("connect to redis");
        let client = ::redis::Client::open(server.url()).expect("redis client");
        Harness {
            svc: LockService::Redis(locks),
            redis: Some(RedisSide {
                server,
                client,
                prefix,
            }),
            sqlite_path: None,
            _dir: None,
        }
    }

    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("marketsync.db");
        let svc = LockService::sqlite(&path).await.expect("open sqlite locks");
        Harness {
            svc,
            redis: None,
            sqlite_path: Some(path),
            _dir: Some(dir),
        }
    }

    async fn redis_conn(&self) -> ::redis::aio::MultiplexedConnection {
        let side = self.redis.as_ref().expect("a redis harness");
        side.client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Forces the lease on `scope` past its expiry while it stays stored: for Redis a
    /// zombie (expiry in the JSON is past, the key has no TTL), for SQLite an expired row.
    async fn force_expiry(&self, scope: &str) {
        if let Some(side) = &self.redis {
            let key = format!("{}lock:{scope}", side.prefix);
            let mut conn = self.redis_conn().await;
            let raw: String = conn.get(&key).await.expect("lock key");
            let mut lease: Lease = serde_json::from_str(&raw).expect("lease json");
            lease.expires_at_ms = redis_now_ms(&mut conn).await - 1;
            let () = conn
                .set(&key, serde_json::to_string(&lease).expect("json"))
                .await
                .expect("rewrite lease");
        } else {
            let path = self.sqlite_path.as_ref().expect("a sqlite harness");
            let conn = rusqlite::Connection::open(path).expect("open sqlite");
            conn.busy_timeout(Duration::from_secs(10)).expect("timeout");
            let changed = conn
                .execute(
                    "UPDATE leases SET expires_at_ms = ?1 WHERE scope = ?2",
                    rusqlite::params![local_now_ms() - 1, scope],
                )
                .expect("expire row");
            assert_eq!(changed, 1, "no lease row for {scope}");
        }
    }

    /// Waits (by polling `list`) until nothing live is stored for `scope`.
    async fn wait_expired(&self, scope: &str) {
        wait_until("the lease to expire", DEADLINE, || async {
            let infos = self.svc.list().await.expect("list");
            infos
                .iter()
                .find(|info| info.scope == scope)
                .is_none_or(|info| info.stale)
        })
        .await;
    }
}

async fn redis_now_ms(conn: &mut ::redis::aio::MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = ::redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

/// Runs a contract case against both backends.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn redis() {
                super::$case(&super::Harness::redis().await).await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::$case(&super::Harness::sqlite().await).await;
            }
        }
    )*};
}

contract!(
    second_acquire_is_busy_naming_the_holder,
    fence_increases_across_acquire_expire_takeover,
    renew_extends_the_lease,
    renew_after_a_takeover_is_lost,
    release_needs_the_right_token,
    expired_lease_is_taken_over_with_a_higher_fence,
    short_ttl_expires_by_itself,
    list_shows_the_stale_flag,
    release_scope_needs_force_for_a_live_lock,
    concurrent_acquires_have_one_winner,
    invalid_arguments_are_refused,
    takeover_is_logged_without_the_token,
);

async fn second_acquire_is_busy_naming_the_holder(h: &Harness) {
    let lease = h
        .svc
        .acquire("acme/orders", "auto-sync:1@web1", LONG)
        .await
        .expect("first acquire");
    assert_eq!(lease.scope, "acme/orders");
    assert_eq!(lease.owner, "auto-sync:1@web1");
    assert_eq!(lease.token.len(), 32);
    assert!(lease.token.chars().all(|ch| ch.is_ascii_hexdigit()));
    assert!(lease.expires_at_ms - lease.acquired_at_ms == LONG.as_millis() as i64);

    let err = h
        .svc
        .acquire("acme/orders", "backfill:2@web2", LONG)
        .await
        .expect_err("second acquire must fail");
    match &err {
        LockError::Busy { scope, holder, .. } => {
            assert_eq!(scope, "acme/orders");
            assert_eq!(holder, "auto-sync:1@web1");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(err.to_string().contains("auto-sync:1@web1"), "{err}");
    // The same owner does not get it twice either.
    assert!(matches!(
        h.svc.acquire("acme/orders", "auto-sync:1@web1", LONG).await,
        Err(LockError::Busy { .. })
    ));
    // Other scopes are independent.
    h.svc
        .acquire("acme/returns", "backfill:2@web2", LONG)
        .await
        .expect("another scope");
}

async fn fence_increases_across_acquire_expire_takeover(h: &Harness) {
    let scope = "acme/orders";
    let first = h.svc.acquire(scope, "a:1@h1", LONG).await.expect("acquire");
    assert!(h.svc.release(&first).await.expect("release"));
    let second = h
        .svc
        .acquire(scope, "b:2@h2", SHORT)
        .await
        .expect("acquire");
    h.wait_expired(scope).await;
    let third = h
        .svc
        .acquire(scope, "c:3@h3", LONG)
        .await
        .expect("after expiry");
    h.force_expiry(scope).await;
    let fourth = h
        .svc
        .acquire(scope, "d:4@h4", LONG)
        .await
        .expect("takeover");
    let fences = [first.fence, second.fence, third.fence, fourth.fence];
    assert!(
        fences.windows(2).all(|pair| pair[0] < pair[1]),
        "fences must strictly increase: {fences:?}"
    );
    assert_eq!(fourth.fence, first.fence + 3, "fence is previous max + 1");
    // Fences are per scope.
    let other = h
        .svc
        .acquire("acme/returns", "a:1@h1", LONG)
        .await
        .expect("other scope");
    assert_eq!(other.fence, 1);
}

async fn renew_extends_the_lease(h: &Harness) {
    let lease = h
        .svc
        .acquire("acme/orders", "a:1@h1", Duration::from_secs(2))
        .await
        .expect("acquire");
    let renewed = h.svc.renew(&lease, LONG).await.expect("renew");
    assert_eq!(renewed.token, lease.token);
    assert_eq!(renewed.fence, lease.fence);
    assert_eq!(renewed.owner, lease.owner);
    assert_eq!(renewed.acquired_at_ms, lease.acquired_at_ms);
    assert!(renewed.expires_at_ms >= lease.expires_at_ms + 50_000);
    let infos = h.svc.list().await.expect("list");
    let info = infos
        .iter()
        .find(|info| info.scope == "acme/orders")
        .expect("listed");
    assert!(info.remaining_ms.expect("remaining") > 50_000, "{info:?}");
    assert!(!info.stale);
    // Renewing with the older copy works too: the token is what counts.
    let again = h.svc.renew(&lease, LONG).await.expect("renew again");
    assert!(again.expires_at_ms >= renewed.expires_at_ms);
    assert!(matches!(
        h.svc.acquire("acme/orders", "b:2@h2", LONG).await,
        Err(LockError::Busy { .. })
    ));
}

async fn renew_after_a_takeover_is_lost(h: &Harness) {
    let scope = "acme/orders";
    let old = h
        .svc
        .acquire(scope, "a:1@h1", SHORT)
        .await
        .expect("acquire");
    // Expired but not yet taken over: the holder must not carry on either.
    h.force_expiry(scope).await;
    let err = h.svc.renew(&old, LONG).await.expect_err("expired lease");
    assert!(matches!(err, LockError::Lost { .. }), "{err:?}");

    let new = h
        .svc
        .acquire(scope, "b:2@h2", LONG)
        .await
        .expect("takeover");
    let err = h.svc.renew(&old, LONG).await.expect_err("stale lease");
    match &err {
        LockError::Lost {
            scope: lost,
            reason,
        } => {
            assert_eq!(lost, scope);
            assert!(reason.contains("b:2@h2"), "{reason}");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    // The failed renewal did not disturb the new holder.
    let infos = h.svc.list().await.expect("list");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].owner, "b:2@h2");
    assert_eq!(infos[0].fence, new.fence);

    assert!(h.svc.release(&new).await.expect("release"));
    let err = h.svc.renew(&new, LONG).await.expect_err("released lease");
    assert!(matches!(err, LockError::Lost { .. }), "{err:?}");
}

async fn release_needs_the_right_token(h: &Harness) {
    let lease = h
        .svc
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    let forged = Lease {
        token: format!("{:032x}", 7u128),
        ..lease.clone()
    };
    assert!(!h.svc.release(&forged).await.expect("release forged"));
    assert!(matches!(
        h.svc.acquire("acme/orders", "b:2@h2", LONG).await,
        Err(LockError::Busy { .. })
    ));
    assert!(h.svc.release(&lease).await.expect("release"));
    assert!(!h.svc.release(&lease).await.expect("second release"));
    assert!(h.svc.list().await.expect("list").is_empty());
    h.svc
        .acquire("acme/orders", "b:2@h2", LONG)
        .await
        .expect("free again");
}

async fn expired_lease_is_taken_over_with_a_higher_fence(h: &Harness) {
    let scope = "acme/orders";
    let old = h
        .svc
        .acquire(scope, "auto-sync:1@web1", LONG)
        .await
        .expect("acquire");
    h.force_expiry(scope).await;
    let new = h
        .svc
        .acquire(scope, "backfill:2@web2", LONG)
        .await
        .expect("takeover");
    assert_eq!(new.owner, "backfill:2@web2");
    assert!(new.fence > old.fence);
    assert_ne!(new.token, old.token);
    // The old holder can no longer release it.
    assert!(!h.svc.release(&old).await.expect("release old"));
    let infos = h.svc.list().await.expect("list");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].owner, "backfill:2@web2");
    assert!(!infos[0].stale);
}

async fn short_ttl_expires_by_itself(h: &Harness) {
    let scope = "acme/orders";
    let old = h
        .svc
        .acquire(scope, "a:1@h1", SHORT)
        .await
        .expect("acquire");
    let started = Instant::now();
    let new = loop {
        match h.svc.acquire(scope, "b:2@h2", LONG).await {
            Ok(lease) => break lease,
            Err(LockError::Busy { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < DEADLINE, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(started.elapsed() >= SHORT - Duration::from_millis(50));
    assert!(new.fence > old.fence);
}

async fn list_shows_the_stale_flag(h: &Harness) {
    assert!(h.svc.list().await.expect("empty list").is_empty());
    let live = h
        .svc
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    let stale = h
        .svc
        .acquire("acme/returns", "b:2@h2", LONG)
        .await
        .expect("acquire");
    h.force_expiry("acme/returns").await;
    let infos = h.svc.list().await.expect("list");
    assert_eq!(infos.len(), 2, "{infos:?}");
    assert_eq!(infos[0].scope, "acme/orders");
    assert_eq!(infos[0].owner, "a:1@h1");
    assert_eq!(infos[0].fence, live.fence);
    assert!(!infos[0].stale);
    let remaining = infos[0].remaining_ms.expect("remaining");
    assert!(remaining > 0 && remaining <= LONG.as_millis() as i64);
    assert!(infos[0].expires_at_ms.is_some());
    assert_eq!(infos[1].scope, "acme/returns");
    assert_eq!(infos[1].owner, "b:2@h2");
    assert_eq!(infos[1].fence, stale.fence);
    assert!(infos[1].stale, "{:?}", infos[1]);
    assert!(infos[1].remaining_ms.is_none_or(|ms| ms == 0));
    // The JSON shape the status command prints never includes the token.
    let json = serde_json::to_string(&infos).expect("json");
    assert!(!json.contains(&live.token) && !json.contains("token"));
}

async fn release_scope_needs_force_for_a_live_lock(h: &Harness) {
    let scope = "acme/orders";
    let lease = h
        .svc
        .acquire(scope, "auto-sync:1@web1", LONG)
        .await
        .expect("acquire");
    match h.svc.release_scope(scope, false).await {
        Err(LockError::Busy { holder, .. }) => assert_eq!(holder, "auto-sync:1@web1"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(h.svc.list().await.expect("list").len(), 1, "still held");
    let released = h
        .svc
        .release_scope(scope, true)
        .await
        .expect("forced release")
        .expect("something released");
    assert_eq!(released.owner, "auto-sync:1@web1");
    assert_eq!(released.fence, lease.fence);
    assert!(!released.stale);
    assert!(h.svc.list().await.expect("list").is_empty());
    assert!(h
        .svc
        .release_scope(scope, false)
        .await
        .expect("nothing")
        .is_none());
    assert!(!h.svc.release(&lease).await.expect("holder's release"));

    // A stale lock goes without force.
    h.svc
        .acquire(scope, "backfill:2@web2", LONG)
        .await
        .expect("acquire");
    h.force_expiry(scope).await;
    let released = h
        .svc
        .release_scope(scope, false)
        .await
        .expect("stale release")
        .expect("something released");
    assert_eq!(released.owner, "backfill:2@web2");
    assert!(released.stale);
    // Releasing never resets the fence.
    let next = h.svc.acquire(scope, "c:3@h3", LONG).await.expect("acquire");
    assert_eq!(next.fence, lease.fence + 2);
}

async fn concurrent_acquires_have_one_winner(h: &Harness) {
    let attempts = (0..16).map(|n| {
        let svc = h.svc.clone();
        tokio::spawn(async move { svc.acquire("acme/orders", &format!("w:{n}@h"), LONG).await })
    });
    let mut winners = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.expect("task") {
            Ok(_) => winners += 1,
            Err(LockError::Busy { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
}

async fn invalid_arguments_are_refused(h: &Harness) {
    for (scope, owner, ttl) in [
        ("", "a:1@h", LONG),
        ("acme/orders", "", LONG),
        ("acme/orders", "a:1@h", Duration::ZERO),
        ("acme/orders", "a:1@h", MAX_TTL + Duration::from_secs(1)),
    ] {
        let result = h.svc.acquire(scope, owner, ttl).await;
        assert!(matches!(result, Err(LockError::Invalid(_))), "{result:?}");
    }
    let lease = h
        .svc
        .acquire("acme/orders", "a:1@h", MAX_TTL)
        .await
        .expect("the cap itself is allowed");
    let result = h.svc.renew(&lease, Duration::from_secs(10 * 86_400)).await;
    assert!(matches!(result, Err(LockError::Invalid(_))), "{result:?}");
    assert!(matches!(
        h.svc.repair(Duration::ZERO).await,
        Err(LockError::Invalid(_))
    ));
}

/// Collects formatted log lines (for the current thread only).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn takeover_is_logged_without_the_token(h: &Harness) {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let old = h
        .svc
        .acquire("acme/orders", "auto-sync:1@web1", LONG)
        .await
        .expect("acquire");
    h.force_expiry("acme/orders").await;
    let new = h
        .svc
        .acquire("acme/orders", "backfill:2@web2", LONG)
        .await
        .expect("takeover");
    h.svc.renew(&new, LONG).await.expect("renew");
    let _ = h.svc.renew(&old, LONG).await;
    h.svc.release(&new).await.expect("release");

    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("took over an expired lease"))
        .unwrap_or_else(|| panic!("no takeover line in:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("replaced_owner=auto-sync:1@web1"), "{line}");
    assert!(line.contains("scope=acme/orders"), "{line}");
    for token in [&old.token, &new.token] {
        assert!(
            !text.contains(token.as_str()),
            "a token was logged:\n{text}"
        );
    }
}

// ---------------------------------------------------------------- redis only

fn dead_local_owner() -> String {
    let host = local_hostname().expect("hostname");
    let pid = (100_000..=999_999u32)
        .rev()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .expect("an unused pid");
    format!("auto-sync:{pid}@{host}")
}

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

// ---------------------------------------------------------------- sqlite only

#[tokio::test]
async fn sqlite_repair_caps_far_expiries_and_deletes_dead_owners() {
    let h = Harness::sqlite().await;
    let dead_owner = dead_local_owner();
    let healthy = h
        .svc
        .acquire("acme/settlements", "auto-sync:1@web1", LONG)
        .await
        .expect("acquire");
    let far = h
        .svc
        .acquire("acme/returns", "backfill:4242@some-other-host", LONG)
        .await
        .expect("acquire");
    let dead = h
        .svc
        .acquire("acme/orders", &dead_owner, LONG)
        .await
        .expect("acquire");
    {
        let conn = rusqlite::Connection::open(h.sqlite_path.as_ref().expect("path")).expect("open");
        conn.execute(
            "UPDATE leases SET expires_at_ms = expires_at_ms + 864000000 WHERE scope = 'acme/returns'",
            [],
        )
        .expect("stretch");
    }
    let repairs = h.svc.repair(MAX_TTL).await.expect("repair");
    assert_eq!(repairs.len(), 2, "{repairs:?}");
    assert_eq!(repairs[0].scope, "acme/orders");
    assert_eq!(repairs[0].replaced_owner, dead_owner);
    assert_eq!(repairs[0].action, RepairAction::Deleted);
    assert_eq!(repairs[1].scope, "acme/returns");
    assert_eq!(repairs[1].action, RepairAction::ExpirySetToCap);
    assert!(repairs[1].previous_ttl_ms.expect("ttl") > 864_000_000 - 60_000);

    let infos = h.svc.list().await.expect("list");
    assert_eq!(infos.len(), 2);
    let returns = infos
        .iter()
        .find(|info| info.scope == "acme/returns")
        .expect("kept");
    assert!(returns.remaining_ms.expect("remaining") <= MAX_TTL.as_millis() as i64);
    assert_eq!(returns.fence, far.fence);
    let settlements = infos
        .iter()
        .find(|info| info.scope == "acme/settlements")
        .expect("kept");
    assert_eq!(settlements.expires_at_ms, Some(healthy.expires_at_ms));
    assert!(h.svc.repair(MAX_TTL).await.expect("second pass").is_empty());

    let next = h
        .svc
        .acquire("acme/orders", "auto-sync:2@web1", LONG)
        .await
        .expect("free");
    assert_eq!(next.fence, dead.fence + 1);
}

#[tokio::test]
async fn sqlite_two_handles_on_one_file_exclude_each_other() {
    let h = Harness::sqlite().await;
    let path = h.sqlite_path.clone().expect("path");
    let other = LockService::sqlite(&path).await.expect("second handle");
    let lease = h
        .svc
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    match other.acquire("acme/orders", "b:2@h2", LONG).await {
        Err(LockError::Busy { holder, .. }) => assert_eq!(holder, "a:1@h1"),
        result => panic!("expected Busy, got {result:?}"),
    }
    assert!(other
        .release(&lease)
        .await
        .expect("release through the other handle"));
    let next = other
        .acquire("acme/orders", "b:2@h2", LONG)
        .await
        .expect("acquire");
    assert_eq!(next.fence, lease.fence + 1);
}

#[tokio::test]
async fn sqlite_shares_the_ledger_database_file() {
    use crate::store::{LedgerStore, SqliteLedger};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("marketsync.db");
    let ledger = SqliteLedger::open(&path).expect("ledger");
    let locks = SqliteLocks::open(&path).expect("locks");
    let svc = LockService::from(locks);
    svc.acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    let window = crate::domain::HourWindow::new(0, 2 * crate::domain::HOUR);
    ledger
        .seed("acme", "orders", window, 0)
        .expect("ledger still works");
    drop(ledger);
    // Reopening both in the other order is fine too.
    let _locks = SqliteLocks::open(&path).expect("locks again");
    let _ledger = SqliteLedger::open(&path).expect("ledger again");
    assert_eq!(svc.list().await.expect("list").len(), 1);
}

// ---------------------------------------------------------------- helpers

#[test]
fn owner_is_dead_local_only_when_provable() {
    let host = local_hostname().expect("hostname");
    assert!(
        !owner_is_dead_local(&local_owner("auto-sync")),
        "we are alive"
    );
    assert!(owner_is_dead_local(&dead_local_owner()));
    assert!(!owner_is_dead_local(
        "auto-sync:999999@another-host-entirely"
    ));
    assert!(!owner_is_dead_local("auto-sync:999999"));
    assert!(!owner_is_dead_local(&format!("auto-sync:notapid@{host}")));
    assert!(!owner_is_dead_local(&format!("auto-sync:0@{host}")));
    assert!(!owner_is_dead_local(""));
    // A live pid running another program: the pid was reused, the owner is gone.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let owner = format!("auto-sync:{}@{host}", other.id());
    let dead = owner_is_dead_local(&owner);
    let _ = other.kill();
    let _ = other.wait();
    assert!(dead, "{owner} runs sleep, not this program");
}

#[test]
fn owner_strings_parse() {
    assert_eq!(
        parse_owner("auto-sync:1234@web1"),
        Some(("auto-sync", 1234, "web1"))
    );
    assert_eq!(
        parse_owner("fill:day:99@host.example"),
        Some(("fill:day", 99, "host.example"))
    );
    assert_eq!(parse_owner("nohost:1"), None);
    let owner = local_owner("auto-sync");
    let (task, pid, _) = parse_owner(&owner).expect("own owner parses");
    assert_eq!((task, pid), ("auto-sync", std::process::id()));
}

#[test]
fn cap_is_one_hour_and_leases_round_trip_as_json() {
    assert_eq!(MAX_TTL, Duration::from_secs(3600));
    assert_eq!(
        Lease::renew_every(Duration::from_secs(900)),
        Duration::from_secs(300)
    );
    let lease = Lease {
        scope: "acme/orders".into(),
        owner: "auto-sync:1@web1".into(),
        token: new_token(),
        fence: 3,
        acquired_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_000_900_000,
    };
    let json = serde_json::to_string(&lease).expect("json");
    assert_eq!(serde_json::from_str::<Lease>(&json).expect("parse"), lease);
    assert_ne!(new_token(), new_token());
}
