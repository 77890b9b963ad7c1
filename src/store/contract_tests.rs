//! The ledger's contract: every behaviour of [`LedgerStore`] and [`LedgerReads`] a caller
//! relies on, run against both engines (SQLite in memory, and a fresh database on the
//! PostgreSQL server of `MARKETSYNC_TEST_PG_URL`, see `postgres::testing`), as the lock
//! backends' contract runs against Redis and SQLite. A case is a function taking an
//! [`Engine`]; `contract!` makes one test per engine of it.

use std::sync::Arc;

use crate::domain::{HourWindow, SalesRow, HOUR};
use crate::report::{ReportError, ReportSummary};
use crate::store::postgres::testing::TestDb;
use crate::store::postgres::{PgLedger, PgSettings};
use crate::store::{
    Claim, ClaimOrder, Cooldown, LedgerError, LedgerStore, Priority, SqliteLedger, WriteFence,
};

const T0: i64 = 1_700_000_000 / HOUR * HOUR;

/// A ledger on one engine, and a way for a case to run SQL both engines understand
/// (setting up a state the API cannot reach directly, counting rows).
pub(crate) struct Engine {
    pub ledger: Arc<dyn LedgerStore>,
    /// Runs a statement: a `SELECT` returns its first column as a number, anything else
    /// the rows it changed.
    sql: Box<dyn Fn(&str) -> i64 + Send + Sync>,
    /// Dropped last: the PostgreSQL test database (dropped with it).
    _db: Option<TestDb>,
}

impl Engine {
    pub(crate) fn sqlite() -> Engine {
        let ledger = Arc::new(SqliteLedger::open_in_memory().expect("open sqlite"));
        let handle = Arc::clone(&ledger);
        Engine {
            ledger,
            sql: Box::new(move |sql: &str| {
                handle.with_conn(|conn| {
                    if sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
                        conn.query_row(sql, [], |row| row.get::<_, i64>(0))
                            .expect(sql)
                    } else {
                        i64::try_from(conn.execute(sql, []).expect(sql)).expect("count")
                    }
                })
            }),
            _db: None,
        }
    }

    pub(crate) fn postgres() -> Engine {
        let db = TestDb::create();
        let ledger = Arc::new(PgLedger::open(&db.url, &PgSettings::default()).expect("open pg"));
        let url = db.url.clone();
        Engine {
            ledger,
            sql: Box::new(move |sql: &str| {
                let mut client: postgres::Client = url
                    .parse::<postgres::Config>()
                    .expect("url")
                    .connect(postgres::NoTls)
                    .expect("connect");
                if sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
                    client.query_one(sql, &[]).expect(sql).get::<_, i64>(0)
                } else {
                    i64::try_from(client.execute(sql, &[]).expect(sql)).expect("count")
                }
            }),
            _db: Some(db),
        }
    }

    pub(crate) fn sql(&self, sql: &str) -> i64 {
        (self.sql)(sql)
    }

    fn seeded(&self, hours: i64) -> &dyn LedgerStore {
        let ledger = self.ledger.as_ref();
        ledger
            .seed("a", "s", HourWindow::new(T0, T0 + hours * HOUR), T0)
            .expect("seed");
        ledger
    }
}

fn claim(ledger: &dyn LedgerStore, max: i64, order: ClaimOrder) -> Option<Claim> {
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
        .expect("claim")
}

/// Claims up to `max` hours, records report `id` for them and their document `d-<id>`:
/// a unit ready to apply.
fn downloaded(ledger: &dyn LedgerStore, max: i64, id: &str) -> Claim {
    let mut unit = claim(ledger, max, ClaimOrder::NewestFirst).expect("a claimable hour");
    ledger.set_report_id(&unit, id, T0).unwrap();
    unit.report_id = Some(id.to_string());
    ledger
        .mark_downloaded(&unit, &format!("d-{id}"), &format!("/tmp/d-{id}"), T0)
        .unwrap();
    unit
}

