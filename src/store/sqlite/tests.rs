//! Unit tests of the SQLite ledger.

use super::*;
use crate::domain::SalesRow;
use crate::report::{ReportError, ReportSummary};

const T0: i64 = 1_700_000_000 / HOUR * HOUR;

/// Issue 11: readers (status, doctor, dashboard, metrics) no longer queue behind the
/// writer: with the writer's lock held (a long apply), a snapshot still answers.
#[test]
fn reads_do_not_wait_for_the_writer() {
    use std::sync::{mpsc, Arc};
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
    ledger
        .seed("acct", "s", HourWindow::new(T0, T0 + 6 * HOUR), T0)
        .unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let writer = {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || {
            ledger.with_conn(|_| {
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        })
    };
    held_rx.recv().unwrap();
    let (read_tx, read_rx) = mpsc::channel();
    let reader = {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || {
            read_tx
                .send(ledger.snapshot("acct", "s", T0).map(|s| s.counts))
                .unwrap()
        })
    };
    let counts = read_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the read answered while the writer was held")
        .unwrap();
    assert_eq!(counts[0], 6, "six MISSING hours");
    release_tx.send(()).unwrap();
    writer.join().unwrap();
    reader.join().unwrap();
}

fn ledger_with(hours: i64) -> SqliteLedger {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    ledger
        .seed("a", "s", HourWindow::new(T0, T0 + hours * HOUR), T0)
        .unwrap();
    ledger
}

fn claim(ledger: &SqliteLedger, max: i64, order: ClaimOrder) -> Option<Claim> {
    ledger
        .claim(
            "a",
            "s",
            max,
            order,
            "test:1@host",
            WriteFence::Unfenced,
            T0,
        )
        .unwrap()
}

#[test]
fn claims_take_contiguous_runs_newest_first() {
    let ledger = ledger_with(10);
    let first = claim(&ledger, 6, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(first.window, HourWindow::new(T0 + 4 * HOUR, T0 + 10 * HOUR));
    let second = claim(&ledger, 6, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(second.window, HourWindow::new(T0, T0 + 4 * HOUR));
    assert!(claim(&ledger, 6, ClaimOrder::NewestFirst).is_none());
}

#[test]
fn a_gap_ends_the_run() {
    let ledger = ledger_with(6);
    // Hour 3 is taken by someone else: the newest-first run is hours 4 and 5 only.
    let middle = HourWindow::new(T0 + 3 * HOUR, T0 + 4 * HOUR);
    ledger.with_conn(|conn| {
        conn.execute(
            "UPDATE ledger_hours SET state = 'APPLIED' WHERE hour_utc = ?1",
            [middle.start],
        )
        .unwrap()
    });
    let run = claim(&ledger, 6, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(run.window, HourWindow::new(T0 + 4 * HOUR, T0 + 6 * HOUR));
    let oldest = claim(&ledger, 6, ClaimOrder::OldestFirst).unwrap();
    assert_eq!(oldest.window, HourWindow::new(T0, T0 + 3 * HOUR));
}

#[test]
fn illegal_transitions_are_refused_and_change_nothing() {
    let ledger = ledger_with(2);
    let unit = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger
        .apply_sales(&unit, &mut |_sink| Ok(ReportSummary::default()), T0)
        .unwrap();
    // APPLIED may not become DOWNLOADED.
    let err = ledger
        .mark_downloaded(&unit, "doc", "/tmp/doc", T0)
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::IllegalTransition { .. }),
        "{err}"
    );
    let snapshot = ledger.snapshot("a", "s", T0).unwrap();
    assert_eq!(snapshot.counts, [0, 0, 0, 2, 0]);
}

#[test]
fn a_failing_document_writes_nothing() {
    let ledger = ledger_with(2);
    let unit = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger
        .mark_downloaded(&unit, "doc", "/tmp/doc", T0)
        .unwrap();
    let err = ledger
        .apply_sales(
            &unit,
            &mut |sink| {
                sink(SalesRow {
                    hour_utc: T0,
                    asin: "B000000001".to_string(),
                    ordered_units: 3,
                    ordered_revenue: 9.0,
                })?;
                Err(ReportError::Truncated("cut short".to_string()))
            },
            T0,
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::Document(_)), "{err}");
    let rows: i64 = ledger.with_conn(|conn| {
        conn.query_row("SELECT COUNT(*) FROM vendor_realtime_sales", [], |row| {
            row.get(0)
        })
        .unwrap()
    });
    assert_eq!(rows, 0);
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts[2],
        2,
        "still DOWNLOADED"
    );
}

