//! `marketsync bench cluster`: issue 17's catch-up benchmark. The same accounts caught
//! up by one daemon on the embedded SQLite file, then by several daemons sharing a
//! PostgreSQL store and Redis (leases, quota, membership) and splitting the accounts
//! between them; wall time of each against the other and against the quota-bound
//! minimum, claims per second the shared store took, createReports per window.
//!
//! Everything runs as separate processes of this executable: a simulator (`marketsync
//! sim`, Amazon's documented rates, a fixed report latency, `--time-scale` to run
//! production's ratios faster), a private redis-server, and the daemons (`marketsync
//! run`). Accounts share sellers (`selling_partner_id` and one refresh token per seller),
//! so a seller's createReport bucket, not the store, bounds the catch-up: the case the
//! issue's target (≤ 1.1× of the single daemon) is about. The daemons' quota tables carry
//! the documented rates × time_scale and their stream timings are divided by it, as in
//! `bench reports`.
//!
//! The PostgreSQL database is a fresh `ms_bench_<pid>` made on the server of `--url` and
//! dropped afterwards.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::redis_server::RedisServer;
use super::reports::quota_bound_minimum;
use super::store_claims::{load_average, BenchDatabase};
use crate::sim::{RateSpec, SimStats};
use crate::store::{LedgerReads, SqliteLedger};

#[derive(Debug, clap::Args)]
pub struct BenchClusterArgs {
    /// A PostgreSQL server (the bench makes and drops its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub url: String,
    /// Accounts, split over the sellers round-robin.
    #[arg(long, default_value_t = 3_000)]
    pub accounts: usize,
    /// Sellers (each its own createReport bucket): accounts / sellers share each, one
    /// marketplace each (so at most 20 accounts per seller request distinct reports).
    #[arg(long, default_value_t = 150)]
    pub sellers: usize,
    /// Daemons sharing PostgreSQL and Redis in the second run.
    #[arg(long, default_value_t = 3)]
    pub daemons: usize,
    /// Hours each account is behind (a whole number of 6-hour windows is best).
    #[arg(long, default_value_t = 12)]
    pub lookback_hours: u64,
    /// Report latency in provider time.
    #[arg(long, default_value = "60s")]
    pub latency: humantime::Duration,
    /// Simulated seconds per real second (latencies and rate refills together).
    #[arg(long, default_value_t = 60.0)]
    pub time_scale: f64,
    /// Give up on a run after this long.
    #[arg(long, default_value = "30m")]
    pub deadline: humantime::Duration,
}

/// Amazon's documented limits (the simulator's defaults): createReport, getReport,
/// getReportDocument.
const DOCUMENTED: [(&str, f64, f64); 3] = [
    ("createReport", 0.0167, 15.0),
    ("getReport", 2.0, 15.0),
    ("getReportDocument", 0.0167, 15.0),
];

/// Amazon marketplace ids: a seller's accounts are its marketplaces (the same window of
/// one seller in one marketplace twice would be the same report).
const MARKETPLACES: [&str; 20] = [
    "ATVPDKIKX0DER",
    "A2EUQ1WTGCTBG2",
    "A1AM78C64UM0Y8",
    "A2Q3Y263D00KWC",
    "A1F83G8C2ARO7P",
    "A1PA6795UKMFR9",
    "A13V1IB3VIYZZH",
    "APJ6JRA9NG5V4",
    "A1RKKUPIHCS9HS",
    "A1805IZSGTT6HS",
    "A2NODRKZP88ZB9",
    "A1C3SOZRARQ6R3",
    "A33AVAJ2PDY3EV",
    "A17E79C6D8DWNP",
    "A2VIGQ35RCS4UG",
    "A21TJRUUN4KGV",
    "A19VAU5U5O7RUS",
    "A39IBJ37TRP1C6",
    "A1VC38T7YXB528",
    "AMEN7PMS3EDWL",
];

/// Hours per window (the streams' chunk).
const CHUNK_HOURS: u64 = 6;

