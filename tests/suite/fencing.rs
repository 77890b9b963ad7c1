//! Fencing and owner identity under faults (issue 13, points 6 and 9): Redis restarted
//! empty under a running daemon, units resumed after a restart, writes without a fence,
//! two daemons with one pid and hostname, and what doctor says about each.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marketsync::bench::redis_server::RedisServer;
use marketsync::domain::{now_ts, HourWindow, HOUR};
use marketsync::lock::{
    instance_id, local_hostname, local_owner, namespace_tag, owner_is_dead_local, LockService,
    OwnerId,
};
use marketsync::shapes::{LeasedOutcome, RunOutcome};
use marketsync::sim::SimConfig;
use marketsync::store::{Cooldown, LedgerError, LedgerStore, SqliteLedger, WriteFence};
use tokio_util::sync::CancellationToken;

use super::http::synced_fixture;
use crate::common::{
    applied_hours, fast_sim, marketsync, wait_until, DaemonProcess, Fixture, TestSim,
};

const SCOPE: &str = "acct/vendor_rt_sales";
const STREAM: &str = "vendor_rt_sales";

/// Makes the store remember `fence` as the newest for the fixture's stream, the way a
/// daemon's writes leave it (one hour claimed and released under that fence).
fn store_remembers_fence(ledger: &SqliteLedger, fence: u64) {
    let hour = marketsync::domain::floor_hour(now_ts()) - 400 * HOUR;
    ledger
        .seed("acct", STREAM, HourWindow::new(hour, hour + HOUR), now_ts())
        .unwrap();
    let claim = ledger
        .claim(
            "acct",
            STREAM,
            1,
            marketsync::config::ClaimOrder::OldestFirst,
            "old-daemon:1@host",
            WriteFence::Lease(fence),
            now_ts(),
        )
        .unwrap()
        .expect("the planted hour is claimable");
    ledger.release(&claim, "planted", now_ts()).unwrap();
    ledger.prune("acct", STREAM, hour + HOUR).unwrap();
    assert_eq!(ledger.newest_fence("acct", STREAM).unwrap(), fence);
}

