//! eBay cursor streams end to end against the simulator: real HTTP, a real SQLite file.
//! The engine's clock and the simulator's are pinned together (`Clock::Manual` and
//! `PUT /_sim/ebay/control`), so a test moves time without sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use marketsync::config::Config;
use marketsync::provider::ebay::{EbayClient, EbayCredentials, EbayEndpoints};
use marketsync::shapes::cursor::{Clock, CursorRunner, CursorStore};
use marketsync::shapes::{RunOutcome, StreamContext, StreamWork};
use marketsync::sim::ebay::{
    changes_between, orders_created, EbayRequest, EbaySimConfig, EbayStats, SimChange,
};
use marketsync::sim::{FaultKind, SimConfig};
use marketsync::store::{LedgerStore, SqliteLedger};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{ebay_user_token, schedule, wait_until, DaemonProcess, TestSim};

pub(crate) const DAY: i64 = 86_400;
pub(crate) const HOUR: i64 = 3_600;
pub(crate) const SEED: u64 = 42;
/// The refresh token the test account uses: the simulator's seller name.
pub(crate) const SELLER: &str = "seller-shop";
pub(crate) const LAG: i64 = 120;

pub(crate) fn sim_config(ebay: EbaySimConfig) -> SimConfig {
    SimConfig {
        seed: SEED,
        processing_latency: Duration::ZERO,
        ebay,
        ..SimConfig::default()
    }
}

/// A whole minute some days from now, so windows and data line up the same every run.
pub(crate) fn pinned_start() -> i64 {
    let now = marketsync::domain::now_ts();
    now - now.rem_euclid(60)
}

/// One eBay account (`shop`) pointed at `sim`, its streams with `stream_extra` each
/// (shared with `ebay_streams`).
pub(crate) struct EbayFixture {
    dir: tempfile::TempDir,
    config: Config,
    config_path: std::path::PathBuf,
    pub(crate) ledger: Arc<SqliteLedger>,
    clock: Arc<AtomicI64>,
    base: String,
    http: reqwest::Client,
}

impl EbayFixture {
    pub(crate) fn new(
        sim: &TestSim,
        streams: &[&str],
        stream_extra: &str,
        now: i64,
    ) -> EbayFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = sim.base_url();
        let mut text = format!(
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
"#,
            data = dir.path().display(),
        );
        let lag = if stream_extra.contains("safety_lag") {
            String::new()
        } else {
            format!("safety_lag = \"{LAG}s\"\n")
        };
        for stream in streams {
            text.push_str(&format!(
                "\n[accounts.streams.{stream}]\n{lag}retry_base = \"10s\"\nretry_max = \"1m\"\n{stream_extra}\n"
            ));
        }
        let config = Config::parse(&text, "ebay-test.toml").expect("valid test config");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let ledger = Arc::new(SqliteLedger::open(&config.database_path()).expect("open ledger"));
        EbayFixture {
            dir,
            config,
            config_path,
            ledger,
            clock: Arc::new(AtomicI64::new(now)),
            base,
            http: reqwest::Client::new(),
        }
    }

    fn client(&self, refresh_token: &str) -> EbayClient {
        EbayClient::new(
            reqwest::Client::new(),
            EbayEndpoints::new(
                &self.base,
                &format!("{}/identity/v1/oauth2/token", self.base),
            ),
            EbayCredentials {
                client_id: "test-client".to_string(),
                client_secret: "test-secret".to_string(),
                refresh_token: Some(refresh_token.to_string()),
            },
            "EBAY_US",
        )
    }

    /// A context for `stream` whose runner uses the fixture's clock, unpaced.
    pub(crate) fn context_with(&self, stream: &str, refresh_token: &str) -> StreamContext {
        let account = self.config.accounts[0].clone();
        let stream = account.stream(stream).expect("stream configured").clone();
        let runner = CursorRunner::new(
            Arc::new(self.client(refresh_token)),
            None,
            Arc::clone(&self.ledger),
        )
        .with_clock(Clock::Manual(Arc::clone(&self.clock)));
        let dyn_ledger: Arc<dyn LedgerStore> = self.ledger.clone();
        let cancel = CancellationToken::new();
        StreamContext {
            account: Arc::new(account),
            stream,
            ledger: dyn_ledger,
            work: StreamWork::shape(Arc::new(runner)),
            documents_dir: self.dir.path().join("documents"),
            owner: "test:1@localhost".to_string(),
            abort: cancel.clone(),
            cancel,
            metrics: Default::default(),
            permits: Default::default(),
            polls: None,
            lease_deadline: None,
            progress: None,
            chaos: None,
        }
    }

    pub(crate) fn context(&self, stream: &str) -> StreamContext {
        self.context_with(stream, SELLER)
    }

    /// Pins the engine's and the simulator's clocks to `now`.
    pub(crate) async fn set_now(&self, now: i64) {
        self.clock.store(now, Ordering::SeqCst);
        self.control(json!({"now_unix": now})).await;
    }

    pub(crate) async fn control(&self, body: serde_json::Value) {
        let response = self
            .http
            .put(format!("{}/_sim/ebay/control", self.base))
            .json(&body)
            .send()
            .await
            .expect("control");
        assert!(
            response.status().is_success(),
            "control: {}",
            response.status()
        );
    }

    pub(crate) async fn requests(&self) -> Vec<EbayRequest> {
        self.http
            .get(format!("{}/_sim/ebay/requests", self.base))
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("requests json")
    }

    pub(crate) async fn stats(&self) -> EbayStats {
        self.http
            .get(format!("{}/_sim/ebay/stats", self.base))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// (order id → (fulfillment status, payment status)) stored for the account.
    fn stored_orders(&self) -> BTreeMap<String, (String, String)> {
        self.ledger.with_conn(|conn| {
            let mut statement = conn
                .prepare(
                    "SELECT order_id, fulfillment_status, payment_status FROM ebay_orders
                     WHERE account = 'shop'",
                )
                .expect("prepare");
            statement
                .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
                .expect("query")
                .collect::<Result<BTreeMap<_, _>, _>>()
                .expect("rows")
        })
    }

    pub(crate) fn snapshot(&self, stream: &str) -> marketsync::shapes::cursor::CursorSnapshot {
        self.ledger
            .cursor_snapshot("shop", stream)
            .expect("snapshot")
            .expect("cursor exists")
    }
}

/// The orders the simulator serves at `now` for lastModifiedDate in `[from, to)`.
fn expected_orders(
    config: &EbaySimConfig,
    from: i64,
    to: i64,
    now: i64,
) -> BTreeMap<String, (String, String)> {
    orders_created(SEED, config, SELLER, from - 20 * DAY, to)
        .into_iter()
        .filter(|order| order.created <= now)
        .filter(|order| {
            let modified = order.last_modified_at(now);
            modified >= from && modified < to
        })
        .map(|order| {
            let status = (
                order.fulfillment_at(now).0.to_string(),
                order.payment_at(now).0.to_string(),
            );
            (order.order_id, status)
        })
        .collect()
}

#[tokio::test]
async fn ebay_catch_up_from_90_days_never_requests_over_max_window_and_ends_caught_up() {
    let ebay = EbaySimConfig {
        orders_per_day: 20,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let now = pinned_start();
    let fixture = EbayFixture::new(&sim, &["orders"], "", now);
    fixture.set_now(now).await;

    let outcome = fixture.context("orders").run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 90,
            failed: 0
        }
    );

    let requests = fixture.requests().await;
    assert_eq!(requests.len(), 90, "one page per window at 20 orders a day");
    let mut expected_from = (now - 90 * DAY) * 1000;
    for request in &requests {
        assert_eq!(request.operation, "ebay.getOrders");
        assert_eq!(request.status, 200);
        let (from, to) = (request.from_ms.expect("from"), request.to_ms.expect("to"));
        assert_eq!(from, expected_from, "windows are contiguous");
        assert!(
            to + 1 - from <= DAY * 1000,
            "window {from}..{to} is longer than 24h"
        );
        expected_from = to + 1;
    }
    assert_eq!(
        expected_from,
        (now - LAG) * 1000,
        "the last window ends at now - safety_lag"
    );

    let snapshot = fixture.snapshot("orders");
    assert_eq!(snapshot.cursor_ts, now - LAG);
    assert_eq!((snapshot.failures, snapshot.last_error), (0, None));
    let expected = expected_orders(&ebay, now - 90 * DAY, now - LAG, now);
    assert!(expected.len() > 1500, "{} orders", expected.len());
    assert_eq!(fixture.stored_orders(), expected);
    assert_eq!(snapshot.resources, expected.len() as i64);
    assert_eq!(snapshot.events, 0, "first sight appends no history");

    // Caught up: the next run asks nothing.
    let again = fixture.context("orders").run_once().await.expect("run");
    assert_eq!(
        again,
        RunOutcome::Finished {
            applied: 0,
            failed: 0
        }
    );
    let stats = fixture.stats().await;
    assert_eq!(stats.calls("ebay.getOrders"), 90);
    assert_eq!(
        stats.calls("ebay.token"),
        1,
        "one token, cached across 90 calls; the caught-up run called nothing"
    );
}

