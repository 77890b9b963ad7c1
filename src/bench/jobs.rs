//! `marketsync bench jobs`: jobs drained per second when the budget is not the limit.
//!
//! Starts the simulator on a loopback port with the StockX hourly budget and the Keepa
//! refill lifted, a TokenManager whose stockx and keepa buckets are huge, a SQLite file
//! in a temp directory; queues `jobs` StockX jobs (or Keepa ASINs, Alias style ids in 4
//! sizes each, eBay keyword searches) and drains them with one run of the provider's
//! drainer over real HTTP, `rounds` times. Prints the median jobs/s, and for Alias the
//! calls per lookup against the theoretical 1.25 (one catalog search per style id, then
//! one pricing call per size).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::quota::{BucketSpec, Pacer, QuotaBackend, QuotaConfig, QuotaHandle, TokenManager};
use crate::shapes::jobs::worker::JobRunner;
use crate::shapes::{RunOutcome, StreamContext, StreamWork};
use crate::store::jobs::{self as store, JobPriority, NewJob};
use crate::store::{LedgerStore, SqliteLedger};

/// Options of `marketsync bench jobs`.
#[derive(Debug, clap::Args)]
pub struct BenchJobsArgs {
    /// Jobs queued per provider.
    #[arg(long, default_value_t = 2_000)]
    pub jobs: usize,
    /// Keepa ASINs per request (1 to 100).
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Rounds per provider (each queues `jobs` fresh jobs and drains them); the median
    /// is reported, since one run on a shared machine varies.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Only these providers (comma-separated: stockx, keepa, alias, ebay); all when empty.
    #[arg(long, value_delimiter = ',')]
    pub providers: Vec<String>,
}

