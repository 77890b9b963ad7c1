//! The cursor streams' contract: every behaviour of [`CursorStore`] a caller relies on,
//! run against both engines through the hour ledger's trait object (SQLite in memory, a
//! fresh PostgreSQL database), as `contract_tests` does for the hour ledger. Then the
//! PostgreSQL-only parts: the integer columns, and `store copy` of the cursor tables.

use std::sync::Arc;

use super::contract_tests::Engine;
use crate::store::cursors::{CursorStore, CursorWindow, Resource, TableSpec};
use crate::store::ebay_streams::{OPEN_TRANSACTIONS, PAYOUTS_TABLE};
use crate::store::ebay_tables::{
    table_for_stream, CURSOR_STREAMS, ORDERS_TABLE, TRANSACTIONS_TABLE,
};
use crate::store::postgres::testing::TestDb;
use crate::store::postgres::{PgLedger, PgSettings};
use crate::store::{LedgerError, LedgerStore, SqliteLedger, WriteFence};

/// A resource of `spec` with `values` set by column name (the rest NULL).
fn resource(spec: &TableSpec, id: &str, values: &[(&str, &str)], raw: &str) -> Resource {
    let mut all = vec![None; spec.columns.len()];
    for (column, value) in values {
        let index = spec
            .columns
            .iter()
            .position(|name| name == column)
            .unwrap_or_else(|| panic!("{} has no column {column}", spec.table));
        all[index] = Some((*value).to_string());
    }
    Resource {
        id: id.to_string(),
        values: all,
        raw: raw.to_string(),
    }
}

fn order(id: &str, modified: &str, status: &str, total: &str, raw: &str) -> Resource {
    resource(
        &ORDERS_TABLE,
        id,
        &[
            ("creation_date", "2026-01-01T00:00:00.000Z"),
            ("last_modified_date", modified),
            ("fulfillment_status", status),
            ("payment_status", "PAID"),
            ("total_value", total),
            ("currency", "USD"),
        ],
        raw,
    )
}

fn window(start: i64, end: i64) -> CursorWindow {
    CursorWindow { start, end }
}

/// Applies `resources` to `account`/orders over `[start, end)` at `now`, unfenced.
fn apply_orders(
    ledger: &dyn LedgerStore,
    account: &str,
    resources: &[Resource],
    start: i64,
    end: i64,
    now: i64,
) -> Result<crate::store::cursors::Applied, LedgerError> {
    ledger.apply_window(
        account,
        "orders",
        WriteFence::Unfenced,
        &ORDERS_TABLE,
        resources,
        window(start, end),
        now,
    )
}

both_engines!(
    a_window_upserts_its_resources_and_moves_the_cursor,
    history_is_appended_only_when_a_tracked_field_changes,
    a_stale_fence_is_refused_and_nothing_is_written,
    a_window_not_at_the_cursor_is_refused_and_nothing_is_written,
    a_failure_is_recorded_and_a_success_clears_it,
    recent_events_are_newest_first_per_account_and_limited,
    latest_orders_are_the_most_recently_modified,
    oldest_open_and_cursor_positions_compare_text_in_byte_order,
    every_stream_table_takes_a_window,
    a_resource_served_twice_in_a_window_is_compared_with_its_first_copy,
);

fn a_resource_served_twice_in_a_window_is_compared_with_its_first_copy(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    ledger.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    apply_orders(ledger, "a", &[order("o1", "m", "S0", "1", "{}")], 0, 10, 1).unwrap();
    let applied = apply_orders(
        ledger,
        "a",
        &[
            order("o1", "m", "S1", "1", "{}"),
            order("new", "m", "N0", "1", "{}"),
            order("o1", "m", "S2", "1", "{}"),
            order("new", "m", "N0", "1", "{}"),
            order("new", "m", "N1", "1", "{}"),
        ],
        10,
        20,
        2,
    )
    .unwrap();
    assert_eq!(
        (
            applied.inserted,
            applied.updated,
            applied.unchanged,
            applied.events
        ),
        (1, 3, 1, 3)
    );
    let changes: Vec<(String, Option<String>, Option<String>)> = ledger
        .recent_events(Some("a"), 10)
        .unwrap()
        .into_iter()
        .rev()
        .map(|event| (event.resource_id, event.before, event.after))
        .collect();
    let change = |id: &str, before: &str, after: &str| {
        (
            id.to_string(),
            Some(before.to_string()),
            Some(after.to_string()),
        )
    };
    assert_eq!(
        changes,
        [
            change("o1", "S0", "S1"),
            change("o1", "S1", "S2"),
            change("new", "N0", "N1")
        ]
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM ebay_orders WHERE fulfillment_status IN ('S2', 'N1')"),
        2
    );
}

