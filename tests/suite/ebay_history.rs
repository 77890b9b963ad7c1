//! Issue 14, benchmark 3 as a test: the history is exact. One eBay account runs every
//! cursor stream with mutable resources (orders, transactions, returns, finances,
//! messages, cases, inquiries, purchases) against the simulator over real HTTP into a real
//! SQLite file for a simulated week, a run of each stream every simulated hour, the
//! engine's and the simulator's clocks pinned together. Afterwards the `events` table
//! equals the simulator's list of changes (`changes_between`) stream by stream: nothing
//! missing, nothing twice, and no row observed before the change it records.
//!
//! Why these steps: every resource's first change comes at least two hours after its
//! creation (orders start IN_PROGRESS 2 h in, messages are read 2 h after they arrive,
//! purchases are paid 2 h in; the rest take days), so an hourly run sees every resource
//! before it first changes (a change before first sight is no history: first sight
//! appends nothing). The last run is placed where no change falls within the safety lag
//! before it, so what the last run can see is unambiguous.

use std::collections::{BTreeMap, BTreeSet};

use marketsync::shapes::cursor::CursorStore;
use marketsync::shapes::{RunOutcome, StreamContext};
use marketsync::sim::ebay::{changes_between, EbaySimConfig, SimChange};

use super::ebay::{pinned_start, sim_config, EbayFixture, DAY, HOUR, LAG, SEED, SELLER};
use crate::common::TestSim;

/// The cursor streams whose resources change, each with a list of changes in the simulator.
const STREAMS: &[&str] = &[
    "orders",
    "transactions",
    "returns",
    "finances",
    "messages",
    "cases",
    "inquiries",
    "purchases",
];

/// (stream, resource, field, before, after): one history row's identity.
type Key = (String, String, String, String, String);

fn key_of(change: &SimChange) -> Key {
    (
        change.stream.clone(),
        change.resource_id.clone(),
        change.field.clone(),
        change.before.clone(),
        change.after.clone(),
    )
}

/// The first time at or after `from` with no simulated change in `(t − LAG − 1, t]`.
fn quiet_time(ebay: &EbaySimConfig, from: i64) -> i64 {
    let changes = changes_between(SEED, ebay, SELLER, from - 2 * LAG, from + DAY);
    let mut candidate = from;
    while changes
        .iter()
        .any(|change| change.at > candidate - LAG - 1 && change.at <= candidate)
    {
        candidate += 60;
    }
    candidate
}

