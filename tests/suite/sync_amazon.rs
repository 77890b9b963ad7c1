//! The vendor real-time sales stream end to end: ledger, SP-API client and simulator over
//! real HTTP, a real SQLite file. One test per behaviour of issue 2's list.

use std::time::Duration;

use marketsync::domain::{now_ts, HourWindow};
use marketsync::shapes::windowed::lookback_window;
use marketsync::shapes::RunOutcome;
use marketsync::sim::amazon::vendor_sales_rows;
use marketsync::sim::{FaultKind, SimConfig};
use marketsync::store::{account_scope, HourState, LedgerStore};
use tokio_util::sync::CancellationToken;

use crate::common::{counts, fast_sim, sales_rows, schedule, wait_until, Fixture, TestSim};

const APPLIED: usize = 3;
const MISSING: usize = 0;
const FAILED: usize = 4;
const REQUESTED: usize = 1;

/// What the simulator's generator says the window holds, in the database's order.
fn expected_rows(config: &SimConfig, window: HourWindow) -> Vec<(i64, String, i64, f64)> {
    let mut rows = Vec::new();
    let mut hour = window.start;
    while hour < window.end {
        for row in vendor_sales_rows(
            config.seed,
            "ATVPDKIKX0DER",
            config.asins_per_marketplace,
            hour,
        ) {
            rows.push((
                row.hour_utc,
                row.asin,
                row.ordered_units,
                row.ordered_revenue,
            ));
        }
        hour += 3600;
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    rows
}

fn hour_rows(ledger: &marketsync::store::SqliteLedger) -> Vec<(i64, String, i64, Option<String>)> {
    ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare(
                "SELECT hour_utc, state, attempts, last_error FROM ledger_hours ORDER BY hour_utc",
            )
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    })
}

#[tokio::test]
async fn happy_path_applies_exactly_what_the_simulator_served() {
    let sim_config = fast_sim();
    let sim = TestSim::start(sim_config.clone()).await;
    let fixture = Fixture::new(&sim, "lookback = \"12h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 12,
            failed: 0
        }
    );
    assert_eq!(counts(&ledger)[APPLIED], 12);
    assert_eq!(
        sim.stats().calls("createReport"),
        2,
        "one report per 6h chunk"
    );

    let window = lookback_window(&context.stream, now_ts());
    let expected = expected_rows(&sim_config, window);
    assert!(!expected.is_empty());
    assert!(
        expected.iter().any(|row| row.2 < 0),
        "the data includes negative units"
    );
    assert_eq!(sales_rows(&ledger, "acct"), expected);

    // The simulator's own record of what it served agrees too.
    let served = sim.sim.served_rows();
    assert_eq!(served.len(), expected.len());

    // Nothing left to do: a second run makes no provider call.
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 0,
            failed: 0
        }
    );
    assert_eq!(sim.stats().calls("createReport"), 2);
    // Applied documents are removed from disk.
    let leftover = std::fs::read_dir(fixture.config.data_dir.join("documents"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(leftover, 0);
}

#[tokio::test]
async fn quota_mid_run_hard_stops_persists_cooldown_and_consumes_no_attempt() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("createReport", 2, FaultKind::Throttle);
    let sim = TestSim::start(sim_config).await;
    let fixture = Fixture::new(
        &sim,
        "lookback = \"24h\"\nchunk = \"6h\"\nquota_cooldown = \"30m\"",
    );
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    let RunOutcome::CoolingDown { until, reason } = outcome else {
        panic!("expected a cooldown, got {outcome:?}");
    };
    assert_eq!(reason, "quota");
    assert!(
        until >= now_ts() + 29 * 60,
        "cooldown lasts the configured 30m"
    );
    // Hard stop: the first chunk applied, the throttled one and the rest untouched.
    assert_eq!(sim.stats().calls("createReport"), 2);
    let state = counts(&ledger);
    assert_eq!(state[APPLIED], 6);
    assert_eq!(state[MISSING], 18);
    assert!(
        hour_rows(&ledger).iter().all(|row| row.2 == 0),
        "no attempt consumed"
    );

    // A restart does not resume hammering: the cooldown is in SQLite.
    drop(context);
    drop(ledger);
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    let outcome = context.run_once().await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        sim.stats().calls("createReport"),
        2,
        "no call during the cooldown"
    );

    // When the cooldown ends the hours are claimable again.
    assert!(ledger
        .clear_cooldown(&account_scope("amazon", "acct"))
        .unwrap());
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 18,
            failed: 0
        }
    );
    assert_eq!(counts(&ledger)[APPLIED], 24);
    assert!(hour_rows(&ledger).iter().all(|row| row.2 == 0));
}

