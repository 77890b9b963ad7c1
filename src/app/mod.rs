//! The composition root: [`Daemon::start`] opens the store, starts the embedded simulator
//! when configured, the lease service, the TokenManager, the supervision tree (one
//! Account actor per account, running one runner per stream) and the HTTP server, and
//! hands each the settings and handles it needs; [`Daemon::shutdown`] stops them.
//! - `build`: each account's sync shape and client, the lease backend, the quota settings.
//! - `cooldown_watch`: notices cooldowns cleared early.
//! - `sync_once`: `marketsync sync --once`.
//! - `notify`: systemd's readiness, watchdog, status and stopping notifications.
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
//!
//! Layer 14 of docs/architecture.md. May use: everything below it, and `sim` to start the
//! embedded simulator. May not touch: sync logic (that lives in `shapes`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::quota::{Pacer, QuotaHandle, TokenManager};
use crate::store::{LedgerStore, SqliteLedger};
use std::collections::HashMap;

use ractor::{Actor, ActorRef};
use tokio::sync::Semaphore;

use crate::actors::account::{AccountFactory, AccountSpec, StreamShared};
use crate::actors::root::{HousekeepingArgs, Root, RootArgs, RootMsg};
use crate::actors::services::ServiceSpec;
use crate::actors::supervisor::{SupervisorArgs, SupervisorMsg};
use crate::domain::chaos::Chaos;
use crate::lock::keeper::LeaseKeeper;
use crate::lock::{lock_hygiene, LockService};
use crate::sim::{SimConfig, Simulator};
use tokio::sync::watch;

mod build;
mod cooldown_watch;
pub mod notify;
mod sync_once;
mod wal_checkpoint;

use build::build_work;
pub use build::{open_locks, quota_config};
pub use sync_once::sync_once;

/// How long a shutdown may take at most (`[daemon] shutdown_grace`): runners finish
/// their unit within it, then everything else stops.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// A running daemon.
pub struct Daemon {
    /// Where the embedded simulator listens, when one was started.
    pub simulator_addr: Option<SocketAddr>,
    /// Where the operator HTTP API and dashboard listen, when `[http]` is configured.
    pub http_addr: Option<SocketAddr>,
    pub ledger: Arc<SqliteLedger>,
    /// The engine holding the hour ledger: `ledger` itself, or PostgreSQL when
    /// `[store] url_env` is set.
    pub hours: Arc<dyn LedgerStore>,
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
    /// Stops the HTTP server last, so the dashboard shows the shutdown to the end.
    /// The TokenManager every provider call asks first.
    pub quota: QuotaHandle,
    quota_task: tokio::task::JoinHandle<()>,
    /// This daemon's cluster membership (`[cluster]`): left at shutdown, after the
    /// accounts stopped, so the others take them at once.
    pub membership: Option<crate::cluster::Membership>,
    /// Changes each time a stream's run ends (`Metrics::run_ended`): `sync --once` looks
    /// at the ledger then, not only on its timer.
    pub runs_ended: watch::Receiver<u64>,
}

impl Daemon {
    /// Opens the ledger and starts every runner; returns once they are running.
    pub async fn start(config: &Config) -> anyhow::Result<Daemon> {
        Daemon::start_with(config, None).await
    }

    /// [`Daemon::start`] with the root reporting the tree's health on `heartbeat` (the
    /// systemd watchdog and status line, see [`notify`]).
    pub async fn start_with(
        config: &Config,
        heartbeat: Option<crate::actors::root::RootHeartbeat>,
    ) -> anyhow::Result<Daemon> {
        if let Some(refusal) = config.http.as_ref().and_then(|http| http.exposure_error()) {
            anyhow::bail!("{}: {refusal}", config.source_name);
        }
        {
            let data_dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || crate::store::sqlite::secure_data_dir(&data_dir))
                .await
                .context("securing the data directory")??;
        }
        let database = config.database_path();
        let ledger = {
            let database = database.clone();
            tokio::task::spawn_blocking(move || SqliteLedger::open(&database))
                .await
                .context("opening the ledger")??
        };
        let ledger = Arc::new(ledger);
        info!(database = %database.display(), "ledger open");
        // The hour ledger's engine: PostgreSQL with `[store] url_env`, else the same file.
        let hours: Arc<dyn LedgerStore> = {
            let (store, sqlite) = (config.store.clone(), Arc::clone(&ledger));
            tokio::task::spawn_blocking(move || crate::store::hour_ledger(store.as_ref(), &sqlite))
                .await
                .context("opening the hour ledger")??
        };

