//! `marketsync bench freshness`: the freshness scheduler at the providers' budgets.
//!
//! 10,000 tracked keys (split evenly across `--providers`: StockX, Alias, eBay and Keepa
//! by default) over `--hours` simulated hours against the simulator over real HTTP, a
//! real SQLite file, a real TokenManager, the real drainers ([`JobRunner`]) and the real
//! [`Scheduler`]. Time is scaled: one simulated hour lasts `--hour` real seconds (default
//! 60 s), and every duration with it (stale_after = 1 simulated hour, a pass every
//! simulated minute, the budgets).
//!
//! Keys are shaped as trackers hold them: StockX, Alias and eBay keys are styles ×
//! `--sizes` sizes (20: US 4.5 to 13 in half sizes, 14, 15), Keepa keys ASINs.
//!
//! At the end of every simulated hour it counts the keys **fresh** (a succeeded lookup
//! within that hour) per provider and compares them with the **theoretical maximum**
//! ([`ideal_fresh`]): the scheduler's own order (new keys first, then the stalest)
//! replayed minute by minute with the provider's whole budget (StockX 100 calls/h,
//! Alias 200, eBay 150, Keepa its refill of 20 tokens/min plus its starting balance of
//! 1,200) and what each key really costs: a style not yet in the catalog cache costs its
//! catalog calls once (StockX 2: search and variants; Alias 1: the search), then 1 call
//! per size; eBay 1 call and Keepa 1 token per key. Target: ≥ 0.98 of it. It also
//! injects manual refreshes (priority 200) every `--manual-every` simulated minutes,
//! rotating through the providers, of keys already priced (a person refreshes a price
//! they see), and checks each was served within one grant: at most one other request of
//! its provider went out between its enqueue and its own request. The maximum is that
//! of the workload offered, refreshes included: its replay serves the same refreshes
//! (same keys, from the simulated minute each was queued, first) at what they cost, and
//! counts a refreshed key fresh in that hour, as the run's count does. 429s come from
//! the simulator's counters.
//!
//! Scaling, and what it changes (see docs/jobs.md):
//! - Keepa: the simulator refills `20 × scale` tokens per real minute in steps of one
//!   simulated minute, starting at one hour of refill (1200); so its answers report
//!   `refillRate` × scale, which the TokenManager reads as a bucket 60 × that size: the
//!   bench runs with `reserve_share = 0` (no reserve to keep), and manual work is served
//!   first by priority alone.
//! - StockX and Alias: the simulators' hourly budgets count wall-clock hours, so they
//!   are lifted and the bench counts every call (catalog calls too) per simulated hour
//!   itself (from the simulators' counters at every hour boundary) and fails on more
//!   than the budget; eBay likewise (its simulator enforces eBay's 5,000 calls a day).
//!   Each TokenManager bucket is the daemon's hourly budget
//!   ([`BucketSpec::hourly_budget`], one simulated hour long): paced at the full
//!   `budget` an hour with a burst of `--burst` (default [`BURST`]), and capped at
//!   `budget` grants in any window of a simulated hour (a clock hour included) by the
//!   TokenManager's log of grants.

use std::collections::{HashMap, VecDeque};
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

/// The default burst of the hourly-budget buckets: a burst above 1 lets the drainer be
/// up to `burst − 1` grant intervals late (its claim and write between two calls, a
/// loaded machine) without losing refill; the window cap keeps every hour within the
/// budget whatever the burst (with a bucket alone it had to be 1.25 at a rate of
/// `budget − 1.25` an hour).
const BURST: f64 = 5.0;

/// The sizes a style is tracked in (US; every simulated StockX product and Alias item
/// has them).
const SIZES: &[&str] = &[
    "4.5", "5", "5.5", "6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "11.5",
    "12", "12.5", "13", "14", "15",
];

