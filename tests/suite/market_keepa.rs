//! Keepa in its real shape (issue 15, point 4): the request forms the keepa Python client
//! uses (trailing slash), all 36 `csv` history slots, Keepa's `stats` object, integer
//! token fields and Keepa's error bodies. A recorded-shape fixture
//! (tests/fixtures/keepa/) is parsed by marketsync's client, and it and the simulator's
//! answers are checked against the structural expectations of the Python client's parsers
//! (`keepa/utils.py` `parse_csv`, `_parse_stats`); the Python package itself is not run
//! here.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use marketsync::domain::now_ts;
use marketsync::provider::keepa::{KeepaClient, KeepaProductOutcome};
use marketsync::provider::ProviderError;
use marketsync::shapes::jobs::{JobPriority, JobState};
use marketsync::shapes::RunOutcome;
use marketsync::sim::SimConfig;
use marketsync::store::LedgerStore;
use serde_json::Value;

use super::jobs::{big, JobsFixture};
use crate::common::TestSim;

/// Keepa's csv indices whose history is `[time, value, shipping]` triples (the keepa
/// Python client's `csv_indices` names containing `SHIPPING`).
const SHIPPING_SLOTS: &[usize] = &[7, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 32];
/// Stats keys `_parse_stats` skips.
const SKIPPED_STATS: &[&str] = &[
    "buyBoxSellerId",
    "sellerIdsLowestFBA",
    "sellerIdsLowestFBM",
    "buyBoxShippingCountry",
    "buyBoxAvailabilityMessage",
];