fn sale(hour_utc: i64, asin: &str, units: i64, revenue: f64) -> SalesRow {
    SalesRow {
        hour_utc,
        asin: asin.to_string(),
        ordered_units: units,
        ordered_revenue: revenue,
    }
}

both_engines!(
    seeding_is_idempotent,
    seeding_a_window_longer_than_a_batch_inserts_every_hour_once,
    claims_take_contiguous_runs_newest_first,
    claims_oldest_first_take_the_oldest_run,
    a_gap_ends_the_run,
    illegal_transitions_are_refused_and_change_nothing,
    a_failing_document_writes_nothing,
    applying_replaces_the_window_and_the_later_duplicate_wins,
    a_small_document_replaces_the_window_in_one_step_too,
    failed_hours_wait_for_their_retry_time,
    release_returns_hours_without_an_attempt,
    in_flight_claims_come_back_unfenced_with_their_handles,
    reset_leaves_work_in_flight_alone,
    a_stale_owners_late_write_is_refused_by_fencing,
    an_unstamped_claim_is_refused,
    cooldowns_persist_and_clear,
    audits_remember_the_last_run,
    prune_deletes_only_old_applied_hours,
    reads_show_failures_coverage_sales_and_hours,
    supervision_rows_round_trip_and_resume_requests_are_taken_once,
);

fn seeding_is_idempotent(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    let window = HourWindow::new(T0, T0 + 5 * HOUR);
    assert_eq!(ledger.seed("a", "s", window, T0).unwrap(), 5);
    assert_eq!(
        ledger
            .seed("a", "s", HourWindow::new(T0, T0 + 7 * HOUR), T0)
            .unwrap(),
        2,
        "only the two new hours"
    );
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts,
        [7, 0, 0, 0, 0]
    );
}

/// Both engines seed in batches of 10,000 hours, each one statement that generates its
/// hours in SQL: the batch edges lose no hour and repeat none.
fn seeding_a_window_longer_than_a_batch_inserts_every_hour_once(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    let hours: u64 = 10_000 * 2 + 7;
    let span = i64::try_from(hours).expect("small") * HOUR;
    let window = HourWindow::new(T0, T0 + span);
    assert_eq!(ledger.seed("a", "s", window, T0).unwrap(), hours);
    assert_eq!(ledger.seed("a", "s", window, T0).unwrap(), 0, "all there");
    let wider = HourWindow::new(T0 - 3 * HOUR, T0 + span + HOUR);
    assert_eq!(
        ledger.seed("a", "s", wider, T0).unwrap(),
        4,
        "3 before, 1 after"
    );
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts,
        [hours + 4, 0, 0, 0, 0]
    );
}