#[tokio::test]
async fn ebay_failing_window_keeps_the_cursor_and_succeeds_later() {
    let sim = TestSim::start(sim_config(EbaySimConfig::default())).await;
    sim.sim
        .set_faults(schedule("ebay.getOrders", 3, FaultKind::ServerError));
    let now = pinned_start();
    let fixture = EbayFixture::new(&sim, &["orders"], "start = \"5days\"", now);
    fixture.set_now(now).await;
    let start = now - 5 * DAY;

    let outcome = fixture.context("orders").run_once().await.expect("run");
    let RunOutcome::Deferred { retry_in, .. } = outcome else {
        panic!("expected a deferred run, got {outcome:?}");
    };
    let snapshot = fixture.snapshot("orders");
    assert_eq!(
        snapshot.cursor_ts,
        start + 2 * DAY,
        "two windows applied, the third not"
    );
    assert_eq!(snapshot.failures, 1);
    let error = snapshot.last_error.expect("last error");
    assert!(error.contains("500"), "{error}");
    let retry_at = snapshot.retry_at.expect("retry_at");
    assert_eq!(retry_at - now, retry_in.as_secs() as i64);
    assert!(
        (10..=13).contains(&(retry_at - now)),
        "retry_base 10s plus jitter"
    );
    let stored = fixture.stored_orders();
    assert_eq!(
        stored,
        expected_orders(&EbaySimConfig::default(), start, start + 2 * DAY, now)
    );

    // Before retry_at nothing is asked.
    let early = fixture.context("orders").run_once().await.expect("run");
    assert!(matches!(early, RunOutcome::Deferred { .. }), "{early:?}");
    assert_eq!(fixture.stats().await.calls("ebay.getOrders"), 3);

    fixture.set_now(retry_at).await;
    let later = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(
            later,
            RunOutcome::Finished {
                applied: 3,
                failed: 0
            }
        ),
        "{later:?}"
    );
    let snapshot = fixture.snapshot("orders");
    assert_eq!(snapshot.cursor_ts, retry_at - LAG);
    assert_eq!(
        (snapshot.failures, snapshot.last_error, snapshot.retry_at),
        (0, None, None)
    );
}

#[tokio::test]
async fn ebay_paging_through_total_over_limit_gets_every_order_exactly_once() {
    let ebay = EbaySimConfig {
        orders_per_day: 500,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let now = pinned_start();
    let fixture = EbayFixture::new(&sim, &["orders"], "start = \"2days\"\npage_limit = 60", now);
    fixture.set_now(now).await;

    let outcome = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(
            outcome,
            RunOutcome::Finished {
                applied: 2,
                failed: 0
            }
        ),
        "{outcome:?}"
    );
    let requests = fixture.requests().await;
    // Per window: offsets 0, 60, 120, ... up to the total, each once.
    let mut per_window: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for request in &requests {
        assert_eq!(request.limit, 60);
        per_window
            .entry(request.from_ms.expect("from"))
            .or_default()
            .push(request.offset);
    }
    assert_eq!(per_window.len(), 2);
    let expected = expected_orders(&ebay, now - 2 * DAY, now - LAG, now);
    assert!(
        per_window.values().any(|offsets| offsets.len() > 5),
        "{per_window:?}"
    );
    for offsets in per_window.values() {
        let want: Vec<u64> = (0..offsets.len() as u64).map(|page| page * 60).collect();
        assert_eq!(*offsets, want);
    }
    assert_eq!(fixture.stored_orders(), expected);
    let pages: usize = per_window.values().map(Vec::len).sum();
    assert_eq!(pages, requests.len());
}

#[tokio::test]
async fn ebay_history_rows_are_exactly_the_changes_the_simulator_made() {
    let t0 = pinned_start();
    let start = t0 - 4 * DAY;
    let ebay = EbaySimConfig {
        orders_per_day: 30,
        return_every: 3,
        orders_since: start,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(
        &sim,
        &["orders", "transactions", "returns"],
        "start = \"4days\"",
        t0,
    );
    let streams = ["orders", "transactions", "returns"];
    // Catch up at t0, then one run per stream every simulated hour for four days: every
    // state lasts longer than a step, so each one is seen.
    let steps = 96;
    for step in 0..=steps {
        fixture.set_now(t0 + step * HOUR).await;
        for stream in streams {
            let outcome = fixture.context(stream).run_once().await.expect("run");
            assert!(
                matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
                "{stream} at step {step}: {outcome:?}"
            );
        }
    }
    let last = t0 + steps * HOUR;
    // Changes after the first sync at t0 that a later fetch saw: orders are read by
    // lastModifiedDate, so up to the last window's end (last − lag, exclusive); returns by
    // creation date and transactions by transactionDate, each with a revisit, so in their
    // state at the last fetch.
    let expected: BTreeSet<(String, String, String, String, String)> =
        changes_between(SEED, &ebay, SELLER, t0 + 1, last + 1)
            .into_iter()
            .filter(|change: &SimChange| streams.contains(&change.stream.as_str()))
            .filter(|change: &SimChange| change.stream != "orders" || change.at < last - LAG)
            .map(|change| {
                (
                    change.stream,
                    change.resource_id,
                    change.field,
                    change.before,
                    change.after,
                )
            })
            .collect();
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let recorded: Vec<(String, String, String, String, String)> = events
        .iter()
        .map(|event| {
            (
                event.stream.clone(),
                event.resource_id.clone(),
                event.field.clone(),
                event.before.clone().unwrap_or_default(),
                event.after.clone().unwrap_or_default(),
            )
        })
        .collect();
    let recorded_set: BTreeSet<_> = recorded.iter().cloned().collect();
    assert_eq!(
        recorded.len(),
        recorded_set.len(),
        "no change recorded twice"
    );
    let missing: Vec<_> = expected.difference(&recorded_set).collect();
    let extra: Vec<_> = recorded_set.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    let by_stream = |name: &str| expected.iter().filter(|row| row.0 == name).count();
    assert!(
        by_stream("orders") > 100,
        "orders changes: {}",
        by_stream("orders")
    );
    assert!(
        by_stream("returns") > 10,
        "returns changes: {}",
        by_stream("returns")
    );
    assert!(
        by_stream("transactions") > 100,
        "transactions changes: {}",
        by_stream("transactions")
    );
}

#[tokio::test]
async fn ebay_oversized_response_fails_the_window_cleanly_with_nothing_applied() {
    let ebay = EbaySimConfig {
        orders_per_day: 300,
        oversize_bytes: 512 * 1024,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let now = pinned_start();
    let fixture = EbayFixture::new(
        &sim,
        &["orders"],
        "start = \"2days\"\npage_limit = 100\nmax_response_bytes = 262144",
        now,
    );
    fixture.set_now(now).await;
    // The second page of the first window is oversized: its first page must not be applied.
    fixture
        .control(json!({"oversize_after": 1, "oversize_next": 1}))
        .await;

    let outcome = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    let snapshot = fixture.snapshot("orders");
    assert_eq!(snapshot.cursor_ts, now - 2 * DAY, "the cursor stays");
    let error = snapshot.last_error.expect("last_error");
    assert!(
        error.contains("exceeds the limit of 262144 bytes"),
        "{error}"
    );
    assert!(
        fixture.stored_orders().is_empty(),
        "nothing of the window was applied"
    );
    assert_eq!(
        fixture.stats().await.oversized.get("ebay.getOrders"),
        Some(&1)
    );

    // The account is fine: once retry_at passes the window is read again and applied.
    fixture.set_now(snapshot.retry_at.expect("retry_at")).await;
    let later = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(later, RunOutcome::Finished { failed: 0, .. }),
        "{later:?}"
    );
    let now_later = snapshot.retry_at.expect("retry_at");
    assert_eq!(
        fixture.stored_orders(),
        expected_orders(&ebay, now - 2 * DAY, now_later - LAG, now_later)
    );
}

/// eBay's budgets are per API: a 429 on getOrders cools `ebay:shop:fulfillment` only, so the
/// orders stream waits and the account's transactions stream goes on.
#[tokio::test]
async fn ebay_429_cools_down_without_counting_a_failure() {
    let sim = TestSim::start(sim_config(EbaySimConfig::default())).await;
    let mut faults = schedule("ebay.getOrders", 2, FaultKind::Throttle);
    faults.retry_after_secs = Some(7200);
    sim.sim.set_faults(faults);
    let now = pinned_start();
    let fixture = EbayFixture::new(
        &sim,
        &["orders", "transactions"],
        "start = \"3days\"\nquota_cooldown = \"10m\"",
        now,
    );
    fixture.set_now(now).await;

    let outcome = fixture.context("orders").run_once().await.expect("run");
    let RunOutcome::CoolingDown { until, reason } = outcome else {
        panic!("expected a cooldown, got {outcome:?}");
    };
    assert_eq!(reason, "quota");
    let real_now = marketsync::domain::now_ts();
    assert!(
        until >= real_now + 7190,
        "Retry-After (2h) beats quota_cooldown (10m)"
    );
    let snapshot = fixture.snapshot("orders");
    assert_eq!(
        snapshot.cursor_ts,
        now - 3 * DAY + DAY,
        "the first window applied"
    );
    assert_eq!(
        (snapshot.failures, snapshot.last_error, snapshot.retry_at),
        (0, None, None)
    );
    let cooldown = fixture
        .ledger
        .active_cooldown("ebay:shop:fulfillment", real_now)
        .expect("cooldown")
        .expect("a cooldown is recorded for the fulfillment API");
    assert_eq!(cooldown.reason, "quota");
    assert_eq!(
        fixture
            .ledger
            .active_cooldown("ebay:shop", real_now)
            .expect("cooldown"),
        None,
        "the account as a whole is not stopped"
    );

    // During the cooldown no getOrders call is made.
    let again = fixture.context("orders").run_once().await.expect("run");
    assert!(matches!(again, RunOutcome::CoolingDown { .. }), "{again:?}");
    let stats = fixture.stats().await;
    assert_eq!(
        (
            stats.calls("ebay.getOrders"),
            stats.throttled("ebay.getOrders")
        ),
        (2, 1)
    );
    // Finances' getTransactions has its own budget: that stream runs.
    let transactions = fixture
        .context("transactions")
        .run_once()
        .await
        .expect("run");
    assert!(
        matches!(transactions, RunOutcome::Finished { failed: 0, .. }),
        "{transactions:?}"
    );
    assert!(fixture.stats().await.calls("ebay.getTransactions") > 0);

    // status and doctor say which stream waits, for which operation, and that the
    // account's others go on.
    let status = status_json(&fixture.config_path);
    assert_eq!(
        shop_stream(&status, "orders")["cooldown"]["reason"],
        "quota"
    );
    assert_eq!(
        shop_stream(&status, "orders")["cooldown"]["scope"],
        "ebay:shop:fulfillment"
    );
    assert_eq!(
        shop_stream(&status, "transactions")["cooldown"]["reason"],
        "none"
    );
    let output = ebay_cli(&fixture.config_path)
        .arg("status")
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.lines().any(|line| line
            .starts_with("shop/orders: quota cooldown of the fulfillment API until ")
            && line.contains("the account's other streams go on")),
        "{table}"
    );
    assert!(
        !table
            .lines()
            .any(|line| line.starts_with("shop: quota cooldown")),
        "{table}"
    );
    let (report, finding, _) =
        doctor_finding(&fixture.config_path, "fulfillment API's quota is spent");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(finding["severity"], "wait", "{finding}");
    assert_eq!(finding["scope"], "shop/orders", "{finding}");
    let message = finding["message"].as_str().unwrap_or_default();
    assert!(message.contains("other streams go on"), "{finding}");
    assert!(
        !findings
            .iter()
            .any(|finding| finding["scope"] == "shop/transactions"
                && finding["message"]
                    .as_str()
                    .is_some_and(|message| message.contains("quota"))),
        "{report}"
    );

    // The HTTP API's verdicts say the same.
    let server = super::http::Server::start(
        &fixture.config,
        Arc::clone(&fixture.ledger),
        Some("admin-token"),
    )
    .await;
    let (verdict, why) = api_verdict(&server, "orders").await;
    assert_eq!(verdict, "cooldown", "{why}");
    assert!(
        why.contains("fulfillment API's quota is spent") && why.contains("other streams go on"),
        "{why}"
    );
    let (verdict, why) = api_verdict(&server, "transactions").await;
    assert_ne!(verdict, "cooldown", "{why}");

    // Clearing the account (the HTTP API's clear-cooldown, or `marketsync cooldowns
    // clear ebay:shop`: one function) ends its buckets' cooldowns too.
    let (code, answer) = server
        .post(
            "/api/accounts/shop/clear-cooldown",
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["cleared"], true, "{answer}");
    assert_eq!(answer["previous"]["reason"], "quota", "{answer}");
    assert_eq!(
        fixture
            .ledger
            .active_cooldown("ebay:shop:fulfillment", marketsync::domain::now_ts())
            .expect("cooldown"),
        None
    );
}

