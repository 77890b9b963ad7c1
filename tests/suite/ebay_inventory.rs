//! The eBay `active_inventory` stream end to end: the Sell Feed API task against the
//! simulator over real HTTP, the result file downloaded to disk, parsed as a stream and
//! applied to a real SQLite file. The engine's clock and the simulator's are pinned
//! together, so a test moves time (and the inventory's state) without sleeping.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use marketsync::config::Config;
use marketsync::provider::ebay::{EbayClient, EbayCredentials, EbayEndpoints};
use marketsync::provider::ebay_feed;
use marketsync::shapes::cursor::{Clock, CursorRunner, CursorStore};
use marketsync::shapes::{RunOutcome, StreamContext, StreamWork};
use marketsync::sim::ebay::feed::{inventory_listings, write_result_zip};
use marketsync::sim::ebay::EbaySimConfig;
use marketsync::sim::SimConfig;
use marketsync::store::ebay_inventory::{apply_snapshot, inventory_of};
use marketsync::store::{LedgerStore, SqliteLedger, WriteFence};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{ebay_user_token, TestSim};

const SEED: u64 = 42;
/// The refresh token the test account uses: the simulator's seller name.
const SELLER: &str = "seller-inventory";
const HOUR: i64 = 3_600;

fn sim_config(listings: u32) -> SimConfig {
    SimConfig {
        seed: SEED,
        processing_latency: Duration::ZERO,
        ebay: EbaySimConfig {
            inventory_listings: listings,
            inventory_change_every: Duration::from_secs(HOUR as u64),
            feed_task_polls: 2,
            ..EbaySimConfig::default()
        },
        ..SimConfig::default()
    }
}

/// A whole hour, so every run of a test sees the same inventory epochs.
fn pinned_start() -> i64 {
    let now = marketsync::domain::now_ts();
    now - now.rem_euclid(HOUR) + 30
}

/// (item id, sku) → (quantity, price) as the simulator lists the seller's inventory.
type Inventory = BTreeMap<(String, String), (i64, String)>;

fn expected(config: &EbaySimConfig, now: i64) -> Inventory {
    inventory_listings(SEED, config, SELLER, now)
        .flat_map(|listing| listing.rows())
        .map(|(item, sku, quantity, price)| ((item, sku), (quantity as i64, price)))
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    config: Config,
    ledger: Arc<SqliteLedger>,
    clock: Arc<AtomicI64>,
    base: String,
    http: reqwest::Client,
}

