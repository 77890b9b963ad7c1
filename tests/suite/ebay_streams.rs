//! The eBay streams of issue 14 end to end against the simulator over real HTTP, a real
//! SQLite file: each test pins the engine's and the simulator's clocks together
//! (`ebay::EbayFixture`) and moves time without sleeping.
//!
//! transactions: status changes (FUNDS_PROCESSING → FUNDS_AVAILABLE_FOR_PAYOUT → PAYOUT)
//! reach the history; a live run re-reads back to the oldest open transaction only.
//! finances: every payout (Finances getPayouts) is stored and its INITIATED → SUCCEEDED
//! change is in the history, exactly as the simulator made it.

use std::collections::BTreeSet;

use marketsync::shapes::cursor::ebay::TRANSACTIONS_REVISIT;
use marketsync::shapes::cursor::CursorStore;
use marketsync::shapes::RunOutcome;
use marketsync::sim::ebay::{changes_between, payouts_between, EbayRequest, EbaySimConfig};

use super::ebay::{pinned_start, sim_config, EbayFixture, DAY, HOUR, SEED, SELLER};
use crate::common::{ebay_user_token, TestSim};

/// The getTransactions requests logged after the first `skip`, as (from, to) seconds.
fn transaction_ranges(requests: &[EbayRequest], skip: usize) -> Vec<(i64, i64)> {
    requests
        .iter()
        .skip(skip)
        .filter(|request| request.operation == "ebay.getTransactions")
        .map(|request| {
            (
                request.from_ms.expect("from") / 1000,
                request.to_ms.expect("to") / 1000,
            )
        })
        .collect()
}

async fn run_transactions(fixture: &EbayFixture) {
    let outcome = fixture
        .context("transactions")
        .run_once()
        .await
        .expect("run");
    assert!(
        matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn ebay_streams_transaction_status_changes_are_exactly_the_history() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 20,
        return_every: 3,
        orders_since: t0 - 6 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["transactions"], "start = \"6days\"", t0);
    // Catch up at t0, then a run every 4 simulated hours for 6 days: every status lasts
    // 2 days, so each one is seen.
    let step = 4 * HOUR;
    let steps = 36;
    for index in 0..=steps {
        let now = t0 + index * step;
        fixture.set_now(now).await;
        let logged = fixture.requests().await.len();
        run_transactions(&fixture).await;
        if index == 0 {
            continue;
        }
        // A live run reads back to the oldest transaction still open at the previous
        // run: in the simulator none stays open longer than 4 days.
        let ranges = transaction_ranges(&fixture.requests().await, logged);
        assert!(
            !ranges.is_empty(),
            "a live run at step {index} asked nothing"
        );
        for (from, _) in ranges {
            assert!(
                from >= now - 4 * DAY - step - 1,
                "step {index}: read back to {from}, further than the oldest open transaction"
            );
            assert!(
                from <= now - 2 * DAY + step,
                "step {index}: the live run did not re-read the open transactions (from {from})"
            );
        }
    }
    let last = t0 + steps * step;
    let expected: BTreeSet<(String, String, String)> =
        changes_between(SEED, &ebay, SELLER, t0 + 1, last + 1)
            .into_iter()
            .filter(|change| change.stream == "transactions")
            .map(|change| (change.resource_id, change.before, change.after))
            .collect();
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let recorded: Vec<(String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(event.stream, "transactions");
            assert_eq!(event.field, "transactionStatus");
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
    let missing: Vec<_> = expected.difference(&recorded_set).collect();
    let extra: Vec<_> = recorded_set.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
    // Both transitions of sales and of refunds are in there.
    assert!(expected.len() > 200, "{} changes", expected.len());
    for after in ["FUNDS_AVAILABLE_FOR_PAYOUT", "PAYOUT"] {
        for prefix in ["1", "2"] {
            assert!(
                expected
                    .iter()
                    .any(|(id, _, to)| to == after && id.starts_with(prefix)),
                "no {after} change of a transaction {prefix}…"
            );
        }
    }
}

/// Stores one transaction of `shop` as a previous run would have.
fn store_transaction(fixture: &EbayFixture, id: &str, date: i64, status: &str) {
    let date = marketsync::domain::format_millis(date * 1000);
    fixture.ledger.with_conn(|conn| {
        conn.execute(
            "INSERT INTO ebay_transactions (account, transaction_id, transaction_type,
                 transaction_date, transaction_status, raw, first_seen_at, updated_at)
             VALUES ('shop', ?1, 'SALE', ?2, ?3, '{}', 0, 0)",
            rusqlite::params![id, date, status],
        )
        .expect("insert transaction");
    });
}

