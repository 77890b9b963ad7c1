//! `marketsync bench ...`: benchmarks, not tests. Each prints its figures and the
//! targets from the issues, and runs against a real SQLite file in a temp directory.
//!
//! - `bench ledger`: claim + transition throughput over a ledger of N hour rows.
//! - `bench apply`: applying one N-row report document (rows/s and peak RSS). Run it
//!   in its own process: peak RSS is the process high-water mark (`VmHWM`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use flate2::write::GzEncoder;

use crate::config::ClaimOrder;
use crate::ledger::{LedgerStore, SqliteLedger};
use crate::model::{format_ts, HourWindow, HOUR};
use crate::report::read_vendor_sales_document;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Claim → DOWNLOADED → APPLIED over a ledger of `hours` rows split across `scopes`.
    Ledger {
        #[arg(long, default_value_t = 1_000_000)]
        hours: i64,
        #[arg(long, default_value_t = 1_000)]
        scopes: i64,
        /// Hours per claim (the chunk size).
        #[arg(long, default_value_t = 6)]
        chunk: i64,
    },
    /// Apply one gzip report document of `rows` rows.
    Apply {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Lease acquire+renew+release cycles per second over `scopes` scopes against a
    /// private redis-server (and the SQLite backend), and holder-death-to-takeover time.
    Locks {
        #[arg(long, default_value_t = 1_000)]
        scopes: usize,
        /// Concurrent workers issuing lease operations.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Lease TTL for the takeover measurement.
        #[arg(long, default_value = "3s")]
        ttl: humantime::Duration,
    },
}

pub fn run(which: BenchCommand) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir().context("creating a temp directory")?;
    match which {
        BenchCommand::Ledger {
            hours,
            scopes,
            chunk,
        } => bench_ledger(dir.path(), hours, scopes, chunk),
        BenchCommand::Apply { rows } => bench_apply(dir.path(), rows),
        BenchCommand::Locks {
            scopes,
            concurrency,
            ttl,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(bench_locks(dir.path(), scopes, concurrency, ttl.into()))
        }
    }
}