/// (owner, fence) of every claim, in claim order.
fn claim_fences(ledger: &SqliteLedger) -> Vec<(String, Option<i64>)> {
    ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare("SELECT claimed_by, fence FROM ledger_claims ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_mid_run_claims_continue_above_the_stores_newest_fence() {
    let mut redis = RedisServer::start().expect("redis-server");
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let fixture = Fixture::with_globals(
        &sim,
        &format!(
            "[redis]\nurl = \"{}\"\n[locks]\nttl = \"3s\"\nhygiene_interval = \"1s\"\n",
            redis.url()
        ),
        // One window in flight at a time, so claims go on after Redis comes back.
        "lookback = \"36h\"\ninterval = \"1s\"\npoll_min = \"100ms\"\npoll_max = \"200ms\"\nmax_in_flight = 1",
    );
    // The database of a daemon that ran long before: its newest fence is 122 while the
    // Redis this daemon starts with knows nothing (issue 13: 146 s of refusals).
    store_remembers_fence(&fixture.open_ledger(), 122);
    let mut daemon = DaemonProcess::spawn(&fixture.config_path);
    let first = wait_until(Duration::from_secs(15), || {
        applied_hours(&fixture.config_path) >= 6
    })
    .await;
    assert!(first, "first chunk applied; logs:\n{}", daemon.logs());
    let before_restart = claim_fences(&fixture.open_ledger());
    assert!(
        before_restart
            .iter()
            .filter(|(owner, _)| owner.starts_with("auto-sync"))
            .all(|(_, fence)| fence.is_some_and(|fence| fence > 122)),
        "the first lease's fence is above the store's newest (122): {before_restart:?}"
    );
    let newest_before = fixture.open_ledger().newest_fence("acct", STREAM).unwrap();

    // Redis comes back empty: no dump, no fence counter, no lease.
    redis.stop();
    let _ = std::fs::remove_file(redis.dir().join("dump.rdb"));
    redis.restart().expect("redis back, empty");
    let restarted = Instant::now();
    let claimed_again = wait_until(Duration::from_secs(15), || {
        claim_fences(&fixture.open_ledger()).len() > before_restart.len()
    })
    .await;
    let resumed_in = restarted.elapsed();
    eprintln!("claims resumed {resumed_in:?} after redis came back empty");
    let converged = wait_until(Duration::from_secs(20), || {
        applied_hours(&fixture.config_path) == 36
    })
    .await;
    let logs = daemon.logs();
    assert!(
        claimed_again,
        "claims continued after the restart; logs:\n{logs}"
    );
    assert!(
        resumed_in < Duration::from_secs(10),
        "claims resumed {resumed_in:?} after redis came back empty (issue 13: 146 s)"
    );
    assert!(converged, "all hours applied; logs:\n{logs}");
    assert!(
        !logs.contains("stopped before writing"),
        "no fence refusal after redis came back empty; logs:\n{logs}"
    );
    let after: Vec<i64> = claim_fences(&fixture.open_ledger())[before_restart.len()..]
        .iter()
        .map(|(_, fence)| fence.expect("every daemon claim carries a fence"))
        .collect();
    assert!(
        after.iter().all(|fence| *fence as u64 > newest_before),
        "claims after the restart carry fences above the store's newest ({newest_before}): {after:?}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_above_sets_the_redis_fence_past_the_floor_in_one_step() {
    let redis = RedisServer::start().expect("redis-server");
    let locks = LockService::redis(&redis.url(), "marketsync:")
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    let (lease, _) = locks
        .acquire_above(SCOPE, "a:1@h#x", ttl, 122)
        .await
        .unwrap();
    assert_eq!(lease.fence, 123);
    locks.release(&lease).await.unwrap();
    // A lower floor never takes the counter back.
    let (lease, _) = locks.acquire_above(SCOPE, "a:1@h#x", ttl, 5).await.unwrap();
    assert_eq!(lease.fence, 124);
    locks.release(&lease).await.unwrap();
    let err = locks
        .acquire_above(SCOPE, "a:1@h#x", ttl, u64::MAX)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fence"), "{err}");
    // The SQLite backend does the same in its transaction.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = LockService::sqlite(&dir.path().join("locks.db"))
        .await
        .unwrap();
    let (lease, _) = sqlite
        .acquire_above(SCOPE, "a:1@h#x", ttl, 40)
        .await
        .unwrap();
    assert_eq!(lease.fence, 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_units_carry_the_current_leases_fence() {
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let fixture = Fixture::new(
        &sim,
        "lookback = \"6h\"\nchunk = \"6h\"\npoll_min = \"100ms\"\npoll_max = \"300ms\"",
    );
    let locks = LockService::sqlite(&fixture.database_path().with_extension("locks"))
        .await
        .unwrap();
    let ledger = fixture.open_ledger();
    let cancel = CancellationToken::new();
    let mut context = fixture.context(&ledger, cancel.clone());
    context.owner = local_owner("auto-sync");
    let run_keeper =
        marketsync::lock::keeper::LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
            .await
            .unwrap();
    let first = tokio::spawn(async move {
        context
            .run_leased(&run_keeper, Duration::from_secs(30))
            .await
    });
    let watched = ledger.clone();
    let requested = wait_until(Duration::from_secs(10), || {
        watched
            .in_flight("acct", STREAM)
            .map(|claims| claims.iter().any(|claim| claim.report_id.is_some()))
            .unwrap_or(false)
    })
    .await;
    assert!(requested, "the report id was persisted");
    cancel.cancel();
    assert_eq!(
        first.await.unwrap().unwrap(),
        LeasedOutcome::Ran(RunOutcome::Cancelled)
    );
    let first_fence = ledger.newest_fence("acct", STREAM).unwrap();
    assert!(first_fence >= 1);
    let resumed = ledger.in_flight("acct", STREAM).unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].fence, WriteFence::Missing, "read back unstamped");

    // The restarted daemon: a new lease (a newer fence) works the unit in flight, and
    // only that unit (nothing new to claim), so the store's newest fence can only have
    // moved through the resumed unit's writes.
    let ledger = fixture.open_ledger();
    let mut context = fixture.context(&ledger, CancellationToken::new());
    context.owner = local_owner("auto-sync");
    let outcome = context
        .run_leased(
            &marketsync::lock::keeper::LeaseKeeper::spawn(locks.clone(), Duration::from_secs(3600))
                .await
                .unwrap(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        LeasedOutcome::Ran(RunOutcome::Finished {
            applied: 6,
            failed: 0
        })
    );
    assert_eq!(claim_fences(&ledger).len(), 1, "no new claim was made");
    let second_fence = ledger.newest_fence("acct", STREAM).unwrap();
    assert!(
        second_fence > first_fence,
        "the resumed unit's writes carried the new lease's fence ({second_fence} > {first_fence})"
    );
}

#[test]
fn an_unfenced_runner_write_is_refused_by_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(&dir.path().join("marketsync.db")).unwrap();
    let start = marketsync::domain::floor_hour(now_ts()) - 6 * HOUR;
    ledger
        .seed(
            "acct",
            STREAM,
            HourWindow::new(start, start + 6 * HOUR),
            now_ts(),
        )
        .unwrap();
    let claimed = ledger
        .claim(
            "acct",
            STREAM,
            6,
            marketsync::config::ClaimOrder::NewestFirst,
            "auto-sync:1@h#a",
            WriteFence::Lease(3),
            now_ts(),
        )
        .unwrap()
        .unwrap();
    ledger
        .set_report_id(&claimed, "report-1", now_ts())
        .unwrap();
    // Read back as a restarted daemon does: no fence until the runner stamps one.
    let resumed = ledger.in_flight("acct", STREAM).unwrap().remove(0);
    assert_eq!(resumed.fence, WriteFence::Missing);
    let refusals = [
        ledger.set_report_id(&resumed, "late", now_ts()),
        ledger.mark_downloaded(&resumed, "doc", "/nonexistent", now_ts()),
        ledger.fail(&resumed, "late", now_ts() + 60, now_ts()),
        ledger.release(&resumed, "late", now_ts()),
    ];
    for result in refusals {
        let err = result.unwrap_err();
        assert!(matches!(err, LedgerError::Unfenced { .. }), "{err}");
        assert!(
            err.to_string().contains("must carry its lease's fence"),
            "{err}"
        );
    }
    let err = ledger
        .claim(
            "acct",
            STREAM,
            1,
            marketsync::config::ClaimOrder::NewestFirst,
            "auto-sync:1@h#a",
            WriteFence::Missing,
            now_ts(),
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::Unfenced { .. }), "{err}");
    // Cursor and job writes refuse it too.
    let err = ledger
        .with_conn(|conn| {
            marketsync::store::cursors::record_failure(
                conn,
                "acct",
                "orders",
                WriteFence::Missing,
                "late",
                now_ts(),
                now_ts(),
            )
        })
        .unwrap_err();
    assert!(matches!(err, LedgerError::Unfenced { .. }), "{err}");
    let claimer = marketsync::store::jobs::Claimer {
        provider: "stockx",
        account: "acct",
        stream: "market_data",
        owner: "auto-sync:1@h#a",
        fence: WriteFence::Missing,
    };
    assert!(marketsync::store::jobs::claim(&ledger, &claimer, 1, 60, now_ts()).is_err());
    // Stamped with the lease's fence, the same unit goes through.
    let stamped = marketsync::store::Claim {
        fence: WriteFence::Lease(3),
        ..resumed
    };
    ledger
        .fail(&stamped, "boom", now_ts() + 60, now_ts())
        .unwrap();
}

#[test]
fn owners_carry_an_instance_id_and_old_owners_still_parse() {
    let owner = local_owner("auto-sync");
    let id = OwnerId::parse(&owner).expect("own owner parses");
    assert_eq!(id.task, "auto-sync");
    assert_eq!(id.pid, std::process::id());
    assert_eq!(id.instance, Some(instance_id()));
    assert_eq!(id.namespace_tag(), namespace_tag());
    let old = OwnerId::parse("auto-sync:1234@web1").expect("old owner parses");
    assert_eq!(
        (old.task, old.pid, old.host, old.instance),
        ("auto-sync", 1234, "web1", None)
    );
    assert_eq!(
        marketsync::lock::parse_owner("auto-sync:4242@web1#3f9a2c-5e1f03a2"),
        Some(("auto-sync", 4242, "web1"))
    );
    assert_eq!(OwnerId::parse("auto-sync:1@web1#"), None);
}

/// An owner as another container on this host (same hostname, same pid as ours: both
/// PID 1 in their namespaces) writes it: another instance, another namespace tag.
fn other_container_owner(pid: u32) -> String {
    let host = local_hostname().expect("hostname");
    let ours = namespace_tag().unwrap_or("00000000");
    let theirs = if ours == "0badc0de" {
        "0ddba11a"
    } else {
        "0badc0de"
    };
    format!("auto-sync:{pid}@{host}#a1b2c3-{theirs}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_with_one_pid_and_hostname_never_take_each_others_live_lease() {
    let redis = RedisServer::start().expect("redis-server");
    let locks = LockService::redis(&redis.url(), "marketsync:")
        .await
        .unwrap();
    let our_pid = std::process::id();
    let theirs = other_container_owner(our_pid);
    assert!(
        !owner_is_dead_local(&theirs),
        "another namespace proves nothing"
    );
    assert!(!owner_is_dead_local(&other_container_owner(1)));
    assert!(
        !owner_is_dead_local(&local_owner("auto-sync")),
        "we are alive"
    );
    // Same namespace, our pid, another instance: that process was replaced by us.
    if let Some(tag) = namespace_tag() {
        let host = local_hostname().unwrap();
        assert!(owner_is_dead_local(&format!(
            "auto-sync:{our_pid}@{host}#ffffff-{tag}"
        )));
    }

    let (their_lease, _) = locks
        .acquire_reporting(SCOPE, &theirs, Duration::from_secs(30))
        .await
        .unwrap();
    // Our runner (same pid, same hostname, our instance) finds the scope busy again and
    // again; the hygiene pass leaves the live lease alone.
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"");
    let ledger = fixture.open_ledger();
    let mut context = fixture.context(&ledger, CancellationToken::new());
    context.owner = local_owner("auto-sync");
    for _ in 0..5 {
        let outcome = context
            .run_leased(
                &marketsync::lock::keeper::LeaseKeeper::spawn(
                    locks.clone(),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap(),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert!(
            matches!(&outcome, LeasedOutcome::Busy { holder, .. } if *holder == theirs),
            "{outcome:?}"
        );
        marketsync::lock::lock_hygiene(&locks).await;
    }
    let held = locks.list().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].owner, theirs, "their live lease was never stolen");
    assert_eq!(held[0].fence, their_lease.fence);
    assert!(
        claim_fences(&ledger).is_empty(),
        "we never claimed under their lease"
    );
}

/// Runs `marketsync --config PATH doctor`: (exit code, stdout).
async fn doctor(config_path: &Path) -> (i32, String) {
    let config_path = config_path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let output = marketsync()
            .env("RUST_LOG", "warn")
            .arg("--config")
            .arg(&config_path)
            .arg("doctor")
            .output()
            .expect("run marketsync doctor");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    })
    .await
    .expect("doctor task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_fence_refusal_loop() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    // What the runner records after refusals in a row (see shapes::runner).
    ledger
        .set_cooldown(&Cooldown {
            scope: marketsync::shapes::lock_scope("acct", STREAM),
            reason: marketsync::shapes::FENCE_REFUSED.to_string(),
            started_at: now_ts() - 30,
            until_at: now_ts() + 600,
            detail: Some(
                "7 refusal(s) in a row: a write carried fence 4, the store has seen 122"
                    .to_string(),
            ),
        })
        .unwrap();
    let (code, out) = doctor(&fixture.config_path).await;
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|line| line.contains("fence refusal loop"))
        .unwrap_or_else(|| panic!("no fence refusal finding:\n{out}"));
    assert!(line.starts_with("[action] acct/vendor_rt_sales"), "{line}");
    assert!(
        line.contains("7 refusal(s)") && line.contains("fix:"),
        "{line}"
    );
    assert!(!out.contains("all is well"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_live_lease_held_on_another_host_without_offering_force() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, _ledger) = synced_fixture(&sim).await;
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    let holder = "auto-sync:4242@web9.example#3f9a2c-5e1f03a2";
    locks
        .acquire(SCOPE, holder, Duration::from_secs(600))
        .await
        .unwrap();
    let (_code, out) = doctor(&fixture.config_path).await;
    let line = out
        .lines()
        .find(|line| line.contains(holder))
        .unwrap_or_else(|| panic!("no line names {holder}:\n{out}"));
    assert!(
        line.contains("another host (web9.example)") && line.contains(" until "),
        "{line}"
    );
    assert!(
        !out.contains("--force"),
        "no force-release for a live holder:\n{out}"
    );
    assert!(
        !out.contains("start the daemon"),
        "a daemon is running elsewhere:\n{out}"
    );
}