fn claims_take_contiguous_runs_newest_first(engine: &Engine) {
    let ledger = engine.seeded(10);
    let first = claim(ledger, 6, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(first.window, HourWindow::new(T0 + 4 * HOUR, T0 + 10 * HOUR));
    assert_eq!(first.state, crate::store::HourState::Requested);
    let second = claim(ledger, 6, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(second.window, HourWindow::new(T0, T0 + 4 * HOUR));
    assert_ne!(first.claim_id, second.claim_id);
    assert!(claim(ledger, 6, ClaimOrder::NewestFirst).is_none());
    assert_eq!(ledger.claimed_at(first.claim_id).unwrap(), Some(T0));
}

fn claims_oldest_first_take_the_oldest_run(engine: &Engine) {
    let ledger = engine.seeded(5);
    let first = claim(ledger, 2, ClaimOrder::OldestFirst).unwrap();
    assert_eq!(first.window, HourWindow::new(T0, T0 + 2 * HOUR));
}

fn a_gap_ends_the_run(engine: &Engine) {
    let ledger = engine.seeded(6);
    // Hour 3 is finished already: the newest-first run is hours 4 and 5 only.
    let changed = engine.sql(&format!(
        "UPDATE ledger_hours SET state = 'APPLIED' WHERE hour_utc = {}",
        T0 + 3 * HOUR
    ));
    assert_eq!(changed, 1);
    let run = claim(ledger, 6, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(run.window, HourWindow::new(T0 + 4 * HOUR, T0 + 6 * HOUR));
    let oldest = claim(ledger, 6, ClaimOrder::OldestFirst).unwrap();
    assert_eq!(oldest.window, HourWindow::new(T0, T0 + 3 * HOUR));
}

fn illegal_transitions_are_refused_and_change_nothing(engine: &Engine) {
    let ledger = engine.seeded(2);
    let unit = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
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
    // Nor FAILED.
    let err = ledger.fail(&unit, "late", T0 + 60, T0).unwrap_err();
    assert!(
        matches!(err, LedgerError::IllegalTransition { .. }),
        "{err}"
    );
    let snapshot = ledger.snapshot("a", "s", T0).unwrap();
    assert_eq!(snapshot.counts, [0, 0, 0, 2, 0]);
    assert_eq!(snapshot.last_applied_hour, Some(T0 + HOUR));
}

fn a_failing_document_writes_nothing(engine: &Engine) {
    let ledger = engine.seeded(2);
    let unit = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger
        .mark_downloaded(&unit, "doc", "/tmp/doc", T0)
        .unwrap();
    let err = ledger
        .apply_sales(
            &unit,
            &mut |sink| {
                sink(sale(T0, "B000000001", 3, 9.0))?;
                Err(ReportError::Truncated("cut short".to_string()))
            },
            T0,
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::Document(_)), "{err}");
    assert_eq!(engine.sql("SELECT COUNT(*) FROM vendor_realtime_sales"), 0);
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts[2],
        2,
        "still DOWNLOADED"
    );
}

fn applying_replaces_the_window_and_the_later_duplicate_wins(engine: &Engine) {
    let ledger = engine.seeded(2);
    // A row from an earlier apply of the same window, which the new document replaces.
    let stale = engine.sql(&format!(
        "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
         VALUES ('a', {T0}, 'B0OLD00000', 1, 1.0, 'old', {T0})"
    ));
    assert_eq!(stale, 1);
    let unit = downloaded(ledger, 2, "r-1");
    // More rows than one batch, so the duplicate spans batches on both engines.
    let applied = ledger
        .apply_sales(
            &unit,
            &mut |sink| {
                sink(sale(T0, "B0DUP00000", 3, 9.5))?;
                for index in 0..6_000 {
                    sink(sale(T0 + HOUR, &format!("B{index:09}"), 1, 0.5))?;
                }
                sink(sale(T0, "B0DUP00000", 4, 12.25))?;
                Ok(ReportSummary {
                    rows: 6_002,
                    ..ReportSummary::default()
                })
            },
            T0 + 10,
        )
        .unwrap();
    assert_eq!(applied.hours, 2);
    assert_eq!(applied.summary.rows, 6_002);
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM vendor_realtime_sales"),
        6_001
    );
    assert_eq!(
        engine.sql("SELECT ordered_units FROM vendor_realtime_sales WHERE asin = 'B0DUP00000'"),
        4,
        "the later row of a key wins"
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM vendor_realtime_sales WHERE report_id = 'r-1'"),
        6_001
    );
    let (by_hour, by_asin, totals) = ledger.sales_summary("a", T0, T0 + 2 * HOUR, 1).unwrap();
    assert_eq!(by_hour.len(), 2);
    assert_eq!(by_hour[0].hour_utc, T0 + HOUR, "newest first");
    assert_eq!(by_hour[0].ordered_units, 6_000);
    assert_eq!(by_asin.len(), 1);
    assert_eq!(by_asin[0].asin, "B0DUP00000");
    assert_eq!(totals.ordered_units, 6_004);
    assert!((totals.ordered_revenue - 3_012.25).abs() < 1e-6);
    assert_eq!(totals.rows, 6_001);
    assert_eq!(totals.hours_with_data, 2);
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM ledger_claims WHERE outcome = 'applied'"),
        1
    );
}