#[test]
fn failed_hours_wait_for_their_retry_time() {
    let ledger = ledger_with(1);
    let unit = claim(&ledger, 1, ClaimOrder::NewestFirst).unwrap();
    ledger.fail(&unit, "boom", T0 + 60, T0).unwrap();
    assert!(claim(&ledger, 1, ClaimOrder::NewestFirst).is_none());
    let later = ledger
        .claim(
            "a",
            "s",
            1,
            ClaimOrder::NewestFirst,
            "test:1@host",
            WriteFence::Unfenced,
            T0 + 60,
        )
        .unwrap()
        .unwrap();
    assert_eq!(later.attempts, 1);
}

#[test]
fn reset_leaves_work_in_flight_alone() {
    let ledger = ledger_with(4);
    let unit = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
    let rest = claim(&ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger
        .apply_sales(&rest, &mut |_sink| Ok(ReportSummary::default()), T0)
        .unwrap();
    let reset = ledger
        .reset_window(
            "a",
            "s",
            HourWindow::new(T0, T0 + 4 * HOUR),
            Priority::Manual,
            T0,
        )
        .unwrap();
    assert_eq!(reset, 2, "only the two APPLIED hours");
    assert_eq!(
        ledger.in_flight("a", "s").unwrap()[0].claim_id,
        unit.claim_id
    );
}

#[test]
fn a_stale_owners_late_write_is_refused_by_fencing() {
    let ledger = ledger_with(12);
    // Owner A claims under fence 1, then its lease is taken over by B (fence 2).
    let old = ledger
        .claim(
            "a",
            "s",
            6,
            ClaimOrder::NewestFirst,
            "auto-sync:1@a",
            WriteFence::Lease(1),
            T0,
        )
        .unwrap()
        .unwrap();
    let new = ledger
        .claim(
            "a",
            "s",
            6,
            ClaimOrder::NewestFirst,
            "auto-sync:2@b",
            WriteFence::Lease(2),
            T0,
        )
        .unwrap()
        .unwrap();
    // A wakes up and tries to write: refused, and nothing changes.
    for result in [
        ledger.set_report_id(&old, "late", T0),
        ledger.fail(&old, "late", T0 + 60, T0),
        ledger.release(&old, "late", T0),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::StaleFence {
                    fence: 1,
                    newest: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = ledger
        .claim(
            "a",
            "s",
            6,
            ClaimOrder::NewestFirst,
            "auto-sync:1@a",
            WriteFence::Lease(1),
            T0,
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::StaleFence { .. }), "{err}");
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts[1],
        12,
        "all REQUESTED"
    );
    // B's writes go through.
    ledger.set_report_id(&new, "report", T0).unwrap();
    // Another scope is not affected by this scope's fence.
    ledger
        .seed("b", "s", HourWindow::new(T0, T0 + HOUR), T0)
        .unwrap();
    assert!(ledger
        .claim(
            "b",
            "s",
            1,
            ClaimOrder::NewestFirst,
            "auto-sync:1@a",
            WriteFence::Lease(1),
            T0
        )
        .unwrap()
        .is_some());
}

#[test]
fn cooldowns_persist_and_clear() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let cooldown = Cooldown {
        scope: "amazon:a".to_string(),
        reason: "quota".to_string(),
        started_at: T0,
        until_at: T0 + 1800,
        detail: None,
    };
    ledger.set_cooldown(&cooldown).unwrap();
    assert_eq!(
        ledger.active_cooldown("amazon:a", T0 + 10).unwrap(),
        Some(cooldown)
    );
    assert_eq!(ledger.active_cooldown("amazon:a", T0 + 1800).unwrap(), None);
    assert!(ledger.clear_cooldown("amazon:a").unwrap());
    assert!(!ledger.clear_cooldown("amazon:a").unwrap());
}

/// Regression: the daemon and `marketsync status` opening a new database file at the same
/// moment made one of them fail with "database is locked" (switching to WAL does not wait
/// on the busy handler), and the daemon exited at startup.
#[test]
fn many_processes_opening_one_new_file_at_once_all_succeed() {
    use std::sync::{Arc, Barrier};
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("race-{round}.db"));
        let start = Arc::new(Barrier::new(8));
        let openers: Vec<_> = (0..8)
            .map(|_| {
                let (path, start) = (path.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    SqliteLedger::open(&path).map(|_| ())
                })
            })
            .collect();
        for opener in openers {
            let opened = opener.join().expect("no panic");
            assert!(opened.is_ok(), "round {round}: {opened:?}");
        }
    }
}
