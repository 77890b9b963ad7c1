//! The keyed job queue (StockX, Keepa) end to end against the simulator: real HTTP, a
//! real SQLite file, a real TokenManager.

use std::sync::Arc;
use std::time::{Duration, Instant};

use marketsync::config::Config;
use marketsync::domain::now_ts;
use marketsync::provider::keepa::KeepaClient;
use marketsync::provider::stockx::{StockxClient, StockxCredentials, StockxEndpoints};
use marketsync::quota::{BucketSpec, Pacer, QuotaBackend, QuotaConfig, QuotaHandle, TokenManager};
use marketsync::shapes::jobs::{
    enqueue, list_jobs, market_prices, recent_runs, reset_failed, EnqueueOutcome, JobClient,
    JobPriority, JobRunner, JobState, NewJob,
};
use marketsync::shapes::{RunOutcome, StreamContext, StreamWork};
use marketsync::sim::SimConfig;
use marketsync::store::jobs::{self as store, Claimer};
use marketsync::store::{LedgerStore, SqliteLedger};
use tokio_util::sync::CancellationToken;

use crate::common::{marketsync, wait_until, DaemonProcess, TestSim};

/// One StockX or Keepa account on a SQLite file, with its own TokenManager.
pub(crate) struct JobsFixture {
    _dir: tempfile::TempDir,
    pub(crate) config: Config,
    pub(crate) ledger: Arc<SqliteLedger>,
    pub(crate) quota: QuotaHandle,
}

impl JobsFixture {
    /// `provider` account `acct` whose only stream has `stream_extra` lines; the quota
    /// has no reserve (Keepa tests reason about exact balances) and `specs` overrides.
    pub(crate) async fn new(
        provider: &str,
        stream_extra: &str,
        specs: &[(&str, BucketSpec)],
    ) -> JobsFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let stream = if provider == "keepa" {
            "products"
        } else {
            "market_data"
        };
        let text = format!(
            "data_dir = \"{}\"\n[simulator]\nenabled = true\n[[accounts]]\nid = \"acct\"\nprovider = \"{provider}\"\n[accounts.streams.{stream}]\n{stream_extra}\n",
            dir.path().display()
        );
        let config = Config::parse(&text, "jobs-test.toml").expect("valid config");
        let ledger = Arc::new(SqliteLedger::open(&config.database_path()).expect("ledger"));
        let dyn_ledger: Arc<dyn LedgerStore> = ledger.clone();
        let mut quota = QuotaConfig::new(QuotaBackend::InProcess).with_ledger(dyn_ledger);
        quota.reserve_share = 0.0;
        for (provider, spec) in specs {
            quota = quota.with_spec(provider, "*", *spec);
        }
        let (actor, _join) = TokenManager::spawn(quota).await.expect("token manager");
        JobsFixture {
            _dir: dir,
            config,
            ledger,
            quota: QuotaHandle::new(actor),
        }
    }

    pub(crate) fn stockx_client(&self, sim: &TestSim, api_key: &str) -> JobClient {
        JobClient::Stockx(StockxClient::new(
            reqwest::Client::new(),
            StockxEndpoints {
                api_base: sim.base_url(),
                token_url: format!("{}/oauth/token", sim.base_url()),
            },
            StockxCredentials {
                client_id: "test-client".to_string(),
                client_secret: "test-secret".to_string(),
                refresh_token: "test-refresh".to_string(),
                api_key: api_key.to_string(),
            },
        ))
    }

    pub(crate) fn keepa_client(&self, sim: &TestSim) -> JobClient {
        JobClient::Keepa(KeepaClient::new(
            reqwest::Client::new(),
            &sim.base_url(),
            "test-key",
            "1",
        ))
    }

    /// A context draining StockX jobs with `api_key`, not cancelled.
    pub(crate) fn stockx_context(&self, sim: &TestSim, api_key: &str) -> StreamContext {
        self.context(self.stockx_client(sim, api_key), CancellationToken::new())
    }

    /// A context draining Keepa jobs, not cancelled.
    pub(crate) fn keepa_context(&self, sim: &TestSim) -> StreamContext {
        self.context(self.keepa_client(sim), CancellationToken::new())
    }

    pub(crate) fn context(&self, client: JobClient, cancel: CancellationToken) -> StreamContext {
        let account = self.config.accounts[0].clone();
        let pacer = Pacer::new(self.quota.clone(), account.provider.as_str(), &account.id);
        let runner = JobRunner::new(
            client,
            Some(pacer),
            Arc::clone(&self.ledger) as Arc<dyn marketsync::store::LedgerStore>,
        );
        let dyn_ledger: Arc<dyn LedgerStore> = self.ledger.clone();
        StreamContext {
            stream: account.streams[0].clone(),
            account: Arc::new(account),
            ledger: dyn_ledger,
            work: StreamWork::shape(Arc::new(runner)),
            documents_dir: self.config.data_dir.join("documents"),
            owner: "test:1@localhost".to_string(),
            abort: cancel.clone(),
            cancel,
            progress: None,
            chaos: None,
            metrics: Default::default(),
            permits: Default::default(),
            polls: None,
            lease_deadline: None,
        }
    }

    pub(crate) fn enqueue(
        &self,
        provider: &str,
        sku: &str,
        size: Option<&str>,
        priority: JobPriority,
    ) -> EnqueueOutcome {
        enqueue(
            &*self.ledger,
            &NewJob {
                provider: provider.to_string(),
                sku: sku.to_string(),
                size: size.map(str::to_string),
                priority,
                source: "test".to_string(),
            },
        )
        .expect("enqueue")
    }

    pub(crate) fn job(&self, id: i64) -> store::Job {
        store::get_job(&*self.ledger, id)
            .expect("get")
            .expect("job exists")
    }

    pub(crate) fn states(&self) -> Vec<(String, JobState, i64)> {
        let mut jobs: Vec<_> = list_jobs(&*self.ledger, None, 1000)
            .expect("list")
            .into_iter()
            .map(|job| (job.sku, job.state, job.attempts))
            .collect();
        jobs.sort_by(|a, b| a.0.cmp(&b.0));
        jobs
    }
}