/// Runs the benchmark; prints the figures.
pub fn run(args: BenchJobsArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchJobsArgs) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir().context("creating a temp directory")?;
    let mut sim_config = crate::sim::SimConfig::default();
    sim_config.stockx.hourly_budget = u32::MAX;
    sim_config.keepa.refill_rate = 1_000_000_000;
    sim_config.alias.hourly_budget = u32::MAX;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sim = crate::sim::Simulator::new(sim_config);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        crate::sim::serve(listener, sim, async move { stopped.cancelled().await }).await
    });
    // Lift the simulated Browse API's daily limit (5,000 calls per application).
    reqwest::Client::new()
        .put(format!("http://{addr}/_sim/ebay/browse"))
        .json(&serde_json::json!({ "daily_calls": u64::MAX }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("lifting the simulator's Browse API daily limit")?;

    let text = format!(
        "data_dir = \"{}\"\n[simulator]\nenabled = true\n\n[[accounts]]\nid = \"bench-stockx\"\nprovider = \"stockx\"\n[accounts.streams.market_data]\n\n[[accounts]]\nid = \"bench-keepa\"\nprovider = \"keepa\"\n[accounts.streams.products]\nbatch = {}\n\n[[accounts]]\nid = \"bench-alias\"\nprovider = \"alias\"\n[accounts.streams.market_data]\n\n[[accounts]]\nid = \"bench-ebay\"\nprovider = \"ebay\"\n[accounts.streams.market_prices]\n",
        dir.path().display(),
        args.batch.clamp(1, 100)
    );
    let config = Config::parse(&text, "<bench jobs>")?;
    let ledger = Arc::new(SqliteLedger::open(&config.database_path())?);
    let quota = QuotaConfig::new(QuotaBackend::InProcess)
        .with_spec("stockx", "*", BucketSpec::new(1e12, 1e12))
        .with_spec("keepa", "*", BucketSpec::new(1e12, 1e12))
        .with_spec("alias", "*", BucketSpec::new(1e12, 1e12))
        .with_spec("ebay", "*", BucketSpec::new(1e12, 1e12));
    let (actor, _join) = TokenManager::spawn(quota).await?;
    let handle = QuotaHandle::new(actor);
    let http = reqwest::Client::new();

    println!(
        "bench jobs: {} jobs per provider, keepa batch {}, simulator over http on {addr}",
        args.jobs, args.batch
    );
    for account in &config.accounts {
        let provider = account.provider;
        if !args.providers.is_empty()
            && !args
                .providers
                .iter()
                .any(|name| name.trim() == provider.as_str())
        {
            continue;
        }
        let client = crate::shapes::jobs::build_client(account, &http, Some(addr))?;
        let pacer = Pacer::new(handle.clone(), provider.as_str(), account.quota_scope());
        let runner = Arc::new(JobRunner::new(
            client,
            Some(pacer),
            Arc::clone(&ledger) as Arc<dyn LedgerStore>,
        ));
        let dyn_ledger: Arc<dyn LedgerStore> = ledger.clone();
        let cancel = CancellationToken::new();
        let context = StreamContext {
            account: Arc::new(account.clone()),
            stream: account.streams[0].clone(),
            ledger: dyn_ledger,
            work: StreamWork::shape(runner),
            documents_dir: dir.path().join("documents"),
            owner: "bench:1@localhost".to_string(),
            cancel: cancel.clone(),
            abort: cancel,
            progress: None,
            chaos: None,
            metrics: Default::default(),
            permits: Default::default(),
            polls: None,
            lease_deadline: None,
        };
        let mut enqueue_rates = Vec::new();
        let mut drain_rates = Vec::new();
        let mut calls_per_job = Vec::new();
        for round in 0..args.rounds.max(1) {
            let enqueue_started = Instant::now();
            {
                let ledger = Arc::clone(&ledger);
                let (provider, count) = (provider, args.jobs);
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    for index in 0..count {
                        let (sku, size) = match provider.as_str() {
                            "stockx" => {
                                (format!("BENCH-{round}-{index:06}"), Some("10".to_string()))
                            }
                            // Four sizes per style id: one catalog search, four pricings.
                            "alias" => (
                                format!("BENCH-{round}-{:06}", index / 4),
                                Some(["9", "9.5", "10", "10.5"][index % 4].to_string()),
                            ),
                            "ebay" => (format!("bench {round} {index}"), None),
                            _ => (format!("B{round:02}{index:07}"), None),
                        };
                        store::enqueue(
                            &*ledger,
                            &NewJob {
                                provider: provider.to_string(),
                                sku,
                                size,
                                priority: JobPriority::Background,
                                source: "bench".to_string(),
                            },
                        )?;
                    }
                    Ok(())
                })
                .await??;
            }
            enqueue_rates.push(super::ratio(
                args.jobs as f64,
                enqueue_started.elapsed().as_secs_f64(),
            ));
            let started = Instant::now();
            let outcome = context.run_once().await?;
            let secs = started.elapsed().as_secs_f64();
            let RunOutcome::Finished { applied, failed } = outcome else {
                anyhow::bail!("{provider}: the drain stopped early: {outcome:?}");
            };
            if applied as usize != args.jobs || failed != 0 {
                anyhow::bail!(
                    "{provider}: drained {applied} of {} jobs ({failed} failed)",
                    args.jobs
                );
            }
            drain_rates.push(super::ratio(applied as f64, secs));
            let runs = {
                let ledger = Arc::clone(&ledger);
                tokio::task::spawn_blocking(move || store::recent_runs(&*ledger, 1)).await??
            };
            if let Some(run) = runs.first() {
                calls_per_job.push(run.calls_made as f64 / (applied as f64).max(1.0));
            }
        }
        println!(
            "  {provider:<6} drained {:>6.0} jobs/s (median of {}; runs {}), enqueue {:>6.0} jobs/s",
            median(&mut drain_rates),
            drain_rates.len(),
            drain_rates
                .iter()
                .map(|rate| format!("{rate:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            median(&mut enqueue_rates),
        );
        if provider.as_str() == "alias" {
            println!(
                "         calls per lookup {:.3} (theoretical minimum 1.250: 1 catalog search per 4 sizes; ratio {:.3})",
                median(&mut calls_per_job),
                median(&mut calls_per_job) / 1.25,
            );
        }
    }
    stop.cancel();
    report_server_end(server.await);
    Ok(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Says how the bench's in-process simulator ended when it did not end cleanly (an error,
/// or a panic the join reports), so a figure taken beside a broken server is not trusted.
pub(crate) fn report_server_end<E: std::fmt::Display>(
    ended: Result<Result<(), E>, tokio::task::JoinError>,
) {
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("bench: the simulator ended with an error: {err}"),
        Err(err) => eprintln!("bench: the simulator task failed: {err}"),
    }
}