fn a_window_upserts_its_resources_and_moves_the_cursor(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    assert_eq!(ledger.cursor_snapshot("a", "orders").unwrap(), None);
    let cursor = ledger.load_or_init_cursor("a", "orders", 100, 1).unwrap();
    assert_eq!(
        (cursor.cursor_ts, cursor.failures, cursor.retry_at),
        (100, 0, None)
    );
    // Loading again keeps the cursor where it is.
    assert_eq!(
        ledger
            .load_or_init_cursor("a", "orders", 999, 2)
            .unwrap()
            .cursor_ts,
        100
    );
    let applied = apply_orders(
        ledger,
        "a",
        &[
            order(
                "o1",
                "2026-01-01T01:00:00.000Z",
                "NOT_STARTED",
                "10.00",
                "{\"n\":1}",
            ),
            order(
                "o2",
                "2026-01-01T02:00:00.000Z",
                "NOT_STARTED",
                "20.00",
                "{\"n\":2}",
            ),
        ],
        100,
        200,
        3,
    )
    .unwrap();
    assert_eq!(
        (
            applied.inserted,
            applied.updated,
            applied.unchanged,
            applied.events
        ),
        (2, 0, 0, 0)
    );
    let snapshot = ledger.cursor_snapshot("a", "orders").unwrap().unwrap();
    assert_eq!(
        (
            snapshot.cursor_ts,
            snapshot.last_run_at,
            snapshot.resources,
            snapshot.events,
            snapshot.failures
        ),
        (200, Some(3), 2, 0, 0)
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM ebay_orders WHERE account = 'a' AND first_seen_at = 3 AND updated_at = 3"),
        2
    );
    assert_eq!(
        engine.sql("SELECT updated_at FROM cursors WHERE account = 'a' AND stream = 'orders'"),
        3
    );
    // Another account's cursor is its own.
    assert_eq!(ledger.cursor_snapshot("b", "orders").unwrap(), None);
}