pub(crate) fn big() -> BucketSpec {
    BucketSpec::new(1e6, 1e6)
}

pub(crate) async fn keepa_stats(sim: &TestSim) -> serde_json::Value {
    reqwest::get(format!("{}/_sim/keepa/stats", sim.base_url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}

pub(crate) async fn stockx_stats(sim: &TestSim) -> serde_json::Value {
    reqwest::get(format!("{}/_sim/stockx/stats", sim.base_url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}

#[tokio::test]
async fn dedupe_and_priority_decide_what_a_small_budget_buys() {
    let mut config = SimConfig::default();
    // Two cold lookups: search, variants and market data each.
    config.stockx.hourly_budget = 6;
    let sim = TestSim::start(config).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let a = fixture.enqueue("stockx", "SKU-A", Some("10"), JobPriority::Background);
    fixture.enqueue("stockx", "SKU-B", Some("10"), JobPriority::Background);
    fixture.enqueue("stockx", "SKU-C", Some("10"), JobPriority::Hot);
    fixture.enqueue("stockx", "SKU-D", Some("9.5"), JobPriority::Manual);
    // A again, hot: merged into the pending job, which now ranks as hot and is older than C.
    let merged = fixture.enqueue("stockx", "SKU-A", Some("10"), JobPriority::Hot);
    assert_eq!(
        merged,
        EnqueueOutcome::Merged {
            id: a.id(),
            priority: JobPriority::Hot
        }
    );

    let context = fixture.stockx_context(&sim, "key-1");
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { ref reason, .. } if reason == "quota"),
        "{outcome:?}"
    );
    // The budget bought D (manual) then A (hot, older than C); C's search got the 429.
    assert_eq!(
        fixture.states(),
        vec![
            ("SKU-A".to_string(), JobState::Succeeded, 0),
            ("SKU-B".to_string(), JobState::Pending, 0),
            ("SKU-C".to_string(), JobState::Pending, 0),
            ("SKU-D".to_string(), JobState::Succeeded, 0),
        ]
    );
    let stats = stockx_stats(&sim).await;
    assert_eq!(
        (
            stats["search_calls"].as_u64(),
            stats["variants_calls"].as_u64(),
            stats["market_data_calls"].as_u64(),
            stats["throttled"].as_u64()
        ),
        (Some(3), Some(2), Some(2), Some(1))
    );
    // The prices are what the simulator served; StockX's market data has no last sale.
    let prices = market_prices(&*fixture.ledger, 10).expect("prices");
    assert_eq!(prices.len(), 2);
    for price in prices {
        let (ask, bid) = marketsync::sim::stockx::market_for(
            42,
            &price.sku,
            price.size.as_deref().unwrap_or(""),
        );
        assert_eq!(
            (price.lowest_ask, price.highest_bid, price.last_sale),
            (ask, bid, None)
        );
        assert_eq!(price.currency, "USD");
    }
    let runs = recent_runs(&*fixture.ledger, 5).expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (
            runs[0].jobs_run,
            runs[0].succeeded,
            runs[0].deferred,
            runs[0].calls_made,
            runs[0].outcome.as_str()
        ),
        (3, 2, 1, 7, "cooldown")
    );
}

#[tokio::test]
async fn a_429_defers_the_job_without_consuming_an_attempt_and_cools_the_account_down() {
    let sim = TestSim::start(SimConfig::default()).await;
    sim.sim.set_faults(crate::common::schedule(
        "stockx.marketData",
        1,
        marketsync::sim::FaultKind::Throttle,
    ));
    let fixture =
        JobsFixture::new("stockx", "quota_cooldown = \"10m\"", &[("stockx", big())]).await;
    let id = fixture
        .enqueue("stockx", "SKU-Q", Some("10"), JobPriority::Hot)
        .id();
    let context = fixture.stockx_context(&sim, "key-1");
    let before = now_ts();
    let outcome = context.run_once().await.expect("run");
    let RunOutcome::CoolingDown { until, reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(reason, "quota");
    assert!(until >= before + 600, "until {until}");
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    assert!(job.not_before >= before + 600);
    let cooldown = fixture
        .ledger
        .active_cooldown("stockx:acct", now_ts())
        .expect("cooldown")
        .expect("a cooldown is persisted");
    assert_eq!(cooldown.reason, "quota");
    // The next run calls nothing.
    let again = context.run_once().await.expect("run");
    assert!(matches!(again, RunOutcome::CoolingDown { .. }), "{again:?}");
    assert_eq!(
        stockx_stats(&sim).await["market_data_calls"].as_u64(),
        Some(1)
    );
}

#[tokio::test]
async fn a_style_the_catalog_does_not_know_ends_the_job_as_not_found() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let id = fixture
        .enqueue("stockx", "UNKNOWN-1", Some("10"), JobPriority::Manual)
        .id();
    let context = fixture.stockx_context(&sim, "key-1");
    let outcome = context.run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 0,
            failed: 0
        }
    );
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::NotFound, 0));
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("UNKNOWN-1"),
        "{:?}",
        job.error
    );
    context.run_once().await.expect("run");
    // One search found nothing; no variants or market data were asked.
    let stats = stockx_stats(&sim).await;
    assert_eq!(
        (
            stats["search_calls"].as_u64(),
            stats["variants_calls"].as_u64(),
            stats["market_data_calls"].as_u64()
        ),
        (Some(1), Some(0), Some(0))
    );
    assert!(market_prices(&*fixture.ledger, 10)
        .expect("prices")
        .is_empty());
}

