//! The `active_inventory` snapshot's contract: every behaviour of [`InventoryStore`] the
//! runner and status rely on, run against both engines through the hour ledger's trait
//! object (SQLite in memory, a fresh PostgreSQL database), as `contract_cursors` does for
//! the cursor streams. Then `store copy` of the snapshot's tables.

use std::sync::Arc;

use super::contract_tests::Engine;
use crate::store::ebay_inventory::{
    InventoryRow, PendingTask, SnapshotApplied, SnapshotError, StoredSku, FIELD_CURRENCY,
    FIELD_PRICE, FIELD_QUANTITY, FIELD_STATE, STATE_ACTIVE, STATE_ENDED,
};
use crate::store::inventory::{RowSource, SnapshotTarget};
use crate::store::postgres::testing::TestDb;
use crate::store::postgres::{PgLedger, PgSettings};
use crate::store::{LedgerError, LedgerStore, SqliteLedger, WriteFence};

const STREAM: &str = "active_inventory";

/// (item, sku, quantity, price)
type Spec<'a> = (&'a str, &'a str, u64, &'a str);

fn row(item: &str, sku: &str, quantity: u64, price: &str) -> InventoryRow {
    InventoryRow {
        item_id: item.to_string(),
        sku: sku.to_string(),
        quantity,
        price: Some(price.to_string()),
        currency: Some("USD".to_string()),
    }
}