/// eBay's daily quota is per API: the simulator's spent Post-Order day answers the
/// returns stream's first search with 429, which cools `ebay:shop:post_order`. The cases
/// stream (Post-Order too) then stops before it calls, and orders (Fulfillment) runs.
#[tokio::test]
async fn a_spent_post_order_day_stops_its_three_streams_and_not_orders() {
    let sim = TestSim::start(sim_config(EbaySimConfig {
        post_order_daily_calls: 0,
        ..EbaySimConfig::default()
    }))
    .await;
    let now = pinned_start();
    let fixture = EbayFixture::new(
        &sim,
        &["returns", "cases", "orders"],
        "start = \"2days\"",
        now,
    );
    fixture.set_now(now).await;
    let returns = fixture.context("returns").run_once().await.expect("run");
    assert!(
        matches!(&returns, RunOutcome::CoolingDown { reason, .. } if reason == "quota"),
        "{returns:?}"
    );
    let real_now = marketsync::domain::now_ts();
    let cooldown = fixture
        .ledger
        .active_cooldown("ebay:shop:post_order", real_now)
        .expect("cooldown")
        .expect("the Post-Order API cools down");
    assert!(cooldown.until_at > real_now, "{cooldown:?}");
    let cases = fixture.context("cases").run_once().await.expect("run");
    assert!(
        matches!(&cases, RunOutcome::CoolingDown { reason, .. } if reason == "quota"),
        "{cases:?}"
    );
    let orders = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(orders, RunOutcome::Finished { failed: 0, .. }),
        "{orders:?}"
    );
    let stats = fixture.stats().await;
    assert_eq!(stats.throttled("ebay.searchReturns"), 1, "{stats:?}");
    assert_eq!(
        stats.calls("ebay.searchCases"),
        0,
        "cases waits without a call: {stats:?}"
    );
    assert!(stats.calls("ebay.getOrders") > 0, "{stats:?}");
}

#[tokio::test]
async fn ebay_refused_refresh_token_cools_down_for_auth() {
    let sim = TestSim::start(sim_config(EbaySimConfig::default())).await;
    let now = pinned_start();
    let fixture = EbayFixture::new(&sim, &["orders"], "start = \"1day\"", now);
    fixture.set_now(now).await;
    let outcome = fixture
        .context_with("orders", "revoked-token")
        .run_once()
        .await
        .expect("run");
    assert!(
        matches!(&outcome, RunOutcome::CoolingDown { reason, .. } if reason == "auth"),
        "{outcome:?}"
    );
    let snapshot = fixture.snapshot("orders");
    assert_eq!((snapshot.failures, snapshot.cursor_ts), (0, now - DAY));
    assert_eq!(fixture.stats().await.calls("ebay.getOrders"), 0);
}

