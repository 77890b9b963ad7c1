//! Command-line parsing (clap) and dispatch. Flags are parsed once here and turned into
//! a validated [`Config`]; nothing downstream re-validates.
//!
//! Layer 15 of docs/architecture.md. May use: everything, including `bench`. Holds no logic
//! a surface shares (that lives in `diagnose`).

mod accounts;
mod auth;
mod check_config;
mod completions;
pub mod cooldowns;
mod doctor;
mod export;
mod fill_day;
pub mod jobs;
mod locks;
mod man;
mod run;
mod sim;
mod status;
pub mod store;
mod sync;
pub mod track;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::info;

use crate::config::Config;
use crate::store::SqliteLedger;

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

#[derive(Debug, Subcommand)]
pub enum AuthProvider {
    /// eBay's authorization-code grant: prints the consent URL of the account's
    /// application (its ru_name and the scopes of its enabled streams), takes the
    /// redirected URL or code, and prints the refresh token and its expiry (never stored).
    Ebay {
        account: String,
        /// The redirected URL or the bare code (otherwise read from stdin).
        #[arg(long)]
        code: Option<String>,
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
        /// Report processing times: fast (every report takes --latency) or realistic
        /// (production-shaped: median about 60 s, tail to 10 min, 1 % stuck).
        #[arg(long, default_value = "fast")]
        profile: crate::sim::SimProfile,
        /// Simulated seconds per real second, for report latencies and rate refills
        /// together (60: one simulated minute per second). Range: 1 to 3600.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
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
    /// Get a seller's refresh token (`auth ebay ACCOUNT`).
    Auth {
        #[command(subcommand)]
        provider: AuthProvider,
    },
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
    /// The store: `store copy` moves the hour ledger from the SQLite file into PostgreSQL.
    Store {
        #[command(subcommand)]
        action: store::StoreAction,
    },
    /// List running cooldowns (scope, reason, started, until, detail), or end one early.
    Cooldowns {
        #[command(subcommand)]
        action: Option<cooldowns::CooldownsAction>,
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
    /// Queue a StockX or Alias market-data, eBay market-price or Keepa product lookup
    /// (merged into a pending job of the same key, keeping the higher priority).
    Enqueue {
        /// stockx, alias, ebay or keepa.
        provider: String,
        /// StockX/Alias style id (e.g. DD1391-100), eBay GTIN or keywords, Keepa ASIN.
        sku: String,
        /// Size (required for stockx and alias, optional for ebay, none for keepa).
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
    /// Keys the freshness scheduler keeps fresh: add, import a CSV, list, remove.
    Track {
        #[command(subcommand)]
        action: crate::cli::track::TrackAction,
    },
    /// Export one table family to stdout as CSV or JSON lines, row by row (constant
    /// memory): sales (vendor real-time sales), orders (eBay), events (eBay change
    /// history), prices (StockX, Alias and eBay market prices), jobs.
    Export {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(export::KINDS))]
        kind: String,
        /// Only this account's rows (sales, orders, events).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Only rows at or after TIME: RFC 3339 (2026-11-01T00:00:00Z), a UTC date
        /// (2026-11-01) or a duration back from now (24h, 7days).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[arg(long, default_value = "csv", value_parser = clap::builder::PossibleValuesParser::new(export::FORMATS))]
        format: String,
    },
    /// Print the shell completion script (e.g. `marketsync completions bash >
    /// /etc/bash_completion.d/marketsync`).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `marketsync man > /usr/local/share/man/man1/marketsync.1`.
    Man,
}

/// `marketsync bench ...`: the benchmarks of `crate::bench` plus those of other modules.
#[derive(Debug, Subcommand)]
pub enum BenchWhich {
    #[command(flatten)]
    Core(crate::bench::BenchCommand),
    /// Jobs drained per second when the budget is not the limit (StockX and Keepa
    /// against the simulator over HTTP).
    Jobs(crate::bench::jobs::BenchJobsArgs),
    /// StockX calls per market-data lookup once the catalog cache is warm (target <= 1.05).
    Catalog(crate::bench::catalog::BenchCatalogArgs),
    /// Catch-up of one eBay account 90 days behind: wall time against the quota-bound
    /// minimum, and RSS while paging.
    Ebay(crate::bench::cursor::BenchEbayArgs),
    /// One eBay seller, all ten streams 90 days behind, caught up by `sync --once`: wall
    /// time against the quota-bound minimum (target <= 1.05), 429s, peak RSS.
    EbayStreams(crate::bench::ebay_streams::BenchEbayStreamsArgs),
    /// The freshness scheduler: 10,000 tracked keys at the providers' budgets over 6
    /// simulated hours; fresh share per hour against the budgets' maximum.
    Freshness(crate::bench::freshness::BenchFreshnessArgs),
    /// Claims per second of the hour ledger shared by several daemons on PostgreSQL
    /// (each its own pool), against the same work on one SQLite file.
    StoreClaims(crate::bench::store_claims::BenchStoreClaimsArgs),
    /// Catch-up of the same accounts by one daemon on SQLite, then by several daemons
    /// sharing PostgreSQL and Redis: wall time against each other and the quota-bound
    /// minimum, claims/s of the shared store (target: cluster <= 1.1x the single daemon).
    Cluster(crate::bench::cluster::BenchClusterArgs),
}

/// Parses the arguments and runs the command; returns the process exit code.
pub fn main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run | Command::Sim { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    if !matches!(cli.command, Command::Run | Command::Sim { .. }) {
        quiet_on_closed_stdout();
    }
    if let Command::Bench { which } = cli.command {
        return match which {
            BenchWhich::Core(which) => crate::bench::run(which),
            BenchWhich::Jobs(args) => crate::bench::jobs::run(args),
            BenchWhich::Catalog(args) => crate::bench::catalog::run(args),
            BenchWhich::Ebay(args) => crate::bench::cursor::run(args),
            BenchWhich::EbayStreams(args) => crate::bench::ebay_streams::run(args),
            BenchWhich::Freshness(args) => crate::bench::freshness::run(args),
            BenchWhich::StoreClaims(args) => crate::bench::store_claims::run(args),
            BenchWhich::Cluster(args) => crate::bench::cluster::run(args),
        };
    }
    match &cli.command {
        Command::Run => run::command(&cli),
        Command::Sync { once, timeout } => sync::command(&cli, *once, *timeout),
        Command::Sim {
            listen,
            seed,
            latency,
            profile,
            time_scale,
            asins,
            unlimited,
            faults,
        } => sim::command(sim::SimArgs {
            listen: *listen,
            seed: *seed,
            latency: *latency,
            profile: *profile,
            time_scale: *time_scale,
            asins: *asins,
            unlimited: *unlimited,
            faults: faults.clone(),
        }),
        Command::CheckConfig => check_config::command(&cli),
        Command::Auth {
            provider: AuthProvider::Ebay { account, code },
        } => auth::ebay(&cli, account, code.as_deref()),
        Command::Status { json } => status::command(&cli, *json),
        Command::FillDay {
            account,
            stream,
            date,
        } => fill_day::command(&cli, account, stream, date),
        Command::Accounts { action } => accounts::command(&cli, action),
        Command::Store { action } => store::command(&cli, action),
        Command::Locks { action, json } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            runtime()?.block_on(locks::locks_command(&config, action.as_ref(), *json))
        }
        Command::Cooldowns { action, json } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            cooldowns::command(&config.deployment(), action.as_ref(), *json)
        }
        Command::Doctor {
            account,
            stream,
            json,
        } => doctor::command(&cli, account, stream, *json),
        Command::Bench { .. } => unreachable!("bench is dispatched above"),
        Command::Export {
            kind,
            account,
            since,
            format,
        } => export::command(&cli, kind, account.as_deref(), since.as_deref(), format),
        Command::Completions { shell } => completions::command(*shell),
        Command::Man => man::command(),
        Command::Enqueue {
            provider,
            sku,
            size,
            priority,
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            crate::cli::jobs::enqueue_command(&config, provider, sku, size.as_deref(), priority)
        }
        Command::Track { action } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            crate::cli::track::command(&config, action)
        }
        Command::Jobs {
            action,
            state,
            json,
            limit,
        } => {
            let config = load_config(&cli.config, &cli.data_dir)?;
            match action {
                Some(crate::cli::jobs::JobsAction::ResetFailed { provider }) => {
                    crate::cli::jobs::reset_failed_command(&config, provider.as_deref())
                }
                Some(crate::cli::jobs::JobsAction::Runs {
                    provider,
                    json,
                    limit,
                }) => crate::cli::jobs::runs_command(&config, provider.as_deref(), *json, *limit),
                None => crate::cli::jobs::list_command(&config, state.as_deref(), *json, *limit),
            }
        }
    }
}