fn history_is_appended_only_when_a_tracked_field_changes(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    ledger.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    let first = order(
        "o1",
        "2026-01-01T01:00:00.000Z",
        "NOT_STARTED",
        "10.00",
        "{}",
    );
    apply_orders(ledger, "a", std::slice::from_ref(&first), 0, 10, 1).unwrap();
    // Seen again unchanged: nothing appended, the row not rewritten.
    let same = apply_orders(ledger, "a", &[first], 10, 20, 2).unwrap();
    assert_eq!((same.unchanged, same.updated, same.events), (1, 0, 0));
    assert_eq!(
        engine.sql("SELECT updated_at FROM ebay_orders WHERE order_id = 'o1'"),
        1
    );
    // Only the raw document moved (an untracked field): updated, no history.
    let raw_only = order(
        "o1",
        "2026-01-01T01:30:00.000Z",
        "NOT_STARTED",
        "10.00",
        "{\"x\":1}",
    );
    let moved = apply_orders(ledger, "a", &[raw_only], 20, 30, 3).unwrap();
    assert_eq!((moved.unchanged, moved.updated, moved.events), (0, 1, 0));
    assert_eq!(
        engine.sql("SELECT updated_at FROM ebay_orders WHERE order_id = 'o1'"),
        3
    );
    assert!(ledger.recent_events(Some("a"), 10).unwrap().is_empty());
    // Two tracked fields change: one event each, in the spec's order.
    let changed = order(
        "o1",
        "2026-01-01T02:00:00.000Z",
        "FULFILLED",
        "12.50",
        "{\"x\":2}",
    );
    let applied = apply_orders(ledger, "a", &[changed], 30, 40, 4).unwrap();
    assert_eq!((applied.updated, applied.events), (1, 2));
    let events = ledger.recent_events(Some("a"), 10).unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|event| {
            (
                event.stream.as_str(),
                event.resource_id.as_str(),
                event.field.as_str(),
                event.before.as_deref(),
                event.after.as_deref(),
                event.observed_at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "orders",
                "o1",
                "pricingSummary.total.value",
                Some("10.00"),
                Some("12.50"),
                4
            ),
            (
                "orders",
                "o1",
                "orderFulfillmentStatus",
                Some("NOT_STARTED"),
                Some("FULFILLED"),
                4
            ),
        ]
    );
    assert!(events[0].id > events[1].id);
    // A tracked field that becomes NULL is a change too.
    let mut cleared = order(
        "o1",
        "2026-01-01T03:00:00.000Z",
        "FULFILLED",
        "12.50",
        "{\"x\":2}",
    );
    let total = ORDERS_TABLE
        .columns
        .iter()
        .position(|column| *column == "total_value")
        .unwrap();
    cleared.values[total] = None;
    let applied = apply_orders(ledger, "a", &[cleared], 40, 50, 5).unwrap();
    assert_eq!(applied.events, 1);
    let newest = &ledger.recent_events(Some("a"), 1).unwrap()[0];
    assert_eq!(
        (newest.before.as_deref(), newest.after.as_deref()),
        (Some("12.50"), None)
    );
    // first_seen_at stays the first sight's.
    assert_eq!(
        engine.sql("SELECT first_seen_at FROM ebay_orders WHERE order_id = 'o1'"),
        1
    );
    let snapshot = ledger.cursor_snapshot("a", "orders").unwrap().unwrap();
    assert_eq!((snapshot.cursor_ts, snapshot.events), (50, 3));
}

fn a_stale_fence_is_refused_and_nothing_is_written(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    ledger.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    let fenced = |fence: WriteFence, start: i64, end: i64, status: &str| {
        ledger.apply_window(
            "a",
            "orders",
            fence,
            &ORDERS_TABLE,
            &[order(
                "o1",
                "2026-01-01T01:00:00.000Z",
                status,
                "1.00",
                status,
            )],
            window(start, end),
            end,
        )
    };
    fenced(WriteFence::Lease(5), 0, 10, "NOT_STARTED").unwrap();
    // The fence a cursor write records is the one the lease floor reads.
    assert_eq!(ledger.newest_fence("a", "orders").unwrap(), 5);
    let err = fenced(WriteFence::Lease(4), 10, 20, "FULFILLED").unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::StaleFence {
                fence: 4,
                newest: 5,
                ..
            }
        ),
        "{err}"
    );
    let err = fenced(WriteFence::Missing, 10, 20, "FULFILLED").unwrap_err();
    assert!(matches!(err, LedgerError::Unfenced { .. }), "{err}");
    let err = ledger
        .record_failure("a", "orders", WriteFence::Lease(4), "late", 99, 15)
        .unwrap_err();
    assert!(matches!(err, LedgerError::StaleFence { .. }), "{err}");
    // Nothing of the refused writes is there: cursor, row, history, failure record.
    let snapshot = ledger.cursor_snapshot("a", "orders").unwrap().unwrap();
    assert_eq!(
        (
            snapshot.cursor_ts,
            snapshot.failures,
            snapshot.last_error,
            snapshot.events
        ),
        (10, 0, None, 0)
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM ebay_orders WHERE fulfillment_status = 'FULFILLED'"),
        0
    );
    assert_eq!(engine.sql("SELECT COUNT(*) FROM events"), 0);
    // A newer fence takes the scope over; the old one stays refused.
    fenced(WriteFence::Lease(6), 10, 20, "FULFILLED").unwrap();
    assert_eq!(ledger.newest_fence("a", "orders").unwrap(), 6);
    assert!(matches!(
        ledger.record_failure("a", "orders", WriteFence::Lease(5), "late", 99, 25),
        Err(LedgerError::StaleFence { .. })
    ));
    ledger
        .record_failure("a", "orders", WriteFence::Lease(6), "boom", 99, 25)
        .unwrap();
    // The fence is per scope: another stream of the account is not affected.
    ledger.load_or_init_cursor("a", "returns", 0, 0).unwrap();
    ledger
        .apply_window(
            "a",
            "returns",
            WriteFence::Lease(1),
            &crate::store::ebay_tables::RETURNS_TABLE,
            &[],
            window(0, 10),
            10,
        )
        .unwrap();
}

