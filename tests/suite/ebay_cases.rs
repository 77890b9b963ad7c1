//! The eBay Post-Order case stream (`cases`, GET /post-order/v2/casemanagement/search)
//! end to end against the simulator over real HTTP and a real SQLite file, the clocks
//! pinned together (`ebay::EbayFixture`): every case is stored in its latest status and
//! every status change (OPEN → WAITING_CS → CLOSED) is in the history, exactly as the
//! simulator made them.

use std::collections::BTreeSet;

use marketsync::shapes::cursor::CursorStore;
use marketsync::shapes::RunOutcome;
use marketsync::sim::ebay::{cases_between, changes_between, EbaySimConfig};

use super::ebay::{pinned_start, sim_config, EbayFixture, DAY, HOUR, LAG, SEED, SELLER};
use crate::common::{ebay_user_token, TestSim};

const BASE_SCOPE: &str = "https://api.ebay.com/oauth/api_scope";

#[tokio::test]
async fn ebay_cases_stores_every_case_and_exactly_its_status_changes() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 20,
        return_every: 2,
        orders_since: t0 - 14 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["cases"], "start = \"14days\"", t0);
    // Catch up at t0, then a run every 6 simulated hours for 8 days: a case is OPEN for a
    // day and WAITING_CS for at least a day and a half, so each status is seen.
    let step = 6 * HOUR;
    let steps = 32;
    for index in 0..=steps {
        let now = t0 + index * step;
        fixture.set_now(now).await;
        let logged = fixture.requests().await.len();
        let outcome = fixture.context("cases").run_once().await.expect("run");
        assert!(
            matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
            "step {index}: {outcome:?}"
        );
        // A live run reads back to the oldest case still open, not the whole 30-day
        // revisit: here no case stays open longer than 7 days.
        if index > 0 {
            for request in fixture.requests().await.iter().skip(logged) {
                assert_eq!(request.operation, "ebay.searchCases");
                assert_eq!(request.status, 200, "{request:?}");
                let from = request.from_ms.expect("from") / 1000;
                assert!(
                    from >= now - 7 * DAY - step,
                    "step {index}: read back to {from}"
                );
            }
        }
    }
    let last = t0 + steps * step;
    // Every case created before the last window's end, in its status at the last run:
    // open cases are re-read by every live run, closed ones no longer change.
    let served: Vec<(String, String, String)> =
        cases_between(SEED, &ebay, SELLER, t0 - 14 * DAY, last - LAG)
            .into_iter()
            .map(|case| {
                let cents = case.claim_cents;
                (
                    case.case_id.clone(),
                    case.status_at(last).to_string(),
                    format!("{}.{:02}", cents / 100, cents % 100),
                )
            })
            .collect();
    assert!(served.len() >= 20, "{} cases", served.len());
    let stored: Vec<(String, String, String)> = fixture.ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT case_id, status, claim_value FROM ebay_cases
                 WHERE account = 'shop' ORDER BY creation_date, case_id",
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
            .filter(|change| change.stream == "cases")
            .map(|change| (change.resource_id, change.before, change.after))
            .collect();
    assert!(
        expected.iter().any(|change| change.2 == "WAITING_CS")
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
                ("cases", "caseStatusEnum")
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

/// A user access token for the simulator's seller with the base scope (Post-Order).
async fn user_token(base: &str) -> String {
    ebay_user_token(base, SELLER, Some(BASE_SCOPE)).await
}

/// The simulated case search skips `offset` entries (Post-Order's PaginationOutput),
/// answers `limit` above 200 with a 400 and refuses a filter it does not serve.
#[tokio::test]
async fn ebay_cases_search_skips_offset_entries_and_refuses_what_it_does_not_serve() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 20,
        return_every: 2,
        orders_since: t0 - 20 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let base = sim.base_url();
    let token = user_token(&base).await;
    let client = reqwest::Client::new();
    let from = marketsync::domain::format_millis((t0 - 20 * DAY) * 1000);
    let to = marketsync::domain::format_millis(t0 * 1000 - 1);
    let search = |extra: Vec<(&'static str, String)>| {
        let mut query = vec![
            ("case_creation_date_range_from", from.clone()),
            ("case_creation_date_range_to", to.clone()),
        ];
        query.extend(extra);
        client
            .get(format!("{base}/post-order/v2/casemanagement/search"))
            .query(&query)
            .header("Authorization", format!("IAF {token}"))
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
            .map(|case| case["caseId"].as_str().expect("caseId").to_string())
            .collect()
    };
    let all = ids(&whole);
    assert!(all.len() > 6, "{} cases", all.len());
    assert_eq!(whole["paginationOutput"]["totalEntries"], all.len());
    assert_eq!(whole["totalNumberOfCases"], all.len());
    let page: serde_json::Value = search(vec![("limit", "3".into()), ("offset", "4".into())])
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&page), all[4..7].to_vec());
    let too_large = search(vec![("limit", "201".into())]).await.expect("call");
    assert_eq!(too_large.status(), 400);
    let filtered = search(vec![("case_status_filter", "OPEN".into())])
        .await
        .expect("call");
    assert_eq!(filtered.status(), 400);
}