#[tokio::test]
async fn quota_while_downloading_keeps_the_report_for_after_the_cooldown() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("getReportDocument", 1, FaultKind::Throttle);
    let sim = TestSim::start(sim_config).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::CoolingDown { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        counts(&ledger)[REQUESTED],
        6,
        "the unit keeps its report id, in flight"
    );

    ledger
        .clear_cooldown(&account_scope("amazon", "acct"))
        .unwrap();
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    assert_eq!(
        sim.stats().calls("createReport"),
        1,
        "the same report was resumed"
    );
}

#[tokio::test]
async fn fatal_report_fails_with_the_error_document_text() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("createReport", 1, FaultKind::Fatal);
    let sim = TestSim::start(sim_config).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 0,
            failed: 1
        }
    );
    let rows = hour_rows(&ledger);
    assert_eq!(rows.len(), 6);
    for (_, state, attempts, last_error) in &rows {
        assert_eq!(state, HourState::Failed.as_str());
        assert_eq!(*attempts, 1);
        let error = last_error.as_deref().unwrap_or("");
        assert!(error.contains("FATAL"), "{error}");
    }
    assert!(sales_rows(&ledger, "acct").is_empty());
    let snapshot = ledger
        .snapshot("acct", "vendor_rt_sales", now_ts())
        .unwrap();
    assert!(
        snapshot.next_retry_at.unwrap() > now_ts(),
        "retry is in the future"
    );
    assert_eq!(
        snapshot.next_claimable_hour, None,
        "failed hours wait for their retry"
    );
}

#[tokio::test]
async fn cancelled_report_applies_the_hours_with_zero_rows() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("createReport", 1, FaultKind::Cancelled);
    let sim = TestSim::start(sim_config).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    assert_eq!(counts(&ledger)[APPLIED], 6);
    assert!(sales_rows(&ledger, "acct").is_empty());
    assert_eq!(
        sim.stats().calls("getReportDocument"),
        0,
        "cancelled reports have no document"
    );
}

async fn assert_bad_document_fails_cleanly(fault: FaultKind, expected_text: &str) {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("createReport", 1, fault);
    let sim = TestSim::start(sim_config).await;
    let fixture = Fixture::new(&sim, "lookback = \"12h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    // The bad chunk fails; the run continues with the next chunk, which applies.
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 1
        }
    );
    let rows = hour_rows(&ledger);
    let failed: Vec<_> = rows.iter().filter(|row| row.1 == "FAILED").collect();
    assert_eq!(failed.len(), 6);
    for row in &failed {
        let error = row.3.as_deref().unwrap_or("");
        assert!(
            error.contains(expected_text),
            "last_error {error:?} should mention {expected_text:?}"
        );
    }
    // Nothing from the bad document is applied: only the good chunk's hours have rows.
    let failed_hours: Vec<i64> = failed.iter().map(|row| row.0).collect();
    let stored = sales_rows(&ledger, "acct");
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|row| !failed_hours.contains(&row.0)));
}

#[tokio::test]
async fn truncated_gzip_fails_the_unit_and_applies_nothing() {
    assert_bad_document_fails_cleanly(FaultKind::Truncated, "truncated").await;
}

#[tokio::test]
async fn malformed_json_fails_the_unit_and_applies_nothing() {
    assert_bad_document_fails_cleanly(FaultKind::Malformed, "malformed").await;
}

#[tokio::test]
async fn document_for_another_window_fails_the_unit_and_applies_nothing() {
    assert_bad_document_fails_cleanly(FaultKind::WrongWindow, "window").await;
}

