//! The real `marketsync` binary: check-config errors, status --json, fill-day, and
//! `run` with the embedded simulator stopped by SIGTERM.

use std::time::Duration;

use marketsync::domain::{floor_hour, format_ts, now_ts};
use tokio_util::sync::CancellationToken;

use crate::common::{
    applied_hours, counts, fast_sim, marketsync, schedule, wait_until, DaemonProcess, Fixture,
    TestSim,
};

fn check_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let output = marketsync()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "bad.toml");
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn check_config_names_the_file_the_key_and_the_fix() {
    let base = "[simulator]\nenabled = true\n[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"ATVPDKIKX0DER\"\n";
    let cases = [
        (
            format!("{base}[accounts.streams.vendor_rt_sales]\nlookback = \"3 hourz\"\n"),
            "marketsync: bad.toml: accounts[0].streams.vendor_rt_sales.lookback: invalid duration \"3 hourz\"; use a form like 72h, 15m or 30s",
        ),
        (
            "[[accounts]]\nid = \"a\"\nprovider = \"ebya\"\nmarketplace = \"X\"\n".to_string(),
            "marketsync: bad.toml: accounts[0].provider: unknown provider \"ebya\"; expected one of amazon, ebay, stockx, keepa, alias",
        ),
        (
            format!("{base}[accounts.streams.vendor_rt_sales]\nlokback = \"3h\"\n"),
            "marketsync: bad.toml: accounts[0].streams.vendor_rt_sales.lokback: unknown field `lokback`",
        ),
        (
            format!("{base}[accounts.streams.vendor_rt_sales]\nchunk = \"90m\"\n"),
            "marketsync: bad.toml: accounts[0].streams.vendor_rt_sales.chunk: 1h 30m is not a whole number of hours; use a form like 6h",
        ),
        (
            "[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n".to_string(),
            "marketsync: bad.toml: accounts[0].credentials: missing;",
        ),
        (
            format!("{base}[[accounts]]\nid = \"a\"\nprovider = \"amazon\"\nmarketplace = \"X\"\n"),
            "marketsync: bad.toml: accounts[1].id: duplicate account id \"a\"",
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr) = check_config(&text);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.starts_with(expected),
            "expected {expected:?}\n     got {stderr:?}"
        );
    }
    let (code, stderr) = check_config(&format!("{base}[accounts.streams.vendor_rt_sales]\n"));
    assert_eq!(code, 0, "{stderr}");

    let missing = marketsync()
        .args(["--config", "/nonexistent/marketsync.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("/nonexistent/marketsync.toml: cannot read the file"));
}

#[test]
fn shipped_configs_are_valid() {
    for path in ["config/demo.toml", "config/example.toml"] {
        let output = marketsync()
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--config", path, "check-config"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn status_json_and_fill_day_through_the_binary() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"48h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    context.run_once().await.unwrap();
    assert_eq!(counts(&ledger)[3], 48);

    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stream = &status["accounts"][0]["streams"][0];
    assert_eq!(status["accounts"][0]["id"], "acct");
    assert_eq!(stream["name"], "vendor_rt_sales");
    assert_eq!(stream["counts"]["APPLIED"], 48);
    assert_eq!(stream["counts"]["MISSING"], 0);
    assert_eq!(stream["cooldown"]["reason"], "none");
    assert!(stream["cooldown"]["until_utc"].is_null());
    let snapshot = marketsync::store::LedgerStore::snapshot(
        ledger.as_ref(),
        "acct",
        "vendor_rt_sales",
        now_ts(),
    )
    .unwrap();
    let newest = snapshot.last_applied_hour.unwrap();
    assert!(newest >= floor_hour(now_ts()) - 2 * 3600);
    assert_eq!(stream["last_applied_hour"], format_ts(newest));
    assert!(stream["next_claimable_hour"].is_null());

    // The table form is aligned and names the stream.
    let table = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .arg("status")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().next().unwrap().starts_with("ACCOUNT"));
    assert!(table.contains("acct") && table.contains("vendor_rt_sales"));

    // fill-day for yesterday (entirely inside the 48h window) resets its 24 hours.
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let date = yesterday.format("%Y-%m-%d").to_string();
    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["fill-day", "acct", "vendor_rt_sales", &date])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("24 hours"));
    assert_eq!(counts(&ledger)[0], 24);
    let before = sim.stats().calls("createReport");
    context.run_once().await.unwrap();
    assert_eq!(counts(&ledger)[3], 48);
    assert_eq!(
        sim.stats().calls("createReport"),
        before + 4,
        "24h in 6h chunks"
    );

    // Bad input names itself.
    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["fill-day", "acct", "vendor_rt_sales", "2025-13-01"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("invalid date \"2025-13-01\"; use the form YYYY-MM-DD"));
    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["fill-day", "nobody", "vendor_rt_sales", &date])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("unknown account \"nobody\"; configured accounts: acct"));
}

