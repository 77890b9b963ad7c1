//! The eBay purchase stream (`purchases`, Trading API GetOrders with OrderRole=Buyer, XML
//! over `POST /ws/api.dll`) end to end against the simulator over real HTTP and a real
//! SQLite file, the clocks pinned together (`ebay::EbayFixture`): every purchase stored in
//! its latest state and every change of OrderStatus, PaidTime and ShippedTime in the
//! history; PageNumber paging; Trading's refusal of an application token; hostile pages
//! bounded.

use std::collections::BTreeSet;

use marketsync::domain::format_millis;
use marketsync::provider::ebay::{EbayClient, EbayCredentials, EbayEndpoints};
use marketsync::provider::ebay_trading::trading_call;
use marketsync::provider::ProviderError;
use marketsync::shapes::cursor::CursorStore;
use marketsync::shapes::RunOutcome;
use marketsync::sim::ebay::{changes_between, purchases_created, EbaySimConfig, PURCHASES_PER_DAY};

use super::ebay::{pinned_start, sim_config, EbayFixture, DAY, HOUR, LAG, SEED, SELLER};
use crate::common::TestSim;

fn config(t0: i64) -> EbaySimConfig {
    EbaySimConfig {
        orders_per_day: 1,
        orders_since: t0 - 5 * DAY,
        ..EbaySimConfig::default()
    }
}

/// (order id, OrderStatus, PaidTime, ShippedTime) stored for the account.
fn stored(fixture: &EbayFixture) -> BTreeSet<(String, String, Option<String>, Option<String>)> {
    fixture.ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT order_id, order_status, paid_time, shipped_time FROM ebay_purchases
                 WHERE account = 'shop'",
            )
            .expect("prepare");
        statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .expect("query")
            .collect::<Result<BTreeSet<_>, _>>()
            .expect("rows")
    })
}