async fn bench_locks(
    dir: &Path,
    scopes: usize,
    concurrency: usize,
    ttl: std::time::Duration,
) -> anyhow::Result<i32> {
    use crate::lock::{testing::RedisServer, LockService};
    let redis = RedisServer::start()
        .context("starting a private redis-server (is redis-server installed?)")?;
    let backends = [
        ("redis", LockService::redis(&redis.url(), "bench:").await?),
        ("sqlite", LockService::sqlite(&dir.join("locks.db")).await?),
    ];
    for (name, locks) in &backends {
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker in 0..concurrency.max(1) {
            let locks = locks.clone();
            workers.push(tokio::spawn(async move {
                let mut cycles = 0u64;
                // Ten rounds over this worker's own scopes (no two workers share one),
                // so the figure is not a 50 ms blip.
                for _round in 0..10 {
                    let mut scope = worker;
                    while scope < scopes {
                        let scope_name = format!("acct-{scope}/vendor_rt_sales");
                        let lease = locks
                            .acquire(
                                &scope_name,
                                "bench:1@local",
                                std::time::Duration::from_secs(60),
                            )
                            .await?;
                        let lease = locks
                            .renew(&lease, std::time::Duration::from_secs(60))
                            .await?;
                        locks.release(&lease).await?;
                        cycles += 1;
                        scope += concurrency.max(1);
                    }
                }
                anyhow::Ok(cycles)
            }));
        }
        let mut cycles = 0;
        for worker in workers {
            cycles += worker.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name}: {cycles} acquire+renew+release cycles over {scopes} scopes in {secs:.2}s: {:.0} cycles/s ({:.0} operations/s)",
            cycles as f64 / secs,
            3.0 * cycles as f64 / secs
        );
    }

    // Takeover: the holder renews every ttl/3 and then dies right after a renewal (the
    // worst case); the contender retries as the daemon does: at the holder's expiry.
    let locks = &backends[0].1;
    let mut takeovers = Vec::new();
    for trial in 0..3 {
        let scope = format!("takeover-{trial}/vendor_rt_sales");
        let lease = locks.acquire(&scope, "holder:1@local", ttl).await?;
        let lease = locks.renew(&lease, ttl).await?;
        let died = Instant::now();
        loop {
            match locks.acquire(&scope, "contender:2@local", ttl).await {
                Ok(taken) => {
                    takeovers.push(died.elapsed().as_secs_f64());
                    locks.release(&taken).await?;
                    break;
                }
                Err(crate::lock::LockError::Busy { .. }) => {
                    // Exactly the daemon's wait after a busy lease (see daemon::run_stream).
                    let until = lease.expires_at_ms / 1000 + 1;
                    let wait = (until - crate::model::now_ts()).max(1) as u64;
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    takeovers.sort_by(f64::total_cmp);
    println!(
        "holder death to takeover with ttl {} (renew every {}): median {:.2}s, max {:.2}s (bound: ttl + one renew interval + 1s rounding)",
        humantime::format_duration(ttl),
        humantime::format_duration(crate::lock::Lease::renew_every(ttl)),
        takeovers[takeovers.len() / 2],
        takeovers[takeovers.len() - 1]
    );
    Ok(0)
}

fn bench_ledger(dir: &Path, hours: i64, scopes: i64, chunk: i64) -> anyhow::Result<i32> {
    let ledger = SqliteLedger::open(&dir.join("bench.db"))?;
    let per_scope = (hours / scopes.max(1)).max(1);
    let end = 1_700_000_000 / HOUR * HOUR;
    let window = HourWindow::new(end - per_scope * HOUR, end);
    let started = Instant::now();
    for scope in 0..scopes {
        ledger.seed(&format!("acct-{scope}"), "vendor_rt_sales", window, end)?;
    }
    let seeded = per_scope * scopes;
    let seed_secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {seeded} MISSING hours across {scopes} scopes in {seed_secs:.2}s ({:.0} rows/s)",
        seeded as f64 / seed_secs
    );

    let started = Instant::now();
    let mut transitions = 0i64;
    let mut claims = 0i64;
    for scope in 0..scopes {
        let account = format!("acct-{scope}");
        while let Some(claim) = ledger.claim(
            &account,
            "vendor_rt_sales",
            chunk,
            ClaimOrder::NewestFirst,
            "bench:1@local",
            Some(1),
            end,
        )? {
            ledger.set_report_id(&claim, "report", end)?;
            ledger.mark_downloaded(&claim, "document", "/dev/null", end)?;
            ledger.apply_sales(&claim, &mut |_sink| Ok(Default::default()), end)?;
            // MISSING→REQUESTED, REQUESTED→DOWNLOADED, DOWNLOADED→APPLIED per hour.
            transitions += 3 * claim.window.hours();
            claims += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = transitions as f64 / secs;
    println!(
        "{claims} claims, {transitions} hour transitions in {secs:.2}s: {rate:.0} transitions/s (target >= 50000) {}",
        verdict(rate >= 50_000.0)
    );
    println!("peak rss {:.1} MB", peak_rss_mb().unwrap_or(f64::NAN));
    Ok(0)
}

fn bench_apply(dir: &Path, rows: u64) -> anyhow::Result<i32> {
    let ledger = SqliteLedger::open(&dir.join("bench.db"))?;
    // Rows spread over 24 hours: asins_per_hour asins each hour.
    let hours = 24u64;
    let asins_per_hour = rows.div_ceil(hours);
    let start = 1_700_000_000 / HOUR * HOUR;
    let window = HourWindow::new(start, start + hours as i64 * HOUR);
    let document = dir.join("document.json.gz");
    write_document(&document, window, asins_per_hour, rows)?;
    let size = std::fs::metadata(&document)?.len();
    let rss_before = peak_rss_mb().unwrap_or(f64::NAN);

    ledger.seed("bench", "vendor_rt_sales", window, start)?;
    let claim = ledger
        .claim(
            "bench",
            "vendor_rt_sales",
            hours as i64,
            ClaimOrder::NewestFirst,
            "bench:1@local",
            None,
            start,
        )?
        .context("nothing to claim")?;
    ledger.mark_downloaded(&claim, "document", &document.display().to_string(), start)?;
    let started = Instant::now();
    let applied = ledger.apply_sales(
        &claim,
        &mut |sink| read_vendor_sales_document(&document, true, window, sink),
        start,
    )?;
    let secs = started.elapsed().as_secs_f64();
    let rate = applied.summary.rows as f64 / secs;
    let peak = peak_rss_mb().unwrap_or(f64::NAN);
    println!(
        "applied {} rows ({} hours, gzip document {:.1} MB) in {secs:.2}s: {rate:.0} rows/s (target >= 300000) {}",
        applied.summary.rows,
        applied.hours,
        size as f64 / 1e6,
        verdict(rate >= 300_000.0)
    );
    println!(
        "peak rss {peak:.1} MB (before apply {rss_before:.1} MB; target <= 64 MB) {}",
        verdict(peak <= 64.0)
    );
    Ok(0)
}

/// Writes the document streaming, so generating it does not inflate peak RSS.
fn write_document(
    path: &Path,
    window: HourWindow,
    asins_per_hour: u64,
    rows: u64,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::new(GzEncoder::new(file, flate2::Compression::fast()));
    write!(
        out,
        r#"{{"reportSpecification":{{"reportType":"GET_VENDOR_REAL_TIME_SALES_REPORT","dataStartTime":"{}","dataEndTime":"{}","marketplaceIds":["ATVPDKIKX0DER"]}},"reportData":["#,
        format_ts(window.start),
        format_ts(window.end)
    )?;
    let mut written = 0u64;
    'outer: for hour in 0..window.hours() {
        let hour_start = window.start + hour * HOUR;
        for asin in 0..asins_per_hour {
            if written == rows {
                break 'outer;
            }
            if written > 0 {
                out.write_all(b",")?;
            }
            let units = (asin % 23) as i64 - 2;
            write!(
                out,
                r#"{{"startTime":"{}","endTime":"{}","asin":"B{asin:09}","orderedUnits":{units},"orderedRevenue":{}.99}}"#,
                format_ts(hour_start),
                format_ts(hour_start + HOUR),
                units * 10
            )?;
            written += 1;
        }
    }
    out.write_all(b"]}")?;
    out.into_inner()
        .map_err(|err| anyhow::anyhow!("flushing the document: {err}"))?
        .finish()?;
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "BELOW TARGET"
    }
}

/// The process's peak resident set (`VmHWM`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