#[tokio::test]
async fn run_syncs_with_the_embedded_simulator_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_path = dir.path().join("run.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
data_dir = "{}"
[http]
listen = "127.0.0.1:{http_port}"
[simulator]
enabled = true
processing_latency = "200ms"
[[accounts]]
id = "demo"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "24h"
poll_min = "50ms"
poll_max = "200ms"
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let mut daemon = DaemonProcess::spawn(&config_path);
    let synced = wait_until(Duration::from_secs(60), || {
        applied_hours(&config_path) == 24
    })
    .await;
    daemon.signal("TERM");
    let code = daemon.wait_exit_code(Duration::from_secs(30)).await;
    let logs = daemon.logs();
    assert!(synced, "24 hours applied within 60s; logs:\n{logs}");
    assert_eq!(
        code,
        Some(0),
        "exit 0 within the grace period; logs:\n{logs}"
    );
    assert!(logs.contains("shutdown complete"), "logs:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_secrets_never_appear_in_logs_status_or_errors() {
    use marketsync::sim::FaultKind;
    let mut sim_config = fast_sim();
    // One failing call, so error paths are logged too.
    sim_config.faults = schedule("createReport", 1, FaultKind::ServerError);
    let sim = TestSim::start(sim_config).await;
    let fixture = Fixture::new(
        &sim,
        "lookback = \"12h\"\nretry_base = \"1s\"\nretry_max = \"1s\"",
    );
    // The credential values marketsync() exports (see tests/common).
    let secrets = ["test-secret-value", "test-refresh-acct"];
    let mut daemon = DaemonProcess::spawn_with_env(&fixture.config_path, &[("RUST_LOG", "debug")]);
    let synced = wait_until(Duration::from_secs(60), || {
        applied_hours(&fixture.config_path) == 12
    })
    .await;
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
    let logs = daemon.logs();
    assert!(synced, "logs:\n{logs}");
    assert!(
        logs.contains("unit failed"),
        "the error path was exercised; logs:\n{logs}"
    );
    let mut outputs = vec![("daemon log", logs)];
    for args in [
        &["status", "--json"][..],
        &["status"][..],
        &["doctor"][..],
        &["locks"][..],
        &["cooldowns"][..],
    ] {
        let output = marketsync()
            .arg("--config")
            .arg(&fixture.config_path)
            .args(args)
            .output()
            .unwrap();
        outputs.push((
            "command output",
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    // A refused credential's error message names the failure, not the secret.
    let bad = marketsync()
        .env("TEST_CLIENT_SECRET", "")
        .arg("--config")
        .arg(&fixture.config_path)
        .arg("run")
        .output()
        .unwrap();
    outputs.push((
        "startup error",
        String::from_utf8_lossy(&bad.stderr).to_string(),
    ));
    for (what, text) in &outputs {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{what} contains a configured secret:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_catches_up_and_exits_saying_what_stopped() {
    use marketsync::sim::FaultKind;
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"12h\"");
    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["sync", "--once", "--timeout", "60s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("12 of 12 hours applied across 1 streams"),
        "{stdout}"
    );
    assert_eq!(counts(&fixture.open_ledger())[3], 12);

    // 429s that repeat despite the correction stop the catch-up early: exit 1, naming
    // the stream and why. (Issue 12: a single 429 is a model correction and no longer
    // stops; createReport at 10/s so the corrected retries come quickly.)
    let mut throttled = fast_sim();
    throttled.faults = marketsync::sim::SimFaults {
        schedule: (1..=3)
            .map(|nth| marketsync::sim::ScheduledFault {
                operation: "createReport".to_string(),
                nth,
                fault: FaultKind::Throttle,
            })
            .collect(),
        ..marketsync::sim::SimFaults::default()
    };
    let sim = TestSim::start(throttled).await;
    let fixture = Fixture::with_globals(
        &sim,
        "[quota.amazon.createReport]\nrate = 10.0\nburst = 15.0\n",
        "lookback = \"12h\"",
    );
    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["sync", "--once", "--timeout", "60s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("acct/vendor_rt_sales: cooling down"),
        "{stdout}"
    );

    let refused = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .arg("sync")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sync needs --once"));
}

/// A daemon run of one Amazon account against the embedded simulator, logging in
/// `format` at debug level: its log once `want` has been logged (or the deadline passed).
async fn logs_of_a_run(format: &str, want: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("run.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
data_dir = "{}"
[simulator]
enabled = true
listen = "127.0.0.1:0"
processing_latency = "0s"
asins_per_marketplace = 3
[[accounts]]
id = "shop-7"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "2h"
chunk = "2h"
poll_min = "10ms"
poll_max = "50ms"
safety_lag = "0s"
daily_audit = false
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let mut daemon = DaemonProcess::spawn_with(
        &config_path,
        &[("RUST_LOG", "marketsync=debug")],
        &["--log-format", format],
    );
    let logged = wait_until(Duration::from_secs(60), || {
        let logs = daemon.logs();
        want.iter().all(|needle| logs.contains(needle))
    })
    .await;
    daemon.signal("TERM");
    let code = daemon.wait_exit_code(Duration::from_secs(30)).await;
    let logs = daemon.logs();
    assert!(logged, "{want:?} logged within 60s; logs:\n{logs}");
    assert_eq!(code, Some(0), "logs:\n{logs}");
    logs
}

/// Issue 16 point 8: the account and the stream come from spans, not from fields
/// repeated by hand. "hours applied" is logged deep inside a stream's run, "staged rows
/// swapped in" by the store on the blocking pool (whose threads have no span of their
/// own): both must name the account and the stream, once, in the text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_lines_inside_a_stream_run_carry_account_and_stream_from_its_spans() {
    let logs = logs_of_a_run("text", &["hours applied", "staged rows swapped in"]).await;
    for message in ["hours applied", "staged rows swapped in"] {
        let line = logs
            .lines()
            .find(|line| line.contains(message))
            .unwrap_or_else(|| panic!("no {message:?} line in\n{logs}"));
        assert!(
            line.contains("account{account=shop-7}:stream{stream=vendor_rt_sales}: "),
            "{line}"
        );
        assert_eq!(line.matches("shop-7").count(), 1, "named once: {line}");
        assert_eq!(line.matches("vendor_rt_sales").count(), 1, "{line}");
    }
    // The actor's own line is in the account's span only; the supervisor's line about
    // its child is outside it and names the account itself.
    let actor = logs
        .lines()
        .find(|line| line.contains("account actor running"))
        .unwrap_or_else(|| panic!("no actor line in\n{logs}"));
    assert!(actor.contains("account{account=shop-7}: "), "{actor}");
    assert!(!actor.contains("stream{"), "{actor}");
}

/// The same in the JSON format: every line inside a stream's run lists the account and
/// stream spans under `spans`, root first, and repeats neither among its own fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_inside_a_stream_run_list_account_and_stream_spans() {
    let logs = logs_of_a_run("json", &["hours applied", "staged rows swapped in"]).await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: not JSON: {line}"))
        })
        .collect();
    let expected = serde_json::json!([
        {"name": "account", "account": "shop-7"},
        {"name": "stream", "stream": "vendor_rt_sales"},
    ]);
    for message in ["hours applied", "staged rows swapped in"] {
        let line = lines
            .iter()
            .find(|line| line["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in\n{logs}"));
        assert_eq!(line["spans"], expected, "{line}");
        assert!(line["fields"].get("account").is_none(), "{line}");
        assert!(line["fields"].get("stream").is_none(), "{line}");
        assert!(
            line.get("span").is_none(),
            "no repeat of the last span: {line}"
        );
    }
    // Every line of the stream's run lists both, not only the two looked at above.
    let in_stream = lines
        .iter()
        .filter(|line| {
            line["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("marketsync::shapes"))
        })
        .collect::<Vec<_>>();
    assert!(!in_stream.is_empty(), "{logs}");
    for line in in_stream {
        assert_eq!(line["spans"], expected, "{line}");
    }
}