/// Options of `marketsync bench freshness`.
#[derive(Debug, clap::Args)]
pub struct BenchFreshnessArgs {
    /// Tracked keys in all, split evenly across the providers.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Job providers, comma-separated (stockx, alias, ebay, keepa).
    #[arg(long, default_value = "stockx,alias,ebay,keepa", value_delimiter = ',')]
    pub providers: Vec<String>,
    /// Sizes per style of the StockX, Alias and eBay keys (1 to 20).
    #[arg(long, default_value_t = 20)]
    pub sizes: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 6)]
    pub hours: u32,
    /// Real seconds one simulated hour lasts (whole seconds, 10 to 3600).
    #[arg(long, default_value_t = 60)]
    pub hour: u64,
    /// Simulated minutes between two manual refreshes.
    #[arg(long, default_value_t = 15)]
    pub manual_every: u64,
    /// Burst of the StockX, Alias and eBay buckets (1 to 50); their hourly cap keeps
    /// every hour within the budget whatever it is.
    #[arg(long, default_value_t = BURST)]
    pub burst: f64,
}

/// One provider's budget and costs as the bench drives it.
#[derive(Debug, Clone, Copy)]
pub struct BenchRow {
    pub provider: &'static str,
    /// The account's stream.
    pub stream: &'static str,
    /// Calls (StockX, Alias, eBay) or tokens (Keepa) per simulated hour.
    pub per_hour: f64,
    /// Tokens the account holds at the start (Keepa: one hour of refill), 0 otherwise.
    pub starting_balance: f64,
    /// Catalog calls a style costs before its first price while not cached (StockX:
    /// search and variants; Alias: the search); 0 for providers without a catalog.
    pub catalog_calls: u32,
    /// Keys are styles × sizes (else one key per item: Keepa ASINs).
    pub sized: bool,
    /// The style id prefix of the provider's keys.
    pub prefix: &'static str,
}

/// The bench row of `provider`.
pub fn bench_row(provider: &str) -> Option<BenchRow> {
    match provider {
        "stockx" => Some(BenchRow {
            provider: "stockx",
            stream: "market_data",
            per_hour: 100.0,
            starting_balance: 0.0,
            catalog_calls: 2,
            sized: true,
            prefix: "SX",
        }),
        "alias" => Some(BenchRow {
            provider: "alias",
            stream: "market_data",
            per_hour: 200.0,
            starting_balance: 0.0,
            catalog_calls: 1,
            sized: true,
            prefix: "AL",
        }),
        "ebay" => Some(BenchRow {
            provider: "ebay",
            stream: "market_prices",
            per_hour: 150.0,
            starting_balance: 0.0,
            catalog_calls: 0,
            sized: true,
            prefix: "EB",
        }),
        "keepa" => Some(BenchRow {
            provider: "keepa",
            stream: "products",
            per_hour: 20.0 * 60.0,
            starting_balance: 20.0 * 60.0,
            catalog_calls: 0,
            sized: false,
            prefix: "B0",
        }),
        _ => None,
    }
}

/// The keys of `row`, `count` of them, in the order the scheduler takes new keys (all
/// tracked at once: by dedupe key), with the style index of each.
pub fn bench_keys(
    row: &BenchRow,
    count: usize,
    sizes: usize,
) -> Vec<(String, Option<String>, usize)> {
    if !row.sized {
        return (0..count)
            .map(|n| (format!("{}{n:08}", row.prefix), None, n))
            .collect();
    }
    let sizes = sizes.clamp(1, SIZES.len());
    let mut keys: Vec<(String, Option<String>, usize)> = (0..count)
        .map(|n| {
            let style = n / sizes;
            (
                format!("{}{style:05}-100", row.prefix),
                Some(SIZES[n % sizes].to_string()),
                style,
            )
        })
        .collect();
    keys.sort_by(|a, b| {
        store::dedupe_key(row.provider, &a.0, a.1.as_deref()).cmp(&store::dedupe_key(
            row.provider,
            &b.0,
            b.1.as_deref(),
        ))
    });
    keys
}

