//! Test databases on a real PostgreSQL server: [`TestDb::create`] makes a fresh, empty
//! database `ms_test_<random>` on the server named by `MARKETSYNC_TEST_PG_URL` (default
//! [`DEFAULT_TEST_URL`]) and drops it when the value is dropped. A server that cannot be
//! reached fails the test with a message saying how to start one: no silent skip.
//! Compiled for unit tests and with the `testing` feature (the integration tests).

use std::time::Duration;

use super::redact_url;
pub use super::url::with_database;

/// The server the tests use when `MARKETSYNC_TEST_PG_URL` is not set.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One throwaway database; dropped (with every connection to it) on drop.
#[derive(Debug)]
pub struct TestDb {
    /// The base URL (the server's maintenance database).
    base_url: String,
    /// The test database's name.
    pub name: String,
    /// A URL of the test database.
    pub url: String,
}

impl TestDb {
    /// Creates a fresh database. Panics, saying how to start PostgreSQL, when the server
    /// does not answer.
    pub fn create() -> TestDb {
        let base_url = std::env::var("MARKETSYNC_TEST_PG_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TEST_URL.to_string());
        let name = format!("ms_test_{:016x}", rand::random::<u64>());
        // Off this thread: the sync client panics on a thread that drives async tasks.
        let created = {
            let (base_url, name) = (base_url.clone(), name.clone());
            std::thread::spawn(move || {
                let mut admin = connect(&base_url);
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap_or_else(|err| panic!("creating test database {name}: {err}"));
            })
            .join()
        };
        if let Err(panic) = created {
            std::panic::resume_unwind(panic);
        }
        let url = with_database(&base_url, &name);
        TestDb {
            base_url,
            name,
            url,
        }
    }

    /// A plain client on the test database, for assertions a test makes in SQL. Not on
    /// an async worker thread: the sync client panics there (use `spawn_blocking`).
    pub fn client(&self) -> postgres::Client {
        connect(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (base_url, name) = (self.base_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            if let Ok(mut config) = base_url.parse::<postgres::Config>() {
                config.connect_timeout(Duration::from_secs(5));
                if let Ok(mut admin) = config.connect(postgres::NoTls) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
        });
        let _ = dropped.join();
    }
}

fn connect(url: &str) -> postgres::Client {
    let mut config: postgres::Config = url
        .parse()
        .unwrap_or_else(|err| panic!("MARKETSYNC_TEST_PG_URL {}: {err}", redact_url(url)));
    config.connect_timeout(Duration::from_secs(5));
    config.connect(postgres::NoTls).unwrap_or_else(|err| {
        panic!(
            "postgresql is not reachable at {} ({err}); the PostgreSQL tests need a server: \
             start the machine's cluster (`pg_ctlcluster --skip-systemctl-redirect \
             $(ls /etc/postgresql) main start`), or a throwaway one (`initdb -D DIR -U \
             postgres --auth=trust && pg_ctl -D DIR -o '-p 5432' start`), or point \
             MARKETSYNC_TEST_PG_URL at one",
            redact_url(url)
        )
    })
}
