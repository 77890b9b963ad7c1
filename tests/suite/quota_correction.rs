//! Issue 12 point 4, over real HTTP against the simulator: a 429 to a paced call is a
//! correction of the bucket model (one 429 per bucket, no long cooldown, the learned
//! burst in `/api/budgets`), three 429s within ten minutes escalate to the persisted
//! `quota_cooldown`, and an eBay 429 (its daily quota) stops for the stream's
//! `quota_cooldown`, not a fixed 5 minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use marketsync::sim::{FaultKind, RateSpec, ScheduledFault, SimConfig, SimFaults};

use crate::common::{
    applied_hours, fast_sim, marketsync, wait_until, DaemonProcess, Fixture, TestSim,
};

/// createReport at 1/s with a burst of 10 (Amazon documents 15, which marketsync
/// assumes: the rate is unknown to it until the simulator's header says so); the other
/// operations out of the way.
fn undersized_burst_sim() -> SimConfig {
    let roomy = RateSpec {
        rate: 100.0,
        burst: 100.0,
    };
    SimConfig {
        rates: BTreeMap::from([
            (
                "createReport".to_string(),
                RateSpec {
                    rate: 1.0,
                    burst: 10.0,
                },
            ),
            ("getReport".to_string(), roomy),
            ("getReportDocument".to_string(), roomy),
        ]),
        ..fast_sim()
    }
}