#[tokio::test]
async fn a_401_starts_an_auth_cooldown_without_a_retry_loop() {
    let mut config = SimConfig::default();
    config.stockx.rejected_api_keys = vec!["revoked-key".to_string()];
    let sim = TestSim::start(config).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let id = fixture
        .enqueue("stockx", "SKU-X", Some("10"), JobPriority::Manual)
        .id();
    fixture.enqueue("stockx", "SKU-Y", Some("10"), JobPriority::Manual);
    let context = fixture.stockx_context(&sim, "revoked-key");
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { ref reason, .. } if reason == "auth"),
        "{outcome:?}"
    );
    // One call (the catalog search), one token refresh and one retry of the call; then
    // the account stops.
    let stats = stockx_stats(&sim).await;
    assert_eq!(
        (
            stats["search_calls"].as_u64(),
            stats["token_calls"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .starts_with("auth: "),
        "{:?}",
        job.error
    );
    let cooldown = fixture
        .ledger
        .active_cooldown("stockx:acct", now_ts())
        .expect("cooldown")
        .expect("an auth cooldown is persisted");
    assert_eq!(cooldown.reason, "auth");
    assert!(cooldown.until_at >= now_ts() + 3500);
    for _ in 0..3 {
        let again = context.run_once().await.expect("run");
        assert!(
            matches!(again, RunOutcome::CoolingDown { ref reason, .. } if reason == "auth"),
            "{again:?}"
        );
    }
    let stats = stockx_stats(&sim).await;
    assert_eq!(
        (
            stats["search_calls"].as_u64(),
            stats["market_data_calls"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert!(
        list_jobs(&*fixture.ledger, Some(JobState::Pending), 10)
            .expect("list")
            .len()
            == 2
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_the_job_fails_and_reset_failed_requeues_it() {
    let mut config = SimConfig::default();
    config.faults.server_error = 1.0;
    let sim = TestSim::start(config).await;
    let fixture = JobsFixture::new(
        "stockx",
        // 3 s: `not_before` is kept in whole seconds, so a 1 s backoff set late in a
        // second can come due inside the same run.
        "max_attempts = 3\nretry_base = \"3s\"\nretry_max = \"3s\"",
        &[("stockx", big())],
    )
    .await;
    let id = fixture
        .enqueue("stockx", "SKU-5", Some("10"), JobPriority::Hot)
        .id();
    let context = fixture.stockx_context(&sim, "key-1");
    let outcome = context.run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 0,
            failed: 1
        }
    );
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 1));
    assert!(job.not_before > now_ts() - 1, "retried later, not at once");
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("http 500"),
        "{:?}",
        job.error
    );
    // Each run retries only once the backoff has passed, until max_attempts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fixture.job(id).state != JobState::Failed {
        assert!(
            Instant::now() < deadline,
            "job never failed: {:?}",
            fixture.job(id)
        );
        context.run_once().await.expect("run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = fixture.job(id);
    assert_eq!(job.attempts, 3);
    assert_eq!(stockx_stats(&sim).await["server_errors"].as_u64(), Some(3));
    // An operator re-queues it.
    sim.sim.set_faults(marketsync::sim::SimFaults::default());
    assert_eq!(
        reset_failed(&*fixture.ledger, Some("stockx")).expect("reset"),
        1
    );
    context.run_once().await.expect("run");
    assert_eq!(fixture.job(id).state, JobState::Succeeded);
}

#[tokio::test]
async fn a_running_job_whose_worker_died_is_rescued_after_its_lease() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    // Queued ten minutes ago.
    let stuck = store::enqueue_at(
        &*fixture.ledger,
        &NewJob {
            provider: "stockx".to_string(),
            sku: "SKU-STUCK".to_string(),
            size: Some("10".to_string()),
            priority: JobPriority::Hot,
            source: "test".to_string(),
        },
        now_ts() - 700,
    )
    .expect("enqueue")
    .id();
    let live = fixture
        .enqueue("stockx", "SKU-LIVE", Some("10"), JobPriority::Hot)
        .id();
    let dead = Claimer {
        provider: "stockx",
        account: "other",
        stream: "market_data",
        owner: "dead-worker",
        fence: marketsync::store::WriteFence::Unfenced,
    };
    // The dead worker claimed the first job long ago (its lease has expired); a live
    // worker holds the second under a lease that has not.
    let taken = store::claim(&*fixture.ledger, &dead, 1, 60, now_ts() - 600).expect("claim");
    assert_eq!(taken[0].id, stuck);
    let held = store::claim(
        &*fixture.ledger,
        &Claimer {
            owner: "live-worker",
            ..dead.clone()
        },
        1,
        600,
        now_ts(),
    )
    .expect("claim");
    assert_eq!(held[0].id, live);

    let context = fixture.stockx_context(&sim, "key-1");
    context.run_once().await.expect("run");
    let rescued = fixture.job(stuck);
    assert_eq!((rescued.state, rescued.attempts), (JobState::Succeeded, 0));
    let untouched = fixture.job(live);
    assert_eq!(untouched.state, JobState::Running);
    assert_eq!(untouched.lease_owner.as_deref(), Some("other/live-worker"));
    let runs = recent_runs(&*fixture.ledger, 1).expect("runs");
    assert_eq!((runs[0].rescued, runs[0].succeeded), (1, 1));
    assert_eq!(
        stockx_stats(&sim).await["market_data_calls"].as_u64(),
        Some(1)
    );
}

/// A Keepa simulator refilling 10 tokens every second (600/min), starting at `initial`.
fn fast_keepa(initial: i64) -> SimConfig {
    let mut config = SimConfig::default();
    config.keepa.refill_rate = 600;
    config.keepa.refill_period = Duration::from_secs(1);
    config.keepa.initial_tokens = Some(initial);
    config
}

#[tokio::test]
async fn keepa_negative_balance_waits_for_the_refill_without_spinning() {
    let sim = TestSim::start(fast_keepa(5)).await;
    let fixture = JobsFixture::new("keepa", "batch = 20", &[]).await;
    for index in 0..40 {
        fixture.enqueue(
            "keepa",
            &format!("B{index:09}"),
            None,
            JobPriority::Background,
        );
    }
    let context = fixture.keepa_context(&sim);
    let started = Instant::now();
    let outcome = context.run_once().await.expect("run");
    let elapsed = started.elapsed();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 40,
            failed: 0
        }
    );
    // 5 tokens, 20 spent: -15. The second request waits for 35 tokens at 10/s (3.5 s
    // after the next refill) instead of earning 429s.
    let stats = keepa_stats(&sim).await;
    assert_eq!(stats["product_calls"].as_u64(), Some(2), "{stats}");
    assert_eq!(stats["throttled"].as_u64(), Some(0), "{stats}");
    assert_eq!(stats["min_balance"].as_i64(), Some(-15), "{stats}");
    assert!(elapsed >= Duration::from_millis(3_400), "{elapsed:?}");
    let quota = fixture.quota.stats().await.expect("quota stats");
    assert_eq!(quota.grants, 2, "{quota:?}");
    // One scheduled wake-up for the one wait (a stale extra at most), never a poll loop.
    assert!(
        quota.wakeups <= 2 && quota.timers_scheduled <= 2,
        "{quota:?}"
    );
    // Every product is a complete snapshot with its one-year average.
    let products = store::keepa_products(&*fixture.ledger, 100).expect("products");
    assert_eq!(products.len(), 40);
    assert!(products
        .iter()
        .all(|product| product.avg_365_new.is_some() && product.history_points == 52));
}

