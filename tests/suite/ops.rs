//! Running it like infrastructure (issue 16): the systemd unit and its notifications,
//! the Grafana dashboard against a live `/metrics`, data export (CLI and HTTP), a closed
//! stdout, shell completions and the man page. Every test runs the real binary or the
//! real HTTP server over a real SQLite file.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marketsync::domain::format_ts;
use marketsync::store::SqliteLedger;
use serde_json::Value;

use crate::common::{fast_sim, marketsync, wait_until, DaemonProcess, Fixture, TestSim};

const TOKEN: &str = "ops-test-admin-token";
/// 2025-11-24T16:00:00Z: the seeded rows' first hour.
const HOUR_START: i64 = 1_764_000_000;

/// A child process killed and reaped when the test ends, however it ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address a daemon logged for `what`.
fn logged_address(logs: &str, what: &str) -> Option<String> {
    let line = logs.lines().find(|line| line.contains(what))?;
    let start = line.find("address=")? + "address=".len();
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------------------------
// systemd

#[test]
fn systemd_unit_has_the_promised_settings_and_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo_file("contrib/systemd/marketsync.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=marketsync",
        "User=marketsync",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "--data-dir ${STATE_DIRECTORY}",
    ] {
        assert!(
            unit.lines().any(|l| l.contains(line)),
            "the unit lacks {line:?}"
        );
    }
    // TimeoutStopSec must cover the default shutdown grace (30 s) plus the backstop.
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .expect("TimeoutStopSec");
    assert!(stop > marketsync::app::DEFAULT_GRACE + Duration::from_secs(2));

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("SKIPPED: systemd-analyze is not installed (apt-get install systemd); the unit was checked textually only");
        return;
    };
    assert!(version.status.success());
    // verify insists that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("marketsync.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/marketsync",
            env!("CARGO_BIN_EXE_marketsync"),
        ),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

/// Receives sd_notify datagrams on a socket of its own.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// Every datagram until `done` says so over all received, or `deadline`.
    fn receive_until(
        &self,
        messages: &mut Vec<String>,
        deadline: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> bool {
        let end = Instant::now() + deadline;
        let mut buffer = [0u8; 4096];
        while Instant::now() < end {
            if done(messages.as_slice()) {
                return true;
            }
            if let Ok(length) = self.socket.recv(&mut buffer) {
                messages.push(String::from_utf8_lossy(&buffer[..length]).to_string());
            }
        }
        done(messages.as_slice())
    }
}

fn count(messages: &[String], line: &str) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == line))
        .count()
}

fn position(messages: &[String], line: &str) -> Option<usize> {
    messages.iter().position(|m| m.lines().any(|l| l == line))
}

