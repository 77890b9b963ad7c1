//! `marketsync run`: opens the ledger, starts the embedded simulator when configured,
//! and one runner task per (account, stream).
//!
//! Shutdown is "tell, then wait": a `CancellationToken` tells every runner to stop
//! claiming; a `TaskTracker` shows when they have. Units in flight keep their report ids
//! in the ledger, so the next start resumes polling instead of requesting again.
//!
//! Quota: one TokenManager ([`crate::quota`]) per daemon, started before the supervision
//! tree (every account's client carries a [`Pacer`] on it) and linked to the Root, so its
//! failure is an infrastructure failure. Buckets live in the actor, or in Redis when
//! `[redis]` is configured (the leases' url and prefix; several daemons then share one
//! quota). Cooldowns persist in the ledger (in process) or in Redis. A cooldown watch
//! polls the ledger's `cooldowns` table every second: a cooldown that disappears before
//! its end (`marketsync cooldowns clear`) is forgotten by the TokenManager and wakes the
//! runners waiting for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::{AccountConfig, Config, Endpoints};
use crate::quota::{Pacer, QuotaBackend, QuotaConfig, QuotaHandle, TokenManager};
use crate::store::{LedgerStore, SqliteLedger};
use std::collections::HashMap;

use ractor::{Actor, ActorRef};
use tokio::sync::Semaphore;

use crate::actors::account::{AccountFactory, AccountSpec, StreamShared};
use crate::actors::root::{HousekeepingArgs, Root, RootArgs, RootMsg};
use crate::actors::supervisor::{SupervisorArgs, SupervisorMsg};
use crate::domain::chaos::Chaos;
use crate::domain::{format_ts, now_ts};
use crate::lock::{lock_hygiene, LockService};
use crate::provider::amazon::{LwaCredentials, SpApiClient, SpApiEndpoints};
use crate::provider::read_env;
use crate::shapes::{blocking, StreamWork};
use crate::sim::{SimConfig, Simulator};
use tokio::sync::watch;

/// How long runners get to finish their unit after shutdown is requested.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How often the cooldown watch reads the ledger's cooldowns.
const COOLDOWN_WATCH_EVERY: Duration = Duration::from_secs(1);
/// A running daemon.
pub struct Daemon {
    /// Where the embedded simulator listens, when one was started.
    pub simulator_addr: Option<SocketAddr>,
    /// Where the operator HTTP API and dashboard listen, when `[http]` is configured.
    pub http_addr: Option<SocketAddr>,
    pub ledger: Arc<SqliteLedger>,
    pub locks: LockService,
    /// The accounts supervisor: one Account actor per account below it.
    pub supervisor: ActorRef<SupervisorMsg>,
    root: ActorRef<RootMsg>,
    root_task: tokio::task::JoinHandle<()>,
    /// Holds a description once an infrastructure actor failed.
    failed: watch::Receiver<Option<String>>,
    /// Stop claiming (first signal).
    cancel: CancellationToken,
    /// Stop units in flight (grace period over).
    abort: CancellationToken,
    /// The stream runners; closed and awaited at shutdown.
    tracker: TaskTracker,
    /// Stops the simulator after the runners, so in-flight units can finish against it.
    simulator_cancel: CancellationToken,
    simulator_task: Option<tokio::task::JoinHandle<()>>,
    /// Stops the HTTP server last, so the dashboard shows the shutdown to the end.
    http_cancel: CancellationToken,
    http_task: Option<tokio::task::JoinHandle<()>>,
    /// The TokenManager every provider call asks first.
    pub quota: QuotaHandle,
    quota_task: tokio::task::JoinHandle<()>,
    cooldown_watch: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Opens the ledger and starts every runner; returns once they are running.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        let database = config.database_path();
        let ledger = {
            let database = database.clone();
            tokio::task::spawn_blocking(move || SqliteLedger::open(&database))
                .await
                .context("opening the ledger")??
        };
        let ledger = Arc::new(ledger);
        info!(database = %database.display(), "ledger open");