fn a_window_not_at_the_cursor_is_refused_and_nothing_is_written(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    let o1 = order(
        "o1",
        "2026-01-01T01:00:00.000Z",
        "NOT_STARTED",
        "1.00",
        "{}",
    );
    // No cursor at all: refused.
    let err = apply_orders(ledger, "a", std::slice::from_ref(&o1), 0, 10, 1).unwrap_err();
    assert!(matches!(err, LedgerError::CursorMoved { .. }), "{err}");
    ledger.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    apply_orders(ledger, "a", &[o1], 0, 10, 1).unwrap();
    // The same window again (another run applied it): refused, nothing written.
    let changed = order("o1", "2026-01-01T02:00:00.000Z", "FULFILLED", "1.00", "{}");
    let err = apply_orders(
        ledger,
        "a",
        &[
            changed,
            order(
                "o2",
                "2026-01-01T02:00:00.000Z",
                "NOT_STARTED",
                "1.00",
                "{}",
            ),
        ],
        0,
        10,
        2,
    )
    .unwrap_err();
    assert!(
        matches!(&err, LedgerError::CursorMoved { account, stream, expected: 0 } if account == "a" && stream == "orders"),
        "{err}"
    );
    assert_eq!(engine.sql("SELECT COUNT(*) FROM ebay_orders"), 1);
    assert_eq!(engine.sql("SELECT COUNT(*) FROM events"), 0);
    assert_eq!(
        ledger
            .cursor_snapshot("a", "orders")
            .unwrap()
            .unwrap()
            .cursor_ts,
        10
    );
}

fn a_failure_is_recorded_and_a_success_clears_it(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    ledger.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    ledger
        .record_failure("a", "orders", WriteFence::Lease(1), "first", 500, 300)
        .unwrap();
    ledger
        .record_failure("a", "orders", WriteFence::Lease(1), "second", 900, 400)
        .unwrap();
    let snapshot = ledger.cursor_snapshot("a", "orders").unwrap().unwrap();
    assert_eq!(
        (
            snapshot.cursor_ts,
            snapshot.failures,
            snapshot.last_error.as_deref(),
            snapshot.retry_at,
            snapshot.last_run_at
        ),
        (0, 2, Some("second"), Some(900), Some(400))
    );
    let cursor = ledger.load_or_init_cursor("a", "orders", 7, 401).unwrap();
    assert_eq!(
        (cursor.cursor_ts, cursor.failures, cursor.retry_at),
        (0, 2, Some(900))
    );
    // A failure of an account without a cursor changes nothing.
    ledger
        .record_failure("b", "orders", WriteFence::Unfenced, "x", 1, 1)
        .unwrap();
    assert_eq!(ledger.cursor_snapshot("b", "orders").unwrap(), None);
    apply_orders(ledger, "a", &[], 0, 60, 950).unwrap();
    let snapshot = ledger.cursor_snapshot("a", "orders").unwrap().unwrap();
    assert_eq!(
        (
            snapshot.cursor_ts,
            snapshot.failures,
            snapshot.last_error,
            snapshot.retry_at,
            snapshot.last_run_at
        ),
        (60, 0, None, None, Some(950))
    );
}