#[test]
fn daemon_notifies_ready_then_watchdog_with_status_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("marketsync.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"data_dir = "{}"
[simulator]
enabled = true
listen = "127.0.0.1:0"
processing_latency = "0s"
[[accounts]]
id = "acme"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "6h"
"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let notify = NotifySocket::bind();
    let log_path = dir.path().join("daemon.log");
    // WATCHDOG_PID must name the daemon itself (sd_watchdog_enabled(3)): the shell
    // sets its own pid, then becomes the daemon with exec.
    let mut process = Reaped(
        Command::new("sh")
            .args([
                "-c",
                "WATCHDOG_PID=$$ exec \"$MARKETSYNC_BIN\" --config \"$CONFIG_PATH\" run",
            ])
            .env_remove("MARKETSYNC_CONFIG")
            .env("RUST_LOG", "marketsync=info")
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "400000")
            .env("MARKETSYNC_BIN", env!("CARGO_BIN_EXE_marketsync"))
            .env("CONFIG_PATH", &config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut messages = Vec::new();
    // READY, then the watchdog fed every 200 ms (half of 400 ms) with a status line.
    let fed = notify.receive_until(&mut messages, Duration::from_secs(30), |m| {
        count(m, "WATCHDOG=1") >= 3
    });
    assert!(fed, "messages: {messages:?}\nlogs:\n{}", logs());
    let ready = position(&messages, "READY=1").expect("READY=1 sent");
    let first_watchdog = position(&messages, "WATCHDOG=1").unwrap();
    assert!(
        ready < first_watchdog,
        "READY before WATCHDOG: {messages:?}"
    );
    assert_eq!(count(&messages, "READY=1"), 1, "{messages:?}");
    let watchdog_status = messages[first_watchdog]
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("a status line beside WATCHDOG=1");
    assert!(
        watchdog_status.starts_with("accounts 1/1 running; services ")
            || watchdog_status.starts_with("accounts 0/1 running"),
        "{watchdog_status}"
    );
    assert!(position(&messages, "STOPPING=1").is_none());

    let pid = process.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = notify.receive_until(&mut messages, Duration::from_secs(30), |m| {
        position(m, "STOPPING=1").is_some()
    });
    assert!(stopped, "messages: {messages:?}\nlogs:\n{}", logs());
    let stopping = position(&messages, "STOPPING=1").unwrap();
    assert!(stopping > first_watchdog);
    assert!(
        messages[stopping].contains("STATUS=stopping: shutdown requested"),
        "{messages:?}"
    );
    let end = Instant::now() + Duration::from_secs(30);
    let mut exit = None;
    while exit.is_none() && Instant::now() < end {
        exit = process.0.try_wait().unwrap();
        // Draining the socket is the wait: each recv blocks up to 200 ms.
        let mut after = Vec::new();
        notify.receive_until(&mut after, Duration::from_millis(200), |_| false);
        messages.extend(after);
    }
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(0),
        "logs:\n{}",
        logs()
    );
    // Nothing fed the watchdog after STOPPING.
    assert_eq!(
        count(&messages[stopping..], "WATCHDOG=1"),
        0,
        "{messages:?}"
    );
}

// ---------------------------------------------------------------------------------
// Grafana

/// Every metric name a `/metrics` scrape offers to PromQL: the samples present, and for
/// each family (`# TYPE name type`) the names its samples carry.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                match kind {
                    "counter" => {
                        names.insert(format!("{name}_total"));
                    }
                    _ => {
                        names.insert(name.to_string());
                    }
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The metric names a PromQL expression reads (`marketsync_...`).
fn queried_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("marketsync_") {
        let tail = &rest[start..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &tail[name.len()..];
        names.push(name);
    }
    names
}

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo_file("contrib/grafana/marketsync.json")).unwrap(),
    )
    .unwrap()
}

/// Every PromQL expression of the dashboard: panel targets and template queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        queries.push((
            format!("${}", variable["name"].as_str().unwrap()),
            variable["definition"].as_str().unwrap().to_string(),
        ));
    }
    queries
}