        let cancel = CancellationToken::new();
        let abort = CancellationToken::new();
        // The daemon's in-process counters: the runners count, `/metrics` exposes.
        let metrics = Arc::new(crate::telemetry::Metrics::new());
        let simulator_cancel = CancellationToken::new();
        let tracker = TaskTracker::new();

        let locks = open_locks(config, Some(&ledger)).await?;
        // The zombie-lock cure: repair lock keys before anything waits on them; the
        // Housekeeping actor repeats it every locks.hygiene_interval.
        lock_hygiene(&locks).await;

        let dyn_ledger: Arc<dyn LedgerStore> = ledger.clone();
        let (quota_actor, quota_task) =
            TokenManager::spawn(quota_config(config, Arc::clone(&dyn_ledger))?)
                .await
                .context("starting the token manager")?;
        let quota = QuotaHandle::new(quota_actor.clone());
        let (cleared_tx, cleared) = watch::channel(0u64);
        let cooldown_watch = spawn_cooldown_watch(Arc::clone(&ledger), quota.clone(), cleared_tx);
        info!(
            backend = if config.redis.is_some() {
                "redis"
            } else {
                "in_process"
            },
            reserve_share = config.quota.reserve_share,
            rate_margin = config.quota.rate_margin,
            "token manager started"
        );

        let mut simulator_task = None;
        let simulator_addr = match &config.simulator {
            Some(settings) => {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .with_context(|| {
                        format!("simulator.listen: cannot listen on {}", settings.listen)
                    })?;
                let addr = listener.local_addr()?;
                let sim = Simulator::new(SimConfig {
                    seed: settings.seed,
                    processing_latency: settings.processing_latency,
                    asins_per_marketplace: settings.asins_per_marketplace,
                    ebay: crate::sim::ebay::EbaySimConfig {
                        orders_per_day: settings.ebay_orders_per_day,
                        ..Default::default()
                    },
                    ..SimConfig::default()
                });
                let stop = simulator_cancel.clone();
                simulator_task = Some(tokio::spawn(async move {
                    if let Err(err) =
                        crate::sim::serve(listener, sim, async move { stop.cancelled().await })
                            .await
                    {
                        error!(error = %err, "embedded simulator stopped");
                    }
                }));
                info!(address = %addr, "embedded simulator listening");
                Some(addr)
            }
            None => None,
        };

