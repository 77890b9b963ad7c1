//! The freshness scheduler (issue 15 point 5): tracked keys queued within each provider's
//! budget, hot when new and stalest first when stale, manual refreshes first and from the
//! reserve, passes recorded and shown; over a real SQLite file, a real TokenManager, the
//! simulator over real HTTP, the real binary for the CLI and the supervised daemon.

use std::sync::Arc;
use std::time::Duration;

use marketsync::config::Config;
use marketsync::domain::now_ts;
use marketsync::provider::keepa::KeepaClient;
use marketsync::provider::stockx::{StockxClient, StockxCredentials, StockxEndpoints};
use marketsync::quota::{
    BucketKey, BucketSpec, Clock, ManualClock, Pacer, Priority, QuotaBackend, QuotaConfig,
    QuotaHandle, TokenManager,
};
use marketsync::shapes::jobs::scheduler::{FreshnessSettings, ProviderAccounts, Scheduler};
use marketsync::shapes::jobs::{JobClient, JobPriority, JobRunner, JobState, NewJob};
use marketsync::shapes::{StreamContext, StreamWork};
use marketsync::sim::SimConfig;
use marketsync::store::jobs as store;
use marketsync::store::tracked;
use marketsync::store::{LedgerStore, SqliteLedger};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{marketsync, wait_until, DaemonProcess, TestSim};
use crate::suite::http::{Server, TOKEN};

/// A ledger, a config with one account of `provider`, and a TokenManager whose bucket
/// for the provider is `spec` with reserve share `reserve`.
struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    ledger: Arc<SqliteLedger>,
    quota: QuotaHandle,
    quota_config: QuotaConfig,
}

impl Fixture {
    async fn new(provider: &str, spec: BucketSpec, reserve: f64) -> Fixture {
        Fixture::with_clock(provider, spec, reserve, Clock::Tokio).await
    }

    /// [`Fixture::new`] with the TokenManager on `clock`.
    async fn with_clock(provider: &str, spec: BucketSpec, reserve: f64, clock: Clock) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let stream = if provider == "keepa" {
            "products]\nbatch = 100"
        } else {
            "market_data]"
        };
        let text = format!(
            "data_dir = \"{}\"\n[simulator]\nenabled = true\n[[accounts]]\nid = \"acct\"\nprovider = \"{provider}\"\n[accounts.streams.{stream}\n",
            dir.path().display()
        );
        let config = Config::parse(&text, "freshness-test.toml").expect("valid config");
        let ledger = Arc::new(SqliteLedger::open(&config.database_path()).expect("ledger"));
        let mut quota_config = QuotaConfig::new(QuotaBackend::InProcess)
            .with_spec(provider, "*", spec)
            .with_clock(clock);
        quota_config.reserve_share = reserve;
        let (actor, _join) = TokenManager::spawn(quota_config.clone())
            .await
            .expect("token manager");
        Fixture {
            _dir: dir,
            config,
            ledger,
            quota: QuotaHandle::new(actor),
            quota_config,
        }
    }

    fn scheduler(&self, provider: &str) -> Scheduler {
        Scheduler::new(
            Arc::clone(&self.ledger) as Arc<dyn marketsync::store::LedgerStore>,
            self.quota.clone(),
            self.quota_config.clone(),
            vec![ProviderAccounts {
                provider: provider.to_string(),
                scopes: vec!["acct".to_string()],
            }],
            FreshnessSettings::default(),
            None,
        )
    }

    fn track(&self, provider: &str, sku: &str, size: Option<&str>) {
        assert!(
            tracked::track(&*self.ledger, provider, sku, size, "test", now_ts()).expect("track"),
            "{sku} tracked twice"
        );
    }

    /// Records a finished lookup of the key, `age` seconds ago.
    fn fetched(&self, provider: &str, sku: &str, size: Option<&str>, state: &str, age: i64) {
        let key = store::dedupe_key(provider, sku, size);
        let at = now_ts() - age;
        self.ledger.with_conn(|conn| {
            conn.execute(
                "INSERT INTO jobs (provider, sku, size, dedupe_key, priority, state, attempts, not_before, created_at, updated_at, finished_at, source)
                 VALUES (?1, ?2, ?3, ?4, 100, ?5, 0, ?6, ?6, ?6, ?6, 'test')",
                rusqlite::params![provider, sku, size, key, state, at],
            )
            .expect("insert job");
        });
    }

    fn pending(&self) -> Vec<store::Job> {
        let mut jobs =
            store::list_jobs(&*self.ledger, Some(JobState::Pending), 1000).expect("jobs");
        jobs.sort_by_key(|job| job.id);
        jobs
    }

    fn context(&self, client: JobClient) -> StreamContext {
        let account = self.config.accounts[0].clone();
        let pacer = Pacer::new(self.quota.clone(), account.provider.as_str(), &account.id);
        let runner = JobRunner::new(
            client,
            Some(pacer),
            Arc::clone(&self.ledger) as Arc<dyn marketsync::store::LedgerStore>,
        );
        let dyn_ledger: Arc<dyn LedgerStore> = self.ledger.clone();
        let cancel = CancellationToken::new();
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
}

