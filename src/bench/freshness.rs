//! `marketsync bench freshness`: the freshness scheduler at the providers' budgets.
//!
//! 10,000 tracked keys (split evenly across `--providers`) over `--hours` simulated hours
//! against the simulator over real HTTP, a real SQLite file, a real TokenManager, the
//! real drainers ([`JobRunner`]) and the real [`Scheduler`]. Time is scaled: one
//! simulated hour lasts `--hour` real seconds (default 60 s), and every duration with it
//! (stale_after = 1 simulated hour, a pass every simulated minute, the budgets).
//!
//! At the end of every simulated hour it counts the keys **fresh** (a succeeded lookup
//! within the last simulated hour) per provider and compares them with the most the
//! provider's budget allows in that hour ([`BenchRow`]: StockX 100 calls, Keepa its
//! refill of 20 tokens/min at 1 token per ASIN plus the starting balance in hour 1),
//! capped by the keys tracked. Target: ≥ 0.98 of it. It also injects manual refreshes
//! (priority 200) every `--manual-every` simulated minutes, alternating providers, and
//! checks each was served within one grant: at most one other request of its provider
//! went out between the enqueue and its own request. 429s come from the simulator's
//! counters.
//!
//! Scaling, and what it changes (see docs/jobs.md):
//! - Keepa: the simulator refills `20 × scale` tokens per real minute in steps of one
//!   simulated minute, starting at one hour of refill (1200); so its answers report
//!   `refillRate` × scale, which the TokenManager reads as a bucket 60 × that size: the
//!   bench runs with `reserve_share = 0` (no reserve to keep), and manual work is served
//!   first by priority alone.
//! - StockX: the simulator's hourly budget counts wall-clock hours, so it is lifted and
//!   the bench counts StockX calls per simulated hour itself (from the simulator's
//!   counter at every hour boundary) and fails on more than 100. The TokenManager bucket
//!   is `rate = 98.75 per hour, burst 1.25` ([`STOCKX_BURST`]): no window of an hour
//!   sees more than `burst + rate·1h = 100` grants, and 98.75 % of the budget is used.
//!
//! Provider rows: [`bench_row`]; alias and ebay get a row when their drainers exist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::now_ts;
use crate::quota::{BucketSpec, Pacer, QuotaBackend, QuotaConfig, QuotaHandle, TokenManager};
use crate::shapes::jobs::scheduler::{FreshnessSettings, ProviderAccounts, Scheduler};
use crate::shapes::jobs::worker::JobRunner;
use crate::shapes::{StreamContext, StreamWork};
use crate::store::jobs::{self as store, JobPriority, JobState, NewJob};
use crate::store::{LedgerStore, SqliteLedger};

/// The StockX bucket's burst: `rate = (100 − burst)/h` keeps every window of an hour
/// (a clock hour included) within 100 calls, and a burst above 1 lets a grant wait up
/// to `burst − 1` grant intervals for the drainer (its claim and write between two
/// calls) without losing refill.
const STOCKX_BURST: f64 = 1.25;

/// Options of `marketsync bench freshness`.
#[derive(Debug, clap::Args)]
pub struct BenchFreshnessArgs {
    /// Tracked keys in all, split evenly across the providers.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Job providers, comma-separated (stockx, keepa; alias and ebay once they drain).
    #[arg(long, default_value = "stockx,keepa", value_delimiter = ',')]
    pub providers: Vec<String>,
    /// Simulated hours.
    #[arg(long, default_value_t = 6)]
    pub hours: u32,
    /// Real seconds one simulated hour lasts (whole seconds, 10 to 3600).
    #[arg(long, default_value_t = 60)]
    pub hour: u64,
    /// Simulated minutes between two manual refreshes.
    #[arg(long, default_value_t = 15)]
    pub manual_every: u64,
}

/// One provider's budget as the bench drives it: the row the merge adds for alias and
/// ebay.
#[derive(Debug, Clone, Copy)]
pub struct BenchRow {
    pub provider: &'static str,
    /// The account's stream.
    pub stream: &'static str,
    /// Requests (StockX) or tokens (Keepa) per simulated hour.
    pub per_hour: f64,
    /// Tokens the account holds at the start (Keepa: one hour of refill), 0 otherwise.
    pub starting_balance: f64,
    /// Keys one token buys.
    pub keys_per_token: f64,
}

