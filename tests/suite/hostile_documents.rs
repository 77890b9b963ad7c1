//! Hostile report documents against the real binary (issue 13, points 2 and 10): a gzip
//! bomb and a document with one huge field fail their unit at the cap with nothing applied,
//! the daemon stays up with bounded memory, the other account keeps syncing, and `status`
//! shows the FAILED hours with the cap in the error. Plus `/api/status` latency while a
//! large document applies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use marketsync::sim::{FaultKind, SimConfig};
use marketsync::store::SqliteLedger;

use crate::common::{
    fast_sim, sales_rows, schedule, status_json, wait_until, DaemonProcess, TestSim,
};

/// The memory bound the issue sets for these tests (peak RSS of the daemon).
const MAX_RSS_KB: u64 = 128 * 1024;

/// Two amazon accounts (`one`, `two`) on the same simulator, 12 hours each in 6 h chunks;
/// failed units retry only after an hour, so a FAILED unit stays visible.
fn two_accounts(dir: &Path, sim: &TestSim, http_port: u16, stream_extra: &str) -> PathBuf {
    let account = |id: &str, refresh_env: &str| {
        format!(
            r#"
[[accounts]]
id = "{id}"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
endpoint = "{base}"
token_url = "{base}/auth/o2/token"
[accounts.credentials]
client_id_env = "TEST_CLIENT_ID"
client_secret_env = "TEST_CLIENT_SECRET"
refresh_token_env = "{refresh_env}"
[accounts.streams.vendor_rt_sales]
poll_min = "10ms"
poll_max = "50ms"
safety_lag = "0s"
retry_base = "1h"
retry_max = "1h"
{stream_extra}
"#,
            base = sim.base_url()
        )
    };
    let text = format!(
        "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n{}{}",
        dir.display(),
        account("one", "TEST_REFRESH_TOKEN"),
        account("two", "TEST_REFRESH_TOKEN_TWO"),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(config_path: &Path) -> DaemonProcess {
    DaemonProcess::spawn_with_env(
        config_path,
        &[("TEST_REFRESH_TOKEN_TWO", "test-refresh-two")],
    )
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// (APPLIED, FAILED, last_error) of account `id`'s report stream, per `status --json`.
fn stream_state(status: &serde_json::Value, id: &str) -> (u64, u64, Option<String>) {
    let accounts = status["accounts"].as_array().cloned().unwrap_or_default();
    let Some(account) = accounts.iter().find(|account| account["id"] == id) else {
        return (0, 0, None);
    };
    let stream = &account["streams"][0];
    (
        stream["counts"]["APPLIED"].as_u64().unwrap_or(0),
        stream["counts"]["FAILED"].as_u64().unwrap_or(0),
        stream["last_error"].as_str().map(str::to_string),
    )
}

/// Runs the daemon against a simulator whose first document download is `fault`; waits
/// until one account has its bad chunk FAILED and everything else is APPLIED, then checks
/// what the issue asks: the daemon is up, memory stayed bounded, the error names the cap,
/// and the failed hours have no sales rows. Returns the failed hours' error.
async fn hostile_document_fails_only_its_unit(
    sim_config: SimConfig,
    stream_extra: &str,
    expected_error: &str,
) -> String {
    let sim = TestSim::start(sim_config).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = two_accounts(dir.path(), &sim, free_port(), stream_extra);
    let mut daemon = spawn(&config_path);

    let mut last_status = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(60), || {
        let Some(status) = status_json(&config_path) else {
            return false;
        };
        let (one, two) = (stream_state(&status, "one"), stream_state(&status, "two"));
        last_status = status;
        // One account: 6 applied + 6 failed (the spoiled chunk); the other: 12 applied.
        one.0 + two.0 == 18 && one.1 + two.1 == 6
    })
    .await;
    let logs = daemon.logs();
    assert!(
        settled,
        "one chunk failed and the rest applied; status: {last_status:#}\nlogs:\n{logs}"
    );
    assert!(
        daemon.child.try_wait().expect("try_wait").is_none(),
        "the daemon is still running; logs:\n{logs}"
    );
    let peak = peak_rss_kb(daemon.pid());
    assert!(
        peak > 0 && peak <= MAX_RSS_KB,
        "peak RSS {peak} KiB is within {MAX_RSS_KB} KiB"
    );

    let (failed_account, healthy_account) = if stream_state(&last_status, "one").1 == 6 {
        ("one", "two")
    } else {
        ("two", "one")
    };
    let (applied, failed, error) = stream_state(&last_status, failed_account);
    assert_eq!((applied, failed), (6, 6));
    let error = error.expect("the failed stream has a last_error");
    assert!(
        error.contains(expected_error),
        "last_error {error:?} should contain {expected_error:?}"
    );
    assert_eq!(stream_state(&last_status, healthy_account).0, 12);

    // Nothing partial: the failed account has rows only for its 6 applied hours.
    let database = dir.path().join("marketsync.db");
    let ledger = SqliteLedger::open(&database).expect("open ledger");
    let failed_hours: std::collections::BTreeSet<i64> = sales_rows(&ledger, failed_account)
        .iter()
        .map(|row| row.0)
        .collect();
    assert_eq!(failed_hours.len(), 6, "rows cover only the applied chunk");
    assert_eq!(
        sales_rows(&ledger, healthy_account)
            .iter()
            .map(|row| row.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        12
    );
    // The document and its staging file are gone.
    let documents = dir.path().join("documents");
    let left: Vec<_> = std::fs::read_dir(&documents)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "documents left behind: {left:?}");

    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0),
        "clean exit; logs:\n{}",
        daemon.logs()
    );
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_document_fails_at_the_decompressed_cap_on_the_real_binary() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("downloadDocument", 1, FaultKind::GzipBomb);
    // 512 MiB of whitespace (~0.5 MB of gzip) against an 8 MiB cap.
    sim_config.faults.bomb_bytes = Some(512 * 1024 * 1024);
    let error = hostile_document_fails_only_its_unit(
        sim_config,
        "lookback = \"12h\"\nchunk = \"6h\"\nmax_document_bytes = 8388608",
        "max_document_bytes = 8388608",
    )
    .await;
    assert!(error.contains("document too large"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_field_document_fails_at_the_field_cap_on_the_real_binary() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("downloadDocument", 1, FaultKind::HugeField);
    // The issue's case: a 512 MiB ASIN in ~0.5 MB of gzip, under the default caps.
    sim_config.faults.huge_field_bytes = Some(512 * 1024 * 1024);
    let error = hostile_document_fails_only_its_unit(
        sim_config,
        "lookback = \"12h\"\nchunk = \"6h\"",
        "65536-byte cap of one field",
    )
    .await;
    assert!(error.contains("document too large"), "{error}");
}

/// `/api/status` keeps answering while a large document is validated and applied: the
/// parse runs with no database lock and the surfaces read through the read-only pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_quickly_while_a_large_document_applies() {
    let sim_config = SimConfig {
        asins_per_marketplace: std::env::var("HOSTILE_ASINS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4000),
        ..fast_sim()
    };
    let sim = TestSim::start(sim_config).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // One 24-hour document per account: 96,000 rows each.
    let config_path = two_accounts(
        dir.path(),
        &sim,
        port,
        "lookback = \"24h\"\nchunk = \"24h\"",
    );
    let daemon = spawn(&config_path);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/status");
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut samples = Vec::new();
    let mut samples_seen = 0u32;
    let mut applied = 0;
    while started.elapsed() < Duration::from_secs(90) {
        let asked = Instant::now();
        let Ok(response) = client
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        // The first answer (daemon startup, first connection) is a warm-up, not a sample.
        if samples_seen > 0 {
            latencies.push(asked.elapsed());
        }
        samples_seen += 1;
        samples.push((started.elapsed(), asked.elapsed()));
        applied = stream_state(&body, "one").0 + stream_state(&body, "two").0;
        if applied == 48 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = daemon.logs();
    assert_eq!(applied, 48, "both documents applied; logs:\n{logs}");
    if std::env::var_os("HOSTILE_SHOW_SAMPLES").is_some() {
        eprintln!("(since start, latency): {samples:?}");
    }
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "/api/status during apply: {} samples, median {median:?}, worst {worst:?}",
        latencies.len()
    );
    for line in logs.lines().filter(|line| line.contains("hours applied")) {
        eprintln!("{line}");
    }
    // The aim is 100 ms; the bound is loose because five test suites share two cores.
    assert!(
        worst < Duration::from_secs(1),
        "worst /api/status {worst:?}"
    );
}
