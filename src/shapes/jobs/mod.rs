//! The keyed job queue (seeds 002, 004): on-demand lookups (`provider|sku|size`, Keepa
//! ASINs) with dedupe, priorities 200 manual / 150 hot / 100 background, leases that
//! rescue jobs whose worker died, and per-run metrics.
//!
//! - [`crate::store::jobs`]: the tables (`jobs`, `market_prices`, `keepa_products`,
//!   `job_runs`) on the hour ledger's engine (SQLite or PostgreSQL) and the public API the CLI, the HTTP API and status use ([`enqueue`], [`list_jobs`],
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

use futures_util::future::BoxFuture;

use crate::provider::alias::AliasClient;
use crate::provider::ebay::EbayEndpoints;
use crate::provider::ebay_browse::EbayBrowseClient;
use crate::provider::keepa::KeepaClient;
use crate::provider::stockx::{StockxClient, StockxCredentials, StockxEndpoints};
use crate::quota::Pacer;
use crate::shapes::spec::{AccountConfig, Endpoints, ShapeSettings};
use crate::shapes::{RunOutcome, ShapeRunner, StreamContext, StreamWork, SyncError};
use crate::store::LedgerStore;

pub use crate::store::jobs::{
    enqueue, keepa_products, list_jobs, market_prices, queue_depth, recent_runs, reset_failed,
    EnqueueOutcome, Job, JobError, JobPriority, JobRun, JobState, KeepaProduct, ListingStats,
    MarketPrice, NewJob,
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
    ledger: Arc<dyn LedgerStore>,
) -> anyhow::Result<StreamWork> {
    let client = build_client(account, http, simulator)?;
    Ok(StreamWork::shape(Arc::new(JobRunner::new(
        client,
        Some(pacer),
        ledger,
    ))))
}

/// An eBay account's work: `cursor` (its cursor streams), plus the `ebay` job queue's
/// drainer for its `market_prices` stream when it has one (Browse API lookups with the
/// account's application token). Every stream keeps the account's one pacer.
pub fn with_market_prices(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
    pacer: Pacer,
    ledger: Arc<dyn LedgerStore>,
    cursor: StreamWork,
) -> anyhow::Result<StreamWork> {
    let has_jobs = account
        .streams
        .iter()
        .any(|stream| matches!(stream.shape, ShapeSettings::Jobs(_)));
    if !has_jobs {
        return Ok(cursor);
    }
    let client = build_client(account, http, simulator)?;
    let jobs = StreamWork::shape(Arc::new(JobRunner::new(client, Some(pacer), ledger)));
    Ok(StreamWork::shape(Arc::new(ByShape { cursor, jobs })))
}

/// The runner of an account whose streams have two shapes: job-queue streams go to
/// `jobs`, the others to `cursor`.
struct ByShape {
    cursor: StreamWork,
    jobs: StreamWork,
}

impl ShapeRunner for ByShape {
    fn pacer(&self) -> Option<&Pacer> {
        self.cursor.pacer()
    }

    fn run<'a>(
        &'a self,
        context: &'a StreamContext,
        fence: crate::store::WriteFence,
    ) -> BoxFuture<'a, Result<RunOutcome, SyncError>> {
        match context.stream.shape {
            ShapeSettings::Jobs(_) => self.jobs.runner().run(context, fence),
            _ => self.cursor.runner().run(context, fence),
        }
    }

    fn observed_rate_limit(&self, operation: &str) -> Option<f64> {
        self.cursor.runner().observed_rate_limit(operation)
    }
}

/// The provider client of a StockX, Keepa, Alias account, or of an eBay account's
/// `market_prices` stream: its endpoints (the embedded simulator's or explicit ones)
/// and credentials read from the named variables (the simulator's accounts need none).
pub fn build_client(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
) -> anyhow::Result<JobClient> {
    if account.provider == crate::domain::Provider::Ebay {
        return ebay_browse_client(account, http, simulator);
    }
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
        "alias" => {
            // A personal access token; the simulator takes any token.
            let token = match &account.credentials {
                Some(names) => read(names.api_key_env.as_ref())?,
                None => format!("simulator-pat-{}", account.quota_scope()),
            };
            Ok(JobClient::Alias(AliasClient::new(
                http.clone(),
                &api_base,
                &token,
                &account.marketplace,
            )))
        }
        other => anyhow::bail!(
            "account {}: provider {other} has no job queue; job queues serve stockx, keepa, alias and ebay market_prices",
            account.id
        ),
    }
}

/// The Browse client of an eBay account: the application's client id and secret (the
/// client-credentials grant; the seller's refresh token is not used).
fn ebay_browse_client(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
) -> anyhow::Result<JobClient> {
    let endpoints = match (&account.endpoints, simulator) {
        (Endpoints::EmbeddedSimulator, Some(addr)) => EbayEndpoints::new(
            &format!("http://{addr}"),
            &format!("http://{addr}/identity/v1/oauth2/token"),
        ),
        (Endpoints::EmbeddedSimulator, None) => anyhow::bail!(
            "account {}: uses the embedded simulator, which is not enabled; set [simulator] enabled = true or give the account an endpoint",
            account.id
        ),
        (
            Endpoints::Explicit {
                api_base,
                token_url,
            },
            _,
        ) => EbayEndpoints::new(api_base, token_url),
    };
    let (client_id, client_secret) = match &account.credentials {
        Some(names) => (
            crate::provider::read_env(&account.id, names.client_id_env.as_deref())?,
            crate::provider::read_env(&account.id, names.client_secret_env.as_deref())?,
        ),
        None => (
            format!("simulator-app-{}", account.quota_scope()),
            "simulator-secret".to_string(),
        ),
    };
    Ok(JobClient::EbayBrowse(EbayBrowseClient::new(
        http.clone(),
        endpoints,
        client_id,
        client_secret,
        &account.marketplace,
    )))
}
