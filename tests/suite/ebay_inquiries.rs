//! The eBay Post-Order inquiry stream (`inquiries`, GET /post-order/v2/inquiry/search)
//! end to end against the simulator over real HTTP and a real SQLite file, the clocks
//! pinned together (`ebay::EbayFixture`): every inquiry stored in its latest status, every
//! status change (OPEN → WAITING_BUYER_RESPONSE → CLOSED) in the history exactly as the
//! simulator made it; offset paging; application tokens refused; hostile pages bounded.

use std::collections::BTreeSet;

use marketsync::provider::ebay::{EbayApi, EbayClient, EbayCredentials, EbayEndpoints};
use marketsync::provider::ProviderError;
use marketsync::shapes::cursor::CursorStore;
use marketsync::shapes::RunOutcome;
use marketsync::sim::ebay::{changes_between, inquiries_between, EbaySimConfig};
use serde_json::json;

use super::ebay::{pinned_start, sim_config, EbayFixture, DAY, HOUR, LAG, SEED, SELLER};
use crate::common::{ebay_token, ebay_user_token, TestSim, EBAY_TEST_CLIENT};

const BASE_SCOPE: &str = "https://api.ebay.com/oauth/api_scope";

fn config(t0: i64) -> EbaySimConfig {
    EbaySimConfig {
        orders_per_day: 20,
        return_every: 10,
        orders_since: t0 - 14 * DAY,
        ..EbaySimConfig::default()
    }
}

#[tokio::test]
async fn ebay_inquiries_store_every_inquiry_and_exactly_its_status_changes() {
    let t0 = pinned_start();
    let ebay = config(t0);
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["inquiries"], "start = \"14days\"", t0);
    let context = fixture.context("inquiries");
    // Catch up at t0 (first run: 14 windows of at most a day), then a run every 6
    // simulated hours for 8 days: an inquiry is OPEN for a day and WAITING_BUYER_RESPONSE
    // for two, so each status is seen.
    let step = 6 * HOUR;
    let steps = 32;
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
        let mine = &requests[logged..];
        if index == 0 {
            assert_eq!(mine.len(), 14, "one page per day-long window: {mine:?}");
        }
        for request in mine {
            // The simulated clock outruns the 2 h access token: a refused call (read
            // before its query) is followed by a refresh and the same call again.
            if request.from_ms.is_none() {
                continue;
            }
            assert_eq!(request.operation, "ebay.searchInquiries");
            assert_eq!(request.status, 200, "{request:?}");
            let (from, to) = (request.from_ms.expect("from"), request.to_ms.expect("to"));
            assert!(to + 1 - from <= 31 * DAY * 1000, "{request:?}");
            // A live run reads back to the oldest inquiry still open, never further than
            // the 30-day revisit; here none stays open longer than 3 days.
            if index > 0 {
                assert!(
                    from / 1000 >= now - 3 * DAY - step - LAG,
                    "step {index}: read back to {from}"
                );
            }
        }
    }
    let last = t0 + steps * step;
    let served: Vec<(String, String, String)> =
        inquiries_between(SEED, &ebay, SELLER, t0 - 14 * DAY, last - LAG)
            .into_iter()
            .map(|inquiry| {
                let cents = inquiry.claim_cents;
                (
                    inquiry.inquiry_id.clone(),
                    inquiry.status_at(last).to_string(),
                    format!("{}.{:02}", cents / 100, cents % 100),
                )
            })
            .collect();
    assert!(served.len() >= 20, "{} inquiries", served.len());
    let stored: Vec<(String, String, String)> = fixture.ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT inquiry_id, status, claim_value FROM ebay_inquiries
                 WHERE account = 'shop' ORDER BY creation_date, inquiry_id",
            )
            .expect("prepare");
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows")
    });
    assert_eq!(stored, served);
    let expected: BTreeSet<(String, String, String)> =
        changes_between(SEED, &ebay, SELLER, t0 + 1, last + 1)
            .into_iter()
            .filter(|change| change.stream == "inquiries")
            .map(|change| (change.resource_id, change.before, change.after))
            .collect();
    assert!(
        expected
            .iter()
            .any(|change| change.2 == "WAITING_BUYER_RESPONSE")
            && expected.iter().any(|change| change.2 == "CLOSED"),
        "{expected:?}"
    );
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let recorded: Vec<(String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(
                (event.stream.as_str(), event.field.as_str()),
                ("inquiries", "inquiryStatusEnum")
            );
            (
                event.resource_id.clone(),
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

/// The simulated inquiry search skips `offset` entries (Post-Order's PaginationOutput),
/// answers `limit` above 200 with a 400 and refuses a filter it does not serve.
#[tokio::test]
async fn ebay_inquiries_search_skips_offset_entries_and_refuses_what_it_does_not_serve() {
    let t0 = pinned_start();
    let ebay = config(t0);
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let base = sim.base_url();
    let user = ebay_user_token(&base, SELLER, Some(BASE_SCOPE)).await;
    let client = reqwest::Client::new();
    let from = marketsync::domain::format_millis((t0 - 14 * DAY) * 1000);
    let to = marketsync::domain::format_millis(t0 * 1000 - 1);
    let search = |extra: Vec<(&'static str, String)>| {
        let mut query = vec![
            ("inquiry_creation_date_range_from", from.clone()),
            ("inquiry_creation_date_range_to", to.clone()),
        ];
        query.extend(extra);
        client
            .get(format!("{base}/post-order/v2/inquiry/search"))
            .query(&query)
            .header("Authorization", format!("IAF {user}"))
            .send()
    };
    let whole: serde_json::Value = search(vec![("limit", "200".into())])
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|inquiry| {
                inquiry["inquiryId"]
                    .as_str()
                    .expect("inquiryId")
                    .to_string()
            })
            .collect()
    };
    let all = ids(&whole);
    assert!(all.len() > 6, "{} inquiries", all.len());
    assert_eq!(whole["paginationOutput"]["totalEntries"], all.len());
    assert_eq!(whole["totalNumberOfInquiries"], all.len());
    let page: serde_json::Value = search(vec![("limit", "3".into()), ("offset", "4".into())])
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&page), all[4..7].to_vec());
    for refused in [
        vec![("limit", "201".to_string())],
        vec![("inquiry_status", "OPEN".to_string())],
        vec![("fieldgroups", "EVERYTHING".to_string())],
    ] {
        let answer = search(refused.clone()).await.expect("call");
        assert_eq!(answer.status(), 400, "{refused:?}");
    }
}

