//! Unit tests of facts, verdicts and findings.

use super::*;
use crate::actors::supervisor::CrashInfo;
use crate::actors::supervisor::{ChildState, ChildStatus};
use crate::config::Config;
use crate::domain::HourWindow;
use crate::domain::{format_ts, HOUR};
use crate::shapes::windowed::lookback_window;
use crate::store::{account_scope, Cooldown, HourState, LedgerStore, SqliteLedger};
use std::collections::HashMap;

fn config() -> Deployment {
    Config::parse(
        r#"
data_dir = "/nonexistent"
[simulator]
enabled = true
[[accounts]]
id = "acct"
provider = "amazon"
marketplace = "ATVPDKIKX0DER"
[accounts.streams.vendor_rt_sales]
lookback = "24h"
"#,
        "t.toml",
    )
    .unwrap()
    .deployment()
}

fn facts(ledger: &SqliteLedger, now: i64) -> Vec<AccountFacts> {
    gather(
        &config(),
        ledger,
        &[],
        &HashMap::new(),
        &[],
        None,
        None,
        now,
    )
    .unwrap()
}

const NOW: i64 = 1_764_756_000 + 1800;

fn seeded(at: i64) -> SqliteLedger {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let stream = &config().accounts[0].streams[0];
    let window = lookback_window(stream, NOW);
    ledger.seed("acct", "vendor_rt_sales", window, at).unwrap();
    ledger
}

fn ebay_config() -> Deployment {
    Config::parse(
        r#"
data_dir = "/nonexistent"
[simulator]
enabled = true
[[accounts]]
id = "store"
provider = "ebay"
[accounts.streams.orders]
interval = "5m"
safety_lag = "2m"
"#,
        "t.toml",
    )
    .unwrap()
    .deployment()
}

fn cursor_verdict(ledger: &SqliteLedger, now: i64) -> (Verdict, String, Vec<Finding>) {
    let config = ebay_config();
    let accounts = gather(&config, ledger, &[], &HashMap::new(), &[], None, None, now).unwrap();
    let (verdict, why) = verdict(&accounts[0], &accounts[0].streams[0], now);
    let found = findings(&config, &accounts, &DoctorOptions::default(), now);
    (verdict, why, found)
}

fn set_cursor(
    ledger: &SqliteLedger,
    cursor: i64,
    last_run: i64,
    failures: i64,
    error: Option<&str>,
) {
    ledger.with_conn(|conn| {
            conn.execute(
                "INSERT INTO cursors (account, stream, cursor_ts, updated_at, last_run_at, last_error, failures, retry_at)
                 VALUES ('store', 'orders', ?1, ?2, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account, stream) DO UPDATE SET cursor_ts = excluded.cursor_ts,
                   last_run_at = excluded.last_run_at, last_error = excluded.last_error,
                   failures = excluded.failures, retry_at = excluded.retry_at",
                rusqlite::params![cursor, last_run, error, failures, error.map(|_| NOW + 600)],
            )
            .unwrap();
        });
}

#[test]
fn cursor_streams_get_verdicts_from_their_cursor() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let (verdict, why, found) = cursor_verdict(&ledger, NOW);
    assert_eq!(verdict, Verdict::Stalled);
    assert!(why.contains("no cursor yet"), "{why}");
    assert!(found.iter().any(|f| f.severity == Severity::Action
        && f.fix.as_deref() == Some("marketsync --config t.toml run")));

    // 30 days behind, running: syncing one window per run.
    set_cursor(&ledger, NOW - 30 * 86_400, NOW - 10, 0, None);
    let (verdict, why, found) = cursor_verdict(&ledger, NOW);
    assert_eq!(verdict, Verdict::Syncing, "{why}");
    assert!(
        why.contains("behind; catching up in windows of at most 1day"),
        "{why}"
    );
    assert!(
        found.iter().all(|f| f.severity == Severity::Ok),
        "{found:?}"
    );

    // Behind and no run for an hour: nobody works it.
    set_cursor(&ledger, NOW - 30 * 86_400, NOW - 3600, 0, None);
    let (verdict, why, _) = cursor_verdict(&ledger, NOW);
    assert_eq!(verdict, Verdict::Stalled, "{why}");

    // A failing window keeps the cursor and says why.
    set_cursor(
        &ledger,
        NOW - 86_400,
        NOW - 10,
        3,
        Some("getOrders returned http 500: boom"),
    );
    let (verdict, why, found) = cursor_verdict(&ledger, NOW);
    assert_eq!(verdict, Verdict::Failing, "{why}");
    assert!(
        why.contains("failed 3 time(s)") && why.contains("http 500: boom"),
        "{why}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("retried automatically")),
        "{found:?}"
    );

    // Within an interval of now minus the safety lag: caught up.
    set_cursor(&ledger, NOW - 120 - 60, NOW - 60, 0, None);
    let (verdict, why, _) = cursor_verdict(&ledger, NOW);
    assert_eq!(verdict, Verdict::CaughtUp, "{why}");
}