#[tokio::test]
async fn restart_while_requested_resumes_the_same_report() {
    let sim_config = SimConfig {
        processing_latency: Duration::from_secs(1),
        ..SimConfig::default()
    };
    let sim = TestSim::start(sim_config).await;
    // Poll gently: getReport allows 2/s with a burst of 15.
    let fixture = Fixture::new(
        &sim,
        "lookback = \"6h\"\nchunk = \"6h\"\npoll_min = \"100ms\"\npoll_max = \"300ms\"",
    );
    let ledger = fixture.open_ledger();
    let cancel = CancellationToken::new();
    let context = fixture.context(&ledger, cancel.clone());
    let run = tokio::spawn(async move { context.run_once().await });

    // Wait until the report id is in the ledger, then stop the "daemon".
    let watched = ledger.clone();
    let requested = wait_until(Duration::from_secs(10), || {
        watched
            .in_flight("acct", "vendor_rt_sales")
            .map(|claims| claims.iter().any(|claim| claim.report_id.is_some()))
            .unwrap_or(false)
    })
    .await;
    assert!(requested, "the report id was persisted");
    cancel.cancel();
    assert_eq!(run.await.unwrap().unwrap(), RunOutcome::Cancelled);
    assert_eq!(counts(&ledger)[REQUESTED], 6);
    let report_before = ledger.in_flight("acct", "vendor_rt_sales").unwrap()[0]
        .report_id
        .clone();
    drop(ledger);

    // Restart: a new ledger handle and context resume polling the same report.
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    assert_eq!(
        sim.stats().calls("createReport"),
        1,
        "no second createReport"
    );
    let report_after: Option<String> = ledger.with_conn(|conn| {
        conn.query_row(
            "SELECT MAX(report_id) FROM vendor_realtime_sales",
            [],
            |row| row.get(0),
        )
        .unwrap()
    });
    assert_eq!(report_after, report_before);
}

#[tokio::test]
async fn server_errors_fail_only_their_chunk_and_retry_later() {
    let mut sim_config = fast_sim();
    sim_config.faults = schedule("createReport", 1, FaultKind::ServerError);
    let sim = TestSim::start(sim_config).await;
    // retry_at is kept in whole seconds (now + the delay): with a 1 s delay a run that
    // crossed a second boundary after the failure could claim the chunk again at once.
    // 2 s leaves the retry at least 1 s away, longer than this first run.
    let fixture = Fixture::new(
        &sim,
        "lookback = \"12h\"\nchunk = \"6h\"\nretry_base = \"2s\"\nretry_max = \"2s\"",
    );
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());

    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 1
        }
    );
    assert_eq!(counts(&ledger)[FAILED], 6);
    // Once the retry time passes the failed chunk is claimed again and applied.
    let retried = async {
        loop {
            if let RunOutcome::Finished { applied: 6, .. } = context.run_once().await.unwrap() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), retried)
        .await
        .expect("retried within 10s");
    assert_eq!(counts(&ledger)[APPLIED], 12);
}

#[tokio::test]
async fn refused_credentials_start_an_auth_cooldown_instead_of_failing_every_chunk() {
    use marketsync::provider::amazon::{LwaCredentials, SpApiClient, SpApiEndpoints};
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"24h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let mut context = fixture.context(&ledger, CancellationToken::new());
    // The token endpoint refuses an empty client secret (invalid_request).
    context.work = marketsync::shapes::StreamWork::reports(std::sync::Arc::new(SpApiClient::new(
        reqwest::Client::new(),
        SpApiEndpoints {
            api_base: sim.base_url(),
            lwa_token_url: format!("{}/auth/o2/token", sim.base_url()),
        },
        LwaCredentials {
            client_id: "test-client".to_string(),
            client_secret: String::new(),
            refresh_token: "test-refresh-acct".to_string(),
        },
    )));

    let outcome = context.run_once().await.unwrap();
    let RunOutcome::CoolingDown { until, reason } = outcome else {
        panic!("expected an auth cooldown, got {outcome:?}");
    };
    assert_eq!(reason, "auth");
    assert!(until >= now_ts() + 59 * 60);
    assert_eq!(sim.stats().calls("createReport"), 0);
    let state = counts(&ledger);
    assert_eq!(
        state[MISSING], 24,
        "every hour claimable again, none FAILED"
    );
    assert!(
        hour_rows(&ledger).iter().all(|row| row.2 == 0),
        "no attempt consumed"
    );
    let cooldown = ledger
        .active_cooldown(&account_scope("amazon", "acct"), now_ts())
        .unwrap()
        .unwrap();
    assert_eq!(cooldown.reason, "auth");
    assert!(cooldown
        .detail
        .unwrap_or_default()
        .contains("authentication failed"));
    // The next run makes no call at all.
    assert!(matches!(
        context.run_once().await.unwrap(),
        RunOutcome::CoolingDown { .. }
    ));
    assert_eq!(
        sim.stats().calls("token"),
        1,
        "credentials are not retried in a loop"
    );
}