/// A 2 MiB tmpfs as the data dir (unmounted on drop), or `None` when this process may
/// not mount (not root).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(at: &Path) -> Option<TinyDisk> {
        std::fs::create_dir_all(at).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| TinyDisk(at.to_path_buf()))
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_the_disk_is_full_instead_of_all_is_well() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"");
    let outer = tempfile::tempdir().unwrap();
    let data_dir = outer.path().join("data");
    let Some(_disk) = TinyDisk::mount(&data_dir) else {
        // Not root: the same check through its seam, with a threshold no disk meets.
        eprintln!(
            "cannot mount a tmpfs here; checking the free-space finding through its threshold"
        );
        let found = marketsync::diagnose::disk_findings(outer.path(), u64::MAX);
        assert_eq!(found[0].severity, marketsync::diagnose::Severity::Action);
        return;
    };
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let text = text.replace(
        &format!("data_dir = \"{}\"", fixture.config.data_dir.display()),
        &format!("data_dir = \"{}\"", data_dir.display()),
    );
    let config_path = outer.path().join("config.toml");
    std::fs::write(&config_path, text).unwrap();
    // A database that synced on the tiny disk: everything else is well.
    let ledger = Arc::new(SqliteLedger::open(&data_dir.join("marketsync.db")).unwrap());
    drop(ledger);
    let (code, out) = doctor(&config_path).await;
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|line| line.starts_with("[action] disk:"))
        .unwrap_or_else(|| panic!("no disk finding:\n{out}"));
    assert!(line.contains("free") && line.contains("fix:"), "{line}");
    assert!(!out.contains("all is well"), "{out}");
}

/// A run whose lease has expired by the process's own clock (a host frozen past its TTL,
/// then resumed) makes no provider call: the first paced call stops the run as if the
/// lease were lost. The same run under a lease with time left requests its windows.
#[tokio::test]
async fn a_run_whose_lease_deadline_passed_makes_no_provider_call() {
    use marketsync::lock::keeper::LeaseDeadline;
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"12h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();

    let mut expired = fixture.context(&ledger, CancellationToken::new());
    expired.lease_deadline = Some(LeaseDeadline::starting(
        tokio::time::Instant::now(),
        Duration::ZERO,
    ));
    let outcome = expired.run_once().await;
    assert_eq!(
        sim.stats().calls("createReport"),
        0,
        "no report requested under an expired lease: {outcome:?}"
    );
    assert!(
        expired.abort.is_cancelled(),
        "the run stopped as on a lost lease"
    );

    let mut held = fixture.context(&ledger, CancellationToken::new());
    held.lease_deadline = Some(LeaseDeadline::starting(
        tokio::time::Instant::now(),
        Duration::from_secs(600),
    ));
    held.run_once().await.expect("run under a live lease");
    assert!(sim.stats().calls("createReport") > 0);
    assert!(!held.abort.is_cancelled());
}