#[tokio::test]
async fn ebay_daemon_binary_syncs_orders() {
    let ebay = EbaySimConfig {
        orders_per_day: 40,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let fixture = EbayFixture::new(
        &sim,
        &["orders"],
        "start = \"3days\"\nsafety_lag = \"0s\"",
        pinned_start(),
    );
    let mut daemon = DaemonProcess::spawn_with_env(
        &fixture.config_path,
        &[
            ("TEST_EBAY_CLIENT_ID", "daemon-client"),
            ("TEST_EBAY_CLIENT_SECRET", "daemon-secret"),
            ("TEST_EBAY_REFRESH_TOKEN", SELLER),
        ],
    );
    let ledger = Arc::clone(&fixture.ledger);
    let caught_up = wait_until(Duration::from_secs(60), || {
        ledger
            .cursor_snapshot("shop", "orders")
            .ok()
            .flatten()
            .is_some_and(|snapshot| {
                snapshot.cursor_ts >= marketsync::domain::now_ts() - 60 && snapshot.resources > 0
            })
    })
    .await;
    assert!(
        caught_up,
        "daemon did not catch up; logs:\n{}",
        daemon.logs()
    );
    let orders = ledger.latest_orders("shop", 10).expect("orders");
    assert_eq!(orders.len(), 10);
    assert!(fixture.stored_orders().len() > 100);
    let requests = fixture.requests().await;
    assert!(requests.iter().all(|request| request.seller == SELLER));
    assert!(
        daemon.wait_exit(Duration::from_millis(1)).await.is_none(),
        "daemon still running"
    );
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
}

/// The daemon binary with `[store] url_env`: the cursor runner writes the orders stream
/// to PostgreSQL (cursor, orders, fence), nothing of it to the SQLite file, and the
/// PostgreSQL ledger answers the reads the surfaces make. Sync PostgreSQL calls run on the
/// blocking pool (the sync client must not run on an async worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_daemon_on_postgres_keeps_the_cursor_stream_there() {
    use marketsync::store::postgres::{testing::TestDb, PgLedger, PgSettings};
    let ebay = EbaySimConfig {
        orders_per_day: 40,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let fixture = EbayFixture::new(
        &sim,
        &["orders"],
        "start = \"3days\"\nsafety_lag = \"0s\"",
        pinned_start(),
    );
    let db = tokio::task::spawn_blocking(TestDb::create).await.unwrap();
    let var = "MARKETSYNC_TEST_EBAY_PG";
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let pg_config = fixture.config_path.with_file_name("postgres.toml");
    std::fs::write(
        &pg_config,
        format!("{text}\n[store]\nurl_env = \"{var}\"\n"),
    )
    .unwrap();
    let mut daemon = DaemonProcess::spawn_with_env(
        &pg_config,
        &[
            ("TEST_EBAY_CLIENT_ID", "daemon-client"),
            ("TEST_EBAY_CLIENT_SECRET", "daemon-secret"),
            ("TEST_EBAY_REFRESH_TOKEN", SELLER),
            (var, db.url.as_str()),
        ],
    );
    let url = db.url.clone();
    let pg: Arc<dyn LedgerStore> = tokio::task::spawn_blocking(move || {
        Arc::new(PgLedger::open(&url, &PgSettings::default()).expect("open pg"))
            as Arc<dyn LedgerStore>
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        let reader = Arc::clone(&pg);
        let snapshot =
            tokio::task::spawn_blocking(move || reader.cursor_snapshot("shop", "orders"))
                .await
                .unwrap()
                .expect("snapshot");
        if let Some(snapshot) = snapshot.filter(|snapshot| {
            snapshot.cursor_ts >= marketsync::domain::now_ts() - 60 && snapshot.resources > 0
        }) {
            break snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon did not catch up on postgresql; logs:\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(snapshot.resources > 100, "{snapshot:?}");
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0)
    );
    let reader = Arc::clone(&pg);
    let (orders, fence) = tokio::task::spawn_blocking(move || {
        (
            reader.latest_orders("shop", 10).expect("orders"),
            reader.newest_fence("shop", "orders").expect("fence"),
        )
    })
    .await
    .unwrap();
    assert_eq!(orders.len(), 10);
    assert!(
        fence >= 1,
        "the lease's fence was recorded in postgresql: {fence}"
    );
    // Nothing of the stream in the SQLite file: no cursor, no orders, no fence.
    assert_eq!(
        fixture
            .ledger
            .cursor_snapshot("shop", "orders")
            .expect("sqlite"),
        None
    );
    assert!(fixture.stored_orders().is_empty());
    assert_eq!(
        fixture
            .ledger
            .newest_fence("shop", "orders")
            .expect("sqlite"),
        0
    );
    tokio::task::spawn_blocking(move || drop((pg, db)))
        .await
        .unwrap();
}

#[tokio::test]
async fn ebay_expired_token_is_refreshed_once_and_the_call_retried() {
    let sim = TestSim::start(sim_config(EbaySimConfig::default())).await;
    let now = pinned_start();
    let fixture = EbayFixture::new(&sim, &["orders"], "start = \"2days\"", now);
    fixture.set_now(now).await;
    let context = fixture.context("orders");
    let first = context.run_once().await.expect("run");
    assert!(
        matches!(first, RunOutcome::Finished { applied: 2, .. }),
        "{first:?}"
    );
    // Three hours later the cached token (7200 s) has expired at eBay, while the client
    // still holds it: the call gets a 401, the client fetches a new token, retries once.
    fixture.set_now(now + 3 * HOUR).await;
    let second = context.run_once().await.expect("run");
    assert!(
        matches!(
            second,
            RunOutcome::Finished {
                applied: 1,
                failed: 0
            }
        ),
        "{second:?}"
    );
    let statuses: Vec<u16> = fixture
        .requests()
        .await
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 401, 200]);
    assert_eq!(fixture.stats().await.calls("ebay.token"), 2);
}

// ---------------------------------------------------------------------------------------
// The operator surface for cursor streams: `status`, `doctor`, `/api/status`, the account
// summary, `/metrics` and `sync --once`, over the real binary or the real HTTP server on
// the same SQLite file the engine wrote.

/// The real binary with the eBay test credentials in its environment.
fn ebay_cli(config_path: &std::path::Path) -> std::process::Command {
    let mut command = crate::common::marketsync();
    command
        .env("TEST_EBAY_CLIENT_ID", "cli-client")
        .env("TEST_EBAY_CLIENT_SECRET", "cli-secret")
        .env("TEST_EBAY_REFRESH_TOKEN", SELLER)
        .arg("--config")
        .arg(config_path);
    command
}

/// The stream `stream` of account `shop` in a `status --json` or `/api/status` body.
fn shop_stream<'a>(status: &'a serde_json::Value, stream: &str) -> &'a serde_json::Value {
    status["accounts"]
        .as_array()
        .and_then(|accounts| accounts.iter().find(|account| account["id"] == "shop"))
        .and_then(|account| account["streams"].as_array())
        .and_then(|streams| streams.iter().find(|entry| entry["name"] == stream))
        .unwrap_or_else(|| panic!("shop/{stream} in {status}"))
}

