//! Issue 12, points 2, 3 and 5: waiting holds nothing, windows pipelined within a stream,
//! a finished report never thrown away, an interrupted request found again by getReports,
//! a stuck report cancelled. Every test runs against the simulator over real HTTP.

use std::time::Duration;

use marketsync::domain::{now_ts, HourWindow};
use marketsync::provider::amazon::{
    LwaCredentials, SpApiClient, SpApiEndpoints, VENDOR_RT_SALES_REPORT,
};
use marketsync::shapes::windowed::lookback_window;
use marketsync::shapes::RunOutcome;
use marketsync::sim::{FaultKind, ScheduledFault, SimConfig, SimFaults};
use marketsync::store::{ClaimOrder, HourState, LedgerStore, WriteFence};
use tokio_util::sync::CancellationToken;

use crate::common::{counts, fast_sim, wait_until, DaemonProcess, Fixture, TestSim};

const APPLIED: usize = 3;

fn slow_sim(latency: Duration) -> SimConfig {
    SimConfig {
        processing_latency: latency,
        ..SimConfig::default()
    }
}

fn faults(operation: &str, nths: &[u64], fault: FaultKind) -> SimFaults {
    SimFaults {
        schedule: nths
            .iter()
            .map(|nth| ScheduledFault {
                operation: operation.to_string(),
                nth: *nth,
                fault,
            })
            .collect(),
        ..SimFaults::default()
    }
}

/// Point 3: a backfill keeps several windows in flight at once. With reports that take
/// 30 s, all four windows of a day are requested (and their report ids persisted) long
/// before the first could be done; one window at a time would have requested one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_requests_its_windows_ahead_and_persists_every_report_id() {
    let sim = TestSim::start(slow_sim(Duration::from_secs(30))).await;
    let fixture = Fixture::new(&sim, "lookback = \"24h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let cancel = CancellationToken::new();
    let context = fixture.context(&ledger, cancel.clone());
    let run = tokio::spawn(async move { context.run_once().await });

    let all_requested = wait_until(Duration::from_secs(10), || {
        sim.stats().calls("createReport") == 4
    })
    .await;
    assert!(all_requested, "{:?}", sim.stats());
    let persisted = wait_until(Duration::from_secs(5), || {
        ledger
            .in_flight("acct", "vendor_rt_sales")
            .map(|claims| claims.iter().filter(|c| c.report_id.is_some()).count() == 4)
            .unwrap_or(false)
    })
    .await;
    assert!(persisted, "every report id is in the ledger at once");
    cancel.cancel();
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome, RunOutcome::Cancelled);
    assert_eq!(
        sim.stats().calls("createReport"),
        4,
        "no window requested twice"
    );
}

/// `max_in_flight` bounds the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_the_windows_requested_ahead() {
    let sim = TestSim::start(slow_sim(Duration::from_secs(30))).await;
    let fixture = Fixture::new(
        &sim,
        "lookback = \"24h\"\nchunk = \"6h\"\nmax_in_flight = 2",
    );
    let ledger = fixture.open_ledger();
    let cancel = CancellationToken::new();
    let context = fixture.context(&ledger, cancel.clone());
    let run = tokio::spawn(async move { context.run_once().await });
    let two = wait_until(Duration::from_secs(10), || {
        sim.stats().calls("createReport") == 2
    })
    .await;
    assert!(two);
    // Reports take 30 s: nothing frees a slot for the next 2 s, so nothing more is asked.
    let more = wait_until(Duration::from_secs(2), || {
        sim.stats().calls("createReport") > 2
    })
    .await;
    assert!(!more, "{:?}", sim.stats());
    cancel.cancel();
    run.await.unwrap().unwrap();
}

/// Point 2: reports in flight hold no run permit. Six accounts with one permit between
/// them and 30-second reports: every account requests its report at once (before, the
/// first account held the only permit while it polled, and the others waited 30 s each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_reports_hold_no_run_permit() {
    let sim = TestSim::start(slow_sim(Duration::from_secs(30))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "data_dir = \"{}\"\n[daemon]\nmax_concurrent_runs = 1\n",
        dir.path().display()
    );
    for n in 0..6 {
        text.push_str(&format!(
            r#"
[[accounts]]
id = "acct{n}"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
endpoint = "{base}"
token_url = "{base}/auth/o2/token"
[accounts.credentials]
client_id_env = "TEST_CLIENT_ID"
client_secret_env = "TEST_CLIENT_SECRET"
refresh_token_env = "TEST_REFRESH_TOKEN"
[accounts.streams.vendor_rt_sales]
lookback = "6h"
chunk = "6h"
daily_audit = false
"#,
            base = sim.base_url()
        ));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let mut daemon = DaemonProcess::spawn(&config);
    let all = wait_until(Duration::from_secs(15), || {
        sim.stats().calls("createReport") == 6
    })
    .await;
    assert!(all, "{:?}\nlogs:\n{}", sim.stats(), daemon.logs());
    daemon.signal("KILL");
    let _ = daemon.wait_exit(Duration::from_secs(5)).await;
}

