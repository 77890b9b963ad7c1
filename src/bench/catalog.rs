//! `marketsync bench catalog`: StockX calls per market-data lookup once the catalog cache
//! is warm (issue 15's benchmark; target <= 1.05, the theoretical floor is 1.0: one
//! market-data call per lookup).
//!
//! Starts the simulator on a loopback port with the StockX hourly budget lifted, a
//! TokenManager whose stockx bucket is huge and a SQLite file in a temp directory. The
//! keys are `products` style ids × `sizes` sizes. A warm-up round looks every key up
//! once (cold: search + variants for a product's first size); then `relist` styles get
//! new catalog ids at the simulator (as a relisted product does), and `lookups` more
//! lookups run in rounds over every key in a shuffled order. Calls are counted by the
//! simulator (its `/_sim/stockx/stats`), lookups by the jobs that succeeded.

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

/// Options of `marketsync bench catalog`.
#[derive(Debug, clap::Args)]
pub struct BenchCatalogArgs {
    /// Distinct style ids (products).
    #[arg(long, default_value_t = 50)]
    pub products: usize,
    /// Sizes looked up per product (1 to 25).
    #[arg(long, default_value_t = 4)]
    pub sizes: usize,
    /// Lookups after the warm-up (rounded up to whole rounds over every key).
    #[arg(long, default_value_t = 2_000)]
    pub lookups: usize,
    /// Styles relisted at the simulator after the warm-up (their cached ids go stale).
    #[arg(long, default_value_t = 2)]
    pub relist: usize,
}

/// StockX calls the simulator counted.
#[derive(Debug, Clone, Copy, Default)]
struct Calls {
    search: u64,
    variants: u64,
    market: u64,
    throttled: u64,
}

impl Calls {
    fn total(&self) -> u64 {
        self.search + self.variants + self.market
    }

    fn since(&self, before: &Calls) -> Calls {
        Calls {
            search: self.search.saturating_sub(before.search),
            variants: self.variants.saturating_sub(before.variants),
            market: self.market.saturating_sub(before.market),
            throttled: self.throttled.saturating_sub(before.throttled),
        }
    }
}