/// The seller APIs take a user token: an application token (client-credentials grant)
/// gets eBay's 403 errorId 1100 on inquiry search, and the client names the scope and
/// the fix after its one refresh-and-retry.
#[tokio::test]
async fn ebay_inquiries_refuse_an_application_token() {
    let sim = TestSim::start(sim_config(EbaySimConfig::default())).await;
    let base = sim.base_url();
    let app = ebay_token(
        &base,
        EBAY_TEST_CLIENT,
        &[("grant_type", "client_credentials"), ("scope", BASE_SCOPE)],
    )
    .await;
    let raw = reqwest::Client::new()
        .get(format!("{base}/post-order/v2/inquiry/search"))
        .header("Authorization", format!("IAF {app}"))
        .send()
        .await
        .expect("call");
    assert_eq!(raw.status(), 403);
    assert_eq!(
        raw.text().await.expect("body"),
        marketsync::sim::ebay::ACCESS_DENIED_BODY
    );
    let app_only = EbayClient::new(
        reqwest::Client::new(),
        EbayEndpoints::new(&base, &format!("{base}/identity/v1/oauth2/token")),
        EbayCredentials {
            client_id: "test-client".to_string(),
            client_secret: "test-secret".to_string(),
            refresh_token: None,
        },
        "EBAY_US",
    );
    let answer = app_only
        .get_capped(
            "searchInquiries",
            EbayApi::PostOrder,
            "/post-order/v2/inquiry/search",
            &[],
            1 << 20,
        )
        .await;
    match answer {
        Err(ProviderError::Auth { message, .. }) => {
            assert!(message.contains("errorId 1100"), "{message}");
            assert!(message.contains("searchInquiries"), "{message}");
            assert!(message.contains("marketsync auth ebay"), "{message}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
}

/// An oversized page fails the window with nothing applied and the cursor where it was;
/// once the page is sane again the window is read and applied.
#[tokio::test]
async fn ebay_inquiries_oversized_page_fails_the_window_and_applies_nothing() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        oversize_bytes: 256 * 1024,
        ..config(t0)
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(
        &sim,
        &["inquiries"],
        "start = \"14days\"\nmax_response_bytes = 131072",
        t0,
    );
    fixture.set_now(t0).await;
    fixture
        .control(json!({"oversize_after": 3, "oversize_next": 1}))
        .await;
    let context = fixture.context("inquiries");
    let outcome = context.run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Deferred { .. }),
        "{outcome:?}"
    );
    let snapshot = fixture.snapshot("inquiries");
    // Three windows (days) were applied before the fourth page came oversized.
    assert_eq!(snapshot.cursor_ts, t0 - 14 * DAY + 3 * DAY);
    let error = snapshot.last_error.expect("last_error");
    assert!(
        error.contains("exceeds the limit of 131072 bytes"),
        "{error}"
    );
    assert_eq!(
        fixture.stats().await.oversized.get("ebay.searchInquiries"),
        Some(&1)
    );
    let stored_before: i64 = fixture.ledger.with_conn(|conn| {
        conn.query_row("SELECT COUNT(*) FROM ebay_inquiries", [], |row| row.get(0))
            .expect("count")
    });
    let served_before = inquiries_between(SEED, &ebay, SELLER, t0 - 14 * DAY, t0 - 11 * DAY).len();
    assert_eq!(stored_before, served_before as i64);
    let retry_at = snapshot.retry_at.expect("retry_at");
    fixture.set_now(retry_at).await;
    let later = context.run_once().await.expect("run");
    assert!(
        matches!(later, RunOutcome::Finished { failed: 0, .. }),
        "{later:?}"
    );
    let stored_after: i64 = fixture.ledger.with_conn(|conn| {
        conn.query_row("SELECT COUNT(*) FROM ebay_inquiries", [], |row| row.get(0))
            .expect("count")
    });
    assert_eq!(
        stored_after,
        inquiries_between(SEED, &ebay, SELLER, t0 - 14 * DAY, retry_at - LAG).len() as i64
    );
}