/// Point 5: a transient getReportDocument failure retries the document, not the report.
#[tokio::test]
async fn a_failed_document_fetch_retries_the_document_not_the_report() {
    let mut config = fast_sim();
    config.faults = faults("getReportDocument", &[1, 2], FaultKind::ServerError);
    let sim = TestSim::start(config).await;
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
    let stats = sim.stats();
    assert_eq!(stats.calls("createReport"), 1, "{stats:?}");
    assert_eq!(stats.calls("getReportDocument"), 3, "{stats:?}");
}

/// Point 5: a document that stays unavailable past the retries keeps its report in
/// flight; the next run fetches the document of the same report.
#[tokio::test]
async fn a_document_unavailable_past_the_retries_keeps_its_report_for_the_next_run() {
    let mut config = fast_sim();
    config.faults = faults(
        "getReportDocument",
        &[1, 2, 3, 4, 5],
        FaultKind::ServerError,
    );
    let sim = TestSim::start(config).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    let first = context.run_once().await.unwrap();
    assert_eq!(
        first,
        RunOutcome::Finished {
            applied: 0,
            failed: 0
        }
    );
    let kept = ledger.in_flight("acct", "vendor_rt_sales").unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].report_id.is_some(), "the report id is kept");
    assert_eq!(kept[0].attempts, 0, "no attempt consumed");

    let second = context.run_once().await.unwrap();
    assert_eq!(
        second,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    assert_eq!(
        sim.stats().calls("createReport"),
        1,
        "never requested again"
    );
}

/// Point 5: the process died after createReport was answered but before the report id
/// was committed. The next run finds the report with getReports and resumes it.
#[tokio::test]
async fn an_interrupted_request_is_found_by_get_reports_and_not_requested_again() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    // What the dead process left: a claim without a report id, and Amazon's report.
    let window = lookback_window(&context.stream, now_ts());
    ledger
        .seed("acct", "vendor_rt_sales", window, now_ts())
        .unwrap();
    let claim = ledger
        .claim(
            "acct",
            "vendor_rt_sales",
            6,
            ClaimOrder::NewestFirst,
            "dead:1@host",
            WriteFence::Unfenced,
            now_ts(),
        )
        .unwrap()
        .expect("a claim");
    assert_eq!(claim.window, window);
    let report_id = client(&sim)
        .create_report(VENDOR_RT_SALES_REPORT, "ATVPDKIKX0DER", window)
        .await
        .unwrap();

    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    let stats = sim.stats();
    assert_eq!(
        stats.calls("createReport"),
        1,
        "not requested again: {stats:?}"
    );
    assert_eq!(stats.calls("getReports"), 1, "{stats:?}");
    assert!(
        stats.calls("getReport") >= 1,
        "report {report_id} was polled: {stats:?}"
    );
}

/// An interrupted request whose report is not at Amazon (the call never arrived) is
/// requested as usual.
#[tokio::test]
async fn an_interrupted_request_without_a_report_is_requested_again() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"6h\"\nchunk = \"6h\"");
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    let window: HourWindow = lookback_window(&context.stream, now_ts());
    ledger
        .seed("acct", "vendor_rt_sales", window, now_ts())
        .unwrap();
    ledger
        .claim(
            "acct",
            "vendor_rt_sales",
            6,
            ClaimOrder::NewestFirst,
            "dead:1@host",
            WriteFence::Unfenced,
            now_ts(),
        )
        .unwrap()
        .expect("a claim");
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    assert_eq!(sim.stats().calls("createReport"), 1);
    assert_eq!(sim.stats().calls("getReports"), 1);
}

/// Point 5: a report stuck past `poll_timeout` is cancelled with cancelReport and its
/// window fails, to be requested again (it is not applied as empty): at once after its
/// first and second stuck reports (the report failed, not the window), with the
/// backoff after the third.
#[tokio::test]
async fn a_stuck_report_is_cancelled_and_its_window_requested_again() {
    let sim = TestSim::start(slow_sim(Duration::from_secs(60))).await;
    let fixture = Fixture::new(
        &sim,
        // Polls 100 ms apart: three reports of 300 ms each make ~12 getReports, within
        // the sim's burst of 15 (more would wait for getReport's 2/s refill and stop
        // the run on its quota instead).
        "lookback = \"6h\"\nchunk = \"6h\"\npoll_timeout = \"300ms\"\npoll_min = \"100ms\"\npoll_max = \"100ms\"\nretry_base = \"1h\"",
    );
    let ledger = fixture.open_ledger();
    let context = fixture.context(&ledger, CancellationToken::new());
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 0,
            failed: 3
        }
    );
    let stats = sim.stats();
    assert_eq!(stats.calls("cancelReport"), 3, "{stats:?}");
    assert_eq!(
        stats.calls("createReport"),
        3,
        "requested again at once after the first and second stuck reports, then backing off (retry_base 1h): {stats:?}"
    );
    assert_eq!(stats.duplicate_reports(), 0, "each was cancelled first");
    let state = counts(&ledger);
    assert_eq!(
        state[APPLIED], 0,
        "a cancelled report is not applied as empty"
    );
    let failures = ledger.recent_failures(10).unwrap();
    assert!(
        failures.iter().any(|failure| failure
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("cancelled with cancelReport"))),
        "{failures:?}"
    );
    assert!(ledger
        .in_flight("acct", "vendor_rt_sales")
        .unwrap()
        .iter()
        .all(|claim| claim.state != HourState::Requested));
}

