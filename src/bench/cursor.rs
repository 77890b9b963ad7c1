//! `marketsync bench ebay`: catch-up of one eBay account `days` behind with
//! `orders_per_day` orders a day, against the simulator served in process over real HTTP
//! and a real SQLite file, paced by a TokenManager whose getOrders bucket is `rate`/s with
//! `burst` (the simulator's own daily quota is far above the run).
//!
//! Figures: wall time, the quota-bound minimum (`(calls − burst) / rate`: the bucket
//! starts full, then every further call waits for one token), orders applied per second,
//! and memory: the process's peak RSS (`VmHWM`) and the RSS sampled every 5 ms while
//! paging, against the RSS before the run. The simulator runs in the same process, so
//! its page building is included in the figure: an upper bound for the daemon's own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::provider::ebay::{EbayClient, EbayCredentials, EbayEndpoints};
use crate::quota::{BucketSpec, Pacer, QuotaBackend, QuotaConfig, QuotaHandle, TokenManager};
use crate::shapes::cursor::CursorRunner;
use crate::shapes::{RunOutcome, StreamContext, StreamWork};
use crate::sim::ebay::EbaySimConfig;
use crate::sim::{SimConfig, Simulator};
use crate::store::{LedgerStore, SqliteLedger};

/// Options of `marketsync bench ebay`.
#[derive(Debug, clap::Args)]
pub struct BenchEbayArgs {
    /// Orders the simulated seller receives per day.
    #[arg(long, default_value_t = 500)]
    pub orders_per_day: u32,
    /// How far behind the account starts.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Items per page (1 to 200).
    #[arg(long, default_value_t = 200)]
    pub page_limit: u32,
    /// The getOrders bucket's rate (calls per second) the TokenManager paces with.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The getOrders bucket's burst.
    #[arg(long, default_value_t = 20.0)]
    pub burst: f64,
}

/// Runs the benchmark; prints the figures. Exit code 0.
pub fn run(args: BenchEbayArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

fn rss_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn bench(args: BenchEbayArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=200).contains(&args.page_limit),
        "--page-limit {} is out of range; eBay serves 1 to 200 items a page",
        args.page_limit
    );
    anyhow::ensure!(
        args.rate > 0.0 && args.burst >= 1.0,
        "--rate must be above 0 and --burst at least 1"
    );
    let dir = tempfile::tempdir().context("creating a temp directory")?;
    let sim = Simulator::new(SimConfig {
        ebay: EbaySimConfig {
            orders_per_day: args.orders_per_day,
            ..EbaySimConfig::default()
        },
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the simulator")?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(crate::sim::serve(listener, Arc::clone(&sim), async move {
        stopped.cancelled().await
    }));
    let base = format!("http://{addr}");

    let text = format!(
        r#"data_dir = "{data}"
[[accounts]]
id = "bench-ebay"
provider = "ebay"
endpoint = "{base}"
token_url = "{base}/identity/v1/oauth2/token"
[accounts.credentials]
client_id_env = "BENCH_EBAY_CLIENT_ID"
client_secret_env = "BENCH_EBAY_CLIENT_SECRET"
refresh_token_env = "BENCH_EBAY_REFRESH_TOKEN"
[accounts.streams.orders]
start = "{days}days"
page_limit = {limit}
"#,
        data = dir.path().display(),
        days = args.days,
        limit = args.page_limit,
    );
    let config = Config::parse(&text, "<bench ebay>").context("bench configuration")?;
    let account = config.accounts[0].clone();
    let stream = account.stream("orders").context("bench stream")?.clone();
    let ledger = Arc::new(SqliteLedger::open(&config.database_path())?);

    let quota_config = QuotaConfig::new(QuotaBackend::InProcess).with_spec(
        "ebay",
        "getOrders",
        BucketSpec::new(args.rate, args.burst),
    );
    let (actor, quota_join) = TokenManager::spawn(quota_config)
        .await
        .map_err(|err| anyhow::anyhow!("starting the token manager: {err}"))?;
    let pacer = Pacer::new(QuotaHandle::new(actor.clone()), "ebay", "bench-ebay");
    let client = EbayClient::new(
        reqwest::Client::new(),
        EbayEndpoints::new(&base, &format!("{base}/identity/v1/oauth2/token")),
        EbayCredentials {
            client_id: "bench-client".to_string(),
            client_secret: "bench-secret".to_string(),
            refresh_token: Some("bench-seller".to_string()),
        },
        &account.marketplace,
    );
    let runner = CursorRunner::new(Arc::new(client), Some(pacer), Arc::clone(&ledger));
    let dyn_ledger: Arc<dyn LedgerStore> = ledger.clone();
    let cancel = CancellationToken::new();
    let context = StreamContext {
        account: Arc::new(account),
        stream,
        ledger: dyn_ledger,
        work: StreamWork::shape(Arc::new(runner)),
        documents_dir: dir.path().join("documents"),
        owner: "bench:1@localhost".to_string(),
        abort: cancel.clone(),
        cancel,
        progress: None,
        chaos: None,
        metrics: Default::default(),
        permits: Default::default(),
        polls: None,
        lease_deadline: None,
    };

    println!(
        "ebay catch-up: {} days behind, {} orders/day, page_limit {}, getOrders bucket {}/s burst {} (in-process TokenManager, no rate margin)",
        args.days, args.orders_per_day, args.page_limit, args.rate, args.burst
    );
    let rss_before_kb = rss_kb("VmRSS:").unwrap_or(0);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampled_peak = Arc::new(AtomicU64::new(rss_before_kb));
    let sampler = {
        let (sampling, sampled_peak) = (Arc::clone(&sampling), Arc::clone(&sampled_peak));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb("VmRSS:") {
                    sampled_peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let outcome = context.run_once().await?;
    let wall = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();

    let windows = match outcome {
        RunOutcome::Finished { applied, failed: 0 } => applied,
        other => anyhow::bail!("the catch-up did not finish: {other:?}"),
    };
    let snapshot = crate::store::cursors::CursorStore::cursor_snapshot(
        ledger.as_ref(),
        "bench-ebay",
        "orders",
    )?
    .context("no cursor after the run")?;
    let calls = reqwest::get(format!("{base}/_sim/ebay/stats"))
        .await?
        .json::<crate::sim::ebay::EbayStats>()
        .await?
        .calls("ebay.getOrders");
    let minimum = ((calls as f64 - args.burst).max(0.0)) / args.rate;
    let seconds = wall.as_secs_f64();
    println!("  windows applied      {windows} (each at most 24h)");
    println!("  getOrders calls      {calls}");
    println!("  orders stored        {}", snapshot.resources);
    println!(
        "  wall time            {seconds:.2} s ({:.0} orders/s)",
        super::ratio(snapshot.resources as f64, seconds)
    );
    println!(
        "  quota-bound minimum  {minimum:.2} s = ({calls} calls - burst {}) / {}/s; wall/minimum {:.3}",
        args.burst,
        args.rate,
        if minimum > 0.0 { seconds / minimum } else { f64::NAN }
    );
    println!(
        "  RSS                  before {:.1} MB, sampled peak while paging {:.1} MB, process peak (VmHWM) {:.1} MB",
        rss_before_kb as f64 / 1024.0,
        sampled_peak.load(Ordering::Relaxed) as f64 / 1024.0,
        crate::bench::peak_rss_mb().unwrap_or(0.0)
    );

    actor.stop(None);
    let _ = quota_join.await;
    stop.cancel();
    crate::bench::jobs::report_server_end(server.await);
    Ok(0)
}