fn cooldown_rows(config: &std::path::Path) -> Vec<serde_json::Value> {
    cooldowns_json(config)["cooldowns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn cooldowns_json(config: &std::path::Path) -> serde_json::Value {
    let output = marketsync()
        .arg("--config")
        .arg(config)
        .args(["cooldowns", "--json"])
        .output()
        .expect("run cooldowns");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_with_an_undersized_burst_takes_one_429_and_no_long_cooldown() {
    let sim = TestSim::start(undersized_burst_sim()).await;
    // 72 hours in 6-hour chunks: 12 createReports, two more than the real burst.
    let fixture = Fixture::new(&sim, "lookback = \"72h\"\nchunk = \"6h\"");
    let started = std::time::Instant::now();
    let stdout = sync_once(&fixture.config_path, "60s");
    assert!(stdout.contains("72 of 72 hours applied"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let stats = sim.stats();
    assert!(
        stats.throttled("createReport") <= 1,
        "at most one 429 for the bucket: {stats:?}"
    );
    // No cooldown at all, let alone one longer than a token interval (1 s).
    let rows = cooldown_rows(&fixture.config_path);
    assert!(
        rows.iter()
            .all(|row| row["remaining_secs"].as_i64().unwrap_or(0) <= 1),
        "{rows:?}"
    );
}

/// "No long stop" while reports are slow: the createReport that met the 429 is requested
/// again one token interval later, not after the reports already in flight have ended
/// (10 s here). Before, the stream stopped requesting until its in-flight units drained,
/// so its last two windows were requested about a latency after the 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_requests_again_while_slow_reports_are_in_flight() {
    let latency = Duration::from_secs(10);
    let sim = TestSim::start(SimConfig {
        processing_latency: latency,
        ..undersized_burst_sim()
    })
    .await;
    // 12 windows: two more than the simulator's real burst of 10.
    let fixture = Fixture::new(&sim, "lookback = \"72h\"\nchunk = \"6h\"");
    let stdout = sync_once(&fixture.config_path, "90s");
    assert!(stdout.contains("72 of 72 hours applied"), "{stdout}");
    let stats = sim.stats();
    assert_eq!(stats.throttled("createReport"), 1, "{stats:?}");
    assert_eq!(stats.calls("createReport"), 13, "{stats:?}");
    // Ten at once, then one token interval (1 s) for each of the last two.
    let span = create_span(&sim);
    assert!(
        span < latency.as_secs_f64() / 2.0,
        "the last createReport came {span:.1}s after the first: the stream stopped requesting"
    );
    assert!(cooldown_rows(&fixture.config_path)
        .iter()
        .all(|row| row["remaining_secs"].as_i64().unwrap_or(0) <= 1));
    // The correction is recorded: `cooldowns` shows the bucket's learned burst after the
    // process that learned it has ended.
    let listed = cooldowns_json(&fixture.config_path);
    let corrections = listed["corrections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let create = corrections
        .iter()
        .find(|row| {
            row["bucket"]
                .as_str()
                .is_some_and(|bucket| bucket.starts_with("amazon/createReport/"))
        })
        .unwrap_or_else(|| panic!("no createReport correction in {listed}"));
    assert_eq!(create["configured_burst"], 15.0, "{create}");
    let learned = create["burst"].as_f64().unwrap_or(f64::MAX);
    assert!((1.0..15.0).contains(&learned), "{create}");
    assert_eq!(create["corrections"], 1, "{create}");
    let text = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .arg("cooldowns")
        .output()
        .expect("run cooldowns");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("burst corrections") && text.contains("amazon/createReport/"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learned_burst_and_its_correction_show_in_api_budgets() {
    let sim = TestSim::start(undersized_burst_sim()).await;
    let port = free_port();
    let fixture = Fixture::with_globals(
        &sim,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        "lookback = \"72h\"\nchunk = \"6h\"\ninterval = \"1h\"",
    );
    let config = &fixture.config_path;
    let daemon = DaemonProcess::spawn(config);
    assert!(
        wait_until(Duration::from_secs(30), || applied_hours(config) == 72).await,
        "every hour applied; logs:\n{}",
        daemon.logs()
    );
    let budgets: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/budgets"))
        .await
        .expect("budgets")
        .json()
        .await
        .expect("budgets json");
    let create = budgets["buckets"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["operation"] == "createReport"))
        .cloned()
        .unwrap_or_else(|| panic!("a createReport bucket: {budgets}"));
    assert_eq!(create["configured_burst"], 15.0, "{create}");
    assert_eq!(create["burst_corrections"], 1, "{create}");
    let burst = create["burst"].as_f64().unwrap_or(0.0);
    assert!(
        (1.0..=10.0).contains(&burst),
        "learned burst {burst}: {create}"
    );
    assert!(sim.stats().throttled("createReport") <= 1);
    assert!(cooldown_rows(config).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_429s_within_ten_minutes_escalate_to_the_persisted_quota_cooldown() {
    let mut sim_config = undersized_burst_sim();
    sim_config.faults = SimFaults {
        schedule: (2..=4)
            .map(|nth| ScheduledFault {
                operation: "createReport".to_string(),
                nth,
                fault: FaultKind::Throttle,
            })
            .collect(),
        ..SimFaults::default()
    };
    let sim = TestSim::start(sim_config).await;
    // The rate is known (as it is once one answer carried x-amzn-RateLimit-Limit), so
    // each corrected retry waits one second, whatever the order of the first answers.
    let fixture = Fixture::with_globals(
        &sim,
        "[quota.amazon.createReport]\nrate = 1.0\nburst = 15.0\n",
        "lookback = \"12h\"\nchunk = \"6h\"\nquota_cooldown = \"20m\"\ninterval = \"1s\"",
    );
    let config = &fixture.config_path;
    let daemon = DaemonProcess::spawn(config);
    let quota_row = || {
        cooldown_rows(config)
            .into_iter()
            .find(|row| row["scope"] == "amazon:acct" && row["reason"] == "quota")
    };
    assert!(
        wait_until(Duration::from_secs(60), || quota_row().is_some()).await,
        "the third 429 starts the hard stop; logs:\n{}",
        daemon.logs()
    );
    let row = quota_row().unwrap_or_default();
    let remaining = row["remaining_secs"].as_i64().unwrap_or(0);
    assert!((19 * 60..=20 * 60).contains(&remaining), "{row}");
    let stats = sim.stats();
    assert_eq!(stats.throttled("createReport"), 3, "{stats:?}");
    assert_eq!(stats.calls("createReport"), 4, "{stats:?}");
    assert_eq!(applied_hours(config), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ebay_429_stops_for_the_streams_quota_cooldown_not_five_minutes() {
    let sim = TestSim::start(SimConfig {
        processing_latency: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    sim.sim.set_faults(crate::common::schedule(
        "ebay.getOrders",
        1,
        FaultKind::Throttle,
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sim.base_url();
    let text = format!(
        r#"
data_dir = "{data}"

[[accounts]]
id = "shop"
provider = "ebay"
endpoint = "{base}"
token_url = "{base}/identity/v1/oauth2/token"

[accounts.credentials]
client_id_env = "TEST_EBAY_CLIENT_ID"
client_secret_env = "TEST_EBAY_CLIENT_SECRET"
refresh_token_env = "TEST_EBAY_REFRESH_TOKEN"

[accounts.streams.orders]
start = "2days"
quota_cooldown = "40m"

[accounts.streams.transactions]
start = "2days"
"#,
        data = dir.path().display(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write config");
    let daemon = DaemonProcess::spawn_with_env(
        &config,
        &[
            ("TEST_EBAY_CLIENT_ID", "daemon-client"),
            ("TEST_EBAY_CLIENT_SECRET", "daemon-secret"),
            ("TEST_EBAY_REFRESH_TOKEN", "seller-shop"),
        ],
    );
    let quota_rows = || {
        cooldown_rows(&config)
            .into_iter()
            .filter(|row| row["reason"] == "quota")
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(30), || !quota_rows().is_empty()).await,
        "the 429 stops the stream; logs:\n{}",
        daemon.logs()
    );
    // Every quota cooldown (the ledger's and the TokenManager's) is the stream's 40m,
    // and it is the fulfillment API's: eBay's budgets are per API.
    for row in quota_rows() {
        let remaining = row["remaining_secs"].as_i64().unwrap_or(0);
        assert!((39 * 60..=40 * 60).contains(&remaining), "{row}");
        assert_eq!(row["scope"], "ebay:shop:fulfillment", "{row}");
    }
    // The account's transactions stream (the Finances API) runs on through it.
    let stream = |name: &str| -> serde_json::Value {
        let output = marketsync()
            .arg("--config")
            .arg(&config)
            .args(["status", "--json"])
            .output()
            .expect("run status");
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        status["accounts"][0]["streams"]
            .as_array()
            .and_then(|streams| streams.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let transactions = stream("transactions");
            transactions["cursor"]["last_run_at"].is_string()
                && transactions["cursor"]["failures"] == 0
                && transactions["cooldown"]["reason"] == "none"
        })
        .await,
        "transactions is not stopped by getOrders' quota: {}; logs:\n{}",
        stream("transactions"),
        daemon.logs()
    );
    assert_eq!(
        stream("orders")["cooldown"]["scope"],
        "ebay:shop:fulfillment"
    );
}

/// createReport at one token per 10 s with Amazon's burst of 15, told to the daemon;
/// the other operations out of the way.
fn slow_refill_sim() -> SimConfig {
    let roomy = RateSpec {
        rate: 100.0,
        burst: 100.0,
    };
    SimConfig {
        rates: BTreeMap::from([
            (
                "createReport".to_string(),
                RateSpec {
                    rate: 0.1,
                    burst: 15.0,
                },
            ),
            ("getReport".to_string(), roomy),
            ("getReportDocument".to_string(), roomy),
        ]),
        ..fast_sim()
    }
}

const SLOW_REFILL_QUOTA: &str =
    "[quota]\nreserve_share = 0.2\n[quota.amazon.createReport]\nrate = 0.1\nburst = 15\n";

/// Seconds between the first and the last createReport the simulator saw.
fn create_span(sim: &TestSim) -> f64 {
    let timeline = sim.sim.report_timeline();
    match (timeline.first(), timeline.last()) {
        (Some(first), Some(last)) => last.created_at - first.created_at,
        _ => f64::INFINITY,
    }
}

/// The reserve rule of `sync --once`: without `[http]` and `[redis]` no manual work can
/// use the `reserve_share` of a burst, so a backfill of exactly one burst (15 windows)
/// spends all of it at once. With the reserve (3 of 15 tokens) the last three windows
/// would each wait a token interval (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_without_http_spends_the_whole_burst_on_its_backfill() {
    let sim = TestSim::start(slow_refill_sim()).await;
    let fixture = Fixture::with_globals(
        &sim,
        SLOW_REFILL_QUOTA,
        "lookback = \"15h\"\nchunk = \"1h\"\ndaily_audit = false",
    );
    let stdout = sync_once(&fixture.config_path, "120s");
    assert!(stdout.contains("15 of 15 hours applied"), "{stdout}");
    assert_eq!(sim.stats().calls("createReport"), 15, "{:?}", sim.stats());
    let span = create_span(&sim);
    assert!(
        span < 10.0,
        "all 15 windows requested within one token interval (10 s), not held for a reserve: {span:.2}s"
    );
    assert_eq!(sim.stats().throttled("createReport"), 0);
}

/// The daemon keeps the reserve: with an HTTP API an operator's manual work can arrive,
/// so background work stops at 12 of the 15 tokens and the 13th window waits for the
/// bucket to refill (a token every 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_the_reserve_for_manual_work() {
    let sim = TestSim::start(slow_refill_sim()).await;
    let port = free_port();
    let fixture = Fixture::with_globals(
        &sim,
        &format!("{SLOW_REFILL_QUOTA}[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        "lookback = \"15h\"\nchunk = \"1h\"\ndaily_audit = false",
    );
    let daemon = DaemonProcess::spawn(&fixture.config_path);
    let twelve = wait_until(Duration::from_secs(20), || {
        sim.stats().calls("createReport") >= 12
    })
    .await;
    assert!(twelve, "{:?}\nlogs:\n{}", sim.stats(), daemon.logs());
    // The 13th token exists only as the reserve until the bucket refills (10 s).
    let thirteenth = wait_until(Duration::from_secs(4), || {
        sim.stats().calls("createReport") > 12
    })
    .await;
    assert!(
        !thirteenth,
        "background work took a reserved token: {:?}",
        sim.stats()
    );
}

/// A TCP proxy in front of `target` whose first connection reaches it `hold` late (its
/// bytes wait that long before they are passed on), as a first call does on a loaded
/// machine that sets up hundreds of connections at once; the later connections pass at
/// once. The returned base url is the proxy's.
async fn proxy_with_a_late_first_connection(
    target: std::net::SocketAddr,
    hold: Duration,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let late = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                if late {
                    // The injected network delay this test is about, not a wait for
                    // anything to happen.
                    tokio::time::sleep(hold).await;
                }
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Issue 12's realistic backfill met a createReport 429 in a few sellers' buckets: the
/// client's bucket started refilling at its first grant, the simulator's when that call
/// arrived, and on a loaded machine the first call arrives late. At `time_scale` 60 with
/// Amazon's documented rates (createReport 0.0167/s burst 15, 1.002/s on the real clock,
/// told to the daemon as the bench does), one seller backfills 20 windows (5 past the
/// burst) while its first SP-API connection reaches the simulator 400 ms late: the pacing
/// (the model lowered at each answer to what the simulator's bucket can hold) gets no 429.
/// Before, the first call past the burst went 1.02 s after the first grant and found
/// 0.6 of a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_calls_get_no_429_at_time_scale_60_when_the_first_call_arrives_late() {
    let sim = TestSim::start(SimConfig {
        time_scale: 60.0,
        ..fast_sim()
    })
    .await;
    let proxy = proxy_with_a_late_first_connection(sim.addr, Duration::from_millis(400)).await;
    let quota = "[quota.amazon.createReport]\nrate = 1.002\nburst = 15\n[quota.amazon.getReport]\nrate = 120.0\nburst = 15\n[quota.amazon.getReportDocument]\nrate = 1.002\nburst = 15\n";
    let fixture = Fixture::with_globals(
        &sim,
        quota,
        "lookback = \"20h\"\nchunk = \"1h\"\ndaily_audit = false",
    );
    // SP-API calls through the proxy; the LWA token straight from the simulator.
    let text = std::fs::read_to_string(&fixture.config_path).expect("read config");
    let text = text.replacen(
        &format!("endpoint = \"{}\"", sim.base_url()),
        &format!("endpoint = \"{proxy}\""),
        1,
    );
    assert!(text.contains(&proxy), "endpoint rewritten");
    std::fs::write(&fixture.config_path, text).expect("write config");
    let stdout = sync_once(&fixture.config_path, "120s");
    assert!(stdout.contains("20 of 20 hours applied"), "{stdout}");
    let stats = sim.stats();
    assert_eq!(stats.calls("createReport"), 20, "{stats:?}");
    for operation in ["createReport", "getReport", "getReportDocument"] {
        assert_eq!(stats.throttled(operation), 0, "{operation}: {stats:?}");
    }
    // The first call past the burst went no sooner than one token interval after the
    // first call reached the simulator.
    let timeline = sim.sim.report_timeline();
    let gap = timeline[15].created_at - timeline[0].created_at;
    assert!(
        gap >= 1.0 / 1.002,
        "16th createReport {gap:.3}s after the first"
    );
}

/// `marketsync --config CONFIG sync --once --timeout TIMEOUT`, which must exit 0; its stdout.
fn sync_once(config: &std::path::Path, timeout: &str) -> String {
    let output = marketsync()
        .arg("--config")
        .arg(config)
        .args(["sync", "--once", "--timeout", timeout])
        .output()
        .expect("run sync --once");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "sync --once completes: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
