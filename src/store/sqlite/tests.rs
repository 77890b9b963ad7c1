//! Unit tests of the SQLite ledger.

use super::*;

const T0: i64 = 1_700_000_000 / HOUR * HOUR;

/// Holds the ledger's writer on another thread (a long apply of another account) until
/// the returned sender sends; returns once it is held.
fn hold_writer(
    ledger: &std::sync::Arc<SqliteLedger>,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let ledger = std::sync::Arc::clone(ledger);
        std::thread::spawn(move || {
            ledger.with_conn(|_| {
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        })
    };
    held_rx.recv().unwrap();
    (release_tx, writer)
}

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
    let (release_tx, writer) = hold_writer(&ledger);
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

/// A claim that finds nothing under a fence the store holds is answered by a read
/// connection: with the writer held (a long apply of another account), it still returns.
/// One that finds work, or carries a new fence, waits for the writer as before.
#[test]
fn an_empty_claim_does_not_wait_for_the_writer() {
    use std::sync::{mpsc, Arc};
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
    ledger
        .seed("acct", "s", HourWindow::new(T0, T0 + HOUR), T0)
        .unwrap();
    let claim_under = |ledger: &SqliteLedger, fence: u64| {
        ledger.claim(
            "acct",
            "s",
            6,
            crate::domain::ClaimOrder::NewestFirst,
            "test:1@host",
            WriteFence::Lease(fence),
            T0,
        )
    };
    assert!(claim_under(&ledger, 3).unwrap().is_some(), "the one hour");
    let (release_tx, writer) = hold_writer(&ledger);
    let (claimed_tx, claimed_rx) = mpsc::channel();
    let claimer = {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || {
            claimed_tx
                .send(claim_under(&ledger, 3).map(|claim| claim.is_none()))
                .unwrap();
            // A fence the store has not seen goes the write path, so it waits.
            claimed_tx
                .send(claim_under(&ledger, 4).map(|claim| claim.is_none()))
                .unwrap();
        })
    };
    let empty = claimed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the empty claim answered while the writer was held")
        .unwrap();
    assert!(empty, "nothing is claimable");
    assert!(
        claimed_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a claim under a new fence waits for the writer"
    );
    release_tx.send(()).unwrap();
    let empty = claimed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the claim under the new fence answered once the writer was free")
        .unwrap();
    assert!(empty);
    // An empty claim writes nothing, its fence included (as before the read path).
    assert_eq!(ledger.newest_fence("acct", "s").unwrap(), 3);
    // An older fence is refused as stale even when there is nothing to claim.
    let err = claim_under(&ledger, 2).unwrap_err();
    assert!(matches!(err, LedgerError::StaleFence { .. }), "{err}");
    writer.join().unwrap();
    claimer.join().unwrap();
}

// The engine-neutral behaviour of the ledger (claims, transitions, fencing, cooldowns)
// runs against SQLite and PostgreSQL in `store::contract_tests`.

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
