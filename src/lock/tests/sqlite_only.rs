//! SQLite-only lease tests: the hygiene pass, two handles on one file, and sharing the
//! ledger database file.

use super::*;

#[tokio::test]
async fn sqlite_repair_caps_far_expiries_and_deletes_dead_owners() {
    let h = Harness::sqlite().await;
    let dead_owner = dead_local_owner();
    let healthy = h
        .svc
        .acquire("acme/settlements", "auto-sync:1@web1", LONG)
        .await
        .expect("acquire");
    let far = h
        .svc
        .acquire("acme/returns", "backfill:4242@some-other-host", LONG)
        .await
        .expect("acquire");
    let dead = h
        .svc
        .acquire("acme/orders", &dead_owner, LONG)
        .await
        .expect("acquire");
    {
        let conn = rusqlite::Connection::open(h.sqlite_path.as_ref().expect("path")).expect("open");
        conn.execute(
            "UPDATE leases SET expires_at_ms = expires_at_ms + 864000000 WHERE scope = 'acme/returns'",
            [],
        )
        .expect("stretch");
    }
    let repairs = h.svc.repair(MAX_TTL).await.expect("repair");
    assert_eq!(repairs.len(), 2, "{repairs:?}");
    assert_eq!(repairs[0].scope, "acme/orders");
    assert_eq!(repairs[0].replaced_owner, dead_owner);
    assert_eq!(repairs[0].action, RepairAction::Deleted);
    assert_eq!(repairs[1].scope, "acme/returns");
    assert_eq!(repairs[1].action, RepairAction::ExpirySetToCap);
    assert!(repairs[1].previous_ttl_ms.expect("ttl") > 864_000_000 - 60_000);

    let infos = h.svc.list().await.expect("list");
    assert_eq!(infos.len(), 2);
    let returns = infos
        .iter()
        .find(|info| info.scope == "acme/returns")
        .expect("kept");
    assert!(returns.remaining_ms.expect("remaining") <= MAX_TTL.as_millis() as i64);
    assert_eq!(returns.fence, far.fence);
    let settlements = infos
        .iter()
        .find(|info| info.scope == "acme/settlements")
        .expect("kept");
    assert_eq!(settlements.expires_at_ms, Some(healthy.expires_at_ms));
    assert!(h.svc.repair(MAX_TTL).await.expect("second pass").is_empty());

    let next = h
        .svc
        .acquire("acme/orders", "auto-sync:2@web1", LONG)
        .await
        .expect("free");
    assert_eq!(next.fence, dead.fence + 1);
}

#[tokio::test]
async fn sqlite_two_handles_on_one_file_exclude_each_other() {
    let h = Harness::sqlite().await;
    let path = h.sqlite_path.clone().expect("path");
    let other = LockService::sqlite(&path).await.expect("second handle");
    let lease = h
        .svc
        .acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    match other.acquire("acme/orders", "b:2@h2", LONG).await {
        Err(LockError::Busy { holder, .. }) => assert_eq!(holder, "a:1@h1"),
        result => panic!("expected Busy, got {result:?}"),
    }
    assert!(other
        .release(&lease)
        .await
        .expect("release through the other handle"));
    let next = other
        .acquire("acme/orders", "b:2@h2", LONG)
        .await
        .expect("acquire");
    assert_eq!(next.fence, lease.fence + 1);
}

#[tokio::test]
async fn sqlite_shares_the_ledger_database_file() {
    use crate::store::{LedgerStore, SqliteLedger};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("marketsync.db");
    let ledger = SqliteLedger::open(&path).expect("ledger");
    let locks = SqliteLocks::open(&path).expect("locks");
    let svc = LockService::from(locks);
    svc.acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    let window = crate::domain::HourWindow::new(0, 2 * crate::domain::HOUR);
    ledger
        .seed("acme", "orders", window, 0)
        .expect("ledger still works");
    drop(ledger);
    // Reopening both in the other order is fine too.
    let _locks = SqliteLocks::open(&path).expect("locks again");
    let _ledger = SqliteLedger::open(&path).expect("ledger again");
    assert_eq!(svc.list().await.expect("list").len(), 1);
}

/// A listing answers while another connection holds the file's write lock (a long apply
/// on the ledger's connection) and a lease acquisition waits for it: the listing has its
/// own read connection, so it does not queue behind the waiting writer, and
/// `/api/status` (which lists the leases) does not wait for the apply either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_listing_does_not_wait_behind_a_lease_write_waiting_for_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("marketsync.db");
    let locks = SqliteLocks::open(&path).expect("locks");
    let svc = LockService::from(locks);
    svc.acquire("acme/orders", "a:1@h1", LONG)
        .await
        .expect("acquire");
    // The "apply": a write transaction on another connection, held for 3 s.
    let (held_tx, held) = std::sync::mpsc::channel();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open(&path).expect("open");
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .expect("write lock");
            held_tx.send(()).expect("signal");
            std::thread::sleep(Duration::from_secs(3));
            tx.commit().expect("commit");
        })
    };
    held.recv().expect("the write lock is held");
    // A lease write now waits for the write lock, holding the lock backend's connection.
    let waiting = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.acquire("acme/returns", "a:1@h1", LONG).await })
    };
    // Every listing while the write lock is held answers at once.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut listings = 0;
    while std::time::Instant::now() < until {
        let listed = tokio::time::timeout(Duration::from_millis(500), svc.list())
            .await
            .expect("a listing waited behind the lease write")
            .expect("list");
        assert_eq!(
            listed.len(),
            1,
            "the write in flight is not seen: {listed:?}"
        );
        listings += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listings >= 2, "{listings} listings");
    let acquired = waiting
        .await
        .expect("task")
        .expect("the waiting write goes through after");
    assert_eq!(acquired.scope, "acme/returns");
    writer.join().expect("writer");
    assert_eq!(svc.list().await.expect("list").len(), 2);
}
