//! Hostile provider answers against the real binary (issue 13): each simulator mode of
//! `SimFaults`' "hostile provider answers" is switched on for one account while a healthy
//! account syncs from another simulator. The daemon must stay up, the healthy account
//! keep syncing, nothing partial be applied, and status/logs say what happened.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use marketsync::sim::{SimConfig, SimFaults};
use serde_json::Value;

use crate::common::{fast_sim, marketsync, status_json, wait_until, DaemonProcess, TestSim};

/// The RSS bound the issue sets for the memory-hostile modes.
const MAX_RSS_KB: u64 = 128 * 1024;

fn amazon_account(id: &str, base: &str) -> String {
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
refresh_token_env = "TEST_REFRESH_TOKEN"
[accounts.streams.vendor_rt_sales]
lookback = "6h"
safety_lag = "0s"
poll_min = "10ms"
poll_max = "50ms"
interval = "1s"
"#
    )
}

/// A daemon whose account `healthy` syncs from its own simulator, beside `hostile` (the
/// accounts under test, pointed at the hostile simulator).
struct Setup {
    _dir: tempfile::TempDir,
    config_path: PathBuf,
    daemon: DaemonProcess,
    _healthy: TestSim,
}

impl Setup {
    async fn start(hostile: &str, env: &[(&str, &str)]) -> Setup {
        let healthy = TestSim::start(fast_sim()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "data_dir = \"{}\"\n{}\n{hostile}",
            dir.path().display(),
            amazon_account("healthy", &healthy.base_url())
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, text).expect("write config");
        let mut env = env.to_vec();
        env.extend([
            ("TEST_EBAY_CLIENT_ID", "c"),
            ("TEST_EBAY_CLIENT_SECRET", "s"),
            ("TEST_EBAY_REFRESH_TOKEN", "seller-shop"),
            ("TEST_KEEPA_KEY", "keepa-key"),
        ]);
        let daemon = DaemonProcess::spawn_with_env(&config_path, &env);
        Setup {
            _dir: dir,
            config_path,
            daemon,
            _healthy: healthy,
        }
    }

    fn account(&self, id: &str) -> Value {
        status_json(&self.config_path)
            .and_then(|status| {
                status["accounts"]
                    .as_array()?
                    .iter()
                    .find(|account| account["id"] == id)
                    .cloned()
            })
            .unwrap_or(Value::Null)
    }

    /// Waits until the healthy account applied all 6 hours of its lookback.
    async fn healthy_synced(&self) {
        let synced = wait_until(Duration::from_secs(20), || {
            self.account("healthy")["streams"][0]["counts"]["APPLIED"]
                .as_u64()
                .unwrap_or(0)
                >= 6
        })
        .await;
        assert!(
            synced,
            "the healthy account did not sync; log:\n{}",
            self.daemon.logs()
        );
    }