/// Writes `bytes` to stdout and flushes; a closed stdout comes back as the `BrokenPipe`
/// error that `main` turns into a quiet exit 0.
pub(crate) fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Whether `err` is stdout (or another output) closed by its reader: `status --json |
/// head -1` has what it wanted, so the command ends quietly with exit 0, as ripgrep does.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<crate::store::export::ExportError>()
                .is_some_and(crate::store::export::ExportError::is_broken_pipe)
    })
}

/// The backstop for output written with `println!` (which panics on a closed stdout):
/// that panic ends a one-shot command quietly with exit 0 instead of a backtrace. Every
/// other panic goes to the default hook. Not installed for `run` and `sim`, where stdout
/// is not the product and a panic must be seen.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
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
        // Every line lists the spans it was logged in (`"spans":[{"name":"account",
        // "account":"shop"},{"name":"stream","stream":"orders"}]`): that is where a
        // stream's lines carry their account and stream (crate::telemetry::spans). The
        // current span alone would repeat the last entry of that list.
        LogFormat::Json => builder
            .json()
            .with_span_list(true)
            .with_current_span(false)
            .init(),
    }
}

/// `--config`, else the embedded demo; `--data-dir` overrides the data directory.
pub fn load_config(path: &Option<PathBuf>, data_dir: &Option<PathBuf>) -> anyhow::Result<Config> {
    load_config_for(path, data_dir, crate::config::Purpose::Sync)
}

/// [`load_config`] for `purpose` (`auth ebay` loads an eBay account that has no
/// refresh token yet).
pub fn load_config_for(
    path: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    purpose: crate::config::Purpose,
) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::load_for(path, purpose)?,
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

/// The SQLite file and the engine holding the hour ledger (the same file, or PostgreSQL
/// with `[store] url_env`).
fn open_stores(
    config: &Config,
) -> anyhow::Result<(
    std::sync::Arc<SqliteLedger>,
    std::sync::Arc<dyn crate::store::LedgerStore>,
)> {
    let ledger = std::sync::Arc::new(open_ledger(config)?);
    let hours = crate::store::hour_ledger(config.store.as_ref(), &ledger)
        .context("opening the hour ledger")?;
    Ok((ledger, hours))
}