fn stockx_client(sim: &TestSim) -> JobClient {
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
            api_key: "test-key".to_string(),
        },
    ))
}

async fn sim_stats(sim: &TestSim, provider: &str) -> Value {
    reqwest::get(format!("{}/_sim/{provider}/stats", sim.base_url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}

/// One call an hour, burst 5: what the bucket holds now is the budget.
fn five_tokens() -> BucketSpec {
    BucketSpec::new(1.0 / 3600.0, 5.0)
}

#[tokio::test]
async fn a_pass_queues_new_keys_hot_then_the_stalest_within_the_budget_left() {
    // 5 tokens, reserve 0.2 × 5 = 1: four jobs fit before the next pass.
    let fixture = Fixture::new("stockx", five_tokens(), 0.2).await;
    for (sku, age) in [
        ("OLD-1", 7_200),
        ("OLDEST", 90_000),
        ("OLD-2", 5_000),
        ("FRESH", 60),
    ] {
        fixture.track("stockx", sku, Some("10"));
        fixture.fetched("stockx", sku, Some("10"), "succeeded", age);
    }
    // A key whose last lookup found nothing is looked at again once stale, like any other.
    fixture.track("stockx", "GONE", Some("9"));
    fixture.fetched("stockx", "GONE", Some("9"), "not_found", 4_000);
    fixture.track("stockx", "NEW-A", Some("10"));
    fixture.track("stockx", "NEW-B", Some("10"));
    // A key with a live job is not queued again.
    fixture.track("stockx", "QUEUED", Some("10"));
    store::enqueue(
        &*fixture.ledger,
        &NewJob {
            provider: "stockx".into(),
            sku: "QUEUED".into(),
            size: Some("10".into()),
            priority: JobPriority::Background,
            source: "test".into(),
        },
    )
    .expect("enqueue");

    let scheduler = fixture.scheduler("stockx");
    let records = scheduler.pass().await;
    assert_eq!(records.len(), 1, "{records:?}");
    let pass = &records[0];
    // 4 budget − 1 live job = 3 jobs: both new keys hot, then the stalest.
    let queued: Vec<(String, i64)> = fixture
        .pending()
        .into_iter()
        .filter(|job| job.source == "freshness")
        .map(|job| (job.sku, job.priority))
        .collect();
    assert_eq!(
        queued,
        vec![
            ("NEW-A".to_string(), 150),
            ("NEW-B".to_string(), 150),
            ("OLDEST".to_string(), 100)
        ]
    );
    assert_eq!(pass.tracked, 8);
    assert_eq!(pass.fresh, 1);
    assert_eq!(pass.live, 1);
    assert_eq!((pass.selected, pass.hot, pass.background), (3, 2, 1));
    assert_eq!(pass.deferred, 3, "OLD-1, OLD-2 and GONE wait");
    assert!((pass.budget_left - 3.0).abs() < 0.1, "{pass:?}");
    assert_eq!(pass.outcome, "ok");

    // The next pass finds the budget taken by the live jobs: nothing more is queued.
    let again = scheduler.pass().await;
    assert_eq!(again[0].selected, 0, "{again:?}");
    assert_eq!(again[0].live, 4);
    assert_eq!(again[0].outcome, "no_budget");
    assert_eq!(fixture.pending().len(), 4);

    // Both passes are recorded, newest first.
    let runs = tracked::recent_passes(&*fixture.ledger, Some("stockx"), 10).expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].outcome, "no_budget");
    assert_eq!(runs[1].selected, 3);
    assert_eq!(runs[1].stale_after, 3600);
}