/// The theoretical maximum: keys fresh in each of `hours` simulated hours when the
/// budget (`per_hour`, plus `starting` at the start) is spent without loss, minute by
/// minute, in the scheduler's order (never-looked-at keys first in `style_of` order,
/// then the stalest once `stale_minutes` old), a key costing 1 call or token plus
/// `catalog_calls` when its style is not cached yet (the cache outlives the run). A key
/// counts once per hour. Unspent tokens are kept up to one hour's worth (Keepa's tokens
/// expire after an hour; an hourly call budget does not carry over).
///
/// `manual` is the workload's manual refreshes, `(simulated minute, key index)`: each
/// is served first from its minute on, as the drainer claims it before anything else,
/// at what it costs in the run (1 call or token, plus the catalog calls if its style is
/// still cold), and does what a succeeded manual job does in the run: the key counts
/// as fresh in that hour (the bench counts every succeeded job of a tracked key) and
/// its staleness starts again (the scheduler reads the key's last succeeded job), so it
/// leaves the stale queue until it turns stale again; a key never looked at that a
/// refresh served is not new any more. Indices outside `style_of` are ignored.
pub fn ideal_fresh(
    per_hour: f64,
    starting: f64,
    catalog_calls: u32,
    style_of: &[usize],
    hours: u32,
    stale_minutes: u64,
    manual: &[(u64, usize)],
) -> Vec<u64> {
    let per_minute = per_hour / 60.0;
    let cap = per_hour.max(starting) + per_minute;
    let mut tokens = starting;
    let mut warm: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut next_new = 0usize;
    // The minute each key was last served (a manual refresh included).
    let mut last: Vec<Option<u64>> = vec![None; style_of.len()];
    // (key, minute served), oldest first: the stalest is always at the front once the
    // entries a later serving of the same key superseded are dropped.
    let mut served: VecDeque<(usize, u64)> = VecDeque::new();
    let mut manual: Vec<(u64, usize)> = manual
        .iter()
        .copied()
        .filter(|&(_, key)| key < style_of.len())
        .collect();
    manual.sort_by_key(|&(minute, _)| minute);
    let mut next_manual = 0usize;
    let mut due: VecDeque<usize> = VecDeque::new();
    let mut fresh = Vec::new();
    for hour in 0..u64::from(hours) {
        let mut this_hour: std::collections::HashSet<usize> = std::collections::HashSet::new();
        for minute in hour * 60..(hour + 1) * 60 {
            tokens = (tokens + per_minute).min(cap);
            while let Some(&(at, key)) = manual.get(next_manual) {
                if at > minute {
                    break;
                }
                due.push_back(key);
                next_manual += 1;
            }
            loop {
                while next_new < style_of.len() && last[next_new].is_some() {
                    next_new += 1;
                }
                while let Some(&(key, at)) = served.front() {
                    if last[key] == Some(at) {
                        break;
                    }
                    served.pop_front();
                }
                // A manual refresh first, then a new key, then the stalest if stale.
                let (key, is_manual) = if let Some(&key) = due.front() {
                    (key, true)
                } else if next_new < style_of.len() {
                    (next_new, false)
                } else {
                    match served.front() {
                        Some(&(key, at)) if at + stale_minutes <= minute => (key, false),
                        _ => break,
                    }
                };
                let style = style_of[key];
                let cost = 1.0
                    + if warm.contains(&style) {
                        0.0
                    } else {
                        f64::from(catalog_calls)
                    };
                // (The per-minute sums carry rounding; a whole token is a whole token.)
                if tokens + 1e-9 < cost {
                    break;
                }
                tokens -= cost;
                warm.insert(style);
                if is_manual {
                    due.pop_front();
                }
                last[key] = Some(minute);
                served.push_back((key, minute));
                this_hour.insert(key);
            }
        }
        fresh.push(this_hour.len() as u64);
    }
    fresh
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
    size: Option<String>,
    job: i64,
    /// The provider's request counter when it was queued.
    before: u64,
    queued: tokio::time::Instant,
}

/// One provider's figures for one simulated hour.
struct HourFigure {
    provider: &'static str,
    fresh: i64,
    max: u64,
}

impl HourFigure {
    fn ratio(&self) -> f64 {
        self.fresh as f64 / (self.max.max(1)) as f64
    }
}