#[tokio::test]
async fn keepa_partial_and_unknown_products_are_never_written_as_data() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("keepa", "max_attempts = 1", &[]).await;
    let good = fixture
        .enqueue("keepa", "B000000001", None, JobPriority::Hot)
        .id();
    let partial = fixture
        .enqueue("keepa", "PARTIAL0001", None, JobPriority::Hot)
        .id();
    let unknown = fixture
        .enqueue("keepa", "UNKNOWN0001", None, JobPriority::Hot)
        .id();
    let context = fixture.keepa_context(&sim);
    context.run_once().await.expect("run");
    assert_eq!(
        keepa_stats(&sim).await["product_calls"].as_u64(),
        Some(1),
        "one batched request"
    );
    assert_eq!(fixture.job(good).state, JobState::Succeeded);
    let partial = fixture.job(partial);
    assert_eq!(partial.state, JobState::Failed);
    assert!(
        partial
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("incomplete product, nothing written"),
        "{:?}",
        partial.error
    );
    assert_eq!(fixture.job(unknown).state, JobState::NotFound);
    let products = store::keepa_products(&*fixture.ledger, 10).expect("products");
    let asins: Vec<&str> = products
        .iter()
        .map(|product| product.asin.as_str())
        .collect();
    assert_eq!(asins, ["B000000001"]);
}