        let cancel = CancellationToken::new();
        let abort = CancellationToken::new();
        // The daemon's in-process counters: the runners count, `/metrics` exposes.
        let metrics = Arc::new(crate::telemetry::Metrics::new());
        let tracker = TaskTracker::new();

        let locks = open_locks(config, Some(&hours)).await?;
        // The zombie-lock cure: repair lock keys before anything waits on them; the
        // lease keeper repeats it every locks.hygiene_interval.
        lock_hygiene(&locks).await;
        // One actor holds and renews every lease of this daemon and repeats the hygiene
        // pass; the root restarts it like a service (holders of a crashed keeper's leases
        // stop, and take new leases from the next keeper).
        let keeper = LeaseKeeper::spawn(locks.clone(), config.locks.hygiene_interval)
            .await
            .context("starting the lease keeper")?;
        let lease_keeper = {
            let (handle, every) = (keeper.clone(), config.locks.hygiene_interval);
            ServiceSpec {
                name: "lease-keeper",
                start: Arc::new(move |root: ractor::ActorCell| {
                    let handle = handle.clone();
                    Box::pin(async move { LeaseKeeper::spawn_linked(&handle, every, root).await })
                }),
            }
        };

        // `[cluster]`: register as a member before the tree starts, so the accounts
        // supervisor's first look at the view already sees this member.
        let membership = match (&config.cluster, &config.redis) {
            (Some(cluster), Some(redis)) => Some(join_cluster(config, cluster, redis).await?),
            _ => None,
        };

