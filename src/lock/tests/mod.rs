//! Tests of the lease backends.
//!
//! The contract suite (`contract!`) runs every case against both backends: each case is a
//! function taking a [`Harness`], and `contract!(case)` makes `case::redis` (own
//! `redis-server`) and `case::sqlite` (own temporary database file). Backend-specific
//! tests are in `redis_only` (the zombie lock of seed 004 surviving a Redis restart, Redis
//! going away and coming back, URL credentials) and `sqlite_only` (the SQLite hygiene pass).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;

use super::redis::RedisLocks;
use super::sqlite::SqliteLocks;
use super::*;
use crate::bench::redis_server::RedisServer;
use crate::domain::lease::local_now_ms;

mod redis_only;
mod sqlite_only;

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

fn dead_local_owner() -> String {
    let host = local_hostname().expect("hostname");
    let pid = (100_000..=999_999u32)
        .rev()
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .expect("an unused pid");
    format!("auto-sync:{pid}@{host}")
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