fn recent_events_are_newest_first_per_account_and_limited(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    for account in ["a", "b"] {
        ledger.load_or_init_cursor(account, "orders", 0, 0).unwrap();
    }
    let statuses = ["S0", "S1", "S2", "S3"];
    for (step, status) in statuses.iter().enumerate() {
        let step = i64::try_from(step).unwrap();
        for account in ["a", "b"] {
            apply_orders(
                ledger,
                account,
                &[order(
                    "o1",
                    "2026-01-01T01:00:00.000Z",
                    status,
                    "1.00",
                    "{}",
                )],
                step * 10,
                step * 10 + 10,
                100 + step,
            )
            .unwrap();
        }
    }
    // Three changes per account (the first sight appends nothing).
    let a = ledger.recent_events(Some("a"), 10).unwrap();
    assert_eq!(
        a.iter()
            .map(|event| (event.account.as_str(), event.after.as_deref()))
            .collect::<Vec<_>>(),
        [("a", Some("S3")), ("a", Some("S2")), ("a", Some("S1"))]
    );
    let two = ledger.recent_events(Some("a"), 2).unwrap();
    assert_eq!(two, a[..2].to_vec());
    let all = ledger.recent_events(None, 100).unwrap();
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2).all(|pair| pair[0].id > pair[1].id),
        "{all:?}"
    );
    assert_eq!(
        all.iter()
            .map(|event| (event.account.as_str(), event.after.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("b", Some("S3")),
            ("a", Some("S3")),
            ("b", Some("S2")),
            ("a", Some("S2")),
            ("b", Some("S1")),
            ("a", Some("S1"))
        ]
    );
    assert!(ledger.recent_events(None, 0).unwrap().is_empty());
    assert!(ledger.recent_events(Some("nobody"), 10).unwrap().is_empty());
}

fn latest_orders_are_the_most_recently_modified(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    ledger.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    ledger.load_or_init_cursor("b", "orders", 0, 0).unwrap();
    apply_orders(
        ledger,
        "a",
        &[
            order(
                "o-old",
                "2026-01-01T01:00:00.000Z",
                "FULFILLED",
                "1.00",
                "{}",
            ),
            order(
                "o-b",
                "2026-01-03T00:00:00.000Z",
                "NOT_STARTED",
                "2.00",
                "{}",
            ),
            order(
                "o-a",
                "2026-01-03T00:00:00.000Z",
                "NOT_STARTED",
                "3.00",
                "{}",
            ),
            order(
                "O-upper",
                "2026-01-03T00:00:00.000Z",
                "NOT_STARTED",
                "4.00",
                "{}",
            ),
        ],
        0,
        10,
        1,
    )
    .unwrap();
    apply_orders(
        ledger,
        "b",
        &[order(
            "o-other",
            "2027-01-01T00:00:00.000Z",
            "NOT_STARTED",
            "9.00",
            "{}",
        )],
        0,
        10,
        1,
    )
    .unwrap();
    let orders = ledger.latest_orders("a", 10).unwrap();
    assert_eq!(
        orders
            .iter()
            .map(|order| order.order_id.as_str())
            .collect::<Vec<_>>(),
        ["O-upper", "o-a", "o-b", "o-old"]
    );
    let first = &orders[1];
    assert_eq!(
        (
            first.creation_date.as_str(),
            first.fulfillment_status.as_str(),
            first.payment_status.as_str(),
            first.total_value.as_deref(),
            first.currency.as_deref(),
            first.buyer.as_deref()
        ),
        (
            "2026-01-01T00:00:00.000Z",
            "NOT_STARTED",
            "PAID",
            Some("3.00"),
            Some("USD"),
            None
        )
    );
    assert_eq!(ledger.latest_orders("a", 2).unwrap(), orders[..2].to_vec());
    assert!(ledger.latest_orders("a", 0).unwrap().is_empty());
}