        let http = reqwest::Client::builder()
            .user_agent(concat!("marketsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .context("building the http client")?;
        let documents_dir = config.data_dir.join("documents");
        let owner = crate::lock::local_owner("auto-sync");

        let chaos = config.chaos.as_ref().map(|drill| {
            warn!(account = %drill.account, action = ?drill.action, when = ?drill.when, "chaos drill armed");
            Arc::new(Chaos::new(drill.account.clone(), drill.action, drill.when))
        });
        let mut accounts = HashMap::with_capacity(config.accounts.len());
        for account in &config.accounts {
            // The LWA application an account signs in through: named by its client id
            // variable (never the id itself), or the embedded simulator's.
            let application = (!config.quota.amazon_application.is_empty()).then(|| {
                let scope = account
                    .credentials
                    .as_ref()
                    .and_then(|names| names.client_id_env.clone())
                    .unwrap_or_else(|| "simulator".to_string());
                (
                    scope,
                    config.quota.amazon_application.keys().cloned().collect(),
                )
            });
            let pacer = Pacer {
                mirror_to_ledger: config.redis.is_some(),
                cleared: Some(cleared.clone()),
                application,
                ..Pacer::new(
                    quota.clone(),
                    account.provider.as_str(),
                    account.quota_scope(),
                )
            };
            let work = build_work(account, &http, simulator_addr, pacer, &ledger)?;
            // Only the account's own part: the contexts are built per incarnation from
            // it and `shared` (10,000 accounts keep these for the daemon's life).
            accounts.insert(
                account.id.clone(),
                Arc::new(AccountSpec {
                    account: Arc::new(account.clone()),
                    work,
                }),
            );
        }
        let shared = Arc::new(StreamShared {
            ledger: Arc::clone(&dyn_ledger),
            documents_dir,
            owner: owner.clone(),
            cancel: cancel.clone(),
            abort: abort.clone(),
            chaos,
            lock_settings: config.locks.clone(),
            metrics: Arc::clone(&metrics),
        });
        let factory = AccountFactory {
            accounts,
            shared,
            locks: locks.clone(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_runs)),
            tracker: tracker.clone(),
        };
        let (failed_tx, failed) = watch::channel(None);
        let (root, root_task) = Actor::spawn(
            None,
            Root,
            RootArgs {
                supervisor: SupervisorArgs {
                    policy: config.supervisor.clone(),
                    factory: Arc::new(factory),
                    ledger: Arc::clone(&ledger),
                },
                housekeeping: HousekeepingArgs {
                    locks: locks.clone(),
                    ledger: Arc::clone(&ledger),
                    every: config.locks.hygiene_interval,
                },
                quota: Some(quota_actor.get_cell()),
                failed: failed_tx,
            },
        )
        .await
        .context("starting the supervision tree")?;
        let supervisor = ractor::call_t!(root, RootMsg::Supervisor, 10_000)
            .context("asking the root for the accounts supervisor")?
            .context("the accounts supervisor did not start")?;
        supervisor
            .cast(SupervisorMsg::Start(
                config
                    .accounts
                    .iter()
                    .map(|account| account.id.clone())
                    .collect(),
            ))
            .context("starting the account actors")?;
        // The operator surface: status and admin API, dashboard, metrics.
        let http_cancel = CancellationToken::new();
        let mut http_task = None;
        let http_addr = match &config.http {
            Some(settings) => {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .with_context(|| {
                        format!("http.listen: cannot listen on {}", settings.listen)
                    })?;
                let addr = listener.local_addr()?;
                let state = crate::http::HttpState::new(
                    Arc::new(config.deployment()),
                    Arc::clone(&ledger),
                    locks.clone(),
                    settings.admin_token(),
                )
                .with_quota(quota.clone())
                .with_metrics(Arc::clone(&metrics));
                if state.admin_token.is_none() {
                    warn!("http: no admin token (set [http] admin_token_env and export that variable); mutating endpoints answer 403");
                }
                let stop = http_cancel.clone();
                http_task = Some(tokio::spawn(async move {
                    if let Err(err) =
                        crate::http::serve(listener, state, async move { stop.cancelled().await })
                            .await
                    {
                        error!(error = %err, "http server stopped");
                    }
                }));
                info!(address = %addr, "http api, dashboard and metrics listening");
                Some(addr)
            }
            None => None,
        };
        info!(accounts = config.accounts.len(), owner = %owner, "daemon started");
        Ok(Daemon {
            simulator_addr,
            http_addr,
            http_cancel,
            http_task,
            ledger,
            locks,
            supervisor,
            root,
            root_task,
            failed,
            cancel,
            abort,
            tracker,
            simulator_cancel,
            simulator_task,
            quota,
            quota_task,
            cooldown_watch,
        })
    }

    /// Tells every runner to stop and waits up to `grace` for them.
    pub async fn shutdown(self, grace: Duration) -> bool {
        info!(grace = %humantime::format_duration(grace), "shutting down: no new claims; waiting for units in flight");
        self.cancel.cancel();
        self.tracker.close();
        // Runners first (they finish their unit and release their leases), then the
        // actors, then the simulator they may still be talking to.
        let mut runners_done = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !runners_done {
            warn!(
                "grace period over; stopping units in flight (their report ids stay in the ledger)"
            );
            self.abort.cancel();
            runners_done = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
                .await
                .is_ok();
        }
        match ractor::call_t!(self.supervisor, SupervisorMsg::Shutdown, 15_000) {
            Ok(()) => {}
            Err(err) => warn!(error = %err, "accounts supervisor did not confirm shutdown"),
        }
        self.root.stop(None);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.root_task).await;
        // The root takes its linked TokenManager down with it; this covers a root that
        // was already gone.
        self.cooldown_watch.abort();
        self.quota.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.quota_task).await;
        self.simulator_cancel.cancel();
        let all_done = match self.simulator_task {
            Some(task) => tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_ok(),
            None => true,
        };
        self.http_cancel.cancel();
        if let Some(task) = self.http_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if runners_done && all_done {
            info!("shutdown complete");
        } else {
            warn!("grace period over with work in flight; the ledger resumes it on the next start");
        }
        runners_done && all_done
    }
}

