//! `marketsync bench ...`: benchmarks, not tests. Each prints its figures and the
//! targets from the issues, and runs against a real SQLite file in a temp directory.
//!
//! - `bench ledger`: claim + transition throughput over a ledger of N hour rows.
//! - `bench apply`: applying one N-row report document (rows/s and peak RSS). Run it
//!   in its own process: peak RSS is the process high-water mark (`VmHWM`).
//! - `bench quota`: quota efficiency (issue 5): a backlog of createReport calls drained
//!   through the TokenManager against the simulator's bucket, as wall time over the
//!   theoretical minimum and 429s; and the TokenManager's grants per second.
//! - `bench reports`: the report engine under report latency (issue 12): `sync --once`
//!   against an in-process simulator, as wall time over the quota-bound minimum
//!   ([`reports`]).
//!
//! - `bench catalog`: StockX calls per market-data lookup once the catalog cache is warm
//!   (issue 15) ([`catalog`]).
//! - `bench ebay-streams`: one eBay seller, all ten streams 90 days behind, caught up by
//!   `sync --once`: wall time over the quota-bound minimum (issue 14) ([`ebay_streams`]).
//! - `bench store-claims`: claims per second of the hour ledger shared by several daemons
//!   on PostgreSQL, against one SQLite file (issue 17) ([`store_claims`]).
//! - `bench cluster`: catch-up of the same accounts by one daemon on SQLite and by several
//!   sharing PostgreSQL and Redis, as separate processes (issue 17) ([`cluster`]).
//!
//! Layer 16 of docs/architecture.md. May use: everything. Nothing imports it but `cli` (and
//! tests).

pub mod catalog;
pub mod cluster;
pub mod cursor;
pub mod ebay_streams;
pub mod freshness;
pub mod inventory;
pub mod jobs;
pub mod quota;
pub mod redis_server;
pub mod reports;
pub mod store_claims;
pub mod supervisor;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use flate2::write::GzEncoder;

use crate::config::ClaimOrder;
use crate::domain::{format_ts, HourWindow, HOUR};
use crate::report::read_vendor_sales_document;
use crate::store::{LedgerStore, SqliteLedger};

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
    /// RSS and idle CPU of `marketsync run` with N accounts on the embedded simulator,
    /// measured after every account has caught up.
    Accounts {
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// How long to sample idle CPU.
        #[arg(long, default_value = "60s")]
        idle: humantime::Duration,
    },
    /// Time from an account actor's panic to its restarted incarnation running, with
    /// the backoff's own delay excluded.
    Restart {
        #[arg(long, default_value_t = 200)]
        crashes: usize,
    },
    /// Healthy accounts' sync throughput while a poison account crash-loops, as a ratio
    /// of their throughput without it.
    Poison {
        #[arg(long, default_value_t = 32)]
        healthy: usize,
        /// Days of lookback each healthy account catches up (7-day reports, so the
        /// simulator's createReport burst of 15 is never the limit).
        #[arg(long, default_value_t = 60)]
        days: u64,
    },
    /// Quota efficiency: drain `calls` createReport calls through the TokenManager
    /// against a simulator bucket of `rate`/s and `burst`, with limits configured right,
    /// with the rate unknown (learned from x-amzn-RateLimit-Limit), and with two
    /// TokenManagers sharing a private redis-server; then grants/s of the actor in
    /// process and in Redis mode.
    Quota {
        #[arg(long, default_value_t = 265)]
        calls: usize,
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 15.0)]
        burst: f64,
        /// Concurrent callers per TokenManager.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Grants for the grants/s figure (in process; Redis mode uses a tenth).
        #[arg(long, default_value_t = 200_000)]
        grants: usize,
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
    /// Issue 12's report-engine scenarios: `sync --once` wall time over the quota-bound
    /// minimum, 429s, duplicate createReports and cooldowns, against an in-process
    /// simulator with report latency.
    Reports(reports::BenchReportsArgs),
    /// A large zipped active-inventory report (issue 14; default about 2 GB of XML)
    /// parsed streaming, then parsed and applied: MB/s of XML and peak RSS growth.
    EbayInventory {
        #[arg(long, default_value_t = 13_500_000)]
        listings: u32,
        /// Days of changed reports applied after the first two snapshots, one after the
        /// other (1 to 30): whether a day's apply slows as the history grows.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=30))]
        days: u32,
    },
    /// The PostgreSQL apply of a large active-inventory snapshot (first, changed,
    /// unchanged): time, rows/s and peak RSS growth, in a scratch database it creates on
    /// the server and drops at the end.
    EbayInventoryPostgres {
        /// The variable holding the server's URL (any database on it; the bench creates
        /// its own beside it). Unset or empty: postgres://postgres@127.0.0.1:5432/postgres.
        #[arg(long, default_value = "MARKETSYNC_BENCH_PG_URL")]
        server_url_env: String,
        #[arg(long, default_value_t = 1_000_000)]
        skus: u64,
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
        BenchCommand::Accounts { accounts, idle } => {
            bench_accounts(dir.path(), accounts, idle.into())
        }
        BenchCommand::Restart { crashes } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench::supervisor::bench_restart_overhead(
                dir.path(),
                crashes,
            ))
        }
        BenchCommand::Poison { healthy, days } => bench_poison(dir.path(), healthy, days),
        BenchCommand::Quota {
            calls,
            rate,
            burst,
            workers,
            grants,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench::quota::bench_quota(
                calls, rate, burst, workers, grants,
            ))
        }
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
        BenchCommand::Reports(args) => reports::run(args),
        BenchCommand::EbayInventory { listings, days } => {
            inventory::run(dir.path(), listings, days)
        }
        BenchCommand::EbayInventoryPostgres {
            server_url_env,
            skus,
        } => {
            let url = std::env::var(&server_url_env)
                .ok()
                .filter(|url| !url.trim().is_empty())
                .unwrap_or_else(|| inventory::DEFAULT_SERVER_URL.to_string());
            inventory::run_postgres(&url, skus)
        }
    }
}