/// A document smaller than one staging batch (SQLite writes its rows in the apply's one
/// transaction instead of a temp table): the same replacement and duplicate rule.
fn a_small_document_replaces_the_window_in_one_step_too(engine: &Engine) {
    let ledger = engine.seeded(1);
    engine.sql(&format!(
        "INSERT INTO vendor_realtime_sales (account, hour_utc, asin, ordered_units, ordered_revenue, report_id, updated_at)
         VALUES ('a', {T0}, 'B0OLD00000', 1, 1.0, 'old', {T0})"
    ));
    let unit = downloaded(ledger, 1, "r-2");
    let applied = ledger
        .apply_sales(
            &unit,
            &mut |sink| {
                sink(sale(T0, "B0DUP00000", 3, 9.5))?;
                sink(sale(T0, "B0ONE00000", 2, 4.0))?;
                sink(sale(T0, "B0DUP00000", 5, 15.0))?;
                Ok(ReportSummary {
                    rows: 3,
                    ..ReportSummary::default()
                })
            },
            T0 + 10,
        )
        .unwrap();
    assert_eq!(applied.hours, 1);
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM vendor_realtime_sales WHERE report_id = 'r-2'"),
        2,
        "the old row is replaced, the duplicate kept once"
    );
    assert_eq!(engine.sql("SELECT COUNT(*) FROM vendor_realtime_sales"), 2);
    assert_eq!(
        engine.sql("SELECT ordered_units FROM vendor_realtime_sales WHERE asin = 'B0DUP00000'"),
        5,
        "the later row of a key wins"
    );
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts[3],
        1,
        "APPLIED"
    );
    // A document that fails part way writes nothing, small or not.
    ledger
        .seed("a", "s", HourWindow::new(T0 + HOUR, T0 + 2 * HOUR), T0)
        .unwrap();
    let next = downloaded(ledger, 1, "r-3");
    let failed = ledger.apply_sales(
        &next,
        &mut |sink| {
            sink(sale(T0 + HOUR, "B0CUT00000", 1, 1.0))?;
            Err(crate::report::ReportError::Truncated("cut".to_string()))
        },
        T0 + 10,
    );
    assert!(
        matches!(failed, Err(LedgerError::Document(_))),
        "{failed:?}"
    );
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM vendor_realtime_sales WHERE report_id = 'r-3'"),
        0
    );
}

fn failed_hours_wait_for_their_retry_time(engine: &Engine) {
    let ledger = engine.seeded(1);
    let unit = claim(ledger, 1, ClaimOrder::NewestFirst).unwrap();
    ledger.fail(&unit, "boom", T0 + 60, T0).unwrap();
    assert!(claim(ledger, 1, ClaimOrder::NewestFirst).is_none());
    let snapshot = ledger.snapshot("a", "s", T0).unwrap();
    assert_eq!(snapshot.counts[4], 1);
    assert_eq!(snapshot.next_retry_at, Some(T0 + 60));
    assert_eq!(snapshot.last_error.as_deref(), Some("boom"));
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

fn release_returns_hours_without_an_attempt(engine: &Engine) {
    let ledger = engine.seeded(3);
    let unit = claim(ledger, 3, ClaimOrder::NewestFirst).unwrap();
    ledger.release(&unit, "quota", T0).unwrap();
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts,
        [3, 0, 0, 0, 0]
    );
    let again = claim(ledger, 3, ClaimOrder::NewestFirst).unwrap();
    assert_eq!(again.attempts, 0, "a release consumes no attempt");
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM ledger_claims WHERE outcome = 'quota'"),
        1
    );
}