#[tokio::test]
async fn ebay_streams_transactions_revisit_reaches_the_oldest_open_one_and_no_further() {
    // A seller with no sales: what a live run reads depends on the stored rows alone.
    let ebay = EbaySimConfig {
        orders_per_day: 0,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let t0 = pinned_start();
    let fixture = EbayFixture::new(&sim, &["transactions"], "start = \"1day\"", t0);
    fixture.set_now(t0).await;
    run_transactions(&fixture).await;
    let cursor = fixture.snapshot("transactions").cursor_ts;

    // Nothing open: the live window is read as it is.
    let now = t0 + HOUR;
    fixture.set_now(now).await;
    let logged = fixture.requests().await.len();
    run_transactions(&fixture).await;
    let ranges = transaction_ranges(&fixture.requests().await, logged);
    assert_eq!(ranges.first().map(|range| range.0), Some(cursor));
    let cursor = fixture.snapshot("transactions").cursor_ts;

    // Paid out long ago (final) and on hold 10 days: back to the one on hold.
    store_transaction(&fixture, "paid", cursor - 50 * DAY, "PAYOUT");
    store_transaction(&fixture, "held", cursor - 10 * DAY, "FUNDS_ON_HOLD");
    fixture.set_now(now + HOUR).await;
    let logged = fixture.requests().await.len();
    run_transactions(&fixture).await;
    let ranges = transaction_ranges(&fixture.requests().await, logged);
    assert_eq!(ranges.first().map(|range| range.0), Some(cursor - 10 * DAY));
    let cursor = fixture.snapshot("transactions").cursor_ts;

    // Open for 40 days: never further back than TRANSACTIONS_REVISIT.
    store_transaction(&fixture, "stuck", cursor - 40 * DAY, "FUNDS_PROCESSING");
    fixture.set_now(now + 2 * HOUR).await;
    let logged = fixture.requests().await.len();
    run_transactions(&fixture).await;
    let ranges = transaction_ranges(&fixture.requests().await, logged);
    let revisit = TRANSACTIONS_REVISIT.as_secs() as i64;
    assert_eq!(ranges.first().map(|range| range.0), Some(cursor - revisit));
}

/// A user access token for the simulator's seller (`SELLER` as the refresh token).
async fn user_token(base: &str) -> String {
    user_token_for(base, "https://api.ebay.com/oauth/api_scope/sell.finances").await
}

/// A user access token for the simulator's seller with `scope`.
async fn user_token_for(base: &str, scope: &str) -> String {
    ebay_user_token(base, SELLER, Some(scope)).await
}

/// getTransactions: "If no monetary transactions match the input criteria, an http status
/// code of 204 No Content is returned with no response payload"; the stream takes that
/// as an empty window (the revisit test above runs on such answers only).
#[tokio::test]
async fn ebay_streams_transactions_without_a_match_answer_204_with_no_body() {
    let ebay = EbaySimConfig {
        orders_per_day: 0,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let base = sim.base_url();
    let token = user_token(&base).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/sell/finances/v1/transaction"))
        .query(&[(
            "filter",
            "transactionDate:[2026-01-01T00:00:00.000Z..2026-01-01T23:59:59.999Z]",
        )])
        .bearer_auth(token)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn ebay_streams_finances_stores_every_payout_and_its_status_changes() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 15,
        return_every: 4,
        orders_since: t0 - 12 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["finances"], "start = \"12days\"", t0);
    // Catch up at t0, then a run every 3 simulated hours for 4 days: a payout is
    // INITIATED for a day, so each state is seen.
    let step = 3 * HOUR;
    let steps = 32;
    for index in 0..=steps {
        fixture.set_now(t0 + index * step).await;
        let outcome = fixture.context("finances").run_once().await.expect("run");
        assert!(
            matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
            "step {index}: {outcome:?}"
        );
    }
    let last = t0 + steps * step;
    let served: Vec<(String, String, String)> =
        payouts_between(SEED, &ebay, SELLER, t0 - 12 * DAY, last - super::ebay::LAG)
            .into_iter()
            .map(|payout| {
                let cents = payout.amount_cents;
                (
                    payout.payout_id.clone(),
                    payout.status_at(last).to_string(),
                    format!("{}.{:02}", cents / 100, cents % 100),
                )
            })
            .collect();
    assert!(served.len() >= 10, "{} payouts", served.len());
    let stored: Vec<(String, String, String)> = fixture.ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT payout_id, payout_status, amount_value FROM ebay_payouts
                 WHERE account = 'shop' ORDER BY payout_date",
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
            .filter(|change| change.stream == "finances")
            .map(|change| (change.resource_id, change.before, change.after))
            .collect();
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let recorded: Vec<(String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(
                (event.stream.as_str(), event.field.as_str()),
                ("finances", "payoutStatus")
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
    assert!(expected.len() >= 3, "{} changes", expected.len());
    // getPayouts was asked oldest first, by payoutDate.
    let requests = fixture.requests().await;
    assert!(requests
        .iter()
        .any(|request| request.operation == "ebay.getPayouts"));
}

/// getPayouts refuses what eBay's reference does not define (a sort other than by
/// payout date, a `limit` over 200), with eBay's error body; without a sort it answers
/// newest first.
#[tokio::test]
async fn ebay_streams_payouts_refuse_unknown_sorts_and_limits_and_default_to_newest_first() {
    let now = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 10,
        orders_since: now - 20 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    http.put(format!("{base}/_sim/ebay/control"))
        .json(&serde_json::json!({"now_unix": now}))
        .send()
        .await
        .expect("pin");
    let token = user_token(&base).await;
    let get = |query: Vec<(&'static str, &'static str)>| {
        http.get(format!("{base}/sell/finances/v1/payout"))
            .query(&query)
            .bearer_auth(&token)
            .send()
    };
    for (query, error_id) in [
        (vec![("sort", "payoutStatus")], 135005),
        (vec![("limit", "201")], 135003),
    ] {
        let response = get(query.clone()).await.expect("call");
        assert_eq!(response.status(), 400, "{query:?}");
        let body: serde_json::Value = response.json().await.expect("error json");
        assert_eq!(body["errors"][0]["errorId"], error_id, "{body}");
        assert_eq!(body["errors"][0]["domain"], "API_FINANCES", "{body}");
    }
    let page: serde_json::Value = get(vec![("limit", "5")])
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    let dates: Vec<&str> = page["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .map(|payout| payout["payoutDate"].as_str().expect("date"))
        .collect();
    assert_eq!(dates.len(), 5, "{page}");
    assert!(dates.windows(2).all(|pair| pair[0] > pair[1]), "{dates:?}");
    assert!(page["total"].as_u64().expect("total") >= 10, "{page}");
    assert!(page["next"]
        .as_str()
        .expect("next")
        .starts_with(&format!("{base}/sell/finances/v1/payout?")));
    // The links keep every parameter of the request: the next page of an ascending
    // read is ascending too (they used to keep `filter` only).
    let page: serde_json::Value = get(vec![("limit", "5"), ("sort", "payoutDate")])
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(
        page["next"],
        format!("{base}/sell/finances/v1/payout?sort=payoutDate&limit=5&offset=5"),
        "{page}"
    );
}

/// getPayouts serves every filter of its definition (sell_finances_v1_oas3, getPayouts
/// `filter`) instead of refusing them: `payoutStatus:{...}` (one PayoutStatusEnum value,
/// the status now), alone or with `payoutDate`; `lastAttemptedPayoutDate` beside
/// `payoutStatus:{RETRYABLE_FAILED}` and `payoutReference` (mainland China split payouts),
/// which no simulated payout has, answer the empty payload; an open-ended `payoutDate`
/// reaches 90 days past its start. What the definition does not allow is refused with
/// its 400 errorIds.
#[tokio::test]
async fn ebay_streams_payouts_serve_the_status_attempt_and_reference_filters() {
    let now = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 6,
        orders_since: now - 130 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    http.put(format!("{base}/_sim/ebay/control"))
        .json(&serde_json::json!({"now_unix": now}))
        .send()
        .await
        .expect("pin");
    let token = user_token(&base).await;
    let at = |ts: i64| marketsync::domain::format_millis(ts * 1000);
    let all = payouts_between(SEED, &ebay, SELLER, now - 130 * DAY, now + 1);
    let ids_where = |keep: &dyn Fn(&marketsync::sim::ebay::SimPayout) -> bool| {
        let mut ids: Vec<String> = all
            .iter()
            .filter(|payout| keep(payout))
            .map(|payout| payout.payout_id.clone())
            .collect();
        ids.sort();
        ids
    };
    let succeeded = ids_where(&|payout| payout.status_at(now) == "SUCCEEDED");
    let initiated = ids_where(&|payout| payout.status_at(now) == "INITIATED");
    assert!(
        succeeded.len() > 60 && !initiated.is_empty(),
        "{initiated:?}"
    );
    let week = (now - 7 * DAY, now - DAY);
    let open_from = now - 120 * DAY;
    // (filter, the payout ids it answers: none is the empty payload)
    let served: Vec<(String, Vec<String>)> = vec![
        ("payoutStatus:{SUCCEEDED}".to_string(), succeeded.clone()),
        ("payoutStatus:{INITIATED}".to_string(), initiated.clone()),
        ("payoutStatus:{TERMINAL_FAILED}".to_string(), vec![]),
        (
            format!(
                "payoutDate:[{}..{}],payoutStatus:{{SUCCEEDED}}",
                at(week.0),
                at(week.1)
            ),
            ids_where(&|payout| {
                payout.date >= week.0
                    && payout.date <= week.1
                    && payout.status_at(now) == "SUCCEEDED"
            }),
        ),
        (
            format!(
                "payoutStatus:{{RETRYABLE_FAILED}},lastAttemptedPayoutDate:[{}..]",
                at(week.0)
            ),
            vec![],
        ),
        ("payoutReference:{5000000003}".to_string(), vec![]),
        (
            format!("payoutDate:[{}..]", at(open_from)),
            ids_where(&|payout| payout.date >= open_from && payout.date <= open_from + 90 * DAY),
        ),
    ];
    for (filter, wanted) in &served {
        let response = http
            .get(format!("{base}/sell/finances/v1/payout"))
            .query(&[("filter", filter.as_str()), ("limit", "200")])
            .bearer_auth(&token)
            .send()
            .await
            .expect("call");
        assert_eq!(response.status(), 200, "{filter}");
        let page: serde_json::Value = response.json().await.expect("json");
        let mut ids: Vec<String> = page["payouts"]
            .as_array()
            .map(|payouts| {
                payouts
                    .iter()
                    .map(|payout| payout["payoutId"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        assert_eq!(&ids, wanted, "{filter}: {page}");
        assert_eq!(page["total"], wanted.len(), "{filter}");
        if wanted.is_empty() {
            assert!(page.get("payouts").is_none(), "empty payload: {page}");
        }
    }

    let too_many = (0..201)
        .map(|index| format!("5{index:09}"))
        .collect::<Vec<_>>()
        .join("|");
    // (filter, errorId)
    let refused: Vec<(String, u64)> = vec![
        ("payoutStatus:{PAID}".to_string(), 135002),
        ("payoutStatus:{SUCCEEDED|INITIATED}".to_string(), 135002),
        ("payoutStatus:SUCCEEDED".to_string(), 135002),
        (
            format!("lastAttemptedPayoutDate:[{}..]", at(week.0)),
            135002,
        ),
        (
            format!(
                "payoutStatus:{{SUCCEEDED}},lastAttemptedPayoutDate:[{}..]",
                at(week.0)
            ),
            135002,
        ),
        ("payoutDate:[yesterday..]".to_string(), 135004),
        (
            format!("payoutDate:[{}..{}]", at(week.1), at(week.0)),
            135004,
        ),
        (format!("payoutReference:{{{too_many}}}"), 2004),
        ("payoutMethod:{BANK}".to_string(), 2004),
    ];
    for (filter, error_id) in &refused {
        let response = http
            .get(format!("{base}/sell/finances/v1/payout"))
            .query(&[("filter", filter.as_str())])
            .bearer_auth(&token)
            .send()
            .await
            .expect("call");
        assert_eq!(response.status(), 400, "{filter}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["errorId"], *error_id, "{filter}: {body}");
    }
}

/// Simulated transactions carry `payoutId` (the payout that paid them, once it has begun;
/// sell_finances_v1_oas3, Transaction.payoutId: "not returned if eBay has not yet begun
/// processing the payout") and `salesRecordReference` (`0` for orders after February 1,
/// 2020), so getTransactions' `payoutId:{...}` answers exactly a payout's
/// `transactionCount` transactions, netting to its amount, and `salesRecordReference:{0}`
/// every transaction.
#[tokio::test]
async fn ebay_streams_transactions_carry_their_payout_id_and_sales_record_reference() {
    let now = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 6,
        return_every: 3,
        orders_since: now - 20 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    http.put(format!("{base}/_sim/ebay/control"))
        .json(&serde_json::json!({"now_unix": now}))
        .send()
        .await
        .expect("pin");
    let token = user_token(&base).await;
    let at = |ts: i64| marketsync::domain::format_millis(ts * 1000);
    let range = format!("transactionDate:[{}..{}]", at(now - 20 * DAY), at(now));
    let transactions = |filter: String| {
        let request = http
            .get(format!("{base}/sell/finances/v1/transaction"))
            .query(&[("filter", filter.as_str()), ("limit", "1000")])
            .bearer_auth(&token);
        async move {
            let response = request.send().await.expect("call");
            let status = response.status().as_u16();
            let body = response.bytes().await.expect("body");
            let page: serde_json::Value = if body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&body).expect("json")
            };
            (status, page)
        }
    };
    let (status, all) = transactions(range.clone()).await;
    assert_eq!(status, 200, "{all}");
    let all = all["transactions"].as_array().cloned().unwrap_or_default();
    let payouts = payouts_between(SEED, &ebay, SELLER, now - 20 * DAY, now + 1);
    assert!(payouts.len() > 10, "{} payouts", payouts.len());
    let known: BTreeSet<&str> = payouts.iter().map(|p| p.payout_id.as_str()).collect();
    for transaction in &all {
        assert_eq!(transaction["salesRecordReference"], "0", "{transaction}");
        match transaction["payoutId"].as_str() {
            Some(id) => {
                assert!(known.contains(id), "{transaction}");
                assert_eq!(transaction["transactionStatus"], "PAYOUT", "{transaction}");
            }
            None => assert!(
                transaction["transactionStatus"] != "PAYOUT"
                    || transaction["transactionDate"].as_str() > Some(at(now - 5 * DAY).as_str()),
                "a PAYOUT transaction a day past its payout has its payoutId: {transaction}"
            ),
        }
    }
    assert!(
        all.iter().any(|t| t["payoutId"].is_null()),
        "some not yet paid out"
    );

    // (filter, the transactions it answers, as (id, signed cents, payoutId))
    let cents = |transaction: &serde_json::Value| {
        let text = transaction["amount"]["value"].as_str().expect("amount");
        let cents: i64 = text.replace('.', "").parse().expect("cents");
        if transaction["bookingEntry"] == "DEBIT" {
            -cents
        } else {
            cents
        }
    };
    for payout in &payouts {
        let (status, page) = transactions(format!("payoutId:{{{}}}", payout.payout_id)).await;
        assert_eq!(status, 200, "{}: {page}", payout.payout_id);
        let paid = page["transactions"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            (paid.len() as u32, page["total"].as_u64()),
            (
                payout.transaction_count,
                Some(u64::from(payout.transaction_count))
            ),
            "{}",
            payout.payout_id
        );
        assert!(paid
            .iter()
            .all(|t| t["payoutId"] == payout.payout_id.as_str()));
        assert_eq!(
            paid.iter().map(cents).sum::<i64>(),
            payout.amount_cents,
            "{}",
            payout.payout_id
        );
    }
    // (filter, how many transactions it answers: 0 is 204 No Content)
    let cases: Vec<(String, usize)> = vec![
        (format!("{range},salesRecordReference:{{0}}"), all.len()),
        (format!("{range},salesRecordReference:{{12345}}"), 0),
        ("payoutId:{7999999999}".to_string(), 0),
    ];
    for (filter, count) in cases {
        let (status, page) = transactions(filter.clone()).await;
        if count == 0 {
            assert_eq!((status, page), (204, serde_json::Value::Null), "{filter}");
        } else {
            assert_eq!(status, 200, "{filter}");
            assert_eq!(page["total"], count, "{filter}");
        }
    }
}

/// (offer id → (price, quantity)) the simulator serves at `now`.
fn served_offers(
    ebay: &EbaySimConfig,
    now: i64,
) -> std::collections::BTreeMap<String, (String, String)> {
    marketsync::sim::ebay::offers_at(SEED, ebay, SELLER, now)
        .into_iter()
        .map(|offer| (offer.offer_id, (offer.price, offer.quantity.to_string())))
        .collect()
}

#[tokio::test]
async fn ebay_streams_offers_snapshot_reads_every_sku_and_records_price_and_quantity_changes() {
    let ebay = EbaySimConfig {
        inventory_listings: 150,
        inventory_change_every: std::time::Duration::from_secs(3600),
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let t0 = pinned_start() - pinned_start().rem_euclid(3600) + 60;
    let fixture = EbayFixture::new(&sim, &["offers"], "", t0);
    fixture.set_now(t0).await;
    let outcome = fixture.context("offers").run_once().await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 1,
            failed: 0
        }
    );
    let first = served_offers(&ebay, t0);
    assert!(
        first.len() > 100,
        "{} offers: more than one page",
        first.len()
    );
    let stored = || -> std::collections::BTreeMap<String, (String, String)> {
        fixture.ledger.with_conn(|conn| {
            let mut statement = conn
                .prepare(
                    "SELECT offer_id, price_value, available_quantity FROM ebay_offers
                     WHERE account = 'shop'",
                )
                .expect("prepare");
            statement
                .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        })
    };
    assert_eq!(stored(), first);
    // getInventoryItems pages by page number (0, 1), 100 a page; one getOffers a SKU.
    let requests = fixture.requests().await;
    let item_pages: Vec<(u64, u64)> = requests
        .iter()
        .filter(|request| request.operation == "ebay.getInventoryItems")
        .map(|request| (request.offset, request.limit))
        .collect();
    assert_eq!(item_pages, vec![(0, 100), (1, 100)]);
    let offer_calls = requests
        .iter()
        .filter(|request| request.operation == "ebay.getOffers")
        .count();
    assert_eq!(offer_calls, first.len());

    // The next hour: some prices and quantities moved; each move is one history row.
    let t1 = t0 + 3600;
    fixture.set_now(t1).await;
    let outcome = fixture.context("offers").run_once().await.expect("run");
    assert!(
        matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
        "{outcome:?}"
    );
    let second = served_offers(&ebay, t1);
    let mut expected: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for (id, (price, quantity)) in &second {
        if let Some((old_price, old_quantity)) = first.get(id) {
            if old_price != price {
                expected.insert((
                    id.clone(),
                    "pricingSummary.price.value".into(),
                    old_price.clone(),
                    price.clone(),
                ));
            }
            if old_quantity != quantity {
                expected.insert((
                    id.clone(),
                    "availableQuantity".into(),
                    old_quantity.clone(),
                    quantity.clone(),
                ));
            }
        }
    }
    assert!(expected.len() > 10, "{} changes", expected.len());
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let recorded: BTreeSet<(String, String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(event.stream, "offers");
            (
                event.resource_id.clone(),
                event.field.clone(),
                event.before.clone().unwrap_or_default(),
                event.after.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(recorded.len(), events.len(), "no change recorded twice");
    assert_eq!(recorded, expected);
}

/// getOffers takes exactly one SKU: without it the call is refused (400), a SKU with no
/// offer answers 404 with eBay's error body, and a token without an inventory scope is
/// refused (403) like on every seller API.
#[tokio::test]
async fn ebay_streams_get_offers_needs_a_sku_and_answers_404_for_one_without_offers() {
    let ebay = EbaySimConfig {
        inventory_listings: 10,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay)).await;
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let token = user_token_for(
        &base,
        "https://api.ebay.com/oauth/api_scope/sell.inventory.readonly",
    )
    .await;
    let url = format!("{base}/sell/inventory/v1/offer");
    let missing = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("call");
    assert_eq!(missing.status(), 400);
    let unknown = http
        .get(&url)
        .query(&[("sku", "NO-SUCH-SKU")])
        .bearer_auth(&token)
        .send()
        .await
        .expect("call");
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(body["errors"][0]["errorId"], 25713, "{body}");
    // The simulator leaves out about one listing in fifty each day (sold out, ended), so
    // the first of these SKUs it lists today is the known one.
    let mut known = None;
    for index in 1..=5 {
        let sku = format!("SKU-{index:06}");
        let answer = http
            .get(&url)
            .query(&[("sku", sku.as_str())])
            .bearer_auth(&token)
            .send()
            .await
            .expect("call");
        if answer.status() == 200 {
            known = Some((sku, answer.json::<serde_json::Value>().await.expect("json")));
            break;
        }
        assert_eq!(answer.status(), 404, "{sku}");
    }
    let (sku, page) = known.expect("one of five SKUs has an offer today");
    assert_eq!(page["offers"][0]["sku"], sku.as_str(), "{page}");
    let finances_only = user_token(&base).await;
    let refused = http
        .get(&url)
        .query(&[("sku", "SKU-000001")])
        .bearer_auth(&finances_only)
        .send()
        .await
        .expect("call");
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn ebay_streams_messages_record_new_messages_and_reads_exactly() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 24,
        orders_since: t0 - 3 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, &["messages"], "start = \"3days\"", t0);
    // Catch up at t0, then a run every simulated hour for 3 days: a message stays
    // unread for 2 hours, so each state is seen.
    let steps = 72;
    for index in 0..=steps {
        fixture.set_now(t0 + index * HOUR).await;
        let outcome = fixture.context("messages").run_once().await.expect("run");
        assert!(
            matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
            "step {index}: {outcome:?}"
        );
    }
    let last = t0 + steps * HOUR;
    // A new message is seen once its window closed (last − lag); a read by the re-read
    // of unread conversations, in the state of the last run.
    // A conversation is read twice when it has a follow-up: compare as sorted lists.
    let mut expected: Vec<(String, String, String, String)> =
        changes_between(SEED, &ebay, SELLER, t0 + 1, last + 1)
            .into_iter()
            .filter(|change| change.stream == "messages")
            .filter(|change| {
                change.after == "true" || change.after == "0" || change.at < last - super::ebay::LAG
            })
            .map(|change| {
                (
                    change.resource_id,
                    change.field,
                    change.before,
                    change.after,
                )
            })
            .collect();
    expected.sort();
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 100_000)
        .expect("events");
    let mut recorded: Vec<(String, String, String, String)> = events
        .iter()
        .map(|event| {
            assert_eq!(event.stream, "messages");
            (
                event.resource_id.clone(),
                event.field.clone(),
                event.before.clone().unwrap_or_default(),
                event.after.clone().unwrap_or_default(),
            )
        })
        .collect();
    recorded.sort();
    assert_eq!(recorded, expected);
    for field in [
        "latestMessage.messageId",
        "latestMessage.readStatus",
        "unreadCount",
    ] {
        assert!(
            expected.iter().any(|row| row.1 == field),
            "no {field} change in the simulated history"
        );
    }
    // getConversations pages at most 50 (its maximum), whatever page_limit says.
    let requests = fixture.requests().await;
    assert!(requests
        .iter()
        .filter(|request| request.operation == "ebay.getConversations")
        .all(|request| request.limit == 50 && request.status == 200));
}