#[tokio::test]
async fn ebay_purchases_store_every_purchase_and_exactly_its_changes() {
    let t0 = pinned_start();
    let ebay = config(t0);
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    // Pages of 4 orders, so a day (6 purchases) takes two pages and paging is exercised.
    let fixture = EbayFixture::new(
        &sim,
        &["purchases"],
        "start = \"5days\"\npage_limit = 4",
        t0,
    );
    let context = fixture.context("purchases");
    let step = HOUR;
    let steps = 72;
    for index in 0..=steps {
        let now = t0 + index * step;
        fixture.set_now(now).await;
        let logged = fixture.requests().await.len();
        let outcome = context.run_once().await.expect("run");
        assert!(
            matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
            "step {index}: {outcome:?}"
        );
        let requests = fixture.requests().await;
        for request in &requests[logged..] {
            // The simulated clock outruns the 2 h access token: a refused call (read
            // before its query) is followed by a refresh and the same call again.
            if request.from_ms.is_none() {
                continue;
            }
            assert_eq!(request.operation, "ebay.tradingGetOrders");
            assert_eq!(request.status, 200, "{request:?}");
            assert_eq!(request.limit, 4);
            assert_eq!(request.offset % 4, 0);
            let (from, to) = (request.from_ms.expect("from"), request.to_ms.expect("to"));
            assert!(
                to + 1 - from <= DAY * 1000,
                "a window is at most a day: {request:?}"
            );
        }
        if index == 0 {
            // The first run catches up five days: a window per day, and a second page
            // on a day with more than 4 purchases (how many a day has follows the
            // simulator's seed and the day, i.e. the clock the test starts at: at least
            // one day in five takes two pages, not every day does).
            assert!(requests.len() - logged >= 6, "{:?}", &requests[logged..]);
            assert!(requests[logged..].iter().any(|request| request.offset == 4));
        }
    }
    let last = t0 + steps * step;
    // The last window ends at last − LAG: every purchase is stored as the simulator
    // served it at the second before (a later modification waits for the next window).
    let seen = last - LAG - 1;
    let served: BTreeSet<(String, String, Option<String>, Option<String>)> =
        purchases_created(SEED, &ebay, SELLER, t0 - 5 * DAY, last - LAG)
            .into_iter()
            .map(|bought| {
                (
                    bought.order_id.clone(),
                    bought.status_at(seen).to_string(),
                    (seen >= bought.paid_at).then(|| format_millis(bought.paid_at * 1000)),
                    (seen >= bought.shipped_at).then(|| format_millis(bought.shipped_at * 1000)),
                )
            })
            .collect();
    assert!(
        served.len() >= 7 * PURCHASES_PER_DAY as usize,
        "{} purchases",
        served.len()
    );
    assert_eq!(stored(&fixture), served);
    let expected: BTreeSet<(String, String, String, String)> =
        changes_between(SEED, &ebay, SELLER, t0 + 1, last - LAG)
            .into_iter()
            .filter(|change| change.stream == "purchases")
            .map(|change| {
                (
                    change.resource_id,
                    change.field,
                    change.before,
                    change.after,
                )
            })
            .collect();
    for field in ["OrderStatus", "PaidTime", "ShippedTime"] {
        assert!(
            expected.iter().any(|change| change.1 == field),
            "{field}: {expected:?}"
        );
    }
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let recorded: Vec<(String, String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(event.stream, "purchases");
            (
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
    assert_eq!(recorded_set, expected);
}

fn client(base: &str, refresh_token: Option<&str>) -> EbayClient {
    EbayClient::new(
        reqwest::Client::new(),
        EbayEndpoints::new(base, &format!("{base}/identity/v1/oauth2/token")),
        EbayCredentials {
            client_id: "test-client".to_string(),
            client_secret: "test-secret".to_string(),
            refresh_token: refresh_token.map(str::to_string),
        },
        "EBAY_US",
    )
}

fn get_orders(from: i64, to: i64, role: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><GetOrdersRequest xmlns="urn:ebay:apis:eBLBaseComponents"><ModTimeFrom>{}</ModTimeFrom><ModTimeTo>{}</ModTimeTo><OrderRole>{role}</OrderRole></GetOrdersRequest>"#,
        format_millis(from * 1000),
        format_millis(to * 1000)
    )
}

/// Trading refuses an application token with Ack Failure 21916984 (HTTP 200): the client
/// fetches a fresh token once, then reports an auth error naming the fix. A user token
/// reads; the simulator refuses what Trading refuses (a 31-day ModTime range, another
/// call name, a missing site header) the Trading way.
#[tokio::test]
async fn ebay_purchases_refuse_an_application_token_the_trading_way() {
    let t0 = pinned_start();
    let sim = TestSim::start(sim_config(config(t0))).await;
    let base = sim.base_url();
    let body = get_orders(t0 - DAY, t0, "Buyer");
    let app_only = client(&base, None);
    match trading_call(&app_only, "tradingGetOrders", "GetOrders", &body, 1 << 20).await {
        Err(ProviderError::Auth { message, .. }) => {
            assert!(message.contains("21916984"), "{message}");
            assert!(message.contains("marketsync auth ebay"), "{message}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    let user = client(&base, Some(SELLER));
    let page = trading_call(&user, "tradingGetOrders", "GetOrders", &body, 1 << 20)
        .await
        .expect("a user token reads");
    let text = String::from_utf8(page).expect("utf-8");
    assert!(text.contains("<Ack>Success</Ack>"), "{text}");
    assert!(text.contains("<OrderArray><Order>"), "{text}");
    let too_wide = get_orders(t0 - 31 * DAY - HOUR, t0 - HOUR, "Buyer");
    let as_seller = get_orders(t0 - DAY, t0, "Seller");
    for (call, bad) in [
        ("GetOrders", too_wide.as_str()),
        ("GetOrders", as_seller.as_str()),
        ("GetMyeBayBuying", body.as_str()),
    ] {
        match trading_call(&user, "tradingGetOrders", call, bad, 1 << 20).await {
            Err(ProviderError::InvalidResponse { message, .. }) => {
                assert!(message.contains("Ack Failure"), "{message}");
            }
            other => panic!("{call}: expected a refusal, got {other:?}"),
        }
    }
    let unknown_token = reqwest::Client::new()
        .post(format!("{base}/ws/api.dll"))
        .header("X-EBAY-API-CALL-NAME", "GetOrders")
        .header("X-EBAY-API-IAF-TOKEN", "not-a-token")
        .body(body.clone())
        .send()
        .await
        .expect("call");
    assert_eq!(
        unknown_token.status(),
        200,
        "Trading refuses with 200 and Ack Failure"
    );
    let text = unknown_token.text().await.expect("body");
    assert!(
        text.contains("<Ack>Failure</Ack>") && text.contains("<ErrorCode>21916984</ErrorCode>"),
        "{text}"
    );
}

/// A Trading page larger than `max_response_bytes` fails its window: nothing applied,
/// the cursor stays, the error names the limit.
#[tokio::test]
async fn ebay_purchases_oversized_page_fails_the_window_and_applies_nothing() {
    let t0 = pinned_start();
    let sim = TestSim::start(sim_config(config(t0))).await;
    let fixture = EbayFixture::new(
        &sim,
        &["purchases"],
        "start = \"2days\"\nmax_response_bytes = 1500",
        t0,
    );
    fixture.set_now(t0).await;
    let outcome = fixture.context("purchases").run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    let snapshot = fixture.snapshot("purchases");
    assert_eq!(snapshot.cursor_ts, t0 - 2 * DAY, "the cursor stays");
    let error = snapshot.last_error.expect("last_error");
    assert!(error.contains("exceeds the limit of 1500 bytes"), "{error}");
    assert!(stored(&fixture).is_empty(), "nothing applied");
}
