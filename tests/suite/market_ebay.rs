//! eBay market prices (issue 15, point 3): Browse API item search with the application
//! token, against the simulator over real HTTP, into a real SQLite file.

use marketsync::config::Config;
use marketsync::domain::now_ts;
use marketsync::provider::ebay::EbayEndpoints;
use marketsync::provider::ebay_browse::{EbayBrowseClient, MAX_TOTAL};
use marketsync::shapes::jobs::{market_prices, JobClient, JobPriority, JobState, ListingStats};
use marketsync::shapes::RunOutcome;
use marketsync::sim::SimConfig;
use marketsync::store::LedgerStore;
use serde_json::{json, Value};

use super::market_alias::{big, MarketFixture};
use crate::common::{ebay_token, TestSim};

async fn fixture(extra: &str, specs: &[(&str, marketsync::quota::BucketSpec)]) -> MarketFixture {
    MarketFixture::new("ebay", "market_prices", extra, specs).await
}

fn browse_client(sim: &TestSim) -> JobClient {
    JobClient::EbayBrowse(EbayBrowseClient::new(
        reqwest::Client::new(),
        EbayEndpoints::new(
            &sim.base_url(),
            &format!("{}/identity/v1/oauth2/token", sim.base_url()),
        ),
        "app-client".to_string(),
        "app-secret".to_string(),
        "EBAY_US",
    ))
}

/// Serves `items` (raw) for the key `gtin` or `q` (`PUT /_sim/ebay/browse`).
async fn set_listings(sim: &TestSim, body: Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_sim/ebay/browse", sim.base_url()))
        .json(&body)
        .send()
        .await
        .expect("fixture");
    assert_eq!(response.status().as_u16(), 204);
}

fn priced(value: &str, currency: &str) -> Value {
    json!({"itemId": "v1|1|0", "title": "x", "price": {"value": value, "currency": currency},
           "buyingOptions": ["FIXED_PRICE"]})
}

async fn requests(sim: &TestSim) -> Vec<Value> {
    reqwest::get(format!("{}/_sim/ebay/requests", sim.base_url()))
        .await
        .expect("requests")
        .json()
        .await
        .expect("requests json")
}

fn stats_of(fixture: &MarketFixture, sku: &str) -> Option<ListingStats> {
    market_prices(&*fixture.ledger, 50)
        .expect("prices")
        .into_iter()
        .find(|price| price.provider == "ebay" && price.sku == sku)
        .and_then(|price| price.listings)
}

#[tokio::test]
async fn listing_statistics_are_computed_over_a_known_fixture_with_the_app_token() {
    let sim = TestSim::start(SimConfig::default()).await;
    // Keywords with a size are searched as `q=KEYWORDS,SIZE` (eBay's AND).
    set_listings(
        &sim,
        json!({"q": "DD1391-100,10", "items": [
            priced("120.00", "USD"), priced("80.50", "USD"), priced("100", "USD"),
            priced("250.00", "USD"), priced("99.50", "USD"), priced("70.00", "GBP")],
            "total": 37}),
    )
    .await;
    // A GTIN is searched as one; the size is not sent (a UPC names one size).
    set_listings(
        &sim,
        json!({"gtin": "0194502876093", "items": [priced("10", "USD"), priced("20", "USD")]}),
    )
    .await;
    let fixture = fixture("", &[("ebay", big())]).await;
    fixture
        .enqueue("ebay", "DD1391-100", Some("10"), JobPriority::Manual)
        .expect("enqueue");
    let gtin = fixture
        .enqueue("ebay", "0194502876093", Some("10"), JobPriority::Manual)
        .expect("enqueue")
        .id();
    assert_eq!(fixture.job(gtin).dedupe_key, "ebay|0194502876093|10");
    let context = fixture.context(browse_client(&sim));
    let outcome = context.run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 2,
            failed: 0
        }
    );
    // USD is what most listings use; the GBP one is left out. Sorted: 80.5, 99.5, 100,
    // 120, 250.
    let stats = stats_of(&fixture, "DD1391-100").expect("statistics stored");
    assert_eq!(
        stats,
        ListingStats {
            count: 5,
            min: 80.5,
            median: 100.0,
            mean: (80.5 + 99.5 + 100.0 + 120.0 + 250.0) / 5.0,
            max: 250.0,
            currency: "USD".to_string(),
            total: 37,
        }
    );
    let prices = market_prices(&*fixture.ledger, 10).expect("prices");
    let row = prices
        .iter()
        .find(|price| price.sku == "DD1391-100")
        .expect("row");
    assert_eq!(
        (row.lowest_ask, row.highest_bid, row.last_sale),
        (Some(80.5), None, None)
    );
    let gtin_stats = stats_of(&fixture, "0194502876093").expect("gtin statistics");
    assert_eq!((gtin_stats.count, gtin_stats.median), (2, 15.0));
    // Both searches went out under the application's token (the simulator names the
    // caller of an application token by its client id), 200 items a page.
    let searches: Vec<_> = requests(&sim)
        .await
        .into_iter()
        .filter(|request| request["operation"] == "ebay.itemSummarySearch")
        .collect();
    assert_eq!(searches.len(), 2);
    assert!(searches
        .iter()
        .all(|request| request["seller"] == "app-client"
            && request["status"] == 200
            && request["limit"] == 200));
}

