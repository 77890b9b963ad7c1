//! Command-line parsing (clap) and dispatch. Flags are parsed once here and turned into
//! a validated [`Config`]; nothing downstream re-validates.

pub mod jobs;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use tracing::{info, warn};

use crate::config::Config;
use crate::domain::now_ts;
use crate::store::{LedgerStore, Priority, SqliteLedger};

#[derive(Debug, Parser)]
#[command(
    name = "marketsync",
    version,
    about = "Keeps a local SQLite database in sync with rate-limited marketplace APIs",
    after_help = "Without --config the embedded demo configuration is used (the demo against the bundled simulator)."
)]
pub struct Cli {
    /// The TOML configuration file (see config/example.toml).
    #[arg(long, global = true, env = "MARKETSYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Overrides the configuration's data_dir (where the SQLite file lives).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Ask the running daemon to clear a quarantine and restart the account (within one
    /// supervisor heartbeat); a daemon started later starts it at once.
    Resume { id: String },
}

#[derive(Debug, Subcommand)]
pub enum LocksAction {
    /// Release a stale lease (SCOPE is ACCOUNT/STREAM); --force releases a live one.
    Release {
        scope: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGINT or SIGTERM (a second signal exits at once).
    Run,
    /// Catch up every configured stream once and exit (a progress bar with rate and ETA
    /// when attached to a terminal). Exits 1 if a stream stopped early (cooldown, lock
    /// busy, failing hours waiting for their retry).
    Sync {
        /// Required: there is no continuous mode here (that is `marketsync run`).
        #[arg(long)]
        once: bool,
        /// Give up after this long.
        #[arg(long, default_value = "30m")]
        timeout: humantime::Duration,
    },
    /// Serve the bundled marketplace simulator.
    Sim {
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
        /// Seed of the deterministic data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Time a report takes to finish, e.g. 2s.
        #[arg(long, default_value = "2s")]
        latency: humantime::Duration,
        #[arg(long, default_value_t = 25)]
        asins: u32,
        /// Lift the per-seller rate limits (for load benchmarks, never for quota tests).
        #[arg(long)]
        unlimited: bool,
        /// A JSON file with fault settings (see README: simulator faults).
        #[arg(long, value_name = "FILE")]
        faults: Option<PathBuf>,
    },
    /// Validate the configuration and exit non-zero on the first error.
    CheckConfig,
    /// Per account and stream: counts per state, last applied, next claimable, cooldown.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Account actors: resume a quarantined account.
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// List leases (scope, owner, fence, expiry, stale), or release one.
    Locks {
        #[command(subcommand)]
        action: Option<LocksAction>,
        #[arg(long)]
        json: bool,
    },
    /// List running cooldowns (scope, reason, started, until, detail), or end one early.
    Cooldowns {
        #[command(subcommand)]
        action: Option<crate::diagnose::cooldowns::CooldownsAction>,
        #[arg(long)]
        json: bool,
    },
    /// Reset one UTC day's hours of a stream to MISSING so they are fetched again.
    FillDay {
        account: String,
        stream: String,
        /// The UTC day, YYYY-MM-DD.
        date: String,
    },
    /// Why an account is not syncing: lock, cooldown, failures, quarantine, auth, Redis
    /// and endpoints; one line per finding with its fix. Exits 1 when something needs a
    /// person.
    Doctor {
        /// Only this account.
        account: Option<String>,
        /// Only this stream of the account.
        stream: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks (not tests): ledger throughput, apply throughput and memory.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
    /// Queue a StockX market-data or Keepa product lookup (merged into a pending job of
    /// the same key, keeping the higher priority).
    Enqueue {
        /// stockx or keepa.
        provider: String,
        /// StockX style id (e.g. DD1391-100) or Keepa ASIN.
        sku: String,
        /// StockX size (required for stockx).
        #[arg(long)]
        size: Option<String>,
        /// manual, hot or background.
        #[arg(long, default_value = "manual")]
        priority: String,
    },
    /// List queued jobs (newest first), or reset failed ones.
    Jobs {
        #[command(subcommand)]
        action: Option<crate::cli::jobs::JobsAction>,
        /// Only jobs in this state: pending, running, succeeded, failed, not_found.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `marketsync bench ...`: the benchmarks of `crate::bench` plus those of other modules.
#[derive(Debug, Subcommand)]
pub enum BenchWhich {
    #[command(flatten)]
    Core(crate::bench::BenchCommand),
    /// Jobs drained per second when the budget is not the limit (StockX and Keepa
    /// against the simulator over HTTP).
    Jobs(crate::bench::jobs::BenchJobsArgs),
    /// Catch-up of one eBay account 90 days behind: wall time against the quota-bound
    /// minimum, and RSS while paging.
    Ebay(crate::bench::cursor::BenchEbayArgs),
}

/// Parses the arguments and runs the command; returns the process exit code.
pub fn main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run | Command::Sim { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    match cli.command {
        Command::Run => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            runtime()?.block_on(run_daemon(config))?;
            Ok(0)
        }
        Command::Sync { once, timeout } => {
            if !once {
                bail!("sync needs --once; to keep syncing, run the daemon: marketsync run");
            }
            let config = load_config(&cli.config, &cli.data_dir)?;
            runtime()?.block_on(crate::app::sync_once(config, timeout.into()))
        }
        Command::Sim {
            listen,
            seed,
            latency,
            asins,
            unlimited,
            ref faults,
        } => {
            let faults = match faults {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("{}: cannot read the faults file", path.display())
                    })?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: invalid faults", path.display()))?
                }
                None => crate::sim::SimFaults::default(),
            };
            let mut config = crate::sim::SimConfig {
                seed,
                processing_latency: latency.into(),
                asins_per_marketplace: asins,
                faults,
                ..crate::sim::SimConfig::default()
            };
            if unlimited {
                for operation in ["createReport", "getReport", "getReportDocument"] {
                    config.rates.insert(
                        operation.to_string(),
                        crate::sim::RateSpec {
                            rate: 1e9,
                            burst: 1e9,
                        },
                    );
                }
            }
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("--listen: cannot listen on {listen}"))?;
                info!(address = %listener.local_addr()?, "simulator listening");
                let sim = crate::sim::Simulator::new(config);
                crate::sim::serve(listener, sim, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
                anyhow::Ok(())
            })?;
            Ok(0)
        }
        Command::CheckConfig => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            let streams: usize = config
                .accounts
                .iter()
                .map(|account| account.streams.len())
                .sum();
            println!(
                "{}: ok ({} accounts, {} streams, data in {})",
                config.source_name,
                config.accounts.len(),
                streams,
                config.data_dir.display()
            );
            Ok(0)
        }
        Command::Status { json } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            let ledger = open_ledger(&config)?;
            let locks = runtime()?.block_on(list_locks(&config));
            let lock_list = match &locks {
                Ok(list) => list.as_slice(),
                Err(err) => {
                    eprintln!("marketsync: cannot read leases: {err:#}; lock fields are empty");
                    &[]
                }
            };
            let supervision = ledger.with_conn(|conn| crate::store::supervision::statuses(conn))?;
            let report = crate::diagnose::status::collect(
                &config.deployment(),
                &ledger,
                lock_list,
                &supervision,
                now_ts(),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::diagnose::status::render_table(&report));
            }
            Ok(0)
        }
        Command::FillDay {
            ref account,
            ref stream,
            ref date,
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            let window = crate::diagnose::repair::fill_day_window(
                &config.deployment(),
                account,
                stream,
                date,
            )?;
            let ledger = open_ledger(&config)?;
            let reset = ledger.reset_window(account, stream, window, Priority::Manual, now_ts())?;
            println!(
                "{account}/{stream}: {reset} hours of {date} reset to MISSING; the daemon fetches them on its next run"
            );
            Ok(0)
        }
        Command::Accounts {
            action: AccountsAction::Resume { ref id },
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            if config.account(id).is_none() {
                let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
                bail!(
                    "unknown account {id:?}; configured accounts: {}",
                    known.join(", ")
                );
            }
            let ledger = open_ledger(&config)?;
            let requested =
                ledger.with_conn(|conn| crate::store::supervision::request_resume(conn, id))?;
            if requested {
                println!("{id}: resume requested; the daemon restarts it within one supervisor heartbeat");
                Ok(0)
            } else {
                println!("{id}: not quarantined; nothing to resume");
                Ok(0)
            }
        }
        Command::Locks { ref action, json } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            runtime()?.block_on(locks_command(&config, action.as_ref(), json))
        }
        Command::Cooldowns { ref action, json } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            crate::diagnose::cooldowns::command(&config.deployment(), action.as_ref(), json)
        }
        Command::Doctor {
            ref account,
            ref stream,
            json,
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            crate::diagnose::run(
                &config.deployment(),
                account.as_deref(),
                stream.as_deref(),
                json,
                &crate::diagnose::DoctorOptions {
                    command: Some(crate::diagnose::command_line(
                        cli.config.as_deref(),
                        cli.data_dir.as_deref(),
                    )),
                    admin_url: config
                        .http
                        .as_ref()
                        .map(|http| format!("http://{}", http.listen))
                        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string()),
                    admin_token_env: config
                        .http
                        .as_ref()
                        .and_then(|http| http.admin_token_env.clone())
                        .unwrap_or_else(|| "MARKETSYNC_ADMIN_TOKEN".to_string()),
                },
            )
        }
        Command::Bench { which } => match which {
            BenchWhich::Core(which) => crate::bench::run(which),
            BenchWhich::Jobs(args) => crate::bench::jobs::run(args),
            BenchWhich::Ebay(args) => crate::bench::cursor::run(args),
        },
        Command::Enqueue {
            ref provider,
            ref sku,
            ref size,
            ref priority,
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            crate::cli::jobs::enqueue_command(&config, provider, sku, size.as_deref(), priority)
        }
        Command::Jobs {
            ref action,
            ref state,
            json,
            limit,
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            match action {
                Some(crate::cli::jobs::JobsAction::ResetFailed { provider }) => {
                    crate::cli::jobs::reset_failed_command(&config, provider.as_deref())
                }
                None => crate::cli::jobs::list_command(&config, state.as_deref(), json, limit),
            }
        }
    }
}

