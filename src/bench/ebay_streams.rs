//! `marketsync bench ebay-streams` (issue 14): one seller with all ten eBay streams
//! enabled and `days` behind, caught up by `marketsync sync --once` (a child process of
//! this executable: the real daemon, every stream of the account running concurrently)
//! against the eBay simulator served in this process over real HTTP.
//!
//! Quota. The simulator serves eBay's daily call limits per seller and API
//! (docs/ebay-wire.md, "Quotas" and each stream's section). A one-seller catch-up of 90
//! days makes a few hundred calls per API, far inside every daily limit, so no daily
//! quota bounds it. To make the quota the bound, every operation's TokenManager bucket
//! is scaled down to `--rate` calls a second with `--burst` (`[quota.ebay.OPERATION]` in
//! the bench's config), as `bench ebay` does for getOrders; the output says so. The Feed
//! task's operations take no such table (the default bucket, 150 an hour with a burst of
//! 15, holds the few calls of one task).
//!
//! Bound. A bucket starts full, then grants one call every `1/rate` s: an operation that
//! made `c` calls needs at least `max(0, c − burst) / rate` seconds. A stream is bound by
//! its slowest operation; `active_inventory` also waits between its getInventoryTask
//! polls (`poll_min`, doubling: `poll_min × (2^(polls − 1) − 1)` for `polls` polls), so
//! its bound is the larger of the two. The run's minimum is the slowest stream's bound
//! (the streams run concurrently and share no bucket). The calls are the simulator's
//! count. Target: wall ≤ 1.05 × the minimum, no 429.
//!
//! Memory: the child's peak RSS (`VmHWM` of `/proc/<pid>/status`, sampled every 20 ms
//! until it exits; the last sample is at most 20 ms before its exit).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::sim::ebay::{EbaySimConfig, EbayStats};
use crate::sim::{SimConfig, Simulator};

/// Issue 14's target for wall time over the quota-bound minimum.
const MAX_RATIO: f64 = 1.05;

/// The ten streams and the operations each calls (the simulator's names, without the
/// `ebay.` prefix; each is also the TokenManager bucket the daemon paces it with).
const STREAMS: [(&str, &[&str]); 10] = [
    ("orders", &["getOrders"]),
    ("transactions", &["getTransactions"]),
    ("returns", &["searchReturns"]),
    ("cases", &["searchCases"]),
    ("inquiries", &["searchInquiries"]),
    ("purchases", &["tradingGetOrders"]),
    ("finances", &["getPayouts"]),
    ("messages", &["getConversations"]),
    ("offers", &["getInventoryItems", "getOffers"]),
    (
        "active_inventory",
        &["createInventoryTask", "getInventoryTask", "getResultFile"],
    ),
];

/// The Feed task's operations (paced by the daemon's default eBay bucket).
const FEED_OPERATIONS: [&str; 3] = ["createInventoryTask", "getInventoryTask", "getResultFile"];

/// Options of `marketsync bench ebay-streams`.
#[derive(Debug, clap::Args)]
pub struct BenchEbayStreamsArgs {
    /// How far behind every window stream starts.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Orders the simulated seller receives per day.
    #[arg(long, default_value_t = 500)]
    pub orders_per_day: u32,
    /// Listings of the seller's active inventory (the feed report and the offers).
    #[arg(long, default_value_t = 300)]
    pub listings: u32,
    /// Every operation's bucket: calls per second (eBay's daily limits scaled down).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Every operation's bucket: burst.
    #[arg(long, default_value_t = 10.0)]
    pub burst: f64,
    /// `active_inventory`'s first pause between getInventoryTask polls.
    #[arg(long, default_value = "500ms")]
    pub poll_min: humantime::Duration,
    /// Give up after this long.
    #[arg(long, default_value = "20m")]
    pub timeout: humantime::Duration,
}

/// Runs the benchmark; prints the figures. Exit code 0 when the target holds.
pub fn run(args: BenchEbayStreamsArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite() && args.burst >= 1.0 && args.burst.is_finite(),
        "--rate must be above 0 and --burst at least 1"
    );
    anyhow::ensure!((1..=730).contains(&args.days), "--days must be 1 to 730");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(args))
}

/// The minimum for `calls` calls through a bucket of `rate`/s with `burst`.
pub fn quota_bound_secs(calls: u64, rate: f64, burst: f64) -> f64 {
    (calls as f64 - burst).max(0.0) / rate
}

