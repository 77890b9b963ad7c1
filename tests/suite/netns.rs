//! Several daemons as separate hosts on real network boundaries (issue 17, point 4):
//! each daemon runs in its own network namespace behind a bridge to Redis, PostgreSQL
//! and the simulator (see `tests/common/netns.rs` for the topology and how a partition
//! is made).
//!
//! Redis leases with fencing and a SQLite file per host (one account, two hosts):
//!
//! - SIGKILL of the host holding a scope's lease: the other host takes the scope within
//!   lease TTL + one renew interval;
//! - a host cut from Redis (and only Redis) while it holds the lease: it makes no
//!   simulator call after its lease expired, the other host takes over within TTL + one
//!   renew interval, each side's `/api/locks` says what its operator would see (the
//!   lease; "lock backend unavailable"), and after the heal it rejoins (finds the scope
//!   busy, lists the new holder's lease) without error;
//! - a host frozen (SIGSTOP) past its TTL, then resumed: its renewal is refused (the
//!   scope is held by the other host's newer lease), and it stops: at most the one unit
//!   it had in flight gets a request out before the refusal, none after;
//! - the harness itself: a cut separates a host from one service and not the others, and
//!   a test that panics leaves no namespace and no process behind.
//!
//! A shared PostgreSQL store and cluster membership (`[store] url_env`, `[cluster]`):
//! two or three hosts, member ids `h1`.., six accounts split by rendezvous hashing,
//! heartbeat 1 s, member_ttl 3 s, lease TTL 3 s, reports taking 2 s:
//!
//! - SIGKILL of the member running the most accounts: every one of them is leased by a
//!   survivor within member_ttl + 2 x heartbeat + lease TTL (measured and printed), and
//!   the hours it had in flight are applied from the very report it had requested
//!   (resumed by reportId);
//! - PostgreSQL stopped (immediate shutdown) for longer than a lease, then started: both
//!   daemons log the outage, no account crashes or is quarantined, all converge;
//! - a member frozen (SIGSTOP) past member_ttl and its leases: the other takes its
//!   accounts within the same bound and works on; after SIGCONT the frozen one learns its
//!   leases are gone (its own clock, a refused renewal or a write refused by the fence)
//!   and gets its share back;
//! - the same freeze where only the fence can stop the write: a chaos drill pauses one
//!   account's apply after its last lease check, the member is frozen during the pause
//!   until the account is taken over and applied on; after SIGCONT the paused write goes
//!   out with the old fence and PostgreSQL refuses it ("lease taken over");
//! - a member cut from Redis but not PostgreSQL: the other takes its accounts within the
//!   bound, the cut one makes no provider call once its leases expired, and rejoins after
//!   the heal;
//! - a member cut from PostgreSQL but not Redis: it stays a member and keeps its
//!   accounts, which wait; after the heal all converge.
//!
//! Each scenario ends by checking the databases against the simulator's truth: with a
//! SQLite file per host every host's file; with PostgreSQL the shared ledger (every
//! applied hour of every account holds exactly the rows the simulator served, from the
//! report its ledger row names, no rows for an hour not applied), every hour of every
//! account applied, and no window requested again while an earlier report of it was
//! alive (the simulator's `duplicate_create_reports`).
//!
//! They need root (`ip netns`); without it they fail saying so. They run one at a time
//! (nextest group `measuring` in .config/nextest.toml, beside no other test that
//! measures time): each holds two or three daemons, a
//! simulator, Redis and PostgreSQL, and measures failover times that a loaded machine
//! would stretch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use marketsync::domain::now_ts;
use marketsync::lock::Lease;
use marketsync::store::{LedgerStore, SqliteLedger};

use crate::common::netns::{
    postgres_answers, redis_answers, simulator_answers, simulator_url, Host, LeaseView, LogLine,
    Net, Resp, Service,
};
use crate::common::{netns, wait_until};

/// The lease TTL of the scenarios: short so each takes seconds, long enough that a
/// renewal (every TTL/3) survives a loaded 2-core machine.
const TTL: Duration = Duration::from_secs(6);
/// The one scope of the scenarios.
const SCOPE: &str = "acct/vendor_rt_sales";
const STREAM: &str = "vendor_rt_sales";
/// What a host's log shows: info, plus every provider call (debug lines with an
/// `operation` field) and the runner's "lease busy".
const RUST_LOG: &str =
    "marketsync=info,marketsync::provider=debug,marketsync::shapes::runner=debug";

/// How long after a host knows its lease is lost a provider answer may still be logged
/// (a request sent just before).
const LATE_RESPONSE: Duration = Duration::from_millis(500);

/// The bound of a failover: the lease's TTL and one renew interval.
fn failover_bound() -> Duration {
    TTL + Lease::renew_every(TTL)
}

/// One amazon account against the simulator on the bridge, leases and quota in the
/// bridge's Redis. Reports take 1 s and the lookback is 240 h in chunks of 6 h, one in
/// flight: one run lasts about a minute, so the lease holder holds it throughout a
/// scenario; the stream is retried every second, so a waiting host asks again within a
/// second of the holder's expiry.
fn daemon_config() -> String {
    let sim = simulator_url();
    format!(
        r#"
[redis]
url = "{redis}"

[locks]
ttl = "{ttl}s"
hygiene_interval = "1s"

# The operator API inside the host (Host::api_get).
[http]
listen = "127.0.0.1:8080"

[quota.amazon.createReport]
rate = 100.0
burst = 100.0
[quota.amazon.getReport]
rate = 100.0
burst = 100.0
[quota.amazon.getReportDocument]
rate = 100.0
burst = 100.0

[[accounts]]
id = "acct"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
endpoint = "{sim}"
token_url = "{sim}/auth/o2/token"

[accounts.credentials]
client_id_env = "TEST_CLIENT_ID"
client_secret_env = "TEST_CLIENT_SECRET"
refresh_token_env = "TEST_REFRESH_TOKEN"

[accounts.streams.vendor_rt_sales]
lookback = "240h"
chunk = "6h"
interval = "1s"
poll_min = "100ms"
poll_max = "200ms"
safety_lag = "0s"
max_in_flight = 1
"#,
        redis = netns::redis_url(),
        ttl = TTL.as_secs(),
    )
}

/// A net with Redis and the simulator, and two hosts running the same account: `first`
/// holds the scope's lease (it started alone), `second` has found it busy and waits.
async fn two_hosts() -> (Net, Host, Host) {
    let mut net = Net::new();
    net.start_redis();
    net.start_simulator(&["--latency", "1s", "--unlimited", "--seed", "7"]);
    let mut first = net.add_host();
    let mut second = net.add_host();
    first.spawn_daemon(&daemon_config(), RUST_LOG, &[]);
    let holds = wait_until(Duration::from_secs(30), || {
        holder_pid(&net) == Some(first.pid())
    })
    .await;
    assert!(
        holds,
        "{} took the lease; log:\n{}",
        first.label,
        first.daemon().logs()
    );
    second.spawn_daemon(&daemon_config(), RUST_LOG, &[]);
    let waiting = wait_until(Duration::from_secs(30), || {
        second
            .log()
            .iter()
            .any(|line| line.message.contains("lease busy"))
    })
    .await;
    assert!(
        waiting,
        "{} found the scope busy; log:\n{}",
        second.label,
        second.daemon().logs()
    );
    // The holder is working: a chunk applied.
    let working = wait_until(Duration::from_secs(30), || applied_hours(&first) >= 6).await;
    assert!(
        working,
        "{} applied a chunk; log:\n{}",
        first.label,
        first.daemon().logs()
    );
    assert_eq!(holder_pid(&net), Some(first.pid()), "still the holder");
    (net, first, second)
}