/// Leases from the configured backend, failing fast when Redis is down.
async fn list_locks(config: &Config) -> anyhow::Result<Vec<crate::lock::LockInfo>> {
    let locks = connect_locks(config).await?;
    Ok(locks.list().await?)
}

async fn connect_locks(config: &Config) -> anyhow::Result<crate::lock::LockService> {
    match &config.redis {
        Some(redis) => {
            let url = redis
                .url
                .resolve()
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            Ok(crate::lock::LockService::redis(&url, &redis.prefix).await?)
        }
        None => Ok(crate::lock::LockService::sqlite(&config.database_path()).await?),
    }
}

async fn locks_command(
    config: &Config,
    action: Option<&LocksAction>,
    json: bool,
) -> anyhow::Result<i32> {
    let locks = connect_locks(config).await?;
    match action {
        None => {
            let all = locks.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            let mut rows = vec![[
                "SCOPE".to_string(),
                "OWNER".to_string(),
                "FENCE".to_string(),
                "EXPIRES_AT".to_string(),
                "REMAINING".to_string(),
                "STALE".to_string(),
            ]];
            for info in &all {
                rows.push([
                    info.scope.clone(),
                    info.owner.clone(),
                    info.fence.to_string(),
                    info.expires_at_ms
                        .map(|ms| crate::domain::format_ts(ms.div_euclid(1000)))
                        .unwrap_or_else(|| "never (no ttl)".to_string()),
                    info.remaining_ms
                        .map(|ms| {
                            humantime::format_duration(std::time::Duration::from_secs(
                                (ms.max(0) / 1000) as u64,
                            ))
                            .to_string()
                        })
                        .unwrap_or_else(|| "-".to_string()),
                    info.stale.to_string(),
                ]);
            }
            let widths: Vec<usize> = (0..6)
                .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
                .collect();
            for row in rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                println!("{}", line.join("  ").trim_end());
            }
            if all.is_empty() {
                println!("(no leases held)");
            }
            Ok(0)
        }
        Some(LocksAction::Release { scope, force }) => {
            match locks.release_scope(scope, *force).await {
                Ok(Some(info)) => {
                    println!(
                        "released {} (owner {}, fence {}{})",
                        info.scope,
                        info.owner,
                        info.fence,
                        if info.stale { ", stale" } else { ", was live" }
                    );
                    Ok(0)
                }
                Ok(None) => {
                    println!("no lease on {scope}");
                    Ok(0)
                }
                Err(crate::lock::LockError::Busy { holder, until, .. }) => {
                    bail!("{scope} is held by a live lease of {holder} until {until}; wait for it to expire, or pass --force if that owner is gone")
                }
                Err(err) => Err(err.into()),
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // SQLite calls serialise on one connection anyway; more threads only add
        // stacks and malloc arenas.
        .max_blocking_threads(16)
        .build()
        .context("starting the async runtime")
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("marketsync={default_level},warn"))
    });
    // Colours only on a terminal: a log file or journald must not get escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `--config`, else the embedded demo; `--data-dir` overrides the data directory.
pub fn load_config(path: &Option<PathBuf>, data_dir: &Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => {
            info!("no --config given; using the embedded demo configuration");
            Config::embedded_demo()?
        }
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

fn open_ledger(config: &Config) -> anyhow::Result<SqliteLedger> {
    Ok(SqliteLedger::open(&config.database_path())?)
}

/// Runs the daemon until the first SIGINT/SIGTERM; a second one exits at once.
async fn run_daemon(config: Config) -> anyhow::Result<()> {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = first_tx.send(());
        wait_for_signal().await;
        warn!("second signal: exiting now; the ledger resumes units in flight on the next start");
        std::process::exit(130);
    });
    crate::app::run(config, async {
        let _ = first_rx.await;
    })
    .await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