        let dyn_ledger: Arc<dyn LedgerStore> = Arc::clone(&hours);
        let chaos = config.chaos.as_ref().map(|drill| {
            warn!(target = %drill.account, kind = ?drill.target, action = ?drill.action, when = ?drill.when, "chaos drill armed");
            Arc::new(Chaos::targeting(
                drill.target,
                drill.account.clone(),
                drill.action,
                drill.when,
            ))
        });
        let mut quota_settings = quota_config(config, Arc::clone(&dyn_ledger))?;
        quota_settings.chaos = chaos.clone();
        let (quota_actor, quota_task) = TokenManager::spawn(quota_settings.clone())
            .await
            .context("starting the token manager")?;
        let quota = QuotaHandle::new(quota_actor.clone());
        // The freshness scheduler reads bucket specs for buckets not used yet.
        let scheduler_quota = quota_settings.clone();
        // The root restarts a failed TokenManager with these settings and points every
        // clone of `quota` at the new actor; its buckets start full again, its cooldowns
        // come back from the ledger or Redis.
        let token_manager =
            {
                let handle = quota.clone();
                ServiceSpec {
                    name: "token-manager",
                    start: Arc::new(move |root: ractor::ActorCell| {
                        let (settings, handle) = (quota_settings.clone(), handle.clone());
                        Box::pin(async move {
                            let (actor, _) =
                                TokenManager::spawn_linked(settings, root).await.map_err(
                                    |err| ractor::SpawnErr::StartupFailed(err.to_string().into()),
                                )?;
                            handle.replace(actor.clone());
                            Ok(actor.get_cell())
                        })
                    }),
                }
            };
        let (cleared_tx, cleared) = watch::channel(0u64);
        let cleared_tx = Arc::new(cleared_tx);
        // The root's restartable services, started with the tree.
        let mut services = Vec::new();
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
                    profile: match settings.profile {
                        crate::config::SimulatorProfile::Fast => crate::sim::SimProfile::Fast,
                        crate::config::SimulatorProfile::Realistic => {
                            crate::sim::SimProfile::Realistic
                        }
                    },
                    time_scale: settings.time_scale,
                    asins_per_marketplace: settings.asins_per_marketplace,
                    ebay: crate::sim::ebay::EbaySimConfig {
                        orders_per_day: settings.ebay_orders_per_day,
                        inventory_listings: settings.ebay_inventory_listings,
                        ..Default::default()
                    },
                    ..SimConfig::default()
                });
                let listener = Arc::new(std::sync::Mutex::new(Some(listener)));
                services.push(ServiceSpec::task(
                    "simulator",
                    Arc::new(move || {
                        let (sim, listener) = (Arc::clone(&sim), Arc::clone(&listener));
                        Box::pin(async move {
                            let listener = take_or_bind(&listener, addr).await?;
                            crate::sim::serve(listener, sim, std::future::pending()).await?;
                            Ok(())
                        })
                    }),
                ));
                info!(address = %addr, "embedded simulator listening");
                Some(addr)
            }
            None => None,
        };

        let http = reqwest::Client::builder()
            .user_agent(concat!("marketsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            // A total deadline per call (connect, headers, whole body); downloads take
            // their own multiple of it. Redirects stay on their origin, without a Referer.
            .timeout(crate::provider::call_deadline())
            .redirect(crate::provider::redirect_policy())
            .referer(false)
            .build()
            .context("building the http client")?;
        let documents_dir = config.data_dir.join("documents");
        let owner = crate::lock::local_owner("auto-sync");
        // The daemon's identity on the surfaces: its member id, or `pid@host#instance`.
        let member_id = match &membership {
            Some(membership) => membership.settings.member_id.clone(),
            None => crate::cluster::default_member_id(),
        };

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
            let own_addresses: Vec<SocketAddr> =
                config.http.iter().map(|http| http.listen).collect();
            let work = build_work(
                account,
                &http,
                simulator_addr,
                &own_addresses,
                pacer,
                &ledger,
                &hours,
            )?;
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
        let polls = Arc::new(crate::shapes::windowed::PollSchedule::new());
        let shared = Arc::new(StreamShared {
            ledger: Arc::clone(&dyn_ledger),
            documents_dir,
            owner: owner.clone(),
            cancel: cancel.clone(),
            abort: abort.clone(),
            chaos: chaos.clone(),
            lock_settings: config.locks.clone(),
            metrics: Arc::clone(&metrics),
            permits: crate::shapes::RunPermits::bounded(Arc::new(Semaphore::new(
                config.max_concurrent_runs,
            ))),
            polls: Some(Arc::clone(&polls)),
        });
        let factory = AccountFactory {
            accounts,
            shared,
            locks: keeper.clone(),
            tracker: tracker.clone(),
        };
        // The operator surface: status and admin API, dashboard, metrics.
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
                .with_hours(Arc::clone(&hours))
                .with_quota(quota.clone())
                .with_metrics(Arc::clone(&metrics))
                .with_settings(settings)
                .with_cluster(
                    &member_id,
                    membership
                        .as_ref()
                        .map(|membership| membership.view.subscribe()),
                );
                if state.admin_token.is_none() {
                    warn!("http: no admin token (set [http] admin_token_env and export that variable); mutating endpoints answer 403");
                }
                // The dashboard's pictures: a root service samples the last hour into
                // bounded rings the handlers read (kept across the sampler's restarts).
                let every = settings.history_interval;
                let state = state.with_history(Arc::new(crate::http::history::history_for(every)));
                {
                    let state = state.clone();
                    services.push(ServiceSpec::task(
                        "history",
                        Arc::new(move || {
                            let state = state.clone();
                            Box::pin(crate::http::history::run_sampler(state, every))
                        }),
                    ));
                }
                let listener = Arc::new(std::sync::Mutex::new(Some(listener)));
                services.push(ServiceSpec::task(
                    "http",
                    Arc::new(move || {
                        let (state, listener) = (state.clone(), Arc::clone(&listener));
                        Box::pin(async move {
                            let listener = take_or_bind(&listener, addr).await?;
                            crate::http::serve(listener, state, std::future::pending()).await?;
                            Ok(())
                        })
                    }),
                ));
                info!(address = %addr, "http api, dashboard and metrics listening");
                Some(addr)
            }
            None => None,
        };
        // One schedule wakes every report in flight for its next poll (a root service:
        // restarted like the others; the entries live in `polls`, not in the task).
        services.insert(0, {
            // Runs until the root stops it (at shutdown, after the accounts).
            let polls = Arc::clone(&polls);
            ServiceSpec::task(
                "poll-schedule",
                Arc::new(move || {
                    let polls = Arc::clone(&polls);
                    Box::pin(async move {
                        polls.drive(CancellationToken::new()).await;
                        Ok(())
                    })
                }),
            )
        });
        // The SQLite file's WAL checkpoints, off the writer's commits.
        services.insert(
            0,
            wal_checkpoint::service(Arc::clone(&ledger), chaos.clone()),
        );
        services.insert(
            0,
            cooldown_watch::service(
                Arc::clone(&hours),
                quota.clone(),
                Arc::clone(&cleared_tx),
                chaos.clone(),
            ),
        );
        if let Some(freshness) = freshness_service(config, &hours, &quota, scheduler_quota, &chaos)
        {
            services.insert(0, freshness);
        }
        services.insert(
            0,
            crate::actors::housekeeping::service(HousekeepingArgs {
                ledger: Arc::clone(&hours),
                every: config.locks.hygiene_interval,
                chaos: chaos.clone(),
            }),
        );
        if let Some(membership) = &membership {
            // Renews the registration every heartbeat and publishes the view the accounts
            // supervisor follows (a root service: restarted like the others).
            let membership = membership.clone();
            let configured: Arc<Vec<String>> =
                Arc::new(config.accounts.iter().map(|a| a.id.clone()).collect());
            services.insert(
                0,
                ServiceSpec::task(
                    "membership",
                    Arc::new(move || {
                        Box::pin(crate::cluster::run_heartbeats(
                            membership.clone(),
                            Arc::clone(&configured),
                        ))
                    }),
                ),
            );
        }
        let (failed_tx, failed) = watch::channel(None);
        let (root, root_task) = Actor::spawn(
            None,
            Root,
            RootArgs {
                supervisor: SupervisorArgs {
                    policy: config.supervisor.clone(),
                    factory: Arc::new(factory),
                    ledger: Arc::clone(&hours),
                    ownership: membership.as_ref().map(crate::cluster::Membership::feed),
                },
                services,
                adopted: vec![
                    (token_manager, quota_actor.get_cell()),
                    (lease_keeper, keeper.cell()),
                ],
                policy: config.supervisor.clone(),
                metrics: Arc::clone(&metrics),
                failed: failed_tx,
                heartbeat,
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
        info!(accounts = config.accounts.len(), owner = %owner, member = %member_id, cluster = membership.is_some(), "daemon started");
        Ok(Daemon {
            simulator_addr,
            http_addr,
            ledger,
            hours,
            locks,
            supervisor,
            root,
            root_task,
            failed,
            cancel,
            abort,
            tracker,
            quota,
            quota_task,
            membership,
            runs_ended: metrics.watch_runs(),
        })
    }

    /// Tells every runner to stop and waits for them; the whole shutdown, runners,
    /// actors, simulator and HTTP server, takes at most `grace` (one deadline for all
    /// steps). Runners get `grace` minus a reserve for the rest; a runner still busy
    /// then is aborted (its report id stays in the ledger).
    pub async fn shutdown(self, grace: Duration) -> bool {
        info!(grace = %humantime::format_duration(grace), "shutting down: no new claims; waiting for units in flight");
        let deadline = tokio::time::Instant::now() + grace;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        // The steps after the runners need a few seconds at most: keep up to a third
        // of the grace (at most 8 s) for them.
        let reserve = (grace / 3).min(Duration::from_secs(8));
        self.cancel.cancel();
        self.tracker.close();
        // Runners first (they finish their unit and release their leases), then the
        // actors; the root's services (the simulator the runners may still be talking
        // to, the HTTP server) stop with the root.
        let mut runners_done =
            tokio::time::timeout(grace.saturating_sub(reserve), self.tracker.wait())
                .await
                .is_ok();
        if !runners_done {
            warn!(
                "grace period over; stopping units in flight (their report ids stay in the ledger)"
            );
            self.abort.cancel();
            runners_done =
                tokio::time::timeout(left().min(Duration::from_secs(2)), self.tracker.wait())
                    .await
                    .is_ok();
        }
        let supervisor_ms = u64::try_from(left().min(Duration::from_secs(5)).as_millis())
            .unwrap_or(5_000)
            .max(1);
        match ractor::call_t!(self.supervisor, SupervisorMsg::Shutdown, supervisor_ms) {
            Ok(()) => {}
            Err(err) => warn!(error = %err, "accounts supervisor did not confirm shutdown"),
        }
        self.root.stop(None);
        let _ = tokio::time::timeout(left().min(Duration::from_secs(2)), self.root_task).await;
        // The membership service stopped with the root: leaving now cannot be undone by
        // a late heartbeat. The accounts were stopped and their leases released above.
        if let Some(membership) = &self.membership {
            let _ =
                tokio::time::timeout(left().min(Duration::from_secs(2)), membership.leave()).await;
        }
        // The root takes its linked TokenManager down with it; this covers a root that
        // was already gone.
        self.quota.stop();
        let _ = tokio::time::timeout(left().min(Duration::from_secs(2)), self.quota_task).await;
        if runners_done {
            info!("shutdown complete");
        } else {
            warn!("grace period over with work in flight; the ledger resumes it on the next start");
        }
        runners_done
    }
}

