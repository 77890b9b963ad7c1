//! Test databases on a real PostgreSQL server: [`TestDb::create`] makes a fresh, empty
//! database `ms_test_<random>` on the server named by `MARKETSYNC_TEST_PG_URL` (default
//! [`DEFAULT_TEST_URL`]) and drops it when the value is dropped. A server that cannot be
//! reached fails the test with a message saying how to start one: no silent skip.
//! Compiled for unit tests and with the `testing` feature (the integration tests).

use super::scratch::{connect, ScratchDatabase};
pub use super::url::with_database;

/// The server the tests use when `MARKETSYNC_TEST_PG_URL` is not set.
pub const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One throwaway database; dropped (with every connection to it) on drop.
#[derive(Debug)]
pub struct TestDb {
    /// The test database's name.
    pub name: String,
    /// A URL of the test database.
    pub url: String,
    /// Drops the database with this value.
    _scratch: ScratchDatabase,
}

impl TestDb {
    /// Creates a fresh database. Panics, saying how to start PostgreSQL, when the server
    /// does not answer.
    pub fn create() -> TestDb {
        let base_url = std::env::var("MARKETSYNC_TEST_PG_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TEST_URL.to_string());
        let scratch = ScratchDatabase::create(&base_url, "ms_test")
            .unwrap_or_else(|err| panic!("MARKETSYNC_TEST_PG_URL: {err}"));
        TestDb {
            name: scratch.name.clone(),
            url: scratch.url.clone(),
            _scratch: scratch,
        }
    }

    /// A plain client on the test database, for assertions a test makes in SQL. Not on
    /// an async worker thread: the sync client panics there (use `spawn_blocking`).
    pub fn client(&self) -> postgres::Client {
        connect(&self.url).unwrap_or_else(|err| panic!("{err}"))
    }
}