/// Runs the daemon until `shutdown` resolves, then stops it gracefully. An
/// infrastructure actor's failure stops it too, and is returned as an error (the
/// process exits non-zero so a service manager notices).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let daemon = Daemon::start(&config).await?;
    // Everything running holds what it needs; the parsed file itself is not needed again.
    drop(config);
    let mut failed = daemon.failed.clone();
    let failure = tokio::select! {
        _ = shutdown => None,
        changed = failed.wait_for(|failure| failure.is_some()) => {
            changed.ok().and_then(|failure| failure.clone())
        }
    };
    daemon.shutdown(DEFAULT_GRACE).await;
    match failure {
        Some(failure) => anyhow::bail!("infrastructure failure: {failure}"),
        None => Ok(()),
    }
}

/// The sync shape and client of an account's streams, by provider. Every shape's client
/// carries `pacer`, so its calls ask the TokenManager first.
fn build_work(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator: Option<SocketAddr>,
    pacer: Pacer,
    ledger: &Arc<SqliteLedger>,
) -> anyhow::Result<StreamWork> {
    match account.provider.as_str() {
        "amazon" => Ok(StreamWork::reports(Arc::new(
            build_client(account, http, simulator)?.with_pacer(pacer),
        ))),
        "ebay" => {
            crate::shapes::cursor::stream_work(account, http, simulator, pacer, Arc::clone(ledger))
        }
        "stockx" | "keepa" => {
            crate::shapes::jobs::stream_work(account, http, simulator, pacer, Arc::clone(ledger))
        }
        other => anyhow::bail!(
            "accounts.{}: provider {other} has no sync shape in this build",
            account.id
        ),
    }
}

fn build_client(
    account: &AccountConfig,
    http: &reqwest::Client,
    simulator_addr: Option<SocketAddr>,
) -> anyhow::Result<SpApiClient> {
    let endpoints = match (&account.endpoints, simulator_addr) {
        (Endpoints::EmbeddedSimulator, Some(addr)) => SpApiEndpoints {
            api_base: format!("http://{addr}"),
            lwa_token_url: format!("http://{addr}/auth/o2/token"),
        },
        (Endpoints::EmbeddedSimulator, None) => {
            anyhow::bail!(
                "account {}: uses the embedded simulator, which is not enabled",
                account.id
            )
        }
        (
            Endpoints::Explicit {
                api_base,
                token_url,
            },
            _,
        ) => SpApiEndpoints {
            api_base: api_base.clone(),
            lwa_token_url: token_url.clone(),
        },
    };
    let credentials = match &account.credentials {
        Some(names) => LwaCredentials {
            client_id: read_env(&account.id, names.client_id_env.as_deref())?,
            client_secret: read_env(&account.id, names.client_secret_env.as_deref())?,
            refresh_token: read_env(&account.id, names.refresh_token_env.as_deref())?,
        },
        // The simulator accepts any credentials; the refresh token names the seller.
        None => LwaCredentials {
            client_id: "simulator-client".to_string(),
            client_secret: "simulator-secret".to_string(),
            // Accounts of one selling partner share its buckets in the simulator too.
            refresh_token: format!("simulator-refresh-{}", account.quota_scope()),
        },
    };
    Ok(SpApiClient::new(http.clone(), endpoints, credentials))
}