fn client(sim: &TestSim) -> SpApiClient {
    SpApiClient::new(
        reqwest::Client::new(),
        SpApiEndpoints {
            api_base: sim.base_url(),
            lwa_token_url: format!("{}/auth/o2/token", sim.base_url()),
        },
        LwaCredentials {
            client_id: "test-client".to_string(),
            client_secret: "test-secret".to_string(),
            refresh_token: "test-refresh-acct".to_string(),
        },
    )
}

/// A report still IN_QUEUE after ten times the latency learned for its kind (three
/// times once its stream has nothing else to request, as here: one window) is taken for
/// stuck long before `poll_timeout`: cancelled, its window requested again at once
/// twice, and after a third stuck report with the backoff.
#[tokio::test]
async fn a_report_queued_ten_times_its_usual_latency_is_cancelled_early() {
    let sim = TestSim::start(slow_sim(Duration::from_secs(60))).await;
    let fixture = Fixture::new(
        &sim,
        // Polls at least 40 ms apart: three reports stay within getReport's burst of 15
        // (this context has no TokenManager, so a 429 would stop the run).
        "lookback = \"6h\"\nchunk = \"6h\"\npoll_min = \"40ms\"\nretry_base = \"1h\"",
    );
    let ledger = fixture.open_ledger();
    let mut context = fixture.context(&ledger, CancellationToken::new());
    let schedule = std::sync::Arc::new(marketsync::shapes::windowed::PollSchedule::new());
    for _ in 0..5 {
        schedule.learn("acct", VENDOR_RT_SALES_REPORT, Duration::from_millis(30));
    }
    context.polls = Some(std::sync::Arc::clone(&schedule));
    // The daemon runs the schedule's driver as a service; here the test does.
    let stop = CancellationToken::new();
    let driver = {
        let (schedule, stop) = (std::sync::Arc::clone(&schedule), stop.clone());
        tokio::spawn(async move { schedule.drive(stop).await })
    };
    let outcome = context.run_once().await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 0,
            failed: 3
        }
    );
    assert_eq!(sim.stats().calls("cancelReport"), 3);
    assert_eq!(sim.stats().calls("createReport"), 3);
    stop.cancel();
    driver.await.unwrap();
    let failures = ledger.recent_failures(10).unwrap();
    assert!(
        failures.iter().any(|failure| failure
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("still IN_QUEUE")
                && error.contains(", 3x its usual latency"))),
        "{failures:?}"
    );
}

/// A report taken for stuck whose cancel does not go through (here a 500; in production
/// mostly a report that left IN_QUEUE between the poll and the cancel) is still working:
/// it is polled on to its end and applied, and its window is not requested twice.
#[tokio::test]
async fn a_stuck_report_that_cannot_be_cancelled_is_polled_on_not_requested_again() {
    let mut config = slow_sim(Duration::from_secs(1));
    config.faults = faults("cancelReport", &[1], FaultKind::ServerError);
    let sim = TestSim::start(config).await;
    // Polls 100-200 ms apart: about 10 getReports in the report's second, within the
    // simulator's getReport burst of 15 (a 429 would stop the run instead).
    let fixture = Fixture::new(
        &sim,
        "lookback = \"6h\"\nchunk = \"6h\"\npoll_min = \"100ms\"\npoll_max = \"200ms\"\nretry_base = \"1h\"",
    );
    let ledger = fixture.open_ledger();
    let mut context = fixture.context(&ledger, CancellationToken::new());
    // Learned: reports of this kind take 30 ms, so one queued for half a second looks
    // stuck.
    let schedule = std::sync::Arc::new(marketsync::shapes::windowed::PollSchedule::new());
    for _ in 0..5 {
        schedule.learn("acct", VENDOR_RT_SALES_REPORT, Duration::from_millis(30));
    }
    context.polls = Some(std::sync::Arc::clone(&schedule));
    let stop = CancellationToken::new();
    let driver = {
        let (schedule, stop) = (std::sync::Arc::clone(&schedule), stop.clone());
        tokio::spawn(async move { schedule.drive(stop).await })
    };
    let outcome = context.run_once().await.unwrap();
    stop.cancel();
    driver.await.unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Finished {
            applied: 6,
            failed: 0
        }
    );
    let stats = sim.stats();
    assert_eq!(stats.calls("cancelReport"), 1, "{stats:?}");
    assert_eq!(stats.calls("createReport"), 1, "{stats:?}");
    assert_eq!(stats.duplicate_reports(), 0);
}
