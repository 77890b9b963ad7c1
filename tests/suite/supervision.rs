//! The supervision tree on the real binary: a poison account crash-loops into quarantine
//! while healthy accounts keep syncing, a frozen account is detected and restarted,
//! provider outages are retried without crashes, and SIGTERM mid-sync loses nothing.

use std::path::Path;
use std::time::Duration;

use marketsync::sim::{SimConfig, SimFaults};

use crate::common::{marketsync, status_json, wait_until, DaemonProcess, Fixture, TestSim};

/// A config with the embedded simulator and `accounts` amazon accounts (lookback 24h).
fn embedded_config(dir: &Path, accounts: &[&str], extra: &str) -> std::path::PathBuf {
    let mut text = format!(
        r#"
data_dir = "{}"
[simulator]
enabled = true
processing_latency = "100ms"
{extra}
"#,
        dir.display()
    );
    for id in accounts {
        text.push_str(&format!(
            r#"
[[accounts]]
id = "{id}"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "24h"
interval = "1s"
poll_min = "50ms"
poll_max = "200ms"
retry_base = "1s"
retry_max = "2s"
"#
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn account<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["accounts"]
        .as_array()
        .and_then(|accounts| accounts.iter().find(|account| account["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

fn applied(status: &serde_json::Value, id: &str) -> u64 {
    account(status, id)["streams"][0]["counts"]["APPLIED"]
        .as_u64()
        .unwrap_or(0)
}

const FAST_SUPERVISOR: &str = r#"
[supervisor]
min_backoff = "50ms"
max_backoff = "200ms"
max_crashes = 3
crash_window = "1m"
probe_after = "1h"
heartbeat = "200ms"
stuck_after = "2s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_account_is_quarantined_while_healthy_accounts_keep_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["poison", "healthy-1", "healthy-2", "healthy-3"];
    let chaos =
        "[chaos]\nenabled = true\naccount = \"poison\"\naction = \"panic\"\nevery_unit = true\n";
    let config = embedded_config(dir.path(), &ids, &format!("{FAST_SUPERVISOR}{chaos}"));
    let mut daemon = DaemonProcess::spawn(&config);

    let settled = wait_until(Duration::from_secs(60), || {
        let Some(status) = status_json(&config) else {
            return false;
        };
        account(&status, "poison")["supervisor"]["state"] == "quarantined"
            && ids[1..].iter().all(|id| applied(&status, id) == 24)
    })
    .await;
    let status = status_json(&config).unwrap();
    assert!(settled, "status: {status:#}\nlogs:\n{}", daemon.logs());
    let poison = &account(&status, "poison")["supervisor"];
    assert!(poison["restarts"].as_u64().unwrap() >= 3, "{poison}");
    assert!(poison["quarantined_until"].is_string(), "{poison}");
    let reason = poison["last_crash"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("chaos drill"),
        "the crash reason is recorded: {reason}"
    );
    assert_eq!(applied(&status, "poison"), 0);
    for id in &ids[1..] {
        assert_eq!(
            account(&status, id)["supervisor"]["restarts"],
            0,
            "{id} never crashed"
        );
    }
    let table = marketsync()
        .arg("--config")
        .arg(&config)
        .arg("status")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("marketsync accounts resume poison"),
        "{table}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
    // Regression: a clean shutdown is not a crash (account actors used to stop
    // themselves when their runners ended, which the supervisor counted as crashes).
    let status = status_json(&config).unwrap();
    for id in &ids[1..] {
        let supervisor = &account(&status, id)["supervisor"];
        assert_eq!(
            supervisor["restarts"], 0,
            "{id} after shutdown: {supervisor}"
        );
        assert_eq!(
            supervisor["state"], "stopped",
            "{id} after shutdown: {supervisor}"
        );
    }
    assert!(
        !daemon.logs().contains("mass failure"),
        "logs:\n{}",
        daemon.logs()
    );

    // Restart without the drill: the quarantine is persisted, so the poison account is
    // not run until an operator resumes it.
    let config = embedded_config(dir.path(), &ids, FAST_SUPERVISOR);
    let daemon = DaemonProcess::spawn(&config);
    let restarted = wait_until(Duration::from_secs(20), || {
        status_json(&config)
            .map(|status| account(&status, "healthy-1")["supervisor"]["state"] == "running")
            .unwrap_or(false)
    })
    .await;
    assert!(restarted, "logs:\n{}", daemon.logs());
    let status = status_json(&config).unwrap();
    assert_eq!(
        account(&status, "poison")["supervisor"]["state"],
        "quarantined"
    );
    let resume_requested_at = marketsync::domain::now_ts();
    let output = marketsync()
        .arg("--config")
        .arg(&config)
        .args(["accounts", "resume", "poison"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("resume requested"));
    let resumed = wait_until(Duration::from_secs(30), || {
        status_json(&config)
            .map(|status| applied(&status, "poison") == 24)
            .unwrap_or(false)
    })
    .await;
    assert!(resumed, "logs:\n{}", daemon.logs());
    // Nothing of the poison account ran in the new daemon before the resume.
    let ledger = marketsync::store::SqliteLedger::open(&dir.path().join("marketsync.db")).unwrap();
    let early_claims: i64 = ledger.with_conn(|conn| {
        conn.query_row(
            "SELECT COUNT(*) FROM ledger_claims WHERE account = 'poison' AND claimed_by LIKE ?1 AND claimed_at < ?2",
            rusqlite::params![format!("%:{}@%", daemon.pid()), resume_requested_at],
            |row| row.get(0),
        )
        .unwrap()
    });
    assert_eq!(early_claims, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_account_is_detected_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let chaos =
        "[chaos]\nenabled = true\naccount = \"frozen\"\naction = \"freeze\"\nnth_unit = 1\n";
    let config = embedded_config(
        dir.path(),
        &["frozen", "healthy"],
        &format!("{FAST_SUPERVISOR}{chaos}"),
    );
    let daemon = DaemonProcess::spawn(&config);
    let recovered = wait_until(Duration::from_secs(60), || {
        status_json(&config)
            .map(|status| applied(&status, "frozen") == 24 && applied(&status, "healthy") == 24)
            .unwrap_or(false)
    })
    .await;
    let status = status_json(&config).unwrap();
    assert!(recovered, "status: {status:#}\nlogs:\n{}", daemon.logs());
    let frozen = &account(&status, "frozen")["supervisor"];
    assert!(frozen["restarts"].as_u64().unwrap() >= 1, "{frozen}");
    let reason = frozen["last_crash"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("stuck"), "{reason}");
    assert_eq!(account(&status, "healthy")["supervisor"]["restarts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_is_retried_without_crashing_the_account() {
    let sim = TestSim::start(crate::common::fast_sim()).await;
    let fixture = Fixture::with_globals(
        &sim,
        FAST_SUPERVISOR,
        "lookback = \"24h\"\ninterval = \"1s\"\nretry_base = \"1s\"\nretry_max = \"2s\"",
    );
    // Every SP-API call fails with a 500 for a few seconds.
    sim.sim.set_faults(SimFaults {
        server_error: 1.0,
        ..SimFaults::default()
    });
    let daemon = DaemonProcess::spawn(&fixture.config_path);
    let failing = wait_until(Duration::from_secs(20), || {
        status_json(&fixture.config_path)
            .map(|status| {
                status["accounts"][0]["streams"][0]["counts"]["FAILED"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0
            })
            .unwrap_or(false)
    })
    .await;
    assert!(failing, "logs:\n{}", daemon.logs());
    sim.sim.set_faults(SimFaults::default());
    let recovered = wait_until(Duration::from_secs(60), || {
        crate::common::applied_hours(&fixture.config_path) == 24
    })
    .await;
    let status = status_json(&fixture.config_path).unwrap();
    assert!(recovered, "status: {status:#}\nlogs:\n{}", daemon.logs());
    let supervisor = &status["accounts"][0]["supervisor"];
    assert_eq!(supervisor["state"], "running", "{supervisor}");
    assert_eq!(
        supervisor["restarts"], 0,
        "an outage is not a crash: {supervisor}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_sync_exits_zero_and_the_restart_requests_nothing_twice() {
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let fixture = Fixture::new(
        &sim,
        "lookback = \"24h\"\ninterval = \"1s\"\npoll_min = \"200ms\"\npoll_max = \"400ms\"",
    );
    let mut daemon = DaemonProcess::spawn(&fixture.config_path);
    // Stop it while a report is being processed.
    let mid_flight = wait_until(Duration::from_secs(30), || {
        let ledger = fixture.open_ledger();
        marketsync::store::LedgerStore::in_flight(ledger.as_ref(), "acct", "vendor_rt_sales")
            .map(|claims| claims.iter().any(|claim| claim.report_id.is_some()))
            .unwrap_or(false)
            && crate::common::applied_hours(&fixture.config_path) >= 6
    })
    .await;
    assert!(mid_flight, "logs:\n{}", daemon.logs());
    let signalled = std::time::Instant::now();
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0),
        "logs:\n{}",
        daemon.logs()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "within the grace period"
    );
    assert!(daemon.logs().contains("shutdown complete"));

    let daemon = DaemonProcess::spawn(&fixture.config_path);
    let converged = wait_until(Duration::from_secs(60), || {
        crate::common::applied_hours(&fixture.config_path) == 24
    })
    .await;
    assert!(converged, "logs:\n{}", daemon.logs());
    assert_eq!(
        sim.stats().calls("createReport"),
        4,
        "one report per 6h chunk, none twice"
    );
}

/// A free loopback port for the daemon's HTTP server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// The value of `name{labels}` in an OpenMetrics text, when present.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(name_and_labels))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Waits (60 s at most) until `/metrics` counts exactly one restart of `service` and both
/// accounts `first` and `second` applied their 24 hours.
async fn wait_for_one_restart_and_both_synced(
    port: u16,
    config: &Path,
    service: &str,
    daemon: &DaemonProcess,
) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let series = format!("marketsync_service_restarts_total{{service=\"{service}\"}}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(response) = client.get(&url).send().await {
            last = response.text().await.unwrap_or_default();
            let synced = status_json(config)
                .map(|status| applied(&status, "first") == 24 && applied(&status, "second") == 24)
                .unwrap_or(false);
            if metric(&last, &series) == Some(1.0) && synced {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics:\n{last}\nlogs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 13 (point 7): a panic in an infrastructure service (here Housekeeping, on its
/// first pass) restarts that service, is logged and counted in `/metrics`, and never
/// stops account syncing; the daemon keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_is_restarted_and_accounts_keep_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = panic_once_then_synced(
        dir.path(),
        "housekeeping",
        "[locks]\nhygiene_interval = \"1s\"\n",
    )
    .await;
    // The counter moves before the restart is logged: wait for the line.
    let logged = wait_until(Duration::from_secs(10), || {
        daemon.logs().contains("service restarted")
    })
    .await;
    let logs = daemon.logs();
    assert!(
        logs.contains("service failed; restarting it after a backoff"),
        "{logs}"
    );
    assert!(logged, "{logs}");
    still_running_then_stops_cleanly(&mut daemon).await;
}

/// Starts a daemon (accounts `first` and `second`, `extra` config) whose `service`
/// panics on its first step, and waits until that one restart is counted and both
/// accounts synced.
async fn panic_once_then_synced(dir: &Path, service: &str, extra: &str) -> DaemonProcess {
    let port = free_port();
    let extra = format!(
        "{FAST_SUPERVISOR}{extra}[http]\nlisten = \"127.0.0.1:{port}\"\n[chaos]\nenabled = true\nservice = \"{service}\"\nnth_unit = 1\n"
    );
    let config = embedded_config(dir, &["first", "second"], &extra);
    let daemon = DaemonProcess::spawn(&config);
    wait_for_one_restart_and_both_synced(port, &config, service, &daemon).await;
    daemon
}

/// The daemon is still running; SIGTERM stops it with exit code 0.
async fn still_running_then_stops_cleanly(daemon: &mut DaemonProcess) {
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}

/// The `wal-checkpoint` service (the SQLite file's checkpoints, off the writer's
/// commits) is supervised like the others: a panic in it is logged, counted and
/// restarted, and the writes it would checkpoint go on meanwhile (the writer's backstop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_wal_checkpointer_is_restarted_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = panic_once_then_synced(dir.path(), "wal-checkpoint", "").await;
    let logs = daemon.logs();
    assert!(
        logs.contains("chaos drill: service wal-checkpoint panics on step 1"),
        "{logs}"
    );
    still_running_then_stops_cleanly(&mut daemon).await;
}

/// Issue 13 (point 7): a service that fails every time spends its restart budget
/// (`supervisor.max_crashes` within `crash_window`), and only then does the daemon exit
/// non-zero, naming the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_keeps_failing_spends_its_budget_and_the_daemon_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{FAST_SUPERVISOR}[chaos]\nenabled = true\nservice = \"cooldown-watch\"\nevery_unit = true\n"
    );
    let config = embedded_config(dir.path(), &["only"], &extra);
    let mut daemon = DaemonProcess::spawn(&config);
    let code = daemon.wait_exit_code(Duration::from_secs(60)).await;
    let logs = daemon.logs();
    assert!(
        matches!(code, Some(code) if code != 0),
        "exit {code:?}\n{logs}"
    );
    assert!(
        logs.contains("service cooldown-watch failed 4 times") && logs.contains("budget is spent"),
        "{logs}"
    );
    // It was restarted (max_crashes = 3) before the budget ran out.
    assert_eq!(logs.matches("service restarted").count(), 3, "{logs}");
}

/// Issue 13 (point 7): the TokenManager is restarted like any service and its callers
/// (every account's pacer) survive the restart: a panic on its third grant costs the
/// accounts nothing but a deferred call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_manager_restarts_and_its_callers_keep_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        "{FAST_SUPERVISOR}[http]\nlisten = \"127.0.0.1:{port}\"\n[chaos]\nenabled = true\nservice = \"token-manager\"\nnth_unit = 3\n"
    );
    let config = embedded_config(dir.path(), &["first", "second"], &extra);
    let mut daemon = DaemonProcess::spawn(&config);
    wait_for_one_restart_and_both_synced(port, &config, "token-manager", &daemon).await;
    assert!(daemon
        .logs()
        .contains("chaos drill: service token-manager panics on step 3"));
    let status = status_json(&config).unwrap();
    for id in ["first", "second"] {
        assert_eq!(
            account(&status, id)["supervisor"]["restarts"],
            0,
            "{id}: a TokenManager restart is not an account crash"
        );
    }
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}
