//! StockX in its real shape (issue 15, point 1): style id and size resolved through the
//! catalog (search, then the product's variants), cached with a TTL and a miss cache,
//! re-resolved once when StockX says a cached id is gone; market data by catalog UUID,
//! against the simulator over HTTP, a SQLite file and a real TokenManager.

use marketsync::domain::now_ts;
use marketsync::provider::stockx::{StockxClient, StockxCredentials, StockxEndpoints};
use marketsync::provider::ProviderError;
use marketsync::quota::BucketSpec;
use marketsync::shapes::jobs::{market_prices, recent_runs, JobPriority, JobState};
use marketsync::shapes::RunOutcome;
use marketsync::sim::stockx::{market_for, product_uuid, variant_uuid};
use marketsync::sim::SimConfig;
use marketsync::store::jobs as store;

use super::jobs::{big, stockx_stats, JobsFixture};
use crate::common::TestSim;

/// (search, variants, market data) calls the simulator counted.
async fn calls(sim: &TestSim) -> (u64, u64, u64) {
    let stats = stockx_stats(sim).await;
    let count = |name: &str| stats[name].as_u64().unwrap_or(u64::MAX);
    (
        count("search_calls"),
        count("variants_calls"),
        count("market_data_calls"),
    )
}

fn client(sim: &TestSim) -> StockxClient {
    StockxClient::new(
        reqwest::Client::new(),
        StockxEndpoints {
            api_base: sim.base_url(),
            token_url: format!("{}/oauth/token", sim.base_url()),
        },
        StockxCredentials {
            client_id: "test-client".to_string(),
            client_secret: "test-secret".to_string(),
            refresh_token: "test-refresh".to_string(),
            api_key: "key-1".to_string(),
        },
    )
}

#[tokio::test]
async fn a_style_resolves_through_search_then_its_size_through_the_variants() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let id = fixture
        .enqueue("stockx", "DD1391-100", Some("10"), JobPriority::Manual)
        .id();
    let context = fixture.stockx_context(&sim, "key-1");
    let outcome = context.run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 1,
            failed: 0
        }
    );
    assert_eq!(fixture.job(id).state, JobState::Succeeded);
    // One search, one variant list, one market-data call by the catalog's UUIDs.
    assert_eq!(calls(&sim).await, (1, 1, 1));
    let prices = market_prices(&*fixture.ledger, 10).expect("prices");
    assert_eq!(prices.len(), 1);
    let (ask, bid) = market_for(42, "DD1391-100", "10");
    // The job keeps its user-facing key; StockX sends no last sale, none is stored.
    assert_eq!(
        (
            prices[0].sku.as_str(),
            prices[0].size.as_deref(),
            prices[0].lowest_ask,
            prices[0].highest_bid,
            prices[0].last_sale
        ),
        ("DD1391-100", Some("10"), ask, bid, None)
    );
    let runs = recent_runs(&*fixture.ledger, 1).expect("runs");
    assert_eq!(runs[0].calls_made, 3);
    // The catalog is cached: the style's product, the product's variant list.
    assert_eq!(
        store::cached_stockx_style(&*fixture.ledger, "DD1391-100", now_ts()).expect("cache"),
        Some(store::CachedStyle::Product {
            product_id: product_uuid(42, "DD1391-100", 0)
        })
    );
    assert_eq!(
        store::cached_stockx_variant(
            &*fixture.ledger,
            &product_uuid(42, "DD1391-100", 0),
            "10",
            now_ts()
        )
        .expect("cache"),
        store::CachedVariant::Variant {
            variant_id: variant_uuid(42, "DD1391-100", "10", 0)
        }
    );
}