/// The pid of the scope's lease holder, per Redis.
fn holder_pid(net: &Net) -> Option<u32> {
    net.lease(SCOPE)
        .ok()
        .flatten()
        .and_then(|lease| lease.owner_pid())
}

/// Waits until `host` holds the scope's lease; returns when it was first seen, the lease,
/// and the last lease of another owner seen before it.
async fn wait_for_takeover(
    net: &Net,
    host: &Host,
    deadline: Duration,
) -> Option<(Instant, LeaseView, Option<LeaseView>)> {
    let mut previous: Option<LeaseView> = None;
    let mut taken: Option<(Instant, LeaseView)> = None;
    wait_until(deadline, || match net.lease(SCOPE) {
        Ok(Some(lease)) if lease.owner_pid() == Some(host.pid()) => {
            taken = Some((Instant::now(), lease));
            true
        }
        Ok(Some(lease)) => {
            previous = Some(lease);
            false
        }
        _ => false,
    })
    .await;
    taken.map(|(at, lease)| (at, lease, previous))
}

/// APPLIED hours of the scope in `host`'s own SQLite file.
fn applied_hours(host: &Host) -> u64 {
    let path = host.data_dir().join("marketsync.db");
    if !path.exists() {
        return 0;
    }
    SqliteLedger::open(&path)
        .ok()
        .and_then(|ledger| ledger.snapshot("acct", STREAM, now_ts()).ok())
        .map_or(0, |snapshot| snapshot.counts[3])
}

/// Waits until `host` (the new holder) applies a chunk more than it has now.
async fn assert_works_on(host: &Host) {
    let applied = applied_hours(host);
    let working = wait_until(Duration::from_secs(30), || {
        applied_hours(host) >= applied + 6
    })
    .await;
    assert!(
        working,
        "{} applied a chunk after the takeover; log:\n{}",
        host.label,
        host.daemon().logs()
    );
}

/// Provider calls (`operation` field) in `log` at or after `since_ms`.
fn calls_since(log: &[LogLine], since_ms: i64) -> Vec<&LogLine> {
    log.iter()
        .filter(|line| line.field("operation").is_some() && line.at_ms() >= since_ms)
        .collect()
}