#[tokio::test]
async fn browse_refuses_a_call_without_a_valid_application_token() {
    let sim = TestSim::start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let search = format!(
        "{}/buy/browse/v1/item_summary/search?q=DD1391-100&limit=10",
        sim.base_url()
    );
    let base = sim.base_url();
    let token = |grant: &'static [(&'static str, &'static str)]| {
        ebay_token(&base, ("app-client", "app-secret"), grant)
    };
    let error_id = |body: &Value| body["errors"][0]["errorId"].as_u64();
    // No token, a made-up one: 401 errorId 1001.
    for auth in [None, Some("Bearer v^1.1#i^1#made-up")] {
        let mut request = http.get(&search);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.expect("search");
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = response.json().await.expect("json");
        assert_eq!(error_id(&body), Some(1001), "{body}");
    }
    // A seller's user token: the operation takes the client-credentials grant only.
    let user = token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", "seller-1"),
    ])
    .await;
    let response = http
        .get(&search)
        .bearer_auth(&user)
        .send()
        .await
        .expect("search");
    assert_eq!(response.status().as_u16(), 403);
    // The application token is served.
    let app = token(&[
        ("grant_type", "client_credentials"),
        ("scope", "https://api.ebay.com/oauth/api_scope"),
    ])
    .await;
    let response = http
        .get(&search)
        .bearer_auth(&app)
        .send()
        .await
        .expect("search");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["itemSummaries"]
        .as_array()
        .is_some_and(|items| !items.is_empty() && items.len() <= 10));
    // eBay's input rules: a key is required, limit 1 to 200.
    for (query, id) in [
        ("limit=10", 12001),
        ("q=x&limit=201", 12006),
        ("q=x&limit=ten", 12007),
        ("q=x&offset=-1", 12004),
    ] {
        let response = http
            .get(format!(
                "{}/buy/browse/v1/item_summary/search?{query}",
                sim.base_url()
            ))
            .bearer_auth(&app)
            .send()
            .await
            .expect("search");
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(error_id(&body), Some(id), "{query}: {body}");
    }
}

#[tokio::test]
async fn no_listing_ends_the_job_not_found_and_writes_nothing() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = fixture("", &[("ebay", big())]).await;
    let id = fixture
        .enqueue("ebay", "UNKNOWN shoe", None, JobPriority::Hot)
        .expect("enqueue")
        .id();
    assert_eq!(fixture.job(id).dedupe_key, "ebay|UNKNOWN shoe");
    let context = fixture.context(browse_client(&sim));
    context.run_once().await.expect("run");
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::NotFound, 0));
    assert!(market_prices(&*fixture.ledger, 10)
        .expect("prices")
        .is_empty());
}

#[tokio::test]
async fn hostile_listings_are_bounded_and_rejected_one_by_one() {
    let sim = TestSim::start(SimConfig::default()).await;
    // 250 items served whatever `limit` says, and an absurd total: only the first 200
    // are read; of those, the hostile prices are left out.
    let mut items = vec![
        priced("-5.00", "USD"),
        priced("1e300", "USD"),
        priced("12,50", "USD"),
        priced("NaN", "USD"),
        priced("", "USD"),
        json!({"price": {"value": 7, "currency": "US$"}}),
        json!({"price": "free"}),
        json!("not an object"),
    ];
    items.extend((0..192).map(|index| priced(&format!("{}.00", 100 + index), "USD")));
    items.extend((0..50).map(|_| priced("1.00", "USD")));
    set_listings(
        &sim,
        json!({"q": "hostile", "items": items, "total": 1_000_000_000_000u64, "ignore_limit": true}),
    )
    .await;
    set_listings(
        &sim,
        json!({"q": "negative-total", "items": [priced("5", "USD")], "total": -3}),
    )
    .await;
    set_listings(
        &sim,
        json!({"q": "nothing-usable", "items": [priced("abc", "USD")], "total": 1}),
    )
    .await;
    let fixture = fixture(
        "retry_base = \"1h\"\nretry_max = \"1h\"",
        &[("ebay", big())],
    )
    .await;
    let hostile = fixture
        .enqueue("ebay", "hostile", None, JobPriority::Hot)
        .expect("enqueue")
        .id();
    let negative = fixture
        .enqueue("ebay", "negative-total", None, JobPriority::Hot)
        .expect("enqueue")
        .id();
    let useless = fixture
        .enqueue("ebay", "nothing-usable", None, JobPriority::Hot)
        .expect("enqueue")
        .id();
    let context = fixture.context(browse_client(&sim));
    context.run_once().await.expect("run");
    assert_eq!(fixture.job(hostile).state, JobState::Succeeded);
    let stats = stats_of(&fixture, "hostile").expect("statistics");
    assert_eq!(
        (stats.count, stats.min, stats.max, stats.total),
        (192, 100.0, 291.0, MAX_TOTAL)
    );
    assert_eq!(stats.mean, (100.0 + 291.0) / 2.0);
    // An answer that cannot be data costs an attempt and is retried later.
    for (id, needle) in [(negative, "total"), (useless, "usable price")] {
        let job = fixture.job(id);
        assert_eq!((job.state, job.attempts), (JobState::Pending, 1), "{job:?}");
        assert!(job.not_before > now_ts() + 600);
        assert!(
            job.error.as_deref().unwrap_or_default().contains(needle),
            "{:?}",
            job.error
        );
    }
}