/// The pauses between `polls` getInventoryTask polls: `poll_min`, doubling up to
/// `poll_max`.
pub fn poll_pauses_secs(polls: u64, poll_min: f64, poll_max: f64) -> f64 {
    let mut pause = poll_min;
    let mut total = 0.0;
    for _ in 1..polls.min(64) {
        total += pause;
        pause = (pause * 2.0).min(poll_max);
    }
    total
}

const POLL_MAX_SECS: u64 = 120;

fn config_text(data: &Path, base: &str, args: &BenchEbayStreamsArgs, poll_min: &str) -> String {
    let mut text = format!(
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
"#,
        data = data.display(),
    );
    for (stream, _) in STREAMS {
        text.push_str(&format!("[accounts.streams.{stream}]\nenabled = true\n"));
        match stream {
            // Snapshot streams: one snapshot, then nothing for an hour.
            "offers" => text.push_str("interval = \"1h\"\n"),
            "active_inventory" => text.push_str(&format!(
                "interval = \"1h\"\npoll_min = \"{poll_min}\"\npoll_max = \"{POLL_MAX_SECS}s\"\n"
            )),
            // Window streams: caught up once the last window is read; the next run (and
            // its re-read of open resources) is an hour away, after the bench.
            _ => text.push_str(&format!(
                "start = \"{}days\"\ninterval = \"1h\"\n",
                args.days
            )),
        }
    }
    for (_, operations) in STREAMS {
        // The Feed task's calls take no `[quota.ebay]` table (the daemon's default, 150 an
        // hour, holds their five calls in its burst); their stream waits on its polls.
        for operation in operations
            .iter()
            .filter(|operation| !FEED_OPERATIONS.contains(operation))
        {
            text.push_str(&format!(
                "[quota.ebay.{operation}]\nrate = {}\nburst = {}\n",
                args.rate, args.burst
            ));
        }
    }
    text
}