/// Runs the benchmark; prints the figures.
pub fn run(args: BenchCatalogArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

async fn stats(http: &reqwest::Client, base: &str) -> anyhow::Result<Calls> {
    let stats: crate::sim::stockx::StockxStats = http
        .get(format!("{base}/_sim/stockx/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("simulator stats")?;
    Ok(Calls {
        search: stats.search_calls,
        variants: stats.variants_calls,
        market: stats.market_data_calls,
        throttled: stats.throttled,
    })
}

async fn bench(args: BenchCatalogArgs) -> anyhow::Result<i32> {
    let products = args.products.clamp(1, 100_000);
    let sizes = args.sizes.clamp(1, crate::sim::stockx::SIZES.len());
    let keys: Vec<(String, String)> = (0..products)
        .flat_map(|product| {
            crate::sim::stockx::SIZES[..sizes]
                .iter()
                .map(move |size| (format!("BENCH-{product:05}"), size.to_string()))
        })
        .collect();
    let rounds = args.lookups.div_ceil(keys.len()).max(1);

    let dir = tempfile::tempdir().context("creating a temp directory")?;
    let mut sim_config = crate::sim::SimConfig::default();
    sim_config.stockx.hourly_budget = u32::MAX;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let sim = crate::sim::Simulator::new(sim_config);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        crate::sim::serve(listener, sim, async move { stopped.cancelled().await }).await
    });

    let text = format!(
        "data_dir = \"{}\"\n[simulator]\nenabled = true\n\n[[accounts]]\nid = \"bench-stockx\"\nprovider = \"stockx\"\n[accounts.streams.market_data]\n",
        dir.path().display(),
    );
    let config = Config::parse(&text, "<bench catalog>")?;
    let ledger = Arc::new(SqliteLedger::open(&config.database_path())?);
    let quota = QuotaConfig::new(QuotaBackend::InProcess).with_spec(
        "stockx",
        "*",
        BucketSpec::new(1e12, 1e12),
    );
    let (actor, _join) = TokenManager::spawn(quota).await?;
    let handle = QuotaHandle::new(actor);
    let http = reqwest::Client::new();
    let account = config
        .accounts
        .first()
        .context("the bench configuration has its account")?;
    let client = crate::shapes::jobs::build_client(account, &http, Some(addr))?;
    let pacer = Pacer::new(
        handle.clone(),
        account.provider.as_str(),
        account.quota_scope(),
    );
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

    println!(
        "bench catalog: {products} styles x {sizes} sizes = {} keys, {rounds} rounds after warm-up, {} relisted, simulator over http on {addr}",
        keys.len(),
        args.relist.min(products)
    );
    // Warm-up: every key once, cold.
    let before = stats(&http, &base).await?;
    let warm_started = Instant::now();
    let warm = round(&context, &ledger, &keys, 0).await?;
    let warm_secs = warm_started.elapsed().as_secs_f64();
    let warm_calls = stats(&http, &base).await?.since(&before);
    println!(
        "  warm-up : {warm} lookups, {} calls (search {}, variants {}, market {}): {:.3} calls/lookup, {:.0} lookups/s",
        warm_calls.total(),
        warm_calls.search,
        warm_calls.variants,
        warm_calls.market,
        warm_calls.total() as f64 / warm.max(1) as f64,
        super::ratio(warm as f64, warm_secs)
    );
    for product in 0..args.relist.min(products) {
        http.post(format!("{base}/_sim/stockx/catalog/relist"))
            .json(&serde_json::json!({"styleId": format!("BENCH-{product:05}")}))
            .send()
            .await?
            .error_for_status()?;
    }
    // Measured: whole rounds over every key, each in another order.
    let before = stats(&http, &base).await?;
    let started = Instant::now();
    let mut lookups = 0u64;
    for round_index in 1..=rounds {
        lookups += round(&context, &ledger, &keys, round_index).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let calls = stats(&http, &base).await?.since(&before);
    let ratio = calls.total() as f64 / lookups.max(1) as f64;
    println!(
        "  measured: {lookups} lookups, {} calls (search {}, variants {}, market {}), {} answered 429",
        calls.total(),
        calls.search,
        calls.variants,
        calls.market,
        calls.throttled
    );
    println!(
        "  calls per market-data lookup after warm-up: {ratio:.4} (floor 1.0000, target <= 1.05: {}), {:.0} lookups/s",
        if ratio <= 1.05 { "met" } else { "MISSED" },
        super::ratio(lookups as f64, secs)
    );
    stop.cancel();
    // A simulator that panicked spoils the figures: say so and fail the bench.
    let server_ok = match server.await {
        Ok(_) => true,
        Err(err) => {
            eprintln!("bench catalog: the simulator task ended abnormally: {err}");
            false
        }
    };
    Ok(if ratio <= 1.05 && calls.throttled == 0 && server_ok {
        0
    } else {
        1
    })
}

/// Looks every key up once (in an order that depends on `round_index`) and drains them;
/// returns the lookups that succeeded.
async fn round(
    context: &StreamContext,
    ledger: &Arc<SqliteLedger>,
    keys: &[(String, String)],
    round_index: usize,
) -> anyhow::Result<u64> {
    let count = keys.len();
    // A stride coprime with the count visits every key once, in another order per round.
    let mut stride = 7919usize.saturating_mul(round_index.saturating_add(1)) % count.max(1);
    while gcd(stride, count) != 1 {
        stride = (stride + 1) % count;
    }
    let order: Vec<(String, String)> = (0..count)
        .map(|index| keys[index.saturating_mul(stride) % count].clone())
        .collect();
    let ledger_for_enqueue = Arc::clone(ledger);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (style, size) in order {
            store::enqueue(
                &*ledger_for_enqueue,
                &NewJob {
                    provider: "stockx".to_string(),
                    sku: style,
                    size: Some(size),
                    priority: JobPriority::Background,
                    source: "bench".to_string(),
                },
            )?;
        }
        Ok(())
    })
    .await??;
    let outcome = context.run_once().await?;
    let RunOutcome::Finished { applied, failed } = outcome else {
        anyhow::bail!("the drain stopped early: {outcome:?}");
    };
    if applied as usize != count || failed != 0 {
        anyhow::bail!("drained {applied} of {count} lookups ({failed} failed)");
    }
    Ok(applied as u64)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
