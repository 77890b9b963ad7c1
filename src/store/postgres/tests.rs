//! Tests of what only the PostgreSQL store has: several daemons (pools) claiming one
//! scope at once, the fence checked inside a write's own transaction, the migration
//! runner, deadlines and redaction. The engine-neutral behaviour runs on both engines in
//! `store::contract_tests`.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::testing::TestDb;
use super::*;
use crate::domain::{ClaimOrder, HourWindow, SalesRow, HOUR};
use crate::report::ReportSummary;
use crate::store::LedgerStore;

const T0: i64 = 1_700_000_000 / HOUR * HOUR;

fn open(db: &TestDb) -> PgLedger {
    PgLedger::open(&db.url, &PgSettings::default()).expect("open pg ledger")
}

/// Two daemons (two pools) with four claimers each drain one scope of 240 hours: every
/// hour is claimed exactly once, and no claim overlaps another.
#[test]
fn concurrent_claimers_on_two_pools_never_overlap() {
    let db = TestDb::create();
    let ledgers = [Arc::new(open(&db)), Arc::new(open(&db))];
    let hours = 240;
    ledgers[0]
        .seed("a", "s", HourWindow::new(T0, T0 + hours * HOUR), T0)
        .unwrap();
    let threads = 8;
    let start = Arc::new(Barrier::new(threads));
    let claimers: Vec<_> = (0..threads)
        .map(|index| {
            let ledger = Arc::clone(&ledgers[index % 2]);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut windows = Vec::new();
                let order = if index % 3 == 0 {
                    ClaimOrder::OldestFirst
                } else {
                    ClaimOrder::NewestFirst
                };
                let owner = format!("claimer:{index}@test");
                while let Some(claim) = ledger
                    .claim("a", "s", 5, order, &owner, WriteFence::Lease(7), T0)
                    .expect("claim")
                {
                    assert_eq!(claim.state, HourState::Requested);
                    windows.push((claim.claim_id, claim.window));
                }
                windows
            })
        })
        .collect();
    let mut claimed_by_hour: BTreeMap<i64, i64> = BTreeMap::new();
    let mut claims = 0usize;
    for claimer in claimers {
        for (claim_id, window) in claimer.join().expect("claimer thread") {
            claims += 1;
            let mut hour = window.start;
            while hour < window.end {
                if let Some(other) = claimed_by_hour.insert(hour, claim_id) {
                    panic!("hour {hour} claimed by claims {other} and {claim_id}");
                }
                hour += HOUR;
            }
        }
    }
    assert_eq!(
        claimed_by_hour.len(),
        hours as usize,
        "every hour claimed once"
    );
    let snapshot = ledgers[1].snapshot("a", "s", T0).unwrap();
    assert_eq!(snapshot.counts, [0, hours as u64, 0, 0, 0]);
    // The store's own record agrees: each hour carries the claim that took it.
    let mut client = db.client();
    for row in client
        .query("SELECT hour_utc, claim_id FROM ledger_hours", &[])
        .unwrap()
    {
        let hour: i64 = row.get(0);
        let claim_id: Option<i64> = row.get(1);
        assert_eq!(claim_id, claimed_by_hour.get(&hour).copied(), "hour {hour}");
    }
    let recorded: i64 = client
        .query_one("SELECT COUNT(*) FROM ledger_claims", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, claims as i64);
}

/// A takeover recorded while an apply is under way: the apply's own transaction checks
/// the fence before it commits, is refused, and nothing it wrote (the deleted and
/// inserted sales rows, the hours) is visible afterwards.
#[test]
fn a_stale_fence_refuses_the_apply_in_its_own_transaction() {
    let db = TestDb::create();
    let old_owner = open(&db);
    let new_owner = open(&db);
    old_owner
        .seed("a", "s", HourWindow::new(T0, T0 + 3 * HOUR), T0)
        .unwrap();
    let mut client = db.client();
    client
        .execute(
            "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
             VALUES ('a', $1, 'B0KEEP0000', 5, 5.0, 'before', $1)",
            &[&T0],
        )
        .unwrap();
    let claim = old_owner
        .claim(
            "a",
            "s",
            2,
            ClaimOrder::OldestFirst,
            "old@a",
            WriteFence::Lease(1),
            T0,
        )
        .unwrap()
        .unwrap();
    assert_eq!(claim.window, HourWindow::new(T0, T0 + 2 * HOUR));
    let err = old_owner
        .apply_sales(
            &claim,
            &mut |sink| {
                sink(SalesRow {
                    hour_utc: T0,
                    asin: "B0STALE000".to_string(),
                    ordered_units: 1,
                    ordered_revenue: 1.0,
                })?;
                // Mid-document, the lease moves: the new owner's claim records fence 2.
                let taken = new_owner
                    .claim(
                        "a",
                        "s",
                        1,
                        ClaimOrder::OldestFirst,
                        "new@b",
                        WriteFence::Lease(2),
                        T0,
                    )
                    .expect("the new owner's claim is not blocked by the apply");
                assert!(taken.is_some(), "the third hour was free");
                Ok(ReportSummary::default())
            },
            T0,
        )
        .unwrap_err();
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
    let rows: Vec<(String, String)> = client
        .query(
            "SELECT asin, report_id FROM vendor_realtime_sales ORDER BY asin",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("B0KEEP0000".to_string(), "before".to_string())],
        "the refused apply's delete and insert were rolled back"
    );
    let snapshot = new_owner.snapshot("a", "s", T0).unwrap();
    assert_eq!(snapshot.counts, [0, 3, 0, 0, 0], "no hour became APPLIED");
    let outcome: Option<String> = client
        .query_one(
            "SELECT outcome FROM ledger_claims WHERE id = $1",
            &[&claim.claim_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(outcome, None, "the claim was not finished either");
}

/// Daemons opening a new database at once all succeed (the advisory lock makes them take
/// turns) and the migration is recorded once.
#[test]
fn concurrent_opens_migrate_once() {
    let db = TestDb::create();
    let start = Arc::new(Barrier::new(6));
    let openers: Vec<_> = (0..6)
        .map(|_| {
            let (url, start) = (db.url.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                PgLedger::open(&url, &PgSettings::default()).map(|ledger| ledger.schema_version())
            })
        })
        .collect();
    for opener in openers {
        let version = opener
            .join()
            .expect("no panic")
            .expect("open")
            .expect("version");
        assert_eq!(version, MIGRATIONS.last().unwrap().0);
    }
    let recorded: i64 = db
        .client()
        .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, MIGRATIONS.len() as i64);
}

