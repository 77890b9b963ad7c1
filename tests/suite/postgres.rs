//! The PostgreSQL store through the real binary: an installation synced on SQLite is
//! moved with `marketsync store copy` (refused while the file is in use, refused into a
//! non-empty target), verified per table, and a daemon on the copy carries on without
//! requesting any copied window again; `status` shows the same counts on both engines.
//! Uses the PostgreSQL server of `MARKETSYNC_TEST_PG_URL` (a fresh database per test).

use marketsync::store::postgres::testing::TestDb;

use crate::common::{counts, fast_sim, marketsync, Fixture, TestSim};

/// `status --json`'s counts of the fixture's stream.
fn status_counts(config_path: &std::path::Path, env: &[(&str, &str)]) -> serde_json::Value {
    let mut command = marketsync();
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .arg("--config")
        .arg(config_path)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["accounts"][0]["streams"][0]["counts"].clone()
}

/// A plain test thread with the simulator on a runtime of its own: the sync PostgreSQL
/// client this test queries with must not run on an async worker thread.
#[test]
fn store_copy_moves_the_ledger_and_a_daemon_on_the_copy_requests_nothing_again() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime.block_on(TestSim::start(fast_sim()));
    let fixture = Fixture::new(&sim, "lookback = \"12h\"");
    let output = marketsync()
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["sync", "--once", "--timeout", "60s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sync on sqlite: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(counts(&fixture.open_ledger())[3], 12, "12 hours applied");
    let sqlite_counts = status_counts(&fixture.config_path, &[]);
    let creates_on_sqlite = sim.stats().calls("createReport");
    assert!(creates_on_sqlite >= 2, "{creates_on_sqlite}");

    let db = TestDb::create();
    let var = "MARKETSYNC_TEST_COPY_TARGET";
    let copy = |extra: &[&str]| {
        marketsync()
            .env(var, &db.url)
            .arg("--config")
            .arg(&fixture.config_path)
            .args(["store", "copy", "--to", &format!("env:{var}")])
            .args(extra)
            .output()
            .unwrap()
    };

    // A daemon (any open connection) holds the file: refused, naming the fix.
    {
        let _daemon = fixture.open_ledger();
        let refused = copy(&[]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(stderr.contains("stop the daemon"), "{stderr}");
    }

    let copied = copy(&[]);
    let stdout = String::from_utf8_lossy(&copied.stdout).to_string();
    let stderr = String::from_utf8_lossy(&copied.stderr).to_string();
    assert!(copied.status.success(), "copy: {stdout}\n{stderr}");
    assert!(
        stderr.contains("ledger_hours: 12 rows"),
        "progress: {stderr}"
    );
    for table in marketsync::store::postgres::TABLES {
        let line = stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no line for {table}:\n{stdout}"));
        assert!(line.trim_end().ends_with("ok"), "{line}");
    }
    assert!(stdout.starts_with("table"), "{stdout}");

    // The rows in PostgreSQL are the rows in SQLite.
    let sqlite = fixture.open_ledger();
    let sqlite_sales: i64 = sqlite.with_conn(|conn| {
        conn.query_row("SELECT COUNT(*) FROM vendor_realtime_sales", [], |row| {
            row.get(0)
        })
        .unwrap()
    });
    let (max_copied_claim, max_copied_hour): (i64, i64) = sqlite.with_conn(|conn| {
        conn.query_row(
            "SELECT (SELECT MAX(id) FROM ledger_claims), (SELECT MAX(hour_utc) FROM ledger_hours)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
    });
    drop(sqlite);
    let mut client = db.client();
    let pg_sales: i64 = client
        .query_one("SELECT COUNT(*) FROM vendor_realtime_sales", &[])
        .unwrap()
        .get(0);
    assert!(sqlite_sales > 0);
    assert_eq!(pg_sales, sqlite_sales);

    // Into a target that holds rows: refused without --force, replaced with it.
    let again = copy(&[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("--force"), "{stderr}");
    let forced = copy(&["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );

    // The daemon on the copy: [store] url_env names the variable holding the URL.
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let pg_config = fixture.config_path.with_file_name("postgres.toml");
    std::fs::write(
        &pg_config,
        format!("{text}\n[store]\nurl_env = \"{var}\"\n"),
    )
    .unwrap();
    let pg_counts = status_counts(&pg_config, &[(var, &db.url)]);
    assert_eq!(pg_counts, sqlite_counts, "status reads the same counts");
    let doctor = marketsync()
        .env(var, &db.url)
        .arg("--config")
        .arg(&pg_config)
        .arg("doctor")
        .output()
        .unwrap();
    let doctor_out = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor_out.contains(&format!(
            "reachable, schema version {} (current)",
            marketsync::store::postgres::known_schema_version()
        )),
        "{doctor_out}\n{}",
        String::from_utf8_lossy(&doctor.stderr)
    );

    let output = marketsync()
        .env(var, &db.url)
        .arg("--config")
        .arg(&pg_config)
        .args(["sync", "--once", "--timeout", "60s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sync on postgresql: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Nothing copied is requested again: a createReport on PostgreSQL is only for an
    // hour that began after the copy (the clock may cross an hour meanwhile).
    let new_claims: Vec<(i64, i64)> = client
        .query(
            "SELECT id, start_hour FROM ledger_claims WHERE id > $1 ORDER BY id",
            &[&max_copied_claim],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for (id, start_hour) in &new_claims {
        assert!(
            *start_hour > max_copied_hour,
            "claim {id} requested hour {start_hour} again (copied up to {max_copied_hour})"
        );
    }
    assert_eq!(
        sim.stats().calls("createReport") - creates_on_sqlite,
        new_claims.len() as u64,
        "one createReport per new claim, none for copied hours"
    );
    let applied: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM ledger_hours WHERE state = 'APPLIED'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(applied >= 12, "{applied}");
    // The SQLite file's ledger was left as it was.
    assert_eq!(counts(&fixture.open_ledger())[3], 12);
    drop(client);
    drop(db);
    drop(sim);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}

/// `[store] url_env` naming an unset variable is a configuration error naming it; a
/// server that does not answer makes doctor say so (without the password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unreachable_postgresql_is_reported_clearly() {
    let sim = TestSim::start(fast_sim()).await;
    let fixture = Fixture::new(&sim, "lookback = \"12h\"");
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let pg_config = fixture.config_path.with_file_name("postgres.toml");
    let var = "MARKETSYNC_TEST_UNREACHABLE_URL";
    std::fs::write(
        &pg_config,
        format!("{text}\n[store]\nurl_env = \"{var}\"\n"),
    )
    .unwrap();
    let unset = marketsync()
        .env_remove(var)
        .arg("--config")
        .arg(&pg_config)
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(!unset.status.success());
    assert!(
        stderr.contains(var) && stderr.contains("not set"),
        "{stderr}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let doctor = marketsync()
        .env(var, format!("postgres://ms:hunter2@127.0.0.1:{port}/ms"))
        .arg("--config")
        .arg(&pg_config)
        .arg("doctor")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    assert!(!doctor.status.success(), "{all}");
    assert!(all.contains("postgresql"), "{all}");
    assert!(all.contains("ms:***@127.0.0.1"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

/// Every export kind reads its table where it lives: after `store copy`, an export under
/// `[store] url_env` writes byte for byte what the SQLite export wrote, and it reads
/// PostgreSQL (the copied tables are emptied in the SQLite file first).
#[test]
fn export_reads_the_tables_postgresql_holds_and_writes_the_same_bytes() {
    use marketsync::store::export::{lives_in_postgres, ExportKind};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime.block_on(TestSim::start(fast_sim()));
    let fixture = Fixture::new(&sim, "");
    super::ops::seed_export_rows(&fixture.database_path());
    let var = "MARKETSYNC_TEST_EXPORT_URL";
    let export = |config: &std::path::Path, url: Option<&str>, args: &[&str]| {
        let mut command = marketsync();
        if let Some(url) = url {
            command.env(var, url);
        }
        let output = command
            .arg("--config")
            .arg(config)
            .arg("export")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "export {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let mut cases: Vec<Vec<String>> = Vec::new();
    for kind in ExportKind::ALL {
        for format in ["csv", "jsonl"] {
            cases.push(vec![kind.as_str().into(), "--format".into(), format.into()]);
        }
        if kind.per_account() {
            cases.push(vec![
                kind.as_str().into(),
                "--account".into(),
                "acct".into(),
                "--since".into(),
                "2025-11-01".into(),
            ]);
        }
    }
    let expected: Vec<String> = cases
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            export(&fixture.config_path, None, &args)
        })
        .collect();
    let sales_csv = &expected[0];
    assert_eq!(sales_csv.lines().count(), 9, "{sales_csv}");

    let db = TestDb::create();
    let copied = marketsync()
        .env(var, &db.url)
        .arg("--config")
        .arg(&fixture.config_path)
        .args(["store", "copy", "--to", &format!("env:{var}")])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let in_postgres: Vec<ExportKind> = ExportKind::ALL
        .into_iter()
        .filter(|kind| lives_in_postgres(*kind))
        .collect();
    assert!(in_postgres.contains(&ExportKind::Sales));
    let sqlite = fixture.open_ledger();
    sqlite.with_conn(|conn| {
        for (table, kind) in [
            ("vendor_realtime_sales", ExportKind::Sales),
            ("ebay_orders", ExportKind::Orders),
            ("events", ExportKind::Events),
            ("market_prices", ExportKind::Prices),
            ("jobs", ExportKind::Jobs),
        ] {
            if in_postgres.contains(&kind) {
                conn.execute(&format!("DELETE FROM {table}"), []).unwrap();
            }
        }
    });
    drop(sqlite);

    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let pg_config = fixture.config_path.with_file_name("postgres.toml");
    std::fs::write(
        &pg_config,
        format!("{text}\n[store]\nurl_env = \"{var}\"\n"),
    )
    .unwrap();
    for (args, expected) in cases.iter().zip(&expected) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = export(&pg_config, Some(&db.url), &args);
        assert_eq!(&got, expected, "export {args:?} on postgresql");
    }
    drop(db);
    drop(sim);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
}