#[test]
fn grafana_dashboard_is_an_importable_dashboard_covering_the_issue_s_families() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(dashboard["uid"], "marketsync");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "unique panel ids"
        );
        let grid = &panel["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24);
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}");
            assert!(!panel["targets"].as_array().unwrap().is_empty());
        }
    }
    let queried: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|(_, expr)| queried_names(expr))
        .collect();
    for family in [
        "marketsync_provider_calls_total",
        "marketsync_provider_throttled_total",
        "marketsync_quota_tokens_available",
        "marketsync_ledger_hours",
        "marketsync_ledger_newest_applied_lag_seconds",
        "marketsync_cursor_lag_seconds",
        "marketsync_job_queue_depth",
        "marketsync_actor_restarts_total",
        "marketsync_service_restarts_total",
        "marketsync_actors_quarantined",
        "marketsync_locks",
        "marketsync_lock_takeovers_total",
    ] {
        assert!(queried.contains(family), "no panel shows {family}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_grafana_panel_queries_exists_in_a_live_metrics_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("marketsync.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"data_dir = "{}"
[http]
listen = "127.0.0.1:0"
[simulator]
enabled = true
listen = "127.0.0.1:0"
processing_latency = "0s"
[[accounts]]
id = "acme"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "6h"
safety_lag = "0s"
poll_min = "50ms"
poll_max = "200ms"
[[accounts]]
id = "ebay"
provider = "ebay"
[accounts.streams.orders]
start = "1days"
interval = "2s"
[[accounts]]
id = "stockx"
provider = "stockx"
[accounts.streams.market_data]
interval = "1s"
"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // A running cooldown (of a provider no account uses): `cooldown_remaining_seconds`
    // has a sample only while one runs.
    let ledger = SqliteLedger::open(&dir.path().join("data").join("marketsync.db")).unwrap();
    ledger.with_conn(|conn| {
        conn.execute(
            "INSERT INTO cooldowns (scope, reason, started_at, until_at, detail) VALUES ('keepa', 'quota', ?1, ?2, 'ops test')",
            [marketsync::domain::now_ts(), marketsync::domain::now_ts() + 3600],
        )
        .unwrap();
    });
    drop(ledger);
    let daemon = DaemonProcess::spawn(&config_path);
    let mut http_addr = None;
    wait_until(Duration::from_secs(30), || {
        http_addr = logged_address(&daemon.logs(), "http api, dashboard and metrics listening");
        http_addr.is_some()
    })
    .await;
    let http_addr = http_addr.unwrap_or_else(|| panic!("logs:\n{}", daemon.logs()));
    let client = reqwest::Client::new();
    // Scrape until every metric a panel queries is there (some appear only once their
    // first sample exists: the newest applied hour's lag after the first apply), or the
    // deadline passes; what is still missing then fails below.
    let wanted: Vec<String> = dashboard_queries(&dashboard())
        .iter()
        .flat_map(|(_, expr)| queried_names(expr))
        .collect();
    let mut text = String::new();
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Ok(response) = client
            .get(format!("http://{http_addr}/metrics"))
            .send()
            .await
        {
            text = response.text().await.unwrap_or_default();
            let exposed = exposed_names(&text);
            if wanted.iter().all(|name| exposed.contains(name)) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exposed = exposed_names(&text);
    let mut missing = Vec::new();
    for (panel, expr) in dashboard_queries(&dashboard()) {
        let names = queried_names(&expr);
        assert!(
            !names.is_empty(),
            "{panel}: {expr} queries no marketsync metric"
        );
        for name in names {
            if !exposed.contains(&name) {
                missing.push(format!("{panel}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exposed: {missing:?}\n/metrics:\n{text}"
    );
}

// ---------------------------------------------------------------------------------
// Export

/// Two accounts' sales over 4 hours, orders, change events, prices and jobs.
pub(super) fn seed_export_rows(database: &Path) {
    let ledger = SqliteLedger::open(database).unwrap();
    let base = HOUR_START;
    ledger.with_conn(|conn| {
        let tx = conn.transaction().unwrap();
        for (account, offset) in [("acct", 0), ("other", 1)] {
            for hour in 0..4i64 {
                tx.execute(
                    "INSERT INTO vendor_realtime_sales VALUES (?1, ?2, ?3, ?4, ?5, 'r1', ?2)",
                    rusqlite::params![
                        account,
                        base + hour * 3600,
                        format!("B00000000{hour}"),
                        hour + offset,
                        12.5 * hour as f64
                    ],
                )
                .unwrap();
            }
        }
        tx.execute(
            "INSERT INTO ebay_orders VALUES ('acct', 'O-1', '2025-11-20T10:00:00.000Z', '2025-11-21T10:00:00.000Z',
             'FULFILLED', 'PAID', '19.99', 'USD', 'buyer \"one\", the first', '{}', ?1, ?1)",
            [base],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO ebay_orders VALUES ('acct', 'O-2', '2025-11-22T10:00:00.000Z', '2025-11-24T08:00:00.000Z',
             'NOT_STARTED', 'PAID', NULL, NULL, NULL, '{}', ?1, ?1)",
            [base],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO events (account, stream, resource_id, field, before, after, observed_at)
             VALUES ('acct', 'orders', 'O-1', 'fulfillment_status', 'NOT_STARTED', 'FULFILLED', ?1)",
            [base],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO market_prices (provider, sku, size, lowest_ask, highest_bid, last_sale, currency, updated_at, job_id) VALUES ('stockx', 'DD1391-100', '10', 101.5, 99.0, NULL, 'USD', ?1, 7)",
            [base],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO jobs (provider, sku, size, dedupe_key, priority, state, attempts, not_before, created_at, updated_at, source)
             VALUES ('stockx', 'DD1391-100', '10', 'stockx|DD1391-100|10', 200, 'succeeded', 0, ?1, ?1, ?1, 'cli')",
            [base],
        )
        .unwrap();
        tx.commit().unwrap();
    });
}

fn export_output(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = marketsync()
        .arg("--config")
        .arg(config)
        .arg("export")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[tokio::test]
async fn export_writes_each_kind_as_csv_or_jsonl_filtered_by_account_and_since() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    seed_export_rows(&fixture.database_path());
    let config = &fixture.config_path;
    let base = HOUR_START;

    let (code, csv, stderr) = export_output(config, &["sales"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "account,hour_utc,asin,ordered_units,ordered_revenue,report_id,updated_at"
    );
    assert_eq!(lines.len(), 1 + 8);
    assert_eq!(
        lines[2],
        format!(
            "acct,{},B000000001,1,12.5,r1,{}",
            format_ts(base + 3600),
            format_ts(base + 3600)
        )
    );

    // --account and --since (the two newest hours of one account).
    let since = format_ts(base + 2 * 3600);
    let (code, csv, _) = export_output(config, &["sales", "--account", "acct", "--since", &since]);
    assert_eq!(code, Some(0));
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows.iter().all(|row| row.starts_with("acct,")));
    assert!(rows[0].contains("B000000002") && rows[1].contains("B000000003"));

    // JSON lines: keys in column order, NULL as null, numbers as numbers.
    let (code, jsonl, _) = export_output(config, &["orders", "--format", "jsonl"]);
    assert_eq!(code, Some(0));
    let orders: Vec<Value> = jsonl
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0]["order_id"], "O-1");
    assert_eq!(orders[0]["buyer"], "buyer \"one\", the first");
    assert_eq!(orders[1]["total_value"], Value::Null);
    assert_eq!(orders[0]["first_seen_at"], format_ts(base));
    assert!(jsonl.starts_with("{\"account\":\"acct\",\"order_id\":\"O-1\""));
    // A quoted CSV field survives a CSV reader.
    let (_, csv, _) = export_output(config, &["orders"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let first = reader.records().next().unwrap().unwrap();
    assert_eq!(&first[8], "buyer \"one\", the first");
    // Orders modified since a day: by last_modified_date.
    let (_, jsonl, _) = export_output(
        config,
        &["orders", "--since", "2025-11-23", "--format", "jsonl"],
    );
    assert_eq!(jsonl.lines().count(), 1, "{jsonl}");
    assert!(jsonl.contains("O-2"));

    let (_, events, _) = export_output(config, &["events", "--format", "jsonl"]);
    let event: Value = serde_json::from_str(events.trim()).unwrap();
    assert_eq!(event["after"], "FULFILLED");
    assert_eq!(event["observed_at"], format_ts(base));
    let (_, prices, _) = export_output(config, &["prices"]);
    assert_eq!(
        prices,
        format!("provider,sku,size,lowest_ask,highest_bid,last_sale,currency,updated_at,job_id\nstockx,DD1391-100,10,101.5,99,,USD,{},7\n", format_ts(base))
    );
    let (_, jobs, _) = export_output(config, &["jobs", "--format", "jsonl"]);
    let job: Value = serde_json::from_str(jobs.trim()).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["finished_at"], Value::Null);
    // A relative --since: nothing of 2025 is newer than an hour ago.
    let (code, csv, _) = export_output(config, &["jobs", "--since", "1h"]);
    assert_eq!(code, Some(0));
    assert_eq!(csv.lines().count(), 1, "header only: {csv}");
}

#[tokio::test]
async fn export_refuses_a_bad_kind_format_time_or_account_naming_the_fix() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    let config = &fixture.config_path;
    for (args, expected) in [
        (&["salez"][..], "invalid value 'salez'"),
        (&["sales", "--format", "xml"][..], "invalid value 'xml'"),
        (
            &["sales", "--since", "last tuesday"][..],
            "--since: invalid time \"last tuesday\"; use an RFC 3339 time (2026-11-01T00:00:00Z), a UTC date (2026-11-01) or a duration back from now (24h, 7days)",
        ),
        (
            &["prices", "--account", "acct"][..],
            "--account: prices are not kept per account; drop the account filter",
        ),
        (
            &["sales", "--account", "nobody"][..],
            "--account: unknown account \"nobody\"; configured accounts: acct",
        ),
    ] {
        let (code, stdout, stderr) = export_output(config, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Peak resident memory of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `export sales` and reads its output; samples the exporter's peak RSS when 90 %
/// of `rows` have arrived (it is still running: the rest is in the pipe or unread).
fn export_peak_rss(config: &Path, rows: usize) -> (u64, usize) {
    let mut child = marketsync()
        .arg("--config")
        .arg(config)
        .args(["export", "sales"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut reader = BufReader::with_capacity(4096, child.stdout.take().unwrap());
    let mut line = String::new();
    let mut seen = 0usize;
    let mut peak = 0;
    while reader.read_line(&mut line).unwrap() > 0 {
        seen += 1;
        line.clear();
        if seen == rows * 9 / 10 {
            peak = peak_rss_kib(pid).expect("exporter still running");
        }
    }
    assert!(child.wait().unwrap().success());
    (peak, seen - 1)
}

#[tokio::test]
async fn export_streams_in_constant_memory() {
    let sim = TestSim::start(fast_sim()).await;
    let small = Fixture::new(&sim, "");
    let large = Fixture::new(&sim, "");
    for (fixture, rows) in [(&small, 5_000usize), (&large, 300_000)] {
        let ledger = SqliteLedger::open(&fixture.database_path()).unwrap();
        ledger.with_conn(|conn| {
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare("INSERT INTO vendor_realtime_sales VALUES ('acct', ?1, ?2, 3, 45.67, 'report-0123456789', ?1)")
                    .unwrap();
                for row in 0..rows {
                    let hour = (row / 100) as i64 * 3600;
                    insert
                        .execute(rusqlite::params![hour, format!("B{row:09}")])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        });
    }
    let (small_peak, small_rows) = export_peak_rss(&small.config_path, 5_000);
    let (large_peak, large_rows) = export_peak_rss(&large.config_path, 300_000);
    assert_eq!((small_rows, large_rows), (5_000, 300_000));
    // 300,000 rows are about 25 MB of CSV; the exporter grows by far less than that.
    let growth = large_peak.saturating_sub(small_peak);
    assert!(
        growth < 8 * 1024,
        "peak RSS {small_peak} KiB for 5,000 rows, {large_peak} KiB for 300,000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_over_http_streams_the_same_rows_behind_the_admin_token() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    seed_export_rows(&fixture.database_path());
    let ledger = std::sync::Arc::new(SqliteLedger::open(&fixture.database_path()).unwrap());
    let config = &fixture.config;
    let hours: std::sync::Arc<dyn marketsync::store::LedgerStore> = ledger.clone();
    let locks = marketsync::app::open_locks(config, Some(&hours))
        .await
        .unwrap();
    let state = marketsync::http::HttpState::new(
        std::sync::Arc::new(config.deployment()),
        ledger,
        locks,
        Some(TOKEN.to_string()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(marketsync::http::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let get = |path: &str, token: bool| {
        let request = client.get(format!("http://{addr}{path}"));
        if token {
            request.bearer_auth(TOKEN)
        } else {
            request
        }
    };

    let refused = get("/api/export/sales", false).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let answer = get("/api/export/sales?account=acct", true)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(answer.headers()["transfer-encoding"], "chunked");
    let body = answer.text().await.unwrap();
    let (_, cli, _) = export_output(&fixture.config_path, &["sales", "--account", "acct"]);
    assert_eq!(body, cli);
    assert_eq!(body.lines().count(), 1 + 4);

    let answer = get("/api/export/orders?format=jsonl&since=2025-11-23", true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["content-type"],
        "application/jsonl; charset=utf-8"
    );
    let body = answer.text().await.unwrap();
    assert_eq!(body.lines().count(), 1);
    assert!(body.contains("\"order_id\":\"O-2\""));

    for (path, status, message) in [
        ("/api/export/salez", 404, "unknown export kind \"salez\""),
        (
            "/api/export/sales?format=xml",
            400,
            "unknown export format \"xml\"",
        ),
        ("/api/export/sales?since=soon", 400, "invalid time \"soon\""),
        (
            "/api/export/prices?account=acct",
            400,
            "prices are not kept per account",
        ),
        (
            "/api/export/sales?account=nobody",
            404,
            "unknown account \"nobody\"",
        ),
        (
            "/api/export/sales?limit=5",
            400,
            "unknown query parameter \"limit\"",
        ),
    ] {
        let answer = get(path, true).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), status, "{path}");
        let error: Value = answer.json().await.unwrap();
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{path}: {error}"
        );
    }
    server.abort();
}

// ---------------------------------------------------------------------------------
// CLI: closed stdout, completions, man page

#[tokio::test]
async fn a_closed_stdout_ends_a_command_quietly_with_exit_0() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    seed_export_rows(&fixture.database_path());
    for args in [
        &["status", "--json"][..],
        &["status"][..],
        &["jobs"][..],
        &["cooldowns", "--json"][..],
        &["export", "sales"][..],
        &["completions", "bash"][..],
        &["man"][..],
    ] {
        // A pipe whose reader is gone before the command writes: its first write fails
        // with EPIPE, every time.
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let output = marketsync()
            .env("RUST_BACKTRACE", "1")
            .arg("--config")
            .arg(&fixture.config_path)
            .args(args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }

    // As a person types it: `| head -1` on an output longer than the pipe's buffer.
    let many = Fixture::new(&sim, "");
    let ledger = SqliteLedger::open(&many.database_path()).unwrap();
    ledger.with_conn(|conn| {
        let tx = conn.transaction().unwrap();
        for row in 0..20_000i64 {
            tx.execute(
                "INSERT INTO vendor_realtime_sales VALUES ('acct', ?1, 'B0', 1, 1.0, NULL, ?1)",
                [row * 3600],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    });
    let output = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; \"$0\" --config \"$1\" export sales | head -1",
            env!("CARGO_BIN_EXE_marketsync"),
        ])
        .arg(&many.config_path)
        .env_remove("MARKETSYNC_CONFIG")
        .env("TEST_CLIENT_ID", "test-client")
        .env("TEST_CLIENT_SECRET", "test-secret-value")
        .env("TEST_REFRESH_TOKEN", "test-refresh-acct")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "account,hour_utc,asin,ordered_units,ordered_revenue,report_id,updated_at\n"
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn completions_and_man_page_are_generated_from_the_cli() {
    let run = |args: &[&str]| {
        let output = marketsync().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_marketsync()") && bash.contains("complete -F _marketsync"));
    // Subcommands and the export kinds are offered.
    assert!(bash.contains("export") && bash.contains("sales orders events prices jobs"));
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef marketsync"));
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c marketsync"));
    let man = run(&["man"]);
    assert!(
        man.contains(".TH marketsync 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("export") && man.contains("completions"));

    let bad = marketsync().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'tcsh'"));

    // The bash script parses.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("marketsync.bash");
    std::fs::write(&script, &bash).unwrap();
    let checked = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn release_profile_keeps_line_tables_and_unwinding() {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo_file("Cargo.toml")).unwrap()).unwrap();
    let release = &manifest["profile"]["release"];
    // Backtraces name files and lines, without the full debug info (130 MB before).
    assert_eq!(release["debug"].as_str(), Some("line-tables-only"));
    // Stripping debuginfo would drop those line tables again.
    assert!(release
        .get("strip")
        .is_none_or(|strip| strip.as_str() == Some("none")));
    // An account's panic must stay an account crash, never abort the process.
    assert!(release
        .get("panic")
        .is_none_or(|panic| panic.as_str() == Some("unwind")));
}