fn in_flight_claims_come_back_unfenced_with_their_handles(engine: &Engine) {
    let ledger = engine.seeded(4);
    let requested = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger.set_report_id(&requested, "r-new", T0).unwrap();
    let downloaded = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger.set_report_id(&downloaded, "r-old", T0).unwrap();
    ledger
        .mark_downloaded(&downloaded, "d-old", "/tmp/d-old", T0)
        .unwrap();
    let in_flight = ledger.in_flight("a", "s").unwrap();
    assert_eq!(in_flight.len(), 2);
    assert_eq!(in_flight[0].claim_id, requested.claim_id, "newest first");
    assert_eq!(in_flight[0].window, requested.window);
    assert_eq!(in_flight[0].report_id.as_deref(), Some("r-new"));
    assert_eq!(in_flight[0].state, crate::store::HourState::Requested);
    assert_eq!(in_flight[1].state, crate::store::HourState::Downloaded);
    assert_eq!(in_flight[1].report_document_id.as_deref(), Some("d-old"));
    assert_eq!(in_flight[1].document_path.as_deref(), Some("/tmp/d-old"));
    assert!(in_flight
        .iter()
        .all(|claim| claim.fence == WriteFence::Missing));
}

fn reset_leaves_work_in_flight_alone(engine: &Engine) {
    let ledger = engine.seeded(4);
    let unit = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    let rest = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
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
    // A window beyond the seeded hours is seeded at the priority.
    let added = ledger
        .reset_window(
            "a",
            "s",
            HourWindow::new(T0 + 4 * HOUR, T0 + 6 * HOUR),
            Priority::Manual,
            T0,
        )
        .unwrap();
    assert_eq!(added, 2);
    let next = claim(ledger, 1, ClaimOrder::OldestFirst).unwrap();
    assert_eq!(next.priority, Priority::Manual);
}