/// The bench row of `provider`.
pub fn bench_row(provider: &str) -> Option<BenchRow> {
    match provider {
        "stockx" => Some(BenchRow {
            provider: "stockx",
            stream: "market_data",
            per_hour: 100.0,
            starting_balance: 0.0,
            keys_per_token: 1.0,
        }),
        "keepa" => Some(BenchRow {
            provider: "keepa",
            stream: "products",
            per_hour: 20.0 * 60.0,
            starting_balance: 20.0 * 60.0,
            keys_per_token: 1.0,
        }),
        _ => None,
    }
}

/// Runs the benchmark; prints the figures. Exit 1 when a target is missed.
pub fn run(args: BenchFreshnessArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

struct Manual {
    provider: &'static str,
    sku: String,
    job: i64,
    /// The provider's request counter when it was queued.
    before: u64,
    queued: tokio::time::Instant,
}

async fn bench(args: BenchFreshnessArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (10..=3600).contains(&args.hour),
        "--hour: {} s is out of range; use 10 to 3600",
        args.hour
    );
    anyhow::ensure!((1..=48).contains(&args.hours), "--hours: use 1 to 48");
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.keys),
        "--keys: use 1 to 1000000"
    );
    let mut rows = Vec::new();
    for name in &args.providers {
        let row = bench_row(name.trim()).with_context(|| {
            format!("--providers: {name:?} has no bench row; expected stockx or keepa")
        })?;
        if !rows
            .iter()
            .any(|known: &BenchRow| known.provider == row.provider)
        {
            rows.push(row);
        }
    }
    anyhow::ensure!(!rows.is_empty(), "--providers: name at least one provider");
    let hour = Duration::from_secs(args.hour);
    let scale = 3600.0 / hour.as_secs_f64();
    let minute = hour / 60;

    let dir = tempfile::tempdir().context("creating a temp directory")?;
    let mut sim_config = crate::sim::SimConfig::default();
    sim_config.stockx.hourly_budget = u32::MAX;
    // Whole tokens a minute (Keepa's refillRate is an integer); scale is at most 360.
    sim_config.keepa.refill_rate = (20.0 * scale).round() as u32;
    sim_config.keepa.refill_period = minute;
    sim_config.keepa.initial_tokens = Some(1200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sim = crate::sim::Simulator::new(sim_config);
    let stop = CancellationToken::new();
    let sim_task = {
        let stopped = stop.clone();
        tokio::spawn(async move {
            crate::sim::serve(listener, sim, async move { stopped.cancelled().await }).await
        })
    };

    let mut text = format!(
        "data_dir = \"{}\"\n[simulator]\nenabled = true\n",
        dir.path().display()
    );
    for row in &rows {
        text.push_str(&format!(
            "\n[[accounts]]\nid = \"bench-{0}\"\nprovider = \"{0}\"\n[accounts.streams.{1}]\n",
            row.provider, row.stream
        ));
        if row.provider == "keepa" {
            text.push_str("batch = 100\n");
        }
    }
    let config = Config::parse(&text, "<bench freshness>")?;
    let ledger = Arc::new(SqliteLedger::open(&config.database_path())?);
    let mut quota_config = QuotaConfig::new(QuotaBackend::InProcess)
        .with_spec(
            "stockx",
            "*",
            BucketSpec::new((100.0 - STOCKX_BURST) / hour.as_secs_f64(), STOCKX_BURST),
        )
        .with_spec("keepa", "*", BucketSpec::new(20.0 * scale / 60.0, 1200.0));
    quota_config.reserve_share = 0.0;
    let (actor, _join) = TokenManager::spawn(quota_config.clone()).await?;
    let quota = QuotaHandle::new(actor);
    let http = reqwest::Client::new();

    // Tracked keys.
    let per_provider = args.keys / rows.len();
    let mut keys: HashMap<&'static str, Vec<(String, Option<String>)>> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        let count = per_provider + usize::from(index < args.keys % rows.len());
        let list: Vec<(String, Option<String>)> = (0..count)
            .map(|n| match row.provider {
                "keepa" => (format!("B0{n:08}"), None),
                other => (
                    format!("{}-{n:06}", other.to_ascii_uppercase()),
                    Some("10".to_string()),
                ),
            })
            .collect();
        let items: Vec<NewJob> = list
            .iter()
            .map(|(sku, size)| NewJob {
                provider: row.provider.to_string(),
                sku: sku.clone(),
                size: size.clone(),
                priority: JobPriority::Background,
                source: "bench".to_string(),
            })
            .collect();
        let ledger = Arc::clone(&ledger);
        tokio::task::spawn_blocking(move || {
            crate::store::tracked::track_many(&ledger, &items, "bench", now_ts())
        })
        .await??;
        keys.insert(row.provider, list);
    }

    // Start on a whole second, so hour windows match the ledger's whole-second stamps.
    let start_ts = now_ts() + 1;
    while now_ts() < start_ts {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "bench freshness: {} keys across {}, {} simulated hours of {} s each (scale {scale:.0}x), simulator over http on {addr}",
        args.keys,
        rows.iter().map(|row| row.provider).collect::<Vec<_>>().join(", "),
        args.hours,
        args.hour
    );
    println!("  load at start: {}", loadavg());

    // Drainers: one per account, looking again every tenth of a simulated minute when
    // the queue is empty (the daemon's stream interval).
    let cancel = CancellationToken::new();
    let mut drainers = Vec::new();
    for account in &config.accounts {
        let client = crate::shapes::jobs::build_client(account, &http, Some(addr))?;
        let pacer = Pacer::new(
            quota.clone(),
            account.provider.as_str(),
            account.quota_scope(),
        );
        let runner = Arc::new(JobRunner::new(client, Some(pacer), Arc::clone(&ledger)));
        let dyn_ledger: Arc<dyn LedgerStore> = ledger.clone();
        let context = StreamContext {
            account: Arc::new(account.clone()),
            stream: account.streams[0].clone(),
            ledger: dyn_ledger,
            work: StreamWork::shape(runner),
            documents_dir: dir.path().join("documents"),
            owner: "bench:1@localhost".to_string(),
            cancel: cancel.clone(),
            abort: cancel.clone(),
            progress: None,
            chaos: None,
            metrics: Default::default(),
            permits: Default::default(),
            polls: None,
        };
        let cancel = cancel.clone();
        let idle = minute / 10;
        drainers.push(tokio::spawn(async move {
            while !cancel.is_cancelled() {
                if let Err(err) = context.run_once().await {
                    eprintln!("bench freshness: drain failed: {err}");
                }
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
            }
        }));
    }

    let settings = FreshnessSettings {
        enabled: true,
        interval: minute,
        max_per_pass: 2_000,
        stale_after: rows
            .iter()
            .map(|row| (row.provider.to_string(), hour))
            .collect(),
        ..FreshnessSettings::default()
    };
    let providers = config
        .accounts
        .iter()
        .map(|account| ProviderAccounts {
            provider: account.provider.as_str().to_string(),
            scopes: vec![account.quota_scope().to_string()],
        })
        .collect();
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&ledger),
        quota.clone(),
        quota_config,
        providers,
        settings,
        None,
    ));
    let scheduler_task = tokio::spawn(Arc::clone(&scheduler).run(cancel.clone()));

    let base = format!("http://{addr}");
    let mut manuals: Vec<Manual> = Vec::new();
    let mut served_manual: Vec<(&'static str, u64, Duration)> = Vec::new();
    let mut stockx_calls_at_boundary = vec![sim_counter(&http, &base, "stockx").await?];
    let mut results = Vec::new();
    let manual_every = minute * u32::try_from(args.manual_every.clamp(1, 600)).unwrap_or(15);
    let mut next_manual = tokio::time::Instant::now() + manual_every;
    let mut manual_index = 0usize;
    let mut ok = true;
    for hour_index in 1..=i64::from(args.hours) {
        let boundary = start_ts + hour_index * args.hour as i64;
        // Until the boundary (left within the 20 ms poll of its first second): inject
        // manual refreshes and watch them.
        while now_ts() < boundary {
            if tokio::time::Instant::now() >= next_manual {
                next_manual += manual_every;
                let row = rows[manual_index % rows.len()];
                manual_index += 1;
                let list = &keys[row.provider];
                let (sku, size) = list[(manual_index * 7919) % list.len()].clone();
                let before = sim_counter(&http, &base, row.provider).await?;
                let job = NewJob {
                    provider: row.provider.to_string(),
                    sku: sku.clone(),
                    size,
                    priority: JobPriority::Manual,
                    source: "bench-manual".to_string(),
                };
                let ledger_for = Arc::clone(&ledger);
                let id = tokio::task::spawn_blocking(move || store::enqueue(&ledger_for, &job))
                    .await??
                    .id();
                manuals.push(Manual {
                    provider: row.provider,
                    sku,
                    job: id,
                    before,
                    queued: tokio::time::Instant::now(),
                });
            }
            let mut still = Vec::new();
            for manual in manuals.drain(..) {
                let ledger_for = Arc::clone(&ledger);
                let id = manual.job;
                let job =
                    tokio::task::spawn_blocking(move || store::get_job(&ledger_for, id)).await??;
                match job.map(|job| job.state) {
                    Some(JobState::Succeeded) => {
                        let before_it = requests_before(
                            &http,
                            &base,
                            manual.provider,
                            &manual.sku,
                            manual.before,
                        )
                        .await?;
                        served_manual.push((manual.provider, before_it, manual.queued.elapsed()));
                    }
                    Some(JobState::Pending | JobState::Running) => still.push(manual),
                    other => {
                        eprintln!(
                            "bench freshness: manual job {} of {} ended {other:?}",
                            manual.job, manual.provider
                        );
                        ok = false;
                    }
                }
            }
            manuals = still;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stockx_calls_at_boundary.push(sim_counter(&http, &base, "stockx").await?);
        let mut line = format!("  hour {hour_index}:");
        for (index, row) in rows.iter().enumerate() {
            let tracked = keys[row.provider].len() as f64;
            let provider = row.provider.to_string();
            let ledger_for = Arc::clone(&ledger);
            let (from, to) = (boundary - args.hour as i64, boundary);
            let fresh =
                tokio::task::spawn_blocking(move || fresh_in(&ledger_for, &provider, from, to))
                    .await??;
            let budget = row.per_hour
                + if hour_index == 1 {
                    row.starting_balance
                } else {
                    0.0
                };
            let max = (budget * row.keys_per_token).min(tracked);
            let ratio = fresh as f64 / max.max(1.0);
            results.push((row.provider, hour_index, fresh, max, ratio));
            line.push_str(&format!(
                "{} {} {fresh}/{} fresh (max {max:.0}, ratio {ratio:.3})",
                if index == 0 { "" } else { " |" },
                row.provider,
                tracked
            ));
        }
        println!("{line}");
    }
    cancel.cancel();
    // A task that panicked spoils the figures: say so and fail the bench.
    let mut panicked = 0usize;
    if let Err(err) = scheduler_task.await {
        eprintln!("bench freshness: the scheduler task ended abnormally: {err}");
        panicked += 1;
    }
    for drainer in drainers {
        if let Err(err) = drainer.await {
            eprintln!("bench freshness: a drainer task ended abnormally: {err}");
            panicked += 1;
        }
    }

    // Figures.
    let worst = results
        .iter()
        .map(|(_, _, _, _, ratio)| *ratio)
        .fold(f64::INFINITY, f64::min);
    let total_fresh: i64 = results.iter().map(|(_, _, fresh, _, _)| *fresh).sum();
    let total_max: f64 = results.iter().map(|(_, _, _, max, _)| *max).sum();
    println!(
        "  fresh share against the budgets' maximum: overall {:.3}, worst provider-hour {worst:.3} (target >= 0.98)",
        total_fresh as f64 / total_max.max(1.0)
    );
    let mut throttled = Vec::new();
    for row in &rows {
        let stats = sim_stats(&http, &base, row.provider).await?;
        let count = stats["throttled"].as_u64().unwrap_or(0);
        throttled.push(format!("{} {count}", row.provider));
        ok &= count == 0;
    }
    println!("  429s: {}", throttled.join(", "));
    if rows.iter().any(|row| row.provider == "stockx") {
        let per_hour: Vec<u64> = stockx_calls_at_boundary
            .windows(2)
            .map(|pair| pair[1].saturating_sub(pair[0]))
            .collect();
        let most = per_hour.iter().copied().max().unwrap_or(0);
        println!("  stockx calls per simulated hour: {per_hour:?} (budget 100)");
        ok &= most <= 100;
    }
    let within = served_manual
        .iter()
        .filter(|(_, before, _)| *before <= 1)
        .count();
    let mut waits: Vec<Duration> = served_manual.iter().map(|(_, _, wait)| *wait).collect();
    waits.sort();
    let median = waits.get(waits.len() / 2).copied().unwrap_or_default();
    let longest = waits.last().copied().unwrap_or_default();
    println!(
        "  manual refreshes: {} served, {within} within one grant (other requests before it: max {}), wait median {} ms / max {} ms ({} still queued at the end)",
        served_manual.len(),
        served_manual.iter().map(|(_, before, _)| *before).max().unwrap_or(0),
        median.as_millis(),
        longest.as_millis(),
        manuals.len()
    );
    println!("  load at end: {}", loadavg());
    ok &= within == served_manual.len() && worst >= 0.98 && panicked == 0;
    stop.cancel();
    if let Err(err) = sim_task.await {
        eprintln!("bench freshness: the simulator task ended abnormally: {err}");
        ok = false;
    }
    Ok(if ok { 0 } else { 1 })
}

/// Distinct keys of `provider` with a succeeded lookup in `[from, to)` (unix s).
fn fresh_in(ledger: &SqliteLedger, provider: &str, from: i64, to: i64) -> anyhow::Result<i64> {
    Ok(ledger.with_read_conn(|conn| {
        conn.query_row(
            "SELECT COUNT(DISTINCT j.dedupe_key) FROM jobs j JOIN tracked_items t ON t.dedupe_key = j.dedupe_key
             WHERE j.provider = ?1 AND j.state = 'succeeded' AND j.finished_at >= ?2 AND j.finished_at < ?3",
            rusqlite::params![provider, from, to],
            |row| row.get(0),
        )
        .map_err(crate::store::LedgerError::Sqlite)
    })?)
}

async fn sim_stats(
    http: &reqwest::Client,
    base: &str,
    provider: &str,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{base}/_sim/{provider}/stats");
    let response = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    response.json().await.with_context(|| format!("GET {url}"))
}

/// The provider's request counter in the simulator.
async fn sim_counter(http: &reqwest::Client, base: &str, provider: &str) -> anyhow::Result<u64> {
    let stats = sim_stats(http, base, provider).await?;
    let field = match provider {
        "stockx" => "market_data_calls",
        _ => "served",
    };
    Ok(stats[field].as_u64().unwrap_or(0))
}

/// Requests of `provider` the simulator served after `before` and ahead of the one that
/// carried `sku`.
async fn requests_before(
    http: &reqwest::Client,
    base: &str,
    provider: &str,
    sku: &str,
    before: u64,
) -> anyhow::Result<u64> {
    let stats = sim_stats(http, base, provider).await?;
    match provider {
        "keepa" => {
            let served = stats["served"].as_u64().unwrap_or(0);
            let since = served.saturating_sub(before) as usize;
            let requests = stats["requests"].as_array().cloned().unwrap_or_default();
            let recent = &requests[requests.len().saturating_sub(since)..];
            let position = recent.iter().position(|request| {
                request
                    .as_array()
                    .is_some_and(|asins| asins.iter().any(|asin| asin.as_str() == Some(sku)))
            });
            Ok(position.map_or(u64::MAX, |at| at as u64))
        }
        // StockX serves one key per request: the requests since, less its own.
        _ => {
            let calls = stats["market_data_calls"].as_u64().unwrap_or(0);
            Ok(calls.saturating_sub(before).saturating_sub(1))
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
