//! A throwaway database on a PostgreSQL server: [`ScratchDatabase::create`] makes a fresh,
//! empty database `<prefix>_<random>` beside the one a server URL names, and dropping the
//! value drops it (with every connection to it). The tests' `TestDb` and the benches that
//! need PostgreSQL (`bench ebay-inventory-postgres`) use it, so neither writes into a
//! database it did not create.
//!
//! The admin connections run on a thread of their own: the sync client panics on a thread
//! that drives async tasks, and a caller may be one.

use std::time::Duration;

use super::{redact_url, with_database};

/// One throwaway database; dropped on drop.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The URL it was created from (the server's maintenance database, or any other).
    server_url: String,
    /// The database's name.
    pub name: String,
    /// A URL of the database.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<16 hex digits>` on the server of `server_url`. The error says
    /// how to start a server when none answers.
    pub fn create(server_url: &str, prefix: &str) -> Result<ScratchDatabase, String> {
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let (url, statement) = (server_url.to_string(), format!("CREATE DATABASE {name}"));
        off_thread(move || {
            connect(&url)?
                .batch_execute(&statement)
                .map_err(|err| format!("creating the database: {err}"))
        })?;
        Ok(ScratchDatabase {
            url: with_database(server_url, &name),
            server_url: server_url.to_string(),
            name,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.server_url.clone(), self.name.clone());
        let dropped = off_thread(move || {
            connect(&url)?
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .map_err(|err| err.to_string())
        });
        if let Err(err) = dropped {
            eprintln!("cannot drop the scratch database {}: {err}", self.name);
        }
    }
}

/// A plain client on `url`, with a 5 s connect timeout; the error names the server
/// (password redacted) and how to start one.
pub fn connect(url: &str) -> Result<postgres::Client, String> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|err| format!("{}: {err}", redact_url(url)))?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(postgres::NoTls).map_err(|err| {
        format!(
            "postgresql is not reachable at {} ({err}); start the machine's cluster \
             (`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`), or a \
             throwaway one (`initdb -D DIR -U postgres --auth=trust && pg_ctl -D DIR -o '-p \
             5432' start`), or point the URL at one",
            redact_url(url)
        )
    })
}

fn off_thread(work: impl FnOnce() -> Result<(), String> + Send + 'static) -> Result<(), String> {
    std::thread::spawn(work)
        .join()
        .unwrap_or_else(|_| Err("the admin connection's thread panicked".to_string()))
}
