//! Unit tests of the SQLite ledger.

use super::*;

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