fn epoch_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Every applied hour in `host`'s database holds exactly the rows the simulator served
/// for that hour (and nothing else is stored). Run with the daemons stopped.
fn assert_database_matches_simulator(net: &Net, host: &Host) {
    type Row = (String, i64, i64);
    let served = net.sim_get("/_sim/served").expect("served rows");
    let mut truth: BTreeMap<i64, BTreeSet<Row>> = BTreeMap::new();
    for row in served["rows"].as_array().expect("rows") {
        let revenue = row["ordered_revenue"].as_f64().expect("revenue");
        truth
            .entry(row["hour_utc"].as_i64().expect("hour"))
            .or_default()
            .insert((
                row["asin"].as_str().expect("asin").to_string(),
                row["ordered_units"].as_i64().expect("units"),
                (revenue * 100.0).round() as i64,
            ));
    }
    let ledger = SqliteLedger::open(&host.data_dir().join("marketsync.db")).expect("ledger");
    let mut stored: BTreeMap<i64, BTreeSet<Row>> = BTreeMap::new();
    for (hour, asin, units, revenue) in crate::common::sales_rows(&ledger, "acct") {
        stored
            .entry(hour)
            .or_default()
            .insert((asin, units, (revenue * 100.0).round() as i64));
    }
    let applied: Vec<i64> = ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT hour_utc FROM ledger_hours
                 WHERE account = 'acct' AND stream = ?1 AND state = 'APPLIED' ORDER BY hour_utc",
            )
            .expect("prepare");
        statement
            .query_map([STREAM], |row| row.get(0))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows")
    });
    assert!(!applied.is_empty(), "{} applied nothing", host.label);
    for hour in &applied {
        assert_eq!(
            stored.get(hour),
            truth.get(hour),
            "{}: hour {hour} differs from what the simulator served",
            host.label
        );
    }
    for hour in stored.keys() {
        assert!(
            applied.contains(hour),
            "{}: rows stored for hour {hour}, which is not applied",
            host.label
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_separates_a_host_from_one_service_and_not_the_others() {
    let mut net = Net::new();
    net.start_redis();
    net.start_postgres();
    net.start_simulator(&["--latency", "1s"]);
    let first = net.add_host();
    let second = net.add_host();
    let answers = |host: &Host, service: Service| match host.connect(service) {
        Ok(mut stream) => match service {
            Service::Redis => redis_answers(&mut stream),
            Service::Postgres => postgres_answers(&mut stream),
            Service::Simulator => simulator_answers(&mut stream),
        },
        Err(_) => false,
    };
    let all = [Service::Redis, Service::Postgres, Service::Simulator];
    for service in all {
        assert!(answers(&first, service), "{service:?} reachable from h1");
        assert!(answers(&second, service), "{service:?} reachable from h2");
    }
    for cut in all {
        first.cut_from(cut);
        for service in all {
            assert_eq!(
                answers(&first, service),
                service != cut,
                "h1 cut from {cut:?}: {service:?}"
            );
            assert!(answers(&second, service), "h2 still reaches {service:?}");
        }
        first.heal(cut);
        for service in all {
            assert!(answers(&first, service), "healed: h1 reaches {service:?}");
        }
    }
    // Each host talks from its own address across the bridge.
    let mut held = first.connect(Service::Redis).expect("h1 to redis");
    assert!(redis_answers(&mut held));
    let Ok(Resp::Bulk(Some(clients))) = net.redis_command(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST");
    };
    assert!(
        clients.contains(&format!("addr={}:", first.addr)),
        "redis sees h1 at {}: {clients}",
        first.addr
    );
    // Stopped and started again (for the scenario "PostgreSQL restart mid-run").
    net.postgres_mut().stop();
    assert!(!answers(&first, Service::Postgres), "stopped");
    net.postgres_mut().start();
    assert!(answers(&first, Service::Postgres), "started again");
}

#[test]
fn a_test_that_panics_leaves_no_namespace_and_no_process_behind() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let mut net = Net::new();
        net.start_redis();
        net.start_postgres();
        net.start_simulator(&["--latency", "1s"]);
        let mut host = net.add_host();
        host.spawn_daemon(&daemon_config(), RUST_LOG, &[]);
        host.freeze();
        let names = vec![
            net.infra_namespace().to_string(),
            host.hostname().to_string(),
        ];
        let mut pids = netns::pids_in(net.infra_namespace());
        pids.push(host.pid());
        sender.send((names, pids)).expect("send");
        panic!("a test fails with a frozen daemon, redis, postgres and the simulator running");
    });
    assert!(test.join().is_err(), "the test thread panicked");
    let (names, pids) = receiver.recv().expect("names");
    assert!(
        pids.len() >= 4,
        "redis, postgres, simulator and daemon ran: {pids:?}"
    );
    let left: Vec<String> = netns::namespaces()
        .into_iter()
        .filter(|name| names.contains(name))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for pid in pids {
        assert!(
            !std::path::Path::new("/proc").join(pid.to_string()).exists(),
            "process {pid} left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_lease_holder_moves_its_scope_within_ttl_and_one_renewal() {
    let (net, mut first, mut second) = two_hosts().await;
    let before = net.lease(SCOPE).unwrap().expect("a lease");
    first.kill();
    let killed_at = Instant::now();
    let taken = wait_for_takeover(&net, &second, failover_bound() * 3).await;
    let (taken_at, lease, _) = taken.unwrap_or_else(|| {
        panic!(
            "{} took the scope over; log:\n{}",
            second.label,
            second.daemon().logs()
        )
    });
    let failover = taken_at - killed_at;
    eprintln!(
        "failover after SIGKILL: {failover:?} (bound: ttl {TTL:?} + renew interval {:?})",
        Lease::renew_every(TTL)
    );
    assert!(
        failover <= failover_bound(),
        "failover took {failover:?}, above ttl + one renew interval ({:?})",
        failover_bound()
    );
    assert!(
        lease.fence > before.fence,
        "the new lease's fence {} is above the dead holder's {}",
        lease.fence,
        before.fence
    );
    assert!(
        lease.owner.contains(&format!("@{}#", second.hostname())),
        "the owner names the host: {}",
        lease.owner
    );
    assert_works_on(&second).await;
    second.kill();
    let stats = net.sim_get("/_sim/stats").expect("stats");
    eprintln!(
        "duplicate createReports with a SQLite file per host: {} (a shared store resumes by reportId instead)",
        stats["duplicate_create_reports"]
    );
    assert_database_matches_simulator(&net, &first);
    assert_database_matches_simulator(&net, &second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_from_redis_stops_before_its_lease_expires_and_rejoins_after_the_heal() {
    let (net, mut first, mut second) = two_hosts().await;
    let cut_at_ms = epoch_ms();
    first.cut_from(Service::Redis);
    let cut_at = Instant::now();
    // The test is not cut: it still sees the lease, which nobody renews any more.
    let taken = wait_for_takeover(&net, &second, failover_bound() * 3).await;
    let (taken_at, lease, previous) = taken.unwrap_or_else(|| {
        panic!(
            "{} took the scope over; log:\n{}",
            second.label,
            second.daemon().logs()
        )
    });
    let failover = taken_at - cut_at;
    eprintln!(
        "takeover after the cut from redis: {failover:?} (bound: ttl {TTL:?} + renew interval {:?})",
        Lease::renew_every(TTL)
    );
    assert!(
        failover <= failover_bound(),
        "takeover took {failover:?}, above ttl + one renew interval ({:?})",
        failover_bound()
    );
    // Each side of the partition, as its operator sees it: the new holder lists its
    // lease; the cut host cannot reach the lock backend and says so.
    let (status, locks) = second.api_get("/api/locks").expect("h2 api");
    assert_eq!(status, 200, "{locks}");
    assert!(
        locks["locks"]
            .as_array()
            .is_some_and(|all| all.iter().any(|info| info["owner"] == lease.owner.as_str())),
        "h2 lists its lease: {locks}"
    );
    let (status, body) = first.api_get("/api/locks").expect("h1 api");
    assert_eq!(status, 503, "the cut host cannot list leases: {body}");
    let cut_lease = previous.expect("the cut host's lease was seen before the takeover");
    assert_eq!(cut_lease.owner_pid(), Some(first.pid()));
    assert!(lease.fence > cut_lease.fence);

    // The cut host noticed (renewals and quota grants fail) and made no simulator call
    // after its lease expired: the takeover never overlaps with its work.
    let noticed = wait_until(Duration::from_secs(20), || {
        first.log().iter().any(|line| {
            line.at_ms() >= cut_at_ms
                && (line.level == "WARN" || line.level == "ERROR")
                && (line.message.contains("lease") || line.message.contains("lock backend"))
        })
    })
    .await;
    assert!(
        noticed,
        "{} logged that its lease cannot be renewed; log:\n{}",
        first.label,
        first.daemon().logs()
    );
    let log = first.log();
    let late: Vec<&LogLine> = calls_since(&log, cut_lease.expires_at_ms);
    let last_call_ms = calls_since(&log, cut_at_ms)
        .last()
        .map(|line| line.at_ms() - cut_lease.expires_at_ms);
    eprintln!("cut host: last simulator call {last_call_ms:?} ms relative to its lease's expiry");
    assert!(
        late.is_empty(),
        "{} called the simulator after its lease expired at {}: {late:?}",
        first.label,
        cut_lease.expires_at_ms
    );
    assert!(
        first.daemon_mut().child.try_wait().unwrap().is_none(),
        "the cut host keeps running"
    );

    // Heal: the host reaches Redis again, finds the scope held and waits, without error.
    let healed_at_ms = epoch_ms();
    first.heal(Service::Redis);
    let rejoined = wait_until(Duration::from_secs(40), || {
        first.log().iter().any(|line| {
            line.at_ms() >= healed_at_ms
                && line.message.contains("lease busy")
                && line.field("holder") == Some(lease.owner.as_str())
        })
    })
    .await;
    assert!(
        rejoined,
        "{} found the scope held by {} after the heal; log:\n{}",
        first.label,
        lease.owner,
        first.daemon().logs()
    );
    let (status, locks) = first.api_get("/api/locks").expect("h1 api");
    assert_eq!(status, 200, "healed, the host lists leases again: {locks}");
    assert!(
        locks["locks"]
            .as_array()
            .is_some_and(|all| all.iter().any(|info| info["owner"] == lease.owner.as_str())),
        "healed, h1 sees h2's lease: {locks}"
    );
    let log = first.log();
    let first_busy = log
        .iter()
        .find(|line| line.at_ms() >= healed_at_ms && line.message.contains("lease busy"))
        .map(LogLine::at_ms)
        .unwrap_or(healed_at_ms);
    let errors: Vec<&LogLine> = log
        .iter()
        .filter(|line| line.at_ms() >= first_busy && line.level == "ERROR")
        .collect();
    assert!(errors.is_empty(), "errors after rejoining: {errors:?}");
    assert!(
        !second
            .log()
            .iter()
            .any(|line| line.message.contains("lease lost")),
        "the new holder never lost its lease; log:\n{}",
        second.daemon().logs()
    );
    assert_eq!(holder_pid(&net), Some(second.pid()));
    assert_works_on(&second).await;
    first.kill();
    second.kill();
    assert_database_matches_simulator(&net, &first);
    assert_database_matches_simulator(&net, &second);
}

/// A host frozen past its lease makes no new provider call after SIGCONT: every call
/// first checks the lease's deadline by the process's own monotonic clock
/// (`LeaseDeadline`), which passed while it was frozen, so the run stops before the
/// keeper's overdue renewal is even refused. What can still show up after SIGCONT is the
/// answer to a request sent before the freeze (its "report requested" line is logged when
/// the answer is read): the test bounds those at the one unit in flight
/// (max_in_flight = 1) and nothing once the loss is known. With a shared store the fence
/// check refuses that unit's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_host_resumed_after_a_takeover_loses_its_lease_and_stops_requesting() {
    let (net, mut first, mut second) = two_hosts().await;
    first.freeze();
    let frozen_at = Instant::now();
    let taken = wait_for_takeover(&net, &second, failover_bound() * 3).await;
    let (taken_at, lease, previous) = taken.unwrap_or_else(|| {
        panic!(
            "{} took the scope over; log:\n{}",
            second.label,
            second.daemon().logs()
        )
    });
    let failover = taken_at - frozen_at;
    eprintln!("takeover from a frozen holder: {failover:?}");
    assert!(
        failover <= failover_bound(),
        "takeover took {failover:?}, above ttl + one renew interval ({:?})",
        failover_bound()
    );
    let frozen_lease = previous.expect("the frozen host's lease was seen");
    assert!(lease.fence > frozen_lease.fence);

    // Taken before the signal: the host may log within a millisecond of it.
    let thawed_at_ms = epoch_ms();
    first.thaw();
    // It learns the lease is gone: either its own clock says the lease expired before
    // its next provider call, or its overdue renewal is refused in favour of the newer
    // lease (whichever of the run and the keeper runs first after SIGCONT).
    let knows_lost = |line: &LogLine| {
        line.at_ms() >= thawed_at_ms
            && (line
                .message
                .contains("lease expired by this process's clock")
                || (line.message.contains("lease lost")
                    && line
                        .field("error")
                        .is_some_and(|error| error.contains(&lease.owner))))
    };
    let lost = wait_until(Duration::from_secs(20), || {
        first.log().iter().any(&knows_lost)
    })
    .await;
    assert!(
        lost,
        "the resumed host's renewal was refused in favour of {}; log:\n{}",
        lease.owner,
        first.daemon().logs()
    );
    // It goes back to waiting: it finds the scope busy.
    let waits = wait_until(Duration::from_secs(20), || {
        first.log().iter().any(|line| {
            line.at_ms() >= thawed_at_ms
                && line.message.contains("lease busy")
                && line.field("holder") == Some(lease.owner.as_str())
        })
    })
    .await;
    assert!(
        waits,
        "{} waits for the scope again; log:\n{}",
        first.label,
        first.daemon().logs()
    );
    let log = first.log();
    let after_thaw = calls_since(&log, thawed_at_ms);
    eprintln!(
        "resumed host: {} simulator call(s) after SIGCONT before it stopped: {:?}",
        after_thaw.len(),
        after_thaw
            .iter()
            .map(|line| line.field("operation").unwrap_or(""))
            .collect::<Vec<_>>()
    );
    let lost_at_ms = log
        .iter()
        .find(|line| knows_lost(line))
        .map(LogLine::at_ms)
        .expect("the lost line seen above");
    let created: Vec<&&LogLine> = after_thaw
        .iter()
        .filter(|line| line.field("operation") == Some("createReport"))
        .collect();
    // Between SIGCONT and the refused renewal at most the one unit in flight
    // (max_in_flight = 1) can get its request out; none is made once the loss is known
    // (a response in flight may still land: LATE_RESPONSE).
    assert!(
        created.len() <= 1,
        "the resumed host requested several reports for a scope it no longer holds: {created:?}"
    );
    let after_loss: Vec<&&&LogLine> = created
        .iter()
        .filter(|line| line.at_ms() > lost_at_ms + LATE_RESPONSE.as_millis() as i64)
        .collect();
    assert!(
        after_loss.is_empty(),
        "the resumed host requested reports after it knew its lease was lost ({lost_at_ms}): {after_loss:?}"
    );
    assert_eq!(holder_pid(&net), Some(second.pid()));
    assert_works_on(&second).await;
    first.kill();
    second.kill();
    assert_database_matches_simulator(&net, &first);
    assert_database_matches_simulator(&net, &second);
}

// ---------------------------------------------------------------------------------------
// A shared PostgreSQL store and cluster membership: several hosts split the accounts.
// ---------------------------------------------------------------------------------------

/// The accounts the cluster splits (`acct-0` .. `acct-5`).
const ACCOUNTS: usize = 6;
/// `[cluster] heartbeat`, `member_ttl` and `[locks] ttl` of the cluster scenarios.
const HEARTBEAT: Duration = Duration::from_secs(1);
const MEMBER_TTL: Duration = Duration::from_secs(3);
const LEASE_TTL: Duration = Duration::from_secs(3);
/// Hours per account: 48 h in chunks of 6 h, reports taking 2 s, one in flight: an
/// account's backlog takes about 20 s, so a host dies, freezes or loses PostgreSQL with
/// reports in flight.
const LOOKBACK_HOURS: i64 = 48;

/// How long after a member stops (SIGKILL, SIGSTOP) its accounts are worked elsewhere at
/// the latest: its registration lapses (member_ttl), the others see that at their next
/// heartbeat (each of them one heartbeat late at worst), and a lease it held expires
/// (lease TTL) before the new owner's next try (README "Several daemons").
/// A report requested this recently (reports take 2 s) is still in flight.
const FRESH_REQUEST: Duration = Duration::from_millis(500);

/// How long the scenario's PostgreSQL stays down at least: longer than a lease.
const POSTGRES_OUTAGE: Duration = Duration::from_secs(8);

fn cluster_failover_bound() -> Duration {
    MEMBER_TTL + HEARTBEAT * 2 + LEASE_TTL
}

fn account_ids() -> Vec<String> {
    (0..ACCOUNTS).map(|index| format!("acct-{index}")).collect()
}

/// The seller the simulator records for an account (its refresh token).
fn seller(account: &str) -> String {
    format!("seller-{account}")
}

fn refresh_env(account: &str) -> String {
    format!("REFRESH_{}", account.replace('-', "_").to_uppercase())
}

/// The environment of every cluster host: the PostgreSQL URL and each account's token.
fn cluster_env() -> Vec<(String, String)> {
    let mut env = vec![("MARKETSYNC_DATABASE_URL".to_string(), netns::postgres_url())];
    for account in account_ids() {
        env.push((refresh_env(&account), seller(&account)));
    }
    env
}

/// One host of the cluster: the hour ledger in the infra PostgreSQL, leases, quota and
/// membership in the infra Redis, member id = the host's label.
fn cluster_config(member: &str) -> String {
    let sim = simulator_url();
    let mut text = format!(
        r#"
[redis]
url = "{redis}"

[store]
url_env = "MARKETSYNC_DATABASE_URL"
statement_timeout = "5s"

[locks]
ttl = "{lease}s"
hygiene_interval = "1s"

[cluster]
enabled = true
member_id = "{member}"
heartbeat = "{heartbeat}s"
member_ttl = "{member_ttl}s"

[supervisor]
heartbeat = "1s"

[http]
listen = "127.0.0.1:8080"

[quota.amazon.createReport]
rate = 100.0
burst = 100.0
[quota.amazon.getReport]
rate = 100.0
burst = 100.0
[quota.amazon.getReportDocument]
rate = 100.0
burst = 100.0
"#,
        redis = netns::redis_url(),
        lease = LEASE_TTL.as_secs(),
        heartbeat = HEARTBEAT.as_secs(),
        member_ttl = MEMBER_TTL.as_secs(),
    );
    for account in account_ids() {
        text.push_str(&format!(
            r#"
[[accounts]]
id = "{account}"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
endpoint = "{sim}"
token_url = "{sim}/auth/o2/token"

[accounts.credentials]
client_id_env = "TEST_CLIENT_ID"
client_secret_env = "TEST_CLIENT_SECRET"
refresh_token_env = "{refresh}"

[accounts.streams.vendor_rt_sales]
lookback = "{LOOKBACK_HOURS}h"
chunk = "6h"
interval = "1s"
poll_min = "100ms"
poll_max = "200ms"
safety_lag = "0s"
max_in_flight = 1
daily_audit = false
"#,
            refresh = refresh_env(&account),
        ));
    }
    text
}

/// A net with Redis, PostgreSQL and the simulator, and `count` hosts that split the
/// accounts: every host sees all members and no unowned account, every account runs on
/// its owner (the same on every host), and every account has applied a chunk.
async fn cluster(count: usize) -> (Net, Vec<Host>) {
    cluster_with(count, "").await
}

/// [`cluster`], every host's configuration ending with `extra` (a `[chaos]` drill).
async fn cluster_with(count: usize, extra: &str) -> (Net, Vec<Host>) {
    let mut net = Net::new();
    net.start_redis();
    net.start_postgres();
    net.start_simulator(&["--latency", "2s", "--unlimited", "--seed", "7"]);
    let mut hosts: Vec<Host> = (0..count).map(|_| net.add_host()).collect();
    for host in &mut hosts {
        let config = format!("{}{extra}", cluster_config(&host.label));
        host.spawn_daemon(&config, RUST_LOG, &cluster_env());
    }
    let split = wait_until(Duration::from_secs(60), || {
        hosts.iter().all(|host| {
            host.api_get("/api/cluster").is_ok_and(|(status, body)| {
                status == 200
                    && body["members"].as_array().is_some_and(|m| m.len() == count)
                    && body["unowned"].as_array().is_some_and(Vec::is_empty)
            })
        }) && agreed_owners(&hosts).is_some()
    })
    .await;
    assert!(
        split,
        "the hosts did not agree on a split: {:?}\n{}",
        hosts
            .iter()
            .map(|host| host.api_get("/api/cluster").ok())
            .collect::<Vec<_>>(),
        logs(&hosts)
    );
    let working = wait_until(Duration::from_secs(60), || {
        let applied = hour_states(&net);
        account_ids()
            .iter()
            .all(|account| state_count(&applied, account, "APPLIED") >= 6)
    })
    .await;
    assert!(
        working,
        "every account applied a chunk: {:?}\n{}",
        hour_states(&net),
        logs(&hosts)
    );
    (net, hosts)
}

/// Every host's log, labelled (for failure messages).
fn logs(hosts: &[Host]) -> String {
    hosts
        .iter()
        .map(|host| format!("--- {} log:\n{}", host.label, host.daemon().logs()))
        .collect()
}

/// account -> (owner, supervisor state) as `GET /api/status` on `host` says.
fn accounts_on(host: &Host) -> Option<BTreeMap<String, (String, String)>> {
    let (status, body) = host.api_get("/api/status").ok()?;
    if status != 200 {
        return None;
    }
    body["accounts"]
        .as_array()?
        .iter()
        .map(|account| {
            Some((
                account["id"].as_str()?.to_string(),
                (
                    account["owner"].as_str()?.to_string(),
                    account["supervisor"]["state"]
                        .as_str()
                        .unwrap_or("-")
                        .to_string(),
                ),
            ))
        })
        .collect()
}

/// account -> owner when every host names the same live owner for every account and
/// each account runs on its owner.
fn agreed_owners(hosts: &[Host]) -> Option<BTreeMap<String, String>> {
    let views: Vec<BTreeMap<String, (String, String)>> =
        hosts.iter().map(accounts_on).collect::<Option<_>>()?;
    let owners: BTreeMap<String, String> = views[0]
        .iter()
        .map(|(account, (owner, _))| (account.clone(), owner.clone()))
        .collect();
    let consistent = owners.len() == ACCOUNTS
        && views.iter().all(|view| {
            view.iter()
                .all(|(account, (owner, _))| owners.get(account) == Some(owner))
        });
    let running = owners.iter().all(|(account, owner)| {
        hosts
            .iter()
            .position(|host| &host.label == owner)
            .is_some_and(|index| views[index][account].1 == "running")
    });
    (consistent && running).then_some(owners)
}

/// (account, state) -> hours of the stream in the shared ledger; empty while PostgreSQL
/// cannot be read.
fn hour_states(net: &Net) -> BTreeMap<(String, String), i64> {
    net.postgres(|client| {
        client
            .query(
                "SELECT account, state, count(*) FROM ledger_hours WHERE stream = $1 GROUP BY 1, 2",
                &[&STREAM],
            )
            .map(|rows| {
                rows.iter()
                    .map(|row| ((row.get(0), row.get(1)), row.get(2)))
                    .collect()
            })
    })
    .unwrap_or_default()
}

fn state_count(states: &BTreeMap<(String, String), i64>, account: &str, state: &str) -> i64 {
    states
        .get(&(account.to_string(), state.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Every hour of every account is APPLIED in the shared ledger.
fn all_applied(net: &Net) -> bool {
    let states = hour_states(net);
    account_ids().iter().all(|account| {
        state_count(&states, account, "APPLIED") >= LOOKBACK_HOURS
            && ["MISSING", "REQUESTED", "DOWNLOADED", "FAILED"]
                .iter()
                .all(|state| state_count(&states, account, state) == 0)
    })
}

/// Waits until every hour of every account is applied (the hosts converged).
async fn assert_converges(net: &Net, hosts: &[Host]) {
    let converged = wait_until(Duration::from_secs(90), || all_applied(net)).await;
    assert!(
        converged,
        "not every hour applied: {:?}\n{}",
        hour_states(net),
        logs(hosts)
    );
}

/// Waits until every host names the same owner for every account and each account runs
/// on its owner (and, with `expected`, that the owners are those). An account actor may
/// still be starting, or stopping on a host that lost it, for a moment after the ledger
/// converged, so this waits (10 s) instead of reading once; a failure shows each host's
/// view and its log.
async fn assert_owners_settle(
    hosts: &[Host],
    expected: Option<&BTreeMap<String, String>>,
    what: &str,
) {
    let settled = wait_until(Duration::from_secs(10), || {
        agreed_owners(hosts).is_some_and(|now| expected.is_none_or(|expected| &now == expected))
    })
    .await;
    assert!(
        settled,
        "{what}: expected {expected:?}, hosts say {:?}\n{}",
        hosts
            .iter()
            .map(|host| (host.label.clone(), accounts_on(host)))
            .collect::<Vec<_>>(),
        logs(hosts)
    );
}

/// (account, hour) -> the report id of the hours in flight (REQUESTED or DOWNLOADED).
fn hours_in_flight(net: &Net, accounts: &BTreeSet<String>) -> BTreeMap<(String, i64), String> {
    let accounts: Vec<String> = accounts.iter().cloned().collect();
    net.postgres(move |client| {
        client
            .query(
                "SELECT account, hour_utc, report_id FROM ledger_hours
                 WHERE stream = $1 AND account = ANY($2)
                   AND state IN ('REQUESTED', 'DOWNLOADED') AND report_id IS NOT NULL",
                &[&STREAM, &accounts],
            )
            .map(|rows| {
                rows.iter()
                    .map(|row| ((row.get(0), row.get(1)), row.get(2)))
                    .collect()
            })
    })
    .expect("read the hours in flight")
}

/// The shared ledger equals the simulator's truth: every applied hour of every account
/// holds exactly the rows the simulator served for that seller and hour, from the report
/// its ledger row names (an hour applied again from another report would show), no rows
/// for an hour that is not applied; and no window was requested again while an earlier
/// report of it was alive (`duplicate_create_reports`).
fn assert_postgres_matches_simulator(net: &Net) {
    type Row = (String, i64, i64);
    let served = net.sim_get("/_sim/served").expect("served rows");
    let mut truth: BTreeMap<(String, i64), BTreeSet<Row>> = BTreeMap::new();
    for row in served["rows"].as_array().expect("rows") {
        let seller = row["seller"].as_str().expect("seller");
        let account = seller
            .strip_prefix("seller-")
            .unwrap_or_else(|| panic!("served to an unknown seller {seller}"));
        let revenue = row["ordered_revenue"].as_f64().expect("revenue");
        truth
            .entry((account.to_string(), row["hour_utc"].as_i64().expect("hour")))
            .or_default()
            .insert((
                row["asin"].as_str().expect("asin").to_string(),
                row["ordered_units"].as_i64().expect("units"),
                (revenue * 100.0).round() as i64,
            ));
    }
    type Stored = (String, i64, String, i64, f64, Option<String>);
    type Applied = BTreeMap<(String, i64), Option<String>>;
    let (sales, applied): (Vec<Stored>, Applied) = net
        .postgres(|client| {
            let sales = client
                .query(
                    "SELECT account, hour_utc, asin, ordered_units, ordered_revenue, report_id
                     FROM vendor_realtime_sales",
                    &[],
                )?
                .iter()
                .map(|row| {
                    (
                        row.get(0),
                        row.get(1),
                        row.get(2),
                        row.get(3),
                        row.get(4),
                        row.get(5),
                    )
                })
                .collect();
            let applied = client
                .query(
                    "SELECT account, hour_utc, report_id FROM ledger_hours
                     WHERE stream = $1 AND state = 'APPLIED'",
                    &[&STREAM],
                )?
                .iter()
                .map(|row| ((row.get(0), row.get(1)), row.get(2)))
                .collect();
            Ok((sales, applied))
        })
        .expect("read the shared ledger");
    let mut stored: BTreeMap<(String, i64), BTreeSet<Row>> = BTreeMap::new();
    for (account, hour, asin, units, revenue, report_id) in sales {
        let key = (account, hour);
        let ledger_report = applied
            .get(&key)
            .unwrap_or_else(|| panic!("rows stored for {key:?}, which is not applied"));
        assert_eq!(
            &report_id, ledger_report,
            "{key:?}: a row from another report than the one its hour was applied from"
        );
        stored
            .entry(key)
            .or_default()
            .insert((asin, units, (revenue * 100.0).round() as i64));
    }
    for account in account_ids() {
        assert!(
            applied.keys().any(|(applied_to, _)| applied_to == &account),
            "{account}: nothing applied"
        );
    }
    for key in applied.keys() {
        assert_eq!(
            stored.get(key),
            truth.get(key),
            "{key:?} differs from what the simulator served"
        );
    }
    let stats = net.sim_get("/_sim/stats").expect("stats");
    assert_eq!(
        stats["duplicate_create_reports"], 0,
        "a window was requested again while its earlier report was alive: {stats}"
    );
}

/// No account of any host is quarantined (or halted, or backing off after a crash).
fn assert_no_account_crashed(hosts: &[Host]) {
    for host in hosts {
        let accounts = accounts_on(host).unwrap_or_else(|| {
            panic!(
                "{} answers /api/status: {:?}\n{}",
                host.label,
                host.api_get("/api/status"),
                host.daemon().logs()
            )
        });
        for (account, (owner, state)) in &accounts {
            // "-": never started on this host (another member runs it).
            assert!(
                ["running", "stopped", "-"].contains(&state.as_str()),
                "{}: {account} (run by {owner}) is {state}\n{}",
                host.label,
                host.daemon().logs()
            );
        }
        assert_no_crash_logged(host);
    }
}

/// `host` logged no account crash and no quarantine.
fn assert_no_crash_logged(host: &Host) {
    let crashed: Vec<LogLine> = host
        .log()
        .into_iter()
        .filter(|line| line.message.contains("crashed") || line.message.contains("quarantin"))
        .collect();
    assert!(crashed.is_empty(), "{}: {crashed:?}", host.label);
}

/// The accounts `owners` gives to `member`.
fn owned_by(owners: &BTreeMap<String, String>, member: &str) -> BTreeSet<String> {
    owners
        .iter()
        .filter(|(_, owner)| owner.as_str() == member)
        .map(|(account, _)| account.clone())
        .collect()
}

/// Waits until the lease of every one of `accounts` is held by one of `pids`; returns
/// how long after `since` each was first seen so.
async fn wait_for_leases(
    net: &Net,
    accounts: &BTreeSet<String>,
    pids: &[u32],
    since: Instant,
    deadline: Duration,
) -> BTreeMap<String, Duration> {
    let mut taken: BTreeMap<String, Duration> = BTreeMap::new();
    wait_until(deadline, || {
        for account in accounts {
            if taken.contains_key(account) {
                continue;
            }
            let scope = format!("{account}/{STREAM}");
            if let Ok(Some(lease)) = net.lease(&scope) {
                if lease.owner_pid().is_some_and(|pid| pids.contains(&pid)) {
                    taken.insert(account.clone(), since.elapsed());
                }
            }
        }
        taken.len() == accounts.len()
    })
    .await;
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_member_moves_its_accounts_and_they_resume_their_reports_by_report_id() {
    let (net, mut hosts) = cluster(3).await;
    let owners = agreed_owners(&hosts).expect("owners");
    // The member with the most accounts dies.
    let victim = (0..hosts.len())
        .max_by_key(|index| owned_by(&owners, &hosts[*index].label).len())
        .expect("a host");
    let orphans = owned_by(&owners, &hosts[victim].label);
    assert!(
        !orphans.is_empty(),
        "{} runs an account: {owners:?}",
        hosts[victim].label
    );
    // The kill lands while a report is in flight: right after the member stored a new
    // report's id (reports take 2 s).
    let fresh = wait_until(Duration::from_secs(30), || {
        let since = epoch_ms() - FRESH_REQUEST.as_millis() as i64;
        hosts[victim].log().iter().rev().any(|line| {
            line.at_ms() >= since
                && line.message == "report requested"
                && line.field("operation").is_none()
        })
    })
    .await;
    assert!(
        fresh,
        "{} requested a report\n{}",
        hosts[victim].label,
        logs(&hosts)
    );
    hosts[victim].kill();
    let killed_at = Instant::now();
    let in_flight = hours_in_flight(&net, &orphans);
    let survivors: Vec<u32> = hosts
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != victim)
        .map(|(_, host)| host.pid())
        .collect();
    let bound = cluster_failover_bound();
    let taken = wait_for_leases(&net, &orphans, &survivors, killed_at, bound * 3).await;
    eprintln!(
        "failover after SIGKILL of {} ({} accounts): {taken:?} (bound: member_ttl {MEMBER_TTL:?} + 2 x heartbeat {HEARTBEAT:?} + lease ttl {LEASE_TTL:?} = {bound:?})",
        hosts[victim].label,
        orphans.len()
    );
    assert_eq!(
        taken.len(),
        orphans.len(),
        "every account of the killed member leased by a survivor\n{}",
        logs(&hosts)
    );
    let slowest = taken.values().max().copied().unwrap_or_default();
    assert!(
        slowest <= bound,
        "failover took {slowest:?}, above {bound:?}"
    );
    let survivors_hosts: Vec<Host> = {
        let mut all = hosts;
        let dead = all.remove(victim);
        drop(dead);
        all
    };
    let moved = wait_until(Duration::from_secs(10), || {
        agreed_owners(&survivors_hosts).is_some_and(|now| {
            orphans.iter().all(|account| {
                survivors_hosts
                    .iter()
                    .any(|host| host.label == now[account])
            })
        })
    })
    .await;
    assert!(
        moved,
        "the survivors agree on the new owners\n{}",
        logs(&survivors_hosts)
    );
    assert_converges(&net, &survivors_hosts).await;
    eprintln!(
        "every hour of every account applied {:?} after the kill; {} hour(s) were in flight on the killed member",
        killed_at.elapsed(),
        in_flight.len()
    );
    // The killed member's reports in flight were resumed by their reportId: the hour
    // was applied from the very report it had requested.
    assert!(
        !in_flight.is_empty(),
        "the killed member had reports in flight"
    );
    let applied = net
        .postgres(|client| {
            client
                .query(
                    "SELECT account, hour_utc, report_id FROM ledger_hours WHERE stream = $1",
                    &[&STREAM],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
                        .collect::<BTreeMap<(String, i64), Option<String>>>()
                })
        })
        .expect("ledger");
    for (hour, report_id) in &in_flight {
        assert_eq!(
            applied.get(hour).cloned().flatten().as_deref(),
            Some(report_id.as_str()),
            "{hour:?} in flight as {report_id} when its member died"
        );
    }
    assert_no_account_crashed(&survivors_hosts);
    assert_postgres_matches_simulator(&net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_is_waited_out_without_quarantine() {
    let (mut net, hosts) = cluster(2).await;
    let stopped_at_ms = epoch_ms();
    net.postgres_mut().stop();
    let stopped_at = Instant::now();
    // Both hosts notice (a pool checkout fails and the store says it is unreachable:
    // from then on it knows it is down), and the outage lasts longer than a lease, so
    // the runs in flight when it began are over. Any other warning is not enough: a host
    // whose store calls are still waiting for a connection does not know yet, and its
    // `/api/status` waits like them (503 `store_slow` after 10 s).
    let mut noticed_after = None;
    let noticed = wait_until(Duration::from_secs(45), || {
        let all = hosts.iter().all(|host| {
            host.log().iter().any(|line| {
                line.at_ms() >= stopped_at_ms
                    && line.level == "WARN"
                    && line.message.contains("postgresql is unreachable")
            })
        });
        if all && noticed_after.is_none() {
            noticed_after = Some(stopped_at.elapsed());
        }
        all && stopped_at.elapsed() >= POSTGRES_OUTAGE
    })
    .await;
    assert!(
        noticed,
        "both hosts noticed PostgreSQL is down\n{}",
        logs(&hosts)
    );
    eprintln!("both hosts logged the outage {noticed_after:?} after postgres stopped");
    // While it is down, no account is given up on, and `/api/status` (which reads the
    // hours from PostgreSQL) says at once that the store is down instead of waiting out
    // a pool deadline per read.
    for host in &hosts {
        assert_no_crash_logged(host);
        let asked = Instant::now();
        let (code, body) = host.api_get("/api/status").expect("/api/status answers");
        let took = asked.elapsed();
        assert_eq!(code, 503, "{}: {body}\n{}", host.label, logs(&hosts));
        assert_eq!(
            body["error"],
            "store_unavailable",
            "{}: {body}\n{}",
            host.label,
            logs(&hosts)
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("unreachable since"), "{message}");
        assert!(
            took < Duration::from_secs(3),
            "/api/status took {took:?} with postgres down"
        );
        eprintln!("/api/status answered 503 in {took:?} with postgres down");
    }
    net.postgres_mut().start();
    eprintln!("postgres was down {:?}", stopped_at.elapsed());
    let started = Instant::now();
    assert_converges(&net, &hosts).await;
    eprintln!(
        "every hour of every account applied {:?} after postgres came back",
        started.elapsed()
    );
    assert_owners_settle(&hosts, None, "every account runs on its owner").await;
    assert_no_account_crashed(&hosts);
    assert_postgres_matches_simulator(&net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_past_its_leases_loses_them_and_the_shared_ledger_stays_true() {
    let (net, hosts) = cluster(2).await;
    let owners = agreed_owners(&hosts).expect("owners");
    let frozen = (0..hosts.len())
        .max_by_key(|index| owned_by(&owners, &hosts[*index].label).len())
        .expect("a host");
    let other = 1 - frozen;
    let orphans = owned_by(&owners, &hosts[frozen].label);
    hosts[frozen].freeze();
    let frozen_at = Instant::now();
    let bound = cluster_failover_bound();
    let taken = wait_for_leases(&net, &orphans, &[hosts[other].pid()], frozen_at, bound * 3).await;
    eprintln!(
        "takeover from a frozen member ({} accounts): {taken:?} (bound {bound:?})",
        orphans.len()
    );
    assert_eq!(
        taken.len(),
        orphans.len(),
        "every account taken over\n{}",
        logs(&hosts)
    );
    let slowest = taken.values().max().copied().unwrap_or_default();
    assert!(
        slowest <= bound,
        "takeover took {slowest:?}, above {bound:?}"
    );
    // The new owner works on: a chunk more applied for the frozen member's accounts.
    let before = hour_states(&net);
    let progressed = wait_until(Duration::from_secs(30), || {
        let now = hour_states(&net);
        orphans.iter().all(|account| {
            state_count(&now, account, "APPLIED") > state_count(&before, account, "APPLIED")
                || state_count(&now, account, "APPLIED") >= LOOKBACK_HOURS
        })
    })
    .await;
    assert!(
        progressed,
        "{} works the taken accounts\n{}",
        hosts[other].label,
        logs(&hosts)
    );

    let thawed_at_ms = epoch_ms();
    hosts[frozen].thaw();
    // It learns its accounts are gone, whichever comes first after SIGCONT: its own
    // registration lapsed by its clock (it stops every account, as for a move), a lease
    // expired by its clock, a refused renewal or a write refused by the fence. Then it
    // comes back as a member: the split is restored.
    let knows_lost = |line: &LogLine| {
        line.at_ms() >= thawed_at_ms
            && (line
                .message
                .contains("lease expired by this process's clock")
                || line.message.contains("lease lost")
                || line.message.contains("lease taken over")
                || (line.message.contains("account ownership changed")
                    && line.fields["lost"].as_u64().is_some_and(|lost| lost > 0)))
    };
    let lost = wait_until(Duration::from_secs(20), || {
        hosts[frozen].log().iter().any(knows_lost)
    })
    .await;
    assert!(
        lost,
        "the resumed member knows its leases are gone\n{}",
        logs(&hosts)
    );
    let refused = hosts[frozen]
        .log()
        .iter()
        .filter(|line| line.at_ms() >= thawed_at_ms && line.message.contains("lease taken over"))
        .count();
    eprintln!("resumed member: {refused} write(s) refused by the store's fence");
    let rejoined = wait_until(Duration::from_secs(30), || {
        agreed_owners(&hosts).is_some_and(|now| now == owners)
    })
    .await;
    assert!(
        rejoined,
        "the resumed member runs its share again\n{}",
        logs(&hosts)
    );
    assert_converges(&net, &hosts).await;
    assert_no_account_crashed(&hosts);
    assert_postgres_matches_simulator(&net);
}

/// The frozen member of the scenario above, frozen where the fence is the only guard: a
/// chaos drill pauses acct-0's second apply between its validated document and its write
/// (after the last lease check), the test freezes the member during that pause and keeps
/// it frozen past member_ttl, its leases and the pause's end, while the other member takes
/// acct-0 over and applies it on. After SIGCONT the pause is over and the write goes out
/// with the old lease's fence: PostgreSQL refuses it in the write's transaction, the member
/// logs "lease taken over" for that scope, and the shared ledger still equals the
/// simulator's truth (the window the frozen member had downloaded applied once, by the
/// new owner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_a_member_frozen_past_its_lease_is_refused_by_the_fence_in_postgres() {
    const PAUSED: &str = "acct-0";
    let pause = Duration::from_secs(30);
    let drill = format!(
        "\n[chaos]\nenabled = true\naccount = \"{PAUSED}\"\naction = \"pause_before_apply\"\npause = \"{}s\"\nnth_unit = 2\n",
        pause.as_secs()
    );
    let (net, hosts) = cluster_with(2, &drill).await;
    let pausing = |line: &LogLine| line.message.contains("chaos drill: pausing before apply");
    let paused = wait_until(Duration::from_secs(60), || {
        hosts.iter().any(|host| host.log().iter().any(pausing))
    })
    .await;
    assert!(paused, "{PAUSED}'s second apply paused\n{}", logs(&hosts));
    let frozen = hosts
        .iter()
        .position(|host| host.log().iter().any(pausing))
        .expect("the pausing member");
    let other = 1 - frozen;
    hosts[frozen].freeze();
    let frozen_at = Instant::now();
    let frozen_at_ms = epoch_ms();
    let pause_ends_ms = hosts[frozen]
        .log()
        .iter()
        .find(|line| pausing(line))
        .map(|line| line.at_ms() + pause.as_millis() as i64)
        .expect("the pause's line");
    assert!(
        frozen_at_ms < pause_ends_ms,
        "the member was frozen after its pause had ended; nothing to prove\n{}",
        logs(&hosts)
    );
    let before = hour_states(&net);
    let orphans = BTreeSet::from([PAUSED.to_string()]);
    let bound = cluster_failover_bound();
    let taken = wait_for_leases(&net, &orphans, &[hosts[other].pid()], frozen_at, bound * 3).await;
    assert_eq!(
        taken.len(),
        1,
        "{PAUSED} taken over by {}\n{}",
        hosts[other].label,
        logs(&hosts)
    );
    // The new owner applies on (the fence row now carries its lease), and the frozen
    // member's pause has ended by the time it is resumed.
    let progressed = wait_until(Duration::from_secs(60), || {
        let now = hour_states(&net);
        epoch_ms() > pause_ends_ms + 500
            && (state_count(&now, PAUSED, "APPLIED") > state_count(&before, PAUSED, "APPLIED")
                || state_count(&now, PAUSED, "APPLIED") >= LOOKBACK_HOURS)
    })
    .await;
    assert!(
        progressed,
        "{} applies {PAUSED} on\n{}",
        hosts[other].label,
        logs(&hosts)
    );

    let thawed_at_ms = epoch_ms();
    hosts[frozen].thaw();
    let refused_write = |line: &LogLine| {
        line.at_ms() >= thawed_at_ms
            && line
                .message
                .contains("lease taken over; stopped before writing")
            && line.fields["scope"]
                .as_str()
                .is_some_and(|scope| scope.starts_with(&format!("{PAUSED}/")))
    };
    let refused = wait_until(Duration::from_secs(30), || {
        hosts[frozen].log().iter().any(refused_write)
    })
    .await;
    assert!(
        refused,
        "the resumed member's write for {PAUSED} refused by the fence\n{}",
        logs(&hosts)
    );
    let resumed_apply = hosts[frozen].log().iter().any(|line| {
        line.at_ms() >= thawed_at_ms && line.message.contains("chaos drill: pause over; applying")
    });
    assert!(
        resumed_apply,
        "the refused write is the paused apply\n{}",
        logs(&hosts)
    );
    assert_converges(&net, &hosts).await;
    assert_no_account_crashed(&hosts);
    assert_postgres_matches_simulator(&net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_from_redis_loses_its_accounts_to_the_others_and_rejoins_after_the_heal() {
    let (net, hosts) = cluster(2).await;
    let owners = agreed_owners(&hosts).expect("owners");
    let cut = (0..hosts.len())
        .max_by_key(|index| owned_by(&owners, &hosts[*index].label).len())
        .expect("a host");
    let other = 1 - cut;
    let orphans = owned_by(&owners, &hosts[cut].label);
    let cut_at_ms = epoch_ms();
    hosts[cut].cut_from(Service::Redis);
    let cut_at = Instant::now();
    let bound = cluster_failover_bound();
    let taken = wait_for_leases(&net, &orphans, &[hosts[other].pid()], cut_at, bound * 3).await;
    eprintln!(
        "takeover from a member cut from redis ({} accounts): {taken:?} (bound {bound:?})",
        orphans.len()
    );
    assert_eq!(
        taken.len(),
        orphans.len(),
        "every account taken over\n{}",
        logs(&hosts)
    );
    let slowest = taken.values().max().copied().unwrap_or_default();
    assert!(
        slowest <= bound,
        "takeover took {slowest:?}, above {bound:?}"
    );
    // The new owner works on while the cut member still reaches PostgreSQL.
    let before = hour_states(&net);
    let progressed = wait_until(Duration::from_secs(30), || {
        let now = hour_states(&net);
        orphans.iter().all(|account| {
            state_count(&now, account, "APPLIED") > state_count(&before, account, "APPLIED")
                || state_count(&now, account, "APPLIED") >= LOOKBACK_HOURS
        })
    })
    .await;
    assert!(
        progressed,
        "{} works the taken accounts\n{}",
        hosts[other].label,
        logs(&hosts)
    );
    // The cut member's leases were renewed last before the cut: from one lease TTL after
    // it, whatever it still does is without a lease. It makes no provider call then, and
    // any write it attempted was refused by the fence in the write's transaction.
    let log = hosts[cut].log();
    let late = calls_since(&log, cut_at_ms + LEASE_TTL.as_millis() as i64);
    assert!(
        late.is_empty(),
        "{} called the simulator after its leases expired: {late:?}",
        hosts[cut].label
    );
    let refused = log
        .iter()
        .filter(|line| line.message.contains("lease taken over"))
        .count();
    eprintln!("cut member: {refused} write(s) refused by the store's fence");

    let healed_at = Instant::now();
    hosts[cut].heal(Service::Redis);
    let rejoined = wait_until(Duration::from_secs(30), || {
        agreed_owners(&hosts).is_some_and(|now| now == owners)
    })
    .await;
    assert!(
        rejoined,
        "the healed member runs its share again\n{}",
        logs(&hosts)
    );
    eprintln!(
        "healed member rejoined {:?} after the heal",
        healed_at.elapsed()
    );
    assert_converges(&net, &hosts).await;
    assert_no_account_crashed(&hosts);
    assert_postgres_matches_simulator(&net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_from_postgres_keeps_its_accounts_and_converges_after_the_heal() {
    let (net, hosts) = cluster(2).await;
    let owners = agreed_owners(&hosts).expect("owners");
    let cut = (0..hosts.len())
        .max_by_key(|index| owned_by(&owners, &hosts[*index].label).len())
        .expect("a host");
    let stranded = owned_by(&owners, &hosts[cut].label);
    let cut_at_ms = epoch_ms();
    hosts[cut].cut_from(Service::Postgres);
    let cut_at = Instant::now();
    // It notices (a store call fails and says so); the cut lasts longer than a lease.
    let noticed = wait_until(Duration::from_secs(30), || {
        hosts[cut].log().iter().any(|line| {
            line.at_ms() >= cut_at_ms && (line.level == "WARN" || line.level == "ERROR")
        }) && cut_at.elapsed() >= POSTGRES_OUTAGE
    })
    .await;
    assert!(noticed, "the cut member noticed\n{}", logs(&hosts));
    // It is still a live member (Redis reaches it): its accounts stay its own, and wait.
    let during = hour_states(&net);
    assert_no_crash_logged(&hosts[cut]);
    let healed_at = Instant::now();
    hosts[cut].heal(Service::Postgres);
    eprintln!(
        "cut from postgres for {:?}; its accounts then: {:?}",
        cut_at.elapsed(),
        stranded
            .iter()
            .map(|account| (account, state_count(&during, account, "APPLIED")))
            .collect::<Vec<_>>()
    );
    assert_converges(&net, &hosts).await;
    eprintln!(
        "every hour of every account applied {:?} after the heal",
        healed_at.elapsed()
    );
    assert_owners_settle(&hosts, Some(&owners), "the split holds").await;
    assert_no_account_crashed(&hosts);
    assert_postgres_matches_simulator(&net);
}
