//! The job queue on PostgreSQL through the real binary: two daemons (two data
//! directories, two Keepa accounts, one `[store]` database) drain one queue that the
//! CLI and a third party filled; every job is done exactly once, its result lands in
//! PostgreSQL, and neither daemon's SQLite file holds a job.

use std::time::Duration;

use marketsync::store::jobs::{self as store, JobPriority, NewJob};
use marketsync::store::postgres::testing::TestDb;
use marketsync::store::postgres::{PgLedger, PgSettings};
use marketsync::store::SqliteLedger;

use crate::common::{marketsync, wait_until, DaemonProcess};

const VAR: &str = "MARKETSYNC_TEST_JOBS_PG";

fn config(dir: &std::path::Path, account: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
data_dir = "{data}"

[simulator]
enabled = true

[store]
url_env = "{VAR}"

[[accounts]]
id = "{account}"
provider = "keepa"
[accounts.streams.products]
interval = "1s"
"#,
        data = dir.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A plain test thread (the sync PostgreSQL client must not run on an async worker);
/// the daemons are waited for on a runtime of their own.
#[test]
fn two_daemons_on_one_postgresql_drain_one_job_queue_each_job_once() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TestDb::create();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config_a, config_b) = (
        config(dir_a.path(), "keepa-a"),
        config(dir_b.path(), "keepa-b"),
    );

    // The CLI of a daemon configured with [store] queues into PostgreSQL.
    let output = marketsync()
        .env(VAR, &db.url)
        .arg("--config")
        .arg(&config_a)
        .args(["enqueue", "keepa", "B000000001", "--priority", "hot"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "enqueue: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let total: i64 = 40;
    {
        let pg = PgLedger::open(&db.url, &PgSettings::default()).expect("open");
        for index in 2..=total {
            store::enqueue(
                &pg,
                &NewJob {
                    provider: "keepa".into(),
                    sku: format!("B{index:09}"),
                    size: None,
                    priority: JobPriority::Background,
                    source: "test".into(),
                },
            )
            .expect("enqueue");
        }
    }

    let env = [(VAR, db.url.as_str())];
    let mut daemon_a = DaemonProcess::spawn_with_env(&config_a, &env);
    let mut daemon_b = DaemonProcess::spawn_with_env(&config_b, &env);
    let drained = runtime.block_on(wait_until(Duration::from_secs(60), || {
        let output = marketsync()
            .env(VAR, &db.url)
            .arg("--config")
            .arg(&config_b)
            .args(["jobs", "--state", "succeeded", "--json", "--limit", "1000"])
            .output()
            .expect("jobs --json");
        let jobs: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).unwrap_or_default();
        jobs.len() as i64 == total
    }));
    assert!(
        drained,
        "jobs not drained\ndaemon a:\n{}\ndaemon b:\n{}",
        daemon_a.logs(),
        daemon_b.logs()
    );
    for daemon in [&daemon_a, &daemon_b] {
        daemon.signal("TERM");
    }
    for daemon in [&mut daemon_a, &mut daemon_b] {
        let code = runtime.block_on(daemon.wait_exit_code(Duration::from_secs(30)));
        assert_eq!(code, Some(0), "{}", daemon.logs());
    }

    let mut client = db.client();
    let count = |client: &mut postgres::Client, sql: &str| -> i64 {
        client.query_one(sql, &[]).expect(sql).get(0)
    };
    assert_eq!(
        count(&mut client, "SELECT COUNT(*) FROM keepa_products"),
        total
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded' AND attempts = 0"
        ),
        total
    );
    // Each job was worked once: the runs' successes add up to the jobs, no more.
    assert_eq!(
        count(
            &mut client,
            "SELECT COALESCE(SUM(succeeded), 0)::bigint FROM job_runs"
        ),
        total,
        "a job was done twice"
    );
    // The job scopes' fences are recorded in PostgreSQL.
    assert!(
        count(
            &mut client,
            "SELECT COUNT(*) FROM scope_fences WHERE account IN ('keepa-a', 'keepa-b')"
        ) >= 1
    );
    // The export reads the queue's tables where they live: PostgreSQL (neither SQLite
    // file holds a job, see below).
    for (kind, table) in [("prices", "market_prices"), ("jobs", "jobs")] {
        let output = marketsync()
            .env(VAR, &db.url)
            .arg("--config")
            .arg(&config_a)
            .args(["export", kind])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let rows = String::from_utf8_lossy(&output.stdout).lines().count() as i64 - 1;
        let stored = count(&mut client, &format!("SELECT COUNT(*) FROM {table}"));
        assert!(stored > 0 || table == "market_prices", "{table}");
        assert_eq!(rows, stored, "export {kind} writes every row of {table}");
    }
    for dir in [dir_a.path(), dir_b.path()] {
        let sqlite = SqliteLedger::open(&dir.join("marketsync.db")).expect("sqlite");
        assert!(
            store::list_jobs(&sqlite, None, 10).unwrap().is_empty(),
            "no job in the SQLite file"
        );
    }
}