#[tokio::test]
async fn backfill_never_delays_a_hot_keepa_job_beyond_one_grant() {
    let sim = TestSim::start(fast_keepa(5)).await;
    let fixture = JobsFixture::new("keepa", "batch = 20", &[]).await;
    for index in 0..200 {
        fixture.enqueue(
            "keepa",
            &format!("BACKFILL{index:04}"),
            None,
            JobPriority::Background,
        );
    }
    let cancel = CancellationToken::new();
    let context = fixture.context(fixture.keepa_client(&sim), cancel.clone());
    let drain = tokio::spawn(async move { context.run_once().await });
    // Once backfill is flowing (and the balance is negative), a fresh deal arrives.
    let sim_ref = &sim;
    let flowing = wait_until_async(Duration::from_secs(20), || async move {
        keepa_stats(sim_ref).await["served"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert!(flowing, "backfill never started");
    fixture.enqueue("keepa", "HOTDEAL001", None, JobPriority::Hot);
    let served_at_enqueue = keepa_stats(&sim).await["served"].as_u64().unwrap_or(0) as usize;
    let ledger = &fixture.ledger;
    let done = wait_until_async(Duration::from_secs(20), || async move {
        list_jobs(&**ledger, Some(JobState::Succeeded), 1000)
            .expect("list")
            .iter()
            .any(|job| job.sku == "HOTDEAL001")
    })
    .await;
    assert!(done, "the hot job was never served");
    cancel.cancel();
    let _ = drain.await;
    let stats = keepa_stats(&sim).await;
    let requests: Vec<Vec<String>> =
        serde_json::from_value(stats["requests"].clone()).expect("requests");
    let hot_index = requests
        .iter()
        .position(|asins| asins.iter().any(|asin| asin == "HOTDEAL001"))
        .expect("hot request served");
    // At most the one backfill request that already held its claim went first.
    assert!(
        hot_index <= served_at_enqueue + 1,
        "hot request #{hot_index}, {served_at_enqueue} served at enqueue"
    );
    // A hot request carries no backfill ASINs (batches never mix priorities).
    assert_eq!(requests[hot_index], vec!["HOTDEAL001".to_string()]);
    assert_eq!(stats["throttled"].as_u64(), Some(0));
}

/// Polls an async `check` every 50 ms until it is true or `deadline` passes.
async fn wait_until_async<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_daemon_drains_jobs_enqueued_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
data_dir = "{data}"

[simulator]
enabled = true

[[accounts]]
id = "stockx-main"
provider = "stockx"
[accounts.streams.market_data]
interval = "1s"

[[accounts]]
id = "keepa-main"
provider = "keepa"
[accounts.streams.products]
interval = "1s"
"#,
        data = dir.path().display()
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, text).expect("write config");
    let cli = |args: &[&str]| {
        let output = marketsync()
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .expect("run marketsync");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(cli(&[
        "enqueue",
        "stockx",
        "DD1391-100",
        "--size",
        "10",
        "--priority",
        "hot"
    ])
    .starts_with("job 1 queued"));
    cli(&["enqueue", "stockx", "DD1391-100", "--size", "11"]);
    cli(&[
        "enqueue",
        "stockx",
        "UNKNOWN-9",
        "--size",
        "10",
        "--priority",
        "background",
    ]);
    cli(&["enqueue", "keepa", "B000000001", "--priority", "background"]);
    cli(&["enqueue", "keepa", "B000000002"]);
    assert!(
        cli(&["enqueue", "keepa", "b000000002", "--priority", "hot"])
            .starts_with("merged into pending job")
    );
    let table = cli(&["jobs", "--state", "pending"]);
    assert!(table.starts_with("ID  PROVIDER"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");

    let mut daemon = DaemonProcess::spawn(&config_path);
    let drained = wait_until(Duration::from_secs(30), || {
        let output = marketsync()
            .arg("--config")
            .arg(&config_path)
            .args(["jobs", "--json"])
            .output()
            .expect("jobs --json");
        let jobs: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).unwrap_or_default();
        jobs.len() == 5
            && jobs
                .iter()
                .all(|job| job["state"] != "pending" && job["state"] != "running")
    })
    .await;
    assert!(drained, "jobs not drained; daemon log:\n{}", daemon.logs());
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0),
        "{}",
        daemon.logs()
    );

    let ledger = SqliteLedger::open(&dir.path().join("marketsync.db")).expect("ledger");
    let mut states: Vec<(String, Option<String>, JobState)> = list_jobs(&ledger, None, 10)
        .expect("list")
        .into_iter()
        .map(|job| (job.sku, job.size, job.state))
        .collect();
    states.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        states,
        vec![
            ("B000000001".to_string(), None, JobState::Succeeded),
            ("B000000002".to_string(), None, JobState::Succeeded),
            (
                "DD1391-100".to_string(),
                Some("10".to_string()),
                JobState::Succeeded
            ),
            (
                "DD1391-100".to_string(),
                Some("11".to_string()),
                JobState::Succeeded
            ),
            (
                "UNKNOWN-9".to_string(),
                Some("10".to_string()),
                JobState::NotFound
            ),
        ]
    );
    assert_eq!(market_prices(&ledger, 10).expect("prices").len(), 2);
    assert_eq!(
        store::keepa_products(&ledger, 10).expect("products").len(),
        2
    );
    let failed = cli(&["jobs", "--state", "not_found", "--json"]);
    assert!(failed.contains("UNKNOWN-9"), "{failed}");
}