/// Migration 7: the history's second index is in append order (account, stream, id), as
/// on SQLite, and the one by resource is gone.
#[test]
fn the_history_is_indexed_in_the_order_it_is_appended() {
    let db = TestDb::create();
    drop(open(&db));
    let indexes: Vec<(String, String)> = db
        .client()
        .query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' ORDER BY indexname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let names: Vec<&str> = indexes.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["events_by_account", "events_by_stream", "events_pkey"]
    );
    assert!(
        indexes[1].1.ends_with("(account, stream, id)"),
        "{indexes:?}"
    );
}

#[test]
fn a_database_from_a_newer_binary_is_refused() {
    let db = TestDb::create();
    drop(open(&db));
    db.client()
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future', 0)",
            &[],
        )
        .unwrap();
    let err = PgLedger::open(&db.url, &PgSettings::default()).unwrap_err();
    assert!(
        matches!(err, LedgerError::SchemaTooNew { database: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade marketsync"), "{err}");
}

/// A server that does not answer fails the open within the deadlines, with a message
/// that names the fix and not the password.
#[test]
fn an_unreachable_server_fails_in_time_without_the_password() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = PgSettings {
        checkout_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..PgSettings::default()
    };
    let started = Instant::now();
    let err = PgLedger::open(
        &format!("postgres://ms:hunter2@127.0.0.1:{port}/ms"),
        &settings,
    )
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let message = err.to_string();
    assert!(
        matches!(err, LedgerError::PgUnavailable { .. }),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("ms:***@127.0.0.1"), "{message}");
    assert!(message.contains("check that the server runs"), "{message}");
    let err = PgLedger::open("mysql://ms:hunter2@h/x", &settings).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// A deadlock is retried: the ledger's transaction (the victim PostgreSQL picks, as its
/// backend detects the cycle first) runs again from the start and succeeds once the
/// other transaction is through. The interleaving is forced with channels, not sleeps.
#[test]
fn a_deadlocked_transaction_is_retried_from_the_start() {
    use std::sync::mpsc;
    let db = TestDb::create();
    let ledger = open(&db);
    let mut setup = db.client();
    setup
        .batch_execute(
            "INSERT INTO cooldowns (scope, reason, started_at, until_at) VALUES ('a', 'x', 0, 0), ('b', 'x', 0, 0)",
        )
        .unwrap();
    let (a_locked_tx, a_locked_rx) = mpsc::channel::<()>();
    let (b_locked_tx, b_locked_rx) = mpsc::channel::<()>();
    let other = {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let mut client: postgres::Client = url
                .parse::<postgres::Config>()
                .unwrap()
                .connect(postgres::NoTls)
                .unwrap();
            // This side waits long before looking for a deadlock: the ledger's side,
            // with the default second, finds it and is the one rolled back.
            client
                .batch_execute("SET deadlock_timeout = '60s'")
                .unwrap();
            let mut tx = client.transaction().unwrap();
            a_locked_rx.recv().unwrap();
            tx.execute("SELECT 1 FROM cooldowns WHERE scope = 'b' FOR UPDATE", &[])
                .unwrap();
            b_locked_tx.send(()).unwrap();
            tx.execute("SELECT 1 FROM cooldowns WHERE scope = 'a' FOR UPDATE", &[])
                .unwrap();
            tx.execute(
                "UPDATE cooldowns SET reason = 'other' WHERE scope = 'a'",
                &[],
            )
            .unwrap();
            tx.commit().unwrap();
        })
    };
    let mut attempts = 0u32;
    let result: Result<u32, LedgerError> = ledger.with_tx(|tx| {
        attempts += 1;
        tx.execute("SELECT 1 FROM cooldowns WHERE scope = 'a' FOR UPDATE", &[])?;
        if attempts == 1 {
            a_locked_tx.send(()).unwrap();
            b_locked_rx.recv().unwrap();
        }
        tx.execute("SELECT 1 FROM cooldowns WHERE scope = 'b' FOR UPDATE", &[])?;
        tx.execute(
            "UPDATE cooldowns SET reason = 'ledger' WHERE scope = 'b'",
            &[],
        )?;
        Ok(attempts)
    });
    other.join().expect("the other transaction committed");
    assert_eq!(
        result.expect("retried to success"),
        2,
        "one deadlock, one retry"
    );
    let reasons: Vec<(String, String)> = setup
        .query("SELECT scope, reason FROM cooldowns ORDER BY scope", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        reasons,
        [
            ("a".to_string(), "other".to_string()),
            ("b".to_string(), "ledger".to_string())
        ]
    );
}
