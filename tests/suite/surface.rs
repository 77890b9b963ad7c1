//! The operator's inputs and the HTTP surface (issue 13, points 5 and 8), on the real
//! binary or the HTTP server over real TCP: configuration bounds that name the key and
//! the range, fill-day and scope refusals, the Host allowlist, JSON bodies for every error
//! status, slow clients dropped, an early 413, private file modes, and a shutdown that
//! keeps its grace and a second signal that exits at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marketsync::config::Config;
use marketsync::domain::{format_ts, now_ts, HOUR};
use marketsync::http::{serve, HttpSettings, HttpState};
use marketsync::lock::LockService;
use marketsync::store::SqliteLedger;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::http::{Server, TOKEN};
use crate::common::{fast_sim, marketsync, wait_until, DaemonProcess, Fixture, TestSim};

/// `marketsync --config FILE ARGS...` on `text`: (exit code, stdout, stderr with the
/// file's path shown as `bad.toml`).
fn run_cli(text: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = text.replace("DATA_DIR", &dir.path().join("data").display().to_string());
    std::fs::write(&path, text).unwrap();
    let output = marketsync()
        .envs(env.iter().copied())
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "bad.toml");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        stderr,
    )
}

const SIM_AMAZON: &str = "data_dir = \"DATA_DIR\"\n[simulator]\nenabled = true\nprocessing_latency = \"0s\"\n[[accounts]]\nid = \"acct\"\nprovider = \"amazon\"\nmarketplace = \"ATVPDKIKX0DER\"\n";
const SIM_EBAY: &str = "data_dir = \"DATA_DIR\"\n[simulator]\nenabled = true\n[[accounts]]\nid = \"shop\"\nprovider = \"ebay\"\n[accounts.streams.orders]\n";