#[tokio::test]
async fn a_warm_lookup_costs_one_market_data_call() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let context = fixture.stockx_context(&sim, "key-1");
    fixture.enqueue("stockx", "DD1391-100", Some("10"), JobPriority::Hot);
    context.run_once().await.expect("warm-up run");
    assert_eq!(calls(&sim).await, (1, 1, 1));
    // The same key again (a refresh), another size of the same product, and a size
    // named in another chart of StockX's size chart ("UK 9" is US M 10 here).
    let again = fixture
        .enqueue("stockx", "DD1391-100", Some("10"), JobPriority::Hot)
        .id();
    let other = fixture
        .enqueue("stockx", "dd1391-100", Some("9.5"), JobPriority::Hot)
        .id();
    let uk = fixture
        .enqueue("stockx", "DD1391-100", Some("UK 9"), JobPriority::Hot)
        .id();
    let outcome = context.run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 3,
            failed: 0
        }
    );
    for id in [again, other, uk] {
        assert_eq!(fixture.job(id).state, JobState::Succeeded);
    }
    // Three lookups, three calls: market data only.
    assert_eq!(calls(&sim).await, (1, 1, 4));
    let prices = market_prices(&*fixture.ledger, 10).expect("prices");
    let uk_price = prices
        .iter()
        .find(|price| price.size.as_deref() == Some("UK 9"))
        .expect("the UK 9 lookup wrote its price");
    assert_eq!(
        (uk_price.lowest_ask, uk_price.highest_bid),
        market_for(42, "DD1391-100", "10")
    );
}

#[tokio::test]
async fn a_style_stockx_does_not_know_is_remembered_as_a_miss() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let context = fixture.stockx_context(&sim, "key-1");
    let first = fixture
        .enqueue("stockx", "UNKNOWN-42", Some("10"), JobPriority::Hot)
        .id();
    context.run_once().await.expect("run");
    assert_eq!(
        (fixture.job(first).state, fixture.job(first).attempts),
        (JobState::NotFound, 0)
    );
    assert_eq!(calls(&sim).await, (1, 0, 0));
    // Asked again (another size too): answered from the miss cache, no call spent.
    let second = fixture
        .enqueue("stockx", "UNKNOWN-42", Some("10"), JobPriority::Manual)
        .id();
    let third = fixture
        .enqueue("stockx", "UNKNOWN-42", Some("11"), JobPriority::Manual)
        .id();
    context.run_once().await.expect("run");
    for id in [second, third] {
        let job = fixture.job(id);
        assert_eq!((job.state, job.attempts), (JobState::NotFound, 0));
        assert!(
            job.error
                .as_deref()
                .unwrap_or_default()
                .contains("remembered miss"),
            "{:?}",
            job.error
        );
    }
    assert_eq!(calls(&sim).await, (1, 0, 0));
    let runs = recent_runs(&*fixture.ledger, 1).expect("runs");
    assert_eq!((runs[0].not_found, runs[0].calls_made), (2, 0));
}

#[tokio::test]
async fn a_product_stockx_relisted_is_resolved_again_once() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let context = fixture.stockx_context(&sim, "key-1");
    fixture.enqueue("stockx", "CW2288-111", Some("10"), JobPriority::Hot);
    context.run_once().await.expect("warm-up run");
    assert_eq!(calls(&sim).await, (1, 1, 1));

    // StockX gives the product new ids: the cached product id answers 404.
    let http = reqwest::Client::new();
    http.post(format!("{}/_sim/stockx/catalog/relist", sim.base_url()))
        .json(&serde_json::json!({"styleId": "CW2288-111"}))
        .send()
        .await
        .expect("relist")
        .error_for_status()
        .expect("relisted");
    let id = fixture
        .enqueue("stockx", "CW2288-111", Some("10"), JobPriority::Hot)
        .id();
    context.run_once().await.expect("run");
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 0));
    // The stale market-data call, then search, variants and market data once more.
    assert_eq!(calls(&sim).await, (2, 2, 3));
    assert_eq!(stockx_stats(&sim).await["not_found"].as_u64(), Some(1));
    assert_eq!(
        store::cached_stockx_style(&*fixture.ledger, "CW2288-111", now_ts()).expect("cache"),
        Some(store::CachedStyle::Product {
            product_id: product_uuid(42, "CW2288-111", 1)
        })
    );

    // Only the variants get new ids: the cached variant answers StockX's 400 validation
    // error, and the style is resolved again, once.
    http.post(format!("{}/_sim/stockx/catalog/relist", sim.base_url()))
        .json(&serde_json::json!({"styleId": "CW2288-111", "variantsOnly": true}))
        .send()
        .await
        .expect("relist")
        .error_for_status()
        .expect("relisted");
    let id = fixture
        .enqueue("stockx", "CW2288-111", Some("10"), JobPriority::Hot)
        .id();
    context.run_once().await.expect("run");
    assert_eq!(fixture.job(id).state, JobState::Succeeded);
    assert_eq!(calls(&sim).await, (3, 3, 5));
    assert_eq!(stockx_stats(&sim).await["bad_request"].as_u64(), Some(1));
}