/// What the keepa Python client's parsers need of one product object: `parse_csv` reads
/// `csv[0]` to `csv[35]` (fewer slots is its IndexError) and splits each non-empty slot
/// into pairs, or triples for the shipping types; `_parse_stats` reads every stats array
/// by csv index, as `[time, value]` pairs when any entry is a list.
fn python_parser_accepts(product: &Value) -> Result<(), String> {
    let csv = product
        .get("csv")
        .and_then(Value::as_array)
        .ok_or("no csv array")?;
    if csv.len() < 36 {
        return Err(format!("csv has {} slots; parse_csv reads 36", csv.len()));
    }
    for (index, slot) in csv.iter().enumerate() {
        let values = match slot {
            Value::Null => continue,
            Value::Array(values) => values,
            other => return Err(format!("csv[{index}] is {other}, not a list or null")),
        };
        if values.iter().any(|value| !value.is_i64()) {
            return Err(format!("csv[{index}] holds a non-integer"));
        }
        let width = if SHIPPING_SLOTS.contains(&index) {
            3
        } else {
            2
        };
        if values.len() % width != 0 {
            return Err(format!(
                "csv[{index}] has {} numbers, not a multiple of {width}",
                values.len()
            ));
        }
    }
    let Some(stats) = product.get("stats").filter(|stats| !stats.is_null()) else {
        return Ok(());
    };
    let stats = stats.as_object().ok_or("stats is not an object")?;
    for (key, value) in stats {
        if SKIPPED_STATS.contains(&key.as_str()) {
            continue;
        }
        let Some(list) = value.as_array().filter(|list| !list.is_empty()) else {
            continue;
        };
        let timed = list.iter().any(Value::is_array);
        for (index, item) in list.iter().take(36).enumerate() {
            if item.is_null() {
                continue;
            }
            if timed {
                let pair = item
                    .as_array()
                    .filter(|pair| pair.len() == 2 && pair.iter().all(Value::is_i64))
                    .ok_or(format!("stats.{key}[{index}] is not [time, value]"))?;
                let _ = pair;
            } else if !(item.is_number() || item.is_boolean()) {
                return Err(format!("stats.{key}[{index}] is {item}, not a number"));
            }
        }
    }
    Ok(())
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/keepa/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

/// The integer token fields every Keepa answer carries.
fn assert_integer_envelope(body: &Value) {
    for field in [
        "timestamp",
        "tokensLeft",
        "refillIn",
        "refillRate",
        "tokensConsumed",
        "processingTimeInMs",
    ] {
        assert!(body[field].is_i64(), "{field} is not an integer: {body}");
    }
}

#[tokio::test]
async fn keepa_answers_the_python_clients_request_forms_with_and_without_the_slash() {
    let sim = TestSim::start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    for path in ["/product/?", "/product?"] {
        let response = http
            .get(format!(
                "{}{path}key=k&domain=1&asin=B07FZ8S74R&stats=365&history=1&rating=0&buybox=0",
                sim.base_url()
            ))
            .send()
            .await
            .expect("product");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_integer_envelope(&body);
        assert_eq!(body["refillRate"].as_i64(), Some(20));
        assert_eq!(body["products"][0]["asin"], "B07FZ8S74R");
    }
    for path in ["/token/?", "/token?"] {
        let response = http
            .get(format!("{}{path}key=k", sim.base_url()))
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_integer_envelope(&body);
        assert_eq!(body["tokensConsumed"].as_i64(), Some(0));
    }
}

#[tokio::test]
async fn keepa_products_carry_all_36_history_slots_and_the_stats_object() {
    let sim = TestSim::start(SimConfig::default()).await;
    let http = reqwest::Client::new();
    let body: Value = http
        .get(format!(
            "{}/product/?key=k&domain=1&asin=B07FZ8S74R,B000TEST01&stats=180&history=1&buybox=1",
            sim.base_url()
        ))
        .send()
        .await
        .expect("product")
        .json()
        .await
        .expect("json");
    let products = body["products"].as_array().expect("products");
    assert_eq!(products.len(), 2);
    for product in products {
        python_parser_accepts(product).expect("the Python client's parsers accept it");
        let csv = product["csv"].as_array().expect("csv");
        assert_eq!(csv.len(), 36);
        // Types without history are null (USED, LISTPRICE, ...); BUY_BOX_SHIPPING (asked
        // with buybox=1) comes as triples.
        assert!(csv[2].is_null() && csv[4].is_null());
        assert_eq!(csv[18].as_array().map(|slot| slot.len() % 3), Some(0));
        let stats = &product["stats"];
        for key in [
            "current",
            "avg",
            "avg30",
            "avg90",
            "avg180",
            "avg365",
            "min",
            "max",
            "minInInterval",
            "maxInInterval",
            "atIntervalStart",
        ] {
            assert_eq!(
                stats[key].as_array().map(Vec::len),
                Some(36),
                "stats.{key}: {stats}"
            );
        }
        assert_eq!(stats["current"][2].as_i64(), Some(-1));
        assert!(stats["min"][2].is_null());
        assert_eq!(stats["min"][1].as_array().map(Vec::len), Some(2));
        // marketsync's parser reads it as a complete product.
        let (_, outcome) = marketsync::provider::keepa::judge_product(product, 1);
        let KeepaProductOutcome::Complete(data) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(data.avg_365_new, stats["avg365"][1].as_i64());
        assert_eq!(data.history_points, 52);
    }
    // Without stats= there is no stats object; the history is still all 36 slots.
    let plain: Value = http
        .get(format!(
            "{}/product?key=k&domain=1&asin=B07FZ8S74R&history=1",
            sim.base_url()
        ))
        .send()
        .await
        .expect("product")
        .json()
        .await
        .expect("json");
    let product = &plain["products"][0];
    assert!(product.get("stats").is_none(), "{product}");
    assert_eq!(product["csv"].as_array().map(Vec::len), Some(36));
    assert!(
        product["csv"][18].is_null(),
        "no buybox=1, no buy box history"
    );
}

/// Serves `body` with `status` for every `/product` request on a loopback port.
async fn serve_fixture(status: StatusCode, body: Value) -> String {
    let app = axum::Router::new().route(
        "/product",
        axum::routing::get(move || {
            let body = body.clone();
            async move { (status, axum::Json(body)).into_response() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_recorded_keepa_answer_in_the_python_clients_shape_parses() {
    let answer = fixture("product_response.json");
    let product = &answer["products"][0];
    python_parser_accepts(product).expect("the fixture has the Python client's shape");
    let base = serve_fixture(StatusCode::OK, answer.clone()).await;
    let client = KeepaClient::new(reqwest::Client::new(), &base, "k", "1");
    let (balance, result) = client.products(&["B07FZ8S74R".to_string()]).await;
    let balance = balance.expect("the answer's balance");
    assert_eq!(
        (
            balance.tokens_left,
            balance.refill_in_ms,
            balance.refill_rate_per_min
        ),
        (1187, 41_877, 20.0)
    );
    let mut outcomes = result.expect("parsed");
    let Some(KeepaProductOutcome::Complete(data)) = outcomes.remove("B07FZ8S74R") else {
        panic!("not complete")
    };
    assert_eq!(
        (
            data.current_amazon,
            data.current_new,
            data.sales_rank,
            data.avg_90_new,
            data.avg_365_new,
            data.history_points
        ),
        (
            Some(4999),
            Some(4699),
            Some(1008),
            Some(4290),
            Some(4310),
            11
        )
    );

    // Keepa's 429: the error object beside the balance; the wait comes from the balance
    // (-6 tokens, 20/min, next refill in 13.25 s: positive after that refill).
    let base = serve_fixture(
        StatusCode::TOO_MANY_REQUESTS,
        fixture("not_enough_token.json"),
    )
    .await;
    let client = KeepaClient::new(reqwest::Client::new(), &base, "k", "1");
    let (balance, result) = client.products(&["B07FZ8S74R".to_string()]).await;
    assert_eq!(balance.map(|balance| balance.tokens_left), Some(-6));
    let Err(ProviderError::QuotaExceeded {
        retry_after,
        message,
        ..
    }) = result
    else {
        panic!("{result:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_millis(13_250)));
    assert!(message.contains("NOT_ENOUGH_TOKEN"), "{message}");
}

#[tokio::test]
async fn keepa_errors_have_keepas_shape_and_status_codes() {
    let mut config = SimConfig::default();
    config.keepa.rejected_keys = vec!["bad-key".to_string()];
    config.keepa.expired_keys = vec!["old-key".to_string()];
    config.keepa.initial_tokens = Some(0);
    let sim = TestSim::start(config).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", sim.base_url())).send();
    for (path, status, kind) in [
        (
            "/product/?key=bad-key&domain=1&asin=B07FZ8S74R",
            400,
            "REQUEST_REJECTED",
        ),
        ("/token/?key=bad-key", 400, "REQUEST_REJECTED"),
        (
            "/product/?key=old-key&domain=1&asin=B07FZ8S74R",
            402,
            "PAYMENT_REQUIRED",
        ),
        ("/product/?key=k&domain=1&asin=", 400, "REQUEST_REJECTED"),
        (
            "/product/?key=k&domain=1&asin=B07FZ8S74R",
            429,
            "NOT_ENOUGH_TOKEN",
        ),
    ] {
        let response = get(path).await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["type"], kind, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"].get("details").is_some(), "{body}");
        assert_integer_envelope(&body);
    }
    // The 429 carries the balance the wait is computed from.
    let body: Value = get("/product?key=k&domain=1&asin=B07FZ8S74R")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(body["tokensLeft"]
        .as_i64()
        .is_some_and(|tokens| tokens <= 0));
    assert!(body["refillIn"].as_i64().is_some_and(|ms| ms > 0), "{body}");

    // marketsync reads an unknown key as refused credentials, not a product failure.
    let client = KeepaClient::new(reqwest::Client::new(), &sim.base_url(), "bad-key", "1");
    let err = client.token_status().await.expect_err("refused");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
}

#[tokio::test]
async fn a_keepa_key_keepa_rejects_cools_the_account_down_without_consuming_attempts() {
    let mut config = SimConfig::default();
    config.keepa.rejected_keys = vec!["test-key".to_string()];
    let sim = TestSim::start(config).await;
    let fixture = JobsFixture::new("keepa", "", &[("keepa", big())]).await;
    let id = fixture
        .enqueue("keepa", "B07FZ8S74R", None, JobPriority::Hot)
        .id();
    let context = fixture.keepa_context(&sim);
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { ref reason, .. } if reason == "auth"),
        "{outcome:?}"
    );
    let job = fixture.job(id);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
    let cooldown = fixture
        .ledger
        .active_cooldown("keepa:acct", now_ts())
        .expect("cooldown")
        .expect("an auth cooldown is persisted");
    assert_eq!(cooldown.reason, "auth");
}