/// What one run did.
struct RunOutcome {
    wall: Duration,
    stats: SimStats,
}

pub fn run(args: BenchClusterArgs) -> anyhow::Result<i32> {
    let accounts = args.accounts.clamp(1, 100_000);
    let sellers = args.sellers.clamp(1, accounts);
    let daemons = args.daemons.clamp(1, 16);
    let lookback = args.lookback_hours.clamp(1, 24 * 90);
    let time_scale = args.time_scale;
    if !(crate::sim::TIME_SCALE_MIN..=crate::sim::TIME_SCALE_MAX).contains(&time_scale) {
        anyhow::bail!(
            "--time-scale: {time_scale} is out of range; use {} to {}",
            crate::sim::TIME_SCALE_MIN,
            crate::sim::TIME_SCALE_MAX
        );
    }
    if accounts.div_ceil(sellers) > MARKETPLACES.len() {
        println!(
            "warning: {} accounts per seller but {} marketplaces: some accounts request the same reports as others (the simulator counts them as duplicates)",
            accounts.div_ceil(sellers),
            MARKETPLACES.len()
        );
    }
    let latency: Duration = args.latency.into();
    let deadline: Duration = args.deadline.into();
    let dir = tempfile::tempdir().context("temp dir")?;
    let windows_per_account = lookback.div_ceil(CHUNK_HOURS);
    let mut windows_per_seller = vec![0u64; sellers];
    for account in 0..accounts {
        windows_per_seller[account % sellers] += windows_per_account;
    }
    let spec = |operation: &str| {
        DOCUMENTED
            .iter()
            .find(|(name, _, _)| *name == operation)
            .map(|(_, rate, burst)| RateSpec {
                rate: rate * time_scale,
                burst: *burst,
            })
            .unwrap_or(RateSpec {
                rate: 1.0,
                burst: 1.0,
            })
    };
    let bound = quota_bound_minimum(
        &windows_per_seller,
        spec("createReport"),
        spec("getReportDocument"),
        latency.as_secs_f64() / time_scale,
    );
    println!(
        "{accounts} accounts over {sellers} sellers, {lookback} h behind in {CHUNK_HOURS}-hour windows ({} windows, up to {} per seller); Amazon's documented rates at time_scale {time_scale}, report latency {} provider time",
        accounts as u64 * windows_per_account,
        windows_per_seller.iter().max().copied().unwrap_or(0),
        humantime::format_duration(latency),
    );
    println!("quota-bound minimum: {bound:.1} s");
    println!("load average (1/5/15 min): {}", load_average());
    let target_hours = accounts as u64 * lookback;

    // One daemon on the embedded SQLite file (no Redis, no PostgreSQL).
    let single = {
        let sim = Simulator::start(dir.path(), latency, time_scale)?;
        let config = write_config(dir.path(), "single", &args, sim.address, None, sellers)?;
        let started = Instant::now();
        let daemon = spawn_daemon(&config, sellers, &[])?;
        let database = config.with_file_name("marketsync.db");
        let outcome = wait_for(target_hours, deadline, &config, || {
            SqliteLedger::open(&database)
                .ok()
                .and_then(|ledger| ledger.applied_hours_total().ok())
        });
        let wall = started.elapsed();
        stop(vec![daemon]);
        outcome?;
        RunOutcome {
            wall,
            stats: sim.stats()?,
        }
    };
    report(
        "1 daemon, sqlite",
        &single,
        None,
        bound,
        accounts as u64 * windows_per_account,
    );
    println!("load average (1/5/15 min): {}", load_average());

    // `daemons` daemons on one PostgreSQL database and one Redis.
    let database = BenchDatabase::create(&args.url)?;
    let redis = RedisServer::start().context("starting a private redis-server")?;
    let cluster = {
        let sim = Simulator::start(dir.path(), latency, time_scale)?;
        let shared = Shared {
            redis_url: redis.url(),
        };
        let started = Instant::now();
        let mut children = Vec::new();
        let mut configs = Vec::new();
        for member in 0..daemons {
            let name = format!("member-{member}");
            let config = write_config(
                dir.path(),
                &name,
                &args,
                sim.address,
                Some((&shared, &name)),
                sellers,
            )?;
            children.push(spawn_daemon(
                &config,
                sellers,
                &[("BENCH_DATABASE_URL", database.url.as_str())],
            )?);
            configs.push(config);
        }
        let ledger = crate::store::PgLedger::open(
            &database.url,
            &crate::store::postgres::PgSettings {
                pool_size: 1,
                ..Default::default()
            },
        )?;
        let outcome = wait_for(target_hours, deadline, &configs[0], || {
            ledger.applied_hours_total().ok()
        });
        let wall = started.elapsed();
        stop(children);
        outcome?;
        drop(ledger);
        let claims = database
            .count("SELECT COUNT(*) FROM ledger_claims")
            .unwrap_or(0);
        let run = RunOutcome {
            wall,
            stats: sim.stats()?,
        };
        println!(
            "postgresql took {claims} claims in {:.1} s: {:.0} claims/s over the run (a claim is one window requested, reported, downloaded and applied)",
            wall.as_secs_f64(),
            super::ratio(claims as f64, wall.as_secs_f64())
        );
        run
    };
    report(
        &format!("{daemons} daemons, postgresql + redis"),
        &cluster,
        Some(&single),
        bound,
        accounts as u64 * windows_per_account,
    );
    println!("load average (1/5/15 min): {}", load_average());
    let ratio = super::ratio(cluster.wall.as_secs_f64(), single.wall.as_secs_f64());
    let ok = ratio <= 1.1;
    println!(
        "cluster / single daemon: {ratio:.3} (target <= 1.1 when quota-bound) {}",
        if ok { "ok" } else { "MISSED" }
    );
    drop(redis);
    drop(database);
    Ok(if ok { 0 } else { 1 })
}