fn oldest_open_and_cursor_positions_compare_text_in_byte_order(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    assert_eq!(ledger.oldest_open("a", &OPEN_TRANSACTIONS).unwrap(), None);
    ledger
        .load_or_init_cursor("a", "transactions", 0, 0)
        .unwrap();
    let transaction = |id: &str, date: &str, status: Option<&str>| {
        let mut values = vec![("transaction_type", "SALE"), ("transaction_date", date)];
        if let Some(status) = status {
            values.push(("transaction_status", status));
        }
        resource(&TRANSACTIONS_TABLE, id, &values, "{}")
    };
    ledger
        .apply_window(
            "a",
            "transactions",
            WriteFence::Unfenced,
            &TRANSACTIONS_TABLE,
            &[
                transaction("1", "2026-01-01T00:00:00.000Z", Some("PAYOUT")),
                transaction("2", "2026-01-03T00:00:00.000Z", Some("FUNDS_ON_HOLD")),
                transaction("3", "2026-01-05T00:00:00.000Z", Some("FUNDS_PROCESSING")),
                transaction("4", "2026-01-02T00:00:00.000Z", None),
                // Byte order: a lowercase date sorts after every digit.
                transaction("5", "x-not-a-date", Some("FUNDS_PROCESSING")),
            ],
            window(0, 10),
            1,
        )
        .unwrap();
    assert_eq!(
        ledger
            .oldest_open("a", &OPEN_TRANSACTIONS)
            .unwrap()
            .as_deref(),
        Some("2026-01-03T00:00:00.000Z")
    );
    assert_eq!(ledger.oldest_open("b", &OPEN_TRANSACTIONS).unwrap(), None);

    for (account, stream, at) in [
        ("b", "orders", 5),
        ("a", "returns", 7),
        ("B", "orders", 9),
        ("a", "orders", 3),
    ] {
        ledger.load_or_init_cursor(account, stream, at, 0).unwrap();
    }
    let positions: Vec<(String, String, i64)> = ledger
        .cursor_positions(100)
        .unwrap()
        .into_iter()
        .map(|position| (position.account, position.stream, position.cursor_ts))
        .collect();
    let expected: Vec<(String, String, i64)> = [
        ("B", "orders", 9),
        ("a", "orders", 3),
        ("a", "returns", 7),
        ("a", "transactions", 10),
        ("b", "orders", 5),
    ]
    .into_iter()
    .map(|(account, stream, at)| (account.to_string(), stream.to_string(), at))
    .collect();
    assert_eq!(positions, expected);
    assert_eq!(ledger.cursor_positions(2).unwrap().len(), 2);
}