/// Runs the daemon until `shutdown` resolves, then stops it gracefully. An
/// infrastructure actor's failure stops it too, and is returned as an error (the
/// process exits non-zero so a service manager notices).
///
/// Under systemd (`NOTIFY_SOCKET` set) it sends `READY=1` once the daemon started,
/// `WATCHDOG=1` and `STATUS=` from the root's heartbeat, and `STOPPING=1` when the
/// shutdown begins (see [`notify`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let notifier = notify::Notifier::from_env();
    let daemon =
        Daemon::start_with(&config, notifier.as_ref().map(notify::Notifier::heartbeat)).await?;
    if let Some(notifier) = &notifier {
        notifier.ready();
    }
    let grace = config.shutdown_grace;
    // Everything running holds what it needs; the parsed file itself is not needed again.
    drop(config);
    let mut failed = daemon.failed.clone();
    let failure = tokio::select! {
        _ = shutdown => None,
        changed = failed.wait_for(|failure| failure.is_some()) => {
            changed.ok().and_then(|failure| failure.clone())
        }
    };
    if let Some(notifier) = &notifier {
        notifier.stopping(failure.as_deref().unwrap_or("shutdown requested"));
    }
    daemon.shutdown(grace).await;
    match failure {
        Some(failure) => anyhow::bail!("infrastructure failure: {failure}"),
        None => Ok(()),
    }
}