/// `marketsync sync --once`: starts the daemon, waits until every stream has caught up
/// (or stopped for a reason status can name), then shuts down. Shows a progress bar of
/// APPLIED hours with rate and ETA when stderr is a terminal. Returns the exit code: 0
/// when everything is applied, 1 when some stream stopped early.
pub async fn sync_once(config: Config, timeout: Duration) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let daemon = Daemon::start(&config).await?;
    let ledger: Arc<dyn LedgerStore> = daemon.ledger.clone();
    let sqlite = Arc::clone(&daemon.ledger);
    // (account, stream, account cooldown scope, lookback hours; 0 for other shapes)
    let streams: Vec<(String, String, String, u64)> = config
        .accounts
        .iter()
        .flat_map(|account| {
            let windowed = account.provider.shape() == crate::domain::Shape::Windowed;
            account.streams.iter().map(move |stream| {
                (
                    account.id.clone(),
                    stream.name.clone(),
                    crate::store::account_scope(account.provider.as_str(), &account.id),
                    if windowed {
                        stream.windowed().lookback.as_secs() / 3600
                    } else {
                        0
                    },
                )
            })
        })
        .collect();
    let total: u64 = streams.iter().map(|stream| stream.3).sum();
    // Cursor and job streams: caught up when the cursor is within an interval of now
    // (minus the safety lag) and no job is due.
    let others: Vec<(crate::config::AccountConfig, crate::config::StreamConfig)> = config
        .accounts
        .iter()
        .filter(|account| account.provider.shape() != crate::domain::Shape::Windowed)
        .flat_map(|account| {
            account
                .streams
                .iter()
                .map(move |stream| (account.clone(), stream.clone()))
        })
        .collect();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} hours applied ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let (applied, stopped) = loop {
        ticker.tick().await;
        let streams = streams.clone();
        let (applied, pending, stopped) = blocking(&ledger, move |ledger| {
            let now = now_ts();
            let (mut applied, mut pending, mut stopped) = (0u64, false, Vec::new());
            for (account, stream, account_scope, lookback_hours) in &streams {
                if *lookback_hours == 0 {
                    continue;
                }
                let snapshot = ledger.snapshot(account, stream, now)?;
                let seeded: u64 = snapshot.counts.iter().sum();
                let in_flight = snapshot.counts[1] + snapshot.counts[2];
                applied += snapshot.counts[3];
                let cooling = ledger.active_cooldown(account_scope, now)?.is_some()
                    || ledger
                        .active_cooldown(&crate::shapes::lock_scope(account, stream), now)?
                        .is_some();
                if cooling {
                    stopped.push(format!(
                        "{account}/{stream}: cooling down (see marketsync status)"
                    ));
                } else if seeded < *lookback_hours
                    || in_flight > 0
                    || snapshot.next_claimable_hour.is_some()
                {
                    pending = true;
                } else if snapshot.counts[4] > 0 {
                    stopped.push(format!(
                        "{account}/{stream}: {} failed hours wait for their retry ({})",
                        snapshot.counts[4],
                        snapshot.last_error.unwrap_or_default()
                    ));
                }
            }
            Ok((applied, pending, stopped))
        })
        .await?;
        let others = others.clone();
        let sqlite = Arc::clone(&sqlite);
        let (others_pending, others_stopped) =
            tokio::task::spawn_blocking(move || other_shapes_progress(&sqlite, &others, now_ts()))
                .await
                .context("reading cursor and job streams")??;
        let pending = pending || others_pending;
        let mut stopped = stopped;
        stopped.extend(others_stopped);
        if let Some(bar) = &bar {
            bar.set_position(applied.min(total));
        }
        if !pending {
            break (applied, stopped);
        }
        if tokio::time::Instant::now() >= deadline {
            let mut stopped = stopped;
            stopped.push(format!(
                "gave up after {}",
                humantime::format_duration(timeout)
            ));
            break (applied, stopped);
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    daemon.shutdown(DEFAULT_GRACE).await;
    println!(
        "{applied} of {total} hours applied across {} streams",
        streams.len()
    );
    for line in &stopped {
        println!("{line}");
    }
    Ok(if stopped.is_empty() { 0 } else { 1 })
}

/// Whether cursor and job streams still have work (`sync --once`), and the ones that
/// stopped for a reason a person should read.
fn other_shapes_progress(
    ledger: &SqliteLedger,
    streams: &[(crate::config::AccountConfig, crate::config::StreamConfig)],
    now: i64,
) -> anyhow::Result<(bool, Vec<String>)> {
    let (mut pending, mut stopped) = (false, Vec::new());
    for (account, stream) in streams {
        let scope = crate::store::account_scope(account.provider.as_str(), &account.id);
        if let Some(cooldown) = ledger.active_cooldown(&scope, now)? {
            stopped.push(format!(
                "{}/{}: {} cooldown until {} (see marketsync status)",
                account.id,
                stream.name,
                cooldown.reason,
                format_ts(cooldown.until_at)
            ));
            continue;
        }
        match account.provider.shape() {
            crate::domain::Shape::Cursor => {
                match crate::store::cursors::cursor_snapshot(ledger, &account.id, &stream.name)? {
                    None => pending = true,
                    Some(cursor) if cursor.failures > 0 => stopped.push(format!(
                        "{}/{}: window from {} failed: {}",
                        account.id,
                        stream.name,
                        format_ts(cursor.cursor_ts),
                        cursor.last_error.unwrap_or_default()
                    )),
                    Some(cursor) => {
                        if cursor.behind(stream.safety_lag, now)
                            > stream.interval.as_secs() as i64 + 60
                        {
                            pending = true;
                        }
                    }
                }
            }
            crate::domain::Shape::Jobs => {
                let due = ledger
                    .with_conn(|conn| {
                        crate::store::jobs::provider_queue(conn, account.provider.as_str(), now)
                    })?
                    .due_now;
                if due > 0 {
                    pending = true;
                }
            }
            crate::domain::Shape::Windowed => {}
        }
    }
    Ok((pending, stopped))
}

/// The lease backend: Redis when configured, else the SQLite file of the ledger. While
/// Redis is unreachable at startup, every stream is marked `lock_unavailable` in `ledger`
/// (when given) so `status` says why nothing moves.
pub async fn open_locks(
    config: &Config,
    ledger: Option<&Arc<SqliteLedger>>,
) -> anyhow::Result<LockService> {
    match &config.redis {
        Some(redis) => {
            let url = redis
                .url
                .resolve()
                .map_err(|err| anyhow::anyhow!("{}: {err}", config.source_name))?;
            // A daemon must start even while Redis is down: work that needs a lease waits.
            let mut delay = Duration::from_millis(500);
            loop {
                match LockService::redis(&url, &redis.prefix).await {
                    Ok(locks) => return Ok(locks),
                    Err(crate::lock::LockError::Invalid(message)) => {
                        anyhow::bail!("redis.url: {message}")
                    }
                    Err(err) => {
                        warn!(error = %err, retry_in = %humantime::format_duration(delay), "redis unreachable at startup; leases wait for it");
                        if let Some(ledger) = ledger {
                            mark_locks_unavailable(config, ledger, &err.to_string(), delay).await;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        None => Ok(LockService::sqlite(&config.database_path()).await?),
    }
}

/// Records `lock_unavailable` for every configured stream until `retry_in` from now.
async fn mark_locks_unavailable(
    config: &Config,
    ledger: &Arc<SqliteLedger>,
    detail: &str,
    retry_in: Duration,
) {
    let now = now_ts();
    let cooldowns: Vec<crate::store::Cooldown> = config
        .accounts
        .iter()
        .flat_map(|account| {
            account
                .streams
                .iter()
                .map(move |stream| crate::store::Cooldown {
                    scope: crate::shapes::lock_scope(&account.id, &stream.name),
                    reason: "lock_unavailable".to_string(),
                    started_at: now,
                    until_at: now + retry_in.as_secs().max(1) as i64 + 30,
                    detail: Some(detail.to_string()),
                })
        })
        .collect();
    let ledger = Arc::clone(ledger);
    let written = tokio::task::spawn_blocking(move || {
        for cooldown in &cooldowns {
            ledger.clear_cooldown(&cooldown.scope)?;
            ledger.set_cooldown(cooldown)?;
        }
        Ok::<(), crate::store::LedgerError>(())
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        warn!("cannot record lock_unavailable in the ledger");
    }
}

/// The TokenManager's settings from the configuration: Redis (the leases' url and
/// prefix) when `[redis]` is configured, else in process with cooldowns in the ledger;
/// `[quota]` reserve share, rate margin and bucket overrides; the cooldown after an
/// amazon 429 is the shortest `quota_cooldown` of the amazon streams (30m by default).
pub fn quota_config(config: &Config, ledger: Arc<dyn LedgerStore>) -> anyhow::Result<QuotaConfig> {
    let mut quota = match &config.redis {
        Some(redis) => {
            let url = redis
                .url
                .resolve()
                .map_err(|err| anyhow::anyhow!("{}: {err}", config.source_name))?;
            QuotaConfig::new(QuotaBackend::Redis {
                url,
                prefix: redis.prefix.clone(),
            })
        }
        None => QuotaConfig::new(QuotaBackend::InProcess).with_ledger(ledger),
    }
    .with_rate_margin(config.quota.rate_margin);
    quota.reserve_share = config.quota.reserve_share;
    for (operation, spec) in &config.quota.amazon {
        quota = quota.with_spec("amazon", operation, *spec);
    }
    for (operation, spec) in &config.quota.amazon_application {
        quota = quota.with_spec("amazon_application", operation, *spec);
    }
    for (provider, buckets) in &config.quota.providers {
        for (operation, spec) in buckets {
            quota = quota.with_spec(provider, operation, *spec);
        }
    }
    let amazon_cooldown = config
        .accounts
        .iter()
        .filter(|account| account.provider == crate::domain::Provider::Amazon)
        .flat_map(|account| account.streams.iter().map(|stream| stream.quota_cooldown))
        .min();
    if let Some(cooldown) = amazon_cooldown {
        quota
            .throttle_cooldowns
            .insert("amazon".to_string(), cooldown);
    }
    Ok(quota)
}

/// Reads the ledger's cooldowns every [`COOLDOWN_WATCH_EVERY`]; a quota cooldown that
/// vanished or got shorter before its end was cleared by an operator: the TokenManager
/// forgets what it remembered about the scope, and `cleared` wakes the waiting runners.
fn spawn_cooldown_watch(
    ledger: Arc<SqliteLedger>,
    quota: QuotaHandle,
    cleared: watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut known: HashMap<String, i64> = HashMap::new();
        let mut tick = tokio::time::interval(COOLDOWN_WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = now_ts();
            let reader = Arc::clone(&ledger);
            let current = match tokio::task::spawn_blocking(move || {
                crate::store::sqlite::ledger_cooldowns(&reader, now)
            })
            .await
            {
                Ok(Ok(current)) => current,
                Ok(Err(err)) => {
                    debug!(error = %err, "cooldown watch cannot read the ledger; retrying");
                    continue;
                }
                Err(err) => {
                    debug!(error = %err, "cooldown watch task failed; retrying");
                    continue;
                }
            };
            // Lease conditions (`lock:...`) come and go with every lease; not quota.
            let current: HashMap<String, i64> = current
                .into_iter()
                .filter(|cooldown| !cooldown.scope.starts_with("lock:"))
                .map(|cooldown| (cooldown.scope, cooldown.until_at))
                .collect();
            let mut ended_early = false;
            for (scope, until) in &known {
                let shortened = current.get(scope).is_none_or(|now_until| now_until < until);
                if *until > now + 1 && shortened {
                    info!(scope = %scope, "cooldown ended early; resuming calls in its scope");
                    quota.forget(scope);
                    ended_early = true;
                }
            }
            known = current;
            if ended_early {
                cleared.send_modify(|generation| *generation += 1);
            }
        }
    })
}