fn child_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `sync --once` on `config` to its end: (exit code, wall, sampled peak RSS in KB).
fn sync_once(config: &Path, timeout: Duration) -> anyhow::Result<(Option<i32>, Duration, u64)> {
    let log = std::fs::File::create(config.with_extension("log"))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("--config")
        .arg(config)
        .args(["sync", "--once", "--timeout"])
        .arg(humantime::format_duration(timeout).to_string())
        .env(
            "RUST_LOG",
            std::env::var("MARKETSYNC_BENCH_LOG").unwrap_or_else(|_| "marketsync=warn".to_string()),
        )
        .env("BENCH_EBAY_CLIENT_ID", "bench-client")
        .env("BENCH_EBAY_CLIENT_SECRET", "bench-secret")
        // The simulator's refresh token names the seller.
        .env("BENCH_EBAY_REFRESH_TOKEN", "bench-seller")
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let mut child = command.spawn().context("starting marketsync sync --once")?;
    let deadline = started + timeout + Duration::from_secs(60);
    let mut peak_kb = 0;
    loop {
        if let Some(kb) = child_kb(child.id(), "VmHWM:") {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status.code(), started.elapsed(), peak_kb));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, started.elapsed(), peak_kb));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn bench(args: BenchEbayStreamsArgs) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir().context("creating a temp directory")?;
    let ebay = EbaySimConfig {
        orders_per_day: args.orders_per_day,
        inventory_listings: args.listings,
        ..EbaySimConfig::default()
    };
    let sim = Simulator::new(SimConfig {
        ebay: ebay.clone(),
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
    let poll_min = args.poll_min.to_string();
    let text = config_text(dir.path(), &base, &args, &poll_min);
    // Refused here rather than in the child, with the reason.
    crate::config::Config::parse(&text, "<bench ebay-streams>").context("bench configuration")?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &text)?;

    println!(
        "ebay ten streams: one seller, window streams {} days behind, {} orders/day, {} listings",
        args.days, args.orders_per_day, args.listings
    );
    println!(
        "  simulator's daily limits per seller: Fulfillment {}, Finances {}, Post-Order {} (Trading, Inventory, Message: docs/ebay-wire.md); the catch-up needs far fewer calls, so no daily quota bounds it",
        ebay.fulfillment_daily_calls,
        ebay.finances_daily_calls,
        ebay.post_order_daily_calls,
    );
    println!(
        "  SCALED: every operation's TokenManager bucket is {}/s, burst {} (eBay's daily limits scaled down to make the quota the bound)",
        args.rate, args.burst
    );
    let timeout: Duration = args.timeout.into();
    let config_path = config.clone();
    let (code, wall, peak_kb) =
        tokio::task::spawn_blocking(move || sync_once(&config_path, timeout))
            .await
            .context("waiting for sync --once")??;
    let stats: EbayStats = reqwest::get(format!("{base}/_sim/ebay/stats"))
        .await?
        .json()
        .await?;
    stop.cancel();
    // A simulator that panicked spoils the figures: say so and fail the bench (as bench
    // catalog and bench freshness do).
    let server_ok = match server.await {
        Ok(_) => true,
        Err(err) => {
            eprintln!("bench ebay-streams: the simulator task ended abnormally: {err}");
            false
        }
    };

    let poll_min: Duration = args.poll_min.into();
    let poll_min_secs = poll_min.as_secs_f64();
    let mut bounds: BTreeMap<&str, f64> = BTreeMap::new();
    let mut throttled_total = 0;
    println!(
        "  {:<17} {:>6} {:>6} {:>9}  operations (calls)",
        "stream", "calls", "429s", "bound s"
    );
    for (stream, operations) in STREAMS {
        let mut calls = 0;
        let mut throttled = 0;
        let mut bound: f64 = 0.0;
        let mut detail = Vec::new();
        for operation in operations {
            let name = format!("ebay.{operation}");
            let made = stats.calls(&name);
            calls += made;
            throttled += stats.throttled(&name);
            if !FEED_OPERATIONS.contains(operation) {
                bound = bound.max(quota_bound_secs(made, args.rate, args.burst));
            }
            detail.push(format!("{operation} {made}"));
        }
        if stream == "active_inventory" {
            let polls = stats.calls("ebay.getInventoryTask");
            bound = bound.max(poll_pauses_secs(polls, poll_min_secs, POLL_MAX_SECS as f64));
        }
        throttled_total += throttled;
        bounds.insert(stream, bound);
        println!(
            "  {stream:<17} {calls:>6} {throttled:>6} {bound:>9.2}  {}",
            detail.join(", ")
        );
    }
    let (slowest, minimum) = bounds
        .iter()
        .fold(("", 0.0f64), |(name, best), (stream, bound)| {
            if *bound > best {
                (*stream, *bound)
            } else {
                (name, best)
            }
        });
    let seconds = wall.as_secs_f64();
    let ratio = if minimum > 0.0 {
        seconds / minimum
    } else {
        f64::NAN
    };
    println!("  sync --once: exit {code:?}, wall {seconds:.2} s (process start to exit)");
    println!(
        "  minimum {minimum:.2} s (the slowest stream, {slowest}: max over its operations of (calls - burst {}) / {}/s, and the feed task's poll pauses)",
        args.burst, args.rate
    );
    println!(
        "  wall / minimum {ratio:.3}; 429s {throttled_total}; peak RSS of the daemon {:.1} MB",
        peak_kb as f64 / 1024.0
    );
    let finished = code == Some(0);
    if !finished {
        println!(
            "  sync --once did not finish cleanly; its log: {}",
            config.with_extension("log").display()
        );
        if let Ok(log) = std::fs::read_to_string(config.with_extension("log")) {
            for line in log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("    {line}");
            }
        }
    }
    let ok = finished && ratio <= MAX_RATIO && throttled_total == 0 && server_ok;
    println!(
        "{} wall / minimum {ratio:.3} <= {MAX_RATIO}, no 429",
        super::verdict(ok)
    );
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_count_calls_past_the_burst_and_the_doubling_poll_pauses() {
        assert_eq!(quota_bound_secs(5, 5.0, 10.0), 0.0);
        assert_eq!(quota_bound_secs(60, 5.0, 10.0), 10.0);
        // Three polls: two pauses, 0.5 then 1.0.
        assert_eq!(poll_pauses_secs(3, 0.5, 120.0), 1.5);
        assert_eq!(poll_pauses_secs(1, 0.5, 120.0), 0.0);
        assert_eq!(poll_pauses_secs(4, 1.0, 2.0), 1.0 + 2.0 + 2.0);
    }
}