#[test]
fn config_bounds_refuse_huge_values_naming_the_key_and_the_allowed_range() {
    let amazon = format!("{SIM_AMAZON}[accounts.streams.vendor_rt_sales]\n");
    let ebay = "data_dir = \"DATA_DIR\"\n[simulator]\nenabled = true\n[[accounts]]\nid = \"shop\"\nprovider = \"ebay\"\n[accounts.streams.orders]\n";
    let cases = [
        (
            format!("{amazon}lookback = \"100000000000h\"\n"),
            "accounts[0].streams.vendor_rt_sales.lookback: 100000000000h is above the maximum of 90d; use a lookback of at most 90d (allowed: 1h to 90d)",
        ),
        (
            format!("{amazon}lookback = \"18446744073709551615s\"\n"),
            "lookback: 18446744073709551615s is above the maximum of 90d",
        ),
        (
            format!("{amazon}interval = \"2days\"\n"),
            "accounts[0].streams.vendor_rt_sales.interval: 2d is above the maximum of 1d; use a interval of at most 1d",
        ),
        (
            format!("{amazon}safety_lag = \"400d\"\n"),
            "safety_lag: 400d is above the maximum of 1d",
        ),
        (
            format!("{amazon}retry_max = \"30d\"\n"),
            "retry_max: 30d is above the maximum of 1d",
        ),
        (
            format!("{amazon}quota_cooldown = \"48h\"\n"),
            "quota_cooldown: 2d is above the maximum of 1d",
        ),
        (
            format!("{amazon}poll_max = \"2h\"\n"),
            "poll_max: 2h is above the maximum of 1h",
        ),
        (
            format!("{amazon}poll_timeout = \"100000h\"\n"),
            "poll_timeout: 100000h is above the maximum of 1d",
        ),
        (
            format!("{amazon}chunk = \"100000000h\"\n"),
            "chunk: 100000000h is above the maximum of 7d",
        ),
        (
            format!("{amazon}max_document_bytes = 9223372036854775807\n"),
            "max_document_bytes: 9223372036854775807 is above the maximum of 8589934592",
        ),
        (
            format!("{amazon}max_document_bytes = 0\n"),
            "max_document_bytes: 0 is below the minimum of 1024",
        ),
        (
            format!("{ebay}start = \"100years\"\n"),
            "accounts[0].streams.orders.start: ",
        ),
        (
            format!("{ebay}max_response_bytes = 99999999999999\n"),
            "max_response_bytes: 99999999999999 is above the maximum of 1073741824",
        ),
        (
            format!("{ebay}max_window = \"30d\"\n"),
            "max_window: 30d is above the maximum of 7d",
        ),
        (
            format!("{amazon}[daemon]\nmax_concurrent_runs = 100000000\n"),
            "daemon.max_concurrent_runs: 100000000 is above the maximum of 4096",
        ),
        (
            format!("{amazon}[daemon]\nshutdown_grace = \"1h\"\n"),
            "daemon.shutdown_grace: 1h is above the maximum of 5m",
        ),
        (
            format!("{amazon}[locks]\nhygiene_interval = \"9999d\"\n"),
            "locks.hygiene_interval: 9999d is above the maximum of 1d",
        ),
        (
            format!("{amazon}[supervisor]\nprobe_after = \"1000d\"\n"),
            "supervisor.probe_after: 1000d is above the maximum of 7d",
        ),
        (
            format!("{amazon}[http]\nheader_read_timeout = \"1h\"\n"),
            "http.header_read_timeout: 1h is above the maximum of 5m",
        ),
        (
            format!("{amazon}[http]\nhistory_interval = \"1h\"\n"),
            "http.history_interval: 1h is above the maximum of 5m",
        ),
        (
            format!("{amazon}[http]\nhistory_interval = \"10ms\"\n"),
            "http.history_interval: 10ms is below the minimum of 1s",
        ),
        (
            format!("{amazon}[quota.amazon.getReport]\nrate = 1e300\nburst = 15\n"),
            "quota.amazon.getReport.rate: 1e300 is not a rate",
        ),
    ];
    for (text, expected) in &cases {
        let (code, _, stderr) = run_cli(text, &["check-config"], &[]);
        assert_eq!(code, 2, "{expected}: {stderr}");
        assert!(
            stderr.contains("marketsync: bad.toml: ") && stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
    // A cursor stream's start in whole days of at most two years.
    let (code, _, stderr) = run_cli(
        &format!("{ebay}start = \"731days\"\n"),
        &["check-config"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("start: 731d is above the maximum of 730d"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run_cli(
        &format!("{ebay}start = \"730days\"\n"),
        &["check-config"],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn run_refuses_an_unbounded_lookback_instead_of_seeding_forever() {
    let text =
        format!("{SIM_AMAZON}[accounts.streams.vendor_rt_sales]\nlookback = \"100000000000h\"\n");
    let started = Instant::now();
    let (code, _, stderr) = run_cli(&text, &["run"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("lookback: 100000000000h is above the maximum of 90d"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn non_loopback_listen_without_an_admin_token_refuses_check_config_and_run() {
    let base = format!("{SIM_AMAZON}[accounts.streams.vendor_rt_sales]\n");
    let open = format!("{base}[http]\nlisten = \"0.0.0.0:0\"\n");
    for command in ["check-config", "run"] {
        let (code, _, stderr) = run_cli(&open, &[command], &[]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains("http.listen: 0.0.0.0:0 is reachable from other hosts but no admin token is configured")
                && stderr.contains("allow_unauthenticated = true"),
            "{command}: {stderr}"
        );
    }
    // A token variable named but not exported: refused too, naming the variable.
    let named =
        format!("{base}[http]\nlisten = \"0.0.0.0:0\"\nadmin_token_env = \"SURFACE_TEST_TOKEN\"\n");
    for command in ["check-config", "run"] {
        let (code, _, stderr) = run_cli(&named, &[command], &[]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains("the admin token variable SURFACE_TEST_TOKEN is unset or empty"),
            "{command}: {stderr}"
        );
    }
    let (code, _, stderr) = run_cli(
        &named,
        &["check-config"],
        &[("SURFACE_TEST_TOKEN", "a-long-random-secret-value")],
    );
    assert_eq!(code, 0, "{stderr}");
    // Explicitly allowed: starts (check-config passes).
    let allowed = format!("{base}[http]\nlisten = \"0.0.0.0:0\"\nallow_unauthenticated = true\n");
    let (code, _, stderr) = run_cli(&allowed, &["check-config"], &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn fill_day_on_the_cli_refuses_days_outside_the_lookback_bad_dates_and_cursor_streams() {
    let amazon = format!("{SIM_AMAZON}[accounts.streams.vendor_rt_sales]\nlookback = \"72h\"\n");
    let cases = [
        (
            "1970-01-01",
            "is before the lookback of acct/vendor_rt_sales",
        ),
        (
            "0000-01-01",
            "invalid date \"0000-01-01\"; use the form YYYY-MM-DD",
        ),
        ("-2025-01-01", "invalid date \"-2025-01-01\""),
        ("+12025-01-01", "invalid date"),
        ("2025-1-01", "invalid date"),
        ("2999-01-01", "has no complete hours yet"),
    ];
    for (date, expected) in cases {
        let (code, stdout, stderr) = run_cli(
            &amazon,
            &["fill-day", "acct", "vendor_rt_sales", "--", date],
            &[],
        );
        assert_eq!(code, 2, "{date}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{date}: {stderr}");
    }
    let before = format_ts(now_ts() - 10 * 24 * HOUR)[..10].to_string();
    let (code, _, stderr) = run_cli(
        &amazon,
        &["fill-day", "acct", "vendor_rt_sales", &before],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("raise the stream's lookback (at most 90d)"),
        "{stderr}"
    );
    // Yesterday is inside the 72h lookback: accepted.
    let yesterday = format_ts(now_ts() - 24 * HOUR)[..10].to_string();
    let (code, stdout, stderr) = run_cli(
        &amazon,
        &["fill-day", "acct", "vendor_rt_sales", &yesterday],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("24 hours"), "{stdout}");
    // An eBay cursor stream has no hours to reset.
    let (code, stdout, stderr) =
        run_cli(SIM_EBAY, &["fill-day", "shop", "orders", &yesterday], &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("shop/orders is a cursor stream; fill-day resets hours of report (windowed) streams only"),
        "{stderr}"
    );
}

#[tokio::test]
async fn fill_day_over_http_refuses_year_zero_negative_years_and_days_before_the_lookback() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"72h\"");
    let ledger = fixture.open_ledger();
    let server = Server::start(&fixture.config, Arc::clone(&ledger), Some(TOKEN)).await;
    for (date, expected) in [
        ("0000-01-01", "invalid date"),
        ("-2025-01-01", "invalid date"),
        ("1970-01-01", "is before the lookback"),
        ("20251-01-01", "invalid date"),
    ] {
        let (code, body) = server
            .post(
                "/api/accounts/acct/fill-day",
                Some(TOKEN),
                Some(json!({"date": date})),
            )
            .await;
        assert_eq!(code, 400, "{date}: {body}");
        assert_eq!(body["error"], "bad_request", "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(expected),
            "{date}: {body}"
        );
    }
    let yesterday = format_ts(now_ts() - 24 * HOUR)[..10].to_string();
    let (code, body) = server
        .post(
            "/api/accounts/acct/fill-day",
            Some(TOKEN),
            Some(json!({"date": yesterday})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[test]
fn empty_or_malformed_cooldown_and_lock_scopes_exit_2_naming_the_form() {
    let amazon = format!("{SIM_AMAZON}[accounts.streams.vendor_rt_sales]\n");
    for scope in [
        "",
        " ",
        "amazon:",
        ":acme",
        "amazon:a b",
        "lock:acct",
        "lock:/x",
        "Amazon",
    ] {
        let (code, stdout, stderr) = run_cli(&amazon, &["cooldowns", "clear", "--", scope], &[]);
        assert_eq!(code, 2, "{scope:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("invalid scope")
                && stderr.contains("expected PROVIDER (e.g. amazon), PROVIDER:ACCOUNT"),
            "{scope:?}: {stderr}"
        );
    }
    let (code, stdout, stderr) = run_cli(&amazon, &["cooldowns", "clear", "amazon:acct"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for scope in [
        "",
        "acct",
        "acct/",
        "/vendor_rt_sales",
        "../x/y",
        "acct/vendor rt",
        "ACCT/x",
    ] {
        let (code, stdout, stderr) = run_cli(&amazon, &["locks", "release", "--", scope], &[]);
        assert_eq!(code, 2, "{scope:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("invalid lock scope") && stderr.contains("expected ACCOUNT/STREAM"),
            "{scope:?}: {stderr}"
        );
    }
    let (code, stdout, stderr) =
        run_cli(&amazon, &["locks", "release", "acct/vendor_rt_sales"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("no lease on acct/vendor_rt_sales"),
        "{stdout}"
    );
}

/// The HTTP server of `marketsync::http` with `[http]` settings, on a free loopback port.
struct SurfaceServer {
    addr: SocketAddr,
    stop: CancellationToken,
    _sim: TestSim,
    _fixture: Fixture,
}

impl SurfaceServer {
    async fn start(configure: impl FnOnce(&mut HttpSettings)) -> SurfaceServer {
        let sim = TestSim::start(fast_sim()).await;
        let fixture = Fixture::new(&sim, "");
        let config: &Config = &fixture.config;
        let ledger = Arc::new(SqliteLedger::open(&config.database_path()).unwrap());
        let locks = LockService::sqlite(&config.database_path()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = HttpSettings::new(addr);
        configure(&mut settings);
        let state = HttpState::new(
            Arc::new(config.deployment()),
            ledger,
            locks,
            Some(TOKEN.to_string()),
        )
        .with_settings(&settings);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            serve(listener, state, async move { stopped.cancelled().await })
                .await
                .expect("serve");
        });
        SurfaceServer {
            addr,
            stop,
            _sim: sim,
            _fixture: fixture,
        }
    }

    /// Sends `head` (the request line and headers, without the final blank line) plus
    /// `Connection: close` and `body`; returns (status, JSON body, raw headers).
    async fn raw(&self, head: &str, body: &[u8]) -> (u16, Value, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request = format!("{head}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("response within 10s")
            .ok();
        parse_response(&response)
    }
}

impl Drop for SurfaceServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn parse_response(response: &[u8]) -> (u16, Value, String) {
    let text = String::from_utf8_lossy(response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    // Chunked bodies: the JSON object sits between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if end > start => {
            serde_json::from_str(&body[start..=end]).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    (status, json, head.to_string())
}

#[tokio::test]
async fn host_header_outside_the_allowlist_is_refused_with_json() {
    let server = SurfaceServer::start(|settings| {
        settings.allowed_hosts = vec!["marketsync.internal".to_string()];
    })
    .await;
    let port = server.addr.port();
    // A DNS-rebinding page: the browser sends the attacker's name.
    for path in ["/api/status", "/metrics", "/", "/api/locks"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost:{}", port.wrapping_add(1)),
            format!("127.0.0.1.evil.example:{port}"),
        ] {
            let (status, body, _) = server
                .raw(&format!("GET {path} HTTP/1.1\r\nHost: {host}"), b"")
                .await;
            assert_eq!(status, 421, "{path} {host}: {body}");
            assert_eq!(body["error"], "host_not_allowed", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains("allowed_hosts"),
                "{body}"
            );
        }
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        "marketsync.internal".to_string(),
        "marketsync.internal:443".to_string(),
    ] {
        let (status, body, _) = server
            .raw(&format!("GET /api/status HTTP/1.1\r\nHost: {host}"), b"")
            .await;
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(body["ok"], true);
    }
    // HTTP/1.0 without any Host: refused as well.
    let (status, body, _) = server.raw("GET /api/status HTTP/1.0", b"").await;
    assert_eq!(status, 421, "{body}");
}

#[tokio::test]
async fn error_statuses_answer_json_bodies_and_an_oversized_content_length_is_413_at_once() {
    let server = SurfaceServer::start(|_| {}).await;
    let host = format!("Host: 127.0.0.1:{}", server.addr.port());
    // 405 with the Allow list.
    let (status, body, head) = server
        .raw(
            &format!("POST /api/status HTTP/1.1\r\n{host}\r\nContent-Length: 0"),
            b"",
        )
        .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("POST is not allowed on /api/status; the Allow header lists"),
        "{body}"
    );
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    // 404.
    let (status, body, _) = server
        .raw(&format!("GET /nothing/here HTTP/1.1\r\n{host}"), b"")
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    // 414: a 16 KiB query.
    let long = "x".repeat(16 * 1024);
    let (status, body, _) = server
        .raw(
            &format!("GET /api/failures?limit={long} HTTP/1.1\r\n{host}"),
            b"",
        )
        .await;
    assert_eq!(status, 414, "{body}");
    assert_eq!(body["error"], "uri_too_long", "{body}");
    // 413 on the declared length alone: the 10 GB body is never sent, the answer comes
    // at once.
    let started = Instant::now();
    let (status, body, head) = server
        .raw(
            &format!("POST /api/accounts/acct/fill-day HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 10000000000"),
            b"{\"date\":",
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // A chunked body above the cap: 413 too.
    let big = vec![b'x'; 100 * 1024];
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, body, _) = server
        .raw(
            &format!("POST /api/jobs HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked"),
            &chunked,
        )
        .await;
    assert_eq!(status, 413, "{body}");
    // 400 on a malformed Content-Length and on a body that is not JSON.
    let (status, body, _) = server
        .raw(
            &format!("POST /api/accounts/acct/fill-day HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 3"),
            b"{x}",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    // 401 stays JSON with its WWW-Authenticate.
    let (status, body, head) = server
        .raw(
            &format!("POST /api/accounts/acct/resume HTTP/1.1\r\n{host}\r\nContent-Length: 0"),
            b"",
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
}

/// Reads until the peer closes (Ok(0) or an error); returns what arrived and whether it
/// closed within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> (bool, Vec<u8>) {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(deadline, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    (outcome.is_ok(), received)
}

#[tokio::test]
async fn half_sent_requests_are_dropped_within_the_read_timeouts() {
    let server = SurfaceServer::start(|settings| {
        settings.header_read_timeout = Duration::from_secs(1);
        settings.body_read_timeout = Duration::from_secs(1);
    })
    .await;
    let host = format!("Host: 127.0.0.1:{}", server.addr.port());
    // 500 slow clients: a third send nothing, a third half a request head, a third a
    // complete head and a tenth of the body they announced.
    let started = Instant::now();
    let mut clients = Vec::new();
    for index in 0..500 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        match index % 3 {
            0 => {}
            1 => stream
                .write_all(format!("GET /api/status HTTP/1.1\r\n{host}\r\nX-Slow:").as_bytes())
                .await
                .unwrap(),
            _ => stream
                .write_all(
                    format!("POST /api/accounts/acct/resume HTTP/1.1\r\n{host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n0123456789")
                        .as_bytes(),
                )
                .await
                .unwrap(),
        }
        clients.push((index, stream));
    }
    let mut closed = 0;
    for (index, stream) in &mut clients {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        let (was_closed, received) = closed_within(stream, left).await;
        assert!(
            was_closed,
            "client {index} still open after {:?}",
            started.elapsed()
        );
        if *index % 3 == 2 {
            let (status, body, _) = parse_response(&received);
            assert_eq!(status, 408, "client {index}: {body}");
            assert_eq!(body["error"], "request_timeout", "{body}");
        }
        closed += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(closed, 500);
    // 1 s timeouts: everything is gone well before the 60 s the issue allows.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    eprintln!("500 half-sent requests closed within {elapsed:?}");
    // And the server still answers.
    let (status, _, _) = server
        .raw(&format!("GET /api/status HTTP/1.1\r\n{host}"), b"")
        .await;
    assert_eq!(status, 200);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn data_dir_is_0700_and_database_and_documents_0600_new_or_tightened_at_startup() {
    use std::os::unix::fs::PermissionsExt;
    // A fresh data dir, created by the daemon.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let config_path = dir.path().join("config.toml");
    let text = format!(
        "{}[accounts.streams.vendor_rt_sales]\nlookback = \"6h\"\n",
        SIM_AMAZON.replace("DATA_DIR", &data.display().to_string())
    );
    std::fs::write(&config_path, &text).unwrap();
    let mut daemon = DaemonProcess::spawn(&config_path);
    let database = data.join("marketsync.db");
    let wal = data.join("marketsync.db-wal");
    assert!(
        wait_until(Duration::from_secs(15), || wal.exists()).await,
        "{}",
        daemon.logs()
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&database), 0o600);
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(&data.join("documents")), 0o700);
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(15)).await,
        Some(0)
    );

    // A data dir an older version left world-readable: tightened at startup, and logged.
    let loose = dir.path().join("loose");
    std::fs::create_dir_all(loose.join("documents")).unwrap();
    drop(SqliteLedger::open(&loose.join("marketsync.db")).unwrap());
    let old_document = loose.join("documents").join("acct-1-doc.json.gz");
    std::fs::write(&old_document, b"{}").unwrap();
    for (path, bits) in [
        (loose.clone(), 0o755),
        (loose.join("documents"), 0o755),
        (loose.join("marketsync.db"), 0o644),
        (old_document.clone(), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
    }
    let text = format!(
        "{}[accounts.streams.vendor_rt_sales]\nlookback = \"6h\"\n",
        SIM_AMAZON.replace("DATA_DIR", &loose.display().to_string())
    );
    std::fs::write(&config_path, &text).unwrap();
    let mut daemon = DaemonProcess::spawn(&config_path);
    assert!(
        wait_until(Duration::from_secs(15), || daemon
            .logs()
            .contains("daemon started"))
        .await,
        "{}",
        daemon.logs()
    );
    assert_eq!(mode(&loose), 0o700);
    assert_eq!(mode(&loose.join("documents")), 0o700);
    assert_eq!(mode(&loose.join("marketsync.db")), 0o600);
    assert_eq!(mode(&old_document), 0o600);
    let logs = daemon.logs();
    assert!(
        logs.contains("tightened permissions of a data file"),
        "{logs}"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(15)).await,
        Some(0)
    );
}

/// GNU `timeout` (and anything that signals the process and then its group) delivers
/// the same signal twice at once: that is one request to stop, with its grace, not a
/// second signal's hard exit.
#[cfg(unix)]
#[tokio::test]
async fn the_same_signal_delivered_twice_at_once_is_one_request_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = slow_daemon_in_flight(dir.path(), "3s").await;
    // Both from one `kill`, microseconds apart, as `timeout` sends them.
    let pid = daemon.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid, &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = daemon.wait_exit_code(Duration::from_secs(10)).await;
    assert_ne!(code, Some(130), "{}", daemon.logs());
    assert!(code.is_some(), "still running: {}", daemon.logs());
    assert!(
        !daemon.logs().contains("second signal"),
        "{}",
        daemon.logs()
    );
    assert!(daemon.logs().contains("shutting down"), "{}", daemon.logs());
}

/// A daemon whose reports never finish (the simulator takes an hour per report), once
/// its first report is in flight: every runner is in the middle of a unit when the
/// signal comes.
async fn slow_daemon_in_flight(dir: &std::path::Path, grace: &str) -> DaemonProcess {
    let config_path = dir.join("config.toml");
    let text = format!(
        "data_dir = \"{}\"\n[daemon]\nshutdown_grace = \"{grace}\"\n[simulator]\nenabled = true\nprocessing_latency = \"1h\"\n[[accounts]]\nid = \"acct\"\nprovider = \"amazon\"\nmarketplace = \"ATVPDKIKX0DER\"\n[accounts.streams.vendor_rt_sales]\nlookback = \"48h\"\nsafety_lag = \"0s\"\npoll_min = \"50ms\"\npoll_max = \"100ms\"\n",
        dir.join("data").display()
    );
    std::fs::write(&config_path, text).unwrap();
    let daemon = DaemonProcess::spawn(&config_path);
    assert!(
        wait_until(Duration::from_secs(15), || daemon
            .logs()
            .contains("report requested"))
        .await,
        "{}",
        daemon.logs()
    );
    daemon
}

#[cfg(unix)]
#[tokio::test]
async fn shutdown_keeps_its_grace_and_a_second_signal_exits_at_once() {
    // First signal only: the units in flight never finish, the grace (3 s) ends it.
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = slow_daemon_in_flight(dir.path(), "3s").await;
    let started = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        status.is_some(),
        "still running after 10s: {}",
        daemon.logs()
    );
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 3s grace"
    );
    eprintln!("first signal, 3s grace: exited after {took:?}");

    // Two signals with the default 30 s grace: the second exits at once (130).
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = slow_daemon_in_flight(dir.path(), "30s").await;
    daemon.signal("INT");
    assert!(
        wait_until(Duration::from_secs(5), || daemon
            .logs()
            .contains("shutting down"))
        .await,
        "{}",
        daemon.logs()
    );
    let started = Instant::now();
    daemon.signal("TERM");
    let code = daemon.wait_exit_code(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(code, Some(130), "{}", daemon.logs());
    assert!(took < Duration::from_secs(2), "second signal took {took:?}");
    eprintln!("second signal: exited after {took:?}");
}