fn rows_of(specs: &[Spec<'_>]) -> Vec<Result<InventoryRow, String>> {
    specs
        .iter()
        .map(|(item, sku, quantity, price)| Ok(row(item, sku, *quantity, price)))
        .collect()
}

/// Applies `rows` as the snapshot of `account` taken and applied at `now`.
fn apply_rows(
    ledger: &dyn LedgerStore,
    account: &str,
    fence: WriteFence,
    rows: Vec<Result<InventoryRow, String>>,
    now: i64,
) -> Result<SnapshotApplied, SnapshotError> {
    let mut open = move || Ok(Box::new(rows.clone().into_iter()) as RowSource);
    ledger.apply_inventory_snapshot(
        SnapshotTarget {
            account,
            stream: STREAM,
            fence,
            taken_at: now,
            now,
        },
        &mut open,
        &|| {},
    )
}

fn apply(ledger: &dyn LedgerStore, account: &str, specs: &[Spec<'_>], now: i64) -> SnapshotApplied {
    apply_rows(ledger, account, WriteFence::Unfenced, rows_of(specs), now).expect("apply")
}

/// (item, sku, quantity, price, state) of every stored SKU of `account`.
fn stored(ledger: &dyn LedgerStore, account: &str) -> Vec<(String, String, i64, String, String)> {
    ledger
        .inventory_of(account)
        .expect("inventory")
        .into_iter()
        .map(|sku: StoredSku| {
            (
                sku.item_id,
                sku.sku,
                sku.quantity,
                sku.price.unwrap_or_default(),
                sku.state,
            )
        })
        .collect()
}

/// A history row: (resource, field, before, after, observed at), oldest first.
type EventRow = (String, String, Option<String>, Option<String>, i64);

fn history(ledger: &dyn LedgerStore, account: &str) -> Vec<EventRow> {
    let mut events = ledger.recent_events(Some(account), 10_000).expect("events");
    events.reverse();
    events
        .into_iter()
        .filter(|event| event.stream == STREAM)
        .map(|event| {
            (
                event.resource_id,
                event.field,
                event.before,
                event.after,
                event.observed_at,
            )
        })
        .collect()
}

fn event(resource: &str, field: &str, before: &str, after: &str, at: i64) -> EventRow {
    (
        resource.to_string(),
        field.to_string(),
        Some(before.to_string()),
        Some(after.to_string()),
        at,
    )
}

both_engines!(
    new_changed_unchanged_and_ended_skus_and_their_history,
    rows_in_any_order_apply_alike,
    a_failing_source_rolls_the_whole_snapshot_back,
    a_stale_fence_is_refused_and_nothing_is_written,
    the_pending_task_round_trips_under_the_fence,
    two_concurrent_applies_of_one_account_commit_once,
    a_snapshot_longer_than_a_batch_is_applied_whole,
    accounts_are_kept_apart,
);

fn new_changed_unchanged_and_ended_skus_and_their_history(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    let first = apply(
        ledger,
        "a",
        &[
            ("1", "A", 5, "9.99"),
            ("1", "B", 2, "1.00"),
            ("2", "", 1, "3.00"),
            ("3", "X", 4, "2.00"),
        ],
        10,
    );
    assert_eq!(
        (first.rows, first.inserted, first.events, first.ended),
        (4, 4, 0, 0),
        "first sight appends nothing"
    );
    // 1/A's quantity and 1/B's price change, 2 ends, 3/X is unchanged, 4 is new and
    // listed twice (the first is kept).
    let second = apply(
        ledger,
        "a",
        &[
            ("1", "A", 4, "9.99"),
            ("1", "B", 2, "1.50"),
            ("3", "X", 4, "2.00"),
            ("4", "", 7, "1.00"),
            ("4", "", 9, "1.00"),
        ],
        20,
    );
    assert_eq!(
        second,
        SnapshotApplied {
            rows: 5,
            inserted: 1,
            updated: 2,
            unchanged: 1,
            duplicates: 1,
            ended: 1,
            events: 4,
        }
    );
    // 2 is back (ENDED → ACTIVE), 1/A ends, 3/X sells out.
    let third = apply(
        ledger,
        "a",
        &[
            ("1", "B", 2, "1.50"),
            ("2", "", 1, "3.00"),
            ("3", "X", 0, "2.00"),
            ("4", "", 7, "1.00"),
        ],
        30,
    );
    assert_eq!(
        (third.updated, third.unchanged, third.ended, third.events),
        (2, 2, 1, 5)
    );
    assert_eq!(
        stored(ledger, "a"),
        [
            ("1".into(), "A".into(), 0, "9.99".into(), STATE_ENDED.into()),
            (
                "1".into(),
                "B".into(),
                2,
                "1.50".into(),
                STATE_ACTIVE.into()
            ),
            ("2".into(), "".into(), 1, "3.00".into(), STATE_ACTIVE.into()),
            (
                "3".into(),
                "X".into(),
                0,
                "2.00".into(),
                STATE_ACTIVE.into()
            ),
            ("4".into(), "".into(), 7, "1.00".into(), STATE_ACTIVE.into()),
        ]
    );
    assert_eq!(
        history(ledger, "a"),
        [
            event("1/A", FIELD_QUANTITY, "5", "4", 20),
            event("1/B", FIELD_PRICE, "1.00", "1.50", 20),
            event("2", FIELD_QUANTITY, "1", "0", 20),
            event("2", FIELD_STATE, STATE_ACTIVE, STATE_ENDED, 20),
            event("1/A", FIELD_QUANTITY, "4", "0", 30),
            event("1/A", FIELD_STATE, STATE_ACTIVE, STATE_ENDED, 30),
            event("2", FIELD_QUANTITY, "0", "1", 30),
            event("2", FIELD_STATE, STATE_ENDED, STATE_ACTIVE, 30),
            event("3/X", FIELD_QUANTITY, "4", "0", 30),
        ]
    );
    // A currency change is history too; an empty snapshot ends everything active.
    let mut euro = row("4", "", 7, "1.00");
    euro.currency = Some("EUR".to_string());
    let fourth = apply_rows(ledger, "a", WriteFence::Unfenced, vec![Ok(euro)], 40).unwrap();
    assert_eq!((fourth.updated, fourth.ended, fourth.events), (1, 3, 6));
    assert!(history(ledger, "a").contains(&event("4", FIELD_CURRENCY, "USD", "EUR", 40)));
    let fifth = apply(ledger, "a", &[], 50);
    assert_eq!((fifth.ended, fifth.events), (1, 2));
    assert!(stored(ledger, "a")
        .iter()
        .all(|sku| sku.2 == 0 && sku.4 == STATE_ENDED));
    // The stream's cursor row moved to each snapshot's time; status counts the SKUs and
    // the history.
    let snapshot = ledger.cursor_snapshot("a", STREAM).unwrap().unwrap();
    assert_eq!(
        (
            snapshot.cursor_ts,
            snapshot.resources,
            snapshot.events,
            snapshot.failures
        ),
        (50, 5, 17, 0)
    );
    assert_eq!(
        engine.sql("SELECT snapshot FROM ebay_inventory_snapshots WHERE account = 'a'"),
        5
    );
}

fn rows_in_any_order_apply_alike(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    let snapshots: [&[Spec<'_>]; 2] = [
        &[
            ("1", "A", 5, "9.99"),
            ("2", "", 1, "3.00"),
            ("3", "X", 4, "2.00"),
        ],
        &[
            ("3", "X", 3, "2.00"),
            ("1", "A", 5, "8.99"),
            ("5", "Z", 1, "1.00"),
        ],
    ];
    for (index, specs) in snapshots.iter().enumerate() {
        let now = 10 * (i64::try_from(index).unwrap() + 1);
        apply(ledger, "sorted", specs, now);
        let mut reversed = specs.to_vec();
        reversed.reverse();
        apply(ledger, "reversed", &reversed, now);
    }
    assert_eq!(stored(ledger, "sorted"), stored(ledger, "reversed"));
    let sorted_history = history(ledger, "sorted");
    let mut a = sorted_history.clone();
    let mut b = history(ledger, "reversed");
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // 3/X's quantity, 1/A's price, 2's end (quantity and state).
    assert_eq!(sorted_history.len(), 4, "{sorted_history:?}");
    // Out of order, a SKU listed twice apart keeps its first row.
    let applied = apply(
        ledger,
        "twice",
        &[
            ("2", "", 1, "1.00"),
            ("1", "A", 5, "9.99"),
            ("2", "", 9, "2.00"),
        ],
        10,
    );
    assert_eq!(
        (applied.rows, applied.inserted, applied.duplicates),
        (3, 2, 1)
    );
    assert_eq!(
        stored(ledger, "twice"),
        [
            (
                "1".into(),
                "A".into(),
                5,
                "9.99".into(),
                STATE_ACTIVE.into()
            ),
            ("2".into(), "".into(), 1, "1.00".into(), STATE_ACTIVE.into()),
        ]
    );
}

fn a_failing_source_rolls_the_whole_snapshot_back(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    apply(
        ledger,
        "a",
        &[("1", "A", 5, "9.99"), ("2", "", 1, "3.00")],
        10,
    );
    ledger
        .record_task(
            "a",
            STREAM,
            WriteFence::Unfenced,
            &PendingTask {
                task_id: "task-2".to_string(),
                created_at: 20,
            },
            20,
        )
        .unwrap();
    // Changes, a new SKU and an end are all met before the source fails (after more rows
    // than one batch).
    let mut rows: Vec<Result<InventoryRow, String>> =
        vec![Ok(row("1", "A", 1, "1.00")), Ok(row("1", "B", 1, "1.00"))];
    rows.extend((0..5000).map(|index| Ok(row(&format!("9{index:05}"), "", 1, "1.00"))));
    rows.push(Err("the file is truncated".to_string()));
    let failed = apply_rows(ledger, "a", WriteFence::Unfenced, rows, 30);
    match failed {
        Err(SnapshotError::Source(message)) => {
            assert!(message.contains("truncated"), "{message}")
        }
        other => panic!("expected a source error, got {other:?}"),
    }
    // A source that cannot even be opened is the same.
    let mut unopenable = || Err::<RowSource, String>("no such file".to_string());
    let target = SnapshotTarget {
        account: "a",
        stream: STREAM,
        fence: WriteFence::Unfenced,
        taken_at: 40,
        now: 40,
    };
    assert!(matches!(
        ledger.apply_inventory_snapshot(target, &mut unopenable, &|| {}),
        Err(SnapshotError::Source(_))
    ));
    assert_eq!(
        stored(ledger, "a"),
        [
            (
                "1".into(),
                "A".into(),
                5,
                "9.99".into(),
                STATE_ACTIVE.into()
            ),
            ("2".into(), "".into(), 1, "3.00".into(), STATE_ACTIVE.into()),
        ]
    );
    assert!(history(ledger, "a").is_empty());
    assert_eq!(
        ledger
            .cursor_snapshot("a", STREAM)
            .unwrap()
            .unwrap()
            .cursor_ts,
        10
    );
    assert_eq!(
        ledger
            .pending_task("a", STREAM)
            .unwrap()
            .map(|task| task.task_id),
        Some("task-2".to_string()),
        "the task stays until a file is applied"
    );
    assert_eq!(
        engine.sql("SELECT snapshot FROM ebay_inventory_snapshots WHERE account = 'a'"),
        1
    );
}

fn a_stale_fence_is_refused_and_nothing_is_written(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    apply_rows(
        ledger,
        "a",
        WriteFence::Lease(5),
        rows_of(&[("1", "A", 5, "9.99")]),
        10,
    )
    .expect("current fence");
    assert_eq!(ledger.newest_fence("a", STREAM).unwrap(), 5);
    let stale = apply_rows(
        ledger,
        "a",
        WriteFence::Lease(4),
        rows_of(&[("1", "A", 1, "1.00"), ("2", "", 1, "1.00")]),
        20,
    );
    assert!(
        matches!(
            stale,
            Err(SnapshotError::Ledger(LedgerError::StaleFence {
                fence: 4,
                newest: 5,
                ..
            }))
        ),
        "{stale:?}"
    );
    let task = PendingTask {
        task_id: "t".to_string(),
        created_at: 20,
    };
    assert!(matches!(
        ledger.record_task("a", STREAM, WriteFence::Lease(4), &task, 20),
        Err(LedgerError::StaleFence { .. })
    ));
    ledger
        .record_task("a", STREAM, WriteFence::Lease(5), &task, 20)
        .unwrap();
    assert!(matches!(
        ledger.forget_task("a", STREAM, WriteFence::Lease(4), 20),
        Err(LedgerError::StaleFence { .. })
    ));
    assert!(matches!(
        ledger.record_failure("a", STREAM, WriteFence::Lease(4), "x", 99, 20),
        Err(LedgerError::StaleFence { .. })
    ));
    assert!(matches!(
        apply_rows(ledger, "a", WriteFence::Missing, vec![], 20),
        Err(SnapshotError::Ledger(LedgerError::Unfenced { .. }))
    ));
    assert_eq!(
        stored(ledger, "a"),
        [(
            "1".into(),
            "A".into(),
            5,
            "9.99".into(),
            STATE_ACTIVE.into()
        )]
    );
    assert!(history(ledger, "a").is_empty());
    let cursor = ledger.cursor_snapshot("a", STREAM).unwrap().unwrap();
    assert_eq!((cursor.cursor_ts, cursor.failures), (10, 0));
    assert_eq!(ledger.pending_task("a", STREAM).unwrap(), Some(task));
    // A newer fence takes the scope over.
    apply_rows(ledger, "a", WriteFence::Lease(6), vec![], 30).expect("newer fence");
    assert_eq!(ledger.newest_fence("a", STREAM).unwrap(), 6);
}

fn the_pending_task_round_trips_under_the_fence(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    assert_eq!(ledger.pending_task("a", STREAM).unwrap(), None);
    let first = PendingTask {
        task_id: "task-1".to_string(),
        created_at: 100,
    };
    ledger
        .record_task("a", STREAM, WriteFence::Lease(1), &first, 100)
        .unwrap();
    assert_eq!(ledger.pending_task("a", STREAM).unwrap(), Some(first));
    assert_eq!(ledger.pending_task("b", STREAM).unwrap(), None);
    let second = PendingTask {
        task_id: "task-2".to_string(),
        created_at: 200,
    };
    ledger
        .record_task("a", STREAM, WriteFence::Lease(1), &second, 200)
        .unwrap();
    assert_eq!(ledger.pending_task("a", STREAM).unwrap(), Some(second));
    ledger
        .forget_task("a", STREAM, WriteFence::Lease(1), 300)
        .unwrap();
    assert_eq!(ledger.pending_task("a", STREAM).unwrap(), None);
    // An applied snapshot forgets the task it came from.
    ledger
        .record_task(
            "a",
            STREAM,
            WriteFence::Lease(1),
            &PendingTask {
                task_id: "task-3".to_string(),
                created_at: 400,
            },
            400,
        )
        .unwrap();
    apply_rows(
        ledger,
        "a",
        WriteFence::Lease(1),
        rows_of(&[("1", "A", 1, "1.00")]),
        400,
    )
    .unwrap();
    assert_eq!(ledger.pending_task("a", STREAM).unwrap(), None);
    assert_eq!(engine.sql("SELECT COUNT(*) FROM ebay_feed_tasks"), 0);
}

/// Two applies of the same snapshot of one account at once (two daemons that both
/// fetched it): they take turns on the stream's cursor row, so the second compares with
/// what the first wrote. The changes and the history are written once, whatever the
/// interleaving.
fn two_concurrent_applies_of_one_account_commit_once(engine: &Engine) {
    let ledger = Arc::clone(&engine.ledger);
    let items: Vec<String> = (0..300).map(|index| format!("{index:04}")).collect();
    let first: Vec<Result<InventoryRow, String>> = items
        .iter()
        .map(|item| Ok(row(item, "", 5, "1.00")))
        .collect();
    apply_rows(ledger.as_ref(), "a", WriteFence::Lease(1), first, 10).unwrap();
    for round in 0..5u64 {
        // Every SKU changes quantity, one more SKU is new, the last of the round before ends.
        let rows: Vec<Result<InventoryRow, String>> = items
            .iter()
            .map(|item| Ok(row(item, "", 6 + round, "1.00")))
            .chain(std::iter::once(Ok(row(
                &format!("new-{round}"),
                "",
                1,
                "1.00",
            ))))
            .collect();
        let now = 20 + i64::try_from(round).unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let outcomes: Vec<SnapshotApplied> = (0..2)
            .map(|_| {
                let (ledger, barrier, rows) =
                    (Arc::clone(&ledger), Arc::clone(&barrier), rows.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    apply_rows(ledger.as_ref(), "a", WriteFence::Lease(1), rows, now)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().expect("thread").expect("apply"))
            .collect();
        let changed: Vec<&SnapshotApplied> = outcomes
            .iter()
            .filter(|applied| applied.updated > 0)
            .collect();
        assert_eq!(changed.len(), 1, "round {round}: {outcomes:?}");
        let winner = changed[0];
        assert_eq!(
            (winner.updated, winner.inserted, winner.ended),
            (300, 1, u64::from(round > 0)),
            "round {round}"
        );
        let other = outcomes
            .iter()
            .find(|applied| applied.updated == 0)
            .expect("the other apply");
        assert_eq!(
            (other.unchanged, other.inserted, other.ended, other.events),
            (301, 0, 0, 0),
            "round {round}: the second apply found the first's rows"
        );
    }
    // 300 quantity changes per round, and the ends of new-0..new-3 (quantity and state).
    let events = history(ledger.as_ref(), "a");
    assert_eq!(events.len(), 5 * 300 + 4 * 2);
    assert_eq!(ledger.inventory_of("a").unwrap().len(), 305);
}

fn a_snapshot_longer_than_a_batch_is_applied_whole(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    let count = 23_456usize;
    let rows = move || {
        (0..count).map(|index| Ok::<_, String>(row(&format!("{index:08}"), "s", 1, "1.00")))
    };
    let progressed = std::sync::atomic::AtomicU64::new(0);
    let mut open = || Ok(Box::new(rows()) as RowSource);
    let applied = ledger
        .apply_inventory_snapshot(
            SnapshotTarget {
                account: "big",
                stream: STREAM,
                fence: WriteFence::Unfenced,
                taken_at: 10,
                now: 10,
            },
            &mut open,
            &|| {
                progressed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .unwrap();
    assert_eq!((applied.rows, applied.inserted), (23_456, 23_456));
    // At least once per 10,000 rows read (PostgreSQL also between its statements).
    assert!(progressed.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    let stored = ledger.inventory_of("big").unwrap();
    assert_eq!(stored.len(), count);
    assert_eq!(stored[count - 1].item_id, format!("{:08}", count - 1));
    // The same again: nothing changes, nothing is written to the history.
    let again = ledger
        .apply_inventory_snapshot(
            SnapshotTarget {
                account: "big",
                stream: STREAM,
                fence: WriteFence::Unfenced,
                taken_at: 20,
                now: 20,
            },
            &mut open,
            &|| {},
        )
        .unwrap();
    assert_eq!((again.unchanged, again.events), (23_456, 0));
}

fn accounts_are_kept_apart(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    apply(ledger, "a", &[("1", "A", 5, "9.99")], 10);
    apply(
        ledger,
        "b",
        &[("1", "A", 7, "9.99"), ("2", "", 1, "1.00")],
        10,
    );
    // b's empty snapshot ends b's SKUs only.
    let applied = apply(ledger, "b", &[], 20);
    assert_eq!(applied.ended, 2);
    assert_eq!(
        stored(ledger, "a"),
        [(
            "1".into(),
            "A".into(),
            5,
            "9.99".into(),
            STATE_ACTIVE.into()
        )]
    );
    assert!(history(ledger, "a").is_empty());
    assert_eq!(history(ledger, "b").len(), 4);
    // Byte order: an upper-case item sorts before a lower-case one, as on SQLite.
    apply(
        ledger,
        "c",
        &[("b", "", 1, "1"), ("B", "", 1, "1"), ("a", "", 1, "1")],
        10,
    );
    let order: Vec<String> = stored(ledger, "c").into_iter().map(|sku| sku.0).collect();
    assert_eq!(order, ["B", "a", "b"]);
}

/// `store copy` moves the snapshot's tables (rows, counter, pending task, cursor row and
/// history), every table verified; on PostgreSQL the next snapshot continues where the
/// file's left off (snapshot number, history ids).
#[test]
fn store_copy_moves_the_inventory_tables_and_the_next_snapshot_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("marketsync.db");
    {
        let sqlite = SqliteLedger::open(&path).unwrap();
        let ledger: &dyn LedgerStore = &sqlite;
        apply(
            ledger,
            "a",
            &[("1", "A", 5, "9.99"), ("2", "", 1, "3.00")],
            10,
        );
        apply(
            ledger,
            "a",
            &[("1", "A", 4, "9.99"), ("3", "Ü", 2, "1.00")],
            20,
        );
        apply(ledger, "b", &[("7", "x", 1, "1.00")], 20);
        ledger
            .record_task(
                "b",
                STREAM,
                WriteFence::Lease(3),
                &PendingTask {
                    task_id: "task-b".to_string(),
                    created_at: 30,
                },
                30,
            )
            .unwrap();
    }
    let db = TestDb::create();
    let url = crate::store::postgres::DatabaseUrl::new(&db.url).unwrap();
    let checks =
        crate::store::postgres::copy::copy_sqlite_to_postgres(&path, &url, false, &mut |_, _| {})
            .unwrap();
    for table in [
        "ebay_inventory",
        "ebay_inventory_snapshots",
        "ebay_feed_tasks",
        "events",
        "cursors",
        "scope_fences",
    ] {
        let check = checks
            .iter()
            .find(|check| check.table == table)
            .unwrap_or_else(|| panic!("{table} is copied"));
        assert!(check.ok(), "{check:?}");
        assert!(check.source_rows > 0, "{table} had rows to copy");
    }
    let sqlite = SqliteLedger::open(&path).unwrap();
    let pg = PgLedger::open(&db.url, &PgSettings::default()).unwrap();
    let (sqlite, pg): (&dyn LedgerStore, &dyn LedgerStore) = (&sqlite, &pg);
    for account in ["a", "b"] {
        assert_eq!(
            pg.inventory_of(account).unwrap(),
            sqlite.inventory_of(account).unwrap()
        );
        assert_eq!(history(pg, account), history(sqlite, account));
        assert_eq!(
            pg.cursor_snapshot(account, STREAM).unwrap(),
            sqlite.cursor_snapshot(account, STREAM).unwrap()
        );
        assert_eq!(
            pg.pending_task(account, STREAM).unwrap(),
            sqlite.pending_task(account, STREAM).unwrap()
        );
    }
    assert_eq!(pg.newest_fence("b", STREAM).unwrap(), 3);
    let copied_max = pg.recent_events(None, 1).unwrap()[0].id;
    // The same next snapshot on both: the same result, the counter continues.
    for ledger in [sqlite, pg] {
        let applied = apply(
            ledger,
            "a",
            &[("1", "A", 4, "9.99"), ("3", "Ü", 1, "1.00")],
            40,
        );
        assert_eq!(
            (applied.updated, applied.unchanged, applied.ended),
            (1, 1, 0)
        );
    }
    assert_eq!(
        pg.inventory_of("a").unwrap(),
        sqlite.inventory_of("a").unwrap()
    );
    assert_eq!(history(pg, "a"), history(sqlite, "a"));
    assert!(pg.recent_events(None, 1).unwrap()[0].id > copied_max);
    let mut client = db.client();
    let snapshot: i64 = client
        .query_one(
            "SELECT snapshot FROM ebay_inventory_snapshots WHERE account = 'a'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(snapshot, 3);
}