    /// Waits until `check` holds for the status of account `id`.
    async fn account_until(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(20), || {
            last = self.account(id);
            check(&last)
        })
        .await;
        assert!(
            ok,
            "{what}: account {id} status {last:#}\nlog:\n{}",
            self.daemon.logs()
        );
        last
    }

    async fn log_until(&self, needle: &str) {
        let found = wait_until(Duration::from_secs(20), || {
            self.daemon.logs().contains(needle)
        })
        .await;
        assert!(found, "no {needle:?} in the log:\n{}", self.daemon.logs());
    }

    /// The daemon still runs, no account crashed, and it stops cleanly.
    async fn still_up_and_stops_cleanly(mut self) {
        assert!(
            self.daemon
                .wait_exit(Duration::from_millis(1))
                .await
                .is_none(),
            "the daemon exited; log:\n{}",
            self.daemon.logs()
        );
        let status = status_json(&self.config_path).expect("status --json");
        for account in status["accounts"].as_array().expect("accounts") {
            assert_eq!(
                account["supervisor"]["restarts"],
                0,
                "account crashed: {account:#}\nlog:\n{}",
                self.daemon.logs()
            );
        }
        assert!(
            !self.daemon.logs().contains("panicked"),
            "{}",
            self.daemon.logs()
        );
        self.daemon.signal("TERM");
        assert_eq!(
            self.daemon.wait_exit_code(Duration::from_secs(30)).await,
            Some(0),
            "{}",
            self.daemon.logs()
        );
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.daemon.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

async fn hostile_sim(faults: SimFaults) -> TestSim {
    TestSim::start(SimConfig {
        faults,
        ..fast_sim()
    })
    .await
}

#[tokio::test]
async fn huge_retry_after_cools_down_at_most_a_day_and_the_daemon_stays_up() {
    let sim = hostile_sim(SimFaults {
        throttle: 1.0,
        retry_after_text: Some("18446744073709551615".to_string()),
        ..SimFaults::default()
    })
    .await;
    let setup = Setup::start(&amazon_account("throttled", &sim.base_url()), &[]).await;
    setup.healthy_synced().await;
    let throttled = setup
        .account_until("throttled", "a cooldown", |account| {
            account["streams"][0]["cooldown"]["until_utc"].is_string()
        })
        .await;
    let until = marketsync::domain::parse_ts(
        throttled["streams"][0]["cooldown"]["until_utc"]
            .as_str()
            .expect("until"),
    )
    .expect("rfc3339");
    assert!(
        until <= marketsync::domain::now_ts() + 24 * 3600 + 60,
        "cooldown beyond a day: {throttled:#}"
    );
    assert_eq!(throttled["streams"][0]["counts"]["APPLIED"], 0);
    setup.log_until("retry_after=18446744073709551615").await;
    setup.still_up_and_stops_cleanly().await;
}

#[tokio::test]
async fn absurd_token_expires_in_is_clamped_and_the_account_syncs() {
    let sim = hostile_sim(SimFaults {
        token_expires_in: Some(u64::MAX),
        ..SimFaults::default()
    })
    .await;
    let setup = Setup::start(&amazon_account("lied-to", &sim.base_url()), &[]).await;
    setup.healthy_synced().await;
    setup
        .account_until("lied-to", "six applied hours", |account| {
            account["streams"][0]["counts"]["APPLIED"].as_u64() == Some(6)
        })
        .await;
    setup
        .log_until("token expires_in out of range; clamped")
        .await;
    setup.still_up_and_stops_cleanly().await;
}

#[tokio::test]
async fn ebay_total_that_grows_fails_the_window_keeps_the_cursor_and_memory_bounded() {
    let sim = TestSim::start(SimConfig {
        faults: SimFaults {
            ebay_total_grows: true,
            ..SimFaults::default()
        },
        ebay: marketsync::sim::ebay::EbaySimConfig {
            orders_per_day: 200,
            ..Default::default()
        },
        ..fast_sim()
    })
    .await;
    let base = sim.base_url();
    let account = format!(
        r#"
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
safety_lag = "0s"
retry_base = "1s"
retry_max = "2s"
interval = "1s"
"#
    );
    let setup = Setup::start(&account, &[]).await;
    let shop = setup
        .account_until("shop", "a failed window", |account| {
            account["streams"][0]["cursor"]["failures"]
                .as_i64()
                .unwrap_or(0)
                >= 2
        })
        .await;
    let cursor = &shop["streams"][0]["cursor"];
    assert_eq!(cursor["resources"], 0, "nothing partial applied: {shop:#}");
    let error = shop["streams"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("changed while paged"), "{shop:#}");
    setup.healthy_synced().await;
    let rss = setup.rss_kb();
    assert!(rss > 0 && rss <= MAX_RSS_KB, "rss {rss} kB");
    setup.still_up_and_stops_cleanly().await;
}

#[tokio::test]
async fn slow_drip_upstream_hits_the_total_call_deadline() {
    let sim = hostile_sim(SimFaults {
        slow_drip_ms: Some(200),
        ..SimFaults::default()
    })
    .await;
    let setup = Setup::start(
        &amazon_account("dripping", &sim.base_url()),
        &[("MARKETSYNC_PROVIDER_CALL_DEADLINE", "2")],
    )
    .await;
    setup.healthy_synced().await;
    setup.log_until("failed to reach the provider").await;
    setup
        .account_until("dripping", "an error saying why", |account| {
            account["streams"][0]["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("deadline exceeded"))
        })
        .await;
    let dripping = setup.account("dripping");
    assert_eq!(dripping["streams"][0]["counts"]["APPLIED"], 0);
    let rss = setup.rss_kb();
    assert!(rss > 0 && rss <= MAX_RSS_KB, "rss {rss} kB");
    setup.still_up_and_stops_cleanly().await;
}

/// A loopback listener that records every byte it receives (and answers 200 `{}`).
async fn recorder() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock()
                    .expect("sink")
                    .extend_from_slice(&buffer[..read]);
            }
            use std::io::Write;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        }
    });
    (base, received)
}