fn a_stale_owners_late_write_is_refused_by_fencing(engine: &Engine) {
    let ledger = engine.seeded(12);
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
    assert_eq!(ledger.newest_fence("a", "s").unwrap(), 1);
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
    assert_eq!(ledger.newest_fence("a", "s").unwrap(), 2);
    // A wakes up and tries to write: refused, and nothing changes.
    for result in [
        ledger.set_report_id(&old, "late", T0),
        ledger.mark_downloaded(&old, "late", "/tmp/late", T0),
        ledger.fail(&old, "late", T0 + 60, T0),
        ledger.release(&old, "late", T0),
        ledger
            .apply_sales(&old, &mut |_sink| Ok(ReportSummary::default()), T0)
            .map(|_| ()),
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
    assert_eq!(
        engine.sql("SELECT COUNT(*) FROM ledger_hours WHERE report_id IS NOT NULL"),
        0
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

fn an_unstamped_claim_is_refused(engine: &Engine) {
    let ledger = engine.seeded(2);
    claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    let resumed = ledger.in_flight("a", "s").unwrap().remove(0);
    let err = ledger.set_report_id(&resumed, "r", T0).unwrap_err();
    assert!(matches!(err, LedgerError::Unfenced { .. }), "{err}");
    let err = ledger
        .claim(
            "a",
            "s",
            1,
            ClaimOrder::NewestFirst,
            "x",
            WriteFence::Lease(u64::MAX),
            T0,
        )
        .unwrap_err();
    assert!(matches!(err, LedgerError::FenceOutOfRange { .. }), "{err}");
}

fn cooldowns_persist_and_clear(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
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
        Some(cooldown.clone())
    );
    // A shorter cooldown does not cut a running one short.
    ledger
        .set_cooldown(&Cooldown {
            until_at: T0 + 60,
            detail: Some("again".to_string()),
            ..cooldown.clone()
        })
        .unwrap();
    let running = ledger
        .active_cooldown("amazon:a", T0 + 10)
        .unwrap()
        .unwrap();
    assert_eq!(running.until_at, T0 + 1800);
    assert_eq!(running.detail.as_deref(), Some("again"));
    ledger
        .set_cooldown(&Cooldown {
            scope: "amazon:B".to_string(),
            ..cooldown.clone()
        })
        .unwrap();
    let listed: Vec<String> = ledger
        .cooldowns(T0)
        .unwrap()
        .into_iter()
        .map(|cooldown| cooldown.scope)
        .collect();
    assert_eq!(listed, ["amazon:B", "amazon:a"], "by scope, byte order");
    assert_eq!(ledger.active_cooldown("amazon:a", T0 + 1800).unwrap(), None);
    assert!(ledger.clear_cooldown("amazon:a").unwrap());
    assert!(!ledger.clear_cooldown("amazon:a").unwrap());
}

fn audits_remember_the_last_run(engine: &Engine) {
    let ledger = engine.ledger.as_ref();
    assert_eq!(ledger.last_audit("a", "s", "daily").unwrap(), None);
    ledger.record_audit("a", "s", "daily", T0).unwrap();
    ledger.record_audit("a", "s", "daily", T0 + 5).unwrap();
    assert_eq!(ledger.last_audit("a", "s", "daily").unwrap(), Some(T0 + 5));
    assert_eq!(ledger.last_audit("a", "s", "weekly").unwrap(), None);
}

fn prune_deletes_only_old_applied_hours(engine: &Engine) {
    let ledger = engine.seeded(4);
    let newest = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    let oldest = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger
        .apply_sales(&oldest, &mut |_sink| Ok(ReportSummary::default()), T0)
        .unwrap();
    ledger.fail(&newest, "x", T0, T0).unwrap();
    assert_eq!(ledger.prune("a", "s", T0 + 3 * HOUR).unwrap(), 2);
    assert_eq!(
        ledger.snapshot("a", "s", T0).unwrap().counts,
        [0, 0, 0, 0, 2]
    );
    assert_eq!(
        ledger.prune_claims(T0 + 1).unwrap(),
        2,
        "both finished claims"
    );
    assert_eq!(ledger.prune_claims(T0 + 1).unwrap(), 0);
}

fn reads_show_failures_coverage_sales_and_hours(engine: &Engine) {
    let ledger = engine.seeded(6);
    let failing = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    let applied = claim(ledger, 2, ClaimOrder::NewestFirst).unwrap();
    ledger
        .apply_sales(
            &applied,
            &mut |sink| {
                sink(sale(T0 + 2 * HOUR, "B1", 2, 4.0))?;
                Ok(ReportSummary::default())
            },
            T0 + 1,
        )
        .unwrap();
    let long = "authentication failed: ".to_string() + &"x".repeat(3000);
    ledger.fail(&failing, &long, T0 + 600, T0 + 2).unwrap();
    assert_eq!(ledger.applied_hours_total().unwrap(), 2);
    assert_eq!(
        ledger
            .applied_coverage("a", "s", T0, T0 + 3 * HOUR)
            .unwrap(),
        (1, Some(T0 + 3 * HOUR))
    );
    let failures = ledger.recent_failures(10).unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].hour_utc, T0 + 5 * HOUR);
    assert_eq!(failures[0].attempts, 1);
    assert_eq!(failures[0].next_retry_at, Some(T0 + 600));
    assert_eq!(ledger.recent_failures(1).unwrap().len(), 1);
    let diagnostics = ledger.hour_diagnostics("a", "s", T0 + 3).unwrap();
    assert_eq!(diagnostics.rows, 6);
    assert_eq!(diagnostics.claimable_now, 2);
    assert_eq!(diagnostics.failed, 2);
    assert_eq!(diagnostics.max_attempts, 1);
    assert_eq!(diagnostics.oldest_failed_hour, T0 + 4 * HOUR);
    assert_eq!(diagnostics.newest_failed_hour, T0 + 5 * HOUR);
    assert!(diagnostics.auth_error.is_some());
    assert_eq!(diagnostics.in_flight_since, None);
    assert_eq!(
        diagnostics.last_claim,
        Some((T0, "test:1@host".to_string()))
    );
    let cells = ledger
        .stream_hours("a", "s", T0 + HOUR, T0 + 6 * HOUR, 100)
        .unwrap();
    let at: Vec<i64> = cells.iter().map(|cell| cell.hour_utc).collect();
    assert_eq!(
        at,
        [
            T0 + HOUR,
            T0 + 2 * HOUR,
            T0 + 3 * HOUR,
            T0 + 4 * HOUR,
            T0 + 5 * HOUR
        ]
    );
    assert_eq!(cells[1].state, "APPLIED");
    assert_eq!(cells[1].applied_at, Some(T0 + 1));
    let cut = cells[4].last_error.as_deref().unwrap();
    assert_eq!(
        cut.chars().count(),
        crate::store::history::MAX_CELL_ERROR_CHARS + 1,
        "cut, with an ellipsis"
    );
    assert_eq!(
        ledger
            .stream_hours("a", "s", T0, T0 + 6 * HOUR, 2)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        ledger
            .reset_failed("a", "s", Priority::Manual, T0 + 4)
            .unwrap(),
        2
    );
    assert!(ledger.recent_failures(10).unwrap().is_empty());
}