#[tokio::test]
async fn a_spent_daily_browse_quota_defers_the_job_and_cools_the_search_down() {
    let sim = TestSim::start(SimConfig::default()).await;
    set_listings(&sim, json!({"daily_calls": 0})).await;
    let fixture = fixture("", &[("ebay", big())]).await;
    let id = fixture
        .enqueue("ebay", "DD1391-100", Some("10"), JobPriority::Manual)
        .expect("enqueue")
        .id();
    let context = fixture.context(browse_client(&sim));
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { ref reason, .. } if reason == "quota"),
        "{outcome:?}"
    );
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    let cooldown = fixture
        .ledger
        .active_cooldown("ebay:acct:browse", now_ts())
        .expect("cooldown")
        .expect("a cooldown of the Browse search is persisted");
    assert_eq!(cooldown.reason, "quota");
    // Browse's budget is its own: the account's other eBay APIs are not stopped.
    assert_eq!(
        fixture
            .ledger
            .active_cooldown("ebay:acct", now_ts())
            .expect("cooldown"),
        None
    );
}

#[tokio::test]
async fn the_ebay_budget_of_150_an_hour_paces_searches_without_a_429() {
    let sim = TestSim::start(SimConfig::default()).await;
    // The default bucket (seed 002's 150 an hour: burst 15) and a 1 s quota wait.
    let fixture = fixture("job_lease = \"2s\"", &[]).await;
    for index in 0..18 {
        fixture
            .enqueue(
                "ebay",
                &format!("sneaker {index}"),
                None,
                JobPriority::Background,
            )
            .expect("enqueue");
    }
    let context = fixture.context(browse_client(&sim));
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    let states = fixture.states();
    let done = states
        .iter()
        .filter(|job| job.2 == JobState::Succeeded)
        .count();
    assert_eq!(done, 15, "{states:?}");
    assert!(states
        .iter()
        .filter(|job| job.2 != JobState::Succeeded)
        .all(|job| job.2 == JobState::Pending && job.3 == 0));
    let searches = requests(&sim)
        .await
        .into_iter()
        .filter(|request| request["operation"] == "ebay.itemSummarySearch")
        .count();
    assert_eq!(searches, 15);
}

#[test]
fn an_ebay_account_of_market_prices_only_needs_no_seller_token() {
    let parse = |streams: &str, credentials: &str| {
        Config::parse(
            &format!("[[accounts]]\nid = \"e\"\nprovider = \"ebay\"\n[accounts.credentials]\n{credentials}\n{streams}"),
            "ebay.toml",
        )
    };
    let app = "client_id_env = \"EBAY_APP_ID\"\nclient_secret_env = \"EBAY_APP_SECRET\"";
    let config = parse("[accounts.streams.market_prices]\nbatch = 1", app).expect("valid");
    assert_eq!(
        config.accounts[0].streams[0].jobs().batch,
        1,
        "market_prices takes the job-queue keys"
    );
    // A seller stream beside it still needs the seller's refresh token.
    let err = parse(
        "[accounts.streams.market_prices]\n[accounts.streams.orders]",
        app,
    )
    .expect_err("orders need a user token");
    assert!(err.to_string().contains("refresh_token_env"), "{err}");
    // A cursor key on the job stream is refused, naming it.
    let err = parse("[accounts.streams.market_prices]\npage_limit = 10", app)
        .expect_err("page_limit is a cursor key");
    assert!(err.to_string().contains("page_limit"), "{err}");
}