#[tokio::test]
async fn cross_origin_redirect_is_not_followed_and_no_credential_leaves() {
    let (elsewhere, received) = recorder().await;
    let sim = hostile_sim(SimFaults {
        redirect_to: Some(elsewhere),
        ..SimFaults::default()
    })
    .await;
    let setup = Setup::start(&amazon_account("redirected", &sim.base_url()), &[]).await;
    setup.healthy_synced().await;
    setup
        .account_until("redirected", "the 307 named", |account| {
            account["streams"][0]["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("307"))
        })
        .await;
    setup
        .log_until("redirect to another origin not followed")
        .await;
    let seen = String::from_utf8_lossy(&received.lock().expect("sink")).to_string();
    assert!(seen.is_empty(), "the other origin received:\n{seen}");
    assert_eq!(
        setup.account("redirected")["streams"][0]["counts"]["APPLIED"],
        0
    );
    setup.still_up_and_stops_cleanly().await;
}

#[tokio::test]
async fn document_url_off_https_fails_the_unit_naming_its_host() {
    let sim = hostile_sim(SimFaults {
        document_url: Some("http://documents.example.net:8080".to_string()),
        ..SimFaults::default()
    })
    .await;
    let setup = Setup::start(&amazon_account("misdirected", &sim.base_url()), &[]).await;
    setup.healthy_synced().await;
    let account = setup
        .account_until("misdirected", "the host named", |account| {
            account["streams"][0]["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("documents.example.net"))
        })
        .await;
    assert_eq!(account["streams"][0]["counts"]["APPLIED"], 0);
    assert_eq!(
        sim.stats().calls("downloadDocument"),
        0,
        "nothing was downloaded"
    );
    setup.still_up_and_stops_cleanly().await;
}

#[tokio::test]
async fn absurd_keepa_refill_values_are_clamped_and_the_daemon_stays_up() {
    let sim = hostile_sim(SimFaults {
        keepa_tokens_left: Some(i64::MIN),
        keepa_refill_in: Some(u64::MAX),
        keepa_refill_rate: Some(1e300),
        ..SimFaults::default()
    })
    .await;
    let base = sim.base_url();
    let account = format!(
        r#"
[[accounts]]
id = "keepa-main"
provider = "keepa"
endpoint = "{base}"
[accounts.credentials]
api_key_env = "TEST_KEEPA_KEY"
[accounts.streams.products]
interval = "1s"
"#
    );
    let setup = Setup::start(&account, &[]).await;
    enqueue(&setup.config_path, "B000000001");
    setup.log_until("keepa balance out of range; clamped").await;
    setup.healthy_synced().await;
    setup.still_up_and_stops_cleanly().await;
}

fn enqueue(config_path: &Path, asin: &str) {
    let output = marketsync()
        .arg("--config")
        .arg(config_path)
        .args(["enqueue", "keepa", asin])
        .output()
        .expect("enqueue");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