fn report(label: &str, run: &RunOutcome, baseline: Option<&RunOutcome>, bound: f64, windows: u64) {
    let against = baseline
        .map(|base| {
            format!(
                ", {:.3}x the single daemon",
                super::ratio(run.wall.as_secs_f64(), base.wall.as_secs_f64())
            )
        })
        .unwrap_or_default();
    let creates = run.stats.calls("createReport");
    println!(
        "{label:<34} caught up in {:.1} s = {:.3}x the quota-bound minimum{against}; createReport {creates} for {windows} windows ({} duplicates), 429s: createReport {} getReport {} getReportDocument {}",
        run.wall.as_secs_f64(),
        super::ratio(run.wall.as_secs_f64(), bound),
        run.stats.duplicate_reports(),
        run.stats.throttled("createReport"),
        run.stats.throttled("getReport"),
        run.stats.throttled("getReportDocument"),
    );
}

/// What the cluster's members share.
struct Shared {
    redis_url: String,
}

/// A simulator process on a free port.
struct Simulator {
    child: Child,
    address: std::net::SocketAddr,
}

impl Simulator {
    fn start(dir: &Path, latency: Duration, time_scale: f64) -> anyhow::Result<Simulator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.join(format!("sim-{port}.log")))?;
        let child = Command::new(std::env::current_exe()?)
            .args([
                "sim",
                "--listen",
                &address.to_string(),
                "--latency",
                &format!("{}ms", latency.as_millis()),
                "--time-scale",
                &time_scale.to_string(),
                "--asins",
                "5",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the simulator")?;
        let sim = Simulator { child, address };
        let started = Instant::now();
        while sim.stats().is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the simulator did not answer on {address} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(sim)
    }

    /// `GET /_sim/stats` over a plain HTTP/1.0 request (no client runtime needed here).
    fn stats(&self) -> anyhow::Result<SimStats> {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect_timeout(&self.address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /_sim/stats HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )?;
        let mut response = Vec::new();
        stream.take(16 * 1024 * 1024).read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .context("a response without a body")?;
        Ok(serde_json::from_str(body)?)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refresh_env(seller: usize) -> String {
    format!("BENCH_REFRESH_{seller}")
}

fn write_config(
    dir: &Path,
    name: &str,
    args: &BenchClusterArgs,
    sim: std::net::SocketAddr,
    member: Option<(&Shared, &str)>,
    sellers: usize,
) -> anyhow::Result<PathBuf> {
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let scale = args.time_scale;
    let mut text = format!("data_dir = \"{}\"\n", data.display());
    if let Some((shared, member_id)) = member {
        write!(
            text,
            "[redis]\nurl = \"{}\"\n[store]\nurl_env = \"BENCH_DATABASE_URL\"\n[cluster]\nenabled = true\nmember_id = \"{member_id}\"\nheartbeat = \"1s\"\nmember_ttl = \"3s\"\n[locks]\nttl = \"10s\"\n",
            shared.redis_url
        )?;
    }
    for (operation, rate, burst) in DOCUMENTED {
        write!(
            text,
            "[quota.amazon.{operation}]\nrate = {:?}\nburst = {burst}\n",
            (rate * scale * 1e6).round() / 1e6
        )?;
    }
    let scaled = |secs: f64| format!("{}ms", ((secs / scale) * 1000.0).round().max(1.0) as u64);
    for account in 0..args.accounts.clamp(1, 100_000) {
        let seller = account % sellers;
        let marketplace = MARKETPLACES[(account / sellers) % MARKETPLACES.len()];
        write!(
            text,
            "[[accounts]]\nid = \"acct-{account:05}\"\nprovider = \"amazon\"\nmarketplace = \"{marketplace}\"\nselling_partner_id = \"SELLER{seller:04}\"\nendpoint = \"http://{sim}\"\ntoken_url = \"http://{sim}/auth/o2/token\"\n[accounts.credentials]\nclient_id_env = \"BENCH_CLIENT_ID\"\nclient_secret_env = \"BENCH_CLIENT_SECRET\"\nrefresh_token_env = \"{}\"\n[accounts.streams.vendor_rt_sales]\nlookback = \"{}h\"\nchunk = \"{CHUNK_HOURS}h\"\ndaily_audit = false\ninterval = \"{}\"\nsafety_lag = \"0s\"\npoll_min = \"{}\"\npoll_max = \"{}\"\nquota_cooldown = \"{}\"\nretry_base = \"{}\"\nretry_max = \"{}\"\n",
            refresh_env(seller),
            args.lookback_hours.clamp(1, 24 * 90),
            scaled(900.0),
            scaled(5.0),
            scaled(60.0),
            scaled(1800.0),
            scaled(30.0),
            scaled(1800.0),
        )?;
    }
    let path = data.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `marketsync run` on `config` with every seller's refresh token and `env`.
fn spawn_daemon(config: &Path, sellers: usize, env: &[(&str, &str)]) -> anyhow::Result<Child> {
    let tokens: Vec<(String, String)> = (0..sellers)
        .map(|seller| (refresh_env(seller), format!("bench-seller-{seller}")))
        .collect();
    let mut all: Vec<(&str, &str)> = tokens
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    all.extend_from_slice(env);
    super::spawn_daemon_with(config, &all)
}

/// Polls `applied` until it reaches `target` hours, printing the count every 15 s.
fn wait_for(
    target: u64,
    deadline: Duration,
    config: &Path,
    applied: impl FnMut() -> Option<u64>,
) -> anyhow::Result<()> {
    super::wait_until_applied(
        target,
        deadline,
        config,
        Some(Duration::from_secs(15)),
        applied,
    )
    .map(|_| ())
}

/// SIGTERM to every daemon at once (they shut down together), then
/// [`super::stop_daemon`] on each (it waits, SIGKILL after 40 s).
fn stop(children: Vec<Child>) {
    for child in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    children.into_iter().for_each(super::stop_daemon);
}