fn supervision_rows_round_trip_and_resume_requests_are_taken_once(engine: &Engine) {
    use crate::domain::supervision::ChildState;
    use crate::store::supervision::StoredChild;
    let ledger = engine.ledger.as_ref();
    assert!(ledger.load_children().unwrap().is_empty());
    let quarantined = StoredChild {
        account: "poison".to_string(),
        state: ChildState::Quarantined,
        restarts: 7,
        last_crash_at: Some(T0),
        last_crash_reason: Some("panicked: bad row".to_string()),
        quarantined_until: Some(T0 + 3_600),
        state_reason: Some("5 crashes in 60s".to_string()),
        resume_requested: false,
        updated_at: 0,
    };
    let running = StoredChild {
        account: "healthy".to_string(),
        state: ChildState::Running,
        restarts: 0,
        last_crash_at: None,
        last_crash_reason: None,
        quarantined_until: None,
        state_reason: None,
        resume_requested: false,
        updated_at: 0,
    };
    ledger
        .save_children(&[quarantined.clone(), running.clone()], T0)
        .unwrap();
    let loaded = ledger.load_children().unwrap();
    assert_eq!(
        loaded,
        vec![
            StoredChild {
                updated_at: T0,
                ..running.clone()
            },
            StoredChild {
                updated_at: T0,
                ..quarantined.clone()
            },
        ],
        "ordered by account, every field kept"
    );
    assert_eq!(
        ledger.child_state("poison").unwrap().as_deref(),
        Some("quarantined")
    );
    assert_eq!(ledger.child_state("nobody").unwrap(), None);
    // Only a quarantined account can be asked to resume.
    assert!(!ledger.request_resume("healthy").unwrap());
    assert!(ledger.request_resume("poison").unwrap());
    // A supervisor that does not run the account leaves the request pending; the one that
    // does takes it, once.
    assert!(ledger
        .take_resume_requests(&["healthy".to_string()])
        .unwrap()
        .is_empty());
    assert_eq!(
        ledger
            .take_resume_requests(&["healthy".to_string(), "poison".to_string()])
            .unwrap(),
        vec!["poison".to_string()]
    );
    assert!(ledger
        .take_resume_requests(&["poison".to_string()])
        .unwrap()
        .is_empty());
    // A later save keeps what it does not write (the resume flag) and updates the rest.
    ledger
        .save_children(
            &[StoredChild {
                state: ChildState::Running,
                quarantined_until: None,
                ..quarantined.clone()
            }],
            T0 + 10,
        )
        .unwrap();
    let statuses = ledger.supervision_statuses().unwrap();
    let poison = statuses
        .iter()
        .find(|status| status.id == "poison")
        .expect("poison");
    assert_eq!(poison.state, ChildState::Running);
    assert_eq!(poison.restarts, 7);
}
