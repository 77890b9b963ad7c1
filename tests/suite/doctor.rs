//! `marketsync doctor` on the real binary: for each cause of seed 000's checklist and
//! seed 004's diagnostics the test creates (held and stale lease, quota cooldown,
//! failing hours, auth failures, quarantine, missing hours nobody claims, Redis down) it
//! prints the finding with its fix and exits 1 when a person is needed, 0 otherwise.

use std::path::Path;
use std::time::Duration;

use marketsync::bench::redis_server::RedisServer;
use marketsync::domain::{format_ts, now_ts, HourWindow, HOUR};
use marketsync::lock::LockService;
use marketsync::sim::SimConfig;
use marketsync::store::LedgerStore;
use tokio_util::sync::CancellationToken;

use super::http::{fail_hours, quarantine, quota_cooldown, synced_fixture};
use crate::common::{fast_sim, marketsync, Fixture, TestSim};

/// Runs `marketsync --config PATH doctor ARGS...`: (exit code, stdout, stderr).
async fn doctor(config_path: &Path, args: &[&str]) -> (i32, String, String) {
    let config_path = config_path.to_path_buf();
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = marketsync()
            .env("RUST_LOG", "warn")
            .arg("--config")
            .arg(&config_path)
            .arg("doctor")
            .args(&args)
            .output()
            .expect("run marketsync doctor");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    })
    .await
    .expect("doctor task")
}

fn line_with<'a>(out: &'a str, needles: &[&str]) -> &'a str {
    out.lines()
        .find(|line| needles.iter().all(|needle| line.contains(needle)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_exits_zero_when_all_is_well() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, _ledger) = synced_fixture(&sim).await;
    let (code, out, err) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    line_with(&out, &["[ok] acct/vendor_rt_sales: caught_up"]);
    line_with(
        &out,
        &["[ok]", &sim.addr.to_string(), "reachable (used by acct)"],
    );
    assert!(
        out.trim_end()
            .ends_with("all is well: nothing needs a person"),
        "{out}"
    );

    let (code, json, _) =
        doctor(&fixture.config_path, &["acct", "vendor_rt_sales", "--json"]).await;
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&json).expect("json report");
    assert_eq!(report["needs_attention"], 0);

    let (code, _, err) = doctor(&fixture.config_path, &["nope"]).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown account \"nope\"; configured accounts: acct"),
        "{err}"
    );
    let (code, _, err) = doctor(&fixture.config_path, &["acct", "orders"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no enabled stream \"orders\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_lease_holder_and_flags_a_stale_lease_with_its_fix() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, _ledger) = synced_fixture(&sim).await;
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    let lease = locks
        .acquire(
            "acct/vendor_rt_sales",
            "auto-sync:4242@web9",
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let (code, out, err) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 0, "a live lease alone needs nobody: {out}{err}");
    let line = line_with(
        &out,
        &[
            "acct/vendor_rt_sales",
            "lease held by auto-sync:4242@web9 since",
        ],
    );
    assert!(
        line.contains("live") && line.contains(&format!("(fence {})", lease.fence)),
        "{line}"
    );

    locks.release(&lease).await.unwrap();
    locks
        .acquire(
            "acct/vendor_rt_sales",
            "auto-sync:4243@web9",
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 1, "{out}");
    let line = line_with(
        &out,
        &[
            "[action] acct/vendor_rt_sales",
            "auto-sync:4243@web9",
            "expired at",
            "stale",
        ],
    );
    assert!(
        line.contains(&format!(
            "fix: marketsync --config {} locks release acct/vendor_rt_sales",
            fixture.config_path.display()
        )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_quota_cooldown_until_its_end() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let until = quota_cooldown(&ledger, "acct", 30);
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 0, "a cooldown ends by itself: {out}");
    line_with(
        &out,
        &[
            "[wait] acct: quota cooldown until",
            &format_ts(until),
            "no provider calls",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_failing_hours_with_their_error_and_retry_time() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let retry_at = now_ts() + 1800;
    fail_hours(
        &ledger,
        "acct",
        3,
        3,
        "getReport returned http 500: internal error",
        retry_at,
    );
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 1, "{out}");
    let line = line_with(
        &out,
        &[
            "[action] acct/vendor_rt_sales: applied not advancing: 3 hour(s) FAILED",
            "attempts up to 3",
            "last error: getReport returned http 500: internal error",
            "next retry at",
        ],
    );
    assert!(line.contains("fill-day acct vendor_rt_sales"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_auth_failures_naming_the_credential_variables() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    fail_hours(
        &ledger,
        "acct",
        2,
        1,
        "authentication failed on createReport: the access token was refused",
        now_ts() + 600,
    );
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 1, "{out}");
    let line = line_with(
        &out,
        &["[action] acct/vendor_rt_sales: authentication failures"],
    );
    assert!(
        line.contains("TEST_CLIENT_ID") && line.contains("TEST_REFRESH_TOKEN"),
        "{line}"
    );
    assert!(
        !out.contains("test-secret-value"),
        "no secret in the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_quarantine_with_its_crash_reason() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    quarantine(
        &ledger,
        "acct",
        "report parser panicked: index out of bounds",
    );
    let (code, out, _) = doctor(&fixture.config_path, &["acct"]).await;
    assert_eq!(code, 1, "{out}");
    let line = line_with(
        &out,
        &[
            "[action] acct: account actor quarantined until",
            "report parser panicked",
        ],
    );
    assert!(line.contains("accounts resume acct"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_explains_missing_hours_that_never_drop() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"24h\"");
    let ledger = fixture.open_ledger();
    // Seeded two hours ago; nobody claimed anything since.
    let now = now_ts();
    let end = marketsync::domain::floor_hour(now);
    ledger
        .seed(
            "acct",
            "vendor_rt_sales",
            HourWindow::new(end - 24 * HOUR, end),
            now - 2 * HOUR,
        )
        .unwrap();
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 1, "{out}");
    let line = line_with(
        &out,
        &[
            "[action] acct/vendor_rt_sales: missing hours not dropping",
            "never claimed",
        ],
    );
    assert!(
        line.contains("no daemon is claiming") && line.contains(" run"),
        "{line}"
    );

    // A fresh database with no rows at all: the daemon never ran the stream.
    let empty = Fixture::new(&sim, "");
    drop(empty.open_ledger());
    let (code, out, _) = doctor(&empty.config_path, &[]).await;
    assert_eq!(code, 1, "{out}");
    line_with(&out, &["[action] acct/vendor_rt_sales: no ledger rows"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_redis_and_the_endpoint_down() {
    let mut redis = RedisServer::start().expect("redis-server");
    let port = redis.port();
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let fixture = Fixture::with_globals(
        &sim,
        &format!("[redis]\nurl = \"{}\"\n", redis.url()),
        "lookback = \"24h\"",
    );
    let ledger = fixture.open_ledger();
    fixture
        .context(&ledger, CancellationToken::new())
        .run_once()
        .await
        .unwrap();
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 0, "redis up: {out}");

    redis.stop();
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 1, "{out}");
    line_with(
        &out,
        &[
            "[action] redis: redis at 127.0.0.1:",
            &port.to_string(),
            "is unreachable",
            "fix: start redis-server",
        ],
    );

    // The configured endpoint down too.
    let addr = sim.addr;
    drop(sim);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out, _) = doctor(&fixture.config_path, &[]).await;
    assert_eq!(code, 1);
    line_with(
        &out,
        &[
            "[action]",
            &addr.to_string(),
            "endpoint unreachable",
            "used by acct",
        ],
    );
}
