//! The keyed job queue (seeds 002, 004): on-demand lookups (`provider|sku|size`, Keepa
//! ASINs) with dedupe, priorities 200 manual / 150 hot / 100 background, leases that
//! rescue jobs whose worker died, and per-run metrics.
//!
//! - [`crate::store::jobs`]: the SQLite tables (`jobs`, `market_prices`, `keepa_products`, `job_runs`)
//!   and the public API the CLI, the HTTP API and status use ([`enqueue`], [`list_jobs`],
//!   [`reset_failed`], [`queue_depth`], [`market_prices`], [`recent_runs`]).
//! - [`worker`]: the drainer, a [`crate::shapes::ShapeRunner`] run by the daemon's stream
//!   loop under the stream's lease; every provider call is paced by the TokenManager.
//! - [`scheduler`]: the freshness scheduler, which queues tracked keys within each
//!   provider's budget (hot when never fetched, background when stale).
//! - [`bench`]: `marketsync bench jobs`.
//!
//! docs/jobs.md describes states, priorities, dedupe, leases, the failure table, the
//! Keepa token model and the simulators' wire formats.

mod settings;
pub use settings::JobsSettings;

pub mod scheduler;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::provider::keepa::KeepaClient;
use crate::provider::stockx::{StockxClient, StockxCredentials, StockxEndpoints};
use crate::quota::Pacer;
use crate::shapes::spec::{AccountConfig, Endpoints};
use crate::shapes::StreamWork;
use crate::store::SqliteLedger;

pub use crate::store::jobs::{
    enqueue, keepa_products, list_jobs, market_prices, queue_depth, recent_runs, reset_failed,
    EnqueueOutcome, Job, JobError, JobPriority, JobRun, JobState, KeepaProduct, MarketPrice,
    NewJob,
};
pub use worker::{JobClient, JobRunner};

/// The sync shape of a StockX or Keepa account: its client (paced by `pacer`) and the
/// queue drainer. `ledger`: the SQLite store its tables live in. `simulator`: the
/// embedded simulator's address, for accounts served by it.
pub fn stream_work(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
    pacer: Pacer,
    ledger: Arc<SqliteLedger>,
) -> anyhow::Result<StreamWork> {
    let client = build_client(account, http, simulator)?;
    Ok(StreamWork::shape(Arc::new(JobRunner::new(
        client,
        Some(pacer),
        ledger,
    ))))
}

/// The provider client of a StockX or Keepa account: its endpoints (the embedded
/// simulator's or explicit ones) and credentials read from the named variables (the
/// simulator's accounts need none).
pub fn build_client(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
) -> anyhow::Result<JobClient> {
    let (api_base, token_url) = match (&account.endpoints, simulator) {
        (Endpoints::EmbeddedSimulator, Some(addr)) => (
            format!("http://{addr}"),
            format!("http://{addr}/oauth/token"),
        ),
        (Endpoints::EmbeddedSimulator, None) => anyhow::bail!(
            "account {}: uses the embedded simulator, which is not enabled; set [simulator] enabled = true or give endpoint and token_url",
            account.id
        ),
        (
            Endpoints::Explicit {
                api_base,
                token_url,
            },
            _,
        ) => (api_base.clone(), token_url.clone()),
    };
    let read =
        |name: Option<&String>| crate::provider::read_env(&account.id, name.map(String::as_str));
    match account.provider.as_str() {
        "stockx" => {
            let credentials = match &account.credentials {
                Some(names) => StockxCredentials {
                    client_id: read(names.client_id_env.as_ref())?,
                    client_secret: read(names.client_secret_env.as_ref())?,
                    refresh_token: read(names.refresh_token_env.as_ref())?,
                    api_key: read(names.api_key_env.as_ref())?,
                },
                None => StockxCredentials {
                    client_id: "simulator-client".to_string(),
                    client_secret: "simulator-secret".to_string(),
                    refresh_token: format!("simulator-refresh-{}", account.quota_scope()),
                    api_key: format!("simulator-key-{}", account.quota_scope()),
                },
            };
            Ok(JobClient::Stockx(StockxClient::new(
                http.clone(),
                StockxEndpoints {
                    api_base,
                    token_url,
                },
                credentials,
            )))
        }
        "keepa" => {
            let api_key = match &account.credentials {
                Some(names) => read(names.api_key_env.as_ref())?,
                None => format!("simulator-key-{}", account.quota_scope()),
            };
            Ok(JobClient::Keepa(KeepaClient::new(
                http.clone(),
                &api_base,
                &api_key,
                &account.marketplace,
            )))
        }
        other => anyhow::bail!(
            "account {}: provider {other} has no job queue; job queues serve stockx and keepa",
            account.id
        ),
    }
}