async fn bench(args: BenchFreshnessArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (10..=3600).contains(&args.hour),
        "--hour: {} s is out of range; use 10 to 3600",
        args.hour
    );
    anyhow::ensure!((1..=48).contains(&args.hours), "--hours: use 1 to 48");
    anyhow::ensure!(
        args.burst.is_finite() && (1.0..=50.0).contains(&args.burst),
        "--burst: {} is out of range; use 1 to 50",
        args.burst
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.keys),
        "--keys: use 1 to 1000000"
    );
    anyhow::ensure!(
        (1..=SIZES.len()).contains(&args.sizes),
        "--sizes: use 1 to {}",
        SIZES.len()
    );
    let mut rows = Vec::new();
    for name in &args.providers {
        let row = bench_row(name.trim()).with_context(|| {
            format!("--providers: {name:?} has no bench row; expected stockx, alias, ebay or keepa")
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
    // Hourly budgets of the simulators count wall-clock hours: the bench counts calls
    // per simulated hour itself.
    sim_config.stockx.hourly_budget = u32::MAX;
    sim_config.alias.hourly_budget = u32::MAX;
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
    let mut quota_config = QuotaConfig::new(QuotaBackend::InProcess);
    for row in &rows {
        let spec = match row.provider {
            "keepa" => BucketSpec::new(20.0 * scale / 60.0, 1200.0),
            _ => BucketSpec::windowed(row.per_hour, hour, args.burst),
        };
        quota_config = quota_config.with_spec(row.provider, "*", spec);
    }
    quota_config.reserve_share = 0.0;
    let (actor, _join) = TokenManager::spawn(quota_config.clone()).await?;
    let quota = QuotaHandle::new(actor);
    let http = reqwest::Client::new();

    // Tracked keys, and what the theoretical maximum of each provider's hours replays:
    // the keys' styles in the scheduler's order, and (filled as the run injects them)
    // the manual refreshes.
    let per_provider = args.keys / rows.len();
    let mut keys: HashMap<&'static str, usize> = HashMap::new();
    let mut styles: HashMap<&'static str, Vec<usize>> = HashMap::new();
    let mut key_index: HashMap<&'static str, HashMap<String, usize>> = HashMap::new();
    let mut injected: HashMap<&'static str, Vec<(u64, usize)>> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        let count = per_provider + usize::from(index < args.keys % rows.len());
        let list = bench_keys(row, count, args.sizes);
        styles.insert(
            row.provider,
            list.iter().map(|(_, _, style)| *style).collect(),
        );
        key_index.insert(
            row.provider,
            list.iter()
                .enumerate()
                .map(|(at, (sku, size, _))| {
                    (store::dedupe_key(row.provider, sku, size.as_deref()), at)
                })
                .collect(),
        );
        injected.insert(row.provider, Vec::new());
        let items: Vec<NewJob> = list
            .iter()
            .map(|(sku, size, _)| NewJob {
                provider: row.provider.to_string(),
                sku: sku.clone(),
                size: size.clone(),
                priority: JobPriority::Background,
                source: "bench".to_string(),
            })
            .collect();
        let ledger = Arc::clone(&ledger);
        tokio::task::spawn_blocking(move || {
            crate::store::tracked::track_many(&*ledger, &items, "bench", now_ts())
        })
        .await??;
        keys.insert(row.provider, count);
    }

    // Start on a whole second, so hour windows match the ledger's whole-second stamps.
    let start_ts = now_ts() + 1;
    while now_ts() < start_ts {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "bench freshness: {} keys across {} ({} sizes per style; keepa ASINs), {} simulated hours of {} s each (scale {scale:.0}x), simulator over http on {addr}",
        args.keys,
        rows.iter().map(|row| row.provider).collect::<Vec<_>>().join(", "),
        args.sizes,
        args.hours,
        args.hour
    );
    println!(
        "  hourly budgets (stockx, alias, ebay): paced at the budget with a burst of {}, capped at the budget in any simulated hour",
        args.burst
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
        let runner = Arc::new(JobRunner::new(
            client,
            Some(pacer),
            Arc::clone(&ledger) as Arc<dyn LedgerStore>,
        ));
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
            lease_deadline: None,
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
        Arc::clone(&ledger) as Arc<dyn LedgerStore>,
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
    let mut calls_at_boundary: Vec<HashMap<&'static str, u64>> = vec![HashMap::new()];
    for row in &rows {
        let calls = sim_counter(&http, &base, row.provider).await?;
        calls_at_boundary[0].insert(row.provider, calls);
    }
    let mut results: Vec<(i64, HourFigure)> = Vec::new();
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
                let pick = manual_index * 7919;
                let provider = row.provider.to_string();
                let ledger_for = Arc::clone(&ledger);
                let key =
                    tokio::task::spawn_blocking(move || priced_key(&ledger_for, &provider, pick))
                        .await??;
                if let Some((sku, size)) = key {
                    let before = sim_counter(&http, &base, row.provider).await?;
                    let job = NewJob {
                        provider: row.provider.to_string(),
                        sku: sku.clone(),
                        size: size.clone(),
                        priority: JobPriority::Manual,
                        source: "bench-manual".to_string(),
                    };
                    let ledger_for = Arc::clone(&ledger);
                    let id =
                        tokio::task::spawn_blocking(move || store::enqueue(&*ledger_for, &job))
                            .await??
                            .id();
                    // The replay of the maximum serves the same refresh at its minute.
                    let at = sim_minute(start_ts, args.hour);
                    let dedupe = store::dedupe_key(row.provider, &sku, size.as_deref());
                    match key_index
                        .get(row.provider)
                        .and_then(|index| index.get(&dedupe))
                    {
                        Some(&key) => injected.entry(row.provider).or_default().push((at, key)),
                        None => {
                            eprintln!(
                                "bench freshness: manual refresh of {dedupe} is no tracked key; the maximum cannot replay it"
                            );
                            ok = false;
                        }
                    }
                    manuals.push(Manual {
                        provider: row.provider,
                        sku,
                        size: size.clone(),
                        job: id,
                        before,
                        queued: tokio::time::Instant::now(),
                    });
                }
            }
            let mut still = Vec::new();
            for manual in manuals.drain(..) {
                let ledger_for = Arc::clone(&ledger);
                let id = manual.job;
                let job =
                    tokio::task::spawn_blocking(move || store::get_job(&*ledger_for, id)).await??;
                match job.map(|job| job.state) {
                    Some(JobState::Succeeded) => {
                        let before_it = requests_before(&http, &base, &manual).await?;
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
        let mut counters = HashMap::new();
        for row in &rows {
            counters.insert(row.provider, sim_counter(&http, &base, row.provider).await?);
        }
        calls_at_boundary.push(counters);
        let mut line = format!("  hour {hour_index}:");
        for (index, row) in rows.iter().enumerate() {
            let provider = row.provider.to_string();
            let ledger_for = Arc::clone(&ledger);
            let (from, to) = (boundary - args.hour as i64, boundary);
            let fresh =
                tokio::task::spawn_blocking(move || fresh_in(&ledger_for, &provider, from, to))
                    .await??;
            // The replay up to this hour, with the manual refreshes injected so far
            // (later ones cannot change it).
            let max = ideal_fresh(
                row.per_hour,
                row.starting_balance,
                row.catalog_calls,
                styles.get(row.provider).map_or(&[][..], Vec::as_slice),
                u32::try_from(hour_index).unwrap_or(0),
                60,
                injected.get(row.provider).map_or(&[][..], Vec::as_slice),
            )
            .last()
            .copied()
            .unwrap_or(0);
            let figure = HourFigure {
                provider: row.provider,
                fresh,
                max,
            };
            line.push_str(&format!(
                "{} {} {fresh} fresh of {} (max {max}, ratio {:.3})",
                if index == 0 { "" } else { " |" },
                row.provider,
                keys[row.provider],
                figure.ratio()
            ));
            results.push((hour_index, figure));
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
        .map(|(_, figure)| figure.ratio())
        .fold(f64::INFINITY, f64::min);
    let total_fresh: i64 = results.iter().map(|(_, figure)| figure.fresh).sum();
    let total_max: u64 = results.iter().map(|(_, figure)| figure.max).sum();
    let mut per_provider = Vec::new();
    for row in &rows {
        let fresh: i64 = results
            .iter()
            .filter(|(_, figure)| figure.provider == row.provider)
            .map(|(_, figure)| figure.fresh)
            .sum();
        let max: u64 = results
            .iter()
            .filter(|(_, figure)| figure.provider == row.provider)
            .map(|(_, figure)| figure.max)
            .sum();
        per_provider.push(format!(
            "{} {fresh}/{max} = {:.3}",
            row.provider,
            fresh as f64 / max.max(1) as f64
        ));
    }
    println!(
        "  fresh share against the budgets' maximum: overall {:.3} ({}), worst provider-hour {worst:.3} (target >= 0.98)",
        total_fresh as f64 / total_max.max(1) as f64,
        per_provider.join(", ")
    );
    let mut throttled = Vec::new();
    for row in &rows {
        let count = sim_throttled(&http, &base, row.provider).await?;
        throttled.push(format!("{} {count}", row.provider));
        ok &= count == 0;
    }
    println!("  429s: {}", throttled.join(", "));
    let replayed: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{} {}",
                row.provider,
                injected.get(row.provider).map_or(0, Vec::len)
            )
        })
        .collect();
    println!(
        "  manual refreshes the maximum replays (each at its minute, first): {}",
        replayed.join(", ")
    );
    for row in rows.iter().filter(|row| row.provider != "keepa") {
        let per_hour: Vec<u64> = calls_at_boundary
            .windows(2)
            .map(|pair| {
                pair[1]
                    .get(row.provider)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(pair[0].get(row.provider).copied().unwrap_or(0))
            })
            .collect();
        let most = per_hour.iter().copied().max().unwrap_or(0);
        println!(
            "  {} calls per simulated hour (catalog calls included): {per_hour:?} (budget {})",
            row.provider, row.per_hour
        );
        ok &= most as f64 <= row.per_hour;
    }
    let within = served_manual
        .iter()
        .filter(|(_, before, _)| *before <= 1)
        .count();
    let mut waits: Vec<Duration> = served_manual.iter().map(|(_, _, wait)| *wait).collect();
    waits.sort();
    let median = waits.get(waits.len() / 2).copied().unwrap_or_default();
    let longest = waits.last().copied().unwrap_or_default();
    let by_provider: Vec<String> = rows
        .iter()
        .map(|row| {
            let mine: Vec<u64> = served_manual
                .iter()
                .filter(|(provider, _, _)| *provider == row.provider)
                .map(|(_, before, _)| *before)
                .collect();
            format!(
                "{} {} (max {} before)",
                row.provider,
                mine.len(),
                mine.iter().max().copied().unwrap_or(0)
            )
        })
        .collect();
    println!(
        "  manual refreshes: {} served ({}), {within} within one grant (other requests before it: max {}), wait median {} ms / max {} ms ({} still queued at the end)",
        served_manual.len(),
        by_provider.join(", "),
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

/// A key of `provider` already priced (the `pick`-th modulo their number), or `None`
/// when none is yet.
fn priced_key(
    ledger: &SqliteLedger,
    provider: &str,
    pick: usize,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    Ok(ledger.with_read_conn(|conn| {
        let count: i64 = conn.query_row(
            "SELECT COUNT(*) FROM jobs WHERE provider = ?1 AND state = 'succeeded'",
            rusqlite::params![provider],
            |row| row.get(0),
        )?;
        if count == 0 {
            return Ok(None);
        }
        let offset = i64::try_from(pick).unwrap_or(0).rem_euclid(count);
        conn.query_row(
            "SELECT sku, size FROM jobs WHERE provider = ?1 AND state = 'succeeded' ORDER BY id LIMIT 1 OFFSET ?2",
            rusqlite::params![provider, offset],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?)),
        )
        .map(Some)
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

/// The provider's request counter in the simulator: every call its budget pays for
/// (StockX: catalog searches, variant lists and market data).
async fn sim_counter(http: &reqwest::Client, base: &str, provider: &str) -> anyhow::Result<u64> {
    let stats = sim_stats(http, base, provider).await?;
    let number = |field: &str| stats[field].as_u64().unwrap_or(0);
    Ok(match provider {
        "stockx" => number("search_calls") + number("variants_calls") + number("market_data_calls"),
        "ebay" => stats["calls"][crate::sim::ebay::OP_ITEM_SEARCH]
            .as_u64()
            .unwrap_or(0),
        _ => number("served"),
    })
}

/// 429s the simulator answered the provider.
async fn sim_throttled(http: &reqwest::Client, base: &str, provider: &str) -> anyhow::Result<u64> {
    let stats = sim_stats(http, base, provider).await?;
    Ok(match provider {
        "ebay" => stats["throttled"]
            .as_object()
            .map(|counts| counts.values().filter_map(|count| count.as_u64()).sum())
            .unwrap_or(0),
        _ => stats["throttled"].as_u64().unwrap_or(0),
    })
}

/// Requests of the manual refresh's provider the simulator served after it was queued
/// and ahead of its own. Keepa and Alias log their requests (found by the key); StockX
/// and eBay serve a priced key in one request, so it is the requests since, less its own.
async fn requests_before(
    http: &reqwest::Client,
    base: &str,
    manual: &Manual,
) -> anyhow::Result<u64> {
    let stats = sim_stats(http, base, manual.provider).await?;
    let served = stats["served"].as_u64().unwrap_or(0);
    let since = served.saturating_sub(manual.before) as usize;
    let position = match manual.provider {
        "keepa" => {
            let requests = stats["requests"].as_array().cloned().unwrap_or_default();
            let recent = &requests[requests.len().saturating_sub(since)..];
            recent.iter().position(|request| {
                request.as_array().is_some_and(|asins| {
                    asins
                        .iter()
                        .any(|asin| asin.as_str() == Some(manual.sku.as_str()))
                })
            })
        }
        "alias" => {
            let key: String = manual
                .sku
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_uppercase())
                .collect();
            let size = manual
                .size
                .as_deref()
                .and_then(|size| size.parse::<f64>().ok())
                .map(|size| format!("{size}"))
                .unwrap_or_default();
            // Its own request is the pricing call of its style and size (the catalog id
            // is cached).
            let own = format!("pricing:{key}|{size}");
            let requests = stats["requests"].as_array().cloned().unwrap_or_default();
            let recent = &requests[requests.len().saturating_sub(since)..];
            recent
                .iter()
                .position(|request| request.as_str() == Some(own.as_str()))
        }
        _ => {
            let calls = sim_counter(http, base, manual.provider).await?;
            return Ok(calls.saturating_sub(manual.before).saturating_sub(1));
        }
    };
    Ok(position.map_or(u64::MAX, |at| at as u64))
}

/// The simulated minute now, counted from `start_ts` (unix s) with a simulated hour of
/// `hour` real seconds.
fn sim_minute(start_ts: i64, hour: u64) -> u64 {
    let elapsed_ms = (chrono::Utc::now().timestamp_millis() - start_ts * 1000).max(0);
    let minute_ms = (hour.max(1) * 1000) as f64 / 60.0;
    (elapsed_ms as f64 / minute_ms).floor() as u64
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maximum_pays_a_cold_style_once_then_one_call_a_size() {
        // 100 calls an hour, 2 catalog calls per cold style, 20 sizes per style: the
        // first hour serves 4 styles (88 calls) and 10 sizes of the fifth (12 calls).
        let style_of: Vec<usize> = (0..2_500).map(|n| n / 20).collect();
        let fresh = ideal_fresh(100.0, 0.0, 2, &style_of, 3, 60, &[]);
        assert_eq!(fresh[0], 90);
        // Then the fifth style's 10 other sizes (10 calls, warm) and 4 cold styles (88
        // calls); the 2 calls left wait for the next style's first size (3).
        assert_eq!(fresh[1], 90);
        assert!(fresh.iter().all(|&keys| keys <= 100));
        // Without a catalog (eBay) every call is a key.
        assert_eq!(
            ideal_fresh(150.0, 0.0, 0, &style_of, 2, 60, &[]),
            vec![150, 150]
        );
    }

    #[test]
    fn the_maximum_refreshes_stale_keys_once_every_key_was_seen() {
        // Keepa: 1,200 starting tokens and 1,200 an hour. Over 2,500 keys, hour 1 sees
        // 2,400 new keys; hour 2 the last 100 new ones, then 1,100 keys as they turn stale.
        let style_of: Vec<usize> = (0..2_500).collect();
        let fresh = ideal_fresh(1_200.0, 1_200.0, 0, &style_of, 3, 60, &[]);
        assert_eq!(fresh, vec![2_400, 1_200, 1_200]);
        // Over 1,300 keys every key is seen in hour 1, and the tokens saved meanwhile
        // (at most an hour's worth) refresh every one in hour 2.
        let style_of: Vec<usize> = (0..1_300).collect();
        assert_eq!(
            ideal_fresh(1_200.0, 1_200.0, 0, &style_of, 2, 60, &[]),
            vec![1_300, 1_300]
        );
    }

    #[test]
    fn the_maximum_serves_each_injected_refresh_at_its_minute_for_one_call() {
        let style_of: Vec<usize> = (0..2_500).map(|n| n / 20).collect();
        // eBay, 150 calls an hour. A refresh at minute 15 of key 0 (priced at minute 0)
        // spends one of hour 1's calls on a key already fresh in it: 149 keys.
        assert_eq!(
            ideal_fresh(150.0, 0.0, 0, &style_of, 2, 60, &[(15, 0)]),
            vec![149, 150]
        );
        // At minute 75 it spends one of hour 2's calls and makes key 0, priced in hour
        // 1, fresh in hour 2 as the run counts it: 149 new keys and key 0.
        assert_eq!(
            ideal_fresh(150.0, 0.0, 0, &style_of, 2, 60, &[(75, 0)]),
            vec![150, 150]
        );
        // StockX (2 catalog calls a cold style): the refresh at minute 15 leaves hour
        // 1 with 99 calls for new keys: 4 styles (88) and 9 sizes of the fifth (11).
        let fresh = ideal_fresh(100.0, 0.0, 2, &style_of, 1, 60, &[(15, 0)]);
        assert_eq!(fresh, vec![89]);
        // A refresh of a key the replay has not priced yet pays its style's catalog
        // and is not new any more when the replay's order reaches it.
        let fresh = ideal_fresh(100.0, 0.0, 2, &style_of, 1, 60, &[(0, 2_000)]);
        assert_eq!(fresh, vec![88]);
        // Indices outside the keys are ignored.
        assert_eq!(
            ideal_fresh(150.0, 0.0, 0, &style_of, 1, 60, &[(15, 9_999)]),
            vec![150]
        );
    }

    #[test]
    fn a_manual_refresh_starts_the_keys_staleness_again() {
        // 1 call a minute, 3 keys priced at minutes 0, 1, 2, stale after 90 minutes.
        // Refreshed by hand at minute 30, key 0 turns stale at minute 120, not 90: hour
        // 2 refreshes keys 1 and 2 only.
        assert_eq!(
            ideal_fresh(60.0, 0.0, 0, &[0, 1, 2], 2, 90, &[]),
            vec![3, 3]
        );
        assert_eq!(
            ideal_fresh(60.0, 0.0, 0, &[0, 1, 2], 2, 90, &[(30, 0)]),
            vec![3, 2]
        );
    }

    #[test]
    fn the_maximum_with_the_benchs_refreshes_is_what_the_run_measured() {
        // One StockX refresh an hour at minute 15 of a key priced in hour 1 (key 0):
        // docs/jobs.md, "Hourly budgets".
        let style_of: Vec<usize> = (0..2_500).map(|n| n / 20).collect();
        let manual: Vec<(u64, usize)> = (0..6).map(|hour| (hour * 60 + 15, 0)).collect();
        assert_eq!(
            ideal_fresh(100.0, 0.0, 2, &style_of, 6, 60, &manual),
            vec![89, 92, 90, 92, 90, 92]
        );
    }

    #[test]
    fn bench_keys_keep_a_styles_sizes_together_in_the_schedulers_order() {
        let row = bench_row("stockx").expect("row");
        let keys = bench_keys(&row, 45, 20);
        assert_eq!(keys.len(), 45);
        let styles: Vec<usize> = keys.iter().map(|(_, _, style)| *style).collect();
        let mut sorted = styles.clone();
        sorted.sort();
        assert_eq!(styles, sorted, "a style's sizes are adjacent");
        let keepa = bench_keys(&bench_row("keepa").expect("row"), 3, 20);
        assert_eq!(keepa[2], ("B000000002".to_string(), None, 2));
    }
}