async fn run_all(contexts: &[(&str, StreamContext)], label: &str) {
    for (stream, context) in contexts {
        let outcome = context.run_once().await.expect("run");
        assert!(
            matches!(outcome, RunOutcome::Finished { failed: 0, .. }),
            "{label}: {stream}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn ebay_history_over_a_simulated_week_equals_the_simulators_changes() {
    let t0 = pinned_start();
    let ebay = EbaySimConfig {
        orders_per_day: 16,
        return_every: 4,
        orders_since: t0 - 14 * DAY,
        ..EbaySimConfig::default()
    };
    let sim = TestSim::start(sim_config(ebay.clone())).await;
    let fixture = EbayFixture::new(&sim, STREAMS, "start = \"14days\"", t0);
    let contexts: Vec<(&str, StreamContext)> = STREAMS
        .iter()
        .map(|stream| (*stream, fixture.context(stream)))
        .collect();
    // The catch-up at t0 (14 day-long windows a stream), then a run of each stream every
    // simulated hour for a week, then the last run at a quiet time.
    // `observed_at` is the wall clock; the simulated time a row was written is that of
    // the step after which its id first appears.
    let newest_event = || -> i64 {
        fixture.ledger.with_conn(|conn| {
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |row| {
                row.get(0)
            })
            .expect("max id")
        })
    };
    let mut written: Vec<(i64, i64)> = Vec::new();
    let steps = 7 * 24;
    for index in 0..steps {
        let now = t0 + index * HOUR;
        fixture.set_now(now).await;
        run_all(&contexts, &format!("step {index}")).await;
        written.push((newest_event(), now));
    }
    let last = quiet_time(&ebay, t0 + steps * HOUR);
    fixture.set_now(last).await;
    run_all(&contexts, "last").await;
    written.push((newest_event(), last));
    let written_at = |id: i64| -> i64 {
        written
            .iter()
            .find(|(newest, _)| id <= *newest)
            .map(|(_, now)| *now)
            .expect("every row written by a step")
    };

    // The simulator's changes since the catch-up, up to the last run.
    let simulated = changes_between(SEED, &ebay, SELLER, t0 + 1, last + 1);
    let mut expected: BTreeMap<Key, Vec<i64>> = BTreeMap::new();
    for change in &simulated {
        expected.entry(key_of(change)).or_default().push(change.at);
    }
    let events = fixture
        .ledger
        .recent_events(Some("shop"), 1_000_000)
        .expect("events");
    let mut recorded: BTreeMap<Key, Vec<i64>> = BTreeMap::new();
    for event in &events {
        let key = (
            event.stream.clone(),
            event.resource_id.clone(),
            event.field.clone(),
            event.before.clone().unwrap_or_default(),
            event.after.clone().unwrap_or_default(),
        );
        recorded.entry(key).or_default().push(written_at(event.id));
    }
    for stream in STREAMS {
        let mine = |map: &BTreeMap<Key, Vec<i64>>| -> BTreeMap<Key, usize> {
            map.iter()
                .filter(|(key, _)| key.0 == *stream)
                .map(|(key, times)| (key.clone(), times.len()))
                .collect()
        };
        let (want, got) = (mine(&expected), mine(&recorded));
        assert!(
            want.len() >= 5,
            "{stream}: the simulated week holds only {} changes",
            want.len()
        );
        let missing: BTreeSet<_> = want
            .iter()
            .filter(|(key, count)| got.get(*key) != Some(count))
            .map(|(key, count)| (key.clone(), *count, got.get(key).copied().unwrap_or(0)))
            .collect();
        let extra: BTreeSet<_> = got
            .iter()
            .filter(|(key, _)| !want.contains_key(*key))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{stream}: missing or miscounted (key, simulated, recorded) {missing:?}; not simulated {extra:?}"
        );
    }
    // Nothing outside the streams above, and no row before its change: the n-th row of a
    // key was written (simulated time) no earlier than the n-th simulated change of it.
    for (key, times) in &recorded {
        assert!(STREAMS.contains(&key.0.as_str()), "{key:?}");
        let mut observed = times.clone();
        observed.sort_unstable();
        let mut happened = expected.get(key).cloned().unwrap_or_default();
        happened.sort_unstable();
        for (seen, at) in observed.iter().zip(&happened) {
            assert!(
                seen >= at,
                "{key:?} observed at {seen}, before its change at {at}"
            );
        }
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(events.len(), total, "one row per simulated change");
}

/// A daemon config with the embedded simulator on `port` and two eBay accounts, each
/// with all ten streams; `extra` is appended to the globals.
fn ten_stream_config(dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    let mut text = format!(
        r#"
data_dir = "{}"
[simulator]
enabled = true
listen = "127.0.0.1:{port}"
ebay_inventory_listings = 40
[supervisor]
min_backoff = "50ms"
max_backoff = "200ms"
max_crashes = 3
crash_window = "1m"
probe_after = "1h"
heartbeat = "200ms"
stuck_after = "30s"
{extra}
"#,
        dir.display()
    );
    for id in ["shop", "poison"] {
        text.push_str(&format!(
            "\n[[accounts]]\nid = \"{id}\"\nprovider = \"ebay\"\n"
        ));
        for stream in marketsync::shapes::cursor::EBAY_STREAMS {
            text.push_str(&format!("[accounts.streams.{stream}]\n"));
            match *stream {
                "active_inventory" => text.push_str("poll_min = \"50ms\"\npoll_max = \"200ms\"\n"),
                "offers" => {}
                _ => text.push_str(
                    "start = \"2days\"\ninterval = \"1s\"\nretry_base = \"1s\"\nretry_max = \"2s\"\n",
                ),
            }
        }
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// (stream → (cursor_ts, last_error)) of `account`.
fn cursors(
    ledger: &marketsync::store::SqliteLedger,
    account: &str,
) -> BTreeMap<String, (i64, Option<String>)> {
    ledger.with_conn(|conn| {
        let mut statement = conn
            .prepare("SELECT stream, cursor_ts, last_error FROM cursors WHERE account = ?1")
            .expect("prepare");
        statement
            .query_map([account], |row| {
                Ok((row.get(0)?, (row.get(1)?, row.get(2)?)))
            })
            .expect("query")
            .collect::<Result<BTreeMap<_, _>, _>>()
            .expect("rows")
    })
}

fn count(ledger: &marketsync::store::SqliteLedger, table: &str, account: &str) -> i64 {
    ledger.with_conn(|conn| {
        conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE account = ?1"),
            [account],
            |row| row.get(0),
        )
        .unwrap_or(0)
    })
}

/// Issue 14 point 4 on the real binary: one seller's ten eBay streams run concurrently
/// (the simulator holds every Trading GetOrders answer of `purchases` while the other
/// cursor streams keep moving their cursors; released, purchases catches up), and an
/// account whose actor panics on every unit (the `[chaos]` drill) is quarantined while
/// the healthy seller never restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebay_ten_streams_run_concurrently_and_a_panicking_account_is_contained() {
    use std::time::Duration;

    use crate::common::{status_json, wait_until, DaemonProcess};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let chaos =
        "[chaos]\nenabled = true\naccount = \"poison\"\naction = \"panic\"\nevery_unit = true\n";
    let config = ten_stream_config(dir.path(), port, chaos);
    let launched = marketsync::domain::now_ts();
    let mut daemon = DaemonProcess::spawn(&config);
    let ledger = marketsync::store::SqliteLedger::open(&dir.path().join("marketsync.db"))
        .expect("open ledger");
    let cursor_streams: Vec<&str> = marketsync::shapes::cursor::EBAY_STREAMS
        .iter()
        .copied()
        .filter(|stream| !matches!(*stream, "active_inventory" | "offers"))
        .collect();
    // Every stream of the healthy seller ran: the cursor streams caught up from two days
    // back, the inventory snapshot stored, the offers snapshot started without an error.
    let caught_up = wait_until(Duration::from_secs(90), || {
        let rows = cursors(&ledger, "shop");
        cursor_streams.iter().all(|stream| {
            rows.get(*stream)
                .is_some_and(|(cursor, error)| *cursor >= launched - 600 && error.is_none())
        }) && count(&ledger, "ebay_inventory", "shop") > 0
            && rows.get("offers").is_some_and(|(_, error)| error.is_none())
    })
    .await;
    assert!(
        caught_up,
        "cursors {:?}\nlogs:\n{}",
        cursors(&ledger, "shop"),
        daemon.logs()
    );
    let control = |body: serde_json::Value| {
        let url = format!("http://127.0.0.1:{port}/_sim/ebay/control");
        async move {
            let answer = reqwest::Client::new()
                .put(url)
                .json(&body)
                .send()
                .await
                .expect("control");
            assert!(answer.status().is_success(), "{}", answer.status());
        }
    };
    let purchases_calls = || async {
        let stats: marketsync::sim::ebay::EbayStats =
            reqwest::get(format!("http://127.0.0.1:{port}/_sim/ebay/stats"))
                .await
                .expect("stats")
                .json()
                .await
                .expect("stats json");
        stats.calls("ebay.tradingGetOrders")
    };
    control(serde_json::json!({"hold": ["ebay.tradingGetOrders"]})).await;
    let calls_at_hold = purchases_calls().await;
    // A purchases call arrives and is held: its run waits on it.
    let mut held = false;
    for _ in 0..100 {
        if purchases_calls().await > calls_at_hold {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        held,
        "no purchases call reached the simulator; logs:\n{}",
        daemon.logs()
    );
    let before = cursors(&ledger, "shop");
    let frozen = before["purchases"].0;
    // Meanwhile every other cursor stream runs again and moves its cursor.
    let others_moved = wait_until(Duration::from_secs(30), || {
        let now = cursors(&ledger, "shop");
        cursor_streams
            .iter()
            .filter(|stream| **stream != "purchases")
            .all(|stream| now[*stream].0 > before[*stream].0)
    })
    .await;
    let during = cursors(&ledger, "shop");
    assert!(others_moved, "before {before:?}\nduring {during:?}");
    assert_eq!(
        during["purchases"].0, frozen,
        "the held stream did not move"
    );
    control(serde_json::json!({"hold": []})).await;
    let released = wait_until(Duration::from_secs(30), || {
        cursors(&ledger, "shop")["purchases"].0 > frozen
    })
    .await;
    assert!(
        released,
        "purchases never moved again; logs:\n{}",
        daemon.logs()
    );

    // The panicking account is quarantined; the healthy one never restarted.
    let quarantined = wait_until(Duration::from_secs(60), || {
        status_json(&config).is_some_and(|status| {
            status["accounts"].as_array().is_some_and(|accounts| {
                accounts.iter().any(|account| {
                    account["id"] == "poison" && account["supervisor"]["state"] == "quarantined"
                })
            })
        })
    })
    .await;
    let status = status_json(&config).expect("status");
    assert!(quarantined, "status {status:#}\nlogs:\n{}", daemon.logs());
    let shop = status["accounts"]
        .as_array()
        .and_then(|accounts| accounts.iter().find(|account| account["id"] == "shop"))
        .expect("shop in status");
    assert_eq!(shop["supervisor"]["restarts"], 0, "{shop}");
    assert!(cursors(&ledger, "poison")
        .values()
        .all(|(_, error)| error.is_none()));
    assert_eq!(count(&ledger, "ebay_purchases", "poison"), 0);
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit_code(Duration::from_secs(30)).await,
        Some(0),
        "logs:\n{}",
        daemon.logs()
    );
}