#[tokio::test]
async fn the_budget_is_what_the_token_manager_says_is_left() {
    let fixture = Fixture::new("stockx", five_tokens(), 0.0).await;
    for index in 0..10 {
        fixture.track("stockx", &format!("KEY-{index}"), Some("10"));
    }
    // Three tokens spent elsewhere (another process's calls, a manual refresh): two left.
    let key = BucketKey::new("stockx", "marketData", "acct");
    fixture
        .quota
        .acquire(
            vec![key],
            3.0,
            Priority::Background,
            tokio::time::Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("grant");
    let records = fixture.scheduler("stockx").pass().await;
    assert_eq!(records[0].selected, 2, "{records:?}");
    assert_eq!(records[0].deferred, 8);
    assert_eq!(fixture.pending().len(), 2);
}

#[tokio::test]
async fn a_fractional_budget_queues_the_nearest_whole_number_of_jobs() {
    // 2.7 tokens and practically no refill: 3 jobs, not 2, so the drainer still holds one
    // (waiting for its grant) when the next pass comes instead of idling while the bucket
    // refills. 2.4 tokens: 2.
    for (tokens, expected) in [(2.7, 3), (2.4, 2)] {
        let fixture = Fixture::new("stockx", BucketSpec::new(1e-6, tokens), 0.0).await;
        for index in 0..10 {
            fixture.track("stockx", &format!("KEY-{index}"), Some("10"));
        }
        let records = fixture.scheduler("stockx").pass().await;
        assert_eq!(
            (records[0].selected, records[0].deferred),
            (expected, 10 - expected),
            "{tokens} tokens: {records:?}"
        );
        assert!(
            (records[0].budget_left - tokens).abs() < 0.01,
            "{records:?}"
        );
    }
}

/// Waits (bounded) until the drainer asks the TokenManager for its next grant again.
async fn drainer_waiting(quota: &QuotaHandle) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < end {
        if quota.stats().await.map(|stats| stats.queued).unwrap_or(0) >= 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_budget_is_spent_whole_in_every_hour_and_never_beyond() {
    // An hourly budget of 10 calls, the hour shortened to 60 s of a manual clock: paced
    // at the full 10 an hour with a burst of 1.25 and capped at 10 in any hour. A bucket
    // alone must refill at (10 − 1.25)/h to keep every hour within 10 and so makes 9 calls
    // in some; the cap lets the real drainer over the simulator make exactly 10 in every
    // clock hour and never 11 in any hour.
    let mut sim_config = SimConfig::default();
    // The simulator counts wall-clock hours; this test counts its own (manual) hours.
    sim_config.stockx.hourly_budget = u32::MAX;
    let sim = TestSim::start(sim_config).await;
    let hour = Duration::from_secs(60);
    let clock = ManualClock::new();
    let fixture = Fixture::with_clock(
        "stockx",
        BucketSpec::windowed(10.0, hour, 1.25),
        0.0,
        Clock::Manual(clock.clone()),
    )
    .await;
    // One cold style (2 catalog calls) in 18 sizes and a warm one: more than 3 hours' work.
    for size in [
        "4", "4.5", "5", "5.5", "6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11",
        "11.5", "12", "12.5",
    ] {
        for style in ["WIN-A", "WIN-B"] {
            fixture.track("stockx", style, Some(size));
        }
    }
    let records = fixture.scheduler("stockx").pass().await;
    assert!(records[0].selected >= 1, "{records:?}");
    for job in tracked::key_states(&*fixture.ledger, "stockx").expect("keys") {
        store::enqueue(
            &*fixture.ledger,
            &NewJob {
                provider: "stockx".into(),
                sku: job.sku,
                size: job.size,
                priority: JobPriority::Background,
                source: "test".into(),
            },
        )
        .expect("enqueue");
    }
    let context = fixture.context(stockx_client(&sim));
    let cancel = context.cancel.clone();
    let drainer = tokio::spawn(async move { context.run_once().await });

    // Time moves in steps of 0.5 s; a grant is stamped with the step it came at, and the
    // next step waits until the drainer asks again (so no grant is late for it).
    let step = Duration::from_millis(500);
    let mut grants: Vec<Duration> = Vec::new();
    assert!(
        drainer_waiting(&fixture.quota).await,
        "the drainer never asked"
    );
    let mut seen = fixture.quota.stats().await.expect("stats").grants;
    grants.extend(std::iter::repeat_n(Duration::ZERO, seen as usize));
    while clock.elapsed() + step < hour * 3 {
        clock.advance(step);
        loop {
            let now = fixture.quota.stats().await.expect("stats").grants;
            if now == seen {
                break;
            }
            grants.extend(std::iter::repeat_n(clock.elapsed(), (now - seen) as usize));
            seen = now;
            assert!(
                drainer_waiting(&fixture.quota).await,
                "the drainer stopped asking"
            );
        }
    }
    cancel.cancel();
    clock.advance(hour);
    let _ = drainer.await;

    for index in 0..3u32 {
        let (from, to) = (hour * index, hour * (index + 1));
        let within = grants.iter().filter(|&&at| at >= from && at < to).count();
        assert_eq!(within, 10, "hour {index}: {grants:?}");
    }
    for &from in &grants {
        let within = grants
            .iter()
            .filter(|&&at| at >= from && at < from + hour)
            .count();
        assert!(
            within <= 10,
            "{within} calls in the hour from {from:?}: {grants:?}"
        );
    }
    let stats = sim_stats(&sim, "stockx").await;
    let calls = ["search_calls", "variants_calls", "market_data_calls"]
        .iter()
        .map(|field| stats[*field].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(calls >= 30, "{stats}");
    assert_eq!(stats["throttled"].as_u64(), Some(0), "{stats}");
}

#[tokio::test]
async fn a_manual_refresh_is_served_from_the_reserve_the_scheduler_leaves() {
    let sim = TestSim::start(SimConfig::default()).await;
    // 5 tokens, reserve 0.2 × 5 = 1.
    // With the bucket at its reserve, a pass plans nothing, yet a manual refresh is
    // served at once from the reserve (no refill needed: one call an hour).
    let fixture = Fixture::new("stockx", five_tokens(), 0.2).await;
    fixture.track("stockx", "BG-X", Some("10"));
    // The refreshed key was looked up before (as a tracked key is by its first pass): its
    // catalog ids are cached and the refresh is one market-data call. The first lookup
    // spends 3 of the 5 tokens (catalog search, variants, market data).
    let manual = |priority: JobPriority| NewJob {
        provider: "stockx".into(),
        sku: "MANUAL-2".into(),
        size: Some("10".into()),
        priority,
        source: "api".into(),
    };
    store::enqueue(&*fixture.ledger, &manual(JobPriority::Background)).expect("enqueue");
    fixture
        .context(stockx_client(&sim))
        .run_once()
        .await
        .expect("first lookup");
    let ok_before = sim_stats(&sim, "stockx").await["ok"].as_u64().unwrap_or(0);
    let key = BucketKey::new("stockx", "marketData", "acct");
    fixture
        .quota
        .acquire(
            vec![key],
            1.0,
            Priority::Background,
            tokio::time::Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("grant");
    let records = fixture.scheduler("stockx").pass().await;
    assert_eq!(
        (records[0].selected, records[0].deferred),
        (0, 1),
        "{records:?}"
    );
    assert_eq!(records[0].outcome, "no_budget");
    store::enqueue(&*fixture.ledger, &manual(JobPriority::Manual)).expect("enqueue");
    let started = tokio::time::Instant::now();
    fixture
        .context(stockx_client(&sim))
        .run_once()
        .await
        .expect("drain");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for a refill"
    );
    let served = store::list_jobs(&*fixture.ledger, Some(JobState::Succeeded), 10).expect("jobs");
    assert_eq!(served.len(), 2, "the first lookup and the manual refresh");
    assert!(served.iter().all(|job| job.sku == "MANUAL-2"), "{served:?}");
    let stats = sim_stats(&sim, "stockx").await;
    assert_eq!(stats["ok"].as_u64(), Some(ok_before + 1), "{stats}");
    assert_eq!(stats["throttled"].as_u64(), Some(0), "{stats}");
}

#[tokio::test]
async fn a_manual_keepa_refresh_rides_alone_ahead_of_the_planned_batches() {
    let mut config = SimConfig::default();
    config.keepa.initial_tokens = Some(1_000);
    let sim = TestSim::start(config).await;
    let fixture = Fixture::new("keepa", BucketSpec::keepa_per_minute(20.0), 0.0).await;
    for index in 0..150 {
        fixture.track("keepa", &format!("B00000{index:04}"), None);
    }
    let records = fixture.scheduler("keepa").pass().await;
    assert_eq!(records[0].hot, 150, "{records:?}");
    store::enqueue(
        &*fixture.ledger,
        &NewJob {
            provider: "keepa".into(),
            sku: "BMANUAL001".into(),
            size: None,
            priority: JobPriority::Manual,
            source: "api".into(),
        },
    )
    .expect("enqueue");
    let client = JobClient::Keepa(KeepaClient::new(
        reqwest::Client::new(),
        &sim.base_url(),
        "test-key",
        "1",
    ));
    fixture.context(client).run_once().await.expect("drain");
    let stats = sim_stats(&sim, "keepa").await;
    let requests: Vec<Vec<String>> =
        serde_json::from_value(stats["requests"].clone()).expect("requests");
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[0], vec!["BMANUAL001".to_string()]);
    assert_eq!(requests[1].len(), 100);
    assert_eq!(requests[2].len(), 50);
    assert_eq!(stats["throttled"].as_u64(), Some(0));
    // Everything tracked was fetched: the next pass finds every key fresh.
    let records = fixture.scheduler("keepa").pass().await;
    assert_eq!(
        (records[0].fresh, records[0].selected),
        (150, 0),
        "{records:?}"
    );
}

#[tokio::test]
async fn post_api_tracked_validates_every_item_and_api_jobs_shows_the_passes() {
    let fixture = Fixture::new("stockx", five_tokens(), 0.0).await;
    let server = Server::start(&fixture.config, Arc::clone(&fixture.ledger), Some(TOKEN)).await;

    let body = json!({"provider": "stockx", "sku": "DD1391-100", "size": "10"});
    let (status, _) = server.post("/api/tracked", None, Some(body.clone())).await;
    assert_eq!(status, 401, "no token, no change");

    let cases = [
        (json!({"provider": "stockx", "sku": "DD1391-100"}), "--size"),
        (
            json!({"provider": "alias2", "sku": "X", "size": "10"}),
            "unknown job provider",
        ),
        (
            json!({"provider": "stockx", "sku": "DD1391-100", "size": "10", "items": []}),
            "either provider and sku",
        ),
        (json!({"items": []}), "send 1 to 1000"),
        (
            json!({"items": [{"provider": "keepa", "sku": "B000000001"}, {"provider": "keepa", "sku": "bad asin!"}]}),
            "items[1]: invalid asin",
        ),
        (
            json!({"provider": "stockx", "sku": "A", "size": "1", "colour": "red"}),
            "unknown field",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = server
            .post("/api/tracked", Some(TOKEN), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer.to_string();
        assert!(message.contains(expected), "{body}: {message}");
    }
    assert!(
        tracked::list_tracked(&*fixture.ledger, None, 10)
            .expect("list")
            .is_empty(),
        "a refused request tracks nothing"
    );

    let (status, answer) = server
        .post("/api/tracked", Some(TOKEN), Some(body.clone()))
        .await;
    assert_eq!(
        (status, answer["added"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let items = json!({"items": [
        {"provider": "stockx", "sku": "DD1391-100", "size": "10"},
        {"provider": "keepa", "sku": "b000000001"}
    ]});
    let (status, answer) = server.post("/api/tracked", Some(TOKEN), Some(items)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["added"].as_u64(), answer["already"].as_u64()),
        (Some(1), Some(1))
    );

    let (status, listed) = server.get("/api/tracked?provider=keepa").await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"][0]["sku"], "B000000001", "{listed}");
    assert_eq!(listed["items"][0]["last_success"], Value::Null);

    fixture.scheduler("stockx").pass().await;
    let (status, jobs) = server.get("/api/jobs").await;
    assert_eq!(status, 200);
    let fresh: Vec<&Value> = jobs["freshness"]
        .as_array()
        .expect("freshness")
        .iter()
        .collect();
    let stockx = fresh
        .iter()
        .find(|pass| pass["provider"] == "stockx")
        .expect("stockx pass");
    assert_eq!(stockx["tracked"], 1);
    assert_eq!(stockx["hot"], 1);
    assert_eq!(stockx["fresh_share"], 0.0);
    // Keys of a provider no account drains are shown as waiting.
    let keepa = fresh
        .iter()
        .find(|pass| pass["provider"] == "keepa")
        .expect("keepa pass");
    assert_eq!(keepa["outcome"], "no_accounts");
    assert_eq!(jobs["runs"].as_array().map(Vec::len), Some(2));
}

/// The CLI (`track add`, `track import` with errors naming the line, `track list`,
/// `jobs runs`) against the daemon, whose freshness service panics on its first pass
/// (`[chaos] service = "freshness"`) and is restarted by the root: the keys are fetched
/// and the passes recorded anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervised_scheduler_survives_a_panic_and_keeps_tracked_keys_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
data_dir = "{data}"

[supervisor]
min_backoff = "50ms"
max_backoff = "200ms"
max_crashes = 3
crash_window = "1m"

[simulator]
enabled = true

[freshness]
interval = "300ms"

[freshness.stale_after]
stockx = "1h"

[chaos]
enabled = true
service = "freshness"
nth_unit = 1

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
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["track", "add", "stockx", "DD1391-100", "--size", "10"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("tracking stockx DD1391-100 size 10"),
        "{out}"
    );
    let (code, out, _) = cli(&["track", "add", "stockx", "DD1391-100", "--size", "10"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("tracked already"), "{out}");

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "provider,sku,size\nkeepa,B000000001,\nstockx,DD1391-200,\n",
    )
    .expect("csv");
    let (code, _, err) = cli(&["track", "import", bad.to_str().expect("path")]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("bad.csv: line 3:") && err.contains("--size"),
        "{err}"
    );
    let good = dir.path().join("items.csv");
    std::fs::write(
        &good,
        "provider,sku,size\nkeepa,B000000001,\nkeepa,b000000002,\nstockx,DD1391-200,9\n",
    )
    .expect("csv");
    let (code, out, err) = cli(&["track", "import", good.to_str().expect("path")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 keys newly tracked"), "{out}");

    let (_, out, _) = cli(&["jobs", "runs"]);
    assert!(out.contains("no scheduler passes yet"), "{out}");

    let mut daemon = DaemonProcess::spawn(&config_path);
    let fetched = wait_until(Duration::from_secs(40), || {
        let (_, out, _) = cli(&["track", "list", "--json"]);
        let items: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
        items.len() == 4 && items.iter().all(|item| !item["last_success"].is_null())
    })
    .await;
    let (_, runs_json, _) = cli(&["jobs", "runs", "--json", "--limit", "10000"]);
    let (_, table, _) = cli(&["jobs", "runs", "--limit", "4"]);
    daemon.signal("TERM");
    let code = daemon.wait_exit_code(Duration::from_secs(30)).await;
    let logs = daemon.logs();
    assert!(fetched, "tracked keys never fetched\n{logs}");
    assert!(logs.contains("chaos drill: panicking"), "{logs}");
    assert!(logs.contains("service restarted"), "{logs}");
    assert_eq!(code, Some(0), "{logs}");

    let runs: Vec<Value> = serde_json::from_str(&runs_json).expect("runs json");
    let latest_stockx = runs
        .iter()
        .find(|run| run["provider"] == "stockx")
        .expect("a stockx pass");
    assert_eq!(latest_stockx["tracked"], 2);
    assert!(
        runs.iter()
            .any(|run| run["provider"] == "stockx" && run["hot"] == 2),
        "{runs_json}"
    );
    assert!(
        runs.iter()
            .any(|run| run["provider"] == "keepa" && run["hot"] == 2),
        "{runs_json}"
    );
    assert!(table.starts_with("STARTED"), "{table}");
    assert!(
        table.contains("BUDGET_LEFT") && table.contains("OUTCOME"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 5, "{table}");
}