impl Fixture {
    fn new(sim: &TestSim, now: i64) -> Fixture {
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

[accounts.streams.active_inventory]
interval = "1h"
retry_base = "10s"
retry_max = "1m"
poll_min = "5ms"
poll_max = "20ms"
poll_timeout = "1m"
max_document_bytes = 67108864
"#,
            data = dir.path().display(),
        );
        let config = Config::parse(&text, "inventory-test.toml").expect("valid test config");
        std::fs::write(dir.path().join("config.toml"), &text).expect("write config");
        let ledger = Arc::new(SqliteLedger::open(&config.database_path()).expect("open ledger"));
        Fixture {
            dir,
            config,
            ledger,
            clock: Arc::new(AtomicI64::new(now)),
            base,
            http: reqwest::Client::new(),
        }
    }

    /// The account's client: a user token (refresh-token grant) for `Some`, the
    /// application's client-credentials token for `None`.
    fn client(&self, refresh_token: Option<&str>) -> EbayClient {
        EbayClient::new(
            reqwest::Client::new(),
            EbayEndpoints::new(
                &self.base,
                &format!("{}/identity/v1/oauth2/token", self.base),
            ),
            EbayCredentials {
                client_id: "test-client".to_string(),
                client_secret: "test-secret".to_string(),
                refresh_token: refresh_token.map(str::to_string),
            },
            "EBAY_US",
        )
    }

    fn context(&self, refresh_token: Option<&str>) -> StreamContext {
        let account = self.config.accounts[0].clone();
        let stream = account
            .stream("active_inventory")
            .expect("stream configured")
            .clone();
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

    async fn set_now(&self, now: i64) {
        self.clock.store(now, Ordering::SeqCst);
        let response = self
            .http
            .put(format!("{}/_sim/ebay/control", self.base))
            .json(&json!({"now_unix": now}))
            .send()
            .await
            .expect("control");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// `Bearer <token>` of a fresh user access token (refresh-token grant).
    async fn user_bearer(&self) -> String {
        format!("Bearer {}", ebay_user_token(&self.base, SELLER, None).await)
    }

    /// `Bearer <token>` of a user access token narrowed to `scope`.
    async fn bearer_with_scope(&self, scope: &str) -> String {
        format!(
            "Bearer {}",
            ebay_user_token(&self.base, SELLER, Some(scope)).await
        )
    }

    async fn corrupt_next(&self, how: &str) {
        let response = self
            .http
            .put(format!("{}/_sim/ebay/feed/control", self.base))
            .json(&json!({"corrupt_next": how}))
            .send()
            .await
            .expect("feed control");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// (item id, sku) → (quantity, price, state) stored for the account.
    fn stored(&self) -> BTreeMap<(String, String), (i64, String, String)> {
        self.ledger
            .with_conn(|conn| inventory_of(conn, "shop"))
            .expect("inventory")
            .into_iter()
            .map(|sku| {
                (
                    (sku.item_id, sku.sku),
                    (sku.quantity, sku.price.unwrap_or_default(), sku.state),
                )
            })
            .collect()
    }

    fn events(&self) -> Vec<(String, String, Option<String>, Option<String>)> {
        self.ledger.with_conn(|conn| {
            let mut statement = conn
                .prepare(
                    "SELECT resource_id, field, before, after FROM events
                     WHERE account = 'shop' AND stream = 'active_inventory' ORDER BY id",
                )
                .expect("prepare");
            statement
                .query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .expect("query")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows")
        })
    }
}

fn active(stored: &BTreeMap<(String, String), (i64, String, String)>) -> Inventory {
    stored
        .iter()
        .filter(|(_, (_, _, state))| state == "ACTIVE")
        .map(|(key, (quantity, price, _))| (key.clone(), (*quantity, price.clone())))
        .collect()
}

fn resource(key: &(String, String)) -> String {
    if key.1.is_empty() {
        key.0.clone()
    } else {
        format!("{}/{}", key.0, key.1)
    }
}

/// The history two snapshots `before` → `after` must append: quantity and price changes
/// of SKUs in both, and quantity → 0 plus ACTIVE → ENDED for SKUs that disappeared.
fn expected_events(
    before: &Inventory,
    after: &Inventory,
) -> Vec<(String, String, Option<String>, Option<String>)> {
    let mut events = Vec::new();
    for (key, (quantity, price)) in before {
        match after.get(key) {
            Some((new_quantity, new_price)) => {
                if new_quantity != quantity {
                    events.push((
                        resource(key),
                        "Quantity".to_string(),
                        Some(quantity.to_string()),
                        Some(new_quantity.to_string()),
                    ));
                }
                if new_price != price {
                    events.push((
                        resource(key),
                        "Price".to_string(),
                        Some(price.clone()),
                        Some(new_price.clone()),
                    ));
                }
            }
            None => {
                events.push((
                    resource(key),
                    "Quantity".to_string(),
                    Some(quantity.to_string()),
                    Some("0".to_string()),
                ));
                events.push((
                    resource(key),
                    "state".to_string(),
                    Some("ACTIVE".to_string()),
                    Some("ENDED".to_string()),
                ));
            }
        }
    }
    events.sort();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_sync_stores_every_sku_and_records_changes_between_runs() {
    let sim = TestSim::start(sim_config(400)).await;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    let config = sim_config(400).ebay;
    fixture.set_now(t0).await;
    let context = fixture.context(Some(SELLER));

    let outcome = context.run_once().await.expect("first run");
    assert!(
        matches!(
            outcome,
            RunOutcome::Finished {
                applied: 1,
                failed: 0
            }
        ),
        "{outcome:?}"
    );
    let first = expected(&config, t0);
    assert!(
        first.len() > 350,
        "the simulator lists {} SKUs",
        first.len()
    );
    assert!(
        first.keys().any(|(_, sku)| sku.is_empty()),
        "a listing without SKU"
    );
    assert_eq!(
        active(&fixture.stored()),
        first,
        "every SKU of the report is stored"
    );
    assert!(
        fixture.events().is_empty(),
        "first sight appends no history"
    );

    // An hour later the inventory moved: some quantities and prices changed, some
    // listings ended, some came back.
    let t1 = t0 + HOUR;
    fixture.set_now(t1).await;
    let outcome = context.run_once().await.expect("second run");
    assert!(
        matches!(outcome, RunOutcome::Finished { applied: 1, .. }),
        "{outcome:?}"
    );
    let second = expected(&config, t1);
    let stored = fixture.stored();
    assert_eq!(active(&stored), second);
    let ended: Vec<_> = first
        .keys()
        .filter(|key| !second.contains_key(*key))
        .collect();
    assert!(
        !ended.is_empty(),
        "some listing ended between the snapshots"
    );
    for key in &ended {
        assert_eq!(stored[*key].0, 0, "an ended SKU's quantity is 0");
        assert_eq!(stored[*key].2, "ENDED");
    }
    let mut events = fixture.events();
    events.sort();
    let wanted = expected_events(&first, &second);
    assert!(
        wanted.iter().any(|event| event.1 == "Price")
            && wanted.iter().any(|event| event.1 == "Quantity"),
        "the simulated hour changes prices and quantities"
    );
    assert_eq!(events, wanted, "the history holds exactly the changes");

    // The same state again: nothing new in the history.
    let outcome = context.run_once().await.expect("third run");
    assert!(
        matches!(outcome, RunOutcome::Finished { applied: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(fixture.events().len(), wanted.len());
    let snapshot = fixture
        .ledger
        .cursor_snapshot("shop", "active_inventory")
        .expect("snapshot")
        .expect("cursor row");
    assert_eq!(
        snapshot.cursor_ts, t1,
        "the cursor row records the snapshot's time"
    );
    assert_eq!(snapshot.last_error, None);
    assert!(
        std::fs::read_dir(fixture.dir.path().join("documents"))
            .map(|entries| entries.count())
            .unwrap_or(0)
            == 0,
        "result files are removed after the apply"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_truncated_or_malformed_file_applies_nothing() {
    let sim = TestSim::start(sim_config(200)).await;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    let config = sim_config(200).ebay;
    fixture.set_now(t0).await;
    let context = fixture.context(Some(SELLER));
    let outcome = context.run_once().await.expect("first run");
    assert!(
        matches!(outcome, RunOutcome::Finished { applied: 1, .. }),
        "{outcome:?}"
    );
    let before = fixture.stored();
    assert_eq!(active(&before), expected(&config, t0));

    for (how, said) in [("truncated", "truncated"), ("malformed", "Quantity")] {
        fixture.set_now(t0 + HOUR).await;
        // A failed snapshot is retried only after retry_at: start each case afresh.
        fixture.ledger.with_conn(|conn| {
            conn.execute(
                "UPDATE cursors SET retry_at = NULL WHERE account = 'shop' AND stream = 'active_inventory'",
                [],
            )
            .expect("clear retry_at")
        });
        fixture.corrupt_next(how).await;
        let outcome = context.run_once().await.expect("spoiled run");
        assert!(
            matches!(outcome, RunOutcome::Deferred { .. }),
            "{how}: {outcome:?}"
        );
        assert_eq!(
            fixture.stored(),
            before,
            "{how}: nothing of the file was applied"
        );
        assert!(
            fixture.events().is_empty(),
            "{how}: no history from a failed file"
        );
        let snapshot = fixture
            .ledger
            .cursor_snapshot("shop", "active_inventory")
            .expect("snapshot")
            .expect("cursor row");
        let error = snapshot.last_error.unwrap_or_default();
        assert!(error.contains(said), "{how}: {error}");
        assert!(snapshot.failures >= 1);
        assert!(
            snapshot.retry_at >= Some(t0 + 2 * HOUR),
            "{how}: a retry that needs a new task waits an hour (eBay's 25 tasks a day): {:?}",
            snapshot.retry_at
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_feed_refuses_application_tokens_unknown_tasks_and_feed_types() {
    let sim = TestSim::start(sim_config(10)).await;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    fixture.set_now(t0).await;

    // The application's token (client-credentials grant) is not a seller's: refused,
    // and the run cools down instead of failing.
    let outcome = fixture.context(None).run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { .. }),
        "{outcome:?}"
    );
    assert!(fixture.stored().is_empty());

    // eBay's error bodies, over plain HTTP with a user token.
    let bearer = fixture.user_bearer().await;
    let unknown = fixture
        .http
        .get(format!(
            "{}/sell/feed/v1/inventory_task/task-404",
            fixture.base
        ))
        .header("Authorization", &bearer)
        .send()
        .await
        .expect("get task");
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.expect("error json");
    assert_eq!(body["errors"][0]["errorId"], 160003);
    let bad_type = fixture
        .http
        .post(format!("{}/sell/feed/v1/inventory_task", fixture.base))
        .header("Authorization", &bearer)
        .header("X-EBAY-C-MARKETPLACE-ID", "EBAY_US")
        .json(&json!({"feedType": "LMS_ORDER_REPORT", "schemaVersion": "1.0"}))
        .send()
        .await
        .expect("create task");
    assert_eq!(bad_type.status(), 400);
    let body: serde_json::Value = bad_type.json().await.expect("error json");
    assert_eq!(body["errors"][0]["errorId"], 160017);
    // eBay's per-seller limit: 25 inventory tasks in 24 hours, then 409 errorId 160025.
    let create = |bearer: String| {
        fixture
            .http
            .post(format!("{}/sell/feed/v1/inventory_task", fixture.base))
            .header("Authorization", bearer)
            .header("X-EBAY-C-MARKETPLACE-ID", "EBAY_US")
            .json(&json!({"feedType": "LMS_ACTIVE_INVENTORY_REPORT", "schemaVersion": "1.0"}))
            .send()
    };
    for _ in 0..25 {
        let created = create(bearer.clone()).await.expect("create task");
        assert_eq!(created.status(), 202);
        assert!(created.headers().contains_key("location"));
    }
    let refused = create(bearer.clone()).await.expect("26th task");
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await.expect("error json");
    assert_eq!(body["errors"][0]["errorId"], 160025);
    // A day later the seller may create tasks again.
    fixture.set_now(t0 + 24 * HOUR).await;
    let next_day = fixture.user_bearer().await;
    assert_eq!(
        create(next_day.clone()).await.expect("next day").status(),
        202
    );
    let no_file = fixture
        .http
        .get(format!(
            "{}/sell/feed/v1/task/task-404/download_result_file",
            fixture.base
        ))
        .header("Authorization", &next_day)
        .send()
        .await
        .expect("get file");
    assert_eq!(no_file.status(), 404);

    // The client's own checks of a task id taken from `Location`.
    assert_eq!(
        ebay_feed::task_id_from_location(&format!(
            "{}/sell/feed/v1/inventory_task/task-1-2",
            fixture.base
        ))
        .as_deref(),
        Some("task-1-2")
    );
}

const INVENTORY_SCOPE: &str = "https://api.ebay.com/oauth/api_scope/sell.inventory";
const INVENTORY_READONLY_SCOPE: &str =
    "https://api.ebay.com/oauth/api_scope/sell.inventory.readonly";

/// Regression (issue 14 audit): the stream asked consent for `sell.inventory.readonly`,
/// but the Sell Feed API's inventory tasks take `sell.inventory` only (the `security` of
/// createInventoryTask and getInventoryTask in sell_feed_v1_oas3), and the simulator let
/// the read-only scope through. A read-only token is refused with eBay's 403 errorId
/// 1100; a seller who consented to the read-only scope stops the stream on an auth
/// cooldown naming the scope it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_feed_needs_the_read_write_inventory_scope() {
    let sim = TestSim::start(sim_config(10)).await;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    fixture.set_now(t0).await;
    let create = |bearer: String| {
        fixture
            .http
            .post(format!("{}/sell/feed/v1/inventory_task", fixture.base))
            .header("Authorization", bearer)
            .header("X-EBAY-C-MARKETPLACE-ID", "EBAY_US")
            // The Location is on the simulator's own address, whatever Host says.
            .header("Host", "elsewhere.example:1")
            .json(&json!({"feedType": "LMS_ACTIVE_INVENTORY_REPORT", "schemaVersion": "1.0"}))
            .send()
    };
    let readonly = fixture.bearer_with_scope(INVENTORY_READONLY_SCOPE).await;
    let refused = create(readonly.clone()).await.expect("create task");
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.expect("error json");
    assert_eq!(body["errors"][0]["errorId"], 1100, "{body}");
    let full = fixture.bearer_with_scope(INVENTORY_SCOPE).await;
    let created = create(full.clone()).await.expect("create task");
    assert_eq!(created.status(), 202);
    let location = created
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("location")
        .to_string();
    assert!(
        location.starts_with(&format!("{}/sell/feed/v1/inventory_task/", fixture.base)),
        "{location}"
    );
    // getInventoryTask of the same task: the read-only token is refused there too.
    for (bearer, status) in [(&readonly, 403), (&full, 200)] {
        let task = fixture
            .http
            .get(&location)
            .header("Authorization", bearer)
            .send()
            .await
            .expect("get task");
        assert_eq!(task.status(), status, "{location}");
    }

    // A seller who consented to the read-only scope only (eBay's consent, then the
    // authorization-code exchange): the stream stops on the auth cooldown, which names
    // the scope the Feed API needs.
    let answer: serde_json::Value = fixture
        .http
        .get(format!("{}/oauth2/authorize", fixture.base))
        .query(&[
            ("client_id", "test-client"),
            ("redirect_uri", "Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b"),
            ("response_type", "code"),
            (
                "scope",
                &format!("https://api.ebay.com/oauth/api_scope {INVENTORY_READONLY_SCOPE}"),
            ),
            ("seller", SELLER),
        ])
        .send()
        .await
        .expect("authorize")
        .json()
        .await
        .expect("json");
    let grant = marketsync::provider::ebay::exchange_code(
        &fixture.http,
        &format!("{}/identity/v1/oauth2/token", fixture.base),
        "test-client",
        "test-secret",
        answer["code"].as_str().expect("code"),
        "Acme_Inc-AcmeSync-PRD-1a2b3c4d5-6e7f8a9b",
    )
    .await
    .expect("exchange");
    let outcome = fixture
        .context(Some(&grant.refresh_token))
        .run_once()
        .await
        .expect("run");
    assert!(
        matches!(&outcome, RunOutcome::CoolingDown { reason, .. } if reason == "auth"),
        "{outcome:?}"
    );
    let cooldown = fixture
        .ledger
        .active_cooldown("ebay:shop", marketsync::domain::now_ts())
        .expect("read")
        .expect("an auth cooldown");
    let detail = cooldown.detail.expect("detail");
    assert!(detail.contains(&format!("({INVENTORY_SCOPE})")), "{detail}");
    assert!(fixture.stored().is_empty());
}

/// Peak resident memory (`VmHWM`) and current (`VmRSS`) of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("memory field")
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Seed 003's crash: a report file far larger than the memory it may use. The zipped
/// report of 700,000 listings (~105 MB of XML) is parsed and applied to a SQLite file
/// while the process's peak RSS (reset first) grows by far less than the XML's size.
/// nextest runs each test in a process of its own, so the peak is this test's.
#[test]
fn ebay_inventory_a_100mb_report_is_parsed_and_applied_in_bounded_memory() {
    const LISTINGS: u32 = 700_000;
    const BOUND: u64 = 32 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let zip_path = dir.path().join("report.zip");
    let config = EbaySimConfig {
        inventory_listings: LISTINGS,
        ..EbaySimConfig::default()
    };
    let now = 1_800_000_000;
    write_result_zip(
        &zip_path,
        inventory_listings(SEED, &config, SELLER, now),
        "2027-01-15T08:00:00.000Z",
        None,
    )
    .expect("write report");
    let mut xml_bytes = 0u64;
    {
        let file = std::fs::File::open(&zip_path).expect("zip");
        let mut archive = zip::ZipArchive::new(file).expect("archive");
        xml_bytes += archive.by_index(0).expect("entry").size();
    }
    assert!(
        xml_bytes > 3 * BOUND,
        "the report must dwarf the bound: {xml_bytes} bytes of xml"
    );
    let expected_rows: u64 = inventory_listings(SEED, &config, SELLER, now)
        .map(|listing| listing.rows().len() as u64)
        .sum();
    let ledger = SqliteLedger::open(&dir.path().join("marketsync.db")).expect("ledger");

    // Reset the peak to now (Linux: `5` to clear_refs), then parse and apply.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak rss");
    let (_, rss_before) = memory();
    let rows = ebay_feed::open_result_file(&zip_path, u64::MAX).expect("open report");
    let applied = ledger
        .with_conn(|conn| {
            apply_snapshot(
                conn,
                "shop",
                "active_inventory",
                WriteFence::Unfenced,
                rows,
                now,
                now,
                &|| {},
            )
        })
        .expect("apply");
    let (peak, _) = memory();
    let growth = peak.saturating_sub(rss_before);
    println!(
        "xml {} MB, zip {} MB, rows {}, peak rss growth {} MB",
        xml_bytes >> 20,
        std::fs::metadata(&zip_path).expect("zip size").len() >> 20,
        applied.rows,
        growth >> 20
    );
    assert_eq!(applied.rows, expected_rows);
    assert_eq!(applied.inserted, expected_rows);
    assert!(
        growth < BOUND,
        "peak rss grew by {growth} bytes while reading {xml_bytes} bytes of xml"
    );
}

#[test]
fn ebay_inventory_config_takes_the_feed_keys_and_refuses_window_keys() {
    let account = |stream_keys: &str| {
        format!(
            r#"
[[accounts]]
id = "shop"
provider = "ebay"

[accounts.credentials]
client_id_env = "SHOP_EBAY_CLIENT_ID"
client_secret_env = "SHOP_EBAY_CLIENT_SECRET"
refresh_token_env = "SHOP_EBAY_REFRESH_TOKEN"

[accounts.streams.active_inventory]
{stream_keys}
"#
        )
    };
    let config = Config::parse(
        &account("poll_min = \"1s\"\npoll_max = \"30s\"\npoll_timeout = \"3h\"\nmax_document_bytes = 1048576"),
        "inventory.toml",
    )
    .expect("feed keys are valid");
    let stream = config.accounts[0]
        .stream("active_inventory")
        .expect("stream");
    let feed = &stream.cursor().feed;
    assert_eq!(feed.poll_min, Duration::from_secs(1));
    assert_eq!(feed.poll_max, Duration::from_secs(30));
    assert_eq!(feed.poll_timeout, Duration::from_secs(3 * 3600));
    assert_eq!(feed.max_file_bytes, 1_048_576);
    assert_eq!(feed.max_xml_bytes, 32 * 1_048_576);
    assert_eq!(
        stream.interval,
        Duration::from_secs(3600),
        "a snapshot an hour"
    );
    let defaults = Config::parse(&account(""), "inventory.toml").expect("defaults");
    assert_eq!(
        defaults.accounts[0]
            .stream("active_inventory")
            .expect("stream")
            .cursor()
            .feed,
        marketsync::config::FeedSettings::DEFAULT
    );
    let error = Config::parse(&account("max_window = \"24h\""), "inventory.toml")
        .expect_err("a window key is refused")
        .to_string();
    assert!(
        error.contains("accounts[0].streams.active_inventory.max_window")
            && error.contains("poll_min, poll_max, poll_timeout, max_document_bytes"),
        "{error}"
    );
    let error = Config::parse(&account("interval = \"30m\""), "inventory.toml")
        .expect_err("more than 25 tasks a day")
        .to_string();
    assert!(
        error.contains("active_inventory.interval") && error.contains("25"),
        "{error}"
    );
    let error = Config::parse(
        &account("poll_min = \"1m\"\npoll_max = \"10s\""),
        "inventory.toml",
    )
    .expect_err("poll_max below poll_min")
    .to_string();
    assert!(error.contains("poll_max"), "{error}");
}

/// The daemon's own wiring (its TokenManager paces createInventoryTask, getInventoryTask
/// and getResultFile; documents go to the data dir): `sync --once` takes a snapshot and
/// exits 0 once the stream is within an interval of now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_sync_once_through_the_daemon_stores_the_snapshot() {
    let sim = TestSim::start(sim_config(300)).await;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    fixture.set_now(t0).await;
    let mut command = crate::common::marketsync();
    command
        .env("TEST_EBAY_CLIENT_ID", "cli-client")
        .env("TEST_EBAY_CLIENT_SECRET", "cli-secret")
        .env("TEST_EBAY_REFRESH_TOKEN", SELLER)
        .arg("--config")
        .arg(fixture.dir.path().join("config.toml"))
        .args(["sync", "--once", "--timeout", "2m"]);
    let output = tokio::time::timeout(
        Duration::from_secs(150),
        tokio::process::Command::from(command).output(),
    )
    .await
    .expect("sync --once ends within its timeout")
    .expect("sync --once");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        active(&fixture.stored()),
        expected(&sim_config(300).ebay, t0)
    );
    let snapshot = fixture
        .ledger
        .cursor_snapshot("shop", "active_inventory")
        .expect("snapshot")
        .expect("cursor row");
    assert_eq!((snapshot.failures, snapshot.last_error), (0, None));
}

/// A run interrupted after its task was created (here a 5xx on getResultFile) leaves the
/// task recorded: the next run resumes it instead of spending another of eBay's 25 tasks
/// a day, and applies the snapshot of the task's creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_an_interrupted_run_resumes_its_task() {
    let sim = TestSim::start(sim_config(100)).await;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    fixture.set_now(t0).await;
    sim.sim.set_faults(crate::common::schedule(
        "ebay.getResultFile",
        1,
        marketsync::sim::FaultKind::ServerError,
    ));
    let context = fixture.context(Some(SELLER));
    let outcome = context.run_once().await.expect("interrupted run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    assert!(fixture.stored().is_empty());
    fixture.ledger.with_conn(|conn| {
        conn.execute(
            "UPDATE cursors SET retry_at = NULL WHERE account = 'shop' AND stream = 'active_inventory'",
            [],
        )
        .expect("clear retry_at")
    });
    // Half a minute later (within the task's poll_timeout of 1m): the same task.
    fixture.set_now(t0 + 30).await;
    let outcome = context.run_once().await.expect("resumed run");
    assert!(
        matches!(outcome, RunOutcome::Finished { applied: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        active(&fixture.stored()),
        expected(&sim_config(100).ebay, t0)
    );
    let stats: marketsync::sim::ebay::EbayStats = fixture
        .http
        .get(format!("{}/_sim/ebay/stats", fixture.base))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(stats.calls("ebay.createInventoryTask"), 1, "{stats:?}");
    assert_eq!(stats.calls("ebay.getResultFile"), 2, "{stats:?}");
    let snapshot = fixture
        .ledger
        .cursor_snapshot("shop", "active_inventory")
        .expect("snapshot")
        .expect("cursor row");
    assert_eq!(
        snapshot.cursor_ts, t0,
        "the snapshot's time is its task's creation"
    );
    let pending = fixture
        .ledger
        .with_conn(|conn| {
            marketsync::store::ebay_inventory::pending_task(conn, "shop", "active_inventory")
        })
        .expect("pending task");
    assert_eq!(pending, None, "an applied task is forgotten");
}

/// With `[store] url_env` the daemon keeps `active_inventory` whole in PostgreSQL: two
/// `sync --once` runs an hour of the simulator apart store every SKU and exactly the
/// history between the snapshots there (its cursor row and fence too), and write nothing
/// of the stream to the SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_inventory_on_postgresql_through_the_daemon_writes_nothing_to_sqlite() {
    use marketsync::store::inventory::InventoryStore;
    use marketsync::store::postgres::testing::TestDb;
    use marketsync::store::postgres::{PgLedger, PgSettings};

    const URL_VAR: &str = "TEST_INVENTORY_PG_URL";
    let db = TestDb::create();
    let sim = TestSim::start(sim_config(300)).await;
    let config = sim_config(300).ebay;
    let t0 = pinned_start();
    let fixture = Fixture::new(&sim, t0);
    fixture.set_now(t0).await;
    let text = std::fs::read_to_string(fixture.dir.path().join("config.toml")).expect("config");
    let config_path = fixture.dir.path().join("postgres.toml");
    std::fs::write(
        &config_path,
        format!("{text}\n[store]\nurl_env = \"{URL_VAR}\"\n"),
    )
    .expect("write config");
    let sync_once = || {
        let mut command = crate::common::marketsync();
        command
            .env("TEST_EBAY_CLIENT_ID", "cli-client")
            .env("TEST_EBAY_CLIENT_SECRET", "cli-secret")
            .env("TEST_EBAY_REFRESH_TOKEN", SELLER)
            .env(URL_VAR, &db.url)
            .arg("--config")
            .arg(&config_path)
            .args(["sync", "--once", "--timeout", "2m"]);
        async move {
            let output = tokio::time::timeout(
                Duration::from_secs(150),
                tokio::process::Command::from(command).output(),
            )
            .await
            .expect("sync --once ends within its timeout")
            .expect("sync --once");
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            assert_eq!(output.status.code(), Some(0), "{stderr}");
        }
    };
    // The sync PostgreSQL client may not run on an async worker thread.
    let read_pg = |url: String| {
        tokio::task::spawn_blocking(move || {
            let pg = PgLedger::open(&url, &PgSettings::default()).expect("open pg");
            let stored: BTreeMap<(String, String), (i64, String, String)> = pg
                .inventory_of("shop")
                .expect("inventory")
                .into_iter()
                .map(|sku| {
                    (
                        (sku.item_id, sku.sku),
                        (sku.quantity, sku.price.unwrap_or_default(), sku.state),
                    )
                })
                .collect();
            let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            let mut events: Vec<(String, String, Option<String>, Option<String>)> = client
                .query(
                    "SELECT resource_id, field, before, after FROM events
                     WHERE account = 'shop' AND stream = 'active_inventory'",
                    &[],
                )
                .expect("events")
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
                .collect();
            events.sort();
            let cursor = pg
                .cursor_snapshot("shop", "active_inventory")
                .expect("cursor")
                .expect("the cursor row is in postgresql");
            let fences: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM scope_fences WHERE account = 'shop' AND stream = 'active_inventory'",
                    &[],
                )
                .expect("fences")
                .get(0);
            (stored, events, cursor, fences)
        })
    };
    let nothing_in_sqlite = |fixture: &Fixture| {
        fixture.ledger.with_conn(|conn| {
            for sql in [
                "SELECT COUNT(*) FROM ebay_inventory",
                "SELECT COUNT(*) FROM ebay_inventory_snapshots",
                "SELECT COUNT(*) FROM ebay_feed_tasks",
                "SELECT COUNT(*) FROM cursors WHERE stream = 'active_inventory'",
                "SELECT COUNT(*) FROM events WHERE stream = 'active_inventory'",
                "SELECT COUNT(*) FROM scope_fences WHERE stream = 'active_inventory'",
            ] {
                let count: i64 = conn.query_row(sql, [], |row| row.get(0)).expect(sql);
                assert_eq!(
                    count, 0,
                    "{sql}: nothing of active_inventory in the sqlite file"
                );
            }
        });
    };

    sync_once().await;
    let first = expected(&config, t0);
    let (stored, events, cursor, fences) = read_pg(db.url.clone()).await.expect("read pg");
    assert_eq!(
        active(&stored),
        first,
        "every SKU of the report is in postgresql"
    );
    assert!(events.is_empty(), "first sight appends no history");
    assert_eq!((cursor.failures, cursor.last_error), (0, None));
    assert_eq!(cursor.resources, i64::try_from(first.len()).expect("count"));
    assert_eq!(fences, 1, "the snapshot was fenced in postgresql");
    nothing_in_sqlite(&fixture);

    // An hour later (the simulator's) the inventory moved: the second run's history is
    // exactly the changes, in postgresql. The daemon's clock is the machine's, so the
    // snapshot is made due by moving its cursor row back past the interval.
    let t1 = t0 + HOUR;
    fixture.set_now(t1).await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let moved = client
            .execute(
                "UPDATE cursors SET cursor_ts = cursor_ts - 3 * 3600
                 WHERE account = 'shop' AND stream = 'active_inventory'",
                &[],
            )
            .expect("move the cursor back");
        assert_eq!(moved, 1);
    })
    .await
    .expect("moved");
    sync_once().await;
    let second = expected(&config, t1);
    let (stored, events, cursor, _) = read_pg(db.url.clone()).await.expect("read pg");
    assert_eq!(active(&stored), second);
    let wanted = expected_events(&first, &second);
    assert!(
        !wanted.is_empty(),
        "the simulated hour changes the inventory"
    );
    assert_eq!(events, wanted, "the history holds exactly the changes");
    assert_eq!(cursor.events, i64::try_from(wanted.len()).expect("count"));
    nothing_in_sqlite(&fixture);
    // `status` counts the stream's SKUs and history from postgresql.
    let output = crate::common::marketsync()
        .env(URL_VAR, &db.url)
        .env("TEST_EBAY_CLIENT_ID", "cli-client")
        .env("TEST_EBAY_CLIENT_SECRET", "cli-secret")
        .env("TEST_EBAY_REFRESH_TOKEN", SELLER)
        .arg("--config")
        .arg(&config_path)
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(
        output.status.success(),
        "status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let stream = report["accounts"][0]["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|stream| stream["name"] == "active_inventory")
        .expect("the stream in status")
        .clone();
    assert_eq!(
        stream["cursor"]["resources"],
        json!(stored.len()),
        "{stream}"
    );
    assert_eq!(stream["cursor"]["events"], json!(wanted.len()), "{stream}");
    drop(sim);
}