/// Every stream's table takes a window on both engines (the PostgreSQL statements are
/// built from the same specs), with every column set; the payout's transaction count is
/// an integer in both.
fn every_stream_table_takes_a_window(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    for stream in CURSOR_STREAMS {
        if *stream == "active_inventory" {
            // Its snapshot has its own apply (store::ebay_inventory).
            continue;
        }
        let spec = table_for_stream(stream).unwrap();
        let values: Vec<(&str, String)> = spec
            .columns
            .iter()
            .map(|column| {
                let value = if spec.table == PAYOUTS_TABLE.table && *column == "transaction_count" {
                    "3".to_string()
                } else {
                    format!("{column}-1")
                };
                (*column, value)
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = values
            .iter()
            .map(|(column, value)| (*column, value.as_str()))
            .collect();
        let first = resource(spec, "r1", &borrowed, "{}");
        ledger.load_or_init_cursor("a", stream, 0, 0).unwrap();
        ledger
            .apply_window(
                "a",
                stream,
                WriteFence::Lease(1),
                spec,
                std::slice::from_ref(&first),
                window(0, 10),
                1,
            )
            .unwrap();
        let mut second = first;
        for (column, _) in spec.tracked {
            let index = spec.columns.iter().position(|name| name == column).unwrap();
            second.values[index] = Some(format!("{column}-2"));
        }
        let applied = ledger
            .apply_window(
                "a",
                stream,
                WriteFence::Lease(1),
                spec,
                &[second],
                window(10, 20),
                2,
            )
            .unwrap();
        assert_eq!(
            applied.events,
            u64::try_from(spec.tracked.len()).unwrap(),
            "{stream}"
        );
        let snapshot = ledger.cursor_snapshot("a", stream).unwrap().unwrap();
        assert_eq!(
            (snapshot.cursor_ts, snapshot.resources, snapshot.events),
            (20, 1, i64::try_from(spec.tracked.len()).unwrap()),
            "{stream}"
        );
    }
    assert_eq!(
        engine.sql("SELECT transaction_count FROM ebay_payouts WHERE payout_id = 'r1'"),
        3
    );
}

/// The integers of the resource tables are the ones the PostgreSQL statements cast to:
/// any other integer column would refuse the text the streams hand over.
#[test]
fn the_resource_tables_integer_columns_are_the_ones_cast() {
    let db = TestDb::create();
    let _pg = PgLedger::open(&db.url, &PgSettings::default()).expect("open pg");
    let mut client = db.client();
    let mut integers = Vec::new();
    for stream in CURSOR_STREAMS {
        let spec = table_for_stream(stream).unwrap();
        if !crate::store::postgres::TABLES.contains(&spec.table) {
            continue;
        }
        for column in spec.columns {
            let kind: String = client
                .query_one(
                    "SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
                    &[&spec.table, column],
                )
                .unwrap_or_else(|err| panic!("{}.{column}: {err}", spec.table))
                .get(0);
            if kind != "text" {
                assert_eq!(kind, "bigint", "{}.{column}", spec.table);
                integers.push((spec.table, *column));
            }
        }
    }
    assert_eq!(integers, crate::store::postgres::cursors::INTEGER_COLUMNS);
}

/// `store copy` moves the cursor tables: every table verified, the engines answer the
/// same reads, and new events get ids above the copied ones.
#[test]
fn store_copy_moves_the_cursor_tables_and_the_engines_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("marketsync.db");
    {
        let sqlite = SqliteLedger::open(&path).unwrap();
        let ledger: &dyn LedgerStore = &sqlite;
        every_stream_table_takes_a_window_on(ledger);
        ledger.load_or_init_cursor("c", "orders", 0, 0).unwrap();
        for (step, status) in ["S0", "S1", "S2"].iter().enumerate() {
            let step = i64::try_from(step).unwrap();
            apply_orders(
                ledger,
                "c",
                &[
                    order("o1", "2026-01-01T01:00:00.000Z", status, "1.00", "{}"),
                    order(
                        "o2",
                        "2026-01-02T01:00:00.000Z",
                        "NOT_STARTED",
                        "2.00",
                        "{}",
                    ),
                ],
                step * 10,
                step * 10 + 10,
                100 + step,
            )
            .unwrap();
        }
        ledger
            .record_failure("c", "orders", WriteFence::Lease(2), "boom", 500, 400)
            .unwrap();
    }
    let db = TestDb::create();
    let url = crate::store::postgres::DatabaseUrl::new(&db.url).unwrap();
    let checks =
        crate::store::postgres::copy::copy_sqlite_to_postgres(&path, &url, false, &mut |_, _| {})
            .unwrap();
    for check in &checks {
        assert!(check.ok(), "{check:?}");
    }
    let copied_events = checks
        .iter()
        .find(|check| check.table == "events")
        .unwrap()
        .source_rows;
    assert_eq!(copied_events, 2);
    let sqlite = SqliteLedger::open(&path).unwrap();
    let pg = PgLedger::open(&db.url, &PgSettings::default()).unwrap();
    let (sqlite, pg): (&dyn LedgerStore, &dyn LedgerStore) = (&sqlite, &pg);
    assert_eq!(
        sqlite.recent_events(None, 100).unwrap(),
        pg.recent_events(None, 100).unwrap()
    );
    for account in ["a", "c"] {
        assert_eq!(
            sqlite.latest_orders(account, 100).unwrap(),
            pg.latest_orders(account, 100).unwrap()
        );
    }
    assert_eq!(
        sqlite.cursor_positions(100).unwrap(),
        pg.cursor_positions(100).unwrap()
    );
    for account in ["a", "c"] {
        for stream in CURSOR_STREAMS {
            assert_eq!(
                sqlite.cursor_snapshot(account, stream).unwrap(),
                pg.cursor_snapshot(account, stream).unwrap(),
                "{account}/{stream}"
            );
        }
    }
    assert_eq!(pg.newest_fence("c", "orders").unwrap(), 2);
    let before = pg.recent_events(None, 1).unwrap()[0].id;
    apply_orders(
        pg,
        "c",
        &[order("o1", "2026-01-01T01:00:00.000Z", "S3", "1.00", "{}")],
        30,
        40,
        600,
    )
    .unwrap();
    let after = pg.recent_events(None, 1).unwrap()[0].id;
    assert!(after > before, "{after} > {before}");
}

/// [`every_stream_table_takes_a_window`] on a ledger (for the copy's source).
fn every_stream_table_takes_a_window_on(ledger: &dyn LedgerStore) {
    for stream in CURSOR_STREAMS {
        if *stream == "active_inventory" {
            continue;
        }
        let spec = table_for_stream(stream).unwrap();
        let values: Vec<(&str, &str)> = spec
            .columns
            .iter()
            .map(|column| {
                if *column == "transaction_count" {
                    (*column, "7")
                } else {
                    (*column, "v")
                }
            })
            .collect();
        ledger.load_or_init_cursor("a", stream, 0, 0).unwrap();
        ledger
            .apply_window(
                "a",
                stream,
                WriteFence::Unfenced,
                spec,
                &[resource(spec, "r1", &values, "{}")],
                window(0, 10),
                1,
            )
            .unwrap();
    }
}

/// Two daemons (own pools) apply the same window at once, each with changes to the same
/// orders: exactly one commits; the other finds the cursor moved and writes nothing (no
/// event twice, no row of its own), whatever the interleaving.
#[test]
fn concurrent_applies_of_one_window_on_two_pools_commit_once() {
    let db = TestDb::create();
    let first = PgLedger::open(&db.url, &PgSettings::default()).expect("open pg");
    first.load_or_init_cursor("a", "orders", 0, 0).unwrap();
    apply_orders(
        &first,
        "a",
        &[order("o1", "m", "NOT_STARTED", "1", "{}")],
        0,
        10,
        1,
    )
    .unwrap();
    let ledgers: Vec<Arc<PgLedger>> = vec![
        Arc::new(first),
        Arc::new(PgLedger::open(&db.url, &PgSettings::default()).expect("open pg")),
    ];
    for round in 0..10i64 {
        let start = 10 + round * 10;
        let barrier = Arc::new(std::sync::Barrier::new(ledgers.len()));
        let outcomes: Vec<Result<crate::store::cursors::Applied, LedgerError>> = ledgers
            .iter()
            .enumerate()
            .map(|(index, ledger)| {
                let (ledger, barrier) = (Arc::clone(ledger), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let status = format!("R{round}-{index}");
                    let resources = [
                        order("o1", "m", &status, "1", "{}"),
                        order(&format!("only-{round}-{index}"), "m", "NEW", "1", "{}"),
                    ];
                    barrier.wait();
                    apply_orders(ledger.as_ref(), "a", &resources, start, start + 10, start)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect();
        let won: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(index, _)| index)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
        let lost = 1 - won[0];
        assert!(
            matches!(outcomes[lost], Err(LedgerError::CursorMoved { .. })),
            "round {round}: {outcomes:?}"
        );
        let mut client = db.client();
        let mut count =
            |sql: &str, id: String| -> i64 { client.query_one(sql, &[&id]).unwrap().get(0) };
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM ebay_orders WHERE order_id = $1",
                format!("only-{round}-{lost}")
            ),
            0,
            "round {round}: the refused apply's new order was rolled back"
        );
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM events WHERE after = $1",
                format!("R{round}-{lost}")
            ),
            0,
            "round {round}: the refused apply's event was rolled back"
        );
    }
    let ledger: &dyn LedgerStore = ledgers[0].as_ref();
    let snapshot = ledger.cursor_snapshot("a", "orders").unwrap().unwrap();
    assert_eq!(
        (snapshot.cursor_ts, snapshot.events, snapshot.resources),
        (110, 10, 11)
    );
}
