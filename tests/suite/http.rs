//! The operator HTTP surface over real HTTP on a real SQLite file: the API contract of
//! every endpoint (auth, bad input, the QuotaExceeded refresh during a cooldown),
//! `/metrics` as Prometheus text whose values move, and the dashboard driven by headless
//! Chromium (its numbers match `/api/status`; a screenshot lands in `docs/`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use marketsync::actors::supervisor::ChildState;
use marketsync::config::Config;
use marketsync::domain::{format_ts, now_ts, HOUR};
use marketsync::http::{serve, HttpState};
use marketsync::lock::LockService;
use marketsync::provider::amazon::{LwaCredentials, SpApiClient, SpApiEndpoints};
use marketsync::quota::{
    BucketKey, Priority, QuotaBackend, QuotaConfig, QuotaHandle, TokenManager,
};
use marketsync::store::supervision::{save, StoredChild};
use marketsync::store::{account_scope, Cooldown, LedgerStore, SqliteLedger};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{counts, fast_sim, sales_rows, status_json, Fixture, TestSim};

pub const TOKEN: &str = "test-admin-token-5f1c9a7e2b";
const STREAM: &str = "vendor_rt_sales";

/// The HTTP server of `marketsync::http` on a free loopback port; stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    /// The server's in-process counters (what a daemon's runners would count into).
    pub counters: Arc<marketsync::telemetry::Metrics>,
    stop: CancellationToken,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(config: &Config, ledger: Arc<SqliteLedger>, token: Option<&str>) -> Server {
        Server::start_with(config, ledger, token, None).await
    }

    /// [`Server::start`] with a TokenManager attached (budgets, tokens gauge).
    pub async fn start_with(
        config: &Config,
        ledger: Arc<SqliteLedger>,
        token: Option<&str>,
        quota: Option<QuotaHandle>,
    ) -> Server {
        let locks = LockService::sqlite(&config.database_path())
            .await
            .expect("sqlite locks");
        let mut state = HttpState::new(
            Arc::new(config.deployment()),
            ledger,
            locks,
            token.map(str::to_string),
        );
        if let Some(quota) = quota {
            state = state.with_quota(quota);
        }
        let counters = Arc::clone(&state.metrics);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            serve(listener, state, async move { stopped.cancelled().await })
                .await
                .expect("serve");
        });
        Server {
            addr,
            counters,
            stop,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST with the admin token (`Some`) or without any Authorization header.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> (String, String) {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (content_type, response.text().await.expect("body"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A fixture whose 24 hours were synced from the simulator: every hour APPLIED.
pub async fn synced_fixture(sim: &TestSim) -> (Fixture, Arc<SqliteLedger>) {
    let fixture = Fixture::new(sim, "lookback = \"24h\"");
    let ledger = fixture.open_ledger();
    fixture
        .context(&ledger, CancellationToken::new())
        .run_once()
        .await
        .expect("sync run");
    let applied = counts(&ledger)[3];
    assert!(applied >= 24, "all hours applied, got {applied}");
    (fixture, ledger)
}

/// Fails `hours` hours of the fixture's stream `times` times with `error`; the last
/// failure retries at `retry_at`.
pub fn fail_hours(
    ledger: &SqliteLedger,
    account: &str,
    hours: i64,
    times: u32,
    error: &str,
    retry_at: i64,
) {
    let now = now_ts();
    let end = marketsync::domain::floor_hour(now);
    ledger
        .reset_window(
            account,
            STREAM,
            marketsync::domain::HourWindow::new(end - hours * HOUR, end),
            marketsync::store::Priority::Manual,
            now,
        )
        .expect("reset");
    for attempt in 1..=times {
        let claim = ledger
            .claim(
                account,
                STREAM,
                hours,
                marketsync::config::ClaimOrder::NewestFirst,
                "test:1@localhost",
                marketsync::store::WriteFence::Unfenced,
                now,
            )
            .expect("claim")
            .expect("claimable hours");
        let retry = if attempt == times { retry_at } else { now - 1 };
        ledger.fail(&claim, error, retry, now).expect("fail");
    }
}

pub fn quota_cooldown(ledger: &SqliteLedger, account: &str, minutes: i64) -> i64 {
    let now = now_ts();
    let until = now + minutes * 60;
    ledger
        .set_cooldown(&Cooldown {
            scope: account_scope("amazon", account),
            reason: "quota".to_string(),
            started_at: now,
            until_at: until,
            detail: Some("createReport answered 429 QuotaExceeded".to_string()),
        })
        .expect("set cooldown");
    until
}

pub fn quarantine(ledger: &SqliteLedger, account: &str, reason: &str) {
    let now = now_ts();
    ledger.with_conn(|conn| {
        save(
            conn,
            &[StoredChild {
                account: account.to_string(),
                state: ChildState::Quarantined,
                restarts: 6,
                last_crash_at: Some(now - 60),
                last_crash_reason: Some(reason.to_string()),
                quarantined_until: Some(now + 3600),
                state_reason: Some(format!("crashed 6 times: {reason}")),
                resume_requested: false,
                updated_at: now,
            }],
            now,
        )
        .expect("save supervision row");
    });
}

fn stream_of<'a>(status: &'a Value, account: &str) -> &'a Value {
    status["accounts"]
        .as_array()
        .and_then(|accounts| accounts.iter().find(|a| a["id"] == account))
        .map(|account| &account["streams"][0])
        .unwrap_or_else(|| panic!("account {account} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_carries_the_status_json_fields_plus_a_verdict() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;

    let (code, status) = server.get("/api/status").await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["ok"], true);
    assert_eq!(status["lock_backend"], "sqlite");
    let stream = stream_of(&status, "acct");
    assert_eq!(stream["verdict"], "caught_up", "{stream}");
    assert!(
        stream["explanation"].as_str().unwrap().contains("APPLIED"),
        "{stream}"
    );
    assert_eq!(status["summary"]["caught_up"], 1);
    assert_eq!(status["accounts"][0]["verdict"], "caught_up");

    // The same per-stream fields as `marketsync status --json` (another process).
    let config_path = fixture.config_path.clone();
    let cli = tokio::task::spawn_blocking(move || status_json(&config_path))
        .await
        .unwrap()
        .expect("status --json");
    let cli_stream = &cli["accounts"][0]["streams"][0];
    for key in [
        "name",
        "counts",
        "last_applied_hour",
        "next_claimable_hour",
        "next_retry_at",
        "last_error",
        "cooldown",
        "lock",
    ] {
        assert_eq!(stream[key], cli_stream[key], "field {key}");
    }
    assert_eq!(
        status["accounts"][0]["supervisor"],
        cli["accounts"][0]["supervisor"]
    );

    // A verdict per cause, with an explanation naming it.
    let until = quota_cooldown(&ledger, "acct", 30);
    let (_, status) = server.get("/api/status").await;
    let stream = stream_of(&status, "acct");
    assert_eq!(stream["verdict"], "cooldown");
    let why = stream["explanation"].as_str().unwrap();
    assert!(
        why.contains("quota") && why.contains(&format_ts(until)),
        "{why}"
    );
    ledger
        .clear_cooldown(&account_scope("amazon", "acct"))
        .unwrap();

    fail_hours(
        &ledger,
        "acct",
        2,
        1,
        "getReport returned http 500: internal error",
        now_ts() + 600,
    );
    let (_, status) = server.get("/api/status").await;
    let stream = stream_of(&status, "acct");
    assert_eq!(stream["verdict"], "failing");
    assert!(
        stream["explanation"].as_str().unwrap().contains("http 500"),
        "{stream}"
    );

    quarantine(&ledger, "acct", "poison row in report");
    let (_, status) = server.get("/api/status").await;
    let stream = stream_of(&status, "acct");
    assert_eq!(stream["verdict"], "quarantined");
    assert!(
        stream["explanation"]
            .as_str()
            .unwrap()
            .contains("poison row"),
        "{stream}"
    );
    assert_eq!(status["accounts"][0]["supervisor"]["state"], "quarantined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_shows_its_owner_and_busy_verdict() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    locks
        .acquire(
            "acct/vendor_rt_sales",
            "auto-sync:4242@web9",
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    ledger
        .set_cooldown(&Cooldown {
            scope: marketsync::shapes::lock_scope("acct", STREAM),
            reason: "lock_busy".to_string(),
            started_at: now_ts(),
            until_at: now_ts() + 600,
            detail: Some("held by auto-sync:4242@web9".to_string()),
        })
        .unwrap();
    let (_, status) = server.get("/api/status").await;
    let stream = stream_of(&status, "acct");
    assert_eq!(stream["lock"]["owner"], "auto-sync:4242@web9");
    assert_eq!(stream["lock"]["stale"], false);
    assert!(stream["lock"]["acquired_at"].is_string(), "{stream}");
    assert_eq!(stream["verdict"], "lock_busy");
    assert!(stream["explanation"]
        .as_str()
        .unwrap()
        .contains("auto-sync:4242@web9"));

    let (code, listed) = server.get("/api/locks").await;
    assert_eq!(code, 200);
    assert_eq!(listed["backend"], "sqlite");
    assert_eq!(listed["locks"][0]["scope"], "acct/vendor_rt_sales");

    // Release refuses a live lease unless forced.
    let (code, body) = server
        .post("/api/locks/acct/vendor_rt_sales/release", Some(TOKEN), None)
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("auto-sync:4242@web9"),
        "{body}"
    );
    let (code, body) = server
        .post(
            "/api/locks/acct/vendor_rt_sales/release",
            Some(TOKEN),
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["was_live"], true);
    assert_eq!(body["released"]["owner"], "auto-sync:4242@web9");
    let (code, body) = server
        .post("/api/locks/acct/vendor_rt_sales/release", Some(TOKEN), None)
        .await;
    assert_eq!(code, 404, "{body}");

    // A stale lease is released without force.
    locks
        .acquire(
            "acct/vendor_rt_sales",
            "auto-sync:4243@web9",
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (code, body) = server
        .post(
            "/api/locks/acct/vendor_rt_sales/release",
            Some(TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["was_live"], false);
}

/// Every mutating endpoint with an acceptable body.
fn admin_calls() -> Vec<(&'static str, Option<Value>)> {
    vec![
        (
            "/api/accounts/acct/refresh",
            Some(json!({"window": "last_3h"})),
        ),
        (
            "/api/accounts/acct/fill-day",
            Some(json!({"date": yesterday()})),
        ),
        ("/api/accounts/acct/reset-failed", None),
        ("/api/accounts/acct/clear-cooldown", None),
        ("/api/accounts/acct/resume", None),
        (
            "/api/locks/acct/vendor_rt_sales/release",
            Some(json!({"force": true})),
        ),
    ]
}

fn yesterday() -> String {
    format_ts(now_ts() - 24 * HOUR)[..10].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_endpoints_need_the_bearer_token() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    quarantine(&ledger, "acct", "poison");
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;
    for (path, body) in admin_calls() {
        let (code, answer) = server.post(path, None, body.clone()).await;
        assert_eq!(code, 401, "{path} without a token: {answer}");
        assert_eq!(answer["error"], "unauthorized");
        assert!(answer["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"));
        let (code, answer) = server.post(path, Some("wrong-token"), body.clone()).await;
        assert_eq!(code, 401, "{path} with a wrong token: {answer}");
        assert!(
            !answer.to_string().contains(TOKEN),
            "the secret never appears"
        );
        let (code, answer) = server
            .post(path, Some(&format!("{TOKEN}x")), body.clone())
            .await;
        assert_eq!(code, 401, "{path} with a longer token: {answer}");
    }
    // The WWW-Authenticate challenge, and a lowercase scheme is accepted.
    let response = server
        .client
        .post(server.url("/api/accounts/acct/clear-cooldown"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = server
        .client
        .post(server.url("/api/accounts/acct/clear-cooldown"))
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    locks
        .acquire(
            "acct/vendor_rt_sales",
            "auto-sync:1@elsewhere",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    for (path, body) in admin_calls() {
        let (code, answer) = server.post(path, Some(TOKEN), body).await;
        assert_eq!(code, 200, "{path} with the token: {answer}");
        assert_eq!(answer["status"], "success", "{path}: {answer}");
    }
    // Reads stay open.
    for path in [
        "/",
        "/api/status",
        "/api/accounts/acct/summary",
        "/api/failures",
        "/api/locks",
        "/metrics",
    ] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }

    // No token configured: 403 saying how to configure one.
    let closed = Server::start(&fixture.config, ledger, None).await;
    for (path, body) in admin_calls() {
        let (code, answer) = closed.post(path, Some(TOKEN), body).await;
        assert_eq!(code, 403, "{path}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("admin_token_env"),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_and_unknown_things_a_404_with_a_message() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger, Some(TOKEN)).await;
    let cases: Vec<(&str, Option<Value>, u16, &str)> = vec![
        (
            "/api/accounts/nope/refresh",
            Some(json!({"window": "last_3h"})),
            404,
            "unknown account \"nope\"; configured accounts: acct",
        ),
        (
            "/api/accounts/acct/refresh",
            Some(json!({"window": "last_week"})),
            400,
            "window: expected \"last_3h\" or \"last_24h\", got \"last_week\"",
        ),
        ("/api/accounts/acct/refresh", None, 400, "missing JSON body"),
        (
            "/api/accounts/acct/refresh",
            Some(json!({"windw": "last_3h"})),
            400,
            "unknown field `windw`",
        ),
        (
            "/api/accounts/acct/fill-day",
            Some(json!({"date": "2025-13-40"})),
            400,
            "YYYY-MM-DD",
        ),
        (
            "/api/accounts/acct/fill-day",
            Some(json!({"date": "2999-01-01"})),
            400,
            "no complete hours",
        ),
        (
            "/api/accounts/acct/fill-day",
            Some(json!({"date": yesterday(), "stream": "orders"})),
            404,
            "no enabled stream \"orders\"",
        ),
        (
            "/api/accounts/acct/reset-failed",
            Some(json!({"stream": "orders"})),
            404,
            "no enabled stream",
        ),
        ("/api/accounts/nope/resume", None, 404, "unknown account"),
        ("/api/accounts/acct/resume", None, 409, "not quarantined"),
        (
            "/api/accounts/nope/clear-cooldown",
            None,
            404,
            "unknown account",
        ),
        (
            "/api/locks/acct/vendor_rt_sales/release",
            Some(json!({"force": "yes"})),
            400,
            "invalid JSON body",
        ),
        (
            "/api/locks/acct/vendor_rt_sales/release",
            None,
            404,
            "no lease on acct/vendor_rt_sales",
        ),
    ];
    for (path, body, code, needle) in cases {
        let (got, answer) = server.post(path, Some(TOKEN), body.clone()).await;
        assert_eq!(got, code, "{path} {body:?}: {answer}");
        assert_eq!(answer["status"], "error", "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path}: {message:?} should contain {needle:?}"
        );
    }
    // A body that is not JSON at all.
    let response = server
        .client
        .post(server.url("/api/accounts/acct/refresh"))
        .bearer_auth(TOKEN)
        .body("window=last_3h")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let reads: Vec<(&str, u16, &str)> = vec![
        ("/api/accounts/nope/summary", 404, "unknown account"),
        (
            "/api/accounts/acct/summary?hours=abc",
            400,
            "hours: expected a whole number from 1 to 2160, got \"abc\"",
        ),
        ("/api/accounts/acct/summary?hours=0", 400, "hours"),
        (
            "/api/accounts/acct/summary?hour=3",
            400,
            "unknown query parameter \"hour\"",
        ),
        ("/api/failures?limit=-1", 400, "limit"),
        (
            "/api/nothing-here",
            404,
            "no endpoint GET /api/nothing-here",
        ),
    ];
    for (path, code, needle) in reads {
        let (got, answer) = server.get(path).await;
        assert_eq!(got, code, "{path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path}: {message:?} should contain {needle:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_during_a_quota_cooldown_answers_quota_exceeded_and_calls_nothing() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;
    let until = quota_cooldown(&ledger, "acct", 30);
    let before_counts = counts(&ledger);
    let before_calls = sim.stats();

    let (code, body) = server
        .post(
            "/api/accounts/acct/refresh",
            Some(TOKEN),
            Some(json!({"window": "last_24h"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"], "QuotaExceeded");
    assert_eq!(body["window"], "last_24h");
    assert_eq!(body["until_utc"], format_ts(until));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("quota") && message.contains("/api/accounts/acct/summary"),
        "{message}"
    );
    assert_eq!(counts(&ledger), before_counts, "nothing was reset");

    // The last known data is served from the database meanwhile.
    let (code, summary) = server.get("/api/accounts/acct/summary?hours=24").await;
    assert_eq!(code, 200, "{summary}");
    assert!(summary["totals"]["rows"].as_i64().unwrap() > 0, "{summary}");
    let after_calls = sim.stats();
    for operation in ["createReport", "getReport", "getReportDocument"] {
        assert_eq!(
            after_calls.calls(operation),
            before_calls.calls(operation),
            "no {operation} call during the cooldown"
        );
    }

    // Cooldown cleared: the refresh resets the window, and the next run fetches it.
    let (code, body) = server
        .post("/api/accounts/acct/clear-cooldown", Some(TOKEN), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["cleared"], true, "{body}");
    assert_eq!(body["previous"]["reason"], "quota");
    let (code, body) = server
        .post(
            "/api/accounts/acct/refresh",
            Some(TOKEN),
            Some(json!({"window": "last_3h"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["window"], "last_3h");
    assert_eq!(body["hours_reset"], 3);
    assert_eq!(counts(&ledger)[0], 3, "three hours MISSING again");
    let claimed_first = ledger
        .claim(
            "acct",
            STREAM,
            1,
            marketsync::config::ClaimOrder::OldestFirst,
            "t:1@h",
            marketsync::store::WriteFence::Unfenced,
            now_ts(),
        )
        .unwrap()
        .expect("claimable");
    assert!(
        claimed_first.window.start >= marketsync::domain::floor_hour(now_ts()) - 3 * HOUR,
        "the refreshed hours are claimed first"
    );
    ledger.release(&claimed_first, "test", now_ts()).unwrap();
    fixture
        .context(&ledger, CancellationToken::new())
        .run_once()
        .await
        .unwrap();
    assert!(sim.stats().calls("createReport") > before_calls.calls("createReport"));
    assert_eq!(
        counts(&ledger)[0],
        0,
        "the refreshed hours were fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_totals_come_from_the_database() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger.clone(), None).await;
    let calls = sim.stats().calls("createReport");
    let (code, summary) = server
        .get("/api/accounts/acct/summary?hours=48&asins=5")
        .await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["source"], "database");
    let rows = sales_rows(&ledger, "acct");
    let from = marketsync::domain::parse_ts(summary["from"].as_str().unwrap()).unwrap();
    let in_window: Vec<_> = rows.iter().filter(|row| row.0 >= from).collect();
    assert_eq!(
        summary["totals"]["rows"].as_u64().unwrap() as usize,
        in_window.len()
    );
    let units: i64 = in_window.iter().map(|row| row.2).sum();
    assert_eq!(summary["totals"]["ordered_units"], units);
    let by_hour_units: i64 = summary["by_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hour| hour["ordered_units"].as_i64().unwrap())
        .sum();
    assert_eq!(by_hour_units, units);
    assert_eq!(summary["by_asin"].as_array().unwrap().len(), 5);
    assert!(summary["ledger"][0]["applied_hours"].as_i64().unwrap() >= 24);
    assert_eq!(sim.stats().calls("createReport"), calls, "no provider call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_change_the_ledger() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;

    // Reset failed hours: FAILED -> MISSING, claimable at once.
    fail_hours(
        &ledger,
        "acct",
        4,
        3,
        "document rejected: truncated",
        now_ts() + 3600,
    );
    assert_eq!(counts(&ledger)[4], 4);
    let (_, failures) = server.get("/api/failures?limit=10").await;
    assert_eq!(failures["failures"].as_array().unwrap().len(), 4);
    assert_eq!(
        failures["failures"][0]["last_error"],
        "document rejected: truncated"
    );
    assert_eq!(failures["failures"][0]["attempts"], 3);
    let (code, body) = server
        .post(
            "/api/accounts/acct/reset-failed",
            Some(TOKEN),
            Some(json!({"stream": STREAM})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["hours_reset"], 4);
    let snapshot = ledger.snapshot("acct", STREAM, now_ts()).unwrap();
    assert_eq!(snapshot.counts[4], 0);
    assert_eq!(snapshot.counts[0], 4);
    assert!(snapshot.next_claimable_hour.is_some());

    // Fill-day: yesterday's complete hours back to MISSING.
    let (code, body) = server
        .post(
            "/api/accounts/acct/fill-day",
            Some(TOKEN),
            Some(json!({"date": yesterday(), "stream": STREAM})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["hours_reset"].as_u64().unwrap() >= 1, "{body}");

    // Resume: the request flag is set for the daemon's next heartbeat.
    quarantine(&ledger, "acct", "poison");
    let (code, body) = server
        .post("/api/accounts/acct/resume", Some(TOKEN), None)
        .await;
    assert_eq!(code, 200, "{body}");
    let requested: i64 = ledger.with_conn(|conn| {
        conn.query_row(
            "SELECT resume_requested FROM account_supervision WHERE account = 'acct'",
            [],
            |row| row.get(0),
        )
        .unwrap()
    });
    assert_eq!(requested, 1);

    // Clear cooldown.
    quota_cooldown(&ledger, "acct", 30);
    let (code, body) = server
        .post("/api/accounts/acct/clear-cooldown", Some(TOKEN), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["cleared"], true);
    assert!(ledger
        .active_cooldown(&account_scope("amazon", "acct"), now_ts())
        .unwrap()
        .is_none());
    let (_, body) = server
        .post("/api/accounts/acct/clear-cooldown", Some(TOKEN), None)
        .await;
    assert_eq!(body["cleared"], false);
}

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser for the Prometheus / OpenMetrics text formats: every line is a
/// `# HELP`/`# TYPE`/`# UNIT`/`# EOF` comment or `name{label="value",...} value`, every
/// sample belongs to a family declared by `# TYPE` before it.
fn parse_exposition(text: &str) -> Vec<Sample> {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last().copied(), Some("# EOF"), "ends with # EOF");
    for line in lines {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            match keyword {
                "EOF" => continue,
                "HELP" | "UNIT" => {
                    assert!(
                        valid_name(parts.next().unwrap_or("")),
                        "bad name in {line:?}"
                    );
                }
                "TYPE" => {
                    let name = parts.next().unwrap_or("");
                    let kind = parts.next().unwrap_or("");
                    assert!(valid_name(name), "{line:?}");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown",
                            "gaugehistogram"
                        ]
                        .contains(&kind),
                        "{line:?}"
                    );
                    families.push((name.to_string(), kind.to_string()));
                }
                other => panic!("unknown comment {other:?} in {line:?}"),
            }
            continue;
        }
        assert!(!line.trim().is_empty(), "no blank lines");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(valid_name(&key), "bad label name in {line:?}");
                    assert_eq!(chars.next(), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => value.push(chars.next().expect("escape")),
                            Some('"') => break,
                            Some(c) => value.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    }
                    labels.insert(key, value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        assert!(valid_name(&name), "{line:?}");
        let family = families.iter().rev().find(|(family, kind)| {
            name == *family
                || (kind == "counter"
                    && (name == format!("{family}_total") || name == format!("{family}_created")))
        });
        assert!(family.is_some(), "sample {name} has no # TYPE before it");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_show_every_bucket_with_its_tokens_and_calls_this_hour() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "");
    let ledger = fixture.open_ledger();
    // Without a TokenManager the endpoint says where budgets are served.
    let bare = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;
    let (status, body) = bare.get("/api/budgets").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("marketsync run"),
        "{body}"
    );

    let (actor, _join) = TokenManager::spawn(QuotaConfig::new(QuotaBackend::InProcess))
        .await
        .expect("token manager");
    let quota = QuotaHandle::new(actor);
    let key = BucketKey::new("amazon", "createReport", "budget-seller");
    let server =
        Server::start_with(&fixture.config, ledger, Some(TOKEN), Some(quota.clone())).await;
    for _ in 0..3 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        quota
            .acquire(vec![key.clone()], 1.0, Priority::Manual, deadline)
            .await
            .expect("grant");
        server.counters.provider_call("amazon", "createReport");
    }
    let (status, body) = server.get("/api/budgets").await;
    assert_eq!(status, 200, "{body}");
    let hour = now_ts().div_euclid(HOUR) * HOUR;
    assert_eq!(body["hour"], json!(format_ts(hour)));
    let bucket = body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|bucket| bucket["scope"] == "budget-seller")
        .unwrap_or_else(|| panic!("the used bucket is listed: {body}"));
    assert_eq!(bucket["provider"], "amazon");
    assert_eq!(bucket["operation"], "createReport");
    assert_eq!(bucket["burst"].as_f64(), Some(15.0));
    let tokens = bucket["tokens"].as_f64().unwrap();
    // Amazon's default burst of 15, three spent, refilling at 0.0167/s meanwhile.
    assert!((12.0..12.5).contains(&tokens), "{tokens}");
    assert_eq!(bucket["calls_this_hour"].as_u64(), Some(3));
    let rate_per_hour = bucket["rate_per_hour"].as_f64().unwrap();
    assert!(
        (rate_per_hour - 0.0167 * 3600.0).abs() < 2.0,
        "{rate_per_hour}"
    );

    // /metrics reads the same buckets at scrape time.
    let (_, text) = server.metrics().await;
    let samples = parse_exposition(&text);
    let gauge = value(
        &samples,
        "marketsync_quota_tokens_available",
        &[
            ("provider", "amazon"),
            ("bucket", "budget-seller:createReport"),
        ],
    )
    .unwrap_or_else(|| panic!("tokens gauge in\n{text}"));
    assert!((12.0..12.5).contains(&gauge), "{gauge}");
    quota.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move() {
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = synced_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;

    let (content_type, text) = server.metrics().await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let samples = parse_exposition(&text);
    let hours = |samples: &[Sample], state: &str| {
        value(
            samples,
            "marketsync_ledger_hours",
            &[("account", "acct"), ("stream", STREAM), ("state", state)],
        )
        .unwrap_or_else(|| panic!("ledger_hours {state} in\n{text}"))
    };
    let applied = hours(&samples, "APPLIED");
    assert_eq!(applied as u64, counts(&ledger)[3]);
    assert_eq!(hours(&samples, "MISSING"), 0.0);
    let lag = value(
        &samples,
        "marketsync_ledger_newest_applied_lag_seconds",
        &[("account", "acct")],
    )
    .expect("lag");
    assert!((0.0..=2.0 * 3600.0).contains(&lag), "lag {lag}");
    assert_eq!(
        value(
            &samples,
            "marketsync_stream_verdict",
            &[("verdict", "caught_up")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "marketsync_locks", &[("state", "live")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &samples,
            "marketsync_lock_backend_up",
            &[("backend", "sqlite")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "marketsync_actors_quarantined", &[]),
        Some(0.0)
    );
    let calls_before = value(
        &samples,
        "marketsync_provider_calls_total",
        &[("provider", "amazon"), ("operation", "getReportDocument")],
    )
    .unwrap_or(0.0);

    // The ledger, the supervision table, the leases and the in-process counters move.
    fail_hours(
        &ledger,
        "acct",
        2,
        1,
        "getReport returned http 500: boom",
        now_ts() + 600,
    );
    quarantine(&ledger, "acct", "poison");
    quota_cooldown(&ledger, "acct", 30);
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    locks
        .acquire(
            "acct/vendor_rt_sales",
            "auto-sync:9@web1",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let metrics = &server.counters;
    metrics.provider_call("amazon", "getReportDocument");
    metrics.provider_call("amazon", "getReportDocument");
    metrics.provider_throttled("amazon", "createReport");
    metrics.lock_takeover("acct/vendor_rt_sales");
    metrics.set_tokens_available("amazon", "createReport", 12.5);

    let (_, text) = server.metrics().await;
    let samples = parse_exposition(&text);
    assert_eq!(hours(&samples, "FAILED"), 2.0);
    assert_eq!(hours(&samples, "APPLIED"), applied - 2.0);
    assert_eq!(
        value(&samples, "marketsync_actors_quarantined", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "marketsync_actor_restarts_total",
            &[("account", "acct")]
        ),
        Some(6.0)
    );
    assert_eq!(
        value(
            &samples,
            "marketsync_actor_state",
            &[("account", "acct"), ("state", "quarantined")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "marketsync_stream_verdict",
            &[("verdict", "quarantined")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "marketsync_locks", &[("state", "live")]),
        Some(1.0)
    );
    let remaining = value(
        &samples,
        "marketsync_cooldown_remaining_seconds",
        &[("scope", "amazon:acct"), ("reason", "quota")],
    )
    .expect("cooldown gauge");
    assert!(remaining > 1700.0 && remaining <= 1800.0, "{remaining}");
    let calls_after = value(
        &samples,
        "marketsync_provider_calls_total",
        &[("provider", "amazon"), ("operation", "getReportDocument")],
    )
    .expect("provider calls");
    assert!(
        calls_after >= calls_before + 2.0,
        "{calls_before} -> {calls_after}"
    );
    assert!(
        value(
            &samples,
            "marketsync_provider_throttled_total",
            &[("operation", "createReport")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        value(
            &samples,
            "marketsync_lock_takeovers_total",
            &[("scope", "acct/vendor_rt_sales")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        value(
            &samples,
            "marketsync_quota_tokens_available",
            &[("bucket", "createReport")]
        ),
        Some(12.5)
    );
}

/// The configured browser: Debian's `chromium` (or a chromium/chrome on PATH).
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is not installed, so the dashboard cannot be tested: run scripts/test.sh (it installs Debian's chromium package) or `apt-get install chromium`"
    );
}

pub async fn run_chromium(args: &[String]) -> std::process::Output {
    let browser = chromium();
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = tokio::process::Command::new(&browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium finished within 120s")
        .expect("chromium ran");
    assert!(
        output.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The text of the element carrying `data-cell="{cell}"` in a dumped DOM.
fn cell_text<'a>(dom: &'a str, cell: &str) -> Option<&'a str> {
    let marker = format!("data-cell=\"{cell}\">");
    let start = dom.find(&marker)? + marker.len();
    let rest = &dom[start..];
    let rest = match rest.strip_prefix("<span") {
        Some(span) => &span[span.find('>')? + 1..],
        None => rest,
    };
    Some(&rest[..rest.find('<')?])
}

const DASHBOARD_ACCOUNTS: [&str; 8] = [
    "acme-us", "acme-ca", "acme-de", "acme-uk", "acme-jp", "acme-fr", "acme-mx", "acme-it",
];

/// A configuration with one amazon account per id, all pointed at `sim`, replacing the
/// fixture's (same data directory).
fn with_accounts(fixture: &mut Fixture, sim: &TestSim, ids: &[&str]) {
    let mut text = format!("data_dir = \"{}\"\n", fixture.config.data_dir.display());
    for id in ids {
        text.push_str(&format!(
            "\n[[accounts]]\nid = \"{id}\"\nprovider = \"amazon\"\nmarketplace = \"ATVPDKIKX0DER\"\nendpoint = \"{base}\"\ntoken_url = \"{base}/auth/o2/token\"\n[accounts.credentials]\nclient_id_env = \"TEST_CLIENT_ID\"\nclient_secret_env = \"TEST_CLIENT_SECRET\"\nrefresh_token_env = \"TEST_REFRESH_TOKEN\"\n[accounts.streams.vendor_rt_sales]\nlookback = \"24h\"\nsafety_lag = \"0s\"\npoll_min = \"10ms\"\npoll_max = \"50ms\"\n",
            base = sim.base_url()
        ));
    }
    fixture.config = Config::parse(&text, "accounts.toml").expect("accounts config");
    std::fs::write(&fixture.config_path, &text).expect("write config");
}

/// Eight accounts synced from the simulator, then put into every verdict.
async fn dashboard_fixture(sim: &TestSim) -> (Fixture, Arc<SqliteLedger>) {
    let mut fixture = Fixture::new(sim, "lookback = \"24h\"");
    with_accounts(&mut fixture, sim, &DASHBOARD_ACCOUNTS);
    let ledger = fixture.open_ledger();
    for account in &fixture.config.accounts {
        let mut context = fixture.context(&ledger, CancellationToken::new());
        context.account = Arc::new(account.clone());
        context.stream = account.streams[0].clone();
        context.work = marketsync::shapes::StreamWork::reports(Arc::new(SpApiClient::new(
            reqwest::Client::new(),
            SpApiEndpoints {
                api_base: sim.base_url(),
                lwa_token_url: format!("{}/auth/o2/token", sim.base_url()),
            },
            LwaCredentials {
                client_id: "test-client".to_string(),
                client_secret: "test-secret".to_string(),
                refresh_token: format!("test-refresh-{}", account.id),
            },
        )));
        context.run_once().await.expect("sync");
    }
    let now = now_ts();
    quota_cooldown(&ledger, "acme-ca", 25);
    fail_hours(
        &ledger,
        "acme-de",
        3,
        2,
        "getReport returned http 503: service unavailable",
        now + 900,
    );
    quarantine(
        &ledger,
        "acme-uk",
        "report parser panicked: index out of bounds",
    );
    let locks = LockService::sqlite(&fixture.database_path()).await.unwrap();
    locks
        .acquire(
            "acme-jp/vendor_rt_sales",
            "auto-sync:31337@web2",
            Duration::from_secs(900),
        )
        .await
        .unwrap();
    ledger
        .set_cooldown(&Cooldown {
            scope: marketsync::shapes::lock_scope("acme-jp", STREAM),
            reason: "lock_busy".to_string(),
            started_at: now,
            until_at: now + 900,
            detail: Some("held by auto-sync:31337@web2".to_string()),
        })
        .unwrap();
    let end = marketsync::domain::floor_hour(now);
    ledger
        .reset_window(
            "acme-fr",
            STREAM,
            marketsync::domain::HourWindow::new(end - 3 * HOUR, end),
            marketsync::store::Priority::Manual,
            now,
        )
        .unwrap();
    ledger
        .reset_window(
            "acme-mx",
            STREAM,
            marketsync::domain::HourWindow::new(end - 2 * HOUR, end),
            marketsync::store::Priority::Manual,
            now,
        )
        .unwrap();
    locks
        .acquire(
            "acme-mx/vendor_rt_sales",
            "auto-sync:777@web3",
            Duration::from_millis(20),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let running: Vec<StoredChild> = DASHBOARD_ACCOUNTS
        .iter()
        .filter(|id| **id != "acme-uk")
        .map(|id| StoredChild {
            account: id.to_string(),
            state: ChildState::Running,
            restarts: u64::from(*id == "acme-de"),
            last_crash_at: None,
            last_crash_reason: None,
            quarantined_until: None,
            state_reason: None,
            resume_requested: false,
            updated_at: now,
        })
        .collect();
    ledger.with_conn(|conn| save(conn, &running, now).unwrap());
    (fixture, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_matches_api_status() {
    // Fail (never skip) without a browser.
    let _ = chromium();
    let sim = TestSim::start(fast_sim()).await;
    let (fixture, ledger) = dashboard_fixture(&sim).await;
    let server = Server::start(&fixture.config, ledger, Some(TOKEN)).await;
    let (_, status) = server.get("/api/status").await;
    let verdicts: Vec<&str> = DASHBOARD_ACCOUNTS
        .iter()
        .map(|id| stream_of(&status, id)["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "caught_up",
            "cooldown",
            "failing",
            "quarantined",
            "lock_busy",
            "syncing",
            "stalled",
            "caught_up"
        ],
        "{status}"
    );

    // The page is self-contained: no external URL in it.
    let page = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    // The SVG namespace is a name the pictures' elements are created in, not a fetch.
    let html = html.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );

    let url = server.url("/");
    let dom = run_chromium(&["--dump-dom".to_string(), url.clone()]).await;
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    let (_, status) = server.get("/api/status").await;
    for account in status["accounts"].as_array().unwrap() {
        let id = account["id"].as_str().unwrap();
        let stream = &account["streams"][0];
        let key = format!("{id}/{STREAM}");
        for state in ["MISSING", "REQUESTED", "DOWNLOADED", "APPLIED", "FAILED"] {
            let shown = cell_text(&dom, &format!("{key}/{state}"))
                .unwrap_or_else(|| panic!("{key}/{state} on the page:\n{dom}"));
            assert_eq!(shown, stream["counts"][state].to_string(), "{key} {state}");
        }
        assert_eq!(
            cell_text(&dom, &format!("{key}/verdict")),
            stream["verdict"].as_str(),
            "{key} verdict"
        );
    }
    assert!(dom.contains("8 of 8 streams"), "row count shown");
    assert!(
        dom.contains("getReport returned http 503: service unavailable"),
        "recent failures listed"
    );
    assert!(dom.contains("auto-sync:31337@web2"), "lock owner shown");
    assert!(dom.contains("STALE"), "stale lock flagged");
    assert!(dom.contains("quota until"), "cooldown shown");

    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    run_chromium(&[format!("--screenshot={}", screenshot.display()), url]).await;
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a screenshot with content ({} bytes)",
        png.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_stays_readable_with_200_accounts() {
    let _ = chromium();
    let sim = TestSim::start(fast_sim()).await;
    let mut fixture = Fixture::new(&sim, "");
    let ids: Vec<String> = (0..200).map(|i| format!("seller-{i:03}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    with_accounts(&mut fixture, &sim, &id_refs);
    let ledger = fixture.open_ledger();
    let now = now_ts();
    let end = marketsync::domain::floor_hour(now);
    for id in &ids {
        ledger
            .seed(
                id,
                STREAM,
                marketsync::domain::HourWindow::new(end - 24 * HOUR, end),
                now,
            )
            .unwrap();
    }
    ledger.with_conn(|conn| {
        conn.execute(
            "UPDATE ledger_hours SET state = 'APPLIED', applied_at = updated_at",
            [],
        )
        .unwrap();
    });
    for id in ids.iter().step_by(25) {
        fail_hours(
            &ledger,
            id,
            2,
            1,
            "getReport returned http 500: internal error",
            now + 600,
        );
    }
    let server = Server::start(&fixture.config, ledger, None).await;
    let started = std::time::Instant::now();
    let (code, status) = server.get("/api/status").await;
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "status of 200 accounts took {:?}",
        started.elapsed()
    );
    assert_eq!(status["summary"]["failing"], 8, "{}", status["summary"]);
    assert_eq!(status["summary"]["caught_up"], 192);

    let dom = run_chromium(&["--dump-dom".to_string(), server.url("/")]).await;
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("200 of 200 streams"), "every stream listed");
    assert_eq!(dom.matches("data-key=\"seller-").count(), 200);
    // Problems first: the first row is a failing stream.
    let first_row = dom.find("data-key=\"seller-").unwrap();
    assert!(
        dom[first_row..].starts_with("data-key=\"seller-000/"),
        "failing rows sort first"
    );
    let shot = std::env::temp_dir().join(format!(
        "marketsync-dashboard-200-{}.png",
        std::process::id()
    ));
    run_chromium(&[format!("--screenshot={}", shot.display()), server.url("/")]).await;
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);
    eprintln!("200-account screenshot: {}", shot.display());
}

/// A WebDriver session on Debian's chromedriver driving headless chromium: the W3C
/// protocol is plain JSON over HTTP, so reqwest is the whole client.
pub struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("addr").port()
        };
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run scripts/test.sh (it installs Debian's chromium-driver) or `apt-get install chromium-driver`");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = async {
            for _ in 0..250 {
                if let Ok(response) = http.get(format!("{base}/status")).send().await {
                    if response.status().is_success() {
                        return true;
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            false
        };
        assert!(ready.await, "chromedriver answered /status");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium().display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=1400,900"],
            },
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a session id: {created}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    pub async fn command(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let answer: Value = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("webdriver command")
            .json()
            .await
            .expect("webdriver json");
        assert!(
            answer["value"].get("error").is_none(),
            "webdriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    pub async fn script(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// The W3C element id of the first element matching `css`.
    pub async fn element(&self, css: &str) -> String {
        let found = self
            .command("/element", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("element {css}: {found}"))
            .to_string()
    }

    /// A PNG of the first element matching `css` (scrolled into view), written to `path`.
    pub async fn screenshot_element(&self, css: &str, path: &std::path::Path) -> Vec<u8> {
        let id = self.element(css).await;
        let url = format!(
            "{}/session/{}/element/{id}/screenshot",
            self.base, self.session
        );
        let answer: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("webdriver screenshot")
            .json()
            .await
            .expect("webdriver json");
        let png = base64_decode(
            answer["value"]
                .as_str()
                .unwrap_or_else(|| panic!("a screenshot: {answer}")),
        );
        std::fs::write(path, &png).expect("write screenshot");
        png
    }

    pub async fn click(&self, css: &str) {
        let found = self
            .command("/element", json!({"using": "css selector", "value": css}))
            .await;
        let id = found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("element {css}: {found}"))
            .to_string();
        self.command(&format!("/element/{id}/click"), json!({}))
            .await;
    }

    /// Waits up to 20 s for `script` to return a truthy value.
    pub async fn wait_for(&self, script: &str) -> Value {
        for _ in 0..200 {
            let value = self.script(script).await;
            if !value.is_null() && value != json!(false) && value != json!("") {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never satisfied: {script}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The address a daemon logged for `what` (`http api, dashboard and metrics listening`,
/// `embedded simulator listening`).
pub fn logged_address(logs: &str, what: &str) -> Option<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_refresh_button_works_against_the_running_daemon() {
    let _ = chromium();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("marketsync.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"data_dir = "{}"
[http]
listen = "127.0.0.1:0"
admin_token_env = "TEST_ADMIN_TOKEN"
[simulator]
enabled = true
listen = "127.0.0.1:0"
processing_latency = "0s"
[quota.ebay.getTransactions]
rate = 20
burst = 50
[quota.ebay.searchReturns]
rate = 20
burst = 50
[quota.stockx.marketData]
rate = 50
burst = 50
[[accounts]]
id = "acme-live"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "12h"
chunk = "6h"
interval = "2s"
safety_lag = "0s"
poll_min = "50ms"
poll_max = "200ms"
[[accounts]]
id = "ebay-live"
provider = "ebay"
[accounts.streams.orders]
start = "3days"
interval = "2s"
[accounts.streams.transactions]
start = "3days"
interval = "2s"
[accounts.streams.returns]
start = "3days"
interval = "2s"
[[accounts]]
id = "stockx-live"
provider = "stockx"
[accounts.streams.market_data]
interval = "1s"
[[accounts]]
id = "keepa-live"
provider = "keepa"
[accounts.streams.products]
interval = "1s"
"#,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let daemon =
        crate::common::DaemonProcess::spawn_with_env(&config_path, &[("TEST_ADMIN_TOKEN", TOKEN)]);
    let mut http_addr = None;
    let mut sim_addr = None;
    crate::common::wait_until(Duration::from_secs(30), || {
        let logs = daemon.logs();
        http_addr = logged_address(&logs, "http api, dashboard and metrics listening");
        sim_addr = logged_address(&logs, "embedded simulator listening");
        http_addr.is_some() && sim_addr.is_some()
    })
    .await;
    let http_addr = http_addr.unwrap_or_else(|| panic!("daemon logs:\n{}", daemon.logs()));
    let sim_addr = sim_addr.expect("simulator address");
    let client = reqwest::Client::new();
    let status = |client: reqwest::Client| {
        let url = format!("http://{http_addr}/api/status");
        async move {
            let answer: Value = client.get(url).send().await.ok()?.json().await.ok()?;
            Some(answer)
        }
    };
    // Lookups for the job queues, through the API as the dashboard's button would.
    for (provider, sku, size) in [
        ("stockx", "DD1391-100", Some("10")),
        ("stockx", "CW2288-111", Some("9.5")),
        ("stockx", "UNKNOWN-1", Some("8")),
        ("keepa", "B000000001", None),
        ("keepa", "B000000002", None),
    ] {
        let mut job = json!({"provider": provider, "sku": sku, "priority": "hot"});
        if let Some(size) = size {
            job["size"] = json!(size);
        }
        let answer = client
            .post(format!("http://{http_addr}/api/jobs"))
            .bearer_auth(TOKEN)
            .json(&job)
            .send()
            .await
            .expect("enqueue");
        assert_eq!(answer.status().as_u16(), 200);
    }
    // Caught up: every hour of the lookback APPLIED, every cursor current, the queues
    // drained.
    let mut caught_up = None;
    for _ in 0..600 {
        if let Some(answer) = status(client.clone()).await {
            let stream = &answer["accounts"][0]["streams"][0];
            let all_caught_up = answer["accounts"].as_array().is_some_and(|accounts| {
                accounts.iter().all(|account| {
                    account["streams"]
                        .as_array()
                        .is_some_and(|streams| streams.iter().all(|s| s["verdict"] == "caught_up"))
                })
            });
            if all_caught_up && stream["counts"]["APPLIED"].as_u64() >= Some(12) {
                caught_up = Some(answer);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = caught_up.unwrap_or_else(|| panic!("caught up; logs:\n{}", daemon.logs()));
    let stream = &caught_up["accounts"][0]["streams"][0];

    let browser = Browser::start().await;
    browser.open(&format!("http://{http_addr}/")).await;
    browser
        .wait_for(
            "return document.querySelector('[data-cell=\"acme-live/vendor_rt_sales/verdict\"]')",
        )
        .await;
    // The numbers on the page are the API's.
    for state in ["MISSING", "REQUESTED", "DOWNLOADED", "APPLIED", "FAILED"] {
        let shown = browser
            .script(&format!(
                "return document.querySelector('[data-cell=\"acme-live/vendor_rt_sales/{state}\"]').textContent"
            ))
            .await;
        assert_eq!(shown, json!(stream["counts"][state].to_string()), "{state}");
    }
    let verdict = browser
        .script("return document.querySelector('[data-cell=\"acme-live/vendor_rt_sales/verdict\"]').textContent")
        .await;
    assert_eq!(verdict, json!("caught_up"));
    // The heatmap draws one cell per hour of the 12 h lookback.
    let cells = browser
        .wait_for("const c = document.querySelectorAll('[data-heatmap=\"acme-live/vendor_rt_sales\"] rect.cell'); return c.length ? c.length : null")
        .await;
    assert_eq!(cells, json!(12), "a cell per hour of the lookback");
    // Cursor and job streams show their position and queue instead of hours.
    let position = |key: &str| {
        format!("const c = document.querySelector('[data-cell=\"{key}/position\"]'); return c ? c.textContent : null")
    };
    let orders = browser.wait_for(&position("ebay-live/orders")).await;
    assert!(orders.as_str().unwrap().starts_with("cursor "), "{orders}");
    let queue = browser.wait_for(&position("stockx-live/market_data")).await;
    let queue = queue.as_str().unwrap();
    assert!(
        queue.contains("0 pending") && queue.contains("1 not found"),
        "{queue}"
    );
    // The job queue and budgets panels show what the API says.
    let jobs: Value = client
        .get(format!("http://{http_addr}/api/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for depth in jobs["depth"].as_array().unwrap() {
        let shown = browser
            .script(&format!(
                "const c = document.querySelector('#jobs-depth [data-provider=\"{}\"][data-state=\"{}\"]'); return c ? c.textContent : null",
                depth["provider"].as_str().unwrap(),
                depth["state"].as_str().unwrap()
            ))
            .await;
        assert_eq!(shown, json!(depth["count"].to_string()), "{depth}");
    }
    let budget_rows = browser
        .script("return document.querySelectorAll('#budgets tr').length")
        .await;
    assert!(
        budget_rows.as_u64().unwrap() >= 4,
        "budgets listed: {budget_rows}"
    );
    let screenshot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard-live.png");
    run_chromium(&[
        format!("--screenshot={}", screenshot.display()),
        format!("http://{http_addr}/"),
    ])
    .await;
    let png = std::fs::read(&screenshot).expect("live screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");

    // The refresh button: pick "refresh last 3h" in the account's action menu, as a
    // person would. The admin token is what the page's prompt would have stored.
    let creates_before = sim_create_reports(&client, &sim_addr).await;
    browser
        .script(&format!(
            "sessionStorage.setItem('marketsync-admin-token', '{TOKEN}'); return true"
        ))
        .await;
    browser.click("select[data-account=\"acme-live\"]").await;
    browser
        .click("select[data-account=\"acme-live\"] option[value=\"r3\"]")
        .await;
    let toast = browser
        .wait_for("const t = document.getElementById('toast').textContent; return t.includes('refresh acme-live') ? t : null")
        .await;
    assert!(
        toast
            .as_str()
            .unwrap()
            .contains("hour(s) reset to MISSING at manual priority"),
        "{toast}"
    );
    // The daemon fetches the refreshed hours again: new createReport calls, and the
    // stream is back to caught up.
    let mut refetched = false;
    for _ in 0..300 {
        let creates = sim_create_reports(&client, &sim_addr).await;
        let caught = status(client.clone())
            .await
            .is_some_and(|answer| answer["accounts"][0]["streams"][0]["verdict"] == "caught_up");
        if creates > creates_before && caught {
            refetched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refetched,
        "refreshed hours fetched again; logs:\n{}",
        daemon.logs()
    );
    let claims: Value = client
        .get(format!("http://{http_addr}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims["accounts"][0]["streams"][0]["counts"]["APPLIED"].as_u64(),
        stream["counts"]["APPLIED"].as_u64(),
        "the same hours, applied again"
    );
}

async fn sim_create_reports(client: &reqwest::Client, sim_addr: &str) -> u64 {
    let stats: Value = client
        .get(format!("http://{sim_addr}/_sim/stats"))
        .send()
        .await
        .expect("sim stats")
        .json()
        .await
        .expect("sim stats json");
    stats["calls"]["createReport"].as_u64().unwrap_or(0)
}

/// A configuration with the fixture's amazon account plus a StockX and a Keepa account
/// (not started: the API reads and writes the queue only).
fn with_job_accounts(fixture: &mut Fixture, sim: &TestSim) {
    let base = sim.base_url();
    let text = format!(
        "{}\n[[accounts]]\nid = \"stockx-main\"\nprovider = \"stockx\"\nendpoint = \"{base}\"\ntoken_url = \"{base}/oauth/token\"\n[accounts.credentials]\nclient_id_env = \"SX_ID\"\nclient_secret_env = \"SX_SECRET\"\nrefresh_token_env = \"SX_REFRESH\"\napi_key_env = \"SX_KEY\"\n[accounts.streams.market_data]\n\n[[accounts]]\nid = \"keepa-main\"\nprovider = \"keepa\"\nendpoint = \"{base}\"\n[accounts.credentials]\napi_key_env = \"KEEPA_KEY\"\n[accounts.streams.products]\n",
        std::fs::read_to_string(&fixture.config_path).expect("config text")
    );
    fixture.config = Config::parse(&text, "jobs.toml").expect("jobs config");
    std::fs::write(&fixture.config_path, &text).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_api_enqueues_merges_lists_and_resets() {
    let sim = TestSim::start(fast_sim()).await;
    let mut fixture = Fixture::new(&sim, "");
    with_job_accounts(&mut fixture, &sim);
    let ledger = fixture.open_ledger();
    let server = Server::start(&fixture.config, ledger.clone(), Some(TOKEN)).await;

    let job =
        json!({"provider": "stockx", "sku": "DD1391-100", "size": "10", "priority": "background"});
    let (status, body) = server.post("/api/jobs", None, Some(job.clone())).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = server.post("/api/jobs", Some(TOKEN), Some(job)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["outcome"], "created", "{body}");
    let id = body["job"]["id"].as_i64().unwrap();
    // The same key again, hotter: merged into the pending job, which keeps the higher priority.
    let (status, body) = server
        .post(
            "/api/jobs",
            Some(TOKEN),
            Some(
                json!({"provider": "stockx", "sku": "DD1391-100", "size": "10", "priority": "hot"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["job"],
        json!({"outcome": "merged", "id": id, "priority": "hot"})
    );
    // Priority defaults to manual (a person asked).
    let (status, body) = server
        .post(
            "/api/jobs",
            Some(TOKEN),
            Some(json!({"provider": "keepa", "sku": "B000000001"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server.get("/api/jobs?state=pending").await;
    assert_eq!(status, 200, "{body}");
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{body}");
    let stockx = jobs.iter().find(|job| job["provider"] == "stockx").unwrap();
    assert_eq!(stockx["priority"], 150);
    assert_eq!(stockx["priority_name"], "hot");
    let keepa = jobs.iter().find(|job| job["provider"] == "keepa").unwrap();
    assert_eq!(keepa["priority"], 200);
    assert!(body["depth"]
        .as_array()
        .unwrap()
        .contains(&json!({"provider": "stockx", "state": "pending", "count": 1})));

    // Bad input names the problem.
    for (body, expected) in [
        (
            json!({"provider": "stockx", "sku": "X", "size": "9", "priority": "urgent"}),
            "unknown priority \"urgent\"",
        ),
        (
            json!({"provider": "alias", "sku": "X"}),
            "no \"alias\" account with an enabled stream is configured",
        ),
        (json!({"provider": "stockx"}), "missing field `sku`"),
    ] {
        let (status, answer) = server.post("/api/jobs", Some(TOKEN), Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    // Hour actions do not apply to a job account, and say what to use instead.
    let (status, answer) = server
        .post(
            "/api/accounts/stockx-main/refresh",
            Some(TOKEN),
            Some(json!({"window": "last_3h"})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("POST /api/jobs"),
        "{answer}"
    );
    let (status, answer) = server.get("/api/jobs?state=stuck").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("unknown job state"));

    // A failed job goes back to pending with reset-failed.
    ledger.with_conn(|conn| {
        conn.execute(
            "UPDATE jobs SET state = 'failed', attempts = 5, error = 'stockx marketData returned http 503' WHERE id = ?1",
            [id],
        )
        .unwrap()
    });
    let (_, status_body) = server.get("/api/status").await;
    let market = status_body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["id"] == "stockx-main")
        .unwrap()["streams"][0]
        .clone();
    assert_eq!(market["shape"], "jobs", "{market}");
    assert_eq!(market["queue"]["failed"], 1, "{market}");
    assert_eq!(market["verdict"], "failing", "{market}");
    assert!(
        market["explanation"]
            .as_str()
            .unwrap()
            .contains("stockx marketData returned http 503"),
        "{market}"
    );
    let (status, body) = server
        .post(
            "/api/jobs/reset-failed",
            Some(TOKEN),
            Some(json!({"provider": "stockx"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reset"], 1);
    let (_, body) = server.get("/api/jobs?state=failed").await;
    assert!(body["jobs"].as_array().unwrap().is_empty(), "{body}");
    let (_, status_body) = server.get("/api/status").await;
    let keepa_stream = status_body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["id"] == "keepa-main")
        .unwrap()["streams"][0]
        .clone();
    assert_eq!(keepa_stream["verdict"], "syncing", "{keepa_stream}");
    assert_eq!(keepa_stream["explanation"], "1 job(s) pending, 0 running");

    // /metrics carries the queue depth.
    let (_, text) = server.metrics().await;
    let samples = parse_exposition(&text);
    assert_eq!(
        value(
            &samples,
            "marketsync_job_queue_depth",
            &[("provider", "stockx"), ("state", "pending")]
        ),
        Some(1.0),
        "{text}"
    );
}

/// Standard base64 (RFC 4648, with padding) as WebDriver sends screenshots.
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn value(byte: u8) -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let Some(v) = value(byte) else { continue };
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}