#[test]
fn no_rows_is_stalled_and_needs_the_daemon() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let accounts = facts(&ledger, NOW);
    let (verdict, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
    assert_eq!(verdict, Verdict::Stalled);
    assert!(why.contains("has not run"), "{why}");
    let found = findings(&config(), &accounts, &DoctorOptions::default(), NOW);
    assert!(found.iter().any(|f| f.severity == Severity::Action
        && f.fix.as_deref() == Some("marketsync --config t.toml run")));
}

#[test]
fn fresh_missing_hours_are_syncing_old_unclaimed_ones_are_stalled() {
    let ledger = seeded(NOW - 10);
    let accounts = facts(&ledger, NOW);
    assert_eq!(
        verdict(&accounts[0], &accounts[0].streams[0], NOW).0,
        Verdict::Syncing
    );
    let ledger = seeded(NOW - 3 * HOUR);
    let accounts = facts(&ledger, NOW);
    let (verdict_now, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
    assert_eq!(verdict_now, Verdict::Stalled, "{why}");
    assert!(why.contains("never claimed"), "{why}");
    let found = findings(&config(), &accounts, &DoctorOptions::default(), NOW);
    let line = found
        .iter()
        .find(|f| f.message.contains("missing hours not dropping"))
        .expect("missing-hours finding");
    assert!(
        line.message.contains("no daemon is claiming"),
        "{}",
        line.message
    );
}

#[test]
fn cooldown_outranks_failures_and_quarantine_outranks_everything() {
    let ledger = seeded(NOW - 10);
    let claim = ledger
        .claim(
            "acct",
            "vendor_rt_sales",
            2,
            crate::config::ClaimOrder::NewestFirst,
            "t:1@h",
            crate::store::WriteFence::Unfenced,
            NOW,
        )
        .unwrap()
        .unwrap();
    ledger
        .fail(&claim, "getReport returned http 500: boom", NOW + 600, NOW)
        .unwrap();
    let accounts = facts(&ledger, NOW);
    let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
    assert_eq!(v, Verdict::Failing);
    assert!(
        why.contains("http 500") && why.contains("next retry at"),
        "{why}"
    );

    ledger
        .set_cooldown(&Cooldown {
            scope: account_scope("amazon", "acct"),
            reason: "quota".to_string(),
            started_at: NOW,
            until_at: NOW + 1800,
            detail: Some("createReport 429".to_string()),
        })
        .unwrap();
    let mut accounts = facts(&ledger, NOW);
    let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
    assert_eq!(v, Verdict::Cooldown);
    assert!(why.contains(&format_ts(NOW + 1800)), "{why}");

    accounts[0].supervisor = Some(ChildStatus {
        id: "acct".to_string(),
        state: ChildState::Quarantined,
        restarts: 6,
        last_crash: Some(CrashInfo {
            at_utc: "2025-12-03T10:00:00Z".to_string(),
            reason: "poison row".to_string(),
        }),
        quarantined_until: Some("2025-12-03T11:00:00Z".to_string()),
        reason: None,
    });
    let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], NOW);
    assert_eq!(v, Verdict::Quarantined);
    assert!(why.contains("poison row"), "{why}");
    let report = Report::new(findings(
        &config(),
        &accounts,
        &DoctorOptions::default(),
        NOW,
    ));
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.findings[0].severity, Severity::Action);
    assert!(report.render().contains("accounts resume acct"));
}

#[test]
fn all_applied_is_caught_up_until_it_lags() {
    let ledger = SqliteLedger::open_in_memory().unwrap();
    let stream = &config().accounts[0].streams[0];
    let window = lookback_window(stream, NOW);
    ledger.seed("acct", "vendor_rt_sales", window, NOW).unwrap();
    ledger.with_conn(|conn| {
        conn.execute(
            &format!(
                "UPDATE ledger_hours SET state = '{}'",
                HourState::Applied.as_str()
            ),
            [],
        )
        .unwrap();
    });
    let accounts = facts(&ledger, NOW);
    assert_eq!(
        verdict(&accounts[0], &accounts[0].streams[0], NOW).0,
        Verdict::CaughtUp
    );
    let later = NOW + 5 * HOUR;
    let accounts = facts(&ledger, later);
    let (v, why) = verdict(&accounts[0], &accounts[0].streams[0], later);
    assert_eq!(v, Verdict::Stalled, "{why}");
    let _ = HourWindow::new(window.start, window.end);
}

#[test]
fn shell_words_are_quoted_only_when_needed() {
    assert_eq!(shell_word("config/demo.toml"), "config/demo.toml");
    assert_eq!(shell_word("my config.toml"), "'my config.toml'");
    assert_eq!(
        host_port("redis://127.0.0.1:6390/", 6379),
        Some(("127.0.0.1".to_string(), 6390))
    );
    assert_eq!(
        host_port("redis://localhost", 6379),
        Some(("localhost".to_string(), 6379))
    );
    assert_eq!(
        host_port("https://sellingpartnerapi-na.amazon.com", 443),
        Some(("sellingpartnerapi-na.amazon.com".to_string(), 443))
    );
}