/// Connects the member registry (`[cluster]`), waiting for Redis like the leases do, and
/// registers once.
async fn join_cluster(
    config: &Config,
    cluster: &crate::cluster::ClusterSettings,
    redis: &crate::lock::settings::RedisSettings,
) -> anyhow::Result<crate::cluster::Membership> {
    let url = redis
        .url
        .resolve()
        .map_err(|err| anyhow::anyhow!("{}: {err}", config.source_name))?;
    let mut delay = Duration::from_millis(500);
    let registry = loop {
        match crate::cluster::Registry::connect(&url, &redis.prefix).await {
            Ok(registry) => break registry,
            Err(crate::cluster::ClusterError::Invalid(message)) => {
                anyhow::bail!("redis.url: {message}")
            }
            Err(err) => {
                warn!(error = %err, retry_in = %humantime::format_duration(delay), "redis unreachable at startup; joining the cluster waits for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    };
    let membership = crate::cluster::Membership::new(registry, cluster.clone());
    // Join settle (as Kafka's initial rebalance delay): members started together register
    // within about one heartbeat of each other, so a member looks again one heartbeat
    // after registering before it runs any account. Without it the first member up owns
    // every account for a moment and hands two thirds of them over at once (bench
    // cluster: 2,000 accounts stopping and restarting elsewhere at startup).
    let first = membership.beat().await;
    if first.is_ok() {
        tokio::time::sleep(cluster.heartbeat).await;
    }
    match membership.beat().await {
        Ok(_) => {
            let members = membership
                .view
                .borrow()
                .as_ref()
                .map(|view| view.members.len())
                .unwrap_or(0);
            info!(member = %cluster.member_id, members, heartbeat = %humantime::format_duration(cluster.heartbeat), member_ttl = %humantime::format_duration(cluster.member_ttl), "joined the cluster");
        }
        Err(err) => {
            warn!(member = %cluster.member_id, error = %err, "first cluster heartbeat failed; accounts start once one succeeds")
        }
    }
    Ok(membership)
}

/// The freshness scheduler as a root service (`freshness`), when `[freshness]` is
/// enabled and an account drains a job queue. Its passes read and write only the tables,
/// so a restarted incarnation continues where the last one stopped.
fn freshness_service(
    config: &Config,
    ledger: &Arc<dyn LedgerStore>,
    quota: &QuotaHandle,
    quota_config: crate::quota::QuotaConfig,
    chaos: &Option<Arc<Chaos>>,
) -> Option<ServiceSpec> {
    use crate::shapes::jobs::scheduler::{ProviderAccounts, Scheduler};
    if !config.freshness.enabled {
        return None;
    }
    let mut providers: Vec<ProviderAccounts> = Vec::new();
    for account in &config.accounts {
        let provider = account.provider.as_str();
        if !crate::store::jobs::JOB_PROVIDERS.contains(&provider) || account.streams.is_empty() {
            continue;
        }
        // An eBay account drains the `ebay` market-price queue only with its job-queue
        // stream (`market_prices`); its seller streams are cursors.
        if !account
            .streams
            .iter()
            .any(|stream| account.provider.stream_shape(&stream.name) == crate::domain::Shape::Jobs)
        {
            continue;
        }
        let scope = account.quota_scope().to_string();
        match providers
            .iter_mut()
            .find(|known| known.provider == provider)
        {
            Some(known) if !known.scopes.contains(&scope) => known.scopes.push(scope),
            Some(_) => {}
            None => providers.push(ProviderAccounts {
                provider: provider.to_string(),
                scopes: vec![scope],
            }),
        }
    }
    if providers.is_empty() {
        return None;
    }
    info!(
        providers = ?providers.iter().map(|p| p.provider.as_str()).collect::<Vec<_>>(),
        interval = %humantime::format_duration(config.freshness.interval),
        "freshness scheduler configured"
    );
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(ledger),
        quota.clone(),
        quota_config,
        providers,
        config.freshness.clone(),
        chaos.clone(),
    ));
    Some(ServiceSpec::task(
        "freshness",
        Arc::new(move || {
            let scheduler = Arc::clone(&scheduler);
            // Runs until the root stops it (at shutdown, which aborts the task).
            Box::pin(async move { scheduler.run(CancellationToken::new()).await })
        }),
    ))
}

/// The listener bound at startup (so a busy port is an error the operator sees at once),
/// or, for a restarted incarnation, the same address bound again.
async fn take_or_bind(
    slot: &std::sync::Mutex<Option<tokio::net::TcpListener>>,
    addr: SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    let taken = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match taken {
        Some(listener) => Ok(listener),
        None => tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} again")),
    }
}