#[tokio::test]
async fn a_size_or_variant_stockx_does_not_have_ends_not_found_not_failed() {
    let sim = TestSim::start(SimConfig::default()).await;
    let fixture = JobsFixture::new("stockx", "", &[("stockx", big())]).await;
    let context = fixture.stockx_context(&sim, "key-1");
    let id = fixture
        .enqueue("stockx", "DD1391-100", Some("99"), JobPriority::Hot)
        .id();
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
            .contains("no size \"99\""),
        "{:?}",
        job.error
    );
    // Resolution cost a search and the variant list; no market data was asked.
    assert_eq!(calls(&sim).await, (1, 1, 0));

    // StockX's answer to a variant that is not the product's: a 400 validation error in
    // its PublicApiError shape, which the client reads as "not found", not a failure.
    let client = client(&sim);
    let product = client
        .search_style("DD1391-100")
        .await
        .expect("search")
        .expect("the style is in the catalog");
    let foreign = variant_uuid(42, "CW2288-111", "10", 0);
    let err = client
        .market_data(&product.product_id, &foreign)
        .await
        .expect_err("a foreign variant is refused");
    let ProviderError::NotFound { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("Variant does not belong to the product."),
        "{message}"
    );
}

#[tokio::test]
async fn the_simulator_speaks_stockx_v2_and_refuses_what_stockx_refuses() {
    let sim = TestSim::start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}/oauth/token", sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "c"),
            ("client_secret", "s"),
            ("audience", "gateway.stockx.com"),
            ("refresh_token", "r"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let bearer = token["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let get = |path: String| {
        http.get(format!("{}{path}", sim.base_url()))
            .bearer_auth(&bearer)
            .header("x-api-key", "key-1")
            .send()
    };
    let search = get("/v2/catalog/search?query=dd1391-100&pageNumber=1&pageSize=10".to_string())
        .await
        .expect("search");
    assert_eq!(search.status(), 200);
    let search: serde_json::Value = search.json().await.expect("search json");
    for field in ["count", "pageSize", "pageNumber", "hasNextPage", "products"] {
        assert!(
            search.get(field).is_some(),
            "search lacks {field}: {search}"
        );
    }
    let product = search["products"]
        .as_array()
        .expect("products")
        .iter()
        .find(|product| product["styleId"] == "DD1391-100")
        .expect("the style's product is among the hits")
        .clone();
    let product_id = product["productId"]
        .as_str()
        .expect("productId")
        .to_string();
    assert_eq!(product_id, product_uuid(42, "DD1391-100", 0));
    let variants: serde_json::Value = get(format!("/v2/catalog/products/{product_id}/variants"))
        .await
        .expect("variants")
        .json()
        .await
        .expect("variants json");
    let ten = variants
        .as_array()
        .expect("a variant list")
        .iter()
        .find(|variant| variant["variantValue"] == "10")
        .expect("size 10")
        .clone();
    assert_eq!(ten["sizeChart"]["defaultConversion"]["type"], "us m");
    let variant_id = ten["variantId"].as_str().expect("variantId").to_string();
    let market = get(format!(
        "/v2/catalog/products/{product_id}/variants/{variant_id}/market-data?currencyCode=USD"
    ))
    .await
    .expect("market data");
    assert_eq!(market.status(), 200);
    let market: serde_json::Value = market.json().await.expect("market json");
    for field in [
        "productId",
        "variantId",
        "currencyCode",
        "lowestAskAmount",
        "highestBidAmount",
        "sellFasterAmount",
        "earnMoreAmount",
        "flexLowestAskAmount",
    ] {
        assert!(
            market.get(field).is_some(),
            "market data lacks {field}: {market}"
        );
    }
    // StockX's market data has no last sale; neither does the simulator's.
    assert!(market.get("lastSaleAmount").is_none(), "{market}");
    // The style id in place of the product UUID (the old shortcut) is not a product.
    let by_style = get("/v2/catalog/products/DD1391-100/variants/10/market-data".to_string())
        .await
        .expect("market data");
    assert_eq!(by_style.status(), 404);
    let body: serde_json::Value = by_style.json().await.expect("error json");
    assert_eq!(body["statusCode"], 404);
    assert!(body["message"].is_string(), "{body}");
    // A variant of another product: StockX's validation error.
    let foreign = variant_uuid(42, "DD1391-100-W", "10", 0);
    let wrong = get(format!(
        "/v2/catalog/products/{product_id}/variants/{foreign}/market-data"
    ))
    .await
    .expect("market data");
    assert_eq!(wrong.status(), 400);
    let body: serde_json::Value = wrong.json().await.expect("error json");
    assert_eq!(
        (body["statusCode"].as_u64(), body["message"].as_str()),
        (Some(400), Some("Variant does not belong to the product."))
    );
    // Search parameters out of StockX's bounds.
    let too_big = get("/v2/catalog/search?query=x&pageSize=51".to_string())
        .await
        .expect("search");
    assert_eq!(too_big.status(), 400);
    // No api key: 401 in the same shape.
    let anonymous = http
        .get(format!("{}/v2/catalog/search?query=x", sim.base_url()))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("search");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn catalog_calls_are_grants_of_the_stockx_bucket() {
    let sim = TestSim::start(SimConfig::default()).await;
    // Two grants in the bucket and practically no refill; a grant may wait one second.
    let fixture = JobsFixture::new(
        "stockx",
        "job_lease = \"2s\"",
        &[("stockx", BucketSpec::new(0.0001, 2.0))],
    )
    .await;
    let id = fixture
        .enqueue("stockx", "DD1391-100", Some("10"), JobPriority::Hot)
        .id();
    let context = fixture.stockx_context(&sim, "key-1");
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    // The search and the variant list took the two grants; market data got none and
    // was not called. The job goes back without consuming an attempt.
    assert_eq!(calls(&sim).await, (1, 1, 0));
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    let runs = recent_runs(&*fixture.ledger, 1).expect("runs");
    assert_eq!(
        (runs[0].calls_made, runs[0].outcome.as_str()),
        (2, "deferred")
    );
}

#[tokio::test]
async fn a_cold_lookup_yields_to_a_manual_refresh_after_its_catalog_step_and_loses_no_call() {
    let sim = TestSim::start(SimConfig::default()).await;
    // One grant every 2 s (burst 1): the search goes at once, the variant list at 2 s,
    // each market-data call 2 s after the one before.
    let fixture = JobsFixture::new(
        "stockx",
        "job_lease = \"30s\"",
        &[("stockx", BucketSpec::new(0.5, 1.0))],
    )
    .await;
    let background = fixture
        .enqueue("stockx", "DD1391-100", Some("10"), JobPriority::Background)
        .id();
    // A manual refresh of another size of the same style that becomes due 1 to 2 s from
    // now: after the background lookup's search (at once), by the time its variant list
    // is in (2 s), so the lookup meets it between its calls.
    let manual = store::enqueue_at(
        &*fixture.ledger,
        &store::NewJob {
            provider: "stockx".to_string(),
            sku: "DD1391-100".to_string(),
            size: Some("11".to_string()),
            priority: JobPriority::Manual,
            source: "test".to_string(),
        },
        now_ts() + 2,
    )
    .expect("enqueue")
    .id();
    let context = fixture.stockx_context(&sim, "key-1");
    let outcome = context.run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 2,
            failed: 0
        }
    );
    for id in [background, manual] {
        let job = fixture.job(id);
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Succeeded, 0),
            "{job:?}"
        );
    }
    // The background lookup went back after its variant list (deferred once), the manual
    // refresh took the next grant, and the lookup then finished from the cache: one
    // search, one variant list, two market-data calls; no call lost.
    assert!(
        fixture.job(manual).finished_at <= fixture.job(background).finished_at,
        "the manual refresh finished first"
    );
    assert_eq!(calls(&sim).await, (1, 1, 2));
    let runs = recent_runs(&*fixture.ledger, 1).expect("runs");
    assert_eq!(
        (
            runs[0].jobs_run,
            runs[0].succeeded,
            runs[0].deferred,
            runs[0].calls_made
        ),
        (3, 2, 1, 4)
    );
}
