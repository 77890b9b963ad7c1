//! What the read surfaces (status, doctor, the HTTP API, metrics) need to know about the
//! configuration: the accounts and their streams, where the database and the leases
//! live, and how to name the configuration in a command line. Built once from the
//! validated configuration by the composition root (`Config::deployment`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::lock::settings::RedisSettings;
use crate::shapes::spec::AccountConfig;

/// The configured installation, as the surfaces see it.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The file the configuration came from, or `<embedded demo>` (for command lines).
    pub source_name: String,
    /// Where the SQLite database and downloaded documents live.
    pub data_dir: PathBuf,
    /// Redis for leases and quota, when configured.
    pub redis: Option<RedisSettings>,
    /// Membership across daemons (`[cluster]`), when enabled.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// Where the embedded simulator listens, when it is enabled.
    pub simulator_listen: Option<SocketAddr>,
    /// PostgreSQL for the hour ledger (`[store] url_env`); `None`: the SQLite file.
    pub store: Option<crate::store::postgres::StoreSettings>,
    pub accounts: Vec<AccountConfig>,
}

impl Deployment {
    /// The SQLite file inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("marketsync.db")
    }

    pub fn account(&self, id: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|account| account.id == id)
    }
}