/// `(verdict, explanation)` of shop/`stream` per `GET /api/status`.
async fn api_verdict(server: &super::http::Server, stream: &str) -> (String, String) {
    let (code, body) = server.get("/api/status").await;
    assert_eq!(code, 200, "{body}");
    let entry = shop_stream(&body, stream);
    (
        entry["verdict"].as_str().unwrap_or_default().to_string(),
        entry["explanation"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Rows of `table` for the account `shop`.
fn shop_rows(ledger: &SqliteLedger, table: &str) -> i64 {
    ledger.with_conn(|conn| {
        conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE account = 'shop'"),
            [],
            |row| row.get(0),
        )
        .expect("count")
    })
}

/// A fixture whose orders were synced twice (a day apart, the second at `t0`, about now),
/// so the second sync recorded changes; returns the fixture and `t0`.
async fn synced_with_history(sim: &TestSim) -> (EbayFixture, i64) {
    let t0 = pinned_start();
    let fixture = EbayFixture::new(sim, &["orders"], "start = \"3days\"", t0 - DAY);
    for now in [t0 - DAY, t0] {
        fixture.set_now(now).await;
        let outcome = fixture.context("orders").run_once().await.expect("run");
        assert!(
            matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
            "{outcome:?}"
        );
    }
    (fixture, t0)
}

fn history_sim() -> SimConfig {
    sim_config(EbaySimConfig {
        orders_per_day: 40,
        ..EbaySimConfig::default()
    })
}

#[tokio::test]
async fn ebay_status_json_and_table_show_the_cursor_as_synced() {
    let sim = TestSim::start(history_sim()).await;
    let (fixture, t0) = synced_with_history(&sim).await;
    let snapshot = fixture.snapshot("orders");
    assert_eq!(snapshot.cursor_ts, t0 - LAG);
    assert!(snapshot.events > 0, "the second sync saw changes");
    let (orders, events) = (shop_rows(&fixture.ledger, "ebay_orders"), {
        fixture.ledger.with_conn(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM events WHERE account = 'shop' AND stream = 'orders'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .expect("count")
        })
    });
    assert!(orders > 100, "{orders} orders");

    let before = marketsync::domain::now_ts();
    let output = ebay_cli(&fixture.config_path)
        .args(["status", "--json"])
        .output()
        .expect("status --json");
    let after = marketsync::domain::now_ts();
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let stream = shop_stream(&status, "orders");
    assert_eq!(stream["shape"], "cursor");
    let cursor = &stream["cursor"];
    assert_eq!(
        cursor["position"],
        marketsync::domain::format_ts(t0 - LAG),
        "{stream}"
    );
    let behind = cursor["behind_seconds"].as_i64().expect("behind_seconds");
    assert!(
        (before - t0..=after - t0).contains(&behind),
        "behind {behind}s: status ran {}..{}s after t0",
        before - t0,
        after - t0
    );
    assert_eq!(cursor["resources"], orders);
    assert_eq!(cursor["events"], events);
    assert_eq!(cursor["failures"], 0);
    assert!(cursor["retry_at"].is_null(), "{cursor}");
    assert!(stream["last_error"].is_null(), "{stream}");
    assert_eq!(stream["cooldown"]["reason"], "none");

    let output = ebay_cli(&fixture.config_path)
        .arg("status")
        .output()
        .expect("status");
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    let row = table
        .lines()
        .find(|line| line.starts_with("shop ") && line.contains(" orders "))
        .unwrap_or_else(|| panic!("a row for shop/orders in\n{table}"));
    assert!(
        row.contains(&format!(
            "cursor {}",
            marketsync::domain::format_ts(t0 - LAG)
        )),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_verdicts_move_from_stalled_to_syncing_to_caught_up_and_failing() {
    let sim = TestSim::start(sim_config(EbaySimConfig::default())).await;
    let t0 = pinned_start();
    // The first run's clock stands 45 days back and `start` is 45 days: the cursor
    // starts 90 days before the real now and that run stops half way.
    let fixture = EbayFixture::new(&sim, &["orders"], "start = \"45days\"", t0);
    let server =
        super::http::Server::start(&fixture.config, Arc::clone(&fixture.ledger), None).await;

    // Never run: no cursor yet.
    let (verdict, why) = api_verdict(&server, "orders").await;
    assert_eq!(verdict, "stalled", "{why}");
    assert!(why.contains("no cursor yet"), "{why}");

    // Mid catch-up: the cursor is 45 days behind the real now and was just moved.
    fixture.set_now(t0 - 45 * DAY).await;
    let outcome = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(
            outcome,
            RunOutcome::Finished {
                applied: 45,
                failed: 0
            }
        ),
        "{outcome:?}"
    );
    let (verdict, why) = api_verdict(&server, "orders").await;
    assert_eq!(verdict, "syncing", "{why}");
    assert!(
        why.contains(&format!(
            "cursor at {}",
            marketsync::domain::format_ts(t0 - 45 * DAY - LAG)
        )) && why.contains(" behind; catching up"),
        "{why}"
    );

    // Caught up at the real now.
    fixture.set_now(t0).await;
    let outcome = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(
            outcome,
            RunOutcome::Finished {
                applied: 45,
                failed: 0
            }
        ),
        "{outcome:?}"
    );
    let (verdict, why) = api_verdict(&server, "orders").await;
    assert_eq!(verdict, "caught_up", "{why}");
    let resources = fixture.snapshot("orders").resources;
    assert!(why.contains(&format!("{resources} resources")), "{why}");

    // The next window's getOrders answers 500: failing, with the error, the cursor stays.
    let calls = fixture.stats().await.calls("ebay.getOrders");
    sim.sim.set_faults(schedule(
        "ebay.getOrders",
        calls + 1,
        FaultKind::ServerError,
    ));
    fixture.set_now(t0 + 60).await;
    let outcome = fixture.context("orders").run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    let snapshot = fixture.snapshot("orders");
    assert_eq!((snapshot.cursor_ts, snapshot.failures), (t0 - LAG, 1));
    let error = snapshot.last_error.expect("last_error");
    let (verdict, why) = api_verdict(&server, "orders").await;
    assert_eq!(verdict, "failing", "{why}");
    assert!(why.contains(&error) && error.contains("500"), "{why}");

    // `marketsync doctor` says the same; a failing window is retried by itself, so it is
    // a `wait` finding and the exit status stays 0 (1 only when a person must act).
    let (report, finding, code) = doctor_finding(&fixture.config_path, &error);
    assert_eq!(finding["severity"], "wait", "{finding}");
    assert_eq!(report["needs_attention"], 0, "{report}");
    assert_eq!(code, Some(0), "{report}");
    let output = ebay_cli(&fixture.config_path)
        .arg("doctor")
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.lines()
            .any(|line| line.contains("shop/orders") && line.contains(&error)),
        "{text}"
    );
    assert_eq!(output.status.code(), Some(0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_summary_and_metrics_come_from_the_database() {
    let sim = TestSim::start(history_sim()).await;
    let (fixture, t0) = synced_with_history(&sim).await;
    let server =
        super::http::Server::start(&fixture.config, Arc::clone(&fixture.ledger), None).await;

    let (code, summary) = server.get("/api/accounts/shop/summary").await;
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["provider"], "ebay");
    let want_orders =
        serde_json::to_value(fixture.ledger.latest_orders("shop", 20).expect("orders"))
            .expect("json");
    let want_changes = serde_json::to_value(
        fixture
            .ledger
            .recent_events(Some("shop"), 20)
            .expect("events"),
    )
    .expect("json");
    assert_eq!(want_orders.as_array().map(Vec::len), Some(20));
    assert!(
        want_changes
            .as_array()
            .is_some_and(|changes| !changes.is_empty()),
        "the second sync recorded changes"
    );
    assert_eq!(summary["orders"], want_orders);
    assert_eq!(summary["changes"], want_changes);
    // Straight from ebay_orders: the newest order modified before the cursor.
    let newest: String = fixture.ledger.with_conn(|conn| {
        conn.query_row(
            "SELECT order_id FROM ebay_orders WHERE account = 'shop'
             ORDER BY last_modified_date DESC, order_id LIMIT 1",
            [],
            |row| row.get(0),
        )
        .expect("newest")
    });
    assert_eq!(summary["orders"][0]["order_id"], newest.as_str());
    let change = &summary["changes"][0];
    assert_eq!(
        (&change["account"], &change["stream"]),
        (&json!("shop"), &json!("orders"))
    );
    assert!(
        fixture
            .stored_orders()
            .contains_key(change["resource_id"].as_str().unwrap_or("")),
        "{change}"
    );

    let before = marketsync::domain::now_ts();
    let (_, text) = server.metrics().await;
    let after = marketsync::domain::now_ts();
    let sample = text
        .lines()
        .find(|line| {
            line.starts_with("marketsync_cursor_lag_seconds{")
                && line.contains("account=\"shop\"")
                && line.contains("stream=\"orders\"")
        })
        .unwrap_or_else(|| panic!("marketsync_cursor_lag_seconds for shop/orders in\n{text}"));
    let lag: i64 = sample
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("a value in {sample}"));
    assert!(
        (before - t0..=after - t0).contains(&lag),
        "lag {lag}s, metrics read {}..{}s after t0",
        before - t0,
        after - t0
    );
    assert!(
        text.contains("# TYPE marketsync_cursor_lag_seconds gauge"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_sync_once_exits_zero_once_the_cursor_caught_up() {
    let sim = TestSim::start(sim_config(EbaySimConfig {
        orders_per_day: 30,
        ..EbaySimConfig::default()
    }))
    .await;
    let fixture = EbayFixture::new(
        &sim,
        &["orders", "returns"],
        "start = \"3days\"",
        pinned_start(),
    );
    let mut child = tokio::process::Command::from({
        let mut command = ebay_cli(&fixture.config_path);
        command.args(["sync", "--once", "--timeout", "2m"]);
        command
    });
    let output = tokio::time::timeout(Duration::from_secs(150), child.output())
        .await
        .expect("sync --once ends within its timeout")
        .expect("sync --once");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let now = marketsync::domain::now_ts();
    for stream in ["orders", "returns"] {
        let snapshot = fixture.snapshot(stream);
        assert_eq!((snapshot.failures, snapshot.last_error), (0, None));
        assert!(
            now - LAG - snapshot.cursor_ts <= 15 * 60 + 60,
            "{stream} cursor at {} is within an interval of now",
            marketsync::domain::format_ts(snapshot.cursor_ts)
        );
    }
    assert!(fixture.snapshot("orders").resources > 50);
    assert_eq!(
        fixture.snapshot("orders").resources,
        shop_rows(&fixture.ledger, "ebay_orders")
    );
    let requests = fixture.requests().await;
    assert!(
        requests.iter().all(|request| request.status == 200),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_paced_catch_up_ends_its_run_once_the_cursor_reaches_now() {
    // getOrders at one call a second after a burst of 3: each later window waits for its
    // token, so `now − safety_lag` moves on while the run works. The run must still end
    // once a window reached it (and hand the stream back to its interval), instead of
    // chasing the clock one paced call at a time with the lease held.
    let sim = TestSim::start(sim_config(EbaySimConfig {
        orders_per_day: 20,
        ..EbaySimConfig::default()
    }))
    .await;
    let fixture = EbayFixture::new(
        &sim,
        &["orders"],
        "start = \"8days\"\ninterval = \"10m\"",
        pinned_start(),
    );
    let mut text = std::fs::read_to_string(&fixture.config_path).expect("config");
    text.push_str("\n[quota.ebay.getOrders]\nrate = 1.0\nburst = 3\n");
    std::fs::write(&fixture.config_path, text).expect("write config");
    let daemon = DaemonProcess::spawn_with_env(
        &fixture.config_path,
        &[
            ("TEST_EBAY_CLIENT_ID", "daemon-client"),
            ("TEST_EBAY_CLIENT_SECRET", "daemon-secret"),
            ("TEST_EBAY_REFRESH_TOKEN", SELLER),
        ],
    );
    let caught_up = |logs: &str| {
        logs.lines()
            .find(|line| line.contains("caught up") && line.contains("stream=orders"))
            .map(str::to_string)
    };
    let ended = wait_until(Duration::from_secs(60), || {
        caught_up(&daemon.logs()).is_some()
    })
    .await;
    let logs = daemon.logs();
    assert!(ended, "the run never ended; logs:\n{logs}");
    let line = caught_up(&logs).unwrap_or_default();
    assert!(line.contains("windows=8"), "{line}");
    let calls = fixture.stats().await.calls("ebay.getOrders");
    assert_eq!(calls, 8, "one call per window, none after the last: {line}");
    let snapshot = fixture.snapshot("orders");
    assert_eq!((snapshot.failures, snapshot.last_error), (0, None));
    assert!(
        marketsync::domain::now_ts() - LAG - snapshot.cursor_ts < 60,
        "cursor at {}",
        marketsync::domain::format_ts(snapshot.cursor_ts)
    );
}

/// A refresh token for `SELLER` that carries only `scopes`: eBay's consent (the
/// simulator's stand-in for the sign-in page), then the authorization-code exchange.
async fn consented_refresh_token(base: &str, scopes: &[&str]) -> String {
    const RU_NAME: &str = "Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b";
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/oauth2/authorize"))
        .query(&[
            ("client_id", "test-client"),
            ("redirect_uri", RU_NAME),
            ("response_type", "code"),
            ("scope", &scopes.join(" ")),
            ("seller", SELLER),
        ])
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    marketsync::provider::ebay::exchange_code(
        &reqwest::Client::new(),
        &format!("{base}/identity/v1/oauth2/token"),
        "test-client",
        "test-secret",
        answer["code"].as_str().expect("code"),
        RU_NAME,
    )
    .await
    .expect("exchange")
    .refresh_token
}

/// Regression (issue 14 audit): the scope table was keyed by one operation per stream,
/// so the offers stream's refusal (its first call is getInventoryItems) named no scope;
/// `status` showed `cooldown: auth` with nothing saying why; and the account's one auth
/// cooldown kept only the last stream's text. A seller who consented to orders only:
/// offers and transactions, running at once, are refused for different scopes, and
/// status (JSON and table) names both scopes, as doctor does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_auth_cooldown_in_status_names_every_missing_scope() {
    const INVENTORY_SCOPES: &str = "(https://api.ebay.com/oauth/api_scope/sell.inventory or https://api.ebay.com/oauth/api_scope/sell.inventory.readonly)";
    const FINANCES_SCOPE: &str = "(https://api.ebay.com/oauth/api_scope/sell.finances)";
    let ebay = EbaySimConfig {
        inventory_listings: 10,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let t0 = pinned_start();
    let fixture = EbayFixture::new(&sim, &["transactions", "offers"], "", t0);
    fixture.set_now(t0).await;
    let token = consented_refresh_token(
        &fixture.base,
        &[
            "https://api.ebay.com/oauth/api_scope",
            "https://api.ebay.com/oauth/api_scope/sell.fulfillment.readonly",
        ],
    )
    .await;
    let offers = fixture.context_with("offers", &token);
    let transactions = fixture.context_with("transactions", &token);
    // Both streams start before either is refused (they run at once): neither sees a
    // cooldown yet.
    assert_eq!(offers.cooling_down().await.expect("read"), None);
    assert_eq!(transactions.cooling_down().await.expect("read"), None);
    let outcome = offers.run_once().await.expect("run");
    assert!(
        matches!(&outcome, RunOutcome::CoolingDown { reason, .. } if reason == "auth"),
        "{outcome:?}"
    );
    // The transactions stream's first call, refused meanwhile, ends its run the way
    // every shape ends a refused run.
    let refused = fixture
        .client(&token)
        .get_capped(
            "getTransactions",
            marketsync::provider::ebay::EbayApi::Finances,
            "/sell/finances/v1/transaction",
            &[("limit".to_string(), "20".to_string())],
            1 << 20,
        )
        .await
        .expect_err("no finances scope");
    let outcome = transactions
        .cool_down(transactions.refusal_cooldown(&refused), true, "test")
        .await
        .expect("cool down");
    assert!(
        matches!(&outcome, RunOutcome::CoolingDown { reason, .. } if reason == "auth"),
        "{outcome:?}"
    );

    let status = status_json(&fixture.config_path);
    for name in ["offers", "transactions"] {
        let cooldown = &shop_stream(&status, name)["cooldown"];
        assert_eq!(cooldown["reason"], "auth", "{cooldown}");
        let detail = cooldown["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("getInventoryItems needs {INVENTORY_SCOPES}"))
                && detail.contains(&format!("getTransactions needs {FINANCES_SCOPE}"))
                && detail.contains("marketsync auth ebay"),
            "{cooldown}"
        );
    }
    let output = ebay_cli(&fixture.config_path)
        .arg("status")
        .output()
        .expect("status");
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = table
        .lines()
        .filter(|line| line.starts_with("shop: auth cooldown until "))
        .collect();
    assert_eq!(lines.len(), 1, "once per account:\n{table}");
    assert!(
        lines[0].contains(INVENTORY_SCOPES) && lines[0].contains(FINANCES_SCOPE),
        "{table}"
    );
}

/// `marketsync status --json` on `config` (it must succeed).
fn status_json(config: &std::path::Path) -> serde_json::Value {
    let output = ebay_cli(config)
        .args(["status", "--json"])
        .output()
        .expect("status --json");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("json")
}

/// `marketsync doctor --json` on `config`: the report, its first finding whose message
/// holds `needle` (the test fails without one) and the exit code.
fn doctor_finding(
    config: &std::path::Path,
    needle: &str,
) -> (serde_json::Value, serde_json::Value, Option<i32>) {
    let output = ebay_cli(config)
        .args(["doctor", "--json"])
        .output()
        .expect("doctor --json");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("doctor --json: {err}: {output:?}"));
    let finding = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|finding| {
            finding["message"]
                .as_str()
                .is_some_and(|message| message.contains(needle))
        })
        .cloned()
        .unwrap_or_else(|| panic!("a finding with {needle:?} in {report}"));
    (report, finding, output.status.code())
}

/// `GET {base}{path}` with `query` and a user token for `SELLER` (every scope): the
/// status and the JSON body (`null` for an empty one).
async fn sim_get(
    fixture: &EbayFixture,
    path: &str,
    query: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let token = ebay_user_token(&fixture.base, SELLER, None).await;
    let response = fixture
        .http
        .get(format!("{}{path}", fixture.base))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .expect("call");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).expect("json")
    };
    (status, json)
}

/// The `field` of every item under `key`, in order.
fn field_of(page: &serde_json::Value, key: &str, field: &str) -> Vec<String> {
    page[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item[field].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// Regression (issue 14 audit): the simulator's getOrders answered 400 to
/// `creationdate:[..]` and `orderfulfillmentstatus:{NOT_STARTED|IN_PROGRESS}`, which
/// eBay's getOrders reference documents, and ignored `orderIds`. Each criterion, their
/// combinations and `orderIds` are served as eBay defines them, and what eBay refuses is
/// refused with its errorId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_sim_get_orders_serves_every_documented_filter_and_order_ids() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 12,
        orders_since: t0 - 10 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["orders"], "", t0);
    fixture.set_now(t0).await;
    let at = |ts: i64| marketsync::domain::format_millis(ts * 1000);
    let path = "/sell/fulfillment/v1/order";
    let orders = orders_created(SEED, &ebay, SELLER, t0 - 10 * DAY, t0 + 1);
    let created_between = |from: i64, to: i64| -> Vec<&marketsync::sim::ebay::SimOrder> {
        orders
            .iter()
            .filter(|order| order.created >= from && order.created <= to)
            .collect()
    };

    // creationdate, closed and open-ended; with lastmodifieddate beside it, only
    // creationdate is used (eBay's note). (what, filter, the order ids it answers)
    let (from, to) = (t0 - 4 * DAY, t0 - 2 * DAY);
    let ids_created = |from: i64, to: i64| -> Vec<String> {
        sorted(
            created_between(from, to)
                .iter()
                .map(|order| order.order_id.clone())
                .collect(),
        )
    };
    let expected = ids_created(from, to);
    assert!(expected.len() > 10, "{expected:?}");
    let cases = [
        (
            "closed creationdate",
            format!("creationdate:[{}..{}]", at(from), at(to)),
            expected.clone(),
        ),
        (
            "open creationdate",
            format!("creationdate:[{}..]", at(t0 - 2 * DAY)),
            ids_created(t0 - 2 * DAY, t0),
        ),
        (
            "creationdate beside lastmodifieddate",
            format!(
                "creationdate:[{}..{}],lastmodifieddate:[{}..]",
                at(from),
                at(to),
                at(t0 - 60)
            ),
            expected,
        ),
    ];
    for (what, filter, wanted) in cases {
        let (status, page) =
            sim_get(&fixture, path, &[("filter", &filter), ("limit", "200")]).await;
        assert_eq!(status, 200, "{what}: {page}");
        assert_eq!(
            sorted(field_of(&page, "orders", "orderId")),
            wanted,
            "{what}"
        );
        assert_eq!(page["total"], wanted.len(), "{what}");
    }

    // orderfulfillmentstatus: both supported sets, in either order, with a date range
    // (a space after the comma, as in eBay's example) and alone (the last 90 days).
    for (set, members) in [
        ("{NOT_STARTED|IN_PROGRESS}", ["NOT_STARTED", "IN_PROGRESS"]),
        ("{IN_PROGRESS|FULFILLED}", ["FULFILLED", "IN_PROGRESS"]),
    ] {
        let filter = format!(
            "creationdate:[{}..], orderfulfillmentstatus:{set}",
            at(t0 - 3 * DAY)
        );
        let (status, page) =
            sim_get(&fixture, path, &[("filter", &filter), ("limit", "200")]).await;
        assert_eq!(status, 200, "{page}");
        let wanted = sorted(
            created_between(t0 - 3 * DAY, t0)
                .iter()
                .filter(|order| members.contains(&order.fulfillment_at(t0).0))
                .map(|order| order.order_id.clone())
                .collect(),
        );
        assert!(!wanted.is_empty(), "{set}");
        assert_eq!(
            sorted(field_of(&page, "orders", "orderId")),
            wanted,
            "{set}"
        );
        for state in field_of(&page, "orders", "orderFulfillmentStatus") {
            assert!(members.contains(&state.as_str()), "{set}: {state}");
        }
        let alone = format!("orderfulfillmentstatus:{set}");
        let (status, page) = sim_get(&fixture, path, &[("filter", &alone), ("limit", "200")]).await;
        assert_eq!(status, 200, "{page}");
        let wanted = orders
            .iter()
            .filter(|order| members.contains(&order.fulfillment_at(t0).0))
            .count();
        assert_eq!(page["total"], wanted, "{set}");
    }

    // orderIds: two order ids (one twice), an unknown one, and the legacy
    // `ITEMID-TRANSACTIONID` form of a third order, which names no order since
    // Fulfillment API 1.20.6 decommissioned `legacyOrderId`; filter, limit and offset
    // are ignored.
    let picked = created_between(from, to);
    let (first, second, third) = (picked[0], picked[1], picked[2]);
    let legacy = format!(
        "{}-{}",
        110_000_000_000u64 + u64::from(third.index),
        third.day
    );
    let ids = format!(
        "{},{legacy},{},{},99-99999-00001",
        first.order_id, second.order_id, first.order_id
    );
    let (status, page) = sim_get(
        &fixture,
        path,
        &[
            ("orderIds", &ids),
            (
                "filter",
                "creationdate:[2001-01-01T00:00:00.000Z..2001-01-02T00:00:00.000Z]",
            ),
            ("limit", "1"),
            ("offset", "5"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        sorted(field_of(&page, "orders", "orderId")),
        sorted(vec![first.order_id.clone(), second.order_id.clone()])
    );
    assert_eq!(
        (page["total"].as_u64(), page["offset"].as_u64()),
        (Some(2), Some(0))
    );
    // Regression: orders carried `legacyOrderId`, which eBay no longer sends (Fulfillment
    // API release notes, 1.20.6, 2025-04-10: "Decommissioned the legacyOrderId field from
    // the getOrder and getOrders methods").
    for order in page["orders"].as_array().expect("orders") {
        assert!(order.get("legacyOrderId").is_none(), "{order}");
        assert!(order.get("orderId").is_some(), "{order}");
    }
    // The links keep orderIds (they used to keep `filter` only).
    let href = page["href"].as_str().unwrap_or_default();
    assert!(href.contains(&format!("orderIds={ids}&")), "{href}");
    let too_many = (0..51)
        .map(|index| format!("00-00000-{index:05}"))
        .collect::<Vec<_>>()
        .join(",");
    let (status, body) = sim_get(&fixture, path, &[("orderIds", &too_many)]).await;
    assert_eq!(
        (status, body["errors"][0]["errorId"].as_u64()),
        (400, Some(30900)),
        "{body}"
    );

    // What eBay refuses, with its errorIds.
    for (filter, error_id) in [
        ("creationdate:[..]".to_string(), 30820),
        ("creationdate:[yesterday..]".to_string(), 30810),
        (
            format!("lastmodifieddate:[{}..{}]", at(to), at(from)),
            30840,
        ),
        ("orderfulfillmentstatus:{NOT_STARTED}".to_string(), 30800),
        (
            "orderfulfillmentstatus:{NOT_STARTED|FULFILLED}".to_string(),
            30800,
        ),
        ("creationdate:2026-01-01T00:00:00.000Z".to_string(), 30800),
        (format!("shipdate:[{}..]", at(from)), 30700),
    ] {
        let (status, body) = sim_get(&fixture, path, &[("filter", &filter)]).await;
        assert_eq!(status, 400, "{filter}: {body}");
        assert_eq!(body["errors"][0]["errorId"], error_id, "{filter}: {body}");
        assert_eq!(body["errors"][0]["domain"], "API_FULFILLMENT", "{filter}");
    }
}

/// `at` (unix seconds) moved back `years` calendar years, in unix milliseconds.
fn years_before_ms(at: i64, years: u32) -> i64 {
    chrono::DateTime::from_timestamp(at, 0)
        .and_then(|at| at.checked_sub_months(chrono::Months::new(12 * years)))
        .expect("in range")
        .timestamp_millis()
}

/// getOrders' date limits as eBay's current definition states them (sell_fulfillment_v1_oas3
/// v1.20.4; release notes 1.19.19: "increased from 90 days to two years"): 30830 "Time
/// range between start date and end date must be within '2' years." (an open end is
/// now), 30850 "Start and end dates can't be in the future", and no order older than two
/// years is served, by filter or by id. The 90-day rule of older definitions is gone: a
/// range 100 days back is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_sim_get_orders_enforces_the_two_year_range_and_refuses_future_dates() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 2,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["orders"], "", t0);
    fixture.set_now(t0).await;
    let at = marketsync::domain::format_millis;
    let path = "/sell/fulfillment/v1/order";
    let two_years = years_before_ms(t0, 2);
    let now_ms = t0 * 1000;
    // (filter, the errorId it is refused with, or None when it is answered)
    let cases: Vec<(String, Option<u64>)> = vec![
        (format!("creationdate:[{}..]", at(two_years)), None),
        (
            format!("creationdate:[{}..]", at(two_years - 1)),
            Some(30830),
        ),
        (
            format!(
                "lastmodifieddate:[{}..{}]",
                at(years_before_ms(t0 - DAY, 2) - 1),
                at(now_ms - DAY * 1000)
            ),
            Some(30830),
        ),
        (
            format!(
                "creationdate:[{}..{}]",
                at(now_ms - 100 * DAY * 1000),
                at(now_ms - DAY * 1000)
            ),
            None,
        ),
        (format!("creationdate:[{}..]", at(now_ms)), None),
        (format!("creationdate:[{}..]", at(now_ms + 1)), Some(30850)),
        (
            format!(
                "lastmodifieddate:[{}..{}]",
                at(now_ms - DAY * 1000),
                at(now_ms + 1)
            ),
            Some(30850),
        ),
        // Future and over two years: the future is named first.
        (
            format!("creationdate:[{}..{}]", at(two_years - 1), at(now_ms + 1)),
            Some(30850),
        ),
    ];
    for (filter, refused) in &cases {
        let (status, body) = sim_get(&fixture, path, &[("filter", filter)]).await;
        match refused {
            None => assert_eq!(status, 200, "{filter}: {body}"),
            Some(error_id) => {
                assert_eq!(status, 400, "{filter}: {body}");
                let error = &body["errors"][0];
                assert_eq!(error["errorId"], *error_id, "{filter}: {body}");
                assert_eq!(error["domain"], "API_FULFILLMENT", "{filter}");
                assert_eq!(error["category"], "REQUEST", "{filter}");
                let message = if *error_id == 30830 {
                    "Time range between start date and end date must be within '2' years."
                } else {
                    "Start and end dates can't be in the future"
                };
                assert_eq!(error["message"], message, "{filter}");
            }
        }
    }

    // A range older than two years but shorter than two years is answered, without the
    // orders created more than two years ago; by id such an order is not served either.
    let old_day = t0 - 800 * DAY;
    let old_orders = orders_created(SEED, &ebay, SELLER, old_day, old_day + DAY);
    let young_orders = orders_created(SEED, &ebay, SELLER, t0 - 700 * DAY, t0 - 699 * DAY);
    let (old, young) = (&old_orders[0], &young_orders[0]);
    let window = format!(
        "creationdate:[{}..{}]",
        at(old_day * 1000),
        at((old_day + DAY) * 1000)
    );
    let (status, page) = sim_get(&fixture, path, &[("filter", &window)]).await;
    assert_eq!((status, &page["total"]), (200, &json!(0)), "{page}");
    let ids = format!("{},{}", old.order_id, young.order_id);
    let (status, page) = sim_get(&fixture, path, &[("orderIds", &ids)]).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        field_of(&page, "orders", "orderId"),
        vec![young.order_id.clone()]
    );
}

/// getOrders' `limit` is 1 to 200 (sell_fulfillment_v1_oas3 v1.20.4: "If a requested
/// limit is more than 200, the call fails and returns an error"; older definitions said
/// 1000), refused with the Fulfillment API's own 31100 "Invalid limit: {limitvalue}"; a
/// bad `offset` is 31000; with `orderIds` both are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_sim_get_orders_limit_is_at_most_200_and_refused_with_31100() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 100,
        orders_since: t0 - 5 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let fixture = EbayFixture::new(&sim, &["orders"], "", t0);
    fixture.set_now(t0).await;
    let path = "/sell/fulfillment/v1/order";
    // (limit, offset, the errorId and message of the refusal, or None: a page of `limit`)
    let cases = [
        ("200", "0", None),
        ("1", "0", None),
        ("201", "0", Some((31100, "Invalid limit: 201"))),
        ("1000", "0", Some((31100, "Invalid limit: 1000"))),
        ("0", "0", Some((31100, "Invalid limit: 0"))),
        ("ten", "0", Some((31100, "Invalid limit: ten"))),
        ("50", "-1", Some((31000, "Invalid offset: -1"))),
        ("50", "x", Some((31000, "Invalid offset: x"))),
    ];
    for (limit, offset, refused) in cases {
        let (status, body) = sim_get(&fixture, path, &[("limit", limit), ("offset", offset)]).await;
        match refused {
            None => {
                assert_eq!(status, 200, "limit {limit}: {body}");
                assert_eq!(body["limit"].to_string(), limit, "{body}");
                assert_eq!(
                    body["orders"]
                        .as_array()
                        .map(Vec::len)
                        .unwrap_or_default()
                        .to_string(),
                    limit,
                    "a full page of {limit}"
                );
            }
            Some((error_id, message)) => {
                assert_eq!(status, 400, "limit {limit} offset {offset}: {body}");
                let error = &body["errors"][0];
                assert_eq!(error["errorId"], error_id, "{body}");
                assert_eq!(error["domain"], "API_FULFILLMENT", "{body}");
                assert_eq!(error["message"], message, "{body}");
            }
        }
    }
    // "If the orderIds parameter is included in the request, this parameter will be
    // ignored."
    let (status, body) = sim_get(
        &fixture,
        path,
        &[("orderIds", "00-00000-00001"), ("limit", "5000")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Regression (issue 14 audit): getTransactions answered 400 to
/// `filter=transactionType:{SALE}`. Every criterion of eBay's getTransactions `filter` is
/// served, combined, in one `filter` or repeated ones, against the same transactions
/// the date range alone answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_sim_get_transactions_serves_every_documented_filter() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 12,
        return_every: 3,
        orders_since: t0 - 20 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let fixture = EbayFixture::new(&sim, &["transactions"], "", t0);
    fixture.set_now(t0).await;
    let at = |ts: i64| marketsync::domain::format_millis(ts * 1000);
    let path = "/sell/finances/v1/transaction";
    let range = format!("transactionDate:[{}..{}]", at(t0 - 20 * DAY), at(t0));
    let (status, all) = sim_get(&fixture, path, &[("filter", &range), ("limit", "1000")]).await;
    assert_eq!(status, 200, "{all}");
    let transactions = all["transactions"].as_array().cloned().unwrap_or_default();
    let ids_where = |keep: &dyn Fn(&serde_json::Value) -> bool| -> Vec<String> {
        sorted(
            transactions
                .iter()
                .filter(|transaction| keep(transaction))
                .map(|transaction| {
                    transaction["transactionId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect(),
        )
    };
    let refunds = ids_where(&|transaction| transaction["transactionType"] == "REFUND");
    assert!(!refunds.is_empty() && refunds.len() < transactions.len());

    // A refund's order: orderId ignores `limit` and answers the order's sale and refund;
    // buyerUsername narrows to that buyer; transactionId with transactionType in two
    // `filter` parameters, as eBay's example sends them; the sale's id with type REFUND
    // matches nothing (204, no body). Without transactionDate: the last 90 days, here
    // every transaction.
    let refund = transactions
        .iter()
        .find(|t| t["transactionType"] == "REFUND")
        .expect("a refund");
    let order_id = refund["orderId"].as_str().expect("orderId");
    let buyer = refund["buyer"]["username"].as_str().expect("buyer");
    let refund_id = refund["transactionId"].as_str().expect("id");
    let with_range = |criterion: &str| vec![("filter", format!("{range},{criterion}"))];
    // (what, the query, the transaction ids it answers: none is 204 No Content)
    let cases = vec![
        (
            "SALE",
            with_range("transactionType:{SALE}"),
            ids_where(&|t| t["transactionType"] == "SALE"),
        ),
        (
            "REFUND",
            with_range("transactionType:{REFUND}"),
            refunds.clone(),
        ),
        (
            "PAYOUT",
            with_range("transactionStatus:{PAYOUT}"),
            ids_where(&|t| t["transactionStatus"] == "PAYOUT"),
        ),
        (
            "FUNDS_PROCESSING",
            with_range("transactionStatus:{FUNDS_PROCESSING}"),
            ids_where(&|t| t["transactionStatus"] == "FUNDS_PROCESSING"),
        ),
        (
            "no transactionDate",
            vec![("filter", "transactionType:{SALE}".to_string())],
            ids_where(&|t| t["transactionType"] == "SALE"),
        ),
        (
            "orderId ignores limit",
            vec![
                ("filter", format!("orderId:{{{order_id}}}")),
                ("limit", "1".to_string()),
            ],
            ids_where(&|t| t["orderId"] == order_id),
        ),
        (
            "buyerUsername",
            with_range(&format!("buyerUsername:{{{buyer}}}")),
            ids_where(&|t| t["buyer"]["username"] == buyer),
        ),
        (
            "transactionId and its type",
            vec![
                ("filter", format!("transactionId:{{{refund_id}}}")),
                ("filter", "transactionType:{REFUND}".to_string()),
            ],
            vec![refund_id.to_string()],
        ),
        (
            "transactionId and another type",
            vec![
                ("filter", format!("transactionId:{{{refund_id}}}")),
                ("filter", "transactionType:{SALE}".to_string()),
            ],
            vec![],
        ),
    ];
    for (what, mut query, wanted) in cases {
        if !query.iter().any(|(name, _)| *name == "limit") {
            query.push(("limit", "1000".to_string()));
        }
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let (status, page) = sim_get(&fixture, path, &query).await;
        if wanted.is_empty() {
            assert_eq!((status, page), (204, serde_json::Value::Null), "{what}");
            continue;
        }
        assert_eq!(status, 200, "{what}: {page}");
        assert_eq!(
            sorted(field_of(&page, "transactions", "transactionId")),
            wanted,
            "{what}"
        );
        assert_eq!(page["total"], wanted.len(), "{what}");
    }
    assert_eq!(
        ids_where(&|t| t["orderId"] == order_id).len(),
        2,
        "the order's sale and refund"
    );

    // Regression: all of these were the generic errorId 2004. What the reference does not
    // allow is refused with the errorIds its getTransactions 400 list names
    // (sell_finances_v1_oas3 v1.17.2, domain API_FINANCES); what it names no code for
    // stays 2004.
    let refusals: Vec<(Vec<(&str, String)>, u64)> = vec![
        (
            vec![("filter", format!("transactionId:{{{refund_id}}}"))],
            135009,
        ),
        (
            vec![("filter", "transactionType:{BOGUS}".to_string())],
            135006,
        ),
        (vec![("filter", "transactionType:SALE".to_string())], 135006),
        (
            vec![("filter", "transactionType:{SALE|REFUND}".to_string())],
            135006,
        ),
        (
            vec![("filter", "transactionStatus:{SHIPPED}".to_string())],
            135007,
        ),
        (
            vec![(
                "filter",
                format!("transactionDate:[{}..{}]", at(t0), at(t0 - DAY)),
            )],
            135008,
        ),
        (
            vec![("filter", "transactionDate:[yesterday..]".to_string())],
            135008,
        ),
        (vec![("filter", "transactionDate:[..]".to_string())], 135008),
        (vec![("limit", "0".to_string())], 135003),
        (vec![("limit", "1001".to_string())], 135003),
        (vec![("limit", "ten".to_string())], 135003),
        (vec![("offset", "-1".to_string())], 135003),
        (vec![("sort", "transactionType".to_string())], 135005),
        (vec![("filter", "paymentMethod:{CARD}".to_string())], 2004),
        (vec![("filter", "buyerUsername:someone".to_string())], 2004),
    ];
    for (query, error_id) in refusals {
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let (status, body) = sim_get(&fixture, path, &query).await;
        let error = &body["errors"][0];
        assert_eq!(
            (status, error["errorId"].as_u64()),
            (400, Some(error_id)),
            "{query:?}: {body}"
        );
        let domain = if error_id == 2004 {
            "API_REQUEST"
        } else {
            "API_FINANCES"
        };
        assert_eq!(
            (error["domain"].as_str(), error["category"].as_str()),
            (Some(domain), Some("REQUEST")),
            "{query:?}: {body}"
        );
    }
    // An orderId makes eBay ignore `limit`, even one it would refuse.
    let (status, body) = sim_get(
        &fixture,
        path,
        &[
            ("filter", &format!("orderId:{{{order_id}}}")),
            ("limit", "0"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // `sort`: transactionDate is oldest first, -transactionDate newest first, as is no sort.
    let dates = |page: &serde_json::Value| field_of(page, "transactions", "transactionDate");
    let (status, oldest_first) = sim_get(
        &fixture,
        path,
        &[
            ("filter", &range),
            ("limit", "1000"),
            ("sort", "transactionDate"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{oldest_first}");
    let (status, newest_first) = sim_get(
        &fixture,
        path,
        &[
            ("filter", &range),
            ("limit", "1000"),
            ("sort", "-transactionDate"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{newest_first}");
    let mut ascending = dates(&oldest_first);
    assert!(ascending.windows(2).all(|pair| pair[0] <= pair[1]));
    ascending.reverse();
    assert_eq!(dates(&newest_first), ascending);
    // Without `sort`, eBay's default: newest first.
    let (status, unsorted) =
        sim_get(&fixture, path, &[("filter", &range), ("limit", "1000")]).await;
    assert_eq!(status, 200, "{unsorted}");
    assert_eq!(dates(&unsorted), ascending);
}