async fn bench_locks(
    dir: &Path,
    scopes: usize,
    concurrency: usize,
    ttl: std::time::Duration,
) -> anyhow::Result<i32> {
    use {crate::bench::redis_server::RedisServer, crate::lock::LockService};
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
                    // At most the lease's TTL: an expiry further off is not this lease's.
                    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
                    let wait = (until - crate::domain::now_ts()).clamp(1, ttl_secs) as u64;
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
            crate::store::WriteFence::Lease(1),
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
            crate::store::WriteFence::Unfenced,
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

/// `numerator / denominator` for rates and ratios of measured figures: a denominator of
/// zero (a step too fast for the clock) counts as a nanosecond instead of dividing by 0.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    numerator / denominator.max(1e-9)
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

/// Writes a demo-like config with `accounts` simulator-backed accounts (plus `extra`).
/// With `external_sim`, accounts talk to a simulator in another process (so its memory
/// is not counted as the daemon's) with credentials from BENCH_* variables.
fn write_accounts_config(
    dir: &Path,
    name: &str,
    accounts: &[String],
    lookback_hours: u64,
    chunk_hours: u64,
    extra: &str,
    external_sim: Option<std::net::SocketAddr>,
) -> anyhow::Result<std::path::PathBuf> {
    use std::fmt::Write as _;
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let simulator = match external_sim {
        Some(_) => String::new(),
        None => {
            "[simulator]\nenabled = true\nprocessing_latency = \"0s\"\nasins_per_marketplace = 10\n"
                .to_string()
        }
    };
    let mut text = format!(
        "data_dir = \"{}\"\n{simulator}[daemon]\nmax_concurrent_runs = 8\n{extra}\n",
        data.display()
    );
    for id in accounts {
        write!(
            text,
            "[[accounts]]\nid = \"{id}\"\nprovider = \"amazon\"\nmarketplace = \"ATVPDKIKX0DER\"\n"
        )?;
        if let Some(addr) = external_sim {
            write!(
                text,
                "endpoint = \"http://{addr}\"\ntoken_url = \"http://{addr}/auth/o2/token\"\n[accounts.credentials]\nclient_id_env = \"BENCH_CLIENT_ID\"\nclient_secret_env = \"BENCH_CLIENT_SECRET\"\nrefresh_token_env = \"BENCH_REFRESH_TOKEN\"\n"
            )?;
        }
        write!(
            text,
            "[accounts.streams.vendor_rt_sales]\nlookback = \"{lookback_hours}h\"\nchunk = \"{chunk_hours}h\"\npoll_min = \"20ms\"\npoll_max = \"100ms\"\ndaily_audit = false\n"
        )?;
    }
    let path = data.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts `marketsync run` (this executable) on `config`, logging to a file.
fn spawn_daemon(config: &Path) -> anyhow::Result<std::process::Child> {
    spawn_daemon_with(config, &[("BENCH_REFRESH_TOKEN", "bench-refresh")])
}

/// [`spawn_daemon`] with the bench client's credentials and `env` (refresh tokens, the
/// store's URL) in the daemon's environment; its stderr goes to `config` with `.log`.
fn spawn_daemon_with(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::create(config.with_extension("log"))?;
    Ok(std::process::Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "marketsync=warn")
        .env("BENCH_CLIENT_ID", "bench-client")
        .env("BENCH_CLIENT_SECRET", "bench-secret")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// APPLIED hours across every account, read from the daemon's database.
fn applied_hours_total(config: &Path) -> i64 {
    let database = config.with_file_name("marketsync.db");
    let Ok(ledger) = SqliteLedger::open(&database) else {
        return 0;
    };
    ledger
        .applied_hours_total()
        .map_or(0, |count| i64::try_from(count).unwrap_or(i64::MAX))
}

fn wait_for_applied(
    config: &Path,
    target: i64,
    deadline: std::time::Duration,
) -> anyhow::Result<std::time::Duration> {
    wait_until_applied(
        u64::try_from(target).unwrap_or(0),
        deadline,
        config,
        None,
        || u64::try_from(applied_hours_total(config)).ok(),
    )
}

/// Polls `applied` every 200 ms until it reaches `target` hours; returns how long that
/// took. Prints the count every `progress` if given. The error names `config`'s log.
fn wait_until_applied(
    target: u64,
    deadline: std::time::Duration,
    config: &Path,
    progress: Option<std::time::Duration>,
    mut applied: impl FnMut() -> Option<u64>,
) -> anyhow::Result<std::time::Duration> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let now = applied().unwrap_or(0);
        if now >= target {
            return Ok(started.elapsed());
        }
        if started.elapsed() > deadline {
            anyhow::bail!(
                "only {now} of {target} hours applied after {}; see {}",
                humantime::format_duration(deadline),
                config.with_extension("log").display()
            );
        }
        if progress.is_some_and(|every| last_print.elapsed() >= every) {
            eprintln!(
                "  {now} of {target} hours applied after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// (resident MB, cpu seconds) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kb / 1024.0, ticks / 100.0))
}

fn stop_daemon(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + std::time::Duration::from_secs(40);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn bench_accounts(dir: &Path, accounts: usize, idle: std::time::Duration) -> anyhow::Result<i32> {
    let ids: Vec<String> = (0..accounts).map(|n| format!("acct-{n:05}")).collect();
    // The simulator runs in its own process: its memory is not the daemon's. Its
    // per-seller buckets are keyed by refresh token, shared here, so raise the limits.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let sim_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let faults = dir.join("sim.json");
    std::fs::write(&faults, "{}")?;
    let mut sim = std::process::Command::new(std::env::current_exe()?)
        .args([
            "sim",
            "--listen",
            &sim_addr.to_string(),
            "--latency",
            "0s",
            "--asins",
            "10",
            "--unlimited",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let config = write_accounts_config(dir, "accounts", &ids, 6, 6, "", Some(sim_addr))?;
    let started = Instant::now();
    let child = spawn_daemon(&config)?;
    let pid = child.id();
    let caught_up = wait_for_applied(
        &config,
        6 * accounts as i64,
        std::time::Duration::from_secs(1800),
    );
    let caught_up = match caught_up {
        Ok(elapsed) => elapsed,
        Err(err) => {
            stop_daemon(child);
            let _ = sim.kill();
            return Err(err);
        }
    };
    println!(
        "{accounts} accounts caught up ({} hours) in {:.1}s",
        6 * accounts,
        caught_up.as_secs_f64()
    );
    // Let the last runs finish and the process settle before sampling.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (rss_start, cpu_start) = process_usage(pid).context("reading /proc for the daemon")?;
    std::thread::sleep(idle);
    let (rss_end, cpu_end) = process_usage(pid).context("reading /proc for the daemon")?;
    let cpu_percent = 100.0 * (cpu_end - cpu_start) / idle.as_secs_f64();
    println!(
        "idle for {}: rss {:.1} MB (was {:.1} MB at the start of the window; target <= 150 MB) {}",
        humantime::format_duration(idle),
        rss_end,
        rss_start,
        verdict(rss_end <= 150.0)
    );
    println!(
        "idle cpu {:.2}% of one core (target <= 2%) {}",
        cpu_percent,
        verdict(cpu_percent <= 2.0)
    );
    stop_daemon(child);
    let _ = sim.kill();
    let _ = sim.wait();
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    Ok(0)
}

fn bench_poison(dir: &Path, healthy: usize, days: u64) -> anyhow::Result<i32> {
    let ids: Vec<String> = (0..healthy).map(|n| format!("healthy-{n:03}")).collect();
    let hours = 24 * days;
    let target = (hours as usize * healthy) as i64;
    // Three alternating rounds; the medians are compared (single runs of a few seconds
    // on two cores vary by about 10%).
    let mut without_rates = Vec::new();
    let mut with_rates = Vec::new();
    for (round, (name, poison)) in [("without", false), ("with", true)]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let name = format!("{name}-{}", round / 2);
        let mut accounts = ids.clone();
        let mut extra = String::new();
        if poison {
            accounts.push("poison".to_string());
            // Crash-loop for the whole run: a high crash limit, tiny backoff.
            extra.push_str(
                "[supervisor]\nmin_backoff = \"100ms\"\nmax_backoff = \"1s\"\nmax_crashes = 1000000\nheartbeat = \"1s\"\n[chaos]\nenabled = true\naccount = \"poison\"\naction = \"panic\"\nevery_unit = true\n",
            );
        }
        let config = write_accounts_config(dir, &name, &accounts, hours, 168, &extra, None)?;
        let child = spawn_daemon(&config)?;
        let elapsed = wait_for_applied(&config, target, std::time::Duration::from_secs(600));
        stop_daemon(child);
        // Read after the shutdown, which persists the supervisor's latest counts.
        let restarts = if poison {
            let database = config.with_file_name("marketsync.db");
            SqliteLedger::open(&database)
                .map(|ledger| {
                    ledger
                        .with_read_conn(crate::store::supervision::load)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|child| child.account == "poison")
                        .map_or(0, |child| i64::try_from(child.restarts).unwrap_or(i64::MAX))
                })
                .unwrap_or(0)
        } else {
            0
        };
        let elapsed = elapsed?;
        let rate = target as f64 / elapsed.as_secs_f64();
        println!(
            "{name} a poison account: {healthy} healthy accounts applied {target} hours in {:.2}s ({rate:.0} hours/s){}",
            elapsed.as_secs_f64(),
            if poison { format!("; poison restarts meanwhile: {restarts}") } else { String::new() }
        );
        if poison {
            with_rates.push(rate);
        } else {
            without_rates.push(rate);
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let ratio = median(&mut with_rates) / median(&mut without_rates);
    println!(
        "healthy throughput with / without the poison account: {:.1}% (target >= 95%) {}",
        100.0 * ratio,
        verdict(ratio >= 0.95)
    );
    Ok(0)
}
